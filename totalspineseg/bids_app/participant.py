"""The participant level: run the planned jobs, resumably, and record each one's outcome.

Per image: skip it when its completion marker says it is done (same options, every output present); else
load what the job needs (its localizer's labels, the image, the networks), segment, and stage every
derivative under a hidden temporary name (`fsutil.StagedWrites`). Only when the whole set is staged: the
old marker goes, the set is renamed into place, files of the previous set that the new one lacks are
removed, and the new marker is written last. So a failure before that point (bad input, networks that do
not load, a full disk, an exception while writing) leaves the previous complete set and its marker exactly
as they were and no temporary file; a killed run leaves at worst a set without a marker, which the next run
redoes, and temporary files that the next run sweeps. A failure leaves a crash file under
``sub-<label>/log/``; the other images go on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path

from .. import __version__, volume
from ..console import describe_exception, setup_logging
from ..errors import SOME_IMAGE_FAILED, CannotCreate, JobError, TotalSpineSegError
from ..fsutil import StagedWrites, atomic_write
from ..pipeline import PipelineOptions, SegmentationResult, segment
from ..runtime import TILE_STEP_DEFAULT
from . import derivatives as D
from . import outputs
from .plan import Job
from .qc import ImageQC
from .record import ImageRecord, RecordError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """Everything a worker process needs to run jobs (picklable)."""

    bids_dir: Path
    output_dir: Path
    provider: object
    step1_only: bool = False
    iso: bool = False
    overwrite: bool = False
    log_level: int = logging.INFO

    @property
    def fingerprint(self) -> dict:
        """What must match for an earlier output to count as done."""
        return {"step1": self.step1_only, "iso": self.iso, "weights": self.provider.release,
                "precision": getattr(self.provider, "precision", "fp32"),
                "tile_step": getattr(self.provider, "tile_step", TILE_STEP_DEFAULT)}


@dataclass(frozen=True)
class JobOutcome:
    source: str
    status: str  # "done", "skipped" or "failed"
    message: str = ""
    seconds: float = 0.0
    exit_code: int = 0  # of a failure: its error class's code (65: bad input data), else 1


# --- markers and crash files -------------------------------------------------------------------------


def log_dir(output_dir: Path, job: Job) -> Path:
    return output_dir / f"sub-{job.subject}" / "log"


def marker_path(output_dir: Path, job: Job) -> Path:
    return log_dir(output_dir, job) / f"{job.stem}.done.json"


def read_marker(output_dir: Path, job: Job) -> ImageRecord | None:
    try:
        return ImageRecord.from_json(json.loads(marker_path(output_dir, job).read_text()))
    except (FileNotFoundError, json.JSONDecodeError, RecordError):
        return None


def is_complete(ctx: RunContext, job: Job) -> bool:
    record = read_marker(ctx.output_dir, job)
    if record is None or record.fingerprint != ctx.fingerprint:
        return False
    return all((ctx.output_dir / rel).is_file() for rel in record.outputs)


def crash_files(output_dir: Path, job: Job) -> list[Path]:
    return sorted(log_dir(output_dir, job).glob(f"crash-*-{job.stem}.txt"))


def write_crash(output_dir: Path, job: Job, exc: BaseException | str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    path = log_dir(output_dir, job) / f"crash-{stamp}-{os.getpid()}-{job.stem}.txt"
    reason = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    detail = "" if isinstance(exc, str) else "\n" + "".join(traceback.format_exception(exc))
    text = f"image: {job.source}\nrole: {job.role}\nversion: {__version__}\nreason: {reason}\n{detail}"
    return atomic_write(path, text)


def _remove(paths) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            Path(p).unlink(missing_ok=True)


# --- one image ---------------------------------------------------------------------------------------


def _localizer_labels(ctx: RunContext, job: Job, cache: dict) -> volume.Volume | None:
    loc = job.localizer
    if loc is None:
        return None
    if loc.source in cache:
        return cache[loc.source]
    if not is_complete(ctx, loc):
        raise JobError(f"its localizer {loc.source} was not segmented (see its crash file)")
    kind = outputs.localizer_output_kind(ctx.step1_only)
    cache[loc.source] = volume.load_labels(ctx.output_dir / D.output_path(loc.entities, kind))
    return cache[loc.source]


def _segment(ctx: RunContext, job: Job, cache: dict):
    """Everything that may fail on the input or the networks, before any output is touched."""
    if job.error:
        raise JobError(job.error)
    localizer = _localizer_labels(ctx, job, cache)
    source = volume.load_volume(ctx.bids_dir / job.source)
    models = ctx.provider(ctx.bids_dir / job.source)
    result = segment(source, models, localizer=localizer, options=PipelineOptions(step1_only=ctx.step1_only))
    return source, models, result


def output_dir_present(output_dir: Path) -> bool:
    """The output folder is still there, with the dataset_description.json the run wrote first.

    Staging creates missing folders, so a folder deleted during a run would otherwise be silently remade,
    holding some images and no dataset files.
    """
    return (output_dir / "dataset_description.json").is_file()


def _check_output_dir(ctx: RunContext) -> None:
    if not output_dir_present(ctx.output_dir):
        raise CannotCreate(f"{ctx.output_dir}: the output folder (or its dataset_description.json) has "
                           f"disappeared during the run")


def _segment_and_write(ctx: RunContext, job: Job, cache: dict, committed: list[Path]) -> ImageRecord:
    t0 = time.perf_counter()
    source, models, result = _segment(ctx, job, cache)
    prov = outputs.provenance(result.release, models.sha256, result.device, result.precision, result.tile_step,
                              result.backend)
    _check_output_dir(ctx)
    try:
        with StagedWrites() as staged:
            outputs.write_images(ctx.output_dir, job, result, source, ctx.step1_only, ctx.iso, prov, staged)
            assessed = outputs.write_stats(ctx.output_dir, job, result, ctx.step1_only, staged)
            figure = outputs.write_figure(ctx.output_dir, job, result, ctx.step1_only, staged)
            new = [Path(p) for p in staged.finals]
            record = _record(ctx, job, result, prov, assessed, figure, new, time.perf_counter() - t0)
            _check_output_dir(ctx)
            previous = read_marker(ctx.output_dir, job)
            # The set is complete on disk under temporary names: from here on the old set is replaced.
            marker_path(ctx.output_dir, job).unlink(missing_ok=True)
            committed.extend(new)
            staged.commit()
        if previous is not None:
            keep = set(record.outputs)
            _remove(ctx.output_dir / rel for rel in previous.outputs if rel not in keep)
        D.write_json(marker_path(ctx.output_dir, job), record.to_json())  # last: it declares the image complete
    except OSError as exc:
        where = exc.filename if exc.filename and not Path(exc.filename).name.startswith(".") else ctx.output_dir
        raise CannotCreate(f"{where}: cannot write the outputs of this image ({exc.strerror or exc})") from exc
    if job.role == "localizer":
        final = outputs.final_labels(result.final, ctx.step1_only)
        cache[job.source] = volume.Volume(final, result.final.grid.affine)
    return record


def _record(ctx: RunContext, job: Job, result: SegmentationResult, prov: dict, assessed: ImageQC,
            figure: str | None, written: list[Path], seconds: float) -> ImageRecord:
    return ImageRecord(
        source=job.source, image_id=job.image_id, subject=job.subject, session=job.session, role=job.role,
        localizer=job.localizer.source if job.localizer else None, fingerprint=ctx.fingerprint,
        stats=D.stats_path(job.entities).as_posix(), figure=figure,
        outputs=tuple(Path(p).relative_to(ctx.output_dir).as_posix() for p in written), provenance=prov,
        qc=assessed.summary(), levels=tuple(result.level_table()), warnings=tuple(result.warnings),
        timings={k: round(v, 3) for k, v in result.timings.items()}, seconds=round(seconds, 3),
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _failure_code(exc: BaseException, job: Job, cache: dict) -> int:
    """The exit code a failure counts as; an image that failed because its localizer did inherits its code."""
    if isinstance(exc, JobError) and job.localizer is not None and (_FAILED, job.localizer.source) in cache:
        return cache[_FAILED, job.localizer.source]
    return exc.exit_code if isinstance(exc, TotalSpineSegError) else SOME_IMAGE_FAILED


_FAILED = "failed"  # cache key prefix: (_FAILED, source) -> the exit code of that job's failure


def _crash(ctx: RunContext, job: Job, exc: Exception) -> str:
    """Write the crash file; where it cannot be written (a full disk, a vanished folder), say so instead."""
    if not output_dir_present(ctx.output_dir):
        return "no crash file: the output folder has disappeared"
    try:
        return f"details: {write_crash(ctx.output_dir, job, str(exc) if isinstance(exc, JobError) else exc)}"
    except OSError as err:
        return f"no crash file: {err.strerror or err}"


def run_job(ctx: RunContext, job: Job, cache: dict) -> JobOutcome:
    if not ctx.overwrite and not job.error and is_complete(ctx, job):
        log.info("%s: already complete, skipped", job.source)
        return JobOutcome(job.source, "skipped")
    t0 = time.perf_counter()
    committed: list[Path] = []  # the new set, once renamed into place (removed if the marker cannot follow)
    try:
        _segment_and_write(ctx, job, cache, committed)
    except Exception as exc:  # noqa: BLE001 - one image's failure must not stop the others
        if not marker_path(ctx.output_dir, job).exists():
            _remove(committed)
        code = _failure_code(exc, job, cache)
        cache[_FAILED, job.source] = code
        message = str(exc) if isinstance(exc, TotalSpineSegError) else describe_exception(exc)
        log.error("%s: failed: %s (%s)", job.source, message, _crash(ctx, job, exc))
        return JobOutcome(job.source, "failed", message, time.perf_counter() - t0, code)
    for old in crash_files(ctx.output_dir, job):
        old.unlink(missing_ok=True)
    seconds = time.perf_counter() - t0
    log.info("%s: done in %.1f s", job.source, seconds)
    return JobOutcome(job.source, "done", seconds=seconds)


# --- many images -------------------------------------------------------------------------------------


def run_unit(ctx: RunContext, unit: list[Job]) -> list[JobOutcome]:
    """The jobs of one subject and session, localizers first, sharing their localizer segmentations."""
    cache: dict = {}
    return [run_job(ctx, job, cache) for job in unit]


def _init_worker(level: int) -> None:
    setup_logging(level=level)


def run_all(ctx: RunContext, units: list[list[Job]], nprocs: int = 1) -> list[JobOutcome]:
    """Run every unit; with nprocs > 1, in that many spawned processes (each loads its own networks)."""
    if nprocs <= 1 or len(units) <= 1:
        return [o for unit in units for o in run_unit(ctx, unit)]
    with ProcessPoolExecutor(max_workers=nprocs, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(ctx.log_level,)) as pool:
        futures = [pool.submit(run_unit, ctx, unit) for unit in units]
        return [o for f in futures for o in f.result()]
