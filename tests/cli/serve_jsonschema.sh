#!/usr/bin/env bash
# response_format (json_object, json_schema) through the official `openai` npm
# client (tests/cli/serve_jsonschema.mjs): every supported schema feature, 100
# sampled generations each (20 under the sanitizers, except the schemas with 2-5
# instances), all parse and validate; a tight max_tokens still closes, a too
# small one is reported as length; the Responses API's
# text.format; unsupported keywords and combinations give 400, as do
# Anthropic's structured outputs on /v1/messages. Then a thinking template:
# refused unless the request turns thinking off (chat and Responses). The client is test-only (scripts/install-deps.d/openai.sh
# installs it into .openai-client/, or MK_OPENAI_CLIENT names the folder that
# holds its node_modules); without node or the client the test skips, saying why.
# no pipefail: `echo "$r" | grep -q` would fail whenever grep stops reading early (SIGPIPE)
set -eu
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash" # fail
CDIR=${MK_OPENAI_CLIENT:-$MK_SRC/.openai-client}
if ! command -v node >/dev/null 2>&1 || [ ! -d "$CDIR/node_modules/openai" ]; then
    echo "skip: the openai npm client is not installed in $CDIR (run scripts/install-deps.sh; needs node and npm)"
    exit 77
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-serve-js-XXXXXX")
SPID=
trap '[ -n "$SPID" ] && kill "$SPID" 2>/dev/null; rm -rf "$T"' EXIT
M=$TINYM/bf16

start() { # LOG ARGS...: start a server, set SPID and PORT
    local log=$1
    shift
    "$BIN" serve "$M" --port 0 --threads 2 --alias tiny "$@" 2> "$log" &
    SPID=$!
    PORT=
    for _ in $(seq 100); do
        PORT=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$log" | sed 's/.*://' || true)
        [ -n "$PORT" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")" = 200 ] && break
        sleep 0.1
    done
    [ -n "$PORT" ] || { cat "$log" >&2; fail "server did not start"; }
}
stop() {
    kill -TERM "$SPID"
    wait "$SPID" || fail "SIGTERM: exit $?"
    SPID=
}

start "$T/log" --parallel 4
ln -s "$CDIR/node_modules" "$T/node_modules"
cp "$MK_SRC/tests/cli/serve_jsonschema.mjs" "$T/"
# the sanitizer build (MK_TEST_SMALL=1): every feature's path on 20 generations; the 100 that
# show the grammar holds under sampling are the main build's
N=$([ "${MK_TEST_SMALL:-0}" = 1 ] && echo 20 || echo 100)
PORT=$PORT N=$N node "$T/serve_jsonschema.mjs" || fail "the openai client's checks failed"
# Anthropic's structured outputs are not offered on /v1/messages: refused, not ignored
for b in '"output_format":{"type":"json_schema","schema":{"type":"object"}}' \
         '"output_config":{"format":{"type":"json_schema","schema":{"type":"object"}}}'; do
    r=$(curl -s -w '\n%{http_code}' "http://127.0.0.1:$PORT/v1/messages" \
        -d "{\"max_tokens\":8,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],$b}")
    [ "$(echo "$r" | tail -1)" = 400 ] && echo "$r" | grep -q 'output_\(format\|config.format\): structured output' ||
        fail "/v1/messages $b: not refused: $r"
done
stop

# a template that opens a thinking block: the reasoning cannot be JSON
start "$T/log2" --template qwen3-think
body='"messages":[{"role":"user","content":"x"}],"max_tokens":24,"response_format":{"type":"json_object"}'
r=$(curl -s -w '\n%{http_code}' "http://127.0.0.1:$PORT/v1/chat/completions" -d "{$body}")
[ "$(echo "$r" | tail -1)" = 400 ] && echo "$r" | grep -q 'enable_thinking' ||
    fail "thinking template: not refused: $r"
r=$(curl -s "http://127.0.0.1:$PORT/v1/chat/completions" -d "{$body,\"chat_template_kwargs\":{\"enable_thinking\":false}}")
echo "$r" | node -e '
let s = "";
process.stdin.on("data", (d) => (s += d)).on("end", () => {
    const c = JSON.parse(s).choices[0];
    const v = JSON.parse(c.message.content);
    if (c.finish_reason !== "stop" || typeof v !== "object" || v === null || Array.isArray(v)) process.exit(1);
});' || fail "thinking off: not a JSON object: $r"
# the Responses API: refused naming text.format; reasoning.effort "none" turns thinking off
body='"input":"x","max_output_tokens":24,"text":{"format":{"type":"json_object"}}'
r=$(curl -s -w '\n%{http_code}' "http://127.0.0.1:$PORT/v1/responses" -d "{$body}")
[ "$(echo "$r" | tail -1)" = 400 ] && echo "$r" | grep -q '"param":"text.format"' && echo "$r" | grep -q 'reasoning.effort' ||
    fail "responses, thinking template: not refused: $r"
r=$(curl -s "http://127.0.0.1:$PORT/v1/responses" -d "{$body,\"reasoning\":{\"effort\":\"none\"}}")
echo "$r" | node -e '
let s = "";
process.stdin.on("data", (d) => (s += d)).on("end", () => {
    const o = JSON.parse(s);
    const m = o.output.find((i) => i.type === "message");
    const v = JSON.parse(m.content[0].text);
    if (o.status !== "completed" || typeof v !== "object" || v === null || Array.isArray(v)) process.exit(1);
});' || fail "responses, effort none: not a JSON object: $r"
stop
echo "serve_jsonschema: ok"
