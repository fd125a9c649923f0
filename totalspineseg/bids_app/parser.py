"""The BIDS-App command line: a pure argparse parser plus the label/filter-file readers.

Usage errors exit with 64 (EX_USAGE), as the BIDS-Apps template does, instead of argparse's 2; the exit-code
table at the end of --help is generated from the error classes (`errors.py`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import __version__
from ..console import ArgumentParser, add_logging_options
from ..errors import UsageError
from ..openvino_backend import BACKEND_HELP, BACKENDS, DEFAULT_BACKEND
from ..runtime import PRECISION_HELP, PRECISIONS, TILE_STEP_DEFAULT, TILE_STEP_HELP, parse_tile_step

PROG = "run.py"

DESCRIPTION = """\
TotalSpineSeg BIDS-App: segment and label the vertebrae, intervertebral discs, spinal cord and spinal
canal of every spine MRI in a BIDS dataset, and write BIDS-Derivatives with QC reports.

  participant: segment the selected images (several participant jobs may share one output_dir)
  group:       summarise every processed image: group_spine.tsv and group_report.html
"""

EPILOG = """\
image selection:
  By default the main images are the anatomical T2w and T1w images (datatype anat, .nii/.nii.gz), and an
  image whose entities match --localizer (default acq-localizer) is a localizer: it is segmented first and
  guides the numbering of every main image of the same subject and session. Pick other images with
  --bids-filter-file, a JSON file with the keys "main" and/or "localizer", each a pybids query that
  updates the default one; null means "entity absent" and "*" means "any value". Examples:
    {"main": {"suffix": ["T2w", "T2starw"]}}
    {"main": {"acquisition": "sag"}, "localizer": {"suffix": "T1w", "run": 1}}
  A filter that leaves two localizers for one image makes that image fail; narrow the "localizer" query.
"""


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("bids_dir", type=Path, help="the input BIDS dataset (may be read-only)")
    p.add_argument("output_dir", type=Path,
                   help="the output derivatives folder, e.g. <bids_dir>/derivatives/totalspineseg")
    p.add_argument("analysis_level", help="participant or group")
    p.add_argument("--version", action="version", version=f"totalspineseg BIDS-App version {__version__}")
    _add_filters(p.add_argument_group("selecting images"))
    _add_processing(p.add_argument_group("processing"))
    _add_run_control(p.add_argument_group("run control"))
    return p


def _add_filters(g) -> None:
    g.add_argument("--participant_label", "--participant-label", nargs="+", metavar="LABEL",
                   help="participants to process, with or without 'sub-', or files with one label per line "
                        "(default: all)")
    g.add_argument("--session_label", "--session-label", nargs="+", metavar="LABEL",
                   help="sessions to process, with or without 'ses-', or files with one label per line; "
                        "images without a session are always kept")
    g.add_argument("--bids-filter-file", "--bids_filter_file", type=Path, metavar="FILE",
                   help='JSON with "main" and/or "localizer" pybids queries (see "image selection" below)')
    g.add_argument("--localizer", nargs="+", default=["acq-localizer"], metavar="ENTITY-VALUE",
                   help="entity values that mark a localizer, e.g. acq-localizer acq-scout; 'none' disables "
                        "localizers (default: acq-localizer)")
    g.add_argument("--skip-bids-validation", "--skip_bids_validation", "--skip_bids_validator",
                   action="store_true", help="do not validate the input dataset")
    g.add_argument("--bids-database-dir", type=Path, metavar="DIR",
                   help="a persistent pybids index: built on the first run, reused afterwards (delete it when "
                        "the dataset changes)")


def _add_processing(g) -> None:
    g.add_argument("--weights", default="official", metavar="{official,lite,demo,PATH}",
                   help="model weights: the installed official release (default), a release name, the bundled "
                        "lite model (no download; synthetic images of real anatomy, an early model, not for "
                        "results: see its model card), the bundled demo model (synthetic data only), or a folder")
    g.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help=PRECISION_HELP)
    g.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND, help=BACKEND_HELP)
    g.add_argument("--tile-step", type=parse_tile_step, default=TILE_STEP_DEFAULT, metavar="STEP",
                   help=TILE_STEP_HELP)
    g.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N (default auto)")
    g.add_argument("--nprocs", "--n_cpus", "--n-cpus", type=_positive_int, default=1, metavar="N",
                   help="images processed in parallel, one process each (default 1)")
    g.add_argument("--omp-nthreads", "--threads", type=_positive_int, default=None, metavar="N",
                   help="threads per process (default: available CPUs / nprocs)")
    g.add_argument("--step1", action="store_true", help="run step 1 only (discs numbered, vertebrae not)")
    g.add_argument("--iso", action="store_true", help="also write the outputs on the 1 mm grid (res-1mm)")


def _add_run_control(g) -> None:
    g.add_argument("-w", "--work-dir", type=Path, metavar="DIR",
                   help="scratch folder (default: $TMPDIR or /tmp, else a folder inside output_dir)")
    g.add_argument("--overwrite", action="store_true", help="redo images that are already complete")
    g.add_argument("--reports-only", action="store_true",
                   help="rebuild the participant reports from existing outputs; segment nothing")
    g.add_argument("--dry-run", action="store_true", help="print the plan (images, localizers, outputs) and exit")
    add_logging_options(g)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def read_labels(values: list[str] | None, prefix: str) -> list[str] | None:
    """Labels given on the command line or in files (one per line, '#' comments), without their prefix."""
    if not values:
        return None
    labels: list[str] = []
    for value in values:
        path = Path(value)
        items = _label_file_lines(path) if path.is_file() else [value]
        labels += [item.removeprefix(prefix) for item in items]
    bad = [x for x in labels if not x.isalnum()]
    if bad:
        raise UsageError(f"invalid {prefix.rstrip('-')} label(s): {', '.join(bad)} (letters and digits only)")
    return sorted(set(labels))


def _label_file_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [x for line in lines for x in line.split() if x]


FILTER_KEYS = ("main", "localizer")


def read_filter_file(path: Path | None) -> dict[str, dict]:
    """The --bids-filter-file queries, checked: only the keys "main" and "localizer", each an object."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"--bids-filter-file {path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"--bids-filter-file {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"--bids-filter-file {path}: expected a JSON object with keys {FILTER_KEYS}")
    unknown = sorted(set(data) - set(FILTER_KEYS))
    if unknown:
        raise UsageError(f"--bids-filter-file {path}: unknown key(s) {unknown}; use {list(FILTER_KEYS)}")
    for key, query in data.items():
        if not isinstance(query, dict):
            raise UsageError(f"--bids-filter-file {path}: {key!r} must be an object of entity: value")
    return data


def parse_localizer_specs(values: list[str]) -> list[tuple[str, str]]:
    """``["acq-localizer"]`` -> ``[("acq", "localizer")]``; ``["none"]`` -> ``[]``."""
    if [v.lower() for v in values] == ["none"]:
        return []
    specs = []
    for value in values:
        key, sep, label = value.partition("-")
        if not sep or not key or not label or "_" in value:
            raise UsageError(f"--localizer {value}: expected ENTITY-VALUE such as acq-localizer")
        specs.append((key, label))
    return specs
