#!/usr/bin/env bash
# reshard / verify / hash end to end on a real fixture:
#  - reshard into small shards, verify against the source (exit 0), hashes equal;
#  - the resharded output re-reads under strict validation (hash succeeds) and has an index;
#  - one flipped data byte: verify exits 1 and names the tensor;
#  - existing DST without --force: exit 2, DST untouched;
#  - bad input: exit 2 with one line naming the file.
set -u
MK="${MK_BIN:?}"; . "${MK_SRC:?}/tests/cli/fixtures.bash"; need_fixtures
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
SRC="$FX/qwen3moe-a/bf16"

"$MK" reshard "$SRC" "$T/rs" --shard-size 1M >/dev/null 2>&1 || fail "reshard exit $?"
[ -f "$T/rs/model.safetensors.index.json" ] || fail "no index written"
n=$(ls "$T/rs"/model-*-of-*.safetensors | wc -l); [ "$n" -gt 2 ] || fail "expected several shards, got $n"
[ -f "$T/rs/config.json" ] || fail "config.json not copied"
[ ! -e "$T/rs.partial" ] || fail "partial dir left behind"
"$MK" verify "$SRC" "$T/rs" --quiet >/dev/null || fail "verify of a reshard should pass"
"$MK" hash "$SRC" > "$T/h1" || fail "hash src"
"$MK" hash "$T/rs" > "$T/h2" || fail "hash of resharded output (strict re-read) failed"
cmp -s "$T/h1" "$T/h2" || fail "hash manifests differ"
[ "$(wc -l < "$T/h1")" -eq 102 ] || fail "expected 102 tensors in the manifest"

# byte copy then flip one byte inside the last tensor's data of shard 1
cp -r "$T/rs" "$T/flip"
f="$T/flip/model-00001-of-$(printf %05d "$n").safetensors"
sz=$(stat -c %s "$f")
printf '\x5a' | dd of="$f" bs=1 seek=$((sz - 3)) conv=notrunc status=none
"$MK" verify "$T/rs" "$T/flip" > "$T/out" 2>&1; rc=$?
[ "$rc" -eq 1 ] || fail "verify after a flipped byte: exit $rc, expected 1"
grep -q "^FAIL" "$T/out" || fail "no FAIL line"
bad=$(grep "^FAIL" "$T/out" | awk '{print $2}')
echo "$bad" | grep -q '^model\.' || fail "failing line does not name a tensor: $(cat "$T/out")"
[ "$(grep -c '^FAIL' "$T/out")" -eq 1 ] || fail "exactly one tensor should differ"

# existing output
"$MK" reshard "$SRC" "$T/rs" >/dev/null 2>"$T/err"; rc=$?
[ "$rc" -eq 2 ] || fail "reshard over existing DST: exit $rc, expected 2"
grep -q "already exists" "$T/err" || fail "no 'already exists' message"

# bad input: truncated file
head -c 100 "$SRC/model.safetensors" > "$T/trunc.safetensors"
"$MK" hash "$T/trunc.safetensors" >/dev/null 2>"$T/err"; rc=$?
[ "$rc" -eq 2 ] || fail "truncated file: exit $rc, expected 2"
[ "$(wc -l < "$T/err")" -eq 1 ] || fail "expected one error line, got: $(cat "$T/err")"
grep -q "trunc.safetensors" "$T/err" || fail "error does not name the file"
"$MK" verify "$SRC" "$T/trunc.safetensors" >/dev/null 2>&1; rc=$?
[ "$rc" -eq 2 ] || fail "verify with unreadable B: exit $rc, expected 2"
"$MK" reshard "$T/trunc.safetensors" "$T/out2" >/dev/null 2>&1; rc=$?
[ "$rc" -eq 2 ] || fail "reshard of bad input: exit $rc"
[ ! -e "$T/out2" ] && [ ! -e "$T/out2.partial" ] || fail "output left behind after failure"
mkdir "$T/empty"
"$MK" inspect "$T/empty" >/dev/null 2>"$T/err"; rc=$?
[ "$rc" -eq 2 ] || fail "inspect of an empty dir: exit $rc"
grep -q "no checkpoint" "$T/err" || fail "empty dir message: $(cat "$T/err")"

# cross-format: FP8 vs bf16 is compared numerically
"$MK" verify "$FX/qwen3moe-odd/bf16" "$FX/qwen3moe-odd/fp8" --quiet >/dev/null; rc=$?
[ "$rc" -eq 1 ] || fail "fp8 vs bf16 at tolerance 0 should fail (exit $rc)"
"$MK" verify "$FX/qwen3moe-odd/bf16" "$FX/qwen3moe-odd/fp8" --quiet --tolerance 0.05 >/dev/null || fail "fp8 vs bf16 within 5%"
echo "1 passed, 0 failed"
