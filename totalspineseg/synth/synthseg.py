"""SynthSeg-style training images drawn on composite spines: random contrast, random acquisition.

One seed gives one image and its exact labels:

1. a composite spine (``composite``), bent along a drawn centreline (lordosis, kyphosis, scoliosis, a tilt)
   and deformed by a smooth random displacement;
2. an acquisition: a field of view, a plane (sagittal, axial, coronal or 3D), voxel sizes from 0.5 mm to
   thick slices, any of the 48 orientation codes, an optional oblique tilt;
3. intensities: a Gaussian per label (disc nuclei and vertebral cortex apart), drawn either in an MR-like
   order (T1w or T2w) or at random; partial-volume blur, a slice profile, a bias field, gamma, Rician noise.

The labels are sampled on the same grid (nearest), so they are exact for the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .. import labels as L
from .composite import BLOB_LABELS, CONTEXT, SACRAL_REMNANT, Composite, add_context, build_composite, context_to_zero
from .grid import make_grid
from .library import Library
from .render import Volume3D, spine_coords, upsample
from .shapes import Centreline

__all__ = ["SynthSpec", "draw_spec", "render_synthetic", "FOV_LIMITS", "SYNTH_VERSION"]

#: What `draw_spec` draws: 1 = the images of lite stage 1; 2 = more T2w-like contrasts, sacral remnant discs in
#: 85% of spines, a fine tissue texture in 70% of images. The lite recipe records the version of every stage.
SYNTH_VERSION = 2

# Field of view along the spine: (vertebra at the top, vertebra at the bottom); None = the end of the spine.
FOV_LIMITS = {
    "whole": (None, None),
    "cervical": (None, 22),  # skull base to T2
    "cervicothoracic": (None, 27),
    "thoracic": (22, 31),
    "thoracolumbar": (26, None),
    "lumbar": (31, None),
}
_FOV_WEIGHTS = {"whole": 0.15, "cervical": 0.3, "cervicothoracic": 0.1, "thoracic": 0.05, "thoracolumbar": 0.1,
                "lumbar": 0.3}
_AXES = ("LR", "PA", "IS")
_PLANES = {"sagittal": 0, "coronal": 1, "axial": 2}  # the world axis the slices are thin along


@dataclass(frozen=True)
class SynthSpec:
    seed: int
    fov: str
    plane: str  # sagittal | coronal | axial | 3d
    orientation: str
    voxel: tuple[float, float, float]
    oblique_deg: float
    extra_lumbar: bool
    missing_disc: int | None
    contrast: str  # T1w | T2w | random
    sacral_remnants: int = 0  # remnant discs drawn into the sacrum (S1-S2, S2-S3)
    texture_sd: float = 0.0  # a fine multiplicative texture (log sd) over every tissue; 0 = flat tissues

    @property
    def name(self) -> str:
        return f"synth{self.seed:06d}_{self.fov}_{self.plane}_{self.orientation}_{self.contrast}"


def draw_spec(seed: int, version: int = SYNTH_VERSION) -> SynthSpec:
    if version not in (1, 2):
        raise ValueError(f"unknown synthetic image version {version} (1 or 2)")
    rng = np.random.default_rng([seed, 17])
    fov = str(rng.choice(list(_FOV_WEIGHTS), p=list(_FOV_WEIGHTS.values())))
    plane = str(rng.choice(["sagittal", "axial", "coronal", "3d"], p=[0.6, 0.22, 0.05, 0.13]))
    in_plane = float(rng.uniform(0.7, 1.3))
    if plane == "3d":
        voxel = (in_plane,) * 3
    else:
        thick = float(rng.uniform(2.5, 8.0) if plane == "axial" else rng.uniform(0.8, 5.0))
        voxel = (in_plane, in_plane, thick)
    orientation = _orientation(rng, plane)
    oblique = float(rng.uniform(-12, 12)) if rng.random() < 0.4 else 0.0
    extra = bool(rng.random() < 0.08)
    missing = None
    if rng.random() < 0.04:
        discs = [d for d in L.DISCS_DEFAULT if d != L.DISC_C2_C3]
        missing = int(discs[int(rng.integers(len(discs)))])
    contrast_p = [0.35, 0.2, 0.45] if version == 1 else [0.45, 0.2, 0.35]
    contrast = str(rng.choice(["T2w", "T1w", "random"], p=contrast_p))
    remnants, texture = 0, 0.0
    if version >= 2:
        extra_rng = np.random.default_rng([seed, 19])
        remnants = int(extra_rng.choice([0, 1, 2], p=[0.15, 0.6, 0.25]))
        texture = round(float(extra_rng.uniform(0.03, 0.15)), 3) if extra_rng.random() < 0.7 else 0.0
    return SynthSpec(seed, fov, plane, orientation, tuple(round(v, 2) for v in voxel), round(oblique, 1), extra,
                     missing, contrast, remnants, texture)


def _orientation(rng, plane: str) -> str:
    """An axis code whose third voxel axis is the thin one (for 3D, any code)."""
    order = list(rng.permutation(3))
    if plane in _PLANES:
        thin = _PLANES[plane]
        order.remove(thin)
        order.append(thin)
    return "".join(_AXES[a][int(rng.integers(2))] for a in order)


# --------------------------------------------------------------------------------------------------
# Geometry: the bent spine


def draw_centreline(comp: Composite, rng) -> Centreline:
    """Cervical lordosis (or kyphosis), thoracic kyphosis, lumbar lordosis, sacral curve, scoliosis, tilt."""
    mid = {v: (a + b) / 2 for v, (a, b) in comp.body_span.items()}
    depth = np.arange(-100.0, comp.s_length + 150.0, 0.5)

    def bump(centre, width):
        return np.exp(-0.5 * ((depth - centre) / width) ** 2)

    y = (rng.uniform(-4, 14) * bump(mid[15], 35) - rng.uniform(6, 24) * bump(mid[27], 95)
         + rng.uniform(2, 20) * bump(mid[43], 55) - rng.uniform(15, 30) * bump(comp.body_span[L.SACRUM][1], 50))
    x = np.zeros_like(depth)
    n_curves = int(rng.choice([0, 1, 2], p=[0.55, 0.3, 0.15]))
    for _ in range(n_curves):
        x += rng.uniform(-18, 18) * bump(rng.uniform(mid[21], mid[45]), rng.uniform(40, 110))
    x += rng.uniform(-3, 3) * bump(mid[28], 80)
    pts = np.stack([x, y, -depth], axis=1)
    tilt = np.radians(rng.uniform(-8, 8, 2))
    rx = np.array([[1, 0, 0], [0, math.cos(tilt[0]), -math.sin(tilt[0])], [0, math.sin(tilt[0]), math.cos(tilt[0])]])
    ry = np.array([[math.cos(tilt[1]), 0, math.sin(tilt[1])], [0, 1, 0], [-math.sin(tilt[1]), 0, math.cos(tilt[1])]])
    pts = pts @ (ry @ rx).T + np.array([0.0, -40.0, 350.0])
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    arc -= np.interp(0.0, depth, arc)
    s = np.arange(arc[0], arc[-1], 0.5)
    return Centreline.from_points(s, np.stack([np.interp(s, arc, pts[:, k]) for k in range(3)], axis=1))


def fov_box(comp: Composite, cl: Centreline, fov: str, rng) -> np.ndarray:
    top_v, bottom_v = FOV_LIMITS[fov]
    jitter = rng.uniform(-0.5, 0.5, 2)
    if top_v is None:
        s0 = comp.body_span[L.C1][0] - rng.uniform(15, 60)
    else:
        a, b = comp.body_span[top_v]
        s0 = (a + b) / 2 + jitter[0] * (b - a)
    if bottom_v is None:
        s1 = comp.body_span[L.SACRUM][1] + rng.uniform(-20, 30)
    else:
        a, b = comp.body_span[bottom_v]
        s1 = (a + b) / 2 + jitter[1] * (b - a)
    inside = (cl.s >= s0) & (cl.s <= s1)
    pts = cl.point[inside]
    lr = rng.uniform(35, 110)
    lo = [pts[:, 0].min() - lr, pts[:, 1].min() - rng.uniform(45, 100), pts[:, 2].min()]
    hi = [pts[:, 0].max() + lr, pts[:, 1].max() + rng.uniform(45, 120), pts[:, 2].max()]
    return np.array([lo, hi]), (float(s0), float(s1))


# --------------------------------------------------------------------------------------------------
# Sampling and intensities


def _fine_grid(shape, affine, thin_axis: int, step_mm: float = 1.5):
    """The grid refined along the thin voxel axis (for a slice profile): shape, affine and the factor."""
    vox = np.linalg.norm(affine[:3, :3], axis=0)
    n = max(1, int(math.ceil(vox[thin_axis] / step_mm - 1e-6)))
    if n == 1:
        return tuple(shape), affine, 1
    fine = affine.copy()
    fine[:3, thin_axis] = affine[:3, thin_axis] / n
    fine[:3, 3] = affine[:3, 3] - affine[:3, thin_axis] * (n - 1) / (2 * n)
    fshape = list(shape)
    fshape[thin_axis] *= n
    return tuple(fshape), fine, n


def _smooth_field(shape, rng, cells: int, sd: float) -> np.ndarray:
    """A smooth random field on a grid: Gaussian noise on a `cells`-per-axis lattice, linear in between."""
    coarse_shape = [max(2, min(cells, n)) for n in shape]
    coarse = rng.normal(0, sd, coarse_shape).astype(np.float32)
    steps = [max(1, math.ceil(n / (c - 1))) for n, c in zip(shape, coarse_shape, strict=True)]
    return upsample(coarse, steps, shape)


def sample_composite(comp: Composite, cl: Centreline, shape, affine, rng, elastic_mm: float) -> np.ndarray:
    def displace(coarse_shape):  # about one random vector per 40 mm, on the ~4 mm lattice
        cells = max(2, int(max(coarse_shape) / 10))
        return [_smooth_field(coarse_shape, rng, cells, elastic_mm) for _ in range(3)]

    u, v, s = spine_coords(cl, shape, affine, displace if elastic_mm > 0 else None)
    iu = np.rint(u + comp.centre[0]).astype(np.int32)
    iv = np.rint(v + comp.centre[1]).astype(np.int32)
    is_ = np.rint(s).astype(np.int32)
    nu, nv, ns = comp.labels.shape
    ok = (iu >= 0) & (iu < nu) & (iv >= 0) & (iv < nv) & (is_ >= 0) & (is_ < ns)
    out = np.zeros(shape, np.uint8)
    out[ok] = comp.labels[iu[ok], iv[ok], is_[ok]]
    return out


# Mean intensities by tissue for the MR-like draws: (T2w, T1w), each jittered per image.
_MR = {
    "csf": (0.95, 0.12), "cord": (0.45, 0.5), "nucleus": (0.8, 0.35), "annulus": (0.25, 0.3), "marrow": (0.4, 0.65),
    "cortex": (0.08, 0.08), "epidural": (0.6, 0.8), "muscle": (0.2, 0.3), "fat": (0.65, 0.9), "organ": (0.4, 0.4),
    "skin": (0.5, 0.6), "brain": (0.45, 0.45), "brainstem": (0.5, 0.5),
    "head_csf": (0.9, 0.1), "airway": (0.02, 0.02), "lung": (0.05, 0.05),
    "background": (0.0, 0.0), "rib": (0.35, 0.6), "remnant": (0.6, 0.3),
}
_NUCLEUS, _CORTEX = 250, 251  # intensity-only sub-labels


def _tissue_of(label: int) -> str:
    if label == 0:
        return "background"
    if label == _NUCLEUS:
        return "nucleus"
    if label == _CORTEX:
        return "cortex"
    if label == SACRAL_REMNANT:
        return "remnant"
    if label == L.CANAL:
        return "csf"
    if label == L.CORD:
        return "cord"
    if L.is_disc(label):
        return "annulus"
    if L.is_vertebra(label):
        return "marrow"
    for name, value in CONTEXT.items():
        if value == label:
            return name
    return "organ"  # blobs


def _sub_labels(lab: np.ndarray, vox: np.ndarray, rng) -> np.ndarray:
    """Disc nuclei (the disc eroded by ~2 mm) and vertebral cortex (bone within ~1.2 mm of its surface)."""
    out = lab.copy()
    spine = (lab > 2) & (lab <= 100)
    if not spine.any():
        return out
    box = tuple(slice(max(int(a.min()) - 2, 0), int(a.max()) + 3) for a in np.nonzero(spine))
    lab, view = lab[box], out[box]
    disc = (lab >= 60) & (lab <= 100)
    bone = np.isin(lab, L.VERTEBRAE_POSSIBLE)
    iters = np.maximum(1, np.rint(rng.uniform(1.5, 3.0) / vox)).astype(int)
    struct = np.zeros((3, 3, 3), bool)
    struct[1, 1, :] = struct[1, :, 1] = struct[:, 1, 1] = True
    nucleus = disc.copy()
    for axis, n in enumerate(iters):
        st = np.zeros((3, 3, 3), bool)
        idx = [1, 1, 1]
        for k in range(3):
            idx[axis] = k
            st[tuple(idx)] = True
        nucleus = ndimage.binary_erosion(nucleus, st, iterations=int(n))
    view[nucleus] = _NUCLEUS
    core = ndimage.binary_erosion(bone, struct, iterations=1)
    view[bone & ~core] = _CORTEX
    return out


def synth_intensities(lab: np.ndarray, vox: np.ndarray, contrast: str, rng) -> np.ndarray:
    """A random-contrast image of a label map (before the slice profile, bias and noise)."""
    sub = _sub_labels(lab, vox, rng)
    values = np.unique(sub)
    lut_mean = np.zeros(256, np.float32)
    lut_sd = np.zeros(256, np.float32)
    blob_means = {b: rng.uniform(0, 1) for b in BLOB_LABELS}
    for val in values:
        tissue = _tissue_of(int(val))
        if contrast == "random":
            mean = rng.uniform(0, 1) if tissue != "background" or rng.random() < 0.2 else rng.uniform(0, 0.1)
        elif int(val) in blob_means:
            mean = blob_means[int(val)]
        else:
            mean = _MR[tissue][0 if contrast == "T2w" else 1] + rng.normal(0, 0.06)
        lut_mean[val] = np.clip(mean, 0, 1)
        lut_sd[val] = rng.uniform(0.005, 0.06)
    if contrast != "random":  # shared tissue, shared intensity: every vertebra and disc alike, as in MR
        for group in (L.VERTEBRAE_POSSIBLE, L.DISCS_POSSIBLE):
            present = [g for g in group if g in values]
            if present:
                lut_mean[present] = lut_mean[present[0]]
    img = lut_mean[sub] + lut_sd[sub] * rng.standard_normal(sub.shape, dtype=np.float32)
    return img


def render_synthetic(lib: Library, spec: SynthSpec) -> Volume3D:
    rng = np.random.default_rng([spec.seed, 29])
    comp = build_composite(lib, rng, spec.extra_lumbar, spec.missing_disc, context=False,
                           sacral_remnants=spec.sacral_remnants)
    cl = draw_centreline(comp, rng)
    box, s_range = fov_box(comp, cl, spec.fov, rng)
    add_context(comp, rng, (s_range[0] - 60, s_range[1] + 60))
    shape, affine = make_grid(box, spec.orientation, spec.voxel, spec.oblique_deg)
    thin = int(np.argmax(spec.voxel))
    fshape, faffine, n = _fine_grid(shape, affine, thin)
    labels_fine = sample_composite(comp, cl, fshape, faffine, rng, elastic_mm=float(rng.uniform(0, 3)))
    fvox = np.linalg.norm(faffine[:3, :3], axis=0)
    img = synth_intensities(labels_fine, fvox, spec.contrast, rng)
    if spec.texture_sd > 0:  # about one value per 5 mm: tissues are not flat in MR
        cells = max(2, int(max(np.array(fshape) * fvox) / 5))
        img *= np.exp(_smooth_field(img.shape, rng, cells, spec.texture_sd))
    img = ndimage.gaussian_filter(img, sigma=rng.uniform(0.2, 0.8) / fvox, truncate=2.5)
    if n > 1:  # slice profile: each thick slice averages its sub-slices; labels from the middle one
        img = img.reshape(_split(img.shape, thin, n)).mean(axis=thin + 1)
        labels = labels_fine.reshape(_split(labels_fine.shape, thin, n)).take(n // 2, axis=thin + 1)
    else:
        labels = labels_fine
    img *= np.exp(_smooth_field(img.shape, rng, 4, rng.uniform(0.05, 0.35)))
    img = np.clip(img, 0, None) ** float(np.exp(rng.normal(0, 0.25)))
    sd = rng.uniform(0.005, 0.05)
    img = np.hypot(img + sd * rng.standard_normal(img.shape, dtype=np.float32),
                   sd * rng.standard_normal(img.shape, dtype=np.float32))
    img = np.rint(img * 1000).astype(np.float32)
    return Volume3D(img, context_to_zero(labels), affine)


def _split(shape, axis: int, n: int) -> tuple[int, ...]:
    out = list(shape)
    out[axis] //= n
    out.insert(axis + 1, n)
    return tuple(out)


