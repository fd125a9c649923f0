"""TotalSpineSeg re-implementation: instance segmentation and labeling of the spine in MRI."""

from pathlib import Path as _Path


def _read_version() -> str:
    here = _Path(__file__).resolve().parent
    for candidate in (here / "VERSION", here.parent / "version"):
        if candidate.is_file():
            return candidate.read_text().strip()
    try:
        from importlib.metadata import version

        return version("totalspineseg")
    except Exception:  # noqa: BLE001  # pragma: no cover - not installed and no version file
        return "0+unknown"


__version__ = _read_version()
