#!/usr/bin/env bash
# Test-only: playwright-core, the browser driver of tests/cli/serve_webui.sh
# (the built-in web page at `/` loaded, typed into and read back in a real
# browser). Only the driver: no browser is downloaded; the test launches
# Debian's `chromium` (installed by scripts/install-deps.sh) through its
# executablePath.
#
# Installs, with npm, into $REPO/.openai-client (gitignored, never committed),
# the folder of the other test-only npm clients, so the tests link one
# node_modules. The version is pinned so the driver does not move under the
# test. Idempotent: when the pinned version is already present nothing is
# fetched. Run from the repository root (or set REPO).
set -euo pipefail

REPO="${REPO:-$(pwd)}"
DEST="$REPO/.openai-client"
PKG="playwright-core"
VER="1.61.1"   # the last release that runs on Debian 12's Node 18 (1.62 needs Node 20)

if ! command -v npm >/dev/null 2>&1; then
    echo "playwright.sh: npm not found; install Node.js >= 18 (Debian: apt-get install nodejs npm)" >&2
    exit 1
fi

pj="$DEST/node_modules/$PKG/package.json"
if [ -f "$pj" ] && grep -q "\"version\": *\"$VER\"" "$pj"; then
    echo "playwright.sh: $PKG@$VER already in $DEST"
    exit 0
fi

mkdir -p "$DEST"
[ -f "$DEST/package.json" ] || echo '{"name":"moekit-openai-client","private":true}' >"$DEST/package.json"
# playwright-core has no install script and downloads no browser by itself;
# the variable keeps it that way should a later version add one.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 \
    npm install --prefix "$DEST" --no-audit --no-fund --loglevel=error "$PKG@$VER"
[ -f "$pj" ] && grep -q "\"version\": *\"$VER\"" "$pj" ||
    { echo "playwright.sh: npm install finished but $PKG@$VER is missing in $DEST" >&2; exit 1; }
echo "playwright.sh: installed $PKG@$VER into $DEST"
