"""The per-image record: the completion markers on disk read back and write out unchanged."""

import json

import pytest

from totalspineseg.bids_app.record import ImageRecord, RecordError

# A marker as the 0.x releases wrote it (keys and nesting exactly as on disk).
MARKER = {
    "source": "sub-01/anat/sub-01_T2w.nii.gz", "id": "sub-01_T2w", "subject": "01", "session": None,
    "role": "main", "localizer": "sub-01/anat/sub-01_acq-localizer_T2w.nii.gz", "fingerprint": "abc123",
    "provenance": {"ModelRelease": "demo", "Device": "cpu", "ModelSHA256": {"step1": "00", "step2": "11"}},
    "outputs": ["sub-01/anat/sub-01_T2w_desc-spine_dseg.nii.gz", "sub-01/anat/sub-01_T2w_desc-spine_dseg.json"],
    "figure": "sub-01/figures/sub-01_T2w_desc-spine_dseg.jpg", "stats": "sub-01/anat/sub-01_T2w_desc-spine_stats.tsv",
    "qc": {"n_vertebrae": 24, "n_discs": 23, "flags": [{"code": "missing_level", "message": "no C2-C3"}]},
    "levels": [{"level": 3, "name": "C2-C3", "voxel": [1, 2, 3], "world_mm": [0.5, 1.0, -2.0]}],
    "warnings": ["something odd"], "timings": {"step1": 1.25, "step2": 2.5}, "seconds": 4.2,
    "finished": "2026-11-27T10:00:00+00:00",
}


def test_a_marker_round_trips_byte_for_byte():
    record = ImageRecord.from_json(json.loads(json.dumps(MARKER)))
    assert json.dumps(record.to_json(), indent=2) == json.dumps(MARKER, indent=2)
    assert record.image_id == "sub-01_T2w" and record.flags == MARKER["qc"]["flags"]


def test_optional_keys_get_defaults_and_unknown_keys_are_ignored():
    minimal = {k: MARKER[k] for k in ("source", "id", "subject", "role", "fingerprint", "stats")}
    record = ImageRecord.from_json({**minimal, "added_by_a_later_release": 1})
    assert record.outputs == () and record.figure is None and record.session is None and record.flags == []


@pytest.mark.parametrize("bad", [[], "text", {k: v for k, v in MARKER.items() if k != "fingerprint"},
                                 {**MARKER, "qc": []}])
def test_what_is_not_a_record_is_refused(bad):
    with pytest.raises(RecordError):
        ImageRecord.from_json(bad)


def test_records_sort_by_session_then_localizers_first():
    def rec(session, role, source):
        return ImageRecord.from_json({**MARKER, "session": session, "role": role, "source": source})

    records = [rec("02", "main", "a"), rec("01", "main", "b"), rec("01", "localizer", "c"), rec(None, "main", "d")]
    assert [r.source for r in sorted(records, key=lambda r: r.sort_key)] == ["d", "c", "b", "a"]
