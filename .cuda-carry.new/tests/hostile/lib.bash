# Helpers for tests/hostile/*.sh: each script builds hostile inputs, runs a
# moekit command under a time limit and asserts (1) its exit code, (2) its
# message, and (3) that nothing outside the intended output changed.
# (Named .bash so the tests/hostile/*.sh glob does not run it as a test.)
#
# Source it first thing; it sets BIN, FX (the shared fixtures, may be absent),
# T (a fresh temp directory, removed on exit) and strict mode.
set -euo pipefail
BIN=${MK_BIN:?MK_BIN: path of the moekit binary}
FX=${MK_FIXTURES:-}
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-hostile-XXXXXX")
trap 'chmod -R u+w "$T" 2>/dev/null; rm -rf "$T"' EXIT
HOSTILE_TIMEOUT=${HOSTILE_TIMEOUT:-120}

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

# need_fixture NAME: skip the whole script (exit 77: ctest shows "Skipped",
# the reason is on stdout) when the shared fixtures are not there.
need_fixture() {
    [ -n "$FX" ] && [ -e "$FX/$1" ] || { echo "skip: fixture $1 not found (MK_FIXTURES=$FX)"; exit 77; }
}

# run_cmd CMD...: run CMD under the time limit; stdout -> $T/out, stderr ->
# $T/err, exit status -> RC. A timeout (124) or a signal (>128) is always a
# failure: hostile input must never hang or crash a command.
run_cmd() {
    set +e
    timeout -k 5 "$HOSTILE_TIMEOUT" "$@" > "$T/out" 2> "$T/err"
    RC=$?
    set -e
    [ $RC -ne 124 ] || { cat "$T/err" >&2; fail "'$*' hung (timeout ${HOSTILE_TIMEOUT}s)"; }
    [ $RC -lt 128 ] || { cat "$T/err" >&2; fail "'$*' died of signal $((RC - 128))"; }
    grep -q "AddressSanitizer\|UndefinedBehaviorSanitizer\|runtime error:" "$T/err" &&
        { cat "$T/err" >&2; fail "'$*': sanitizer report"; }
    return 0
}

# expect CODE PATTERN CMD...: CMD exits CODE and its stderr holds PATTERN
# (grep -E). PATTERN "" accepts any message.
expect() {
    local code=$1 pat=$2
    shift 2
    run_cmd "$@"
    [ "$RC" -eq "$code" ] || { cat "$T/err" >&2; fail "'$*' exited $RC, expected $code"; }
    [ -z "$pat" ] || grep -Eq -- "$pat" "$T/err" ||
        { cat "$T/err" >&2; fail "'$*': no /$pat/ in its message"; }
}

# snapshot DIR NAME: record every path, type, size, mode and content hash
# under DIR (hidden files too) in $T/NAME.snap.
snapshot() {
    (cd "$1" && find . -printf '%y %p %s %m\n' | LC_ALL=C sort &&
        find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum) > "$T/$2.snap"
}

# unchanged DIR NAME: DIR holds exactly what snapshot DIR NAME recorded.
unchanged() {
    snapshot "$1" "$2.after"
    diff "$T/$2.snap" "$T/$2.after.snap" >&2 || fail "$1 changed (see diff above)"
}
