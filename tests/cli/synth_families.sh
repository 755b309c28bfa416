#!/usr/bin/env bash
# synth for the GLM and MiniMax families (issue 16): the released models'
# shapes (GLM-4.5-Air, GLM-4.7, GLM-4.7-Flash, MiniMax-M2, as their HF configs
# and llama.cpp's GGUF metadata give them) and, at the tiny size, checkpoints
# that `inspect` reads exactly as it reads the shared fixtures made by
# transformers (same family, schedule, shapes, routing, tensor count), in
# every format, that run.
set -euo pipefail
BIN=${MK_BIN:?}
FX=${MK_FIXTURES:-}
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-synthfam-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
shape() { awk -v n="$2" '$1 == n { print $2, $3 }' "$1"; }

# Real shapes (listing only: nothing written).
"$BIN" synth "$T/x" --arch glm4_moe --preset glm-4.7 --format bf16 --list > "$T/l"
[ "$(grep -c '\.input_layernorm\.weight ' "$T/l")" -eq 92 ] || fail "glm-4.7: 92 layers"
[ "$(shape "$T/l" model.layers.2.mlp.down_proj.weight)" = "BF16 [5120,12288]" ] || fail "glm-4.7 dense layer 2"
[ "$(shape "$T/l" model.layers.3.mlp.experts.159.gate_proj.weight)" = "BF16 [1536,5120]" ] || fail "glm-4.7 expert"
[ "$(shape "$T/l" model.layers.3.mlp.shared_experts.up_proj.weight)" = "BF16 [1536,5120]" ] || fail "glm-4.7 shared"
[ "$(shape "$T/l" model.layers.0.self_attn.q_proj.weight)" = "BF16 [12288,5120]" ] || fail "glm-4.7 q_proj"
[ "$(shape "$T/l" model.layers.0.self_attn.k_proj.bias)" = "BF16 [1024]" ] || fail "glm-4.7 k bias"
[ "$(shape "$T/l" model.layers.0.self_attn.k_norm.weight)" = "BF16 [128]" ] || fail "glm-4.7 k_norm"
[ "$(shape "$T/l" model.layers.3.mlp.gate.e_score_correction_bias)" = "F32 [160]" ] || fail "glm-4.7 bias"
"$BIN" synth "$T/x" --arch glm4_moe --preset glm-4.5-air --format fp8 --list > "$T/l"
[ "$(grep -c '\.input_layernorm\.weight ' "$T/l")" -eq 46 ] || fail "glm-4.5-air: 46 layers"
grep -q 'q_norm' "$T/l" && fail "glm-4.5-air has no q/k norm"
[ "$(shape "$T/l" model.layers.1.mlp.experts.127.down_proj.weight)" = "F8_E4M3 [4096,1408]" ] || fail "air expert"
"$BIN" synth "$T/x" --arch glm4_moe_lite --preset glm-4.7-flash --format bf16 --list > "$T/l"
[ "$(grep -c '\.input_layernorm\.weight ' "$T/l")" -eq 47 ] || fail "glm-4.7-flash: 47 layers"
[ "$(shape "$T/l" model.layers.0.self_attn.q_b_proj.weight)" = "BF16 [5120,768]" ] || fail "flash q_b (20 x 256)"
[ "$(shape "$T/l" model.layers.0.self_attn.kv_a_proj_with_mqa.weight)" = "BF16 [576,2048]" ] || fail "flash kv_a"
[ "$(shape "$T/l" model.layers.0.self_attn.kv_b_proj.weight)" = "BF16 [8960,512]" ] || fail "flash kv_b"
[ "$(shape "$T/l" model.layers.0.self_attn.o_proj.weight)" = "BF16 [2048,5120]" ] || fail "flash o_proj"
[ "$(shape "$T/l" model.layers.0.mlp.gate_proj.weight)" = "BF16 [10240,2048]" ] || fail "flash dense layer 0"
[ "$(shape "$T/l" model.layers.46.mlp.experts.63.up_proj.weight)" = "BF16 [1536,2048]" ] || fail "flash expert"
"$BIN" synth "$T/x" --arch minimax_m2 --preset minimax-m2 --format fp8 --list > "$T/l"
[ "$(grep -c '\.input_layernorm\.weight ' "$T/l")" -eq 62 ] || fail "minimax-m2: 62 layers"
[ "$(shape "$T/l" model.layers.0.self_attn.q_proj.weight)" = "F8_E4M3 [6144,3072]" ] || fail "minimax q_proj"
[ "$(shape "$T/l" model.layers.0.self_attn.q_norm.weight)" = "BF16 [6144]" ] || fail "minimax q_norm (whole projection)"
[ "$(shape "$T/l" model.layers.0.self_attn.k_norm.weight)" = "BF16 [1024]" ] || fail "minimax k_norm"
[ "$(shape "$T/l" model.layers.61.block_sparse_moe.experts.255.w2.weight)" = "F8_E4M3 [3072,1536]" ] ||
    fail "minimax w2"
[ "$(shape "$T/l" model.layers.61.block_sparse_moe.experts.255.w1.weight_scale_inv)" = "F32 [12,24]" ] ||
    fail "minimax w1 scale grid"
[ "$(shape "$T/l" model.layers.0.block_sparse_moe.e_score_correction_bias)" = "F32 [256]" ] || fail "minimax bias"
echo "ok: released shapes"

# Tiny: read like the transformers-made fixtures, in every format, and run.
for pair in glm4_moe:glm4moe-a glm4_moe_lite:glm4lite-a minimax_m2:minimaxm2-a; do
    a=${pair%%:*} f=${pair##*:}
    "$BIN" synth "$T/$a" --arch "$a" --preset tiny --format bf16 --quiet
    if [ -n "$FX" ] && [ -d "$FX/$f/bf16" ]; then
        # everything but the path line and the byte split (the fixture stores its
        # correction bias in bf16, released checkpoints and synth in f32)
        diff <("$BIN" inspect "$T/$a" | sed '1d; /^  bytes /d') \
            <("$BIN" inspect "$FX/$f/bf16" | sed '1d; /^  bytes /d') > "$T/d" ||
            { cat "$T/d" >&2; fail "$a: inspect reads synth differently from the fixture $f"; }
    else
        echo "skip: no fixture $f under MK_FIXTURES: inspect comparison left out for $a"
    fi
    for fmt in bf16 fp8 ct-int4; do
        d=$T/$a-$fmt
        [ $fmt = bf16 ] && d=$T/$a || "$BIN" synth "$d" --arch "$a" --preset tiny --format $fmt --quiet
        rm -f "$T/o.f32"
        "$BIN" logits "$d" --ids 1,2,3,4,5,6,7,8 --out "$T/o.f32" 2> "$T/err" || { cat "$T/err" >&2; fail "$a $fmt: logits"; }
        [ "$(stat -c %s "$T/o.f32")" -eq $((8 * 512 * 4)) ] || fail "$a $fmt: logits size"
        # finite: no NaN/Inf in the output
        od -An -v -f "$T/o.f32" | tr -s ' ' '\n' | grep -qi 'nan\|inf' && fail "$a $fmt: non-finite logits"
    done
    # HF -> MLX -> HF: no dtype changes, so every tensor comes back byte-identical
    "$BIN" convert "$T/$a" "$T/$a.mlx" --to mlx --verify --quiet
    "$BIN" convert "$T/$a.mlx" "$T/$a.hf" --to hf --verify --quiet
    diff <("$BIN" hash "$T/$a" | sort) <("$BIN" hash "$T/$a.hf" | sort) > "$T/d" ||
        { head "$T/d" >&2; fail "$a: HF -> MLX -> HF changed tensors"; }
    for fmt in fp8 ct-int4; do
        "$BIN" convert "$T/$a-$fmt" "$T/$a-$fmt.mlx" --to mlx --verify --quiet
    done
    if [ "$a" = minimax_m2 ]; then # shipped per-expert only: refused
        set +e
        "$BIN" synth "$T/$a-fused" --arch "$a" --preset tiny --format bf16 --layout fused 2> /dev/null
        [ $? = 2 ] || fail "minimax_m2 --layout fused: expected exit 2"
        set -e
    else
        "$BIN" synth "$T/$a-fused" --arch "$a" --preset tiny --format bf16 --layout fused --quiet
        "$BIN" convert "$T/$a-fused" "$T/$a-fused.mlx" --to mlx --verify --quiet
    fi
    "$BIN" quantize "$T/$a" "$T/$a-q4" --bits 4 --quiet 2> "$T/err" || { cat "$T/err" >&2; fail "$a: quantize"; }
    rm -f "$T/o.f32"
    "$BIN" logits "$T/$a-q4" --ids 1,2,3,4,5,6,7,8 --out "$T/o.f32" 2> "$T/err" || { cat "$T/err" >&2; fail "$a: q4 logits"; }
    echo "ok: $a tiny (bf16, fp8, ct-int4, MLX 4-bit; HF -> MLX -> HF byte-exact; fused layout where shipped)"
done

# MLX output as stock mlx-lm loads it (mlx_lm/models/glm4_moe.py, glm4_moe_lite.py,
# minimax.py): the ModelArgs fields without a default present in config.json;
# minimax_m2's experts stacked under block_sparse_moe.switch_mlp (its sanitize
# stacks only unquantized per-expert weights) with the router (a Linear) at
# 8-bit g64 as its quant_predicate says; the GLM routers (MoEGate, not a
# Linear) left in float.
need() { # DIR KEY...
    local d=$1
    shift
    for k in "$@"; do grep -q "\"$k\":" "$d/config.json" || fail "$d: mlx-lm needs '$k' in config.json"; done
}
need "$T/glm4_moe.mlx" model_type vocab_size hidden_size intermediate_size max_position_embeddings \
    moe_intermediate_size norm_topk_prob num_attention_heads n_group head_dim topk_group n_shared_experts \
    n_routed_experts routed_scaling_factor num_experts_per_tok first_k_dense_replace num_hidden_layers \
    num_key_value_heads rms_norm_eps rope_theta rope_scaling use_qk_norm tie_word_embeddings attention_bias \
    partial_rotary_factor
need "$T/minimax_m2.mlx" model_type hidden_size intermediate_size num_attention_heads num_key_value_heads \
    max_position_embeddings num_experts_per_tok num_local_experts shared_intermediate_size num_hidden_layers \
    rms_norm_eps rope_theta rotary_dim vocab_size
need "$T/glm4_moe_lite.mlx" first_k_dense_replace rope_theta
"$BIN" hash "$T/minimax_m2.mlx" | awk '{ print $1, $2, $3 }' > "$T/h"
grep -q '^model.layers.2.block_sparse_moe.switch_mlp.gate_proj.weight BF16 \[8,128,256\]$' "$T/h" ||
    fail "minimax_m2 MLX: w1 not stacked as switch_mlp.gate_proj"
grep -q '^model.layers.2.block_sparse_moe.switch_mlp.down_proj.weight BF16 \[8,256,128\]$' "$T/h" ||
    fail "minimax_m2 MLX: w2 not stacked as switch_mlp.down_proj"
grep -q 'experts\.' "$T/h" && fail "minimax_m2 MLX: per-expert tensors left"
"$BIN" hash "$T/minimax_m2-q4" | awk '{ print $1, $2, $3 }' > "$T/h"
grep -q '^model.layers.0.block_sparse_moe.gate.weight U32 \[8,64\]$' "$T/h" || fail "minimax_m2 router not 8-bit"
grep -q '^model.layers.0.block_sparse_moe.switch_mlp.up_proj.weight U32 \[8,128,32\]$' "$T/h" ||
    fail "minimax_m2 experts not stacked 4-bit"
grep -q '"model.layers.0.block_sparse_moe.gate": {' "$T/minimax_m2-q4/config.json" ||
    fail "minimax_m2: no config entry for the 8-bit router"
for a in glm4_moe glm4_moe_lite; do
    "$BIN" hash "$T/$a-q4" | awk '{ print $1, $2, $3 }' > "$T/h"
    grep -q '^model.layers.1.mlp.gate.weight BF16 \[8,256\]$' "$T/h" || fail "$a: router not left in float"
    grep -q 'mlp.gate.scales' "$T/h" && fail "$a: router quantized"
done
for a in glm4_moe glm4_moe_lite minimax_m2; do # the stacked MLX form runs as the HF one, bit for bit
    rm -f "$T/hf.f32" "$T/mlx.f32"
    "$BIN" logits "$T/$a" --ids 3,1,4,1,5,9,2,6 --out "$T/hf.f32" 2> /dev/null
    "$BIN" logits "$T/$a.mlx" --ids 3,1,4,1,5,9,2,6 --out "$T/mlx.f32" 2> "$T/err" || { cat "$T/err" >&2; fail "$a MLX: logits"; }
    cmp -s "$T/hf.f32" "$T/mlx.f32" || fail "$a: MLX (stacked) logits differ from HF (per-expert)"
done
echo "ok: MLX output has what mlx-lm's glm4_moe, glm4_moe_lite and minimax models load"
