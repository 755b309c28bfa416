#!/usr/bin/env bash
# `moekit eval` on the trained fixture: devtext perplexity by the README's
# method (78 windows of 256, 19,890 tokens scored) within 0.5% of
# transformers' 20.97; against itself as --ref: KL 0 and full agreement.
set -euo pipefail
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-engeval-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
TINY=$TINYM/bf16
TXT=$TINYM/devtext.txt

if [ "${MK_TEST_SMALL:-0}" = 1 ]; then
    # sanitizer build: the same paths on 4 windows; the quality bar is the main build's
    "$BIN" eval "$TINY" --text "$TXT" --tokens 1024 --json --threads 2 > "$T/ppl.json"
    cat "$T/ppl.json"
    grep -q '"windows":4' "$T/ppl.json" || fail "expected 4 windows"
    grep -q '"tokens_scored":1020' "$T/ppl.json" || fail "expected 1020 tokens scored"
    ppl=$(sed 's/.*"ppl":\([0-9.eE+-]*\).*/\1/' "$T/ppl.json")
    awk -v p="$ppl" 'BEGIN { exit !(p > 1 && p < 4096) }' || fail "perplexity $ppl out of range"
else
    "$BIN" eval "$TINY" --text "$TXT" --json --threads 2 > "$T/ppl.json"
    cat "$T/ppl.json"
    grep -q '"windows":78' "$T/ppl.json" || fail "expected 78 windows"
    grep -q '"tokens_scored":19890' "$T/ppl.json" || fail "expected 19890 tokens scored"
    ppl=$(sed 's/.*"ppl":\([0-9.eE+-]*\).*/\1/' "$T/ppl.json")
    awk -v p="$ppl" 'BEGIN { r = p / 20.9666778989142; exit !(r > 0.995 && r < 1.005) }' ||
        fail "perplexity $ppl not within 0.5% of 20.967"
fi

"$BIN" eval "$TINY" --text "$TXT" --tokens $([ "${MK_TEST_SMALL:-0}" = 1 ] && echo 512 || echo 1024) \
    --ref "$TINY" --json --threads 2 > "$T/kl.json"
grep -q '"kl_mean":0.0,' "$T/kl.json" || fail "self-KL not 0: $(cat "$T/kl.json")"
grep -q '"top1_agreement":1.0' "$T/kl.json" || fail "self-agreement not 1: $(cat "$T/kl.json")"
echo "engine_eval: ok (ppl $ppl)"
