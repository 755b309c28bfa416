#!/usr/bin/env bash
# moekit serve for agents, with the official `openai` npm client
# (tests/cli/serve_tools.mjs): reasoning separated from the answer
# (reasoning_content, streamed as such), tool calls parsed into tool_calls
# (single, parallel, streamed: the client's own stream accumulator must
# rebuild them, and no markup may reach content), tool results round-tripping
# through the template, per chat template family. The tiny model cannot
# write tool calls, so the server runs with --test-output and each request
# names the text to generate ("moekit_test_output"): the tokens still flow
# through sampling, the stop logic, streaming and the parsers; the parsing is
# what is tested. Without node or the client the test skips and says why.
set -eu
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash" # fail
OAI=${MK_OPENAI_CLIENT:-$MK_SRC/.openai-client} # the test-only client folder
CLIENT=$OAI/node_modules/openai
if ! command -v node >/dev/null 2>&1 || [ ! -d "$CLIENT" ]; then
    echo "skip: the openai npm client is not installed (run scripts/install-deps.sh; needs node and npm)"
    exit 77
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-serve-tools-XXXXXX")
SPID=
trap '[ -n "$SPID" ] && kill "$SPID" 2>/dev/null; rm -rf "$T"' EXIT
M=$TINYM/bf16
ln -s "$OAI/node_modules" "$T/node_modules"
cp "$MK_SRC/tests/cli/serve_tools.mjs" "$T/"

serve() { # TEMPLATE: start a server rendering with it, PORT set
    "$BIN" serve "$M" --port 0 --threads 2 --parallel 2 --alias tiny --template "$1" --test-output \
        2> "$T/log.$1" &
    SPID=$!
    PORT=
    for _ in $(seq 100); do
        PORT=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$T/log.$1" | sed 's/.*://' || true)
        [ -n "$PORT" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")" = 200 ] && break
        sleep 0.1
    done
    [ -n "$PORT" ] || { cat "$T/log.$1" >&2; fail "server ($1) did not start"; }
}
stop() {
    kill -TERM "$SPID"
    wait "$SPID" || fail "SIGTERM: exit $?"
    SPID=
}

for tpl in qwen3 qwen3-think qwen3.5 glm4 glm4.7 minimax-m2 kimi-k2 deepseek3.2 harmony; do
    serve "$tpl"
    PORT=$PORT TEMPLATE=$tpl node "$T/serve_tools.mjs" || fail "the openai client's checks failed ($tpl)"
    stop
done
echo "serve_tools: ok"
