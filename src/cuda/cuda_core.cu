/* CUDA module core (mk_cuda.h): device probe, device memory, weight upload
 * and the mapping of mk_wt views to the kernels' device views.
 *
 * Errors: every CUDA call is checked; a failure becomes an mk_status with
 * the CUDA error text and what was being done (mkc_fail). An allocation
 * failure is MK_E_NOMEM, "no device" MK_E_UNSUPPORTED, anything else
 * MK_E_INTERNAL. The module uses device 0 of the calling thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_impl.cuh"
#include "moekit/kernels.h"

mk_status mkc_fail(cudaError_t e, const char *what) {
    mk_status s = MK_E_INTERNAL;
    if (e == cudaErrorMemoryAllocation)
        s = MK_E_NOMEM;
    else if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver || e == cudaErrorInitializationError ||
             e == cudaErrorNoKernelImageForDevice || e == cudaErrorCompatNotSupportedOnDevice)
        s = MK_E_UNSUPPORTED;
    return mk_err(s, "cuda: %s: %s (%s)", what ? what : "call", cudaGetErrorString(e), cudaGetErrorName(e));
}

/* Generation 2 measured faster on the H200 and passes the same tests
 * (bench/RESULTS.md, 2026-12-03); the library reads no environment: tools
 * and tests choose with mk_cuda_set_kernels. */
static int g_kernels = 2;

extern "C" int mk_cuda_kernels(void) { return g_kernels; }

extern "C" mk_status mk_cuda_set_kernels(int gen) {
    if (gen != 1 && gen != 2)
        return mk_err(MK_E_ARG, "cuda: kernel generation must be 1 or 2, found %d", gen);
    g_kernels = gen;
    return MK_OK;
}

/* On: 8.6% faster whole-engine decode of the Qwen3-30B-A3B shape on the
 * H200, the same bits (bench/RESULTS.md, 2026-12-05) */
static bool g_moe_pdl = true;

extern "C" bool mk_cuda_moe_pdl(void) { return g_moe_pdl; }

extern "C" void mk_cuda_set_moe_pdl(bool on) { g_moe_pdl = on; }

/* On: the 30B decode 310.5 -> 322.8 tok/s on the H200, the same bits
 * (bench/RESULTS.md, 2026-12-05, session 18) */
static bool g_step_pdl = true;

extern "C" bool mk_cuda_step_pdl(void) { return g_step_pdl; }

extern "C" void mk_cuda_set_step_pdl(bool on) { g_step_pdl = on; }

/* Off: with it a standalone large GEMV (no predecessor to overlap) read
 * 5-20 points less of the copy rate on the H200 (the prefetches then race
 * their own loads) and short-context decode was 2-6% slower; only after a
 * 2048-token prompt was it 2.5% ahead (bench/RESULTS.md, 2026-12-05) */
static unsigned g_step_prefetch = 0;

extern "C" unsigned mk_cuda_step_prefetch(void) { return g_step_prefetch; }

extern "C" void mk_cuda_set_step_prefetch(unsigned what) {
    g_step_prefetch = what & (MK_CUDA_PREFETCH_GEMV | MK_CUDA_PREFETCH_ATTN);
}

static bool g_gdn_chunked = true;

extern "C" bool mk_cuda_gdn_chunked(void) { return g_gdn_chunked; }

extern "C" void mk_cuda_set_gdn_chunked(bool on) { g_gdn_chunked = on; }

static bool g_q8_pipelined = true;

extern "C" bool mk_cuda_q8_pipelined(void) { return g_q8_pipelined; }

extern "C" void mk_cuda_set_q8_pipelined(bool on) { g_q8_pipelined = on; }

static int g_q8p_stages = 0;

extern "C" int mk_cuda_q8p_stages(void) { return g_q8p_stages; }

extern "C" void mk_cuda_set_q8p_stages(int stages) { g_q8p_stages = stages == 3 || stages == 4 ? stages : 0; }

/* on since session 34: the int8 decode GEMVs with their rows copied before
 * the wait (k_gemv_q8s) measured 1.1-1.3% off a full-depth 30B step on an
 * H100 (bench/RESULTS.md session 34); the float path's k_gemv_s was neutral
 * (session 19) */
static bool g_gemv_staged = true;

extern "C" bool mk_cuda_gemv_staged(void) { return g_gemv_staged; }

extern "C" void mk_cuda_set_gemv_staged(bool on) { g_gemv_staged = on; }

static bool g_moe_staged = false;

extern "C" bool mk_cuda_moe_staged(void) { return g_moe_staged; }

extern "C" void mk_cuda_set_moe_staged(bool on) { g_moe_staged = on; }

/* off: k_gateup_q8s measured 11-13% slower than k_gateup_q8 on a
 * full-depth 30B step on an H100 (bench/RESULTS.md session 34) */
static bool g_gateup_staged = false;

extern "C" bool mk_cuda_gateup_staged(void) { return g_gateup_staged; }

extern "C" void mk_cuda_set_gateup_staged(bool on) { g_gateup_staged = on; }

/* off: +2.8 us a layer on a full-depth 30B step (bench/RESULTS.md session 35) */
static bool g_route_late = false;

extern "C" bool mk_cuda_route_late(void) { return g_route_late; }

extern "C" void mk_cuda_set_route_late(bool on) { g_route_late = on; }

/* off: neutral on the 30B cut's prefill (+0.6%, inside the rounds' spread; session 36) */
static bool g_qk_rows_warp = false;

extern "C" bool mk_cuda_qk_rows_warp(void) { return g_qk_rows_warp; }

extern "C" void mk_cuda_set_qk_rows_warp(bool on) { g_qk_rows_warp = on; }

/* off: right on the device but 9% slower on the 30B cut's prefill (session 36) */
static bool g_q8_wgmma = false;

extern "C" bool mk_cuda_q8_wgmma(void) { return g_q8_wgmma; }

extern "C" void mk_cuda_set_q8_wgmma(bool on) { g_q8_wgmma = on; }

/* 0 off, 1 every reader (MK_CUDA_NORM_FOLD_ALL), 2 the MoE router only (MK_CUDA_NORM_FOLD_ROUTER) */
static int g_norm_fold = 0;

extern "C" bool mk_cuda_norm_fold(void) { return g_norm_fold != 0; }

extern "C" int mk_cuda_norm_fold_mode(void) { return g_norm_fold; }

extern "C" void mk_cuda_set_norm_fold(bool on) { g_norm_fold = on ? MK_CUDA_NORM_FOLD_ALL : 0; }

extern "C" void mk_cuda_set_norm_fold_mode(int mode) {
    g_norm_fold = mode == MK_CUDA_NORM_FOLD_ALL || mode == MK_CUDA_NORM_FOLD_ROUTER ? mode : 0;
}

static bool g_qk_fold = false;

extern "C" bool mk_cuda_qk_fold(void) { return g_qk_fold; }

extern "C" void mk_cuda_set_qk_fold(bool on) { g_qk_fold = on; }

/* -1: follow the engine's activation setting (mk_kernels_int8_setting:
 * on unless --act-int8 off forced float; the device has its integer dot
 * product whatever CPU kernel path is active, so MK_KERNELS=ref's float
 * default is not followed); 0 / 1: mk_cuda_set_act_int8 */
static int g_act_int8 = -1;

extern "C" bool mk_cuda_act_int8(void) {
    const int v = __atomic_load_n(&g_act_int8, __ATOMIC_ACQUIRE);
    return v < 0 ? mk_kernels_int8_setting() != 0 : v != 0;
}

extern "C" void mk_cuda_set_act_int8(bool on) { __atomic_store_n(&g_act_int8, on ? 1 : 0, __ATOMIC_RELEASE); }

extern "C" void mk_cuda_reset_act_int8(void) { __atomic_store_n(&g_act_int8, -1, __ATOMIC_RELEASE); }

extern "C" int mk_cuda_act_int8_setting(void) { return __atomic_load_n(&g_act_int8, __ATOMIC_ACQUIRE); }

extern "C" void mk_cuda_restore_act_int8(int setting) {
    __atomic_store_n(&g_act_int8, setting < 0 ? -1 : setting != 0, __ATOMIC_RELEASE);
}

extern "C" bool mk_cuda_prefill_int8(void) {
    const int v = mk_kernels_prefill_int8_setting();
    return v < 0 ? mk_cuda_act_int8() : v != 0;
}

static bool g_attn_merge_fused = true;

extern "C" bool mk_cuda_attn_merge_fused(void) { return g_attn_merge_fused; }

extern "C" void mk_cuda_set_attn_merge_fused(bool on) { g_attn_merge_fused = on; }

static int g_attn_tile_gen = 3;

extern "C" int mk_cuda_attn_tile_gen(void) { return g_attn_tile_gen; }

extern "C" mk_status mk_cuda_set_attn_tile_gen(int gen) {
    if (gen < 1 || gen > 5)
        return mk_err(MK_E_ARG, "cuda: tiled prefill attention generation %d (1 to 5)", gen);
    g_attn_tile_gen = gen;
    return MK_OK;
}

/* on since session 32: -3.2..-3.7% of the step's GPU span in steady state (docs/CUDA.md session 31),
 * test_backend_ops passing with it either way on the device */
static bool g_q8_early = true;

extern "C" bool mk_cuda_q8_early(void) { return g_q8_early; }

extern "C" void mk_cuda_set_q8_early(bool on) { g_q8_early = on; }

static bool g_lookahead = false; /* off until run on a device (docs/CUDA.md sessions 27-28) */

extern "C" bool mk_cuda_lookahead(void) { return g_lookahead; }

extern "C" void mk_cuda_set_lookahead(bool on) { g_lookahead = on; }

static bool g_attn_gqa = true; /* on since session 30's device run: +4% full-depth decode, +15% after 2048 tokens */

extern "C" bool mk_cuda_attn_gqa(void) { return g_attn_gqa; }

extern "C" void mk_cuda_set_attn_gqa(bool on) { g_attn_gqa = on; }

static int g_attn_shares = 8; /* ATT_SPLIT (cuda_attn_kernel.cuh) */

extern "C" int mk_cuda_attn_shares(void) { return g_attn_shares; }

extern "C" mk_status mk_cuda_set_attn_shares(int n) {
    if (n < 1 || n > 32)
        return mk_err(MK_E_ARG, "cuda: attention shares per head must be 1 to 32, found %d", n);
    g_attn_shares = n;
    return MK_OK;
}

extern "C" mk_status mk_cuda_probe(int *ndev) {
    int n = 0;
    if (ndev)
        *ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* not sticky: clear it */
        /* whatever the driver says, "no usable device" for the caller */
        return mk_err(MK_E_UNSUPPORTED, "cuda: no usable CUDA device: %s (%s)", cudaGetErrorString(e),
                      cudaGetErrorName(e));
    }
    if (n < 1)
        return mk_err(MK_E_UNSUPPORTED, "cuda: no CUDA device present");
    cudaDeviceProp p;
    MKC_TRY(cudaGetDeviceProperties(&p, 0), "reading device 0's properties");
    if (p.major < 9)
        return mk_err(MK_E_UNSUPPORTED,
                      "cuda: device 0 (%s) is sm_%d%d; moekit's kernels are built for sm_90 (PTX for newer)",
                      p.name, p.major, p.minor);
    if (ndev)
        *ndev = n;
    return MK_OK;
}

extern "C" mk_status mk_cuda_describe(char *buf, size_t n) {
    cudaDeviceProp p;
    int drv = 0, rt = 0;
    MKC_TRY(cudaGetDeviceProperties(&p, 0), "reading device 0's properties");
    MKC_TRY(cudaDriverGetVersion(&drv), "reading the driver version");
    MKC_TRY(cudaRuntimeGetVersion(&rt), "reading the runtime version");
    snprintf(buf, n, "%s, sm_%d%d, %d SMs, %.1f GiB, L2 %d MiB, driver %d.%d, runtime %d.%d", p.name, p.major,
             p.minor, p.multiProcessorCount, (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0),
             p.l2CacheSize >> 20, drv / 1000, (drv % 1000) / 10, rt / 1000, (rt % 1000) / 10);
    return MK_OK;
}

extern "C" mk_status mk_cuda_malloc(void **dptr, size_t bytes, const char *what) {
    *dptr = NULL;
    cudaError_t e = cudaMalloc(dptr, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        *dptr = NULL;
        (void)cudaGetLastError();
        return mk_err(e == cudaErrorMemoryAllocation ? MK_E_NOMEM : MK_E_INTERNAL,
                      "cuda: allocating %zu bytes for %s: %s", bytes, what ? what : "a buffer",
                      cudaGetErrorString(e));
    }
    return MK_OK;
}

extern "C" void mk_cuda_free(void *dptr) {
    if (dptr)
        (void)cudaFree(dptr);
}

extern "C" mk_status mk_cuda_upload(void *dst, const void *src, size_t bytes) {
    MKC_TRY(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "copying to the device");
    return MK_OK;
}

extern "C" mk_status mk_cuda_download(void *dst, const void *src, size_t bytes) {
    MKC_TRY(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "copying from the device");
    return MK_OK;
}

extern "C" mk_status mk_cuda_memset(void *dst, int v, size_t bytes) {
    MKC_TRY(cudaMemset(dst, v, bytes), "filling device memory");
    return MK_OK;
}

extern "C" mk_status mk_cuda_sync(void) {
    MKC_TRY(cudaDeviceSynchronize(), "running device work");
    return MK_OK;
}

__global__ void k_fill_bw(uint32_t *p, size_t n, uint32_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t x = (uint32_t)i * 2654435761u ^ seed;
        x ^= x >> 13;
        x *= 0x5bd1e995u;
        p[i] = x ^ (x >> 15);
    }
}

static int cmp_f(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* The median time of 10 runs of op(i, arg) on the default stream (three
 * warm-up runs first, i counting all 13), in ms. */
static cudaError_t median_ms(cudaError_t (*op)(int i, void *arg), void *arg, double *ms) {
    cudaEvent_t e0 = NULL, e1 = NULL;
    float ts[10];
    cudaError_t e = cudaEventCreate(&e0);
    if (e == cudaSuccess)
        e = cudaEventCreate(&e1);
    for (int i = 0; i < 13 && e == cudaSuccess; i++) {
        e = cudaEventRecord(e0);
        if (e == cudaSuccess)
            e = op(i, arg);
        if (e == cudaSuccess)
            e = cudaEventRecord(e1);
        if (e == cudaSuccess)
            e = cudaEventSynchronize(e1);
        if (e == cudaSuccess && i >= 3)
            e = cudaEventElapsedTime(&ts[i - 3], e0, e1);
    }
    if (e0)
        (void)cudaEventDestroy(e0);
    if (e1)
        (void)cudaEventDestroy(e1);
    if (e == cudaSuccess) {
        qsort(ts, 10, sizeof ts[0], cmp_f);
        *ms = 0.5 * (ts[4] + ts[5]);
    }
    return e;
}

struct bw_args {
    void *a, *b;
    size_t bytes;
    unsigned *out;
};

/* a -> b or b -> a, alternately */
static cudaError_t op_copy(int i, void *arg) {
    const bw_args *w = (const bw_args *)arg;
    return cudaMemcpyAsync(i & 1 ? w->a : w->b, i & 1 ? w->b : w->a, w->bytes, cudaMemcpyDeviceToDevice);
}

extern "C" mk_status mk_cuda_copy_bandwidth(size_t bytes, double *gbs) {
    *gbs = 0;
    bytes &= ~(size_t)255;
    if (!bytes)
        return mk_err(MK_E_ARG, "copy bandwidth: size must be at least 256 bytes");
    void *a = NULL, *b = NULL;
    mk_status st = mk_cuda_malloc(&a, bytes, "copy bandwidth source");
    if (st == MK_OK)
        st = mk_cuda_malloc(&b, bytes, "copy bandwidth destination");
    if (st == MK_OK) {
        k_fill_bw<<<1024, 256>>>((uint32_t *)a, bytes / 4, 7u);
        k_fill_bw<<<1024, 256>>>((uint32_t *)b, bytes / 4, 11u);
        bw_args w = {a, b, bytes, NULL};
        double ms = 0;
        cudaError_t e = cudaGetLastError();
        if (e == cudaSuccess)
            e = median_ms(op_copy, &w, &ms);
        if (e != cudaSuccess)
            st = mkc_fail(e, "measuring the copy bandwidth");
        else
            *gbs = 2.0 * (double)bytes / (ms * 1e-3) / 1e9;
    }
    mk_cuda_free(a);
    mk_cuda_free(b);
    return st;
}

/* Every 16-byte word of p read once (grid-stride), folded into *out so the
 * loads stay. */
__global__ void k_read_bw(const uint4 *__restrict__ p, size_t n, unsigned *out) {
    unsigned acc = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const uint4 v = __ldg(p + i);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x9e3779b9u) /* practically never: the store only keeps the reads */
        *out = acc;
}

static cudaError_t op_read(int i, void *arg) {
    (void)i;
    const bw_args *w = (const bw_args *)arg;
    k_read_bw<<<1056, 256>>>((const uint4 *)w->a, w->bytes / 16, w->out);
    return cudaGetLastError();
}

extern "C" mk_status mk_cuda_host_read_bandwidth(size_t bytes, double *gbs) {
    *gbs = 0;
    bytes &= ~(size_t)255;
    if (!bytes)
        return mk_err(MK_E_ARG, "host read bandwidth: size must be at least 256 bytes");
    void *h = NULL;
    unsigned *out = NULL;
    cudaError_t e = cudaHostAlloc(&h, bytes, cudaHostAllocMapped | cudaHostAllocPortable);
    mk_status st = e == cudaSuccess ? MK_OK : mkc_fail(e, "pinning host memory for the read bandwidth");
    if (st == MK_OK)
        st = mk_cuda_malloc((void **)&out, sizeof *out, "host read bandwidth result");
    if (st == MK_OK) {
        memset(h, 0x5a, bytes); /* every page touched before timing */
        bw_args w = {h, NULL, bytes, out};
        double ms = 0;
        if ((e = median_ms(op_read, &w, &ms)) != cudaSuccess)
            st = mkc_fail(e, "measuring the host read bandwidth");
        else
            *gbs = (double)bytes / (ms * 1e-3) / 1e9;
    }
    if (h)
        (void)cudaFreeHost(h);
    mk_cuda_free(out);
    return st;
}

/* ---- weight views ------------------------------------------------------ */

extern "C" bool mk_cuda_wt_supported(const mk_wt *w) {
    return w && mkc_kind_of(w) >= 0;
}

static size_t sd_size(const mk_wt *w) {
    return w->sdtype == MK_DT_F32 ? 4 : 2;
}

extern "C" size_t mk_cuda_wt_row_bytes_all(const mk_wt *w) {
    size_t n = mk_wt_row_bytes(w);
    if (w->fmt == MK_WF_AFFINE && w->group > 0)
        n += 2 * (size_t)(w->cols / w->group) * sd_size(w);
    else if (w->rows > 0) /* block scales: their share of a row, rounded up */
        n += (mk_wt_scale_bytes(w) + (size_t)w->rows - 1) / (size_t)w->rows;
    return n;
}

extern "C" mk_status mk_cuda_wt_upload(const mk_wt *host, mk_wt *dev, const char *what) {
    if (!what)
        what = "weight";
    memset(dev, 0, sizeof *dev);
    MK_TRY(mk_wt_check(host, what));
    if (mkc_kind_of(host) < 0) {
        mkc_w tmp;
        return mkc_view(host, what, &tmp);
    }
    *dev = *host;
    dev->data = dev->scales = dev->biases = NULL;
    size_t nd = (size_t)host->rows * mk_wt_row_bytes(host);
    void *d = NULL, *s = NULL, *b = NULL;
    mk_status st = mk_cuda_malloc(&d, nd, what);
    if (st == MK_OK)
        st = mk_cuda_upload(d, host->data, nd);
    const size_t ns = mk_wt_scale_bytes(host);
    if (st == MK_OK && ns && host->scales) {
        st = mk_cuda_malloc(&s, ns, what);
        if (st == MK_OK)
            st = mk_cuda_upload(s, host->scales, ns);
    }
    if (st == MK_OK && ns && host->fmt == MK_WF_AFFINE) {
        st = mk_cuda_malloc(&b, ns, what);
        if (st == MK_OK)
            st = mk_cuda_upload(b, host->biases, ns);
    }
    if (st != MK_OK) {
        mk_cuda_free(d);
        mk_cuda_free(s);
        mk_cuda_free(b);
        memset(dev, 0, sizeof *dev);
        return mk_err_wrap(st, "uploading %s", what);
    }
    dev->data = d;
    dev->scales = s;
    dev->biases = b;
    return MK_OK;
}

extern "C" void mk_cuda_wt_free(mk_wt *dev) {
    if (!dev)
        return;
    mk_cuda_free((void *)dev->data);
    mk_cuda_free((void *)dev->scales);
    mk_cuda_free((void *)dev->biases);
    memset(dev, 0, sizeof *dev);
}
