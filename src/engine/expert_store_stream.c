/* The streaming expert store (expert_store.h, issue 11): routed experts
 * read from the checkpoint files into a bounded cache of slots.
 *
 * A slot holds one expert: for gate, up and down, each stored part
 * (weight, scales, biases, zero points) at a 4 KiB-aligned place, plus,
 * for compressed-tensors INT4, the affine biases derived from its scales
 * and zero points (-scale * zp, rounded to the scale dtype, as the resident
 * loader does). The expert's views (mk_expert) are the resident views'
 * formats and parameters with pointers into the slot, over the same bytes,
 * so every kernel computes exactly what it computes on the mapping.
 *
 * acquire(layer, set): every expert of the set is a use for the policy
 * (expert_cache.c); hits are pinned and queued first; each miss claims a
 * slot (the policy's victim, never a pinned one) and its parts' reads go to
 * the reader in one batch, which sorts them by file offset. next() hands
 * out the queued hits, then each miss as soon as its last part arrives.
 * release() unpins. A failed read fails the expert (its slot is freed and
 * the rest of the batch drained, so no slot keeps half-read bytes) with a
 * message naming the layer, expert, file and offset.
 *
 * Before a batch is read, every shard file is checked against its size and
 * mtime at open: a checkpoint changed on disk while running is refused, not
 * read as garbage weights. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/alloc.h"
#include "engine/expert_cache.h"
#include "io/reader.h"
#include "model/model_impl.h"
#include "moekit/expert_store.h"
#include "moekit/module.h"

#define SALIGN 4096u
#define TRACE_MAX (64u << 20) /* accesses kept for the oracle (8 bytes each) */

static uint64_t up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

/* Bytes of the INT4 biases derived for a CT projection. */
static uint64_t ct_bias_bytes(const mk_wloc *w) {
    return w->ct ? (uint64_t)(w->q.rows * (w->q.cols / w->q.group)) * (mk_dtype_info(w->q.sdtype)->bits / 8)
                 : 0;
}

/* Where an expert's bytes go in its slot, and how they are read. When all
 * its parts lie in one shard with little between them (a packed layout, or
 * a per-expert checkpoint written in name order), the whole span is one
 * read, widened down to the 4 KiB boundary so O_DIRECT reads land straight
 * in the slot; otherwise each part is its own read at a 4 KiB-aligned place.
 * Derived CT biases follow. Deterministic: the same expert always gets the
 * same layout, so sizing, reading and viewing agree. */
typedef struct xlayout {
    uint64_t at[3][MK_SP_N]; /* slot offset of each part */
    uint64_t bias[3];        /* slot offset of each projection's derived CT biases */
    bool span;               /* one read of [lo, hi) into the slot's start */
    int shard;
    uint64_t lo, hi;         /* the span's file range (lo aligned down) */
    uint64_t bytes;          /* slot bytes this expert needs */
} xlayout;

static void layout_of(const mk_expert_loc *x, xlayout *L) {
    const mk_wloc *w[3] = {&x->gate, &x->up, &x->down};
    memset(L, 0, sizeof *L);
    uint64_t lo = UINT64_MAX, hi = 0, sum = 0;
    int shard = -1, nparts = 0;
    bool one = true;
    for (int p = 0; p < 3; p++)
        for (int k = 0; k < MK_SP_N; k++) {
            const mk_wloc_part *pt = &w[p]->part[k];
            if (!pt->len)
                continue;
            one = one && (shard < 0 || pt->shard == shard);
            shard = pt->shard;
            lo = pt->off < lo ? pt->off : lo;
            hi = pt->off + pt->len > hi ? pt->off + pt->len : hi;
            sum += pt->len;
            nparts++;
        }
    uint64_t pos = 0;
    /* gaps of up to 64 KiB per part are read and dropped: cheaper than a request each */
    if (nparts && one && hi - (lo & ~(uint64_t)(SALIGN - 1)) <= sum + (uint64_t)nparts * (64u << 10)) {
        L->span = true;
        L->shard = shard;
        L->lo = lo & ~(uint64_t)(SALIGN - 1);
        L->hi = hi;
        for (int p = 0; p < 3; p++)
            for (int k = 0; k < MK_SP_N; k++)
                L->at[p][k] = w[p]->part[k].len ? w[p]->part[k].off - L->lo : 0;
        pos = up(hi - L->lo, SALIGN);
    } else {
        /* each part's read is widened down to a 4 KiB boundary of the file
         * and lands at a 4 KiB boundary of the slot, so O_DIRECT reads go
         * straight in (no bounce copy); the part starts (off mod 4 KiB) in */
        for (int p = 0; p < 3; p++)
            for (int k = 0; k < MK_SP_N; k++) {
                const mk_wloc_part *pt = &w[p]->part[k];
                L->at[p][k] = pos + (pt->off & (SALIGN - 1));
                pos += pt->len ? up((pt->off & (SALIGN - 1)) + pt->len, SALIGN) : 0;
            }
    }
    for (int p = 0; p < 3; p++) {
        L->bias[p] = pos;
        pos += up(ct_bias_bytes(w[p]), SALIGN);
    }
    L->bytes = pos;
}

static uint64_t expert_bytes(const mk_expert_loc *x) {
    xlayout L;
    layout_of(x, &L);
    return L.bytes;
}

uint64_t mk_expert_store_slot_bytes(const mk_model *m) {
    uint64_t best = 0;
    for (int l = 0; l < m->cfg.num_layers; l++) {
        if (!m->layers[l].is_moe || !m->layers[l].moe.locs)
            continue;
        for (int e = 0; e < m->cfg.num_experts; e++) {
            uint64_t b = expert_bytes(&m->layers[l].moe.locs[e]);
            best = b > best ? b : best;
        }
    }
    return best;
}

typedef struct shard_id {
    off_t size;
    struct timespec mtime;
} shard_id;

typedef struct loading {
    int e, slot, parts_left;
    bool failed;
} loading;

typedef struct stream {
    const mk_model *m;
    mk_stream_opts o;
    mk_ecache *cache;
    mk_reader *rd;
    uint32_t *file_of;     /* shard -> reader file index */
    shard_id *ids;         /* shard identity at open */
    size_t nshards;
    unsigned char *mem;    /* nslots * slot_bytes */
    uint64_t slot_bytes;
    int nslots;
    mk_expert *views;      /* per slot */
    /* the current layer's announced set */
    int layer, n, handed;
    int *ready;            /* hits (then finished misses): expert ids in hand-out order */
    int nready, ready_pos;
    int *wait;             /* misses without a slot yet (a stack) */
    int nwait;
    loading *ld;           /* misses in flight */
    int nld;
    mk_reader_req *reqs;
    int *slot_of;          /* expert -> slot, for the current layer */
    /* counters */
    mk_expert_stats st;
    uint32_t *tkeys, *tsteps;
    size_t tn, tcap, twarm; /* twarm: pin loads at the trace's start (not counted) */
    uint32_t step;
    char io_name[48];
} stream;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* CT INT4 biases: -scale * zu, zu the stored zero-point nibble (asymmetric)
 * or 8 (symmetric), rounded to the scale dtype (the loader's arithmetic). */
static void ct_derive(const mk_wloc *w, const unsigned char *scales, const unsigned char *zp,
                      unsigned char *bias) {
    int64_t rows = w->q.rows, ng = w->q.cols / w->q.group;
    size_t es = mk_dtype_info(w->q.sdtype)->bits / 8;
    for (int64_t i = 0; i < rows * ng; i++) {
        int64_t r = i / ng, g = i % ng;
        float zu = 8.0f;
        if (!w->ct_symmetric) {
            uint32_t word;
            memcpy(&word, zp + 4 * (size_t)((r / 8) * ng + g), 4);
            zu = (float)((word >> (4 * (r % 8))) & 15u);
        }
        float b = -mk_dtype_load_f32(w->q.sdtype, scales, i) * zu;
        mk_dtype_from_f32(w->q.sdtype, &b, bias + (size_t)i * es, 1);
    }
}

/* The expert's views over its slot (and its derived CT biases). */
static void finish_expert(stream *s, int slot, const mk_expert_loc *x) {
    unsigned char *base = s->mem + (size_t)slot * s->slot_bytes;
    xlayout L;
    layout_of(x, &L);
    const mk_wloc *w[3] = {&x->gate, &x->up, &x->down};
    mk_wt *v[3] = {&s->views[slot].gate, &s->views[slot].up, &s->views[slot].down};
    for (int p = 0; p < 3; p++) {
        unsigned char *dst[MK_SP_N];
        for (int k = 0; k < MK_SP_N; k++)
            dst[k] = w[p]->part[k].len ? base + L.at[p][k] : NULL;
        *v[p] = w[p]->q;
        v[p]->data = dst[MK_SP_WEIGHT];
        v[p]->scales = dst[MK_SP_SCALES];
        v[p]->biases = dst[MK_SP_BIASES];
        if (w[p]->ct) {
            v[p]->biases = base + L.bias[p];
            ct_derive(w[p], dst[MK_SP_SCALES], dst[MK_SP_ZP], base + L.bias[p]);
        }
    }
}

static mk_status check_files(stream *s) {
    for (size_t i = 0; i < s->nshards; i++) {
        struct stat sb;
        int fd = mk_ckpt_shard_fd(s->m->ck, i);
        if (fd < 0 || fstat(fd, &sb) != 0)
            continue; /* not open (a shard without expert bytes) */
        if (sb.st_size != s->ids[i].size || sb.st_mtim.tv_sec != s->ids[i].mtime.tv_sec ||
            sb.st_mtim.tv_nsec != s->ids[i].mtime.tv_nsec)
            return mk_err(MK_E_IO,
                          "%s changed on disk while the model was in use (size %lld -> %lld bytes, or its "
                          "modification time): refusing to read experts from it; restart on an unchanging "
                          "checkpoint",
                          mk_ckpt_shard_path(s->m->ck, i), (long long)s->ids[i].size, (long long)sb.st_size);
    }
    return MK_OK;
}

static void trace_add(stream *s, int layer, int e) {
    if (!s->o.record_trace || s->tn >= TRACE_MAX)
        return;
    if (s->tn == s->tcap) {
        size_t nc = s->tcap ? 2 * s->tcap : 65536;
        uint32_t *k = mk_realloc(s->tkeys, nc * sizeof *k);
        if (k)
            s->tkeys = k;
        uint32_t *t = k ? mk_realloc(s->tsteps, nc * sizeof *t) : NULL;
        if (!k || !t) { /* the oracle is a report, not a reason to fail: stop recording */
            s->o.record_trace = false;
            return;
        }
        s->tsteps = t;
        s->tcap = nc;
    }
    s->tkeys[s->tn] = (uint32_t)(layer * s->m->cfg.num_experts + e);
    s->tsteps[s->tn] = s->step;
    s->tn++;
}

/* Drain the reads still in flight after a failure and free their slots. */
static void abandon(stream *s) {
    mk_reader_wait_all(s->rd);
    for (int i = 0; i < s->nld; i++)
        if (s->ld[i].parts_left >= 0) {
            mk_ecache_drop(s->cache, s->ld[i].slot);
            s->ld[i].parts_left = -1;
        }
    for (int i = s->ready_pos; i < s->nready; i++)
        mk_ecache_unpin(s->cache, s->slot_of[s->ready[i]]);
    s->nready = s->ready_pos = 0;
    s->nld = 0;
    s->nwait = 0;
    s->n = s->handed = 0;
}

/* Claim slots for as many waiting misses as the cache allows now and read
 * them, all in one batch (the reader sorts by file offset). A miss that
 * finds every slot pinned waits for the engine to release experts (a
 * prefill chunk may use more experts than the cache holds). */
static mk_status issue(stream *s) {
    size_t nreq = 0;
    int first = s->nld;
    while (s->nwait > 0) {
        int e = s->wait[s->nwait - 1], ol, oe;
        int slot = mk_ecache_claim(s->cache, s->layer, e, &ol, &oe);
        if (slot < 0)
            break;
        s->nwait--;
        s->slot_of[e] = slot;
        const mk_expert_loc *x = &s->m->layers[s->layer].moe.locs[e];
        const mk_wloc *w[3] = {&x->gate, &x->up, &x->down};
        unsigned char *base = s->mem + (size_t)slot * s->slot_bytes;
        xlayout XL;
        layout_of(x, &XL);
        loading *L = &s->ld[s->nld];
        *L = (loading){.e = e, .slot = slot};
        if (XL.span) { /* one read for the whole expert */
            s->reqs[nreq++] = (mk_reader_req){
                .file = s->file_of[XL.shard], .off = XL.lo, .len = (size_t)(XL.hi - XL.lo), .dst = base,
                .cap = (size_t)up(XL.hi - XL.lo, SALIGN), .tag = (uint64_t)s->nld};
            L->parts_left = 1;
            s->st.bytes_read += XL.hi - XL.lo;
        } else {
            for (int p = 0; p < 3; p++)
                for (int k = 0; k < MK_SP_N; k++) {
                    const mk_wloc_part *pt = &w[p]->part[k];
                    if (!pt->len)
                        continue;
                    uint64_t head = pt->off & (SALIGN - 1); /* read from the boundary below */
                    s->reqs[nreq++] = (mk_reader_req){
                        .file = s->file_of[pt->shard], .off = pt->off - head, .len = (size_t)(head + pt->len),
                        .dst = base + XL.at[p][k] - head, .cap = (size_t)up(head + pt->len, SALIGN),
                        .tag = (uint64_t)s->nld};
                    L->parts_left++;
                    s->st.bytes_read += pt->len;
                }
        }
        s->nld++;
    }
    if (!nreq)
        return s->nld > first || s->nwait == 0
                   ? MK_OK
                   : mk_err(MK_E_INTERNAL, "expert cache of %d slots: every slot is in use while layer %d "
                            "waits for %d experts", s->nslots, s->layer, s->nwait);
    mk_status st = check_files(s);
    double t0 = now_s(); /* io_uring may complete cached reads inside the submit */
    if (st == MK_OK)
        st = mk_reader_submit(s->rd, s->reqs, nreq);
    s->st.io_wait_s += now_s() - t0;
    if (st != MK_OK) {
        for (int i = first; i < s->nld; i++) {
            mk_ecache_drop(s->cache, s->ld[i].slot);
            s->ld[i].parts_left = -1;
        }
        return st;
    }
    s->st.reads += nreq;
    return MK_OK;
}

static mk_status st_acquire(void *ctx, int layer, const int *experts, int n) {
    stream *s = ctx;
    const mk_config *c = &s->m->cfg;
    if (layer < 0 || layer >= c->num_layers || !s->m->layers[layer].is_moe)
        return mk_err(MK_E_ARG, "expert store: layer %d has no experts", layer);
    if (s->handed < s->n)
        return mk_err(MK_E_ARG, "expert store: layer %d announced while %d experts of layer %d are not "
                      "taken", layer, s->n - s->handed, s->layer);
    for (int i = 0; i < n; i++)
        if (experts[i] < 0 || experts[i] >= c->num_experts)
            return mk_err(MK_E_ARG, "expert store: no expert %d in layer %d (%d experts)", experts[i], layer,
                          c->num_experts);
    s->layer = layer;
    s->n = n;
    s->handed = 0;
    s->nready = s->ready_pos = 0;
    s->nld = 0;
    s->nwait = 0;
    s->step++;
    for (int i = 0; i < n; i++) {
        int e = experts[i];
        trace_add(s, layer, e);
        s->st.uses++;
        int slot = mk_ecache_use(s->cache, layer, e);
        if (slot >= 0) {
            s->st.hits++;
            mk_ecache_pin(s->cache, slot);
            s->slot_of[e] = slot;
            s->ready[s->nready++] = e;
        } else {
            s->wait[s->nwait++] = e;
        }
    }
    /* misses are claimed in the announced order: the waiting list is a stack */
    for (int i = 0, j = s->nwait - 1; i < j; i++, j--) {
        int t = s->wait[i];
        s->wait[i] = s->wait[j];
        s->wait[j] = t;
    }
    mk_status st = issue(s);
    if (st != MK_OK) {
        abandon(s);
        return mk_err_wrap(st, "reading the experts of layer %d", layer);
    }
    return MK_OK;
}

static mk_status st_next(void *ctx, int layer, int *e, const mk_expert **out) {
    stream *s = ctx;
    if (layer != s->layer || s->handed >= s->n)
        return mk_err(MK_E_ARG, "expert store: no announced expert left in layer %d", layer);
    while (s->ready_pos == s->nready) {
        if (!mk_reader_pending(s->rd)) { /* nothing in flight: slots were released meanwhile */
            mk_status st = issue(s);
            if (st != MK_OK) {
                abandon(s);
                return mk_err_wrap(st, "reading the experts of layer %d", layer);
            }
        }
        uint64_t tag;
        bool done;
        double t0 = now_s();
        mk_status st = mk_reader_next(s->rd, true, &tag, &done);
        s->st.io_wait_s += now_s() - t0;
        if (!done) {
            abandon(s);
            return mk_err(MK_E_INTERNAL, "expert store: layer %d: reads ended with experts missing", layer);
        }
        loading *L = &s->ld[tag];
        if (st != MK_OK) {
            int x = L->e;
            mk_ecache_drop(s->cache, L->slot);
            L->parts_left = -1;
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", mk_err_msg());
            abandon(s);
            return mk_err(st, "expert %d of layer %d: %s", x, layer, msg);
        }
        if (--L->parts_left == 0) {
            finish_expert(s, L->slot, &s->m->layers[layer].moe.locs[L->e]);
            L->parts_left = -1;
            s->ready[s->nready++] = L->e;
        }
    }
    int x = s->ready[s->ready_pos++];
    s->handed++;
    *e = x;
    *out = &s->views[s->slot_of[x]];
    return MK_OK;
}

static void st_release(void *ctx, int layer, int e) {
    stream *s = ctx;
    (void)layer;
    mk_ecache_unpin(s->cache, s->slot_of[e]);
}

/* Read the given experts now and keep them for good (profile pins). */
static mk_status pin_experts(stream *s, const mk_stream_opts *o) {
    const mk_config *c = &s->m->cfg;
    int room = s->nslots - c->num_experts_per_tok;
    for (int i = 0; i < o->n_pin && s->st.pinned < room; i++) {
        int l = o->pin_layer[i], e = o->pin_expert[i];
        if (!mk_model_expert_loc(s->m, l, e))
            return mk_err(MK_E_ARG, "expert store: cannot pin expert %d of layer %d: no such routed expert", e, l);
        if (mk_ecache_use(s->cache, l, e) >= 0)
            continue; /* given twice */
        s->step++;
        trace_add(s, l, e);
        s->layer = l;
        s->nwait = 1;
        s->wait[0] = e;
        s->nld = 0;
        MK_TRY(issue(s));
        mk_status st = mk_reader_wait_all(s->rd);
        if (st != MK_OK) {
            mk_ecache_drop(s->cache, s->ld[0].slot);
            return mk_err_wrap(st, "pinning expert %d of layer %d", e, l);
        }
        finish_expert(s, s->ld[0].slot, mk_model_expert_loc(s->m, l, e));
        mk_ecache_pin_forever(s->cache, s->ld[0].slot);
        s->st.pinned++;
    }
    s->nld = 0;
    s->twarm = s->tn;
    s->st.uses = s->st.hits = 0; /* pins are not uses; their bytes stay counted as read */
    return MK_OK;
}

static void st_stats(void *ctx, mk_expert_stats *out) {
    stream *s = ctx;
    *out = s->st;
    out->slots = s->nslots;
    out->slot_bytes = s->slot_bytes;
    out->io = s->io_name;
    out->oracle_hit = s->o.record_trace || s->tn
                          ? mk_ecache_belady(s->tkeys, s->tsteps, s->tn, s->nslots, s->twarm)
                          : -1.0;
}

static void st_free(void *ctx) {
    stream *s = ctx;
    if (!s)
        return;
    if (s->rd)
        mk_reader_destroy(s->rd);
    mk_ecache_free(s->cache);
    free(s->mem);
    free(s->views);
    free(s->file_of);
    free(s->ids);
    free(s->ready);
    free(s->wait);
    free(s->ld);
    free(s->reqs);
    free(s->slot_of);
    free(s->tkeys);
    free(s->tsteps);
    free(s);
}

static const mk_expert_store_i g_stream = {
    .name = "stream",
    .acquire = st_acquire,
    .next = st_next,
    .release = st_release,
    .free = st_free,
    .stats = st_stats,
};

mk_status mk_expert_store_stream(const mk_model *m, const mk_stream_opts *o, mk_expert_store **out) {
    *out = NULL;
    const mk_config *c = &m->cfg;
    if (!m->stream_experts)
        return mk_err(MK_E_ARG, "expert store: the model was not opened for streaming experts "
                      "(mk_model_opts.stream_experts)");
    uint64_t sb = mk_expert_store_slot_bytes(m);
    if (!sb)
        return mk_err(MK_E_ARG, "expert store: %s has no routed experts to stream", mk_ckpt_dir(m->ck));
    int k = c->num_experts_per_tok;
    /* decode announces k experts per layer: the cache holds at least those,
     * so one token's reads of a layer are issued together; a prefill chunk's
     * larger sets are read as slots are released */
    uint64_t nslots64 = o->cache_bytes / sb;
    if (nslots64 < (uint64_t)k)
        return mk_err(MK_E_ARG,
                      "expert cache of %llu bytes holds %llu experts of %llu bytes, fewer than the %d one "
                      "token routes to per layer: allow at least %llu bytes for experts",
                      (unsigned long long)o->cache_bytes, (unsigned long long)nslots64,
                      (unsigned long long)sb, k, (unsigned long long)((uint64_t)k * sb));
    if (nslots64 > (uint64_t)c->num_experts * (uint64_t)c->num_layers)
        nslots64 = (uint64_t)c->num_experts * (uint64_t)c->num_layers;
    stream *s = mk_calloc(1, sizeof *s);
    if (!s)
        return mk_err(MK_E_NOMEM, "expert store: no memory for its state");
    s->m = m;
    s->o = *o;
    s->slot_bytes = sb;
    s->nslots = (int)nslots64;
    s->nshards = mk_ckpt_nshards(m->ck);
    int E = c->num_experts;
    s->mem = mk_aligned_alloc(SALIGN, (size_t)s->nslots * sb); /* untouched until read into */
    s->views = mk_calloc((size_t)s->nslots, sizeof *s->views);
    s->file_of = mk_calloc(s->nshards, sizeof *s->file_of);
    s->ids = mk_calloc(s->nshards, sizeof *s->ids);
    s->ready = mk_malloc((size_t)E * sizeof *s->ready);
    s->wait = mk_malloc((size_t)E * sizeof *s->wait);
    s->ld = mk_malloc((size_t)E * sizeof *s->ld);
    s->reqs = mk_malloc((size_t)E * 3 * MK_SP_N * sizeof *s->reqs);
    s->slot_of = mk_malloc((size_t)E * sizeof *s->slot_of);
    mk_status st = MK_OK;
    if (!s->mem || !s->views || !s->file_of || !s->ids || !s->ready || !s->wait || !s->ld || !s->reqs || !s->slot_of)
        st = mk_err(MK_E_NOMEM, "expert store: no memory for %d cache slots of %llu bytes", s->nslots,
                    (unsigned long long)sb);
    if (st == MK_OK)
        st = mk_ecache_create(s->nslots, c->num_layers, E,
                              o->policy == MK_EXPERT_LRU ? MK_ECACHE_LRU : MK_ECACHE_FREQ,
                              (o->half_life_tokens > 0 ? o->half_life_tokens : 64.0) * (double)k *
                                  (double)c->num_layers,
                              &s->cache);
    if (st == MK_OK) {
        mk_reader_opts ro = {.backend = o->io == 1 ? MK_READER_URING : o->io == 2 ? MK_READER_PREAD
                                                                                 : MK_READER_AUTO,
                             .direct = o->direct,
                             .queue_depth = (unsigned)(k * 3 * MK_SP_N > 16 ? k * 3 * MK_SP_N : 16)};
        st = mk_reader_create(&ro, &s->rd);
    }
    for (size_t i = 0; st == MK_OK && i < s->nshards; i++) {
        struct stat sbuf;
        int fd = mk_ckpt_shard_fd(m->ck, i);
        if (fd >= 0 && fstat(fd, &sbuf) == 0)
            s->ids[i] = (shard_id){sbuf.st_size, sbuf.st_mtim};
        st = mk_reader_add_file(s->rd, mk_ckpt_shard_path(m->ck, i), &s->file_of[i]);
    }
    if (st != MK_OK) {
        st_free(s);
        return st;
    }
    snprintf(s->io_name, sizeof s->io_name, "%s, %s", mk_reader_backend_name(s->rd),
             o->direct ? "O_DIRECT" : "buffered");
    if (o->n_pin > 0 && (st = pin_experts(s, o)) != MK_OK) {
        st_free(s);
        return st;
    }
    return mk_expert_store_create(&g_stream, s, out);
}
