#!/usr/bin/env bash
# Builds the cuFFT stub (cufft_stub.c) into SITE/nvidia/cufft/lib/libcufft.so.11, the folder that
# astra/libastra.so.0's RUNPATH ($ORIGIN/../nvidia/cufft/lib) searches, SITE being the folder the
# astra-toolbox wheel was installed into with `pip install --target SITE`.
#
#   bash benchmarks/peers/astra_stub/build.sh /tmp/astra_site
#
# Needs a C compiler ($CC, else gcc, else cc). Leaves a real libcufft.so.11 in place.
set -euo pipefail
site=${1:?usage: build.sh SITE (the pip --target folder holding astra/)}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out_dir="$site/nvidia/cufft/lib"
out="$out_dir/libcufft.so.11"
if [ ! -d "$site/astra" ]; then
  echo "build.sh: warning: $site/astra not found (is SITE the pip --target folder?)" >&2
fi
if [ -e "$out" ] && ! grep -q jaxmedrf_cufft_stub "$out" 2>/dev/null; then
  echo "build.sh: $out exists and is not this stub (a real cuFFT?); leaving it" >&2
  exit 0
fi
cc=${CC:-}
if [ -z "$cc" ]; then
  if command -v gcc >/dev/null 2>&1; then cc=gcc; elif command -v cc >/dev/null 2>&1; then cc=cc; else
    echo "build.sh: no C compiler (set CC)" >&2; exit 1
  fi
fi
mkdir -p "$out_dir"
"$cc" -shared -fPIC -O2 -Wall -Wextra -o "$out.tmp" "$here/cufft_stub.c" \
  -Wl,-soname,libcufft.so.11 -Wl,--version-script="$here/libcufft.map"
mv -f "$out.tmp" "$out"
echo "built $out"
