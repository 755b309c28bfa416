/* Logical tensors over quantized storage (see qview.h), and the one table
 * of companion suffixes. What a logical tensor is stored as (parts, shape,
 * checks) is the stored module's (module.c, mk_smod_infer); a row is read
 * through its slice's byte ranges over the mapping. Dequantization of a
 * row goes through mk_wt_dequant_row, the portable reference the kernels
 * are tested against, so every tool agrees on what a quantized weight
 * means. */
#include <stdlib.h>
#include <string.h>

#include "moekit/qview.h"

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

mk_status mk_qview_open(const mk_ckpt *c, const mk_config *cfg, const char *name, mk_qview *v) {
    memset(v, 0, sizeof *v);
    v->name = name;
    MK_TRY(mk_smod_infer(c, cfg, name, &v->sm));
    const mk_smod *m = &v->sm;
    v->kind = m->kind == MK_SM_MLX ? MK_QK_MLX : m->kind == MK_SM_FP8 ? MK_QK_FP8 : MK_QK_PLAIN;
    v->ndim = m->ndim;
    memcpy(v->shape, m->shape, sizeof v->shape);
    v->rows = mk_smod_rows(m);
    v->cols = m->cols;
    if (v->kind == MK_QK_PLAIN)
        return MK_OK;
    v->wt = m->q;
    v->wt.rows = m->R;
    v->wt.cols = m->cols;
    mk_sslice s;
    if (mk_ckpt_data(c, m->part[MK_SP_WEIGHT]) && mk_smod_slice(m, 0, 0, m->R, &s) == MK_OK)
        MK_TRY(mk_smod_view(c, &s, &v->wt));
    return MK_OK;
}

void mk_qview_close(mk_qview *v) {
    (void)v; /* nothing owned today; kept so callers need not change when something is */
}

mk_status mk_qview_row(const mk_ckpt *c, const mk_qview *v, int64_t r, float *out) {
    if (r < 0 || r >= v->rows)
        return mk_err(MK_E_ARG, "tensor '%s': row %lld out of range", v->name, (long long)r);
    const mk_smod *m = &v->sm;
    if (v->kind == MK_QK_PLAIN)
        return mk_ckpt_read_f32(c, m->part[MK_SP_WEIGHT], (uint64_t)(r * v->cols), (uint64_t)v->cols, out);
    if (!mk_ckpt_data(c, m->part[MK_SP_WEIGHT]))
        return mk_err(MK_E_INTERNAL, "tensor '%s': quantized rows need the mmapped checkpoint", v->name);
    /* The 2-D view of the stacked matrix holding row r. */
    mk_sslice s;
    mk_wt wt;
    MK_TRY(mk_smod_slice(m, m->E ? r / m->R : 0, 0, m->R, &s));
    MK_TRY(mk_smod_view(c, &s, &wt));
    mk_wt_dequant_row(&wt, r % m->R, out);
    return MK_OK;
}
