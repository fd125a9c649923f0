"""Atomic file writes: readers (and a re-run after a crash) never see half a file.

A file is written to a hidden temporary name in its own folder, then renamed over the target. A set of files
that belong together is staged the same way and renamed only when every one of them is written
(`StagedWrites`), so that a failure leaves the previous complete set in place. The temporary names share one
pattern (`.<name>.<host>-<pid>.<random>.tstmp<ext>`), so that the ones a killed process left behind can be
recognised and swept (`sweep_stale_temps`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

TEMP_MARK = ".tstmp"
NIFTI_SUFFIXES = (".nii.gz", ".nii")
HOST_TAG = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
_TEMP_RE = re.compile(r"^\..+\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)\.[0-9a-f]{12}" + re.escape(TEMP_MARK))
# Temporary names of releases before 0.2: `.x.<hex>.nii.gz`, `.x.<pid>.<hex>.tmp`, `.x.<mkstemp>.tmp`.
_LEGACY_TEMP_RE = re.compile(r"^\..+\.([0-9a-f]{12}(\.nii(\.gz)?)?|\d+\.[0-9a-f]{8}\.tmp|[A-Za-z0-9_]{8}\.tmp)$")
STALE_AFTER_S = 24 * 3600  # a temporary file of another host, or of an old release, is stale after this


def current_umask() -> int:
    """The process umask, read without the race of setting and restoring it where Linux allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _extension(name: str) -> str:
    """The extension a temporary name must keep (nibabel and zipfile pick the format from it)."""
    lower = name.lower()
    for ext in (*NIFTI_SUFFIXES, ".json", ".tsv", ".zip", ".html", ".jpg", ".png", ".svg", ".txt"):
        if lower.endswith(ext) and len(name) > len(ext):
            return name[-len(ext):]
    return ""


def temp_name_for(path: Path) -> Path:
    ext = _extension(path.name)
    stem = path.name[: len(path.name) - len(ext)] if ext else path.name
    return path.with_name(f".{stem}.{HOST_TAG}-{os.getpid()}.{secrets.token_hex(6)}{TEMP_MARK}{ext}")


def is_temp_name(name: str) -> bool:
    return bool(_TEMP_RE.match(name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def is_stale_temp(path: Path, now: float | None = None) -> bool:
    """A temporary file whose writer is gone: a dead process of this host, or an old one of another host."""
    match = _TEMP_RE.match(path.name)
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except OSError:
        return False
    if match is None:
        return bool(_LEGACY_TEMP_RE.match(path.name)) and age > STALE_AFTER_S
    if match["host"] == HOST_TAG:
        pid = int(match["pid"])
        return pid != os.getpid() and not _alive(pid)
    return age > STALE_AFTER_S


def sweep_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the stale temporary files of this tool below `folder`; returns what was removed."""
    removed = []
    root = Path(folder)
    if not root.is_dir():
        return removed
    for path in root.rglob(".*"):
        if path.is_file() and not path.is_symlink() and is_stale_temp(path):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    if removed:
        log.info("%s: removed %d temporary file(s) left by an interrupted run", root, len(removed))
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on failure it is removed.

    The file gets `mode`, by default what `open()` would give a new file (0o666 less the umask), so an
    atomic write is readable exactly like a plain one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name_for(path)
    try:
        yield tmp
        os.chmod(tmp, (0o666 & ~current_umask()) if mode is None else mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def folder_write_problem(folder: str | os.PathLike) -> str | None:
    """Why files cannot be created in `folder` (made if missing), or None when they can.

    A file is really created: `os.access` misses root on a read-only mount, NFS root squashing, a full disk.
    """
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        probe = temp_name_for(Path(folder) / "probe")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def atomic_write(path: str | os.PathLike, data: str | bytes, mode: int | None = None) -> Path:
    """Write text (UTF-8) or bytes to `path` atomically; returns the path."""
    path = Path(path)
    with atomic_path(path, mode) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
    return path


class StagedWrites:
    """Files that become visible together: each is written to a temporary name, all are renamed on `commit()`.

    Used as a context manager, an exception discards every staged file, so the previous versions (if any)
    stay exactly as they were. Renames happen in the order the files were staged; put the file that declares
    the set complete last.
    """

    def __init__(self, mode: int | None = None):
        self.mode = mode
        self._staged: list[tuple[Path, Path]] = []  # (temporary, final)

    def path(self, final: str | os.PathLike) -> Path:
        """A temporary path to write `final` to (its folder is created)."""
        final = Path(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_name_for(final)
        self._staged.append((tmp, final))
        return tmp

    def write(self, final: str | os.PathLike, data: str | bytes) -> Path:
        tmp = self.path(final)
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        return Path(final)

    @property
    def finals(self) -> list[Path]:
        return [final for _, final in self._staged]

    def commit(self) -> list[Path]:
        mode = (0o666 & ~current_umask()) if self.mode is None else self.mode
        for tmp, _ in self._staged:
            os.chmod(tmp, mode)
        done = []
        try:
            for tmp, final in self._staged:
                os.replace(tmp, final)
                done.append(final)
        finally:
            self.discard()  # whatever was not renamed (a failure part-way) goes, never left as litter
        return done

    def discard(self) -> None:
        for tmp, _ in self._staged:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._staged = []

    def __enter__(self) -> StagedWrites:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()
        elif self._staged:
            self.commit()
