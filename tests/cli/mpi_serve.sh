#!/usr/bin/env bash
# `mpirun -np 2 moekit serve` (issue 18 item 2; tools/cmd_serve.c,
# tools/dist_cli.h), in each placement (--mpi-mode expert, pipeline, then
# both with -np 3: stages of 2 + 1 ranks): rank 0 owns HTTP, tokenization,
# sampling and the prompt cache, the other ranks hold no HTTP and follow
# rank 0's steps on their share (half the experts of every MoE layer, or
# the last layers, or the last layer's experts); each rank in a network namespace of
# its own where they can be made (tests/cli/mpi_harness.bash), rank 0's HTTP
# reached over the bridge. In each mode:
#   - a greedy chat completion, then the same prompt through /v1/responses,
#     answer the single-process server's tokens;
#   - an unknown model id and a malformed body are answered by rank 0 (4xx)
#     and the server goes on answering;
#   - SIGTERM to rank 0 stops its server, then every rank: mpirun exits 0
#     within 30 s and no rank is left.
# Then a rank killed mid-request (test hook; mpirun told not to abort on a
# dead process): rank 0's deadline (--mpi-timeout 3) ends every rank within
# `timeout 60`, naming rank 1, the layer and the step, and the request gets
# no answer.
set -euo pipefail
: "${MK_BIN:?}" "${MK_BUILD:?}"
. "$(dirname "$0")/fixtures.bash"
need_fixtures
. "$(dirname "$0")/mpi_harness.bash"
command -v curl > /dev/null || { echo "skip: curl not found"; exit 77; }
M=$TINYM/bf16
ALIAS=mpiserve$$
JOB=
stop_all() {
    [ -n "$JOB" ] && kill "$JOB" 2> /dev/null || true
    [ -n "$SPID" ] && kill "$SPID" 2> /dev/null || true
    cleanup
}
SPID=
trap stop_all EXIT

wait_port() { # log pid -> PORT
    for _ in $(seq 300); do
        PORT=$(grep -o 'listening on http://[0-9.]*:[0-9]*' "$1" | sed 's/.*://' || true)
        [ -n "$PORT" ] && return 0
        kill -0 "$2" 2> /dev/null || { cat "$1" >&2; fail "server exited at start"; }
        sleep 0.1
    done
    cat "$1" >&2
    fail "no 'listening on' line"
}
wait_ready() { # host log
    for _ in $(seq 300); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$1:$PORT/health")" = 200 ] && return 0
        sleep 0.1
    done
    curl -s -m 5 -i "http://$1:$PORT/health" >&2 || true
    cat "$2" >&2
    fail "/health never became 200"
}
REQ='{"model":"'$ALIAS'","messages":[{"role":"user","content":"Tell me about the sea."}],"max_tokens":12,"temperature":0}'
answer() { # host -> the completion's content and token count
    curl -s "http://$1:$PORT/v1/chat/completions" -d "$REQ" |
        grep -oE '"content":"([^"\\]|\\.)*"|"completion_tokens":[0-9]+' | tr '\n' ' '
}
RREQ='{"model":"'$ALIAS'","input":"Tell me about the sea.","max_output_tokens":12,"temperature":0}'
answer_resp() { # host -> the Responses API's output text and token count
    curl -s "http://$1:$PORT/v1/responses" -d "$RREQ" |
        grep -oE '"text":"([^"\\]|\\.)*"|"output_tokens":[0-9]+' | tr '\n' ' '
}

# the single-process server's answer
"$MK_BIN" serve "$M" --port 0 --threads 1 --alias "$ALIAS" 2> "$T/one.log" &
SPID=$!
wait_port "$T/one.log" "$SPID"
wait_ready 127.0.0.1 "$T/one.log"
ONE=$(answer 127.0.0.1)
[ -n "$ONE" ] || fail "single process: no answer"
ONE_R=$(answer_resp 127.0.0.1)
[ -n "$ONE_R" ] || fail "single process: no answer from /v1/responses"
kill -TERM "$SPID"
wait "$SPID" || fail "single process: exit $? after SIGTERM"
SPID=

# two ranks: experts split (rank 1 holds experts [8, 16)), then layers (rank 1 holds the last ones);
# three ranks, both: rank 1 holds experts [8, 16) of stage 0's layers, rank 2 all of stage 1's
for mode in expert pipeline both; do
    # a log per run: the parent reads it while the background job opens it, so a shared file could
    # still hold the previous run's "listening on" line (its port) when wait_port reads it
    LOG=$T/$mode.log
    share="routed experts \\[8, 16) of 16"
    [ $mode = pipeline ] && share="pipeline stage 1: layers \\[[0-9], 4) of 4"
    np=2
    [ $mode = both ] && np=3 share="pipeline stage 0 of 2 (ranks 0-1): layers \\[0, [0-9]) of 4, routed experts \\[8, 16) of 16"
    "${MPI[@]}" -np $np "$MK_BIN" serve "$M" --host "$RANK0_HOST" --port 0 --threads 1 --alias "$ALIAS" \
        --mpi-mode $mode > "$T/out" 2> "$LOG" &
    JOB=$!
    wait_port "$LOG" "$JOB"
    wait_ready "$RANK0_HOST" "$LOG"
    grep -q "rank 1 of $np: $share" "$LOG" || { cat "$LOG" >&2; fail "$mode: no startup line of rank 1"; }
    [ $mode != both ] || grep -q "rank 2 of 3: pipeline stage 1 of 2 (rank 2): layers \[[0-9], 4) of 4, routed experts \[0, 16) of 16" \
        "$LOG" || { cat "$LOG" >&2; fail "$mode: no startup line of rank 2"; }
    [ "$(grep -c 'listening on' "$LOG")" -eq 1 ] || { cat "$LOG" >&2; fail "more than one rank listens"; }
    c=$(curl -s -o "$T/bad" -w '%{http_code}' "http://$RANK0_HOST:$PORT/v1/chat/completions" \
        -d '{"model":"nope","messages":[{"role":"user","content":"hi"}]}')
    [ "$c" = 404 ] || [ "$c" = 400 ] || { cat "$T/bad" >&2; fail "unknown model: HTTP $c"; }
    grep -q "'nope' is not served here" "$T/bad" || { cat "$T/bad" >&2; fail "unknown model: message"; }
    c=$(curl -s -o "$T/bad" -w '%{http_code}' "http://$RANK0_HOST:$PORT/v1/chat/completions" -d '{"model":')
    [ "$c" = 400 ] || { cat "$T/bad" >&2; fail "malformed body: HTTP $c"; }
    TWO=$(answer "$RANK0_HOST")
    [ "$ONE" = "$TWO" ] || fail "$mode -np $np answered '$TWO', one process '$ONE'"
    echo "ok: serve -np $np --mpi-mode $mode answers the single-process server's greedy tokens: $TWO"
    TWO_R=$(answer_resp "$RANK0_HOST")
    [ "$ONE_R" = "$TWO_R" ] || fail "$mode -np $np /v1/responses answered '$TWO_R', one process '$ONE_R'"
    echo "ok: $mode: /v1/responses answers the single-process server's greedy tokens too"

    # SIGTERM to rank 0 (found by its launcher's environment): its server stops, then every rank
    R0=$(rank0_of "$ALIAS")
    [ -n "$R0" ] || fail "rank 0's process not found"
    kill -TERM "$R0"
    for _ in $(seq 300); do
        kill -0 "$JOB" 2> /dev/null || break
        sleep 0.1
    done
    kill -0 "$JOB" 2> /dev/null && fail "mpirun still running 30 s after SIGTERM to rank 0"
    set +e
    wait "$JOB"
    rc=$?
    set -e
    JOB=
    [ $rc -eq 0 ] || { cat "$LOG" >&2; fail "mpirun exited $rc after SIGTERM to rank 0"; }
    grep -q "moekit serve: stopped" "$LOG" || { cat "$LOG" >&2; fail "rank 0 did not stop cleanly"; }
    if pgrep -f -- "--alias $ALIAS" > /dev/null; then fail "a rank is left after rank 0 stopped"; fi
    echo "ok: $mode: SIGTERM to rank 0 ends every rank (mpirun exit 0)"
done

# a rank killed mid-request (step 6: the warm-up is step 1, the prompt step 2, then one step per
# token), with mpirun told not to abort on a dead process: rank 0's deadline ends the job, naming
# rank 1, the layer and the step; the request gets no answer (never a 200 with wrong tokens)
set +e
timeout 60 "${MPI[@]}" --mca orte_abort_on_non_zero_status 0 -np 2 "$MK_BIN" serve "$M" --host "$RANK0_HOST" \
    --port 0 --threads 1 --alias "$ALIAS" --mpi-timeout 3 --mpi-test-fault kill:1:1:6 > "$T/out" 2> "$T/kill.log" &
JOB=$!
set -e
wait_port "$T/kill.log" "$JOB"
wait_ready "$RANK0_HOST" "$T/kill.log"
c=$(curl -s -m 60 -o "$T/killed" -w '%{http_code}' "http://$RANK0_HOST:$PORT/v1/chat/completions" -d "$REQ" || true)
set +e
wait "$JOB"
rc=$?
set -e
JOB=
[ $rc -ne 124 ] || fail "kill: the job did not end within 60 s"
[ $rc -ne 0 ] || { cat "$T/kill.log" >&2; fail "kill: mpirun exited 0"; }
[ "$c" != 200 ] || { cat "$T/killed" >&2; fail "kill: HTTP 200 with a dead rank"; }
grep -q "rank 1: test hook: killed at layer 1, step 6" "$T/kill.log" || { cat "$T/kill.log" >&2; fail "kill: the hook did not fire"; }
grep -q "layer 1, step 6 (position [0-9]*): the payload from rank 1 did not complete within 3 s" "$T/kill.log" ||
    { cat "$T/kill.log" >&2; fail "kill: no message naming rank 1, layer 1, step 6"; }
if pgrep -f -- "--alias $ALIAS" > /dev/null; then fail "kill: a rank is left"; fi
echo "ok: a rank killed mid-request ends every rank (mpirun exit $rc, HTTP $c), named"
