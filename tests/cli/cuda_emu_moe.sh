#!/usr/bin/env bash
# The fused CUDA MoE step (src/cuda/cuda_moe_kernels.cuh: k_router with its
# routing, k_gateup, k_down / k_down2, arguments by moe_args_of) run on the
# CPU by a host emulation (tests/emu/moe_emu.cpp over tests/emu/cuda_emu.h)
# on Qwen3-Next-, DeepSeek-V3- (selection bias, groups) and bf16-shaped
# layers, both kernel generations, x and h staged or not: the chosen experts
# and y (rel L2 <= 1e-5) those of the double reference over the CPU's
# dequantizer (tests/emu/moe_ref.c); with the VRAM expert cache, y bitwise
# the uncached step's and the routing counts exact, and one control per
# part (a slot holding another expert's bytes) must change y. On int8
# activations (k_gateup_q8, k_down2_q8) h and y within their bounds of the
# double rule over the CPU's quantizer (src/kernels/q8.c), the cache
# bitwise, and the float down kernel off that rule (a control). Needs the
# CUDA toolkit's headers; skipped without them.
# The emulations build their own code (not the build type's): they run in
# the release suite only.
# ctest-labels: slow
. "$(dirname "$0")/../emu/emu.bash"
if [ ! -f "$CUDA_INC/cuda_fp16.h" ] || [ ! -f "$CUDA_INC/cuda_fp8.h" ]; then
    echo "skip: no CUDA headers at $CUDA_INC (set CUDA_HOME)"
    exit 77
fi
emu_objects "$T/obj" "$ROOT/tests/emu/moe_ref.c" "$ROOT/src/kernels/q8.c" "$ROOT/src/core/wt.c" "$ROOT/src/core/dtype.c" \
    "$ROOT/src/core/status.c" || fail "the reference does not build"
emu_build "$T/emu" moe_emu.cpp "" "$T"/obj/*.o || fail "the emulation does not build"
"$T/emu" || fail "the emulated MoE step differs from the reference"
echo "ok: the emulated fused MoE step matches the reference, with and without the VRAM expert cache"
