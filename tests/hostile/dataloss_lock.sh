#!/usr/bin/env bash
# One writer per DST (issue 9, data loss 4): while a convert holds
# DST.partial/ (flock), a second convert, quantize, reshard or synth of the
# same DST - with or without --force - is refused with exit 2 naming the
# first one's pid, and the first finishes byte-identical to an undisturbed
# run. A kill -9 in the first milliseconds (DST.partial/ holds only the
# owner mark, no journal yet) is resumed by a rerun or replaced by --force
# or another command; a DST.partial/ holding someone else's files is never
# emptied (reshard used to remove it).
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash"
W=$T/w
mkdir -p "$W"
pid= # a stopped writer must not outlive a failed check
trap '[ -z "$pid" ] || kill -9 "$pid" 2> /dev/null || true; chmod -R u+w "$T" 2> /dev/null; rm -rf "$T"' EXIT
"$BIN" synth "$W/src" --arch qwen3_moe --preset 30b-a3b --layers 1 --experts 8 --vocab 1024 --format fp8 --quiet
CONV=(convert "$W/src" "$W/out" --to hf --threads 1 --shard-size 8M --quiet)
"$BIN" convert "$W/src" "$W/ref" --to hf --threads 1 --shard-size 8M --quiet

# The first writer, frozen (SIGSTOP) as soon as it holds DST.partial/: its
# owner mark (or, for a binary without one, its journal) is there.
"$BIN" "${CONV[@]}" &
pid=$!
for _ in $(seq 1 2000); do
    [ -e "$W/out.partial/.moekit-owner" ] || [ -e "$W/out.partial/.moekit-convert-journal" ] && break
    sleep 0.005
done
kill -STOP "$pid" || fail "the first convert ended before it could be stopped"
# SIGSTOP lands when each thread returns from the kernel: a write in flight
# completes first. Snapshot only once every thread is stopped (state T).
stopped() {
    local t st
    for t in /proc/"$pid"/task/*/stat; do
        st=$(sed 's/.*) //' "$t" 2> /dev/null | cut -c1) || return 1
        [ "$st" = T ] || [ "$st" = t ] || return 1
    done
}
for _ in $(seq 1 2000); do stopped && break; sleep 0.005; done
stopped || fail "the first convert did not stop within 10 s of SIGSTOP"
snapshot "$W/out.partial" held
expect 2 "pid $pid" "$BIN" "${CONV[@]}"
expect 2 "pid $pid" "$BIN" "${CONV[@]}" --force
expect 2 "pid $pid" "$BIN" quantize "$W/src" "$W/out" --quiet --force
expect 2 "pid $pid" "$BIN" reshard "$W/src" "$W/out" --force
expect 2 "pid $pid" "$BIN" synth "$W/out" --arch qwen3_moe --preset tiny --format bf16 --force --quiet
grep -q "moekit convert" "$T/err" || fail "the refusal does not say which command holds DST"
unchanged "$W/out.partial" held
kill -CONT "$pid"
wait "$pid" || fail "the first convert failed after the second ones were refused"
diff -r "$W/ref" "$W/out" > /dev/null || fail "the first writer's output differs from an undisturbed run"
[ ! -e "$W/out.partial" ] || fail "DST.partial left behind"
ok "a second writer of the same DST is refused naming pid $pid; the first finishes intact"

# kill -9 right after taking DST.partial/ (test hook), then: a plain rerun
# resumes, --force replaces, another command takes over.
crash() {
    rm -rf "$W/out" "$W/out.partial"
    set +e
    MK_CONVERT_CRASH=locked:1 sh -c '"$@"; exit $?' sh "$BIN" "${CONV[@]}" 2> /dev/null
    local rc=$?
    set -e
    [ $rc -eq 137 ] || fail "crash hook: exit $rc, expected 137"
    [ -d "$W/out.partial" ] && [ ! -e "$W/out" ] || fail "crash hook: expected DST.partial only"
}
crash
expect 0 "" "$BIN" "${CONV[@]}"
diff -r "$W/ref" "$W/out" > /dev/null || fail "rerun after an early kill differs"
crash
expect 0 "" "$BIN" "${CONV[@]}" --force
diff -r "$W/ref" "$W/out" > /dev/null || fail "--force after an early kill differs"
crash
expect 0 "" "$BIN" reshard "$W/src" "$W/out"
[ ! -e "$W/out.partial" ] || fail "DST.partial left behind"
ok "kill -9 before the journal: rerun resumes, --force and another command replace"

# A real kill -9 the moment the owner mark appears.
rm -rf "$W/out" "$W/out.partial"
"$BIN" "${CONV[@]}" &
pid=$!
for _ in $(seq 1 2000); do
    [ -e "$W/out.partial/.moekit-owner" ] || [ -e "$W/out.partial/.moekit-convert-journal" ] && break
    sleep 0.002
done
kill -9 "$pid" 2> /dev/null || true
wait "$pid" 2> /dev/null || true
expect 0 "" "$BIN" "${CONV[@]}"
diff -r "$W/ref" "$W/out" > /dev/null || fail "rerun after kill -9 differs"
ok "kill -9 in the first milliseconds: the rerun completes"

# A DST.partial/ that moekit did not write is never emptied.
rm -rf "$W/out"
mkdir -p "$W/out.partial"
echo "someone's data" > "$W/out.partial/mine.txt"
snapshot "$W" foreign
for cmd in "convert $W/src $W/out --to hf --quiet --force" "reshard $W/src $W/out --force" \
    "synth $W/out --arch qwen3_moe --preset tiny --format bf16 --quiet --force"; do
    # shellcheck disable=SC2086
    expect 2 "did not write|no moekit convert journal" "$BIN" $cmd
done
unchanged "$W" foreign
ok "a foreign DST.partial/ is refused by every command, untouched"
