"""Model weights: the release registry, where weights live, and a safe installer.

The on-disk layout is upstream TotalSpineSeg's, so either tool can use a folder the other installed:

    <root>/nnUNet/exports/<zip name>                   kept zips (``<zip name>.part`` while downloading)
    <root>/nnUNet/results/<release>/Dataset101_TotalSpineSeg_step1/<Trainer>__<Plans>__<config>/
        dataset.json  plans.json  fold_0/checkpoint_best.pth (or checkpoint_final.pth)
    <root>/nnUNet/results/<release>/Dataset102_TotalSpineSeg_step2/...
    <root>/nnUNet/results/<release>/totalspineseg-weights.json    install manifest (ours only)

Modules:

- `registry`: the releases and their URLs, and the file names of the model-folder layout (the predictor's too).
- `locate`: the search roots and `resolve_model`, which finds an installed model or the bundled demo model.
- `checks`: `verify` (an installed release against its manifest) and the checks of a zip before extraction.
- `installer`: `install`: download with resume, staging next to the final folder, manifest, swap.

(`installer` and `checks` are not named after their main functions so that ``weights.install`` and
``weights.verify`` can be the functions without hiding a module.)

Nothing here downloads unless asked to, and nothing imports torch or nnunetv2. The names below are
bindings of the modules' names: to patch a setting in a test, patch the module that owns it (e.g.
``locate.PACKAGE_DATA``).
"""

from totalspineseg.errors import WeightsError

from .checks import verify
from .installer import install, is_installed
from .locate import ENV_VAR, ModelPaths, install_root, installed, resolve_model, search_roots, user_cache_dir
from .registry import (
    BUNDLED,
    CHECKPOINT_NAMES,
    DEFAULT_RELEASE,
    GITHUB_DOWNLOADS,
    INSTALL_COMMAND,
    MANIFEST_NAME,
    PACKAGE_DIR,
    PREFERRED_MODEL,
    RELEASES,
    STEP_DATASETS,
    STEP_PREFIXES,
    Artifact,
    Release,
    get_release,
    release_artifacts,
)

__all__ = [
    "BUNDLED",
    "CHECKPOINT_NAMES",
    "DEFAULT_RELEASE",
    "ENV_VAR",
    "GITHUB_DOWNLOADS",
    "INSTALL_COMMAND",
    "MANIFEST_NAME",
    "PACKAGE_DIR",
    "PREFERRED_MODEL",
    "RELEASES",
    "STEP_DATASETS",
    "STEP_PREFIXES",
    "Artifact",
    "ModelPaths",
    "Release",
    "WeightsError",
    "get_release",
    "install",
    "install_root",
    "installed",
    "is_installed",
    "release_artifacts",
    "resolve_model",
    "search_roots",
    "user_cache_dir",
    "verify",
]
