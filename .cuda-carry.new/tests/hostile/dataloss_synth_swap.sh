#!/usr/bin/env bash
# synth --force builds in DIR.partial/ and swaps it in at the end (issue 9,
# data loss 3): a full disk (file-size limit: EFBIG, reported as no space)
# or a kill -9 while shards are being written keeps the old checkpoint in
# DIR byte for byte, with no hidden shard left inside it; a rerun replaces
# it cleanly and removes the killed run's DIR.partial/.
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash"
W=$T/w
mkdir -p "$W"
D=$W/d
BIG=(--arch qwen3_moe --preset 30b-a3b --layers 1 --experts 24 --vocab 1024 --format bf16 --force --quiet)
"$BIN" synth "$D" --arch qwen3_moe --preset tiny --format bf16 --quiet
snapshot "$D" old

# Disk full: a 1 MiB file-size limit (SIGXFSZ ignored here too, so a binary
# that does not ignore it still gets EFBIG and shows what it leaves).
set +e
(trap '' XFSZ; ulimit -f 1024; exec "$BIN" synth "$D" "${BIG[@]}") > /dev/null 2> "$T/err"
rc=$?
set -e
unchanged "$D" old
[ ! -e "$D.partial" ] || fail "disk full: $D.partial left behind"
[ $rc -eq 2 ] || { cat "$T/err" >&2; fail "disk full: exit $rc, expected 2"; }
grep -Eqi "too large|no space" "$T/err" && grep -q "left as it was" "$T/err" ||
    { cat "$T/err" >&2; fail "disk full: cause or outcome not named"; }
ok "synth --force on a full disk: exit 2, the old checkpoint intact, nothing left"

# kill -9 while shards are being written (wherever they are written: the
# temporary shard names end in .tmp).
"$BIN" synth "$D" "${BIG[@]}" --threads 1 &
pid=$!
for _ in $(seq 1 3000); do
    find "$W" -name '*.tmp' -size +0 2> /dev/null | grep -q . && break
    sleep 0.01
done
kill -9 "$pid" 2> /dev/null || fail "synth finished before it could be killed (make BIG bigger)"
wait "$pid" 2> /dev/null || true
unchanged "$D" old
ok "synth --force killed mid-shard: the old checkpoint intact, no hidden shard in it"

expect 0 "" "$BIN" synth "$D" "${BIG[@]}"
[ ! -e "$D.partial" ] || fail "DIR.partial left after the rerun"
[ -z "$(ls -A "$D" | grep '^\.')" ] || fail "hidden files left in DIR: $(ls -A "$D")"
"$BIN" synth "$W/ref" "${BIG[@]}"
diff -r "$W/ref" "$D" > /dev/null || fail "the rerun's checkpoint differs from a clean run's"
ok "rerun replaces the checkpoint, byte-identical to a clean run"
