/* Reading a source checkpoint into modules, logical tensors and expert
 * groups, from headers and config alone, checking everything a conversion
 * depends on before a byte is written.
 *
 * Map of this file: open (config, architecture, strict safetensors reader
 * without mmap, so touched pages never count against the memory bound) ->
 * group companions into modules by name suffix (format's table, mk_qview_suffix) ->
 * resolve each module's storage kind and logical shape (FP8 scale grids,
 * compressed-tensors group sizes, MLX bits vs packed shape) -> canonical
 * names -> routed experts into complete groups (indices exactly 0..E-1). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "convert/conv_impl.h"
#include "io/os.h"
#include "moekit/model.h"

/* Tensors of one module while grouping by name. */
typedef struct gather {
    const mk_tensor_info *main, *fp8s, *cts, *ctzp, *ctshape, *ctgidx, *mlxs, *mlxb;
    bool packed; /* main is a CT weight_packed */
} gather;

static void shape_copy(cv_mod *m, int ndim, const int64_t *shape) {
    m->ndim = ndim;
    memcpy(m->shape, shape, (size_t)ndim * sizeof *shape);
    m->cols = ndim ? shape[ndim - 1] : 1;
    m->rows = 1;
    for (int d = 0; d + 1 < ndim; d++)
        m->rows *= shape[d];
    m->mrows = ndim >= 2 ? shape[ndim - 2] : m->rows;
}

static const char *sh(char *b, size_t n, const mk_tensor_info *t) { return cv_shape_str(b, n, t->ndim, t->shape); }

/* FP8: weight (.., R, C) F8 + scale grid (.., ceil(R/br), ceil(C/bc)), or
 * the same number of elements squeezed (transformers 5.x per-expert). */
static mk_status resolve_fp8(cv_src *s, cv_mod *m, const gather *g) {
    const mk_tensor_info *w = g->main, *sc = g->fp8s;
    char b1[96], b2[96];
    if (w->ndim < 2)
        return mk_err(MK_E_FORMAT, "%s: tensor '%s' is %s with shape %s; FP8 block weights need 2 or more dims",
                      s->dir, w->name, mk_dtype_name(w->dtype), sh(b1, sizeof b1, w));
    if (!cv_is_float_dtype(sc->dtype) || sc->dtype == MK_DT_F64)
        return mk_err(MK_E_FORMAT, "%s: tensor '%s': scale dtype %s, expected F32, BF16 or F16", s->dir, sc->name,
                      mk_dtype_name(sc->dtype));
    m->kind = CV_FP8;
    shape_copy(m, w->ndim, w->shape);
    m->vdt = w->dtype;
    m->block_r = s->cfg.quant.method == MK_QM_FP8 ? s->cfg.quant.block[0] : 128;
    m->block_c = s->cfg.quant.method == MK_QM_FP8 ? s->cfg.quant.block[1] : 128;
    int64_t gr = (m->mrows + m->block_r - 1) / m->block_r, gc = (m->cols + m->block_c - 1) / m->block_c;
    int64_t nmat = m->rows / (m->mrows ? m->mrows : 1);
    uint64_t want = (uint64_t)(nmat * gr * gc);
    if (sc->numel != want)
        return mk_err(MK_E_FORMAT,
                      "%s: scale grid '%s' %s fits no block grid of weight '%s' %s: %dx%d blocks need %lld x "
                      "[%lld,%lld] = %llu scales, found %llu",
                      s->dir, sc->name, sh(b1, sizeof b1, sc), w->name, sh(b2, sizeof b2, w), m->block_r,
                      m->block_c, (long long)nmat, (long long)gr, (long long)gc, (unsigned long long)want,
                      (unsigned long long)sc->numel);
    m->t[CV_T_SCALE] = sc;
    return MK_OK;
}

static mk_status read_ct_shape(cv_src *s, const mk_tensor_info *t, int64_t out[2]) {
    char b[96];
    if (t->numel != 2 || (t->dtype != MK_DT_I32 && t->dtype != MK_DT_I64))
        return mk_err(MK_E_FORMAT, "%s: tensor '%s' is %s %s, expected 2 integers [out, in] (I32 or I64)", s->dir,
                      t->name, mk_dtype_name(t->dtype), sh(b, sizeof b, t));
    unsigned char buf[16];
    MK_TRY(mk_ckpt_read(s->ck, t, 0, buf, (size_t)t->nbytes));
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
        return mk_err(MK_E_FORMAT, "%s: tensor '%s' holds [%lld, %lld], expected positive sizes", s->dir, t->name,
                      (long long)out[0], (long long)out[1]);
    return MK_OK;
}

/* g_idx must be the trivial ordering g_idx[j] = j / group (no act-order). */
static mk_status check_gidx(cv_src *s, const mk_tensor_info *t, int64_t in, int group) {
    if (t->numel != (uint64_t)in || (t->dtype != MK_DT_I32 && t->dtype != MK_DT_I64))
        return mk_err(MK_E_FORMAT, "%s: tensor '%s': expected %lld I32/I64 group indices, found %llu x %s", s->dir,
                      t->name, (long long)in, (unsigned long long)t->numel, mk_dtype_name(t->dtype));
    size_t es = cv_esize(t->dtype);
    unsigned char buf[4096];
    for (int64_t j0 = 0; j0 < in; j0 += (int64_t)(sizeof buf / es)) {
        int64_t n = in - j0 < (int64_t)(sizeof buf / es) ? in - j0 : (int64_t)(sizeof buf / es);
        MK_TRY(mk_ckpt_read(s->ck, t, (uint64_t)j0 * es, buf, (size_t)n * es));
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
                              s->dir, t->name, (long long)(j0 + j), (long long)v, (long long)((j0 + j) / group));
        }
    }
    return MK_OK;
}

/* compressed-tensors pack-quantized INT4 (FORMATS.md 5). */
static mk_status resolve_ct(cv_src *s, cv_mod *m, const gather *g) {
    const mk_tensor_info *w = g->main, *sc = g->cts;
    char b1[96], b2[96];
    if (!sc)
        return mk_err(MK_E_FORMAT, "%s: '%s' has no weight_scale beside it", s->dir, w->name);
    /* the same refusal as the engine's (format/config_check.c) */
    size_t ml = strlen(w->name) > strlen(".weight_packed") ? strlen(w->name) - strlen(".weight_packed") : 0;
    char mod[512];
    snprintf(mod, sizeof mod, "%.*s", (int)ml, w->name);
    MK_TRY(mk_ct_check(&s->cfg.quant, s->dir, mod, g->ctzp != NULL));
    if (w->ndim != 2 || (w->dtype != MK_DT_I32 && w->dtype != MK_DT_U32))
        return mk_err(MK_E_FORMAT, "%s: tensor '%s' is %s %s, expected I32 [out, ceil(in/8)]", s->dir, w->name,
                      mk_dtype_name(w->dtype), sh(b1, sizeof b1, w));
    int64_t lshape[2] = {w->shape[0], w->shape[1] * 8};
    if (g->ctshape)
        MK_TRY(read_ct_shape(s, g->ctshape, lshape));
    if (lshape[0] != w->shape[0] || (lshape[1] + 7) / 8 != w->shape[1])
        return mk_err(MK_E_FORMAT, "%s: tensor '%s' %s does not pack weight_shape [%lld,%lld] (expected [%lld,%lld])",
                      s->dir, w->name, sh(b1, sizeof b1, w), (long long)lshape[0], (long long)lshape[1],
                      (long long)lshape[0], (long long)((lshape[1] + 7) / 8));
    if (sc->ndim != 2 || sc->shape[0] != lshape[0] || !cv_is_float_dtype(sc->dtype) || sc->dtype == MK_DT_F64)
        return mk_err(MK_E_FORMAT, "%s: tensor '%s' is %s %s, expected F32/BF16/F16 [%lld, in/group]", s->dir,
                      sc->name, mk_dtype_name(sc->dtype), sh(b1, sizeof b1, sc), (long long)lshape[0]);
    int group = s->cfg.quant.method == MK_QM_CT ? s->cfg.quant.ct_group_size : 0;
    if (group <= 0)
        group = (int)(lshape[1] / (sc->shape[1] ? sc->shape[1] : 1));
    if (group <= 0 || lshape[1] % group != 0)
        return mk_err(MK_E_FORMAT,
                      "%s: module '%s': INT4 group size %d does not divide the row length %lld (weight_shape "
                      "[%lld,%lld]); MLX affine needs whole groups",
                      s->dir, w->name, group, (long long)lshape[1], (long long)lshape[0], (long long)lshape[1]);
    if (group != 32 && group != 64 && group != 128)
        return mk_err(MK_E_UNSUPPORTED, "%s: module '%s': INT4 group size %d; MLX supports 32, 64, 128", s->dir,
                      w->name, group);
    if (sc->shape[1] != lshape[1] / group)
        return mk_err(MK_E_FORMAT, "%s: tensor '%s' %s: expected [%lld,%lld] scales for group size %d", s->dir,
                      sc->name, sh(b1, sizeof b1, sc), (long long)lshape[0], (long long)(lshape[1] / group), group);
    if (g->ctzp) {
        const mk_tensor_info *z = g->ctzp;
        if (z->ndim != 2 || z->shape[0] != (lshape[0] + 7) / 8 || z->shape[1] != lshape[1] / group ||
            (z->dtype != MK_DT_I32 && z->dtype != MK_DT_U32))
            return mk_err(MK_E_FORMAT, "%s: tensor '%s' is %s %s, expected I32 [%lld,%lld] (packed along dim 0)",
                          s->dir, z->name, mk_dtype_name(z->dtype), sh(b2, sizeof b2, z),
                          (long long)((lshape[0] + 7) / 8), (long long)(lshape[1] / group));
    }
    if (g->ctgidx)
        MK_TRY(check_gidx(s, g->ctgidx, lshape[1], group));
    m->kind = CV_CT;
    shape_copy(m, 2, lshape);
    m->vdt = sc->dtype;
    m->bits = 4;
    m->group = group;
    m->ct_sym = g->ctzp == NULL;
    m->t[CV_T_SCALE] = sc;
    m->t[CV_T_ZP] = g->ctzp;
    return MK_OK;
}

/* MLX quantized module: bits from the config entry AND the packed shape. */
static mk_status resolve_mlx(cv_src *s, cv_mod *m, const gather *g) {
    const mk_tensor_info *w = g->main, *sc = g->mlxs, *bi = g->mlxb;
    char b1[96], b2[96];
    char *path = cv_printf("%.*s", (int)(strlen(m->name) - strlen(".weight")), m->name);
    if (!path)
        return mk_err(MK_E_NOMEM, "out of memory");
    int bits = 0, group = 0;
    mk_qmode mode = MK_QMODE_AFFINE;
    bool q = mk_qcfg_lookup(&s->cfg.quant, path, true, &bits, &group, &mode);
    free(path);
    if (!q || s->cfg.quant.method != MK_QM_MLX)
        return mk_err(MK_E_FORMAT, "%s: '%s' has MLX scales but config.json has no quantization block for it", s->dir,
                      w->name);
    if (w->ndim < 2 || sc->ndim != w->ndim || bits <= 0 || group <= 0)
        return mk_err(MK_E_FORMAT, "%s: MLX module '%s': weight %s and scales %s do not match", s->dir, w->name,
                      sh(b1, sizeof b1, w), sh(b2, sizeof b2, sc));
    for (int d = 0; d + 1 < w->ndim; d++)
        if (sc->shape[d] != w->shape[d])
            return mk_err(MK_E_FORMAT, "%s: MLX module '%s': weight %s and scales %s differ in leading dims", s->dir,
                          w->name, sh(b1, sizeof b1, w), sh(b2, sizeof b2, sc));
    int64_t in = sc->shape[sc->ndim - 1] * group, wcols = w->shape[w->ndim - 1];
    if (wcols * 32 != in * bits)
        return mk_err(MK_E_MISMATCH,
                      "%s: MLX module '%s': config says %d bits, group %d, so %lld columns need %lld packed words, "
                      "found %lld",
                      s->dir, w->name, bits, group, (long long)in, (long long)(in * bits / 32), (long long)wcols);
    if (mode == MK_QMODE_AFFINE && (!bi || bi->ndim != sc->ndim || bi->numel != sc->numel))
        return mk_err(MK_E_FORMAT, "%s: MLX affine module '%s' needs biases shaped like its scales %s", s->dir,
                      w->name, sh(b1, sizeof b1, sc));
    int64_t lshape[MK_MAX_DIMS];
    memcpy(lshape, w->shape, sizeof lshape);
    lshape[w->ndim - 1] = in;
    m->kind = CV_MLX;
    shape_copy(m, w->ndim, lshape);
    m->vdt = sc->dtype;
    m->bits = bits;
    m->group = mode == MK_QMODE_AFFINE ? group : -group; /* negative: an fp mode, copy-only */
    m->t[CV_T_SCALE] = sc;
    m->t[CV_T_BIAS] = bi;
    return MK_OK;
}

static cv_mod *add_mod(cv_src *s, const char *name, const mk_tensor_info *t) {
    cv_mod *m = &s->mods[s->nmods++];
    memset(m, 0, sizeof *m);
    m->name = cv_strdup(name);
    m->t[CV_T_MAIN] = t;
    if (t) {
        shape_copy(m, t->ndim, t->shape);
        m->vdt = t->dtype;
        m->kind = cv_is_float_dtype(t->dtype) ? CV_FLOAT : CV_RAW;
    }
    return m;
}

/* One module from its gathered tensors. May append plain modules for
 * tensors that only looked like companions (a real `.scales` parameter). */
static mk_status resolve(cv_src *s, const char *base, const gather *g) {
    if (!g->main) {
        const mk_tensor_info *c = g->fp8s ? g->fp8s : g->cts ? g->cts : g->mlxs ? g->mlxs : g->mlxb;
        if (g->mlxs || g->mlxb) { /* not companions after all: plain tensors */
            if (g->mlxs && !add_mod(s, g->mlxs->name, g->mlxs)->name)
                return mk_err(MK_E_NOMEM, "out of memory");
            if (g->mlxb && !add_mod(s, g->mlxb->name, g->mlxb)->name)
                return mk_err(MK_E_NOMEM, "out of memory");
            if (!g->fp8s && !g->cts && !g->ctzp)
                return MK_OK;
        }
        c = c ? c : g->ctzp ? g->ctzp : g->ctshape;
        return mk_err(MK_E_FORMAT, "%s: tensor '%s' is a companion of '%s', which is not in the checkpoint", s->dir,
                      c ? c->name : base, base);
    }
    cv_mod *m = add_mod(s, base, g->main);
    if (!m->name)
        return mk_err(MK_E_NOMEM, "out of memory");
    mk_dtype dt = g->main->dtype;
    bool fp8 = dt == MK_DT_F8_E4M3 || dt == MK_DT_F8_E5M2;
    if (g->packed)
        MK_TRY(resolve_ct(s, m, g));
    else if (fp8) {
        if (!g->fp8s)
            return mk_err(g->cts ? MK_E_UNSUPPORTED : MK_E_FORMAT,
                          "%s: tensor '%s' is %s but has no '%s_scale_inv' block scales%s", s->dir, g->main->name,
                          mk_dtype_name(dt), g->main->name, g->cts ? " (per-tensor FP8 scales are not supported)" : "");
        MK_TRY(resolve_fp8(s, m, g));
    } else if (dt == MK_DT_U32 && g->mlxs)
        MK_TRY(resolve_mlx(s, m, g));
    else {
        if (dt == MK_DT_F8_E4M3FNUZ || dt == MK_DT_F8_E5M2FNUZ || dt == MK_DT_F8_E8M0 || dt == MK_DT_F4)
            return mk_err(MK_E_UNSUPPORTED, "%s: tensor '%s' has dtype %s, which convert cannot decode", s->dir,
                          g->main->name, mk_dtype_name(dt));
        const mk_tensor_info *stray = g->fp8s ? g->fp8s : g->cts ? g->cts : g->ctzp;
        if (stray)
            return mk_err(MK_E_FORMAT, "%s: tensor '%s' looks like the scales of '%s', but that is %s, not quantized",
                          s->dir, stray->name, g->main->name, mk_dtype_name(dt));
        if (g->mlxs && !add_mod(s, g->mlxs->name, g->mlxs)->name)
            return mk_err(MK_E_NOMEM, "out of memory");
        if (g->mlxb && !add_mod(s, g->mlxb->name, g->mlxb)->name)
            return mk_err(MK_E_NOMEM, "out of memory");
    }
    return MK_OK;
}

static mk_status gather_modules(cv_src *s) {
    size_t n = mk_ckpt_count(s->ck);
    gather *gs = mk_calloc(n ? n : 1, sizeof *gs);
    char **bases = mk_calloc(n ? n : 1, sizeof *bases);
    cv_map *map = cv_map_new(n);
    s->mods = mk_calloc(n ? 2 * n : 1, sizeof *s->mods); /* plus companions turned plain */
    mk_status st = (gs && bases && map && s->mods) ? MK_OK : mk_err(MK_E_NOMEM, "out of memory");
    size_t ng = 0;
    for (size_t i = 0; st == MK_OK && i < n; i++) {
        const mk_tensor_info *t = mk_ckpt_tensor(s->ck, i);
        char *base = NULL;
        mk_qrole r = mk_layout_role(t->name, &base, NULL);
        if (!base) {
            st = mk_err(MK_E_NOMEM, "out of memory");
            break;
        }
        if (r == MK_QR_DROP) {
            s->ndropped++;
            free(base);
            continue;
        }
        gather *g = cv_map_get(map, base);
        if (!g) {
            g = &gs[ng];
            bases[ng++] = base;
            if (!cv_map_put(map, base, g)) {
                st = mk_err(MK_E_NOMEM, "out of memory");
                break;
            }
        } else
            free(base);
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
        default: break;
        }
        if (slot && *slot)
            st = mk_err(MK_E_FORMAT, "%s: tensors '%s' and '%s' both claim to be the data of module '%s'", s->dir,
                        (*slot)->name, t->name, bases[g - gs]);
        else if (slot)
            *slot = t;
    }
    /* Resolve in tensor order of the checkpoint: deterministic. */
    for (size_t i = 0; st == MK_OK && i < ng; i++)
        st = resolve(s, bases[i], &gs[i]);
    for (size_t i = 0; i < ng; i++)
        free(bases[i]);
    free(bases);
    free(gs);
    cv_map_free(map);
    return st;
}

/* ------------------------------------------------------------ experts */

/* Missing expert indices of one projection as "3, 5-9" (truncated). */
static void fmt_missing(const cv_egroup *g, int p, char *buf, size_t n) {
    size_t k = 0;
    buf[0] = 0;
    for (int e = 0; e < g->n && k + 24 < n; e++) {
        if (g->proj[p][e].mod)
            continue;
        int f = e;
        while (e + 1 < g->n && !g->proj[p][e + 1].mod)
            e++;
        k += (size_t)(f == e ? snprintf(buf + k, n - k, "%s%d", k ? ", " : "", f)
                             : snprintf(buf + k, n - k, "%s%d-%d", k ? ", " : "", f, e));
    }
}

static cv_egroup *group_for(cv_src *s, cv_map *gmap, const char *mlp, mk_part cls) {
    cv_egroup *g = cv_map_get(gmap, mlp);
    if (g)
        return g;
    g = &s->groups[s->ngroups++];
    memset(g, 0, sizeof *g);
    g->mlp = cv_strdup(mlp);
    g->cls = cls;
    g->n = s->cfg.num_experts;
    for (int p = 0; p < 3; p++)
        g->proj[p] = mk_calloc((size_t)(g->n > 0 ? g->n : 1), sizeof(cv_lt));
    if (!g->mlp || !g->proj[0] || !g->proj[1] || !g->proj[2] || !cv_map_put(gmap, g->mlp, g))
        return NULL;
    return g;
}

/* Place rows [row0, row0+nrows) of m as expert e of projection p. */
static mk_status place(cv_src *s, cv_egroup *g, int p, int e, const cv_mod *m, int64_t row0, int64_t nrows,
                       int64_t cols) {
    if (e == -2)
        return mk_err(MK_E_FORMAT, "%s: %s: tensor '%s' has an expert index that is not a number", s->dir, g->mlp,
                      m->name);
    if (e < 0 || e >= g->n)
        return mk_err(MK_E_FORMAT, "%s: %s: tensor '%s' is expert %d of %s, but config.json says %d experts "
                      "(indices 0..%d)", s->dir, g->mlp, m->name, e, mk_layout_proj_names[p], g->n, g->n - 1);
    cv_lt *lt = &g->proj[p][e];
    if (lt->mod)
        return mk_err(MK_E_FORMAT, "%s: %s: expert %d of %s appears twice ('%s' and '%s')", s->dir, g->mlp, e,
                      mk_layout_proj_names[p], lt->mod->name, m->name);
    lt->mod = m;
    lt->cls = g->cls;
    lt->row0 = row0;
    lt->nrows = nrows;
    lt->ndim = 2;
    lt->shape[0] = nrows;
    lt->shape[1] = cols;
    lt->cname = cv_printf("%s.experts.%d.%s.weight", g->mlp, e, mk_layout_proj_names[p]);
    return lt->cname ? MK_OK : mk_err(MK_E_NOMEM, "out of memory");
}

/* The most experts the checkpoint could hold: one tensor per expert
 * (per-expert) or the leading dim of a stacked tensor. A larger num_experts
 * is refused before expert tables are sized by it. */
static uint64_t experts_bound(const cv_src *s) {
    uint64_t b = mk_ckpt_count(s->ck);
    for (size_t i = 0; i < s->nmods; i++)
        if (s->mods[i].ndim == 3 && (uint64_t)s->mods[i].shape[0] > b)
            b = (uint64_t)s->mods[i].shape[0];
    return b;
}

static mk_status place_module(cv_src *s, cv_map *gmap, const cv_mod *m, bool *stacked) {
    char *mlp = NULL;
    int e, p;
    mk_eform f = mk_layout_expert(m->cname, &mlp, &e, &p);
    char b[96];
    if (f == MK_EF_NONE) {
        free(mlp);
        cv_lt *lt = &s->lts[s->nlts++];
        lt->cname = cv_strdup(m->cname);
        lt->cls = m->cls;
        lt->mod = m;
        lt->row0 = 0;
        lt->nrows = m->rows;
        lt->ndim = m->ndim;
        memcpy(lt->shape, m->shape, sizeof lt->shape);
        return lt->cname ? MK_OK : mk_err(MK_E_NOMEM, "out of memory");
    }
    mk_status st = MK_OK;
    if (!s->ebound)
        s->ebound = experts_bound(s);
    if (s->cfg.num_experts > 0 && (uint64_t)s->cfg.num_experts > s->ebound) {
        free(mlp);
        return mk_err(MK_E_FORMAT, "%s: config.json says num_experts %d, more than the checkpoint can hold "
                      "(%zu tensors, no stacked expert tensor that large): not sizing tables by it", s->dir,
                      s->cfg.num_experts, mk_ckpt_count(s->ck));
    }
    cv_egroup *g = mlp ? group_for(s, gmap, mlp, m->cls) : NULL;
    free(mlp);
    if (!g)
        return mk_err(MK_E_NOMEM, "out of memory");
    if (g->n <= 0)
        return mk_err(MK_E_FORMAT, "%s: tensor '%s' holds routed experts but config.json gives no expert count",
                      s->dir, m->name);
    int want_nd = f == MK_EF_PER_EXPERT ? 2 : 3;
    if (m->ndim != want_nd || (want_nd == 3 && m->shape[0] != g->n))
        return mk_err(MK_E_FORMAT, "%s: tensor '%s' has shape %s, expected %s", s->dir, m->name,
                      cv_shape_str(b, sizeof b, m->ndim, m->shape),
                      want_nd == 2 ? "[out, in]" : "[num_experts, out, in] with num_experts from config.json");
    int64_t R = m->mrows, C = m->cols;
    if (f == MK_EF_PER_EXPERT)
        return place(s, g, p, e, m, 0, R, C);
    *stacked = *stacked || f == MK_EF_STACKED;
    if (f == MK_EF_FUSED_GATE_UP && R % 2)
        return mk_err(MK_E_FORMAT, "%s: fused '%s' %s: the gate/up dimension %lld is odd", s->dir, m->name,
                      cv_shape_str(b, sizeof b, m->ndim, m->shape), (long long)R);
    for (int x = 0; st == MK_OK && x < g->n; x++) {
        if (f == MK_EF_FUSED_GATE_UP) {
            st = place(s, g, MK_PROJ_GATE, x, m, x * R, R / 2, C);
            if (st == MK_OK)
                st = place(s, g, MK_PROJ_UP, x, m, x * R + R / 2, R / 2, C);
        } else
            st = place(s, g, f == MK_EF_FUSED_DOWN ? MK_PROJ_DOWN : p, x, m, x * R, R, C);
    }
    return st;
}

/* First expert of projection p that is present (0 unless the source was
 * opened with holes allowed); g->n when there is none. */
static int first_present(const cv_egroup *g, int p) {
    int e = 0;
    while (e < g->n && !g->proj[p][e].mod)
        e++;
    return e;
}

/* Every group complete (unless holes are allowed) and consistently shaped. */
static mk_status check_groups(cv_src *s) {
    char miss[512];
    for (size_t i = 0; i < s->ngroups; i++) {
        cv_egroup *g = &s->groups[i];
        int f[3];
        for (int p = 0; p < 3; p++) {
            fmt_missing(g, p, miss, sizeof miss);
            if (miss[0] && !s->partial_experts)
                return mk_err(MK_E_FORMAT, "%s: %s: missing experts of %s: %s (expected indices 0..%d)", s->dir,
                              g->mlp, mk_layout_proj_names[p], miss, g->n - 1);
            f[p] = first_present(g, p);
            for (int e = f[p] + 1; e < g->n; e++) {
                if (!g->proj[p][e].mod)
                    continue;
                const cv_lt *a = &g->proj[p][f[p]], *b = &g->proj[p][e];
                if (a->shape[0] != b->shape[0] || a->shape[1] != b->shape[1] ||
                    (a->mod->kind == CV_FLOAT) != (b->mod->kind == CV_FLOAT))
                    return mk_err(MK_E_FORMAT,
                                  "%s: %s: expert %d of %s is [%lld,%lld] %s, expert %d is [%lld,%lld] %s; experts "
                                  "must agree to be stacked",
                                  s->dir, g->mlp, e, mk_layout_proj_names[p], (long long)b->shape[0],
                                  (long long)b->shape[1], b->mod->name, f[p], (long long)a->shape[0],
                                  (long long)a->shape[1], a->mod->name);
            }
        }
        if (f[0] == g->n || f[1] == g->n || f[2] == g->n)
            continue; /* a whole projection absent (holes allowed): nothing to relate */
        const cv_lt *gt = &g->proj[MK_PROJ_GATE][f[0]], *up = &g->proj[MK_PROJ_UP][f[1]],
                    *dn = &g->proj[MK_PROJ_DOWN][f[2]];
        if (gt->shape[0] != up->shape[0] || gt->shape[1] != up->shape[1] || dn->shape[0] != gt->shape[1] ||
            dn->shape[1] != gt->shape[0])
            return mk_err(MK_E_FORMAT,
                          "%s: %s: gate_proj [%lld,%lld], up_proj [%lld,%lld], down_proj [%lld,%lld] do not form "
                          "an expert (expected [I,H], [I,H], [H,I])",
                          s->dir, g->mlp, (long long)gt->shape[0], (long long)gt->shape[1], (long long)up->shape[0],
                          (long long)up->shape[1], (long long)dn->shape[0], (long long)dn->shape[1]);
    }
    return MK_OK;
}

static mk_status canonicalize(cv_src *s) {
    int nl = s->cfg.arch == MK_ARCH_DEEPSEEK_V3 ? s->cfg.num_layers : 0;
    bool stacked = false, conv_hf = false, conv_mlx = false, any_mlx = false;
    for (size_t i = 0; i < s->nmods; i++) {
        cv_mod *m = &s->mods[i];
        bool vlp;
        m->cname = mk_layout_canon(m->name, nl, &m->cls, &vlp);
        if (!m->cname)
            return mk_err(MK_E_NOMEM, "out of memory");
        s->vl = s->vl || vlp;
        any_mlx = any_mlx || m->kind == CV_MLX || strncmp(m->name, "language_model.", 15) == 0;
        if (cv_ends_with(m->cname, "conv1d.weight") && m->ndim == 3) {
            conv_hf = conv_hf || m->shape[2] != 1;
            conv_mlx = conv_mlx || m->shape[2] == 1;
        }
    }
    s->lts = mk_calloc(s->nmods ? s->nmods : 1, sizeof *s->lts);
    s->groups = mk_calloc(s->nmods ? s->nmods : 1, sizeof *s->groups);
    cv_map *gmap = cv_map_new(64);
    mk_status st = (s->lts && s->groups && gmap) ? MK_OK : mk_err(MK_E_NOMEM, "out of memory");
    for (size_t i = 0; st == MK_OK && i < s->nmods; i++)
        st = place_module(s, gmap, &s->mods[i], &stacked);
    cv_map_free(gmap);
    MK_TRY(st);
    MK_TRY(check_groups(s));
    /* mlx-lm's own test for "raw HF": conv1d.weight.shape[-1] != 1. Without
     * a conv1d, MLX form shows in stacked experts, MLX modules or names. */
    const char *meta = mk_ckpt_metadata_json(s->ck, 0);
    bool meta_mlx = meta && strstr(meta, "\"mlx\"");
    s->is_mlx = conv_mlx || (!conv_hf && (stacked || any_mlx || meta_mlx));
    s->vl = s->vl || s->cfg.has_text_config;
    s->zero_centred = s->cfg.arch == MK_ARCH_QWEN3_NEXT || s->cfg.arch == MK_ARCH_QWEN3_5_MOE;
    return MK_OK;
}

mk_status cv_check_empty(const cv_src *s) {
    for (size_t i = 0; i < mk_ckpt_count(s->ck); i++) {
        const mk_tensor_info *t = mk_ckpt_tensor(s->ck, i);
        if (t->ndim >= 2 && t->numel == 0) {
            char b[96];
            return mk_err(MK_E_FORMAT, "%s: tensor '%s' has shape %s: no elements (a dimension is 0); "
                          "moekit does not convert or quantize empty tensors",
                          s->dir, t->name, sh(b, sizeof b, t));
        }
    }
    return MK_OK;
}

mk_status cv_src_open(const char *path, cv_src *s) { return cv_src_open_ex(path, 0, s); }

mk_status cv_src_open_ex(const char *path, unsigned flags, cv_src *s) {
    memset(s, 0, sizeof *s);
    s->partial_experts = (flags & CV_SRC_PARTIAL_EXPERTS) != 0;
    if (!mk_os_is_dir(path))
        return mk_err(MK_E_ARG, "%s: not a directory (SRC is a checkpoint directory with config.json)", path);
    s->dir = cv_strdup(path);
    if (!s->dir)
        return mk_err(MK_E_NOMEM, "out of memory");
    MK_TRY(mk_config_load(path, &s->cfg));
    if (s->cfg.arch == MK_ARCH_UNKNOWN)
        return mk_err(MK_E_UNSUPPORTED, "%s/config.json: model_type '%s' is not a supported architecture (supported: %s)",
                      path, s->cfg.model_type[0] ? s->cfg.model_type : "(none)", mk_arch_supported());
    MK_TRY(mk_ckpt_open(path, MK_CKPT_NO_MMAP, &s->ck));
    MK_TRY(cv_check_empty(s));
    MK_TRY(gather_modules(s));
    MK_TRY(canonicalize(s));
    /* An incomplete checkpoint (a missing projection, norm, lm_head, layer)
     * is refused before any byte is written, by the engine's own check, so
     * convert never writes what the engine would refuse to load. Verify
     * across layouts (partial experts) compares what is there instead. */
    if (!s->partial_experts) {
        mk_status st = mk_model_check(&s->cfg, s->ck);
        if (st != MK_OK)
            return mk_err_wrap(st, "%s: incomplete or inconsistent checkpoint, not converted", path);
    }
    return MK_OK;
}

void cv_src_close(cv_src *s) {
    if (!s)
        return;
    for (size_t i = 0; i < s->nmods; i++) {
        free(s->mods[i].name);
        free(s->mods[i].cname);
    }
    free(s->mods);
    for (size_t i = 0; i < s->nlts; i++)
        free(s->lts[i].cname);
    free(s->lts);
    for (size_t i = 0; i < s->ngroups; i++) {
        for (int p = 0; p < 3; p++) {
            for (int e = 0; s->groups[i].proj[p] && e < s->groups[i].n; e++)
                free(s->groups[i].proj[p][e].cname);
            free(s->groups[i].proj[p]);
        }
        free(s->groups[i].mlp);
    }
    free(s->groups);
    mk_ckpt_close(s->ck);
    mk_config_free(&s->cfg);
    free(s->dir);
    memset(s, 0, sizeof *s);
}
