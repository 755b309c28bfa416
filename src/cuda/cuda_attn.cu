/* The CUDA backend's causal attention (mk_attn_args: GQA with packed or
 * strided caches, MLA's latent cache with v = k).
 *
 * One block per (token, query head), ATT_WARPS warps; warp w takes cache
 * rows w, w + ATT_WARPS, ... and keeps an online softmax: running max m,
 * running sum l and the weighted sum of value rows (lane d holds dims d,
 * d+32, ...), rescaled by exp(m_old - m_new) when the max grows. The
 * warps' partial states are then merged in shared memory. Same function as
 * the CPU's two-pass softmax (backend_cpu.c) in another float32 order; a
 * decode step is latency-bound here (one block per head walks the whole
 * cache), a split-K (flash-decoding) version is issue 14's next step.
 * With mk_attn_args.pos_dev (a replayed decode step) the position is read
 * from device memory and the token's own k/v rows from k_new / v_new. */
#include <math.h>

#include "cuda/cuda_backend.cuh"

#define ATT_WARPS 4
#define ATT_DV_LANE (MK_ATT_MAX_DIM / 32) /* value dims per lane */
#define MK_ATT_MAX_DIM 1024                /* = MK_ENGINE_MAX_HEAD_DIM */

__global__ void __launch_bounds__(ATT_WARPS * 32) k_attn(mk_attn_args a, int64_t ks, int64_t vs) {
    extern __shared__ float sm[];
    float *q = sm;                     /* dk */
    float *pm = q + a.dk;              /* ATT_WARPS maxima */
    float *pl = pm + ATT_WARPS;        /* ATT_WARPS sums */
    float *pacc = pl + ATT_WARPS;      /* ATT_WARPS x dv */
    const int64_t t = blockIdx.x / a.n_heads;
    const int h = blockIdx.x % a.n_heads, j = h / (a.n_heads / a.n_kv);
    const int lane = threadIdx.x & 31, wp = threadIdx.x >> 5;
    const float *qg = a.q + (t * a.n_heads + h) * a.dk;
    for (int i = threadIdx.x; i < a.dk; i += blockDim.x)
        q[i] = qg[i];
    __syncthreads();
    const float *kb = a.k + (int64_t)j * a.dk, *vb = a.v + (int64_t)j * a.dv;
    /* a replayed decode step: the position from device memory, this token's
     * rows from k_new / v_new (the cache row is written by block 0 for
     * later steps and read by none here) */
    const int64_t pos0 = a.pos_dev ? *a.pos_dev : a.pos0;
    const int64_t T = pos0 + t + 1;
    const float *kn = a.k_new ? a.k_new + (int64_t)j * a.dk : NULL;
    const float *vn = a.k_new ? a.v_new + (int64_t)j * a.dv : NULL;
    if (a.k_new && blockIdx.x == 0) {
        for (int64_t i = threadIdx.x; i < ks; i += blockDim.x)
            ((float *)a.k)[pos0 * ks + i] = a.k_new[i];
        if (a.v_new != a.k_new || a.v != a.k)
            for (int64_t i = threadIdx.x; i < vs; i += blockDim.x)
                ((float *)a.v)[pos0 * vs + i] = a.v_new[i];
    }
    float m = -INFINITY, l = 0.0f, acc[ATT_DV_LANE];
#pragma unroll
    for (int d = 0; d < ATT_DV_LANE; d++)
        acc[d] = 0.0f;
    for (int64_t s = wp; s < T; s += ATT_WARPS) {
        const float *kr = kn && s == T - 1 ? kn : kb + s * ks;
        float dot = 0.0f;
        for (int i = lane; i < a.dk; i += 32)
            dot = fmaf(q[i], kr[i], dot);
        const float x = mkc_warp_sum(dot) * a.scale;
        const float mn = x > m ? x : m;
        const float corr = expf(m - mn), p = expf(x - mn);
        l = l * corr + p;
        m = mn;
        const float *vr = vn && s == T - 1 ? vn : vb + s * vs;
#pragma unroll
        for (int d = 0; d < ATT_DV_LANE; d++) {
            const int dd = lane + 32 * d;
            if (dd < a.dv)
                acc[d] = fmaf(p, vr[dd], acc[d] * corr);
        }
    }
    if (lane == 0) {
        pm[wp] = m;
        pl[wp] = l;
    }
#pragma unroll
    for (int d = 0; d < ATT_DV_LANE; d++) {
        const int dd = lane + 32 * d;
        if (dd < a.dv)
            pacc[wp * a.dv + dd] = acc[d];
    }
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < ATT_WARPS; w++)
        M = pm[w] > M ? pm[w] : M;
    float L = 0.0f, f[ATT_WARPS];
    for (int w = 0; w < ATT_WARPS; w++) {
        f[w] = pl[w] > 0.0f ? expf(pm[w] - M) : 0.0f; /* a warp with no rows has m = -inf */
        L += pl[w] * f[w];
    }
    const float inv = 1.0f / L;
    float *o = a.out + (t * a.n_heads + h) * a.dv;
    for (int d = threadIdx.x; d < a.dv; d += blockDim.x) {
        float v = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++)
            v = fmaf(pacc[w * a.dv + d], f[w], v);
        o[d] = v * inv;
    }
}

void mkb_attention(void *ctx, const mk_attn_args *a) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (a->n <= 0 || a->n_heads <= 0)
        return;
    if (a->pos_dev && (a->n != 1 || a->sel || !a->k_new || !a->v_new)) {
        mkb_fail(c, mk_err(MK_E_ARG, "CUDA attention: a device position needs one token, new k/v rows and no selection"));
        return;
    }
    if (a->dk > MK_ATT_MAX_DIM || a->dv > MK_ATT_MAX_DIM || a->n_kv <= 0 || a->n_heads % a->n_kv) {
        mkb_fail(c, mk_err(MK_E_UNSUPPORTED, "CUDA attention: head dims %d/%d (at most %d), %d heads on %d kv heads",
                           a->dk, a->dv, MK_ATT_MAX_DIM, a->n_heads, a->n_kv));
        return;
    }
    const int64_t ks = a->k_stride ? a->k_stride : (int64_t)a->n_kv * a->dk;
    const int64_t vs = a->v_stride ? a->v_stride : (int64_t)a->n_kv * a->dv;
    const size_t smem = sizeof(float) * ((size_t)a->dk + 2 * ATT_WARPS + (size_t)ATT_WARPS * a->dv);
    k_attn<<<(unsigned)(a->n * a->n_heads), ATT_WARPS * 32, smem, c->s>>>(*a, ks, vs);
    mkb_launched(c, "attention");
}
