"""Evaluation helpers: per-label Dice, identification rate, level-point distance."""

from __future__ import annotations

import numpy as np

from .. import labels as L


def present_labels(seg: np.ndarray, min_voxels: int = 1) -> list[int]:
    values, counts = np.unique(seg, return_counts=True)
    return [int(v) for v, c in zip(values, counts, strict=False) if v != 0 and c >= min_voxels]


def dice_per_label(pred: np.ndarray, truth: np.ndarray, values=None) -> dict[int, float]:
    """Dice of each label in `values` (default: every label of the truth). A label absent from both is skipped."""
    values = present_labels(truth) if values is None else list(values)
    out = {}
    for v in values:
        p, t = pred == v, truth == v
        denom = int(p.sum()) + int(t.sum())
        if denom:
            out[v] = 2.0 * int((p & t).sum()) / denom
    return out


def identified(pred: np.ndarray, truth: np.ndarray, values=None, min_voxels: int = 1) -> dict[int, bool]:
    """For each true structure: does the predicted label covering most of it (background counts) equal it?"""
    values = present_labels(truth, min_voxels) if values is None else list(values)
    out = {}
    for v in values:
        covered = pred[truth == v]
        if covered.size == 0:
            continue
        winner = np.bincount(covered.astype(np.intp)).argmax()
        out[v] = bool(winner == v)
    return out


def identification_rate(pred: np.ndarray, truth: np.ndarray, kinds=("disc", "vertebra", "sacrum"), min_voxels=1):
    """Fraction of true discs and vertebrae (by default) that are identified; also returns the failures."""
    values = [v for v in present_labels(truth, min_voxels) if v in L.FINAL and L.FINAL[v].kind in kinds]
    result = identified(pred, truth, values)
    if not result:
        return 1.0, []
    failures = [v for v, ok in result.items() if not ok]
    return 1.0 - len(failures) / len(result), failures


def level_distances(pred_levels: np.ndarray, true_levels: np.ndarray, affine: np.ndarray) -> dict[int, float]:
    """World distance (mm) between predicted and true level points, for levels present in both."""
    out = {}
    for v in present_labels(true_levels):
        p = np.argwhere(pred_levels == v)
        t = np.argwhere(true_levels == v)
        if len(p) == 0:
            continue
        pw = affine[:3, :3] @ p.mean(axis=0) + affine[:3, 3]
        tw = affine[:3, :3] @ t.mean(axis=0) + affine[:3, 3]
        out[v] = float(np.linalg.norm(pw - tw))
    return out
