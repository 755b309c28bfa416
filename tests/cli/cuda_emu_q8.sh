#!/usr/bin/env bash
# The int8 grouped GEMM (src/cuda/cuda_grouped_q8.cuh: k_q8x, k_grp_mm_q8
# and the pipelined k_grp_mm_q8p; MK_CUDA_GEMM_INT8) run on the CPU by a host emulation (tests/emu/
# grouped_q8_emu.cpp over tests/emu/cuda_emu.h, whose mma.sync m16n8k32
# int8 x uint8 follows the PTX ISA's fragments): every output bitwise the
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
echo "ok: the emulated int8 GEMM is bitwise the CPU's in every case; swapped nibbles are caught"
