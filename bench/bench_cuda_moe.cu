/* CUDA decode benchmark (issue 14): ceilings and kernels in one run.
 *
 *   1. HBM roofline: device-to-device copy of 2 GiB (bytes read + written)
 *   2. GEMV bandwidth (mk_cuda_gemv) at large shapes, MLX affine 4-bit and
 *      8-bit g64 (bf16 scales/biases), bf16, FP8 E4M3 with 128x128 f32
 *      block scales and MXFP4: weight bytes / time, and the fraction of
 *      the copy bandwidth
 *   3. decode of a synthetic full-depth MoE stack, batch 1: every layer is
 *      x += moe_l(x) (mk_cuda_moe_step, own weights per layer), the whole
 *      stack captured as one CUDA graph and replayed per token; each token
 *      starts from a different x (copied in from a pool, timed too), so the
 *      routing changes from token to token and layer to layer. Attention,
 *      norms, embedding and LM head are LEFT OUT: this measures the MoE part
 *      of a decode step. Roofline fraction = (weight bytes the step reads,
 *      mk_cuda_moe_bytes summed over layers) / time / copy bandwidth.
 *      Shapes: Qwen3-30B-A3B (48 layers, H 2048, 128 experts top-8, I 768,
 *      no shared expert, softmax + norm_topk_prob) and Qwen3.5/3.6-35B-A3B
 *      (40 layers, H 2048, 256 experts top-8, I 512, shared expert I 512
 *      with sigmoid gate), all matrices MLX affine 4-bit g64, bf16 scales.
 * Weights are random codes with scales/biases that keep activations bounded
 * (filled on the device: no host upload of 16+ GB). Timing: CUDA events,
 * warm-up first, median of repeats. Prints one line per measurement and a
 * summary table last.
 *
 * usage: bench_cuda_moe [--quick | --gemv | --compare | --l2]
 *   --l2: what L2 residency buys the decode's weight readers as the step
 *   chains them (PDL, the product's launches): 48 q_proj/o_proj GEMV pairs
 *   and the 48 MoE steps of the 30B shape, each layer its own weights
 *   (read from DRAM) against layer 0 repeated (its weights stay in L2);
 *   the ceiling of any scheme that prefetches a kernel's weights into L2
 *   before it runs.
 *   --quick: fewer layers, for a smoke run; --gemv: GEMV only; --compare:
 *   kernel generations 1 and 2 (mk_cuda_set_kernels) side by side, GEMV and the
 *   stacks' graphs with their per-kernel breakdown and a hot (L2-resident)
 *   stack; eager, PDL and persistent runs left out */
#include <algorithm>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

#include <cuda_runtime.h>

#include "cuda/cuda_impl.cuh" /* mk_cuda.h, and mkc_moe_launch for the breakdown */

#define CK(x)                                                                                          \
    do {                                                                                               \
        cudaError_t e_ = (x);                                                                          \
        if (e_ != cudaSuccess) {                                                                       \
            fprintf(stderr, "bench_cuda_moe: %s: %s (line %d)\n", #x, cudaGetErrorString(e_), __LINE__); \
            exit(1);                                                                                   \
        }                                                                                              \
    } while (0)
#define MK(x)                                                                                          \
    do {                                                                                               \
        mk_status s_ = (x);                                                                            \
        if (s_ != MK_OK) {                                                                             \
            fprintf(stderr, "bench_cuda_moe: %s: %s\n", #x, mk_err_msg());                             \
            exit(1);                                                                                   \
        }                                                                                              \
    } while (0)

static __device__ uint32_t hash32(uint64_t i, uint32_t seed) {
    uint64_t z = i * 0x9e3779b97f4a7c15ull + seed;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (uint32_t)(z ^ (z >> 31));
}

__global__ void fill_u32(uint32_t *p, size_t n, uint32_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = hash32(i, seed);
}

static __device__ unsigned short f2bf(float f) {
    uint32_t u = __float_as_uint(f);
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* scales s = amp * (1 + u), biases = -7.5 s (codes centred: mean weight ~0) */
__global__ void fill_sb(unsigned short *s, unsigned short *b, size_t n, float amp, uint32_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float u = (hash32(i, seed) & 0xffffff) / 16777216.0f;
        float sv = amp * (1.0f + u);
        s[i] = f2bf(sv);
        b[i] = f2bf(-7.5f * sv);
    }
}

__global__ void fill_f(float *p, size_t n, float amp, uint32_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = amp * ((hash32(i, seed) & 0xffffff) / 8388608.0f - 1.0f);
}

__global__ void fill_bf16(unsigned short *p, size_t n, float amp, uint32_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = f2bf(amp * ((hash32(i, seed) & 0xffffff) / 8388608.0f - 1.0f));
}

static uint32_t g_seed = 1;
static size_t g_dev_bytes = 0;

/* A device affine weight [rows, cols], filled on the device. */
static mk_wt dev_affine(int64_t rows, int64_t cols, int bits, int group, float amp) {
    mk_wt w;
    memset(&w, 0, sizeof w);
    w.fmt = MK_WF_AFFINE;
    w.rows = rows;
    w.cols = cols;
    w.bits = bits;
    w.group = group;
    w.sdtype = MK_DT_BF16;
    size_t nd = (size_t)rows * (size_t)cols * bits / 8, ng = (size_t)rows * (size_t)(cols / group);
    void *d, *s, *b;
    MK(mk_cuda_malloc(&d, nd, "bench weight"));
    MK(mk_cuda_malloc(&s, ng * 2, "bench scales"));
    MK(mk_cuda_malloc(&b, ng * 2, "bench biases"));
    fill_u32<<<1024, 256>>>((uint32_t *)d, nd / 4, g_seed++);
    fill_sb<<<1024, 256>>>((unsigned short *)s, (unsigned short *)b, ng, amp, g_seed++);
    CK(cudaGetLastError());
    g_dev_bytes += nd + 4 * ng;
    w.data = d;
    w.scales = s;
    w.biases = b;
    return w;
}

static mk_wt dev_bf16(int64_t rows, int64_t cols, float amp) {
    mk_wt w;
    memset(&w, 0, sizeof w);
    w.fmt = MK_WF_BF16;
    w.rows = rows;
    w.cols = cols;
    void *d;
    size_t n = (size_t)rows * (size_t)cols;
    MK(mk_cuda_malloc(&d, n * 2, "bench weight"));
    fill_bf16<<<1024, 256>>>((unsigned short *)d, n, amp, g_seed++);
    CK(cudaGetLastError());
    g_dev_bytes += n * 2;
    w.data = d;
    return w;
}

/* Codes without E4M3's NaN (S.1111.111): bit 6 cleared, so the exponent
 * is at most 0b0111. */
__global__ void mask_bytes(uint32_t *p, size_t n, uint32_t keep) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] &= keep;
}

__global__ void fill_const_f(float *p, size_t n, float v) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = v;
}

/* A device FP8 E4M3 weight with 128x128 f32 block scales (DeepSeek-V3's). */
static mk_wt dev_fp8(int64_t rows, int64_t cols) {
    mk_wt w;
    memset(&w, 0, sizeof w);
    w.fmt = MK_WF_FP8_E4M3;
    w.rows = rows;
    w.cols = cols;
    w.block_r = w.block_c = 128;
    w.sdtype = MK_DT_F32;
    w.global_scale = 1.0f;
    size_t nd = (size_t)rows * (size_t)cols, ns = (size_t)((rows + 127) / 128) * (size_t)((cols + 127) / 128);
    void *d, *s;
    MK(mk_cuda_malloc(&d, nd, "bench weight"));
    MK(mk_cuda_malloc(&s, ns * 4, "bench scales"));
    fill_u32<<<1024, 256>>>((uint32_t *)d, nd / 4, g_seed++);
    mask_bytes<<<1024, 256>>>((uint32_t *)d, nd / 4, 0xBFBFBFBFu);
    fill_const_f<<<64, 256>>>((float *)s, ns, 0.001f);
    CK(cudaGetLastError());
    g_dev_bytes += nd + 4 * ns;
    w.data = d;
    w.scales = s;
    return w;
}

/* A device MXFP4 weight (E8M0 scale 2^-4 per 32; gpt-oss's experts). */
static mk_wt dev_mxfp4(int64_t rows, int64_t cols) {
    mk_wt w;
    memset(&w, 0, sizeof w);
    w.fmt = MK_WF_MXFP4;
    w.rows = rows;
    w.cols = cols;
    w.bits = 4;
    w.group = 32;
    w.global_scale = 1.0f;
    size_t nd = (size_t)rows * (size_t)cols / 2, ns = (size_t)rows * (size_t)(cols / 32);
    void *d, *s;
    MK(mk_cuda_malloc(&d, nd, "bench weight"));
    MK(mk_cuda_malloc(&s, ns, "bench scales"));
    fill_u32<<<1024, 256>>>((uint32_t *)d, nd / 4, g_seed++);
    CK(cudaMemset(s, 123, ns));
    CK(cudaGetLastError());
    g_dev_bytes += nd + ns;
    w.data = d;
    w.scales = s;
    return w;
}

static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

/* ---- 1. copy roofline ------------------------------------------------------ */

static double copy_bw(void) {
    const size_t n = (size_t)2 << 30;
    void *a, *b;
    CK(cudaMalloc(&a, n));
    CK(cudaMalloc(&b, n));
    fill_u32<<<1024, 256>>>((uint32_t *)a, n / 4, 7);
    CK(cudaMemset(b, 1, n));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<double> ts;
    for (int i = 0; i < 13; i++) {
        CK(cudaEventRecord(e0));
        CK(cudaMemcpyAsync(i & 1 ? a : b, i & 1 ? b : a, n, cudaMemcpyDeviceToDevice));
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        if (i >= 3)
            ts.push_back(ms);
    }
    double ms = median(ts), bw = 2.0 * n / (ms * 1e-3);
    printf("copy     D2D %zu MiB: median %.3f ms, %.1f GB/s (read + write)\n", n >> 20, ms, bw / 1e9);
    CK(cudaFree(a));
    CK(cudaFree(b));
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    return bw;
}

/* ---- 2. GEMV ---------------------------------------------------------------- */

struct row_t {
    char what[96];
    double ms, gbs, frac, tps;
};
static std::vector<row_t> g_rows;

static bool g_compare = false; /* --compare: kernel generations 1 and 2 side by side */
static void gemv_bench1(const char *name, mk_wt w, double roof);
/* --compare: kernel generation 1 then 2 */
static void gemv_bench(const char *name, mk_wt w, double roof) {
    if (!g_compare) {
        gemv_bench1(name, w, roof);
        if (w.fmt == MK_WF_AFFINE) { /* and on int8 activations (mk_cuda_set_act_int8, k_gemv_q8) */
            char nm[64];
            const bool q0 = mk_cuda_act_int8();
            const int s0 = mk_cuda_act_int8_setting(); /* following stays following */
            mk_cuda_set_act_int8(!q0);
            snprintf(nm, sizeof nm, "%s %s", name, q0 ? "float x" : "int8 x");
            gemv_bench1(nm, w, roof);
            mk_cuda_restore_act_int8(s0);
        }
        return;
    }
    char nm[64];
    const int gen0 = mk_cuda_kernels();
    for (int gen = 1; gen <= 2; gen++) {
        MK(mk_cuda_set_kernels(gen));
        snprintf(nm, sizeof nm, "%s gen%d", name, gen);
        gemv_bench1(nm, w, roof);
    }
    MK(mk_cuda_set_kernels(gen0));
}

static void gemv_bench1(const char *name, mk_wt w, double roof) {
    float *x, *y;
    CK(cudaMalloc(&x, w.cols * 4));
    CK(cudaMalloc(&y, w.rows * 4));
    fill_f<<<64, 256>>>(x, w.cols, 1.0f, 99);
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<double> ts;
    for (int i = 0; i < 25; i++) {
        CK(cudaEventRecord(e0));
        MK(mk_cuda_gemv(&w, x, y, false, NULL));
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        if (i >= 5)
            ts.push_back(ms);
    }
    double ms = median(ts);
    double bytes = (double)w.rows * mk_cuda_wt_row_bytes_all(&w) + 4.0 * (w.rows + w.cols);
    double bw = bytes / (ms * 1e-3);
    row_t r;
    snprintf(r.what, sizeof r.what, "gemv %s [%lld x %lld]", name, (long long)w.rows, (long long)w.cols);
    r.ms = ms;
    r.gbs = bw / 1e9;
    r.frac = bw / roof;
    r.tps = 0;
    printf("%-40s median %.4f ms, %.1f GB/s, %.1f%% of copy\n", r.what, ms, r.gbs, 100 * r.frac);
    g_rows.push_back(r);
    CK(cudaFree(x));
    CK(cudaFree(y));
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
}

/* ---- 3. MoE decode stack -------------------------------------------------------- */

struct shape_t {
    const char *name;
    int layers;
    int64_t H, E, k, I, Is;
    bool shared;
};

static void free_wt(mk_wt *w) {
    mk_cuda_wt_free(w);
}

/* ms per token of the captured graph g replayed `tokens` times in each of
 * `reps` rounds (the first `skip` dropped, median of the rest), each token
 * starting from the next x of the pool (none: pool NULL); g is destroyed */
static double time_pool_replays(cudaGraph_t g, float *x, const float *pool, int P, int64_t H, cudaStream_t st,
                                int reps, int tokens, int skip = 1) {
    cudaGraphExec_t ge;
    CK(cudaGraphInstantiate(&ge, g, 0));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<double> v;
    for (int rep = 0; rep < reps; rep++) {
        CK(cudaEventRecord(e0, st));
        for (int t = 0; t < tokens; t++) {
            if (pool)
                CK(cudaMemcpyAsync(x, pool + (size_t)((t * 7 + rep) % P) * H, H * 4, cudaMemcpyDeviceToDevice,
                                   st));
            CK(cudaGraphLaunch(ge, st));
        }
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        if (rep >= skip)
            v.push_back(ms / tokens);
    }
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    return median(v);
}

/* ms per token of a graph of L layers' kernels (parts as mkc_moe_launch,
 * no PDL), each token starting from the next x of the pool; hot: every
 * layer is layer 0 (its ~20 MB of touched weights stay in the 60 MB L2 and
 * its pages in the TLBs: what is left is latency and launch cost) */
static double time_graph(const std::vector<mk_cuda_moe> &lay, mk_cuda_moe_ws *ws, float *x, const float *pool,
                         int P, int64_t H, cudaStream_t st, unsigned parts, bool hot, int tokens) {
    const int L = (int)lay.size();
    cudaGraph_t g;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    for (int l = 0; l < L; l++)
        MK(mkc_moe_launch(&lay[hot ? 0 : l], ws, x, x, 1, true, st, parts, false));
    CK(cudaStreamEndCapture(st, &g));
    return time_pool_replays(g, x, pool, P, H, st, 5, tokens);
}

/* ms per token of a graph of the product's MoE steps (mk_cuda_moe_step: PDL
 * and int8 x as configured), each token from the next x of the pool; hot:
 * every layer is layer 0 (as time_graph) */
static double time_steps(const std::vector<mk_cuda_moe> &lay, mk_cuda_moe_ws *ws, float *x, const float *pool,
                         int P, int64_t H, cudaStream_t st, bool hot, int tokens) {
    const int L = (int)lay.size();
    for (int l = 0; l < L; l++) /* eager first: checks every launch */
        MK(mk_cuda_moe_step(&lay[hot ? 0 : l], ws, x, x, true, st));
    CK(cudaStreamSynchronize(st));
    cudaGraph_t g;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    for (int l = 0; l < L; l++)
        MK(mk_cuda_moe_step(&lay[hot ? 0 : l], ws, x, x, true, st));
    CK(cudaStreamEndCapture(st, &g));
    return time_pool_replays(g, x, pool, P, H, st, 6, tokens);
}

/* --l2: the q_proj / o_proj GEMV pairs of L layers in one graph (the
 * product's launches, PDL as configured), us per pair: each layer's own
 * weights (cold: 9.4 MB a pair, 450 MB in all, from DRAM) against layer 0
 * repeated (hot: in L2) */
static void l2_gemv(int L, double roof) {
    std::vector<mk_wt> q(L), o(L);
    for (int l = 0; l < L; l++) {
        q[l] = dev_affine(4096, 2048, 4, 64, 0.01f);
        o[l] = dev_affine(2048, 4096, 4, 64, 0.01f);
    }
    float *x, *h;
    CK(cudaMalloc(&x, 2048 * 4));
    CK(cudaMalloc(&h, 4096 * 4));
    fill_f<<<64, 256>>>(x, 2048, 1.0f, 7);
    CK(cudaDeviceSynchronize());
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    const double bytes = (double)L * (4096 * mk_cuda_wt_row_bytes_all(&q[0]) + 2048 * mk_cuda_wt_row_bytes_all(&o[0]));
    double us[2];
    for (int hot = 0; hot < 2; hot++) {
        cudaGraph_t g;
        CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
        for (int l = 0; l < L; l++) {
            MK(mk_cuda_gemv(&q[hot ? 0 : l], x, h, false, st));
            MK(mk_cuda_gemv(&o[hot ? 0 : l], h, x, false, st));
        }
        CK(cudaStreamEndCapture(st, &g));
        /* 12 rounds of 20 replays, the first 2 dropped (as session 32 measured it) */
        us[hot] = 1e3 * time_pool_replays(g, x, NULL, 0, 0, st, 12, 20, 2) / L;
    }
    printf("l2 gemv q_proj [4096 x 2048] + o_proj [2048 x 4096] 4-bit, %d pairs chained: cold %.2f us a pair "
           "(%.1f%% of copy), hot (layer 0 repeated, in L2) %.2f us a pair; hot/cold %.3f\n",
           L, us[0], 100 * bytes / (L * us[0] * 1e-6) / roof, us[1], us[1] / us[0]);
    CK(cudaStreamDestroy(st));
    CK(cudaFree(x));
    CK(cudaFree(h));
    for (int l = 0; l < L; l++) {
        mk_cuda_wt_free(&q[l]);
        mk_cuda_wt_free(&o[l]);
    }
}

static bool g_l2 = false; /* --l2 */

/* --compare: for kernel generation 1 and 2 (mk_cuda_set_kernels), the graph of
 * the whole stack, its breakdown (router; + gate/up; + down) and the hot
 * stack (layer 0 repeated), one summary row each */
static void moe_compare(const shape_t &sp, const std::vector<mk_cuda_moe> &lay, mk_cuda_moe_ws *ws, float *x,
                        const float *pool, int P, size_t bytes, cudaStream_t st, double roof) {
    const int L = (int)lay.size(), gen0 = mk_cuda_kernels();
    for (int gen = 1; gen <= 2; gen++) {
        MK(mk_cuda_set_kernels(gen));
        CK(cudaMemcpyAsync(x, pool, sp.H * 4, cudaMemcpyDeviceToDevice, st));
        for (int l = 0; l < L; l++) /* eager first: checks every launch */
            MK(mk_cuda_moe_step(&lay[l], ws, x, x, true, st));
        CK(cudaStreamSynchronize(st));
        const double all = time_graph(lay, ws, x, pool, P, sp.H, st, 7u, false, 200);
        const double r1 = time_graph(lay, ws, x, pool, P, sp.H, st, 1u, false, 100);
        const double r3 = time_graph(lay, ws, x, pool, P, sp.H, st, 3u, false, 100);
        const double hot = time_graph(lay, ws, x, pool, P, sp.H, st, 7u, true, 200);
        const double bw = bytes / (all * 1e-3);
        printf("moe %s gen%d: graph %.4f ms/token = %.0f tok/s, %.1f GB/s = %.1f%% of copy; us per layer: "
               "router %.2f, gate/up %.2f, down %.2f, all %.2f; hot (layer 0 x %d) %.2f us per layer\n",
               sp.name, gen, all, 1e3 / all, bw / 1e9, 100 * bw / roof, 1e3 * r1 / L, 1e3 * (r3 - r1) / L,
               1e3 * (all - r3) / L, 1e3 * all / L, L, 1e3 * hot / L);
        row_t r;
        snprintf(r.what, sizeof r.what, "decode %s (MoE only, graph) gen%d", sp.name, gen);
        r.ms = all;
        r.gbs = bw / 1e9;
        r.frac = bw / roof;
        r.tps = 1e3 / all;
        g_rows.push_back(r);
    }
    MK(mk_cuda_set_kernels(gen0));
}

static void moe_bench(const shape_t &sp, double roof) {
    const int L = sp.layers;
    std::vector<mk_cuda_moe> lay(L);
    g_dev_bytes = 0;
    for (int l = 0; l < L; l++) {
        mk_cuda_moe &m = lay[l];
        memset(&m, 0, sizeof m);
        m.hidden = sp.H;
        m.n_experts = sp.E;
        m.top_k = sp.k;
        m.inter = sp.I;
        m.shared_inter = sp.Is;
        m.score = MK_CUDA_SCORE_SOFTMAX;
        m.norm_topk = true;
        m.scale = 1.0f;
        m.router = dev_affine(sp.E, sp.H, 4, 64, 0.002f);
        m.gate = dev_affine(sp.E * sp.I, sp.H, 4, 64, 0.002f);
        m.up = dev_affine(sp.E * sp.I, sp.H, 4, 64, 0.002f);
        m.down = dev_affine(sp.E * sp.H, sp.I, 4, 64, 0.002f);
        if (sp.shared) {
            m.has_shared = m.has_shared_gate = true;
            m.sh_gate = dev_affine(sp.Is, sp.H, 4, 64, 0.002f);
            m.sh_up = dev_affine(sp.Is, sp.H, 4, 64, 0.002f);
            m.sh_down = dev_affine(sp.H, sp.Is, 4, 64, 0.002f);
            m.sh_gate_w = dev_affine(1, sp.H, 4, 64, 0.002f);
        }
        MK(mk_cuda_moe_check(&m));
    }
    CK(cudaDeviceSynchronize());
    mk_cuda_moe_ws *ws;
    MK(mk_cuda_moe_ws_new(&lay[0], &ws));
    const int P = 64; /* pool of token inputs */
    float *pool, *x;
    CK(cudaMalloc(&pool, (size_t)P * sp.H * 4));
    CK(cudaMalloc(&x, sp.H * 4));
    fill_f<<<256, 256>>>(pool, (size_t)P * sp.H, 1.0f, 1234);
    CK(cudaDeviceSynchronize());
    size_t bytes = 0;
    for (int l = 0; l < L; l++)
        bytes += mk_cuda_moe_bytes(&lay[l]);

    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    if (g_l2) {
        const double cold = time_steps(lay, ws, x, pool, P, sp.H, st, false, 200);
        const double hot = time_steps(lay, ws, x, pool, P, sp.H, st, true, 200);
        printf("l2 moe %s, %d MoE steps chained (mk_cuda_moe_step): cold %.2f us a layer (%.1f%% of copy), hot "
               "(layer 0 repeated, in L2) %.2f us a layer; hot/cold %.3f\n",
               sp.name, L, 1e3 * cold / L, 100 * bytes / (cold * 1e-3) / roof, 1e3 * hot / L, hot / cold);
    } else if (g_compare) {
        moe_compare(sp, lay, ws, x, pool, P, bytes, st, roof);
    } else {
    /* eager run first (checks every launch), then capture the stack */
    CK(cudaMemcpyAsync(x, pool, sp.H * 4, cudaMemcpyDeviceToDevice, st));
    for (int l = 0; l < L; l++)
        MK(mk_cuda_moe_step(&lay[l], ws, x, x, true, st));
    CK(cudaStreamSynchronize(st));
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    for (int l = 0; l < L; l++)
        MK(mk_cuda_moe_step(&lay[l], ws, x, x, true, st));
    CK(cudaStreamEndCapture(st, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    const int T = 200;
    std::vector<double> per_tok, per_tok_eager;
    for (int rep = 0; rep < 6; rep++) {
        CK(cudaEventRecord(e0, st));
        for (int t = 0; t < T; t++) {
            CK(cudaMemcpyAsync(x, pool + (size_t)((t * 7 + rep) % P) * sp.H, sp.H * 4, cudaMemcpyDeviceToDevice,
                               st));
            CK(cudaGraphLaunch(ge, st));
        }
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        if (rep >= 1)
            per_tok.push_back(ms / T);
    }
    /* the same without the graph: launch overhead made visible */
    for (int rep = 0; rep < 3; rep++) {
        CK(cudaEventRecord(e0, st));
        for (int t = 0; t < 50; t++) {
            CK(cudaMemcpyAsync(x, pool + (size_t)(t % P) * sp.H, sp.H * 4, cudaMemcpyDeviceToDevice, st));
            for (int l = 0; l < L; l++)
                MK(mk_cuda_moe_step(&lay[l], ws, x, x, true, st));
        }
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        if (rep >= 1)
            per_tok_eager.push_back(ms / 50);
    }
    /* breakdown: graphs of the router only, router + gate/up, all three;
     * each with and without programmatic dependent launch */
    double part_ms[2][3];
    for (int pdl = 0; pdl < 2; pdl++)
        for (int pi = 0; pi < 3; pi++) {
            const unsigned parts = pi == 0 ? 1u : pi == 1 ? 3u : 7u;
            cudaGraph_t g2;
            cudaGraphExec_t ge2;
            CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
            for (int l = 0; l < L; l++)
                MK(mkc_moe_launch(&lay[l], ws, x, x, 1, true, st, parts, pdl != 0));
            CK(cudaStreamEndCapture(st, &g2));
            CK(cudaGraphInstantiate(&ge2, g2, 0));
            std::vector<double> v;
            for (int rep = 0; rep < 4; rep++) {
                CK(cudaEventRecord(e0, st));
                for (int t = 0; t < 100; t++) {
                    CK(cudaMemcpyAsync(x, pool + (size_t)((t * 5 + rep) % P) * sp.H, sp.H * 4,
                                       cudaMemcpyDeviceToDevice, st));
                    CK(cudaGraphLaunch(ge2, st));
                }
                CK(cudaEventRecord(e1, st));
                CK(cudaEventSynchronize(e1));
                float ms;
                CK(cudaEventElapsedTime(&ms, e0, e1));
                if (rep >= 1)
                    v.push_back(ms / 100);
            }
            part_ms[pdl][pi] = median(v);
            CK(cudaGraphExecDestroy(ge2));
            CK(cudaGraphDestroy(g2));
        }
    for (int pdl = 0; pdl < 2; pdl++)
        printf("moe %s breakdown (%s PDL), us per layer: router %.2f, gate/up %.2f, down %.2f; all %.2f us "
               "= %.0f tok/s\n",
               sp.name, pdl ? "with" : "without", 1e3 * part_ms[pdl][0] / L,
               1e3 * (part_ms[pdl][1] - part_ms[pdl][0]) / L, 1e3 * (part_ms[pdl][2] - part_ms[pdl][1]) / L,
               1e3 * part_ms[pdl][2] / L, 1e3 / part_ms[pdl][2]);
    {
        row_t r;
        snprintf(r.what, sizeof r.what, "decode %s (MoE only, graph, PDL)", sp.name);
        r.ms = part_ms[1][2];
        r.gbs = bytes / (r.ms * 1e-3) / 1e9;
        r.frac = bytes / (r.ms * 1e-3) / roof;
        r.tps = 1e3 / r.ms;
        g_rows.push_back(r);
    }
    /* the whole stack as one persistent cooperative kernel per token */
    mk_cuda_stack *stk = NULL;
    if (mk_cuda_stack_new(lay.data(), L, &stk) != MK_OK) {
        printf("moe %s: persistent stack not available: %s\n", sp.name, mk_err_msg());
    } else {
        std::vector<double> v;
        for (int rep = 0; rep < 6; rep++) {
            CK(cudaEventRecord(e0, st));
            for (int t = 0; t < 200; t++) {
                CK(cudaMemcpyAsync(x, pool + (size_t)((t * 3 + rep) % P) * sp.H, sp.H * 4, cudaMemcpyDeviceToDevice,
                                   st));
                MK(mk_cuda_stack_run(stk, x, st));
            }
            CK(cudaEventRecord(e1, st));
            CK(cudaEventSynchronize(e1));
            float ms;
            CK(cudaEventElapsedTime(&ms, e0, e1));
            if (rep >= 1)
                v.push_back(ms / 200);
        }
        double sm = median(v);
        printf("moe %s: persistent stack %.4f ms/token = %.0f tok/s, %.1f%% of copy\n", sp.name, sm, 1e3 / sm,
               100 * bytes / (sm * 1e-3) / roof);
        row_t r;
        snprintf(r.what, sizeof r.what, "decode %s (MoE only, persistent)", sp.name);
        r.ms = sm;
        r.gbs = bytes / (sm * 1e-3) / 1e9;
        r.frac = bytes / (sm * 1e-3) / roof;
        r.tps = 1e3 / sm;
        g_rows.push_back(r);
        mk_cuda_stack_free(stk);
    }
    float xh[8];
    CK(cudaMemcpy(xh, x, sizeof xh, cudaMemcpyDeviceToHost));
    int32_t idx[32];
    float wr[32];
    MK(mk_cuda_moe_routing(ws, idx, wr));
    double ms = median(per_tok), ms_e = median(per_tok_eager);
    double bw = bytes / (ms * 1e-3);
    printf("moe %s: %d layers, %.2f GB of weights on the device, %.1f MB read per token\n", sp.name, L,
           g_dev_bytes / 1e9, bytes / 1e6);
    printf("moe %s: graph %.4f ms/token = %.0f tok/s, %.1f GB/s = %.1f%% of copy; eager %.4f ms/token = %.0f "
           "tok/s\n",
           sp.name, ms, 1e3 / ms, bw / 1e9, 100 * bw / roof, ms_e, 1e3 / ms_e);
    printf("moe %s: last layer's routing: experts %d %d %d %d .. weights %.4f %.4f ..; x[0..3] %.4g %.4g %.4g %.4g\n",
           sp.name, idx[0], idx[1], idx[2], idx[3], wr[0], wr[1], xh[0], xh[1], xh[2], xh[3]);
    row_t r;
    snprintf(r.what, sizeof r.what, "decode %s (MoE only, graph)", sp.name);
    r.ms = ms;
    r.gbs = bw / 1e9;
    r.frac = bw / roof;
    r.tps = 1e3 / ms;
    g_rows.push_back(r);
    snprintf(r.what, sizeof r.what, "decode %s (MoE only, no graph)", sp.name);
    r.ms = ms_e;
    r.gbs = bytes / (ms_e * 1e-3) / 1e9;
    r.frac = bytes / (ms_e * 1e-3) / roof;
    r.tps = 1e3 / ms_e;
    g_rows.push_back(r);
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    }
    CK(cudaStreamDestroy(st));
    CK(cudaFree(pool));
    CK(cudaFree(x));
    mk_cuda_moe_ws_free(ws);
    for (int l = 0; l < L; l++) {
        mk_cuda_moe &m = lay[l];
        free_wt(&m.router);
        free_wt(&m.gate);
        free_wt(&m.up);
        free_wt(&m.down);
        if (sp.shared) {
            free_wt(&m.sh_gate);
            free_wt(&m.sh_up);
            free_wt(&m.sh_down);
            free_wt(&m.sh_gate_w);
        }
    }
}

int main(int argc, char **argv) {
    bool quick = argc > 1 && !strcmp(argv[1], "--quick");
    bool only_gemv = argc > 1 && !strcmp(argv[1], "--gemv");
    g_compare = argc > 1 && !strcmp(argv[1], "--compare");
    g_l2 = argc > 1 && !strcmp(argv[1], "--l2");
    int n;
    if (mk_cuda_probe(&n) != MK_OK) {
        printf("bench_cuda_moe: skipped: %s\n", mk_err_msg());
        return 0;
    }
    /* MK_CUDA_STEP_PDL=0|1 / MK_CUDA_STEP_PREFETCH=0..3: the GEMVs' launch (as bench_decode) */
    const char *e = getenv("MK_CUDA_STEP_PDL");
    if (e && *e)
        mk_cuda_set_step_pdl(strcmp(e, "0") != 0);
    e = getenv("MK_CUDA_STEP_PREFETCH");
    if (e && *e)
        mk_cuda_set_step_prefetch((unsigned)strtoul(e, NULL, 10));
    /* MK_CUDA_GEMV_STAGED=0|1: the one-token GEMV's staged-weight kernel (as bench_decode) */
    e = getenv("MK_CUDA_GEMV_STAGED");
    if (e && *e)
        mk_cuda_set_gemv_staged(strcmp(e, "0") != 0);
    /* MK_CUDA_MOE_STAGED=0|1: the MoE step's staged-weight kernels (as bench_decode) */
    e = getenv("MK_CUDA_MOE_STAGED");
    if (e && *e)
        mk_cuda_set_moe_staged(strcmp(e, "0") != 0);
    char desc[256];
    MK(mk_cuda_describe(desc, sizeof desc));
    printf("device: %s; GEMV under PDL %s, its L2 prefetch %s, staged weights %s\n", desc,
           mk_cuda_step_pdl() ? "on" : "off", (mk_cuda_step_prefetch() & MK_CUDA_PREFETCH_GEMV) ? "on" : "off",
           mk_cuda_gemv_staged() ? "on" : "off");
    double roof = copy_bw();
    if (g_l2) {
        l2_gemv(48, roof);
        shape_t q3 = {"Qwen3-30B-A3B", 48, 2048, 128, 8, 768, 0, false};
        moe_bench(q3, roof);
        return 0;
    }
    {
        mk_wt w = dev_affine(32768, 8192, 4, 64, 0.01f);
        gemv_bench("affine4 g64 bf16", w, roof);
        mk_cuda_wt_free(&w);
        w = dev_affine(32768, 8192, 8, 64, 0.01f);
        gemv_bench("affine8 g64 bf16", w, roof);
        mk_cuda_wt_free(&w);
        w = dev_affine(32768, 8192, 4, 32, 0.01f);
        gemv_bench("affine4 g32 bf16", w, roof);
        mk_cuda_wt_free(&w);
        w = dev_bf16(16384, 8192, 0.05f);
        gemv_bench("bf16", w, roof);
        mk_cuda_wt_free(&w);
        w = dev_fp8(32768, 8192);
        gemv_bench("fp8 e4m3 128x128 f32", w, roof);
        mk_cuda_wt_free(&w);
        w = dev_mxfp4(32768, 8192);
        gemv_bench("mxfp4", w, roof);
        mk_cuda_wt_free(&w);
        /* the 30B decode's own shapes (one launch each, so the launch is in the time): the attention's
         * output projection, a q-sized one and lm_head */
        w = dev_affine(2048, 4096, 4, 64, 0.01f);
        gemv_bench("affine4 g64 bf16 (o_proj)", w, roof);
        mk_cuda_wt_free(&w);
        w = dev_affine(4096, 2048, 4, 64, 0.01f);
        gemv_bench("affine4 g64 bf16 (q_proj)", w, roof);
        mk_cuda_wt_free(&w);
        w = dev_affine(151936, 2048, 4, 64, 0.01f);
        gemv_bench("affine4 g64 bf16 (lm_head)", w, roof);
        mk_cuda_wt_free(&w);
    }
    if (!only_gemv) {
        shape_t q3 = {"Qwen3-30B-A3B", quick ? 4 : 48, 2048, 128, 8, 768, 0, false};
        moe_bench(q3, roof);
        shape_t q35 = {"Qwen3.5-35B-A3B", quick ? 4 : 40, 2048, 256, 8, 512, 512, true};
        moe_bench(q35, roof);
    }
    printf("\n%-46s %10s %10s %8s %10s\n", "what", "ms", "GB/s", "of copy", "tok/s");
    printf("%-46s %10s %10.1f %8s %10s\n", "copy D2D (roofline)", "-", roof / 1e9, "100%", "-");
    for (const row_t &r : g_rows) {
        if (r.tps > 0)
            printf("%-46s %10.4f %10.1f %7.1f%% %10.0f\n", r.what, r.ms, r.gbs, 100 * r.frac, r.tps);
        else
            printf("%-46s %10.4f %10.1f %7.1f%% %10s\n", r.what, r.ms, r.gbs, 100 * r.frac, "-");
    }
    return 0;
}
