"""Checking weights: an installed release against its manifest, and a zip before anything is extracted."""

from __future__ import annotations

import hashlib
import re
import stat
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from totalspineseg.errors import WeightsError

from .locate import models_in, read_manifest, resolve_bundled, search_roots
from .registry import (
    BUNDLED,
    CHECKPOINT_NAMES,
    DEFAULT_RELEASE,
    FOLD_PREFIX,
    INSTALL_COMMAND,
    MANIFEST_NAME,
    MODEL_FILES,
    STEP_PREFIXES,
    Artifact,
    model_name_parts,
)

CHUNK = 1 << 20  # bytes read or written at a time
_CHECKPOINT_RE = re.compile(rf"{FOLD_PREFIX}[^/]+/({'|'.join(map(re.escape, CHECKPOINT_NAMES))})")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def verify(root: str | Path | None = None, release: str | None = None) -> list[str]:
    """Problems with an installed release (structure, then size and sha256 against the manifest)."""
    name = release or DEFAULT_RELEASE
    if name in BUNDLED:
        try:
            resolve_bundled(name)
        except WeightsError as err:
            return [str(err)]
        return []
    roots = [Path(root).expanduser()] if root else [r for _, r in search_roots()]
    folders = [r / "nnUNet" / "results" / name for r in roots]
    target = next((f for f in folders if f.is_dir()), None)
    if target is None:
        return [f"release {name} is not installed in {', '.join(map(str, folders))}"]
    try:
        if models_in(target, name, target) is None:
            return [f"{target}: Dataset101_*/Dataset102_* model folders are missing"]
    except WeightsError as err:
        return [str(err)]
    manifest = read_manifest(target)
    if manifest is None:
        return [f"{target}: no readable {MANIFEST_NAME}; reinstall with: {INSTALL_COMMAND} --force"]
    return [p for rel, meta in manifest.get("files", {}).items() if (p := _file_problem(target / rel, meta))]


def _file_problem(path: Path, meta: dict) -> str | None:
    if not path.is_file():
        return f"{path}: missing"
    if path.stat().st_size != meta.get("size"):
        return f"{path}: size {path.stat().st_size} differs from the manifest ({meta.get('size')})"
    if sha256_file(path) != meta.get("sha256"):
        return f"{path}: sha256 differs from the manifest"
    return None


def check_zip(path: Path, artifact: Artifact | None = None, label: str | None = None) -> tuple[str, int]:
    """Size/sha256 (when known), integrity and safety of a zip; returns (sha256, size)."""
    label = label or str(path)
    size = path.stat().st_size
    if artifact and artifact.size is not None and size != artifact.size:
        raise WeightsError(f"{label}: size {size} differs from the expected {artifact.size}")
    digest = sha256_file(path)
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


def listing_models(files: Iterable[str]) -> dict[str, str]:
    """step -> dataset folder, for each Dataset10x_*/<T>__<P>__<C>/ with dataset.json, plans.json, a checkpoint."""
    contents: dict[tuple[str, str], set[str]] = defaultdict(set)
    for name in files:
        parts = name.split("/")
        if len(parts) >= 3:
            contents[(parts[0], parts[1])].add("/".join(parts[2:]))
    found: dict[str, str] = {}
    for (dataset, model), names in sorted(contents.items()):
        step = next((s for s, p in STEP_PREFIXES.items() if dataset.startswith(p)), None)
        complete = set(MODEL_FILES) <= names and any(_CHECKPOINT_RE.fullmatch(n) for n in names)
        if step and complete and model_name_parts(model):
            found.setdefault(step, dataset)
    return found
