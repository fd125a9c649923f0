"""bf16 (or fp16) autocast, or another backend, against torch fp32, on the same weights: agreement and speed.

For every held-out phantom of the demo recipe (its localizer first where it needs one) and every real scan in
../shared/data/real, the pipeline runs once per precision; reported per image:

* same numbering: the same set of labels in the final segmentation;
* the lowest Dice over the structures (per label, fp32 as the reference; target >= 0.99);
* the step-2 crop box: largest shift of its corner or size, in voxels (target <= 1);
* the time of the two forward passes in each precision.

    .venv/bin/python benchmarks/bench_precision.py [--weights demo] [--precision bf16] [--backend torch]
        [--no-real] [--json FILE]

`--backend openvino` (with `--precision fp32` or `bf16`) runs the candidate in OpenVINO, the reference staying
torch fp32. Prints a Markdown table for benchmarks/RESULTS.md. `--precision auto` (and `--backend auto`) may pick
a candidate only if every row passes (see totalspineseg/runtime.py, totalspineseg/openvino_backend.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agreement import agreement, forward_seconds, set_model_option  # noqa: E402

from totalspineseg import volume, weights  # noqa: E402
from totalspineseg.errors import TotalSpineSegError  # noqa: E402
from totalspineseg.pipeline import Models, PipelineOptions, segment  # noqa: E402
from totalspineseg.runtime import cpu_has_native_bf16  # noqa: E402
from totalspineseg.synth import phantom  # noqa: E402
from totalspineseg.training import demo_recipe  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "real"


def run(models: Models, image: volume.Volume, localizer) -> tuple:
    result = segment(image, models, localizer, PipelineOptions(progress=False))
    return result, forward_seconds(result)


def compare(name: str, reference: Models, candidate: Models, image: volume.Volume,
            loc_image: volume.Volume | None) -> dict:
    outputs = []
    for models in (reference, candidate):
        localizer = None
        if loc_image is not None:
            loc_result, _ = run(models, loc_image, None)
            localizer = volume.Volume(loc_result.final.step2, loc_image.affine)
        outputs.append(run(models, image, localizer))
    (ref, t_ref), (new, t_new) = outputs
    return {"image": name, **agreement(ref, new), "forward_fp32_s": round(t_ref, 2), "forward_s": round(t_new, 2)}


def cases(real: bool, fovs: list[str] | None):
    for spec in demo_recipe.HELD_OUT:
        if fovs and spec.fov not in fovs:
            continue
        ph = spec.render()
        loc = None
        if spec.fov in demo_recipe.NEEDS_LOCALIZER:
            lz = phantom.make_localizer(spec.seed, spec.extra_lumbar, spec.missing_disc, contrast="T2w")
            loc = volume.Volume(lz.image, lz.affine)
        yield spec.name, volume.Volume(ph.image, ph.affine), loc
    if real and REAL.is_dir():
        from eval_demo import REAL_SCANS

        for scan, _, _ in REAL_SCANS:
            if (REAL / scan).is_file():
                yield scan, volume.load_volume(REAL / scan), None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default="demo")
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--backend", default="torch", choices=["torch", "openvino"])
    p.add_argument("--no-real", action="store_true")
    p.add_argument("--fov", nargs="+", help="only the held-out phantoms of these fields of view")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--candidate-threads", type=int, default=None,
                   help="the candidate's CPU threads (default --threads): with --precision fp32 --backend torch, "
                        "a null check of how far fp32 alone moves when only the summation order changes")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "_out" / "bench_precision.json")
    args = p.parse_args()
    paths = weights.resolve_model(args.weights)
    reference = Models.load(paths, "cpu", args.threads, precision="fp32")
    threads = args.candidate_threads or args.threads
    if args.backend == "torch":
        candidate = Models.load(paths, "cpu", threads, precision="fp32")
        set_model_option(candidate, "precision", args.precision)
    else:
        candidate = Models.load(paths, "cpu", threads, precision=args.precision, backend=args.backend)
    label = args.precision if args.backend == "torch" else f"{args.backend} {args.precision}"
    if args.candidate_threads:
        label += f" ({args.candidate_threads} threads)"
    rows = []
    for name, image, loc in cases(not args.no_real, args.fov):
        try:
            rows.append(compare(name, reference, candidate, image, loc))
        except TotalSpineSegError as exc:
            rows.append({"image": name, "error": str(exc), "passes": False})
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))
    print(f"## {label} against torch fp32, weights {args.weights} ({time.strftime('%Y-%m-%d')}, "
          f"{platform.processor() or platform.machine()}, native bf16: {cpu_has_native_bf16()})\n")
    print("| image | same numbering | lowest Dice (label) | crop box shift (voxels) | forward fp32 (s) | "
          f"forward {label} (s) | passes |\n|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['image']} | error: {r['error']} | | | | | no |")
            continue
        print(f"| {r['image']} | {'yes' if r['same_numbering'] else 'NO'} | {r['min_dice']:.4f} ({r['worst_label']}) "
              f"| {r['crop_shift_voxels']:g} | {r['forward_fp32_s']:.2f} | {r['forward_s']:.2f} | "
              f"{'yes' if r['passes'] else 'NO'} |")
    ok = [r for r in rows if "error" not in r]
    t32, t16 = sum(r["forward_fp32_s"] for r in ok), sum(r["forward_s"] for r in ok)
    print(f"\n{sum(r['passes'] for r in rows)}/{len(rows)} pass; forward passes in all: fp32 {t32:.1f} s, "
          f"{label} {t16:.1f} s ({t32 / max(t16, 1e-9):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
