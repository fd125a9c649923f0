"""Checks of the input dataset before anything runs: a structural check always, the BIDS validator if present."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import InvalidDataset, MissingInput

log = logging.getLogger(__name__)

VALIDATORS = ("bids-validator-deno", "bids-validator")


def read_description(bids_dir: Path) -> dict:
    """The input's dataset_description.json; a folder without one is not a BIDS dataset."""
    if not bids_dir.is_dir():
        raise MissingInput(f"{bids_dir}: no such folder (is it mounted in the container?)")
    path = bids_dir / "dataset_description.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidDataset(f"{bids_dir}: not a BIDS dataset (no dataset_description.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidDataset(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidDataset(f"{path}: not a JSON object")
    return data


def find_validator() -> str | None:
    """A validator on PATH, or next to this Python (a virtual environment that is not activated)."""
    here = str(Path(sys.executable).parent)
    for exe in VALIDATORS:
        found = shutil.which(exe) or shutil.which(exe, path=here)
        if found:
            return found
    return None


def run_validator(bids_dir: Path, scratch: Path) -> None:
    """Run the BIDS validator when one is installed; its errors make the dataset invalid (exit 16)."""
    exe = find_validator()
    if exe is None:
        log.info("no BIDS validator installed (%s); only the structural check was made", " or ".join(VALIDATORS))
        return
    env = dict(os.environ)
    if not os.access(env.get("DENO_DIR") or "/nonexistent", os.W_OK):
        env["DENO_DIR"] = str(scratch / "deno")  # deno caches there; HOME and /tmp may be read-only
    proc = subprocess.run([exe, str(bids_dir), "--json"], capture_output=True, text=True, env=env, check=False)
    if proc.returncode == 0:
        log.info("%s: %s found no errors", bids_dir, exe)
        return
    codes = _error_codes(proc.stdout)
    detail = ", ".join(codes) if codes else (proc.stderr.strip().splitlines() or ["see its output"])[-1]
    raise InvalidDataset(f"{bids_dir}: the BIDS validator ({exe}) reports errors: {detail}; "
                         f"fix them or pass --skip-bids-validation")


def _error_codes(stdout: str) -> list[str]:
    try:
        issues = json.loads(stdout)["issues"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return []
    if isinstance(issues.get("issues"), list):  # the deno validator
        found = [i.get("code", "?") for i in issues["issues"] if i.get("severity") == "error"]
    else:  # the legacy node validator
        found = [i.get("key", "?") for i in issues.get("errors", [])]
    return sorted(set(found))
