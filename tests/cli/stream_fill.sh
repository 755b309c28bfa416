#!/usr/bin/env bash
# --cache-fill (issue 11): when experts stream, the expert cache's free slots
# are filled before the first token (default on): an even share of every
# MoE layer, or with --pin-profile the profile's hottest after the pinned.
# The numbers never change: logits, perplexity and generated text are
# byte-identical to the resident run's with the fill on (both policies) and
# off. The startup line says how many experts it read; --stats has a fill
# line whose hits on filled experts are > 0 on the trained demo model (it
# routes to low and high indices alike) and which --cache-fill off drops. A
# bad value is exit 2 naming the flag; every command that takes
# --memory-budget documents the flag in --help.
set -euo pipefail
BIN=${MK_BIN:?}
. "$(dirname "$0")/fixtures.bash"
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-fill-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
M=$TINYM/bf16
IDS=$(seq -s, 5 61 4000)
ST=(--stream-experts --memory-budget 112M --stats)

"$BIN" logits "$M" --ids "$IDS" --out "$T/res.f32" 2> /dev/null
"$BIN" logits "$M" --ids "$IDS" --out "$T/on.f32" "${ST[@]}" 2> "$T/on.err"
"$BIN" logits "$M" --ids "$IDS" --out "$T/lru.f32" "${ST[@]}" --expert-cache lru --cache-fill on 2> "$T/lru.err"
"$BIN" logits "$M" --ids "$IDS" --out "$T/off.f32" "${ST[@]}" --cache-fill off 2> "$T/off.err"
cmp "$T/res.f32" "$T/on.f32" || fail "logits with the fill differ from resident"
cmp "$T/res.f32" "$T/lru.f32" || fail "logits with the fill (LRU) differ from resident"
cmp "$T/res.f32" "$T/off.f32" || fail "logits without the fill differ from resident"
line=$(grep "expert cache filled before the first token" "$T/on.err") || fail "no fill line: $(cat "$T/on.err")"
echo "$line"
echo "$line" | grep -Eq ": [1-9][0-9]* experts \([1-9][0-9]* of each of [1-9][0-9]* MoE layers\)" ||
    fail "the fill line does not say what it read: $line"
n=$(echo "$line" | grep -Eo ': [0-9]+ experts' | grep -Eo '[0-9]+')
per=$(echo "$line" | grep -Eo '\([0-9]+ of each' | grep -Eo '[0-9]+')
nl=$(echo "$line" | grep -Eo 'of [0-9]+ MoE' | grep -Eo '[0-9]+')
[ "$n" = $((per * nl)) ] || fail "$n experts filled, not $per x $nl"
fl=$(grep "^fill:" "$T/on.err") || fail "no fill line in --stats: $(cat "$T/on.err")"
echo "$fl"
fn=$(echo "$fl" | awk '{print $2}')
fh=$(echo "$fl" | grep -Eo '[0-9]+ hits on filled' | awk '{print $1}')
fu=$(echo "$fl" | grep -Eo '\([0-9]+ of the' | grep -Eo '[0-9]+')
[ "$fn" = "$n" ] || fail "--stats says $fn experts filled, the startup line $n"
[ "$fu" -gt 0 ] && [ "$fh" -ge "$fu" ] && [ "$fu" -le "$fn" ] || fail "implausible fill counters: $fl"
grep -q "filled" "$T/off.err" && fail "--cache-fill off filled: $(cat "$T/off.err")"
grep -q "^fill:" "$T/off.err" && fail "--cache-fill off has a fill line in --stats"

# with a profile: pins, then the profile's next hottest; perplexity unchanged
head -c 40000 "$TINYM/devtext.txt" > "$T/cal.txt"
tail -c 20000 "$TINYM/devtext.txt" > "$T/held.txt"
"$BIN" profile "$M" --text "$T/cal.txt" --out "$T/p.json" --tokens 512 > /dev/null 2>&1
EV=(eval "$M" --text "$T/held.txt" --tokens 600 --window 128)
"$BIN" "${EV[@]}" > "$T/eres.txt" 2> /dev/null
"$BIN" "${EV[@]}" "${ST[@]}" --pin-profile "$T/p.json" > "$T/epin.txt" 2> "$T/epin.err"
cmp "$T/eres.txt" "$T/epin.txt" || fail "perplexity with pins and the fill differs from resident"
grep -Eq "[1-9][0-9]* pinned" "$T/epin.err" || fail "nothing pinned: $(cat "$T/epin.err")"
grep -Eq "filled before the first token: [1-9][0-9]* experts \(the profile's hottest after the pinned\)" \
    "$T/epin.err" || fail "no profile fill line: $(cat "$T/epin.err")"

# generated text
RUN=(run "$M" --prompt "The little robot looked at the sky and" --max-tokens 24 --threads 2)
"$BIN" "${RUN[@]}" > "$T/rres.txt" 2> /dev/null
"$BIN" "${RUN[@]}" --stream-experts --memory-budget 104M > "$T/rstr.txt" 2> "$T/rstr.err"
[ -s "$T/rres.txt" ] || fail "no text from the resident run"
cmp "$T/rres.txt" "$T/rstr.txt" || fail "streamed text with the fill differs from resident"
grep -q "filled before the first token" "$T/rstr.err" || fail "run did not fill: $(cat "$T/rstr.err")"

# a resident model has no cache to fill: the flag is accepted and does nothing
"$BIN" logits "$M" --ids 1,2,3 --out "$T/r3.f32" --cache-fill on 2> "$T/r3.err"
grep -q "filled" "$T/r3.err" && fail "a resident run filled: $(cat "$T/r3.err")"

set +e
"$BIN" logits "$M" --ids 1,2,3 --out "$T/bad.f32" "${ST[@]}" --cache-fill maybe 2> "$T/bad.err"
rc=$?
set -e
[ "$rc" = 2 ] || fail "--cache-fill maybe exited $rc, not 2"
grep -q -- "--cache-fill: expected on or off, got 'maybe'" "$T/bad.err" || fail "bad value: $(cat "$T/bad.err")"
[ ! -e "$T/bad.f32" ] || fail "an output was written after the refusal"
for cmd in run logits eval profile serve; do
    help=$("$BIN" "$cmd" --help 2>&1) || true
    grep -q -- "--cache-fill on|off" <<< "$help" || fail "$cmd --help does not document --cache-fill"
done
# Every slot a hit of the layer, more experts wanted than slots: a model of one MoE layer whose
# cache (fewer slots than experts) is filled with that layer's experts, or warmed by a first chunk,
# then a chunk that uses all 8. The hits are handed out and released first and the misses take
# their slots; this stopped with "every slot is in use" before (the store counted the pinned hits
# as slots nothing would free).
"$BIN" synth "$T/one" --arch qwen3_moe --preset tiny --layers 1 --experts 8 --format bf16 --quiet --force
IDS1=$(seq -s, 3 7 220)
"$BIN" logits "$T/one" --ids "$IDS1" --out "$T/one_r.f32" --prefill-chunk 16 2> /dev/null
for a in "--cache-fill on" "--cache-fill off" "--cache-fill on --expert-cache lru"; do
    # shellcheck disable=SC2086
    "$BIN" logits "$T/one" --ids "$IDS1" --out "$T/one_s.f32" --force --prefill-chunk 16 --stream-experts \
        --memory-budget 98M $a 2> "$T/one.err" || fail "one-layer model, $a: $(tail -2 "$T/one.err")"
    grep -qE "\(([1-7]) of 8 experts" "$T/one.err" || fail "one-layer model, $a: not fewer slots than experts: $(cat "$T/one.err")"
    cmp -s "$T/one_r.f32" "$T/one_s.f32" || fail "one-layer model, $a: logits differ from resident"
done
echo "stream_fill: all passed"
