/* The GEMV kernels (k_gemv, k_gemv_n; the launch code is cuda_gemv.cu's).
 * A header of its own so that the host emulation (tests/cli/cuda_emu_gemv.sh)
 * runs these very kernels, with cuda_impl.cuh's dot products, on every
 * weight format. The includer provides cuda_impl.cuh. */
#ifndef MK_CUDA_GEMV_KERNEL_CUH
#define MK_CUDA_GEMV_KERNEL_CUH

#include "cuda/cuda_fold.cuh"
#include "cuda/cuda_q8x.cuh"

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
    } else if (w.kind == MKC_MX4 || w.kind == MKC_NV4 || w.kind == MKC_MX8) {
        const int64_t sb = w.cols / (w.kind == MKC_NV4 ? 16 : 32);
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
 * of its matrix exactly as k_gemv does. With an.x set (k_gemv_n, x staged)
 * x is the residual step's result an folds in (cuda_fold.cuh): every
 * block stages rmsnorm(an.x + an.y) * an.g itself, and xg is not read. */
struct mkc_gemv_n {
    mkc_w w[MK_CUDA_GEMV_N];
    float *y[MK_CUDA_GEMV_N];
    int64_t wend[MK_CUDA_GEMV_N];
    int count;
    mkc_addnorm an;
};

/* Warp `warp`'s matrix *m and first row *r0 (mkc_gemv_n's dealing); false
 * past the last matrix's warps */
__device__ __forceinline__ bool gemv_deal(const mkc_gemv_n &a, int64_t warp, int *m, int64_t *r0) {
    int i = 0;
    while (i < a.count - 1 && warp >= a.wend[i])
        i++;
    *m = i;
    *r0 = (warp - (i ? a.wend[i - 1] : 0)) * GEMV_ROWS;
    return warp < a.wend[i];
}

/* F: a.an.x is set (the fold's instance; the plain one is compiled without it) */
template <bool P, bool F = false>
__global__ void __launch_bounds__(GEMV_WARPS * 32) k_gemv_n(const __grid_constant__ mkc_gemv_n a,
                                                              const float *__restrict__ xg, int staged,
                                                              int pf = 0) {
    MKC_DYN_SMEM(float4, mkc_sm4);
    const int lane = threadIdx.x & 31;
    const int64_t warp = (int64_t)blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    int m;
    int64_t r0;
    const bool live = gemv_deal(a, warp, &m, &r0);
    const mkc_w &w = a.w[m];
    if (pf && live)
        gemv_prefetch(w, r0, w.rows - r0 < GEMV_ROWS ? w.rows - r0 : GEMV_ROWS, lane);
    mkc_pdl_enter();
    const float *x = xg;
    int xpad = 0;
    if (staged) { /* as k_gemv */
        xpad = staged == 2 ? 4 : 0;
        if constexpr (F) /* every block, live or not: the fold's ticket counts the grid */
            mkc_addnorm_run(a.an, (float *)mkc_sm4, xpad);
        else if (xpad)
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

/* ---- int8 activations (k_gemv_q8, mk_cuda_set_act_int8) -----------------
 * One token over MLX affine 4/8-bit weights on the CPU's int8 decode rule
 * (cuda_q8x.cuh): every block quantizes x into its shared memory
 * (mkc_q8s_bytes; with F, first the residual step's rmsnorm(an.x + an.y)
 * * an.g staged in floats before it, as k_gemv_n<P, true> stages it), then
 * each warp computes GEMV_ROWS rows of its matrix (mkc_gemv_n's dealing)
 * with dp4a. accumulate: y += W x. nt tokens (one matrix: x [nt, cols],
 * y [nt, rows], as k_gemv's): block b does the one-token launch's block
 * b / nt for token b % nt, quantizing that token's x, so each row is
 * bitwise its one-token launch's (the CPU quantizes each token of a
 * batch alike). */
template <bool F = false>
__global__ void __launch_bounds__(GEMV_WARPS * 32, 2) k_gemv_q8(const __grid_constant__ mkc_gemv_n a,
                                                               const float *__restrict__ xg, int accumulate,
                                                               int pf = 0, int nt = 1, int early = 0) {
    MKC_DYN_SMEM(float4, mkc_sm4);
    const int lane = threadIdx.x & 31;
    const int64_t tok = blockIdx.x % (unsigned)nt;
    const int64_t warp = (int64_t)(blockIdx.x / (unsigned)nt) * GEMV_WARPS + (threadIdx.x >> 5);
    int m;
    int64_t r0;
    const bool live = gemv_deal(a, warp, &m, &r0);
    const mkc_w &w = a.w[m];
    if (pf && live)
        gemv_prefetch(w, r0, w.rows - r0 < GEMV_ROWS ? w.rows - r0 : GEMV_ROWS, lane);
    /* early (mk_cuda_set_q8_early): the warp's rows' first chunks in flight before the wait (weights:
     * the previous kernel does not write them), so their latency overlaps its end rather than
     * following the staging of x; else after the staging, as before. The same sums either way. */
    int64_t rows[GEMV_ROWS];
#pragma unroll
    for (int i = 0; i < GEMV_ROWS; i++) /* past the end: repeat the last row, not stored */
        rows[i] = r0 + i < w.rows ? r0 + i : w.rows - 1;
    const mkc_w *ws[GEMV_ROWS];
#pragma unroll
    for (int i = 0; i < GEMV_ROWS; i++)
        ws[i] = &w;
    mkc_q8_rowset<GEMV_ROWS> rs;
    mkc_q8_pre<GEMV_ROWS> pre;
    if (early && live)
        mkc_q8_prime_rows<GEMV_ROWS>(ws, rows, lane, rs, pre);
    mkc_pdl_enter();
    const int64_t cols = a.w[0].cols;
    const float *x = xg + tok * cols;
    uint8_t *sm = (uint8_t *)mkc_sm4;
    if constexpr (F) { /* every block, live or not: the fold's ticket counts the grid */
        mkc_addnorm_run(a.an, (float *)sm, 0);
        __syncthreads();
        x = (const float *)sm;
        sm += cols * 4;
    }
    const mkc_q8s xq = mkc_q8s_at(sm, cols);
    mkc_q8_stage_for(a.w[0], x, xq);
    __syncthreads();
    if (!live)
        return;
    if (!early)
        mkc_q8_prime_rows<GEMV_ROWS>(ws, rows, lane, rs, pre);
    float acc[GEMV_ROWS];
    mkc_q8_sum_rows<GEMV_ROWS>(rs, xq, lane, pre, acc);
    float *y = a.y[m] + tok * w.rows;
#pragma unroll
    for (int i = 0; i < GEMV_ROWS; i++) {
        const float v = mkc_warp_sum(acc[i]);
        if (lane == 0 && r0 + i < w.rows)
            y[r0 + i] = accumulate ? y[r0 + i] + v : v;
    }
}

/* ---- the staged-weight GEMV (k_gemv_s) --------------------------------------
 * One token, MLX affine weights, one or several matrices against one x (the
 * rows of a.w[0], then a.w[1], ...: mkc_gemv_n's matrices, wend unused). A
 * block takes rb consecutive rows and, before it waits for the kernel that
 * produces x, copies all their codes, scales and biases into shared memory
 * with cp.async: a block's whole share is in flight at once (the register
 * kernels hold at most two 16-byte loads per lane and row, which capped the
 * small decode GEMVs, e.g. 64 blocks for a 2048-row matrix, well below the
 * memory's rate). Then x is staged (padded), and each warp computes pairs
 * of rows from shared memory with generation 2's lane steps
 * (mkc_aff_chunk_p), so every row is bitwise k_gemv<true>'s. Shared memory:
 * gemvs_smem (the launch sizes rb to fit; cuda_gemv.cu). */
#define GEMVS_NR 2 /* rows a warp computes at once */

/* Host and device: bytes of the block's shared memory for rb rows of w
 * (cols % 32 == 0; the scale row ng * sb a whole number of 4-byte words) */
__host__ __device__ __forceinline__ int64_t gemvs_x_bytes(int64_t cols) {
    return MKC_PADDED(cols) * 4;
}
__host__ __device__ __forceinline__ int64_t gemvs_sc_bytes(const mkc_w &w, int64_t rb) {
    return (rb * w.ng * mkc_aff_sb(w.kind) + 15) / 16 * 16;
}
__host__ __device__ __forceinline__ int64_t gemvs_smem(const mkc_w &w, int64_t rb) {
    return gemvs_x_bytes(w.cols) + rb * w.row_bytes + 2 * gemvs_sc_bytes(w, rb);
}

/* matrix and row of logical row i of the launch */
__device__ __forceinline__ int gemvs_locate(const mkc_gemv_n &a, int64_t i, int64_t *row) {
    int m = 0;
    while (m < a.count - 1 && i >= a.w[m].rows) {
        i -= a.w[m].rows;
        m++;
    }
    *row = i;
    return m;
}

/* The block's rows R0 .. R0 + nrow of the launch (codes, scales, biases)
 * into shared memory by cp.async, one commit group: row i's codes at
 * codes + i * rbytes, its scale and bias words at scs / bis + i * sbr */
__device__ __forceinline__ void gemvs_copy(const mkc_gemv_n &a, int64_t R0, int64_t nrow, int64_t rbytes, int64_t sbr,
                                           uint8_t *codes, uint8_t *scs, uint8_t *bis) {
    const int64_t cpr = rbytes / 16, swr = sbr / 4;
    if (nrow > 0) {
        int64_t i0 = -1, lr = 0;
        int m = 0;
        for (int64_t c = threadIdx.x; c < nrow * cpr; c += blockDim.x) {
            const int64_t i = c / cpr, p = c - i * cpr;
            if (i != i0) {
                m = gemvs_locate(a, R0 + i, &lr);
                i0 = i;
            }
            mkc_cp_async<16>(codes + i * rbytes + p * 16, a.w[m].data + lr * rbytes + p * 16, true);
        }
        i0 = -1;
        for (int64_t c = threadIdx.x; c < nrow * swr; c += blockDim.x) {
            const int64_t i = c / swr, p = c - i * swr;
            if (i != i0) {
                m = gemvs_locate(a, R0 + i, &lr);
                i0 = i;
            }
            mkc_cp_async<4>(scs + i * sbr + p * 4, (const uint8_t *)a.w[m].scales + lr * sbr + p * 4, true);
            mkc_cp_async<4>(bis + i * sbr + p * 4, (const uint8_t *)a.w[m].biases + lr * sbr + p * 4, true);
        }
    }
    mkc_cp_commit();
}

/* y row i0 + r of the block (logical row R0 + i0 + r of the launch) = v, or += v */
__device__ __forceinline__ void gemvs_store(const mkc_gemv_n &a, int64_t R0, int64_t i, float v, int accumulate) {
    int64_t lr;
    const int m = gemvs_locate(a, R0 + i, &lr);
    float *y = a.y[m];
    y[lr] = accumulate ? y[lr] + v : v;
}

/* The staged kernels' sums (k_gemv_s, k_gemv_q8s): each warp takes NR of
 * the block's nrow staged rows at a time (past the end: the last row
 * again, not stored), its lanes the chunks c = lane, lane + 32, ... of
 * them, terms(qq, sc, bi, c, acc) adds a chunk's terms in the kernel's
 * arithmetic (float or int8 x), and lane 0 stores each row's warp sum. */
template <int BITS, int SD, int NR, class T>
__device__ __forceinline__ void gemvs_rows(const mkc_gemv_n &a, int64_t R0, int64_t nrow, const uint8_t *codes,
                                           const uint8_t *scs, const uint8_t *bis, int accumulate, T terms) {
    constexpr int VPC = 128 / BITS;
    const mkc_w &w0 = a.w[0];
    const int64_t rbytes = w0.row_bytes, cpr = rbytes / 16, sbr = w0.ng * (SD == 0 ? 4 : 2);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int64_t i0 = (int64_t)warp * NR; i0 < nrow; i0 += (int64_t)nwarps * NR) {
        int64_t ri[NR];
        float acc[NR];
#pragma unroll
        for (int r = 0; r < NR; r++) {
            ri[r] = i0 + r < nrow ? i0 + r : nrow - 1;
            acc[r] = 0.0f;
        }
        for (int64_t c = lane; c < cpr; c += 32) {
            const int64_t g = (c * VPC) >> w0.gshift;
            uint4 qq[NR];
            float sc[NR], bi[NR];
            mkc_staged_chunk<SD, NR>(codes, scs, bis, ri, rbytes, sbr, c, g, qq, sc, bi);
            terms(qq, sc, bi, c, acc);
        }
#pragma unroll
        for (int r = 0; r < NR; r++) {
            const float v = mkc_warp_sum(acc[r]);
            if (lane == 0 && i0 + r < nrow)
                gemvs_store(a, R0, i0 + r, v, accumulate);
        }
    }
}

template <int BITS, int SD>
__device__ __forceinline__ void gemvs_run(const mkc_gemv_n &a, const float *__restrict__ xg, int accumulate,
                                          int64_t rb, int64_t total) {
    MKC_DYN_SMEM(float4, mkc_sm4);
    constexpr int VPC = 128 / BITS;
    const mkc_w &w0 = a.w[0];
    const int64_t R0 = (int64_t)blockIdx.x * rb, nrow = total - R0 < rb ? total - R0 : rb;
    const int64_t rbytes = w0.row_bytes, sbr = w0.ng * (SD == 0 ? 4 : 2);
    float *xs = (float *)mkc_sm4;
    uint8_t *codes = (uint8_t *)mkc_sm4 + gemvs_x_bytes(w0.cols);
    uint8_t *scs = codes + rb * rbytes, *bis = scs + gemvs_sc_bytes(w0, rb);
    /* the block's weights, before the wait: they do not depend on the previous kernel */
    gemvs_copy(a, R0, nrow, rbytes, sbr, codes, scs, bis);
    mkc_pdl_enter();
    mkc_stage_pad(xs, xg, w0.cols);
    mkc_cp_wait<0>();
    __syncthreads();
    const float *xr[GEMVS_NR];
#pragma unroll
    for (int r = 0; r < GEMVS_NR; r++)
        xr[r] = xs;
    gemvs_rows<BITS, SD, GEMVS_NR>(a, R0, nrow, codes, scs, bis, accumulate,
                                   [&](const uint4 *qq, const float *sc, const float *bi, int64_t c, float *acc) {
                                       mkc_aff_chunk_p<BITS, GEMVS_NR, true>(qq, sc, bi, xr, mkc_xi(c * VPC, 4), acc);
                                   });
}

__global__ void __launch_bounds__(GEMV_WARPS * 32) k_gemv_s(const __grid_constant__ mkc_gemv_n a,
                                                              const float *__restrict__ xg, int accumulate,
                                                              int64_t rb, int64_t total) {
    switch (a.w[0].kind) {
    case MKC_A4_F32: gemvs_run<4, 0>(a, xg, accumulate, rb, total); break;
    case MKC_A4_BF16: gemvs_run<4, 1>(a, xg, accumulate, rb, total); break;
    case MKC_A4_F16: gemvs_run<4, 2>(a, xg, accumulate, rb, total); break;
    case MKC_A8_F32: gemvs_run<8, 0>(a, xg, accumulate, rb, total); break;
    case MKC_A8_BF16: gemvs_run<8, 1>(a, xg, accumulate, rb, total); break;
    default: gemvs_run<8, 2>(a, xg, accumulate, rb, total); break;
    }
}

/* ---- the staged-weight GEMV on int8 activations (k_gemv_q8s) -------------
 * k_gemv_s's staging with k_gemv_q8's arithmetic (mk_cuda_set_gemv_staged
 * with int8 activations on; one token, no fold). A block copies its rb rows
 * into shared memory before its PDL wait (gemvs_copy: the weights do not
 * depend on the previous kernel, so under PDL they stream while that kernel
 * runs), then quantizes x after the wait (mkc_q8_stage_for) and each warp
 * sums GEMV_ROWS rows at a time with mkc_q8_terms over the chunks c = lane,
 * lane + 32, ...: each row's terms in k_gemv_q8's order (mkc_q8_finish),
 * so y is bitwise k_gemv_q8's. Taken only where every block fits in one
 * wave (gemvq8s_rows): a block of a later wave could not copy before the
 * wait, and would compute only after its whole share landed (session 19:
 * a large matrix streamed that way runs at 30% of copy, against 54% for the
 * register kernels). Shared memory: gemvq8s_smem. */
__host__ __device__ __forceinline__ int64_t gemvq8s_smem(const mkc_w &w, int64_t rb) {
    return mkc_q8s_span(w.cols) + rb * w.row_bytes + 2 * gemvs_sc_bytes(w, rb);
}

template <int BITS, int SD>
__device__ __forceinline__ void gemvq8s_run(const mkc_gemv_n &a, const float *__restrict__ xg, int accumulate,
                                            int64_t rb, int64_t total) {
    MKC_DYN_SMEM(float4, mkc_sm4);
    const mkc_w &w0 = a.w[0];
    const int64_t R0 = (int64_t)blockIdx.x * rb, nrow = total - R0 < rb ? total - R0 : rb;
    const int64_t rbytes = w0.row_bytes, sbr = w0.ng * (SD == 0 ? 4 : 2);
    const mkc_q8s xq = mkc_q8s_at(mkc_sm4, w0.cols);
    uint8_t *codes = (uint8_t *)mkc_sm4 + mkc_q8s_span(w0.cols);
    uint8_t *scs = codes + rb * rbytes, *bis = scs + gemvs_sc_bytes(w0, rb);
    gemvs_copy(a, R0, nrow, rbytes, sbr, codes, scs, bis); /* before the wait */
    mkc_pdl_enter();
    mkc_q8_stage_for(w0, xg, xq);
    mkc_cp_wait<0>();
    __syncthreads();
    gemvs_rows<BITS, SD, GEMV_ROWS>(a, R0, nrow, codes, scs, bis, accumulate,
                                    [&](const uint4 *qq, const float *sc, const float *bi, int64_t c, float *acc) {
                                        mkc_q8_terms<BITS, GEMV_ROWS>(qq, sc, bi, xq, c, acc);
                                    });
}

__global__ void __launch_bounds__(GEMV_WARPS * 32, 2) k_gemv_q8s(const __grid_constant__ mkc_gemv_n a,
                                                                const float *__restrict__ xg, int accumulate,
                                                                int64_t rb, int64_t total) {
    switch (a.w[0].kind) {
    case MKC_A4_F32: gemvq8s_run<4, 0>(a, xg, accumulate, rb, total); break;
    case MKC_A4_BF16: gemvq8s_run<4, 1>(a, xg, accumulate, rb, total); break;
    case MKC_A4_F16: gemvq8s_run<4, 2>(a, xg, accumulate, rb, total); break;
    case MKC_A8_F32: gemvq8s_run<8, 0>(a, xg, accumulate, rb, total); break;
    case MKC_A8_BF16: gemvq8s_run<8, 1>(a, xg, accumulate, rb, total); break;
    default: gemvq8s_run<8, 2>(a, xg, accumulate, rb, total); break;
    }
}

#endif
