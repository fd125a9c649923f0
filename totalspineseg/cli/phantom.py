"""`totalspineseg-phantom`: write synthetic spine phantoms, or a whole BIDS dataset of them."""

from __future__ import annotations

import argparse
import sys

from .. import labels as L
from ..synth import phantom

PROG = "totalspineseg-phantom"

EPILOG = f"""\
examples:
  {PROG} out/ --seed 3 --fov lumbar
      out/image.nii.gz and out/labels.nii.gz (T2w, RAS, 1 mm)
  {PROG} out/ --seed 3 --fov thoracic --orientation PSR --voxel 0.9 0.9 3 --localizer
      adds out/localizer.nii.gz and out/localizer_labels.nii.gz (whole spine, same scanner space)
  {PROG} out/ --fov whole --extra-lumbar --missing-disc 75 --contrast T1w
      an L6 (label {L.VERTEBRA_L6}, disc {L.DISC_L5_L6}) and no T4-T5 disc
  {PROG} bids/ --bids --participants 4 --sessions 2 --localizer --seed 1
      a BIDS dataset, ground truth under bids/derivatives/labels

Labels follow the final TotalSpineSeg scheme: cord {L.CORD}, canal {L.CANAL}, vertebrae C1..L5 = 11..17, 21..32,
41..45, sacrum {L.SACRUM}, disc = 50 + the vertebra below ({L.DISC_C2_C3} = C2-C3 ... {L.DISC_L5_S} = L5-S).
"""


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as a single line on stderr, exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def get_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(
        prog=PROG,
        description="Write seeded synthetic spine MRI phantoms with exact ground-truth labels.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("outdir", help="output folder (created if needed)")
    p.add_argument("--seed", type=int, default=0, help="anatomy and noise seed (default 0)")
    single = p.add_argument_group("one phantom")
    single.add_argument("--fov", choices=phantom.FOVS, help="field of view (default whole)")
    single.add_argument("--orientation", help="axis code of the image grid, e.g. RAS, LPS, PSR (default RAS)")
    single.add_argument(
        "--voxel", type=float, nargs=3, metavar=("X", "Y", "Z"), help="voxel sizes in mm, in grid order (default 1 1 1)"
    )
    single.add_argument("--contrast", choices=phantom.CONTRASTS, help="image contrast (default T2w)")
    single.add_argument("--oblique", type=float, metavar="DEG", help="tilt the grid by DEG degrees (default 0)")
    single.add_argument("--extra-lumbar", action="store_true", help=f"add an L6 ({L.VERTEBRA_L6}) and disc L5-L6")
    single.add_argument("--missing-disc", type=int, metavar="LABEL", help="leave out this disc (e.g. 75 = T4-T5)")
    p.add_argument("--localizer", action="store_true", help="also write a low-resolution whole-spine localizer")
    bids = p.add_argument_group("BIDS dataset")
    bids.add_argument("--bids", action="store_true", help="write a BIDS dataset instead of one phantom")
    bids.add_argument("--participants", type=int, help="number of participants (with --bids)")
    bids.add_argument("--sessions", type=int, default=0, help="sessions per participant (default: no session level)")
    return p


_SINGLE_ONLY = ("fov", "orientation", "voxel", "contrast", "oblique", "missing_disc")


def _check(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.bids:
        if args.participants is None:
            p.error("--bids needs --participants N")
        given = [f"--{k.replace('_', '-')}" for k in _SINGLE_ONLY if getattr(args, k) is not None]
        if args.extra_lumbar:
            given.append("--extra-lumbar")
        if given:
            p.error(f"{', '.join(given)} cannot be combined with --bids")
    elif args.participants is not None or args.sessions:
        p.error("--participants and --sessions need --bids")


def main(argv=None) -> int:
    p = get_parser()
    try:
        args = p.parse_args(argv)
        _check(p, args)
    except SystemExit as exc:  # --help, or a usage error already printed
        return int(exc.code or 0)
    try:
        if args.bids:
            root = phantom.write_bids_dataset(args.outdir, args.participants, args.seed, args.sessions, args.localizer)
            print(root)
            return 0
        paths = phantom.write_phantom(
            args.outdir,
            seed=args.seed,
            fov=args.fov or "whole",
            orientation=phantom.check_orientation(args.orientation or "RAS"),
            voxel=tuple(args.voxel or (1.0, 1.0, 1.0)),
            contrast=args.contrast or "T2w",
            extra_lumbar=args.extra_lumbar,
            missing_disc=args.missing_disc,
            localizer=args.localizer,
            oblique_deg=args.oblique or 0.0,
        )
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{PROG}: error: cannot write {args.outdir}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for path in paths.values():
        print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
