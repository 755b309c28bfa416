#!/usr/bin/env bash
# --pin-profile (issue 11, item 4): the most used experts of a `moekit
# profile` are read at startup and kept; the numbers do not change (same
# perplexity as resident), the hit rate rises over the same run without
# pins, and neither beats Belady's oracle reported beside it. A profile of
# another model is refused (exit 2).
set -euo pipefail
BIN=${MK_BIN:?}
. "$(dirname "$0")/fixtures.bash"
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-pin-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
M=$TINYM/bf16
head -c 40000 "$TINYM/devtext.txt" > "$T/cal.txt"
tail -c 60000 "$TINYM/devtext.txt" > "$T/held.txt"   # held-out: not the calibration text
"$BIN" profile "$M" --text "$T/cal.txt" --out "$T/p.json" --tokens $([ "${MK_TEST_SMALL:-0}" = 1 ] && echo 512 || echo 2048) > /dev/null 2>&1
# the sanitizer build (MK_TEST_SMALL=1): the same commands on fewer tokens
NT=2000
[ "${MK_TEST_SMALL:-0}" = 1 ] && NT=768
EV=(eval "$M" --text "$T/held.txt" --tokens $NT --window 256)
"$BIN" "${EV[@]}" > "$T/res.txt"
"$BIN" "${EV[@]}" --stream-experts --memory-budget 112M --stats > "$T/nopin.txt" 2> "$T/nopin.err"
"$BIN" "${EV[@]}" --stream-experts --memory-budget 112M --stats --pin-profile "$T/p.json" > "$T/pin.txt" 2> "$T/pin.err"
cmp "$T/res.txt" "$T/nopin.txt" || fail "streamed perplexity differs from resident"
cmp "$T/res.txt" "$T/pin.txt" || fail "pinned perplexity differs from resident"
grep -Eq "[1-9][0-9]* pinned" "$T/pin.err" || fail "nothing pinned: $(cat "$T/pin.err")"
h0=$(grep -Eo 'hit rate [0-9.]+' "$T/nopin.err" | awk '{print $3}')
h1=$(grep -Eo 'hit rate [0-9.]+' "$T/pin.err" | awk '{print $3}')
o1=$(grep -Eo 'Belady oracle [0-9.]+' "$T/pin.err" | awk '{print $3}')
echo "hit rate without pins $h0, with pins $h1 (oracle $o1)"
awk -v a="$h0" -v b="$h1" -v o="$o1" 'BEGIN { exit !(b > a && b <= o + 1e-9) }' ||
    fail "pins did not raise the hit rate ($h0 -> $h1, oracle $o1)"
# a profile of another model
"$BIN" synth "$T/other" --arch qwen3_5_moe --preset tiny --format bf16 --quiet
set +e
"$BIN" "${EV[@]}" --stream-experts --memory-budget 112M --pin-profile "$T/p.json" > /dev/null 2> "$T/bad.err" <<< "" ; rc0=$?
"$BIN" eval "$T/other" --text "$T/held.txt" --tokens 600 --window 128 --stream-experts --memory-budget 112M \
    --pin-profile "$T/p.json" > /dev/null 2> "$T/bad.err"
rc=$?
set -e
[ "$rc0" = 0 ] || fail "the right profile was refused: $(cat "$T/bad.err")"
[ "$rc" = 2 ] || fail "a profile of another model exited $rc, not 2: $(cat "$T/bad.err")"
grep -q "pin-profile" "$T/bad.err" || fail "the refusal does not name --pin-profile: $(cat "$T/bad.err")"
echo "stream_pin: all passed"
