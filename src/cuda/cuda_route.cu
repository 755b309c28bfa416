/* The CUDA backend's MoE slots: routing (top-k on the device, no host round
 * trip), the ordered combine of expert outputs and the shared expert's
 * gated add.
 *
 * route: one block per token. Scores in shared memory (softmax as the CPU:
 * max, expf(x - max), sum, times 1/sum; or DeepSeek-V3's sigmoid + bias with
 * group masking), then k rounds of a block-wide argmax over the experts not
 * yet taken, ordered by (score descending, index ascending): the CPU's
 * lowest-index-first top-k. The group step (top-2 sum per group, the best
 * topk_group groups) and the k weights are small and done by one thread,
 * in the CPU's order. */
#include <math.h>

#include "cuda/cuda_backend.cuh"
#include "cuda/cuda_ticket.cuh"

#define RT_THREADS 256
#define RT_MAX_K 64
#define RT_MAX_G 64

/* better (v, i) than (bv, bi): larger score, lower index on ties */
__device__ __forceinline__ bool rt_better(float v, int i, float bv, int bi) {
    return bi < 0 || v > bv || (v == bv && i < bi);
}

/* Block-wide argmax of s[0..E) over untaken entries; every thread gets it. */
__device__ int rt_argmax(const float *s, const unsigned char *taken, int E, float *rv, int *ri) {
    float bv = 0.0f;
    int bi = -1;
    for (int i = threadIdx.x; i < E; i += blockDim.x)
        if (!taken[i] && rt_better(s[i], i, bv, bi)) {
            bv = s[i];
            bi = i;
        }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (oi >= 0 && rt_better(ov, oi, bv, bi)) {
            bv = ov;
            bi = oi;
        }
    }
    const int lane = threadIdx.x & 31, wp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) {
        rv[wp] = bv;
        ri[wp] = bi;
    }
    __syncthreads();
    bv = 0.0f;
    bi = -1;
    for (int w = 0; w < nw; w++)
        if (ri[w] >= 0 && rt_better(rv[w], ri[w], bv, bi)) {
            bv = rv[w];
            bi = ri[w];
        }
    return bi;
}

__global__ void __launch_bounds__(RT_THREADS) k_route(mk_route_args a) {
    extern __shared__ float sm[];
    float *s = sm;                                       /* E scores */
    unsigned char *taken = (unsigned char *)(s + a.E);   /* E flags */
    __shared__ float red[32], rv[32];
    __shared__ int ri[32], sel[RT_MAX_K];
    const int E = a.E, k = a.k;
    const float *lg = a.logits + blockIdx.x * (int64_t)E;
    for (int i = threadIdx.x; i < E; i += blockDim.x)
        taken[i] = 0;
    if (a.kind == MK_ROUTE_GROUPED_SIGMOID) {
        for (int i = threadIdx.x; i < E; i += blockDim.x)
            s[i] = 1.0f / (1.0f + expf(-lg[i])) + (a.bias ? a.bias[i] : 0.0f);
        __syncthreads();
        const int G = a.n_group > 0 ? a.n_group : 1, TG = a.topk_group > 0 ? a.topk_group : 1;
        __shared__ float gs[RT_MAX_G];
        __shared__ int32_t keep[RT_MAX_G];
        if (G > 1) /* one group: all kept */
            mkc_route_groups(s, E, G, TG, gs, keep);
    } else {
        float mx = -INFINITY;
        for (int i = threadIdx.x; i < E; i += blockDim.x)
            mx = fmaxf(mx, lg[i]);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        if ((threadIdx.x & 31) == 0)
            rv[threadIdx.x >> 5] = mx;
        __syncthreads();
        mx = rv[0];
        for (int w = 1; w < (int)(blockDim.x >> 5); w++)
            mx = fmaxf(mx, rv[w]);
        float sum = 0.0f;
        for (int i = threadIdx.x; i < E; i += blockDim.x)
            sum += (s[i] = expf(lg[i] - mx));
        sum = mkb_block_sum(sum, red);
        const float inv = 1.0f / sum;
        for (int i = threadIdx.x; i < E; i += blockDim.x)
            s[i] *= inv;
        __syncthreads();
    }
    for (int j = 0; j < k; j++) {
        const int b = rt_argmax(s, taken, E, rv, ri);
        if (threadIdx.x == 0) {
            sel[j] = b;
            taken[b] = 1;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        int32_t *idx = a.idx + blockIdx.x * (int64_t)k;
        float *w = a.w + blockIdx.x * (int64_t)k, sum = 0.0f;
        const bool grouped = a.kind == MK_ROUTE_GROUPED_SIGMOID;
        for (int j = 0; j < k; j++) {
            idx[j] = sel[j];
            w[j] = grouped ? 1.0f / (1.0f + expf(-lg[sel[j]])) : s[sel[j]];
            sum += w[j];
        }
        for (int j = 0; j < k; j++) {
            if (grouped) {
                if (a.norm)
                    w[j] /= sum + 1e-20f;
                w[j] *= a.scale;
            } else if (a.norm) {
                w[j] /= sum;
            }
        }
    }
}

void mkb_route(void *ctx, const mk_route_args *a) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (a->n <= 0)
        return;
    const int G = a->n_group > 0 ? a->n_group : 1, TG = a->topk_group > 0 ? a->topk_group : 1;
    /* groups of >= 2 experts: a group's score is its top two (the config check's rule) */
    if (a->E <= 0 || a->E > MK_BACKEND_MAX_EXPERTS || a->k <= 0 || a->k > RT_MAX_K || a->k > a->E ||
        (a->kind == MK_ROUTE_GROUPED_SIGMOID &&
         (G > RT_MAX_G || a->E % G || (G > 1 && a->E / G < 2) || TG > G))) {
        mkb_fail(c, mk_err(MK_E_UNSUPPORTED,
                           "CUDA route: %d experts (at most %d), top-%d (at most %d), %d groups (at most %d, "
                           "of >= 2 experts each) keeping %d",
                           a->E, MK_BACKEND_MAX_EXPERTS, a->k, RT_MAX_K, G, RT_MAX_G, TG));
        return;
    }
    mk_route_args d = *a;
    d.bias = mkb_param(c, a->bias, a->E);
    if (a->bias && !d.bias)
        return;
    const size_t smem = (size_t)a->E * (sizeof(float) + 1);
    k_route<<<(unsigned)a->n, RT_THREADS, smem, c->s>>>(d);
    mkb_launched(c, "route");
}

/* y[t, d] = sum_j w[t*k + s] x[t*k + s, d], s = order[t*k + j] */
__global__ void k_combine(float *y, const float *x, const float *w, const int32_t *order, int64_t n, int k,
                          int64_t dim) {
    const int64_t total = n * dim;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = i / dim, d = i % dim;
        float acc = 0.0f;
        for (int j = 0; j < k; j++) {
            const int64_t p = t * k + order[t * k + j];
            acc = fmaf(w[p], x[p * dim + d], acc);
        }
        y[i] = acc;
    }
}

void mkb_combine(void *ctx, float *y, const float *x, const float *w, const int32_t *order, int64_t n, int k,
                 int64_t dim) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (n * dim <= 0)
        return;
    unsigned b = mkb_blocks(n * dim, 256);
    k_combine<<<b > 65535 ? 65535 : b, 256, 0, c->s>>>(y, x, w, order, n, k, dim);
    mkb_launched(c, "combine");
}

/* y[t] += sigmoid(g[t]) x[t] (g NULL: weight 1) */
__global__ void k_gated_add(float *y, const float *g, const float *x, int64_t n, int64_t dim) {
    const int64_t total = n * dim;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const float a = g ? 1.0f / (1.0f + expf(-g[i / dim])) : 1.0f;
        y[i] = fmaf(a, x[i], y[i]);
    }
}

void mkb_gated_add(void *ctx, float *y, const float *g, const float *x, int64_t n, int64_t dim) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (n * dim <= 0)
        return;
    unsigned b = mkb_blocks(n * dim, 256);
    k_gated_add<<<b > 65535 ? 65535 : b, 256, 0, c->s>>>(y, g, x, n, dim);
    mkb_launched(c, "gated_add");
}

/* ---- argmax (greedy decoding on the device) ------------------------------ */

/* A float's order as an unsigned key (larger float, larger key; -0 taken as
 * +0, since mk_argmax's `>` holds them equal). With the complement of the
 * index below it, the largest 64-bit key is the largest value at its
 * lowest index: mk_argmax's choice. */
__device__ __forceinline__ unsigned long long am_key(float v, int64_t i) {
    uint32_t u = __float_as_uint(v == 0.0f ? 0.0f : v);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return (unsigned long long)u << 32 | (0xffffffffu - (uint32_t)i);
}

/* Grid-stride: each thread's best key, a warp max, one atomicMax per warp
 * into a->key; the last block (mkc_last_in) writes the
 * index and resets the scratch for the next launch. */
__global__ void k_argmax(const float *x, int64_t n, mkb_amax *a, int32_t *out) {
    mkc_pdl_enter(); /* launched under PDL (mkb_launch) */
    unsigned long long best = 0ull;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const unsigned long long k = am_key(x[i], i);
        best = k > best ? k : best;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const unsigned long long ok = __shfl_xor_sync(0xffffffffu, best, o);
        best = ok > best ? ok : best;
    }
    if ((threadIdx.x & 31) == 0 && best)
        atomicMax(&a->key, best);
    if (!mkc_last_in(&a->ticket, gridDim.x) || threadIdx.x != 0)
        return;
    const unsigned long long k = atomicExch(&a->key, 0ull);
    *out = (int32_t)(0xffffffffu - (uint32_t)(k & 0xffffffffu));
    a->ticket = 0u;
}

void mkb_argmax(void *ctx, const float *x, int64_t n, int32_t *out) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (n <= 0 || n > 0x7fffffff) {
        mkb_fail(c, mk_err(MK_E_ARG, "argmax: %lld values (1 to 2^31-1)", (long long)n));
        return;
    }
    unsigned blocks = mkb_blocks(n, 256);
    if (blocks > 264)
        blocks = 264; /* two blocks per SM of an H200 */
    mkb_launch(c, "argmax", k_argmax, dim3(blocks), dim3(256), 0, x, n, c->amax, out);
}
