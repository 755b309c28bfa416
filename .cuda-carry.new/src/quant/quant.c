/* Public face of the quantization library: the mode traits table, parameter
 * and dtype validation with messages that say what was expected, array
 * sizes, and the row-range entry points, which check everything once and
 * hand whole rows to the mode's kernels (quant_affine.c, quant_fp.c) through
 * a table. Also the NaN/Inf counter and the chunkable relative-error sums.
 *
 * Status codes: MK_E_ARG for parameters a caller or flag chose (mode, bits,
 * group, shapes, NULL buffers); MK_E_UNSUPPORTED for a tensor dtype the
 * quantizer does not take (it came from a file, not a flag). */
#include "quant/quant_impl.h"

#include <inttypes.h>
#include <stdbool.h>

#define BIT(b) (1u << (b))

static const mk_quant_traits g_traits[] = {
    [MK_QMODE_AFFINE] = {"affine", BIT(2) | BIT(3) | BIT(4) | BIT(5) | BIT(6) | BIT(8),
                         BIT(5) | BIT(6) | BIT(7), "2,3,4,5,6,8", "32,64,128", 4, 64, true, MK_DT_INVALID},
    [MK_QMODE_MXFP4] = {"mxfp4", BIT(4), BIT(5), "4", "32", 4, 32, false, MK_DT_U8},
    [MK_QMODE_MXFP8] = {"mxfp8", BIT(8), BIT(5), "8", "32", 8, 32, false, MK_DT_U8},
    [MK_QMODE_NVFP4] = {"nvfp4", BIT(4), BIT(4), "4", "16", 4, 16, false, MK_DT_U8},
};
#define N_MODES ((int)(sizeof g_traits / sizeof g_traits[0]))

/* Kernels per mode, one signature for all (the fp modes ignore biases). */
typedef struct quant_ops {
    void (*rows)(const mk_qparams *p, mk_dtype in_dt, const unsigned char *in, int64_t rows, int64_t cols,
                 unsigned char *wq, unsigned char *scales, unsigned char *biases);
    void (*deq)(const mk_qparams *p, mk_dtype scale_dt, const unsigned char *wq_row,
                const unsigned char *s_row, const unsigned char *b_row, int64_t g0, int64_t ng,
                mk_dtype work_dt, float *out);
} quant_ops;

static void fp_rows(const mk_qparams *p, mk_dtype in_dt, const unsigned char *in, int64_t rows, int64_t cols,
                    unsigned char *wq, unsigned char *scales, unsigned char *biases) {
    (void)biases;
    mk_q_fp_rows(p, in_dt, in, rows, cols, wq, scales);
}

static void fp_deq(const mk_qparams *p, mk_dtype scale_dt, const unsigned char *wq_row,
                   const unsigned char *s_row, const unsigned char *b_row, int64_t g0, int64_t ng,
                   mk_dtype work_dt, float *out) {
    (void)scale_dt, (void)b_row;
    mk_q_fp_deq(p, wq_row, s_row, g0, ng, work_dt, out);
}

static const quant_ops g_ops[] = {
    [MK_QMODE_AFFINE] = {mk_q_affine_rows, mk_q_affine_deq},
    [MK_QMODE_MXFP4] = {fp_rows, fp_deq},
    [MK_QMODE_MXFP8] = {fp_rows, fp_deq},
    [MK_QMODE_NVFP4] = {fp_rows, fp_deq},
};

const mk_quant_traits *mk_quant_info(mk_qmode mode) {
    return (unsigned)mode < (unsigned)N_MODES ? &g_traits[mode] : NULL;
}

/* ---- validation --------------------------------------------------------- */

/* Is v = 2^k with bit k set in mask? */
static bool is_pow2_in(int v, unsigned mask) {
    if (v <= 0 || (v & (v - 1)) != 0)
        return false;
    return (mask & BIT(__builtin_ctz((unsigned)v))) != 0;
}

mk_status mk_quant_check(mk_qmode mode, int bits, int group, int64_t cols, const char *what) {
    const char *w = what ? what : "", *sep = what ? ": " : "";
    const mk_quant_traits *t = mk_quant_info(mode);
    if (!t)
        return mk_err(MK_E_ARG,
                      "%s%squantization mode %d unknown (expected affine, mxfp4, "
                      "mxfp8 or nvfp4)",
                      w, sep, (int)mode);
    if (bits < 0 || bits > 31 || !(t->bits_mask & BIT(bits)))
        return mk_err(MK_E_ARG, "%s%sbits %d not supported by mode %s (expected %s)", w, sep, bits, t->name,
                      t->bits_list);
    if (!is_pow2_in(group, t->group_mask))
        return mk_err(MK_E_ARG, "%s%sgroup size %d not supported by mode %s (expected %s)", w, sep, group,
                      t->name, t->group_list);
    if (cols <= 0 || cols % group != 0)
        return mk_err(MK_E_ARG,
                      "%s%slast dimension %" PRId64 " is not a positive multiple of "
                      "the group size %d (mode %s)",
                      w, sep, cols, group, t->name);
    return MK_OK;
}

mk_status mk_quant_params(mk_qmode mode, int bits, int group, float global_scale, mk_qparams *out) {
    const mk_quant_traits *t = mk_quant_info(mode);
    if (t) {
        bits = bits ? bits : t->default_bits;
        group = group ? group : t->default_group;
    }
    MK_TRY(mk_quant_check(mode, bits, group, group, NULL));
    if (!(global_scale >= 0.0f) || isinf(global_scale))
        return mk_err(MK_E_ARG, "global scale %g must be a finite value >= 0 (0: none)",
                      (double)global_scale);
    if (global_scale > 0.0f && mode != MK_QMODE_NVFP4)
        return mk_err(MK_E_ARG, "a global scale applies to nvfp4 only, not %s", t->name);
    out->mode = mode;
    out->bits = bits;
    out->group = group;
    out->global_scale = global_scale;
    return MK_OK;
}

/* Everything a kernel relies on, checked once per call. */
static mk_status check_call(const mk_qparams *p, int64_t cols, const char *what) {
    if (!p)
        return mk_err(MK_E_ARG, "%s: no quantization parameters", what);
    MK_TRY(mk_quant_check(p->mode, p->bits, p->group, cols, what));
    if (!(p->global_scale >= 0.0f) || isinf(p->global_scale) ||
        (p->global_scale > 0.0f && p->mode != MK_QMODE_NVFP4))
        return mk_err(MK_E_ARG, "%s: global scale %g invalid for mode %s", what, (double)p->global_scale,
                      g_traits[p->mode].name);
    return MK_OK;
}

static bool is_float_dt(mk_dtype t) {
    return t == MK_DT_F32 || t == MK_DT_F16 || t == MK_DT_BF16;
}

static mk_status check_float_dt(mk_dtype t, const char *what, const char *role) {
    if (is_float_dt(t))
        return MK_OK;
    return mk_err(MK_E_UNSUPPORTED, "%s: %s dtype %s not supported (expected F32, F16 or BF16)", what, role,
                  mk_dtype_name(t));
}

/* ---- sizes -------------------------------------------------------------- */

int64_t mk_quant_packed_cols(const mk_qparams *p, int64_t cols) {
    return cols / 32 * p->bits + cols % 32 * p->bits / 32;
}

mk_status mk_quant_layout_of(const mk_qparams *p, mk_dtype in_dt, int64_t cols, mk_quant_layout *out) {
    MK_TRY(check_call(p, cols, "quantization layout"));
    MK_TRY(check_float_dt(in_dt, "quantization layout", "input"));
    const mk_quant_traits *t = &g_traits[p->mode];
    size_t es = in_dt == MK_DT_F32 ? 4 : 2;
    out->wq_cols = mk_quant_packed_cols(p, cols);
    out->groups = cols / p->group;
    out->scale_dt = t->scale_dtype == MK_DT_INVALID ? in_dt : t->scale_dtype;
    size_t ses = out->scale_dt == MK_DT_U8 ? 1 : es;
    if ((uint64_t)cols > SIZE_MAX / 8)
        return mk_err(MK_E_ARG, "quantization layout: %" PRId64 " columns overflow", cols);
    out->in_row_bytes = (size_t)cols * es;
    out->wq_row_bytes = (size_t)out->wq_cols * 4;
    out->scale_row_bytes = (size_t)out->groups * ses;
    out->bias_row_bytes = t->has_biases ? out->scale_row_bytes : 0;
    return MK_OK;
}

mk_status mk_quant_out_bytes(const mk_qparams *p, mk_dtype in_dt, int64_t rows, int64_t cols,
                             uint64_t *wq_bytes, uint64_t *scale_bytes, uint64_t *bias_bytes) {
    mk_quant_layout l;
    MK_TRY(mk_quant_layout_of(p, in_dt, cols, &l));
    uint64_t w, s, b;
    if (rows < 0)
        return mk_err(MK_E_ARG, "%" PRId64 " rows: the row count must be >= 0", rows);
    if (__builtin_mul_overflow((uint64_t)rows, (uint64_t)l.wq_row_bytes, &w) ||
        __builtin_mul_overflow((uint64_t)rows, (uint64_t)l.scale_row_bytes, &s) ||
        __builtin_mul_overflow((uint64_t)rows, (uint64_t)l.bias_row_bytes, &b))
        return mk_err(MK_E_ARG, "quantized size of %" PRId64 " x %" PRId64 " overflows", rows, cols);
    if (wq_bytes)
        *wq_bytes = w;
    if (scale_bytes)
        *scale_bytes = s;
    if (bias_bytes)
        *bias_bytes = b;
    return MK_OK;
}

/* ---- quantize / dequantize ---------------------------------------------- */

/* An affine scale is (max - min) / (2^bits - 1) in float32: a group whose
 * finite values span more than float32 holds (3e38 and -3e38) gets an
 * infinite scale, which would dequantize to Inf/NaN. That is an input error
 * (MLX stores the Inf); groups with NaN/Inf inputs are the caller's to
 * count and refuse (mk_quant_count_nonfinite). The fp modes' scales are
 * finite for every finite input. */
static mk_status check_scales(const mk_qparams *p, mk_dtype in_dt, const void *in, int64_t rows, int64_t cols,
                              const void *scales) {
    if (p->mode != MK_QMODE_AFFINE)
        return MK_OK;
    const int64_t ng = cols / p->group;
    const size_t es = in_dt == MK_DT_F32 ? 4 : 2; /* the scales are stored in the input dtype */
    const unsigned char *sc = scales, *x0 = in;
    float x[MK_Q_MAX_GROUP];
    for (int64_t r = 0; r < rows; r++)
        for (int64_t g = 0; g < ng; g++) {
            if (isfinite(mk_q_load(in_dt, sc + (size_t)(r * ng) * es, g)))
                continue;
            mk_q_load_n(in_dt, x0 + (size_t)(r * cols) * es, g * p->group, p->group, x);
            float lo = x[0], hi = x[0];
            bool finite = true;
            for (int j = 0; j < p->group; j++) {
                finite = finite && isfinite(x[j]);
                lo = x[j] < lo ? x[j] : lo;
                hi = x[j] > hi ? x[j] : hi;
            }
            if (finite)
                return mk_err(MK_E_FORMAT,
                              "quantize: row %lld, columns %lld..%lld: values from %g to %g span more than "
                              "float32 can hold, so the affine scale (max - min) / %d is infinite; refusing "
                              "to store it (such a tensor cannot be affine-quantized)",
                              (long long)r, (long long)(g * p->group), (long long)((g + 1) * p->group - 1),
                              (double)lo, (double)hi, (1 << p->bits) - 1);
        }
    return MK_OK;
}

mk_status mk_quant_rows(const mk_qparams *p, mk_dtype in_dt, const void *in, int64_t rows, int64_t cols,
                        void *wq, void *scales, void *biases) {
    mk_quant_layout l;
    MK_TRY(check_call(p, cols, "quantize"));
    MK_TRY(check_float_dt(in_dt, "quantize", "input"));
    MK_TRY(mk_quant_out_bytes(p, in_dt, rows, cols, NULL, NULL, NULL));
    MK_TRY(mk_quant_layout_of(p, in_dt, cols, &l));
    if (rows == 0)
        return MK_OK;
    if (!in || !wq || !scales || (l.bias_row_bytes && !biases))
        return mk_err(MK_E_ARG, "quantize: NULL %s buffer",
                      !in       ? "input"
                      : !wq     ? "packed weight"
                      : !scales ? "scales"
                                : "biases");
    g_ops[p->mode].rows(p, in_dt, in, rows, cols, wq, scales, biases);
    return check_scales(p, in_dt, in, rows, cols, scales);
}

/* Is scale_dt what mode p stores its scales in? */
static mk_status check_scale_dt(const mk_qparams *p, mk_dtype scale_dt) {
    if (g_traits[p->mode].has_biases)
        return check_float_dt(scale_dt, "dequantize", "scale");
    if (scale_dt == MK_DT_U8 || (scale_dt == MK_DT_F8_E8M0 && p->mode != MK_QMODE_NVFP4) ||
        (scale_dt == MK_DT_F8_E4M3 && p->mode == MK_QMODE_NVFP4))
        return MK_OK;
    return mk_err(MK_E_UNSUPPORTED,
                  "dequantize: scale dtype %s does not match mode %s "
                  "(expected U8 or %s)",
                  mk_dtype_name(scale_dt), g_traits[p->mode].name,
                  p->mode == MK_QMODE_NVFP4 ? "F8_E4M3" : "F8_E8M0");
}

#define DEQ_CHUNK 1024 /* floats of stack scratch per pass */

mk_status mk_dequant_rows(const mk_qparams *p, mk_dtype scale_dt, const void *wq, const void *scales,
                          const void *biases, int64_t rows, int64_t cols, mk_dtype out_dt, void *out) {
    MK_TRY(check_call(p, cols, "dequantize"));
    MK_TRY(check_scale_dt(p, scale_dt));
    MK_TRY(check_float_dt(out_dt, "dequantize", "output"));
    bool affine = g_traits[p->mode].has_biases;
    mk_quant_layout l;
    MK_TRY(mk_quant_layout_of(p, affine ? scale_dt : out_dt, cols, &l));
    if (rows < 0)
        return mk_err(MK_E_ARG, "dequantize: %" PRId64 " rows", rows);
    if (rows == 0)
        return MK_OK;
    if (!wq || !scales || !out || (affine && !biases))
        return mk_err(MK_E_ARG, "dequantize: NULL buffer");
    /* float32 output: float32 arithmetic; else MLX's, in the scale dtype
     * (affine) or the output dtype (fp modes) */
    mk_dtype work = out_dt == MK_DT_F32 ? MK_DT_F32 : affine ? scale_dt : out_dt;
    size_t ses = affine ? (scale_dt == MK_DT_F32 ? 4 : 2) : 1;
    const int64_t per = DEQ_CHUNK / p->group;
    float buf[DEQ_CHUNK];
    for (int64_t r = 0; r < rows; r++) {
        const unsigned char *wrow = (const unsigned char *)wq + (size_t)r * l.wq_row_bytes;
        const unsigned char *srow = (const unsigned char *)scales + (size_t)r * l.groups * ses;
        const unsigned char *brow =
            affine ? (const unsigned char *)biases + (size_t)r * l.groups * ses : NULL;
        for (int64_t g = 0; g < l.groups; g += per) {
            int64_t ng = l.groups - g < per ? l.groups - g : per;
            g_ops[p->mode].deq(p, scale_dt, wrow, srow, brow, g, ng, work, buf);
            for (int64_t j = 0; j < ng * p->group; j++)
                mk_q_store(out_dt, out, r * cols + g * p->group + j, buf[j]);
        }
    }
    return MK_OK;
}

/* ---- checks and error sums ---------------------------------------------- */

mk_status mk_quant_count_nonfinite(mk_dtype dt, const void *data, uint64_t n, uint64_t *count) {
    if (!count || (n && !data))
        return mk_err(MK_E_ARG, "count_nonfinite: NULL argument");
    const unsigned char *b = data;
    uint64_t c = 0;
    if (dt == MK_DT_F32) {
        for (uint64_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, b + 4 * i, 4);
            c += (u & 0x7f800000u) == 0x7f800000u;
        }
    } else if (dt == MK_DT_F16 || dt == MK_DT_BF16) {
        uint16_t e = dt == MK_DT_F16 ? 0x7c00u : 0x7f80u; /* exponent all ones */
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, b + 2 * i, 2);
            c += (h & e) == e;
        }
    } else if (dt == MK_DT_F64) {
        for (uint64_t i = 0; i < n; i++) {
            uint64_t u;
            memcpy(&u, b + 8 * i, 8);
            c += (u & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
        }
    } else {
        return mk_err(MK_E_UNSUPPORTED,
                      "count_nonfinite: dtype %s is not a float type "
                      "(expected F32, F16, BF16 or F64)",
                      mk_dtype_name(dt));
    }
    *count = c;
    return MK_OK;
}

mk_status mk_quant_err_rows(const mk_qparams *p, mk_dtype in_dt, const void *in, const void *wq,
                            const void *scales, const void *biases, int64_t rows, int64_t cols,
                            mk_quant_err *acc) {
    mk_quant_layout l;
    MK_TRY(check_call(p, cols, "quantization error"));
    MK_TRY(check_float_dt(in_dt, "quantization error", "input"));
    MK_TRY(mk_quant_layout_of(p, in_dt, cols, &l));
    if (rows < 0 || !acc)
        return mk_err(MK_E_ARG, "quantization error: bad rows or accumulator");
    if (rows > 0 && (!in || !wq || !scales || (l.bias_row_bytes && !biases)))
        return mk_err(MK_E_ARG, "quantization error: NULL buffer");
    const int G = p->group;
    float x[MK_Q_MAX_GROUP], d[MK_Q_MAX_GROUP];
    for (int64_t r = 0; r < rows; r++) {
        const unsigned char *irow = (const unsigned char *)in + (size_t)r * l.in_row_bytes;
        const unsigned char *wrow = (const unsigned char *)wq + (size_t)r * l.wq_row_bytes;
        const unsigned char *srow = (const unsigned char *)scales + (size_t)r * l.scale_row_bytes;
        const unsigned char *brow =
            l.bias_row_bytes ? (const unsigned char *)biases + (size_t)r * l.bias_row_bytes : NULL;
        for (int64_t g = 0; g < l.groups; g++) {
            mk_q_load_n(in_dt, irow, g * G, G, x);
            g_ops[p->mode].deq(p, l.scale_dt, wrow, srow, brow, g, 1, MK_DT_F32, d);
            for (int j = 0; j < G; j++) {
                double e = (double)x[j] - (double)d[j];
                acc->err2 += e * e;
                acc->ref2 += (double)x[j] * (double)x[j];
                if (fabs(e) > acc->max_abs)
                    acc->max_abs = fabs(e);
            }
        }
        acc->n += (uint64_t)cols;
    }
    return MK_OK;
}

void mk_quant_err_merge(mk_quant_err *into, const mk_quant_err *from) {
    into->err2 += from->err2;
    into->ref2 += from->ref2;
    into->n += from->n;
    if (from->max_abs > into->max_abs)
        into->max_abs = from->max_abs;
}

double mk_quant_err_rel(const mk_quant_err *acc) {
    if (acc->ref2 == 0.0)
        return acc->err2 == 0.0 ? 0.0 : INFINITY;
    return sqrt(acc->err2 / acc->ref2);
}
