"""The BIDS-App: `run.py bids_dir output_dir {participant,group}`.

parser       the command line (pure argparse)
validation   input dataset checks
plan         pybids index, image selection, localizer pairing, output names: the job list
models       where the networks come from (weights, or an injected stand-in)
participant  resumable per-image runs, completion markers, crash files, parallel units
record       the per-image record (completion marker) that participant writes and group/report read
outputs      the derivatives of one image
derivatives  BIDS-Derivatives names, sidecars, look-up tables, dataset_description.json
qc           per-image measurements and QC flags
group        participant pages, group_spine.tsv, group_report.html
report       the HTML of those pages
app          the entry point: checks, planning, then the participant or group level

Importing the package loads none of them: tooling that only needs `derivatives` pays for nothing else.
"""

from __future__ import annotations


def main(argv: list[str] | None = None, models=None) -> int:
    """The BIDS-App entry point (see `bids_app.app.main`)."""
    from .app import main as _main

    return _main(argv, models)


__all__ = ["main"]
