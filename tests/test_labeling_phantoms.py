"""Exact phantom round trip: ground truth -> network classes -> `totalspineseg-label` -> final labels."""

from functools import cache

import nibabel as nib
import numpy as np
import pytest

from totalspineseg import labels as L
from totalspineseg.cli import label as label_cli
from totalspineseg.synth import phantom
from totalspineseg.training import metrics
from totalspineseg.volume import save_nifti

GRIDS = [("RAS", (1.0, 1.0, 1.0)), ("LPS", (0.8, 0.8, 2.0)), ("PSR", (0.9, 0.9, 3.0))]


@cache
def _phantom(seed, fov, orientation, voxel, extra_lumbar=False, missing_disc=None):
    return phantom.make_phantom(
        seed=seed, fov=fov, orientation=orientation, voxel=voxel, extra_lumbar=extra_lumbar, missing_disc=missing_disc
    )


@cache
def _localizer(seed, extra_lumbar=False):
    return phantom.make_localizer(seed=seed, extra_lumbar=extra_lumbar)


def _run(tmp_path, step, classes, affine, loc=None):
    raw = save_nifti(tmp_path / f"{step}_raw.nii.gz", classes, affine)
    out = tmp_path / f"{step}_out.nii.gz"
    argv = [step, str(raw), str(out), "-q"]
    if loc is not None:
        argv += ["--loc", str(save_nifti(tmp_path / "loc.nii.gz", loc.labels, loc.affine))]
    assert label_cli.main(argv) == 0
    img = nib.load(out)
    assert img.shape == classes.shape
    assert np.allclose(img.affine, affine)
    return np.asarray(img.dataobj)


def _truth_for(step, truth):
    if step == "step1":
        # Step 1 numbers discs only; every other vertebra is 50, C1 stays 11.
        t = truth.copy()
        t[np.isin(t, [v for v in L.VERTEBRAE_POSSIBLE if v != L.C1])] = L.SACRUM
        return t, ("disc",)
    return truth, ("disc", "vertebra", "sacrum")


@pytest.mark.parametrize("step", ["step1", "step2"])
@pytest.mark.parametrize("orientation,voxel", GRIDS, ids=[g[0] for g in GRIDS])
@pytest.mark.parametrize("fov", phantom.FOVS)
def test_round_trip_numbers_everything(tmp_path, fov, orientation, voxel, step):
    ph = _phantom(3, fov, orientation, voxel)
    classes = L.final_to_step1(ph.labels) if step == "step1" else L.final_to_step2(ph.labels)
    loc = _localizer(3) if fov == "thoracic" else None
    pred = _run(tmp_path, step, classes, ph.affine, loc)
    truth, kinds = _truth_for(step, ph.labels)
    rate, failures = metrics.identification_rate(pred, truth, kinds=kinds, min_voxels=20)
    assert failures == [], f"{fov} {orientation} {step}: wrongly numbered {failures}"
    assert rate == 1.0


@pytest.mark.parametrize("fov", ["whole", "lumbar"])
def test_extra_lumbar_vertebra(tmp_path, fov):
    ph = _phantom(5, fov, "RAS", (1.0, 1.0, 1.0), extra_lumbar=True)
    pred = _run(tmp_path, "step2", L.final_to_step2(ph.labels), ph.affine)
    assert L.VERTEBRA_L6 in pred and L.DISC_L5_L6 in pred and L.DISC_L5_S in pred
    _, failures = metrics.identification_rate(pred, ph.labels, min_voxels=20)
    assert failures == []


def test_thoracic_without_localizer_is_unnumbered_not_invented(tmp_path):
    ph = _phantom(3, "thoracic", "RAS", (1.0, 1.0, 1.0))
    raw = save_nifti(tmp_path / "raw.nii.gz", L.final_to_step2(ph.labels), ph.affine)
    from totalspineseg.cli.label import label_file

    result = label_file("step2", raw, tmp_path / "out.nii.gz")
    assert not result.numbered
    assert any("--loc" in w for w in result.warnings)
    pred = np.asarray(nib.load(tmp_path / "out.nii.gz").dataobj)
    numbered = [v for v in np.unique(pred) if v in L.DISCS_POSSIBLE or v in L.VERTEBRAE_POSSIBLE]
    assert numbered == [], "no number may be invented without a landmark"
    assert L.DISC_UNNUMBERED in pred and L.VERTEBRA_UNNUMBERED in pred
    assert L.CANAL in pred and L.CORD in pred


def _add_blob(classes, value, centre, n=30):
    out = classes.copy()
    c = np.array(centre)
    offs = np.argwhere(np.ones((4, 4, 4), bool))[:n] - 2
    for o in offs:
        out[tuple(c + o)] = value
    return out


def _split_vertebra(truth, classes, vertebra):
    """Cut a vertebra's arch off its body: clear a 3-voxel slab across the pedicles, just behind the body."""
    out = classes.copy()
    m = truth == vertebra
    canal_y = np.nonzero(truth == L.CANAL)[1].mean()
    y = np.arange(truth.shape[1])
    cut = (y > canal_y - 2) & (y < canal_y + 2)
    out[m & cut[None, :, None]] = 0
    return out


@pytest.mark.parametrize("step", ["step1", "step2"])
def test_robust_to_missing_disc_noise_and_split(tmp_path, step):
    missing = 75  # T4-T5
    ph = _phantom(7, "whole", "RAS", (1.0, 1.0, 1.0), missing_disc=missing)
    assert missing not in ph.labels
    classes = L.final_to_step1(ph.labels) if step == "step1" else L.final_to_step2(ph.labels)
    # A 30-voxel noise blob far from the spine, in a corner.
    corner = (3, 3, ph.labels.shape[2] // 2)
    classes = _add_blob(classes, int(L.Step1.DISC), corner)
    classes = _split_vertebra(ph.labels, classes, 43)  # L3 body and arch apart
    pred = _run(tmp_path, step, classes, ph.affine)
    truth, kinds = _truth_for(step, ph.labels)
    rate, failures = metrics.identification_rate(pred, truth, kinds=kinds, min_voxels=20)
    assert rate >= 0.95, failures
    # Levels after the gap are not shifted: every disc below the missing one is exact.
    below = [d for d in L.DISCS_DEFAULT if d > missing]
    ok = metrics.identified(pred, truth, [d for d in below if d in truth])
    assert all(ok.values()), ok


def test_localizer_outside_the_image_is_reported(tmp_path):
    ph = _phantom(3, "thoracic", "RAS", (1.0, 1.0, 1.0))
    loc = _localizer(3)
    shifted = loc.affine.copy()
    shifted[2, 3] += 2000.0  # two metres away: no overlap at all
    from totalspineseg.labeling import Localizer, label_step2

    result = label_step2(L.final_to_step2(ph.labels), ph.affine, Localizer(loc.labels, shifted))
    assert not result.numbered
    assert any("localizer overlaps no disc" in w for w in result.warnings)


@pytest.mark.parametrize("step,fov", [("step1", "whole"), ("step1", "cervical"), ("step2", "whole"),
                                      ("step2", "lumbar")])
def test_c1_and_sacrum_anchor_when_no_landmark_class_is_predicted(tmp_path, step, fov):
    """A network that never predicts the landmark disc classes: C1 (step 1) or the sacrum (step 2) anchors."""
    ph = _phantom(3, fov, "RAS", (1.0, 1.0, 1.0))
    classes = L.final_to_step1(ph.labels) if step == "step1" else L.final_to_step2(ph.labels)
    classes[np.isin(classes, list(L.LANDMARK_CLASS_TO_DISC))] = int(L.Step1.DISC)
    pred = _run(tmp_path, step, classes, ph.affine)
    truth, kinds = _truth_for(step, ph.labels)
    rate, failures = metrics.identification_rate(pred, truth, kinds=kinds, min_voxels=20)
    assert failures == []


def test_false_l5s_landmark_in_a_cervical_scan_is_ignored(tmp_path):
    """A network that marks the lowest disc of a cervical scan as L5-S must not renumber the neck."""
    ph = _phantom(3, "cervical", "RAS", (1.0, 1.0, 1.0))
    classes = L.final_to_step1(ph.labels)
    lowest = max(d for d in L.DISCS_POSSIBLE if d in ph.labels)
    classes[ph.labels == lowest] = int(L.Step1.DISC_L5_S)
    from totalspineseg.labeling import label_step1

    result = label_step1(classes, ph.affine)
    assert any("implausible" in w for w in result.warnings)
    truth, kinds = _truth_for("step1", ph.labels)
    assert metrics.identification_rate(result.seg, truth, kinds=kinds, min_voxels=20)[1] == []


def test_step2_keeps_step1_numbering_when_its_landmarks_fail():
    """A step-2 network without landmark or sacrum classes still gets numbers from the step-1 result."""
    from totalspineseg.labeling import Localizer, label_step1, label_step2

    ph = _phantom(3, "lumbar", "RAS", (1.0, 1.0, 1.0))
    step1 = label_step1(L.final_to_step1(ph.labels), ph.affine)
    classes = L.final_to_step2(ph.labels)
    classes[np.isin(classes, list(L.LANDMARK_CLASS_TO_DISC))] = int(L.Step2.DISC)
    classes[classes == L.Step2.SACRUM] = int(L.Step2.VERTEBRA_ODD)
    alone = label_step2(classes, ph.affine)
    assert not alone.numbered
    helped = label_step2(classes, ph.affine, step1=Localizer(step1.seg, ph.affine))
    assert helped.numbered
    truth = ph.labels.copy()
    truth[truth == L.SACRUM] = 0  # the sacrum class was removed above
    _, failures = metrics.identification_rate(helped.seg, truth, kinds=("disc", "vertebra"), min_voxels=20)
    assert failures == []


def _fragment_in_body(truth, classes, vertebra, value, half=3):
    """Paint a small cube of disc class inside a vertebral body (a typical network error on T1w images)."""
    out = classes.copy()
    canal_y = np.nonzero(truth == L.CANAL)[1].mean()
    body = np.argwhere((truth == vertebra) & (np.arange(truth.shape[1])[None, :, None] > canal_y + 8))
    c = np.rint(body.mean(axis=0)).astype(int)
    box = tuple(slice(x - half, x + half) for x in c)
    inside = truth[box] == vertebra
    out[box][inside] = value
    assert 100 <= int(inside.sum()) <= 300  # above the noise floor, far below any disc
    return out


@pytest.mark.parametrize("step", ["step1", "step2"])
def test_disc_fragments_inside_vertebrae_do_not_shift_numbers(tmp_path, step):
    """Specks of disc class inside C2 and L3 would each count as a level and shift every number above."""
    ph = _phantom(3, "whole", "RAS", (1.0, 1.0, 1.0))
    classes = L.final_to_step1(ph.labels) if step == "step1" else L.final_to_step2(ph.labels)
    classes[np.isin(classes, [int(L.Step1.DISC_C2_C3), int(L.Step1.DISC_C7_T1), int(L.Step1.DISC_T12_L1)])] = 1
    classes = _fragment_in_body(ph.labels, classes, L.C2, int(L.Step1.DISC))
    classes = _fragment_in_body(ph.labels, classes, 43, int(L.Step1.DISC))  # L3
    from totalspineseg.labeling import label_step1, label_step2

    result = (label_step1 if step == "step1" else label_step2)(classes, ph.affine)
    assert any("fragment" in w for w in result.warnings)
    truth, kinds = _truth_for(step, ph.labels)
    _, failures = metrics.identification_rate(result.seg, truth, kinds=kinds, min_voxels=20)
    assert failures == []


def test_disc_cut_by_the_field_of_view_is_kept():
    """A small top disc that reaches the edge of the image is a real, truncated level, not a fragment."""
    from totalspineseg.labeling import label_step1

    ph = _phantom(3, "lumbar", "RAS", (1.0, 1.0, 1.0))
    top = min(d for d in L.DISCS_POSSIBLE if d in ph.labels)
    z = np.nonzero(ph.labels == top)[2]
    keep_from = int(z.max()) - 1  # leave a sliver of the top disc
    labels = ph.labels[:, :, : keep_from + 1]
    result = label_step1(L.final_to_step1(labels), ph.affine)
    assert top in result.seg
    assert not any("fragment" in w for w in result.warnings)


def _shifted(seg, by):
    """A final-scheme segmentation with every disc renamed `by` places down the usual sequence."""
    out = seg.copy()
    seq = L.DISCS_DEFAULT
    for i, d in enumerate(seq):
        if d in seg and 0 <= i + by < len(seq):
            out[seg == d] = seq[i + by]
    return out


def test_step1_numbering_cannot_outvote_step2_landmark_and_sacrum():
    """A step-1 result off by one level loses to step 2's own L5-S landmark and sacrum, however many discs."""
    from totalspineseg.labeling import Localizer, label_step1, label_step2

    ph = _phantom(3, "thoracolumbar", "RAS", (1.0, 1.0, 1.0))
    step1 = label_step1(L.final_to_step1(ph.labels), ph.affine)
    wrong = Localizer(_shifted(step1.seg, -1), ph.affine)
    classes = L.final_to_step2(ph.labels)
    classes[np.isin(classes, [int(L.Step2.DISC_T12_L1)])] = int(L.Step2.DISC)
    result = label_step2(classes, ph.affine, step1=wrong)
    _, failures = metrics.identification_rate(result.seg, ph.labels, min_voxels=20)
    assert failures == []
    assert any("step1 anchor" in w and "ignored" in w for w in result.warnings)


def test_sacrum_class_elsewhere_does_not_move_the_sacrum_anchor():
    from totalspineseg.labeling import label_step2

    ph = _phantom(3, "thoracolumbar", "RAS", (1.0, 1.0, 1.0))
    classes = L.final_to_step2(ph.labels)
    classes[np.isin(classes, list(L.LANDMARK_CLASS_TO_DISC))] = int(L.Step2.DISC)
    classes[ph.labels == 28] = int(L.Step2.SACRUM)  # the network calls T8 sacrum, too
    result = label_step2(classes, ph.affine)
    _, failures = metrics.identification_rate(result.seg, ph.labels, kinds=("disc",), min_voxels=20)
    assert failures == []


def test_step2_takes_c1_from_step1_when_it_finds_none():
    from totalspineseg.labeling import Localizer, label_step1, label_step2

    ph = _phantom(3, "cervical", "RAS", (1.0, 1.0, 1.0))
    step1 = label_step1(L.final_to_step1(ph.labels), ph.affine)
    classes = L.final_to_step2(ph.labels)
    classes[ph.labels == L.C1] = 0
    assert L.C1 not in label_step2(classes, ph.affine).seg
    result = label_step2(classes, ph.affine, step1=Localizer(step1.seg, ph.affine))
    assert metrics.dice_per_label(result.seg, ph.labels, [L.C1])[L.C1] == 1.0
    _, failures = metrics.identification_rate(result.seg, ph.labels, min_voxels=20)
    assert failures == []


def test_a_landmark_class_on_a_sliver_of_a_disc_does_not_anchor():
    """A few hundred voxels of the C7-T1 class on C6-C7 (an unsure network) must not outvote C1."""
    from totalspineseg.labeling import label_step1

    ph = _phantom(3, "cervicothoracic", "RAS", (1.0, 1.0, 1.0))
    classes = L.final_to_step1(ph.labels)
    classes[np.isin(classes, list(L.LANDMARK_CLASS_TO_DISC))] = int(L.Step1.DISC)
    c6c7 = np.argwhere(ph.labels == 67)
    sliver = c6c7[np.argsort(c6c7[:, 0])][: int(0.15 * len(c6c7))]  # the right-most 15% of the disc
    assert len(sliver) > 200
    classes[tuple(sliver.T)] = int(L.Step1.DISC_C7_T1)
    result = label_step1(classes, ph.affine)
    truth, kinds = _truth_for("step1", ph.labels)
    assert metrics.identification_rate(result.seg, truth, kinds=kinds, min_voxels=20)[1] == []


@pytest.mark.parametrize("step", ["step1", "step2"])
def test_l6_found_when_t12l1_is_marked_with_the_wrong_landmark_class(step):
    """An unsure network fires every landmark head on T12-L1 and nnU-Net's region order writes L5-S there.

    The disc is still known to be a landmark: with L5-S and the sacrum at the bottom, only the sequence with an
    L6 puts a landmark disc where it is, so the L6 spine is numbered right instead of one level off.
    """
    from totalspineseg.labeling import label_step1, label_step2

    ph = _phantom(5, "lumbar", "RAS", (1.0, 1.0, 1.0), extra_lumbar=True)
    classes = L.final_to_step1(ph.labels) if step == "step1" else L.final_to_step2(ph.labels)
    t12l1 = ph.labels == L.DISC_T12_L1
    classes[t12l1] = classes[ph.labels == L.DISC_L5_S][0]  # the L5-S class, on T12-L1
    result = (label_step1 if step == "step1" else label_step2)(classes, ph.affine)
    truth, kinds = _truth_for(step, ph.labels)
    assert metrics.identification_rate(result.seg, truth, kinds=kinds, min_voxels=20)[1] == []


def test_an_unnamed_landmark_cannot_choose_a_numbering_alone():
    """Discs marked only "some landmark" (here every landmark class on both) give no numbering by themselves."""
    from totalspineseg.labeling import ANY_LANDMARK, Anchor, choose_numbering

    anchors = [Anchor(2, ANY_LANDMARK, 1.0, "landmark"), Anchor(8, ANY_LANDMARK, 1.0, "landmark")]
    seq, off, agree, reject = choose_numbering(anchors, np.arange(10))
    assert agree == [] and reject == anchors


@pytest.mark.parametrize("step", ["step1", "step2"])
def test_stray_canal_blobs_do_not_bend_the_canal_line(step):
    """Canal-class blobs in front of the spine (an unsure network) must not move discs along the canal."""
    from totalspineseg.labeling import label_step1, label_step2

    ph = _phantom(5, "lumbar", "RAS", (1.0, 1.0, 1.0))
    classes = L.final_to_step1(ph.labels) if step == "step1" else L.final_to_step2(ph.labels)
    canal_class = int(L.Step1.CANAL) if step == "step1" else int(L.Step2.CANAL)
    xs, ys, zs = np.nonzero(np.isin(ph.labels, [L.CANAL, L.CORD]))
    x0, front = int(np.median(xs)), int(ys.max()) + 45
    for z in np.linspace(zs.min() + 40, zs.max() - 40, 4).astype(int):
        blob = (slice(x0 - 12, x0 + 12), slice(min(front, classes.shape[1] - 10), classes.shape[1] - 2),
                slice(z - 12, z + 12))
        classes[blob] = np.where(classes[blob] == 0, canal_class, classes[blob])
    result = (label_step1 if step == "step1" else label_step2)(classes, ph.affine)
    truth, kinds = _truth_for(step, ph.labels)
    assert not [w for w in result.warnings if "missing" in w]
    assert metrics.identification_rate(result.seg, truth, kinds=kinds, min_voxels=20)[1] == []
