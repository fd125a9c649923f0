"""Levers on one network forward, CPU: tiles batched per forward, `channels_last_3d`, and the Gaussian map's cost.

On the loaded step-1 network of ``--weights`` (default the demo model) with random input of one patch:

* batching: 4 tiles as 4 forwards of 1, 2 forwards of 2, 1 forward of 4 (time per tile);
* `channels_last_3d` (network and input) against the default contiguous layout, fp32, one patch;
* precision and layout together, one patch: fp32, bf16 autocast, bf16 autocast with the network in
  `channels_last_3d` (input contiguous, as nnU-Net's sliding window passes it) and with both in
  `channels_last_3d`; argmax agreement of each with fp32;
* nnU-Net's Gaussian importance map: the first (uncached) computation for this patch and for the ResEnc-L patch.

The variants alternate in a rotating order (A B C, B C A, C A B, ...) for ``--rounds`` rounds so that load from
other jobs falls on all of them alike; the median and the minimum are reported, as wall and as CPU time.

    nice -n 19 .venv/bin/python benchmarks/bench_forward.py [--weights demo] [--rounds 5] [--threads 2]
        [--skip-batching]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from totalspineseg import weights  # noqa: E402
from totalspineseg.predictor import load_model  # noqa: E402
from totalspineseg.runtime import cpu_has_native_bf16  # noqa: E402

RESENC_L_PATCH = (64, 256, 256)  # benchmarks/bench_predictor.py (nnU-Net order)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def wall_and_cpu(fn) -> tuple[float, float]:
    """Wall time and the CPU time of this process (all threads): the second is less affected by other jobs."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def rounds_of(variants: dict, rounds: int) -> dict[str, list[tuple[float, float]]]:
    times = {name: [] for name in variants}
    for fn in variants.values():  # warm-up: first calls pay for allocations and oneDNN primitive creation
        fn()
    names = list(variants)
    for i in range(rounds):  # the order rotates: A B C, B C A, C A B, ...
        for name in names[i % len(names):] + names[:i % len(names)]:
            times[name].append(wall_and_cpu(variants[name]))
    return times


def summary(times: list[tuple[float, float]], per: int = 1) -> dict:
    wall, cpu = [t[0] / per for t in times], [t[1] / per for t in times]
    return {"wall_median_s": round(statistics.median(wall), 4), "wall_min_s": round(min(wall), 4),
            "cpu_median_s": round(statistics.median(cpu), 4), "cpu_min_s": round(min(cpu), 4)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default="demo")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--skip-batching", action="store_true", help="leave out the batching and fp32-layout rounds")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "_out" / "bench_forward.json")
    args = p.parse_args()
    import torch
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    model = load_model(weights.resolve_model(args.weights).step1, device="cpu", threads=args.threads)
    torch.set_num_threads(model.threads)
    network = model._predictor.network.eval()
    patch = tuple(model.configuration_manager.patch_size)
    tiles = torch.randn(4, model.n_channels, *patch)
    load_before = os.getloadavg()[0]

    report = {}
    with torch.inference_mode():
        last = copy.deepcopy(network).to(memory_format=torch.channels_last_3d)
        one, one_last = tiles[:1], tiles[:1].contiguous(memory_format=torch.channels_last_3d)
        if not args.skip_batching:
            def in_batches(size):
                return lambda: [network(tiles[i:i + size]) for i in range(0, 4, size)]

            batching = rounds_of({"1 x 4": in_batches(1), "2 x 2": in_batches(2), "4 x 1": in_batches(4)},
                                 args.rounds)
            same = torch.equal(network(tiles[:2]).argmax(1),
                               torch.cat([network(tiles[i:i + 1]) for i in range(2)]).argmax(1))
            layout = rounds_of({"contiguous": lambda: network(one), "channels_last_3d": lambda: last(one_last)},
                               args.rounds)
            report.update({
                "batching_per_tile": {k: summary(v, per=4) for k, v in batching.items()},
                "batching_same_labels": same,
                "layout_one_patch": {k: summary(v) for k, v in layout.items()},
                "channels_last_max_abs_logit_difference": float((network(one) - last(one_last)).abs().max()),
            })

        def bf16(net, x):
            def forward():
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return net(x).float()
            return forward

        variants = {"fp32": lambda: network(one), "bf16": bf16(network, one),
                    "bf16, network channels_last_3d": bf16(last, one),
                    "bf16, network and input channels_last_3d": bf16(last, one_last)}
        precision = rounds_of(variants, args.rounds)
        reference = network(one).argmax(1)
        report["precision_one_patch"] = {
            name: {**summary(precision[name]),
                   "argmax_agreement_with_fp32": round(float((fn().argmax(1) == reference).float().mean()), 4)}
            for name, fn in variants.items()}

    gaussian = {}
    for name, size in (("this patch", patch), ("ResEnc-L patch", RESENC_L_PATCH)):
        compute_gaussian.cache_clear()
        gaussian[name] = {"patch": list(size), "first_s": round(timed(lambda s=size: compute_gaussian(
            s, sigma_scale=1. / 8, value_scaling_factor=10, device=torch.device("cpu"))), 3),
            "cached_s": timed(lambda s=size: compute_gaussian(s, sigma_scale=1. / 8, value_scaling_factor=10,
                                                              device=torch.device("cpu")))}
    compute_gaussian.cache_clear()

    report = {
        "weights": args.weights, "patch": list(patch), "threads": model.threads, "rounds": args.rounds,
        "native_bf16": cpu_has_native_bf16(),
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        **report, "gaussian": gaussian,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
