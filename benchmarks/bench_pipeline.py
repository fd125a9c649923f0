"""End-to-end timing of one whole-spine phantom through the pipeline with full-size ResEnc-L models.

Both networks have random weights (the official ones cannot be downloaded here) but the real architecture and
size: nnU-Net's ResEnc-L planner, 7 stages of 32-320 features. Models are built once and cached under
``benchmarks/_out/`` (about 2.2 GB). The input is a 1 mm whole-spine phantom (80 x 150 x 730 mm: the same voxel
count as the 60 x 250 x 600 mm of the issue).

    .venv/bin/python benchmarks/bench_pipeline.py [--device cpu] [--threads 2] [--precision auto] [--backend torch]

Prints per-stage times, the share of time outside the two network forward passes, and peak RSS.
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from totalspineseg.openvino_backend import BACKENDS  # noqa: E402
from totalspineseg.runtime import PRECISIONS  # noqa: E402


def build_weights(root: Path, dataset_shape) -> Path:
    from model_factory import make_model_folder

    results = root / "nnUNet" / "results"
    for dataset_id, channels, name in ((101, 1, "TotalSpineSeg_step1"), (102, 2, "TotalSpineSeg_step2")):
        if not list(results.glob(f"Dataset{dataset_id}_*/*/fold_0/checkpoint_final.pth")):
            make_model_folder(results, dataset_id, channels, dataset_name=name, planner="ResEncL",
                              trainer_name="nnUNetTrainerDAExtGPU", tiny=False, shape=dataset_shape,
                              plans_name="nnUNetPlans")
    return root


def write_deliverables(result, folder: Path, name: str) -> float:
    """Write every deliverable and the previews as the CLI does (staged, then renamed); the seconds it took."""
    from totalspineseg.cli.segment import DELIVERABLES, Plan, write_outputs
    from totalspineseg.fsutil import StagedWrites

    start = time.perf_counter()
    with StagedWrites() as staged:
        write_outputs(result, folder, name, Plan(tuple(DELIVERABLES) + ("preview",)), staged)
    return time.perf_counter() - start


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dataset-shape", type=int, nargs=3, default=(64, 256, 320))
    ap.add_argument("--out", type=Path, default=HERE / "_out" / "bench_pipeline")
    ap.add_argument("--fov", default="whole")
    ap.add_argument("--precision", default="auto", choices=PRECISIONS,
                    help="of the forward passes, as the CLI's --precision (default auto)")
    ap.add_argument("--backend", default="torch", choices=BACKENDS,
                    help="of the forward passes, as the CLI's --backend (default torch); openvino: the model-load "
                         "row includes the conversion (cached for the next run)")
    args = ap.parse_args(argv)

    from totalspineseg import weights
    from totalspineseg.pipeline import Models, PipelineOptions, segment
    from totalspineseg.synth import phantom
    from totalspineseg.volume import save_nifti

    root = build_weights(args.out / "weights", args.dataset_shape)
    ph = phantom.make_phantom(seed=3, fov=args.fov)
    image = save_nifti(args.out / "whole_T2w.nii.gz", ph.image, ph.affine)

    t0 = time.perf_counter()
    models = Models.load(weights.resolve_model(str(root)), device=args.device, threads=args.threads,
                         precision=args.precision, backend=args.backend)
    t_models = time.perf_counter() - t0
    result = segment(image, models, options=PipelineOptions())
    t_write = write_deliverables(result, args.out / "outputs", "whole_T2w")

    stages = dict(result.timings)
    labeling = stages.pop("step1_labeling", 0.0) + stages.pop("step2_labeling", 0.0)
    rows = [("load models (both steps)", t_models), ("load image", stages.get("load", 0.0)),
            ("prepare (canonical, 1 mm)", stages.get("prepare", 0.0)),
            ("step-1 forward", stages.get("step1_forward", 0.0)), ("labeling (steps 1+2, soft maps, levels)", labeling),
            ("step-2 forward (crop, odd-disc channel, network)", stages.get("step2_forward", 0.0)),
            ("resample back to native", stages.get("resample_back", 0.0)), ("write NIfTI + previews", t_write)]
    total = sum(t for _, t in rows[1:])
    forward = stages.get("step1_forward", 0.0) + stages.get("step2_forward", 0.0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import torch

    print(f"machine: {platform.node()}, {len(__import__('os').sched_getaffinity(0))} CPUs, torch {torch.__version__},"
          f" device {result.device}, threads {torch.get_num_threads()}, precision {models.precision}, backend "
          f"{models.backend};"
          f" date {date.today()}")
    print(f"input: whole-spine phantom {ph.image.shape} at 1 mm; ResEnc-L random weights, patch "
          f"{models.step1.configuration_manager.patch_size}\n")
    print("| stage | seconds |\n|---|---|")
    for name, t in rows:
        print(f"| {name} | {t:.1f} |")
    print(f"| **total per image (excluding model load)** | **{total:.1f}** |")
    print(f"\ntime outside the two forward passes: {total - forward:.1f} s = {100 * (total - forward) / total:.1f}%"
          f" of the per-image total")
    print(f"peak RSS: {peak / 1024:.2f} GB")


if __name__ == "__main__":
    main()
