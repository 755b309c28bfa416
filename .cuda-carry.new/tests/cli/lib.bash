# Helpers sourced by the tests/cli/*.sh scripts that check error exits (named
# .bash so that the tests/cli/*.sh glob does not run it as a test). The
# sourcing script sets T, its temp directory, first; expect writes there.

fail() { echo "FAIL: $*" >&2; exit 1; }

# expect CODE PATTERN CMD...: CMD exits CODE with exactly one line on stderr,
# and that line holds PATTERN.
expect() {
    local code=$1 pat=$2
    shift 2
    set +e
    "$@" > "$T/out" 2> "$T/err"
    local rc=$?
    set -e
    [ $rc -eq "$code" ] || { cat "$T/err" >&2; fail "'$*' exited $rc, expected $code"; }
    grep -q -- "$pat" "$T/err" || { cat "$T/err" >&2; fail "'$*': no '$pat' in the message"; }
    [ "$(wc -l < "$T/err")" -eq 1 ] || { cat "$T/err" >&2; fail "'$*': expected one line"; }
}
