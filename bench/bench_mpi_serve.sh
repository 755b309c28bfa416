#!/usr/bin/env bash
# Batched decode under MPI (issue 18): aggregate decode throughput of
# `moekit serve --parallel P` with P concurrent greedy clients, in one
# process and under `mpirun -np 2` (expert and pipeline placement), for
# P = 1, 4 and 8. Under MPI a batched step makes one exchange per MoE layer
# (expert) or one hand-over per stage (pipeline) for all its sequences, so
# the exchange's latency is paid once per step instead of once per
# sequence: the rows show how much of it the batch hides.
#   usage: bench/bench_mpi_serve.sh [BUILD=build] [MODEL=models/tiny-qwen35moe/bf16] [TOKENS=96]
# Each client asks TOKENS tokens (ignore_eos, temperature 0) of a short
# prompt; the rate is the clients' completion tokens (from `usage`) over the
# wall time from the first request to the last answer, so prefill pieces
# are included (prompts are short). The ranks share this host's cores
# (--threads nproc/N each) over TCP on loopback: the -np 2 rows measure the
# exchange's cost and its amortisation, not a speed-up (that needs two
# hosts). Do not run on a busy machine; results go to bench/RESULTS.md with
# the machine, date and command.
set -euo pipefail
B=${1:-build}
BIN=$B/moekit
M=${2:-models/tiny-qwen35moe/bf16}
NTOK=${3:-96}
command -v mpirun > /dev/null || { echo "mpirun not found (openmpi-bin)"; exit 1; }
command -v curl > /dev/null || { echo "curl not found"; exit 1; }
grep -q '^MK_MPI:BOOL=ON' "$B/CMakeCache.txt" || { echo "$B was built without MPI"; exit 1; }
NP=$(nproc)
T=$(mktemp -d)
JOB=
trap '[ -n "$JOB" ] && kill "$JOB" 2> /dev/null; rm -rf "$T"' EXIT
MPI=(mpirun --oversubscribe --bind-to none --mca pml ob1 --mca btl tcp,self)
[ "$(id -u)" -eq 0 ] && MPI+=(--allow-run-as-root)
echo "== machine: $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}'), $NP cores;" \
    "model $M; $NTOK tokens per client; $(date -u '+%Y-%m-%d %H:%M UTC'); $(git rev-parse --short HEAD 2> /dev/null)"

metric() { curl -s "http://127.0.0.1:$PORT/metrics" | grep "^$1 " | sed 's/.* //'; }

run_one() { # label np mode P
    local label=$1 np=$2 mode=$3 P=$4 log=$T/log
    local thr=$((NP / np)) cmd=()
    [ "$thr" -ge 1 ] || thr=1
    if [ "$np" -gt 1 ]; then
        cmd=("${MPI[@]}" -np "$np" "$BIN" serve "$M" --mpi-mode "$mode")
    else
        cmd=("$BIN" serve "$M")
    fi
    "${cmd[@]}" --host 127.0.0.1 --port 0 --threads "$thr" --parallel "$P" --alias bench > /dev/null 2> "$log" &
    JOB=$!
    PORT=
    for _ in $(seq 600); do
        [ -n "$PORT" ] || PORT=$(grep -o 'listening on http://[0-9.]*:[0-9]*' "$log" | sed 's/.*://' || true)
        [ -n "$PORT" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")" = 200 ] && break
        sleep 0.1
    done
    [ -n "$PORT" ] || { cat "$log" >&2; exit 1; }
    # one untimed request: first-use costs (weights paged in, buffers) out of the rate
    curl -s "http://127.0.0.1:$PORT/v1/completions" -d '{"model":"bench","prompt":"Warm up.","max_tokens":8,"temperature":0}' > /dev/null
    local s0 q0 s1 q1 t0 t1 toks=0 pids=()
    s0=$(metric moekit_decode_steps_total)
    q0=$(metric moekit_decode_step_sequences_total)
    t0=$(date +%s.%N)
    for i in $(seq "$P"); do
        curl -s "http://127.0.0.1:$PORT/v1/completions" -d "{\"model\":\"bench\",\"prompt\":\"Client $i: write a long story.\",\"max_tokens\":$NTOK,\"ignore_eos\":true,\"temperature\":0}" > "$T/c$i" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    t1=$(date +%s.%N)
    s1=$(metric moekit_decode_steps_total)
    q1=$(metric moekit_decode_step_sequences_total)
    for i in $(seq "$P"); do
        toks=$((toks + $(grep -o '"completion_tokens":[0-9]*' "$T/c$i" | sed 's/.*://')))
    done
    kill "$JOB" 2> /dev/null || true
    wait "$JOB" 2> /dev/null || true
    JOB=
    awk -v l="$label" -v P="$P" -v tok="$toks" -v t0="$t0" -v t1="$t1" -v s="$((s1 - s0))" -v q="$((q1 - q0))" \
        'BEGIN { printf "| %s | %d | %d | %.2f | %.1f | %d | %.2f |\n", l, P, tok, t1 - t0, tok / (t1 - t0), s, (s ? q / s : 0) }'
}

echo "| placement | clients = slots | completion tokens | wall s | aggregate tok/s | decode steps | sequences per step |"
echo "|---|---|---|---|---|---|---|"
for P in 1 4 8; do
    run_one "one process" 1 - "$P"
    run_one "expert, -np 2" 2 expert "$P"
    run_one "pipeline, -np 2" 2 pipeline "$P"
done
