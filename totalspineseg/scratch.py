"""A writable scratch folder for every library's temporary files and caches, chosen before they are imported.

In a locked-down container (read-only root, no /tmp mount, any UID, no HOME) libraries fail in their own
ways: torch's inductor asks `tempfile.gettempdir()` at import time, matplotlib and fontconfig want a cache,
numba and triton too. `prepare_scratch` picks the first writable place of: the work folder (`-w`), `$TMPDIR`,
/tmp, then `<output>/.work`, and points every such location there unless it is already usable.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, MutableMapping
from pathlib import Path

from .errors import CannotCreate
from .fsutil import folder_write_problem

log = logging.getLogger(__name__)

SYSTEM_TMP = Path("/tmp")
CHOSEN = "TOTALSPINESEG_SCRATCH"  # set once chosen: later calls (and child processes) reuse it, never nest
# variable -> folder below the scratch folder; each is set only when unset or not writable
CACHE_VARIABLES = {
    "MPLCONFIGDIR": "matplotlib",
    "XDG_CACHE_HOME": "cache",  # fontconfig, and others that follow the XDG spec
    "TORCHINDUCTOR_CACHE_DIR": "torchinductor",
    "TRITON_CACHE_DIR": "triton",
    "NUMBA_CACHE_DIR": "numba",
    "TORCH_HOME": "torch",
}


def writable(path: Path) -> bool:
    """`path` exists or can be made, and a file can be created in it."""
    return folder_write_problem(path) is None


def candidates(work_dir: Path | None, output_dir: Path | None, environ: MutableMapping[str, str]) -> list[Path]:
    user = f"totalspineseg-{os.getuid()}" if hasattr(os, "getuid") else "totalspineseg"
    found: list[Path] = []
    if work_dir is not None:
        found.append(Path(work_dir))
    elif environ.get(CHOSEN):
        found.append(Path(environ[CHOSEN]))
    if environ.get("TMPDIR"):
        found.append(Path(environ["TMPDIR"]) / user)
    found.append(SYSTEM_TMP / user)
    if output_dir is not None:
        found.append(Path(output_dir) / ".work")
    return found


def prepare_scratch(work_dir: Path | None = None, output_dir: Path | None = None,
                    environ: MutableMapping[str, str] = os.environ, places: Iterable[Path] | None = None) -> Path:
    """Choose the scratch folder and point TMPDIR, `tempfile` and the library caches at it; returns it."""
    places = list(places) if places is not None else candidates(work_dir, output_dir, environ)
    scratch = next((p for p in places if writable(p)), None)
    if scratch is None:
        raise CannotCreate(f"no writable scratch folder ({', '.join(map(str, places))}); pass -w DIR or mount one")
    tmp = scratch / "tmp"
    tmp.mkdir(exist_ok=True)
    environ["TMPDIR"] = str(tmp)
    tempfile.tempdir = str(tmp)
    for variable, sub in CACHE_VARIABLES.items():
        current = environ.get(variable)
        if not current or not writable(Path(current)):
            environ[variable] = str(scratch / sub)
    environ[CHOSEN] = str(scratch)
    log.debug("scratch folder: %s", scratch)
    return scratch
