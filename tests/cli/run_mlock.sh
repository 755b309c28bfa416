#!/usr/bin/env bash
# run --mlock: the resident model's mapped weights locked in memory.
#   - with the lock allowed, the tokens are those of a run without it
#   - when the kernel refuses (RLIMIT_MEMLOCK of 64 KiB and no CAP_IPC_LOCK:
#     root's capability is dropped with setpriv), one line naming the file,
#     its size and the limit, exit 1 (a resource limit, like running out of
#     memory), nothing generated
#   - --mlock with --stream-experts is refused (exit 2): streamed experts
#     are never mapped
set -euo pipefail
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-mlock-XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$MK_SRC/tests/cli/lib.bash"
M=$TINYM/bf16

"$BIN" run "$M" --ids 1,2,3 --max-tokens 8 --threads 1 > "$T/plain" 2>/dev/null
if "$BIN" run "$M" --ids 1,2,3 --max-tokens 8 --threads 1 --mlock > "$T/locked" 2> "$T/lerr"; then
    cmp -s "$T/plain" "$T/locked" || fail "--mlock changed the generated tokens"
    echo "ok: --mlock: same tokens"
else
    grep -q "RLIMIT_MEMLOCK" "$T/lerr" || { cat "$T/lerr" >&2; fail "--mlock failed without naming RLIMIT_MEMLOCK"; }
    echo "ok: --mlock refused here by the limit: $(cat "$T/lerr")"
fi

expect 2 "does not go with --stream-experts" "$BIN" run "$M" --ids 1,2,3 --mlock --stream-experts
# AddressSanitizer intercepts mlock and makes it a no-op that succeeds (its shadow memory would be
# locked too), so the kernel's refusal can only be seen in a build without it
"$BIN" run "$M" --ids 1 --max-tokens 1 --stats > "$T/stats" 2>&1
if grep -qx "sanitizer 1" "$T/stats"; then
    echo "run_mlock: passed (the RLIMIT_MEMLOCK refusal is not checked under AddressSanitizer: mlock is a no-op there)"
    exit 0
fi
drop=()
if [ "$(id -u)" -eq 0 ]; then
    command -v setpriv >/dev/null || { echo "skip: root without setpriv cannot give up CAP_IPC_LOCK"; exit 77; }
    drop=(setpriv --bounding-set=-ipc_lock)
fi
expect 1 "RLIMIT_MEMLOCK is 64 KiB" bash -c 'ulimit -l 64 && exec "$@"' _ "${drop[@]}" \
    "$BIN" run "$M" --ids 1,2,3 --max-tokens 8 --mlock
[ ! -s "$T/out" ] || fail "a refused --mlock still generated: $(cat "$T/out")"
grep -q "model.safetensors" "$T/err" || fail "the refusal does not name the file"
echo "run_mlock: all passed"
