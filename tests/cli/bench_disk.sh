#!/usr/bin/env bash
# moekit bench-disk (the disk probe): usage and bad-input errors exit 2 with
# one line naming the cause; a short run in a directory prints every
# backend/mode row and a recommendation and leaves no temporary file behind,
# also when interrupted (SIGINT) while writing it; an existing file is only
# read (same bytes and mtime after). Nothing here is timed: the numbers are
# not checked, only that they are there.
set -euo pipefail
BIN=${MK_BIN:?}
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-benchdisk-XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash" # fail, expect

"$BIN" bench-disk --help | grep -q "posix_fadvise DONTNEED" || fail "--help does not say how the cache is avoided"
expect 2 "No such file" "$BIN" bench-disk "$T/none"
echo hi > "$T/small"
expect 2 "too small to measure" "$BIN" bench-disk "$T/small"
expect 2 "neither a directory nor a regular file" "$BIN" bench-disk /dev/null
expect 2 "multiple of 4096" "$BIN" bench-disk "$T" --block 5000
expect 2 "at least 67108864" "$BIN" bench-disk "$T" --size 1M
expect 2 "exactly one PATH" "$BIN" bench-disk
expect 2 "--repeat wants an integer from 1 to 16" "$BIN" bench-disk "$T" --repeat 17
expect 2 "bytes free" "$BIN" bench-disk "$T" --size 100000G
echo "ok: usage and bad-input errors"

mkdir "$T/d"
"$BIN" bench-disk "$T/d" --size 64M --qd 4 --block 1M --seconds 0.5 --repeat 2 > "$T/out" 2> "$T/err" || { cat "$T/err"; fail "run failed"; }
grep -q "^recommend: " "$T/out" || fail "no recommendation"
grep -Eq "^pread +(O_DIRECT|buffered) +[0-9.]+ \([0-9.]+-[0-9.]+\) +[0-9.]+ \([0-9.]+-[0-9.]+\)" "$T/out" ||
    { cat "$T/out"; fail "no pread row with median and range"; }
rows=$(grep -Ec "^(io_uring|pread) +(O_DIRECT|buffered) +[0-9.]+" "$T/out")
[ "$rows" -ge 2 ] || { cat "$T/out"; fail "expected direct and buffered rows, got $rows"; }
[ -z "$(ls -A "$T/d")" ] || fail "temporary file left behind: $(ls -A "$T/d")"
"$BIN" bench-disk "$T/d" --size 64M --buffered --qd 2 --seconds 0.2 --repeat 1 > "$T/out" 2> "$T/err"
grep -q "O_DIRECT" "$T/out" && fail "--buffered still ran O_DIRECT"
echo "ok: a run prints its rows and cleans up"

# interrupted while writing the temporary file: removed by the handler
"$BIN" bench-disk "$T/d" --size 4G --seconds 0.2 > /dev/null 2> "$T/err" &
pid=$!
for _ in $(seq 100); do [ -n "$(ls -A "$T/d")" ] && break; sleep 0.05; done
[ -n "$(ls -A "$T/d")" ] || fail "the probe never created its file"
kill -INT $pid
wait $pid && fail "interrupted probe exited 0" || true
[ -z "$(ls -A "$T/d")" ] || fail "temporary file left after SIGINT: $(ls -A "$T/d")"
echo "ok: SIGINT removes the temporary file"

# an existing file is read, never written
head -c 64M /dev/urandom > "$T/big"
sum=$(cksum < "$T/big"); mt=$(stat -c %Y "$T/big")
touch -d '2020-01-01' "$T/big"; mt=$(stat -c %Y "$T/big")
"$BIN" bench-disk "$T/big" --qd 2 --seconds 0.2 --repeat 1 > "$T/out" 2> "$T/err" || { cat "$T/err"; fail "file run failed"; }
grep -q "existing, read only" "$T/out" || fail "not reported as an existing file"
[ "$(cksum < "$T/big")" = "$sum" ] && [ "$(stat -c %Y "$T/big")" = "$mt" ] || fail "the existing file changed"
[ "$(ls -A "$T" | grep -c moekit-bench-disk || true)" -eq 0 ] || fail "temporary file next to the existing one"
echo "ok: an existing file is only read"
