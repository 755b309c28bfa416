#!/usr/bin/env bash
# Bounded memory: quantizing a synthetic qwen3_5_moe 397B-shaped slice (one
# layer, 8 experts of the real shapes, 474 MB of bf16; in_proj_qkv alone is
# 100 MB) with --max-memory 64M (7x smaller than the input) keeps the peak
# resident set (VmHWM, printed by --stats) under --max-memory plus a fixed
# 16 MiB allowance for the program itself. Scales and biases computed ahead
# of their place in the output wait in a spill file on disk, not in memory.
# Skipped under AddressSanitizer, whose shadow memory is not ours to bound.
set -euo pipefail
BIN=${MK_BIN:?}
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-qrss-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
MAX=$((64 * 1024 * 1024))
SLACK=$((16 * 1024 * 1024))

"$BIN" synth "$T/src" --arch qwen3_5_moe --preset 397b-a17b --layers 1 --experts 8 --vocab 2048 --format bf16 --quiet
src_bytes=$(du -b "$T/src/model.safetensors" | cut -f1)
[ "$src_bytes" -ge $((4 * MAX)) ] || fail "source is $src_bytes bytes, not 4x --max-memory"
"$BIN" quantize "$T/src" "$T/q" --max-memory 64M --threads 2 --stats --quiet > "$T/stats"
if [ "$(awk '$1 == "sanitizer" { print $2 }' "$T/stats")" = 1 ]; then
    echo "skip: sanitizer build"
    exit 0
fi
peak=$(awk '$1 == "peak_rss_bytes" { print $2 }' "$T/stats")
chunk=$(awk '$1 == "chunk_elems" { print $2 }' "$T/stats")
out_bytes=$(awk '$1 == "bytes_out" { print $2 }' "$T/stats")
echo "source $src_bytes B, output $out_bytes B, --max-memory $MAX B, chunks of $chunk values, peak RSS $peak B"
[ "$peak" -le $((MAX + SLACK)) ] || fail "peak RSS $peak > --max-memory $MAX + $SLACK"
[ "$chunk" -lt $((12288 * 4096)) ] || fail "in_proj_qkv was not chunked"
[ ! -e "$T/q/.moekit-quant-spill" ] || fail "spill file left in DST"
grep -q '"bits": 8' "$T/q/config.json" || fail "no 8-bit router entry"
echo "quantize_rss: all passed"
