"""HTML reports: one page per participant, and one self-contained group page for reviewing many images.

Both are built from the per-image records the participant level leaves (see `bids_app.participant`).
The participant page links its QC figures; the group page embeds its thumbnails (base64 JPEG), CSS and
script, so it works offline as a single file. Its behaviour (sorting, keyboard review, rating export)
lives in `data/report/group.js`.
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from string import Template

from .. import __version__
from .. import labels as L
from .record import ImageRecord

THUMB_HEIGHT_PX = 420


def _asset(name: str) -> str:
    return resources.files("totalspineseg").joinpath("data", "report", name).read_text(encoding="utf-8")


def _esc(value) -> str:
    return html.escape("" if value is None else str(value))


# --- shared pieces ------------------------------------------------------------------------------------


def level_range(qc: dict) -> str:
    top, bottom = qc.get("top") or "", qc.get("bottom") or ""
    return f"{top}\u2013{bottom}" if top and bottom and top != bottom else top or bottom


def participant_link(record: ImageRecord) -> str:
    return f"sub-{record.subject}.html#{record.image_id}"


def thumbnail_data_uri(path: Path, height: int = THUMB_HEIGHT_PX) -> str | None:
    """A JPEG downscaled to `height` pixels, as a data URI; None when the file is missing or unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.height > height:
                img = img.resize((max(1, round(img.width * height / img.height)), height), Image.LANCZOS)
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=82)
    except (OSError, UnidentifiedImageError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# --- participant page ---------------------------------------------------------------------------------


def _flags_html(flags: list[dict]) -> str:
    if not flags:
        return '<span class="ok">no QC flag</span>'
    items = "".join(f"<li><span class=\"flag\">{_esc(f['code'])}</span>{_esc(f['message'])}</li>" for f in flags)
    return f"<ul>{items}</ul>"


def _facts_html(record: ImageRecord) -> str:
    qc, prov = record.qc, record.provenance
    facts = [("source", record.source), ("role", record.role), ("localizer", record.localizer or "none"),
             ("vertebrae / discs", f"{qc.get('n_vertebrae', '')} / {qc.get('n_discs', '')}"),
             ("levels covered", level_range(qc)), ("cord volume", f"{qc.get('cord_mm3', 0):,.0f} mm\u00b3"),
             ("canal volume", f"{qc.get('canal_mm3', 0):,.0f} mm\u00b3"),
             ("cord in canal", "" if qc.get("cord_in_canal") is None else f"{qc['cord_in_canal']:.1%}"),
             ("model", f"{prov.get('ModelRelease', '')} on {prov.get('Device', '')}"),
             ("time", f"{record.seconds:.1f} s, finished {record.finished}")]
    return "<dl>" + "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in facts) + "</dl>"


def _levels_html(levels: list[dict]) -> str:
    if not levels:
        return ""
    rows = "".join(f"<tr><td>{_esc(r['name'])}</td><td>{_esc(r['voxel'])}</td><td>{_esc(r['world_mm'])}</td></tr>"
                   for r in levels)
    return ("<details><summary>Level coordinates</summary><table><tr><th>level</th><th>voxel</th>"
            f"<th>world (mm, RAS+)</th></tr>{rows}</table></details>")


def _volumes_html(volumes: list[tuple[int, float]]) -> str:
    if not volumes:
        return ""
    rows = "".join(f"<tr><td>{v}</td><td>{_esc(L.FINAL[v].name if v in L.FINAL else v)}</td>"
                   f"<td class=\"num\">{mm3:,.0f}</td></tr>" for v, mm3 in volumes)
    return ("<details><summary>Volumes per structure</summary><table><tr><th>label</th><th>structure</th>"
            f"<th>mm\u00b3</th></tr>{rows}</table></details>")


def _image_section(record: ImageRecord, volumes: list[tuple[int, float]]) -> str:
    rid = _esc(record.image_id)
    figure = (f'<img class="figure" src="{_esc(record.figure)}" alt="QC figure of {rid}">'
              if record.figure else "<p>No QC figure.</p>")
    outputs = "".join(f'<li><a href="{_esc(p)}">{_esc(Path(p).name)}</a></li>' for p in record.outputs)
    return (f'<section id="{rid}"><h2>{rid} <small>({_esc(record.role)})</small></h2>'
            f"{_facts_html(record)}<h3>QC flags</h3>{_flags_html(record.flags)}"
            f"{figure}{_levels_html(list(record.levels))}{_volumes_html(volumes)}"
            f"<details><summary>Files</summary><ul>{outputs}</ul></details></section>")


def _error_section(name: str, text: str) -> str:
    return f'<section class="error"><h3>{_esc(name)}</h3><pre>{_esc(text)}</pre></section>'


def participant_page(subject: str, records: list[ImageRecord], volumes: dict[str, list[tuple[int, float]]],
                     crashes: list[tuple[str, str]]) -> str:
    """The HTML page of one participant: one section per image, then the errors (crash files)."""
    nav = "".join(f'<a href="#{_esc(r.image_id)}">{_esc(r.image_id)}</a>' for r in records)
    body = "".join(_image_section(r, volumes.get(r.image_id, [])) for r in records)
    errors = "".join(_error_section(name, text) for name, text in crashes)
    errors = f"<h2>Errors</h2>{errors}" if errors else ""
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>sub-{_esc(subject)}</title>"
            f"<style>{_asset('participant.css')}</style></head><body><h1>sub-{_esc(subject)}</h1>"
            f"<p>totalspineseg {_esc(__version__)} &middot; {len(records)} image(s) &middot; "
            f"{len(crashes)} error(s)</p><nav>{nav}</nav>{body}{errors}</body></html>\n")


# --- group page ---------------------------------------------------------------------------------------


def group_row(index: int, record: ImageRecord, thumb: str | None) -> dict:
    """What the group page's script needs to show one image."""
    qc, flags = record.qc, record.flags
    return {"index": index, "id": record.image_id, "source": record.source, "role": record.role,
            "subject": record.subject, "session": record.session, "link": participant_link(record),
            "thumb": thumb, "n_vertebrae": qc.get("n_vertebrae"), "n_discs": qc.get("n_discs"),
            "range": level_range(qc), "cord_mm3": qc.get("cord_mm3"), "canal_mm3": qc.get("canal_mm3"),
            "n_flags": len(flags), "flags": flags}


def group_page(rows: list[dict], title: str = "TotalSpineSeg group QC report") -> str:
    data = json.dumps(rows, separators=(",", ":")).replace("</", "<\\/")
    return Template(_asset("group.html")).substitute(
        title=_esc(title), style=_asset("group.css"), script=_asset("group.js"), data=data,
        version=_esc(__version__), count=len(rows),
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
