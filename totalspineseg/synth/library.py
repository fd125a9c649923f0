"""The anatomy library: real vertebra shapes from the sources in ``../shared/data/anatomy``, one piece per bone.

Each source is straightened along its own spine and cut into **pieces**: one binary mask per vertebra (or the
sacrum) on a 1 mm grid in spine coordinates, with the centre of its vertebral foramen at u = v = 0 and the
extent of its body along the spine. ``composite`` stacks pieces into whole spines; discs, canal and cord are
built there, between and around the bones.

Spine coordinates, as everywhere in ``synth``: u = lateral (+ right), v = anterior, s = arc length growing
inferiorly. Arrays are indexed ``[u, v, s]``.

Sources (values are the sources' own; see the model card for provenance and licences):

* PAM50 (straightened template, 0.5 mm): C1 ... T11 as connected components of ``PAM50_spine``, numbered in
  order down the template; T12 and below are cut by the template's 35 mm anterior crop and are not used.
  The canal (cord + CSF) and the cord are kept as a per-level profile for ``composite``.
* VerSe ``sub-verse004`` (CT masks, manual): T9 ... L5.
* VerSe ``sub-verse014`` (CT masks, manual): L1 ... L5.
* TotalSegmentator's example CT (model labels, 3 mm): T12 ... L5 and the sacrum (sacrum + S1).

The results are cached (``TOTALSPINESEG_ANATOMY_CACHE`` or the user cache) keyed on the source files' sizes and
times and on ``LIBRARY_VERSION``; the cache is never part of the project.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from .. import labels as L
from .shapes import Centreline

log = logging.getLogger(__name__)

__all__ = ["Piece", "CanalProfile", "Library", "load_library", "default_source_dir", "SourceMissing"]

LIBRARY_VERSION = 5  # stage 1 of the lite model was rendered with version 4 (one more L5 piece)
SPACING_MM = 1.0
_REPO_SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "anatomy"

# VerSe ids -> final labels (1-7 C1-C7, 8-19 T1-T12, 20-24 L1-L5, 25 L6, 26 sacrum, 28 T13 unused).
_VERSE_TO_FINAL = {i: v for i, v in enumerate(L.VERTEBRAE_POSSIBLE[:25], start=1)} | {26: L.SACRUM}
# TotalSegmentator v2 ids: 25 sacrum, 26 S1 (part of the sacrum), 27 L5 ... 31 L1, 32 T12.
_TOTALSEG_TO_FINAL = {25: L.SACRUM, 26: L.SACRUM, 27: 45, 28: 44, 29: 43, 30: 42, 31: 41, 32: 32}
_PAM50_USABLE = 19  # C1 ... T12 would be 19; the last one (T12) is cut by the crop, so C1 ... T11 are kept
_PAM50_KEEP = tuple(L.VERTEBRAE_DEFAULT[:18])  # C1 ... T11
_MAX_PIECE_S_MM = 75  # longer along the spine than any vertebra: a straightening failure


class SourceMissing(FileNotFoundError):
    """The anatomy sources are not there (the library is for training; users never need it)."""


@dataclass(frozen=True)
class Piece:
    """One bone of one source in spine coordinates: a mask whose foramen centre is at index `centre`."""

    label: int  # final scheme (vertebra or sacrum)
    source: str
    mask: np.ndarray  # bool [u, v, s], 1 mm
    centre: tuple[int, int]  # (u, v) index of the foramen centre
    body: tuple[int, int]  # s index of the body's upper and lower endplates (sacrum: top of S1, bottom of mask)
    body_v: tuple[int, int]  # v index range of the body (anterior of the canal)
    canal: tuple[float, float]  # half-axes (u, v) of the foramen, mm

    @property
    def height(self) -> int:
        return self.body[1] - self.body[0] + 1

    @property
    def width(self) -> float:
        """Body width (LR), mm: from the central third of the body's depth."""
        lo, hi = self.body_v
        third = slice(lo + (hi - lo) // 3, hi - (hi - lo) // 3 + 1)
        cols = self.mask[:, third, self.body[0]:self.body[1] + 1].any(axis=(1, 2))
        return float(cols.sum())

    @property
    def depth(self) -> float:
        return float(self.body_v[1] - self.body_v[0] + 1)


@dataclass(frozen=True)
class CanalProfile:
    """The PAM50 canal and cord, slice by slice, with the s index of every vertebra's body middle."""

    canal: np.ndarray  # bool [u, v, s], foramen centre at `centre`
    cord: np.ndarray
    centre: tuple[int, int]
    body_mid: dict[int, float]  # vertebra -> s index of its body middle in this profile


@dataclass(frozen=True)
class Library:
    pieces: dict[int, list[Piece]]  # label -> pieces from every source that has it
    pam50: CanalProfile

    def sources(self) -> list[str]:
        return sorted({p.source for ps in self.pieces.values() for p in ps})

    def summary(self) -> str:
        rows = [f"{L.FINAL[k].short}: {', '.join(p.source for p in v)}" for k, v in sorted(self.pieces.items())]
        return "; ".join(rows)


def default_source_dir() -> Path:
    return Path(os.environ.get("TOTALSPINESEG_ANATOMY", _REPO_SHARED))


def _cache_dir() -> Path:
    if os.environ.get("TOTALSPINESEG_ANATOMY_CACHE"):
        return Path(os.environ["TOTALSPINESEG_ANATOMY_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "totalspineseg" / "anatomy"


_FILES = {
    "pam50": ("PAM50/PAM50_spine.nii.gz", "PAM50/PAM50_cord.nii.gz", "PAM50/PAM50_csf.nii.gz",
              "PAM50/PAM50_label_body.nii.gz"),
    "verse004": ("verse/sub-verse004_seg-vert_msk.nii.gz",),
    "verse014": ("verse/sub-verse014_seg-vert_msk.nii.gz",),
    "totalseg": ("TotalSegmentator_ct/example_seg_fast_force_split.nii.gz",),
}


def load_library(source_dir: str | os.PathLike | None = None, cache: bool = True) -> Library:
    """Every piece of every source (from the cache when the sources are unchanged)."""
    root = Path(source_dir) if source_dir is not None else default_source_dir()
    missing = [f for files in _FILES.values() for f in files if not (root / f).is_file()]
    if missing:
        raise SourceMissing(f"{root}: anatomy sources missing ({', '.join(missing)}); see data/anatomy/README.md")
    key = _cache_key(root)
    path = _cache_dir() / f"library-v{LIBRARY_VERSION}-{key}.npz"
    if cache and path.is_file():
        try:
            return _read_cache(path)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("%s: unreadable anatomy cache (%s); rebuilding", path, exc)
    pieces: dict[int, list[Piece]] = {}
    pam50_pieces, profile = _pam50(root)
    for p in pam50_pieces + _verse(root, "verse004") + _verse(root, "verse014") + _totalseg(root):
        pieces.setdefault(p.label, []).append(p)
    lib = Library(pieces, profile)
    if cache:
        _write_cache(path, lib)
    return lib


def _cache_key(root: Path) -> str:
    h = hashlib.sha256()
    for files in _FILES.values():
        for f in files:
            st = (root / f).stat()
            h.update(f"{f}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# PAM50


def _pam50(root: Path) -> tuple[list[Piece], CanalProfile]:
    def load(name):
        img = nib.load(root / "PAM50" / f"PAM50_{name}.nii.gz")
        # LAS at 0.5 mm -> [u (right), v (anterior), s (inferior)] at 1 mm.
        data = np.asanyarray(img.dataobj)[::-1, :, ::-1]
        return data[::2, ::2, ::2]

    spine = load("spine") > 0
    cord = load("cord") > 0
    canal = (load("csf") > 0) | cord
    centre = _profile_centre(canal)
    comps = _pam50_components(spine, centre)
    big = [int(b) for b in np.unique(comps) if b]
    s_mid = ndimage.center_of_mass(spine, comps, big)
    ordered = [int(b) for _, b in sorted(zip((c[2] for c in s_mid), big, strict=True))]
    axes = _canal_half_axes(canal)  # one canal size for every template piece
    pieces, body_mid = [], {}
    for label, comp in zip(_PAM50_KEEP, ordered, strict=False):
        bone = comps == comp
        piece = _make_piece(bone, label, "PAM50", centre, axes)
        pieces.append(piece)
        body_mid[label] = _first_slice(bone) + (piece.body[0] + piece.body[1]) / 2
    return pieces, CanalProfile(canal, cord, centre, body_mid)


def _pam50_components(spine: np.ndarray, centre) -> np.ndarray:
    """One label per vertebra: the large components, each with the small pieces near the midline that are closest
    to it (arches that the template splits off); lateral small pieces (rib stubs) are dropped."""
    comps, n = ndimage.label(spine)
    sizes = ndimage.sum(spine, comps, range(1, n + 1))
    big = np.argsort(-sizes)[:_PAM50_USABLE + 2] + 1  # C1 ... L1 and the partial L2
    out = np.zeros(comps.shape, np.int32)
    for b in big:
        out[comps == b] = b
    big_s = np.array([c[2] for c in ndimage.center_of_mass(spine, comps, big)])
    small = [k for k in range(1, n + 1) if k not in set(big.tolist()) and sizes[k - 1] >= 20]
    for k, (cu, _, cs) in zip(small, ndimage.center_of_mass(spine, comps, small), strict=True):
        if abs(cu - centre[0]) <= 20:
            out[comps == k] = big[int(np.argmin(np.abs(big_s - cs)))]
    return out


def _profile_centre(canal: np.ndarray) -> tuple[int, int]:
    cu, cv, _ = ndimage.center_of_mass(canal)
    return int(round(cu)), int(round(cv))


def _canal_half_axes(canal: np.ndarray) -> tuple[float, float]:
    u = canal.any(axis=(1, 2)).sum() / 2
    v = np.median([np.ptp(np.nonzero(canal[:, :, k].any(0))[0]) + 1 for k in range(canal.shape[2])
                   if canal[:, :, k].any()]) / 2
    return float(min(u, 14.0)), float(v)


def _first_slice(mask: np.ndarray) -> int:
    """s index of the first slice that holds the mask (where `_make_piece` starts its crop)."""
    return int(np.nonzero(mask.any(axis=(0, 1)))[0][0])


# --------------------------------------------------------------------------------------------------
# CT masks (VerSe, TotalSegmentator): straighten along the vertebral centroids, find each foramen


def _canonical_labels(path: Path, table: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    img = nib.as_closest_canonical(nib.load(path))
    raw = np.rint(np.asanyarray(img.dataobj)).astype(np.int32)
    lut = np.zeros(max(256, raw.max() + 1), np.uint8)
    for k, v in table.items():
        lut[k] = v
    return lut[raw], img.affine


def _verse(root: Path, name: str) -> list[Piece]:
    labels, affine = _canonical_labels(root / _FILES[name][0], _VERSE_TO_FINAL)
    return _ct_pieces(labels, affine, name)


def _totalseg(root: Path) -> list[Piece]:
    labels, affine = _canonical_labels(root / _FILES["totalseg"][0], _TOTALSEG_TO_FINAL)
    return _ct_pieces(labels, affine, "TotalSegmentator")


def _ct_pieces(labels: np.ndarray, affine: np.ndarray, source: str) -> list[Piece]:
    present = [v for v in L.VERTEBRAE_POSSIBLE if (labels == v).sum() * abs(np.linalg.det(affine[:3, :3])) > 8000]
    centroids = []
    for v in present:
        c = np.argwhere(labels == v).mean(axis=0)
        centroids.append(affine[:3, :3] @ c + affine[:3, 3])
    centroids = np.array(centroids)
    cl = _centreline_through(centroids)
    straight = _straighten(labels, affine, cl, half_u=60, v_range=(-75, 60))
    pieces = []
    for v in present:
        mask = straight == v
        comps, n = ndimage.label(mask)
        if n > 1:  # keep the bone, drop stray fragments of the mask
            sizes = ndimage.sum(mask, comps, range(1, n + 1))
            mask = comps == (int(np.argmax(sizes)) + 1)
        centre, axes = _foramen(mask)
        s_extent = int(np.ptp(np.nonzero(mask.any(axis=(0, 1)))[0])) + 1
        if centre is not None and v != L.SACRUM and s_extent > _MAX_PIECE_S_MM:
            log.info("%s %s: %d mm along the spine, not a single bone; piece skipped", source, L.FINAL[v].short,
                     s_extent)
            continue
        if centre is None:
            log.info("%s %s: no closed foramen found; piece skipped", source, L.FINAL[v].short)
            continue
        piece = _make_piece(mask, v, source, centre, axes)
        cu, cv = piece.centre
        # The sacral canal curves away from a straight line: only its top (S1) is checked.
        last = piece.body[0] + 20 if v == L.SACRUM else piece.body[1]
        if piece.mask[cu, cv, piece.body[0]:last + 1].any():
            log.info("%s %s: bone at the foramen centre (the ring was not found); piece skipped", source,
                     L.FINAL[v].short)
            continue
        pieces.append(piece)
    return pieces


def _centreline_through(points: np.ndarray) -> Centreline:
    """A smooth curve through centroids (superior first), extended 60 mm beyond both ends, in 0.5 mm steps."""
    z = points[:, 2]
    deg = min(3, len(points) - 1)
    fx, fy = np.polyfit(z, points[:, 0], deg), np.polyfit(z, points[:, 1], deg)
    zz = np.arange(z.max() + 60, z.min() - 60, -0.25)
    pts = np.stack([np.polyval(fx, zz), np.polyval(fy, zz), zz], axis=1)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    s = np.arange(0.0, arc[-1], 0.5)
    return Centreline.from_points(s, np.stack([np.interp(s, arc, pts[:, k]) for k in range(3)], axis=1))


def _straighten(labels, affine, cl: Centreline, half_u: int, v_range: tuple[int, int]) -> np.ndarray:
    """Labels resampled (nearest) on a straight 1 mm grid [u, v, s] around the curve."""
    u = np.arange(-half_u, half_u + 1, SPACING_MM)
    v = np.arange(v_range[0], v_range[1] + 1, SPACING_MM)
    s = np.arange(cl.s[0], cl.s[-1], SPACING_MM)
    uu, vv, ss = np.meshgrid(u, v, s, indexing="ij")
    world = cl.to_world(uu.ravel(), vv.ravel(), ss.ravel())
    inv = np.linalg.inv(affine)
    ijk = world @ inv[:3, :3].T + inv[:3, 3]
    out = ndimage.map_coordinates(labels, ijk.T, order=0, mode="constant", cval=0)
    return out.reshape(uu.shape)


def _foramen(mask: np.ndarray) -> tuple[tuple[int, int] | None, tuple[float, float]]:
    """Centre (u, v index) and half-axes of the vertebral foramen: the hole of the bony ring, slice by slice."""
    struct = ndimage.generate_binary_structure(2, 1)
    slices = np.nonzero(mask.any(axis=(0, 1)))[0]
    for radius in (0, 1, 2, 3):
        centres, axes = [], []
        for k in slices:
            ring = mask[:, :, k]
            if radius:
                ring = ndimage.binary_closing(ring, struct, iterations=radius)
            hole = ndimage.binary_fill_holes(ring) & ~ring
            comps, n = ndimage.label(hole)
            if n == 0:
                continue
            sizes = ndimage.sum(hole, comps, range(1, n + 1))
            best = int(np.argmax(sizes))
            if not 40 <= sizes[best] <= 700:
                continue
            pts = np.argwhere(comps == best + 1)
            centres.append(pts.mean(axis=0))
            axes.append((np.ptp(pts, axis=0) + 1) / 2 + radius)
        if len(centres) >= 3:
            c = np.median(np.array(centres), axis=0)
            a = np.median(np.array(axes), axis=0)
            return (int(round(c[0])), int(round(c[1]))), (float(a[0]), float(a[1]))
    return None, (0.0, 0.0)


# --------------------------------------------------------------------------------------------------
# Pieces


def _make_piece(full_mask: np.ndarray, label: int, source: str, centre, canal_axes) -> Piece:
    """Crop a bone's mask to its box and find its body: the bone anterior of the foramen, near the midline."""
    idx = np.nonzero(full_mask)
    lo = [int(a.min()) for a in idx]
    hi = [int(a.max()) + 1 for a in idx]
    mask = full_mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].copy()
    cu, cv = centre[0] - lo[0], centre[1] - lo[1]
    front = int(round(cv + canal_axes[1] + 1))
    central = mask[max(cu - 6, 0):cu + 7, max(front, 0):, :]
    if label == L.C1 or not central.any():
        # C1 has no body: its "body" is the anterior arch, the whole ring's extent along the spine.
        ss = np.nonzero(mask.any(axis=(0, 1)))[0]
        vs = np.nonzero(mask.any(axis=(0, 2)))[0]
        body, body_v = (int(ss.min()), int(ss.max())), (max(front, 0), int(vs.max()))
    else:
        col = central.any(axis=(0, 1))
        ss = np.nonzero(col)[0]
        # The body's endplates: the s range where the midline column holds bone in most of its depth.
        depth = central.sum(axis=(0, 1)).astype(float)
        solid = np.nonzero(depth >= 0.35 * depth.max())[0]
        body = (int(solid.min()), int(solid.max())) if len(solid) else (int(ss.min()), int(ss.max()))
        vs = np.nonzero(central[:, :, body[0]:body[1] + 1].any(axis=(0, 2)))[0] + max(front, 0)
        body_v = (int(vs.min()), int(vs.max()))
    return Piece(label, source, mask, (cu, cv), body, body_v, (float(canal_axes[0]), float(canal_axes[1])))


# --------------------------------------------------------------------------------------------------
# Cache


def _write_cache(path: Path, lib: Library) -> None:
    from ..fsutil import atomic_path

    arrays, meta = {}, {"pieces": [], "pam50": {}}
    for i, p in enumerate(pp for ps in lib.pieces.values() for pp in ps):
        arrays[f"piece{i}"] = np.packbits(p.mask, axis=None)
        meta["pieces"].append({"label": p.label, "source": p.source, "shape": list(p.mask.shape),
                               "centre": list(p.centre), "body": list(p.body), "body_v": list(p.body_v),
                               "canal": list(p.canal)})
    prof = lib.pam50
    arrays["canal"], arrays["cord"] = np.packbits(prof.canal, axis=None), np.packbits(prof.cord, axis=None)
    meta["pam50"] = {"shape": list(prof.canal.shape), "centre": list(prof.centre),
                     "body_mid": {str(k): v for k, v in prof.body_mid.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)


def _unpack(bits: np.ndarray, shape) -> np.ndarray:
    n = int(np.prod(shape))
    return np.unpackbits(bits, count=n).astype(bool).reshape(shape)


def _read_cache(path: Path) -> Library:
    with np.load(path) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        pieces: dict[int, list[Piece]] = {}
        for i, m in enumerate(meta["pieces"]):
            p = Piece(m["label"], m["source"], _unpack(z[f"piece{i}"], m["shape"]), tuple(m["centre"]),
                      tuple(m["body"]), tuple(m["body_v"]), tuple(m["canal"]))
            pieces.setdefault(p.label, []).append(p)
        pm = meta["pam50"]
        prof = CanalProfile(_unpack(z["canal"], pm["shape"]), _unpack(z["cord"], pm["shape"]), tuple(pm["centre"]),
                            {int(k): float(v) for k, v in pm["body_mid"].items()})
    return Library(pieces, prof)
