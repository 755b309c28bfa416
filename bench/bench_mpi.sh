#!/usr/bin/env bash
# MPI scale-out (issue 18): decode tok/s with 1, 2 and 3 ranks on one host
# for a synthetic MoE model, the exchange's share of decode time, the
# per-layer payload bytes, and a projection for 2-8 hosts of a
# DeepSeek-V3 / Kimi-K2-shaped model at 10, 25 and 100 Gb/s.
#   usage: bench/bench_mpi.sh [BUILD=build] [MODEL_DIR=/tmp/mk-bench-mpi] [TOKENS=32] [LAYERS=4]
# MODEL_DIR is made with `moekit synth` (qwen3_moe preset 30b-a3b cut to
# LAYERS layers and a 32768-token vocabulary, compressed-tensors INT4: about
# 0.35 GB a layer) unless it already holds that checkpoint. Every run is
# `moekit run --stats` (prompt of 16 ids, TOKENS tokens greedy) under
# mpirun over TCP on loopback (the transport of the tests); the ranks share
# the host's cores, each with nproc/N threads, so the N-rank rows measure
# the exchange's cost, not a speed-up (that needs N hosts). Rank 0's
# --stats counts the time inside the exchange of one-token steps (waiting
# for peers included) and the bytes it sent per exchange.
#
# Projection (awk, below): per decode token, expert mode does one exchange
# per MoE layer, in which each host sends its share of the token's k expert
# outputs (k/N rows of H float32 on average) to each of the N-1 others:
# t_layer = a + (N-1)/N * k*H*4 * 8 / link, with a the per-exchange
# latency measured here at -np 2 (software + loopback; an upper bound for
# a fast NIC's); pipeline mode sends one hidden row (H*4 bytes) per stage
# boundary plus the logits (V*4 bytes) from the last stage back to rank 0.
# Compute is not included: the table is the network's ceiling (tok/s if
# compute were free) and its time per token, to be added to compute time.
# Do not run on a busy machine; results go to bench/RESULTS.md with the
# machine, date and command.
set -euo pipefail
B=${1:-build}
BIN=$B/moekit
DIR=${2:-/tmp/mk-bench-mpi}
NTOK=${3:-32}
LAYERS=${4:-4}
command -v mpirun > /dev/null || { echo "mpirun not found (openmpi-bin)"; exit 1; }
grep -q '^MK_MPI:BOOL=ON' "$B/CMakeCache.txt" || { echo "$B was built without MPI"; exit 1; }
if [ ! -f "$DIR/config.json" ]; then
    "$BIN" synth "$DIR" --arch qwen3_moe --preset 30b-a3b --format ct-int4 --layers "$LAYERS" --vocab 32768 --quiet
fi
NP=$(nproc)
echo "== machine: $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}'), $NP cores," \
    "$(free -g | awk '/Mem:/ {print $2}') GiB RAM, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== model: $DIR ($(du -sb "$DIR" | cut -f1) bytes), $NTOK tokens; $(date -u +%FT%TZ); $(git rev-parse --short HEAD 2> /dev/null)"
MPI=(mpirun --oversubscribe --bind-to none --mca pml ob1 --mca btl tcp,self --mca btl_tcp_if_include lo
     --mca oob_tcp_if_include lo)
[ "$(id -u)" -eq 0 ] && MPI+=(--allow-run-as-root)
IDS=$(seq -s, 101 116)
H=$(grep -o '"hidden_size": *[0-9]*' "$DIR/config.json" | grep -o '[0-9]*$')
K=$(grep -o '"num_experts_per_tok": *[0-9]*' "$DIR/config.json" | grep -o '[0-9]*$')
ERR=$(mktemp)
trap 'rm -f "$ERR"' EXIT
echo
echo "| mode | ranks | threads/rank | decode tok/s | exchange share of decode | exchanges/token | ms per exchange | payload bytes sent per exchange (rank 0) |"
echo "|---|---|---|---|---|---|---|---|"
LAT=""
for mode in expert pipeline both; do
    for np in 1 2 3; do
        [ $np -eq 1 ] && [ $mode != expert ] && continue
        [ $np -eq 2 ] && [ $mode = both ] && continue # both at -np 2 is a 2-stage pipeline; -np 3: stages of 2 + 1
        th=$((NP / np > 0 ? NP / np : 1))
        if [ $np -eq 1 ]; then
            "$BIN" run "$DIR" --ids "$IDS" --max-tokens "$NTOK" --threads $th --stats > /dev/null 2> "$ERR" ||
                { cat "$ERR"; exit 1; }
        else
            "${MPI[@]}" -np $np "$BIN" run "$DIR" --ids "$IDS" --max-tokens "$NTOK" --threads $th --stats \
                --mpi-mode $mode > /dev/null 2> "$ERR" || { cat "$ERR"; exit 1; }
        fi
        gen=$(grep -Eo 'generated [0-9]+ tokens in [0-9.]+ s' "$ERR" | awk '{print $2, $5}')
        line=$(awk -v mode=$mode -v np=$np -v th=$th -v g="$gen" '
            /^mpi_decode_exchanges / { x = $2 } /^mpi_decode_exchange_s / { xs = $2 }
            /^mpi_decode_payload_bytes_per_exchange / { pb = $2 }
            END { split(g, a, " "); n = a[1]; secs = a[2]; rate = (n - 1) / secs;
                  if (np == 1) { printf "| - | 1 | %d | %.2f | - | - | - | - |\n", th, rate; exit }
                  printf "| %s | %d | %d | %.2f | %.1f%% | %.1f | %.3f | %.0f |\n", mode, np, th, rate,
                         100 * xs / secs, x / (n - 1), 1000 * xs / x, pb }' "$ERR")
        echo "$line"
        if [ $mode = expert ] && [ $np -eq 2 ]; then
            LAT=$(awk '/^mpi_decode_exchanges / { x = $2 } /^mpi_decode_exchange_s / { xs = $2 }
                       END { printf "%.6f", xs / x }' "$ERR")
            PB=$(awk '/^mpi_decode_payload_bytes_per_exchange / { print $2 }' "$ERR")
        fi
    done
done
echo
echo "measured at -np 2 (expert): $LAT s per exchange, $PB payload bytes per exchange from rank 0;"
echo "the model's formula (N-1)/N * k*H*4 gives $(awk -v k="$K" -v h="$H" 'BEGIN { printf "%.0f", 0.5 * k * h * 4 }') bytes for k=$K, H=$H"
echo
# ---- projection: DeepSeek-V3 (61 layers, 58 MoE, H 7168, k 8, vocab 129280) and Kimi K2 (61 layers,
# 60 MoE, H 7168, k 8, vocab 163840), per decode token, network only ----
awk -v a="$LAT" 'BEGIN {
    split("DeepSeek-V3 Kimi-K2", name, " "); split("58 60", moe, " "); split("61 61", lay, " ");
    split("129280 163840", voc, " "); H = 7168; k = 8;
    split("10 25 100", gb, " ");
    printf "Projection, network only, per decode token (a = %.1f us per exchange, measured):\n\n", a * 1e6;
    printf "| model | hosts | link | expert mode: bytes/host/layer | expert ms/token | expert tok/s ceiling | pipeline ms/token | pipeline tok/s ceiling |\n";
    printf "|---|---|---|---|---|---|---|---|\n";
    for (m = 1; m <= 2; m++)
        for (N = 2; N <= 8; N++)
            for (g = 1; g <= 3; g++) {
                bw = gb[g] * 1e9 / 8;                       # bytes/s
                pay = (N - 1) / N * k * H * 4;               # sent per host per MoE layer
                te = moe[m] * (a + pay / bw);                # one exchange per MoE layer
                tp = (N - 1) * (a + H * 4 / bw) + (a + voc[m] * 4 / bw); # hops + logits back
                printf "| %s | %d | %d Gb/s | %.0f | %.3f | %.0f | %.3f | %.0f |\n", name[m], N, gb[g], pay,
                       te * 1e3, 1 / te, tp * 1e3, 1 / tp;
            }
}'
