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
#   - the budget, corruption, killed-rank and refused-shape cases are in
#     mpi_both_faults.sh (split so that each stays under 120 s).
set -euo pipefail
: "${MK_BIN:?}" "${MK_BUILD:?}"
. "$(dirname "$0")/fixtures.bash"
need_fixtures
. "$(dirname "$0")/mpi_harness.bash"
B=(--mpi-mode both)

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

