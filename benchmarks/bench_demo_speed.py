"""CPU speed of a bundled model (demo or lite) on one whole-spine phantom (1 mm, 80 x 152 x 728 voxels), end to end.

Two numbers: the `totalspineseg IMAGE OUT --weights demo|lite` command as a user runs it (process start, imports,
model loading, both steps, labeling, writing every output and the previews), and `pipeline.segment` alone with the
models already loaded. Target: under 60 s on the project's 2-core machine. Never asserted in tests.

    .venv/bin/python benchmarks/bench_demo_speed.py [--threads N] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from totalspineseg import volume, weights  # noqa: E402
from totalspineseg.pipeline import Models, PipelineOptions, segment  # noqa: E402
from totalspineseg.training import demo_recipe  # noqa: E402

SPEC = demo_recipe.HELD_OUT[0]  # whole spine, RAS, 1 mm, T2w


TARGETS = {"demo": 60, "lite": 90}


def cli_seconds(image: Path, out: Path, threads: int | None, weights_name: str) -> float:
    command = [str(Path(sys.executable).parent / "totalspineseg"), str(image), str(out), "--weights", weights_name,
               "--device", "cpu", "--quiet", "--overwrite"]
    if threads:
        command += ["--max-workers", str(threads)]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all allowed)")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--weights", choices=sorted(TARGETS), default="demo")
    args = p.parse_args()

    ph = SPEC.render()
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "whole_T2w.nii.gz"
        volume.save_nifti(image, ph.image, ph.affine, "float32")
        cli = [cli_seconds(image, Path(tmp) / "out", args.threads, args.weights) for _ in range(args.repeat)]

    start = time.perf_counter()
    models = Models.load(weights.resolve_model(args.weights), device="cpu", threads=args.threads)
    load = time.perf_counter() - start
    runs = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        result = segment(volume.Volume(ph.image, ph.affine), models, None, PipelineOptions())
        runs.append((time.perf_counter() - start, result.timings))

    print(f"## {args.weights.capitalize()} model speed, CPU ({os.cpu_count()} cores, {models.step1.threads} threads), "
          f"whole-spine phantom {ph.image.shape} at 1 mm\n")
    print(f"- `totalspineseg IMAGE OUT --weights {args.weights}` (all outputs and previews): "
          f"{', '.join(f'{s:.1f}' for s in cli)} s (target < {TARGETS[args.weights]} s)")
    print(f"- model loading: {load:.1f} s; `pipeline.segment`: {', '.join(f'{s:.1f}' for s, _ in runs)} s")
    print("- stages of the last run: " + ", ".join(f"{k} {v:.1f} s" for k, v in runs[-1][1].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
