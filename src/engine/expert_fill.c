/* The plan of a warm fill of the expert cache (expert_fill.h). */
#include "engine/expert_fill.h"

#include <stdint.h>
#include <stdlib.h>

#include "core/alloc.h"
#include "moekit/module.h"

/* Whether expert e of `layer` may be filled: a routed expert of m that this
 * process uses (o->range) and not cached yet. */
static bool wanted(const mk_model *m, const mk_ecache *c, const mk_fill_opts *o, int layer, int e) {
    if (o->range && (e < o->range[2 * layer] || e >= o->range[2 * layer + 1]))
        return false;
    return mk_ecache_find(c, layer, e) < 0;
}

mk_status mk_efill_plan(const mk_model *m, const mk_ecache *c, int room, const mk_fill_opts *o, int **layer,
                        int **expert, int *n) {
    *layer = *expert = NULL;
    *n = 0;
    const mk_config *cfg = mk_model_config(m);
    int L = cfg->num_layers, E = cfg->num_experts;
    if (room <= 0 || E <= 0)
        return MK_OK;
    int *pl = mk_malloc((size_t)room * sizeof *pl), *pe = mk_malloc((size_t)room * sizeof *pe);
    unsigned char *seen = mk_calloc((size_t)L * (size_t)E, 1);
    mk_status st = MK_OK;
    if (!pl || !pe || !seen)
        st = mk_err(MK_E_NOMEM, "expert cache fill: no memory to plan %d experts", room);
    int k = 0;
    if (st == MK_OK && o->n_pref > 0) {
        for (int i = 0; i < o->n_pref && k < room; i++) {
            int l = o->pref_layer[i], e = o->pref_expert[i];
            if (l < 0 || l >= L || e < 0 || e >= E || !mk_model_expert_loc(m, l, e)) {
                st = mk_err(MK_E_ARG, "expert cache fill: no routed expert %d in layer %d (the model has %d "
                            "layers of %d experts)", e, l, L, E);
                break;
            }
            if (seen[(size_t)l * (size_t)E + (size_t)e] || !wanted(m, c, o, l, e))
                continue;
            seen[(size_t)l * (size_t)E + (size_t)e] = 1;
            pl[k] = l;
            pe[k] = e;
            k++;
        }
    } else if (st == MK_OK) {
        /* the layers this process runs experts of share the room evenly */
        int nl = 0;
        for (int l = 0; l < L; l++)
            nl += mk_model_expert_loc(m, l, 0) && (!o->range || o->range[2 * l] < o->range[2 * l + 1]);
        int share = nl ? room / nl : 0;
        /* index by index over the layers: each layer's i-th candidate
         * (the lowest not cached) before any layer's (i+1)-th, so the plan's
         * order (hottest first) keeps low indices longest */
        int *next = mk_calloc((size_t)L, sizeof *next);
        if (!next)
            st = mk_err(MK_E_NOMEM, "expert cache fill: no memory to plan %d experts", room);
        for (int l = 0; st == MK_OK && l < L; l++)
            next[l] = o->range ? o->range[2 * l] : 0;
        for (int round = 0; st == MK_OK && round < share; round++)
            for (int l = 0; l < L; l++) {
                if (!mk_model_expert_loc(m, l, 0))
                    continue;
                int hi = o->range ? o->range[2 * l + 1] : E;
                while (next[l] < hi && !wanted(m, c, o, l, next[l]))
                    next[l]++;
                if (next[l] >= hi)
                    continue;
                pl[k] = l;
                pe[k] = next[l]++;
                k++;
            }
        free(next);
    }
    free(seen);
    if (st != MK_OK || k == 0) {
        free(pl);
        free(pe);
        return st;
    }
    *layer = pl;
    *expert = pe;
    *n = k;
    return MK_OK;
}

/* Where an expert starts: the shard and offset of its first byte there
 * (its parts' lowest offset in the shard of its first part). */
typedef struct fpos {
    int shard;
    uint64_t off;
    int i;
} fpos;

static fpos pos_of(const mk_expert_loc *x, int i) {
    const mk_wloc *w[3] = {&x->gate, &x->up, &x->down};
    fpos p = {.shard = -1, .off = UINT64_MAX, .i = i};
    for (int q = 0; q < 3; q++)
        for (int k = 0; k < MK_SP_N; k++) {
            const mk_wloc_part *pt = &w[q]->part[k];
            if (!pt->len)
                continue;
            if (p.shard < 0 || pt->shard < p.shard || (pt->shard == p.shard && pt->off < p.off)) {
                p.shard = pt->shard;
                p.off = pt->off;
            }
        }
    return p;
}

static int cmp_pos(const void *a, const void *b) {
    const fpos *x = a, *y = b;
    if (x->shard != y->shard)
        return x->shard < y->shard ? -1 : 1;
    if (x->off != y->off)
        return x->off < y->off ? -1 : 1;
    return x->i - y->i;
}

mk_status mk_efill_file_order(const mk_model *m, const int *layer, const int *expert, int n, int *ord) {
    if (n <= 0)
        return MK_OK;
    fpos *p = mk_malloc((size_t)n * sizeof *p);
    if (!p)
        return mk_err(MK_E_NOMEM, "expert cache fill: no memory to order %d experts", n);
    for (int i = 0; i < n; i++)
        p[i] = pos_of(mk_model_expert_loc(m, layer[i], expert[i]), i);
    qsort(p, (size_t)n, sizeof *p, cmp_pos);
    for (int i = 0; i < n; i++)
        ord[i] = p[i].i;
    free(p);
    return MK_OK;
}
