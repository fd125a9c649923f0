"""`totalspineseg INPUT OUTPUT`: the upstream-compatible command line, on one file or a folder."""

from __future__ import annotations

import argparse
import fnmatch
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__, volume
from ..console import ArgumentParser, add_logging_options, describe_exception, run_command
from ..errors import SOME_IMAGE_FAILED, CannotCreate, InputError, MissingInput, TotalSpineSegError
from ..fsutil import StagedWrites, folder_write_problem, sweep_stale_temps
from ..openvino_backend import BACKEND_HELP, BACKENDS, DEFAULT_BACKEND
from ..pipeline import Models, PipelineOptions, SegmentationResult, segment
from ..runtime import PRECISION_HELP, PRECISIONS, TILE_STEP_DEFAULT, TILE_STEP_HELP, parse_tile_step
from ..scratch import prepare_scratch
from .run_record import RunRecord, image_options, read_record, record_path, why_redo, write_record

log = logging.getLogger("totalspineseg")

DELIVERABLES = ("step1_output", "step1_cord", "step1_canal", "step1_levels", "step2_output")
INTERMEDIATE = ("step1_raw", "step2_raw", "step2_input", "input")
ALL_FOLDERS = DELIVERABLES + ("preview",) + INTERMEDIATE

EPILOG = """\
outputs (one file per image, named like the input, in these folders of OUTPUT):
  step1_output/   discs numbered, C1 = 11, other vertebrae = 50, cord 1, canal 2
  step1_cord/     soft spinal cord map (float32, 0..1)
  step1_canal/    soft spinal canal map, cord included (float32, 0..1)
  step1_levels/   one voxel per disc level: 3 = C2-C3 ... 25 = L5-S (1 = dens top, 2 = C1-C2)
  step2_output/   the final labels: every vertebra, disc, sacrum, cord and canal
  preview/        QC JPEGs
  logs/           one JSON per image: the options, weights and version that made its outputs
  with --keep-intermediate also step1_raw/, step2_raw/, step2_input/ and input/ (network space)
Outputs are on the input's grid (same shape and affine, the input's qform and sform) unless --iso. An image's
outputs appear together once all are written; a failure leaves the previous ones as they were. A re-run
skips an image only when its record shows the same options, weights and version; otherwise it is redone.

input checks (exit 65, "bad input data", before any network runs):
  a blank or constant image; a field of view under {MIN_AXIS:g} mm along any axis or under {MIN_LONG:g} mm along all
  of them; a 1 mm working grid over {MAX_VOX:,} voxels (wrong voxel sizes?); a --loc file that is not a
  label map of this tool. A qform and an sform that disagree by over {QS_TOL:g} mm: a warning, the sform is used.
  A run in which every failed image failed these checks exits 65, otherwise any failure gives 1.

examples:
  totalspineseg sub-01_T2w.nii.gz out/ --weights demo
  totalspineseg images/ out/ --step1
  totalspineseg images/ out/ --loc localizers/step2_output/ --suffix _T2w --loc-suffix _acq-localizer_T2w
  totalspineseg-weights install          # once, to install the official weights (r20260730)
"""
EPILOG = EPILOG.format(MIN_AXIS=volume.MIN_AXIS_MM, MIN_LONG=volume.MIN_LONGEST_MM, MAX_VOX=volume.MAX_WORK_VOXELS,
                       QS_TOL=volume.QFORM_SFORM_TOL_MM)


def get_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="totalspineseg",
        description=(
            "Segment and label the spine in MRI: every vertebra (C1-L5, sacrum), every intervertebral disc,"
            " the spinal cord and the spinal canal, with disc-level points and soft cord/canal maps."
        ),
        epilog=EPILOG,
    )
    p.add_argument("input", type=Path, help="a .nii/.nii.gz image, or a folder of them (also sub-*/[ses-*/]anat/)")
    p.add_argument("output", type=Path, help="output folder (created if missing)")
    p.add_argument("--step1", action="store_true", help="run step 1 only (discs, cord, canal, levels)")
    p.add_argument("--iso", action="store_true",
                   help="keep outputs in the 1 mm canonical (RAS+) network space; the matching image goes to input/")
    p.add_argument("--loc", "-l", type=Path, metavar="PATH",
                   help="localizer segmentation(s) from an earlier run (a step2_output or step1_output file, or"
                        " a folder of them matched by name); used to number discs when landmarks are not in view")
    p.add_argument("--suffix", "-s", nargs="+", default=[""], metavar="SUFFIX",
                   help="only take inputs whose names end with SUFFIX.nii[.gz] (several allowed)")
    p.add_argument("--loc-suffix", "-ls", default="", metavar="SUFFIX",
                   help="suffix of the localizer files, replacing the image suffix when matching names")
    p.add_argument("--keep-only", "-k", nargs="+", default=[], metavar="FOLDER", choices=ALL_FOLDERS,
                   help="write only these output folders; work for the others is skipped")
    p.add_argument("--weights", default="official", metavar="{official,lite,demo,PATH}",
                   help="model weights: the installed official release (default); lite, bundled, no download: "
                        "trained on synthetic images of real spine anatomy, an early model: it finds the cord and "
                        "numbers lumbar discs on real scans, but its cervical and thoracic levels are often wrong "
                        "(its model card has the scores), not for results; demo, bundled, synthetic phantoms "
                        "only, not for real scans; or a folder")
    p.add_argument("--data-dir", "-d", type=Path,
                   help="weights root (default: $TOTALSPINESEG_DATA, then the user cache)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: cuda if available")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help=PRECISION_HELP)
    p.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND, help=BACKEND_HELP)
    p.add_argument("--tile-step", type=parse_tile_step, default=TILE_STEP_DEFAULT, metavar="STEP",
                   help=TILE_STEP_HELP)
    p.add_argument("--max-workers", "-w", type=int, default=None, metavar="N",
                   help="CPU threads for the networks (default: SLURM/OMP settings, else all allowed CPUs)."
                        " Images run one after the other in one process: no worker pools")
    p.add_argument("--work-dir", type=Path, metavar="DIR",
                   help="scratch folder for temporary files and library caches (default: $TMPDIR, /tmp, else "
                        "OUTPUT/.work: the first writable; for read-only containers)")
    p.add_argument("--no-disc-completion", action="store_true",
                   help="keep step 2's discs exactly as its network gave them (upstream behaviour); by default the "
                        "step-1 disc voxels that step 2 left empty are added to the step-2 disc they belong to")
    p.add_argument("--keep-intermediate", action="store_true",
                   help="also write step1_raw/, step2_raw/, step2_input/ and input/")
    p.add_argument("--overwrite", action="store_true", help="redo images whose outputs already exist")
    add_logging_options(p)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


# -----------------------------------------------------------------------------------------------------------
# Inputs


def image_name(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return path.stem


def find_inputs(input_path: Path, suffixes: list[str]) -> list[Path]:
    """Images to process: the file itself, or the folder's top level plus BIDS sub-*/[ses-*/]anat/."""
    if input_path.is_file():
        return [input_path]
    if not input_path.is_dir():
        raise MissingInput(f"{input_path}: no such file or folder")
    found: dict[Path, None] = {}
    for sub in ("", "sub-*/anat/", "sub-*/ses-*/anat/"):
        for s in suffixes:
            for ext in (".nii.gz", ".nii"):
                for p in sorted(input_path.glob(f"{sub}*{s}{ext}")):
                    if not p.name.startswith("."):
                        found[p] = None
    return list(found)


def matching_suffix(name: str, suffixes: list[str]) -> str:
    return next((s for s in suffixes if s and name.endswith(s)), "")


def find_localizer(loc: Path | None, name: str, suffixes: list[str], loc_suffix: str) -> Path | None:
    """The localizer segmentation of image `name`: the file itself, or a name match in the folder."""
    if loc is None:
        return None
    if loc.is_file():
        return loc
    img_suffix = matching_suffix(name, suffixes)
    stem = name[: len(name) - len(img_suffix)] if img_suffix else name
    for candidate in find_inputs(loc, [loc_suffix]):
        cname = image_name(candidate)
        cstem = cname[: len(cname) - len(loc_suffix)] if loc_suffix and cname.endswith(loc_suffix) else cname
        if fnmatch.fnmatchcase(stem, cstem):
            return candidate
    return None


# -----------------------------------------------------------------------------------------------------------
# Outputs


@dataclass
class Plan:
    """Which folders to write, and so which work to do."""

    folders: tuple[str, ...]

    @classmethod
    def from_args(cls, args) -> Plan:
        folders = list(args.keep_only) if args.keep_only else list(DELIVERABLES) + ["preview"]
        if args.keep_intermediate and not args.keep_only:
            folders += ["step1_raw", "step2_raw", "step2_input"]
        if args.iso or args.keep_intermediate:
            folders.append("input")
        if args.step1:
            folders = [f for f in folders if f not in ("step2_output", "step2_raw", "step2_input")]
        return cls(tuple(dict.fromkeys(folders)))

    def wants(self, folder: str) -> bool:
        return folder in self.folders

    def options(self, args) -> PipelineOptions:
        return PipelineOptions(
            step1_only=args.step1 or not any(self.wants(f) for f in ("step2_output", "step2_raw", "step2_input")),
            soft_maps=self.wants("step1_cord") or self.wants("step1_canal"),
            levels=self.wants("step1_levels") or self.wants("preview"),
            native=not args.iso,
            complete_discs=not args.no_disc_completion,
            progress=False,
        )


def expected_outputs(output: Path, name: str, plan: Plan) -> list[Path]:
    return [output / f / f"{name}.nii.gz" for f in DELIVERABLES if plan.wants(f)]


def write_outputs(result: SegmentationResult, output: Path, name: str, plan: Plan, staged: StagedWrites) -> None:
    """Stage every output of one image; `staged.commit()` makes them visible together."""
    out = result.final
    native_header = result.header if result.native is not None else None

    def put(folder, array, affine, dtype, suffix="", header=None):
        if array is None or not plan.wants(folder):
            return
        volume.save_nifti(output / folder / f"{name}{suffix}.nii.gz", array, affine, dtype=dtype, header=header,
                          staged=staged)

    iso_aff = result.iso.grid.affine
    put("step1_raw", result.step1_raw, iso_aff, np.uint8)
    if result.crop_grid is not None:
        put("step2_raw", result.step2_raw, result.crop_grid.affine, np.uint8)
        put("step2_input", result.step2_input, result.crop_grid.affine, np.uint8, "_0001")
    put("input", result.iso_image, iso_aff, np.float32, "_0000")
    if plan.wants("preview"):
        _stage_previews(result, output / "preview", name, staged)
    put("step1_cord", out.cord, out.grid.affine, np.float32, header=native_header)
    put("step1_canal", out.canal, out.grid.affine, np.float32, header=native_header)
    put("step1_levels", out.levels, out.grid.affine, np.uint8, header=native_header)
    put("step1_output", out.step1, out.grid.affine, np.uint8, header=native_header)
    put("step2_output", out.step2, out.grid.affine, np.uint8, header=native_header)  # the final labels, last


def _stage_previews(result: SegmentationResult, folder: Path, name: str, staged: StagedWrites) -> None:
    from ..preview import render_preview_bytes

    iso = result.iso
    staged.write(folder / f"{name}_step1_output.jpg", render_preview_bytes(
        result.iso_image, iso.step1, iso.grid.affine, title=f"{name}: step 1", levels=iso.levels))
    if iso.step2 is not None:
        staged.write(folder / f"{name}_step2_output.jpg", render_preview_bytes(
            result.iso_image, iso.step2, iso.grid.affine, title=f"{name}: step 2"))


def check_output_folder(output: Path) -> None:
    """The output folder exists (or can be made) and takes files: checked before any network runs."""
    problem = folder_write_problem(output)
    if problem is not None:
        raise CannotCreate(f"{output}: the output folder is not writable ({problem})")


# -----------------------------------------------------------------------------------------------------------
# Main


def load_models(args):
    from .. import weights

    paths = weights.resolve_model(args.weights, data_dir=args.data_dir)
    if paths.release == "demo":
        log.warning("using the DEMO model: trained on synthetic phantoms only, not for real scans")
    elif paths.release == "lite":
        log.warning("using the LITE model: an early bundled model, not for results; see %s",
                    weights.RELEASES["lite"].bundled / "MODEL_CARD.md")
    models = Models.load(paths, device=args.device, threads=args.max_workers, step1_only=args.step1,
                         precision=args.precision, tile_step=args.tile_step, backend=args.backend)
    log.info("networks: %s on %s, %s, %s, tile step %g", paths.release, models.device, models.precision,
             models.backend, models.tile_step)
    return models


def process_all(args: argparse.Namespace, models: Models | None = None) -> int:
    images = find_inputs(args.input, args.suffix)
    if not images:
        raise InputError(args.input, f"no .nii/.nii.gz image found (suffixes {args.suffix})")
    check_output_folder(args.output)
    sweep_stale_temps(args.output)
    prepare_scratch(args.work_dir, args.output)  # before torch and nnU-Net are imported
    plan = Plan.from_args(args)
    if models is None:
        models = load_models(args)
    options = plan.options(args)
    failures: list[tuple[Path, str, Exception]] = []
    done = skipped = 0
    for path in _progress(images, args.quiet):
        name = image_name(path)
        try:
            loc = find_localizer(args.loc, name, args.suffix, args.loc_suffix)
            if args.loc is not None and loc is None:
                log.warning("%s: no localizer matches this image; numbering uses its own landmarks", path)
            wanted = image_options(args, plan.folders, loc, models.release, models.sha256, models.precision,
                                   models.tile_step)
            reason = None if args.overwrite else why_redo(args.output, name, wanted, expected_outputs(
                args.output, name, plan))
            if not args.overwrite and reason is None:
                skipped += 1
                continue
            if reason not in (None, "not done yet"):
                log.info("%s: redoing: %s", path.name, reason)
            _process_one(path, name, loc, models, options, plan, args, wanted)
            done += 1
        except Exception as exc:  # noqa: BLE001 - one image's failure must not stop the others
            failures.append((path, _failure_reason(path, exc, args.verbose), exc))
            log.error("%s", failures[-1][1])
    print(f"totalspineseg: {done} done, {skipped} already complete, {len(failures)} failed, in {args.output}",
          file=sys.stderr)
    for _, reason, _ in failures:
        print(f"  FAILED {reason}", file=sys.stderr)
    return exit_code_for([exc for _, _, exc in failures])


def exit_code_for(failures: list[Exception]) -> int:
    """0 when nothing failed; 65 when every failure was bad input data; else 1."""
    if not failures:
        return 0
    if all(isinstance(exc, InputError) for exc in failures):
        return InputError.exit_code
    return SOME_IMAGE_FAILED


def _process_one(path: Path, name: str, loc: Path | None, models: Models, options: PipelineOptions, plan: Plan,
                 args: argparse.Namespace, wanted: dict) -> None:
    """Segment one image and replace its outputs all at once: a failure leaves the previous set as it was."""
    t0 = time.perf_counter()
    result = segment(path, models, localizer=loc, options=options)
    with StagedWrites() as staged:
        write_outputs(result, args.output, name, plan, staged)
        new = staged.finals
        previous = read_record(args.output, name)
        record_path(args.output, name).unlink(missing_ok=True)  # from here on the image is not complete
    for rel in previous.outputs if previous else ():
        if args.output / rel not in new:
            (args.output / rel).unlink(missing_ok=True)
    record = RunRecord(wanted, tuple(p.relative_to(args.output).as_posix() for p in new))
    timings = {k: round(v, 3) for k, v in result.timings.items()}
    write_record(args.output, name, record, {"source": str(path), "warnings": result.warnings, "timings": timings,
                                             "device": result.device, "precision": result.precision,
                                             "backend": result.backend, "tile_step": result.tile_step})
    log.info("%s done in %.1f s (%s)", path.name, time.perf_counter() - t0,
             ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items()))


def _failure_reason(path: Path, exc: Exception, verbose: int) -> str:
    """One line naming the image and the problem; unexpected exceptions get their type (and with -v a traceback)."""
    if isinstance(exc, (TotalSpineSegError, OSError)):
        text = str(exc)
    else:
        text = describe_exception(exc)
        if verbose:
            log.debug("%s: traceback", path, exc_info=exc)
    return text if str(path) in text else f"{path}: {text}"


def _progress(items, quiet):
    if quiet or len(items) < 2:
        return items
    try:
        from tqdm import tqdm

        return tqdm(items, desc="images", unit="image")
    except ImportError:  # pragma: no cover
        return items


def main(argv: list[str] | None = None, models: Models | None = None) -> int:
    """The `totalspineseg` command; `models` replaces the --weights networks (tests inject stand-ins)."""
    return run_command(get_parser(), lambda args: process_all(args, models), argv)


if __name__ == "__main__":
    sys.exit(main())
