#!/usr/bin/env bash
# synth for gpt-oss and the DSA families (issue 16): the released models'
# shapes (gpt-oss-20b and -120b with MXFP4 experts as released, DeepSeek-V3.2
# in block FP8 with its indexer's wq_b/wk in FP8 and weights_proj in bf16,
# GLM-5) and, at the tiny size, checkpoints that `inspect` reads exactly as
# it reads the shared fixtures made by transformers (gptoss-a bf16 and
# mxfp4, deepseekv32-a, glm5dsa-a), that run through `logits` and `run`,
# and round-trip HF -> MLX -> HF byte for byte. gpt_oss's bf16 and MXFP4
# forms of one seed hold the same values (E2M1 x 2^k is exact in bf16), so
# the two formats compute the same logits: at the tiny size and at
# gpt-oss-20b's width (H 2880: 90 MXFP4 groups per row) cut to one layer.
set -euo pipefail
BIN=${MK_BIN:?}
FX=${MK_FIXTURES:-}
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-synthoss-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
shape() { awk -v n="$2" '$1 == n { print $2, $3 }' "$1"; }
# rel L2 of A against B (raw float32), printed; fails above $3
close() {
    paste <(od -An -v -f -w4 "$1") <(od -An -v -f -w4 "$2") |
        awk -v lim="$3" '{ d = $1 - $2; e += d * d; r += $2 * $2 } END { printf "%.3g\n", sqrt(e / r); exit !(NR > 0 && r > 0 && sqrt(e / r) <= lim) }'
}
finite() { ! od -An -v -f "$1" | tr -s ' ' '\n' | grep -qi 'nan\|inf'; }

# Released shapes (listing only: nothing written).
"$BIN" synth "$T/x" --arch gpt_oss --preset gpt-oss-20b --format mxfp4 --list > "$T/l"
[ "$(grep -c '\.input_layernorm\.weight ' "$T/l")" -eq 24 ] || fail "gpt-oss-20b: 24 layers"
[ "$(shape "$T/l" model.embed_tokens.weight)" = "BF16 [201088,2880]" ] || fail "gpt-oss-20b embeddings"
[ "$(shape "$T/l" model.layers.0.self_attn.q_proj.weight)" = "BF16 [4096,2880]" ] || fail "gpt-oss-20b q_proj"
[ "$(shape "$T/l" model.layers.0.self_attn.k_proj.bias)" = "BF16 [512]" ] || fail "gpt-oss-20b k bias"
[ "$(shape "$T/l" model.layers.0.self_attn.o_proj.bias)" = "BF16 [2880]" ] || fail "gpt-oss-20b o bias"
[ "$(shape "$T/l" model.layers.0.self_attn.sinks)" = "BF16 [64]" ] || fail "gpt-oss-20b sinks"
[ "$(shape "$T/l" model.layers.23.mlp.router.weight)" = "BF16 [32,2880]" ] || fail "gpt-oss-20b router"
[ "$(shape "$T/l" model.layers.23.mlp.experts.gate_up_proj_blocks)" = "U8 [32,5760,90,16]" ] ||
    fail "gpt-oss-20b gate_up blocks"
[ "$(shape "$T/l" model.layers.23.mlp.experts.gate_up_proj_scales)" = "U8 [32,5760,90]" ] || fail "gpt-oss-20b scales"
[ "$(shape "$T/l" model.layers.23.mlp.experts.down_proj_blocks)" = "U8 [32,2880,90,16]" ] || fail "gpt-oss-20b down"
[ "$(shape "$T/l" model.layers.23.mlp.experts.gate_up_proj_bias)" = "BF16 [32,5760]" ] || fail "gpt-oss-20b bias"
grep -q 'q_norm' "$T/l" && fail "gpt-oss has no q/k norm"
"$BIN" synth "$T/x" --arch gpt_oss --preset gpt-oss-120b --format bf16 --list > "$T/l"
[ "$(grep -c '\.input_layernorm\.weight ' "$T/l")" -eq 36 ] || fail "gpt-oss-120b: 36 layers"
[ "$(shape "$T/l" model.layers.35.mlp.experts.gate_up_proj)" = "BF16 [128,2880,5760]" ] || fail "120b gate_up (E, H, 2I)"
[ "$(shape "$T/l" model.layers.35.mlp.experts.down_proj)" = "BF16 [128,2880,2880]" ] || fail "120b down (E, I, H)"
"$BIN" synth "$T/x" --arch deepseek_v32 --preset deepseek-v3.2 --format fp8 --list > "$T/l"
[ "$(grep -c '\.input_layernorm\.weight ' "$T/l")" -eq 61 ] || fail "deepseek-v3.2: 61 layers"
[ "$(shape "$T/l" model.layers.0.mlp.gate_proj.weight)" = "F8_E4M3 [18432,7168]" ] || fail "v3.2 dense layer 0"
[ "$(shape "$T/l" model.layers.3.self_attn.q_b_proj.weight)" = "F8_E4M3 [24576,1536]" ] || fail "v3.2 q_b"
[ "$(shape "$T/l" model.layers.3.self_attn.indexer.wq_b.weight)" = "F8_E4M3 [8192,1536]" ] || fail "v3.2 indexer wq_b"
[ "$(shape "$T/l" model.layers.3.self_attn.indexer.wq_b.weight_scale_inv)" = "F32 [64,12]" ] || fail "v3.2 wq_b scales"
[ "$(shape "$T/l" model.layers.3.self_attn.indexer.wk.weight)" = "F8_E4M3 [128,7168]" ] || fail "v3.2 indexer wk"
[ "$(shape "$T/l" model.layers.3.self_attn.indexer.weights_proj.weight)" = "BF16 [64,7168]" ] ||
    fail "v3.2 weights_proj (bf16 in the FP8 release)"
[ "$(shape "$T/l" model.layers.3.self_attn.indexer.k_norm.bias)" = "BF16 [128]" ] || fail "v3.2 indexer k_norm"
[ "$(shape "$T/l" model.layers.60.mlp.experts.255.down_proj.weight)" = "F8_E4M3 [7168,2048]" ] || fail "v3.2 expert"
"$BIN" synth "$T/x" --arch glm_moe_dsa --preset glm-5 --format bf16 --list > "$T/l"
[ "$(grep -c '\.input_layernorm\.weight ' "$T/l")" -eq 78 ] || fail "glm-5: 78 layers"
[ "$(shape "$T/l" model.layers.2.mlp.down_proj.weight)" = "BF16 [6144,12288]" ] || fail "glm-5 dense layer 2"
[ "$(shape "$T/l" model.layers.3.self_attn.q_b_proj.weight)" = "BF16 [16384,2048]" ] || fail "glm-5 q_b (64 x 256)"
[ "$(shape "$T/l" model.layers.3.self_attn.kv_b_proj.weight)" = "BF16 [28672,512]" ] || fail "glm-5 kv_b (64 x 448)"
[ "$(shape "$T/l" model.layers.3.self_attn.o_proj.weight)" = "BF16 [6144,16384]" ] || fail "glm-5 o_proj"
[ "$(shape "$T/l" model.layers.3.self_attn.indexer.wq_b.weight)" = "BF16 [4096,2048]" ] || fail "glm-5 indexer (32 x 128)"
[ "$(shape "$T/l" model.layers.77.mlp.experts.255.gate_proj.weight)" = "BF16 [2048,6144]" ] || fail "glm-5 expert"
echo "ok: released shapes"

set +e
"$BIN" synth "$T/r" --arch gpt_oss --preset tiny --format fp8 2> "$T/err"
[ $? = 2 ] && grep -q mxfp4 "$T/err" || fail "gpt_oss --format fp8: expected exit 2 naming mxfp4"
"$BIN" synth "$T/r" --arch qwen3_moe --preset tiny --format mxfp4 2> "$T/err"
[ $? = 2 ] && grep -q gpt_oss "$T/err" || fail "qwen3_moe --format mxfp4: expected exit 2 naming gpt_oss"
set -e
[ ! -e "$T/r" ] || fail "a refused synth left output"

# Tiny: read like the transformers-made fixtures, run, round-trip.
for spec in gpt_oss:bf16:gptoss-a/bf16 gpt_oss:mxfp4:gptoss-a/mxfp4 deepseek_v32:bf16:deepseekv32-a/bf16 \
    deepseek_v32:fp8: glm_moe_dsa:bf16:glm5dsa-a/bf16 glm_moe_dsa:fp8:; do
    IFS=: read -r a fmt f <<< "$spec"
    d=$T/$a-$fmt
    "$BIN" synth "$d" --arch "$a" --preset tiny --format "$fmt" --quiet
    if [ -n "$f" ] && [ -n "$FX" ] && [ -d "$FX/$f" ]; then
        diff <("$BIN" inspect "$d" | sed '1d; /^  bytes /d') <("$BIN" inspect "$FX/$f" | sed '1d; /^  bytes /d') \
            > "$T/d" || { cat "$T/d" >&2; fail "$a $fmt: inspect reads synth differently from the fixture $f"; }
    elif [ -n "$f" ]; then
        echo "skip: no fixture $f under MK_FIXTURES: inspect comparison left out for $a $fmt"
    fi
    "$BIN" inspect "$d" | grep -q "problems        0" || fail "$a $fmt: inspect finds problems"
    "$BIN" logits "$d" --ids 1,2,3,4,5,6,7,8 --out "$T/$a-$fmt.f32" 2> "$T/err" || { cat "$T/err" >&2; fail "$a $fmt: logits"; }
    [ "$(stat -c %s "$T/$a-$fmt.f32")" -eq $((8 * 512 * 4)) ] || fail "$a $fmt: logits size"
    finite "$T/$a-$fmt.f32" || fail "$a $fmt: non-finite logits"
    "$BIN" run "$d" --ids 1,2,3 --max-tokens 8 --json 2> "$T/err" > "$T/run" || { cat "$T/err" >&2; fail "$a $fmt: run"; }
    [ "$(sed 's/.*"ids":\[\([0-9,]*\)\].*/\1/' "$T/run" | tr ',' '\n' | grep -c .)" -eq 8 ] ||
        fail "$a $fmt: run did not give 8 tokens: $(cat "$T/run")"
    if [ "$fmt" != fp8 ]; then # HF -> MLX -> HF: no dtype changes, every tensor byte-identical
        "$BIN" convert "$d" "$d.mlx" --to mlx --verify --quiet
        "$BIN" convert "$d.mlx" "$d.hf" --to hf --verify --quiet
        diff <("$BIN" hash "$d" | sort) <("$BIN" hash "$d.hf" | sort) > "$T/d" ||
            { head "$T/d" >&2; fail "$a $fmt: HF -> MLX -> HF changed tensors"; }
    fi
    echo "ok: $a $fmt tiny"
done
grep -q '"quant_method": "mxfp4"' "$T/gpt_oss-mxfp4/config.json" || fail "gpt_oss mxfp4: no quant_method mxfp4"
grep -q '"indexer_types"' "$T/glm_moe_dsa-bf16/config.json" || fail "glm_moe_dsa: no indexer_types"
grep -q '"indexer_types"' "$T/deepseek_v32-bf16/config.json" && fail "deepseek_v32 has no indexer_types"
r=$(close "$T/gpt_oss-bf16.f32" "$T/gpt_oss-mxfp4.f32" 1e-5) || fail "gpt_oss tiny: bf16 and mxfp4 forms differ ($r)"
echo "ok: gpt_oss tiny bf16 and mxfp4 forms compute the same logits (rel L2 $r)"

# gpt-oss-20b's width, one layer, two experts
for fmt in mxfp4 bf16; do
    "$BIN" synth "$T/g20-$fmt" --arch gpt_oss --preset gpt-oss-20b --layers 1 --experts 2 --vocab 512 \
        --format "$fmt" --quiet --threads 2
    "$BIN" logits "$T/g20-$fmt" --ids 5,6,7,8 --out "$T/g20-$fmt.f32" --threads 2
    finite "$T/g20-$fmt.f32" || fail "gpt-oss-20b cut $fmt: non-finite logits"
done
"$BIN" inspect "$T/g20-mxfp4" | grep -q "problems        0" || fail "gpt-oss-20b cut: inspect finds problems"
r=$(close "$T/g20-bf16.f32" "$T/g20-mxfp4.f32" 1e-5) || fail "gpt-oss-20b cut: bf16 and mxfp4 differ ($r)"
echo "ok: gpt-oss-20b cut to 1 layer: MXFP4 at H 2880 runs, equal to its bf16 form (rel L2 $r)"
