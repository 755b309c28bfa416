#!/usr/bin/env bash
# Soak of `moekit serve` (outside `make test`): a bounded mixed load on
# loopback for a while, then the server must be alive and idle with no
# leaked slot and no memory growth.
#
#   bash tests/soak/serve_soak.sh BIN MODEL [MINUTES=10] [WORKERS=8]
#
# Each worker loops over: greedy and sampled chat (streamed or not),
# completions with stop sequences, tokenize, malformed bodies (400), an
# unknown model (404), and a stream it abandons after 0.2 s. The server runs
# with --parallel 4 --queue 8, so some requests get 429 (counted, expected).
# RSS is sampled every 30 s; after the first 2 minutes (warm-up: allocator
# arenas, page cache) it may not grow by more than 32 MiB. Ends with SIGTERM,
# which must exit 0. Prints a summary line per sample and at the end.
# no pipefail: `echo "$r" | grep -q` would fail whenever grep stops reading early (SIGPIPE)
set -eu
BIN=${1:?usage: serve_soak.sh BIN MODEL [MINUTES] [WORKERS]}
MODEL=${2:?usage: serve_soak.sh BIN MODEL [MINUTES] [WORKERS]}
MIN=${3:-10}
WORKERS=${4:-8}
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-soak-XXXXXX")
SPID=
trap '[ -n "$SPID" ] && kill "$SPID" 2>/dev/null; rm -rf "$T"' EXIT
fail() { echo "soak FAIL: $*" >&2; exit 1; }

"$BIN" serve "$MODEL" --port 0 --parallel 4 --queue 8 --alias soak 2> "${SOAK_LOG:-$T/log}" &
SPID=$!
PORT=
for _ in $(seq 600); do
    PORT=$(grep -o "listening on http://127.0.0.1:[0-9]*" "${SOAK_LOG:-$T/log}" | sed 's/.*://' || true)
    [ -n "$PORT" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")" = 200 ] && break
    kill -0 "$SPID" 2>/dev/null || { cat "${SOAK_LOG:-$T/log}" >&2; fail "server exited"; }
    sleep 0.1
done
U=http://127.0.0.1:$PORT
END=$(( $(date +%s) + MIN * 60 ))

worker() {
    local w=$1 i=0 c
    while [ "$(date +%s)" -lt "$END" ]; do
        i=$((i + 1))
        case $((i % 8)) in
        0) c=$(curl -s -o /dev/null -w '%{http_code}' "$U/v1/chat/completions" -d "{\"messages\":[{\"role\":\"user\",\"content\":\"w$w i$i\"}],\"max_tokens\":64,\"temperature\":0}") ;;
        1) c=$(curl -sN -o /dev/null -w '%{http_code}' "$U/v1/chat/completions" -d "{\"messages\":[{\"role\":\"user\",\"content\":\"hello $i\"}],\"max_tokens\":64,\"temperature\":0.8,\"seed\":$i,\"stream\":true}") ;;
        2) c=$(curl -s -o /dev/null -w '%{http_code}' "$U/v1/completions" -d "{\"prompt\":\"def f$i(\",\"max_tokens\":48,\"stop\":[\"\\n\\n\"]}") ;;
        3) c=$(curl -s -o /dev/null -w '%{http_code}' "$U/tokenize" -d "{\"content\":\"soak $i\"}") ;;
        4) c=$(curl -s -o /dev/null -w '%{http_code}' "$U/v1/chat/completions" -d '{"messages":[{"role":"user","content":5}]}') ;;
        5) c=$(curl -s -o /dev/null -w '%{http_code}' "$U/v1/chat/completions" -d '{"model":"nope","messages":[{"role":"user","content":"x"}]}') ;;
        6) curl -sN -m 0.2 -o /dev/null "$U/v1/completions" -d '{"prompt":"x","max_tokens":2000,"ignore_eos":true,"stream":true}' || true
           c=abandoned ;;
        7) c=$(curl -s -o /dev/null -w '%{http_code}' "$U/v1/completions" -d "{\"prompt\":\"The $i\",\"max_tokens\":32,\"temperature\":1,\"top_k\":40}") ;;
        esac
        echo "$c" >> "$T/codes.$w"
    done
}
for w in $(seq "$WORKERS"); do worker "$w" & done
t0=$(date +%s)
base=
while [ "$(date +%s)" -lt "$END" ]; do
    sleep 30
    kill -0 "$SPID" 2>/dev/null || { tail -n 20 "${SOAK_LOG:-$T/log}" >&2; fail "the server died"; }
    rss=$(awk '/VmRSS/ {print $2}' /proc/$SPID/status)
    el=$(( $(date +%s) - t0 ))
    [ -z "$base" ] && [ "$el" -ge 120 ] && base=$rss
    echo "soak: ${el}s rss ${rss} KiB requests $(cat "$T"/codes.* 2>/dev/null | wc -l)"
done
wait $(jobs -p | grep -v "^$SPID\$") 2>/dev/null || true
metric() { curl -s "$U/metrics" | grep "^$1 " | sed 's/.* //'; }
for _ in $(seq 100); do [ "$(metric moekit_slots_busy)" = 0 ] && break; sleep 0.1; done
[ "$(curl -s -o /dev/null -w '%{http_code}' "$U/health")" = 200 ] || fail "/health after the soak"
[ "$(metric moekit_slots_busy)" = 0 ] || fail "slots still busy after the load: $(metric moekit_slots_busy)"
[ "$(metric moekit_queue_length)" = 0 ] || fail "requests still queued"
rss=$(awk '/VmRSS/ {print $2}' /proc/$SPID/status)
if [ -n "$base" ]; then
    [ $((rss - base)) -lt 32768 ] || fail "RSS grew from $base to $rss KiB after warm-up"
fi
bad=$(cat "$T"/codes.* | grep -cvE '^(200|400|404|429|abandoned)$' || true)
[ "$bad" = 0 ] || fail "$bad requests got an unexpected status: $(cat "$T"/codes.* | grep -vE '^(200|400|404|429|abandoned)$' | sort | uniq -c)"
summary=$(cat "$T"/codes.* | sort | uniq -c | tr '\n' ' ')
kill -TERM "$SPID"
wait "$SPID" || fail "SIGTERM: exit $?"
SPID=
echo "soak: ok after ${MIN} min: $summary; rss ${base:-?} -> $rss KiB; cancelled streams and 429s expected"
