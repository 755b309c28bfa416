#!/usr/bin/env bash
# gpt_oss from the command line (issue 16): inspect reports both gptoss-a
# variants (sliding/full schedule, MXFP4 experts) with no problems; logits
# of the MXFP4 checkpoint streamed under a memory budget equal the resident
# ones byte for byte, and the bf16 one (experts transposed into memory at
# load: nothing to stream) runs resident under the same options; convert
# HF -> MLX -> HF round-trips every tensor byte for byte (both variants);
# quantize, --to gguf of MLX MXFP4 experts and verify across layouts refuse
# gpt_oss by name
# (exit 2, no output). The match with transformers is
# test_engine_fixtures' (test_gptoss_a).
set -euo pipefail
BIN=${MK_BIN:?}
. "$(dirname "$0")/fixtures.bash"
need_fixtures
G=$FX/gptoss-a
[ -d "$G" ] || { echo "SKIP: no gptoss-a fixture in $FX"; exit 77; }
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-gptoss-XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.bash"

for v in bf16 mxfp4; do
    "$BIN" inspect "$G/$v" > "$T/insp.$v"
    grep -q "model_type      gpt_oss" "$T/insp.$v" || fail "$v: inspect does not name gpt_oss"
    grep -q "schedule        WAWA" "$T/insp.$v" || fail "$v: schedule is not sliding/full/sliding/full"
    grep -q "problems        0" "$T/insp.$v" || fail "$v: inspect found problems: $(cat "$T/insp.$v")"
done
grep -q "mxfp4 4-bit g32 *8 modules" "$T/insp.mxfp4" || fail "mxfp4: experts not reported as MXFP4"

IDS=$(tr -d ' \n' < "$G/reference.json" | grep -o '"input_ids":\[[0-9,]*\]' | head -1 | sed 's/.*\[//; s/\]//')
[ -n "$IDS" ] || fail "no input_ids in reference.json"
for v in bf16 mxfp4; do
    "$BIN" logits "$G/$v" --ids "$IDS" --out "$T/res.$v.f32" --threads 2
    "$BIN" logits "$G/$v" --ids "$IDS" --out "$T/str.$v.f32" --threads 2 --stream-experts \
        --memory-budget 112M --stats 2> "$T/str.$v.err"
    [ "$(stat -c %s "$T/res.$v.f32")" = $((32 * 512 * 4)) ] || fail "$v: logits file of the wrong size"
    cmp "$T/res.$v.f32" "$T/str.$v.f32" || fail "$v: logits under --memory-budget differ from resident"
done
grep -q "hit rate" "$T/str.mxfp4.err" || fail "mxfp4 did not stream: $(cat "$T/str.mxfp4.err")"

# convert HF -> MLX -> HF: the experts are rewritten byte for byte (MXFP4
# blocks and scales de-interleaved into MLX's gate_proj/up_proj stacks,
# never requantized; the float layout transposed), so the round trip gives
# back every tensor's bytes, and the MLX checkpoint computes the same logits
# bit for bit (and streams)
for v in mxfp4 bf16; do
    "$BIN" convert "$G/$v" "$T/mlx.$v" --to mlx --verify --quiet
    "$BIN" convert "$T/mlx.$v" "$T/hf.$v" --to hf --verify --quiet
    "$BIN" hash "$G/$v" > "$T/h0.$v"
    "$BIN" hash "$T/hf.$v" > "$T/h1.$v"
    diff "$T/h0.$v" "$T/h1.$v" > /dev/null || fail "$v: HF -> MLX -> HF changed tensors: $(diff "$T/h0.$v" "$T/h1.$v" | head -5)"
    "$BIN" logits "$T/mlx.$v" --ids "$IDS" --out "$T/mlx.$v.f32" --threads 2
    cmp "$T/res.$v.f32" "$T/mlx.$v.f32" || fail "$v: the MLX conversion computes other logits"
    "$BIN" inspect "$T/mlx.$v" > "$T/insp.mlx.$v"
    grep -q "layout mlx-switch_mlp" "$T/insp.mlx.$v" || fail "$v: MLX experts not reported as stacks"
    grep -q "problems        0" "$T/insp.mlx.$v" || fail "$v: inspect of the MLX output: $(cat "$T/insp.mlx.$v")"
done
grep -q '"mode": "mxfp4"' "$T/mlx.mxfp4/config.json" || fail "MLX config has no mxfp4 quantization block"
grep -q '"quant_method": "mxfp4"' "$T/hf.mxfp4/config.json" || fail "HF config lost quant_method mxfp4"
# MXFP4 -> MLX changes no weight byte: down_proj's blocks are MLX's U32 words as they were
b0=$(grep "layers.2.mlp.experts.down_proj_blocks " "$T/h0.mxfp4" | awk '{print $4}')
"$BIN" hash "$T/mlx.mxfp4" > "$T/hm"
b1=$(grep "layers.2.mlp.experts.down_proj.weight " "$T/hm" | awk '{print $4}')
[ -n "$b0" ] && [ "$b0" = "$b1" ] || fail "down_proj bytes changed in the MLX conversion ($b0 vs $b1)"
"$BIN" logits "$T/mlx.mxfp4" --ids "$IDS" --out "$T/mlx.str.f32" --threads 2 --stream-experts --memory-budget 112M
cmp "$T/res.mxfp4.f32" "$T/mlx.str.f32" || fail "the MLX MXFP4 conversion streamed computes other logits"

expect 2 "gpt_oss" "$BIN" quantize "$G/bf16" "$T/q" --bits 4
[ ! -e "$T/q" ] || fail "a refused quantize left $T/q"
# --to gguf (gguf_llama_gptoss.sh checks it against llama.cpp) of MLX MXFP4 experts: refused by name
expect 2 "gpt_oss" "$BIN" convert "$T/mlx.mxfp4" "$T/g.gguf" --to gguf
[ ! -e "$T/g.gguf" ] || fail "a refused --to gguf left $T/g.gguf"
expect 2 "gpt_oss" "$BIN" verify "$G/mxfp4" "$G/bf16"
echo "gptoss: all passed"
