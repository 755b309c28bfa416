#!/usr/bin/env bash
# Quantization-aware checkpoints pass through `moekit quantize` byte for
# byte, never requantized: a compressed-tensors INT4 checkpoint (Kimi K2's
# format; here synthesized, group 32, symmetric) quantized to 4-bit g64
# keeps every INT4 module exactly as `convert --to mlx` repacks it (the
# same weight, scales and biases tensors, bit for bit), with config
# quantization entries giving their own group size 32, while its float
# modules are quantized at the asked width. Before this rule the INT4
# experts were dequantized and requantized at g64 (other shapes and bytes).
set -euo pipefail
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-qat-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
command -v node > /dev/null || fail "node is needed to read the outputs (scripts/install-deps.sh)"
"$BIN" synth "$T/ct" --arch qwen3_moe --preset tiny --format ct-int4 --quiet
"$BIN" convert "$T/ct" "$T/mlx" --to mlx --quiet
"$BIN" quantize "$T/ct" "$T/q" --bits 4 --group-size 64 --threads 2 --quiet > /dev/null
"$BIN" hash "$T/mlx" | sort > "$T/h1"
"$BIN" hash "$T/q" | sort > "$T/h2"
n_int4=$(grep -c 'switch_mlp\..*_proj\.\(weight\|scales\|biases\) ' "$T/h1")
[ "$n_int4" -ge 9 ] || fail "the synthesized checkpoint has only $n_int4 INT4 expert tensors"
same=$(comm -12 "$T/h1" "$T/h2" | grep -c 'switch_mlp\..*_proj\.\(weight\|scales\|biases\) ')
[ "$same" = "$n_int4" ] || { comm -3 "$T/h1" "$T/h2" | grep switch_mlp | head; fail "$same of $n_int4 INT4 tensors kept"; }
grep -q '^model.layers.0.self_attn.q_proj.weight U32 ' "$T/h2" || fail "float q_proj not quantized"
node -e '
const q = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).quantization;
const e = q["model.layers.0.mlp.switch_mlp.down_proj"];
if (!e || e.group_size !== 32 || e.bits !== 4) throw new Error("INT4 entry: " + JSON.stringify(e));
if (q.group_size !== 64 || q.bits !== 4) throw new Error("defaults " + JSON.stringify(q));
' "$T/q/config.json" || fail "config entries"
"$BIN" inspect "$T/q" | grep -q "problems        0" || fail "inspect finds problems"
echo "quantize_qat_passthrough: ok ($n_int4 INT4 tensors byte-identical to convert --to mlx)"
