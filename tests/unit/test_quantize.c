/* moekit quantize end to end on bare safetensors files: the CLI's output
 * bytes against mk_quant_rows computed here (the library itself is checked
 * against independent vectors in test_quant_vectors.c), for bf16, f16 and
 * f32 tensors (2-D and 3-D, one chunked across threads under a small
 * --max-memory), every affine width x group and the three fp modes; the
 * naming rule (X.weight -> X.weight/.scales/.biases, N -> N/N.scales/
 * N.biases); tensors the rule leaves alone byte-identical; overrides and
 * their config entries. Which part of a module is computed first depends on
 * the writer's order (alignment, then name): "X.weight" U32 before bf16
 * scales, but "X.biases" before "X.weight" when the scales are f32; both
 * orders are here, so parts copied from the spill file are checked too.
 *
 * The values include what MLX's rule treats specially: all-negative groups
 * (positive scale), constant groups, exact zeros and outliers. */
#include "mk_test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moekit/config.h"
#include "moekit/quant.h"
#include "moekit/st.h"

typedef struct tdef {
    const char *name;
    mk_dtype dt;
    int ndim;
    int64_t shape[3];
    bool quant; /* for every mode/group this test runs */
} tdef;

static const tdef g_t[] = {
    {"a.weight", MK_DT_BF16, 2, {64, 256}, true},
    {"b.weight", MK_DT_F16, 3, {3, 16, 128}, true},
    {"c", MK_DT_F32, 2, {40, 384}, true},
    {"h.weight", MK_DT_F32, 2, {24, 256}, true}, /* f32 scales: h.biases is written first, h.weight spilled */
    {"big.weight", MK_DT_BF16, 2, {600, 1024}, true}, /* chunked under --max-memory 32M */
    {"d.weight", MK_DT_BF16, 2, {16, 100}, false},    /* no group divides 100 */
    {"e.bias", MK_DT_F32, 1, {128}, false},           /* 1-D */
    {"f", MK_DT_I32, 2, {10, 64}, false},             /* not float */
    {"g.weight", MK_DT_F64, 2, {4, 64}, false},       /* no F64 quantizer */
};
#define NT (sizeof g_t / sizeof g_t[0])

static char *g_tmp, *g_src;
static void *g_data[NT];
static size_t g_bytes[NT];

static uint64_t rng(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

/* Roughly normal values with the special groups planted row by row. */
static void fill(float *v, int64_t rows, int64_t cols, uint64_t seed) {
    uint64_t s = seed * 7919 + 1;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            double u = 0;
            for (int k = 0; k < 4; k++)
                u += (double)(rng(&s) >> 11) / 9007199254740992.0;
            float x = (float)((u - 2.0) * 0.05);
            switch (r % 6) {
            case 1: x = -fabsf(x) - 0.01f; break; /* all-negative */
            case 2: x = 0.125f; break;            /* constant */
            case 3: x = (c % 3) ? 0.0f : x; break; /* exact zeros */
            case 4: x = (c % 37 == 5) ? x * 40.0f : x; break; /* outliers */
            default: break;
            }
            v[r * cols + c] = x;
        }
}

static uint64_t numel(const tdef *t) {
    uint64_t n = 1;
    for (int d = 0; d < t->ndim; d++)
        n *= (uint64_t)t->shape[d];
    return n;
}

static int setup(void **state) {
    (void)state;
    g_tmp = mk_test_tmpdir("quantize");
    if (!g_tmp)
        return -1;
    g_src = malloc(strlen(g_tmp) + 32);
    sprintf(g_src, "%s/src.safetensors", g_tmp);
    mk_stw_opts so = {.force = true, .basename = "src"};
    mk_stw *w = NULL;
    if (mk_stw_create(g_tmp, &so, &w) != MK_OK)
        return -1;
    for (size_t i = 0; i < NT; i++) {
        const tdef *t = &g_t[i];
        uint64_t n = numel(t);
        float *v = malloc(n * sizeof *v);
        fill(v, (int64_t)(n / (uint64_t)t->shape[t->ndim - 1]), t->shape[t->ndim - 1], i);
        g_bytes[i] = (size_t)(n * mk_dtype_info(t->dt)->bits / 8);
        g_data[i] = malloc(g_bytes[i]);
        if (t->dt == MK_DT_I32) {
            for (uint64_t k = 0; k < n; k++)
                ((int32_t *)g_data[i])[k] = (int32_t)(v[k] * 1000);
        } else if (t->dt == MK_DT_F64) {
            for (uint64_t k = 0; k < n; k++)
                ((double *)g_data[i])[k] = v[k];
        } else {
            mk_dtype_from_f32(t->dt, v, g_data[i], (size_t)n);
        }
        free(v);
        if (mk_stw_add(w, t->name, t->dt, t->ndim, t->shape) != MK_OK)
            return -1;
    }
    if (mk_stw_begin_data(w) != MK_OK)
        return -1;
    for (size_t k = 0; k < mk_stw_count(w); k++)
        for (size_t i = 0; i < NT; i++)
            if (strcmp(mk_stw_name(w, k), g_t[i].name) == 0 && mk_stw_write(w, g_data[i], g_bytes[i]) != MK_OK)
                return -1;
    mk_status s = mk_stw_finish(w);
    mk_stw_free(w);
    return s == MK_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    mk_test_rmrf(g_tmp);
    for (size_t i = 0; i < NT; i++)
        free(g_data[i]);
    free(g_src);
    free(g_tmp);
    return 0;
}

/* Run the CLI; returns its exit status. */
static int run_cli(const char *dst, const char *args) {
    const char *bin = getenv("MK_BIN");
    if (!bin)
        return -1;
    /* a budget a few MiB above what the process holds at start, so that
     * big.weight is cut into chunks: 32M over the optimized build's 19 MiB;
     * the sanitizer build starts at 32 MiB (an 18 MB binary plus ASan's
     * shadow; it crossed 32M this session as the code grew), so it gets
     * 40M, 8 MiB over its own start, tighter than the optimized build's 13 */
    const char *small = getenv("MK_TEST_SMALL");
    const char *mm = small && !strcmp(small, "1") ? "40M" : "32M";
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' quantize '%s' '%s' --force --quiet --threads 2 --max-memory %s %s > /dev/null",
             bin, g_src, dst, mm, args);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void *read_tensor(const mk_ckpt *ck, const char *name, mk_dtype dt, int ndim, const int64_t *shape) {
    const mk_tensor_info *t = mk_ckpt_find(ck, name);
    if (!t)
        fail_msg("output lacks '%s'", name);
    assert_int_equal(t->dtype, dt);
    assert_int_equal(t->ndim, ndim);
    for (int d = 0; d < ndim; d++)
        assert_int_equal(t->shape[d], shape[d]);
    void *b = malloc(t->nbytes ? (size_t)t->nbytes : 1);
    assert_int_equal(mk_ckpt_read(ck, t, 0, b, (size_t)t->nbytes), MK_OK);
    return b;
}

/* Output tensor `name` must hold exactly `want` (n bytes). */
static void expect_bytes(const mk_ckpt *ck, const char *name, mk_dtype dt, int ndim, const int64_t *shape,
                         const void *want, size_t n) {
    void *got = read_tensor(ck, name, dt, ndim, shape);
    if (memcmp(got, want, n) != 0) {
        size_t k = 0;
        while (((const unsigned char *)got)[k] == ((const unsigned char *)want)[k])
            k++;
        fail_msg("'%s': byte %zu differs from mk_quant_rows", name, k);
    }
    free(got);
}

/* Tensor i quantized with (mode, bits, group): names, shapes, bytes. */
static void check_quantized(const mk_ckpt *ck, size_t i, mk_qmode mode, int bits, int group) {
    const tdef *t = &g_t[i];
    mk_qparams qp;
    assert_int_equal(mk_quant_params(mode, bits, group, 0.0f, &qp), MK_OK);
    int64_t cols = t->shape[t->ndim - 1], rows = (int64_t)(numel(t) / (uint64_t)cols);
    uint64_t wb, sb, bb;
    assert_int_equal(mk_quant_out_bytes(&qp, t->dt, rows, cols, &wb, &sb, &bb), MK_OK);
    void *wq = malloc(wb), *sc = malloc(sb), *bi = malloc(bb ? bb : 1);
    assert_int_equal(mk_quant_rows(&qp, t->dt, g_data[i], rows, cols, wq, sc, bi), MK_OK);
    mk_quant_layout l;
    assert_int_equal(mk_quant_layout_of(&qp, t->dt, cols, &l), MK_OK);
    char wn[64], sn[64], bn[64];
    size_t base = strlen(t->name) - (strstr(t->name, ".weight") ? 7 : 0);
    snprintf(wn, sizeof wn, "%s", t->name); /* X.weight stays X.weight; N stays N */
    snprintf(sn, sizeof sn, "%.*s.scales", (int)base, t->name);
    snprintf(bn, sizeof bn, "%.*s.biases", (int)base, t->name);
    int64_t ws[3], ss[3];
    memcpy(ws, t->shape, sizeof ws);
    memcpy(ss, t->shape, sizeof ss);
    ws[t->ndim - 1] = l.wq_cols;
    ss[t->ndim - 1] = l.groups;
    expect_bytes(ck, wn, MK_DT_U32, t->ndim, ws, wq, (size_t)wb);
    expect_bytes(ck, sn, l.scale_dt, t->ndim, ss, sc, (size_t)sb);
    if (l.bias_row_bytes)
        expect_bytes(ck, bn, l.scale_dt, t->ndim, ss, bi, (size_t)bb);
    else
        assert_null(mk_ckpt_find(ck, bn));
    free(wq);
    free(sc);
    free(bi);
}

static void check_untouched(const mk_ckpt *ck, size_t i) {
    const tdef *t = &g_t[i];
    expect_bytes(ck, t->name, t->dt, t->ndim, t->shape, g_data[i], g_bytes[i]);
    char sn[64];
    snprintf(sn, sizeof sn, "%.*s.scales", (int)(strlen(t->name) - (strstr(t->name, ".weight") ? 7 : 0)), t->name);
    assert_null(mk_ckpt_find(ck, sn));
}

/* One CLI run with `args`, every tensor checked; `q_of` (or NULL: g_t)
 * says per tensor: 1 quantized with (mode, bits, group), 0 left alone,
 * 2 checked by the caller. */
static void run_and_check(const char *args, mk_qmode mode, int bits, int group, const int *q_of) {
    char dst[4200];
    snprintf(dst, sizeof dst, "%s/out", g_tmp);
    int rc = run_cli(dst, args);
    if (rc == -1)
        skip();
    if (rc != 0)
        fail_msg("quantize %s exited %d", args, rc);
    mk_ckpt *ck = NULL;
    assert_int_equal(mk_ckpt_open(dst, 0, &ck), MK_OK);
    for (size_t i = 0; i < NT; i++) {
        int how = q_of ? q_of[i] : g_t[i].quant;
        if (how == 1)
            check_quantized(ck, i, mode, bits, group);
        else if (how == 0)
            check_untouched(ck, i);
    }
    mk_ckpt_close(ck);
    mk_config cfg;
    assert_int_equal(mk_config_load(dst, &cfg), MK_OK);
    assert_int_equal(cfg.quant.method, MK_QM_MLX);
    assert_int_equal(cfg.quant.bits, bits);
    assert_int_equal(cfg.quant.group_size, group);
    assert_int_equal(cfg.quant.mode, mode);
    mk_config_free(&cfg);
}

static void test_affine_every_width_and_group(void **state) {
    (void)state;
    static const int bits[] = {2, 3, 4, 5, 6, 8}, groups[] = {32, 64, 128};
    for (size_t b = 0; b < 6; b++)
        for (size_t g = 0; g < 3; g++) {
            char args[96];
            snprintf(args, sizeof args, "--bits %d --group-size %d", bits[b], groups[g]);
            run_and_check(args, MK_QMODE_AFFINE, bits[b], groups[g], NULL);
        }
}

static void test_fp_modes(void **state) {
    (void)state;
    run_and_check("--mode mxfp4", MK_QMODE_MXFP4, 4, 32, NULL);
    run_and_check("--mode mxfp8", MK_QMODE_MXFP8, 8, 32, NULL);
    run_and_check("--mode nvfp4", MK_QMODE_NVFP4, 4, 16, NULL);
}

/* Overrides: c at 8-bit g32 (with its config entry), a kept in float. */
static void test_overrides(void **state) {
    (void)state;
    int q_of[NT];
    for (size_t i = 0; i < NT; i++)
        q_of[i] = strcmp(g_t[i].name, "c") == 0 ? 2 : g_t[i].quant && strcmp(g_t[i].name, "a.weight") != 0;
    run_and_check("--override '^c$=8:32' --override '^a=float'", MK_QMODE_AFFINE, 4, 64, q_of);
    char dst[4200];
    snprintf(dst, sizeof dst, "%s/out", g_tmp);
    mk_ckpt *ck = NULL;
    assert_int_equal(mk_ckpt_open(dst, 0, &ck), MK_OK);
    check_quantized(ck, 2, MK_QMODE_AFFINE, 8, 32);
    mk_ckpt_close(ck);
    mk_config cfg;
    assert_int_equal(mk_config_load(dst, &cfg), MK_OK);
    int b = 0, g = 0;
    mk_qmode m;
    assert_true(mk_qcfg_lookup(&cfg.quant, "c", true, &b, &g, &m));
    assert_int_equal(b, 8);
    assert_int_equal(g, 32);
    assert_true(mk_qcfg_lookup(&cfg.quant, "big", true, &b, &g, &m));
    assert_int_equal(b, 4);
    assert_int_equal(g, 64);
    mk_config_free(&cfg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_affine_every_width_and_group),
        cmocka_unit_test(test_fp_modes),
        cmocka_unit_test(test_overrides),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
