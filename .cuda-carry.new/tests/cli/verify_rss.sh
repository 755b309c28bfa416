#!/usr/bin/env bash
# Bounded memory of `verify` across layouts: a synthetic qwen3_5_moe
# 397B-shaped slice (one layer, 8 experts of the real shapes, 474 MB of
# bf16) against its `convert --to mlx` output, compared unit by unit with
# --threads 2. --help states about 10 MiB per thread (chunks of 256K values,
# never a whole tensor); the peak resident set (VmHWM, --stats) must stay
# under 2 x 10 MiB plus the 16 MiB program allowance the other memory tests
# use, on an input more than 4x that. Skipped under AddressSanitizer, whose
# shadow memory is not ours to bound.
set -euo pipefail
BIN=${MK_BIN:?}
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-vrss-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
BOUND=$(((2 * 10 + 16) * 1024 * 1024))

"$BIN" synth "$T/src" --arch qwen3_5_moe --preset 397b-a17b --layers 1 --experts 8 --vocab 2048 --format bf16 --quiet
"$BIN" convert "$T/src" "$T/mlx" --to mlx --quiet
src_bytes=$(du -b "$T/src/model.safetensors" | cut -f1)
[ "$src_bytes" -ge $((4 * BOUND)) ] || fail "source is $src_bytes bytes, not 4x the bound"
"$BIN" verify "$T/src" "$T/mlx" --threads 2 --quiet --stats > "$T/out" 2> "$T/stats" || { cat "$T/out" "$T/stats"; fail "verify"; }
grep -q -- "-> PASS" "$T/out" || fail "no PASS: $(cat "$T/out")"
[ "$(awk '$1 == "mode" { print $2 }' "$T/stats")" = layout ] || fail "not compared by layout"
if [ "$(awk '$1 == "sanitizer" { print $2 }' "$T/stats")" = 1 ]; then
    echo "skip: sanitizer build"
    exit 0
fi
peak=$(awk '$1 == "peak_rss_bytes" { print $2 }' "$T/stats")
echo "source $src_bytes B vs its MLX conversion, 2 threads: peak RSS $peak B (bound $BOUND B)"
[ "$peak" -gt 0 ] && [ "$peak" -le "$BOUND" ] || fail "peak RSS $peak above $BOUND"
echo "verify_rss: all passed"
