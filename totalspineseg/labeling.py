"""Iterative labeling: turn the networks' class maps into numbered discs and vertebrae.

Works on the canonical RAS+ 1 mm grid (axis 2 = superior, axis 1 = anterior); thresholds are in voxels.
Pure numpy/scipy; the affine is only needed to map a localizer in world coordinates.

The steps, for one class map:

1. **Components.** Discs (all disc classes merged) and, for step 2, vertebrae (one class at a time: odd,
   even, sacrum) are split into 26-connected components; tiny ones are dropped.
2. **Order.** Each component is placed along the smoothed canal centreline by the centre of mass of its part
   anterior to the canal (the vertebral body, not a spinous process hanging below).
3. **Gaps.** Spacing between consecutive discs is compared with the local spacing; a gap about twice as wide
   means a disc is missing there, and the count skips a slot instead of shifting every level below.
4. **Anchors.** Landmark discs (C2-C3 at the top, L5-S at the bottom, C7-T1, T12-L1) that pass size and
   majority checks, the disc right below C1 (C2-C3) and right above the sacrum (L5-S), and every disc
   covered by a localizer segmentation, propose a numbering. The numbering
   (the usual disc sequence, or the one with an L5-L6 disc) that agrees with the most anchor weight wins;
   disagreeing anchors are reported and ignored.
5. **Numbers.** Discs take their slot's label. Vertebrae take the label of the vertebra below the disc above
   them, interpolated across gaps; vertebrae above the first disc count up to C2 and C1.

With no anchor at all the structures are kept as "unnumbered" labels and a warning says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from . import labels as L
from .geometry import FULL, Centerline, bbox, dilate, span_inside
from .postprocess import fill_canal, largest_component

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelingParams:
    min_component_voxels: int = 100  # discs/vertebra pieces smaller than this are noise
    min_landmark_voxels: int = 200  # a landmark class needs more voxels than this to anchor
    min_landmark_fraction: float = 0.25  # ... and must cover this share of its disc
    component_dilation: int = 1  # pieces within 2 voxels of each other are one component
    gap_ratio: float = 1.6  # spacing this many times the local spacing means a missing disc
    landmark_weight_terminal: float = 2.0  # C2-C3 and L5-S
    landmark_weight_inner: float = 1.0  # C7-T1 and T12-L1
    # A disc covered by landmark classes whose own class lost to another disc: it is one of the four landmark
    # discs, which one unknown. An unsure network fires several landmark heads on one disc, and nnU-Net's
    # region order then writes the last one (L5-S) over T12-L1.
    landmark_weight_any: float = 1.0
    localizer_min_fraction: float = 0.2  # share of a disc that a localizer label must cover
    bone_anchor_max_gap: float = 30.0  # mm between C1's bottom / the sacrum's top and the disc they anchor
    # An adult L5-S disc holds 10-20 cm3 and a C2-C3 disc about 1 cm3: an anchor on a disc of the wrong
    # size is a network error (for example "L5-S" on the lowest disc of a cervical scan).
    l5s_min_disc_mm3: float = 5000.0
    # The step-1 numbering votes in step 2 with this total weight, shared among its discs: it cannot outvote
    # step 2's own terminal landmark plus a bone anchor just because it covers many discs.
    prior_total_weight: float = 1.5
    # A disc piece smaller than this share of its largest neighbour (two on each side) is a fragment (a
    # misclassified speck inside a vertebra, a split-off rim), not a level: it would shift every number.
    fragment_ratio: float = 0.25
    c2c3_max_disc_mm3: float = 5000.0
    largest_component_dilation: int = 5


@dataclass
class Localizer:
    """A final-scheme segmentation of a localizer, in the same scanner space as the image."""

    seg: np.ndarray
    affine: np.ndarray


@dataclass(frozen=True)
class Anchor:
    component: int  # index into the superior->inferior disc list
    label: int
    weight: float
    source: str  # "landmark", "localizer", "C1", "sacrum" or "step1"


#: Anchor label of a disc that is one of the landmark discs, which one unknown.
ANY_LANDMARK = 0


@dataclass
class LabelingResult:
    seg: np.ndarray
    warnings: list[str] = field(default_factory=list)
    anchors: list[Anchor] = field(default_factory=list)
    numbered: bool = False
    disc_sequence: tuple[int, ...] = L.DISCS_DEFAULT


@dataclass
class _Components:
    """Connected components of one kind, ordered superior -> inferior."""

    label_map: np.ndarray  # int32, 0 = background, 1..n = component id (in sorted order)
    positions: np.ndarray  # arc length along the canal (mm), decreasing with the index
    sizes: np.ndarray
    classes: np.ndarray  # majority network class of each component

    @property
    def n(self) -> int:
        return len(self.positions)


# -----------------------------------------------------------------------------------------------------------
# Geometry


def _canal_line(classes: np.ndarray, canal_classes, warnings: list[str],
                min_piece_fraction: float = 0.2) -> Centerline | None:
    """The canal centreline, from the canal pieces at least `min_piece_fraction` of the largest.

    Stray canal-class blobs beside the spine pull the per-slice centre sideways; projecting vertebral bodies
    30-40 mm in front of a kinked line then moves discs along it by 10 mm or more, enough to read as a missing
    disc. A canal cut in two by a network miss keeps both halves.
    """
    mask = np.isin(classes, list(canal_classes))
    if not mask.any():
        warnings.append("no spinal canal found: structures are ordered by height instead of along the canal")
        return None
    box = bbox(mask)
    pieces, n = ndimage.label(mask[box], FULL)
    if n > 1:
        sizes = np.bincount(pieces.ravel())
        sizes[0] = 0
        keep = np.flatnonzero(sizes >= min_piece_fraction * sizes.max())
        mask = np.zeros_like(mask)
        mask[box] = np.isin(pieces, keep)
    return Centerline(mask)


def _components(
    classes: np.ndarray, values, line: Centerline | None, params: LabelingParams, combine: bool
) -> _Components:
    """26-connected components of `values` (merged into one mask when `combine`), sorted top to bottom."""
    label_map = np.zeros(classes.shape, dtype=np.int32)
    groups = [list(values)] if combine else [[v] for v in values]
    n = 0
    for group in groups:
        mask = np.isin(classes, group)
        box = bbox(mask, margin=params.component_dilation + 1)
        if box is None:
            continue
        mask = mask[box]
        grown = dilate(mask, params.component_dilation)
        comp, k = ndimage.label(grown, FULL)
        comp[~mask] = 0
        sizes = np.bincount(comp.ravel(), minlength=k + 1)
        keep = np.flatnonzero(sizes >= params.min_component_voxels)
        keep = keep[keep > 0]
        remap = np.zeros(k + 1, dtype=np.int32)
        remap[keep] = np.arange(n + 1, n + 1 + len(keep))
        sub = label_map[box]
        sel = comp > 0
        sub[sel] = np.maximum(sub[sel], remap[comp[sel]])
        n += len(keep)
    return _sort_components(label_map, n, classes, line)


def _sort_components(label_map: np.ndarray, n: int, classes: np.ndarray, line: Centerline | None) -> _Components:
    if n == 0:
        return _Components(label_map, np.zeros(0), np.zeros(0, int), np.zeros(0, int))
    idx = np.nonzero(label_map)
    ids = label_map[idx]
    xyz = np.column_stack(idx).astype(float)
    sizes = np.bincount(ids, minlength=n + 1)[1:]
    com = np.column_stack([np.bincount(ids, weights=xyz[:, a], minlength=n + 1)[1:] for a in range(3)])
    com /= np.maximum(sizes, 1)[:, None]
    if line is not None:
        # The part anterior to the canal is the body: its centre ignores processes hanging below.
        anterior = xyz[:, 1] > line.y_at(xyz[:, 2])
        a_ids = ids[anterior]
        a_n = np.bincount(a_ids, minlength=n + 1)[1:]
        a_com = np.column_stack(
            [np.bincount(a_ids, weights=xyz[anterior, a], minlength=n + 1)[1:] for a in range(3)]
        )
        has = a_n > 0
        com[has] = a_com[has] / a_n[has, None]
        positions = line.position(com)
    else:
        positions = com[:, 2]
    cls = classes[idx]
    values = np.unique(cls)
    counts = np.stack([np.bincount(ids[cls == c], minlength=n + 1)[1:] for c in values])
    majority = values[np.argmax(counts, axis=0)].astype(int)
    order = np.argsort(-positions, kind="stable")
    remap = np.zeros(n + 1, dtype=np.int32)
    remap[order + 1] = np.arange(1, n + 1)
    return _Components(remap[label_map], positions[order], sizes[order], majority[order])


def _touches_border(label_map: np.ndarray, n: int) -> np.ndarray:
    """Which components (1..n) reach a face of the array, i.e. may be cut by the field of view."""
    touch = np.zeros(n + 1, dtype=bool)
    for axis in range(label_map.ndim):
        for index in (0, label_map.shape[axis] - 1):
            touch[np.unique(np.take(label_map, index, axis=axis))] = True
    return touch[1:]


def _drop_fragments(
    discs: _Components, classes: np.ndarray, line: Centerline | None, params: LabelingParams
) -> tuple[_Components, int]:
    """Remove disc components far smaller than the discs beside them.

    Disc size changes slowly along the spine (about x1.3 per level at most), so a piece under
    `fragment_ratio` of its largest neighbour within two levels is not a level of its own. The first and last
    disc are kept when they reach the edge of the array: a disc cut by the field of view is small but real.
    """
    n = discs.n
    if n < 2:
        return discs, 0
    sizes = discs.sizes.astype(float)
    border = _touches_border(discs.label_map, n)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        neighbours = np.concatenate([sizes[max(i - 2, 0) : i], sizes[i + 1 : i + 3]])
        if sizes[i] >= params.fragment_ratio * neighbours.max():
            continue
        if i in (0, n - 1) and border[i]:
            continue
        keep[i] = False
    if keep.all():
        return discs, 0
    remap = np.zeros(n + 1, dtype=np.int32)
    remap[1:][keep] = np.arange(1, int(keep.sum()) + 1)
    return _sort_components(remap[discs.label_map], int(keep.sum()), classes, line), int(n - keep.sum())


# -----------------------------------------------------------------------------------------------------------
# Disc slots, anchors and numbering


def disc_slots(positions: np.ndarray, gap_ratio: float = 1.6) -> np.ndarray:
    """Slot index of each disc (top = 0), skipping slots where the spacing shows a missing disc.

    The expected spacing at a gap is the median of up to two neighbouring spacings on each side: spacing
    grows from the neck to the lumbar spine, so only local spacings are comparable.
    """
    n = len(positions)
    slots = np.zeros(n, dtype=int)
    if n < 2:
        return slots
    spacing = -np.diff(positions)
    for i, gap in enumerate(spacing):
        neighbours = np.concatenate([spacing[max(i - 2, 0) : i], spacing[i + 1 : i + 3]])
        expected = float(np.median(neighbours)) if neighbours.size else gap
        missing = 0
        if neighbours.size and expected > 0 and gap > gap_ratio * expected:
            missing = max(int(round(gap / expected)) - 1, 1)
        slots[i + 1] = slots[i] + 1 + missing
    return slots


def _landmark_anchors(
    classes: np.ndarray, discs: _Components, params: LabelingParams, warnings: list[str]
) -> list[Anchor]:
    anchors = []
    comp = discs.label_map
    landmark_classes = list(L.LANDMARK_CLASS_TO_DISC)
    for cls, disc in L.LANDMARK_CLASS_TO_DISC.items():
        where = classes == cls
        count = int(where.sum())
        if count <= params.min_landmark_voxels:
            continue
        ids = comp[where]
        ids = ids[ids > 0]
        if ids.size == 0:
            continue
        target = int(np.bincount(ids).argmax())
        in_comp = classes[comp == target]
        in_comp = in_comp[np.isin(in_comp, landmark_classes)]
        if int(np.bincount(in_comp, minlength=max(landmark_classes) + 1).argmax()) != cls:
            continue
        if discs.sizes[target - 1] * params.min_landmark_fraction > int(np.sum(in_comp == cls)):
            continue  # a few voxels of the class on an ordinary disc: the network is unsure
        index = target - 1
        name = L.FINAL[disc].short
        if disc == L.DISC_C2_C3 and index != 0:
            warnings.append(f"{name} landmark is not the top disc: ignored")
            continue
        if disc == L.DISC_L5_S and index != discs.n - 1:
            below = comp[where & (comp > target)]
            if below.size > 0.1 * count:
                warnings.append(f"{name} landmark has discs below it: ignored")
                continue
        terminal = disc in (L.DISC_C2_C3, L.DISC_L5_S)
        weight = params.landmark_weight_terminal if terminal else params.landmark_weight_inner
        anchors.append(Anchor(index, disc, weight, "landmark"))
    return anchors + _unnamed_landmark_anchors(classes, discs, params, {a.component for a in anchors})


def _unnamed_landmark_anchors(classes: np.ndarray, discs: _Components, params: LabelingParams,
                              named: set[int]) -> list[Anchor]:
    """Discs mostly covered by landmark classes that no named landmark anchor took: "one of the four"."""
    on_landmark = np.isin(classes, list(L.LANDMARK_CLASS_TO_DISC)) & (discs.label_map > 0)
    counts = np.bincount(discs.label_map[on_landmark], minlength=discs.n + 1)[1:]
    return [Anchor(i, ANY_LANDMARK, params.landmark_weight_any, "landmark") for i in range(discs.n)
            if i not in named and counts[i] > params.min_landmark_voxels
            and counts[i] >= params.min_landmark_fraction * discs.sizes[i]]


def _largest_piece(mask: np.ndarray) -> np.ndarray:
    """Voxel indices of the largest 26-connected piece of `mask`: stray specks of a bone class elsewhere in
    the spine must not move the edge that an anchor is measured from."""
    box = bbox(mask, margin=0)
    if box is None:
        return np.zeros((0, mask.ndim), dtype=int)
    comp, k = ndimage.label(mask[box], FULL)
    if k > 1:
        sizes = np.bincount(comp.ravel())
        sizes[0] = 0
        comp = comp == sizes.argmax()
    vox = np.argwhere(comp > 0)
    return vox + np.array([sl.start for sl in box])


def _bone_anchors(
    classes: np.ndarray, discs: _Components, line: Centerline | None, params: LabelingParams, c1_class, sacrum_class
) -> list[Anchor]:
    """Anchors from bone the networks find more easily than landmark discs: the top disc just below C1 is
    C2-C3, and the disc just above the sacrum is L5-S."""
    anchors: list[Anchor] = []
    if discs.n == 0 or line is None:
        return anchors
    for cls, disc in ((c1_class, L.DISC_C2_C3), (sacrum_class, L.DISC_L5_S)):
        if cls is None:
            continue
        vox = _largest_piece(classes == cls)
        if len(vox) <= params.min_landmark_voxels:
            continue
        pos = line.position(vox[:: max(1, len(vox) // 4000)].astype(float))
        if disc == L.DISC_C2_C3:
            edge = float(np.percentile(pos, 2))
            below = np.flatnonzero(discs.positions < edge)
            if below.size == 0 or below[0] != 0 or edge - discs.positions[0] > params.bone_anchor_max_gap:
                continue
            anchors.append(Anchor(0, disc, params.landmark_weight_inner, "C1"))
        else:
            edge = float(np.percentile(pos, 98))
            above = np.flatnonzero(discs.positions > edge)
            if above.size == 0 or discs.positions[above[-1]] - edge > params.bone_anchor_max_gap:
                continue
            anchors.append(Anchor(int(above[-1]), disc, params.landmark_weight_inner, "sacrum"))
    return anchors


def _plausible_sizes(anchors: list[Anchor], discs: _Components, params: LabelingParams, warnings) -> list[Anchor]:
    """Drop terminal anchors whose disc is far too small (L5-S) or too large (C2-C3) for that level."""
    kept = []
    for a in anchors:
        size = float(discs.sizes[a.component])  # voxels = mm3 on the 1 mm grid
        too_small = a.label == L.DISC_L5_S and size < params.l5s_min_disc_mm3
        too_large = a.label == L.DISC_C2_C3 and size > params.c2c3_max_disc_mm3
        if too_small or too_large:
            warnings.append(f"{a.source} anchor {L.FINAL[a.label].short} on a disc of {size / 1000:.1f} cm3"
                            " is implausible for that level: ignored")
            continue
        kept.append(a)
    return kept


def _world_to_voxel(affine_from: np.ndarray, affine_to: np.ndarray) -> np.ndarray:
    return np.linalg.inv(affine_to) @ affine_from


def _localizer_anchors(
    discs: _Components, affine: np.ndarray, loc: Localizer, params: LabelingParams, source: str = "localizer",
    weight: float = 1.0,
) -> list[Anchor]:
    """Anchor every disc that a localizer disc label covers, mapping voxels through world coordinates."""
    idx = np.nonzero(discs.label_map)
    ids = discs.label_map[idx]
    vox = np.column_stack(idx + (np.ones(ids.size),)).astype(float)
    loc_vox = np.rint((vox @ _world_to_voxel(affine, loc.affine).T)[:, :3]).astype(int)
    inside = np.all((loc_vox >= 0) & (loc_vox < np.array(loc.seg.shape)), axis=1)
    loc_labels = np.zeros(ids.size, dtype=int)
    loc_labels[inside] = loc.seg[tuple(loc_vox[inside].T)]
    numbered = np.isin(loc_labels, L.DISCS_POSSIBLE)
    anchors = []
    for comp_id in range(1, discs.n + 1):
        labels_here = loc_labels[(ids == comp_id) & numbered]
        if labels_here.size == 0:
            continue
        values, counts = np.unique(labels_here, return_counts=True)
        best = int(np.argmax(counts))
        fraction = counts[best] / discs.sizes[comp_id - 1]
        if fraction >= params.localizer_min_fraction:
            anchors.append(Anchor(comp_id - 1, int(values[best]), weight * float(fraction), source))
    return anchors


def choose_numbering(
    anchors: list[Anchor], slots: np.ndarray
) -> tuple[tuple[int, ...], int, list[Anchor], list[Anchor]]:
    """Pick the disc sequence and offset that the most anchor weight agrees with.

    Returns (sequence, offset, agreeing anchors, rejected anchors); disc i gets sequence[slots[i] + offset].
    The usual sequence wins ties; the one with L5-L6 wins only when anchors need it (for example C2-C3 or
    T12-L1 and L5-S one disc further apart than usual).
    """
    best = None
    named = [a for a in anchors if a.label != ANY_LANDMARK]
    unnamed = [a for a in anchors if a.label == ANY_LANDMARK]
    for rank, seq in enumerate((L.DISCS_DEFAULT, L.DISCS_POSSIBLE)):
        votes: dict[int, float] = {}
        for a in named:
            if a.label in seq:
                off = seq.index(a.label) - int(slots[a.component])
                votes[off] = votes.get(off, 0.0) + a.weight
        for off, weight in votes.items():
            weight += sum(a.weight for a in unnamed if _agrees(a, seq, off, slots))
            key = (weight, -rank)
            if best is None or key > best[0]:
                best = (key, seq, off)
    if best is None:
        return L.DISCS_DEFAULT, 0, [], list(anchors)
    _, seq, off = best
    agree = [a for a in anchors if _agrees(a, seq, off, slots)]
    reject = [a for a in anchors if a not in agree]
    return seq, off, agree, reject


def _agrees(anchor: Anchor, seq: tuple[int, ...], off: int, slots: np.ndarray) -> bool:
    if anchor.label != ANY_LANDMARK:
        return anchor.label in seq and seq.index(anchor.label) - int(slots[anchor.component]) == off
    index = int(slots[anchor.component]) + off
    return 0 <= index < len(seq) and seq[index] in L.LANDMARK_DISCS


# -----------------------------------------------------------------------------------------------------------
# Vertebrae


def _merge_same_class_neighbours(verts: _Components, disc_positions: np.ndarray, line, classes) -> _Components:
    """Join consecutive vertebra pieces of the same class: odd and even alternate, so two in a row of the
    same class are one vertebra (a body and a detached arch). Never across two or more discs."""
    if verts.n < 2:
        return verts
    target = np.arange(verts.n + 1)
    last = 0
    for i in range(1, verts.n):
        a, b = verts.positions[last], verts.positions[i]
        discs_between = int(np.sum((disc_positions < a) & (disc_positions > b)))
        if verts.classes[i] == verts.classes[last] and discs_between <= 1:
            target[i + 1] = target[last + 1]
        else:
            last = i
    merged = target[verts.label_map]
    uniq = np.unique(target[1:])
    remap = np.zeros(verts.n + 1, dtype=np.int32)
    remap[uniq] = np.arange(1, len(uniq) + 1)
    merged = remap[merged]
    return _sort_components(merged.astype(np.int32), len(uniq), classes, line)


def _absorb_generic(vert_seg: np.ndarray, generic: np.ndarray, order_bottom_up) -> np.ndarray:
    """Give undecided vertebra voxels to the vertebra whose filled, dilated outline contains them.

    Vertebrae are processed from the bottom up so that the upper one wins where outlines overlap.
    """
    out = vert_seg.copy()
    if not generic.any():
        return out
    for value in order_bottom_up:
        box = bbox(vert_seg == value, margin=2)
        if box is None:
            continue
        m = vert_seg[box] == value
        filled = span_inside(m, 0) | span_inside(m, 1) | span_inside(m, 2)
        region = dilate(filled, 1)
        sub = out[box]
        take = region & generic[box]
        sub[take] = value
        out[box] = sub
    return out


def _vertebra_labels(
    verts: _Components, disc_positions: np.ndarray, disc_seq_index: np.ndarray, vert_seq: tuple[int, ...]
) -> np.ndarray:
    """Label of each vertebra component; 0 where no number can be given.

    `disc_seq_index[i]` is the sequence index of disc i (or -1 when it is unnumbered); `vert_seq` is
    [C1, C2, vertebra below sequence[0], ...], so the vertebra below disc k is vert_seq[k + 2].
    """
    out = np.zeros(verts.n, dtype=int)
    ok = disc_seq_index >= 0
    pos = disc_positions[ok]
    k = disc_seq_index[ok].astype(float)
    if pos.size == 0:
        return out
    top_pos, bottom_pos = pos[0], pos[-1]
    above = [i for i in range(verts.n) if verts.positions[i] > top_pos]
    below = [i for i in range(verts.n) if verts.positions[i] < bottom_pos]
    between = [i for i in range(verts.n) if bottom_pos <= verts.positions[i] <= top_pos]
    if pos.size >= 2:
        # np.interp needs increasing x: positions decrease going down.
        t = np.interp(verts.positions[between], pos[::-1], k[::-1])
        for i, ti in zip(between, t, strict=False):
            j = int(np.floor(ti)) + 2
            if 0 <= j < len(vert_seq):
                out[i] = vert_seq[j]
    for rank, i in enumerate(reversed(above)):  # nearest to the top disc first
        j = int(k[0]) + 1 - rank
        if j >= 0:
            out[i] = vert_seq[j]
    for rank, i in enumerate(below):
        j = int(k[-1]) + 2 + rank
        if j < len(vert_seq):
            out[i] = vert_seq[j]
    return out


# -----------------------------------------------------------------------------------------------------------
# Entry points


def _number_discs(
    classes, disc_classes, line, affine, localizer, params, warnings, c1_class=None, sacrum_class=None, prior=None
) -> tuple[_Components, np.ndarray, tuple[int, ...], list[Anchor], bool]:
    discs = _components(classes, disc_classes, line, params, combine=True)
    discs, dropped = _drop_fragments(discs, classes, line, params)
    if dropped:
        warnings.append(f"{dropped} small disc fragment(s) ignored (much smaller than the discs beside them)")
    if discs.n == 0:
        warnings.append("no intervertebral disc found: nothing can be numbered")
        return discs, np.zeros(0, int), L.DISCS_DEFAULT, [], False
    slots = disc_slots(discs.positions, params.gap_ratio)
    for i in np.flatnonzero(np.diff(slots) > 1):
        warnings.append(f"{int(slots[i + 1] - slots[i] - 1)} disc(s) missing below disc #{i + 1} (wide spacing)")
    anchors = _landmark_anchors(classes, discs, params, warnings)
    anchors += _bone_anchors(classes, discs, line, params, c1_class, sacrum_class)
    anchors = _plausible_sizes(anchors, discs, params, warnings)
    if localizer is not None:
        if affine is None:
            raise ValueError("a localizer needs the affine of the class map")
        loc_anchors = _localizer_anchors(discs, affine, localizer, params)
        if not loc_anchors:
            warnings.append("the localizer overlaps no disc of this image: check that both share scanner space")
        anchors += loc_anchors
    if prior is not None and affine is not None:
        prior_anchors = _localizer_anchors(discs, affine, prior, params, "step1")
        share = params.prior_total_weight / max(len(prior_anchors), 1)
        anchors += [Anchor(a.component, a.label, a.weight * share, a.source) for a in prior_anchors]
    seq, off, agree, reject = choose_numbering(anchors, slots)
    for a in reject:
        name = "(unnamed)" if a.label == ANY_LANDMARK else L.FINAL[a.label].short
        warnings.append(f"{a.source} anchor {name} on disc #{a.component + 1} disagrees with the others: ignored")
    if not agree:
        warnings.append(
            "no landmark disc (C2-C3, C7-T1, T12-L1, L5-S) and no localizer: discs and vertebrae are left"
            " unnumbered; give a localizer to number them (totalspineseg --loc; BIDS-App: a matching"
            " acq-localizer image of the same session)"
        )
        return discs, np.full(discs.n, -1), seq, [], False
    index = slots + off
    index = np.where((index >= 0) & (index < len(seq)), index, -1)
    return discs, index, seq, agree, True


def _spine_box(classes: np.ndarray, affine: np.ndarray | None, margin: int = 3):
    """Crop to the segmented voxels: real fields of view are mostly background."""
    box = bbox(classes != 0, margin)
    if box is None:
        return classes, affine, None
    sub_affine = None
    if affine is not None:
        sub_affine = np.asarray(affine, dtype=float).copy()
        sub_affine[:3, 3] += sub_affine[:3, :3] @ [sl.start for sl in box]
    return classes[box], sub_affine, box


def _paste(sub: np.ndarray, box, shape) -> np.ndarray:
    if box is None:
        return sub
    out = np.zeros(shape, dtype=sub.dtype)
    out[box] = sub
    return out


def _disc_values(index: np.ndarray, seq: tuple[int, ...], numbered: bool) -> np.ndarray:
    values = np.zeros(len(index) + 1, dtype=np.uint8)
    for i, k in enumerate(index):
        if k >= 0:
            values[i + 1] = seq[k]
        elif not numbered:
            values[i + 1] = L.DISC_UNNUMBERED
    return values


@dataclass
class _Work:
    """State shared by both steps once the discs are numbered, on the cropped spine box."""

    classes: np.ndarray
    box: tuple | None
    full_shape: tuple
    line: Centerline | None
    discs: _Components
    index: np.ndarray
    seq: tuple[int, ...]
    anchors: list[Anchor]
    numbered: bool
    warnings: list[str]
    out: np.ndarray


def _start(
    classes, affine, localizer, params, canal_classes, disc_classes, c1_class=None, sacrum_class=None, prior=None
) -> _Work:
    warnings: list[str] = []
    full_shape = np.shape(classes)
    classes = largest_component(np.asarray(classes), params.largest_component_dilation)
    classes, affine, box = _spine_box(classes, affine)
    line = _canal_line(classes, canal_classes, warnings)
    discs, index, seq, anchors, numbered = _number_discs(
        classes, disc_classes, line, affine, localizer, params, warnings, c1_class, sacrum_class, prior
    )
    out = _disc_values(index, seq, numbered)[discs.label_map]
    return _Work(classes, box, full_shape, line, discs, index, seq, anchors, numbered, warnings, out)


def _finish(work: _Work, canal_class: int, cord_class: int) -> LabelingResult:
    work.out[work.classes == canal_class] = L.CANAL
    work.out[work.classes == cord_class] = L.CORD
    seg = _paste(fill_canal(work.out), work.box, work.full_shape)
    return LabelingResult(seg, work.warnings, work.anchors, work.numbered, work.seq)


def label_step1(
    classes: np.ndarray,
    affine: np.ndarray | None = None,
    localizer: Localizer | None = None,
    params: LabelingParams = LabelingParams(),
) -> LabelingResult:
    """Step-1 class map (values 1-9) -> discs numbered, C1 = 11, other vertebrae = 50, cord 1, canal 2."""
    S = L.Step1
    work = _start(classes, affine, localizer, params, (S.CANAL, S.CORD), L.STEP1_DISC_CLASSES, c1_class=S.C1)
    work.out[work.classes == S.VERTEBRA] = L.SACRUM
    work.out[work.classes == S.C1] = L.C1
    return _finish(work, S.CANAL, S.CORD)


def label_step2(
    classes: np.ndarray,
    affine: np.ndarray | None = None,
    localizer: Localizer | None = None,
    params: LabelingParams = LabelingParams(),
    step1: Localizer | None = None,
) -> LabelingResult:
    """Step-2 class map (values 1-11) -> every disc and vertebra numbered, sacrum 50, cord 1, canal 2.

    `step1`, the step-1 result in world space, lets its numbered discs vote too (sharing
    `params.prior_total_weight`), so step 2 keeps step 1's numbering when its own landmark classes are weak. It
    also lends its C1, which step 1 segments as a class of its own, when step 2 finds none above C2-C3.
    """
    S = L.Step2
    work = _start(
        classes, affine, localizer, params, (S.CANAL, S.CORD), L.STEP2_DISC_CLASSES, sacrum_class=S.SACRUM,
        prior=step1,
    )
    classes, line, discs, index, seq, numbered, out = (
        work.classes, work.line, work.discs, work.index, work.seq, work.numbered, work.out
    )
    verts = _components(classes, L.STEP2_VERTEBRA_CLASSES, line, params, combine=False)
    verts = _merge_same_class_neighbours(verts, discs.positions, line, classes)
    vert_seq = (L.C1, L.C2) + tuple(L.vertebra_below_disc(d) for d in seq)
    if numbered:
        values = _vertebra_labels(verts, discs.positions, index, vert_seq)
    else:
        values = np.full(verts.n, L.VERTEBRA_UNNUMBERED)
    values = np.where(verts.classes == S.SACRUM, L.SACRUM, values)
    lut = np.zeros(verts.n + 1, dtype=np.uint8)
    lut[1:] = values
    vert_out = lut[verts.label_map]
    bottom_up = [int(v) for v in values[::-1] if v]
    vert_out = _absorb_generic(vert_out, classes == S.VERTEBRA, list(dict.fromkeys(bottom_up)))
    bone = vert_out > 0
    out[bone & (out == 0)] = vert_out[bone & (out == 0)]
    result = _finish(work, S.CANAL, S.CORD)
    if step1 is not None and affine is not None:
        _borrow_c1(result, affine, step1)
    return result


def _borrow_c1(result: LabelingResult, affine: np.ndarray, step1: Localizer) -> None:
    """Copy step 1's C1 into empty voxels of the step-2 result when step 2 numbered C2-C3 but found no C1."""
    seg = result.seg
    if not result.numbered or np.any(seg == L.C1):
        return
    if not np.any(seg == L.DISC_C2_C3):
        return
    vox = np.argwhere(step1.seg == L.C1)
    if len(vox) == 0:
        return
    to_seg = _world_to_voxel(step1.affine, np.asarray(affine, dtype=float))
    idx = np.rint(vox @ to_seg[:3, :3].T + to_seg[:3, 3]).astype(int)
    idx = idx[np.all((idx >= 0) & (idx < np.array(seg.shape)), axis=1)]
    target = tuple(idx.T)
    empty = seg[target] == 0
    seg[tuple(idx[empty].T)] = L.C1
    result.warnings.append("C1 taken from step 1: the step-2 network found none")
