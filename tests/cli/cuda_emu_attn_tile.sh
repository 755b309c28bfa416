#!/usr/bin/env bash
# The CUDA backend's tiled prefill attention (src/cuda/cuda_attn_tile.cuh:
# k_attn_tile and k_attn_tile2) run on the CPU by a host emulation
# (tests/emu/attn_tile_emu.cpp over tests/emu/cuda_emu.h) on chunks of
# several tokens: causal, GQA, head dims 64 to 256, k wider than v, strided
# rows, a sliding window with sinks: within 1e-5 relative L2 of the softmax
# in double, every output written, at the shared memory the launch asks
# for. Controls: the references without the causal mask and without the
# sinks must miss (in the harness), and a generation 2 that drops the mask
# must fail.
# The emulations build their own code (not the build type's): they run in
# the release suite only.
# ctest-labels: slow
. "$(dirname "$0")/../emu/emu.bash"
emu_build "$T/emu" attn_tile_emu.cpp || fail "the emulation does not build"
"$T/emu" || fail "the emulated tiled attention differs from the reference"
# the control: generation 2 scoring every key of a tile (no causal mask)
mkdir -p "$T/src/cuda"
sed 's/s\[i\]\[j\] = live\[i\] \&\& p <= qp\[i\] \&\& p >= lo\[i\]/s[i][j] = live[i] \&\& p < T \&\& p >= lo[i]/' \
    "$ROOT/src/cuda/cuda_attn_tile.cuh" > "$T/src/cuda/cuda_attn_tile.cuh"
cmp -s "$ROOT/src/cuda/cuda_attn_tile.cuh" "$T/src/cuda/cuda_attn_tile.cuh" && fail "the control's edit did not apply"
emu_build "$T/emu_bad" attn_tile_emu.cpp "$T/src" || fail "the control does not build"
if "$T/emu_bad" > "$T/bad.log"; then fail "the emulation passed a generation 2 without the causal mask"; fi
grep -q "FAIL gen 2" "$T/bad.log" || { cat "$T/bad.log"; fail "the control failed elsewhere than generation 2"; }
grep -q "FAIL gen 1" "$T/bad.log" && { cat "$T/bad.log"; fail "the control broke generation 1 too"; }
echo "ok: both tiled attention kernels match the double softmax in emulation; a generation 2 without the causal mask is caught"
