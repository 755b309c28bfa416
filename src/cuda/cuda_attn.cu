/* The CUDA backend's causal attention (mk_attn_args: GQA with packed or
 * strided caches, MLA's latent cache with v = k).
 *
 * One block per (token, query head), ATT_WARPS warps; warp w takes cache
 * rows 32w .. 32w+31, then 32(w + ATT_WARPS) .., one row's score per lane,
 * and keeps an online softmax over those 32-row steps: running max m,
 * running sum l and the weighted sum of value rows (lane d holds dims d,
 * d+32, ...), rescaled by exp(m_old - m_new) when the max grows. The
 * warps' partial states are then merged in shared memory. Same function as
 * the CPU's two-pass softmax (backend_cpu.c) in another float32 order.
 * A decode step (one token) has only n_heads blocks, each walking the
 * whole cache: 108 tok/s after a 2048-token prompt against 300 at position
 * ~100 for the Qwen3-30B-A3B shape (bench/RESULTS.md, session 10). So a
 * single token's walk is split over ATT_SPLIT blocks per head (flash-
 * decoding): block y takes a 32-row-aligned share of the positions and
 * writes its unnormalised state (max, sum, weighted values) to backend
 * scratch; k_attn_merge combines the shares (and the sink). The share
 * bounds are computed in the kernel from the position, so a replayed step
 * (device position) splits its own length.
 * With mk_attn_args.pos_dev (a replayed decode step) the position is read
 * from device memory and the token's own k/v rows from k_new / v_new.
 * gpt_oss: a sliding window moves the first row walked (derived from the
 * position in the kernel, so a device position moves it too) and a learned
 * sink per head enters the merge's max and denominator, as in the CPU's
 * two passes. DSA: with `sel` the walk is over the token's selected rows
 * (counted up to the first -1 by the block), position s reading row sel[s].
 * Prefill chunks of 16 tokens or more go to the tiled kernel
 * (cuda_attn_tile.cu) where it takes the shape. */
#include <math.h>

#include "cuda/cuda_backend.cuh"

#define ATT_WARPS 4
#define ATT_SPLIT 8 /* blocks per head for one token (k_attn_merge combines them) */
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

/* A batched decode step's sequences (mkb_attention_each): token t's caches,
 * position and new rows; the other arguments are the mk_attn_args'. */
#define ATT_SEQS 64
struct att_seqs {
    const float *k[ATT_SEQS], *v[ATT_SEQS], *kn[ATT_SEQS], *vn[ATT_SEQS];
    int64_t pos0[ATT_SEQS];
};

/* DVL value dims per lane (dv <= 32 DVL); the value rows of UB positions
 * are loaded before any is accumulated (UB * DVL = 32 registers), so a
 * 32-row step costs 32 / UB load round trips, not 32. Block (t * n_heads
 * + h, share) of a call: token t's query head h against caches k / v
 * (a.k / a.v or the sequence's), positions 0 .. pos0 + tp (tp: t within a
 * chunk, 0 for a sequence of a batched step), the new rows kn / vn (or
 * NULL) written into row pos0 by the token's head-0 first share. */
template <int DVL>
__device__ __forceinline__ void attn_block(const mk_attn_args &a, int64_t ks, int64_t vs, bool vec, float *part,
                                           int64_t t, const float *ka, const float *va, int64_t pos0, int64_t tp,
                                           const float *kn_row, const float *vn_row) {
    constexpr int UB = DVL >= 32 ? 1 : 32 / DVL;
    extern __shared__ float sm[];
    float *q = sm;                     /* dk */
    float *pm = q + a.dk;              /* ATT_WARPS maxima */
    float *pl = pm + ATT_WARPS;        /* ATT_WARPS sums */
    float *pacc = pl + ATT_WARPS;      /* ATT_WARPS x dv */
    const int h = blockIdx.x % a.n_heads, j = h / (a.n_heads / a.n_kv);
    const int lane = threadIdx.x & 31, wp = threadIdx.x >> 5;
    const float *qg = a.q + (t * a.n_heads + h) * a.dk;
    for (int i = threadIdx.x; i < a.dk; i += blockDim.x)
        q[i] = qg[i];
    __syncthreads();
    const float *kb = ka + (int64_t)j * a.dk, *vb = va + (int64_t)j * a.dv;
    /* DSA: the token's selected rows, up to the first -1 (ascending);
     * position s of the walk is then cache row sel[s] */
    const int32_t *sel = a.sel ? a.sel + t * a.sel_k : NULL;
    int64_t T = pos0 + tp + 1;
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
    const float *kn = kn_row ? kn_row + (int64_t)j * a.dk : NULL;
    const float *vn = kn_row ? vn_row + (int64_t)j * a.dv : NULL;
    /* this block's share of [S0, T): gridDim.y shares of whole 32-row steps */
    const int64_t per = ((T - S0 + gridDim.y - 1) / gridDim.y + 31) / 32 * 32;
    const int64_t B0 = S0 + (int64_t)blockIdx.y * per, B1 = B0 + per < T ? B0 + per : T;
    if (kn_row && h == 0 && blockIdx.y == 0) {
        for (int64_t i = threadIdx.x; i < ks; i += blockDim.x)
            ((float *)ka)[pos0 * ks + i] = kn_row[i];
        if (vn_row != kn_row || va != ka)
            for (int64_t i = threadIdx.x; i < vs; i += blockDim.x)
                ((float *)va)[pos0 * vs + i] = vn_row[i];
    }
    float m = -INFINITY, l = 0.0f, acc[DVL];
#pragma unroll
    for (int d = 0; d < DVL; d++)
        acc[d] = 0.0f;
    /* 32 positions per warp at a time, one per lane: the scores' loads of
     * 32 rows are in flight together (walking the cache one row per warp
     * step left a decode step latency-bound on the cache length) */
    for (int64_t s0 = B0 + (int64_t)wp * 32; s0 < B1; s0 += ATT_WARPS * 32) {
        const int64_t s = s0 + lane;
        float x = -INFINITY;
        if (s < B1)
            x = att_dot(q, kn && s == T - 1 ? kn : kb + (sel ? sel[s] : s) * ks, a.dk, vec) * a.scale;
        const float mn = fmaxf(m, att_warp_max(x)); /* finite: lane 0's position exists */
        const float corr = expf(m - mn), p = s < B1 ? expf(x - mn) : 0.0f;
        l = l * corr + mkc_warp_sum(p);
        m = mn;
#pragma unroll
        for (int d = 0; d < DVL; d++)
            acc[d] *= corr;
        const int cnt = B1 - s0 < 32 ? (int)(B1 - s0) : 32;
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
    if (gridDim.y > 1) { /* a share: its state, unnormalised, for k_attn_merge */
        float M = -INFINITY, L = 0.0f, f[ATT_WARPS];
        for (int w = 0; w < ATT_WARPS; w++)
            M = pl[w] > 0.0f && pm[w] > M ? pm[w] : M;
        for (int w = 0; w < ATT_WARPS; w++) {
            f[w] = pl[w] > 0.0f ? expf(pm[w] - M) : 0.0f;
            L += pl[w] * f[w];
        }
        float *ps = part + ((int64_t)blockIdx.x * gridDim.y + blockIdx.y) * (a.dv + 2);
        if (threadIdx.x == 0) {
            ps[0] = M; /* -inf with L = 0: an empty share */
            ps[1] = L;
        }
        for (int d = threadIdx.x; d < a.dv; d += blockDim.x) {
            float v = 0.0f;
            for (int w = 0; w < ATT_WARPS; w++)
                v = fmaf(pacc[w * a.dv + d], f[w], v);
            ps[2 + d] = v;
        }
        return;
    }
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

template <int DVL>
__global__ void __launch_bounds__(ATT_WARPS * 32) k_attn(mk_attn_args a, int64_t ks, int64_t vs, bool vec, float *part) {
    const int64_t t = blockIdx.x / a.n_heads;
    /* a replayed decode step: the position from device memory, this token's
     * rows from k_new / v_new (the cache row is written by block 0 for
     * later steps and read by none here) */
    const int64_t pos0 = a.pos_dev ? *a.pos_dev : a.pos0;
    attn_block<DVL>(a, ks, vs, vec, part, t, a.k, a.v, pos0, t, a.k_new, a.v_new);
}

/* A batched decode step: token t is sequence t's one token (s: its caches,
 * position and new rows), each block as k_attn's for that sequence alone */
template <int DVL>
__global__ void __launch_bounds__(ATT_WARPS * 32)
    k_attn_each(mk_attn_args a, const __grid_constant__ att_seqs s, int64_t ks, int64_t vs, bool vec, float *part) {
    const int64_t t = blockIdx.x / a.n_heads;
    attn_block<DVL>(a, ks, vs, vec, part, t, s.k[t], s.v[t], s.pos0[t], 0, s.kn[t], s.vn[t]);
}

/* One block per (token, head): the ATT_SPLIT shares' states combined as
 * the warps' are in k_attn (the sink in the max and the denominator). */
__global__ void k_attn_merge(mk_attn_args a, const float *__restrict__ part, int ns) {
    const int h = blockIdx.x % a.n_heads;
    const int64_t t = blockIdx.x / a.n_heads;
    const float *ps = part + (int64_t)blockIdx.x * ns * (a.dv + 2);
    const float sink = a.sinks ? a.sinks[h] : -INFINITY;
    float M = sink;
    for (int i = 0; i < ns; i++)
        M = ps[i * (a.dv + 2) + 1] > 0.0f && ps[i * (a.dv + 2)] > M ? ps[i * (a.dv + 2)] : M;
    float L = a.sinks ? expf(sink - M) : 0.0f;
    for (int i = 0; i < ns; i++) {
        const float l = ps[i * (a.dv + 2) + 1];
        L += l > 0.0f ? l * expf(ps[i * (a.dv + 2)] - M) : 0.0f;
    }
    const float inv = 1.0f / L;
    float *o = a.out + (t * a.n_heads + h) * a.dv;
    for (int d = threadIdx.x; d < a.dv; d += blockDim.x) {
        float v = 0.0f;
        for (int i = 0; i < ns; i++) {
            const float l = ps[i * (a.dv + 2) + 1];
            if (l > 0.0f)
                v = fmaf(ps[i * (a.dv + 2) + 2 + d], expf(ps[i * (a.dv + 2)] - M), v);
        }
        o[d] = v * inv;
    }
}

/* The shares' states of nb blocks split ATT_SPLIT ways, in scratch grown
 * outside recordings (a recorded step that would need more splits
 * nothing: it cannot grow memory there): *ns ATT_SPLIT, or 1 without the
 * scratch. False: the allocation failed (recorded for sync). */
static bool split_scratch(mkb_ctx *c, unsigned nb, int dv, unsigned *ns) {
    const size_t need = (size_t)nb * ATT_SPLIT * ((size_t)dv + 2) * sizeof(float);
    if (need > c->att_cap && !c->recording) {
        mkb_graph_free(c); /* a recorded step's attention nodes point at the old scratch */
        mk_cuda_free(c->att_part);
        c->att_part = NULL;
        c->att_cap = 0;
        mk_status st = mk_cuda_malloc((void **)&c->att_part, need, "attention's split scratch");
        if (st != MK_OK) {
            mkb_fail(c, st);
            return false;
        }
        c->att_cap = need;
    }
    *ns = need <= c->att_cap ? ATT_SPLIT : 1;
    return true;
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
    /* prefill chunks: the tiled kernel (cuda_attn_tile.cu) where it takes the shape */
    if (a->n > 1 && mkb_attention_tiled(c, a, ks, vs))
        return;
    const size_t smem = sizeof(float) * ((size_t)a->dk + 2 * ATT_WARPS + (size_t)ATT_WARPS * a->dv);
    /* float4 loads of key rows: every row start (cache rows, kv-head
     * offsets, k_new) 16-byte aligned */
    const bool vec = a->dk % 4 == 0 && ks % 4 == 0 && (uintptr_t)a->k % 16 == 0 &&
                     (!a->k_new || (uintptr_t)a->k_new % 16 == 0);
    const unsigned nb = (unsigned)(a->n * a->n_heads);
    /* one token: split over the cache */
    unsigned ns = 1;
    if (a->n == 1 && !split_scratch(c, nb, a->dv, &ns))
        return;
    const dim3 grid(nb, ns);
    if (a->dv <= 128)
        k_attn<4><<<grid, ATT_WARPS * 32, smem, c->s>>>(*a, ks, vs, vec, c->att_part);
    else if (a->dv <= 256)
        k_attn<8><<<grid, ATT_WARPS * 32, smem, c->s>>>(*a, ks, vs, vec, c->att_part);
    else if (a->dv <= 512)
        k_attn<16><<<grid, ATT_WARPS * 32, smem, c->s>>>(*a, ks, vs, vec, c->att_part);
    else
        k_attn<32><<<grid, ATT_WARPS * 32, smem, c->s>>>(*a, ks, vs, vec, c->att_part);
    mkb_launched(c, "attention");
    if (ns > 1) {
        k_attn_merge<<<nb, 128, 0, c->s>>>(*a, c->att_part, (int)ns);
        mkb_launched(c, "attention (merging the shares)");
    }
}

/* A batched decode step's attention (backend.h's attention_each): one
 * launch of k_attn_each (and one merge) for every sequence, each block
 * exactly k_attn's for its sequence alone. Declined (false) unless the
 * calls are alike (shape, scale, strides, window, sinks), their queries and
 * outputs contiguous rows of one batch, and the float4 choice (`vec`) the
 * one every one-sequence call would make after its rows were written. */
bool mkb_attention_each(void *ctx, const mk_attn_args *a, int n) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (n < 1 || n > ATT_SEQS || c->recording)
        return false;
    const mk_attn_args *a0 = &a[0];
    if (a0->dk > MK_ATT_MAX_DIM || a0->dv > MK_ATT_MAX_DIM || a0->n_kv <= 0 || a0->n_heads <= 0 ||
        a0->n_heads % a0->n_kv)
        return false; /* attention names what is wrong */
    const int64_t ks = a0->k_stride ? a0->k_stride : (int64_t)a0->n_kv * a0->dk;
    const int64_t vs = a0->v_stride ? a0->v_stride : (int64_t)a0->n_kv * a0->dv;
    const bool base = a0->dk % 4 == 0 && ks % 4 == 0;
    bool vec = false;
    att_seqs sq;
    for (int i = 0; i < n; i++) {
        const mk_attn_args *x = &a[i];
        if (x->n != 1 || x->sel || x->pos_dev || !x->k_new || !x->v_new || x->n_heads != a0->n_heads ||
            x->n_kv != a0->n_kv || x->dk != a0->dk || x->dv != a0->dv || x->scale != a0->scale ||
            x->k_stride != a0->k_stride || x->v_stride != a0->v_stride || x->window != a0->window ||
            x->sinks != a0->sinks || x->q != a0->q + (int64_t)i * a0->n_heads * a0->dk ||
            x->out != a0->out + (int64_t)i * a0->n_heads * a0->dv)
            return false;
        /* one float4 choice for the launch: each sequence's own (its cache's
         * alignment), unchanged by its new row's */
        const bool vi = base && (uintptr_t)x->k % 16 == 0;
        if (i == 0)
            vec = vi;
        if (vi != vec || (vi && (uintptr_t)x->k_new % 16 != 0))
            return false;
        sq.k[i] = x->k;
        sq.v[i] = x->v;
        sq.kn[i] = x->k_new;
        sq.vn[i] = x->v_new;
        sq.pos0[i] = x->pos0;
    }
    const unsigned nb = (unsigned)n * (unsigned)a0->n_heads;
    unsigned ns = 1;
    if (!split_scratch(c, nb, a0->dv, &ns))
        return true;
    const size_t smem = sizeof(float) * ((size_t)a0->dk + 2 * ATT_WARPS + (size_t)ATT_WARPS * a0->dv);
    const dim3 grid(nb, ns);
    if (a0->dv <= 128)
        k_attn_each<4><<<grid, ATT_WARPS * 32, smem, c->s>>>(*a0, sq, ks, vs, vec, c->att_part);
    else if (a0->dv <= 256)
        k_attn_each<8><<<grid, ATT_WARPS * 32, smem, c->s>>>(*a0, sq, ks, vs, vec, c->att_part);
    else if (a0->dv <= 512)
        k_attn_each<16><<<grid, ATT_WARPS * 32, smem, c->s>>>(*a0, sq, ks, vs, vec, c->att_part);
    else
        k_attn_each<32><<<grid, ATT_WARPS * 32, smem, c->s>>>(*a0, sq, ks, vs, vec, c->att_part);
    mkb_launched(c, "attention of a batched step");
    if (ns > 1) {
        k_attn_merge<<<nb, 128, 0, c->s>>>(*a0, c->att_part, (int)ns);
        mkb_launched(c, "attention of a batched step (merging the shares)");
    }
    return true;
}
