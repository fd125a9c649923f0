#!/usr/bin/env bash
# The main job on a fresh machine: install into ./.venv, make the example BIDS dataset (synthetic phantoms:
# 2 participants, a session, narrow-FOV main images with whole-spine localizers), segment it with the bundled
# DEMO model (phantoms only, not for real scans) and build the group QC report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
BIDS=examples/bids
OUT=examples/derivatives/totalspineseg
if [ ! -f "$BIDS/dataset_description.json" ]; then
    .venv/bin/totalspineseg-phantom "$BIDS" --bids --participants 2 --sessions 1 --localizer --seed 1
fi
.venv/bin/python run.py "$BIDS" "$OUT" participant --weights demo
.venv/bin/python run.py "$BIDS" "$OUT" group
echo
echo "Done. Derivatives: $OUT   Group QC report: $OUT/group_report.html"
