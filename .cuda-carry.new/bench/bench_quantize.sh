#!/usr/bin/env bash
# `moekit quantize` benchmarks (results go into bench/RESULTS.md by hand,
# with the machine and date printed here):
#   1. the bound: memcpy bandwidth and the quantizer kernel alone (affine
#      4-bit g64, bf16), 1 thread and all cores (bench_quant, same run);
#   2. end to end: GB/s of bf16 input of `moekit quantize --bits 4
#      --group-size 64` (read, quantize, error sums, spill, write, fsync) on
#      a synthetic qwen3_5_moe 397B-shaped slice warm in the page cache, with
#      --threads 1 and --threads $(nproc): best of 3;
#   3. peak RSS (VmHWM, --stats) quantizing a larger 397B-shaped slice with
#      --max-memory 256M.
# usage: bench/bench_quantize.sh BUILD_DIR [WORK_DIR]
set -euo pipefail
B=${1:?build dir}
BIN=$B/moekit
W=${2:-$(mktemp -d "${TMPDIR:-/tmp}/mk-bench-quant-XXXXXX")}
mkdir -p "$W"
trap 'rm -rf "$W"' EXIT
NT=$(nproc)
echo "machine: $NT cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
echo "disk: $(df -h "$W" | awk 'NR == 2 { print $1, $2 }'); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"

# 1. the bound, same run
"$B/bench_quant" 4096 4096 5 | sed -n '1,4p'

# 2. end to end, source warm
"$BIN" synth "$W/s" --arch qwen3_5_moe --preset 397b-a17b --layers 1 --experts 32 --vocab 8192 --format bf16 --quiet
bytes=$(du -cb "$W"/s/*.safetensors | tail -1 | cut -f1)
cat "$W"/s/*.safetensors > /dev/null
for t in 1 "$NT"; do
    best=999999
    for run in 1 2 3; do
        rm -rf "$W/q"
        "$BIN" quantize "$W/s" "$W/q" --bits 4 --group-size 64 --threads "$t" --stats --quiet > "$W/st"
        s=$(awk '$1 == "seconds" { print $2 }' "$W/st")
        best=$(echo "if ($s < $best) $s else $best" | bc)
    done
    out=$(awk '$1 == "bytes_out" { print $2 }' "$W/st")
    echo "quantize 4-bit g64, $t thread(s): $bytes bf16 bytes in, $out out, best $best s:" \
         "$(echo "scale=3; $bytes / 1000000000 / $best" | bc) GB/s in" \
         "($(echo "scale=3; $bytes / 1000000000 / $best / $t" | bc) GB/s per thread)"
done
rm -rf "$W/q" "$W/s"

# 3. peak RSS, a slice much larger than --max-memory
"$BIN" synth "$W/big" --arch qwen3_5_moe --preset 397b-a17b --layers 4 --experts 48 --vocab 8192 --format bf16 --quiet
gb=$(du -cb "$W"/big/*.safetensors | tail -1 | cut -f1)
"$BIN" quantize "$W/big" "$W/big.q" --max-memory 256M --stats --quiet > "$W/st"
echo "397B slice (4 layers x 48 experts, bf16): $gb bytes in, $(awk '$1 == "bytes_out" { print $2 }' "$W/st") out" \
     "in $(awk '$1 == "seconds" { print $2 }' "$W/st") s ($NT threads, disk included), chunks of" \
     "$(awk '$1 == "chunk_elems" { print $2 }' "$W/st") values, peak RSS" \
     "$(awk '$1 == "peak_rss_bytes" { print $2 }' "$W/st") bytes with --max-memory 256M (268435456)"
