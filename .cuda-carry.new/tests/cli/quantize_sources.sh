#!/usr/bin/env bash
# quantize over every kind of source and layout: an MLX-quantized source is
# dequantized and quantized anew exactly as its HF dequantization would be
# (all tensors identical); FP8, compressed-tensors INT4 and DeepSeek inputs
# quantize cleanly; the vision-language fixture per-expert and fused give
# identical outputs; the mixed_3_6 recipe writes mlx-lm's per-layer entries
# with routers still 8-bit; experts whose widths differ within a layer are
# written as per-expert modules the engine runs; a run killed after its
# first shard resumes to the same bytes (parts whose leader is in a resumed
# shard are computed again).
set -euo pipefail
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
need_fixtures
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-qsrc-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
Q() { "$BIN" quantize "$@" --quiet --threads 2 > /dev/null; }
problems0() { "$BIN" inspect "$1" | grep -q "problems        0" || { "$BIN" inspect "$1"; fail "inspect $1"; }; }

# MLX 4-bit -> 8-bit equals HF-dequantized 4-bit -> 8-bit
Q "$FX/qwen35moe-a/bf16" "$T/q4"
Q "$T/q4" "$T/q8a" --bits 8
"$BIN" convert "$T/q4" "$T/h" --to hf --quiet
Q "$T/h" "$T/q8b" --bits 8
"$BIN" hash "$T/q8a" > "$T/ha"
"$BIN" hash "$T/q8b" > "$T/hb"
cmp -s "$T/ha" "$T/hb" || { diff "$T/ha" "$T/hb" | head; fail "requantized MLX differs from requantized HF"; }
echo "ok: MLX 4-bit requantized to 8-bit = its HF dequantization requantized ($(wc -l < "$T/ha") tensors)"

# other sources
"$BIN" synth "$T/ct" --arch qwen3_moe --preset tiny --format ct-int4 --quiet
for s in "$FX/deepseekv3-a/fp8" "$FX/qwen3moe-odd/fp8" "$T/ct"; do
    rm -rf "$T/o" "$T/r.json" # an existing --report is refused without --force
    Q "$s" "$T/o" --report "$T/r.json"
    problems0 "$T/o"
done
Q "$FX/deepseekv3-a/fp8" "$T/ds" --report "$T/ds.json"
grep -q '"note": "float: deepseek_v3' "$T/ds.json" || fail "deepseek_v3 router not kept in float"
Q "$FX/qwen35moe-vl/bf16" "$T/vl1"
Q "$FX/qwen35moe-vl/bf16-fused" "$T/vl2"
"$BIN" hash "$T/vl1" > "$T/h1"
"$BIN" hash "$T/vl2" > "$T/h2"
cmp -s "$T/h1" "$T/h2" || fail "VL per-expert and fused quantize differently"
echo "ok: FP8, INT4, DeepSeek, VL per-expert = fused"

# recipe: 4 layers -> high bits (6) for v_proj/down_proj in layers 2 and 3, lm_head; low (3) elsewhere
Q "$FX/qwen3next-a/bf16" "$T/rc" --recipe mixed_3_6
node -e '
const q = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).quantization;
const want = {"model.layers.3.self_attn.v_proj": 6, "model.layers.2.mlp.switch_mlp.down_proj": 6,
  "model.layers.3.mlp.shared_expert.down_proj": 6, "lm_head": 6, "model.layers.0.mlp.gate": 8,
  "model.layers.1.mlp.shared_expert_gate": 8};
if (q.bits !== 3 || q.group_size !== 64) throw new Error("defaults " + JSON.stringify(q));
for (const [k, b] of Object.entries(want)) if (!q[k] || q[k].bits !== b) throw new Error(k + ": " + JSON.stringify(q[k]));
for (const k of ["model.layers.0.mlp.switch_mlp.down_proj", "model.layers.1.mlp.switch_mlp.down_proj",
                 "model.layers.0.mlp.switch_mlp.up_proj"]) if (q[k]) throw new Error(k + " should take the default");
' "$T/rc/config.json" || fail "recipe entries"
problems0 "$T/rc"
echo "ok: mixed_3_6 recipe entries, routers 8-bit"

# per-expert widths within a layer: that layer as per-expert modules, run by the engine
TINY=$FX/tiny-qwen35moe/bf16
Q "$TINY" "$T/pe" --override 'layers\.1\.mlp\.experts\.3\.=8'
"$BIN" hash "$T/pe" > "$T/hp"
grep -q '^language_model.model.layers.1.mlp.experts.3.up_proj.weight U32 \[128,64\] ' "$T/hp" || fail "expert 3 not 8-bit"
grep -q '^language_model.model.layers.1.mlp.experts.4.up_proj.weight U32 \[128,32\] ' "$T/hp" || fail "expert 4 not 4-bit"
grep -q '^language_model.model.layers.0.mlp.switch_mlp.up_proj.weight U32 \[16,128,32\] ' "$T/hp" ||
    fail "uniform layer 0 not stacked"
! grep -q 'layers.1.mlp.switch_mlp' "$T/hp" || fail "layer 1 still stacked"
problems0 "$T/pe"
"$BIN" eval "$T/pe" --text "$FX/tiny-qwen35moe/devtext.txt" --tokens 512 --threads 2 > /dev/null || fail "engine run"
echo "ok: mixed widths in a layer -> per-expert modules, loaded and run"

# resume: killed after the first shard's journal entry; the rerun gives the same bytes
Q "$TINY" "$T/full" --bits 8 --shard-size 2M
set +e
MK_CONVERT_CRASH=journal:1 sh -c '"$@"; exit $?' sh "$BIN" quantize "$TINY" "$T/res" --bits 8 --shard-size 2M \
    --quiet --threads 2 > /dev/null 2>&1
rc=$?
set -e
[ $rc -ne 0 ] && [ -d "$T/res.partial" ] || fail "crash hook did not stop the run (exit $rc)"
Q "$TINY" "$T/res" --bits 8 --shard-size 2M
"$BIN" hash "$T/full" > "$T/hf"
"$BIN" hash "$T/res" > "$T/hr"
cmp -s "$T/hf" "$T/hr" || fail "resumed output differs"
[ "$(ls "$T/full"/*.safetensors | wc -l)" -ge 3 ] || fail "expected several shards"
cmp -s "$T/full/config.json" "$T/res/config.json" || fail "configs differ"
echo "ok: resumed after a crash = uninterrupted ($(ls "$T/full"/*.safetensors | wc -l) shards)"
echo "quantize_sources: all passed"
