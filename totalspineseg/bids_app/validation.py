"""Checks of the input dataset before anything runs: a structural check always, the BIDS validator if present."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
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
    """A validator on PATH, or next to this Python (a virtual environment that is not activated).

    A file of that name that is not executable is returned too, so that running it fails with a warning
    that says why, rather than the validation being skipped without a word.
    """
    here = str(Path(sys.executable).parent)
    for exe in VALIDATORS:
        found = shutil.which(exe) or shutil.which(exe, path=here)
        if found:
            return found
    for exe in VALIDATORS:
        for folder in [*os.environ.get("PATH", "").split(os.pathsep), here]:
            candidate = Path(folder or ".") / exe
            if candidate.is_file():
                return str(candidate)
    return None


def run_validator(bids_dir: Path, scratch: Path) -> None:
    """Run the BIDS validator when one is installed; errors in its report make the dataset invalid (exit 16).

    A validator that cannot run (not executable, a crash, killed, an output that is not its JSON report)
    says nothing about the dataset: a warning names it and the reason, and the run goes on without it.
    """
    exe = find_validator()
    if exe is None:
        log.info("no BIDS validator installed (%s); only the structural check was made", " or ".join(VALIDATORS))
        return
    env = dict(os.environ)
    if not os.access(env.get("DENO_DIR") or "/nonexistent", os.W_OK):
        env["DENO_DIR"] = str(scratch / "deno")  # deno caches there; HOME and /tmp may be read-only
    try:
        proc = subprocess.run([exe, str(bids_dir), "--json"], capture_output=True, text=True, errors="replace",
                              env=env, check=False)
    except OSError as exc:
        _could_not_run(exe, exc.strerror or str(exc))
        return
    report = _report(proc.stdout)
    if report is None:
        if proc.returncode == 0:
            log.info("%s: %s found no errors", bids_dir, exe)
        else:
            _could_not_run(exe, f"{_how_it_ended(proc.returncode)} without its JSON report"
                                f"{_last_line(proc.stderr or proc.stdout)}")
        return
    codes = _error_codes(report)
    if codes is None:
        _could_not_run(exe, f"{_how_it_ended(proc.returncode)} with an output that is not its JSON report"
                            f"{_last_line(proc.stderr)}")
        return
    if codes:
        raise InvalidDataset(f"{bids_dir}: the BIDS validator ({exe}) reports errors: {', '.join(codes)}; "
                             f"fix them or pass --skip-bids-validation")
    log.info("%s: %s found no errors", bids_dir, exe)


def _could_not_run(exe: str, why: str) -> None:
    log.warning("the BIDS validator %s could not run (%s); going on with only the structural check "
                "(--skip-bids-validation skips the validator)", exe, why)


def _how_it_ended(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"it was killed by {name}"
    return f"it exited with code {returncode}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return f"; its last line: {lines[-1][:200]}" if lines else ""


def _report(stdout: str) -> dict | None:
    """The validator's JSON report, or None when its output is not one."""
    try:
        data = json.loads(stdout)
    except (json.JSONDecodeError, TypeError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("issues"), dict) else None


def _error_codes(report: dict) -> list[str] | None:
    """The codes of the errors in a report; None when the report has neither validator's layout."""
    issues = report["issues"]
    if isinstance(issues.get("issues"), list):  # the deno validator
        found = [i.get("code", "?") for i in issues["issues"] if isinstance(i, dict) and i.get("severity") == "error"]
    elif isinstance(issues.get("errors"), list):  # the legacy node validator
        found = [i.get("key", "?") if isinstance(i, dict) else "?" for i in issues["errors"]]
    else:
        return None
    return sorted(set(map(str, found)))
