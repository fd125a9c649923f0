"""NIfTI in and out: validated loading into a `Volume`, the network input grid, atomic writes.

Arrays are indexed in their own voxel order and always travel with a 4x4 voxel-to-world affine (RAS+ mm,
nibabel convention). The grid arithmetic and resampling live in `resample`.
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
from nibabel.spatialimages import HeaderDataError

from .errors import InputError
from .fsutil import NIFTI_SUFFIXES, StagedWrites, atomic_path
from .resample import canonical_grid, iso_grid, resample_to_grid, voxel_sizes

__all__ = ["Volume", "load_volume", "load_labels", "to_iso", "save_nifti"]

log = logging.getLogger(__name__)

# Plausibility limits (`check_plausible`); `totalspineseg --help` states them.
MIN_AXIS_MM = 10.0  # the field of view along every axis
MIN_LONGEST_MM = 30.0  # ... and along the longest: about one vertebra with its discs
MAX_WORK_VOXELS = 250_000_000  # the 1 mm working grid: 500 x 500 x 1000 mm, about 1 GB as float32
QFORM_SFORM_TOL_MM = 1.0  # qform and sform may differ by rounding, not by this much

# --------------------------------------------------------------------------------------------------
# The in-memory volume


@dataclass
class Volume:
    """A 3-D array with its voxel-to-world affine, and where it came from."""

    data: np.ndarray
    affine: np.ndarray
    path: Path | None = None
    header: nib.Nifti1Header | None = None
    warnings: tuple[str, ...] = ()  # problems of the file that do not stop it from being used

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def zooms(self) -> tuple[float, float, float]:
        return tuple(float(z) for z in voxel_sizes(self.affine))


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
    return Volume(data, affine, path, img.header.copy(), _header_warnings(path, img.header))


def load_labels(path) -> Volume:
    """Load a label map as uint8 (uint16 above 255); non-integer or negative values are rejected."""
    path = Path(path)
    img = _open_nifti(path)
    shape = _spatial_shape(path, img.shape)
    if len(shape) == 4 and shape[3] > 1:
        raise InputError(path, f"4-D label map with {shape[3]} volumes; a 3-D label map is required")
    affine = _affine_of(path, img)
    data = _read(path, lambda: np.asanyarray(img.dataobj)).reshape(shape[:3])
    return Volume(_as_label_array(path, data), affine, path, img.header.copy(), _header_warnings(path, img.header))


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


def transforms_disagree(qform: np.ndarray, sform: np.ndarray, shape: tuple[int, ...],
                        tol_mm: float = QFORM_SFORM_TOL_MM) -> float | None:
    """The largest distance (mm) between where the qform and the sform put a corner of the grid, if over `tol_mm`."""
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)]).T
    worst = float(np.abs((np.asarray(qform) @ corners - np.asarray(sform) @ corners)[:3]).max())
    return worst if worst > tol_mm else None


def _header_warnings(path: Path, header) -> tuple[str, ...]:
    """A qform and an sform that both claim to be valid but disagree: the sform is used (nibabel and the NIfTI
    standard agree on that), and the outputs keep both, but the user must know."""
    try:
        qform, q_code = header.get_qform(coded=True)
        sform, s_code = header.get_sform(coded=True)
    except (AttributeError, TypeError):  # not a NIfTI-1/2 header
        return ()
    if not (q_code and s_code) or qform is None or sform is None:
        return ()
    distance = transforms_disagree(qform, sform, header.get_data_shape()[:3])
    if distance is None:
        return ()
    message = (f"the qform and the sform of the header disagree (a corner of the image {distance:.0f} mm apart); "
               "the sform is used, as nibabel and the NIfTI standard prescribe. If the image looks mis-oriented in the "
               "previews, fix the header (e.g. set the sform to the qform) and run again")
    log.warning("%s: %s", path, message)
    return (message,)


def check_plausible(vol: Volume, max_voxels: int = MAX_WORK_VOXELS) -> None:
    """Refuse images that cannot hold a spine, before any network runs (InputError, exit 65).

    A blank or constant image; a field of view under MIN_AXIS_MM along some axis or under MIN_LONGEST_MM
    along all of them (too small to hold one vertebra); a 1 mm working grid over `max_voxels` (wrong voxel
    sizes in the header, or not a spine scan).
    """
    where = vol.path if vol.path is not None else "<array>"
    low, high = float(np.min(vol.data)), float(np.max(vol.data))
    if low == high:
        raise InputError(where, "blank image (every voxel is 0)" if high == 0 else
                         f"constant image (every voxel is {high:g}): nothing to segment")
    extent = np.asarray(vol.shape[:3]) * voxel_sizes(vol.affine)
    size = " x ".join(f"{e:.4g}" for e in extent)
    if extent.min() < MIN_AXIS_MM or extent.max() < MIN_LONGEST_MM:
        raise InputError(where, f"field of view {size} mm is too small to hold a vertebra (at least {MIN_AXIS_MM:g} "
                                f"mm along every axis and {MIN_LONGEST_MM:g} mm along one are needed)")
    voxels = float(np.prod(np.ceil(extent - 1e-3)))
    if voxels > max_voxels:
        raise InputError(where, f"field of view {size} mm needs a 1 mm working grid of {voxels / 1e6:,.0f} million "
                                f"voxels, over the limit of {max_voxels / 1e6:,.0f} million: check the voxel sizes "
                                "in the header")


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
# The network input grid


def to_iso(vol: Volume, spacing=1.0) -> tuple[np.ndarray, np.ndarray]:
    """The image on the canonical (RAS+) grid resampled to `spacing` mm: upstream's network input space.

    Equivalent to to_canonical then a linear resample, but done in one pass without the canonical copy.
    """
    shape_c, affine_c = canonical_grid(vol.shape, vol.affine)
    iso_shape, iso_affine = iso_grid(shape_c, affine_c, spacing)
    return resample_to_grid(vol.data, vol.affine, iso_shape, iso_affine, "image"), iso_affine


# --------------------------------------------------------------------------------------------------
# Writing


def save_nifti(path, data, affine, dtype=None, header=None, staged: StagedWrites | None = None) -> Path:
    """Write a NIfTI file atomically: a hidden temporary file in the same folder, then a rename.

    With `staged`, the file is only written to its temporary name; `staged.commit()` renames it, together
    with the rest of its set.

    On the grid of `header` (the input's header, and `affine` the affine it gives), the output keeps the
    input's qform and sform and their codes exactly, so it overlays the input in any viewer whichever
    transform the viewer reads (upstream #51). Otherwise qform and sform are both `affine` (with the codes
    of `header` when non-zero, else 'scanner'). Without `dtype`, integer and boolean data are stored in the
    first of uint8, uint16, int16, int32 that holds them (so labels up to 255 are uint8), and float data as
    float32.
    """
    path = Path(path)
    suffix = next((s for s in NIFTI_SUFFIXES if path.name.lower().endswith(s)), None)
    if suffix is None:
        raise ValueError(f"{path}: output name must end in .nii or .nii.gz")
    array = _cast_for_saving(np.asarray(data), dtype)
    affine = np.asarray(affine, dtype=np.float64)

    hdr = header.copy() if isinstance(header, nib.Nifti1Header) else nib.Nifti1Header()
    img = nib.Nifti1Image(array, affine, header=hdr)
    img.set_data_dtype(array.dtype)
    if header is not None and _on_grid_of(hdr, affine, array.shape):
        qform, qform_code = hdr.get_qform(coded=True)
        sform, sform_code = hdr.get_sform(coded=True)
        img.set_sform(sform if sform_code else affine, code=int(sform_code))
        img.set_qform(qform if qform_code else affine, code=int(qform_code))
    else:
        img.set_sform(affine, code=int(hdr["sform_code"]) or 1)
        img.set_qform(affine, code=int(hdr["qform_code"]) or 1)
    img.header.set_xyzt_units(xyz="mm", t="sec")
    img.header["cal_min"], img.header["cal_max"] = 0, 0
    img.header.set_slope_inter(None, None)

    if staged is not None:
        nib.save(img, str(staged.path(path)))
        return path
    with atomic_path(path) as tmp:  # hidden, and keeps the suffix that tells nibabel the format
        nib.save(img, str(tmp))
    return path


def _on_grid_of(header: nib.Nifti1Header, affine: np.ndarray, shape: tuple[int, ...]) -> bool:
    """Whether an array of `shape` with `affine` lies on the grid the header describes."""
    if tuple(int(n) for n in header.get_data_shape()[:3]) != tuple(shape[:3]):
        return False
    return bool(np.allclose(header.get_best_affine(), affine, rtol=0, atol=1e-4))


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
