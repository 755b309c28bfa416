#!/usr/bin/env bash
# The prompt cache on a hybrid model (issue 13's benchmark): TTFT of every
# turn of a multi-turn chat on a qwen3_5_moe model (Gated DeltaNet layers,
# whose recurrent state cannot be rewound: moekit resumes from the slot's
# history or from a recurrent-state snapshot taken at the end of the
# previous prompt), with the prompt cache and without it. The goal: with
# the cache, TTFT does not grow with the history; without it, it grows
# with the prompt. Also llama-server (llama.cpp's own server, built by
# scripts/install-deps.d/llama.sh) on the same weights, when installed.
# Not a test: run it on a quiet machine and record the output in
# bench/RESULTS.md.
#
#   bash bench/serve_cache_bench.sh BUILD_DIR
#
# Model (made once under MK_SCB_DIR): `moekit synth --arch qwen3_5_moe
# --preset 35b-a3b` cut to MK_SCB_LAYERS layers (3 Gated DeltaNet + 1 full
# attention per 4) and MK_SCB_EXPERTS experts, vocab 4096 with the tokenizer
# and chat template of models/tiny-qwen35moe (random weights: the text is
# noise, the cost per token is the real shape's). moekit serves its MLX
# 4-bit g64 quantization (`moekit quantize --bits 4`), llama-server the
# GGUF Q4_0 of the same bf16 weights (`moekit convert --to gguf
# --gguf-type q4_0`): both 4.5 bits per weight (as bench/bench_peer.sh).
#
# The chat: a system message, then per turn a user message of MK_SCB_WORDS
# words of models/tiny-qwen35moe/devtext.txt (a different passage each
# turn) and an answer of exactly MK_SCB_ANSWER tokens (greedy, ignore_eos),
# sent back verbatim as the assistant message of the next turn, as a chat
# client does. Each request streams (bench/serve_lib.bash sse_time:
# TTFT = request to the first content chunk).
#   cache     the server as shipped, one slot (--parallel 1 / -np 1)
#   nocache   the same requests, but every turn's system message starts with
#             a different nonce, so no cached prefix matches: the whole
#             prompt is prefilled (the cost the cache saves)
# Per turn it prints the prompt tokens, the tokens the server actually
# read (processed: moekit's usage cached_tokens and its /metrics
# moekit_prompt_tokens_processed_total; llama-server's timings.prompt_n)
# and TTFT. moekit's cache mode is checked: from turn 2 on it must read no
# more than the tokens added since the previous prompt (the previous answer,
# the new user message and the template's tags), i.e. no history
# re-prefill; a violation prints check=FAIL and exits 1.
#
# Knobs (environment): MK_SCB_DIR (${TMPDIR:-/tmp}/moekit-scb), MK_SCB_PRESET
# (35b-a3b), MK_SCB_LAYERS (4), MK_SCB_EXPERTS (32), MK_SCB_TURNS (5),
# MK_SCB_WORDS (300), MK_SCB_ANSWER (32), MK_SCB_THREADS (all CPUs),
# MK_SCB_CTX (4096), MK_SCB_LLAMA (1: llama-server too when installed),
# MK_PEERS (the .peers folder: default the repository's).
# MK_SCB_TINY=1: a smoke run that only checks the script end to end (preset
# tiny, 3 turns of 40 words, 4-token answers).
set -euo pipefail
build=${1:?usage: bench/serve_cache_bench.sh BUILD_DIR}
build=$(cd "$build" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/bench/serve_lib.bash"
BIN=$build/moekit
PEER=${MK_PEERS:-$repo/.peers}/bin
TOKSRC=$repo/models/tiny-qwen35moe
for c in curl perl; do command -v $c >/dev/null || { echo "serve_cache_bench: $c not found" >&2; exit 1; }; done

if [ "${MK_SCB_TINY:-0}" = 1 ]; then
    PRESET=tiny; LAYERS=4; EXPERTS=8; TURNS=${MK_SCB_TURNS:-3}; WORDS=${MK_SCB_WORDS:-40}; ANSWER=${MK_SCB_ANSWER:-4}
else
    PRESET=${MK_SCB_PRESET:-35b-a3b}; LAYERS=${MK_SCB_LAYERS:-4}; EXPERTS=${MK_SCB_EXPERTS:-32}
    TURNS=${MK_SCB_TURNS:-5}; WORDS=${MK_SCB_WORDS:-300}; ANSWER=${MK_SCB_ANSWER:-32}
fi
TH=${MK_SCB_THREADS:-$(nproc)}
CTX=${MK_SCB_CTX:-4096}
DIR=${MK_SCB_DIR:-${TMPDIR:-/tmp}/moekit-scb}/$PRESET-L$LAYERS-E$EXPERTS
mkdir -p "$DIR"
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-scb-XXXXXX")
SPID=
trap '[ -n "$SPID" ] && kill "$SPID" 2>/dev/null; rm -rf "$T"' EXIT

# ---- the model (made once)
src=$DIR/bf16
if [ ! -f "$src/tokenizer_config.json" ]; then
    rm -rf "$src"
    "$BIN" synth "$src" --arch qwen3_5_moe --preset "$PRESET" --layers "$LAYERS" --experts "$EXPERTS" \
        --vocab 4096 --format bf16 --quiet
    cp "$TOKSRC/bf16/tokenizer.json" "$src/"
    cp "$TOKSRC/bf16/tokenizer_config.json" "$src/" # last: marks the model complete
fi
[ -f "$DIR/mlx4/config.json" ] || "$BIN" quantize "$src" "$DIR/mlx4" --bits 4 --group-size 64 --quiet > /dev/null
have_llama=0
if [ "${MK_SCB_LLAMA:-1}" = 1 ] && [ -x "$PEER/llama-server" ]; then
    [ -f "$DIR/q4_0.gguf" ] || "$BIN" convert "$src" "$DIR/q4_0.gguf" --to gguf --gguf-type q4_0 --quiet
    have_llama=1
elif [ "${MK_SCB_LLAMA:-1}" = 1 ]; then
    echo "serve_cache_bench: $PEER/llama-server not installed (scripts/install-deps.d/llama.sh): moekit only" >&2
fi

echo "machine=$(lscpu | sed -n 's/^Model name: *//p' | head -n1 | tr ' ' _) cores=$(nproc) threads=$TH"
echo "date=$(date -u +%Y-%m-%dT%H:%MZ) load=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)"
echo "model=qwen3_5_moe preset=$PRESET layers=$LAYERS experts=$EXPERTS moekit=mlx4-g64 llama=q4_0" \
     "turns=$TURNS words=$WORDS answer=$ANSWER ctx=$CTX"

# ---- the user messages: WORDS words of devtext per turn, JSON-escaped, one line each
tr -s ' \t\n\r' '    ' < "$TOKSRC/devtext.txt" | tr -d '\000-\037' | tr ' ' '\n' | grep -v '^$' |
    sed 's/\\/\\\\/g; s/"/\\"/g' > "$T/words"
[ "$(wc -l < "$T/words")" -ge $((TURNS * WORDS)) ] || { echo "serve_cache_bench: devtext has too few words" >&2; exit 1; }
for t in $(seq "$TURNS"); do
    sed -n "$(((t - 1) * WORDS + 1)),$((t * WORDS))p" "$T/words" | tr '\n' ' ' > "$T/user$t"
done

# ---- one chat of TURNS turns against URL; mode cache|nocache; server moekit|llama

chat() {
    local server=$1 mode=$2 url=$3 msgs="" prev_np=0 t r np proc mproc m0 m1 nonce
    for t in $(seq "$TURNS"); do
        nonce=$([ "$mode" = nocache ] && echo "[session $t-$RANDOM] " || true)
        # the history so far (its answers verbatim), the new user message
        local sys="{\"role\":\"system\",\"content\":\"${nonce}You are a helpful assistant.\"}"
        msgs="$msgs{\"role\":\"user\",\"content\":\"$(cat "$T/user$t")\"}"
        # llama-server answers 1 token: its output parsers reject this random
        # model's text (invalid UTF-8 from byte tokens: HTTP 500 "does not match
        # the expected ... format" mid-stream, on every endpoint), so its history
        # carries moekit's answers of the same turn; TTFT needs only 1 token
        local want=$ANSWER
        [ "$server" = llama ] && want=1
        local body="{\"model\":\"m\",\"messages\":[$sys,$msgs],\"max_tokens\":$want,\"temperature\":0,\"ignore_eos\":true,\"stream\":true,\"stream_options\":{\"include_usage\":true}}"
        [ "$server" = moekit ] && m0=$(curl -s "$url/metrics" | sed -n 's/^moekit_prompt_tokens_processed_total //p')
        r=$(sse_time "$url/v1/chat/completions" "$body" "$T/answer")
        if [ "$server" = moekit ]; then cp "$T/answer" "$T/ans_${mode}_$t"; else cp "$T/ans_${mode}_$t" "$T/answer"; fi
        msgs="$msgs,{\"role\":\"assistant\",\"content\":\"$(cat "$T/answer")\"},"
        np=$(echo "$r" | kv prompt_tokens)
        proc=$(echo "$r" | kv processed)
        mproc=
        if [ "$server" = moekit ]; then
            m1=$(curl -s "$url/metrics" | sed -n 's/^moekit_prompt_tokens_processed_total //p')
            mproc=" metrics_processed=$((m1 - m0))"
        fi
        echo "server=$server mode=$mode turn=$t $r$mproc"
        if [ "$server" = moekit ] && [ "$mode" = cache ] && [ "$t" -gt 1 ] && [ "$proc" -gt $((np - prev_np)) ]; then
            echo "check=FAIL server=moekit turn=$t processed $proc prompt tokens, more than the $((np - prev_np)) added since turn $((t - 1)): the history was prefilled again"
        fi
        [ "$(echo "$r" | kv completion_tokens)" = "$want" ] ||
            { echo "serve_cache_bench: $server turn $t: expected $want tokens: $r" >&2; exit 1; }
        prev_np=$np
    done
}

start_moekit() {
    "$BIN" serve "$DIR/mlx4" --port 0 --threads "$TH" --parallel 1 --ctx "$CTX" --alias m 2> "$T/mlog" &
    SPID=$!
    local port= i
    for i in $(seq 600); do
        port=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$T/mlog" | sed 's/.*://' || true)
        [ -n "$port" ] && break
        sleep 0.1
    done
    URL=http://127.0.0.1:$port
    wait_health "$URL" "$SPID" || { cat "$T/mlog" >&2; echo "serve_cache_bench: moekit serve did not start" >&2; exit 1; }
}
start_llama() {
    local port i
    for i in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 20000))
        "$PEER/llama-server" -m "$DIR/q4_0.gguf" --host 127.0.0.1 --port "$port" -t "$TH" -c "$CTX" -np 1 \
            > "$T/llog" 2>&1 &
        SPID=$!
        URL=http://127.0.0.1:$port
        wait_health "$URL" "$SPID" 300 && return 0
        kill "$SPID" 2>/dev/null || true
        wait "$SPID" 2>/dev/null || true
    done
    tail -20 "$T/llog" >&2
    echo "serve_cache_bench: llama-server did not start" >&2
    exit 1
}
stop() { kill -TERM "$SPID"; wait "$SPID" 2>/dev/null || true; SPID=; }

# nocache first, then cache, each on a fresh server (nothing cached from the other)
for server in moekit $([ $have_llama = 1 ] && echo llama); do
    for mode in nocache cache; do
        if [ "$server" = moekit ]; then start_moekit; else start_llama; fi
        # warm-up: one short request (first-touch of the weights is not the cache's cost)
        sse_time "$URL/v1/chat/completions" '{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2,"stream":true,"stream_options":{"include_usage":true}}' > /dev/null
        chat "$server" "$mode" "$URL" | tee -a "$T/all"
        stop
    done
done
# the last turn side by side
awk -v n="$TURNS" '$3 == "turn=" n { split($1, s, "="); split($2, m, "="); for (i = 4; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "ttft_s") v[s[2] "_" m[2]] = kv[2]; if (kv[1] == "processed") p[s[2] "_" m[2]] = kv[2] } }
    END { for (k in v) printf "turn%d_%s ttft_s=%s processed=%s\n", n, k, v[k], p[k] }' "$T/all" | sort
grep -q '^check=FAIL' "$T/all" && exit 1
echo "check=ok (moekit's cache mode read only the tokens each turn added)"
