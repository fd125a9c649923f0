#!/usr/bin/env bash
# BIDS-Apps style test on the host (no container): make the example phantom dataset, run the participant
# level once per participant, then the group level; check the file list, the group table and the validator.
#
#   bids_app_tests/run_example.sh [WORKDIR]
#
# Environment: PYTHON (default .venv/bin/python), WEIGHTS (default demo); EXPECTED, the table to compare with
# (default: expected_group_spine_demo.tsv, recorded with the demo model, for WEIGHTS=demo, else the
# ground-truth expected_group_spine.tsv) and RTOL (default 0.02 for the demo table, 0.2 for the ground truth);
# RECORD=FILE writes the group table to FILE (how expected_group_spine_demo.tsv was made).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
py=${PYTHON:-$root/.venv/bin/python}
work=${1:-$(mktemp -d)}
ds=$work/ds
out=$work/out

"$py" -c 'import sys; from totalspineseg.cli.phantom import main; sys.exit(main(sys.argv[1:]))' \
    "$ds" --bids --participants 2 --localizer --seed 0
for label in 01 02; do
    "$py" "$root/run.py" "$ds" "$out" participant --participant_label "$label" --weights "${WEIGHTS:-demo}"
done
"$py" "$root/run.py" "$ds" "$out" group

[ -z "${RECORD:-}" ] || cp "$out/group_spine.tsv" "$RECORD"

if [ "${WEIGHTS:-demo}" = demo ]; then expected=$here/expected_group_spine_demo.tsv rtol=0.02
else expected=$here/expected_group_spine.tsv rtol=0.2; fi
validator=$(command -v bids-validator-deno || ls "$(dirname "$py")/bids-validator-deno" 2>/dev/null || true)
"$py" "$here/check_outputs.py" "$out" --expected-tsv "${EXPECTED:-$expected}" --rtol "${RTOL:-$rtol}" \
    ${validator:+--validator "$validator"}
echo "outputs in $out"
