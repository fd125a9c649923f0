"""This project against upstream TotalSpineSeg, side by side: wall time, peak RSS of the process tree, agreement.

1. Builds upstream ``totalspineseg==20260807`` in its own venv (default ``~/.cache/totalspineseg/upstream-venv``,
   or ``--venv``), the lean way: torch 2.13.0 CPU through the project's constraints file (the same wheel or index
   as the project's venv), nnunetv2 2.8.1's runtime dependencies as the project installs them (its
   ``requirements/requirements-cpu.txt`` without the BIDS packages), then ``--no-deps`` nnunetv2,
   dynamic-network-architectures (no timm / torchvision chain), totalspineseg and auglab, and the packages
   upstream's inference imports (``UPSTREAM_RUNTIME``). Skipped when already built (a marker holds the recipe).
2. Prepares one weights root per row in upstream's "custom" layout (``nnUNet/results/Dataset10x_.../``), read by
   both tools. Folder names and checkpoints say ``nnUNetTrainer``: upstream imports its AugLab trainer, which
   needs torchvision, whenever a checkpoint names ``nnUNetTrainerDAExtGPU``. Only the trainer name changes.
3. Runs upstream's ``totalspineseg`` CLI, then this project's, on the same phantom, one after the other, each as a
   child process whose tree (the process and all its descendants) is sampled every 50 ms from ``/proc``; the peak
   is the largest sum of their RSS. Agreement: this project's final labels against upstream's (same set of labels,
   Dice per structure).

Rows (``--rows``): ``demo`` (the bundled demo model, both steps), ``resencl-step1`` (a full-size ResEnc-L step-1
network with random weights, ``--step1``), ``demo+resencl`` (demo step 1 + ResEnc-L step 2 with random weights:
random step-1 weights rarely give the landmark upstream needs to go on). The ResEnc-L folders are
``bench_pipeline.build_weights``'s (cached under ``benchmarks/_out/bench_pipeline/weights``).

    nice -n 19 .venv/bin/python benchmarks/compare_upstream.py [--rows demo resencl-step1 demo+resencl]
        [--threads N] [--precision auto [bf16 ...]] [--backend torch [openvino]] [--small] [--results]

Prints one Markdown table; ``--results`` also writes it into its section of ``benchmarks/RESULTS.md``.
``--small`` runs on a small cervical phantom: a quick check that everything works, not a measurement.
Not run in CI (``tests/test_compare_upstream.py`` tests its pure parts).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from totalspineseg.openvino_backend import BACKENDS  # noqa: E402
from totalspineseg.runtime import PRECISIONS  # noqa: E402

UPSTREAM = "totalspineseg==20260807"
NO_DEPS = (UPSTREAM, "nnunetv2==2.8.1", "dynamic-network-architectures==0.4.4", "auglab==20260109")
# What upstream's inference imports beyond nnunetv2's dependencies, read from the wheel's imports: torchio
# (resampling), gryds (utils/augment.py, which the package's __init__ imports), psutil (inference.py). auglab's
# kornia and nilearn (declared by totalspineseg) are not imported on the inference path, nor is torchvision once
# the checkpoints name nnUNetTrainer. Checked 2026-12-01 (--small, demo): with these, upstream's CLI ran step 1
# to its outputs and went on into step 2 (the run was stopped there for time).
UPSTREAM_RUNTIME = ("torchio==1.2.1", "gryds==0.0.9", "psutil")
PROJECT_ONLY = ("pybids", "bids-validator-deno")  # in requirements-cpu.txt, not nnunetv2 dependencies
DEFAULT_VENV = Path("~/.cache/totalspineseg/upstream-venv").expanduser()
WORK = HERE / "_out" / "compare_upstream"
RESENCL_CACHE = HERE / "_out" / "bench_pipeline" / "weights"
RESENCL_DATASET_SHAPE = (64, 256, 320)  # bench_pipeline's default: the planner then picks a 64 x 256 x 256 patch
STEPS = (("step1", "Dataset101_TotalSpineSeg_step1"), ("step2", "Dataset102_TotalSpineSeg_step2"))
TRAINER = "nnUNetTrainer"
SECTION = "## Side by side with upstream (`benchmarks/compare_upstream.py`)"


@dataclass(frozen=True)
class Row:
    key: str
    title: str
    step1: str  # "demo" or "resencl"
    step2: str
    step1_only: bool = False


ROWS = {row.key: row for row in (
    Row("demo", "the demo model, both steps", "demo", "demo"),
    Row("resencl-step1", "ResEnc-L step 1 only (random weights, `--step1`)", "resencl", "resencl", True),
    Row("demo+resencl", "both steps: demo step 1 + ResEnc-L step 2 (random weights)", "demo", "resencl"),
)}


# ---------------------------------------------------------------------------------------------------------------
# Peak RSS of a process tree


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(c) for c in f.read().split()]
    except OSError:  # the process ended while it was read
        pass
    return kids


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants alive now."""
    seen, todo = [], [pid]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.append(current)
            todo += _children(current)
    return seen


def tree_rss(pid: int) -> int:
    """The sum of the resident set sizes of ``pid`` and all its descendants, in bytes."""
    return sum(_rss_bytes(p) for p in tree_pids(pid))


class TreePeak:
    """Samples the RSS of a process tree every ``interval`` s in a thread; ``peak`` is the largest sum seen."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval, self.peak, self.samples = pid, interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Run:
    seconds: float
    peak_bytes: int
    returncode: int
    log: Path


def run_measured(command: list[str], log: Path, env: dict | None = None, timeout: float | None = None) -> Run:
    """Run ``command`` (output to ``log``), timing it and sampling the peak RSS of its process tree."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        with TreePeak(process.pid) as sampler:
            try:
                returncode = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                for pid in reversed(tree_pids(process.pid)):
                    with _quietly():
                        os.kill(pid, 9)
                returncode = process.wait()
        seconds = time.perf_counter() - start
    return Run(seconds, sampler.peak, returncode, log)


class _quietly:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        return kind is not None and issubclass(kind, OSError)


# ---------------------------------------------------------------------------------------------------------------
# Upstream's venv


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def upstream_requirements() -> list[str]:
    """nnunetv2 2.8.1's runtime dependencies, as the project's lean recipe lists them (the same versions)."""
    lines = (ROOT / "requirements" / "requirements-cpu.txt").read_text().splitlines()
    out = []
    for line in lines:
        requirement = line.split("#", 1)[0].strip()
        name = requirement.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower()
        if requirement and name not in PROJECT_ONLY:
            out.append(requirement)
    return out


def recipe_id() -> str:
    recipe = json.dumps([upstream_requirements(), NO_DEPS, UPSTREAM_RUNTIME,
                         (ROOT / "requirements" / "constraints-cpu.txt").read_text()])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def build_upstream(venv: Path, python: str = sys.executable, quiet: bool = False) -> Path:
    """Build (once) upstream's venv; returns its ``totalspineseg`` executable."""
    marker = venv / ".compare_upstream_recipe"
    exe = venv / "bin" / "totalspineseg"
    if exe.is_file() and marker.is_file() and marker.read_text().strip() == recipe_id():
        return exe
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    if not python_of(venv).is_file():
        say(f"creating {venv}")
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(python_of(venv)), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    constraints = ["-c", str(ROOT / "requirements" / "constraints-cpu.txt")]
    start = time.perf_counter()
    say("installing torch (CPU) and nnunetv2's dependencies")
    subprocess.run(pip + constraints + upstream_requirements() + list(UPSTREAM_RUNTIME), check=True)
    say("installing " + ", ".join(NO_DEPS) + " without dependencies")
    subprocess.run(pip + ["--no-deps", *NO_DEPS], check=True)
    check = "import torch, nnunetv2, totalspineseg.inference; assert '+cpu' in torch.__version__, torch.__version__"
    subprocess.run([str(python_of(venv)), "-c", check], check=True, cwd=venv)  # not this project's package
    marker.write_text(recipe_id() + "\n")
    say(f"upstream venv ready in {time.perf_counter() - start:.0f} s")
    return exe


# ---------------------------------------------------------------------------------------------------------------
# Weights


def renamed_folder(name: str, trainer: str = TRAINER) -> str:
    """``<trainer>__<plans>__<configuration>`` with the trainer part replaced."""
    parts = name.split("__")
    if len(parts) != 3:
        raise ValueError(f"{name!r} is not a <trainer>__<plans>__<configuration> folder name")
    return "__".join([trainer, *parts[1:]])


def copy_renamed(folder: Path, checkpoint: Path, dest_dataset: Path, trainer: str = TRAINER) -> Path:
    """A copy of one model folder under ``dest_dataset`` whose folder name and checkpoint name ``trainer``.

    Only the checkpoint's ``trainer_name`` changes (the network weights, plans and dataset.json are the same);
    a checkpoint that already names ``trainer`` is hard-linked (or copied). Returns the new model folder.
    """
    import torch

    from totalspineseg.predictor import read_checkpoint

    dest = dest_dataset / renamed_folder(folder.name, trainer)
    target = dest / checkpoint.parent.name / checkpoint.name
    if target.is_file():
        return dest
    target.parent.mkdir(parents=True, exist_ok=True)
    for name in ("dataset.json", "plans.json"):
        shutil.copy2(folder / name, dest / name)
    content = read_checkpoint(checkpoint)
    partial = target.with_name(target.name + ".partial")
    if content.get("trainer_name") == trainer:
        del content
        try:
            os.link(checkpoint, partial)
        except OSError:
            shutil.copy2(checkpoint, partial)
    else:
        content["trainer_name"] = trainer
        torch.save(content, partial)
        del content
    partial.rename(target)
    return dest


def model_source(kind: str):
    """``ModelPaths`` of the demo model or of the ResEnc-L folders (built once)."""
    from totalspineseg import weights

    if kind == "demo":
        return weights.resolve_model("demo")
    from bench_pipeline import build_weights

    return weights.resolve_model(str(build_weights(RESENCL_CACHE, RESENCL_DATASET_SHAPE)))


def prepare_weights(row: Row, work: Path) -> Path:
    """A weights root in upstream's custom layout with the row's two models, renamed to ``nnUNetTrainer``."""
    root = work / "weights" / f"{row.step1}-{row.step2}"
    results = root / "nnUNet" / "results"
    for step, dataset in STEPS:
        paths = model_source(getattr(row, step))
        copy_renamed(getattr(paths, step), paths.checkpoint(step), results / dataset)
    return root


# ---------------------------------------------------------------------------------------------------------------
# Running both tools


def make_input(work: Path, small: bool) -> Path:
    """The 1 mm whole-spine phantom of the issue (seed 0, 80 x 148 x 729), or a cervical view with ``small``."""
    from totalspineseg.synth import phantom
    from totalspineseg.volume import save_nifti

    fov = "cervical" if small else "whole"
    path = work / "input" / f"phantom0_{fov}_T2w.nii.gz"
    if not path.is_file():
        ph = phantom.make_phantom(0, fov)
        save_nifti(path, ph.image, ph.affine, "float32")
    return path


def upstream_command(exe: Path, image: Path, out: Path, weights_root: Path, row: Row, threads: int) -> list[str]:
    command = [str(exe), str(image), str(out), "--data-dir", str(weights_root), "--device", "cpu",
               "--max-workers", str(threads), "--max-workers-nnunet", str(threads), "--no-stalling", "--quiet"]
    return command + (["--step1"] if row.step1_only else [])


def project_command(image: Path, out: Path, weights_root: Path, row: Row, threads: int, precision: str,
                    backend: str = "torch") -> list[str]:
    exe = Path(sys.executable).parent / "totalspineseg"
    command = [str(exe), str(image), str(out), "--weights", str(weights_root), "--device", "cpu",
               "--max-workers", str(threads), "--precision", precision, "--backend", backend, "--overwrite",
               "--quiet"]
    return command + (["--step1"] if row.step1_only else [])


def final_output(out: Path, image: Path, row: Row) -> Path:
    folder = out / ("step1_output" if row.step1_only else "step2_output")
    return folder / image.name


def label_agreement(ref_path: Path, new_path: Path) -> dict:
    import nibabel as nib
    import numpy as np
    from agreement import label_agreement as compare

    ref, new = (np.asarray(nib.load(p).dataobj) for p in (ref_path, new_path))
    if ref.shape != new.shape:
        return {"error": f"shapes differ: {ref.shape} against {new.shape}"}
    return compare(ref, new)


@dataclass
class Result:
    row: Row
    upstream: Run | None = None
    project: Run | None = None
    agreement: dict = field(default_factory=dict)
    note: str = ""
    precision: str = ""  # this project's --precision and --backend, where a row was run in more than one


def run_row(row: Row, args, exe: Path, image: Path) -> list[Result]:
    """Upstream once, then this project once per precision and backend: one Result each. An OpenVINO run is
    preceded by an untimed one that fills the converted-network cache, as after a first run on a machine."""
    work = args.work / "runs" / row.key
    weights_root = prepare_weights(row, args.work)
    env = {**os.environ, "TOTALSPINESEG_DATA": str(weights_root),
           "TOTALSPINESEG_OPENVINO_CACHE": str(args.work / "openvino_cache")}

    def measured(tool: str, command: list[str]) -> Run:
        shutil.rmtree(work / tool, ignore_errors=True)
        return run_measured(command, work / f"{tool}.log", env, args.timeout)

    upstream = measured("upstream", upstream_command(exe, image, work / "upstream", weights_root, row, args.threads))
    up_note = f"upstream exited {upstream.returncode} (see {upstream.log}); " if upstream.returncode else ""
    results = []
    variants = [(p, b) for p in args.precision for b in args.backend]
    for precision, backend in variants:
        tool = "project" if len(variants) == 1 else f"project_{precision}_{backend}"
        command = project_command(image, work / tool, weights_root, row, args.threads, precision, backend)
        if backend != "torch":
            measured(tool, command)  # untimed: the network converted and compiled once
        project = measured(tool, command)
        result = Result(row, upstream, project, note=up_note,
                        precision=f"--precision {precision} --backend {backend}" if len(variants) > 1 else "")
        if project.returncode:
            result.note += f"this project exited {project.returncode} (see {project.log}); "
        paths = [final_output(work / t, image, row) for t in ("upstream", tool)]
        if all(p.is_file() for p in paths):
            result.agreement = label_agreement(*paths)
        else:
            result.note += "no final output of " + " and ".join(p.parent.parent.name for p in paths if not p.is_file())
        results.append(result)
    return results


# ---------------------------------------------------------------------------------------------------------------
# Report


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def agreement_text(agreement: dict) -> str:
    if not agreement:
        return "-"
    if "error" in agreement:
        return agreement["error"]
    same = "same numbering" if agreement["same_numbering"] else "numbering differs"
    worst = f" ({agreement['worst_label']})" if agreement.get("worst_label") is not None else ""
    return f"{same}; Dice min {agreement['min_dice']:.3f}{worst}, mean {agreement['mean_dice']:.3f}"


def format_table(results: list[Result]) -> str:
    lines = ["| weights | upstream | this project | speed-up | RAM ratio | agreement |", "|---|---|---|---|---|---|"]
    for r in results:
        up, me = r.upstream, r.project
        cells = [f"{run.seconds:.1f} s, {_gb(run.peak_bytes)}" if run else "-" for run in (up, me)]
        ok = up and me and up.returncode == 0 and me.returncode == 0
        speed = f"{up.seconds / me.seconds:.2f}x faster" if ok and me.seconds else "-"
        ram = f"{me.peak_bytes / up.peak_bytes:.2f}x" if ok and up.peak_bytes else "-"
        text = agreement_text(r.agreement) + (f" ({r.note.strip('; ')})" if r.note else "")
        title = r.row.title + (f", this project `{r.precision}`" if r.precision else "")
        lines.append(f"| {title} | {cells[0]} | {cells[1]} | {speed} | {ram} | {text} |")
    return "\n".join(lines)


def machine_line(args, image_shape) -> str:
    import torch

    cpus = len(os.sched_getaffinity(0))
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()} ({platform.machine()}, {cpus} CPUs, "
            f"load average {load} at the end), Python {platform.python_version()}, torch {torch.__version__}; "
            f"input: phantom seed 0 {'cervical' if args.small else 'whole spine'}, "
            f"{' x '.join(map(str, image_shape))} at 1 mm; `--threads {args.threads}`, this project "
            f"`--precision {' / '.join(args.precision)}` `--backend {' / '.join(args.backend)}` (an OpenVINO run "
            f"after an untimed one that converts its networks), upstream {UPSTREAM} (fp32). Peak RSS: the sum over the "
            f"process and its descendants, sampled every 50 ms.")


def section(table: str, machine: str) -> str:
    return f"{SECTION}\n\n{machine}\n\n{table}\n"


def write_section(results_md: Path, text: str) -> None:
    """Replace the section of this script in ``results_md``, or insert it before the lite model's sections."""
    content = results_md.read_text()
    start = content.find(SECTION)
    if start >= 0:
        end = content.find("\n## ", start + len(SECTION))
        content = content[:start] + text + (content[end:] if end >= 0 else "")
    else:
        anchor = content.find("\n## Lite model")
        if anchor >= 0:
            content = content[:anchor + 1] + text + "\n" + content[anchor + 1:]
        else:
            content = content.rstrip("\n") + "\n\n" + text
    results_md.write_text(content)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="CPU threads / workers of both tools (default: the CPUs of this process)")
    p.add_argument("--precision", nargs="+", default=["auto"], choices=PRECISIONS,
                   help="this project's --precision; several run this project once each against one upstream run "
                        "(upstream runs fp32)")
    p.add_argument("--backend", nargs="+", default=["torch"], choices=BACKENDS,
                   help="this project's --backend; with several precisions or backends, one run of this project each")
    p.add_argument("--small", action="store_true", help="a small cervical phantom: a quick check, not a measurement")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help=f"upstream's venv (default {DEFAULT_VENV})")
    p.add_argument("--work", type=Path, default=WORK, help=f"inputs, weights and outputs (default {WORK})")
    p.add_argument("--timeout", type=float, default=3 * 3600, help="seconds per tool run (default 3 h)")
    p.add_argument("--results", action="store_true", help="also write the table into benchmarks/RESULTS.md")
    p.add_argument("--results-file", type=Path, default=HERE / "RESULTS.md", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    exe = build_upstream(args.venv)
    image = make_input(args.work, args.small)
    import nibabel as nib

    shape = nib.load(image).shape
    results = []
    for key in args.rows:
        print(f"row {key}: upstream, then this project", file=sys.stderr, flush=True)
        row_results = run_row(ROWS[key], args, exe, image)
        results += row_results
        print("\n".join(format_table(row_results).splitlines()[2:]), file=sys.stderr, flush=True)
    text = section(format_table(results), machine_line(args, shape))
    (args.work / "results.json").write_text(json.dumps(
        [{"row": r.row.key, "variant": r.precision or f"--precision {args.precision[0]} --backend {args.backend[0]}",
          "upstream": vars(r.upstream) if r.upstream else None,
          "project": vars(r.project) if r.project else None, "agreement": r.agreement, "note": r.note}
         for r in results], indent=1, default=str))
    print(text)
    if args.results:
        write_section(args.results_file, text)
    failed = any(r.note for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
