"""The bad-input and fault-injection corpus of the `totalspineseg` command (docs/reliability.md).

Every case is generated here; nothing is committed. Networks are oracles that answer with a phantom's truth,
so that the expected outputs are exact and the corpus runs in seconds.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from oracle import OracleModel, oracle_models

from totalspineseg import fsutil
from totalspineseg.cli import segment as cli
from totalspineseg.errors import WeightsError
from totalspineseg.predictor import read_checkpoint
from totalspineseg.synth import phantom
from totalspineseg.volume import save_nifti

SEED = 5
DOCUMENTED = {0, 1, 64, 65, 66, 70, 73}


@pytest.fixture(scope="module")
def anatomy():
    return phantom.make_phantom(seed=SEED, fov="whole")


@pytest.fixture(scope="module")
def lumbar(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lumbar")
    ph = phantom.make_phantom(seed=SEED, fov="lumbar", voxel=(1.2, 1.2, 3.0), orientation="PSR")
    return save_nifti(folder / "sub-01_T2w.nii.gz", ph.image, ph.affine), ph


def run(args, models, capsys) -> tuple[int, list[str]]:
    code = cli.main([str(a) for a in args], models=models)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, [line for line in err.splitlines() if line.strip()]


def snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.parent.name != "logs"}


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.is_file()]


def nifti(path: Path, data, zooms=(1.0, 1.0, 1.0)) -> Path:
    save_nifti(path, np.asarray(data, dtype=np.float32), np.diag([*zooms, 1.0]))
    return path


class CountingOracle(OracleModel):
    calls = 0

    def predict(self, *args, **kwargs):
        type(self).calls += 1
        return super().predict(*args, **kwargs)


class FailingStep2(OracleModel):
    def predict(self, *args, **kwargs):
        raise RuntimeError("the GPU fell off the bus")


# --- implausible images: one clear line, exit 65, before any network runs -----------------------------

IMPLAUSIBLE = {
    "all zero": (np.zeros((40, 60, 80)), (1.0, 1.0, 1.0), "blank image"),
    "constant": (np.full((40, 60, 80), 7.0), (1.0, 1.0, 1.0), "constant image"),
    "3x3x3": (np.random.default_rng(0).random((3, 3, 3)), (1.0, 1.0, 1.0), "too small to hold a vertebra"),
    "0.05 mm voxels": (np.random.default_rng(1).random((64, 64, 64)), (0.05, 0.05, 0.05), "too small"),
    "single slice": (np.random.default_rng(2).random((1, 200, 300)), (3.0, 1.0, 1.0), "too small"),
    "20 mm voxels": (np.random.default_rng(3).random((64, 64, 64)), (20.0, 20.0, 20.0), "working grid"),
}


@pytest.mark.parametrize("case", IMPLAUSIBLE)
def test_implausible_images_are_refused_before_any_network(case, tmp_path, anatomy, capsys):
    data, zooms, words = IMPLAUSIBLE[case]
    image = nifti(tmp_path / "bad.nii.gz", data, zooms)
    CountingOracle.calls = 0
    models = oracle_models(anatomy.labels, anatomy.affine)
    models.step1 = CountingOracle(anatomy.labels, anatomy.affine, 1)
    code, lines = run([image, tmp_path / "out", "-q"], models, capsys)
    assert code == 65 and CountingOracle.calls == 0
    failed = [line for line in lines if line.startswith("ERROR")]
    assert len(failed) == 1 and str(image) in failed[0] and words in failed[0]
    assert not (tmp_path / "out" / "step1_output").exists()


def test_a_huge_grid_fails_alone_and_the_next_image_still_runs(tmp_path, lumbar, anatomy, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    nifti(folder / "a_huge.nii.gz", np.random.default_rng(3).random((64, 64, 64)), (20.0, 20.0, 20.0))
    os.link(lumbar[0], folder / "b_lumbar.nii.gz")
    code, lines = run([folder, tmp_path / "out", "-q", "--step1"], oracle_models(anatomy.labels, anatomy.affine),
                      capsys)
    assert code == 65  # the only failure is bad input data
    assert (tmp_path / "out" / "step1_output" / "b_lumbar.nii.gz").is_file()
    assert any("1 done" in line and "1 failed" in line for line in lines)


# --- headers -------------------------------------------------------------------------------------------


def test_qform_sform_disagreement_warns_and_outputs_keep_both(tmp_path, lumbar, anatomy, capsys):
    src = nib.load(lumbar[0])
    img = nib.Nifti1Image(np.asarray(src.dataobj), src.affine, src.header)
    shifted = src.affine.copy()
    shifted[:3, 3] += 6.0  # over the 1 mm tolerance (the oracle answers in world space, so stay near the spine)
    img.set_qform(src.affine, code=1)
    img.set_sform(shifted, code=2)
    path = tmp_path / "mismatch.nii.gz"
    nib.save(img, path)
    code, lines = run([path, tmp_path / "out", "--step1"], oracle_models(anatomy.labels, anatomy.affine), capsys)
    assert any(line.startswith("WARNING") and str(path) in line and "qform and the sform" in line for line in lines)
    out = nib.load(tmp_path / "out" / "step1_output" / "mismatch.nii.gz")
    for get in ("get_qform", "get_sform"):
        expected, expected_code = getattr(img.header, get)(coded=True)
        written, written_code = getattr(out.header, get)(coded=True)
        assert written_code == expected_code and np.allclose(written, expected, atol=1e-4), get


def test_an_intensity_image_given_as_localizer_is_refused(tmp_path, lumbar, anatomy, capsys):
    intensity = tmp_path / "loc_image.nii.gz"
    pixels = np.asarray(nib.load(lumbar[0]).dataobj, dtype=np.float64)
    as_int16 = np.rint(np.clip(pixels / pixels.max(), 0, 1) * 3000).astype(np.int16)  # an integer MR image
    save_nifti(intensity, as_int16, lumbar[1].affine)
    code, lines = run([lumbar[0], tmp_path / "out", "-q", "--loc", intensity],
                      oracle_models(anatomy.labels, anatomy.affine), capsys)
    assert code == 65
    assert any(str(intensity) in line and "not a segmentation of this tool" in line for line in lines)


# --- re-runs --------------------------------------------------------------------------------------------


def test_a_rerun_with_new_options_redoes_the_image(tmp_path, lumbar, anatomy, capsys):
    models = oracle_models(anatomy.labels, anatomy.affine)
    out = tmp_path / "out"
    assert run([lumbar[0], out], models, capsys)[0] == 0
    code, lines = run([lumbar[0], out], models, capsys)
    assert code == 0 and any("1 already complete" in line for line in lines)
    loc = phantom.make_localizer(seed=SEED)
    loc_seg = save_nifti(tmp_path / "loc_seg.nii.gz", loc.labels, loc.affine)
    code, lines = run([lumbar[0], out, "--loc", loc_seg], models, capsys)
    assert code == 0 and any("redoing: --loc changed" in line for line in lines)
    assert any("1 done" in line for line in lines)


def test_outputs_without_a_record_are_redone(tmp_path, lumbar, anatomy, capsys):
    models = oracle_models(anatomy.labels, anatomy.affine)
    out = tmp_path / "out"
    run([lumbar[0], out], models, capsys)
    for record in (out / "logs").iterdir():
        record.unlink()
    code, lines = run([lumbar[0], out], models, capsys)
    assert code == 0 and any("no record of how they were made" in line for line in lines)


# --- faults: nothing complete lost, nothing partial left -----------------------------------------------


def test_a_failed_image_leaves_nothing_behind(tmp_path, lumbar, anatomy, capsys):
    models = oracle_models(anatomy.labels, anatomy.affine)
    models.step2 = FailingStep2(anatomy.labels, anatomy.affine, 2)
    code, lines = run([lumbar[0], tmp_path / "out", "-q"], models, capsys)
    assert code == 1 and any("RuntimeError: the GPU fell off the bus" in line for line in lines)
    leftovers = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert leftovers == []  # no step1_* and no preview of the failed image


def test_a_failed_rerun_keeps_the_previous_complete_outputs(tmp_path, lumbar, anatomy, capsys):
    out = tmp_path / "out"
    assert run([lumbar[0], out], oracle_models(anatomy.labels, anatomy.affine), capsys)[0] == 0
    before, record = snapshot(out), (out / "logs" / "sub-01_T2w.json").read_bytes()
    models = oracle_models(anatomy.labels, anatomy.affine)
    models.step2 = FailingStep2(anatomy.labels, anatomy.affine, 2)
    assert run([lumbar[0], out, "--overwrite"], models, capsys)[0] == 1
    assert snapshot(out) == before and (out / "logs" / "sub-01_T2w.json").read_bytes() == record
    assert temp_files(out) == []


@pytest.mark.parametrize("fail_at", [0, 3, 6])
def test_a_fault_while_renaming_then_a_rerun_gives_the_uninterrupted_outputs(fail_at, tmp_path, lumbar, anatomy,
                                                                           capsys, monkeypatch):
    models = oracle_models(anatomy.labels, anatomy.affine)
    reference = tmp_path / "reference"
    assert run([lumbar[0], reference], models, capsys)[0] == 0
    out = tmp_path / "out"
    real_replace, count = os.replace, {"n": 0}

    def flaky_replace(src, dst):
        count["n"] += 1
        if count["n"] == fail_at + 1:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(fsutil.os, "replace", flaky_replace)
    code, lines = run([lumbar[0], out], models, capsys)
    assert code == 1 and any("No space left on device" in line for line in lines)
    assert not (out / "logs" / "sub-01_T2w.json").exists()  # not complete: no record
    monkeypatch.setattr(fsutil.os, "replace", real_replace)
    assert run([lumbar[0], out], models, capsys)[0] == 0
    assert snapshot(out) == snapshot(reference)
    assert temp_files(out) == []


def test_stale_temp_files_of_a_killed_run_are_swept(tmp_path, lumbar, anatomy, capsys):
    out = tmp_path / "out"
    target = out / "step2_output" / "sub-01_T2w.nii.gz"
    code = ("import sys; from pathlib import Path; from totalspineseg import fsutil; "
            "p = fsutil.temp_name_for(Path(sys.argv[1])); p.parent.mkdir(parents=True, exist_ok=True); "
            "p.write_bytes(b''); print(p)")
    left = Path(subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True,
                               check=True).stdout.strip())
    assert left.exists()
    assert run([lumbar[0], out, "-q"], oracle_models(anatomy.labels, anatomy.affine), capsys)[0] == 0
    assert not left.exists() and temp_files(out) == []


def test_a_live_writers_temp_file_is_not_swept(tmp_path):
    mine = fsutil.temp_name_for(tmp_path / "x.nii.gz")
    mine.write_bytes(b"")
    assert fsutil.sweep_stale_temps(tmp_path) == [] and mine.exists()


def test_an_unwritable_output_is_refused_before_any_network(tmp_path, lumbar, anatomy, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    CountingOracle.calls = 0
    models = oracle_models(anatomy.labels, anatomy.affine)
    models.step1 = CountingOracle(anatomy.labels, anatomy.affine, 1)
    code, lines = run([lumbar[0], blocker / "out"], models, capsys)
    assert code == 73 and CountingOracle.calls == 0
    assert lines == [f"totalspineseg: error: {blocker / 'out'}: the output folder is not writable "
                     f"({lines[0].rsplit('(', 1)[1]}"]


def test_disk_full_gives_one_clear_line_and_no_partial_set(tmp_path, lumbar, anatomy, capsys):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("tmpfs cannot be mounted here")
    try:
        code, lines = run([lumbar[0], mount / "out", "-q"], oracle_models(anatomy.labels, anatomy.affine), capsys)
        assert code == 1
        failed = [line for line in lines if line.startswith("ERROR")]
        assert len(failed) == 1 and "No space left on device" in failed[0]
        assert not (mount / "out" / "logs").exists() or not list((mount / "out" / "logs").iterdir())
        assert temp_files(mount) == [] and not (mount / "out" / "step2_output" / "sub-01_T2w.nii.gz").exists()
    finally:
        subprocess.run(["umount", str(mount)], check=False)


# --- checkpoints ---------------------------------------------------------------------------------------


def test_checkpoint_messages_tell_damage_from_refused_code(tmp_path):
    import torch

    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.pth"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    good = tmp_path / "good.pth"
    torch.save({"network_weights": {"w": torch.zeros(2)}}, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:300])
    for path in (empty, noise, truncated):
        with pytest.raises(WeightsError, match="corrupt or truncated checkpoint") as info:
            read_checkpoint(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value) and "weights_only" not in str(info.value)

    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    code = tmp_path / "code.pth"
    torch.save({"x": Payload()}, code)
    with pytest.raises(WeightsError, match="refusing to unpickle .*system"):
        read_checkpoint(code)


# --- a seeded fuzz of headers and shapes ---------------------------------------------------------------


def _fuzz_case(rng: np.random.Generator, path: Path) -> Path:
    ndim = int(rng.choice([2, 3, 3, 3, 3, 3, 4, 5]))
    shape = tuple(int(rng.choice([1, 3, 40, 64, 64, 96])) for _ in range(ndim))
    dtype = rng.choice([np.uint8, np.int16, np.float32, np.float64])
    kind = rng.choice(["random", "zeros", "constant", "nan", "inf", "huge"])
    data = rng.random(shape).astype(np.float64) * 200
    if kind == "zeros":
        data[:] = 0
    elif kind == "constant":
        data[:] = 3
    elif kind in ("nan", "inf") and data.size and np.issubdtype(dtype, np.floating):
        data.flat[0] = np.nan if kind == "nan" else np.inf
    elif kind == "huge":
        data *= 1e30
    if np.issubdtype(dtype, np.integer):
        data = np.clip(data, np.iinfo(dtype).min, np.iinfo(dtype).max)
    affine = np.diag([*rng.choice([0.0, 0.01, 0.8, 1.0, 1.0, 2.0, 3.0, 50.0], 3), 1.0])
    if rng.random() < 0.3:
        affine[:3, :3] = rng.normal(size=(3, 3))
    if rng.random() < 0.1:
        affine[0, 0] = np.nan
    img = nib.Nifti1Image(data.astype(dtype), np.eye(4))
    img.header.set_sform(affine, code=int(rng.choice([0, 1, 4])))
    try:
        img.header.set_qform(affine if rng.random() < 0.5 else np.eye(4), code=int(rng.choice([0, 1, 2])))
    except (np.linalg.LinAlgError, nib.spatialimages.HeaderDataError):
        pass  # nibabel cannot store this affine as a qform; the sform alone carries it
    nib.save(img, path)
    if rng.random() < 0.15:  # truncate the file
        raw = path.read_bytes()
        path.write_bytes(raw[: int(len(raw) * rng.random())])
    return path


def test_fuzzed_headers_and_shapes_give_a_result_or_one_clear_line(tmp_path, anatomy, capsys):
    rng = np.random.default_rng(20261201)  # fixed seed: the same 60 cases in every run
    folder = tmp_path / "in"
    folder.mkdir()
    paths = [_fuzz_case(rng, folder / f"case{i:02d}.nii.gz") for i in range(60)]
    models = oracle_models(anatomy.labels, anatomy.affine)
    for path in paths:
        code, lines = run([path, tmp_path / "out", "-q", "--step1"], models, capsys)
        assert code in DOCUMENTED, (path, code, lines)
        errors = [line for line in lines if line.startswith(("ERROR", "totalspineseg: error"))]
        if code:
            assert len(errors) == 1 and str(path) in errors[0], (path, lines)


def test_a_missing_input_path_is_66(tmp_path, anatomy, capsys):
    missing = tmp_path / "nowhere"
    code, lines = run([missing, tmp_path / "out"], oracle_models(anatomy.labels, anatomy.affine), capsys)
    assert code == 66 and lines == [f"totalspineseg: error: {missing}: no such file or folder"]
