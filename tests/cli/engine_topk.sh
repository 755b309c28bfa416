#!/usr/bin/env bash
# --experts-per-token K (issue 11, item 7): an explicit opt-in that warns,
# computes exactly what the model would with num_experts_per_tok = K in its
# config (same logits, byte for byte), is refused when not fewer than the
# model's own, and whose cost `eval --ref` reports (KL > 0 against the model).
set -euo pipefail
BIN=${MK_BIN:?}
. "$(dirname "$0")/fixtures.bash"
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-topk-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
cp -r "$TINYM/bf16" "$T/k1"
grep -q '"num_experts_per_tok": 2' "$T/k1/config.json" || fail "the demo model no longer routes to 2 experts"
sed -i 's/"num_experts_per_tok": 2/"num_experts_per_tok": 1/' "$T/k1/config.json"
IDS=1,20,300,4000,5,60,700,80,9,100,11,12
"$BIN" logits "$TINYM/bf16" --ids $IDS --out "$T/opt.f32" --experts-per-token 1 2> "$T/opt.err"
grep -q "warning: --experts-per-token 1 routes each token to 1 of the model's 2 experts" "$T/opt.err" ||
    fail "no warning: $(cat "$T/opt.err")"
"$BIN" logits "$T/k1" --ids $IDS --out "$T/cfg.f32"
cmp "$T/opt.f32" "$T/cfg.f32" || fail "--experts-per-token 1 differs from the model configured with top-1"
"$BIN" logits "$TINYM/bf16" --ids $IDS --out "$T/full.f32"
! cmp -s "$T/opt.f32" "$T/full.f32" || fail "--experts-per-token 1 changed nothing"
set +e
"$BIN" logits "$TINYM/bf16" --ids $IDS --out "$T/x.f32" --experts-per-token 2 2> "$T/x.err"
rc=$?
set -e
[ "$rc" = 2 ] || fail "--experts-per-token equal to the model's exited $rc, not 2"
grep -q "give fewer" "$T/x.err" || fail "no reason given: $(cat "$T/x.err")"
# the cost, measured: KL(model || top-1) > 0
"$BIN" eval "$TINYM/bf16" --text "$TINYM/devtext.txt" --tokens 600 --window 128 --experts-per-token 1 \
    --ref "$TINYM/bf16" --json 2> /dev/null > "$T/eval.json"
grep -Eq '"kl_mean": *[0-9.eE+-]+' "$T/eval.json" || fail "eval --ref printed no KL: $(cat "$T/eval.json")"
kl=$(grep -Eo '"kl_mean": *[0-9.eE+-]+' "$T/eval.json" | grep -Eo '[0-9.eE+-]+$')
awk -v k="$kl" 'BEGIN { exit !(k > 0) }' || fail "KL of top-1 against the model is $kl, not > 0"
echo "engine_topk: all passed (KL mean $kl)"
