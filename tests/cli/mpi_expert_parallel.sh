#!/usr/bin/env bash
# Expert parallelism over MPI (issue 18, include/moekit/dist.h), on one
# machine over OpenMPI's TCP transport (ob1 + btl tcp,self; see below for the network):
#   - `mpirun -np 2` and `-np 3` give logits bitwise equal to the
#     single-process run (no mpirun) on qwen3moe-a and deepseekv3-a, for one
#     prefill, chunked prefill and one-token chunks (the decode path), and
#     `run`'s greedy and seeded sampled tokens are the single-process ones;
#     the startup lines show each rank holding its own share of experts;
#     eval and streamed experts too;
#   - the budget, --mpi-balance and failure cases are in
#     mpi_expert_faults.sh (split so that each stays under 120 s).
# Where network namespaces can be made each rank runs in a namespace of its
# own (tests/cli/mpi_harness.bash); elsewhere the ranks share the loopback.
set -euo pipefail
: "${MK_BIN:?}" "${MK_BUILD:?}"
. "$(dirname "$0")/fixtures.bash"
need_fixtures
. "$(dirname "$0")/mpi_harness.bash"

for fx in qwen3moe-a deepseekv3-a; do
    M=$FX/$fx/bf16
    IDS=$(ids_of "$FX/$fx")
    [ "$(echo "$IDS" | tr ',' '\n' | wc -l)" -eq 32 ] || fail "$fx: could not read input_ids from reference.json"
    E=$("$MK_BIN" inspect "$M" 2>/dev/null | sed -n 's/^ *experts *\([0-9]*\) per layer.*/\1/p' | head -1)
    # chunk 512: one prefill (the experts' general path over many tokens); chunk 1: one token per
    # chunk (decode's path, the token's experts at once); -np 2 on the latter only, to keep it short
    for chunk in 512 1; do
        "$MK_BIN" logits "$M" --ids "$IDS" --out "$T/one.f32" --force --threads 1 --prefill-chunk $chunk
        nps="3"
        [ $chunk -eq 1 ] && nps="2 3"
        for np in $nps; do
            rm -f "$T/n.f32"
            "${MPI[@]}" -np $np "$MK_BIN" logits "$M" --ids "$IDS" --out "$T/n.f32" --threads 1 \
                --prefill-chunk $chunk 2> "$T/err" || { cat "$T/err" >&2; fail "$fx: -np $np exited non-zero"; }
            cmp -s "$T/one.f32" "$T/n.f32" || fail "$fx --prefill-chunk $chunk: -np $np logits differ from one process"
            # each rank held its own contiguous share: rank r of N owns [r*E/N, (r+1)*E/N)
            for ((r = 0; r < np; r++)); do
                grep -q "rank $r of $np: routed experts \[$((r * E / np)), $(((r + 1) * E / np))) of $E " "$T/err" ||
                    { cat "$T/err" >&2; fail "$fx -np $np: no startup line for rank $r's share"; }
            done
        done
    done
    echo "ok: $fx: -np 2 and -np 3 logits bitwise equal to one process (chunks 512 and 1)"
done

M=$FX/qwen3moe-a/bf16
# generation: greedy and seeded sampling, rank 0 samples, the tokens are one process's
for samp in "" "--temp 0.8 --seed 7"; do
    # shellcheck disable=SC2086
    "$MK_BIN" run "$M" --ids 395,78,308,45 --max-tokens 12 --threads 1 --json $samp > "$T/one.json"
    # shellcheck disable=SC2086
    "${MPI[@]}" -np 3 "$MK_BIN" run "$M" --ids 395,78,308,45 --max-tokens 12 --threads 1 --json $samp \
        > "$T/n.json" 2> "$T/err" || { cat "$T/err" >&2; fail "run -np 3 $samp exited non-zero"; }
    cmp -s "$T/one.json" "$T/n.json" || { cat "$T/one.json" "$T/n.json" >&2; fail "run -np 3 $samp: other tokens"; }
done
echo "ok: run -np 3: greedy and sampled tokens equal to one process"

# eval (windows from an empty state: the workers reset with rank 0) on the trained hybrid model
"$MK_BIN" eval "$TINYM/bf16" --text "$TINYM/devtext.txt" --tokens 512 --window 128 --json --threads 1 > "$T/one.json"
"${MPI[@]}" -np 3 "$MK_BIN" eval "$TINYM/bf16" --text "$TINYM/devtext.txt" --tokens 512 --window 128 --json \
    --threads 1 > "$T/n.json" 2> "$T/err" || { cat "$T/err" >&2; fail "eval -np 3 exited non-zero"; }
cmp -s "$T/one.json" "$T/n.json" || { cat "$T/one.json" "$T/n.json" >&2; fail "eval -np 3: another result"; }
# experts streamed from the checkpoint: each rank reads only its own
IDS=$(ids_of "$FX/qwen3moe-a")
"$MK_BIN" logits "$M" --ids "$IDS" --out "$T/one.f32" --force --threads 1
"${MPI[@]}" -np 2 "$MK_BIN" logits "$M" --ids "$IDS" --out "$T/n.f32" --force --threads 1 --stream-experts \
    2> "$T/err" || { cat "$T/err" >&2; fail "logits --stream-experts -np 2 exited non-zero"; }
cmp -s "$T/one.f32" "$T/n.f32" || fail "logits --stream-experts -np 2: logits differ from one process"
echo "ok: eval -np 3 and streamed experts -np 2 equal to one process"

