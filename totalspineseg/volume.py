"""NIfTI in and out: validation, canonical orientation, the 1 mm grid, resampling, atomic writes.

Arrays are indexed in their own voxel order and always travel with a 4x4 voxel-to-world affine (RAS+ mm,
nibabel convention). "Canonical" means nibabel's closest RAS+ orientation: axes are permuted and flipped,
never interpolated.

Resampling works in world coordinates and follows SimpleITK's rules, so that results match upstream's
torchio/SimpleITK pipeline: a target voxel whose centre falls within half a voxel outside the source's
outer voxel centres takes the edge value, anything farther out is 0.
"""

from __future__ import annotations

import gzip
import logging
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)
from nibabel.spatialimages import HeaderDataError
from scipy import ndimage

from .errors import InputError
from .fsutil import NIFTI_SUFFIXES, atomic_path

__all__ = [
    "Volume",
    "load_volume",
    "load_labels",
    "to_canonical",
    "from_canonical",
    "canonical_grid",
    "reorient",
    "iso_grid",
    "resample_to_grid",
    "to_iso",
    "save_nifti",
    "crop_to_mask",
    "paste",
    "RESAMPLE_KINDS",
]

log = logging.getLogger(__name__)

RESAMPLE_KINDS = ("image", "labels", "soft", "points")

# A target voxel is "on" a source axis when its continuous index lies in [-0.5, n - 0.5] (SimpleITK's
# inside-buffer test); the tolerance absorbs float32 rounding of stored affines.
_EDGE_TOL = 1e-4
# Grid sizes are ceil(n * old / new); float32 voxel sizes (0.8 -> 0.80000001) must not add a slice.
_SIZE_TOL = 1e-4
# The separable path may ignore an off-axis coupling if it moves no sample by more than this (voxels).
_ALIGN_TOL = 1e-3
_CHUNK_VOXELS = 1 << 20


# --------------------------------------------------------------------------------------------------
# The in-memory volume


@dataclass
class Volume:
    """A 3-D array with its voxel-to-world affine, and where it came from."""

    data: np.ndarray
    affine: np.ndarray
    path: Path | None = None
    header: nib.Nifti1Header | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def zooms(self) -> tuple[float, float, float]:
        return tuple(float(z) for z in voxel_sizes(self.affine))


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel edge lengths (mm) along each array axis."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


# --------------------------------------------------------------------------------------------------
# Loading and validation


def load_volume(path) -> Volume:
    """Load an image as float32; a 4-D image is averaged over its last axis. Rejects unusable input."""
    path = Path(path)
    img = _open_nifti(path)
    shape = _spatial_shape(path, img.shape)
    affine = _affine_of(path, img)
    if len(shape) == 4:
        if shape[3] > 1:
            log.warning("%s: 4-D image with %d volumes; using their average", path, shape[3])
        data = _read(path, lambda: _mean_last_axis(img))
    else:
        data = _read(path, lambda: img.get_fdata(dtype=np.float32, caching="unchanged"))
    data = data.reshape(shape[:3])
    _check_finite(path, data)
    return Volume(data, affine, path, img.header.copy())


def load_labels(path) -> Volume:
    """Load a label map as uint8 (uint16 above 255); non-integer or negative values are rejected."""
    path = Path(path)
    img = _open_nifti(path)
    shape = _spatial_shape(path, img.shape)
    if len(shape) == 4 and shape[3] > 1:
        raise InputError(path, f"4-D label map with {shape[3]} volumes; a 3-D label map is required")
    affine = _affine_of(path, img)
    data = _read(path, lambda: np.asanyarray(img.dataobj)).reshape(shape[:3])
    return Volume(_as_label_array(path, data), affine, path, img.header.copy())


def _open_nifti(path: Path):
    if not path.exists():
        raise InputError(path, "file not found")
    if not path.is_file():
        raise InputError(path, "not a file")
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        raise InputError(path, "not a NIfTI file (expected .nii or .nii.gz)")
    try:
        # mmap=False: the file must not stay mapped while an output of the same name is written.
        return nib.load(str(path), mmap=False)
    except (ImageFileError, HeaderDataError, gzip.BadGzipFile, EOFError, zlib.error, ValueError) as exc:
        raise InputError(path, _diagnose_unreadable(path, exc)) from exc
    except OSError as exc:
        raise InputError(path, f"cannot read file ({exc.strerror or _first_line(exc)})") from exc


def _diagnose_unreadable(path: Path, exc: Exception) -> str:
    """Tell a damaged gzip stream apart from a file that simply is not NIfTI."""
    if path.name.lower().endswith(".gz"):
        with open(path, "rb") as f:
            if f.read(2) != b"\x1f\x8b":
                return "not a gzip file, although its name ends in .nii.gz"
        try:
            with gzip.open(path, "rb") as f:
                head = f.read(540)
        except (EOFError, OSError, zlib.error) as gz_exc:
            return f"truncated or corrupt gzip data ({_first_line(gz_exc)})"
        if len(head) < 348:
            return "truncated or corrupt file (shorter than a NIfTI header)"
    elif path.stat().st_size < 348:
        return "truncated or corrupt file (shorter than a NIfTI header)"
    return f"not a valid NIfTI file ({_first_line(exc)})"


def _read(path: Path, reader):
    """Run a data reader, turning I/O failures on damaged files into one-line InputErrors."""
    try:
        return reader()
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(path, f"truncated or corrupt gzip data ({_first_line(exc)})") from exc
    except (OSError, ValueError) as exc:
        # nibabel reports a short uncompressed file as OSError("Expected N bytes, got M ...").
        raise InputError(path, f"truncated or corrupt file ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _spatial_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The 3-D or 4-D shape to use; trailing singleton axes beyond the fourth are ignored."""
    shape = tuple(int(n) for n in shape)
    while len(shape) > 4 and shape[-1] == 1:
        shape = shape[:-1]
    if not 3 <= len(shape) <= 4:
        raise InputError(path, f"{len(shape)}-D image (shape {shape}); a 3-D or 4-D volume is required")
    if min(shape) == 0:
        raise InputError(path, f"empty image (shape {shape} has a zero-length axis)")
    return shape


def _affine_of(path: Path, img) -> np.ndarray:
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise InputError(path, "affine has non-finite values (NaN or Inf) in its sform/qform")
    linear = affine[:3, :3]
    # Relative test: the determinant of a valid grid is the product of its column lengths, up to shear.
    scale = np.prod(np.linalg.norm(linear, axis=0))
    if scale == 0 or abs(np.linalg.det(linear)) <= 1e-6 * scale:
        raise InputError(path, "affine is not invertible (zero-length or collinear voxel axes)")
    return affine


def _mean_last_axis(img) -> np.ndarray:
    """Average a 4-D image over time without materialising a float64 copy of the whole series."""
    proxy = img.dataobj
    if hasattr(proxy, "get_unscaled"):
        raw = np.asanyarray(proxy.get_unscaled())
        mean = raw.mean(axis=-1, dtype=np.float64)
        slope, inter = float(proxy.slope), float(proxy.inter)
        if slope != 1.0 or inter != 0.0:
            mean = mean * slope + inter  # the mean commutes with the linear scaling
    else:
        mean = np.asanyarray(proxy).mean(axis=-1, dtype=np.float64)
    return mean.astype(np.float32)


def _check_finite(path: Path, data: np.ndarray) -> None:
    if not np.issubdtype(data.dtype, np.floating):
        return
    # One float64 sum is non-finite iff some voxel is, and avoids a full boolean mask on valid data.
    with np.errstate(invalid="ignore", over="ignore"):
        total = float(data.sum(dtype=np.float64))
    if not math.isfinite(total):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise InputError(path, f"non-finite values (NaN or Inf) in {bad} voxels")


def _as_label_array(path: Path, data: np.ndarray) -> np.ndarray:
    if data.dtype == bool:
        return data.astype(np.uint8)
    if np.issubdtype(data.dtype, np.floating):
        _check_finite(path, data)
        rounded = np.rint(data)
        if not np.allclose(data, rounded, rtol=0, atol=1e-3):
            raise InputError(path, "non-integer values in a label map")
        data = rounded
    elif not np.issubdtype(data.dtype, np.integer):
        raise InputError(path, f"unsupported data type {data.dtype} for a label map")
    low, high = (data.min(), data.max())
    if low < 0:
        raise InputError(path, f"negative values in a label map (minimum {low:g})")
    if high > np.iinfo(np.uint16).max:
        raise InputError(path, f"label values above 65535 (maximum {high:g})")
    return data.astype(np.uint8 if high <= 255 else np.uint16)


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


def to_iso(vol: Volume, spacing=1.0) -> tuple[np.ndarray, np.ndarray]:
    """The image on the canonical (RAS+) grid resampled to `spacing` mm: upstream's network input space.

    Equivalent to to_canonical then a linear resample, but done in one pass without the canonical copy.
    """
    shape_c, affine_c = canonical_grid(vol.shape, vol.affine)
    iso_shape, iso_affine = iso_grid(shape_c, affine_c, spacing)
    return resample_to_grid(vol.data, vol.affine, iso_shape, iso_affine, "image"), iso_affine


# --------------------------------------------------------------------------------------------------
# Writing


def save_nifti(path, data, affine, dtype=None, header=None) -> Path:
    """Write a NIfTI file atomically: a hidden temporary file in the same folder, then a rename.

    qform and sform are both set to `affine` (keeping a non-zero code from `header`, else 'scanner').
    Without `dtype`, integer and boolean data are stored in the first of uint8, uint16, int16, int32
    that holds them (so labels up to 255 are uint8), and float data as float32.
    """
    path = Path(path)
    suffix = next((s for s in NIFTI_SUFFIXES if path.name.lower().endswith(s)), None)
    if suffix is None:
        raise ValueError(f"{path}: output name must end in .nii or .nii.gz")
    array = _cast_for_saving(np.asarray(data), dtype)
    affine = np.asarray(affine, dtype=np.float64)

    hdr = header.copy() if header is not None else nib.Nifti1Header()
    img = nib.Nifti1Image(array, affine, header=hdr)
    img.set_data_dtype(array.dtype)
    sform_code = int(hdr["sform_code"]) or 1
    qform_code = int(hdr["qform_code"]) or 1
    img.set_sform(affine, code=sform_code)
    img.set_qform(affine, code=qform_code)
    img.header.set_xyzt_units(xyz="mm", t="sec")
    img.header["cal_min"], img.header["cal_max"] = 0, 0
    img.header.set_slope_inter(None, None)

    with atomic_path(path) as tmp:  # hidden, and keeps the suffix that tells nibabel the format
        nib.save(img, str(tmp))
    return path


def _cast_for_saving(array: np.ndarray, dtype) -> np.ndarray:
    if dtype is None:
        dtype = _default_dtype(array)
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer) and not np.issubdtype(array.dtype, np.integer):
        array = np.rint(array)
    if np.issubdtype(dtype, np.integer) and array.size:
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise ValueError(f"values [{array.min()}, {array.max()}] do not fit in {dtype}")
    return array.astype(dtype, copy=False)


def _default_dtype(array: np.ndarray) -> np.dtype:
    if array.dtype == bool:
        return np.dtype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        for candidate in (np.uint8, np.uint16, np.int16, np.int32):
            info = np.iinfo(candidate)
            if info.min <= low and high <= info.max:
                return np.dtype(candidate)
        return array.dtype
    return np.dtype(np.float32)


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
