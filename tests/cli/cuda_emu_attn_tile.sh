#!/usr/bin/env bash
# The CUDA backend's tiled prefill attention (src/cuda/cuda_attn_tile.cuh:
# k_attn_tile and k_attn_tile2; src/cuda/cuda_attn_mma.cuh: k_attn_tile3 on
# the tensor cores, their mma.sync emulated) run on the CPU by a host emulation
# (tests/emu/attn_tile_emu.cpp over tests/emu/cuda_emu.h) on chunks of
# several tokens: causal, GQA, head dims 64 to 256, k wider than v, strided
# rows, a sliding window with sinks: within 1e-5 relative L2 of the softmax
# in double, every output written, at the shared memory the launch asks
# for. Controls: the references without the causal mask and without the
# sinks must miss (in the harness), a generation 2 or 3 that drops the mask
# must fail, and so must a generation 3 on bf16 alone (its operands not
# split in three: 2.4e-3 measured, where the split gives 1.3e-7).
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
if EMU_GENS_MAX=2 "$T/emu_bad" > "$T/bad.log"; then fail "the emulation passed a generation 2 without the causal mask"; fi
grep -q "FAIL gen 2" "$T/bad.log" || { cat "$T/bad.log"; fail "the control failed elsewhere than generation 2"; }
grep -q "FAIL gen 1" "$T/bad.log" && { cat "$T/bad.log"; fail "the control broke generation 1 too"; }
# the controls of generation 3: without the causal mask; on bf16 alone
mkdir -p "$T/src3/cuda" "$T/src3b/cuda"
sed 's/live\[hr\] \&\& rel <= 0 \&\& rel >= wmin/live[hr] \&\& rel >= wmin/' \
    "$ROOT/src/cuda/cuda_attn_mma.cuh" > "$T/src3/cuda/cuda_attn_mma.cuh"
sed '/    p\[2\] = mkc_bf16x2(ra - /a\    p[1] = p[2] = 0u; /* the control: bf16 alone */' \
    "$ROOT/src/cuda/cuda_attn_mma.cuh" > "$T/src3b/cuda/cuda_attn_mma.cuh"
for v in src3 src3b; do
    cmp -s "$ROOT/src/cuda/cuda_attn_mma.cuh" "$T/$v/cuda/cuda_attn_mma.cuh" && fail "the control's edit ($v) did not apply"
    emu_build "$T/emu_$v" attn_tile_emu.cpp "$T/$v" || fail "the control ($v) does not build"
    if EMU_GENS_MAX=3 "$T/emu_$v" > "$T/$v.log"; then fail "the emulation passed a broken generation 3 ($v)"; fi
    grep -q "FAIL gen 3" "$T/$v.log" || { cat "$T/$v.log"; fail "the control ($v) failed elsewhere than generation 3"; }
    grep -qE "FAIL gen [12]" "$T/$v.log" && { cat "$T/$v.log"; fail "the control ($v) broke generation 1 or 2"; }
done
echo "ok: the three tiled attention kernels match the double softmax in emulation; a generation 2 or 3 without the causal mask and a generation 3 on bf16 alone are caught"
