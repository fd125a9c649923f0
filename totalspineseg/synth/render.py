"""Rendering: an anatomy sampled on a voxel grid, as exact labels and an MR-like image.

The voxel centres of the grid are mapped to spine coordinates, then each shape is painted inside its own
bounding box: discs, then bone, then the canal, then the cord, so the canal tube stays free of bone. Labels
are exact at voxel centres (nearest sampling). Intensities come from a tissue map through a T1w- or T2w-like
table, followed by slight smoothing (partial volume), a bias field and Rician noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..volume import save_nifti
from .anatomy import Anatomy
from .shapes import Tissue

__all__ = ["CONTRASTS", "Volume3D", "render", "check_contrast", "spine_coords", "upsample"]

CONTRASTS = ("T2w", "T1w")

_COARSE_MM = 4.0  # spacing of the exact centreline projection; finer voxels are interpolated

# Relative intensities (T2w, T1w): CSF bright on T2w, marrow and fat bright on T1w.
_TISSUE_INTENSITY = {
    Tissue.AIR: (0.0, 0.0),
    Tissue.FAT: (0.70, 0.95),
    Tissue.MUSCLE: (0.16, 0.30),
    Tissue.ORGAN: (0.36, 0.42),
    Tissue.CSF: (1.00, 0.12),
    Tissue.CORD: (0.45, 0.52),
    Tissue.NUCLEUS: (0.85, 0.40),
    Tissue.ANNULUS: (0.24, 0.28),
    Tissue.MARROW: (0.38, 0.72),
    Tissue.CORTEX: (0.06, 0.08),
    Tissue.ARCH: (0.32, 0.60),
    Tissue.EPIDURAL: (0.45, 0.70),
}
_INTENSITY = {
    contrast: np.array([_TISSUE_INTENSITY[t][i] for t in Tissue], np.float32) for i, contrast in enumerate(CONTRASTS)
}
_FULL_SCALE = 400.0
_NOISE = 0.025  # Rician noise sigma, relative to full scale


@dataclass
class Volume3D:
    """One rendered image with its exact labels."""

    image: np.ndarray  # float32 (X, Y, Z) in the grid's own voxel order
    labels: np.ndarray  # uint8, final scheme, same shape
    affine: np.ndarray  # 4x4 float64

    def save(self, image_path, labels_path) -> tuple[Path, Path]:
        """Write the image (float32) and its labels (uint8) atomically, qform = sform = affine."""
        return (
            save_nifti(image_path, self.image, self.affine, dtype=np.float32),
            save_nifti(labels_path, self.labels, self.affine, dtype=np.uint8),
        )


def check_contrast(contrast: str) -> str:
    if contrast not in _INTENSITY:
        raise ValueError(f"unknown contrast {contrast!r}; choose from {', '.join(CONTRASTS)}")
    return contrast


def _spine_coords(anat: Anatomy, shape, affine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return spine_coords(anat.centreline, shape, affine)


def spine_coords(centreline, shape, affine, displace=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u, v, s) at every voxel centre: exact on a ~4 mm lattice, trilinear in between (the map is smooth).

    `displace(coarse_shape)`, if given, returns three arrays added to (u, v, s) on the lattice (a smooth
    deformation costs nothing more that way).
    """
    vox = np.linalg.norm(affine[:3, :3], axis=0)
    steps = [max(1, int(_COARSE_MM // v)) for v in vox]
    axes = [np.arange(math.ceil((n - 1) / k) + 1) * k for n, k in zip(shape, steps, strict=False)]
    ijk = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    coarse_shape = tuple(len(a) for a in axes)
    coarse = [c.reshape(coarse_shape).astype(np.float32) for c in centreline.to_spine(xyz)]
    if displace is not None:
        coarse = [c + d for c, d in zip(coarse, displace(coarse_shape), strict=True)]
    return tuple(upsample(c, steps, shape) for c in coarse)


def upsample(coarse: np.ndarray, steps, shape) -> np.ndarray:
    """Separable linear interpolation from a lattice of every `steps[a]`-th voxel to the full grid."""
    out = coarse
    for axis, (k, n) in enumerate(zip(steps, shape, strict=False)):
        if k == 1:
            out = out.take(np.arange(n), axis=axis)
            continue
        pos = np.arange(n) / k
        i0 = pos.astype(np.intp)
        i1 = np.minimum(i0 + 1, out.shape[axis] - 1)
        w = (pos - i0).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        out = out.take(i0, axis=axis) * (1 - w) + out.take(i1, axis=axis) * w
    return out


def _block(mapping, extent, shape, inv_affine) -> tuple[slice, ...] | None:
    """Voxel index box that contains a shape's extent, or None when it lies outside the grid."""
    s0, s1, umax, vmin, vmax = extent
    ss = np.linspace(s0, s1, max(2, int((s1 - s0) / 5) + 2))
    corners = [(u, v) for u in (-umax, umax) for v in (vmin, vmax)]
    uu = np.repeat([c[0] for c in corners], len(ss))
    vv = np.repeat([c[1] for c in corners], len(ss))
    world = mapping.to_world(uu, vv, np.tile(ss, len(corners)))
    ijk = world @ inv_affine[:3, :3].T + inv_affine[:3, 3]
    lo = np.floor(ijk.min(axis=0) - 2).astype(int)
    hi = np.ceil(ijk.max(axis=0) + 3).astype(int)
    lo, hi = np.maximum(lo, 0), np.minimum(hi, shape)
    if np.any(hi <= lo):
        return None
    return tuple(slice(a, b) for a, b in zip(lo, hi, strict=False))


def _block_world(blk: tuple[slice, ...], affine: np.ndarray) -> tuple[np.ndarray, ...]:
    """World x, y, z of the voxel centres in a block (broadcast from three index vectors)."""
    i, j, k = (np.arange(b.start, b.stop, dtype=np.float32) for b in blk)
    i, j, k = i[:, None, None], j[None, :, None], k[None, None, :]
    a = affine.astype(np.float32)
    return tuple(a[r, 0] * i + a[r, 1] * j + a[r, 2] * k + a[r, 3] for r in range(3))


def _background(anat: Anatomy, u, v, s) -> np.ndarray:
    """Soft tissue around the spine: organs in front, muscles behind, subcutaneous fat, then air."""
    front = np.interp(s, *anat.body_front) + 3.0
    skin = -anat.skin_back + u * u / 300.0  # the back is rounded
    tissue = np.full(u.shape, Tissue.MUSCLE, np.uint8)
    tissue[v > front] = Tissue.ORGAN
    tissue[v < skin + 8.0] = Tissue.FAT
    tissue[v < skin] = Tissue.AIR
    return tissue


def _paint(anat: Anatomy, shape, affine, u, v, s) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros(shape, np.uint8)
    tissue = _background(anat, u, v, s)
    inv = np.linalg.inv(affine)
    for p in anat.paints:
        blk = _block(p.frame or anat.centreline, p.shape.extent(), shape, inv)
        if blk is None:
            continue
        world = _block_world(blk, affine) if (p.frame or p.between) else None
        coords = p.frame.to_local(*world) if p.frame else (u[blk], v[blk], s[blk])
        mask, t = p.shape.evaluate(*coords, p.tissue)
        if p.between:
            above, s_above, below, s_below = p.between
            mask &= (above.to_local(*world)[2] >= s_above) & (below.to_local(*world)[2] <= s_below)
        labels[blk][mask] = p.label
        tissue[blk][mask] = t[mask] if isinstance(t, np.ndarray) else t
    return labels, tissue


def _image(tissue, contrast, u, v, s, affine, rng) -> np.ndarray:
    """Tissue map -> intensities, partial-volume blur, smooth bias field, Rician noise; integer-valued."""
    img = _INTENSITY[contrast][tissue]
    vox = np.linalg.norm(affine[:3, :3], axis=0)
    img = ndimage.gaussian_filter(img, sigma=0.5 / vox, truncate=2.5)
    c = [float(x) for x in rng.normal(0, 1, 4)]  # Python floats keep the arithmetic in float32
    # Bias: a smooth field over the spine coordinates (s spans the long axis).
    img *= np.exp(0.12 * (c[0] / 60 * u + c[1] / 80 * v + c[2] * np.sin(s / 250.0 + c[3])))
    # Rician noise: the magnitude of a complex signal with Gaussian noise on both channels.
    real = rng.standard_normal(img.shape, dtype=np.float32)
    real *= _NOISE
    real += img
    imag = rng.standard_normal(img.shape, dtype=np.float32)
    imag *= _NOISE
    img = np.hypot(real, imag)
    img *= _FULL_SCALE
    return np.rint(img, out=img)


def render(
    anat: Anatomy,
    shape,
    affine: np.ndarray,
    contrast: str = "T2w",
    noise_seed=0,
) -> Volume3D:
    """Sample the anatomy on a voxel grid (nearest: shapes are evaluated at voxel centres)."""
    check_contrast(contrast)
    shape = tuple(int(n) for n in shape)
    u, v, s = _spine_coords(anat, shape, affine)
    labels, tissue = _paint(anat, shape, affine, u, v, s)
    rng = np.random.default_rng(noise_seed)
    image = _image(tissue, contrast, u, v, s, affine, rng)
    return Volume3D(image=image, labels=labels, affine=np.asarray(affine, np.float64))
