#!/usr/bin/env bash
# gpt_oss from the command line (issue 16): inspect reports both gptoss-a
# variants (sliding/full schedule, MXFP4 experts) with no problems; logits
# of the MXFP4 checkpoint streamed under a memory budget equal the resident
# ones byte for byte, and so do the bf16 one's (experts stacked [in, out]:
# each expert's blocks read and transposed in the cache slot); convert
# HF -> MLX -> HF round-trips every tensor byte for byte (both variants);
# quantize of the MXFP4 variant passes its experts through, of the bf16 one
# quantizes them (below); --to gguf of the MLX MXFP4 form equals the HF
# form's byte for byte, of MLX affine experts and verify across layouts
# refuse gpt_oss by name (exit 2, no output). The match with transformers is
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
grep -q "hit rate" "$T/str.bf16.err" || fail "bf16 did not stream: $(cat "$T/str.bf16.err")"

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

# quantize (MLX): the released MXFP4 experts pass through byte for byte
# (de-interleaved into gate_proj/up_proj stacks as convert --to mlx writes
# them, config entries mxfp4 4-bit g32 per module), never requantized; the
# rest is quantized as asked (attention, embeddings, lm_head at 8-bit g64;
# the router, a Linear with a bias, at 8-bit g64 as mlx-lm's
# quant_predicate says). Converted back to HF in float32, the quantized
# model gives the source's expert tensors byte for byte, and its logits
# equal the quantized model's bit for bit (the MLX quantized path computes
# what the float dequantization computes). Against transformers' MXFP4
# reference, 8-bit is printed (random weights amplify any error: qwen3moe-a
# at 8-bit measures rel L2 0.044 with 3 of 32 argmax changed; gptoss-a 0.066
# and 3) and must beat 4-bit.
"$BIN" quantize "$G/mxfp4" "$T/q8" --bits 8 --group-size 64 --threads 2 --quiet > /dev/null
"$BIN" quantize "$G/mxfp4" "$T/q4" --bits 4 --threads 2 --quiet > /dev/null
"$BIN" hash "$T/q8" > "$T/hq8"
for p in gate_proj up_proj down_proj; do
    for k in weight scales bias; do
        a=$(grep "^model.layers.1.mlp.experts.$p.$k " "$T/hm" | cut -d' ' -f2-)
        b=$(grep "^model.layers.1.mlp.experts.$p.$k " "$T/hq8" | cut -d' ' -f2-)
        [ -n "$a" ] && [ "$a" = "$b" ] || fail "quantize changed expert tensor $p.$k ($a vs $b)"
    done
done
grep -q '^model.layers.0.self_attn.q_proj.weight U32 \[256,64\] ' "$T/hq8" || fail "q_proj not quantized 8-bit"
grep -q '^model.layers.0.mlp.router.weight U32 \[8,64\] ' "$T/hq8" || fail "router not 8-bit"
grep -q '^model.layers.0.mlp.router.bias BF16 ' "$T/hq8" || fail "router bias lost"
node -e '
const q = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).quantization;
if (q.bits !== 8 || q.group_size !== 64 || q.mode !== "affine") throw new Error("defaults " + JSON.stringify(q));
for (let l = 0; l < 4; l++) {
  for (const p of ["gate_proj", "up_proj", "down_proj"]) {
    const e = q[`model.layers.${l}.mlp.experts.${p}`];
    if (!e || e.bits !== 4 || e.group_size !== 32 || e.mode !== "mxfp4") throw new Error(`layer ${l} ${p}: ${JSON.stringify(e)}`);
  }
  const r = q[`model.layers.${l}.mlp.router`];
  if (!r || r.bits !== 8 || r.group_size !== 64) throw new Error(`layer ${l} router: ${JSON.stringify(r)}`);
}' "$T/q8/config.json" || fail "quantization entries"
"$BIN" inspect "$T/q8" | grep -q "problems        0" || fail "inspect of the quantized model: $("$BIN" inspect "$T/q8")"
"$BIN" convert "$T/q8" "$T/q8hf" --to hf --dtype float32 --quiet
"$BIN" hash "$T/q8hf" | grep '\.mlp\.experts\.' > "$T/hx1"
grep '\.mlp\.experts\.' "$T/h0.mxfp4" > "$T/hx0"
[ "$(wc -l < "$T/hx0")" -eq 24 ] && diff "$T/hx0" "$T/hx1" > /dev/null ||
    fail "MXFP4 -> quantize -> HF changed expert tensors: $(diff "$T/hx0" "$T/hx1" | head -4)"
# float activations: on them an affine product is exactly its dequantized weights' product (the
# default int8 activations round x first, which the float32 copy's kernels do not)
"$BIN" logits "$T/q8" --ids "$IDS" --out "$T/q8.f32" --threads 2 --act-int8 off
"$BIN" logits "$T/q8hf" --ids "$IDS" --out "$T/q8hf.f32" --threads 2 --act-int8 off
cmp "$T/q8.f32" "$T/q8hf.f32" || fail "the quantized model and its float32 dequantization compute other logits"
"$BIN" logits "$T/q4" --ids "$IDS" --out "$T/q4.f32" --threads 2
rel() { paste <(od -An -v -f -w4 "$1") <(od -An -v -f -w4 "$2") | awk '{ d = $1 - $2; e += d * d; r += $2 * $2 } END { printf "%.4g", sqrt(e / r) }'; }
REF=${MK_SRC:?}/tests/data/gptoss-a/mxfp4_logits_float32.f32
r8=$(rel "$T/q8.f32" "$REF") r4=$(rel "$T/q4.f32" "$REF")
echo "quantize of the MXFP4 checkpoint vs transformers' MXFP4 logits: 8-bit rel L2 $r8, 4-bit $r4"
awk -v a="$r8" -v b="$r4" 'BEGIN { exit !(a + 0 < b + 0 && b + 0 < 10) }' || fail "8-bit ($r8) not closer than 4-bit ($r4)"
got=$("$BIN" run "$T/q8" --ids 1,2,3 --max-tokens 8 --json --threads 2 2> /dev/null | sed 's/.*"ids":\[\([0-9,]*\)\].*/\1/')
[ "$(echo "$got" | tr ',' '\n' | grep -c .)" -eq 8 ] || fail "run on the quantized model: '$got'"
"$BIN" logits "$T/q8" --ids "$IDS" --out "$T/q8s.f32" --threads 2 --stream-experts --memory-budget 112M --act-int8 off
cmp "$T/q8.f32" "$T/q8s.f32" || fail "the quantized model streamed computes other logits"
echo "ok: quantize of MXFP4 gpt_oss: experts byte-exact, the rest 8-bit, runs and streams"
# the MLX form of the MXFP4 checkpoint: converted --to mlx again it stays
# itself (its 3-D expert stacks were written 2-D [E*out, in] before), and
# quantized it gives what quantizing the HF form gives (its mxfp4 experts
# were dequantized to bf16 and left float before)
"$BIN" convert "$T/mlx.mxfp4" "$T/mlx2" --to mlx --quiet
"$BIN" hash "$T/mlx2" | diff "$T/hm" - > /dev/null || fail "MLX -> MLX changed gpt_oss tensors: $("$BIN" hash "$T/mlx2" | diff "$T/hm" - | head -4)"
"$BIN" quantize "$T/mlx.mxfp4" "$T/q8m" --bits 8 --group-size 64 --threads 2 --quiet > /dev/null
"$BIN" hash "$T/q8m" | diff "$T/hq8" - > /dev/null || fail "quantize of the MLX form differs from the HF form's"
cmp -s <(node -e 'console.log(JSON.stringify(require(process.argv[1]).quantization))' "$T/q8/config.json") \
    <(node -e 'console.log(JSON.stringify(require(process.argv[1]).quantization))' "$T/q8m/config.json") ||
    fail "quantize of the MLX form writes other quantization entries"
echo "ok: the MLX MXFP4 form converts to itself and quantizes as the HF form"

# float experts: quantized as asked, one SwitchLinear stack per projection
# (mlp.experts.<proj>, as mlx-lm loads them). From transformers' bf16
# layout the quantizer reads the gathered rows (gate/up de-interleaved,
# [in, out] transposed); from the MLX float form plain rows: both give the
# same bytes (before, HF was refused and MLX left its experts in bf16).
"$BIN" quantize "$G/bf16" "$T/b8" --bits 8 --group-size 64 --threads 2 --quiet > /dev/null
"$BIN" quantize "$T/mlx.bf16" "$T/b8m" --bits 8 --group-size 64 --threads 2 --quiet > /dev/null
"$BIN" hash "$T/b8" > "$T/hb8"
"$BIN" hash "$T/b8m" | diff "$T/hb8" - > /dev/null || fail "quantize of the bf16 HF and MLX forms differ"
grep -q '^model.layers.3.mlp.experts.gate_proj.weight U32 \[8,128,64\] ' "$T/hb8" || fail "bf16 experts not quantized 8-bit"
grep -q '^model.layers.3.mlp.experts.down_proj.scales BF16 \[8,256,2\] ' "$T/hb8" || fail "bf16 down_proj scales"
grep -q 'mxfp4' "$T/b8/config.json" && fail "bf16 experts written with mxfp4 entries"
"$BIN" inspect "$T/b8" | grep -q "problems        0" || fail "inspect of the quantized bf16 model"
"$BIN" logits "$T/b8" --ids "$IDS" --out "$T/b8.f32" --threads 2
echo "quantize of the bf16 checkpoint, 8-bit, vs transformers: rel L2 $(rel "$T/b8.f32" "$G/ref_logits.f32")"
echo "ok: quantize of bf16 gpt_oss (HF gathered rows = MLX rows)"
# --to gguf (gguf_llama_gptoss.sh checks the HF MXFP4 one against
# llama.cpp) of the MLX MXFP4 form: its mxfp4 stacks hold the released
# nibbles and E8M0 scales unchanged, so each file type's GGUF equals the
# one written from the HF checkpoint byte for byte (general.name is the
# source directory's name: the MLX form moved to one of the same name;
# before, the MLX form was refused). Experts MLX quantized otherwise (the
# affine 8-bit of the bf16 model above) would need requantizing: refused
# by name, no output.
mkdir "$T/m"
mv "$T/mlx.mxfp4" "$T/m/mxfp4"
for ty in f16 q8_0 q4_k_m; do
    "$BIN" convert "$G/mxfp4" "$T/hf.$ty.gguf" --to gguf --gguf-type "$ty" --quiet
    "$BIN" convert "$T/m/mxfp4" "$T/mlx.$ty.gguf" --to gguf --gguf-type "$ty" --verify --quiet
    cmp "$T/hf.$ty.gguf" "$T/mlx.$ty.gguf" || fail "$ty: the GGUF of the MLX MXFP4 form differs from the HF form's"
done
echo "ok: --to gguf of the MLX MXFP4 form = of the HF form (f16, q8_0, q4_k_m)"
expect 2 "gpt_oss experts quantized by MLX other than as mxfp4" "$BIN" convert "$T/b8" "$T/g.gguf" --to gguf
[ ! -e "$T/g.gguf" ] || fail "a refused --to gguf left $T/g.gguf"
expect 2 "gpt_oss" "$BIN" verify "$G/mxfp4" "$G/bf16"
echo "gptoss: all passed"
