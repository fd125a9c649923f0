"""`run.py bids_dir output_dir {participant,group}`: checks, planning, then the participant or group level.

Expected errors become one line on stderr and the exit code of their class (see the parser's epilog).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

from ..console import run_command
from ..errors import CannotCreate, MissingInput, UnknownLevel, UsageError
from ..runtime import resolve_threads
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
    scratch = _scratch_dir(args.work_dir, output_dir)
    if not args.skip_bids_validation:
        validation.run_validator(bids_dir, scratch)
    filters = read_filter_file(args.bids_filter_file)
    specs = parse_localizer_specs(args.localizer)
    provider = None
    if not (args.dry_run or args.reports_only):
        provider = as_provider(models) if models is not None else WeightsProvider(
            args.weights, args.device, _threads(args), args.step1)
    layout = plan.build_layout(bids_dir, subjects, args.bids_database_dir, _inside(output_dir, bids_dir))
    the_plan = plan.make_plan(layout, filters, specs, subjects, read_labels(args.session_label, "ses-"))
    if args.dry_run:
        print(plan.describe(the_plan, lambda job: _status(output_dir, job)))
        return 0
    _make_output_dir(output_dir)
    D.write_dataset_files(output_dir, raw_description, str(bids_dir))
    outcomes = []
    if not args.reports_only:
        ctx = participant.RunContext(bids_dir, output_dir, provider, args.step1, args.iso, args.overwrite,
                                     logging.getLogger().level)
        outcomes = participant.run_all(ctx, the_plan.units(), args.nprocs)
    for subject in the_plan.subjects:
        group.write_participant_report(output_dir, subject)
    return _summarise(outcomes)


def _summarise(outcomes) -> int:
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    log.info("participant level: %(done)d done, %(skipped)d already complete, %(failed)d failed", counts)
    for o in outcomes:
        if o.status == "failed":
            log.error("failed: %s: %s", o.source, o.message)
    return 1 if counts["failed"] else 0


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


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            return True
    except OSError:
        return False


def _scratch_dir(work_dir: Path | None, output_dir: Path) -> Path:
    """A writable scratch folder; matplotlib's cache goes there when MPLCONFIGDIR is unusable.

    In a container with a read-only root, no writable HOME and no /tmp mount, the output folder is the only
    writable place, hence the last fallback.
    """
    candidates = [work_dir] if work_dir else [
        Path(os.environ.get("TMPDIR") or "/tmp") / f"totalspineseg-{os.getuid()}", output_dir / ".work"]
    scratch = next((Path(c) for c in candidates if _writable(Path(c))), None)
    if scratch is None:
        raise CannotCreate(f"no writable scratch folder ({', '.join(map(str, candidates))}); pass -w DIR")
    mpl = os.environ.get("MPLCONFIGDIR")
    if not mpl or not _writable(Path(mpl)):
        os.environ["MPLCONFIGDIR"] = str(scratch / "matplotlib")
    return scratch
