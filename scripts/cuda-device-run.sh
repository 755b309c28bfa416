#!/usr/bin/env bash
# Build moekit's CUDA parts on a lent GPU machine and run the GPU tests and
# bench_cuda_moe there (docs/CUDA.md). The machine has nvcc, cmake and
# ninja but not moekit's Debian -dev packages: pass a folder of .debs
# (libjansson-dev, libxxhash-dev, libpcre2-dev, libutf8proc-dev, libmicrohttpd-dev,
# libcmocka-dev, their runtime packages, pkgconf) as $1; they are unpacked
# under /tmp/deps (never into /) and pkg-config is pointed there.
#   usage: scripts/cuda-device-run.sh DEBS_DIR OUT_DIR [bench args...]
# Environment (this script's, not the library's): MK_TESTS the GPU tests to
# build and run (default test_cuda_gemv test_cuda_moe test_backend_ops);
# MK_TARGETS more targets to build (e.g. moekit_cli); MK_NO_BENCH=1 skips
# bench_cuda_moe; MK_AFTER a command run after the tests (fixture checks);
# MK_TEST_TIMEOUT seconds per test (default 120; test_backend_ops runs its
# table once per CPU kernel path before the CUDA one and needs more);
# MK_PREBUILT=DIR takes the binaries from DIR/bin.tar.xz (and DIR/*.deb)
# instead of building (scripts/cuda-prebuilt.sh packs them; carry DIR).
set -uo pipefail
debs=$1 out=$2
shift 2
D=/tmp/deps
mkdir -p "$D" "$out"
for f in "$debs"/*.deb; do dpkg -x "$f" "$D"; done
for pc in "$D"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc "$D"/usr/share/pkgconfig/*.pc; do
    [ -f "$pc" ] && sed -i "s|^prefix=/usr\$|prefix=$D/usr|" "$pc"
    # private requirements matter only to static links (libmicrohttpd's names gnutls,
    # whose -dev package the device lacks; its runtime library is there)
    [ -f "$pc" ] && sed -i '/^Requires.private:/d' "$pc"
done
export PKG_CONFIG_PATH=$D/usr/lib/x86_64-linux-gnu/pkgconfig:$D/usr/share/pkgconfig
export LD_LIBRARY_PATH=$D/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LIBRARY_PATH=$D/usr/lib/x86_64-linux-gnu${LIBRARY_PATH:+:$LIBRARY_PATH}
PKGCFG=$(command -v pkg-config || true)
[ -z "$PKGCFG" ] && PKGCFG=$D/usr/bin/pkgconf
command -v cc gcc g++ ninja cmake pkg-config; echo "== host: $(uname -m), $(nproc) cores; nvcc $(nvcc --version | tail -1); cc $(cc --version | head -1); pkg-config $PKGCFG"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
tests=${MK_TESTS:-test_cuda_gemv test_cuda_moe test_backend_ops}
bench=bench_cuda_moe
[ -n "${MK_NO_BENCH:-}" ] && bench=
if [ -n "${MK_PREBUILT:-}" ]; then
    # binaries built and packed on the session's machine (scripts/cuda-prebuilt.sh): no build
    # here, minutes of device time saved; their extra runtime packages (.debs) beside them
    for f in "$MK_PREBUILT"/*.deb; do [ -f "$f" ] && dpkg -x "$f" "$D"; done
    mkdir -p build-cuda && tar -xJf "$MK_PREBUILT/bin.tar.xz" -C build-cuda || exit 1
    echo "== prebuilt: $(tar -tJf "$MK_PREBUILT/bin.tar.xz" | tr '\n' ' ')"
    if ldd build-cuda/* 2>&1 | grep "not found"; then
        # e.g. an older glibc than the session machine's: build after all (minutes, but a result)
        echo "== prebuilt binaries miss libraries: building here instead"
        rm -rf build-cuda
        MK_PREBUILT=
    fi
fi
if [ -z "${MK_PREBUILT:-}" ]; then
    gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
    cmake -S . -B build-cuda "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPKG_CONFIG_EXECUTABLE="$PKGCFG" \
        -DCMAKE_C_FLAGS="-I$D/usr/include" 2>&1 | tee "$out/configure.log" | grep -E "MK_CUDA|Error|error"
    # shellcheck disable=SC2086
    cmake --build build-cuda -j16 --target $tests $bench ${MK_TARGETS:-} 2>&1 | tee "$out/build.log" |
        grep -E "error|warning" | head -30
fi
echo "== time: setup and build ${SECONDS} s" | tee -a "$out/timing.log"
rc=0
for t in $tests; do
    echo "== $t"
    timeout ${MK_TEST_TIMEOUT:-120} ./build-cuda/$t 2>&1 | tee "$out/$t.log" | grep -vE "^\[ *(RUN|OK) " || rc=1
done
echo "== time: tests done at ${SECONDS} s" | tee -a "$out/timing.log"
if [ -n "${MK_AFTER:-}" ]; then
    echo "== $MK_AFTER"
    bash -c "$MK_AFTER" || rc=1
    echo "== time: MK_AFTER done at ${SECONDS} s" | tee -a "$out/timing.log"
fi
if [ -z "$bench" ]; then
    exit $rc
fi
echo "== bench_cuda_moe $*"
# clocks while it runs (read only: METHOD.md, never set them)
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,utilization.gpu --format=csv -lms 250 \
    > "$out/clocks.csv" 2>&1 &
smi=$!
timeout 240 ./build-cuda/bench_cuda_moe "$@" 2>&1 | tee "$out/bench.log" || rc=1
kill $smi 2>/dev/null
echo "== SM clock MHz during the bench (min / median / max of the 250 ms samples)"
awk -F', ' 'NR > 1 {print $2+0}' "$out/clocks.csv" | sort -n | awk '{a[NR]=$1} END {if (NR) print a[1], a[int((NR+1)/2)], a[NR]}'
if [ -n "${MK_NCU:-}" ] && command -v ncu >/dev/null; then
    echo "== ncu (MoE kernels of the --quick stack)"
    timeout 120 ncu --clock-control none --kernel-name regex:"k_(router|gateup|down|gemv)" --launch-skip 103 \
        --launch-count 6 --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active,launch__registers_per_thread \
        ./build-cuda/bench_cuda_moe --quick > "$out/ncu.log" 2>&1
    grep -E "k_(router|gateup|down|gemv)|duration|dram__|warps_active|registers" "$out/ncu.log" | head -60
fi
exit $rc
