#!/usr/bin/env bash
# Continuous batching in moekit serve on the trained demo model (a hybrid:
# Gated DeltaNet + gated attention + MoE): 8 concurrent greedy clients on 8
# slots, prompts of different lengths and different max_tokens (so
# sequences join and leave the batch at different steps, at different
# positions), each answer equal to that prompt's `moekit run` alone (with
# --prefill-chunk equal to the server's --prefill-step); a
# long prompt arriving while others decode is prefilled in pieces
# interleaved with their decode steps and changes nothing in their
# answers; /metrics shows the decode steps really ran batched (more
# sequences than steps); a seeded sampled request among greedy ones gives
# the same text as alone; the same with experts streamed through one
# shared store; --prefill-step out of range is refused.
# MK_SERVE_BACKEND=cuda (serve_batch_cuda.sh): the same server on the CUDA
# backend (its batched steps through the fused MoE slot), every answer
# still equal to the CPU's `moekit run` of that prompt, the streamed-experts
# round included (the backend drops its device copies of a store's slot when
# the slot is reused: backend.h host_changed).
# no pipefail: `echo "$r" | grep -q` would fail whenever grep stops reading early (SIGPIPE)
set -eu
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash" # fail
command -v curl >/dev/null || { echo "skip: curl not found"; exit 77; }
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-serveb-XXXXXX")
SPID=
cleanup() {
    [ -n "$SPID" ] && kill "$SPID" 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT
M=$TINYM/bf16
BK=()
if [ "${MK_SERVE_BACKEND:-cpu}" = cuda ]; then
    if ! "$BIN" logits "$M" --ids 1,2 --out "$T/probe.f32" --backend cuda 2> "$T/probe.err"; then
        echo "skip: no GPU here: $(tail -1 "$T/probe.err")"
        exit 77
    fi
    BK=(--backend cuda)
fi

# the piece size is checked like every numeric flag: one line naming it, exit 2
expect 2 "--prefill-step" "$BIN" serve "$M" --prefill-step 0
expect 2 "--prefill-step" "$BIN" serve "$M" --prefill-step x

"$BIN" serve "$M" --port 0 --threads 2 --parallel 8 --queue 32 --prefill-step 16 "${BK[@]}" 2> "$T/log" &
SPID=$!
PORT=
for _ in $(seq 200); do
    PORT=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$T/log" | sed 's/.*://' || true)
    [ -n "$PORT" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")" = 200 ] && break
    kill -0 "$SPID" 2>/dev/null || { cat "$T/log" >&2; fail "server exited at start"; }
    sleep 0.1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")" = 200 ] || fail "never ready"
U=http://127.0.0.1:$PORT
jstr() { grep -oE "\"$1\":\"([^\"\\\\]|\\\\.)*\"" | sed -n 1p | sed "s/^\"$1\":\"//; s/\"\$//"; }
metric() { curl -s "$U/metrics" | grep "^$1 " | sed 's/.* //'; }
# the server prefills in 16-token pieces: run with the same boundaries
run_text() { "$BIN" run "$M" --threads 2 --prefill-chunk 16 --json "$@" | jstr text; }

# prompts of growing length: different positions in the batch
prompt() {
    local i=$1 p="Question $1:" k
    for k in $(seq "$i"); do p="$p and then item $k"; done
    echo "$p write code."
}
for i in 0 1 2 3 4 5 6 7; do
    run_text --chat --prompt "$(prompt $i)" --max-tokens $((12 + i * 5)) > "$T/w$i"
    [ -s "$T/w$i" ] || fail "run gave no text for prompt $i"
done

# requests sent at once by one curl (-Z): a background curl per client,
# each building its body in subshells first, can reach the server several
# decode steps apart under `ctest -j2` and then decode alone (as
# mpi_serve_batch.sh found; here the streaming round failed "not batched"
# once in a fresh-clone CI run)
together() { # PREFIX I...: request i's answer to $T/PREFIX$i
    local pre=$1 ca=() i
    shift
    for i in "$@"; do
        [ ${#ca[@]} -eq 0 ] || ca+=(--next)
        ca+=(-s -o "$T/$pre$i" "$U/v1/chat/completions" -d "{\"messages\":[{\"role\":\"user\",\"content\":\"$(prompt "$i")\"}],\"max_tokens\":$((12 + i * 5)),\"temperature\":0}")
    done
    curl -Z --parallel-immediate "${ca[@]}" || fail "a client's request failed (curl exit $?)"
}

s0=$(metric moekit_decode_steps_total)
q0=$(metric moekit_decode_step_sequences_total)
together c 0 1 2 3 4 5 6 7
for i in 0 1 2 3 4 5 6 7; do
    [ "$(jstr content < "$T/c$i")" = "$(cat "$T/w$i")" ] ||
        fail "client $i in the batch differs from its run: '$(jstr content < "$T/c$i")' vs '$(cat "$T/w$i")'"
done
s1=$(metric moekit_decode_steps_total)
q1=$(metric moekit_decode_step_sequences_total)
# 8 requests of 12..47 tokens: run one at a time that is >= 8*12 steps of 1;
# batched, far fewer steps than sequences
[ $((q1 - q0)) -ge 200 ] || fail "decode sequences $((q1 - q0)): expected the 8 requests' tokens"
[ $((s1 - s0)) -lt $(((q1 - q0) / 2)) ] || fail "decode steps $((s1 - s0)) for $((q1 - q0)) sequences: not batched"

# a long prompt joins while 4 streams decode: prefilled in 16-token pieces
# between their steps; every answer as alone
long="Explain this:"
for k in $(seq 60); do long="$long word$k"; done
run_text --chat --prompt "$long" --max-tokens 10 > "$T/wl"
cp=()
for i in 0 1 2 3; do
    curl -s "$U/v1/chat/completions" -d "{\"messages\":[{\"role\":\"user\",\"content\":\"$(prompt $i)\"}],\"max_tokens\":$((12 + i * 5)),\"temperature\":0}" > "$T/d$i" &
    cp+=($!)
done
sleep 0.3
curl -s "$U/v1/chat/completions" -d "{\"messages\":[{\"role\":\"user\",\"content\":\"$long\"}],\"max_tokens\":10,\"temperature\":0}" > "$T/dl" &
cp+=($!)
wait "${cp[@]}"
for i in 0 1 2 3; do
    [ "$(jstr content < "$T/d$i")" = "$(cat "$T/w$i")" ] || fail "client $i differs from its run with a long prompt joining"
done
[ "$(jstr content < "$T/dl")" = "$(cat "$T/wl")" ] || fail "the long prompt's answer differs from its run"

# a seeded sampled request: the same text alone and among greedy ones
sreq='{"prompt":"def parse(","max_tokens":24,"temperature":0.9,"top_p":0.95,"seed":1234}'
alone=$(curl -s "$U/v1/completions" -d "$sreq" | jstr text)
[ -n "$alone" ] || fail "no text for the seeded request"
cp=()
for i in 0 1 2; do
    curl -s "$U/v1/chat/completions" -d "{\"messages\":[{\"role\":\"user\",\"content\":\"$(prompt $i)\"}],\"max_tokens\":30,\"temperature\":0}" > /dev/null &
    cp+=($!)
done
curl -s "$U/v1/completions" -d "$sreq" > "$T/seeded" &
cp+=($!)
wait "${cp[@]}"
[ "$(jstr text < "$T/seeded")" = "$alone" ] || fail "the seeded request under load: '$(jstr text < "$T/seeded")' vs alone '$alone'"

[ "$(curl -s "$U/health")" = '{"status":"ok"}' ] || fail "/health after the rounds"
[ "$(metric moekit_slots_busy)" = 0 ] || fail "slots still busy"
kill -TERM "$SPID"
wait "$SPID" || fail "server exit status $?"
SPID=

# experts streamed from the checkpoint through one shared store (not all
# resident: the batched step acquires the union of the batch's experts per
# layer and runs them one by one): 4 clients, each still equal to its run
"$BIN" serve "$M" --port 0 --threads 2 --parallel 4 --prefill-step 16 --stream-experts "${BK[@]}" 2> "$T/log2" &
SPID=$!
PORT=
for _ in $(seq 200); do
    PORT=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$T/log2" | sed 's/.*://' || true)
    [ -n "$PORT" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")" = 200 ] && break
    kill -0 "$SPID" 2>/dev/null || { cat "$T/log2" >&2; fail "streaming server exited at start"; }
    sleep 0.1
done
U=http://127.0.0.1:$PORT
s0=$(metric moekit_decode_steps_total)
q0=$(metric moekit_decode_step_sequences_total)
together s 4 5 6 7
for i in 4 5 6 7; do
    [ "$(jstr content < "$T/s$i")" = "$(cat "$T/w$i")" ] || fail "streaming client $i differs from its run"
done
s1=$(metric moekit_decode_steps_total)
q1=$(metric moekit_decode_step_sequences_total)
[ $((s1 - s0)) -lt $(((q1 - q0) / 2)) ] ||
    fail "streaming server: decode steps $((s1 - s0)) for $((q1 - q0)) sequences: not batched"
kill -TERM "$SPID"
wait "$SPID" || fail "streaming server exit status $?"
SPID=
echo "serve_batch: ok${BK[*]:+ on ${BK[*]}}"
