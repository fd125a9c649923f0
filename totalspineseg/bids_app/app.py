"""`run.py bids_dir output_dir {participant,group}`: checks, planning, then the participant or group level.

Expected errors become one line on stderr and the exit code of their class (see the parser's epilog).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from ..console import run_command
from ..errors import SOME_IMAGE_FAILED, CannotCreate, InputError, MissingInput, UnknownLevel, UsageError
from ..fsutil import folder_write_problem, sweep_stale_temps
from ..runtime import resolve_threads
from ..scratch import prepare_scratch
from . import derivatives as D
from . import group, participant, plan, validation
from .models import ModelSource, WeightsProvider, as_provider
from .parser import build_parser, parse_localizer_specs, read_filter_file, read_labels

log = logging.getLogger("totalspineseg.bids_app")

LEVELS = ("participant", "group")


def main(argv: list[str] | None = None, models: ModelSource | None = None) -> int:
    """The BIDS-App. `models`: a `pipeline.Models` or a provider (see `bids_app.models`); default: --weights."""
    return run_command(build_parser(), lambda args: _run(args, models), argv)


def _run(args: argparse.Namespace, models: ModelSource | None) -> int:
    if args.analysis_level not in LEVELS:
        raise UnknownLevel(f"unknown analysis level {args.analysis_level!r}; choose participant or group")
    output_dir = args.output_dir.absolute()
    subjects = read_labels(args.participant_label, "sub-")
    if args.analysis_level == "group":
        if not output_dir.is_dir():
            raise MissingInput(f"{output_dir}: no such folder; run the participant level first")
        group.run_group(output_dir, subjects)
        return 0
    return _participant(args, output_dir, subjects, models)


def _participant(args, output_dir: Path, subjects, models) -> int:
    bids_dir = args.bids_dir.absolute()
    raw_description = validation.read_description(bids_dir)
    if output_dir.resolve() == bids_dir.resolve():
        raise UsageError("output_dir must differ from bids_dir (e.g. <bids_dir>/derivatives/totalspineseg)")
    _refuse_inside_raw(output_dir, bids_dir)
    scratch = prepare_scratch(args.work_dir, output_dir)  # before torch and nnU-Net are imported
    if not args.skip_bids_validation:
        validation.run_validator(bids_dir, scratch)
    filters = read_filter_file(args.bids_filter_file)
    specs = parse_localizer_specs(args.localizer)
    provider = None
    if not (args.dry_run or args.reports_only):
        provider = as_provider(models) if models is not None else WeightsProvider(
            args.weights, args.device, _threads(args), args.step1, precision=args.precision,
            tile_step=args.tile_step, backend=args.backend)
    layout = plan.build_layout(bids_dir, subjects, args.bids_database_dir, _inside(output_dir, bids_dir))
    the_plan = plan.make_plan(layout, filters, specs, subjects, read_labels(args.session_label, "ses-"))
    if args.dry_run:
        print(plan.describe(the_plan, lambda job: _status(output_dir, job)))
        return 0
    _make_output_dir(output_dir)
    sweep_stale_temps(output_dir)  # what a killed run left behind (only files whose process is gone)
    try:
        D.write_dataset_files(output_dir, raw_description, str(bids_dir))
    except OSError as exc:
        raise CannotCreate(f"{exc.filename or output_dir}: cannot write the dataset files ({exc.strerror})") from None
    outcomes = []
    if not args.reports_only:
        ctx = participant.RunContext(bids_dir, output_dir, provider, args.step1, args.iso, args.overwrite,
                                     logging.getLogger().level)
        outcomes = participant.run_all(ctx, the_plan.units(), args.nprocs)
    if not participant.output_dir_present(output_dir):
        _summarise(outcomes)
        raise CannotCreate(f"{output_dir}: the output folder (or its dataset_description.json) disappeared "
                           f"during the run; nothing more was written")
    _write_reports(output_dir, the_plan.subjects)
    return _summarise(outcomes)


def _write_reports(output_dir: Path, subjects) -> None:
    for subject in subjects:
        try:
            group.write_participant_report(output_dir, subject)
        except OSError as exc:  # a full disk: the images' own outcome is what matters
            log.error("%s: cannot write the participant report of sub-%s (%s)", output_dir, subject,
                      exc.strerror or exc)


def _summarise(outcomes) -> int:
    """0; 65 when every failed image failed with bad input data; 1 when any failed for another reason."""
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    log.info("participant level: %(done)d done, %(skipped)d already complete, %(failed)d failed", counts)
    failed = [o for o in outcomes if o.status == "failed"]
    for o in failed:
        log.error("failed: %s: %s", o.source, o.message)
    if not failed:
        return 0
    return InputError.exit_code if all(o.exit_code == InputError.exit_code for o in failed) else SOME_IMAGE_FAILED


def _refuse_inside_raw(output_dir: Path, bids_dir: Path) -> None:
    """An output folder inside the raw dataset belongs under derivatives/ (the validator skips only that)."""
    rel = _inside(output_dir, bids_dir)
    if rel is None:
        return
    parts = rel.split("/")
    if len(parts) < 2 or parts[0] != "derivatives":
        raise UsageError(f"{output_dir}: the output folder is inside the input dataset {bids_dir} but not under "
                         f"its derivatives/ folder, where the BIDS validator would report it as part of the "
                         f"raw data; use {bids_dir / 'derivatives' / 'totalspineseg'}")


def _status(output_dir: Path, job) -> str:
    return "complete" if participant.read_marker(output_dir, job) else "to do"


def _inside(path: Path, root: Path) -> str | None:
    """`path` relative to `root` when it lies inside it (so that the index skips it), else None."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def _threads(args: argparse.Namespace) -> int:
    return resolve_threads(args.omp_nthreads or None, jobs=args.nprocs)


def _make_output_dir(output_dir: Path) -> None:
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CannotCreate(f"{output_dir}: cannot create the output folder ({exc.strerror})") from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise CannotCreate(f"{output_dir}: the output folder is not writable (run the container with -u $(id -u))")
    problem = folder_write_problem(output_dir)
    if problem is not None:
        raise CannotCreate(f"{output_dir}: the output folder is not writable ({problem})")
