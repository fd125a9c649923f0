"""The one table of every label value the tool reads or writes.

Nothing else in the package may hard-code a label value: import the constants and tables from here.

Three label schemes exist:

* the **final scheme** (`FINAL`): what the tool writes. Cord 1, canal 2, vertebrae 11-17 / 21-32 / 41-46,
  sacrum 50, discs 63-67 / 71-82 / 91-96 / 100. A disc carries 50 + the value of the vertebra below it.
  Two extra values, 200 and 201, mark vertebrae and discs that were segmented but could not be numbered
  (no landmark and no localizer): the segmentation is kept, no number is invented.
* the **step-1 classes** (`Step1`, values 1-9): what the first network predicts.
* the **step-2 classes** (`Step2`, values 1-11): what the second network predicts. Vertebrae alternate
  between an "odd" and an "even" class, counted from C1 = 1.

**Levels** (`LEVEL_*`) are single-voxel disc points in the SCT convention: level n is the disc above
vertebra n counted from C1 (3 = C2-C3, ..., 25 = L5-S); 1 is the top of the dens and 2 is C1-C2.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

__all__ = [
    "Structure",
    "FINAL",
    "CORD",
    "CANAL",
    "C1",
    "C2",
    "SACRUM",
    "VERTEBRA_UNNUMBERED",
    "DISC_UNNUMBERED",
    "DISC_C2_C3",
    "DISC_C7_T1",
    "DISC_T12_L1",
    "DISC_L5_S",
    "DISC_L5_L6",
    "VERTEBRA_L6",
    "LANDMARK_DISCS",
    "VERTEBRAE_DEFAULT",
    "VERTEBRAE_POSSIBLE",
    "DISCS_DEFAULT",
    "DISCS_POSSIBLE",
    "Step1",
    "Step2",
    "final_to_step1",
    "final_to_step2",
    "vertebra_below_disc",
    "vertebra_above_disc",
    "disc_below_vertebra",
    "is_disc",
    "is_vertebra",
    "LEVEL_NAMES",
    "level_of_disc",
    "LEVEL_DENS",
    "LEVEL_C1_C2",
    "colour_lut",
]


@dataclass(frozen=True)
class Structure:
    value: int
    name: str  # e.g. "vertebrae_C3", "disc_C2_C3"
    abbreviation: str  # BIDS-friendly, alphanumeric: "C3", "C2C3", "SC", "canal"
    kind: str  # "cord" | "canal" | "vertebra" | "sacrum" | "disc"
    colour: tuple[int, int, int]
    short: str  # text drawn next to the structure in previews: "C3", "C2-C3"


# Vertebrae in cranio-caudal order: (value, short name). C1 = index 1 of the running count.
_CERVICAL = [(10 + i, f"C{i}") for i in range(1, 8)]
_THORACIC = [(20 + i, f"T{i}") for i in range(1, 13)]
_LUMBAR = [(40 + i, f"L{i}") for i in range(1, 7)]  # L6 is an anatomical variant

CORD = 1
CANAL = 2
C1 = 11
C2 = 12
SACRUM = 50
VERTEBRA_L6 = 46
VERTEBRA_UNNUMBERED = 200
DISC_UNNUMBERED = 201

_VERTEBRA_NAMES: dict[int, str] = dict(_CERVICAL + _THORACIC + _LUMBAR)
_VERTEBRA_NAMES[SACRUM] = "S"

#: Every vertebra that can be output, cranio-caudal, with L6 (the "possible" sequence).
VERTEBRAE_POSSIBLE: tuple[int, ...] = tuple(v for v, _ in _CERVICAL + _THORACIC + _LUMBAR) + (SACRUM,)
#: The usual sequence, without L6.
VERTEBRAE_DEFAULT: tuple[int, ...] = tuple(v for v in VERTEBRAE_POSSIBLE if v != VERTEBRA_L6)

#: Each disc is 50 + the vertebra below it; there is no disc above C2 (C1-C2 is a joint, not a disc).
DISCS_POSSIBLE: tuple[int, ...] = tuple(50 + v for v in VERTEBRAE_POSSIBLE[2:])
DISCS_DEFAULT: tuple[int, ...] = tuple(50 + v for v in VERTEBRAE_DEFAULT[2:])

DISC_C2_C3 = 63
DISC_C7_T1 = 71
DISC_T12_L1 = 91
DISC_L5_L6 = 96
DISC_L5_S = 100
#: The four discs the networks mark as landmarks, in the order step-1/step-2 classes 2..5 use.
LANDMARK_DISCS: tuple[int, ...] = (DISC_C2_C3, DISC_C7_T1, DISC_T12_L1, DISC_L5_S)


def vertebra_below_disc(disc: int) -> int:
    return disc - 50


def disc_below_vertebra(vertebra: int) -> int | None:
    """The disc directly below a vertebra (None for the sacrum)."""
    seq = VERTEBRAE_POSSIBLE
    if vertebra not in seq or vertebra == SACRUM:
        return None
    i = seq.index(vertebra)
    nxt = seq[i + 1]
    return 50 + nxt if vertebra != C1 else None


def vertebra_above_disc(disc: int) -> int:
    """The vertebra directly above a disc; for L5-S it is L5 (the usual case), not L6."""
    below = vertebra_below_disc(disc)
    seq = VERTEBRAE_DEFAULT if disc == DISC_L5_S else VERTEBRAE_POSSIBLE
    return seq[seq.index(below) - 1]


def _disc_short(disc: int) -> str:
    above = vertebra_above_disc(disc)
    below = vertebra_below_disc(disc)
    return f"{_VERTEBRA_NAMES[above]}-{_VERTEBRA_NAMES[below]}"


def _palette(n: int, offset: float) -> list[tuple[int, int, int]]:
    """Distinct, fixed colours: neighbours differ strongly in hue (golden-ratio walk)."""
    out = []
    for i in range(n):
        h = (offset + i * 0.381966) % 1.0
        s = 0.75 if i % 2 == 0 else 0.55
        v = 0.95 if i % 3 else 0.8
        r, g, b = colorsys.hsv_to_rgb(h, s, v)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def _build_table() -> dict[int, Structure]:
    table: dict[int, Structure] = {
        CORD: Structure(CORD, "spinal_cord", "SC", "cord", (255, 255, 0), "cord"),
        CANAL: Structure(CANAL, "spinal_canal", "canal", "canal", (0, 160, 255), "canal"),
    }
    vert_colours = _palette(len(VERTEBRAE_POSSIBLE), 0.0)
    for colour, v in zip(vert_colours, VERTEBRAE_POSSIBLE, strict=False):
        if v == SACRUM:
            table[v] = Structure(v, "sacrum", "sacrum", "sacrum", (200, 120, 60), "Sacrum")
        else:
            n = _VERTEBRA_NAMES[v]
            table[v] = Structure(v, f"vertebrae_{n}", n, "vertebra", colour, n)
    disc_colours = _palette(len(DISCS_POSSIBLE), 0.55)
    for colour, d in zip(disc_colours, DISCS_POSSIBLE, strict=False):
        short = _disc_short(d)
        table[d] = Structure(d, f"disc_{short.replace('-', '_')}", short.replace("-", ""), "disc", colour, short)
    table[VERTEBRA_UNNUMBERED] = Structure(
        VERTEBRA_UNNUMBERED, "vertebrae_unnumbered", "vertUnnumbered", "vertebra", (150, 150, 150), "V?"
    )
    table[DISC_UNNUMBERED] = Structure(
        DISC_UNNUMBERED, "disc_unnumbered", "discUnnumbered", "disc", (220, 220, 220), "D?"
    )
    return dict(sorted(table.items()))


#: value -> Structure, for every label of the final scheme.
FINAL: dict[int, Structure] = _build_table()


def is_disc(value: int) -> bool:
    s = FINAL.get(int(value))
    return s is not None and s.kind == "disc"


def is_vertebra(value: int) -> bool:
    """True for vertebrae and the sacrum (both are bone the step-2 network numbers)."""
    s = FINAL.get(int(value))
    return s is not None and s.kind in ("vertebra", "sacrum")


# ---------------------------------------------------------------------------------------------------------
# Network classes


class Step1(IntEnum):
    DISC = 1
    DISC_C2_C3 = 2
    DISC_C7_T1 = 3
    DISC_T12_L1 = 4
    DISC_L5_S = 5
    VERTEBRA = 6  # every vertebra but C1, sacrum included
    C1 = 7
    CANAL = 8  # CSF part of the canal
    CORD = 9


class Step2(IntEnum):
    DISC = 1
    DISC_C2_C3 = 2
    DISC_C7_T1 = 3
    DISC_T12_L1 = 4
    DISC_L5_S = 5
    VERTEBRA = 6  # undecided odd/even remnant
    VERTEBRA_ODD = 7
    VERTEBRA_EVEN = 8
    SACRUM = 9
    CANAL = 10
    CORD = 11


#: Landmark classes (identical values in both steps) -> the final disc they mark.
LANDMARK_CLASS_TO_DISC: dict[int, int] = {
    int(Step1.DISC_C2_C3): DISC_C2_C3,
    int(Step1.DISC_C7_T1): DISC_C7_T1,
    int(Step1.DISC_T12_L1): DISC_T12_L1,
    int(Step1.DISC_L5_S): DISC_L5_S,
}
STEP1_DISC_CLASSES: tuple[int, ...] = (1, 2, 3, 4, 5)
STEP2_DISC_CLASSES: tuple[int, ...] = STEP1_DISC_CLASSES
STEP2_VERTEBRA_CLASSES: tuple[int, ...] = (int(Step2.VERTEBRA_ODD), int(Step2.VERTEBRA_EVEN), int(Step2.SACRUM))


def running_index(vertebra: int) -> int:
    """Position of a vertebra counted from C1 = 1 (C7 = 7, T1 = 8, L1 = 20, L6 = 25)."""
    return VERTEBRAE_POSSIBLE.index(vertebra) + 1


def _disc_class(d: int) -> int:
    for cls, disc in LANDMARK_CLASS_TO_DISC.items():
        if disc == d:
            return cls
    return int(Step1.DISC)


def final_to_step1_table() -> dict[int, int]:
    table = {d: _disc_class(d) for d in DISCS_POSSIBLE}
    for v in VERTEBRAE_POSSIBLE:
        table[v] = int(Step1.VERTEBRA)
    table[C1] = int(Step1.C1)
    table[CANAL] = int(Step1.CANAL)
    table[CORD] = int(Step1.CORD)
    return table


def final_to_step2_table(swap_parity: bool = False) -> dict[int, int]:
    """Final -> step-2 classes. Odd running index -> class 7, even -> 8; swapped when `swap_parity`."""
    odd, even = int(Step2.VERTEBRA_ODD), int(Step2.VERTEBRA_EVEN)
    if swap_parity:
        odd, even = even, odd
    table = {d: _disc_class(d) for d in DISCS_POSSIBLE}
    for v in VERTEBRAE_POSSIBLE:
        table[v] = odd if running_index(v) % 2 == 1 else even
    table[SACRUM] = int(Step2.SACRUM)
    table[CANAL] = int(Step2.CANAL)
    table[CORD] = int(Step2.CORD)
    return table


def _apply(table: dict[int, int], seg: np.ndarray) -> np.ndarray:
    lut = np.zeros(256, dtype=np.uint8)
    for k, v in table.items():
        lut[k] = v
    seg = np.asarray(seg)
    if seg.size and (seg.min() < 0 or seg.max() > 255):
        raise ValueError("label values must lie in 0..255")
    return lut[seg.astype(np.intp)]


def final_to_step1(seg: np.ndarray) -> np.ndarray:
    """Map a final-scheme segmentation to step-1 classes; anything unknown becomes 0."""
    return _apply(final_to_step1_table(), seg)


def final_to_step2(seg: np.ndarray, swap_parity: bool = False) -> np.ndarray:
    """Map a final-scheme segmentation to step-2 classes; anything unknown becomes 0."""
    return _apply(final_to_step2_table(swap_parity), seg)


# ---------------------------------------------------------------------------------------------------------
# Levels (single-voxel disc points)

LEVEL_DENS = 1
LEVEL_C1_C2 = 2


def level_of_disc(disc: int) -> int | None:
    """Level number of a final disc label: 3 for C2-C3 ... 25 for L5-S. L5-L6 (96) has no level."""
    if disc == DISC_L5_L6:
        return None
    if disc not in DISCS_DEFAULT:
        return None
    return DISCS_DEFAULT.index(disc) + 3


def _level_names() -> dict[int, str]:
    names = {LEVEL_DENS: "C1", LEVEL_C1_C2: "C1-C2"}
    for d in DISCS_DEFAULT:
        names[level_of_disc(d)] = FINAL[d].short
    return names


#: level value -> name ("C2-C3" ...).
LEVEL_NAMES: dict[int, str] = _level_names()


def colour_lut() -> np.ndarray:
    """A (256, 3) uint8 colour table indexed by final label value (0 = black)."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    for v, s in FINAL.items():
        lut[v] = s.colour
    return lut
