/* GEMV on the device: y = W x for every format mkc_kind_of takes, one
 * launch, float32 in and out.
 *
 * A warp computes two consecutive rows at once (their loads overlap and x
 * is loaded once for both: mkc_dot_rows<2, true>), 8 warps a block. The
 * format switch is uniform across the grid, so it costs a branch, not
 * divergence. Bandwidth is what matters at batch 1: each lane moves 16-byte
 * chunks of both rows, coalesced across the warp (bench/bench_cuda_moe.cu
 * measures it against a device-to-device copy). */
#include "cuda/cuda_impl.cuh"

#define GEMV_WARPS 8

__global__ void __launch_bounds__(GEMV_WARPS * 32, 3) k_gemv(mkc_w w, const float *__restrict__ xg,
                                                            float *__restrict__ y, int accumulate, int staged) {
    extern __shared__ float4 mkc_sm4[];
    const float *x = xg;
    if (staged) { /* every warp of the block reads all of x: once from L2 into shared memory */
        mkc_stage((float *)mkc_sm4, xg, w.cols);
        __syncthreads();
        x = (const float *)mkc_sm4;
    }
    const int lane = threadIdx.x & 31;
    const int64_t warp = (int64_t)blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    const int64_t r0 = warp * 2;
    if (r0 >= w.rows)
        return;
    const bool two = r0 + 1 < w.rows;
    const mkc_w *ws[2] = {&w, &w};
    const int64_t rows[2] = {r0, two ? r0 + 1 : r0};
    const float *xs[2] = {x, x};
    float acc[2];
    mkc_dot_rows<2, true>(ws, rows, xs, lane, acc);
    float a0 = mkc_warp_sum(acc[0]), a1 = mkc_warp_sum(acc[1]);
    if (lane == 0) {
        y[r0] = accumulate ? y[r0] + a0 : a0;
        if (two)
            y[r0 + 1] = accumulate ? y[r0 + 1] + a1 : a1;
    }
}

extern "C" mk_status mk_cuda_gemv(const mk_wt *w, const float *x, float *y, bool accumulate, void *stream) {
    mkc_w v;
    MK_TRY(mkc_view(w, "gemv weight", &v));
    if (((uintptr_t)x & 15) != 0)
        return mk_err(MK_E_ARG, "gemv: x must be 16-byte aligned device memory");
    if (w->rows == 0)
        return MK_OK;
    const int64_t warps = (w->rows + 1) / 2;
    const int64_t blocks = (warps + GEMV_WARPS - 1) / GEMV_WARPS;
    if (blocks > 0x7fffffff)
        return mk_err(MK_E_UNSUPPORTED, "gemv: %lld rows exceed one launch", (long long)w->rows);
    /* stage x in shared memory when it fits and is whole float4s */
    const bool staged = w->cols % 4 == 0 && w->cols * 4 <= MKC_SMEM_MAX;
    k_gemv<<<(unsigned)blocks, GEMV_WARPS * 32, staged ? (size_t)w->cols * 4 : 0, (cudaStream_t)stream>>>(
        v, x, y, accumulate ? 1 : 0, staged ? 1 : 0);
    MKC_TRY(cudaGetLastError(), "launching gemv");
    return MK_OK;
}
