#!/usr/bin/env bash
# The prompt cache on a hybrid model (the trained demo: Gated DeltaNet
# layers, whose recurrent state cannot be rewound): a chat whose next turn
# does not extend the slot's whole history (the client sends back an
# edited answer, as templates that drop reasoning do) resumes from the
# recurrent-state snapshot taken at the end of the previous prompt instead
# of prefilling everything: cached_tokens is that prompt's length, the
# snapshot metrics count it, and the answer equals a fresh server's
# (no cache). Turn 3 (edited again) reuses turn 2's whole prompt; an
# unrelated chat (no snapshot inside its common prefix) reuses nothing. A long
# prompt is snapshotted every 2048 tokens: a prompt sharing ~2500 of its
# tokens resumes at 2048 and answers as a fresh prefill. --snapshots 0
# takes none (turn 2 prefills everything); out of range is refused.
# no pipefail: `echo "$r" | grep -q` would fail whenever grep stops reading early (SIGPIPE)
set -eu
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash" # fail
command -v curl >/dev/null || { echo "skip: curl not found"; exit 77; }
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-servesnap-XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$T"
}
trap cleanup EXIT
M=$TINYM/bf16

start_server() { # LOG [ARGS...]: sets PORT, SPID
    local log=$1
    shift
    "$BIN" serve "$M" --port 0 --threads 2 --parallel 1 "$@" 2> "$log" &
    SPID=$!
    PIDS+=("$SPID")
    PORT=
    for _ in $(seq 200); do
        PORT=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$log" | sed 's/.*://' || true)
        [ -n "$PORT" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")" = 200 ] && return 0
        kill -0 "$SPID" 2>/dev/null || { cat "$log" >&2; fail "server exited at start"; }
        sleep 0.1
    done
    fail "server never ready"
}
jstr() { grep -oE "\"$1\":\"([^\"\\\\]|\\\\.)*\"" | sed -n 1p | sed "s/^\"$1\":\"//; s/\"\$//"; }
jnum() { grep -oE "\"$1\":[0-9]+" | sed -n 1p | sed 's/.*://'; }
chat() { curl -s "http://127.0.0.1:$PORT/v1/chat/completions" -d "$1"; }
metric() { curl -s "http://127.0.0.1:$PORT/metrics" | grep "^$1 " | sed 's/.* //'; }

start_server "$T/log1"
u1='{"role":"user","content":"Write a function."}'
r1=$(chat "{\"messages\":[$u1],\"max_tokens\":20,\"temperature\":0}")
np1=$(echo "$r1" | jnum prompt_tokens)
[ "$np1" -gt 5 ] || fail "turn 1: $r1"
[ "$(metric moekit_prompt_cache_snapshots_saved_total)" -ge 1 ] || fail "no snapshot saved at the end of turn 1's prompt"
# turn 2 sends back an edited answer: the prompt shares turn 1's prompt, not the generated tokens
turn2="{\"messages\":[$u1,{\"role\":\"assistant\",\"content\":\"def f(): return 1\"},{\"role\":\"user\",\"content\":\"Again.\"}],\"max_tokens\":12,\"temperature\":0}"
r2=$(chat "$turn2")
[ "$(echo "$r2" | jnum cached_tokens)" = "$np1" ] || fail "turn 2 reused $(echo "$r2" | jnum cached_tokens) tokens, expected turn 1's prompt ($np1): $r2"
[ "$(metric moekit_prompt_cache_snapshot_restores_total)" = 1 ] || fail "no snapshot restore counted"
a2=$(echo "$r2" | jstr content)
np2=$(echo "$r2" | jnum prompt_tokens)
# turn 3 edits again: reuses turn 2's whole prompt (the snapshot at its end)
turn3="{\"messages\":[$u1,{\"role\":\"assistant\",\"content\":\"def f(): return 1\"},{\"role\":\"user\",\"content\":\"Again.\"},{\"role\":\"assistant\",\"content\":\"def g(): return 2\"},{\"role\":\"user\",\"content\":\"Once more.\"}],\"max_tokens\":12,\"temperature\":0}"
r3=$(chat "$turn3")
[ "$(echo "$r3" | jnum cached_tokens)" = "$np2" ] || fail "turn 3 reused $(echo "$r3" | jnum cached_tokens) tokens, expected turn 2's prompt ($np2): $r3"
a3=$(echo "$r3" | jstr content)
# a different conversation: nothing of the history is usable (no snapshot inside its prefix)
r4=$(chat '{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi."}],"max_tokens":4,"temperature":0}')
[ "$(echo "$r4" | jnum cached_tokens)" = 0 ] || fail "an unrelated chat reused a cache: $r4"
# a long prompt (~3200 tokens) is snapshotted every 2048 tokens too: a
# second prompt that leaves it after ~2500 tokens resumes at 2048
words() { for k in $(seq "$1"); do printf 'item%d ' "$k"; done; }
long1="{\"prompt\":\"$(words 1000)end one\",\"max_tokens\":3,\"temperature\":0}"
long2="{\"prompt\":\"$(words 800)end two\",\"max_tokens\":3,\"temperature\":0}"
curl -s "http://127.0.0.1:$PORT/v1/completions" -d "$long1" > "$T/l1"
[ "$(jnum prompt_tokens < "$T/l1")" -gt 3000 ] || fail "long prompt 1: $(cat "$T/l1")"
curl -s "http://127.0.0.1:$PORT/v1/completions" -d "$long2" > "$T/l2"
[ "$(jnum cached_tokens < "$T/l2")" = 2048 ] || fail "long prompt 2 reused $(jnum cached_tokens < "$T/l2") tokens, expected the snapshot at 2048: $(cat "$T/l2")"
kill "$SPID"; wait "$SPID" 2>/dev/null || true

# the same turns on fresh servers: the same answers without any cache
start_server "$T/log2"
r=$(chat "$turn2")
[ "$(echo "$r" | jnum cached_tokens)" = 0 ] || fail "fresh server reused a cache: $r"
[ "$(echo "$r" | jstr content)" = "$a2" ] || fail "turn 2 from the snapshot differs from a fresh prefill: '$a2' vs $r"
kill "$SPID"; wait "$SPID" 2>/dev/null || true
start_server "$T/log3"
r=$(chat "$turn3")
[ "$(echo "$r" | jstr content)" = "$a3" ] || fail "turn 3 from the snapshot differs from a fresh prefill: '$a3' vs $r"
# from 2048 on the pieces have the same boundaries as a fresh prefill (512 each): the same text
r=$(curl -s "http://127.0.0.1:$PORT/v1/completions" -d "$long2")
[ "$(echo "$r" | jnum cached_tokens)" = 0 ] || fail "fresh server reused a cache for the long prompt: $r"
[ "$(echo "$r" | jstr text)" = "$(jstr text < "$T/l2")" ] || fail "the long prompt from its 2048 snapshot differs from a fresh prefill: $(cat "$T/l2") vs $r"
kill "$SPID"; wait "$SPID" 2>/dev/null || true

# --snapshots 0: no snapshot is taken, so the edited turn 2 prefills everything
start_server "$T/log4" --snapshots 0
chat "{\"messages\":[$u1],\"max_tokens\":20,\"temperature\":0}" > /dev/null
r=$(chat "$turn2")
[ "$(echo "$r" | jnum cached_tokens)" = 0 ] || fail "--snapshots 0 still resumed: $r"
[ "$(metric moekit_prompt_cache_snapshots_saved_total)" = 0 ] || fail "--snapshots 0 saved snapshots"
[ "$(echo "$r" | jstr content)" = "$a2" ] || fail "turn 2 without snapshots differs: $r"
kill -TERM "$SPID"
wait "$SPID" || fail "server exit status $?"
expect 2 "--snapshots" "$BIN" serve "$M" --snapshots 9
echo "serve_snapshot: ok"
