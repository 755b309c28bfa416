#!/usr/bin/env bash
# Test-only: the official OpenAI JavaScript client, for tests/cli/serve_openai.sh
# (an independent client of `moekit serve`: its request shapes, SSE parsing and
# error handling are OpenAI's, not ours).
#
# Installs, with npm, into $REPO/.openai-client (gitignored, never committed).
# The version is pinned so the client does not move under the test. Idempotent:
# when the pinned version is already present nothing is fetched. Run from the
# repository root (or set REPO).
set -euo pipefail

REPO="${REPO:-$(pwd)}"
DEST="$REPO/.openai-client"
PKG="openai"
VER="5.23.2"   # v5 runs on Debian 12's Node 18 (v7 needs Node 22)

if ! command -v npm >/dev/null 2>&1; then
    echo "openai.sh: npm not found; install Node.js >= 18 (Debian: apt-get install nodejs npm)" >&2
    exit 1
fi

pj="$DEST/node_modules/$PKG/package.json"
if [ -f "$pj" ] && grep -q "\"version\": *\"$VER\"" "$pj"; then
    echo "openai.sh: $PKG@$VER already in $DEST"
    exit 0
fi

mkdir -p "$DEST"
# A private package.json keeps npm from walking up into the repository.
[ -f "$DEST/package.json" ] || echo '{"name":"moekit-openai-client","private":true}' >"$DEST/package.json"
npm install --prefix "$DEST" --no-audit --no-fund --loglevel=error "$PKG@$VER"
[ -f "$pj" ] && grep -q "\"version\": *\"$VER\"" "$pj" ||
    { echo "openai.sh: npm install finished but $PKG@$VER is missing in $DEST" >&2; exit 1; }
echo "openai.sh: installed $PKG@$VER into $DEST"
