"""Release zips of trained models: checkpoints stripped to what inference needs, reproducible zip bytes, unpacking.

A release zip is what ``totalspineseg-weights install`` takes: ``<Dataset>/<Trainer>__<Plans>__<config>/`` with the
model's json files and ``fold_N/checkpoint_final.pth``.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import zipfile
from collections.abc import Iterable
from pathlib import Path

from ..errors import WeightsError
from ..fsutil import atomic_path, atomic_write
from .dataset import DATASET_NAMES
from .nnunet import CHECKPOINT_FILES

# Keys of an nnU-Net checkpoint that inference needs; the optimizer and grad-scaler states are for resuming only.
CHECKPOINT_KEEP = ("network_weights", "init_args", "trainer_name", "current_epoch", "inference_allowed_mirroring_axes")
_MODEL_FILES = ("dataset.json", "plans.json", "dataset_fingerprint.json")


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


def export_release(results_dir: str | os.PathLike, out_dir: str | os.PathLike, release: str, fold: int | str = 0,
                   checkpoint: str = "final", model: str | None = None) -> list[Path]:
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


def _export_dataset(model_dir: Path, out_dir: Path, release: str, fold: int | str, checkpoint: str) -> Path:
    import torch

    from ..predictor import read_checkpoint

    source = model_dir / f"fold_{fold}" / f"checkpoint_{checkpoint}.pth"
    if not source.is_file():
        raise WeightsError(f"{source}: no such checkpoint")
    buffer = io.BytesIO()
    torch.save(strip_checkpoint(read_checkpoint(source)), buffer)
    dataset = model_dir.parent.name
    prefix = f"{dataset}/{model_dir.name}"
    members = {f"{prefix}/{n}": (model_dir / n).read_bytes() for n in _MODEL_FILES if (model_dir / n).is_file()}
    members[f"{prefix}/fold_{fold}/{CHECKPOINT_FILES['final']}"] = buffer.getvalue()
    target = out_dir / f"{dataset}_{release}.zip"
    write_zip(target, members)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    atomic_write(target.with_name(target.name + ".sha256"), f"{digest}  {target.name}\n")
    return target


def write_zip(target: Path, members: dict[str, bytes]) -> None:
    """A zip whose bytes depend only on the contents (fixed timestamps), written atomically."""
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(members.items()):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)


def unpack_release(zips: Iterable[Path], destination: Path) -> None:
    """Extract release zips into a folder (used to bundle the demo model inside the package)."""
    destination.mkdir(parents=True, exist_ok=True)
    for path in zips:
        with zipfile.ZipFile(path) as zf:
            dataset = zf.namelist()[0].split("/")[0]
            shutil.rmtree(destination / dataset, ignore_errors=True)
            zf.extractall(destination)
