#!/usr/bin/env bash
# Test-only: the official Anthropic JavaScript client, for tests/cli/serve_anthropic.sh
# (an independent client of moekit serve's /v1/messages: its request shapes,
# SSE event parsing and error classes are Anthropic's, not ours).
#
# Installs, with npm, into $REPO/.openai-client (gitignored, never committed),
# the folder of the test-only `openai` client, so the tests link one
# node_modules. The version is pinned so the client does not move under the
# test. Idempotent: when the pinned version is already present nothing is
# fetched. Run from the repository root (or set REPO).
set -euo pipefail

REPO="${REPO:-$(pwd)}"
DEST="$REPO/.openai-client"
PKG="@anthropic-ai/sdk"
VER="0.71.2"   # runs on Debian 12's Node 18

if ! command -v npm >/dev/null 2>&1; then
    echo "anthropic.sh: npm not found; install Node.js >= 18 (Debian: apt-get install nodejs npm)" >&2
    exit 1
fi

pj="$DEST/node_modules/$PKG/package.json"
if [ -f "$pj" ] && grep -q "\"version\": *\"$VER\"" "$pj"; then
    echo "anthropic.sh: $PKG@$VER already in $DEST"
    exit 0
fi

mkdir -p "$DEST"
[ -f "$DEST/package.json" ] || echo '{"name":"moekit-openai-client","private":true}' >"$DEST/package.json"
npm install --prefix "$DEST" --no-audit --no-fund --loglevel=error "$PKG@$VER"
[ -f "$pj" ] && grep -q "\"version\": *\"$VER\"" "$pj" ||
    { echo "anthropic.sh: npm install finished but $PKG@$VER is missing in $DEST" >&2; exit 1; }
echo "anthropic.sh: installed $PKG@$VER into $DEST"
