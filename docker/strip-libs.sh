#!/usr/bin/env bash
# Strip the symbol tables of the shared libraries under a folder, keeping a library stripped only when it
# still loads: 'strip' can break libraries that auditwheel rewrote with patchelf (numpy.libs' OpenBLAS:
# "ELF load command address/offset not page-aligned"), so each stripped file is dlopen()ed and put back as
# it was when that fails. Run by the Dockerfile's build stage; prints what it saved.
#
#   strip-libs.sh FOLDER [PYTHON]
set -euo pipefail
folder=$1 python=${2:-python}
command -v strip > /dev/null || { echo "strip-libs: no strip (binutils): nothing stripped"; exit 0; }
before=$(du -sk "$folder" | cut -f1)
kept=0 restored=0
while IFS= read -r -d '' lib; do
    cp -p "$lib" "$lib.orig"
    # the load test runs in its own shell, so that a crash ("Aborted") is not reported here
    if strip --strip-unneeded "$lib" 2> /dev/null \
        && sh -c '"$0" -c "import ctypes, sys; ctypes.CDLL(sys.argv[1])" "$1"' "$python" "$lib" > /dev/null 2>&1; then
        rm "$lib.orig"; kept=$((kept + 1))
    else
        mv "$lib.orig" "$lib"; restored=$((restored + 1))
    fi
done < <(find "$folder" -type f -name '*.so*' ! -name '*.orig' -print0)
after=$(du -sk "$folder" | cut -f1)
echo "strip-libs: $kept libraries stripped, $restored left as they were; $(((before - after) / 1024)) MB saved"
