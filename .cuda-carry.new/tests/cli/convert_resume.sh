#!/usr/bin/env bash
# ctest-labels: slow
# convert is atomic and resumable: killed (SIGKILL) at named points inside
# a shard, between a shard's rename and its journal entry, after a journal
# entry, just before and just after the final rename - and by a real
# `kill -9` at arbitrary moments - a rerun of the same command finishes, and
# the result is byte-identical to an uninterrupted run. DST never appears
# before the run that completes it.
set -euo pipefail
BIN=${MK_BIN:?}
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-resume-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$BIN" synth "$T/bf16" --arch qwen3_next --preset tiny --format bf16 --quiet
"$BIN" synth "$T/fp8" --arch qwen3_moe --preset tiny --format fp8 --quiet --layers 2

# Sanitizer builds run 10x slower: fewer points, no timed kills there.
SAN=$("$BIN" convert "$T/bf16" "$T/probe" --to hf --stats --quiet | awk '$1 == "sanitizer" { print $2 }')
POINTS="item:1 item:7 item:40 shard:1 shard:3 journal:1 journal:3 commit:1 committed:1"
[ "$SAN" = 1 ] && POINTS="item:7 shard:1 journal:3 committed:1"

check_point() { # src target point
    local src=$1 to=$2 point=$3 ref="$T/ref-$1-$2" out="$T/out"
    rm -rf "$out" "$out.partial"
    set +e
    # inner sh: the shell that sees the SIGKILL reports it on a muted stderr
    MK_CONVERT_CRASH=$point sh -c '"$@"; exit $?' sh "$BIN" convert "$T/$src" "$out" --to "$to" --shard-size 1M \
        --quiet 2>/dev/null
    local rc=$?
    set -e
    [ $rc -eq 137 ] || fail "$src/$to crash at $point: exit $rc, expected 137 (SIGKILL)"
    case $point in committed*) ;; *) [ ! -e "$out" ] || fail "$src/$to: DST exists after a crash at $point" ;; esac
    "$BIN" convert "$T/$src" "$out" --to "$to" --shard-size 1M --quiet || fail "$src/$to: rerun after $point failed"
    [ ! -e "$out.partial" ] || fail "$src/$to: DST.partial left after the rerun ($point)"
    diff -r "$ref" "$out" >/dev/null || fail "$src/$to: resumed output after $point differs from the uninterrupted one"
    echo "ok: $src -> $to killed at $point, resumed byte-identical"
}

for spec in "bf16 mlx" "fp8 hf"; do
    set -- $spec
    "$BIN" convert "$T/$1" "$T/ref-$1-$2" --to "$2" --shard-size 1M --quiet
    n=$(ls "$T/ref-$1-$2" | grep -c safetensors$)
    [ "$n" -ge 4 ] || fail "expected several shards, got $n"
    for p in $POINTS; do
        check_point "$1" "$2" "$p"
    done
done

# A resumed run re-hashes finished shards: a corrupted one is rewritten.
out="$T/corrupt"
set +e
MK_CONVERT_CRASH=journal:3 sh -c '"$@"; exit $?' sh "$BIN" convert "$T/fp8" "$out" --to hf --shard-size 1M \
    --quiet 2>/dev/null
set -e
f=$(ls "$out.partial"/model-00001-of-*.safetensors)
printf '\x01' | dd of="$f" bs=1 seek=4000 conv=notrunc status=none
"$BIN" convert "$T/fp8" "$out" --to hf --shard-size 1M --quiet
diff -r "$T/ref-fp8-hf" "$out" >/dev/null || fail "corrupted finished shard was trusted"
echo "ok: a finished shard that no longer matches its journal hash is rewritten"

# A kill while the journal is being written leaves its half-written
# temporary (the atomic writer's NAME.moekit-tmp-PID-N) in DST.partial/: the
# resumed run must not carry it into DST (it did: "Only in out:
# .moekit-convert-journal.moekit-tmp-...").
out="$T/stale"
set +e
MK_CONVERT_CRASH=journal:3 sh -c '"$@"; exit $?' sh "$BIN" convert "$T/fp8" "$out" --to hf --shard-size 1M \
    --quiet 2>/dev/null
set -e
printf 'half a journal' > "$out.partial/.moekit-convert-journal.moekit-tmp-999-1"
"$BIN" convert "$T/fp8" "$out" --to hf --shard-size 1M --quiet
diff -r "$T/ref-fp8-hf" "$out" > /dev/null || fail "a stale temporary file reached DST: $(ls -a "$out")"
echo "ok: a killed journal write's temporary file does not reach DST"

if [ "$SAN" = 1 ]; then
    echo "convert_resume: all passed (sanitizer build: timed kills skipped)"
    exit 0
fi
# Real kill -9 at arbitrary moments of a longer single-threaded run: at
# 20%, 50% and 80% of the time an uninterrupted run takes.
"$BIN" synth "$T/mid" --arch qwen3_moe --preset 30b-a3b --layers 1 --experts 24 --vocab 1024 --format fp8 --quiet
t0=$(date +%s%N)
"$BIN" convert "$T/mid" "$T/ref-mid" --to hf --shard-size 8M --threads 1 --quiet
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
killed=0
for pct in 20 50 80; do
    out="$T/mid-out"
    rm -rf "$out" "$out.partial"
    "$BIN" convert "$T/mid" "$out" --to hf --shard-size 8M --threads 1 --quiet &
    pid=$!
    sleep "$(awk -v m="$ms" -v p="$pct" 'BEGIN { printf "%.3f", m * p / 100000 }')"
    kill -9 "$pid" 2>/dev/null && killed=$((killed + 1)) || true
    wait "$pid" 2>/dev/null || true
    if [ -e "$out" ] && [ ! -e "$out/.moekit-convert-journal" ] && [ ! -e "$out.partial" ]; then
        echo "note: the run finished before the kill at ${pct}%"
    else
        # killed mid-run: whatever it left (DST.partial/, or a DST whose
        # journal was not yet removed when the kill landed right after the
        # rename), the rerun a user makes must finish it
        "$BIN" convert "$T/mid" "$out" --to hf --shard-size 8M --threads 1 --quiet
    fi
    diff -r "$T/ref-mid" "$out" >/dev/null || fail "kill -9 at ${pct}% of ${ms} ms: resumed output differs"
    echo "ok: kill -9 at ${pct}% of ${ms} ms, resumed byte-identical"
done
[ "$killed" -ge 1 ] || fail "no run was still going when killed"
echo "convert_resume: all passed"
