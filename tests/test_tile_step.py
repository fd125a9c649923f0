"""--tile-step: the sliding-window step, from the command line to nnU-Net's tiles, the run record and the re-run rule.

The BIDS-App side (sidecar provenance, completion fingerprint) is in test_bids_app.py.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from model_factory import make_image, make_model_folder
from oracle import oracle_models

from totalspineseg import runtime
from totalspineseg.cli import segment as cli
from totalspineseg.cli.run_record import why_redo
from totalspineseg.pipeline import Models
from totalspineseg.synth import phantom
from totalspineseg.volume import save_nifti


@pytest.mark.parametrize("text, value", [("0.5", 0.5), ("0.75", 0.75), ("1", 1.0), ("1e-3", 0.001)])
def test_steps_in_zero_to_one_are_accepted(text, value):
    assert runtime.parse_tile_step(text) == value == runtime.check_tile_step(value)


@pytest.mark.parametrize("text, why", [("0", "not in (0, 1]"), ("-0.25", "not in (0, 1]"), ("1.01", "not in (0, 1]"),
                                       ("nan", "not in (0, 1]"), ("inf", "not in (0, 1]"), ("half", "not a number")])
def test_other_steps_are_refused_with_the_reason(text, why):
    with pytest.raises(argparse.ArgumentTypeError, match=why.replace("(", r"\(").replace("]", r"\]")):
        runtime.parse_tile_step(text)
    if why != "not a number":
        with pytest.raises(ValueError, match="tile step must be in"):
            runtime.check_tile_step(float(text))


def test_cli_refuses_a_bad_step_with_a_usage_error(tmp_path, capsys):
    assert cli.main([str(tmp_path / "in.nii.gz"), str(tmp_path / "out"), "--tile-step", "0"]) == 64
    err = capsys.readouterr().err
    assert "usage:" in err and "--tile-step: '0' is not in (0, 1]" in err
    assert not (tmp_path / "out").exists()  # refused before anything is made


def test_help_says_what_the_step_trades(capsys):
    assert cli.main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--tile-step STEP" in text and "default 0.5, as upstream" in text
    assert "fewer tiles" in text and "less averaging where tiles meet" in text


@pytest.fixture(scope="module")
def cervical(tmp_path_factory):
    ph = phantom.make_phantom(seed=21, fov="cervical")
    path = tmp_path_factory.mktemp("in") / "sub-01_T2w.nii.gz"
    save_nifti(path, ph.image, ph.affine)
    return path, ph


def test_cli_records_the_step_and_a_changed_step_redoes_the_image(tmp_path, cervical, monkeypatch, capsys):
    path, ph = cervical
    asked = []

    def load(paths, device="auto", threads=None, step1_only=False, precision="auto", tile_step=0.5, backend="torch"):
        asked.append(tile_step)  # what --tile-step handed to the networks; the oracle stands in for them
        return oracle_models(ph.labels, ph.affine, tile_step=tile_step)

    monkeypatch.setattr(Models, "load", staticmethod(load))
    out = tmp_path / "out"
    args = [str(path), str(out), "--weights", "demo", "-q", "--keep-only", "step2_output"]

    assert cli.main([*args, "--tile-step", "0.75"]) == 0
    record = json.loads((out / "logs" / "sub-01_T2w.json").read_text())
    assert record["options"]["tile_step"] == 0.75 and record["tile_step"] == 0.75
    assert "1 done" in capsys.readouterr().err

    assert cli.main([*args, "--tile-step", "0.75"]) == 0
    assert "1 already complete" in capsys.readouterr().err

    assert cli.main(args) == 0  # the default, 0.5: redone
    assert "1 done, 0 already complete" in capsys.readouterr().err
    assert json.loads((out / "logs" / "sub-01_T2w.json").read_text())["options"]["tile_step"] == 0.5
    assert asked == [0.75, 0.75, 0.5]
    assert why_redo(out, "sub-01_T2w", {**record["options"], "tile_step": 0.75}, []) == (
        "--tile-step changed since it was made")


# --- the step reaches nnU-Net's sliding window ------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """ResEnc-L planner, tiny network, patch 48 x 48 x 48."""
    return make_model_folder(tmp_path_factory.mktemp("models"), 101, plans_name="nnUNetPlans")


def _tiles_and_labels(model, image):
    calls = []
    hook = model._predictor.network.register_forward_pre_hook(lambda module, inputs: calls.append(inputs[0].shape))
    try:
        labels = model.predict(image).labels
    finally:
        hook.remove()
    return sum(shape[0] for shape in calls), labels


def test_a_larger_step_runs_fewer_tiles(tiny_folder):
    from totalspineseg.predictor import load_model

    model = load_model(tiny_folder, device="cpu", threads=1)
    assert model.tile_step == 0.5 and "tile_step=0.5" in repr(model)
    image = make_image((48, 48, 144), seed=2)  # 144 voxels along one axis of a 48-voxel patch
    tiles = {}
    for step in (0.5, 0.75, 1.0):
        model.tile_step = step
        tiles[step], labels = _tiles_and_labels(model, image)
        assert labels.shape == (48, 48, 144)
    assert tiles == {0.5: 5, 0.75: 4, 1.0: 3}  # nnU-Net's ceil((144 - 48) / (48 * step)) + 1
    with pytest.raises(ValueError, match="tile step must be in"):
        model.tile_step = 0
    assert load_model(tiny_folder, device="cpu", threads=1, tile_step=0.75).tile_step == 0.75


def test_a_bad_step_is_refused_before_loading(tiny_folder, monkeypatch):
    from totalspineseg import predictor

    monkeypatch.setattr(predictor, "read_checkpoint", lambda *a, **k: pytest.fail("loaded despite a bad step"))
    with pytest.raises(ValueError, match="tile step must be in"):
        predictor.load_model(tiny_folder, device="cpu", tile_step=1.5)


def test_models_load_hands_the_step_to_both_networks(monkeypatch):
    from totalspineseg import predictor, weights

    seen = []

    class Fake:
        device, precision = "cpu", "fp32"

        def __init__(self, tile_step):
            self.tile_step = tile_step

    monkeypatch.setattr(predictor, "load_model", lambda *a, tile_step, **k: seen.append(tile_step) or Fake(tile_step))
    models = Models.load(weights.resolve_model("demo"), "cpu", tile_step=0.75)
    assert seen == [0.75, 0.75] and models.tile_step == 0.75
    assert np.isclose(Models.load(weights.resolve_model("demo"), "cpu").tile_step, runtime.TILE_STEP_DEFAULT)
