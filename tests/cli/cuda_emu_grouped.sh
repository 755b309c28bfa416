#!/usr/bin/env bash
# The grouped GEMM on split activations, the default MoE prefill
# (src/cuda/cuda_grouped_split.cuh: k_grp_mm) run on the CPU by a host
# emulation (tests/emu/grouped_split_emu.cpp over tests/emu/cuda_emu.h,
# whose mma.sync m16n8k16 on bf16 follows the PTX ISA's fragments): three
# experts stacked, routed rows gathered through a_rows into tiles, gate and
# up in one launch, rows written through c_rows, MLX affine 4/8-bit in
# several groups and scale dtypes; every output written and within 1e-5 of
# sum |w x| of the double product with the CPU's dequantized weights. The
# control (in the harness): x rounded to bf16 once must miss that bound.
# Needs the CUDA toolkit's headers; skipped without them.
# The emulations build their own code (not the build type's): they run in
# the release suite only.
# ctest-labels: slow
. "$(dirname "$0")/../emu/emu.bash"
emu_grouped_ref "$T/obj" # skips (77) without the CUDA headers
OBJ=("$T"/obj/*.o)
emu_build "$T/emu" grouped_split_emu.cpp "" "${OBJ[@]}" -lm || fail "the emulation does not build"
"$T/emu" || fail "the emulated split grouped GEMM misses the double product's bound"
echo "ok: the split grouped GEMM within the matmul bound in emulation; bf16 x alone is caught"
