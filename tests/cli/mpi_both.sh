#!/usr/bin/env bash
# Both placements at once over MPI (issue 18, --mpi-mode both; src/dist/dist_mpi.c,
# tools/dist_cli.c): the ranks form pipeline stages of contiguous ranks and
# a stage's ranks split its routed experts. On one machine over OpenMPI's
# TCP transport, each rank in a network namespace of its own where they
# can be made (tests/cli/mpi_harness.bash):
#   - `mpirun -np 4` (2 stages x 2 ranks), `-np 3` (stages of 2 + 1) and
#     `-np 4 --pipeline-stages 3` (2 + 1 + 1) give logits bitwise equal to
#     the single-process run on qwen3moe-a and deepseekv3-a, for one
#     prefill (chunk 512) and one-token chunks (the decode path), also with
#     --pipeline-layers leaving a stage no MoE layer, and with experts
#     streamed (each rank reads its own); each rank's startup
#     line shows its stage, its ranks, its layers and its share of the
#     stage's experts; `run`'s seeded sampled tokens, eval on the hybrid
#     model and --mpi-balance (experts split by routing frequency within a
#     stage) are one process's;
#   - --memory-budget counts only the stage's layers and this rank's share of
#     their experts: a budget under which the same stage holding all its
#     experts (--mpi-mode pipeline -np 2) streams keeps rank 0 resident;
#   - a byte flipped in an exchange within a stage and in a hidden state
#     sent to the next stage is caught by the receivers' checksum, naming
#     the sender, layer and step, and no logits are written; a rank killed
#     mid-generation (mpirun told not to abort on a dead process) ends every
#     rank within `timeout 60`, named by its stage peer's deadline, or, for
#     a stage of one rank, by rank 0's wait for the logits;
#   - shapes that cannot be made are refused with exit 2 naming what is
#     needed: more stages than ranks, more stages than layers, and
#     --pipeline-stages without --mpi-mode both.
set -euo pipefail
: "${MK_BIN:?}" "${MK_BUILD:?}"
. "$(dirname "$0")/fixtures.bash"
need_fixtures
. "$(dirname "$0")/mpi_harness.bash"
B=(--mpi-mode both)

# --pipeline-stages without both: refused before MPI starts
set +e
"$MK_BIN" logits "$FX/qwen3moe-a/bf16" --ids 1,2 --out "$T/n.f32" --pipeline-stages 2 > "$T/out" 2> "$T/err"
rc=$?
set -e
[ $rc -eq 2 ] || { cat "$T/err" >&2; fail "--pipeline-stages without both: exit $rc, expected 2"; }
grep -q -- "--pipeline-stages goes with --mpi-mode both" "$T/err" || { cat "$T/err" >&2; fail "--pipeline-stages: message"; }

# equality: (fixture, chunk, np, extra flags, the startup lines expected, one per rank in rank order:
# "stage/stages/ranks:A-B or rank:A/first-last/lo-hi", lo-hi "-" for a stage without MoE layers)
check() {
    local fx=$1 chunk=$2 np=$3 extra=$4 want=$5
    local M=$FX/$fx/bf16 IDS
    IDS=$(ids_of "$FX/$fx")
    "$MK_BIN" logits "$M" --ids "$IDS" --out "$T/one.f32" --force --threads 1 --prefill-chunk "$chunk" 2> /dev/null
    rm -f "$T/n.f32"
    # shellcheck disable=SC2086
    "${MPI[@]}" -np "$np" "$MK_BIN" logits "$M" --ids "$IDS" --out "$T/n.f32" --threads 1 --prefill-chunk "$chunk" \
        "${B[@]}" $extra 2> "$T/err" || { cat "$T/err" >&2; fail "$fx chunk $chunk -np $np $extra: exited non-zero"; }
    cmp -s "$T/one.f32" "$T/n.f32" || fail "$fx --prefill-chunk $chunk -np $np $extra: logits differ from one process"
    local r=0 s ns rk ly ex line
    for w in $want; do
        IFS=/ read -r s ns rk ly ex <<< "$w"
        line="rank $r of $np: pipeline stage $s of $ns (${rk/:/ }): layers \\[${ly%-*}, ${ly#*-}) of 3, "
        if [ "$ex" = - ]; then
            line+="no routed experts"
        else
            line+="routed experts \\[${ex%-*}, ${ex#*-}) of 8 in each of its MoE layers"
        fi
        grep -q "$line" "$T/err" || { cat "$T/err" >&2; fail "$fx -np $np $extra: no startup line '$line'"; }
        r=$((r + 1))
    done
}
# the fixtures have 3 layers and 8 routed experts per MoE layer (deepseekv3-a's layer 0 is dense).
# Stages balance weight bytes per rank: 2 x 2 cuts at half the bytes, 2 + 1 at two thirds.
check qwen3moe-a 512 4 "" \
    "0/2/ranks:0-1/0-1/0-4 0/2/ranks:0-1/0-1/4-8 1/2/ranks:2-3/1-3/0-4 1/2/ranks:2-3/1-3/4-8"
check qwen3moe-a 1 3 "" "0/2/ranks:0-1/0-2/0-4 0/2/ranks:0-1/0-2/4-8 1/2/rank:2/2-3/0-8"
check qwen3moe-a 512 3 "--stream-experts" "0/2/ranks:0-1/0-2/0-4 0/2/ranks:0-1/0-2/4-8 1/2/rank:2/2-3/0-8"
check qwen3moe-a 512 4 "--pipeline-stages 3" \
    "0/3/ranks:0-1/0-1/0-4 0/3/ranks:0-1/0-1/4-8 1/3/rank:2/1-2/0-8 2/3/rank:3/2-3/0-8"
check deepseekv3-a 1 4 "" \
    "0/2/ranks:0-1/0-2/0-4 0/2/ranks:0-1/0-2/4-8 1/2/ranks:2-3/2-3/0-4 1/2/ranks:2-3/2-3/4-8"
check deepseekv3-a 512 3 "--pipeline-layers 0-0,1-2" "0/2/ranks:0-1/0-1/- 0/2/ranks:0-1/0-1/- 1/2/rank:2/1-3/0-8"
echo "ok: 2x2, 2+1 and 2+1+1 stages give logits bitwise equal to one process (chunks 512 and 1, both fixtures, streamed experts)"

M=$FX/qwen3moe-a/bf16
"$MK_BIN" run "$M" --ids 395,78,308,45 --max-tokens 12 --threads 1 --json --temp 0.8 --seed 7 > "$T/one.json"
"${MPI[@]}" -np 4 "$MK_BIN" run "$M" --ids 395,78,308,45 --max-tokens 12 --threads 1 --json --temp 0.8 --seed 7 \
    "${B[@]}" > "$T/n.json" 2> "$T/err" || { cat "$T/err" >&2; fail "run -np 4 both exited non-zero"; }
cmp -s "$T/one.json" "$T/n.json" || { cat "$T/one.json" "$T/n.json" >&2; fail "run -np 4 both: other tokens"; }
"$MK_BIN" eval "$TINYM/bf16" --text "$TINYM/devtext.txt" --tokens 512 --window 128 --json --threads 1 > "$T/one.json"
"${MPI[@]}" -np 3 "$MK_BIN" eval "$TINYM/bf16" --text "$TINYM/devtext.txt" --tokens 512 --window 128 --json \
    --threads 1 "${B[@]}" > "$T/n.json" 2> "$T/err" || { cat "$T/err" >&2; fail "eval -np 3 both exited non-zero"; }
cmp -s "$T/one.json" "$T/n.json" || { cat "$T/one.json" "$T/n.json" >&2; fail "eval -np 3 both: another result"; }
echo "ok: run (seeded sampling, -np 4) and eval (hybrid model, -np 3) under both placements equal one process"

# experts split by routing frequency within each stage (tiny model: 4 layers of 16 experts)
"$MK_BIN" profile "$TINYM/bf16" --text "$TINYM/devtext.txt" --tokens 256 --threads 1 --quiet --out "$T/p.json" \
    > /dev/null
BIDS=$(seq -s, 1 40)
"$MK_BIN" logits "$TINYM/bf16" --ids "$BIDS" --out "$T/one.f32" --force --threads 1
"${MPI[@]}" -np 4 "$MK_BIN" logits "$TINYM/bf16" --ids "$BIDS" --out "$T/n.f32" --force --threads 1 "${B[@]}" \
    --mpi-balance "$T/p.json" 2> "$T/err" || { cat "$T/err" >&2; fail "--mpi-balance -np 4 both exited non-zero"; }
# (stage 0, layers 0 and 1, is cut unevenly by the profile; stage 1 happens to be cut at 8 in both layers)
grep -q "rank 1 of 4: pipeline stage 0 of 2 (ranks 0-1): layers \[0, [0-9]) of 4, [0-9]* of the stage's [0-9]* routed experts (contiguous per layer, balanced by routing frequency)" \
    "$T/err" || { cat "$T/err" >&2; fail "--mpi-balance both: no balanced share line for rank 1"; }
cmp -s "$T/one.f32" "$T/n.f32" || fail "--mpi-balance -np 4 both: logits differ from one process"
echo "ok: experts balanced by routing frequency within the stages, -np 4 equal to one process"

# --memory-budget: 102900000 bytes is below rank 0's stage (layer 0: 0.63 MiB non-expert with the
# embedding, 1.5 MiB of experts) + the 96 MiB overhead, so a pipeline stage holding all of them streams,
# and above it with half the experts (rank 0 of 2 x 2: resident); it also holds stage 1's least budget
# (both layers' non-expert weights, its 2 experts per token, and, counted since 2026-12-04, the 70 KB
# of a 32-row pipeline message and, in both mode, the 139 KB of the expert exchange; 102700000
# missed them by 8 KB and 148 KB)
IDS=$(ids_of "$FX/qwen3moe-a")
"$MK_BIN" logits "$M" --ids "$IDS" --out "$T/one.f32" --force --threads 1
"${MPI[@]}" -np 2 "$MK_BIN" logits "$M" --ids "$IDS" --out "$T/n.f32" --force --threads 1 --memory-budget 102900000 \
    --mpi-mode pipeline 2> "$T/err" || { cat "$T/err" >&2; fail "--memory-budget -np 2 pipeline exited non-zero"; }
grep -q "rank 0 of 2: pipeline stage 0: layers \[0, 1) of 3" "$T/err" || { cat "$T/err" >&2; fail "pipeline -np 2: another stage 0"; }
grep -q "experts streamed" "$T/err" || { cat "$T/err" >&2; fail "--memory-budget -np 2 pipeline: rank 0 did not stream"; }
"${MPI[@]}" -np 4 "$MK_BIN" logits "$M" --ids "$IDS" --out "$T/n.f32" --force --threads 1 --memory-budget 102900000 \
    "${B[@]}" 2> "$T/err" || { cat "$T/err" >&2; fail "--memory-budget -np 4 both exited non-zero"; }
grep -q "rank 0 of 4: pipeline stage 0 of 2 (ranks 0-1): layers \[0, 1) of 3" "$T/err" ||
    { cat "$T/err" >&2; fail "both -np 4: another stage 0"; }
grep -q "model resident" "$T/err" || { cat "$T/err" >&2; fail "--memory-budget -np 4 both: rank 0 not resident"; }
cmp -s "$T/one.f32" "$T/n.f32" || fail "--memory-budget -np 4 both: logits differ from one process"
echo "ok: --memory-budget counts the stage's layers and this rank's share of their experts"

# corruption within a stage: rank 1 flips a byte of its layer-0 exchange payload (rank 0 catches it);
# between stages: rank 0 flips a byte of the hidden state it sends into layer 1 (ranks 2 and 3 catch it;
# the first to abort the job names it)
for f in "flip:1:0:1 rank 0 of 4: layer 0, step 1 (position 0): the payload from rank 1 fails its checksum" \
    "flip:0:1:1 rank [23] of 4: layer 1, step 1 (position 0): the payload from rank 0 fails its checksum"; do
    rm -f "$T/n.f32"
    set +e
    timeout 60 "${MPI[@]}" -np 4 "$MK_BIN" logits "$M" --ids "$IDS" --out "$T/n.f32" --threads 1 "${B[@]}" \
        --mpi-test-fault "${f%% *}" > "$T/out" 2> "$T/err"
    rc=$?
    set -e
    [ $rc -ne 124 ] || fail "${f%% *}: the job did not end within 60 s"
    [ $rc -ne 0 ] || fail "${f%% *}: exited 0"
    grep -q "${f#* }" "$T/err" || { cat "$T/err" >&2; fail "${f%% *}: no message '${f#* }'"; }
    [ ! -e "$T/n.f32" ] || fail "${f%% *}: logits were written"
done
echo "ok: a flipped byte in an exchange within a stage and in a hidden state between stages is caught"

# a rank killed mid-generation (step 6: the 5th decoded token), mpirun told not to abort on a dead
# process: in 2 x 2 rank 3 at its stage's exchange of layer 2, named by its peer rank 2 (--mpi-timeout),
# and rank 1 at layer 0, named by rank 0 before stage 1 gives up waiting for its hidden state (2
# timeouts: a stage of two ranks); in 2 + 1 the last stage's only rank, named by rank 0's wait for the
# logits (2 + 1 timeouts)
for k in "4 kill:3:2:6 rank 2 of 4: layer 2, step 6 (position 8): the payload from rank 3 did not complete within 1 s" \
    "4 kill:1:0:6 rank 0 of 4: layer 0, step 6 (position 8): the payload from rank 1 did not complete within 1 s" \
    "3 kill:2:2:6 rank 0 of 3: layer 3 (the logits), step 6 (position 8): the payload from rank 2 did not complete within 3 s"; do
    read -r np hook msg <<< "$k"
    set +e
    timeout 60 "${MPI[@]}" --mca orte_abort_on_non_zero_status 0 -np "$np" "$MK_BIN" run "$M" --ids 395,78,308,45 \
        --max-tokens 12 --threads 1 --json "${B[@]}" --mpi-timeout 1 --mpi-test-fault "$hook" > "$T/out" 2> "$T/err"
    rc=$?
    set -e
    [ $rc -ne 124 ] || fail "$hook: the job did not end within 60 s"
    [ $rc -ne 0 ] || fail "$hook: exited 0"
    h=${hook#kill:}
    grep -q "rank ${h%%:*}: test hook: killed at layer $(echo "$h" | cut -d: -f2), step 6" "$T/err" ||
        { cat "$T/err" >&2; fail "$hook: the hook did not fire"; }
    grep -q "$msg" "$T/err" || { cat "$T/err" >&2; fail "$hook: no message '$msg'"; }
done
echo "ok: a rank killed mid-generation ends every rank within 60 s, named (2 x 2: either stage; 2 + 1)"

# shapes that cannot be made: 3 stages of 2 ranks (refused before MPI starts), 4 stages of 3 layers
for s in "2 3 needs at least 3 MPI ranks (one or more per stage), found 2" \
    "4 4 a pipeline of 4 stages over 3 layers: use at most 3 --pipeline-stages"; do
    read -r np ns msg <<< "$s"
    set +e
    timeout 60 "${MPI[@]}" -np "$np" "$MK_BIN" logits "$M" --ids 1,2 --out "$T/n.f32" --force --threads 1 "${B[@]}" \
        --pipeline-stages "$ns" > "$T/out" 2> "$T/err"
    rc=$?
    set -e
    [ $rc -eq 2 ] || { cat "$T/err" >&2; fail "-np $np --pipeline-stages $ns: exit $rc, expected 2"; }
    grep -q "$msg" "$T/err" || { cat "$T/err" >&2; fail "-np $np --pipeline-stages $ns: message"; }
done
echo "ok: more stages than ranks or layers are refused (exit 2), naming what is needed"
