"""Run a trained nnU-Net v2 model folder on an in-memory image.

This is the only module of the package that touches torch and nnunetv2, and it imports them inside functions,
so ``import totalspineseg.predictor`` stays cheap.

The network is built from the plans' ``architecture`` entry. The trainer class named in the checkpoint is never
looked up: official releases name ``nnUNetTrainerDAExtGPU``, which is not part of nnunetv2, and nnU-Net's lookup
by name imports modules that need timm and torchvision.

Everything between the network and the caller is nnU-Net's own code (cropping to the non-zero box, normalisation,
resampling to the plans' spacing, sliding window, sigmoid/softmax, reverting all of it), so a model sees the arrays
it was trained on.

Axis convention. The pipeline holds images as ``(C, X, Y, Z)`` arrays in canonical RAS+ order, as nibabel gives
them. nnU-Net's NIfTI readers (SimpleITKIO, NibabelIO and their *WithReorient variants) all give a RAS+ file as
``(C, Z, Y, X)`` with the spacing reversed, so that is what the network gets here; the plans' ``transpose_forward``
is applied on top by nnU-Net's preprocessor, exactly as in training.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import pydoc
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from totalspineseg.errors import TotalSpineSegError, WeightsError
from totalspineseg.runtime import TILE_STEP_DEFAULT, check_tile_step, nnunet_output, resolve_precision, resolve_threads
from totalspineseg.weights.registry import CHECKPOINT_NAMES, DATASET_JSON, PLANS_JSON, fold_dir_name, model_name_parts

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "LoadedModel",
    "ModelFolder",
    "Prediction",
    "load_model",
    "nnunet_to_ras_axes",
    "ras_to_nnunet_axes",
    "read_checkpoint",
    "resolve_device",
]

# Readers that give a RAS+ NIfTI as the nibabel array with its axes reversed (checked in tests/test_predictor.py).
_AXIS_REVERSING_READERS = frozenset({"SimpleITKIO", "SimpleITKIOWithReorient", "NibabelIO", "NibabelIOWithReorient"})

# Where dynamic_network_architectures keeps the U-Nets, for plans written when the classes lived elsewhere.
_ARCHITECTURE_MODULES = (
    "dynamic_network_architectures.architectures.unet",
    "dynamic_network_architectures.architectures.residual_unet",
)


@dataclass(frozen=True)
class Prediction:
    """What one forward pass gives, on the grid and in the axis order of the input.

    ``labels``: uint8 ``(X, Y, Z)`` label map in the model's class values.
    ``probabilities``: float32 ``(X, Y, Z)`` maps keyed by label value, for the labels asked for, else None.
    For a region-based model, the map of label ``v`` is the sigmoid of the region written as ``v`` (for the
    step-1 model: 9 = cord, 8 = canal including the cord).
    """

    labels: np.ndarray
    probabilities: dict[int, np.ndarray] | None = None


@dataclass(frozen=True)
class ModelFolder:
    """A trained-model folder as nnU-Net writes it: ``<trainer>__<plans>__<configuration>/``."""

    path: Path
    dataset_json: dict = field(repr=False)
    plans: dict = field(repr=False)

    @classmethod
    def open(cls, path: str | os.PathLike) -> ModelFolder:
        path = Path(path)
        return cls(path, _read_json(path / DATASET_JSON), _read_json(path / PLANS_JSON))

    @property
    def name_parts(self) -> tuple[str, str, str] | None:
        """``(trainer, plans, configuration)`` from the folder name, or None if it is not in that form."""
        return model_name_parts(self.path.name)

    def checkpoint_path(self, fold: int | str = 0, checkpoint: str | None = None) -> Path:
        """The checkpoint file of ``fold``: ``checkpoint`` if given, else best, else final."""
        fold_dir = self.path / fold_dir_name(fold)
        names = (checkpoint,) if checkpoint else CHECKPOINT_NAMES
        for name in names:
            if (fold_dir / name).is_file():
                return fold_dir / name
        raise WeightsError(f"{fold_dir}: no checkpoint found (looked for {', '.join(names)})")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` is CUDA when available, else the CPU. Asking for CUDA without it is an error."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise TotalSpineSegError(f"device {device!r} requested, but CUDA is not available")
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}: use auto, cpu or cuda")
    return resolved


def read_checkpoint(path: str | os.PathLike, mmap: bool = False) -> dict:
    """Load an nnU-Net checkpoint without executing arbitrary pickled code.

    ``torch.load(weights_only=True)`` only accepts tensors and plain containers. nnU-Net checkpoints also hold
    numpy scalars (the training log, the best EMA Dice), so those few numpy types are allowlisted, nothing else.
    ``mmap``: leave the tensors in the file until they are used (the optimizer state then never enters RAM);
    the file must not be rewritten while they are alive.
    """
    import torch

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read the checkpoint ({exc.strerror or exc})") from exc
    if size == 0:
        raise WeightsError(f"{path}: corrupt or truncated checkpoint (the file is empty); reinstall the weights")
    allowlist = getattr(torch.serialization, "safe_globals", None)
    context = allowlist(_numpy_safe_globals()) if allowlist else contextlib.nullcontext()
    try:
        with context:
            return _load_weights_only(path, mmap)
    except pickle.UnpicklingError as exc:
        unsafe = _unsafe_globals(path)
        if unsafe is None:  # not a pickle at all: damaged bytes, not a refused object
            raise WeightsError(f"{path}: corrupt or truncated checkpoint (not a PyTorch checkpoint file); "
                               "reinstall the weights") from exc
        raise WeightsError(f"{path}: refusing to unpickle {unsafe}: the checkpoint holds code, not only tensors, "
                           f"plain containers and numpy scalars") from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: corrupt or truncated checkpoint ({_first_line(exc)}); reinstall the weights"
                           ) from exc


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception's message (torch appends paragraphs of advice)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0].split(". ")[0].rstrip(".") if lines else type(exc).__name__


def _load_weights_only(path: Path, mmap: bool) -> dict:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except RuntimeError as exc:
        if not mmap or "mmap" not in str(exc):
            raise
        # files in torch's legacy (pre-zip) format cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=True)


def _numpy_safe_globals() -> list:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray

    entries: list = [np.dtype, np.ndarray, multiarray.scalar, multiarray._reconstruct]
    # checkpoints pickled under numpy 1.x name these by their old module path
    entries += [(multiarray.scalar, "numpy.core.multiarray.scalar"),
                (multiarray._reconstruct, "numpy.core.multiarray._reconstruct")]
    dtype_classes = getattr(np, "dtypes", None)
    if dtype_classes is not None:
        entries += [t for t in vars(dtype_classes).values() if isinstance(t, type) and issubclass(t, np.dtype)]
    return entries


def _unsafe_globals(path: Path) -> str | None:
    """The objects a checkpoint's pickle would import that the allowlist refuses; None if it is no pickle."""
    import torch

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - the file cannot even be scanned: it is damaged, not malicious
        return None
    allowed = {_global_name(entry) for entry in _numpy_safe_globals()}
    refused = [name for name in names if name not in allowed]
    return ", ".join(refused) if refused else None


def _global_name(entry: Any) -> str:
    return entry[1] if isinstance(entry, tuple) else f"{entry.__module__}.{entry.__qualname__}"


class LoadedModel:
    """A network with its nnU-Net plans, ready to predict. Create it with :func:`load_model`."""

    def __init__(self, folder: ModelFolder, network: torch.nn.Module, state_dict: dict, configuration: str,
                 trainer_name: str, device: torch.device, threads: int, precision: str = "fp32",
                 tile_step: float = TILE_STEP_DEFAULT, backend: str = "torch"):
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        self.folder = folder
        self.configuration = configuration
        self.trainer_name = trainer_name
        self.device = device
        self.threads = threads
        self.precision = precision  # "fp32", "bf16" or "fp16" (see runtime.resolve_precision)
        self.backend = backend  # "torch" or "openvino" (see openvino_backend.resolve_backend)
        self._layout = None  # the network's memory format, set per prediction by _set_layout
        # labels and probability maps computed where the logits are (CUDA) instead of nnU-Net's CPU export
        self.outputs_on_device = device.type == "cuda"
        self.plans_manager = PlansManager(folder.plans)
        self.configuration_manager = self.plans_manager.get_configuration(configuration)
        with nnunet_output():
            self.label_manager = self.plans_manager.get_label_manager(folder.dataset_json)
            self._predictor = nnUNetPredictor(
                tile_step_size=check_tile_step(tile_step), use_gaussian=True, use_mirroring=False,
                perform_everything_on_device=device.type == "cuda", device=device,
                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
            self._predictor.manual_initialization(
                network, self.plans_manager, self.configuration_manager, [state_dict], folder.dataset_json,
                trainer_name, inference_allowed_mirroring_axes=None)

    def __repr__(self) -> str:
        return (f"LoadedModel({self.folder.path}, configuration={self.configuration!r}, "
                f"device={self.device}, threads={self.threads}, precision={self.precision}, "
                f"backend={self.backend}, tile_step={self.tile_step:g})")

    def _use_openvino(self, checkpoint: Path | None) -> None:
        """Hand nnU-Net's predictor the network compiled by OpenVINO (see `openvino_backend`)."""
        from . import openvino_backend as ovb

        patch = tuple(int(p) for p in self.configuration_manager.patch_size)
        key = ovb.network_key(checkpoint, self.n_channels, patch) if checkpoint is not None else None
        self._predictor.network = ovb.compile_network(self._predictor.network, self.n_channels, patch,
                                                      self.precision, self.threads, key)

    @property
    def tile_step(self) -> float:
        """The sliding-window step as a fraction of the patch (nnU-Net's tile_step_size; 0.5 = half overlap)."""
        return self._predictor.tile_step_size

    @tile_step.setter
    def tile_step(self, value: float) -> None:
        self._predictor.tile_step_size = check_tile_step(value)

    @property
    def n_channels(self) -> int:
        return len(self.folder.dataset_json["channel_names"])

    @property
    def label_values(self) -> list[int]:
        """Foreground label values the model writes, in the order of its output heads."""
        if self.label_manager.has_regions:
            return [int(v) for v in self.label_manager.regions_class_order]
        return [int(v) for v in self.label_manager.foreground_labels]

    def _set_layout(self) -> None:
        """bf16 on the CPU runs with the network in ``channels_last_3d`` (oneDNN's fastest bf16 convolutions:
        6% less time per ResEnc-L patch on an AMX CPU, same labels); everything else in the default layout."""
        import torch

        if self.backend != "torch":
            return
        layout = torch.channels_last_3d if self.device.type == "cpu" and self.precision == "bf16" else None
        if layout != self._layout:
            self._predictor.network.to(memory_format=layout or torch.contiguous_format)
            self._layout = layout

    def _autocast(self):
        """The CPU autocast of a bf16/fp16 run; on CUDA nnU-Net applies its own (fp16) autocast inside."""
        import torch

        if self.device.type != "cpu" or self.precision == "fp32" or self.backend != "torch":
            return contextlib.nullcontext()
        return torch.autocast("cpu", dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)

    def predict(self, image_channels: np.ndarray, spacing: Sequence[float] | None = None,
                return_probabilities: bool | Sequence[int] = False, progress: bool = False,
                affine: np.ndarray | None = None) -> Prediction:
        """Segment one image.

        ``image_channels``: ``(C, X, Y, Z)`` array in canonical RAS+ order, one channel per dataset.json channel.
        ``spacing``: voxel size in mm along X, Y, Z; or give the image's ``affine`` (must be RAS+), else 1 mm.
        nnU-Net resamples to the plans' spacing and back when they differ.
        ``return_probabilities``: True for every label, or a list of label values, or False for none.
        """
        import torch

        data, properties = self._to_nnunet(image_channels, spacing, affine)
        wanted = self._wanted_labels(return_probabilities)
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads)
        preprocessor = self.configuration_manager.preprocessor_class(verbose=False)
        data, _, properties = preprocessor.run_case_npy(
            data, None, properties, self.plans_manager, self.configuration_manager, self.folder.dataset_json)
        self._predictor.allow_tqdm = progress
        self._set_layout()
        with self._autocast():
            if self.outputs_on_device:  # the logits stay where the sliding window accumulated them
                logits = self._predictor.predict_sliding_window_return_logits(torch.from_numpy(data))
            else:
                logits = self._predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data)).cpu()
        del data
        if self.outputs_on_device and _no_resampling(logits, properties):
            segmentation, maps = self._outputs_on_device(logits, properties, wanted)
        else:
            segmentation, maps = self._outputs_by_nnunet(logits.cpu(), properties, wanted)
        del logits
        return Prediction(labels=nnunet_to_ras_axes(segmentation).astype(np.uint8, copy=False), probabilities=maps)

    def _outputs_by_nnunet(self, logits: torch.Tensor, properties: dict,
                           wanted: list[int]) -> tuple[np.ndarray, dict[int, np.ndarray] | None]:
        """nnU-Net's own export on the CPU: logits back to the input's spacing, nonlinearity, labels, crop undone."""
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

        if self.label_manager.has_regions and not _no_resampling(logits, properties):
            return self._region_outputs_by_head(logits, properties, wanted)
        result = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, self.plans_manager, self.configuration_manager, self.label_manager, properties,
            return_probabilities=bool(wanted), num_threads_torch=self.threads)
        if not wanted:
            return result, None
        segmentation, probabilities = result
        del result
        return segmentation, self._probability_maps(probabilities, wanted)

    def _region_outputs_by_head(self, logits: torch.Tensor, properties: dict,
                                wanted: list[int]) -> tuple[np.ndarray, dict[int, np.ndarray] | None]:
        """nnU-Net's export of a region-based model, one output head at a time.

        The same steps as nnU-Net's ``convert_predicted_logits_to_segmentation_with_correct_shape``, with the same
        functions: the logits resampled to the input's spacing, the sigmoid, the labels written in region order
        (later regions overwrite earlier ones), the crop undone. nnU-Net resamples channel by channel and the
        sigmoid is elementwise, so the numbers are the same; but only one head is held at full resolution, where
        nnU-Net holds every head's resampled logits and probabilities at once, then an uncropped copy of all the
        probabilities (0.66 GB above the rest on a 1 mm whole spine with the 9 heads of the demo step 1; 0.17 GB
        head by head). Used only where the logits are resampled: without resampling the logits may be a strided
        view, and a sigmoid of one head of it can differ from nnU-Net's in the last bit of a few voxels
        (vectorised against scalar tails), so those keep nnU-Net's export.
        """
        import torch

        manager, configuration = self.label_manager, self.configuration_manager
        shape = properties["shape_after_cropping_and_before_resampling"]
        spacing = [properties["spacing"][i] for i in self.plans_manager.transpose_forward]
        current_spacing = configuration.spacing if len(configuration.spacing) == len(shape) else \
            [spacing[0], *configuration.spacing]
        label_of_head = {head: label for label, head in self._head_of_label().items() if label in wanted}
        labels = np.zeros(shape, dtype=np.uint8)
        maps: dict[int, np.ndarray] = {}
        old_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            for head, value in enumerate(manager.regions_class_order):
                resampled = configuration.resampling_fn_probabilities(logits[head:head + 1], shape, current_spacing,
                                                                      spacing)
                probability = manager.apply_inference_nonlin(resampled)[0].numpy()
                del resampled
                labels[probability > 0.5] = int(value)
                if head in label_of_head:
                    maps[label_of_head[head]] = probability
                del probability
        finally:
            torch.set_num_threads(old_threads)
        return self._revert_crop(labels, maps if wanted else None, properties)

    def _revert_crop(self, labels: np.ndarray, maps: dict[int, np.ndarray] | None,
                     properties: dict) -> tuple[np.ndarray, dict[int, np.ndarray] | None]:
        """Labels and probability maps of the cropped grid back on the input's (labels still in nnU-Net's axes)."""
        from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image

        manager = self.label_manager
        bbox, shape = properties["bbox_used_for_cropping"], properties["shape_before_cropping"]
        backward = self.plans_manager.transpose_backward
        segmentation = insert_crop_into_image(np.zeros(shape, dtype=np.uint8), labels, bbox).transpose(backward)
        if maps is not None:
            background = {int(v) for v in manager.all_labels[:1]} if not manager.has_regions else set()
            maps = {label: nnunet_to_ras_axes(insert_crop_into_image(
                np.full(shape, 1.0 if label in background else 0.0, dtype=np.float32), m, bbox).transpose(backward))
                for label, m in maps.items()}
        return segmentation, maps

    def _outputs_on_device(self, logits: torch.Tensor, properties: dict,
                           wanted: list[int]) -> tuple[np.ndarray, dict[int, np.ndarray] | None]:
        """The same computation as `_outputs_by_nnunet` where no resampling is needed, on the logits' device.

        nnU-Net's export moves the logits of every head to the CPU first. Here the nonlinearity and the labels
        (region order or argmax) are computed where the logits are, the same way, and only the uint8 labels and
        the probability maps asked for cross to the CPU. Where the plans' spacing differs from the image's, nnU-Net
        resamples the logits with scipy/skimage; a GPU resampling would not give the same numbers, so those cases
        go through `_outputs_by_nnunet`.
        """
        import torch

        manager = self.label_manager
        with torch.inference_mode():
            probabilities = manager.apply_inference_nonlin(logits) if wanted or manager.has_regions else None
            if manager.has_regions:
                labels = torch.zeros(logits.shape[1:], dtype=torch.uint8, device=logits.device)
                for head, value in enumerate(manager.regions_class_order):
                    labels[probabilities[head] > 0.5] = int(value)
            else:  # nnU-Net takes the argmax of the probabilities when it returns them, else of the logits
                labels = (probabilities if wanted else logits).argmax(0).to(torch.uint8)
            del logits
            labels = labels.cpu().numpy()
            maps = None
            if wanted:
                heads = self._head_of_label()
                maps = {label: probabilities[heads[label]].float().cpu().numpy() for label in wanted}
            del probabilities
        return self._revert_crop(labels, maps, properties)

    def _to_nnunet(self, image_channels: np.ndarray, spacing: Sequence[float] | None,
                   affine: np.ndarray | None) -> tuple[np.ndarray, dict]:
        image_channels = np.asarray(image_channels)
        if image_channels.ndim != 4 or image_channels.shape[0] != self.n_channels:
            raise ValueError(f"expected a (C, X, Y, Z) array with C = {self.n_channels}, "
                             f"got shape {image_channels.shape}")
        spacing = _spacing(spacing, affine)
        data, nnunet_spacing = ras_to_nnunet_axes(image_channels, spacing)
        return data, {"spacing": nnunet_spacing}

    def _wanted_labels(self, return_probabilities: bool | Sequence[int]) -> list[int]:
        if return_probabilities is True:
            return self.label_values
        if return_probabilities is False or return_probabilities is None:
            return []
        wanted = [int(v) for v in return_probabilities]
        unknown = sorted(set(wanted) - set(self._head_of_label()))
        if unknown:
            raise ValueError(f"no output for label(s) {unknown}; the model has {sorted(self._head_of_label())}")
        return wanted

    def _head_of_label(self) -> dict[int, int]:
        if self.label_manager.has_regions:
            return {label: head for head, label in enumerate(self.label_values)}
        # softmax models have a head for every label, background included
        return {int(label): head for head, label in enumerate(self.label_manager.all_labels)}

    def _probability_maps(self, probabilities: np.ndarray, wanted: list[int]) -> dict[int, np.ndarray]:
        heads = self._head_of_label()
        return {label: nnunet_to_ras_axes(probabilities[heads[label]]).astype(np.float32, copy=False)
                for label in wanted}


def load_model(folder: str | os.PathLike | ModelFolder, fold: int | str = 0, checkpoint: str | None = None,
               device: str = "auto", threads: int | None = None, precision: str = "fp32",
               tile_step: float = TILE_STEP_DEFAULT, backend: str = "torch") -> LoadedModel:
    """Load ``fold`` of a trained-model folder; ``checkpoint`` defaults to best, then final.

    ``threads``: CPU threads for torch, as `totalspineseg.runtime.resolve_threads` settles them (never more than
    the CPUs this process may use; without it, OMP_NUM_THREADS, else all of them).
    ``precision``: ``auto``, ``fp32``, ``bf16`` or ``fp16``, as `totalspineseg.runtime.resolve_precision` settles it.
    ``tile_step``: the sliding-window step as a fraction of the patch, in (0, 1]; 0.5 (nnU-Net's default) overlaps
    neighbouring tiles by half a patch, larger steps run fewer tiles with less averaging at the seams.
    ``backend``: ``torch`` or ``openvino``, checked by `totalspineseg.openvino_backend.resolve_backend`.
    """
    import torch

    from .openvino_backend import resolve_backend

    tile_step = check_tile_step(tile_step)  # before minutes of loading

    folder = folder if isinstance(folder, ModelFolder) else ModelFolder.open(folder)
    _check_supported(folder)
    torch_device = resolve_device(device)
    resolved_precision = resolve_precision(precision, torch_device.type)
    resolved_backend = resolve_backend(backend, torch_device.type, resolved_precision)
    n_threads = resolve_threads(threads)
    if torch_device.type == "cpu":
        torch.set_num_threads(n_threads)

    checkpoint_path = folder.checkpoint_path(fold, checkpoint)
    content = read_checkpoint(checkpoint_path, mmap=True)
    configuration = _configuration_name(folder, content)
    trainer_name = str(content.get("trainer_name") or (folder.name_parts or ("unknown",))[0])
    weights = _strip_wrapper_prefixes(content["network_weights"])
    del content

    network = _build_network(folder, configuration)
    try:
        network.load_state_dict(weights)
    except RuntimeError as exc:
        raise WeightsError(f"{checkpoint_path}: weights do not fit the network of plans.json ({exc})") from exc
    del weights
    network.to(torch_device).eval()
    # the predictor reloads these before each prediction: hand it the network's own tensors, not a second copy
    model = LoadedModel(folder, network, network.state_dict(), configuration, trainer_name, torch_device, n_threads,
                        resolved_precision, tile_step, resolved_backend)
    if resolved_backend == "openvino":
        model._use_openvino(checkpoint_path)
    return model


def _check_supported(folder: ModelFolder) -> None:
    reader = folder.plans.get("image_reader_writer")
    if reader not in _AXIS_REVERSING_READERS:
        raise WeightsError(f"{folder.path / PLANS_JSON}: image_reader_writer {reader!r} is not supported "
                           f"(supported: {', '.join(sorted(_AXIS_REVERSING_READERS))})")
    if not folder.dataset_json.get("channel_names"):
        raise WeightsError(f"{folder.path / DATASET_JSON}: no channel_names")
    if max(_label_values(folder.dataset_json)) > 255:
        raise WeightsError(f"{folder.path / DATASET_JSON}: label values above 255 do not fit a uint8 label map")


def _label_values(dataset_json: dict) -> list[int]:
    values = []
    for value in dataset_json.get("labels", {}).values():
        values.extend(value if isinstance(value, (list, tuple)) else [value])
    return [int(v) for v in values] or [0]


def _configuration_name(folder: ModelFolder, content: dict) -> str:
    init_args = content.get("init_args") or {}
    name = init_args.get("configuration") or (folder.name_parts or (None, None, None))[2]
    if name not in folder.plans.get("configurations", {}):
        raise WeightsError(f"{folder.path / PLANS_JSON}: configuration {name!r} not in the plans")
    if folder.plans["configurations"][name].get("previous_stage"):
        raise WeightsError(f"{folder.path}: cascade configurations ({name}) are not supported")
    return name


def _strip_wrapper_prefixes(weights: dict[str, Any]) -> dict[str, Any]:
    """Remove the key prefixes that torch.compile (``_orig_mod.``) and DDP (``module.``) add, in any nesting."""
    prefixes = ("_orig_mod.", "module.")
    while weights:
        prefix = next((p for p in prefixes if all(key.startswith(p) for key in weights)), None)
        if prefix is None:
            return weights
        weights = {key[len(prefix):]: value for key, value in weights.items()}
    return weights


def _build_network(folder: ModelFolder, configuration: str) -> torch.nn.Module:
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(folder.plans)
    manager = plans_manager.get_configuration(configuration)
    with nnunet_output():
        n_inputs = determine_num_input_channels(plans_manager, manager, folder.dataset_json)
        n_outputs = plans_manager.get_label_manager(folder.dataset_json).num_segmentation_heads
    class_name = _locate_architecture(manager.network_arch_class_name, folder)
    return get_network_from_plans(class_name, manager.network_arch_init_kwargs,
                                  manager.network_arch_init_kwargs_req_import, n_inputs, n_outputs,
                                  allow_init=False, deep_supervision=False)


def _locate_architecture(class_name: str, folder: ModelFolder) -> str:
    """The importable dotted name of the network class.

    nnU-Net's own fallback for a class that moved walks every architecture module, and one of them imports
    timm, so look only where the U-Nets live.
    """
    if pydoc.locate(class_name) is not None:
        return class_name
    short_name = class_name.rsplit(".", 1)[-1]
    for module in _ARCHITECTURE_MODULES:
        if pydoc.locate(f"{module}.{short_name}") is not None:
            return f"{module}.{short_name}"
    raise WeightsError(f"{folder.path / PLANS_JSON}: network class {class_name!r} not found")


def _no_resampling(logits: torch.Tensor, properties: dict) -> bool:
    """Whether nnU-Net's export would leave the logits as they are (the plans' spacing is the image's)."""
    return tuple(logits.shape[1:]) == tuple(int(n) for n in properties["shape_after_cropping_and_before_resampling"])


def _spacing(spacing: Sequence[float] | None, affine: np.ndarray | None) -> tuple[float, ...]:
    if affine is not None:
        import nibabel as nib

        if nib.aff2axcodes(affine) != ("R", "A", "S"):
            raise ValueError(f"the image must be in RAS+ orientation, its affine is {''.join(nib.aff2axcodes(affine))}")
        affine_spacing = tuple(float(v) for v in nib.affines.voxel_sizes(affine))
        if spacing is not None and not np.allclose(spacing, affine_spacing, rtol=1e-4):
            raise ValueError(f"spacing {tuple(spacing)} disagrees with the affine's {affine_spacing}")
        spacing = affine_spacing
    spacing = (1.0, 1.0, 1.0) if spacing is None else tuple(float(v) for v in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive numbers, got {spacing}")
    return spacing


def ras_to_nnunet_axes(image_channels: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, list[float]]:
    """``(C, X, Y, Z)`` RAS+ array and spacing -> what nnU-Net's NIfTI readers give for that image saved as NIfTI.

    A view: nnU-Net's preprocessor makes its own float32 copy.
    """
    return image_channels.transpose(0, 3, 2, 1), [float(s) for s in reversed(spacing)]


def nnunet_to_ras_axes(array: np.ndarray) -> np.ndarray:
    """One ``(Z, Y, X)`` map in nnU-Net's reader order back to a contiguous RAS+ ``(X, Y, Z)`` array."""
    return np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0))


def _read_json(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise WeightsError(f"{path}: missing from the model folder") from exc
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: unreadable ({exc})") from exc
