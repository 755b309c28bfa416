/* Reading a source checkpoint into modules, logical tensors and expert
 * groups, from headers and config alone, checking everything a conversion
 * depends on before a byte is written.
 *
 * Map of this file: open (config, architecture, strict safetensors reader
 * without mmap, so touched pages never count against the memory bound) ->
 * group companions into modules by name suffix (format's table, mk_qview_suffix) ->
 * resolve each module's storage kind, logical shape and checks through the
 * stored-module definition (format/module.c, mk_smod_resolve: FP8 scale
 * grids, compressed-tensors group sizes, MLX bits vs packed shape) and keep
 * convert's projection of it (cv_mod) -> canonical names -> routed experts
 * into complete groups (indices exactly 0..E-1). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "convert/conv_impl.h"
#include "io/os.h"
#include "moekit/model.h"
#include "moekit/module.h"

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

/* convert's view of a resolved stored module (module.h): the kind it
 * plans by, the logical shape, the dtype its operations decode and the
 * parameters (an MLX module in an fp mode has a negative group: copy-only). */
static void project(cv_mod *m, const mk_smod *sm) {
    const mk_tensor_info *w = sm->part[MK_SP_WEIGHT];
    shape_copy(m, sm->ndim, sm->shape);
    m->t[CV_T_MAIN] = w;
    m->t[CV_T_SCALE] = sm->part[MK_SP_SCALES];
    m->t[CV_T_BIAS] = sm->part[MK_SP_BIASES];
    m->t[CV_T_ZP] = sm->part[MK_SP_ZP];
    switch (sm->kind) {
    case MK_SM_FP8:
        m->kind = CV_FP8;
        m->vdt = w->dtype;
        m->block_r = sm->q.block_r;
        m->block_c = sm->q.block_c;
        break;
    case MK_SM_CT:
        m->kind = CV_CT;
        m->vdt = sm->q.sdtype;
        m->bits = 4;
        m->group = sm->q.group;
        m->ct_sym = sm->ct_symmetric;
        break;
    case MK_SM_MLX:
        m->kind = CV_MLX;
        m->vdt = sm->q.sdtype;
        m->bits = sm->q.bits;
        m->group = sm->q.fmt == MK_WF_AFFINE ? sm->q.group : -sm->q.group;
        break;
    default: /* plain: as add_mod classified it */
        break;
    }
}

/* One module from its gathered tensors (resolved and checked by format's
 * mk_smod_resolve). MLX .scales/.biases without an MLX module of their own
 * are plain tensors (a real `.scales` parameter): appended as modules. */
static mk_status resolve(cv_src *s, const char *base, const mk_smod_parts *g) {
    mk_smod sm;
    if (!g->main && (g->mlxs || g->mlxb)) { /* not companions after all: plain tensors */
        if (g->mlxs && !add_mod(s, g->mlxs->name, g->mlxs)->name)
            return mk_err(MK_E_NOMEM, "%s: no memory for module %s", s->dir, g->mlxs->name);
        if (g->mlxb && !add_mod(s, g->mlxb->name, g->mlxb)->name)
            return mk_err(MK_E_NOMEM, "%s: no memory for module %s", s->dir, g->mlxb->name);
        if (!g->fp8s && !g->cts && !g->ctzp)
            return MK_OK;
    }
    if (!g->main)
        return mk_smod_resolve(s->ck, &s->cfg, s->dir, base, g, &sm);
    cv_mod *m = add_mod(s, base, g->main);
    if (!m->name)
        return mk_err(MK_E_NOMEM, "%s: no memory for module %s", s->dir, base);
    MK_TRY(mk_smod_resolve(s->ck, &s->cfg, s->dir, base, g, &sm));
    project(m, &sm);
    if (sm.kind == MK_SM_FLOAT || sm.kind == MK_SM_RAW) {
        if (g->mlxs && !add_mod(s, g->mlxs->name, g->mlxs)->name)
            return mk_err(MK_E_NOMEM, "%s: no memory for module %s", s->dir, g->mlxs->name);
        if (g->mlxb && !add_mod(s, g->mlxb->name, g->mlxb)->name)
            return mk_err(MK_E_NOMEM, "%s: no memory for module %s", s->dir, g->mlxb->name);
    }
    return MK_OK;
}

static mk_status gather_modules(cv_src *s) {
    size_t n = mk_ckpt_count(s->ck);
    mk_smod_parts *gs = mk_calloc(n ? n : 1, sizeof *gs);
    char **bases = mk_calloc(n ? n : 1, sizeof *bases);
    cv_map *map = cv_map_new(n);
    s->mods = mk_calloc(n ? 2 * n : 1, sizeof *s->mods); /* plus companions turned plain */
    mk_status st = (gs && bases && map && s->mods) ? MK_OK : mk_err(MK_E_NOMEM, "%s: no memory for the module tables of %zu tensors", s->dir, n);
    size_t ng = 0;
    for (size_t i = 0; st == MK_OK && i < n; i++) {
        const mk_tensor_info *t = mk_ckpt_tensor(s->ck, i);
        char *base = NULL;
        mk_qrole r = mk_layout_role(t->name, &base, NULL);
        if (!base) {
            st = mk_err(MK_E_NOMEM, "%s: no memory for the module name of tensor %s", s->dir, t->name);
            break;
        }
        if (r == MK_QR_DROP) {
            s->ndropped++;
            free(base);
            continue;
        }
        mk_smod_parts *g = cv_map_get(map, base);
        if (!g) {
            g = &gs[ng];
            bases[ng++] = base;
            if (!cv_map_put(map, base, g)) {
                st = mk_err(MK_E_NOMEM, "%s: no memory to index module %s", s->dir, base);
                break;
            }
        } else
            free(base);
        st = mk_smod_parts_add(g, r, t, s->dir, bases[g - gs]);
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
    return lt->cname ? MK_OK : mk_err(MK_E_NOMEM, "%s: no memory for the name of expert %d of %s", s->dir, e, g->mlp);
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

/* MiniMax's per-expert names <mlp>.experts.<e>.w1|w3|w2.weight (gate, up,
 * down), for CV_SRC_W123_EXPERTS. */
static mk_eform w123_expert(const char *cname, char **mlp, int *e, int *p) {
    const char *x = strstr(cname, ".experts.");
    unsigned idx;
    int at = 0;
    char w[4];
    if (!x || sscanf(x, ".experts.%u.%3[w0-9].weight%n", &idx, w, &at) != 2 || x[at] != 0)
        return MK_EF_NONE;
    if (strcmp(w, "w1") && strcmp(w, "w2") && strcmp(w, "w3"))
        return MK_EF_NONE;
    *p = w[1] == '1' ? MK_PROJ_GATE : w[1] == '3' ? MK_PROJ_UP : MK_PROJ_DOWN;
    *e = (int)idx;
    *mlp = mk_strndup(cname, (size_t)(x - cname));
    return MK_EF_PER_EXPERT;
}

static mk_status place_module(cv_src *s, cv_map *gmap, const cv_mod *m, bool *stacked) {
    char *mlp = NULL;
    int e, p;
    mk_eform f = mk_layout_expert(m->cname, &mlp, &e, &p);
    if (f == MK_EF_NONE && s->w123_experts) {
        free(mlp);
        mlp = NULL;
        f = w123_expert(m->cname, &mlp, &e, &p);
    }
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
        return lt->cname ? MK_OK : mk_err(MK_E_NOMEM, "%s: no memory for the canonical name of %s", s->dir, m->name);
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
        return mk_err(MK_E_NOMEM, "%s: no memory for the expert group of %s", s->dir, m->name);
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
    int nl = s->cfg.arch == MK_ARCH_DEEPSEEK_V3 || s->cfg.arch == MK_ARCH_GLM4_MOE ? s->cfg.num_layers : 0;
    bool stacked = false, conv_hf = false, conv_mlx = false, any_mlx = false;
    for (size_t i = 0; i < s->nmods; i++) {
        cv_mod *m = &s->mods[i];
        bool vlp;
        m->cname = mk_layout_canon(m->name, nl, &m->cls, &vlp);
        if (!m->cname)
            return mk_err(MK_E_NOMEM, "%s: no memory for the canonical name of %s", s->dir, m->name);
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
    mk_status st = (s->lts && s->groups && gmap) ? MK_OK : mk_err(MK_E_NOMEM, "%s: no memory for the tables of %zu modules", s->dir, s->nmods);
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
    s->w123_experts = (flags & CV_SRC_W123_EXPERTS) != 0;
    if (!mk_os_is_dir(path))
        return mk_err(MK_E_ARG, "%s: not a directory (SRC is a checkpoint directory with config.json)", path);
    s->dir = cv_strdup(path);
    if (!s->dir)
        return mk_err(MK_E_NOMEM, "%s: no memory for its path", path);
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
