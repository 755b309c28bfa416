#!/usr/bin/env bash
# moekit serve's built-in web page (GET /, src/server/web) in a real browser:
# headless Chromium (Debian's `chromium`) driven by playwright-core
# (tests/cli/serve_webui.mjs). Here: the page's HTTP answers (CSP, ETag and
# 304, content types, no key needed for the page but for /v1/stats),
# /v1/stats of a streaming server before its first request, and --no-webui
# (404). There, on a server with a key and resident experts: the page loads
# without console errors or foreign requests, asks for the API key, streams
# an answer into the DOM in pieces, renders exactly the text a direct API
# call returns for the same greedy request, shows prompt-cache reuse on the
# second turn, its panel shows /v1/stats, and its stop button cancels a
# generation; on a server streaming its experts under --memory-budget: the
# panel's expert-cache hit rate, bytes read and memory are /v1/stats', and
# those are checked against the model's config.json, the budget and the
# kernel's VmRSS.
# The browser and the driver are test peers that scripts/install-deps.sh
# installs (apt `chromium`; scripts/install-deps.d/playwright.sh): unlike the
# npm API clients' tests this one FAILS without them, naming what is missing,
# so a CI run that lost them cannot pass by skipping the browser.
set -eu
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash" # fail
OAI=${MK_OPENAI_CLIENT:-$MK_SRC/.openai-client} # the test-only npm folder
CHROMIUM=${MK_CHROMIUM:-$(command -v chromium || true)}
command -v node >/dev/null 2>&1 ||
    fail "node is not installed (run scripts/install-deps.sh: it installs nodejs and npm)"
[ -n "$CHROMIUM" ] && [ -x "$CHROMIUM" ] ||
    fail "chromium is not installed (run scripts/install-deps.sh: Debian package 'chromium'; or set MK_CHROMIUM)"
[ -d "$OAI/node_modules/playwright-core" ] ||
    fail "playwright-core is not in $OAI/node_modules (run scripts/install-deps.sh: scripts/install-deps.d/playwright.sh)"
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-serve-webui-XXXXXX")
SPID=
trap '[ -n "$SPID" ] && kill "$SPID" 2>/dev/null; rm -rf "$T"' EXIT
KEY=sk-web-$$

start() { # start ARGS...: serve the tiny model, set PORT once /health is 200
    "$BIN" serve "$TINYM/bf16" --port 0 --threads 2 --alias tiny "$@" 2> "$T/log" &
    SPID=$!
    PORT=
    for _ in $(seq 600); do # polled until ready; 60 s for the sanitizer build
        kill -0 "$SPID" 2>/dev/null || { cat "$T/log" >&2; SPID=; fail "the server exited: serve $*"; }
        PORT=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$T/log" | sed 's/.*://' || true)
        [ -n "$PORT" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")" = 200 ] && return
        sleep 0.1
    done
    cat "$T/log" >&2
    fail "server did not start"
}
# browser MODE [VAR=VALUE...]: serve_webui.mjs against the running server
browser() {
    local mode=$1
    shift
    env "$@" MODE="$mode" PORT="$PORT" SPID="$SPID" CHROMIUM="$CHROMIUM" MODEL="$TINYM/bf16" \
        node "$T/serve_webui.mjs" || { tail -5 "$T/log" >&2; fail "the browser checks failed ($mode)"; }
}
stop() {
    kill -TERM "$SPID"
    wait "$SPID" || fail "SIGTERM: exit $?"
    SPID=
}
# hdr FILE NAME: a header's value in a curl -D dump
hdr() { grep -i "^$2:" "$1" | head -1 | sed 's/^[^:]*: *//' | tr -d '\r'; }
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }

start --api-key "$KEY" --template qwen3 --test-output # a template that reasons; a forced answer
U=http://127.0.0.1:$PORT
# the page and its files load without the key; the API does not
curl -s -D "$T/h" -o "$T/index.html" "$U/"
head -1 "$T/h" | grep -q " 200" || fail "GET /: $(head -1 "$T/h")"
[ "$(hdr "$T/h" content-type)" = "text/html; charset=utf-8" ] || fail "GET /: content type $(hdr "$T/h" content-type)"
cmp -s "$T/index.html" "$MK_SRC/src/server/web/index.html" || fail "GET /: not src/server/web/index.html"
CSP=$(hdr "$T/h" content-security-policy)
for d in "default-src 'none'" "script-src 'self'" "style-src 'self'" "connect-src 'self'" "frame-ancestors 'none'"; do
    case "; $CSP;" in *"; $d;"*) ;; *) fail "GET /: CSP '$CSP' lacks \"$d\"" ;; esac
done
case "$CSP" in *unsafe*|*"*"*|*http*) fail "GET /: CSP '$CSP' allows more than this origin" ;; esac
[ "$(hdr "$T/h" cache-control)" = no-cache ] || fail "GET /: Cache-Control $(hdr "$T/h" cache-control)"
[ "$(hdr "$T/h" x-content-type-options)" = nosniff ] || fail "GET /: no X-Content-Type-Options: nosniff"
for f in app.js:text/javascript style.css:text/css icon.svg:image/svg+xml; do
    n=${f%%:*}
    curl -s -D "$T/h" -o "$T/$n" "$U/assets/$n"
    cmp -s "$T/$n" "$MK_SRC/src/server/web/$n" || fail "GET /assets/$n: not src/server/web/$n"
    case "$(hdr "$T/h" content-type)" in "${f#*:}"*) ;; *) fail "GET /assets/$n: content type $(hdr "$T/h" content-type)" ;; esac
    [ -n "$(hdr "$T/h" content-security-policy)" ] || fail "GET /assets/$n: no CSP"
    # the ETag is the file's SHA-256 prefix (cmake/embed_web.cmake), computed here independently
    E=\"$(sha256sum "$MK_SRC/src/server/web/$n" | cut -c1-16)\"
    [ "$(hdr "$T/h" etag)" = "$E" ] || fail "GET /assets/$n: ETag $(hdr "$T/h" etag), expected $E"
    [ "$(code -H "If-None-Match: $E" "$U/assets/$n")" = 304 ] || fail "GET /assets/$n with its ETag: not 304"
    [ "$(code -H 'If-None-Match: "0000000000000000"' "$U/assets/$n")" = 200 ] || fail "GET /assets/$n, stale ETag: not 200"
done
[ "$(code -I "$U/")" = 200 ] || fail "HEAD /: not 200"
[ "$(code "$U/v1/stats")" = 401 ] || fail "GET /v1/stats without the key: not 401"
curl -s -H "Authorization: Bearer $KEY" "$U/v1/stats" > "$T/stats.json"
grep -q '"object":"moekit.stats"' "$T/stats.json" || fail "GET /v1/stats: $(cat "$T/stats.json")"
grep -q '"memory":{"rss_bytes":[1-9][0-9]*,"limit_bytes":[1-9]' "$T/stats.json" ||
    fail "GET /v1/stats: no memory figures: $(cat "$T/stats.json")"

# the browser: a chat with the key
ln -s "$OAI/node_modules" "$T/node_modules"
cp "$MK_SRC/tests/cli/serve_webui.mjs" "$T/"
browser chat KEY="$KEY"
stop

# experts streamed from the checkpoint under a budget with room for a
# quarter of the model's 64 experts (3 MiB of 192 KiB ones) above the least
# one that works, which the server names when refusing a smaller one
set +e
"$BIN" serve "$TINYM/bf16" --port 0 --threads 2 --stream-experts --memory-budget 1M 2> "$T/small"
rc=$?
set -e
[ $rc = 2 ] || fail "--memory-budget 1M: exit $rc, expected 2: $(cat "$T/small")"
LEAST=$(grep -o 'need at least [0-9]* bytes' "$T/small" | cut -d' ' -f4)
[ -n "$LEAST" ] || fail "--memory-budget 1M: the least budget is not named: $(cat "$T/small")"
BUDGET=$((LEAST + 3 * 1024 * 1024))
start --stream-experts --memory-budget "$BUDGET"
# before any request: the experts are said to stream, nothing read yet
# (failed before: /v1/stats said "streaming": false and /metrics had no
# expert figures until the scheduler's first step)
curl -s "http://127.0.0.1:$PORT/v1/stats" > "$T/stats.json"
grep -q '"experts":{"streaming":true,"hit_rate":0.0,"uses":0,"hits":0,"bytes_read":0}' "$T/stats.json" ||
    fail "streaming server, before any request: $(cat "$T/stats.json")"
grep -q "\"limit_bytes\":$BUDGET}" "$T/stats.json" || fail "limit_bytes is not --memory-budget $BUDGET: $(cat "$T/stats.json")"
curl -s "http://127.0.0.1:$PORT/metrics" | grep -q '^moekit_expert_bytes_read_total 0$' ||
    fail "streaming server, before any request: /metrics has no moekit_expert_bytes_read_total 0"
SAN=0
grep -q '^MK_SANITIZE:BOOL=ON$' "${MK_BUILD:-/nonexistent}/CMakeCache.txt" 2>/dev/null && SAN=1
browser stream BUDGET="$BUDGET" SANITIZED="$SAN"
stop

# --no-webui: the page's paths are unknown, the API is unchanged
start --no-webui
for p in / /assets/app.js; do
    [ "$(code "http://127.0.0.1:$PORT$p")" = 404 ] || fail "--no-webui: GET $p is not 404"
done
[ "$(code "http://127.0.0.1:$PORT/v1/stats")" = 200 ] || fail "--no-webui: GET /v1/stats is not 200"
"$BIN" serve --help | grep -q -- "--no-webui" || fail "serve --help does not document --no-webui"
stop
echo "serve_webui: ok"
