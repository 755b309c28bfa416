#!/usr/bin/env bash
# Expert-streaming I/O on this machine's disk (groundwork for an SSD expert
# store): cold random reads of expert-sized chunks with pread threads and
# io_uring queue depths, O_DIRECT and buffered, against the best cold
# sequential read of the same file measured before and after (bench_expert_io).
# Chunk sizes are one projection of one expert at 4-bit g64:
#   256 KiB  small experts (Qwen3-30B-A3B is ~0.8 MiB per projection; lower bound)
#   2400 KiB Qwen3.5-397B-A17B (I 1024 x H 4096 x 4.5 bits)
#   8448 KiB DeepSeek-V3 / Kimi-K2 (I 2048 x H 7168 x 4.5 bits)
# usage: bench/bench_expert_io.sh BUILD_DIR [FILE] (default: a 4 GiB random
# file in ${TMPDIR:-/tmp}, deleted afterwards)
set -euo pipefail
B=${1:?build dir}
F=${2:-}
if [ -z "$F" ]; then
    W=$(mktemp -d "${TMPDIR:-/tmp}/mk-eio-XXXXXX")
    trap 'rm -rf "$W"' EXIT
    F=$W/data.bin
    head -c 4G /dev/urandom > "$F"
fi
X=$B/bench_expert_io
echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -n1), $(nproc) cores; disk: $(df -h "$F" | awk 'NR == 2 { print $1 }'); kernel $(uname -r)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ); load average$(uptime | sed -n 's/.*load average//p'); file $(du -h "$F" | cut -f1)"
"$X" "$F" seq
for ch in 256 2400 8448; do
    n=$(( 1536 * 1024 / ch ))   # ~1.5 GiB read per run
    for m in "pread 1" "pread 4" "uring 4" "uring 16" "uring 32"; do
        "$X" "$F" "$ch" "$n" $m direct
    done
    "$X" "$F" "$ch" "$n" uring 16
done
"$X" "$F" seq
