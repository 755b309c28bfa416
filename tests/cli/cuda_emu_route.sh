#!/usr/bin/env bash
# The fused MoE step's routing (src/cuda/cuda_route_block.cuh: one block
# ranks the scores, DeepSeek-V3's selection bias and group limit, the VRAM
# expert cache's slot lookup and counts) run on the CPU by a host emulation
# (tests/emu/route_emu.cpp over tests/emu/cuda_emu.h) against the routing
# defined in backend.h, computed in double: Qwen's softmax, DeepSeek-V3's
# grouped sigmoid, Kimi-K2's one-group sigmoid; the same experts in the same
# order, weights within 1e-5. A control: the group step scoring a group by
# its best choice alone (not its two best) must fail.
# The emulations build their own code (not the build type's): they run in
# the release suite only.
# ctest-labels: slow
. "$(dirname "$0")/../emu/emu.bash"
emu_build "$T/emu" route_emu.cpp || fail "the emulation does not build"
"$T/emu" || fail "the emulated routing differs from the reference"
# the control: groups scored by their best choice only, not their two best
mkdir -p "$T/src/cuda"
cp "$ROOT/src/cuda/cuda_route_block.cuh" "$T/src/cuda/"
sed 's/gs\[g\] = c\[g \* per + b\[0\]\] + c\[g \* per + b\[1\]\];/gs[g] = c[g * per + b[0]];/' \
    "$ROOT/src/cuda/cuda_topk.cuh" > "$T/src/cuda/cuda_topk.cuh"
cmp -s "$ROOT/src/cuda/cuda_topk.cuh" "$T/src/cuda/cuda_topk.cuh" && fail "the control's edit did not apply"
emu_build "$T/emu_bad" route_emu.cpp "$T/src" || fail "the control does not build"
if "$T/emu_bad" > "$T/bad.log"; then fail "the emulation passed a broken group score"; fi
echo "ok: the emulated fused routing matches the reference; a broken group score is caught"
