/* The last block in: the combine step of a launch whose blocks each
 * publish a share (a finding, a maximum, an attention share) and whose
 * last block to finish reads them all, with no second launch. A header of
 * its own so that the host emulation of the kernels that use it
 * (tests/emu/) runs this very code. */
#ifndef MK_CUDA_TICKET_CUH
#define MK_CUDA_TICKET_CUH

/* Every thread of the block calls it after its writes of the share: they
 * are fenced, the block takes one ticket of `n`, and the result (the same
 * in every thread) says whether it was the last; in the last block it
 * fences again, so the others' shares can be read. The caller's last block
 * sets *ticket back to 0 for the next launch (stream order) once it no
 * longer needs it (each where its combine ends). */
__device__ __forceinline__ bool mkc_last_in(unsigned *ticket, unsigned n) {
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0)
        last = atomicAdd(ticket, 1u) == n - 1;
    __syncthreads();
    if (last)
        __threadfence();
    return last;
}

#endif
