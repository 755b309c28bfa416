#!/usr/bin/env bash
# ctest-labels: slow
# Bounded memory: converting a synthetic checkpoint more than 4x larger than
# --max-memory (FP8 -> MLX: every expert dequantized and stacked, output 2x
# the input; FP8 -> GGUF Q4_K_M: dequantized and K-quantized) keeps the peak resident set (VmHWM, reported by --stats) under
# --max-memory plus a fixed 16 MiB allowance for the binary itself. Skipped
# under AddressSanitizer, whose shadow memory is not ours to bound.
set -euo pipefail
BIN=${MK_BIN:?}
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-rss-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
MAX=$((64 * 1024 * 1024))
SLACK=$((16 * 1024 * 1024))

# under a sanitizer the bound is not ours to keep: ask the binary first
"$BIN" synth "$T/probe" --arch qwen3_moe --preset tiny --format bf16 --quiet
if [ "$("$BIN" convert "$T/probe" "$T/probe.hf" --to hf --stats --quiet | awk '$1 == "sanitizer" { print $2 }')" = 1 ]; then
    echo "skip: sanitizer build"
    exit 0
fi
"$BIN" synth "$T/src" --arch qwen3_moe --preset 30b-a3b --layers 1 --experts 52 --vocab 2048 --format fp8 --quiet
src_bytes=$(du -b "$T/src/model.safetensors" | cut -f1)
[ "$src_bytes" -ge $((4 * MAX)) ] || fail "source is $src_bytes bytes, not 4x --max-memory"

for to in mlx hf; do
    "$BIN" convert "$T/src" "$T/out-$to" --to "$to" --max-memory 64M --stats --quiet > "$T/stats"
    peak=$(awk '$1 == "peak_rss_bytes" { print $2 }' "$T/stats")
    out_bytes=$(awk '$1 == "bytes_out" { print $2 }' "$T/stats")
    echo "to $to: source $src_bytes B, output $out_bytes B, --max-memory $MAX B, peak RSS $peak B"
    [ "$peak" -le $((MAX + SLACK)) ] || fail "peak RSS $peak > --max-memory $MAX + $SLACK"
    rm -rf "$T/out-$to"
done
# the GGUF target with llama.cpp's Q4_K_M mix: FP8 dequantized, then K-quantized, into one file
"$BIN" convert "$T/src" "$T/out.gguf" --to gguf --gguf-type q4_k_m --max-memory 64M --stats --quiet > "$T/stats"
peak=$(awk '$1 == "peak_rss_bytes" { print $2 }' "$T/stats")
out_bytes=$(awk '$1 == "bytes_out" { print $2 }' "$T/stats")
echo "to gguf q4_k_m: source $src_bytes B, output $out_bytes B, --max-memory $MAX B, peak RSS $peak B"
[ "$peak" -le $((MAX + SLACK)) ] || fail "gguf q4_k_m: peak RSS $peak > --max-memory $MAX + $SLACK"
echo "convert_rss: all passed"
