"""Per-structure statistics and automatic QC flags of one segmentation. Pure numpy/scipy.

Flags name what a reviewer should look at first:

* ``missing_level``: a vertebra or disc absent between the top-most and the bottom-most numbered ones;
* ``duplicated_level``: one label split into several large, separate pieces;
* ``order``: numbered structures out of the superior-to-inferior order;
* ``cord_outside_canal``: the cord touches something other than the canal;
* ``unlabeled``: vertebrae or discs that were segmented but could not be numbered;
* ``no_cord`` / ``no_canal``: the structure is absent;
* ``warning``: the pipeline reported a problem (one flag per warning).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
from scipy import ndimage

from .. import labels as L
from ..resample import voxel_sizes

# A second piece of one label counts as a duplicate when it is at least this fraction of the largest piece
# and at least this many mm3 (smaller bits are partial-volume crumbs of a thick-slice grid).
DUPLICATE_FRACTION = 0.1
DUPLICATE_MIN_MM3 = 20.0
# Superior-inferior tolerance (mm) before two consecutive structures count as out of order.
ORDER_TOLERANCE_MM = 1.0
# Below this fraction of the cord's surroundings being canal, the cord is flagged as outside the canal.
CORD_IN_CANAL_MIN = 0.8


@dataclass(frozen=True)
class Flag:
    code: str
    message: str

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


@dataclass
class ImageQC:
    voxels: dict[int, int]  # label -> voxel count, present labels only
    volumes_mm3: dict[int, float]
    flags: list[Flag] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """The numbers a group table shows for this image."""
        return {**self.metrics, "flags": [f.as_dict() for f in self.flags]}


def structure_stats(seg: np.ndarray, affine: np.ndarray) -> tuple[dict[int, int], dict[int, float]]:
    """Voxel count and volume (mm3) of every non-zero label."""
    counts = np.bincount(np.asarray(seg, dtype=np.intp).ravel())
    voxel_mm3 = float(np.prod(voxel_sizes(affine)))
    voxels = {int(v): int(n) for v, n in enumerate(counts) if v and n}
    return voxels, {v: round(n * voxel_mm3, 3) for v, n in voxels.items()}


def stats_table(qc: ImageQC) -> str:
    """The per-image statistics TSV: one row per present label."""
    rows = ["index\tname\tabbreviation\tvoxels\tvolume_mm3"]
    for value, n in sorted(qc.voxels.items()):
        s = L.FINAL.get(value)
        name, abbreviation = (s.name, s.abbreviation) if s else (f"label_{value}", str(value))
        rows.append(f"{value}\t{name}\t{abbreviation}\t{n}\t{qc.volumes_mm3[value]:.3f}")
    return "\n".join(rows) + "\n"


def cranio_caudal_sequence(with_l6: bool) -> list[int]:
    """Every numbered vertebra and disc, top to bottom: C1, C2, C2-C3, C3, ..., L5, L5-S, sacrum."""
    vertebrae = L.VERTEBRAE_POSSIBLE if with_l6 else L.VERTEBRAE_DEFAULT
    seq = [vertebrae[0]]
    for above, below in pairwise(vertebrae):
        if above != L.C1:
            seq.append(L.disc_below_vertebra(above) if below != L.SACRUM else L.DISC_L5_S)
        seq.append(below)
    return seq


def _sequence_for(present: set[int], step1_only: bool) -> list[int]:
    seq = cranio_caudal_sequence(L.VERTEBRA_L6 in present or L.DISC_L5_L6 in present)
    if step1_only:
        # Step 1 numbers discs only; its vertebra value is not a level.
        seq = [v for v in seq if L.is_disc(v) or v == L.C1]
    return seq


def missing_levels(present: set[int], step1_only: bool = False) -> list[int]:
    seq = _sequence_for(present, step1_only)
    found = [i for i, v in enumerate(seq) if v in present]
    if not found:
        return []
    return [v for v in seq[found[0] : found[-1] + 1] if v not in present]


def _pieces(mask: np.ndarray, voxel_mm3: float) -> list[float]:
    """Volumes (mm3) of the 26-connected pieces of a mask, largest first."""
    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return [float(mask.sum()) * voxel_mm3] if n else []
    return sorted((np.bincount(lab.ravel())[1:] * voxel_mm3).tolist(), reverse=True)


def duplicated_levels(seg: np.ndarray, affine: np.ndarray, values) -> list[int]:
    voxel_mm3 = float(np.prod(voxel_sizes(affine)))
    boxes = ndimage.find_objects(np.asarray(seg, dtype=np.intp))
    out = []
    for v in values:
        if v - 1 >= len(boxes) or boxes[v - 1] is None:
            continue
        pieces = _pieces(seg[boxes[v - 1]] == v, voxel_mm3)
        big = [p for p in pieces if p >= max(DUPLICATE_MIN_MM3, DUPLICATE_FRACTION * pieces[0])]
        if len(big) > 1:
            out.append(v)
    return out


def centroids_mm(seg: np.ndarray, affine: np.ndarray, values) -> dict[int, np.ndarray]:
    values = [v for v in values]
    centres = ndimage.center_of_mass(np.ones(seg.shape, np.float32), seg, values)
    return {v: affine[:3, :3] @ np.asarray(c) + affine[:3, 3] for v, c in zip(values, centres, strict=False)}


def out_of_order(seg: np.ndarray, affine: np.ndarray, present: set[int], step1_only: bool = False) -> list[tuple]:
    """Consecutive numbered structures whose centroids are not top to bottom (world +z is superior)."""
    seq = [v for v in _sequence_for(present, step1_only) if v in present]
    centres = centroids_mm(seg, affine, seq)
    return [(a, b) for a, b in pairwise(seq) if centres[b][2] - centres[a][2] > ORDER_TOLERANCE_MM]


def cord_in_canal_fraction(seg: np.ndarray) -> float | None:
    """Fraction of the voxels around the cord (6-neighbours, away from the image border) that are canal."""
    cord = seg == L.CORD
    if not cord.any():
        return None
    ring = ndimage.binary_dilation(cord) & ~cord
    inner = np.zeros_like(ring)
    inner[1:-1, 1:-1, 1:-1] = True
    ring &= inner
    if not ring.any():
        return 1.0
    return float(np.mean(seg[ring] == L.CANAL))


def _name(v: int) -> str:
    s = L.FINAL.get(v)
    return s.short if s else str(v)


def _numbered(present: set[int], step1_only: bool) -> set[int]:
    return set(_sequence_for(present, step1_only)) & present


def _level_flags(seg, affine, present: set[int], step1_only: bool) -> list[Flag]:
    flags = []
    missing = missing_levels(present, step1_only)
    if missing:
        flags.append(Flag("missing_level", "missing: " + ", ".join(_name(v) for v in missing)))
    duplicated = duplicated_levels(seg, affine, sorted(_numbered(present, step1_only)))
    if duplicated:
        flags.append(Flag("duplicated_level", "in several pieces: " + ", ".join(_name(v) for v in duplicated)))
    inversions = out_of_order(seg, affine, present, step1_only)
    if inversions:
        pairs = ", ".join(f"{_name(a)} below {_name(b)}" for a, b in inversions)
        flags.append(Flag("order", f"out of superior-inferior order: {pairs}"))
    unnumbered = [v for v in (L.VERTEBRA_UNNUMBERED, L.DISC_UNNUMBERED) if v in present]
    if unnumbered:
        flags.append(Flag("unlabeled", "segmented but not numbered: " + ", ".join(L.FINAL[v].name for v in unnumbered)))
    return flags


def _cord_flags(seg, present: set[int]) -> tuple[list[Flag], float | None]:
    flags = []
    if L.CORD not in present:
        flags.append(Flag("no_cord", "no spinal cord segmented"))
    if L.CANAL not in present:
        flags.append(Flag("no_canal", "no spinal canal segmented"))
    fraction = cord_in_canal_fraction(seg)
    if fraction is not None and L.CANAL in present and fraction < CORD_IN_CANAL_MIN:
        flags.append(Flag("cord_outside_canal", f"only {fraction:.0%} of the cord's surroundings is canal"))
    return flags, fraction


def _metrics(present: set[int], volumes: dict[int, float], step1_only: bool, cord_fraction) -> dict:
    numbered = [v for v in _sequence_for(present, step1_only) if v in present]
    vertebrae = [v for v in numbered if L.is_vertebra(v)]
    discs = [v for v in numbered if L.is_disc(v)]
    return {
        "n_vertebrae": len(vertebrae),
        "n_discs": len(discs),
        "top": _name(numbered[0]) if numbered else "",
        "bottom": _name(numbered[-1]) if numbered else "",
        "cord_mm3": volumes.get(L.CORD, 0.0),
        "canal_mm3": volumes.get(L.CANAL, 0.0),
        "cord_in_canal": None if cord_fraction is None else round(cord_fraction, 4),
    }


def assess(seg: np.ndarray, affine: np.ndarray, warnings=(), step1_only: bool = False,
           flags_on: tuple[np.ndarray, np.ndarray] | None = None) -> ImageQC:
    """Statistics of `seg` and its QC flags.

    `flags_on` (seg, affine) computes the geometric flags on another grid of the same segmentation; the
    1 mm grid is steadier than a thick-slice native one. Volumes always come from `seg`.
    """
    voxels, volumes = structure_stats(seg, affine)
    flag_seg, flag_affine = flags_on if flags_on is not None else (seg, affine)
    present = set(structure_stats(flag_seg, flag_affine)[0]) if flags_on is not None else set(voxels)
    flags = _level_flags(flag_seg, flag_affine, present, step1_only)
    cord_flags, fraction = _cord_flags(flag_seg, present)
    flags += cord_flags
    flags += [Flag("warning", str(w)) for w in warnings]
    return ImageQC(voxels, volumes, flags, _metrics(set(voxels), volumes, step1_only, fraction))
