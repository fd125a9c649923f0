"""`totalspineseg-levels`: single-voxel disc level points from a final-scheme segmentation."""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

from .. import __version__, postprocess, resample, volume
from ..console import ArgumentParser, add_logging_options, run_command
from ..errors import InputError
from ..labels import LEVEL_NAMES
from .label import to_work_grid

log = logging.getLogger("totalspineseg.levels")


def get_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="totalspineseg-levels",
        description=(
            "Write one voxel per disc level (SCT convention: 3 = C2-C3 ... 25 = L5-S; 1 = top of the dens,"
            " 2 = C1-C2) at the disc's posterior tip next to the canal. Numbers come from the disc labels,"
            " so a missing disc never shifts the others."
        ),
        epilog="example:\n  totalspineseg-levels step2_output/sub-01_T2w.nii.gz levels.nii.gz",
    )
    p.add_argument("seg", help="final-scheme segmentation (step1_output or step2_output)")
    p.add_argument("out", help="level points to write (.nii.gz), on SEG's grid")
    add_logging_options(p)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def run(args: argparse.Namespace) -> int:
    seg = volume.load_labels(args.seg)
    work, aff_iso = to_work_grid(seg)
    try:
        levels, points = postprocess.disc_level_points(work)
    except ValueError as exc:
        raise InputError(args.seg, str(exc)) from None
    native = resample.resample_to_grid(levels, aff_iso, seg.shape, seg.affine, "points")
    volume.save_nifti(args.out, native.astype(np.uint8), seg.affine, dtype=np.uint8)
    log.info("wrote %d levels (%s) to %s", len(points), ", ".join(LEVEL_NAMES[k] for k in sorted(points)), args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(get_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
