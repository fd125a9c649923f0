"""Thin wrappers around nnU-Net: folders and variables, planning and preprocessing, plans overrides, splits, training.

nnU-Net is only driven through its Python API (trainer class ``nnUNetTrainer``, so that checkpoints load without the
optional timm/torchvision packages), and imported inside the functions that need it. Functions that reach nnU-Net's
process pools must run under an ``if __name__ == "__main__":`` guard; the ``totalspineseg-train`` command is one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pickle
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import TotalSpineSegError
from ..runtime import cpu_has_native_bf16, nnunet_output, resolve_precision, resolve_threads
from ..weights import CHECKPOINT_NAMES
from .dataset import DATASET_NAMES, FILE_ENDING, grouped_splits

if TYPE_CHECKING:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

log = logging.getLogger(__name__)

TRAINER = "nnUNetTrainer"
CONFIGURATION = "3d_fullres"
PLANNERS = {
    "ResEncL": "nnUNetPlannerResEncL",
    "ResEncM": "nnUNetPlannerResEncM",
    "ResEncXL": "nnUNetPlannerResEncXL",
    "default": "ExperimentPlanner",
}
#: A network small enough to train in seconds on a CPU (tests, dry runs).
TINY_OVERRIDE = {"features_per_stage": [4, 8, 16, 32], "n_conv_per_stage": 1, "n_conv_per_stage_decoder": 1,
                 "batch_size": 2, "patch_size": [32, 32, 32]}
#: nnU-Net's checkpoint files by kind, under the names the weights loader looks for: {"best": ..., "final": ...}.
CHECKPOINT_FILES = {name.removeprefix("checkpoint_").removesuffix(".pth"): name for name in CHECKPOINT_NAMES}


@dataclass(frozen=True)
class NnUNetDirs:
    """``raw/``, ``preprocessed/`` and ``results/`` in one folder, as upstream's $TOTALSPINESEG_DATA/nnUNet."""

    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def preprocessed(self) -> Path:
        return self.root / "preprocessed"

    @property
    def results(self) -> Path:
        return self.root / "results"

    def model_folder(self, dataset_id: int, plans: str, configuration: str = CONFIGURATION,
                     trainer: str = TRAINER) -> Path:
        return self.results / DATASET_NAMES[dataset_id] / f"{trainer}__{plans}__{configuration}"


@contextlib.contextmanager
def nnunet_env(dirs: NnUNetDirs, **settings: str) -> Iterator[None]:
    """nnU-Net's folder variables (and `settings`, unless the user set them), restored afterwards.

    nnU-Net reads these variables whenever it uses them, so setting them around the calls is enough.
    """
    wanted = {"nnUNet_raw": str(dirs.raw), "nnUNet_preprocessed": str(dirs.preprocessed),
              "nnUNet_results": str(dirs.results)}
    wanted |= {k: v for k, v in settings.items() if k not in os.environ}
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def plan_and_preprocess(dirs: NnUNetDirs, dataset_id: int, planner: str = "ResEncL", plans_name: str = "nnUNetPlans",
                        configuration: str = CONFIGURATION, override: dict | None = None, processes: int = 2,
                        verify: bool = True) -> dict:
    """nnU-Net fingerprint, experiment planning (then `override`), and preprocessing of one configuration."""
    if planner not in PLANNERS:
        raise ValueError(f"unknown planner {planner!r}; choose from {', '.join(PLANNERS)}")
    # n_proc_DA must be >= 1 here: the planners' memory estimate calls torch.set_num_threads with it.
    with nnunet_env(dirs, nnUNet_n_proc_DA=str(processes), nnUNet_def_n_proc=str(processes)):
        from nnunetv2.experiment_planning.plan_and_preprocess_api import (
            extract_fingerprint_dataset,
            plan_experiment_dataset,
            preprocess_dataset,
        )

        _check_raw(dirs, dataset_id)
        with nnunet_output("nnU-Net planning"):
            extract_fingerprint_dataset(dataset_id, num_processes=processes, check_dataset_integrity=verify,
                                        clean=True, verbose=False)
            _, identifier = plan_experiment_dataset(dataset_id, _planner_class(planner),
                                                    overwrite_plans_name=plans_name)
        plans_file = dirs.preprocessed / DATASET_NAMES[dataset_id] / f"{identifier}.json"
        plans = json.loads(plans_file.read_text())
        if configuration not in plans["configurations"]:
            raise TotalSpineSegError(f"the {planner} planner made no {configuration!r} configuration "
                                     f"(it made {', '.join(plans['configurations'])})")
        if override:
            plans = apply_plans_override(plans, configuration, override)
            plans_file.write_text(json.dumps(plans, indent=4))
        with nnunet_output("nnU-Net preprocessing"):
            preprocess_dataset(dataset_id, identifier, configurations=(configuration,), num_processes=(processes,))
    return plans


def _check_raw(dirs: NnUNetDirs, dataset_id: int) -> None:
    folder = dirs.raw / DATASET_NAMES[dataset_id]
    if not (folder / "dataset.json").is_file():
        raise TotalSpineSegError(f"{folder}: no nnU-Net raw dataset (run totalspineseg-train prepare first)")


def _planner_class(name: str) -> type:
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.experiment_planning.experiment_planners.residual_unets import residual_encoder_unet_planners as res

    return ExperimentPlanner if name == "default" else getattr(res, PLANNERS[name])


def apply_plans_override(plans: dict, configuration: str, override: dict) -> dict:
    """Shrink or reshape one configuration of nnU-Net plans.

    Keys: ``features_per_stage`` (sets the number of stages), ``n_conv_per_stage`` and ``n_conv_per_stage_decoder``
    (int or list; blocks per stage for residual encoders), ``patch_size``, ``batch_size``, ``spacing`` (mm, in the
    plans' axis order). Strides are recomputed (halve an axis while its feature map stays at least 4 voxels) and
    the patch is rounded up to a multiple of them. Changing the spacing gives the configuration its own data
    identifier, so that its preprocessed data is kept apart.
    """
    unknown = set(override) - {"features_per_stage", "n_conv_per_stage", "n_conv_per_stage_decoder", "patch_size",
                               "batch_size", "spacing"}
    if unknown:
        raise ValueError(f"unknown plans override key(s): {', '.join(sorted(unknown))}")
    plans = json.loads(json.dumps(plans))
    cfg = plans["configurations"][configuration]
    arch = cfg["architecture"]["arch_kwargs"]
    features = [int(f) for f in override.get("features_per_stage", arch["features_per_stage"])]
    n_stages = len(features)
    patch = [int(p) for p in override.get("patch_size", cfg["patch_size"])]
    strides = _strides(patch, n_stages)
    total = np.prod(np.asarray(strides), axis=0)
    cfg["patch_size"] = [int(math.ceil(p / t) * t) for p, t in zip(patch, total, strict=False)]
    blocks_key = "n_blocks_per_stage" if "n_blocks_per_stage" in arch else "n_conv_per_stage"
    arch.update(n_stages=n_stages, features_per_stage=features, strides=strides,
                kernel_sizes=[[3] * len(patch)] * n_stages)
    arch[blocks_key] = _per_stage(override.get("n_conv_per_stage", arch[blocks_key]), n_stages)
    arch["n_conv_per_stage_decoder"] = _per_stage(
        override.get("n_conv_per_stage_decoder", arch["n_conv_per_stage_decoder"]), n_stages - 1)
    if "batch_size" in override:
        cfg["batch_size"] = int(override["batch_size"])
    if "spacing" in override:
        cfg["spacing"] = [float(s) for s in override["spacing"]]
        cfg["data_identifier"] = f"{plans['plans_name']}_{configuration}"
    return plans


def _strides(patch: Sequence[int], n_stages: int) -> list[list[int]]:
    strides, size = [[1] * len(patch)], np.asarray(patch, dtype=float)
    for _ in range(n_stages - 1):
        step = [2 if s / 2 >= 4 else 1 for s in size]
        size = size / step
        strides.append(step)
    return strides


def _per_stage(value: int | Sequence[int], n: int) -> list[int]:
    if isinstance(value, (int, np.integer)):
        return [int(value)] * n
    value = [int(v) for v in value]
    return (value + [value[-1]] * n)[:n]


def write_splits(dirs: NnUNetDirs, dataset_id: int, n_folds: int = 5, seed: int = 12345,
                 overwrite: bool = False) -> Path:
    """splits_final.json for the preprocessed dataset, keeping odd/even copies together (unless one exists)."""
    folder = dirs.preprocessed / DATASET_NAMES[dataset_id]
    path = folder / "splits_final.json"
    if path.is_file() and not overwrite:
        return path
    labels = (dirs.raw / DATASET_NAMES[dataset_id] / "labelsTr").glob(f"*{FILE_ENDING}")
    identifiers = [p.name[: -len(FILE_ENDING)] for p in labels]
    path.write_text(json.dumps(grouped_splits(identifiers, n_folds, seed), indent=2))
    return path


# --------------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class TrainSettings:
    epochs: int | None = None  # None: nnU-Net's defaults (1000 epochs of 250 + 50 iterations)
    iterations_per_epoch: int | None = None
    val_iterations_per_epoch: int | None = None
    seed: int | None = 0
    continue_training: bool = False
    save_every: int | None = None
    oversample_foreground: float | None = None  # share of patches centred on a structure (nnU-Net: 0.33)
    initial_weights: Path | None = None  # a checkpoint of the same network to start from (not resuming)
    precision: str = "fp32"  # of the forward pass on the CPU: auto (bf16 where the CPU has it), fp32 or bf16


def resolve_train_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise TotalSpineSegError("--device cuda: CUDA is not available")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}: use auto, cpu or cuda")
    return device


def train(dirs: NnUNetDirs, dataset_id: int, plans_name: str = "nnUNetPlans", configuration: str = CONFIGURATION,
          fold: int = 0, device: str = "auto", settings: TrainSettings = TrainSettings(),
          threads: int | None = None) -> Path:
    """Train one fold with ``nnUNetTrainer`` and return the trained-model folder. No final validation is run."""
    import torch

    device = resolve_train_device(device)
    env = {"nnUNet_compile": "f", "nnUNet_def_n_proc": "1"}
    if device == "cpu":
        env["nnUNet_n_proc_DA"] = "0"  # the single-threaded augmenter is the fastest on a small CPU
        torch.set_num_threads(resolve_threads(threads))
    with nnunet_env(dirs, **env):
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

        folder = dirs.preprocessed / DATASET_NAMES[dataset_id]
        plans_file = folder / f"{plans_name}.json"
        if not plans_file.is_file():
            raise TotalSpineSegError(f"{plans_file}: no such plans (plan and preprocess first)")
        plans = json.loads(plans_file.read_text())
        plans["continue_training"] = settings.continue_training
        dataset = json.loads((folder / "dataset.json").read_text())
        trainer = nnUNetTrainer(plans, configuration, fold, dataset, device=torch.device(device))
        _configure(trainer, settings)
        if settings.continue_training and _resume(trainer):
            pass
        elif settings.initial_weights is not None:
            _load_initial_weights(trainer, Path(settings.initial_weights))
        precision = _set_precision(trainer, train_precision(settings.precision, device))
        log.info("training on %s, forward pass in %s", device, precision)
        _seed_everything(settings.seed)
        trainer.run_training()
    return Path(trainer.output_folder_base)


TRAIN_PRECISIONS = ("auto", "fp32", "bf16")


def train_precision(requested: str, device: str, native_bf16: bool | None = None) -> str:
    """The precision of a training forward pass: on the CPU, `auto` is bf16 where it is native (AMX or
    AVX512-BF16) and fp32 otherwise; on CUDA nnU-Net trains under its own fp16 autocast, whatever is asked."""
    if requested not in TRAIN_PRECISIONS:
        raise ValueError(f"training precision must be auto, fp32 or bf16, not {requested!r}")
    if device == "cuda":
        return "fp16"
    native = cpu_has_native_bf16() if native_bf16 is None else native_bf16
    if requested == "auto":  # unlike inference's auto: a model trained in bf16 is scored on its own, not against fp32
        return "bf16" if native else "fp32"
    return resolve_precision(requested, "cpu", native)


def _set_precision(trainer: nnUNetTrainer, precision: str) -> str:
    """Make `trainer` train in `precision` (bf16: the forward pass under CPU autocast); returns it."""
    if precision == "bf16":
        if not trainer.was_initialized:  # loading a checkpoint or initial weights has built the network already
            trainer.initialize()
        _forward_in_bf16(trainer.network)
    return precision


def _forward_in_bf16(network) -> None:
    """Run the network's forward pass under CPU bf16 autocast and hand fp32 outputs to the loss.

    nnU-Net enables autocast on CUDA only. Patched on the instance: the weights, the optimizer state and the
    checkpoints stay fp32 (bf16 has fp32's exponent range, so no gradient scaler is needed), and the backward
    pass runs outside the autocast region, as PyTorch recommends, each op in the dtype of its forward.
    """
    import torch

    forward = network.forward

    def forward_bf16(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = forward(x)
        return [o.float() for o in out] if isinstance(out, (list, tuple)) else out.float()

    network.forward = forward_bf16


def _configure(trainer: nnUNetTrainer, settings: TrainSettings) -> None:
    # Set before run_training: the learning-rate schedule is built from num_epochs.
    if settings.epochs is not None:
        trainer.num_epochs = settings.epochs
    if settings.iterations_per_epoch is not None:
        trainer.num_iterations_per_epoch = settings.iterations_per_epoch
    if settings.val_iterations_per_epoch is not None:
        trainer.num_val_iterations_per_epoch = settings.val_iterations_per_epoch
    if settings.save_every is not None:
        trainer.save_every = settings.save_every
    if settings.oversample_foreground is not None:
        trainer.oversample_foreground_percent = settings.oversample_foreground
    _disable_mirroring(trainer)


def _disable_mirroring(trainer: nnUNetTrainer) -> None:
    """No mirroring in training or inference, as upstream: a flipped spine would swap top and bottom landmarks.

    Patched on the instance so that checkpoints keep the trainer name ``nnUNetTrainer``, which every nnU-Net
    install can look up.
    """
    configure = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size

    def without_mirroring():
        rotation, dummy_2d, initial_patch_size, _ = configure()
        trainer.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch_size, None

    trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size = without_mirroring


def _resume(trainer: nnUNetTrainer) -> bool:
    fold_dir = Path(trainer.output_folder)
    # checkpoint_latest is nnU-Net's periodic save: never released, so the weights loader has no name for it.
    for name in ("checkpoint_latest.pth", CHECKPOINT_FILES["final"]):
        if (fold_dir / name).is_file():
            log.info("continuing from %s", fold_dir / name)
            trainer.load_checkpoint(str(fold_dir / name))
            return True
    log.warning("%s: no checkpoint to continue from; starting a new training", fold_dir)
    return False


def _load_initial_weights(trainer: nnUNetTrainer, checkpoint: Path) -> None:
    """Start from another model's weights (every layer, the output layers too): same plans, same classes."""
    import torch

    trainer.initialize()
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["network_weights"]
    except (OSError, RuntimeError, KeyError, pickle.UnpicklingError) as exc:
        raise TotalSpineSegError(f"{checkpoint}: cannot read initial weights ({exc})") from exc
    own = trainer.network.state_dict()
    wrong = [k for k, v in own.items() if k not in state or tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise TotalSpineSegError(f"{checkpoint}: not the same network as the plans ({len(wrong)} tensors differ, "
                                 f"e.g. {wrong[0]})")
    trainer.network.load_state_dict({k: state[k] for k in own})
    log.info("starting from the weights of %s", checkpoint)


def _seed_everything(seed: int | None) -> None:
    if seed is None:
        return
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
