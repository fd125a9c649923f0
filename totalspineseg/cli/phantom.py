"""`totalspineseg-phantom`: write synthetic spine phantoms, or a whole BIDS dataset of them."""

from __future__ import annotations

import argparse
import sys

from .. import console
from .. import labels as L
from ..errors import CannotCreate, InternalError, UsageError
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


_DEFAULT = phantom.PhantomSpec()
ERRORS = (UsageError, CannotCreate, InternalError)  # the only errors this command can end with


def get_parser() -> argparse.ArgumentParser:
    p = console.ArgumentParser(
        prog=PROG,
        description="Write seeded synthetic spine MRI phantoms with exact ground-truth labels.",
        epilog=EPILOG,
        exit_codes=ERRORS,
    )
    p.add_argument("outdir", help="output folder (created if needed)")
    p.add_argument("--seed", type=int, default=_DEFAULT.seed, help=f"anatomy and noise seed (default {_DEFAULT.seed})")
    single = p.add_argument_group("one phantom")
    single.add_argument("--fov", choices=phantom.FOVS, help=f"field of view (default {_DEFAULT.fov})")
    single.add_argument(
        "--orientation", help=f"axis code of the image grid, e.g. RAS, LPS, PSR (default {_DEFAULT.orientation})"
    )
    single.add_argument(
        "--voxel", type=float, nargs=3, metavar=("X", "Y", "Z"),
        help=f"voxel sizes in mm, in grid order (default {' '.join(f'{v:g}' for v in _DEFAULT.voxel)})",
    )
    single.add_argument("--contrast", choices=phantom.CONTRASTS, help=f"image contrast (default {_DEFAULT.contrast})")
    single.add_argument(
        "--oblique", type=float, metavar="DEG", help=f"tilt the grid by DEG degrees (default {_DEFAULT.oblique_deg:g})"
    )
    single.add_argument("--extra-lumbar", action="store_true", help=f"add an L6 ({L.VERTEBRA_L6}) and disc L5-L6")
    single.add_argument("--missing-disc", type=int, metavar="LABEL", help="leave out this disc (e.g. 75 = T4-T5)")
    p.add_argument("--localizer", action="store_true", help="also write a low-resolution whole-spine localizer")
    bids = p.add_argument_group("BIDS dataset")
    bids.add_argument("--bids", action="store_true", help="write a BIDS dataset instead of one phantom")
    bids.add_argument("--participants", type=int, help="number of participants (with --bids)")
    bids.add_argument("--sessions", type=int, default=0, help="sessions per participant (default: no session level)")
    console.add_logging_options(p)
    return p


# Options of a single phantom -> the PhantomSpec field each sets; unset options keep the spec's defaults.
_SPEC_FIELDS = {"fov": "fov", "orientation": "orientation", "voxel": "voxel", "contrast": "contrast",
                "oblique": "oblique_deg", "missing_disc": "missing_disc"}


def _check(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.bids:
        if args.participants is None:
            p.error("--bids needs --participants N")
        given = [f"--{k.replace('_', '-')}" for k in _SPEC_FIELDS if getattr(args, k) is not None]
        if args.extra_lumbar:
            given.append("--extra-lumbar")
        if given:
            p.error(f"{', '.join(given)} cannot be combined with --bids")
    elif args.participants is not None or args.sessions:
        p.error("--participants and --sessions need --bids")


def _spec(args: argparse.Namespace) -> phantom.PhantomSpec:
    given = {field: getattr(args, opt) for opt, field in _SPEC_FIELDS.items() if getattr(args, opt) is not None}
    return phantom.PhantomSpec(args.seed, extra_lumbar=args.extra_lumbar, **given)


def _write(args: argparse.Namespace) -> list:
    """Every file (or, for --bids, the dataset folder) written. ValueError: bad parameters; OSError: cannot write."""
    if args.bids:
        return [phantom.write_bids_dataset(args.outdir, args.participants, args.seed, args.sessions, args.localizer)]
    spec = _spec(args)
    return list(phantom.write_phantom(args.outdir, spec, localizer=args.localizer).values())


def main(argv=None) -> int:
    parser = get_parser()
    args = argparse.Namespace(verbose=0)  # filled in by the parser; read by run_main after a failure

    def body() -> int:
        parser.parse_args(argv, namespace=args)
        console.setup_logging(args.verbose, args.quiet)
        _check(parser, args)
        try:
            written = _write(args)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        except OSError as exc:
            raise CannotCreate(f"cannot write {args.outdir}: {exc.strerror or exc}") from exc
        for path in written:
            print(path)
        return 0

    return console.run_main(PROG, body, lambda: args.verbose)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
