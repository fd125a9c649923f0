"""Time one prediction of a full-size ResEnc-L step-1 model (random weights) with totalspineseg.predictor.

The model folder is planned by nnU-Net's ResEnc-L planner on synthetic cases of ``--dataset-shape`` and cached
under ``benchmarks/_out/``. The input is a random ``(X, Y, Z)`` RAS image at 1 mm.

    .venv/bin/python benchmarks/bench_predictor.py --shape 60 250 600 --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(60, 250, 600), metavar=("X", "Y", "Z"))
    parser.add_argument("--dataset-shape", type=int, nargs=3, default=(64, 256, 320), metavar=("X", "Y", "Z"),
                        help="shape of the synthetic training cases the planner sees (sets the patch size)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=HERE / "_out" / "bench_predictor")
    parser.add_argument("--progress", action="store_true")
    return parser.parse_args(argv)


def model_folder(out: Path, dataset_shape) -> Path:
    from model_factory import make_model_folder

    root = out / ("resencl_" + "x".join(map(str, dataset_shape)))
    existing = sorted(root.glob("Dataset101_*/*/fold_0/checkpoint_final.pth"))
    if existing:
        return existing[0].parent.parent
    return make_model_folder(root, 101, tiny=False, shape=dataset_shape, plans_name="nnUNetPlans")


def n_tiles(model, shape) -> int:
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    patch = model.configuration_manager.patch_size
    nnunet_shape = [tuple(reversed(shape))[i] for i in model.plans_manager.transpose_forward]
    # nnU-Net pads an image smaller than the patch up to the patch
    padded = [max(size, tile) for size, tile in zip(nnunet_shape, patch, strict=False)]
    steps = compute_steps_for_sliding_window(padded, patch, 0.5)
    return int(np.prod([len(s) for s in steps]))


def main(argv=None) -> None:
    args = parse_args(argv)
    from totalspineseg.predictor import load_model

    start = time.perf_counter()
    folder = model_folder(args.out, args.dataset_shape)
    built = time.perf_counter() - start

    start = time.perf_counter()
    model = load_model(folder, device=args.device, threads=args.threads)
    loaded = time.perf_counter() - start

    image = np.random.default_rng(0).normal(100, 20, (1, *args.shape)).astype(np.float32)
    start = time.perf_counter()
    prediction = model.predict(image, return_probabilities=[8, 9], progress=args.progress)
    predicted = time.perf_counter() - start

    tiles = n_tiles(model, args.shape)
    print(json.dumps({
        "model": str(folder),
        "patch_size": model.configuration_manager.patch_size,
        "features_per_stage": model.configuration_manager.network_arch_init_kwargs["features_per_stage"],
        "input_shape": list(args.shape),
        "device": str(model.device),
        "threads": model.threads,
        "tiles": tiles,
        "build_or_cache_s": round(built, 1),
        "load_s": round(loaded, 2),
        "predict_s": round(predicted, 1),
        "s_per_tile": round(predicted / tiles, 2),
        "labels_shape": list(prediction.labels.shape),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
