"""The job plan: which images to segment, with which localizer, and under which output names.

Everything is decided here, before any image is read: a pybids index restricted to what is needed (anat
folders of the requested participants), one query for the main images, one per localizer marker, and the
pairing of each main image with the localizer of the same subject and session.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from ..errors import NothingSelected, UsageError
from . import derivatives as D

if TYPE_CHECKING:
    from bids import BIDSLayout

log = logging.getLogger(__name__)

NIFTI = [".nii", ".nii.gz"]
DEFAULT_MAIN = {"datatype": "anat", "suffix": ["T2w", "T1w"], "extension": NIFTI}
DEFAULT_LOCALIZER = {"datatype": "anat", "extension": NIFTI}

# BIDS file-name keys -> pybids entity names, so filters and --localizer may use either spelling.
ENTITY_NAMES = {"sub": "subject", "ses": "session", "acq": "acquisition", "ce": "ceagent", "rec": "reconstruction",
                "dir": "direction", "mod": "modality", "trc": "tracer"}

IGNORED = ["code", "stimuli", "sourcedata", "models", "derivatives", re.compile(r"/\."),
           # every datatype folder but anat (works with and without a session level)
           re.compile(r"^/sub-[^/]+/(?:ses-[^/]+/)?(?!anat(?:/|$)|ses-)[^/.]+(?:/|$)")]


@dataclass(frozen=True)
class Job:
    """One image to segment and the names of what it writes."""

    source: str  # path relative to bids_dir (posix)
    role: str  # "main" or "localizer"
    base: tuple[tuple[str, str], ...]  # the entities its outputs are named with
    localizer: Job | None = None
    error: str | None = None  # a planning problem: the job fails without running

    @property
    def entities(self) -> dict[str, str]:
        return dict(self.base)

    @property
    def subject(self) -> str:
        return self.entities["sub"]

    @property
    def session(self) -> str | None:
        return self.entities.get("ses")

    @property
    def image_id(self) -> str:
        return D.image_id(self.entities)

    @property
    def stem(self) -> str:
        return PurePosixPath(self.source).name.split(".")[0]


@dataclass
class Plan:
    jobs: list[Job]
    subjects: list[str] = field(default_factory=list)

    def units(self) -> list[list[Job]]:
        """Jobs grouped by subject and session, localizers first: one unit runs in one process."""
        groups: dict[tuple, list[Job]] = defaultdict(list)
        for job in self.jobs:
            groups[(job.subject, job.session or "")].append(job)
        return [sorted(g, key=lambda j: (j.role != "localizer", j.source)) for _, g in sorted(groups.items())]


# --- the pybids index --------------------------------------------------------------------------------


def build_layout(bids_dir: Path, participants: list[str] | None, database_dir: Path | None,
                 skip: str | None = None) -> BIDSLayout:
    """A BIDSLayout of the anat folders only; of the requested participants only, unless it is persistent.

    `skip`: a folder inside bids_dir not to index (the output folder, when it lies there).
    """
    from bids import BIDSLayout
    from bids.layout import BIDSLayoutIndexer

    ignore = list(IGNORED) + ([skip] if skip else [])
    if participants and database_dir is None:
        wanted = "|".join(re.escape(p) for p in participants)
        ignore.append(re.compile(rf"^/sub-(?!(?:{wanted})(?:/|$))"))
    indexer = BIDSLayoutIndexer(validate=False, index_metadata=False, ignore=ignore)
    kwargs = {}
    if database_dir is not None:
        kwargs["database_path"] = Path(database_dir)
    return BIDSLayout(str(bids_dir), validate=False, indexer=indexer, **kwargs)


def _pybids_query(query: dict) -> dict:
    """A filter-file query in pybids terms: short entity keys renamed, null -> NONE, "*" -> ANY."""
    from bids.layout import Query

    def value(v):
        if v is None:
            return Query.NONE
        if v == "*":
            return Query.ANY
        return v

    return {ENTITY_NAMES.get(k, k): value(v) for k, v in query.items()}


def _get(layout, query: dict) -> list[str]:
    try:
        files = layout.get(return_type="file", invalid_filters="error", **query)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"invalid BIDS query {query}: {exc}") from None
    root = Path(layout.root)
    return sorted(Path(f).relative_to(root).as_posix() for f in files)


# --- selection --------------------------------------------------------------------------------------


def _keep_sessions(files: list[str], sessions: list[str] | None) -> list[str]:
    if not sessions:
        return files
    return [f for f in files if D.parse_name(f).entities.get("ses", None) in (None, *sessions)]


def _is_localizer(path: str, specs: list[tuple[str, str]]) -> bool:
    entities = D.parse_name(path).entities
    return any(entities.get(k) == v for k, v in specs)


def select_main(layout, filters: dict, specs, subjects, sessions) -> list[str]:
    query = _pybids_query({**DEFAULT_MAIN, **filters.get("main", {})})
    if subjects:
        query["subject"] = subjects
    files = _keep_sessions(_get(layout, query), sessions)
    return [f for f in files if not _is_localizer(f, specs)]


def select_localizers(layout, filters: dict, specs, subjects, sessions) -> list[str]:
    found: set[str] = set()
    for key, label in specs:
        query = _pybids_query({**DEFAULT_LOCALIZER, key: label, **filters.get("localizer", {})})
        if subjects:
            query["subject"] = subjects
        found.update(_get(layout, query))
    return _keep_sessions(sorted(found), sessions)


def _group_key(path: str) -> tuple[str, str | None]:
    entities = D.parse_name(path).entities
    return entities["sub"], entities.get("ses")


def pair_localizers(mains: list[str], localizers: list[str], across_sessions: bool) -> dict[str, list[str]]:
    """Main image -> its candidate localizers: same subject and session (any session if `across_sessions`)."""
    by_group: dict[tuple, list[str]] = defaultdict(list)
    for loc in localizers:
        sub, ses = _group_key(loc)
        by_group[(sub, None if across_sessions else ses)].append(loc)
    out = {}
    for main in mains:
        sub, ses = _group_key(main)
        out[main] = by_group.get((sub, None if across_sessions else ses), [])
    return out


# --- names ------------------------------------------------------------------------------------------


def output_bases(sources: list[str]) -> dict[str, dict[str, str] | None]:
    """Source -> the entities its outputs are named with; None when two sources cannot be told apart.

    Sources that would share a name because they differ only by suffix get the suffix folded into acq.
    """
    bases = {s: D.base_entities(s) for s in sources}
    clashes = _clashing(bases)
    for s in clashes:
        bases[s] = D.base_entities(s, fold_suffix=True)
    still = _clashing(bases)
    return {s: (None if s in still else b) for s, b in bases.items()}


def _clashing(bases: dict[str, dict]) -> set[str]:
    seen: dict[tuple, list[str]] = defaultdict(list)
    for s, b in bases.items():
        seen[tuple(sorted(b.items()))].append(s)
    return {s for group in seen.values() if len(group) > 1 for s in group}


# --- the plan ---------------------------------------------------------------------------------------


def _localizer_job(source: str, base) -> Job:
    if base is None:
        return Job(source, "localizer", tuple(D.base_entities(source).items()),
                   error="another selected image would get the same output names")
    return Job(source, "localizer", tuple(base.items()))


def _main_job(source: str, base, candidates: list[str], loc_jobs: dict[str, Job]) -> Job:
    entities = tuple((base or D.base_entities(source)).items())
    if base is None:
        return Job(source, "main", entities, error="another selected image would get the same output names")
    if len(candidates) > 1:
        names = ", ".join(PurePosixPath(c).name for c in candidates)
        return Job(source, "main", entities, error=f"ambiguous localizer ({names}); choose one with the "
                                                   f'"localizer" query of --bids-filter-file')
    return Job(source, "main", entities, localizer=loc_jobs[candidates[0]] if candidates else None)


def make_plan(layout: BIDSLayout, filters: dict, specs: list[tuple[str, str]], subjects: list[str] | None,
              sessions: list[str] | None) -> Plan:
    """Select, pair and name every image. Raises NothingSelected when nothing matches."""
    if subjects:
        # A folder listing: pybids' get_subjects() loads the entities of every indexed file.
        found = {p.name.removeprefix("sub-") for p in Path(layout.root).glob("sub-*") if p.is_dir()}
        missing = sorted(set(subjects) - found)
        if missing:
            raise NothingSelected(f"participant(s) not found in the dataset: {', '.join(missing)}")
    mains = select_main(layout, filters, specs, subjects, sessions)
    if not mains:
        raise NothingSelected("no image matches the selection (anat T2w/T1w by default; see --bids-filter-file)")
    localizers = select_localizers(layout, filters, specs, subjects, sessions) if specs else []
    across = "session" in filters.get("localizer", {}) or "ses" in filters.get("localizer", {})
    candidates = pair_localizers(mains, localizers, across)
    used = sorted({c[0] for c in candidates.values() if len(c) == 1})
    bases = _bases_per_session(mains + used)
    loc_jobs = {loc: _localizer_job(loc, bases[loc]) for loc in used}
    jobs = list(loc_jobs.values()) + [_main_job(m, bases[m], candidates[m], loc_jobs) for m in mains]
    jobs.sort(key=lambda j: (j.subject, j.session or "", j.role != "localizer", j.source))
    return Plan(jobs, sorted({j.subject for j in jobs}))


def _bases_per_session(sources: list[str]) -> dict[str, dict | None]:
    groups: dict[tuple, list[str]] = defaultdict(list)
    for s in sources:
        groups[_group_key(s)].append(s)
    out: dict[str, dict | None] = {}
    for group in groups.values():
        out.update(output_bases(group))
    return out


def describe(plan: Plan, status=lambda job: "") -> str:
    """The plan as text, one line per image: role, source, localizer, main output and status."""
    lines = []
    for unit in plan.units():
        first = unit[0]
        header = f"sub-{first.subject}" + (f" ses-{first.session}" if first.session else "")
        lines.append(f"{header}: {len(unit)} image(s)")
        for job in unit:
            lines.append("  " + _describe_job(job, status(job)))
    n_loc = sum(j.role == "localizer" for j in plan.jobs)
    n_err = sum(j.error is not None for j in plan.jobs)
    lines.append(f"{len(plan.jobs)} image(s) in {len(plan.subjects)} participant(s): "
                 f"{len(plan.jobs) - n_loc} main, {n_loc} localizer, {n_err} with errors")
    return "\n".join(lines)


def _describe_job(job: Job, status: str) -> str:
    text = f"{job.role:<9} {job.source}"
    if job.localizer is not None:
        text += f"  [localizer: {PurePosixPath(job.localizer.source).name}]"
    if job.error:
        return text + f"  ERROR: {job.error}"
    text += f"  -> {D.output_path(job.entities, 'spine').parent}/{job.image_id}_*"
    return text + (f"  ({status})" if status else "")
