"""Training path: nnU-Net datasets from labelled data, thin nnU-Net plan/preprocess/train wrappers, release zips.

Datasets follow upstream TotalSpineSeg (reference §7.2):

* ``Dataset101_TotalSpineSeg_step1``: the image on the canonical (RAS+) 1 mm grid, labels in step-1 classes.
* ``Dataset102_TotalSpineSeg_step2``: the same image cropped to the spine plus 10 mm, a second channel marking every
  other disc, labels in step-2 classes. Each case is written twice: once with the discs above odd vertebrae marked
  and odd vertebrae in class 7, once (``_o2e``) with the discs above even vertebrae marked and the vertebra classes
  swapped. In both copies class 7 is the vertebra right below a marked disc, which is what lets inference start the
  alternation at whichever disc is on top.

nnU-Net itself is only driven through its Python API (trainer class ``nnUNetTrainer``, so that checkpoints load
without the optional timm/torchvision packages). Functions that reach nnU-Net's process pools must run under an
``if __name__ == "__main__":`` guard; the ``totalspineseg-train`` command is one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import random
import re
import shutil
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import labels as L
from .. import volume
from ..errors import InputError, TotalSpineSegError, WeightsError
from ..weights import STEP_DATASETS

log = logging.getLogger(__name__)

DATASET_IDS = {1: 101, 2: 102}
DATASET_NAMES = {101: STEP_DATASETS["step1"], 102: STEP_DATASETS["step2"]}
CHANNEL_NAMES = {1: {"0": "MRI"}, 2: {"0": "MRI", "1": "noNorm"}}
DEFAULT_LABELS_PATTERN = "derivatives/labels/sub-*/[ses-*/]anat/*_desc-spine_dseg.nii.gz"
CROP_MARGIN_MM = 10.0
SWAPPED_SUFFIX = "_o2e"
FILE_ENDING = ".nii.gz"
TRAINER = "nnUNetTrainer"
CONFIGURATION = "3d_fullres"
PLANNERS = {
    "ResEncL": "nnUNetPlannerResEncL",
    "ResEncM": "nnUNetPlannerResEncM",
    "ResEncXL": "nnUNetPlannerResEncXL",
    "default": "ExperimentPlanner",
}
# Keys of an nnU-Net checkpoint that inference needs; the optimizer and grad-scaler states are for resuming only.
CHECKPOINT_KEEP = ("network_weights", "init_args", "trainer_name", "current_epoch", "inference_allowed_mirroring_axes")
#: A network small enough to train in seconds on a CPU (tests, dry runs).
TINY_OVERRIDE = {"features_per_stage": [4, 8, 16, 32], "n_conv_per_stage": 1, "n_conv_per_stage_decoder": 1,
                 "batch_size": 2, "patch_size": [32, 32, 32]}

# "sub-01_T2w_desc-spine_dseg" -> "sub-01_T2w" (also upstream's "_label-spine_dseg")
_DSEG_ENTITIES = re.compile(r"(_(desc|label)-[A-Za-z0-9]+)*_dseg$")
_OPTIONAL_SEGMENT = re.compile(r"\[([^\[\]]*/)\]")


# --------------------------------------------------------------------------------------------------
# dataset.json


def _region(*classes) -> list[int]:
    return [int(c) for c in classes]


def _disc_regions(s) -> dict:
    """The disc entries, identical in both steps: all discs, then each landmark disc alone."""
    return {
        "disc": _region(s.DISC, s.DISC_C2_C3, s.DISC_C7_T1, s.DISC_T12_L1, s.DISC_L5_S),
        "disc_C2_C3": int(s.DISC_C2_C3), "disc_C7_T1": int(s.DISC_C7_T1),
        "disc_T12_L1": int(s.DISC_T12_L1), "disc_L5_S": int(s.DISC_L5_S),
    }


def dataset_labels(step: int) -> dict:
    """The region-based ``labels`` entry of upstream's dataset_step1.json / dataset_step2.json.

    The key order is the region order of the network's outputs, so it must not change.
    """
    s = L.Step1 if step == 1 else L.Step2
    if step == 1:
        bone = {"vertebrae": _region(s.VERTEBRA, s.C1), "vertebrae_C1": int(s.C1)}
    else:
        bone = {"vertebrae": _region(s.VERTEBRA, s.VERTEBRA_ODD, s.VERTEBRA_EVEN, s.SACRUM),
                "vertebrae_O": int(s.VERTEBRA_ODD), "vertebrae_E": int(s.VERTEBRA_EVEN), "sacrum": int(s.SACRUM)}
    return {"background": 0, **_disc_regions(s), **bone, "canal": _region(s.CANAL, s.CORD), "cord": int(s.CORD)}


def dataset_json(step: int, n_cases: int) -> dict:
    labels = dataset_labels(step)
    # Each region is written as its lowest class; later regions overwrite earlier ones.
    order = [min(v) if isinstance(v, list) else v for k, v in labels.items() if k != "background"]
    return {
        "name": DATASET_NAMES[DATASET_IDS[step]],
        "description": f"TotalSpineSeg step-{step} model (prepared by totalspineseg-train)",
        "channel_names": CHANNEL_NAMES[step],
        "labels": labels,
        "regions_class_order": order,
        "numTraining": int(n_cases),
        "file_ending": FILE_ENDING,
    }


# --------------------------------------------------------------------------------------------------
# Finding image/label pairs in a BIDS dataset


@dataclass(frozen=True)
class Pair:
    name: str  # the nnU-Net case name: the image file name without extension
    image: Path
    labels: Path


def expand_pattern(pattern: str) -> list[str]:
    """Glob patterns for a pattern with optional ``[segment/]`` parts (``sub-*/[ses-*/]anat``: with and without)."""
    match = _OPTIONAL_SEGMENT.search(pattern)
    if match is None:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end():]
    return [p for middle in ("", match.group(1)) for p in expand_pattern(head + middle + tail)]


def image_for_labels(bids_dir: Path, label_path: Path) -> Path:
    """The raw image a derivative label file belongs to, in the same ``sub-*/[ses-*/]anat`` folder.

    The label name minus its dseg entities is either the image name (upstream: ``sub-01_T2w_label-spine_dseg``)
    or the image's entities without its suffix (BIDS derivatives: ``sub-01_desc-spine_dseg`` for ``sub-01_T2w``).
    Raises LookupError with the reason when there is no image or more than one.
    """
    parts = label_path.relative_to(bids_dir).parts
    start = next((i for i, p in enumerate(parts) if p.startswith("sub-")), None)
    if start is None:
        raise LookupError("not inside a sub-* folder")
    stem = _DSEG_ENTITIES.sub("", _strip_nifti(parts[-1]))
    folder = bids_dir.joinpath(*parts[start:-1])
    images = [p for p in folder.glob(f"{stem}*.nii*") if p.is_file() and p.name.endswith((".nii", ".nii.gz"))]
    exact = [p for p in images if _strip_nifti(p.name) == stem]
    with_suffix = [p for p in images if re.fullmatch(re.escape(stem) + r"_[A-Za-z0-9]+", _strip_nifti(p.name))]
    found = exact or with_suffix
    if not found:
        raise LookupError("no matching image in the raw dataset")
    if len(found) > 1:
        raise LookupError(f"several matching images ({', '.join(sorted(p.name for p in found))})")
    return found[0]


def _strip_nifti(name: str) -> str:
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def find_pairs(bids_dir, pattern: str = DEFAULT_LABELS_PATTERN) -> tuple[list[Pair], list[tuple[Path, str]]]:
    """Image/label pairs of a BIDS dataset, and the label files that could not be paired (with the reason)."""
    bids_dir = Path(bids_dir)
    if not bids_dir.is_dir():
        raise InputError(bids_dir, "no such folder")
    label_files = sorted({p for g in expand_pattern(pattern) for p in bids_dir.glob(g) if p.is_file()})
    pairs: dict[str, Pair] = {}
    problems: list[tuple[Path, str]] = []
    for label_path in label_files:
        try:
            image = image_for_labels(bids_dir, label_path)
        except LookupError as exc:
            problems.append((label_path, str(exc)))
            continue
        name = _strip_nifti(image.name)
        if name in pairs:
            problems.append((label_path, f"a second label file for {name}"))
            continue
        pairs[name] = Pair(name, image, label_path)
    return list(pairs.values()), problems


# --------------------------------------------------------------------------------------------------
# One case, on the network grid


@dataclass
class GridCase:
    """An image and its final-scheme labels on the canonical grid of the network."""

    image: np.ndarray  # float32 (X, Y, Z), RAS+
    seg: np.ndarray  # uint8, same grid
    affine: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        return volume.voxel_sizes(self.affine)


def load_pair(pair: Pair) -> tuple[volume.Volume, volume.Volume]:
    """Load and cross-check an image and its labels; raises InputError for anything unusable."""
    image = volume.load_volume(pair.image)
    seg = volume.load_labels(pair.labels)
    check_pair(image, seg)
    return image, seg


def check_pair(image: volume.Volume, seg: volume.Volume) -> None:
    where = seg.path or "labels"
    if image.shape[:3] != seg.shape[:3]:
        raise InputError(where, f"shape {seg.shape[:3]} differs from the image's {image.shape[:3]}")
    if not np.allclose(image.affine, seg.affine, rtol=0, atol=1e-3):
        raise InputError(where, "affine (voxel-to-world) differs from the image's")
    if seg.data.max(initial=0) > 255:
        raise InputError(where, f"label value {int(seg.data.max())} is not in the final label scheme")
    if not seg.data.any():
        raise InputError(where, "empty segmentation")
    unknown = sorted(set(np.unique(seg.data).tolist()) - set(L.final_to_step1_table()) - {0})
    if unknown:
        log.warning("%s: label values %s are not used for training (written as background)", where, unknown)


def to_network_grid(image: volume.Volume, seg: volume.Volume, spacing=1.0) -> GridCase:
    """The image (linear) and labels (nearest) on the canonical grid at `spacing` mm."""
    data, affine = volume.to_iso(image, spacing)
    labels = volume.resample_to_grid(seg.data.astype(np.uint8), seg.affine, data.shape, affine, "labels")
    return GridCase(data, labels, affine)


def step1_case(case: GridCase) -> tuple[list[np.ndarray], np.ndarray]:
    return [case.image], L.final_to_step1(case.seg)


def disc_rank(disc: int, has_l6: bool) -> int:
    """Running index (C1 = 1) of the vertebra below a disc; below L5-S that is one more than the last lumbar."""
    if disc == L.DISC_L5_S:
        last_lumbar = L.VERTEBRA_L6 if has_l6 else L.vertebra_above_disc(disc)
        return L.running_index(last_lumbar) + 1
    return L.running_index(L.vertebra_below_disc(disc))


def alternate_disc_mask(seg: np.ndarray, mark_odd: bool) -> np.ndarray:
    """Step-2 channel 1 for training: the discs directly above odd (or even) vertebrae.

    With every disc present this is upstream's alternation (every other disc, the phase fixed by the parity);
    it stays right where a disc is missing, so that class 7 is always the vertebra below a marked disc.
    """
    present = [int(v) for v in np.unique(seg) if int(v) in L.DISCS_POSSIBLE]
    has_l6 = bool(np.isin(seg, (L.VERTEBRA_L6, L.DISC_L5_L6)).any())
    wanted = 1 if mark_odd else 0
    marked = [d for d in present if disc_rank(d, has_l6) % 2 == wanted]
    return np.isin(seg, marked).astype(np.uint8)


def step2_cases(case: GridCase) -> list[tuple[str, list[np.ndarray], np.ndarray, np.ndarray]]:
    """(name suffix, channels, labels, affine) of the two step-2 copies, cropped to the spine plus 10 mm."""
    margin = int(math.ceil(CROP_MARGIN_MM / float(case.spacing.min()) - 1e-6))
    image, affine, slices = volume.crop_to_mask(case.image, case.seg != 0, case.affine, margin)
    seg = case.seg[slices]
    out = []
    for swap in (False, True):
        mask = alternate_disc_mask(seg, mark_odd=not swap)
        out.append((SWAPPED_SUFFIX if swap else "", [image, mask], L.final_to_step2(seg, swap_parity=swap), affine))
    return out


# --------------------------------------------------------------------------------------------------
# Writing nnU-Net raw datasets


def create_dataset(raw_dir, step: int, overwrite: bool = False) -> Path:
    """An empty nnU-Net raw dataset folder (imagesTr/, labelsTr/) for one step."""
    folder = Path(raw_dir) / DATASET_NAMES[DATASET_IDS[step]]
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise TotalSpineSegError(f"{folder} already exists and is not empty (use --overwrite)")
        shutil.rmtree(folder)
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(exist_ok=True)
    return folder


def save_case(raw_dir, step: int, name: str, channels: Sequence[np.ndarray], labels: np.ndarray,
              affine: np.ndarray) -> None:
    folder = Path(raw_dir) / DATASET_NAMES[DATASET_IDS[step]]
    for i, channel in enumerate(channels):
        dtype = np.float32 if CHANNEL_NAMES[step][str(i)] == "MRI" else np.uint8
        volume.save_nifti(folder / "imagesTr" / f"{name}_{i:04d}{FILE_ENDING}", channel, affine, dtype)
    volume.save_nifti(folder / "labelsTr" / f"{name}{FILE_ENDING}", labels, affine, np.uint8)


def write_case(raw_dir, steps: Iterable[int], name: str, case: GridCase) -> None:
    """Write one case into the dataset of each step (step 2: both odd/even copies)."""
    steps = set(steps)
    if 1 in steps:
        channels, labels = step1_case(case)
        save_case(raw_dir, 1, name, channels, labels, case.affine)
    if 2 in steps:
        for suffix, channels, labels, affine in step2_cases(case):
            save_case(raw_dir, 2, name + suffix, channels, labels, affine)


def finish_dataset(raw_dir, step: int) -> Path:
    """Write dataset.json, counting the cases in labelsTr/; returns the dataset folder."""
    folder = Path(raw_dir) / DATASET_NAMES[DATASET_IDS[step]]
    n_cases = len(list((folder / "labelsTr").glob(f"*{FILE_ENDING}")))
    (folder / "dataset.json").write_text(json.dumps(dataset_json(step, n_cases), indent=4) + "\n")
    return folder


@dataclass
class PrepareReport:
    written: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    datasets: list[Path] = field(default_factory=list)


def prepare(bids_dir, raw_dir, steps: Iterable[int] = (1, 2), pattern: str = DEFAULT_LABELS_PATTERN,
            spacing: float = 1.0, overwrite: bool = False, progress: bool = True) -> PrepareReport:
    """Write the step-1/step-2 nnU-Net raw datasets of a labelled BIDS dataset.

    Unreadable or mismatched pairs are logged and listed in the report, never used.
    """
    pairs, problems = find_pairs(bids_dir, pattern)
    report = PrepareReport(skipped=list(problems))
    if not pairs:
        raise TotalSpineSegError(f"{bids_dir}: no image/label pairs match {pattern}")
    steps = sorted(set(steps))
    for step in steps:
        create_dataset(raw_dir, step, overwrite)
    for pair in tqdm(pairs, desc="Preparing cases", unit="case", disable=not progress):
        try:
            image, seg = load_pair(pair)
            case = to_network_grid(image, seg, spacing)
        except (InputError, ValueError) as exc:
            report.skipped.append((pair.labels, str(exc)))
            continue
        write_case(raw_dir, steps, pair.name, case)
        report.written.append(pair.name)
    for path, reason in report.skipped:
        log.warning("skipped %s: %s", path, reason)
    if not report.written:
        raise TotalSpineSegError(f"{bids_dir}: none of the {len(pairs)} image/label pairs is usable")
    report.datasets = [finish_dataset(raw_dir, step) for step in steps]
    return report


def grouped_splits(identifiers: Iterable[str], n_folds: int = 5, seed: int = 12345) -> list[dict]:
    """nnU-Net cross-validation splits that keep a case and its ``_o2e`` copy in the same fold."""
    groups = sorted({i.removesuffix(SWAPPED_SUFFIX) for i in identifiers})
    order = np.random.default_rng(seed).permutation(len(groups))
    ids = sorted(identifiers)
    splits = []
    for fold in range(n_folds):
        val_groups = {groups[i] for i in order[fold::n_folds]}
        val = [i for i in ids if i.removesuffix(SWAPPED_SUFFIX) in val_groups]
        splits.append({"train": [i for i in ids if i not in set(val)], "val": val})
    return splits


# --------------------------------------------------------------------------------------------------
# nnU-Net: environment, planning, preprocessing


@dataclass(frozen=True)
class NnUNetDirs:
    """``raw/``, ``preprocessed/`` and ``results/`` in one folder, as upstream's $TOTALSPINESEG_DATA/nnUNet."""

    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def preprocessed(self) -> Path:
        return self.root / "preprocessed"

    @property
    def results(self) -> Path:
        return self.root / "results"

    def model_folder(self, dataset_id: int, plans: str, configuration: str = CONFIGURATION,
                     trainer: str = TRAINER) -> Path:
        return self.results / DATASET_NAMES[dataset_id] / f"{trainer}__{plans}__{configuration}"


@contextlib.contextmanager
def nnunet_env(dirs: NnUNetDirs, **settings: str) -> Iterator[None]:
    """nnU-Net's folder variables (and `settings`, unless the user set them), restored afterwards.

    nnU-Net reads these variables whenever it uses them, so setting them around the calls is enough.
    """
    wanted = {"nnUNet_raw": str(dirs.raw), "nnUNet_preprocessed": str(dirs.preprocessed),
              "nnUNet_results": str(dirs.results)}
    wanted |= {k: v for k, v in settings.items() if k not in os.environ}
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def plan_and_preprocess(dirs: NnUNetDirs, dataset_id: int, planner: str = "ResEncL", plans_name: str = "nnUNetPlans",
                        configuration: str = CONFIGURATION, override: dict | None = None, processes: int = 2,
                        verify: bool = True) -> dict:
    """nnU-Net fingerprint, experiment planning (then `override`), and preprocessing of one configuration."""
    if planner not in PLANNERS:
        raise ValueError(f"unknown planner {planner!r}; choose from {', '.join(PLANNERS)}")
    # n_proc_DA must be >= 1 here: the planners' memory estimate calls torch.set_num_threads with it.
    with nnunet_env(dirs, nnUNet_n_proc_DA=str(processes), nnUNet_def_n_proc=str(processes)):
        from nnunetv2.experiment_planning.plan_and_preprocess_api import (
            extract_fingerprint_dataset,
            plan_experiment_dataset,
            preprocess_dataset,
        )

        _check_raw(dirs, dataset_id)
        with _quiet_stdout():
            extract_fingerprint_dataset(dataset_id, num_processes=processes, check_dataset_integrity=verify,
                                        clean=True, verbose=False)
            _, identifier = plan_experiment_dataset(dataset_id, _planner_class(planner),
                                                    overwrite_plans_name=plans_name)
        plans_file = dirs.preprocessed / DATASET_NAMES[dataset_id] / f"{identifier}.json"
        plans = json.loads(plans_file.read_text())
        if configuration not in plans["configurations"]:
            raise TotalSpineSegError(f"the {planner} planner made no {configuration!r} configuration "
                                     f"(it made {', '.join(plans['configurations'])})")
        if override:
            plans = apply_plans_override(plans, configuration, override)
            plans_file.write_text(json.dumps(plans, indent=4))
        with _quiet_stdout():
            preprocess_dataset(dataset_id, identifier, configurations=(configuration,), num_processes=(processes,))
    return plans


def _check_raw(dirs: NnUNetDirs, dataset_id: int) -> None:
    folder = dirs.raw / DATASET_NAMES[dataset_id]
    if not (folder / "dataset.json").is_file():
        raise TotalSpineSegError(f"{folder}: no nnU-Net raw dataset (run totalspineseg-train prepare first)")


def _planner_class(name: str):
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.experiment_planning.experiment_planners.residual_unets import residual_encoder_unet_planners as res

    return ExperimentPlanner if name == "default" else getattr(res, PLANNERS[name])


def _not_distutils(record: logging.LogRecord) -> bool:
    return "distutils" not in record.pathname


@contextlib.contextmanager
def _quiet_stdout():
    """nnU-Net prints pages of plans and progress; keep them in the debug log instead.

    Its preprocessing also copies files with distutils, which logs every copy on the root logger.
    """
    buffer = io.StringIO()
    root = logging.getLogger()
    root.addFilter(_not_distutils)
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        root.removeFilter(_not_distutils)
        for line in buffer.getvalue().splitlines():
            if line.strip():
                log.debug("nnU-Net: %s", line.rstrip())


def apply_plans_override(plans: dict, configuration: str, override: dict) -> dict:
    """Shrink or reshape one configuration of nnU-Net plans.

    Keys: ``features_per_stage`` (sets the number of stages), ``n_conv_per_stage`` and ``n_conv_per_stage_decoder``
    (int or list; blocks per stage for residual encoders), ``patch_size``, ``batch_size``, ``spacing`` (mm, in the
    plans' axis order). Strides are recomputed (halve an axis while its feature map stays at least 4 voxels) and
    the patch is rounded up to a multiple of them. Changing the spacing gives the configuration its own data
    identifier, so that its preprocessed data is kept apart.
    """
    unknown = set(override) - {"features_per_stage", "n_conv_per_stage", "n_conv_per_stage_decoder", "patch_size",
                               "batch_size", "spacing"}
    if unknown:
        raise ValueError(f"unknown plans override key(s): {', '.join(sorted(unknown))}")
    plans = json.loads(json.dumps(plans))
    cfg = plans["configurations"][configuration]
    arch = cfg["architecture"]["arch_kwargs"]
    features = [int(f) for f in override.get("features_per_stage", arch["features_per_stage"])]
    n_stages = len(features)
    patch = [int(p) for p in override.get("patch_size", cfg["patch_size"])]
    strides = _strides(patch, n_stages)
    total = np.prod(np.asarray(strides), axis=0)
    cfg["patch_size"] = [int(math.ceil(p / t) * t) for p, t in zip(patch, total, strict=False)]
    blocks_key = "n_blocks_per_stage" if "n_blocks_per_stage" in arch else "n_conv_per_stage"
    arch.update(n_stages=n_stages, features_per_stage=features, strides=strides,
                kernel_sizes=[[3] * len(patch)] * n_stages)
    arch[blocks_key] = _per_stage(override.get("n_conv_per_stage", arch[blocks_key]), n_stages)
    arch["n_conv_per_stage_decoder"] = _per_stage(
        override.get("n_conv_per_stage_decoder", arch["n_conv_per_stage_decoder"]), n_stages - 1)
    if "batch_size" in override:
        cfg["batch_size"] = int(override["batch_size"])
    if "spacing" in override:
        cfg["spacing"] = [float(s) for s in override["spacing"]]
        cfg["data_identifier"] = f"{plans['plans_name']}_{configuration}"
    return plans


def _strides(patch: Sequence[int], n_stages: int) -> list[list[int]]:
    strides, size = [[1] * len(patch)], np.asarray(patch, dtype=float)
    for _ in range(n_stages - 1):
        step = [2 if s / 2 >= 4 else 1 for s in size]
        size = size / step
        strides.append(step)
    return strides


def _per_stage(value, n: int) -> list[int]:
    if isinstance(value, (int, np.integer)):
        return [int(value)] * n
    value = [int(v) for v in value]
    return (value + [value[-1]] * n)[:n]


def write_splits(dirs: NnUNetDirs, dataset_id: int, n_folds: int = 5, seed: int = 12345,
                 overwrite: bool = False) -> Path:
    """splits_final.json for the preprocessed dataset, keeping odd/even copies together (unless one exists)."""
    folder = dirs.preprocessed / DATASET_NAMES[dataset_id]
    path = folder / "splits_final.json"
    if path.is_file() and not overwrite:
        return path
    labels = (dirs.raw / DATASET_NAMES[dataset_id] / "labelsTr").glob(f"*{FILE_ENDING}")
    identifiers = [p.name[: -len(FILE_ENDING)] for p in labels]
    path.write_text(json.dumps(grouped_splits(identifiers, n_folds, seed), indent=2))
    return path


# --------------------------------------------------------------------------------------------------
# nnU-Net: training


@dataclass(frozen=True)
class TrainSettings:
    epochs: int | None = None  # None: nnU-Net's defaults (1000 epochs of 250 + 50 iterations)
    iterations_per_epoch: int | None = None
    val_iterations_per_epoch: int | None = None
    seed: int | None = 0
    continue_training: bool = False
    save_every: int | None = None
    oversample_foreground: float | None = None  # share of patches centred on a structure (nnU-Net: 0.33)


def resolve_train_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise TotalSpineSegError("--device cuda: CUDA is not available")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}: use auto, cpu or cuda")
    return device


def train(dirs: NnUNetDirs, dataset_id: int, plans_name: str = "nnUNetPlans", configuration: str = CONFIGURATION,
          fold: int = 0, device: str = "auto", settings: TrainSettings = TrainSettings(),
          threads: int | None = None) -> Path:
    """Train one fold with ``nnUNetTrainer`` and return the trained-model folder. No final validation is run."""
    import torch

    device = resolve_train_device(device)
    env = {"nnUNet_compile": "f", "nnUNet_def_n_proc": "1"}
    if device == "cpu":
        env["nnUNet_n_proc_DA"] = "0"  # the single-threaded augmenter is the fastest on a small CPU
        torch.set_num_threads(threads or _cpu_count())
    with nnunet_env(dirs, **env):
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

        folder = dirs.preprocessed / DATASET_NAMES[dataset_id]
        plans_file = folder / f"{plans_name}.json"
        if not plans_file.is_file():
            raise TotalSpineSegError(f"{plans_file}: no such plans (plan and preprocess first)")
        plans = json.loads(plans_file.read_text())
        plans["continue_training"] = settings.continue_training
        dataset = json.loads((folder / "dataset.json").read_text())
        trainer = nnUNetTrainer(plans, configuration, fold, dataset, device=torch.device(device))
        _configure(trainer, settings)
        if settings.continue_training:
            _resume(trainer)
        _seed_everything(settings.seed)
        trainer.run_training()
    return Path(trainer.output_folder_base)


def _configure(trainer, settings: TrainSettings) -> None:
    # Set before run_training: the learning-rate schedule is built from num_epochs.
    if settings.epochs is not None:
        trainer.num_epochs = settings.epochs
    if settings.iterations_per_epoch is not None:
        trainer.num_iterations_per_epoch = settings.iterations_per_epoch
    if settings.val_iterations_per_epoch is not None:
        trainer.num_val_iterations_per_epoch = settings.val_iterations_per_epoch
    if settings.save_every is not None:
        trainer.save_every = settings.save_every
    if settings.oversample_foreground is not None:
        trainer.oversample_foreground_percent = settings.oversample_foreground
    _disable_mirroring(trainer)


def _disable_mirroring(trainer) -> None:
    """No mirroring in training or inference, as upstream: a flipped spine would swap top and bottom landmarks.

    Patched on the instance so that checkpoints keep the trainer name ``nnUNetTrainer``, which every nnU-Net
    install can look up.
    """
    configure = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size

    def without_mirroring():
        rotation, dummy_2d, initial_patch_size, _ = configure()
        trainer.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch_size, None

    trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size = without_mirroring


def _resume(trainer) -> None:
    fold_dir = Path(trainer.output_folder)
    for name in ("checkpoint_latest.pth", "checkpoint_final.pth"):
        if (fold_dir / name).is_file():
            log.info("continuing from %s", fold_dir / name)
            trainer.load_checkpoint(str(fold_dir / name))
            return
    log.warning("%s: no checkpoint to continue from; starting a new training", fold_dir)


def _seed_everything(seed: int | None) -> None:
    if seed is None:
        return
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------------------------------
# Release zips


def strip_checkpoint(checkpoint: dict) -> dict:
    """An nnU-Net checkpoint without optimizer, grad-scaler and logging state: what inference needs."""
    if "network_weights" not in checkpoint:
        raise WeightsError("not an nnU-Net checkpoint (no network_weights)")
    return {k: checkpoint[k] for k in CHECKPOINT_KEEP if k in checkpoint}


def find_model_folder(dataset_dir: Path, model: str | None = None) -> Path:
    """The ``<Trainer>__<Plans>__<config>`` folder of a results dataset folder (`model` picks one by name)."""
    candidates = sorted(d for d in dataset_dir.glob("*__*__*") if d.is_dir())
    if model is not None:
        candidates = [d for d in candidates if d.name == model]
    if not candidates:
        raise WeightsError(f"{dataset_dir}: no trained model{f' {model}' if model else ''}")
    if len(candidates) > 1:
        names = ", ".join(d.name for d in candidates)
        raise WeightsError(f"{dataset_dir}: several trained models ({names}); choose one with --model")
    return candidates[0]


def export_release(results_dir, out_dir, release: str, fold: int | str = 0, checkpoint: str = "final",
                   model: str | None = None) -> list[Path]:
    """Write ``<Dataset>_<release>.zip`` (and ``.sha256``) for each trained dataset in a results folder.

    A zip holds ``<Dataset>/<Trainer>__<Plans>__<config>/{dataset.json, plans.json, dataset_fingerprint.json,
    fold_N/checkpoint_final.pth}``, the checkpoint stripped of optimizer state (whichever checkpoint it came from).
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    written = []
    for dataset in DATASET_NAMES.values():
        if not (results_dir / dataset).is_dir():
            continue
        written.append(_export_dataset(find_model_folder(results_dir / dataset, model), out_dir, release, fold,
                                       checkpoint))
    if not written:
        raise WeightsError(f"{results_dir}: no {' or '.join(DATASET_NAMES.values())} folder to export")
    return written


def _export_dataset(model_dir: Path, out_dir: Path, release: str, fold, checkpoint: str) -> Path:
    import torch

    from ..predictor import read_checkpoint

    source = model_dir / f"fold_{fold}" / f"checkpoint_{checkpoint}.pth"
    if not source.is_file():
        raise WeightsError(f"{source}: no such checkpoint")
    buffer = io.BytesIO()
    torch.save(strip_checkpoint(read_checkpoint(source)), buffer)
    dataset = model_dir.parent.name
    prefix = f"{dataset}/{model_dir.name}"
    members = {f"{prefix}/{n}": (model_dir / n).read_bytes()
               for n in ("dataset.json", "plans.json", "dataset_fingerprint.json") if (model_dir / n).is_file()}
    members[f"{prefix}/fold_{fold}/checkpoint_final.pth"] = buffer.getvalue()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{dataset}_{release}.zip"
    _write_zip(target, members)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    target.with_name(target.name + ".sha256").write_text(f"{digest}  {target.name}\n")
    return target


def _write_zip(target: Path, members: dict[str, bytes]) -> None:
    """A zip whose bytes depend only on the contents (fixed timestamps), written atomically."""
    tmp = target.with_name(f".{target.name}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(members.items()):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    os.replace(tmp, target)


def unpack_release(zips: Iterable[Path], destination: Path) -> None:
    """Extract release zips into a folder (used to bundle the demo model inside the package)."""
    destination.mkdir(parents=True, exist_ok=True)
    for path in zips:
        with zipfile.ZipFile(path) as zf:
            dataset = zf.namelist()[0].split("/")[0]
            shutil.rmtree(destination / dataset, ignore_errors=True)
            zf.extractall(destination)
