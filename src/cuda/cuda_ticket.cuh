/* The last block in: the combine step of a launch whose blocks each
 * publish a share (a finding, a maximum, an attention share) and whose
 * last block to finish reads them all, with no second launch. A header of
 * its own so that the host emulation of the kernels that use it
 * (tests/emu/) runs this very code. */
#ifndef MK_CUDA_TICKET_CUH
#define MK_CUDA_TICKET_CUH

/* Every thread of the block calls it after its writes of the share: the
 * block barrier orders them before thread 0's ticket, one atomic of `n`
 * with acquire-release semantics at gpu scope (the release is cumulative:
 * it covers the writes the barrier ordered before it, as cooperative
 * groups' grid barrier relies on; in the last block its acquire, and the
 * barrier after it, order the other blocks' shares before every thread's
 * reads). The result (the same in every thread) says whether the block was
 * the last. The caller's last block sets *ticket back to 0 for the next
 * launch (stream order) once it no longer needs it (each where its combine
 * ends). Why one thread's atomic: bench_cuda_sync measured a ticket of
 * every thread's __threadfence at 1.26-1.47 us over a kernel boundary under
 * PDL, one acq_rel atomic at 0.88-0.98 (an H100, 16 and 128 blocks;
 * bench/RESULTS.md session 34), and a decode step takes ~100 tickets. */
__device__ __forceinline__ bool mkc_last_in(unsigned *ticket, unsigned n) {
    __shared__ bool last;
    __syncthreads();
    if (threadIdx.x == 0) {
#ifdef MK_CUDA_EMU /* the host emulation: a sequentially consistent atomic */
        last = atomicAdd(ticket, 1u) == n - 1;
#else
        unsigned old;
        asm volatile("atom.add.acq_rel.gpu.u32 %0, [%1], 1;" : "=r"(old) : "l"(ticket) : "memory");
        last = old == n - 1;
#endif
    }
    __syncthreads();
    return last;
}

#endif
