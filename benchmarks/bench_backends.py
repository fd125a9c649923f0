"""Other inference backends on one network forward, CPU: torch eager (fp32, bf16 autocast), `torch.compile`, ONNX
Runtime and OpenVINO (f32 and bf16 precision hints), on the step-1 network of ``--weights``.

The network is exported once with ``torch.onnx.export`` (opset 17) into ``--out``; every backend then runs the same
random patch. Reported per backend: median wall and process CPU time per forward over ``--rounds`` after a warm-up,
and the argmax agreement and largest logit difference against torch fp32.

ONNX Runtime, OpenVINO and the ``onnx`` exporter are not project dependencies. Install them beside the venv once:

    .venv/bin/python benchmarks/bench_backends.py --install
    .venv/bin/python benchmarks/bench_backends.py [--weights demo] [--threads 1] [--rounds 10] [--compile]

(``--install`` runs ``pip install --target benchmarks/_out/backends onnx onnxruntime openvino``; the script puts
that folder on its path.) ``--weights`` takes a model folder too, e.g. the ResEnc-L folders of
``bench_pipeline.py``: ``benchmarks/_out/bench_pipeline/weights/nnUNet/results``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EXTRA = ROOT / "benchmarks" / "_out" / "backends"
EXTRA_PACKAGES = ("onnx", "onnxruntime", "openvino")


def timed(fn, rounds: int, reference=None) -> dict:
    """Median wall and CPU seconds of ``fn()`` after one warm-up call; agreement of its output with ``reference``."""
    import numpy as np

    out = np.asarray(fn())
    wall, cpu = [], []
    for _ in range(rounds):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    row = {"wall_median_s": round(float(np.median(wall)), 4), "cpu_median_s": round(float(np.median(cpu)), 4)}
    if reference is not None:
        row["argmax_agreement"] = round(float((out.argmax(1) == reference.argmax(1)).mean()), 5)
        row["max_abs_logit_difference"] = float(np.abs(out - reference).max())
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default="demo")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow first call)")
    p.add_argument("--skip", nargs="*", default=[], choices=["onnxruntime", "openvino"])
    p.add_argument("--install", action="store_true", help=f"pip install {' '.join(EXTRA_PACKAGES)} into {EXTRA}")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "_out" / "bench_backends")
    args = p.parse_args()
    if args.install:
        return subprocess.call([sys.executable, "-m", "pip", "install", "--target", str(EXTRA), *EXTRA_PACKAGES])
    sys.path.append(str(EXTRA))  # after the venv's own packages: the venv's numpy and torch win
    import torch

    from totalspineseg import weights
    from totalspineseg.predictor import load_model
    from totalspineseg.runtime import cpu_has_native_bf16

    torch.set_num_threads(args.threads)
    model = load_model(weights.resolve_model(args.weights).step1, device="cpu", threads=args.threads)
    network = model._predictor.network.eval()
    patch = tuple(model.configuration_manager.patch_size)
    x = torch.randn(1, model.n_channels, *patch, generator=torch.Generator().manual_seed(0))
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_file = args.out / "step1.onnx"
    torch.onnx.export(network, (x,), str(onnx_file), dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["y"])
    xn = x.numpy()
    report = {"weights": str(args.weights), "patch": list(patch), "threads": args.threads, "rounds": args.rounds,
              "native_bf16": cpu_has_native_bf16(), "load_average": round(os.getloadavg()[0], 1), "backends": {}}
    rows = report["backends"]
    with torch.inference_mode():
        reference = network(x).numpy()
        rows["torch fp32"] = timed(lambda: network(x), args.rounds)

        def bf16():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return network(x).float()

        rows["torch bf16 autocast"] = timed(bf16, args.rounds, reference)
        if args.compile:
            start = time.perf_counter()
            compiled = torch.compile(network)
            compiled(x)
            rows["torch.compile fp32"] = {**timed(lambda: compiled(x), args.rounds, reference),
                                          "first_call_s": round(time.perf_counter() - start, 1)}
    if "onnxruntime" not in args.skip:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
        session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        rows[f"onnxruntime {ort.__version__} fp32"] = timed(lambda: session.run(None, {"x": xn})[0], args.rounds,
                                                             reference)
        del session
    if "openvino" not in args.skip:
        import openvino as ov

        core = ov.Core()
        for hint in ("f32", "bf16"):
            compiled_ov = core.compile_model(str(onnx_file), "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                                      "INFERENCE_NUM_THREADS": args.threads})
            rows[f"openvino {ov.__version__.split('-')[0]} {hint}"] = timed(lambda c=compiled_ov: c({"x": xn})[0],
                                                                            args.rounds, reference)
            del compiled_ov
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    base = rows["torch fp32"]["wall_median_s"]
    print("\n| backend | wall (s) | CPU (s) | vs torch fp32 | argmax = torch fp32 |\n|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['wall_median_s']} | {r['cpu_median_s']} | {base / r['wall_median_s']:.2f}x | "
              f"{r.get('argmax_agreement', 1)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
