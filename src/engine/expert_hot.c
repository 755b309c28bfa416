/* The hot-set plan of a small expert cache (expert_hot.h). A plan sorts the
 * keys it may move, O(nkeys log nkeys): a few thousand keys (host layers x
 * experts) once every few decode steps, nothing next to a step. */
#include "engine/expert_hot.h"

#include <stdlib.h>

#include "core/alloc.h"

/* a key and its score, sorted by value (no context for qsort) */
struct hk {
    double s;
    int32_t k;
};

struct mk_hotset {
    int nslots, nkeys;
    double decay, margin;
    double *score;   /* key -> decayed count */
    int32_t *where;  /* key -> slot or -1 */
    int32_t *key_of; /* slot -> key or -1 */
    struct hk *cand, *vict; /* plan scratch: nkeys and nslots entries */
};

mk_status mk_hotset_create(int nslots, int nkeys, double decay, double margin, mk_hotset **out) {
    *out = NULL;
    if (nslots <= 0 || nkeys <= 0 || !(decay > 0.0 && decay <= 1.0) || !(margin >= 1.0))
        return mk_err(MK_E_ARG, "expert hot set: %d slots over %d keys, decay %g (want (0, 1]), margin %g (want >= 1)",
                      nslots, nkeys, decay, margin);
    mk_hotset *h = mk_calloc(1, sizeof *h);
    if (h) {
        h->score = mk_calloc((size_t)nkeys, sizeof *h->score);
        h->where = mk_malloc((size_t)nkeys * sizeof *h->where);
        h->key_of = mk_malloc((size_t)nslots * sizeof *h->key_of);
        h->cand = mk_malloc((size_t)nkeys * sizeof *h->cand);
        h->vict = mk_malloc((size_t)nslots * sizeof *h->vict);
    }
    if (!h || !h->score || !h->where || !h->key_of || !h->cand || !h->vict) {
        mk_hotset_free(h);
        return mk_err(MK_E_NOMEM, "expert hot set: no memory for %d keys", nkeys);
    }
    h->nslots = nslots;
    h->nkeys = nkeys;
    h->decay = decay;
    h->margin = margin;
    for (int k = 0; k < nkeys; k++)
        h->where[k] = -1;
    for (int s = 0; s < nslots; s++)
        h->key_of[s] = -1;
    *out = h;
    return MK_OK;
}

void mk_hotset_free(mk_hotset *h) {
    if (!h)
        return;
    free(h->score);
    free(h->where);
    free(h->key_of);
    free(h->cand);
    free(h->vict);
    free(h);
}

void mk_hotset_add(mk_hotset *h, const int32_t *counts) {
    for (int k = 0; k < h->nkeys; k++)
        h->score[k] = h->score[k] * h->decay + (counts[k] > 0 ? counts[k] : 0);
}

/* best first: higher score, then lower key */
static int by_best(const void *a, const void *b) {
    const struct hk *x = a, *y = b;
    if (x->s != y->s)
        return x->s > y->s ? -1 : 1;
    return x->k < y->k ? -1 : x->k > y->k;
}

int mk_hotset_plan(mk_hotset *h, int max, mk_hot_move *out) {
    int nc = 0, nv = 0, nfree = 0;
    for (int k = 0; k < h->nkeys; k++)
        if (h->where[k] < 0 && h->score[k] > 0.0)
            h->cand[nc++] = (struct hk){h->score[k], k};
    /* victims: free slots first (lowest slot first; k holds the slot),
     * then the cached keys worst first (the reverse of best first) */
    for (int s = 0; s < h->nslots; s++)
        if (h->key_of[s] < 0)
            h->vict[nfree++] = (struct hk){0.0, s};
    nv = nfree;
    for (int s = 0; s < h->nslots; s++)
        if (h->key_of[s] >= 0)
            h->vict[nv++] = (struct hk){h->score[h->key_of[s]], h->key_of[s]};
    qsort(h->cand, (size_t)nc, sizeof *h->cand, by_best);
    qsort(h->vict + nfree, (size_t)(nv - nfree), sizeof *h->vict, by_best);
    for (int i = nfree, j = nv - 1; i < j; i++, j--) {
        struct hk t = h->vict[i];
        h->vict[i] = h->vict[j];
        h->vict[j] = t;
    }
    int n = 0;
    for (int i = 0; i < nc && i < nv && n < max; i++) {
        const int32_t key = h->cand[i].k;
        int slot;
        int32_t old = -1;
        if (i < nfree) {
            slot = h->vict[i].k;
        } else {
            old = h->vict[i].k;
            if (!(h->score[key] > h->margin * h->score[old]))
                break; /* the later pairs are closer still */
            slot = h->where[old];
            h->where[old] = -1;
        }
        h->key_of[slot] = key;
        h->where[key] = slot;
        out[n++] = (mk_hot_move){.slot = slot, .old_key = old, .new_key = key};
    }
    return n;
}

int mk_hotset_slot(const mk_hotset *h, int32_t key) {
    return key >= 0 && key < h->nkeys ? h->where[key] : -1;
}

int32_t mk_hotset_key(const mk_hotset *h, int slot) {
    return slot >= 0 && slot < h->nslots ? h->key_of[slot] : -1;
}

double mk_hotset_score(const mk_hotset *h, int32_t key) {
    return key >= 0 && key < h->nkeys ? h->score[key] : 0.0;
}
