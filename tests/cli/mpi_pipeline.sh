#!/usr/bin/env bash
# Pipeline parallelism over MPI (issue 18, --mpi-mode pipeline;
# include/moekit/layer_pipe.h, src/dist/dist_mpi.c), on one machine over
# OpenMPI's TCP transport, each rank in a network namespace of its own
# where they can be made (tests/cli/mpi_harness.bash):
#   - `mpirun -np 2` and `-np 3` give logits bitwise equal to the
#     single-process run on qwen3moe-a and deepseekv3-a, for one prefill
#     (chunk 512) and one-token chunks (the decode path); each rank's
#     startup line shows its own layer range (balanced by weight bytes, or
#     --pipeline-layers); `run`'s seeded sampled tokens and eval's result on
#     the hybrid model (DeltaNet state per stage) are one process's;
#   - --memory-budget counts only a stage's layers;
#   - a byte flipped in a hidden state (test hook) is caught by the next
#     stage's checksum, naming the sender, layer and step, and no logits are
#     written; a stalled stage and a killed stage (mpirun told not to abort)
#     are named by the next stage's deadline within `timeout 60`;
#   - a rank opening a different model is refused at setup.
# (Both placements at once, --mpi-mode both: tests/cli/mpi_both.sh.)
set -euo pipefail
: "${MK_BIN:?}" "${MK_BUILD:?}"
. "$(dirname "$0")/fixtures.bash"
need_fixtures
. "$(dirname "$0")/mpi_harness.bash"
P=(--mpi-mode pipeline)

# equality: (fixture, chunk, np, extra flags, the stage lines expected: "first last" per rank)
check() {
    local fx=$1 chunk=$2 np=$3 extra=$4 want=$5
    local M=$FX/$fx/bf16 IDS
    IDS=$(ids_of "$FX/$fx")
    "$MK_BIN" logits "$M" --ids "$IDS" --out "$T/one.f32" --force --threads 1 --prefill-chunk "$chunk" 2> /dev/null
    rm -f "$T/n.f32"
    # shellcheck disable=SC2086
    "${MPI[@]}" -np "$np" "$MK_BIN" logits "$M" --ids "$IDS" --out "$T/n.f32" --threads 1 --prefill-chunk "$chunk" \
        "${P[@]}" $extra 2> "$T/err" || { cat "$T/err" >&2; fail "$fx chunk $chunk -np $np: exited non-zero"; }
    cmp -s "$T/one.f32" "$T/n.f32" || fail "$fx --prefill-chunk $chunk -np $np $extra: logits differ from one process"
    local r=0 a b
    for ab in $want; do
        a=${ab%:*} b=${ab#*:}
        grep -q "rank $r of $np: pipeline stage $r: layers \[$a, $b) of 3: " "$T/err" ||
            { cat "$T/err" >&2; fail "$fx -np $np: no startup line for rank $r's layers [$a, $b)"; }
        r=$((r + 1))
    done
}
# the fixtures have 3 layers: -np 3 one each; -np 2 balanced by bytes (qwen3moe-a's layer 0 holds the
# embedding-free share of a third: [0, 1) | [1, 3)), or as given
check qwen3moe-a 512 3 "" "0:1 1:2 2:3"
check qwen3moe-a 1 2 "" "0:1 1:3"
check deepseekv3-a 512 2 "--pipeline-layers 0-1,2-2" "0:2 2:3"
check deepseekv3-a 1 3 "" "0:1 1:2 2:3"
echo "ok: -np 2 and -np 3 pipelines give logits bitwise equal to one process (chunks 512 and 1, both fixtures)"

M=$FX/qwen3moe-a/bf16
"$MK_BIN" run "$M" --ids 395,78,308,45 --max-tokens 12 --threads 1 --json --temp 0.8 --seed 7 > "$T/one.json"
"${MPI[@]}" -np 3 "$MK_BIN" run "$M" --ids 395,78,308,45 --max-tokens 12 --threads 1 --json --temp 0.8 --seed 7 \
    "${P[@]}" > "$T/n.json" 2> "$T/err" || { cat "$T/err" >&2; fail "run -np 3 pipeline exited non-zero"; }
cmp -s "$T/one.json" "$T/n.json" || { cat "$T/one.json" "$T/n.json" >&2; fail "run -np 3 pipeline: other tokens"; }
"$MK_BIN" eval "$TINYM/bf16" --text "$TINYM/devtext.txt" --tokens 512 --window 128 --json --threads 1 > "$T/one.json"
"${MPI[@]}" -np 3 "$MK_BIN" eval "$TINYM/bf16" --text "$TINYM/devtext.txt" --tokens 512 --window 128 --json \
    --threads 1 "${P[@]}" > "$T/n.json" 2> "$T/err" || { cat "$T/err" >&2; fail "eval -np 3 pipeline exited non-zero"; }
cmp -s "$T/one.json" "$T/n.json" || { cat "$T/one.json" "$T/n.json" >&2; fail "eval -np 3 pipeline: another result"; }
echo "ok: run (seeded sampling) and eval (hybrid model) under a 3-stage pipeline equal one process"

# --memory-budget counts a stage's layers: 101M is below qwen3moe-a's 6.1 MiB of weights + the 96 MiB
# overhead (one process streams), above a stage's 2 MiB (resident)
IDS=$(ids_of "$FX/qwen3moe-a")
"$MK_BIN" logits "$M" --ids "$IDS" --out "$T/one.f32" --force --threads 1 --memory-budget 101M 2> "$T/err"
grep -q "experts streamed" "$T/err" || { cat "$T/err" >&2; fail "--memory-budget 101M: one process did not stream"; }
"${MPI[@]}" -np 3 "$MK_BIN" logits "$M" --ids "$IDS" --out "$T/n.f32" --force --threads 1 --memory-budget 101M \
    "${P[@]}" 2> "$T/err" || { cat "$T/err" >&2; fail "--memory-budget 101M -np 3 pipeline exited non-zero"; }
grep -q "model resident" "$T/err" || { cat "$T/err" >&2; fail "--memory-budget 101M -np 3 pipeline: rank 0 not resident"; }
cmp -s "$T/one.f32" "$T/n.f32" || fail "--memory-budget 101M -np 3 pipeline: logits differ from one process"
echo "ok: --memory-budget counts a stage's layers"

# corruption: rank 1 flips a byte of the hidden state it sends into layer 2
rm -f "$T/n.f32"
set +e
timeout 60 "${MPI[@]}" -np 3 "$MK_BIN" logits "$M" --ids "$IDS" --out "$T/n.f32" --threads 1 "${P[@]}" \
    --mpi-test-fault flip:1:2:1 > "$T/out" 2> "$T/err"
rc=$?
set -e
[ $rc -ne 124 ] || fail "flip: the job did not end within 60 s"
[ $rc -ne 0 ] || fail "flip: exited 0"
grep -q "rank 2 of 3: layer 2, step 1 (position 0): the payload from rank 1 fails its checksum" "$T/err" ||
    { cat "$T/err" >&2; fail "flip: no checksum message naming rank 1, layer 2, step 1"; }
[ ! -e "$T/n.f32" ] || fail "flip: logits were written"
echo "ok: a flipped byte in a hidden state is caught by the checksum (exit $rc)"

# a stalled stage: the next stage's deadline (--mpi-timeout x its place) names it
set +e
timeout 60 "${MPI[@]}" -np 3 "$MK_BIN" logits "$M" --ids "$IDS" --out "$T/n.f32" --threads 1 "${P[@]}" \
    --mpi-timeout 1 --mpi-test-fault stall:1:2:1 > "$T/out" 2> "$T/err"
rc=$?
set -e
[ $rc -ne 124 ] || fail "stall: the job did not end within 60 s"
[ $rc -ne 0 ] || fail "stall: exited 0"
grep -q "layer 2, step 1 (position 0): the payload from rank 1 did not complete within 2 s" "$T/err" ||
    { cat "$T/err" >&2; fail "stall: no deadline message naming rank 1, layer 2, step 1"; }
echo "ok: a stalled stage is named by the deadline (exit $rc)"

# a stage killed mid-generation (step 6: the 5th decoded token), mpirun told not to abort on a dead
# process: the survivors' deadline ends the job
set +e
timeout 60 "${MPI[@]}" --mca orte_abort_on_non_zero_status 0 -np 3 "$MK_BIN" run "$M" --ids 395,78,308,45 \
    --max-tokens 12 --threads 1 --json "${P[@]}" --mpi-timeout 1 --mpi-test-fault kill:1:2:6 > "$T/out" 2> "$T/err"
rc=$?
set -e
[ $rc -ne 124 ] || fail "kill: the job did not end within 60 s"
[ $rc -ne 0 ] || fail "kill: exited 0"
grep -q "layer 2, step 6 (position 8): the payload from rank 1 did not complete within 2 s" "$T/err" ||
    { cat "$T/err" >&2; fail "kill: no message naming rank 1, layer 2, step 6"; }
echo "ok: a stage killed mid-generation ends every rank within 60 s, named"

# a rank with another model: refused at setup
set +e
timeout 60 "${MPI[@]}" -np 1 "$MK_BIN" logits "$M" --ids 1,2 --out "$T/n.f32" --force --threads 1 "${P[@]}" : \
    -np 1 "$MK_BIN" logits "$FX/deepseekv3-a/bf16" --ids 1,2 --out "$T/n.f32" --force --threads 1 "${P[@]}" \
    > "$T/out" 2> "$T/err"
rc=$?
set -e
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "another model: exit $rc"
grep -q "rank 1 of 2: setup: rank 0 opened a different model" "$T/err" ||
    { cat "$T/err" >&2; fail "another model: not refused at setup"; }
echo "ok: a rank with another model is refused at setup"
