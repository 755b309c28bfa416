/* Internal interface between the kernel files.
 *
 *   wt.c          per-format traits (row bytes, checks, portable dequant of a
 *                 column range) and the shared lookup tables
 *   kern_ref.c    portable kernel table (MK_ISA_REF)
 *   kern_avx2.c   AVX2+FMA+F16C table, compiled with target attributes only
 *   kern_avx512.c AVX-512 table, likewise
 *   matmul.c      picks a table, tiles and threads mk_matmul
 *   pool.c, ops.c thread pool and vector ops
 *
 * A kernel table (mk_kern_i) has one slot per weight format for a fused
 * single-token matvec and one for dequantizing a column range to float32;
 * a NULL slot means "use the portable one". The multi-token path dequantizes
 * tiles with `dequant` and multiplies them with `gemm_tile`. */
#ifndef MK_KERN_IMPL_H
#define MK_KERN_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/dequant.h"
#include "moekit/kernels.h"
#include "moekit/weight.h"

/* Column chunk of the tiled paths: a multiple of every format's block
 * (affine groups <= 128, MX 32, NV 16) so chunk starts are always
 * block- and byte-aligned. */
#define MK_KCHUNK 512

/* The lookup tables, mk_wt_dequant_range and mk_wt_fp8_scale are core's
 * (core/dequant.h): the kernels compute what that reference defines. */

/* ---- kernel tables ---------------------------------------------------- */

/* Per-call preparation of x for a matvec (optional): writes what the
 * format's matvec wants (group sums, a reordered copy of x) to aux, at most
 * cap floats; false when cap is too small (the caller then uses the tiled
 * path). */
typedef bool (*mk_prep_fn)(const mk_wt *w, const float *x, float *aux, size_t cap);
/* y[r - r0] = dot(W[r, :], x) for r in [r0, r1); aux from prep (or NULL). */
typedef void (*mk_matvec_fn)(const mk_wt *w, int64_t r0, int64_t r1, const float *x, const float *aux,
                             float *y);
/* out[0 .. c1-c0) = W[r, c0 .. c1), c0 a multiple of MK_KCHUNK. */
typedef void (*mk_dequant_fn)(const mk_wt *w, int64_t r, int64_t c0, int64_t c1, float *out);

typedef struct mk_kern_i {
    const char *name;
    /* sum a[i]*b[i] */
    float (*dot)(const float *a, const float *b, int64_t n);
    /* sum x[i]^2 */
    float (*sumsq)(const float *x, int64_t n);
    /* y[i] += a * x[i], a multiply then an add (never fused): the same floats
     * on every path */
    void (*axpy)(float *y, float a, const float *x, int64_t n);
    /* y[t*ldy + i] += sum_k a[i*lda + k] * x[t*ldx + k] for i < nr (<= 4), t < nt */
    void (*gemm_tile)(const float *a, int64_t lda, int nr, const float *x, int64_t ldx, int nt, int64_t k,
                      float *y, int64_t ldy);
    /* fused single-token matvec per format (optional) */
    mk_matvec_fn matvec[MK_WF_COUNT];
    /* preparation of x for that matvec (optional) */
    mk_prep_fn prep[MK_WF_COUNT];
    /* column-range dequant per format (optional) */
    mk_dequant_fn dequant[MK_WF_COUNT];
} mk_kern_i;

extern const mk_kern_i mk_kern_ref;
#if defined(__x86_64__) || defined(__i386__)
#define MK_KERN_X86 1
extern const mk_kern_i mk_kern_avx2;
extern const mk_kern_i mk_kern_avx512;
#endif

/* The active table (never NULL). */
const mk_kern_i *mk_kern_active(void);

#endif
