/* How one linear module is stored: building an mk_wt view from checkpoint
 * tensors, for every storage scheme moekit reads (FORMATS.md 2, 4, 5).
 *
 * A view is a slice of a tensor: a whole 2-D weight, or expert e of a
 * stacked (E, R, .) tensor, optionally only rows [row0, row0+rows) (the
 * gate/up halves of HF fused gate_up_proj). Each scheme checks every shape
 * it relies on and says, on failure, which tensor has which shape and what
 * was expected:
 *   float       F32/BF16/F16 weight
 *   FP8 block   F8 weight + <weight>_scale_inv grid (squeezed grids accepted
 *               when the element count equals the grid)
 *   MLX         U32 packed weight + .scales (+ .biases); bits and group from
 *               the config entry of the module, and the packed width must
 *               imply exactly those bits: a mismatch is an error, never a guess
 *   INT4 (CT)   weight_packed I32 + weight_scale, viewed as affine 4-bit with
 *               biases -8*scale (symmetric) or -scale*zp, allocated once here. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "model/load.h"

typedef struct vslice {
    int64_t E, e;       /* stacked: expert count and index (E = 0: a 2-D tensor) */
    int64_t R;          /* rows of the tensor (per expert) */
    int64_t row0, rows; /* the slice */
    int64_t cols;       /* logical in-features */
} vslice;

const mk_tensor_info *mk_ld_find(const mk_ld *ld, const char *fmt, ...) {
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= sizeof name)
        return NULL;
    return mk_ckpt_find(ld->ck, name);
}

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

static const char *shape_str(const mk_tensor_info *t, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < t->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (k < n)
        snprintf(buf + k, n - k, "]");
    return buf;
}

/* The tensor must be [E,] R, last. */
static mk_status check_shape(const mk_tensor_info *t, const vslice *s, int64_t last,
                             const char *what) {
    int nd = s->E ? 3 : 2;
    bool ok = t->ndim == nd && t->shape[nd - 2] == s->R && t->shape[nd - 1] == last &&
              (!s->E || t->shape[0] == s->E);
    if (ok)
        return MK_OK;
    char got[96];
    if (s->E)
        return mk_err(MK_E_FORMAT, "tensor '%s' (%s): shape %s, expected [%lld, %lld, %lld]",
                      t->name, what, shape_str(t, got, sizeof got), (long long)s->E,
                      (long long)s->R, (long long)last);
    return mk_err(MK_E_FORMAT, "tensor '%s' (%s): shape %s, expected [%lld, %lld]", t->name, what,
                  shape_str(t, got, sizeof got), (long long)s->R, (long long)last);
}

/* Stand-in address of every view built by mk_model_check (check_only):
 * the views are never read, only their shapes and formats are checked. */
static const uint8_t k_check_dummy[16];

/* The mapped bytes of t, or the stand-in when only checking. */
static const uint8_t *ld_data(const mk_ld *ld, const mk_tensor_info *t) {
    return ld->check_only ? k_check_dummy : mk_ckpt_data(ld->ck, t);
}

/* Address of row (e, row0) of a tensor whose rows are row_bytes long. */
static const void *slice_ptr(const mk_ld *ld, const mk_tensor_info *t, const vslice *s,
                             size_t row_bytes) {
    if (ld->check_only)
        return k_check_dummy;
    const uint8_t *base = mk_ckpt_data(ld->ck, t);
    if (!base)
        return NULL;
    return base + (size_t)((s->e * s->R + s->row0)) * row_bytes;
}

static mk_status no_map(const mk_tensor_info *t) {
    return mk_err(MK_E_INTERNAL, "tensor '%s': checkpoint is not memory-mapped", t->name);
}

/* ---- float -------------------------------------------------------------- */

static mk_status view_float(mk_ld *ld, const mk_tensor_info *t, const vslice *s, mk_wt *w) {
    MK_TRY(check_shape(t, s, s->cols, "float weight"));
    w->fmt = t->dtype == MK_DT_F32 ? MK_WF_F32 : t->dtype == MK_DT_BF16 ? MK_WF_BF16 : MK_WF_F16;
    w->data = slice_ptr(ld, t, s, mk_wt_row_bytes(w));
    return w->data ? MK_OK : no_map(t);
}

/* ---- FP8 block ---------------------------------------------------------- */

/* Replace an FP8 view by a model-owned bf16 copy: each fp8 * scale_inv
 * product rounded to bf16 (mk_model_opts.fp8_to_bf16). */
static mk_status fp8_materialise(mk_ld *ld, const mk_tensor_info *t, mk_wt *w) {
    uint16_t *dst = mk_model_alloc(ld->m, (size_t)(w->rows * w->cols) * sizeof(uint16_t));
    float *row = mk_malloc((size_t)w->cols * sizeof(float));
    if (!dst || !row) {
        free(row);
        return mk_err(MK_E_NOMEM, "tensor '%s': no memory for a bf16 copy of [%lld, %lld]",
                      t->name, (long long)w->rows, (long long)w->cols);
    }
    for (int64_t r = 0; r < w->rows; r++) {
        mk_wt_dequant_row(w, r, row);
        for (int64_t c = 0; c < w->cols; c++)
            dst[r * w->cols + c] = mk_f32_to_bf16(row[c]);
    }
    free(row);
    mk_wt b = {.fmt = MK_WF_BF16, .rows = w->rows, .cols = w->cols, .data = dst,
               .global_scale = 1.0f};
    *w = b;
    return MK_OK;
}

/* FP8 block scales multiply every weight of their block: a NaN or infinite
 * one makes the block's outputs non-finite, so it is refused at load, naming
 * the element, instead of surfacing later as NaN logits. */
static mk_status check_scales_finite(mk_ld *ld, const mk_tensor_info *st, uint64_t first,
                                     uint64_t n) {
    float buf[1024];
    for (uint64_t i = 0; i < n; i += 1024) {
        uint64_t k = n - i < 1024 ? n - i : 1024;
        MK_TRY(mk_ckpt_read_f32(ld->ck, st, first + i, k, buf));
        for (uint64_t j = 0; j < k; j++)
            if (!isfinite(buf[j]))
                return mk_err(MK_E_FORMAT, "tensor '%s': element %llu is %s; FP8 block scales "
                              "(scale_inv) must be finite", st->name,
                              (unsigned long long)(first + i + j), isnan(buf[j]) ? "NaN" : "infinite");
    }
    return MK_OK;
}

static mk_status view_fp8(mk_ld *ld, const mk_tensor_info *t, const vslice *s, mk_wt *w) {
    MK_TRY(check_shape(t, s, s->cols, "fp8 weight"));
    const mk_tensor_info *st = mk_ld_find(ld, "%s_scale_inv", t->name);
    if (!st)
        return mk_err(MK_E_FORMAT, "fp8 weight '%s' has no '%s_scale_inv' (block scales)",
                      t->name, t->name);
    if (st->dtype != MK_DT_F32 && st->dtype != MK_DT_BF16 && st->dtype != MK_DT_F16)
        return mk_err(MK_E_UNSUPPORTED, "tensor '%s': scale dtype %s, expected F32, BF16 or F16",
                      st->name, mk_dtype_name(st->dtype));
    const mk_qcfg *q = &ld->cfg->quant;
    int br = q->block[0] > 0 ? q->block[0] : 128, bc = q->block[1] > 0 ? q->block[1] : 128;
    int64_t gr = cdiv(s->R, br), gc = cdiv(s->cols, bc), ne = (s->E ? s->E : 1) * gr * gc;
    /* Any shape with exactly the grid's element count is accepted: transformers
     * 5.x writes squeezed 1-D grids ([2] for [1, 2]). */
    if ((int64_t)st->numel != ne) {
        char got[96];
        return mk_err(MK_E_FORMAT,
                      "tensor '%s': scale grid %s has %llu elements, expected %lld (%lld x %lld "
                      "blocks of %dx%d over weight rows %lld, cols %lld%s)",
                      st->name, shape_str(st, got, sizeof got), (unsigned long long)st->numel,
                      (long long)ne, (long long)gr, (long long)gc, br, bc, (long long)s->R,
                      (long long)s->cols, s->E ? " per expert" : "");
    }
    if (s->row0 % br)
        return mk_err(MK_E_UNSUPPORTED,
                      "tensor '%s': rows %lld.. of the fused weight start inside a %d-row scale "
                      "block, so its scale grid does not split",
                      t->name, (long long)s->row0, br);
    w->fmt = t->dtype == MK_DT_F8_E4M3 ? MK_WF_FP8_E4M3 : MK_WF_FP8_E5M2;
    w->block_r = br;
    w->block_c = bc;
    w->sdtype = st->dtype;
    w->data = slice_ptr(ld, t, s, (size_t)s->cols);
    const uint8_t *sb = ld_data(ld, st);
    if (!w->data || !sb)
        return no_map(t);
    size_t esz = mk_dtype_info(st->dtype)->bits / 8;
    w->scales = sb + (size_t)((s->e * gr + s->row0 / br) * gc) * esz;
    MK_TRY(check_scales_finite(ld, st, (uint64_t)((s->e * gr + s->row0 / br) * gc),
                               (uint64_t)(cdiv(s->rows, br) * gc)));
    ld->seen_fp8 = true;
    return ld->fp8_to_bf16 && !ld->check_only ? fp8_materialise(ld, t, w) : MK_OK;
}

/* ---- MLX quantized ------------------------------------------------------ */

static mk_status view_mlx(mk_ld *ld, const char *mod, const mk_tensor_info *t, const vslice *s,
                          mk_wt *w) {
    const mk_tensor_info *sc = mk_ld_find(ld, "%s.scales", mod);
    if (!sc)
        return mk_err(MK_E_FORMAT, "packed U32 weight '%s' has no '%s.scales'", t->name, mod);
    int bits = 0, group = 0;
    mk_qmode mode = MK_QMODE_AFFINE;
    if (!mk_qcfg_lookup(&ld->cfg->quant, mod, true, &bits, &group, &mode))
        return mk_err(MK_E_MISMATCH,
                      "module '%s' is stored quantized (U32 + scales) but config.json %s", mod,
                      ld->cfg->quant.method == MK_QM_MLX
                          ? "marks it as not quantized"
                          : "has no MLX \"quantization\" block");
    int64_t packed = t->ndim >= 2 ? t->shape[t->ndim - 1] : -1;
    if (bits <= 0 || group <= 0 || packed * 32 != s->cols * bits) {
        char implied[48];
        if (packed > 0 && (packed * 32) % s->cols == 0)
            snprintf(implied, sizeof implied, "%lld", (long long)(packed * 32 / s->cols));
        else
            snprintf(implied, sizeof implied, "a non-integer number of");
        return mk_err(MK_E_MISMATCH,
                      "module '%s': config says %d-bit (group %d, %s) but packed width %lld "
                      "for in-features %lld implies %s bits",
                      mod, bits, group, mk_qmode_name(mode), (long long)packed,
                      (long long)s->cols, implied);
    }
    MK_TRY(check_shape(t, s, packed, "packed weight"));
    if (s->cols % group)
        return mk_err(MK_E_MISMATCH, "module '%s': in-features %lld not a multiple of group %d",
                      mod, (long long)s->cols, group);
    int64_t ng = s->cols / group;
    MK_TRY(check_shape(sc, s, ng, "scales"));
    static const mk_wfmt fmts[] = {[MK_QMODE_AFFINE] = MK_WF_AFFINE,
                                   [MK_QMODE_MXFP4] = MK_WF_MXFP4,
                                   [MK_QMODE_MXFP8] = MK_WF_MXFP8,
                                   [MK_QMODE_NVFP4] = MK_WF_NVFP4};
    if ((unsigned)mode > MK_QMODE_NVFP4)
        return mk_err(MK_E_UNSUPPORTED, "module '%s': unknown quantization mode", mod);
    /* The mode must agree with the stored tensors: microscaled modes keep one
     * scale byte (E8M0 / E4M3) per group and no biases; reading BF16 affine
     * scales as exponent bytes would give silently wrong weights. */
    if (mode != MK_QMODE_AFFINE && (sc->dtype != MK_DT_U8 || mk_ld_find(ld, "%s.biases", mod)))
        return mk_err(MK_E_MISMATCH,
                      "module '%s': config.json says mode %s, but the checkpoint stores %s scales%s "
                      "(%s keeps U8 scales and no biases)",
                      mod, mk_qmode_name(mode), mk_dtype_name(sc->dtype),
                      mk_ld_find(ld, "%s.biases", mod) ? " and biases" : "", mk_qmode_name(mode));
    w->fmt = fmts[mode];
    w->bits = bits;
    w->group = group;
    w->sdtype = sc->dtype;
    w->global_scale = 1.0f;
    w->data = slice_ptr(ld, t, s, (size_t)packed * 4);
    size_t ssz = mk_dtype_info(sc->dtype)->bits / 8;
    w->scales = slice_ptr(ld, sc, s, (size_t)ng * ssz);
    if (!w->data || !w->scales)
        return no_map(t);
    if (mode == MK_QMODE_AFFINE) {
        const mk_tensor_info *bi = mk_ld_find(ld, "%s.biases", mod);
        if (!bi)
            return mk_err(MK_E_FORMAT, "affine module '%s' has no '%s.biases'", mod, mod);
        MK_TRY(check_shape(bi, s, ng, "biases"));
        if (bi->dtype != sc->dtype)
            return mk_err(MK_E_FORMAT, "module '%s': biases are %s but scales are %s", mod,
                          mk_dtype_name(bi->dtype), mk_dtype_name(sc->dtype));
        w->biases = slice_ptr(ld, bi, s, (size_t)ng * ssz);
        ld->seen_affine = true;
    } else {
        ld->seen_mx = true;
    }
    return MK_OK;
}

/* ---- compressed-tensors INT4 -------------------------------------------- */

static mk_status ct_biases(mk_ld *ld, const char *mod, const mk_tensor_info *sc, int64_t rows,
                           int64_t ng, mk_wt *w) {
    if (ld->check_only) { /* the zero points' shape only; no biases are computed */
        const mk_tensor_info *zp = mk_ld_find(ld, "%s.weight_zero_point", mod);
        if (!ld->cfg->quant.ct_symmetric &&
            (!zp || zp->dtype != MK_DT_I32 || zp->numel != (uint64_t)(cdiv(rows, 8) * ng)))
            return mk_err(MK_E_FORMAT, "asymmetric INT4 module '%s': weight_zero_point missing or "
                          "not I32 [%lld, %lld]", mod, (long long)cdiv(rows, 8), (long long)ng);
        w->biases = k_check_dummy;
        return MK_OK;
    }
    size_t ssz = mk_dtype_info(sc->dtype)->bits / 8, n = (size_t)(rows * ng);
    void *bias = mk_model_alloc(ld->m, n * ssz);
    float *tmp = mk_malloc(n * sizeof(float));
    if (!bias || !tmp) {
        free(tmp);
        return mk_err(MK_E_NOMEM, "module '%s': no memory for INT4 biases", mod);
    }
    mk_status st = mk_ckpt_read_f32(ld->ck, sc, 0, n, tmp);
    const mk_tensor_info *zp = mk_ld_find(ld, "%s.weight_zero_point", mod);
    const uint8_t *zd = zp ? mk_ckpt_data(ld->ck, zp) : NULL;
    if (st == MK_OK && !ld->cfg->quant.ct_symmetric) {
        /* zero points: I32 (ceil(rows/8), ng), nibble r%8 of word [r/8, g] */
        if (!zp || zp->dtype != MK_DT_I32 || zp->numel != (uint64_t)(cdiv(rows, 8) * ng) || !zd)
            st = mk_err(MK_E_FORMAT, "asymmetric INT4 module '%s': weight_zero_point missing or "
                        "not I32 [%lld, %lld]", mod, (long long)cdiv(rows, 8), (long long)ng);
    }
    for (size_t i = 0; st == MK_OK && i < n; i++) {
        int64_t r = (int64_t)i / ng, g = (int64_t)i % ng;
        float zu = 8.0f; /* symmetric: stored u = q + 8, so w = s*u - 8s */
        if (!ld->cfg->quant.ct_symmetric) {
            uint32_t word;
            memcpy(&word, zd + 4 * (size_t)((r / 8) * ng + g), 4);
            zu = (float)((word >> (4 * (r % 8))) & 15u);
        }
        tmp[i] = -tmp[i] * zu;
    }
    if (st == MK_OK && !mk_dtype_from_f32(sc->dtype, tmp, bias, n))
        st = mk_err(MK_E_UNSUPPORTED, "tensor '%s': scale dtype %s", sc->name,
                    mk_dtype_name(sc->dtype));
    free(tmp);
    w->biases = bias;
    return st;
}

static mk_status view_ct(mk_ld *ld, const char *mod, const mk_tensor_info *t, const vslice *s,
                         mk_wt *w) {
    const mk_qcfg *q = &ld->cfg->quant;
    if (s->E || s->row0)
        return mk_err(MK_E_UNSUPPORTED, "tensor '%s': stacked INT4 weights", t->name);
    if (q->method != MK_QM_CT)
        return mk_err(MK_E_MISMATCH, "tensor '%s' is INT4 pack-quantized but config.json has no "
                      "compressed-tensors quantization_config", t->name);
    /* the same refusal as convert's (format/config_check.c) */
    MK_TRY(mk_ct_check(q, mk_ckpt_dir(ld->ck), mod, mk_ld_find(ld, "%s.weight_zero_point", mod) != NULL));
    if (t->dtype != MK_DT_I32 || s->cols % 8)
        return mk_err(MK_E_FORMAT, "tensor '%s': dtype %s, expected I32 with in-features %lld a "
                      "multiple of 8", t->name, mk_dtype_name(t->dtype), (long long)s->cols);
    MK_TRY(check_shape(t, s, s->cols / 8, "INT4 packed weight"));
    const mk_tensor_info *sc = mk_ld_find(ld, "%s.weight_scale", mod);
    if (!sc)
        return mk_err(MK_E_FORMAT, "INT4 module '%s' has no '%s.weight_scale'", mod, mod);
    int group = q->ct_group_size; /* > 0: mk_ct_check */
    if (s->cols % group)
        return mk_err(MK_E_MISMATCH, "module '%s': in-features %lld not a multiple of group %d",
                      mod, (long long)s->cols, group);
    MK_TRY(check_shape(sc, s, s->cols / group, "INT4 scales"));
    const mk_tensor_info *ws = mk_ld_find(ld, "%s.weight_shape", mod);
    if (ws) {
        int64_t dims[2] = {0, 0};
        uint8_t p[16]; /* read, not mapped: mk_model_check runs on unmapped checkpoints */
        bool ok = ws->numel == 2 && (ws->dtype == MK_DT_I64 || ws->dtype == MK_DT_I32) &&
                  mk_ckpt_read(ld->ck, ws, 0, p, (size_t)ws->nbytes) == MK_OK;
        for (int i = 0; ok && i < 2; i++) {
            if (ws->dtype == MK_DT_I64)
                memcpy(&dims[i], p + 8 * i, 8);
            else {
                int32_t v;
                memcpy(&v, p + 4 * i, 4);
                dims[i] = v;
            }
        }
        if (dims[0] != s->R || dims[1] != s->cols)
            return mk_err(MK_E_FORMAT, "tensor '%s' says [%lld, %lld], expected [%lld, %lld]",
                          ws->name, (long long)dims[0], (long long)dims[1], (long long)s->R,
                          (long long)s->cols);
    }
    w->fmt = MK_WF_AFFINE;
    w->bits = 4;
    w->group = group;
    w->sdtype = sc->dtype;
    w->data = ld_data(ld, t);
    w->scales = ld_data(ld, sc);
    if (!w->data || !w->scales)
        return no_map(t);
    ld->seen_int4 = true;
    return ct_biases(ld, mod, sc, s->R, s->cols / group, w);
}

/* ---- dispatch ----------------------------------------------------------- */

static mk_status view_any(mk_ld *ld, const char *mod, const char *wname, const vslice *s,
                          mk_wt *w) {
    memset(w, 0, sizeof *w);
    w->rows = s->rows;
    w->cols = s->cols;
    w->global_scale = 1.0f;
    const mk_tensor_info *t = mk_ckpt_find(ld->ck, wname);
    mk_status st;
    if (!t) {
        const mk_tensor_info *packed = mk_ld_find(ld, "%s.weight_packed", mod);
        if (!packed)
            return mk_err(MK_E_FORMAT, "%s: tensor '%s' not found", mk_ckpt_dir(ld->ck), wname);
        st = view_ct(ld, mod, packed, s, w);
    } else {
        switch (t->dtype) {
        case MK_DT_F32:
        case MK_DT_BF16:
        case MK_DT_F16: st = view_float(ld, t, s, w); break;
        case MK_DT_F8_E4M3:
        case MK_DT_F8_E5M2: st = view_fp8(ld, t, s, w); break;
        case MK_DT_U32: st = view_mlx(ld, mod, t, s, w); break;
        default:
            return mk_err(MK_E_UNSUPPORTED, "tensor '%s': dtype %s is not a supported weight "
                          "storage", wname, mk_dtype_name(t->dtype));
        }
    }
    if (st != MK_OK)
        return st;
    return mk_wt_check(w, wname);
}

mk_status mk_ld_linear(mk_ld *ld, const char *mod, int64_t rows, int64_t cols, mk_wt *out) {
    char wname[512];
    snprintf(wname, sizeof wname, "%s.weight", mod);
    vslice s = {0, 0, rows, 0, rows, cols};
    return view_any(ld, mod, wname, &s, out);
}

mk_status mk_ld_stacked(mk_ld *ld, const char *mod, const char *wname, int64_t E, int64_t e,
                        int64_t R, int64_t row0, int64_t rows, int64_t cols, mk_wt *out) {
    vslice s = {E, e, R, row0, rows, cols};
    return view_any(ld, mod, wname, &s, out);
}

mk_status mk_ld_vec(mk_ld *ld, const char *name, int64_t n, float **out) {
    const mk_tensor_info *t = mk_ckpt_find(ld->ck, name);
    if (!t)
        return mk_err(MK_E_FORMAT, "%s: tensor '%s' not found", mk_ckpt_dir(ld->ck), name);
    if ((int64_t)t->numel != n) {
        char got[96];
        return mk_err(MK_E_FORMAT, "tensor '%s': shape %s, expected %lld elements", name,
                      shape_str(t, got, sizeof got), (long long)n);
    }
    *out = NULL;
    if (ld->check_only)
        return MK_OK;
    float *v = mk_model_alloc(ld->m, (size_t)n * sizeof(float));
    if (!v)
        return mk_err(MK_E_NOMEM, "tensor '%s': no memory for %lld floats", name, (long long)n);
    MK_TRY(mk_ckpt_read_f32(ld->ck, t, 0, (uint64_t)n, v));
    *out = v;
    return MK_OK;
}
