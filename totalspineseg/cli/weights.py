"""`totalspineseg-weights`: list, install, verify and locate the model weights."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import weights
from ..console import ArgumentParser, add_logging_options, run_command

PROG = "totalspineseg-weights"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description="Manage the TotalSpineSeg model weights.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,install,verify,path}")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--data-dir", type=Path, help=f"weights root (default: ${weights.ENV_VAR}, then the user cache)"
        )
        add_logging_options(sub)
        return sub

    add("list", "show the known releases and where they are installed").set_defaults(func=_list)

    install = add("install", "download or copy a release into the weights root")
    install.add_argument(
        "--from",
        dest="sources",
        action="append",
        metavar="URL|ZIP|DIR",
        help="install from this URL, zip or folder instead of the release URLs (repeatable)",
    )
    install.add_argument("--release", default=None, help=f"release name (default: {weights.DEFAULT_RELEASE})")
    install.add_argument("--force", action="store_true", help="reinstall even if already installed")
    install.add_argument("--no-keep-zips", action="store_true", help="delete downloaded zips after installing")
    install.set_defaults(func=_install)

    verify = add("verify", "check an installed release against its install manifest")
    verify.add_argument("--release", default=None, help=f"release name (default: {weights.DEFAULT_RELEASE})")
    verify.set_defaults(func=_verify)

    path = add("path", "print the step-1 and step-2 model folders that a run would use")
    path.add_argument("--release", default=None, help=f"release name (default: {weights.DEFAULT_RELEASE})")
    path.add_argument("--weights", default="official", help='"official", a release, "demo" or a folder')
    path.set_defaults(func=_path)
    return parser


def _list(args) -> int:
    found = weights.installed(args.data_dir)
    for name, release in weights.RELEASES.items():
        if release.bundled is not None:
            where = f"bundled: {release.bundled}" if release.bundled.is_dir() else "not bundled"
        else:
            places = [str(folder) for found_name, folder in found if found_name == name]
            where = f"installed: {', '.join(places)}" if places else "not installed"
        print(f"{name:<12}{where}" + (f"   ({release.description})" if release.description else ""))
    for name, folder in found:
        if name not in weights.RELEASES:
            print(f"{name:<12}installed: {folder}")
    return 0


def _install(args) -> int:
    root = weights.install_root(args.data_dir)
    release = weights.get_release(args.release).name
    if not args.force and weights.is_installed(root, release):
        print(f"release {release} already installed in {root} (use --force to reinstall)")
        return 0
    models = weights.install(
        args.sources, root, release, force=args.force, quiet=args.quiet, keep_zips=not args.no_keep_zips
    )
    print(f"installed release {release}:\nstep1\t{models.step1}\nstep2\t{models.step2}")
    return 0


def _verify(args) -> int:
    problems = weights.verify(args.data_dir, args.release)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"release {weights.get_release(args.release).name}: OK")
    return 0


def _path(args) -> int:
    models = weights.resolve_model(args.weights, args.data_dir, args.release)
    print(f"step1\t{models.step1}\nstep2\t{models.step2}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), lambda args: args.func(args), argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
