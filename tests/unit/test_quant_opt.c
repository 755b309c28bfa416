/* Calibrated affine quantization (moekit/quant_opt.h) on a synthetic layer
 * whose inputs are known: X (n tokens x cols) has strongly correlated
 * channels of very different scales (a few shared factors plus noise), H =
 * X^T X / n computed here in double, W random. Scored by the layer-output
 * error ||X W^T - X Wq^T||_F with Wq dequantized by mk_dequant_rows (the
 * plain MLX reader, independent of the code under test):
 *   - the factor: U^T U (H + damp) = I within float rounding;
 *   - gptq, gptq-mse and gptq-act cut the output error well below MLX's RTN (a
 *     broken error propagation -- wrong sign, wrong row of U, no update --
 *     leaves gptq at or above RTN: the bar is half of RTN's error);
 *   - mse never has a larger H-diagonal-weighted weight error than RTN in
 *     any row (MLX's fit is among its candidates);
 *   - gptq-opt (codes by coordinate descent, scales and biases refitted by
 *     least squares on the output error, codes re-chosen) has in no row a larger damped output error
 *     (r^T (H + damp) r, computed here) than gptq-mse, and in total a
 *     much smaller one (0.46 of it; the refit alone gives 0.63, the
 *     descent alone more than 0.55: the bar is 0.55);
 *   - the outputs are MLX's layout (mk_dequant_rows reads them; codes in
 *     range by construction of the packing) and rows are independent:
 *     quantizing in two chunks gives the same bytes as one call. */
#include "mk_test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moekit/quant.h"
#include "moekit/quant_opt.h"

#define COLS 256
#define ROWS 48
#define NTOK 1024
#define NFAC 12

static uint64_t rs = 0x243f6a8885a308d3ull;
static uint64_t rnext(void) {
    rs ^= rs >> 12;
    rs ^= rs << 25;
    rs ^= rs >> 27;
    return rs * 0x2545f4914f6cdd1dull;
}
static double rnorm(void) {
    double u1 = ((double)(rnext() >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (double)(rnext() >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

typedef struct layer {
    float *x;  /* [NTOK, COLS] */
    float *h;  /* [COLS, COLS] */
    float *w;  /* [ROWS, COLS] float32 weights */
} layer;

static void make_layer(layer *L) {
    L->x = malloc(sizeof(float) * NTOK * COLS);
    L->h = malloc(sizeof(float) * COLS * COLS);
    L->w = malloc(sizeof(float) * ROWS * COLS);
    static double fac[NFAC][COLS];
    double scale[COLS];
    for (int c = 0; c < COLS; c++)
        scale[c] = 0.2 + 3.0 * (double)((c * 37) % 11) / 10.0;
    for (int f = 0; f < NFAC; f++)
        for (int c = 0; c < COLS; c++)
            fac[f][c] = rnorm();
    for (int t = 0; t < NTOK; t++) {
        double z[NFAC];
        for (int f = 0; f < NFAC; f++)
            z[f] = rnorm();
        for (int c = 0; c < COLS; c++) {
            double v = 0.15 * rnorm();
            for (int f = 0; f < NFAC; f++)
                v += z[f] * fac[f][c];
            L->x[t * COLS + c] = (float)(v * scale[c]);
        }
    }
    for (int i = 0; i < COLS; i++)
        for (int j = 0; j < COLS; j++) {
            double s = 0;
            for (int t = 0; t < NTOK; t++)
                s += (double)L->x[t * COLS + i] * L->x[t * COLS + j];
            L->h[i * COLS + j] = (float)(s / NTOK);
        }
    for (int i = 0; i < ROWS * COLS; i++)
        L->w[i] = (float)(0.05 * rnorm());
}

static void free_layer(layer *L) {
    free(L->x);
    free(L->h);
    free(L->w);
}

typedef struct qout {
    void *wq, *sc, *bi;
    float *deq;
} qout;

static void quantize(const layer *L, mk_qalgo m, const mk_qstats *s, qout *o) {
    mk_qparams p;
    assert_int_equal(mk_quant_params(MK_QMODE_AFFINE, 4, 64, 0, &p), MK_OK);
    uint64_t wb, sb, bb;
    assert_int_equal(mk_quant_out_bytes(&p, MK_DT_F32, ROWS, COLS, &wb, &sb, &bb), MK_OK);
    o->wq = malloc(wb);
    o->sc = malloc(sb);
    o->bi = malloc(bb);
    o->deq = malloc(sizeof(float) * ROWS * COLS);
    mk_status st = mk_quant_rows_opt(&p, m, s, MK_DT_F32, L->w, ROWS, COLS, o->wq, o->sc, o->bi);
    if (st != MK_OK)
        fail_msg("%s: %s", mk_qalgo_name(m), mk_err_msg());
    assert_int_equal(mk_dequant_rows(&p, MK_DT_F32, o->wq, o->sc, o->bi, ROWS, COLS, MK_DT_F32, o->deq), MK_OK);
}

static void free_q(qout *o) {
    free(o->wq);
    free(o->sc);
    free(o->bi);
    free(o->deq);
}

/* ||X (W - Wq)^T||_F^2 / NTOK */
static double out_err(const layer *L, const float *deq) {
    double e = 0;
    for (int t = 0; t < NTOK; t++)
        for (int r = 0; r < ROWS; r++) {
            double v = 0;
            for (int c = 0; c < COLS; c++)
                v += (double)L->x[t * COLS + c] * ((double)L->w[r * COLS + c] - deq[r * COLS + c]);
            e += v * v;
        }
    return e / NTOK;
}

static void test_factor(void **st) {
    (void)st;
    layer L;
    make_layer(&L);
    mk_qstats s;
    assert_int_equal(mk_qstats_prepare(L.h, COLS, MK_QALGO_GPTQ, MK_QOPT_DAMP, "syn", &s), MK_OK);
    double mean = 0;
    for (int i = 0; i < COLS; i++)
        mean += L.h[i * COLS + i];
    mean /= COLS;
    /* (U^T U)(H + damp I) == I */
    double *inv = calloc((size_t)COLS * COLS, sizeof(double));
    for (int m = 0; m < COLS; m++) /* inv += u_m^T u_m, u_m row m of U */
        for (int i = m; i < COLS; i++)
            for (int k = m; k < COLS; k++)
                inv[i * COLS + k] += (double)s.u[m * COLS + i] * s.u[m * COLS + k];
    double worst = 0;
    for (int i = 0; i < COLS; i++)
        for (int j = 0; j < COLS; j++) {
            double v = 0;
            for (int k = 0; k < COLS; k++)
                v += inv[i * COLS + k] * ((double)L.h[k * COLS + j] + (k == j ? MK_QOPT_DAMP * mean : 0));
            double d = fabs(v - (i == j));
            worst = d > worst ? d : worst;
        }
    free(inv);
    if (worst > 1e-3)
        fail_msg("U^T U (H + damp) differs from I by %g", worst);
    for (int i = 0; i < COLS; i++)
        for (int j = 0; j < i; j++)
            assert_true(s.u[i * COLS + j] == 0.0f);
    mk_qstats_free(&s);
    free_layer(&L);
}

static void test_gptq_beats_rtn(void **st) {
    (void)st;
    layer L;
    make_layer(&L);
    qout r, g, gm, ga;
    quantize(&L, MK_QALGO_RTN, NULL, &r);
    mk_qstats s, s2, s3;
    assert_int_equal(mk_qstats_prepare(L.h, COLS, MK_QALGO_GPTQ, MK_QOPT_DAMP, "syn", &s), MK_OK);
    assert_int_equal(mk_qstats_prepare(L.h, COLS, MK_QALGO_GPTQ_MSE, MK_QOPT_DAMP, "syn", &s2), MK_OK);
    quantize(&L, MK_QALGO_GPTQ, &s, &g);
    quantize(&L, MK_QALGO_GPTQ_MSE, &s2, &gm);
    assert_int_equal(mk_qstats_prepare(L.h, COLS, MK_QALGO_GPTQ_ACT, MK_QOPT_DAMP, "syn", &s3), MK_OK);
    assert_non_null(s3.perm);
    for (int k = 1; k < COLS; k++) /* decreasing H_jj */
        assert_true(L.h[s3.perm[k - 1] * (COLS + 1)] >= L.h[s3.perm[k] * (COLS + 1)]);
    quantize(&L, MK_QALGO_GPTQ_ACT, &s3, &ga);
    double er = out_err(&L, r.deq), eg = out_err(&L, g.deq), egm = out_err(&L, gm.deq), ega = out_err(&L, ga.deq);
    print_message("output error: rtn %.4g, gptq %.4g (%.3f), gptq-mse %.4g (%.3f), gptq-act %.4g (%.3f)\n", er, eg,
                  eg / er, egm, egm / er, ega, ega / er);
    if (!(ega < 0.5 * er))
        fail_msg("gptq-act output error %g not below half of rtn's %g", ega, er);
    if (!(eg < 0.5 * er))
        fail_msg("gptq output error %g not below half of rtn's %g", eg, er);
    if (!(egm < 0.5 * er))
        fail_msg("gptq-mse output error %g not below half of rtn's %g", egm, er);
    /* rows are independent: two chunks give the same bytes */
    mk_qparams p;
    assert_int_equal(mk_quant_params(MK_QMODE_AFFINE, 4, 64, 0, &p), MK_OK);
    mk_quant_layout lay;
    assert_int_equal(mk_quant_layout_of(&p, MK_DT_F32, COLS, &lay), MK_OK);
    unsigned char *wq = malloc(ROWS * lay.wq_row_bytes), *sc = malloc(ROWS * lay.scale_row_bytes),
                  *bi = malloc(ROWS * lay.bias_row_bytes);
    const int a = 17;
    assert_int_equal(mk_quant_rows_opt(&p, MK_QALGO_GPTQ, &s, MK_DT_F32, L.w, a, COLS, wq, sc, bi), MK_OK);
    assert_int_equal(mk_quant_rows_opt(&p, MK_QALGO_GPTQ, &s, MK_DT_F32, L.w + a * COLS, ROWS - a, COLS,
                                       wq + a * lay.wq_row_bytes, sc + a * lay.scale_row_bytes,
                                       bi + a * lay.bias_row_bytes),
                     MK_OK);
    assert_memory_equal(wq, g.wq, ROWS * lay.wq_row_bytes);
    assert_memory_equal(sc, g.sc, ROWS * lay.scale_row_bytes);
    assert_memory_equal(bi, g.bi, ROWS * lay.bias_row_bytes);
    free(wq);
    free(sc);
    free(bi);
    /* the wrong statistics are refused, naming the sizes */
    mk_qstats bad = s;
    bad.cols = COLS / 2;
    assert_int_equal(mk_quant_rows_opt(&p, MK_QALGO_GPTQ, &bad, MK_DT_F32, L.w, 1, COLS, g.wq, g.sc, g.bi),
                     MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "128 inputs"));
    assert_int_equal(mk_quant_rows_opt(&p, MK_QALGO_GPTQ, NULL, MK_DT_F32, L.w, 1, COLS, g.wq, g.sc, g.bi),
                     MK_E_ARG);
    mk_qstats_free(&s);
    mk_qstats_free(&s2);
    mk_qstats_free(&s3);
    free_q(&ga);
    free_q(&r);
    free_q(&g);
    free_q(&gm);
    free_layer(&L);
}

static void test_mse_never_worse(void **st) {
    (void)st;
    layer L;
    make_layer(&L);
    /* bf16 weights, as checkpoints hold them: scales and biases in bf16 */
    uint16_t *wb = malloc(sizeof(uint16_t) * ROWS * COLS);
    float *wf = malloc(sizeof(float) * ROWS * COLS);
    for (int i = 0; i < ROWS * COLS; i++) {
        wb[i] = mk_f32_to_bf16(L.w[i]);
        wf[i] = mk_bf16_to_f32(wb[i]);
    }
    mk_qstats s;
    assert_int_equal(mk_qstats_prepare(L.h, COLS, MK_QALGO_MSE, MK_QOPT_DAMP, "syn", &s), MK_OK);
    assert_null(s.u);
    mk_qparams p;
    assert_int_equal(mk_quant_params(MK_QMODE_AFFINE, 4, 64, 0, &p), MK_OK);
    mk_quant_layout lay;
    assert_int_equal(mk_quant_layout_of(&p, MK_DT_BF16, COLS, &lay), MK_OK);
    double tot[2] = {0, 0};
    float *deq[2];
    for (int k = 0; k < 2; k++) {
        unsigned char *wq = malloc(ROWS * lay.wq_row_bytes), *sc = malloc(ROWS * lay.scale_row_bytes),
                      *bi = malloc(ROWS * lay.bias_row_bytes);
        deq[k] = malloc(sizeof(float) * ROWS * COLS);
        assert_int_equal(mk_quant_rows_opt(&p, k ? MK_QALGO_MSE : MK_QALGO_RTN, &s, MK_DT_BF16, wb, ROWS, COLS,
                                           wq, sc, bi),
                         MK_OK);
        assert_int_equal(mk_dequant_rows(&p, MK_DT_BF16, wq, sc, bi, ROWS, COLS, MK_DT_F32, deq[k]), MK_OK);
        free(wq);
        free(sc);
        free(bi);
    }
    for (int r = 0; r < ROWS; r++) {
        double e[2] = {0, 0};
        for (int k = 0; k < 2; k++)
            for (int c = 0; c < COLS; c++) {
                double d = (double)wf[r * COLS + c] - deq[k][r * COLS + c];
                e[k] += (double)s.imp[c] * d * d;
            }
        if (e[1] > e[0] * (1 + 1e-6))
            fail_msg("row %d: mse weighted error %g above rtn's %g", r, e[1], e[0]);
        tot[0] += e[0];
        tot[1] += e[1];
    }
    print_message("weighted weight error: rtn %.4g, mse %.4g (%.3f)\n", tot[0], tot[1], tot[1] / tot[0]);
    assert_true(tot[1] < 0.95 * tot[0]); /* and it does find better fits */
    free(deq[0]);
    free(deq[1]);
    free(wb);
    free(wf);
    mk_qstats_free(&s);
    free_layer(&L);
}

/* bf16 weights (scales and biases stored in bf16, as checkpoints hold
 * them): gptq-opt against gptq-mse row by row under the damped H. */
static void test_gptq_opt(void **st) {
    (void)st;
    layer L;
    make_layer(&L);
    uint16_t *wb = malloc(sizeof(uint16_t) * ROWS * COLS);
    float *wf = malloc(sizeof(float) * ROWS * COLS);
    for (int i = 0; i < ROWS * COLS; i++) {
        wb[i] = mk_f32_to_bf16(L.w[i]);
        wf[i] = mk_bf16_to_f32(wb[i]);
    }
    double mean = 0;
    for (int i = 0; i < COLS; i++)
        mean += L.h[i * COLS + i];
    mean /= COLS;
    mk_qparams p;
    assert_int_equal(mk_quant_params(MK_QMODE_AFFINE, 4, 64, 0, &p), MK_OK);
    mk_quant_layout lay;
    assert_int_equal(mk_quant_layout_of(&p, MK_DT_BF16, COLS, &lay), MK_OK);
    const mk_qalgo ms[2] = {MK_QALGO_GPTQ_MSE, MK_QALGO_GPTQ_OPT};
    float *deq[2];
    for (int k = 0; k < 2; k++) {
        mk_qstats s;
        assert_int_equal(mk_qstats_prepare(L.h, COLS, ms[k], MK_QOPT_DAMP, "syn", &s), MK_OK);
        if (k)
            assert_non_null(s.h);
        else
            assert_null(s.h);
        unsigned char *wq = malloc(ROWS * lay.wq_row_bytes), *sc = malloc(ROWS * lay.scale_row_bytes),
                      *bi = malloc(ROWS * lay.bias_row_bytes);
        deq[k] = malloc(sizeof(float) * ROWS * COLS);
        assert_int_equal(mk_quant_rows_opt(&p, ms[k], &s, MK_DT_BF16, wb, ROWS, COLS, wq, sc, bi), MK_OK);
        assert_int_equal(mk_dequant_rows(&p, MK_DT_BF16, wq, sc, bi, ROWS, COLS, MK_DT_F32, deq[k]), MK_OK);
        free(wq);
        free(sc);
        free(bi);
        mk_qstats_free(&s);
    }
    double tot[2] = {0, 0};
    double *rr = malloc(sizeof(double) * COLS);
    for (int r = 0; r < ROWS; r++) {
        double e[2];
        for (int k = 0; k < 2; k++) {
            for (int c = 0; c < COLS; c++)
                rr[c] = (double)wf[r * COLS + c] - deq[k][r * COLS + c];
            e[k] = 0;
            for (int i = 0; i < COLS; i++)
                for (int j = 0; j < COLS; j++)
                    e[k] += rr[i] * rr[j] * ((double)L.h[i * COLS + j] + (i == j ? MK_QOPT_DAMP * mean : 0));
            tot[k] += e[k];
        }
        if (e[1] > e[0] * (1 + 1e-4))
            fail_msg("row %d: gptq-opt output error %g above gptq-mse's %g", r, e[1], e[0]);
    }
    free(rr);
    print_message("damped output error: gptq-mse %.4g, gptq-opt %.4g (%.3f)\n", tot[0], tot[1], tot[1] / tot[0]);
    /* the refit alone reaches 0.63 of gptq-mse's error here, with the
     * coordinate descent 0.46: either one broken or skipped misses 0.55 */
    if (!(tot[1] < 0.55 * tot[0]))
        fail_msg("gptq-opt output error %g not below 0.55 of gptq-mse's %g", tot[1], tot[0]);
    free(deq[0]);
    free(deq[1]);
    free(wb);
    free(wf);
    free_layer(&L);
}

/* gptq-opt ends on the joint refit: for the codes it returns, its scales
 * and biases are the least-squares optimum of the damped output error,
 * solved here in double from the returned codes (float32 weights, so the
 * stored scales round only to float). Without the refit they are the
 * per-group search's, which ignores the coupling between groups. */
static void test_gptq_opt_refit(void **st) {
    (void)st;
    layer L;
    make_layer(&L);
    double mean = 0;
    for (int i = 0; i < COLS; i++)
        mean += L.h[i * COLS + i];
    mean /= COLS;
    mk_qparams p;
    assert_int_equal(mk_quant_params(MK_QMODE_AFFINE, 4, 64, 0, &p), MK_OK);
    mk_qstats s;
    assert_int_equal(mk_qstats_prepare(L.h, COLS, MK_QALGO_GPTQ_OPT, MK_QOPT_DAMP, "syn", &s), MK_OK);
    qout o;
    quantize(&L, MK_QALGO_GPTQ_OPT, &s, &o);
    enum { NG = COLS / 64, M = 2 * NG };
    const float *sc = o.sc, *bi = o.bi;
    double gap_worst = 0;
    for (int r = 0; r < ROWS; r++) {
        double q[COLS], nrm[M][M], y[M], t[M];
        for (int c = 0; c < COLS; c++) {
            int g = c / 64;
            q[c] = nearbyint(((double)o.deq[r * COLS + c] - bi[r * NG + g]) / sc[r * NG + g]);
        }
        /* A: column 2g codes of group g, 2g+1 its ones; N = A^T H A, y = A^T H w */
        memset(nrm, 0, sizeof nrm);
        memset(y, 0, sizeof y);
        for (int i = 0; i < COLS; i++)
            for (int j = 0; j < COLS; j++) {
                double hij = (double)L.h[i * COLS + j] + (i == j ? MK_QOPT_DAMP * mean : 0);
                int gi = i / 64, gj = j / 64;
                double ai[2] = {q[i], 1}, aj[2] = {q[j], 1};
                for (int x = 0; x < 2; x++) {
                    for (int z = 0; z < 2; z++)
                        nrm[2 * gi + x][2 * gj + z] += ai[x] * hij * aj[z];
                    y[2 * gi + x] += ai[x] * hij * L.w[r * COLS + j];
                }
            }
        for (int k = 0; k < M; k++) { /* Gauss-Jordan, N is positive definite */
            double piv = nrm[k][k];
            for (int z = 0; z < M; z++)
                nrm[k][z] /= piv;
            y[k] /= piv;
            for (int x = 0; x < M; x++)
                if (x != k) {
                    double f = nrm[x][k];
                    for (int z = 0; z < M; z++)
                        nrm[x][z] -= f * nrm[k][z];
                    y[x] -= f * y[k];
                }
        }
        memcpy(t, y, sizeof t);
        double e[2] = {0, 0}, rv[2][COLS];
        for (int c = 0; c < COLS; c++) {
            int g = c / 64;
            rv[0][c] = (double)L.w[r * COLS + c] - o.deq[r * COLS + c];
            rv[1][c] = (double)L.w[r * COLS + c] - (t[2 * g] * q[c] + t[2 * g + 1]);
        }
        for (int k = 0; k < 2; k++)
            for (int i = 0; i < COLS; i++)
                for (int j = 0; j < COLS; j++)
                    e[k] += rv[k][i] * rv[k][j] * ((double)L.h[i * COLS + j] + (i == j ? MK_QOPT_DAMP * mean : 0));
        double gap = e[0] / e[1] - 1;
        gap_worst = gap > gap_worst ? gap : gap_worst;
    }
    print_message("gptq-opt output error over the least-squares optimum for its codes: worst row +%.2e\n", gap_worst);
    if (!(gap_worst < 1e-4))
        fail_msg("gptq-opt's scales and biases are %g above the least-squares optimum for its codes", gap_worst);
    free_q(&o);
    mk_qstats_free(&s);
    free_layer(&L);
}

static void test_names(void **st) {
    (void)st;
    mk_qalgo m;
    assert_int_equal(mk_qalgo_parse("gptq-mse", &m), MK_OK);
    assert_int_equal(m, MK_QALGO_GPTQ_MSE);
    assert_int_equal(mk_qalgo_parse("awq", &m), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "rtn, mse, gptq, gptq-mse, gptq-act or gptq-opt"));
    assert_int_equal(mk_qalgo_parse("gptq-opt", &m), MK_OK);
    assert_int_equal(m, MK_QALGO_GPTQ_OPT);
    assert_string_equal(mk_qalgo_name(MK_QALGO_MSE), "mse");
    float h[4] = {1, 0, 0, NAN};
    mk_qstats s;
    assert_int_equal(mk_qstats_prepare(h, 2, MK_QALGO_GPTQ, 0.01, "mod.x", &s), MK_E_FORMAT);
    assert_non_null(strstr(mk_err_msg(), "mod.x"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_factor),
        cmocka_unit_test(test_gptq_beats_rtn),
        cmocka_unit_test(test_mse_never_worse),
        cmocka_unit_test(test_gptq_opt),
        cmocka_unit_test(test_gptq_opt_refit),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
