"""Reports from what the participant level left on disk: participant pages, group table and group page.

The per-image completion markers (``sub-*/log/*.done.json``) are the records; the statistics TSVs give the
volumes; crash files are the errors. Nothing here needs the input dataset.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .. import labels as L
from ..errors import MissingInput
from ..fsutil import atomic_write
from . import report
from .record import ImageRecord, RecordError

log = logging.getLogger(__name__)

GROUP_TSV = "group_spine.tsv"
GROUP_HTML = "group_report.html"
SUMMARY_COLUMNS = ("n_vertebrae", "n_discs", "top", "bottom", "cord_mm3", "canal_mm3", "cord_in_canal")


def _subject_dirs(output_dir: Path, subjects: list[str] | None) -> list[Path]:
    dirs = sorted(p for p in output_dir.glob("sub-*") if p.is_dir())
    return [d for d in dirs if subjects is None or d.name.removeprefix("sub-") in subjects]


def records_of(subject_dir: Path) -> list[ImageRecord]:
    records = []
    for marker in sorted((subject_dir / "log").glob("*.done.json")):
        try:
            records.append(ImageRecord.from_json(json.loads(marker.read_text())))
        except (OSError, json.JSONDecodeError, RecordError) as exc:
            log.warning("%s: unreadable record (%s); ignored", marker, exc)
    return sorted(records, key=lambda r: r.sort_key)


def crashes_of(subject_dir: Path) -> list[tuple[str, str]]:
    return [(p.name, p.read_text(errors="replace")) for p in sorted((subject_dir / "log").glob("crash-*.txt"))]


def volumes_of(output_dir: Path, record: ImageRecord) -> list[tuple[int, float]]:
    """(label, mm3) from the image's statistics TSV; empty when it cannot be read."""
    try:
        lines = (output_dir / record.stats).read_text().splitlines()[1:]
    except OSError:
        return []
    rows = [line.split("\t") for line in lines if line.strip()]
    return [(int(r[0]), float(r[4])) for r in rows if len(r) >= 5]


def write_participant_report(output_dir: Path, subject: str) -> Path:
    subject_dir = output_dir / f"sub-{subject}"
    records = records_of(subject_dir)
    volumes = {r.image_id: volumes_of(output_dir, r) for r in records}
    page = report.participant_page(subject, records, volumes, crashes_of(subject_dir))
    return atomic_write(output_dir / f"sub-{subject}.html", page)


# --- group --------------------------------------------------------------------------------------------


def _fmt(value) -> str:
    if value is None or value == "":
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def group_table(output_dir: Path, records: list[ImageRecord]) -> str:
    """group_spine.tsv: one row per image, its summary numbers, QC flags and the volume of every label."""
    labels = list(L.FINAL)
    header = (["participant_id", "session_id", "image_id", "source", "role", "localizer", *SUMMARY_COLUMNS,
               "n_flags", "qc_flags"] + [f"volume_{L.FINAL[v].abbreviation}_mm3" for v in labels])
    lines = ["\t".join(header)]
    for r in records:
        volumes = dict(volumes_of(output_dir, r))
        row = [f"sub-{r.subject}", f"ses-{r.session}" if r.session else "n/a", r.image_id, r.source, r.role,
               r.localizer or "n/a", *(r.qc.get(c) for c in SUMMARY_COLUMNS), len(r.flags),
               ",".join(sorted({f["code"] for f in r.flags})) or "n/a"] + [volumes.get(v, 0.0) for v in labels]
        lines.append("\t".join(_fmt(x) for x in row))
    return "\n".join(lines) + "\n"


def run_group(output_dir: Path, subjects: list[str] | None = None) -> tuple[Path, Path]:
    """Write group_spine.tsv and group_report.html; MissingInput when no image has been processed."""
    records = [r for d in _subject_dirs(output_dir, subjects) for r in records_of(d)]
    if not records:
        raise MissingInput(f"{output_dir}: no processed image found; run the participant level first")
    tsv = atomic_write(output_dir / GROUP_TSV, group_table(output_dir, records))
    rows = [report.group_row(i + 1, r, _thumbnail(output_dir, r)) for i, r in enumerate(records)]
    html_path = atomic_write(output_dir / GROUP_HTML, report.group_page(rows))
    log.info("group level: %d image(s) -> %s, %s", len(records), tsv, html_path)
    return tsv, html_path


def _thumbnail(output_dir: Path, record: ImageRecord) -> str | None:
    return report.thumbnail_data_uri(output_dir / record.figure) if record.figure else None
