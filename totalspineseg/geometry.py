"""Geometry on boolean masks in the canonical RAS+ 1 mm working grid: neighbourhoods, boxes, dilation, spans,
and the canal centreline that orders everything along the spine.

Axis 2 is superior, axis 1 anterior; distances are in voxels, which are millimetres there.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

CROSS = ndimage.generate_binary_structure(3, 1)
FULL = ndimage.generate_binary_structure(3, 3)


def bbox(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Bounding box of the non-zero voxels, grown by `margin` and clipped to the array."""
    slices = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        nz = np.flatnonzero(mask.any(axis=other))
        if nz.size == 0:
            return None
        slices.append(slice(max(int(nz[0]) - margin, 0), min(int(nz[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(slices)


def dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Dilation by the 6-neighbourhood cross, `iterations` times (an L1 ball)."""
    if iterations <= 0:
        return mask.copy()
    return ndimage.binary_dilation(mask, CROSS, iterations=iterations)


def span_inside(mask: np.ndarray, axis: int) -> np.ndarray:
    """Voxels lying between the first and last True of their line along `axis`."""
    forward = np.maximum.accumulate(mask, axis=axis)
    backward = np.flip(np.maximum.accumulate(np.flip(mask, axis=axis), axis=axis), axis=axis)
    return forward & backward


class Centerline:
    """A smoothed canal centreline x(z), y(z) over the canal's z range, with arc length."""

    def __init__(self, canal_mask: np.ndarray, sigma: float = 4.0):
        xs, ys, zs = np.nonzero(canal_mask)
        if zs.size == 0:
            raise ValueError("no canal")
        z0, z1 = int(zs.min()), int(zs.max())
        n = z1 - z0 + 1
        count = np.bincount(zs - z0, minlength=n).astype(float)
        sx = np.bincount(zs - z0, weights=xs, minlength=n)
        sy = np.bincount(zs - z0, weights=ys, minlength=n)
        have = count > 0
        zz = np.arange(n)
        mx = np.interp(zz, zz[have], sx[have] / count[have])
        my = np.interp(zz, zz[have], sy[have] / count[have])
        if n > 3:
            mx = ndimage.gaussian_filter1d(mx, sigma, mode="nearest")
            my = ndimage.gaussian_filter1d(my, sigma, mode="nearest")
        self.z = (zz + z0).astype(float)
        self.x = mx
        self.y = my
        step = np.sqrt(np.diff(mx) ** 2 + np.diff(my) ** 2 + 1.0)
        self.arclength = np.concatenate([[0.0], np.cumsum(step)])
        self._tree = None

    @property
    def points(self) -> np.ndarray:
        return np.column_stack([self.x, self.y, self.z])

    def tree(self):
        if self._tree is None:
            from scipy.spatial import cKDTree

            self._tree = cKDTree(self.points)
        return self._tree

    def y_at(self, z: np.ndarray) -> np.ndarray:
        return np.interp(z, self.z, self.y)

    def position(self, points: np.ndarray) -> np.ndarray:
        """Arc length (mm from the bottom, increasing superiorly) of the nearest centreline point.

        Points beyond either end of the canal continue along z.
        """
        points = np.atleast_2d(np.asarray(points, dtype=float))
        _, idx = self.tree().query(points)
        pos = self.arclength[idx].copy()
        below = points[:, 2] < self.z[0]
        above = points[:, 2] > self.z[-1]
        pos[below] = points[below, 2] - self.z[0]
        pos[above] = self.arclength[-1] + points[above, 2] - self.z[-1]
        return pos
