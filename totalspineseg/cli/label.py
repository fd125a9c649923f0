"""`totalspineseg-label`: number the discs and vertebrae of a raw network class map."""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

from .. import __version__, labeling, resample, volume
from ..console import ArgumentParser, add_logging_options, run_command

log = logging.getLogger("totalspineseg.label")

EPILOG = """\
examples:
  totalspineseg-label step1 step1_raw.nii.gz step1_output.nii.gz
  totalspineseg-label step2 step2_raw.nii.gz step2_output.nii.gz --loc localizer_step2_output.nii.gz

RAW holds network classes: step 1 values 1-9 (disc, C2-C3, C7-T1, T12-L1, L5-S, vertebra, C1, canal, cord),
step 2 values 1-11 (disc, 4 landmark discs, vertebra, odd vertebra, even vertebra, sacrum, canal, cord).
It may be on any grid and in any orientation; OUT is written on RAW's grid in the final label scheme.
"""


def get_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="totalspineseg-label",
        description="Number discs and vertebrae in a step-1 or step-2 network class map (iterative labeling).",
        epilog=EPILOG,
    )
    p.add_argument("step", choices=["step1", "step2"], help="which network produced RAW")
    p.add_argument("raw", help="class map (.nii or .nii.gz)")
    p.add_argument("out", help="labeled segmentation to write (.nii.gz)")
    p.add_argument(
        "--loc", "-l", metavar="LOCALIZER_SEG",
        help="final-scheme segmentation of a localizer in the same scanner space; its discs anchor the numbering",
    )
    add_logging_options(p)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def to_work_grid(vol: volume.Volume) -> tuple[np.ndarray, np.ndarray]:
    """A label map on the canonical RAS+ 1 mm working grid (nearest neighbour)."""
    data_c, aff_c = resample.to_canonical(vol.data, vol.affine)
    shape, aff_iso = resample.iso_grid(data_c.shape, aff_c)
    return resample.resample_to_grid(data_c, aff_c, shape, aff_iso, "labels"), aff_iso


def label_file(step: str, raw_path, out_path, loc_path=None) -> labeling.LabelingResult:
    raw = volume.load_labels(raw_path)
    classes, aff_iso = to_work_grid(raw)
    localizer = None
    if loc_path:
        loc = volume.load_labels(loc_path)
        localizer = labeling.Localizer(loc.data, loc.affine)
    fn = labeling.label_step1 if step == "step1" else labeling.label_step2
    result = fn(classes, aff_iso, localizer)
    native = resample.resample_to_grid(result.seg, aff_iso, raw.shape, raw.affine, "labels")
    volume.save_nifti(out_path, native.astype(np.uint8), raw.affine, dtype=np.uint8)
    return result


def run(args: argparse.Namespace) -> int:
    result = label_file(args.step, args.raw, args.out, args.loc)
    for w in result.warnings:
        log.warning("%s: %s", args.raw, w)
    if result.anchors:
        names = ", ".join(f"{a.source}:{a.label}" for a in result.anchors)
        log.info("numbered from anchors %s", names)
    log.info("wrote %s", args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(get_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
