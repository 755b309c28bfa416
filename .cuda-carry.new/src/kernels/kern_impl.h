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

#include "moekit/kernels.h"
#include "moekit/weight.h"

/* Column chunk of the tiled paths: a multiple of every format's block
 * (affine groups <= 128, MX 32, NV 16) so chunk starts are always
 * block- and byte-aligned. */
#define MK_KCHUNK 512

/* ---- shared tables (wt.c) --------------------------------------------- */

typedef struct mk_luts {
    float e4m3[256]; /* FP8 E4M3FN byte -> float (0x7f/0xff NaN) */
    float e4m3_mx[256]; /* MLX's E4M3 (mxfp8 elements, nvfp4 scales): 0x7f/0xff are +-480, not NaN:
                           MLX's CPU quantizer encodes (464, 480) as 0x7f and decodes it as 480 */
    float e5m2[256]; /* FP8 E5M2 byte -> float */
    float e8m0[256]; /* 2^(b-127), 0xff NaN */
    float e2m1[16];  /* FP4 E2M1 nibble -> float: 0,.5,1,1.5,2,3,4,6, sign bit 3 */
} mk_luts;

/* Lookup tables, built on first use (thread-safe). */
const mk_luts *mk_luts_get(void);

/* Dequantize columns [c0, c1) of row r into out[0 .. c1-c0). c0 must be a
 * multiple of 8 (MK_KCHUNK multiples always are). Portable. */
void mk_wt_dequant_range(const mk_wt *w, int64_t r, int64_t c0, int64_t c1, float *out);

/* Scale/bias element i of an F32/BF16/F16 array (may be unaligned). */
static inline float mk_kern_ldf(const void *p, mk_dtype t, int64_t i) {
    if (t == MK_DT_F32) {
        float f;
        memcpy(&f, (const char *)p + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, (const char *)p + 2 * i, 2);
    return t == MK_DT_BF16 ? mk_bf16_to_f32(h) : mk_f16_to_f32(h);
}

/* FP8 block scale of (r, c); 1 when the weight has no scales. */
static inline float mk_kern_fp8_scale(const mk_wt *w, int64_t r, int64_t c) {
    if (!w->scales)
        return 1.0f;
    int64_t nbc = (w->cols + w->block_c - 1) / w->block_c;
    return mk_kern_ldf(w->scales, w->sdtype, (r / w->block_r) * nbc + c / w->block_c);
}

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
