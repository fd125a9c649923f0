"""Write one segmented image's derivatives: NIfTI files and sidecars, statistics, QC figure.

Every file is staged in the caller's `fsutil.StagedWrites` (a hidden temporary name beside its final one);
nothing becomes visible until the caller commits the whole set, so a failure halfway leaves the previous
outputs of the image exactly as they were.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from .. import __version__, volume
from ..fsutil import StagedWrites
from ..pipeline import Outputs, SegmentationResult
from ..runtime import TILE_STEP_DEFAULT
from . import derivatives as D
from . import qc
from .plan import Job

log = logging.getLogger(__name__)

_ARRAYS = {"spine": "step2", "step1": "step1", "levels": "levels", "cord": "cord", "canal": "canal"}
_LABEL_KINDS = ("spine", "step1", "levels")

STATS_COLUMNS = {
    "index": "Label value (see desc-spine_dseg.tsv at the dataset root)",
    "name": "Structure name",
    "abbreviation": "Structure abbreviation",
    "voxels": "Number of voxels with this label",
    "volume_mm3": {"Description": "Volume of the structure", "Units": "mm^3"},
}


def json_text(obj) -> str:
    """A JSON file's text, formatted exactly like `derivatives.write_json`."""
    return json.dumps(obj, indent=2) + "\n"


def provenance(release: str, sha256: dict, device: str, precision: str = "fp32",
               tile_step: float = TILE_STEP_DEFAULT, backend: str = "torch") -> dict:
    return {"SoftwareName": D.APP_NAME, "SoftwareVersion": __version__, "ModelRelease": release,
            "ModelChecksums": {k: v for k, v in sha256.items() if v}, "Device": device, "Precision": precision,
            "Backend": backend, "TileStep": tile_step}


def _localizer_meta(job: Job) -> dict:
    if job.localizer is None:
        return {}
    seg = D.output_path(job.localizer.entities, "spine")
    return {"Localizer": {"Source": D.bids_uri(job.localizer.source), "Segmentation": D.bids_uri(seg, "")}}


def _sources(job: Job, kind: str, step1_only: bool) -> list[str]:
    sources = [D.bids_uri(job.source)]
    if job.localizer is not None and kind in _LABEL_KINDS:
        loc_kind = "step1" if step1_only else "spine"
        sources.append(D.bids_uri(D.output_path(job.localizer.entities, loc_kind), ""))
    return sources


def _level_rows(result: SegmentationResult, grid: str) -> list[dict]:
    if grid == "iso":
        result = dataclasses.replace(result, native=None)  # level_table() reads the final grid
    return result.level_table()


def localizer_output_kind(step1_only: bool) -> str:
    return "step1" if step1_only else "spine"


def write_images(out_dir: Path, job: Job, result: SegmentationResult, source: volume.Volume, step1_only: bool,
                 iso: bool, prov: dict, staged: StagedWrites) -> None:
    """The NIfTI derivatives and their sidecars, staged in `staged`."""
    extra_all = _localizer_meta(job)
    for out in D.planned_outputs(job.entities, step1_only, iso):
        grid: Outputs = result.native if out.grid == "native" else result.iso
        array = getattr(grid, _ARRAYS[out.kind])
        if array is None:
            continue
        is_labels = out.kind in _LABEL_KINDS
        header = source.header if out.grid == "native" else None
        volume.save_nifti(out_dir / out.path, array, grid.grid.affine,
                          dtype=np.uint8 if is_labels else np.float32, header=header, staged=staged)
        extra = dict(extra_all)
        if out.kind == "levels":
            extra["LevelCoordinates"] = D.level_coordinates(_level_rows(result, out.grid))
        meta = D.sidecar(out, _sources(job, out.kind, step1_only), prov, extra)
        staged.write(out_dir / out.sidecar, json_text(meta))


def final_labels(grid: Outputs, step1_only: bool) -> np.ndarray:
    return grid.step1 if step1_only or grid.step2 is None else grid.step2


def write_stats(out_dir: Path, job: Job, result: SegmentationResult, step1_only: bool,
                staged: StagedWrites) -> qc.ImageQC:
    """The per-structure statistics TSV and its sidecar (QC flags included), staged in `staged`."""
    native = result.final
    assessed = qc.assess(final_labels(native, step1_only), native.grid.affine, result.warnings, step1_only,
                         flags_on=(final_labels(result.iso, step1_only), result.iso.grid.affine))
    path = out_dir / D.stats_path(job.entities)
    staged.write(path, qc.stats_table(assessed))
    meta = {**STATS_COLUMNS, "Sources": [D.bids_uri(job.source)], "QC": assessed.summary()}
    staged.write(path.with_suffix(".json"), json_text(meta))
    return assessed


def write_figure(out_dir: Path, job: Job, result: SegmentationResult, step1_only: bool,
                 staged: StagedWrites) -> str | None:
    """The QC JPEG (drawn on the 1 mm grid), staged in `staged`.

    A drawing problem is logged, never fatal (a figure must not cost the segmentation); a failure to write
    it (a full disk) is fatal like any other write, since the rest of the set would not fit either.
    """
    try:
        from ..preview import render_preview_bytes
    except ImportError:  # pragma: no cover - preview is part of the package
        log.info("no preview module; QC figure skipped")
        return None
    rel = D.figure_path(job.entities)
    iso = result.iso
    try:
        data = render_preview_bytes(result.iso_image, final_labels(iso, step1_only), iso.grid.affine,
                                    fmt="jpeg", title=f"{job.image_id} ({Path(job.source).name})",
                                    levels=iso.levels, width_px=1200)
    except Exception as exc:  # noqa: BLE001 - a figure must not cost the segmentation
        log.warning("%s: QC figure failed: %s", job.source, exc)
        return None
    staged.write(out_dir / rel, data)
    return rel.as_posix()
