#!/usr/bin/env bash
# Every output path is validated before the first byte of work (issue 9,
# data loss 5): a quantize whose --report can only fail at the end, or whose
# --alloc-out would be written before an existing DST is refused, exits 2
# up front leaving no DST, no DST.partial and no --alloc-out; a DST under a
# regular file is refused before any DST.partial appears. An input error
# found mid-run (a NaN in a weight of a later shard) removes the partial
# output and says so; a full disk keeps it for the rerun and says that.
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash"
need_fixture tiny-qwen35moe/bf16
command -v node > /dev/null || fail "node is needed to locate tensor data (scripts/install-deps.sh)"
W=$T/w
mkdir -p "$W"
cp -r "$FX/tiny-qwen35moe/bf16" "$W/tiny"
cp "$FX/tiny-qwen35moe/devtext.txt" "$W/text.txt"
chmod -R u+w "$W"
echo "a file" > "$W/afile"
no_out() { [ ! -e "$1" ] && [ ! -e "$1.partial" ] || fail "$1 or $1.partial left behind"; }

run_cmd "$BIN" quantize "$W/tiny" "$W/q" --quiet --report "$W/nodir/r.json"
no_out "$W/q" # before the message: what a doomed run leaves is the point
[ "$RC" -eq 2 ] && grep -q "does not exist" "$T/err" || { cat "$T/err" >&2; fail "--report nodir: exit $RC"; }
expect 2 "not a directory" "$BIN" quantize "$W/tiny" "$W/q" --quiet --report "$W/afile/r.json"
no_out "$W/q"
expect 2 "not a directory" "$BIN" convert "$W/tiny" "$W/afile/sub/out" --to mlx --quiet
no_out "$W/afile/sub/out"
ok "a --report or DST that can only fail is refused before any work"

"$BIN" profile "$W/tiny" --text "$W/text.txt" --tokens 512 --threads 2 --out "$W/p.json" --quiet > /dev/null
mkdir "$W/exists"
snapshot "$W" all
expect 2 "already exists" "$BIN" quantize "$W/tiny" "$W/exists" --quiet --target-bpw 4 --profile "$W/p.json" \
    --alloc-out "$W/alloc.json"
[ ! -e "$W/alloc.json" ] || fail "--alloc-out written by a run refused for its DST"
unchanged "$W" all
ok "--alloc-out is not written when DST is refused"

# absolute file offset of tensor $2's data in safetensors file $1
offset_of() {
    node -e '
const fs = require("fs"), fd = fs.openSync(process.argv[1], "r"), b8 = Buffer.alloc(8);
fs.readSync(fd, b8, 0, 8, 0);
const n = Number(b8.readBigUInt64LE(0)), h = Buffer.alloc(n);
fs.readSync(fd, h, 0, n, 8);
const t = JSON.parse(h.toString("utf8"))[process.argv[2]];
if (!t) { console.error("no tensor " + process.argv[2]); process.exit(1); }
console.log(8 + n + t.data_offsets[0]);
' "$1" "$2"
}
# A NaN in the last layer's experts: found after earlier shards are done.
"$BIN" synth "$W/syn" --arch qwen3_5_moe --preset tiny --format bf16 --quiet
L=$(($(sed -n 's/.*"num_hidden_layers": *\([0-9]*\).*/\1/p' "$W/syn/config.json") - 1))
off=$(($(offset_of "$W/syn/model.safetensors" "model.layers.$L.mlp.experts.1.up_proj.weight") + 2 * 77))
printf '\xc0\x7f' | dd of="$W/syn/model.safetensors" bs=1 seek="$off" conv=notrunc status=none
expect 2 "NaN/Inf.*removed" "$BIN" quantize "$W/syn" "$W/qn" --quiet --threads 2 --shard-size 64K
no_out "$W/qn"
ok "a NaN found mid-run removes DST.partial and says so"

# Disk full (file-size limit): DST.partial is kept, and the message says a
# rerun resumes; the rerun does.
set +e
(trap '' XFSZ; ulimit -f 256; exec "$BIN" convert "$W/tiny" "$W/full" --to mlx --quiet --shard-size 64K) 2> "$T/err"
rc=$?
set -e
[ $rc -eq 2 ] || { cat "$T/err" >&2; fail "disk full: exit $rc, expected 2"; }
grep -q "kept in .*full.partial.*resume" "$T/err" || { cat "$T/err" >&2; fail "disk full: no resume advice"; }
[ -d "$W/full.partial" ] && [ ! -e "$W/full" ] || fail "disk full: expected DST.partial only"
expect 0 "" "$BIN" convert "$W/tiny" "$W/full" --to mlx --quiet --shard-size 64K
no_out "$W/full.partial"
ok "disk full keeps DST.partial with resume advice; the rerun completes"

# Not refused: a --report inside the DST this run creates (written after it).
expect 0 "" "$BIN" quantize "$W/tiny" "$W/qr" --quiet --report "$W/qr/report.json"
[ -s "$W/qr/report.json" ] && [ -s "$W/qr/model.safetensors" ] || fail "--report inside a new DST not written"
ok "--report inside the new DST still works"
