#!/usr/bin/env bash
# The host emulator of the CUDA execution model (tests/emu/cuda_emu.h),
# which every tests/cli/cuda_emu_*.sh stands on, checked on kernels whose
# answers are known (tests/emu/self_emu.cpp): block sums of 32..1024
# threads through shared memory, barriers and shuffles, each thread's frame
# intact across barriers, shuffles reading the named lane, fibers starting
# with the launcher's rounding mode; both fiber switches (x86-64's own and
# ucontext's) where the host has the first. A block with half a warp at a
# shuffle and the rest at __syncthreads must abort, not complete; so must a
# block writing past the dynamic shared memory its launch asked for (emu_smem).
# The emulations build their own code (not the build type's): they run in
# the release suite only.
# ctest-labels: slow
. "$(dirname "$0")/../emu/emu.bash"
emu_build "$T/emu" self_emu.cpp || fail "the emulator's self-check does not build"
"$T/emu" || fail "the emulator got a known answer wrong"
if "$T/emu" diverge > "$T/div.log" 2>&1; then fail "a divergent block completed: $(cat "$T/div.log")"; fi
grep -q "threads wait at different barriers" "$T/div.log" || fail "a divergent block failed without naming it: $(cat "$T/div.log")"
if "$T/emu" smem_past > "$T/smem.log" 2>&1; then fail "a write past the launch's shared memory completed: $(cat "$T/smem.log")"; fi
grep -q "past the 64 bytes its launch asked for" "$T/smem.log" || fail "the shared-memory overrun failed without naming it: $(cat "$T/smem.log")"
if [ "$(uname -m)" = x86_64 ]; then
    EMU_CXXFLAGS=-DEMU_UCONTEXT emu_build "$T/emu_uc" self_emu.cpp || fail "the ucontext build does not build"
    "$T/emu_uc" || fail "the emulator over ucontext got a known answer wrong"
fi
echo "ok: the emulator's sums, shuffles, frames and rounding mode hold; a divergent block and a shared-memory overrun abort"
