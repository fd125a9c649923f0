#!/usr/bin/env bash
# Set up the environment if needed, lint, then run the test suite (what CI runs).
#   bash scripts/test.sh                 everything (about 8 minutes on 2 cores)
#   bash scripts/test.sh -m "not slow"   the fast loop (a few minutes)
#   bash scripts/test.sh tests/test_labels.py -x   any pytest arguments
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
