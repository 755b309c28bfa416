/* The VRAM cache of the experts of MoE layers kept in host memory (issue
 * 14, models larger than VRAM; mk_backend_cuda_set_expert_cache).
 *
 * Past the expert VRAM budget a layer's experts stay in pinned host memory
 * that the fused step's kernels read over the bus (cuda_fused.cu), about
 * 80 times slower than device memory. Routing is skewed (a layer sends
 * most tokens to a minority of its experts), so a few slots of device
 * memory holding the most-routed of those experts save most of the bus
 * reads. The pieces:
 *  - slots: one pool of device memory per part (gate, up, down x data,
 *    scales, biases), nslots experts each, shared by all the cached layers
 *    (they have one shape); the step reads expert e of layer l from slot
 *    slot_of[l][e] when it is >= 0 (mk_cuda_moe.slot_of, cgate/cup/cdown),
 *    the same bytes, so results are bitwise those without the cache;
 *  - counts: the step's routing adds 1 per chosen expert (mk_cuda_moe
 *    .counts); every XC_TICK decode steps the counts are copied back to
 *    pinned memory and zeroed, queued on the stream, and taken at a later
 *    step boundary once the copy has landed (cudaEventQuery: never a wait);
 *  - the plan: mk_hotset (src/engine/expert_hot.c) keeps decayed scores
 *    and moves the best uncached expert into the worst slot while it beats
 *    the slot's expert by a margin (XC_DECAY, XC_MARGIN: the values its
 *    unit test measures);
 *  - a move: the victim's slot_of entry is set to -1 on the stream (steps
 *    queued after it read the victim from host memory again), an event
 *    after it lets the copy stream start once every step that could read
 *    the slot has run; the new expert is copied from its pinned host slab
 *    into the slot on the copy stream, beside the decode; its slot_of
 *    entry is set at the first step boundary after the copy's event has
 *    completed. So a slot is never read while it is written, and a step
 *    never waits for a copy.
 * slot_of and the counts are device memory whose addresses do not change,
 * so a recorded step (cuda_graph.cu) reads the current ones when
 * replayed. Ticks come from step_replay and, for steps not recorded
 * (prefill chunks and batched steps of up to 64 tokens included: their
 * routing counts too), from the fused slot's call for one of the cache's
 * layers (xc_first). The cache is made at a layer's second call (the first
 * step has stacked every layer by then) and made again if another layer
 * goes to host memory later. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_backend.cuh"
#include "cuda/mk_cuda.h"

extern "C" {
#include "core/alloc.h"
#include "engine/expert_hot.h"
}

#define XC_TICK 16        /* decode steps between two reads of the counts */
#define XC_DECAY 0.9      /* per tick: a half-life of ~6.6 ticks, ~105 tokens */
#define XC_MARGIN 1.25    /* a candidate must beat its victim's score by this factor */
#define XC_MOVES 16       /* copies in flight at most */
#define XC_RESERVE ((size_t)2 << 30) /* device memory left free, as the layers' placement does */

struct mkb_xmove {
    int slot;
    int32_t key;
    bool live;   /* false: the plan moved the key out again before it landed */
    cudaEvent_t ev;
};

struct mkb_xcache {
    int nl, E, nslots;
    mkb_moe_layer **layers;  /* key = layer index * E + expert */
    size_t esz[3][3];        /* one expert's bytes of each part */
    void *pool[3][3];        /* device: nslots experts each */
    int32_t *d_slot;         /* device [nl * E]: slot or -1, what the steps read */
    int32_t *d_counts;       /* device [nl * E] */
    int32_t *h_counts;       /* pinned [nl * E] */
    int32_t *h_vals;         /* pinned [nslots]: 0..nslots-1, the sources of slot_of writes */
    int32_t *pub;            /* host [nl * E]: what d_slot says once the queued writes ran */
    mk_hotset *hot;
    cudaStream_t cs;         /* the copies */
    cudaEvent_t ev_counts, ev_free;
    bool counts_pending;
    uint64_t steps;
    mkb_xmove mv[XC_MOVES];
    int nmv;
    uint64_t copies, counted, counted_hit;
};

/* Take the cache out of its layers' device views (the next recording
 * gets views without it). */
static void detach(mkb_ctx *c, mkb_xcache *x) {
    for (int i = 0; i < x->nl; i++) {
        mk_cuda_moe *m = &x->layers[i]->m;
        m->slot_of = NULL;
        m->counts = NULL;
        memset(&m->cgate, 0, sizeof m->cgate);
        memset(&m->cup, 0, sizeof m->cup);
        memset(&m->cdown, 0, sizeof m->cdown);
    }
    mkb_graph_free(c);
}

static void xc_destroy(mkb_xcache *x) {
    if (x->cs)
        (void)cudaStreamSynchronize(x->cs);
    for (int i = 0; i < XC_MOVES; i++)
        if (x->mv[i].ev)
            (void)cudaEventDestroy(x->mv[i].ev);
    if (x->ev_counts)
        (void)cudaEventDestroy(x->ev_counts);
    if (x->ev_free)
        (void)cudaEventDestroy(x->ev_free);
    if (x->cs)
        (void)cudaStreamDestroy(x->cs);
    for (int p = 0; p < 3; p++)
        for (int q = 0; q < 3; q++)
            mk_cuda_free(x->pool[p][q]);
    mk_cuda_free(x->d_slot);
    mk_cuda_free(x->d_counts);
    if (x->h_counts)
        (void)cudaFreeHost(x->h_counts);
    if (x->h_vals)
        (void)cudaFreeHost(x->h_vals);
    mk_hotset_free(x->hot);
    free(x->layers);
    free(x->pub);
    free(x);
}

void mkb_xcache_free(mkb_ctx *c) {
    mkb_xcache *x = c->xc;
    if (!x)
        return;
    (void)cudaStreamSynchronize(c->s); /* no queued step may read the slots freed next */
    detach(c, x);
    xc_destroy(x);
    c->xc = NULL;
    c->xc_first = NULL;
}

/* The view of part p's pool: w's storage, nslots experts of rows. */
static mk_wt pool_view(const mk_wt *w, int64_t rows, const mkb_xcache *x, int p) {
    mk_wt v = *w;
    v.rows = rows * x->nslots;
    v.data = x->pool[p][0];
    v.scales = x->pool[p][1];
    v.biases = x->pool[p][2];
    return v;
}

/* A layer the cache takes beside `like`: fused, in host memory, shaped the same. */
static bool cacheable(const mkb_moe_layer *l, const mkb_moe_layer *like) {
    return l->ok && l->host && !l->m.slot_of && l->E == like->E && !memcmp(l->esz, like->esz, sizeof l->esz);
}

/* Make the cache over the host layers of one shape; on any failure, no
 * cache (said on stderr: decode goes on over the bus). */
static mk_status build(mkb_ctx *c) {
    c->xc_tried_at = c->host_layers;
    /* the host layers of one shape: the first in the list (the last stacked) and its like */
    mkb_moe_layer *first = NULL;
    int nl = 0;
    for (mkb_moe_layer *l = c->moe_layers; l; l = l->next)
        if (cacheable(l, first ? first : l)) {
            first = first ? first : l;
            nl++;
        }
    if (!first)
        return MK_OK;
    size_t per = 0;
    for (int p = 0; p < 3; p++)
        for (int q = 0; q < 3; q++)
            per += first->esz[p][q];
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) {
        (void)cudaGetLastError();
        fr = 0;
    }
    const size_t room = fr > XC_RESERVE ? fr - XC_RESERVE : 0; /* beside the layers' budget */
    size_t want = c->expert_cache < room ? c->expert_cache : room;
    int64_t ns = per ? (int64_t)(want / per) : 0;
    if (ns > (int64_t)nl * first->E)
        ns = (int64_t)nl * first->E;
    if (ns < 1)
        return mk_err(MK_E_NOMEM, "the expert cache: %zu bytes hold no expert of %zu bytes (%zu free)",
                      c->expert_cache, per, fr);
    mkb_xcache *x = (mkb_xcache *)mk_calloc(1, sizeof *x);
    if (!x)
        return mk_err(MK_E_NOMEM, "the expert cache's state");
    x->E = first->E;
    x->nslots = (int)ns;
    const size_t nk = (size_t)nl * (size_t)x->E;
    x->layers = (mkb_moe_layer **)mk_calloc((size_t)nl, sizeof *x->layers);
    x->pub = (int32_t *)mk_malloc(nk * sizeof *x->pub);
    mk_status s = x->layers && x->pub ? MK_OK : mk_err(MK_E_NOMEM, "the expert cache's maps");
    for (mkb_moe_layer *l = c->moe_layers; l && s == MK_OK; l = l->next)
        if (cacheable(l, first))
            x->layers[x->nl++] = l;
    memcpy(x->esz, first->esz, sizeof x->esz);
    for (int p = 0; p < 3 && s == MK_OK; p++)
        for (int q = 0; q < 3 && s == MK_OK; q++)
            if (x->esz[p][q])
                s = mk_cuda_malloc(&x->pool[p][q], x->esz[p][q] * (size_t)ns, "the expert cache's slots");
    if (s == MK_OK)
        s = mk_cuda_malloc((void **)&x->d_slot, nk * sizeof(int32_t), "the expert cache's slot map");
    if (s == MK_OK)
        s = mk_cuda_malloc((void **)&x->d_counts, nk * sizeof(int32_t), "the routing counts");
    cudaError_t e = cudaSuccess;
    /* on the backend's (non-blocking) stream: the steps queued after read them */
    if (s == MK_OK)
        e = cudaMemsetAsync(x->d_slot, 0xff, nk * sizeof(int32_t), c->s); /* -1: nothing cached */
    if (s == MK_OK && e == cudaSuccess)
        e = cudaMemsetAsync(x->d_counts, 0, nk * sizeof(int32_t), c->s);
    if (s == MK_OK && e == cudaSuccess)
        e = cudaHostAlloc((void **)&x->h_counts, nk * sizeof(int32_t), cudaHostAllocDefault);
    if (s == MK_OK && e == cudaSuccess)
        e = cudaHostAlloc((void **)&x->h_vals, (size_t)ns * sizeof(int32_t), cudaHostAllocDefault);
    if (s == MK_OK && e == cudaSuccess)
        e = cudaStreamCreateWithFlags(&x->cs, cudaStreamNonBlocking);
    if (s == MK_OK && e == cudaSuccess)
        e = cudaEventCreateWithFlags(&x->ev_counts, cudaEventDisableTiming);
    if (s == MK_OK && e == cudaSuccess)
        e = cudaEventCreateWithFlags(&x->ev_free, cudaEventDisableTiming);
    for (int i = 0; i < XC_MOVES && s == MK_OK && e == cudaSuccess; i++)
        e = cudaEventCreateWithFlags(&x->mv[i].ev, cudaEventDisableTiming);
    if (s == MK_OK && e != cudaSuccess) {
        s = mkc_fail(e, "setting up the expert cache");
        (void)cudaGetLastError(); /* not the next launch's error: decode goes on without the cache */
    }
    if (s == MK_OK)
        s = mk_hotset_create(x->nslots, (int)nk, XC_DECAY, XC_MARGIN, &x->hot);
    if (s == MK_OK) {
        for (int i = 0; i < x->nslots; i++)
            x->h_vals[i] = i;
        for (size_t k = 0; k < nk; k++)
            x->pub[k] = -1;
        for (int i = 0; i < x->nl && s == MK_OK; i++) {
            mk_cuda_moe *m = &x->layers[i]->m;
            m->slot_of = x->d_slot + (size_t)i * (size_t)x->E;
            m->counts = x->d_counts + (size_t)i * (size_t)x->E;
            m->cgate = pool_view(&m->gate, m->inter, x, 0);
            m->cup = pool_view(&m->up, m->inter, x, 1);
            m->cdown = pool_view(&m->down, m->hidden, x, 2);
            s = mk_cuda_moe_check(m);
        }
    }
    if (s != MK_OK) {
        (void)cudaStreamSynchronize(c->s); /* the memsets above may still be queued */
        detach(c, x);
        xc_destroy(x);
        (void)cudaGetLastError();
        return s;
    }
    c->xc = x;
    c->xc_first = x->layers[0];
    mkb_graph_free(c); /* a recorded step holds the views without the cache */
    return MK_OK;
}

/* Copy key's expert from its layer's host slabs into slot, on the copy stream. */
static cudaError_t copy_in(mkb_xcache *x, int32_t key, int slot) {
    const mkb_moe_layer *l = x->layers[key / x->E];
    const size_t e = (size_t)(key % x->E);
    cudaError_t r = cudaSuccess;
    for (int p = 0; p < 3 && r == cudaSuccess; p++)
        for (int q = 0; q < 3 && r == cudaSuccess; q++) {
            const size_t n = x->esz[p][q];
            if (n)
                r = cudaMemcpyAsync((char *)x->pool[p][q] + (size_t)slot * n, (const char *)l->slab[p][q] + e * n, n,
                                    cudaMemcpyHostToDevice, x->cs);
        }
    return r;
}

static void fail(mkb_ctx *c, cudaError_t e, const char *what) {
    (void)cudaGetLastError();
    mkb_fail(c, mkc_fail(e, what));
}

void mkb_xcache_tick(mkb_ctx *c) {
    if (c->recording || c->err.st != MK_OK)
        return;
    if (!c->xc) {
        if (c->expert_cache && c->host_layers > 0 && c->host_layers != c->xc_tried_at) {
            mk_status s = build(c);
            if (s != MK_OK) /* decode goes on over the bus: say so once */
                fprintf(stderr, "moekit: --gpu-expert-cache: no expert cache: %s\n", mk_err_msg());
        }
        return;
    }
    mkb_xcache *x = c->xc;
    x->steps++;
    /* copies that landed: their experts are read from the slots from the next step on */
    for (int i = 0; i < x->nmv;) {
        mkb_xmove *m = &x->mv[i];
        cudaError_t q = cudaEventQuery(m->ev);
        if (q == cudaErrorNotReady) {
            (void)cudaGetLastError(); /* not an error; cleared so no launch check reports it */
            i++;
            continue;
        }
        if (q != cudaSuccess)
            return fail(c, q, "the expert cache's copy");
        if (m->live) {
            cudaError_t r = cudaMemcpyAsync(x->d_slot + m->key, x->h_vals + m->slot, sizeof(int32_t),
                                            cudaMemcpyHostToDevice, c->s);
            if (r != cudaSuccess)
                return fail(c, r, "publishing an expert cache slot");
            x->pub[m->key] = m->slot;
        }
        /* keep the events: swap the finished entry to the end */
        mkb_xmove t = *m;
        *m = x->mv[x->nmv - 1];
        x->mv[--x->nmv] = t;
    }
    /* counts that came back: score, plan, start the copies */
    if (x->counts_pending) {
        cudaError_t q = cudaEventQuery(x->ev_counts);
        if (q == cudaSuccess) {
            x->counts_pending = false;
            const int nk = x->nl * x->E;
            for (int k = 0; k < nk; k++) {
                x->counted += (uint64_t)x->h_counts[k];
                if (x->pub[k] >= 0)
                    x->counted_hit += (uint64_t)x->h_counts[k];
            }
            mk_hotset_add(x->hot, x->h_counts);
            mk_hot_move plan[XC_MOVES];
            const int n = mk_hotset_plan(x->hot, XC_MOVES - x->nmv, plan);
            if (n > 0) {
                for (int i = 0; i < n; i++) {
                    const int32_t old = plan[i].old_key;
                    if (old < 0)
                        continue;
                    /* steps from here on read the victim from host memory */
                    cudaError_t r = cudaMemsetAsync(x->d_slot + old, 0xff, sizeof(int32_t), c->s);
                    if (r != cudaSuccess)
                        return fail(c, r, "taking an expert out of the cache");
                    x->pub[old] = -1;
                    for (int j = 0; j < x->nmv; j++) /* in flight: it will not be published */
                        if (x->mv[j].key == old)
                            x->mv[j].live = false;
                }
                /* the copies start once every step queued so far has run */
                cudaError_t r = cudaEventRecord(x->ev_free, c->s);
                if (r == cudaSuccess)
                    r = cudaStreamWaitEvent(x->cs, x->ev_free, 0);
                for (int i = 0; i < n && r == cudaSuccess; i++) {
                    r = copy_in(x, plan[i].new_key, plan[i].slot);
                    mkb_xmove *m = &x->mv[x->nmv];
                    m->slot = plan[i].slot;
                    m->key = plan[i].new_key;
                    m->live = true;
                    if (r == cudaSuccess)
                        r = cudaEventRecord(m->ev, x->cs);
                    if (r == cudaSuccess) {
                        x->nmv++;
                        x->copies++;
                    }
                }
                if (r != cudaSuccess)
                    return fail(c, r, "copying an expert into the cache");
            }
        } else if (q == cudaErrorNotReady) {
            (void)cudaGetLastError();
        } else {
            return fail(c, q, "reading the routing counts");
        }
    }
    if (!x->counts_pending && x->steps % XC_TICK == 0) {
        const size_t nb = (size_t)x->nl * (size_t)x->E * sizeof(int32_t);
        cudaError_t r = cudaMemcpyAsync(x->h_counts, x->d_counts, nb, cudaMemcpyDeviceToHost, c->s);
        if (r == cudaSuccess)
            r = cudaMemsetAsync(x->d_counts, 0, nb, c->s);
        if (r == cudaSuccess)
            r = cudaEventRecord(x->ev_counts, c->s);
        if (r != cudaSuccess)
            return fail(c, r, "reading the routing counts");
        x->counts_pending = true;
    }
}

extern "C" void mk_backend_cuda_set_expert_cache(mk_backend *b, size_t bytes) {
    mkb_ctx *c = mkb_ctx_of(b);
    if (!c)
        return;
    c->expert_cache = bytes;
    c->xc_tried_at = 0;
}

extern "C" void mk_backend_cuda_expert_cache_stats(const mk_backend *b, int *slots, uint64_t *copies,
                                                   double *hit_share) {
    *slots = 0;
    *copies = 0;
    *hit_share = 0.0;
    const mkb_ctx *c = mkb_ctx_of(b);
    const mkb_xcache *x = c ? c->xc : NULL;
    if (!x)
        return;
    *slots = x->nslots;
    *copies = x->copies;
    *hit_share = x->counted ? (double)x->counted_hit / (double)x->counted : 0.0;
}
