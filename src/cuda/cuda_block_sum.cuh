/* Block-wide sum (blockDim.x a multiple of 32, <= 1024); every thread gets
 * it. `sh` is 32 floats of shared memory; the call synchronises. A header
 * of its own so that the host emulation of kernels that use it
 * (tests/emu/) runs this very code; the includer provides mkc_warp_sum. */
#ifndef MK_CUDA_BLOCK_SUM_CUH
#define MK_CUDA_BLOCK_SUM_CUH

__device__ __forceinline__ float mkb_block_sum(float v, float *sh) {
    const int lane = threadIdx.x & 31, wp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = mkc_warp_sum(v);
    __syncthreads(); /* sh may still be read by a previous call */
    if (lane == 0)
        sh[wp] = v;
    __syncthreads();
    float t = lane < nw ? sh[lane] : 0.0f;
    return mkc_warp_sum(t);
}

#endif
