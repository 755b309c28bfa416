#!/usr/bin/env bash
# Expert parallelism over MPI (issue 18, include/moekit/dist.h), the budget,
# balance and failure half (the equality half is mpi_expert_parallel.sh;
# split so that each stays under the suite's 120 s per test in the sanitizer
# build). On one machine over OpenMPI's TCP transport (ob1 + btl tcp,self),
# each rank in a network namespace of its own where they can be made
# (tests/cli/mpi_harness.bash), elsewhere over the shared loopback:
#   - --memory-budget counts only a rank's share of the experts and its
#     exchange buffers; experts split by routing frequency (--mpi-balance)
#     give logits bitwise equal to one process;
#   - a byte flipped in a payload (test hook) is caught by the checksum,
#     naming the sender, layer and step, and no logits are written;
#   - a stalled rank is named by the others' deadline (--mpi-timeout);
#   - a rank killed mid-generation ends every rank within 60 s (`timeout 60`
#     would fail the test): by mpirun's own failure handling (naming the
#     rank), and, with mpirun told not to abort on a dead process, by the
#     survivors' deadline naming the rank, layer and step;
#   - a rank opening a different model is refused at setup; a bad token id
#     is refused by rank 0 before any step reaches the other ranks.
set -euo pipefail
: "${MK_BIN:?}" "${MK_BUILD:?}"
. "$(dirname "$0")/fixtures.bash"
need_fixtures
. "$(dirname "$0")/mpi_harness.bash"

M=$FX/qwen3moe-a/bf16
IDS=$(ids_of "$FX/qwen3moe-a")
# --memory-budget counts a rank's share of the experts: 101M is below qwen3moe-a's 1.6 MiB of
# non-expert weights + 4.5 MiB of experts + the 96 MiB overhead (one process streams), above it
# with half the experts (-np 2: resident)
"$MK_BIN" logits "$M" --ids "$IDS" --out "$T/one.f32" --force --threads 1 --memory-budget 101M 2> "$T/err"
grep -q "experts streamed" "$T/err" || { cat "$T/err" >&2; fail "--memory-budget 101M: one process did not stream"; }
"${MPI[@]}" -np 2 "$MK_BIN" logits "$M" --ids "$IDS" --out "$T/n.f32" --force --threads 1 --memory-budget 101M \
    2> "$T/err" || { cat "$T/err" >&2; fail "--memory-budget 101M -np 2 exited non-zero"; }
grep -q "model resident" "$T/err" || { cat "$T/err" >&2; fail "--memory-budget 101M -np 2: rank 0 not resident"; }
cmp -s "$T/one.f32" "$T/n.f32" || fail "--memory-budget 101M -np 2: logits differ from one process"
echo "ok: --memory-budget counts a rank's share of the experts"
# ... and the rank's exchange buffers: the least budget -np 2 names is one process's plus exactly
# 2 x (a forward's rows x k x H floats + a 4 KiB header), a forward's rows being min(prefill chunk,
# context): the 32 ids here (engine_cli.c dist_bytes; the same non-expert weights and context)
least() { grep -o 'need at least [0-9]* bytes' "$1" | head -1 | sed 's/[^0-9]//g'; }
"$MK_BIN" logits "$M" --ids "$IDS" --out "$T/x.f32" --force --threads 1 --memory-budget 1M 2> "$T/e1" &&
    fail "--memory-budget 1M: not refused"
"${MPI[@]}" -np 2 "$MK_BIN" logits "$M" --ids "$IDS" --out "$T/x.f32" --force --threads 1 --memory-budget 1M \
    2> "$T/e2" && fail "--memory-budget 1M -np 2: not refused"
l1=$(least "$T/e1") l2=$(least "$T/e2")
[ -n "$l1" ] && [ -n "$l2" ] || { cat "$T/e1" "$T/e2" >&2; fail "no least budget named"; }
H=$(sed -n 's/.*"hidden_size": *\([0-9]*\).*/\1/p' "$M/config.json")
K=$(sed -n 's/.*"num_experts_per_tok": *\([0-9]*\).*/\1/p' "$M/config.json")
want=$((2 * (32 * K * H * 4 + 4096)))
[ $((l2 - l1)) -eq "$want" ] || fail "least budget -np 2 $l2 - one process $l1 = $((l2 - l1)), want the exchange's $want"
echo "ok: --memory-budget counts the rank's exchange buffers ($want bytes here)"

# experts split by routing frequency (--mpi-balance, `moekit profile`'s routing statistics)
"$MK_BIN" profile "$TINYM/bf16" --text "$TINYM/devtext.txt" --tokens 256 --threads 1 --quiet --out "$T/p.json" \
    > /dev/null
BIDS=$(seq -s, 1 40)
"$MK_BIN" logits "$TINYM/bf16" --ids "$BIDS" --out "$T/one.f32" --force --threads 1
"${MPI[@]}" -np 3 "$MK_BIN" logits "$TINYM/bf16" --ids "$BIDS" --out "$T/n.f32" --force --threads 1 \
    --mpi-balance "$T/p.json" 2> "$T/err" || { cat "$T/err" >&2; fail "--mpi-balance -np 3 exited non-zero"; }
grep -q "rank 2 of 3: [0-9]* of the 64 routed experts (contiguous per layer, balanced by routing frequency)" \
    "$T/err" || { cat "$T/err" >&2; fail "--mpi-balance: no balanced share line"; }
cmp -s "$T/one.f32" "$T/n.f32" || fail "--mpi-balance -np 3: logits differ from one process"
echo "ok: experts balanced by routing frequency, -np 3 equal to one process"

# corruption: rank 1 flips a byte of its layer-1 payload after checksumming it
rm -f "$T/n.f32"
set +e
timeout 60 "${MPI[@]}" -np 3 "$MK_BIN" logits "$M" --ids "$IDS" --out "$T/n.f32" --threads 1 \
    --mpi-test-fault flip:1:1:1 > "$T/out" 2> "$T/err"
rc=$?
set -e
[ $rc -ne 124 ] || fail "flip: the job did not end within 60 s"
[ $rc -ne 0 ] || fail "flip: exited 0"
grep -q "layer 1, step 1 (position 0): the payload from rank 1 fails its checksum" "$T/err" ||
    { cat "$T/err" >&2; fail "flip: no checksum message naming rank 1, layer 1, step 1"; }
[ ! -e "$T/n.f32" ] || fail "flip: logits were written"
echo "ok: a flipped byte is caught by the checksum (exit $rc)"

# a stalled rank: the others' deadline names it
set +e
timeout 60 "${MPI[@]}" -np 3 "$MK_BIN" logits "$M" --ids "$IDS" --out "$T/n.f32" --threads 1 \
    --mpi-timeout 2 --mpi-test-fault stall:2:2:1 > "$T/out" 2> "$T/err"
rc=$?
set -e
[ $rc -ne 124 ] || fail "stall: the job did not end within 60 s"
[ $rc -ne 0 ] || fail "stall: exited 0"
grep -q "layer 2, step 1 (position 0): the payload from rank 2 did not complete within 2 s" "$T/err" ||
    { cat "$T/err" >&2; fail "stall: no deadline message naming rank 2, layer 2, step 1"; }
echo "ok: a stalled rank is named by the deadline (exit $rc)"

# a rank killed mid-generation (step 6: the 5th decoded token)
set +e
timeout 60 "${MPI[@]}" -np 3 "$MK_BIN" run "$M" --ids 395,78,308,45 --max-tokens 12 --threads 1 --json \
    --mpi-test-fault kill:1:1:6 > "$T/out" 2> "$T/err"
rc=$?
set -e
[ $rc -ne 124 ] || fail "kill: the job did not end within 60 s"
[ $rc -ne 0 ] || fail "kill: exited 0"
grep -q "rank 1 .*exited on signal 9" "$T/err" || { cat "$T/err" >&2; fail "kill: rank 1 not named"; }
# the same with mpirun not aborting on a dead process: the survivors' deadline ends the job
set +e
timeout 60 "${MPI[@]}" --mca orte_abort_on_non_zero_status 0 -np 3 "$MK_BIN" run "$M" --ids 395,78,308,45 \
    --max-tokens 12 --threads 1 --json --mpi-timeout 3 --mpi-test-fault kill:1:1:6 > "$T/out" 2> "$T/err"
rc=$?
set -e
[ $rc -ne 124 ] || fail "kill (no abort by mpirun): the job did not end within 60 s"
[ $rc -ne 0 ] || fail "kill (no abort by mpirun): exited 0"
grep -q "layer 1, step 6 (position 8): the payload from rank 1 did not complete within 3 s" "$T/err" ||
    { cat "$T/err" >&2; fail "kill (no abort by mpirun): no message naming rank 1, layer 1, step 6"; }
echo "ok: a rank killed mid-generation ends every rank within 60 s, named"

# a rank with another model: refused at setup
set +e
timeout 60 "${MPI[@]}" -np 1 "$MK_BIN" logits "$M" --ids 1,2 --out "$T/n.f32" --force --threads 1 : \
    -np 1 "$MK_BIN" logits "$FX/deepseekv3-a/bf16" --ids 1,2 --out "$T/n.f32" --force --threads 1 \
    > "$T/out" 2> "$T/err"
rc=$?
set -e
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "another model: exit $rc"
grep -q "rank 1 of 2: setup: rank 0 opened a different model" "$T/err" ||
    { cat "$T/err" >&2; fail "another model: not refused at setup"; }
echo "ok: a rank with another model is refused at setup"

# a bad id: rank 0 refuses it (exit 2) and no step reaches the workers
set +e
timeout 60 "${MPI[@]}" -np 2 "$MK_BIN" logits "$M" --ids 1,99999 --out "$T/n.f32" --force --threads 1 \
    > "$T/out" 2> "$T/err"
rc=$?
set -e
[ $rc -eq 2 ] || { cat "$T/err" >&2; fail "bad id: exit $rc, expected 2"; }
grep -q "token id 99999 at position 1 is outside the vocabulary" "$T/err" || { cat "$T/err" >&2; fail "bad id: message"; }
if grep -q "step" "$T/err"; then cat "$T/err" >&2; fail "bad id: a step reached the workers"; fi
echo "ok: a bad id is refused by rank 0 alone"
