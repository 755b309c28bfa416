#!/usr/bin/env bash
# The int8 grouped GEMM (src/cuda/cuda_grouped_q8.cuh: k_q8x, k_grp_mm_q8
# and the pipelined k_grp_mm_q8p; cuda_grouped_q8w.cuh: k_grp_mm_q8w on
# wgmma; MK_CUDA_GEMM_INT8) run on the CPU by a host emulation (tests/emu/
# grouped_q8_emu.cpp over tests/emu/cuda_emu.h, whose mma.sync m16n8k32
# int8 x uint8 and wgmma m64nNk32 follow the PTX ISA's fragments and
# descriptors as cuda_wgmma.cuh reads them): every output bitwise the
# CPU's own int8 prefill GEMM (src/kernels/kern_gemm_q8.c, linked as it is,
# portable table), as a plain matmul and grouped (gathered rows, gate and
# up in one launch, rows written through c_rows), over MLX affine 4/8-bit
# weights in several groups and scale dtypes, with NaN and zero blocks.
# Needs the CUDA toolkit's headers; skipped without them. A control: the
# 4-bit codes unpacked with their nibbles swapped must fail, in both kernels.
# The emulations build their own code (not the build type's): they run in
# the release suite only.
# ctest-labels: slow
. "$(dirname "$0")/../emu/emu.bash"
emu_grouped_ref "$T/obj" # skips (77) without the CUDA headers
OBJ=("$T"/obj/*.o)
emu_build "$T/emu" grouped_q8_emu.cpp "" "${OBJ[@]}" -lm || fail "the emulation does not build"
"$T/emu" || fail "the emulated int8 GEMM differs from the CPU's"
mkdir -p "$T/src/cuda"
sed -e 's/0x5140), __byte_perm(e, o, 0x7362)/0x4051), __byte_perm(e, o, 0x6273)/' \
    -e 's/return __byte_perm(e, o, 0x5140);/return __byte_perm(e, o, 0x4051);/' "$ROOT/src/cuda/cuda_grouped_q8.cuh" \
    > "$T/src/cuda/cuda_grouped_q8.cuh"
cmp -s "$ROOT/src/cuda/cuda_grouped_q8.cuh" "$T/src/cuda/cuda_grouped_q8.cuh" && fail "the control's edit did not apply"
emu_build "$T/emu_bad" grouped_q8_emu.cpp "$T/src" "${OBJ[@]}" -lm || fail "the control does not build"
if "$T/emu_bad" "affine4 g64" > "$T/bad.log"; then fail "the emulation passed swapped nibbles"; fi
grep -q "FAIL affine4 g64.*(plain)" "$T/bad.log" || fail "the control failed elsewhere: $(head -3 "$T/bad.log")"
grep -q "FAIL affine4 g64.*(plain, pipelined)" "$T/bad.log" ||
    fail "the control's swapped nibbles passed the pipelined kernel: $(head -3 "$T/bad.log")"
grep -q "FAIL affine4 g64.*(plain, wgmma)" "$T/bad.log" ||
    fail "the control's swapped nibbles passed the wgmma kernel: $(head -3 "$T/bad.log")"
# the wgmma kernel's own controls: its two rows' block scales exchanged (the accumulator fragment's rows),
# and its weight tile described with twice the stride between row groups
for m in 's/const float d = h ? d1 : d0;/const float d = h ? d0 : d1;/' \
         's/mkc_wg_desc(Ws + ks \* 256, 128, Q8W_SBO)/mkc_wg_desc(Ws + ks * 256, 128, 2 * Q8W_SBO)/'; do
    rm -rf "$T/src"
    mkdir -p "$T/src/cuda"
    sed -e "$m" "$ROOT/src/cuda/cuda_grouped_q8w.cuh" > "$T/src/cuda/cuda_grouped_q8w.cuh"
    cmp -s "$ROOT/src/cuda/cuda_grouped_q8w.cuh" "$T/src/cuda/cuda_grouped_q8w.cuh" && fail "the control's edit did not apply: $m"
    emu_build "$T/emu_bad" grouped_q8_emu.cpp "$T/src" "${OBJ[@]}" -lm || fail "the control does not build: $m"
    if "$T/emu_bad" "K640 N300" > "$T/bad.log" 2>&1; then fail "the emulation passed a mutated wgmma kernel: $m"; fi
    grep -q "FAIL affine4 g64.*(plain, wgmma)" "$T/bad.log" || grep -q "cuda_emu: wgmma" "$T/bad.log" ||
        fail "the control ($m) failed elsewhere: $(head -3 "$T/bad.log")"
    grep -q "FAIL.*(plain)\|FAIL.*pipelined" "$T/bad.log" && fail "the control ($m) failed another kernel"
done
echo "ok: the emulated int8 GEMM is bitwise the CPU's in every case; swapped nibbles and two mutations of the wgmma kernel are caught"
