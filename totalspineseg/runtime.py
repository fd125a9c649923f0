"""Process-level facts and guards: how many CPU threads to use, and keeping nnU-Net's prints off stdout."""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

log = logging.getLogger(__name__)


def _positive_int(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The CPU quota of this cgroup (v2 `cpu.max`, or v1 `cpu.cfs_quota_us`), rounded up; None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return max(1, -(-int(quota) // int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return max(1, -(-quota // period)) if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def allowed_cpus(environ: Mapping[str, str] = os.environ, cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may use: SLURM_CPUS_PER_TASK, else the CPU affinity capped by the cgroup quota."""
    slurm = _positive_int(environ.get("SLURM_CPUS_PER_TASK"))
    if slurm:
        return slurm
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_limit(cgroup_root)
    return max(1, min(cpus, quota) if quota else cpus)


def resolve_threads(requested: int | None = None, jobs: int = 1, environ: Mapping[str, str] = os.environ,
                    cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPU threads for each of `jobs` parallel jobs.

    The CPUs allowed come from SLURM_CPUS_PER_TASK, else the affinity and cgroup quota; OMP_NUM_THREADS, when
    set, is the default; an explicit `requested` wins over both. The answer never exceeds the allowed CPUs
    shared among the jobs (oversubscribing only slows every job down).
    """
    if requested is not None and int(requested) < 1:
        raise ValueError(f"threads must be a positive integer, got {requested}")
    share = max(1, allowed_cpus(environ, cgroup_root) // max(1, jobs))
    wanted = int(requested) if requested is not None else _positive_int(environ.get("OMP_NUM_THREADS"))
    if wanted is None:
        return share
    if wanted > share:
        log.debug("%d threads asked for, %d CPUs allowed per job: using %d", wanted, share, share)
    return min(wanted, share)


def _not_distutils(record: logging.LogRecord) -> bool:
    return not record.name.startswith("distutils")


@contextlib.contextmanager
def nnunet_output(what: str = "nnU-Net") -> Iterator[None]:
    """Keep nnU-Net's prints (and distutils' copy logs) off the console.

    They go to the debug log when the call succeeds and to the error log when it fails, where they are
    often the only explanation.
    """
    buffer = io.StringIO()
    root = logging.getLogger()
    root.addFilter(_not_distutils)
    failed = False
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    except BaseException:
        failed = True
        raise
    finally:
        root.removeFilter(_not_distutils)
        lines = [line.rstrip() for line in buffer.getvalue().splitlines() if line.strip()]
        if failed and lines:
            log.error("%s printed before failing:\n  %s", what, "\n  ".join(lines[-40:]))
        else:
            for line in lines:
                log.debug("%s: %s", what, line)


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PRECISION_HELP = (
    "of the network forward passes: auto (default) = fp32 on the CPU, fp16 on CUDA (nnU-Net's autocast). bf16 "
    "runs large networks about 2.3x faster on a CPU with AMX or AVX512-BF16 (slower without), but its labels can "
    "differ from fp32 (with the demo model the numbering changed on 12 of 20 real scans), so auto never picks it")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bf16 natively (AMX-BF16 or AVX512-BF16), from the flags in /proc/cpuinfo.

    Without native units bf16 is emulated and slower than fp32, which is why nnU-Net leaves it off on CPU.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def resolve_precision(requested: str, device_type: str, native_bf16: bool | None = None) -> str:
    """The precision a forward pass runs in: `auto` is fp32 on the CPU and fp16 on CUDA (nnU-Net's own autocast).
    An explicit choice is kept (with a warning where it is slow or not honoured).

    `auto` does not pick bf16 on the CPU, not even where it is native (AMX or AVX512-BF16): measured on an AMX
    CPU with the demo model (benchmarks/RESULTS.md, "Precision"), bf16 changed the numbering on 12 of 20 real
    scans and missed Dice >= 0.99 for some structure on 2 of 12 held-out phantoms, the bars `auto` must pass.
    It stays one flag away, with the speed-up it buys on large networks (about 2.3x on a ResEnc-L forward).
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    if device_type == "cuda":
        if requested in ("fp32", "bf16"):
            log.warning("--precision %s: nnU-Net always predicts on CUDA under its fp16 autocast; using fp16",
                        requested)
        return "fp16"
    if requested == "auto":
        return "fp32"
    native = cpu_has_native_bf16() if native_bf16 is None else native_bf16
    if requested == "bf16" and not native:
        log.warning("--precision bf16 on a CPU without native bf16 (AMX/AVX512-BF16): it is emulated, slower than fp32")
    if requested == "fp16":
        log.warning("--precision fp16 on the CPU: few CPUs compute fp16 natively; bf16 or fp32 is usually faster")
    return requested


TILE_STEP_DEFAULT = 0.5  # nnU-Net's tile_step_size: neighbouring sliding-window tiles overlap by half a patch
TILE_STEP_HELP = (
    "sliding-window step as a fraction of the network patch, in (0, 1] (default 0.5, as upstream: neighbouring "
    "tiles overlap by half a patch). A larger step runs fewer tiles, so the networks finish sooner, at the price "
    "of less averaging where tiles meet: the labels change (0.75 on a whole spine with the demo model: 36%% fewer "
    "tiles; Dice against 0.5 down to 0.83 for one structure, 0.95 on average)")


def check_tile_step(value: float) -> float:
    """The sliding-window step as a fraction of the patch, in (0, 1]; anything else is a ValueError."""
    value = float(value)
    if not 0.0 < value <= 1.0:  # also refuses nan
        raise ValueError(f"tile step must be in (0, 1] (a fraction of the patch), got {value:g}")
    return value


def parse_tile_step(text: str) -> float:
    """argparse type of --tile-step: a bad value is a usage error (exit 64), not a traceback."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number: {_TILE_STEP_HINT}") from None
    try:
        return check_tile_step(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not in (0, 1]: {_TILE_STEP_HINT}") from None


_TILE_STEP_HINT = "give the step as a fraction of the patch, e.g. 0.5 (default) or 0.75"
