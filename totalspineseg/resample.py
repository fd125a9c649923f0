"""Grids and resampling: canonical orientation, the 1 mm working grid, world-coordinate resampling, crops.

Arrays are indexed in their own voxel order and travel with a 4x4 voxel-to-world affine (RAS+ mm, nibabel
convention). "Canonical" means nibabel's closest RAS+ orientation: axes are permuted and flipped, never
interpolated.

Resampling works in world coordinates and follows SimpleITK's rules, so that results match upstream's
torchio/SimpleITK pipeline: a target voxel whose centre falls within half a voxel outside the source's
outer voxel centres takes the edge value, anything farther out is 0.
"""

from __future__ import annotations

import numpy as np
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)
from scipy import ndimage

__all__ = [
    "to_canonical", "from_canonical", "canonical_grid", "reorient", "iso_grid", "resample_to_grid",
    "crop_to_mask", "paste", "voxel_sizes", "RESAMPLE_KINDS",
]

RESAMPLE_KINDS = ("image", "labels", "soft", "points")

# A target voxel is "on" a source axis when its continuous index lies in [-0.5, n - 0.5] (SimpleITK's
# inside-buffer test); the tolerance absorbs float32 rounding of stored affines.
_EDGE_TOL = 1e-4
# Grid sizes are ceil(n * old / new); float32 voxel sizes (0.8 -> 0.80000001) must not add a slice.
_SIZE_TOL = 1e-4
# The separable path may ignore an off-axis coupling if it moves no sample by more than this (voxels).
_ALIGN_TOL = 1e-3
_CHUNK_VOXELS = 1 << 20


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel edge lengths (mm) along each array axis."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


# --------------------------------------------------------------------------------------------------
# Orientation


def canonical_grid(shape, affine) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the RAS+ reorientation of a grid, without touching any data."""
    ornt = io_orientation(affine)
    new_shape = tuple(int(shape[int(axis)]) for axis in np.argsort(ornt[:, 0]))
    return new_shape, np.asarray(affine, dtype=np.float64) @ inv_ornt_aff(ornt, shape)


def to_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient to RAS+ (nibabel's as_closest_canonical): a permutation and flips, no interpolation."""
    return _apply_ornt(data, affine, io_orientation(affine))


def reorient(data: np.ndarray, affine: np.ndarray, axcodes: str) -> tuple[np.ndarray, np.ndarray]:
    """Reorient to any axis code such as 'LPS' or 'PSR' (permutation and flips only)."""
    transform = ornt_transform(io_orientation(affine), axcodes2ornt(tuple(axcodes)))
    return _apply_ornt(data, affine, transform)


def from_canonical(data_c, affine_c, target_affine, target_shape) -> np.ndarray:
    """Undo to_canonical exactly: put canonical data back into the target grid's axis order.

    The target grid must be the one the canonical grid came from (same voxels, other axis order);
    use resample_to_grid for any other grid.
    """
    to_target = ornt_transform(axcodes2ornt(("R", "A", "S")), io_orientation(target_affine))
    data, affine = _apply_ornt(data_c, affine_c, to_target)
    if data.shape != tuple(target_shape) or not np.allclose(affine, target_affine, atol=1e-3):
        raise ValueError(
            f"canonical grid {data_c.shape} is not a reorientation of the target grid {tuple(target_shape)}; "
            "use resample_to_grid"
        )
    return data


def _apply_ornt(data, affine, ornt) -> tuple[np.ndarray, np.ndarray]:
    new_affine = np.asarray(affine, dtype=np.float64) @ inv_ornt_aff(ornt, data.shape)
    return np.ascontiguousarray(apply_orientation(data, ornt)), new_affine


# --------------------------------------------------------------------------------------------------
# Grids


def iso_grid(shape, affine, spacing=1.0) -> tuple[tuple[int, int, int], np.ndarray]:
    """The grid torchio's Resample(spacing) builds: same directions, outer field-of-view edges aligned.

    Size is ceil(n * old / new) per axis (singleton axes stay 1); voxel 0 sits at continuous source
    index 0.5 * (new / old - 1), so the first outer edge coincides with the source's.
    """
    affine = np.asarray(affine, dtype=np.float64)
    old = voxel_sizes(affine)
    new = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,))
    if np.any(new <= 0):
        raise ValueError(f"spacing must be positive, got {spacing}")
    shape = np.asarray(shape[:3], dtype=np.int64)
    ratio = new / old
    size = np.ceil(shape * old / new - _SIZE_TOL).astype(np.int64)
    size[shape == 1] = 1
    size = np.maximum(size, 1)
    new_affine = affine.copy()
    new_affine[:3, :3] = affine[:3, :3] * ratio
    new_affine[:3, 3] = affine[:3, :3] @ (0.5 * (ratio - 1)) + affine[:3, 3]
    return tuple(int(n) for n in size), new_affine


# --------------------------------------------------------------------------------------------------
# Resampling


def resample_to_grid(data, src_affine, dst_shape, dst_affine, kind: str) -> np.ndarray:
    """Resample `data` (on `src_affine`) onto the grid (`dst_shape`, `dst_affine`), in world coordinates.

    kind:
      * "image": linear, float32, 0 outside the source;
      * "labels": nearest neighbour, dtype kept;
      * "soft": linear, float32, clipped to [0, 1];
      * "points": single-voxel point labels; every non-zero label of the source appears exactly once in
        the output, at the target voxel nearest to its world position (see _resample_points).
    """
    if kind not in RESAMPLE_KINDS:
        raise ValueError(f"unknown resampling kind {kind!r}; expected one of {RESAMPLE_KINDS}")
    if data.ndim != 3:
        raise ValueError(f"expected a 3-D array, got shape {data.shape}")
    dst_shape = tuple(int(n) for n in dst_shape)
    src_affine = np.asarray(src_affine, dtype=np.float64)
    dst_affine = np.asarray(dst_affine, dtype=np.float64)
    if kind == "points":
        return _resample_points(data, src_affine, dst_shape, dst_affine)

    # Maps target voxel indices to continuous source voxel indices.
    index_map = np.linalg.inv(src_affine) @ dst_affine
    order = 0 if kind == "labels" else 1
    aligned = _axis_aligned(index_map, dst_shape)
    if aligned is not None:
        out = _resample_separable(data, *aligned, dst_shape, order)
    else:
        out = _resample_general(data, index_map, dst_shape, order)
    if kind == "labels":
        return out.astype(data.dtype, copy=False)
    out = out.astype(np.float32, copy=False)
    if kind == "soft":
        np.clip(out, 0.0, 1.0, out=out)
    return out


def _axis_aligned(index_map: np.ndarray, dst_shape) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(perm, scale, offset) when target axis c samples source axis perm[c] at scale[c] * i + offset[c].

    True for any pair of grids with the same direction cosines up to axis order and sign, which covers
    native <-> canonical <-> 1 mm grids, oblique ones included. None otherwise.
    """
    linear = index_map[:3, :3]
    perm = np.argmax(np.abs(linear), axis=0)
    if sorted(perm.tolist()) != [0, 1, 2]:
        return None
    on_axis = np.zeros((3, 3), dtype=bool)
    on_axis[perm, np.arange(3)] = True
    drift = np.abs(np.where(on_axis, 0.0, linear)) @ (np.asarray(dst_shape, dtype=np.float64) - 1)
    if np.any(drift > _ALIGN_TOL):
        return None
    return perm, linear[perm, np.arange(3)], index_map[perm, 3]


def _resample_separable(data, perm, scale, offset, dst_shape, order) -> np.ndarray:
    """Resample one axis at a time: nearest is a take per axis, trilinear is three linear passes.

    Integer unit-step axes (pure permutation, flip or integer shift) become slices, so a pure
    reorientation copies the data once and interpolates nothing.
    """
    work = np.transpose(data, perm)
    # Shrinking axes first keeps the intermediate arrays small.
    growth = np.asarray(dst_shape, dtype=np.float64) / np.asarray(work.shape, dtype=np.float64)
    for axis in np.argsort(growth, kind="stable"):
        coords = scale[axis] * np.arange(dst_shape[axis], dtype=np.float64) + offset[axis]
        work = _resample_axis(work, int(axis), coords, order)
    if np.may_share_memory(work, data):
        return work.copy(order="C")
    return np.ascontiguousarray(work)


def _resample_axis(arr: np.ndarray, axis: int, coords: np.ndarray, order: int) -> np.ndarray:
    n = arr.shape[axis]
    inside = (coords >= -0.5 - _EDGE_TOL) & (coords <= n - 0.5 + _EDGE_TOL)
    clamped = np.clip(coords, 0, n - 1)
    nearest = np.floor(clamped + 0.5).astype(np.intp)
    on_samples = np.all(np.abs(clamped - nearest) < 1e-6)

    if order == 0 or on_samples or n == 1:
        if inside.all() and _is_unit_step(nearest):
            step = int(nearest[1] - nearest[0]) if nearest.size > 1 else 1
            stop = nearest[-1] + step
            index = slice(nearest[0], None if stop < 0 else stop, step)
            return arr[(slice(None),) * axis + (index,)]
        out = np.take(arr, nearest, axis=axis)
    else:
        low = np.minimum(np.floor(clamped).astype(np.intp), n - 2)
        weight = (clamped - low).astype(np.float32)
        weight = weight.reshape((-1,) + (1,) * (arr.ndim - axis - 1))
        out = np.take(arr, low + 1, axis=axis).astype(np.float32, copy=False)
        below = np.take(arr, low, axis=axis).astype(np.float32, copy=False)
        out -= below
        out *= weight
        out += below
    if not inside.all():
        out[(slice(None),) * axis + (~inside,)] = 0
    return out


def _is_unit_step(index: np.ndarray) -> bool:
    if index.size < 2:
        return True
    steps = np.diff(index)
    return bool(abs(steps[0]) == 1 and np.all(steps == steps[0]))


def _resample_general(data, index_map, dst_shape, order) -> np.ndarray:
    """map_coordinates on slabs of the target grid, for grids that are rotated relative to each other."""
    out_dtype = data.dtype if order == 0 else np.float32
    out = np.empty(dst_shape, dtype=out_dtype)
    nx, ny, nz = dst_shape
    limits = np.asarray(data.shape, dtype=np.float64)
    j, k = np.meshgrid(np.arange(ny, dtype=np.float64), np.arange(nz, dtype=np.float64), indexing="ij")
    plane = np.stack([index_map[r, 1] * j + index_map[r, 2] * k + index_map[r, 3] for r in range(3)])
    del j, k
    slab = max(1, _CHUNK_VOXELS // max(1, ny * nz))
    for start in range(0, nx, slab):
        i = np.arange(start, min(start + slab, nx), dtype=np.float64)
        coords = plane[:, None] + index_map[:3, 0, None, None, None] * i[None, :, None, None]
        inside = np.ones(coords.shape[1:], dtype=bool)
        for r in range(3):
            inside &= (coords[r] >= -0.5 - _EDGE_TOL) & (coords[r] <= limits[r] - 0.5 + _EDGE_TOL)
            np.clip(coords[r], 0, limits[r] - 1, out=coords[r])
        values = ndimage.map_coordinates(data, coords, order=order, mode="nearest", output=out_dtype)
        values[~inside] = 0
        out[start : start + len(i)] = values
    return out


def _resample_points(data, src_affine, dst_shape, dst_affine) -> np.ndarray:
    """Move point labels onto a grid one by one, so that none vanishes or merges.

    A label spread over several voxels is placed at its centroid. Labels are placed in increasing value;
    one whose nearest voxel is taken goes to the nearest free voxel (world distance). Points outside the
    target field of view go to the nearest voxel inside it.
    """
    out = np.zeros(dst_shape, dtype=data.dtype)
    labels, centroids = _label_centroids(data)
    if labels.size == 0:
        return out
    if labels.size > out.size:
        raise ValueError(f"{labels.size} points cannot fit in a grid of {out.size} voxels")
    world = centroids @ src_affine[:3, :3].T + src_affine[:3, 3]
    dst_inv = np.linalg.inv(dst_affine)
    positions = world @ dst_inv[:3, :3].T + dst_inv[:3, 3]
    for label, position in zip(labels, positions, strict=False):
        out[_nearest_free_voxel(out, position, dst_affine[:3, :3])] = label
    return out


def _label_centroids(data) -> tuple[np.ndarray, np.ndarray]:
    voxels = np.nonzero(data)
    values = data[voxels]
    labels, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.zeros((labels.size, 3))
    for axis in range(3):
        sums[:, axis] = np.bincount(inverse, weights=voxels[axis], minlength=labels.size)
    return labels, sums / counts[:, None]


def _nearest_free_voxel(occupied: np.ndarray, position: np.ndarray, linear: np.ndarray) -> tuple[int, ...]:
    """The in-grid voxel with occupied == 0 closest in world distance to a continuous voxel position."""
    shape = np.asarray(occupied.shape)
    start = np.clip(np.floor(position + 0.5), 0, shape - 1).astype(np.intp)
    if occupied[tuple(start)] == 0:
        return tuple(int(v) for v in start)
    # Search growing cubes around the start voxel; stop once no voxel outside the cube can be closer.
    smallest_step = np.linalg.svd(linear, compute_uv=False).min()
    offset_from_start = np.max(np.abs(position - start))
    for radius in range(1, int(shape.max()) + 1):
        span = np.arange(-radius, radius + 1)
        cube = np.stack(np.meshgrid(span, span, span, indexing="ij"), axis=-1).reshape(-1, 3) + start
        cube = cube[np.all((cube >= 0) & (cube < shape), axis=1)]
        cube = cube[occupied[tuple(cube.T)] == 0]
        if cube.size == 0:
            continue
        distance = np.linalg.norm((cube - position) @ linear.T, axis=1)
        best = int(np.argmin(distance))
        lower_bound_outside = (radius + 1 - offset_from_start) * smallest_step
        if distance[best] <= lower_bound_outside or radius >= shape.max():
            return tuple(int(v) for v in cube[best])
    raise ValueError("no free voxel left in the target grid")


# --------------------------------------------------------------------------------------------------
# Cropping


def crop_to_mask(data, mask_or_seg, affine, margin: int) -> tuple[np.ndarray, np.ndarray, tuple[slice, ...]]:
    """Crop to the bounding box of the mask's non-zero voxels, grown by `margin` voxels and clipped.

    Returns the cropped copy, its affine (origin moved to the first kept voxel) and the slices used.
    """
    if data.shape[:3] != mask_or_seg.shape[:3]:
        raise ValueError(f"data {data.shape} and mask {mask_or_seg.shape} differ in shape")
    slices = []
    for axis in range(3):
        other = tuple(a for a in range(mask_or_seg.ndim) if a != axis)
        present = np.flatnonzero(np.any(mask_or_seg, axis=other))
        if present.size == 0:
            raise ValueError("cannot crop to an empty mask")
        start = max(int(present[0]) - margin, 0)
        stop = min(int(present[-1]) + margin + 1, data.shape[axis])
        slices.append(slice(start, stop))
    slices = tuple(slices)
    new_affine = np.asarray(affine, dtype=np.float64).copy()
    new_affine[:3, 3] = new_affine[:3, :3] @ [s.start for s in slices] + new_affine[:3, 3]
    return data[slices].copy(), new_affine, slices


def paste(cropped, slices, full_shape, fill=0) -> np.ndarray:
    """Put a cropped array back into a full-size array filled with `fill`."""
    out = np.full(tuple(full_shape), fill, dtype=cropped.dtype)
    out[tuple(slices)] = cropped
    return out
