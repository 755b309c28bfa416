/* The CUDA backend's norms, rotary embedding and element-wise slots.
 *
 * Same float32 formulas as the CPU backend (backend_cpu.c, kernels/ops.c):
 * rmsnorm y = x * (1 / sqrtf(sum(x^2)/dim + eps)) * g, silu(z) = z / (1 +
 * expf(-z)); only the order of the sum of squares differs (a block tree
 * here). One block per row for the norms, one per (token, head) for rope
 * (the interleaved pairing reads the whole rotated span before writing it,
 * through shared memory), grid-stride loops for the element-wise ones. */
#include "cuda/cuda_backend.cuh"

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

/* Threads of a norm block: one element per thread up to 1024. A decode
 * step's norm is one row, so its time is the chain of dependent loads each
 * thread walks: with 256 threads the 2048-wide residual norm took 8.4 us on
 * the H200 (ncu, bench/RESULTS.md 2026-12-03) and 4.2 us with 1024; the
 * 128-wide head norms took 2.9 us with one element per thread and 3.7 us
 * with two. */
static unsigned norm_threads(int64_t dim) {
    int64_t t = (dim + 31) / 32 * 32;
    return (unsigned)(t < 32 ? 32 : t > 1024 ? 1024 : t);
}

void mkb_rmsnorm(void *ctx, float *y, int64_t y_stride, const float *x, int64_t x_stride, const float *g,
                 int64_t rows, int64_t dim, float eps) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (rows <= 0 || dim <= 0)
        return;
    const float *gd = mkb_param(c, g, dim);
    if (g && !gd)
        return;
    mkb_launch(c, "rmsnorm", k_rmsnorm, dim3((unsigned)rows), dim3(norm_threads(dim)), 0, y, y_stride, x, x_stride,
               gd, dim, eps, (const float *)NULL);
}

void mkb_gated_rmsnorm(void *ctx, float *x, const float *z, const float *g, int64_t rows, int64_t dim, float eps) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (rows <= 0 || dim <= 0)
        return;
    const float *gd = mkb_param(c, g, dim);
    if (g && !gd)
        return;
    mkb_launch(c, "gated_rmsnorm", k_rmsnorm, dim3((unsigned)rows), dim3(norm_threads(dim)), 0, x, dim,
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
        v[i] = x0 * cs[i] - x1 * sn[i];
        v[i + half] = x1 * cs[i] + x0 * sn[i];
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

/* add_rmsnorm: one block per row, the threads of k_rmsnorm. x += y as axpy
 * computes it (fmaf(1, y, x)); the row's lowest non-finite index goes to
 * f->cand as in k_check_finite (whose protocol this follows: nothing looked
 * at once a finding is kept; the last block by ticket keeps (tag, index,
 * value) and resets the scratch); then xb = rmsnorm(x) * g with k_rmsnorm's
 * loop order, so the values equal the three slots' bit for bit. */
__global__ void __launch_bounds__(1024) k_add_rmsnorm(float *x, const float *y, int64_t dim, unsigned long long tag,
                                                      mkb_nfl *f, float *xb, const float *g, float eps) {
    __shared__ float sh[32];
    __shared__ bool last;
    mkc_pdl_enter();
    float *xr = x + blockIdx.x * dim;
    const float *yr = y + blockIdx.x * dim;
    float ss = 0.0f;
    int64_t bad = -1;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = fmaf(1.0f, yr[i], xr[i]);
        xr[i] = v;
        if (bad < 0 && !isfinite(v))
            bad = i; /* this thread's later indices are larger */
        ss = fmaf(v, v, ss);
    }
    /* one row (a decode step): the block's lowest finding in shared memory
     * and no ticket: the block is the launch's last (saves the L2 atomics'
     * round trips; the same finding as the protocol below) */
    __shared__ unsigned long long sbad;
    const bool one = gridDim.x == 1;
    if (one) {
        if (threadIdx.x == 0)
            sbad = ~0ull;
        __syncthreads();
        if (bad >= 0)
            atomicMin(&sbad, (unsigned long long)bad);
    } else if (bad >= 0 && __ldcg(&f->key) == ~0ull) {
        atomicMin(&f->cand, (unsigned long long)(blockIdx.x * dim + bad));
    }
    if (xb) {
        ss = mkb_block_sum(ss, sh);
        const float inv = 1.0f / sqrtf(ss / (float)dim + eps);
        float *br = xb + blockIdx.x * dim;
        for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
            float v = xr[i] * inv;
            if (g)
                v = v * g[i];
            br[i] = v;
        }
    }
    if (one) {
        __syncthreads(); /* sbad final, x written */
        if (threadIdx.x == 0 && sbad != ~0ull && f->key == ~0ull) {
            f->val = xr[sbad];
            f->key = tag << 40 | sbad;
        }
        return;
    }
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0)
        last = atomicAdd(&f->ticket, 1u) == gridDim.x - 1;
    __syncthreads();
    if (!last || threadIdx.x != 0)
        return;
    __threadfence();
    const unsigned long long cand = atomicExch(&f->cand, ~0ull);
    if (cand != ~0ull && f->key == ~0ull) {
        f->val = __ldcg(x + cand); /* written by another block of this launch */
        f->key = tag << 40 | cand;
    }
    f->ticket = 0u;
}

void mkb_add_rmsnorm(void *ctx, float *x, const float *y, int64_t rows, int64_t dim, int32_t tag, float *xb,
                     const float *g, float eps) {
    mkb_ctx *c = (mkb_ctx *)ctx;
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
    mkb_launch(c, "add_rmsnorm", k_add_rmsnorm, dim3((unsigned)rows), dim3(norm_threads(dim)), 0, x, y, dim,
               (unsigned long long)tag, c->nfl, xb, gd, eps);
}

/* qk_norm_rope: one block per (token, head) of q then k, the threads of
 * k_rmsnorm for a row of hd (so the norm's sum has its order); the head is
 * normed into shared memory, then rotated from there as k_rope does. */
__global__ void __launch_bounds__(1024) k_qk_norm_rope(float *q, int nq, float *k, int nk, int hd, const float *qg,
                                                       const float *kg, float eps, int rot, const float *cos,
                                                       const float *sin) {
    extern __shared__ float tmp[];
    __shared__ float sh[32];
    mkc_pdl_enter();
    const int nh = nq + nk;
    const int64_t t = blockIdx.x / nh;
    const int h = blockIdx.x % nh, half = rot / 2;
    float *v = h < nq ? q + (t * nq + h) * hd : k + (t * nk + (h - nq)) * hd;
    const float *g = h < nq ? qg : kg;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        const float a = v[i];
        tmp[i] = a;
        ss = fmaf(a, a, ss);
    }
    if (g) { /* uniform over the block: qg and kg are both given or both NULL */
        ss = mkb_block_sum(ss, sh);
        const float inv = 1.0f / sqrtf(ss / (float)hd + eps);
        for (int i = threadIdx.x; i < hd; i += blockDim.x) {
            float a = tmp[i] * inv;
            a = a * g[i];
            tmp[i] = a;
        }
    }
    __syncthreads();
    const float *cs = cos + t * half, *sn = sin + t * half;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        const float x0 = tmp[i], x1 = tmp[i + half];
        v[i] = x0 * cs[i] - x1 * sn[i];
        v[i + half] = x1 * cs[i] + x0 * sn[i];
    }
    if (g)
        for (int i = rot + threadIdx.x; i < hd; i += blockDim.x)
            v[i] = tmp[i];
}

void mkb_qk_norm_rope(void *ctx, float *q, int nq, float *k, int nk, int64_t n, int hd, const float *qg,
                      const float *kg, float eps, int rot_dim, const float *cos, const float *sin) {
    mkb_ctx *c = (mkb_ctx *)ctx;
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
    mkb_launch(c, "qk_norm_rope", k_qk_norm_rope, dim3((unsigned)(n * (nq + nk))), dim3(norm_threads(hd)),
               (size_t)hd * sizeof(float), q, nq, k, nk, hd, qd, kd, eps, rot_dim, cos, sin);
}
