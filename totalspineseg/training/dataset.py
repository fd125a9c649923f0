"""nnU-Net raw datasets from labelled data: dataset.json, image/label pairs in BIDS, the step-1/step-2 cases, splits.

The datasets follow upstream TotalSpineSeg (reference §7.2):

* ``Dataset101_TotalSpineSeg_step1``: the image on the canonical (RAS+) 1 mm grid, labels in step-1 classes.
* ``Dataset102_TotalSpineSeg_step2``: the same image cropped to the spine plus 10 mm, a second channel marking every
  other disc, labels in step-2 classes. Each case is written twice: once with the discs above odd vertebrae marked
  and odd vertebrae in class 7, once (``_o2e``) with the discs above even vertebrae marked and the vertebra classes
  swapped. In both copies class 7 is the vertebra right below a marked disc, which is what lets inference start the
  alternation at whichever disc is on top.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import labels as L
from .. import resample, volume
from ..errors import InputError, TotalSpineSegError
from ..weights import STEP_DATASETS

log = logging.getLogger(__name__)

DATASET_IDS = {1: 101, 2: 102}
DATASET_NAMES = {101: STEP_DATASETS["step1"], 102: STEP_DATASETS["step2"]}
CHANNEL_NAMES = {1: {"0": "MRI"}, 2: {"0": "MRI", "1": "noNorm"}}
DEFAULT_LABELS_PATTERN = "derivatives/labels/sub-*/[ses-*/]anat/*_desc-spine_dseg.nii.gz"
CROP_MARGIN_MM = 10.0
SWAPPED_SUFFIX = "_o2e"
FILE_ENDING = ".nii.gz"

# "sub-01_T2w_desc-spine_dseg" -> "sub-01_T2w" (also upstream's "_label-spine_dseg")
_DSEG_ENTITIES = re.compile(r"(_(desc|label)-[A-Za-z0-9]+)*_dseg$")
_OPTIONAL_SEGMENT = re.compile(r"\[([^\[\]]*/)\]")


# --------------------------------------------------------------------------------------------------
# dataset.json


def _region(*classes: int) -> list[int]:
    return [int(c) for c in classes]


def _disc_regions(s: type[L.Step1] | type[L.Step2]) -> dict[str, int | list[int]]:
    """The disc entries, identical in both steps: all discs, then each landmark disc alone."""
    return {
        "disc": _region(s.DISC, s.DISC_C2_C3, s.DISC_C7_T1, s.DISC_T12_L1, s.DISC_L5_S),
        "disc_C2_C3": int(s.DISC_C2_C3), "disc_C7_T1": int(s.DISC_C7_T1),
        "disc_T12_L1": int(s.DISC_T12_L1), "disc_L5_S": int(s.DISC_L5_S),
    }


def dataset_labels(step: int) -> dict[str, int | list[int]]:
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


#: nnU-Net's ignore label of each step (the highest class + 1): no loss where a partly labelled case has it.
IGNORE_CLASS = {1: int(max(L.Step1)) + 1, 2: int(max(L.Step2)) + 1}


def dataset_json(step: int, n_cases: int, ignore_label: bool = False) -> dict:
    labels = dataset_labels(step)
    # Each region is written as its lowest class; later regions overwrite earlier ones.
    order = [min(v) if isinstance(v, list) else v for k, v in labels.items() if k != "background"]
    if ignore_label:
        labels = {**labels, "ignore": IGNORE_CLASS[step]}
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


def find_pairs(bids_dir: str | os.PathLike,
               pattern: str = DEFAULT_LABELS_PATTERN) -> tuple[list[Pair], list[tuple[Path, str]]]:
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


def to_network_grid(image: volume.Volume, seg: volume.Volume, spacing: float = 1.0) -> GridCase:
    """The image (linear) and labels (nearest) on the canonical grid at `spacing` mm."""
    data, affine = volume.to_iso(image, spacing)
    labels = resample.resample_to_grid(seg.data.astype(np.uint8), seg.affine, data.shape, affine, "labels")
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
    image, affine, slices = resample.crop_to_mask(case.image, case.seg != 0, case.affine, margin)
    seg = case.seg[slices]
    out = []
    for swap in (False, True):
        mask = alternate_disc_mask(seg, mark_odd=not swap)
        out.append((SWAPPED_SUFFIX if swap else "", [image, mask], L.final_to_step2(seg, swap_parity=swap), affine))
    return out


# --------------------------------------------------------------------------------------------------
# Writing nnU-Net raw datasets


def create_dataset(raw_dir: str | os.PathLike, step: int, overwrite: bool = False) -> Path:
    """An empty nnU-Net raw dataset folder (imagesTr/, labelsTr/) for one step."""
    folder = Path(raw_dir) / DATASET_NAMES[DATASET_IDS[step]]
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise TotalSpineSegError(f"{folder} already exists and is not empty (use --overwrite)")
        shutil.rmtree(folder)
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(exist_ok=True)
    return folder


def save_case(raw_dir: str | os.PathLike, step: int, name: str, channels: Sequence[np.ndarray], labels: np.ndarray,
              affine: np.ndarray) -> None:
    folder = Path(raw_dir) / DATASET_NAMES[DATASET_IDS[step]]
    for i, channel in enumerate(channels):
        dtype = np.float32 if CHANNEL_NAMES[step][str(i)] == "MRI" else np.uint8
        volume.save_nifti(folder / "imagesTr" / f"{name}_{i:04d}{FILE_ENDING}", channel, affine, dtype)
    volume.save_nifti(folder / "labelsTr" / f"{name}{FILE_ENDING}", labels, affine, np.uint8)


def write_case(raw_dir: str | os.PathLike, steps: Iterable[int], name: str, case: GridCase) -> None:
    """Write one case into the dataset of each step (step 2: both odd/even copies)."""
    steps = set(steps)
    if 1 in steps:
        channels, labels = step1_case(case)
        save_case(raw_dir, 1, name, channels, labels, case.affine)
    if 2 in steps:
        for suffix, channels, labels, affine in step2_cases(case):
            save_case(raw_dir, 2, name + suffix, channels, labels, affine)


def finish_dataset(raw_dir: str | os.PathLike, step: int, ignore_label: bool = False) -> Path:
    """Write dataset.json, counting the cases in labelsTr/; returns the dataset folder. `ignore_label`: some cases
    are partly labelled (`IGNORE_CLASS` where unknown)."""
    folder = Path(raw_dir) / DATASET_NAMES[DATASET_IDS[step]]
    n_cases = len(list((folder / "labelsTr").glob(f"*{FILE_ENDING}")))
    text = json.dumps(dataset_json(step, n_cases, ignore_label), indent=4) + "\n"
    # a new file moved into place, never rewritten in place: a dataset copied with hard links keeps its own
    tmp = folder / ".dataset.json.partial"
    tmp.write_text(text)
    os.replace(tmp, folder / "dataset.json")
    return folder


@dataclass
class PrepareReport:
    written: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    datasets: list[Path] = field(default_factory=list)


def prepare(bids_dir: str | os.PathLike, raw_dir: str | os.PathLike, steps: Iterable[int] = (1, 2),
            pattern: str = DEFAULT_LABELS_PATTERN, spacing: float = 1.0, overwrite: bool = False,
            progress: bool = True) -> PrepareReport:
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


def grouped_splits(identifiers: Iterable[str], n_folds: int = 5, seed: int = 12345) -> list[dict[str, list[str]]]:
    """nnU-Net cross-validation splits that keep a case and its ``_o2e`` copy in the same fold."""
    ids = sorted(identifiers)
    groups = sorted({i.removesuffix(SWAPPED_SUFFIX) for i in ids})
    order = np.random.default_rng(seed).permutation(len(groups))
    splits = []
    for fold in range(n_folds):
        val_groups = {groups[i] for i in order[fold::n_folds]}
        val = [i for i in ids if i.removesuffix(SWAPPED_SUFFIX) in val_groups]
        splits.append({"train": [i for i in ids if i not in set(val)], "val": val})
    return splits
