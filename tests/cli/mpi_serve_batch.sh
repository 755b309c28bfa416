#!/usr/bin/env bash
# Continuous batching under MPI (issue 18 item 1 with issue 10's slots;
# tools/cmd_serve.c, src/dist/dist_mpi.c, src/engine/batch.c):
# `mpirun -np N moekit serve --parallel 4` on the trained demo model (a
# hybrid: Gated DeltaNet + gated attention + MoE), in each placement
# (expert and pipeline with -np 2, both with -np 3: stages of 2 + 1 ranks,
# expert again with -np 3). The other ranks hold an engine per slot and
# follow rank 0's batched decode steps (one step, one exchange per MoE
# layer or one hand-over per stage, for all the batch's sequences). In
# each mode:
#   - 6 concurrent greedy clients on 4 slots (prompts of different lengths
#     and different max_tokens: sequences join and leave the batch at
#     different steps and positions, and two wait for a slot, which is
#     then reused: the other ranks reset or extend that slot's engine as
#     rank 0 does), each answer equal to that prompt's single-process
#     `moekit run` (with --prefill-chunk equal to the server's
#     --prefill-step);
#   - /metrics shows the decode steps really ran batched (fewer steps than
#     half the sequences they fed);
#   - SIGTERM to rank 0 ends every rank with mpirun exit 0 (no rank failed
#     a step: a rank replaying a batch on the wrong engines or positions
#     would have routed differently and stopped the job).
# Then faults in a batched step (a rank killed in expert and pipeline mode,
# a flipped byte): every rank ends within `timeout 90`, rank 0 naming rank
# 1, the layer, the step and its batch, and no client gets HTTP 200.
set -euo pipefail
: "${MK_BIN:?}" "${MK_BUILD:?}"
. "$(dirname "$0")/fixtures.bash"
. "$(dirname "$0")/mpi_harness.bash"
command -v curl > /dev/null || { echo "skip: curl not found"; exit 77; }
M=$TINYM/bf16
ALIAS=mpisb$$
JOB=
stop_all() {
    [ -n "$JOB" ] && kill "$JOB" 2> /dev/null || true
    cleanup
}
trap stop_all EXIT

wait_ready() { # log pid -> PORT, once /health answers 200
    PORT=
    for _ in $(seq 600); do
        [ -n "$PORT" ] || PORT=$(grep -o 'listening on http://[0-9.]*:[0-9]*' "$1" | sed 's/.*://' || true)
        [ -n "$PORT" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$RANK0_HOST:$PORT/health")" = 200 ] &&
            return 0
        kill -0 "$2" 2> /dev/null || { cat "$1" >&2; fail "the job exited at start"; }
        sleep 0.1
    done
    cat "$1" >&2
    fail "/health never became 200"
}
jstr() { grep -oE "\"$1\":\"([^\"\\\\]|\\\\.)*\"" | sed -n 1p | sed "s/^\"$1\":\"//; s/\"\$//"; }
metric() { curl -s "http://$RANK0_HOST:$PORT/metrics" | grep "^$1 " | sed 's/.* //'; }
prompt() {
    local i=$1 p="Question $1:" k
    for k in $(seq "$i"); do p="$p and then item $k"; done
    echo "$p write code."
}
NREQ=6
maxt() { echo $((10 + $1 * 4)); }

# the references: each prompt alone, one process, the server's 16-token prefill pieces
for i in $(seq 0 $((NREQ - 1))); do
    "$MK_BIN" run "$M" --threads 1 --prefill-chunk 16 --json --chat --prompt "$(prompt "$i")" \
        --max-tokens "$(maxt "$i")" | jstr text > "$T/w$i"
    [ -s "$T/w$i" ] || fail "run gave no text for prompt $i"
done

for run in expert:2 pipeline:2 both:3 expert:3; do
    mode=${run%:*} np=${run#*:}
    LOG=$T/$mode$np.log
    "${MPI[@]}" -np "$np" "$MK_BIN" serve "$M" --host "$RANK0_HOST" --port 0 --threads 1 --alias "$ALIAS" \
        --mpi-mode "$mode" --parallel 4 --queue 16 --prefill-step 16 > "$T/out" 2> "$LOG" &
    JOB=$!
    wait_ready "$LOG" "$JOB"
    grep -q "4 slots" "$LOG" || { cat "$LOG" >&2; fail "$mode -np $np: rank 0 did not make 4 slots"; }
    s0=$(metric moekit_decode_steps_total)
    q0=$(metric moekit_decode_step_sequences_total)
    # the 6 requests from one curl, all sent at once (-Z): a background curl per client, each
    # building its body in subshells first, could reach the server several decode steps (~20 ms
    # each) apart under `ctest -j2`, a late long one then decoding alone at the end: 63 steps for
    # 114 sequences once, "not batched" (sent together: 34-49 steps, whichever 4 get slots first)
    ca=()
    for i in $(seq 0 $((NREQ - 1))); do
        [ "$i" -eq 0 ] || ca+=(--next)
        ca+=(-o "$T/c$i" "http://$RANK0_HOST:$PORT/v1/chat/completions" -d "{\"model\":\"$ALIAS\",\"messages\":[{\"role\":\"user\",\"content\":\"$(prompt "$i")\"}],\"max_tokens\":$(maxt "$i"),\"temperature\":0}")
    done
    curl -Z --parallel-immediate --no-progress-meter "${ca[@]}" || { rc=$?; cat "$LOG" >&2; fail "$mode -np $np: a client's request failed (curl exit $rc)"; }
    for i in $(seq 0 $((NREQ - 1))); do
        got=$(jstr content < "$T/c$i" || true)
        [ "$got" = "$(cat "$T/w$i")" ] || { cat "$T/c$i" >&2; cat "$LOG" >&2
            fail "$mode -np $np: client $i answered '$got', its single-process run '$(cat "$T/w$i")'"; }
    done
    s1=$(metric moekit_decode_steps_total)
    q1=$(metric moekit_decode_step_sequences_total)
    [ $((q1 - q0)) -ge 100 ] || fail "$mode -np $np: decode sequences $((q1 - q0)): expected the requests' tokens"
    [ $((s1 - s0)) -lt $(((q1 - q0) / 2)) ] ||
        fail "$mode -np $np: $((s1 - s0)) decode steps for $((q1 - q0)) sequences: not batched"
    echo "ok: serve -np $np --mpi-mode $mode --parallel 4: $NREQ concurrent greedy answers equal their single-process runs ($((s1 - s0)) decode steps for $((q1 - q0)) sequences)"

    R0=$(rank0_of "$ALIAS")
    [ -n "$R0" ] || fail "rank 0's process not found"
    kill -TERM "$R0"
    for _ in $(seq 300); do
        kill -0 "$JOB" 2> /dev/null || break
        sleep 0.1
    done
    kill -0 "$JOB" 2> /dev/null && fail "$mode -np $np: mpirun still running 30 s after SIGTERM to rank 0"
    set +e
    wait "$JOB"
    rc=$?
    set -e
    JOB=
    [ $rc -eq 0 ] || { cat "$LOG" >&2; fail "$mode -np $np: mpirun exited $rc after SIGTERM to rank 0"; }
    if pgrep -f -- "--alias $ALIAS" > /dev/null; then fail "$mode -np $np: a rank is left"; fi
done

# Faults in a batched step, mpirun told not to abort on a dead process, each job within `timeout 90`
# and no client answered 200. Step 100: the warm-up is step 1, the 4 prompts take a step each per
# 16-token piece, then batched decode steps of the 4 sequences of 300 tokens follow, so step 100 is
# one of those. Rank 0 names the rank, the layer, the step and its batch:
#   - expert: rank 1 killed at layer 1: rank 0's exchange deadline (--mpi-timeout 3);
#   - expert: rank 1 flips a byte of its layer-1 rows: rank 0's checksum;
#   - pipeline: rank 1 (the last stage) killed as it sends the batch's logits rows (layer 4, the
#     logits): rank 0's wait for them (one timeout per stage: 6 s).
fault() { # mode hook pattern-of-rank-0's-line what
    local mode=$1 hook=$2 pat=$3 what=$4
    # a log per job, as in the loop above: wait_ready may read it before the job's redirection
    # truncates it, and a shared one could still hold the previous job's "listening on" port
    local flog=$T/fault-${hook//:/-}.log
    set +e
    timeout 90 "${MPI[@]}" --mca orte_abort_on_non_zero_status 0 -np 2 "$MK_BIN" serve "$M" --host "$RANK0_HOST" \
        --port 0 --threads 1 --alias "$ALIAS" --parallel 4 --prefill-step 16 --mpi-mode "$mode" --mpi-timeout 3 \
        --mpi-test-fault "$hook" > "$T/out" 2> "$flog" &
    JOB=$!
    set -e
    wait_ready "$flog" "$JOB"
    local cp=() i
    for i in 0 1 2 3; do
        (curl -s -m 80 -o "$T/k$i" -w '%{http_code}' "http://$RANK0_HOST:$PORT/v1/chat/completions" -d "{\"model\":\"$ALIAS\",\"messages\":[{\"role\":\"user\",\"content\":\"$(prompt "$i")\"}],\"max_tokens\":300,\"temperature\":0,\"ignore_eos\":true}" > "$T/kc$i" || true) &
        cp+=($!)
    done
    wait "${cp[@]}"
    set +e
    wait "$JOB"
    local rc=$?
    set -e
    JOB=
    [ $rc -ne 124 ] || fail "$what: the job did not end within 90 s"
    [ $rc -ne 0 ] || { cat "$flog" >&2; fail "$what: mpirun exited 0"; }
    for i in 0 1 2 3; do
        [ "$(cat "$T/kc$i")" != 200 ] || { cat "$T/k$i" >&2; fail "$what: client $i got HTTP 200"; }
    done
    grep -q "rank 1: test hook: .* step 100" "$flog" || { cat "$flog" >&2; fail "$what: the hook did not fire"; }
    grep -q "rank 0 of 2: $pat" "$flog" || { cat "$flog" >&2; fail "$what: rank 0 did not say '$pat'"; }
    if pgrep -f -- "--alias $ALIAS" > /dev/null; then fail "$what: a rank is left"; fi
    echo "ok: $what in a batched step ends every rank (mpirun exit $rc), named by rank 0; no client got 200"
}
B="step 100 (a batch of [2-4] sequences, the first at position [0-9]*)"
fault expert kill:1:1:100 "layer 1, $B: the payload from rank 1 did not complete within 3 s" "expert: rank 1 killed"
fault expert flip:1:1:100 "layer 1, $B: the payload from rank 1 fails its checksum" "expert: a flipped byte"
fault pipeline kill:1:4:100 "layer 4 (the logits), $B: the payload from rank 1 did not complete within 6 s" \
    "pipeline: the last stage killed"
