#!/usr/bin/env bash
# moekit serve's OpenAI Responses API (/v1/responses, what Codex CLI speaks)
# with the official `openai` npm client (tests/cli/serve_responses.mjs):
# a plain round trip (greedy text equal to chat completions'), usage against
# /tokenize of the Qwen3 template's text, the streamed event sequence and its
# sequence_numbers, the client's own stream accumulator, a function call and
# its function_call_output round trip through the template, reasoning items,
# and fields refused with a 400 naming them. As in serve_tools.sh the server
# runs with --test-output so the tiny model "writes" reasoning and tool
# calls; the parsing and the API's shapes are what is tested. The client is
# test-only (scripts/install-deps.d/openai.sh, in .openai-client/; another
# folder through MK_OPENAI_CLIENT); without node or it the test skips.
set -eu
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash" # fail
OAI=${MK_OPENAI_CLIENT:-$MK_SRC/.openai-client} # the test-only client folder
if ! command -v node >/dev/null 2>&1 || [ ! -d "$OAI/node_modules/openai" ]; then
    echo "skip: the openai npm client is not installed (run scripts/install-deps.sh; needs node and npm)"
    exit 77
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-serve-resp-XXXXXX")
SPID=
trap '[ -n "$SPID" ] && kill "$SPID" 2>/dev/null; rm -rf "$T"' EXIT
KEY=sk-resp-$$
ln -s "$OAI/node_modules" "$T/node_modules"
cp "$MK_SRC/tests/cli/serve_responses.mjs" "$T/"
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
PORT=$PORT KEY=$KEY node "$T/serve_responses.mjs" || fail "the openai client's checks failed"
kill -TERM "$SPID"
wait "$SPID" || fail "SIGTERM: exit $?"
SPID=
echo "serve_responses: ok"
