/* The routing of one token by one block, as the fused MoE step's router
 * kernel and the persistent stack run it (cuda_moe.cu). A header of its
 * own so that a host emulation (tests/cli/cuda_emu_route.sh: a fiber per
 * CUDA thread) runs this very code against the CPU engine's routing.
 * The includer provides <stdint.h>, <math.h>, mk_cuda.h (the scoring
 * names), __shfl_xor_sync, __ldcg and mkc_route_groups (cuda_topk.cuh). */
#ifndef MK_CUDA_ROUTE_BLOCK_CUH
#define MK_CUDA_ROUTE_BLOCK_CUH

#define MOE_MAX_E 1024
#define MOE_MAX_K 32
#define MOE_MAX_G 64 /* groups of the group-limited routing */

/* ---- routing (one block) ------------------------------------------------ */

/* Four floats of a 16-byte aligned shared array in one load (the
 * emulation has no float4 of its own here) */
struct alignas(16) mkc_f4 {
    float x, y, z, w;
};

/* The block's max or sum of v (every thread's; red: 32 floats of shared
 * memory, 16-byte aligned): each warp's butterfly, then the warp totals
 * one after another in warp order. The totals are loaded at once, four a
 * load, before the serial chain, so it waits for one load, not one per
 * warp. */
__device__ __forceinline__ float block_reduce(float v, bool is_max, float *red) {
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float t = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, t) : v + t;
    }
    __syncthreads(); /* red may still be read from a previous call */
    if (lane == 0)
        red[wid] = v;
    __syncthreads();
    float t[32];
#pragma unroll
    for (int q = 0; q < 8; q++) {
        mkc_f4 u = {0.0f, 0.0f, 0.0f, 0.0f};
        if (4 * q < nw)
            u = ((const mkc_f4 *)red)[q];
        t[4 * q] = u.x, t[4 * q + 1] = u.y, t[4 * q + 2] = u.z, t[4 * q + 3] = u.w;
    }
    float r = t[0];
#pragma unroll
    for (int i = 1; i < 32; i++) {
        if (i >= nw)
            break;
        r = is_max ? fmaxf(r, t[i]) : r + t[i];
    }
    return r;
}

/* The routing of one token from logits[E] in device memory (written by
 * other blocks: read through L2), by one block: idx[k], w[k]. Sigmoid
 * scoring ranks s + bias within the kept groups when bias or G > 1, and
 * weighs with the unbiased s recomputed from the logit (the same
 * expression, so the same bits as the plain sigmoid). */
__device__ void route_block(const float *logits, int E, int k, int score, int norm, float scale,
                            const float *bias, int G, int TG, int32_t *idx, float *wout,
                            const int32_t *slot_of = nullptr, int32_t *loc = nullptr, int32_t *counts = nullptr) {
    alignas(16) __shared__ float p[MOE_MAX_E];
    alignas(16) __shared__ float red[32];
    __shared__ float sw[MOE_MAX_K];
    __shared__ int32_t si[MOE_MAX_K];
    __shared__ float gs[MOE_MAX_G];
    __shared__ int32_t gk[MOE_MAX_G];
    const int nq = (E + 3) >> 2; /* p in quads for the ranks, padded with NaN (which no comparison counts) */
    for (int i = threadIdx.x; i < 4 * nq; i += blockDim.x)
        p[i] = i < E ? __ldcg(logits + i) : NAN; /* written by other blocks: read through L2 */
    if (threadIdx.x < k) { /* every index set even when NaN scores (which rank 0, as every
                                comparison with them is false) leave ranks unfilled; the output
                                is then NaN and the engine's non-finite check reports it */
        si[threadIdx.x] = threadIdx.x;
        sw[threadIdx.x] = 0.0f;
    }
    /* no barrier: each thread scores the p[i] it loaded; the scoring's own
     * barriers (block_reduce's, the one after it) order si, sw and p */
    if (score == MK_CUDA_SCORE_SOFTMAX) {
        float m = -INFINITY;
        for (int i = threadIdx.x; i < E; i += blockDim.x)
            m = fmaxf(m, p[i]);
        m = block_reduce(m, true, red);
        float s = 0.0f;
        for (int i = threadIdx.x; i < E; i += blockDim.x) {
            p[i] = expf(p[i] - m);
            s += p[i];
        }
        s = block_reduce(s, false, red);
        const float inv = 1.0f / s;
        for (int i = threadIdx.x; i < E; i += blockDim.x)
            p[i] *= inv;
    } else if (bias) {
        for (int i = threadIdx.x; i < E; i += blockDim.x)
            p[i] = 1.0f / (1.0f + expf(-p[i])) + __ldg(bias + i);
    } else {
        for (int i = threadIdx.x; i < E; i += blockDim.x)
            p[i] = 1.0f / (1.0f + expf(-p[i]));
    }
    __syncthreads();
    if (score == MK_CUDA_SCORE_SIGMOID && G > 1)
        mkc_route_groups(p, E, G, TG, gs, gk);
    /* The rank of score i: the scores above it, and those equal to it at a
     * lower index (the CPU's order: lowest index first on ties). S threads
     * (consecutive lanes; a power of two, at most 32, S E <= blockDim)
     * count it, each every S-th quad of p: a block of 256 threads ranks
     * Qwen3's 128 experts with all its warps, 2 threads a score. The counts
     * are integers, so the rank is the same whatever the split. */
    int lS = 0; /* log2 S */
    while (lS < 5 && (2 << lS) * E <= (int)blockDim.x)
        lS++;
    const int S = 1 << lS, per = (int)blockDim.x >> lS, part = (int)threadIdx.x & (S - 1);
    for (int i0 = 0; i0 < E; i0 += per) { /* the same trip count in every thread: the shuffles below */
        const int i = i0 + ((int)threadIdx.x >> lS);
        const bool live = i < E;
        const float v = live ? p[i] : 0.0f;
        /* the unbiased sigmoid's logit, loaded now: the load's wait overlaps the count */
        const float lg = live && part == 0 && score == MK_CUDA_SCORE_SIGMOID ? __ldcg(logits + i) : 0.0f;
        int rank = 0;
        if (live) {
#pragma unroll 4
            for (int q = part; q < nq; q += S) { /* unrolled: the shared loads in flight together */
                const mkc_f4 u = ((const mkc_f4 *)p)[q];
                const int j = 4 * q;
                rank += (u.x > v) || (u.x == v && j < i);
                rank += (u.y > v) || (u.y == v && j + 1 < i);
                rank += (u.z > v) || (u.z == v && j + 2 < i);
                rank += (u.w > v) || (u.w == v && j + 3 < i);
            }
        }
        for (int o = 1; o < S; o <<= 1)
            rank += __shfl_xor_sync(0xffffffffu, rank, o);
        if (live && part == 0 && rank < k) {
            si[rank] = i;
            sw[rank] = score == MK_CUDA_SCORE_SIGMOID ? 1.0f / (1.0f + expf(-lg)) : v;
        }
    }
    __syncthreads();
    /* A thread per choice: the VRAM cache (mk_cuda_moe.slot_of: where the
     * gate/up and down kernels read each chosen expert) and its routing
     * count (atomic: a batched step's tokens rank in blocks of their own,
     * at once; the host changes both only between steps, in stream order),
     * and the choice's weight: each of these threads sums the k weights
     * itself in rank order (the CPU's, as one thread did), then divides
     * its own. */
    if (threadIdx.x < k) {
        const int j = threadIdx.x;
        const int32_t e = si[j];
        if (slot_of)
            loc[j] = __ldcg(slot_of + e);
        if (counts)
            atomicAdd(counts + e, 1);
        float sum = 0.0f;
        for (int q = 0; q < k; q++)
            sum += sw[q];
        if (score == MK_CUDA_SCORE_SIGMOID)
            sum += 1e-20f;
        const float v = norm ? sw[j] / sum : sw[j];
        idx[j] = e;
        wout[j] = v * scale;
    }
}

#endif
