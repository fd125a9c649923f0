#!/usr/bin/env bash
# Bake model weights into the image; run by the Dockerfile's build stage, after the package is installed.
#
#   bake-weights.sh KIND RELEASE SOURCES_DIR
#
# KIND      none     nothing baked in (the bundled demo model is part of the package anyway)
#           demo     the demo model bundled with the package, checked with 'totalspineseg-weights verify'
#           lite     a 'lite' model; fails with a clear message when this version of the package has none
#           official the official release (RELEASE, default: the package's default release)
# RELEASE   a release name, or empty for the default of KIND
# SOURCES   every entry of this folder (zips or model folders, put there by docker/build.sh
#           --weights-from) is installed with 'totalspineseg-weights install --from'; empty: download
# Every installed release is checked against its install manifest (sizes, sha256) with
# 'totalspineseg-weights verify' before the build can succeed.
set -euo pipefail
kind=$1 release=$2 dir=$3
sources=()
for entry in "$dir"/*; do
    [ -e "$entry" ] && sources+=(--from "$entry")
done
fail() { echo "bake-weights: $*" >&2; exit 1; }

case $kind in
    none)
        [ ${#sources[@]} -eq 0 ] || fail "WEIGHTS=none, but weights were given in $dir"
        echo "bake-weights: no weights baked in"
        exit 0 ;;
    demo) name=demo ;;
    lite) name=${release:-lite} ;;
    official) name=$release ;;
    *) fail "WEIGHTS must be none, demo, lite or official, not '$kind'" ;;
esac

# What the package knows about the release: "bundled", "registry" or "unknown".
known=$(python - "${name}" <<'EOF'
import sys
from totalspineseg.weights import DEFAULT_RELEASE, RELEASES
name = sys.argv[1] or DEFAULT_RELEASE
release = RELEASES.get(name)
if release is None:
    print("unknown")
elif release.bundled is not None:
    print("bundled" if release.bundled.is_dir() else "unknown")
else:
    print("registry")
EOF
)
version=$(python -c 'from importlib.metadata import version; print(version("totalspineseg"))')
if [ "$kind" = lite ] && [ "$known" = unknown ]; then
    fail "WEIGHTS=lite: totalspineseg $version has no 'lite' model (neither bundled nor in its release" \
         "registry; see 'totalspineseg-weights list'). Use --weights demo, official or none."
fi
release_opt=()
[ -n "$name" ] && release_opt=(--release "$name")

if [ "$known" = bundled ]; then
    [ ${#sources[@]} -eq 0 ] || fail "release $name is bundled with the package; do not give weights for it"
else
    # --no-keep-zips: the image keeps the installed models only, not the zips they came from
    totalspineseg-weights install -q --no-keep-zips "${release_opt[@]}" "${sources[@]}"
fi
totalspineseg-weights verify "${release_opt[@]}"
