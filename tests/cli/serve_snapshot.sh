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
# prompt is snapshotted every --snapshot-every tokens (256 here, in pieces of
# --prefill-step 64, so the prompts stay short: 2048 and 512 by default): a
# prompt sharing ~310 of its tokens resumes at 256 and answers as a fresh
# prefill. --snapshots 0 takes none (turn 2 prefills everything); out of
# range is refused. --snapshot-memory bounds all snapshots together: the
# least recently used is evicted for a new one (an edit that could have
# resumed from it prefills everything), /metrics shows the bytes held; and
# --memory-budget counts the snapshots (the memory left to each slot's
# engine shrinks by exactly their bytes).
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
    "$BIN" serve "$M" --port 0 --threads 2 --parallel 1 --prefill-step 64 --snapshot-every 256 "$@" 2> "$log" &
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
# turn 2 edited differently: resumes from turn 1's snapshot (turn 2's and 3's are past the edit)
turn2b="{\"messages\":[$u1,{\"role\":\"assistant\",\"content\":\"def f(): return 1\"},{\"role\":\"user\",\"content\":\"Again?\"}],\"max_tokens\":12,\"temperature\":0}"
r=$(chat "$turn2b")
[ "$(echo "$r" | jnum cached_tokens)" = "$np1" ] || fail "turn 2 edited again reused $(echo "$r" | jnum cached_tokens) tokens, expected turn 1's prompt ($np1): $r"
# a different conversation: nothing of the history is usable (no snapshot inside its prefix)
r4=$(chat '{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi."}],"max_tokens":4,"temperature":0}')
[ "$(echo "$r4" | jnum cached_tokens)" = 0 ] || fail "an unrelated chat reused a cache: $r4"
# a long prompt (~390 tokens) is snapshotted every 256 tokens too: a
# second prompt that leaves it after ~310 tokens resumes at 256
words() { for k in $(seq "$1"); do printf 'item%d ' "$k"; done; }
long1="{\"prompt\":\"$(words 150)end one\",\"max_tokens\":3,\"temperature\":0}"
long2="{\"prompt\":\"$(words 120)end two\",\"max_tokens\":3,\"temperature\":0}"
curl -s "http://127.0.0.1:$PORT/v1/completions" -d "$long1" > "$T/l1"
[ "$(jnum prompt_tokens < "$T/l1")" -gt 350 ] || fail "long prompt 1: $(cat "$T/l1")"
curl -s "http://127.0.0.1:$PORT/v1/completions" -d "$long2" > "$T/l2"
[ "$(jnum cached_tokens < "$T/l2")" = 256 ] || fail "long prompt 2 reused $(jnum cached_tokens < "$T/l2") tokens, expected the snapshot at 256: $(cat "$T/l2")"
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
# from 256 on the pieces have the same boundaries as a fresh prefill (64 each): the same text
r=$(curl -s "http://127.0.0.1:$PORT/v1/completions" -d "$long2")
[ "$(echo "$r" | jnum cached_tokens)" = 0 ] || fail "fresh server reused a cache for the long prompt: $r"
[ "$(echo "$r" | jstr text)" = "$(jstr text < "$T/l2")" ] || fail "the long prompt from its 256 snapshot differs from a fresh prefill: $(cat "$T/l2") vs $r"
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

# --snapshot-memory: room for two snapshots in all (two and a half). Turns
# 1-3 take three (at the end of each prompt); the third evicts the least
# recently used, turn 1's (turn 2 restored it, turn 3 restored turn 2's
# since), so the second edit of turn 2, which resumed from it above, now
# prefills everything.
sb=$(sed -n 's/.*recurrent-state snapshots of \([0-9]*\) bytes.*/\1/p' "$T/log1")
[ -n "$sb" ] && [ "$sb" -gt 0 ] || fail "no snapshot size in the startup line: $(cat "$T/log1")"
start_server "$T/log5" --snapshot-memory $((2 * sb + sb / 2))
grep -q "up to 2 recurrent-state snapshots of $sb bytes" "$T/log5" || fail "--snapshot-memory: $(cat "$T/log5")"
chat "{\"messages\":[$u1],\"max_tokens\":20,\"temperature\":0}" > /dev/null
[ "$(chat "$turn2" | jnum cached_tokens)" = "$np1" ] || fail "bounded: turn 2 did not resume"
[ "$(chat "$turn3" | jnum cached_tokens)" = "$np2" ] || fail "bounded: turn 3 did not resume"
[ "$(metric moekit_prompt_cache_snapshot_evictions_total)" = 1 ] ||
    fail "bounded: expected 1 eviction: $(curl -s "http://127.0.0.1:$PORT/metrics" | grep snapshot)"
[ "$(metric moekit_prompt_cache_snapshot_bytes)" = $((2 * sb)) ] ||
    fail "bounded: expected $((2 * sb)) bytes held: $(metric moekit_prompt_cache_snapshot_bytes)"
r=$(chat "$turn2b")
[ "$(echo "$r" | jnum cached_tokens)" = 0 ] || fail "bounded: turn 1's snapshot was not evicted (least recently used): $r"
kill -TERM "$SPID"
wait "$SPID" || fail "server exit status $?"

# --memory-budget counts the snapshots: at a budget too small for the two
# slots' engines, the memory each engine is offered (the refusal says it)
# is smaller with 8 snapshots per slot than with none by exactly 2 x 8 of them
avail() {
    "$BIN" serve "$M" --port 0 --threads 1 --parallel 2 --memory-budget 125M --snapshots "$1" > /dev/null 2> "$T/b$1" &&
        fail "--memory-budget 125M was not refused: $(cat "$T/b$1")"
    sed -n 's/.*only \([0-9]*\) bytes of memory are available.*/\1/p' "$T/b$1"
}
a0=$(avail 0)
a8=$(avail 8)
[ -n "$a0" ] && [ -n "$a8" ] || fail "--memory-budget 125M was not refused per engine: $(cat "$T/b0" "$T/b8")"
[ $((a0 - a8)) = $((16 * sb)) ] || fail "the budget counted $((a0 - a8)) bytes for 16 snapshots of $sb: $(cat "$T/b8")"
grep -q "prompt cache: up to 16 .*counted in --memory-budget" "$T/b8" ||
    fail "the startup line does not say the snapshots are counted: $(cat "$T/b8")"
expect 2 "--snapshots" "$BIN" serve "$M" --snapshots 9
expect 2 "--snapshot-memory" "$BIN" serve "$M" --snapshot-memory 0
echo "serve_snapshot: ok"
