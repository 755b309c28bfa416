/* GEMV on the device: y = W x for every format mkc_kind_of takes, one
 * launch, float32 in and out.
 *
 * A warp computes four consecutive rows at once (their loads overlap and x
 * is loaded once for all: mkc_dot_rows<4, true>), 8 warps a block, x staged
 * in shared memory when it fits; kernel generation 2 (mkc_variant) pipelines
 * each lane's loads one step ahead (mkc_dot_aff_p). The
 * format switch is uniform across the grid, so it costs a branch, not
 * divergence. Bandwidth is what matters at batch 1: each lane moves 16-byte
 * chunks of both rows, coalesced across the warp (bench/bench_cuda_moe.cu
 * measures it against a device-to-device copy). Under programmatic
 * dependent launch (mk_cuda_step_pdl) a block asks L2 for its warps' rows
 * before it waits for the kernel that produces x (MK_CUDA_PREFETCH_GEMV).
 * With mk_cuda_set_gemv_staged, one token over MLX affine weights goes to
 * k_gemv_s instead: each block copies its rows into shared memory with
 * cp.async before that wait, then computes them (generation 2's bits).
 * With mk_cuda_set_act_int8, one token over MLX affine weights goes to
 * k_gemv_q8 (the CPU's int8 decode rule, cuda_q8x.cuh), ahead of both, or
 * with the staged switch too to k_gemv_q8s (its rows copied before the
 * wait, the int8 arithmetic: k_gemv_q8's bits) where one wave holds them. */
#include <string.h>

#include "cuda/cuda_impl.cuh"
#include "cuda/cuda_gemv_kernel.cuh"

/* How a GEMV block stages x of `cols` floats: 0 not (it does not fit, or
 * not whole float4s), 1 as is, 2 in the padded layout (kernel generation
 * 2, affine and FP4 formats, whose x offsets are whole 32-value blocks:
 * mkc_xi, mkc_pads).
 * *smem: the bytes. */
/* static shared memory of the GEMV kernels at most (k_gemv_n<P, true>, the fold: its
 * block sum and ticket flags), which the launch's 48 KB without an opt-in
 * also holds */
#define GEMV_STATIC_SMEM 256

static int stage_mode(int32_t kind, int64_t cols, size_t *smem) {
    *smem = 0;
    if (cols % 4 != 0)
        return 0;
    const int64_t room = MKC_SMEM_MAX - GEMV_STATIC_SMEM;
    if (mkc_variant() >= 2 && mkc_pads(kind) && cols % 32 == 0 && MKC_PADDED(cols) * 4 <= room) {
        *smem = (size_t)MKC_PADDED(cols) * 4;
        return 2;
    }
    if (cols * 4 <= room) {
        *smem = (size_t)cols * 4;
        return 1;
    }
    return 0;
}

/* ---- the staged-weight GEMV (k_gemv_s, mk_cuda_set_gemv_staged) ---------- */

/* A block's shared memory at most: three blocks fit an SM (228 KiB), so a
 * block of the next kernel can start under programmatic dependent launch
 * while two of this one run */
#define GEMVS_BUDGET (72 * 1024)

/* Whether the staged kernels (k_gemv_s, k_gemv_q8s) take a's matrices,
 * and their rows in all (*total): affine, whole 32-value blocks, rows of
 * whole 16-byte chunks and scale rows of whole words (cp.async), aligned
 * for it, every matrix of matrix 0's groups and width (the kernels stride
 * every matrix's scales by matrix 0's groups; gemv_n's matrices agree in
 * kind and width, not always in group) */
static bool gemvs_matrices(const mkc_gemv_n &a, int64_t *total) {
    const mkc_w &w = a.w[0];
    *total = 0;
    if (!mkc_is_aff(w.kind) || w.cols % 32 || (w.ng * mkc_aff_sb(w.kind)) % 4 || w.row_bytes % 16)
        return false;
    for (int i = 0; i < a.count; i++) {
        if (((uintptr_t)a.w[i].data & 15) || ((uintptr_t)a.w[i].scales & 3) || ((uintptr_t)a.w[i].biases & 3) ||
            a.w[i].ng != w.ng || a.w[i].gshift != w.gshift || a.w[i].row_bytes != w.row_bytes)
            return false;
        *total += a.w[i].rows;
    }
    return *total > 0;
}

/* Rows per block of k_gemv_s for `total` rows of w's kind and width (taken
 * by gemvs_matrices), or 0: a block per half SM when the rows fit the
 * budget, fewer rows (more blocks) when not */
static int64_t gemvs_rows(const mkc_w &w, int64_t total) {
    const int nsm = mkc_sm_count();
    const int64_t sb = mkc_aff_sb(w.kind);
    const int64_t per_row = w.row_bytes + 2 * w.ng * sb, room = GEMVS_BUDGET - gemvs_x_bytes(w.cols) - 32;
    const int64_t fit = room > 0 ? room / per_row : 0;
    int64_t rb = (total + 2 * nsm - 1) / (2 * nsm);
    rb = rb > fit ? fit : rb;
    if (rb < 1 || (total + rb - 1) / rb > 0x7fffffff)
        return 0;
    return rb;
}

/* Launch k_gemv_s over a's matrices (all of one kind and width) when it
 * takes them: false (nothing launched) when not */
static bool gemvs_launch(const mkc_gemv_n &a, const float *x, bool accumulate, cudaStream_t stream,
                         mk_status *st) {
    *st = MK_OK;
    /* generation 2's bits: under generation 1 the register kernels run, so that a row stays what
     * mk_cuda_gemv_each gives it among several tokens */
    int64_t total;
    if (!mk_cuda_gemv_staged() || mkc_variant() < 2 || !gemvs_matrices(a, &total))
        return false;
    const int64_t rb = gemvs_rows(a.w[0], total);
    if (rb < 1)
        return false;
    if (!mkc_smem_opt_in((const void *)k_gemv_s, GEMVS_BUDGET))
        return false;
    const cudaError_t e =
        mkc_launch(k_gemv_s, dim3((unsigned)((total + rb - 1) / rb)), dim3(GEMV_WARPS * 32),
                   (size_t)gemvs_smem(a.w[0], rb), stream, mk_cuda_step_pdl(), a, x, accumulate ? 1 : 0, rb, total);
    if (e != cudaSuccess)
        *st = mkc_fail(e, "launching the staged-weight gemv");
    return true;
}

/* ---- int8 activations (k_gemv_q8, mk_cuda_set_act_int8) ----------------- */

/* Whether k_gemv_q8 takes a's matrices (one token; all of one kind and
 * width, as gemv_n's): affine kinds, x whole 32-value blocks, groups of
 * 32, 64 or 128 (whole blocks: the scale of a lane's chunk is one), the
 * quantized x (and with fold the staged floats before it) in the 48 KB a
 * launch gets. *smem: its bytes. */
static bool q8_takes(const mkc_gemv_n &a, bool fold, size_t *smem) {
    const mkc_w &w = a.w[0];
    if (!mk_cuda_act_int8() || !mkc_is_aff(w.kind) || w.cols % 32 || w.gshift < 5)
        return false;
    for (int i = 0; i < a.count; i++)
        if (a.w[i].gshift != w.gshift || a.w[i].row_bytes != w.row_bytes || ((uintptr_t)a.w[i].data & 15))
            return false;
    const int64_t need = mkc_q8s_bytes(w.cols) + (fold ? w.cols * 4 : 0);
    if (need > MKC_SMEM_MAX - GEMV_STATIC_SMEM)
        return false;
    *smem = (size_t)need;
    return true;
}

/* Rows per block of k_gemv_q8s for a's matrices (one token, no fold,
 * mk_cuda_set_gemv_staged; those gemvs_matrices takes), or 0 when it does
 * not take them: a block per half SM, and only when those blocks hold all
 * the rows within GEMVS_BUDGET (one wave: see k_gemv_q8s) */
static int64_t gemvq8s_rows(const mkc_gemv_n &a, int64_t *total) {
    if (!mk_cuda_gemv_staged() || !gemvs_matrices(a, total))
        return 0;
    const int64_t nsm = mkc_sm_count(), rb = (*total + 2 * nsm - 1) / (2 * nsm);
    if (gemvq8s_smem(a.w[0], rb) + GEMV_STATIC_SMEM > GEMVS_BUDGET)
        return 0;
    if (!mkc_smem_opt_in((const void *)k_gemv_q8s, GEMVS_BUDGET))
        return 0;
    return rb;
}

static unsigned long long g_q8s_launches;

extern "C" unsigned long long mk_cuda_gemv_staged_launches(void) {
    return __atomic_load_n(&g_q8s_launches, __ATOMIC_RELAXED);
}

/* n tokens: one matrix (a.count 1), no fold */
static mk_status q8_launch(const mkc_gemv_n &a, int64_t warps, const float *x, bool accumulate, bool fold,
                           size_t smem, cudaStream_t stream, int64_t n = 1) {
    int64_t total = 0, rb = 0;
    if (n == 1 && !fold && (rb = gemvq8s_rows(a, &total)) > 0) {
        MKC_TRY(mkc_launch(k_gemv_q8s, dim3((unsigned)((total + rb - 1) / rb)), dim3(GEMV_WARPS * 32),
                           (size_t)gemvq8s_smem(a.w[0], rb), stream, mk_cuda_step_pdl(), a, x, accumulate ? 1 : 0, rb,
                           total),
                "launching the int8-activation gemv (staged rows)");
        __atomic_add_fetch(&g_q8s_launches, 1ull, __ATOMIC_RELAXED); /* host launches (a recording's once) */
        return MK_OK;
    }
    const int64_t blocks = (warps + GEMV_WARPS - 1) / GEMV_WARPS;
    if (blocks > 0x7fffffff / n)
        return mk_err(MK_E_UNSUPPORTED, "gemv: %lld warps x %lld tokens exceed one launch", (long long)warps,
                      (long long)n);
    MKC_TRY(mkc_launch(fold ? k_gemv_q8<true> : k_gemv_q8<false>, dim3((unsigned)(blocks * n)), dim3(GEMV_WARPS * 32),
                       smem, stream, mk_cuda_step_pdl(), a, x, accumulate ? 1 : 0,
                       mkc_prefetches(MK_CUDA_PREFETCH_GEMV), (int)n, mk_cuda_q8_early() ? 1 : 0),
            fold ? "launching the int8-activation gemv with the residual norm folded in"
                 : "launching the int8-activation gemv");
    return MK_OK;
}

extern "C" mk_status mk_cuda_gemv(const mk_wt *w, const float *x, float *y, bool accumulate, void *stream) {
    return mk_cuda_gemv_each(w, x, 1, y, accumulate, stream);
}

extern "C" mk_status mk_cuda_gemv_each(const mk_wt *w, const float *x, int64_t n, float *y, bool accumulate,
                                       void *stream) {
    mkc_w v;
    MK_TRY(mkc_view(w, "gemv weight", &v));
    if (((uintptr_t)x & 15) != 0)
        return mk_err(MK_E_ARG, "gemv: x must be 16-byte aligned device memory");
    if (n > 1 && w->cols % 4)
        return mk_err(MK_E_UNSUPPORTED, "gemv of %lld tokens: columns must be a multiple of 4 (each x row 16-byte "
                      "aligned), found %lld", (long long)n, (long long)w->cols);
    if (w->rows == 0 || n <= 0)
        return MK_OK;
    {
        mkc_gemv_n a;
        memset(&a, 0, sizeof a);
        a.count = 1;
        a.w[0] = v;
        a.y[0] = y;
        a.wend[0] = (w->rows + GEMV_ROWS - 1) / GEMV_ROWS; /* k_gemv_q8 deals warps by it */
        size_t qsm;
        if (q8_takes(a, false, &qsm)) /* every token on int8 x (the CPU's batch-invariant products too) */
            return q8_launch(a, a.wend[0], x, accumulate, false, qsm, (cudaStream_t)stream, n);
    }
    if (n == 1) {
        mkc_gemv_n a;
        memset(&a, 0, sizeof a);
        a.count = 1;
        a.w[0] = v;
        a.y[0] = y;
        mk_status st;
        if (gemvs_launch(a, x, accumulate, (cudaStream_t)stream, &st))
            return st;
    }
    const int64_t warps = (w->rows + GEMV_ROWS - 1) / GEMV_ROWS;
    const int64_t blocks = (warps + GEMV_WARPS - 1) / GEMV_WARPS;
    if (n > 0x7fffffff / blocks)
        return mk_err(MK_E_UNSUPPORTED, "gemv: %lld rows x %lld tokens exceed one launch", (long long)w->rows,
                      (long long)n);
    /* stage x in shared memory when it fits and is whole float4s */
    size_t smem;
    const int staged = stage_mode(v.kind, w->cols, &smem);
    const unsigned grid = (unsigned)(blocks * n);
    MKC_TRY(mkc_launch(mkc_variant() >= 2 ? k_gemv<true> : k_gemv<false>, dim3(grid), dim3(GEMV_WARPS * 32), smem,
                       (cudaStream_t)stream, mk_cuda_step_pdl(), v, x, y, accumulate ? 1 : 0, staged, (int)n,
                       mkc_prefetches(MK_CUDA_PREFETCH_GEMV)),
            "launching gemv");
    return MK_OK;
}


/* gemv_n of x, or with f folded in (x = f's xb): *taken false when it
 * cannot take f (nothing queued) */
static mk_status gemv_n_launch(const mk_wt *const *w, int count, const float *x, const mk_cuda_fold *f,
                               float *const *y, void *stream, bool *taken) {
    *taken = false;
    if (count < 1 || count > MK_CUDA_GEMV_N)
        return mk_err(MK_E_ARG, "gemv_n: %d matrices (1 to %d)", count, MK_CUDA_GEMV_N);
    if (((uintptr_t)x & 15) != 0)
        return mk_err(MK_E_ARG, "gemv_n: x must be 16-byte aligned device memory");
    mkc_gemv_n a;
    memset(&a, 0, sizeof a);
    a.count = count;
    int64_t warps = 0;
    for (int i = 0; i < count; i++) {
        MK_TRY(mkc_view(w[i], "gemv weight", &a.w[i]));
        if (a.w[i].kind != a.w[0].kind || a.w[i].cols != a.w[0].cols)
            return mk_err(MK_E_ARG, "gemv_n: matrix %d differs in kind or columns from matrix 0", i);
        a.y[i] = y[i];
        warps += (w[i]->rows + GEMV_ROWS - 1) / GEMV_ROWS;
        a.wend[i] = warps;
    }
    size_t smem;
    const int staged = stage_mode(a.w[0].kind, w[0]->cols, &smem);
    if (f) { /* the fold: every block stages the normed row itself (k_gemv_n only) */
        if (warps == 0 || !staged || f->dim != w[0]->cols || mk_cuda_gemv_staged() || !f->ticket ||
            !mkc_addnorm_of(f, GEMV_WARPS * 32, &a.an))
            return MK_OK;
        /* outputs apart from x and y: blocks write them while others still stage from x and y */
        for (int i = 0; i < count; i++) {
            const float *y0 = y[i], *y1 = y[i] + w[i]->rows;
            if ((y0 < f->x + f->dim && f->x < y1) || (y0 < f->y + f->dim && f->y < y1))
                return MK_OK;
        }
    } else if (warps == 0) {
        return MK_OK;
    }
    *taken = true;
    size_t qsm;
    if (q8_takes(a, f != NULL, &qsm))
        return q8_launch(a, warps, x, false, f != NULL, qsm, (cudaStream_t)stream);
    mk_status st;
    if (!f && gemvs_launch(a, x, false, (cudaStream_t)stream, &st))
        return st;
    const int64_t blocks = (warps + GEMV_WARPS - 1) / GEMV_WARPS;
    if (blocks > 0x7fffffff)
        return mk_err(MK_E_UNSUPPORTED, "gemv_n: %lld warps exceed one launch", (long long)warps);
    MKC_TRY(mkc_launch(f ? (mkc_variant() >= 2 ? k_gemv_n<true, true> : k_gemv_n<false, true>)
                         : (mkc_variant() >= 2 ? k_gemv_n<true> : k_gemv_n<false>),
                       dim3((unsigned)blocks),
                       dim3(GEMV_WARPS * 32), smem, (cudaStream_t)stream, mk_cuda_step_pdl(), a, x, staged,
                       mkc_prefetches(MK_CUDA_PREFETCH_GEMV)),
            f ? "launching gemv_n with the residual norm folded in" : "launching gemv_n");
    return MK_OK;
}

extern "C" mk_status mk_cuda_gemv_n(const mk_wt *const *w, int count, const float *x, float *const *y,
                                    void *stream) {
    bool taken;
    return gemv_n_launch(w, count, x, NULL, y, stream, &taken);
}

extern "C" mk_status mk_cuda_gemv_n_fold(const mk_wt *const *w, int count, const mk_cuda_fold *f, float *const *y,
                                         void *stream, bool *taken) {
    return gemv_n_launch(w, count, f->xb, f, y, stream, taken);
}
