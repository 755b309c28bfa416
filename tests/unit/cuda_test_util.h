/* Helpers for the CUDA unit tests (test_cuda_*.c): the skip-with-a-reason
 * device check, random host weights in the layouts MLX writes, and the
 * per-element bias the error bounds need.
 *
 * Reference values never come from the device code: they are computed on
 * the host from mk_wt_dequant_row (src/kernels/wt.c, the portable
 * definition of every format) in double precision. */
#ifndef MK_CUDA_TEST_UTIL_H
#define MK_CUDA_TEST_UTIL_H

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/mk_cuda.h"
#include "moekit/dtype.h"
#include "moekit/weight.h"

/* Skip the calling cmocka test, printing why, when no usable device. */
#define CT_NEED_GPU()                                                       \
    do {                                                                    \
        int ct_n_ = 0;                                                      \
        if (mk_cuda_probe(&ct_n_) != MK_OK) {                               \
            printf("SKIP %s: no GPU: %s\n", __func__, mk_err_msg());        \
            fflush(stdout);                                                 \
            skip();                                                         \
        }                                                                   \
    } while (0)

#define CT_OK(expr)                                                         \
    do {                                                                    \
        mk_status ct_s_ = (expr);                                           \
        if (ct_s_ != MK_OK)                                                 \
            fail_msg("%s -> %s: %s", #expr, mk_status_name(ct_s_), mk_err_msg()); \
    } while (0)

static uint64_t ct_rng = 0x243f6a8885a308d3ull;

static inline uint32_t ct_u32(void) {
    ct_rng ^= ct_rng << 13;
    ct_rng ^= ct_rng >> 7;
    ct_rng ^= ct_rng << 17;
    return (uint32_t)(ct_rng >> 11);
}

static inline float ct_f(float lo, float hi) {
    return lo + (hi - lo) * (float)(ct_u32() & 0xffffff) / 16777216.0f;
}

/* A host weight with owned buffers, and a float copy of its biases (affine)
 * for the bounds. */
typedef struct ct_wt {
    mk_wt w;
    float *bias_f, *scale_f; /* rows x ngroups, or NULL */
} ct_wt;

static inline void ct_store(void *p, mk_dtype t, int64_t i, float v) {
    if (t == MK_DT_F32) {
        memcpy((char *)p + 4 * i, &v, 4);
    } else {
        uint16_t h = t == MK_DT_BF16 ? mk_f32_to_bf16(v) : mk_f32_to_f16(v);
        memcpy((char *)p + 2 * i, &h, 2);
    }
}


/* Random affine weight as MLX stores it: u32-packed LSB-first codes, scales
 * > 0 and biases (= group minimum) in sdtype. `amp` scales the magnitudes. */
static inline ct_wt ct_affine(int64_t rows, int64_t cols, int bits, int group, mk_dtype sd, float amp) {
    ct_wt t;
    memset(&t, 0, sizeof t);
    t.w.fmt = MK_WF_AFFINE;
    t.w.rows = rows;
    t.w.cols = cols;
    t.w.bits = bits;
    t.w.group = group;
    t.w.sdtype = sd;
    size_t nd = (size_t)(rows * cols * bits / 8), ng = (size_t)(rows * (cols / group));
    size_t es = sd == MK_DT_F32 ? 4 : 2;
    uint32_t *d = malloc(nd);
    void *s = malloc(ng * es), *b = malloc(ng * es);
    t.bias_f = malloc(ng * sizeof(float));
    t.scale_f = malloc(ng * sizeof(float));
    for (size_t i = 0; i < nd / 4; i++)
        d[i] = ct_u32() ^ (ct_u32() << 16);
    for (size_t g = 0; g < ng; g++) {
        ct_store(s, sd, (int64_t)g, amp * ct_f(0.002f, 0.02f));
        ct_store(b, sd, (int64_t)g, amp * ct_f(-0.15f, 0.03f));
        t.bias_f[g] = mk_dtype_load_f32(sd, b, (int64_t)g);
        t.scale_f[g] = mk_dtype_load_f32(sd, s, (int64_t)g);
    }
    t.w.data = d;
    t.w.scales = s;
    t.w.biases = b;
    return t;
}

/* Random plain-float weight (F32/BF16/F16) in [-amp, amp]. */
static inline ct_wt ct_plain(int64_t rows, int64_t cols, mk_wfmt fmt, float amp) {
    ct_wt t;
    memset(&t, 0, sizeof t);
    t.w.fmt = fmt;
    t.w.rows = rows;
    t.w.cols = cols;
    mk_dtype dt = fmt == MK_WF_F32 ? MK_DT_F32 : fmt == MK_WF_BF16 ? MK_DT_BF16 : MK_DT_F16;
    size_t es = fmt == MK_WF_F32 ? 4 : 2;
    void *d = malloc((size_t)(rows * cols) * es);
    for (int64_t i = 0; i < rows * cols; i++)
        ct_store(d, dt, i, ct_f(-amp, amp));
    t.w.data = d;
    return t;
}

/* Random FP8 E4M3 weight with block scales (DeepSeek-V3's layout: codes
 * row-major, one scale_inv per br x bc block in sd): every code but the
 * two NaNs, scales chosen so that |W| stays below ~2. */
static inline ct_wt ct_fp8(int64_t rows, int64_t cols, int br, int bc, mk_dtype sd, float amp) {
    ct_wt t;
    memset(&t, 0, sizeof t);
    t.w.fmt = MK_WF_FP8_E4M3;
    t.w.rows = rows;
    t.w.cols = cols;
    t.w.block_r = br;
    t.w.block_c = bc;
    t.w.sdtype = sd;
    t.w.global_scale = 1.0f;
    int64_t nbr = (rows + br - 1) / br, nbc = (cols + bc - 1) / bc;
    uint8_t *d = malloc((size_t)(rows * cols));
    void *s = malloc((size_t)(nbr * nbc) * (sd == MK_DT_F32 ? 4 : 2));
    for (int64_t i = 0; i < rows * cols; i++) {
        uint8_t b;
        do
            b = (uint8_t)ct_u32();
        while ((b & 0x7f) == 0x7f);
        d[i] = b;
    }
    for (int64_t i = 0; i < nbr * nbc; i++)
        ct_store(s, sd, i, amp * ct_f(0.0005f, 0.004f));
    t.w.data = d;
    t.w.scales = s;
    return t;
}

/* Random MXFP4 (nv false: an E8M0 scale per 32 codes) or NVFP4 (an E4M3
 * scale per 16, times a global scale) weight: LSB-first E2M1 nibbles,
 * every code; scales positive, so that |W| stays below ~3. */
static inline ct_wt ct_fp4(int64_t rows, int64_t cols, bool nv, float amp) {
    ct_wt t;
    memset(&t, 0, sizeof t);
    t.w.fmt = nv ? MK_WF_NVFP4 : MK_WF_MXFP4;
    t.w.rows = rows;
    t.w.cols = cols;
    t.w.bits = 4;
    t.w.group = nv ? 16 : 32;
    t.w.global_scale = nv ? 0.0123f * amp : 1.0f;
    size_t nd = (size_t)(rows * cols / 2), ns = (size_t)(rows * (cols / t.w.group));
    uint8_t *d = malloc(nd), *sc = malloc(ns);
    for (size_t i = 0; i < nd; i++)
        d[i] = (uint8_t)ct_u32();
    for (size_t i = 0; i < ns; i++) /* E8M0 2^-7..2^-1; E4M3 0x30..0x57 (0.25..~3.5) */
        sc[i] = nv ? (uint8_t)(0x30 + ct_u32() % 0x28) : (uint8_t)(120 + ct_u32() % 7);
    t.w.data = d;
    t.w.scales = sc;
    return t;
}

/* Random MXFP8 weight: E4M3 codes (every finite one: 0x7f and 0xff are
 * NaN), an E8M0 scale per 32 (2^-9..2^-5, so that |W| stays below ~14). */
static inline ct_wt ct_mx8(int64_t rows, int64_t cols) {
    ct_wt t;
    memset(&t, 0, sizeof t);
    t.w.fmt = MK_WF_MXFP8;
    t.w.rows = rows;
    t.w.cols = cols;
    t.w.bits = 8;
    t.w.group = 32;
    t.w.global_scale = 1.0f;
    size_t nd = (size_t)(rows * cols), ns = (size_t)(rows * (cols / 32));
    uint8_t *d = malloc(nd), *sc = malloc(ns);
    for (size_t i = 0; i < nd; i++) {
        uint8_t b;
        do
            b = (uint8_t)ct_u32();
        while ((b & 0x7f) == 0x7f);
        d[i] = b;
    }
    for (size_t i = 0; i < ns; i++)
        sc[i] = (uint8_t)(118 + ct_u32() % 5);
    t.w.data = d;
    t.w.scales = sc;
    return t;
}

static inline void ct_free(ct_wt *t) {
    free((void *)t->w.data);
    free((void *)t->w.scales);
    free((void *)t->w.biases);
    free(t->bias_f);
    free(t->scale_f);
    memset(t, 0, sizeof *t);
}

/* |bias| of element (r, c) (0 for plain formats). */
static inline double ct_absbias(const ct_wt *t, int64_t r, int64_t c) {
    if (!t->bias_f)
        return 0.0;
    return fabs((double)t->bias_f[r * (t->w.cols / t->w.group) + c / t->w.group]);
}

/* The per-element scale of the device's float32 error: |W| + 2|b| (the
 * device folds the bias out of the group: s*sum(q x) + b*sum(x), and
 * |s q| <= |W| + |b|), plus 48|s| at 4 bits, where it computes
 * 32 s sum(f x) + (b - 16 s) sum(x) with f = 0.5 + q/32 (cuda_impl.cuh):
 * terms of size 32|s| f <= 32|s| and |b| + 16|s|. */
static inline double ct_scale_of(const ct_wt *t, int64_t r, int64_t c, float w) {
    double v = fabs((double)w) + 2.0 * ct_absbias(t, r, c);
    if (t->scale_f && t->w.bits == 4)
        v += 48.0 * fabs((double)t->scale_f[r * (t->w.cols / t->w.group) + c / t->w.group]);
    return v;
}

/* Reference row dot in double from the portable dequantizer; *cond gets
 * sum_c ct_scale_of(r, c) |x_c|. */
static inline double ct_dot(const ct_wt *t, int64_t r, const double *x, float *rowbuf, double *cond) {
    mk_wt_dequant_row(&t->w, r, rowbuf);
    double s = 0.0, c = 0.0;
    for (int64_t j = 0; j < t->w.cols; j++) {
        s += (double)rowbuf[j] * x[j];
        c += ct_scale_of(t, r, j, rowbuf[j]) * fabs(x[j]);
    }
    if (cond)
        *cond = c;
    return s;
}

#endif
