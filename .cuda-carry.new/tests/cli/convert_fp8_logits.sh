#!/usr/bin/env bash
# End to end: the FP8 fixtures converted to HF bf16 hold exactly the weights
# their fp8_logits.f32 reference was computed from (bf16(e4m3 * scale_inv),
# partial edge blocks), so the CPU engine on the converted checkpoint
# reproduces that reference (rel L2 < 1e-5; float32 RoPE, as transformers
# used). Needs the engine's `logits` command; skipped when it is absent.
set -euo pipefail
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
need_fixtures
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-fp8log-XXXXXX")
trap 'rm -rf "$T"' EXIT
if ! "$BIN" --help | grep -q "^  logits "; then
    echo "skip: no logits command in this build"
    exit 0
fi
for d in deepseekv3-a qwen3moe-odd; do
    "$BIN" convert "$FX/$d/fp8" "$T/$d" --to hf --quiet
    ids=$(tr -d ' \n' < "$FX/$d/reference.json" | sed 's/.*"input_ids":\[\([0-9,]*\)\].*/\1/')
    "$BIN" logits "$T/$d" --ids "$ids" --out "$T/$d.f32" 2>/dev/null
    rel=$(paste <(od -An -v -f -w4 "$T/$d.f32") <(od -An -v -f -w4 "$FX/$d/fp8_logits.f32") |
        awk '{ d = $1 - $2; e += d * d; r += $2 * $2 } END { printf "%.3g", sqrt(e / r) }')
    awk -v r="$rel" 'BEGIN { exit !(r < 1e-5) }' || { echo "FAIL: $d: rel L2 $rel vs fp8_logits.f32" >&2; exit 1; }
    echo "ok: $d fp8 -> HF bf16 -> engine logits: rel L2 $rel against fp8_logits.f32"
done
echo "convert_fp8_logits: all passed"
