/* Running a profile: routing statistics from the engine, quantization
 * errors from profile_err.c, usage weights, and the check that a profile
 * belongs to a model.
 *
 * Routing is observed through the engine's on_route callback (one call per
 * MoE layer per token with the selected experts and their weights), over
 * independent windows of the calibration tokens exactly as `moekit eval`
 * runs them, without logits (the lm_head product is skipped). Per layer and
 * expert we keep the selection count and the sums of w and w^2; frequency
 * = count / tokens, mean weight = sum w / count.
 *
 * Usage weights (why: see profile.h): routed expert e of layer l gets
 * s_e / sum_e' s_e' with s_e = freq_e * mean_w_e (its expected routing
 * weight per token); every other chosen module gets 1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "core/alloc.h"
#include "model/model_impl.h"
#include "moekit/engine.h"
#include "moekit/expert_store.h"
#include "moekit/quant.h"
#include "profile/profile_impl.h"

/* ---- routing -------------------------------------------------------------- */

typedef struct route_acc {
    int E;
    uint64_t *count; /* [L, E] selections */
    double *sw, *sw2; /* [L, E] sums of w and w^2 */
    int64_t *tokens; /* [L] tokens through the layer */
} route_acc;

static void on_route(void *user, int layer, int64_t pos, int k, const int32_t *experts,
                     const float *weights) {
    (void)pos;
    route_acc *a = user;
    a->tokens[layer]++;
    for (int j = 0; j < k; j++) {
        size_t i = (size_t)layer * (size_t)a->E + (size_t)experts[j];
        a->count[i]++;
        a->sw[i] += weights[j];
        a->sw2[i] += (double)weights[j] * weights[j];
    }
}

static void route_acc_free(route_acc *a) {
    free(a->count);
    free(a->sw);
    free(a->sw2);
    free(a->tokens);
}

static mk_status run_windows(const mk_model *m, const int32_t *ids, int64_t nw,
                             const mk_prof_opts *o, route_acc *a) {
    mk_engine_opts eo = {.threads = o->threads, .max_ctx = o->window, .on_route = on_route,
                         .on_route_user = a, .store = o->store};
    mk_engine *e = NULL;
    MK_TRY(mk_engine_create(m, &eo, &e));
    mk_status st = MK_OK;
    for (int64_t w = 0; st == MK_OK && w < nw; w++) {
        mk_engine_reset(e);
        st = mk_engine_forward(e, ids + w * o->window, o->window, MK_LOGITS_NONE, NULL, NULL);
        if (st == MK_OK && o->progress)
            o->progress(o->progress_user, "route", w + 1, nw);
    }
    mk_engine_free(e);
    return st;
}

/* Move the accumulated statistics of the MoE layers into p->route. */
static mk_status keep_routing(const mk_model *m, const route_acc *a, mk_prof *p) {
    const mk_config *c = &m->cfg;
    int nmoe = 0;
    for (int l = 0; l < c->num_layers; l++)
        nmoe += m->layers[l].is_moe;
    p->route = mk_calloc(nmoe ? (size_t)nmoe : 1, sizeof *p->route);
    if (!p->route)
        return mk_err(MK_E_NOMEM, "profile: no memory for routing statistics");
    for (int l = 0; l < c->num_layers; l++) {
        if (!m->layers[l].is_moe)
            continue;
        mk_prof_route_l *r = &p->route[p->n_route++];
        r->layer = l;
        r->n_experts = a->E;
        r->tokens = a->tokens[l];
        r->freq = mk_calloc((size_t)a->E, sizeof(double));
        r->mean_w = mk_calloc((size_t)a->E, sizeof(double));
        r->mean_w2 = mk_calloc((size_t)a->E, sizeof(double));
        if (!r->freq || !r->mean_w || !r->mean_w2)
            return mk_err(MK_E_NOMEM, "profile: no memory for routing statistics");
        for (int e = 0; e < a->E; e++) {
            size_t i = (size_t)l * (size_t)a->E + (size_t)e;
            uint64_t n = a->count[i];
            r->freq[e] = r->tokens ? (double)n / (double)r->tokens : 0.0;
            r->mean_w[e] = n ? a->sw[i] / (double)n : 0.0;
            r->mean_w2[e] = n ? a->sw2[i] / (double)n : 0.0;
        }
    }
    return MK_OK;
}

/* Usage weight of a routed expert: its share of the layer's expected
 * routing weight. */
static double expert_usage(const mk_prof *p, int layer, int e) {
    for (int i = 0; i < p->n_route; i++) {
        const mk_prof_route_l *r = &p->route[i];
        if (r->layer != layer)
            continue;
        double sum = 0;
        for (int x = 0; x < r->n_experts; x++)
            sum += r->freq[x] * r->mean_w[x];
        return sum > 0 && e < r->n_experts ? r->freq[e] * r->mean_w[e] / sum : 0.0;
    }
    return 0.0;
}

/* ---- the model description ----------------------------------------------- */

/* XXH3-64 of the model's config.json as 16 hex digits ("" if unreadable):
 * what ties a profile to the model it measured. */
static void config_hash(const mk_model *m, char hash[17]) {
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", mk_model_dir(m));
    FILE *f = fopen(path, "rb");
    hash[0] = 0;
    if (f) {
        XXH3_state_t *s = XXH3_createState();
        char buf[65536];
        size_t got;
        if (s && XXH3_64bits_reset(s) == XXH_OK) {
            while ((got = fread(buf, 1, sizeof buf, f)) > 0)
                XXH3_64bits_update(s, buf, got);
            if (!ferror(f))
                snprintf(hash, 17, "%016llx", (unsigned long long)XXH3_64bits_digest(s));
        }
        XXH3_freeState(s);
        fclose(f);
    }
}

static mk_status describe_model(const mk_model *m, const mk_prof_opts *o, int64_t nw, mk_prof *p) {
    const mk_config *c = &m->cfg;
    char hash[17];
    config_hash(m, hash);
    p->model_dir = mk_prof_strdup(mk_model_dir(m));
    p->model_type = mk_prof_strdup(c->text_model_type[0] ? c->text_model_type : c->model_type);
    p->arch = mk_prof_strdup(mk_arch_name(c->arch));
    p->layout = mk_prof_strdup(mk_model_layout(m));
    p->config_hash = mk_prof_strdup(hash);
    p->text = mk_prof_strdup(o->text_name ? o->text_name : "");
    if (!p->model_dir || !p->model_type || !p->arch || !p->layout || !p->config_hash || !p->text)
        return mk_err(MK_E_NOMEM, "profile of %s: no memory for its description", mk_model_dir(m));
    p->num_layers = c->num_layers;
    p->num_experts = c->num_experts;
    p->top_k = c->num_experts_per_tok;
    p->window = o->window;
    p->windows = nw;
    p->tokens = nw * o->window;
    return MK_OK;
}

/* ---- mk_prof_run ------------------------------------------------------------ */

static mk_status check_opts(const mk_prof_opts *o, int *bits) {
    memcpy(bits, o->bits, sizeof o->bits);
    MK_TRY(mk_prof_check_bits(bits, o->n_bits));
    MK_TRY(mk_quant_check(MK_QMODE_AFFINE, bits[0], o->group, o->group, "--group-size"));
    MK_TRY(mk_quant_check(MK_QMODE_AFFINE, o->router_bits, o->group, o->group, "router bits"));
    if (o->window < 2)
        return mk_err(MK_E_ARG, "profile: window %lld, expected >= 2 tokens", (long long)o->window);
    return MK_OK;
}

/* Errors of a model whose experts stream: first every module the model
 * holds, then each MoE layer's experts in groups of as many as the store's
 * cache can hold at once (each group acquired, measured from the store's
 * views, released), so memory stays the store's bound whatever the model. */
static mk_status streamed_errors(mk_prof_mod *mods, size_t n, const mk_prof_opts *o, mk_prof_tensor *t) {
    mk_expert_stats es;
    mk_expert_store_stats(o->store, &es);
    size_t *idx = mk_malloc((n ? n : 1) * sizeof *idx);
    int *ex = mk_malloc((size_t)(n / 3 + 1) * sizeof *ex);
    if (!idx || !ex) {
        free(idx);
        free(ex);
        return mk_err(MK_E_NOMEM, "profile: no memory for the order of %zu modules", n);
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!mods[i].streamed)
            idx[k++] = i;
    mk_status st = mk_prof_errors(mods, n, &(mk_prof_subset){idx, k, 0, n}, o, t);
    size_t done = k;
    int room = es.slots - es.pinned;
    for (size_t i = 0; st == MK_OK && i < n;) {
        if (!mods[i].streamed) {
            i++;
            continue;
        }
        /* a run of one layer's experts, 3 modules (gate, up, down) each, in expert order */
        int layer = mods[i].layer, ne = 0;
        size_t base = i;
        while (i < n && mods[i].streamed && mods[i].layer == layer) {
            if (mods[i].expert != mods[base].expert + (int)((i - base) / 3))
                break;
            i++;
        }
        size_t run = i - base;
        if (run % 3 || room < 1) {
            st = mk_err(MK_E_INTERNAL, "profile: layer %d: %zu expert modules, or a cache of %d slots", layer,
                        run, room);
            break;
        }
        for (size_t g0 = 0; st == MK_OK && g0 < run / 3; g0 += (size_t)room) {
            size_t g1 = g0 + (size_t)room < run / 3 ? g0 + (size_t)room : run / 3;
            ne = 0;
            for (size_t g = g0; g < g1; g++)
                ex[ne++] = mods[base + 3 * g].expert;
            st = mk_expert_store_acquire(o->store, layer, ex, ne);
            int taken = 0;
            for (; st == MK_OK && taken < ne; taken++) {
                int x;
                const mk_expert *v;
                st = mk_expert_store_next(o->store, layer, &x, &v);
                if (st != MK_OK)
                    break;
                size_t at = base + 3 * (size_t)(x - mods[base].expert);
                mods[at].w = &v->gate;
                mods[at + 1].w = &v->up;
                mods[at + 2].w = &v->down;
            }
            if (st == MK_OK) {
                k = 0;
                for (size_t g = 3 * g0; g < 3 * g1; g++)
                    idx[k++] = base + g;
                st = mk_prof_errors(mods, n, &(mk_prof_subset){idx, k, done, n}, o, t);
                done += k;
            }
            for (int j = 0; j < taken; j++) /* taken ones, whatever happened after */
                mk_expert_store_release(o->store, layer, ex[j]);
            for (size_t g = 3 * g0; g < 3 * g1; g++) /* the views die with the release */
                mods[base + g].w = NULL;
            if (st != MK_OK)
                st = mk_err_wrap(st, "profile: experts of layer %d", layer);
        }
    }
    free(idx);
    free(ex);
    return st;
}

/* Errors of every module, then the tensors (names moved out of mods). */
static mk_status measure_tensors(const mk_model *m, const mk_prof_opts *o, mk_prof *p) {
    mk_prof_mod *mods = NULL;
    size_t n = 0;
    MK_TRY(mk_prof_walk(m, &mods, &n));
    mk_prof_tensor *t = mk_calloc(n ? n : 1, sizeof *t);
    bool streamed = false;
    for (size_t i = 0; i < n; i++)
        streamed |= mods[i].streamed;
    mk_status st = !t ? mk_err(MK_E_NOMEM, "profile: no memory for %zu tensors", n)
                   : !streamed ? mk_prof_errors(mods, n, NULL, o, t)
                   : o->store ? streamed_errors(mods, n, o, t)
                              : mk_err(MK_E_ARG, "profile: %s was opened for streaming experts but no "
                                       "expert store was given (mk_prof_opts.store)", mk_model_dir(m));
    for (size_t i = 0; st == MK_OK && i < n; i++) {
        t[i].name = mods[i].name;
        t[i].source = mods[i].source;
        t[i].stack = mods[i].stack;
        mods[i].name = mods[i].source = mods[i].stack = NULL;
        bool chosen = t[i].kind == MK_PROF_EXPERT || t[i].kind == MK_PROF_LINEAR;
        t[i].usage = !chosen ? 0.0
                     : t[i].kind == MK_PROF_EXPERT ? expert_usage(p, t[i].layer, t[i].expert)
                                                   : 1.0;
        st = mk_prof_push(p, &t[i]);
    }
    free(t);
    mk_prof_walk_free(mods, n);
    return st;
}

mk_status mk_prof_run(const mk_model *m, const int32_t *ids, int64_t n, const mk_prof_opts *opts,
                      mk_prof **out) {
    *out = NULL;
    mk_prof_opts o;
    if (opts)
        o = *opts;
    else
        mk_prof_opts_init(&o);
    int bits[MK_PROF_MAX_BITS];
    MK_TRY(check_opts(&o, bits));
    memcpy(o.bits, bits, sizeof bits);
    int64_t nw = n > 0 ? n / o.window : 0;
    if (nw < 1)
        return mk_err(MK_E_ARG, "profile: %lld calibration tokens, fewer than one window of %lld",
                      (long long)(n > 0 ? n : 0), (long long)o.window);
    const mk_config *c = mk_model_config(m);
    size_t L = (size_t)c->num_layers, E = (size_t)(c->num_experts > 0 ? c->num_experts : 1);
    route_acc a = {.E = (int)E};
    a.count = mk_calloc(L * E, sizeof *a.count);
    a.sw = mk_calloc(L * E, sizeof *a.sw);
    a.sw2 = mk_calloc(L * E, sizeof *a.sw2);
    a.tokens = mk_calloc(L, sizeof *a.tokens);
    mk_prof *p = mk_prof_alloc();
    mk_status st = a.count && a.sw && a.sw2 && a.tokens && p
                       ? MK_OK
                       : mk_err(MK_E_NOMEM, "profile: no memory for routing statistics");
    if (st == MK_OK) {
        memcpy(p->bits, o.bits, sizeof o.bits);
        p->n_bits = o.n_bits;
        p->group = o.group;
        p->router_bits = o.router_bits;
        st = run_windows(m, ids, nw, &o, &a);
    }
    if (st == MK_OK)
        st = keep_routing(m, &a, p);
    if (st == MK_OK)
        st = describe_model(m, &o, nw, p);
    if (st == MK_OK)
        st = measure_tensors(m, &o, p);
    route_acc_free(&a);
    if (st != MK_OK) {
        mk_prof_free(p);
        return st;
    }
    *out = p;
    return MK_OK;
}

/* ---- profile vs model ------------------------------------------------------ */

mk_status mk_prof_check_model(const mk_prof *p, const mk_model *m) {
    /* the config first: a profile of another model can share every module
     * name and shape (a fine-tune aside, which has the same config). Every
     * profile moekit writes records the hash; one built through the API
     * (mk_prof_new) or written by hand without its model block has no
     * identity to compare and is checked by module names and shapes only. */
    char hash[17];
    config_hash(m, hash);
    if (p->config_hash && *p->config_hash && strcmp(hash, p->config_hash))
        return mk_err(MK_E_MISMATCH, "the profile was measured on %s (%s), whose config.json "
                      "hashes to %s, but %s/config.json hashes to %s: a profile of another model "
                      "(rerun moekit profile on this one)", p->model_dir ? p->model_dir : "?",
                      p->model_type ? p->model_type : "?", p->config_hash, mk_model_dir(m),
                      *hash ? hash : "(unreadable)");
    mk_prof_mod *mods = NULL;
    size_t n = 0;
    MK_TRY(mk_prof_walk(m, &mods, &n));
    mk_prof *seen = mk_prof_alloc(); /* the model's module names, for lookups */
    mk_status st =
        seen ? MK_OK : mk_err(MK_E_NOMEM, "profile: no memory for the module names of %s", mk_model_dir(m));
    for (size_t i = 0; st == MK_OK && i < n; i++) {
        mk_prof_tensor t = {.name = mods[i].name, .source = NULL, .stack = NULL,
                            .rows = mods[i].w->rows, .cols = mods[i].w->cols};
        mods[i].name = NULL; /* moved */
        st = mk_prof_push(seen, &t);
    }
    for (size_t i = 0; st == MK_OK && i < p->n; i++) {
        const mk_prof_tensor *t = &p->t[i], *s = mk_prof_find(seen, t->name);
        if (!s)
            st = mk_err(MK_E_MISMATCH, "profile tensor '%s' (source '%s') is not a module of "
                        "model %s", t->name, t->source, mk_model_dir(m));
        else if (s->rows != t->rows || s->cols != t->cols)
            st = mk_err(MK_E_MISMATCH, "profile tensor '%s' is [%lld, %lld] but the model's "
                        "module is [%lld, %lld]", t->name, (long long)t->rows, (long long)t->cols,
                        (long long)s->rows, (long long)s->cols);
    }
    for (size_t i = 0; st == MK_OK && i < seen->n; i++)
        if (!mk_prof_find(p, seen->t[i].name))
            st = mk_err(MK_E_MISMATCH, "module '%s' (source '%s') of model %s is not in the "
                        "profile", seen->t[i].name, mods[i].source, mk_model_dir(m));
    mk_prof_free(seen);
    mk_prof_walk_free(mods, n);
    return st;
}
