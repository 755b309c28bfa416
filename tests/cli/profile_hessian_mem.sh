#!/usr/bin/env bash
# `moekit profile --hessian H --hessian-memory S` holds at most S bytes of
# second-moment accumulators at once: on the trained tiny-qwen35moe (about
# 47 MiB of accumulators over 256 calibration tokens) a bound of 4M takes
# the modules in several passes and writes the very file one pass writes
# (byte for byte), reports at most 4 MiB held, and its peak RSS (measured
# by the process itself, `--stats`: getrusage, independent of the
# accumulator count) falls by at least half the accumulator bytes it no
# longer holds. The equal files also hold the modules that share an input
# to the right one: taking two products on one buffer for one input when a
# norm had rewritten the buffer in between gave layers 1-3's attention
# inputs and lm_head an earlier module's statistics, which a pass boundary
# between them exposed (this test failed on it). A bound below one module's accumulator is refused (exit 2,
# naming the module) before any window runs, leaving no H file.
# The RSS comparison alone is skipped under AddressSanitizer (as in the other
# RSS tests): its quarantine keeps every pass's freed forward buffers resident
# and its shadow memory is not ours to bound, so there a multi-pass run's peak
# measures ASan, not the accumulators (seen: 121.5 -> 121.9 MiB).
set -euo pipefail
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-hmem-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
TINY=$TINYM/bf16
TXT=$TINYM/devtext.txt
head -c 20000 "$TXT" > "$T/calib.txt"
run() { # out-name, extra flags
    local n=$1
    shift
    "$BIN" profile "$TINY" --text "$T/calib.txt" --tokens 256 --threads 2 --quiet --stats \
        --out "$T/$n.json" --hessian "$T/$n.safetensors" "$@" > "$T/$n.log" 2> "$T/$n.err" ||
        fail "profile $*: $(cat "$T/$n.err")"
    grep "^wrote $T/$n.safetensors" "$T/$n.log" || fail "no --hessian line: $(cat "$T/$n.log")"
}
rss_mib() { # --stats' peak_rss_bytes line, in MiB
    awk '/^peak_rss_bytes / { printf "%.1f", $2 / 1048576 }' "$1"
}
run one
run bnd --hessian-memory 4M
cmp -s "$T/one.safetensors" "$T/bnd.safetensors" || fail "the bounded run wrote a different file"
line=$(grep "^wrote $T/bnd.safetensors" "$T/bnd.log")
held=$(sed 's/.*at most \([0-9.]*\) MiB held at once in \([0-9]*\) pass.*/\1/' <<< "$line")
passes=$(sed 's/.*held at once in \([0-9]*\) pass.*/\1/' <<< "$line")
acc=$(sed 's/.*inputs, \([0-9.]*\) MiB of accumulators.*/\1/' <<< "$(grep "^wrote $T/one.safetensors" "$T/one.log")")
awk -v h="$held" 'BEGIN { exit !(h > 0 && h <= 4) }' || fail "held $held MiB over the 4M bound"
[ "$passes" -ge 3 ] || fail "only $passes passes under 4M (accumulators $acc MiB)"
grep -q "in 1 pass;" "$T/one.log" || fail "the default bound did not take one pass: $(cat "$T/one.log")"
r1=$(rss_mib "$T/one.err")
r2=$(rss_mib "$T/bnd.err")
[ -n "$r1" ] && [ -n "$r2" ] || fail "no peak RSS in --stats: $(cat "$T/one.err")"
echo "accumulators $acc MiB; bounded: $held MiB held, $passes passes; peak RSS $r1 -> $r2 MiB"
if [ "$(awk '$1 == "sanitizer" { print $2 }' "$T/one.err")" = 1 ]; then
    echo "RSS comparison skipped: sanitizer build"
else
    awk -v a="$r1" -v b="$r2" -v acc="$acc" 'BEGIN { exit !(b <= a - (acc - 4) / 2) }' ||
        fail "peak RSS $r2 MiB with the bound, $r1 MiB without: not lower by half of $acc - 4 MiB"
fi
set +e
"$BIN" profile "$TINY" --text "$T/calib.txt" --tokens 256 --threads 2 --quiet --out "$T/x.json" \
    --hessian "$T/x.safetensors" --hessian-memory 1K > "$T/e1" 2>&1
rc=$?
set -e
[ $rc = 2 ] && grep -q "module '.*' needs [0-9]* bytes of accumulator" "$T/e1" ||
    fail "a bound below one module: rc $rc: $(cat "$T/e1")"
[ ! -e "$T/x.safetensors" ] || fail "a refused run left its file"
echo "profile_hessian_mem: ok"
