/* DECODE, the first half of every computed convert operation: the stored
 * bytes of a region of a source module -> float32 values, one chunk at a
 * time, then one rounding to the output dtype by encode.c (cv_encode).
 *
 * Every decoder reads exactly the source bytes of its chunk with pread
 * (never mmap: mapped pages would count as resident memory) into caller
 * scratch, computes in float32 and rounds once to the output dtype:
 *   FLOAT   w                      (+ add: the zero-centred norm shift)
 *   FP8     fp8(w[r,c]) * scale_inv[r/br, c/bc]   per 2-D matrix; partial
 *           edge blocks simply index the last block (pad, scale, crop)
 *   AFFINE  scale * q + bias       (MLX, LSB-first bit stream per row)
 *   CT      scale * (u - zp)       (u, zp unsigned nibbles; symmetric zp = 8)
 *   CT_BIAS -scale * zp            (MLX biases of a repacked INT4 module)
 *   FPDQ    MLX mxfp4 / mxfp8 / nvfp4 (mk_dequant_rows, MLX's own
 *           arithmetic straight in the output dtype: the one decoder that
 *           does not pass through float32)
 * The float32 products are exact for FP8 (4-bit mantissa x 24-bit scale
 * still rounds once) and for INT4 (8-bit scale mantissa x 4-bit integer), so
 * rounding to the output dtype is the only rounding.
 *
 * Nothing here knows about the output target or about quantizing: ops.c
 * dispatches a piece to its decoder, quant_ops.c decodes a quantized
 * module's float input through cv_dec_run before quantizing it. */
#include <stdlib.h>
#include <math.h>
#include <string.h>

#include "convert/conv_impl.h"
#include "core/dequant.h"
#include "moekit/quant.h"

static const mk_tensor_info *part(const cv_piece *p, int k) { return p->mod->t[k]; }

/* Bytes per module row of tensor k of the module. */
static uint64_t row_bytes(const cv_piece *p, int k) { return part(p, k)->nbytes / (uint64_t)p->mod->rows; }

/* Row i of a dequantizing piece is built straight in the output when that
 * is float32, else in the scratch `row` and encoded by row_done. */
static float *row_dst(mk_dtype dt, void *out, int64_t i, int64_t C, float *row) {
    return dt == MK_DT_F32 ? (float *)((unsigned char *)out + (size_t)(i * C) * 4) : row;
}

/* Finish row i: add the piece's shift (norms), encode unless built in place. */
static void row_done(const cv_piece *p, mk_dtype dt, float *dst, int64_t C, void *out, int64_t i) {
    if (p->add != 0.0f)
        for (int64_t c = 0; c < C; c++)
            dst[c] += p->add;
    if (dt != MK_DT_F32)
        cv_encode(dt, dst, C, (unsigned char *)out + (size_t)(i * C) * cv_esize(dt));
}


/* Scale rows [r0, r1] of tensor t (cols wide, any float dtype) as float32. */
static mk_status read_scales(const mk_ckpt *ck, const mk_tensor_info *t, int64_t r0, int64_t r1, int64_t cols,
                             unsigned char *tmp, float *out) {
    size_t es = cv_esize(t->dtype);
    size_t n = (size_t)((r1 - r0 + 1) * cols);
    MK_TRY(mk_ckpt_read(ck, t, (uint64_t)r0 * (uint64_t)cols * es, tmp, n * es));
    if (!mk_dtype_to_f32(t->dtype, tmp, out, n))
        return mk_err(MK_E_UNSUPPORTED, "tensor '%s': scales of dtype %s cannot be decoded", t->name,
                      mk_dtype_name(t->dtype));
    return MK_OK;
}

/* ------------------------------------------------------------- FLOAT */

static size_t float_scratch(const cv_piece *p, int64_t n) {
    return (size_t)n * (cv_esize(p->mod->vdt) + 4) + 16;
}

static mk_status float_run(const mk_ckpt *ck, const cv_piece *p, mk_dtype dt, int64_t a, int64_t n,
                           unsigned char *scratch, void *out) {
    const mk_tensor_info *t = part(p, CV_T_MAIN);
    size_t es = cv_esize(t->dtype);
    uint64_t first = (uint64_t)p->row0 * (uint64_t)p->mod->cols + (uint64_t)a;
    unsigned char *raw = scratch;
    float *f = (float *)(scratch + (((size_t)n * es + 15) & ~(size_t)15));
    MK_TRY(mk_ckpt_read(ck, t, first * es, raw, (size_t)n * es));
    if (!mk_dtype_to_f32(t->dtype, raw, f, (size_t)n))
        return mk_err(MK_E_UNSUPPORTED, "tensor '%s': dtype %s has no float conversion", t->name,
                      mk_dtype_name(t->dtype));
    if (p->add != 0.0f)
        for (int64_t i = 0; i < n; i++)
            f[i] += p->add;
    if (p->negexp)
        for (int64_t i = 0; i < n; i++)
            f[i] = -expf(f[i]);
    cv_encode(dt, f, n, out);
    return MK_OK;
}

/* --------------------------------------------------------------- FP8 */

/* Scale-grid rows touched by module rows [R0, R0+n). */
static void fp8_srows(const cv_mod *m, int64_t R0, int64_t n, int64_t *s0, int64_t *s1) {
    int64_t gr = (m->mrows + m->block_r - 1) / m->block_r;
    int64_t Ra = R0, Rb = R0 + n - 1;
    *s0 = (Ra / m->mrows) * gr + (Ra % m->mrows) / m->block_r;
    *s1 = (Rb / m->mrows) * gr + (Rb % m->mrows) / m->block_r;
}

static size_t fp8_scratch(const cv_piece *p, int64_t n) {
    const cv_mod *m = p->mod;
    /* block rows a chunk of n rows can touch: matrices smaller than a block
     * contribute one each */
    int64_t gc = (m->cols + m->block_c - 1) / m->block_c;
    int64_t unit = m->mrows < m->block_r ? m->mrows : m->block_r;
    size_t ns = (size_t)((n / (unit > 0 ? unit : 1) + 2) * gc);
    return (size_t)n * (size_t)m->cols + ns * 8 + (size_t)m->cols * 4 + (size_t)gc * 512 + 128;
}

static mk_status fp8_run(const mk_ckpt *ck, const cv_piece *p, mk_dtype dt, int64_t a, int64_t n,
                         unsigned char *scratch, void *out) {
    const cv_mod *m = p->mod;
    const mk_luts *L = mk_luts_get(); /* core's tables: one E4M3/E5M2 decode */
    const float *lut = m->vdt == MK_DT_F8_E5M2 ? L->e5m2 : L->e4m3;
    int64_t C = m->cols, R0 = p->row0 + a, gc = (C + m->block_c - 1) / m->block_c;
    int64_t gr = (m->mrows + m->block_r - 1) / m->block_r, s0, s1;
    fp8_srows(m, R0, n, &s0, &s1);
    size_t wbytes = (size_t)(n * C), nsc = (size_t)((s1 - s0 + 1) * gc);
    unsigned char *w = scratch;
    float *sc = (float *)(scratch + ((wbytes + 15) & ~(size_t)15));
    unsigned char *stmp = (unsigned char *)(sc + nsc);
    float *row = (float *)(stmp + ((nsc * 4 + 15) & ~(size_t)15));
    uint16_t *tab = (uint16_t *)(void *)(row + ((C + 15) & ~(int64_t)15)); /* gc x 256 bf16 */
    const float *tab_for = NULL;
    MK_TRY(mk_ckpt_read(ck, part(p, CV_T_MAIN), (uint64_t)R0 * (uint64_t)C, w, wbytes));
    MK_TRY(read_scales(ck, part(p, CV_T_SCALE), s0, s1, gc, stmp, sc));
    for (int64_t i = 0; i < n; i++) {
        int64_t R = R0 + i;
        const float *srow = sc + ((R / m->mrows) * gr + (R % m->mrows) / m->block_r - s0) * gc;
        const unsigned char *wr = w + i * C;
        if (dt == MK_DT_BF16 && p->add == 0.0f) {
            /* The common case. A 128x128 block shares one scale, so its 256
             * possible outputs bf16(fp8 * scale) are tabulated once per block
             * row and every element becomes one lookup. */
            if (srow != tab_for) {
                float prod[256];
                for (int64_t cb = 0; cb < gc; cb++) {
                    for (int b = 0; b < 256; b++)
                        prod[b] = lut[b] * srow[cb];
                    cv_encode(MK_DT_BF16, prod, 256, (unsigned char *)(tab + cb * 256));
                }
                tab_for = srow;
            }
            uint16_t *o = (uint16_t *)(void *)((unsigned char *)out + (size_t)(i * C) * 2);
            for (int64_t cb = 0; cb < gc; cb++) {
                const uint16_t *t = tab + cb * 256;
                int64_t c1 = (cb + 1) * m->block_c < C ? (cb + 1) * m->block_c : C;
                for (int64_t c = cb * m->block_c; c < c1; c++)
                    o[c] = t[wr[c]];
            }
            continue;
        }
        float *dst = row_dst(dt, out, i, C, row);
        for (int64_t cb = 0; cb < gc; cb++) {
            float s = srow[cb];
            int64_t c1 = (cb + 1) * m->block_c < C ? (cb + 1) * m->block_c : C;
            for (int64_t c = cb * m->block_c; c < c1; c++)
                dst[c] = lut[wr[c]] * s;
        }
        row_done(p, dt, dst, C, out, i);
    }
    return MK_OK;
}

/* ------------------------------------------------------------ AFFINE */

static size_t affine_scratch(const cv_piece *p, int64_t n) {
    const cv_mod *m = p->mod;
    int64_t ng = m->cols / m->group;
    return (size_t)n * (size_t)(row_bytes(p, CV_T_MAIN) + 2 * (uint64_t)ng * 8) + (size_t)m->cols * 4 + 64;
}

static mk_status affine_run(const mk_ckpt *ck, const cv_piece *p, mk_dtype dt, int64_t a, int64_t n,
                            unsigned char *scratch, void *out) {
    const cv_mod *m = p->mod;
    int64_t C = m->cols, ng = C / m->group, R0 = p->row0 + a;
    size_t wrb = (size_t)row_bytes(p, CV_T_MAIN), nsc = (size_t)(n * ng);
    unsigned char *w = scratch;
    float *sc = (float *)(scratch + (((size_t)n * wrb + 15) & ~(size_t)15));
    float *bi = sc + nsc;
    unsigned char *tmp = (unsigned char *)(bi + nsc);
    float *row = (float *)(tmp + ((nsc * 4 + 15) & ~(size_t)15));
    MK_TRY(mk_ckpt_read(ck, part(p, CV_T_MAIN), (uint64_t)R0 * wrb, w, (size_t)n * wrb));
    MK_TRY(read_scales(ck, part(p, CV_T_SCALE), R0, R0 + n - 1, ng, tmp, sc));
    MK_TRY(read_scales(ck, part(p, CV_T_BIAS), R0, R0 + n - 1, ng, tmp, bi));
    /* the library's dequantizer (the definition the quantizer's vectors
     * check), in float32: scale * q + bias */
    mk_qparams qp;
    MK_TRY(mk_quant_params(MK_QMODE_AFFINE, m->bits, m->group, 0.0f, &qp));
    for (int64_t i = 0; i < n; i++) {
        float *dst = row_dst(dt, out, i, C, row);
        MK_TRY(mk_dequant_rows(&qp, MK_DT_F32, w + (size_t)i * wrb, sc + i * ng, bi + i * ng, 1, C, MK_DT_F32,
                               dst));
        row_done(p, dt, dst, C, out, i);
    }
    return MK_OK;
}

/* ---------------------------------------------------------------- CT */

static size_t ct_scratch(const cv_piece *p, int64_t n) {
    const cv_mod *m = p->mod;
    int64_t ng = m->cols / m->group;
    return (size_t)n * (size_t)(row_bytes(p, CV_T_MAIN) + (uint64_t)ng * 8) + (size_t)(n / 8 + 2) * (size_t)ng * 4 +
           (size_t)m->cols * 4 + 64;
}

/* Zero-point nibble of row R, group g (packed 8 rows per word along dim 0). */
static inline uint32_t zp_at(const uint32_t *zp, int64_t zrow0, int64_t ng, int64_t R, int64_t g) {
    return (zp[(R / 8 - zrow0) * ng + g] >> (4 * (R % 8))) & 15u;
}

/* Shared by CT and CT_BIAS: weights (optional), scales and zero points of rows [R0, R0+n). */
typedef struct ct_rows {
    const unsigned char *w;
    const float *sc;
    const uint32_t *zp;
    int64_t zrow0;
    float *row;
} ct_rows;

static mk_status ct_load(const mk_ckpt *ck, const cv_piece *p, int64_t R0, int64_t n, bool with_w,
                         unsigned char *scratch, ct_rows *cr) {
    const cv_mod *m = p->mod;
    int64_t ng = m->cols / m->group;
    size_t wrb = (size_t)row_bytes(p, CV_T_MAIN), nsc = (size_t)(n * ng);
    unsigned char *w = scratch;
    size_t wlen = with_w ? (((size_t)n * wrb + 15) & ~(size_t)15) : 0;
    float *sc = (float *)(scratch + wlen);
    unsigned char *tmp = (unsigned char *)(sc + nsc);
    uint32_t *zp = (uint32_t *)(tmp + ((nsc * 4 + 15) & ~(size_t)15));
    int64_t z0 = R0 / 8, z1 = (R0 + n - 1) / 8;
    float *row = (float *)(zp + (z1 - z0 + 1) * ng);
    if (with_w)
        MK_TRY(mk_ckpt_read(ck, part(p, CV_T_MAIN), (uint64_t)R0 * wrb, w, (size_t)n * wrb));
    MK_TRY(read_scales(ck, part(p, CV_T_SCALE), R0, R0 + n - 1, ng, tmp, sc));
    if (part(p, CV_T_ZP))
        MK_TRY(mk_ckpt_read(ck, part(p, CV_T_ZP), (uint64_t)z0 * (uint64_t)ng * 4, zp,
                            (size_t)((z1 - z0 + 1) * ng) * 4));
    cr->w = w;
    cr->sc = sc;
    cr->zp = part(p, CV_T_ZP) ? zp : NULL;
    cr->zrow0 = z0;
    cr->row = row;
    return MK_OK;
}

static mk_status ct_run(const mk_ckpt *ck, const cv_piece *p, mk_dtype dt, int64_t a, int64_t n,
                        unsigned char *scratch, void *out) {
    const cv_mod *m = p->mod;
    int64_t C = m->cols, ng = C / m->group, R0 = p->row0 + a;
    size_t wrb = (size_t)row_bytes(p, CV_T_MAIN);
    ct_rows cr;
    MK_TRY(ct_load(ck, p, R0, n, true, scratch, &cr));
    for (int64_t i = 0; i < n; i++) {
        float *dst = row_dst(dt, out, i, C, cr.row);
        const unsigned char *wr = cr.w + (size_t)i * wrb;
        for (int64_t g = 0; g < ng; g++) {
            float s = cr.sc[i * ng + g];
            float z = cr.zp ? (float)zp_at(cr.zp, cr.zrow0, ng, R0 + i, g) : 8.0f;
            for (int64_t c = g * m->group; c < (g + 1) * m->group; c++)
                dst[c] = s * ((float)((wr[c >> 1] >> (4 * (c & 1))) & 15u) - z);
        }
        row_done(p, dt, dst, C, out, i);
    }
    return MK_OK;
}

static size_t ct_bias_scratch(const cv_piece *p, int64_t n) { return ct_scratch(p, n); }

static mk_status ct_bias_run(const mk_ckpt *ck, const cv_piece *p, mk_dtype dt, int64_t a, int64_t n,
                             unsigned char *scratch, void *out) {
    const cv_mod *m = p->mod;
    int64_t ng = m->cols / m->group, R0 = p->row0 + a;
    size_t oes = cv_esize(dt);
    ct_rows cr;
    MK_TRY(ct_load(ck, p, R0, n, false, scratch, &cr));
    for (int64_t i = 0; i < n; i++) {
        for (int64_t g = 0; g < ng; g++) {
            float z = cr.zp ? (float)zp_at(cr.zp, cr.zrow0, ng, R0 + i, g) : 8.0f;
            cr.row[g] = -(cr.sc[i * ng + g] * z);
        }
        cv_encode(dt, cr.row, ng, (unsigned char *)out + (size_t)(i * ng) * oes);
    }
    return MK_OK;
}

/* -------------------------------------------------------------- FPDQ */

static size_t al(size_t n) { return (n + 63) & ~(size_t)63; }

static mk_status fp_params(const cv_mod *m, mk_qparams *qp) {
    int g = m->group < 0 ? -m->group : m->group;
    mk_qmode mode = m->bits == 8 ? MK_QMODE_MXFP8 : g == 16 ? MK_QMODE_NVFP4 : MK_QMODE_MXFP4;
    if (mk_quant_params(mode, m->bits, g, 0.0f, qp) != MK_OK)
        return mk_err(MK_E_UNSUPPORTED, "MLX module '%s': %d bits, group %d fits no fp mode (mxfp4, mxfp8, nvfp4)",
                      m->name, m->bits, g);
    return MK_OK;
}

static size_t fpdq_scratch(const cv_piece *p, int64_t n) {
    const cv_mod *m = p->mod;
    uint64_t wr = m->t[CV_T_MAIN]->nbytes / (uint64_t)m->rows, sr = m->t[CV_T_SCALE]->nbytes / (uint64_t)m->rows;
    return al((size_t)n * (size_t)wr) + al((size_t)n * (size_t)sr) + 64;
}

static mk_status fpdq_run(const mk_ckpt *ck, const cv_piece *p, mk_dtype dt, int64_t a, int64_t n,
                         unsigned char *scratch, void *out) {
    const cv_mod *m = p->mod;
    /* dequantized straight into dt as MLX does, so there is no float32 row
     * to add a norm shift to; norms (1-D) are never fp-quantized */
    if (p->add != 0.0f)
        return mk_err(MK_E_INTERNAL, "convert: a value shift planned on fp-quantized '%s'", m->name);
    mk_qparams qp;
    MK_TRY(fp_params(m, &qp));
    uint64_t wr = m->t[CV_T_MAIN]->nbytes / (uint64_t)m->rows, sr = m->t[CV_T_SCALE]->nbytes / (uint64_t)m->rows;
    uint64_t R0 = (uint64_t)(p->row0 + a);
    unsigned char *w = scratch, *sc = scratch + al((size_t)n * (size_t)wr);
    MK_TRY(mk_ckpt_read(ck, m->t[CV_T_MAIN], R0 * wr, w, (size_t)((uint64_t)n * wr)));
    MK_TRY(mk_ckpt_read(ck, m->t[CV_T_SCALE], R0 * sr, sc, (size_t)((uint64_t)n * sr)));
    return mk_dequant_rows(&qp, m->t[CV_T_SCALE]->dtype, w, sc, NULL, n, m->cols, dt, out);
}

/* -------------------------------------------------------------- table */

typedef struct dec_op {
    const char *name;
    size_t (*scratch)(const cv_piece *p, int64_t n);
    mk_status (*run)(const mk_ckpt *ck, const cv_piece *p, mk_dtype dt, int64_t a, int64_t n,
                     unsigned char *scratch, void *out);
} dec_op;

/* Every decoder works on whole rows except FLOAT, which chunks by elements. */
static const dec_op g_dec[CV_OP_COUNT] = {
    [CV_OP_FLOAT] = {"float", float_scratch, float_run},
    [CV_OP_FP8] = {"fp8-dequant", fp8_scratch, fp8_run},
    [CV_OP_AFFINE] = {"affine-dequant", affine_scratch, affine_run},
    [CV_OP_CT] = {"int4-dequant", ct_scratch, ct_run},
    [CV_OP_CT_BIAS] = {"int4-biases", ct_bias_scratch, ct_bias_run},
    [CV_OP_FPDQ] = {"fp-dequant", fpdq_scratch, fpdq_run},
};

bool cv_dec_is(cv_op op) { return (unsigned)op < CV_OP_COUNT && g_dec[op].run != NULL; }

size_t cv_dec_scratch(const cv_piece *p, int64_t n) { return cv_dec_is(p->op) ? g_dec[p->op].scratch(p, n) : 0; }

mk_status cv_dec_run(const mk_ckpt *ck, const cv_piece *p, mk_dtype dt, int64_t a, int64_t n, void *scratch,
                     void *out) {
    if (!cv_dec_is(p->op))
        return mk_err(MK_E_INTERNAL, "convert: operation %d is not a decoder", (int)p->op);
    mk_status s = g_dec[p->op].run(ck, p, dt, a, n, scratch, out);
    if (s != MK_OK)
        return mk_err_wrap(s, "%s of '%s'", g_dec[p->op].name, p->mod->name);
    return MK_OK;
}
