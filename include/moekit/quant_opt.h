/* Calibrated affine quantization: better codes, scales and biases inside
 * MLX's affine format (quant.h), from the second moments of a module's
 * inputs measured on calibration text (`moekit profile --hessian`).
 *
 * The output is exactly the layout mk_quant_rows writes (uint32-packed
 * codes, scales and biases in the input dtype, groups along the input
 * dimension) and dequantizes as every MLX reader does (w = s * q + b): only
 * the choice of s, b and q changes, so stock mlx-lm loads it unchanged.
 *
 * Methods (what each optimizes, for a module y = W x with input second
 * moments H = E[x x^T] over the calibration tokens):
 *   rtn       MLX's own round-to-nearest min/max fit (mk_quant_rows).
 *   mse       per group, scale and bias searched (the min/max range shrunk
 *             in steps, each candidate refined by weighted least squares
 *             on its codes, then stored in the input dtype and the codes
 *             recomputed) to minimise sum_j H_jj (w_j - s q_j - b)^2: the
 *             output error if the inputs were uncorrelated. MLX's own fit
 *             is one of the candidates, so per group this error never
 *             exceeds rtn's.
 *   gptq      GPTQ (Frantar et al. 2022, "Optimal Brain Quantization" with
 *             lazy Cholesky updates): the columns of each row are quantized
 *             in input order; the error of column i, divided by U_ii, is
 *             propagated to the columns after it through row i of U, the
 *             upper Cholesky factor of (H + damp)^-1, which minimises the
 *             layer-output error ||X W^T - X Wq^T|| column by column. A
 *             group's scale and bias are fixed (MLX's min/max rule on the
 *             updated weights) when its first column is reached.
 *   gptq-mse  gptq with each group's scale and bias chosen by the mse
 *             search (column weights 1 / U_ii^2, GPTQ's own cost of an
 *             error in column i) when the group is reached.
 *   gptq-act  gptq in decreasing-H_jj column order with static groups (each
 *             group's scale and bias searched on the original weights).
 *   gptq-opt  gptq-mse, its codes then improved by coordinate descent on
 *             the output error (each code moved one step when that lowers
 *             (w - s q - b)^T H (w - s q - b), up to 4 sweeps), then up to 4
 *             alternations of: every scale and bias of the row refitted
 *             jointly by least squares on that error with the codes fixed
 *             (a 2 * groups unknowns system, cols^2 work to form), then the
 *             codes re-chosen (the better of the current ones and a GPTQ
 *             pass from the original row with those scales and biases
 *             fixed, each improved by coordinate descent). Each step is
 *             kept only when the output error under the damped H falls, so
 *             per row it never exceeds gptq-mse's. Costs about 2-3x
 *             gptq-mse's time plus cols^2 floats more per module (H kept
 *             beside the factor).
 * Damping (GPTQ's): damp * mean(diag H) is added to the diagonal; columns
 * the calibration never excited (H_ii == 0) get H_ii = 1 first.
 *
 * Cost: mse about 60 passes over each group; gptq cols^2 / 2 multiply-adds
 * per row plus a cols^3 factorization per module (mk_qstats_prepare, done
 * once per module and shared by its row chunks). Memory: the factor, cols^2
 * floats per module being quantized. */
#ifndef MOEKIT_QUANT_OPT_H
#define MOEKIT_QUANT_OPT_H

#include <stdint.h>

#include "moekit/quant.h"
#include "moekit/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mk_qalgo {
    MK_QALGO_RTN = 0,
    MK_QALGO_MSE,
    MK_QALGO_GPTQ,
    MK_QALGO_GPTQ_MSE,
    MK_QALGO_GPTQ_ACT,
    MK_QALGO_GPTQ_OPT,
} mk_qalgo;

/* "rtn", "mse", "gptq", "gptq-mse", "gptq-act", "gptq-opt"; NULL for another value. */
const char *mk_qalgo_name(mk_qalgo m);
/* Parse one of those names; MK_E_ARG listing them otherwise. */
mk_status mk_qalgo_parse(const char *s, mk_qalgo *out);
/* Does method m need input statistics (every method but rtn)? */
int mk_qalgo_needs_stats(mk_qalgo m);

/* GPTQ's default damping: 1% of the mean diagonal. */
#define MK_QOPT_DAMP 0.01

/* Prepared statistics of one module's input (cols values per input row). */
typedef struct mk_qstats {
    int64_t cols;
    float *imp; /* [cols] column weights of the mse search: damped H_jj (mse) or 1 / U_jj^2 (gptq) */
    float *u;   /* [cols, cols] row-major upper Cholesky factor of (H + damp)^-1; NULL for mse;
                   gptq-act: of the permuted H, rows and columns in perm order */
    int32_t *perm; /* gptq-act: the column order (decreasing H_jj); else NULL */
    float *h;      /* gptq-opt: [cols, cols] the damped H (the objective of its refit); else NULL */
} mk_qstats;

/* Prepare statistics for method m (any but rtn) from H[cols,
 * cols] (row-major, symmetric, any positive scale: sums or means of x x^T).
 * Factorizes in double; when the damped H is still not positive definite
 * (rounding in a rank-deficient H), the damping grows tenfold up to 5
 * times. MK_E_ARG for bad arguments, non-finite or negative-diagonal H
 * (naming `what`), MK_E_FORMAT when no damping made it factorizable;
 * MK_E_NOMEM. Free with mk_qstats_free. */
mk_status mk_qstats_prepare(const float *h, int64_t cols, mk_qalgo m, double damp, const char *what,
                            mk_qstats *out);
void mk_qstats_free(mk_qstats *s); /* NULL ok; leaves *s zeroed */

/* Quantize `rows` rows of `cols` elements of in_dt (F32, F16, BF16) with
 * method m, writing exactly what mk_quant_rows writes for the same
 * parameters (wq, scales, biases: sizes from mk_quant_layout_of). Affine
 * mode only (MK_E_ARG otherwise). m == rtn: mk_quant_rows itself (s
 * ignored). mse with s NULL: unweighted search. gptq / gptq-mse need s
 * with s->cols == cols and s->u set (gptq-act s->perm, gptq-opt s->h:
 * prepared for that method). MK_E_FORMAT when a row holds a
 * non-finite value (callers check first, as for mk_quant_rows).
 * Thread-safe on disjoint outputs with a shared s. */
mk_status mk_quant_rows_opt(const mk_qparams *p, mk_qalgo m, const mk_qstats *s, mk_dtype in_dt,
                            const void *in, int64_t rows, int64_t cols, void *wq, void *scales,
                            void *biases);

#ifdef __cplusplus
}
#endif
#endif
