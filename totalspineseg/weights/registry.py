"""The release registry and the nnU-Net model-folder layout: names, URLs and file names, no file access.

A trained-model folder, as nnU-Net writes it and as `totalspineseg.predictor` reads it::

    <Trainer>__<Plans>__<configuration>/
        dataset.json  plans.json  fold_<N>/checkpoint_best.pth (or checkpoint_final.pth)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from totalspineseg.errors import WeightsError

STEP_DATASETS = {"step1": "Dataset101_TotalSpineSeg_step1", "step2": "Dataset102_TotalSpineSeg_step2"}
STEP_PREFIXES = {"step1": "Dataset101_", "step2": "Dataset102_"}
PREFERRED_MODEL = "nnUNetTrainerDAExtGPU__nnUNetPlans__3d_fullres"

DATASET_JSON = "dataset.json"
PLANS_JSON = "plans.json"
MODEL_FILES = (DATASET_JSON, PLANS_JSON)  # next to the fold_N/ folders of every trained-model folder
FOLD_PREFIX = "fold_"
CHECKPOINT_NAMES = ("checkpoint_best.pth", "checkpoint_final.pth")  # in order of preference, as upstream

MANIFEST_NAME = "totalspineseg-weights.json"
INSTALL_COMMAND = "totalspineseg-weights install"
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the totalspineseg/ package folder
GITHUB_DOWNLOADS = "https://github.com/neuropoly/totalspineseg/releases/download"
DEFAULT_RELEASE = "r20260730"

_RELEASE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def fold_dir_name(fold: int | str) -> str:
    """``fold_0``, ``fold_all``: the folder of one fold inside a trained-model folder."""
    return f"{FOLD_PREFIX}{fold}"


def model_name_parts(name: str) -> tuple[str, str, str] | None:
    """``(trainer, plans, configuration)`` of a ``<Trainer>__<Plans>__<configuration>`` folder name, else None."""
    parts = name.split("__")
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


@dataclass(frozen=True)
class Artifact:
    """One downloadable zip holding one nnU-Net dataset folder."""

    step: str
    dataset: str
    url: str
    zip_name: str
    sha256: str | None = None  # None: unknown, so the structure is checked instead
    size: int | None = None


@dataclass(frozen=True)
class Release:
    name: str
    artifacts: tuple[Artifact, ...] = ()
    bundled: Path | None = None  # a model folder shipped inside the package
    description: str = ""


def release_artifacts(name: str, folder_url: str | None = None) -> tuple[Artifact, ...]:
    """A release's zips, named like upstream's: ``<folder_url>/<Dataset>_<release>.zip``.

    `folder_url` defaults to the GitHub release; a mirror holding the same zip names also works.
    """
    base = (folder_url or f"{GITHUB_DOWNLOADS}/{name}").rstrip("/")
    return tuple(
        Artifact(step, dataset, f"{base}/{dataset}_{name}.zip", f"{dataset}_{name}.zip")
        for step, dataset in STEP_DATASETS.items()
    )


RELEASES: dict[str, Release] = {
    r.name: r
    for r in (
        Release("r20260730", release_artifacts("r20260730"), description="official release, the default"),
        Release("r20251124", release_artifacts("r20251124"), description="previous official release"),
        Release(
            "demo",
            bundled=PACKAGE_DIR / "resources" / "demo",
            description="DEMO model trained on synthetic phantoms; not for real data",
        ),
        Release(
            "lite",
            bundled=PACKAGE_DIR / "resources" / "lite",
            description="LITE model in the package, trained on synthetic images of real spine anatomy (see its "
                        "model card for what it is good for)",
        ),
    )
}
#: Releases shipped inside the package: never downloaded, never chosen silently.
BUNDLED: tuple[str, ...] = tuple(name for name, r in RELEASES.items() if r.bundled is not None)


def get_release(name: str | None) -> Release:
    """A registry entry; unknown names (own models installed with --from) get an entry without URLs."""
    name = name or DEFAULT_RELEASE
    if name in RELEASES:
        return RELEASES[name]
    if not _RELEASE_NAME_RE.fullmatch(name):
        raise WeightsError(f"invalid release name {name!r} (letters, digits, '.', '_', '-' only)")
    return Release(name, description="not in the registry")
