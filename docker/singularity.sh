#!/usr/bin/env bash
# Build the Apptainer/Singularity image (.sif) from the Docker image, with Singularity.def.
#
#   docker/singularity.sh [options]
#
#   --from docker-daemon|docker  where the Docker image comes from (default docker-daemon: the local Docker
#                                daemon, after docker/build.sh; docker: a registry, see --image)
#   --device cpu|cuda            the variant (default cpu)
#   --image IMAGE                the Docker image (default totalspineseg:VERSION-DEVICE; with --from docker,
#                                the registry's name, e.g. ghcr.io/OWNER/totalspineseg:VERSION-cpu)
#   --output FILE                the .sif to write (default totalspineseg_VERSION_DEVICE.sif)
#   --dry-run                    print the build command, do not build
#   -h, --help                   this text
# Any argument after "--" goes to 'apptainer build' (e.g. -- --fakeroot). VERSION is the top-level version
# file; Singularity.def takes it, the bootstrap and the image through its %arguments (apptainer >= 1.2).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
version=$(cat "$root/version")
bootstrap=docker-daemon device=cpu image="" output="" dry_run=0
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die() { echo "singularity.sh: $1" >&2; exit "${2:-1}"; }
while [ $# -gt 0 ]; do
    case $1 in
        --from) bootstrap=${2:?}; shift 2 ;;
        --device) device=${2:?}; shift 2 ;;
        --image) image=${2:?}; shift 2 ;;
        --output) output=${2:?}; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        *) die "unknown argument '$1' (see --help)" 64 ;;
    esac
done
case $bootstrap in docker-daemon|docker) ;; *) die "--from must be docker-daemon or docker, not '$bootstrap'" 64 ;; esac
case $device in cpu|cuda) ;; *) die "--device must be cpu or cuda, not '$device'" 64 ;; esac
output=${output:-totalspineseg_${version}_${device}.sif}
exe=$(command -v apptainer || command -v singularity || echo apptainer)
args=(--build-arg "BOOTSTRAP=$bootstrap" --build-arg "VERSION=$version" --build-arg "DEVICE=$device")
[ -z "$image" ] || args+=(--build-arg "IMAGE=$image")
cmd=("$exe" build "${args[@]}" "$@" "$output" "$root/Singularity.def")
echo "${cmd[*]}"
[ "$dry_run" = 0 ] || exit 0
command -v "$exe" >/dev/null || die "neither apptainer nor singularity is installed" 69
"${cmd[@]}"
