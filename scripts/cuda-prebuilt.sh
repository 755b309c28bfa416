#!/usr/bin/env bash
# Pack binaries built on this machine for a device call that must not spend
# its minutes building (scripts/cuda-device-run.sh with MK_PREBUILT=DIR):
# the named targets of build/ (an MK_CUDA=ON build: sm_90 code and PTX,
# the CUDA runtime linked statically), stripped, into DIR/bin.tar.xz, and
# the runtime packages they need beyond .cuda-deps (liburing2) as .debs.
#   usage: scripts/cuda-prebuilt.sh DIR TARGET...   e.g.
#   scripts/cuda-prebuilt.sh .cuda-pre moekit_cli bench_decode test_backend_ops
# (moekit_cli's file is build/moekit)
# DIR must be ignored by git (/.cuda-* is) and named in the call's carry;
# a call carries 64 MiB in all (xz -9: its 64 MiB window packs the binaries' shared
# code once, four binaries ~8 MB, against ~29 MB at -1). The device
# must run a glibc at least as new as this machine's (Debian 12).
set -euo pipefail
dir=${1:?usage: see the header}
shift
[ $# -gt 0 ] || { echo "cuda-prebuilt: name the targets to pack" >&2; exit 2; }
grep -q "MK_CUDA:BOOL=ON" build/CMakeCache.txt || { echo "cuda-prebuilt: build/ is not a CUDA build" >&2; exit 2; }
cmake --build build -j2 --target "$@" > /dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
files=()
for t in "$@"; do
    f=$t
    [ "$t" = moekit_cli ] && f=moekit
    strip -o "$tmp/$f" "build/$f"
    files+=("$f")
done
mkdir -p "$dir"
tar -C "$tmp" -cf - "${files[@]}" | xz -9 -T2 > "$dir/bin.tar.xz"
(cd "$dir" && apt-get download liburing2 > /dev/null 2>&1) || echo "cuda-prebuilt: no liburing2 .deb fetched" >&2
du -h "$dir"/*
