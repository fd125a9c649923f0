"""Scores of a final-scheme segmentation against the manual labels of the real scans (`eval_real.py`).

Pure functions on arrays and affines (numpy and `totalspineseg.labels` only, no model, no file): the tests call
them on small synthetic arrays. Every superior-inferior comparison is made in world (RAS+) millimetres, so the
storage orientation of the arrays does not matter.

* `cord_dice`: Dice of the cord label against a manual cord mask (float masks thresholded at 0.5).
* `vertebra_at_point`, `score_landmarks`: level identification at single-voxel points inside the cord
  (SCT numbering 1..7 = C1..C7, 8..19 = T1..T12, 20.. = L1..; `sct_vertebra`).
* `score_discs`: per manual disc, the predicted disc label covering it most, the Dice of the expected label and
  the Dice of the covering label (the disc's shape, whatever number it got).
* `score_bodies`, `body_identity`: manual vertebral bodies (instance ids in any order): counting, splits, merges,
  containment, and the L1-L5 numbering where the level of the bodies can be inferred.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from totalspineseg import labels as L

#: Every final label of a vertebra or the sacrum, the unnumbered vertebra (200) included.
VERTEBRA_VALUES: tuple[int, ...] = tuple(v for v, s in L.FINAL.items() if s.kind in ("vertebra", "sacrum"))
#: Every final disc label, the unnumbered disc (201) included.
DISC_VALUES: tuple[int, ...] = tuple(v for v, s in L.FINAL.items() if s.kind == "disc")
LUMBAR: tuple[int, ...] = tuple(v for v in L.VERTEBRAE_DEFAULT if L.FINAL[v].short.startswith("L"))  # L1..L5


def name_of(label: int | None) -> str:
    """Short name of a final label ("C3", "L4-L5", "Sacrum", "V?"); "nothing" for None."""
    if label is None:
        return "nothing"
    s = L.FINAL.get(int(label))
    return s.short if s else str(label)


def sct_vertebra(level: int) -> int:
    """The final vertebra label of an SCT vertebral level (1 = C1 ... 7 = C7, 8 = T1 ... 19 = T12, 20 = L1 ...)."""
    if not 1 <= level <= len(L.VERTEBRAE_DEFAULT) - 1:
        raise ValueError(f"SCT level {level} is not a vertebra")
    return L.VERTEBRAE_DEFAULT[level - 1]


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two masks (truthy voxels); 1.0 when both are empty."""
    p, t = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if p.shape != t.shape:
        raise ValueError(f"masks of different shapes: {p.shape} and {t.shape}")
    denom = int(p.sum()) + int(t.sum())
    return 1.0 if denom == 0 else 2.0 * int((p & t).sum()) / denom


def cord_dice(seg: np.ndarray, cord_mask: np.ndarray) -> float:
    """Dice of the predicted cord (label 1) against a manual cord mask (a float mask counts where > 0.5)."""
    return dice(np.asarray(seg) == L.CORD, np.asarray(cord_mask) > 0.5)


def to_world(affine: np.ndarray, voxels: np.ndarray) -> np.ndarray:
    """(N, 3) voxel indices -> (N, 3) world coordinates (mm)."""
    affine = np.asarray(affine, dtype=float)
    return np.asarray(voxels, dtype=float) @ affine[:3, :3].T + affine[:3, 3]


def landmark_points(points: np.ndarray, affine: np.ndarray) -> dict[int, np.ndarray]:
    """Each non-zero value of a point-label map -> the world coordinate (mm) of its voxels' centre."""
    points = np.rint(np.asarray(points)).astype(np.int64)
    out = {}
    for v in np.unique(points):
        if v != 0:
            out[int(v)] = to_world(affine, np.argwhere(points == v)).mean(axis=0)
    return out


def _half_voxel_height(affine: np.ndarray) -> float:
    """Half the superior-inferior extent of one voxel (mm)."""
    return float(np.abs(np.asarray(affine, dtype=float)[2, :3]).sum()) / 2


def vertebra_at_point(seg: np.ndarray, affine: np.ndarray, point: np.ndarray, slab_mm: float = 5.0,
                      radius_mm: float = 50.0) -> int | None:
    """The predicted vertebra at the superior-inferior position of a world point inside the cord.

    Candidates: the vertebra voxels (numbered, unnumbered or sacrum) whose centre lies in the axial slab of
    `slab_mm` (at least one voxel high) around the point's S-I coordinate and within `radius_mm` of it in the
    axial plane. The answer is the most frequent label among the candidates anterior of the point (the vertebral
    body in front of the canal); where none is anterior, the most frequent of all candidates; None without any.
    """
    seg = np.asarray(seg)
    point = np.asarray(point, dtype=float)
    voxels = np.argwhere(np.isin(seg, VERTEBRA_VALUES))
    if not len(voxels):
        return None
    offset = to_world(affine, voxels) - point
    half = max(slab_mm / 2, _half_voxel_height(affine))
    near = (np.abs(offset[:, 2]) <= half) & (np.hypot(offset[:, 0], offset[:, 1]) <= radius_mm)
    if not near.any():
        return None
    anterior = near & (offset[:, 1] > 0)
    chosen = voxels[anterior if anterior.any() else near]
    values, counts = np.unique(seg[tuple(chosen.T)], return_counts=True)
    return int(values[counts.argmax()])


@dataclass(frozen=True)
class LandmarkScore:
    point: int  # value of the point in the landmark file (SCT level)
    expected: int  # final vertebra label
    found: int | None  # what `vertebra_at_point` found there

    @property
    def verdict(self) -> str:
        if self.found is None:
            return "none"
        return "right" if self.found == self.expected else "wrong"

    def text(self) -> str:
        wrong = f" ({name_of(self.found)})" if self.verdict == "wrong" else ""
        return f"{name_of(self.expected)} {self.verdict}{wrong}"


def score_landmarks(seg: np.ndarray, affine: np.ndarray, points: np.ndarray, points_affine: np.ndarray,
                    slab_mm: float = 5.0, radius_mm: float = 50.0) -> list[LandmarkScore]:
    """Level identification at every point of an SCT point-label map (its own grid may differ from the seg's)."""
    return [LandmarkScore(v, sct_vertebra(v), vertebra_at_point(seg, affine, xyz, slab_mm, radius_mm))
            for v, xyz in sorted(landmark_points(points, points_affine).items())]


def coverage(seg: np.ndarray, region: np.ndarray, values=None) -> list[tuple[int, float]]:
    """The labels (among `values`, default every non-zero one) inside `region`, with the fraction of the region
    each covers, largest first."""
    inside = np.asarray(seg)[np.asarray(region, dtype=bool)]
    n = inside.size
    if values is not None:
        inside = inside[np.isin(inside, values)]
    inside = inside[inside != 0]
    if not n or not inside.size:
        return []
    labels, counts = np.unique(inside, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return [(int(labels[i]), counts[i] / n) for i in order]


@dataclass(frozen=True)
class DiscScore:
    truth: int  # value of the disc in the manual mask
    expected: int  # final disc label
    found: int | None  # the predicted disc label covering most of the manual disc
    dice: float  # of the expected label against the manual disc
    dice_found: float = 0.0  # of the covering label (`found`): the disc's shape, whatever its number

    @property
    def right(self) -> bool:
        return self.found == self.expected

    def text(self) -> str:
        verdict = "right" if self.right else ("none" if self.found is None else f"wrong ({name_of(self.found)})")
        return f"{name_of(self.expected)} {verdict} {self.dice:.2f}"


def score_discs(seg: np.ndarray, truth: np.ndarray, truth_to_final: dict[int, int]) -> list[DiscScore]:
    """Per manual disc (value -> expected final label): numbered right, and Dice of the expected label."""
    seg, truth = np.asarray(seg), np.rint(np.asarray(truth)).astype(np.int64)
    out = []
    for value, expected in truth_to_final.items():
        region = truth == value
        if not region.any():
            continue
        covering = coverage(seg, region, DISC_VALUES)
        found = covering[0][0] if covering else None
        shape = dice(seg == found, region) if found is not None else 0.0
        out.append(DiscScore(value, expected, found, dice(seg == expected, region), shape))
    return out


@dataclass(frozen=True)
class BodyScore:
    truth: int  # instance id in the manual mask
    centre_si: float  # world S-I coordinate of its centre (mm)
    found: int | None  # the predicted vertebra covering most of it
    containment: float  # fraction of the body inside `found`
    second: int | None  # the predicted vertebra covering it next most
    second_fraction: float
    expected: int | None = None  # its level, where `body_identity` could infer it


@dataclass
class BodiesScore:
    bodies: list[BodyScore]  # superior first
    overlapping: int  # distinct predicted vertebrae covering >= min_fraction of some body
    split_fraction: float
    identity: str  # how the levels of the bodies were inferred, or why they could not be
    notes: list[str] = field(default_factory=list)

    @property
    def distinct(self) -> int:
        """How many different predicted vertebrae the bodies map to."""
        return len({b.found for b in self.bodies if b.found is not None})

    @property
    def split(self) -> list[BodyScore]:
        return [b for b in self.bodies if b.second_fraction >= self.split_fraction]

    @property
    def missed(self) -> list[BodyScore]:
        return [b for b in self.bodies if b.found is None]

    @property
    def one_to_one(self) -> bool:
        """Each body maps to exactly one predicted vertebra (none missed, none split) and no two to the same.

        The unnumbered label (200) can hold several vertebrae, so two bodies mapped to it count as merged."""
        return not self.missed and not self.split and self.distinct == len(self.bodies)

    @property
    def mean_containment(self) -> float:
        return float(np.mean([b.containment for b in self.bodies])) if self.bodies else 0.0

    @property
    def lumbar(self) -> list[BodyScore]:
        """The bodies whose level was inferred as L1..L5."""
        return [b for b in self.bodies if b.expected in LUMBAR]

    @property
    def lumbar_right(self) -> int:
        return sum(b.found == b.expected for b in self.lumbar)

    def text(self) -> str:
        parts = [f"{len(self.bodies)} bodies -> {self.distinct} distinct vertebrae "
                 f"({'one to one' if self.one_to_one else 'not one to one'}; {len(self.split)} split, "
                 f"{len(self.missed)} missed; {self.overlapping} overlapping)",
                 f"containment mean {self.mean_containment:.2f}, min "
                 f"{min((b.containment for b in self.bodies), default=0.0):.2f}",
                 "top to bottom: " + " ".join(name_of(b.found) for b in self.bodies)]
        if self.lumbar:
            parts.append(f"L1-L5 right {self.lumbar_right}/{len(self.lumbar)} ({self.identity})")
        else:
            parts.append(f"L1-L5: {self.identity}")
        return "; ".join(parts)


def body_identity(seg: np.ndarray, bodies: np.ndarray, affine: np.ndarray, order: list[int],
                  below_mm: float = 25.0, overlap_mm: float = 3.0,
                  radius_mm: float = 40.0) -> tuple[dict[int, int], str]:
    """The levels of manual bodies that carry no level ids, inferred from the predicted sacrum.

    `order`: the body ids, superior first. If the lowest body lies mostly inside the predicted sacrum it is taken
    as S1; if the top of the predicted sacrum (within `radius_mm` of the body in the axial plane) lies between
    `below_mm` below the body's lowest point and `overlap_mm` above it, the body is taken as L5. The bodies above
    get the next vertebrae up (five lumbar vertebrae assumed). Without such a sacrum nothing is inferred.
    The identity is the prediction's: this checks the lumbar numbering against the prediction's own sacrum, and
    only means "numbered right" if that sacrum is right.
    """
    seg, bodies = np.asarray(seg), np.asarray(bodies)
    sacrum = np.argwhere(seg == L.SACRUM)
    if not order:
        return {}, "no bodies"
    if not len(sacrum):
        return {}, "level unknown: the manual bodies carry no level ids and the prediction has no sacrum"
    lowest = bodies == order[-1]
    in_sacrum = coverage(seg, lowest, (L.SACRUM,))
    if in_sacrum and in_sacrum[0][1] >= 0.5:
        bottom, how = L.SACRUM, "lowest body taken as S1: it lies in the predicted sacrum"
    else:
        body_world = to_world(affine, np.argwhere(lowest))
        sacrum_world = to_world(affine, sacrum)
        centre = body_world.mean(axis=0)
        near = np.hypot(*(sacrum_world[:, :2] - centre[:2]).T) <= radius_mm
        gap = body_world[:, 2].min() - sacrum_world[near, 2].max() if near.any() else np.inf
        if not -overlap_mm <= gap <= below_mm:
            return {}, ("level unknown: the manual bodies carry no level ids and the predicted sacrum is not "
                        "next to the lowest one")
        bottom, how = L.VERTEBRAE_DEFAULT[-2], "lowest body taken as L5: the predicted sacrum is right below it"
    seq = L.VERTEBRAE_DEFAULT
    start = seq.index(bottom)
    levels = {body: seq[start - i] for i, body in enumerate(reversed(order)) if start - i >= 0}
    return levels, how + " (the manual mask has no level ids; 5 lumbar vertebrae assumed)"


def score_bodies(seg: np.ndarray, bodies: np.ndarray, affine: np.ndarray, split_fraction: float = 0.2,
                 min_fraction: float = 0.05) -> BodiesScore:
    """Counting and containment of manual vertebral bodies (instance ids in any order) in the predicted vertebrae.

    Per body: the predicted vertebra covering most of it (`found`), the fraction inside it (containment) and the
    next one; a body is split when the next covers >= `split_fraction`. `overlapping` counts the predicted
    vertebrae covering >= `min_fraction` of some body.
    """
    seg, bodies = np.asarray(seg), np.rint(np.asarray(bodies)).astype(np.int64)
    if seg.shape != bodies.shape:
        raise ValueError(f"segmentation {seg.shape} and manual bodies {bodies.shape} are on different grids")
    rows, overlapping = [], set()
    for body in (int(v) for v in np.unique(bodies) if v):
        region = bodies == body
        covering = coverage(seg, region, VERTEBRA_VALUES)
        overlapping.update(v for v, f in covering if f >= min_fraction)
        centre = float(to_world(affine, np.argwhere(region))[:, 2].mean())
        found, frac = covering[0] if covering else (None, 0.0)
        second, second_frac = covering[1] if len(covering) > 1 else (None, 0.0)
        rows.append(BodyScore(body, centre, found, float(frac), second, float(second_frac)))
    rows.sort(key=lambda b: -b.centre_si)
    levels, identity = body_identity(seg, bodies, affine, [b.truth for b in rows])
    rows = [BodyScore(b.truth, b.centre_si, b.found, b.containment, b.second, b.second_fraction,
                      levels.get(b.truth)) for b in rows]
    return BodiesScore(rows, len(overlapping), split_fraction, identity)
