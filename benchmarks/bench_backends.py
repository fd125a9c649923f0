"""Other inference backends on one network forward, CPU: torch eager (fp32, bf16 autocast), `torch.compile`, ONNX
Runtime and OpenVINO (f32 and bf16 precision hints), on the step-1 network of ``--weights``.

The network is exported once with ``torch.onnx.export`` (opset 17) into ``--out``; every backend then runs the same
random patch. Reported per backend: median wall and process CPU time per forward over ``--rounds`` after a warm-up,
and the argmax agreement and largest logit difference against torch fp32.

ONNX Runtime, OpenVINO and the ``onnx`` exporter are not project dependencies. Install them beside the venv once:

    .venv/bin/python benchmarks/bench_backends.py --install
    .venv/bin/python benchmarks/bench_backends.py [--weights demo] [--threads 1] [--rounds 10] [--compile]

(``--install`` runs ``pip install --target benchmarks/_out/backends onnx onnxruntime openvino``; the script puts
that folder on its path.) ``--pipeline HINT`` instead runs the whole pipeline on ``bench_pipeline.py``'s 1 mm
whole-spine phantom with both networks swapped for OpenVINO ones (``f32`` or ``bf16``), nnU-Net's sliding window,
Gaussian accumulation and export unchanged, and prints the stage times: what an integrated backend would give.
``--weights`` takes a model folder too, e.g. the ResEnc-L folders of ``bench_pipeline.py``:
``benchmarks/_out/bench_pipeline/weights/nnUNet/results``.
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


def export_onnx(network, example, path: Path) -> Path:
    """`network` as an ONNX file (opset 17, input "x", output "y"), traced on `example`."""
    import torch

    torch.onnx.export(network, (example,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["y"])
    return path


def openvino_network(network, n_channels: int, patch: tuple, hint: str, threads: int, out: Path):
    """A torch module that runs `network`'s forward pass in OpenVINO (exported through ONNX, compiled for the CPU)."""
    import openvino as ov
    import torch

    onnx_file = export_onnx(network, torch.zeros(1, n_channels, *patch), out / f"network_{n_channels}ch.onnx")
    compiled = ov.Core().compile_model(str(onnx_file), "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                                "INFERENCE_NUM_THREADS": threads})

    class OpenVINONetwork(torch.nn.Module):
        def load_state_dict(self, *args, **kwargs):  # nnU-Net reloads the weights per call: compiled in already
            return None

        def forward(self, x):
            return torch.from_numpy(compiled({"x": x.detach().cpu().numpy()})[0])

    return OpenVINONetwork()


def run_pipeline(args) -> int:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_pipeline

    from totalspineseg import weights
    from totalspineseg.pipeline import Models, PipelineOptions, segment
    from totalspineseg.synth import phantom
    from totalspineseg.volume import save_nifti

    root = bench_pipeline.build_weights(ROOT / "benchmarks" / "_out" / "bench_pipeline" / "weights", (64, 256, 320))
    args.out.mkdir(parents=True, exist_ok=True)
    ph = phantom.make_phantom(seed=3, fov="whole")
    image = save_nifti(args.out / "whole_T2w.nii.gz", ph.image, ph.affine)
    models = Models.load(weights.resolve_model(str(root)), device="cpu", threads=args.threads, precision="fp32")
    start = time.perf_counter()
    for model in (models.step1, models.step2):
        predictor = model._predictor
        predictor.network = openvino_network(predictor.network.eval(), model.n_channels,
                                             tuple(model.configuration_manager.patch_size), args.pipeline,
                                             args.threads, args.out)
    convert = time.perf_counter() - start
    result = segment(image, models, options=PipelineOptions(progress=False))
    timings = {k: round(v, 1) for k, v in result.timings.items()}
    total = sum(result.timings.values())
    print(json.dumps({"openvino_hint": args.pipeline, "threads": args.threads, "shape": list(ph.image.shape),
                      "convert_and_compile_s": round(convert, 1), "timings_s": timings,
                      "total_s": round(total, 1)}, indent=2))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default="demo")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow first call)")
    p.add_argument("--skip", nargs="*", default=[], choices=["onnxruntime", "openvino"])
    p.add_argument("--install", action="store_true", help=f"pip install {' '.join(EXTRA_PACKAGES)} into {EXTRA}")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "_out" / "bench_backends")
    p.add_argument("--pipeline", choices=["f32", "bf16"], help="the whole pipeline with OpenVINO networks")
    args = p.parse_args()
    if args.install:
        return subprocess.call([sys.executable, "-m", "pip", "install", "--target", str(EXTRA), *EXTRA_PACKAGES])
    sys.path.append(str(EXTRA))  # after the venv's own packages: the venv's numpy and torch win
    import torch

    from totalspineseg import weights
    from totalspineseg.predictor import load_model
    from totalspineseg.runtime import cpu_has_native_bf16

    torch.set_num_threads(args.threads)
    if args.pipeline:
        return run_pipeline(args)
    model = load_model(weights.resolve_model(args.weights).step1, device="cpu", threads=args.threads)
    network = model._predictor.network.eval()
    patch = tuple(model.configuration_manager.patch_size)
    x = torch.randn(1, model.n_channels, *patch, generator=torch.Generator().manual_seed(0))
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_file = export_onnx(network, x, args.out / "step1.onnx")
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
