/* Calibrated affine quantization (moekit/quant_opt.h): the mse group search,
 * GPTQ's column-by-column error compensation, and the factorization of the
 * input second moments they use.
 *
 * Everything here writes MLX's affine layout with the packing helpers of
 * quant_impl.h; only the choice of codes, scales and biases differs from
 * quant_affine.c. Scales and biases are rounded to the input dtype before
 * the codes are computed from them, so the codes are the best for the
 * values a reader will actually multiply by (MLX's own quantizer computes
 * codes from the unrounded float32 scale).
 *
 * GPTQ in row form (one output row w at a time; rows are independent since
 * they share the same H): with U upper triangular and U^T U = (H+damp)^-1,
 *   for i in 0..cols-1:  q_i = Q(w_i);  e = (w_i - q_i) / U_ii;
 *                        w_j -= e * U_ij  for j > i.
 * Row i of U is the OBS update of the columns not yet quantized after
 * columns 0..i-1 have been (the sequential inverse Hessians are the
 * Cholesky rows), which is what makes one factorization serve every column. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "moekit/quant_opt.h"
#include "quant/quant_impl.h"

static const char *const k_names[] = {"rtn", "mse", "gptq", "gptq-mse", "gptq-act", "gptq-opt"};

const char *mk_qalgo_name(mk_qalgo m) {
    return (unsigned)m < sizeof k_names / sizeof *k_names ? k_names[m] : NULL;
}

mk_status mk_qalgo_parse(const char *s, mk_qalgo *out) {
    for (unsigned i = 0; s && i < sizeof k_names / sizeof *k_names; i++)
        if (!strcmp(s, k_names[i])) {
            *out = (mk_qalgo)i;
            return MK_OK;
        }
    return mk_err(MK_E_ARG, "quantization method '%s': expected rtn, mse, gptq, gptq-mse, gptq-act or gptq-opt", s ? s : "(null)");
}

int mk_qalgo_needs_stats(mk_qalgo m) { return m != MK_QALGO_RTN; }

static bool is_gptq(mk_qalgo m) {
    return m == MK_QALGO_GPTQ || m == MK_QALGO_GPTQ_MSE || m == MK_QALGO_GPTQ_ACT || m == MK_QALGO_GPTQ_OPT;
}

/* Sort keys (descending weight, then ascending index) packed in one
 * integer: a positive float's bits order like its value. */
static int by_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

void mk_qstats_free(mk_qstats *s) {
    if (!s)
        return;
    free(s->imp);
    free(s->u);
    free(s->perm);
    free(s->h);
    memset(s, 0, sizeof *s);
}

/* In-place lower Cholesky of the n x n row-major a (only the lower triangle
 * is read and written). false when a pivot is not positive. */
static bool chol_lower(double *a, int64_t n) {
    for (int64_t j = 0; j < n; j++) {
        double *aj = a + j * n;
        double d = aj[j];
        for (int64_t k = 0; k < j; k++)
            d -= aj[k] * aj[k];
        if (!(d > 0) || !isfinite(d))
            return false;
        d = sqrt(d);
        aj[j] = d;
        for (int64_t i = j + 1; i < n; i++) {
            double *ai = a + i * n, v = ai[j];
            for (int64_t k = 0; k < j; k++)
                v -= ai[k] * aj[k];
            ai[j] = v / d;
        }
    }
    return true;
}

/* (L L^T)^-1 from the lower factor L (lower triangle of l): first L^-1 in
 * place (lower), then inv = L^-T L^-1 into the full symmetric out. */
static void chol_inverse(double *l, int64_t n, double *out) {
    for (int64_t j = 0; j < n; j++) { /* column j of L^-1: forward substitution */
        l[j * n + j] = 1.0 / l[j * n + j];
        for (int64_t i = j + 1; i < n; i++) {
            double v = 0;
            for (int64_t k = j; k < i; k++)
                v -= l[i * n + k] * l[k * n + j];
            l[i * n + j] = v / l[i * n + i];
        }
    }
    /* the diagonal now holds 1/L_ii, which is (L^-1)_ii: the loop above
     * used it as such for k == j, and 1/L_ii as the divisor for i > j
     * before row i's own diagonal was inverted */
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j <= i; j++) {
            double v = 0; /* sum_k (L^-1)_ki (L^-1)_kj, k >= i */
            for (int64_t k = i; k < n; k++)
                v += l[k * n + i] * l[k * n + j];
            out[i * n + j] = out[j * n + i] = v;
        }
}

mk_status mk_qstats_prepare(const float *h, int64_t cols, mk_qalgo m, double damp, const char *what,
                            mk_qstats *out) {
    if (!out || !h || cols <= 0 || !mk_qalgo_needs_stats(m) || !(damp >= 0) || !isfinite(damp))
        return mk_err(MK_E_ARG, "%s: bad arguments to mk_qstats_prepare", what ? what : "statistics");
    memset(out, 0, sizeof *out);
    const char *nm = what ? what : "statistics";
    const size_t n = (size_t)cols;
    double mean = 0;
    for (size_t i = 0; i < n; i++) {
        double d = h[i * n + i];
        if (!isfinite(d) || d < 0)
            return mk_err(MK_E_FORMAT, "%s: input second moment H[%zu][%zu] = %g (expected finite, >= 0)", nm, i,
                          i, d);
        mean += d;
    }
    mean /= (double)n;
    if (!(mean > 0))
        mean = 1.0; /* a module no calibration token reached: plain weights */
    out->cols = cols;
    out->imp = mk_malloc(n * sizeof(float));
    if (!out->imp)
        return mk_err(MK_E_NOMEM, "%s: no memory for %zu column weights", nm, n);
    if (!is_gptq(m)) {
        for (size_t i = 0; i < n; i++)
            out->imp[i] = (float)((h[i * n + i] > 0 ? h[i * n + i] : 0) + damp * mean + 1e-30);
        return MK_OK;
    }
    if (m == MK_QALGO_GPTQ_ACT) { /* the order: decreasing H_jj (stable), static-group weights H_jj */
        for (size_t i = 0; i < n; i++)
            out->imp[i] = (float)((h[i * n + i] > 0 ? h[i * n + i] : 0) + damp * mean + 1e-30);
        out->perm = mk_malloc(n * sizeof(int32_t));
        if (!out->perm) {
            mk_qstats_free(out);
            return mk_err(MK_E_NOMEM, "%s: no memory for a column order", nm);
        }
        uint64_t *key = mk_malloc(n * sizeof(uint64_t));
        if (!key) {
            mk_qstats_free(out);
            return mk_err(MK_E_NOMEM, "%s: no memory for a column order", nm);
        }
        for (size_t i = 0; i < n; i++) {
            uint32_t b;
            memcpy(&b, &out->imp[i], 4);
            key[i] = (uint64_t)(0xffffffffu - b) << 32 | (uint64_t)i;
        }
        qsort(key, n, sizeof *key, by_u64);
        for (size_t i = 0; i < n; i++)
            out->perm[i] = (int32_t)(key[i] & 0xffffffffu);
        free(key);
    }
    double *a = mk_malloc(n * n * sizeof(double)), *inv = mk_malloc(n * n * sizeof(double));
    out->u = mk_malloc(n * n * sizeof(float));
    if (!a || !inv || !out->u) {
        free(a);
        free(inv);
        mk_qstats_free(out);
        return mk_err(MK_E_NOMEM, "%s: no memory to factorize a %lld x %lld second-moment matrix", nm,
                      (long long)cols, (long long)cols);
    }
    bool ok = false;
    double dmp = damp > 0 ? damp : 1e-6;
    for (int attempt = 0; attempt < 6 && !ok; attempt++, dmp *= 10) {
        for (size_t i = 0; i < n; i++) {
            for (size_t j = 0; j <= i; j++) {
                size_t pi = out->perm ? (size_t)out->perm[i] : i, pj = out->perm ? (size_t)out->perm[j] : j;
                double v = h[pi * n + pj];
                if (!isfinite(v)) {
                    free(a);
                    free(inv);
                    mk_qstats_free(out);
                    return mk_err(MK_E_FORMAT, "%s: input second moment H[%zu][%zu] is not finite", nm, i, j);
                }
                a[i * n + j] = v;
            }
            if (!(a[i * n + i] > 0))
                a[i * n + i] = mean; /* never excited: any value works, this one keeps the scale */
            a[i * n + i] += dmp * mean;
        }
        ok = chol_lower(a, cols);
    }
    if (!ok) {
        free(a);
        free(inv);
        mk_qstats_free(out);
        return mk_err(MK_E_FORMAT, "%s: the input second moments are not positive definite even damped by %g",
                      nm, dmp / 10);
    }
    if (m == MK_QALGO_GPTQ_OPT) { /* the damped H itself: the objective the refit minimises */
        const double used = dmp / 10; /* the loop's increment ran once more after success */
        if (!(out->h = mk_malloc(n * n * sizeof(float)))) {
            free(a);
            free(inv);
            mk_qstats_free(out);
            return mk_err(MK_E_NOMEM, "%s: no memory for a %lld x %lld second-moment matrix", nm,
                          (long long)cols, (long long)cols);
        }
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < n; j++) {
                double v = h[i * n + j];
                if (i == j)
                    v = (v > 0 ? v : mean) + used * mean;
                out->h[i * n + j] = (float)v;
            }
    }
    chol_inverse(a, cols, inv);
    if (!chol_lower(inv, cols)) { /* inv = M M^T, U = M^T */
        free(a);
        free(inv);
        mk_qstats_free(out);
        return mk_err(MK_E_FORMAT, "%s: the inverse of the damped second moments lost definiteness", nm);
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < n; j++)
            out->u[i * n + j] = j >= i ? (float)inv[j * n + i] : 0.0f;
        double uii = inv[i * n + i];
        if (!out->perm)
            out->imp[i] = (float)(1.0 / (uii * uii));
    }
    free(a);
    free(inv);
    return MK_OK;
}

/* ---- one group ------------------------------------------------------------ */

typedef struct gfit {
    int G, bits;
    float nmax;  /* 2^bits - 1 */
    mk_dtype dt; /* where s and b are stored */
} gfit;

/* Codes of w under stored (s, b), and the weighted error. */
static double codes_err(const gfit *f, const float *w, const float *d, float s, float b, uint32_t *q) {
    double e = 0;
    const float inv = s != 0 ? 1.0f / s : 0.0f;
    for (int j = 0; j < f->G; j++) {
        float c = s != 0 ? mk_q_rint((w[j] - b) * inv) : 0.0f;
        c = c < 0 ? 0 : c > f->nmax ? f->nmax : c;
        /* the reciprocal can miss the nearest code by one: check neighbours */
        float r = w[j] - (s * c + b);
        for (int k = -1; k <= 1; k += 2) {
            float c2 = c + (float)k;
            if (c2 < 0 || c2 > f->nmax)
                continue;
            float r2 = w[j] - (s * c2 + b);
            if (fabsf(r2) < fabsf(r)) {
                c = c2;
                r = r2;
            }
        }
        q[j] = (uint32_t)c;
        e += (double)(d ? d[j] : 1.0f) * (double)r * (double)r;
    }
    return e;
}

/* MLX's min/max fit (quant_affine.c's mk_q_affine_fit rule), stored. */
static void fit_minmax(const gfit *f, float wmin, float wmax, float *s, float *b) {
    float sc = (wmax - wmin) / f->nmax;
    sc = sc < 1e-7f ? 1e-7f : sc;
    bool mask = fabsf(wmin) > fabsf(wmax);
    sc = mask ? sc : -sc;
    float edge = mask ? wmin : wmax, q0 = mk_q_rint(edge / sc), bi = 0.0f;
    if (q0 != 0.0f) {
        sc = edge / q0;
        bi = edge;
    }
    *s = mk_q_round_to(f->dt, sc);
    *b = mk_q_round_to(f->dt, bi);
}

/* Weighted least squares for (s, b) given codes q; false when degenerate. */
static bool lsq(const gfit *f, const float *w, const float *d, const uint32_t *q, float *s, float *b) {
    double sd = 0, sq = 0, sqq = 0, sw = 0, sqw = 0;
    for (int j = 0; j < f->G; j++) {
        double dj = d ? d[j] : 1.0, qj = q[j];
        sd += dj;
        sq += dj * qj;
        sqq += dj * qj * qj;
        sw += dj * w[j];
        sqw += dj * qj * w[j];
    }
    double det = sd * sqq - sq * sq;
    if (!(det > 1e-12 * sd * sqq) || !(sd > 0))
        return false;
    double ss = (sd * sqw - sq * sw) / det, bb = (sw - ss * sq) / sd;
    if (!isfinite(ss) || !isfinite(bb) || ss == 0)
        return false;
    *s = mk_q_round_to(f->dt, (float)ss);
    *b = mk_q_round_to(f->dt, (float)bb);
    return *s != 0 && isfinite(*s) && isfinite(*b);
}

#define SEARCH_STEPS 20 /* shrink factors 1.0, 0.975, ..., 0.525 */
#define SEARCH_REFINE 2 /* least-squares passes per candidate */

/* Scale, bias and codes of one group: MLX's min/max fit (search false) or
 * the best of it and the shrunk, refined candidates by weighted error. */
static void fit_group(const gfit *f, const float *w, const float *d, bool search, float *s_out, float *b_out,
                      uint32_t *q_out) {
    float wmin = w[0], wmax = w[0];
    for (int j = 1; j < f->G; j++) {
        wmin = w[j] < wmin ? w[j] : wmin;
        wmax = w[j] > wmax ? w[j] : wmax;
    }
    float s, b;
    fit_minmax(f, wmin, wmax, &s, &b);
    double best = codes_err(f, w, d, s, b, q_out);
    *s_out = s;
    *b_out = b;
    if (!search || wmax == wmin)
        return;
    uint32_t q[MK_Q_MAX_GROUP];
    const float mid = 0.5f * (wmin + wmax), half = 0.5f * (wmax - wmin);
    for (int k = 0; k < SEARCH_STEPS; k++) {
        float a = 1.0f - 0.025f * (float)k, lo = mid - a * half, hi = mid + a * half;
        /* the range's ends anchored on zero-crossing weights matter most
         * when one sign dominates: also try shrinking toward zero */
        for (int anchor = 0; anchor < 2; anchor++) {
            if (anchor) {
                lo = wmin * a;
                hi = wmax * a;
            }
            float cs = mk_q_round_to(f->dt, (hi - lo) / f->nmax), cb = mk_q_round_to(f->dt, lo);
            if (cs == 0)
                continue;
            double e = codes_err(f, w, d, cs, cb, q);
            for (int it = 0; it < SEARCH_REFINE; it++) {
                float ns, nb;
                if (!lsq(f, w, d, q, &ns, &nb))
                    break;
                uint32_t q2[MK_Q_MAX_GROUP];
                double e2 = codes_err(f, w, d, ns, nb, q2);
                if (!(e2 < e))
                    break;
                e = e2;
                cs = ns;
                cb = nb;
                memcpy(q, q2, (size_t)f->G * sizeof *q);
            }
            if (e < best) {
                best = e;
                *s_out = cs;
                *b_out = cb;
                memcpy(q_out, q, (size_t)f->G * sizeof *q);
            }
        }
    }
}

/* ---- rows ---------------------------------------------------------------- */

static void store_group(const gfit *f, int64_t g, float s, float b, const uint32_t *q, unsigned char *wq_row,
                        unsigned char *s_row, unsigned char *b_row) {
    mk_q_pack(q, f->G, f->bits, wq_row + (size_t)g * (size_t)f->G * (size_t)f->bits / 8);
    mk_q_store(f->dt, s_row, g, s);
    mk_q_store(f->dt, b_row, g, b);
}

/* gptq-act on one row w (original order): static groups fitted on the
 * original weights, then columns in s->perm order with U of the permuted H;
 * codes[] in the original order. wp: scratch of cols floats. */
static void act_row(const gfit *f, const mk_qstats *s, const float *w, float *wp, float *gsc, float *gbi,
                    uint32_t *codes, int64_t ng) {
    const int64_t cols = s->cols;
    uint32_t q[MK_Q_MAX_GROUP];
    for (int64_t g = 0; g < ng; g++)
        fit_group(f, w + g * f->G, s->imp + g * f->G, true, &gsc[g], &gbi[g], q);
    for (int64_t k = 0; k < cols; k++)
        wp[k] = w[s->perm[k]];
    for (int64_t k = 0; k < cols; k++) {
        const int64_t i = s->perm[k], g = i / f->G;
        const float gs = gsc[g], gb = gbi[g];
        const float *uk = s->u + (size_t)k * (size_t)cols;
        float c = mk_q_rint((wp[k] - gb) / gs);
        c = c < 0 ? 0 : c > f->nmax ? f->nmax : c;
        float r0 = wp[k] - (gs * c + gb);
        for (int d = -1; d <= 1; d += 2) {
            float c2 = c + (float)d, r2 = wp[k] - (gs * c2 + gb);
            if (c2 >= 0 && c2 <= f->nmax && fabsf(r2) < fabsf(r0)) {
                c = c2;
                r0 = r2;
            }
        }
        codes[i] = (uint32_t)c;
        const float e = r0 / uk[k];
        for (int64_t j = k + 1; j < cols; j++)
            wp[j] -= e * uk[j];
    }
}

/* GPTQ over one row w (updated in place: on return it holds the
 * error-compensated targets, not the original row), codes[] out. fixed:
 * gsc/gbi are given (every group's scale and bias); else each group's is
 * fitted when its first column is reached (search: the mse search, else
 * MLX's min/max rule) and written to gsc/gbi. */
static void gptq_row(const gfit *f, const mk_qstats *s, float *w, bool search, bool fixed, float *gsc, float *gbi,
                     uint32_t *codes, int64_t ng) {
    const int64_t cols = s->cols;
    uint32_t q[MK_Q_MAX_GROUP];
    for (int64_t g = 0; g < ng; g++) {
        const int64_t c0 = g * f->G;
        if (!fixed)
            fit_group(f, w + c0, s->imp + c0, search, &gsc[g], &gbi[g], q); /* the group's s, b fixed here */
        const float gs = gsc[g], gb = gbi[g];
        for (int j = 0; j < f->G; j++) {
            const int64_t i = c0 + j;
            const float *ui = s->u + (size_t)i * (size_t)cols;
            float c = mk_q_rint((w[i] - gb) / gs);
            c = c < 0 ? 0 : c > f->nmax ? f->nmax : c;
            float r0 = w[i] - (gs * c + gb);
            for (int k = -1; k <= 1; k += 2) { /* nearest code, exactly */
                float c2 = c + (float)k;
                float r2 = w[i] - (gs * c2 + gb);
                if (c2 >= 0 && c2 <= f->nmax && fabsf(r2) < fabsf(r0)) {
                    c = c2;
                    r0 = r2;
                }
            }
            codes[i] = (uint32_t)c;
            const float e = r0 / ui[i];
            for (int64_t k = i + 1; k < cols; k++)
                w[k] -= e * ui[k];
        }
    }
}

/* The output error of a quantized row against the original w0 under the
 * damped H: r^T H r with r = w0 - (s q + b) as a reader dequantizes it. */
static double row_err(const gfit *f, const mk_qstats *s, const float *w0, const float *gsc, const float *gbi,
                      const uint32_t *codes, double *r) {
    const int64_t n = s->cols;
    for (int64_t i = 0; i < n; i++) {
        const int64_t g = i / f->G;
        r[i] = (double)w0[i] - (double)(gsc[g] * (float)codes[i] + gbi[g]);
    }
    double e = 0;
    for (int64_t i = 0; i < n; i++) {
        const float *hi = s->h + (size_t)i * (size_t)n;
        double v = 0;
        for (int64_t j = 0; j < n; j++)
            v += (double)hi[j] * r[j];
        e += r[i] * v;
    }
    return e;
}

/* Doubles of opt_row's scratch. */
static size_t opt_scratch(int64_t cols, int64_t ng) {
    return 4 * (size_t)ng + 4 * (size_t)ng * (size_t)ng + 2 * (size_t)cols; /* t, y; normal matrix; r, hr */
}

/* Every group's scale and bias of one row refitted jointly, codes fixed,
 * by least squares on the output error: minimise (w0 - A t)^T H (w0 - A t)
 * over t = (s_0, b_0, s_1, b_1, ...), where column (g, 0) of A holds the
 * codes of group g and column (g, 1) its ones: the normal equations
 * (A^T H A) t = A^T H w0, 2 ng unknowns, cols^2 work to form. The result is
 * rounded to the stored dtype. false (gsc/gbi untouched) when the system
 * is singular or a scale comes out zero or not finite. */
static bool refit_row(const gfit *f, const mk_qstats *s, const float *w0, const uint32_t *codes, int64_t ng,
                      float *gsc, float *gbi, double *ws) {
    const int64_t n = s->cols, m = 2 * ng;
    double *t = ws, *nrm = ws + m, *y = nrm + m * m;
    memset(nrm, 0, (size_t)(m * m) * sizeof(double));
    memset(y, 0, (size_t)m * sizeof(double));
    for (int64_t i = 0; i < n; i++) {
        const float *hi = s->h + (size_t)i * (size_t)n;
        double hw = 0;
        for (int64_t g = 0; g < ng; g++) {
            double t0 = 0, t1 = 0;
            for (int64_t j = g * f->G; j < (g + 1) * f->G; j++) {
                t0 += (double)hi[j] * (double)codes[j];
                t1 += hi[j];
                hw += (double)hi[j] * (double)w0[j];
            }
            t[2 * g] = t0;
            t[2 * g + 1] = t1;
        }
        const int64_t gi = i / f->G;
        const double qi = codes[i];
        double *n0 = nrm + (2 * gi) * m, *n1 = n0 + m;
        for (int64_t k = 0; k < m; k++) {
            n0[k] += qi * t[k];
            n1[k] += t[k];
        }
        y[2 * gi] += qi * hw;
        y[2 * gi + 1] += hw;
    }
    double tr = 0;
    for (int64_t k = 0; k < m; k++)
        tr += nrm[k * m + k];
    if (!(tr > 0) || !isfinite(tr))
        return false;
    for (int64_t k = 0; k < m; k++) /* a group whose codes are all equal leaves its scale free */
        nrm[k * m + k] += 1e-9 * tr / (double)m;
    if (!chol_lower(nrm, m))
        return false;
    for (int64_t i = 0; i < m; i++) { /* L z = y, then L^T t = z */
        double v = y[i];
        for (int64_t k = 0; k < i; k++)
            v -= nrm[i * m + k] * y[k];
        y[i] = v / nrm[i * m + i];
    }
    for (int64_t i = m - 1; i >= 0; i--) {
        double v = y[i];
        for (int64_t k = i + 1; k < m; k++)
            v -= nrm[k * m + i] * y[k];
        y[i] = v / nrm[i * m + i];
    }
    for (int64_t g = 0; g < ng; g++) {
        const float sc = mk_q_round_to(f->dt, (float)y[2 * g]), bi = mk_q_round_to(f->dt, (float)y[2 * g + 1]);
        if (!(sc != 0) || !isfinite(sc) || !isfinite(bi))
            return false;
    }
    for (int64_t g = 0; g < ng; g++) {
        gsc[g] = mk_q_round_to(f->dt, (float)y[2 * g]);
        gbi[g] = mk_q_round_to(f->dt, (float)y[2 * g + 1]);
    }
    return true;
}

#define OPT_ROUNDS 4 /* refit / re-round alternations at most */
#define CD_SWEEPS 4  /* coordinate-descent passes over a row's codes at most */

/* Coordinate descent on the codes of one row, scales and biases fixed: each
 * code in turn moved by one step down or up when that lowers r^T H r
 * exactly (the change d of one weight changes it by -2 d (H r)_i +
 * d^2 H_ii; H r is kept up to date, cols work per move). Returns the
 * output error after. r and hr: cols doubles of scratch, r = w0 - w^ and
 * hr = H r on entry (row_err's r; hr computed here). */
static double cd_row(const gfit *f, const mk_qstats *s, const float *gsc, const float *gbi, uint32_t *codes,
                     double e, double *r, double *hr) {
    const int64_t n = s->cols;
    for (int64_t i = 0; i < n; i++) {
        const float *hi = s->h + (size_t)i * (size_t)n;
        double v = 0;
        for (int64_t j = 0; j < n; j++)
            v += (double)hi[j] * r[j];
        hr[i] = v;
    }
    for (int sweep = 0; sweep < CD_SWEEPS; sweep++) {
        int64_t moved = 0;
        for (int64_t i = 0; i < n; i++) {
            const int64_t g = i / f->G;
            const float sc = gsc[g], bi = gbi[g], c = (float)codes[i], now = sc * c + bi;
            const double hii = s->h[(size_t)i * (size_t)n + (size_t)i];
            double bestd = 0, bestde = 0;
            float bestc = c;
            for (int k = -1; k <= 1; k += 2) {
                const float c2 = c + (float)k;
                if (c2 < 0 || c2 > f->nmax)
                    continue;
                const double d = (double)(sc * c2 + bi) - (double)now; /* the weight's change */
                const double de = -2 * d * hr[i] + d * d * hii;
                if (de < bestde) {
                    bestde = de;
                    bestd = d;
                    bestc = c2;
                }
            }
            if (bestc == c)
                continue;
            codes[i] = (uint32_t)bestc;
            r[i] -= bestd;
            e += bestde;
            const float *hcol = s->h + (size_t)i * (size_t)n; /* H symmetric: row i is column i */
            for (int64_t j = 0; j < n; j++)
                hr[j] -= bestd * (double)hcol[j];
            moved++;
        }
        if (!moved)
            break;
    }
    return e;
}

/* gptq-opt on one row w0 (not modified): gptq-mse, then its codes improved
 * by coordinate descent (cd_row), then alternately every scale and bias
 * refitted by least squares on the output error with the codes fixed
 * (refit_row) and the codes re-chosen (the better of the current codes and
 * a GPTQ pass from w0 with those scales and biases fixed, each improved by
 * coordinate descent), ending on a refit (the last round's, or the one
 * that no longer helped). A step is kept only when it lowers the output
 * error r^T H r, so the result is never worse than gptq-mse's by that
 * measure.
 * Scratch: wp cols floats, ws opt_scratch doubles, tc cols codes, ts 2 ng
 * floats. */
static void opt_row(const gfit *f, const mk_qstats *s, const float *w0, float *wp, float *gsc, float *gbi,
                    uint32_t *codes, int64_t ng, double *ws, uint32_t *tc, float *ts) {
    const int64_t cols = s->cols;
    float *tb = ts + ng;
    double *r = ws + opt_scratch(cols, ng) - 2 * (size_t)cols, *hr = r + cols; /* the tail; refit_row: head */
    memcpy(wp, w0, (size_t)cols * sizeof(float));
    gptq_row(f, s, wp, true, false, gsc, gbi, codes, ng);
    double best = row_err(f, s, w0, gsc, gbi, codes, r);
    best = cd_row(f, s, gsc, gbi, codes, best, r, hr);
    for (int round = 0; round < OPT_ROUNDS; round++) {
        memcpy(ts, gsc, (size_t)ng * sizeof(float));
        memcpy(tb, gbi, (size_t)ng * sizeof(float));
        if (!refit_row(f, s, w0, codes, ng, ts, tb, ws))
            break;
        double e = row_err(f, s, w0, ts, tb, codes, r);
        if (!(e < best))
            break;
        memcpy(gsc, ts, (size_t)ng * sizeof(float));
        memcpy(gbi, tb, (size_t)ng * sizeof(float));
        best = cd_row(f, s, gsc, gbi, codes, e, r, hr); /* the current codes under the new scales */
        memcpy(wp, w0, (size_t)cols * sizeof(float));
        gptq_row(f, s, wp, false, true, gsc, gbi, tc, ng);
        e = row_err(f, s, w0, gsc, gbi, tc, r);
        e = cd_row(f, s, gsc, gbi, tc, e, r, hr);
        if (e < best) {
            best = e;
            memcpy(codes, tc, (size_t)cols * sizeof *codes);
        }
        if (round == OPT_ROUNDS - 1 && refit_row(f, s, w0, codes, ng, ts, tb, ws) &&
            row_err(f, s, w0, ts, tb, codes, r) < best) { /* end on a refit: the scales fit the final codes */
            memcpy(gsc, ts, (size_t)ng * sizeof(float));
            memcpy(gbi, tb, (size_t)ng * sizeof(float));
        }
    }
}

mk_status mk_quant_rows_opt(const mk_qparams *p, mk_qalgo m, const mk_qstats *s, mk_dtype in_dt,
                            const void *in, int64_t rows, int64_t cols, void *wq, void *scales,
                            void *biases) {
    if (m == MK_QALGO_RTN)
        return mk_quant_rows(p, in_dt, in, rows, cols, wq, scales, biases);
    if (!p || p->mode != MK_QMODE_AFFINE || (unsigned)m > MK_QALGO_GPTQ_OPT)
        return mk_err(MK_E_ARG, "calibrated quantization (%s) works on affine mode only",
                      mk_qalgo_name(m) ? mk_qalgo_name(m) : "?");
    mk_quant_layout L;
    MK_TRY(mk_quant_layout_of(p, in_dt, cols, &L));
    if (rows < 0 || (rows > 0 && (!in || !wq || !scales || !biases)))
        return mk_err(MK_E_ARG, "mk_quant_rows_opt: NULL buffer or negative rows");
    if (s && s->cols != cols)
        return mk_err(MK_E_ARG, "calibration statistics for %lld inputs given to a module of %lld",
                      (long long)s->cols, (long long)cols);
    if (is_gptq(m) && (!s || !s->u || (m == MK_QALGO_GPTQ_OPT && !s->h) || (m == MK_QALGO_GPTQ_ACT && !s->perm)))
        return mk_err(MK_E_ARG, "%s needs prepared input statistics (mk_qstats_prepare with that method)",
                      mk_qalgo_name(m));
    const gfit f = {.G = p->group, .bits = p->bits, .nmax = (float)((1 << p->bits) - 1), .dt = in_dt};
    const int64_t ng = cols / p->group;
    float *w = mk_malloc((size_t)cols * sizeof(float) * 3), *wp = w + cols;
    float *gsc = mk_malloc((size_t)ng * sizeof(float) * 2), *gbi = gsc ? gsc + ng : NULL;
    uint32_t *codes = mk_malloc((size_t)cols * sizeof(uint32_t));
    const bool opt = m == MK_QALGO_GPTQ_OPT;
    double *ws = opt ? mk_malloc(opt_scratch(cols, ng) * sizeof(double)) : NULL;
    uint32_t *tc = opt ? mk_malloc((size_t)cols * sizeof(uint32_t)) : NULL;
    float *ts = opt ? mk_malloc((size_t)ng * 2 * sizeof(float)) : NULL;
    if (!w || !gsc || !codes || (opt && (!ws || !tc || !ts))) {
        free(tc);
        free(ts);
        free(w);
        free(gsc);
        free(codes);
        free(ws);
        return mk_err(MK_E_NOMEM, "no memory for a row of %lld floats", (long long)cols);
    }
    const unsigned char *src = in;
    for (int64_t r = 0; r < rows; r++) {
        unsigned char *wr = (unsigned char *)wq + (size_t)r * L.wq_row_bytes;
        unsigned char *sr = (unsigned char *)scales + (size_t)r * L.scale_row_bytes;
        unsigned char *br = (unsigned char *)biases + (size_t)r * L.bias_row_bytes;
        for (int64_t c = 0; c < cols; c += f.G)
            mk_q_load_n(in_dt, src + (size_t)r * L.in_row_bytes, c, f.G, w + c);
        for (int64_t c = 0; c < cols; c++)
            if (!isfinite(w[c])) {
                free(w);
                free(gsc);
                free(codes);
                free(ws);
                free(tc);
                free(ts);
                return mk_err(MK_E_FORMAT, "row %lld holds a non-finite value at column %lld", (long long)r,
                              (long long)c);
            }
        uint32_t q[MK_Q_MAX_GROUP];
        if (!is_gptq(m)) {
            float gs, gb;
            for (int64_t g = 0; g < ng; g++) {
                fit_group(&f, w + g * f.G, s ? s->imp + g * f.G : NULL, true, &gs, &gb, q);
                store_group(&f, g, gs, gb, q, wr, sr, br);
            }
            continue;
        }
        if (m == MK_QALGO_GPTQ_ACT) {
            act_row(&f, s, w, wp, gsc, gbi, codes, ng);
            for (int64_t g = 0; g < ng; g++) {
                for (int j = 0; j < f.G; j++)
                    q[j] = codes[g * f.G + j];
                store_group(&f, g, gsc[g], gbi[g], q, wr, sr, br);
            }
            continue;
        }
        if (m == MK_QALGO_GPTQ_OPT) {
            opt_row(&f, s, w, wp, gsc, gbi, codes, ng, ws, tc, ts);
        } else {
            memcpy(wp, w, (size_t)cols * sizeof(float));
            gptq_row(&f, s, wp, m == MK_QALGO_GPTQ_MSE, false, gsc, gbi, codes, ng);
        }
        for (int64_t g = 0; g < ng; g++) {
            for (int j = 0; j < f.G; j++)
                q[j] = codes[g * f.G + j];
            store_group(&f, g, gsc[g], gbi[g], q, wr, sr, br);
        }
    }
    free(w);
    free(gsc);
    free(codes);
    free(ws);
    free(tc);
    free(ts);
    return MK_OK;
}
