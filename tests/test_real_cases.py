"""Partly labelled real scans as training cases (training.real_cases, lite_recipe.add_real_cases)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from totalspineseg import labels as L
from totalspineseg import training, volume
from totalspineseg.training import dataset, real_cases
from totalspineseg.training.dataset import IGNORE_CLASS, GridCase

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def _column(shape=(30, 30, 60)) -> np.ndarray:
    """Lumbar discs L1-L2 ... L5-S (final labels) as flat slabs 3 voxels high, 8 voxels apart, top to bottom."""
    seg = np.zeros(shape, dtype=np.uint8)
    for i, disc in enumerate((92, 93, 94, 95, L.DISC_L5_S)):
        top = shape[2] - 6 - 10 * i
        seg[10:20, 10:20, top - 3: top] = disc
    return seg


def test_bodies_fill_the_space_between_consecutive_discs_only():
    seg = _column()
    bodies = real_cases.bodies_between_discs(seg)
    assert sorted(int(v) for v in np.unique(bodies) if v) == [42, 43, 44, 45]  # L2 .. L5
    z_of = {v: np.argwhere(seg == v)[:, 2] for v in (92, 93, 94, 95, L.DISC_L5_S)}
    for body, (upper, lower) in zip((42, 43, 44, 45), ((92, 93), (93, 94), (94, 95), (95, L.DISC_L5_S)),
                                    strict=True):
        z = np.argwhere(bodies == body)[:, 2]
        assert z_of[lower].max() < z.min() and z.max() < z_of[upper].min()
    from scipy import ndimage

    assert not (bodies.astype(bool) & ndimage.binary_dilation(seg > 0)).any()  # one voxel kept free of the discs

    seg[seg == 94] = 0  # L3-L4 missing: no body is drawn across the gap
    assert sorted(int(v) for v in np.unique(real_cases.bodies_between_discs(seg)) if v) == [42, 45]


def test_far_background_is_far_and_within_the_labelled_height():
    fg = np.zeros((40, 40, 30), dtype=bool)
    fg[20, 20, 10:20] = True
    far = real_cases.far_background(fg, (2.0, 2.0, 2.0), 20.0)
    assert not far[:, :, :10].any() and not far[:, :, 20:].any()
    assert far[0, 0, 15] and not far[20, 28, 15]  # 56 mm away: background; 16 mm away: unknown
    assert not far[fg].any()
    assert not real_cases.far_background(np.zeros_like(fg), (1, 1, 1), 5.0).any()


def _partial_disc_case() -> real_cases.PartialCase:
    seg = _column()
    image = np.random.default_rng(0).random(seg.shape).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    seg, known = real_cases.disc_labels(seg, (2.0, 2.0, 2.0))
    return real_cases.PartialCase(GridCase(image, seg, affine), known)


def test_labels_are_ignored_where_the_manual_labels_say_nothing():
    partial = _partial_disc_case()
    step1 = real_cases.step1_labels(partial)
    assert (step1[~partial.known] == IGNORE_CLASS[1]).all()
    assert (step1[partial.case.seg == L.DISC_L5_S] == L.Step1.DISC_L5_S).all()
    assert (step1[np.isin(partial.case.seg, (42, 43, 44, 45))] == L.Step1.VERTEBRA).all()
    assert (step1[partial.known & (partial.case.seg == 0)] == 0).all()


def test_step2_copies_keep_class_7_below_the_marked_disc_and_ignore_the_rest():
    partial = _partial_disc_case()
    copies = real_cases.step2_cases(partial)
    assert [c[0] for c in copies] == ["", dataset.SWAPPED_SUFFIX]
    for _, (image, channel), labels, _ in copies:
        assert image.shape == channel.shape == labels.shape
        assert (labels == IGNORE_CLASS[2]).any()
        marked = {int(v) for v in np.unique(labels[channel.astype(bool)])}
        assert marked <= {int(c) for c in L.STEP2_DISC_CLASSES}
        for disc in (92, 93, 94, 95):  # the vertebra right below a marked disc is class 7, below the others 8
            crop = partial.case.seg[_crop_slices(partial, labels.shape)]
            below = L.vertebra_below_disc(disc)
            if not (crop == below).any():
                continue
            is_marked = bool(channel[crop == disc].any())
            assert set(np.unique(labels[crop == below]).tolist()) == {7 if is_marked else 8}
    first, second = copies[0][1][1], copies[1][1][1]
    assert not (first.astype(bool) & second.astype(bool)).any()  # the two copies mark the other discs


def _crop_slices(partial, shape):
    margin = int(np.ceil((dataset.CROP_MARGIN_MM + real_cases.STEP2_CROP_EXTRA_MM) / 2.0))
    from totalspineseg import resample

    _, _, slices = resample.crop_to_mask(partial.case.image, partial.case.seg != 0, partial.case.affine, margin)
    assert tuple(s.stop - s.start for s in slices) == shape
    return slices


def test_a_cord_only_scan_marks_the_predicted_discs_in_step_2():
    cord = np.zeros((30, 30, 60), dtype=bool)
    cord[14:16, 14:16, 5:55] = True
    seg, known = real_cases.cord_labels(cord, (2.0, 2.0, 2.0))
    partial = real_cases.PartialCase(GridCase(np.ones(cord.shape, np.float32), seg, np.diag([2.0, 2, 2, 1])),
                                     known)
    predicted = _column()
    (_, (_, first), labels, _), (_, (_, second), _, _) = real_cases.step2_cases(partial, predicted)
    assert first.any() and second.any() and not (first.astype(bool) & second.astype(bool)).any()
    assert {int(L.Step2.CORD), IGNORE_CLASS[2]} <= set(np.unique(labels).tolist()) <= {0, int(L.Step2.CORD),
                                                                                  IGNORE_CLASS[2]}
    zeros = real_cases.step2_cases(partial)[0][1][1]
    assert not zeros.any()


def test_dataset_json_with_the_ignore_label_is_accepted_by_nnunet():
    pytest.importorskip("nnunetv2")
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    for step in (1, 2):
        plain, ignoring = dataset.dataset_json(step, 4), dataset.dataset_json(step, 4, ignore_label=True)
        assert ignoring["regions_class_order"] == plain["regions_class_order"]
        assert list(ignoring["labels"])[:-1] == list(plain["labels"]) and ignoring["labels"]["ignore"] == \
            IGNORE_CLASS[step]
        manager = LabelManager(ignoring["labels"], ignoring["regions_class_order"])
        assert manager.has_ignore_label and manager.ignore_label == IGNORE_CLASS[step]
        assert manager.num_segmentation_heads == LabelManager(plain["labels"],
                                                              plain["regions_class_order"]).num_segmentation_heads


def test_scans_for_splits_by_subject_group_and_leaves_test_only_scans_to_experiments():
    assert real_cases.scans_for("none") == []
    a, b = real_cases.scans_for("A"), real_cases.scans_for("B")
    assert a and b and not {s.name for s in a} & {s.name for s in b}
    assert len(real_cases.scans_for("all")) == len(a) + len(b)
    assert not any(s.test_only for s in real_cases.scans_for("all"))
    everything = real_cases.scans_for("all", test_only_too=True)
    assert {s.name for s in everything if s.test_only} == {"IVD_11", "IVD_20", "IVD_25"}  # fastcleverseg
    assert real_cases.group_of_image("fastcleverseg/IVD_20_I.nii.gz") is None
    assert real_cases.group_of_image("fastcleverseg/IVD_20_I.nii.gz", test_only_too=True) == "B"
    with pytest.raises(ValueError):
        real_cases.scans_for("C")
    # a subject's scans never straddle the groups (same folder, same subject)
    assert {s.split for s in real_cases.REAL_SCANS if "errsm_18" in s.image} == {"B"}
    assert {s.split for s in real_cases.REAL_SCANS if s.image.startswith("sct_testing_data/")} == {"A"}


def _write_fake_real_root(root: Path) -> list[real_cases.RealScan]:
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    image = np.random.default_rng(1).random((60, 60, 120)).astype(np.float32)
    cord = np.zeros(image.shape, np.float32)
    cord[29:32, 29:32, 10:110] = 1
    volume.save_nifti(root / "c" / "t2.nii.gz", image, affine, np.float32)
    volume.save_nifti(root / "c" / "cord.nii.gz", cord, affine, np.float32)
    ivd = np.zeros(image.shape, np.uint8)
    for value, top in ((5, 100), (4, 80), (3, 60), (2, 40), (1, 20)):
        ivd[20:40, 20:40, top - 5: top] = value
    volume.save_nifti(root / "d" / "img.nii.gz", image, affine, np.float32)
    volume.save_nifti(root / "d" / "gt.nii.gz", ivd, affine, np.uint8)
    return [real_cases.RealScan("fake_cord", "c/t2.nii.gz", "c/cord.nii.gz", "cord", "A"),
            real_cases.RealScan("fake_discs", "d/img.nii.gz", "d/gt.nii.gz", "discs", "A")]


def test_add_real_cases_writes_every_copy_with_the_ignore_label(tmp_path, monkeypatch):
    from totalspineseg.training import demo_recipe, lite_recipe

    scans = _write_fake_real_root(tmp_path / "real")
    monkeypatch.setattr(real_cases, "REAL_SCANS", tuple(scans))
    dirs = training.NnUNetDirs(tmp_path / "nnUNet")
    for step in (1, 2):
        training.create_dataset(dirs.raw, step)
    settings = lite_recipe.LiteSettings(n_synth=0, n_phantoms=0, real="A", real_copies=2, init=None,
                                        real_test_only=True)
    names = lite_recipe.add_real_cases(dirs, settings, root=tmp_path / "real", progress=False)
    assert len(names) == settings.n_real == 4
    assert demo_recipe._raw_done(dirs, settings.n_real)
    for step in (1, 2):
        folder = dirs.raw / training.DATASET_NAMES[training.DATASET_IDS[step]]
        assert json.loads((folder / "dataset.json").read_text())["labels"]["ignore"] == IGNORE_CLASS[step]
        labels = volume.load_labels(folder / "labelsTr" / f"real_fake_discs_0{dataset.FILE_ENDING}").data
        assert IGNORE_CLASS[step] in labels and int(L.Step1.DISC_L5_S) in labels
    record = json.loads((dirs.raw / lite_recipe.REAL_CASES_FILE).read_text())
    assert [s["name"] for s in record["scans"]] == ["fake_cord", "fake_discs"] and record["copies"] == 2


def test_add_real_cases_refuses_a_missing_scan(tmp_path, monkeypatch):
    from totalspineseg.training import lite_recipe

    scans = _write_fake_real_root(tmp_path / "real")
    (tmp_path / "real" / "d" / "gt.nii.gz").unlink()
    monkeypatch.setattr(real_cases, "REAL_SCANS", tuple(scans))
    settings = lite_recipe.LiteSettings(n_synth=0, n_phantoms=0, real="A", init=None, real_test_only=True)
    with pytest.raises(training.TotalSpineSegError, match="d/img.nii.gz"):
        lite_recipe.add_real_cases(training.NnUNetDirs(tmp_path / "nnUNet"), settings, root=tmp_path / "real",
                                   progress=False)


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/real is absent (real scans are not shipped)")
def test_real_lumbar_discs_give_bodies_l2_to_l5_in_order():
    scan = next(s for s in real_cases.REAL_SCANS if s.name == "IVD_20")
    partial = real_cases.load_partial_case(REAL, scan, 2.0)
    seg = partial.case.seg
    present = sorted(int(v) for v in np.unique(seg) if v)
    assert present == [42, 43, 44, 45, 92, 93, 94, 95, L.DISC_L5_S]
    heights = [np.argwhere(seg == v)[:, 2].mean() for v in (92, 42, 93, 43, 94, 44, 95, 45, L.DISC_L5_S)]
    assert heights == sorted(heights, reverse=True)  # canonical grid: z grows superiorly
    assert partial.known[seg > 0].all() and not partial.known.all()


def test_the_training_scans_are_the_evaluated_scans_with_the_same_labels():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import eval_real

    evaluated = {s.image: {t.path for t in s.truths} for s in eval_real.SCANS}
    for scan in real_cases.REAL_SCANS:
        assert scan.truth in evaluated[scan.image], scan.name
    for scan in eval_real.SCANS:  # every scan with cord or disc labels belongs to a group; the others to none
        trainable = any(t.kind in ("cord", "discs") for t in scan.truths)
        group = real_cases.group_of_image(scan.image, test_only_too=True)
        assert (group is not None) == (trainable or "history_data" in scan.image)


def test_a_model_trained_on_test_only_scans_is_never_bundled_into_the_package(tmp_path):
    from totalspineseg.training import lite_recipe

    package_lite = Path(lite_recipe.__file__).resolve().parents[1] / "resources" / "lite"
    settings = lite_recipe.LiteSettings(real="all", real_test_only=True)
    with pytest.raises(training.TotalSpineSegError, match="never shipped"):
        lite_recipe.train_lite(tmp_path, settings, bundle=package_lite, progress=False)


def test_finish_dataset_never_rewrites_a_hard_linked_dataset_json_in_place(tmp_path):
    import os

    for step in (1, 2):
        training.create_dataset(tmp_path / "raw", step)
        training.finish_dataset(tmp_path / "raw", step)
    copy = tmp_path / "copy"
    copy.mkdir()
    original = tmp_path / "raw" / training.DATASET_NAMES[101] / "dataset.json"
    os.link(original, copy / "dataset.json")  # as `cp -al` copies a dataset to add cases to it
    training.finish_dataset(tmp_path / "raw", 1, ignore_label=True)
    assert "ignore" in json.loads(original.read_text())["labels"]
    assert "ignore" not in json.loads((copy / "dataset.json").read_text())["labels"]
