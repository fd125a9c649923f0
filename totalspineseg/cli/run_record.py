"""What made each image's outputs in a `totalspineseg` output folder, so that a re-run knows what to redo.

One JSON file per image, `OUTPUT/logs/<name>.json`, written after all of the image's outputs: the options that
change the outputs, the weights, the version, the files written, warnings and timings. An image counts as
complete only when its record exists, was made with the same options, and every file it lists exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..fsutil import atomic_write
from ..runtime import TILE_STEP_DEFAULT

log = logging.getLogger("totalspineseg")

RECORD_FOLDER = "logs"

# option key -> how the user spells it, for "redoing: --loc changed"
OPTION_NAMES = {
    "step1": "--step1", "iso": "--iso", "localizer": "--loc", "folders": "--keep-only/--keep-intermediate",
    "disc_completion": "--no-disc-completion", "weights": "--weights", "precision": "--precision",
    "tile_step": "--tile-step", "version": "the totalspineseg version",
}


def record_path(output: Path, name: str) -> Path:
    return output / RECORD_FOLDER / f"{name}.json"


def _file_identity(path: Path | None) -> str | None:
    """A localizer file by content: a new localizer at the same path redoes the image."""
    if path is None:
        return None
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return f"{Path(path).name}#{digest}"


def image_options(args: Any, folders: tuple[str, ...], localizer: Path | None, release: str,
                  sha256: dict[str, str], precision: str = "fp32",
                  tile_step: float = TILE_STEP_DEFAULT) -> dict[str, Any]:
    """The options that change what is written for one image."""
    return {
        "step1": bool(args.step1), "iso": bool(args.iso), "localizer": _file_identity(localizer),
        "folders": sorted(folders), "disc_completion": not args.no_disc_completion,
        "weights": {"release": release, "sha256": dict(sorted(sha256.items()))}, "precision": precision,
        "tile_step": tile_step, "version": __version__,
    }


@dataclass(frozen=True)
class RunRecord:
    options: dict[str, Any]
    outputs: tuple[str, ...]  # relative to the output folder

    def to_json(self, extra: dict[str, Any]) -> dict[str, Any]:
        return {"options": self.options, "outputs": list(self.outputs), **extra,
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def read_record(output: Path, name: str) -> RunRecord | None:
    try:
        data = json.loads(record_path(output, name).read_text())
        return RunRecord(dict(data["options"]), tuple(data["outputs"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def why_redo(output: Path, name: str, options: dict[str, Any], expected: list[Path]) -> str | None:
    """None when the image is complete with these options, else the reason to redo it."""
    record = read_record(output, name)
    if record is None:
        if any(p.exists() for p in expected):
            return "its outputs have no record of how they were made"
        return "not done yet"
    changed = [OPTION_NAMES.get(k, k) for k in sorted(set(options) | set(record.options))
               if options.get(k) != record.options.get(k)]
    if changed:
        return f"{', '.join(changed)} changed since it was made"
    missing = [rel for rel in record.outputs if not (output / rel).is_file()]
    if missing:
        return f"{len(missing)} of its outputs are missing ({missing[0]} ...)"
    return None


def write_record(output: Path, name: str, record: RunRecord, extra: dict[str, Any]) -> Path:
    return atomic_write(record_path(output, name), json.dumps(record.to_json(extra), indent=2) + "\n")
