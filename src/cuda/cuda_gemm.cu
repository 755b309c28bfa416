/* The CUDA backend's matmul for batches (prefill chunks, batched decode of
 * more than MM_GEMV_MAX tokens, an expert's routed rows): tensor-core GEMMs
 * through cuBLAS, for every mk_wt format.
 *
 * Tensor cores multiply bf16 (or f16, tf32) operands; rounding x and W to
 * bf16 once (what serving engines do) costs up to 2^-8 relative per
 * product, far outside the backend's matmul bound (rel L2 1e-5 against a
 * double reference, test_backend_ops) and, across dozens of layers, the
 * fixtures' logits bound. A float32 value v (24 significant bits) is
 * exactly the sum of three bf16 values (8 bits each), v = v1 + v2 + v3 with
 * v1 = bf16(v), v2 = bf16(v - v1), v3 = v - v1 - v2 (normal range). So
 * MK_CUDA_GEMM_SPLIT (the default where the engine's prefill is float,
 * MK_CUDA_GEMM_AUTO) splits x that way and sums, in float32 with
 * the small terms first, the products of order 2^-16 and above:
 *
 *   W exactly bf16 (bf16 checkpoints; MXFP4 = e2m1 x 2^k, MXFP8 = e4m3 x
 *   2^k, unscaled FP8): y = W x3 + W x2 + W x1, 3 GEMMs, every product
 *   exact;
 *   otherwise (affine s q + b, f16, f32, block-scaled FP8, NVFP4), W split
 *   the same way: y = W3 x1 + W2 x2 + W1 x3 + W2 x1 + W1 x2 + W1 x1, 6 GEMMs,
 *   the dropped terms of order 2^-24.
 *
 * The products are then those of the float32 kernels and the sums float32
 * (tensor-core accumulation order): the same bound as the float32 path.
 * MK_CUDA_GEMM_BF16 runs the heads' GEMM only (an approximation with its
 * own bound, the serving engines' arithmetic, for speed);
 * MK_CUDA_GEMM_GENERIC keeps the format-generic k_mm.
 *
 * W is dequantized (mkb_wel: the CPU's rounding) into bf16 tiles of at most
 * gemm_scratch bytes (all parts together; at least one row), so the scratch
 * is bounded whatever the matrix; bf16 weights with plain rows are used in
 * place. cuBLAS gets a fixed workspace, so it allocates nothing while it
 * runs. Nothing here runs inside a step recording (the caller falls back to
 * the per-token kernels there).
 *
 * cuBLAS is loaded with dlopen on the first batch, not linked: linked, its
 * relocations alone put ~210 MB into every moekit process's RSS and 80 ms
 * into its start (measured: an empty main linked with -lcublas), which
 * every CPU run, test and memory bound would carry. Where it cannot be
 * loaded the GEMM declines (k_mm computes the batch, correct and slow) and
 * mk_backend_cuda_gemm_status says why. */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#include "cuda/cuda_backend.cuh"
extern "C" {
#include "core/alloc.h"
}

#define GEMM_WS_BYTES ((size_t)32 << 20) /* cuBLAS workspace: NVIDIA's advice for Hopper */

struct mkb_gemm {
    cublasHandle_t h;
    void *ws;         /* cuBLAS workspace, GEMM_WS_BYTES */
    __nv_bfloat16 *x; /* x's three parts, x_cap elements each */
    size_t x_cap;
    __nv_bfloat16 *w; /* a W tile's parts (up to three), w_cap elements each */
    size_t w_cap;
};

/* ---- cuBLAS, loaded on first use ------------------------------------------------ */

/* the entry points cublas_v2.h's names map to (cublasCreate -> cublasCreate_v2, ...) */
static struct {
    decltype(&cublasCreate_v2) create;
    decltype(&cublasDestroy_v2) destroy;
    decltype(&cublasSetStream_v2) set_stream;
    decltype(&cublasSetWorkspace_v2) set_workspace;
    /* spelled out: C++ sees an overload set behind cublasGemmEx */
    cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void *,
                              const void *, cudaDataType, int, const void *, cudaDataType, int, const void *, void *,
                              cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
    decltype(&cublasGetStatusString) status_string;
    bool ok;
    char why[256];
} g_blas;
static pthread_once_t g_blas_once = PTHREAD_ONCE_INIT;

#define MK_STR2(x) #x
#define MK_STR(x) MK_STR2(x)

static void blas_load(void) {
    /* the major version the headers were built with; the toolkit's own
     * folder after the loader's search (it is not always in ld.so.cache) */
    static const char *const names[] = {"libcublas.so." MK_STR(CUBLAS_VER_MAJOR),
#ifdef MK_CUDA_LIBDIR
                                        MK_CUDA_LIBDIR "/libcublas.so." MK_STR(CUBLAS_VER_MAJOR),
#endif
                                        NULL};
    void *h = NULL;
    const char *err = "not found";
    for (int i = 0; names[i] && !h; i++)
        if (!(h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL)))
            err = dlerror();
    if (!h) {
        snprintf(g_blas.why, sizeof g_blas.why, "cuBLAS not loaded (%s): batches use the float32 kernel", err);
        return;
    }
#define MK_SYM(field, name)                                                               \
    if (!(*(void **)&g_blas.field = dlsym(h, name))) {                                    \
        snprintf(g_blas.why, sizeof g_blas.why, "cuBLAS has no %s: batches use the float32 kernel", name); \
        return;                                                                           \
    }
    MK_SYM(create, "cublasCreate_v2")
    MK_SYM(destroy, "cublasDestroy_v2")
    MK_SYM(set_stream, "cublasSetStream_v2")
    MK_SYM(set_workspace, "cublasSetWorkspace_v2")
    MK_SYM(gemm_ex, "cublasGemmEx")
    MK_SYM(status_string, "cublasGetStatusString")
#undef MK_SYM
    g_blas.ok = true; /* the library stays loaded for the process's life */
}

static bool blas_ready(void) {
    pthread_once(&g_blas_once, blas_load);
    return g_blas.ok;
}

static mk_status blas_fail(cublasStatus_t st, const char *what) {
    return mk_err(st == CUBLAS_STATUS_ALLOC_FAILED ? MK_E_NOMEM : MK_E_INTERNAL, "cuBLAS: %s: %s (%d)", what,
                  g_blas.status_string(st), (int)st);
}

extern "C" const char *mk_backend_cuda_gemm_status(void) {
    return blas_ready() ? "cuBLAS loaded: batches on tensor cores" : g_blas.why;
}

void mkb_gemm_free(mkb_ctx *c) {
    mkb_gemm *g = c->gemm;
    if (!g)
        return;
    if (g->h)
        (void)g_blas.destroy(g->h);
    mk_cuda_free(g->ws);
    mk_cuda_free(g->x);
    mk_cuda_free(g->w);
    free(g);
    c->gemm = NULL;
}

/* The handle and workspace, made on first use (a backend that never runs a
 * batch never loads cuBLAS's kernels). */
static mkb_gemm *gemm_ctx(mkb_ctx *c) {
    if (c->gemm)
        return c->gemm;
    mkb_gemm *g = (mkb_gemm *)mk_calloc(1, sizeof *g);
    if (!g) {
        mkb_fail(c, mk_err(MK_E_NOMEM, "no memory for the CUDA backend's GEMM state"));
        return NULL;
    }
    c->gemm = g;
    cublasStatus_t st = g_blas.create(&g->h);
    mk_status s = st == CUBLAS_STATUS_SUCCESS ? MK_OK : blas_fail(st, "creating a handle");
    if (s == MK_OK && (st = g_blas.set_stream(g->h, c->s)) != CUBLAS_STATUS_SUCCESS)
        s = blas_fail(st, "setting the stream");
    if (s == MK_OK)
        s = mk_cuda_malloc(&g->ws, GEMM_WS_BYTES, "the cuBLAS workspace");
    if (s == MK_OK && (st = g_blas.set_workspace(g->h, g->ws, GEMM_WS_BYTES)) != CUBLAS_STATUS_SUCCESS)
        s = blas_fail(st, "setting the workspace");
    if (s != MK_OK) {
        if (g->h)
            (void)g_blas.destroy(g->h);
        mk_cuda_free(g->ws);
        free(g);
        c->gemm = NULL;
        mkb_fail(c, s);
        return NULL;
    }
    return g;
}

/* Grow a three-part bf16 scratch to `n` elements per part. cudaFree waits
 * for the device, so the old buffer is no longer read by queued work. */
static bool grow(mkb_ctx *c, __nv_bfloat16 **p, size_t *cap, size_t n, const char *what) {
    if (n <= *cap)
        return true;
    mk_cuda_free(*p);
    *p = NULL;
    *cap = 0;
    mk_status s = mk_cuda_malloc((void **)p, 3 * n * sizeof(__nv_bfloat16), what);
    if (s != MK_OK) {
        mkb_fail(c, s);
        return false;
    }
    *cap = n;
    return true;
}

/* v = p[0] + p[1] + p[2] exactly (each part rounded to nearest even from
 * what the previous parts left; parts 1.. NULL: the head only) */
__device__ __forceinline__ void split3(float v, __nv_bfloat16 *p0, __nv_bfloat16 *p1, __nv_bfloat16 *p2) {
    const __nv_bfloat16 a = __float2bfloat16_rn(v);
    *p0 = a;
    if (!p1)
        return;
    const float r = v - __bfloat162float(a); /* exact (Sterbenz / fewer bits) */
    const __nv_bfloat16 b = __float2bfloat16_rn(r);
    *p1 = b;
    *p2 = __float2bfloat16_rn(r - __bfloat162float(b));
}

/* x [m] into parts at x, x + cap, x + 2 cap (heads only when !all) */
__global__ void k_split_x(const float *__restrict__ x, int64_t m, __nv_bfloat16 *__restrict__ p, int64_t cap,
                          bool all) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < m; i += (int64_t)gridDim.x * blockDim.x)
        split3(x[i], p + i, all ? p + cap + i : NULL, all ? p + 2 * cap + i : NULL);
}

/* Rows [r0, r0 + gridDim.y) of W dequantized (the CPU's rounding) and split
 * into parts at p, p + cap, p + 2 cap (heads only when !all). One block row
 * per weight row, columns over the x dimension. */
__global__ void k_split_w(mkb_w w, int64_t r0, __nv_bfloat16 *__restrict__ p, int64_t cap, bool all) {
    const int64_t r = r0 + blockIdx.y, o = (int64_t)blockIdx.y * w.cols;
    for (int64_t col = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; col < w.cols;
         col += (int64_t)gridDim.x * blockDim.x)
        split3(mkb_wel(w, r, col), p + o + col, all ? p + cap + o + col : NULL, all ? p + 2 * cap + o + col : NULL);
}

/* Whether every dequantized value of w is exactly a bf16 (W_lo == 0). */
static bool bf16_exact(const mk_wt *w) {
    switch (w->fmt) {
    case MK_WF_BF16:
    case MK_WF_MXFP4: /* e2m1 (1 mantissa bit) x e8m0 */
    case MK_WF_MXFP8: /* e4m3 (3 bits) x e8m0 */
        return true;
    case MK_WF_FP8_E4M3:
    case MK_WF_FP8_E5M2: return w->scales == NULL;
    default: return false;
    }
}

/* y[:, r0:r0+nr] (+)= A[nr, K] . X[n, K]^T, row-major y of leading dim ldy:
 * in cuBLAS's column-major terms Y^T[nr x n] = (A^T)^T X^T. */
static cublasStatus_t gemm(mkb_gemm *g, const __nv_bfloat16 *a, int64_t lda, const __nv_bfloat16 *x, int64_t n,
                           int64_t nr, int64_t k, float *y, int64_t ldy, bool acc) {
    const float one = 1.0f, zero = 0.0f;
    return g_blas.gemm_ex(g->h, CUBLAS_OP_T, CUBLAS_OP_N, (int)nr, (int)n, (int)k, &one, a, CUDA_R_16BF, (int)lda,
                        x, CUDA_R_16BF, (int)k, acc ? &one : &zero, y, CUDA_R_32F, (int)ldy, CUBLAS_COMPUTE_32F,
                        CUBLAS_GEMM_DEFAULT);
}

bool mkb_matmul_gemm(mkb_ctx *c, const mkb_entry *e, const float *x, int64_t n, float *y) {
    const int mode = mkb_gemm_mode(c);
    const int64_t K = e->dev.cols, R = e->dev.rows;
    if (mode == MK_CUDA_GEMM_GENERIC || c->recording || K > INT32_MAX || R > INT32_MAX || n > INT32_MAX)
        return false;
    /* the int8 kernel is ours, not cuBLAS's: it runs where cuBLAS cannot be loaded */
    if (mode == MK_CUDA_GEMM_INT8 && mkb_matmul_q8(c, &e->dev, x, n, y))
        return true;
    if (!blas_ready())
        return false;
    mkb_gemm *g = gemm_ctx(c);
    if (!g)
        return true; /* the failure is recorded */
    const bool split = mode != MK_CUDA_GEMM_BF16; /* int8 mode: weights it does not take, exact */
    if (!grow(c, &g->x, &g->x_cap, (size_t)(n * K), "the GEMM's split x"))
        return true;
    const int64_t xc = (int64_t)g->x_cap;
    const unsigned xb = mkb_blocks(n * K, 256) > 4096 ? 4096 : mkb_blocks(n * K, 256);
    k_split_x<<<xb, 256, 0, c->s>>>(x, n * K, g->x, xc, split);
    mkb_launched(c, "matmul (splitting x)");
    const bool w_parts = split && !bf16_exact(&e->dev); /* W split in three too */
    /* bf16 rows used in place: no tile, no copy */
    const bool in_place = e->dev.fmt == MK_WF_BF16 && e->dw.row_bytes == K * 2;
    int64_t tile = R;
    if (!in_place) {
        const size_t per_row = (size_t)K * sizeof(__nv_bfloat16) * (w_parts ? 3 : 1);
        tile = (int64_t)(c->gemm_scratch / per_row);
        tile = tile < 1 ? 1 : tile > R ? R : tile;
        if (tile > 65535) /* gridDim.y of k_split_w */
            tile = 65535;
        if (!grow(c, &g->w, &g->w_cap, (size_t)(tile * K), "the GEMM's weight tile"))
            return true;
    }
    const int64_t wc = (int64_t)g->w_cap;
    for (int64_t r0 = 0; r0 < R; r0 += tile) {
        const int64_t nr = R - r0 < tile ? R - r0 : tile;
        const __nv_bfloat16 *w0;
        if (in_place) {
            w0 = (const __nv_bfloat16 *)e->dw.data + r0 * K;
        } else {
            const unsigned bx = mkb_blocks(K, 256) > 64 ? 64 : mkb_blocks(K, 256);
            k_split_w<<<dim3(bx, (unsigned)nr), 256, 0, c->s>>>(e->dw, r0, g->w, wc, w_parts);
            mkb_launched(c, "matmul (dequantizing a weight tile)");
            w0 = g->w;
        }
        /* (W part, x part) pairs, the smallest terms first, heads last */
        static const int exact[][2] = {{0, 2}, {0, 1}, {0, 0}};
        static const int parts[][2] = {{2, 0}, {1, 1}, {0, 2}, {1, 0}, {0, 1}, {0, 0}};
        const int(*pp)[2] = !split ? exact + 2 : w_parts ? parts : exact;
        const int np = !split ? 1 : w_parts ? 6 : 3;
        for (int i = 0; i < np; i++) {
            cublasStatus_t st = gemm(g, w0 + pp[i][0] * wc, K, g->x + pp[i][1] * xc, n, nr, K, y + r0, R, i > 0);
            if (st != CUBLAS_STATUS_SUCCESS) {
                mkb_fail(c, blas_fail(st, "matmul's GEMM"));
                return true;
            }
        }
    }
    return true;
}

/* ---- the tensor-core roofline for benchmarks ------------------------------------ */

extern "C" mk_status mk_cuda_bf16_gemm_rate(int m, int n, int k, double *tflops) {
    *tflops = 0;
    cublasHandle_t h = NULL;
    void *a = NULL, *b = NULL, *cc = NULL, *ws = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    mk_status s = MK_OK;
    if (!blas_ready())
        return mk_err(MK_E_UNSUPPORTED, "%s", g_blas.why);
    cublasStatus_t st = g_blas.create(&h);
    if (st != CUBLAS_STATUS_SUCCESS)
        return blas_fail(st, "creating a handle");
    if ((s = mk_cuda_malloc(&a, (size_t)m * k * 2, "the rate's A")) == MK_OK &&
        (s = mk_cuda_malloc(&b, (size_t)k * n * 2, "the rate's B")) == MK_OK &&
        (s = mk_cuda_malloc(&cc, (size_t)m * n * 4, "the rate's C")) == MK_OK &&
        (s = mk_cuda_malloc(&ws, GEMM_WS_BYTES, "the rate's workspace")) == MK_OK) {
        (void)cudaMemset(a, 0x3c, (size_t)m * k * 2); /* bf16 0x3c3c: ~0.0115, finite */
        (void)cudaMemset(b, 0x3c, (size_t)k * n * 2);
        (void)g_blas.set_workspace(h, ws, GEMM_WS_BYTES);
        (void)cudaEventCreate(&e0);
        (void)cudaEventCreate(&e1);
        const float one = 1.0f, zero = 0.0f;
        float best = 1e30f;
        for (int rep = 0; rep < 12 && st == CUBLAS_STATUS_SUCCESS; rep++) {
            (void)cudaEventRecord(e0);
            st = g_blas.gemm_ex(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, a, CUDA_R_16BF, k, b, CUDA_R_16BF, k,
                              &zero, cc, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
            (void)cudaEventRecord(e1);
            (void)cudaEventSynchronize(e1);
            float ms = 0;
            (void)cudaEventElapsedTime(&ms, e0, e1);
            if (rep >= 2 && ms < best) /* two warm-up runs */
                best = ms;
        }
        if (st != CUBLAS_STATUS_SUCCESS)
            s = blas_fail(st, "the rate's GEMM");
        else
            *tflops = 2.0 * m * n * (double)k / (best * 1e-3) / 1e12;
        cudaError_t ce = cudaDeviceSynchronize();
        if (s == MK_OK && ce != cudaSuccess)
            s = mkc_fail(ce, "the rate's GEMM");
    }
    if (e0)
        (void)cudaEventDestroy(e0);
    if (e1)
        (void)cudaEventDestroy(e1);
    (void)g_blas.destroy(h);
    mk_cuda_free(a);
    mk_cuda_free(b);
    mk_cuda_free(cc);
    mk_cuda_free(ws);
    return s;
}
