"""Planning on datasets of empty stub files: selection, localizer pairing, names, filters, big datasets."""

import json
import time

import pytest

from totalspineseg.bids_app import main, plan
from totalspineseg.bids_app.parser import parse_localizer_specs, read_filter_file, read_labels
from totalspineseg.errors import NothingSelected, UsageError

LOC = [("acq", "localizer")]


def stub_dataset(root, files):
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "stubs", "BIDSVersion": "1.10.0"}))
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return root


def make(root, files, filters=None, specs=LOC, subjects=None, sessions=None, database_dir=None):
    ds = stub_dataset(root, files)
    layout = plan.build_layout(ds, subjects, database_dir)
    return plan.make_plan(layout, filters or {}, specs, subjects, sessions)


def by_source(p):
    return {j.source: j for j in p.jobs}


SESSIONS = [
    "sub-01/ses-1/anat/sub-01_ses-1_acq-sag_T2w.nii.gz",
    "sub-01/ses-1/anat/sub-01_ses-1_acq-localizer_T2w.nii.gz",
    "sub-01/ses-2/anat/sub-01_ses-2_acq-sag_T2w.nii.gz",  # no localizer in session 2
    "sub-01/ses-1/func/sub-01_ses-1_task-rest_bold.nii.gz",
    "sub-02/anat/sub-02_run-1_T1w.nii.gz",
    "sub-02/anat/sub-02_chunk-2_T2w.nii.gz",
    "sub-02/anat/sub-02_T2starw.nii.gz",
    "sub-02/dwi/sub-02_dwi.nii.gz",
    "derivatives/labels/sub-02/anat/sub-02_T2w.nii.gz",
]


def test_localizers_pair_within_the_same_session_only(tmp_path):
    jobs = by_source(make(tmp_path / "ds", SESSIONS))
    ses1 = jobs["sub-01/ses-1/anat/sub-01_ses-1_acq-sag_T2w.nii.gz"]
    assert ses1.localizer.source == "sub-01/ses-1/anat/sub-01_ses-1_acq-localizer_T2w.nii.gz"
    assert jobs["sub-01/ses-2/anat/sub-01_ses-2_acq-sag_T2w.nii.gz"].localizer is None
    assert jobs[ses1.localizer.source].role == "localizer"


def test_default_selection_is_anat_t2w_and_t1w_without_derivatives(tmp_path):
    p = make(tmp_path / "ds", SESSIONS)
    assert sorted(by_source(p)) == sorted([
        "sub-01/ses-1/anat/sub-01_ses-1_acq-sag_T2w.nii.gz", "sub-01/ses-1/anat/sub-01_ses-1_acq-localizer_T2w.nii.gz",
        "sub-01/ses-2/anat/sub-01_ses-2_acq-sag_T2w.nii.gz", "sub-02/anat/sub-02_run-1_T1w.nii.gz",
        "sub-02/anat/sub-02_chunk-2_T2w.nii.gz"])
    assert p.subjects == ["01", "02"]


def test_units_group_by_session_with_localizers_first(tmp_path):
    units = make(tmp_path / "ds", SESSIONS).units()
    assert [[j.role for j in u] for u in units] == [["localizer", "main"], ["main"], ["main", "main"]]


def test_output_names_keep_run_and_chunk(tmp_path):
    jobs = by_source(make(tmp_path / "ds", SESSIONS))
    assert jobs["sub-02/anat/sub-02_run-1_T1w.nii.gz"].image_id == "sub-02_run-1"
    assert jobs["sub-02/anat/sub-02_chunk-2_T2w.nii.gz"].image_id == "sub-02_chunk-2"
    assert jobs["sub-01/ses-2/anat/sub-01_ses-2_acq-sag_T2w.nii.gz"].image_id == "sub-01_ses-2_acq-sag"


def test_two_contrasts_with_the_same_entities_get_the_suffix_in_acq(tmp_path):
    p = make(tmp_path / "ds", ["sub-01/anat/sub-01_T1w.nii.gz", "sub-01/anat/sub-01_T2w.nii.gz",
                               "sub-02/anat/sub-02_T2w.nii.gz"])
    assert sorted(j.image_id for j in p.jobs) == ["sub-01_acq-T1w", "sub-01_acq-T2w", "sub-02"]


def test_two_localizers_make_the_image_fail_unless_the_filter_decides(tmp_path):
    files = ["sub-01/anat/sub-01_T2w.nii.gz", "sub-01/anat/sub-01_acq-localizer_run-1_T2w.nii.gz",
             "sub-01/anat/sub-01_acq-localizer_run-2_T2w.nii.gz"]
    p = make(tmp_path / "a", files)
    assert [j.role for j in p.jobs] == ["main"]  # no localizer job for an undecided pairing
    assert "ambiguous localizer" in p.jobs[0].error and "run-1" in p.jobs[0].error
    decided = make(tmp_path / "b", files, filters={"localizer": {"run": 2}})
    main_job = next(j for j in decided.jobs if j.role == "main")
    assert main_job.error is None and main_job.localizer.source.endswith("run-2_T2w.nii.gz")


def test_filter_file_selects_other_images(tmp_path):
    p = make(tmp_path / "ds", SESSIONS, filters={"main": {"suffix": "T2starw"}})
    assert [j.source for j in p.jobs] == ["sub-02/anat/sub-02_T2starw.nii.gz"]
    p = make(tmp_path / "ds2", SESSIONS, filters={"main": {"acq": None}})  # short keys; null = absent
    assert all("acq-" not in j.source for j in p.jobs if j.role == "main")


def test_localizer_filter_with_a_session_allows_pairing_across_sessions(tmp_path):
    p = make(tmp_path / "ds", SESSIONS, filters={"localizer": {"session": "1"}})
    ses2 = by_source(p)["sub-01/ses-2/anat/sub-01_ses-2_acq-sag_T2w.nii.gz"]
    assert ses2.localizer is not None and "ses-1" in ses2.localizer.source


def test_no_localizer_marker_treats_every_image_as_main(tmp_path):
    p = make(tmp_path / "ds", SESSIONS, specs=[])
    assert {j.role for j in p.jobs} == {"main"} and len(p.jobs) == 5


def test_participant_and_session_filters(tmp_path):
    p = make(tmp_path / "ds", SESSIONS, subjects=["02"])
    assert p.subjects == ["02"] and len(p.jobs) == 2
    p = make(tmp_path / "ds2", SESSIONS, sessions=["2"])
    assert sorted(j.image_id for j in p.jobs) == ["sub-01_ses-2_acq-sag", "sub-02_chunk-2", "sub-02_run-1"]
    with pytest.raises(NothingSelected, match="05"):
        make(tmp_path / "ds3", SESSIONS, subjects=["02", "05"])
    with pytest.raises(NothingSelected):
        make(tmp_path / "ds4", SESSIONS, filters={"main": {"suffix": "FLAIR"}})


def test_unknown_entity_in_a_filter_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError):
        make(tmp_path / "ds", SESSIONS, filters={"main": {"colour": "blue"}})


def test_label_arguments_and_files(tmp_path):
    listing = tmp_path / "labels.txt"
    listing.write_text("sub-03\n# a comment\n04 05\n\n")
    assert read_labels(["sub-01", "02", str(listing)], "sub-") == ["01", "02", "03", "04", "05"]
    assert read_labels(None, "sub-") is None
    with pytest.raises(UsageError):
        read_labels(["sub-0_1"], "sub-")


def test_filter_file_checks(tmp_path):
    good = tmp_path / "f.json"
    good.write_text('{"main": {"suffix": "T2w"}, "localizer": {"run": 1}}')
    assert read_filter_file(good)["localizer"] == {"run": 1}
    for text in ('{"mains": {}}', '["main"]', '{"main": 3}', "{oops"):
        good.write_text(text)
        with pytest.raises(UsageError):
            read_filter_file(good)
    assert parse_localizer_specs(["acq-localizer", "acq-scout"]) == [("acq", "localizer"), ("acq", "scout")]
    assert parse_localizer_specs(["none"]) == []
    with pytest.raises(UsageError):
        parse_localizer_specs(["localizer"])


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    ds = stub_dataset(tmp_path / "ds", SESSIONS)
    out = tmp_path / "out"
    assert main([str(ds), str(out), "participant", "--dry-run", "--skip-bids-validation"]) == 0
    text = capsys.readouterr().out
    assert "sub-01 ses-1: 2 image(s)" in text and "[localizer: sub-01_ses-1_acq-localizer_T2w.nii.gz]" in text
    assert "5 image(s) in 2 participant(s): 4 main, 1 localizer, 0 with errors" in text
    assert not out.exists()


def test_persistent_index_is_built_once_and_reused(tmp_path):
    ds = stub_dataset(tmp_path / "ds", SESSIONS)
    db = tmp_path / "db"
    first = plan.make_plan(plan.build_layout(ds, ["01"], db), {}, LOC, ["01"], None)
    assert any(db.iterdir())
    (ds / "sub-03" / "anat").mkdir(parents=True)
    (ds / "sub-03" / "anat" / "sub-03_T2w.nii.gz").touch()  # not seen: the index is reused as it is
    layout = plan.build_layout(ds, None, db)
    assert "03" not in layout.get_subjects() and "02" in layout.get_subjects()
    again = plan.make_plan(layout, {}, LOC, ["01"], None)
    assert [j.source for j in again.jobs] == [j.source for j in first.jobs]


def test_planning_a_thousand_participants(tmp_path):
    files = []
    for i in range(1, 1001):
        sub = f"sub-{i:04d}"
        files += [f"{sub}/anat/{sub}_T2w.nii.gz", f"{sub}/anat/{sub}_acq-localizer_T2w.nii.gz",
                  f"{sub}/anat/{sub}_T2w.json", f"{sub}/func/{sub}_task-rest_bold.nii.gz",
                  f"{sub}/dwi/{sub}_dwi.nii.gz"]
    ds = stub_dataset(tmp_path / "ds", files)
    t0 = time.perf_counter()
    layout = plan.build_layout(ds, None, None)
    the_plan = plan.make_plan(layout, {}, LOC, None, None)
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    one = plan.make_plan(plan.build_layout(ds, ["0500"], None), {}, LOC, ["0500"], None)
    one_seconds = time.perf_counter() - t0
    print(f"\nplanning 1,000 participants (2,000 images): {seconds:.1f} s; "
          f"one participant of them: {one_seconds:.2f} s")
    assert len(the_plan.jobs) == 2000 and len(the_plan.units()) == 1000
    assert all(j.localizer is not None for j in the_plan.jobs if j.role == "main")
    assert len(one.jobs) == 2
