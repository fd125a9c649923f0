"""Atomic file writes: readers (and a re-run after a crash) never see half a file.

A file is written to a hidden temporary name in its own folder, then renamed over the target. The
temporary names share one pattern (`.<name>.<random>.tstmp<ext>`), so that stale ones left by a killed
process can be recognised and swept.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

TEMP_MARK = ".tstmp"
NIFTI_SUFFIXES = (".nii.gz", ".nii")


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
    return path.with_name(f".{stem}.{secrets.token_hex(6)}{TEMP_MARK}{ext}")


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and TEMP_MARK in name


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


def atomic_write(path: str | os.PathLike, data: str | bytes, mode: int | None = None) -> Path:
    """Write text (UTF-8) or bytes to `path` atomically; returns the path."""
    path = Path(path)
    with atomic_path(path, mode) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
    return path
