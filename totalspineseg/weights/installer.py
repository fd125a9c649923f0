"""Installing a release: gather the two models (download with resume, local zips or folders), build the
release folder next to its final place, write the manifest, then swap it in, under a per-release lock."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from http.client import HTTPException, HTTPResponse
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from totalspineseg import __version__
from totalspineseg.errors import WeightsError

from .checks import CHUNK, check_zip, listing_models, sha256_file
from .locate import ModelPaths, find_in_path, install_root, models_in
from .registry import (
    MANIFEST_NAME,
    STEP_DATASETS,
    STEP_PREFIXES,
    Artifact,
    Release,
    get_release,
    model_name_parts,
    release_artifacts,
)

log = logging.getLogger(__name__)

InstallSource = str | Path | Sequence[str | Path] | None  # what `install` accepts as `source`


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
    source: InstallSource = None,
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
    return models_in(target, rel.name, root)


def is_installed(root: str | Path, release: str | None = None) -> bool:
    name = get_release(release).name
    return _complete(Path(root) / "nnUNet" / "results" / name, name, Path(root)) is not None


def _complete(target: Path, release: str, root: Path) -> ModelPaths | None:
    try:
        return models_in(target, release, root)
    except WeightsError:
        return None


@contextlib.contextmanager
def _install_lock(results: Path, release: str) -> Iterator[None]:
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


def _gather(source: InstallSource, rel: Release, exports: Path, quiet: bool) -> dict[str, _Source]:
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
    found = find_in_path(folder, release, False)
    if found:
        return [_model_source(step, getattr(found, step), str(folder)) for step in STEP_DATASETS]
    zips = sorted(folder.glob("*.zip")) + sorted((folder / "nnUNet" / "exports").glob("*.zip"))
    for_release = [z for z in zips if z.name.endswith(f"_{release}.zip")]
    if not zips:
        raise WeightsError(f"{folder}: no Dataset101_*/Dataset102_* models or zips found")
    return [s for z in (for_release or zips) for s in _zip_sources(z, str(z), None)]


def _model_source(step: str, model: Path, origin: str) -> _Source:
    if model_name_parts(model.name) is None:
        raise WeightsError(f"{model}: expected a <Trainer>__<Plans>__<config> folder name")
    parent = model.parent.name
    dataset = parent if parent.startswith(STEP_PREFIXES[step]) else STEP_DATASETS[step]
    return _Source(step, "dir", model, dataset, origin)


def _zip_sources(path: Path, origin: str, artifact: Artifact | None) -> list[_Source]:
    digest, size = check_zip(path, artifact, label=origin)
    with zipfile.ZipFile(path) as zf:
        datasets = listing_models(i.filename for i in zf.infolist() if not i.is_dir())
    if not datasets:
        raise WeightsError(
            f"{origin}: no model inside (expected "
            f"Dataset10x_*/<Trainer>__<Plans>__<config>/{{dataset.json,plans.json,fold_N/checkpoint_*.pth}})"
        )
    return [_Source(step, "zip", path, ds, origin, digest, size) for step, ds in datasets.items()]


# --- download -------------------------------------------------------------------------------------


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


def _resumes(response: HTTPResponse, offset: int) -> bool:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return response.status == 206 and match is not None and int(match.group(1)) == offset


def _total_size(response: HTTPResponse, offset: int) -> int | None:
    match = re.search(r"/(\d+)$", response.headers.get("Content-Range", ""))
    if match:
        return int(match.group(1))
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _copy_body(url: str, response: HTTPResponse, part: Path, offset: int, total: int | None, quiet: bool) -> None:
    disable = quiet or not sys.stderr.isatty()
    with (
        open(part, "ab" if offset else "wb") as out,
        tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=part.name[:-5], disable=disable) as bar,
    ):
        try:
            while block := response.read(CHUNK):
                out.write(block)
                bar.update(len(block))
        except (OSError, HTTPException) as err:
            raise WeightsError(f"{url}: download interrupted ({err}); run the same command again to resume") from None
    got = part.stat().st_size
    if total is not None and got < total:
        raise WeightsError(
            f"{url}: download interrupted ({got} of {total} bytes); run the same command again to resume"
        )


# --- staging and swap -----------------------------------------------------------------------------


def _stage_and_swap(sources: dict[str, _Source], release: str, results: Path) -> None:
    """Build the release folder next to its final place, check it, then rename it into place."""
    staging = Path(tempfile.mkdtemp(prefix=f".{release}.staging-", dir=results))
    try:
        for src in sources.values():
            _place(src, staging)
        if models_in(staging, release, staging) is None:
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
                shutil.copyfileobj(data, out, CHUNK)


def _write_manifest(staging: Path, release: str, sources: dict[str, _Source]) -> None:
    files = {
        f.relative_to(staging).as_posix(): {"size": f.stat().st_size, "sha256": sha256_file(f)}
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
