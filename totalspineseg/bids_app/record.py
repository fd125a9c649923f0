"""The per-image record: what the participant level writes when an image is complete, and what the group
level and the reports read back.

On disk it is the completion marker `sub-*/log/<image>.done.json`; `ImageRecord.to_json()` writes exactly the
keys earlier releases wrote, and `from_json()` reads those files (missing optional keys get their defaults).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class RecordError(ValueError):
    """A marker file that is not a record (missing keys, wrong types)."""


@dataclass(frozen=True)
class ImageRecord:
    source: str  # path relative to bids_dir (posix)
    image_id: str
    subject: str
    role: str  # "main" or "localizer"
    fingerprint: dict[str, Any] | str  # what made the outputs (options, weights): a change redoes the image
    stats: str  # the statistics TSV, relative to output_dir
    session: str | None = None
    localizer: str | None = None  # source of the localizer that numbered this image
    figure: str | None = None
    outputs: tuple[str, ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict)
    qc: dict[str, Any] = field(default_factory=dict)
    levels: tuple[dict[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    finished: str = ""

    @property
    def flags(self) -> list[dict[str, Any]]:
        return list(self.qc.get("flags", []))

    @property
    def sort_key(self) -> tuple[str, bool, str]:
        """Sessions in order, localizers first, then by source."""
        return self.session or "", self.role != "localizer", self.source

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source, "id": self.image_id, "subject": self.subject, "session": self.session,
            "role": self.role, "localizer": self.localizer, "fingerprint": self.fingerprint,
            "provenance": self.provenance, "outputs": list(self.outputs), "figure": self.figure,
            "stats": self.stats, "qc": self.qc, "levels": list(self.levels), "warnings": list(self.warnings),
            "timings": self.timings, "seconds": self.seconds, "finished": self.finished,
        }

    @classmethod
    def from_json(cls, data: Any) -> ImageRecord:
        if not isinstance(data, dict):
            raise RecordError("not a JSON object")
        missing = [key for key in _REQUIRED if key not in data]
        if missing:
            raise RecordError(f"missing key(s) {', '.join(missing)}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {_FIELD_OF.get(k, k): v for k, v in data.items() if _FIELD_OF.get(k, k) in known}
        for name in ("outputs", "levels", "warnings"):
            if name in values:
                values[name] = tuple(values[name] or ())
        for name in ("provenance", "qc", "timings"):
            if name in values and not isinstance(values[name], dict):
                raise RecordError(f"{name!r} is not an object")
        return cls(**values)


_FIELD_OF = {"id": "image_id"}  # JSON key -> field name, where they differ
_REQUIRED = ("source", "id", "subject", "role", "fingerprint", "stats")
