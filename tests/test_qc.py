"""Per-structure statistics and automatic QC flags, on phantom ground truth with targeted damage."""

from functools import cache

import numpy as np
import pytest
from scipy import ndimage

from totalspineseg import labels as L
from totalspineseg.bids_app import qc
from totalspineseg.synth import phantom


@cache
def _truth(fov="cervicothoracic", voxel=(2.0, 2.0, 2.0), orientation="RAS"):
    ph = phantom.make_phantom(seed=4, fov=fov, orientation=orientation, voxel=voxel)
    return ph.labels, ph.affine


def _codes(result):
    return [f.code for f in result.flags]


def test_cranio_caudal_sequence():
    seq = qc.cranio_caudal_sequence(with_l6=False)
    assert seq[:4] == [L.C1, L.C2, L.DISC_C2_C3, L.C2 + 1]
    assert seq[-3:] == [L.VERTEBRAE_DEFAULT[-2], L.DISC_L5_S, L.SACRUM]
    assert len(seq) == len(L.VERTEBRAE_DEFAULT) + len(L.DISCS_DEFAULT)
    with_l6 = qc.cranio_caudal_sequence(with_l6=True)
    assert with_l6[-5:] == [L.VERTEBRA_L6 - 1, L.DISC_L5_L6, L.VERTEBRA_L6, L.DISC_L5_S, L.SACRUM]


@pytest.mark.parametrize("fov,voxel,orientation", [("cervicothoracic", (2.0, 2.0, 2.0), "RAS"),
                                                   ("lumbar", (1.2, 1.2, 4.0), "PIR")])
def test_ground_truth_raises_no_flag(fov, voxel, orientation):
    seg, affine = _truth(fov, voxel, orientation)
    result = qc.assess(seg, affine)
    assert result.flags == []
    assert result.metrics["n_vertebrae"] == len([v for v in np.unique(seg) if L.is_vertebra(v)])
    assert result.metrics["cord_in_canal"] > 0.9


def test_volumes_are_voxel_counts_times_voxel_volume():
    seg, affine = _truth()
    result = qc.assess(seg, affine)
    assert result.voxels[L.CORD] == int((seg == L.CORD).sum())
    assert result.volumes_mm3[L.CORD] == pytest.approx(result.voxels[L.CORD] * 8.0)
    table = qc.stats_table(result).splitlines()
    assert table[0].split("\t") == ["index", "name", "abbreviation", "voxels", "volume_mm3"]
    assert len(table) == 1 + len(result.voxels)


def test_missing_disc_is_flagged_by_name():
    seg, affine = _truth()
    seg = seg.copy()
    seg[seg == 65] = L.CANAL  # C4-C5 gone
    result = qc.assess(seg, affine)
    assert _codes(result) == ["missing_level"]
    assert "C4-C5" in result.flags[0].message


def test_duplicated_level():
    seg, affine = _truth()
    seg = seg.copy()
    seg[seg == 22] = 14  # T2 relabelled C4: a second, distant C4
    result = qc.assess(seg, affine)
    assert "duplicated_level" in _codes(result)


def test_levels_out_of_order():
    seg, affine = _truth()
    swapped = seg.copy()
    swapped[seg == 13], swapped[seg == 15] = 15, 13  # C3 and C5 exchanged
    result = qc.assess(swapped, affine)
    assert "order" in _codes(result)


def test_cord_outside_canal():
    seg, affine = _truth()
    seg = seg.copy()
    ring = ndimage.binary_dilation(seg == L.CORD, iterations=2) & (seg == L.CANAL)
    ring[..., : seg.shape[2] // 3] = False  # the lower third keeps its canal
    seg[ring] = 0
    result = qc.assess(seg, affine)
    assert "cord_outside_canal" in _codes(result)
    assert result.metrics["cord_in_canal"] < qc.CORD_IN_CANAL_MIN


def test_unnumbered_structures_and_absent_cord():
    seg, affine = _truth()
    seg = seg.copy()
    seg[seg == 23] = L.VERTEBRA_UNNUMBERED
    seg[seg == L.CORD] = L.CANAL
    codes = _codes(qc.assess(seg, affine))
    assert "unlabeled" in codes and "no_cord" in codes


def test_pipeline_warnings_become_flags():
    seg, affine = _truth()
    result = qc.assess(seg, affine, warnings=["step 2: something odd"])
    assert [(f.code, f.message) for f in result.flags] == [("warning", "step 2: something odd")]
    assert result.summary()["flags"] == [{"code": "warning", "message": "step 2: something odd"}]


def test_step1_output_is_not_flagged_for_its_unnumbered_vertebrae():
    seg, affine = _truth()
    step1 = seg.copy()
    step1[np.isin(seg, [v for v in L.VERTEBRAE_POSSIBLE if v != L.C1])] = L.SACRUM
    result = qc.assess(step1, affine, step1_only=True)
    assert result.flags == []
    assert result.metrics["n_vertebrae"] == 1  # C1 is the only numbered vertebra of step 1


def test_flags_can_be_computed_on_another_grid():
    seg, affine = _truth()
    coarse = seg[::2, ::2, ::2]
    coarse_affine = affine.copy()
    coarse_affine[:3, :3] *= 2
    result = qc.assess(coarse, coarse_affine, flags_on=(seg, affine))
    assert result.flags == []
    assert result.volumes_mm3[L.CORD] == pytest.approx((coarse == L.CORD).sum() * 64.0)
