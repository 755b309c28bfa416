#!/usr/bin/env bash
# moekit serve throughput and latency (issue 13's benchmarks; results in
# bench/RESULTS.md). Not a test: run it on a quiet machine.
#
#   bash bench/serve_bench.sh BIN MODEL [TOKENS=256] [THREADS=all]
#
# 1. `moekit run` decode tok/s (its --stats) on a fixed prompt, greedy, up
#    to TOKENS tokens (run stops at an end-of-sequence id: compare tok/s).
# 2. The server, one stream: decode tok/s from the SSE chunks' arrival
#    times (bench/serve_lib.bash sse_time: stamped by one perl reader, first
#    content chunk to last, completion_tokens - 1 from the usage chunk over
#    that time), and TTFT (request to the first content chunk); also the
#    server's own view, the mean of its per-token latency histogram
#    (/metrics moekit_time_per_output_token_seconds, serve_itl_tok_s).
# 3. Aggregate generated tok/s with 1, 4 and 8 concurrent streams
#    (--parallel 8): total tokens / wall time of the batch, and the mean
#    decode batch the server ran (its /metrics: sequences per decode
#    forward; continuous batching puts every generating stream in one
#    forward, so it should be close to the concurrency). Issue 13's goal:
#    aggregate at 8 >= 3x the single stream on the CPU.
# Prints key=value lines. Needs curl, awk, perl, date with %N.
# A smoke run that only checks the script end to end (not a measurement):
#   bash bench/serve_bench.sh build/moekit models/tiny-qwen35moe/bf16 16 2
set -eu
. "$(dirname "$0")/serve_lib.bash"
BIN=${1:?usage: serve_bench.sh BIN MODEL [TOKENS] [THREADS]}
MODEL=${2:?usage: serve_bench.sh BIN MODEL [TOKENS] [THREADS]}
N=${3:-256}
TH=${4:-$(nproc)}
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-sbench-XXXXXX")
SPID=
trap '[ -n "$SPID" ] && kill "$SPID" 2>/dev/null; rm -rf "$T"' EXIT
now() { date +%s.%N; }

echo "machine=$(lscpu | sed -n 's/^Model name: *//p' | head -n1 | tr ' ' _) cores=$(nproc) threads=$TH"
echo "date=$(date -u +%Y-%m-%dT%H:%MZ) load=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)"

# 1. run
"$BIN" run "$MODEL" --prompt "def main():" --max-tokens "$N" --threads "$TH" --stats > /dev/null 2> "$T/run"
sed -n 's/.*generated \([0-9]*\) tokens in \([0-9.]*\) s (\([0-9.]*\) tok\/s).*/run_tokens=\1 run_decode_s=\2 run_tok_s=\3/p' "$T/run"

"$BIN" serve "$MODEL" --port 0 --threads "$TH" --parallel 8 --queue 64 2> "$T/log" &
SPID=$!
PORT=
for _ in $(seq 600); do
    PORT=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$T/log" | sed 's/.*://' || true)
    [ -n "$PORT" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")" = 200 ] && break
    sleep 0.1
done
U=http://127.0.0.1:$PORT
req="{\"prompt\":\"def main():\",\"max_tokens\":$N,\"temperature\":0,\"ignore_eos\":true,\"stream\":true,\"stream_options\":{\"include_usage\":true}}"
hsum() { curl -s "$U/metrics" | sed -n "s/^moekit_time_per_output_token_seconds_$1 //p"; }

# 2. one stream (its tokens from the usage chunk; the server's per-token latency over the same request)
is0=$(hsum sum); ic0=$(hsum count)
r=$(sse_time "$U/v1/completions" "$req")
is1=$(hsum sum); ic1=$(hsum count)
echo "$r" | awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
    END { printf "serve_ttft_s=%s serve_chunks=%s serve_tokens=%s serve_tok_s=%s\n", v["ttft_s"], v["chunks"], v["completion_tokens"], v["tok_s"] }'
awk -v s0="$is0" -v s1="$is1" -v c0="$ic0" -v c1="$ic1" 'BEGIN { printf "serve_itl_tok_s=%.1f\n", (s1 > s0 ? (c1 - c0) / (s1 - s0) : 0) }'

# 3. aggregate at 1, 4, 8 concurrent streams (non-streamed: usage counts tokens)
metric() { curl -s "$U/metrics" | grep "^$1 " | sed 's/.* //'; }
for c in 1 4 8; do
    ds0=$(metric moekit_decode_steps_total)
    dq0=$(metric moekit_decode_step_sequences_total)
    s=$(now)
    for i in $(seq "$c"); do
        curl -s "$U/v1/completions" -d "{\"prompt\":\"def f$i():\",\"max_tokens\":$N,\"temperature\":0,\"ignore_eos\":true}" > "$T/a$i" &
    done
    wait $(jobs -p | grep -v "^$SPID\$")
    e=$(now)
    tok=$(cat "$T"/a* | grep -o '"completion_tokens":[0-9]*' | cut -d: -f2 | awk '{s += $1} END {print s}')
    rm -f "$T"/a*
    ds=$(($(metric moekit_decode_steps_total) - ds0))
    dq=$(($(metric moekit_decode_step_sequences_total) - dq0))
    awk -v c="$c" -v t="$tok" -v s="$s" -v e="$e" -v ds="$ds" -v dq="$dq" 'BEGIN { printf "concurrency=%d tokens=%d wall_s=%.3f aggregate_tok_s=%.1f mean_decode_batch=%.2f\n", c, t, e - s, t / (e - s), (ds > 0 ? dq / ds : 0) }'
done
kill -TERM "$SPID"
wait "$SPID" || true
SPID=
