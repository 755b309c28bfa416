#!/usr/bin/env bash
# Calibrated quantization end to end on the trained tiny-qwen35moe:
# `moekit profile --hessian H` writes per-module input second moments (one
# F32 [cols, cols] tensor per module path, routed experts each their own);
# `moekit quantize --method gptq-mse --hessian H` writes the MLX format
# unchanged -- the same tensor names, dtypes and shapes and the same config
# quantization entries as plain rtn, different bytes -- which moekit loads
# and runs, with a lower mean KL against bf16 than rtn on text the
# calibration never saw (calibration: the second half of devtext.txt; eval:
# its first 1024 tokens). Bad uses exit 2 naming the flag or file.
# ctest-labels: slow
set -euo pipefail
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-gptq-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
command -v node > /dev/null || fail "node is needed to read the outputs (scripts/install-deps.sh)"
TINY=$TINYM/bf16
TXT=$TINYM/devtext.txt
SMALL=${MK_TEST_SMALL:-0}
tail -c +$(($(wc -c < "$TXT") / 2)) "$TXT" > "$T/calib.txt"

"$BIN" profile "$TINY" --text "$T/calib.txt" --tokens $([ "$SMALL" = 1 ] && echo 512 || echo 4096) --threads 2 \
    --quiet --out "$T/p.json" --hessian "$T/h.safetensors" > "$T/plog"
grep -q "^wrote $T/h.safetensors: input second moments of" "$T/plog" || fail "profile printed no --hessian line"
# every tensor of H: F32 [cols, cols] of a profiled module, per expert for routed experts
node -e '
const fs = require("fs");
const p = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
const b = fs.readFileSync(process.argv[2]), n = Number(b.readBigUInt64LE(0));
const h = JSON.parse(b.subarray(8, 8 + n).toString("utf8"));
const cols = new Map(p.tensors.map((t) => [t.name, t.shape[1]]));
let experts = 0, k = 0;
for (const [name, t] of Object.entries(h)) {
  if (name === "__metadata__") continue;
  k++;
  if (!cols.has(name)) throw new Error("H tensor " + name + " is no profiled module");
  const c = cols.get(name);
  if (t.dtype !== "F32" || t.shape[0] !== c || t.shape[1] !== c) throw new Error(name + ": " + JSON.stringify(t));
  if (!(Number(h.__metadata__["tokens." + name]) > 0)) throw new Error(name + ": no token count");
  if (/\.experts\.\d+\./.test(name)) experts++;
  // symmetric with a non-negative diagonal (row 0 against column 0)
  const off = 8 + n + t.data_offsets[0], f = (i, j) => b.readFloatLE(off + 4 * (i * c + j));
  for (let j = 0; j < c; j += 17) if (f(0, j) !== f(j, 0) || f(j, j) < 0) throw new Error(name + " not symmetric at " + j);
}
if (experts < 150 || k < 200) throw new Error(`only ${k} tensors, ${experts} experts`);
if (!h["language_model.lm_head"] || !h["language_model.model.layers.3.self_attn.q_proj"]) throw new Error("lm_head or q_proj missing");
console.log(`ok: H holds ${k} modules (${experts} routed experts)`);
' "$T/p.json" "$T/h.safetensors"

"$BIN" quantize "$TINY" "$T/rtn" --bits 4 --threads 2 --quiet > /dev/null
"$BIN" quantize "$TINY" "$T/g" --bits 4 --threads 2 --quiet --method gptq-mse --hessian "$T/h.safetensors" > "$T/qlog"
grep -q "^calibrated: [1-9][0-9]* modules/experts with input statistics" "$T/qlog" || fail "no calibrated count"
# same format: names, dtypes, shapes, config quantization entries; different bytes
"$BIN" hash "$T/rtn" | awk '{print $1, $2, $3}' > "$T/s1"
"$BIN" hash "$T/g" | awk '{print $1, $2, $3}' > "$T/s2"
cmp -s "$T/s1" "$T/s2" || { diff "$T/s1" "$T/s2" | head; fail "gptq-mse output's tensors differ in name, dtype or shape"; }
"$BIN" hash "$T/rtn" > "$T/h1"
"$BIN" hash "$T/g" > "$T/h2"
[ "$(comm -12 "$T/h1" "$T/h2" | grep -c '\.weight U32')" = 0 ] || fail "some quantized weight has rtn's bytes"
node -e '
const fs = require("fs"), r = (d) => JSON.parse(fs.readFileSync(d + "/config.json", "utf8"));
const a = r(process.argv[1]), b = r(process.argv[2]);
for (const k of ["quantization", "quantization_config"])
  if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) throw new Error(k + " differs");
if (b.quantization.bits !== 4 || b.quantization.group_size !== 64 || b.quantization.mode !== "affine") throw new Error("defaults");
' "$T/rtn" "$T/g" || fail "config quantization blocks differ"
"$BIN" inspect "$T/g" | grep -q "problems        0" || fail "inspect finds problems"
echo "ok: gptq-mse keeps the MLX format (names, dtypes, shapes, config), different codes"

kl_of() {
    "$BIN" eval "$1" --ref "$TINY" --text "$TXT" --tokens $([ "$SMALL" = 1 ] && echo 256 || echo 1024) --threads 2 --json |
        sed 's/.*"kl_mean":\([0-9.eE+-]*\).*/\1/'
}
kr=$(kl_of "$T/rtn")
kg=$(kl_of "$T/g")
echo "mean KL vs bf16: rtn $kr, gptq-mse $kg"
awk -v g="$kg" 'BEGIN { exit !(g >= 0 && g < 10) }' || fail "KL not finite: $kg"
[ "$SMALL" = 1 ] || awk -v g="$kg" -v r="$kr" 'BEGIN { exit !(g < r) }' || fail "gptq-mse KL $kg not below rtn $kr"

# bad uses: exit 2, naming the flag or the file
set +e
"$BIN" quantize "$TINY" "$T/x1" --method gptq > "$T/e1" 2>&1; rc=$?
[ $rc = 2 ] && grep -q -- "--method gptq needs --hessian" "$T/e1" || fail "gptq without --hessian: rc $rc: $(cat "$T/e1")"
"$BIN" quantize "$TINY" "$T/x2" --method awq --hessian "$T/h.safetensors" > "$T/e2" 2>&1; rc=$?
[ $rc = 2 ] && grep -q "expected rtn, mse, gptq" "$T/e2" || fail "unknown method: rc $rc: $(cat "$T/e2")"
"$BIN" quantize "$TINY" "$T/x3" --method mse --hessian "$T/nope.safetensors" > "$T/e3" 2>&1; rc=$?
[ $rc = 2 ] && grep -q "nope.safetensors" "$T/e3" || fail "missing --hessian file: rc $rc: $(cat "$T/e3")"
"$BIN" quantize "$TINY" "$T/x4" --hessian "$T/h.safetensors" > "$T/e4" 2>&1; rc=$?
[ $rc = 2 ] || fail "--hessian with rtn accepted: rc $rc"
set -e
for d in x1 x2 x3 x4; do [ ! -e "$T/$d" ] || fail "a refused run left $d"; done
echo "quantize_gptq: ok"
