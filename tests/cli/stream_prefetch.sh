#!/usr/bin/env bash
# --prefetch (issue 11, item 4): while a layer computes, the engine hands the
# store its guess of the next layer's experts (that layer's router applied to
# this layer's input). The guess only moves reads earlier: greedy text and
# per-token ids are byte-identical to the resident run, --stats reports how
# many experts were guessed and how many of those the next layer used (the
# demo model, trained, routes predictably: most guesses are used), and a
# run without --prefetch guesses nothing.
set -euo pipefail
BIN=${MK_BIN:?}
. "$(dirname "$0")/fixtures.bash"
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-prefetch-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
M=$TINYM/bf16
RUN=(run "$M" --prompt "The little robot looked at the sky and" --max-tokens 48 --threads 2)
"$BIN" "${RUN[@]}" > "$T/res.txt" 2> /dev/null
"$BIN" "${RUN[@]}" --stream-experts --memory-budget 104M --stats > "$T/plain.txt" 2> "$T/plain.err"
"$BIN" "${RUN[@]}" --stream-experts --memory-budget 104M --stats --prefetch > "$T/pf.txt" 2> "$T/pf.err"
"$BIN" "${RUN[@]}" --stream-experts --memory-budget 104M --stats --prefetch --io pread --buffered \
    > "$T/pf2.txt" 2> "$T/pf2.err"
[ -s "$T/res.txt" ] || fail "no text from the resident run"
cmp "$T/res.txt" "$T/plain.txt" || fail "streamed text differs from resident"
cmp "$T/res.txt" "$T/pf.txt" || fail "prefetched text differs from resident"
cmp "$T/res.txt" "$T/pf2.txt" || fail "prefetched text (pread, buffered) differs from resident"
grep -q "^prefetch:" "$T/plain.err" && fail "a run without --prefetch reports guesses"
line=$(grep "^prefetch:" "$T/pf.err") || fail "no prefetch line in --stats: $(cat "$T/pf.err")"
echo "$line"
g=$(echo "$line" | awk '{print $2}')
u=$(echo "$line" | awk '{print $5}')
[ "$g" -gt 0 ] || fail "nothing guessed: $line"
awk -v g="$g" -v u="$u" 'BEGIN { exit !(u > 0 && u <= g && u >= g / 2) }' ||
    fail "the demo model's guesses were mostly wrong ($u of $g used)"
echo "stream_prefetch: all passed"
