#!/usr/bin/env bash
# Decode at batch 1 through the whole engine on the CUDA backend (issue 14),
# run on a lent GPU machine after scripts/cuda-device-run.sh has built
# build-cuda/ (MK_TARGETS="moekit_cli bench_decode"):
#   1. the trained tiny fixture (models/tiny-qwen35moe, 4 layers, bf16, ~19 MB: per-token
#      overhead, not bandwidth) on cpu, cuda (fused MoE slot, deferred checks) and
#      cuda-unfused (the general path, as before the fused slot), twice each;
#   2. a synthetic full-depth Qwen3-30B-A3B (48 layers, 128 experts top-8, H 2048) in MLX
#      affine 4-bit g64 (routers 8-bit, as mlx-lm), made on the machine itself
#      (moekit synth ct-int4, then moekit quantize: nothing large travels), on cuda (the
#      decode step recorded once as a CUDA graph and replayed), cuda-nograph (every slot
#      launched every step) and cuda-base (cuda-nograph without the launch-cutting
#      slots), interleaved, twice each, then cuda-unfused;
#   3. (35b only) the Qwen3.5-35B-A3B shape (synth preset 35b-a3b: 40 layers, 30 Gated
#      DeltaNet + 10 gated attention, 256 experts top-8 + shared expert), made the same way,
#      on cuda and cuda-nograph, interleaved, twice each.
# MK_TINY_BACKENDS / MK_30B_BACKENDS / MK_35B_BACKENDS (this script's) replace the lists.
# bench_decode prints tok/s and the fraction of the roofline: weight bytes one token
# reads (codes + scales + biases) / the device copy bandwidth measured in the same run.
#   usage: bench/bench_cuda_decode.sh BUILD_DIR OUT_DIR [WORK_DIR=/tmp/mk-bench] [tiny|30b|35b|all]
set -uo pipefail
B=$1 out=$2 W=${3:-/tmp/mk-bench} what=${4:-all}
mkdir -p "$W" "$out"
nt=$(nproc)
rc=0
if [ "$what" = tiny ] || [ "$what" = all ]; then
    for be in ${MK_TINY_BACKENDS:-cpu cuda cuda-graph cuda-base cuda-unfused cpu cuda cuda-graph cuda-base cuda-unfused}; do
        echo "== bench_decode models/tiny-qwen35moe/bf16 8 256 $nt $be"
        timeout 120 "$B/bench_decode" models/tiny-qwen35moe/bf16 8 256 "$nt" $be 2>&1 |
            tee -a "$out/bench_tiny.log" | grep -E "decode|bound|device" || rc=1
    done
fi
[ "$what" = tiny ] && exit $rc
# mkmodel MODEL_DIR ARCH PRESET: synthesize and quantize to MLX 4-bit g64 unless there
mkmodel() {
    [ -e "$1/config.json" ] && return 0
    local t0
    t0=$(date +%s)
    "$B/moekit" synth "$W/ct" --arch "$2" --preset "$3" --format ct-int4 --threads "$nt" \
        --quiet --force || return 1
    "$B/moekit" quantize "$W/ct" "$1" --bits 4 --group-size 64 --threads "$nt" --max-memory 8G --quiet --force \
        > "$out/quantize.log" 2>&1 || { tail -5 "$out/quantize.log"; return 1; }
    rm -rf "$W/ct"
    echo "== made $1 in $(($(date +%s) - t0)) s: $(du -sh "$1" | cut -f1)"
}
if [ "$what" = 35b ]; then
    m=$W/qwen35-35b-a3b-mlx4
    mkmodel "$m" qwen3_5_moe 35b-a3b || exit 1
    for be in ${MK_35B_BACKENDS:-cuda cuda-nograph cuda cuda-nograph}; do
        echo "== bench_decode $m 16 128 $nt $be"
        timeout 200 "$B/bench_decode" "$m" 16 128 "$nt" $be 2>&1 | tee -a "$out/bench_35b.log" || rc=1
    done
    exit $rc
fi
m=$W/qwen3-30b-a3b-mlx4
mkmodel "$m" qwen3_moe 30b-a3b || exit 1
for be in ${MK_30B_BACKENDS:-cuda cuda-nograph cuda-base cuda cuda-nograph cuda-base cuda-unfused}; do
    d=128
    [ $be = cuda-unfused ] && d=32
    echo "== bench_decode $m 16 $d $nt $be"
    timeout 200 "$B/bench_decode" "$m" 16 $d "$nt" $be 2>&1 | tee -a "$out/bench_30b.log" || rc=1
done
exit $rc
