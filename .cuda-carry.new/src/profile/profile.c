/* The profile container: creation, tensors with a name index, accessors,
 * candidate-width checks and option defaults.
 *
 * Tensors live in one growing array; mk_prof_find goes through an
 * open-addressing index (FNV-1a over the name, linear probing) kept at
 * most half full, so profiles of real models (~100k expert tensors) are
 * looked up in O(1) by the allocator and the quantize command. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "moekit/quant.h"
#include "profile/profile_impl.h"

const char *mk_prof_kind_name(mk_prof_kind k) {
    static const char *const names[] = {[MK_PROF_EXPERT] = "expert", [MK_PROF_LINEAR] = "linear",
                                        [MK_PROF_ROUTER] = "router", [MK_PROF_FLOAT] = "float"};
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : NULL;
}

void mk_prof_opts_init(mk_prof_opts *o) {
    static const int dflt[] = {2, 3, 4, 5, 6, 8};
    memset(o, 0, sizeof *o);
    memcpy(o->bits, dflt, sizeof dflt);
    o->n_bits = 6;
    o->group = 64;
    o->router_bits = 8;
    o->window = 256;
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

mk_status mk_prof_check_bits(int *bits, int n) {
    const mk_quant_traits *tr = mk_quant_info(MK_QMODE_AFFINE);
    if (n < 1 || n > MK_PROF_MAX_BITS)
        return mk_err(MK_E_ARG, "candidate bits: %d widths given, expected 1..%d of %s", n,
                      MK_PROF_MAX_BITS, tr->bits_list);
    for (int i = 0; i < n; i++)
        if (bits[i] < 1 || bits[i] > 31 || !(tr->bits_mask & (1u << bits[i])))
            return mk_err(MK_E_ARG, "candidate bits: %d is not an affine width (allowed: %s)",
                          bits[i], tr->bits_list);
    qsort(bits, (size_t)n, sizeof *bits, cmp_int);
    for (int i = 1; i < n; i++)
        if (bits[i] == bits[i - 1])
            return mk_err(MK_E_ARG, "candidate bits: %d given twice", bits[i]);
    return MK_OK;
}

char *mk_prof_strdup(const char *s) {
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = mk_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

mk_prof *mk_prof_alloc(void) {
    mk_prof *p = mk_calloc(1, sizeof *p);
    if (p)
        p->router_bits = 8;
    return p;
}

mk_status mk_prof_new(const int *bits, int n_bits, int group, mk_prof **out) {
    *out = NULL;
    int b[MK_PROF_MAX_BITS];
    if (!bits || n_bits < 1 || n_bits > MK_PROF_MAX_BITS)
        return mk_err(MK_E_ARG, "candidate bits: %d widths given, expected 1..%d", n_bits,
                      MK_PROF_MAX_BITS);
    memcpy(b, bits, (size_t)n_bits * sizeof *b);
    MK_TRY(mk_prof_check_bits(b, n_bits));
    MK_TRY(mk_quant_check(MK_QMODE_AFFINE, b[0], group, group, "profile group size"));
    mk_prof *p = mk_prof_alloc();
    if (!p)
        return mk_err(MK_E_NOMEM, "no memory for a profile");
    memcpy(p->bits, b, sizeof b);
    p->n_bits = n_bits;
    p->group = group;
    *out = p;
    return MK_OK;
}

/* ---- name index --------------------------------------------------------- */

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void index_put(mk_prof *p, size_t i) {
    size_t mask = p->index_cap - 1, k = (size_t)hash_name(p->t[i].name) & mask;
    while (p->index[k])
        k = (k + 1) & mask;
    p->index[k] = i + 1;
}

static bool index_grow(mk_prof *p, size_t want) {
    if (2 * want <= p->index_cap)
        return true;
    size_t cap = 64;
    while (cap < 2 * want)
        cap *= 2;
    size_t *ix = mk_calloc(cap, sizeof *ix);
    if (!ix)
        return false;
    free(p->index);
    p->index = ix;
    p->index_cap = cap;
    for (size_t i = 0; i < p->n; i++)
        index_put(p, i);
    return true;
}

const mk_prof_tensor *mk_prof_find(const mk_prof *p, const char *name) {
    if (!p->index_cap || !name)
        return NULL;
    size_t mask = p->index_cap - 1, k = (size_t)hash_name(name) & mask;
    for (; p->index[k]; k = (k + 1) & mask)
        if (!strcmp(p->t[p->index[k] - 1].name, name))
            return &p->t[p->index[k] - 1];
    return NULL;
}

/* ---- tensors -------------------------------------------------------------- */

static void tensor_free(mk_prof_tensor *t) {
    free((void *)t->name);
    free((void *)t->source);
    free((void *)t->stack);
}

mk_status mk_prof_push(mk_prof *p, const mk_prof_tensor *t) {
    mk_prof_tensor c = *t;
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 256;
        mk_prof_tensor *v = mk_realloc(p->t, cap * sizeof *v);
        if (!v) {
            tensor_free(&c);
            return mk_err(MK_E_NOMEM, "no memory for %zu profile tensors", cap);
        }
        p->t = v;
        p->cap = cap;
    }
    if (!index_grow(p, p->n + 1)) {
        tensor_free(&c);
        return mk_err(MK_E_NOMEM, "no memory for the profile's name index");
    }
    p->t[p->n] = c;
    index_put(p, p->n);
    p->n++;
    return MK_OK;
}

mk_status mk_prof_add(mk_prof *p, const mk_prof_tensor *t) {
    if (!t->name || !*t->name)
        return mk_err(MK_E_ARG, "profile tensor %zu: empty name", p->n);
    if (mk_prof_find(p, t->name))
        return mk_err(MK_E_ARG, "profile tensor '%s' added twice", t->name);
    if (!mk_prof_kind_name(t->kind) || t->rows <= 0 || t->cols <= 0)
        return mk_err(MK_E_ARG, "profile tensor '%s': bad kind or shape [%lld, %lld]", t->name,
                      (long long)t->rows, (long long)t->cols);
    if (!isfinite(t->usage) || t->usage < 0)
        return mk_err(MK_E_ARG, "profile tensor '%s': usage %g is not a finite value >= 0",
                      t->name, t->usage);
    bool chosen = t->kind == MK_PROF_EXPERT || t->kind == MK_PROF_LINEAR;
    for (int k = 0; chosen && k < p->n_bits; k++)
        if (!isfinite(t->err[k]) || t->err[k] < 0 || t->bytes[k] == 0)
            return mk_err(MK_E_ARG, "profile tensor '%s': err %g / bytes %llu at %d bits",
                          t->name, t->err[k], (unsigned long long)t->bytes[k], p->bits[k]);
    if (!chosen && (t->fixed_bits <= 0 || t->fixed_bytes == 0))
        return mk_err(MK_E_ARG, "profile tensor '%s': a %s tensor needs fixed_bits and "
                      "fixed_bytes", t->name, mk_prof_kind_name(t->kind));
    mk_prof_tensor c = *t;
    c.params = (uint64_t)t->rows * (uint64_t)t->cols;
    c.name = mk_prof_strdup(t->name);
    c.source = mk_prof_strdup(t->source ? t->source : t->name);
    c.stack = mk_prof_strdup(t->stack);
    if (!c.name || !c.source || (t->stack && !c.stack)) {
        tensor_free(&c);
        return mk_err(MK_E_NOMEM, "no memory for profile tensor '%s'", t->name);
    }
    return mk_prof_push(p, &c);
}

void mk_prof_free(mk_prof *p) {
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++)
        tensor_free(&p->t[i]);
    free(p->t);
    free(p->index);
    for (int i = 0; i < p->n_route; i++) {
        free(p->route[i].freq);
        free(p->route[i].mean_w);
        free(p->route[i].mean_w2);
    }
    free(p->route);
    free(p->model_dir);
    free(p->model_type);
    free(p->arch);
    free(p->layout);
    free(p->config_hash);
    free(p->text);
    free(p);
}

/* ---- accessors -------------------------------------------------------------- */

size_t mk_prof_count(const mk_prof *p) { return p->n; }

const mk_prof_tensor *mk_prof_tensor_at(const mk_prof *p, size_t i) {
    return i < p->n ? &p->t[i] : NULL;
}

int mk_prof_bits(const mk_prof *p, const int **bits) {
    if (bits)
        *bits = p->bits;
    return p->n_bits;
}

int mk_prof_group(const mk_prof *p) { return p->group; }
int64_t mk_prof_tokens(const mk_prof *p) { return p->tokens; }
int mk_prof_route_layers(const mk_prof *p) { return p->n_route; }

bool mk_prof_route(const mk_prof *p, int i, int *layer, int *n_experts, const double **freq,
                   const double **mean_weight) {
    if (i < 0 || i >= p->n_route)
        return false;
    const mk_prof_route_l *r = &p->route[i];
    if (layer)
        *layer = r->layer;
    if (n_experts)
        *n_experts = r->n_experts;
    if (freq)
        *freq = r->freq;
    if (mean_weight)
        *mean_weight = r->mean_w;
    return true;
}
