/* The GEMV kernels (k_gemv, k_gemv_n; the launch code is cuda_gemv.cu's).
 * A header of its own so that the host emulation (tests/cli/cuda_emu_gemv.sh)
 * runs these very kernels, with cuda_impl.cuh's dot products, on every
 * weight format. The includer provides cuda_impl.cuh. */
#ifndef MK_CUDA_GEMV_KERNEL_CUH
#define MK_CUDA_GEMV_KERNEL_CUH

#define GEMV_WARPS 8
#define GEMV_ROWS 4 /* rows per warp: their loads are in flight together, x read once */

/* Before the wait for the previous kernel (mkc_pdl_enter), when pf (the
 * launch's MK_CUDA_PREFETCH_GEMV): ask L2 for the bytes of the warp's rows
 * r0 .. r0 + nr - 1 of w, their codes and, for the affine and FP4 kinds,
 * their scales (and biases), which the weights' loads after the wait then
 * find there. */
__device__ __forceinline__ void gemv_prefetch(const mkc_w &w, int64_t r0, int64_t nr, int lane) {
    mkc_prefetch_l2(w.data + r0 * w.row_bytes, nr * w.row_bytes, lane);
    if (mkc_is_aff(w.kind)) {
        const int64_t gb = w.ng * mkc_aff_sb(w.kind);
        mkc_prefetch_l2((const uint8_t *)w.scales + r0 * gb, nr * gb, lane);
        mkc_prefetch_l2((const uint8_t *)w.biases + r0 * gb, nr * gb, lane);
    } else if (w.kind == MKC_MX4 || w.kind == MKC_NV4) {
        const int64_t sb = w.cols / (w.kind == MKC_MX4 ? 32 : 16);
        mkc_prefetch_l2((const uint8_t *)w.scales + r0 * sb, nr * sb, lane);
    }
}

/* nt tokens (x [nt, cols], y [nt, rows]): block b does the one-token
 * launch's block b / nt for token b % nt (tokens innermost: the blocks that
 * read the same rows run together, so the rows come from DRAM about once),
 * each token's rows bitwise the one-token launch's. */
template <bool P>
__global__ void __launch_bounds__(GEMV_WARPS * 32) k_gemv(mkc_w w, const float *__restrict__ xg,
                                                            float *__restrict__ y, int accumulate, int staged,
                                                            int nt = 1, int pf = 0) {
    MKC_DYN_SMEM(float4, mkc_sm4);
    const int64_t tok = blockIdx.x % (unsigned)nt, blk = blockIdx.x / (unsigned)nt;
    const int lane = threadIdx.x & 31;
    const int64_t warp = blk * GEMV_WARPS + (threadIdx.x >> 5);
    const int64_t r0 = warp * GEMV_ROWS;
    if (pf && r0 < w.rows)
        gemv_prefetch(w, r0, w.rows - r0 < GEMV_ROWS ? w.rows - r0 : GEMV_ROWS, lane);
    mkc_pdl_enter();
    xg += tok * w.cols;
    y += tok * w.rows;
    const float *x = xg;
    int xpad = 0;
    if (staged) { /* every warp of the block reads all of x: once from L2 into shared memory
                   * (staged 2: in the padded layout, affine formats) */
        xpad = staged == 2 ? 4 : 0;
        if (xpad)
            mkc_stage_pad((float *)mkc_sm4, xg, w.cols);
        else
            mkc_stage((float *)mkc_sm4, xg, w.cols);
        __syncthreads();
        x = (const float *)mkc_sm4;
    }
    if (r0 >= w.rows)
        return;
    const mkc_w *ws[GEMV_ROWS];
    int64_t rows[GEMV_ROWS];
    const float *xs[GEMV_ROWS];
#pragma unroll
    for (int i = 0; i < GEMV_ROWS; i++) { /* past the end: repeat the last row, not stored */
        ws[i] = &w;
        rows[i] = r0 + i < w.rows ? r0 + i : w.rows - 1;
        xs[i] = x;
    }
    float acc[GEMV_ROWS];
    mkc_dot_rows<GEMV_ROWS, true, P, true>(ws, rows, xs, lane, acc, xpad);
#pragma unroll
    for (int i = 0; i < GEMV_ROWS; i++) {
        const float v = mkc_warp_sum(acc[i]);
        if (lane == 0 && r0 + i < w.rows)
            y[r0 + i] = accumulate ? y[r0 + i] + v : v;
    }
}

/* Several matrices against one x: warps are dealt out matrix by matrix
 * (wend[i]: the first warp past matrix i), each warp computing four rows
 * of its matrix exactly as k_gemv does. */
struct mkc_gemv_n {
    mkc_w w[MK_CUDA_GEMV_N];
    float *y[MK_CUDA_GEMV_N];
    int64_t wend[MK_CUDA_GEMV_N];
    int count;
};

template <bool P>
__global__ void __launch_bounds__(GEMV_WARPS * 32) k_gemv_n(const __grid_constant__ mkc_gemv_n a,
                                                              const float *__restrict__ xg, int staged,
                                                              int pf = 0) {
    MKC_DYN_SMEM(float4, mkc_sm4);
    const int lane = threadIdx.x & 31;
    const int64_t warp = (int64_t)blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    int m = 0;
    while (m < a.count - 1 && warp >= a.wend[m])
        m++;
    const bool live = warp < a.wend[m];
    const mkc_w &w = a.w[m];
    const int64_t r0 = (warp - (m ? a.wend[m - 1] : 0)) * GEMV_ROWS;
    if (pf && live)
        gemv_prefetch(w, r0, w.rows - r0 < GEMV_ROWS ? w.rows - r0 : GEMV_ROWS, lane);
    mkc_pdl_enter();
    const float *x = xg;
    int xpad = 0;
    if (staged) { /* as k_gemv */
        xpad = staged == 2 ? 4 : 0;
        if (xpad)
            mkc_stage_pad((float *)mkc_sm4, xg, a.w[0].cols);
        else
            mkc_stage((float *)mkc_sm4, xg, a.w[0].cols);
        __syncthreads();
        x = (const float *)mkc_sm4;
    }
    if (!live)
        return;
    const mkc_w *ws[GEMV_ROWS];
    int64_t rows[GEMV_ROWS];
    const float *xs[GEMV_ROWS];
#pragma unroll
    for (int i = 0; i < GEMV_ROWS; i++) {
        ws[i] = &w;
        rows[i] = r0 + i < w.rows ? r0 + i : w.rows - 1;
        xs[i] = x;
    }
    float acc[GEMV_ROWS];
    mkc_dot_rows<GEMV_ROWS, true, P, true>(ws, rows, xs, lane, acc, xpad);
    float *y = a.y[m];
#pragma unroll
    for (int i = 0; i < GEMV_ROWS; i++) {
        const float v = mkc_warp_sum(acc[i]);
        if (lane == 0 && r0 + i < w.rows)
            y[r0 + i] = v;
    }
}

#endif
