/* One-token (decode) attention grouped by kv head (k_attn_gqa;
 * mk_cuda_set_attn_gqa, cuda_attn.cu decides where it runs).
 *
 * k_attn (cuda_attn_kernel.cuh) runs a block per query head and share of
 * the cache: the G query heads of a kv head each walk the same key and
 * value rows, a lane computing one row's whole score from global memory,
 * so a step is chains of dependent loads (four L2/DRAM round trips per 32
 * rows) read G times over. Here a block takes one kv head and one share of
 * the positions for all G of its query heads:
 *
 * - the share's cache rows, 32 at a time, are copied into shared memory
 *   with cp.async, the first AGQ_BUF chunks before the wait for the
 *   previous kernel (rows of earlier steps do not depend on it: under
 *   programmatic dependent launch their latency overlaps the q/k/v
 *   products and norms); the token's own row (position pos0) comes after
 *   the wait, from k_new / v_new (or the cache when the step wrote it
 *   there itself);
 * - warp w takes query heads w, w + 8 (HPW of them): a lane scores one
 *   row of the chunk against the head's q (both in shared memory: each key
 *   row read once from memory for the G heads), the warp keeps an online
 *   softmax as k_attn does, and accumulates the value rows (lane d: dims
 *   d, d + 32, ...);
 * - each share writes its state (max, sum, weighted values) per head to
 *   the backend's scratch; the kv head's last share to finish (a ticket)
 *   merges them, a warp per head, with the sink in the max and the
 *   denominator.
 *
 * The shares: gridDim.y per kv head, whole 32-row steps of the positions
 * (att_share), so a replayed step splits its own length. k_attn_gqa_each
 * runs a batched step's sequences (gridDim.z), each as k_attn_gqa alone. The same
 * function as k_attn in another float32 order (within the same bounds of
 * the double softmax in the emulation). A header of its own so that the
 * host emulation (tests/emu/attn_emu.cpp) runs this very code. */
#ifndef MK_CUDA_ATTN_GQA_CUH
#define MK_CUDA_ATTN_GQA_CUH

#include "cuda/cuda_attn_kernel.cuh"

#define AGQ_WARPS 8
#define AGQ_ROWS 32   /* cache rows per chunk: a lane's row of the scores */
#define AGQ_BUF 2     /* chunks in flight (the first ones before the wait) */
#define AGQ_SHARES 32 /* shares per kv head (gridDim.y; at most 32: a merge lane each) */
#define AGQ_MAX_G 16  /* query heads per kv head: two per warp at most */
#define AGQ_MAX_DIM 256

/* Host and device: floats of a staged key / value row (4 of padding: a
 * quarter-warp's 16-byte loads of 8 rows at one column fall in distinct
 * banks when the row is a multiple of 32 floats) */
__host__ __device__ __forceinline__ int agq_ld(int d) {
    return d + 4;
}

/* Host: the dynamic shared memory of a launch (AGQ_BUF chunks of key and
 * value rows, then the G query heads; qk: the q/k fold's key head after
 * them) */
static inline size_t agq_smem(int G, int dk, int dv, bool qk = false) {
    return sizeof(float) *
           ((size_t)AGQ_BUF * AGQ_ROWS * (size_t)(agq_ld(dk) + agq_ld(dv)) + (size_t)(G + (qk ? 1 : 0)) * dk);
}

/* Host: whether k_attn_gqa takes a one-token call (k and v row starts
 * 16-byte aligned for cp.async; DSA selections, MLA's latent cache and
 * wider groups or heads keep k_attn; the launch also needs agq_smem
 * granted) */
static inline bool agq_takes(const mk_attn_args *a, int64_t ks, int64_t vs) {
    const int G = a->n_kv > 0 ? a->n_heads / a->n_kv : 0;
    return a->n == 1 && !a->sel && a->k != a->v && G >= 1 && G <= AGQ_MAX_G && a->n_heads % a->n_kv == 0 &&
           a->dk % 4 == 0 && a->dv % 4 == 0 && a->dk <= AGQ_MAX_DIM && a->dv <= AGQ_MAX_DIM && ks % 4 == 0 &&
           vs % 4 == 0 && (uintptr_t)a->k % 16 == 0 && (uintptr_t)a->v % 16 == 0 &&
           /* the new rows copied whole into the cache: packed kv heads (as k_attn assumes) */
           (!a->k_new || (ks == (int64_t)a->n_kv * a->dk && vs == (int64_t)a->n_kv * a->dv));
}

/* DVL value dims per lane (dv <= 32 DVL), HPW query heads per warp (G <= 8 HPW): the body of
 * both launches below (block (kv head, share)).
 * QK (one token with its new rows, packed kv heads; mkb_attention's fold of
 * a held-back qk_norm_rope): q and the new k row are the raw projections.
 * Every block norms and rotates its G query heads in shared memory, a warp
 * a head (mkc_qk_head_warp, bitwise k_qk_norm_rope), and its key head into
 * kq, with their weights and rotary rows loaded before the wait; the
 * token's own row is walked from kq, the share that starts the kv head
 * (blockIdx.y 0) writes kq into the cache row pos0, and the merging block
 * (the kv head's last share: no other block of it reads them raw any more)
 * writes q's heads and kq back, as k_qk_norm_rope would have left them. */
template <int DVL, int HPW, bool QK = false>
__device__ __forceinline__ void attn_gqa_run(const mk_attn_args &a, int64_t ks, int64_t vs, float *part,
                                             unsigned *tickets, const mkc_qkfold &qk = mkc_qkfold()) {
    MKC_DYN_SMEM(float4, agq_sm4);
    float *const sm = (float *)agq_sm4;
    const int G = a.n_heads / a.n_kv, j = (int)blockIdx.x, lane = threadIdx.x & 31, wp = threadIdx.x >> 5;
    const int dk = a.dk, dv = a.dv, lk = agq_ld(dk), lv = agq_ld(dv);
    const int64_t bsz = (int64_t)AGQ_ROWS * (lk + lv); /* floats of a chunk's buffer */
    float *const qs = sm + AGQ_BUF * bsz;
    float *const kq = qs + (int64_t)G * dk; /* QK: the key head, normed and rotated */
    /* a replayed step's position from device memory (uploaded before the step's first kernel) */
    const int64_t pos0 = a.pos_dev ? *a.pos_dev : a.pos0, T = pos0 + 1;
    int64_t B0, B1;
    att_share(att_first(a, T), T, &B0, &B1);
    const int nch = B1 > B0 ? (int)((B1 - B0 + AGQ_ROWS - 1) / AGQ_ROWS) : 0;
    const float *kb = a.k + (int64_t)j * dk, *vb = a.v + (int64_t)j * dv;
    /* chunk c's rows below lim into buffer c % AGQ_BUF (the others zero, overwritten or unread) */
    auto issue = [&](int c, int64_t lim) {
        if (c >= nch)
            return;
        float *kd = sm + (c % AGQ_BUF) * bsz, *vd = kd + AGQ_ROWS * lk;
        const int64_t s0 = B0 + (int64_t)c * AGQ_ROWS;
        const int pk = dk >> 2, per = pk + (dv >> 2);
        for (int i = (int)threadIdx.x; i < AGQ_ROWS * per; i += (int)blockDim.x) {
            const int r = i / per, p = i - r * per;
            const int64_t s = s0 + r;
            const bool ok = s < B1 && s < lim;
            const int64_t sr = ok ? s : 0;
            if (p < pk)
                mkc_cp_async<16>(kd + r * lk + 4 * p, kb + sr * ks + 4 * p, ok);
            else
                mkc_cp_async<16>(vd + r * lv + 4 * (p - pk), vb + sr * vs + 4 * (p - pk), ok);
        }
    };
    /* rows of earlier steps: before the wait (the token's own row, pos0, is not in the cache yet or
     * was written by a kernel of this step) */
#pragma unroll
    for (int c = 0; c < AGQ_BUF; c++) {
        issue(c, pos0);
        mkc_cp_commit(); /* a group per chunk, empty or not: the wait counts stay uniform */
    }
    mkc_qkw qw, kw; /* QK: the lane's norm weights and rotary rows */
    if constexpr (QK) {
        mkc_qkw_load(qk.qg, qk, dk, lane, qw);
        mkc_qkw_load(qk.kg, qk, dk, lane, kw);
    }
    mkc_pdl_enter(); /* launched under PDL in a decode step (cuda_attn.cu) */
    const float *kn = a.k_new ? a.k_new + (int64_t)j * dk : NULL;
    const float *vn = a.k_new ? a.v_new + (int64_t)j * dv : NULL;
    /* the token's new rows into the cache for later steps, by one block (none of this launch reads
     * cache row pos0: its copies stop below it, the token's row comes from k_new / v_new); QK: the
     * values only (each key head normed, below) */
    if (a.k_new && j == 0 && blockIdx.y == 0) {
        if constexpr (!QK)
            for (int64_t i = threadIdx.x; i < ks; i += blockDim.x)
                ((float *)a.k)[pos0 * ks + i] = a.k_new[i];
        for (int64_t i = threadIdx.x; i < vs; i += blockDim.x)
            ((float *)a.v)[pos0 * vs + i] = a.v_new[i];
    }
    for (int i = (int)threadIdx.x; i < G * dk; i += (int)blockDim.x)
        qs[i] = a.q[(int64_t)j * G * dk + i];
    if constexpr (QK) {
        for (int i = (int)threadIdx.x; i < dk; i += (int)blockDim.x)
            kq[i] = kn[i];
        __syncthreads();
        const bool norm = qk.qg != NULL;
        for (int hl = wp; hl < G; hl += AGQ_WARPS) /* warp-uniform */
            mkc_qk_head_warp(qs + hl * dk, dk, qk.rot, qk.eps, norm, qw, lane);
        if (wp == (G % AGQ_WARPS)) /* a warp with one head fewer when G is not a multiple of 8 */
            mkc_qk_head_warp(kq, dk, qk.rot, qk.eps, norm, kw, lane);
        __syncthreads();
        if (blockIdx.y == 0) /* the key head's row in the cache, normed and rotated */
            for (int i = (int)threadIdx.x; i < dk; i += (int)blockDim.x)
                ((float *)a.k)[pos0 * ks + (int64_t)j * dk + i] = kq[i];
        kn = kq;
    }
    const int64_t lim = a.k_new ? pos0 : T; /* the later chunks' copies */
    float m[HPW], l[HPW], acc[HPW][DVL];
#pragma unroll
    for (int hh = 0; hh < HPW; hh++) {
        m[hh] = -INFINITY;
        l[hh] = 0.0f;
#pragma unroll
        for (int d = 0; d < DVL; d++)
            acc[hh][d] = 0.0f;
    }
    const bool vec = true; /* dk % 4 == 0 and 16-byte rows: att_dot's float4 loads */
    for (int c = 0; c < nch; c++) {
        mkc_cp_wait<AGQ_BUF - 1>(); /* this thread's copies of chunk c are in */
        __syncthreads();             /* everyone's (and q, the first time) */
        float *kd = sm + (c % AGQ_BUF) * bsz, *vd = kd + AGQ_ROWS * lk;
        const int64_t s0 = B0 + (int64_t)c * AGQ_ROWS;
        const int cnt = B1 - s0 < AGQ_ROWS ? (int)(B1 - s0) : AGQ_ROWS;
        if (T - 1 >= s0 && T - 1 < s0 + cnt) { /* the token's own row (block-uniform) */
            const float *kr = kn ? kn : kb + pos0 * ks, *vr = kn ? vn : vb + pos0 * vs;
            const int r = (int)(T - 1 - s0);
            for (int i = (int)threadIdx.x; i < dk + dv; i += (int)blockDim.x) {
                if (i < dk)
                    kd[r * lk + i] = kr[i];
                else
                    vd[r * lv + i - dk] = vr[i - dk];
            }
            __syncthreads();
        }
#pragma unroll
        for (int hh = 0; hh < HPW; hh++) {
            const int hl = wp + AGQ_WARPS * hh; /* warp-uniform */
            if (hl >= G)
                break;
            float x = -INFINITY;
            if (lane < cnt)
                x = att_dot(qs + hl * dk, kd + lane * lk, dk, vec) * a.scale;
            const float mn = fmaxf(m[hh], att_warp_max(x)); /* finite: lane 0's row exists */
            const float corr = expf(m[hh] - mn), p = lane < cnt ? expf(x - mn) : 0.0f;
            l[hh] = l[hh] * corr + mkc_warp_sum(p);
            m[hh] = mn;
#pragma unroll
            for (int d = 0; d < DVL; d++)
                acc[hh][d] *= corr;
            for (int u = 0; u < cnt; u++) { /* warp-uniform */
                const float pu = __shfl_sync(0xffffffffu, p, u);
                const float *vr = vd + u * lv;
#pragma unroll
                for (int d = 0; d < DVL; d++) {
                    const int dd = lane + 32 * d;
                    if (dd < dv)
                        acc[hh][d] = fmaf(pu, vr[dd], acc[hh][d]);
                }
            }
        }
        __syncthreads(); /* buffer c % AGQ_BUF is read: the copies of chunk c + AGQ_BUF may land there */
        issue(c + AGQ_BUF, lim);
        mkc_cp_commit();
    }
    mkc_cp_wait<0>(); /* no copy outlives the block (the trailing groups are empty) */
    /* this share's state per head, unnormalised (an empty share: -inf, 0 and zeros) */
    const int ns = (int)gridDim.y;
    const int64_t st = dv + 2;
#pragma unroll
    for (int hh = 0; hh < HPW; hh++) {
        const int hl = wp + AGQ_WARPS * hh;
        if (hl >= G)
            break;
        float *ps = part + (((int64_t)j * G + hl) * ns + blockIdx.y) * st;
        if (lane == 0) {
            ps[0] = l[hh] > 0.0f ? m[hh] : -INFINITY;
            ps[1] = l[hh];
        }
#pragma unroll
        for (int d = 0; d < DVL; d++) {
            const int dd = lane + 32 * d;
            if (dd < dv)
                ps[2 + dd] = acc[hh][d];
        }
    }
    /* the kv head's last share to finish merges its heads' shares, a warp a head */
    if (!mkc_last_in(tickets + j, (unsigned)ns))
        return;
#pragma unroll
    for (int hh = 0; hh < HPW; hh++) {
        const int hl = wp + AGQ_WARPS * hh;
        if (hl >= G)
            break;
        const int h = j * G + hl;
        const float *ph = part + (int64_t)h * ns * st;
        const float mi = lane < ns ? __ldcg(ph + lane * st) : -INFINITY;
        const float li = lane < ns ? __ldcg(ph + lane * st + 1) : 0.0f;
        const float sink = a.sinks ? a.sinks[h] : -INFINITY;
        const float M = fmaxf(att_warp_max(li > 0.0f ? mi : -INFINITY), sink);
        const float fi = li > 0.0f ? expf(mi - M) : 0.0f;
        const float L = mkc_warp_sum(li * fi) + (a.sinks ? expf(sink - M) : 0.0f);
        const float inv = 1.0f / L;
        /* the shares with rows are a prefix (att_share): past them every factor is 0, so the values of
         * the empty ones are not read (at short contexts most of the 32 are empty: fewer L2 round trips) */
        const int nlast = (int)att_warp_max(li > 0.0f ? (float)(lane + 1) : 0.0f);
        float v[DVL];
#pragma unroll
        for (int d = 0; d < DVL; d++)
            v[d] = 0.0f;
        for (int i0 = 0; i0 < nlast; i0 += 8) { /* 8 shares' values in flight */
            float pv[8][DVL];
#pragma unroll
            for (int b = 0; b < 8; b++)
#pragma unroll
                for (int d = 0; d < DVL; d++) {
                    const int dd = lane + 32 * d;
                    pv[b][d] = i0 + b < nlast && dd < dv ? __ldcg(ph + (i0 + b) * st + 2 + dd) : 0.0f;
                }
#pragma unroll
            for (int b = 0; b < 8; b++) {
                const float f = __shfl_sync(0xffffffffu, fi, (i0 + b) & 31); /* 0 past ns */
#pragma unroll
                for (int d = 0; d < DVL; d++)
                    v[d] = fmaf(pv[b][d], f, v[d]);
            }
        }
        float *o = a.out + (int64_t)h * dv;
#pragma unroll
        for (int d = 0; d < DVL; d++) {
            const int dd = lane + 32 * d;
            if (dd < dv)
                o[dd] = v[d] * inv;
        }
    }
    if constexpr (QK) { /* every share of the kv head has read q and the new k row raw: written back */
        for (int i = (int)threadIdx.x; i < G * dk; i += (int)blockDim.x)
            ((float *)a.q)[(int64_t)j * G * dk + i] = qs[i];
        for (int i = (int)threadIdx.x; i < dk; i += (int)blockDim.x)
            ((float *)a.k_new)[(int64_t)j * dk + i] = kq[i];
    }
    if (threadIdx.x == 0)
        tickets[j] = 0u; /* ready for the next launch (stream order) */
}

/* QK: the q/k norms and RoPE folded in (qk; attn_gqa_run) */
template <int DVL, int HPW, bool QK = false>
__global__ void __launch_bounds__(AGQ_WARPS * 32)
    k_attn_gqa(mk_attn_args a, int64_t ks, int64_t vs, float *part, unsigned *tickets,
               mkc_qkfold qk = mkc_qkfold()) {
    attn_gqa_run<DVL, HPW, QK>(a, ks, vs, part, tickets, qk);
}

/* A batched decode step's attention (cuda_attn.cu's attention_each while
 * the grouped attention is on): sequence blockIdx.z of s, with its own
 * caches, new rows and position, its q and output rows the z-th of the
 * batch, its shares' scratch and tickets the z-th of the launch's; each
 * sequence's blocks are then exactly k_attn_gqa's for that sequence alone
 * (the batch contract: each row bitwise its one-token step's). */
template <int DVL, int HPW>
__global__ void __launch_bounds__(AGQ_WARPS * 32)
    k_attn_gqa_each(mk_attn_args a, const __grid_constant__ att_seqs s, int64_t ks, int64_t vs, float *part,
                    unsigned *tickets) {
    const int z = (int)blockIdx.z;
    a.k = s.k[z];
    a.v = s.v[z];
    a.k_new = s.kn[z];
    a.v_new = s.vn[z];
    a.pos0 = s.pos0[z];
    a.q += (int64_t)z * a.n_heads * a.dk;
    a.out += (int64_t)z * a.n_heads * a.dv;
    attn_gqa_run<DVL, HPW>(a, ks, vs, part + (int64_t)z * a.n_heads * gridDim.y * (a.dv + 2),
                           tickets + (int64_t)z * a.n_kv);
}

#endif
