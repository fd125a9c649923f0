"""One seeded person's spine: vertebrae, discs, atlas, sacrum, canal and cord, as an ordered list of paints.

Everything random about a person is drawn once from its seed (`_Person`), so the same seed gives the same
spine in every field of view, and an extra lumbar vertebra or a missing disc changes nothing else. Each
vertebra is rigid, in the straight frame that touches the centreline at its centre (so it is perpendicular
to the local tangent), and each disc fills the wedge between the two endplate planes around it: the
curvature of the spine goes into the discs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import labels as L
from .shapes import Annulus, Centreline, Cylinder, Frame, LateralRod, Paint, Rod, Tissue, Tube

__all__ = ["Anatomy", "build_anatomy", "check_missing_disc"]

_TOP_MARGIN_MM = 14.0  # above C1: foramen magnum / skull base
_BOTTOM_MARGIN_MM = 12.0  # below the sacral tip
_EPIDURAL_MM = 1.5  # free space between the canal tube and the surrounding bone


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
VERTEBRA = {s.short: v for v, s in L.FINAL.items() if s.kind == "vertebra" and v in L.VERTEBRAE_POSSIBLE}

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


def check_missing_disc(missing_disc: int | None, extra_lumbar: bool = False) -> None:
    """Raise ValueError unless `missing_disc` is None or a disc of this spine (L5-L6 only with an L6)."""
    if missing_disc is None:
        return
    allowed = L.DISCS_POSSIBLE if extra_lumbar else L.DISCS_DEFAULT
    if missing_disc not in allowed:
        hint = " (L5-L6 exists only with an extra lumbar vertebra)" if missing_disc == L.DISC_L5_L6 else ""
        choices = f"{allowed[0]}..{allowed[-1]}"
        raise ValueError(f"missing disc {missing_disc} is not a disc label{hint}; discs are {choices}")


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
        curve["cervical"] * bump(depth, mid[VERTEBRA["C5"]], 35.0)
        - curve["thoracic"] * bump(depth, mid[VERTEBRA["T7"]], 95.0)
        + curve["lumbar"] * bump(depth, mid[VERTEBRA["L3"]], 55.0)
        - curve["sacral"] * bump(depth, sacrum_top + sacrum_len, 50.0)
    )
    x = curve["lateral"] * bump(depth, mid[VERTEBRA["T8"]], 80.0)
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
    sp_len = a["sp_len"] * (1.7 if vt.label == VERTEBRA["C7"] else 1.0)  # vertebra prominens
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
    enlarged = set(L.VERTEBRAE_POSSIBLE[L.VERTEBRAE_POSSIBLE.index(VERTEBRA["T10"]) :])
    cord = [_CORD["C"]] + [_CORD["L" if v.label in enlarged else v.region] for v in vertebrae]

    hiatus = sacrum_top + 0.65 * sacrum_len
    lumbar_u, lumbar_v = _CANAL["L"]
    canal_tube = Tube(
        tuple(knots + [sacrum_top + 5.0, hiatus - 5.0, hiatus]),
        tuple([c[0] for c in canal] + [0.85 * lumbar_u, 5.0, 0.0]),
        tuple([c[1] for c in canal] + [0.7 * lumbar_v, 3.0, 0.0]),
    )

    mid = {v.label: v.mid for v in vertebrae}
    conus = mid[VERTEBRA["L1"]] + conus_fraction * (mid[VERTEBRA["L2"]] - mid[VERTEBRA["L1"]])
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
