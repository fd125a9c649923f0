"""The `totalspineseg` command end to end with oracle networks (answers = phantom truth)."""

import nibabel as nib
import numpy as np
import pytest
from oracle import OracleModel, oracle_models

from totalspineseg import labels as L
from totalspineseg.cli import segment as cli
from totalspineseg.synth import phantom
from totalspineseg.training import metrics
from totalspineseg.volume import save_nifti

SEED = 21


@pytest.fixture(scope="module")
def anatomy():
    # The truth the oracle answers with: a 1 mm whole-spine render of the anatomy.
    return phantom.make_phantom(seed=SEED, fov="whole")


@pytest.fixture(scope="module")
def images(tmp_path_factory, anatomy):
    folder = tmp_path_factory.mktemp("in")
    truths = {}
    for name, fov, orient, voxel in (
        ("sub-01_T2w", "cervical", "LPS", (0.9, 0.9, 2.0)),
        ("sub-02_T2w", "lumbar", "PSR", (1.0, 1.0, 3.0)),
    ):
        ph = phantom.make_phantom(seed=SEED, fov=fov, orientation=orient, voxel=voxel)
        save_nifti(folder / f"{name}.nii.gz", ph.image, ph.affine)
        truths[name] = ph
    (folder / "sub-03_T2w.nii.gz").write_bytes(b"not a nifti at all")
    return folder, truths


def test_folder_run_writes_upstream_layout_on_native_grid(tmp_path, images, anatomy):
    folder, truths = images
    out = tmp_path / "out"
    models = oracle_models(anatomy.labels, anatomy.affine)
    code = cli.main([str(folder), str(out), "-q"], models=models)
    assert code == 65, "one input is corrupt: the run must say so (bad input data)"
    for name, ph in truths.items():
        for sub in cli.DELIVERABLES:
            img = nib.load(out / sub / f"{name}.nii.gz")
            assert img.shape == ph.image.shape, sub
            assert np.allclose(img.affine, ph.affine), sub
        pred = np.asarray(nib.load(out / "step2_output" / f"{name}.nii.gz").dataobj)
        rate, failures = metrics.identification_rate(pred, ph.labels, min_voxels=30)
        assert rate >= 0.95, failures
        assert list((out / "preview").glob(f"{name}_*.jpg"))
    assert not (out / "step2_output" / "sub-03_T2w.nii.gz").exists()
    assert not list(out.rglob(".*")), "no temporary file is left behind"


def test_failures_are_summarised(tmp_path, images, anatomy, capsys):
    folder, _ = images
    code = cli.main([str(folder), str(tmp_path / "o"), "-q", "--step1"],
                    models=oracle_models(anatomy.labels, anatomy.affine))
    assert code == 65  # the only failure is bad input data
    err = capsys.readouterr().err
    assert "1 failed" in err and "sub-03_T2w.nii.gz" in err


def test_step1_only_and_keep_only(tmp_path, images, anatomy):
    folder, truths = images
    out = tmp_path / "o"
    assert cli.main([str(folder / "sub-01_T2w.nii.gz"), str(out), "-q", "--step1", "-k", "step1_output",
                     "step1_levels"], models=oracle_models(anatomy.labels, anatomy.affine)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["logs", "step1_levels", "step1_output"]


def test_iso_keeps_network_space_and_input(tmp_path, images, anatomy):
    folder, _ = images
    out = tmp_path / "o"
    assert cli.main([str(folder / "sub-02_T2w.nii.gz"), str(out), "-q", "--iso", "--keep-intermediate"],
                    models=oracle_models(anatomy.labels, anatomy.affine)) == 0
    seg = nib.load(out / "step2_output" / "sub-02_T2w.nii.gz")
    inp = nib.load(out / "input" / "sub-02_T2w_0000.nii.gz")
    assert seg.shape == inp.shape and np.allclose(seg.affine, inp.affine)
    assert nib.aff2axcodes(seg.affine) == ("R", "A", "S")
    assert np.allclose(np.abs(np.diag(seg.affine)[:3]), 1.0)
    for sub in ("step1_raw", "step2_raw", "step2_input"):
        assert list((out / sub).glob("*.nii.gz")), sub


def test_rerun_skips_completed_images(tmp_path, images, anatomy, capsys):
    folder, _ = images
    out = tmp_path / "o"
    args = [str(folder / "sub-01_T2w.nii.gz"), str(out), "-q"]
    models = oracle_models(anatomy.labels, anatomy.affine)
    cli.main(args, models=models)
    capsys.readouterr()
    cli.main(args, models=models)
    assert "1 already complete" in capsys.readouterr().err


def test_thoracic_numbered_through_localizer(tmp_path, anatomy):
    ph = phantom.make_phantom(seed=SEED, fov="thoracic", orientation="RAS", voxel=(1.0, 1.0, 1.0))
    loc = phantom.make_localizer(seed=SEED)
    img = save_nifti(tmp_path / "thor.nii.gz", ph.image, ph.affine)
    loc_seg = save_nifti(tmp_path / "loc_seg.nii.gz", loc.labels, loc.affine)
    out = tmp_path / "o"
    assert cli.main([str(img), str(out), "-q", "--loc", str(loc_seg)],
                    models=oracle_models(anatomy.labels, anatomy.affine)) == 0
    pred = np.asarray(nib.load(out / "step2_output" / "thor.nii.gz").dataobj)
    rate, failures = metrics.identification_rate(pred, ph.labels, min_voxels=30)
    assert rate == 1.0, failures


def test_missing_weights_message_names_the_install_command(tmp_path, images, monkeypatch, capsys):
    folder, _ = images
    monkeypatch.setenv("TOTALSPINESEG_DATA", str(tmp_path / "empty"))
    code = cli.main([str(folder / "sub-01_T2w.nii.gz"), str(tmp_path / "o")])
    assert code == 78
    assert "totalspineseg-weights install" in capsys.readouterr().err


def test_in_a_container_the_missing_weights_message_says_how_to_bake_or_mount_them(tmp_path, images, monkeypatch,
                                                                                   capsys):
    folder, _ = images
    monkeypatch.setenv("TOTALSPINESEG_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("TOTALSPINESEG_CONTAINER_TYPE", "docker")
    assert cli.main([str(folder / "sub-01_T2w.nii.gz"), str(tmp_path / "o")]) == 78
    err = capsys.readouterr().err
    assert "totalspineseg-weights install" not in err and "TOTALSPINESEG_DATA=/weights" in err and "baked" in err


def test_help_lists_every_upstream_option(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for opt in ("--step1", "--iso", "--loc", "--suffix", "--loc-suffix", "--keep-only", "--data-dir", "--device",
                "--max-workers", "--quiet", "--weights", "--keep-intermediate", "--version"):
        assert opt in text


class _ThinningOracle(OracleModel):
    """Step 2 misses one disc altogether, as a weak step-2 network does with thin discs."""

    def __init__(self, truth, affine, dropped: int):
        super().__init__(np.where(truth == dropped, 0, truth), affine, 2)


def test_disc_completion_restores_a_disc_that_step2_missed(tmp_path, images, anatomy):
    folder, truths = images
    name, dropped = "sub-02_T2w", L.disc_below_vertebra(43)  # L3-L4 in the lumbar view
    models = oracle_models(anatomy.labels, anatomy.affine)
    models.step2 = _ThinningOracle(anatomy.labels, anatomy.affine, dropped)
    truth = truths[name].labels
    for flags, expect_disc in (([], True), (["--no-disc-completion"], False)):
        out = tmp_path / ("default" if expect_disc else "upstream")
        assert cli.main([str(folder / f"{name}.nii.gz"), str(out), "-q", *flags], models=models) == 0
        pred = np.asarray(nib.load(out / "step2_output" / f"{name}.nii.gz").dataobj)
        dice = metrics.dice_per_label(pred, truth, [dropped]).get(dropped, 0.0)
        assert (dice > 0.9) if expect_disc else (dice == 0.0), (flags, dice)
        rate, failures = metrics.identification_rate(pred, truth, min_voxels=30)
        assert failures == ([] if expect_disc else [dropped])
