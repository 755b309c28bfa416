#!/usr/bin/env bash
# Link a test binary of build/ against the library with one source file
# replaced by another version of it (e.g. the file without a fix), so a
# device call can show that a test fails without the fix (docs/CUDA.md
# "Status (session 29)"). The replacement is compiled with the original's
# flags (build/compile_commands.json), put into a copy of libmoekit.a in
# place of the original's object, and TARGET is linked with its own link
# line against that copy; build/ itself is left as it is.
#   usage: scripts/cuda-relink.sh TARGET SRC NEW_SRC OUT
#   e.g.   scripts/cuda-relink.sh test_engine_fixtures src/engine/forward.c /tmp/forward_nofix.c \
#              test_engine_fixtures_nofix
# OUT lands in build/ (scripts/cuda-prebuilt.sh packs only CMake targets: add it by hand, as
# session 29 did, or tar it beside them).
# A changed header (session 32): copy SRC into a scratch folder as NEW_SRC and the changed header
# into a cuda/ folder beside it (NEW_SRC's own folder is first on the include path, so its
# "cuda/x.cuh" resolves there and every other include as usual), e.g.
#   mkdir -p /tmp/rl/cuda && cp src/cuda/cuda_attn.cu /tmp/rl/ && sed '...' src/cuda/cuda_attn_gqa.cuh \
#       > /tmp/rl/cuda/cuda_attn_gqa.cuh && scripts/cuda-relink.sh bench_decode src/cuda/cuda_attn.cu \
#       /tmp/rl/cuda_attn.cu bench_decode_variant
set -euo pipefail
target=${1:?usage: see the header} src=${2:?} new=${3:?} out=${4:?}
b=$PWD/build
if [ ! -f "$b/compile_commands.json" ] || [ ! -f "$b/libmoekit.a" ]; then
    echo "cuda-relink: no build/ with libmoekit.a and compile_commands.json" >&2
    exit 2
fi
[ -f "$new" ] || { echo "cuda-relink: $new: no such file" >&2; exit 2; }
case $out in */* | "$target" | moekit) echo "cuda-relink: OUT must be a new plain name in build/" >&2; exit 2 ;; esac
# never over a build output: only over an earlier OUT of this script (its mark beside it)
if [ -e "$b/$out" ] && [ ! -f "$b/.relinked-$out" ]; then
    echo "cuda-relink: build/$out exists and is not an earlier relink's output: pick another name" >&2
    exit 2
fi
cmake --build "$b" -j2 --target "$target" > /dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
abs=$(cd "$(dirname "$src")" && pwd)/$(basename "$src")
newabs=$(cd "$(dirname "$new")" && pwd)/$(basename "$new")
obj=$(basename "$src").o
# the original's compile command, with the new source and a scratch object; its own directory
# on the include path first (a file's quoted includes resolve beside it)
cmd=$(python3 - "$b/compile_commands.json" "$abs" <<'PY'
import json, sys
for e in json.load(open(sys.argv[1])):
    if e["file"] == sys.argv[2]:
        print(e["command"])
        break
else:
    sys.exit("cuda-relink: %s is not compiled into build/" % sys.argv[2])
PY
)
cmd=${cmd/ -o */ }
cmd=${cmd% -c *}
(cd "$b" && eval "$cmd -I$(dirname "$abs") -o $tmp/$obj -c $newabs")
cp "$b/libmoekit.a" "$tmp/libmoekit.a"
ar t "$tmp/libmoekit.a" | grep -qx "$obj" || { echo "cuda-relink: $obj is not in libmoekit.a" >&2; exit 2; }
(cd "$tmp" && ar r libmoekit.a "$obj")
sed "s| libmoekit.a | $tmp/libmoekit.a |" "$b/CMakeFiles/$target.dir/linkLibs.rsp" > "$tmp/libs.rsp"
link=$(cat "$b/CMakeFiles/$target.dir/link.txt")
link=${link/@CMakeFiles\/$target.dir\/linkLibs.rsp/@$tmp/libs.rsp}
link=${link/ -o $target / -o $out }
touch "$b/.relinked-$out"
(cd "$b" && eval "$link")
echo "cuda-relink: build/$out: $target with $src from $new"
