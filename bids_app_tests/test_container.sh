#!/usr/bin/env bash
# The container the way a cluster runs it, with the demo model: read-only root file system, no network, an
# arbitrary user, the dataset mounted read-only, and NO tmpfs and no TMPDIR (the app's scratch falls back to
# <output>/.work). Participant per participant, then group; then, inside the image: the file list against
# expected_outputs.txt, the group table against the one recorded with the same model, the BIDS validator,
# and the installed packages against requirements/lock-cpu.txt.
#
#   bids_app_tests/test_container.sh [WORKDIR]
#
# Environment:
#   ENGINE      docker (default) or podman
#   IMAGE       image tag (default totalspineseg:test)
#   BUILD       1 (default) builds the image first: docker/build.sh --weights demo --tag IMAGE $BUILD_OPTS;
#               0 uses IMAGE as it is
#   BUILD_OPTS  more docker/build.sh options; offline, e.g. "--base localhost/debian-py:bookworm
#               --torch-wheel /path/to/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
#   WEIGHTS     demo (default): the demo model, table expected_group_spine_demo.tsv (recorded on the host with
#               run_example.sh); oracle: tests/run_bids_app.py, whose stand-in networks answer with the
#               phantom ground truth, table expected_group_spine.tsv
#   RTOL        tolerance of the table check (default 0.02 with demo: the same model and torch; 0.01 oracle)
set -euo pipefail
{  # read whole before it runs
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
engine=${ENGINE:-docker}
image=${IMAGE:-totalspineseg:test}
weights=${WEIGHTS:-demo}
work=${1:-$(mktemp -d)}
mkdir -p "$work/out" "$work/checks"
chmod 0777 "$work" "$work/out" "$work/checks"   # the container user (12345) must be able to write there
step() { echo "== $* ($SECONDS s)"; }

if [ "${BUILD:-1}" = 1 ]; then
    step "build"
    # shellcheck disable=SC2086  # BUILD_OPTS is a list of options
    ENGINE=$engine "$root/docker/build.sh" --weights demo --tag "$image" ${BUILD_OPTS:-}
fi
"$engine" image inspect -f 'image {{.RepoTags}}: {{.Size}} bytes' "$image"

run() {  # the locked-down container; extra engine options first, then "--" and the app's arguments
    local opts=()
    while [ "$1" != "--" ]; do opts+=("$1"); shift; done
    shift
    "$engine" run --rm --read-only --network none --user 12345:12345 "${opts[@]}" "$image" "$@"
}

step "version"
run -- --version
step "example dataset"
run --entrypoint totalspineseg-phantom -v "$work:/scratch" -- /scratch/ds --bids --participants 2 --localizer --seed 0
mounts=(-v "$work/ds:/data:ro" -v "$work/out:/out")
app=() expected=$here/expected_group_spine_demo.tsv rtol=${RTOL:-0.02}
if [ "$weights" = oracle ]; then
    mounts+=(--entrypoint python -v "$root/tests:/tests:ro")
    app=(/tests/run_bids_app.py) expected=$here/expected_group_spine.tsv rtol=${RTOL:-0.01}
fi
for label in 01 02; do
    step "participant $label"
    if [ ${#app[@]} -eq 0 ]; then options=(--weights "$weights"); else options=(); fi
    run "${mounts[@]}" -- "${app[@]}" /data /out participant --participant_label "$label" "${options[@]}"
done
step "group"
run "${mounts[@]}" -- "${app[@]}" /data /out group
[ -d "$work/out/.work" ] || { echo "no /out/.work: where did the scratch files go?" >&2; exit 1; }
echo "scratch: /out/.work (no /tmp, no TMPDIR, no HOME)"

step "checks (inside the image)"
run --entrypoint python -v "$work/out:/out:ro" -v "$here:/tests:ro" -v "$root/requirements:/requirements:ro" \
    -v "$work/checks:/scratch" -v "$expected:/expected.tsv:ro" -- \
    /tests/check_outputs.py /out --expected-list /tests/expected_outputs.txt --expected-tsv /expected.tsv \
    --rtol "$rtol" --validator bids-validator-deno --scratch /scratch --lock /requirements/lock-cpu.txt
echo "container test passed ($SECONDS s); outputs in $work/out"
exit 0
}
