"""`run.py bids_dir output_dir {participant,group}`: checks, planning, then the participant or group level.

Expected errors become one line on stderr and the exit code of their class (see the parser's epilog).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

from ..errors import TotalSpineSegError
from . import derivatives as D
from . import group, participant, plan, validation
from .models import WeightsProvider, as_provider
from .parser import PROG, UsageError, build_parser, parse_localizer_specs, read_filter_file, read_labels

log = logging.getLogger("totalspineseg.bids_app")

LEVELS = ("participant", "group")


class UnknownLevel(TotalSpineSegError):
    exit_code = 17


class CannotCreate(TotalSpineSegError):
    exit_code = 73


def main(argv=None, models=None) -> int:
    """The BIDS-App. `models`: a `pipeline.Models` or a provider (see `bids_app.models`); default: --weights."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors (64)
        return exc.code if isinstance(exc.code, int) else 0
    _setup_logging(args.verbose, args.quiet)
    try:
        return _run(args, models)
    except (TotalSpineSegError, plan.NothingSelected) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    root = logging.getLogger()
    if not root.handlers:  # an embedding program (or pytest) keeps its own handlers
        logging.basicConfig(format="%(levelname)s: %(message)s", stream=sys.stderr)
    root.setLevel(level)
    logging.captureWarnings(True)
    logging.getLogger("bidsschematools").setLevel(logging.WARNING)  # chatty at INFO on every index


def _run(args, models) -> int:
    if args.analysis_level not in LEVELS:
        raise UnknownLevel(f"unknown analysis level {args.analysis_level!r}; choose participant or group")
    output_dir = args.output_dir.absolute()
    subjects = read_labels(args.participant_label, "sub-")
    if args.analysis_level == "group":
        if not output_dir.is_dir():
            raise validation.MissingInput(f"{output_dir}: no such folder; run the participant level first")
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


def _threads(args) -> int:
    if args.omp_nthreads:
        return args.omp_nthreads
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    cpus = int(slurm) if slurm.isdigit() else len(os.sched_getaffinity(0))
    return max(1, cpus // args.nprocs)


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
