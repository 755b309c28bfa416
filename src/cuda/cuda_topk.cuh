/* The routing's small serial steps (the CPU engine's order), shared by the
 * fused MoE step's routing (cuda_route_block.cuh) and the route slot
 * (cuda_route.cu). Device code only, no intrinsics but __syncthreads and
 * threadIdx / blockDim, so a host emulation (tests/emu/) runs it as it is.
 * The includer provides <stdint.h>. */
#ifndef MK_CUDA_TOPK_CUH
#define MK_CUDA_TOPK_CUH

/* The CPU engine's serial top-k of a small array s[0..n) by one thread:
 * k rounds of the first largest not yet taken (lowest index first on
 * ties), as backend_cpu.c's topk. The routing's group steps use it. */
__device__ __forceinline__ void mkc_topk_serial(const float *s, int n, int k, int32_t *idx) {
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int i = 0; i < n; i++) {
            bool tk = false;
            for (int q = 0; q < j && !tk; q++)
                tk = idx[q] == i;
            if (!tk && (best < 0 || s[i] > s[best]))
                best = i;
        }
        idx[j] = best;
    }
}

/* DeepSeek-V3's group limit on choice scores c[0..E) in shared memory, by
 * one block: a group's score is the sum of its two best c (the CPU's
 * top-2, lowest index first on ties), the TG best groups are kept (the
 * same top-k over the group scores, by one thread), the other groups' c
 * become 0. gs[G] and keep[TG] are shared scratch; E / G >= 2 (the config
 * check's rule). Ends with a barrier. Used by the fused step's routing and
 * the route slot's kernel. */
__device__ __forceinline__ void mkc_route_groups(float *c, int E, int G, int TG, float *gs, int32_t *keep) {
    const int per = E / G;
    for (int g = threadIdx.x; g < G; g += blockDim.x) {
        int32_t b[2];
        mkc_topk_serial(c + g * per, per, 2, b);
        gs[g] = c[g * per + b[0]] + c[g * per + b[1]];
    }
    __syncthreads();
    if (threadIdx.x == 0)
        mkc_topk_serial(gs, G, TG, keep);
    __syncthreads();
    for (int i = threadIdx.x; i < E; i += blockDim.x) {
        const int g = i / per;
        bool kept = false;
        for (int q = 0; q < TG; q++)
            kept |= keep[q] == g;
        if (!kept)
            c[i] = 0.0f;
    }
    __syncthreads();
}

#endif
