"""Sliding-window step (`--tile-step`) 0.5 against a larger one, on the same loaded networks: speed and agreement.

For each held-out phantom of the demo recipe asked for (default: 10001, the 1 mm whole spine, and two others),
the pipeline runs with the reference step, then the other step, then the reference step again (A, B, A), so that
a machine whose load changes during the run shows it as a difference between the two A runs, and the speed ratio
uses their mean. Reported per image:

* network forward calls (tiles) of both steps together, per step size, and the time spent inside the network
  calls (the rest of a "forward" stage is nnU-Net's preprocessing, resampling and export);
* the time of the two forward passes and of the whole `pipeline.segment` call, and the CPU time of that call
  (the process's, all threads: on a machine shared with other jobs it moves less than the wall time);
* agreement of B with the first A (`agreement.py`: same numbering, Dice per structure min/mean, crop box);
* whether the two A runs gave identical labels (the run is deterministic).

    nice -n 19 .venv/bin/python benchmarks/bench_tile_step.py [--weights demo] [--step 0.75] [--seeds 10001 ...]

Prints a Markdown table for benchmarks/RESULTS.md and writes the rows to benchmarks/_out/bench_tile_step.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agreement import agreement, forward_seconds, set_model_option  # noqa: E402

from totalspineseg import volume, weights  # noqa: E402
from totalspineseg.pipeline import Models, PipelineOptions, segment  # noqa: E402
from totalspineseg.runtime import TILE_STEP_DEFAULT  # noqa: E402
from totalspineseg.training import demo_recipe  # noqa: E402

DEFAULT_SEEDS = (10001, 10004, 10010)  # whole spine RAS 1 mm; cervical PSR 0.9x0.9x3; thoracolumbar RAS 1.2 mm


class TileCounter:
    """Counts the forward calls (one per sliding-window tile) of the networks of a `Models`, and their time."""

    def __init__(self, models: Models):
        self.calls, self.seconds, self._start = 0, 0.0, 0.0
        networks = [m._predictor.network for m in (models.step1, models.step2) if m is not None]
        self._hooks = [n.register_forward_pre_hook(self._before) for n in networks]
        self._hooks += [n.register_forward_hook(self._after) for n in networks]

    def _before(self, module, inputs) -> None:
        self.calls += int(inputs[0].shape[0])
        self._start = time.perf_counter()

    def _after(self, module, inputs, output) -> None:
        self.seconds += time.perf_counter() - self._start

    def take(self) -> tuple[int, float]:
        taken = (self.calls, self.seconds)
        self.calls, self.seconds = 0, 0.0
        return taken


def timed_run(models: Models, image: volume.Volume, tile_step: float, counter: TileCounter) -> dict:
    set_model_option(models, "tile_step", tile_step)
    counter.take()
    start, cpu = time.perf_counter(), time.process_time()
    result = segment(image, models, None, PipelineOptions(progress=False))
    tiles, network_s = counter.take()
    return {"result": result, "tiles": tiles, "network_s": network_s, "forward_s": forward_seconds(result),
            "segment_s": time.perf_counter() - start, "segment_cpu_s": time.process_time() - cpu}


def compare(spec, models: Models, step: float, counter: TileCounter) -> dict:
    ph = spec.render()
    image = volume.Volume(ph.image, ph.affine)
    a1 = timed_run(models, image, TILE_STEP_DEFAULT, counter)
    b = timed_run(models, image, step, counter)
    a2 = timed_run(models, image, TILE_STEP_DEFAULT, counter)
    forward_a = (a1["forward_s"] + a2["forward_s"]) / 2
    segment_a = (a1["segment_s"] + a2["segment_s"]) / 2
    cpu_a = (a1["segment_cpu_s"] + a2["segment_cpu_s"]) / 2
    return {
        "image": spec.name, "shape": list(ph.image.shape), "tiles_ref": a1["tiles"], "tiles": b["tiles"],
        "forward_ref_s": [round(a1["forward_s"], 2), round(a2["forward_s"], 2)], "forward_s": round(b["forward_s"], 2),
        "segment_ref_s": [round(a1["segment_s"], 2), round(a2["segment_s"], 2)], "segment_s": round(b["segment_s"], 2),
        "forward_speedup": round(forward_a / max(b["forward_s"], 1e-9), 2),
        "segment_speedup": round(segment_a / max(b["segment_s"], 1e-9), 2),
        "segment_cpu_ref_s": [round(a1["segment_cpu_s"], 2), round(a2["segment_cpu_s"], 2)],
        "segment_cpu_s": round(b["segment_cpu_s"], 2),
        "cpu_speedup": round(cpu_a / max(b["segment_cpu_s"], 1e-9), 2),
        "network_ref_s": [round(a1["network_s"], 2), round(a2["network_s"], 2)], "network_s": round(b["network_s"], 2),
        "reference_repeats_exactly": bool(np.array_equal(a1["result"].final.step2, a2["result"].final.step2)),
        **agreement(a1["result"], b["result"]),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default="demo")
    p.add_argument("--step", type=float, default=0.75, help="the tile step to compare with 0.5 (default 0.75)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS),
                   help="held-out phantom seeds of the demo recipe")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "_out" / "bench_tile_step.json")
    args = p.parse_args()
    specs = {spec.seed: spec for spec in demo_recipe.HELD_OUT if spec.fov not in demo_recipe.NEEDS_LOCALIZER}
    unknown = sorted(set(args.seeds) - set(specs))
    if unknown:
        p.error(f"not a held-out phantom that needs no localizer: {unknown}; choose from {sorted(specs)}")
    load_before = os.getloadavg()
    models = Models.load(weights.resolve_model(args.weights), "cpu", args.threads, precision="fp32")
    counter = TileCounter(models)
    rows = []
    for seed in args.seeds:
        rows.append(compare(specs[seed], models, args.step, counter))
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))

    print(f"## Tile step {args.step:g} against {TILE_STEP_DEFAULT:g}, weights {args.weights} "
          f"({time.strftime('%Y-%m-%d')}, {platform.machine()}, {models.step1.threads} threads, fp32; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after)\n")
    print(f"| image | tiles {TILE_STEP_DEFAULT:g} / {args.step:g} | forward {TILE_STEP_DEFAULT:g} (s, A A) | "
          f"forward {args.step:g} (s) | speed-up forward / segment / CPU time | same numbering | "
          "Dice min (label) / mean | crop box shift | passes |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['image']} | {r['tiles_ref']} / {r['tiles']} | {r['forward_ref_s'][0]:.1f}, "
              f"{r['forward_ref_s'][1]:.1f} | {r['forward_s']:.1f} | {r['forward_speedup']:.2f}x / "
              f"{r['segment_speedup']:.2f}x / {r['cpu_speedup']:.2f}x | {'yes' if r['same_numbering'] else 'NO'} | "
              f"{r['min_dice']:.4f} "
              f"({r['worst_label']}) / {r['mean_dice']:.4f} | {r['crop_shift_voxels']:g} | "
              f"{'yes' if r['passes'] else 'NO'} |")
    for r in rows:
        print(f"- {r['image']}: time inside the network calls {r['network_ref_s'][0]:.1f}, "
              f"{r['network_ref_s'][1]:.1f} s "
              f"at {TILE_STEP_DEFAULT:g}, {r['network_s']:.1f} s at {args.step:g}, of forward stages "
              f"{r['forward_ref_s'][0]:.1f}, {r['forward_ref_s'][1]:.1f} / {r['forward_s']:.1f} s; CPU time of "
              f"segment {r['segment_cpu_ref_s'][0]:.1f}, {r['segment_cpu_ref_s'][1]:.1f} / {r['segment_cpu_s']:.1f} s")
    print(f"\n{sum(r['passes'] for r in rows)}/{len(rows)} pass (same numbering, every Dice >= 0.99, crop box within "
          f"1 voxel); the {TILE_STEP_DEFAULT:g} runs repeated exactly: "
          f"{all(r['reference_repeats_exactly'] for r in rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
