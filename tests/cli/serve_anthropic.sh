#!/usr/bin/env bash
# moekit serve's Anthropic Messages API (/v1/messages, /v1/messages/count_tokens)
# with the official `@anthropic-ai/sdk` npm client (tests/cli/serve_anthropic.mjs):
# system, content blocks, thinking and tool_use blocks, tool results round
# tripping, stop reasons, the SSE event order and the client's own stream
# accumulator, count_tokens, errors. As in serve_tools.sh the server runs with
# --test-output so the tiny model "writes" reasoning and tool calls; the
# parsing and the API's shapes are what is tested. The client is test-only
# (scripts/install-deps.d/anthropic.sh, beside `openai` in .openai-client/);
# without node or it the test skips and says why.
set -eu
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash" # fail
OAI=${MK_OPENAI_CLIENT:-$MK_SRC/.openai-client} # the test-only client folder
if ! command -v node >/dev/null 2>&1 || [ ! -d "$OAI/node_modules/@anthropic-ai/sdk" ]; then
    echo "skip: the @anthropic-ai/sdk npm client is not installed (run scripts/install-deps.sh; needs node and npm)"
    exit 77
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-serve-anth-XXXXXX")
SPID=
trap '[ -n "$SPID" ] && kill "$SPID" 2>/dev/null; rm -rf "$T"' EXIT
KEY=sk-ant-$$
ln -s "$OAI/node_modules" "$T/node_modules"
cp "$MK_SRC/tests/cli/serve_anthropic.mjs" "$T/"
"$BIN" serve "$TINYM/bf16" --port 0 --threads 2 --parallel 2 --alias tiny --template qwen3 --test-output \
    --api-key "$KEY" 2> "$T/log" &
SPID=$!
PORT=
for _ in $(seq 100); do
    PORT=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$T/log" | sed 's/.*://' || true)
    [ -n "$PORT" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")" = 200 ] && break
    sleep 0.1
done
[ -n "$PORT" ] || { cat "$T/log" >&2; fail "server did not start"; }
PORT=$PORT KEY=$KEY node "$T/serve_anthropic.mjs" || fail "the anthropic client's checks failed"
kill -TERM "$SPID"
wait "$SPID" || fail "SIGTERM: exit $?"
SPID=
echo "serve_anthropic: ok"
