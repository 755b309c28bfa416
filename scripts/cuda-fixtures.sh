#!/usr/bin/env bash
# Fixture runs of the engine on a lent GPU (docs/CUDA.md). The device
# carries at most 64 MiB: pack the fixtures a run needs (xz, about 3/4 of
# their size) into a folder named in `carry`, then on the device run the
# test_engine_fixtures cases on CUDA, or a greedy decode on both backends.
#   scripts/cuda-fixtures.sh pack DIR FIXTURE...   (here: DIR/fx.tar.xz from $MK_FIXTURES)
#   scripts/cuda-fixtures.sh test TAR CASE...      (device: e.g. test_qwen3next_a_cuda)
#   scripts/cuda-fixtures.sh decode TAR FIXTURE [IDS]  (device: moekit run --stats, cpu and
#                                                    cuda; IDS default: reference.json's first 8)
# `test` and `decode` need build-cuda/ from scripts/cuda-device-run.sh
# (MK_TARGETS="test_engine_fixtures moekit_cli"); logs go to $OUT when set;
# MK_FIXTURES_BIN names another test binary in build-cuda/ for `test` (e.g.
# one linked with a fix reverted, to show its test fails without it).
set -uo pipefail
cmd=${1:?usage: see the header} dir=${2:?usage: see the header}
shift 2
out=${OUT:-/tmp}
case $cmd in
pack)
    src=${MK_FIXTURES:-../shared/fixtures} list=()
    for f in "$@"; do
        for x in bf16 bf16-fused fp8 mxfp4 reference.json ref_logits.f32 long.json long_logits.f32 fp8_logits.f32 mxfp4_logits.f32; do
            [ -e "$src/$f/$x" ] && list+=("$f/$x")
        done
    done
    mkdir -p "$dir" && tar -C "$src" -cf - "${list[@]}" | xz -1 -T2 > "$dir/fx.tar.xz" && du -h "$dir/fx.tar.xz"
    ;;
test | decode)
    fx=$(mktemp -d /tmp/mk-fx-XXXXXX)
    tar -xJf "$dir" -C "$fx" || exit 1
    # the demo model is the tiny-qwen35moe fixture's files (tests/cli/fixtures.bash):
    # the embedded copy saves 15 MiB of the carry
    [ -e "$fx/tiny-qwen35moe" ] || ln -s "$PWD/models/tiny-qwen35moe" "$fx/tiny-qwen35moe"
    rc=0
    if [ "$cmd" = test ]; then
        for t in "$@"; do
            MK_FIXTURES=$fx MK_TEST_FILTER="$t" timeout 200 "./build-cuda/${MK_FIXTURES_BIN:-test_engine_fixtures}" 2>&1 |
                tee -a "$out/fixtures.log" | grep -vE "^\[ *(RUN|OK) |^\[=|^$|TEST\(S\)" || rc=1
        done
        grep -E "^  (cpu|cuda) " "$out/fixtures.log"
    else
        m=$fx/$1/bf16
        ids=${2:-}
        [ -n "$ids" ] || ids=$(python3 -c "import json;print(','.join(map(str,json.load(open('$fx/$1/reference.json'))['input_ids'][:8])))")
        for be in cpu cuda; do
            for i in 1 2; do
                ./build-cuda/moekit run "$m" --ids "$ids" --max-tokens 256 --json --stats --backend $be \
                    --threads "$(nproc)" > "$out/run_$be.json" 2> "/tmp/stats_$be" || rc=1
                echo "$be run $i: $(grep 'tok/s' /tmp/stats_$be)"
            done
        done
        cmp -s "$out/run_cpu.json" "$out/run_cuda.json" && echo "greedy tokens: cpu == cuda" ||
            { echo "greedy tokens DIFFER"; rc=1; }
    fi
    exit $rc
    ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
