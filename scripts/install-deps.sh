#!/usr/bin/env bash
# Install everything moekit needs to build and test on Debian 12 (OpenMPI
# is optional for the build: without it the scale-out mode and its tests are
# left out), then run
# each scripts/install-deps.d/*.sh (test-only tools, e.g. npm packages).
# Chromium is test-only: tests/cli/serve_webui.sh drives the built-in web
# page in it, headless (through playwright-core, scripts/install-deps.d).
# Idempotent: packages already present are skipped without touching apt.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake pkg-config clang llvm libclang-rt-14-dev
      libjansson-dev libmicrohttpd-dev libpcre2-dev libutf8proc-dev libxxhash-dev
      liburing-dev libcmocka-dev libopenblas-dev git
      openmpi-bin libopenmpi-dev
      chromium)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm run test-only tools (the independent tokenizer reference).
# Some images ship them outside dpkg (and Debian's npm then conflicts with
# that nodejs), so ask for the commands, not the packages.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

for f in scripts/install-deps.d/*.sh; do
  [ -e "$f" ] || continue
  bash "$f"
done
