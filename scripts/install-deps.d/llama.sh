#!/usr/bin/env bash
# Test-only llama.cpp: the oracle of tests/cli/gguf_llama_*.sh and the peer of bench/bench_peer.sh.
#
# Installs, with npm, into $REPO/.peers (gitignored, never committed):
#   node-llama-cpp 3.21.1            its llama/gitRelease.bundle is the llama.cpp source (release v0.4.0)
#   @node-llama-cpp/linux-x64 3.21.1 llama.cpp's prebuilt CPU libraries for that source (libllama,
#                                    libggml*, libllama-common, one libggml-cpu-* per x86 level)
# then, without building llama.cpp itself (a few seconds instead of an hour on 2 cores):
#   .peers/llama.cpp                 the bundle cloned (headers, tools' sources)
#   .peers/bin/*.so                  the prebuilt libraries (ggml loads the best libggml-cpu-* from the
#                                    executable's directory)
#   .peers/bin/llama-bench           llama.cpp's own tools/llama-bench compiled against them
#   .peers/bin/llama-quantize        llama.cpp's own tools/quantize
#   .peers/bin/mk_llama              tests/peer/mk_llama.c: logits / tokenize / tensor compare via the C API
# Versions are pinned. Idempotent: nothing is fetched or compiled when the stamp matches. Without
# npm, network, x86-64 Linux or a C++ compiler it prints why and exits 0: the tests that need it
# skip with that reason (make test goes on). Run from the repository root (or set REPO).
set -euo pipefail

REPO="${REPO:-$(pwd)}"
DEST="$REPO/.peers"
VER=3.21.1
PKGS=("node-llama-cpp@$VER" "@node-llama-cpp/linux-x64@$VER")

skip() { echo "llama.sh: SKIPPED: $*; tests/cli/gguf_llama_*.sh and bench/bench_peer.sh will skip" >&2; exit 0; }

[ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] || skip "prebuilt llama.cpp is used on Linux x86-64 only"
command -v npm >/dev/null 2>&1 || skip "npm not found (Debian: apt-get install nodejs npm)"
command -v g++ >/dev/null 2>&1 || skip "g++ not found (build-essential)"
command -v git >/dev/null 2>&1 || skip "git not found"

SRC_HASH=$(cat "$REPO/tests/peer/mk_llama.c" "$0" | sha256sum | cut -c1-16)
STAMP="$DEST/.stamp"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$VER $SRC_HASH" ] && [ -x "$DEST/bin/mk_llama" ]; then
    echo "llama.sh: llama.cpp peer already in $DEST"
    exit 0
fi

mkdir -p "$DEST"
[ -f "$DEST/package.json" ] || echo '{"name":"moekit-peers","private":true}' >"$DEST/package.json"
have_pkgs() {
    local spec name pj
    for spec in "${PKGS[@]}"; do
        name="${spec%@*}"
        pj="$DEST/node_modules/$name/package.json"
        [ -f "$pj" ] && grep -q "\"version\": *\"$VER\"" "$pj" || return 1
    done
}
if ! have_pkgs; then
    # --omit=optional: node-llama-cpp's optional dependencies are every platform's and GPU's binaries
    # (700 MB); the one we use is named explicitly. --ignore-scripts: its postinstall would build or
    # download llama.cpp on its own.
    npm install --prefix "$DEST" --no-audit --no-fund --loglevel=error --omit=optional --ignore-scripts \
        "${PKGS[@]}" || skip "npm install ${PKGS[*]} failed (no network?)"
    have_pkgs || skip "npm install finished but ${PKGS[*]} are missing in $DEST"
fi

NLC="$DEST/node_modules/node-llama-cpp/llama"
LIBS="$DEST/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"
[ -f "$NLC/gitRelease.bundle" ] || skip "$NLC/gitRelease.bundle is missing"
[ -f "$LIBS/libllama.v0.4.0.so" ] || skip "prebuilt libllama is missing in $LIBS"

rm -rf "$DEST/llama.cpp.tmp"
git clone -q "$NLC/gitRelease.bundle" "$DEST/llama.cpp.tmp" 2>/dev/null || skip "git clone of the bundle failed"
rm -rf "$DEST/llama.cpp"
mv "$DEST/llama.cpp.tmp" "$DEST/llama.cpp"
S="$DEST/llama.cpp"

rm -rf "$DEST/bin"
mkdir -p "$DEST/bin"
cp "$LIBS"/*.so "$DEST/bin/"
B="$DEST/bin"
INC=(-I"$S/include" -I"$S/ggml/include" -I"$S/common" -I"$S/vendor")
LINK=(-L"$B" -l:libllama-common.so -l:libllama.v0.4.0.so -l:libggml.v0.4.0.so -l:libggml-base.so
      -Wl,-rpath,'$ORIGIN' -pthread)
echo "llama.sh: compiling llama-bench, llama-quantize and mk_llama against the prebuilt libraries"
g++ -std=c++17 -O2 -DNDEBUG -w "${INC[@]}" "$S/tools/llama-bench/llama-bench.cpp" "$S/tools/llama-bench/main.cpp" \
    -o "$B/llama-bench" "${LINK[@]}" || skip "compiling llama-bench failed"
g++ -std=c++17 -O2 -DNDEBUG -w "${INC[@]}" "$S/tools/quantize/quantize.cpp" "$S/tools/quantize/main.cpp" \
    -o "$B/llama-quantize" "${LINK[@]}" || skip "compiling llama-quantize failed"
gcc -std=c11 -O2 -Wall "${INC[@]}" "$REPO/tests/peer/mk_llama.c" -o "$B/mk_llama" "${LINK[@]}" ||
    skip "compiling mk_llama failed"
rc=0; "$B/mk_llama" 2>/dev/null || rc=$?
[ "$rc" -eq 2 ] || skip "mk_llama does not run (exit $rc)"
echo "$VER $SRC_HASH" >"$STAMP"
echo "llama.sh: installed the llama.cpp peer (v0.4.0 from node-llama-cpp $VER) into $DEST"
