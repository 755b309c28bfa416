#!/usr/bin/env bash
# What the CUDA code written without a GPU (sessions 15-16) owes the device,
# in the order to run it (docs/CUDA.md's "not yet run on the device"
# sections): run on the lent machine as scripts/cuda-device-run.sh's
# MK_AFTER, after it built build-cuda/ with
#   MK_TESTS="test_cuda_gemv test_cuda_moe test_backend_ops test_expert_stream"
#   MK_TARGETS="moekit_cli test_engine_fixtures bench_decode"
# and with the fixtures packed by `scripts/cuda-fixtures.sh pack .cuda-fx ...`
# (the device carries 64 MiB: split the fixtures over calls if need be).
#   scripts/cuda-owed.sh tests FX_TAR     fixtures' _cuda cases, the CLI's CUDA tests
#   scripts/cuda-owed.sh bench            the measurements to record in bench/RESULTS.md
# Logs go to $OUT. Exit 1 when a check fails (the measurements never fail it).
set -uo pipefail
what=${1:?usage: see the header}
out=${OUT:-/tmp}
rc=0
case $what in
tests)
    fx=${2:?the tar of the fixtures}
    # every fixture on the GPU path: PDL on, DeepSeek-V3's routing in the fused
    # step (MLA under replay), the chunked GDN prefill on the hybrids
    bash scripts/cuda-fixtures.sh test "$fx" '*_cuda' || rc=1
    # the CLI's CUDA cases: expert placement and the VRAM expert cache,
    # serve on CUDA with its streamed-experts round
    (cd build-cuda && MK_BIN=$PWD/moekit ctest -R 'cli.gpu_expert_vram|cli.serve_batch_cuda' --output-on-failure) \
        2>&1 | tee "$out/cli_cuda.log" || rc=1
    ;;
bench)
    m=/tmp/mk-owed-30b q=/tmp/mk-owed-35b
    B=./build-cuda/moekit
    [ -d "$m" ] || { $B synth "$m.ct" --arch qwen3_moe --preset 30b-a3b --format ct-int4 &&
        $B quantize "$m.ct" "$m" --bits 4 --group-size 64; } > "$out/synth.log" 2>&1
    [ -d "$q" ] || { $B synth "$q.ct" --arch qwen3_5_moe --preset 35b-a3b --format ct-int4 &&
        $B quantize "$q.ct" "$q" --bits 4 --group-size 64; } >> "$out/synth.log" 2>&1
    D=./build-cuda/bench_decode
    {
        echo "== 30B decode, default (PDL on); then PDL off"
        $D "$m" 16 128 16 cuda
        MK_CUDA_MOE_PDL=0 $D "$m" 16 128 16 cuda
        echo "== 30B, experts past 8 GiB in host memory, then 6 GiB + a 2 GiB VRAM expert cache (equal device memory)"
        MK_CUDA_EXPERT_VRAM=$((8 << 30)) $D "$m" 16 256 16 cuda
        MK_CUDA_EXPERT_VRAM=$((6 << 30)) MK_CUDA_EXPERT_CACHE=$((2 << 30)) $D "$m" 16 256 16 cuda
        echo "== 35B hybrid prefill 2048: chunked GDN, then the token loop"
        $D "$q" 2048 16 16 cuda
        MK_CUDA_GDN_CHUNKED=0 $D "$q" 2048 16 16 cuda
    } 2>&1 | tee "$out/bench_owed.log"
    echo "== GEMV of FP8 and MXFP4 against the copy roofline"
    ./build-cuda/bench_cuda_moe --gemv 2>&1 | tee "$out/bench_cuda_moe.log"
    ;;
*)
    echo "usage: see the header" >&2
    exit 2
    ;;
esac
exit $rc
