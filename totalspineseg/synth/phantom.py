"""Seedable synthetic spine phantoms with exact ground truth in the final label scheme.

The anatomy lives in a patient world frame (nibabel RAS+ mm: +x right, +y anterior, +z superior) around a
smooth centreline that runs through the middle of the spinal canal. Every shape is described in *spine
coordinates* (u, v, s): s is the arc length along the centreline, growing inferiorly; v is the distance
along the local anterior normal and u along the local lateral axis. The canal, cord, sacrum and soft
tissue follow these curved coordinates. Each vertebra is rigid, in the straight frame that touches the
centreline at its centre (so it is perpendicular to the local tangent), and each disc fills the wedge
between the two endplate planes around it: the curvature of the spine goes into the discs.

Rendering maps the voxel centres of any grid (orientation code, anisotropic voxels, small oblique tilt) to
spine coordinates, then paints each shape inside its own bounding box: discs, then bone, then the canal,
then the cord, so the canal tube stays free of bone. Labels are exact at voxel centres (nearest sampling).
Intensities come from a tissue map through a T1w- or T2w-like table, followed by slight smoothing (partial
volume), a bias field and Rician noise.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Protocol

import nibabel as nib
import numpy as np
from scipy import ndimage

from .. import __version__
from .. import labels as L
from ..volume import save_nifti

__all__ = [
    "FOVS",
    "CONTRASTS",
    "Volume3D",
    "Anatomy",
    "build_anatomy",
    "fov_box",
    "make_grid",
    "render",
    "make_phantom",
    "make_localizer",
    "write_phantom",
    "write_bids_dataset",
    "check_orientation",
    "check_missing_disc",
]

FOVS = ("whole", "cervical", "cervicothoracic", "thoracic", "thoracolumbar", "lumbar")
CONTRASTS = ("T2w", "T1w")

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
_TOP_MARGIN_MM = 14.0  # above C1: foramen magnum / skull base
_BOTTOM_MARGIN_MM = 12.0  # below the sacral tip

_LOCALIZER_ORIENTATION = "PIR"
_LOCALIZER_VOXEL = (1.2, 1.2, 4.0)

_COARSE_MM = 4.0  # spacing of the exact centreline projection; finer voxels are interpolated
_EPIDURAL_MM = 1.5  # free space between the canal tube and the surrounding bone


class Tissue(IntEnum):
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


# --------------------------------------------------------------------------------------------------
# Anatomy


@dataclass(frozen=True)
class Anatomy:
    """A whole spine: centreline, landmark positions along it and the ordered list of shapes to paint."""

    centreline: Centreline
    vertebra_span: dict[int, tuple[float, float]]  # label -> (top, bottom) of the body (C1: the ring)
    disc_span: dict[int, tuple[float, float]]  # label -> (top, bottom), including a removed disc
    body_front: tuple[tuple[float, ...], tuple[float, ...]]  # (s, v of the anterior body wall)
    skin_back: float  # distance from canal centre to the posterior skin
    paints: tuple[Paint, ...]
    s_bottom: float  # the model starts at s = 0, a little above C1


@dataclass(frozen=True)
class _Vertebra:
    label: int
    top: float  # s of the upper endplate (C1: top of the ring)
    bottom: float
    half_u: float  # body half-width
    half_v: float  # body half-depth
    centre_v: float  # body centre, anterior of the canal centre

    @property
    def region(self) -> str:
        return _region(self.label)

    @property
    def mid(self) -> float:
        return (self.top + self.bottom) / 2


@dataclass(frozen=True)
class _Person:
    """Everything random about one phantom spine, drawn once from its seed."""

    body: dict[int, tuple[float, float, float]]  # vertebra -> height, width, depth factors
    disc: dict[int, float]  # vertebra below -> height factor
    curve: dict[str, float]  # curvature amplitudes (mm)
    conus: float  # where the cord ends, as a fraction from mid L1 to mid L2
    skin_back: float  # distance from the canal centre to the skin of the back

    @classmethod
    def draw(cls, seed: int) -> _Person:
        rng = np.random.default_rng([seed, 0])

        def jitter(sd: float, limit: float) -> float:
            return 1.0 + float(np.clip(rng.normal(0, sd), -limit, limit))

        # Drawn for every possible vertebra, so that an L6 does not reshuffle the others.
        body = {v: (jitter(0.025, 0.05), jitter(0.04, 0.08), jitter(0.04, 0.08)) for v in L.VERTEBRAE_POSSIBLE}
        disc = {v: jitter(0.06, 0.12) for v in L.VERTEBRAE_POSSIBLE}
        curve = {
            "cervical": rng.uniform(6, 11),
            "thoracic": rng.uniform(11, 17),
            "lumbar": rng.uniform(8, 13),
            "sacral": rng.uniform(18, 26),
            "lateral": rng.uniform(-5, 5),
        }
        return cls(body, disc, curve, float(rng.uniform(0.2, 0.8)), float(rng.uniform(52, 60)))


# Vertebra values by short name ("C3", "T12", "L6"): anatomy is written by name, never by number.
_V = {s.short: v for v, s in L.FINAL.items() if s.kind == "vertebra" and v in L.VERTEBRAE_POSSIBLE}

# Region-wise posterior arch: lateral / posterior ring thickness; spinous length, angle below the
# horizontal (degrees), half-width, half-thickness; transverse process reach and slope (dv / d|u|).
_ARCH = {
    "C": dict(t_lat=5.0, t_post=3.5, sp_len=13.0, sp_angle=20.0, sp_hu=2.5, sp_ht=3.5, tp_reach=25.0, tp_slope=0.3),
    "T": dict(t_lat=5.5, t_post=4.5, sp_len=25.0, sp_angle=50.0, sp_hu=2.5, sp_ht=4.0, tp_reach=33.0, tp_slope=-0.45),
    "L": dict(t_lat=7.0, t_post=6.0, sp_len=24.0, sp_angle=8.0, sp_hu=3.5, sp_ht=8.0, tp_reach=36.0, tp_slope=-0.05),
}
# Half-axes (LR, AP) of the canal and of the cord by region; "C1" is the foramen magnum level.
_CANAL = {"C1": (14.0, 9.0), "C": (11.5, 7.0), "T": (8.5, 7.0), "L": (11.0, 8.0)}
_CORD = {"C": (5.5, 3.8), "T": (4.5, 3.4), "L": (5.0, 3.8)}
_ATLAS_HEIGHT = 10.0
_ATLAS_JOINT = 3.0  # C1-C2 gap: a joint, not a disc
_SACRUM_LENGTH = 85.0
_DENS_RADIUS = 5.0


def _region(label: int) -> str:
    return L.FINAL[label].short[0]  # "C", "T" or "L"


def _rank(label: int) -> int:
    return int(L.FINAL[label].short[1:])  # 3 for C3, 12 for T12


def _disc_above(vertebra: int) -> int:
    return next(d for d in L.DISCS_POSSIBLE if L.vertebra_below_disc(d) == vertebra)


def _body_size(label: int) -> tuple[float, float, float]:
    """Typical (height, width, depth) of a vertebral body in mm."""
    region, n = _region(label), _rank(label)
    if label == L.C2:
        return 15.0, 17.0, 15.0
    if region == "C":
        i = n - 3  # C3 = 0 .. C7 = 4
        return 13.5 + 0.4 * i, 16.0 + 0.8 * i, 15.0 + 0.3 * i
    if region == "T":
        j = (n - 1) / 11  # T1 = 0 .. T12 = 1
        return 17.0 + 7.0 * j, 24.0 + 14.0 * j, 17.0 + 13.0 * j
    k = min(n - 1, 4)  # L1 = 0 .. L5 = 4; an L6 is like L5
    return 25.5 + 0.6 * k, 40.0 + 2.5 * k, 30.0 + 1.2 * k


def _disc_height(below: int) -> float:
    """Typical height of the disc above vertebra `below` (or above the sacrum)."""
    if below in (L.SACRUM, L.VERTEBRA_L6):
        return 11.0
    region, n = _region(below), _rank(below)
    if region == "C":
        return 4.5 + 0.25 * (n - 3)
    if region == "T":
        return 5.0 if n == 1 else 4.5 + 2.0 * (n - 2) / 10
    return 7.5 if n == 1 else 9.0 + 0.8 * (n - 2)


def build_anatomy(seed: int = 0, extra_lumbar: bool = False, missing_disc: int | None = None) -> Anatomy:
    """The spine of phantom `seed`. The same seed gives the same person in every field of view."""
    check_missing_disc(missing_disc, extra_lumbar)
    person = _Person.draw(seed)
    vertebrae, discs, sacrum_top = _stack(L.VERTEBRAE_POSSIBLE if extra_lumbar else L.VERTEBRAE_DEFAULT, person)
    sacrum_len = _SACRUM_LENGTH * person.body[L.SACRUM][0]
    centreline = _make_centreline(vertebrae, sacrum_top, sacrum_len, person.curve)

    canal, cord = _canal_and_cord(vertebrae, sacrum_top, sacrum_len, person.conus)
    # Vertebrae are rigid, each in the frame of its own centre: the curvature goes into the discs.
    frames = {v.label: centreline.frame(v.mid) for v in vertebrae}
    frames[L.SACRUM] = centreline.frame(sacrum_top)
    paints = [Paint(0, piece, Tissue.EPIDURAL) for piece in canal.widened(_EPIDURAL_MM).chunks()]
    paints += _disc_paints(vertebrae, discs, missing_disc, frames)
    paints += _atlas_paints(vertebrae[0], frames[L.C1])
    for vt in vertebrae[1:]:
        paints += _vertebra_paints(vt, discs, frames[vt.label])
    paints += _sacrum_paints(vertebrae[-1], sacrum_top, sacrum_len)
    paints += [Paint(L.CANAL, piece, Tissue.CSF) for piece in canal.chunks()]
    paints += [Paint(L.CORD, piece, Tissue.CORD) for piece in cord.chunks()]

    span = {v.label: (v.top, v.bottom) for v in vertebrae}
    span[L.SACRUM] = (sacrum_top, sacrum_top + sacrum_len)
    front = ([v.top for v in vertebrae[1:]], [v.centre_v + v.half_v for v in vertebrae[1:]])
    return Anatomy(
        centreline=centreline,
        vertebra_span=span,
        disc_span=discs,
        body_front=(tuple(front[0]), tuple(front[1])),
        skin_back=person.skin_back,
        paints=tuple(paints),
        s_bottom=sacrum_top + sacrum_len + _BOTTOM_MARGIN_MM,
    )


def _stack(sequence, person: _Person) -> tuple[list[_Vertebra], dict[int, tuple[float, float]], float]:
    """Pile vertebrae and discs down the spine: arc-length spans, body sizes, and where the sacrum starts."""
    s = _TOP_MARGIN_MM
    c1_bottom = s + _ATLAS_HEIGHT * person.body[L.C1][0]
    vertebrae, discs = [_Vertebra(L.C1, s, c1_bottom, 0.0, 0.0, 0.0)], {}
    s = c1_bottom + _ATLAS_JOINT
    for label in sequence[1:]:
        if label != L.C2:
            d = _disc_height(label) * person.disc[label]
            discs[_disc_above(label)] = (s, s + d)
            s += d
        if label == L.SACRUM:
            break
        (h, w, depth), (jh, jw, jd) = _body_size(label), person.body[label]
        half_v = depth * jd / 2
        centre_v = _CANAL[_region(label)][1] + _EPIDURAL_MM + half_v
        vertebrae.append(_Vertebra(label, s, s + h * jh, w * jw / 2, half_v, centre_v))
        s += h * jh
    return vertebrae, discs, s


def _make_centreline(vertebrae, sacrum_top, sacrum_len, curve) -> Centreline:
    """Cervical lordosis, thoracic kyphosis, lumbar lordosis and the sacral curve as smooth bumps in y."""
    mid = {v.label: v.mid for v in vertebrae}

    def bump(d, centre, width):
        return np.exp(-0.5 * ((d - centre) / width) ** 2)

    # Parametrised by depth below the top; arc length differs by a few percent, so the bumps sit close enough.
    depth = np.arange(-200.0, sacrum_top + sacrum_len + 250.0, 0.5)
    y = (
        curve["cervical"] * bump(depth, mid[_V["C5"]], 35.0)
        - curve["thoracic"] * bump(depth, mid[_V["T7"]], 95.0)
        + curve["lumbar"] * bump(depth, mid[_V["L3"]], 55.0)
        - curve["sacral"] * bump(depth, sacrum_top + sacrum_len, 50.0)
    )
    x = curve["lateral"] * bump(depth, mid[_V["T8"]], 80.0)
    # Scanner-like placement: the canal runs about 4 cm behind the isocentre, C1 well above it.
    points = np.stack([x, y - 40.0, 350.0 - depth], axis=1)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    arc -= np.interp(0.0, depth, arc)
    s = np.arange(arc[0], arc[-1], 0.5)
    return Centreline.from_points(s, np.stack([np.interp(s, arc, points[:, k]) for k in range(3)], axis=1))


def _disc_paints(vertebrae, discs, missing_disc, frames) -> list[Paint]:
    """Each disc fills the wedge between two endplate planes; its section blends the two bodies'."""
    paints = []
    for above, below in zip(vertebrae[1:], vertebrae[2:] + [None], strict=False):
        label = _disc_above(L.SACRUM if below is None else below.label)
        top, bottom = discs[label]
        if label == missing_disc:
            continue
        if below is None:  # the sacrum's top continues the last lumbar body
            below = _Vertebra(L.SACRUM, bottom, bottom, above.half_u, above.half_v, above.centre_v)
        shape = Cylinder(
            top,
            bottom,
            (above.half_u, below.half_u),
            (above.half_v, below.half_v),
            (above.centre_v, below.centre_v),
            waist=-0.04,  # a slight bulge
            kind="disc",
            open_ends=True,
        )
        planes = (frames[above.label], above.bottom, frames[below.label], below.top)
        paints.append(Paint(label, shape, Tissue.ANNULUS, between=planes))
    return paints


def _vertebra_paints(vt: _Vertebra, discs, frame: Frame) -> list[Paint]:
    """Body, arch ring (pedicles and laminae), articular pillars, transverse and spinous processes."""
    a = _ARCH[vt.region]
    cu, cv = _CANAL[vt.region]
    h = vt.bottom - vt.top
    body = Cylinder(vt.top, vt.bottom, (vt.half_u,) * 2, (vt.half_v,) * 2, (vt.centre_v,) * 2, waist=0.06, kind="body")
    inner = (cu + _EPIDURAL_MM, cv + _EPIDURAL_MM, 0.0)
    outer = (inner[0] + a["t_lat"], inner[1] + a["t_post"], 0.0)
    ring_top, ring_bottom = vt.top + 0.08 * h, vt.bottom - 0.2 * h
    ring_mid = (ring_top + ring_bottom) / 2
    ring = Annulus(ring_top, ring_bottom, outer, inner)
    sp_len = a["sp_len"] * (1.7 if vt.label == _V["C7"] else 1.0)  # vertebra prominens
    spinous = Rod(-outer[1] + 1.0, ring_mid, sp_len, a["sp_angle"], a["sp_hu"], a["sp_ht"])
    transverse = LateralRod(outer[0] - 1.5, a["tp_reach"], -0.2 * cv, a["tp_slope"], ring_mid, 3.5, 4.0)
    # The pillars reach into the neighbouring disc gaps, leaving a facet joint space between vertebrae.
    gap_above = _gap(discs, bottom=vt.top)
    gap_below = _gap(discs, top=vt.bottom)
    pillars = Cylinder(
        vt.top - 0.4 * gap_above,
        vt.bottom + 0.4 * gap_below,
        (0.6 * a["t_lat"],) * 2,
        (4.0,) * 2,
        (-0.6 * cv,) * 2,
        centre_u=inner[0] + 0.5 * a["t_lat"],
        mirror=True,
    )
    paints = [Paint(vt.label, body, Tissue.MARROW, frame)]
    paints += [Paint(vt.label, shape, Tissue.ARCH, frame) for shape in (ring, pillars, transverse, spinous)]
    if vt.label == L.C2:
        paints.append(_dens(vt, frame))
    return paints


def _gap(discs, top: float | None = None, bottom: float | None = None) -> float:
    """Height of the disc that starts at `top` or ends at `bottom`; the C1-C2 joint when there is none."""
    for t, b in discs.values():
        if t == top or b == bottom:
            return b - t
    return _ATLAS_JOINT


def _dens_centre_v() -> float:
    return _CANAL["C"][1] + _EPIDURAL_MM + 1.0 + _DENS_RADIUS


def _dens(c2: _Vertebra, frame: Frame) -> Paint:
    """The odontoid process: a rounded peg rising from C2 into the atlas ring."""
    cv = _dens_centre_v()
    r = (_DENS_RADIUS, _DENS_RADIUS + 0.5)
    shape = Cylinder(_TOP_MARGIN_MM - 1.0, c2.top + 2.0, r, r, (cv, cv), dome=4.0, kind="body")
    return Paint(L.C2, shape, Tissue.MARROW, frame)


def _atlas_paints(c1: _Vertebra, frame: Frame) -> list[Paint]:
    """C1: anterior arch, lateral masses and posterior arch, one ring around both the dens and the canal."""
    cu, cv = _CANAL["C1"]
    back = cv + _EPIDURAL_MM
    front = _dens_centre_v() + _DENS_RADIUS + 1.5
    inner_cv, inner_hv = (front - back) / 2, (front + back) / 2
    # Wide enough that the canal's full width fits where the canal centre (v = 0) crosses the ellipse.
    inner_hu = (cu + _EPIDURAL_MM) / math.sqrt(1 - (inner_cv / inner_hv) ** 2)
    inner = (inner_hu, inner_hv, inner_cv)
    outer = (36.0, inner_hv + 5.5, inner_cv)
    return [Paint(L.C1, Annulus(c1.top, c1.bottom, outer, inner), Tissue.ARCH, frame)]


def _sacrum_paints(last: _Vertebra, top: float, length: float) -> list[Paint]:
    """A tapering, curved block: an S1-like body, the alae, and a posterior wall around the sacral canal."""
    bottom = top + length
    cu, cv = _CANAL["L"]
    body = Cylinder(
        top, bottom, (last.half_u, 0.3 * last.half_u), (last.half_v * 0.95, 6.0), (last.centre_v, 7.0), kind="body"
    )
    alae = Cylinder(top, top + 0.8 * length, (36.0, 12.0), (12.0, 6.0), (0.45 * last.centre_v, 3.0))
    posterior = Cylinder(top, bottom - 8.0, (cu + 7.0, 7.0), (cv + 6.0, 5.0), (0.0, 0.0))
    return [
        Paint(L.SACRUM, body, Tissue.MARROW),
        Paint(L.SACRUM, alae, Tissue.MARROW),
        Paint(L.SACRUM, posterior, Tissue.ARCH),
    ]


def _canal_and_cord(vertebrae, sacrum_top, sacrum_len, conus_fraction) -> tuple[Tube, Tube]:
    """Canal from above the foramen magnum into the sacrum; cord down to a conus between mid L1 and mid L2."""
    knots = [-40.0] + [v.mid for v in vertebrae]
    canal = [_CANAL["C1"]] + [_CANAL["C1" if v.label == L.C1 else v.region] for v in vertebrae]
    # The lumbar enlargement of the cord starts around T10.
    enlarged = set(L.VERTEBRAE_POSSIBLE[L.VERTEBRAE_POSSIBLE.index(_V["T10"]) :])
    cord = [_CORD["C"]] + [_CORD["L" if v.label in enlarged else v.region] for v in vertebrae]

    hiatus = sacrum_top + 0.65 * sacrum_len
    lumbar_u, lumbar_v = _CANAL["L"]
    canal_tube = Tube(
        tuple(knots + [sacrum_top + 5.0, hiatus - 5.0, hiatus]),
        tuple([c[0] for c in canal] + [0.85 * lumbar_u, 5.0, 0.0]),
        tuple([c[1] for c in canal] + [0.7 * lumbar_v, 3.0, 0.0]),
    )

    mid = {v.label: v.mid for v in vertebrae}
    conus = mid[_V["L1"]] + conus_fraction * (mid[_V["L2"]] - mid[_V["L1"]])
    taper = 25.0
    keep = [i for i, s in enumerate(knots) if s < conus - taper]
    # The conus narrows over its last centimetres (sqrt profile: rounded, then pointed).
    fractions = (0.0, 0.5, 0.8, 1.0)
    cord_tube = Tube(
        tuple([knots[i] for i in keep] + [conus - taper * (1 - f) for f in fractions]),
        tuple([cord[i][0] for i in keep] + [_CORD["L"][0] * math.sqrt(1 - f) for f in fractions]),
        tuple([cord[i][1] for i in keep] + [_CORD["L"][1] * math.sqrt(1 - f) for f in fractions]),
        centre_v=0.8,  # the cord lies slightly anterior in the canal
    )
    return canal_tube, cord_tube


# --------------------------------------------------------------------------------------------------
# Fields of view and grids


def _limit_s(anat: Anatomy, limit) -> float:
    if limit == "top":
        return 0.0
    if limit == "bottom":
        return anat.s_bottom
    name, fraction = limit
    top, bottom = anat.vertebra_span[_V[name]]
    return top + fraction * (bottom - top)


def fov_box(anat: Anatomy, fov: str) -> np.ndarray:
    """World box [[xmin, ymin, zmin], [xmax, ymax, zmax]] of a field of view."""
    if fov not in _FOV_LIMITS:
        raise ValueError(f"unknown field of view {fov!r}; choose from {', '.join(FOVS)}")
    s0, s1 = (_limit_s(anat, lim) for lim in _FOV_LIMITS[fov])
    cl = anat.centreline
    inside = (cl.s >= s0) & (cl.s <= s1)
    pts = cl.point[inside]
    x_mid = (pts[:, 0].min() + pts[:, 0].max()) / 2
    lo = [x_mid - _FOV_LR_MM / 2, pts[:, 1].min() - _FOV_POSTERIOR_MM, cl.z_at(s1)]
    hi = [x_mid + _FOV_LR_MM / 2, pts[:, 1].max() + _FOV_ANTERIOR_MM, cl.z_at(s0)]
    return np.array([lo, hi])


def check_orientation(code: str) -> str:
    """Return the upper-case axis code, or raise ValueError if it is not one of the 48 valid codes."""
    code = str(code).upper()
    pairs = ("LR", "PA", "IS")
    if len(code) != 3 or sorted(next((i for i, p in enumerate(pairs) if c in p), -1) for c in code) != [0, 1, 2]:
        raise ValueError(f"invalid orientation code {code!r}: use one letter of each pair L/R, P/A, I/S, e.g. LPS")
    return code


def make_grid(box: np.ndarray, orientation: str, voxel, oblique_deg: float = 0.0) -> tuple[tuple, np.ndarray]:
    """A grid covering `box` (world) with axis code `orientation`, voxel sizes and an optional tilt."""
    ornt = nib.orientations.axcodes2ornt(tuple(check_orientation(orientation)))
    voxel = np.asarray(voxel, float)
    if voxel.shape != (3,) or not np.all(voxel > 0):
        raise ValueError(f"voxel sizes must be three positive numbers in mm, got {' '.join(map(str, voxel.tolist()))}")
    if abs(oblique_deg) > 30:
        raise ValueError(f"oblique tilt must be within 30 degrees, got {oblique_deg}")
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


# --------------------------------------------------------------------------------------------------
# Rendering


def _spine_coords(anat: Anatomy, shape, affine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u, v, s) at every voxel centre: exact on a ~4 mm lattice, trilinear in between (the map is smooth)."""
    vox = np.linalg.norm(affine[:3, :3], axis=0)
    steps = [max(1, int(_COARSE_MM // v)) for v in vox]
    axes = [np.arange(math.ceil((n - 1) / k) + 1) * k for n, k in zip(shape, steps, strict=False)]
    ijk = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    coarse_shape = tuple(len(a) for a in axes)
    return tuple(
        _upsample(c.reshape(coarse_shape).astype(np.float32), steps, shape) for c in anat.centreline.to_spine(xyz)
    )


def _upsample(coarse: np.ndarray, steps, shape) -> np.ndarray:
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
    if contrast not in _INTENSITY:
        raise ValueError(f"unknown contrast {contrast!r}; choose from {', '.join(CONTRASTS)}")
    shape = tuple(int(n) for n in shape)
    u, v, s = _spine_coords(anat, shape, affine)
    labels, tissue = _paint(anat, shape, affine, u, v, s)
    rng = np.random.default_rng(noise_seed)
    image = _image(tissue, contrast, u, v, s, affine, rng)
    return Volume3D(image=image, labels=labels, affine=np.asarray(affine, np.float64))


def make_phantom(
    seed: int = 0,
    fov: str = "whole",
    orientation: str = "RAS",
    voxel=(1.0, 1.0, 1.0),
    contrast: str = "T2w",
    extra_lumbar: bool = False,
    missing_disc: int | None = None,
    oblique_deg: float = 0.0,
) -> Volume3D:
    """A phantom image and its exact labels for one field of view of person `seed`."""
    anat = build_anatomy(seed, extra_lumbar, missing_disc)
    shape, affine = make_grid(fov_box(anat, fov), orientation, voxel, oblique_deg)
    noise_seed = [seed, 1, FOVS.index(fov), CONTRASTS.index(contrast)]
    return render(anat, shape, affine, contrast, noise_seed)


def make_localizer(seed: int = 0, extra_lumbar=False, missing_disc=None, contrast="T2w") -> Volume3D:
    """A low-resolution sagittal whole-spine view of the same person in the same world space."""
    anat = build_anatomy(seed, extra_lumbar, missing_disc)
    return render(anat, *_localizer_grid(anat), contrast, [seed, 2, CONTRASTS.index(contrast)])


def _localizer_grid(anat: Anatomy) -> tuple[tuple, np.ndarray]:
    return make_grid(fov_box(anat, "whole"), _LOCALIZER_ORIENTATION, _LOCALIZER_VOXEL)


def check_missing_disc(missing_disc: int | None, extra_lumbar: bool = False) -> None:
    if missing_disc is None:
        return
    allowed = L.DISCS_POSSIBLE if extra_lumbar else L.DISCS_DEFAULT
    if missing_disc not in allowed:
        hint = " (L5-L6 exists only with an extra lumbar vertebra)" if missing_disc == L.DISC_L5_L6 else ""
        choices = f"{allowed[0]}..{allowed[-1]}"
        raise ValueError(f"missing disc {missing_disc} is not a disc label{hint}; discs are {choices}")


# --------------------------------------------------------------------------------------------------
# Writing


def write_phantom(
    outdir,
    seed: int = 0,
    fov: str = "whole",
    orientation: str = "RAS",
    voxel=(1.0, 1.0, 1.0),
    contrast: str = "T2w",
    extra_lumbar: bool = False,
    missing_disc: int | None = None,
    localizer: bool = False,
    oblique_deg: float = 0.0,
) -> dict[str, Path]:
    """Write image.nii.gz and labels.nii.gz (and the localizer pair) into `outdir`."""
    outdir = Path(outdir)
    ph = make_phantom(seed, fov, orientation, voxel, contrast, extra_lumbar, missing_disc, oblique_deg)
    pair = _save_pair(ph, outdir / "image.nii.gz", outdir / "labels.nii.gz")
    paths = dict(zip(("image", "labels"), pair, strict=False))
    if localizer:
        loc = make_localizer(seed, extra_lumbar, missing_disc)
        pair = _save_pair(loc, outdir / "localizer.nii.gz", outdir / "localizer_labels.nii.gz")
        paths |= dict(zip(("localizer", "localizer_labels"), pair, strict=False))
    return paths


def _save_pair(vol: Volume3D, image_path: Path, labels_path: Path) -> tuple[Path, Path]:
    """Write an image and its labels (atomically, qform = sform = affine)."""
    for folder in {image_path.parent, labels_path.parent}:
        folder.mkdir(parents=True, exist_ok=True)
    return (
        save_nifti(image_path, vol.image, vol.affine, dtype=np.float32),
        save_nifti(labels_path, vol.labels, vol.affine, dtype=np.uint8),
    )


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# Acquisitions the BIDS writer draws from: (field of view, orientation, voxel sizes).
_BIDS_ACQUISITIONS = (
    ("whole", "PIR", (1.5, 1.5, 4.0)),
    ("whole", "ASL", (1.5, 1.5, 3.5)),
    ("cervical", "RAS", (1.3, 1.3, 1.3)),
    ("cervical", "PIL", (0.9, 0.9, 3.0)),
    ("cervicothoracic", "ASR", (1.0, 1.0, 3.5)),
    ("thoracic", "LPS", (1.0, 1.0, 3.0)),
    ("thoracolumbar", "PSR", (1.1, 1.1, 3.5)),
    ("lumbar", "LAS", (1.0, 1.0, 4.0)),
    ("lumbar", "RPI", (1.5, 1.5, 1.5)),
)
_LOCALIZED_FOVS = ("thoracic", "lumbar", "cervical")


def write_bids_dataset(outdir, participants: int, seed: int, sessions: int = 0, localizer: bool = False) -> Path:
    """A raw BIDS dataset of phantoms, with the ground truth under derivatives/labels."""
    if participants < 1:
        raise ValueError(f"--participants must be at least 1, got {participants}")
    if sessions < 0:
        raise ValueError(f"--sessions must be zero or more, got {sessions}")
    root = Path(outdir)
    deriv = root / "derivatives" / "labels"
    deriv.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in range(1, participants + 1):
        person = seed * 1000 + p
        rng = np.random.default_rng([seed, p])
        rows.append((f"sub-{p:02d}", int(rng.integers(20, 80)), str(rng.choice(["F", "M"])), person))
        for ses in range(1, sessions + 1) if sessions else [None]:
            _write_session(root, deriv, p, ses, person, rng, localizer)
    _write_bids_metadata(root, deriv, rows)
    return root


def _write_session(root, deriv, p, ses, person, rng, localizer) -> None:
    entities = f"sub-{p:02d}" + (f"_ses-{ses:02d}" if ses else "")
    rel = Path(f"sub-{p:02d}") / (f"ses-{ses:02d}" if ses else "") / "anat"
    anat = build_anatomy(person)
    contrast = str(rng.choice(CONTRASTS))
    if localizer:
        fov = str(rng.choice(_LOCALIZED_FOVS))
        choices = [a for a in _BIDS_ACQUISITIONS if a[0] == fov]
        _, orientation, voxel = choices[int(rng.integers(len(choices)))]
    else:
        fov, orientation, voxel = _BIDS_ACQUISITIONS[int(rng.integers(len(_BIDS_ACQUISITIONS)))]
    oblique = float(rng.uniform(-6, 6))
    main = render(anat, *make_grid(fov_box(anat, fov), orientation, voxel, oblique), contrast, [person, 3, ses or 0])
    _save_pair(main, root / rel / f"{entities}_{contrast}.nii.gz", deriv / rel / f"{entities}_desc-spine_dseg.nii.gz")
    if localizer:
        loc = render(anat, *_localizer_grid(anat), "T2w", [person, 4, ses or 0])
        name = f"{entities}_acq-localizer"
        _save_pair(loc, root / rel / f"{name}_T2w.nii.gz", deriv / rel / f"{name}_desc-spine_dseg.nii.gz")


def _write_bids_metadata(root: Path, deriv: Path, rows) -> None:
    generated = [{"Name": "totalspineseg-phantom", "Version": __version__}]
    raw = {
        "Name": "TotalSpineSeg synthetic spine phantoms",
        "BIDSVersion": "1.10.0",
        "DatasetType": "raw",
        "License": "CC0",
        "Authors": ["totalspineseg-phantom"],
        "GeneratedBy": generated,
    }
    labels = {
        "Name": "Ground-truth spine labels of the phantoms",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "License": "CC0",
        "GeneratedBy": generated,
    }
    _write_text(root / "dataset_description.json", json.dumps(raw, indent=2) + "\n")
    _write_text(deriv / "dataset_description.json", json.dumps(labels, indent=2) + "\n")
    tsv = "participant_id\tage\tsex\tphantom_seed\n" + "".join(f"{r[0]}\t{r[1]}\t{r[2]}\t{r[3]}\n" for r in rows)
    _write_text(root / "participants.tsv", tsv)
    columns = {
        "age": {"Description": "Age of the (synthetic) participant", "Units": "year"},
        "sex": {"Description": "Sex of the (synthetic) participant", "Levels": {"F": "female", "M": "male"}},
        "phantom_seed": {"Description": "Seed of build_anatomy(); the same seed gives the same spine"},
    }
    _write_text(root / "participants.json", json.dumps(columns, indent=2) + "\n")
    _write_text(root / "README", _README)
    dseg = "index\tname\tabbreviation\n" + "".join(f"{v}\t{s.name}\t{s.abbreviation}\n" for v, s in L.FINAL.items())
    _write_text(deriv / "desc-spine_dseg.tsv", dseg)


_README = """\
Synthetic spine MRI phantoms written by totalspineseg-phantom.

Each participant is a seeded synthetic spine (vertebrae with posterior arches, discs, C1 ring, sacrum,
spinal canal and cord) rendered with T1w- or T2w-like contrast, a bias field and Rician noise, in various
fields of view, orientations and voxel sizes. Images marked acq-localizer are low-resolution whole-spine
views in the same scanner space as the participant's main image.

The exact ground truth, in the TotalSpineSeg final label scheme, is under derivatives/labels
(desc-spine_dseg). These images are synthetic and contain no human data.
"""
