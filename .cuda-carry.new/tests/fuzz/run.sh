#!/usr/bin/env bash
# Replay, then fuzz, every libFuzzer target of a build.
#
#   bash tests/fuzz/run.sh BUILD_DIR SECONDS
#
# BUILD_DIR is a build configured with -DMK_FUZZ=ON and clang (it holds the
# fuzz_* executables). For each target: first the seed corpus
# tests/fuzz/corpus/<target>/ is replayed (-runs=0: every seed once, so a
# regression seed that crashes again fails at once), then the target is
# fuzzed for its share of SECONDS (libFuzzer -max_total_time). New inputs go
# to a scratch directory, never into the committed corpus; crashes, leaks,
# timeouts and OOMs go to tests/fuzz/crashes/ (gitignored) and make the
# script exit 1. To keep a crash as a regression seed, fix the bug and copy
# the file into the target's corpus as regress-<what>.
set -u

build=${1:?usage: run.sh BUILD_DIR SECONDS}
secs=${2:-30}
here=$(cd "$(dirname "$0")" && pwd)
crashes=$here/crashes
dict=$here/json.dict
mkdir -p "$crashes"

targets=()
for t in "$build"/fuzz_*; do
    [ -f "$t" ] && [ -x "$t" ] && targets+=("$t")
done
if [ ${#targets[@]} -eq 0 ]; then
    echo "run.sh: no fuzz targets in $build (configure with -DCMAKE_C_COMPILER=clang -DMK_FUZZ=ON)" >&2
    exit 1
fi
per=$((secs / ${#targets[@]}))
[ "$per" -lt 1 ] && per=1

scratch=$(mktemp -d "${TMPDIR:-/tmp}/mk-fuzz-XXXXXX")
trap 'rm -rf "$scratch"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

fail=0
summary=()
for t in "${targets[@]}"; do
    name=$(basename "$t")
    corpus=$here/corpus/$name
    mkdir -p "$corpus" "$scratch/$name"
    log=$scratch/$name.log
    args=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 "-artifact_prefix=$crashes/$name-")
    [ -f "$dict" ] && args+=("-dict=$dict")

    # 1. replay the committed corpus
    if ! "$t" "${args[@]}" -runs=0 "$corpus" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "run.sh: $name: corpus replay FAILED (artifact in $crashes)" >&2
        fail=1
        summary+=("$name: replay FAILED")
        continue
    fi
    nseeds=$(find "$corpus" -type f | wc -l)

    # 2. fuzz for this target's share of the time
    if ! "$t" "${args[@]}" -max_total_time="$per" -print_final_stats=1 "$scratch/$name" "$corpus" \
        >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "run.sh: $name: fuzzing found a failure (artifact in $crashes)" >&2
        fail=1
        summary+=("$name: FAILED after fuzzing, see $crashes")
        continue
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
    summary+=("$name: ${nseeds} seeds replayed, ${execs:-?} execs in ${per}s, ${cov:-cov: ?}, no crash")
done

printf '%s\n' "${summary[@]}"
exit $fail
