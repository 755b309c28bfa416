/* What one synchronisation of a decode step costs on the device (issue 14):
 * the floor under every kernel of the step, measured without any weights.
 *
 *   1. a kernel boundary: N kernels of G blocks in one CUDA graph, each
 *      reading what blocks of the previous one wrote (a dependency through
 *      L2, as a decode step's kernels have), launched plainly and under
 *      programmatic dependent launch (mkc_launch, mkc_pdl_enter: the decode
 *      step's own)
 *   1b. the same kernels each ending in a ticket, whose last block writes
 *      what the next kernel's blocks read (the combine step of the router,
 *      the decode attention's merge): the ticket before session 34 (every
 *      thread fences, one atomic) against mkc_last_in (one thread's acq_rel
 *      atomic after the block barrier): what a ticket costs on top of the
 *      boundary, and what the fences cost
 *   2. a grid-wide barrier: one persistent cooperative kernel of G
 *      co-resident blocks running the same N phases with a barrier between
 *      them (mkc_grid_barrier, the persistent MoE stack's), and the same
 *      with a barrier of one round trip (grid_sync_mono: a release add on a
 *      count that only grows, acquire polls)
 *
 * Each is timed with CUDA events over R replays after a warm-up, median
 * printed per synchronisation. Why: a decode step of the 30B shape is ~9
 * kernels a layer at ~50 us a layer; whether a persistent per-layer kernel
 * can beat that depends on what a barrier costs against a boundary.
 *
 * usage: bench_cuda_sync [N=200] [R=20] */
#include <algorithm>
#include <stdio.h>
#include <stdlib.h>
#include <vector>

#include <cuda_runtime.h>

#include "cuda/cuda_impl.cuh" /* mkc_launch (the product's PDL launch) */
#include "cuda/cuda_grid_barrier.cuh"
#include "cuda/cuda_ticket.cuh"
#include "cuda/cuda_route_block.cuh" /* route_block: the router's last block's ranking */

#define CK(x)                                                                                          \
    do {                                                                                               \
        cudaError_t e_ = (x);                                                                          \
        if (e_ != cudaSuccess) {                                                                       \
            fprintf(stderr, "bench_cuda_sync: %s: %s (line %d)\n", #x, cudaGetErrorString(e_), __LINE__); \
            exit(1);                                                                                   \
        }                                                                                              \
    } while (0)

/* Phase p of the chain: block b reads a value block (b * 7 + 3) % G wrote in
 * phase p - 1 (through L2: another SM wrote it) and writes its own. */
__device__ __forceinline__ void phase(float *buf, int p, int G) {
    if (threadIdx.x == 0) {
        const float *prev = buf + (size_t)((p + 1) & 1) * G;
        float *cur = buf + (size_t)(p & 1) * G;
        const float v = __ldcg(prev + (blockIdx.x * 7 + 3) % G);
        cur[blockIdx.x] = v + 1.0f;
    }
}

__global__ void k_step(float *buf, int p, int pdl) {
    if (pdl)
        mkc_pdl_enter(); /* as every decode-step kernel does */
    phase(buf, p, gridDim.x);
}

/* The ticket before session 34, kept to measure against mkc_last_in:
 * every thread fences its writes, thread 0 takes a relaxed atomic, the
 * last block's threads fence again */
__device__ __forceinline__ bool last_in_fences(unsigned *ticket, unsigned n) {
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0)
        last = atomicAdd(ticket, 1u) == n - 1;
    __syncthreads();
    if (last)
        __threadfence();
    return last;
}

/* Phase p with a ticket: every block writes its value, the last in sums
 * the G values (read through L2) into the slot the next phase's blocks read */
template <int V> __global__ void k_step_ticket(float *buf, int p, int pdl, unsigned *ticket) {
    if (pdl)
        mkc_pdl_enter();
    const int G = gridDim.x;
    phase(buf, p, G);
    const bool last = V == 0 ? last_in_fences(ticket, G) : mkc_last_in(ticket, G);
    if (last && threadIdx.x == 0) {
        float *cur = buf + (size_t)(p & 1) * G;
        float t = 0.0f;
        for (int b = 0; b < G; b += 16)
            t += __ldcg(cur + b);
        cur[(p * 5) % G] = t; /* read by the next phase's blocks */
        *ticket = 0u;
    }
}

/* Phase p as the MoE router's combine: every block writes its share of
 * 128 logits, and the last in either ranks them as the router's last block
 * does (R: route_block, softmax top-8 renormalised) or only sums a few (the
 * ticket alone), then writes the value the next phase's blocks read: the
 * difference is what the ranking adds to the decode step's critical path. */
template <bool R>
__global__ void k_step_route(float *buf, int p, unsigned *ticket, float *lg, int32_t *idx, float *w) {
    mkc_pdl_enter();
    const int G = gridDim.x, per = 128 / G;
    phase(buf, p, G);
    if ((int)threadIdx.x < per) {
        const int i = (int)blockIdx.x * per + (int)threadIdx.x;
        lg[i] = __sinf(0.37f * (float)i + 0.11f * (float)p);
    }
    if (!mkc_last_in(ticket, G))
        return;
    float *cur = buf + (size_t)(p & 1) * G;
    if (R) {
        route_block(lg, 128, 8, MK_CUDA_SCORE_SOFTMAX, 1, 1.0f, nullptr, 1, 1, idx, w);
        if (threadIdx.x == 0)
            cur[(p * 5) % G] = w[0] + (float)idx[0];
    } else if (threadIdx.x == 0) {
        float t = 0.0f;
        for (int b = 0; b < 128; b += 16)
            t += __ldcg(lg + b);
        cur[(p * 5) % G] = t;
    }
    if (threadIdx.x == 0)
        *ticket = 0u;
}

__global__ void k_persist(float *buf, int N, unsigned *bar) {
    for (int p = 0; p < N; p++) {
        phase(buf, p, gridDim.x);
        mkc_grid_barrier(bar, bar + 1); /* k_stack's (cuda_moe.cu) */
    }
}

/* A barrier of one round trip: every block's thread 0 adds 1 with release
 * semantics (no value returned: a reduction, which the L2 takes without
 * answering) and polls the count with acquire loads until it reaches the
 * phase's target, (p + 1) G; the count only grows (zeroed before each run),
 * so there is no generation word, no reset and no second atomic by a last
 * block on the critical path. What a persistent decode step's barrier could
 * cost, against mkc_grid_barrier's two serial atomics and fences. */
__device__ __forceinline__ void grid_sync_mono(unsigned *count, unsigned target) {
    __syncthreads();
    if (threadIdx.x == 0) {
        asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(count) : "memory");
        unsigned v;
        do {
            asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(count) : "memory");
        } while ((int)(v - target) < 0);
    }
    __syncthreads();
}

__global__ void k_persist_mono(float *buf, int N, unsigned *bar, unsigned base) {
    for (int p = 0; p < N; p++) {
        phase(buf, p, gridDim.x);
        grid_sync_mono(bar, base + (unsigned)(p + 1) * gridDim.x);
    }
}

static float median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

/* Median over R runs (after 3 untimed) of what run() queues on s, in us per
 * phase of N */
template <typename F> static float time_runs(cudaStream_t s, int N, int R, F run) {
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<float> us;
    for (int r = 0; r < R + 3; r++) {
        CK(cudaEventRecord(e0, s));
        run();
        CK(cudaEventRecord(e1, s));
        CK(cudaEventSynchronize(e1));
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        if (r >= 3)
            us.push_back(ms * 1e3f / N);
    }
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    return median(us);
}

/* us per kernel of a graph of N launches, launch(p) queueing phase p's */
template <typename F> static float time_graph(int N, int R, cudaStream_t s, F launch) {
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    for (int p = 0; p < N; p++)
        CK(launch(p));
    CK(cudaStreamEndCapture(s, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    const float us = time_runs(s, N, R, [&] { CK(cudaGraphLaunch(ge, s)); });
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    return us;
}

/* us per kernel of a graph of N launches of G blocks */
static float time_chain(float *buf, int N, int G, int T, bool pdl, int R, cudaStream_t s) {
    return time_graph(N, R, s,
                      [&](int p) { return mkc_launch(k_step, dim3(G), dim3(T), 0, s, pdl, buf, p, pdl ? 1 : 0); });
}

/* the same under PDL with each kernel's ticket (V 0: every thread's fence, 1: mkc_last_in, one acq_rel atomic) */
static float time_chain_ticket(float *buf, unsigned *ticket, int V, int N, int G, int T, int R, cudaStream_t s) {
    return time_graph(N, R, s, [&](int p) {
        return mkc_launch(V ? k_step_ticket<1> : k_step_ticket<0>, dim3(G), dim3(T), 0, s, true, buf, p, 1, ticket);
    });
}

/* the same with the router's combine (R: its ranking; else the ticket alone), G = 16 blocks */
static float time_chain_route(float *buf, unsigned *ticket, bool R, int N, int R_, cudaStream_t s, float *lg,
                              int32_t *idx, float *w) {
    return time_graph(N, R_, s, [&](int p) {
        return mkc_launch(R ? k_step_route<true> : k_step_route<false>, dim3(16), dim3(256), 0, s, true, buf, p,
                          ticket, lg, idx, w);
    });
}

/* us per phase of one persistent kernel of N phases, or -1 when G blocks
 * cannot all be resident */
static float time_persist(float *buf, unsigned *bar, int N, int G, int T, int R, cudaStream_t s, bool mono = false) {
    int per = 0, nsm = 0, dev = 0;
    CK(cudaGetDevice(&dev));
    CK(cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, dev));
    if (mono)
        CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, k_persist_mono, T, 0));
    else
        CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, k_persist, T, 0));
    if (G > per * nsm)
        return -1.0f;
    /* the barrier's words zeroed before each run (outside the timed events: a run leaves the count at
     * zero, the generation need not be) */
    CK(cudaMemsetAsync(bar, 0, 2 * sizeof(unsigned), s));
    unsigned base = 0; /* mono: the count of the runs before (it is never reset within a timing) */
    return time_runs(s, N, R, [&] {
        if (mono) {
            void *args[] = {&buf, &N, &bar, &base};
            CK(cudaLaunchCooperativeKernel((const void *)k_persist_mono, dim3(G), dim3(T), args, 0, s));
            base += (unsigned)N * (unsigned)G;
        } else {
            void *args[] = {&buf, &N, &bar};
            CK(cudaLaunchCooperativeKernel((const void *)k_persist, dim3(G), dim3(T), args, 0, s));
        }
    });
}

int main(int argc, char **argv) {
    const int N = argc > 1 ? atoi(argv[1]) : 200, R = argc > 2 ? atoi(argv[2]) : 20;
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
        printf("bench_cuda_sync: no CUDA device, nothing measured\n");
        return 0;
    }
    if (N < 2 || R < 1) {
        fprintf(stderr, "usage: bench_cuda_sync [N>=2 phases] [R>=1 repeats]\n");
        return 2;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device     %s, %d SMs\n", prop.name, prop.multiProcessorCount);
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    const int nsm = prop.multiProcessorCount;
    float *buf;
    unsigned *bar;
    CK(cudaMalloc(&buf, 2 * sizeof(float) * 4 * nsm));
    CK(cudaMemset(buf, 0, 2 * sizeof(float) * 4 * nsm));
    CK(cudaMalloc(&bar, 2 * sizeof(unsigned)));
    unsigned *ticket;
    CK(cudaMalloc(&ticket, sizeof(unsigned)));
    CK(cudaMemset(ticket, 0, sizeof(unsigned)));
    const int grids[] = {nsm, 2 * nsm};
    for (int G : grids) {
        const int T = 256;
        const float plain = time_chain(buf, N, G, T, false, R, s);
        const float pdl = time_chain(buf, N, G, T, true, R, s);
        const float bar_us = time_persist(buf, bar, N, G, T, R, s);
        const float mono_us = time_persist(buf, bar, N, G, T, R, s, true);
        printf("sync       %d blocks of %d threads, %d phases: kernel boundary %.2f us (graph), %.2f us "
               "(graph + PDL); grid barrier %.2f us (one persistent kernel), %.2f us (one release add, "
               "acquire polls)\n",
               G, T, N, plain, pdl, bar_us, mono_us);
    }
    /* the router's grid (16 blocks) and the decode attention's (128), each kernel ending in a ticket */
    for (int G : {16, 128}) {
        const float pdl = time_chain(buf, N, G, 256, true, R, s);
        const float t0 = time_chain_ticket(buf, ticket, 0, N, G, 256, R, s);
        const float t1 = time_chain_ticket(buf, ticket, 1, N, G, 256, R, s);
        const float t0b = time_chain_ticket(buf, ticket, 0, N, G, 256, R, s);
        printf("ticket     %d blocks of 256 threads, %d phases (graph + PDL): boundary %.2f us; with a ticket: "
               "every thread's fence %.2f / %.2f us, one acq_rel atomic %.2f us\n", G, N, pdl, t0, t0b, t1);
    }
    { /* the router's ranking (route_block) on the chain, 16 blocks, 128 logits, top 8 */
        float *lg, *w;
        int32_t *idx;
        CK(cudaMalloc(&lg, 128 * sizeof(float)));
        CK(cudaMalloc(&w, 8 * sizeof(float)));
        CK(cudaMalloc(&idx, 8 * sizeof(int32_t)));
        const float t0 = time_chain_route(buf, ticket, false, N, R, s, lg, idx, w);
        const float t1 = time_chain_route(buf, ticket, true, N, R, s, lg, idx, w);
        const float t0b = time_chain_route(buf, ticket, false, N, R, s, lg, idx, w);
        printf("route      16 blocks, 128 logits, top 8, %d phases (graph + PDL): ticket and a sum %.2f / %.2f us, "
               "ticket and route_block %.2f us\n", N, t0, t0b, t1);
        CK(cudaFree(lg));
        CK(cudaFree(w));
        CK(cudaFree(idx));
    }
    CK(cudaFree(ticket));
    CK(cudaFree(buf));
    CK(cudaFree(bar));
    CK(cudaStreamDestroy(s));
    return 0;
}
