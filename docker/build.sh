#!/usr/bin/env bash
# Build the TotalSpineSeg BIDS-App image from local inputs (or the public ones), in one command.
#
#   docker/build.sh [options]
#
# Image:
#   --device cpu|cuda        the variant (default cpu; cuda: torch with CUDA from PyPI, run with --gpus all)
#   --tag TAG                image tag (default totalspineseg:VERSION-DEVICE, VERSION from the version file)
#   --base IMAGE             base image with python3 (3.11) and python3-venv (default python:3.11-slim-bookworm;
#                            offline: a local one, e.g. localhost/debian-py:bookworm, see docker/README.md)
# Python packages (requirements/lock-cpu.txt, exact versions):
#   --torch-wheel FILE       a local torch wheel (CPU: the lock's torch==2.13.0+cpu); default: any torch-*.whl
#                            already in docker/wheels/
#   --torch-index URL        the index torch comes from when no wheel is given (default for cpu:
#                            https://download.pytorch.org/whl/cpu; for cuda: https://pypi.org/simple)
#   --wheels DIR             a folder with a wheel for every package of the lock (pip wheel --no-deps
#                            -r requirements/lock-cpu.txt -w DIR): the build uses no index and no network
#   --ca-bundle FILE         CA bundle for pip behind a TLS-intercepting proxy (e.g. /etc/ssl/certs/ca-certificates.crt)
# Weights, verified (sizes, sha256 against the install manifest) during the build:
#   --weights KIND           none: nothing baked in; demo: the demo model bundled with the package (synthetic,
#                            not for real data); lite: a lite model (fails clearly when the package has none);
#                            official (default): the official release, downloaded unless --weights-from is given
#   --weights-from PATH      a release zip or a model folder to install instead of downloading (repeatable);
#                            default for official/lite: whatever is in docker/weights/
#   --weights-release NAME   the release name of those weights (default: the package's default release)
# Build:
#   --engine EXE             docker (default) or podman
#   --network MODE           network of the build's RUN steps (default: host; none with --wheels)
#   --keep-build-cache       keep the build stage's images (faster rebuilds; otherwise they are removed)
#   --no-space-check         do not refuse to start when the engine's storage has too little free space
#   --dry-run                print what would be built, and the command, then stop
#   -h, --help               this text
#
# Disk: the engine's storage needs about 24 GB free with the vfs storage driver (every layer is a full copy;
# it grew by 18.5-21 GB at the peak on the project's machine, and 3 GB stay after the build), about 7 GB with
# overlay2; the staged build context needs the size of the wheels and weights given, in ${TMPDIR:-/tmp}.
# Both are checked before starting.
#
# Examples (see README.md, "Containers"):
#   docker/build.sh                                               # online: public base, CPU index, official weights
#   docker/build.sh --base localhost/debian-py:bookworm --torch-wheel /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl \
#       --ca-bundle /etc/ssl/certs/ca-certificates.crt --weights demo --tag totalspineseg:test
#   docker/build.sh --base localhost/debian-py:bookworm --wheels /srv/wheels --weights official \
#       --weights-from Dataset101_TotalSpineSeg_step1_r20260730.zip --weights-from Dataset102_TotalSpineSeg_step2_r20260730.zip
set -euo pipefail
{  # the whole script is read before it runs: editing it during a build cannot break that build
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
version=$(cat "$root/version")

device=cpu tag="" base="" torch_wheel="" torch_index="" wheels="" ca_bundle=""
weights=official weights_release="" engine=${ENGINE:-docker} network="" keep_cache=0 space_check=1 dry_run=0
weights_from=()
VFS_GB=24 OTHER_GB=7  # free space the build needs in the engine's storage, by storage driver
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die() { echo "build.sh: $1" >&2; exit "${2:-1}"; }
need() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (see --help)" 64; }
while [ $# -gt 0 ]; do
    case $1 in
        --device) need "$@"; device=$2; shift 2 ;;
        --tag) need "$@"; tag=$2; shift 2 ;;
        --base) need "$@"; base=$2; shift 2 ;;
        --torch-wheel) need "$@"; torch_wheel=$2; shift 2 ;;
        --torch-index) need "$@"; torch_index=$2; shift 2 ;;
        --wheels) need "$@"; wheels=$2; shift 2 ;;
        --ca-bundle) need "$@"; ca_bundle=$2; shift 2 ;;
        --weights) need "$@"; weights=$2; shift 2 ;;
        --weights-from) need "$@"; weights_from+=("$2"); shift 2 ;;
        --weights-release) need "$@"; weights_release=$2; shift 2 ;;
        --engine) need "$@"; engine=$2; shift 2 ;;
        --network) need "$@"; network=$2; shift 2 ;;
        --keep-build-cache) keep_cache=1; shift ;;
        --no-space-check) space_check=0; shift ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" 64 ;;
    esac
done

# --- the inputs, checked before anything is copied or built -------------------------------------------------
case $device in cpu|cuda) ;; *) die "--device must be cpu or cuda, not '$device'" 64 ;; esac
case $weights in none|demo|lite|official) ;; *) die "--weights must be none, demo, lite or official, not '$weights'" 64 ;; esac
tag=${tag:-totalspineseg:$version-$device}
[ -z "$torch_wheel" ] || [ -f "$torch_wheel" ] || die "--torch-wheel $torch_wheel: no such file" 66
[ -z "$wheels" ] || [ -d "$wheels" ] || die "--wheels $wheels: no such folder" 66
[ -z "$ca_bundle" ] || [ -f "$ca_bundle" ] || die "--ca-bundle $ca_bundle: no such file" 66
for path in "${weights_from[@]}"; do [ -e "$path" ] || die "--weights-from $path: no such file or folder" 66; done
if [ ${#weights_from[@]} -gt 0 ]; then
    case $weights in official|lite) ;; *) die "--weights-from goes with --weights official or lite, not $weights" 64 ;; esac
elif [ "$weights" = official ] || [ "$weights" = lite ]; then
    for path in "$here"/weights/*; do [ -e "$path" ] && weights_from+=("$path"); done
fi
if [ "$weights" = lite ]; then  # fail now rather than after the Python install; the build checks again
    py=$root/.venv/bin/python; [ -x "$py" ] || py=python3
    if known=$(cd "$root" && "$py" -c 'import sys; from totalspineseg.weights import RELEASES as R
r = R.get(sys.argv[1]); print("yes" if r and (r.bundled is None or r.bundled.is_dir()) else "no")' \
        "${weights_release:-lite}" 2>/dev/null) && [ "$known" = no ]; then
        die "--weights lite: totalspineseg $version has no 'lite' model (neither bundled nor in its release registry; see 'totalspineseg-weights list'). Use --weights demo, official or none." 65
    fi
fi
# --- disk space (the engine's storage, and the staged build context) -----------------------------------------
driver=unknown store=""
if [ "$dry_run" = 0 ]; then
    command -v "$engine" >/dev/null || die "$engine not found (--engine docker|podman)" 69
    "$engine" info >/dev/null 2>&1 || die "$engine cannot reach its daemon ('$engine info' fails)" 69
    driver=$("$engine" info -f '{{.Driver}}' 2>/dev/null || echo unknown)
    store=$("$engine" info -f '{{.DockerRootDir}}' 2>/dev/null || true)
fi
case $driver in vfs|unknown) need_gb=$VFS_GB ;; *) need_gb=$OTHER_GB ;; esac
ctx_kb=20000  # the sources
for path in "$torch_wheel" "$wheels" "$ca_bundle" "${weights_from[@]}" "$here/wheels"; do
    if [ -n "$path" ]; then ctx_kb=$((ctx_kb + $(du -sLk "$path" | cut -f1))); fi
done
tmp_root=${TMPDIR:-/tmp}
free_kb() { df -Pk "$1" 2>/dev/null | awk 'NR == 2 { print $4 }'; }
echo "build.sh: needs ~${need_gb} GB free in the $engine storage (driver $driver${store:+, $store};" \
     "~$VFS_GB GB with vfs, ~$OTHER_GB GB with overlay2) and $((ctx_kb / 1024)) MB for the build context in $tmp_root"
if [ "$dry_run" = 0 ] && [ "$space_check" = 1 ]; then
    if [ -n "$store" ] && [ -d "$store" ]; then
        have=$(free_kb "$store")
        [ "$have" -ge $((need_gb * 1024 * 1024)) ] || die "only $((have / 1024 / 1024)) GB free under $store; the build needs ~${need_gb} GB (--no-space-check to try anyway)" 73
    else
        echo "build.sh: the $engine storage is not visible from here; its free space is not checked"
    fi
    have=$(free_kb "$tmp_root")
    [ "$have" -ge "$ctx_kb" ] || die "only $((have / 1024)) MB free in $tmp_root; the build context needs $((ctx_kb / 1024)) MB" 73
fi

# --- the build command ---------------------------------------------------------------------------------------
build_args=(--build-arg "VERSION=$version" --build-arg "DEVICE=$device" --build-arg "WEIGHTS=$weights")
[ -z "$base" ] || build_args+=(--build-arg "BASE_IMAGE=$base")
[ -z "$torch_index" ] || build_args+=(--build-arg "TORCH_INDEX_URL=$torch_index")
[ -z "$weights_release" ] || build_args+=(--build-arg "WEIGHTS_RELEASE=$weights_release")
[ -z "$ca_bundle" ] || build_args+=(--build-arg PIP_CA_BUNDLE=/tmp/build/docker/ca.crt)
if [ -n "$wheels" ]; then
    build_args+=(--build-arg PIP_OFFLINE=1)
    network=${network:-none}
fi
# BuildKit when the engine has it (no intermediate images at all); else the legacy builder.
buildkit=0
if [ "$engine" = docker ] && [ "$dry_run" = 0 ] && docker buildx version >/dev/null 2>&1; then buildkit=1; fi
net_opt=()
if [ "$buildkit" = 1 ]; then
    [ -z "$network" ] || net_opt=(--network "$network")
else
    net_opt=(--network "${network:-host}" --force-rm)  # --force-rm: no container left by a failed step
fi
ctx="<staged build context>"
[ "$dry_run" = 1 ] || ctx=$(mktemp -d "$tmp_root/totalspineseg-build.XXXXXX")
cmd=("$engine" build "${net_opt[@]}" "${build_args[@]}" -t "$tag" "$ctx")

torch_from=${torch_index:-the default index}
[ -z "$torch_wheel" ] || torch_from=$(basename "$torch_wheel")
[ -z "$wheels" ] || torch_from="$torch_from; every wheel from $wheels, no index"
sources=""
for path in "${weights_from[@]}"; do sources="$sources --from $(basename "$path")"; done
echo "build.sh: $tag from ${base:-the default base image}; torch: $torch_from"
echo "build.sh: weights: $weights${weights_release:+ ($weights_release)}$sources"
echo "build.sh: DOCKER_BUILDKIT=$buildkit ${cmd[*]}"
[ "$dry_run" = 0 ] || exit 0

# --- the build context: the sources, and only the inputs chosen here ------------------------------------------
trap 'rm -rf "$ctx"' EXIT
put() {  # put SRC DEST_DIR: a hard link when possible (no copy of big wheels), else a copy
    mkdir -p "$2"
    cp -RL --link "$1" "$2/" 2>/dev/null || cp -RL "$1" "$2/"
}
(cd "$root" && tar --exclude=__pycache__ --exclude='*.pyc' --exclude='docker/weights/*' -cf - \
    Dockerfile .dockerignore run.py version pyproject.toml requirements totalspineseg docker) | tar -C "$ctx" -xf -
rm -rf "$ctx/docker/weights" && mkdir -p "$ctx/docker/weights" "$ctx/docker/wheels"
[ -z "$torch_wheel" ] || put "$torch_wheel" "$ctx/docker/wheels"
if [ -n "$wheels" ]; then for whl in "$wheels"/*; do put "$whl" "$ctx/docker/wheels"; done; fi
for path in "${weights_from[@]}"; do put "$path" "$ctx/docker/weights"; done
[ -z "$ca_bundle" ] || cp "$ca_bundle" "$ctx/docker/ca.crt"

start=$(date +%s)
status=0
DOCKER_BUILDKIT=$buildkit "${cmd[@]}" || status=$?
if [ "$buildkit" = 0 ] && [ "$keep_cache" = 0 ]; then
    # the legacy builder leaves the build stage behind as an untagged image (and its parents), and a failed
    # build its last step: remove every untagged image of this Dockerfile (both stages carry the label)
    "$engine" image prune -f --filter label=io.github.totalspineseg.stage >/dev/null
fi
[ "$status" = 0 ] || exit "$status"
size=$("$engine" image inspect -f '{{.Size}}' "$tag")
echo "build.sh: built $tag in $(( $(date +%s) - start )) s; image size $(awk -v s="$size" 'BEGIN { printf "%.2f GB", s / 1e9 }')"
exit 0
}
