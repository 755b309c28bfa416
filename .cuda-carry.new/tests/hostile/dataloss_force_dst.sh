#!/usr/bin/env bash
# --force replaces only what moekit wrote (issue 9, data loss 1). For convert,
# quantize and reshard (and synth, which has no SRC), a DST that is SRC,
# contains SRC, lies inside SRC, is reached through a symlink, "..", a
# trailing slash or a relative path, is a plain directory of other files
# (also one with a config.json beside subdirectories: a project),
# a regular file, the home directory, "", "." or "/" is refused with exit 2
# before any work, and nothing under the scratch tree changes. A DST that
# is a checkpoint or an earlier moekit output is still replaced.
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash"
need_fixture qwen3moe-a/bf16
BIN=$(realpath "$BIN") # the cases below run from other directories
W=$T/w # the scratch tree (lib.bash keeps its own files in $T)
mkdir "$W"

# The issue's reproduction first: X holds other people's files and SRC.
mkdir -p "$W/X/keep"
echo "someone else's work" > "$W/X/keep/notes.txt"
cp -r "$FX/qwen3moe-a/bf16" "$W/X/model"
chmod -R u+w "$W/X"
snapshot "$W" all
expect 2 "contains SRC" "$BIN" convert "$W/X/model" "$W/X" --to mlx --force --quiet
unchanged "$W" all
ok "convert X/model X --force: refused, X/keep and SRC intact"

S=$W/X/model
mkdir -p "$W/plain"
echo "not a checkpoint" > "$W/plain/README"
echo "a file" > "$W/afile"
ln -s "$W/X" "$W/link-to-X"
ln -s "$S" "$W/link-to-src"
mkdir -p "$W/proj/src" # a project that happens to have a config.json
echo '{"name": "my project"}' > "$W/proj/config.json"
echo "int main;" > "$W/proj/src/main.c"
mkdir -p "$W/home"
cp "$S/config.json" "$W/home/config.json" # looks like a checkpoint: only the home rule refuses it
snapshot "$W" all

# cmd NAME SRC DST: the forced command line of each writer
run_forced() {
    local name=$1 src=$2 dst=$3
    shift 3
    case $name in
    convert) "$BIN" convert "$src" "$dst" --to mlx --force --quiet "$@" ;;
    quantize) "$BIN" quantize "$src" "$dst" --force --quiet "$@" ;;
    reshard) "$BIN" reshard "$src" "$dst" --force "$@" ;;
    esac
}
export -f run_forced
export BIN

for c in convert quantize reshard; do
    expect 2 "contains SRC" bash -c 'run_forced "$@"' _ "$c" "$S" "$W/X"
    expect 2 "contains SRC" bash -c 'run_forced "$@"' _ "$c" "$S" "$W/X/"
    expect 2 "contains SRC" bash -c 'run_forced "$@"' _ "$c" "$S" "$W/X/keep/../../X"
    expect 2 "contains SRC" bash -c 'cd "$1/X/keep" && shift && run_forced "$@"' _ "$W" "$c" "$S" "../../X"
    expect 2 "contains SRC" bash -c 'run_forced "$@"' _ "$c" "$S" "$W/link-to-X"
    expect 2 "is SRC" bash -c 'run_forced "$@"' _ "$c" "$S" "$S"
    expect 2 "is SRC" bash -c 'run_forced "$@"' _ "$c" "$S" "$S/"
    expect 2 "is SRC" bash -c 'run_forced "$@"' _ "$c" "$S" "$W/X/keep/../model"
    expect 2 "is SRC" bash -c 'run_forced "$@"' _ "$c" "$S" "$W/link-to-src"
    expect 2 "is SRC" bash -c 'cd "$1/X" && shift && run_forced "$@"' _ "$W" "$c" "$S" "model"
    expect 2 "inside SRC" bash -c 'run_forced "$@"' _ "$c" "$S" "$S/out"
    expect 2 "not a checkpoint" bash -c 'run_forced "$@"' _ "$c" "$S" "$W/plain"
    expect 2 "not a checkpoint" bash -c 'run_forced "$@"' _ "$c" "$S" "$W/proj"
    expect 2 "not a directory" bash -c 'run_forced "$@"' _ "$c" "$S" "$W/afile"
    expect 2 "home directory" env HOME="$W/home" bash -c 'run_forced "$@"' _ "$c" "$S" "$W/home"
    expect 2 "must name a directory" bash -c 'run_forced "$@"' _ "$c" "$S" ""
    expect 2 "must name a directory" bash -c 'cd "$1/plain" && shift && run_forced "$@"' _ "$W" "$c" "$S" "."
    unchanged "$W" all
    [ ! -e "$W/X.partial" ] && [ ! -e "$S/out" ] && [ ! -e "$W/plain.partial" ] ||
        fail "$c: a refused run left an output behind"
    ok "$c --force: SRC, its parents, symlinks, .., plain dirs, files, home, '' and . refused; nothing changed"
done

# synth has no SRC: a plain directory or a file is still never replaced.
expect 2 "not a checkpoint" "$BIN" synth "$W/plain" --arch qwen3_moe --preset tiny --format bf16 --force --quiet
expect 2 "not a checkpoint" "$BIN" synth "$W/X" --arch qwen3_moe --preset tiny --format bf16 --force --quiet
expect 2 "not a directory" "$BIN" synth "$W/afile" --arch qwen3_moe --preset tiny --format bf16 --force --quiet
expect 2 "home directory" env HOME="$W/home" "$BIN" synth "$W/home" --arch qwen3_moe --preset tiny --format bf16 \
    --force --quiet
unchanged "$W" all
ok "synth --force: plain directories, files and home refused; nothing changed"

# What --force is for still works: an earlier moekit output, a checkpoint
# copy and an empty directory are replaced, and the result is complete.
"$BIN" convert "$S" "$W/out" --to hf --quiet
expect 0 "" "$BIN" convert "$S" "$W/out" --to mlx --force --quiet
expect 0 "" "$BIN" quantize "$S" "$W/out" --force --quiet
expect 0 "" "$BIN" reshard "$S" "$W/out" --force
cp -r "$S" "$W/ckpt-copy"
echo stale > "$W/ckpt-copy/stale.txt"
expect 0 "" "$BIN" convert "$S" "$W/ckpt-copy" --to mlx --force --quiet
[ ! -e "$W/ckpt-copy/stale.txt" ] && [ -s "$W/ckpt-copy/model.safetensors" ] || fail "forced replace incomplete"
mkdir "$W/empty"
expect 0 "" "$BIN" convert "$S" "$W/empty" --to mlx --force --quiet
[ ! -e "$W/out.partial" ] && [ ! -e "$W/empty.partial" ] || fail "DST.partial left after success"
ls -A "$W/out" "$W/empty" | grep -q "moekit-owner" && fail "owner mark left in DST"
ok "--force still replaces moekit outputs, checkpoints and empty directories"

# Last, and only once everything above held: "/" is never a DST.
expect 2 "must name a directory" "$BIN" convert "$S" / --to mlx --force --quiet
expect 2 "must name a directory" "$BIN" reshard "$S" // --force
ok "/ refused"
