/* Quantizer against independent vectors: tests/data/quant/ holds inputs and
 * the expected packed words, scales, biases and dequantized values written
 * by tests/gen/gen_quant_vectors.py (pure Python from FORMATS.md and MLX's
 * algorithm, not from this C code). Every byte must match, on both copies
 * of the affine kernel (AVX2 and baseline). Also FORMATS.md's worked
 * example as a literal. */
#include "mk_test_util.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moekit/isa.h"
#include "moekit/quant.h"
#include "quant/quant_impl.h"

typedef struct vcase {
    const char *name;
    mk_qparams p;
    mk_dtype dt;
    int64_t rows, cols;
    json_t *kinds;
    const unsigned char *blob;
    size_t blob_len;
    json_t *sections;
} vcase;

/* Section `key` of the case, or NULL (len 0) when absent. */
static const unsigned char *section(const vcase *c, const char *key, size_t *len) {
    json_t *s = json_object_get(c->sections, key);
    if (!s) {
        *len = 0;
        return NULL;
    }
    size_t off = (size_t)json_integer_value(json_array_get(s, 0));
    *len = (size_t)json_integer_value(json_array_get(s, 1));
    assert_true(off + *len <= c->blob_len);
    return c->blob + off;
}

/* Compare n bytes grouped in elements of es bytes; report the first
 * mismatches with their row (and its pattern name). Returns mismatches. */
static int compare(const vcase *c, const char *what, const unsigned char *got, const unsigned char *want,
                   size_t n, size_t es, size_t row_elems) {
    int bad = 0;
    for (size_t i = 0; i < n / es; i++) {
        if (memcmp(got + i * es, want + i * es, es) == 0)
            continue;
        if (es == 4 && strncmp(what, "deq", 3) == 0) { /* NaN == NaN for values */
            float a, b;
            memcpy(&a, got + i * es, 4);
            memcpy(&b, want + i * es, 4);
            if (isnan(a) && isnan(b))
                continue;
        }
        if (bad < 5) {
            size_t row = i / row_elems;
            uint32_t g = 0, w = 0;
            memcpy(&g, got + i * es, es);
            memcpy(&w, want + i * es, es);
            fprintf(stderr, "%s %s: element %zu (row %zu '%s', col %zu): got 0x%0*x want 0x%0*x\n", c->name,
                    what, i, row, json_string_value(json_array_get(c->kinds, row)), i % row_elems,
                    (int)es * 2, g, (int)es * 2, w);
        }
        bad++;
    }
    return bad;
}

static size_t dt_size(mk_dtype t) {
    return t == MK_DT_F32 ? 4 : 2;
}

/* Quantize the case's input and compare every output byte. */
static int check_quantize(const vcase *c) {
    size_t in_len, wq_len, s_len, b_len;
    const unsigned char *in = section(c, "input", &in_len);
    const unsigned char *wq = section(c, "wq", &wq_len);
    const unsigned char *sc = section(c, "scales", &s_len);
    const unsigned char *bi = section(c, "biases", &b_len);
    mk_quant_layout l;
    assert_int_equal(mk_quant_layout_of(&c->p, c->dt, c->cols, &l), MK_OK);
    assert_int_equal(wq_len, l.wq_row_bytes * (size_t)c->rows);
    assert_int_equal(s_len, l.scale_row_bytes * (size_t)c->rows);
    assert_int_equal(b_len, l.bias_row_bytes * (size_t)c->rows);
    unsigned char *gw = malloc(wq_len), *gs = malloc(s_len), *gb = malloc(b_len + 1);
    assert_int_equal(mk_quant_rows(&c->p, c->dt, in, c->rows, c->cols, gw, gs, gb), MK_OK);
    size_t ses = l.scale_dt == MK_DT_U8 ? 1 : dt_size(l.scale_dt);
    int bad = compare(c, "wq", gw, wq, wq_len, 4, (size_t)l.wq_cols);
    bad += compare(c, "scales", gs, sc, s_len, ses, (size_t)l.groups);
    if (b_len)
        bad += compare(c, "biases", gb, bi, b_len, ses, (size_t)l.groups);
    free(gw), free(gs), free(gb);
    return bad;
}

/* Dequantize the expected quantized arrays to float32 and to the input dtype. */
static int check_dequantize(const vcase *c) {
    size_t n, wq_len, s_len, b_len, d32_len, dt_len;
    const unsigned char *wq = section(c, "wq", &wq_len);
    const unsigned char *sc = section(c, "scales", &s_len);
    const unsigned char *bi = section(c, "biases", &b_len);
    const unsigned char *d32 = section(c, "deq_f32", &d32_len);
    const unsigned char *dt = section(c, "deq_t", &dt_len);
    mk_dtype sdt = mk_quant_info(c->p.mode)->has_biases ? c->dt : MK_DT_U8;
    n = (size_t)(c->rows * c->cols);
    assert_int_equal(d32_len, n * 4);
    unsigned char *out = malloc(n * 4);
    assert_int_equal(mk_dequant_rows(&c->p, sdt, wq, sc, bi, c->rows, c->cols, MK_DT_F32, out), MK_OK);
    int bad = compare(c, "deq_f32", out, d32, n * 4, 4, (size_t)c->cols);
    if (dt) {
        assert_int_equal(dt_len, n * dt_size(c->dt));
        assert_int_equal(mk_dequant_rows(&c->p, sdt, wq, sc, bi, c->rows, c->cols, c->dt, out), MK_OK);
        bad += compare(c, "deq_t", out, dt, dt_len, dt_size(c->dt), (size_t)c->cols);
    }
    free(out);
    return bad;
}

/* The error helper against sums taken here from the expected values. */
static void check_error(const vcase *c) {
    size_t in_len, wq_len, s_len, b_len, d32_len;
    const unsigned char *in = section(c, "input", &in_len);
    const unsigned char *wq = section(c, "wq", &wq_len);
    const unsigned char *sc = section(c, "scales", &s_len);
    const unsigned char *bi = section(c, "biases", &b_len);
    const unsigned char *d32 = section(c, "deq_f32", &d32_len);
    double err2 = 0, ref2 = 0;
    for (int64_t i = 0; i < c->rows * c->cols; i++) {
        float w = mk_q_load(c->dt, in, i), d;
        memcpy(&d, d32 + 4 * i, 4);
        err2 += ((double)w - d) * ((double)w - d);
        ref2 += (double)w * w;
    }
    mk_quant_err acc = {0};
    assert_int_equal(mk_quant_err_rows(&c->p, c->dt, in, wq, sc, bi, c->rows, c->cols, &acc), MK_OK);
    assert_true(acc.n == (uint64_t)(c->rows * c->cols));
    if (isfinite(err2) && isfinite(acc.err2))
        assert_true(fabs(acc.err2 - err2) <= 1e-9 * err2 + 1e-300);
    assert_true(fabs(acc.ref2 - ref2) <= 1e-12 * ref2);
}

static void test_vectors(void **state) {
    (void)state;
    const char *src = getenv("MK_SRC");
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/tests/data/quant", src ? src : ".");
    snprintf(path, sizeof path, "%s/index.json", dir);
    json_error_t jerr;
    json_t *idx = json_load_file(path, 0, &jerr);
    if (!idx)
        fail_msg("%s: %s", path, jerr.text);
    json_t *cases = json_object_get(idx, "cases");
    assert_true(json_array_size(cases) >= 66);
    int bad = 0, n_affine = 0, n_fp = 0;
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *j = json_array_get(cases, i);
        vcase c = {0};
        c.name = json_string_value(json_object_get(j, "name"));
        mk_qmode mode;
        assert_true(mk_qmode_parse(json_string_value(json_object_get(j, "mode")), &mode));
        assert_int_equal(mk_quant_params(mode, (int)json_integer_value(json_object_get(j, "bits")),
                                         (int)json_integer_value(json_object_get(j, "group")),
                                         (float)json_real_value(json_object_get(j, "global_scale")), &c.p),
                         MK_OK);
        c.dt = mk_dtype_parse(json_string_value(json_object_get(j, "dtype")));
        c.rows = json_integer_value(json_object_get(j, "rows"));
        c.cols = json_integer_value(json_object_get(j, "cols"));
        c.kinds = json_object_get(j, "row_kinds");
        c.sections = json_object_get(j, "sections");
        snprintf(path, sizeof path, "%s/%s", dir, json_string_value(json_object_get(j, "file")));
        size_t len;
        unsigned char *blob = mk_test_slurp(path, &len);
        assert_non_null(blob);
        c.blob = blob;
        c.blob_len = len;
        mode == MK_QMODE_AFFINE ? n_affine++ : n_fp++;
        mk_isa best = mk_isa_active();
        for (int base = 0; base < 2; base++) { /* both copies of the affine kernel */
            mk_isa_set(base ? MK_ISA_REF : best);
            bad += check_quantize(&c);
        }
        mk_isa_set(best);
        bad += check_dequantize(&c);
        check_error(&c);
        free(blob);
    }
    assert_int_equal(n_affine, 54);
    assert_true(n_fp >= 12);
    json_decref(idx);
    assert_int_equal(bad, 0);
}

/* FORMATS.md section 2's example: 4-bit group with min -1 and max 1.
 * s0 = 2/15 = 0.13333334f; |min| == |max| so the scale is negative and the
 * edge is max = 1: 1 / -0.13333334f = -7.4999995f, rint -> -7, so the scale
 * becomes 1 / -7 = -0.14285715f (not -0.125) and the bias 1. */
static void test_formats_example(void **state) {
    (void)state;
    float s0 = (1.0f - -1.0f) / 15.0f;
    assert_true(s0 == 0.13333334f);
    assert_true(1.0f / -s0 == -7.4999995f);
    float w[32];
    for (int j = 0; j < 32; j++)
        w[j] = (float)(j % 9) / 4.0f - 1.0f; /* -1, -0.75, ..., 1 */
    mk_qparams p;
    assert_int_equal(mk_quant_params(MK_QMODE_AFFINE, 4, 32, 0, &p), MK_OK);
    uint32_t wq[4];
    float s, b;
    assert_int_equal(mk_quant_rows(&p, MK_DT_F32, w, 1, 32, wq, &s, &b), MK_OK);
    assert_true(s == 1.0f / -7.0f);
    assert_true(s == -0.14285715f);
    assert_true(b == 1.0f);
    /* q = rint(float32((w - 1) / (-1/7))): -1 -> 13.999999 -> 14,
     * -0.75 -> 12.249999 -> 12, -0.5 -> 10.5 exactly -> 10 (half to even),
     * -0.25 -> 8.75 -> 9, 0 -> 6.9999995 -> 7, 0.25 -> 5.25 -> 5,
     * 0.5 -> 3.4999998 -> 3, 0.75 -> 1.7499999 -> 2, 1 -> -0 -> 0.
     * Eight 4-bit codes per word, element 0 in the low nibble. */
    static const uint32_t per9[9] = {14, 12, 10, 9, 7, 5, 3, 2, 0};
    static const uint32_t want[4] = {0x23579ace, 0x3579ace0, 0x579ace02, 0x79ace023};
    uint32_t codes[32];
    mk_q_unpack((const unsigned char *)wq, 32, 4, codes);
    for (int j = 0; j < 32; j++)
        assert_int_equal(codes[j], per9[j % 9]);
    for (int i = 0; i < 4; i++)
        assert_int_equal(wq[i], want[i]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_formats_example),
        cmocka_unit_test(test_vectors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
