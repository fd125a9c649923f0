"""Post-processing on exact inputs: largest component, canal fill, soft maps, odd-disc channel, levels."""

from functools import cache

import nibabel as nib
import numpy as np

from totalspineseg import labels as L
from totalspineseg import postprocess
from totalspineseg.cli import levels as levels_cli
from totalspineseg.synth import phantom
from totalspineseg.volume import save_nifti


@cache
def _whole(seed=11, missing_disc=None):
    return phantom.make_phantom(seed=seed, fov="whole", missing_disc=missing_disc)


def test_largest_component_drops_far_blob_keeps_near_piece():
    seg = np.zeros((40, 40, 40), np.uint8)
    seg[10:20, 10:20, 10:20] = 3
    seg[10:20, 10:20, 24:28] = 4  # 4 voxels away: joined by the 5-voxel dilation
    seg[35:38, 35:38, 35:38] = 1  # far away: removed
    out = postprocess.largest_component(seg, dilation=5)
    assert (out == 3).sum() == 1000 and (out == 4).sum() == 400 and (out == 1).sum() == 0


def test_fill_canal_closes_the_tube_without_overwriting_bone():
    seg = np.zeros((30, 30, 10), np.uint8)
    yy, xx = np.mgrid[0:30, 0:30]
    ring = ((xx - 15) ** 2 + (yy - 15) ** 2 <= 64) & ((xx - 15) ** 2 + (yy - 15) ** 2 >= 36)
    seg[ring.T, :] = L.CANAL  # hollow canal wall
    seg[14:17, 14:17, :] = L.CORD
    seg[15, 12, :] = L.C2 + 3  # a bone voxel inside the canal's span
    out = postprocess.fill_canal(seg)
    assert out[15, 12, 0] == L.C2 + 3, "bone inside the canal span must not be overwritten"
    assert out[12, 15, 5] == L.CANAL, "the gap between cord and canal wall is filled"
    assert (out == L.CORD).sum() == (seg == L.CORD).sum()


def test_fill_canal_moves_stray_cord_to_canal():
    seg = np.zeros((20, 20, 40), np.uint8)
    seg[8:12, 8:12, :] = L.CANAL
    seg[9:11, 9:11, 0:30] = L.CORD
    seg[9:11, 9:11, 35:38] = L.CORD  # detached cord piece
    out = postprocess.fill_canal(seg)
    assert (out[9:11, 9:11, 35:38] == L.CANAL).all()


def test_mask_soft_zeroes_outside_dilated_mask():
    seg = np.zeros((10, 10, 10), np.uint8)
    seg[5, 5, 5] = L.CORD
    prob = np.full(seg.shape, 0.7, np.float32)
    out = postprocess.mask_soft(prob, seg, (L.CORD,), dilation=1)
    assert out[5, 5, 5] == np.float32(0.7) and out[5, 5, 6] == np.float32(0.7)
    assert out[5, 6, 6] == 0 and out.dtype == np.float32


def test_odd_disc_mask_alternates_from_the_top():
    ph = _whole()
    odd = postprocess.odd_disc_mask(ph.labels)
    present = [d for d in L.DISCS_POSSIBLE if d in ph.labels]
    for i, d in enumerate(present):
        marked = odd[ph.labels == d].all()
        assert marked == (i % 2 == 0), d
    assert not odd[~np.isin(ph.labels, present)].any()


def test_levels_number_from_labels_and_sit_at_the_disc_back():
    ph = _whole(missing_disc=75)
    levels, points = postprocess.disc_level_points(ph.labels)
    expected = {L.level_of_disc(d) for d in L.DISCS_DEFAULT if d in ph.labels}
    assert expected <= set(points)
    assert L.level_of_disc(75) not in points, "a missing disc has no level, and nothing shifts"
    for d in L.DISCS_DEFAULT:
        if d not in ph.labels:
            continue
        p = points[L.level_of_disc(d)]
        assert ph.labels[p] == d, "the point is a voxel of its own disc"
        disc_y = np.nonzero(ph.labels == d)[1]
        assert p[1] <= np.percentile(disc_y, 10), "the point is the posterior tip (smallest y = posterior)"
    assert (levels > 0).sum() == len(points), "one voxel per level"
    assert L.LEVEL_DENS in points and L.LEVEL_C1_C2 in points
    # Superior-inferior order: level 1 highest.
    z = [points[k][2] for k in sorted(points)]
    assert z == sorted(z, reverse=True)


def test_levels_cli_on_anisotropic_native_grid(tmp_path):
    ph = phantom.make_phantom(seed=11, fov="lumbar", orientation="LPS", voxel=(0.8, 0.8, 3.0))
    seg = save_nifti(tmp_path / "seg.nii.gz", ph.labels, ph.affine)
    out = tmp_path / "levels.nii.gz"
    assert levels_cli.main([str(seg), str(out), "-q"]) == 0
    img = nib.load(out)
    assert img.shape == ph.labels.shape and np.allclose(img.affine, ph.affine)
    data = np.asarray(img.dataobj)
    values, counts = np.unique(data[data > 0], return_counts=True)
    assert (counts == 1).all(), "each level is a single voxel"
    expected = sorted(L.level_of_disc(d) for d in L.DISCS_DEFAULT if d in ph.labels)
    assert values.tolist() == expected


def test_levels_cli_without_canal_fails_clearly(tmp_path, capsys):
    seg = np.zeros((20, 20, 20), np.uint8)
    seg[5:10, 5:10, 5:8] = L.DISC_L5_S
    path = save_nifti(tmp_path / "nocanal.nii.gz", seg, np.eye(4))
    assert levels_cli.main([str(path), str(tmp_path / "o.nii.gz")]) != 0
    err = capsys.readouterr().err
    assert "nocanal.nii.gz" in err and "canal" in err
    assert not (tmp_path / "o.nii.gz").exists()


def test_odd_disc_mask_orders_unnumbered_pieces_by_height():
    seg = np.zeros((10, 10, 60), np.uint8)
    for z in (50, 40, 30, 20, 10):
        seg[2:8, 2:8, z : z + 3] = L.DISC_UNNUMBERED
    odd = postprocess.odd_disc_mask(seg)
    assert [bool(odd[5, 5, z + 1]) for z in (50, 40, 30, 20, 10)] == [True, False, True, False, True]


C5, C6 = 15, 16
DISC_C3_C4, DISC_C4_C5, DISC_C5_C6 = L.disc_below_vertebra(13), L.disc_below_vertebra(14), L.disc_below_vertebra(15)


def _two_disc_spine():
    """A column along axis 2: disc C4-C5 (z 10-13), vertebra C5 (14-25), disc C5-C6 (26-29), vertebra C6."""
    step1 = np.zeros((6, 6, 40), np.uint8)
    step1[1:5, 1:5, 10:14] = DISC_C4_C5
    step1[1:5, 1:5, 26:30] = DISC_C5_C6
    step2 = np.zeros_like(step1)
    step2[1:5, 1:5, 14:26] = C5
    step2[1:5, 1:5, 30:40] = C6
    return step1, step2


def test_complete_discs_fills_a_thinned_disc_under_the_step2_number():
    step1, step2 = _two_disc_spine()
    step2[2:4, 2:4, 11:13] = DISC_C4_C5  # thinned by step 2
    step2[1:5, 1:5, 26:30] = DISC_C5_C6
    step1[step1 == DISC_C4_C5] = DISC_C3_C4  # step 1 numbered it one level off: step 2's number wins
    out = postprocess.complete_discs(step2, step1)
    assert (out[1:5, 1:5, 10:14] == DISC_C4_C5).all()
    assert (out[step2 > 0] == step2[step2 > 0]).all()  # nothing step 2 labelled is taken
    assert not (out == DISC_C3_C4).any()


def test_complete_discs_never_takes_bone_and_adds_missed_discs_only_under_unused_labels():
    step1, step2 = _two_disc_spine()
    step1[1:5, 1:5, 14] = DISC_C4_C5  # step 1 overreaches into C5: step 2 keeps its bone
    step2[1:5, 1:5, 26:30] = DISC_C5_C6
    out = postprocess.complete_discs(step2, step1)
    assert (out[1:5, 1:5, 10:14] == DISC_C4_C5).all()  # missed by step 2, label unused: added
    assert (out[1:5, 1:5, 14] == C5).all()
    step2[0, 0, 0] = DISC_C4_C5  # the label is used elsewhere by step 2: not added
    out = postprocess.complete_discs(step2, step1)
    assert not (out[1:5, 1:5, 10:14] == DISC_C4_C5).any()


def test_complete_discs_skips_a_step1_disc_that_spans_two_step2_discs():
    step1, step2 = _two_disc_spine()
    step1[1:5, 1:5, 10:30] = np.where(step1[1:5, 1:5, 10:30] > 0, DISC_C4_C5, 0)  # one label on both discs
    step2[2:4, 2:4, 11:13] = DISC_C4_C5
    step2[2:4, 2:4, 27:29] = DISC_C5_C6
    out = postprocess.complete_discs(step2, step1)
    np.testing.assert_array_equal(out, step2)
    assert postprocess.complete_discs(step2, np.zeros_like(step1)) is step2
