#!/usr/bin/env bash
# Build the Docker image and run the example dataset in it the way a cluster would: read-only root
# filesystem, no network, an arbitrary user, the input mounted read-only. Participant per participant,
# then group; then the file list, the group table and the BIDS validator (inside the image).
#
#   bids_app_tests/test_container.sh [WORKDIR]
#
# Environment:
#   ENGINE      docker (default) or podman
#   IMAGE       image tag (default totalspineseg:test)
#   BUILD       1 (default) builds the image first; 0 uses an existing one
#   BUILD_ARGS  extra docker build arguments, e.g. on a machine without Docker Hub and download.pytorch.org:
#               "--build-arg BASE_IMAGE=localhost/debian-py:bookworm --build-arg WEIGHTS=none
#                --build-arg PIP_CA_BUNDLE=/tmp/build/docker/ca.crt" (with the torch wheel in docker/wheels/)
#   WEIGHTS     --weights of the runs (default demo); "oracle" runs tests/run_bids_app.py instead, whose
#               stand-in networks answer with the phantom ground truth (checks the container, not a model)
#   RTOL        tolerance of the group table check (default 0.2)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
engine=${ENGINE:-docker}
image=${IMAGE:-totalspineseg:test}
work=${1:-$(mktemp -d)}
mkdir -p "$work/out"
chmod 0777 "$work" "$work/out"   # the container user (12345) must be able to write there

if [ "${BUILD:-1}" = 1 ]; then
    # shellcheck disable=SC2086  # BUILD_ARGS is a list of arguments
    DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} "$engine" build --network host \
        --build-arg VERSION="$(cat "$root/version")" ${BUILD_ARGS:-} -t "$image" "$root"
fi

run() {  # the locked-down container; extra engine options first, then "--" and the app's arguments
    local opts=()
    while [ "$1" != "--" ]; do opts+=("$1"); shift; done
    shift
    "$engine" run --rm --read-only --network none --user 12345:12345 "${opts[@]}" "$image" "$@"
}

echo "== version"
run -- --version
echo "== example dataset"
run --entrypoint totalspineseg-phantom -v "$work:/scratch" -- /scratch/ds --bids --participants 2 --localizer --seed 0
mounts=(-v "$work/ds:/data:ro" -v "$work/out:/out")
app=()
if [ "${WEIGHTS:-demo}" = oracle ]; then
    mounts+=(--entrypoint python -v "$root/tests:/tests:ro")
    app=(/tests/run_bids_app.py)
fi
for label in 01 02; do
    echo "== participant $label"
    if [ ${#app[@]} -eq 0 ]; then weights=(--weights "${WEIGHTS:-demo}"); else weights=(); fi
    run "${mounts[@]}" -- "${app[@]}" /data /out participant --participant_label "$label" "${weights[@]}"
done
echo "== group"
run "${mounts[@]}" -- "${app[@]}" /data /out group
echo "== checks"
run --tmpfs /tmp --entrypoint python -v "$work/out:/out:ro" -v "$here:/tests:ro" -e DENO_DIR=/tmp/deno -- \
    /tests/check_outputs.py /out --expected-list /tests/expected_outputs.txt \
    --expected-tsv /tests/expected_group_spine.tsv --rtol "${RTOL:-0.2}" --validator bids-validator-deno
echo "container test passed; outputs in $work/out"
