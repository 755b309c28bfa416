#!/usr/bin/env bash
# Issue 9, item 21: messages name the real cause.
#   - every numeric flag of every command, given junk, NaN, infinity, a
#     negative or a huge value, exits 2 before any work with a message that
#     names the flag, the allowed range and the value given;
#   - --temp nan is refused as --temp, before the model is opened (the model
#     path here does not exist), not blamed on top_p after loading;
#   - a directory as --text is "is a directory", not "0 tokens"; a missing
#     file gives the OS reason;
#   - no library flag name (JSON_ALLOW_NUL) reaches a message;
#   - --top-k/--top-p/--min-p without --temp, and --system without --chat,
#     warn on stderr in one line and the run goes on (exit 0).
source "$(dirname "$0")/lib.bash"

RANGE="wants (an integer from -?[0-9]+ to [0-9]+|a number (in [[(][-0-9.e+]+, [-0-9.e+]+[])]|>=? [-0-9.e+]+)|a size of at least [0-9]+ bytes|32, 64 or 128)"
NOPE=$T/no-such-model

# cmd flag value [positional args...]
check_flag() {
    local cmd=$1 flag=$2 val=$3
    shift 3
    expect 2 "" "$BIN" "$cmd" "$@" "$flag" "$val"
    local f=${flag//-/\\-}
    grep -Eq -- "$f $RANGE[^']*, got '$(sed 's/[][\.*^$+?(){}|]/\\&/g' <<<"$val")'" "$T/err" ||
        { cat "$T/err" >&2; fail "$cmd $flag '$val': the message does not name the flag, the range and the value"; }
}

for v in abc nan inf -5 1e99 100000000000000000000; do
    for f in --max-tokens --temp --top-k --top-p --min-p --repeat-penalty --seed --threads --ctx --prefill-chunk; do
        check_flag run $f "$v" "$NOPE" --prompt hi
    done
    for f in --threads --prefill-chunk; do check_flag logits $f "$v" "$NOPE" --ids 1; done
    for f in --window --tokens --threads; do check_flag eval $f "$v" "$NOPE" --text x; done
    for f in --tokens --window --threads --target-bpw --group-size; do check_flag profile $f "$v" "$NOPE" --text x --out "$T/p.json"; done
    for f in --bits --group-size --target-bpw --max-memory --threads --shard-size; do check_flag quantize $f "$v" "$NOPE" "$T/q"; done
    for f in --max-memory --threads --shard-size; do check_flag convert $f "$v" "$NOPE" "$T/c" --to mlx; done
    check_flag reshard --shard-size "$v" "$NOPE" "$T/r"
    for f in --layers --experts --vocab --seed --threads --shard-size; do
        check_flag synth $f "$v" "$T/s" --arch qwen3_moe --preset tiny --format bf16
    done
    for f in --tolerance --threads; do check_flag verify $f "$v" "$NOPE" "$NOPE"; done
done
ok "every numeric flag names itself, its range and the value"

expect 2 "^moekit run: --max-tokens wants an integer from 1 to 16777216, got '100000000'" \
    "$BIN" run "$NOPE" --prompt hi --max-tokens 100000000
expect 2 "--temp wants a number in \\[0, 1000\\], got 'nan'" "$BIN" run "$NOPE" --prompt hi --temp nan
grep -q "top_p\|$NOPE" "$T/err" && fail "--temp nan blamed on something else: $(cat "$T/err")"
ok "--max-tokens / --temp nan name the real cause, before the model is opened"

need_fixture tiny-qwen35moe/bf16
TINY=$FX/tiny-qwen35moe/bf16
mkdir "$T/dir"
expect 2 "--text $T/dir: is a directory" "$BIN" eval "$TINY" --text "$T/dir" --window 8
expect 2 "--text $T/dir: is a directory" "$BIN" profile "$TINY" --text "$T/dir" --out "$T/p.json"
expect 2 "--text $T/missing: cannot open: No such file or directory" "$BIN" eval "$TINY" --text "$T/missing" --window 8
expect 2 "--text $T/missing: cannot open: No such file or directory" "$BIN" profile "$TINY" --text "$T/missing" --out "$T/p.json"
ok "--text: a directory and a missing file say so"

# jansson's "\u0000 is not allowed without JSON_ALLOW_NUL" must not leak
mkdir "$T/nul"
cp "$TINY/model.safetensors" "$T/nul/"
printf '{"model_type": "qwen3_5_moe_text", "x": "a\\u0000b"}\n' >"$T/nul/config.json"
for c in "inspect" "run --prompt hi" "convert $T/nul-out --to mlx"; do
    # shellcheck disable=SC2086
    run_cmd "$BIN" ${c%% *} "$T/nul" $(cut -s -d' ' -f2- <<<"$c")
    grep -q 'JSON_' "$T/out" "$T/err" && fail "$c: a jansson flag name leaks: $(cat "$T/out" "$T/err")"
    grep -q 'NUL character' "$T/out" "$T/err" || { cat "$T/out" "$T/err" >&2; fail "$c: the NUL character is not named"; }
done
ok "a NUL in config.json is named as such, no JSON_ALLOW_NUL"

for f in "--top-k 5" "--top-p 0.5" "--min-p 0.1"; do
    # shellcheck disable=SC2086
    expect 0 "^moekit run: warning: ${f%% *} has no effect without --temp" "$BIN" run "$TINY" --prompt hi --max-tokens 2 $f
    [ "$(grep -c warning "$T/err")" = 1 ] || fail "$f: expected one warning line"
done
expect 0 "^moekit run: warning: --system has no effect without --chat" "$BIN" run "$TINY" --prompt hi --system be --max-tokens 2
[ "$(grep -c warning "$T/err")" = 1 ] || fail "--system: expected one warning line"
expect 0 "" "$BIN" run "$TINY" --prompt hi --top-k 5 --temp 0.7 --max-tokens 2
grep -q warning "$T/err" && fail "--top-k with --temp 0.7 warned: $(cat "$T/err")"
ok "ignored sampling flags and --system without --chat warn, once, and the run goes on"

# text flags that are not UTF-8 are named as the cause
expect 2 "^moekit: --system: .*not valid UTF-8" "$BIN" run "$TINY" --chat --system $'bad \xff' --max-tokens 2 </dev/null
expect 2 "^moekit: --prompt: .*not valid UTF-8" "$BIN" run "$TINY" --prompt $'bad \xc3' --max-tokens 2
ok "--prompt / --system that are not UTF-8 are named"
