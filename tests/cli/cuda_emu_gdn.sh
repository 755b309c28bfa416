#!/usr/bin/env bash
# The CUDA backend's chunked Gated DeltaNet prefill kernel
# (src/cuda/cuda_gdn_chunk.cuh) run on the CPU by a host emulation
# (tests/emu/gdn_chunk_emu.cpp over tests/emu/cuda_emu.h: a fiber per CUDA
# thread, barriers for __syncthreads), against the recurrence in double: outputs and final state
# within 1e-5 relative L2, for the Qwen3.5 head size and shapes that fill
# the kernel's threads in part, over whole and partial chunks. So the
# kernel's algebra, indexing and barriers are checked on machines without a
# GPU (the device runs test_backend_ops' gdn cases on the real thing).
# A control: the kernel with its decay mask off by one must fail.
# Then the decode kernels (k_conv, k_gdn and a batched step's forms) in
# tests/emu/gdn_emu.cpp, with a control of their own (a sign in beta).
# The emulations build their own code (not the build type's): they run in
# the release suite only.
# ctest-labels: slow
. "$(dirname "$0")/../emu/emu.bash"
emu_build "$T/emu" gdn_chunk_emu.cpp || fail "the emulation does not build"
for shape in "70 1 2 128 128" "100 2 4 32 48" "37 1 2 96 64" "3 2 4 8 6" "2 1 1 128 128" "33 2 2 64 128"; do
    # shellcheck disable=SC2086
    "$T/emu" $shape || fail "chunked gdn, shape $shape: past 1e-5 of the double reference"
done
# the control: q . k masked one position short (s < c instead of s <= c)
mkdir -p "$T/src/cuda"
sed 's/const float e = r <= c ? expf/const float e = r < c ? expf/' "$ROOT/src/cuda/cuda_gdn_chunk.cuh" \
    > "$T/src/cuda/cuda_gdn_chunk.cuh"
cmp -s "$ROOT/src/cuda/cuda_gdn_chunk.cuh" "$T/src/cuda/cuda_gdn_chunk.cuh" && fail "the control's edit did not apply"
emu_build "$T/emu_bad" gdn_chunk_emu.cpp "$T/src" || fail "the control does not build"
if "$T/emu_bad" 70 1 2 128 128; then fail "the emulation passed a broken kernel"; fi
# the decode kernels (cuda_gdn_kernel.cuh): k_conv, k_gdn's token loop and
# a batched step's k_conv_each / k_gdn_each (bitwise the one-sequence ones)
emu_build "$T/emud" gdn_emu.cpp || fail "the decode emulation does not build"
"$T/emud" || fail "the emulated gdn decode kernels differ from the reference"
# their control: beta from -b instead of b
sed 's/const float beta = 1.0f \/ (1.0f + expf(-a.b\[/const float beta = 1.0f \/ (1.0f + expf(a.b[/' \
    "$ROOT/src/cuda/cuda_gdn_kernel.cuh" > "$T/src/cuda/cuda_gdn_kernel.cuh"
cmp -s "$ROOT/src/cuda/cuda_gdn_kernel.cuh" "$T/src/cuda/cuda_gdn_kernel.cuh" && fail "the decode control's edit did not apply"
emu_build "$T/emud_bad" gdn_emu.cpp "$T/src" || fail "the decode control does not build"
if "$T/emud_bad" > /dev/null; then fail "the decode emulation passed a broken beta"; fi
echo "ok: the chunked gdn kernel matches the double recurrence in emulation; a broken mask is caught"
echo "ok: k_conv and k_gdn (and their batched forms) match the double conv and recurrence; a broken beta is caught"
