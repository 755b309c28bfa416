#!/usr/bin/env bash
# The CUDA backend's attention kernels (src/cuda/cuda_attn_kernel.cuh:
# k_attn's split decode walk and k_attn_merge, and a batched step's
# k_attn_each) run on the CPU by a host emulation (tests/emu/attn_emu.cpp
# over tests/emu/cuda_emu.h) for one decode token on GQA, MLA-latent,
# sliding-window-with-sinks and wide-head shapes, split and unsplit: within
# 1e-5 relative L2 of the softmax in double; k_attn_each bitwise k_attn per
# sequence with the new rows written; the q/k norms and RoPE folded into
# k_attn bitwise k_qk_norm_rope then k_attn; the decode attention grouped by
# kv head (k_attn_gqa, src/cuda/cuda_attn_gqa.cuh) within 1e-5 of the double
# softmax on 13 shapes and positions, its shares in either order. Controls:
# the reference without the sinks must miss the bound (in the harness), a
# kernel whose merge drops the sinks must fail, and k_attn_gqa without the
# token's own row must fail.
# The emulations build their own code (not the build type's): they run in
# the release suite only.
# ctest-labels: slow
. "$(dirname "$0")/../emu/emu.bash"
emu_build "$T/emu" attn_emu.cpp || fail "the emulation does not build"
"$T/emu" || fail "the emulated attention differs from the reference"
# the control: the merge without the sink's term in the denominator
mkdir -p "$T/src/cuda"
sed 's/    float L = a.sinks ? expf(sink - M) : 0.0f;$/    float L = 0.0f;/' "$ROOT/src/cuda/cuda_attn_kernel.cuh" \
    > "$T/src/cuda/cuda_attn_kernel.cuh"
cmp -s "$ROOT/src/cuda/cuda_attn_kernel.cuh" "$T/src/cuda/cuda_attn_kernel.cuh" && fail "the control's edit did not apply"
emu_build "$T/emu_bad" attn_emu.cpp "$T/src" || fail "the control does not build"
if "$T/emu_bad" > "$T/bad.log"; then fail "the emulation passed a merge without sinks"; fi
grep -q "FAIL gpt_oss" "$T/bad.log" || { cat "$T/bad.log"; fail "the control failed elsewhere than the sinks case"; }
# the control of k_attn_gqa: without the token's own row (k_new / v_new) in its chunk
sed 's/        if (T - 1 >= s0 \&\& T - 1 < s0 + cnt) {.*$/        if (false) {/' "$ROOT/src/cuda/cuda_attn_gqa.cuh" \
    > "$T/src/cuda/cuda_attn_gqa.cuh"
cmp -s "$ROOT/src/cuda/cuda_attn_gqa.cuh" "$T/src/cuda/cuda_attn_gqa.cuh" && fail "the gqa control's edit did not apply"
cp "$ROOT/src/cuda/cuda_attn_kernel.cuh" "$T/src/cuda/cuda_attn_kernel.cuh"
emu_build "$T/emu_bad2" attn_emu.cpp "$T/src" || fail "the gqa control does not build"
if "$T/emu_bad2" gqa > "$T/bad2.log"; then fail "the emulation passed k_attn_gqa without the token's own row"; fi
grep -q "FAIL gqa: 8 heads on 2, d 64, position 100" "$T/bad2.log" || { cat "$T/bad2.log"; fail "the gqa control failed elsewhere"; }
echo "ok: the attention kernels match the double softmax in emulation; k_attn_each is k_attn per sequence; a merge without sinks is caught; k_attn_gqa without the new row is caught"
