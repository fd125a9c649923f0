"""benchmarks/real_scores.py (the scoring of benchmarks/eval_real.py) on synthetic arrays, and one real scan."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import eval_real  # noqa: E402
import real_scores as rs  # noqa: E402

from totalspineseg import labels as L  # noqa: E402

C2, C3, C4, T2 = 12, 13, 14, 22
RAS = np.eye(4)


def column(bodies: list[int], height: int = 10, top: int = 0) -> np.ndarray:
    """A RAS 1 mm column: vertebral bodies stacked from the bottom (z = 0) up, 8 mm high, anterior (y 22..31) of
    a cord (x 13..16, y 14..17); behind the cord (y 0..9) at each body's height an arch of the vertebra above
    (the way spinous processes slope down), so that only "anterior of the point" gives the right answer."""
    seg = np.zeros((30, 40, height * len(bodies) + top), np.uint8)
    for i, v in enumerate(bodies):
        z0 = i * height
        seg[8:22, 22:32, z0 + 1:z0 + height - 1] = v
    seg[13:17, 14:18, :] = L.CORD
    for i in range(len(bodies) - 1):  # an arch behind the cord at the body's height, of the vertebra above
        seg[4:26, 0:10, i * height + 2:i * height + 8] = bodies[i + 1]  # more voxels than the body
    return seg


def point_map(shape, points: dict[int, tuple[int, int, int]]) -> np.ndarray:
    out = np.zeros(shape, np.int16)
    for v, ijk in points.items():
        out[ijk] = v
    return out


def flip(array: np.ndarray, affine: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """The same image stored the other way along one axis (same world coordinates)."""
    n = array.shape[axis]
    flipper = np.eye(4)
    flipper[axis, axis] = -1
    flipper[axis, 3] = n - 1
    return np.flip(array, axis).copy(), affine @ flipper


def to_psr(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RAS storage -> PSR storage (axis 0 towards posterior, 1 superior, 2 right), the SCT sagittal layout."""
    ny = array.shape[1]
    out = np.transpose(array, (1, 2, 0))[::-1, :, :]  # (y reversed, z, x)
    perm = np.zeros((4, 4))
    perm[0, 2] = 1  # x = k
    perm[1, 0] = -1  # y = ny - 1 - i
    perm[1, 3] = ny - 1
    perm[2, 1] = 1  # z = j
    perm[3, 3] = 1
    return out.copy(), affine @ perm


# ---------------------------------------------------------------------------------------------------------
# Dice and cord


def test_dice():
    a = np.zeros((4, 4, 4), bool)
    b = a.copy()
    assert rs.dice(a, b) == 1.0  # both empty
    a[0, :2, 0] = b[0, 1:3, 0] = True  # 2 and 2 voxels, 1 shared
    assert rs.dice(a, b) == pytest.approx(0.5)
    assert rs.dice(a, np.zeros_like(a)) == 0.0
    with pytest.raises(ValueError, match="shapes"):
        rs.dice(a, b[:2])


def test_cord_dice_thresholds_float_masks():
    seg = np.zeros((5, 5, 5), np.uint8)
    seg[2, 2, :] = L.CORD
    seg[1, 1, :] = L.CANAL
    mask = np.zeros((5, 5, 5), np.float32)
    mask[2, 2, :] = 0.9
    mask[1, 1, :] = 0.4  # below 0.5: not cord
    assert rs.cord_dice(seg, mask) == 1.0
    mask[3, 3, :] = 0.6
    assert rs.cord_dice(seg, mask) == pytest.approx(2 * 5 / (5 + 10))


# ---------------------------------------------------------------------------------------------------------
# Landmarks


def test_sct_levels_map_to_final_vertebrae():
    assert [rs.sct_vertebra(n) for n in (1, 2, 3, 5, 7, 8, 9, 11, 19, 20, 24)] == [
        11, 12, 13, 15, 17, 21, 22, 24, 32, 41, 45]
    with pytest.raises(ValueError):
        rs.sct_vertebra(25)


def test_vertebra_at_point_takes_the_body_in_front_not_the_arch_behind():
    seg = column([C4, C3, C2])  # bottom to top
    # mid-C3 body height, inside the cord; the arch behind the cord at that height is C2's
    assert rs.vertebra_at_point(seg, RAS, np.array([15.0, 16.0, 15.0])) == C3
    assert rs.vertebra_at_point(seg, RAS, np.array([15.0, 16.0, 5.0])) == C4


def test_landmarks_right_wrong_and_none():
    seg = column([C4, C3, C2], top=10)  # 10 empty slices on top
    points = point_map(seg.shape, {2: (15, 16, 25), 3: (15, 16, 5), 9: (15, 16, 36)})
    scores = rs.score_landmarks(seg, RAS, points, RAS)
    assert [(s.point, s.expected, s.found, s.verdict) for s in scores] == [
        (2, C2, C2, "right"), (3, C3, C4, "wrong"), (9, T2, None, "none")]
    assert [s.text() for s in scores] == ["C2 right", "C3 wrong (C4)", "T2 none"]


def test_landmarks_ignore_far_away_bone_and_need_the_slab():
    seg = np.zeros((100, 40, 30), np.uint8)
    seg[90:99, 22:32, 10:20] = C3  # 75 mm to the side of the point: not its vertebra
    assert rs.vertebra_at_point(seg, RAS, np.array([15.0, 16.0, 15.0])) is None
    seg[8:22, 22:32, 10:20] = C2
    assert rs.vertebra_at_point(seg, RAS, np.array([15.0, 16.0, 15.0])) == C2
    assert rs.vertebra_at_point(seg, RAS, np.array([15.0, 16.0, 25.0])) is None  # 5 mm above the bone
    assert rs.vertebra_at_point(np.zeros_like(seg), RAS, np.array([15.0, 16.0, 15.0])) is None


def test_landmarks_do_not_depend_on_orientation():
    seg = column([C4, C3, C2])
    points = point_map(seg.shape, {2: (15, 16, 25), 3: (15, 16, 15)})
    affine = np.diag([0.8, 1.2, 1.0, 1.0])
    affine[:3, 3] = (-10.0, 40.0, -300.0)
    expected = [(s.point, s.found) for s in rs.score_landmarks(seg, affine, points, affine)]
    assert expected == [(2, C2), (3, C3)]
    for axis in range(3):
        fseg, faff = flip(seg, affine, axis)
        assert [(s.point, s.found) for s in rs.score_landmarks(fseg, faff, points, affine)] == expected
        fpts, fpaff = flip(points, affine, axis)
        assert [(s.point, s.found) for s in rs.score_landmarks(seg, affine, fpts, fpaff)] == expected
    pseg, paff = to_psr(seg, affine)
    ppts, _ = to_psr(points, affine)
    assert [(s.point, s.found) for s in rs.score_landmarks(pseg, paff, ppts, paff)] == expected
    # a flipped S-I axis: points are matched in world space, so storage order cannot swap C2 and C3
    fseg, faff = flip(pseg, paff, 1)
    assert [(s.point, s.found) for s in rs.score_landmarks(fseg, faff, ppts, paff)] == expected


def test_landmarks_on_thick_slices_use_at_least_one_voxel():
    seg = column([C3, C2])[:, :, ::5]  # 5 mm slices: 4 slices
    affine = np.diag([1.0, 1.0, 5.0, 1.0])
    # slices at z = 0 (empty), 5 (C3), 10 (empty), 15 (C2) mm: a 2 mm slab around z = 7 holds no slice centre,
    # half a slice (2.5 mm) holds z = 5
    assert rs.vertebra_at_point(seg, affine, np.array([15.0, 16.0, 7.0]), slab_mm=2.0) == C3


def test_vertebra_at_point_on_a_real_grid(real_data):
    """PAM50's cord levels (LAS, 1x1x2 mm) moved 12 mm anterior stand for vertebral bodies: the level of each
    level's cord centre is found (no network; checks the world-space geometry on a real header)."""
    from totalspineseg import volume

    levels = volume.load_volume(real_data / "sct_testing_data/template/template/PAM50_small_levels.nii.gz")
    cord = np.rint(levels.data).astype(int)
    affine = levels.affine
    axis = int(np.argmax(np.abs(affine[1, :3])))  # the storage axis closest to anterior-posterior
    shift = int(round(12 / affine[1, axis]))
    bodies = np.roll(cord, shift, axis=axis)
    seg = np.zeros(cord.shape, np.uint8)
    for n in range(1, 21):
        seg[bodies == n] = rs.sct_vertebra(n)
    found = {n: rs.vertebra_at_point(seg, affine, rs.to_world(affine, np.argwhere(cord == n)).mean(axis=0))
             for n in range(2, 20)}
    assert found == {n: rs.sct_vertebra(n) for n in range(2, 20)}


# ---------------------------------------------------------------------------------------------------------
# Discs


def test_discs_numbered_right_wrong_missing_and_dice():
    truth = np.zeros((10, 10, 40), np.uint8)
    seg = np.zeros_like(truth)
    truth[2:8, 2:8, 2:5] = 1  # L5-S
    truth[2:8, 2:8, 12:15] = 2  # L4-L5
    truth[2:8, 2:8, 22:25] = 3  # L3-L4
    seg[2:8, 2:8, 2:5] = L.DISC_L5_S  # right, Dice 1
    seg[2:8, 2:8, 12:14] = 94  # two thirds labelled L3-L4: wrong
    seg[2:8, 2:8, 14] = 95  # one third L4-L5
    seg[2:8, 2:8, 22:25] = 43  # bone where the disc is: no disc label at all
    scores = rs.score_discs(seg, truth, eval_real.IVD_TO_FINAL)
    assert [(d.truth, d.expected, d.found, d.right) for d in scores] == [
        (1, 100, 100, True), (2, 95, 94, False), (3, 94, None, False)]  # 4 and 5 absent from the truth: skipped
    assert scores[0].dice == 1.0
    assert scores[1].dice == pytest.approx(2 * 36 / (36 + 108))
    assert scores[2].dice == pytest.approx(0.0)  # L3-L4's voxels lie on L4-L5's truth: none on its own
    assert scores[1].dice_found == pytest.approx(2 * 72 / (72 + 108))  # the shape of the covering label (L3-L4)
    assert scores[2].dice_found == 0.0  # no disc label covers it
    assert [d.text() for d in scores] == ["L5-S right 1.00", "L4-L5 wrong (L3-L4) 0.50", "L3-L4 none 0.00"]


def test_ivd_values_are_the_lumbar_discs():
    assert [L.FINAL[v].short for v in eval_real.IVD_TO_FINAL.values()] == [
        "L5-S", "L4-L5", "L3-L4", "L2-L3", "L1-L2"]


# ---------------------------------------------------------------------------------------------------------
# Vertebral bodies


def body_phantom(order=(7, 3, 9, 1, 5)) -> tuple[np.ndarray, np.ndarray]:
    """Five manual bodies (ids not in order, listed top to bottom) in a RAS column, and a prediction that numbers
    them L1..L5 with a sacrum right below."""
    truth = np.zeros((20, 20, 70), np.uint8)
    seg = np.zeros_like(truth)
    seg[4:16, 4:16, 0:8] = L.SACRUM
    for i, body in enumerate(reversed(order)):  # bottom up
        z0 = 10 + 12 * i
        truth[6:14, 6:14, z0:z0 + 8] = body
        seg[5:15, 5:15, z0 - 1:z0 + 9] = 45 - i  # L5 at the bottom
    return seg, truth


def test_bodies_counting_containment_and_lumbar_levels():
    seg, truth = body_phantom()
    score = rs.score_bodies(seg, truth, RAS)
    assert [b.truth for b in score.bodies] == [7, 3, 9, 1, 5]  # superior first, whatever the ids
    assert [b.found for b in score.bodies] == [41, 42, 43, 44, 45]
    assert score.one_to_one and score.distinct == 5 and score.overlapping == 5
    assert score.mean_containment == 1.0
    assert [b.expected for b in score.bodies] == [41, 42, 43, 44, 45]
    assert score.lumbar_right == 5 and len(score.lumbar) == 5
    assert "L5" in score.identity and "no level ids" in score.identity
    assert "L1-L5 right 5/5" in score.text()


def test_bodies_split_merged_missed_and_partial_containment():
    seg, truth = body_phantom()  # top to bottom: 7 = L1, 3 = L2, 9 = L3, 1 = L4, 5 = L5
    seg[seg == 42] = 41  # L1 and L2 merged
    seg[truth == 9] = 0  # L3: nothing
    seg[6:14, 6:14, 10:13] = 44  # the bottom body three eighths inside L4: split
    seg[truth == 7] = 0
    seg[6:14, 6:10, 58:66] = 41  # the top body half inside L1
    score = rs.score_bodies(seg, truth, RAS)
    found = {b.truth: b for b in score.bodies}
    assert found[9].found is None and found[9].containment == 0.0
    assert found[7].found == 41 and found[7].containment == pytest.approx(0.5)
    assert found[3].found == 41 and found[3].containment == 1.0
    assert found[5].found == 45 and found[5].containment == pytest.approx(5 / 8)
    assert found[5].second == 44 and found[5].second_fraction == pytest.approx(3 / 8)
    assert [b.truth for b in score.split] == [5] and [b.truth for b in score.missed] == [9]
    assert score.distinct == 3 and not score.one_to_one
    assert score.mean_containment == pytest.approx((0.5 + 1 + 0 + 1 + 5 / 8) / 5)
    assert score.lumbar_right == 3  # the sacrum still makes the lowest body L5: L1, L4, L5 right


def test_bodies_level_from_a_sacrum_that_covers_the_lowest_body():
    seg, truth = body_phantom()
    seg[seg == 45] = L.SACRUM  # the prediction calls the lowest body the sacrum: it is S1, the next L5
    seg[seg == 44] = 45
    score = rs.score_bodies(seg, truth, RAS)
    assert [b.expected for b in score.bodies] == [42, 43, 44, 45, L.SACRUM]
    assert "S1" in score.identity
    assert score.lumbar_right == 1 and len(score.lumbar) == 4  # only L5 (body 1, labelled 45) is right


def test_bodies_level_unknown_without_a_sacrum_next_to_them():
    seg, truth = body_phantom()
    seg[seg == L.SACRUM] = 0
    score = rs.score_bodies(seg, truth, RAS)
    assert all(b.expected is None for b in score.bodies) and not score.lumbar
    assert "level unknown" in score.identity and "L1-L5: level unknown" in score.text()
    seg, truth = body_phantom()
    seg[seg == L.SACRUM] = 0
    seg[4:16, 4:16, 68:70] = L.SACRUM  # a sacrum, but at the top: nothing inferred
    assert "not next to" in rs.score_bodies(seg, truth, RAS).identity


def test_bodies_do_not_depend_on_orientation():
    seg, truth = body_phantom()
    ref = rs.score_bodies(seg, truth, RAS)
    for axis in range(3):
        fseg, faff = flip(seg, RAS, axis)
        ftruth, _ = flip(truth, RAS, axis)
        got = rs.score_bodies(fseg, ftruth, faff)
        assert [(b.truth, b.found, b.expected) for b in got.bodies] == [
            (b.truth, b.found, b.expected) for b in ref.bodies]


# ---------------------------------------------------------------------------------------------------------
# The script


def test_scan_list_and_selection():
    assert len(eval_real.SCANS) == len(eval_real.SCANS_BY_NAME)  # unique names
    assert [s.name for s in eval_real.select_scans(["sct_testing_data/t2"])] == ["sct_testing_data/t2"]
    assert {s.name for s in eval_real.select_scans(["IVD_*"])} == {"IVD_11", "IVD_20", "IVD_25"}
    assert [s.name for s in eval_real.select_scans(["errsm_18"])] == ["errsm_18/t2", "errsm_18/gre"]
    assert eval_real.select_scans(None) == list(eval_real.SCANS)


def test_summary_counts_a_failed_scan_as_zero():
    scans = [eval_real.SCANS_BY_NAME["errsm_11/t2"], eval_real.SCANS_BY_NAME["errsm_18/t2"]]
    ok = eval_real.ScanResult("errsm_11/t2", "x", 1.0, cord={eval_real.CORD_SAGITTAL_T2: 0.8},
                              landmarks=[rs.LandmarkScore(2, C2, C2), rs.LandmarkScore(9, T2, 23)])
    failed = eval_real.ScanResult("errsm_18/t2", "y", 2.0, error="LabelingError: nothing")
    summary = eval_real.summarize([ok, failed], scans, {"landmarks": 4, "discs": 0})
    assert summary["cord_dice"][eval_real.CORD_SAGITTAL_T2] == {"mean": pytest.approx(0.4), "n": 2}
    assert summary["landmarks"] == {"right": 1, "wrong": 1, "none": 2, "n": 4}
    assert summary["runs"]["ok"] == 1 and summary["runs"]["errors"] == ["errsm_18/t2: LabelingError: nothing"]
    table = eval_real.markdown_table(["demo"], [[ok, failed]], [summary])
    assert "| errsm_11/t2 |" in table and "error: LabelingError" in table and "1/4 (wrong 1, none 2)" in table


@pytest.mark.slow
def test_eval_real_runs_one_real_scan_with_the_demo_model(real_data, tmp_path):
    out = tmp_path / "report.json"
    md = tmp_path / "table.md"
    rc = eval_real.main(["--weights", "demo", "--scans", "sct_testing_data/t2", "--root", str(real_data),
                         "--json", str(out), "--markdown", str(md)])
    assert rc == 0
    report = json.loads(out.read_text())
    (result,) = report["results"]["demo"]
    assert result["error"] is None, result["error"]
    assert 0.0 <= result["cord"][eval_real.CORD_SAGITTAL_T2] <= 1.0
    assert [p["point"] for p in result["landmarks"]] == [3, 5]
    assert {p["verdict"] for p in result["landmarks"]} <= {"right", "wrong", "none"}
    text = md.read_text()
    assert eval_real.NOTE in text and "| sct_testing_data/t2 |" in text and "`demo`" in text


def test_folds_score_every_scan_with_the_model_that_did_not_train_on_its_subject(monkeypatch):
    from types import SimpleNamespace

    scored = []
    monkeypatch.setattr(eval_real, "load_models", lambda name, device, threads: (
        f"`{name}`", SimpleNamespace(device="cpu", precision="fp32", name=name)))
    monkeypatch.setattr(eval_real, "expected_counts", lambda scans, root: {"landmarks": 0, "discs": 0})

    def evaluate_scan(scan, models, root):
        scored.append((scan.name, models.name))
        return eval_real.ScanResult(scan.name, scan.image, 1.0, found="ok")

    monkeypatch.setattr(eval_real, "evaluate_scan", evaluate_scan)
    names = ["errsm_11/t2", "errsm_18/t2", "sct_testing_data/history_data_t2", "IVD_20", "t2_lumbar"]
    report = eval_real.run_folds({"A": "trained_on_A", "B": "trained_on_B"},
                                 [eval_real.SCANS_BY_NAME[n] for n in names])
    # group A's scan by B's model and back; history_data_t2 is sct_example_data's subject (group B); the
    # test-only lumbar scans and never-trained subjects by the first model
    assert scored == [("errsm_11/t2", "trained_on_B"), ("errsm_18/t2", "trained_on_A"),
                      ("sct_testing_data/history_data_t2", "trained_on_A"), ("IVD_20", "trained_on_A"),
                      ("t2_lumbar", "trained_on_A")]
    assert report["scored_by"]["errsm_11/t2"] == "B" and "trained on B" in report["table"]
    with pytest.raises(ValueError):
        eval_real.run_folds({"A": "x"}, [])
