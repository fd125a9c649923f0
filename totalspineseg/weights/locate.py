"""Finding installed models: the search roots, the folder layouts accepted, and the bundled demo model.

Nothing here writes or downloads, except `resolve_model(download=True)`, which hands over to `install`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path

from totalspineseg.errors import WeightsError

from .registry import (
    BUNDLED,
    CHECKPOINT_NAMES,
    DEFAULT_RELEASE,
    FOLD_PREFIX,
    INSTALL_COMMAND,
    MANIFEST_NAME,
    MODEL_FILES,
    PACKAGE_DIR,
    PREFERRED_MODEL,
    RELEASES,
    STEP_DATASETS,
    STEP_PREFIXES,
    Release,
    fold_dir_name,
    get_release,
)

log = logging.getLogger(__name__)

ENV_VAR = "TOTALSPINESEG_DATA"
PACKAGE_DATA = PACKAGE_DIR / "data"  # read-only fallback root; install never writes here


@dataclass(frozen=True)
class ModelPaths:
    """The two nnU-Net trained-model folders (each with dataset.json, plans.json and fold_N/)."""

    step1: Path
    step2: Path
    step1_checkpoint: Path
    step2_checkpoint: Path
    release: str  # a registry name, "custom" (upstream's results/Dataset10x layout), "demo" or "path"
    root: Path  # where they were found
    sha256: dict[str, str | None] = field(default_factory=dict)  # checkpoint sha256 per step, from the manifest

    def checkpoint(self, step: str) -> Path:
        return {"step1": self.step1_checkpoint, "step2": self.step2_checkpoint}[step]

    def fold(self, step: str) -> int | str:
        """The fold of the chosen checkpoint: an int, or "all" for nnU-Net's fold_all."""
        fold = self.checkpoint(step).parent.name.removeprefix(FOLD_PREFIX)
        return int(fold) if fold.isdigit() else fold


def user_cache_dir() -> Path | None:
    """``$XDG_CACHE_HOME/totalspineseg`` or ``~/.cache/totalspineseg``; None when HOME is unset."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "totalspineseg"
    home = os.environ.get("HOME")
    return Path(home) / ".cache" / "totalspineseg" if home else None


def search_roots(data_dir: str | Path | None = None) -> list[tuple[str, Path]]:
    """Weights roots to search, labelled. An explicit --data-dir or env var is the only place searched."""
    if data_dir:
        return [("--data-dir", Path(data_dir).expanduser())]
    if os.environ.get(ENV_VAR):
        return [(f"${ENV_VAR}", Path(os.environ[ENV_VAR]).expanduser())]
    cache = user_cache_dir()
    return ([("user cache", cache)] if cache else []) + [("package", PACKAGE_DATA)]


def install_root(data_dir: str | Path | None = None) -> Path:
    """Where `install` writes: --data-dir, then the env var, then the user cache (never the package)."""
    label, root = search_roots(data_dir)[0]
    if label != "package" and (label != "user cache" or _writable(root)):
        return root
    raise WeightsError(
        f"no writable folder for the weights (HOME is unset or read-only); pass --data-dir DIR or set {ENV_VAR}"
    )


def _writable(path: Path) -> bool:
    while not path.exists():
        if path.parent == path:
            return False
        path = path.parent
    return os.access(path, os.W_OK | os.X_OK)


def _find_checkpoint(model: Path) -> Path | None:
    folds = sorted(model.glob(f"{FOLD_PREFIX}*"), key=lambda p: (p.name != fold_dir_name(0), p.name))
    for fold in folds:
        for name in CHECKPOINT_NAMES:
            if (fold / name).is_file():
                return fold / name
    return None


def _model_folder(dataset_dir: Path) -> Path | None:
    """The trained-model folder in a dataset folder (or the folder itself when it is one)."""
    if _find_checkpoint(dataset_dir):
        return dataset_dir
    candidates = sorted(d for d in dataset_dir.iterdir() if d.is_dir() and _find_checkpoint(d))
    if not candidates:
        return None
    chosen = next((d for d in candidates if d.name == PREFERRED_MODEL), candidates[0])
    if len(candidates) > 1:
        others = ", ".join(d.name for d in candidates if d != chosen)
        log.info("%s: using %s (also present: %s)", dataset_dir, chosen.name, others)
    return chosen


def _step_dirs(parent: Path) -> dict[str, Path] | None:
    """The Dataset101_*/Dataset102_* (or step1/step2) folders directly inside parent, if both exist."""
    found = {}
    for step, prefix in STEP_PREFIXES.items():
        exact = parent / STEP_DATASETS[step]
        matches = [exact] if exact.is_dir() else sorted(p for p in parent.glob(prefix + "*") if p.is_dir())
        if not matches and (parent / step).is_dir():
            matches = [parent / step]
        if matches:
            found[step] = matches[0]
    return found if len(found) == 2 else None


def models_in(parent: Path, release: str, root: Path) -> ModelPaths | None:
    """ModelPaths for the two dataset folders inside parent; None if they are not there.

    Dataset folders that are there but incomplete raise a WeightsError saying what is missing.
    """
    dirs = _step_dirs(parent)
    if dirs is None:
        return None
    models = {}
    for step, dataset_dir in dirs.items():
        model = _model_folder(dataset_dir)
        if model is None:
            raise WeightsError(
                f"{dataset_dir}: incomplete model (no <Trainer>__<Plans>__<config>/fold_0/checkpoint_*.pth)"
            )
        missing = [n for n in MODEL_FILES if not (model / n).is_file()]
        if missing:
            raise WeightsError(f"{model}: incomplete model (missing {', '.join(missing)})")
        models[step] = model
    checkpoints = {step: _find_checkpoint(model) for step, model in models.items()}
    return ModelPaths(
        step1=models["step1"],
        step2=models["step2"],
        step1_checkpoint=checkpoints["step1"],
        step2_checkpoint=checkpoints["step2"],
        release=release,
        root=root,
        sha256=_manifest_checksums(parent, checkpoints),
    )


def _manifest_checksums(parent: Path, checkpoints: dict[str, Path]) -> dict[str, str | None]:
    files = (read_manifest(parent) or {}).get("files", {})
    return {
        step: files.get(ckpt.relative_to(parent).as_posix(), {}).get("sha256") for step, ckpt in checkpoints.items()
    }


def read_manifest(folder: Path) -> dict | None:
    """The install manifest of a release folder; None if it is missing or unreadable."""
    try:
        return json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def _find_in_root(root: Path, release: str, explicit_release: bool) -> ModelPaths | None:
    results = root / "nnUNet" / "results"
    if not explicit_release:  # upstream: results/Dataset101_* + Dataset102_* override the release folder
        custom = models_in(results, "custom", root)
        if custom:
            return custom
    return models_in(results / release, release, root)


def find_in_path(path: Path, release: str, explicit_release: bool) -> ModelPaths | None:
    """Models in a user-given folder: the dataset folders themselves, a results folder, or a data root."""
    return (
        models_in(path, "path", path)
        or models_in(path / release, release, path)
        or _find_in_root(path, release, explicit_release)
    )


def resolve_model(
    weights: str | Path | None = "official",
    data_dir: str | Path | None = None,
    release: str | None = None,
    *,
    download: bool = False,
    quiet: bool = False,
) -> ModelPaths:
    """Find the step-1/step-2 models. `weights`: "official" (or None), a release name, "demo", or a folder.

    Downloads only when `download` is true; otherwise missing weights raise a WeightsError that
    gives the install command.
    """
    explicit = release is not None
    name = str(weights) if weights is not None else "official"
    if name == "official" and release in BUNDLED:
        name = release
    if name in BUNDLED:
        return resolve_bundled(name)
    if name in RELEASES:
        name, release, explicit = "official", name, True
    if name == "official":
        return _resolve_release(get_release(release), data_dir, explicit, download, quiet)
    path = Path(name).expanduser()
    if not path.is_dir():
        known = ", ".join(["official", *RELEASES])
        raise WeightsError(f"--weights {name}: no such folder and not a known release ({known})")
    found = find_in_path(path, release or DEFAULT_RELEASE, explicit)
    if found is None:
        raise WeightsError(
            f"{path}: no Dataset101_*/Dataset102_* models "
            f"(expected <Dataset>/<Trainer>__<Plans>__<config>/fold_0/checkpoint_*.pth)"
        )
    return found


def _resolve_release(
    rel: Release, data_dir: str | Path | None, explicit: bool, download: bool, quiet: bool
) -> ModelPaths:
    roots = search_roots(data_dir)
    for _, root in roots:
        found = _find_in_root(root, rel.name, explicit)
        if found:
            return found
    if download:
        from .installer import install  # install finds models with this module: import it only when needed

        return install(None, install_root(data_dir), rel.name, quiet=quiet)
    raise WeightsError(_missing_message(rel.name, roots, data_dir))


def _missing_message(release: str, roots: list[tuple[str, Path]], data_dir: str | Path | None) -> str:
    places = ", ".join(f"{root / 'nnUNet' / 'results'} ({label})" for label, root in roots)
    command = INSTALL_COMMAND
    if release != DEFAULT_RELEASE:
        command += f" --release {release}"
    if data_dir:
        command += f" --data-dir {shlex.quote(str(data_dir))}"
    if os.environ.get("TOTALSPINESEG_CONTAINER_TYPE"):  # a read-only image: installing there cannot work
        return (
            f"no TotalSpineSeg weights (release {release}) in this container ({places}); rebuild the image with "
            f"the weights baked in (see 'Containers' in the README), or mount a weights folder and point "
            f"{ENV_VAR} at it (docker run -v /path/to/weights:/weights:ro -e {ENV_VAR}=/weights ...; "
            f"apptainer run --bind /path/to/weights:/weights --env {ENV_VAR}=/weights ...), "
            f"or use --weights demo to try the tool"
        )
    return (
        f"no TotalSpineSeg weights (release {release}) found in {places}; "
        f"install them with: {command} (offline: add --from ZIP|DIR)"
    )


def resolve_bundled(name: str) -> ModelPaths:
    """A model shipped inside the package (demo, lite)."""
    folder = RELEASES[name].bundled
    if folder is None or not folder.is_dir():
        raise WeightsError(f"the {name} model is not bundled with this installation ({folder} is missing)")
    found = find_in_path(folder, name, True)
    if found is None:
        raise WeightsError(f"{folder}: the bundled {name} model has no Dataset101_*/Dataset102_* models")
    return replace(found, release=name)


def resolve_demo() -> ModelPaths:
    """The demo model bundled with the package."""
    return resolve_bundled("demo")


def installed(data_dir: str | Path | None = None) -> list[tuple[str, Path]]:
    """(release, folder) of every complete install in the search roots; incomplete ones are skipped."""
    found = []
    for _, root in search_roots(data_dir):
        results = root / "nnUNet" / "results"
        releases = [(d.name, d) for d in sorted(results.glob("[!.]*")) if d.is_dir()]  # not staging folders
        candidates = [("custom", results), *releases]
        for name, folder in candidates:
            with contextlib.suppress(WeightsError):
                if models_in(folder, name, root):
                    found.append((name, folder))
    return found
