/* q8_ref.c's interface to the int8 grouped GEMM emulation (C and C++). */
#ifndef MK_TESTS_EMU_Q8_REF_H
#define MK_TESTS_EMU_Q8_REF_H

#include <stdint.h>

#include "moekit/weight.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A random MLX affine weight (bits, group, scale dtype sd) of rows x cols. */
void *q8r_weight(int64_t rows, int64_t cols, int bits, int group, int sd);
const mk_wt *q8r_view(const void *t);
void q8r_free(void *t);
/* y [n, nr] = x [n, cols] times rows r0 .. r0 + nr - 1 of W transposed by
 * the CPU's int8 prefill GEMM (mk_gq8_matmul on its portable table): the
 * rule of src/kernels/kern_gemm_q8.h, the CPU's bits. */
void q8r_matmul(const void *t, int64_t r0, int64_t nr, const float *x, int64_t n, float *y);
float q8r_rand(float lo, float hi);

#ifdef __cplusplus
}
#endif
#endif
