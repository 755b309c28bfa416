#!/usr/bin/env bash
# quantize of a lone .safetensors file (issue 15.1): with DST ending in
# .safetensors it writes ONE file, as mx.save_safetensors would (not a
# directory named *.safetensors), byte-identical to the model.safetensors of
# the directory form; an existing DST needs --force, the input is never
# written, no DST.partial/ is left behind, and a directory DST still gets
# the directory form with its config.json.
set -euo pipefail
BIN=${MK_BIN:?}
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-qbare-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
"$BIN" synth "$T/m" --arch qwen3_moe --preset tiny --format bf16 --quiet
cp "$T/m/model.safetensors" "$T/a.safetensors"
sum0=$(cksum < "$T/a.safetensors")
"$BIN" quantize "$T/a.safetensors" "$T/b.safetensors" --bits 4 --quiet > /dev/null
[ -f "$T/b.safetensors" ] || fail "b.safetensors is not a regular file"
[ ! -e "$T/b.safetensors.partial" ] || fail "the work directory was left behind"
"$BIN" quantize "$T/a.safetensors" "$T/dir" --bits 4 --quiet > /dev/null
[ -f "$T/dir/model.safetensors" ] && [ -f "$T/dir/config.json" ] || fail "the directory form changed"
cmp "$T/b.safetensors" "$T/dir/model.safetensors" || fail "the file differs from the directory form's shard"
"$BIN" inspect "$T/b.safetensors" --json > "$T/i.json" || fail "inspect cannot read the file"
grep -q '"shards": 1' "$T/i.json" || grep -q '"shards":1' "$T/i.json" || fail "inspect: not one shard: $(head -c 300 "$T/i.json")"
set +e
"$BIN" quantize "$T/a.safetensors" "$T/b.safetensors" --bits 8 --quiet > /dev/null 2> "$T/e1"; rc1=$?
"$BIN" quantize "$T/a.safetensors" "$T/a.safetensors" --bits 4 --force --quiet > /dev/null 2> "$T/e2"; rc2=$?
set -e
[ "$rc1" = 2 ] && grep -q "already exists" "$T/e1" || fail "an existing DST without --force: rc $rc1, $(cat "$T/e1")"
[ "$rc2" = 2 ] && grep -q "input" "$T/e2" || fail "DST = SRC: rc $rc2, $(cat "$T/e2")"
[ "$(cksum < "$T/a.safetensors")" = "$sum0" ] || fail "the input changed"
# a DST named *.safetensors that is a directory (someone's folder) is never replaced, even with --force
mkdir "$T/d.safetensors" && echo keep > "$T/d.safetensors/mine.txt"
set +e
"$BIN" quantize "$T/a.safetensors" "$T/d.safetensors" --bits 4 --force --quiet > /dev/null 2> "$T/e3"; rc3=$?
set -e
[ "$rc3" = 2 ] && grep -q "directory" "$T/e3" || fail "a directory DST: rc $rc3, $(cat "$T/e3")"
[ "$(cat "$T/d.safetensors/mine.txt")" = keep ] || fail "the directory DST was touched"
[ ! -e "$T/d.safetensors.partial" ] || fail "a work directory was left beside the refused DST"
"$BIN" quantize "$T/a.safetensors" "$T/b.safetensors" --bits 8 --quiet --force > /dev/null
"$BIN" quantize "$T/a.safetensors" "$T/d8" --bits 8 --quiet > /dev/null
cmp "$T/b.safetensors" "$T/d8/model.safetensors" || fail "--force did not replace the file with the 8-bit one"
echo "quantize_bare_file: all passed"
