#!/usr/bin/env bash
# Issue 5 acceptance: on the trained tiny-qwen35moe, a `--target-bpw`
# allocation from a profile beats uniform bits at the same or lower bits per
# weight in mean KL divergence against the bf16 model, through the real
# commands: `moekit profile`, `moekit quantize --bits 4` (uniform, routers
# 8-bit), `moekit quantize --target-bpw X --profile P` with X = the uniform
# output's measured bpw, then `moekit eval --ref` on both.
#
# Bits per weight are measured from the written checkpoints themselves, not
# from either command's report: every tensor of a profiled module (weight,
# scales, biases; per-expert modules or their switch_mlp stack) counts its
# bytes, over the params of those modules; the script fails if some profiled
# module is missing from an output (a naming mismatch between profile and
# quantize). The same check in memory, without the quantize command, is
# tests/unit/test_profile_kl.c.
set -euo pipefail
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-profkl-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
command -v node > /dev/null || fail "node is needed to read the outputs (scripts/install-deps.sh)"
TINY=$TINYM/bf16
TXT=$TINYM/devtext.txt

# bpw of checkpoint $2 over the modules of profile $1
bpw() {
    node -e '
const fs = require("fs"), path = require("path");
const p = JSON.parse(fs.readFileSync(process.argv[1], "utf8")), dir = process.argv[2];
const params = new Map(), stacks = new Map();
for (const t of p.tensors) {
  params.set(t.name, t.params);
  if (t.stack) stacks.set(t.stack, (stacks.get(t.stack) || 0) + t.params);
}
let bytes = 0, seen = new Set(), counted = 0;
for (const f of fs.readdirSync(dir).filter((f) => f.endsWith(".safetensors"))) {
  const fd = fs.openSync(path.join(dir, f), "r"), b8 = Buffer.alloc(8);
  fs.readSync(fd, b8, 0, 8, 0);
  const n = Number(b8.readBigUInt64LE(0)), hb = Buffer.alloc(n);
  fs.readSync(fd, hb, 0, n, 8);
  fs.closeSync(fd);
  for (const [name, t] of Object.entries(JSON.parse(hb.toString("utf8")))) {
    if (name === "__metadata__") continue;
    const mod = name.replace(/\.(weight|scales|biases)$/, "");
    if (!params.has(mod) && !stacks.has(mod)) continue;
    bytes += t.data_offsets[1] - t.data_offsets[0];
    if (!seen.has(mod)) { seen.add(mod); counted += params.has(mod) ? params.get(mod) : stacks.get(mod); }
  }
}
const total = p.tensors.reduce((a, t) => a + t.params, 0);
if (counted !== total) { console.error(`FAIL: ${dir}: profiled modules cover ${counted} of ${total} params (names differ?)`); process.exit(1); }
console.log((8 * bytes / total).toFixed(6));
' "$1" "$2"
}

# sanitizer build (MK_TEST_SMALL=1): the same commands on fewer tokens, and
# the KL comparison (a quality bar, the main build's) is only printed
SMALL=${MK_TEST_SMALL:-0}
kl_of() { # model -> mean KL against the bf16 model
    "$BIN" eval "$1" --ref "$TINY" --text "$TXT" --tokens $([ "$SMALL" = 1 ] && echo 256 || echo 2048) --threads 2 --json |
        sed 's/.*"kl_mean":\([0-9.eE+-]*\).*/\1/'
}

"$BIN" profile "$TINY" --text "$TXT" --tokens $([ "$SMALL" = 1 ] && echo 256 || echo 512) --threads 2 --quiet --out "$T/p.json" > /dev/null
"$BIN" quantize "$TINY" "$T/u4" --bits 4 --group-size 64 --threads 2 --quiet > /dev/null
bpw_u=$(bpw "$T/p.json" "$T/u4")
target=$(awk -v b="$bpw_u" 'BEGIN { printf "%.4f", int(b * 10000) / 10000 }')
"$BIN" quantize "$TINY" "$T/alloc" --target-bpw "$target" --profile "$T/p.json" --threads 2 --quiet > "$T/qlog"
grep -q "^achieved bpw" "$T/qlog" || fail "quantize --target-bpw printed no achieved bpw"
bpw_a=$(bpw "$T/p.json" "$T/alloc")
kl_u=$(kl_of "$T/u4")
kl_a=$(kl_of "$T/alloc")
echo "uniform 4-bit: $bpw_u bpw, mean KL $kl_u; allocation (target $target): $bpw_a bpw, mean KL $kl_a"
awk -v a="$bpw_a" -v u="$bpw_u" 'BEGIN { exit !(a <= u) }' || fail "allocation $bpw_a bpw > uniform $bpw_u"
[ "$SMALL" = 1 ] || awk -v a="$kl_a" -v u="$kl_u" 'BEGIN { exit !(a < u) }' ||
    fail "allocation KL $kl_a not below uniform $kl_u"
awk -v a="$kl_a" -v u="$kl_u" 'BEGIN { exit !(a >= 0 && a < 10 && u >= 0 && u < 10) }' ||
    fail "KL not finite: allocation $kl_a, uniform $kl_u"
echo "profile_alloc_kl: ok"
