#!/usr/bin/env bash
# Experts from SSD, side by side with llama.cpp's mmap (issue 11): the same
# model (moekit reads an MLX 4-bit checkpoint, llama.cpp a Q4_0 GGUF of the
# same source weights: both 4.5 bits per weight, the same bytes per token)
# decoded while the memory the process may use is SMALLER than the model.
# That limit is a memory control group (v1 memory.limit_in_bytes or v2
# memory.max), which charges the page cache to the group, so llama.cpp's
# mapped weights are evicted and re-read exactly as on a machine whose RAM
# is smaller than the model; moekit runs in the same group with
# --memory-budget at 80% of the limit (O_DIRECT reads, nothing left in the
# page cache), its expert cache filled at load (--cache-fill, the default; the
# line it prints is shown), as llama.cpp's load pass leaves its mapped
# weights in the page cache; both decode rates exclude the load, and both
# bytes-per-token figures include it. llama.cpp runs twice: as shipped (its CPU backend copies
# Q4_0 weights into repacked buffers, anonymous memory the size of the
# model) and with repacking off (--no-repack: the weights stay mapped). Page cache dropped before every run; the disk's sequential
# O_DIRECT bandwidth (dd) measured in the same run; bytes read from disk per
# run from /usr/bin/time's "File system inputs" (512-byte blocks).
#   usage: bench/bench_stream_peer.sh MLX_DIR GGUF [LIMIT=1536M] [TOKENS=8] [PAIRS=2]
# MK_ARGS: more flags for moekit's run (e.g. "--cache-fill off" to compare the cold start).
# Needs root (cgroup, drop_caches) and mk_llama (tests/peer/mk_llama.c, its gen command) from scripts/install-deps.d/llama.sh
# (.peers/bin). Results: bench/RESULTS.md.
set -euo pipefail
BIN=${MK_BIN:-build/moekit}
ML=${MK_LLAMA:-.peers/bin/mk_llama}
MLX=${1:?usage: bench_stream_peer.sh MLX_DIR GGUF [LIMIT] [TOKENS] [PAIRS]}
GGUF=${2:?usage: bench_stream_peer.sh MLX_DIR GGUF [LIMIT] [TOKENS] [PAIRS]}
LIMIT=${3:-1536M}
NTOK=${4:-8}
PAIRS=${5:-2}
THREADS=${MK_THREADS:-$(nproc)}
[ "$(id -u)" = 0 ] || { echo "bench_stream_peer.sh: needs root (memory cgroup, drop_caches)" >&2; exit 2; }
[ -x "$ML" ] || { echo "bench_stream_peer.sh: no mk_llama at $ML (bash scripts/install-deps.d/llama.sh)" >&2; exit 2; }

bytes() { numfmt --from=iec "${1%B}"; }
LIMIT_B=$(bytes "$LIMIT")
BUDGET_B=$((LIMIT_B * 8 / 10))

# A child group of this shell's own memory group (v1) or of the v2 root.
own=$(awk -F: '$2 == "memory" {print $3}' /proc/self/cgroup)
if [ -n "$own" ] && [ -d "/sys/fs/cgroup/memory$own" ]; then
    CG=/sys/fs/cgroup/memory$own/mk-bench-$$
    mkdir "$CG"
    echo "$LIMIT_B" > "$CG/memory.limit_in_bytes"
    peak() { cat "$CG/memory.max_usage_in_bytes"; }
    reset_peak() { echo 0 > "$CG/memory.max_usage_in_bytes"; }
elif [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    CG=/sys/fs/cgroup/mk-bench-$$
    mkdir "$CG"
    echo "$LIMIT_B" > "$CG/memory.max"
    echo 0 > "$CG/memory.swap.max" 2> /dev/null || true
    peak() { cat "$CG/memory.peak" 2> /dev/null || echo 0; }
    reset_peak() { :; }
else
    echo "bench_stream_peer.sh: no memory cgroup found" >&2; exit 2
fi
trap 'rmdir "$CG" 2> /dev/null || true' EXIT
ingroup() { bash -c 'echo $$ > "$0/cgroup.procs" && shift && exec "$@"' "$CG" _ "$@"; }

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
model_b=$(du -sb "$MLX" | cut -f1)
gguf_b=$(stat -c %s "$GGUF")
echo "== machine: $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}'), $(nproc) cores," \
    "$(free -g | awk '/Mem:/ {print $2}') GiB RAM, load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%FT%TZ)"
echo "== moekit $MLX ($model_b bytes), llama.cpp $GGUF ($gguf_b bytes); memory limit $LIMIT_B bytes" \
    "(moekit --memory-budget $BUDGET_B); $NTOK generated tokens; $THREADS threads; $PAIRS interleaved pairs"
shard=$(ls "$MLX"/*.safetensors | head -1)
drop
line=$(dd if="$shard" of=/dev/null bs=4M count=512 iflag=direct 2>&1 | grep copied)
bw=$(echo "$line" | awk '{ for (i = 1; i < NF; i++) if ($(i+1) == "s,") s = $i; print $1 / s }')
echo "roofline: dd O_DIRECT sequential, 4 MiB reads: $line"

T=$(mktemp -d /tmp/mk-peer-XXXXXX)
trap 'rm -rf "$T"; rmdir "$CG" 2> /dev/null || true' EXIT
for pair in $(seq "$PAIRS"); do
    drop
    reset_peak
    ingroup /usr/bin/time -v "$BIN" run "$MLX" --ids 1,2,3,4 --max-tokens "$NTOK" --threads "$THREADS" \
        --memory-budget "$BUDGET_B" --stats ${MK_ARGS:-} > /dev/null 2> "$T/mk.err" || { tail -20 "$T/mk.err"; exit 1; }
    grep "filled before the first token" "$T/mk.err" || true
    gen=$(grep -Eo 'generated [0-9]+ tokens in [0-9.]+ s' "$T/mk.err" | awk '{print $2, $5}')
    fsin=$(awk -F: '/File system inputs/ {print $2}' "$T/mk.err")
    rss=$(awk -F: '/Maximum resident set size/ {print $2}' "$T/mk.err")
    awk -v g="$gen" -v fs="$fsin" -v rss="$rss" -v pk="$(peak)" -v bw="$bw" -v p="$pair" 'BEGIN {
        split(g, a, " "); rate = (a[1] - 1) / a[2]; per = fs * 512 / (a[1] + 4);
        printf "RESULT pair %d moekit: decode %.3f tok/s, %.1f MiB read per token (whole run incl. load), " \
               "disk roofline %.3f tok/s, peak RSS %.0f MiB, group peak %.0f MiB\n",
               p, rate, per / 1048576, bw / per, rss / 1024, pk / 1048576 }'
    for mode in norepack repack; do
        drop
        reset_peak
        rc=0
        ingroup /usr/bin/time -v "$ML" gen "$GGUF" "$NTOK" "$THREADS" $mode > "$T/lb.out" 2> "$T/lb.err" || rc=$?
        fsin=$(awk -F: '/File system inputs/ {print $2}' "$T/lb.err")
        rss=$(awk -F: '/Maximum resident set size/ {print $2}' "$T/lb.err")
        if [ $rc != 0 ]; then
            echo "RESULT pair $pair llama.cpp (mmap, $mode): FAILED exit $rc ($(grep -o 'terminated by signal [0-9]*' "$T/lb.err" || tail -1 "$T/lb.err"))," \
                "peak RSS $((rss / 1024)) MiB, group peak $(($(peak) / 1048576)) MiB, failcnt $(cat "$CG/memory.failcnt" 2> /dev/null || echo ?)"
            continue
        fi
        ts=$(awk '/^decode/ {print $2}' "$T/lb.out")
        awk -v ts="$ts" -v fs="$fsin" -v rss="$rss" -v pk="$(peak)" -v bw="$bw" -v n="$NTOK" -v p="$pair" -v m="$mode" 'BEGIN {
            per = fs * 512 / (n + 4);
            printf "RESULT pair %d llama.cpp (mmap, %s): decode %.3f tok/s, %.1f MiB read per token (whole run incl. load), " \
                   "disk roofline %.3f tok/s, peak RSS %.0f MiB, group peak %.0f MiB\n",
                   p, m, ts, per / 1048576, bw / per, rss / 1024, pk / 1048576 }'
    done
done
