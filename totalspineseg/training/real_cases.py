"""Partly labelled real MR scans as training cases: what their manual labels tell, the rest ignored.

The public real scans of ``../shared/data/real`` carry partial labels: SCT cord masks (every cord voxel of the
scan, nothing else) and fastcleverseg lumbar disc masks (L1-L2 ... L5-S1, numbered). A training case built from
them marks three kinds of voxels:

* labelled: the manual structure (cord; discs), plus, for disc scans, the vertebral body between two
  consecutive manual discs (the convex hull of the pair, the discs and one voxel around them taken away): L2-L5;
* background: voxels farther than ``FAR_BACKGROUND_MM`` from every labelled voxel, within the superior-inferior
  range of the labels (neck and abdomen soft tissue, air, the far body wall: never spine);
* ignored: everything else (nnU-Net's ignore label: no loss there), so that an unlabelled vertebra is never
  taught as background.

Every scan belongs to one subject group (``split``): the lite model is trained on one group and scored on the other
(`benchmarks/eval_real.py --scans`), so that each number on a real scan comes from a model that never saw it.
Functions here are pure (arrays and affines); the recipe writes the cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import Delaunay, QhullError

from .. import labels as L
from .. import resample, volume
from .dataset import CROP_MARGIN_MM, IGNORE_CLASS, SWAPPED_SUFFIX, GridCase, alternate_disc_mask

#: Beyond this distance (mm) from every labelled voxel, within the labels' height, nothing is spine. Lumbar
#: spinous processes end about 80 mm behind the front of the disc; cervical ones about 50 mm behind the cord.
FAR_BACKGROUND_MM = {"cord": 60.0, "discs": 90.0}
#: Extra margin (mm) of the step-2 crop around the labelled voxels: at inference the crop holds the whole spine
#: (vertebral bodies in front of the cord, posterior elements behind the discs), not only the labelled part.
STEP2_CROP_EXTRA_MM = 40.0

#: fastcleverseg IVD_*_GT: 1 = L5-S1, 2 = L4-L5, 3 = L3-L4, 4 = L2-L3, 5 = L1-L2.
IVD_TO_FINAL = {1: L.DISC_L5_S, 2: 95, 3: 94, 4: 93, 5: 92}


@dataclass(frozen=True)
class RealScan:
    name: str
    image: str  # relative to the real-data root
    truth: str  # the manual label file, same root
    kind: str  # "cord" (a 0/1 cord mask, threshold 0.5) | "discs" (fastcleverseg IVD values)
    split: str  # subject group: "A" | "B"
    test_only: bool = False  # its source allows testing only: trained on in experiments, never in a shipped model


_GIT = "spinalcordtoolbox_git_history/testing/data"
_STD = "sct_testing_data"
_EX = "spinalcordtoolbox_git_history/scripts/sct_example_data/t2"

#: The labelled real scans used for training, by subject group. Same subject, same group: errsm_18 t2 and gre;
#: sct_testing_data t2, t1 and t2s; sct_example_data t2 and sct_testing_data/history_data_t2 (scored only).
#: The SCT scans are MIT-licensed. The fastcleverseg lumbar scans come from research datasets whose licences are
#: not verified ("testing only", their PROVENANCE.md): `test_only`, so the shipped recipe never trains on them.
REAL_SCANS: tuple[RealScan, ...] = (
    RealScan("errsm_11_t2", f"{_GIT}/errsm_11/t2/t2.nii.gz", f"{_GIT}/errsm_11/t2/t2_manual_segmentation.nii.gz",
             "cord", "A"),
    RealScan("errsm_21_t2", f"{_GIT}/errsm_21/t2/t2.nii.gz", f"{_GIT}/errsm_21/t2/t2_manual_segmentation.nii.gz",
             "cord", "A"),
    RealScan("sct_t2", f"{_STD}/t2/t2.nii.gz", f"{_STD}/t2/t2_seg-manual.nii.gz", "cord", "A"),
    RealScan("sct_t1", f"{_STD}/t1/t1w.nii.gz", f"{_STD}/t1/t1w_seg-manual.nii.gz", "cord", "A"),
    RealScan("sct_t2s", f"{_STD}/t2s/t2s.nii.gz", f"{_STD}/t2s/t2s_seg.nii.gz", "cord", "A"),
    RealScan("IVD_11", "fastcleverseg/IVD_11_I.nii.gz", "fastcleverseg/IVD_11_GT.nii.gz", "discs", "A", True),
    RealScan("IVD_25", "fastcleverseg/IVD_25_I.nii.gz", "fastcleverseg/IVD_25_GT.nii.gz", "discs", "A", True),
    RealScan("errsm_18_t2", f"{_GIT}/errsm_18/t2/t2.nii.gz", f"{_GIT}/errsm_18/t2/t2_manual_segmentation.nii.gz",
             "cord", "B"),
    RealScan("errsm_18_gre", f"{_GIT}/errsm_18/gre/gre.nii.gz", f"{_GIT}/errsm_18/gre/segmentation_binary.nii.gz",
             "cord", "B"),
    RealScan("sct_example_t2", f"{_EX}/t2.nii.gz", f"{_EX}/t2_seg.nii.gz", "cord", "B"),
    RealScan("IVD_20", "fastcleverseg/IVD_20_I.nii.gz", "fastcleverseg/IVD_20_GT.nii.gz", "discs", "B", True),
)
#: Scans not trained on but of a subject that is: scored only by the model that did not train on that subject.
SAME_SUBJECT_AS: dict[str, str] = {f"{_STD}/history_data_t2/t2.nii.gz": f"{_EX}/t2.nii.gz"}
SPLITS = ("A", "B")


def group_of_image(image: str, test_only_too: bool = False) -> str | None:
    """The subject group of a real scan (its path under the real-data root); None for a subject never trained on
    (the test-only scans, unless `test_only_too`)."""
    image = SAME_SUBJECT_AS.get(image, image)
    return next((s.split for s in REAL_SCANS if s.image == image and (test_only_too or not s.test_only)), None)
REAL_CHOICES = ("none", "A", "B", "all")


def scans_for(real: str, test_only_too: bool = False, scans: Sequence[RealScan] | None = None) -> list[RealScan]:
    """The scans a model trains on: none, one subject group, or all of them; `test_only_too` (experiments) adds
    the scans whose source allows testing only."""
    if real not in REAL_CHOICES:
        raise ValueError(f"real must be one of {REAL_CHOICES}, not {real!r}")
    if real == "none":
        return []
    return [s for s in (REAL_SCANS if scans is None else scans)
            if (real == "all" or s.split == real) and (test_only_too or not s.test_only)]


@dataclass
class PartialCase:
    """A real image on the network grid with final-scheme labels where known (`known`), the rest to ignore."""

    case: GridCase
    known: np.ndarray  # bool, same grid


# ---------------------------------------------------------------------------------------------------------
# Labels from the manual masks (on the network grid: canonical RAS+, axis 2 = inferior -> superior)


def far_background(foreground: np.ndarray, spacing: Sequence[float], far_mm: float) -> np.ndarray:
    """Voxels farther than `far_mm` from every foreground voxel, on the axial slices the foreground spans."""
    if not foreground.any():
        return np.zeros(foreground.shape, dtype=bool)
    distance = ndimage.distance_transform_edt(~foreground, sampling=tuple(float(s) for s in spacing))
    slices = np.flatnonzero(foreground.any(axis=(0, 1)))
    within = np.zeros(foreground.shape[2], dtype=bool)
    within[slices.min(): slices.max() + 1] = True
    return (distance > far_mm) & within[None, None, :]


def bodies_between_discs(seg: np.ndarray) -> np.ndarray:
    """The vertebral bodies between consecutive numbered discs: final labels (L2 between L1-L2 and L2-L3, ...),
    0 elsewhere. Each body is the convex hull of its two discs minus the discs grown by one voxel."""
    out = np.zeros(seg.shape, dtype=np.uint8)
    discs = sorted(int(v) for v in np.unique(seg) if L.is_disc(int(v)) and int(v) != L.DISC_UNNUMBERED)
    near_disc = ndimage.binary_dilation(np.isin(seg, discs), iterations=1)
    for upper, lower in pairwise(discs):
        vertebra = L.vertebra_below_disc(upper)
        if L.vertebra_above_disc(lower) != vertebra:
            continue  # not adjacent (a missing disc between them)
        points = np.argwhere((seg == upper) | (seg == lower))
        inside = _convex_hull_mask(points, seg.shape)
        out[inside & ~near_disc & (out == 0)] = vertebra
    return out


def _convex_hull_mask(points: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    lo, hi = points.min(0), points.max(0) + 1
    mask = np.zeros(tuple(shape), dtype=bool)
    try:
        hull = Delaunay(points.astype(float))
    except QhullError:  # flat or degenerate: no volume between the discs
        return mask
    axes = [np.arange(a, b) for a, b in zip(lo, hi, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    inside = hull.find_simplex(grid.astype(float)) >= 0
    mask[tuple(grid[inside].T)] = True
    return mask


def cord_labels(cord: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(final-scheme labels, known) from a cord mask: the cord, and far background around it."""
    cord = cord.astype(bool)
    seg = np.where(cord, L.CORD, 0).astype(np.uint8)
    known = cord | far_background(cord, spacing, FAR_BACKGROUND_MM["cord"])
    return seg, known


def disc_labels(discs: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(final-scheme labels, known) from numbered disc labels: the discs, the bodies between them, far
    background."""
    seg = discs.astype(np.uint8)
    bodies = bodies_between_discs(seg)
    seg = np.where(seg > 0, seg, bodies).astype(np.uint8)
    labelled = seg > 0
    known = labelled | far_background(labelled, spacing, FAR_BACKGROUND_MM["discs"])
    return seg, known


# ---------------------------------------------------------------------------------------------------------
# Cases


def load_partial_case(root: Path, scan: RealScan, spacing: float) -> PartialCase:
    """A real scan and its manual labels on the network grid (canonical, `spacing` mm)."""
    image = volume.load_volume(root / scan.image)
    data, affine = volume.to_iso(image, spacing)
    truth = volume.load_volume(root / scan.truth)
    if scan.kind == "cord":
        soft = resample.resample_to_grid((truth.data > 0.5).astype(np.float32), truth.affine, data.shape, affine,
                                         "soft")
        seg, known = cord_labels(soft >= 0.5, (spacing,) * 3)
    elif scan.kind == "discs":
        lut = np.zeros(256, dtype=np.uint8)
        for k, v in IVD_TO_FINAL.items():
            lut[k] = v
        final = lut[np.clip(np.rint(truth.data), 0, 255).astype(np.intp)]
        on_grid = resample.resample_to_grid(final, truth.affine, data.shape, affine, "labels")
        seg, known = disc_labels(on_grid, (spacing,) * 3)
    else:
        raise ValueError(f"{scan.name}: unknown label kind {scan.kind!r}")
    return PartialCase(GridCase(data, seg, affine), known)


def step1_labels(partial: PartialCase) -> np.ndarray:
    out = L.final_to_step1(partial.case.seg)
    out[~partial.known] = IGNORE_CLASS[1]
    return out


def step2_cases(partial: PartialCase, predicted_discs: np.ndarray | None = None
                ) -> list[tuple[str, list[np.ndarray], np.ndarray, np.ndarray]]:
    """(name suffix, channels, labels, affine) of the two step-2 copies, as `dataset.step2_cases` builds them.

    The crop is the labelled voxels plus 10 + 40 mm. Channel 1 marks every other disc: the manual discs where the
    scan has them (their parity sets the vertebra classes, as for synthetic cases), else `predicted_discs` (a
    final-scheme disc map on the same grid, e.g. from the model being fine-tuned, as at inference), each copy one
    parity; without either, zeros.
    """
    case = partial.case
    margin = int(np.ceil((CROP_MARGIN_MM + STEP2_CROP_EXTRA_MM) / float(case.spacing.min()) - 1e-6))
    image, affine, slices = resample.crop_to_mask(case.image, case.seg != 0, case.affine, margin)
    seg, known = case.seg[slices], partial.known[slices]
    has_discs = any(L.is_disc(int(v)) for v in np.unique(seg))
    out = []
    for swap in (False, True):
        if has_discs:
            channel = alternate_disc_mask(seg, mark_odd=not swap)
        elif predicted_discs is not None:
            channel = _alternate_predicted(predicted_discs[slices], second=swap)
        else:
            channel = np.zeros(seg.shape, dtype=np.uint8)
        labels = L.final_to_step2(seg, swap_parity=swap)
        labels[~known] = IGNORE_CLASS[2]
        out.append((SWAPPED_SUFFIX if swap else "", [image, channel], labels, affine))
    return out


def _alternate_predicted(discs: np.ndarray, second: bool) -> np.ndarray:
    from ..postprocess import odd_disc_mask

    first = odd_disc_mask(discs)
    if not second:
        return first
    return (np.isin(discs, [v for v in np.unique(discs) if L.is_disc(int(v))]) & (first == 0)).astype(np.uint8)

