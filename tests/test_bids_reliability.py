"""The BIDS-App under failure: re-runs that fail, kills, a full disk, a vanished output folder, a validator
that cannot run, concurrent jobs. Each test builds what it breaks (phantom datasets, fake validators,
tmpfs mounts) and checks the same promises: a previous complete result is never lost, no temporary file is
left, no traceback reaches the console, and a resumed run ends exactly where an uninterrupted one does.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
from bids_oracle import TruthProvider

from totalspineseg import fsutil
from totalspineseg.bids_app import main, outputs, participant
from totalspineseg.bids_app import models as bids_models
from totalspineseg.errors import InputError, WeightsError
from totalspineseg.synth import phantom

TESTS = Path(__file__).resolve().parent
SKIP = "--skip-bids-validation"

# A child process that runs the BIDS-App with the ground-truth networks and SIGKILLs itself at a chosen
# point (TSS_KILL_AT), with no cleanup at all: the state a killed job leaves behind.
CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from bids_oracle import TruthProvider
    from totalspineseg import fsutil, volume
    from totalspineseg.bids_app import derivatives, main

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    point, count = os.environ.get("TSS_KILL_AT", ""), [0]
    if point == "after-first-marker":
        write_json = derivatives.write_json
        def after_marker(path, obj):
            written = write_json(path, obj)
            if str(path).endswith(".done.json"):
                die()
            return written
        derivatives.write_json = after_marker
    elif point == "while-writing":  # two NIfTI files of the image written, the rest not yet
        save_nifti = volume.save_nifti
        def while_writing(*args, **kwargs):
            saved = save_nifti(*args, **kwargs)
            count[0] += 1
            if count[0] == 2:
                die()
            return saved
        volume.save_nifti = while_writing
    elif point == "while-committing":  # three files of the set renamed into place, the rest not yet
        replace = os.replace
        def while_committing(src, dst):
            replace(src, dst)
            if fsutil.TEMP_MARK in str(src) and "/sub-" in str(dst):
                count[0] += 1
                if count[0] == 3:
                    die()
        os.replace = while_committing
    sys.exit(main(sys.argv[1:], models=TruthProvider(sys.argv[1])))
""")


# --- helpers -----------------------------------------------------------------------------------------


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if fsutil.TEMP_MARK in p.name or fsutil.is_temp_name(p.name)]


def file_list(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and not p.relative_to(root).as_posix().startswith(".work/"))


def results(root: Path) -> dict[str, bytes]:
    """Every file's bytes, but the pages and crash files a run regenerates or adds whatever happens, and
    temporary files (checked apart)."""
    return {rel: (root / rel).read_bytes() for rel in file_list(root)
            if not rel.endswith(".html") and "/log/crash-" not in rel and fsutil.TEMP_MARK not in rel}


def assert_same_outputs(out: Path, reference: Path, subjects=("01", "02")) -> None:
    """The same files as an uninterrupted run, the same images and the same sidecars and tables."""
    def listed(root):
        return [r for r in file_list(root) if not r.startswith("sub-") or r.split("/")[0].split(".")[0]
                in {f"sub-{s}" for s in subjects}]

    assert listed(out) == listed(reference)
    for rel in listed(reference):
        if rel.endswith(".nii.gz"):
            a, b = nib.load(out / rel), nib.load(reference / rel)
            assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj)), rel
            assert np.allclose(a.affine, b.affine), rel
        elif rel.endswith((".json", ".tsv")) and "/log/" not in rel:
            assert (out / rel).read_bytes() == (reference / rel).read_bytes(), rel
    for marker in out.glob("sub-*/log/*.done.json"):
        assert all((out / rel).is_file() for rel in json.loads(marker.read_text())["outputs"]), marker


def assert_every_marker_complete(out: Path) -> None:
    for marker in out.glob("sub-*/log/*.done.json"):
        listed = json.loads(marker.read_text())["outputs"]
        assert listed and all((out / rel).is_file() for rel in listed), marker


def run_child(script: Path, *args, kill_at: str = "", timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "TSS_KILL_AT": kill_at}
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, check=False)


class BrokenProvider:
    """Networks that do not load (a changed --weights pointing at a broken folder)."""

    def __init__(self, release="oracle"):
        self.release = release

    def __call__(self, source):
        raise WeightsError(f"/weights/{self.release}: step1 checkpoint is truncated; reinstall it")


class CountingProvider(TruthProvider):
    def __init__(self, bids_dir):
        super().__init__(bids_dir, calls=[])


# --- datasets and the reference run -------------------------------------------------------------------


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    """Two participants without localizers."""
    return phantom.write_bids_dataset(tmp_path_factory.mktemp("rel-ds") / "ds", participants=2, seed=3)


@pytest.fixture(scope="module")
def reference(ds, tmp_path_factory):
    """An uninterrupted participant run of both participants."""
    out = tmp_path_factory.mktemp("rel-ref") / "out"
    assert main([str(ds), str(out), "participant", SKIP], models=TruthProvider(ds)) == 0
    return out


@pytest.fixture
def previous(reference, tmp_path):
    """A copy of a complete earlier run, to be re-run."""
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    return out


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    script = tmp_path_factory.mktemp("rel-child") / "child.py"
    script.write_text(CHILD.format(tests=str(TESTS)))
    return script


# --- 1. a failed re-run keeps the previous complete results -----------------------------------------


@pytest.mark.parametrize(("options", "release"), [(["--overwrite"], "oracle"), ([], "other-weights"),
                                                  (["--iso"], "oracle")],
                         ids=["overwrite", "changed-weights", "changed-options"])
def test_a_rerun_whose_networks_do_not_load_keeps_the_previous_results(ds, previous, options, release, capsys):
    before = results(previous)
    rc = main([str(ds), str(previous), "participant", SKIP, *options], models=BrokenProvider(release))
    err = capsys.readouterr().err
    assert rc == 1
    assert results(previous) == before  # every file and marker byte-identical
    assert not temp_files(previous)
    assert len(list(previous.glob("sub-*/log/crash-*.txt"))) == 2
    assert "Traceback" not in err and "step1 checkpoint is truncated" in err


@pytest.mark.parametrize("step", ["write_stats", "write_figure"])
@pytest.mark.parametrize("options", [["--overwrite"], ["--iso"]], ids=["overwrite", "changed-options"])
def test_a_rerun_that_fails_while_writing_keeps_the_previous_results(ds, previous, monkeypatch, step, options,
                                                                    capsys):
    before = results(previous)

    def boom(*args, **kwargs):
        raise RuntimeError(f"{step} broke\nwith a second line")

    monkeypatch.setattr(outputs, step, boom)
    rc = main([str(ds), str(previous), "participant", SKIP, "--participant_label", "01", *options],
              models=TruthProvider(ds))
    err = capsys.readouterr().err
    assert rc == 1
    assert results(previous) == before
    assert not temp_files(previous)
    assert "Traceback" not in err and "with a second line" not in err
    assert f"RuntimeError: {step} broke" in err


@pytest.mark.slow
def test_a_failed_rerun_of_a_localizer_keeps_its_results_for_the_main_image(tmp_path, monkeypatch):
    ds = phantom.write_bids_dataset(tmp_path / "ds", participants=1, seed=0, localizer=True)
    out = tmp_path / "out"
    assert main([str(ds), str(out), "participant", SKIP], models=TruthProvider(ds)) == 0
    localizer = {rel: data for rel, data in results(out).items() if "acq-localizer" in rel}
    segment = participant.segment

    def localizer_fails(image, models, **kwargs):
        if "localizer" in str(image.path):
            raise RuntimeError("the localizer's networks failed")
        return segment(image, models, **kwargs)

    monkeypatch.setattr(participant, "segment", localizer_fails)
    calls = []
    provider = TruthProvider(ds, calls)
    assert main([str(ds), str(out), "participant", SKIP, "--overwrite"], models=provider) == 1
    assert {rel: data for rel, data in results(out).items() if "acq-localizer" in rel} == localizer
    assert len(calls) == 2  # the main image ran, numbered by the localizer's previous complete result
    assert len(list(out.glob("sub-01/log/*.done.json"))) == 2
    assert not temp_files(out)


def test_networks_that_do_not_load_fail_with_one_line_and_are_tried_once(monkeypatch, tmp_path):
    attempts = []

    class Unloadable:
        @staticmethod
        def load(*args):
            attempts.append(args)
            raise RuntimeError("PytorchStreamReader failed reading zip archive\nfailed finding central directory")

    monkeypatch.setattr(bids_models, "Models", Unloadable)
    provider = bids_models.WeightsProvider.__new__(bids_models.WeightsProvider)
    provider.__dict__.update(paths=SimpleNamespace(root=tmp_path / "weights"), release="r20250101",
                             device="cpu", threads=1, step1_only=False, precision="fp32", tile_step=0.5,
                             backend="torch", _models=None, _failure=None)
    for _ in range(3):
        with pytest.raises(WeightsError) as caught:
            provider(tmp_path / "x.nii.gz")
        assert str(caught.value) == (f"{tmp_path / 'weights'}: the networks of r20250101 do not load "
                                     f"(RuntimeError: PytorchStreamReader failed reading zip archive)")
    assert len(attempts) == 1  # not reloaded for every image
    assert pickle.loads(pickle.dumps(provider))._failure is None  # a worker process tries for itself


# --- 2, 3. a validator that cannot run is not an invalid dataset -------------------------------------


def _fake_validator(folder: Path, content: str | bytes, executable: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "bids-validator-deno"
    if isinstance(content, bytes):
        exe.write_bytes(content)
    else:
        exe.write_text(content)
    exe.chmod(0o755 if executable else 0o644)
    return exe


DENO_ERROR_REPORT = json.dumps({"issues": {"issues": [
    {"code": "FILENAME_MISMATCH", "severity": "error", "location": "/sub-01/anat/x.nii.gz"},
    {"code": "README_FILE_MISSING", "severity": "warning"}]}, "summary": {}})
DENO_CLEAN_REPORT = json.dumps({"issues": {"issues": [{"code": "README_FILE_MISSING", "severity": "warning"}]},
                                "summary": {}})

BROKEN_VALIDATORS = {
    # deno under `ulimit -v`: garbage on stdout, its backtrace on stderr, exit 134
    "crash-134": "#!/bin/sh\necho '==== C stack trace ===='\necho '    deno(+0x2d2a1b3) [0x55d0]'\n"
                 "echo 'Fatal process out of memory: Oilpan: CagedHeap reservation' >&2\nexit 134\n",
    "killed-by-signal": "#!/bin/sh\necho 'partial output'\nkill -ABRT $$\n",
    "not-its-report": "#!/bin/sh\necho '{\"message\": \"upgrade available\"}'\nexit 1\n",
    "exec-format-error": b"\x7fELF\x02\x01\x01garbage, not a program for this machine",
    "missing-interpreter": "#!/nonexistent/deno run\n",
}


@pytest.mark.parametrize("kind", sorted(BROKEN_VALIDATORS))
def test_a_validator_that_cannot_run_is_a_warning(ds, tmp_path, monkeypatch, capsys, kind):
    exe = _fake_validator(tmp_path / "bin", BROKEN_VALIDATORS[kind])
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    assert main([str(ds), str(tmp_path / "out"), "participant", "--dry-run"]) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if line.startswith("WARNING:") and "could not run" in line]
    assert len(warning) == 1 and str(exe) in warning[0], err
    assert "Traceback" not in err and "reports errors" not in err


def test_a_validator_without_execute_permission_is_a_warning(ds, tmp_path, monkeypatch, capsys):
    exe = _fake_validator(tmp_path / "bin", "#!/bin/sh\nexit 0\n", executable=False)
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))  # no real validator beside it
    if os.geteuid() == 0 and os.access(exe, os.X_OK):  # pragma: no cover - root with odd capabilities
        pytest.skip("this root can execute a file without execute permission")
    assert main([str(ds), str(tmp_path / "out"), "participant", "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "could not run" in err and str(exe) in err and "Permission denied" in err, err
    assert "Traceback" not in err


def test_a_validator_report_with_errors_exits_16_and_one_without_passes(ds, tmp_path, monkeypatch, capsys):
    bad = _fake_validator(tmp_path / "bad", f"#!/bin/sh\ncat <<'EOF'\n{DENO_ERROR_REPORT}\nEOF\nexit 16\n")
    monkeypatch.setenv("PATH", f"{bad.parent}{os.pathsep}{os.environ['PATH']}")
    assert main([str(ds), str(tmp_path / "out"), "participant", "--dry-run"]) == 16
    err = capsys.readouterr().err
    assert "FILENAME_MISMATCH" in err and "README_FILE_MISSING" not in err and "--skip-bids-validation" in err
    good = _fake_validator(tmp_path / "good", f"#!/bin/sh\ncat <<'EOF'\n{DENO_CLEAN_REPORT}\nEOF\nexit 0\n")
    monkeypatch.setenv("PATH", f"{good.parent}{os.pathsep}{os.environ['PATH']}")
    assert main([str(ds), str(tmp_path / "out"), "participant", "--dry-run"]) == 0
    assert "found no errors" in capsys.readouterr().err


# --- 4. an output folder inside the raw dataset -----------------------------------------------------


@pytest.mark.parametrize("inside", ["out", "sub-01/out", "derivatives"])
def test_an_output_folder_inside_the_raw_dataset_is_refused(ds, tmp_path, capsys, inside):
    ds = Path(shutil.copytree(ds, tmp_path / "ds"))
    out = ds / inside
    assert main([str(ds), str(out), "participant", SKIP], models=BrokenProvider()) == 64
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0] and str(ds / "derivatives" / "totalspineseg") in err[0]
    assert not out.exists() or inside == "derivatives"


def test_an_output_folder_under_derivatives_is_accepted(ds, capsys):
    assert main([str(ds), str(ds / "derivatives" / "totalspineseg"), "participant", SKIP, "--dry-run"]) == 0


# --- 5. exit codes of failed images -----------------------------------------------------------------


def _fail_with(monkeypatch, errors: dict[str, Exception]) -> None:
    """pipeline.segment raises errors[subject] (as the core does for an implausible image)."""
    segment = participant.segment

    def failing(image, models, **kwargs):
        for subject, exc in errors.items():
            if f"sub-{subject}_" in Path(image.path).name:
                raise exc
        return segment(image, models, **kwargs)

    monkeypatch.setattr(participant, "segment", failing)


def test_only_bad_input_data_exits_65(ds, tmp_path, monkeypatch, capsys):
    blank = ds / "sub-02" / "anat" / "sub-02_T2w.nii.gz"
    _fail_with(monkeypatch, {"02": InputError(blank, "blank image (every voxel is 0)")})
    out = tmp_path / "out"
    assert main([str(ds), str(out), "participant", SKIP], models=TruthProvider(ds)) == 65
    err = capsys.readouterr().err
    failed = [line for line in err.splitlines() if line.startswith("ERROR:") and "sub-02_T2w" in line]
    assert failed and all(str(blank) in line and "blank image" in line for line in failed)
    assert "Traceback" not in err
    assert len(list(out.glob("sub-01/log/*.done.json"))) == 1


def test_any_other_failure_exits_1(ds, tmp_path, monkeypatch, capsys):
    _fail_with(monkeypatch, {"01": InputError(ds / "x.nii.gz", "blank image (every voxel is 0)"),
                             "02": RuntimeError("CUDA error: an illegal memory access")})
    assert main([str(ds), str(tmp_path / "out"), "participant", SKIP], models=TruthProvider(ds)) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_a_main_image_whose_localizer_had_bad_data_counts_as_bad_data(tmp_path):
    ds = phantom.write_bids_dataset(tmp_path / "ds", participants=1, seed=0, localizer=True)
    localizer = next((ds / "sub-01" / "anat").glob("*acq-localizer*.nii.gz"))
    localizer.write_bytes(localizer.read_bytes()[:300])
    out = tmp_path / "out"
    assert main([str(ds), str(out), "participant", SKIP], models=TruthProvider(ds)) == 65
    assert len(list(out.glob("sub-01/log/crash-*.txt"))) == 2


# --- 6. temporary files of a killed process ---------------------------------------------------------


def test_temporary_files_of_a_dead_process_are_swept(ds, previous, reference, tmp_path):
    target = previous / "sub-01" / "anat" / "sub-01_desc-spine_dseg.nii.gz"
    code = ("import sys; from pathlib import Path; from totalspineseg import fsutil; "
            "t = fsutil.temp_name_for(Path(sys.argv[1])); t.write_bytes(b'half a file'); print(t)")
    made = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, check=True)
    orphan = Path(made.stdout.strip())
    assert orphan.is_file() and fsutil.is_temp_name(orphan.name)
    assert main([str(ds), str(previous), "participant", SKIP], models=TruthProvider(ds)) == 0
    assert not orphan.exists() and not temp_files(previous)
    assert_same_outputs(previous, reference)


def test_the_temporary_files_of_a_live_process_are_left_alone(ds, previous):
    mine = fsutil.temp_name_for(previous / "sub-01" / "anat" / "x.json")  # this process: alive
    mine.write_text("{}")
    assert main([str(ds), str(previous), "participant", SKIP], models=TruthProvider(ds)) == 0
    assert mine.is_file()
    mine.unlink()


# --- 7. an unwritable output folder stops the run before any network loads ------------------------


@contextlib.contextmanager
def tmpfs(where: Path, options: str):
    """A tmpfs mounted at `where` (root only); skips the test where mounting is not possible."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) for a tmpfs")
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, f"tss-{uuid.uuid4().hex[:8]}", str(where)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def test_an_unwritable_output_folder_exits_73_before_any_network_loads(ds, tmp_path, capsys):
    provider = CountingProvider(ds)
    if os.geteuid() == 0:
        with tmpfs(tmp_path / "ro", "ro,size=1m") as out:
            rc = main([str(ds), str(out), "participant", SKIP], models=provider)
    else:
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(stat.S_IRUSR | stat.S_IXUSR)
        try:
            rc = main([str(ds), str(out), "participant", SKIP], models=provider)
        finally:
            out.chmod(0o755)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 73 and provider.calls == []
    assert len(err) == 1 and str(out) in err[0] and "not writable" in err[0]


# --- kills, a full disk, a vanished folder ----------------------------------------------------------


@pytest.mark.slow
def test_killed_after_the_first_marker_then_resumed(ds, reference, child, tmp_path):
    out = tmp_path / "out"
    killed = run_child(child, ds, out, "participant", SKIP, kill_at="after-first-marker")
    assert killed.returncode == -signal.SIGKILL
    assert len(list(out.glob("sub-*/log/*.done.json"))) == 1
    assert_every_marker_complete(out)
    again = run_child(child, ds, out, "participant", SKIP)
    assert again.returncode == 0, again.stderr
    assert "already complete, skipped" in again.stderr and "Traceback" not in again.stderr
    assert not temp_files(out)
    assert_same_outputs(out, reference)


@pytest.mark.slow
@pytest.mark.parametrize("options", [["--overwrite"], ["--iso"]], ids=["overwrite", "changed-options"])
def test_a_rerun_killed_while_writing_keeps_the_previous_results(ds, previous, reference, child, options):
    before = results(previous)
    args = [ds, previous, "participant", SKIP, "--participant_label", "01"]
    killed = run_child(child, *args, *options, kill_at="while-writing")
    assert killed.returncode == -signal.SIGKILL
    assert results(previous) == before  # the staged files are hidden temporary names, nothing else changed
    assert temp_files(previous)  # a kill leaves them...
    again = run_child(child, *args)
    assert again.returncode == 0, again.stderr
    assert not temp_files(previous)  # ...and the next run sweeps them
    assert "already complete, skipped" in again.stderr
    assert_same_outputs(previous, reference)


@pytest.mark.slow
@pytest.mark.parametrize("first", ["fresh", "overwrite"])
def test_killed_while_committing_then_resumed(ds, reference, child, tmp_path, first):
    out = tmp_path / "out"
    args = [ds, out, "participant", SKIP, "--participant_label", "01"]
    if first == "overwrite":
        shutil.copytree(reference, out)
        args.append("--overwrite")
    killed = run_child(child, *args, kill_at="while-committing")
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "sub-01" / "log" / "sub-01_T2w.done.json").exists()  # a mixed set never looks complete
    assert_every_marker_complete(out)
    again = run_child(child, ds, out, "participant", SKIP, "--participant_label", "01")
    assert again.returncode == 0, again.stderr
    assert "done in" in again.stderr
    assert not temp_files(out)
    assert_same_outputs(out, reference, subjects=("01",) if first == "fresh" else ("01", "02"))


@pytest.mark.slow
@pytest.mark.parametrize("size", ["16k", "64k", "520k"])
def test_a_full_disk_fails_each_image_on_one_line(ds, tmp_path, capsys, size):
    with tmpfs(tmp_path / "full", f"size={size}") as out:
        rc = main([str(ds), str(out), "participant", SKIP], models=TruthProvider(ds))
        err = capsys.readouterr().err
        assert "Traceback" not in err
        if rc == 73:  # not even the dataset files fit
            lines = err.strip().splitlines()
            assert lines[-1].count("No space left on device") == 1 and str(out) in lines[-1]
        else:
            assert rc == 1, err
            failed = [line for line in err.splitlines() if line.startswith("ERROR:") and ": failed: " in line]
            assert failed and all("No space left on device" in line for line in failed), err
        assert_every_marker_complete(out)  # no marker without all its files
        assert not temp_files(out)


def test_an_output_folder_that_vanishes_mid_run(ds, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    segment = participant.segment

    def vanishing(*args, **kwargs):
        result = segment(*args, **kwargs)
        shutil.rmtree(out, ignore_errors=True)
        return result

    monkeypatch.setattr(participant, "segment", vanishing)
    rc = main([str(ds), str(out), "participant", SKIP, "--participant_label", "01"], models=TruthProvider(ds))
    err = capsys.readouterr().err
    assert rc == 73 and "Traceback" not in err
    assert "disappeared" in err.strip().splitlines()[-1] and str(out) in err.strip().splitlines()[-1]
    assert not out.exists()  # not silently remade with a few images and no dataset files


# --- concurrency ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("first", ["fresh", "overwrite"])
def test_two_jobs_on_the_same_participant(ds, reference, child, tmp_path, first):
    out = tmp_path / "out"
    extra = []
    if first == "overwrite":
        shutil.copytree(reference, out)
        extra = ["--overwrite"]
    cmd = [sys.executable, str(child), str(ds), str(out), "participant", SKIP, "--participant_label", "01", *extra]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    finished = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    assert [rc for _, _, rc in finished] == [0, 0], [err[-1500:] for _, err, _ in finished]
    assert not temp_files(out)
    assert len(list(out.glob("sub-01/log/*.done.json"))) == 1
    assert_every_marker_complete(out)
    assert_same_outputs(out, reference, subjects=("01",) if first == "fresh" else ("01", "02"))
