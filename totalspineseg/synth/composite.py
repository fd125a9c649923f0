"""Whole spines assembled from real bones: pieces of the anatomy library stacked down a straight canal.

One seeded draw picks a piece for every vertebra (from any source that has it), scales it to a size profile of
one person, and stacks the pieces with drawn disc heights; then it builds what no source has: the discs
(between adjacent endplates), the canal and the cord (the PAM50 profile where the template reaches, the
foramina of the CT pieces below, a conus near L1-L2), and body context (muscles, fat, organs, a head, random
blobs) as non-target labels. The result is a straight label volume in spine coordinates; ``synthseg`` bends
it along a centreline and samples it on an acquisition grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .. import labels as L
from .library import Library, Piece

__all__ = ["Composite", "build_composite", "add_context", "CONTEXT", "SACRAL_REMNANT", "context_to_zero"]

# Non-target labels (intensity only; the training labels are 0 there). Values stay clear of the final scheme.
CONTEXT = {
    "epidural": 210, "muscle": 211, "fat": 212, "organ": 213, "skin": 214, "brain": 215, "brainstem": 216,
    "head_csf": 217, "airway": 218, "lung": 219, "rib": 220,
}
BLOB_LABELS = tuple(range(230, 242))
# Remnant discs between the fused sacral bodies (S1-S2, S2-S3): disc-like in the image, sacrum in the labels.
# Real MR shows them; without them a network takes S1 for L5 and numbers every lumbar level one too high.
SACRAL_REMNANT = 252
_HALF_U, _V_POST, _V_ANT = 120, 130, 150  # canvas, mm around the canal centre
_TOP_MM = 70  # head above C1
_BOTTOM_MM = 50
# Disc heights (mm) by region of the vertebra below: (mean, spread).
_DISC_MM = {"C": 5.0, "T": 5.5, "L": 10.0, "S": 10.0}


@dataclass
class Composite:
    labels: np.ndarray  # uint8 [u, v, s], 1 mm: final labels and CONTEXT / BLOB values
    centre: tuple[int, int]  # (u, v) index of the canal centre
    body_span: dict[int, tuple[float, float]]  # vertebra / sacrum -> s of its upper and lower endplate
    sequence: tuple[int, ...]  # vertebrae top to bottom, sacrum last

    @property
    def s_length(self) -> int:
        return self.labels.shape[2]


def context_to_zero(labels: np.ndarray) -> np.ndarray:
    """The training labels of a sampled composite: every non-target value becomes background."""
    out = labels.copy()
    out[out == SACRAL_REMNANT] = L.SACRUM
    out[out >= min(CONTEXT.values())] = 0
    return out


def build_composite(lib: Library, rng: np.random.Generator, extra_lumbar: bool = False,
                    missing_disc: int | None = None, context: bool = True, sacral_remnants: int = 0) -> Composite:
    """One drawn spine; without `context`, call `add_context` for the span of s that will be sampled.
    `sacral_remnants` (0-2) remnant discs are drawn into the sacrum (S1-S2, then S2-S3)."""
    sequence = tuple(v for v in L.VERTEBRAE_POSSIBLE if v != L.VERTEBRA_L6 or extra_lumbar)
    person = float(rng.uniform(0.88, 1.12))
    chosen = {v: _choose(lib, v, rng) for v in sequence}
    length_guess = sum(p.mask.shape[2] for p in chosen.values()) + _TOP_MM + _BOTTOM_MM + 200
    shape = (2 * _HALF_U + 1, _V_POST + _V_ANT + 1, int(length_guess))
    canvas = np.zeros(shape, np.uint8)
    centre = (_HALF_U, _V_POST)
    spans: dict[int, tuple[float, float]] = {}
    cursor = float(_TOP_MM)
    pam_mid = lib.pam50.body_mid
    for i, v in enumerate(sequence):
        piece = _scaled(chosen[v], person, rng)
        if v == L.C1:
            top = cursor
        elif v == L.C2:  # the dens sits in the atlas ring, as in the template
            c1_mid = (spans[L.C1][0] + spans[L.C1][1]) / 2
            top = c1_mid + (pam_mid[L.C2] - pam_mid[L.C1]) * person - piece.height / 2
        else:
            region = "S" if v == L.SACRUM else L.FINAL[v].short[0]
            disc = 50 + v if v != L.SACRUM else L.DISC_L5_S
            mean = _DISC_MM[region] * person
            gap = rng.uniform(0.5, 2.0) if disc == missing_disc else mean * float(rng.uniform(0.6, 1.45))
            top = spans[sequence[i - 1]][1] + 1 + gap
        _paste(canvas, piece, v, centre, int(round(top)))  # an L6 piece is an L5/L4 shape, painted as L6
        spans[v] = (float(round(top)), float(round(top)) + piece.height - 1)
    used = int(spans[L.SACRUM][0] + chosen[L.SACRUM].mask.shape[2] * person + _BOTTOM_MM)
    canvas = canvas[:, :, :min(used, canvas.shape[2])]
    _discs(canvas, sequence, spans, centre, missing_disc)
    if sacral_remnants:
        _sacral_remnants(canvas, spans[L.SACRUM][0], centre, sacral_remnants, person, rng)
    _canal_and_cord(canvas, lib, sequence, spans, centre, chosen, person, rng)
    comp = Composite(canvas, centre, spans, sequence)
    if context:
        add_context(comp, rng)
    return comp


def add_context(comp: Composite, rng, s_range: tuple[float, float] | None = None) -> None:
    """Body context on the slices in `s_range` (all slices by default); epidural fat everywhere."""
    lo, hi = (0, comp.s_length) if s_range is None else (max(0, int(s_range[0])), min(comp.s_length,
                                                                                       int(s_range[1]) + 1))
    _context(comp.labels, comp.body_span, comp.centre, rng, lo, hi)


def _choose(lib: Library, v: int, rng) -> Piece:
    if v == L.VERTEBRA_L6:  # an extra lumbar vertebra: an L5 or L4 shape
        options = lib.pieces.get(45, []) + lib.pieces.get(44, [])
    else:
        options = lib.pieces.get(v, [])
    if not options:
        raise ValueError(f"the anatomy library has no piece for {L.FINAL[v].short}")
    return options[int(rng.integers(len(options)))]


def _scaled(piece: Piece, person: float, rng) -> Piece:
    """The piece zoomed by the person's size and a little per-bone jitter (nearest: masks stay binary)."""
    f = np.clip(person * (1 + rng.normal(0, 0.05, 3)), 0.75, 1.3)
    if np.allclose(f, 1, atol=0.02):
        return piece
    mask = ndimage.zoom(piece.mask.astype(np.uint8), f, order=0).astype(bool)
    scale = np.array(mask.shape) / np.array(piece.mask.shape)
    body = (int(piece.body[0] * scale[2]), int(piece.body[1] * scale[2]))
    body_v = (int(piece.body_v[0] * scale[1]), int(piece.body_v[1] * scale[1]))
    centre = (int(round(piece.centre[0] * scale[0])), int(round(piece.centre[1] * scale[1])))
    canal = (piece.canal[0] * f[0], piece.canal[1] * f[1])
    return Piece(piece.label, piece.source, mask, centre, body, body_v, canal)


def _paste(canvas: np.ndarray, piece: Piece, label: int, centre, body_top: int) -> None:
    """Paint the piece so that its foramen centre is the canal centre and its upper endplate is at `body_top`."""
    start = [centre[0] - piece.centre[0], centre[1] - piece.centre[1], body_top - piece.body[0]]
    lo = [max(0, a) for a in start]
    hi = [min(n, a + m) for a, m, n in zip(start, piece.mask.shape, canvas.shape, strict=True)]
    if any(h <= lo_ for lo_, h in zip(lo, hi, strict=True)):
        return
    src = tuple(slice(lo_ - a, h - a) for lo_, h, a in zip(lo, hi, start, strict=True))
    dst = tuple(slice(lo_, h) for lo_, h in zip(lo, hi, strict=True))
    region = canvas[dst]
    region[piece.mask[src] & (region == 0)] = label


def _discs(canvas, sequence, spans, centre, missing_disc) -> None:
    """Each disc fills the space between the lower endplate above and the upper endplate below, column by
    column, in front of the canal."""
    front = centre[1] + 6
    for above, below in zip(sequence[1:-1], sequence[2:], strict=True):
        disc = L.DISC_L5_S if below == L.SACRUM else 50 + below
        if disc == missing_disc:
            continue
        s0 = int(max(spans[above][1] - 12, 0))
        s1 = int(min(spans[below][0] + 12, canvas.shape[2]))
        slab = canvas[:, front:, s0:s1]
        a, b = slab == above, slab == below
        n = slab.shape[2]
        idx = np.arange(n)
        a_low = np.where(a, idx, -1).max(axis=2)
        b_high = np.where(b, idx, n).min(axis=2)
        gap = b_high - a_low - 1
        limit = (spans[below][0] - spans[above][1]) + 6
        ok = a.any(axis=2) & b.any(axis=2) & (gap > 0) & (gap <= limit)
        fill = ok[:, :, None] & (idx > a_low[:, :, None]) & (idx < b_high[:, :, None]) & (slab == 0)
        fill = ndimage.binary_opening(fill, iterations=1)
        comps, k = ndimage.label(fill)
        if k == 0:
            continue
        sizes = ndimage.sum(fill, comps, range(1, k + 1))
        slab[comps == (int(np.argmax(sizes)) + 1)] = disc


def _sacral_remnants(canvas, sacrum_top: float, centre, n: int, person: float, rng) -> None:
    """Thin slabs across the sacral bodies, one fused-body height apart (S1 about 22-30 mm, S2 a little less),
    in front of the canal and within the body's width (not the alae)."""
    nu = canvas.shape[0]
    level = sacrum_top
    for k in range(n):
        level += rng.uniform(22, 30) * person * (0.8 ** k)
        half = rng.uniform(1.0, 2.0)
        width = rng.uniform(12, 20) * person * (0.85 ** k)
        lo, hi = int(round(level - half)), int(round(level + half)) + 1
        u_lo, u_hi = max(int(centre[0] - width), 0), min(int(centre[0] + width) + 1, nu)
        slab = canvas[u_lo:u_hi, centre[1] + 8:, max(lo, 0):max(hi, 0)]
        slab[slab == L.SACRUM] = SACRAL_REMNANT


def _ellipse(shape2d, centre, au, av) -> np.ndarray:
    u = np.arange(shape2d[0])[:, None] - centre[0]
    v = np.arange(shape2d[1])[None, :] - centre[1]
    return (u / max(au, 0.5)) ** 2 + (v / max(av, 0.5)) ** 2 <= 1.0


def _canal_and_cord(canvas, lib: Library, sequence, spans, centre, chosen, person, rng) -> None:
    """PAM50's canal and cord down to the last template vertebra used, then ellipses through the CT foramina,
    the cord ending in a conus between mid L1 and mid L2, the canal fading out in the upper sacrum."""
    prof = lib.pam50
    mids = {v: (spans[v][0] + spans[v][1]) / 2 for v in sequence}
    template = [v for v in sequence if chosen[v].source == "PAM50" and v in prof.body_mid]
    last = template[-1]
    comp_s = np.array([mids[v] for v in template])
    pam_s = np.array([prof.body_mid[v] for v in template])
    nu, nv = prof.canal.shape[:2]
    off = (centre[0] - prof.centre[0], centre[1] - prof.centre[1])
    for k in range(0, int(mids[last]) + 1):
        src = int(round(np.interp(k, comp_s, pam_s, left=pam_s[0] - (comp_s[0] - k))))
        if not 0 <= src < prof.canal.shape[2]:
            continue
        sl = canvas[off[0]:off[0] + nu, off[1]:off[1] + nv, k]
        sl[prof.canal[:, :, src]] = L.CANAL
        sl[prof.cord[:, :, src]] = L.CORD
    # Below the template: canal half-axes through the CT foramina, the cord's last section tapering to a conus.
    last_src = int(round(prof.body_mid[last]))
    cord_u = max(prof.cord[:, :, last_src].any(axis=1).sum() / 2, 2.0)
    cord_v = max(prof.cord[:, :, last_src].any(axis=0).sum() / 2, 2.0)
    canal_u = max(prof.canal[:, :, last_src].any(axis=1).sum() / 2, 5.0)
    canal_v = max(prof.canal[:, :, last_src].any(axis=0).sum() / 2, 4.0)
    below = [v for v in sequence if mids[v] > mids[last]]
    knots_s = [mids[last]] + [mids[v] for v in below]
    knots_u = [canal_u] + [np.clip(chosen[v].canal[0] * person, 6, 16) for v in below]
    knots_v = [canal_v] + [np.clip(chosen[v].canal[1] * person, 4, 11) for v in below]
    sac_top, sac_bottom = spans[L.SACRUM]
    canal_end = sac_top + rng.uniform(0.3, 0.55) * (sac_bottom - sac_top)
    knots_s[-1], knots_u[-1], knots_v[-1] = sac_top, knots_u[-2] * 0.8, knots_v[-2] * 0.7
    l1, l2 = mids[41], mids[42]
    conus = l1 + rng.uniform(-0.2, 1.0) * (l2 - l1)
    taper = rng.uniform(15, 35)
    for k in range(int(mids[last]) + 1, int(min(canal_end, canvas.shape[2] - 1))):
        au, av = np.interp(k, knots_s, knots_u), np.interp(k, knots_s, knots_v)
        if k > sac_top:
            fade = 1 - (k - sac_top) / max(canal_end - sac_top, 1)
            au, av = au * (0.5 + 0.5 * fade), av * (0.4 + 0.6 * fade)
        sl = canvas[:, :, k]
        sl[_ellipse(sl.shape, (centre[0], centre[1] - 0.5), au, av)] = L.CANAL
        if k < conus:
            t = np.clip((conus - k) / taper, 0, 1) ** 0.6
            cu, cv = cord_u * t, cord_v * t
            if cu >= 0.7:
                sl[_ellipse(sl.shape, (centre[0], centre[1] - 1.0), cu, cv)] = L.CORD


def _context(canvas, spans, centre, rng, lo: int, hi: int) -> None:
    """Body tissue around the spine, as non-target labels: epidural fat, muscles behind, organs in front,
    subcutaneous fat and skin, a head above C1, lungs by the thoracic spine, an airway in the neck, blobs."""
    nu, nv, ns = canvas.shape
    u = (np.arange(nu) - centre[0]).astype(np.float32)[:, None]
    v = (np.arange(nv) - centre[1]).astype(np.float32)[None, :]
    c1_top = spans[L.C1][0]
    t1, t12 = (spans[21][0] + spans[21][1]) / 2, (spans[32][0] + spans[32][1]) / 2
    neck_w, trunk_w = rng.uniform(55, 75), rng.uniform(130, 175)
    neck_back, trunk_back = rng.uniform(45, 70), rng.uniform(55, 95)
    neck_front, trunk_front = rng.uniform(60, 85), rng.uniform(110, 150)
    fat = rng.uniform(4, 25)
    part = canvas[:, :, lo:hi]
    canal = (part == L.CANAL) | (part == L.CORD)
    epidural = ndimage.binary_dilation(canal, iterations=int(rng.integers(1, 3))) & (part == 0)
    part[epidural] = CONTEXT["epidural"]
    for k in range(lo, hi):
        sl = canvas[:, :, k]
        if k < c1_top - 5:  # the head: brain, a brainstem continuing the cord, CSF around it
            depth = c1_top - 5 - k
            r = min(75.0, 25 + depth * 1.2)
            head = (u / (r * 0.95)) ** 2 + ((v - 10) / r) ** 2 <= 1
            sl[head & (sl == 0)] = CONTEXT["brain"]
            stem = (u / 9) ** 2 + ((v + 1) / 8) ** 2 <= 1
            sl[stem & ((sl == 0) | (sl == CONTEXT["brain"]))] = CONTEXT["brainstem"]
            ring = (u / 13) ** 2 + ((v + 1) / 11) ** 2 <= 1
            sl[ring & (sl == CONTEXT["brain"])] = CONTEXT["head_csf"]
            continue
        w = np.interp(k, [c1_top, t1, t1 + 40], [neck_w, neck_w, trunk_w])
        back = np.interp(k, [c1_top, t1, t1 + 40], [neck_back, neck_back, trunk_back])
        front = np.interp(k, [c1_top, t1, t1 + 40], [neck_front, neck_front, trunk_front])
        body = (u / w) ** 2 + (np.where(v < 0, v / back, v / front)) ** 2 <= 1
        inner_v = np.where(v < 0, v / max(back - fat, 5), v / max(front - fat, 5))
        inner = (u / max(w - fat, 5)) ** 2 + inner_v ** 2 <= 1
        skin = body & ~((u / max(w - 2, 5)) ** 2 + (np.where(v < 0, v / max(back - 2, 5), v / front)) ** 2 <= 1)
        free = sl == 0
        sl[free & body & ~inner] = CONTEXT["fat"]
        sl[free & skin] = CONTEXT["skin"]
        tissue = np.where(v < 8, CONTEXT["muscle"], CONTEXT["organ"]).astype(np.uint8)
        tissue = np.broadcast_to(tissue, sl.shape)
        m = free & inner
        sl[m] = tissue[m]
        if t1 + 10 < k < t12 - 10:  # lungs beside the thoracic spine
            lung = (((np.abs(u) - w * 0.45) / (w * 0.35)) ** 2 + ((v - front * 0.35) / (front * 0.45)) ** 2 <= 1)
            sl[lung & (sl == CONTEXT["organ"])] = CONTEXT["lung"]
        elif c1_top + 20 < k < t1 + 20:  # the airway in front of the cervical spine
            airway = (u / 8) ** 2 + ((v - neck_front * 0.55) / 7) ** 2 <= 1
            sl[airway & (sl == CONTEXT["organ"])] = CONTEXT["airway"]
    _blobs(part, centre, rng)


def _blobs(canvas, centre, rng, n_range=(6, 18)) -> None:
    """Random ellipsoids of random non-target labels in the soft tissue (never over bone, disc, canal)."""
    nu, nv, ns = canvas.shape
    soft = set(CONTEXT[k] for k in ("muscle", "organ", "fat", "lung"))
    for _ in range(int(rng.integers(*n_range))):
        r = rng.uniform(6, 35, 3)
        c = np.array([rng.uniform(0, nu), rng.uniform(centre[1] - 90, nv), rng.uniform(0, ns)])
        lo = np.maximum((c - r).astype(int), 0)
        hi = np.minimum((c + r).astype(int) + 1, canvas.shape)
        if np.any(hi <= lo):
            continue
        grid = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        inside = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grid, c, r, strict=True)) <= 1
        block = canvas[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        replace = inside & np.isin(block, list(soft))
        block[replace] = BLOB_LABELS[int(rng.integers(len(BLOB_LABELS)))]
