/* The CUDA backend's norms, rotary embedding and element-wise slots.
 *
 * Same float32 formulas as the CPU backend (backend_cpu.c, kernels/ops.c):
 * rmsnorm y = x * (1 / sqrtf(sum(x^2)/dim + eps)) * g, silu(z) = z / (1 +
 * expf(-z)); only the order of the sum of squares differs (a block tree
 * here). One block per row for the norms, one per (token, head) for rope
 * (the interleaved pairing reads the whole rotated span before writing it,
 * through shared memory), grid-stride loops for the element-wise ones. */
#include "cuda/cuda_backend.cuh"
#include "cuda/cuda_norm_kernel.cuh"

#define OPS_THREADS 256

__global__ void __launch_bounds__(1024) k_rmsnorm(float *y, int64_t ys, const float *x, int64_t xs,
                                                         const float *g, int64_t dim, float eps, const float *z) {
    __shared__ float sh[32];
    mkc_pdl_enter(); /* launched under PDL in a decode step (mkb_launch) */
    const float *xr = x + blockIdx.x * xs;
    float *yr = y + blockIdx.x * ys;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
        ss = fmaf(xr[i], xr[i], ss);
    ss = mkb_block_sum(ss, sh);
    const float inv = 1.0f / sqrtf(ss / (float)dim + eps);
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = xr[i] * inv;
        if (g)
            v = v * g[i];
        if (z) { /* gated: times silu(z) */
            const float zz = z[blockIdx.x * dim + i];
            v *= zz / (1.0f + expf(-zz));
        }
        yr[i] = v;
    }
}

void mkb_rmsnorm(void *ctx, float *y, int64_t y_stride, const float *x, int64_t x_stride, const float *g,
                 int64_t rows, int64_t dim, float eps) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (rows <= 0 || dim <= 0)
        return;
    const float *gd = mkb_param(c, g, dim);
    if (g && !gd)
        return;
    mkb_launch(c, "rmsnorm", k_rmsnorm, dim3((unsigned)rows), dim3(mkc_norm_threads(dim)), 0, y, y_stride, x, x_stride,
               gd, dim, eps, (const float *)NULL);
}

void mkb_gated_rmsnorm(void *ctx, float *x, const float *z, const float *g, int64_t rows, int64_t dim, float eps) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (rows <= 0 || dim <= 0)
        return;
    const float *gd = mkb_param(c, g, dim);
    if (g && !gd)
        return;
    mkb_launch(c, "gated_rmsnorm", k_rmsnorm, dim3((unsigned)rows), dim3(mkc_norm_threads(dim)), 0, x, dim,
               (const float *)x, dim, gd, dim, eps, z);
}

/* one block per (token, head); tmp = the rotated span in HF order */
__global__ void k_rope(float *x, int64_t tok_stride, int n_heads, int64_t head_stride, int rot, const float *cos,
                       const float *sin, int interleave) {
    extern __shared__ float tmp[];
    mkc_pdl_enter();
    const int64_t t = blockIdx.x / n_heads;
    const int h = blockIdx.x % n_heads, half = rot / 2;
    float *v = x + t * tok_stride + h * head_stride;
    const float *cs = cos + t * half, *sn = sin + t * half;
    for (int i = threadIdx.x; i < rot; i += blockDim.x)
        tmp[i] = interleave ? v[i < half ? 2 * i : 2 * (i - half) + 1] : v[i];
    __syncthreads();
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        const float x0 = tmp[i], x1 = tmp[i + half];
        mkc_rope_pair(x0, x1, cs[i], sn[i], &v[i], &v[i + half]);
    }
}

void mkb_rope(void *ctx, float *x, int64_t n, int64_t tok_stride, int n_heads, int64_t head_stride, int rot_dim,
              const float *cos, const float *sin, bool interleave) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (n <= 0 || n_heads <= 0 || rot_dim < 2)
        return;
    if (n * n_heads > 0x7fffffff) {
        mkb_fail(c, mk_err(MK_E_UNSUPPORTED, "CUDA rope: %lld token-heads in one call", (long long)(n * n_heads)));
        return;
    }
    mkb_launch(c, "rope", k_rope, dim3((unsigned)(n * n_heads)), dim3(128), (size_t)rot_dim * sizeof(float), x,
               tok_stride, n_heads, head_stride, rot_dim, cos, sin, interleave ? 1 : 0);
}

/* op 0: y = silu(a) * b; 1: y *= sigmoid(a); 2: y += s * a */
__global__ void k_elt(float *y, const float *a, const float *b, float s, int64_t n, int op) {
    mkc_pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float av = a[i];
        if (op == 0)
            y[i] = av / (1.0f + expf(-av)) * b[i];
        else if (op == 1)
            y[i] *= 1.0f / (1.0f + expf(-av));
        else
            y[i] = fmaf(s, av, y[i]);
    }
}

static void elt(mkb_ctx *c, float *y, const float *a, const float *b, float s, int64_t n, int op, const char *what) {
    if (n <= 0)
        return;
    unsigned blocks = mkb_blocks(n, OPS_THREADS);
    mkb_launch(c, what, k_elt, dim3(blocks > 65535 ? 65535 : blocks), dim3(OPS_THREADS), 0, y, a, b, s, n, op);
}

void mkb_swiglu(void *ctx, float *y, const float *gate, const float *up, int64_t n) {
    elt((mkb_ctx *)ctx, y, gate, up, 0.0f, n, 0, "swiglu");
}

void mkb_sigmoid_mul(void *ctx, float *x, const float *gate, int64_t n) {
    elt((mkb_ctx *)ctx, x, gate, NULL, 0.0f, n, 1, "sigmoid_mul");
}

void mkb_axpy(void *ctx, float *y, float a, const float *x, int64_t n) {
    elt((mkb_ctx *)ctx, y, x, NULL, a, n, 2, "axpy");
}

/* gpt_oss's clamped SwiGLU (backend.h): gate and up read with stride s
 * (s = 2: interleaved pairs); each element in registers before y is
 * written, so y may alias up when s = 1. fminf/fmaxf would turn a NaN
 * gate into the limit: the comparisons keep it NaN like the CPU's. */
__global__ void k_clamped_swiglu(float *y, const float *gate, const float *up, int64_t n, int64_t s, float alpha,
                                 float limit) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float g = gate[i * s], u = up[i * s];
        g = g > limit ? limit : g;
        u = u < -limit ? -limit : u > limit ? limit : u;
        y[i] = g / (1.0f + expf(-alpha * g)) * (u + 1.0f);
    }
}

void mkb_clamped_swiglu(void *ctx, float *y, const float *gate, const float *up, int64_t n, int64_t s, float alpha,
                        float limit) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (n <= 0)
        return;
    unsigned blocks = mkb_blocks(n, OPS_THREADS);
    k_clamped_swiglu<<<blocks > 65535 ? 65535 : blocks, OPS_THREADS, 0, c->s>>>(y, gate, up, n, s, alpha, limit);
    mkb_launched(c, "clamped_swiglu");
}

/* ---- fused forms of the steps above (optional slots) -------------------- */

/* k_add_rmsnorm over rows of dim (one block each) */
static void add_rmsnorm_launch(mkb_ctx *c, float *x, const float *y, int64_t rows, int64_t dim, int32_t tag,
                               float *xb, const float *gd, float eps) {
    mkb_launch(c, "add_rmsnorm", k_add_rmsnorm, dim3((unsigned)rows), dim3(mkc_norm_threads(dim)), 0, x, y, dim,
               (unsigned long long)tag, c->nfl, xb, gd, eps);
}

/* One row with xb (a decode step's residual step) and mk_cuda_norm_fold:
 * held back for the next slot to fold into its launch (mkb_fold_for), or
 * to launch first (mkb_fold_flush). The values are the same either way:
 * the folded forms compute them in this kernel's order
 * (cuda_fold.cuh). */
void mkb_add_rmsnorm(void *ctx, float *x, const float *y, int64_t rows, int64_t dim, int32_t tag, float *xb,
                     const float *g, float eps) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    mkb_fold_flush(c);
    if (rows <= 0 || dim <= 0)
        return;
    if (tag < 0 || rows > 0x7fffffff || rows * dim >= (1ll << 40)) {
        mkb_fail(c, mk_err(MK_E_ARG, "add_rmsnorm: tag %d or %lld x %lld out of range", (int)tag, (long long)rows,
                           (long long)dim));
        return;
    }
    const float *gd = xb ? mkb_param(c, g, dim) : NULL;
    if (xb && g && !gd)
        return;
    if (rows == 1 && xb && mk_cuda_norm_fold() && dim <= 0x7fffffff) {
        c->folding = true;
        c->fold.x = x;
        c->fold.y = y;
        c->fold.g = gd;
        c->fold.xb = xb;
        c->fold.key = &c->nfl->key;
        c->fold.val = &c->nfl->val;
        c->fold.ticket = c->fold_ticket;
        c->fold.dim = dim;
        c->fold.tag = tag;
        c->fold.eps = eps;
        return;
    }
    add_rmsnorm_launch(c, x, y, rows, dim, tag, xb, gd, eps);
}

static void qk_norm_rope_launch(mkb_ctx *c, float *q, int nq, float *k, int nk, int64_t n, int hd, const float *qd,
                                const float *kd, float eps, int rot_dim, const float *cos, const float *sin) {
    /* several tokens' rows a warp each (mk_cuda_set_qk_rows_warp; the same bits) */
    const int64_t rows = n * (nq + nk);
    if (n > 1 && mk_cuda_qk_rows_warp() && hd <= 32 * MKC_QKW_R) {
        mkb_launch(c, "qk_norm_rope (a warp a row)", k_qk_norm_rope_w, dim3((unsigned)((rows + 7) / 8)), dim3(256),
                   (size_t)0, q, nq, k, nk, rows, hd, qd, kd, eps, rot_dim, cos, sin);
        return;
    }
    mkb_launch(c, "qk_norm_rope", k_qk_norm_rope, dim3((unsigned)rows), dim3(mkc_norm_threads(hd)),
               (size_t)hd * sizeof(float), q, nq, k, nk, hd, qd, kd, eps, rot_dim, cos, sin);
}

void mkb_fold_flush(mkb_ctx *c) {
    if (c->folding) {
        c->folding = false;
        const mk_cuda_fold *f = &c->fold;
        add_rmsnorm_launch(c, f->x, f->y, 1, f->dim, f->tag, f->xb, f->g, f->eps);
    }
    if (c->qk_folding) {
        c->qk_folding = false;
        qk_norm_rope_launch(c, c->qk.q, c->qk.nq, c->qk.k, c->qk.nk, 1, c->qk.hd, c->qk.qg, c->qk.kg, c->qk.eps,
                            c->qk.rot, c->qk.cos, c->qk.sin);
    }
}

const mk_cuda_fold *mkb_fold_for(mkb_ctx *c, const float *x, bool router) {
    if (!router && mk_cuda_norm_fold_mode() != MK_CUDA_NORM_FOLD_ALL)
        return NULL;
    return c->folding && x == c->fold.xb ? &c->fold : NULL;
}

void mkb_fold_taken(mkb_ctx *c) {
    c->folding = false;
    c->qk_folding = false;
    c->folds++;
}

void mkb_qk_norm_rope(void *ctx, float *q, int nq, float *k, int nk, int64_t n, int hd, const float *qg,
                      const float *kg, float eps, int rot_dim, const float *cos, const float *sin) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    mkb_fold_flush(c);
    if (n <= 0 || nq + nk <= 0 || hd <= 0)
        return;
    if (!qg != !kg || rot_dim < 0 || rot_dim > hd || rot_dim % 2 || hd > 8192 || n * (nq + nk) > 0x7fffffff) {
        mkb_fail(c, mk_err(MK_E_ARG, "qk_norm_rope: norms %s/%s, rot_dim %d, head dim %d, %lld token-heads",
                           qg ? "given" : "none", kg ? "given" : "none", rot_dim, hd, (long long)(n * (nq + nk))));
        return;
    }
    const float *qd = mkb_param(c, qg, hd), *kd = mkb_param(c, kg, hd);
    if (qg && (!qd || !kd))
        return;
    /* one token under mk_cuda_norm_fold or mk_cuda_qk_fold: held back for
     * the attention of q and k to fold (cuda_attn.cu), or to launch first
     * (mkb_fold_flush) */
    if (n == 1 && (mk_cuda_norm_fold_mode() == MK_CUDA_NORM_FOLD_ALL || mk_cuda_qk_fold()) && nq > 0 && nk > 0) {
        c->qk_folding = true;
        c->qk.q = q;
        c->qk.k = k;
        c->qk.nq = nq;
        c->qk.nk = nk;
        c->qk.hd = hd;
        c->qk.rot = rot_dim;
        c->qk.qg = qd;
        c->qk.kg = kd;
        c->qk.cos = cos;
        c->qk.sin = sin;
        c->qk.eps = eps;
        return;
    }
    qk_norm_rope_launch(c, q, nq, k, nk, n, hd, qd, kd, eps, rot_dim, cos, sin);
}
