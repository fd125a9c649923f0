"""Fields of view and voxel grids: which part of the spine an image shows, and how its voxels sit in the world.

A field of view runs along the spine between two mid-body cuts (so every disc is clearly in or out), with a
fixed margin in front of and behind the canal. A grid covers that box with any of the 48 axis codes,
anisotropic voxels and an optional small oblique tilt; its affine maps voxel indices to world mm.
"""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np

from .anatomy import VERTEBRA, Anatomy

__all__ = [
    "FOVS",
    "fov_box",
    "make_grid",
    "localizer_grid",
    "check_fov",
    "check_orientation",
    "check_voxel",
    "check_oblique",
]

FOVS = ("whole", "cervical", "cervicothoracic", "thoracic", "thoracolumbar", "lumbar")

# Field-of-view limits along the spine: (vertebra, fraction of its body height) or "top" / "bottom".
# Cutting through mid-bodies keeps every disc either clearly inside or clearly outside.
_FOV_LIMITS = {
    "whole": ("top", "bottom"),
    "cervical": ("top", ("T2", 0.5)),  # skull base to mid T2: discs C2-C3 .. T1-T2
    "cervicothoracic": ("top", ("T7", 0.5)),  # to mid T7: discs C2-C3 .. T6-T7
    "thoracic": (("T2", 0.5), ("T11", 0.5)),  # mid T2 to mid T11: discs T2-T3 .. T10-T11
    "thoracolumbar": (("T6", 0.5), "bottom"),  # mid T6 to below the sacrum: T6-T7 .. L5-S
    "lumbar": (("T11", 0.5), "bottom"),  # mid T11 to below the sacrum: T11-T12 .. L5-S
}
_FOV_LR_MM = 80.0
_FOV_POSTERIOR_MM = 62.0  # behind the canal centre: spinous tips, muscles, skin
_FOV_ANTERIOR_MM = 55.0  # in front of the canal centre: bodies and prevertebral tissue

_LOCALIZER_ORIENTATION = "PIR"
_LOCALIZER_VOXEL = (1.2, 1.2, 4.0)


def _limit_s(anat: Anatomy, limit) -> float:
    if limit == "top":
        return 0.0
    if limit == "bottom":
        return anat.s_bottom
    name, fraction = limit
    top, bottom = anat.vertebra_span[VERTEBRA[name]]
    return top + fraction * (bottom - top)


def fov_box(anat: Anatomy, fov: str) -> np.ndarray:
    """World box [[xmin, ymin, zmin], [xmax, ymax, zmax]] of a field of view."""
    check_fov(fov)
    s0, s1 = (_limit_s(anat, lim) for lim in _FOV_LIMITS[fov])
    cl = anat.centreline
    inside = (cl.s >= s0) & (cl.s <= s1)
    pts = cl.point[inside]
    x_mid = (pts[:, 0].min() + pts[:, 0].max()) / 2
    lo = [x_mid - _FOV_LR_MM / 2, pts[:, 1].min() - _FOV_POSTERIOR_MM, cl.z_at(s1)]
    hi = [x_mid + _FOV_LR_MM / 2, pts[:, 1].max() + _FOV_ANTERIOR_MM, cl.z_at(s0)]
    return np.array([lo, hi])


def check_fov(fov: str) -> str:
    if fov not in _FOV_LIMITS:
        raise ValueError(f"unknown field of view {fov!r}; choose from {', '.join(FOVS)}")
    return fov


def check_orientation(code: str) -> str:
    """Return the upper-case axis code, or raise ValueError if it is not one of the 48 valid codes."""
    code = str(code).upper()
    pairs = ("LR", "PA", "IS")
    if len(code) != 3 or sorted(next((i for i, p in enumerate(pairs) if c in p), -1) for c in code) != [0, 1, 2]:
        raise ValueError(f"invalid orientation code {code!r}: use one letter of each pair L/R, P/A, I/S, e.g. LPS")
    return code


def check_voxel(voxel) -> np.ndarray:
    """Voxel sizes as a float array, or ValueError unless they are three positive numbers."""
    voxel = np.asarray(voxel, float)
    if voxel.shape != (3,) or not np.all(voxel > 0):
        raise ValueError(f"voxel sizes must be three positive numbers in mm, got {' '.join(map(str, voxel.tolist()))}")
    return voxel


def check_oblique(deg: float) -> float:
    if abs(deg) > 30:
        raise ValueError(f"oblique tilt must be within 30 degrees, got {deg}")
    return deg


def make_grid(box: np.ndarray, orientation: str, voxel, oblique_deg: float = 0.0) -> tuple[tuple, np.ndarray]:
    """A grid covering `box` (world) with axis code `orientation`, voxel sizes and an optional tilt."""
    ornt = nib.orientations.axcodes2ornt(tuple(check_orientation(orientation)))
    voxel = check_voxel(voxel)
    check_oblique(oblique_deg)
    extent = box[1] - box[0]
    linear = np.zeros((3, 3))
    shape = []
    for i, (world_axis, flip) in enumerate(ornt):
        linear[int(world_axis), i] = flip * voxel[i]
        shape.append(max(1, int(round(extent[int(world_axis)] / voxel[i]))))
    linear = _tilt(oblique_deg) @ linear
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = box.mean(axis=0) - linear @ ((np.array(shape) - 1) / 2)
    return tuple(shape), affine


def _tilt(deg: float) -> np.ndarray:
    """Rotation about the LR axis by `deg`, then about the AP axis by half of it."""
    a, b = math.radians(deg), math.radians(deg / 2)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    return ry @ rx


def localizer_grid(anat: Anatomy) -> tuple[tuple, np.ndarray]:
    """The grid of a localizer: a low-resolution sagittal view of the whole spine."""
    return make_grid(fov_box(anat, "whole"), _LOCALIZER_ORIENTATION, _LOCALIZER_VOXEL)
