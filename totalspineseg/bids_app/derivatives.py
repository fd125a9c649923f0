"""BIDS-Derivatives naming and the small text files of the output dataset.

Names are built from the source file's own entities, in the schema's order, never from pybids' default path
patterns (those drop `run` and `chunk`). The source suffix (T2w, T1w) is dropped, as BIDS requires for
derivatives; when two sources of one session differ only by their suffix, the suffix is folded into `acq`
so that their outputs cannot collide (`acq-T2w`, or `acq-sagT2w` when `acq-sag` was already there).

Dataset-level files (dataset_description.json, the look-up tables, .bidsignore, logs/CITATION.md) are shared
by every participant job writing into one output folder, possibly at the same moment: `write_shared` writes
them only when absent or different, through a temporary file and an atomic rename.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .. import __version__
from .. import labels as L
from ..fsutil import atomic_write

BIDS_VERSION = "1.10.0"
APP_NAME = "totalspineseg"

#: Source entities carried into derivative names: the anat entities that the dseg/probseg rules allow.
KEPT_ENTITIES = ("sub", "ses", "task", "acq", "ce", "rec", "run", "echo", "part", "chunk")
#: Derivative entities this app adds, in schema order after the kept ones.
ADDED_ENTITIES = ("res", "label", "desc")

ISO_RES = "1mm"
ISO_RESOLUTION = "1 mm isotropic voxels on the canonical (RAS+) grid, in the source image's scanner space"

CONTAINER_ENV = {"Type": "TOTALSPINESEG_CONTAINER_TYPE", "Tag": "TOTALSPINESEG_CONTAINER_TAG",
                 "URI": "TOTALSPINESEG_CONTAINER_URI"}

# The deno validator matches folders only without a trailing slash; "**/" reaches into participant folders.
BIDSIGNORE = "\n".join(["**/figures", "**/log", "logs", "*.html", "**/*_stats.tsv", "**/*_stats.json",
                        "group_*.tsv", ".work", ""])


# --- names ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceName:
    """The parts of a raw BIDS file name: its entities (short keys, in file order), suffix and extension."""

    entities: dict[str, str]
    suffix: str
    extension: str


def parse_name(path: str | Path) -> SourceName:
    """Split ``sub-01_ses-02_acq-sag_T2w.nii.gz`` into entities, suffix and extension."""
    name = PurePosixPath(str(path)).name
    stem, dot, ext = name.partition(".")
    *pairs, suffix = stem.split("_")
    entities = {}
    for pair in pairs:
        key, sep, value = pair.partition("-")
        if not sep or not value:
            raise ValueError(f"{name}: {pair!r} is not a key-value entity")
        entities[key] = value
    if "sub" not in entities:
        raise ValueError(f"{name}: no sub- entity")
    return SourceName(entities, suffix, dot + ext)


def base_entities(source: str | Path, fold_suffix: bool = False) -> dict[str, str]:
    """The entities of a source that its derivatives keep; `fold_suffix` appends the suffix to `acq`."""
    parsed = parse_name(source)
    kept = {k: parsed.entities[k] for k in KEPT_ENTITIES if k in parsed.entities}
    if fold_suffix:
        kept["acq"] = kept.get("acq", "") + parsed.suffix
        kept = {k: kept[k] for k in KEPT_ENTITIES if k in kept}
    return kept


def build_name(entities: dict[str, str], suffix: str, extension: str, **added: str | None) -> str:
    """A file name: the kept entities, then res/label/desc in schema order, then suffix and extension."""
    unknown = set(added) - set(ADDED_ENTITIES)
    if unknown:
        raise ValueError(f"unsupported entities {sorted(unknown)}")
    parts = [f"{k}-{entities[k]}" for k in KEPT_ENTITIES if k in entities]
    parts += [f"{k}-{added[k]}" for k in ADDED_ENTITIES if added.get(k)]
    return "_".join(parts + [suffix]) + extension


def subject_dir(entities: dict[str, str]) -> PurePosixPath:
    """``sub-01`` or ``sub-01/ses-02``: the participant (and session) folder of a file."""
    folder = PurePosixPath(f"sub-{entities['sub']}")
    return folder / f"ses-{entities['ses']}" if "ses" in entities else folder


# --- per-image outputs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    """One derivative image: what it holds and where it goes (relative to the output dataset)."""

    kind: str  # "spine", "step1", "levels", "cord", "canal"
    grid: str  # "native" or "iso"
    path: PurePosixPath

    @property
    def sidecar(self) -> PurePosixPath:
        return self.path.with_name(self.path.name.replace(".nii.gz", ".json"))


# kind -> (name entities, description); the final labels are "spine", the step-1 labels "step1".
_KINDS = {
    "spine": ({"desc": "spine"}, "dseg",
              "Vertebrae, intervertebral discs, spinal cord and spinal canal, each vertebra and disc numbered"),
    "step1": ({"desc": "step1"}, "dseg",
              "Step-1 labels: numbered discs, C1, other vertebrae as one class, spinal cord and canal"),
    "levels": ({"desc": "levels"}, "dseg",
               "Single-voxel intervertebral levels on the canal centreline (1 = C1, 3 = C2-C3, ...)"),
    "cord": ({"label": "SC"}, "probseg", "Soft (0-1) spinal cord segmentation"),
    "canal": ({"label": "canal"}, "probseg", "Soft (0-1) spinal canal segmentation, cord included"),
}
KINDS = tuple(_KINDS)


def description(kind: str) -> str:
    return _KINDS[kind][2]


def output_path(base: dict[str, str], kind: str, grid: str = "native") -> PurePosixPath:
    added, suffix, _ = _KINDS[kind]
    name = build_name(base, suffix, ".nii.gz", res=ISO_RES if grid == "iso" else None, **added)
    return subject_dir(base) / "anat" / name


def planned_outputs(base: dict[str, str], step1_only: bool, iso: bool) -> list[Output]:
    """Every image a job may write (a kind the pipeline does not produce is simply skipped)."""
    kinds = [k for k in KINDS if not (step1_only and k == "spine")]
    grids = ("native", "iso") if iso else ("native",)
    return [Output(k, g, output_path(base, k, g)) for g in grids for k in kinds]


def stats_path(base: dict[str, str]) -> PurePosixPath:
    return subject_dir(base) / "anat" / build_name(base, "stats", ".tsv", desc="spine")


def figure_path(base: dict[str, str]) -> PurePosixPath:
    return PurePosixPath(f"sub-{base['sub']}") / "figures" / build_name(base, "dseg", ".jpg", desc="spine")


def image_id(base: dict[str, str]) -> str:
    """A short unique id of an image within the dataset: its kept entities, e.g. ``sub-01_ses-02_run-1``."""
    return "_".join(f"{k}-{base[k]}" for k in KEPT_ENTITIES if k in base)


# --- sidecars -----------------------------------------------------------------------------------------


def bids_uri(path: str | PurePosixPath, dataset: str = "raw") -> str:
    """``bids:raw:sub-01/anat/x.nii.gz`` (a raw file) or ``bids::sub-01/...`` (this dataset, dataset="")."""
    return f"bids:{dataset}:{PurePosixPath(str(path)).as_posix()}"


def sidecar(output: Output, sources: list[str], provenance: dict, extra: dict | None = None) -> dict:
    """The JSON sidecar of one derivative image."""
    meta = {"Description": description(output.kind), "Sources": sources, "SpatialReference": "orig",
            "Manual": False}
    if output.grid == "iso":
        meta["Resolution"] = ISO_RESOLUTION
    meta.update(provenance)
    meta.update(extra or {})
    return meta


def level_coordinates(level_rows: list[dict]) -> dict:
    """Level name -> voxel index (0-based, on the file's grid) and world coordinate (mm, RAS+)."""
    return {row["name"]: {"Level": row["level"], "Voxel": row["voxel"], "WorldMM": row["world_mm"]}
            for row in level_rows}


# --- dataset-level files ---------------------------------------------------------------------------


def container_info(environ=os.environ) -> dict | None:
    """The GeneratedBy.Container object, from the variables the Dockerfile / Singularity.def set."""
    info = {key: environ[var] for key, var in CONTAINER_ENV.items() if environ.get(var)}
    return info if "Type" in info else None


def dataset_description(raw_description: dict, bids_dir: str, environ=os.environ) -> dict:
    """The derivative dataset_description.json. Deterministic, so parallel jobs write identical files."""
    generated = {"Name": APP_NAME, "Version": __version__,
                 "Description": "Spine segmentation and labeling with TotalSpineSeg (nnU-Net)"}
    container = container_info(environ)
    if container:
        generated["Container"] = container
    source = {"URL": Path(bids_dir).resolve().as_uri()}
    for key_in, key_out in (("DatasetDOI", "DOI"), ("DatasetVersion", "Version")):
        if raw_description.get(key_in):
            source[key_out] = raw_description[key_in]
    raw_name = raw_description.get("Name") or "the input dataset"
    return {
        "Name": f"TotalSpineSeg segmentations of {raw_name}",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "SourceDatasets": [source],
        "DatasetLinks": {"raw": source["URL"]},
        "HowToAcknowledge": "Cite TotalSpineSeg and nnU-Net: see logs/CITATION.md",
    }


def _mapping(structure: L.Structure) -> str:
    """The BIDS common label a structure maps to: 4 bone, 5 soft tissue, 3 CSF; n/a for the cord."""
    return {"vertebra": "4", "sacrum": "4", "disc": "5", "canal": "3"}.get(structure.kind, "n/a")


def _hex(colour: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


def dseg_lut(step1: bool = False) -> str:
    """The look-up table of the final labels (or, `step1`, of the step-1 labels) as dseg.tsv text."""
    rows = ["index\tname\tabbreviation\tcolor\tmapping"]
    for value, s in L.FINAL.items():
        name, abbreviation = s.name, s.abbreviation
        if step1 and value == L.SACRUM:
            # Step 1 does not number vertebrae: this value holds every vertebra but C1, sacrum included.
            name, abbreviation = "vertebrae", "vertebrae"
        elif step1 and s.kind in ("vertebra", "sacrum") and value != L.C1:
            continue
        rows.append(f"{value}\t{name}\t{abbreviation}\t{_hex(s.colour)}\t{_mapping(s)}")
    return "\n".join(rows) + "\n"


def levels_lut() -> str:
    rows = ["index\tname\tabbreviation"]
    rows += [f"{v}\tlevel_{name.replace('-', '_')}\t{name.replace('-', '')}" for v, name in L.LEVEL_NAMES.items()]
    return "\n".join(rows) + "\n"


def descriptions_tsv() -> str:
    rows = ["desc_id\tdescription"]
    rows += [f"desc-{added['desc']}\t{text}" for added, _, text in _KINDS.values() if "desc" in added]
    return "\n".join(rows) + "\n"


CITATION = """\
# How to cite

These outputs were produced by the totalspineseg BIDS-App, version {version}, a re-implementation of the
TotalSpineSeg method. Please cite the method and the network framework it is built on:

- **TotalSpineSeg.** Warszawer Y, Molinier N, Valošek J, Shirbint E, Benveniste PL, Achiron A, Eshaghi A,
  Cohen-Adad J. Fully Automatic Vertebrae and Spinal Cord Segmentation Using a Hybrid Approach Combining
  nnU-Net and Iterative Algorithm. Proceedings of the 32nd Annual Meeting of ISMRM, 2024.
- **nnU-Net.** Isensee F, Jaeger PF, Kohl SAA, Petersen J, Maier-Hein KH. nnU-Net: a self-configuring method
  for deep learning-based biomedical image segmentation. Nature Methods 18, 203-211 (2021).
  doi:10.1038/s41592-020-01008-z

## Methods paragraph (a suggestion)

Vertebrae, intervertebral discs, the spinal cord and the spinal canal were segmented with TotalSpineSeg
(totalspineseg {version}). A first nnU-Net model segments the spine and four landmark discs (C2-C3, C7-T1,
T12-L1, L5-S); an iterative algorithm numbers the discs from these landmarks (or from a whole-spine
localizer image of the same session, when one was acquired); a second nnU-Net model then separates and
numbers the vertebrae. Images are processed on a 1 mm isotropic grid and the labels are resampled back to
each image's own grid.
"""


README = """\
# TotalSpineSeg derivatives

Written by the totalspineseg BIDS-App, version {version}. Per image, in `sub-<label>/[ses-<label>/]anat/`:

| file | content |
|---|---|
| `*_desc-spine_dseg.nii.gz` | final labels: vertebrae, discs, cord, canal (look-up table: `desc-spine_dseg.tsv`) |
| `*_desc-step1_dseg.nii.gz` | step-1 labels: discs numbered, vertebrae not (`desc-step1_dseg.tsv`) |
| `*_desc-levels_dseg.nii.gz` | one voxel per intervertebral level (`desc-levels_dseg.tsv`); coordinates in its JSON |
| `*_label-SC_probseg.nii.gz`, `*_label-canal_probseg.nii.gz` | soft cord and canal maps |
| `*_res-1mm_*` | the same on the 1 mm grid (with `--iso`) |
| `*_desc-spine_stats.tsv` | volume of every structure; its JSON holds the automatic QC flags |

QC: `sub-<label>.html` (one page per participant, figures in `sub-<label>/figures/`), and after the group
level `group_report.html` and `group_spine.tsv`. Logs and crash files are in `sub-<label>/log/`.
How to cite: `logs/CITATION.md`.
"""


def shared_files(raw_description: dict, bids_dir: str, environ=os.environ) -> dict[str, str]:
    """Relative path -> text of every dataset-level file."""
    description = dataset_description(raw_description, bids_dir, environ)
    return {
        "dataset_description.json": json.dumps(description, indent=2) + "\n",
        "desc-spine_dseg.tsv": dseg_lut(),
        "desc-step1_dseg.tsv": dseg_lut(step1=True),
        "desc-levels_dseg.tsv": levels_lut(),
        "descriptions.tsv": descriptions_tsv(),
        ".bidsignore": BIDSIGNORE,
        "README.md": README.format(version=__version__),
        "logs/CITATION.md": CITATION.format(version=__version__),
    }


# --- writing -----------------------------------------------------------------------------------------


def write_json(path: Path, obj) -> Path:
    return atomic_write(path, json.dumps(obj, indent=2) + "\n")


def write_shared(path: Path, text: str) -> bool:
    """Write a dataset-level file unless it already holds exactly `text`. Returns True when it wrote.

    Concurrent jobs write identical text, so whichever rename lands last changes nothing.
    """
    path = Path(path)
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    atomic_write(path, text)
    return True


def write_dataset_files(output_dir: Path, raw_description: dict, bids_dir: str, environ=os.environ) -> list[str]:
    """Write (or leave alone, when identical) every dataset-level file; returns the ones written."""
    written = []
    for rel, text in shared_files(raw_description, bids_dir, environ).items():
        if write_shared(Path(output_dir) / rel, text):
            written.append(rel)
    return written
