/* The CUDA backend's weight slots: matmul, get_rows and MLA's per-head
 * products, for every mk_wt format.
 *
 * matmul: formats the GEMV kernels take (f32, bf16, f16, affine 4/8-bit,
 * FP8 block, MXFP4, NVFP4, MXFP8: mkc_kind_of; mk_cuda_gemv_each, cuda_gemv.cu)
 * run one GEMV launch for the n <= MM_GEMV_MAX tokens of a decode step,
 * each row as one token alone gets it; batches of more than MM_GEMV_MAX
 * tokens, in every format, run tensor-core GEMMs over split bf16 operands
 * (cuda_gemm.cu); the rest (small batches of affine 2/3/5/6-bit;
 * batches inside a step recording or with MK_CUDA_GEMM_GENERIC) runs the
 * format-generic kernel below: one warp per weight row and block of MM_TB
 * tokens, each lane dequantizing its columns with mkb_wel and accumulating
 * in float32. It is correct, not fast (scalar byte loads).
 * matmul_each (a batched decode step, any n): the GEMV launch as well,
 * else matmul token by token.
 *
 * get_rows dequantizes with the same mkb_wel, which rounds exactly as the
 * CPU's mk_wt_dequant_row: the rows are bit-identical. */
#include "cuda/cuda_backend.cuh"

#define MM_WARPS 8
#define MM_TB 8        /* tokens per warp pass over a row */
#define MM_GEMV_MAX 8  /* n up to this: one GEMV per token when the GEMV kernels take the format */

__global__ void __launch_bounds__(MM_WARPS * 32) k_mm(mkb_w w, const float *__restrict__ x, int64_t n,
                                                        float *__restrict__ y) {
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * MM_WARPS + (threadIdx.x >> 5);
    const int64_t t0 = (int64_t)blockIdx.y * MM_TB;
    if (r >= w.rows)
        return;
    const int nt = n - t0 < MM_TB ? (int)(n - t0) : MM_TB;
    float acc[MM_TB];
#pragma unroll
    for (int i = 0; i < MM_TB; i++)
        acc[i] = 0.0f;
    const float *xt = x + t0 * w.cols;
    for (int64_t c = lane; c < w.cols; c += 32) {
        const float wv = mkb_wel(w, r, c);
#pragma unroll
        for (int i = 0; i < MM_TB; i++)
            if (i < nt)
                acc[i] = fmaf(wv, xt[i * w.cols + c], acc[i]);
    }
#pragma unroll
    for (int i = 0; i < MM_TB; i++) {
        const float v = mkc_warp_sum(acc[i]);
        if (lane == 0 && i < nt)
            y[(t0 + i) * w.rows + r] = v;
    }
}

/* n tokens through one GEMV launch, each row as one token alone gets it,
 * when the GEMV kernels take the weight and x's rows are 16-byte aligned
 * (cols % 4 == 0: backend memory is). False: not taken. */
static bool gemv_rows(mkb_ctx *c, const mkb_entry *e, const float *x, int64_t n, float *y) {
    if (!e->fast || e->dev.cols % 4 || ((uintptr_t)x & 15))
        return false;
    mk_status s = mk_cuda_gemv_each(&e->dev, x, n, y, false, c->s);
    if (s != MK_OK)
        mkb_fail(c, s);
    return true;
}

/* matmul, and with `each` (a batched decode step's matmul_each) each
 * token's row bitwise matmul's for that token alone: the GEMV formats in
 * one launch for every token (the weight read about once), the others
 * token by token. */
static void matmul(mkb_ctx *c, const mk_wt *w, const float *x, int64_t n, float *y, bool each) {
    if (n <= 0 || w->rows <= 0)
        return;
    const mkb_entry *e = mkb_weight(c, w);
    if (!e)
        return;
    if ((each || n <= MM_GEMV_MAX) && gemv_rows(c, e, x, n, y))
        return;
    if (each) {
        for (int64_t t = 0; t < n; t++)
            matmul(c, w, x + t * w->cols, 1, y + t * w->rows, false);
        return;
    }
    if (n > MM_GEMV_MAX && mkb_matmul_gemm(c, e, x, n, y))
        return;
    const int64_t tb = (n + MM_TB - 1) / MM_TB;
    if (tb > 65535) {
        mkb_fail(c, mk_err(MK_E_UNSUPPORTED, "CUDA matmul: %lld tokens in one call (at most %d)", (long long)n,
                           65535 * MM_TB));
        return;
    }
    dim3 grid(mkb_blocks(w->rows, MM_WARPS), (unsigned)tb);
    k_mm<<<grid, MM_WARPS * 32, 0, c->s>>>(e->dw, x, n, y);
    mkb_launched(c, "matmul");
}

/* The held-back residual step f folded into the GEMV of count resident
 * weights e against its xb: true when taken or failed (recorded), false
 * when the launch cannot take it (nothing queued) */
static bool fold_gemv(mkb_ctx *c, const mkb_entry *const *e, int count, const mk_cuda_fold *f, float *const *ys) {
    const mk_wt *dv[MK_CUDA_GEMV_N];
    for (int i = 0; i < count; i++)
        dv[i] = &e[i]->dev;
    bool taken = false;
    mk_status s = mk_cuda_gemv_n_fold(dv, count, f, ys, c->s, &taken);
    if (taken)
        mkb_fold_taken(c);
    if (s != MK_OK)
        mkb_fail(c, s);
    return taken || s != MK_OK;
}

/* One weight against x that may be a held-back residual step's xb (MLA's
 * q_a / q and kv_a products read it one at a time): the step folded into
 * that GEMV (mk_cuda_gemv_n_fold of one matrix: k_gemv_n's rows are
 * k_gemv's bits), else launched first. */
void mkb_matmul(void *ctx, const mk_wt *w, const float *x, int64_t n, float *y) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    const mk_cuda_fold *f = n == 1 && ((uintptr_t)x & 15) == 0 ? mkb_fold_for(c, x, false) : NULL;
    if (f && w->rows > 0) {
        const mkb_entry *e = mkb_weight(c, w);
        if (!e)
            return;
        if (e->fast && w->cols % 4 == 0 && fold_gemv(c, &e, 1, f, &y))
            return;
    }
    mkb_fold_flush(c);
    matmul(c, w, x, n, y, false);
}

void mkb_matmul_each(void *ctx, const mk_wt *w, const float *x, int64_t n, float *y) {
    matmul((mkb_ctx *)ctx, w, x, n, y, true);
}

/* Several weights against one x: one mk_cuda_gemv_n launch per token when
 * the GEMV kernels take them all as one kind and column count (attention's
 * q, k, v of one checkpoint), each row computed as matmul's GEMV computes
 * it; otherwise matmul per weight. */
void mkb_matmul_n(void *ctx, const mk_wt *const *w, int count, const float *x, int64_t n, float *const *ys) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (n <= 0 || count <= 0)
        return;
    bool one = count <= MK_CUDA_GEMV_N && n <= MM_GEMV_MAX && ((uintptr_t)x & 15) == 0;
    const mkb_entry *e[MK_CUDA_GEMV_N];
    for (int i = 0; one && i < count; i++) {
        if (!(e[i] = mkb_weight(c, w[i])))
            return;
        one = e[i]->fast && w[i]->cols % 4 == 0 && w[i]->cols == w[0]->cols &&
              mkc_kind_of(&e[i]->dev) == mkc_kind_of(&e[0]->dev);
    }
    /* the held-back residual step folded into this launch (x is its xb) */
    const mk_cuda_fold *f = one && n == 1 ? mkb_fold_for(c, x, false) : NULL;
    if (f && fold_gemv(c, e, count, f, ys))
        return;
    mkb_fold_flush(c); /* (after the weights' uploads above: they only copy) */
    if (!one) {
        for (int i = 0; i < count; i++)
            mkb_matmul(ctx, w[i], x, n, ys[i]);
        return;
    }
    const mk_wt *dv[MK_CUDA_GEMV_N];
    for (int i = 0; i < count; i++)
        dv[i] = &e[i]->dev;
    for (int64_t t = 0; t < n; t++) {
        float *yt[MK_CUDA_GEMV_N];
        for (int i = 0; i < count; i++)
            yt[i] = ys[i] + t * w[i]->rows;
        mk_status s = mk_cuda_gemv_n(dv, count, x + t * w[0]->cols, yt, c->s);
        if (s != MK_OK) {
            mkb_fail(c, s);
            return;
        }
    }
}

__global__ void k_get_rows(mkb_w w, const int32_t *ids, int64_t n, float *y) {
    const int64_t total = n * w.cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = i / w.cols, col = i % w.cols;
        y[i] = mkb_wel(w, ids[t], col);
    }
}

void mkb_get_rows(void *ctx, const mk_wt *w, const int32_t *ids, int64_t n, float *y) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (n <= 0 || w->cols <= 0)
        return;
    const mkb_entry *e = mkb_weight(c, w);
    if (!e)
        return;
    unsigned b = mkb_blocks(n * w->cols, 256);
    k_get_rows<<<b > 65535 ? 65535 : b, 256, 0, c->s>>>(e->dw, ids, n, y);
    mkb_launched(c, "get_rows");
}

/* head_matmul: one warp per (token, head, row): y[t,h][r] = W[r0 + h*hstep + r] . x[t,h] */
__global__ void k_head_mm(mkb_w w, mk_head_mm_args a) {
    const int lane = threadIdx.x & 31;
    const int64_t item = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (item >= a.n * a.n_heads * a.nr)
        return;
    const int64_t r = item % a.nr, th = item / a.nr, h = th % a.n_heads, t = th / a.n_heads;
    const int64_t row = a.r0 + h * a.hstep + r;
    const float *x = a.x + t * a.x_tok + h * a.x_head;
    float acc = 0.0f;
    for (int64_t c = lane; c < w.cols; c += 32)
        acc = fmaf(mkb_wel(w, row, c), x[c], acc);
    acc = mkc_warp_sum(acc);
    if (lane == 0)
        a.y[t * a.y_tok + h * a.y_head + r] = acc;
}

/* head_matmul_t: one thread per (token, head, column): y[t,h][c] = sum_i x[t,h][i] W[r0 + h*hstep + i][c] */
__global__ void k_head_mm_t(mkb_w w, mk_head_mm_args a) {
    const int64_t total = a.n * a.n_heads * w.cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t col = i % w.cols, th = i / w.cols, h = th % a.n_heads, t = th / a.n_heads;
        const int64_t row0 = a.r0 + h * a.hstep;
        const float *x = a.x + t * a.x_tok + h * a.x_head;
        float acc = 0.0f;
        for (int64_t k = 0; k < a.nr; k++)
            acc = fmaf(x[k], mkb_wel(w, row0 + k, col), acc);
        a.y[t * a.y_tok + h * a.y_head + col] = acc;
    }
}

void mkb_head_matmul(void *ctx, const mk_head_mm_args *a) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    const int64_t items = a->n * a->n_heads * a->nr;
    if (items <= 0)
        return;
    const mkb_entry *e = mkb_weight(c, a->w);
    if (!e)
        return;
    k_head_mm<<<mkb_blocks(items, MM_WARPS), MM_WARPS * 32, 0, c->s>>>(e->dw, *a);
    mkb_launched(c, "head_matmul");
}

void mkb_head_matmul_t(void *ctx, const mk_head_mm_args *a) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    const int64_t total = a->n * a->n_heads * a->w->cols;
    if (total <= 0)
        return;
    const mkb_entry *e = mkb_weight(c, a->w);
    if (!e)
        return;
    unsigned b = mkb_blocks(total, 256);
    k_head_mm_t<<<b > 65535 ? 65535 : b, 256, 0, c->s>>>(e->dw, *a);
    mkb_launched(c, "head_matmul_t");
}
