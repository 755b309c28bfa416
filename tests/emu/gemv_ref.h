/* gemv_ref.c's interface to the GEMV emulation (C and C++). */
#ifndef MK_TESTS_EMU_GEMV_REF_H
#define MK_TESTS_EMU_GEMV_REF_H

#include <stdint.h>

#include "moekit/weight.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { EMU_AFFINE, EMU_BF16, EMU_F16, EMU_F32, EMU_FP8, EMU_MXFP4, EMU_NVFP4, EMU_MXFP8 };
/* A random host weight of rows x cols in that format (bits, group, scale
 * dtype sd for affine; sd, block rows and columns for FP8). */
void *emu_weight(int kind, int64_t rows, int64_t cols, int bits, int group, int sd, int br, int bc);
const mk_wt *emu_view(const void *t);
/* Row r of W times x in double, and the bound's sum (cond). */
double emu_ref(const void *t, int64_t r, const double *x, double *cond);
void emu_weight_free(void *t);
float emu_rand(float lo, float hi);
/* Restart emu_rand's stream (and the weights') at s */
void emu_seed(uint64_t s);

#ifdef __cplusplus
}
#endif
#endif
