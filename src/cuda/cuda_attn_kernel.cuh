/* The attention kernels (attn_block and its launches k_attn, k_attn_each,
 * k_attn_merge; the launch code and the algorithm's description are
 * cuda_attn.cu's). A header of its own so that the host emulation
 * (tests/cli/cuda_emu_attn.sh) runs these very kernels. The includer
 * provides cuda_impl.cuh and moekit/backend.h (mk_attn_args). */
#ifndef MK_CUDA_ATTN_KERNEL_CUH
#define MK_CUDA_ATTN_KERNEL_CUH

#include "cuda/cuda_fold.cuh"
#include "cuda/cuda_ticket.cuh"

#define ATT_WARPS 4
#define ATT_SPLIT 8      /* blocks per head for one token by default (mk_cuda_set_attn_shares) */
#define ATT_SPLIT_MAX 32 /* ... at most */
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
        /* 16 float4 loads in flight (a 128-float row in two rounds, not four): the walk of a short
         * cache is a chain of these rounds; the sums' order is the loop's, whatever the unroll */
#pragma unroll 16
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

/* This block's share of positions [S0, T): gridDim.y shares of whole
 * 32-row steps, [*B0, *B1) */
__device__ __forceinline__ void att_share(int64_t S0, int64_t T, int64_t *B0, int64_t *B1) {
    const int64_t per = ((T - S0 + gridDim.y - 1) / gridDim.y + 31) / 32 * 32;
    *B0 = S0 + (int64_t)blockIdx.y * per;
    *B1 = *B0 + per < T ? *B0 + per : T;
}

/* The first position token t attends to at T positions without a DSA
 * selection: gpt_oss's sliding window keeps the last `window`, itself
 * included. */
__device__ __forceinline__ int64_t att_first(const mk_attn_args &a, int64_t T) {
    return a.window > 0 && T > a.window ? T - a.window : 0;
}

/* Before the wait for the previous kernel (mkc_pdl_enter), when pf (the
 * launch's MK_CUDA_PREFETCH_ATTN): ask L2 for the cache rows this block
 * will walk first (the first ATT_PREFETCH_ROWS of
 * its share of positions before the token's own, for its kv head: dk
 * floats of k, dv of v), so that the walk, whose loads come a few rows at
 * a time, finds them there. The query heads of one kv head walk the same
 * rows: each asks for every G-th line only (G heads per kv head), so the
 * group asks once. Rows of earlier steps are complete; a prefill chunk's
 * rows may still be being written (L2 is where global memory is coherent:
 * a prefetch cannot make them stale). Not with a DSA selection, which the
 * step computes. */
#define ATT_PREFETCH_ROWS 512
__device__ __forceinline__ void attn_prefetch(const mk_attn_args &a, int64_t ks, int64_t vs, const float *ka,
                                              const float *va, int64_t pos0, int64_t tp) {
    if (a.sel)
        return;
    const int G = a.n_heads / a.n_kv, h = blockIdx.x % a.n_heads, j = h / G;
    const int64_t T = pos0 + tp + 1;
    int64_t B0, B1;
    att_share(att_first(a, T), T, &B0, &B1);
    if (B1 > T - 1)
        B1 = T - 1; /* the token's own row comes from k_new or this step */
    const int rows = B1 - B0 < ATT_PREFETCH_ROWS ? (int)(B1 - B0) : ATT_PREFETCH_ROWS;
    if (rows <= 0)
        return;
    const bool pv = va != ka || vs != ks || a.dv > a.dk; /* MLA: v is k's latent row */
    const int lk = (a.dk + 31) / 32 + 1, lv = pv ? (a.dv + 31) / 32 + 1 : 0; /* lines per row, one spare: unaligned rows */
    const int per = lk + lv;
    const float *kb = ka + (int64_t)j * a.dk + B0 * ks, *vb = va + (int64_t)j * a.dv + B0 * vs;
    for (int i = (int)threadIdx.x * G + h % G; i < rows * per; i += (int)blockDim.x * G) {
        const int r = i / per, l = i - r * per;
        if (l < lk)
            mkc_prefetch_line(kb + r * ks + (32 * l < a.dk ? 32 * l : a.dk - 1));
        else
            mkc_prefetch_line(vb + r * vs + (32 * (l - lk) < a.dv ? 32 * (l - lk) : a.dv - 1));
    }
}

/* A batched decode step's sequences (mkb_attention_each): token t's caches,
 * position and new rows; the other arguments are the mk_attn_args'. */
#define ATT_SEQS 64
struct att_seqs {
    const float *k[ATT_SEQS], *v[ATT_SEQS], *kn[ATT_SEQS], *vn[ATT_SEQS];
    int64_t pos0[ATT_SEQS];
};

/* The ns shares' states of block row bx (token t, head h) combined
 * as the warps' are in attn_block (the sink in the max and the
 * denominator), written to a.out; by k_attn_merge (a block per row) or by
 * the row's last share to finish (attn_block with tickets). part is read
 * through L2 (__ldcg): other blocks wrote it. Every thread of the block
 * calls it (ns <= ATT_SPLIT_MAX <= blockDim.x). The shares' maxima and sums
 * are loaded at once, a thread each, into shared memory, and each thread's
 * value loads of 8 shares are in flight together: walked one share at a
 * time, as before, the merge was three chains of ns dependent L2 round
 * trips, about half of a decode step's attention kernel at short contexts
 * (ncu: 13.3 us a launch at position ~64 of the 30B shape, the SMs issuing
 * one instruction in 16 cycles). The float operations and their order are
 * the same. */
__device__ __forceinline__ void attn_merge_row(const mk_attn_args &a, const float *__restrict__ part, int ns,
                                               int64_t bx) {
    __shared__ float sm[ATT_SPLIT_MAX], sl[ATT_SPLIT_MAX], sf[ATT_SPLIT_MAX];
    const int h = (int)(bx % a.n_heads);
    const int64_t t = bx / a.n_heads, st = a.dv + 2;
    const float *ps = part + bx * ns * st;
    const float sink = a.sinks ? a.sinks[h] : -INFINITY;
    if ((int)threadIdx.x < ns) {
        sm[threadIdx.x] = __ldcg(ps + threadIdx.x * st);
        sl[threadIdx.x] = __ldcg(ps + threadIdx.x * st + 1);
    }
    __syncthreads();
    float M = sink;
    for (int i = 0; i < ns; i++)
        M = sl[i] > 0.0f && sm[i] > M ? sm[i] : M;
    float L = a.sinks ? expf(sink - M) : 0.0f;
    for (int i = 0; i < ns; i++) {
        const float l = sl[i];
        L += l > 0.0f ? l * expf(sm[i] - M) : 0.0f;
    }
    if ((int)threadIdx.x < ns) /* each share's factor, once */
        sf[threadIdx.x] = expf(sm[threadIdx.x] - M);
    __syncthreads();
    const float inv = 1.0f / L;
    float *o = a.out + (t * a.n_heads + h) * a.dv;
    for (int d = threadIdx.x; d < a.dv; d += blockDim.x) {
        float v = 0.0f;
        for (int i0 = 0; i0 < ns; i0 += 8) {
            float pv[8]; /* every share wrote every value (0 for an empty one) */
#pragma unroll
            for (int b = 0; b < 8; b++)
                pv[b] = i0 + b < ns ? __ldcg(ps + (i0 + b) * st + 2 + d) : 0.0f;
#pragma unroll
            for (int b = 0; b < 8; b++)
                if (i0 + b < ns && sl[i0 + b] > 0.0f)
                    v = fmaf(pv[b], sf[i0 + b], v);
        }
        o[d] = v * inv;
    }
}

/* DVL value dims per lane (dv <= 32 DVL); the value rows of UB positions
 * are loaded before any is accumulated (UB * DVL = 64 registers), so a
 * 32-row step costs 32 / UB load round trips, not 32. Block (t * n_heads
 * + h, share) of a call: token t's query head h against caches k / v
 * (a.k / a.v or the sequence's), positions 0 .. pos0 + tp (tp: t within a
 * chunk, 0 for a sequence of a batched step), the new rows kn / vn (or
 * NULL) written into row pos0 by the token's head-0 first share. With
 * QK (one token with its new rows, packed kv heads, unsplit or its
 * shares merged by tickets) q and the new k row are the raw projections,
 * normed and rotated here (mkc_qk_head: the query head by each block, a key
 * head by the blocks of its group that walk the new row; shared memory for
 * dk more floats) and written back normed and rotated once no block reads
 * them raw (q by the head's merging or only block, k by its group's last
 * block: qk.kt), as k_qk_norm_rope would have left them. */
template <int DVL, bool QK = false>
__device__ __forceinline__ void attn_block(const mk_attn_args &a, int64_t ks, int64_t vs, bool vec, float *part,
                                           int64_t t, const float *ka, const float *va, int64_t pos0, int64_t tp,
                                           const float *kn_row, const float *vn_row, unsigned *tickets,
                                           const mkc_qkfold &qk) {
    /* value rows loaded before any is accumulated: 64 registers (two rounds per 32-row step at
     * dv <= 128, not four; the accumulation's order is the rows', whatever UB) */
    constexpr int UB = DVL >= 32 ? 2 : 64 / DVL;
    MKC_DYN_SMEM(float, sm);
    float *q = sm;                     /* dk */
    float *pm = q + a.dk;              /* ATT_WARPS maxima */
    float *pl = pm + ATT_WARPS;        /* ATT_WARPS sums */
    float *pacc = pl + ATT_WARPS;      /* ATT_WARPS x dv */
    float *kq = pacc + ATT_WARPS * a.dv; /* QK: a key head normed and rotated (dk) */
    __shared__ float red[32];
    const int h = blockIdx.x % a.n_heads, j = h / (a.n_heads / a.n_kv);
    const int lane = threadIdx.x & 31, wp = threadIdx.x >> 5;
    const float *qg = a.q + (t * a.n_heads + h) * a.dk;
    if constexpr (QK) {
        mkc_qk_head(qk, qg, qk.qg, q, a.dk, red);
    } else {
        for (int i = threadIdx.x; i < a.dk; i += blockDim.x)
            q[i] = qg[i];
        __syncthreads();
    }
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
    const int64_t S0 = sel ? 0 : att_first(a, T);
    const float *kn = kn_row ? kn_row + (int64_t)j * a.dk : NULL;
    const float *vn = kn_row ? vn_row + (int64_t)j * a.dv : NULL;
    int64_t B0, B1;
    att_share(S0, T, &B0, &B1);
    if (kn_row && h == 0 && blockIdx.y == 0) {
        if constexpr (!QK) /* (folded: each key head by its group's first head, below) */
            for (int64_t i = threadIdx.x; i < ks; i += blockDim.x)
                ((float *)ka)[pos0 * ks + i] = kn_row[i];
        if (vn_row != kn_row || va != ka)
            for (int64_t i = threadIdx.x; i < vs; i += blockDim.x)
                ((float *)va)[pos0 * vs + i] = vn_row[i];
    }
    if constexpr (QK) {
        /* the share that walks the new row: its key head normed and rotated, into the cache by the
         * group's first head; the group's last block to have read the raw row writes the result back
         * (qk_norm_rope's effect on k), after which none reads it (a per-kv-head ticket) */
        if (kn && B0 <= T - 1 && T - 1 < B1) {
            __shared__ bool lastg;
            const int G = a.n_heads / a.n_kv;
            mkc_qk_head(qk, kn, qk.kg, kq, a.dk, red);
            if (h % G == 0)
                for (int i = threadIdx.x; i < a.dk; i += blockDim.x)
                    ((float *)ka)[pos0 * ks + (int64_t)j * a.dk + i] = kq[i];
            if (threadIdx.x == 0)
                lastg = atomicAdd(qk.kt + j, 1u) == (unsigned)G - 1;
            __syncthreads();
            if (lastg) {
                for (int i = threadIdx.x; i < a.dk; i += blockDim.x)
                    ((float *)kn)[i] = kq[i];
                if (threadIdx.x == 0)
                    qk.kt[j] = 0u; /* ready for the next launch (stream order) */
            }
            kn = kq;
        }
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
        if (!tickets)
            return; /* k_attn_merge combines the shares */
        /* the row's last share to finish combines them (no merge launch): each share publishes its
         * state before it takes a ticket; the last one reads them all through L2 */
        if (!mkc_last_in(tickets + blockIdx.x, gridDim.y))
            return;
        attn_merge_row(a, part, (int)gridDim.y, blockIdx.x);
        if (threadIdx.x == 0)
            tickets[blockIdx.x] = 0u; /* ready for the next launch (stream order) */
        if constexpr (QK) /* every share of the head has read the raw q: qk_norm_rope's effect on it */
            for (int i = threadIdx.x; i < a.dk; i += blockDim.x)
                ((float *)qg)[i] = q[i];
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
    if constexpr (QK) /* the head's one block: qk_norm_rope's effect on q */
        for (int i = threadIdx.x; i < a.dk; i += blockDim.x)
            ((float *)qg)[i] = q[i];
}

/* QK: f.on (the fold's instance; the plain one is compiled without it) */
template <int DVL, bool QK = false>
__global__ void __launch_bounds__(ATT_WARPS * 32)
    k_attn(mk_attn_args a, int64_t ks, int64_t vs, bool vec, float *part, int pf = 0, unsigned *tickets = nullptr,
           mkc_qkfold f = mkc_qkfold()) {
    const int64_t t = blockIdx.x / a.n_heads;
    /* a replayed decode step: the position from device memory (uploaded
     * before the step's first kernel, so it may be read before the wait),
     * this token's rows from k_new / v_new (the cache row is written by
     * block 0 for later steps and read by none here) */
    const int64_t pos0 = a.pos_dev ? *a.pos_dev : a.pos0;
    if (pf)
        attn_prefetch(a, ks, vs, a.k, a.v, pos0, t);
    mkc_pdl_enter(); /* launched under PDL in a decode step (cuda_attn.cu) */
    attn_block<DVL, QK>(a, ks, vs, vec, part, t, a.k, a.v, pos0, t, a.k_new, a.v_new, tickets, f);
}

/* A batched decode step: token t is sequence t's one token (s: its caches,
 * position and new rows), each block as k_attn's for that sequence alone */
template <int DVL>
__global__ void __launch_bounds__(ATT_WARPS * 32)
    k_attn_each(mk_attn_args a, const __grid_constant__ att_seqs s, int64_t ks, int64_t vs, bool vec, float *part,
                int pf = 0, unsigned *tickets = nullptr) {
    const int64_t t = blockIdx.x / a.n_heads;
    if (pf)
        attn_prefetch(a, ks, vs, s.k[t], s.v[t], s.pos0[t], 0);
    mkc_pdl_enter();
    attn_block<DVL>(a, ks, vs, vec, part, t, s.k[t], s.v[t], s.pos0[t], 0, s.kn[t], s.vn[t], tickets, mkc_qkfold());
}

/* One block per (token, head): attn_merge_row (when the shares did not
 * merge themselves: launches without tickets). */
__global__ void k_attn_merge(mk_attn_args a, const float *__restrict__ part, int ns) {
    mkc_pdl_enter();
    attn_merge_row(a, part, ns, blockIdx.x);
}

#endif
