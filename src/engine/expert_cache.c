/* Slot bookkeeping and eviction policies of the expert cache, and the
 * Belady oracle (expert_cache.h).
 *
 * Keys are layer * n_experts + e. A table of n_layers * n_experts ints maps
 * a key to its slot (-1: not cached) and holds the FREQ policy's log-domain
 * key; slots hold their key, pin count and last use. A victim is found by a
 * scan of the slots: O(slots) per miss, which is nothing next to the read
 * the miss costs (a slot is megabytes). */
#include "engine/expert_cache.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

typedef struct cslot {
    int32_t key;      /* -1: free */
    int32_t pins;     /* > 0: in use, never a victim; INT32_MAX: pinned for good */
    uint64_t last;    /* clock of the last use */
} cslot;

struct mk_ecache {
    int nslots, n_layers, n_experts;
    mk_ecache_policy policy;
    double inv_h;     /* 1 / half_life */
    uint64_t clock;   /* uses so far */
    cslot *s;
    int32_t *where;   /* key -> slot or -1 */
    uint64_t *kuse;   /* key -> clock of its last use (0: never used) */
    double *fkey;     /* key -> log2(score) + t/h (FREQ); -inf: never used */
};

mk_status mk_ecache_create(int nslots, int n_layers, int n_experts, mk_ecache_policy policy,
                           double half_life, mk_ecache **out) {
    *out = NULL;
    if (nslots <= 0 || n_layers <= 0 || n_experts <= 0 || (int64_t)n_layers * n_experts > INT32_MAX)
        return mk_err(MK_E_ARG, "expert cache: %d slots over %d layers x %d experts", nslots, n_layers,
                      n_experts);
    mk_ecache *c = mk_calloc(1, sizeof *c);
    size_t nk = (size_t)n_layers * (size_t)n_experts;
    if (c) {
        c->s = mk_malloc((size_t)nslots * sizeof *c->s);
        c->where = mk_malloc(nk * sizeof *c->where);
        c->fkey = mk_malloc(nk * sizeof *c->fkey);
        c->kuse = mk_calloc(nk, sizeof *c->kuse);
    }
    if (!c || !c->s || !c->where || !c->fkey || !c->kuse) {
        mk_ecache_free(c);
        return mk_err(MK_E_NOMEM, "expert cache: no memory for %d slots over %zu experts", nslots, nk);
    }
    c->nslots = nslots;
    c->n_layers = n_layers;
    c->n_experts = n_experts;
    c->policy = policy;
    c->inv_h = 1.0 / (half_life > 0 ? half_life : 4096.0);
    for (int i = 0; i < nslots; i++)
        c->s[i] = (cslot){.key = -1};
    for (size_t k = 0; k < nk; k++) {
        c->where[k] = -1;
        c->fkey[k] = -INFINITY;
    }
    *out = c;
    return MK_OK;
}

void mk_ecache_free(mk_ecache *c) {
    if (!c)
        return;
    free(c->s);
    free(c->where);
    free(c->fkey);
    free(c->kuse);
    free(c);
}

int mk_ecache_slots(const mk_ecache *c) { return c->nslots; }

int mk_ecache_free_slots(const mk_ecache *c) {
    int n = 0;
    for (int i = 0; i < c->nslots; i++)
        n += c->s[i].key < 0;
    return n;
}

int mk_ecache_use(mk_ecache *c, int layer, int e) {
    int32_t k = layer * c->n_experts + e;
    double now = (double)c->clock * c->inv_h;
    /* score' = score * 2^-(dt/h) + 1, kept as key = log2(score) + t/h */
    double f = c->fkey[k];
    c->fkey[k] = (f == -INFINITY ? 0.0 : log2(exp2(f - now) + 1.0)) + now;
    c->clock++;
    c->kuse[k] = c->clock;
    int s = c->where[k];
    if (s >= 0)
        c->s[s].last = c->clock;
    return s;
}

int mk_ecache_find(const mk_ecache *c, int layer, int e) { return c->where[layer * c->n_experts + e]; }

/* Lower is a better victim. */
static bool worse(const mk_ecache *c, const cslot *a, const cslot *b) {
    if (c->policy == MK_ECACHE_FREQ) {
        double fa = c->fkey[a->key], fb = c->fkey[b->key];
        if (fa != fb)
            return fa < fb;
    }
    return a->last < b->last;
}

int mk_ecache_claim(mk_ecache *c, int layer, int e, int *old_layer, int *old_e) {
    int32_t k = layer * c->n_experts + e;
    *old_layer = *old_e = -1;
    int v = -1;
    for (int i = 0; i < c->nslots; i++) {
        cslot *s = &c->s[i];
        if (s->key < 0) {
            v = i;
            break;
        }
        if (s->pins == 0 && (v < 0 || worse(c, s, &c->s[v])))
            v = i;
    }
    if (v < 0)
        return -1;
    cslot *s = &c->s[v];
    if (s->key >= 0) {
        *old_layer = s->key / c->n_experts;
        *old_e = s->key % c->n_experts;
        c->where[s->key] = -1;
    }
    s->key = k;
    s->pins = 1;
    /* the key's own last use, not the claim's time: the misses of one step
     * are claimed together, after all its uses, and would otherwise tie,
     * leaving LRU's choice among them to slot numbers. A key never used
     * (a guess, the warm fill) is as old as anything used before now and
     * older than any later use */
    s->last = c->kuse[k] ? c->kuse[k] : c->clock;
    c->where[k] = v;
    return v;
}

void mk_ecache_pin(mk_ecache *c, int slot) {
    if (c->s[slot].pins != INT32_MAX)
        c->s[slot].pins++;
}

void mk_ecache_unpin(mk_ecache *c, int slot) {
    if (c->s[slot].pins != INT32_MAX && c->s[slot].pins > 0)
        c->s[slot].pins--;
}

void mk_ecache_pin_forever(mk_ecache *c, int slot) { c->s[slot].pins = INT32_MAX; }

void mk_ecache_drop(mk_ecache *c, int slot) {
    cslot *s = &c->s[slot];
    if (s->key >= 0)
        c->where[s->key] = -1;
    *s = (cslot){.key = -1};
}

/* ---- Belady ------------------------------------------------------------ */

/* Open-addressing map uint32 key -> size_t value (the oracle's "next use"
 * and "resident" tables), sized to twice the distinct keys. */
typedef struct omap {
    uint32_t *k;
    size_t *v;
    size_t cap;
} omap;

static bool omap_init(omap *m, size_t n) {
    m->cap = 16;
    while (m->cap < 2 * n + 16)
        m->cap *= 2;
    m->k = mk_malloc(m->cap * sizeof *m->k);
    m->v = mk_malloc(m->cap * sizeof *m->v);
    if (!m->k || !m->v)
        return false;
    memset(m->k, 0xff, m->cap * sizeof *m->k); /* UINT32_MAX: empty */
    return true;
}

static size_t *omap_at(omap *m, uint32_t key, bool insert) {
    size_t i = (key * 2654435761u) & (m->cap - 1);
    while (m->k[i] != UINT32_MAX && m->k[i] != key)
        i = (i + 1) & (m->cap - 1);
    if (m->k[i] == UINT32_MAX) {
        if (!insert)
            return NULL;
        m->k[i] = key;
        m->v[i] = 0;
    }
    return &m->v[i];
}

double mk_ecache_belady(const uint32_t *keys, const uint32_t *steps, size_t n, int nslots, size_t n_warm) {
    if (n <= n_warm)
        return 1.0;
    if (!keys || !steps || nslots <= 0)
        return -1.0;
    for (size_t i = 0; i < n; i++)
        if (keys[i] == UINT32_MAX)
            return -1.0;
    size_t *next = mk_malloc(n * sizeof *next);
    uint32_t *res = mk_malloc((size_t)nslots * sizeof *res);  /* resident keys */
    size_t *rnext = mk_malloc((size_t)nslots * sizeof *rnext); /* their next use */
    uint32_t *rstep = mk_malloc((size_t)nslots * sizeof *rstep); /* step of their last use */
    omap last = {0};
    double rate = -1.0;
    if (!next || !res || !rnext || !rstep || !omap_init(&last, n))
        goto out;
    /* next[i]: index of the next access of keys[i], n if none */
    for (size_t i = n; i-- > 0;) {
        size_t *p = omap_at(&last, keys[i], true);
        size_t was = p && *p != 0 ? *p - 1 : n; /* stored +1: 0 means unseen */
        next[i] = was;
        *p = i + 1;
    }
    int nres = 0;
    size_t hits = 0;
    for (size_t i = 0; i < n; i++) {
        int at = -1;
        for (int j = 0; j < nres; j++)
            if (res[j] == keys[i]) {
                at = j;
                break;
            }
        if (at >= 0) {
            hits += i >= n_warm;
        } else if (nres < nslots) {
            at = nres++;
            res[at] = keys[i];
        } else { /* evict the farthest next use outside this step */
            for (int j = 0; j < nres; j++)
                if (rstep[j] != steps[i] && (at < 0 || rnext[j] > rnext[at]))
                    at = j;
            /* a step larger than the cache: its earlier keys go too (the
             * store reads such a step's experts as slots are released) */
            for (int j = 0; at < 0 && j < nres; j++)
                if (at < 0 || rnext[j] > rnext[at])
                    at = j;
            res[at] = keys[i];
        }
        rnext[at] = next[i];
        rstep[at] = steps[i];
    }
    rate = (double)hits / (double)(n - n_warm);
out:
    free(next);
    free(res);
    free(rnext);
    free(rstep);
    free(last.k);
    free(last.v);
    return rate;
}
