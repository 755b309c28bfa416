/* The CUDA backend's causal attention (mk_attn_args: GQA with packed or
 * strided caches, MLA's latent cache with v = k).
 *
 * One block per (token, query head), ATT_WARPS warps; warp w takes cache
 * rows 32w .. 32w+31, then 32(w + ATT_WARPS) .., one row's score per lane,
 * and keeps an online softmax over those 32-row steps: running max m,
 * running sum l and the weighted sum of value rows (lane d holds dims d,
 * d+32, ...), rescaled by exp(m_old - m_new) when the max grows. The
 * warps' partial states are then merged in shared memory. Same function as
 * the CPU's two-pass softmax (backend_cpu.c) in another float32 order; a
 * decode step is latency-bound here (one block per head walks the whole
 * cache), a split-K (flash-decoding) version is issue 14's next step.
 * With mk_attn_args.pos_dev (a replayed decode step) the position is read
 * from device memory and the token's own k/v rows from k_new / v_new.
 * gpt_oss: a sliding window moves the first row walked (derived from the
 * position in the kernel, so a device position moves it too) and a learned
 * sink per head enters the merge's max and denominator, as in the CPU's
 * two passes. DSA: with `sel` the walk is over the token's selected rows
 * (counted up to the first -1 by the block), position s reading row sel[s]. */
#include <math.h>

#include "cuda/cuda_backend.cuh"

#define ATT_WARPS 4
#define MK_ATT_MAX_DIM 1024                /* = MK_ENGINE_MAX_HEAD_DIM */

__device__ __forceinline__ float att_warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* q . k_row over dk floats, four partial sums (float4 loads when the row
 * and q are 16-byte aligned and dk % 4 == 0: `vec`) */
__device__ __forceinline__ float att_dot(const float *q, const float *kr, int dk, bool vec) {
    float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f, d3 = 0.0f;
    if (vec) {
#pragma unroll 8
        for (int i = 0; i < dk; i += 4) {
            const float4 k4 = *(const float4 *)(kr + i);
            d0 = fmaf(q[i], k4.x, d0);
            d1 = fmaf(q[i + 1], k4.y, d1);
            d2 = fmaf(q[i + 2], k4.z, d2);
            d3 = fmaf(q[i + 3], k4.w, d3);
        }
    } else {
        for (int i = 0; i < dk; i++)
            d0 = fmaf(q[i], kr[i], d0);
    }
    return (d0 + d1) + (d2 + d3);
}

/* DVL value dims per lane (dv <= 32 DVL); the value rows of UB positions
 * are loaded before any is accumulated (UB * DVL = 32 registers), so a
 * 32-row step costs 32 / UB load round trips, not 32 */
template <int DVL>
__global__ void __launch_bounds__(ATT_WARPS * 32) k_attn(mk_attn_args a, int64_t ks, int64_t vs, bool vec) {
    constexpr int UB = DVL >= 32 ? 1 : 32 / DVL;
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
    /* DSA: the token's selected rows, up to the first -1 (ascending);
     * position s of the walk is then cache row sel[s] */
    const int32_t *sel = a.sel ? a.sel + t * a.sel_k : NULL;
    int64_t T = pos0 + t + 1;
    if (sel) {
        int cnt = 0;
        for (int64_t i0 = 0; i0 < a.sel_k; i0 += blockDim.x) {
            const int64_t i = i0 + threadIdx.x;
            cnt += __syncthreads_count(i < a.sel_k && sel[i] >= 0);
        }
        T = cnt < T ? cnt : T;
    }
    /* gpt_oss's sliding window: the last `window` positions, itself included */
    const int64_t S0 = !sel && a.window > 0 && T > a.window ? T - a.window : 0;
    const float *kn = a.k_new ? a.k_new + (int64_t)j * a.dk : NULL;
    const float *vn = a.k_new ? a.v_new + (int64_t)j * a.dv : NULL;
    if (a.k_new && blockIdx.x == 0) {
        for (int64_t i = threadIdx.x; i < ks; i += blockDim.x)
            ((float *)a.k)[pos0 * ks + i] = a.k_new[i];
        if (a.v_new != a.k_new || a.v != a.k)
            for (int64_t i = threadIdx.x; i < vs; i += blockDim.x)
                ((float *)a.v)[pos0 * vs + i] = a.v_new[i];
    }
    float m = -INFINITY, l = 0.0f, acc[DVL];
#pragma unroll
    for (int d = 0; d < DVL; d++)
        acc[d] = 0.0f;
    /* 32 positions per warp at a time, one per lane: the scores' loads of
     * 32 rows are in flight together (walking the cache one row per warp
     * step left a decode step latency-bound on the cache length) */
    for (int64_t s0 = S0 + (int64_t)wp * 32; s0 < T; s0 += ATT_WARPS * 32) {
        const int64_t s = s0 + lane;
        float x = -INFINITY;
        if (s < T)
            x = att_dot(q, kn && s == T - 1 ? kn : kb + (sel ? sel[s] : s) * ks, a.dk, vec) * a.scale;
        const float mn = fmaxf(m, att_warp_max(x)); /* finite: lane 0's position exists */
        const float corr = expf(m - mn), p = s < T ? expf(x - mn) : 0.0f;
        l = l * corr + mkc_warp_sum(p);
        m = mn;
#pragma unroll
        for (int d = 0; d < DVL; d++)
            acc[d] *= corr;
        const int cnt = T - s0 < 32 ? (int)(T - s0) : 32;
        for (int u0 = 0; u0 < 32; u0 += UB) { /* warp-uniform: every lane runs the shuffles */
            if (u0 >= cnt)
                break;
            float vv[UB][DVL];
#pragma unroll
            for (int b = 0; b < UB; b++) {
                const int u = u0 + b;
                const int64_t r = u < cnt ? (sel ? sel[s0 + u] : s0 + u) : 0;
                const float *vr = vn && s0 + u == T - 1 ? vn : vb + r * vs;
#pragma unroll
                for (int d = 0; d < DVL; d++) {
                    const int dd = lane + 32 * d;
                    vv[b][d] = u < cnt && dd < a.dv ? vr[dd] : 0.0f;
                }
            }
#pragma unroll
            for (int b = 0; b < UB; b++) {
                const float pu = __shfl_sync(0xffffffffu, p, u0 + b); /* 0 past cnt */
#pragma unroll
                for (int d = 0; d < DVL; d++)
                    acc[d] = fmaf(pu, vv[b][d], acc[d]);
            }
        }
    }
    if (lane == 0) {
        pm[wp] = m;
        pl[wp] = l;
    }
#pragma unroll
    for (int d = 0; d < DVL; d++) {
        const int dd = lane + 32 * d;
        if (dd < a.dv)
            pacc[wp * a.dv + dd] = acc[d];
    }
    __syncthreads();
    /* a learned sink (gpt_oss) joins the max and the denominator only */
    const float sink = a.sinks ? a.sinks[h] : -INFINITY;
    float M = sink;
    for (int w = 0; w < ATT_WARPS; w++)
        M = pm[w] > M ? pm[w] : M;
    float L = a.sinks ? expf(sink - M) : 0.0f, f[ATT_WARPS];
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
    if (a->sel && a->sel_k <= 0) {
        mkb_fail(c, mk_err(MK_E_ARG, "CUDA attention: a selection of %lld positions per token", (long long)a->sel_k));
        return;
    }
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
    /* float4 loads of key rows: every row start (cache rows, kv-head
     * offsets, k_new) 16-byte aligned */
    const bool vec = a->dk % 4 == 0 && ks % 4 == 0 && (uintptr_t)a->k % 16 == 0 &&
                     (!a->k_new || (uintptr_t)a->k_new % 16 == 0);
    const unsigned nb = (unsigned)(a->n * a->n_heads);
    if (a->dv <= 128)
        k_attn<4><<<nb, ATT_WARPS * 32, smem, c->s>>>(*a, ks, vs, vec);
    else if (a->dv <= 256)
        k_attn<8><<<nb, ATT_WARPS * 32, smem, c->s>>>(*a, ks, vs, vec);
    else if (a->dv <= 512)
        k_attn<16><<<nb, ATT_WARPS * 32, smem, c->s>>>(*a, ks, vs, vec);
    else
        k_attn<32><<<nb, ATT_WARPS * 32, smem, c->s>>>(*a, ks, vs, vec);
    mkb_launched(c, "attention");
}
