#!/usr/bin/env bash
# GPU check for a fresh GPU machine without network, in under 8 minutes: install from wheels brought along, then
# run the pipeline on the GPU with the demo model and with two ResEnc-L networks (random weights), against the
# CPU (same numbering, Dice per structure, crop box), with per-stage times and model loading reported apart.
# The driver is benchmarks/gpu_check.py; its report is printed and saved in OUT/gpu_check.json.
#
#   bash benchmarks/gpu_check.sh --wheels DIR [--out DIR] [--python PY] [-- DRIVER OPTIONS]
#   bash benchmarks/gpu_check.sh              # a Python that already has CUDA torch and nnunetv2 (--python, $PYTHON,
#                                             # ./.venv/bin/python, python3: the first that imports them)
#   bash benchmarks/gpu_check.sh --dry-run    # no GPU needed: the same driver on the CPU, demo model, small phantom
#
# --wheels DIR: a folder holding a wheel of every package of requirements/lock-cpu.txt except torch, plus a CUDA
# torch 2.13.x wheel with its nvidia-* and triton wheels, for this machine's Python. Fill it on a machine with
# network, for example:
#   grep -v -E '^(#|torch==|$)' requirements/lock-cpu.txt > /tmp/runtime.txt
#   pip download --no-deps -d wheels -r /tmp/runtime.txt
#   pip download -d wheels -c /tmp/runtime.txt torch==2.13.0          # PyPI's CUDA build and its CUDA libraries
# The packages go into a new venv (OUT/venv); the project itself runs from this checkout (PYTHONPATH).
#
# Exit status: 0 every required check passed; 1 a check failed; 64 usage; 66 no such wheel folder;
# 69 no GPU (nvidia-smi missing or listing none, or torch cannot use CUDA); 71 the install failed; 124 over time.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
wheels="" out="$here/_out/gpu_check" python="${PYTHON:-}" dry_run=0 limit_s=${GPU_CHECK_LIMIT_S:-470}
driver_args=()

die() { echo "gpu_check: $1" >&2; exit "${2:-1}"; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) [ $# -ge 2 ] || die "--wheels needs a folder" 64; wheels=$2; shift 2 ;;
        --out) [ $# -ge 2 ] || die "--out needs a folder" 64; out=$2; shift 2 ;;
        --python) [ $# -ge 2 ] || die "--python needs an interpreter" 64; python=$2; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; driver_args+=("$@"); break ;;
        *) usage >&2; die "unknown option $1" 64 ;;
    esac
done
mkdir -p "$out" || die "$out: cannot create the output folder" 73
start=$SECONDS

if [ "$dry_run" = 0 ]; then
    # Before anything is installed: a machine without an NVIDIA GPU stops here, in a second.
    smi=${NVIDIA_SMI:-nvidia-smi}
    command -v "$smi" > /dev/null 2>&1 \
        || die "no GPU: $smi is not on PATH (no NVIDIA driver); nothing was run. --dry-run checks the driver on the CPU." 69
    gpus=$("$smi" -L 2> /dev/null | grep -c '^GPU ' || true)
    [ "${gpus:-0}" -gt 0 ] || die "no GPU: $smi lists no GPU; nothing was run. --dry-run checks the driver on the CPU." 69
    "$smi" -L
fi

if [ -n "$wheels" ]; then
    [ -d "$wheels" ] || die "--wheels $wheels: no such folder" 66
    base=${python:-python3}
    echo "gpu_check: installing from $wheels (no index) into $out/venv"
    "$base" -m venv "$out/venv" || die "cannot create a venv with $base" 71
    pip=("$out/venv/bin/python" -m pip install -q --no-index --find-links "$wheels")
    lock="$root/requirements/lock-cpu.txt"
    grep -v -E '^(#|torch==|$)' "$lock" > "$out/runtime.txt"
    # torch with its CUDA libraries, every shared dependency held at the lock's versions; then the rest as locked
    "${pip[@]}" -c "$out/runtime.txt" "torch==$(sed -n 's/^torch==\([0-9.]*\).*/\1/p' "$lock")" \
        && "${pip[@]}" --no-deps -r "$out/runtime.txt" \
        || die "installing from $wheels failed: it needs every package of $lock except torch, and a CUDA torch with its nvidia-* and triton wheels (see --help)" 71
    python="$out/venv/bin/python"
    echo "gpu_check: installed in $((SECONDS - start)) s"
else
    for candidate in "$python" "$root/.venv/bin/python" python3; do
        [ -n "$candidate" ] || continue
        if "$candidate" -c "import torch, nnunetv2" 2> /dev/null; then python=$candidate; break; fi
        python=""
    done
    [ -n "$python" ] || die "no Python with torch and nnunetv2 found; give --wheels DIR (see --help)" 71
fi

if [ "$dry_run" = 1 ]; then
    driver_args=(--dry-run "${driver_args[@]}")
fi
left=$((limit_s - (SECONDS - start)))
[ "$left" -gt 60 ] || die "only ${left} s left of ${limit_s} s after the install; nothing was run" 124
echo "gpu_check: $("$python" -c 'import sys, torch; print(sys.executable, "torch", torch.__version__, "CUDA", torch.version.cuda)')"
cd "$root" || exit 1
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" \
    timeout --kill-after=10 "$left" "$python" "$here/gpu_check.py" --out "$out" --budget-s "$((left - 30))" \
    "${driver_args[@]}"
rc=$?
[ "$rc" -ne 124 ] || echo "gpu_check: stopped after ${limit_s} s in all (the limit)" >&2
echo "gpu_check: exit $rc after $((SECONDS - start)) s"
exit "$rc"
