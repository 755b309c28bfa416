#!/usr/bin/env bash
# Issue 9, item 20: tensor names are data, never layout or terminal
# commands. A name holding a newline must not forge a line of a `hash`
# manifest, and ESC / C1 control sequences must not reach the terminal, in
# hash, inspect, verify and every error message that quotes a name.
# (One helper, mk_escape, does it: \n \r \t, \xHH, \u0080..\u009f, and \\ in
# hash so the manifest stays one to one.)
source "$(dirname "$0")/lib.bash"

# mkst FILE HEADER_JSON DATA(printf format): write a safetensors file.
mkst() {
    local f=$1 h=$2 n=${#2}
    while [ $((n % 8)) -ne 0 ]; do h="$h "; n=$((n + 1)); done
    printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x\\x00\\x00\\x00\\x00' $((n & 255)) $((n >> 8 & 255)) \
        $((n >> 16 & 255)) $((n >> 24 & 255)))" >"$f"
    printf '%s' "$h" >>"$f"
    # shellcheck disable=SC2059
    printf "$3" >>"$f"
}

# no_controls FILE...: no ESC, no other C0 control but \n and \t, no C1 (UTF-8 C2 80..9F)
no_controls() {
    if LC_ALL=C grep -qP '[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]' "$@"; then
        cat -A "$@" >&2
        fail "control characters reached the output"
    fi
}

FORGED='00000000000000000000000000000000'
H='{"a\nforged F32 [1] '$FORGED'":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
H+='"b\u001b[31mred\u009b2J":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},'
H+='"c\\d":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},'
H+='"c\\\\d":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}'
mkdir "$T/a" "$T/b"
mkst "$T/a/model.safetensors" "$H" '\x00\x00\x80\x3f\x00\x00\x00\x40\x00\x00\x40\x40\x00\x00\x80\x40'
mkst "$T/b/model.safetensors" "$H" '\x00\x00\x80\x3f\x00\x00\x00\x41\x00\x00\x40\x40\x00\x00\x80\x40'

# 1. hash: one line per tensor, names escaped one to one
expect 0 "" "$BIN" hash "$T/a/model.safetensors"
[ "$(wc -l <"$T/out")" = 4 ] || { cat -A "$T/out" >&2; fail "hash: 4 tensors gave $(wc -l <"$T/out") lines"; }
no_controls "$T/out"
grep -q "^forged" "$T/out" && fail "hash: a tensor name forged a manifest line"
grep -qF 'a\nforged F32 [1] '"$FORGED"' F32 [1] ' "$T/out" || fail "hash: newline not escaped as \\n"
grep -qF 'b\x1b[31mred\u009b2J F32 [1] ' "$T/out" || fail "hash: ESC / C1 not escaped"
# "c\d" and "c\\d" are two tensors: their lines must differ and sort distinctly
grep -qxE 'c\\\\d F32 \[1\] [0-9a-f]{32}' "$T/out" || fail "hash: backslash not escaped"
grep -qxE 'c\\\\\\\\d F32 \[1\] [0-9a-f]{32}' "$T/out" || fail "hash: double backslash not escaped one to one"
ok "hash escapes names: one line per tensor, no control bytes"

# 2. verify by name: the differing tensor is named, escaped
expect 1 "" "$BIN" verify "$T/a" "$T/b"
no_controls "$T/out" "$T/err"
grep -qF 'b\x1b[31mred\u009b2J' "$T/out" || { cat -A "$T/out" >&2; fail "verify: name not escaped"; }
[ "$(grep -c '^FAIL' "$T/out")" = 1 ] || fail "verify: expected one FAIL line"
ok "verify escapes names"

# 3. inspect: a problem quoting a module name
need_fixture tiny-qwen35moe/bf16
mkdir "$T/i"
cp "$FX/tiny-qwen35moe/bf16/"* "$T/i/"
rm -f "$T/i/model.safetensors.index.json"
mkst "$T/i/extra.safetensors" '{"model.layers.0.x\u001b[2J\nforged":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}' \
    '\x00\x00\x80\x3f'
expect 0 "" "$BIN" inspect "$T/i"
no_controls "$T/out" "$T/err"
grep -qF "module 'x\\x1b[2J\\nforged'" "$T/out" || { cat -A "$T/out" >&2; fail "inspect: problem line not escaped"; }
grep -q '^forged' "$T/out" && fail "inspect: a tensor name forged a line"
ok "inspect escapes names in its report"

# 4. error messages quoting a name: one line, escaped, for every command
mkdir "$T/bad"
mkst "$T/bad/model.safetensors" '{"bad\u001b[31m\nname\u0085":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}' \
    '\x00\x00\x80\x3f'
cp "$FX/tiny-qwen35moe/bf16/config.json" "$T/bad/"
for c in "hash $T/bad" "inspect $T/bad" "verify $T/bad $T/bad" "convert $T/bad $T/out-c --to mlx" \
    "quantize $T/bad $T/out-q --bits 4" "reshard $T/bad $T/out-r"; do
    # shellcheck disable=SC2086
    expect 2 "bad\\\\x1b\[31m\\\\nname\\\\u0085" "$BIN" $c
    no_controls "$T/err"
    [ "$(wc -l <"$T/err")" = 1 ] || { cat -A "$T/err" >&2; fail "$c: the error took $(wc -l <"$T/err") lines"; }
done
ok "error messages quoting names are one line, escaped"
