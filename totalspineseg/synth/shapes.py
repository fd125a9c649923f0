"""Spine coordinates and the shape primitives that the anatomy is made of.

The anatomy lives in a patient world frame (nibabel RAS+ mm: +x right, +y anterior, +z superior) around a
smooth centreline that runs through the middle of the spinal canal. Every shape is described in *spine
coordinates* (u, v, s): s is the arc length along the centreline, growing inferiorly; v is the distance
along the local anterior normal and u along the local lateral axis. Curved structures (canal, cord, sacrum)
use these coordinates directly; a rigid body uses the straight `Frame` that touches the centreline at one
arc length. Each shape knows its extent and, for the points it is given, returns a mask and a `Tissue`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

import numpy as np

__all__ = ["Tissue", "Centreline", "Frame", "Cylinder", "Annulus", "Rod", "LateralRod", "Tube", "Shape", "Paint"]


class Tissue(IntEnum):
    """What a voxel is made of: it sets the intensity, never the label."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    ORGAN = 3
    CSF = 4
    CORD = 5
    NUCLEUS = 6
    ANNULUS = 7
    MARROW = 8
    CORTEX = 9
    ARCH = 10
    EPIDURAL = 11


# --------------------------------------------------------------------------------------------------
# The centreline and spine coordinates


@dataclass(frozen=True)
class Centreline:
    """A smooth curve sampled at uniform arc length, with its moving frame."""

    s: np.ndarray  # (n,) arc length, uniform, increasing inferiorly
    point: np.ndarray  # (n, 3) world mm
    tangent: np.ndarray  # (n, 3) unit, pointing inferiorly
    anterior: np.ndarray  # (n, 3) unit normal, closest to +y
    lateral: np.ndarray  # (n, 3) unit, closest to +x
    dtangent: np.ndarray  # (n, 3) d tangent / ds

    @classmethod
    def from_points(cls, s: np.ndarray, point: np.ndarray) -> Centreline:
        ds = s[1] - s[0]
        tangent = _unit(np.gradient(point, ds, axis=0))
        anterior = _unit(np.array([0.0, 1.0, 0.0]) - tangent * tangent[:, 1:2])
        lateral = np.cross(tangent, anterior)
        return cls(s, point, tangent, anterior, lateral, np.gradient(tangent, ds, axis=0))

    def _sample(self, table: np.ndarray, s: np.ndarray) -> np.ndarray:
        pos = np.clip((s - self.s[0]) / (self.s[1] - self.s[0]), 0, len(self.s) - 1.000001)
        i = pos.astype(np.intp)
        w = (pos - i)[:, None]
        return table[i] * (1 - w) + table[i + 1] * w

    def to_world(self, u, v, s) -> np.ndarray:
        u, v, s = (np.atleast_1d(np.asarray(a, float)) for a in (u, v, s))
        return self._sample(self.point, s) + self._sample(self.lateral, s) * u[:, None] + (
            self._sample(self.anterior, s) * v[:, None]
        )

    def to_spine(self, xyz: np.ndarray, iterations: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, 3) world points -> (u, v, s), by Newton projection onto the centreline."""
        z_table = self.point[::-1, 2]
        s = np.interp(xyz[:, 2], z_table, self.s[::-1])
        for _ in range(iterations):
            r = xyz - self._sample(self.point, s)
            along = np.einsum("ij,ij->i", r, self._sample(self.tangent, s))
            slope = 1.0 - np.einsum("ij,ij->i", r, self._sample(self.dtangent, s))
            s = np.clip(s + along / np.maximum(slope, 0.2), self.s[0], self.s[-1])
        r = xyz - self._sample(self.point, s)
        u = np.einsum("ij,ij->i", r, self._sample(self.lateral, s))
        v = np.einsum("ij,ij->i", r, self._sample(self.anterior, s))
        return u, v, s

    def z_at(self, s: float) -> float:
        return float(np.interp(s, self.s, self.point[:, 2]))

    def frame(self, s: float) -> Frame:
        """The rigid frame that touches the centreline at `s`."""
        at = np.array([s], float)
        axes = np.stack([self._sample(tab, at)[0] for tab in (self.lateral, self.anterior, self.tangent)])
        return Frame(self._sample(self.point, at)[0], axes, float(s))


@dataclass(frozen=True)
class Frame:
    """Straight (u, v, s) coordinates of a rigid body: a vertebra does not bend with the spine."""

    origin: np.ndarray  # world point on the centreline at arc length `s`
    axes: np.ndarray  # rows: lateral, anterior, tangent (unit)
    s: float

    def to_world(self, u, v, s) -> np.ndarray:
        u, v, s = (np.atleast_1d(np.asarray(a, float))[:, None] for a in (u, v, s))
        return self.origin + u * self.axes[0] + v * self.axes[1] + (s - self.s) * self.axes[2]

    def to_local(self, x, y, z) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dx, dy, dz = x - self.origin[0], y - self.origin[1], z - self.origin[2]
        u, v, s = (a[0] * dx + a[1] * dy + a[2] * dz for a in self.axes)
        return u, v, s + self.s


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


# --------------------------------------------------------------------------------------------------
# Shapes, in spine coordinates. Each knows its extent (s0, s1, |u| max, v min, v max) and returns a mask
# plus a tissue (scalar or array) for the points it is given.


@dataclass(frozen=True)
class Cylinder:
    """Elliptic cylinder along s whose half-axes and centre vary linearly from top to bottom."""

    top: float
    bottom: float
    half_u: tuple[float, float]
    half_v: tuple[float, float]
    centre_v: tuple[float, float]
    centre_u: float = 0.0  # with `mirror`, one copy at +centre_u and one at -centre_u
    mirror: bool = False
    waist: float = 0.0  # relative narrowing at mid-height (vertebral bodies)
    dome: float = 0.0  # length over which the top is rounded (dens tip)
    kind: str = "plain"  # "body" | "disc" | "plain": only changes the tissue
    open_ends: bool = False  # no limit in s: the painter clips it (discs between two endplate planes)

    def extent(self):
        cv0, cv1 = self.centre_v
        hv = max(self.half_v)
        margin = 6.0 if self.open_ends else 0.0
        return (
            self.top - margin,
            self.bottom + margin,
            abs(self.centre_u) + max(self.half_u),
            min(cv0, cv1) - hv,
            max(cv0, cv1) + hv,
        )

    def evaluate(self, u, v, s, tissue_default):
        t = (s - self.top) / (self.bottom - self.top)
        tc = np.clip(t, 0.0, 1.0)
        scale = 1.0 - self.waist * np.sin(np.pi * tc)
        if self.dome > 0:
            scale = scale * np.sqrt(np.clip((s - self.top) / self.dome, 0.0, 1.0))
        a = (self.half_u[0] + (self.half_u[1] - self.half_u[0]) * tc) * scale
        b = (self.half_v[0] + (self.half_v[1] - self.half_v[0]) * tc) * scale
        cv = self.centre_v[0] + (self.centre_v[1] - self.centre_v[0]) * tc
        du = np.abs(u) - self.centre_u if self.mirror else u - self.centre_u
        r2 = (du / np.maximum(a, 1e-6)) ** 2 + ((v - cv) / np.maximum(b, 1e-6)) ** 2
        mask = r2 <= 1
        if not self.open_ends:
            mask &= (t >= 0) & (t <= 1)
        if self.kind == "disc":
            nucleus = (r2 < 0.4) & (t > 0.2) & (t < 0.8)
            return mask, np.where(nucleus, Tissue.NUCLEUS, Tissue.ANNULUS)
        if self.kind == "body":
            rim = 1.0 - 1.5 / max(min(self.half_u + self.half_v), 2.0)
            edge = (r2 > rim * rim) | (s - self.top < 1.0) | (self.bottom - s < 1.0)
            return mask, np.where(edge, Tissue.CORTEX, Tissue.MARROW)
        return mask, tissue_default


@dataclass(frozen=True)
class Annulus:
    """The space between two elliptic cylinders along s (vertebral arch ring, atlas)."""

    top: float
    bottom: float
    outer: tuple[float, float, float]  # half_u, half_v, centre_v
    inner: tuple[float, float, float]

    def extent(self):
        hu, hv, cv = self.outer
        return self.top, self.bottom, hu, cv - hv, cv + hv

    def evaluate(self, u, v, s, tissue_default):
        def inside(e):
            hu, hv, cv = e
            return (u / hu) ** 2 + ((v - cv) / hv) ** 2 <= 1

        mask = (s >= self.top) & (s <= self.bottom) & inside(self.outer) & ~inside(self.inner)
        return mask, tissue_default


@dataclass(frozen=True)
class Rod:
    """Elliptic rod in the midline, leaving (v0, s0) backwards and `angle` degrees downwards (spinous)."""

    v0: float
    s0: float
    length: float
    angle: float
    half_u: float
    half_thick: float  # across the rod, within the sagittal plane

    def _dir(self):
        a = math.radians(self.angle)
        return math.cos(a), math.sin(a)

    def extent(self):
        c, sn = self._dir()
        s_end = self.s0 + self.length * sn
        return (
            self.s0 - self.half_thick,
            s_end + self.half_thick,
            self.half_u,
            self.v0 - self.length * c - self.half_thick,
            self.v0 + self.half_thick,
        )

    def evaluate(self, u, v, s, tissue_default):
        c, sn = self._dir()
        back, down = self.v0 - v, s - self.s0
        along = back * c + down * sn
        across = -back * sn + down * c
        # The free end tapers to two thirds of the base thickness.
        taper = 1.0 - np.clip(along / self.length, 0, 1) / 3
        r2 = (u / (self.half_u * taper)) ** 2 + (across / (self.half_thick * taper)) ** 2
        return (along >= 0) & (along <= self.length) & (r2 <= 1), tissue_default


@dataclass(frozen=True)
class LateralRod:
    """A pair of rods running laterally from |u| = u0 to u1 (transverse processes)."""

    u0: float
    u1: float
    v0: float
    slope: float  # dv / d|u|: negative = posterolateral
    s0: float
    half_v: float
    half_s: float

    def extent(self):
        v_end = self.v0 + self.slope * (self.u1 - self.u0)
        return (
            self.s0 - self.half_s,
            self.s0 + self.half_s,
            self.u1,
            min(self.v0, v_end) - self.half_v,
            max(self.v0, v_end) + self.half_v,
        )

    def evaluate(self, u, v, s, tissue_default):
        au = np.abs(u)
        cv = self.v0 + self.slope * (au - self.u0)
        # Rounded tips: the section shrinks over the last few millimetres.
        tip = np.sqrt(np.clip((self.u1 - au) / 4.0, 0, 1))
        r2 = ((v - cv) / (self.half_v * tip + 1e-6)) ** 2 + ((s - self.s0) / (self.half_s * tip + 1e-6)) ** 2
        return (au >= self.u0) & (au <= self.u1) & (r2 <= 1), tissue_default


@dataclass(frozen=True)
class Tube:
    """Canal or cord: an elliptic tube centred on the centreline, radii tabulated along s."""

    s_table: tuple[float, ...]
    half_u: tuple[float, ...]
    half_v: tuple[float, ...]
    centre_v: float = 0.0

    def extent(self):
        hv = max(self.half_v)
        return self.s_table[0], self.s_table[-1], max(self.half_u), self.centre_v - hv, self.centre_v + hv

    def evaluate(self, u, v, s, tissue_default):
        a = np.interp(s, self.s_table, self.half_u)
        b = np.interp(s, self.s_table, self.half_v)
        inside_s = (s >= self.s_table[0]) & (s <= self.s_table[-1])
        r2 = (u / np.maximum(a, 1e-6)) ** 2 + ((v - self.centre_v) / np.maximum(b, 1e-6)) ** 2
        return inside_s & (r2 <= 1) & (a > 0.05), tissue_default

    def widened(self, margin: float) -> Tube:
        """The same tube with `margin` added to every non-zero radius."""
        grow = [(a + margin if a > 0 else 0.0, b + margin if b > 0 else 0.0)
                for a, b in zip(self.half_u, self.half_v, strict=False)]
        return Tube(self.s_table, tuple(g[0] for g in grow), tuple(g[1] for g in grow), self.centre_v)

    def chunks(self, length: float = 40.0) -> list[Tube]:
        """Split along s so that each piece gets a tight bounding box."""
        s = np.asarray(self.s_table)
        edges = np.arange(s[0], s[-1], length).tolist() + [s[-1]]
        pieces = []
        for a, b in zip(edges[:-1], edges[1:], strict=False):
            grid = np.unique(np.concatenate([[a, b], s[(s > a) & (s < b)]]))
            pieces.append(
                Tube(
                    tuple(grid),
                    tuple(np.interp(grid, s, self.half_u)),
                    tuple(np.interp(grid, s, self.half_v)),
                    self.centre_v,
                )
            )
        return pieces


class Shape(Protocol):
    def extent(self) -> tuple[float, float, float, float, float]: ...

    def evaluate(self, u, v, s, tissue_default) -> tuple[np.ndarray, np.ndarray | Tissue]: ...


@dataclass(frozen=True)
class Paint:
    """One shape to paint. Without `frame` the shape follows the curved spine coordinates."""

    label: int  # 0 paints tissue only
    shape: Shape
    tissue: Tissue
    frame: Frame | None = None
    # (frame above, its lower endplate s, frame below, its upper endplate s): keeps a disc between the planes.
    between: tuple[Frame, float, Frame, float] | None = None
