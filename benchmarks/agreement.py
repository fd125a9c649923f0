"""How far two pipeline results on the same image agree: the bars of the precision, tile-step and GPU checks.

* same numbering: the same set of labels in the final segmentation;
* Dice per structure (label), with the first result as the reference: the lowest (and its label) and the mean;
* the step-2 crop box: the largest shift of its corner or size, in voxels (1 mm).

A result passes when the numbering is the same, every Dice is >= 0.99 and the crop box moved by <= 1 voxel.
"""

from __future__ import annotations

import numpy as np

from totalspineseg.pipeline import Models, SegmentationResult
from totalspineseg.training import metrics

MIN_DICE = 0.99
MAX_CROP_SHIFT = 1


def crop_shift(a: SegmentationResult, b: SegmentationResult) -> float:
    if a.crop_grid is None or b.crop_grid is None:
        return 0.0 if a.crop_grid is b.crop_grid else float("inf")
    corner = np.abs(a.crop_grid.affine[:3, 3] - b.crop_grid.affine[:3, 3]).max()  # 1 mm voxels
    size = np.abs(np.subtract(a.crop_grid.shape, b.crop_grid.shape)).max()
    return float(max(corner, size))


def label_agreement(seg_ref: np.ndarray, seg_new: np.ndarray) -> dict:
    """same_numbering, min_dice, worst_label, mean_dice and dice (per label of `seg_ref`) of two label maps."""
    labels_ref = metrics.present_labels(seg_ref)
    dice = metrics.dice_per_label(seg_new, seg_ref, labels_ref)
    worst = min(dice, key=dice.get) if dice else None
    return {"same_numbering": labels_ref == metrics.present_labels(seg_new),
            "min_dice": round(dice[worst], 4) if worst is not None else 1.0, "worst_label": worst,
            "mean_dice": round(float(np.mean(list(dice.values()))), 4) if dice else 1.0,
            "dice": {int(k): round(v, 4) for k, v in dice.items()}}


def agreement(ref: SegmentationResult, new: SegmentationResult) -> dict:
    """same_numbering, min_dice, worst_label, mean_dice, crop_shift_voxels, dice (per label) and passes of `new`
    against `ref`."""
    seg_ref = ref.final.step2 if ref.final.step2 is not None else ref.final.step1
    seg_new = new.final.step2 if new.final.step2 is not None else new.final.step1
    row = label_agreement(seg_ref, seg_new)
    row["crop_shift_voxels"] = crop_shift(ref, new)
    row["passes"] = bool(row["same_numbering"] and row["min_dice"] >= MIN_DICE
                         and row["crop_shift_voxels"] <= MAX_CROP_SHIFT)
    return row


def forward_seconds(result: SegmentationResult) -> float:
    """The time of the two network forward passes of one pipeline run."""
    return result.timings.get("step1_forward", 0.0) + result.timings.get("step2_forward", 0.0)


def set_model_option(models: Models, name: str, value) -> None:
    """Change `precision` or `tile_step` of both loaded networks (and of the `Models` record) between runs."""
    for model in (models.step1, models.step2):
        if model is not None:
            setattr(model, name, value)
    setattr(models, name, value)
