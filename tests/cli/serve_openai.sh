#!/usr/bin/env bash
# moekit serve with the official `openai` npm client (tests/cli/serve_openai.mjs):
# an independent client's request shapes, SSE parsing and typed errors. The
# client is test-only, installed by scripts/install-deps.d/openai.sh into
# .openai-client/ (gitignored); without node or that folder the test skips and
# says why. After the client's aborted stream the slot must be free again.
# no pipefail: `echo "$r" | grep -q` would fail whenever grep stops reading early (SIGPIPE)
set -eu
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash" # fail
CLIENT=$MK_SRC/.openai-client/node_modules/openai
if ! command -v node >/dev/null 2>&1 || [ ! -d "$CLIENT" ]; then
    echo "skip: the openai npm client is not installed (run scripts/install-deps.sh; needs node and npm)"
    exit 77
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-serve-oai-XXXXXX")
SPID=
trap '[ -n "$SPID" ] && kill "$SPID" 2>/dev/null; rm -rf "$T"' EXIT
M=$TINYM/bf16
KEY=sk-oai-$$

"$BIN" run "$M" --threads 2 --json --chat --prompt "Return the list." --max-tokens 20 > "$T/chat.json"
"$BIN" run "$M" --threads 2 --json --prompt "Return the" --max-tokens 48 > "$T/compl.json"

"$BIN" serve "$M" --port 0 --threads 2 --parallel 2 --alias tiny --api-key "$KEY" 2> "$T/log" &
SPID=$!
PORT=
for _ in $(seq 100); do
    PORT=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$T/log" | sed 's/.*://' || true)
    [ -n "$PORT" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")" = 200 ] && break
    sleep 0.1
done
[ -n "$PORT" ] || { cat "$T/log" >&2; fail "server did not start"; }

# the script imports 'openai' from the test-only folder
ln -s "$MK_SRC/.openai-client/node_modules" "$T/node_modules"
cp "$MK_SRC/tests/cli/serve_openai.mjs" "$T/"
PORT=$PORT KEY=$KEY WANT_CHAT=$T/chat.json WANT_COMPL=$T/compl.json node "$T/serve_openai.mjs" ||
    fail "the openai client's checks failed"

metric() { curl -s -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/metrics" | grep "^$1 " | sed 's/.* //'; }
for _ in $(seq 100); do [ "$(metric moekit_slots_busy)" = 0 ] && break; sleep 0.05; done
[ "$(metric moekit_slots_busy)" = 0 ] || fail "a slot is still busy after the client aborted its stream"
[ "$(metric moekit_requests_cancelled_total)" -ge 1 ] ||
    { curl -s -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/metrics" | grep -v "^#" >&2; fail "the aborted stream was not cancelled"; }
curl -s -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/metrics" > "$T/metrics"
kill -TERM "$SPID"
wait "$SPID" || fail "SIGTERM: exit $?"
SPID=
echo "serve_openai: ok"
