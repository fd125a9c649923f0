"""Model weights: the release registry, where weights live, and a safe installer.

The on-disk layout is upstream TotalSpineSeg's, so either tool can use a folder the other installed:

    <root>/nnUNet/exports/<zip name>                   kept zips (``<zip name>.part`` while downloading)
    <root>/nnUNet/results/<release>/Dataset101_TotalSpineSeg_step1/<Trainer>__<Plans>__<config>/
        dataset.json  plans.json  fold_0/checkpoint_best.pth (or checkpoint_final.pth)
    <root>/nnUNet/results/<release>/Dataset102_TotalSpineSeg_step2/...
    <root>/nnUNet/results/<release>/totalspineseg-weights.json    install manifest (ours only)

Nothing here downloads unless asked to, and nothing imports torch or nnunetv2.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import stat
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from http.client import HTTPException
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from totalspineseg import __version__
from totalspineseg.errors import WeightsError

log = logging.getLogger(__name__)

STEP_DATASETS = {"step1": "Dataset101_TotalSpineSeg_step1", "step2": "Dataset102_TotalSpineSeg_step2"}
STEP_PREFIXES = {"step1": "Dataset101_", "step2": "Dataset102_"}
PREFERRED_MODEL = "nnUNetTrainerDAExtGPU__nnUNetPlans__3d_fullres"
CHECKPOINTS = ("checkpoint_best.pth", "checkpoint_final.pth")  # upstream loads "best" first
MANIFEST_NAME = "totalspineseg-weights.json"
ENV_VAR = "TOTALSPINESEG_DATA"
INSTALL_COMMAND = "totalspineseg-weights install"
PACKAGE_DIR = Path(__file__).resolve().parent.parent
PACKAGE_DATA = PACKAGE_DIR / "data"  # read-only fallback root; install never writes here
GITHUB_DOWNLOADS = "https://github.com/neuropoly/totalspineseg/releases/download"

_CHUNK = 1 << 20
_CHECKPOINT_RE = re.compile(r"fold_[^/]+/checkpoint_(best|final)\.pth")
_RELEASE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


# --- registry -------------------------------------------------------------------------------------


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


DEFAULT_RELEASE = "r20260730"
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
    )
}


def get_release(name: str | None) -> Release:
    """A registry entry; unknown names (own models installed with --from) get an entry without URLs."""
    name = name or DEFAULT_RELEASE
    if name in RELEASES:
        return RELEASES[name]
    if not _RELEASE_NAME_RE.fullmatch(name):
        raise WeightsError(f"invalid release name {name!r} (letters, digits, '.', '_', '-' only)")
    return Release(name, description="not in the registry")


# --- locating installed models --------------------------------------------------------------------


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
        fold = self.checkpoint(step).parent.name.removeprefix("fold_")
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
    folds = sorted(model.glob("fold_*"), key=lambda p: (p.name != "fold_0", p.name))
    for fold in folds:
        for name in CHECKPOINTS:
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


def _models_in(parent: Path, release: str, root: Path) -> ModelPaths | None:
    """ModelPaths for the two dataset folders inside parent; None if they are not there."""
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
        missing = [n for n in ("dataset.json", "plans.json") if not (model / n).is_file()]
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
    files = (_read_manifest(parent) or {}).get("files", {})
    return {
        step: files.get(ckpt.relative_to(parent).as_posix(), {}).get("sha256") for step, ckpt in checkpoints.items()
    }


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def _find_in_root(root: Path, release: str, explicit_release: bool) -> ModelPaths | None:
    results = root / "nnUNet" / "results"
    if not explicit_release:  # upstream: results/Dataset101_* + Dataset102_* override the release folder
        custom = _models_in(results, "custom", root)
        if custom:
            return custom
    return _models_in(results / release, release, root)


def _find_in_path(path: Path, release: str, explicit_release: bool) -> ModelPaths | None:
    """Models in a user-given folder: the dataset folders themselves, a results folder, or a data root."""
    return (
        _models_in(path, "path", path)
        or _models_in(path / release, release, path)
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
    if name in RELEASES and name != "demo":
        name, release, explicit = "official", name, True
    if name == "demo" or (name == "official" and release == "demo"):
        return _resolve_demo()
    if name == "official":
        return _resolve_release(get_release(release), data_dir, explicit, download, quiet)
    path = Path(name).expanduser()
    if not path.is_dir():
        known = ", ".join(["official", *RELEASES])
        raise WeightsError(f"--weights {name}: no such folder and not a known release ({known})")
    found = _find_in_path(path, release or DEFAULT_RELEASE, explicit)
    if found is None:
        raise WeightsError(
            f"{path}: no Dataset101_*/Dataset102_* models "
            f"(expected <Dataset>/<Trainer>__<Plans>__<config>/fold_0/checkpoint_*.pth)"
        )
    return found


def _resolve_release(rel: Release, data_dir, explicit: bool, download: bool, quiet: bool) -> ModelPaths:
    roots = search_roots(data_dir)
    for _, root in roots:
        found = _find_in_root(root, rel.name, explicit)
        if found:
            return found
    if download:
        return install(None, install_root(data_dir), rel.name, quiet=quiet)
    raise WeightsError(_missing_message(rel.name, roots, data_dir))


def _missing_message(release: str, roots: list[tuple[str, Path]], data_dir) -> str:
    places = ", ".join(f"{root / 'nnUNet' / 'results'} ({label})" for label, root in roots)
    command = INSTALL_COMMAND
    if release != DEFAULT_RELEASE:
        command += f" --release {release}"
    if data_dir:
        command += f" --data-dir {shlex.quote(str(data_dir))}"
    return (
        f"no TotalSpineSeg weights (release {release}) found in {places}; "
        f"install them with: {command} (offline: add --from ZIP|DIR)"
    )


def _resolve_demo() -> ModelPaths:
    folder = RELEASES["demo"].bundled
    if folder is None or not folder.is_dir():
        raise WeightsError(f"the demo model is not bundled with this installation ({folder} is missing)")
    found = _find_in_path(folder, "demo", True)
    if found is None:
        raise WeightsError(f"{folder}: the bundled demo model has no Dataset101_*/Dataset102_* models")
    return replace(found, release="demo")


def installed(data_dir: str | Path | None = None) -> list[tuple[str, Path]]:
    """(release, folder) of every complete install in the search roots; incomplete ones are skipped."""
    found = []
    for _, root in search_roots(data_dir):
        results = root / "nnUNet" / "results"
        releases = [(d.name, d) for d in sorted(results.glob("[!.]*")) if d.is_dir()]  # not staging folders
        candidates = [("custom", results), *releases]
        for name, folder in candidates:
            with contextlib.suppress(WeightsError):
                if _models_in(folder, name, root):
                    found.append((name, folder))
    return found


# --- verification ---------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def verify(root: str | Path | None = None, release: str | None = None) -> list[str]:
    """Problems with an installed release (structure, then size and sha256 against the manifest)."""
    name = release or DEFAULT_RELEASE
    if name == "demo":
        try:
            _resolve_demo()
        except WeightsError as err:
            return [str(err)]
        return []
    roots = [Path(root).expanduser()] if root else [r for _, r in search_roots()]
    folders = [r / "nnUNet" / "results" / name for r in roots]
    target = next((f for f in folders if f.is_dir()), None)
    if target is None:
        return [f"release {name} is not installed in {', '.join(map(str, folders))}"]
    try:
        if _models_in(target, name, target) is None:
            return [f"{target}: Dataset101_*/Dataset102_* model folders are missing"]
    except WeightsError as err:
        return [str(err)]
    manifest = _read_manifest(target)
    if manifest is None:
        return [f"{target}: no readable {MANIFEST_NAME}; reinstall with: {INSTALL_COMMAND} --force"]
    return [p for rel, meta in manifest.get("files", {}).items() if (p := _file_problem(target / rel, meta))]


def _file_problem(path: Path, meta: dict) -> str | None:
    if not path.is_file():
        return f"{path}: missing"
    if path.stat().st_size != meta.get("size"):
        return f"{path}: size {path.stat().st_size} differs from the manifest ({meta.get('size')})"
    if _sha256(path) != meta.get("sha256"):
        return f"{path}: sha256 differs from the manifest"
    return None


def _check_zip(path: Path, artifact: Artifact | None = None, label: str | None = None) -> tuple[str, int]:
    """Size/sha256 (when known), integrity and safety of a zip; returns (sha256, size)."""
    label = label or str(path)
    size = path.stat().st_size
    if artifact and artifact.size is not None and size != artifact.size:
        raise WeightsError(f"{label}: size {size} differs from the expected {artifact.size}")
    digest = _sha256(path)
    if artifact and artifact.sha256 and digest != artifact.sha256:
        raise WeightsError(f"{label}: sha256 mismatch (expected {artifact.sha256}, got {digest})")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            for info in infos:
                _check_member(label, info)
            bad = zf.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as err:
        raise WeightsError(f"{label}: corrupt zip ({err})") from None
    if bad is not None:
        raise WeightsError(f"{label}: corrupt zip (bad CRC in {bad})")
    return digest, size


def _check_member(label: str, info: zipfile.ZipInfo) -> None:
    name = info.filename.replace("\\", "/")
    unsafe = (
        name.startswith("/")
        or re.match(r"[A-Za-z]:", name) is not None
        or ".." in name.split("/")
        or stat.S_ISLNK(info.external_attr >> 16)
    )
    if unsafe:
        raise WeightsError(
            f"{label}: unsafe zip entry {info.filename!r} (absolute path, '..' or symlink); refusing to extract"
        )


def _listing_models(files: Iterable[str]) -> dict[str, str]:
    """step -> dataset folder, for each Dataset10x_*/<T>__<P>__<C>/ with dataset.json, plans.json, a checkpoint."""
    contents: dict[tuple[str, str], set[str]] = defaultdict(set)
    for name in files:
        parts = name.split("/")
        if len(parts) >= 3:
            contents[(parts[0], parts[1])].add("/".join(parts[2:]))
    found: dict[str, str] = {}
    for (dataset, model), names in sorted(contents.items()):
        step = next((s for s, p in STEP_PREFIXES.items() if dataset.startswith(p)), None)
        complete = {"dataset.json", "plans.json"} <= names and any(_CHECKPOINT_RE.fullmatch(n) for n in names)
        if step and complete and model.count("__") == 2:
            found.setdefault(step, dataset)
    return found


# --- installation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """Where one step's model comes from: a dataset folder inside a zip, or a trained-model folder."""

    step: str
    kind: str  # "zip" or "dir"
    path: Path
    dataset: str
    origin: str
    sha256: str | None = None
    size: int | None = None


def install(
    source: str | Path | Sequence[str | Path] | None = None,
    root: str | Path | None = None,
    release: str | None = None,
    *,
    force: bool = False,
    quiet: bool = False,
    keep_zips: bool = True,
) -> ModelPaths:
    """Install a release into ``<root>/nnUNet/results/<release>/`` and return its models.

    `source`: None (the registry URLs), or one or more of: an http(s) URL of a zip, an http(s)
    base URL holding the release's zips, a local zip, or a local folder (models or zips).
    A complete install is left alone unless `force`.
    """
    rel = get_release(release)
    if rel.bundled is not None:
        raise WeightsError(f"release {rel.name} is bundled with the package; nothing to install")
    root = Path(root).expanduser() if root else install_root()
    results = root / "nnUNet" / "results"
    target = results / rel.name
    with _install_lock(results, rel.name):
        if not force and (done := _complete(target, rel.name, root)):
            log.info("release %s already installed in %s (use --force to reinstall)", rel.name, target)
            return done
        sources = _gather(source, rel, root / "nnUNet" / "exports", quiet)
        _stage_and_swap(sources, rel.name, results)
        if not keep_zips:
            _remove_exports(sources, root / "nnUNet" / "exports")
    log.info("installed release %s in %s", rel.name, target)
    return _models_in(target, rel.name, root)


def is_installed(root: str | Path, release: str | None = None) -> bool:
    name = get_release(release).name
    return _complete(Path(root) / "nnUNet" / "results" / name, name, Path(root)) is not None


def _complete(target: Path, release: str, root: Path) -> ModelPaths | None:
    try:
        return _models_in(target, release, root)
    except WeightsError:
        return None


@contextlib.contextmanager
def _install_lock(results: Path, release: str):
    """Serialise installs of one release (parallel jobs sharing a weights folder)."""
    results.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(results / f".{release}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _gather(source, rel: Release, exports: Path, quiet: bool) -> dict[str, _Source]:
    if source is None:
        if not rel.artifacts:
            raise WeightsError(f"release {rel.name} has no download URLs; install it with --from ZIP|DIR")
        items = [s for a in rel.artifacts for s in _url_sources(a.url, exports, quiet, a)]
        origins = [a.url for a in rel.artifacts]
    else:
        origins = [str(s) for s in ([source] if isinstance(source, (str, Path)) else source)]
        items = [s for origin in origins for s in _expand_source(origin, rel, exports, quiet)]
    chosen: dict[str, _Source] = {}
    for item in items:
        if item.step in chosen:
            log.info("%s: ignoring a second %s model (%s)", item.origin, item.step, item.dataset)
        chosen.setdefault(item.step, item)
    missing = [STEP_PREFIXES[s] + "*" for s in STEP_DATASETS if s not in chosen]
    if missing:
        raise WeightsError(f"{', '.join(origins)}: no {' or '.join(missing)} model found (both steps are needed)")
    return chosen


def _expand_source(origin: str, rel: Release, exports: Path, quiet: bool) -> list[_Source]:
    if origin.startswith(("http://", "https://")):
        if urllib.parse.urlsplit(origin).path.endswith(".zip"):
            return _url_sources(origin, exports, quiet, None)
        artifacts = release_artifacts(rel.name, origin)
        return [s for a in artifacts for s in _url_sources(a.url, exports, quiet, a)]
    path = Path(origin).expanduser()
    if path.is_dir():
        return _dir_sources(path, rel.name)
    if path.is_file():
        return _zip_sources(path, str(path), _artifact_named(rel, path.name))
    raise WeightsError(f"{origin}: no such file, folder or http(s) URL")


def _artifact_named(rel: Release, zip_name: str) -> Artifact | None:
    return next((a for a in rel.artifacts if a.zip_name == zip_name), None)


def _dir_sources(folder: Path, release: str) -> list[_Source]:
    """A folder of models (any layout `resolve_model` accepts), else the zips inside it."""
    found = _find_in_path(folder, release, False)
    if found:
        return [_model_source(step, getattr(found, step), str(folder)) for step in STEP_DATASETS]
    zips = sorted(folder.glob("*.zip")) + sorted((folder / "nnUNet" / "exports").glob("*.zip"))
    for_release = [z for z in zips if z.name.endswith(f"_{release}.zip")]
    if not zips:
        raise WeightsError(f"{folder}: no Dataset101_*/Dataset102_* models or zips found")
    return [s for z in (for_release or zips) for s in _zip_sources(z, str(z), None)]


def _model_source(step: str, model: Path, origin: str) -> _Source:
    if model.name.count("__") != 2:
        raise WeightsError(f"{model}: expected a <Trainer>__<Plans>__<config> folder name")
    parent = model.parent.name
    dataset = parent if parent.startswith(STEP_PREFIXES[step]) else STEP_DATASETS[step]
    return _Source(step, "dir", model, dataset, origin)


def _zip_sources(path: Path, origin: str, artifact: Artifact | None) -> list[_Source]:
    digest, size = _check_zip(path, artifact, label=origin)
    with zipfile.ZipFile(path) as zf:
        datasets = _listing_models(i.filename for i in zf.infolist() if not i.is_dir())
    if not datasets:
        raise WeightsError(
            f"{origin}: no model inside (expected "
            f"Dataset10x_*/<Trainer>__<Plans>__<config>/{{dataset.json,plans.json,fold_N/checkpoint_*.pth}})"
        )
    return [_Source(step, "zip", path, ds, origin, digest, size) for step, ds in datasets.items()]


def _url_sources(url: str, exports: Path, quiet: bool, artifact: Artifact | None) -> list[_Source]:
    """Download (resuming a .part) into exports/, verify, then keep the zip under its final name."""
    name = artifact.zip_name if artifact else PurePosixPath(urllib.parse.urlsplit(url).path).name
    final = exports / urllib.parse.unquote(name)
    if final.is_file():
        log.info("using the already downloaded %s", final)
        return _zip_sources(final, str(final), artifact)
    exports.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    _download(url, part, quiet, artifact.size if artifact else None)
    try:
        sources = _zip_sources(part, url, artifact)
    except WeightsError:
        part.unlink(missing_ok=True)  # resuming a bad file would never succeed
        raise
    os.replace(part, final)
    return [replace(s, path=final) for s in sources]


def _download(url: str, part: Path, quiet: bool, expected_size: int | None) -> None:
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": f"totalspineseg/{__version__}"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # our .part is not a prefix of the file any more
            part.unlink()
            return _download(url, part, quiet, expected_size)
        raise WeightsError(f"{url}: download failed (HTTP {err.code} {err.reason})") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise WeightsError(f"{url}: download failed ({reason}); offline, use --from ZIP|DIR") from None
    with response:
        if have and not _resumes(response, have):
            have = 0
        total = _total_size(response, have) or expected_size
        _copy_body(url, response, part, have, total, quiet)


def _resumes(response, offset: int) -> bool:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return response.status == 206 and match is not None and int(match.group(1)) == offset


def _total_size(response, offset: int) -> int | None:
    match = re.search(r"/(\d+)$", response.headers.get("Content-Range", ""))
    if match:
        return int(match.group(1))
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _copy_body(url: str, response, part: Path, offset: int, total: int | None, quiet: bool) -> None:
    disable = quiet or not sys.stderr.isatty()
    with (
        open(part, "ab" if offset else "wb") as out,
        tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=part.name[:-5], disable=disable) as bar,
    ):
        try:
            while block := response.read(_CHUNK):
                out.write(block)
                bar.update(len(block))
        except (OSError, HTTPException) as err:
            raise WeightsError(f"{url}: download interrupted ({err}); run the same command again to resume") from None
    got = part.stat().st_size
    if total is not None and got < total:
        raise WeightsError(
            f"{url}: download interrupted ({got} of {total} bytes); run the same command again to resume"
        )


def _stage_and_swap(sources: dict[str, _Source], release: str, results: Path) -> None:
    """Build the release folder next to its final place, check it, then rename it into place."""
    staging = Path(tempfile.mkdtemp(prefix=f".{release}.staging-", dir=results))
    try:
        for src in sources.values():
            _place(src, staging)
        if _models_in(staging, release, staging) is None:
            raise WeightsError(f"{staging}: the installed folders lack Dataset101_*/Dataset102_* models")
        _write_manifest(staging, release, sources)
        _swap(staging, results / release)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _place(src: _Source, staging: Path) -> None:
    if src.kind == "dir":
        shutil.copytree(src.path, staging / src.dataset / src.path.name)
        return
    with zipfile.ZipFile(src.path) as zf:
        for info in zf.infolist():
            if info.is_dir() or not info.filename.startswith(src.dataset + "/"):
                continue
            target = staging / info.filename
            if not target.resolve().is_relative_to(staging.resolve()):  # names were checked; belt and braces
                raise WeightsError(f"{src.origin}: unsafe zip entry {info.filename!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as data, open(target, "wb") as out:
                shutil.copyfileobj(data, out, _CHUNK)


def _write_manifest(staging: Path, release: str, sources: dict[str, _Source]) -> None:
    files = {
        f.relative_to(staging).as_posix(): {"size": f.stat().st_size, "sha256": _sha256(f)}
        for f in sorted(staging.rglob("*"))
        if f.is_file()
    }
    datasets = {
        step: {
            "dataset": s.dataset,
            "source": s.origin,
            "zip": s.path.name if s.kind == "zip" else None,
            "zip_sha256": s.sha256,
            "zip_size": s.size,
        }
        for step, s in sources.items()
    }
    manifest = {
        "format": 1,
        "release": release,
        "installed": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tool_version": __version__,
        "datasets": datasets,
        "files": files,
    }
    (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")


def _swap(staging: Path, target: Path) -> None:
    """Rename staging to target; an existing target is moved aside first and removed after."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_exports(sources: dict[str, _Source], exports: Path) -> None:
    for src in sources.values():
        if src.kind == "zip" and src.path.parent == exports:
            src.path.unlink(missing_ok=True)
