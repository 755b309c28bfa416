#!/usr/bin/env bash
# Issue 9, item 22: interactive `run --chat` (one turn per stdin line)
# survives a bad line and a full context instead of ending the session.
#   - a line of invalid UTF-8, or with a NUL byte, is refused with a notice
#     naming the line; the turns after it are answered, exit 0;
#   - when the conversation outgrows --ctx the oldest exchanges are dropped
#     with a notice and every turn is answered;
#   - a line too long for --ctx even alone is refused with a notice and the
#     next turn is answered.
# Turns answered are counted by the --stats line each one prints.
source "$(dirname "$0")/lib.bash"
need_fixture tiny-qwen35moe/bf16
TINY=$FX/tiny-qwen35moe/bf16
RUN=("$BIN" run "$TINY" --chat --max-tokens 3 --temp 0 --stats)

answered() { grep -c 'prompt [0-9]* tokens' "$T/err" || true; }

printf 'hello\n\xff\xfe bad\nagain\n' >"$T/in"
expect 0 'line 2: .*not valid UTF-8.*not sent' "${RUN[@]}" <"$T/in"
[ "$(answered)" = 2 ] || fail "invalid UTF-8 line: $(answered) turns answered, expected 2"
ok "a line of invalid UTF-8 is refused, the session goes on"

printf 'hello\nnul\0byte\nagain\n' >"$T/in"
expect 0 'line 2 holds a NUL byte' "${RUN[@]}" <"$T/in"
[ "$(answered)" = 2 ] || fail "NUL line: $(answered) turns answered, expected 2"
ok "a line with a NUL byte is refused, the session goes on"

printf '%s\n' "hello there how are you today my friend" "second line with some more words in it" \
    "third one" "fourth line here" >"$T/in"
expect 0 'dropped the [0-9]+ oldest message' "${RUN[@]}" --ctx 48 <"$T/in"
[ "$(answered)" = 4 ] || fail "full context: $(answered) turns answered, expected 4"
ok "a full context drops the oldest turns with a notice; every turn is answered"

printf '%s\n' "hello there how are you today my friend and a lot more text so that it overflows for sure" \
    "short" >"$T/in"
expect 0 'line 1 does not fit --ctx 24' "${RUN[@]}" --ctx 24 <"$T/in"
[ "$(answered)" = 1 ] || fail "oversized turn: $(answered) turns answered, expected 1"
ok "a turn too long for the context is refused; the next one is answered"
