"""The optional OpenVINO backend: which backend runs, the same labels as torch, the converted network reused."""

from __future__ import annotations

import numpy as np
import pytest

from totalspineseg import openvino_backend as ovb
from totalspineseg import volume, weights
from totalspineseg.errors import UsageError
from totalspineseg.synth import phantom


def test_torch_is_the_default_and_openvino_runs_where_it_can(monkeypatch):
    monkeypatch.setattr(ovb, "available", lambda: True)
    assert ovb.DEFAULT_BACKEND == "torch"
    for device, precision in (("cpu", "fp32"), ("cpu", "bf16"), ("cuda", "fp16")):
        assert ovb.resolve_backend("torch", device, precision) == "torch"
    assert ovb.resolve_backend("openvino", "cpu", "fp32") == ovb.resolve_backend("openvino", "cpu", "bf16") == \
        "openvino"


def test_openvino_refuses_what_it_cannot_run_with_a_usage_error(monkeypatch):
    monkeypatch.setattr(ovb, "available", lambda: True)
    with pytest.raises(UsageError, match="CPU only"):
        ovb.resolve_backend("openvino", "cuda", "fp16")
    with pytest.raises(UsageError, match="fp32 or bf16"):
        ovb.resolve_backend("openvino", "cpu", "fp16")
    monkeypatch.setattr(ovb, "available", lambda: False)
    with pytest.raises(UsageError, match=r"pip install 'totalspineseg\[openvino\]'"):
        ovb.resolve_backend("openvino", "cpu", "fp32")
    with pytest.raises(ValueError):
        ovb.resolve_backend("onnx", "cpu", "fp32")


def test_cli_names_the_missing_package_and_exits_64(tmp_path, monkeypatch):
    from totalspineseg.cli import segment

    monkeypatch.setattr(ovb, "available", lambda: False)
    ph = phantom.make_phantom(5, "lumbar", voxel=(2.0, 2.0, 2.0))
    image = volume.save_nifti(tmp_path / "img.nii.gz", ph.image, ph.affine)
    code = segment.main([str(image), str(tmp_path / "out"), "--weights", "demo", "--backend", "openvino"])
    assert code == UsageError.exit_code
    assert not (tmp_path / "out" / "step2_output").exists()


@pytest.fixture(scope="module")
def demo_paths():
    pytest.importorskip("nnunetv2")
    pytest.importorskip("openvino", reason="OpenVINO is optional: pip install 'totalspineseg[openvino]'")
    return weights.resolve_model("demo")


def test_openvino_gives_the_labels_torch_gives(demo_paths, tmp_path, monkeypatch):
    from totalspineseg.pipeline import Models, PipelineOptions, segment

    monkeypatch.setenv("TOTALSPINESEG_OPENVINO_CACHE", str(tmp_path / "cache"))
    ph = phantom.make_phantom(11, "lumbar", voxel=(1.5, 1.5, 1.5))
    vol = volume.Volume(ph.image, ph.affine)
    options = PipelineOptions(soft_maps=False, levels=False)
    results = {}
    for backend in ("torch", "openvino"):
        models = Models.load(demo_paths, device="cpu", threads=2, precision="fp32", backend=backend)
        assert models.backend == backend and models.step1.backend == backend
        results[backend] = segment(vol, models, options=options)
    assert results["openvino"].backend == "openvino"
    torch_seg, ov_seg = results["torch"].final.step2, results["openvino"].final.step2
    assert set(np.unique(torch_seg)) == set(np.unique(ov_seg))
    assert (torch_seg == ov_seg).mean() > 0.999


def test_the_converted_network_is_kept_and_reused(demo_paths, tmp_path, monkeypatch):
    from totalspineseg.predictor import load_model

    monkeypatch.setenv("TOTALSPINESEG_OPENVINO_CACHE", str(tmp_path / "cache"))
    first = load_model(demo_paths.step1, checkpoint=demo_paths.step1_checkpoint.name, device="cpu", threads=1,
                       backend="openvino")
    saved = list((tmp_path / "cache").glob("*/network.xml"))
    assert len(saved) == 1 and not list((tmp_path / "cache").glob(".partial-*"))

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again although the IR is cached")

    monkeypatch.setattr(ovb, "_convert", no_conversion)
    second = load_model(demo_paths.step1, checkpoint=demo_paths.step1_checkpoint.name, device="cpu", threads=1,
                        backend="openvino")
    image = np.random.default_rng(0).random((1, 40, 60, 120)).astype(np.float32)
    a, b = first.predict(image), second.predict(image)
    assert np.array_equal(a.labels, b.labels)


def test_an_unwritable_cache_only_costs_a_conversion(demo_paths, tmp_path, monkeypatch):
    from totalspineseg.predictor import load_model

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setenv("TOTALSPINESEG_OPENVINO_CACHE", str(blocker / "cache"))
    model = load_model(demo_paths.step1, checkpoint=demo_paths.step1_checkpoint.name, device="cpu", threads=1,
                       backend="openvino")
    prediction = model.predict(np.zeros((1, 32, 48, 64), np.float32))
    assert prediction.labels.shape == (32, 48, 64)
