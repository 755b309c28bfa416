#!/usr/bin/env bash
# synth: deterministic (same arguments, same bytes; another seed, other
# bytes), real shapes for every preset (cut down with --layers/--experts/
# --vocab), every format and layout readable by convert, and argument errors
# exit 2.
set -euo pipefail
BIN=${MK_BIN:?}
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-synth-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$BIN" synth "$T/a" --arch qwen3_5_moe --preset tiny --format fp8 --vl --quiet
"$BIN" synth "$T/b" --arch qwen3_5_moe --preset tiny --format fp8 --vl --quiet --threads 1
"$BIN" synth "$T/c" --arch qwen3_5_moe --preset tiny --format fp8 --vl --quiet --seed 1
cmp -s "$T/a/model.safetensors" "$T/b/model.safetensors" || fail "same arguments, different bytes"
cmp -s "$T/a/model.safetensors" "$T/c/model.safetensors" && fail "another seed, same bytes"
echo "ok: deterministic across thread counts, seed-dependent"

shape() { # listing tensor -> "DTYPE [dims]"
    awk -v n="$2" '$1 == n { print $2, $3 }' "$1"
}
"$BIN" synth "$T/p1" --arch qwen3_5_moe --preset 397b-a17b --format bf16 --list > "$T/l1"
[ "$(grep -c . "$T/l1")" -eq $((3 + 45 * 11 + 15 * 8 + 60 * (5 + 3 * 512))) ] || fail "397b tensor count"
[ "$(shape "$T/l1" model.layers.0.mlp.experts.511.down_proj.weight)" = "BF16 [4096,1024]" ] || fail "397b expert"
[ "$(shape "$T/l1" model.layers.0.linear_attn.in_proj_qkv.weight)" = "BF16 [12288,4096]" ] || fail "397b qkv"
[ "$(shape "$T/l1" model.layers.3.self_attn.q_proj.weight)" = "BF16 [16384,4096]" ] || fail "397b q_proj"
[ "$(shape "$T/l1" model.embed_tokens.weight)" = "BF16 [248320,4096]" ] || fail "397b embed"
"$BIN" synth "$T/p2" --arch deepseek_v3 --preset deepseek-v3 --format fp8 --list > "$T/l2"
[ "$(shape "$T/l2" model.layers.60.mlp.experts.255.gate_proj.weight)" = "F8_E4M3 [2048,7168]" ] || fail "dsv3 expert"
[ "$(shape "$T/l2" model.layers.3.mlp.experts.0.gate_proj.weight_scale_inv)" = "F32 [16,56]" ] || fail "dsv3 scale"
[ "$(shape "$T/l2" model.layers.0.mlp.down_proj.weight)" = "F8_E4M3 [7168,18432]" ] || fail "dsv3 dense mlp"
[ "$(shape "$T/l2" model.layers.1.self_attn.kv_b_proj.weight)" = "F8_E4M3 [32768,512]" ] || fail "dsv3 kv_b"
"$BIN" synth "$T/p3" --arch qwen3_next --preset 80b-a3b --format bf16 --list > "$T/l3"
[ "$(shape "$T/l3" model.layers.0.linear_attn.in_proj_qkvz.weight)" = "BF16 [12288,2048]" ] || fail "80b qkvz"
[ "$(shape "$T/l3" model.layers.0.linear_attn.conv1d.weight)" = "BF16 [8192,1,4]" ] || fail "80b conv1d"
"$BIN" synth "$T/p4" --arch qwen3_moe --preset 30b-a3b --layers 2 --experts 4 --vocab 64 --format bf16 --quiet
"$BIN" hash "$T/p4" | awk '{ print $1, $2, $3 }' > "$T/h4"
"$BIN" synth "$T/p4" --arch qwen3_moe --preset 30b-a3b --layers 2 --experts 4 --vocab 64 --format bf16 --list |
    sort > "$T/l4"
diff "$T/h4" "$T/l4" > /dev/null || fail "--list differs from what synth writes"
echo "ok: preset shapes"

FORMATS="bf16 fp8 ct-int4 ct-int4-asym"
"$BIN" convert "$T/a" "$T/probe" --to hf --stats --quiet | grep -q "^sanitizer 1" && FORMATS="fp8 ct-int4-asym"
for a in qwen3_moe qwen3_next qwen3_5_moe deepseek_v3; do
    for f in $FORMATS; do
        "$BIN" synth "$T/s-$a-$f" --arch "$a" --preset tiny --format "$f" --mtp --quiet
        "$BIN" convert "$T/s-$a-$f" "$T/s-$a-$f.mlx" --to mlx --verify --keep-mtp --quiet
        "$BIN" convert "$T/s-$a-$f" "$T/s-$a-$f.hf" --to hf --verify --quiet
    done
    "$BIN" synth "$T/f-$a" --arch "$a" --preset tiny --format fp8 --layout fused --quiet
    "$BIN" convert "$T/f-$a" "$T/f-$a.mlx" --to mlx --verify --quiet
done
echo "ok: every arch x format (+ fused) converts to MLX and HF with --verify"

# Regression: tensor lists longer than the first allocation (companions of a
# module were fixed up through a pointer that the list's growth had moved).
"$BIN" synth "$T/many" --arch qwen3_moe --preset tiny --experts 128 --vocab 64 --format ct-int4-asym --quiet
"$BIN" convert "$T/many" "$T/many.mlx" --to mlx --verify --quiet
[ "$("$BIN" hash "$T/many" | grep -c weight_shape)" -eq 1152 ] || fail "many: tensor count"
echo "ok: 4,600-tensor INT4 checkpoint"

set +e
"$BIN" synth "$T/x" --arch llama --preset tiny --format bf16 2>/dev/null; r1=$?
"$BIN" synth "$T/x" --arch qwen3_moe --preset 397b-a17b --format bf16 2>/dev/null; r2=$?
"$BIN" synth "$T/x" --arch qwen3_moe --preset tiny --format int3 2>/dev/null; r3=$?
"$BIN" synth "$T/a" --arch qwen3_moe --preset tiny --format bf16 2>/dev/null; r4=$?
set -e
[ "$r1$r2$r3$r4" = 2222 ] || fail "argument errors: exits $r1 $r2 $r3 $r4, expected 2"
echo "synth_cli: all passed"
