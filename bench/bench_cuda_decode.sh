#!/usr/bin/env bash
# Decode at batch 1 through the whole engine on the CUDA backend (issue 14),
# run on a lent GPU machine after scripts/cuda-device-run.sh has built
# build-cuda/ (MK_TARGETS="moekit_cli bench_decode"):
#   1. the trained tiny fixture (models/tiny-qwen35moe, 4 layers, bf16, ~19 MB: per-token
#      overhead, not bandwidth) on cpu, cuda (fused MoE slot, deferred checks) and
#      cuda-unfused (the general path, as before the fused slot), twice each;
#   2. a synthetic full-depth Qwen3-30B-A3B (48 layers, 128 experts top-8, H 2048) in MLX
#      affine 4-bit g64 (routers 8-bit, as mlx-lm), made on the machine itself
#      (moekit synth ct-int4, then moekit quantize: nothing large travels), on cuda,
#      cuda-base (without the launch-cutting slots) and cuda-graph, interleaved, twice
#      each, then cuda-unfused.
# MK_TINY_BACKENDS / MK_30B_BACKENDS (this script's) replace the lists of runs.
# bench_decode prints tok/s and the fraction of the roofline: weight bytes one token
# reads (codes + scales + biases) / the device copy bandwidth measured in the same run.
#   usage: bench/bench_cuda_decode.sh BUILD_DIR OUT_DIR [WORK_DIR=/tmp/mk-bench] [tiny|30b|all]
set -uo pipefail
B=$1 out=$2 W=${3:-/tmp/mk-bench} what=${4:-all}
mkdir -p "$W" "$out"
nt=$(nproc)
rc=0
if [ "$what" != 30b ]; then
    for be in ${MK_TINY_BACKENDS:-cpu cuda cuda-graph cuda-base cuda-unfused cpu cuda cuda-graph cuda-base cuda-unfused}; do
        echo "== bench_decode models/tiny-qwen35moe/bf16 8 256 $nt $be"
        timeout 120 "$B/bench_decode" models/tiny-qwen35moe/bf16 8 256 "$nt" $be 2>&1 |
            tee -a "$out/bench_tiny.log" | grep -E "decode|bound|device" || rc=1
    done
fi
[ "$what" = tiny ] && exit $rc
m=$W/qwen3-30b-a3b-mlx4
if [ ! -e "$m/config.json" ]; then
    t0=$(date +%s)
    "$B/moekit" synth "$W/ct" --arch qwen3_moe --preset 30b-a3b --format ct-int4 --threads "$nt" \
        --quiet --force || exit 1
    "$B/moekit" quantize "$W/ct" "$m" --bits 4 --group-size 64 --threads "$nt" --quiet --force \
        > "$out/quantize.log" 2>&1 || { tail -5 "$out/quantize.log"; exit 1; }
    rm -rf "$W/ct"
    echo "== made $m in $(($(date +%s) - t0)) s: $(du -sh "$m" | cut -f1)"
fi
for be in ${MK_30B_BACKENDS:-cuda cuda-base cuda-graph cuda cuda-base cuda-graph cuda-unfused}; do
    d=128
    [ $be = cuda-unfused ] && d=32
    echo "== bench_decode $m 16 $d $nt $be"
    timeout 200 "$B/bench_decode" "$m" 16 $d "$nt" $be 2>&1 | tee -a "$out/bench_30b.log" || rc=1
done
exit $rc
