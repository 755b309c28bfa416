#!/usr/bin/env bash
# moekit serve end to end on the trained demo model, driven with curl on a
# free loopback port: /health says "loading" during a (test-hook) slow load
# and then ok; the API key is enforced; greedy chat and completions equal
# `moekit run` for the same prompt, streamed or not, with their usage
# numbers; stop sequences cut the text; a seed reproduces run's sampled
# tokens; 8 concurrent clients on 4 slots each get their own run's answer;
# the prompt cache reuses a chat's history and answers as without it; every
# malformed request gets its status naming the field; a full queue gives
# 429; a client that disconnects mid-stream frees its slot; memory does not
# grow over a second round; SIGTERM exits 0.
# no pipefail: `echo "$r" | grep -q` would fail whenever grep stops reading early (SIGPIPE)
set -eu
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash" # fail
command -v curl >/dev/null || { echo "skip: curl not found"; exit 77; }
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-serve-XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$T"
}
trap cleanup EXIT
M=$TINYM/bf16
KEY=sk-test-$$
printf '%s\n' "$KEY" > "$T/key"

# start_server LOG ARGS...: start in the background, wait for the port line
start_server() {
    local log=$1
    shift
    "$BIN" serve "$M" --port 0 --threads 2 "$@" 2> "$log" &
    SPID=$!
    PIDS+=("$SPID")
    for _ in $(seq 100); do
        PORT=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$log" | sed 's/.*://' || true)
        [ -n "$PORT" ] && return 0
        kill -0 "$SPID" 2>/dev/null || { cat "$log" >&2; fail "server exited at start"; }
        sleep 0.1
    done
    cat "$log" >&2
    fail "no 'listening on' line"
}
wait_ready() {
    for _ in $(seq 200); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")" = 200 ] && return 0
        sleep 0.1
    done
    fail "/health never became 200"
}
# api PATH BODY: POST with the key; prints the body, then the status on the last line
api() { curl -s -w '\n%{http_code}' -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT$1" -d "$2"; }
body() { sed '$d'; }
code() { tail -n 1; }
# jstr KEY: the first JSON string value of KEY (escaped form), jnum KEY: a number
# (sed -n 1p reads all its input: no producer is cut short)
jstr() { grep -oE "\"$1\":\"([^\"\\\\]|\\\\.)*\"" | sed -n 1p | sed "s/^\"$1\":\"//; s/\"\$//"; }
jnum() { grep -oE "\"$1\":[0-9]+" | sed -n 1p | sed 's/.*://'; }
# deltas: the streamed "content" (chat) or "text" (completion) pieces joined
deltas() { grep '^data: {' | grep -oE "\"$1\":\"([^\"\\\\]|\\\\.)*\"" | sed "s/^\"$1\":\"//; s/\"\$//" | tr -d '\n'; }
run_text() { "$BIN" run "$M" --threads 2 --json "$@" | jstr text; }
metric() { curl -s -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/metrics" | grep "^$1 " | sed 's/.* //'; }

# ---- loading, then ready ------------------------------------------------------------
MK_SERVE_LOAD_DELAY_MS=1500 start_server "$T/log" --parallel 4 --queue 16 --alias tiny \
    --api-key-file "$T/key"
h=$(curl -s -w ' %{http_code}' "http://127.0.0.1:$PORT/health")
[ "$h" = '{"status":"loading"} 503' ] || fail "/health while loading: $h"
r=$(curl -s -w '\n%{http_code}' -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/models")
[ "$(echo "$r" | code)" = 503 ] || fail "an API call while loading: $r"
wait_ready
grep -q "warm-up forward" "$T/log" || fail "no warm-up line"
[ "$(curl -s "http://127.0.0.1:$PORT/health")" = '{"status":"ok"}' ] || fail "/health body"

# ---- the key ---------------------------------------------------------------------------
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/v1/models")" = 401 ] || fail "no key: not 401"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${KEY}x" "http://127.0.0.1:$PORT/v1/models")" = 401 ] ||
    fail "longer key: not 401"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${KEY%?}" "http://127.0.0.1:$PORT/v1/models")" = 401 ] ||
    fail "shorter key: not 401"
r=$(curl -s -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/models")
echo "$r" | grep -q '"id":"tiny"' || fail "/v1/models: $r"

# ---- greedy chat equals run, streamed or not, with usage --------------------------------
want=$(run_text --chat --prompt "Return the list." --max-tokens 20)
"$BIN" run "$M" --threads 2 --chat --prompt "Return the list." --max-tokens 20 --stats 2> "$T/st" > /dev/null
np=$(sed -n 's/.*prompt \([0-9]*\) tokens.*/\1/p' "$T/st" | sed -n 1p)
r=$(api /v1/chat/completions '{"model":"tiny","messages":[{"role":"user","content":"Return the list."}],"max_tokens":20,"temperature":0}')
[ "$(echo "$r" | code)" = 200 ] || fail "chat: $r"
got=$(echo "$r" | body | jstr content)
[ -n "$want" ] && [ "$got" = "$want" ] || fail "chat differs from run: got '$got' want '$want'"
[ "$(echo "$r" | jnum prompt_tokens)" = "$np" ] || fail "prompt_tokens: $r (run: $np)"
[ "$(echo "$r" | jnum completion_tokens)" = 20 ] || fail "completion_tokens: $r"
[ "$(echo "$r" | jnum total_tokens)" = $((np + 20)) ] || fail "total_tokens: $r"
echo "$r" | grep -q '"finish_reason":"length"' || fail "finish_reason: $r"
# default_model is a synonym
r=$(api /v1/chat/completions '{"model":"default_model","messages":[{"role":"user","content":"Return the list."}],"max_tokens":20,"temperature":0}')
[ "$(echo "$r" | body | jstr content)" = "$want" ] || fail "default_model: $r"

curl -sN -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/chat/completions" \
    -d '{"messages":[{"role":"user","content":"Return the list."}],"max_tokens":20,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}' > "$T/sse"
[ "$(deltas content < "$T/sse")" = "$want" ] || fail "streamed chat differs: $(deltas content < "$T/sse")"
[ "$(tail -n 2 "$T/sse" | sed -n 1p)" = "data: [DONE]" ] || fail "stream does not end with [DONE]"
grep -q '"delta":{"role":"assistant"' "$T/sse" || fail "no role delta"
grep -q '"finish_reason":"length"' "$T/sse" || fail "no finish chunk"
grep '"choices":\[\],"usage":{' "$T/sse" | grep -q "\"prompt_tokens\":$np,\"completion_tokens\":20" ||
    fail "no usage chunk: $(grep usage "$T/sse" | tail -n 1)"

# ---- completions: greedy equals run, stop sequences ----------------------------------------
want=$(run_text --prompt "Return the" --max-tokens 48)
r=$(api /v1/completions '{"prompt":"Return the","max_tokens":48,"temperature":0}')
[ "$(echo "$r" | body | jstr text)" = "$want" ] || fail "completion differs from run: $r"
echo "$r" | grep -q '"prompt_tokens":2,' || fail "completion prompt_tokens: $r"
r=$(api /v1/completions '{"prompt":[407,268],"max_tokens":48,"temperature":0}')
[ "$(echo "$r" | body | jstr text)" = "$want" ] || fail "completion from ids differs: $r"
r=$(api /v1/completions '{"prompt":"Return the","max_tokens":48,"temperature":0,"stop":["zzz"," list"]}')
[ "$(echo "$r" | body | jstr text)" = " number of elements in the" ] || fail "stop: $r"
echo "$r" | grep -q '"finish_reason":"stop"' || fail "stop: finish_reason: $r"
# a stop sequence across tokens (" number" + " of"): nothing of it is sent
r=$(api /v1/completions '{"prompt":"Return the","max_tokens":48,"temperature":0,"stop":["r of"]}')
[ "$(echo "$r" | body | jstr text)" = " numbe" ] || fail "stop across tokens: $r"
curl -sN -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/completions" \
    -d '{"prompt":"Return the","max_tokens":48,"temperature":0,"stop":"r of","stream":true}' > "$T/sse"
[ "$(deltas text < "$T/sse")" = " numbe" ] || fail "streamed stop across tokens: $(cat "$T/sse")"
curl -sN -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/completions" \
    -d '{"prompt":"Return the","max_tokens":48,"temperature":0,"stop":" list","stream":true}' > "$T/sse"
[ "$(deltas text < "$T/sse")" = " number of elements in the" ] || fail "streamed stop: $(cat "$T/sse")"
grep -q '"finish_reason":"stop"' "$T/sse" || fail "streamed stop: finish_reason"

# ---- sampling: a seed reproduces run's tokens and itself -----------------------------------
want=$(run_text --prompt "def " --temp 0.9 --top-p 0.95 --top-k 40 --min-p 0.02 --repeat-penalty 1.1 --seed 5 --max-tokens 24)
req='{"prompt":"def ","temperature":0.9,"top_p":0.95,"top_k":40,"min_p":0.02,"repetition_penalty":1.1,"seed":5,"max_tokens":24}'
a=$(api /v1/completions "$req" | body | jstr text)
b=$(api /v1/completions "$req" | body | jstr text)
[ "$a" = "$want" ] || fail "seeded sampling differs from run: '$a' vs '$want'"
[ "$a" = "$b" ] || fail "same seed, different text"
differ=0
for s in 6 7 8; do
    c=$(api /v1/completions "${req/\"seed\":5/\"seed\":$s}" | body | jstr text)
    [ "$c" != "$a" ] && differ=1
done
[ $differ = 1 ] || fail "seeds 5-8 all gave the same text: the seed is not used"
# penalties change the output (the tiny model repeats itself greedily)
g=$(api /v1/completions '{"prompt":"x","max_tokens":40,"temperature":0,"ignore_eos":true}' | body | jstr text)
p=$(api /v1/completions '{"prompt":"x","max_tokens":40,"temperature":0,"ignore_eos":true,"frequency_penalty":2}' | body | jstr text)
[ -n "$g" ] && [ "$g" != "$p" ] || fail "frequency_penalty changed nothing: '$g'"
for pen in '"presence_penalty":2' '"repetition_penalty":1.5'; do
    p=$(api /v1/completions "{\"prompt\":\"x\",\"max_tokens\":40,\"temperature\":0,\"ignore_eos\":true,$pen}" | body | jstr text)
    [ -n "$p" ] && [ "$g" != "$p" ] || fail "$pen changed nothing: '$g'"
done
# max_completion_tokens is max_tokens' newer name
r=$(api /v1/chat/completions '{"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":5,"temperature":0,"ignore_eos":true}')
[ "$(echo "$r" | body | jnum completion_tokens)" = 5 ] || fail "max_completion_tokens 5: $r"

# ---- logprobs against transformers' logits (reference.json's ref_logits) -------------------
# the first 8 reference ids as the prompt: the generated token's top-5 log
# probabilities are row 7's log-softmax, and the chosen (greedy) one the best
ids=$(tr -d ' \n' < "$TINYM/reference.json" | grep -o '"ref_logits":{[^}]*' | grep -o '"input_ids":\[[0-9,]*' |
      sed 's/.*\[//' | cut -d, -f1-8)
[ -n "$ids" ] || fail "reference.json: ref_logits.input_ids not found"
ref=$(od -An -v -f -w4 -j $((7 * 4096 * 4)) -N $((4096 * 4)) "$TINYM/ref_logits.f32" |
      awk '{ v[NR] = $1; if (NR == 1 || $1 > m) m = $1 } END { for (i in v) s += exp(v[i] - m); l = m + log(s);
             for (i in v) print v[i] - l }' | sort -g -r | sed -n 1,5p)
r=$(api /v1/completions "{\"prompt\":[$ids],\"max_tokens\":1,\"temperature\":0,\"ignore_eos\":true,\"logprobs\":5}")
got=$(echo "$r" | grep -oE '"top_logprobs":\[\{[^]]*\}\]' | grep -oE ':-?[0-9][0-9.e+-]*' | tr -d : | sort -g -r)
[ "$(echo "$got" | wc -l)" = 5 ] || fail "logprobs: expected 5 alternatives: $r"
paste <(echo "$ref") <(echo "$got") | awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 0.001) bad = 1 } END { exit bad }' ||
    fail "top-5 logprobs differ from transformers' by more than 0.001: ref $(echo $ref) got $(echo $got)"
chosen=$(echo "$r" | grep -oE '"token_logprobs":\[-?[0-9][0-9.e+-]*' | sed 's/.*\[//')
awk -v c="$chosen" -v b="$(echo "$got" | sed -n 1p)" 'BEGIN { exit !(c == b) }' ||
    fail "the greedy token's logprob $chosen is not the best alternative's $(echo "$got" | sed -n 1p)"
# chat: logprobs of every token, top_logprobs alternatives each, streamed the same
r=$(api /v1/chat/completions '{"messages":[{"role":"user","content":"hi"}],"max_tokens":6,"temperature":0,"logprobs":true,"top_logprobs":3}')
[ "$(echo "$r" | grep -o '"top_logprobs":\[' | wc -l)" = 6 ] || fail "chat logprobs: $r"
curl -sN -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/chat/completions" \
    -d '{"messages":[{"role":"user","content":"hi"}],"max_tokens":6,"temperature":0,"logprobs":true,"top_logprobs":3,"stream":true}' > "$T/sse"
[ "$(grep -oE '"logprob":-?[0-9][0-9.e+-]*' "$T/sse" | tr '\n' ' ')" = "$(echo "$r" | grep -oE '"logprob":-?[0-9][0-9.e+-]*' | tr '\n' ' ')" ] ||
    fail "streamed logprobs differ from the non-streamed ones"

# ---- 8 concurrent clients on 4 slots, each equal to its own run -----------------------------
round() {
    local i cp=()
    for i in 0 1 2 3 4 5 6 7; do
        api /v1/chat/completions "{\"messages\":[{\"role\":\"user\",\"content\":\"Question $i: write code.\"}],\"max_tokens\":$((16 + i * 3)),\"temperature\":0}" > "$T/c$i" &
        cp+=($!)
    done
    wait "${cp[@]}"
}
for i in 0 1 2 3 4 5 6 7; do
    run_text --chat --prompt "Question $i: write code." --max-tokens $((16 + i * 3)) > "$T/w$i"
    [ -s "$T/w$i" ] || fail "run gave no text for question $i"
done
round
for i in 0 1 2 3 4 5 6 7; do
    [ "$(code < "$T/c$i")" = 200 ] || fail "client $i: $(cat "$T/c$i")"
    [ "$(body < "$T/c$i" | jstr content)" = "$(cat "$T/w$i")" ] || fail "client $i differs from its run"
done
rss1=$(awk '/VmRSS/ {print $2}' /proc/$SPID/status)

# ---- prompt cache: the next turn reuses the history and answers as without it -------------
c1=$(api /v1/chat/completions '{"messages":[{"role":"user","content":"Write a function."}],"max_tokens":30,"temperature":0}' | body | jstr content)
turn2="{\"messages\":[{\"role\":\"user\",\"content\":\"Write a function.\"},{\"role\":\"assistant\",\"content\":\"$c1\"},{\"role\":\"user\",\"content\":\"Again.\"}],\"max_tokens\":12,\"temperature\":0}"
hits0=$(metric moekit_prompt_cache_hits_total)
r=$(api /v1/chat/completions "$turn2")
cached=$(echo "$r" | jnum cached_tokens)
[ "$cached" -gt 30 ] || fail "turn 2 reused $cached tokens of the history: $r"
[ "$(metric moekit_prompt_cache_hits_total)" -gt "$hits0" ] || fail "no prompt-cache hit counted"
t2=$(echo "$r" | body | jstr content)
# the same turn on a server without that history (a fresh one, streaming its
# experts from the checkpoint: the same answer, and /metrics shows the cache)
P1=$PORT
S1=$SPID
# (--cache-fill off: experts read on demand, which /metrics counts; the fill
# would read all of this small model's experts before the first request)
# MK_SERVE_STREAM_HOLD (a test hook): its streams read late, the whole answer there at the first read
MK_SERVE_STREAM_HOLD=1 start_server "$T/log2" --parallel 1 --api-key "$KEY" --stream-experts --cache-fill off
wait_ready
r=$(api /v1/chat/completions "$turn2")
[ "$(echo "$r" | jnum cached_tokens)" = 0 ] || fail "fresh server reused a cache: $r"
[ "$(echo "$r" | body | jstr content)" = "$t2" ] || fail "turn 2 with the cache differs from without: '$t2' vs $r"
hr=$(metric moekit_expert_cache_hit_rate)
[ -n "$hr" ] && awk -v h="$hr" 'BEGIN { exit !(h > 0 && h <= 1) }' || fail "expert cache hit rate: '$hr'"
[ "$(metric moekit_expert_bytes_read_total)" -gt 0 ] || fail "no expert bytes read"
# one event a token however late the stream is read (clients count tokens by chunks; a page shows
# the answer growing): the held answer was sent as one event before
r=$(api /v1/completions '{"prompt":"Return the","max_tokens":12,"temperature":0,"ignore_eos":true}')
want=$(echo "$r" | body | jstr text)
curl -sN -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/completions" \
    -d '{"prompt":"Return the","max_tokens":12,"temperature":0,"ignore_eos":true,"stream":true,"stream_options":{"include_usage":true}}' > "$T/sse"
[ "$(deltas text < "$T/sse")" = "$want" ] || fail "held stream differs: $(cat "$T/sse")"
n=$(grep -c '"text":"[^"]' "$T/sse" || true)
grep -q '"completion_tokens":12,' "$T/sse" && [ "$n" = 12 ] || fail "held stream: $n text events for 12 tokens: $(cat "$T/sse")"
curl -sN -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/chat/completions" -d "${turn2%\}},\"stream\":true}" > "$T/sse"
[ "$(deltas content < "$T/sse")" = "$t2" ] || fail "held chat stream differs from '$t2': $(cat "$T/sse")"
n=$(grep -c '"content":"[^"]' "$T/sse" || true)
[ "$n" -ge 6 ] || fail "held chat stream: $n content events: $(cat "$T/sse")"

# ---- a full queue is 429; a client gone mid-stream frees its slot ---------------------------
# (this server: 1 slot, queue 1; long generations via ignore_eos)
kill "$SPID"; wait "$SPID" 2>/dev/null || true
start_server "$T/log3" --parallel 1 --queue 1 --api-key "$KEY" --grace 0.3 --template qwen3
wait_ready
long='{"prompt":"x","max_tokens":4000,"temperature":0,"ignore_eos":true,"stream":true}'
curl -sN -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/completions" -d "$long" > "$T/long1" &
L1=$!
for _ in $(seq 100); do [ "$(metric moekit_slots_busy)" = 1 ] && break; sleep 0.05; done
curl -sN -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/completions" -d "$long" > "$T/long2" &
L2=$!
for _ in $(seq 100); do [ "$(metric moekit_queue_length)" = 1 ] && break; sleep 0.05; done
[ "$(metric moekit_slots_busy)" = 1 ] && [ "$(metric moekit_queue_length)" = 1 ] || fail "slot and queue not full"
r=$(api /v1/completions '{"prompt":"x","max_tokens":4}')
[ "$(echo "$r" | code)" = 429 ] || fail "full queue: $r"
kill "$L1" "$L2"; wait "$L1" "$L2" 2>/dev/null || true
for _ in $(seq 100); do [ "$(metric moekit_slots_busy)" = 0 ] && [ "$(metric moekit_queue_length)" = 0 ] && break; sleep 0.05; done
[ "$(metric moekit_slots_busy)" = 0 ] || fail "the slot was not freed after the client left"
[ "$(metric moekit_requests_cancelled_total)" -ge 1 ] || fail "no cancellation counted"
grep -q '"text"' "$T/long1" || fail "the first stream sent nothing before it was cut"
# a non-streamed request whose client gives up is cancelled too
c0=$(metric moekit_requests_cancelled_total)
curl -s -m 0.5 -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/completions" \
    -d '{"prompt":"x","max_tokens":4000,"temperature":0,"ignore_eos":true}' > /dev/null || true
for _ in $(seq 100); do [ "$(metric moekit_slots_busy)" = 0 ] && break; sleep 0.05; done
[ "$(metric moekit_slots_busy)" = 0 ] || fail "the slot was not freed after a non-streaming client left"
[ "$(metric moekit_requests_cancelled_total)" -gt "$c0" ] || fail "the abandoned request was not cancelled"
r=$(api /v1/completions '{"prompt":"Return the","max_tokens":8,"temperature":0}')
[ "$(echo "$r" | code)" = 200 ] || fail "after the disconnects: $r"

# ---- malformed requests: status and the field named ------------------------------------------
expect_err() { # CODE PARAM PATH BODY
    local r
    r=$(api "$3" "$4")
    [ "$(echo "$r" | code)" = "$1" ] || fail "$4 -> $(echo "$r" | code), expected $1: $r"
    [ -z "$2" ] || echo "$r" | grep -qF "\"param\":\"$2\"" || fail "$4: no param $2: $r"
}
C=/v1/chat/completions
U='"messages":[{"role":"user","content":"hi"}]'
expect_err 404 model $C "{\"model\":\"nope\",$U}"
expect_err 400 body $C '{"messages":'
expect_err 400 body $C '[1,2]'
expect_err 400 messages $C '{}'
expect_err 400 messages $C '{"messages":[]}'
expect_err 400 messages $C '{"messages":"hi"}'
expect_err 400 'messages[0]' $C '{"messages":[5]}'
expect_err 400 'messages[0].role' $C '{"messages":[{"content":"hi"}]}'
expect_err 400 'messages[0].role' $C '{"messages":[{"role":"wizard","content":"hi"}]}'
expect_err 400 'messages[0].content' $C '{"messages":[{"role":"user"}]}'
expect_err 400 'messages[0].content' $C '{"messages":[{"role":"user","content":5}]}'
expect_err 400 body $C '{"messages":[{"role":"user","content":"a\u0000b"}]}'
expect_err 400 'messages[0].content[0]' $C '{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}'
expect_err 400 n $C "{$U,\"n\":2}"
expect_err 400 temperature $C "{$U,\"temperature\":\"hot\"}"
expect_err 400 temperature $C "{$U,\"temperature\":3}"
expect_err 400 top_p $C "{$U,\"top_p\":0}"
expect_err 400 top_k $C "{$U,\"top_k\":1.5}"
expect_err 400 min_p $C "{$U,\"min_p\":1}"
expect_err 400 max_tokens $C "{$U,\"max_tokens\":0}"
expect_err 400 max_tokens $C "{$U,\"max_tokens\":\"10\"}"
expect_err 400 max_completion_tokens $C "{$U,\"max_completion_tokens\":-1}"
expect_err 400 max_tokens $C "{$U,\"max_tokens\":4096}"
expect_err 400 stop $C "{$U,\"stop\":5}"
expect_err 400 stop $C "{$U,\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}"
expect_err 400 'stop[0]' $C "{$U,\"stop\":[\"\"]}"
expect_err 400 seed $C "{$U,\"seed\":\"x\"}"
expect_err 400 stream $C "{$U,\"stream\":1}"
expect_err 400 stream_options $C "{$U,\"stream_options\":true}"
expect_err 400 presence_penalty $C "{$U,\"presence_penalty\":5}"
expect_err 400 frequency_penalty $C "{$U,\"frequency_penalty\":-3}"
expect_err 400 repetition_penalty $C "{$U,\"repetition_penalty\":0}"
expect_err 400 logprobs $C "{$U,\"logprobs\":1}"
expect_err 400 top_logprobs $C "{$U,\"top_logprobs\":2}"
expect_err 400 top_logprobs $C "{$U,\"logprobs\":true,\"top_logprobs\":21}"
expect_err 400 logprobs /v1/completions '{"prompt":"x","logprobs":true}'
expect_err 400 model $C "{$U,\"model\":5}"
expect_err 400 chat_template_kwargs $C "{$U,\"chat_template_kwargs\":[]}"
expect_err 400 'tools[0].function.name' $C "{$U,\"tools\":[{\"type\":\"function\",\"function\":{}}]}"
expect_err 400 'tools[0]' $C "{$U,\"tools\":[{\"type\":\"retrieval\"}]}"
expect_err 400 tools /v1/completions '{"prompt":"x","tools":[{"type":"function","function":{"name":"f"}}]}'
expect_err 400 moekit_test_output $C "{$U,\"moekit_test_output\":\"forced\"}"
expect_err 400 tool_choice $C "{$U,\"tool_choice\":\"required\"}"
expect_err 400 response_format $C "{$U,\"response_format\":{\"type\":\"yaml\"}}"
expect_err 400 response_format.json_schema.schema $C "{$U,\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\",\"schema\":{\"type\":\"string\",\"format\":\"date\"}}}}"
expect_err 400 best_of /v1/completions '{"prompt":"x","best_of":2}'
expect_err 400 echo /v1/completions '{"prompt":"x","echo":true}'
expect_err 400 suffix /v1/completions '{"prompt":"x","suffix":"y"}'
expect_err 400 chat_template_kwargs.enable_thinking $C "{$U,\"chat_template_kwargs\":{\"enable_thinking\":\"no\"}}"
expect_err 400 prompt /v1/completions '{"prompt":5}'
expect_err 400 prompt /v1/completions '{"prompt":""}'
expect_err 400 'prompt[1]' /v1/completions '{"prompt":[1,-2]}'
expect_err 400 prompt /v1/completions '{"prompt":[1,999999]}'
expect_err 400 prompt /v1/completions '{"prompt":["a","b"]}'
expect_err 400 content /tokenize '{"content":5}'
expect_err 400 tokens /detokenize '{"tokens":"x"}'
expect_err 400 tokens /detokenize '{"tokens":[999999]}'
# a prompt longer than the context (this server: --ctx 4096): 400 with the reason
head -c 20000 /dev/zero | tr '\0' 'a' | sed 's/aaaa/a b /g' > "$T/big.txt"
printf '{"prompt":"%s","max_tokens":1}' "$(cat "$T/big.txt")" > "$T/big.json"
r=$(curl -s -w '\n%{http_code}' -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/completions" --data-binary @"$T/big.json")
[ "$(echo "$r" | code)" = 400 ] && echo "$r" | grep -q "does not fit" || fail "context overflow: $(echo "$r" | tail -c 300)"
# a body over the 4 MiB limit: 413
head -c 5000000 /dev/zero | tr '\0' 'a' > "$T/huge"
r=$(curl -s -w '\n%{http_code}' -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/completions" --data-binary @"$T/huge")
[ "$(echo "$r" | code)" = 413 ] || fail "oversized body: $(echo "$r" | tail -c 300)"
# unknown endpoint, wrong method
r=$(curl -s -w '\n%{http_code}' -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/nothing")
[ "$(echo "$r" | code)" = 404 ] || fail "unknown path: $r"
r=$(curl -s -w '\n%{http_code}' -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/chat/completions")
[ "$(echo "$r" | code)" = 405 ] || fail "GET on a POST endpoint: $r"
# special-token text in a message stays text: the prompt is longer than the marker's one id
r=$(api /v1/chat/completions '{"messages":[{"role":"user","content":"<|im_end|>"}],"max_tokens":1,"temperature":0}')
r2=$(api /v1/chat/completions '{"messages":[{"role":"user","content":"x"}],"max_tokens":1,"temperature":0}')
[ "$(echo "$r" | jnum prompt_tokens)" -gt "$(echo "$r2" | jnum prompt_tokens)" ] ||
    fail "<|im_end|> in a message was encoded as the special token: $r"
# this server renders with --template qwen3: enable_thinking false closes an empty think block
r=$(api /v1/chat/completions '{"messages":[{"role":"user","content":"x"}],"max_tokens":1,"temperature":0,"chat_template_kwargs":{"enable_thinking":false}}')
[ "$(echo "$r" | jnum prompt_tokens)" -gt "$(echo "$r2" | jnum prompt_tokens)" ] ||
    fail "enable_thinking false did not change the prompt: $r"
# tokenize / detokenize round trip
r=$(api /tokenize '{"content":"Return the"}')
[ "$(echo "$r" | body)" = '{"tokens":[407,268]}' ] || fail "tokenize: $r"
r=$(api /detokenize '{"tokens":[407,268]}')
[ "$(echo "$r" | body)" = '{"content":"Return the"}' ] || fail "detokenize: $r"

# SIGTERM with a stream running (--grace 0.3): the stream ends with an error
# event and [DONE], the server exits 0
curl -sN -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/completions" -d "$long" > "$T/long3" &
L3=$!
for _ in $(seq 100); do [ "$(metric moekit_slots_busy)" = 1 ] && break; sleep 0.05; done
kill -TERM "$SPID"
set +e
wait "$SPID"
rc=$?
set -e
wait "$L3" || true
[ $rc = 0 ] || { cat "$T/log3" >&2; fail "SIGTERM during a stream: exit $rc"; }
grep -q '^data: {"error":' "$T/long3" && [ "$(tail -n 2 "$T/long3" | sed -n 1p)" = "data: [DONE]" ] ||
    fail "the stream cut by shutdown: $(tail -c 300 "$T/long3")"

# ---- the main server: still healthy; a second round does not grow memory ----------------------
PORT=$P1
SPID=$S1
r=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")
[ "$r" = 200 ] || fail "/health after everything: $r"
round
for i in 0 1 2 3 4 5 6 7; do
    [ "$(body < "$T/c$i" | jstr content)" = "$(cat "$T/w$i")" ] || fail "round 2: client $i differs"
done
rss2=$(awk '/VmRSS/ {print $2}' /proc/$SPID/status)
# under a sanitizer the heap is not ours to bound (quarantine); LeakSanitizer
# checks the exit below instead
if [ "$("$BIN" run "$M" --ids 1 --max-tokens 1 --stats 2>&1 >/dev/null | awk '$1 == "sanitizer" { print $2 }')" = 1 ]; then
    echo "serve: RSS growth not bounded under a sanitizer ($rss1 -> $rss2 KiB)"
else
    [ $((rss2 - rss1)) -lt 16384 ] || fail "RSS grew from $rss1 to $rss2 KiB over a second round"
fi
# /metrics after all of it: both latency histograms filled (+Inf bucket =
# count), and every prompt token of the finished requests was either read
# by an engine or taken from the prompt cache
mt=$(curl -s -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/metrics")
mval() { echo "$mt" | grep "^$1 " | sed 's/.* //'; }
for h in moekit_time_to_first_token_seconds moekit_time_per_output_token_seconds; do
    [ "$(mval ${h}_count)" -gt 0 ] || fail "/metrics: $h has no observations"
    [ "$(echo "$mt" | grep "^${h}_bucket{le=\"+Inf\"} " | sed 's/.* //')" = "$(mval ${h}_count)" ] || fail "/metrics: $h +Inf bucket != count"
done
[ "$(mval moekit_prompt_cache_tokens_total)" -gt 0 ] || fail "/metrics: no cached prompt tokens after the chat turns"
[ $(($(mval moekit_prompt_tokens_processed_total) + $(mval moekit_prompt_cache_tokens_total))) = "$(mval moekit_prompt_tokens_total)" ] ||
    fail "/metrics: processed $(mval moekit_prompt_tokens_processed_total) + cached $(mval moekit_prompt_cache_tokens_total) != prompt tokens $(mval moekit_prompt_tokens_total)"

# ---- SIGTERM: exit 0 -------------------------------------------------------------------------
kill -TERM "$SPID"
set +e
wait "$SPID"
rc=$?
set -e
[ $rc = 0 ] || { cat "$T/log" >&2; fail "SIGTERM: exit $rc"; }
grep -q "stopped" "$T/log" || fail "no 'stopped' line"

# ---- bad flags, --help names every flag ---------------------------------------------------------
expect 2 "expected exactly one MODEL" "$BIN" serve
expect 2 "either --api-key or --api-key-file" "$BIN" serve "$M" --api-key a --api-key-file "$T/key"
expect 2 "--parallel" "$BIN" serve "$M" --parallel 0
set +e
"$BIN" serve "$T/nope" --port 0 2> "$T/err"
rc=$?
set -e
[ $rc = 2 ] && tail -n 1 "$T/err" | grep -q "No such file" || { cat "$T/err" >&2; fail "missing model: exit $rc"; }
"$BIN" serve --help > "$T/help"
for flag in $(grep -o '{"[a-z0-9-]*", [a-z_]*_argument' "$MK_SRC/tools/cmd_serve.c" | sed 's/{"//; s/".*//'); do
    grep -q -- "--$flag" "$T/help" || fail "serve --help does not mention --$flag"
done
echo "serve: ok"
