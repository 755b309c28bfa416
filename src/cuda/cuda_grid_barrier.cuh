/* A grid-wide barrier for a co-resident grid (a cooperative launch): the
 * persistent MoE stack's (cuda_moe.cu k_stack), and what bench_cuda_sync
 * measures against a kernel boundary. */
#ifndef MK_CUDA_GRID_BARRIER_CUH
#define MK_CUDA_GRID_BARRIER_CUH

/* Arrive on a counter, the last block bumps the generation; the others wait
 * for it. Fences order each block's writes before the arrival and the
 * waiters' reads after it. */
__device__ __forceinline__ void mkc_grid_barrier(unsigned *count, unsigned *gen) {
    __syncthreads();
    if (threadIdx.x == 0) {
        volatile unsigned *vg = gen;
        const unsigned g = *vg;
        __threadfence();
        if (atomicAdd(count, 1u) == gridDim.x - 1) {
            *count = 0u;
            __threadfence();
            atomicAdd(gen, 1u);
        } else {
            while (*vg == g)
                __nanosleep(32);
        }
        __threadfence();
    }
    __syncthreads();
}

#endif
