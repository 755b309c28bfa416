#!/usr/bin/env bash
# Experts streamed from SSD (issue 11): decode speed of a model larger than
# RAM under --memory-budget, against the disk's roofline measured in the same
# run (O_DIRECT sequential read of the model's own shard with dd), cold
# (page cache dropped before each run) with O_DIRECT reads, O_DIRECT with
# next-layer prefetch (--prefetch) and buffered reads, each with an empty
# expert cache (--cache-fill off), and the run's hit rate next to Belady's
# oracle on the same trace; then O_DIRECT with the cache filled before the
# first token (--cache-fill on, the default: its startup read is reported
# apart, and the bytes per token are the run's reads after it). With
# --prefetch the bytes per token include wrong guesses (read for nothing),
# so its roofline is lower.
#   usage: bench/bench_stream.sh MODEL [BUDGET=6G] [TOKENS=16] [extra run flags...]
# Needs root for drop_caches (else each shard's pages are evicted with
# dd iflag=nocache, which a VM host's cache survives). Results: bench/RESULTS.md.
set -euo pipefail
BIN=${MK_BIN:-build/moekit}
MODEL=${1:?usage: bench/bench_stream.sh MODEL [BUDGET] [TOKENS] [flags...]}
BUDGET=${2:-6G}
NTOK=${3:-16}
shift $(( $# < 3 ? $# : 3 ))
drop() {
    sync
    echo 3 > /proc/sys/vm/drop_caches 2> /dev/null ||
        for f in "$MODEL"/*.safetensors; do dd if="$f" iflag=nocache count=0 status=none; done
}
echo "== machine: $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}'), $(nproc) cores," \
    "$(free -g | awk '/Mem:/ {print $2}') GiB RAM, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== model: $MODEL, $(du -sb "$MODEL" | cut -f1) bytes; budget $BUDGET; $NTOK tokens; flags: $*"
shard=$(ls "$MODEL"/*.safetensors | head -1)
drop
line=$(dd if="$shard" of=/dev/null bs=4M count=1024 iflag=direct 2>&1 | grep copied)
bw=$(echo "$line" | awk '{ for (i = 1; i < NF; i++) if ($(i+1) == "s,") s = $i; print $1 / s }')
echo "roofline: dd O_DIRECT sequential, 4 MiB reads: $line -> $(awk -v b="$bw" 'BEGIN { printf "%.3f", b / 1e9 }') GB/s"
for mode in "--direct" "--direct --prefetch" "--buffered" "--direct --cache-fill on"; do
    fill="--cache-fill off"
    case "$mode" in *cache-fill*) fill= ;; esac
    drop
    # shellcheck disable=SC2086
    "$BIN" run "$MODEL" --ids 1,2,3,4 --max-tokens "$NTOK" --memory-budget "$BUDGET" $mode $fill --stats "$@" \
        > /dev/null 2> /tmp/bench_stream.err || { cat /tmp/bench_stream.err; exit 1; }
    grep -E "experts streamed|filled before|generated|^experts:|^prefetch:|^fill:" /tmp/bench_stream.err
    gen=$(grep -Eo 'generated [0-9]+ tokens in [0-9.]+ s' /tmp/bench_stream.err | awk '{print $2, $5}')
    mib=$(grep -Eo '[0-9.]+ MiB read' /tmp/bench_stream.err | awk '{print $1}')
    awk -v g="$gen" -v mib="$mib" -v bw="$bw" -v n="$NTOK" -v mode="${mode// /}" 'BEGIN {
        split(g, a, " "); toks = a[1]; secs = a[2];
        per = mib * 1048576 / (toks + 4);           # bytes read per token (prompt of 4 included)
        roof = bw / per; rate = (toks - 1) / secs;  # decode tok/s (first token is prefill)
        printf "RESULT %s: decode %.3f tok/s, %.1f MiB read per token, disk roofline %.3f tok/s, ratio %.2f\n",
               mode, rate, per / 1048576, roof, rate / roof }'
done
