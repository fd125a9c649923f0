"""totalspineseg.predictor on tiny nnU-Net model folders made by nnU-Net's own planners (see model_factory)."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path, PurePosixPath

import nibabel as nib
import numpy as np
import pytest
from model_factory import copy_model_folder, make_image, make_model_folder

from totalspineseg.errors import TotalSpineSegError, WeightsError
from totalspineseg.predictor import (
    ModelFolder,
    load_model,
    nnunet_to_ras_axes,
    ras_to_nnunet_axes,
    read_checkpoint,
    resolve_device,
)
from totalspineseg.runtime import allowed_cpus

torch = pytest.importorskip("torch")
pytest.importorskip("nnunetv2")

STEP1_REGION_ORDER = [1, 2, 3, 4, 5, 6, 7, 8, 9]


@pytest.fixture(scope="session")
def models_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("nnunet_results")


@pytest.fixture(scope="session")
def resenc_folder(models_root) -> Path:
    """Like the official step-1 release: ResEnc-L planner, custom trainer name, plans renamed nnUNetPlans."""
    return make_model_folder(models_root, 101, plans_name="nnUNetPlans")


@pytest.fixture(scope="session")
def plain_folder(models_root) -> Path:
    """Default planner and trainer; 2 mm along X so nnU-Net resamples and transposes; zero borders to crop."""
    return make_model_folder(models_root, 103, planner="default", trainer_name="nnUNetTrainer",
                             spacing=(2.0, 1.0, 1.0), zero_margin=8, tiny_patch_size=(32, 32, 32),
                             mirroring_axes=(0, 1, 2))


@pytest.fixture(scope="session")
def step2_folder(models_root) -> Path:
    return make_model_folder(models_root, 102, n_channels=2)


@pytest.fixture(scope="session")
def softmax_folder(models_root) -> Path:
    return make_model_folder(models_root, 104, labels={"background": 0, "a": 1, "b": 2}, planner="default",
                             trainer_name="nnUNetTrainer", tiny_patch_size=(32, 32, 32))


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


# --- settings ------------------------------------------------------------------------------------------------------

def test_import_is_cheap():
    code = "import sys, totalspineseg.predictor; print(sorted({'torch', 'nnunetv2'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_threads_are_capped_at_the_allowed_cpus_and_must_be_positive(resenc_folder):
    # how the count is settled (SLURM, OMP_NUM_THREADS, cgroup quota) is tested in test_runtime.py
    assert load_model(resenc_folder, device="cpu", threads=10_000).threads == allowed_cpus()
    with pytest.raises(ValueError, match="positive integer"):
        load_model(resenc_folder, device="cpu", threads=0)


def test_device_is_cpu_or_cuda():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unsupported"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(TotalSpineSegError, match="CUDA"):
            resolve_device("cuda")


def test_best_checkpoint_preferred_over_final(tmp_path):
    (tmp_path / "fold_0").mkdir()
    (tmp_path / "fold_0" / "checkpoint_final.pth").touch()
    folder = ModelFolder(tmp_path, {}, {})
    assert folder.checkpoint_path().name == "checkpoint_final.pth"
    (tmp_path / "fold_0" / "checkpoint_best.pth").touch()
    assert folder.checkpoint_path().name == "checkpoint_best.pth"
    assert folder.checkpoint_path(checkpoint="checkpoint_final.pth").name == "checkpoint_final.pth"
    with pytest.raises(WeightsError, match="fold_1"):
        folder.checkpoint_path(fold=1)


@pytest.mark.parametrize("reader", ["SimpleITKIO", "SimpleITKIOWithReorient", "NibabelIO", "NibabelIOWithReorient"])
def test_axis_order_is_what_nnunet_readers_give_for_a_ras_nifti(tmp_path, reader):
    from nnunetv2.imageio.reader_writer_registry import recursive_find_reader_writer_by_name

    image = np.random.default_rng(0).random((1, 5, 6, 7), dtype=np.float32)
    spacing = (0.8, 1.25, 2.5)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (10.0, -20.0, 5.0)
    nib.save(nib.Nifti1Image(image[0], affine), tmp_path / "case_0000.nii.gz")

    reader_class = recursive_find_reader_writer_by_name(reader)
    expected, properties = reader_class().read_images([str(tmp_path / "case_0000.nii.gz")])
    ours, our_spacing = ras_to_nnunet_axes(image, spacing)
    np.testing.assert_array_equal(ours, expected)
    np.testing.assert_allclose(our_spacing, properties["spacing"], rtol=1e-6)
    np.testing.assert_array_equal(nnunet_to_ras_axes(expected[0]), image[0])


# --- loading and predicting ----------------------------------------------------------------------------------------

def test_resenc_model_with_custom_trainer_name_predicts(resenc_folder):
    assert resenc_folder.name == "nnUNetTrainerDAExtGPU__nnUNetPlans__3d_fullres"
    model = load_model(resenc_folder, device="cpu", threads=2)
    assert model.configuration_manager.network_arch_class_name.endswith("ResidualEncoderUNet")
    assert model.trainer_name == "nnUNetTrainerDAExtGPU"
    assert model.label_values == STEP1_REGION_ORDER

    prediction = model.predict(make_image((40, 56, 36), seed=1), return_probabilities=[8, 9])
    assert prediction.labels.shape == (40, 56, 36) and prediction.labels.dtype == np.uint8
    assert set(np.unique(prediction.labels)) <= {0, *STEP1_REGION_ORDER}
    assert sorted(prediction.probabilities) == [8, 9]
    for probability in prediction.probabilities.values():
        assert probability.shape == (40, 56, 36) and probability.dtype == np.float32
        assert probability.flags.c_contiguous
        assert 0.0 <= probability.min() and probability.max() <= 1.0


def test_region_labels_are_written_in_regions_class_order(resenc_folder):
    prediction = load_model(resenc_folder, device="cpu", threads=2).predict(
        make_image((40, 40, 40), seed=2), return_probabilities=True)
    expected = np.zeros(prediction.labels.shape, dtype=np.uint8)
    for label in STEP1_REGION_ORDER:  # later regions overwrite earlier ones
        expected[prediction.probabilities[label] > 0.5] = label
    np.testing.assert_array_equal(prediction.labels, expected)
    assert len(np.unique(prediction.labels)) > 2  # random weights still give several classes


def test_plain_unet_with_other_spacing_and_transpose_predicts(plain_folder):
    model = load_model(plain_folder, device="cpu", threads=2)
    assert model.configuration_manager.network_arch_class_name.endswith("PlainConvUNet")
    assert model.plans_manager.transpose_forward != [0, 1, 2]
    prediction = model.predict(make_image((41, 37, 30), seed=3, zero_margin=3), return_probabilities=[9])
    assert prediction.labels.shape == (41, 37, 30)
    assert prediction.probabilities[9].shape == (41, 37, 30)
    # nnU-Net crops to the non-zero box and gives background outside it
    assert not prediction.labels[:3].any() and not prediction.probabilities[9][:3].any()


def test_two_channel_step2_model_predicts(step2_folder):
    model = load_model(step2_folder, device="cpu", threads=2)
    assert model.n_channels == 2
    assert model.configuration_manager.normalization_schemes == ["ZScoreNormalization", "NoNormalization"]
    prediction = model.predict(make_image((40, 56, 36), n_channels=2, n_labels=11, seed=4))
    assert prediction.labels.shape == (40, 56, 36) and prediction.probabilities is None
    assert set(np.unique(prediction.labels)) <= set(range(12))


def test_softmax_model_probabilities_cover_every_label(softmax_folder):
    model = load_model(softmax_folder, device="cpu", threads=2)
    prediction = model.predict(make_image((32, 40, 36), n_labels=2, seed=5), return_probabilities=[0, 1, 2])
    stacked = np.stack([prediction.probabilities[label] for label in (0, 1, 2)])
    np.testing.assert_allclose(stacked.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(prediction.labels, stacked.argmax(0))


def test_bad_inputs_are_refused(resenc_folder):
    model = load_model(resenc_folder, device="cpu", threads=1)
    with pytest.raises(ValueError, match="C = 1"):
        model.predict(np.zeros((2, 8, 8, 8), np.float32))
    with pytest.raises(ValueError, match="spacing"):
        model.predict(np.zeros((1, 8, 8, 8), np.float32), spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="RAS"):
        model.predict(np.zeros((1, 8, 8, 8), np.float32), affine=np.diag([-1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="disagrees"):
        model.predict(np.zeros((1, 8, 8, 8), np.float32), spacing=(1.0, 1.0, 1.0), affine=np.diag([2.0, 1, 1, 1]))
    with pytest.raises(ValueError, match="12"):
        model.predict(np.zeros((1, 8, 8, 8), np.float32), return_probabilities=[12])


def _nnunet_predicts_files(folder: Path, images: list[Path], output: Path) -> tuple[np.ndarray, np.ndarray]:
    """nnU-Net's own path: its trainer lookup, SimpleITK reader, preprocessing and export. Labels and the
    probabilities npz, both in nnU-Net's (Z, Y, X) order."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0,))
    output.mkdir()
    predictor.predict_from_files_sequential([[str(i) for i in images]], [str(output / "case")],
                                            save_probabilities=True)
    labels = np.asarray(nib.load(output / "case.nii.gz").dataobj)
    return labels, np.load(output / "case.npz")["probabilities"]


@pytest.mark.parametrize("model, spacing", [("plain", (1.0, 1.0, 1.0)), ("plain", (1.25, 0.8, 1.5)),
                                            ("step2", (1.0, 1.0, 1.0))])
def test_same_result_as_nnunet_predicting_the_nifti_files(request, tmp_path, model, spacing):
    folder = request.getfixturevalue(f"{model}_folder")
    if model == "step2":
        # nnU-Net looks up the checkpoint's trainer by name; name one it has (the network is the same)
        folder = copy_model_folder(folder, tmp_path / "weights")
        content = read_checkpoint(folder / "fold_0" / "checkpoint_final.pth")
        content["trainer_name"] = "nnUNetTrainer"
        torch.save(content, folder / "fold_0" / "checkpoint_final.pth")
    n_channels = 2 if model == "step2" else 1
    image = make_image((40, 48, 36), n_channels=n_channels, n_labels=9, seed=6, zero_margin=4)
    affine = np.diag([*spacing, 1.0])
    (tmp_path / "in").mkdir()
    files = [tmp_path / "in" / f"case_{c:04d}.nii.gz" for c in range(n_channels)]
    for channel, path in enumerate(files):
        nib.save(nib.Nifti1Image(image[channel], affine), path)

    ours = load_model(folder, device="cpu", threads=2).predict(image, affine=affine, return_probabilities=True)
    reference_labels, reference_probabilities = _nnunet_predicts_files(folder, files, tmp_path / "out")

    np.testing.assert_array_equal(ours.labels, reference_labels)
    assert len(ours.probabilities) == len(reference_probabilities)
    for head, label in enumerate(sorted(ours.probabilities)):
        np.testing.assert_array_equal(ours.probabilities[label], nnunet_to_ras_axes(reference_probabilities[head]))


@pytest.mark.parametrize("wanted", [[8, 9], []])
def test_region_export_one_head_at_a_time_equals_nnunets_export(plain_folder, wanted):
    """The CPU export of a region model, head by head, gives nnU-Net's numbers (resampled, anisotropic input)."""
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    model = load_model(plain_folder, device="cpu", threads=1)
    image = make_image((40, 52, 12), n_channels=1, n_labels=9, seed=8, zero_margin=3)
    data, properties = model._to_nnunet(image, (1.25, 0.8, 3.0), None)  # 3 mm: nnU-Net resamples z apart
    data, _, properties = model.configuration_manager.preprocessor_class(verbose=False).run_case_npy(
        data, None, properties, model.plans_manager, model.configuration_manager, model.folder.dataset_json)
    logits = torch.randn((len(model.label_values), *data.shape[1:]), generator=torch.Generator().manual_seed(0))

    reference = convert_predicted_logits_to_segmentation_with_correct_shape(
        logits, model.plans_manager, model.configuration_manager, model.label_manager, properties,
        return_probabilities=bool(wanted), num_threads_torch=1)
    labels, maps = model._region_outputs_by_head(logits, properties, wanted)

    np.testing.assert_array_equal(labels, reference[0] if wanted else reference)
    assert len(np.unique(labels)) > 2
    if not wanted:
        assert maps is None
        return
    heads = {label: head for head, label in enumerate(model.label_values)}
    assert sorted(maps) == wanted
    for label, probability in maps.items():
        np.testing.assert_array_equal(probability, nnunet_to_ras_axes(reference[1][heads[label]]))


# --- what stays on the device (CUDA); the same code runs on CPU tensors here -------------------------------------

@pytest.mark.parametrize("model, n_channels, wanted, spacing", [
    ("resenc", 1, [8, 9], (1.0, 1.0, 1.0)),  # regions, probabilities asked for
    ("resenc", 1, False, (1.0, 1.0, 1.0)),   # regions, labels only
    ("step2", 2, True, (1.0, 1.0, 1.0)),     # two channels, every region
    ("softmax", 1, [0, 1, 2], (1.0, 1.0, 1.0)),  # softmax: argmax of the probabilities, background 1 outside the crop
    ("softmax", 1, False, (1.0, 1.0, 1.0)),  # softmax: argmax of the logits
    ("plain", 1, [9], (1.25, 0.8, 1.5)),     # spacing differs from the plans: nnU-Net's CPU export is used
])
def test_outputs_computed_where_the_logits_are_equal_nnunets_export(request, monkeypatch, model, n_channels, wanted,
                                                                    spacing):
    model_ = load_model(request.getfixturevalue(f"{model}_folder"), device="cpu", threads=1)
    assert model_.outputs_on_device is False  # on the CPU, nnU-Net's own export
    image = make_image((40, 52, 36), n_channels=n_channels, n_labels=9, seed=7, zero_margin=5)  # cropped by nnU-Net
    reference = model_.predict(image, spacing=spacing, return_probabilities=wanted)

    model_.outputs_on_device = True  # what a CUDA model does
    resampled = model != "plain"
    unused = "_outputs_by_nnunet" if resampled else "_outputs_on_device"
    monkeypatch.setattr(model_, unused, lambda *a: pytest.fail(f"{unused} used"))
    new = model_.predict(image, spacing=spacing, return_probabilities=wanted)

    np.testing.assert_array_equal(new.labels, reference.labels)
    assert new.labels.dtype == np.uint8 and new.labels.flags.c_contiguous
    assert (new.probabilities is None) == (reference.probabilities is None)
    for label, probability in (reference.probabilities or {}).items():
        assert new.probabilities[label].dtype == np.float32 and new.probabilities[label].flags.c_contiguous
        np.testing.assert_array_equal(new.probabilities[label], probability)
    assert len(np.unique(reference.labels)) > 1 and not reference.labels[:5].any()


def test_the_gaussian_map_is_computed_once_per_patch_size(resenc_folder, softmax_folder):
    # nnU-Net caches compute_gaussian (lru_cache, key: patch, sigma, scaling, dtype, device); nothing here may
    # clear that cache between images (nnU-Net's own file loops do)
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    first = load_model(resenc_folder, device="cpu", threads=1)
    second = load_model(softmax_folder, device="cpu", threads=1)
    assert first.configuration_manager.patch_size != second.configuration_manager.patch_size
    compute_gaussian.cache_clear()
    for _ in range(2):
        for model in (first, second):
            model.predict(make_image((40, 52, 60), seed=8))
    info = compute_gaussian.cache_info()
    assert info.misses == 2 and info.hits == 2


# --- no trainer, no timm, nothing written ---------------------------------------------------------------------------

def test_nnunet_prints_reach_the_log_when_nnunet_fails(resenc_folder, monkeypatch, caplog, capsys):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    def print_then_fail(self, dataset_json):
        print("label manager: regions_class_order is missing")
        raise RuntimeError("no label manager")

    monkeypatch.setattr(PlansManager, "get_label_manager", print_then_fail)
    with caplog.at_level(logging.DEBUG, logger="totalspineseg"), pytest.raises(RuntimeError, match="no label"):
        load_model(resenc_folder, device="cpu", threads=1)
    assert capsys.readouterr().out == ""
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("regions_class_order is missing" in message for message in errors), caplog.text


def test_loading_never_looks_up_a_trainer(resenc_folder, monkeypatch):
    import nnunetv2.inference.predict_from_raw_data as predict_module
    import nnunetv2.utilities.find_class_by_name as find_class_module
    import nnunetv2.utilities.find_objects as find_objects_module

    def refuse(*args, **kwargs):
        raise AssertionError(f"trainer lookup {args}")

    original = find_class_module.recursive_find_python_class

    def only_outside_training(folder, *args, **kwargs):
        if "training" in Path(folder).parts:
            raise AssertionError(f"class lookup in {folder}")
        return original(folder, *args, **kwargs)

    monkeypatch.setattr(find_objects_module, "recursive_find_trainer_class_by_name", refuse)
    monkeypatch.setattr(predict_module, "recursive_find_trainer_class_by_name", refuse)
    for module in [m for name, m in sys.modules.items() if name.startswith("nnunetv2") and m is not None]:
        if getattr(module, "recursive_find_python_class", None) is original:
            monkeypatch.setattr(module, "recursive_find_python_class", only_outside_training)

    prediction = load_model(resenc_folder, device="cpu", threads=1).predict(make_image((32, 32, 32), seed=7))
    assert prediction.labels.shape == (32, 32, 32)
    assert "timm" not in sys.modules and "torchvision" not in sys.modules


READ_ONLY_RUN = textwrap.dedent("""
    import json, sys
    import numpy as np
    from totalspineseg.predictor import load_model
    model = load_model(sys.argv[1], device="cpu", threads=1)
    prediction = model.predict(np.random.default_rng(0).normal(size=(1, 32, 32, 32)).astype(np.float32))
    print(json.dumps({"shape": prediction.labels.shape,
                      "imported": sorted(m for m in sys.modules if m in ("timm", "torchvision", "auglab")
                                         or m.startswith("nnunetv2.training.nnUNetTrainer"))}))
""")


@pytest.mark.slow
def test_read_only_model_folder_and_install(resenc_folder, tmp_path):
    import nnunetv2

    model = copy_model_folder(resenc_folder, tmp_path / "weights")
    site_nnunet = Path(nnunetv2.__file__).parent
    before = (_snapshot(site_nnunet), _snapshot(tmp_path / "weights"))
    subprocess.run(["chmod", "-R", "a-w", str(tmp_path / "weights")], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    try:
        run = subprocess.run([sys.executable, "-c", READ_ONLY_RUN, str(model)], capture_output=True, text=True,
                             env=env, cwd=tmp_path)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(tmp_path / "weights")], check=True)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == {"shape": [32, 32, 32], "imported": []}
    assert (_snapshot(site_nnunet), _snapshot(tmp_path / "weights")) == before


# --- checkpoint safety -----------------------------------------------------------------------------------------------

def test_checkpoint_is_loaded_with_weights_only(resenc_folder, monkeypatch):
    checkpoint = resenc_folder / "fold_0" / "checkpoint_final.pth"
    # nnU-Net checkpoints hold numpy scalars, which the bare weights_only loader refuses
    with pytest.raises(pickle.UnpicklingError):
        torch.load(checkpoint, map_location="cpu", weights_only=True)

    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_model(resenc_folder, device="cpu", threads=1)
    assert calls == [True]


def test_legacy_format_checkpoint_loads(tmp_path):
    # files in torch's pre-zip format cannot be memory-mapped; they are read the plain way
    path = tmp_path / "legacy.pth"
    torch.save({"network_weights": {"w": torch.ones(2)}, "_best_ema": np.float64(0.5)}, path,
               _use_new_zipfile_serialization=False)
    for mmap in (False, True):
        content = read_checkpoint(path, mmap=mmap)
        assert content["_best_ema"] == 0.5 and content["network_weights"]["w"].tolist() == [1.0, 1.0]


def test_checkpoint_with_arbitrary_objects_is_refused(resenc_folder, tmp_path):
    folder = copy_model_folder(resenc_folder, tmp_path)
    path = folder / "fold_0" / "checkpoint_final.pth"
    content = read_checkpoint(path)
    content["init_args"]["output_folder"] = PurePosixPath("/somewhere")
    torch.save(content, path)
    with pytest.raises(WeightsError, match="pathlib"):
        load_model(folder, device="cpu", threads=1)


def test_compiled_model_key_prefixes_are_handled(resenc_folder, tmp_path):
    folder = copy_model_folder(resenc_folder, tmp_path)
    path = folder / "fold_0" / "checkpoint_final.pth"
    content = read_checkpoint(path)
    content["network_weights"] = {f"_orig_mod.{k}": v for k, v in content["network_weights"].items()}
    torch.save(content, path)
    image = make_image((32, 32, 32), seed=8)
    expected = load_model(resenc_folder, device="cpu", threads=1).predict(image).labels
    np.testing.assert_array_equal(load_model(folder, device="cpu", threads=1).predict(image).labels, expected)


def test_unsupported_reader_and_mismatched_weights_are_refused(resenc_folder, step2_folder, tmp_path):
    folder = copy_model_folder(resenc_folder, tmp_path / "reader")
    plans = json.loads((folder / "plans.json").read_text())
    plans["image_reader_writer"] = "Tiff3DIO"
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(WeightsError, match="Tiff3DIO"):
        load_model(folder, device="cpu")

    folder = copy_model_folder(resenc_folder, tmp_path / "mismatch")
    shutil.copy(step2_folder / "fold_0" / "checkpoint_final.pth", folder / "fold_0" / "checkpoint_final.pth")
    with pytest.raises(WeightsError, match="do not fit"):
        load_model(folder, device="cpu")
