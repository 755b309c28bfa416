#!/usr/bin/env bash
# convert from the command line: usage errors and bad input exit 2 with one
# line naming the cause and leave no DST; a full disk (file-size limit: the
# writer gets EFBIG, reported as no space) exits 2 with DST absent and a
# resumable DST.partial; the vision-language fixture converts per-expert and
# fused to MLX outputs whose `moekit hash` manifests are identical.
set -euo pipefail
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
need_fixtures
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-converr-XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash" # fail, expect

Q=$FX/qwen3next-a/bf16
expect 2 "required" "$BIN" convert "$Q" "$T/a"
expect 2 "expected hf, mlx or gguf" "$BIN" convert "$Q" "$T/a" --to onnx
expect 2 "expected bf16, f16 or f32" "$BIN" convert "$Q" "$T/a" --to hf --dtype f8
expect 2 "overflows float16" "$BIN" convert "$Q" "$T/a" --to hf --dtype f16
expect 2 "not a directory" "$BIN" convert "$T/none" "$T/a" --to hf
[ ! -e "$T/a" ] && [ ! -e "$T/a.partial" ] || fail "DST left behind"
mkdir "$T/exists"
expect 2 "already exists" "$BIN" convert "$Q" "$T/exists" --to mlx --quiet
cp -r "$Q" "$T/llama"
sed -i 's/"qwen3_next"/"llama"/' "$T/llama/config.json"
expect 2 "supported: qwen3_moe" "$BIN" convert "$T/llama" "$T/a" --to mlx
"$BIN" convert "$Q" "$T/f16" --to hf --dtype f16 --force-f16 --quiet
echo "ok: usage and bad-input errors"

# Disk full: a 1 MiB file-size limit; the shard write fails with EFBIG.
"$BIN" synth "$T/syn" --arch qwen3_moe --preset tiny --format fp8 --quiet
set +e
(ulimit -f 1024; "$BIN" convert "$T/syn" "$T/full" --to hf --quiet) 2> "$T/err"
rc=$?
set -e
[ $rc -eq 2 ] || { cat "$T/err"; fail "disk full: exit $rc, expected 2"; }
grep -q -i "too large\|no space\|EFBIG" "$T/err" || { cat "$T/err"; fail "disk full: cause not named"; }
[ ! -e "$T/full" ] || fail "disk full: DST exists"
"$BIN" convert "$T/syn" "$T/full" --to hf --quiet || fail "rerun after disk full"
echo "ok: disk full -> exit 2, no DST, rerun completes"

# qwen35moe-vl per-expert and fused convert to hash-identical MLX outputs.
"$BIN" convert "$FX/qwen35moe-vl/bf16" "$T/vl1" --to mlx --quiet
"$BIN" convert "$FX/qwen35moe-vl/bf16-fused" "$T/vl2" --to mlx --quiet
"$BIN" hash "$T/vl1" > "$T/h1"
"$BIN" hash "$T/vl2" > "$T/h2"
[ -s "$T/h1" ] && cmp -s "$T/h1" "$T/h2" || fail "per-expert and fused VL fixtures give different MLX hashes"
grep -q "^language_model.model.layers.0.mlp.switch_mlp.gate_proj.weight BF16 \[8,128,256\]" "$T/h1" ||
    fail "switch_mlp missing from the MLX output"
echo "ok: qwen35moe-vl bf16 and bf16-fused -> identical MLX manifests ($(wc -l < "$T/h1") tensors)"
echo "convert_errors: all passed"
