/* Quantizer properties that need no reference data: parameter and dtype
 * validation with useful messages, sizes, NaN/Inf counting, row-range
 * chunking (also from several threads) giving the whole-tensor bytes, the
 * two copies of the affine kernel agreeing on random data, the error sums,
 * and the internal scalar helpers against slow references (every E4M3 byte,
 * sampled float32 bit patterns, every f16 value). */
#include "mk_test_util.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moekit/isa.h"
#include "moekit/quant.h"
#include "quant/quant_impl.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static float rng_normal(void) {
    double u1 = ((double)(rng_next() >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (double)(rng_next() >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* A (rows, cols) matrix of dt with normal values scaled per row, some
 * zeros and an outlier now and then. */
static void *random_matrix(mk_dtype dt, int64_t rows, int64_t cols) {
    size_t es = dt == MK_DT_F32 ? 4 : 2;
    unsigned char *m = malloc((size_t)(rows * cols) * es);
    for (int64_t r = 0; r < rows; r++) {
        float scale = powf(10.0f, (float)(r % 7) - 4.0f);
        for (int64_t c = 0; c < cols; c++) {
            uint64_t k = rng_next() % 100;
            float v = k < 5 ? 0.0f : k == 99 ? 50.0f * scale : rng_normal() * scale;
            mk_q_store(dt, m, r * cols + c, v);
        }
    }
    return m;
}

static void expect_arg(mk_status s, const char *needle) {
    assert_int_equal(s, MK_E_ARG);
    if (!strstr(mk_err_msg(), needle))
        fail_msg("message '%s' lacks '%s'", mk_err_msg(), needle);
}

static void test_check(void **state) {
    (void)state;
    assert_int_equal(mk_quant_check(MK_QMODE_AFFINE, 4, 64, 4096, "w"), MK_OK);
    assert_int_equal(mk_quant_check(MK_QMODE_AFFINE, 3, 128, 256, NULL), MK_OK);
    assert_int_equal(mk_quant_check(MK_QMODE_NVFP4, 4, 16, 16, NULL), MK_OK);
    expect_arg(mk_quant_check(MK_QMODE_AFFINE, 7, 64, 4096, "layers.0.mlp.gate"),
               "layers.0.mlp.gate: bits 7 not supported by mode affine (expected 2,3,4,5,6,8)");
    expect_arg(mk_quant_check(MK_QMODE_AFFINE, 1, 64, 4096, NULL), "expected 2,3,4,5,6,8");
    expect_arg(mk_quant_check(MK_QMODE_AFFINE, 9, 64, 4096, NULL), "bits 9");
    expect_arg(mk_quant_check(MK_QMODE_AFFINE, -1, 64, 4096, NULL), "bits -1");
    expect_arg(mk_quant_check(MK_QMODE_AFFINE, 40, 64, 4096, NULL), "bits 40");
    expect_arg(mk_quant_check(MK_QMODE_AFFINE, 4, 16, 4096, NULL),
               "group size 16 not supported by mode affine (expected 32,64,128)");
    expect_arg(mk_quant_check(MK_QMODE_AFFINE, 4, 48, 4096, NULL), "group size 48");
    expect_arg(mk_quant_check(MK_QMODE_AFFINE, 4, 256, 4096, NULL), "group size 256");
    expect_arg(mk_quant_check(MK_QMODE_AFFINE, 4, 0, 4096, NULL), "group size 0");
    expect_arg(mk_quant_check(MK_QMODE_MXFP4, 8, 32, 4096, NULL), "(expected 4)");
    expect_arg(mk_quant_check(MK_QMODE_MXFP8, 4, 32, 4096, NULL), "(expected 8)");
    expect_arg(mk_quant_check(MK_QMODE_NVFP4, 4, 32, 4096, NULL), "(expected 16)");
    expect_arg(mk_quant_check(MK_QMODE_MXFP4, 4, 16, 4096, NULL), "(expected 32)");
    expect_arg(mk_quant_check(MK_QMODE_AFFINE, 4, 64, 100, "x"),
               "x: last dimension 100 is not a positive multiple of the group size 64");
    expect_arg(mk_quant_check(MK_QMODE_AFFINE, 4, 64, 0, NULL), "last dimension 0");
    expect_arg(mk_quant_check(MK_QMODE_AFFINE, 4, 64, -64, NULL), "last dimension -64");
    expect_arg(mk_quant_check((mk_qmode)9, 4, 64, 64, NULL), "mode 9 unknown");
}

static void test_params(void **state) {
    (void)state;
    mk_qparams p;
    static const struct {
        mk_qmode m;
        int bits, group;
    } defaults[] = {
        {MK_QMODE_AFFINE, 4, 64}, {MK_QMODE_MXFP4, 4, 32}, {MK_QMODE_MXFP8, 8, 32}, {MK_QMODE_NVFP4, 4, 16}};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(mk_quant_params(defaults[i].m, 0, 0, 0, &p), MK_OK);
        assert_int_equal(p.bits, defaults[i].bits);
        assert_int_equal(p.group, defaults[i].group);
        const mk_quant_traits *t = mk_quant_info(defaults[i].m);
        assert_string_equal(t->name, mk_qmode_name(defaults[i].m));
        assert_int_equal(t->has_biases, defaults[i].m == MK_QMODE_AFFINE);
    }
    assert_null(mk_quant_info((mk_qmode)4));
    assert_int_equal(mk_quant_params(MK_QMODE_AFFINE, 8, 0, 0, &p), MK_OK);
    assert_int_equal(p.group, 64);
    assert_int_equal(mk_quant_params(MK_QMODE_NVFP4, 0, 0, 0.5f, &p), MK_OK);
    assert_true(p.global_scale == 0.5f);
    expect_arg(mk_quant_params(MK_QMODE_AFFINE, 4, 64, 0.5f, &p), "nvfp4 only");
    expect_arg(mk_quant_params(MK_QMODE_NVFP4, 4, 16, -1.0f, &p), "global scale");
    expect_arg(mk_quant_params(MK_QMODE_NVFP4, 4, 16, NAN, &p), "global scale");
    expect_arg(mk_quant_params(MK_QMODE_NVFP4, 4, 16, INFINITY, &p), "global scale");
    expect_arg(mk_quant_params(MK_QMODE_AFFINE, 7, 0, 0, &p), "bits 7");
}

static void test_layout(void **state) {
    (void)state;
    mk_qparams p;
    mk_quant_layout l;
    assert_int_equal(mk_quant_params(MK_QMODE_AFFINE, 3, 32, 0, &p), MK_OK);
    assert_int_equal(mk_quant_layout_of(&p, MK_DT_BF16, 128, &l), MK_OK);
    assert_int_equal(l.wq_cols, 12);
    assert_int_equal(l.groups, 4);
    assert_int_equal(l.scale_dt, MK_DT_BF16);
    assert_int_equal(l.in_row_bytes, 256);
    assert_int_equal(l.wq_row_bytes, 48);
    assert_int_equal(l.scale_row_bytes, 8);
    assert_int_equal(l.bias_row_bytes, 8);
    assert_int_equal(mk_quant_packed_cols(&p, 4096), 384);
    assert_int_equal(mk_quant_params(MK_QMODE_NVFP4, 0, 0, 0, &p), MK_OK);
    assert_int_equal(mk_quant_layout_of(&p, MK_DT_F32, 48, &l), MK_OK);
    assert_int_equal(l.wq_cols, 6);
    assert_int_equal(l.scale_dt, MK_DT_U8);
    assert_int_equal(l.scale_row_bytes, 3);
    assert_int_equal(l.bias_row_bytes, 0);
    uint64_t w, s, b;
    assert_int_equal(mk_quant_out_bytes(&p, MK_DT_F32, 10, 48, &w, &s, &b), MK_OK);
    assert_true(w == 240 && s == 30 && b == 0);
    assert_int_equal(mk_quant_out_bytes(&p, MK_DT_F32, INT64_MAX / 2, 1 << 20, &w, NULL, NULL), MK_E_ARG);
    assert_int_equal(mk_quant_layout_of(&p, MK_DT_I32, 48, &l), MK_E_UNSUPPORTED);
    assert_non_null(strstr(mk_err_msg(), "dtype I32 not supported"));
}

static void test_bad_calls(void **state) {
    (void)state;
    mk_qparams p;
    float in[64] = {0}, sc[2], bi[2];
    uint32_t wq[32];
    float out[64];
    assert_int_equal(mk_quant_params(MK_QMODE_AFFINE, 4, 32, 0, &p), MK_OK);
    assert_int_equal(mk_quant_rows(&p, MK_DT_F32, in, 1, 64, wq, sc, bi), MK_OK);
    assert_int_equal(mk_quant_rows(&p, MK_DT_F32, in, 0, 64, NULL, NULL, NULL), MK_OK);
    expect_arg(mk_quant_rows(&p, MK_DT_F32, in, 1, 64, wq, sc, NULL), "NULL biases");
    expect_arg(mk_quant_rows(&p, MK_DT_F32, NULL, 1, 64, wq, sc, bi), "NULL input");
    expect_arg(mk_quant_rows(&p, MK_DT_F32, in, 1, 48, wq, sc, bi), "last dimension 48");
    expect_arg(mk_quant_rows(&p, MK_DT_F32, in, -1, 64, wq, sc, bi), "-1 rows");
    expect_arg(mk_quant_rows(NULL, MK_DT_F32, in, 1, 64, wq, sc, bi), "no quantization");
    assert_int_equal(mk_quant_rows(&p, MK_DT_F64, in, 1, 64, wq, sc, bi), MK_E_UNSUPPORTED);
    mk_qparams bad = p;
    bad.bits = 7;
    expect_arg(mk_quant_rows(&bad, MK_DT_F32, in, 1, 64, wq, sc, bi), "bits 7");
    bad = p;
    bad.global_scale = 2.0f;
    expect_arg(mk_quant_rows(&bad, MK_DT_F32, in, 1, 64, wq, sc, bi), "global scale");
    assert_int_equal(mk_dequant_rows(&p, MK_DT_F32, wq, sc, bi, 1, 64, MK_DT_BF16, out), MK_OK);
    assert_int_equal(mk_dequant_rows(&p, MK_DT_U8, wq, sc, bi, 1, 64, MK_DT_F32, out), MK_E_UNSUPPORTED);
    assert_int_equal(mk_dequant_rows(&p, MK_DT_F32, wq, sc, bi, 1, 64, MK_DT_I8, out), MK_E_UNSUPPORTED);
    expect_arg(mk_dequant_rows(&p, MK_DT_F32, wq, sc, NULL, 1, 64, MK_DT_F32, out), "NULL");
    /* fp modes: no biases needed; scales are bytes */
    uint8_t s8[4];
    assert_int_equal(mk_quant_params(MK_QMODE_MXFP4, 0, 0, 0, &p), MK_OK);
    assert_int_equal(mk_quant_rows(&p, MK_DT_F32, in, 1, 64, wq, s8, NULL), MK_OK);
    assert_int_equal(mk_dequant_rows(&p, MK_DT_U8, wq, s8, NULL, 1, 64, MK_DT_F32, out), MK_OK);
    assert_int_equal(mk_dequant_rows(&p, MK_DT_F8_E8M0, wq, s8, NULL, 1, 64, MK_DT_F32, out), MK_OK);
    assert_int_equal(mk_dequant_rows(&p, MK_DT_F8_E4M3, wq, s8, NULL, 1, 64, MK_DT_F32, out),
                     MK_E_UNSUPPORTED);
    assert_int_equal(mk_dequant_rows(&p, MK_DT_BF16, wq, s8, NULL, 1, 64, MK_DT_F32, out), MK_E_UNSUPPORTED);
}

static void test_nonfinite(void **state) {
    (void)state;
    float f[10] = {1, NAN, 2, INFINITY, -INFINITY, 0, -0.0f, 3.4e38f, 1e-45f, 5};
    uint64_t n = 99;
    assert_int_equal(mk_quant_count_nonfinite(MK_DT_F32, f, 10, &n), MK_OK);
    assert_int_equal(n, 3);
    uint16_t h[6] = {0x3c00, 0x7c00, 0xfc00, 0x7e00, 0x7bff, 0x0001}; /* f16 */
    assert_int_equal(mk_quant_count_nonfinite(MK_DT_F16, h, 6, &n), MK_OK);
    assert_int_equal(n, 3);
    uint16_t b[6] = {0x3f80, 0x7f80, 0xff80, 0x7fc0, 0x7f7f, 0x0001}; /* bf16 */
    assert_int_equal(mk_quant_count_nonfinite(MK_DT_BF16, b, 6, &n), MK_OK);
    assert_int_equal(n, 3);
    double d[3] = {1.0, NAN, -INFINITY};
    assert_int_equal(mk_quant_count_nonfinite(MK_DT_F64, d, 3, &n), MK_OK);
    assert_int_equal(n, 2);
    assert_int_equal(mk_quant_count_nonfinite(MK_DT_F32, NULL, 0, &n), MK_OK);
    assert_int_equal(n, 0);
    assert_int_equal(mk_quant_count_nonfinite(MK_DT_I32, f, 1, &n), MK_E_UNSUPPORTED);
    assert_int_equal(mk_quant_count_nonfinite(MK_DT_F32, NULL, 1, &n), MK_E_ARG);
}

/* Non-finite input must not crash or trip sanitizers, whatever it yields. */
static void test_nonfinite_input_is_safe(void **state) {
    (void)state;
    float in[128];
    for (int i = 0; i < 128; i++)
        in[i] = i % 3 == 0 ? NAN : i % 3 == 1 ? INFINITY : -INFINITY;
    uint32_t wq[64];
    float sc[4], bi[4], out[128];
    uint8_t s8[8];
    mk_qparams p;
    for (int m = 0; m < 4; m++) {
        assert_int_equal(mk_quant_params((mk_qmode)m, 0, 0, 0, &p), MK_OK);
        void *s = m == 0 ? (void *)sc : (void *)s8;
        assert_int_equal(mk_quant_rows(&p, MK_DT_F32, in, 1, 128, wq, s, bi), MK_OK);
        assert_int_equal(
            mk_dequant_rows(&p, m == 0 ? MK_DT_F32 : MK_DT_U8, wq, s, bi, 1, 128, MK_DT_F32, out), MK_OK);
    }
}

/* ---- chunking ------------------------------------------------------------ */

typedef struct job {
    const mk_qparams *p;
    mk_dtype dt;
    const unsigned char *in;
    unsigned char *wq, *sc, *bi;
    int64_t r0, r1, cols;
    mk_quant_layout l;
    mk_status st;
} job;

static void *run_job(void *arg) {
    job *j = arg;
    j->st =
        mk_quant_rows(j->p, j->dt, j->in + (size_t)j->r0 * j->l.in_row_bytes, j->r1 - j->r0, j->cols,
                      j->wq + (size_t)j->r0 * j->l.wq_row_bytes, j->sc + (size_t)j->r0 * j->l.scale_row_bytes,
                      j->bi ? j->bi + (size_t)j->r0 * j->l.bias_row_bytes : NULL);
    return NULL;
}

static void check_chunked(const mk_qparams *p, mk_dtype dt, int64_t rows, int64_t cols) {
    mk_quant_layout l;
    assert_int_equal(mk_quant_layout_of(p, dt, cols, &l), MK_OK);
    unsigned char *in = random_matrix(dt, rows, cols);
    size_t nw = l.wq_row_bytes * (size_t)rows, ns = l.scale_row_bytes * (size_t)rows;
    size_t nb = l.bias_row_bytes * (size_t)rows;
    unsigned char *w0 = malloc(nw), *s0 = malloc(ns), *b0 = malloc(nb + 1);
    unsigned char *w1 = malloc(nw), *s1 = malloc(ns), *b1 = malloc(nb + 1);
    assert_int_equal(mk_quant_rows(p, dt, in, rows, cols, w0, s0, b0), MK_OK);
    /* sequential chunks of varying size */
    memset(w1, 0xab, nw), memset(s1, 0xab, ns), memset(b1, 0xab, nb + 1);
    static const int sizes[] = {1, 5, 13, 2, 7};
    for (int64_t r = 0, k = 0; r < rows; k++) {
        int64_t n = sizes[k % 5] < rows - r ? sizes[k % 5] : rows - r;
        job j = {p, dt, in, w1, s1, nb ? b1 : NULL, r, r + n, cols, l, MK_OK};
        run_job(&j);
        assert_int_equal(j.st, MK_OK);
        r += n;
    }
    assert_memory_equal(w0, w1, nw);
    assert_memory_equal(s0, s1, ns);
    if (nb)
        assert_memory_equal(b0, b1, nb);
    /* four threads on disjoint row ranges */
    memset(w1, 0xcd, nw), memset(s1, 0xcd, ns), memset(b1, 0xcd, nb + 1);
    pthread_t th[4];
    job jobs[4];
    for (int t = 0; t < 4; t++) {
        jobs[t] = (job){p,    dt, in,           w1, s1, nb ? b1 : NULL, rows * t / 4, rows * (t + 1) / 4,
                        cols, l,  MK_E_INTERNAL};
        assert_int_equal(pthread_create(&th[t], NULL, run_job, &jobs[t]), 0);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(jobs[t].st, MK_OK);
    }
    assert_memory_equal(w0, w1, nw);
    assert_memory_equal(s0, s1, ns);
    if (nb)
        assert_memory_equal(b0, b1, nb);
    /* the baseline copy of the affine kernel gives the same bytes */
    mk_isa best = mk_isa_active();
    mk_isa_set(MK_ISA_REF);
    assert_int_equal(mk_quant_rows(p, dt, in, rows, cols, w1, s1, b1), MK_OK);
    mk_isa_set(best);
    assert_memory_equal(w0, w1, nw);
    assert_memory_equal(s0, s1, ns);
    /* chunked error sums merge to the whole-tensor ones */
    mk_quant_err whole = {0}, a = {0}, b = {0};
    assert_int_equal(mk_quant_err_rows(p, dt, in, w0, s0, b0, rows, cols, &whole), MK_OK);
    int64_t h = rows / 3;
    assert_int_equal(mk_quant_err_rows(p, dt, in, w0, s0, b0, h, cols, &a), MK_OK);
    assert_int_equal(mk_quant_err_rows(p, dt, in + (size_t)h * l.in_row_bytes,
                                       w0 + (size_t)h * l.wq_row_bytes, s0 + (size_t)h * l.scale_row_bytes,
                                       nb ? b0 + (size_t)h * l.bias_row_bytes : NULL, rows - h, cols, &b),
                     MK_OK);
    mk_quant_err_merge(&a, &b);
    assert_true(a.n == whole.n && a.max_abs == whole.max_abs);
    assert_true(fabs(a.err2 - whole.err2) <= 1e-12 * whole.err2);
    assert_true(fabs(mk_quant_err_rel(&a) - mk_quant_err_rel(&whole)) < 1e-12);
    free(in), free(w0), free(s0), free(b0), free(w1), free(s1), free(b1);
}

static void test_chunking(void **state) {
    (void)state;
    static const mk_dtype dts[] = {MK_DT_BF16, MK_DT_F16, MK_DT_F32};
    static const int bits[] = {2, 3, 4, 5, 6, 8};
    static const int groups[] = {32, 64, 128};
    mk_qparams p;
    for (int d = 0; d < 3; d++) {
        for (int b = 0; b < 6; b++)
            for (int g = 0; g < 3; g++) {
                assert_int_equal(mk_quant_params(MK_QMODE_AFFINE, bits[b], groups[g], 0, &p), MK_OK);
                check_chunked(&p, dts[d], 37, 384);
            }
        for (int m = 1; m < 4; m++) {
            assert_int_equal(mk_quant_params((mk_qmode)m, 0, 0, 0, &p), MK_OK);
            check_chunked(&p, dts[d], 37, 384);
        }
        assert_int_equal(mk_quant_params(MK_QMODE_NVFP4, 0, 0, 0.125f, &p), MK_OK);
        check_chunked(&p, dts[d], 37, 384);
    }
}

/* More bits, less error; 8-bit affine on normal data is well under 1%. */
static void test_error_ordering(void **state) {
    (void)state;
    const int64_t rows = 16, cols = 1024;
    float *in = malloc(sizeof(float) * (size_t)(rows * cols));
    for (int64_t i = 0; i < rows * cols; i++)
        in[i] = rng_normal();
    static const int bits[] = {2, 3, 4, 5, 6, 8};
    double prev = INFINITY;
    uint32_t *wq = malloc((size_t)(rows * cols));
    float sc[16 * 16], bi[16 * 16];
    for (int b = 0; b < 6; b++) {
        mk_qparams p;
        assert_int_equal(mk_quant_params(MK_QMODE_AFFINE, bits[b], 64, 0, &p), MK_OK);
        assert_int_equal(mk_quant_rows(&p, MK_DT_F32, in, rows, cols, wq, sc, bi), MK_OK);
        mk_quant_err e = {0};
        assert_int_equal(mk_quant_err_rows(&p, MK_DT_F32, in, wq, sc, bi, rows, cols, &e), MK_OK);
        double rel = mk_quant_err_rel(&e);
        assert_true(rel < prev);
        prev = rel;
    }
    assert_true(prev < 0.01);
    mk_quant_err z = {0};
    assert_true(mk_quant_err_rel(&z) == 0.0);
    z.err2 = 1;
    assert_true(isinf(mk_quant_err_rel(&z)));
    free(in), free(wq);
}

/* ---- internal helpers against slow references ---------------------------- */

/* E4M3 as MLX writes it (E4M3FN): nearest of the 127 finite magnitudes
 * (0x7f is NaN, not a value), ties to the even code, anything beyond 448,
 * Inf and NaN saturating to 0x7e, sign kept. */
static uint8_t e4m3_ref(float f) {
    uint8_t sign = signbit(f) ? 0x80 : 0;
    double a = fabs((double)f);
    if (isnan(f) || a > 448.0)
        return sign | 0x7e;
    int best = 0;
    double bd = INFINITY;
    for (int c = 0; c < 127; c++) {
        int e = c >> 3, m = c & 7;
        double v = e == 0 ? m / 8.0 * ldexp(1, -6) : (1 + m / 8.0) * ldexp(1, e - 7);
        double d = fabs(a - v); /* exact: a has 24 bits, v 4, exponents close enough */
        if (d < bd || (d == bd && c % 2 == 0)) {
            bd = d;
            best = c;
        }
    }
    return sign | (uint8_t)best;
}

static void test_e4m3(void **state) {
    (void)state;
    for (int b = 0; b < 256; b++) {
        float v = mk_e4m3_to_f32((uint8_t)b);
        if ((b & 0x7f) == 0x7f) { /* the NaN codes: a file holding them holds NaN weights */
            assert_true(isnan(v));
            continue;
        }
        int e = (b >> 3) & 15, m = b & 7;
        double want = e == 0 ? m / 8.0 * ldexp(1, -6) : (1 + m / 8.0) * ldexp(1, e - 7);
        assert_true(fabs(v) == want && (signbit(v) != 0) == (b >= 128));
        assert_int_equal(mk_q_e4m3_encode(v), b); /* every finite code round-trips */
    }
    /* the top of the range: never the NaN code (issue 15; 470 gave 0x7f before) */
    static const float top[] = {448.0f, 448.5f, 456.0f, 463.99f, 464.0f, 464.01f, 470.0f, 479.0f,
                                479.99f, 480.0f, 490.0f, 1e9f, INFINITY};
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++) {
        assert_int_equal(mk_q_e4m3_encode(top[i]), 0x7e);
        assert_int_equal(mk_q_e4m3_encode(-top[i]), 0xfe);
    }
    assert_int_equal(mk_q_e4m3_encode(447.9f), 0x7e);
    assert_int_equal(mk_q_e4m3_encode(432.0f), 0x7e); /* tie 416 | 448 -> even mantissa 6 */
    assert_int_equal(mk_q_e4m3_encode(431.9f), 0x7d);
    assert_int_equal(mk_q_e4m3_encode(NAN), 0x7e);
    assert_int_equal(mk_q_e4m3_encode(-0.0f), 0x80);
    /* float32 bit patterns in the range that matters, strided, both signs */
    for (uint32_t u = 0; u < 0x44000000u; u += 4999) {
        float f = mk_q_bitsf(u);
        if (mk_q_e4m3_encode(f) != e4m3_ref(f))
            fail_msg("e4m3(%a): got 0x%02x want 0x%02x", (double)f, mk_q_e4m3_encode(f), e4m3_ref(f));
        assert_int_equal(mk_q_e4m3_encode(-f), e4m3_ref(-f));
    }
    /* and every float32 from 400 to 600 */
    for (uint32_t u = mk_q_fbits(400.0f); u <= mk_q_fbits(600.0f); u++)
        if (mk_q_e4m3_encode(mk_q_bitsf(u)) != e4m3_ref(mk_q_bitsf(u)))
            fail_msg("e4m3(%a): got 0x%02x want 0x%02x", (double)mk_q_bitsf(u), mk_q_e4m3_encode(mk_q_bitsf(u)),
                     e4m3_ref(mk_q_bitsf(u)));
}

static void test_scalar_helpers(void **state) {
    (void)state;
    static const float ties[] = {0.5f,        1.5f,  2.5f,  -0.5f, -2.5f, 8388607.5f, 4194303.5f,
                                 0.49999997f, 1e30f, -3e9f, 0.0f,  -0.0f, 1e-40f,     -1e-40f};
    for (size_t i = 0; i < sizeof ties / sizeof ties[0]; i++) {
        float r = mk_q_rint(ties[i]);
        assert_true(r == rintf(ties[i]) && signbit(r) == signbit(rintf(ties[i])));
    }
    assert_true(isnan(mk_q_rint(NAN)));
    assert_true(mk_q_rint(INFINITY) == INFINITY);
    for (int i = 0; i < 200000; i++) {
        float f = mk_q_bitsf((uint32_t)rng_next());
        if (!isnan(f))
            assert_true(mk_q_rint(f) == rintf(f));
    }
    /* core's f16 decode (the only one) against IEEE binary16 spelled out */
    for (uint32_t h = 0; h < 65536; h++) {
        int e = (h >> 10) & 31, m = h & 1023;
        double want = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
        float a = mk_f16_to_f32((uint16_t)h);
        assert_true(isnan(want) ? isnan(a) : (fabs(a) == want && (signbit(a) != 0) == (h >= 0x8000)));
    }
    /* E2M1 (FP4) codes: the OCP MX table */
    static const float e2m1[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    for (int b = 0; b < 16; b++) {
        float v = mk_e2m1_to_f32((uint8_t)b);
        assert_true(fabsf(v) == e2m1[b & 7] && (signbit(v) != 0) == (b >= 8));
    }
    /* bit streams: pack then unpack is the identity for every width */
    static const int bits[] = {2, 3, 4, 5, 6, 8};
    for (int b = 0; b < 6; b++) {
        uint32_t q[128], back[128];
        unsigned char buf[128];
        for (int j = 0; j < 128; j++)
            q[j] = (uint32_t)rng_next() & ((1u << bits[b]) - 1);
        mk_q_pack(q, 128, bits[b], buf);
        mk_q_unpack(buf, 128, bits[b], back);
        assert_memory_equal(q, back, sizeof q);
    }
    /* FORMATS.md: 4-bit [1..8] packs to 0x87654321 */
    uint32_t q8[8] = {1, 2, 3, 4, 5, 6, 7, 8}, w;
    mk_q_pack(q8, 8, 4, (unsigned char *)&w);
    assert_int_equal(w, 0x87654321u);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check),     cmocka_unit_test(test_params),
        cmocka_unit_test(test_layout),    cmocka_unit_test(test_bad_calls),
        cmocka_unit_test(test_nonfinite), cmocka_unit_test(test_nonfinite_input_is_safe),
        cmocka_unit_test(test_chunking),  cmocka_unit_test(test_error_ordering),
        cmocka_unit_test(test_e4m3),      cmocka_unit_test(test_scalar_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
