#!/usr/bin/env bash
# Create ./.venv with the lean CPU stack (torch 2.13.0 CPU, nnunetv2 2.8.1 without timm/torchvision).
# Idempotent: does nothing when .venv already holds a working install of this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -x .venv/bin/python ] && [ -x .venv/bin/ruff ] && .venv/bin/python -c "import totalspineseg, nnunetv2, torch, bids, pytest, openvino" 2>/dev/null; then
    exit 0
fi
"$PY" -m venv .venv
# The constraints file keeps torch on the CPU wheel: nnunetv2's timm -> torchvision chain would otherwise
# replace it with a multi-GB CUDA build.
.venv/bin/pip install -q -c requirements/constraints-cpu.txt -r requirements/requirements-cpu.txt
.venv/bin/pip install -q --no-deps -r requirements/requirements-nodeps.txt
.venv/bin/pip install -q -c requirements/constraints-cpu.txt -r requirements/requirements-test.txt
.venv/bin/pip install -q --no-deps -e .
