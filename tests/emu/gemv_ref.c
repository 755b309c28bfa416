/* The weights and the double reference of the GEMV emulation
 * (gemv_emu.cpp), in C: tests/unit/cuda_test_util.h's random weights in
 * every format and its ct_dot, over mk_wt_dequant_row (src/core/wt.c, the
 * CPU's definition of every format): the same reference as
 * test_cuda_gemv, never the device code. */
#include "cuda_test_util.h"
#include "gemv_ref.h"

void *emu_weight(int kind, int64_t rows, int64_t cols, int bits, int group, int sd, int br, int bc) {
    ct_wt *t = malloc(sizeof *t);
    if (!t)
        return NULL;
    switch (kind) {
    case EMU_AFFINE: *t = ct_affine(rows, cols, bits, group, (mk_dtype)sd, 1.0f); break;
    case EMU_BF16: *t = ct_plain(rows, cols, MK_WF_BF16, 0.1f); break;
    case EMU_F16: *t = ct_plain(rows, cols, MK_WF_F16, 0.1f); break;
    case EMU_F32: *t = ct_plain(rows, cols, MK_WF_F32, 0.1f); break;
    case EMU_FP8: *t = ct_fp8(rows, cols, br, bc, (mk_dtype)sd, 1.0f); break;
    case EMU_MXFP4: *t = ct_fp4(rows, cols, false, 1.0f); break;
    case EMU_MXFP8: *t = ct_mx8(rows, cols); break;
    default: *t = ct_fp4(rows, cols, true, 1.0f); break;
    }
    return t;
}

const mk_wt *emu_view(const void *t) { return &((const ct_wt *)t)->w; }

double emu_ref(const void *t, int64_t r, const double *x, double *cond) {
    const ct_wt *w = t;
    float *row = malloc((size_t)w->w.cols * sizeof *row);
    if (!row)
        return NAN;
    double s = ct_dot(w, r, x, row, cond);
    free(row);
    return s;
}

void emu_weight_free(void *t) {
    if (t)
        ct_free(t);
    free(t);
}

float emu_rand(float lo, float hi) { return ct_f(lo, hi); }

void emu_seed(uint64_t s) { ct_rng = s; }
