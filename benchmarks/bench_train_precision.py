"""CPU training speed, fp32 against bf16 autocast: nnU-Net training iterations of a model's own network.

For each step of ``--weights`` (default the bundled lite model, the network the lite recipe trains), builds an
``nnUNetTrainer`` from the model's plans and dataset.json, starts it from the model's weights, and times
``train_step`` (forward, deep-supervision loss, backward, gradient clipping, SGD step) on random batches of the
plans' batch and patch size, fp32 and bf16 alternating in rotating order (``bench_forward.rounds_of``). The
forward pass in bf16 is the recipe's (``training.nnunet._forward_in_bf16``). Data augmentation is left out: it
costs the same in both precisions. The loss of the first batch is reported for both, from the same weights, as a
check that bf16 trains the same objective.

    .venv/bin/python benchmarks/bench_train_precision.py [--weights lite] [--steps 1 2] [--rounds 6] [--threads 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_forward import rounds_of  # noqa: E402

from totalspineseg import weights  # noqa: E402
from totalspineseg.runtime import cpu_has_native_bf16, resolve_threads  # noqa: E402
from totalspineseg.training.nnunet import _forward_in_bf16  # noqa: E402


def make_trainer(model_folder: Path, checkpoint: Path, work: Path):
    import torch

    os.environ.update(nnUNet_raw=str(work / "raw"), nnUNet_preprocessed=str(work / "preprocessed"),
                      nnUNet_results=str(work / "results"), nnUNet_compile="f")
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    plans = json.loads((model_folder / "plans.json").read_text())
    plans["continue_training"] = False
    dataset = json.loads((model_folder / "dataset.json").read_text())
    trainer = nnUNetTrainer(plans, "3d_fullres", 0, dataset, device=torch.device("cpu"))
    # initialize() only looks at the preprocessed folder to pick nnU-Net's dataset class by file ending
    data = Path(trainer.preprocessed_dataset_folder)
    data.mkdir(parents=True, exist_ok=True)
    (data / "case.b2nd").touch()
    trainer.initialize()
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["network_weights"]
    trainer.network.load_state_dict(state)
    return trainer


def random_batch(trainer, seed: int) -> dict:
    """Data of the plans' batch and patch size, and a target per deep-supervision output, as the loader gives."""
    import torch

    g = torch.Generator().manual_seed(seed)
    cm = trainer.configuration_manager
    patch, batch = list(cm.patch_size), cm.batch_size
    data = torch.randn(batch, trainer.num_input_channels, *patch, generator=g)
    lm = trainer.label_manager
    n_out = len(lm.foreground_regions) if lm.has_regions else lm.num_segmentation_heads
    with torch.no_grad():
        outputs = trainer.network(data)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    targets = []
    for out in outputs:
        shape = out.shape[2:]
        if lm.has_regions:
            targets.append((torch.rand(batch, n_out, *shape, generator=g) > 0.8).to(torch.float32))
        else:
            targets.append(torch.randint(0, n_out, (batch, 1, *shape), generator=g).to(torch.float32))
    return {"data": data, "target": targets if len(targets) > 1 else targets[0]}


def bench_step(paths, step: int, rounds: int, work: Path) -> dict:
    import torch

    folder, checkpoint = getattr(paths, f"step{step}"), paths.checkpoint(f"step{step}")
    fp32 = make_trainer(folder, checkpoint, work)
    bf16 = make_trainer(folder, checkpoint, work)
    _forward_in_bf16(bf16.network)
    batches = [random_batch(fp32, seed) for seed in range(2)]
    first = {}
    for name, trainer in (("fp32", fp32), ("bf16", bf16)):
        with torch.no_grad():
            first[name] = round(float(trainer.loss(trainer.network(batches[0]["data"]), batches[0]["target"])), 4)

    def steps(trainer):
        batch = itertools.cycle(batches)
        return lambda: trainer.train_step(next(batch))

    times = {name: [wall for wall, _ in t] for name, t in
             rounds_of({"fp32": steps(fp32), "bf16": steps(bf16)}, rounds).items()}
    cm = fp32.configuration_manager
    row = {"step": step, "patch": list(cm.patch_size), "batch": cm.batch_size,
           "features": list(cm.network_arch_init_kwargs.get("features_per_stage", [])), "first_loss": first}
    for name, t in times.items():
        row[f"{name}_median_s"], row[f"{name}_min_s"] = round(statistics.median(t), 3), round(min(t), 3)
    row["speedup_median"] = round(row["fp32_median_s"] / row["bf16_median_s"], 2)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default="lite")
    p.add_argument("--steps", type=int, nargs="+", choices=(1, 2), default=(1, 2))
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "_out" / "bench_train_precision.json")
    args = p.parse_args()
    import torch

    torch.set_num_threads(resolve_threads(args.threads))
    paths = weights.resolve_model(args.weights)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench_step(paths, step, args.rounds, Path(tmp)) for step in args.steps]
    report = {"weights": args.weights, "native_bf16": cpu_has_native_bf16(), "threads": torch.get_num_threads(),
              "rounds": args.rounds, "load_average": [round(load, 1), round(os.getloadavg()[0], 1)], "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print("\n| step | patch x batch | train step fp32 (s) | bf16 (s) | speed-up | first loss fp32 / bf16 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['step']} | {' x '.join(map(str, r['patch']))} x {r['batch']} | {r['fp32_median_s']} | "
              f"{r['bf16_median_s']} | {r['speedup_median']}x | {r['first_loss']['fp32']} / "
              f"{r['first_loss']['bf16']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
