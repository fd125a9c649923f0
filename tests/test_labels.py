"""The label table is complete and self-consistent."""

import numpy as np

from totalspineseg import labels as L


def test_final_table_covers_the_upstream_scheme():
    expected = {1, 2, *range(11, 18), *range(21, 33), *range(41, 47), 50, *range(63, 68), *range(71, 83),
                *range(91, 97), 100}
    assert expected <= set(L.FINAL)
    assert set(L.FINAL) - expected == {L.VERTEBRA_UNNUMBERED, L.DISC_UNNUMBERED}


def test_abbreviations_unique_and_bids_friendly():
    abbr = [s.abbreviation for s in L.FINAL.values()]
    assert len(abbr) == len(set(abbr))
    assert all(a.isalnum() for a in abbr)


def test_colours_fixed_and_distinct_for_neighbours():
    seq = list(L.VERTEBRAE_POSSIBLE)
    for a, b in zip(seq, seq[1:], strict=False):
        assert L.FINAL[a].colour != L.FINAL[b].colour
    assert L.colour_lut()[L.CORD].tolist() == list(L.FINAL[L.CORD].colour)


def test_disc_is_fifty_plus_vertebra_below():
    for d in L.DISCS_POSSIBLE:
        assert L.is_vertebra(L.vertebra_below_disc(d))
    assert L.FINAL[L.DISC_C2_C3].short == "C2-C3"
    assert L.FINAL[L.DISC_L5_S].short == "L5-S"
    assert L.FINAL[L.DISC_L5_L6].short == "L5-L6"
    assert L.vertebra_above_disc(L.DISC_C2_C3) == L.C2


def test_step_maps_follow_upstream():
    s1 = L.final_to_step1_table()
    assert s1[63] == 2 and s1[71] == 3 and s1[91] == 4 and s1[100] == 5 and s1[64] == 1 and s1[96] == 1
    assert s1[11] == 7 and s1[12] == 6 and s1[50] == 6 and s1[2] == 8 and s1[1] == 9
    s2 = L.final_to_step2_table()
    odd = [11, 13, 15, 17, 22, 24, 26, 28, 30, 32, 42, 44, 46]
    even = [12, 14, 16, 21, 23, 25, 27, 29, 31, 41, 43, 45]
    assert all(s2[v] == 7 for v in odd) and all(s2[v] == 8 for v in even)
    assert s2[50] == 9 and s2[2] == 10 and s2[1] == 11
    swapped = L.final_to_step2_table(swap_parity=True)
    assert all(swapped[v] == 8 for v in odd) and all(swapped[v] == 7 for v in even)


def test_levels_follow_sct_convention():
    assert L.level_of_disc(L.DISC_C2_C3) == 3
    assert L.level_of_disc(L.DISC_C7_T1) == 8
    assert L.level_of_disc(L.DISC_T12_L1) == 20
    assert L.level_of_disc(L.DISC_L5_S) == 25
    assert L.level_of_disc(L.DISC_L5_L6) is None
    assert L.LEVEL_NAMES[1] == "C1" and L.LEVEL_NAMES[2] == "C1-C2" and L.LEVEL_NAMES[25] == "L5-S"


def test_unknown_values_map_to_background():
    seg = np.array([0, 47, 63, 255], dtype=np.uint8)
    assert L.final_to_step1(seg).tolist() == [0, 0, 2, 0]
