/* The CUDA backend's slots for DeepSeek sparse attention (deepseek_v32,
 * glm_moe_dsa): the indexer key's LayerNorm and the lightning indexer's
 * selection (mk_dsa_args, backend.h). The attention over the selected rows
 * is cuda_attn.cu's (mk_attn_args.sel).
 *
 * dsa_select: one block per query token. Each warp scores cache positions
 * (lanes split the dim, a warp sum per head, heads added in ascending
 * order as on the CPU) into a 64-bit key per position, the score's bits
 * made order-preserving in the high word and the complement of the
 * position in the low one: a larger key is a higher score and, on equal
 * scores, a LOWER position, which is backend.h's tie rule, and no two keys
 * are equal. The m-th largest key is found exactly by an MSB-first radix
 * select (eight 8-bit digit histograms in shared memory over the row), and
 * the positions whose key is at least that one, exactly m, are written in
 * ascending order by a block-wide prefix count; the rest of the row is -1.
 * The keys live in backend scratch (n x (pos0 + n) of them, grown on
 * demand: DSA steps are never recorded, forward.c). Scores are f32 in
 * another summation order than the CPU's, so a near tie may resolve the
 * other way; exact ties (ReLU zeros) resolve the same. */
#include <math.h>

#include "cuda/cuda_backend.cuh"

#define DSA_THREADS 256
#define LN_THREADS 256

/* ---- layernorm: one block per row, two passes (mean, then the biased
 * variance of x - mean, as torch and the CPU) ---- */
__global__ void __launch_bounds__(LN_THREADS) k_layernorm(float *y, const float *x, const float *g, const float *b,
                                                          int64_t dim, float eps) {
    __shared__ float sh[32];
    const float *xr = x + blockIdx.x * dim;
    float *yr = y + blockIdx.x * dim;
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
        s += xr[i];
    const float mean = mkb_block_sum(s, sh) / (float)dim;
    float v = 0.0f;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
        v = fmaf(xr[i] - mean, xr[i] - mean, v);
    const float inv = 1.0f / sqrtf(mkb_block_sum(v, sh) / (float)dim + eps);
    __syncthreads(); /* every thread has read its row before y (which may be x) is written */
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
        yr[i] = (xr[i] - mean) * inv * g[i] + b[i];
}

void mkb_layernorm(void *ctx, float *y, const float *x, const float *g, const float *b, int64_t rows, int64_t dim,
                   float eps) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (rows <= 0 || dim <= 0)
        return;
    const float *gd = mkb_param(c, g, dim), *bd = mkb_param(c, b, dim);
    if (!gd || !bd)
        return;
    k_layernorm<<<(unsigned)rows, LN_THREADS, 0, c->s>>>(y, x, gd, bd, dim, eps);
    mkb_launched(c, "layernorm");
}

/* ---- dsa_select ---- */

/* order-preserving bits of a float (larger float, larger key); -0 is +0 */
__device__ __forceinline__ unsigned dsa_ord(float x) {
    unsigned u = __float_as_uint(x == 0.0f ? 0.0f : x);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__global__ void __launch_bounds__(DSA_THREADS) k_dsa_select(mk_dsa_args a, unsigned long long *keys,
                                                            int64_t kstride) {
    extern __shared__ float qs[]; /* [n_heads * dim] this token's queries, then [n_heads] weights */
    __shared__ unsigned hist[256];
    __shared__ unsigned long long s_prefix;
    __shared__ int s_rem;
    __shared__ int wcnt[DSA_THREADS / 32];
    const int64_t t = blockIdx.x, T = a.pos0 + t + 1;
    const int m = T < a.topk ? (int)T : a.topk;
    const int lane = threadIdx.x & 31, wp = threadIdx.x >> 5, nw = DSA_THREADS / 32;
    const int qn = a.n_heads * a.dim;
    float *ws = qs + qn;
    for (int i = threadIdx.x; i < qn; i += blockDim.x)
        qs[i] = a.q[t * qn + i];
    for (int i = threadIdx.x; i < a.n_heads; i += blockDim.x)
        ws[i] = a.w[t * a.n_heads + i] * a.w_scale;
    __syncthreads();
    unsigned long long *kr = keys + t * kstride;
    /* scores: one warp per position */
    for (int64_t s = wp; s < T; s += nw) {
        const float *ks = a.k + s * a.dim;
        float x = 0.0f;
        for (int h = 0; h < a.n_heads; h++) {
            float d = 0.0f;
            for (int i = lane; i < a.dim; i += 32)
                d = fmaf(qs[h * a.dim + i], ks[i], d);
            d = mkc_warp_sum(d) * a.scale;
            x += ws[h] * (d > 0.0f ? d : 0.0f);
        }
        if (lane == 0)
            kr[s] = (unsigned long long)dsa_ord(x) << 32 | (unsigned long long)(0xffffffffu - (unsigned)s);
    }
    /* radix select of the m-th largest key, 8 bits at a time from the top */
    if (threadIdx.x == 0) {
        s_prefix = 0;
        s_rem = m;
    }
    unsigned long long mask = 0;
    for (int shift = 56; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x)
            hist[i] = 0;
        __syncthreads(); /* the keys, s_prefix and the cleared histogram are visible */
        const unsigned long long pre = s_prefix;
        for (int64_t s = threadIdx.x; s < T; s += blockDim.x) {
            const unsigned long long k = kr[s];
            if ((k & mask) == pre)
                atomicAdd(&hist[(k >> shift) & 0xff], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) { /* the digit holding the rem-th largest among the matching keys */
            int rem = s_rem;
            for (int d = 255; d >= 0; d--) {
                if ((int)hist[d] >= rem) {
                    s_prefix = pre | (unsigned long long)d << shift;
                    break;
                }
                rem -= (int)hist[d];
            }
            s_rem = rem;
        }
        mask |= 0xffull << shift;
        __syncthreads(); /* thread 0 has read hist before the next round clears it */
    }
    const unsigned long long thr = s_prefix; /* exactly m keys are >= thr (keys are distinct) */
    /* the kept positions in ascending order: a block-wide count per round */
    int32_t *sel = a.sel + t * a.topk;
    int base = 0;
    for (int64_t s0 = 0; s0 < T; s0 += blockDim.x) {
        const int64_t s = s0 + threadIdx.x;
        const bool keep = s < T && kr[s] >= thr;
        const unsigned bal = __ballot_sync(0xffffffffu, keep);
        if (lane == 0)
            wcnt[wp] = __popc(bal);
        __syncthreads();
        int off = base;
        for (int w = 0; w < wp; w++)
            off += wcnt[w];
        if (keep)
            sel[off + __popc(bal & ((1u << lane) - 1u))] = (int32_t)s;
        for (int w = 0; w < nw; w++)
            base += wcnt[w];
        __syncthreads(); /* wcnt is read before the next round writes it */
    }
    for (int j = m + threadIdx.x; j < a.topk; j += blockDim.x)
        sel[j] = -1;
}

void mkb_dsa_select(void *ctx, const mk_dsa_args *a) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (a->n <= 0)
        return;
    const size_t smem = sizeof(float) * ((size_t)a->n_heads * (size_t)a->dim + (size_t)a->n_heads);
    if (a->topk <= 0 || a->n_heads <= 0 || a->dim <= 0 || smem > 48 * 1024 || a->pos0 + a->n > 0x7fffffff) {
        mkb_fail(c, mk_err(MK_E_UNSUPPORTED,
                           "CUDA dsa_select: %d indexer heads of %d dims (their queries and weights at most 48 KiB), "
                           "top-%d, %lld positions", a->n_heads, a->dim, a->topk, (long long)(a->pos0 + a->n)));
        return;
    }
    const int64_t kstride = a->pos0 + a->n;
    const size_t need = (size_t)a->n * (size_t)kstride * sizeof(unsigned long long);
    if (need > c->dsa_cap) { /* never inside a recording: DSA steps are not recorded */
        mk_cuda_free(c->dsa_keys);
        c->dsa_keys = NULL;
        c->dsa_cap = 0;
        if (cudaMalloc((void **)&c->dsa_keys, need) != cudaSuccess) {
            (void)cudaGetLastError();
            mkb_fail(c, mk_err(MK_E_NOMEM, "CUDA dsa_select: out of device memory for %zu bytes of index keys", need));
            return;
        }
        c->dsa_cap = need;
    }
    k_dsa_select<<<(unsigned)a->n, DSA_THREADS, smem, c->s>>>(*a, c->dsa_keys, kstride);
    mkb_launched(c, "dsa_select");
}
