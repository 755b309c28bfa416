/* The expert store wrapper and today's implementation: all experts resident.
 *
 * mk_expert_store is a table + context pair (expert_store.h). The resident
 * store remembers the announced set and hands the model's own views into the
 * mmapped checkpoint back in announced order; release is a no-op. It still
 * counts outstanding experts so that a forward pass that forgets a release
 * is caught in debug builds, the same discipline a streaming store with a
 * bounded cache will rely on. */
#include <assert.h>
#include <stdlib.h>

#include "core/alloc.h"
#include "model/model_impl.h"
#include "moekit/expert_store.h"

struct mk_expert_store {
    const mk_expert_store_i *i;
    void *ctx;
};

mk_status mk_expert_store_create(const mk_expert_store_i *iface, void *ctx,
                                 mk_expert_store **out) {
    *out = NULL;
    mk_expert_store *s = mk_calloc(1, sizeof *s);
    if (!s) {
        if (iface && iface->free)
            iface->free(ctx);
        return mk_err(MK_E_NOMEM, "no memory for an expert store");
    }
    s->i = iface;
    s->ctx = ctx;
    *out = s;
    return MK_OK;
}

void mk_expert_store_free(mk_expert_store *s) {
    if (!s)
        return;
    if (s->i->free)
        s->i->free(s->ctx);
    free(s);
}

mk_status mk_expert_store_acquire(mk_expert_store *s, int layer, const int *experts, int n) {
    return s->i->acquire(s->ctx, layer, experts, n);
}

mk_status mk_expert_store_next(mk_expert_store *s, int layer, int *e, const mk_expert **out) {
    return s->i->next(s->ctx, layer, e, out);
}

void mk_expert_store_release(mk_expert_store *s, int layer, int e) {
    s->i->release(s->ctx, layer, e);
}

mk_status mk_expert_store_prefetch(mk_expert_store *s, int layer, const int *experts, int n) {
    return s->i->prefetch ? s->i->prefetch(s->ctx, layer, experts, n) : MK_OK;
}

mk_status mk_expert_store_fill(mk_expert_store *s, const mk_fill_opts *o) {
    static const mk_fill_opts none = {0};
    return s->i->fill ? s->i->fill(s->ctx, o ? o : &none) : MK_OK;
}

bool mk_expert_store_can_prefetch(const mk_expert_store *s) { return s->i->prefetch != NULL; }

mk_status mk_expert_store_settle(mk_expert_store *s) { return s->i->settle ? s->i->settle(s->ctx) : MK_OK; }

const char *mk_expert_store_name(const mk_expert_store *s) { return s->i->name; }

bool mk_expert_store_all_ready(const mk_expert_store *s) {
    return s->i->all_ready;
}

bool mk_expert_store_changed(mk_expert_store *s, int layer, int e, const void **base, size_t *len) {
    *base = NULL;
    *len = 0;
    return s->i->changed ? s->i->changed(s->ctx, layer, e, base, len) : false;
}

bool mk_expert_store_reuses(const mk_expert_store *s) { return s->i->changed != NULL; }

void mk_expert_store_stats(const mk_expert_store *s, mk_expert_stats *out) {
    *out = (mk_expert_stats){.oracle_hit = -1.0};
    if (s->i->stats)
        s->i->stats(s->ctx, out);
}

/* ---- resident ------------------------------------------------------------ */

typedef struct resident {
    const mk_model *m;
    const int *set;   /* the announced experts (the caller's array, valid until all are taken) */
    int n, taken, layer;
    long outstanding; /* taken, not yet released */
} resident;

static mk_status res_acquire(void *ctx, int layer, const int *experts, int n) {
    resident *r = ctx;
    const mk_config *c = &r->m->cfg;
    if (layer < 0 || layer >= c->num_layers || !r->m->layers[layer].is_moe)
        return mk_err(MK_E_ARG, "expert store: layer %d has no experts", layer);
    for (int i = 0; i < n; i++)
        if (experts[i] < 0 || experts[i] >= c->num_experts)
            return mk_err(MK_E_ARG, "expert store: no expert %d in layer %d (%d experts)",
                          experts[i], layer, c->num_experts);
    r->set = experts;
    r->n = n;
    r->taken = 0;
    r->layer = layer;
    return MK_OK;
}

static mk_status res_next(void *ctx, int layer, int *e, const mk_expert **out) {
    resident *r = ctx;
    if (layer != r->layer || r->taken >= r->n)
        return mk_err(MK_E_ARG, "expert store: no announced expert left in layer %d", layer);
    *e = r->set[r->taken++];
    r->outstanding++;
    *out = &r->m->layers[layer].moe.experts[*e];
    return MK_OK;
}

static void res_release(void *ctx, int layer, int e) {
    resident *r = ctx;
    (void)layer;
    (void)e;
    assert(r->outstanding > 0);
    r->outstanding--;
}

static void res_free(void *ctx) { free(ctx); }

static const mk_expert_store_i g_resident = {
    .name = "resident",
    .acquire = res_acquire,
    .next = res_next,
    .release = res_release,
    .free = res_free,
    .all_ready = true,
};

mk_status mk_expert_store_resident(const mk_model *m, mk_expert_store **out) {
    *out = NULL;
    resident *r = mk_calloc(1, sizeof *r);
    if (!r)
        return mk_err(MK_E_NOMEM, "no memory for an expert store");
    r->m = m;
    return mk_expert_store_create(&g_resident, r, out);
}
