"""Exact unit tests of the numbering logic on hand-made positions and anchors."""

import numpy as np

from totalspineseg import labels as L
from totalspineseg.labeling import Anchor, choose_numbering, disc_slots


def test_slots_without_gap_are_consecutive():
    pos = np.array([500.0, 482, 463, 440, 415, 388])
    assert disc_slots(pos).tolist() == [0, 1, 2, 3, 4, 5]


def test_slots_skip_a_missing_disc():
    # Even spacing of 20 mm with one disc missing between index 2 and 3.
    pos = np.array([500.0, 480, 460, 420, 400, 380])
    assert disc_slots(pos).tolist() == [0, 1, 2, 4, 5, 6]


def test_slots_tolerate_growing_spacing():
    # Cervical (~18 mm) to lumbar (~40 mm) spacing grows smoothly: no false gap.
    spacing = np.linspace(18, 40, 22)
    pos = 600 - np.concatenate([[0], np.cumsum(spacing)])
    slots = disc_slots(pos)
    assert slots.tolist() == list(range(len(pos)))


def test_single_anchor_sets_offset():
    slots = np.arange(5)
    seq, off, agree, reject = choose_numbering([Anchor(4, L.DISC_L5_S, 2.0, "landmark")], slots)
    assert seq == L.DISCS_DEFAULT
    assert [seq[s + off] for s in slots] == [92, 93, 94, 95, 100]
    assert not reject


def test_l6_chosen_when_anchors_need_it():
    slots = np.arange(7)  # T12-L1 .. L6-S: 7 discs
    anchors = [Anchor(0, L.DISC_T12_L1, 1.0, "landmark"), Anchor(6, L.DISC_L5_S, 2.0, "landmark")]
    seq, off, agree, reject = choose_numbering(anchors, slots)
    assert [seq[s + off] for s in slots] == [91, 92, 93, 94, 95, 96, 100]
    assert len(agree) == 2


def test_usual_sequence_when_consistent():
    slots = np.arange(6)
    anchors = [Anchor(0, L.DISC_T12_L1, 1.0, "landmark"), Anchor(5, L.DISC_L5_S, 2.0, "landmark")]
    seq, off, agree, reject = choose_numbering(anchors, slots)
    assert [seq[s + off] for s in slots] == [91, 92, 93, 94, 95, 100]


def test_disagreeing_anchor_is_rejected():
    slots = np.arange(23)
    anchors = [
        Anchor(0, L.DISC_C2_C3, 2.0, "landmark"),
        Anchor(22, L.DISC_L5_S, 2.0, "landmark"),
        Anchor(10, L.DISC_T12_L1, 1.0, "landmark"),  # wrong place
    ]
    seq, off, agree, reject = choose_numbering(anchors, slots)
    assert [a.label for a in reject] == [L.DISC_T12_L1]
    assert seq[slots[0] + off] == 63 and seq[slots[-1] + off] == 100


def test_l5l6_localizer_anchor_does_not_crash():
    slots = np.arange(3)
    seq, off, agree, reject = choose_numbering([Anchor(1, L.DISC_L5_L6, 1.0, "localizer")], slots)
    assert [seq[s + off] for s in slots] == [95, 96, 100]


def test_input_anchor_list_not_mutated():
    anchors = [Anchor(0, L.DISC_C2_C3, 2.0, "landmark")]
    before = list(anchors)
    choose_numbering(anchors, np.arange(3))
    assert anchors == before
