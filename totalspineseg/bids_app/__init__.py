"""The BIDS-App: `run.py bids_dir output_dir {participant,group}`.

parser      the command line (pure argparse)
validation  input dataset checks
plan        pybids index, image selection, localizer pairing, output names: the job list
models      where the networks come from (weights, or an injected stand-in)
participant resumable per-image runs, completion markers, crash files, parallel units
outputs     the derivatives of one image
group       participant pages, group_spine.tsv, group_report.html
main        the entry point and its exit codes
"""

from .main import main

__all__ = ["main"]
