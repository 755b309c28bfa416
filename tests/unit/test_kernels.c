/* Kernel tests: weight views, matrix products on every path, the thread
 * pool and the vector ops.
 *
 * 1. mk_wt_dequant_row on hand-packed rows with literal expected values
 *    (affine nibbles, FP8/E8M0/E2M1 codes, block scales).
 * 2. mk_matmul_ref against a double-precision loop over mk_wt_dequant_row.
 * 3. mk_matmul on every kernel path this CPU supports (ref, avx2, avxvnni,
 *    avx512, avx512vnni),
 *    single-threaded and on a pool, n = 1, 3, 14, 15, 17, 37 and 70 tokens
 *    (register tiles of 3 to 6 tokens, both prefill paths, two token
 *    blocks), against
 *    mk_matmul_ref. Bound for 2 and 3: |y - y_ref| <= 1e-5 * sum_c |W x|
 *    (float32 summation-order error is ~cols * 2^-24 of that in the worst
 *    case, far less in practice; a wrong element is ~1e-2 of it).
 *    Shapes have odd row counts (partial 16-row panels), column counts that
 *    leave partial 128- and 512-column chunks, partial FP8 scale blocks,
 *    every weight buffer is misaligned by one byte (MLX writes unpadded
 *    safetensors) and x and y by one float.
 *    mk_matmul_rows / mk_matmul_rows_t (row ranges that start inside FP8
 *    scale blocks, padded token strides) against double loops, same bound.
 *    Exception with its own stated bound (kernels.h "Accuracy"): with
 *    int8 activations (the library's default on x86 paths; here forced
 *    with mk_kernels_set_int8, affine cases run both ways), mk_matmul of
 *    one token times MLX affine 4/8 bits runs on int8 activations on every
 *    path; it
 *    is held to 1e-5 against x quantized by the documented rule and to
 *    sum_b d_b/2 sum_{c in b} |W| against x (see q8_want). Threaded and
 *    single-threaded results are compared bitwise on every path. The
 *    default choice (int8 on every path but ref, following mk_isa_set)
 *    must compute bitwise what the forced choice it names computes.
 * 4. Pool coverage and nesting, mk_wt_check errors, the vector ops. */
#include "mk_test_util.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "moekit/dtype.h"
#include "moekit/kernels.h"
#include "moekit/weight.h"

/* ---- random data ------------------------------------------------------ */

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd_u32(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 11);
}

static float rnd_f(float lo, float hi) {
    return lo + (hi - lo) * (float)(rnd_u32() & 0xffffff) / 16777216.0f;
}

/* An E4M3 byte that is not NaN (0x7f / 0xff). */
static uint8_t rnd_e4m3(void) {
    uint8_t b;
    do
        b = (uint8_t)rnd_u32();
    while ((b & 0x7f) == 0x7f);
    return b;
}

/* An E5M2 byte that is finite (exponent != 31). */
static uint8_t rnd_e5m2(void) {
    uint8_t b;
    do
        b = (uint8_t)rnd_u32();
    while ((b & 0x7c) == 0x7c);
    return b;
}

/* ---- test weights ----------------------------------------------------- */

/* A weight plus the buffers it points into; every buffer starts one byte
 * past a malloc'd block so nothing is aligned. */
typedef struct tw {
    mk_wt w;
    char *mem[3];
} tw;

static void *tw_alloc(tw *t, int slot, size_t n) {
    t->mem[slot] = calloc(1, n + 1);
    assert_non_null(t->mem[slot]);
    return t->mem[slot] + 1;
}

static void tw_free(tw *t) {
    for (int i = 0; i < 3; i++)
        free(t->mem[i]);
}

/* Store v as element i of an F32/BF16/F16 array. */
static void st_f(void *p, mk_dtype t, size_t i, float v) {
    if (t == MK_DT_F32) {
        memcpy((char *)p + 4 * i, &v, 4);
    } else {
        uint16_t h = t == MK_DT_BF16 ? mk_f32_to_bf16(v) : mk_f32_to_f16(v);
        memcpy((char *)p + 2 * i, &h, 2);
    }
}

static size_t dt_size(mk_dtype t) {
    return t == MK_DT_F32 ? 4 : 2;
}

/* Random weight of the given format; `a`, `b` are format parameters:
 * AFFINE (bits, group), FP8 (block_r, block_c). */
static void tw_make(tw *t, mk_wfmt fmt, int64_t rows, int64_t cols, mk_dtype sdt, int a, int b) {
    memset(t, 0, sizeof *t);
    mk_wt *w = &t->w;
    w->fmt = fmt;
    w->rows = rows;
    w->cols = cols;
    w->sdtype = sdt;
    w->global_scale = 1.0f;
    size_t nel = (size_t)(rows * cols);
    switch (fmt) {
    case MK_WF_F32:
    case MK_WF_BF16:
    case MK_WF_F16: {
        mk_dtype dt = fmt == MK_WF_F32 ? MK_DT_F32 : fmt == MK_WF_BF16 ? MK_DT_BF16 : MK_DT_F16;
        void *d = tw_alloc(t, 0, nel * dt_size(dt));
        for (size_t i = 0; i < nel; i++)
            st_f(d, dt, i, rnd_f(-1, 1));
        w->data = d;
        break;
    }
    case MK_WF_FP8_E4M3:
    case MK_WF_FP8_E5M2: {
        uint8_t *d = tw_alloc(t, 0, nel);
        for (size_t i = 0; i < nel; i++)
            d[i] = fmt == MK_WF_FP8_E4M3 ? rnd_e4m3() : rnd_e5m2();
        w->block_r = a;
        w->block_c = b;
        size_t ns = (size_t)(((rows + a - 1) / a) * ((cols + b - 1) / b));
        void *s = tw_alloc(t, 1, ns * dt_size(sdt));
        for (size_t i = 0; i < ns; i++)
            st_f(s, sdt, i, rnd_f(0.5f, 2.0f) * (fmt == MK_WF_FP8_E5M2 ? 1e-4f : 1e-2f));
        w->data = d;
        w->scales = s;
        break;
    }
    case MK_WF_AFFINE: {
        w->bits = a;
        w->group = b;
        size_t rb = (size_t)(cols * a / 8), ng = (size_t)(rows * (cols / b));
        uint8_t *d = tw_alloc(t, 0, (size_t)rows * rb);
        for (int64_t r = 0; r < rows; r++) { /* LSB-first bit stream per row */
            for (int64_t c = 0; c < cols; c++) {
                uint32_t q = rnd_u32() & ((1u << a) - 1u);
                for (int k = 0; k < a; k++)
                    if (q >> k & 1u) {
                        int64_t bit = c * a + k;
                        d[(size_t)r * rb + (size_t)(bit / 8)] |= (uint8_t)(1u << (bit % 8));
                    }
            }
        }
        void *s = tw_alloc(t, 1, ng * dt_size(sdt));
        void *bi = tw_alloc(t, 2, ng * dt_size(sdt));
        for (size_t i = 0; i < ng; i++) {
            st_f(s, sdt, i, rnd_f(-0.1f, 0.1f));
            st_f(bi, sdt, i, rnd_f(-0.5f, 0.5f));
        }
        w->data = d;
        w->scales = s;
        w->biases = bi;
        break;
    }
    case MK_WF_MXFP4:
    case MK_WF_NVFP4:
    case MK_WF_MXFP8: {
        bool nv = fmt == MK_WF_NVFP4, f8 = fmt == MK_WF_MXFP8;
        int gs = nv ? 16 : 32;
        size_t nb = f8 ? nel : nel / 2, ns = nel / (size_t)gs;
        uint8_t *d = tw_alloc(t, 0, nb);
        for (size_t i = 0; i < nb; i++)
            d[i] = f8 ? rnd_e4m3() : (uint8_t)rnd_u32();
        uint8_t *s = tw_alloc(t, 1, ns);
        for (size_t i = 0; i < ns; i++) /* nv: positive non-NaN E4M3; mx: 2^-8 .. 2^2 */
            s[i] = nv ? (uint8_t)(0x20 + rnd_u32() % 0x50) : (uint8_t)(119 + rnd_u32() % 11);
        w->data = d;
        w->scales = s;
        if (nv)
            w->global_scale = 0.37f;
        break;
    }
    default: fail_msg("bad format");
    }
    mk_status st = mk_wt_check(w, "test weight");
    assert_int_equal(st, MK_OK);
}

/* ---- comparisons ------------------------------------------------------ */

/* |y - yref| <= 1e-5 * sum_c |W[r,c] x[t,c]| for every (t, r). sabs holds
 * the sums (n x rows). */
static void expect_close(const float *y, const float *yref, const double *sabs, int64_t n, int64_t rows,
                         const char *what) {
    for (int64_t i = 0; i < n * rows; i++) {
        double err = fabs((double)y[i] - (double)yref[i]);
        if (!(err <= 1e-5 * sabs[i] + 1e-30)) {
            fail_msg("%s: t=%lld r=%lld got %.9g want %.9g (err %.3g, sum|terms| %.3g)", what,
                     (long long)(i / rows), (long long)(i % rows), (double)y[i], (double)yref[i], err,
                     sabs[i]);
        }
    }
}

static mk_pool *g_pool;
static mk_isa g_isa0;

/* ---- int8 activations (kernels.h "Accuracy", kern_impl.h) -------------
 * mk_matmul's decode of MLX affine 4/8-bit weights on every path works
 * on x quantized per block of 32: d = amax / 127, q = nearbyint(x * (127 /
 * amax)). The rule is written again here from its contract, so the check is
 * twofold: against x^ = q d the kernels keep the float bound (1e-5 of the
 * sum of |terms|, catching one wrong element), and against x itself the
 * stated bound sum_b d_b / 2 sum_{c in b} |W[r,c]| (+ the float term). */
static bool int8_path(mk_isa isa, const mk_wt *w, int64_t n) {
    (void)isa; /* every path: ref, avx2, avx512 (avx2's int8 kernels), avxvnni, avx512vnni */
    /* forced by the tests; mk_matmul only: the row-range products (check_rows) keep float x */
    return mk_kernels_int8() && n == 1 && w->fmt == MK_WF_AFFINE && (w->bits == 4 || w->bits == 8);
}

/* xq = x^ and d[b] per block of 32 */
static void q8_ref(const float *x, int64_t cols, float *xq, float *d) {
    /* the int8 paths take only widths of whole blocks; a partial last block
     * (other formats' odd widths, whose checks ignore these values) is
     * quantized alone so nothing here reads or writes past cols */
    for (int64_t b = 0; b < (cols + 31) / 32; b++) {
        int nb = cols - b * 32 < 32 ? (int)(cols - b * 32) : 32;
        float amax = 0;
        for (int i = 0; i < nb; i++)
            amax = fmaxf(amax, fabsf(x[b * 32 + i]));
        d[b] = amax / 127.0f;
        for (int i = 0; i < nb; i++)
            xq[b * 32 + i] = amax == 0 ? 0.0f : nearbyintf(x[b * 32 + i] * (127.0f / amax)) * d[b];
    }
}

/* want[o] / sabs[o] = W x^ and sum |W x^| over rows [r0, r0+nr) of wr, and
 * bnd[o] = the stated bound of the int8 kernels against x */
static void q8_want(const float *wr, int64_t cols, int64_t r0, int64_t nr, const float *x, float *want,
                    double *sabs, double *bnd) {
    float *xq = malloc(sizeof(float) * (size_t)cols), *d = malloc(sizeof(float) * (size_t)((cols + 31) / 32));
    assert_true(xq && d);
    q8_ref(x, cols, xq, d);
    for (int64_t o = 0; o < nr; o++) {
        double acc = 0, sa = 0, bd = 0;
        for (int64_t c = 0; c < cols; c++) {
            double wv = wr[(r0 + o) * cols + c], term = wv * (double)xq[c];
            acc += term;
            sa += fabs(term);
            bd += fabs(wv) * (double)d[c / 32] * 0.5;
        }
        want[o] = (float)acc;
        sabs[o] = sa;
        bnd[o] = bd * (1 + 1e-5) + 1e-5 * sa;
    }
    free(xq);
    free(d);
}

/* |y - W x| <= bnd, W x in double */
static void expect_q8_bound(const float *y, const float *wr, int64_t cols, int64_t r0, int64_t nr,
                            const float *x, const double *bnd, const char *what) {
    for (int64_t o = 0; o < nr; o++) {
        double acc = 0;
        for (int64_t c = 0; c < cols; c++)
            acc += (double)wr[(r0 + o) * cols + c] * (double)x[c];
        double err = fabs((double)y[o] - acc);
        if (!(err <= bnd[o]))
            fail_msg("%s: r=%lld int8 bound: got %.9g want %.9g (err %.3g > bound %.3g)", what,
                     (long long)(r0 + o), (double)y[o], acc, err, bnd[o]);
    }
}

/* mk_matmul_rows / mk_matmul_rows_t on rows [1, rows-2) with padded token
 * strides, every path, against double loops over the dequantized rows wr;
 * the same bound as mk_matmul (per output, 1e-5 of the sum of |terms|). */
static void check_rows(const mk_wt *w, const float *wr, const char *label) {
    const int64_t rows = w->rows, cols = w->cols, r0 = 1, r1 = rows - 2, nr = r1 - r0, nmax = 37;
    if (nr <= 0)
        return;
    const int64_t xs = cols + 3, ys = nr + 5, xts = nr + 2, yts = cols + 7;
    const int64_t xw = xs > xts ? xs : xts, yw = ys > yts ? ys : yts; /* widest rows of either product */
    float *x = malloc(sizeof(float) * (size_t)(nmax * xw)), *y = malloc(sizeof(float) * (size_t)(nmax * yw));
    float *want = malloc(sizeof(float) * (size_t)(nmax * yw));
    double *sabs = malloc(sizeof(double) * (size_t)(nmax * yw));
    assert_true(x && y && want && sabs);
    for (int64_t i = 0; i < nmax * xw; i++)
        x[i] = rnd_f(-1, 1);
    static const int64_t ns[] = {1, 3, 37};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        int64_t n = ns[k];
        for (int tr = 0; tr < 2; tr++) { /* tr: the transposed product */
            int64_t out = tr ? cols : nr, ystr = tr ? yts : ys, xstr = tr ? xts : xs;
            for (int64_t t = 0; t < n; t++)
                for (int64_t o = 0; o < out; o++) {
                    double acc = 0, sa = 0;
                    for (int64_t i = 0; i < (tr ? nr : cols); i++) {
                        double wv = tr ? wr[(r0 + i) * cols + o] : wr[(r0 + o) * cols + i];
                        double term = wv * (double)x[t * xstr + i];
                        acc += term;
                        sa += fabs(term);
                    }
                    want[t * out + o] = (float)acc;
                    sabs[t * out + o] = sa;
                }
            for (int isa = 0; isa < MK_ISA_COUNT; isa++) {
                if (!mk_isa_supported((mk_isa)isa))
                    continue;
                assert_int_equal(mk_isa_set((mk_isa)isa), MK_OK);
                memset(y, 0xff, sizeof(float) * (size_t)(nmax * yw)); /* NaN: catch unwritten */
                if (tr)
                    mk_matmul_rows_t(w, r0, r1, x, xstr, n, y, ystr);
                else
                    mk_matmul_rows(w, r0, r1, x, xstr, n, y, ystr);
                for (int64_t t = 0; t < n; t++) /* pack the strided rows for the comparison */
                    memmove(y + t * out, y + t * ystr, (size_t)out * sizeof(float));
                char what[200];
                snprintf(what, sizeof what, "%s rows%s [%lld,%lld) n=%lld %s", label, tr ? "_t" : "",
                         (long long)r0, (long long)r1, (long long)n, mk_isa_name((mk_isa)isa));
                expect_close(y, want, sabs, n, out, what);
            }
        }
    }
    free(x);
    free(y);
    free(want);
    free(sabs);
}

/* The whole check of one weight: ref vs double, every path vs ref. */
static void check_weight(const tw *t, const char *label) {
    const mk_wt *w = &t->w;
    const int64_t rows = w->rows, cols = w->cols, nmax = 70;
    /* x and y one float past malloc's alignment: no kernel may assume more */
    float *xm = malloc(sizeof(float) * (size_t)(nmax * cols + 1)), *x = xm + 1;
    float *wr = malloc(sizeof(float) * (size_t)(rows * cols));
    float *yref = malloc(sizeof(float) * (size_t)(nmax * rows));
    float *ym = malloc(sizeof(float) * (size_t)(nmax * rows + 1)), *y = ym + 1;
    double *sabs = malloc(sizeof(double) * (size_t)(nmax * rows));
    assert_true(x && wr && yref && y && sabs);
    for (int64_t i = 0; i < nmax * cols; i++)
        x[i] = rnd_f(-1, 1);
    for (int64_t i = 32; i < 64 && i < cols; i++) /* an all-zero block of 32 (int8 paths: d = 0) */
        x[i] = 0.0f;
    for (int64_t r = 0; r < rows; r++)
        mk_wt_dequant_row(w, r, wr + r * cols);
    float *y1 = malloc(sizeof(float) * (size_t)(nmax * rows)), *wq = malloc(sizeof(float) * (size_t)rows);
    double *sq = malloc(sizeof(double) * (size_t)rows), *bq = malloc(sizeof(double) * (size_t)rows);
    assert_true(y1 && wq && sq && bq);
    q8_want(wr, cols, 0, rows, x, wq, sq, bq);

    /* 3: 4-row tiles; 14, 15, 17, 37: AVX2 panels in register tiles of
     * 6,4,4 / 6,5,4 / 6,6,5 / 6x5,4,3 tokens; 70: two prefill token blocks,
     * 64 on panels (6x9,5,5) and 6 on tiles */
    static const int64_t ns[] = {1, 3, 14, 15, 17, 37, 70};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        int64_t n = ns[k];
        char what[160];
        /* reference against a double loop over the dequantized rows */
        mk_matmul_ref(w, x, n, yref);
        for (int64_t tt = 0; tt < n; tt++)
            for (int64_t r = 0; r < rows; r++) {
                double s = 0, sa = 0;
                for (int64_t c = 0; c < cols; c++) {
                    double term = (double)wr[r * cols + c] * (double)x[tt * cols + c];
                    s += term;
                    sa += fabs(term);
                }
                sabs[tt * rows + r] = sa;
                y[tt * rows + r] = (float)s;
            }
        snprintf(what, sizeof what, "%s n=%lld ref-vs-double", label, (long long)n);
        expect_close(yref, y, sabs, n, rows, what);

        /* every supported path, inline and threaded */
        for (int isa = 0; isa < MK_ISA_COUNT; isa++) {
            if (!mk_isa_supported((mk_isa)isa))
                continue;
            assert_int_equal(mk_isa_set((mk_isa)isa), MK_OK);
            for (int threaded = 0; threaded < 2; threaded++) {
                memset(y, 0xff, sizeof(float) * (size_t)(n * rows)); /* NaN: catch unwritten */
                mk_matmul(threaded ? g_pool : NULL, w, x, n, y);
                snprintf(what, sizeof what, "%s n=%lld %s%s", label, (long long)n, mk_isa_name((mk_isa)isa),
                         threaded ? " threaded" : "");
                if (int8_path((mk_isa)isa, w, n)) {
                    expect_close(y, wq, sq, 1, rows, what);
                    expect_q8_bound(y, wr, cols, 0, rows, x, bq, what);
                } else {
                    expect_close(y, yref, sabs, n, rows, what);
                }
                /* each output is one thread's, in a fixed order */
                if (threaded)
                    assert_memory_equal(y, y1, sizeof(float) * (size_t)(n * rows));
                else
                    memcpy(y1, y, sizeof(float) * (size_t)(n * rows));
            }
        }
    }
    check_rows(w, wr, label);
    free(y1);
    free(wq);
    free(sq);
    free(bq);
    free(xm);
    free(wr);
    free(yref);
    free(ym);
    free(sabs);
}

static int group_setup(void **state) {
    g_isa0 = mk_isa_active();
    /* float x unless a test asks for int8 (the library's default is int8
     * x for MLX affine 4/8-bit decode on the x86 paths): every case then
     * runs the float kernels, and the int8 ones where a test turns them on */
    mk_kernels_set_int8(false);
    /* prefill (several tokens) float even where a test turns int8 decode
     * on: the int8 prefill GEMM, which follows the decode setting by
     * default, has its own bound and test (test_gemm_q8) */
    mk_kernels_set_prefill_int8(false);
    return mk_pool_create(3, &g_pool) == MK_OK ? 0 : -1;
}

static int group_teardown(void **state) {
    mk_pool_free(g_pool);
    mk_isa_set(g_isa0);
    return 0;
}

/* ---- 1. hand-written dequant cases ------------------------------------ */

static void test_dequant_affine4_literal(void **state) {
    /* 4-bit [1..8] packs to 0x87654321; scale 0.5, bias -1 over group 32. */
    uint32_t words[4] = {0x87654321u, 0, 0, 0xf0000000u};
    float sc = 0.5f, bi = -1.0f;
    mk_wt w = {.fmt = MK_WF_AFFINE,
               .rows = 1,
               .cols = 32,
               .data = words,
               .scales = &sc,
               .biases = &bi,
               .sdtype = MK_DT_F32,
               .bits = 4,
               .group = 32};
    assert_int_equal(mk_wt_check(&w, "t"), MK_OK);
    assert_int_equal(mk_wt_row_bytes(&w), 16);
    float out[32];
    mk_wt_dequant_row(&w, 0, out);
    for (int i = 0; i < 8; i++)
        assert_true(out[i] == 0.5f * (float)(i + 1) - 1.0f);
    assert_true(out[8] == -1.0f);
    assert_true(out[31] == 0.5f * 15.0f - 1.0f);
}

static void test_dequant_affine3_straddle(void **state) {
    /* 3-bit values 0..7 repeated: element 10 straddles bits 30..32. */
    uint8_t d[12] = {0};
    for (int j = 0; j < 32; j++)
        for (int k = 0; k < 3; k++)
            if ((j % 8) >> k & 1)
                d[(j * 3 + k) / 8] |= (uint8_t)(1u << ((j * 3 + k) % 8));
    uint16_t sc = mk_f32_to_bf16(2.0f), bi = mk_f32_to_bf16(0.25f);
    mk_wt w = {.fmt = MK_WF_AFFINE,
               .rows = 1,
               .cols = 32,
               .data = d,
               .scales = &sc,
               .biases = &bi,
               .sdtype = MK_DT_BF16,
               .bits = 3,
               .group = 32};
    assert_int_equal(mk_wt_check(&w, "t"), MK_OK);
    float out[32];
    mk_wt_dequant_row(&w, 0, out);
    for (int j = 0; j < 32; j++)
        assert_true(out[j] == 2.0f * (float)(j % 8) + 0.25f);
}

static void test_dequant_fp8_bytes(void **state) {
    /* E4M3 spot checks: 0x7E = 448, 0x08 = 2^-6, 0x01 = 2^-9, 0xB8 = -1. */
    uint8_t d[5] = {0x7e, 0x08, 0x01, 0xb8, 0x00};
    mk_wt w = {.fmt = MK_WF_FP8_E4M3, .rows = 1, .cols = 5, .data = d};
    assert_int_equal(mk_wt_check(&w, "t"), MK_OK);
    float out[5];
    mk_wt_dequant_row(&w, 0, out);
    assert_true(out[0] == 448.0f);
    assert_true(out[1] == 0x1p-6f);
    assert_true(out[2] == 0x1p-9f);
    assert_true(out[3] == -1.0f);
    assert_true(out[4] == 0.0f);
    /* E5M2: 0x7B = 57344, 0x3C = 1, 0x01 = 2^-16 */
    uint8_t e[3] = {0x7b, 0x3c, 0x01};
    mk_wt w5 = {.fmt = MK_WF_FP8_E5M2, .rows = 1, .cols = 3, .data = e};
    mk_wt_dequant_row(&w5, 0, out);
    assert_true(out[0] == 57344.0f && out[1] == 1.0f && out[2] == 0x1p-16f);
}

static void test_dequant_fp8_blocks(void **state) {
    /* 3x5 of E4M3 1.0 (0x38) with 2x2 blocks -> grid 2x3, partial edges. */
    uint8_t d[15];
    memset(d, 0x38, sizeof d);
    float s[6] = {1, 2, 3, 4, 5, 6};
    mk_wt w = {.fmt = MK_WF_FP8_E4M3,
               .rows = 3,
               .cols = 5,
               .data = d,
               .scales = s,
               .sdtype = MK_DT_F32,
               .block_r = 2,
               .block_c = 2};
    assert_int_equal(mk_wt_check(&w, "t"), MK_OK);
    static const float want[3][5] = {{1, 1, 2, 2, 3}, {1, 1, 2, 2, 3}, {4, 4, 5, 5, 6}};
    for (int r = 0; r < 3; r++) {
        float out[5];
        mk_wt_dequant_row(&w, r, out);
        for (int c = 0; c < 5; c++)
            assert_true(out[c] == want[r][c]);
    }
}

static void test_dequant_mxfp4_codes(void **state) {
    /* E2M1 codes 0..15 with E8M0 127 (= 1.0) then 128 (= 2.0). */
    uint8_t d[32], sc[2] = {127, 128};
    for (int i = 0; i < 32; i++)
        d[i] = (uint8_t)(((2 * i) & 15) | (((2 * i + 1) & 15) << 4));
    mk_wt w = {.fmt = MK_WF_MXFP4, .rows = 1, .cols = 64, .data = d, .scales = sc};
    assert_int_equal(mk_wt_check(&w, "t"), MK_OK);
    static const float e2m1[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
    float out[64];
    mk_wt_dequant_row(&w, 0, out);
    for (int c = 0; c < 32; c++) {
        int code = c & 15;
        float v = (code & 8) ? -e2m1[code & 7] : e2m1[code & 7];
        assert_true(out[c] == v);
        assert_true(out[c + 32] == 2.0f * v);
    }
}

static void test_dequant_nvfp4_mxfp8(void **state) {
    /* NVFP4: code 7 (6.0) * E4M3 0x30 (0.5) * global 2 = 6. */
    uint8_t d[8], sc[1] = {0x30};
    memset(d, 0x77, sizeof d);
    mk_wt w = {.fmt = MK_WF_NVFP4, .rows = 1, .cols = 16, .data = d, .scales = sc, .global_scale = 2.0f};
    assert_int_equal(mk_wt_check(&w, "t"), MK_OK);
    float out[32];
    mk_wt_dequant_row(&w, 0, out);
    for (int c = 0; c < 16; c++)
        assert_true(out[c] == 6.0f);
    /* MXFP8: E4M3 0x7E (448) * E8M0 126 (0.5) = 224. */
    uint8_t d8[32], s8[1] = {126};
    memset(d8, 0x7e, sizeof d8);
    mk_wt w8 = {.fmt = MK_WF_MXFP8, .rows = 1, .cols = 32, .data = d8, .scales = s8};
    assert_int_equal(mk_wt_check(&w8, "t"), MK_OK);
    mk_wt_dequant_row(&w8, 0, out);
    for (int c = 0; c < 32; c++)
        assert_true(out[c] == 224.0f);
    /* MLX's E4M3 is E4M3FN: 0x7f/0xff are NaN (its quantizer saturates at
     * 0x7e; a file holding 0x7f holds NaN weights, issue 15). Every path
     * dequantizes them to NaN, never to a finite number. */
    d8[0] = 0x7f;
    d8[1] = 0xff;
    s8[0] = 127;
    float x[32], y;
    for (int c = 0; c < 32; c++)
        x[c] = c < 2 ? 1.0f : 0.0f;
    mk_wt_dequant_row(&w8, 0, out);
    assert_true(isnan(out[0]) && isnan(out[1]));
    for (int isa = 0; isa < MK_ISA_COUNT; isa++) {
        if (!mk_isa_supported((mk_isa)isa))
            continue;
        assert_int_equal(mk_isa_set((mk_isa)isa), MK_OK);
        x[0] = 1.0f;
        x[1] = 0.0f;
        mk_matmul(NULL, &w8, x, 1, &y);
        assert_true(isnan(y));
    }
    assert_int_equal(mk_isa_set(MK_ISA_REF), MK_OK);
    mk_isa_set(mk_isa_supported(MK_ISA_AVX512) ? MK_ISA_AVX512
                       : mk_isa_supported(MK_ISA_AVX2) ? MK_ISA_AVX2 : MK_ISA_REF);
}

/* ---- 2 and 3. matmul on every format and path ------------------------- */

static void test_matmul_float(void **state) {
    static const mk_wfmt f[] = {MK_WF_F32, MK_WF_BF16, MK_WF_F16};
    for (int i = 0; i < 3; i++) {
        tw t;
        tw_make(&t, f[i], 37, 333, MK_DT_F32, 0, 0);
        char label[64];
        snprintf(label, sizeof label, "fmt%d 37x333", (int)f[i]);
        check_weight(&t, label);
        tw_free(&t);
        tw_make(&t, f[i], 19, 1024, MK_DT_F32, 0, 0);
        check_weight(&t, label);
        tw_free(&t);
        /* a row range past mk_matmul_rows_t's 192-row strips: its row loop */
        tw_make(&t, f[i], 200, 96, MK_DT_F32, 0, 0);
        check_weight(&t, label);
        tw_free(&t);
    }
}

static void test_matmul_fp8(void **state) {
    static const mk_wfmt f[] = {MK_WF_FP8_E4M3, MK_WF_FP8_E5M2};
    static const mk_dtype sd[] = {MK_DT_F32, MK_DT_BF16, MK_DT_F16};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++) {
            char label[64];
            snprintf(label, sizeof label, "fp8 fmt%d sdt %s", (int)f[i], mk_dtype_name(sd[j]));
            tw t;
            tw_make(&t, f[i], 37, 333, sd[j], 16, 24); /* partial blocks both ways */
            check_weight(&t, label);
            tw_free(&t);
            tw_make(&t, f[i], 131, 700, sd[j], 128, 128);
            check_weight(&t, label);
            tw_free(&t);
        }
}

static void test_matmul_affine(void **state) {
    static const int bits[] = {2, 3, 4, 5, 6, 8}, groups[] = {32, 64, 128};
    static const mk_dtype sd[] = {MK_DT_BF16, MK_DT_F32, MK_DT_F16};
    for (int b = 0; b < 6; b++)
        for (int g = 0; g < 3; g++)
            for (int s = 0; s < 3; s++) {
                if (s == 2 && g != 1)
                    continue; /* f16 scales: one group size is enough */
                char label[64];
                snprintf(label, sizeof label, "affine b%d g%d %s", bits[b], groups[g], mk_dtype_name(sd[s]));
                tw t;
                tw_make(&t, MK_WF_AFFINE, 21, 640, sd[s], bits[b], groups[g]);
                check_weight(&t, label); /* float x (pinned in group_setup) */
                mk_kernels_set_int8(true);
                check_weight(&t, label); /* int8 x where the kernels have it */
                mk_kernels_set_int8(false);
                tw_free(&t);
                if (groups[g] == 32) { /* 19 blocks: a lone last block of 32 */
                    tw_make(&t, MK_WF_AFFINE, 7, 608, sd[s], bits[b], 32);
                    mk_kernels_set_int8(true);
                    check_weight(&t, label);
                    mk_kernels_set_int8(false);
                    tw_free(&t);
                }
            }
    /* more than 64 groups per row (the kernels convert scales 64 at a time) */
    mk_kernels_set_int8(true);
    for (int b = 0; b < 6; b++) {
        tw t;
        tw_make(&t, MK_WF_AFFINE, 5, 4160, MK_DT_BF16, bits[b], 32);
        check_weight(&t, "affine 5x4160 g32");
        tw_free(&t);
    }
    mk_kernels_set_int8(false);
}

/* The default activation choice (kernels.h): int8 x on every path with
 * integer dots, float x on ref, following mk_isa_set. Checked by what it
 * computes: bitwise the forced int8 result (held to its references by
 * test_matmul_affine) on the x86 paths, the forced float one on ref; the
 * two differ on this weight, so naming the wrong one fails. */
static void test_int8_default(void **state) {
    float x[640], yd[21], yf[21], y8[21];
    for (int i = 0; i < 640; i++)
        x[i] = rnd_f(-1, 1);
    for (int bits = 4; bits <= 8; bits += 4) {
        tw t;
        tw_make(&t, MK_WF_AFFINE, 21, 640, MK_DT_BF16, bits, 64);
        mk_kernels_reset_int8();
        for (int isa = MK_ISA_COUNT - 1; isa >= 0; isa--) { /* ref last: the default changes */
            if (!mk_isa_supported((mk_isa)isa))
                continue;
            assert_int_equal(mk_isa_set((mk_isa)isa), MK_OK);
            const bool want8 = isa != MK_ISA_REF;
            if (mk_kernels_int8() != want8)
                fail_msg("%s: default int8 activations %d, want %d", mk_isa_name((mk_isa)isa),
                         (int)mk_kernels_int8(), (int)want8);
            mk_matmul(g_pool, &t.w, x, 1, yd);
            mk_kernels_set_int8(false);
            mk_matmul(g_pool, &t.w, x, 1, yf);
            mk_kernels_set_int8(true);
            mk_matmul(g_pool, &t.w, x, 1, y8);
            mk_kernels_reset_int8();
            assert_memory_not_equal(yf, y8, sizeof yf);
            if (memcmp(yd, want8 ? y8 : yf, sizeof yd))
                fail_msg("%d-bit %s: the default is not the %s result", bits, mk_isa_name((mk_isa)isa),
                         want8 ? "int8" : "float");
        }
        tw_free(&t);
    }
    mk_kernels_set_int8(false);
    mk_isa_set(g_isa0);
}

/* Non-finite x reaches the outputs on every path (int8: d = NaN). */
static void test_matmul_affine_nonfinite(void **state) {
    for (int bits = 4; bits <= 8; bits += 4) {
        tw t;
        tw_make(&t, MK_WF_AFFINE, 9, 256, MK_DT_BF16, bits, 64);
        float x[256], y[9];
        for (int i = 0; i < 256; i++)
            x[i] = rnd_f(-1, 1);
        for (int k = 0; k < 4; k++) {
            mk_kernels_set_int8(k >= 2);
            x[100] = k & 1 ? INFINITY : NAN;
            for (int isa = 0; isa < MK_ISA_COUNT; isa++) {
                if (!mk_isa_supported((mk_isa)isa))
                    continue;
                assert_int_equal(mk_isa_set((mk_isa)isa), MK_OK);
                mk_matmul(g_pool, &t.w, x, 1, y);
                for (int r = 0; r < 9; r++)
                    if (isfinite(y[r]))
                        fail_msg("affine %d-bit %s%s: x[100] = %s gave a finite y[%d] = %g", bits,
                                 mk_isa_name((mk_isa)isa), k >= 2 ? " int8" : "", k & 1 ? "inf" : "NaN", r,
                                 (double)y[r]);
            }
        }
        tw_free(&t);
    }
    mk_kernels_set_int8(false);
    mk_isa_set(g_isa0);
}

static void test_matmul_micro(void **state) {
    static const mk_wfmt f[] = {MK_WF_MXFP4, MK_WF_MXFP8, MK_WF_NVFP4};
    for (int i = 0; i < 3; i++) {
        char label[64];
        snprintf(label, sizeof label, "micro fmt%d", (int)f[i]);
        tw t;
        tw_make(&t, f[i], 23, 608, MK_DT_U8, 0, 0);
        check_weight(&t, label);
        tw_free(&t);
        tw_make(&t, f[i], 5, 48 * (f[i] == MK_WF_NVFP4 ? 1 : 2), MK_DT_U8, 0, 0);
        check_weight(&t, label);
        tw_free(&t);
    }
}

/* Decode products do not depend on where a thread's rows start: the int8
 * kernels take rows four at a time, so a row range starting at r0 groups
 * rows differently from the whole matrix. A view of rows [r0, r1) (its
 * codes, scales and biases advanced by r0 rows) must give bitwise the
 * rows the whole matrix gives, on every path, with int8 x and float x, for
 * every start modulo 4 and ends leaving 0-3 rows after the last block; and
 * a matrix large enough for the pool to split (rows per task not a
 * multiple of 4) bitwise what one thread gives (kern_q8_body.h,
 * "Bitwise"; kernels.h "Accuracy"). */
static void test_decode_row_split(void **state) {
    static const int bits[] = {4, 8}, groups[] = {32, 64, 128};
    for (int b = 0; b < 2; b++)
        for (int g = 0; g < 3; g++) {
            tw t;
            /* 11 groups: at g32 a lone last block of 32 after the 64-column steps */
            const int64_t rows = 23, cols = 11 * groups[g];
            tw_make(&t, MK_WF_AFFINE, rows, cols, MK_DT_BF16, bits[b], groups[g]);
            float *x = malloc(sizeof(float) * (size_t)cols), *yf = malloc(sizeof(float) * (size_t)rows);
            float *ys = malloc(sizeof(float) * (size_t)rows);
            assert_true(x && yf && ys);
            for (int64_t i = 0; i < cols; i++)
                x[i] = rnd_f(-1, 1);
            const size_t rb = (size_t)(cols * bits[b] / 8), sb = (size_t)(cols / groups[g]) * 2;
            for (int q8 = 0; q8 < 2; q8++)
                for (int isa = 0; isa < MK_ISA_COUNT; isa++) {
                    if (!mk_isa_supported((mk_isa)isa))
                        continue;
                    assert_int_equal(mk_isa_set((mk_isa)isa), MK_OK);
                    mk_kernels_set_int8(q8);
                    mk_matmul(NULL, &t.w, x, 1, yf);
                    for (int64_t r0 = 0; r0 < 4; r0++)
                        for (int64_t r1 = rows - 3; r1 <= rows; r1++) {
                            mk_wt v = t.w;
                            v.rows = r1 - r0;
                            v.data = (const uint8_t *)t.w.data + (size_t)r0 * rb;
                            v.scales = (const uint8_t *)t.w.scales + (size_t)r0 * sb;
                            v.biases = (const uint8_t *)t.w.biases + (size_t)r0 * sb;
                            mk_matmul(NULL, &v, x, 1, ys);
                            if (memcmp(ys, yf + r0, (size_t)v.rows * sizeof(float)) != 0)
                                fail_msg("affine %d-bit g%d %s%s: rows [%lld,%lld) as a view differ from the "
                                         "whole matrix's", bits[b], groups[g], mk_isa_name((mk_isa)isa),
                                         q8 ? " int8" : "", (long long)r0, (long long)r1);
                        }
                }
            free(x);
            free(yf);
            free(ys);
            tw_free(&t);
        }
    /* the pool splits 302 rows of 1344 4-bit columns (672 bytes: 24 rows a
     * task) or 8-bit ones (12 rows a task) */
    for (int b = 0; b < 2; b++) {
        tw t;
        const int64_t rows = 302, cols = 1344;
        tw_make(&t, MK_WF_AFFINE, rows, cols, MK_DT_BF16, bits[b], 64);
        float *x = malloc(sizeof(float) * (size_t)cols), *y1 = malloc(sizeof(float) * (size_t)rows);
        float *yp = malloc(sizeof(float) * (size_t)rows);
        assert_true(x && y1 && yp);
        for (int64_t i = 0; i < cols; i++)
            x[i] = rnd_f(-1, 1);
        for (int q8 = 0; q8 < 2; q8++)
            for (int isa = 0; isa < MK_ISA_COUNT; isa++) {
                if (!mk_isa_supported((mk_isa)isa))
                    continue;
                assert_int_equal(mk_isa_set((mk_isa)isa), MK_OK);
                mk_kernels_set_int8(q8);
                mk_matmul(NULL, &t.w, x, 1, y1);
                mk_matmul(g_pool, &t.w, x, 1, yp);
                if (memcmp(y1, yp, (size_t)rows * sizeof(float)) != 0)
                    fail_msg("affine %d-bit %s%s: %lld rows on %d threads differ from one thread", bits[b],
                             mk_isa_name((mk_isa)isa), q8 ? " int8" : "", (long long)rows, mk_pool_size(g_pool));
            }
        free(x);
        free(y1);
        free(yp);
        tw_free(&t);
    }
    mk_kernels_set_int8(false);
    mk_isa_set(g_isa0);
}

/* mk_matvec_multi: every item bitwise what mk_matmul gives alone, on every
 * path, inline and threaded: formats with int8, float-prepared, unprepared
 * and tiled decode paths, items sharing x (one preparation) and not, more
 * items than one region takes (64) and preparations too large to share the
 * stack area (8192 columns: a new region starts). */
static void test_matvec_multi(void **state) {
    enum { NW = 7, NI = 150, COLS = 640, BIG = 8192 };
    tw t[NW];
    tw_make(&t[0], MK_WF_AFFINE, 33, COLS, MK_DT_BF16, 4, 64);
    tw_make(&t[1], MK_WF_AFFINE, 17, COLS, MK_DT_F16, 8, 32);
    tw_make(&t[2], MK_WF_BF16, 9, COLS, MK_DT_F32, 0, 0);
    tw_make(&t[3], MK_WF_AFFINE, 5, COLS, MK_DT_F32, 3, 64);
    tw_make(&t[4], MK_WF_MXFP4, 11, COLS, MK_DT_U8, 0, 0);
    tw_make(&t[5], MK_WF_FP8_E4M3, 7, COLS, MK_DT_BF16, 16, 24);
    tw_make(&t[6], MK_WF_AFFINE, 6, BIG, MK_DT_BF16, 4, 64);
    float *xs[3], *xb[3];
    for (int i = 0; i < 3; i++) {
        xs[i] = malloc(sizeof(float) * COLS);
        xb[i] = malloc(sizeof(float) * BIG);
        assert_true(xs[i] && xb[i]);
        for (int c = 0; c < COLS; c++)
            xs[i][c] = rnd_f(-1, 1);
        for (int c = 0; c < BIG; c++)
            xb[i][c] = rnd_f(-1, 1);
    }
    mk_mv_item it[NI];
    float *y = malloc(sizeof(float) * NI * 40), *want = malloc(sizeof(float) * 40);
    assert_true(y && want);
    for (int i = 0; i < NI; i++) {
        int k = i % 17 == 16 ? 6 : (int)(rnd_u32() % 6); /* every 17th a big one */
        it[i] = (mk_mv_item){&t[k].w, k == 6 ? xb[rnd_u32() % 3] : xs[rnd_u32() % 3], y + i * 40};
    }
    for (int isa = 0; isa < 2 * MK_ISA_COUNT; isa++) { /* each path with float, then int8 x */
        if (!mk_isa_supported((mk_isa)(isa % MK_ISA_COUNT)))
            continue;
        assert_int_equal(mk_isa_set((mk_isa)(isa % MK_ISA_COUNT)), MK_OK);
        mk_kernels_set_int8(isa >= MK_ISA_COUNT);
        for (int threaded = 0; threaded < 2; threaded++) {
            memset(y, 0xff, sizeof(float) * NI * 40);
            mk_matvec_multi(threaded ? g_pool : NULL, it, NI);
            for (int i = 0; i < NI; i++) {
                mk_matmul(NULL, it[i].w, it[i].x, 1, want);
                if (memcmp(want, it[i].y, sizeof(float) * (size_t)it[i].w->rows))
                    fail_msg("item %d (fmt %d, %lld x %lld) on %s%s%s differs from mk_matmul", i,
                             (int)it[i].w->fmt, (long long)it[i].w->rows, (long long)it[i].w->cols,
                             mk_isa_name((mk_isa)(isa % MK_ISA_COUNT)), mk_kernels_int8() ? " int8" : "",
                             threaded ? " threaded" : "");
            }
        }
    }
    mk_isa_set(g_isa0);
    mk_kernels_set_int8(false);
    mk_matvec_multi(g_pool, it, 0); /* nothing to do */
    for (int i = 0; i < 3; i++) {
        free(xs[i]);
        free(xb[i]);
    }
    free(y);
    free(want);
    for (int k = 0; k < NW; k++)
        tw_free(&t[k]);
}

/* ---- 4. pool, checks, ops --------------------------------------------- */

typedef struct cover_ctx {
    atomic_int *hits;
    int64_t grain, n;
    atomic_int short_chunks;
} cover_ctx;

static void cover_fn(void *ctx, int64_t b, int64_t e) {
    cover_ctx *c = ctx;
    if (e - b < c->grain && e != c->n)
        atomic_fetch_add(&c->short_chunks, 1);
    for (int64_t i = b; i < e; i++)
        atomic_fetch_add(&c->hits[i], 1);
}

static void nested_fn(void *ctx, int64_t b, int64_t e) {
    cover_ctx *c = ctx;
    mk_pool_for(g_pool, e - b, 1, cover_fn, c); /* must run inline, not deadlock */
}

/* mk_matmul_each: every token's row bitwise what mk_matmul gives for that
 * token alone (the batch-invariant decode product), on every path, float
 * and int8 x, inline and threaded, for the decode kernels with and without
 * a preparation of x, the tiled fallback, batches from 1 to 70 (more than
 * one region's 64) and widths whose preparations fit 1, a few or many
 * tokens per region (8192 columns: one at a time). A tiled multi-token
 * product (mk_matmul with n > 1) differs from it in the low bits: asserted
 * below, so the test would catch a kernel that silently took that path.
 * mk_matmul_each_multi is held to the same one-token products. */
static void test_matmul_each(void **state) {
    enum { NW = 6, NMAX = 70, BIG = 8192 };
    tw t[NW];
    tw_make(&t[0], MK_WF_AFFINE, 33, 640, MK_DT_BF16, 4, 64);
    tw_make(&t[1], MK_WF_BF16, 41, 640, MK_DT_F32, 0, 0);
    tw_make(&t[2], MK_WF_AFFINE, 17, 2048, MK_DT_F16, 8, 32);
    tw_make(&t[3], MK_WF_MXFP4, 11, 640, MK_DT_U8, 0, 0);
    tw_make(&t[4], MK_WF_FP8_E4M3, 19, 700, MK_DT_BF16, 16, 24);
    tw_make(&t[5], MK_WF_AFFINE, 9, BIG, MK_DT_BF16, 4, 64);
    float *x = malloc(sizeof(float) * NMAX * BIG), *y = malloc(sizeof(float) * NMAX * 41);
    float *want = malloc(sizeof(float) * NMAX * 41);
    assert_true(x && y && want);
    for (int64_t i = 0; i < (int64_t)NMAX * BIG; i++)
        x[i] = rnd_f(-1, 1);
    static const int ns[] = {1, 2, 3, 8, 70};
    bool tiled_differs = false;
    for (int isa = 0; isa < 2 * MK_ISA_COUNT; isa++) {
        if (!mk_isa_supported((mk_isa)(isa % MK_ISA_COUNT)))
            continue;
        assert_int_equal(mk_isa_set((mk_isa)(isa % MK_ISA_COUNT)), MK_OK);
        mk_kernels_set_int8(isa >= MK_ISA_COUNT);
        for (int k = 0; k < NW; k++)
            for (int j = 0; j < 5; j++)
                for (int thr = 0; thr < 2; thr++) {
                    const mk_wt *w = &t[k].w;
                    int64_t n = ns[j];
                    for (int64_t i = 0; i < n; i++)
                        mk_matmul(g_pool, w, x + i * w->cols, 1, want + i * w->rows);
                    memset(y, 0xff, sizeof(float) * (size_t)(n * w->rows));
                    mk_matmul_each(thr ? g_pool : NULL, w, x, n, y);
                    if (memcmp(y, want, sizeof(float) * (size_t)(n * w->rows)))
                        fail_msg("mk_matmul_each %s%s weight %d, %lld tokens%s: not bitwise the "
                                 "one-token products", mk_isa_name((mk_isa)(isa % MK_ISA_COUNT)),
                                 isa >= MK_ISA_COUNT ? " int8" : "", k, (long long)n,
                                 thr ? " threaded" : "");
                    if (n == 8 && !thr) {
                        mk_matmul(g_pool, w, x, n, y);
                        tiled_differs |= memcmp(y, want, sizeof(float) * (size_t)(n * w->rows)) != 0;
                    }
                }
    }
    assert_true(tiled_differs); /* else this test could not tell the paths apart */
    /* mk_matmul_each_multi: 150 items (more than one region's 64), pairs
     * sharing x and n (an expert's gate and up: one preparation) and not,
     * 1 to 9 tokens each, the 8192-column ones overflowing the stack area
     * (new regions, long items cut into token groups) */
    enum { NI = 150 };
    mk_mm_item it[NI];
    int64_t yoff[NI + 1];
    yoff[0] = 0;
    for (int i = 0; i < NI; i++) {
        int k = i % 13 == 12 ? 5 : (int)(rnd_u32() % 5);
        int64_t n = 1 + (int64_t)(rnd_u32() % 9);
        const float *xi = x + (int64_t)(rnd_u32() % 8) * BIG;
        if (i % 2 == 1 && it[i - 1].w->cols == t[k].w.cols) { /* share the previous one's x */
            xi = it[i - 1].x;
            n = it[i - 1].n;
        }
        it[i] = (mk_mm_item){&t[k].w, xi, n, NULL};
        yoff[i + 1] = yoff[i] + n * t[k].w.rows;
    }
    float *ym = malloc(sizeof(float) * (size_t)yoff[NI]), *wm = malloc(sizeof(float) * (size_t)yoff[NI]);
    assert_true(ym && wm);
    for (int i = 0; i < NI; i++)
        it[i].y = ym + yoff[i];
    for (int isa = 0; isa < 2 * MK_ISA_COUNT; isa++) {
        if (!mk_isa_supported((mk_isa)(isa % MK_ISA_COUNT)))
            continue;
        assert_int_equal(mk_isa_set((mk_isa)(isa % MK_ISA_COUNT)), MK_OK);
        mk_kernels_set_int8(isa >= MK_ISA_COUNT);
        for (int i = 0; i < NI; i++)
            for (int64_t q = 0; q < it[i].n; q++)
                mk_matmul(g_pool, it[i].w, it[i].x + q * it[i].w->cols, 1, wm + yoff[i] + q * it[i].w->rows);
        for (int thr = 0; thr < 2; thr++) {
            memset(ym, 0xff, sizeof(float) * (size_t)yoff[NI]);
            mk_matmul_each_multi(thr ? g_pool : NULL, it, NI);
            for (int i = 0; i < NI; i++)
                if (memcmp(ym + yoff[i], wm + yoff[i], sizeof(float) * (size_t)(yoff[i + 1] - yoff[i])))
                    fail_msg("mk_matmul_each_multi %s%s%s: item %d (%lld tokens, %lld columns) not "
                             "bitwise the one-token products", mk_isa_name((mk_isa)(isa % MK_ISA_COUNT)),
                             isa >= MK_ISA_COUNT ? " int8" : "", thr ? " threaded" : "", i,
                             (long long)it[i].n, (long long)it[i].w->cols);
        }
    }
    free(ym);
    free(wm);
    mk_kernels_set_int8(false);
    mk_isa_set(g_isa0);
    for (int k = 0; k < NW; k++)
        tw_free(&t[k]);
    free(x);
    free(y);
    free(want);
}

static void test_pool(void **state) {
    assert_int_equal(mk_pool_size(g_pool), 3);
    assert_int_equal(mk_pool_size(NULL), 1);
    static const int64_t ns[] = {1, 2, 7, 100, 1001};
    static const int64_t grains[] = {1, 3, 64};
    atomic_int hits[1001];
    for (int round = 0; round < 50; round++)
        for (size_t i = 0; i < 5; i++)
            for (size_t g = 0; g < 3; g++) {
                cover_ctx c = {.hits = hits, .grain = grains[g], .n = ns[i]};
                for (int64_t k = 0; k < ns[i]; k++)
                    atomic_init(&hits[k], 0);
                atomic_init(&c.short_chunks, 0);
                mk_pool_for(round & 1 ? NULL : g_pool, ns[i], grains[g], cover_fn, &c);
                for (int64_t k = 0; k < ns[i]; k++)
                    assert_int_equal(atomic_load(&hits[k]), 1);
                assert_int_equal(atomic_load(&c.short_chunks), 0);
            }
    cover_ctx c = {.hits = hits, .grain = 1, .n = 1000};
    for (int k = 0; k < 1000; k++)
        atomic_init(&hits[k], 0);
    mk_pool_for(g_pool, 10, 1, nested_fn, &c); /* inner calls touch hits[0..) */
    int total = 0;
    for (int k = 0; k < 1000; k++)
        total += atomic_load(&hits[k]);
    assert_int_equal(total, 10);
    mk_pool *p1 = NULL;
    assert_int_equal(mk_pool_create(1, &p1), MK_OK);
    assert_int_equal(mk_pool_size(p1), 1);
    mk_pool_free(p1);
    mk_pool_free(NULL);
}

static void test_wt_check_errors(void **state) {
    uint32_t d[64] = {0};
    float s[8] = {0};
    mk_wt w = {.fmt = MK_WF_AFFINE,
               .rows = 2,
               .cols = 64,
               .data = d,
               .scales = s,
               .biases = s,
               .sdtype = MK_DT_F32,
               .bits = 4,
               .group = 64};
    assert_int_equal(mk_wt_check(&w, "t"), MK_OK);
    w.bits = 7;
    assert_int_equal(mk_wt_check(&w, "t"), MK_E_UNSUPPORTED);
    w.bits = 4;
    w.group = 48;
    assert_int_equal(mk_wt_check(&w, "t"), MK_E_UNSUPPORTED);
    w.group = 128;
    assert_int_equal(mk_wt_check(&w, "t"), MK_E_MISMATCH);
    assert_non_null(strstr(mk_err_msg(), "t:"));
    w.group = 64;
    w.biases = NULL;
    assert_int_equal(mk_wt_check(&w, "t"), MK_E_ARG);
    w.biases = s;
    w.sdtype = MK_DT_U8;
    assert_int_equal(mk_wt_check(&w, "t"), MK_E_UNSUPPORTED);
    mk_wt m = {.fmt = MK_WF_MXFP4, .rows = 1, .cols = 48, .data = d, .scales = s};
    assert_int_equal(mk_wt_check(&m, "t"), MK_E_MISMATCH);
    mk_wt nv = {.fmt = MK_WF_NVFP4, .rows = 1, .cols = 48, .data = d, .scales = s};
    assert_int_equal(mk_wt_check(&nv, "t"), MK_E_ARG); /* global_scale 0 */
    nv.global_scale = 1.0f;
    assert_int_equal(mk_wt_check(&nv, "t"), MK_OK);
    assert_int_equal(mk_wt_row_bytes(&nv), 24);
    mk_wt f8 = {.fmt = MK_WF_FP8_E4M3, .rows = 1, .cols = 5, .data = d, .scales = s, .sdtype = MK_DT_F32};
    assert_int_equal(mk_wt_check(&f8, "t"), MK_E_ARG); /* block 0 */
    mk_wt bad = {.fmt = MK_WF_COUNT};
    assert_int_equal(mk_wt_check(&bad, "t"), MK_E_UNSUPPORTED);
    assert_int_equal(mk_wt_check(NULL, "t"), MK_E_ARG);
}

/* mk_gemm_f32: one fmaf chain per output over k in order, so every path is
 * bitwise the plain loop written here; shapes with partial 4-row tiles and
 * column counts below, at and past the vector tiles (2 x 8 or 2 x 16),
 * strided operands. */
/* mk_fp_flush_subnormals: inside the scope a subnormal input reads as zero
 * and a subnormal result is written as zero; mk_fp_restore brings the
 * caller's gradual underflow back (x86 and AArch64, the targets that have
 * the flush bits). */
static void test_fp_flush(void **state) {
    (void)state;
    volatile float sub = 0x1p-130f, one = 1.0f, a = 0x1p-100f, b = 0x1p-30f;
    assert_true(sub * one != 0.0f); /* gradual underflow outside */
    assert_true(a * b != 0.0f);
    mk_fpmode m = mk_fp_flush_subnormals();
    float in = sub * one, out = a * b;
    mk_fp_restore(m);
#if defined(__x86_64__) || defined(__i386__) || defined(__aarch64__)
    assert_true(in == 0.0f);
    assert_true(out == 0.0f);
#else
    (void)in;
    (void)out;
#endif
    assert_true(sub * one != 0.0f); /* and back after restore */
    assert_true(a * b == 0x1p-130f);
}

static void test_gemm_f32(void **state) {
    (void)state;
    static const int shapes[][3] = {{1, 1, 1}, {3, 7, 5}, {4, 16, 3}, {5, 32, 48}, {9, 33, 17},
                                    {12, 64, 128}, {7, 70, 1}, {48, 128, 128}, {6, 24, 9}, {5, 48, 12}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int m = shapes[si][0], n = shapes[si][1], k = shapes[si][2];
        const int lda = k + 3, ldb = n + 5, ldc = n + 2;
        float *a = malloc(sizeof(float) * (size_t)(m * lda)), *b = malloc(sizeof(float) * (size_t)(k * ldb));
        float *want = malloc(sizeof(float) * (size_t)(m * ldc)), *got = malloc(sizeof(float) * (size_t)(m * ldc));
        assert_true(a && b && want && got);
        for (int i = 0; i < m * lda; i++)
            a[i] = rnd_f(-1, 1);
        for (int i = 0; i < k * ldb; i++)
            b[i] = rnd_f(-1, 1);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                float acc = 0.0f;
                for (int p = 0; p < k; p++)
                    acc = fmaf(a[i * lda + p], b[p * ldb + j], acc);
                want[i * ldc + j] = acc;
            }
        for (int isa = 0; isa < MK_ISA_COUNT; isa++) {
            if (!mk_isa_supported((mk_isa)isa))
                continue;
            mk_isa_set((mk_isa)isa);
            for (int i = 0; i < m * ldc; i++)
                got[i] = -7.0f;
            mk_gemm_f32(m, n, k, a, lda, b, ldb, got, ldc);
            for (int i = 0; i < m; i++) {
                if (memcmp(got + i * ldc, want + i * ldc, sizeof(float) * (size_t)n))
                    fail_msg("gemm_f32 %dx%dx%d on %s: row %d not the fmaf chain's", m, n, k,
                             mk_isa_name((mk_isa)isa), i);
                for (int j = n; j < ldc; j++)
                    assert_true(got[i * ldc + j] == -7.0f); /* nothing past n written */
            }
        }
        free(a);
        free(b);
        free(want);
        free(got);
    }
    mk_isa_set(g_isa0);
}

static void test_ops(void **state) {
    float x[37], w[37], y[37];
    for (int i = 0; i < 37; i++) {
        x[i] = rnd_f(-2, 2);
        w[i] = rnd_f(-0.5f, 0.5f);
    }
    for (int isa = 0; isa < MK_ISA_COUNT; isa++) {
        if (!mk_isa_supported((mk_isa)isa))
            continue;
        mk_isa_set((mk_isa)isa);
        double ss = 0, dot = 0;
        for (int i = 0; i < 37; i++) {
            ss += (double)x[i] * x[i];
            dot += (double)x[i] * w[i];
        }
        assert_float_equal(mk_dot_f32(x, w, 37), dot, 1e-5);
        double inv = 1.0 / sqrt(ss / 37 + 1e-6);
        for (int zc = 0; zc < 2; zc++) {
            mk_rmsnorm(y, x, w, 37, 1e-6f, zc);
            for (int i = 0; i < 37; i++)
                assert_float_equal(y[i], x[i] * inv * (zc ? 1.0 + w[i] : w[i]), 1e-5);
        }
        memcpy(y, x, sizeof y);
        mk_rmsnorm(y, y, NULL, 37, 1e-6f, false); /* in place */
        for (int i = 0; i < 37; i++)
            assert_float_equal(y[i], x[i] * inv, 1e-5);
        /* axpy: the portable loop's floats exactly, every length and offset */
        for (int n = 0; n <= 35; n++)
            for (int off = 0; off < 2; off++) {
                float ya[37], yb[37];
                for (int i = 0; i < 37; i++)
                    ya[i] = yb[i] = w[i];
                mk_axpy(ya + off, 0.7f, x + 1, n);
                for (int i = 0; i < n; i++) {
                    float p = 0.7f * x[1 + i];
                    yb[off + i] += p;
                }
                assert_memory_equal(ya, yb, sizeof ya);
            }
    }
    mk_isa_set(g_isa0);
    float s[4] = {1, 2, 3, 1000};
    mk_softmax(s, 4);
    assert_float_equal(s[3], 1.0, 1e-6);
    assert_float_equal(s[0] + s[1] + s[2] + s[3], 1.0, 1e-6);
    float a[3] = {0, 1, -1}, g[3] = {0, 1, -1}, u[3] = {5, 2, 3}, o[3];
    mk_silu(a, 3);
    assert_float_equal(a[0], 0, 0);
    assert_float_equal(a[1], 1.0 / (1.0 + exp(-1.0)), 1e-6);
    mk_swiglu(o, g, u, 3);
    assert_float_equal(o[1], 2.0 / (1.0 + exp(-1.0)), 1e-6);
    assert_float_equal(o[2], -3.0 / (1.0 + exp(1.0)), 1e-6);
    mk_sigmoid(g, 3);
    assert_float_equal(g[0], 0.5, 0);
    float v[3] = {1, 2, 3}, d2[3] = {1, 1, 1};
    mk_add(v, d2, 3);
    mk_scale(v, 2, 3);
    mk_axpy(v, -2, d2, 3);
    assert_true(v[0] == 2 && v[1] == 4 && v[2] == 6);
}

/* Whether /proc/cpuinfo's first "flags" line lists `flag` as a whole word
 * (-1: no such file, e.g. not Linux). */
static int cpuinfo_flag(const char *flag) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return -1;
    char line[8192];
    int found = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "flags", 5) && strchr(line, ':')) {
            for (char *tok = strtok(strchr(line, ':') + 1, " \t\n"); tok; tok = strtok(NULL, " \t\n"))
                found |= !strcmp(tok, flag);
            break;
        }
    fclose(f);
    return found;
}

static void test_isa_select(void **state) {
    /* every name parses back to its path; the choices are in order of preference */
    static const char *const names[MK_ISA_COUNT] = {"ref", "avx2", "avxvnni", "avx512", "avx512vnni", "amx"};
    for (int i = 0; i < MK_ISA_COUNT; i++) {
        mk_isa p = MK_ISA_COUNT;
        assert_string_equal(mk_isa_name((mk_isa)i), names[i]);
        assert_int_equal(mk_isa_parse(names[i], &p), MK_OK);
        assert_int_equal(p, i);
    }
    mk_isa p;
    assert_int_equal(mk_isa_parse("avx-vnni", &p), MK_E_ARG);
    for (int i = MK_ISA_COUNT - 1; i > (int)g_isa0; i--)
        assert_false(mk_isa_supported((mk_isa)i)); /* the default is the best supported */
    /* AVX-VNNI comes from a raw CPUID bit (isa.c): where Linux lists the
     * flag, with AVX2 and FMA, the path must be offered (an older kernel
     * may not list it, so only this direction is checked) */
    if (cpuinfo_flag("avx_vnni") == 1 && cpuinfo_flag("avx2") == 1 && cpuinfo_flag("fma") == 1)
        assert_true(mk_isa_supported(MK_ISA_AVXVNNI));
    if (!mk_isa_supported(MK_ISA_AVX2))
        assert_false(mk_isa_supported(MK_ISA_AVXVNNI));
    /* AMX: where Linux lists the tile flags with AVX512-VNNI and grants the
     * tile data (asked here directly: arch_prctl ARCH_REQ_XCOMP_PERM, Linux
     * 5.16+), the path must be offered */
#if defined(__x86_64__) && defined(__linux__)
    if (cpuinfo_flag("amx_tile") == 1 && cpuinfo_flag("amx_int8") == 1 && mk_isa_supported(MK_ISA_AVX512VNNI) &&
        syscall(SYS_arch_prctl, 0x1023, 18) == 0)
        assert_true(mk_isa_supported(MK_ISA_AMX));
#endif
    if (!mk_isa_supported(MK_ISA_AVX512VNNI))
        assert_false(mk_isa_supported(MK_ISA_AMX));
    assert_true(mk_isa_supported(MK_ISA_REF));
    assert_int_equal(mk_isa_set(MK_ISA_REF), MK_OK);
    assert_int_equal(mk_isa_active(), MK_ISA_REF);
    assert_string_equal(mk_isa_name(MK_ISA_AVX512), "avx512");
    if (!mk_isa_supported(MK_ISA_AVX512))
        assert_int_equal(mk_isa_set(MK_ISA_AVX512), MK_E_UNSUPPORTED);
    mk_isa_set(g_isa0);
    printf("kernel paths on this CPU:");
    for (int i = 0; i < MK_ISA_COUNT; i++)
        if (mk_isa_supported((mk_isa)i))
            printf(" %s", mk_isa_name((mk_isa)i));
    printf(" (default %s)\n", mk_isa_name(g_isa0));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dequant_affine4_literal),
        cmocka_unit_test(test_dequant_affine3_straddle),
        cmocka_unit_test(test_dequant_fp8_bytes),
        cmocka_unit_test(test_dequant_fp8_blocks),
        cmocka_unit_test(test_dequant_mxfp4_codes),
        cmocka_unit_test(test_dequant_nvfp4_mxfp8),
        cmocka_unit_test(test_isa_select),
        cmocka_unit_test(test_matmul_float),
        cmocka_unit_test(test_matmul_fp8),
        cmocka_unit_test(test_matmul_affine),
        cmocka_unit_test(test_matmul_affine_nonfinite),
        cmocka_unit_test(test_int8_default),
        cmocka_unit_test(test_matmul_micro),
        cmocka_unit_test(test_decode_row_split),
        cmocka_unit_test(test_matvec_multi),
        cmocka_unit_test(test_matmul_each),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_wt_check_errors),
        cmocka_unit_test(test_ops),
        cmocka_unit_test(test_gemm_f32),
        cmocka_unit_test(test_fp_flush),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
