/* CUDA GEMV (mk_cuda_gemv) against the CPU reference dequantizer.
 *
 * Without a usable GPU (CI, or MK_CUDA=OFF) every device case skips and
 * prints why; the host-side validation cases run whenever moekit was built
 * with CUDA (they touch no device).
 *
 * Each case: random weights in MLX's layout (tests/unit/cuda_test_util.h),
 * random x in [-1, 1], y poisoned with NaN bytes before the launch (every
 * element must be written), reference y_ref[r] = sum_c W[r,c] x[c] in double
 * over mk_wt_dequant_row. Bound, per element:
 *   |y - y_ref| <= 5e-6 * sum_c a_rc |x_c|,
 *   a_rc = |W_rc| + 2|b_rc| (+ 48|s_rc| at 4 bits; cuda_test_util.h says why)
 * (b, s: the affine group bias and scale, 0 for plain formats and FP8,
 * whose chunk term is s * sum(f(q) x) with f exact). Why: the
 * device sums in float32 along paths of depth D <= 12 (four FMA chains of
 * 8, their combination, the scale) + cols/1024 (chunks per lane) + 5 (warp
 * tree) <= 23 for these shapes, so its error is <= 23 * 2^-24 = 1.4e-6 of
 * that sum; the reference's own f32 dequantization (s*q + b, two roundings)
 * adds 1.2e-7: 5e-6 leaves a 3x margin, while one wrong code, scale or
 * index moves an element by about s|x|, more than the bound, and any
 * systematic error (a wrong shift, group or row) by orders of magnitude
 * more. Shapes: odd row counts (a warp does rows in pairs), column counts
 * that leave lanes idle or loop several times, every group size and scale
 * dtype, plain rows that are and are not whole 16-byte chunks, FP8 E4M3
 * with 128x128 and 64x32 scale blocks in every scale dtype, partial blocks
 * at the bottom and right edges, MXFP4 and NVFP4 (every E2M1 code), MXFP8
 * (every finite E4M3 code).
 *
 * With int8 activations (mk_cuda_set_act_int8: affine weights, one token)
 * the device multiplies x as the CPU's quantizer leaves it (q8.c: q d per
 * block of 32), so the reference's x is that (ref_x), under the same
 * bound: the float kernels, off by the quantization (about amax / 254 a
 * value), fail it at these widths, so the check also shows which ran. */
#include "mk_test_util.h"
#include "kernels/kern_impl.h"

#include "cuda_test_util.h"

typedef struct gcase {
    const char *name;
    mk_wfmt fmt;
    int bits, group;
    mk_dtype sd;
    int64_t rows, cols;
    int br, bc; /* FP8: block rows and columns of the scales */
} gcase;

static const gcase g_cases[] = {
    {"affine4 g64 bf16 37x320", MK_WF_AFFINE, 4, 64, MK_DT_BF16, 37, 320, 0, 0},
    {"affine4 g64 bf16 1x2240", MK_WF_AFFINE, 4, 64, MK_DT_BF16, 1, 2240, 0, 0},
    {"affine4 g64 f16 129x2048", MK_WF_AFFINE, 4, 64, MK_DT_F16, 129, 2048, 0, 0},
    {"affine4 g32 f16 129x224", MK_WF_AFFINE, 4, 32, MK_DT_F16, 129, 224, 0, 0},
    {"affine4 g32 bf16 3x5152", MK_WF_AFFINE, 4, 32, MK_DT_BF16, 3, 5152, 0, 0},
    {"affine4 g128 f32 65x768", MK_WF_AFFINE, 4, 128, MK_DT_F32, 65, 768, 0, 0},
    {"affine8 g64 f32 33x448", MK_WF_AFFINE, 8, 64, MK_DT_F32, 33, 448, 0, 0},
    {"affine8 g32 bf16 7x4128", MK_WF_AFFINE, 8, 32, MK_DT_BF16, 7, 4128, 0, 0},
    {"affine8 g64 bf16 255x2048", MK_WF_AFFINE, 8, 64, MK_DT_BF16, 255, 2048, 0, 0},
    {"affine8 g32 f16 1x96", MK_WF_AFFINE, 8, 32, MK_DT_F16, 1, 96, 0, 0},
    {"bf16 37x37 (scalar path)", MK_WF_BF16, 0, 0, MK_DT_BF16, 37, 37, 0, 0},
    {"bf16 65x1000", MK_WF_BF16, 0, 0, MK_DT_BF16, 65, 1000, 0, 0},
    {"bf16 3x2056", MK_WF_BF16, 0, 0, MK_DT_BF16, 3, 2056, 0, 0},
    {"f16 9x72", MK_WF_F16, 0, 0, MK_DT_F16, 9, 72, 0, 0},
    {"f32 9x130 (scalar path)", MK_WF_F32, 0, 0, MK_DT_F32, 9, 130, 0, 0},
    {"f32 17x132", MK_WF_F32, 0, 0, MK_DT_F32, 17, 132, 0, 0},
    {"fp8 e4m3 128x128 f32 300x448", MK_WF_FP8_E4M3, 0, 0, MK_DT_F32, 300, 448, 128, 128},
    {"fp8 e4m3 128x128 bf16 129x2048", MK_WF_FP8_E4M3, 0, 0, MK_DT_BF16, 129, 2048, 128, 128},
    {"fp8 e4m3 64x32 f16 33x96", MK_WF_FP8_E4M3, 0, 0, MK_DT_F16, 33, 96, 64, 32},
    {"fp8 e4m3 128x128 f32 1x7168", MK_WF_FP8_E4M3, 0, 0, MK_DT_F32, 1, 7168, 128, 128},
    {"mxfp4 37x320", MK_WF_MXFP4, 4, 32, MK_DT_U8, 37, 320, 0, 0},
    {"mxfp4 129x2880 (gpt-oss width)", MK_WF_MXFP4, 4, 32, MK_DT_U8, 129, 2880, 0, 0},
    {"mxfp8 37x320", MK_WF_MXFP8, 8, 32, MK_DT_U8, 37, 320, 0, 0},
    {"mxfp8 129x2048", MK_WF_MXFP8, 8, 32, MK_DT_U8, 129, 2048, 0, 0},
    {"nvfp4 33x96", MK_WF_NVFP4, 4, 16, MK_DT_U8, 33, 96, 0, 0},
    {"nvfp4 65x2048", MK_WF_NVFP4, 4, 16, MK_DT_U8, 65, 2048, 0, 0},
};

static ct_wt make(const gcase *c) {
    if (c->fmt == MK_WF_FP8_E4M3)
        return ct_fp8(c->rows, c->cols, c->br, c->bc, c->sd, 1.0f);
    if (c->fmt == MK_WF_MXFP4 || c->fmt == MK_WF_NVFP4)
        return ct_fp4(c->rows, c->cols, c->fmt == MK_WF_NVFP4, 1.0f);
    if (c->fmt == MK_WF_MXFP8)
        return ct_mx8(c->rows, c->cols);
    return c->fmt == MK_WF_AFFINE ? ct_affine(c->rows, c->cols, c->bits, c->group, c->sd, 1.0f)
                                  : ct_plain(c->rows, c->cols, c->fmt, 0.1f);
}

/* The x the device multiplies, in double: x itself, or with int8
 * activations on an affine weight, the CPU's quantized x */
static void ref_x(const mk_wt *w, const float *x, double *xd) {
    const int64_t C = w->cols;
    if (!mk_cuda_act_int8() || w->fmt != MK_WF_AFFINE || C % 32) {
        for (int64_t j = 0; j < C; j++)
            xd[j] = x[j];
        return;
    }
    int8_t *q = malloc((size_t)C);
    float *d = malloc((size_t)(C / 32) * sizeof *d), *qs = malloc((size_t)(C / 32) * sizeof *qs);
    assert_true(q && d && qs);
    mk_q8_quant_blocks(x, C, 32, q, d, qs);
    for (int64_t j = 0; j < C; j++)
        xd[j] = (double)q[j] * (double)d[j / 32];
    free(q);
    free(d);
    free(qs);
}

/* y (device results of W x, plus y0 when given) within the bound of the
 * double reference, row by row; returns the worst |diff| / bound. */
static double check_rows(const char *name, const ct_wt *t, const double *xd, const float *y, const float *y0) {
    const int64_t R = t->w.rows, C = t->w.cols;
    float *row = malloc((size_t)C * sizeof *row);
    assert_non_null(row);
    double worst = 0.0;
    for (int64_t r = 0; r < R; r++) {
        double cond;
        double ref = ct_dot(t, r, xd, row, &cond) + (y0 ? (double)y0[r] : 0.0);
        double bound = 5e-6 * cond + (y0 ? 1e-7 * fabs((double)y0[r]) : 0.0);
        double err = fabs((double)y[r] - ref);
        if (!(err <= bound))
            fail_msg("%s%s: row %lld: device %.9g, reference %.9g, |diff| %.3g > bound %.3g", name,
                     y0 ? " (accumulate)" : "", (long long)r, (double)y[r], ref, err, bound);
        if (bound > 0 && err / bound > worst)
            worst = err / bound;
    }
    free(row);
    return worst;
}

/* Run one case; accumulate: y starts at known values and must get += W x. */
static void run_case(const gcase *c, bool accumulate) {
    ct_wt t = make(c);
    int64_t R = c->rows, C = c->cols;
    float *x = malloc((size_t)C * sizeof *x), *y = malloc((size_t)R * sizeof *y);
    float *y0 = malloc((size_t)R * sizeof *y0);
    double *xd = malloc((size_t)C * sizeof *xd);
    for (int64_t j = 0; j < C; j++)
        x[j] = ct_f(-1.0f, 1.0f);
    ref_x(&t.w, x, xd);
    for (int64_t r = 0; r < R; r++)
        y0[r] = ct_f(-4.0f, 4.0f);
    mk_wt dw;
    void *dx = NULL, *dy = NULL;
    CT_OK(mk_cuda_wt_upload(&t.w, &dw, c->name));
    CT_OK(mk_cuda_malloc(&dx, (size_t)C * sizeof *x, "x"));
    CT_OK(mk_cuda_malloc(&dy, (size_t)R * sizeof *y, "y"));
    CT_OK(mk_cuda_upload(dx, x, (size_t)C * sizeof *x));
    if (accumulate)
        CT_OK(mk_cuda_upload(dy, y0, (size_t)R * sizeof *y));
    else
        CT_OK(mk_cuda_memset(dy, 0xff, (size_t)R * sizeof *y)); /* NaN: every element must be written */
    CT_OK(mk_cuda_gemv(&dw, dx, dy, accumulate, NULL));
    CT_OK(mk_cuda_sync());
    CT_OK(mk_cuda_download(y, dy, (size_t)R * sizeof *y));
    const double worst = check_rows(c->name, &t, xd, y, accumulate ? y0 : NULL);
    printf("  %-28s%s worst |diff|/bound %.3g\n", c->name, accumulate ? " +=" : "   ", worst);
    mk_cuda_wt_free(&dw);
    mk_cuda_free(dx);
    mk_cuda_free(dy);
    free(x);
    free(y);
    free(y0);
    free(xd);
    ct_free(&t);
}

/* mk_cuda_gemv_n (attention's q, k, v sharing x) in the block-scaled and
 * FP4 formats: three weights of one kind and width, each y within the
 * reference's bound and bitwise what mk_cuda_gemv gives that weight (the
 * header's promise); affine for comparison. */
static void test_gemv_n_formats(void **state) {
    CT_NEED_GPU();
    const gcase *kinds[] = {&g_cases[1], &g_cases[2], &g_cases[17], &g_cases[21], &g_cases[23]};
    const int64_t rows[3] = {37, 64, 5};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        const int64_t C = kinds[k]->cols;
        ct_wt t[3];
        mk_wt dw[3];
        const mk_wt *dp[3];
        void *dy[3], *dz[3], *dx;
        float *x = malloc((size_t)C * sizeof *x);
        double *xd = malloc((size_t)C * sizeof *xd);
        assert_true(x && xd);
        for (int64_t j = 0; j < C; j++)
            x[j] = ct_f(-1.0f, 1.0f);
        CT_OK(mk_cuda_malloc(&dx, (size_t)C * sizeof *x, "x"));
        CT_OK(mk_cuda_upload(dx, x, (size_t)C * sizeof *x));
        for (int i = 0; i < 3; i++) {
            gcase c = *kinds[k];
            c.rows = rows[i];
            t[i] = make(&c);
            ref_x(&t[i].w, x, xd);
            CT_OK(mk_cuda_wt_upload(&t[i].w, &dw[i], c.name));
            dp[i] = &dw[i];
            CT_OK(mk_cuda_malloc(&dy[i], (size_t)rows[i] * 4, "y"));
            CT_OK(mk_cuda_malloc(&dz[i], (size_t)rows[i] * 4, "z"));
            CT_OK(mk_cuda_memset(dz[i], 0xff, (size_t)rows[i] * 4));
            CT_OK(mk_cuda_gemv(&dw[i], dx, dy[i], false, NULL));
        }
        CT_OK(mk_cuda_gemv_n(dp, 3, dx, (float *const *)dz, NULL));
        CT_OK(mk_cuda_sync());
        double worst = 0.0;
        for (int i = 0; i < 3; i++) {
            float *y = malloc((size_t)rows[i] * 4), *z = malloc((size_t)rows[i] * 4);
            assert_true(y && z);
            CT_OK(mk_cuda_download(y, dy[i], (size_t)rows[i] * 4));
            CT_OK(mk_cuda_download(z, dz[i], (size_t)rows[i] * 4));
            const double w = check_rows(kinds[k]->name, &t[i], xd, z, NULL);
            worst = w > worst ? w : worst;
            if (memcmp(y, z, (size_t)rows[i] * 4))
                fail_msg("%s: weight %d of gemv_n differs from its gemv", kinds[k]->name, i);
            free(y);
            free(z);
            mk_cuda_wt_free(&dw[i]);
            mk_cuda_free(dy[i]);
            mk_cuda_free(dz[i]);
            ct_free(&t[i]);
        }
        printf("  gemv_n x3 %-24s worst |diff|/bound %.3g, bitwise gemv's\n", kinds[k]->name, worst);
        mk_cuda_free(dx);
        free(x);
        free(xd);
    }
}

/* MXFP4's E8M0 scale bytes at their ends: 0 is 2^-127 (a subnormal float,
 * kept: no flush to zero) and 0xff is NaN, which must reach its row's y and
 * no other row's. */
static void test_fp4_scale_edges(void **state) {
    CT_NEED_GPU();
    const int64_t R = 3, C = 64;
    ct_wt t = ct_fp4(R, C, false, 1.0f);
    uint8_t *sc = (uint8_t *)t.w.scales; /* two blocks of 32 per row */
    sc[0] = 0x00;
    sc[2] = 0xff;
    float x[64], y[3];
    double xd[64];
    for (int j = 0; j < C; j++)
        xd[j] = x[j] = ct_f(-1.0f, 1.0f);
    mk_wt dw;
    void *dx, *dy;
    CT_OK(mk_cuda_wt_upload(&t.w, &dw, "mxfp4 scale edges"));
    CT_OK(mk_cuda_malloc(&dx, sizeof x, "x"));
    CT_OK(mk_cuda_malloc(&dy, sizeof y, "y"));
    CT_OK(mk_cuda_upload(dx, x, sizeof x));
    CT_OK(mk_cuda_gemv(&dw, dx, dy, false, NULL));
    CT_OK(mk_cuda_sync());
    CT_OK(mk_cuda_download(y, dy, sizeof y));
    if (!isnan(y[1]))
        fail_msg("mxfp4: a NaN scale (0xff) gave row 1 y = %.9g, not NaN", (double)y[1]);
    float row[64];
    for (int64_t r = 0; r < R; r += 2) { /* rows 0 (a 2^-127 block) and 2 */
        double cond, ref = ct_dot(&t, r, xd, row, &cond);
        if (!(fabs((double)y[r] - ref) <= 5e-6 * cond))
            fail_msg("mxfp4 scale edges: row %lld: device %.9g, reference %.9g", (long long)r, (double)y[r], ref);
    }
    printf("  mxfp4 E8M0 0x00 and 0xff: rows 0 and 2 within the bound, row 1 NaN\n");
    mk_cuda_wt_free(&dw);
    mk_cuda_free(dx);
    mk_cuda_free(dy);
    ct_free(&t);
}

/* Every case under both kernel generations (mk_cuda_set_kernels), same
 * bound: generation 2 changes the order of the float32 sums, not what
 * they sum. */
static void use_kernels(int gen) {
    assert_int_equal(mk_cuda_set_kernels(gen), MK_OK);
    assert_int_equal(mk_cuda_kernels(), gen);
    printf("kernel generation %d\n", gen);
}

static void test_gemv_formats(void **state) {
    CT_NEED_GPU();
    for (int gen = 1; gen <= 2; gen++) {
        use_kernels(gen);
        for (size_t i = 0; i < sizeof g_cases / sizeof g_cases[0]; i++)
            run_case(&g_cases[i], false);
    }
    use_kernels(1);
}

static void test_gemv_accumulate(void **state) {
    CT_NEED_GPU();
    for (int gen = 1; gen <= 2; gen++) {
        use_kernels(gen);
        run_case(&g_cases[2], true);
        run_case(&g_cases[8], true);
        run_case(&g_cases[11], true);
        run_case(&g_cases[17], true); /* FP8 */
        run_case(&g_cases[21], true); /* MXFP4 */
        run_case(&g_cases[23], true); /* NVFP4 */
    }
    use_kernels(1);
}

/* The staged-weight kernel (mk_cuda_set_gemv_staged, k_gemv_s): every case
 * of the table within the same bound with it on, and each affine row
 * bitwise generation 2's without it (its promise), on the table's affine
 * cases and on an lm_head-like 20000 x 2048 4-bit matrix, whose blocks are
 * capped by shared memory; then gemv_n (q, k, v) the same way. */
static void gemv_once(const mk_wt *dw, void *dx, void *dy, float *y, int64_t R) {
    CT_OK(mk_cuda_memset(dy, 0xff, (size_t)R * 4));
    CT_OK(mk_cuda_gemv(dw, dx, dy, false, NULL));
    CT_OK(mk_cuda_sync());
    CT_OK(mk_cuda_download(y, dy, (size_t)R * 4));
}

static void test_gemv_staged(void **state) {
    CT_NEED_GPU();
    use_kernels(2);
    mk_cuda_set_gemv_staged(true);
    for (size_t i = 0; i < sizeof g_cases / sizeof g_cases[0]; i++)
        run_case(&g_cases[i], false);
    run_case(&g_cases[2], true);
    run_case(&g_cases[8], true);
    const gcase big = {"affine4 g64 bf16 20000x2048", MK_WF_AFFINE, 4, 64, MK_DT_BF16, 20000, 2048, 0, 0};
    int bitwise = 0;
    for (size_t i = 0; i <= sizeof g_cases / sizeof g_cases[0]; i++) {
        const gcase *c = i < sizeof g_cases / sizeof g_cases[0] ? &g_cases[i] : &big;
        if (c->fmt != MK_WF_AFFINE)
            continue;
        ct_wt t = make(c);
        const int64_t R = c->rows, C = c->cols;
        float *x = malloc((size_t)C * 4), *y1 = malloc((size_t)R * 4), *y2 = malloc((size_t)R * 4);
        assert_true(x && y1 && y2);
        for (int64_t j = 0; j < C; j++)
            x[j] = ct_f(-1.0f, 1.0f);
        mk_wt dw;
        void *dx, *dy;
        CT_OK(mk_cuda_wt_upload(&t.w, &dw, c->name));
        CT_OK(mk_cuda_malloc(&dx, (size_t)C * 4, "x"));
        CT_OK(mk_cuda_malloc(&dy, (size_t)R * 4, "y"));
        CT_OK(mk_cuda_upload(dx, x, (size_t)C * 4));
        mk_cuda_set_gemv_staged(false);
        gemv_once(&dw, dx, dy, y1, R);
        mk_cuda_set_gemv_staged(true);
        gemv_once(&dw, dx, dy, y2, R);
        if (memcmp(y1, y2, (size_t)R * 4))
            fail_msg("%s: the staged-weight GEMV differs from generation 2's", c->name);
        bitwise++;
        mk_cuda_wt_free(&dw);
        mk_cuda_free(dx);
        mk_cuda_free(dy);
        free(x);
        free(y1);
        free(y2);
        ct_free(&t);
    }
    printf("  staged weights: %d affine weights bitwise generation 2's\n", bitwise);
    test_gemv_n_formats(state);
    /* gemv_n's matrices agree in kind and width, not always in group (a mixed quantization's q_proj
     * at g64, k_proj at g32): each row within its own bound (the review's finding: the staged kernel
     * strided every matrix's scales by the first one's groups) */
    const gcase mixed[2] = {{"affine4 g64 bf16 96x2048", MK_WF_AFFINE, 4, 64, MK_DT_BF16, 96, 2048, 0, 0},
                            {"affine4 g32 bf16 40x2048", MK_WF_AFFINE, 4, 32, MK_DT_BF16, 40, 2048, 0, 0}};
    ct_wt mt[2];
    mk_wt md[2];
    const mk_wt *mp[2];
    void *my[2], *mx;
    float *x = malloc(2048 * 4);
    double *xd = malloc(2048 * sizeof *xd);
    assert_true(x && xd);
    for (int j = 0; j < 2048; j++)
        xd[j] = x[j] = ct_f(-1.0f, 1.0f);
    CT_OK(mk_cuda_malloc(&mx, 2048 * 4, "x"));
    CT_OK(mk_cuda_upload(mx, x, 2048 * 4));
    for (int i = 0; i < 2; i++) {
        mt[i] = make(&mixed[i]);
        CT_OK(mk_cuda_wt_upload(&mt[i].w, &md[i], mixed[i].name));
        mp[i] = &md[i];
        CT_OK(mk_cuda_malloc(&my[i], (size_t)mixed[i].rows * 4, "y"));
        CT_OK(mk_cuda_memset(my[i], 0xff, (size_t)mixed[i].rows * 4));
    }
    CT_OK(mk_cuda_gemv_n(mp, 2, mx, (float *const *)my, NULL));
    CT_OK(mk_cuda_sync());
    for (int i = 0; i < 2; i++) {
        float *y = malloc((size_t)mixed[i].rows * 4);
        assert_non_null(y);
        CT_OK(mk_cuda_download(y, my[i], (size_t)mixed[i].rows * 4));
        const double w = check_rows(mixed[i].name, &mt[i], xd, y, NULL);
        printf("  gemv_n of mixed groups, %-26s worst |diff|/bound %.3g\n", mixed[i].name, w);
        free(y);
        mk_cuda_wt_free(&md[i]);
        mk_cuda_free(my[i]);
        ct_free(&mt[i]);
    }
    mk_cuda_free(mx);
    free(x);
    free(xd);
    mk_cuda_set_gemv_staged(false);
    use_kernels(1);
}

/* int8 activations (k_gemv_q8): every case of the table under the bound
 * with the reference's x as the device multiplies it (ref_x: quantized for
 * the affine cases, float for the rest, which keep the float kernels),
 * accumulating, gemv_n's rows bitwise gemv's; a NaN in x reaches every row
 * (its block's d is NaN, as on the CPU). The switch is off again after. */
static void test_gemv_act_int8(void **state) {
    CT_NEED_GPU();
    use_kernels(2);
    mk_cuda_set_act_int8(true);
    assert_true(mk_cuda_act_int8());
    printf("int8 activations\n");
    for (size_t i = 0; i < sizeof g_cases / sizeof g_cases[0]; i++)
        run_case(&g_cases[i], false);
    run_case(&g_cases[2], true);
    run_case(&g_cases[8], true);
    test_gemv_n_formats(state);
    /* the rows staged before the wait (k_gemv_q8s, where a wave of blocks holds them all): the
     * same cases under the same bound */
    mk_cuda_set_gemv_staged(true);
    const unsigned long long gq0 = mk_cuda_gemv_staged_launches();
    printf("int8 activations, rows staged\n");
    for (size_t i = 0; i < sizeof g_cases / sizeof g_cases[0]; i++)
        run_case(&g_cases[i], false);
    run_case(&g_cases[2], true);
    test_gemv_n_formats(state);
    assert_true(mk_cuda_gemv_staged_launches() > gq0);
    mk_cuda_set_gemv_staged(false);
    /* a NaN in x: every row NaN */
    const gcase *c = &g_cases[2];
    ct_wt t = make(c);
    const int64_t R = c->rows, C = c->cols;
    float *x = malloc((size_t)C * 4), *y = malloc((size_t)R * 4);
    assert_true(x && y);
    for (int64_t j = 0; j < C; j++)
        x[j] = ct_f(-1.0f, 1.0f);
    x[C - 7] = NAN;
    mk_wt dw;
    void *dx, *dy;
    CT_OK(mk_cuda_wt_upload(&t.w, &dw, c->name));
    CT_OK(mk_cuda_malloc(&dx, (size_t)C * 4, "x"));
    CT_OK(mk_cuda_malloc(&dy, (size_t)R * 4, "y"));
    CT_OK(mk_cuda_upload(dx, x, (size_t)C * 4));
    CT_OK(mk_cuda_memset(dy, 0, (size_t)R * 4)); /* zeros, not NaN: every row must be written NaN */
    CT_OK(mk_cuda_gemv(&dw, dx, dy, false, NULL));
    CT_OK(mk_cuda_sync());
    CT_OK(mk_cuda_download(y, dy, (size_t)R * 4));
    for (int64_t r = 0; r < R; r++)
        if (!isnan(y[r]))
            fail_msg("int8 activations, a NaN in x: row %lld is %.9g, not NaN", (long long)r, (double)y[r]);
    mk_cuda_wt_free(&dw);
    mk_cuda_free(dx);
    mk_cuda_free(dy);
    free(x);
    free(y);
    ct_free(&t);
    mk_cuda_set_act_int8(false);
    use_kernels(1);
}

/* Only generations 1 and 2 exist; anything else is refused and changes
 * nothing (host-side: runs without a GPU when built with CUDA). */
static void test_kernels_switch(void **state) {
#ifndef MK_HAVE_CUDA
    printf("SKIP %s: moekit was built without CUDA (MK_CUDA=OFF)\n", __func__);
    skip();
#else
    assert_int_equal(mk_cuda_set_kernels(2), MK_OK);
    assert_int_equal(mk_cuda_set_kernels(3), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "found 3"));
    assert_int_equal(mk_cuda_set_kernels(0), MK_E_ARG);
    assert_int_equal(mk_cuda_kernels(), 2);
    assert_int_equal(mk_cuda_set_kernels(1), MK_OK);
    assert_int_equal(mk_cuda_kernels(), 1);
#endif
}

/* The device's int8 activations follow the engine's setting
 * (mk_kernels_int8_setting: on by default and when forced on, off when
 * forced off, whatever CPU kernel path is active) until
 * mk_cuda_set_act_int8 forces them; mk_cuda_reset_act_int8 follows again
 * (host-side: runs without a GPU when built with CUDA). The other cases
 * force float (main) and the int8 case forces int8. */
static void test_act_int8_default(void **state) {
#ifndef MK_HAVE_CUDA
    printf("SKIP %s: moekit was built without CUDA (MK_CUDA=OFF)\n", __func__);
    skip();
#else
    const int k0 = mk_kernels_int8_setting();
    mk_cuda_reset_act_int8();
    mk_kernels_reset_int8();
    assert_true(mk_cuda_act_int8());
    const mk_isa isa = mk_isa_active();
    if (mk_isa_set(MK_ISA_REF) == MK_OK) { /* ref's CPU default is float; the device's stays int8 */
        assert_false(mk_kernels_int8());
        assert_true(mk_cuda_act_int8());
        assert_int_equal(mk_isa_set(isa), MK_OK);
    }
    mk_kernels_set_int8(false);
    assert_false(mk_cuda_act_int8());
    mk_kernels_set_int8(true);
    assert_true(mk_cuda_act_int8());
    mk_cuda_set_act_int8(false);
    assert_false(mk_cuda_act_int8());
    mk_kernels_set_int8(false);
    mk_cuda_set_act_int8(true);
    assert_true(mk_cuda_act_int8());
    mk_cuda_reset_act_int8();
    assert_false(mk_cuda_act_int8());
    assert_int_equal(mk_cuda_act_int8_setting(), -1);
    mk_cuda_set_act_int8(true);
    assert_int_equal(mk_cuda_act_int8_setting(), 1);
    mk_cuda_restore_act_int8(-1); /* put back as following, not forced */
    assert_int_equal(mk_cuda_act_int8_setting(), -1);
    assert_false(mk_cuda_act_int8());
    mk_kernels_restore_int8(k0);
    mk_cuda_set_act_int8(false);
#endif
}

/* Formats the kernels do not take are refused by name, before any device
 * work (host-side: runs without a GPU when built with CUDA). */
static void test_unsupported_named(void **state) {
#ifndef MK_HAVE_CUDA
    printf("SKIP %s: moekit was built without CUDA (MK_CUDA=OFF)\n", __func__);
    skip();
#else
    ct_wt t = ct_affine(4, 64, 4, 64, MK_DT_BF16, 1.0f);
    mk_wt dw;
    t.w.bits = 3;
    t.w.cols = 64;
    assert_int_equal(mk_cuda_wt_upload(&t.w, &dw, "layers.0.mlp.experts.gate_proj"), MK_E_UNSUPPORTED);
    assert_non_null(strstr(mk_err_msg(), "layers.0.mlp.experts.gate_proj"));
    assert_non_null(strstr(mk_err_msg(), "bits 3"));
    assert_false(mk_cuda_wt_supported(&t.w));
    t.w.bits = 4;
    assert_true(mk_cuda_wt_supported(&t.w));
    t.w.fmt = MK_WF_FP8_E4M3; /* an affine weight's buffers, no block size */
    assert_false(mk_cuda_wt_supported(&t.w));
    ct_free(&t);
    /* FP8 E4M3: with block scales whose columns are whole 16-byte chunks */
    t = ct_fp8(4, 64, 128, 128, MK_DT_F32, 1.0f);
    assert_true(mk_cuda_wt_supported(&t.w));
    t.w.block_c = 8; /* a chunk would straddle two column blocks */
    assert_false(mk_cuda_wt_supported(&t.w));
    assert_int_equal(mk_cuda_wt_upload(&t.w, &dw, "layers.1.mlp.experts.0.up_proj"), MK_E_UNSUPPORTED);
    assert_non_null(strstr(mk_err_msg(), "layers.1.mlp.experts.0.up_proj"));
    assert_non_null(strstr(mk_err_msg(), "FP8 E4M3"));
    t.w.block_c = 128;
    t.w.fmt = MK_WF_FP8_E5M2;
    assert_false(mk_cuda_wt_supported(&t.w));
    t.w.fmt = MK_WF_FP8_E4M3;
    const void *sc = t.w.scales;
    t.w.scales = NULL; /* unscaled FP8: the generic kernel's */
    assert_false(mk_cuda_wt_supported(&t.w));
    t.w.scales = sc;
    ct_free(&t);
    /* MXFP4 / NVFP4: with their scales */
    t = ct_fp4(4, 64, false, 1.0f);
    assert_true(mk_cuda_wt_supported(&t.w));
    ct_free(&t);
    t = ct_fp4(4, 64, true, 1.0f);
    assert_true(mk_cuda_wt_supported(&t.w));
    t.w.global_scale = 0.0f;
    assert_false(mk_cuda_wt_supported(&t.w));
    ct_free(&t);
    /* MXFP8: with its scales, 16 codes a chunk under one scale of 32 */
    t = ct_mx8(4, 64);
    assert_true(mk_cuda_wt_supported(&t.w));
    const void *s8 = t.w.scales;
    t.w.scales = NULL;
    assert_false(mk_cuda_wt_supported(&t.w));
    t.w.scales = s8;
    ct_free(&t);
#endif
}

int main(void) {
    /* the float kernels unless a case says otherwise (test_act_int8_default checks the default), and
     * the register kernels (the staged ones, on by default since session 34, have their own cases) */
    mk_cuda_set_act_int8(false);
    mk_cuda_set_gemv_staged(false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unsupported_named),
        cmocka_unit_test(test_kernels_switch),
        cmocka_unit_test(test_act_int8_default),
        cmocka_unit_test(test_gemv_formats),
        cmocka_unit_test(test_gemv_accumulate),
        cmocka_unit_test(test_gemv_n_formats),
        cmocka_unit_test(test_fp4_scale_edges),
        cmocka_unit_test(test_gemv_staged),
        cmocka_unit_test(test_gemv_act_int8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
