#!/usr/bin/env bash
# --load copy|mmap (resident weights read into huge-page memory, the
# default, or mapped): the same logits byte for byte, with and without
# --mlock where RLIMIT_MEMLOCK allows it; a bad value is exit 2 naming the
# flag; every engine command documents it.
set -euo pipefail
BIN=${MK_BIN:?}
. "$(dirname "$0")/fixtures.bash"
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-load-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
M=$TINYM/bf16
IDS=$(seq -s, 3 61 4000)
"$BIN" logits "$M" --ids "$IDS" --out "$T/mmap.f32" --load mmap 2> "$T/e1" || fail "--load mmap: $(cat "$T/e1")"
"$BIN" logits "$M" --ids "$IDS" --out "$T/copy.f32" --load copy 2> "$T/e2" || fail "--load copy: $(cat "$T/e2")"
"$BIN" logits "$M" --ids "$IDS" --out "$T/dflt.f32" 2> "$T/e3" || fail "default load: $(cat "$T/e3")"
cmp "$T/mmap.f32" "$T/copy.f32" || fail "copied weights give other logits than mapped ones"
cmp "$T/mmap.f32" "$T/dflt.f32" || fail "the default load gives other logits than mapped weights"
if "$BIN" logits "$M" --ids "$IDS" --out "$T/lock.f32" --mlock 2> "$T/e4"; then
    cmp "$T/mmap.f32" "$T/lock.f32" || fail "copied and locked weights give other logits"
else
    grep -q "RLIMIT_MEMLOCK\|ulimit" "$T/e4" || fail "--mlock failed without naming the limit: $(cat "$T/e4")"
fi
# streamed experts: --load concerns only what stays resident
"$BIN" logits "$M" --ids "$IDS" --out "$T/st.f32" --stream-experts --memory-budget 112M 2> /dev/null
cmp "$T/mmap.f32" "$T/st.f32" || fail "streaming with the default load gives other logits"
set +e
"$BIN" logits "$M" --ids 1,2 --out "$T/bad.f32" --load slurp 2> "$T/bad"
rc=$?
set -e
[ $rc = 2 ] || fail "--load slurp: exit $rc, expected 2"
grep -q -- "--load: expected copy or mmap, got 'slurp'" "$T/bad" || fail "bad value not named: $(cat "$T/bad")"
[ ! -e "$T/bad.f32" ] || fail "an output was written after the refusal"
for c in run logits eval profile serve; do
    help=$("$BIN" "$c" --help 2>&1) || true
    grep -q -- "--load copy|mmap" <<< "$help" || fail "$c --help does not document --load"
done
echo "load_copy: all passed"
