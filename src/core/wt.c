/* Weight views (weight.h): per-format traits, validation and the portable
 * dequantizer every kernel is tested against and every reader of stored
 * weights (model loading, inspect/verify, convert) decodes through.
 *
 * Each mk_wfmt has a row of `mk_wt_traits`: its name, how many bytes one
 * packed row takes, a checker for the fields that format uses, and a
 * dequantizer of a column range of one row. Nothing here is fast on purpose:
 * it is the definition of what the SIMD kernels must compute. Packed data,
 * scales and biases may be unaligned (MLX's safetensors writer does not pad),
 * so every load goes through memcpy.
 *
 * The FP8/FP4/E8M0 lookup tables (core/dequant.h) are built here once from
 * dtype.h's scalar conversions; the SIMD kernels and convert use them. */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "core/dequant.h"
#include "moekit/weight.h"

/* ---- lookup tables ---------------------------------------------------- */

static mk_luts g_luts;
static pthread_once_t g_luts_once = PTHREAD_ONCE_INIT;

static void luts_build(void) {
    for (int b = 0; b < 256; b++) {
        g_luts.e4m3[b] = mk_e4m3_to_f32((uint8_t)b);
        g_luts.e5m2[b] = mk_e5m2_to_f32((uint8_t)b);
        g_luts.e8m0[b] = mk_e8m0_to_f32((uint8_t)b);
    }
    for (int b = 0; b < 16; b++)
        g_luts.e2m1[b] = mk_e2m1_to_f32((uint8_t)b);
}

const mk_luts *mk_luts_get(void) {
    pthread_once(&g_luts_once, luts_build);
    return &g_luts;
}

/* ---- dequantizers (one per format family) ----------------------------- */

/* Plain floats: element (r, c) of an F32/BF16/F16 matrix. */
static void dq_float(const mk_wt *w, int64_t r, int64_t c0, int64_t c1, float *out) {
    mk_dtype t = w->fmt == MK_WF_F32 ? MK_DT_F32 : w->fmt == MK_WF_BF16 ? MK_DT_BF16 : MK_DT_F16;
    for (int64_t c = c0; c < c1; c++)
        out[c - c0] = mk_dtype_load_f32(t, w->data, r * w->cols + c);
}

/* FP8 with a (block_r x block_c) grid of scale_inv; E4M3 or E5M2 bytes. */
static void dq_fp8(const mk_wt *w, int64_t r, int64_t c0, int64_t c1, float *out) {
    const mk_luts *L = mk_luts_get();
    const float *lut = w->fmt == MK_WF_FP8_E4M3 ? L->e4m3 : L->e5m2;
    const uint8_t *p = (const uint8_t *)w->data + r * w->cols;
    for (int64_t c = c0; c < c1; c++)
        out[c - c0] = lut[p[c]] * mk_wt_fp8_scale(w, r, c);
}

/* MLX affine: LSB-first bit stream per row, w = scale * q + bias per group.
 * The stream is read a byte at a time so it never reads past the row. */
static void dq_affine(const mk_wt *w, int64_t r, int64_t c0, int64_t c1, float *out) {
    const int bits = w->bits;
    const uint32_t mask = (1u << bits) - 1u;
    const int64_t ng = w->cols / w->group;
    const uint8_t *p = (const uint8_t *)w->data + r * (w->cols * bits / 8) + c0 * bits / 8;
    uint64_t acc = 0;
    int have = 0;
    for (int64_t c = c0; c < c1; c++) {
        while (have < bits) {
            acc |= (uint64_t)*p++ << have;
            have += 8;
        }
        uint32_t q = (uint32_t)acc & mask;
        acc >>= bits;
        have -= bits;
        int64_t g = r * ng + c / w->group;
        float s = mk_dtype_load_f32(w->sdtype, w->scales, g);
        float b = mk_dtype_load_f32(w->sdtype, w->biases, g);
        out[c - c0] = s * (float)q + b;
    }
}

/* MXFP4 (E8M0 per 32) and NVFP4 (E4M3 per 16, times global_scale). */
static void dq_fp4(const mk_wt *w, int64_t r, int64_t c0, int64_t c1, float *out) {
    const mk_luts *L = mk_luts_get();
    const bool nv = w->fmt == MK_WF_NVFP4;
    const int64_t gs = nv ? 16 : 32, ng = w->cols / gs;
    const uint8_t *p = (const uint8_t *)w->data + r * (w->cols / 2);
    const uint8_t *sc = (const uint8_t *)w->scales + r * ng;
    for (int64_t c = c0; c < c1; c++) {
        uint8_t nib = (uint8_t)((p[c / 2] >> (4 * (c & 1))) & 15u);
        float s = nv ? L->e4m3[sc[c / gs]] * w->global_scale : L->e8m0[sc[c / gs]];
        out[c - c0] = L->e2m1[nib] * s;
    }
}

/* MXFP8: E4M3 bytes, E8M0 scale per 32. */
static void dq_mxfp8(const mk_wt *w, int64_t r, int64_t c0, int64_t c1, float *out) {
    const mk_luts *L = mk_luts_get();
    const uint8_t *p = (const uint8_t *)w->data + r * w->cols;
    const uint8_t *sc = (const uint8_t *)w->scales + r * (w->cols / 32);
    for (int64_t c = c0; c < c1; c++)
        out[c - c0] = L->e4m3[p[c]] * L->e8m0[sc[c / 32]];
}

/* ---- checks ----------------------------------------------------------- */

static bool sdtype_ok(mk_dtype t) {
    return t == MK_DT_F32 || t == MK_DT_BF16 || t == MK_DT_F16;
}

static mk_status ck_plain(const mk_wt *w, const char *what) {
    return MK_OK;
}

static mk_status ck_fp8(const mk_wt *w, const char *what) {
    if (!w->scales)
        return MK_OK; /* unscaled fp8 */
    if (w->block_r <= 0 || w->block_c <= 0)
        return mk_err(MK_E_ARG, "%s: fp8 block size must be positive, found [%d, %d]", what, w->block_r,
                      w->block_c);
    if (!sdtype_ok(w->sdtype))
        return mk_err(MK_E_UNSUPPORTED, "%s: fp8 scale dtype must be F32, BF16 or F16, found %s", what,
                      mk_dtype_name(w->sdtype));
    return MK_OK;
}

static mk_status ck_affine(const mk_wt *w, const char *what) {
    int b = w->bits, g = w->group;
    if (b != 2 && b != 3 && b != 4 && b != 5 && b != 6 && b != 8)
        return mk_err(MK_E_UNSUPPORTED, "%s: affine bits must be 2,3,4,5,6 or 8, found %d", what, b);
    if (g != 32 && g != 64 && g != 128)
        return mk_err(MK_E_UNSUPPORTED, "%s: affine group size must be 32, 64 or 128, found %d", what, g);
    if (w->cols % g != 0)
        return mk_err(MK_E_MISMATCH, "%s: %lld columns are not a multiple of group size %d", what,
                      (long long)w->cols, g);
    if (!w->scales || !w->biases)
        return mk_err(MK_E_ARG, "%s: affine weight without %s", what, w->scales ? "biases" : "scales");
    if (!sdtype_ok(w->sdtype))
        return mk_err(MK_E_UNSUPPORTED, "%s: affine scale dtype must be F32, BF16 or F16, found %s", what,
                      mk_dtype_name(w->sdtype));
    return MK_OK;
}

/* MX / NV: fixed group and element width; 0 in bits/group means "default". */
static mk_status ck_micro(const mk_wt *w, const char *what, int bits, int group) {
    if ((w->bits && w->bits != bits) || (w->group && w->group != group))
        return mk_err(MK_E_UNSUPPORTED, "%s: expected bits %d group %d, found bits %d group %d", what, bits,
                      group, w->bits, w->group);
    if (w->cols % group != 0)
        return mk_err(MK_E_MISMATCH, "%s: %lld columns are not a multiple of group size %d", what,
                      (long long)w->cols, group);
    if (!w->scales)
        return mk_err(MK_E_ARG, "%s: microscaled weight without scales", what);
    return MK_OK;
}

static mk_status ck_mxfp4(const mk_wt *w, const char *what) {
    return ck_micro(w, what, 4, 32);
}
static mk_status ck_mxfp8(const mk_wt *w, const char *what) {
    return ck_micro(w, what, 8, 32);
}

static mk_status ck_nvfp4(const mk_wt *w, const char *what) {
    MK_TRY(ck_micro(w, what, 4, 16));
    if (!(w->global_scale > 0.0f) || isinf(w->global_scale))
        return mk_err(MK_E_ARG,
                      "%s: nvfp4 global_scale must be finite and > 0 (1.0 when "
                      "absent), found %g",
                      what, (double)w->global_scale);
    return MK_OK;
}

/* ---- traits ----------------------------------------------------------- */

typedef struct mk_wt_traits {
    const char *name;
    int elem_bits; /* bits per element in data; 0 = w->bits */
    mk_status (*check)(const mk_wt *w, const char *what);
    void (*dequant)(const mk_wt *w, int64_t r, int64_t c0, int64_t c1, float *out);
} mk_wt_traits;

static const mk_wt_traits g_traits[MK_WF_COUNT] = {
    [MK_WF_F32] = {"f32", 32, ck_plain, dq_float},        [MK_WF_BF16] = {"bf16", 16, ck_plain, dq_float},
    [MK_WF_F16] = {"f16", 16, ck_plain, dq_float},        [MK_WF_FP8_E4M3] = {"fp8_e4m3", 8, ck_fp8, dq_fp8},
    [MK_WF_FP8_E5M2] = {"fp8_e5m2", 8, ck_fp8, dq_fp8}, [MK_WF_AFFINE] = {"affine", 0, ck_affine, dq_affine},
    [MK_WF_MXFP4] = {"mxfp4", 4, ck_mxfp4, dq_fp4},     [MK_WF_MXFP8] = {"mxfp8", 8, ck_mxfp8, dq_mxfp8},
    [MK_WF_NVFP4] = {"nvfp4", 4, ck_nvfp4, dq_fp4},
};

size_t mk_wt_row_bytes(const mk_wt *w) {
    if ((unsigned)w->fmt >= MK_WF_COUNT || w->cols < 0)
        return 0;
    int64_t bits = g_traits[w->fmt].elem_bits ? g_traits[w->fmt].elem_bits : w->bits;
    return (size_t)((w->cols * bits + 7) / 8);
}

size_t mk_wt_scale_bytes(const mk_wt *w) {
    const size_t sd = w->sdtype == MK_DT_F32 ? 4 : 2;
    switch (w->fmt) {
    case MK_WF_FP8_E4M3:
    case MK_WF_FP8_E5M2:
        if (!w->scales || w->block_r <= 0 || w->block_c <= 0)
            return 0;
        return (size_t)((w->rows + w->block_r - 1) / w->block_r) * (size_t)((w->cols + w->block_c - 1) / w->block_c) *
               sd;
    case MK_WF_AFFINE: return w->group > 0 ? (size_t)w->rows * (size_t)(w->cols / w->group) * sd : 0;
    case MK_WF_MXFP4:
    case MK_WF_MXFP8: return (size_t)w->rows * (size_t)(w->cols / 32);
    case MK_WF_NVFP4: return (size_t)w->rows * (size_t)(w->cols / 16);
    default: return 0;
    }
}

mk_status mk_wt_check(const mk_wt *w, const char *what) {
    if (!what)
        what = "weight";
    if (!w)
        return mk_err(MK_E_ARG, "%s: NULL weight", what);
    if ((unsigned)w->fmt >= MK_WF_COUNT)
        return mk_err(MK_E_UNSUPPORTED, "%s: unknown weight format %d", what, (int)w->fmt);
    if (w->rows < 0 || w->cols < 0)
        return mk_err(MK_E_ARG, "%s: negative shape [%lld, %lld]", what, (long long)w->rows,
                      (long long)w->cols);
    if (!w->data && w->rows > 0 && w->cols > 0)
        return mk_err(MK_E_ARG, "%s: NULL data", what);
    mk_status s = g_traits[w->fmt].check(w, what);
    if (s != MK_OK)
        return s;
    return MK_OK;
}

void mk_wt_dequant_range(const mk_wt *w, int64_t r, int64_t c0, int64_t c1, float *out) {
    g_traits[w->fmt].dequant(w, r, c0, c1, out);
}

void mk_wt_dequant_row(const mk_wt *w, int64_t r, float *out) {
    g_traits[w->fmt].dequant(w, r, 0, w->cols, out);
}
