#!/usr/bin/env bash
# moekit's CUDA backend beside llama.cpp's own CUDA build on the same weights (issue 14's side by
# side; results in bench/RESULTS.md, 2026-12-04 session 10).
#   here:    bench/bench_cuda_peer.sh pack DIR   -> DIR/src.tar.xz: llama.cpp's sources from
#            .peers/llama.cpp (node-llama-cpp's bundle, scripts/install-deps.d/llama.sh) without
#            its git history, models, docs and tests (~7 MB: the device carries 64 MiB)
#   device:  bench/bench_cuda_peer.sh run DIR OUT  (from the repository root; DIR named in carry
#            with .cuda-deps): builds moekit with scripts/cuda-device-run.sh and, at the same time,
#            llama.cpp's llama-bench with GGML_CUDA for sm_90 (~2.5 min on 16 cores); makes one
#            synthetic Qwen3-30B-A3B (`moekit synth --format ct-int4`) and from it MLX affine 4-bit
#            g64 (moekit) and GGUF Q4_0 (llama.cpp; `moekit convert --to gguf`, the writer
#            bit-identical to llama-quantize's): both 4.5 bits per weight from the same int4 values;
#            then, interleaved twice: moekit bench_decode (decode 128 tokens at positions 16-143, a
#            2048-token prefill after an untimed one) and llama-bench -ngl 99 -p 2048 -n 128 -r 3
#            -fa 0,1. Logs under OUT.
set -uo pipefail
cmd=${1:?usage: see the header} dir=${2:?usage: see the header}
case $cmd in
pack)
    src=${MK_PEERS:-.peers}/llama.cpp
    [ -f "$src/CMakeLists.txt" ] || { echo "bench_cuda_peer: no llama.cpp sources at $src" >&2; exit 2; }
    mkdir -p "$dir"
    tar -C "$src" --exclude=./.git --exclude=./models --exclude=./docs --exclude=./examples \
        --exclude=./gguf-py --exclude=./tests --exclude=./media --exclude=./app --exclude=./benches \
        --exclude='./build*' --exclude=./pocs --exclude=./ci -cf - . | xz -6 -T2 > "$dir/src.tar.xz"
    du -h "$dir/src.tar.xz"
    ;;
run)
    OUT=${3:?usage: bench_cuda_peer.sh run DIR OUT}
    export OUT
    mkdir -p /tmp/lc/src "$OUT" && tar -xJf "$dir/src.tar.xz" -C /tmp/lc/src || exit 1
    (cmake -S /tmp/lc/src -B /tmp/lc/b -G Ninja -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90-real \
        -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DGGML_CCACHE=OFF -DCMAKE_BUILD_TYPE=Release \
        > "$OUT/lc_configure.log" 2>&1 &&
        nice -n 5 cmake --build /tmp/lc/b -j"$(nproc)" --target llama-bench > "$OUT/lc_build.log" 2>&1
     echo "llama.cpp build rc $? at $(date +%T)" >> "$OUT/lc_build.log") &
    echo $! > /tmp/lc/pid
    MK_TESTS=test_backend_ops MK_TARGETS="moekit_cli bench_decode" MK_NO_BENCH=1 \
        MK_AFTER="bash bench/bench_cuda_peer.sh bench $dir" bash scripts/cuda-device-run.sh .cuda-deps "$OUT"
    ;;
bench) # the second half of run (after moekit is built)
    T0=$(date +%s) B=build-cuda nt=$(nproc) W=/tmp/mk-bench
    mkdir -p $W
    t0=$(date +%s)
    $B/moekit synth $W/ct --arch qwen3_moe --preset 30b-a3b --format ct-int4 --threads "$nt" --quiet --force || exit 1
    $B/moekit quantize $W/ct $W/mlx4 --bits 4 --group-size 64 --threads "$nt" --max-memory 8G --quiet --force \
        > "$OUT/quantize.log" 2>&1 || { tail -3 "$OUT/quantize.log"; exit 1; }
    $B/moekit convert $W/ct $W/q4_0.gguf --to gguf --gguf-type q4_0 --threads "$nt" --quiet > "$OUT/gguf.log" 2>&1 ||
        { tail -3 "$OUT/gguf.log"; exit 1; }
    rm -rf $W/ct
    echo "== models made in $(($(date +%s) - t0)) s: $(du -sh $W/mlx4 | cut -f1) mlx4, $(du -sh $W/q4_0.gguf | cut -f1) q4_0"
    while kill -0 "$(cat /tmp/lc/pid)" 2> /dev/null; do
        [ $(($(date +%s) - T0)) -gt 330 ] && { echo "llama.cpp still building: giving up"; break; }
        sleep 5
    done
    tail -1 "$OUT/lc_build.log"
    LB=/tmp/lc/b/bin/llama-bench
    for r in 1 2; do
        echo "== moekit (rep $r)"
        timeout 90 $B/bench_decode $W/mlx4 16 128 "$nt" cuda 2>&1 | tee -a "$OUT/mk.log" | grep -E "^decode|bound"
        timeout 90 $B/bench_decode $W/mlx4 2048 8 "$nt" cuda 2>&1 | tee -a "$OUT/mk.log" | grep -E "^prefill"
        if [ -x $LB ]; then
            echo "== llama.cpp (rep $r)"
            timeout 120 $LB -m $W/q4_0.gguf -ngl 99 -p 2048 -n 128 -r 3 -fa 0,1 -o md 2>&1 | tee -a "$OUT/llama.log" |
                grep -E "^\|"
        fi
    done
    nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
    ;;
*) echo "bench_cuda_peer: unknown command $cmd" >&2; exit 2 ;;
esac
