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
#   .peers/bin/llama-server          llama.cpp's own tools/server (with the tools/mtmd library it links and
#                                    cpp-httplib) against them, without the web UI (an empty asset table
#                                    from tools/ui/embed.cpp): the peer of bench/serve_cache_bench.sh.
#                                    The slowest part (about 60 C++ files): compiled LLAMA_JOBS (default 2)
#                                    at a time into .peers/obj-server-VER, kept, so a re-run after a failure
#                                    or a new stamp only compiles what is missing. A failure here skips
#                                    llama-server alone (the other tools stay installed).
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

# llama-server from the cloned source $S into $B (see the header); never fails the script.
build_server() {
    local S=$1 B=$2 O="$DEST/obj-server-$VER" jobs="${LLAMA_JOBS:-2}"
    local sskip
    sskip() { echo "llama.sh: llama-server SKIPPED: $*; bench/serve_cache_bench.sh runs without it" >&2; }
    mkdir -p "$O/ui"
    # the web UI's asset table, empty (no npm build, no download)
    g++ -std=c++17 -O1 -w "$S/tools/ui/embed.cpp" -o "$O/ui/embed" && "$O/ui/embed" "$O/ui/ui.cpp" "$O/ui/ui.h" \
        >/dev/null || { sskip "the empty UI table could not be generated"; return 0; }
    local srcs=(tools/server/{server-chat,server-task,server-queue,server-common,server-context,server-stream}.cpp
                tools/server/{server-tools,server-mcp,server-schema,server,server-http,server-models,main}.cpp
                tools/mtmd/{mtmd,mtmd-audio,mtmd-image,mtmd-helper,mtmd-helper-gen,clip}.cpp
                vendor/cpp-httplib/httplib.cpp vendor/hash/hash.cpp)
    local f
    # tools/mtmd's model files, as its CMakeLists lists them
    for f in $(sed -n 's/^ *\(models\/[A-Za-z0-9_.-]*\.cpp\).*/\1/p' "$S/tools/mtmd/CMakeLists.txt"); do
        srcs+=("tools/mtmd/$f")
    done
    local flags=(-std=c++17 -O2 -DNDEBUG -w -fPIC -DLLAMA_SUBPROCESS -DMTMD_VIDEO
                 -DCPPHTTPLIB_FORM_URL_ENCODED_PAYLOAD_MAX_LENGTH=1048576 -DCPPHTTPLIB_LISTEN_BACKLOG=512
                 -DCPPHTTPLIB_REQUEST_URI_MAX_LENGTH=32768 -DCPPHTTPLIB_TCP_NODELAY=1
                 -I"$S/include" -I"$S/ggml/include" -I"$S/common" -I"$S/vendor" -I"$S/tools/mtmd"
                 -I"$S/tools/server" -I"$S" -I"$O/ui")
    printf '%s\n' "${srcs[@]}" "$O/ui/ui.cpp" | ONE="$O" SRC="$S" xargs -P "$jobs" -I{} bash -c '
        f={}; case $f in /*) src=$f ;; *) src=$SRC/$f ;; esac
        o=$ONE/$(echo "$f" | tr / _).o
        [ -s "$o" ] || { g++ "$@" -c "$src" -o "$o.$$.tmp" && mv -f "$o.$$.tmp" "$o"; }' _ "${flags[@]}" ||
        { sskip "compiling its sources failed (objects so far kept in $O)"; return 0; }
    local objs=()
    for f in "${srcs[@]}" "$O/ui/ui.cpp"; do objs+=("$O/$(echo "$f" | tr / _).o"); done
    for f in xxhash/xxhash sha256/sha256; do
        [ -s "$O/$(basename $f).o" ] || gcc -O2 -w -fPIC -I"$S/vendor/hash" -c "$S/vendor/hash/$f.c" -o "$O/$(basename $f).o" ||
            { sskip "compiling vendor/hash/$f.c failed"; return 0; }
        objs+=("$O/$(basename $f).o")
    done
    [ -s "$O/sha1.o" ] || g++ -x c++ -O2 -w -fPIC -I"$S/vendor/hash" -c "$S/vendor/hash/sha1/sha1.c" -o "$O/sha1.o" ||
        { sskip "compiling vendor/hash/sha1/sha1.c failed"; return 0; }
    objs+=("$O/sha1.o")
    g++ "${objs[@]}" -o "$B/llama-server.tmp" "${LINK[@]}" || { sskip "linking failed"; return 0; }
    "$B/llama-server.tmp" --version >/dev/null 2>&1 || { sskip "the binary does not run"; rm -f "$B/llama-server.tmp"; return 0; }
    mv -f "$B/llama-server.tmp" "$B/llama-server"
    echo "llama.sh: built llama-server into $B"
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$VER $SRC_HASH" ] && [ -x "$DEST/bin/mk_llama" ]; then
    if [ ! -x "$DEST/bin/llama-server" ]; then
        S="$DEST/llama.cpp"
        B="$DEST/bin"
        LINK=(-L"$B" -l:libllama-common.so -l:libllama.v0.4.0.so -l:libggml.v0.4.0.so -l:libggml-base.so
              -Wl,-rpath,'$ORIGIN' -pthread)
        build_server "$S" "$B"
    fi
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

# built into bin.new and swapped in at the end: tests using the installed peer meanwhile keep it
rm -rf "$DEST/bin.new"
mkdir -p "$DEST/bin.new"
cp "$LIBS"/*.so "$DEST/bin.new/"
B="$DEST/bin.new"
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
rm -rf "$DEST/bin.old"
[ ! -d "$DEST/bin" ] || mv "$DEST/bin" "$DEST/bin.old"
mv "$DEST/bin.new" "$DEST/bin"
rm -rf "$DEST/bin.old"
echo "$VER $SRC_HASH" >"$STAMP"
B="$DEST/bin"
LINK=(-L"$B" -l:libllama-common.so -l:libllama.v0.4.0.so -l:libggml.v0.4.0.so -l:libggml-base.so
      -Wl,-rpath,'$ORIGIN' -pthread)
build_server "$S" "$B"
echo "llama.sh: installed the llama.cpp peer (v0.4.0 from node-llama-cpp $VER) into $DEST"
