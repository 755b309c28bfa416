/* The one reference dequantizer (wt.c) and its lookup tables, below every
 * module that reads weights: the kernels (tested against it), model
 * loading, inspect/verify and convert all decode stored values through
 * these, so there is one meaning of "the value of a stored weight".
 * Decoding of single elements (f16, bf16, E4M3, ...) is in moekit/dtype.h;
 * the tables here are those scalar functions tabulated once. */
#ifndef MK_CORE_DEQUANT_H
#define MK_CORE_DEQUANT_H

#include <stdint.h>

#include "moekit/dtype.h"
#include "moekit/weight.h"

typedef struct mk_luts {
    float e4m3[256];    /* FP8 E4M3FN byte -> float (0x7f/0xff NaN): checkpoint FP8, MLX
                           mxfp8 elements and nvfp4 scales (mk_e4m3_to_f32) */
    float e5m2[256];    /* FP8 E5M2 byte -> float */
    float e8m0[256];    /* 2^(b-127), 0xff NaN */
    float e2m1[16];     /* FP4 E2M1 nibble -> float: 0,.5,1,1.5,2,3,4,6, sign bit 3 */
} mk_luts;

/* Lookup tables, built on first use (thread-safe). */
const mk_luts *mk_luts_get(void);

/* Dequantize columns [c0, c1) of row r into out[0 .. c1-c0). c0 must be a
 * multiple of 8 (whole bytes of every packed format). Portable, slow on
 * purpose: the definition the fast kernels are tested against. */
void mk_wt_dequant_range(const mk_wt *w, int64_t r, int64_t c0, int64_t c1, float *out);

/* FP8 block scale of (r, c); 1 when the weight has no scales. */
static inline float mk_wt_fp8_scale(const mk_wt *w, int64_t r, int64_t c) {
    if (!w->scales)
        return 1.0f;
    int64_t nbc = (w->cols + w->block_c - 1) / w->block_c;
    return mk_dtype_load_f32(w->sdtype, w->scales, (r / w->block_r) * nbc + c / w->block_c);
}

#endif
