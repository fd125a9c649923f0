"""Build nnU-Net trained-model folders with random weights, for tests and benchmarks.

A folder is made the way nnU-Net makes one: a small synthetic raw dataset, nnU-Net's own fingerprint extraction
and experiment planner, then a network built from the plans and saved in a checkpoint with the keys and value
types of ``nnUNetTrainer.save_checkpoint``. Only training is skipped.

Everything runs in the calling process: the fingerprint extraction, which nnU-Net runs in a ``spawn`` pool,
runs here in a thread pool (see ``_fingerprint_in_threads``). Module import has no side effects.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

# dataset.json "labels" of the upstream models (dataset_step1.json, dataset_step2.json): lists are regions.
STEP1_LABELS = {
    "background": 0, "disc": [1, 2, 3, 4, 5], "disc_C2_C3": 2, "disc_C7_T1": 3, "disc_T12_L1": 4,
    "disc_L5_S": 5, "vertebrae": [6, 7], "vertebrae_C1": 7, "canal": [8, 9], "cord": 9,
}
STEP2_LABELS = {
    "background": 0, "disc": [1, 2, 3, 4, 5], "disc_C2_C3": 2, "disc_C7_T1": 3, "disc_T12_L1": 4,
    "disc_L5_S": 5, "vertebrae": [6, 7, 8, 9], "vertebrae_O": 7, "vertebrae_E": 8, "sacrum": 9,
    "canal": [10, 11], "cord": 11,
}
CHANNELS = {1: {"0": "MRI"}, 2: {"0": "MRI", "1": "noNorm"}}
CONFIGURATION = "3d_fullres"
TINY_FEATURES = (4, 8, 16, 32)


def make_model_folder(root: str | os.PathLike, dataset_id: int = 101, n_channels: int = 1,
                      labels: dict | None = None, planner: str = "ResEncL",
                      trainer_name: str = "nnUNetTrainerDAExtGPU", tiny: bool = True, seed: int = 0, *,
                      dataset_name: str = "Synthetic", plans_name: str | None = None,
                      shape: Sequence[int] = (48, 48, 48), spacing: Sequence[float] = (1.0, 1.0, 1.0),
                      n_cases: int = 3, zero_margin: int = 0, tiny_patch_size: Sequence[int] = (48, 48, 48),
                      checkpoints: Sequence[str] = ("checkpoint_final.pth",), fold: int = 0,
                      mirroring_axes: tuple[int, ...] | None = None) -> Path:
    """Create ``<root>/Dataset<id>_<name>/<trainer>__<plans>__3d_fullres/`` and return that folder.

    ``labels`` defaults to the step-1 labels for one channel and the step-2 labels for two. The raw images have
    ``shape`` voxels of ``spacing`` mm (RAS order), so the plans' target spacing is ``spacing`` reversed (nnU-Net
    axis order). ``zero_margin`` zeroes a border of that many voxels, which makes nnU-Net crop and normalise
    inside a mask. ``tiny`` shrinks the 3d_fullres network to 4 stages of 4-32 features on ``tiny_patch_size``.
    """
    labels = labels if labels is not None else (STEP1_LABELS if n_channels == 1 else STEP2_LABELS)
    full_name = f"Dataset{dataset_id:03d}_{dataset_name}"
    dataset_json = _dataset_json(labels, n_channels, n_cases)
    with tempfile.TemporaryDirectory(prefix="nnunet_factory_") as scratch, _nnunet_env(Path(scratch), root):
        raw = Path(scratch) / "raw" / full_name
        _write_raw_dataset(raw, dataset_json, shape, spacing, zero_margin, seed)
        plans, fingerprint = _plan(dataset_id, planner, plans_name)
    if tiny:
        _shrink(plans["configurations"][CONFIGURATION], tiny_patch_size)

    folder = Path(root) / full_name / f"{trainer_name}__{plans['plans_name']}__{CONFIGURATION}"
    (folder / f"fold_{fold}").mkdir(parents=True, exist_ok=True)
    for name, content in (("dataset.json", dataset_json), ("plans.json", plans),
                          ("dataset_fingerprint.json", fingerprint)):
        (folder / name).write_text(json.dumps(content, indent=4))
    checkpoint = _checkpoint(plans, dataset_json, trainer_name, fold, seed, mirroring_axes)
    for name in checkpoints:
        _save(checkpoint, folder / f"fold_{fold}" / name)
    return folder


def make_image(shape: Sequence[int] = (48, 48, 48), n_channels: int = 1, n_labels: int = 9, seed: int = 0,
               zero_margin: int = 0) -> np.ndarray:
    """A ``(C, X, Y, Z)`` float32 image like the training cases (blobs in noise; channel 1 a binary mask)."""
    image, _ = _synthetic_case(np.random.default_rng(seed), tuple(shape), n_channels, n_labels, zero_margin)
    return image


def _dataset_json(labels: dict, n_channels: int, n_cases: int) -> dict:
    dataset_json = {"channel_names": CHANNELS[n_channels], "labels": labels, "numTraining": n_cases,
                    "file_ending": ".nii.gz"}
    regions = [value for name, value in labels.items() if name != "background"]
    if any(isinstance(value, list) for value in regions):
        # upstream order: each region is written as its lowest label value
        dataset_json["regions_class_order"] = [min(v) if isinstance(v, list) else v for v in regions]
    return dataset_json


def _n_labels(labels: dict) -> int:
    return max(max(v) if isinstance(v, list) else v for v in labels.values())


def _synthetic_case(rng: np.random.Generator, shape: tuple[int, ...], n_channels: int, n_labels: int,
                    zero_margin: int) -> tuple[np.ndarray, np.ndarray]:
    grid = np.indices(shape, dtype=np.float32)
    seg = np.zeros(shape, dtype=np.uint8)
    radius = max(2.0, min(shape) / 8)
    for label in range(1, n_labels + 1):
        centre = rng.uniform(radius, np.array(shape) - radius)
        inside = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=False)) <= radius ** 2
        seg[inside] = label
    image = rng.normal(100.0, 10.0, shape).astype(np.float32) + 20.0 * seg
    channels = [image] + [(seg % 2 == 1).astype(np.float32)] * (n_channels - 1)
    stacked = np.stack(channels)
    if zero_margin:
        inner = tuple(slice(zero_margin, -zero_margin) for _ in shape)
        mask = np.zeros(shape, dtype=bool)
        mask[inner] = True
        stacked[:, ~mask] = 0
        seg[~mask] = 0
    return stacked, seg


def _write_raw_dataset(raw: Path, dataset_json: dict, shape: Sequence[int], spacing: Sequence[float],
                       zero_margin: int, seed: int) -> None:
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    (raw / "dataset.json").write_text(json.dumps(dataset_json))
    affine = np.diag([*map(float, spacing), 1.0])
    rng = np.random.default_rng(seed)
    n_channels = len(dataset_json["channel_names"])
    for case in range(dataset_json["numTraining"]):
        image, seg = _synthetic_case(rng, tuple(shape), n_channels, _n_labels(dataset_json["labels"]),
                                     zero_margin)
        for channel in range(n_channels):
            image_file = raw / "imagesTr" / f"case_{case:03d}_{channel:04d}.nii.gz"
            nib.save(nib.Nifti1Image(image[channel], affine), image_file)
        nib.save(nib.Nifti1Image(seg, affine), raw / "labelsTr" / f"case_{case:03d}.nii.gz")


def _nnunet_env(scratch: Path, results: str | os.PathLike):
    """nnU-Net reads its folders from the environment when it uses them, so set them only meanwhile."""
    from unittest import mock

    return mock.patch.dict(os.environ, {"nnUNet_raw": str(scratch / "raw"),
                                        "nnUNet_preprocessed": str(scratch / "preprocessed"),
                                        "nnUNet_results": str(results)})


def _plan(dataset_id: int, planner: str, plans_name: str | None) -> tuple[dict, dict]:
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import (
        nnUNetPlannerResEncL,
    )
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
    )

    class FewSamplesExtractor(DatasetFingerprintExtractor):
        """nnU-Net's extractor, sampling 1e5 foreground voxels for the intensity statistics instead of 1e8."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.num_foreground_voxels_for_intensitystats = 1e5

    planner_class = {"ResEncL": nnUNetPlannerResEncL, "default": ExperimentPlanner}[planner]
    with contextlib.redirect_stdout(None), _fingerprint_in_threads():
        extract_fingerprint_dataset(dataset_id, FewSamplesExtractor, num_processes=1, verbose=False,
                                    show_progress_bar=False)
        _, identifier = plan_experiment_dataset(dataset_id, planner_class, overwrite_plans_name=plans_name)
    preprocessed = Path(os.environ["nnUNet_preprocessed"])
    dataset_dir = next(preprocessed.glob(f"Dataset{dataset_id:03d}_*"))
    plans = json.loads((dataset_dir / f"{identifier}.json").read_text())
    return plans, json.loads((dataset_dir / "dataset_fingerprint.json").read_text())


@contextlib.contextmanager
def _fingerprint_in_threads():
    """Run nnU-Net's fingerprint extraction in a thread pool instead of its spawn pool.

    The extractor's code is unchanged; only its ``multiprocessing.get_context("spawn").Pool`` becomes a
    ``ThreadPool`` (same API). A spawned worker costs about 9 s of imports on 2 cores.
    """
    from multiprocessing.pool import ThreadPool
    from types import SimpleNamespace
    from unittest import mock

    from nnunetv2.experiment_planning.dataset_fingerprint import fingerprint_extractor

    threads = SimpleNamespace(get_context=lambda method: SimpleNamespace(Pool=ThreadPool))
    with mock.patch.object(fingerprint_extractor, "multiprocessing", threads):
        yield


def _shrink(configuration: dict, patch_size: Sequence[int]) -> None:
    n_stages = len(TINY_FEATURES)
    arch = configuration["architecture"]["arch_kwargs"]
    dims = len(patch_size)
    arch.update(n_stages=n_stages, features_per_stage=list(TINY_FEATURES),
                kernel_sizes=[[3] * dims] * n_stages,
                strides=[[1] * dims] + [[2] * dims] * (n_stages - 1),
                n_conv_per_stage_decoder=[1] * (n_stages - 1))
    blocks_key = "n_blocks_per_stage" if "n_blocks_per_stage" in arch else "n_conv_per_stage"
    arch[blocks_key] = [1] * n_stages
    configuration["patch_size"] = list(patch_size)
    configuration["batch_size"] = 2


def _checkpoint(plans: dict, dataset_json: dict, trainer_name: str, fold: int, seed: int,
                mirroring_axes: tuple[int, ...] | None) -> dict:
    """The dict ``nnUNetTrainer.save_checkpoint`` writes, after two (pretend) epochs on a GPU."""
    import torch

    n_heads = _n_heads(plans, dataset_json)
    network = _network(plans, dataset_json, n_heads, seed)
    optimizer = torch.optim.SGD(network.parameters(), 1e-2, weight_decay=3e-5, momentum=0.99, nesterov=True)
    for parameter in network.parameters():
        optimizer.state[parameter]["momentum_buffer"] = torch.zeros_like(parameter)
    dice = [[np.float64(0.1 * epoch + 0.01 * head) for head in range(n_heads)] for epoch in (1, 2)]
    mean_dice = [np.nanmean(d) for d in dice]
    now = time.time()
    return {
        "network_weights": network.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "grad_scaler_state": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                              "growth_interval": 2000, "_growth_tracker": 2},
        "logging": {
            "mean_fg_dice": mean_dice,
            "ema_fg_dice": [mean_dice[0], mean_dice[0] * 0.9 + 0.1 * mean_dice[1]],
            "dice_per_class_or_region": dice,
            "train_losses": [np.mean(np.array([-0.1, -0.2])), np.mean(np.array([-0.3, -0.4]))],
            "val_losses": [np.mean(np.array([-0.1])), np.mean(np.array([-0.2]))],
            "lrs": [0.01, 0.00999],
            "epoch_start_timestamps": [now - 20.0, now - 10.0],
            "epoch_end_timestamps": [now - 10.0, now],
        },
        "_best_ema": mean_dice[0] * 0.9 + 0.1 * mean_dice[1],
        "current_epoch": 2,
        "init_args": {"plans": plans, "configuration": CONFIGURATION, "fold": fold, "dataset_json": dataset_json,
                      "device": torch.device("cuda")},
        "trainer_name": trainer_name,
        "inference_allowed_mirroring_axes": mirroring_axes,
    }


def _n_heads(plans: dict, dataset_json: dict) -> int:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    with contextlib.redirect_stdout(None):
        return PlansManager(plans).get_label_manager(dataset_json).num_segmentation_heads


def _network(plans: dict, dataset_json: dict, n_outputs: int, seed: int):
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    configuration = PlansManager(plans).get_configuration(CONFIGURATION)
    torch.manual_seed(seed)
    # the trainer trains with deep supervision on; the saved state dict has the same keys either way
    return get_network_from_plans(configuration.network_arch_class_name, configuration.network_arch_init_kwargs,
                                  configuration.network_arch_init_kwargs_req_import,
                                  len(dataset_json["channel_names"]), n_outputs, allow_init=True,
                                  deep_supervision=True)


def _save(checkpoint: dict, path: Path) -> None:
    import torch

    torch.save(checkpoint, path)


def copy_model_folder(folder: Path, destination: Path) -> Path:
    """Copy a trained-model folder, keeping its ``Dataset.../<trainer>__<plans>__<config>`` name."""
    target = destination / folder.parent.name / folder.name
    shutil.copytree(folder, target)
    return target
