#!/usr/bin/env bash
# ctest-labels: slow
# Bounded memory when experts stream (issue 11): a synthetic checkpoint whose
# routed experts are more than 4x --memory-budget runs `moekit logits` and
# `moekit profile` with peak RSS (VmHWM, from --stats) within the budget,
# which already counts the non-expert weights, the context and the
# documented 96 MiB overhead, with the expert cache filled before the first
# token (--cache-fill, on by default: every slot is touched from the start,
# and the fill reads nothing beyond the cache) and without the fill; the
# logits and the profile equal the resident
# runs' byte for byte (the resident runs are allowed the memory they need;
# the demo model's tokenizer reads the calibration text). A budget below the least one is refused with exit 2
# naming that least budget. Skipped under AddressSanitizer, whose shadow
# memory is not ours to bound.
set -euo pipefail
BIN=${MK_BIN:?}
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-srss-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
BUDGET=$((300 * 1024 * 1024))

"$BIN" synth "$T/m" --arch qwen3_moe --preset 30b-a3b --layers 2 --experts 72 --vocab 4096 --format bf16 --quiet
. "$(dirname "$0")/fixtures.bash"
cp "$TINYM/bf16/tokenizer.json" "$TINYM/bf16/tokenizer_config.json" "$T/m/"
head -c 6000 "$TINYM/devtext.txt" > "$T/cal.txt"
IDS=$(seq -s, 1 37 1400)
"$BIN" logits "$T/m" --ids "$IDS" --out "$T/res.f32" --stats 2> "$T/res.err"
if [ "$(awk '$1 == "sanitizer" { print $2 }' "$T/res.err")" = 1 ]; then
    echo "skip: sanitizer build"
    exit 0
fi
"$BIN" logits "$T/m" --ids "$IDS" --out "$T/str.f32" --memory-budget $BUDGET --stats 2> "$T/str.err"
cat "$T/str.err"
grep -q '^experts_streamed 1$' "$T/str.err" || fail "experts were not streamed"
grep -Eq "expert cache filled before the first token: [1-9][0-9]* experts" "$T/str.err" ||
    fail "the expert cache was not filled (the bound must hold with the fill)"
peak=$(awk '$1 == "peak_rss_bytes" { print $2 }' "$T/str.err")
expert_bytes=$(( $(du -b "$T/m/model.safetensors" | cut -f1) ))
[ "$expert_bytes" -ge $((4 * BUDGET)) ] || fail "checkpoint is $expert_bytes bytes, not 4x the budget"
echo "checkpoint $expert_bytes B, --memory-budget $BUDGET B, peak RSS $peak B"
[ "$peak" -le "$BUDGET" ] || fail "peak RSS $peak > --memory-budget $BUDGET"
cmp "$T/res.f32" "$T/str.f32" || fail "streamed logits differ from the resident run's"
"$BIN" logits "$T/m" --ids "$IDS" --out "$T/nofill.f32" --memory-budget $BUDGET --cache-fill off --stats \
    2> "$T/nofill.err"
grep -q "filled" "$T/nofill.err" && fail "--cache-fill off filled the cache"
peak=$(awk '$1 == "peak_rss_bytes" { print $2 }' "$T/nofill.err")
echo "without the fill: peak RSS $peak B"
[ "$peak" -le "$BUDGET" ] || fail "peak RSS $peak > --memory-budget $BUDGET (--cache-fill off)"
cmp "$T/res.f32" "$T/nofill.f32" || fail "streamed logits without the fill differ from the resident run's"

# profile: routing windows and the error pass over every expert, same bound
PROF=(profile "$T/m" --text "$T/cal.txt" --tokens 256 --window 64 --bits 4 --quiet --stats)
"$BIN" "${PROF[@]}" --out "$T/res.json" > /dev/null 2> "$T/pres.err"
"$BIN" "${PROF[@]}" --out "$T/str.json" --memory-budget $BUDGET > /dev/null 2> "$T/pstr.err"
cat "$T/pstr.err"
grep -q '^experts_streamed 1$' "$T/pstr.err" || fail "profile: experts were not streamed"
grep -Eq "expert cache filled before the first token: [1-9][0-9]* experts" "$T/pstr.err" ||
    fail "profile: the expert cache was not filled"
peak=$(awk '$1 == "peak_rss_bytes" { print $2 }' "$T/pstr.err")
echo "profile: --memory-budget $BUDGET B, peak RSS $peak B"
[ "$peak" -le "$BUDGET" ] || fail "profile: peak RSS $peak > --memory-budget $BUDGET"
cmp "$T/res.json" "$T/str.json" || fail "the streamed profile differs from the resident one"

# too small: refused before any work, naming the least budget
set +e
"$BIN" logits "$T/m" --ids 1,2,3 --out "$T/x.f32" --memory-budget 120M 2> "$T/small.err"
rc=$?
set -e
[ "$rc" = 2 ] || fail "a budget below the least one exited $rc, not 2"
grep -q "is too small" "$T/small.err" && grep -q "need at least [0-9]* bytes" "$T/small.err" ||
    fail "no least budget named: $(cat "$T/small.err")"
[ ! -e "$T/x.f32" ] || fail "an output was written after the refusal"
echo "stream_rss: all passed"
