/* Stored modules (see module.h): which tensors make up a weight, what kind
 * and parameters they imply, the checks on them, and the byte ranges of a
 * slice.
 *
 * Map of this file: helpers -> opening against an expected shape (the model
 * loader: float, FP8 block, MLX, compressed-tensors INT4; each checks every
 * shape it relies on) -> opening from the tensors alone (inspect, verify by
 * name) -> slices (byte ranges) -> views over a mapping and the FP8 scale
 * value check.
 *
 * Slices never depend on a mapping: a part stored as rows (float and FP8
 * weights, MLX weight/scales/biases) has t->nbytes / (stacked rows) bytes
 * per row, which the checks made exact; FP8 scale grids may be squeezed, so
 * they are sliced by element index over the (E, ceil(R/br), ceil(cols/bc))
 * grid; CT parts are sliced whole (not stacked). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "moekit/module.h"

/* Stand-in address for the pointers of an mk_wt that is only checked. */
static const unsigned char k_dummy[16];

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* Tensor base + suffix; NULL when absent or the name does not fit. */
static const mk_tensor_info *find2(const mk_ckpt *c, const char *base, const char *suf) {
    char buf[1100];
    int k = snprintf(buf, sizeof buf, "%s%s", base, suf);
    if (k < 0 || (size_t)k >= sizeof buf)
        return NULL;
    return mk_ckpt_find(c, buf);
}

static void copy_name(char *dst, size_t cap, const char *src, size_t n) {
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

const char *mk_smod_shape_str(const mk_tensor_info *t, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < t->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (k < n)
        snprintf(buf + k, n - k, "]");
    return buf;
}

static void set_shape(mk_smod *m, int ndim, const int64_t *shape) {
    m->ndim = ndim;
    memcpy(m->shape, shape, (size_t)ndim * sizeof *shape);
}

/* mk_wt_check on the module's parameters with stand-in pointers for the
 * parts it has (CT biases are derived, so they count as present). */
static mk_status check_params(const mk_smod *m, const char *what) {
    mk_wt w = m->q;
    w.rows = m->R;
    w.cols = m->cols;
    w.data = k_dummy;
    w.scales = m->part[MK_SP_SCALES] ? k_dummy : NULL;
    w.biases = m->part[MK_SP_BIASES] || m->kind == MK_SM_CT ? k_dummy : NULL;
    return mk_wt_check(&w, what);
}

/* ======================================================= expected shape */

/* The tensor must be [E,] R, last. */
static mk_status check_shape(const mk_tensor_info *t, const mk_smod_expect *x, int64_t last,
                             const char *what) {
    int nd = x->E ? 3 : 2;
    bool ok = t->ndim == nd && t->shape[nd - 2] == x->R && t->shape[nd - 1] == last &&
              (!x->E || t->shape[0] == x->E);
    if (ok)
        return MK_OK;
    char got[96];
    if (x->E)
        return mk_err(MK_E_FORMAT, "tensor '%s' (%s): shape %s, expected [%lld, %lld, %lld]",
                      t->name, what, mk_smod_shape_str(t, got, sizeof got), (long long)x->E,
                      (long long)x->R, (long long)last);
    return mk_err(MK_E_FORMAT, "tensor '%s' (%s): shape %s, expected [%lld, %lld]", t->name, what,
                  mk_smod_shape_str(t, got, sizeof got), (long long)x->R, (long long)last);
}

static mk_status open_float(const mk_tensor_info *t, const mk_smod_expect *x, mk_smod *m) {
    MK_TRY(check_shape(t, x, x->cols, "float weight"));
    m->kind = MK_SM_FLOAT;
    m->q.fmt = t->dtype == MK_DT_F32 ? MK_WF_F32 : t->dtype == MK_DT_BF16 ? MK_WF_BF16 : MK_WF_F16;
    return MK_OK;
}

static mk_status open_fp8(const mk_ckpt *c, const mk_config *cfg, const mk_tensor_info *t,
                          const mk_smod_expect *x, mk_smod *m) {
    MK_TRY(check_shape(t, x, x->cols, "fp8 weight"));
    const mk_tensor_info *st = find2(c, t->name, "_scale_inv");
    if (!st)
        return mk_err(MK_E_FORMAT, "fp8 weight '%s' has no '%s_scale_inv' (block scales)",
                      t->name, t->name);
    if (st->dtype != MK_DT_F32 && st->dtype != MK_DT_BF16 && st->dtype != MK_DT_F16)
        return mk_err(MK_E_UNSUPPORTED, "tensor '%s': scale dtype %s, expected F32, BF16 or F16",
                      st->name, mk_dtype_name(st->dtype));
    const mk_qcfg *q = &cfg->quant;
    int br = q->block[0] > 0 ? q->block[0] : 128, bc = q->block[1] > 0 ? q->block[1] : 128;
    int64_t gr = cdiv(x->R, br), gc = cdiv(x->cols, bc), ne = (x->E ? x->E : 1) * gr * gc;
    /* Any shape with exactly the grid's element count is accepted: transformers
     * 5.x writes squeezed 1-D grids ([2] for [1, 2]). */
    if ((int64_t)st->numel != ne) {
        char got[96];
        return mk_err(MK_E_FORMAT,
                      "tensor '%s': scale grid %s has %llu elements, expected %lld (%lld x %lld "
                      "blocks of %dx%d over weight rows %lld, cols %lld%s)",
                      st->name, mk_smod_shape_str(st, got, sizeof got), (unsigned long long)st->numel,
                      (long long)ne, (long long)gr, (long long)gc, br, bc, (long long)x->R,
                      (long long)x->cols, x->E ? " per expert" : "");
    }
    m->kind = MK_SM_FP8;
    m->part[MK_SP_SCALES] = st;
    m->q.fmt = t->dtype == MK_DT_F8_E4M3 ? MK_WF_FP8_E4M3 : MK_WF_FP8_E5M2;
    m->q.block_r = br;
    m->q.block_c = bc;
    m->q.sdtype = st->dtype;
    return MK_OK;
}

static mk_status open_mlx(const mk_ckpt *c, const mk_config *cfg, const char *mod,
                          const mk_tensor_info *t, const mk_smod_expect *x, mk_smod *m) {
    const mk_tensor_info *sc = find2(c, mod, ".scales");
    if (!sc)
        return mk_err(MK_E_FORMAT, "packed U32 weight '%s' has no '%s.scales'", t->name, mod);
    int bits = 0, group = 0;
    mk_qmode mode = MK_QMODE_AFFINE;
    if (!mk_qcfg_lookup(&cfg->quant, mod, true, &bits, &group, &mode))
        return mk_err(MK_E_MISMATCH,
                      "module '%s' is stored quantized (U32 + scales) but config.json %s", mod,
                      cfg->quant.method == MK_QM_MLX ? "marks it as not quantized"
                                                     : "has no MLX \"quantization\" block");
    int64_t packed = t->ndim >= 2 ? t->shape[t->ndim - 1] : -1;
    if (bits <= 0 || group <= 0 || packed * 32 != x->cols * bits) {
        char implied[48];
        if (packed > 0 && (packed * 32) % x->cols == 0)
            snprintf(implied, sizeof implied, "%lld", (long long)(packed * 32 / x->cols));
        else
            snprintf(implied, sizeof implied, "a non-integer number of");
        return mk_err(MK_E_MISMATCH,
                      "module '%s': config says %d-bit (group %d, %s) but packed width %lld "
                      "for in-features %lld implies %s bits",
                      mod, bits, group, mk_qmode_name(mode), (long long)packed,
                      (long long)x->cols, implied);
    }
    MK_TRY(check_shape(t, x, packed, "packed weight"));
    if (x->cols % group)
        return mk_err(MK_E_MISMATCH, "module '%s': in-features %lld not a multiple of group %d",
                      mod, (long long)x->cols, group);
    int64_t ng = x->cols / group;
    MK_TRY(check_shape(sc, x, ng, "scales"));
    static const mk_wfmt fmts[] = {[MK_QMODE_AFFINE] = MK_WF_AFFINE,
                                   [MK_QMODE_MXFP4] = MK_WF_MXFP4,
                                   [MK_QMODE_MXFP8] = MK_WF_MXFP8,
                                   [MK_QMODE_NVFP4] = MK_WF_NVFP4};
    if ((unsigned)mode > MK_QMODE_NVFP4)
        return mk_err(MK_E_UNSUPPORTED, "module '%s': unknown quantization mode", mod);
    const mk_tensor_info *bi = find2(c, mod, ".biases");
    /* The mode must agree with the stored tensors: microscaled modes keep one
     * scale byte (E8M0 / E4M3) per group and no biases; reading BF16 affine
     * scales as exponent bytes would give silently wrong weights. */
    if (mode != MK_QMODE_AFFINE && (sc->dtype != MK_DT_U8 || bi))
        return mk_err(MK_E_MISMATCH,
                      "module '%s': config.json says mode %s, but the checkpoint stores %s scales%s "
                      "(%s keeps U8 scales and no biases)",
                      mod, mk_qmode_name(mode), mk_dtype_name(sc->dtype), bi ? " and biases" : "",
                      mk_qmode_name(mode));
    m->kind = MK_SM_MLX;
    m->part[MK_SP_SCALES] = sc;
    m->q.fmt = fmts[mode];
    m->q.bits = bits;
    m->q.group = group;
    m->q.sdtype = sc->dtype;
    if (mode == MK_QMODE_AFFINE) {
        if (!bi)
            return mk_err(MK_E_FORMAT, "affine module '%s' has no '%s.biases'", mod, mod);
        MK_TRY(check_shape(bi, x, ng, "biases"));
        if (bi->dtype != sc->dtype)
            return mk_err(MK_E_FORMAT, "module '%s': biases are %s but scales are %s", mod,
                          mk_dtype_name(bi->dtype), mk_dtype_name(sc->dtype));
        m->part[MK_SP_BIASES] = bi;
    }
    return MK_OK;
}

static mk_status open_ct(const mk_ckpt *c, const mk_config *cfg, const char *mod,
                         const mk_tensor_info *t, const mk_smod_expect *x, mk_smod *m) {
    const mk_qcfg *q = &cfg->quant;
    if (x->E)
        return mk_err(MK_E_UNSUPPORTED, "tensor '%s': stacked INT4 weights", t->name);
    if (q->method != MK_QM_CT)
        return mk_err(MK_E_MISMATCH, "tensor '%s' is INT4 pack-quantized but config.json has no "
                      "compressed-tensors quantization_config", t->name);
    const mk_tensor_info *zp = find2(c, mod, ".weight_zero_point");
    /* the same refusal as convert's (format/config_check.c) */
    MK_TRY(mk_ct_check(q, mk_ckpt_dir(c), mod, zp != NULL));
    if (t->dtype != MK_DT_I32 || x->cols % 8)
        return mk_err(MK_E_FORMAT, "tensor '%s': dtype %s, expected I32 with in-features %lld a "
                      "multiple of 8", t->name, mk_dtype_name(t->dtype), (long long)x->cols);
    MK_TRY(check_shape(t, x, x->cols / 8, "INT4 packed weight"));
    const mk_tensor_info *sc = find2(c, mod, ".weight_scale");
    if (!sc)
        return mk_err(MK_E_FORMAT, "INT4 module '%s' has no '%s.weight_scale'", mod, mod);
    int group = q->ct_group_size; /* > 0: mk_ct_check */
    if (x->cols % group)
        return mk_err(MK_E_MISMATCH, "module '%s': in-features %lld not a multiple of group %d",
                      mod, (long long)x->cols, group);
    int64_t ng = x->cols / group;
    MK_TRY(check_shape(sc, x, ng, "INT4 scales"));
    const mk_tensor_info *ws = find2(c, mod, ".weight_shape");
    if (ws) {
        int64_t dims[2] = {0, 0};
        uint8_t p[16]; /* read, not mapped: mk_model_check runs on unmapped checkpoints */
        bool ok = ws->numel == 2 && (ws->dtype == MK_DT_I64 || ws->dtype == MK_DT_I32) &&
                  mk_ckpt_read(c, ws, 0, p, (size_t)ws->nbytes) == MK_OK;
        for (int i = 0; ok && i < 2; i++) {
            if (ws->dtype == MK_DT_I64)
                memcpy(&dims[i], p + 8 * i, 8);
            else {
                int32_t v;
                memcpy(&v, p + 4 * i, 4);
                dims[i] = v;
            }
        }
        if (dims[0] != x->R || dims[1] != x->cols)
            return mk_err(MK_E_FORMAT, "tensor '%s' says [%lld, %lld], expected [%lld, %lld]",
                          ws->name, (long long)dims[0], (long long)dims[1], (long long)x->R,
                          (long long)x->cols);
    }
    m->kind = MK_SM_CT;
    m->part[MK_SP_SCALES] = sc;
    m->ct_symmetric = q->ct_symmetric;
    m->q.fmt = MK_WF_AFFINE;
    m->q.bits = 4;
    m->q.group = group;
    m->q.sdtype = sc->dtype;
    /* zero points: I32 (ceil(rows/8), ng), nibble r%8 of word [r/8, g] */
    if (!q->ct_symmetric) {
        if (!zp || zp->dtype != MK_DT_I32 || zp->numel != (uint64_t)(cdiv(x->R, 8) * ng))
            return mk_err(MK_E_FORMAT, "asymmetric INT4 module '%s': weight_zero_point missing or "
                          "not I32 [%lld, %lld]", mod, (long long)cdiv(x->R, 8), (long long)ng);
        m->part[MK_SP_ZP] = zp;
    }
    return MK_OK;
}

mk_status mk_smod_open(const mk_ckpt *c, const mk_config *cfg, const char *mod, const char *wname,
                       const mk_smod_expect *x, mk_smod *m) {
    memset(m, 0, sizeof *m);
    m->E = x->E;
    m->R = x->R;
    m->cols = x->cols;
    int64_t shape[3] = {x->E, x->R, x->cols};
    if (x->E)
        set_shape(m, 3, shape);
    else
        set_shape(m, 2, shape + 1);
    m->q.global_scale = 1.0f;
    const mk_tensor_info *t = mk_ckpt_find(c, wname);
    if (!t) {
        const mk_tensor_info *packed = find2(c, mod, ".weight_packed");
        if (!packed)
            return mk_err(MK_E_FORMAT, "%s: tensor '%s' not found", mk_ckpt_dir(c), wname);
        m->part[MK_SP_WEIGHT] = packed;
        MK_TRY(open_ct(c, cfg, mod, packed, x, m));
        return check_params(m, wname);
    }
    m->part[MK_SP_WEIGHT] = t;
    switch (t->dtype) {
    case MK_DT_F32:
    case MK_DT_BF16:
    case MK_DT_F16: MK_TRY(open_float(t, x, m)); break;
    case MK_DT_F8_E4M3:
    case MK_DT_F8_E5M2: MK_TRY(open_fp8(c, cfg, t, x, m)); break;
    case MK_DT_U32: MK_TRY(open_mlx(c, cfg, mod, t, x, m)); break;
    default:
        return mk_err(MK_E_UNSUPPORTED, "tensor '%s': dtype %s is not a supported weight "
                      "storage", wname, mk_dtype_name(t->dtype));
    }
    return check_params(m, wname);
}

/* ===================================================== from the tensors */

/* Leading dims of a >= 2-D tensor: E = product of dims before the last two
 * (0 for a 2-D one), R = dim -2. */
static void stack_of(mk_smod *m, int ndim, const int64_t *shape) {
    int64_t e = 1;
    for (int i = 0; i + 2 < ndim; i++)
        e *= shape[i];
    m->E = ndim > 2 ? e : 0;
    m->R = shape[ndim - 2];
}

static mk_status infer_mlx(const mk_config *cfg, const char *module, mk_smod *m,
                           const mk_tensor_info *w, const mk_tensor_info *sc, const mk_tensor_info *bi) {
    int bits = 4, group = 64;
    mk_qmode mode = MK_QMODE_AFFINE;
    if (!cfg || !mk_qcfg_lookup(&cfg->quant, module, true, &bits, &group, &mode))
        return mk_err(MK_E_FORMAT, "tensor '%s' has .scales but the config has no MLX quantization block",
                      w->name);
    if (w->ndim < 2 || sc->ndim != w->ndim)
        return mk_err(MK_E_FORMAT, "tensor '%s': quantized weight must be >= 2-D with scales of equal rank",
                      w->name);
    int64_t packed = w->shape[w->ndim - 1], ngroups = sc->shape[sc->ndim - 1];
    int64_t in = ngroups * group;
    m->kind = MK_SM_MLX;
    m->q.sdtype = sc->dtype;
    m->q.bits = bits;
    m->q.group = group;
    switch (mode) {
    case MK_QMODE_AFFINE:
        m->q.fmt = MK_WF_AFFINE;
        if (!bi)
            return mk_err(MK_E_FORMAT, "tensor '%s': affine quantization needs %s.biases", w->name, module);
        break;
    case MK_QMODE_MXFP4: m->q.fmt = MK_WF_MXFP4; break;
    case MK_QMODE_MXFP8: m->q.fmt = MK_WF_MXFP8; break;
    case MK_QMODE_NVFP4: m->q.fmt = MK_WF_NVFP4; break;
    }
    /* The seed failure: bits must agree with the packed shape. */
    int64_t elem_bits = w->dtype == MK_DT_U32 ? 32 : (int64_t)mk_dtype_info(w->dtype)->bits;
    if (packed * elem_bits != in * bits) {
        int64_t implied = in ? packed * elem_bits / in : 0;
        return mk_err(MK_E_MISMATCH,
                      "module '%s': config says %d-bit group %d, but weight %s has %lld packed columns "
                      "and %lld groups, which implies %lld-bit: refusing to guess",
                      module, bits, group, w->name, (long long)packed, (long long)ngroups, (long long)implied);
    }
    int64_t shape[MK_MAX_DIMS];
    memcpy(shape, w->shape, sizeof shape);
    shape[w->ndim - 1] = in;
    set_shape(m, w->ndim, shape);
    stack_of(m, w->ndim, w->shape);
    m->cols = in;
    m->part[MK_SP_SCALES] = sc;
    m->part[MK_SP_BIASES] = mode == MK_QMODE_AFFINE ? bi : NULL;
    return check_params(m, w->name);
}

static mk_status infer_fp8(const mk_config *cfg, mk_smod *m, const mk_tensor_info *w,
                           const mk_tensor_info *si) {
    if (w->ndim != 2)
        return mk_err(MK_E_FORMAT, "tensor '%s': FP8 weight must be 2-D, found %d dims", w->name, w->ndim);
    int br = cfg && cfg->quant.block[0] ? cfg->quant.block[0] : 128;
    int bc = cfg && cfg->quant.block[1] ? cfg->quant.block[1] : 128;
    int64_t gr = (w->shape[0] + br - 1) / br, gc = (w->shape[1] + bc - 1) / bc;
    /* transformers 5 writes squeezed 1-D scales; accept when the count fits the grid */
    if (!((si->ndim == 2 && si->shape[0] == gr && si->shape[1] == gc) ||
          (si->ndim == 1 && (int64_t)si->numel == gr * gc) || (si->ndim == 0 && gr * gc == 1)))
        return mk_err(MK_E_FORMAT,
                      "tensor '%s': scale grid %s has %llu elements, expected (%lld, %lld) for a %lldx%lld "
                      "weight with %dx%d blocks",
                      w->name, si->name, (unsigned long long)si->numel, (long long)gr, (long long)gc,
                      (long long)w->shape[0], (long long)w->shape[1], br, bc);
    m->kind = MK_SM_FP8;
    m->q.fmt = w->dtype == MK_DT_F8_E5M2 ? MK_WF_FP8_E5M2 : MK_WF_FP8_E4M3;
    m->q.sdtype = si->dtype;
    m->q.block_r = br;
    m->q.block_c = bc;
    set_shape(m, 2, w->shape);
    m->E = 0;
    m->R = w->shape[0];
    m->cols = w->shape[1];
    m->part[MK_SP_SCALES] = si;
    return check_params(m, w->name);
}

mk_status mk_smod_infer(const mk_ckpt *c, const mk_config *cfg, const char *name, mk_smod *m) {
    memset(m, 0, sizeof *m);
    m->q.global_scale = 1.0f;
    const mk_tensor_info *t = mk_ckpt_find(c, name);
    if (!t && ends_with(name, ".weight") && find2(c, name, "_packed"))
        /* compressed-tensors: logical W.weight stored as W.weight_packed */
        return mk_err(MK_E_UNSUPPORTED,
                      "tensor '%s': compressed-tensors weights are read through convert (repack to MLX)",
                      name);
    if (!t)
        return mk_err(MK_E_NOTFOUND, "tensor '%s' not found", name);
    char mod[1024];
    size_t suf = ends_with(name, ".weight") ? strlen(".weight") : 0;
    copy_name(mod, sizeof mod, name, strlen(name) - suf);
    m->part[MK_SP_WEIGHT] = t;
    const mk_tensor_info *sc = find2(c, mod, ".scales");
    if (sc)
        return infer_mlx(cfg, mod, m, t, sc, find2(c, mod, ".biases"));
    const mk_tensor_info *si = find2(c, name, "_scale_inv");
    if (si && (t->dtype == MK_DT_F8_E4M3 || t->dtype == MK_DT_F8_E5M2))
        return infer_fp8(cfg, m, t, si);
    bool fl = t->dtype == MK_DT_F32 || t->dtype == MK_DT_BF16 || t->dtype == MK_DT_F16;
    m->kind = fl ? MK_SM_FLOAT : MK_SM_RAW;
    m->q.fmt = t->dtype == MK_DT_F32 ? MK_WF_F32 : t->dtype == MK_DT_BF16 ? MK_WF_BF16 : MK_WF_F16;
    set_shape(m, t->ndim, t->shape);
    m->E = 0;
    m->R = 1;
    for (int i = 0; i + 1 < t->ndim; i++)
        m->R *= t->shape[i];
    m->cols = t->ndim ? t->shape[t->ndim - 1] : 1;
    return MK_OK;
}

/* ================================================================ slices */

/* Rows [first, first+n) of a part stored as `total` equal rows. */
static mk_srange rows_of(const mk_tensor_info *t, int64_t total, int64_t first, int64_t n) {
    uint64_t rowb = total > 0 ? t->nbytes / (uint64_t)total : 0;
    return (mk_srange){t, t->shard, t->file_offset + (uint64_t)first * rowb, (uint64_t)n * rowb};
}

static mk_srange whole(const mk_tensor_info *t) {
    return (mk_srange){t, t ? t->shard : 0, t ? t->file_offset : 0, t ? t->nbytes : 0};
}

mk_status mk_smod_slice(const mk_smod *m, int64_t e, int64_t row0, int64_t rows, mk_sslice *s) {
    memset(s, 0, sizeof *s);
    s->m = m;
    s->e = e;
    s->row0 = row0;
    s->rows = rows;
    const mk_tensor_info *w = m->part[MK_SP_WEIGHT];
    if (e < 0 || e >= (m->E ? m->E : 1) || row0 < 0 || rows < 0 || row0 + rows > m->R)
        return mk_err(MK_E_ARG, "tensor '%s': rows [%lld, %lld) of expert %lld are outside [%lld experts "
                      "x %lld rows]", w->name, (long long)row0, (long long)(row0 + rows),
                      (long long)e, (long long)(m->E ? m->E : 1), (long long)m->R);
    int64_t total = mk_smod_rows(m), first = e * m->R + row0;
    switch (m->kind) {
    case MK_SM_FLOAT:
    case MK_SM_RAW:
        s->part[MK_SP_WEIGHT] = rows_of(w, total, first, rows);
        break;
    case MK_SM_FP8: {
        int br = m->q.block_r, bc = m->q.block_c;
        if (row0 % br)
            return mk_err(MK_E_UNSUPPORTED,
                          "tensor '%s': rows %lld.. of the fused weight start inside a %d-row scale "
                          "block, so its scale grid does not split",
                          w->name, (long long)row0, br);
        const mk_tensor_info *st = m->part[MK_SP_SCALES];
        int64_t gr = cdiv(m->R, br), gc = cdiv(m->cols, bc);
        uint64_t esz = mk_dtype_info(st->dtype)->bits / 8;
        s->part[MK_SP_WEIGHT] = rows_of(w, total, first, rows);
        s->part[MK_SP_SCALES] = (mk_srange){st, st->shard,
                                            st->file_offset + (uint64_t)((e * gr + row0 / br) * gc) * esz,
                                            (uint64_t)(cdiv(rows, br) * gc) * esz};
        break;
    }
    case MK_SM_MLX:
        s->part[MK_SP_WEIGHT] = rows_of(w, total, first, rows);
        s->part[MK_SP_SCALES] = rows_of(m->part[MK_SP_SCALES], total, first, rows);
        if (m->part[MK_SP_BIASES])
            s->part[MK_SP_BIASES] = rows_of(m->part[MK_SP_BIASES], total, first, rows);
        break;
    case MK_SM_CT:
        if (m->E || row0 || rows != m->R)
            return mk_err(MK_E_UNSUPPORTED, "tensor '%s': stacked INT4 weights", w->name);
        s->part[MK_SP_WEIGHT] = whole(w);
        s->part[MK_SP_SCALES] = whole(m->part[MK_SP_SCALES]);
        if (m->part[MK_SP_ZP])
            s->part[MK_SP_ZP] = whole(m->part[MK_SP_ZP]);
        break;
    }
    return MK_OK;
}

/* ================================================ views and value checks */

mk_status mk_smod_view(const mk_ckpt *c, const mk_sslice *s, mk_wt *w) {
    const mk_smod *m = s->m;
    *w = m->q;
    w->rows = s->rows;
    w->cols = m->cols;
    const void *p[MK_SP_N] = {0};
    for (int i = 0; i < MK_SP_N; i++) {
        const mk_srange *r = &s->part[i];
        if (!r->t)
            continue;
        const unsigned char *base = mk_ckpt_data(c, r->t);
        if (!base)
            return mk_err(MK_E_INTERNAL, "tensor '%s': checkpoint is not memory-mapped",
                          m->part[MK_SP_WEIGHT]->name);
        p[i] = base + (r->off - r->t->file_offset);
    }
    w->data = p[MK_SP_WEIGHT];
    w->scales = p[MK_SP_SCALES];
    w->biases = p[MK_SP_BIASES];
    return MK_OK;
}

/* FP8 block scales multiply every weight of their block: a NaN or infinite
 * one makes the block's outputs non-finite, so it is refused at load, naming
 * the element, instead of surfacing later as NaN logits. */
mk_status mk_smod_check_scales(const mk_ckpt *c, const mk_sslice *s) {
    const mk_srange *r = &s->part[MK_SP_SCALES];
    if (s->m->kind != MK_SM_FP8 || !r->t)
        return MK_OK;
    const mk_tensor_info *st = r->t;
    uint64_t esz = mk_dtype_info(st->dtype)->bits / 8;
    uint64_t first = (r->off - st->file_offset) / esz, n = r->len / esz;
    float buf[1024];
    for (uint64_t i = 0; i < n; i += 1024) {
        uint64_t k = n - i < 1024 ? n - i : 1024;
        MK_TRY(mk_ckpt_read_f32(c, st, first + i, k, buf));
        for (uint64_t j = 0; j < k; j++)
            if (!isfinite(buf[j]))
                return mk_err(MK_E_FORMAT, "tensor '%s': element %llu is %s; FP8 block scales "
                              "(scale_inv) must be finite", st->name,
                              (unsigned long long)(first + i + j), isnan(buf[j]) ? "NaN" : "infinite");
    }
    return MK_OK;
}

/* ======================================== a grouped checkpoint (convert) */

/* "[a,b,c]": convert's messages spell shapes without spaces. */
static const char *sh(char *buf, size_t n, const mk_tensor_info *t) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < t->ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, d ? ",%lld" : "%lld", (long long)t->shape[d]);
    if (k < n)
        snprintf(buf + k, n - k, "]");
    return buf;
}

static bool is_float(mk_dtype t) {
    return t == MK_DT_F32 || t == MK_DT_F16 || t == MK_DT_BF16 || t == MK_DT_F64;
}

mk_status mk_smod_parts_add(mk_smod_parts *g, mk_qrole r, const mk_tensor_info *t, const char *where,
                            const char *base) {
    const mk_tensor_info **slot = NULL;
    switch (r) {
    case MK_QR_MAIN: slot = &g->main; break;
    case MK_QR_CT_PACKED: slot = &g->main; g->packed = true; break;
    case MK_QR_FP8_SCALE: slot = &g->fp8s; break;
    case MK_QR_CT_SCALE: slot = &g->cts; break;
    case MK_QR_CT_ZP: slot = &g->ctzp; break;
    case MK_QR_CT_SHAPE: slot = &g->ctshape; break;
    case MK_QR_CT_GIDX: slot = &g->ctgidx; break;
    case MK_QR_MLX_SCALES: slot = &g->mlxs; break;
    case MK_QR_MLX_BIASES: slot = &g->mlxb; break;
    default: return MK_OK;
    }
    if (*slot)
        return mk_err(MK_E_FORMAT, "%s: tensors '%s' and '%s' both claim to be the data of module '%s'", where,
                      (*slot)->name, t->name, base);
    *slot = t;
    return MK_OK;
}

/* Leading dims of a tensor: rows = product of all but the last, R = the
 * rows of one matrix (dim -2), E = rows / R for 3+ dims. */
static void resolved_shape(mk_smod *m, int ndim, const int64_t *shape) {
    set_shape(m, ndim, shape);
    int64_t rows = 1;
    for (int d = 0; d + 1 < ndim; d++)
        rows *= shape[d];
    m->cols = ndim ? shape[ndim - 1] : 1;
    m->R = ndim >= 2 ? shape[ndim - 2] : rows;
    m->E = ndim > 2 ? rows / (m->R ? m->R : 1) : 0;
}

/* FP8: weight (.., R, C) F8 + scale grid (.., ceil(R/br), ceil(C/bc)), or
 * the same number of elements squeezed (transformers 5.x per-expert). */
static mk_status resolve_fp8(const mk_config *cfg, const char *where, mk_smod *m, const mk_smod_parts *g) {
    const mk_tensor_info *w = g->main, *sc = g->fp8s;
    char b1[96], b2[96];
    if (w->ndim < 2)
        return mk_err(MK_E_FORMAT, "%s: tensor '%s' is %s with shape %s; FP8 block weights need 2 or more dims",
                      where, w->name, mk_dtype_name(w->dtype), sh(b1, sizeof b1, w));
    if (!is_float(sc->dtype) || sc->dtype == MK_DT_F64)
        return mk_err(MK_E_FORMAT, "%s: tensor '%s': scale dtype %s, expected F32, BF16 or F16", where, sc->name,
                      mk_dtype_name(sc->dtype));
    m->kind = MK_SM_FP8;
    resolved_shape(m, w->ndim, w->shape);
    m->q.fmt = w->dtype == MK_DT_F8_E5M2 ? MK_WF_FP8_E5M2 : MK_WF_FP8_E4M3;
    m->q.sdtype = sc->dtype;
    m->q.block_r = cfg->quant.method == MK_QM_FP8 ? cfg->quant.block[0] : 128;
    m->q.block_c = cfg->quant.method == MK_QM_FP8 ? cfg->quant.block[1] : 128;
    int br = m->q.block_r, bc = m->q.block_c;
    int64_t gr = (m->R + br - 1) / br, gc = (m->cols + bc - 1) / bc;
    int64_t nmat = m->E ? m->E : 1;
    uint64_t want = (uint64_t)(nmat * gr * gc);
    if (sc->numel != want)
        return mk_err(MK_E_FORMAT,
                      "%s: scale grid '%s' %s fits no block grid of weight '%s' %s: %dx%d blocks need %lld x "
                      "[%lld,%lld] = %llu scales, found %llu",
                      where, sc->name, sh(b1, sizeof b1, sc), w->name, sh(b2, sizeof b2, w), br, bc,
                      (long long)nmat, (long long)gr, (long long)gc, (unsigned long long)want,
                      (unsigned long long)sc->numel);
    m->part[MK_SP_SCALES] = sc;
    return MK_OK;
}

static mk_status read_ct_shape(const mk_ckpt *c, const char *where, const mk_tensor_info *t, int64_t out[2]) {
    char b[96];
    if (t->numel != 2 || (t->dtype != MK_DT_I32 && t->dtype != MK_DT_I64))
        return mk_err(MK_E_FORMAT, "%s: tensor '%s' is %s %s, expected 2 integers [out, in] (I32 or I64)", where,
                      t->name, mk_dtype_name(t->dtype), sh(b, sizeof b, t));
    unsigned char buf[16];
    MK_TRY(mk_ckpt_read(c, t, 0, buf, (size_t)t->nbytes));
    for (int i = 0; i < 2; i++) {
        if (t->dtype == MK_DT_I32) {
            int32_t v;
            memcpy(&v, buf + 4 * i, 4);
            out[i] = v;
        } else {
            int64_t v;
            memcpy(&v, buf + 8 * i, 8);
            out[i] = v;
        }
    }
    if (out[0] <= 0 || out[1] <= 0)
        return mk_err(MK_E_FORMAT, "%s: tensor '%s' holds [%lld, %lld], expected positive sizes", where, t->name,
                      (long long)out[0], (long long)out[1]);
    return MK_OK;
}

/* g_idx must be the trivial ordering g_idx[j] = j / group (no act-order). */
static mk_status check_gidx(const mk_ckpt *c, const char *where, const mk_tensor_info *t, int64_t in, int group) {
    if (t->numel != (uint64_t)in || (t->dtype != MK_DT_I32 && t->dtype != MK_DT_I64))
        return mk_err(MK_E_FORMAT, "%s: tensor '%s': expected %lld I32/I64 group indices, found %llu x %s", where,
                      t->name, (long long)in, (unsigned long long)t->numel, mk_dtype_name(t->dtype));
    size_t es = mk_dtype_info(t->dtype)->bits / 8;
    unsigned char buf[4096];
    for (int64_t j0 = 0; j0 < in; j0 += (int64_t)(sizeof buf / es)) {
        int64_t n = in - j0 < (int64_t)(sizeof buf / es) ? in - j0 : (int64_t)(sizeof buf / es);
        MK_TRY(mk_ckpt_read(c, t, (uint64_t)j0 * es, buf, (size_t)n * es));
        for (int64_t j = 0; j < n; j++) {
            int64_t v;
            if (es == 4) {
                int32_t x;
                memcpy(&x, buf + 4 * j, 4);
                v = x;
            } else
                memcpy(&v, buf + 8 * j, 8);
            if (v != (j0 + j) / group)
                return mk_err(MK_E_UNSUPPORTED,
                              "%s: tensor '%s': element %lld is group %lld, expected %lld: activation-ordered "
                              "INT4 (g_idx) cannot be repacked to MLX",
                              where, t->name, (long long)(j0 + j), (long long)v, (long long)((j0 + j) / group));
        }
    }
    return MK_OK;
}

/* compressed-tensors pack-quantized INT4 (FORMATS.md 5). */
static mk_status resolve_ct(const mk_ckpt *c, const mk_config *cfg, const char *where, mk_smod *m,
                            const mk_smod_parts *g) {
    const mk_tensor_info *w = g->main, *sc = g->cts;
    char b1[96], b2[96];
    if (!sc)
        return mk_err(MK_E_FORMAT, "%s: '%s' has no weight_scale beside it", where, w->name);
    /* the same refusal as the engine's (format/config_check.c) */
    size_t ml = strlen(w->name) > strlen(".weight_packed") ? strlen(w->name) - strlen(".weight_packed") : 0;
    char mod[512];
    snprintf(mod, sizeof mod, "%.*s", (int)ml, w->name);
    MK_TRY(mk_ct_check(&cfg->quant, where, mod, g->ctzp != NULL));
    if (w->ndim != 2 || (w->dtype != MK_DT_I32 && w->dtype != MK_DT_U32))
        return mk_err(MK_E_FORMAT, "%s: tensor '%s' is %s %s, expected I32 [out, ceil(in/8)]", where, w->name,
                      mk_dtype_name(w->dtype), sh(b1, sizeof b1, w));
    int64_t lshape[2] = {w->shape[0], w->shape[1] * 8};
    if (g->ctshape)
        MK_TRY(read_ct_shape(c, where, g->ctshape, lshape));
    if (lshape[0] != w->shape[0] || (lshape[1] + 7) / 8 != w->shape[1])
        return mk_err(MK_E_FORMAT, "%s: tensor '%s' %s does not pack weight_shape [%lld,%lld] (expected [%lld,%lld])",
                      where, w->name, sh(b1, sizeof b1, w), (long long)lshape[0], (long long)lshape[1],
                      (long long)lshape[0], (long long)((lshape[1] + 7) / 8));
    if (sc->ndim != 2 || sc->shape[0] != lshape[0] || !is_float(sc->dtype) || sc->dtype == MK_DT_F64)
        return mk_err(MK_E_FORMAT, "%s: tensor '%s' is %s %s, expected F32/BF16/F16 [%lld, in/group]", where,
                      sc->name, mk_dtype_name(sc->dtype), sh(b1, sizeof b1, sc), (long long)lshape[0]);
    int group = cfg->quant.method == MK_QM_CT ? cfg->quant.ct_group_size : 0;
    if (group <= 0)
        group = (int)(lshape[1] / (sc->shape[1] ? sc->shape[1] : 1));
    if (group <= 0 || lshape[1] % group != 0)
        return mk_err(MK_E_FORMAT,
                      "%s: module '%s': INT4 group size %d does not divide the row length %lld (weight_shape "
                      "[%lld,%lld]); MLX affine needs whole groups",
                      where, w->name, group, (long long)lshape[1], (long long)lshape[0], (long long)lshape[1]);
    if (group != 32 && group != 64 && group != 128)
        return mk_err(MK_E_UNSUPPORTED, "%s: module '%s': INT4 group size %d; MLX supports 32, 64, 128", where,
                      w->name, group);
    if (sc->shape[1] != lshape[1] / group)
        return mk_err(MK_E_FORMAT, "%s: tensor '%s' %s: expected [%lld,%lld] scales for group size %d", where,
                      sc->name, sh(b1, sizeof b1, sc), (long long)lshape[0], (long long)(lshape[1] / group), group);
    if (g->ctzp) {
        const mk_tensor_info *z = g->ctzp;
        if (z->ndim != 2 || z->shape[0] != (lshape[0] + 7) / 8 || z->shape[1] != lshape[1] / group ||
            (z->dtype != MK_DT_I32 && z->dtype != MK_DT_U32))
            return mk_err(MK_E_FORMAT, "%s: tensor '%s' is %s %s, expected I32 [%lld,%lld] (packed along dim 0)",
                          where, z->name, mk_dtype_name(z->dtype), sh(b2, sizeof b2, z),
                          (long long)((lshape[0] + 7) / 8), (long long)(lshape[1] / group));
    }
    if (g->ctgidx)
        MK_TRY(check_gidx(c, where, g->ctgidx, lshape[1], group));
    m->kind = MK_SM_CT;
    resolved_shape(m, 2, lshape);
    m->q.fmt = MK_WF_AFFINE;
    m->q.sdtype = sc->dtype;
    m->q.bits = 4;
    m->q.group = group;
    m->ct_symmetric = g->ctzp == NULL;
    m->part[MK_SP_SCALES] = sc;
    m->part[MK_SP_ZP] = g->ctzp;
    return MK_OK;
}

/* MLX quantized module: bits from the config entry AND the packed shape. */
static mk_status resolve_mlx(const mk_config *cfg, const char *where, const char *base, mk_smod *m,
                             const mk_smod_parts *g) {
    const mk_tensor_info *w = g->main, *sc = g->mlxs, *bi = g->mlxb;
    char b1[96], b2[96];
    char path[1024];
    size_t bl = strlen(base) >= strlen(".weight") ? strlen(base) - strlen(".weight") : 0;
    copy_name(path, sizeof path, base, bl);
    int bits = 0, group = 0;
    mk_qmode mode = MK_QMODE_AFFINE;
    bool q = mk_qcfg_lookup(&cfg->quant, path, true, &bits, &group, &mode);
    if (!q || cfg->quant.method != MK_QM_MLX)
        return mk_err(MK_E_FORMAT, "%s: '%s' has MLX scales but config.json has no quantization block for it", where,
                      w->name);
    if (w->ndim < 2 || sc->ndim != w->ndim || bits <= 0 || group <= 0)
        return mk_err(MK_E_FORMAT, "%s: MLX module '%s': weight %s and scales %s do not match", where, w->name,
                      sh(b1, sizeof b1, w), sh(b2, sizeof b2, sc));
    for (int d = 0; d + 1 < w->ndim; d++)
        if (sc->shape[d] != w->shape[d])
            return mk_err(MK_E_FORMAT, "%s: MLX module '%s': weight %s and scales %s differ in leading dims", where,
                          w->name, sh(b1, sizeof b1, w), sh(b2, sizeof b2, sc));
    int64_t in = sc->shape[sc->ndim - 1] * group, wcols = w->shape[w->ndim - 1];
    if (wcols * 32 != in * bits)
        return mk_err(MK_E_MISMATCH,
                      "%s: MLX module '%s': config says %d bits, group %d, so %lld columns need %lld packed words, "
                      "found %lld",
                      where, w->name, bits, group, (long long)in, (long long)(in * bits / 32), (long long)wcols);
    if (mode == MK_QMODE_AFFINE && (!bi || bi->ndim != sc->ndim || bi->numel != sc->numel))
        return mk_err(MK_E_FORMAT, "%s: MLX affine module '%s' needs biases shaped like its scales %s", where,
                      w->name, sh(b1, sizeof b1, sc));
    int64_t lshape[MK_MAX_DIMS];
    memcpy(lshape, w->shape, sizeof lshape);
    lshape[w->ndim - 1] = in;
    m->kind = MK_SM_MLX;
    resolved_shape(m, w->ndim, lshape);
    static const mk_wfmt fmts[] = {[MK_QMODE_AFFINE] = MK_WF_AFFINE, [MK_QMODE_MXFP4] = MK_WF_MXFP4,
                                   [MK_QMODE_MXFP8] = MK_WF_MXFP8, [MK_QMODE_NVFP4] = MK_WF_NVFP4};
    m->q.fmt = (unsigned)mode <= MK_QMODE_NVFP4 ? fmts[mode] : MK_WF_AFFINE;
    m->q.sdtype = sc->dtype;
    m->q.bits = bits;
    m->q.group = group;
    m->part[MK_SP_SCALES] = sc;
    m->part[MK_SP_BIASES] = bi;
    return MK_OK;
}

mk_status mk_smod_resolve(const mk_ckpt *c, const mk_config *cfg, const char *where, const char *base,
                          const mk_smod_parts *g, mk_smod *m) {
    memset(m, 0, sizeof *m);
    m->q.global_scale = 1.0f;
    if (!g->main) {
        const mk_tensor_info *o = g->fp8s ? g->fp8s : g->cts ? g->cts : g->mlxs ? g->mlxs : g->mlxb;
        o = o ? o : g->ctzp ? g->ctzp : g->ctshape;
        return mk_err(MK_E_FORMAT, "%s: tensor '%s' is a companion of '%s', which is not in the checkpoint", where,
                      o ? o->name : base, base);
    }
    const mk_tensor_info *t = g->main;
    m->part[MK_SP_WEIGHT] = t;
    mk_dtype dt = t->dtype;
    bool fp8 = dt == MK_DT_F8_E4M3 || dt == MK_DT_F8_E5M2;
    if (g->packed)
        return resolve_ct(c, cfg, where, m, g);
    if (fp8) {
        if (!g->fp8s)
            return mk_err(g->cts ? MK_E_UNSUPPORTED : MK_E_FORMAT,
                          "%s: tensor '%s' is %s but has no '%s_scale_inv' block scales%s", where, t->name,
                          mk_dtype_name(dt), t->name, g->cts ? " (per-tensor FP8 scales are not supported)" : "");
        return resolve_fp8(cfg, where, m, g);
    }
    if (dt == MK_DT_U32 && g->mlxs)
        return resolve_mlx(cfg, where, base, m, g);
    resolved_shape(m, t->ndim, t->shape);
    bool fl = dt == MK_DT_F32 || dt == MK_DT_BF16 || dt == MK_DT_F16;
    m->kind = fl ? MK_SM_FLOAT : MK_SM_RAW;
    m->q.fmt = dt == MK_DT_F32 ? MK_WF_F32 : dt == MK_DT_BF16 ? MK_WF_BF16 : MK_WF_F16;
    if (dt == MK_DT_F8_E4M3FNUZ || dt == MK_DT_F8_E5M2FNUZ || dt == MK_DT_F8_E8M0 || dt == MK_DT_F4)
        return mk_err(MK_E_UNSUPPORTED, "%s: tensor '%s' has dtype %s, which convert cannot decode", where, t->name,
                      mk_dtype_name(dt));
    const mk_tensor_info *stray = g->fp8s ? g->fp8s : g->cts ? g->cts : g->ctzp;
    if (stray)
        return mk_err(MK_E_FORMAT, "%s: tensor '%s' looks like the scales of '%s', but that is %s, not quantized",
                      where, stray->name, t->name, mk_dtype_name(dt));
    return MK_OK;
}
