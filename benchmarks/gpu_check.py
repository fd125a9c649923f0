"""The pipeline on a GPU against the CPU: per-stage times and agreement, demo model and ResEnc-L (random weights).

Run by ``benchmarks/gpu_check.sh`` (which installs from a wheel folder first); ``--dry-run`` runs this same driver
on the CPU only, with the demo model on a small phantom, to check it without a GPU.

For each model set (``demo``: the bundled demo networks; ``resencl``: two full-size nnU-Net ResEnc-L networks with
random weights, built by ``bench_pipeline.build_weights``):

1. load the networks on the device (timed apart: model loading is not part of the per-image time);
2. segment a 1 mm whole-spine phantom twice and write every output as the CLI does; the second run's stages are
   reported (the first pays for CUDA and cuDNN start-up); cuDNN is deterministic (``deterministic=True``,
   ``benchmark=False``), so the two runs must give the same labels and the same step-2 crop box;
3. load the networks on the reference device (the CPU, fp32) and segment the agreement image there (the whole
   spine for the demo model; a cervical view for ResEnc-L, whose CPU forward takes minutes on a whole spine), and
   compare: same numbering, Dice per structure, crop box shift (``agreement.py``).

ResEnc-L with random weights gives noisy class maps whose logits are close to ties, so its GPU (fp16) against
CPU (fp32) agreement is reported, not required; the demo model's must pass. Exit status: 0 when every required
check passed, 1 when one failed, 69 when no CUDA device is usable.

    python benchmarks/gpu_check.py [--models demo resencl] [--out DIR] [--budget-s 420]
    python benchmarks/gpu_check.py --dry-run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from agreement import agreement  # noqa: E402
from bench_pipeline import build_weights, write_deliverables  # noqa: E402

NO_GPU = 69  # EX_UNAVAILABLE
STAGES = (("load", "load image"), ("prepare", "prepare (canonical, 1 mm)"), ("step1_forward", "step 1 network"),
          ("step1_labeling", "step 1 labeling"), ("step2_forward", "step 2 network (crop, odd-disc channel)"),
          ("step2_labeling", "step 2 labeling"), ("resample_back", "resampling to the native grid"),
          ("write", "writing NIfTI + previews"))
RESENCL_DATASET_SHAPE = (64, 256, 320)  # bench_pipeline's default: the planner then picks a 64 x 256 x 256 patch


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true",
                   help="the CPU only, demo model, cervical phantom: checks the driver where no GPU is")
    p.add_argument("--device", default=None, help="default cuda (cpu with --dry-run)")
    p.add_argument("--reference-device", default="cpu")
    p.add_argument("--models", nargs="+", choices=("demo", "resencl"), default=None,
                   help="default: demo resencl (demo with --dry-run)")
    p.add_argument("--fov", default=None, help="field of view of the timed phantom (default whole; cervical with "
                                               "--dry-run)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all allowed)")
    p.add_argument("--out", type=Path, default=HERE / "_out" / "gpu_check")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="skip the ResEnc-L CPU reference when less than 150 s of this budget is left")
    args = p.parse_args(argv)
    args.device = args.device or ("cpu" if args.dry_run else "cuda")
    args.models = args.models or (["demo"] if args.dry_run else ["demo", "resencl"])
    args.fov = args.fov or ("cervical" if args.dry_run else "whole")
    return args


def deterministic_cudnn() -> None:
    """After the networks are loaded: nnU-Net's predictor switches cudnn.benchmark on when it is created."""
    import torch

    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def environment(device: str) -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cpus": len(os.sched_getaffinity(0)),
           "device": device}
    if device.startswith("cuda"):
        env.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    return env


def phantom_file(out: Path, fov: str) -> Path:
    from totalspineseg.synth import phantom
    from totalspineseg.training import demo_recipe
    from totalspineseg.volume import save_nifti

    spec = demo_recipe.HELD_OUT[0]  # person 10001, RAS, 1 mm, T2w
    path = out / "input" / f"phantom{spec.seed}_{fov}_T2w.nii.gz"
    if not path.is_file():
        ph = phantom.make_phantom(spec.seed, fov, spec.orientation, spec.voxel, contrast=spec.contrast)
        save_nifti(path, ph.image, ph.affine, "float32")
    return path


def model_paths(name: str, out: Path):
    from totalspineseg import weights

    if name == "demo":
        return weights.resolve_model("demo")
    return weights.resolve_model(str(build_weights(out / "resencl_weights", RESENCL_DATASET_SHAPE)))


def load(paths, device: str, threads: int | None, precision: str):
    from totalspineseg.pipeline import Models

    start = time.perf_counter()
    models = Models.load(paths, device=device, threads=threads, precision=precision)
    if device.startswith("cuda"):
        deterministic_cudnn()
    return models, time.perf_counter() - start


def run_once(models, image: Path, out: Path) -> tuple:
    from totalspineseg.pipeline import PipelineOptions, segment

    start = time.perf_counter()
    result = segment(image, models, None, PipelineOptions())
    stages = dict(result.timings)
    stages["write"] = write_deliverables(result, out, image.name.split(".")[0])
    stages["total"] = time.perf_counter() - start
    return result, stages


def same_run(a, b) -> bool:
    import numpy as np

    crop = (a.crop_grid is None and b.crop_grid is None) or (
        a.crop_grid is not None and b.crop_grid is not None and a.crop_grid.shape == b.crop_grid.shape
        and np.array_equal(a.crop_grid.affine, b.crop_grid.affine))
    return bool(crop and np.array_equal(a.final.step1, b.final.step1) and (
        a.final.step2 is None or np.array_equal(a.final.step2, b.final.step2)))


def check(name: str, args, started: float) -> dict:
    import torch

    row: dict = {"models": name}
    paths = model_paths(name, args.out)
    timed_image = phantom_file(args.out, args.fov)
    agreement_image = timed_image if name == "demo" else phantom_file(args.out, "cervical")
    on_gpu = args.device.startswith("cuda")
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    models, row["model_load_s"] = load(paths, args.device, args.threads, "auto")
    row["precision"] = models.precision
    first, row["first_run_stages_s"] = run_once(models, timed_image, args.out / f"{name}_{args.device}_1")
    second, row["stages_s"] = run_once(models, timed_image, args.out / f"{name}_{args.device}_2")
    row["repeat_identical"] = same_run(first, second)
    if on_gpu:
        row["gpu_peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1024 ** 3, 2)
    device_result = second if agreement_image == timed_image else run_once(
        models, agreement_image, args.out / f"{name}_{args.device}_agreement")[0]
    del models

    left = args.budget_s - (time.perf_counter() - started)
    if name == "resencl" and left < 150:
        row["agreement"] = {"skipped": f"{left:.0f} s of the {args.budget_s:.0f} s budget left"}
        return row
    reference, row["reference_model_load_s"] = load(paths, args.reference_device, args.threads, "fp32")
    reference_result, row["reference_stages_s"] = run_once(reference, agreement_image,
                                                           args.out / f"{name}_{args.reference_device}")
    row["agreement_image"] = agreement_image.name
    row["agreement"] = agreement(reference_result, device_result)
    return row


def print_report(env: dict, rows: list[dict], args) -> None:
    print(f"\n## GPU check ({time.strftime('%Y-%m-%d')}): {env}\n")
    timed = [r for r in rows if "stages_s" in r]
    print("| stage (s, second run) | " + " | ".join(f"{r['models']} on {args.device} ({r['precision']})"
                                                    for r in timed) + " |")
    print("|---|" + "---|" * len(timed))
    print("| model loading (apart) | " + " | ".join(f"{r['model_load_s']:.2f}" for r in timed) + " |")
    for key, label in STAGES:
        print(f"| {label} | " + " | ".join(f"{r['stages_s'].get(key, 0.0):.2f}" for r in timed) + " |")
    print("| **total per image, model loading excluded** | " + " | ".join(
        f"**{r['stages_s']['total']:.2f}**" for r in timed) + " |")
    print("| first run total (start-up included) | " + " | ".join(
        f"{r['first_run_stages_s']['total']:.2f}" for r in timed) + " |")
    for r in rows:
        memory = f"{r['gpu_peak_memory_gb']} GB" if "gpu_peak_memory_gb" in r else "no GPU"
        print(f"\n{r['models']}: repeat identical (labels, crop box): {r.get('repeat_identical')}; "
              f"GPU peak memory: {memory}")
        if "error" in r:
            print(f"  ERROR: {r['error']}")
            continue
        a = r["agreement"]
        if "skipped" in a:
            print(f"  agreement with {args.reference_device}: skipped ({a['skipped']})")
            continue
        print(f"  agreement with {args.reference_device} fp32 on {r['agreement_image']}: same numbering "
              f"{a['same_numbering']}, Dice min {a['min_dice']:.4f} (label {a['worst_label']}), mean "
              f"{a['mean_dice']:.4f}, crop box shift {a['crop_shift_voxels']:g} voxels, passes {a['passes']}")
        print(f"  Dice per structure: {a['dice']}")


def required_ok(rows: list[dict]) -> bool:
    """The demo model must agree and every model set must repeat exactly; ResEnc-L agreement is reported only."""
    for r in rows:
        if "error" in r or not r.get("repeat_identical"):
            return False
        if r["models"] == "demo" and not r["agreement"].get("passes"):
            return False
    return True


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: no usable CUDA device (torch {torch.__version__}, built for CUDA "
              f"{torch.version.cuda or 'none'}); nothing was run. Use --dry-run to check the driver on the CPU.",
              file=sys.stderr)
        return NO_GPU
    args.out.mkdir(parents=True, exist_ok=True)
    env = environment(args.device)
    rows = []
    for name in args.models:
        try:
            rows.append(check(name, args, started))
        except Exception as exc:  # noqa: BLE001 - report it with the other model set's numbers
            rows.append({"models": name, "error": f"{type(exc).__name__}: {exc}"})
        print(f"  {name} done at {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    (args.out / "gpu_check.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=2, default=str))
    print_report(env, rows, args)
    ok = required_ok(rows)
    print(f"\ngpu_check: {'PASSED' if ok else 'FAILED'} in {time.perf_counter() - started:.0f} s; "
          f"details in {args.out / 'gpu_check.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
