#!/usr/bin/env bash
# `moekit profile` end to end on the trained fixture (512 calibration
# tokens): the profile JSON is well formed, routing frequencies of every
# layer sum to top_k (2), errors fall with bits; `--from P --target-bpw X`
# writes overrides for every chosen module within the budget; bad input
# (missing text file, bad --bits list, a profile naming a tensor the model
# lacks, a budget below the smallest width, a malformed profile) exits 2
# with one line naming the cause.
set -euo pipefail
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-profcli-XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash" # fail, expect
TINY=$TINYM/bf16
TXT=$TINYM/devtext.txt
command -v node > /dev/null || fail "node is needed to check JSON (scripts/install-deps.sh)"

"$BIN" profile "$TINY" --text "$TXT" --tokens 512 --threads 2 --quiet --out "$T/p.json" > "$T/log"
cat "$T/log"
node -e '
const p = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const die = (m) => { console.error("FAIL: " + m); process.exit(1); };
if (p.format !== "moekit-profile" || p.calibration.tokens !== 512) die("header");
if (p.routing.length !== 4) die("expected 4 MoE layers");
for (const r of p.routing) {
  const s = r.freq.reduce((a, b) => a + b, 0);
  if (Math.abs(s - p.model.top_k) > 1e-9) die(`layer ${r.layer}: frequencies sum to ${s}`);
}
const kinds = {};
for (const t of p.tensors) {
  kinds[t.kind] = (kinds[t.kind] || 0) + 1;
  if (t.kind === "router") { if (t.fixed.bits !== 8) die(t.name + ": router not at 8 bits"); continue; }
  for (let k = 1; k < t.err.length; k++)
    if (!(t.err[k] < t.err[k - 1])) die(`${t.name}: error does not fall from ${p.quant.bits[k-1]} to ${p.quant.bits[k]} bits`);
  if (!t.name || !t.source) die("tensor without name/source");
}
if (kinds.expert !== 192 || kinds.linear !== 33 || kinds.router !== 8) die(JSON.stringify(kinds));
' "$T/p.json"

"$BIN" profile "$TINY" --from "$T/p.json" --target-bpw 4.25 --out "$T/a.json" > "$T/alog"
cat "$T/alog"
node -e '
const fs = require("fs");
const p = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
const a = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const die = (m) => { console.error("FAIL: " + m); process.exit(1); };
if (!(a.achieved_bpw <= a.target_bpw)) die("over budget");
for (const t of p.tensors) {
  if (t.kind === "float") continue;
  const o = a.overrides[t.name];
  if (!o || o.group_size !== 64 || !p.quant.bits.includes(o.bits)) die("no/bad override for " + t.name);
}
' "$T/p.json" "$T/a.json"

# bad input: exit 2, one line naming the cause
expect 2 "nonexistent.txt" "$BIN" profile "$TINY" --text "$T/nonexistent.txt" --out "$T/x.json"
expect 2 "7 is not an affine width" "$BIN" profile "$TINY" --text "$TXT" --bits 4,7 --out "$T/x.json"
expect 2 "widths separated by commas" "$BIN" profile "$TINY" --text "$TXT" --bits 4,x --out "$T/x.json"
expect 2 "given twice" "$BIN" profile "$TINY" --text "$TXT" --bits 4,4 --out "$T/x.json"
expect 2 "--out P.json is required" "$BIN" profile "$TINY" --text "$TXT"
expect 2 "fewer than one window" "$BIN" profile "$TINY" --text "$TXT" --tokens 100 --out "$T/x.json"
expect 2 "group-size" "$BIN" profile "$TINY" --text "$TXT" --group-size 48 --out "$T/x.json"
sed 's/layers\.1\.mlp\.experts\.3\.up_proj"/layers.1.mlp.experts.99.up_proj"/' "$T/p.json" > "$T/bad.json"
expect 2 "experts.99.up_proj' (source" "$BIN" profile "$TINY" --from "$T/bad.json" --target-bpw 4
expect 2 "below the least" "$BIN" profile "$TINY" --from "$T/p.json" --target-bpw 1.5
"$BIN" profile "$TINY" --text "$TXT" --tokens 256 --bits 8,2,4 --quiet --out "$T/p3.json" > /dev/null
grep -q '"bits":\[2,4,8\]' "$T/p3.json" || fail "--bits 8,2,4 not recorded as [2,4,8]"
expect 2 "5 bits was not profiled" "$BIN" profile "$TINY" --from "$T/p3.json" --target-bpw 5 --bits 4,5
echo '{"format": "moekit-profile", "version": 1, "tensors": 3' > "$T/junk.json"
expect 2 "junk.json: line" "$BIN" profile "$TINY" --from "$T/junk.json" --target-bpw 4
expect 2 "needs --target-bpw" "$BIN" profile "$TINY" --from "$T/p.json"
[ ! -e "$T/x.json" ] || fail "a failed profile left its output"
# to a file: grep -q on a pipe exits at its first match and the rest of a
# help longer than one stdio buffer then dies of SIGPIPE under pipefail
"$BIN" profile --help > "$T/help.txt"
grep -q -- "--target-bpw" "$T/help.txt" || fail "--help lacks --target-bpw"
grep -q -- "--memory-budget" "$T/help.txt" || fail "--help lacks --memory-budget"
echo "profile_cli: ok"
