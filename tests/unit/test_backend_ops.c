/* Every slot of every backend against a scalar reference, under a stated
 * bound (issue 10; the CUDA backend joins the table in issue 14 when moekit
 * is built with CUDA and a GPU is present; otherwise test_cuda_present
 * skips, printing why, and the cases run on the CPU alone).
 *
 * The table runs once per CPU kernel path the machine supports (mk_isa_set:
 * ref, avx2, avxvnni, avx512, avx512vnni), and again with int8 activations
 * (mk_kernels_set_int8), so the portable and AVX2 paths are covered on an
 * AVX-512 machine too; the CUDA backend joins the run on the default path.
 *
 * Each case builds random inputs on the host, moves them into backend
 * memory with the backend's own upload, runs the slot, downloads the result
 * and compares it with a reference written here in plain C, mostly in
 * double precision: nothing below calls the kernels under test. Weights are
 * mk_wt views in several storages; the reference reads them through
 * mk_wt_dequant_row, the portable definition every format's kernels are
 * tested against (tests/unit/test_kernels.c holds that function to its own
 * vectors).
 *
 * Bounds: data movement (copy, gather, scatter, upload/download, zero) and
 * routing decisions must be exact; float results must satisfy
 * ||ours - ref|| / ||ref|| <= 1e-5 (float32 accumulation against double:
 * a few ulps times sqrt(length) for these sizes), element-wise ones 1e-6;
 * a one-token matmul over MLX affine 4/8 bits adds the stated bound of the
 * int8-activation kernels (tol_matmul). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/mk_cuda.h"
#include "gdn_ref.h"
#include "kernels/kern_gemm_q8.h"
#include "mk_test_util.h"
#include "moekit/backend.h"
#include "moekit/backend_cuda.h"
#include "moekit/dtype.h"
#include "moekit/kernels.h"
#include "moekit/weight.h"

#define TOL_DOT 1e-5
#define TOL_ELT 1e-6

typedef struct be_case {
    const char *name;
    mk_backend *b;
    const mk_backend_i *i;
    void *ctx;
} be_case;

static mk_pool *g_pool;
static be_case g_be[4];
static int g_nbe;
static char g_no_cuda[512]; /* why the CUDA backend is not in the table */

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 11);
}
static float frand(void) { return (float)((rnd() % 200001) / 100000.0 - 1.0); } /* [-1, 1] */

static float *rvec(int64_t n) {
    float *v = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    assert_non_null(v);
    for (int64_t i = 0; i < n; i++)
        v[i] = frand();
    return v;
}

/* backend copy of n floats of host memory (NULL: zeroed) */
static void *dev(be_case *b, const void *host, size_t bytes) {
    void *p = NULL;
    assert_int_equal(b->i->alloc(b->ctx, bytes, &p), MK_OK);
    if (host)
        b->i->upload(b->ctx, p, host, bytes);
    return p;
}
static float *back(be_case *b, const void *d, size_t bytes) {
    float *h = malloc(bytes ? bytes : 1);
    assert_non_null(h);
    b->i->download(b->ctx, h, d, bytes);
    assert_int_equal(b->i->sync(b->ctx), MK_OK);
    return h;
}

static double rel(const float *a, const double *ref, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* The worst error seen per (backend, check), printed at the end so a run
 * on a device records how close each slot came to its bound. */
typedef struct worst {
    char be[8], what[48];
    double err, tol;
} worst;
static worst g_worst[256];
static int g_nworst;

static void note(const char *be, const char *what, double r, double tol) {
    char key[48];
    snprintf(key, sizeof key, "%s", what);
    char *p = strstr(key, " n="), *sp; /* the check's name without its shape */
    if (p)
        *p = '\0';
    if ((sp = strrchr(key, ' ')) && sp[1] >= '0' && sp[1] <= '9')
        *sp = '\0';
    for (int i = 0; i < g_nworst; i++)
        if (!strcmp(g_worst[i].be, be) && !strcmp(g_worst[i].what, key)) {
            if (r > g_worst[i].err)
                g_worst[i].err = r;
            return;
        }
    if (g_nworst < (int)(sizeof g_worst / sizeof g_worst[0])) {
        worst *w = &g_worst[g_nworst++];
        snprintf(w->be, sizeof w->be, "%s", be);
        snprintf(w->what, sizeof w->what, "%s", key);
        w->err = r;
        w->tol = tol;
    }
}

static void check_rel(const char *be, const char *what, const float *a, const double *ref,
                      int64_t n, double tol) {
    double r = rel(a, ref, n);
    note(be, what, r, tol);
    if (!(r <= tol))
        fail_msg("%s: %s: rel L2 %.3e > %.1e", be, what, r, tol);
}

/* ---- weights in several storages ----------------------------------------- */

typedef struct wbuf {
    mk_wt w;
    void *data, *scales, *biases;
    char name[48];
} wbuf;

/* A device backend keeps copies of the weights it has seen, keyed by host
 * address; the next case may get the same address for other weights. */
static void forget(be_case *b, const void *host, const char *name) {
    size_t before = mk_backend_cuda_weight_bytes(b->b);
    mk_backend_cuda_forget(b->b, host);
    if (strcmp(b->name, "cuda") == 0 && !(before > mk_backend_cuda_weight_bytes(b->b)))
        fail_msg("cuda: %s: no resident copy was dropped (%zu bytes before)", name, before);
}
static void forget_w(be_case *b, const wbuf *w) { forget(b, w->data, w->name); }

static void wbuf_free(wbuf *b) {
    free(b->data);
    free(b->scales);
    free(b->biases);
}

/* kind: 0 f32, 1 bf16, 2 affine 4-bit g64 (bf16 scales/biases), 3 affine
 * 8-bit g32 (f16), 4 FP8 E4M3 block 128x128 (f32 scale_inv), then every
 * other storage of mk_wt: 5 f16, 6..9 affine 2-bit g32 (f32), 3-bit g64
 * (bf16), 5-bit g128 (f16), 6-bit g32 (bf16), 10 FP8 E5M2 block 64x32
 * (bf16 scale_inv, ragged blocks), 11 FP8 E4M3 without scales, 12 MXFP4,
 * 13 MXFP8, 14 NVFP4 (global scale 0.75) */
#define W_KINDS 15
static void affine_w(wbuf *b, int bits, int group, mk_dtype sd) {
    mk_wt *w = &b->w;
    w->fmt = MK_WF_AFFINE;
    w->bits = bits;
    w->group = group;
    w->sdtype = sd;
    int64_t words = w->rows * w->cols * bits / 32, ng = w->rows * (w->cols / group);
    uint32_t *d = malloc((size_t)words * 4);
    for (int64_t i = 0; i < words; i++)
        d[i] = rnd() ^ (rnd() << 16);
    size_t es = sd == MK_DT_F32 ? 4 : 2;
    uint8_t *s = malloc((size_t)ng * es), *bi = malloc((size_t)ng * es);
    for (int64_t i = 0; i < ng; i++) {
        float sc = (0.01f + 0.02f * (frand() + 1.0f)) * 16.0f / (float)((1 << bits) - 1);
        float bs = -0.1f * (frand() + 1.0f);
        if (sd == MK_DT_F32) {
            memcpy(s + 4 * i, &sc, 4);
            memcpy(bi + 4 * i, &bs, 4);
        } else {
            uint16_t hs = sd == MK_DT_BF16 ? mk_f32_to_bf16(sc) : mk_f32_to_f16(sc);
            uint16_t hb = sd == MK_DT_BF16 ? mk_f32_to_bf16(bs) : mk_f32_to_f16(bs);
            memcpy(s + 2 * i, &hs, 2);
            memcpy(bi + 2 * i, &hb, 2);
        }
    }
    b->data = d;
    b->scales = s;
    b->biases = bi;
    snprintf(b->name, sizeof b->name, "affine %d-bit g%d %lldx%lld", bits, group, (long long)w->rows,
             (long long)w->cols);
}

/* n random bytes, none of them `avoid` (both signs) */
static uint8_t *rbytes(int64_t n, int avoid) {
    uint8_t *d = malloc((size_t)n);
    for (int64_t i = 0; i < n; i++) {
        uint8_t v = (uint8_t)rnd();
        d[i] = avoid >= 0 && (v & 0x7f) == avoid ? (uint8_t)(v ^ 1) : v;
    }
    return d;
}

static void make_w(wbuf *b, int kind, int64_t rows, int64_t cols) {
    memset(b, 0, sizeof *b);
    mk_wt *w = &b->w;
    w->rows = rows;
    w->cols = cols;
    w->global_scale = 1.0f;
    int64_t n = rows * cols;
    switch (kind) {
    case 0:
        w->fmt = MK_WF_F32;
        b->data = rvec(n);
        snprintf(b->name, sizeof b->name, "f32 %lldx%lld", (long long)rows, (long long)cols);
        break;
    case 1: {
        w->fmt = MK_WF_BF16;
        uint16_t *d = malloc((size_t)n * 2);
        for (int64_t i = 0; i < n; i++)
            d[i] = mk_f32_to_bf16(frand());
        b->data = d;
        snprintf(b->name, sizeof b->name, "bf16 %lldx%lld", (long long)rows, (long long)cols);
        break;
    }
    case 2:
    case 3: {
        int bits = kind == 2 ? 4 : 8, group = kind == 2 ? 64 : 32;
        w->fmt = MK_WF_AFFINE;
        w->bits = bits;
        w->group = group;
        w->sdtype = kind == 2 ? MK_DT_BF16 : MK_DT_F16;
        int64_t words = rows * cols * bits / 32, ng = rows * (cols / group);
        uint32_t *d = malloc((size_t)words * 4);
        for (int64_t i = 0; i < words; i++)
            d[i] = rnd() ^ (rnd() << 16);
        uint16_t *s = malloc((size_t)ng * 2), *bi = malloc((size_t)ng * 2);
        for (int64_t i = 0; i < ng; i++) {
            float sc = 0.01f + 0.02f * (frand() + 1.0f), bs = -0.1f * (frand() + 1.0f);
            s[i] = kind == 2 ? mk_f32_to_bf16(sc) : mk_f32_to_f16(sc);
            bi[i] = kind == 2 ? mk_f32_to_bf16(bs) : mk_f32_to_f16(bs);
        }
        b->data = d;
        b->scales = s;
        b->biases = bi;
        snprintf(b->name, sizeof b->name, "affine %d-bit g%d %lldx%lld", bits, group,
                 (long long)rows, (long long)cols);
        break;
    }
    case 4: {
        w->fmt = MK_WF_FP8_E4M3;
        w->block_r = w->block_c = 128;
        w->sdtype = MK_DT_F32;
        uint8_t *d = malloc((size_t)n);
        for (int64_t i = 0; i < n; i++) {
            uint8_t v = (uint8_t)rnd();
            d[i] = (v & 0x7f) == 0x7f ? (uint8_t)(v & 0xbe) : v; /* no NaN bytes */
        }
        int64_t gr = (rows + 127) / 128, gc = (cols + 127) / 128;
        float *s = malloc((size_t)(gr * gc) * 4);
        for (int64_t i = 0; i < gr * gc; i++)
            s[i] = 0.001f * (2.0f + frand());
        b->data = d;
        b->scales = s;
        snprintf(b->name, sizeof b->name, "fp8 e4m3 %lldx%lld", (long long)rows, (long long)cols);
        break;
    }
    case 5: {
        w->fmt = MK_WF_F16;
        uint16_t *d = malloc((size_t)n * 2);
        for (int64_t i = 0; i < n; i++)
            d[i] = mk_f32_to_f16(frand());
        b->data = d;
        snprintf(b->name, sizeof b->name, "f16 %lldx%lld", (long long)rows, (long long)cols);
        break;
    }
    case 6: affine_w(b, 2, 32, MK_DT_F32); break;
    case 7: affine_w(b, 3, 64, MK_DT_BF16); break;
    case 8: affine_w(b, 5, 128, MK_DT_F16); break;
    case 9: affine_w(b, 6, 32, MK_DT_BF16); break;
    case 10: {
        w->fmt = MK_WF_FP8_E5M2;
        w->block_r = 64;
        w->block_c = 32;
        w->sdtype = MK_DT_BF16;
        b->data = rbytes(n, -1); /* E5M2 exponent 31 is inf/NaN: cleared below */
        for (int64_t i = 0; i < n; i++)
            ((uint8_t *)b->data)[i] &= 0xfb;
        int64_t gr = (rows + 63) / 64, gc = (cols + 31) / 32;
        uint16_t *s = malloc((size_t)(gr * gc) * 2);
        for (int64_t i = 0; i < gr * gc; i++)
            s[i] = mk_f32_to_bf16(0.001f * (2.0f + frand()));
        b->scales = s;
        snprintf(b->name, sizeof b->name, "fp8 e5m2 b64x32 %lldx%lld", (long long)rows, (long long)cols);
        break;
    }
    case 11:
        w->fmt = MK_WF_FP8_E4M3;
        b->data = rbytes(n, 0x7f); /* no NaN bytes, no scales: W = the fp8 value */
        for (int64_t i = 0; i < n; i++)
            ((uint8_t *)b->data)[i] &= 0xbf; /* magnitudes below 2: sums stay small */
        snprintf(b->name, sizeof b->name, "fp8 e4m3 unscaled %lldx%lld", (long long)rows, (long long)cols);
        break;
    case 12:
    case 13:
    case 14: {
        int gs = kind == 14 ? 16 : 32;
        w->fmt = kind == 12 ? MK_WF_MXFP4 : kind == 13 ? MK_WF_MXFP8 : MK_WF_NVFP4;
        w->bits = kind == 13 ? 8 : 4;
        w->group = gs;
        /* mxfp8 elements: no E4M3FN NaN codes (0x7f/0xff); fp4 nibbles have none */
        b->data = rbytes(rows * cols * w->bits / 8, kind == 13 ? 0x7f : -1);
        uint8_t *s = malloc((size_t)(rows * cols / gs));
        for (int64_t i = 0; i < rows * cols / gs; i++) /* E8M0 2^-7..2^0; E4M3 0.125..2 */
            s[i] = kind == 14 ? (uint8_t)(0x28 + rnd() % 0x18) : (uint8_t)(120 + rnd() % 8);
        b->scales = s;
        if (kind == 14)
            w->global_scale = 0.75f;
        snprintf(b->name, sizeof b->name, "%s %lldx%lld", kind == 12 ? "mxfp4" : kind == 13 ? "mxfp8" : "nvfp4",
                 (long long)rows, (long long)cols);
        break;
    }
    }
    w->data = b->data;
    w->scales = b->scales;
    w->biases = b->biases;
    assert_int_equal(mk_wt_check(w, b->name), MK_OK);
}

/* W dequantized through the portable definition, as double [rows, cols] */
static double *deq(const mk_wt *w) {
    double *d = malloc((size_t)(w->rows * w->cols) * sizeof(double));
    float *row = malloc((size_t)w->cols * sizeof(float));
    for (int64_t r = 0; r < w->rows; r++) {
        mk_wt_dequant_row(w, r, row);
        for (int64_t c = 0; c < w->cols; c++)
            d[r * w->cols + c] = row[c];
    }
    free(row);
    return d;
}

/* The matmul bound: TOL_DOT, except where the CPU kernels quantize x to
 * int8 (kernels.h "Accuracy": one token times MLX affine 4/8 bits, and the
 * prefill GEMM of several tokens, which follows that setting by default and
 * quantizes each token by the same rule), which add at most
 * beta_tr = sum_b d_tb / 2 sum_{c in b} |W[r,c]| per output (d_tb = max |x_t|
 * over block b of 32 / 127): there the bound is TOL_DOT + ||beta|| / ||W x||
 * over the n tokens. Only for the CPU backend (`be`): the others compute in
 * float and keep TOL_DOT. */
static double tol_matmul(const char *be, const mk_wt *w, const double *W, const float *x, int64_t n,
                         const double *ref) {
    const bool int8 = n == 1 ? mk_kernels_int8() : mk_kernels_prefill_int8();
    if (strcmp(be, "cpu") || !int8 || w->fmt != MK_WF_AFFINE || (w->bits != 4 && w->bits != 8))
        return TOL_DOT;
    double b2 = 0, r2 = 0;
    for (int64_t t = 0; t < n; t++) {
        const float *xt = x + t * w->cols;
        for (int64_t r = 0; r < w->rows; r++) {
            double beta = 0;
            for (int64_t b = 0; b < w->cols / 32; b++) {
                float amax = 0;
                for (int i = 0; i < 32; i++)
                    amax = fmaxf(amax, fabsf(xt[b * 32 + i]));
                double wa = 0;
                for (int i = 0; i < 32; i++)
                    wa += fabs(W[r * w->cols + b * 32 + i]);
                beta += (double)(amax / 127.0f) * 0.5 * wa;
            }
            b2 += beta * beta;
            r2 += ref[t * w->rows + r] * ref[t * w->rows + r];
        }
    }
    return TOL_DOT + sqrt(b2 / r2);
}

/* ---- memory and data movement ------------------------------------------------ */

static void test_memory_and_copies(void **st) {
    (void)st;
    for (int bi = 0; bi < g_nbe; bi++) {
        be_case *b = &g_be[bi];
        /* alloc is zeroed; upload/download round trip; zero */
        void *dz = dev(b, NULL, 1000 * 4);
        float *z = back(b, dz, 1000 * 4);
        for (int i = 0; i < 1000; i++)
            assert_true(z[i] == 0.0f);
        free(z);
        b->i->buf_free(b->ctx, dz);
        float *h = rvec(777);
        void *d = dev(b, h, 777 * 4);
        float *r = back(b, d, 777 * 4);
        assert_memory_equal(r, h, 777 * 4);
        free(r);
        b->i->zero(b->ctx, (float *)d + 100, 50 * 4);
        r = back(b, d, 777 * 4);
        for (int i = 0; i < 777; i++)
            assert_true(r[i] == (i >= 100 && i < 150 ? 0.0f : h[i]));
        free(r);
        /* copy: 2-level strides (qwen3_next's ungroup shape) */
        enum { N0 = 5, N1 = 3, W = 7, SS0 = 40, SS1 = 11, DS0 = 25, DS1 = 8 };
        float *src = rvec(N0 * SS0), *dst0 = rvec(N0 * DS0);
        void *ds = dev(b, src, N0 * SS0 * 4), *dd = dev(b, dst0, N0 * DS0 * 4);
        b->i->copy(b->ctx, dd, DS0, DS1, ds, SS0, SS1, N0, N1, W);
        r = back(b, dd, N0 * DS0 * 4);
        float *ref = malloc(N0 * DS0 * 4);
        memcpy(ref, dst0, N0 * DS0 * 4);
        for (int i = 0; i < N0; i++)
            for (int j = 0; j < N1; j++)
                for (int c = 0; c < W; c++)
                    ref[i * DS0 + j * DS1 + c] = src[i * SS0 + j * SS1 + c];
        assert_memory_equal(r, ref, N0 * DS0 * 4);
        free(r);
        free(ref);
        /* gather and scatter with an index list in backend memory */
        int32_t rows[6] = {4, 0, 3, 3, 1, 2}, prow[6] = {5, 2, 0, 4, 1, 3};
        enum { DIM = 9 };
        float *tab = rvec(5 * DIM);
        void *dt = dev(b, tab, 5 * DIM * 4), *drows = dev(b, rows, sizeof rows);
        void *dg = dev(b, NULL, 6 * DIM * 4);
        b->i->gather(b->ctx, dg, dt, drows, 6, DIM);
        r = back(b, dg, 6 * DIM * 4);
        for (int i = 0; i < 6; i++)
            assert_memory_equal(r + i * DIM, tab + rows[i] * DIM, DIM * 4);
        void *dp = dev(b, prow, sizeof prow), *dsc = dev(b, NULL, 6 * DIM * 4);
        b->i->scatter(b->ctx, dsc, dg, dp, 6, DIM);
        float *r2 = back(b, dsc, 6 * DIM * 4);
        for (int i = 0; i < 6; i++)
            assert_memory_equal(r2 + prow[i] * DIM, r + i * DIM, DIM * 4);
        free(r);
        free(r2);
        /* find_nonfinite: the first NaN or infinity, or -1 */
        assert_int_equal(b->i->find_nonfinite(b->ctx, d, 777), -1);
        float bad[3] = {NAN, INFINITY, -INFINITY};
        for (int k = 0; k < 3; k++) {
            b->i->upload(b->ctx, d, h, 777 * 4);
            b->i->upload(b->ctx, (float *)d + 500 - 100 * k, &bad[k], 4);
            b->i->upload(b->ctx, (float *)d + 700, &bad[(k + 1) % 3], 4);
            assert_int_equal(b->i->find_nonfinite(b->ctx, d, 777), 500 - 100 * k);
        }
        free(h);
        free(src);
        free(dst0);
        free(tab);
        void *bufs[] = {d, ds, dd, dt, drows, dg, dp, dsc};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            b->i->buf_free(b->ctx, bufs[i]);
        assert_int_equal(b->i->sync(b->ctx), MK_OK);
    }
}

/* ---- matmul, get_rows, per-head products ------------------------------------- */

static void test_matmul_formats(void **st) {
    (void)st;
    static const int64_t shapes[][2] = {{37, 256}, {130, 384}, {5, 128}};
    for (int bi = 0; bi < g_nbe; bi++)
        for (int kind = 0; kind < W_KINDS; kind++)
            for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
                be_case *b = &g_be[bi];
                wbuf wb;
                make_w(&wb, kind, shapes[si][0], shapes[si][1]);
                int64_t R = wb.w.rows, C = wb.w.cols;
                double *W = deq(&wb.w);
                /* decode, a small batch (one GEMV per token on CUDA's fast
                 * formats), a larger one (CUDA's format-generic kernel) */
                static const int64_t ns[] = {1, 7, 19};
                for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
                    int64_t n = ns[ni];
                    float *x = rvec(n * C);
                    double *ref = calloc((size_t)(n * R), sizeof(double));
                    for (int64_t t = 0; t < n; t++)
                        for (int64_t r = 0; r < R; r++)
                            for (int64_t c = 0; c < C; c++)
                                ref[t * R + r] += W[r * C + c] * x[t * C + c];
                    void *dx = dev(b, x, (size_t)(n * C) * 4), *dy = dev(b, NULL, (size_t)(n * R) * 4);
                    b->i->matmul(b->ctx, &wb.w, dx, n, dy);
                    float *y = back(b, dy, (size_t)(n * R) * 4);
                    char what[96];
                    snprintf(what, sizeof what, "matmul %s n=%lld", wb.name, (long long)n);
                    check_rel(b->name, what, y, ref, n * R, tol_matmul(b->name, &wb.w, W, x, n, ref));
                    free(y);
                    free(x);
                    free(ref);
                    b->i->buf_free(b->ctx, dx);
                    b->i->buf_free(b->ctx, dy);
                }
                /* get_rows: exact dequantized rows */
                int32_t ids[4] = {(int32_t)(R - 1), 0, (int32_t)(R / 2), 0};
                void *di = dev(b, ids, sizeof ids), *dy = dev(b, NULL, (size_t)(4 * C) * 4);
                b->i->get_rows(b->ctx, &wb.w, di, 4, dy);
                float *y = back(b, dy, (size_t)(4 * C) * 4);
                for (int t = 0; t < 4; t++)
                    for (int64_t c = 0; c < C; c++)
                        assert_true(y[t * C + c] == (float)W[ids[t] * C + c]);
                free(y);
                b->i->buf_free(b->ctx, di);
                b->i->buf_free(b->ctx, dy);
                free(W);
                forget_w(b, &wb);
                wbuf_free(&wb);
            }
}

/* expert_mlps (optional slot): a token's experts in mixed storages, each
 * output bitwise what matmul, swiglu, matmul give for that expert on the
 * same backend (those slots are held to references above), and the float
 * experts (f32, bf16) against a double SwiGLU MLP within TOL_DOT. */
static void test_expert_mlps(void **st) {
    (void)st;
    enum { HD = 128, ID = 64, NE = 6 };
    static const int kinds[NE] = {1, 2, 3, 0, 2, 1}; /* bf16, affine 4/64, 8/32, f32, ... */
    for (int bi = 0; bi < g_nbe; bi++) {
        be_case *b = &g_be[bi];
        if (!b->i->expert_mlps) {
            printf("  %s: no expert_mlps slot (the engine runs experts one at a time)\n", b->name);
            continue;
        }
        wbuf wg[NE], wu[NE], wd[NE];
        mk_expert ex[NE];
        const mk_expert *exs[NE];
        for (int i = 0; i < NE; i++) {
            make_w(&wg[i], kinds[i], ID, HD);
            make_w(&wu[i], kinds[i], ID, HD);
            make_w(&wd[i], kinds[i], HD, ID);
            ex[i] = (mk_expert){wg[i].w, wu[i].w, wd[i].w};
            exs[i] = &ex[i];
        }
        float *x = rvec(HD);
        void *dx = dev(b, x, HD * 4), *dy = dev(b, NULL, NE * HD * 4), *dr = dev(b, NULL, NE * HD * 4);
        void *dg = dev(b, NULL, NE * ID * 4), *du = dev(b, NULL, NE * ID * 4);
        float *ys[NE];
        for (int i = 0; i < NE; i++)
            ys[i] = (float *)dy + i * HD;
        b->i->expert_mlps(b->ctx, exs, NE, dx, ys, dg, du);
        for (int i = 0; i < NE; i++) { /* one at a time through the slots */
            b->i->matmul(b->ctx, &ex[i].gate, dx, 1, dg);
            b->i->matmul(b->ctx, &ex[i].up, dx, 1, du);
            b->i->swiglu(b->ctx, dg, dg, du, ID);
            b->i->matmul(b->ctx, &ex[i].down, dg, 1, (float *)dr + i * HD);
        }
        float *y = back(b, dy, NE * HD * 4), *yr = back(b, dr, NE * HD * 4);
        assert_memory_equal(y, yr, NE * HD * 4);
        for (int i = 0; i < NE; i++) {
            if (kinds[i] > 1)
                continue;
            double *G = deq(&ex[i].gate), *U = deq(&ex[i].up), *D = deq(&ex[i].down), h[ID], ref[HD];
            for (int r = 0; r < ID; r++) {
                double gs = 0, us = 0;
                for (int c = 0; c < HD; c++) {
                    gs += G[r * HD + c] * x[c];
                    us += U[r * HD + c] * x[c];
                }
                h[r] = gs / (1.0 + exp(-gs)) * us;
            }
            for (int r = 0; r < HD; r++) {
                ref[r] = 0;
                for (int c = 0; c < ID; c++)
                    ref[r] += D[r * ID + c] * h[c];
            }
            char what[64];
            snprintf(what, sizeof what, "expert_mlps %s", wg[i].name);
            check_rel(b->name, what, y + i * HD, ref, HD, TOL_DOT);
            free(G);
            free(U);
            free(D);
        }
        free(y);
        free(yr);
        free(x);
        void *bufs[] = {dx, dy, dr, dg, du};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            b->i->buf_free(b->ctx, bufs[i]);
        for (int i = 0; i < NE; i++) {
            wbuf_free(&wg[i]);
            wbuf_free(&wu[i]);
            wbuf_free(&wd[i]);
        }
    }
}

/* attention_each (optional): five sequences of one batched decode step at
 * positions 0 to 140 (one past 128 rows: several shares of the split walk),
 * GQA and an MLA-like latent cache (v = k, strided, dv < dk), each output
 * bitwise the one-sequence attention after the caller wrote the new rows,
 * and each cache's row pos0 then holding exactly the new rows (the slot
 * writes them: their place starts as NaN); a call it cannot take (a
 * two-token entry) declines, changing nothing. */
static void test_attention_each(void **st) {
    (void)st;
    enum { NS = 5 };
    static const int64_t pos[NS] = {0, 3, 140, 37, 129};
    struct { int nh, nkv, dk, dv; bool lat; } shapes[] = {{8, 2, 64, 64, false}, {4, 1, 80, 64, true}};
    for (int bi = 0; bi < g_nbe; bi++) {
        be_case *b = &g_be[bi];
        if (!b->i->attention_each) {
            printf("  %s: no attention_each (the engine attends per sequence)\n", b->name);
            continue;
        }
        for (int si = 0; si < 2; si++) {
            const int nh = shapes[si].nh, nkv = shapes[si].nkv, dk = shapes[si].dk, dv = shapes[si].dv;
            const bool lat = shapes[si].lat;
            const int64_t ks = (int64_t)nkv * dk, vs = lat ? ks : (int64_t)nkv * dv;
            float *q = rvec(NS * nh * dk), *kn = rvec(NS * ks), *vn = rvec(NS * vs);
            void *dq = dev(b, q, (size_t)(NS * nh * dk) * 4), *dkn = dev(b, kn, (size_t)(NS * ks) * 4);
            void *dvn = dev(b, vn, (size_t)(NS * vs) * 4);
            void *dout = dev(b, NULL, (size_t)(NS * nh * dv) * 4), *dref = dev(b, NULL, (size_t)(NS * nh * dv) * 4);
            void *kc[NS], *vc[NS], *kr[NS], *vr[NS];
            mk_attn_args a[NS];
            for (int i = 0; i < NS; i++) {
                const int64_t rows = pos[i] + 1;
                float *kh = rvec(rows * ks), *vh = rvec(rows * vs);
                /* the reference caches hold the new rows; the slot's have NaN there */
                memcpy(kh + pos[i] * ks, kn + i * ks, (size_t)ks * 4);
                memcpy(vh + pos[i] * vs, vn + i * vs, (size_t)vs * 4);
                kr[i] = dev(b, kh, (size_t)(rows * ks) * 4);
                vr[i] = lat ? kr[i] : dev(b, vh, (size_t)(rows * vs) * 4);
                for (int64_t j = 0; j < ks; j++)
                    kh[pos[i] * ks + j] = NAN;
                for (int64_t j = 0; j < vs; j++)
                    vh[pos[i] * vs + j] = NAN;
                kc[i] = dev(b, kh, (size_t)(rows * ks) * 4);
                vc[i] = lat ? kc[i] : dev(b, vh, (size_t)(rows * vs) * 4);
                free(kh);
                free(vh);
                a[i] = (mk_attn_args){.q = (float *)dq + (int64_t)i * nh * dk, .k = kc[i], .v = vc[i],
                                      .out = (float *)dout + (int64_t)i * nh * dv, .n = 1, .pos0 = pos[i],
                                      .n_heads = nh, .n_kv = nkv, .dk = dk, .dv = dv, .scale = 0.125f,
                                      .k_stride = lat ? ks : 0, .v_stride = lat ? ks : 0,
                                      .k_new = (float *)dkn + i * ks, .v_new = lat ? (float *)dkn + i * ks
                                                                                   : (float *)dvn + i * vs};
            }
            mk_attn_args bad[NS];
            memcpy(bad, a, sizeof bad);
            bad[2].n = 2;
            assert_false(b->i->attention_each(b->ctx, bad, NS));
            float *k2 = back(b, kc[2], (size_t)((pos[2] + 1) * ks) * 4);
            assert_true(isnan(k2[pos[2] * ks])); /* declined: nothing written */
            free(k2);
            const unsigned long long gl = mk_cuda_attn_gqa_launches();
            assert_true(b->i->attention_each(b->ctx, a, NS));
            /* CUDA: the batch grouped by kv head where each sequence alone is (the GQA shape, the switch
             * on: one launch), k_attn_each otherwise (the latent shape: k = v) */
            if (!strcmp(b->name, "cuda")) {
                const unsigned long long gn = mk_cuda_attn_gqa_launches() - gl;
                assert_true(gn <= (mk_cuda_attn_gqa() && !lat ? 1u : 0u));
                if (mk_cuda_attn_gqa() && !lat && gn == 0) /* (its shared memory not granted here) */
                    printf("  cuda: attention_each GQA: k_attn_gqa_each declined on this device\n");
            }
            for (int i = 0; i < NS; i++) {
                mk_attn_args one = a[i];
                one.k = kr[i];
                one.v = vr[i];
                one.k_new = one.v_new = NULL;
                one.out = (float *)dref + (int64_t)i * nh * dv;
                b->i->attention(b->ctx, &one);
            }
            const size_t ob = (size_t)(NS * nh * dv) * 4;
            float *y = back(b, dout, ob), *yr = back(b, dref, ob);
            for (int i = 0; i < NS; i++) {
                if (memcmp(y + (size_t)i * nh * dv, yr + (size_t)i * nh * dv, (size_t)nh * dv * 4))
                    fail_msg("%s: attention_each %s: sequence %d (position %lld) not bitwise its own attention",
                             b->name, lat ? "latent" : "GQA", i, (long long)pos[i]);
                const size_t cb = (size_t)((pos[i] + 1) * ks) * 4;
                float *c1 = back(b, kc[i], cb), *c2 = back(b, kr[i], cb);
                if (memcmp(c1, c2, cb))
                    fail_msg("%s: attention_each %s: sequence %d's key cache differs from the written one",
                             b->name, lat ? "latent" : "GQA", i);
                free(c1);
                free(c2);
                if (!lat) {
                    const size_t vb = (size_t)((pos[i] + 1) * vs) * 4;
                    c1 = back(b, vc[i], vb);
                    c2 = back(b, vr[i], vb);
                    if (memcmp(c1, c2, vb))
                        fail_msg("%s: attention_each: sequence %d's value cache differs from the written one",
                                 b->name, i);
                    free(c1);
                    free(c2);
                }
            }
            printf("  %s: attention_each %s, %d sequences at positions 0..140: bitwise, rows written\n", b->name,
                   lat ? "latent (v = k)" : "GQA", NS);
            free(y);
            free(yr);
            for (int i = 0; i < NS; i++) {
                b->i->buf_free(b->ctx, kc[i]);
                b->i->buf_free(b->ctx, kr[i]);
                if (!lat) {
                    b->i->buf_free(b->ctx, vc[i]);
                    b->i->buf_free(b->ctx, vr[i]);
                }
            }
            b->i->buf_free(b->ctx, dq);
            b->i->buf_free(b->ctx, dkn);
            b->i->buf_free(b->ctx, dvn);
            b->i->buf_free(b->ctx, dout);
            b->i->buf_free(b->ctx, dref);
            free(q);
            free(kn);
            free(vn);
        }
    }
}

/* The batched decode slots (optional): matmul_each over 5 tokens, every
 * row bitwise what matmul gives that token alone (n == 1), on every weight
 * kind; expert_mlps_each over experts in mixed storages with 1 to 3
 * tokens each, every row bitwise the one-token matmul, swiglu, matmul
 * (those slots are held to references above). */
static void test_batch_slots(void **st) {
    (void)st;
    enum { HD = 128, ID = 64, NE = 5, NT = 5 };
    for (int bi = 0; bi < g_nbe; bi++) {
        be_case *b = &g_be[bi];
        if (!b->i->matmul_each && !b->i->expert_mlps_each) {
            printf("  %s: no batched decode slots (the engine loops over tokens)\n", b->name);
            continue;
        }
        if (b->i->matmul_each)
            for (int kind = 0; kind < W_KINDS; kind++) {
                wbuf wb;
                make_w(&wb, kind, 37, 256);
                int64_t R = wb.w.rows, C = wb.w.cols;
                float *x = rvec(NT * C);
                void *dx = dev(b, x, (size_t)(NT * C) * 4), *dy = dev(b, NULL, (size_t)(NT * R) * 4);
                void *dr = dev(b, NULL, (size_t)(NT * R) * 4);
                b->i->matmul_each(b->ctx, &wb.w, dx, NT, dy);
                for (int t = 0; t < NT; t++)
                    b->i->matmul(b->ctx, &wb.w, (float *)dx + t * C, 1, (float *)dr + t * R);
                float *y = back(b, dy, (size_t)(NT * R) * 4), *yr = back(b, dr, (size_t)(NT * R) * 4);
                if (memcmp(y, yr, (size_t)(NT * R) * 4))
                    fail_msg("%s: matmul_each %s: not bitwise the one-token matmul", b->name, wb.name);
                free(y);
                free(yr);
                free(x);
                b->i->buf_free(b->ctx, dx);
                b->i->buf_free(b->ctx, dy);
                b->i->buf_free(b->ctx, dr);
                forget_w(b, &wb);
                wbuf_free(&wb);
            }
        if (!b->i->expert_mlps_each)
            continue;
        static const int kinds[NE] = {1, 2, 3, 0, 2};
        static const int64_t ns[NE] = {2, 1, 3, 2, 1};
        wbuf wg[NE], wu[NE], wd[NE];
        mk_expert ex[NE];
        const mk_expert *exs[NE];
        const float *xs[NE];
        float *ys[NE];
        int64_t tot = 0;
        for (int i = 0; i < NE; i++) {
            make_w(&wg[i], kinds[i], ID, HD);
            make_w(&wu[i], kinds[i], ID, HD);
            make_w(&wd[i], kinds[i], HD, ID);
            ex[i] = (mk_expert){wg[i].w, wu[i].w, wd[i].w};
            exs[i] = &ex[i];
            tot += ns[i];
        }
        float *x = rvec(tot * HD);
        void *dx = dev(b, x, (size_t)(tot * HD) * 4), *dy = dev(b, NULL, (size_t)(tot * HD) * 4);
        void *dr = dev(b, NULL, (size_t)(tot * HD) * 4);
        void *dg = dev(b, NULL, (size_t)(tot * ID) * 4), *du = dev(b, NULL, (size_t)(tot * ID) * 4);
        for (int i = 0, off = 0; i < NE; off += (int)ns[i], i++) {
            xs[i] = (float *)dx + off * HD;
            ys[i] = (float *)dy + off * HD;
        }
        b->i->expert_mlps_each(b->ctx, exs, NE, xs, ns, ys, dg, du);
        for (int i = 0, off = 0; i < NE; off += (int)ns[i], i++)
            for (int t = 0; t < ns[i]; t++) { /* each token alone through the slots */
                const float *xt = (float *)dx + (off + t) * HD;
                b->i->matmul(b->ctx, &ex[i].gate, xt, 1, dg);
                b->i->matmul(b->ctx, &ex[i].up, xt, 1, du);
                b->i->swiglu(b->ctx, dg, dg, du, ID);
                b->i->matmul(b->ctx, &ex[i].down, dg, 1, (float *)dr + (off + t) * HD);
            }
        float *y = back(b, dy, (size_t)(tot * HD) * 4), *yr = back(b, dr, (size_t)(tot * HD) * 4);
        assert_memory_equal(y, yr, (size_t)(tot * HD) * 4);
        free(y);
        free(yr);
        free(x);
        void *bufs[] = {dx, dy, dr, dg, du};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            b->i->buf_free(b->ctx, bufs[i]);
        for (int i = 0; i < NE; i++) {
            wbuf_free(&wg[i]);
            wbuf_free(&wu[i]);
            wbuf_free(&wd[i]);
        }
    }
}

static void test_head_matmul(void **st) {
    (void)st;
    /* kv_b-like weight: nH heads of (dn + dvh) rows, kl columns */
    enum { NH = 3, DN = 5, DVH = 4, KL = 128, NT = 2 };
    for (int bi = 0; bi < g_nbe; bi++)
        for (int kind = 0; kind < W_KINDS; kind++) {
            be_case *b = &g_be[bi];
            wbuf wb;
            make_w(&wb, kind, NH * (DN + DVH), KL);
            double *W = deq(&wb.w);
            /* head_matmul: y[t,h][0..DVH) = W_v_h x[t,h] (r0 = DN) */
            float *x = rvec(NT * NH * KL);
            void *dx = dev(b, x, sizeof(float) * NT * NH * KL);
            void *dy = dev(b, NULL, sizeof(float) * NT * NH * DVH);
            mk_head_mm_args a = {.w = &wb.w, .r0 = DN, .hstep = DN + DVH, .nr = DVH, .n_heads = NH,
                                 .n = NT, .x = dx, .x_tok = NH * KL, .x_head = KL, .y = dy,
                                 .y_tok = NH * DVH, .y_head = DVH};
            b->i->head_matmul(b->ctx, &a);
            float *y = back(b, dy, sizeof(float) * NT * NH * DVH);
            double ref[NT * NH * DVH] = {0};
            for (int t = 0; t < NT; t++)
                for (int h = 0; h < NH; h++)
                    for (int r = 0; r < DVH; r++)
                        for (int c = 0; c < KL; c++)
                            ref[(t * NH + h) * DVH + r] +=
                                W[(DN + h * (DN + DVH) + r) * KL + c] * x[(t * NH + h) * KL + c];
            char what[96];
            snprintf(what, sizeof what, "head_matmul %s", wb.name);
            check_rel(b->name, what, y, ref, NT * NH * DVH, TOL_DOT);
            free(y);
            /* head_matmul_t: y[t,h][0..KL) = W_k_h^T q[t,h][0..DN) (r0 = 0) */
            float *q = rvec(NT * NH * DN);
            void *dq = dev(b, q, sizeof(float) * NT * NH * DN);
            void *dz = dev(b, NULL, sizeof(float) * NT * NH * KL);
            mk_head_mm_args at = {.w = &wb.w, .r0 = 0, .hstep = DN + DVH, .nr = DN, .n_heads = NH,
                                  .n = NT, .x = dq, .x_tok = NH * DN, .x_head = DN, .y = dz,
                                  .y_tok = NH * KL, .y_head = KL};
            b->i->head_matmul_t(b->ctx, &at);
            float *z = back(b, dz, sizeof(float) * NT * NH * KL);
            double reft[NT * NH * KL] = {0};
            for (int t = 0; t < NT; t++)
                for (int h = 0; h < NH; h++)
                    for (int i = 0; i < DN; i++)
                        for (int c = 0; c < KL; c++)
                            reft[(t * NH + h) * KL + c] +=
                                W[(h * (DN + DVH) + i) * KL + c] * q[(t * NH + h) * DN + i];
            snprintf(what, sizeof what, "head_matmul_t %s", wb.name);
            check_rel(b->name, what, z, reft, NT * NH * KL, TOL_DOT);
            free(z);
            free(q);
            free(x);
            free(W);
            void *bufs[] = {dx, dy, dq, dz};
            for (int i = 0; i < 4; i++)
                b->i->buf_free(b->ctx, bufs[i]);
            forget_w(b, &wb);
            wbuf_free(&wb);
        }
}

/* ---- norms, rope, element-wise ------------------------------------------------ */

static void test_norms_rope_eltwise(void **st) {
    (void)st;
    enum { ROWS = 6, DIM = 48 };
    const float eps = 1e-6f;
    for (int bi = 0; bi < g_nbe; bi++) {
        be_case *b = &g_be[bi];
        float *x = rvec(ROWS * DIM), *g = rvec(DIM), *z = rvec(ROWS * DIM);
        double ref[ROWS * DIM];
        /* rmsnorm with strides (writes a sub-range of wider rows) */
        void *dx = dev(b, x, sizeof(float) * ROWS * DIM), *dg = dev(b, g, sizeof(float) * DIM);
        void *dy = dev(b, NULL, sizeof(float) * ROWS * DIM);
        b->i->rmsnorm(b->ctx, dy, DIM, dx, DIM, dg, ROWS, DIM, eps);
        float *y = back(b, dy, sizeof(float) * ROWS * DIM);
        for (int r = 0; r < ROWS; r++) {
            double ss = 0;
            for (int i = 0; i < DIM; i++)
                ss += (double)x[r * DIM + i] * x[r * DIM + i];
            double inv = 1.0 / sqrt(ss / DIM + eps);
            for (int i = 0; i < DIM; i++)
                ref[r * DIM + i] = x[r * DIM + i] * inv * g[i];
        }
        check_rel(b->name, "rmsnorm", y, ref, ROWS * DIM, TOL_ELT);
        free(y);
        /* the same with g in host memory: parameter vectors (norm weights,
         * conv weights, A_log, dt_bias, router bias) may be model memory */
        b->i->zero(b->ctx, dy, sizeof(float) * ROWS * DIM);
        b->i->rmsnorm(b->ctx, dy, DIM, dx, DIM, g, ROWS, DIM, eps);
        y = back(b, dy, sizeof(float) * ROWS * DIM);
        check_rel(b->name, "rmsnorm (host g)", y, ref, ROWS * DIM, TOL_ELT);
        free(y);
        forget(b, g, "rmsnorm's host g");
        /* gated_rmsnorm in place */
        void *dx2 = dev(b, x, sizeof(float) * ROWS * DIM), *dz = dev(b, z, sizeof(float) * ROWS * DIM);
        b->i->gated_rmsnorm(b->ctx, dx2, dz, dg, ROWS, DIM, eps);
        y = back(b, dx2, sizeof(float) * ROWS * DIM);
        for (int i = 0; i < ROWS * DIM; i++)
            ref[i] *= z[i] / (1.0 + exp(-(double)z[i]));
        check_rel(b->name, "gated_rmsnorm", y, ref, ROWS * DIM, TOL_ELT);
        free(y);
        /* rope, both pairings: 2 tokens, 3 heads, head stride 20, rot 16 */
        enum { NT = 2, NHh = 3, HS = 20, ROT = 16 };
        float *v = rvec(NT * NHh * HS), *cs = rvec(NT * ROT / 2), *sn = rvec(NT * ROT / 2);
        for (int il = 0; il < 2; il++) {
            void *dv = dev(b, v, sizeof(float) * NT * NHh * HS);
            void *dc = dev(b, cs, sizeof(float) * NT * ROT / 2), *ds = dev(b, sn, sizeof(float) * NT * ROT / 2);
            b->i->rope(b->ctx, dv, NT, NHh * HS, NHh, HS, ROT, dc, ds, il == 1);
            float *o = back(b, dv, sizeof(float) * NT * NHh * HS);
            double rr[NT * NHh * HS];
            for (int t = 0; t < NT; t++)
                for (int h = 0; h < NHh; h++) {
                    const float *in = v + (t * NHh + h) * HS;
                    double *out = rr + (t * NHh + h) * HS, a[ROT];
                    for (int i = 0; i < ROT; i++) /* HF order: interleaved pairs de-interleaved */
                        a[i] = il ? in[i < ROT / 2 ? 2 * i : 2 * (i - ROT / 2) + 1] : in[i];
                    for (int i = 0; i < ROT / 2; i++) {
                        double c = cs[t * ROT / 2 + i], s = sn[t * ROT / 2 + i];
                        out[i] = a[i] * c - a[i + ROT / 2] * s;
                        out[i + ROT / 2] = a[i + ROT / 2] * c + a[i] * s;
                    }
                    for (int i = ROT; i < HS; i++)
                        out[i] = in[i];
                }
            check_rel(b->name, il ? "rope interleaved" : "rope", o, rr, NT * NHh * HS, TOL_ELT);
            free(o);
            b->i->buf_free(b->ctx, dv);
            b->i->buf_free(b->ctx, dc);
            b->i->buf_free(b->ctx, ds);
        }
        /* swiglu, sigmoid_mul, axpy, gated_add */
        enum { N = 333 };
        float *p = rvec(N), *u = rvec(N);
        double re[N];
        void *dp = dev(b, p, sizeof(float) * N), *du = dev(b, u, sizeof(float) * N);
        void *dw = dev(b, NULL, sizeof(float) * N);
        b->i->swiglu(b->ctx, dw, dp, du, N);
        float *o = back(b, dw, sizeof(float) * N);
        for (int i = 0; i < N; i++)
            re[i] = p[i] / (1.0 + exp(-(double)p[i])) * u[i];
        check_rel(b->name, "swiglu", o, re, N, TOL_ELT);
        free(o);
        if (b->i->clamped_swiglu) { /* gpt_oss: inputs past the clamp (limit 7), separate and interleaved */
            float *pb = malloc(sizeof(float) * 2 * N);
            assert_non_null(pb);
            for (int i = 0; i < N; i++) {
                pb[2 * i] = 10.0f * p[i];
                pb[2 * i + 1] = 10.0f * u[i];
            }
            void *dpb = dev(b, pb, sizeof(float) * 2 * N);
            for (int i = 0; i < N; i++) {
                double gg = pb[2 * i] > 7.0 ? 7.0 : pb[2 * i], uu = pb[2 * i + 1];
                uu = uu < -7.0 ? -7.0 : uu > 7.0 ? 7.0 : uu;
                re[i] = gg / (1.0 + exp(-1.702 * gg)) * (uu + 1.0);
            }
            b->i->clamped_swiglu(b->ctx, dw, dpb, (float *)dpb + 1, N, 2, 1.702f, 7.0f);
            o = back(b, dw, sizeof(float) * N);
            check_rel(b->name, "clamped_swiglu interleaved", o, re, N, TOL_ELT);
            free(o);
            float *gs = malloc(sizeof(float) * N), *us = malloc(sizeof(float) * N);
            assert_true(gs && us);
            for (int i = 0; i < N; i++) {
                gs[i] = pb[2 * i];
                us[i] = pb[2 * i + 1];
            }
            void *dgs = dev(b, gs, sizeof(float) * N), *dus = dev(b, us, sizeof(float) * N);
            b->i->clamped_swiglu(b->ctx, dus, dgs, dus, N, 1, 1.702f, 7.0f); /* y aliases up */
            o = back(b, dus, sizeof(float) * N);
            check_rel(b->name, "clamped_swiglu", o, re, N, TOL_ELT);
            free(o);
            b->i->buf_free(b->ctx, dpb);
            b->i->buf_free(b->ctx, dgs);
            b->i->buf_free(b->ctx, dus);
            free(pb);
            free(gs);
            free(us);
        }
        b->i->sigmoid_mul(b->ctx, dp, du, N);
        o = back(b, dp, sizeof(float) * N);
        for (int i = 0; i < N; i++)
            re[i] = p[i] / (1.0 + exp(-(double)u[i]));
        check_rel(b->name, "sigmoid_mul", o, re, N, TOL_ELT);
        free(o);
        b->i->upload(b->ctx, dp, p, sizeof(float) * N);
        b->i->axpy(b->ctx, dp, 0.75f, du, N);
        o = back(b, dp, sizeof(float) * N);
        for (int i = 0; i < N; i++)
            re[i] = p[i] + 0.75 * u[i];
        check_rel(b->name, "axpy", o, re, N, TOL_ELT);
        free(o);
        enum { GT = 3, GD = 111 }; /* 3 rows of 111 */
        float gl[GT] = {0.5f, -2.0f, 0.0f};
        void *dgl = dev(b, gl, sizeof gl);
        for (int gated = 0; gated < 2; gated++) {
            b->i->upload(b->ctx, dp, p, sizeof(float) * N);
            b->i->gated_add(b->ctx, dp, gated ? dgl : NULL, du, GT, GD);
            o = back(b, dp, sizeof(float) * N);
            for (int t = 0; t < GT; t++)
                for (int i = 0; i < GD; i++)
                    re[t * GD + i] = p[t * GD + i] + (gated ? 1.0 / (1.0 + exp(-(double)gl[t])) : 1.0) *
                                                         u[t * GD + i];
            check_rel(b->name, gated ? "gated_add" : "gated_add (no gate)", o, re, N, TOL_ELT);
            free(o);
        }
        void *bufs[] = {dx, dg, dy, dx2, dz, dp, du, dw, dgl};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            b->i->buf_free(b->ctx, bufs[i]);
        free(x);
        free(g);
        free(z);
        free(v);
        free(cs);
        free(sn);
        free(p);
        free(u);
    }
}

/* ---- attention ---------------------------------------------------------------- */

/* GQA (4 heads on 2 kv heads, packed cache) and MLA's one-latent-head form
 * (values = the first dv floats of each key row, row stride given).
 * devpos (one token): the position read from backend memory (pos_dev; the
 * pos0 argument is a wrong 0) and the token's k/v rows passed as k_new /
 * v_new while the cache row holds NaN: the output must match the same
 * reference, and the cache row must hold the new rows afterwards. */
static void attn_case_ws(be_case *b, int nH, int nKV, int dk, int dv, int64_t ks, int64_t vs,
                         bool mla, int64_t pos0, int64_t n, int64_t window, bool with_sinks, bool devpos,
                         const char *what) {
    int64_t T = pos0 + n;
    int64_t kst = ks ? ks : (int64_t)nKV * dk, vst = vs ? vs : (int64_t)nKV * dv;
    float *q = rvec(n * nH * dk), *k = rvec(T * kst), *v = mla ? NULL : rvec(T * vst);
    const float *vv = mla ? k : v;
    float scale = 1.0f / sqrtf((float)dk);
    void *dq = dev(b, q, sizeof(float) * (size_t)(n * nH * dk));
    void *dk_ = dev(b, k, sizeof(float) * (size_t)(T * kst));
    void *dv_ = mla ? dk_ : dev(b, v, sizeof(float) * (size_t)(T * vst));
    void *dout = dev(b, NULL, sizeof(float) * (size_t)(n * nH * dv));
    float *sk = rvec(nH);
    for (int h = 0; h < nH; h++)
        sk[h] *= 3.0f; /* sink logits of the scores' size: they take a real share */
    void *dsk = with_sinks ? dev(b, sk, sizeof(float) * (size_t)nH) : NULL;
    mk_attn_args a = {.q = dq, .k = dk_, .v = dv_, .out = dout, .n = n, .pos0 = pos0,
                      .n_heads = nH, .n_kv = nKV, .dk = dk, .dv = dv, .scale = scale,
                      .k_stride = ks, .v_stride = vs, .window = window, .sinks = dsk};
    void *dkn = NULL, *dvn = NULL, *dpos = NULL;
    if (devpos) {
        assert_true(n == 1);
        float *nan = malloc(sizeof(float) * (size_t)(kst > vst ? kst : vst));
        for (int64_t i = 0; i < (kst > vst ? kst : vst); i++)
            nan[i] = NAN;
        dkn = dev(b, k + pos0 * kst, sizeof(float) * (size_t)kst);
        dvn = mla ? dkn : dev(b, v + pos0 * vst, sizeof(float) * (size_t)vst);
        b->i->upload(b->ctx, (float *)dk_ + pos0 * kst, nan, sizeof(float) * (size_t)kst);
        if (!mla)
            b->i->upload(b->ctx, (float *)dv_ + pos0 * vst, nan, sizeof(float) * (size_t)vst);
        dpos = dev(b, &pos0, sizeof pos0);
        a.pos0 = 0;
        a.pos_dev = dpos;
        a.k_new = dkn;
        a.v_new = dvn;
        free(nan);
    }
    b->i->attention(b->ctx, &a);
    float *o = back(b, dout, sizeof(float) * (size_t)(n * nH * dv));
    if (devpos) { /* the new rows landed in the cache */
        float *kr = back(b, (float *)dk_ + pos0 * kst, sizeof(float) * (size_t)kst);
        assert_memory_equal(kr, k + pos0 * kst, sizeof(float) * (size_t)kst);
        free(kr);
        if (!mla) {
            float *vr = back(b, (float *)dv_ + pos0 * vst, sizeof(float) * (size_t)vst);
            assert_memory_equal(vr, v + pos0 * vst, sizeof(float) * (size_t)vst);
            free(vr);
            b->i->buf_free(b->ctx, dvn);
        }
        b->i->buf_free(b->ctx, dkn);
        b->i->buf_free(b->ctx, dpos);
    }
    double *ref = calloc((size_t)(n * nH * dv), sizeof(double)), *p = malloc((size_t)T * sizeof(double));
    int g = nH / nKV;
    for (int64_t t = 0; t < n; t++)
        for (int h = 0; h < nH; h++) {
            int j = h / g;
            int64_t S = pos0 + t + 1, s0 = window > 0 && S > window ? S - window : 0;
            double mx = with_sinks ? sk[h] : -INFINITY, sum = 0;
            for (int64_t s = s0; s < S; s++) {
                double d = 0;
                for (int i = 0; i < dk; i++)
                    d += (double)q[(t * nH + h) * dk + i] * k[s * kst + j * dk + i];
                p[s] = d * scale;
                mx = p[s] > mx ? p[s] : mx;
            }
            if (with_sinks) /* the sink joins the denominator only */
                sum += exp(sk[h] - mx);
            for (int64_t s = s0; s < S; s++)
                sum += (p[s] = exp(p[s] - mx));
            for (int64_t s = s0; s < S; s++)
                for (int i = 0; i < dv; i++)
                    ref[(t * nH + h) * dv + i] += p[s] / sum * vv[s * vst + j * dv + i];
        }
    check_rel(b->name, what, o, ref, n * nH * dv, TOL_DOT);
    free(o);
    free(ref);
    free(p);
    free(q);
    free(k);
    free(v);
    free(sk);
    if (dsk)
        b->i->buf_free(b->ctx, dsk);
    b->i->buf_free(b->ctx, dq);
    b->i->buf_free(b->ctx, dk_);
    if (!mla)
        b->i->buf_free(b->ctx, dv_);
    b->i->buf_free(b->ctx, dout);
}

static void attn_case(be_case *b, int nH, int nKV, int dk, int dv, int64_t ks, int64_t vs,
                      bool mla, int64_t pos0, int64_t n, const char *what) {
    attn_case_ws(b, nH, nKV, dk, dv, ks, vs, mla, pos0, n, 0, false, false, what);
}

/* A replayed decode step's cases: position and new rows from backend memory */
static void attn_decode_dev_cases(be_case *b) {
    attn_case_ws(b, 4, 2, 32, 32, 0, 0, false, 1500, 1, 0, false, true,
                 "attention GQA decode at 1500, device position");
    attn_case_ws(b, 8, 2, 40, 40, 0, 0, false, 0, 1, 0, false, true, "attention GQA decode at 0, device position");
    attn_case_ws(b, 16, 1, 72, 64, 72, 72, true, 37, 1, 0, false, true,
                 "attention MLA latent decode, device position");
}

static void test_attention(void **st) {
    (void)st;
#ifdef MK_HAVE_CUDA
    const unsigned long long gl0 = mk_cuda_attn_gqa_launches(); /* the grouped decode attention's, below */
#endif
    for (int bi = 0; bi < g_nbe; bi++) {
        attn_case(&g_be[bi], 4, 2, 32, 32, 0, 0, false, 0, 9, "attention GQA prefill");
        attn_case(&g_be[bi], 4, 2, 32, 32, 0, 0, false, 1500, 1, "attention GQA decode at 1500");
        attn_case(&g_be[bi], 16, 1, 72, 64, 72, 72, true, 5, 3, "attention MLA latent");
        /* prefill chunks of many tokens (CUDA: the tiled kernel): partial
         * query and key tiles, a chunk after cached rows, head dims up to
         * 256, strided caches, MLA's latent cache (v = k) */
        attn_case(&g_be[bi], 8, 2, 128, 128, 0, 0, false, 0, 70, "attention GQA prefill 70");
        attn_case(&g_be[bi], 8, 2, 128, 128, 0, 0, false, 100, 45, "attention GQA prefill 45 at 100");
        attn_case(&g_be[bi], 4, 4, 192, 128, 0, 0, false, 7, 33, "attention dk 192 dv 128 prefill");
        attn_case(&g_be[bi], 4, 1, 256, 256, 0, 0, false, 3, 20, "attention dk 256 prefill");
        attn_case(&g_be[bi], 4, 2, 64, 64, 200, 160, false, 40, 36, "attention strided caches prefill");
        attn_case(&g_be[bi], 16, 1, 72, 64, 72, 72, true, 37, 40, "attention MLA latent prefill");
        /* CPU: query blocks of 64 rows; 80 heads on one kv head split into
         * 64 + 16, a value width that is no multiple of 16 (scalar tail) */
        attn_case(&g_be[bi], 80, 1, 48, 40, 0, 0, false, 11, 6, "attention 80 heads / 1 kv prefill");
        attn_case(&g_be[bi], 6, 3, 40, 20, 0, 0, false, 0, 50, "attention dv 20 prefill");
        attn_decode_dev_cases(&g_be[bi]);
        /* gpt_oss: sliding window (prefill across it, decode past it) and sinks */
        if (!g_be[bi].i->sinks_window) {
            printf("  %s: attention sinks / sliding window not implemented (gpt_oss refused there)\n",
                   g_be[bi].name);
            continue;
        }
        attn_case_ws(&g_be[bi], 4, 2, 64, 64, 0, 0, false, 0, 40, 16, true, false, "attention window 16 + sinks prefill");
        attn_case_ws(&g_be[bi], 4, 2, 64, 64, 0, 0, false, 300, 1, 16, true, false, "attention window 16 + sinks decode");
        attn_case_ws(&g_be[bi], 4, 2, 64, 64, 0, 0, false, 7, 5, 0, true, false, "attention sinks, full");
        attn_case_ws(&g_be[bi], 4, 2, 32, 32, 0, 0, false, 20, 6, 4, false, false, "attention window 4");
        /* windows longer than one warp's 32 rows (the CUDA kernel's first row
         * moves by the window), and a replayed decode step's device position
         * moving the window */
        attn_case_ws(&g_be[bi], 4, 2, 64, 64, 0, 0, false, 200, 24, 150, true, false, "attention window 150 + sinks, prefill past it");
        attn_case_ws(&g_be[bi], 8, 2, 64, 64, 0, 0, false, 1500, 1, 128, true, true,
                     "attention window 128 + sinks decode at 1500, device position");
        attn_case_ws(&g_be[bi], 8, 2, 64, 64, 0, 0, false, 9, 1, 128, true, true,
                     "attention window 128 + sinks decode at 9, device position");
#ifdef MK_HAVE_CUDA
        /* the decode split into 1, 16 and 32 shares per head (mk_cuda_set_attn_shares): the same bound */
        if (!strcmp(g_be[bi].name, "cuda")) {
            const int keep = mk_cuda_attn_shares();
            assert_int_equal(mk_cuda_set_attn_shares(33), MK_E_ARG);
            assert_int_equal(mk_cuda_set_attn_shares(0), MK_E_ARG);
            assert_int_equal(mk_cuda_attn_shares(), keep);
            const int shares[3] = {1, 16, 32};
            for (int i = 0; i < 3; i++) {
                char what[96];
                assert_int_equal(mk_cuda_set_attn_shares(shares[i]), MK_OK);
                snprintf(what, sizeof what, "attention GQA decode at 1500, %d shares", shares[i]);
                attn_case(&g_be[bi], 4, 2, 32, 32, 0, 0, false, 1500, 1, what);
                snprintf(what, sizeof what, "attention window 128 + sinks decode at 1500, %d shares", shares[i]);
                attn_case_ws(&g_be[bi], 8, 2, 64, 64, 0, 0, false, 1500, 1, 128, true, true, what);
            }
            assert_int_equal(mk_cuda_set_attn_shares(keep), MK_OK);
            /* the decode attention grouped by kv head (mk_cuda_set_attn_gqa), the other way than the
             * default: the same bound */
            const bool gq = mk_cuda_attn_gqa();
            const unsigned long long gl = mk_cuda_attn_gqa_launches();
            mk_cuda_set_attn_gqa(!gq);
            printf("  decode attention grouped by kv head %s:\n", gq ? "off" : "on");
            attn_case(&g_be[bi], 4, 2, 32, 32, 0, 0, false, 1500, 1, "attention GQA decode at 1500");
            attn_case(&g_be[bi], 32, 4, 128, 128, 0, 0, false, 2100, 1, "attention 32 on 4 heads decode at 2100");
            attn_decode_dev_cases(&g_be[bi]);
            attn_case_ws(&g_be[bi], 8, 2, 64, 64, 0, 0, false, 1500, 1, 128, true, true,
                         "attention window 128 + sinks decode at 1500, device position");
            attn_case_ws(&g_be[bi], 8, 2, 64, 64, 0, 0, false, 9, 1, 128, true, true,
                         "attention window 128 + sinks decode at 9, device position");
            attn_case_ws(&g_be[bi], 4, 2, 64, 64, 0, 0, false, 300, 1, 16, true, false,
                         "attention window 16 + sinks decode");
            /* on: it ran (the first version's shared memory opt-in was refused and every call fell
             * back to k_attn unseen): the 7 cases it takes (not the MLA one) */
            if (!gq)
                assert_true(mk_cuda_attn_gqa_launches() >= gl + 7);
            else /* on by default: the decode cases above ran it */
                assert_true(gl > gl0);
            mk_cuda_set_attn_gqa(gq);
            /* the tiled prefill kernel's other generations (mk_cuda_set_attn_tile_gen): the same bound */
            const int tg = mk_cuda_attn_tile_gen();
            assert_int_equal(mk_cuda_set_attn_tile_gen(0), MK_E_ARG);
            assert_int_equal(mk_cuda_set_attn_tile_gen(6), MK_E_ARG);
            assert_int_equal(mk_cuda_attn_tile_gen(), tg);
            for (int gen = 1; gen <= 5; gen++) {
                if (gen == tg)
                    continue;
                assert_int_equal(mk_cuda_set_attn_tile_gen(gen), MK_OK);
                printf("  tiled prefill attention, generation %d:\n", gen);
                attn_case(&g_be[bi], 8, 2, 128, 128, 0, 0, false, 0, 70, "attention GQA prefill 70");
                attn_case(&g_be[bi], 8, 2, 128, 128, 0, 0, false, 100, 45, "attention GQA prefill 45 at 100");
                attn_case(&g_be[bi], 8, 2, 128, 128, 0, 0, false, 30, 300, "attention GQA prefill 300 at 30");
                attn_case(&g_be[bi], 4, 4, 192, 128, 0, 0, false, 7, 33, "attention dk 192 dv 128 prefill");
                attn_case(&g_be[bi], 4, 1, 256, 256, 0, 0, false, 3, 20, "attention dk 256 prefill");
                attn_case(&g_be[bi], 4, 2, 64, 64, 200, 160, false, 40, 36, "attention strided caches prefill");
                attn_case(&g_be[bi], 16, 1, 72, 64, 72, 72, true, 37, 40, "attention MLA latent prefill");
                attn_case(&g_be[bi], 6, 3, 40, 20, 0, 0, false, 0, 50, "attention dv 20 prefill");
                attn_case_ws(&g_be[bi], 4, 2, 64, 64, 0, 0, false, 0, 40, 16, true, false, "attention window 16 + sinks prefill");
                attn_case_ws(&g_be[bi], 4, 2, 64, 64, 0, 0, false, 200, 24, 150, true, false,
                             "attention window 150 + sinks, prefill past it");
            }
            assert_int_equal(mk_cuda_set_attn_tile_gen(tg), MK_OK);
        }
#endif
    }
}

/* ---- DeepSeek sparse attention (optional slots: layernorm, dsa_select, sel) ------- */

/* One dsa_select call of n tokens at pos0 against backend.h's rule in
 * double: score(t, s) = sum_h w*w_scale * relu(q_h . k_s * scale), the best
 * m = min(topk, pos0 + t + 1) by score and, on equal scores, the lower
 * position, written ascending, -1 after. Every 5th key row is zero (its
 * score exactly 0 whatever q); with neg_w every weight is negative, so the
 * best scores are those exact zeros (the zero rows and the positions where
 * every head's dot is <= 0) and the tie rule decides. The selection must
 * equal the reference exactly. */
static void dsa_case(be_case *b, int nH, int dim, int topk, int64_t pos0, int64_t n, bool neg_w, const char *what) {
    int64_t T = pos0 + n;
    float *q = rvec(n * nH * dim), *k = rvec(T * dim), *w = rvec(n * nH);
    for (int64_t s = 0; s < T; s += 5)
        memset(k + s * dim, 0, sizeof(float) * (size_t)dim);
    for (int64_t i = 0; i < n * nH; i++)
        w[i] = neg_w ? -fabsf(w[i]) - 0.01f : fabsf(w[i]) + 0.01f;
    void *dq = dev(b, q, sizeof(float) * (size_t)(n * nH * dim)), *dk_ = dev(b, k, sizeof(float) * (size_t)(T * dim));
    void *dw = dev(b, w, sizeof(float) * (size_t)(n * nH));
    void *dsel = dev(b, NULL, sizeof(int32_t) * (size_t)(n * topk)), *dsc = dev(b, NULL, sizeof(float) * (size_t)(n * topk));
    mk_dsa_args a = {.q = dq, .k = dk_, .w = dw, .w_scale = 1.0f / sqrtf((float)nH), .scale = 1.0f / sqrtf((float)dim),
                     .sel = dsel, .sc = dsc, .n = n, .pos0 = pos0, .n_heads = nH, .dim = dim, .topk = topk};
    b->i->dsa_select(b->ctx, &a);
    int32_t *sel = (int32_t *)back(b, dsel, sizeof(int32_t) * (size_t)(n * topk));
    double *sc = malloc(sizeof(double) * (size_t)T);
    char *taken = malloc((size_t)T);
    assert_true(sc && taken);
    int64_t bad = 0, zeros = 0;
    for (int64_t t = 0; t < n; t++) {
        int64_t S = pos0 + t + 1, m = S < topk ? S : topk;
        for (int64_t s = 0; s < S; s++) {
            double x = 0;
            for (int h = 0; h < nH; h++) {
                double d = 0;
                for (int i = 0; i < dim; i++)
                    d += (double)q[(t * nH + h) * dim + i] * k[s * dim + i];
                d *= 1.0 / sqrt((double)dim);
                x += (double)w[t * nH + h] / sqrt((double)nH) * (d > 0 ? d : 0);
            }
            sc[s] = x;
        }
        memset(taken, 0, (size_t)S);
        for (int64_t j = 0; j < m; j++) { /* the best not taken; strict > keeps the lower position */
            int64_t best = -1;
            for (int64_t s = 0; s < S; s++)
                if (!taken[s] && (best < 0 || sc[s] > sc[best]))
                    best = s;
            taken[best] = 1;
            zeros += sc[best] == 0;
        }
        int64_t j = 0;
        for (int64_t s = 0; s < S; s++)
            if (taken[s])
                bad += sel[t * topk + j++] != s;
        for (; j < topk; j++)
            bad += sel[t * topk + j] != -1;
    }
    printf("  %-5s %-40s %lld of %lld entries differ (%lld exact-zero ties kept)\n", b->name, what, (long long)bad,
           (long long)(n * topk), (long long)zeros);
    assert_int_equal(bad, 0);
    free(sel);
    free(sc);
    free(taken);
    free(q);
    free(k);
    free(w);
    b->i->buf_free(b->ctx, dq);
    b->i->buf_free(b->ctx, dk_);
    b->i->buf_free(b->ctx, dw);
    b->i->buf_free(b->ctx, dsel);
    b->i->buf_free(b->ctx, dsc);
}

/* Attention over a selection (mk_attn_args.sel): token t's rows a random
 * ascending subset of its past (its own position always in), ended by -1
 * or by sel_k entries, against the softmax over those rows in double. */
static void attn_sel_case(be_case *b, int nH, int nKV, int dk, int dv, bool mla, int64_t pos0, int64_t n, int sel_k,
                          const char *what) {
    int64_t T = pos0 + n, kst = mla ? dk : (int64_t)nKV * dk, vst = mla ? dk : (int64_t)nKV * dv;
    float *q = rvec(n * nH * dk), *k = rvec(T * kst), *v = mla ? NULL : rvec(T * vst);
    const float *vv = mla ? k : v;
    int32_t *sel = malloc(sizeof(int32_t) * (size_t)(n * sel_k));
    assert_non_null(sel);
    for (int64_t t = 0; t < n; t++) {
        int64_t S = pos0 + t + 1, j = 0;
        for (int64_t s = 0; s < S && j < sel_k; s++)
            if (rnd() % 3 == 0 || s == S - 1)
                sel[t * sel_k + j++] = (int32_t)s;
        for (; j < sel_k; j++)
            sel[t * sel_k + j] = -1;
    }
    float scale = 1.0f / sqrtf((float)dk);
    void *dq = dev(b, q, sizeof(float) * (size_t)(n * nH * dk)), *dk_ = dev(b, k, sizeof(float) * (size_t)(T * kst));
    void *dv_ = mla ? dk_ : dev(b, v, sizeof(float) * (size_t)(T * vst));
    void *dsel = dev(b, sel, sizeof(int32_t) * (size_t)(n * sel_k));
    void *dout = dev(b, NULL, sizeof(float) * (size_t)(n * nH * dv));
    mk_attn_args a = {.q = dq, .k = dk_, .v = dv_, .out = dout, .n = n, .pos0 = pos0, .n_heads = nH, .n_kv = nKV,
                      .dk = dk, .dv = dv, .scale = scale, .k_stride = mla ? dk : 0, .v_stride = mla ? dk : 0,
                      .sel = dsel, .sel_k = sel_k};
    b->i->attention(b->ctx, &a);
    float *o = back(b, dout, sizeof(float) * (size_t)(n * nH * dv));
    double *ref = calloc((size_t)(n * nH * dv), sizeof(double)), *p = malloc(sizeof(double) * (size_t)sel_k);
    assert_true(ref && p);
    int g = nH / nKV;
    for (int64_t t = 0; t < n; t++)
        for (int h = 0; h < nH; h++) {
            int j = h / g, m = 0;
            while (m < sel_k && sel[t * sel_k + m] >= 0)
                m++;
            double mx = -INFINITY, sum = 0;
            for (int i = 0; i < m; i++) {
                int64_t r = sel[t * sel_k + i];
                double d = 0;
                for (int c = 0; c < dk; c++)
                    d += (double)q[(t * nH + h) * dk + c] * k[r * kst + j * dk + c];
                p[i] = d * scale;
                mx = p[i] > mx ? p[i] : mx;
            }
            for (int i = 0; i < m; i++)
                sum += (p[i] = exp(p[i] - mx));
            for (int i = 0; i < m; i++)
                for (int c = 0; c < dv; c++)
                    ref[(t * nH + h) * dv + c] += p[i] / sum * vv[sel[t * sel_k + i] * vst + j * dv + c];
        }
    check_rel(b->name, what, o, ref, n * nH * dv, TOL_DOT);
    free(o);
    free(ref);
    free(p);
    free(q);
    free(k);
    free(v);
    free(sel);
    b->i->buf_free(b->ctx, dq);
    b->i->buf_free(b->ctx, dk_);
    if (!mla)
        b->i->buf_free(b->ctx, dv_);
    b->i->buf_free(b->ctx, dsel);
    b->i->buf_free(b->ctx, dout);
}

static void test_dsa(void **st) {
    (void)st;
    for (int bi = 0; bi < g_nbe; bi++) {
        be_case *b = &g_be[bi];
        if (!b->i->dsa_select || !b->i->layernorm) {
            printf("  %s: DSA slots not implemented (deepseek_v32 / glm_moe_dsa refused there)\n", b->name);
            continue;
        }
        /* layernorm: rows of 200 (more than one pass of a block), in place */
        enum { R = 3, D = 200 };
        float *x = rvec(R * D), *gg = rvec(D), *bb = rvec(D);
        for (int i = 0; i < R * D; i++)
            x[i] = 3.0f * x[i] + 0.5f; /* a mean away from 0 */
        double re[R * D];
        for (int r = 0; r < R; r++) {
            double mean = 0, var = 0;
            for (int i = 0; i < D; i++)
                mean += x[r * D + i];
            mean /= D;
            for (int i = 0; i < D; i++)
                var += (x[r * D + i] - mean) * (x[r * D + i] - mean);
            double inv = 1.0 / sqrt(var / D + 1e-6);
            for (int i = 0; i < D; i++)
                re[r * D + i] = (x[r * D + i] - mean) * inv * gg[i] + bb[i];
        }
        void *dx = dev(b, x, sizeof(float) * R * D), *dg = dev(b, gg, sizeof(float) * D), *db = dev(b, bb, sizeof(float) * D);
        b->i->layernorm(b->ctx, dx, dx, dg, db, R, D, 1e-6f);
        float *o = back(b, dx, sizeof(float) * R * D);
        check_rel(b->name, "layernorm (in place)", o, re, R * D, TOL_ELT);
        free(o);
        free(x);
        free(gg);
        free(bb);
        b->i->buf_free(b->ctx, dx);
        b->i->buf_free(b->ctx, dg);
        b->i->buf_free(b->ctx, db);
        /* the indexer's selection: prefill across topk, decode far past it, ties */
        dsa_case(b, 4, 32, 24, 0, 40, false, "dsa_select prefill 40, top-24");
        dsa_case(b, 4, 32, 24, 300, 3, false, "dsa_select at 300, top-24");
        dsa_case(b, 4, 32, 24, 100, 5, true, "dsa_select ties (negative weights)");
        dsa_case(b, 16, 128, 64, 600, 2, false, "dsa_select 16 heads of 128, top-64");
        dsa_case(b, 4, 32, 24, 0, 10, false, "dsa_select fewer positions than topk");
        /* attention over a selection */
        attn_sel_case(b, 4, 2, 32, 32, false, 50, 6, 24, "attention GQA over a selection");
        attn_sel_case(b, 16, 1, 72, 64, true, 300, 3, 64, "attention MLA over a selection");
    }
}

/* ---- Gated DeltaNet --------------------------------------------------------------- */

/* One gdn call of T tokens, NK key heads, NV value heads, head sizes DK,
 * DV against the recurrence in double, token by token (backend.h), from a
 * random state: outputs and the final state within TOL_DOT. */
static void gdn_case(be_case *b, int T, int NK, int NV, int DK, int DV) {
    const int STR = 2 * NK * DK + NV * DV;
    float *qkv = rvec(T * STR), *aa = rvec(T * NV), *bb = rvec(T * NV), *al = rvec(NV), *dt = rvec(NV),
          *S0 = rvec(NV * DK * DV);
    void *dqkv = dev(b, qkv, sizeof(float) * T * STR), *da = dev(b, aa, sizeof(float) * T * NV);
    void *db = dev(b, bb, sizeof(float) * T * NV), *dal = dev(b, al, sizeof(float) * NV);
    void *ddt = dev(b, dt, sizeof(float) * NV), *dS = dev(b, S0, sizeof(float) * NV * DK * DV);
    void *dout = dev(b, NULL, sizeof(float) * T * NV * DV);
    mk_gdn_args g = {(float *)dqkv, (float *)dqkv + NK * DK, (float *)dqkv + 2 * NK * DK, STR,
                     da, db, dal, ddt, dS, dout, T, NK, NV, DK, DV};
    b->i->gdn(b->ctx, &g);
    float *o = back(b, dout, sizeof(float) * T * NV * DV), *S1 = back(b, dS, sizeof(float) * NV * DK * DV);
    double *Sr = malloc(sizeof(double) * (size_t)(NV * DK * DV)), *orf = malloc(sizeof(double) * (size_t)(T * NV * DV));
    assert_true(Sr && orf);
    for (int i = 0; i < NV * DK * DV; i++)
        Sr[i] = S0[i];
    assert_true(gdn_ref(qkv, aa, bb, al, dt, T, NK, NV, DK, DV, Sr, orf));
    char what[96];
    snprintf(what, sizeof what, "gdn out n%d %dx%d", T, DK, DV);
    check_rel(b->name, what, o, orf, T * NV * DV, TOL_DOT);
    snprintf(what, sizeof what, "gdn state n%d %dx%d", T, DK, DV);
    check_rel(b->name, what, S1, Sr, NV * DK * DV, TOL_DOT);
    void *bufs[] = {dqkv, da, db, dal, ddt, dS, dout};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        b->i->buf_free(b->ctx, bufs[i]);
    float *fr[] = {qkv, aa, bb, al, dt, S0, o, S1};
    for (size_t i = 0; i < sizeof fr / sizeof fr[0]; i++)
        free(fr[i]);
    double *frd[] = {Sr, orf};
    for (size_t i = 0; i < sizeof frd / sizeof frd[0]; i++)
        free(frd[i]);
}

static void test_conv_gdn(void **st) {
    (void)st;
    for (int bi = 0; bi < g_nbe; bi++) {
        be_case *b = &g_be[bi];
        /* conv1d_silu: 5 tokens, 6 channels, kernel 4, input row stride 9 */
        enum { NT = 5, CH = 6, K = 4, US = 9 };
        float *u = rvec(NT * US), *w = rvec(CH * K), *s0 = rvec((K - 1) * CH);
        void *du = dev(b, u, sizeof(float) * NT * US), *dw = dev(b, w, sizeof(float) * CH * K);
        void *ds = dev(b, s0, sizeof(float) * (K - 1) * CH), *dy = dev(b, NULL, sizeof(float) * NT * CH);
        b->i->conv1d_silu(b->ctx, du, US, dy, NT, CH, K, dw, ds);
        float *y = back(b, dy, sizeof(float) * NT * CH), *sn = back(b, ds, sizeof(float) * (K - 1) * CH);
        double ref[NT * CH], sref[(K - 1) * CH];
        for (int t = 0; t < NT; t++)
            for (int c = 0; c < CH; c++) {
                double acc = 0;
                for (int j = 0; j < K; j++) {
                    int idx = t - K + 1 + j;
                    acc += (double)w[c * K + j] * (idx < 0 ? s0[(K - 1 + idx) * CH + c] : u[idx * US + c]);
                }
                ref[t * CH + c] = acc / (1.0 + exp(-acc));
            }
        for (int s = 0; s < K - 1; s++)
            for (int c = 0; c < CH; c++)
                sref[s * CH + c] = u[(NT - (K - 1) + s) * US + c];
        check_rel(b->name, "conv1d_silu", y, ref, NT * CH, TOL_ELT);
        check_rel(b->name, "conv1d_silu state", sn, sref, (K - 1) * CH, 0);
        free(y);
        free(sn);
        /* gdn: one token (the token loop), 3 (one chunk of the chunked
         * prefill), 70 with dk = dv = 128 (the Qwen3.5 head size: two chunks
         * of 48 and 22 on the CPU, four of 16 and one of 6 on CUDA), and
         * head sizes that fill the CUDA kernel's state threads in part
         * (dk 32 and 96: rows 64..127 none or half; dv 48 and 64) over
         * partial last chunks */
        gdn_case(b, 1, 2, 4, 8, 6);
        gdn_case(b, 3, 2, 4, 8, 6);
        gdn_case(b, 70, 1, 2, 128, 128);
        gdn_case(b, 100, 2, 4, 32, 48);
        gdn_case(b, 37, 1, 2, 96, 64);
        if (!strcmp(b->name, "cuda")) { /* CUDA's prefill through the token loop too (the chunked form's A/B) */
            mk_cuda_set_gdn_chunked(false);
            gdn_case(b, 70, 1, 2, 128, 128);
            mk_cuda_set_gdn_chunked(true);
        }
        void *bufs[] = {du, dw, ds, dy};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            b->i->buf_free(b->ctx, bufs[i]);
        float *fr[] = {u, w, s0};
        for (size_t i = 0; i < sizeof fr / sizeof fr[0]; i++)
            free(fr[i]);
    }
}

/* conv1d_silu_each and gdn_each (optional): five sequences of one batched
 * decode step, each with its own conv and recurrent state, every output
 * row and state bitwise the one-sequence conv1d_silu / gdn (those are held
 * to references above); a call they cannot take declines, changing
 * nothing. */
static void test_recurrent_each(void **st) {
    (void)st;
    enum { NS = 5, CH = 40, K = 4, NK = 2, NV = 4, DK = 8, DV = 12 };
    const int64_t C = 2 * NK * DK + NV * DV; /* q | k | v rows, as the engine's conv output */
    for (int bi = 0; bi < g_nbe; bi++) {
        be_case *b = &g_be[bi];
        if (!b->i->conv1d_silu_each || !b->i->gdn_each) {
            printf("  %s: no conv1d_silu_each / gdn_each (the engine steps sequences one by one)\n", b->name);
            continue;
        }
        /* conv: rows of stride C + 3, states per sequence */
        const int64_t us = CH + 3;
        float *u = rvec(NS * us), *w = rvec(CH * K);
        void *du = dev(b, u, sizeof(float) * NS * us), *dw = dev(b, w, sizeof(float) * CH * K);
        void *dy = dev(b, NULL, sizeof(float) * NS * CH), *dyr = dev(b, NULL, sizeof(float) * NS * CH);
        float *cs[NS], *csr[NS];
        for (int i = 0; i < NS; i++) {
            float *s0 = rvec((K - 1) * CH);
            cs[i] = dev(b, s0, sizeof(float) * (K - 1) * CH);
            csr[i] = dev(b, s0, sizeof(float) * (K - 1) * CH);
            free(s0);
        }
        assert_true(b->i->conv1d_silu_each(b->ctx, du, us, dy, NS, CH, K, w, cs));
        for (int i = 0; i < NS; i++)
            b->i->conv1d_silu(b->ctx, (float *)du + i * us, us, (float *)dyr + i * CH, 1, CH, K, w, csr[i]);
        float *y = back(b, dy, sizeof(float) * NS * CH), *yr = back(b, dyr, sizeof(float) * NS * CH);
        if (memcmp(y, yr, sizeof(float) * NS * CH))
            fail_msg("%s: conv1d_silu_each: not bitwise the one-sequence conv", b->name);
        for (int i = 0; i < NS; i++) {
            float *a1 = back(b, cs[i], sizeof(float) * (K - 1) * CH), *a2 = back(b, csr[i], sizeof(float) * (K - 1) * CH);
            if (memcmp(a1, a2, sizeof(float) * (K - 1) * CH))
                fail_msg("%s: conv1d_silu_each: sequence %d's state not bitwise the one-sequence conv's", b->name, i);
            free(a1);
            free(a2);
            b->i->buf_free(b->ctx, cs[i]);
            b->i->buf_free(b->ctx, csr[i]);
        }
        free(y);
        free(yr);
        /* gdn: one batch of rows, a state per sequence */
        float *qkv = rvec(NS * C), *aa = rvec(NS * NV), *bb = rvec(NS * NV), *al = rvec(NV), *dt = rvec(NV);
        void *dqkv = dev(b, qkv, sizeof(float) * NS * C), *da = dev(b, aa, sizeof(float) * NS * NV);
        void *db = dev(b, bb, sizeof(float) * NS * NV);
        void *dout = dev(b, NULL, sizeof(float) * NS * NV * DV), *dref = dev(b, NULL, sizeof(float) * NS * NV * DV);
        float *ss[NS], *ssr[NS];
        mk_gdn_args g[NS];
        for (int i = 0; i < NS; i++) {
            float *s0 = rvec(NV * DK * DV);
            ss[i] = dev(b, s0, sizeof(float) * NV * DK * DV);
            ssr[i] = dev(b, s0, sizeof(float) * NV * DK * DV);
            free(s0);
            const float *row = (const float *)dqkv + i * C;
            g[i] = (mk_gdn_args){row, row + NK * DK, row + 2 * NK * DK, C, (const float *)da + i * NV,
                                 (const float *)db + i * NV, al, dt, ss[i], (float *)dout + i * NV * DV, 1, NK, NV,
                                 DK, DV};
        }
        mk_gdn_args bad[NS];
        memcpy(bad, g, sizeof bad);
        bad[3].n = 2;
        assert_false(b->i->gdn_each(b->ctx, bad, NS));
        float *chk = back(b, ss[3], sizeof(float) * NV * DK * DV), *chk0 = back(b, ssr[3], sizeof(float) * NV * DK * DV);
        assert_memory_equal(chk, chk0, sizeof(float) * NV * DK * DV); /* declined: the state untouched */
        free(chk);
        free(chk0);
        assert_true(b->i->gdn_each(b->ctx, g, NS));
        for (int i = 0; i < NS; i++) {
            mk_gdn_args one = g[i];
            one.state = ssr[i];
            one.out = (float *)dref + i * NV * DV;
            b->i->gdn(b->ctx, &one);
        }
        float *o = back(b, dout, sizeof(float) * NS * NV * DV), *orf = back(b, dref, sizeof(float) * NS * NV * DV);
        if (memcmp(o, orf, sizeof(float) * NS * NV * DV))
            fail_msg("%s: gdn_each: not bitwise the one-sequence delta rule", b->name);
        for (int i = 0; i < NS; i++) {
            float *a1 = back(b, ss[i], sizeof(float) * NV * DK * DV), *a2 = back(b, ssr[i], sizeof(float) * NV * DK * DV);
            if (memcmp(a1, a2, sizeof(float) * NV * DK * DV))
                fail_msg("%s: gdn_each: sequence %d's state not bitwise the one-sequence delta rule's", b->name, i);
            free(a1);
            free(a2);
            b->i->buf_free(b->ctx, ss[i]);
            b->i->buf_free(b->ctx, ssr[i]);
        }
        printf("  %s: conv1d_silu_each and gdn_each, %d sequences: bitwise, states too\n", b->name, NS);
        free(o);
        free(orf);
        void *bufs[] = {du, dw, dy, dyr, dqkv, da, db, dout, dref};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            b->i->buf_free(b->ctx, bufs[i]);
        float *fr[] = {u, w, qkv, aa, bb, al, dt};
        for (size_t i = 0; i < sizeof fr / sizeof fr[0]; i++)
            free(fr[i]);
    }
}

/* ---- routing and combine ---------------------------------------------------------- */

/* Reference top-k: the k largest, lowest index first on ties. */
static void ref_topk(const double *s, int n, int k, int *idx) {
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int i = 0; i < n; i++) {
            bool taken = false;
            for (int q = 0; q < j; q++)
                taken |= idx[q] == i;
            if (!taken && (best < 0 || s[i] > s[best]))
                best = i;
        }
        idx[j] = best;
    }
}

/* backend.h's MK_ROUTE_GROUPED_SIGMOID in double for one token's logits
 * l[E]: s = sigmoid(l), the choice s + bias (bias may be NULL) with all
 * but the TG best of G groups (by the sum of their two best choices) set
 * to 0, top-K of the choice; w = s / (sum + 1e-20) * scale. */
static void ref_route_grouped(const double *l, const float *bias, int E, int K, int G, int TG, double scale,
                              int *idx, double *w) {
    double s[64], ch[64], gs[64], sum = 0;
    int per = E / G, gi[2] = {0, 0}, keep[64] = {0};
    assert_true(E <= 64 && G <= 64);
    for (int i = 0; i < E; i++)
        ch[i] = (s[i] = 1.0 / (1.0 + exp(-l[i]))) + (bias ? bias[i] : 0.0f);
    if (G > 1) {
        for (int g = 0; g < G; g++) {
            ref_topk(ch + g * per, per, 2, gi);
            gs[g] = ch[g * per + gi[0]] + ch[g * per + gi[1]];
        }
        ref_topk(gs, G, TG, keep);
        for (int g = 0; g < G; g++) {
            bool kept = false;
            for (int j = 0; j < TG; j++)
                kept |= keep[j] == g;
            if (!kept)
                for (int i = 0; i < per; i++)
                    ch[g * per + i] = 0;
        }
    }
    ref_topk(ch, E, K, idx);
    for (int j = 0; j < K; j++)
        sum += (w[j] = s[idx[j]]);
    for (int j = 0; j < K; j++)
        w[j] = w[j] / (sum + 1e-20) * scale;
}

static void test_route_combine(void **st) {
    (void)st;
    enum { NT = 5, E = 32, K = 4, G = 4, TG = 2 };
    for (int bi = 0; bi < g_nbe; bi++) {
        be_case *b = &g_be[bi];
        float *lg = rvec(NT * E), *bias = rvec(E);
        for (int i = 0; i < NT * E; i++)
            lg[i] *= 4.0f;
        for (int i = 0; i < E; i++)
            bias[i] *= 0.1f;
        lg[2 * E + 7] = lg[2 * E + 9] = 3.5f; /* a tie: the lower index goes first */
        void *dl = dev(b, lg, sizeof(float) * NT * E), *db = dev(b, bias, sizeof(float) * E);
        void *di = dev(b, NULL, sizeof(int32_t) * NT * K), *dw = dev(b, NULL, sizeof(float) * NT * K);
        for (int kind = 0; kind < 2; kind++) {
            mk_route_args a = {.logits = dl, .bias = kind ? db : NULL, .idx = di, .w = dw, .n = NT,
                               .E = E, .k = K, .kind = kind ? MK_ROUTE_GROUPED_SIGMOID : MK_ROUTE_SOFTMAX,
                               .norm = true, .n_group = G, .topk_group = TG, .scale = 2.5f};
            b->i->route(b->ctx, &a);
            int32_t *idx = (int32_t *)back(b, di, sizeof(int32_t) * NT * K);
            float *wt = back(b, dw, sizeof(float) * NT * K);
            for (int t = 0; t < NT; t++) {
                double s[E], wref[K], sum = 0;
                int ridx[K];
                const float *l = lg + t * E;
                if (kind == 0) {
                    double mx = -INFINITY, z = 0;
                    for (int i = 0; i < E; i++)
                        mx = l[i] > mx ? l[i] : mx;
                    for (int i = 0; i < E; i++)
                        z += (s[i] = exp(l[i] - mx));
                    for (int i = 0; i < E; i++)
                        s[i] /= z;
                    ref_topk(s, E, K, ridx);
                    for (int j = 0; j < K; j++)
                        sum += (wref[j] = s[ridx[j]]);
                    for (int j = 0; j < K; j++)
                        wref[j] /= sum;
                } else {
                    double ld[E];
                    for (int i = 0; i < E; i++)
                        ld[i] = l[i];
                    ref_route_grouped(ld, bias, E, K, G, TG, 2.5, ridx, wref);
                }
                for (int j = 0; j < K; j++)
                    if (idx[t * K + j] != ridx[j])
                        fail_msg("%s: route kind %d token %d slot %d: expert %d, reference %d",
                                 b->name, kind, t, j, idx[t * K + j], ridx[j]);
                check_rel(b->name, kind ? "route grouped weights" : "route softmax weights",
                          wt + t * K, wref, K, TOL_ELT);
            }
            free(idx);
            free(wt);
        }
        /* combine: per token, the slots in the given order */
        enum { D = 40 };
        float *x = rvec(NT * K * D), *w = rvec(NT * K);
        int32_t ord[NT * K];
        for (int t = 0; t < NT; t++)
            for (int j = 0; j < K; j++)
                ord[t * K + j] = (j * 3 + t) % K; /* a permutation of 0..K-1 for K = 4 */
        void *dx = dev(b, x, sizeof(float) * NT * K * D), *dwt = dev(b, w, sizeof(float) * NT * K);
        void *dord = dev(b, ord, sizeof ord), *dy = dev(b, NULL, sizeof(float) * NT * D);
        b->i->combine(b->ctx, dy, dx, dwt, dord, NT, K, D);
        float *y = back(b, dy, sizeof(float) * NT * D);
        double ref[NT * D] = {0};
        for (int t = 0; t < NT; t++)
            for (int j = 0; j < K; j++)
                for (int i = 0; i < D; i++)
                    ref[t * D + i] += (double)w[t * K + j] * x[(t * K + j) * D + i];
        check_rel(b->name, "combine", y, ref, NT * D, TOL_ELT);
        free(y);
        void *bufs[] = {dl, db, di, dw, dx, dwt, dord, dy};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            b->i->buf_free(b->ctx, bufs[i]);
        free(lg);
        free(bias);
        free(x);
        free(w);
    }
}

static bool g_cuda_run; /* this run of the table includes the CUDA backend */
/* ---- optional slots: the fused MoE layer, deferred non-finite checks ------------ */

static double silu_d(double g) { return g / (1.0 + exp(-g)); }

/* E experts of one storage kind (make_w): gate and up [I, H], down [H, I],
 * and their dequantized matrices in double. */
static void make_experts(int kind, int E, int64_t I, int64_t H, wbuf *gw, wbuf *uw, wbuf *dw, mk_expert *ex,
                         double **G, double **U, double **D) {
    for (int e = 0; e < E; e++) {
        make_w(&gw[e], kind, I, H);
        make_w(&uw[e], kind, I, H);
        make_w(&dw[e], kind, H, I);
        ex[e] = (mk_expert){gw[e].w, uw[e].w, dw[e].w};
        G[e] = deq(&gw[e].w);
        U[e] = deq(&uw[e].w);
        D[e] = deq(&dw[e].w);
    }
}

static void free_experts(int E, wbuf *gw, wbuf *uw, wbuf *dw, double **G, double **U, double **D) {
    for (int e = 0; e < E; e++) {
        wbuf_free(&gw[e]);
        wbuf_free(&uw[e]);
        wbuf_free(&dw[e]);
        free(G[e]);
        free(U[e]);
        free(D[e]);
    }
}

/* y[0..H) += w * down(silu(gate x) * up x) in double, one expert's SwiGLU
 * MLP from its dequantized matrices (G, U [I, H], D [H, I]); h: I scratch. */
static void ref_expert_add(const double *G, const double *U, const double *D, int64_t H, int64_t I,
                           const float *x, double w, double *y, double *h) {
    for (int64_t r = 0; r < I; r++) {
        double g = 0, u = 0;
        for (int64_t c = 0; c < H; c++) {
            g += G[r * H + c] * x[c];
            u += U[r * H + c] * x[c];
        }
        h[r] = silu_d(g) * u;
    }
    for (int64_t o = 0; o < H; o++) {
        double a = 0;
        for (int64_t r = 0; r < I; r++)
            a += D[o * I + r] * h[r];
        y[o] += w * a;
    }
}

/* One MoE layer for one token in double from the dequantized weights:
 * routing (softmax, or sigmoid with one group and no bias), the k experts'
 * SwiGLU, the weighted sum, the gated shared expert. */
static void ref_moe(const float *x, int64_t H, int E, int K, int64_t I, int64_t Is, const double *R,
                    double *const *G, double *const *U, double *const *D, const double *SG,
                    const double *SU, const double *SD, const double *SGW, bool sigmoid, double scale,
                    const float *bias, int ng, int tg, double *y) {
    double s[64], w[8];
    int idx[8];
    double mx = -INFINITY, z = 0, sum = 0;
    for (int e = 0; e < E; e++) {
        s[e] = 0;
        for (int64_t c = 0; c < H; c++)
            s[e] += R[e * H + c] * x[c];
        mx = s[e] > mx ? s[e] : mx;
    }
    if (sigmoid) { /* DeepSeek-V3's routing (plain sigmoid: no bias, one group) */
        ref_route_grouped(s, bias, E, K, ng, tg, scale, idx, w);
    } else {
        for (int e = 0; e < E; e++)
            z += (s[e] = exp(s[e] - mx));
        for (int e = 0; e < E; e++)
            s[e] /= z;
        ref_topk(s, E, K, idx);
        for (int j = 0; j < K; j++)
            sum += (w[j] = s[idx[j]]);
        for (int j = 0; j < K; j++)
            w[j] = w[j] / sum * scale;
    }
    for (int64_t o = 0; o < H; o++)
        y[o] = 0;
    double *h = malloc((size_t)(I > Is ? I : Is) * sizeof(double));
    for (int j = 0; j < K; j++) {
        const int e = idx[j];
        ref_expert_add(G[e], U[e], D[e], H, I, x, w[j], y, h);
    }
    if (SG) {
        double gl = 0;
        for (int64_t c = 0; c < H && SGW; c++)
            gl += SGW[c] * x[c];
        const double gate = SGW ? 1.0 / (1.0 + exp(-gl)) : 1.0;
        ref_expert_add(SG, SU, SD, H, Is, x, gate, y, h);
    }
    free(h);
}

/* The `moe` slot against ref_moe, on per-expert weights (separate
 * allocations, as Hugging Face checkpoints store experts), for the formats
 * the fused step takes, softmax and sigmoid routing, with and without a
 * shared expert; two tokens in one call give each row bitwise as a
 * one-token call; DeepSeek-V3's routing (selection bias, 4 groups of which
 * 2 are kept) against its double reference; calls the slot must decline
 * (more than 64 tokens, groups of one expert) queue nothing; with an expert VRAM budget
 * of 0 the layer's experts go to mapped host memory and the output is
 * bitwise the resident one's; afterwards the general path (matmul
 * on one expert's view) reads the same device copy the slot stacked. The
 * CPU backend has no such slot (its results are the general path's). */
/* The residual step before a fused MoE call (add_rmsnorm into the call's
 * x, its y the call's y, as the engine queues them) with
 * mk_cuda_set_norm_fold on: folded into the router, x, xb and y bitwise
 * what it gives off, and an infinity planted in y reported the same way. */
static void fold_into_moe(be_case *b, const mk_moe_args *a, const char *what) {
    const int64_t H = a->H;
    float *r = rvec(H), *yv = rvec(H), *g = rvec(H);
    for (int64_t i = 0; i < H; i++)
        g[i] += 1.5f;
    float *dr = dev(b, NULL, H * 4), *dg = dev(b, g, H * 4);
    const int mode0 = mk_cuda_norm_fold_mode();
    const int64_t folds0 = mk_backend_cuda_folds(b->b);
    const float y_kept = yv[H / 3]; /* restored after each planted run */
    /* the step's input and output as the caller left them, put back at the end (the caller runs the
     * same step again after this and compares: the residual step here writes the step's x) */
    float *x_saved = back(b, a->x, H * 4), *y_saved = back(b, a->y, H * 4);
    /* off, every reader (MK_CUDA_NORM_FOLD_ALL), the router only (MK_CUDA_NORM_FOLD_ROUTER) */
    static const int modes[3] = {0, MK_CUDA_NORM_FOLD_ALL, MK_CUDA_NORM_FOLD_ROUTER};
    float *out[3][3];
    int32_t tags[3][2];
    int64_t ats[3][2];
    float vals[3][2];
    for (int on = 0; on < 3; on++) {
        mk_cuda_set_norm_fold_mode(modes[on]);
        assert_int_equal(mk_cuda_norm_fold_mode(), modes[on]);
        for (int plant = 0; plant < 2; plant++) {
            if (plant)
                yv[H / 3] = INFINITY;
            b->i->upload(b->ctx, dr, r, H * 4);
            b->i->upload(b->ctx, a->y, yv, H * 4);
            b->i->add_rmsnorm(b->ctx, dr, a->y, 1, H, 7, (float *)a->x, dg, 1e-6f);
            assert_true(b->i->moe(b->ctx, a));
            if (!plant) {
                out[on][0] = back(b, dr, H * 4);
                out[on][1] = back(b, a->x, H * 4);
                out[on][2] = back(b, a->y, H * 4);
            }
            assert_int_equal(b->i->sync(b->ctx), MK_OK);
            const bool found = b->i->nonfinite_take(b->ctx, &tags[on][plant], &ats[on][plant], &vals[on][plant]);
            assert_true(found == (plant == 1));
        }
        yv[H / 3] = y_kept;
    }
    mk_cuda_set_norm_fold_mode(mode0);
    assert_int_equal(mk_backend_cuda_folds(b->b) - folds0, 4); /* the router took both, in both modes */
    for (int on = 1; on < 3; on++) {
        for (int i = 0; i < 3; i++)
            if (memcmp(out[0][i], out[on][i], H * 4))
                fail_msg("%s: %s: the residual norm folded into the router (mode %d) changes %s", b->name, what,
                         modes[on], i == 0 ? "x" : i == 1 ? "xb" : "y");
        assert_int_equal(tags[on][1], tags[0][1]);
        assert_true(ats[on][1] == ats[0][1]);
        assert_true(isinf(vals[on][1]));
    }
    assert_int_equal(tags[0][1], 7);
    assert_true(ats[0][1] == H / 3);
    assert_true(isinf(vals[0][1]));
    for (int on = 0; on < 3; on++)
        for (int i = 0; i < 3; i++)
            free(out[on][i]);
    b->i->upload(b->ctx, (void *)a->x, x_saved, H * 4);
    b->i->upload(b->ctx, a->y, y_saved, H * 4);
    assert_int_equal(b->i->sync(b->ctx), MK_OK);
    free(x_saved);
    free(y_saved);
    b->i->buf_free(b->ctx, dr);
    b->i->buf_free(b->ctx, dg);
    free(r);
    free(yv);
    free(g);
}

/* The CUDA switches the fused MoE step's y must not depend on: each is
 * flipped from its default for one call, which must give the default's y
 * bitwise; `launches` (where the switch counts its kernels) shows the
 * flipped call took the other path */
typedef struct {
    bool (*get)(void);
    void (*set)(bool);
    unsigned long long (*launches)(void);
    const char *on, *off; /* the flipped setting, named for a failure */
} moe_flip;
static const moe_flip k_moe_flips[] = {
    {mk_cuda_q8_early, mk_cuda_set_q8_early, NULL, "the int8 rows primed early", "the int8 rows primed late"},
    {mk_cuda_gateup_staged, mk_cuda_set_gateup_staged, mk_cuda_gateup_staged_launches,
     "the int8 gate/up's rows staged", "the int8 gate/up's rows in registers"},
    {mk_cuda_route_late, mk_cuda_set_route_late, mk_cuda_route_late_launches, "the routing ranked by its readers",
     "the routing ranked by the router"},
};
enum { MOE_FLIPS = sizeof k_moe_flips / sizeof k_moe_flips[0], FLIP_STAGED = 1, FLIP_LATE = 2 };

static void test_fused_moe(void **st) {
    (void)st;
    enum { H = 256, E = 16, K = 4, I = 128, IS = 64 };
    static const int kinds[] = {1, 2, 3};
    for (int bi = 0; bi < g_nbe; bi++) {
        be_case *b = &g_be[bi];
        if (!b->i->moe) {
            assert_string_equal(b->name, "cpu");
            continue;
        }
        int taken[MOE_FLIPS] = {0}; /* cases whose flipped call went the other way (k_moe_flips' launches) */
        for (size_t ki = 0; ki < sizeof kinds / sizeof kinds[0]; ki++)
            for (int variant = 0; variant < 4; variant++) {
                const int kind = kinds[ki];
                const bool sigmoid = variant >= 2, grouped = variant == 3, shared = variant != 1;
                const size_t bytes0 = mk_backend_cuda_weight_bytes(b->b);
                wbuf rw, gw[E], uw[E], dw[E], sg, su, sd, sgw;
                mk_expert ex[E];
                double *G[E], *U[E], *D[E];
                make_w(&rw, 0, E, H);
                make_experts(kind, E, I, H, gw, uw, dw, ex, G, U, D);
                make_w(&sg, kind, IS, H);
                make_w(&su, kind, IS, H);
                make_w(&sd, kind, H, IS);
                make_w(&sgw, 1, 1, H);
                double *R = deq(&rw.w), *SG = deq(&sg.w), *SU = deq(&su.w), *SD = deq(&sd.w), *SGW = deq(&sgw.w);
                float *x = rvec(2 * H), *bias = rvec(E);
                for (int e = 0; e < E; e++)
                    bias[e] *= 0.2f; /* DeepSeek-V3's correction biases are small next to the scores */
                const int ng = grouped ? 4 : 1, tg = grouped ? 2 : 1;
                double y_ref[H];
                ref_moe(x, H, E, K, I, IS, R, G, U, D, shared ? SG : NULL, SU, SD, shared ? SGW : NULL,
                        sigmoid, sigmoid ? 2.5 : 1.0, grouped ? bias : NULL, ng, tg, y_ref);
                void *dx = dev(b, x, 2 * H * 4), *dy = dev(b, NULL, 2 * H * 4), *dbias = dev(b, bias, E * 4);
                mk_moe_args a = {.x = dx, .y = dy, .n = 1, .H = H, .router = &rw.w, .experts = ex, .E = E, .k = K,
                                 .route = {.kind = sigmoid ? MK_ROUTE_GROUPED_SIGMOID : MK_ROUTE_SOFTMAX,
                                           .bias = grouped ? dbias : NULL, .norm = true, .n_group = ng,
                                           .topk_group = tg, .scale = sigmoid ? 2.5f : 1.0f}};
                if (shared) {
                    a.sh_gate = &sg.w;
                    a.sh_up = &su.w;
                    a.sh_down = &sd.w;
                    a.sh_gate_w = &sgw.w;
                }
                char what[96];
                snprintf(what, sizeof what, "fused moe %s %s%s", gw[0].name,
                         grouped ? "grouped sigmoid + bias" : sigmoid ? "sigmoid" : "softmax", shared ? " +shared" : "");
                assert_true(b->i->moe(b->ctx, &a));
                float *y = back(b, dy, H * 4);
                check_rel(b->name, what, y, y_ref, H, TOL_DOT);
                /* two tokens: each row bitwise its one-token call's (the
                 * batched decode contract, backend.h) */
                mk_moe_args a2 = a;
                a2.n = 2;
                assert_true(b->i->moe(b->ctx, &a2));
                float *y2 = back(b, dy, 2 * H * 4);
                mk_moe_args a1 = a;
                a1.x = (const float *)dx + H;
                assert_true(b->i->moe(b->ctx, &a1));
                float *y1 = back(b, dy, H * 4);
                if (memcmp(y2, y, H * 4) || memcmp(y2 + H, y1, H * 4))
                    fail_msg("%s: %s: two tokens in one call differ from one-token calls", b->name, what);
                free(y1);
                free(y2);
                for (int f = 0; f < MOE_FLIPS && !strcmp(b->name, "cuda"); f++) { /* the same bits */
                    const moe_flip *sw = &k_moe_flips[f];
                    const bool v0 = sw->get();
                    const unsigned long long l0 = sw->launches ? sw->launches() : 0;
                    sw->set(!v0);
                    assert_true(b->i->moe(b->ctx, &a));
                    float *yf = back(b, dy, H * 4);
                    sw->set(v0);
                    taken[f] += sw->launches && sw->launches() != l0;
                    if (memcmp(yf, y, H * 4))
                        fail_msg("%s: %s: %s changes y", b->name, what, v0 ? sw->off : sw->on);
                    free(yf);
                }
                float *y0 = y; /* the resident step's output, for the host-memory one below */
                /* declined: more tokens than the slot takes; groups of one
                 * expert (no top-2 per group) */
                a2.n = 65;
                assert_false(b->i->moe(b->ctx, &a2));
                a2 = a;
                a2.n = 1;
                a2.route.kind = MK_ROUTE_GROUPED_SIGMOID;
                a2.route.n_group = E;
                a2.route.topk_group = 2;
                assert_false(b->i->moe(b->ctx, &a2));
                /* the general path on expert 5's gate reads the stacked copy */
                b->i->matmul(b->ctx, &gw[5].w, dx, 1, dy);
                y = back(b, dy, I * 4);
                double g_ref[I];
                for (int64_t r = 0; r < I; r++) {
                    g_ref[r] = 0;
                    for (int64_t c = 0; c < H; c++)
                        g_ref[r] += G[5][r * H + c] * x[c];
                }
                snprintf(what, sizeof what, "matmul on a stacked expert %s", gw[5].name);
                check_rel(b->name, what, y, g_ref, I, TOL_DOT);
                free(y);
                assert_int_equal(b->i->sync(b->ctx), MK_OK);
                fold_into_moe(b, &a, what);
                /* forgetting the weights leaves nothing resident */
                for (int e = 0; e < E; e++) {
                    mk_backend_cuda_forget(b->b, gw[e].data);
                    mk_backend_cuda_forget(b->b, uw[e].data);
                    mk_backend_cuda_forget(b->b, dw[e].data);
                }
                const wbuf *rest[] = {&rw, &sg, &su, &sd, &sgw};
                for (size_t i = 0; i < sizeof rest / sizeof rest[0]; i++)
                    mk_backend_cuda_forget(b->b, rest[i]->data);
                assert_int_equal(mk_backend_cuda_weight_bytes(b->b), bytes0);
                /* past the expert VRAM budget (0 here): the layer's experts in
                 * mapped host memory, the same kernels reading them over the
                 * bus: bitwise the resident step's output */
                size_t vb, hb;
                int hl;
                mk_backend_cuda_set_expert_vram(b->b, 0);
                assert_true(b->i->moe(b->ctx, &a));
                float *yh = back(b, dy, H * 4);
                mk_backend_cuda_expert_stats(b->b, &vb, &hb, &hl);
                if (!(hl == 1 && hb > 0 && vb == 0))
                    fail_msg("%s: %s: host placement: %d layers, %zu host bytes, %zu device bytes", b->name, what,
                             hl, hb, vb);
                if (memcmp(yh, y0, H * 4))
                    fail_msg("%s: %s: experts in host memory give another output than resident ones", b->name,
                             what);
                free(yh);
                free(y0);
                for (int e = 0; e < E; e++)
                    mk_backend_cuda_forget(b->b, gw[e].data);
                for (size_t i = 0; i < sizeof rest / sizeof rest[0]; i++)
                    mk_backend_cuda_forget(b->b, rest[i]->data);
                mk_backend_cuda_expert_stats(b->b, &vb, &hb, &hl);
                assert_true(hl == 0 && hb == 0);
                assert_int_equal(mk_backend_cuda_weight_bytes(b->b), bytes0);
                mk_backend_cuda_set_expert_vram(b->b, SIZE_MAX);
                free_experts(E, gw, uw, dw, G, U, D);
                wbuf *all[] = {&rw, &sg, &su, &sd, &sgw};
                for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
                    wbuf_free(all[i]);
                double *dd[] = {R, SG, SU, SD, SGW};
                for (size_t i = 0; i < sizeof dd / sizeof dd[0]; i++)
                    free(dd[i]);
                free(x);
                free(bias);
                b->i->buf_free(b->ctx, dx);
                b->i->buf_free(b->ctx, dy);
                b->i->buf_free(b->ctx, dbias);
            }
        /* the affine kinds' layers (int8 activations on by default) took the staged gate/up */
        if (!strcmp(b->name, "cuda") && mk_cuda_act_int8() && !taken[FLIP_STAGED])
            fail_msg("cuda: no fused MoE case ran k_gateup_q8s with mk_cuda_set_gateup_staged flipped");
        if (!strcmp(b->name, "cuda") && mk_cuda_act_int8() && !taken[FLIP_LATE] && !mk_cuda_route_late())
            fail_msg("cuda: no fused MoE case ranked the routing in its readers with mk_cuda_set_route_late on");
    }
}

/* The grouped MoE slot (prefill chunks): every routed row of n tokens in
 * grouped GEMMs, the routing given in backend memory. Against the double
 * SwiGLU MLPs of the dequantized experts, weighted and summed: split mode
 * within TOL_DOT (the products exact, float32 sums); bf16 mode (x rounded
 * once) within 2^-7 rel L2 and measurably worse than split; two runs
 * bitwise equal (the placement order within an expert's run must not
 * matter); declined (nothing queued) for f32 experts and one token. n = 150
 * with expert 3 in every token: its run spans several row tiles. */
static void test_moe_grouped(void **st) {
    (void)st;
    enum { H = 256, E = 16, K = 4, I = 128 };
    static const int kinds[] = {1, 2, 3, 0};
    static const int64_t ns[] = {37, 150};
    for (int bi = 0; bi < g_nbe; bi++) {
        be_case *b = &g_be[bi];
        if (!b->i->moe_grouped) {
            assert_string_equal(b->name, "cpu");
            continue;
        }
        for (size_t ki = 0; ki < sizeof kinds / sizeof kinds[0]; ki++)
            for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
                const int kind = kinds[ki];
                const int64_t n = ns[ni];
                wbuf rw, gw[E], uw[E], dw[E];
                mk_expert ex[E];
                double *G[E], *U[E], *D[E];
                make_w(&rw, 0, E, H);
                make_experts(kind, E, I, H, gw, uw, dw, ex, G, U, D);
                float *x = rvec(n * H);
                int32_t *idx = malloc((size_t)(n * K) * sizeof *idx);
                float *wt = malloc((size_t)(n * K) * sizeof *wt);
                assert_true(idx && wt);
                /* K distinct experts; with n = 150 expert 3 in each (as the first choice: forced as the
                 * second it looped for ever whenever the first draw was 3) */
                for (int64_t t = 0; t < n; t++)
                    for (int j = 0; j < K; j++) {
                        int e;
                        bool dup;
                        do {
                            e = j == 0 && n > 100 ? 3 : (int)(rnd() % E);
                            dup = false;
                            for (int q = 0; q < j; q++)
                                dup |= idx[t * K + q] == e;
                        } while (dup);
                        idx[t * K + j] = e;
                        wt[t * K + j] = 0.1f + 0.2f * (frand() + 1.0f);
                    }
                double *ref = calloc((size_t)(n * H), sizeof(double)), *h = malloc(I * sizeof(double));
                assert_true(ref && h);
                for (int64_t t = 0; t < n; t++)
                    for (int j = 0; j < K; j++) {
                        const int e = idx[t * K + j];
                        ref_expert_add(G[e], U[e], D[e], H, I, x + t * H, wt[t * K + j], ref + t * H, h);
                    }
                void *dx = dev(b, x, (size_t)(n * H) * 4), *dy = dev(b, NULL, (size_t)(n * H) * 4),
                     *di = dev(b, idx, (size_t)(n * K) * 4), *dw_ = dev(b, wt, (size_t)(n * K) * 4);
                mk_moe_args a = {.x = dx, .y = dy, .n = n, .H = H, .router = &rw.w, .experts = ex, .E = E, .k = K,
                                 .route = {.kind = MK_ROUTE_SOFTMAX, .norm = true, .n_group = 1, .topk_group = 1,
                                           .scale = 1.0f}};
                char what[96];
                snprintf(what, sizeof what, "grouped moe %s, %lld tokens", gw[0].name, (long long)n);
                if (kind == 0) { /* f32 experts: declined */
                    assert_false(b->i->moe_grouped(b->ctx, &a, di, dw_));
                } else {
                    mk_backend_cuda_set_gemm(b->b, MK_CUDA_GEMM_SPLIT, 0);
                    assert_true(b->i->moe_grouped(b->ctx, &a, di, dw_));
                    float *y = back(b, dy, (size_t)(n * H) * 4);
                    check_rel(b->name, what, y, ref, n * H, TOL_DOT);
                    const double split_err = rel(y, ref, n * H);
                    assert_true(b->i->moe_grouped(b->ctx, &a, di, dw_));
                    float *y2 = back(b, dy, (size_t)(n * H) * 4);
                    if (memcmp(y, y2, (size_t)(n * H) * 4))
                        fail_msg("%s: %s: two runs of the same call differ", b->name, what);
                    free(y2);
                    mk_backend_cuda_set_gemm(b->b, MK_CUDA_GEMM_BF16, 0);
                    assert_true(b->i->moe_grouped(b->ctx, &a, di, dw_));
                    y2 = back(b, dy, (size_t)(n * H) * 4);
                    snprintf(what, sizeof what, "grouped moe bf16 mode %s, %lld tokens", gw[0].name, (long long)n);
                    check_rel(b->name, what, y2, ref, n * H, ldexp(1, -7));
                    const double bf_err = rel(y2, ref, n * H);
                    if (!(bf_err > 4 * split_err))
                        fail_msg("%s: %s: rel L2 %.3e, not worse than split mode's %.3e", b->name, what, bf_err,
                                 split_err);
                    free(y2);
                    /* int8 activations (the CPU's int8 rule, x and the SwiGLU rows): an approximation of its
                     * own, repeatable; bf16 experts, which it does not take, as split mode bitwise */
                    mk_backend_cuda_set_gemm(b->b, MK_CUDA_GEMM_INT8, 0);
                    assert_true(b->i->moe_grouped(b->ctx, &a, di, dw_));
                    y2 = back(b, dy, (size_t)(n * H) * 4);
                    assert_true(b->i->moe_grouped(b->ctx, &a, di, dw_));
                    float *y3 = back(b, dy, (size_t)(n * H) * 4);
                    if (memcmp(y2, y3, (size_t)(n * H) * 4))
                        fail_msg("%s: %s: two int8 runs of the same call differ", b->name, what);
                    snprintf(what, sizeof what, "grouped moe int8 mode %s, %lld tokens", gw[0].name, (long long)n);
                    if (kind == 2 && mk_cuda_wgmma_available()) { /* the wgmma kernel: the same bits */
                        const bool w0 = mk_cuda_q8_wgmma();
                        mk_cuda_set_q8_wgmma(true);
                        assert_true(b->i->moe_grouped(b->ctx, &a, di, dw_));
                        mk_cuda_set_q8_wgmma(w0);
                        float *yw = back(b, dy, (size_t)(n * H) * 4);
                        for (int64_t i = 0; i < n * H; i++)
                            if (memcmp(&yw[i], &y2[i], 4))
                                fail_msg("%s: %s, wgmma: element %lld: %.9g, the int8 kernels' %.9g", b->name, what,
                                         (long long)i, yw[i], y2[i]);
                        free(yw);
                    }
                    if (kind == 1) {
                        if (memcmp(y2, y, (size_t)(n * H) * 4))
                            fail_msg("%s: %s: bf16 experts not as in split mode", b->name, what);
                    } else {
                        check_rel(b->name, what, y2, ref, n * H, 2e-2);
                        const double q8_err = rel(y2, ref, n * H);
                        if (!(q8_err > 4 * split_err))
                            fail_msg("%s: %s: rel L2 %.3e, not worse than split mode's %.3e", b->name, what, q8_err,
                                     split_err);
                    }
                    /* the default (MK_CUDA_GEMM_AUTO) in the grouped slot: the int8 mode's bits where the
                     * engine's prefill is int8, the split mode's where it is float */
                    mk_backend_cuda_set_gemm(b->b, MK_CUDA_GEMM_AUTO, 0);
                    const int pre = mk_kernels_prefill_int8_setting();
                    for (int on = 0; on < 2; on++) {
                        mk_kernels_set_prefill_int8(on);
                        assert_true(b->i->moe_grouped(b->ctx, &a, di, dw_));
                        float *ya = back(b, dy, (size_t)(n * H) * 4);
                        if (memcmp(ya, on ? y2 : y, (size_t)(n * H) * 4))
                            fail_msg("%s: grouped moe %s, %lld tokens, default mode, prefill int8 %s: not the %s "
                                     "mode's result",
                                     b->name, gw[0].name, (long long)n, on ? "on" : "off", on ? "int8" : "split");
                        free(ya);
                    }
                    mk_kernels_restore_prefill_int8(pre);
                    free(y2);
                    free(y3);
                    free(y);
                    mk_moe_args a1 = a;
                    a1.n = 1;
                    assert_false(b->i->moe_grouped(b->ctx, &a1, di, dw_));
                }
                assert_int_equal(b->i->sync(b->ctx), MK_OK);
                for (int e = 0; e < E; e++) {
                    mk_backend_cuda_forget(b->b, gw[e].data);
                    mk_backend_cuda_forget(b->b, uw[e].data);
                    mk_backend_cuda_forget(b->b, dw[e].data);
                }
                free_experts(E, gw, uw, dw, G, U, D);
                mk_backend_cuda_forget(b->b, rw.data);
                wbuf_free(&rw);
                free(x);
                free(idx);
                free(wt);
                free(ref);
                free(h);
                b->i->buf_free(b->ctx, dx);
                b->i->buf_free(b->ctx, dy);
                b->i->buf_free(b->ctx, di);
                b->i->buf_free(b->ctx, dw_);
            }
    }
}

/* check_finite / nonfinite_take: the first check in queue order that finds
 * a NaN or infinity keeps its tag, its lowest index and the value; the
 * take clears it; a large vector (many blocks) gives its lowest index. */
static void test_deferred_nonfinite(void **st) {
    (void)st;
    for (int bi = 0; bi < g_nbe; bi++) {
        be_case *b = &g_be[bi];
        assert_true(!b->i->check_finite == !b->i->nonfinite_take);
        if (!b->i->check_finite) {
            assert_string_equal(b->name, "cpu");
            continue;
        }
        enum { N = 5000, BIG = 1 << 20 };
        int32_t tag;
        int64_t at;
        float v;
        float *h = rvec(BIG);
        void *clean = dev(b, h, N * 4), *bad = dev(b, h, N * 4), *bad2 = dev(b, h, N * 4), *big = dev(b, h, BIG * 4);
        const float nan = NAN, ninf = -INFINITY;
        b->i->upload(b->ctx, (float *)bad + 4000, &nan, 4);
        b->i->upload(b->ctx, (float *)bad + 2500, &ninf, 4);
        b->i->upload(b->ctx, (float *)bad2 + 10, &nan, 4);
        b->i->upload(b->ctx, (float *)big + 900000, &nan, 4);
        b->i->upload(b->ctx, (float *)big + 777777, &ninf, 4);
        b->i->check_finite(b->ctx, clean, N, 1);
        assert_false(b->i->nonfinite_take(b->ctx, &tag, &at, &v));
        b->i->check_finite(b->ctx, clean, N, 1);
        b->i->check_finite(b->ctx, bad, N, 2);
        b->i->check_finite(b->ctx, bad2, N, 3);
        assert_true(b->i->nonfinite_take(b->ctx, &tag, &at, &v));
        assert_int_equal(tag, 2);
        assert_int_equal(at, 2500);
        assert_true(isinf(v) && v < 0);
        assert_false(b->i->nonfinite_take(b->ctx, &tag, &at, &v));
        b->i->check_finite(b->ctx, bad2, N, 3);
        b->i->check_finite(b->ctx, big, BIG, 4);
        assert_true(b->i->nonfinite_take(b->ctx, &tag, &at, &v));
        assert_int_equal(tag, 3);
        assert_int_equal(at, 10);
        assert_true(isnan(v));
        b->i->check_finite(b->ctx, clean, N, 5);
        b->i->check_finite(b->ctx, big, BIG, 6);
        assert_true(b->i->nonfinite_take(b->ctx, &tag, &at, &v));
        assert_int_equal(tag, 6);
        assert_int_equal(at, 777777);
        assert_true(isinf(v));
        assert_int_equal(b->i->sync(b->ctx), MK_OK);
        void *bufs[] = {clean, bad, bad2, big};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            b->i->buf_free(b->ctx, bufs[i]);
        free(h);
    }
}

/* step_begin / step_end (on by default; off after mk_backend_cuda_set_graphs
 * false): recorded slots run at step_end (and only then),
 * twice with other arguments (the graph updated in place); the last
 * recording replays (step_replay with step_last's id) over inputs changed
 * since, and not with another id; a refused host round trip inside a
 * recording makes step_end false with nothing run and drops the kept
 * recording; a dropped recording runs nothing; freeing a buffer drops the
 * kept recording. The CPU backend records nothing. */
static void test_step_recording(void **st) {
    (void)st;
    enum { R = 96, C = 128 };
    for (int bi = 0; bi < g_nbe; bi++) {
        be_case *b = &g_be[bi];
        assert_true(!b->i->step_begin == !b->i->step_end);
        assert_true(!b->i->step_begin == !b->i->step_replay && !b->i->step_begin == !b->i->step_last);
        if (!b->i->step_begin) {
            assert_string_equal(b->name, "cpu");
            continue;
        }
        wbuf wb;
        make_w(&wb, 2, R, C);
        double *W = deq(&wb.w);
        float *x = rvec(2 * C), *y0 = rvec(2 * R);
        void *dx = dev(b, x, 2 * C * 4), *dy = dev(b, y0, 2 * R * 4), *dz = dev(b, NULL, 2 * R * 4);
        b->i->matmul(b->ctx, &wb.w, dx, 1, dz); /* first use (upload) outside any recording */
        assert_int_equal(b->i->sync(b->ctx), MK_OK);
        mk_backend_cuda_set_graphs(b->b, false);
        assert_false(b->i->step_begin(b->ctx)); /* off when asked */
        mk_backend_cuda_set_graphs(b->b, true);
        for (int rep = 0; rep < 3; rep++) { /* rows rep%2 of x, y: other arguments each time */
            const int64_t o = rep % 2;
            assert_true(b->i->step_begin(b->ctx));
            b->i->matmul(b->ctx, &wb.w, (float *)dx + o * C, 1, (float *)dz + o * R);
            b->i->axpy(b->ctx, (float *)dy + o * R, 2.0f, (float *)dz + o * R, R);
            assert_true(b->i->step_end(b->ctx, true));
            float *y = back(b, dy, 2 * R * 4);
            double ref[R];
            for (int64_t r = 0; r < R; r++) {
                double a = 0;
                for (int64_t c = 0; c < C; c++)
                    a += W[r * C + c] * x[o * C + c];
                ref[r] = y0[o * R + r] + 2.0 * a;
            }
            check_rel(b->name, "recorded step (matmul + axpy)", y + o * R, ref, R, TOL_DOT);
            for (int64_t r = 0; r < R; r++) /* the other row untouched */
                assert_true(y[(1 - o) * R + r] == y0[(1 - o) * R + r]);
            memcpy(y0 + o * R, y + o * R, R * 4); /* the next time this row is updated again */
            free(y);
        }
        /* the last recording (row 0) replayed over a new x: y0 += 2 W x' again */
        uint64_t id = b->i->step_last(b->ctx);
        assert_true(id != 0);
        assert_false(b->i->step_replay(b->ctx, id + 1)); /* not its id: nothing runs */
        float *x2 = rvec(C);
        b->i->upload(b->ctx, dx, x2, C * 4);
        assert_true(b->i->step_replay(b->ctx, id));
        {
            float *y = back(b, dy, 2 * R * 4);
            double ref[R];
            for (int64_t r = 0; r < R; r++) {
                double a = 0;
                for (int64_t c = 0; c < C; c++)
                    a += W[r * C + c] * x2[c];
                ref[r] = y0[r] + 2.0 * a;
            }
            check_rel(b->name, "replayed step (matmul + axpy, new x)", y, ref, R, TOL_DOT);
            assert_memory_equal(y + R, y0 + R, R * 4); /* row 1 untouched */
            memcpy(y0, y, R * 4);
            free(y);
        }
        free(x2);
#ifdef MK_HAVE_CUDA
        /* a recording made under other switches (here --act-int8's device setting) is not
         * replayed: it would run the kernels chosen before; refused, dropped, nothing runs */
        if (!strcmp(b->name, "cuda")) {
            const bool q0 = mk_cuda_act_int8();
            const int q0s = mk_cuda_act_int8_setting(); /* restored as it was: following or forced */
            mk_cuda_set_act_int8(!q0);
            assert_false(b->i->step_replay(b->ctx, id));
            assert_int_equal(b->i->step_last(b->ctx), 0);
            mk_cuda_restore_act_int8(q0s);
            assert_int_equal(b->i->sync(b->ctx), MK_OK);
            float *y = back(b, dy, 2 * R * 4);
            assert_memory_equal(y, y0, 2 * R * 4);
            free(y);
            /* recorded again, as the engine would: replayable */
            assert_true(b->i->step_begin(b->ctx));
            b->i->matmul(b->ctx, &wb.w, dx, 1, dz);
            b->i->axpy(b->ctx, dy, 2.0f, dz, R);
            assert_true(b->i->step_end(b->ctx, true));
            id = b->i->step_last(b->ctx);
            y = back(b, dy, 2 * R * 4);
            memcpy(y0, y, R * 4);
            free(y);
        }
#endif
        /* a download inside a recording: refused, nothing of the step ran */
        float junk[4];
        assert_true(b->i->step_begin(b->ctx));
        b->i->axpy(b->ctx, dy, 1.0f, dz, R);
        b->i->download(b->ctx, junk, dz, sizeof junk);
        assert_false(b->i->step_end(b->ctx, true));
        assert_int_equal(b->i->sync(b->ctx), MK_OK);
        assert_false(b->i->step_replay(b->ctx, id)); /* the failed recording dropped it */
        assert_int_equal(b->i->step_last(b->ctx), 0);
        float *y = back(b, dy, 2 * R * 4);
        assert_memory_equal(y, y0, 2 * R * 4);
        free(y);
        /* a dropped recording runs nothing */
        assert_true(b->i->step_begin(b->ctx));
        b->i->axpy(b->ctx, dy, 1.0f, dz, R);
        assert_false(b->i->step_end(b->ctx, false));
        y = back(b, dy, 2 * R * 4);
        assert_memory_equal(y, y0, 2 * R * 4);
        free(y);
        /* freeing any buffer drops the kept recording (it may point there) */
        void *tmp = dev(b, NULL, 64);
        assert_true(b->i->step_begin(b->ctx));
        b->i->axpy(b->ctx, (float *)dy + R, 0.5f, dz, R);
        assert_true(b->i->step_end(b->ctx, true));
        id = b->i->step_last(b->ctx);
        assert_true(id != 0);
        b->i->buf_free(b->ctx, tmp);
        assert_false(b->i->step_replay(b->ctx, id));
        y = back(b, dy, 2 * R * 4);
        float *zz = back(b, dz, 2 * R * 4);
        for (int64_t r = 0; r < R; r++) /* the recorded axpy ran once, not again */
            assert_true(y[R + r] == y0[R + r] + 0.5f * zz[r]);
        free(y);
        free(zz);
        int built, updated, replayed;
        mk_backend_cuda_graph_stats(b->b, &built, &updated, &replayed);
        assert_true(built >= 1 && built + updated >= 4);
        assert_int_equal(replayed, 1);
        b->i->buf_free(b->ctx, dx);
        b->i->buf_free(b->ctx, dy);
        b->i->buf_free(b->ctx, dz);
        forget_w(b, &wb);
        wbuf_free(&wb);
        free(W);
        free(x);
        free(y0);
    }
}

/* step_chain / step_take (the engine's decode lookahead): a recording of
 * matmul, check_finite and argmax chained twice with new inputs uploaded
 * from reused host buffers: each slot's result is the argmax of W x for its
 * own x (the host's, in double), the second step's link copied the first's
 * argmax before the second ran; a slot not yet taken refuses another step;
 * a take of an empty slot fails; another recording's id, uploads beyond the
 * staging run nothing; a NaN input's finding is the slot's (tag, index),
 * kept until nonfinite_take clears it, and the next chained step finds
 * none; a step taken after a process-wide switch changed is stale; with
 * the lookahead switched off (the default) nothing is queued. The CPU
 * backend chains nothing. */
static int32_t ref_argmax_wx(const double *W, const float *x, int64_t R, int64_t C) {
    int32_t best = 0;
    double bv = -INFINITY;
    for (int64_t r = 0; r < R; r++) {
        double a = 0;
        for (int64_t c = 0; c < C; c++)
            a += W[r * C + c] * x[c];
        if (a > bv) {
            bv = a;
            best = (int32_t)r;
        }
    }
    return best;
}

static void test_step_chain(void **st) {
    (void)st;
    enum { R = 200, C = 128, TAG = 7 };
    for (int bi = 0; bi < g_nbe; bi++) {
        be_case *b = &g_be[bi];
        assert_true(!b->i->step_chain == !b->i->step_take);
        wbuf wb;
        make_w(&wb, 1, R, C); /* bf16: zero-mean rows */
        double *W = deq(&wb.w);
        /* x along one row of W: that row's product wins by far (no near ties) */
        float *x1 = rvec(C), *x2 = rvec(C), *xh = malloc(C * 4);
        assert_non_null(xh);
        for (int64_t c = 0; c < C; c++) {
            x1[c] = (float)W[37 * C + c];
            x2[c] = (float)W[151 * C + c];
        }
        assert_int_equal(ref_argmax_wx(W, x1, R, C), 37);
        assert_int_equal(ref_argmax_wx(W, x2, R, C), 151);
        if (!b->i->step_chain) {
            assert_string_equal(b->name, "cpu");
            wbuf_free(&wb);
            free(W);
            free(x1);
            free(x2);
            free(xh);
            continue;
        }
        assert_true(b->i->step_replay && b->i->argmax && b->i->check_finite);
        void *dx = dev(b, x1, C * 4), *dz = dev(b, NULL, R * 4), *dam = dev(b, NULL, 64),
             *dtok = dev(b, NULL, 64);
        b->i->matmul(b->ctx, &wb.w, dx, 1, dz); /* the weight's upload outside the recording */
        assert_int_equal(b->i->sync(b->ctx), MK_OK);
        assert_true(b->i->step_begin(b->ctx));
        b->i->matmul(b->ctx, &wb.w, dx, 1, dz);
        b->i->check_finite(b->ctx, dz, R, TAG);
        b->i->argmax(b->ctx, dz, R, dam);
        assert_true(b->i->step_end(b->ctx, true));
        const uint64_t id = b->i->step_last(b->ctx);
        assert_true(id != 0);
        int32_t r0 = -1, r1 = -1, tag = -1;
        int64_t at = -1;
        float v = 0;
        bool found = true, stale = true;
        /* two steps queued before either is read; xh reused between them */
        memcpy(xh, x1, C * 4);
        mk_upload up = {dx, xh, C * 4};
#ifdef MK_HAVE_CUDA
        /* off by default (until measured on a device): refused, nothing queued */
        const bool la0 = mk_cuda_lookahead();
        mk_cuda_set_lookahead(false);
        assert_false(b->i->step_chain(b->ctx, id, 0, &up, 1, NULL, NULL, 0, dam, 4));
        assert_int_equal(mk_backend_cuda_chained(b->b), 0);
        mk_cuda_set_lookahead(true);
#endif
        assert_true(b->i->step_chain(b->ctx, id, 0, &up, 1, NULL, NULL, 0, dam, 4));
        memcpy(xh, x2, C * 4);
        assert_true(b->i->step_chain(b->ctx, id, 1, &up, 1, dtok, dam, 4, dam, 4));
        assert_false(b->i->step_chain(b->ctx, id, 1, &up, 1, NULL, NULL, 0, dam, 4)); /* slot 1 busy */
        assert_int_equal(b->i->step_take(b->ctx, 0, &r0, 4, &found, &stale, &tag, &at, &v), MK_OK);
        assert_false(found);
        assert_false(stale);
        assert_int_equal(b->i->step_take(b->ctx, 1, &r1, 4, &found, &stale, &tag, &at, &v), MK_OK);
        assert_false(found);
        assert_false(stale);
        assert_int_equal(r0, ref_argmax_wx(W, x1, R, C));
        assert_int_equal(r1, ref_argmax_wx(W, x2, R, C));
        int32_t linked = -1;
        b->i->download(b->ctx, &linked, dtok, 4);
        assert_int_equal(linked, r0); /* step 0's argmax, copied before step 1 ran */
        assert_int_not_equal(b->i->step_take(b->ctx, 0, &r0, 4, &found, &stale, &tag, &at, &v), MK_OK); /* empty */
        assert_false(b->i->step_chain(b->ctx, id + 1, 0, &up, 1, NULL, NULL, 0, dam, 4)); /* not its id */
        float *big = calloc(1 << 16, 1);
        assert_non_null(big);
        void *dbig = dev(b, NULL, 1 << 16); /* room for it, should the refusal regress */
        mk_upload ubig = {dbig, big, 1 << 16}; /* past the staging: refused */
        assert_false(b->i->step_chain(b->ctx, id, 0, &ubig, 1, NULL, NULL, 0, dam, 4));
        free(big);
        /* a NaN in x: every product NaN, the check keeps (TAG, 0) */
        memcpy(xh, x1, C * 4);
        xh[5] = NAN;
        assert_true(b->i->step_chain(b->ctx, id, 0, &up, 1, NULL, NULL, 0, dam, 4));
        assert_int_equal(b->i->step_take(b->ctx, 0, &r0, 4, &found, &stale, &tag, &at, &v), MK_OK);
        assert_true(found);
        assert_int_equal(tag, TAG);
        assert_int_equal(at, 0);
        assert_true(isnan(v));
        int32_t t2 = -1;
        int64_t a2 = -1;
        float v2 = 0;
        assert_true(b->i->nonfinite_take(b->ctx, &t2, &a2, &v2)); /* kept for it */
        assert_int_equal(t2, TAG);
        memcpy(xh, x2, C * 4);
        assert_true(b->i->step_chain(b->ctx, id, 1, &up, 1, NULL, NULL, 0, dam, 4));
        assert_int_equal(b->i->step_take(b->ctx, 1, &r1, 4, &found, &stale, &tag, &at, &v), MK_OK);
        assert_false(found);
        assert_int_equal(r1, ref_argmax_wx(W, x2, R, C));
#ifdef MK_HAVE_CUDA
        /* queued under one setting of a process-wide switch, taken under another: stale */
        const bool q0 = mk_cuda_act_int8();
        const int q0s = mk_cuda_act_int8_setting(); /* restored as it was: following or forced */
        assert_true(b->i->step_chain(b->ctx, id, 0, &up, 1, NULL, NULL, 0, dam, 4));
        mk_cuda_set_act_int8(!q0);
        assert_int_equal(b->i->step_take(b->ctx, 0, &r0, 4, &found, &stale, &tag, &at, &v), MK_OK);
        assert_true(stale);
        mk_cuda_restore_act_int8(q0s);
        /* the tests' hook (mk_cuda_test_stale): the next take stale, the one after not */
        mk_cuda_test_stale(1);
        for (int k = 0; k < 2; k++) {
            assert_true(b->i->step_chain(b->ctx, id, 0, &up, 1, NULL, NULL, 0, dam, 4));
            assert_int_equal(b->i->step_take(b->ctx, 0, &r0, 4, &found, &stale, &tag, &at, &v), MK_OK);
            assert_int_equal(stale, k == 0);
            assert_int_equal(r0, ref_argmax_wx(W, x2, R, C)); /* xh holds x2 since the NaN case */
        }
        assert_int_equal(mk_backend_cuda_chained(b->b), 7);
        mk_cuda_set_lookahead(la0);
#endif
        assert_int_equal(b->i->sync(b->ctx), MK_OK);
        b->i->buf_free(b->ctx, dx);
        b->i->buf_free(b->ctx, dz);
        b->i->buf_free(b->ctx, dam);
        b->i->buf_free(b->ctx, dtok);
        b->i->buf_free(b->ctx, dbig);
        forget_w(b, &wb);
        wbuf_free(&wb);
        free(W);
        free(x1);
        free(x2);
        free(xh);
    }
}

/* ---- the launch-cutting slots (optional; the CPU backend has matmul_n only) - */

/* add_rmsnorm, qk_norm_rope, matmul_n, argmax against the same references
 * as the slots they stand for: x += y exactly as float addition, the norm
 * within TOL_ELT of a double one, the check's finding (tag, lowest index,
 * value) as check_finite's; per-head norm + RoPE within TOL_ELT; each
 * matmul_n output bit for bit what matmul gives (mixed kinds take the
 * per-weight path) and within the matmul bound; argmax exactly the lowest
 * index of the largest value (ties, +-0, all negative, sizes around the
 * grid's). */
static void ref_rmsnorm(const float *x, const float *g, int64_t rows, int64_t dim, double eps, double *out) {
    for (int64_t r = 0; r < rows; r++) {
        double ss = 0;
        for (int64_t i = 0; i < dim; i++)
            ss += (double)x[r * dim + i] * x[r * dim + i];
        double inv = 1.0 / sqrt(ss / (double)dim + eps);
        for (int64_t i = 0; i < dim; i++)
            out[r * dim + i] = x[r * dim + i] * inv * (g ? g[i] : 1.0);
    }
}

static int32_t ref_argmax(const float *x, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return (int32_t)best;
}

/* matmul_n: q, k, v shapes (odd row counts) in one kind each, then mixed
 * kinds; each output bitwise matmul's and within the matmul bound. */
static void check_matmul_n(be_case *b) {
    assert_non_null(b->i->matmul_n);
    static const int kinds[][3] = {{2, 2, 2}, {3, 3, 3}, {1, 1, 1}, {0, 0, 0}, {1, 2, 2}, {4, 4, 4}};
    static const int64_t rows[3] = {134, 37, 37};
    const int64_t C = 256;
    for (size_t ki = 0; ki < sizeof kinds / sizeof kinds[0]; ki++)
        for (int64_t n = 1; n <= 3; n += 2) {
            wbuf wb[3];
            const mk_wt *ws[3];
            float *dys[3], *dz = dev(b, NULL, (size_t)(n * rows[0]) * 4);
            float *x = rvec(n * C), *dx = dev(b, x, (size_t)(n * C) * 4);
            for (int i = 0; i < 3; i++) {
                make_w(&wb[i], kinds[ki][i], rows[i], C);
                ws[i] = &wb[i].w;
                dys[i] = dev(b, NULL, (size_t)(n * rows[i]) * 4);
            }
            b->i->matmul_n(b->ctx, ws, 3, dx, n, dys);
            for (int i = 0; i < 3; i++) {
                b->i->matmul(b->ctx, ws[i], dx, n, dz);
                float *y = back(b, dys[i], (size_t)(n * rows[i]) * 4), *z = back(b, dz, (size_t)(n * rows[i]) * 4);
                assert_memory_equal(y, z, (size_t)(n * rows[i]) * 4);
                double *W = deq(ws[i]), *ref = calloc((size_t)(n * rows[i]), sizeof(double));
                for (int64_t t = 0; t < n; t++)
                    for (int64_t r = 0; r < rows[i]; r++)
                        for (int64_t c = 0; c < C; c++)
                            ref[t * rows[i] + r] += W[r * C + c] * x[t * C + c];
                char what[96];
                snprintf(what, sizeof what, "matmul_n %s n=%lld", wb[i].name, (long long)n);
                check_rel(b->name, what, y, ref, n * rows[i], tol_matmul(b->name, ws[i], W, x, n, ref));
                free(y);
                free(z);
                free(W);
                free(ref);
            }
            for (int i = 0; i < 3; i++) {
                b->i->buf_free(b->ctx, dys[i]);
                forget_w(b, &wb[i]);
                wbuf_free(&wb[i]);
            }
            b->i->buf_free(b->ctx, dx);
            b->i->buf_free(b->ctx, dz);
            free(x);
        }
}

static void test_fused_slots(void **st) {
    (void)st;
    const float eps = 1e-6f;
    for (int bi = 0; bi < g_nbe; bi++) {
        be_case *b = &g_be[bi];
        if (!b->i->add_rmsnorm && !b->i->qk_norm_rope && !b->i->argmax) {
            /* the CPU backend has matmul_n only (one quantization of x for
             * several weights on its int8 prefill) */
            assert_string_equal(b->name, "cpu");
            check_matmul_n(b);
            continue;
        }
        assert_non_null(b->i->add_rmsnorm);
        assert_non_null(b->i->check_finite);
        /* add_rmsnorm: 3 rows of 1000 (not a multiple of a warp), then 1 row of 2048 */
        static const int64_t shp[][2] = {{3, 1000}, {1, 2048}, {2, 5000}};
        for (size_t si = 0; si < sizeof shp / sizeof shp[0]; si++) {
            const int64_t R = shp[si][0], D = shp[si][1], N = R * D;
            float *x = rvec(N), *y = rvec(N), *g = rvec(D), *sum = malloc((size_t)N * 4);
            double *ref = malloc((size_t)N * sizeof(double));
            assert_true(sum && ref);
            for (int64_t i = 0; i < N; i++)
                sum[i] = x[i] + y[i];
            ref_rmsnorm(sum, g, R, D, eps, ref);
            float *dx = dev(b, x, (size_t)N * 4), *dy = dev(b, y, (size_t)N * 4), *dxb = dev(b, NULL, (size_t)N * 4);
            float *dg = dev(b, g, (size_t)D * 4);
            int32_t tag;
            int64_t at;
            float v;
            b->i->add_rmsnorm(b->ctx, dx, dy, R, D, 7, dxb, dg, eps);
            assert_false(b->i->nonfinite_take(b->ctx, &tag, &at, &v));
            float *ox = back(b, dx, (size_t)N * 4), *oxb = back(b, dxb, (size_t)N * 4);
            assert_memory_equal(ox, sum, (size_t)N * 4); /* as axpy(x, 1, y): one float addition */
            check_rel(b->name, "add_rmsnorm", oxb, ref, N, TOL_ELT);
            free(ox);
            free(oxb);
            /* no norm: x += y only, xb untouched */
            b->i->upload(b->ctx, dx, x, (size_t)N * 4);
            b->i->zero(b->ctx, dxb, (size_t)N * 4);
            b->i->add_rmsnorm(b->ctx, dx, dy, R, D, 7, NULL, NULL, eps);
            ox = back(b, dx, (size_t)N * 4);
            oxb = back(b, dxb, (size_t)N * 4);
            assert_memory_equal(ox, sum, (size_t)N * 4);
            for (int64_t i = 0; i < N; i++)
                assert_true(oxb[i] == 0.0f);
            free(ox);
            free(oxb);
            /* planted: NaN late in the last row, infinity earlier in another: the lowest index is kept */
            const float nan = NAN, inf = INFINITY;
            b->i->upload(b->ctx, dx, x, (size_t)N * 4);
            b->i->upload(b->ctx, dy + N - 3, &nan, 4);
            const int64_t early = R > 1 ? D + D / 2 : D / 2;
            b->i->upload(b->ctx, dy + early, &inf, 4);
            b->i->add_rmsnorm(b->ctx, dx, dy, R, D, 9, dxb, dg, eps);
            assert_true(b->i->nonfinite_take(b->ctx, &tag, &at, &v));
            assert_int_equal(tag, 9);
            assert_int_equal(at, early);
            assert_true(isinf(v) && v > 0);
            assert_false(b->i->nonfinite_take(b->ctx, &tag, &at, &v));
            /* an earlier finding is kept over this one */
            b->i->upload(b->ctx, dx, x, (size_t)N * 4);
            b->i->check_finite(b->ctx, dy, N, 4);
            b->i->add_rmsnorm(b->ctx, dx, dy, R, D, 9, dxb, dg, eps);
            assert_true(b->i->nonfinite_take(b->ctx, &tag, &at, &v));
            assert_int_equal(tag, 4);
            assert_int_equal(at, early);
            /* g in host memory (model memory, as the engine passes it) */
            b->i->upload(b->ctx, dy, y, (size_t)N * 4);
            b->i->upload(b->ctx, dx, x, (size_t)N * 4);
            b->i->add_rmsnorm(b->ctx, dx, dy, R, D, 7, dxb, g, eps);
            assert_false(b->i->nonfinite_take(b->ctx, &tag, &at, &v));
            oxb = back(b, dxb, (size_t)N * 4);
            check_rel(b->name, "add_rmsnorm (host g)", oxb, ref, N, TOL_ELT);
            free(oxb);
            forget(b, g, "add_rmsnorm's host g");
            assert_int_equal(b->i->sync(b->ctx), MK_OK);
            void *bufs[] = {dx, dy, dxb, dg};
            for (size_t i = 0; i < 4; i++)
                b->i->buf_free(b->ctx, bufs[i]);
            free(x);
            free(y);
            free(g);
            free(sum);
            free(ref);
        }
        /* qk_norm_rope: 3 tokens, 4 query and 2 key heads of 64, rotating 32 (partial) or 64 */
        assert_non_null(b->i->qk_norm_rope);
        enum { T = 3, NQ = 4, NK = 2, HD = 64 };
        for (int normed = 0; normed < 2; normed++)
            for (int rot = 32; rot <= HD; rot += 32) {
                float *q = rvec(T * NQ * HD), *k = rvec(T * NK * HD), *qg = rvec(HD), *kg = rvec(HD);
                float *cs = rvec(T * rot / 2), *sn = rvec(T * rot / 2);
                double rq[T * NQ * HD], rk[T * NK * HD];
                for (int which = 0; which < 2; which++) {
                    const float *in = which ? k : q, *gg = which ? kg : qg;
                    double *out = which ? rk : rq;
                    const int nh = which ? NK : NQ;
                    for (int t = 0; t < T; t++)
                        for (int h = 0; h < nh; h++) {
                            const float *a = in + (t * nh + h) * HD;
                            double nv[HD];
                            if (normed) {
                                ref_rmsnorm(a, gg, 1, HD, eps, nv);
                            } else {
                                for (int i = 0; i < HD; i++)
                                    nv[i] = a[i];
                            }
                            double *o = out + (t * nh + h) * HD;
                            for (int i = 0; i < rot / 2; i++) {
                                double c = cs[t * rot / 2 + i], s2 = sn[t * rot / 2 + i];
                                o[i] = nv[i] * c - nv[i + rot / 2] * s2;
                                o[i + rot / 2] = nv[i + rot / 2] * c + nv[i] * s2;
                            }
                            for (int i = rot; i < HD; i++)
                                o[i] = nv[i];
                        }
                }
                float *dq = dev(b, q, sizeof(float) * T * NQ * HD), *dk = dev(b, k, sizeof(float) * T * NK * HD);
                float *dqg = dev(b, qg, HD * 4), *dkg = dev(b, kg, HD * 4);
                float *dc = dev(b, cs, sizeof(float) * T * rot / 2), *ds = dev(b, sn, sizeof(float) * T * rot / 2);
                b->i->qk_norm_rope(b->ctx, dq, NQ, dk, NK, T, HD, normed ? dqg : NULL, normed ? dkg : NULL, eps,
                                   rot, dc, ds);
                float *oq = back(b, dq, sizeof(float) * T * NQ * HD), *ok = back(b, dk, sizeof(float) * T * NK * HD);
                char what[64];
                snprintf(what, sizeof what, "qk_norm_rope q%s rot %d", normed ? " normed" : "", rot);
                check_rel(b->name, what, oq, rq, T * NQ * HD, TOL_ELT);
                snprintf(what, sizeof what, "qk_norm_rope k%s rot %d", normed ? " normed" : "", rot);
                check_rel(b->name, what, ok, rk, T * NK * HD, TOL_ELT);
                if (!strcmp(b->name, "cuda")) { /* a warp a row (mk_cuda_set_qk_rows_warp) flipped: the same bits */
                    const bool w0 = mk_cuda_qk_rows_warp();
                    b->i->upload(b->ctx, dq, q, sizeof(float) * T * NQ * HD);
                    b->i->upload(b->ctx, dk, k, sizeof(float) * T * NK * HD);
                    mk_cuda_set_qk_rows_warp(!w0);
                    b->i->qk_norm_rope(b->ctx, dq, NQ, dk, NK, T, HD, normed ? dqg : NULL, normed ? dkg : NULL, eps,
                                       rot, dc, ds);
                    mk_cuda_set_qk_rows_warp(w0);
                    float *wq = back(b, dq, sizeof(float) * T * NQ * HD), *wk = back(b, dk, sizeof(float) * T * NK * HD);
                    if (memcmp(wq, oq, sizeof(float) * T * NQ * HD) || memcmp(wk, ok, sizeof(float) * T * NK * HD))
                        fail_msg("cuda: qk_norm_rope%s rot %d: a warp a row %s changes q or k", normed ? " normed" : "",
                                 rot, w0 ? "off" : "on");
                    free(wq);
                    free(wk);
                }
                free(oq);
                free(ok);
                void *bufs[] = {dq, dk, dqg, dkg, dc, ds};
                for (size_t i = 0; i < 6; i++)
                    b->i->buf_free(b->ctx, bufs[i]);
                float *hs[] = {q, k, qg, kg, cs, sn};
                for (size_t i = 0; i < 6; i++)
                    free(hs[i]);
            }
        check_matmul_n(b);
        /* argmax */
        assert_non_null(b->i->argmax);
        static const int64_t ns[] = {1, 5, 255, 256, 257, 67584, 151936};
        int32_t *dout = dev(b, NULL, 64);
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
            for (int pat = 0; pat < 4; pat++) {
                const int64_t n = ns[ni];
                float *v = rvec(n);
                if (pat == 1 && n > 3) { /* a tie: the lower index wins */
                    v[n / 3] = 7.0f;
                    v[n - 1] = 7.0f;
                } else if (pat == 2) { /* +0 and -0 are equal: index 0 */
                    for (int64_t i = 0; i < n; i++)
                        v[i] = (i & 1) ? 0.0f : -0.0f;
                } else if (pat == 3) { /* all negative */
                    for (int64_t i = 0; i < n; i++)
                        v[i] = -1.0f - fabsf(v[i]);
                }
                float *dv = dev(b, v, (size_t)n * 4);
                b->i->argmax(b->ctx, dv, n, dout);
                int32_t got = -1;
                b->i->download(b->ctx, &got, dout, 4);
                assert_int_equal(b->i->sync(b->ctx), MK_OK);
                if (got != ref_argmax(v, n))
                    fail_msg("%s: argmax n=%lld pattern %d: %d, expected %d", b->name, (long long)n, pat, got,
                             ref_argmax(v, n));
                b->i->buf_free(b->ctx, dv);
                free(v);
            }
        b->i->buf_free(b->ctx, dout);
    }
}

static int setup(void **st) {
    (void)st;
    g_no_cuda[0] = '\0';
    if (mk_pool_create(2, &g_pool) != MK_OK)
        return -1;
    mk_backend *b = NULL;
    if (mk_backend_cpu_create(g_pool, &b) != MK_OK)
        return -1;
    g_be[g_nbe++] = (be_case){"cpu", b, mk_backend_iface(b), mk_backend_ctx(b)};
    /* the CUDA backend joins when moekit has it and a GPU is present (once:
     * in the run on the default CPU path, see main) */
    if (g_cuda_run && mk_backend_cuda_create(0, &b) == MK_OK)
        g_be[g_nbe++] = (be_case){"cuda", b, mk_backend_iface(b), mk_backend_ctx(b)};
    else
        snprintf(g_no_cuda, sizeof g_no_cuda, "%s", mk_err_msg());
    return 0;
}

/* Says whether the cases above ran on CUDA too; skips, naming why, when not. */
static void test_cuda_present(void **st) {
    (void)st;
    if (g_no_cuda[0]) {
        printf("SKIP test_backend_ops on CUDA: no GPU: %s\n", g_no_cuda);
        skip();
    }
    assert_int_equal(g_nbe, 2);
    assert_string_equal(g_be[1].i->name, "cuda");
    assert_false(g_be[1].i->host_mem);
}

/* CUDA only: a recorded one-token attention is not replayed after a
 * batched step's attention_each grew the split scratch it used (the
 * recording pointed at the freed scratch: step_replay must decline, the
 * caller records again). A fresh backend, so the growth is certain. */
static void test_cuda_replay_after_growth(void **st) {
    (void)st;
    if (g_no_cuda[0]) {
        printf("SKIP test_cuda_replay_after_growth: no GPU: %s\n", g_no_cuda);
        skip();
    }
    mk_backend *be = NULL;
    assert_int_equal(mk_backend_cuda_create(0, &be), MK_OK);
    be_case b = {.name = "cuda", .i = mk_backend_iface(be), .ctx = mk_backend_ctx(be)};
    enum { NS = 5, NH = 8, NKV = 2, D = 64, ROWS = 40 };
    const int64_t kw = NKV * D;
    float *q = rvec(NS * NH * D), *kc = rvec(ROWS * kw), *kn = rvec(NS * kw);
    void *dq = dev(&b, q, sizeof(float) * NS * NH * D), *dout = dev(&b, NULL, sizeof(float) * NS * NH * D);
    void *dkn = dev(&b, kn, sizeof(float) * NS * kw);
    void *dk[NS], *dv[NS];
    mk_attn_args a[NS];
    for (int i = 0; i < NS; i++) {
        dk[i] = dev(&b, kc, sizeof(float) * ROWS * kw);
        dv[i] = dev(&b, kc, sizeof(float) * ROWS * kw);
        a[i] = (mk_attn_args){.q = (float *)dq + i * NH * D, .k = dk[i], .v = dv[i],
                              .out = (float *)dout + i * NH * D, .n = 1, .pos0 = 20 + i, .n_heads = NH,
                              .n_kv = NKV, .dk = D, .dv = D, .scale = 0.125f, .k_new = (float *)dkn + i * kw,
                              .v_new = (float *)dkn + i * kw};
    }
    mk_attn_args one = a[0];
    one.k_new = one.v_new = NULL;
    b.i->attention(b.ctx, &one); /* unrecorded: the scratch grows to one token's split */
    assert_true(b.i->step_begin(b.ctx)); /* so the recording's attention uses it */
    b.i->attention(b.ctx, &one);
    assert_true(b.i->step_end(b.ctx, true));
    const uint64_t id = b.i->step_last(b.ctx);
    assert_true(id != 0);
    assert_true(b.i->step_replay(b.ctx, id)); /* nothing changed yet */
    assert_true(b.i->attention_each(b.ctx, a, NS));
    assert_int_equal(b.i->sync(b.ctx), MK_OK);
    assert_false(b.i->step_replay(b.ctx, id));
    for (int i = 0; i < NS; i++) {
        b.i->buf_free(b.ctx, dk[i]);
        b.i->buf_free(b.ctx, dv[i]);
    }
    b.i->buf_free(b.ctx, dq);
    b.i->buf_free(b.ctx, dout);
    b.i->buf_free(b.ctx, dkn);
    free(q);
    free(kc);
    free(kn);
    mk_backend_free(be);
}

/* CUDA only: a decode step's chain of kernels (mk_cuda_set_step_pdl) gives
 * the same bits whether its kernels are launched under programmatic
 * dependent launch or not, queued directly, recorded or replayed at other
 * positions. Three layers of add_rmsnorm -> q/k/v matmul_n -> qk_norm_rope
 * -> rope (q once more, layer 0) -> attention (device position, new rows) ->
 * sigmoid_mul (q as the gate) -> o matmul -> add_rmsnorm -> gate/up
 * matmul_n (layer 1: two matmuls) -> swiglu -> down matmul, then the final
 * norm, a head, its
 * finite check and argmax, all queued without a wait: each kernel reads
 * what the one before it wrote, so a kernel reading before its predecessor
 * finished (a wait missing or misplaced) would change the bits (whether a
 * given run shows it depends on timing: the chain runs many times). With
 * MK_CUDA_PREFETCH_ATTN the attention's cache prefetch reads the
 * device position before its wait: each replay runs at another position,
 * against plain launches there. */
typedef struct pdl_chain {
    wbuf wq, wk, wv, wo, wg, wu, wd, wh;
    float *x0, *y0, *kc0, *vc0;
    float *dx, *dy, *dxb, *dq, *dk, *dv, *dat, *dkc, *dvc, *dg, *dqg, *dcos, *dsin, *dlg, *dff, *dup;
    int64_t *dpos;
    int32_t *dam;
} pdl_chain;
enum { PC_H = 2048, PC_NQ = 16, PC_NK = 4, PC_HD = 128, PC_FF = 1024, PC_P = 300, PC_NP = 4, PC_V = 1000, PC_L = 3 };

static void pdl_chain_reset(be_case *b, pdl_chain *c, int64_t pos) {
    b->i->upload(b->ctx, c->dx, c->x0, sizeof(float) * PC_H);
    b->i->upload(b->ctx, c->dy, c->y0, sizeof(float) * PC_H);
    b->i->upload(b->ctx, c->dkc, c->kc0, sizeof(float) * (PC_P + PC_NP) * PC_NK * PC_HD);
    b->i->upload(b->ctx, c->dvc, c->vc0, sizeof(float) * (PC_P + PC_NP) * PC_NK * PC_HD);
    b->i->upload(b->ctx, c->dpos, &pos, sizeof pos);
    b->i->zero(b->ctx, c->dlg, sizeof(float) * PC_V);
    b->i->zero(b->ctx, c->dam, sizeof(int32_t));
}

static void pdl_chain_queue(be_case *b, pdl_chain *c) {
    const float eps = 1e-6f;
    const mk_wt *qkv[3] = {&c->wq.w, &c->wk.w, &c->wv.w}, *gu[2] = {&c->wg.w, &c->wu.w};
    float *outs[3] = {c->dq, c->dk, c->dv}, *ffo[2] = {c->dff, c->dup};
    mk_attn_args a = {.q = c->dq, .k = c->dkc, .v = c->dvc, .out = c->dat, .n = 1, .pos0 = 0, .n_heads = PC_NQ,
                      .n_kv = PC_NK, .dk = PC_HD, .dv = PC_HD, .scale = 0.088f, .pos_dev = c->dpos,
                      .k_new = c->dk, .v_new = c->dv};
    for (int l = 0; l < PC_L; l++) {
        b->i->add_rmsnorm(b->ctx, c->dx, c->dy, 1, PC_H, 2 * l + 1, c->dxb, c->dg, eps);
        b->i->matmul_n(b->ctx, qkv, 3, c->dxb, 1, outs);
        b->i->qk_norm_rope(b->ctx, c->dq, PC_NQ, c->dk, PC_NK, 1, PC_HD, c->dqg, c->dqg, eps, PC_HD, c->dcos,
                           c->dsin);
        if (l == 0) /* k_rope under PDL too; layers 1.. give the attention the q/k norm to fold */
            b->i->rope(b->ctx, c->dq, 1, PC_NQ * PC_HD, PC_NQ, PC_HD, PC_HD, c->dcos, c->dsin, false);
        b->i->attention(b->ctx, &a);
        b->i->sigmoid_mul(b->ctx, c->dat, c->dq, PC_NQ * PC_HD);
        b->i->matmul(b->ctx, &c->wo.w, c->dat, 1, c->dy);
        b->i->add_rmsnorm(b->ctx, c->dx, c->dy, 1, PC_H, 2 * l + 2, c->dxb, c->dg, eps);
        if (l == 1) { /* one product at a time (MLA's q_a and kv_a read xb so): the first folds the step */
            b->i->matmul(b->ctx, &c->wg.w, c->dxb, 1, c->dff);
            b->i->matmul(b->ctx, &c->wu.w, c->dxb, 1, c->dup);
        } else {
            b->i->matmul_n(b->ctx, gu, 2, c->dxb, 1, ffo);
        }
        b->i->swiglu(b->ctx, c->dff, c->dff, c->dup, PC_FF);
        b->i->matmul(b->ctx, &c->wd.w, c->dff, 1, c->dy);
    }
    b->i->add_rmsnorm(b->ctx, c->dx, c->dy, 1, PC_H, 2 * PC_L + 1, NULL, NULL, eps);
    b->i->rmsnorm(b->ctx, c->dxb, PC_H, c->dx, PC_H, c->dg, 1, PC_H, eps);
    b->i->matmul(b->ctx, &c->wh.w, c->dxb, 1, c->dlg);
    b->i->check_finite(b->ctx, c->dlg, PC_V, 2 * PC_L + 2);
    b->i->argmax(b->ctx, c->dlg, PC_V, c->dam);
}

/* the chain's results at position pos: x, the cache rows written, the logits; the argmax */
#define PC_OUT (PC_H + 2 * PC_NK * PC_HD + PC_V)
static float *pdl_chain_out(be_case *b, pdl_chain *c, int64_t pos, int32_t *am) {
    float *o = malloc(sizeof(float) * PC_OUT);
    assert_non_null(o);
    b->i->download(b->ctx, o, c->dx, sizeof(float) * PC_H);
    b->i->download(b->ctx, o + PC_H, c->dkc + pos * PC_NK * PC_HD, sizeof(float) * PC_NK * PC_HD);
    b->i->download(b->ctx, o + PC_H + PC_NK * PC_HD, c->dvc + pos * PC_NK * PC_HD, sizeof(float) * PC_NK * PC_HD);
    b->i->download(b->ctx, o + PC_H + 2 * PC_NK * PC_HD, c->dlg, sizeof(float) * PC_V);
    b->i->download(b->ctx, am, c->dam, sizeof *am);
    assert_int_equal(b->i->sync(b->ctx), MK_OK);
    int32_t tag;
    int64_t at;
    float v;
    assert_false(b->i->nonfinite_take(b->ctx, &tag, &at, &v));
    return o;
}

/* the chain's results at position PC_P + p bitwise want's, its argmax want_am */
static void pdl_chain_expect(be_case *b, pdl_chain *c, int p, const float *want, int32_t want_am) {
    int32_t am;
    float *o = pdl_chain_out(b, c, PC_P + p, &am);
    assert_memory_equal(o, want, sizeof(float) * PC_OUT);
    assert_int_equal(am, want_am);
    free(o);
}

/* the chain reset to position PC_P + p, queued directly, its results bitwise want's */
static void pdl_chain_check(be_case *b, pdl_chain *c, int p, const float *want, int32_t want_am) {
    pdl_chain_reset(b, c, PC_P + p);
    pdl_chain_queue(b, c);
    pdl_chain_expect(b, c, p, want, want_am);
}

static void test_cuda_step_pdl(void **st) {
    (void)st;
    if (g_no_cuda[0]) {
        printf("SKIP test_cuda_step_pdl: no GPU: %s\n", g_no_cuda);
        skip();
    }
    be_case *b = &g_be[1];
    pdl_chain c;
    memset(&c, 0, sizeof c);
    make_w(&c.wq, 2, PC_NQ * PC_HD, PC_H);
    make_w(&c.wk, 2, PC_NK * PC_HD, PC_H);
    make_w(&c.wv, 2, PC_NK * PC_HD, PC_H);
    make_w(&c.wo, 2, PC_H, PC_NQ * PC_HD);
    make_w(&c.wg, 3, PC_FF, PC_H);
    make_w(&c.wu, 3, PC_FF, PC_H);
    make_w(&c.wd, 2, PC_H, PC_FF);
    make_w(&c.wh, 1, PC_V, PC_H);
    const int64_t cache = (int64_t)(PC_P + PC_NP) * PC_NK * PC_HD;
    c.x0 = rvec(PC_H);
    c.y0 = rvec(PC_H);
    c.kc0 = rvec(cache);
    c.vc0 = rvec(cache);
    float *g = rvec(PC_H), *cs = rvec(PC_HD / 2), *sn = rvec(PC_HD / 2);
    for (int i = 0; i < PC_H; i++)
        g[i] += 1.5f;
    c.dx = dev(b, NULL, sizeof(float) * PC_H);
    c.dy = dev(b, NULL, sizeof(float) * PC_H);
    c.dxb = dev(b, NULL, sizeof(float) * PC_H);
    c.dq = dev(b, NULL, sizeof(float) * PC_NQ * PC_HD);
    c.dk = dev(b, NULL, sizeof(float) * PC_NK * PC_HD);
    c.dv = dev(b, NULL, sizeof(float) * PC_NK * PC_HD);
    c.dat = dev(b, NULL, sizeof(float) * PC_NQ * PC_HD);
    c.dkc = dev(b, NULL, sizeof(float) * cache);
    c.dvc = dev(b, NULL, sizeof(float) * cache);
    c.dg = dev(b, g, sizeof(float) * PC_H);
    c.dqg = dev(b, g, sizeof(float) * PC_HD);
    c.dcos = dev(b, cs, sizeof(float) * PC_HD / 2);
    c.dsin = dev(b, sn, sizeof(float) * PC_HD / 2);
    c.dlg = dev(b, NULL, sizeof(float) * PC_V);
    c.dff = dev(b, NULL, sizeof(float) * PC_FF);
    c.dup = dev(b, NULL, sizeof(float) * PC_FF);
    c.dpos = dev(b, NULL, sizeof(int64_t));
    c.dam = dev(b, NULL, sizeof(int32_t));
    const bool step0 = mk_cuda_step_pdl();
    const unsigned pf0 = mk_cuda_step_prefetch();
    const bool fold0 = mk_cuda_norm_fold(), gqa0 = mk_cuda_attn_gqa();
    float *ref[PC_NP] = {NULL};
    int32_t am0[PC_NP];
    /* the decode attention grouped by kv head (k_attn_gqa, on by default) and k_attn: the folds must
     * keep the bits of each (each kernel folds the q/k norms its own way: k_attn_gqa<.., true>, k_attn<.., true>) */
    for (int pass = 0; pass < 2; pass++) {
        mk_cuda_set_attn_gqa(pass == 0 ? gqa0 : !gqa0);
        const unsigned long long gl0 = mk_cuda_attn_gqa_launches();
        /* plain launches at each position: the references (the first run uploads every weight) */
        mk_cuda_set_step_pdl(false);
        mk_cuda_set_norm_fold(false);
        mk_cuda_set_step_prefetch(0);
        for (int p = 0; p < PC_NP; p++) {
            free(ref[p]);
            pdl_chain_reset(b, &c, PC_P + p);
            pdl_chain_queue(b, &c);
            ref[p] = pdl_chain_out(b, &c, PC_P + p, &am0[p]);
            int nonzero = 0; /* a real computation: finite, not all zero, the cache rows written */
            for (int i = 0; i < PC_OUT; i++) {
                assert_true(isfinite(ref[p][i]));
                nonzero += ref[p][i] != 0.0f;
            }
            assert_true(nonzero > PC_H);
            assert_memory_not_equal(ref[p] + PC_H, c.kc0 + (PC_P + p) * PC_NK * PC_HD, sizeof(float) * PC_NK * PC_HD);
            assert_true(am0[p] >= 0 && am0[p] < PC_V);
            if (p > 0) /* the position matters */
                assert_memory_not_equal(ref[p], ref[0], sizeof(float) * PC_H);
        }
        /* the attention grouped by kv head in the references (the shape is one it takes) or not */
        const bool gq = mk_cuda_attn_gqa_launches() > gl0;
        assert_true(!gq || mk_cuda_attn_gqa()); /* never with the switch off */
        if (mk_cuda_attn_gqa() && !gq) /* (its shared memory not granted on this device) */
            printf("  cuda: step_pdl: k_attn_gqa declined the chain's attention; k_attn ran both passes\n");
        /* the q/k norms folded into the attention, a run: k_attn_gqa's fold or k_attn's */
        const int qkf = PC_L - 1;
        mk_cuda_set_step_pdl(true);
        /* the GEMVs take the fold only as k_gemv_n does (the staged kernels, on by default since session 34,
         * decline it: mk_cuda_gemv_n), so the folds are counted with them off */
        const bool gsf = mk_cuda_gemv_staged();
        mk_cuda_set_gemv_staged(false);
        const int64_t folds0 = mk_backend_cuda_folds(b->b);
        /* queued directly, several times; the prefetches on half the time, the norm steps folded into
         * the kernels that read them in the last four */
        for (int rep = 0; rep < 8; rep++) {
            mk_cuda_set_step_prefetch((unsigned)rep % 4); /* none, GEMV, attention, both */
            mk_cuda_set_norm_fold(rep >= 4);
            const int p = rep % PC_NP;
            pdl_chain_check(b, &c, p, ref[p], am0[p]);
        }
        /* in the last four runs every layer's two residual steps folded (the final one has no xb), and the
         * q/k norms of the layers whose attention follows them directly */
        assert_int_equal(mk_backend_cuda_folds(b->b) - folds0, 4 * (2 * PC_L + qkf));
        /* the q/k norms alone (mk_cuda_set_qk_fold): bitwise too, those folds only */
        mk_cuda_set_norm_fold(false);
        const bool qk0 = mk_cuda_qk_fold();
        mk_cuda_set_qk_fold(true);
        const int64_t folds1 = mk_backend_cuda_folds(b->b);
        for (int rep = 0; rep < 2; rep++) {
            const int p = (rep + 1) % PC_NP;
            pdl_chain_check(b, &c, p, ref[p], am0[p]);
        }
        assert_int_equal(mk_backend_cuda_folds(b->b) - folds1, 2 * qkf);
        mk_cuda_set_qk_fold(qk0);
        /* the router only (MK_CUDA_NORM_FOLD_ROUTER): this chain has no MoE step, so nothing folds (the
         * GEMVs and the attention launch the held-back steps first), bitwise as before */
        mk_cuda_set_norm_fold_mode(MK_CUDA_NORM_FOLD_ROUTER);
        const int64_t folds2 = mk_backend_cuda_folds(b->b);
        for (int rep = 0; rep < 2; rep++) {
            const int p = rep % PC_NP;
            pdl_chain_check(b, &c, p, ref[p], am0[p]);
        }
        assert_int_equal(mk_backend_cuda_folds(b->b) - folds2, 0);
        mk_cuda_set_gemv_staged(gsf);
        /* the int8 rows primed early (mk_cuda_set_q8_early), the other way than the default: the
         * GEMVs' weights loaded before their wait, the same bits */
        mk_cuda_set_norm_fold(false);
        const bool early0 = mk_cuda_q8_early();
        mk_cuda_set_q8_early(!early0);
        for (int rep = 0; rep < 2; rep++) {
            const int p = (rep + 2) % PC_NP;
            pdl_chain_check(b, &c, p, ref[p], am0[p]);
        }
        mk_cuda_set_q8_early(early0);
        /* the decode GEMVs' rows staged before their wait (mk_cuda_set_gemv_staged: k_gemv_q8s under int8
         * activations), the other way than the default: the same bits, and the staged kernel ran */
        const bool gs0 = mk_cuda_gemv_staged();
        const unsigned long long gq0 = mk_cuda_gemv_staged_launches();
        mk_cuda_set_gemv_staged(!gs0);
        for (int rep = 0; rep < 2; rep++) {
            const int p = (rep + 1) % PC_NP;
            pdl_chain_check(b, &c, p, ref[p], am0[p]);
        }
        mk_cuda_set_gemv_staged(gs0);
        if (mk_cuda_act_int8() && !gs0) /* flipped on: the flipped runs launched it */
            assert_true(mk_cuda_gemv_staged_launches() > gq0);
        if (mk_cuda_act_int8() && gs0) { /* on by default (session 34): a run at the default launches it */
            const unsigned long long gq1 = mk_cuda_gemv_staged_launches();
            pdl_chain_check(b, &c, 0, ref[0], am0[0]);
            assert_true(mk_cuda_gemv_staged_launches() > gq1);
        }
        mk_cuda_set_norm_fold(true);
        /* recorded at the first position (prefetches and folds on), then replayed at each */
        mk_cuda_set_step_prefetch(MK_CUDA_PREFETCH_GEMV | MK_CUDA_PREFETCH_ATTN);
        pdl_chain_reset(b, &c, PC_P);
        assert_true(b->i->step_begin(b->ctx));
        pdl_chain_queue(b, &c);
        assert_true(b->i->step_end(b->ctx, true));
        pdl_chain_expect(b, &c, 0, ref[0], am0[0]);
        const uint64_t id = b->i->step_last(b->ctx);
        assert_true(id != 0);
        for (int rep = 0; rep < 2 * PC_NP; rep++) {
            const int p = (rep + 1) % PC_NP;
            pdl_chain_reset(b, &c, PC_P + p);
            assert_true(b->i->step_replay(b->ctx, id));
            pdl_chain_expect(b, &c, p, ref[p], am0[p]);
        }
    }
    mk_cuda_set_attn_gqa(gqa0);
    mk_cuda_set_step_pdl(step0);
    mk_cuda_set_step_prefetch(pf0);
    mk_cuda_set_norm_fold(fold0);
    void *bufs[] = {c.dx,   c.dy,  c.dxb,  c.dq,   c.dk,  c.dv,  c.dat, c.dkc, c.dvc,
                    c.dg,   c.dqg, c.dcos, c.dsin, c.dlg, c.dff, c.dup, c.dpos, c.dam};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        b->i->buf_free(b->ctx, bufs[i]);
    wbuf *ws[] = {&c.wq, &c.wk, &c.wv, &c.wo, &c.wg, &c.wu, &c.wd, &c.wh};
    for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
        forget_w(b, ws[i]);
        wbuf_free(ws[i]);
    }
    for (int p = 0; p < PC_NP; p++)
        free(ref[p]);
    free(c.x0);
    free(c.y0);
    free(c.kc0);
    free(c.vc0);
    free(g);
    free(cs);
    free(sn);
}

/* CUDA only: a failure inside a queued slot is reported by the next sync,
 * naming it, and only once. */
static void test_cuda_errors(void **st) {
    (void)st;
    if (g_no_cuda[0]) {
        printf("SKIP test_cuda_errors: no GPU: %s\n", g_no_cuda);
        skip();
    }
    be_case *b = &g_be[1];
    assert_int_equal(b->i->sync(b->ctx), MK_OK);
    mk_route_args a = {.n = 1, .E = 8, .k = 9}; /* top-9 of 8 experts */
    b->i->route(b->ctx, &a);
    assert_int_equal(b->i->sync(b->ctx), MK_E_UNSUPPORTED);
    assert_non_null(strstr(mk_err_msg(), "CUDA route"));
    assert_int_equal(b->i->sync(b->ctx), MK_OK);
    /* a weight the view check refuses: named, nothing launched */
    wbuf wb;
    make_w(&wb, 2, 8, 64);
    wb.w.bits = 7;
    void *dx = dev(b, NULL, 64 * 4), *dy = dev(b, NULL, 8 * 4);
    const size_t before = mk_backend_cuda_weight_bytes(b->b); /* what earlier cases left resident */
    b->i->matmul(b->ctx, &wb.w, dx, 1, dy);
    assert_int_equal(b->i->sync(b->ctx), MK_E_UNSUPPORTED);
    assert_non_null(strstr(mk_err_msg(), "found 7"));
    assert_int_equal(mk_backend_cuda_weight_bytes(b->b), before); /* nothing uploaded */
    b->i->buf_free(b->ctx, dx);
    b->i->buf_free(b->ctx, dy);
    wbuf_free(&wb);
}

/* CUDA only: the matmul of a batch (cuda_gemm.cu) in each mode, on every
 * storage: the split GEMM (default) within TOL_DOT with its weight tiles
 * forced to a few rows (scratch of 3 rows of float32: 2-row tiles where W
 * is split in three, 6-row ones where only the head is kept; bf16 weights
 * are used in place, one tile); the bf16 GEMM within its own per-element
 * bound, |y - ref| <= (2^-7 + 2^-15 + C 2^-24) sum_c |W x| (x and W each
 * rounded to bf16 once: 2^-8 relative each, float32 sums),
 * and measurably worse than the split one where x is not bf16 (so the modes
 * are really different code); the generic kernel within TOL_DOT. */
static void test_cuda_gemm_modes(void **st) {
    (void)st;
    if (g_no_cuda[0]) {
        printf("SKIP test_cuda_gemm_modes: no GPU: %s\n", g_no_cuda);
        skip();
    }
    be_case *b = &g_be[1];
    printf("  %s\n", mk_backend_cuda_gemm_status());
    assert_non_null(strstr(mk_backend_cuda_gemm_status(), "cuBLAS loaded"));
    const int64_t R = 37, C = 256, n = 19;
    for (int kind = 0; kind < W_KINDS; kind++) {
        wbuf wb;
        make_w(&wb, kind, R, C);
        double *W = deq(&wb.w);
        float *x = rvec(n * C);
        double *ref = calloc((size_t)(n * R), sizeof(double)), *mag = calloc((size_t)(n * R), sizeof(double));
        for (int64_t t = 0; t < n; t++)
            for (int64_t r = 0; r < R; r++)
                for (int64_t c = 0; c < C; c++) {
                    ref[t * R + r] += W[r * C + c] * x[t * C + c];
                    mag[t * R + r] += fabs(W[r * C + c] * x[t * C + c]);
                }
        void *dx = dev(b, x, (size_t)(n * C) * 4), *dy = dev(b, NULL, (size_t)(n * R) * 4);
        char what[96];
        /* split, 3-row tiles (bf16 weights are used in place: one tile) */
        mk_backend_cuda_set_gemm(b->b, MK_CUDA_GEMM_SPLIT, (size_t)(3 * C * 4));
        b->i->matmul(b->ctx, &wb.w, dx, n, dy);
        float *y = back(b, dy, (size_t)(n * R) * 4);
        snprintf(what, sizeof what, "gemm split, 3-row tiles %s", wb.name);
        check_rel(b->name, what, y, ref, n * R, TOL_DOT);
        double split_err = rel(y, ref, n * R);
        free(y);
        /* bf16 */
        mk_backend_cuda_set_gemm(b->b, MK_CUDA_GEMM_BF16, 0);
        b->i->matmul(b->ctx, &wb.w, dx, n, dy);
        y = back(b, dy, (size_t)(n * R) * 4);
        const double eb = ldexp(1, -7) + ldexp(1, -15) + (double)C * ldexp(1, -24);
        for (int64_t i = 0; i < n * R; i++)
            if (!(fabs(y[i] - ref[i]) <= eb * mag[i]))
                fail_msg("cuda: gemm bf16 %s: element %lld: %.9g vs %.9g, beyond %.3g", wb.name, (long long)i, y[i],
                         ref[i], eb * mag[i]);
        double bf_err = rel(y, ref, n * R);
        snprintf(what, sizeof what, "gemm bf16 %s", wb.name);
        note(b->name, what, bf_err, eb);
        if (!(bf_err > 4 * split_err))
            fail_msg("cuda: gemm bf16 %s: rel L2 %.3e, not worse than the split GEMM's %.3e", wb.name, bf_err,
                     split_err);
        free(y);
        /* int8 activations: the CPU's int8 prefill GEMM's bits (mk_gq8_matmul, whose tables the CPU tests hold
         * to its portable rule) for the affine weights it takes; every other weight as the split GEMM, bitwise */
        mk_backend_cuda_set_gemm(b->b, MK_CUDA_GEMM_SPLIT, 0);
        b->i->matmul(b->ctx, &wb.w, dx, n, dy);
        float *ys = back(b, dy, (size_t)(n * R) * 4);
        mk_backend_cuda_set_gemm(b->b, MK_CUDA_GEMM_INT8, 0);
        b->i->matmul(b->ctx, &wb.w, dx, n, dy);
        y = back(b, dy, (size_t)(n * R) * 4);
        const mk_wt *wq[1] = {&wb.w};
        if (mk_gq8_suits(&wb.w) && 512 % wb.w.group == 0 && mk_gq8_fits(wq, 1, n)) {
            float *yc = malloc((size_t)(n * R) * 4);
            float *ycs[1] = {yc};
            assert_non_null(yc);
            mk_gq8_matmul(NULL, wq, 1, x, n, ycs);
            for (int64_t i = 0; i < n * R; i++)
                if (memcmp(&y[i], &yc[i], 4))
                    fail_msg("cuda: gemm int8 %s: element %lld: %.9g, the CPU's int8 GEMM %.9g", wb.name, (long long)i,
                             y[i], yc[i]);
            snprintf(what, sizeof what, "gemm int8 %s", wb.name);
            note(b->name, what, rel(y, ref, n * R), 2e-2);
            /* so the default mode's comparisons below can tell int8 from split */
            if (!memcmp(y, ys, (size_t)(n * R) * 4))
                fail_msg("cuda: gemm int8 %s: bitwise the split GEMM's result", wb.name);
            free(yc);
        } else if (memcmp(y, ys, (size_t)(n * R) * 4)) {
            fail_msg("cuda: gemm int8 mode %s: not the split GEMM's result for a weight it does not take", wb.name);
        }
        /* the default, MK_CUDA_GEMM_AUTO, read at each call: the int8 mode's bits where the engine's prefill
         * runs int8 (forced, or following the device's decode setting), the split mode's where it is float */
        {
            const struct {
                int pre, dec; /* mk_kernels_prefill_int8_setting, mk_cuda_act_int8_setting */
                bool int8;
            } ac[] = {{1, 0, true}, {0, 1, false}, {-1, 1, true}, {-1, 0, false},
                      /* both following: the engine's decode setting as this run has it */
                      {-1, -1, mk_kernels_int8_setting() != 0}};
            const int pre = mk_kernels_prefill_int8_setting(), dec = mk_cuda_act_int8_setting();
            mk_backend_cuda_set_gemm(b->b, MK_CUDA_GEMM_AUTO, 0);
            for (size_t i = 0; i < sizeof ac / sizeof ac[0]; i++) {
                mk_kernels_restore_prefill_int8(ac[i].pre);
                mk_cuda_restore_act_int8(ac[i].dec);
                assert_int_equal(mk_cuda_prefill_int8(), ac[i].int8);
                b->i->matmul(b->ctx, &wb.w, dx, n, dy);
                float *ya = back(b, dy, (size_t)(n * R) * 4);
                if (memcmp(ya, ac[i].int8 ? y : ys, (size_t)(n * R) * 4))
                    fail_msg("cuda: gemm default mode %s, prefill setting %d, device int8 setting %d: not the %s "
                             "mode's result",
                             wb.name, ac[i].pre, ac[i].dec, ac[i].int8 ? "int8" : "split");
                free(ya);
            }
            mk_kernels_restore_prefill_int8(pre);
            mk_cuda_restore_act_int8(dec);
        }
        free(y);
        free(ys);
        /* the format-generic float32 kernel */
        mk_backend_cuda_set_gemm(b->b, MK_CUDA_GEMM_GENERIC, 0);
        b->i->matmul(b->ctx, &wb.w, dx, n, dy);
        y = back(b, dy, (size_t)(n * R) * 4);
        snprintf(what, sizeof what, "gemm generic %s", wb.name);
        check_rel(b->name, what, y, ref, n * R, TOL_DOT);
        free(y);
        mk_backend_cuda_set_gemm(b->b, MK_CUDA_GEMM_AUTO, 0);
        assert_int_equal(b->i->sync(b->ctx), MK_OK);
        b->i->buf_free(b->ctx, dx);
        b->i->buf_free(b->ctx, dy);
        free(x);
        free(ref);
        free(mag);
        free(W);
        forget_w(b, &wb);
        wbuf_free(&wb);
    }
}

/* CUDA only: Hopper's warpgroup MMA (cuda_wgmma.cuh), which the int8 GEMMs
 * can run on (mk_cuda_set_q8_wgmma). On a device of compute capability 9.0
 * this build's sm_90a code must run (mk_cuda_wgmma_available); elsewhere the
 * wgmma cases skip, saying so. The layout probe's accumulators are checked
 * against A B (integers, exact) in the fragment layout the kernels assume;
 * on a mismatch the test names which of the layout's assumptions the
 * device's result fits instead (the core matrices' two strides swapped,
 * the fragment's rows ordered otherwise), so one device run tells what to
 * fix. Then the int8 GEMM
 * (plain matmul and the grouped MoE slot) with the wgmma kernel on must give
 * the CPU's int8 GEMM's bits, as test_cuda_gemm_modes and test_moe_grouped
 * hold the other kernels to. */
static void test_cuda_wgmma(void **st) {
    (void)st;
    if (g_no_cuda[0]) {
        printf("SKIP test_cuda_wgmma: no GPU: %s\n", g_no_cuda);
        skip();
    }
    char desc[256] = "";
    assert_int_equal(mk_cuda_describe(desc, sizeof desc), MK_OK);
    const bool hopper = strstr(desc, ", sm_90,") != NULL;
    if (!mk_cuda_wgmma_available()) {
        if (hopper)
            fail_msg("cuda: %s: the build's sm_90a (wgmma) code does not run on it", desc);
        printf("SKIP test_cuda_wgmma: %s does not run sm_90a code\n", desc);
        skip();
    }
    /* the layout probe */
    int8_t A[64 * 32];
    uint8_t B[128 * 32];
    for (int i = 0; i < 64 * 32; i++)
        A[i] = (int8_t)((int)(rnd() % 255) - 127);
    for (int i = 0; i < 128 * 32; i++)
        B[i] = (uint8_t)(rnd() % 256);
    int32_t *frag = malloc(128 * 64 * sizeof *frag);
    assert_non_null(frag);
    assert_int_equal(mk_cuda_wgmma_probe(A, B, frag), MK_OK);
    /* hypotheses: 0 as documented; 1 the descriptor's two strides swapped (element (r, k) read at (r / 8)
     * 128 + (k / 16) 256 + ..., where the probe placed (r', k') with r' / 8 and k' / 16 exchanged); 2 the
     * fragment's rows ordered 8 w + g + 32 h instead of 16 w + 8 h + g (none fits: the first mismatches
     * are printed) */
    int fits = -1;
    for (int hyp = 0; hyp < 3 && fits < 0; hyp++) {
        bool ok = true;
        for (int t = 0; t < 128 && ok; t++) {
            const int w = t / 32, g = (t % 32) / 4, t4 = t % 4;
            for (int i = 0; i < 16 && ok; i++)
                for (int h = 0; h < 2 && ok; h++)
                    for (int j = 0; j < 2 && ok; j++) {
                        int row = 16 * w + 8 * h + g;
                        const int col = 8 * i + 2 * t4 + j;
                        if (hyp == 2)
                            row = 8 * w + g + 32 * h;
                        int64_t v = 0;
                        for (int k = 0; k < 32; k++) {
                            int ra = row, ka = k, rb = col, kb = k;
                            if (hyp == 1) { /* byte (r, k) fetched from where (r', k') was placed: r'/8 = k/16 .. */
                                const int oa = (ra >> 3) * 128 + (ka >> 4) * 256 + (ra & 7) * 16 + (ka & 15);
                                ra = (oa / 256) * 8 + (oa % 128) / 16;
                                ka = ((oa / 128) % 2) * 16 + oa % 16;
                                const int ob = (rb >> 3) * 128 + (kb >> 4) * 256 + (rb & 7) * 16 + (kb & 15);
                                rb = (ob / 256) * 8 + (ob % 128) / 16;
                                kb = ((ob / 128) % 2) * 16 + ob % 16;
                                if (ra >= 64 || rb >= 128) {
                                    ok = false;
                                    break;
                                }
                            }
                            v += (int64_t)A[ra * 32 + ka] * B[rb * 32 + kb];
                        }
                        ok = ok && frag[t * 64 + 4 * i + 2 * h + j] == (int32_t)v;
                    }
        }
        if (ok)
            fits = hyp;
    }
    if (fits != 0) {
        static const char *const what[] = {"", "the core matrices' strides swapped (LBO / SBO)",
                                           "the fragment's rows ordered 8 w + g + 32 h"};
        int shown = 0;
        for (int t = 0; t < 128 && shown < 6; t++)
            for (int e = 0; e < 64 && shown < 6; e++) {
                const int w = t / 32, g = (t % 32) / 4, t4 = t % 4, i = e / 4, h = (e / 2) % 2, j = e % 2;
                const int row = 16 * w + 8 * h + g, col = 8 * i + 2 * t4 + j;
                int64_t v = 0;
                for (int k = 0; k < 32; k++)
                    v += (int64_t)A[row * 32 + k] * B[col * 32 + k];
                if (frag[t * 64 + e] != (int32_t)v) {
                    printf("  wgmma probe: thread %d register %d: %d, A B[%d][%d] = %lld\n", t, e, frag[t * 64 + e],
                           row, col, (long long)v);
                    shown++;
                }
            }
        free(frag);
        if (fits > 0)
            fail_msg("cuda: the wgmma probe's accumulators fit %s, not the layout cuda_wgmma.cuh assumes", what[fits]);
        fail_msg("cuda: the wgmma probe's accumulators are not A B in the assumed layout (nor in a known variant)");
    }
    free(frag);
    printf("  wgmma probe: m64n128k32 s8.u8 in the assumed layout (%s)\n", desc);
    /* the int8 GEMM on wgmma: the CPU's int8 GEMM's bits (4-bit g64, bf16 and f32 scales; 70 rows: two tiles) */
    be_case *b = &g_be[1];
    const int64_t R = 200, C = 640, n = 70;
    for (int sd = 0; sd < 2; sd++) {
        wbuf wb;
        make_w(&wb, 2, R, C); /* affine 4-bit g64, bf16 scales */
        if (sd) {             /* the same with f32 scales */
            wbuf_free(&wb);
            memset(&wb, 0, sizeof wb);
            wb.w.rows = R;
            wb.w.cols = C;
            wb.w.global_scale = 1.0f;
            affine_w(&wb, 4, 64, MK_DT_F32);
            wb.w.data = wb.data; /* as make_w ends */
            wb.w.scales = wb.scales;
            wb.w.biases = wb.biases;
        }
        if (!(wb.w.fmt == MK_WF_AFFINE && wb.w.bits == 4 && wb.w.group == 64))
            fail_msg("cuda: test_cuda_wgmma: %s is not affine 4-bit g64", wb.name);
        float *x = rvec(n * C);
        void *dx = dev(b, x, (size_t)(n * C) * 4), *dy = dev(b, NULL, (size_t)(n * R) * 4);
        const mk_wt *wq[1] = {&wb.w};
        assert_true(mk_gq8_suits(&wb.w) && mk_gq8_fits(wq, 1, n));
        float *yc = malloc((size_t)(n * R) * 4);
        float *ycs[1] = {yc};
        assert_non_null(yc);
        mk_gq8_matmul(NULL, wq, 1, x, n, ycs);
        mk_backend_cuda_set_gemm(b->b, MK_CUDA_GEMM_INT8, 0);
        const bool w0 = mk_cuda_q8_wgmma();
        for (int on = 0; on < 2; on++) {
            mk_cuda_set_q8_wgmma(on);
            b->i->matmul(b->ctx, &wb.w, dx, n, dy);
            float *y = back(b, dy, (size_t)(n * R) * 4);
            for (int64_t i = 0; i < n * R; i++)
                if (memcmp(&y[i], &yc[i], 4))
                    fail_msg("cuda: gemm int8 %s, wgmma %s: element %lld: %.9g, the CPU's int8 GEMM %.9g", wb.name,
                             on ? "on" : "off", (long long)i, y[i], yc[i]);
            free(y);
        }
        mk_cuda_set_q8_wgmma(w0);
        mk_backend_cuda_set_gemm(b->b, MK_CUDA_GEMM_AUTO, 0);
        assert_int_equal(b->i->sync(b->ctx), MK_OK);
        b->i->buf_free(b->ctx, dx);
        b->i->buf_free(b->ctx, dy);
        free(x);
        free(yc);
        forget_w(b, &wb);
        wbuf_free(&wb);
    }
}

static int teardown(void **st) {
    (void)st;
    printf("worst rel L2 per check (bound):\n");
    for (int i = 0; i < g_nworst; i++)
        printf("  %-5s %-40s %.2e (%.0e)\n", g_worst[i].be, g_worst[i].what, g_worst[i].err, g_worst[i].tol);
    for (int i = 0; i < g_nbe; i++)
        mk_backend_free(g_be[i].b);
    mk_pool_free(g_pool);
    g_nbe = 0;
    g_nworst = 0;
    return 0;
}

int main(void) {
    /* the CUDA-only cases last: left out of the runs without CUDA */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memory_and_copies),  cmocka_unit_test(test_matmul_formats),
        cmocka_unit_test(test_head_matmul),        cmocka_unit_test(test_expert_mlps),
        cmocka_unit_test(test_batch_slots),
        cmocka_unit_test(test_attention_each),
        cmocka_unit_test(test_recurrent_each),
        cmocka_unit_test(test_norms_rope_eltwise), cmocka_unit_test(test_attention),
        cmocka_unit_test(test_dsa),
        cmocka_unit_test(test_conv_gdn),           cmocka_unit_test(test_route_combine),
        cmocka_unit_test(test_fused_moe),          cmocka_unit_test(test_moe_grouped),
        cmocka_unit_test(test_deferred_nonfinite),
        cmocka_unit_test(test_step_recording),     cmocka_unit_test(test_step_chain),
        cmocka_unit_test(test_fused_slots),
        /* (optional slots above: CUDA has them, CPU skips) */
        cmocka_unit_test(test_cuda_present),       cmocka_unit_test(test_cuda_errors),
        cmocka_unit_test(test_cuda_gemm_modes),    cmocka_unit_test(test_cuda_replay_after_growth),
        cmocka_unit_test(test_cuda_step_pdl),      cmocka_unit_test(test_cuda_wgmma),
    };
    const size_t n_cuda_only = 6;
    /* the whole table once per CPU kernel path this machine has (ref, avx2,
     * avx512: mk_isa_set), the default path last and with CUDA */
    const mk_isa def = mk_isa_active();
    int fails = 0;
    /* i < COUNT: each other path with float x; COUNT .. 2 COUNT-1: each path
     * with int8 x (mk_kernels_set_int8); 2 COUNT: the default, with CUDA */
    /* MK_TEST_CUDA_ONLY=1 (a device run whose time is short): the last group only */
    const bool cuda_only = getenv("MK_TEST_CUDA_ONLY") && !strcmp(getenv("MK_TEST_CUDA_ONLY"), "1");
    for (int i = cuda_only ? 2 * MK_ISA_COUNT : 0; i <= 2 * MK_ISA_COUNT; i++) {
        mk_isa isa = i < 2 * MK_ISA_COUNT ? (mk_isa)(i % MK_ISA_COUNT) : def;
        if ((i < MK_ISA_COUNT && isa == def) || !mk_isa_supported(isa) || mk_isa_set(isa) != MK_OK)
            continue;
        mk_kernels_set_int8(i >= MK_ISA_COUNT && i < 2 * MK_ISA_COUNT);
        g_cuda_run = i == 2 * MK_ISA_COUNT;
        char name[64];
        snprintf(name, sizeof name, "backend_ops, CPU kernels %s%s", mk_isa_name(isa),
                 mk_kernels_int8() ? ", int8 x" : "");
        size_t nt = sizeof tests / sizeof tests[0] - (g_cuda_run ? 0 : n_cuda_only);
        fails += _cmocka_run_group_tests(name, tests, nt, setup, teardown);
    }
    return fails;
}
