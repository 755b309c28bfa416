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

__device__ float block_reduce(float v, bool is_max, float *red) {
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
    float r = red[0];
    for (int i = 1; i < nw; i++)
        r = is_max ? fmaxf(r, red[i]) : r + red[i];
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
    __shared__ float p[MOE_MAX_E];
    __shared__ float red[32];
    __shared__ float sw[MOE_MAX_K];
    __shared__ int32_t si[MOE_MAX_K];
    __shared__ float gs[MOE_MAX_G];
    __shared__ int32_t gk[MOE_MAX_G];
    for (int i = threadIdx.x; i < E; i += blockDim.x)
        p[i] = __ldcg(logits + i); /* written by other blocks: read through L2 */
    if (threadIdx.x < k) { /* every index set even when NaN scores (which rank 0, as every
                                comparison with them is false) leave ranks unfilled; the output
                                is then NaN and the engine's non-finite check reports it */
        si[threadIdx.x] = threadIdx.x;
        sw[threadIdx.x] = 0.0f;
    }
    __syncthreads();
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
    for (int i = threadIdx.x; i < E; i += blockDim.x) {
        const float v = p[i];
        int rank = 0;
#pragma unroll 8
        for (int j = 0; j < E; j++) { /* unrolled: the shared loads in flight together */
            const float u = p[j];
            rank += (u > v) || (u == v && j < i);
        }
        if (rank < k) {
            si[rank] = i;
            sw[rank] = score == MK_CUDA_SCORE_SIGMOID ? 1.0f / (1.0f + expf(-__ldcg(logits + i))) : v;
        }
    }
    __syncthreads();
    /* the VRAM cache (mk_cuda_moe.slot_of): where the gate/up and down
     * kernels read each chosen expert, and its routing count, a thread per
     * choice (atomic: a batched step's tokens rank in blocks of their
     * own, at once); the host changes both only between steps, in stream
     * order */
    if (threadIdx.x < k) {
        const int32_t e = si[threadIdx.x];
        if (slot_of)
            loc[threadIdx.x] = __ldcg(slot_of + e);
        if (counts)
            atomicAdd(counts + e, 1);
    }
    if (threadIdx.x == 0) {
        float sum = 0.0f;
        for (int j = 0; j < k; j++)
            sum += sw[j];
        if (score == MK_CUDA_SCORE_SIGMOID)
            sum += 1e-20f;
        for (int j = 0; j < k; j++) {
            float v = norm ? sw[j] / sum : sw[j];
            idx[j] = si[j];
            wout[j] = v * scale;
        }
    }
}

#endif
