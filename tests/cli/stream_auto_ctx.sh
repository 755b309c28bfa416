#!/usr/bin/env bash
# The resident-or-stream choice counts the context (issue 11 item 1): a
# --memory-budget that streaming can hold must run, whether or not the
# resident model alone would fit it. Before the fix, a budget between the
# streaming minimum and resident weights + context picked "resident" (the
# weights alone fit) and then refused the context ("a context of 4096
# positions needs ..."), exit 2, although `--stream-experts` ran in it.
# The least streaming budget comes from moekit's own refusal of 1M (exit 2,
# naming it); the test asserts what each budget may do, not a number.
set -euo pipefail
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash" # fail
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-sactx-XXXXXX")
trap 'rm -rf "$T"' EXIT
M=$TINYM/bf16
run() { "$BIN" run "$M" --ids 1,2,3 --max-tokens 2 --ctx 4096 --threads 1 "$@" > "$T/out" 2> "$T/err"; }

rc=0
run --stream-experts --memory-budget 1M || rc=$?
[ $rc = 2 ] || { cat "$T/err" >&2; fail "--memory-budget 1M: exit $rc, expected 2"; }
least=$(grep -o 'need at least [0-9]* bytes' "$T/err" | awk '{print $4}')
[ -n "$least" ] || { cat "$T/err" >&2; fail "the refusal does not name the least budget"; }

# just above the streaming minimum: --stream-experts runs there, so must the automatic choice
B=$((least + 2 * 1024 * 1024))
run --stream-experts --memory-budget $B || { cat "$T/err" >&2; fail "--stream-experts at $B bytes failed"; }
rc=0
run --memory-budget $B || rc=$?
[ $rc = 0 ] || { cat "$T/err" >&2; fail "--memory-budget $B (streaming fits) refused by the automatic choice: exit $rc"; }
grep -q 'experts streamed' "$T/err" || { cat "$T/err" >&2; fail "--memory-budget $B: not streamed"; }

# a budget with room for everything stays resident
run --memory-budget 1G || { cat "$T/err" >&2; fail "--memory-budget 1G failed"; }
grep -q 'model resident' "$T/err" || { cat "$T/err" >&2; fail "--memory-budget 1G: not resident"; }
echo "stream_auto_ctx: ok (least streaming budget $least bytes; $B streams, 1G resident)"
