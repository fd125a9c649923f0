"""Post-processing on label arrays: largest component, canal fill, soft maps, odd-disc channel, level points.

Every function takes and returns numpy arrays in the canonical RAS+ 1 mm working grid (axis 2 = superior,
axis 1 = anterior). Distances are in voxels, which are millimetres there.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from . import labels as L
from .geometry import FULL, Centerline, bbox, dilate, span_inside


def largest_component(seg: np.ndarray, dilation: int = 5) -> np.ndarray:
    """Keep the one spine-shaped blob: pieces closer than about 2*`dilation` voxels count as connected.

    Components are found on the binarised map dilated by `dilation`; the one with the most original voxels
    wins, and its original labels are kept.
    """
    box = bbox(seg != 0, margin=dilation + 1)
    if box is None:
        return seg.copy()
    sub = seg[box] != 0
    grown = dilate(sub, dilation)
    comp, n = ndimage.label(grown, FULL)
    if n <= 1:
        return seg.copy()
    counts = np.bincount(comp[sub], minlength=n + 1)
    counts[0] = 0
    keep = comp == int(np.argmax(counts))
    out = np.zeros_like(seg)
    out[box] = np.where(keep & sub, seg[box], 0)
    return out


def _keep_largest(mask: np.ndarray) -> np.ndarray:
    comp, n = ndimage.label(mask, FULL)
    if n <= 1:
        return mask
    counts = np.bincount(comp.ravel(), minlength=n + 1)
    counts[0] = 0
    return comp == int(np.argmax(counts))


def fill_canal(seg: np.ndarray, canal: int = L.CANAL, cord: int = L.CORD) -> np.ndarray:
    """Make the canal one closed tube around the cord.

    Cord pieces outside the largest cord component become canal; canal/cord outside the largest component
    of their union is removed; then every background voxel inside the union's in-plane (axial) extent becomes
    canal. Unlike upstream, bone and disc voxels are never overwritten.
    """
    out = seg.copy()
    box = bbox((out == canal) | (out == cord), margin=3)
    if box is None:
        return out
    sub = out[box]
    cord_mask = sub == cord
    if cord_mask.any():
        main_cord = _keep_largest(cord_mask)
        sub[cord_mask & ~main_cord] = canal
    union = (sub == canal) | (sub == cord)
    # A thin CSF gap can separate cord and canal wall; they are still one tube.
    main = _keep_largest(dilate(union, 2)) & union
    sub[union & ~main] = 0
    inside = span_inside(main, axis=0) & span_inside(main, axis=1)
    sub[inside & (sub == 0)] = canal
    out[box] = sub
    return out


def mask_soft(prob: np.ndarray, seg: np.ndarray, values, dilation: int = 1) -> np.ndarray:
    """Zero a probability map outside the (dilated) hard mask of `values`."""
    mask = dilate(np.isin(seg, list(values)), dilation)
    return np.where(mask, prob, 0).astype(np.float32)


def odd_disc_mask(seg: np.ndarray) -> np.ndarray:
    """Step-2 second channel: every other disc, starting with the top-most one present.

    Numbered discs are ordered by label (cranio-caudal); unnumbered discs are ordered by height.
    """
    present = [int(v) for v in np.unique(seg) if L.is_disc(int(v))]
    if not present:
        return np.zeros(seg.shape, dtype=np.uint8)
    if L.DISC_UNNUMBERED not in present:
        chosen = present[0::2]
        return np.isin(seg, chosen).astype(np.uint8)
    # Unnumbered discs: order every disc piece by height (one labeling pass, no per-piece masks).
    comp, n = ndimage.label(np.isin(seg, present), FULL)
    ids = comp[comp > 0]
    z = np.nonzero(comp)[2]
    heights = np.bincount(ids, weights=z, minlength=n + 1)[1:] / np.maximum(np.bincount(ids, minlength=n + 1)[1:], 1)
    order = np.argsort(-heights, kind="stable")
    chosen = np.zeros(n + 1, dtype=np.uint8)
    chosen[order[0::2] + 1] = 1
    return chosen[comp]


# -----------------------------------------------------------------------------------------------------------
# Disc level points


def disc_level_points(
    seg: np.ndarray,
    canal_values=(L.CORD, L.CANAL),
    c2_values=(L.C2, L.SACRUM),
    c1_min_voxels: int = 500,
) -> tuple[np.ndarray, dict[int, tuple[int, int, int]]]:
    """Single-voxel disc levels (SCT convention, `labels.level_of_disc`) from a final-scheme segmentation.

    Each numbered disc gets one point: its voxel nearest to the smoothed canal centreline (the posterior tip
    of the disc). The number comes from the disc's own label, so a missing disc never shifts the others.
    Levels 1 (top of the dens) and 2 (C1-C2) are added when C2-C3, a C1 of more than `c1_min_voxels`
    voxels and C2 bone are all present. `c2_values` names the labels that may hold C2 (12 in a step-2
    output; 50, "any vertebra", in a step-1 output).

    Returns the level volume (uint8) and {level: voxel index}.
    """
    levels = np.zeros(seg.shape, dtype=np.uint8)
    points: dict[int, tuple[int, int, int]] = {}
    canal_mask = np.isin(seg, list(canal_values))
    if not canal_mask.any():
        raise ValueError("no spinal canal in the segmentation: disc levels need the canal centreline")
    line = Centerline(canal_mask)
    tree = line.tree()
    disc_mask = np.isin(seg, L.DISCS_DEFAULT)
    vox = np.argwhere(disc_mask)
    values = seg[disc_mask]  # same C order as argwhere
    dist = tree.query(vox)[0] if len(vox) else np.zeros(0)
    for disc in np.unique(values):
        level = L.level_of_disc(int(disc))
        idx = np.flatnonzero(values == disc)
        p = tuple(int(c) for c in vox[idx[int(np.argmin(dist[idx]))]])
        levels[p] = level
        points[level] = p

    p3 = points.get(L.level_of_disc(L.DISC_C2_C3))
    c1_vox = np.argwhere(seg == L.C1)
    if p3 is not None and len(c1_vox) > c1_min_voxels:
        z_c1_top = int(c1_vox[:, 2].max())
        plane = seg[p3[0]]
        cand = np.argwhere(np.isin(plane, list(c2_values)))
        cand = cand[(cand[:, 1] < z_c1_top) & (cand[:, 1] > p3[2])]
        if len(cand):
            tip_yz = cand[int(np.argmax(cand[:, 1]))]
            tip = np.array([p3[0], tip_yz[0], tip_yz[1]], dtype=float)
            # The line through p3 parallel to the centreline: the same offset at every height.
            _, i3 = tree.query(np.asarray(p3, dtype=float))
            offset = np.asarray(p3, dtype=float) - line.points[i3]
            shifted = line.points + offset
            for level, target in ((L.LEVEL_DENS, tip), (L.LEVEL_C1_C2, (tip + np.asarray(p3)) / 2.0)):
                q = shifted[int(np.argmin(np.linalg.norm(shifted - target, axis=1)))]
                q = tuple(int(np.clip(round(c), 0, s - 1)) for c, s in zip(q, seg.shape, strict=False))
                if levels[q] == 0:
                    levels[q] = level
                    points[level] = q
    return levels, points


def complete_discs(step2: np.ndarray, step1: np.ndarray, min_share: float = 0.8) -> np.ndarray:
    """The final labels `step2` with each disc completed by the step-1 disc voxels that step 2 left empty.

    Both arrays hold final label values on the same grid. Step 1 sees the discs as a class of their own and
    segments thin ones more fully than step 2, which splits its attention with the odd/even vertebrae; a disc
    that step 2 thins out or drops is otherwise lost to the output. Voxels step 2 gives to any structure are
    never taken. Each step-1 disc adds its voxels under the step-2 disc label it overlaps, when at least
    `min_share` of that overlap has one label (so the numbering stays step 2's); a step-1 disc that step 2
    missed altogether adds them under its own label, if step 2 does not use that label elsewhere.
    """
    discs = np.asarray(L.DISCS_POSSIBLE + (L.DISC_UNNUMBERED,))
    in_step1 = np.isin(step1, discs)
    if not in_step1.any():
        return step2
    out = step2.copy()
    s1, s2 = step1[in_step1].astype(np.int64), step2[in_step1].astype(np.int64)
    empty = s2 == 0
    step2_discs = np.isin(s2, discs)
    used = set(np.intersect1d(step2, discs).tolist())
    fill = np.zeros_like(s1)
    for d1 in np.unique(s1):
        own = s1 == d1
        overlap = s2[own & step2_discs]
        if overlap.size:
            values, counts = np.unique(overlap, return_counts=True)
            if counts.max() < min_share * overlap.size:
                continue
            target = int(values[counts.argmax()])
        elif int(d1) not in used:
            target = int(d1)
        else:
            continue
        fill[own & empty] = target
    s2[fill > 0] = fill[fill > 0]
    out[in_step1] = s2.astype(out.dtype)
    return out
