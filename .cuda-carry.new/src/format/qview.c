/* Logical tensors over quantized storage (see qview.h). Dequantization of
 * a row goes through mk_wt_dequant_row, the portable reference the kernels
 * are tested against, so every tool agrees on what a quantized weight
 * means. */
#include <stdlib.h>
#include <string.h>

#include "moekit/qview.h"

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* base + suffix into buf */
static const mk_tensor_info *find2(const mk_ckpt *c, const char *base, const char *suf) {
    char buf[1024];
    size_t n = strlen(base);
    if (n + strlen(suf) + 1 > sizeof buf)
        return NULL;
    memcpy(buf, base, n);
    strcpy(buf + n, suf);
    return mk_ckpt_find(c, buf);
}

/* Strip a trailing ".weight" / "weight_packed" etc. into `base` (the module path). */
static void module_of(const char *name, const char *suffix, char *base, size_t cap) {
    size_t n = strlen(name) - strlen(suffix);
    if (n >= cap)
        n = cap - 1;
    memcpy(base, name, n);
    base[n] = 0;
}

/* Longest first where one suffix ends another (_scale_inv after
 * .weight_scale_inv). */
static const mk_qsuffix g_suffixes[] = {
    {MK_QR_FP8_SCALE, ".weight_scale_inv", ".weight", ".weight", 0},
    {MK_QR_FP8_SCALE, "_scale_inv", "", "", 0}, /* fused FP8: experts.gate_up_proj_scale_inv */
    {MK_QR_CT_PACKED, ".weight_packed", ".weight", NULL, 0},
    {MK_QR_CT_SCALE, ".weight_scale", ".weight", ".weight_packed", 0},
    {MK_QR_CT_ZP, ".weight_zero_point", ".weight", ".weight_packed", 0},
    {MK_QR_CT_SHAPE, ".weight_shape", ".weight", ".weight_packed", 0},
    {MK_QR_CT_GIDX, ".weight_g_idx", ".weight", ".weight_packed", 0},
    {MK_QR_DROP, ".activation_scale", "", NULL, 0},
    {MK_QR_DROP, ".input_scale", "", NULL, 0},
    {MK_QR_MLX_SCALES, ".scales", ".weight", ".weight", 0},
    {MK_QR_MLX_BIASES, ".biases", ".weight", ".weight", 0},
};

mk_qrole mk_qview_suffix(const char *name, mk_qsuffix *out) {
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof g_suffixes / sizeof g_suffixes[0]; i++) {
        size_t k = strlen(g_suffixes[i].suffix);
        if (n > k && strcmp(name + n - k, g_suffixes[i].suffix) == 0) {
            *out = g_suffixes[i];
            out->stem = n - k;
            return out->role;
        }
    }
    *out = (mk_qsuffix){MK_QR_MAIN, "", "", NULL, n};
    return MK_QR_MAIN;
}

bool mk_qview_is_companion(const mk_ckpt *c, const char *name) {
    mk_qsuffix q;
    if (mk_qview_suffix(name, &q) == MK_QR_MAIN || !q.owner)
        return false;
    char base[1024];
    module_of(name, q.suffix, base, sizeof base);
    if (find2(c, base, q.owner))
        return true;
    /* MLX non-.weight quantized tensors: N, N.scales, N.biases */
    return (q.role == MK_QR_MLX_SCALES || q.role == MK_QR_MLX_BIASES) && mk_ckpt_find(c, base);
}

static mk_status set_logical(mk_qview *v, int ndim, const int64_t *shape) {
    v->ndim = ndim;
    v->rows = 1;
    for (int i = 0; i < ndim; i++) {
        v->shape[i] = shape[i];
        if (i < ndim - 1)
            v->rows *= shape[i];
    }
    v->cols = ndim ? shape[ndim - 1] : 1;
    if (ndim == 0)
        v->rows = 1;
    return MK_OK;
}

static mk_status open_mlx(const mk_ckpt *c, const mk_config *cfg, mk_qview *v, const mk_tensor_info *w,
                          const mk_tensor_info *sc, const mk_tensor_info *bi, const char *module) {
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
    v->kind = MK_QK_MLX;
    memset(&v->wt, 0, sizeof v->wt);
    v->wt.sdtype = sc->dtype;
    v->wt.bits = bits;
    v->wt.group = group;
    v->wt.global_scale = 1.0f;
    switch (mode) {
    case MK_QMODE_AFFINE:
        v->wt.fmt = MK_WF_AFFINE;
        if (!bi)
            return mk_err(MK_E_FORMAT, "tensor '%s': affine quantization needs %s.biases", w->name, module);
        break;
    case MK_QMODE_MXFP4: v->wt.fmt = MK_WF_MXFP4; break;
    case MK_QMODE_MXFP8: v->wt.fmt = MK_WF_MXFP8; break;
    case MK_QMODE_NVFP4: v->wt.fmt = MK_WF_NVFP4; break;
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
    set_logical(v, w->ndim, shape);
    v->slice_rows = w->shape[w->ndim - 2];
    v->wt.rows = v->slice_rows;
    v->wt.cols = in;
    v->parts[0] = w;
    v->parts[1] = sc;
    v->parts[2] = bi;
    v->wt.data = mk_ckpt_data(c, w);
    v->wt.scales = mk_ckpt_data(c, sc);
    v->wt.biases = bi ? mk_ckpt_data(c, bi) : NULL;
    return mk_wt_check(&v->wt, w->name);
}

static mk_status open_fp8(const mk_ckpt *c, const mk_config *cfg, mk_qview *v, const mk_tensor_info *w, const mk_tensor_info *si) {
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
    v->kind = MK_QK_FP8;
    memset(&v->wt, 0, sizeof v->wt);
    v->wt.fmt = w->dtype == MK_DT_F8_E5M2 ? MK_WF_FP8_E5M2 : MK_WF_FP8_E4M3;
    v->wt.rows = w->shape[0];
    v->wt.cols = w->shape[1];
    v->wt.sdtype = si->dtype;
    v->wt.block_r = br;
    v->wt.block_c = bc;
    v->wt.global_scale = 1.0f;
    set_logical(v, 2, w->shape);
    v->slice_rows = w->shape[0];
    v->parts[0] = w;
    v->parts[1] = si;
    v->wt.data = mk_ckpt_data(c, w);
    v->wt.scales = mk_ckpt_data(c, si);
    return mk_wt_check(&v->wt, w->name);
}

mk_status mk_qview_open(const mk_ckpt *c, const mk_config *cfg, const char *name, mk_qview *v) {
    memset(v, 0, sizeof *v);
    v->name = name;
    const mk_tensor_info *t = mk_ckpt_find(c, name);
    char module[1024];
    if (!t && ends_with(name, ".weight")) {
        /* compressed-tensors: logical W.weight stored as W.weight_packed */
        const mk_tensor_info *pk = find2(c, name, "_packed");
        if (pk) {
            module_of(name, ".weight", module, sizeof module);
            return mk_err(MK_E_UNSUPPORTED,
                          "tensor '%s': compressed-tensors weights are read through convert (repack to MLX)",
                          name);
        }
    }
    if (!t)
        return mk_err(MK_E_NOTFOUND, "tensor '%s' not found", name);
    const char *suf = ends_with(name, ".weight") ? ".weight" : "";
    module_of(name, suf, module, sizeof module);
    const mk_tensor_info *sc = find2(c, module, ".scales");
    if (sc)
        return open_mlx(c, cfg, v, t, sc, find2(c, module, ".biases"), module);
    const mk_tensor_info *si = find2(c, name, "_scale_inv");
    if (si && (t->dtype == MK_DT_F8_E4M3 || t->dtype == MK_DT_F8_E5M2))
        return open_fp8(c, cfg, v, t, si);
    v->kind = MK_QK_PLAIN;
    v->parts[0] = t;
    set_logical(v, t->ndim, t->shape);
    v->slice_rows = v->rows;
    return MK_OK;
}

void mk_qview_close(mk_qview *v) {
    if (!v)
        return;
    free(v->ct_biases);
    v->ct_biases = NULL;
}

mk_status mk_qview_row(const mk_ckpt *c, const mk_qview *v, int64_t r, float *out) {
    if (r < 0 || r >= v->rows)
        return mk_err(MK_E_ARG, "tensor '%s': row %lld out of range", v->name, (long long)r);
    if (v->kind == MK_QK_PLAIN)
        return mk_ckpt_read_f32(c, v->parts[0], (uint64_t)(r * v->cols), (uint64_t)v->cols, out);
    const unsigned char *w = mk_ckpt_data(c, v->parts[0]);
    const unsigned char *s = mk_ckpt_data(c, v->parts[1]);
    const unsigned char *b = v->parts[2] ? mk_ckpt_data(c, v->parts[2]) : NULL;
    if (!w || !s)
        return mk_err(MK_E_INTERNAL, "tensor '%s': quantized rows need the mmapped checkpoint", v->name);
    /* Point the 2-D view at the slice holding row r (stacked experts). */
    int64_t slice = r / v->slice_rows, rr = r % v->slice_rows;
    mk_wt wt = v->wt;
    size_t rowb = mk_wt_row_bytes(&wt);
    wt.data = w + (size_t)slice * (size_t)v->slice_rows * rowb;
    if (v->kind == MK_QK_MLX) {
        int64_t per = v->slice_rows * (v->cols / wt.group);
        size_t ssz = wt.fmt == MK_WF_AFFINE ? mk_dtype_info(wt.sdtype)->bits / 8 : 1;
        wt.scales = s + (size_t)(slice * per) * ssz;
        wt.biases = b ? b + (size_t)(slice * per) * ssz : NULL;
    } else {
        wt.scales = s;
    }
    mk_wt_dequant_row(&wt, rr, out);
    return MK_OK;
}
