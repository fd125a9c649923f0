"""BIDS-Derivatives names, look-up tables, dataset_description.json and the shared-file writes."""

import csv
import io
import json
import os
import re
import threading
from pathlib import PurePosixPath

import pytest

from totalspineseg import __version__
from totalspineseg import labels as L
from totalspineseg.bids_app import derivatives as D


def test_parse_name_splits_entities_suffix_and_extension():
    parsed = D.parse_name("sub-01/ses-2/anat/sub-01_ses-2_acq-sag_run-1_chunk-3_T2w.nii.gz")
    assert parsed.entities == {"sub": "01", "ses": "2", "acq": "sag", "run": "1", "chunk": "3"}
    assert parsed.suffix == "T2w" and parsed.extension == ".nii.gz"


@pytest.mark.parametrize("name", ["ses-1_T2w.nii.gz", "sub-01_acq_T2w.nii.gz", "sub-01_acq-_T2w.nii"])
def test_parse_name_rejects_non_bids_names(name):
    with pytest.raises(ValueError):
        D.parse_name(name)


def test_names_keep_ses_acq_run_chunk_in_schema_order_and_drop_the_suffix():
    base = D.base_entities("sub-01_ses-02_chunk-3_acq-sag_run-1_inv-2_T2w.nii.gz")
    assert base == {"sub": "01", "ses": "02", "acq": "sag", "run": "1", "chunk": "3"}  # inv is not kept
    path = D.output_path(base, "spine")
    assert path == PurePosixPath("sub-01/ses-02/anat/sub-01_ses-02_acq-sag_run-1_chunk-3_desc-spine_dseg.nii.gz")
    expected = "sub-01_ses-02_acq-sag_run-1_chunk-3_res-1mm_label-SC_probseg.nii.gz"
    assert D.output_path(base, "cord", "iso").name == expected


def test_folding_the_suffix_into_acq_separates_contrasts():
    assert D.base_entities("sub-01_T2w.nii.gz", fold_suffix=True) == {"sub": "01", "acq": "T2w"}
    assert D.base_entities("sub-01_acq-sag_run-2_T1w.nii", fold_suffix=True) == {"sub": "01", "acq": "sagT1w",
                                                                                 "run": "2"}


def test_planned_outputs_follow_the_options():
    base = {"sub": "01"}
    names = {o.path.name for o in D.planned_outputs(base, step1_only=False, iso=False)}
    assert names == {"sub-01_desc-spine_dseg.nii.gz", "sub-01_desc-step1_dseg.nii.gz", "sub-01_desc-levels_dseg.nii.gz",
                     "sub-01_label-SC_probseg.nii.gz", "sub-01_label-canal_probseg.nii.gz"}
    step1 = D.planned_outputs(base, step1_only=True, iso=True)
    assert all(o.kind != "spine" for o in step1) and {o.grid for o in step1} == {"native", "iso"}
    assert all("res-1mm" in o.path.name for o in step1 if o.grid == "iso")
    assert step1[0].sidecar.suffix == ".json" and step1[0].sidecar.name.startswith("sub-01_")


def test_figure_stats_and_id_names():
    base = {"sub": "01", "ses": "2", "run": "1"}
    assert D.figure_path(base) == PurePosixPath("sub-01/figures/sub-01_ses-2_run-1_desc-spine_dseg.jpg")
    assert D.stats_path(base) == PurePosixPath("sub-01/ses-2/anat/sub-01_ses-2_run-1_desc-spine_stats.tsv")
    assert D.image_id(base) == "sub-01_ses-2_run-1"


def _tsv(text):
    header, *rows = [line.split("\t") for line in text.strip().splitlines()]
    return [dict(zip(header, r, strict=False)) for r in rows]


def test_spine_lut_names_every_label_with_a_distinct_colour():
    rows = list(csv.DictReader(io.StringIO(D.dseg_lut()), delimiter="\t"))
    assert list(rows[0]) == ["index", "name", "abbreviation", "color", "mapping"]  # BIDS dseg.tsv columns
    by_index = {int(r["index"]): r for r in rows}
    assert by_index[1]["name"] == "spinal_cord" and by_index[2]["name"] == "spinal_canal"
    assert [by_index[v]["abbreviation"] for v in (11, 17, 21, 32, 41, 45, 46, 50)] == [
        "C1", "C7", "T1", "T12", "L1", "L5", "L6", "sacrum"]
    assert by_index[63]["abbreviation"] == "C2C3" and by_index[100]["abbreviation"] == "L5S"
    colours = [r["color"] for r in rows]
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colours) and len(set(colours)) == len(colours)
    assert {r["mapping"] for r in rows} <= {"3", "4", "5", "n/a"}


def test_step1_lut_names_the_vertebra_class_and_lists_no_numbered_vertebra():
    rows = {int(r["index"]): r for r in _tsv(D.dseg_lut(step1=True))}
    assert rows[L.SACRUM]["name"] == "vertebrae"
    assert L.C1 in rows and L.C2 not in rows and L.DISC_C2_C3 in rows


def test_levels_lut_matches_the_level_names():
    rows = _tsv(D.levels_lut())
    assert {int(r["index"]): r["abbreviation"] for r in rows} == {
        v: n.replace("-", "") for v, n in L.LEVEL_NAMES.items()}


def test_descriptions_use_the_desc_entity_form():
    rows = _tsv(D.descriptions_tsv())
    assert {r["desc_id"] for r in rows} == {"desc-spine", "desc-step1", "desc-levels"}


def test_dataset_description_is_a_derivative_with_provenance(tmp_path):
    env = {"TOTALSPINESEG_CONTAINER_TYPE": "docker", "TOTALSPINESEG_CONTAINER_TAG": "totalspineseg:1"}
    desc = D.dataset_description({"Name": "spines", "DatasetDOI": "doi:10/x"}, str(tmp_path), env)
    assert desc["DatasetType"] == "derivative" and desc["BIDSVersion"]
    assert desc["GeneratedBy"][0]["Name"] == "totalspineseg"
    assert desc["GeneratedBy"][0]["Version"] == __version__
    assert desc["GeneratedBy"][0]["Container"] == {"Type": "docker", "Tag": "totalspineseg:1"}
    assert desc["SourceDatasets"] == [{"URL": tmp_path.as_uri(), "DOI": "doi:10/x"}]
    assert desc["DatasetLinks"]["raw"] == tmp_path.as_uri()
    assert "Container" not in D.dataset_description({}, str(tmp_path), {})["GeneratedBy"][0]


def test_sidecar_fields():
    out = D.Output("spine", "iso", PurePosixPath("sub-01/anat/sub-01_res-1mm_desc-spine_dseg.nii.gz"))
    meta = D.sidecar(out, [D.bids_uri("sub-01/anat/sub-01_T2w.nii.gz")], {"Device": "cpu"}, {"X": 1})
    assert meta["Sources"] == ["bids:raw:sub-01/anat/sub-01_T2w.nii.gz"]
    assert meta["SpatialReference"] == "orig" and meta["Manual"] is False and meta["Resolution"]
    assert meta["Device"] == "cpu" and meta["X"] == 1
    assert D.bids_uri("sub-01/x.nii.gz", "") == "bids::sub-01/x.nii.gz"


def test_write_shared_writes_once_and_leaves_identical_files_alone(tmp_path):
    target = tmp_path / "dataset_description.json"
    assert D.write_shared(target, "a\n") is True
    stamp = target.stat().st_mtime_ns
    assert D.write_shared(target, "a\n") is False
    assert target.stat().st_mtime_ns == stamp
    assert D.write_shared(target, "b\n") is True and target.read_text() == "b\n"
    assert [p.name for p in tmp_path.iterdir()] == ["dataset_description.json"]  # no temporary left


def test_concurrent_shared_writes_never_expose_a_partial_file(tmp_path):
    text = json.dumps({"k": "v" * 200_000}) + "\n"
    target = tmp_path / "shared.json"
    seen, errors = [], []

    def writer():
        for _ in range(20):
            D.write_shared(target, text)

    def reader():
        for _ in range(200):
            try:
                seen.append(target.read_text() == text)
            except FileNotFoundError:
                pass
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(seen)
    assert target.read_text() == text
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_write_dataset_files_is_idempotent(tmp_path):
    written = D.write_dataset_files(tmp_path, {"Name": "x"}, "/data")
    assert set(written) == set(D.shared_files({"Name": "x"}, "/data"))
    assert (tmp_path / "logs" / "CITATION.md").read_text().count("nnU-Net") >= 1
    assert D.write_dataset_files(tmp_path, {"Name": "x"}, "/data") == []
    bidsignore = (tmp_path / ".bidsignore").read_text().split()
    assert "**/figures" in bidsignore and "**/log" in bidsignore
