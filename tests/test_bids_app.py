"""The BIDS-App end to end on phantom datasets, with networks that answer with the ground truth.

The real pipeline runs (labeling, resampling, writers, reports); only the two networks are stand-ins.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import chromium
import nibabel as nib
import numpy as np
import pytest
from bids_oracle import TruthProvider, truth_path

from totalspineseg import labels as L
from totalspineseg.bids_app import derivatives as D
from totalspineseg.bids_app import main, qc
from totalspineseg.bids_app.record import ImageRecord
from totalspineseg.bids_app.validation import find_validator
from totalspineseg.synth import phantom
from totalspineseg.training import metrics

ROOT = Path(__file__).resolve().parents[1]
EXPECTED_OUTPUTS = ROOT / "bids_app_tests" / "expected_outputs.txt"
RUNNER = Path(__file__).resolve().parent / "run_bids_app.py"


def file_list(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()
                  and not p.relative_to(root).as_posix().startswith(".work/"))


def snapshot(root: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def run_child(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, str(RUNNER), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, check=False)


# --- datasets and the reference run ------------------------------------------------------------------


@pytest.fixture(scope="session")
def example(tmp_path_factory):
    """The example dataset of bids_app_tests/: two participants, each with a localizer."""
    return phantom.write_bids_dataset(tmp_path_factory.mktemp("example") / "ds", participants=2, seed=0,
                                      localizer=True)


@pytest.fixture(scope="session")
def cohort(tmp_path_factory):
    """Five participants without localizers."""
    return phantom.write_bids_dataset(tmp_path_factory.mktemp("cohort") / "ds", participants=5, seed=1)


@pytest.fixture(scope="session")
def processed(example, tmp_path_factory):
    """participant then group on the example dataset."""
    out = tmp_path_factory.mktemp("derivatives") / "totalspineseg"
    before = snapshot(example)
    calls = []
    t0 = time.perf_counter()
    rc = main([str(example), str(out), "participant"], models=TruthProvider(example, calls))
    seconds = time.perf_counter() - t0
    rc_group = main([str(example), str(out), "group"])
    return SimpleNamespace(ds=example, out=out, rc=rc, rc_group=rc_group, calls=calls, seconds=seconds,
                           input_untouched=snapshot(example) == before)


def sidecar(out, rel):
    return json.loads((out / rel).read_text())


# --- the reference run -------------------------------------------------------------------------------


def test_participant_and_group_succeed_and_leave_the_input_alone(processed):
    assert processed.rc == 0 and processed.rc_group == 0
    assert processed.input_untouched


def test_the_produced_files_match_the_committed_list(processed):
    expected = EXPECTED_OUTPUTS.read_text().split()
    assert file_list(processed.out) == expected


def test_localizers_run_first_and_guide_their_main_image(processed):
    assert processed.calls == ["sub-01/anat/sub-01_acq-localizer_T2w.nii.gz", "sub-01/anat/sub-01_T1w.nii.gz",
                               "sub-02/anat/sub-02_acq-localizer_T2w.nii.gz", "sub-02/anat/sub-02_T2w.nii.gz"]
    meta = sidecar(processed.out, "sub-01/anat/sub-01_desc-spine_dseg.json")
    assert meta["Localizer"] == {"Source": "bids:raw:sub-01/anat/sub-01_acq-localizer_T2w.nii.gz",
                                 "Segmentation": "bids::sub-01/anat/sub-01_acq-localizer_desc-spine_dseg.nii.gz"}
    assert meta["Sources"] == ["bids:raw:sub-01/anat/sub-01_T1w.nii.gz",
                               "bids::sub-01/anat/sub-01_acq-localizer_desc-spine_dseg.nii.gz"]
    assert "Localizer" not in sidecar(processed.out, "sub-01/anat/sub-01_acq-localizer_desc-spine_dseg.json")


@pytest.mark.parametrize("source", ["sub-01/anat/sub-01_T1w.nii.gz", "sub-02/anat/sub-02_acq-localizer_T2w.nii.gz"])
def test_labels_match_the_ground_truth(processed, source):
    base = D.base_entities(source)
    img = nib.load(processed.out / D.output_path(base, "spine"))
    truth = nib.load(truth_path(processed.ds, processed.ds / source))
    pred, true = np.asarray(img.dataobj), np.asarray(truth.dataobj)
    assert img.shape == truth.shape and np.allclose(img.affine, truth.affine, atol=1e-4)
    rate, failures = metrics.identification_rate(pred, true)
    assert rate == 1.0, failures
    assert np.mean(pred == true) > 0.99


def test_sidecars_carry_provenance(processed):
    meta = sidecar(processed.out, "sub-02/anat/sub-02_label-SC_probseg.json")
    assert meta["Sources"] == ["bids:raw:sub-02/anat/sub-02_T2w.nii.gz"]
    assert meta["SpatialReference"] == "orig" and meta["Manual"] is False
    assert meta["ModelRelease"] == "oracle" and meta["Device"] == "cpu" and meta["SoftwareVersion"]
    assert meta["Precision"] == "fp32" and meta["TileStep"] == 0.5 and meta["Backend"] == "torch"
    soft = np.asarray(nib.load(processed.out / "sub-02/anat/sub-02_label-SC_probseg.nii.gz").dataobj)
    assert soft.dtype == np.float32 and 0 <= soft.min() and soft.max() <= 1 and soft.max() > 0.5


def test_level_coordinates_point_at_the_level_voxels(processed):
    rel = "sub-02/anat/sub-02_desc-levels_dseg"
    img = nib.load(processed.out / f"{rel}.nii.gz")
    levels = np.asarray(img.dataobj)
    coords = sidecar(processed.out, f"{rel}.json")["LevelCoordinates"]
    assert len(coords) == len(np.unique(levels)) - 1 >= 5
    for point in coords.values():
        assert levels[tuple(point["Voxel"])] == point["Level"]
        world = img.affine[:3, :3] @ point["Voxel"] + img.affine[:3, 3]
        assert np.allclose(world, point["WorldMM"], atol=0.01)
    assert "L5-S" in coords


def test_dataset_level_files(processed):
    out = processed.out
    for lut, pattern in (("desc-spine_dseg.tsv", "*_desc-spine_dseg.nii.gz"),
                         ("desc-levels_dseg.tsv", "*_desc-levels_dseg.nii.gz")):
        described = {int(line.split("\t")[0]) for line in (out / lut).read_text().splitlines()[1:]}
        images = sorted(out.glob(f"sub-*/**/{pattern}"))
        assert images, pattern
        for image in images:  # every value in every written map has a row in the look-up table
            assert set(np.unique(np.asarray(nib.load(image).dataobj)).astype(int)) - {0} <= described, image
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "totalspineseg"
    assert "nnU-Net" in (out / "logs" / "CITATION.md").read_text()


def test_statistics_and_group_table_match_the_truth(processed):
    rows = (processed.out / "group_spine.tsv").read_text().splitlines()
    header = rows[0].split("\t")
    table = [dict(zip(header, r.split("\t"), strict=False)) for r in rows[1:]]
    assert [r["image_id"] for r in table] == ["sub-01_acq-localizer", "sub-01", "sub-02_acq-localizer", "sub-02"]
    for row in table:
        truth = nib.load(truth_path(processed.ds, processed.ds / row["source"]))
        _, volumes = qc.structure_stats(np.asarray(truth.dataobj), truth.affine)
        for value, mm3 in volumes.items():
            column = f"volume_{L.FINAL[value].abbreviation}_mm3"
            assert float(row[column]) == pytest.approx(mm3, rel=0.05, abs=50), column
        assert row["qc_flags"] == "n/a" and row["n_flags"] == "0"


def test_derivatives_pass_the_bids_validator(processed):
    exe = find_validator()
    if exe is None:
        pytest.skip("no BIDS validator installed (pip install bids-validator-deno)")
    proc = subprocess.run([exe, str(processed.out), "--json"], capture_output=True, text=True, timeout=300,
                          check=False)
    issues = json.loads(proc.stdout)["issues"]["issues"]
    errors = [(i["code"], i.get("location")) for i in issues if i["severity"] == "error"]
    assert errors == [] and proc.returncode == 0


def test_reports_render_in_a_headless_browser(processed, tmp_path):
    page = processed.out / "group_report.html"
    driven = chromium.with_script(page, chromium.DRIVE_GROUP_REPORT, tmp_path / "driven.html")
    result = chromium.result_of(chromium.dump_dom(driven))
    assert result["rows"] == 4 and result["thumbs"] == 4
    assert result["links"][0] == "sub-01.html#sub-01_acq-localizer"
    print(f"\nscreenshots: {chromium.screenshot(page, tmp_path / 'group_report.png')}, "
          f"{chromium.screenshot(processed.out / 'sub-01.html', tmp_path / 'sub-01.png', (1300, 1600))}")


def test_a_rerun_redoes_nothing(processed):
    before = snapshot(processed.out / "sub-01")
    calls = []
    t0 = time.perf_counter()
    assert main([str(processed.ds), str(processed.out), "participant", "--skip-bids-validation"],
                models=TruthProvider(processed.ds, calls)) == 0
    seconds = time.perf_counter() - t0
    print(f"\nfirst run {processed.seconds:.1f} s, re-run {seconds:.2f} s ({seconds / processed.seconds:.1%})")
    assert calls == []
    after = snapshot(processed.out / "sub-01")
    assert {p: t for p, t in after.items() if p.suffix != ".html"} == {
        p: t for p, t in before.items() if p.suffix != ".html"}


# --- resumption, overwrite, failures -----------------------------------------------------------------


@pytest.fixture
def copy_of(processed, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(processed.out, out)
    return out


def test_a_missing_marker_means_the_image_is_redone(processed, copy_of):
    (copy_of / "sub-02" / "log" / "sub-02_T2w.done.json").unlink()
    calls = []
    assert main([str(processed.ds), str(copy_of), "participant", "--skip-bids-validation"],
                models=TruthProvider(processed.ds, calls)) == 0
    assert calls == ["sub-02/anat/sub-02_T2w.nii.gz"]  # its localizer's labels come from disk
    assert (copy_of / "sub-02" / "log" / "sub-02_T2w.done.json").is_file()


def test_changed_options_redo_the_images(processed, copy_of):
    calls = []
    assert main([str(processed.ds), str(copy_of), "participant", "--participant_label", "01", "--iso",
                 "--skip-bids-validation"], models=TruthProvider(processed.ds, calls)) == 0
    assert calls == ["sub-01/anat/sub-01_acq-localizer_T2w.nii.gz", "sub-01/anat/sub-01_T1w.nii.gz"]
    assert (copy_of / "sub-01/anat/sub-01_res-1mm_desc-spine_dseg.nii.gz").is_file()
    assert "Resolution" in sidecar(copy_of, "sub-01/anat/sub-01_res-1mm_desc-spine_dseg.json")


def test_a_changed_tile_step_redoes_the_images_and_is_recorded(processed, copy_of, monkeypatch):
    import totalspineseg.bids_app.app as app

    calls, asked = [], {}

    def weights_provider(*args, **kwargs):  # the --weights provider, with the oracle's networks
        asked.update(kwargs)
        return TruthProvider(processed.ds, calls, tile_step=kwargs["tile_step"])

    monkeypatch.setattr(app, "WeightsProvider", weights_provider)
    assert main([str(processed.ds), str(copy_of), "participant", "--participant_label", "01", "--tile-step", "0.75",
                 "--skip-bids-validation"]) == 0
    assert asked["tile_step"] == 0.75
    assert calls == ["sub-01/anat/sub-01_acq-localizer_T2w.nii.gz", "sub-01/anat/sub-01_T1w.nii.gz"]
    assert sidecar(copy_of, "sub-01/anat/sub-01_label-SC_probseg.json")["TileStep"] == 0.75
    marker = sidecar(copy_of, "sub-01/log/sub-01_T1w.done.json")
    assert marker["fingerprint"]["tile_step"] == 0.75 and marker["provenance"]["TileStep"] == 0.75
    calls.clear()
    assert main([str(processed.ds), str(copy_of), "participant", "--participant_label", "01", "--tile-step", "0.75",
                 "--skip-bids-validation"]) == 0
    assert calls == []  # the same step again: complete


def test_reports_only_rebuilds_pages_without_segmenting(processed, copy_of):
    (copy_of / "sub-01.html").unlink()

    def refuse(source):
        raise AssertionError("no image may be segmented with --reports-only")

    refuse.release = "oracle"
    assert main([str(processed.ds), str(copy_of), "participant", "--reports-only", "--skip-bids-validation"],
                models=refuse) == 0
    assert "sub-01_acq-localizer" in (copy_of / "sub-01.html").read_text()


def test_a_killed_job_leaves_no_marker_and_is_redone(cohort, tmp_path):
    out = tmp_path / "out"
    args = [cohort, out, "participant", "--participant_label", "01", "--skip-bids-validation"]
    killed = run_child(*args, env={**os.environ, "TSS_TEST_DIE_BEFORE_MARKER": "1"})
    assert killed.returncode == 137
    assert list((out / "sub-01" / "anat").glob("*_desc-spine_dseg.nii.gz"))  # outputs, but no marker
    assert not list((out / "sub-01").rglob("*.done.json"))
    again = run_child(*args)
    assert again.returncode == 0, again.stderr
    assert "done in" in again.stderr and "already complete, skipped" not in again.stderr
    assert len(list((out / "sub-01" / "log").glob("*.done.json"))) == 1


def test_overwrite_redoes_complete_images(processed, copy_of):
    calls = []
    assert main([str(processed.ds), str(copy_of), "participant", "--participant_label", "sub-02", "--overwrite",
                 "--skip-bids-validation"], models=TruthProvider(processed.ds, calls)) == 0
    assert calls == ["sub-02/anat/sub-02_acq-localizer_T2w.nii.gz", "sub-02/anat/sub-02_T2w.nii.gz"]


def test_a_corrupt_image_fails_alone_with_a_crash_file(cohort, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(cohort, ds)
    bad = ds / "sub-02" / "anat" / next(p.name for p in (ds / "sub-02" / "anat").iterdir())
    bad.write_bytes(bad.read_bytes()[:200])
    out = tmp_path / "out"
    rc = main([str(ds), str(out), "participant", "--participant_label", "01", "02", "--skip-bids-validation"],
              models=TruthProvider(ds))
    assert rc == 65  # every failed image failed on bad input data
    crashes = list((out / "sub-02" / "log").glob("crash-*.txt"))
    assert len(crashes) == 1 and "reason:" in crashes[0].read_text()
    assert not (out / "sub-02" / "anat").exists() or not any((out / "sub-02" / "anat").iterdir())
    assert len(list((out / "sub-01" / "log").glob("*.done.json"))) == 1
    assert "Errors" in (out / "sub-02.html").read_text()


@pytest.mark.slow
def test_four_participant_jobs_share_one_output_folder(cohort, tmp_path):
    out = tmp_path / "out"
    # No HOME and an unusable TMPDIR: the jobs find their scratch space in the output folder. The fourth job
    # holds two participants and runs them in two worker processes (--nprocs 2).
    env = {k: v for k, v in os.environ.items() if k not in ("HOME", "MPLCONFIGDIR", "XDG_CACHE_HOME")}
    env["TMPDIR"] = "/proc/no-such-dir"
    jobs = [["01"], ["02"], ["03"], ["04", "05", "--nprocs", "2"]]
    procs = [subprocess.Popen([sys.executable, str(RUNNER), str(cohort), str(out), "participant", "--participant_label",
                               *job, "--skip-bids-validation"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for job in jobs]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    assert [rc for _, _, rc in results] == [0, 0, 0, 0], [err[-1500:] for _, err, _ in results]
    expected = D.dataset_description(json.loads((cohort / "dataset_description.json").read_text()), str(cohort))
    assert json.loads((out / "dataset_description.json").read_text()) == expected
    assert len(list(out.glob("sub-*/log/*.done.json"))) == 5
    assert not [p for p in out.rglob("*.tmp")] and not [p for p in out.rglob("*.tstmp*")]
    assert main([str(cohort), str(out), "group"]) == 0
    assert len((out / "group_spine.tsv").read_text().splitlines()) == 6


def test_step1_only(processed, tmp_path):
    out = tmp_path / "out"
    assert main([str(processed.ds), str(out), "participant", "--participant_label", "02", "--step1",
                 "--skip-bids-validation"], models=TruthProvider(processed.ds)) == 0
    anat = out / "sub-02" / "anat"
    assert (anat / "sub-02_desc-step1_dseg.nii.gz").is_file()
    assert not list(anat.glob("*desc-spine_dseg.nii.gz"))
    meta = sidecar(out, "sub-02/anat/sub-02_desc-step1_dseg.json")
    assert meta["Sources"][1] == "bids::sub-02/anat/sub-02_acq-localizer_desc-step1_dseg.nii.gz"


# --- exit codes -------------------------------------------------------------------------------------


def test_usage_errors_exit_64(tmp_path, capsys):
    assert main([str(tmp_path), str(tmp_path / "o"), "participant", "--bogus"]) == 64
    assert main([str(tmp_path)]) == 64
    assert "usage:" in capsys.readouterr().err
    for bad in ("0", "1.5", "-0.5", "half"):
        assert main([str(tmp_path), str(tmp_path / "o"), "participant", "--tile-step", bad]) == 64
    assert "--tile-step: 'half' is not a number" in capsys.readouterr().err
    assert main([str(tmp_path), str(tmp_path / "o"), "participant", "--tile-step", "1"]) != 64  # 1 is allowed


def test_version(capsys):
    assert main(["--version"]) == 0
    assert "totalspineseg BIDS-App version" in capsys.readouterr().out


def test_installed_command_is_the_bids_app(tmp_path):
    """`totalspineseg-bids` (pip installs) is run.py: same parser, same exit codes."""
    exe = Path(sys.executable).parent / "totalspineseg-bids"
    assert exe.is_file(), "the package is not installed with its console scripts (pip install -e .)"
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and "BIDS-App version" in version.stdout
    usage = subprocess.run([str(exe), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 64 and "usage:" in usage.stderr


def test_unknown_level_exits_17(example, tmp_path):
    assert main([str(example), str(tmp_path / "o"), "session"]) == 17


def test_missing_or_invalid_input_exits_66_or_16(tmp_path):
    assert main([str(tmp_path / "nothing"), str(tmp_path / "o"), "participant"]) == 66
    (tmp_path / "ds").mkdir()
    assert main([str(tmp_path / "ds"), str(tmp_path / "o"), "participant"]) == 16


def test_validator_errors_exit_16(tmp_path, capsys):
    if find_validator() is None:
        pytest.skip("no BIDS validator installed (pip install bids-validator-deno)")
    ds = tmp_path / "ds"
    (ds / "sub-01" / "anat").mkdir(parents=True)
    (ds / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.10.0"}')
    (ds / "sub-01" / "anat" / "sub-01_T2W.nii.gz").write_bytes(b"")
    assert main([str(ds), str(tmp_path / "o"), "participant"]) == 16
    assert "--skip-bids-validation" in capsys.readouterr().err


def test_filters_that_select_nothing_exit_18(example, tmp_path):
    out = str(tmp_path / "o")
    assert main([str(example), out, "participant", "--participant_label", "09", "--skip-bids-validation",
                 "--dry-run"]) == 18
    filters = tmp_path / "f.json"
    filters.write_text('{"main": {"suffix": "FLAIR"}}')
    assert main([str(example), out, "participant", "--bids-filter-file", str(filters), "--skip-bids-validation",
                 "--dry-run"]) == 18


def test_missing_weights_stop_before_any_work(example, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TOTALSPINESEG_DATA", str(tmp_path / "no-weights"))
    out = tmp_path / "o"
    assert main([str(example), str(out), "participant", "--skip-bids-validation"]) == 78
    assert "totalspineseg-weights install" in capsys.readouterr().err
    assert not out.exists()


def test_group_without_participant_outputs_exits_66(example, tmp_path):
    assert main([str(example), str(tmp_path / "o"), "group"]) == 66
    (tmp_path / "o").mkdir()
    assert main([str(example), str(tmp_path / "o"), "group"]) == 66


def test_markers_on_disk_read_back_as_records(processed):
    markers = list(processed.out.glob("sub-*/log/*.done.json"))
    assert markers
    for marker in markers:
        data = json.loads(marker.read_text())
        assert ImageRecord.from_json(data).to_json() == data
