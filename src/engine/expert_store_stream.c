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
 * gpt_oss's transformers float experts are stored [in, out] inside their
 * stacks (mk_wloc.transposed): each expert's block is read as stored, one
 * read like any part, and transposed in its slot once its reads end
 * (through one expert-sized buffer of the store) into the [out, in] bytes
 * the resident loader's copy holds, so those views too are the resident
 * ones over the same bytes.
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
 * prefetch(layer, set): a hint for a layer not yet announced (the engine's
 * guess of the next layer's experts). Each guessed expert not cached claims
 * a slot (never a pinned one, so nothing in use is touched) and its reads
 * start at once, so they overlap the compute of the current layer. The slot
 * is pinned for the guess until that layer's acquire: a guess it uses is a
 * prefetch hit (handed out once its reads finish); a wrong one is unpinned
 * then (at its read's end if still in flight) and stays cached like any
 * other expert, first in line for eviction under FREQ as it was never used.
 * A guess whose read fails is dropped, not reported: if the layer really
 * uses that expert, its own read reports the error.
 *
 * fill(opts): the warm start (mk_expert_store_fill), before the first
 * acquire. The plan (expert_fill.c: a profile's next hottest, or an even
 * share of every MoE layer) claims free slots coldest first, so that among
 * filled experts nobody has used yet, which the policy evicts before any
 * used one (no use counted: FREQ's -inf, LRU's oldest), the lowest slot and
 * thus the coldest goes first. Their reads go to the reader in file-offset
 * order in batches of up to a layer's worth of experts, the next batch
 * submitted while a queue's worth of the last is still pending, so the
 * disk always has long sequential reads queued. A failed read ends the
 * fill naming the expert; the experts already read stay, the others'
 * slots are freed. Each slot remembers whether the fill loaded it until
 * it is reloaded, for the fill_hits / fill_used counters.
 *
 * Loads are kept per slot (a read's tag is its slot), so reads of the
 * current layer and of a guess can be in flight together.
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
#include "engine/expert_fill.h"
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

/* A slot's load: reads in flight (parts_left > 0) or a finished guess
 * still waiting for its layer's acquire (pf). */
typedef struct loading {
    int layer, e;
    int parts_left; /* reads not reported yet */
    bool wanted;    /* in the current layer's set: handed out when its reads end */
    bool pf;        /* loaded for a guess: holds the guess's pin */
    bool pf_passed; /* its layer's acquire passed without using it: unpin at the end of the read */
    bool failed;    /* a read of a guess failed: dropped when the last one is reported */
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
    unsigned char *tbuf;   /* a transposed part's bytes as read (finish_expert); NULL if none */
    /* the current layer's announced set */
    int layer, n, handed;
    int *ready;            /* hits (then finished misses): expert ids in hand-out order */
    int nready, ready_pos;
    int *wait;             /* misses without a slot yet (a stack) */
    int nwait;
    loading *ld;           /* per slot */
    int *pf;               /* slots holding a guess's pin */
    int npf;
    int *claimed;          /* slots claimed by one issue() or prefetch */
    mk_reader_req *reqs;
    int *slot_of;          /* expert -> slot, for the current layer */
    unsigned char *fillst; /* per slot: 0, or 1 loaded by the fill and unused, 2 loaded by it and used */
    unsigned char *fresh;  /* per slot: loaded since its views were last handed out (st_changed) */
    bool started;          /* an acquire or a guess came: too late to fill */
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

/* Bytes of one element of a transposed (float) part. */
static size_t elem_bytes(const mk_wloc *w) {
    return w->q.fmt == MK_WF_F32 ? 4 : 2; /* the loader marks only BF16, F16 and F32 transposed */
}

/* A [cols, rows] block of float elements of `es` bytes, copied to tmp,
 * back into `part` as [rows, cols] (the resident loader's copy, element
 * for element). In tiles so both sides stay in cache; es a constant in
 * each call below so the element copies compile to moves. */
static inline void transpose_es(unsigned char *part, const unsigned char *tmp, int64_t rows, int64_t cols,
                                size_t es) {
    enum { T = 32 };
    for (int64_t r0 = 0; r0 < rows; r0 += T)
        for (int64_t c0 = 0; c0 < cols; c0 += T) {
            int64_t r1 = r0 + T < rows ? r0 + T : rows, c1 = c0 + T < cols ? c0 + T : cols;
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++)
                    memcpy(part + (size_t)(r * cols + c) * es, tmp + (size_t)(c * rows + r) * es, es);
        }
}

static void untranspose(unsigned char *part, unsigned char *tmp, const mk_wloc *w) {
    int64_t rows = w->q.rows, cols = w->q.cols;
    size_t es = elem_bytes(w);
    memcpy(tmp, part, (size_t)(rows * cols) * es);
    if (es == 4)
        transpose_es(part, tmp, rows, cols, 4);
    else
        transpose_es(part, tmp, rows, cols, 2);
}

/* The expert's views over its slot (and its derived CT biases); transposed
 * parts are put in the views' order first. Called once per read of the
 * expert, after its last part arrived. */
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
        if (w[p]->transposed)
            untranspose(dst[MK_SP_WEIGHT], s->tbuf, w[p]);
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

/* Drain the reads still in flight after a failure and free their slots;
 * guesses lose their pins (the layer they were for may never come). */
static void abandon(stream *s) {
    mk_reader_wait_all(s->rd);
    for (int i = 0; i < s->nslots; i++)
        if (s->ld[i].parts_left > 0 || s->ld[i].failed) {
            mk_ecache_drop(s->cache, i);
            s->ld[i] = (loading){0};
        }
    for (int i = 0; i < s->npf; i++)
        if (s->ld[s->pf[i]].pf) {
            mk_ecache_unpin(s->cache, s->pf[i]);
            s->ld[s->pf[i]].pf = s->ld[s->pf[i]].pf_passed = false;
        }
    s->npf = 0;
    for (int i = s->ready_pos; i < s->nready; i++)
        mk_ecache_unpin(s->cache, s->slot_of[s->ready[i]]);
    s->nready = s->ready_pos = 0;
    s->nwait = 0;
    s->n = s->handed = 0;
}

/* Append the reads of expert e of `layer` into `slot` to s->reqs from
 * nreq on (tag: the slot) and start its load record; returns the new nreq. */
static size_t add_reads(stream *s, int slot, int layer, int e, size_t nreq, bool guess) {
    const mk_expert_loc *x = &s->m->layers[layer].moe.locs[e];
    const mk_wloc *w[3] = {&x->gate, &x->up, &x->down};
    unsigned char *base = s->mem + (size_t)slot * s->slot_bytes;
    xlayout XL;
    layout_of(x, &XL);
    loading *L = &s->ld[slot];
    *L = (loading){.layer = layer, .e = e, .wanted = !guess, .pf = guess};
    s->fillst[slot] = 0; /* no longer what the fill loaded */
    s->fresh[slot] = 1;  /* other bytes behind the slot's views from now on */
    uint64_t bytes = 0;
    if (XL.span) { /* one read for the whole expert */
        s->reqs[nreq++] = (mk_reader_req){.file = s->file_of[XL.shard], .off = XL.lo,
                                          .len = (size_t)(XL.hi - XL.lo), .dst = base,
                                          .cap = (size_t)up(XL.hi - XL.lo, SALIGN), .tag = (uint64_t)slot};
        L->parts_left = 1;
        bytes = XL.hi - XL.lo;
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
                    .tag = (uint64_t)slot};
                L->parts_left++;
                bytes += pt->len;
            }
    }
    s->st.bytes_read += bytes;
    if (guess)
        s->st.pf_bytes += bytes;
    return nreq;
}

/* Start the reads reqs[from..nreq) (their slots are claimed and their load
 * records set); on failure the slots are dropped. */
static mk_status submit(stream *s, const int *slots, int nslots, size_t nreq) {
    mk_status st = check_files(s);
    double t0 = now_s(); /* io_uring may complete cached reads inside the submit */
    if (st == MK_OK)
        st = mk_reader_submit(s->rd, s->reqs, nreq);
    s->st.io_wait_s += now_s() - t0;
    if (st != MK_OK) {
        for (int i = 0; i < nslots; i++) {
            mk_ecache_drop(s->cache, slots[i]);
            s->ld[slots[i]] = (loading){0};
        }
        return st;
    }
    s->st.reads += nreq;
    return MK_OK;
}

/* Claim slots for as many waiting misses as the cache allows now and read
 * them, all in one batch (the reader sorts by file offset). A miss that
 * finds every slot pinned waits for the engine to release experts (a
 * prefill chunk may use more experts than the cache holds) or for a guess's
 * read to end. Only when nothing can free a slot (no read in flight, no hit
 * left to hand out and release) is that an error: the cache would wait for
 * ever. (Hits of the layer pinning every slot, e.g. a cache filled or warmed
 * with this layer's experts before a chunk that uses more, are handed out
 * first; their release frees the slots the misses then take.) */
static mk_status issue(stream *s) {
    size_t nreq = 0;
    int nclaimed = 0;
    while (s->nwait > 0) {
        int e = s->wait[s->nwait - 1], ol, oe;
        int slot = mk_ecache_claim(s->cache, s->layer, e, &ol, &oe);
        if (slot < 0)
            break;
        s->nwait--;
        s->slot_of[e] = slot;
        s->claimed[nclaimed++] = slot;
        nreq = add_reads(s, slot, s->layer, e, nreq, false);
    }
    if (!nreq)
        return nclaimed || s->nwait == 0 || mk_reader_pending(s->rd) || s->ready_pos < s->nready
                   ? MK_OK
                   : mk_err(MK_E_INTERNAL, "expert cache of %d slots: every slot is in use while layer %d "
                            "waits for %d experts", s->nslots, s->layer, s->nwait);
    return submit(s, s->claimed, nclaimed, nreq);
}

/* Forget the guess pin of slot i (it is unpinned). */
static void pf_forget(stream *s, int slot) {
    for (int i = 0; i < s->npf; i++)
        if (s->pf[i] == slot) {
            s->pf[i] = s->pf[--s->npf];
            break;
        }
    s->ld[slot].pf = s->ld[slot].pf_passed = false;
}

/* Take one finished read (waiting for one when `wait`): *got false when
 * none is pending (or, without wait, none has finished). A failed read of
 * an expert the current layer wants is the error; a failed guess is
 * dropped quietly once all its reads are in. */
static mk_status pump(stream *s, bool wait, bool *got) {
    uint64_t tag;
    bool done;
    double t0 = now_s();
    mk_status st = mk_reader_next(s->rd, wait, &tag, &done);
    s->st.io_wait_s += now_s() - t0;
    *got = done;
    if (!done)
        return MK_OK;
    int slot = (int)tag;
    loading *L = &s->ld[slot];
    if (st != MK_OK && L->wanted) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", mk_err_msg());
        int x = L->e, layer = L->layer;
        return mk_err(st, "expert %d of layer %d: %s", x, layer, msg);
    }
    L->failed |= st != MK_OK;
    if (--L->parts_left > 0)
        return MK_OK;
    if (L->failed) { /* a guess: never handed out, its slot is free again */
        if (L->pf)
            pf_forget(s, slot);
        mk_ecache_drop(s->cache, slot);
        *L = (loading){0};
        s->st.pf_failed++;
        return MK_OK;
    }
    finish_expert(s, slot, &s->m->layers[L->layer].moe.locs[L->e]);
    if (L->wanted) {
        L->wanted = false;
        s->ready[s->nready++] = L->e;
    } else if (L->pf_passed) { /* a wrong guess: an ordinary cached expert from now on */
        mk_ecache_unpin(s->cache, slot);
        pf_forget(s, slot);
    }
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
    s->started = true;
    s->layer = layer;
    s->n = n;
    s->handed = 0;
    s->nready = s->ready_pos = 0;
    s->nwait = 0;
    s->step++;
    mk_status st = MK_OK;
    for (int i = 0; i < n && st == MK_OK; i++) {
        int e = experts[i];
        trace_add(s, layer, e);
        s->st.uses++;
        int slot = mk_ecache_use(s->cache, layer, e);
        /* a guess whose read failed and is still draining: wait it out, then it is a miss */
        while (slot >= 0 && s->ld[slot].failed) {
            bool got;
            st = pump(s, true, &got);
            if (st == MK_OK && !got)
                st = mk_err(MK_E_INTERNAL, "expert store: a failed guess of expert %d of layer %d has no "
                            "read in flight", e, layer);
            if (st != MK_OK)
                break;
            slot = mk_ecache_find(s->cache, layer, e);
        }
        if (st != MK_OK)
            break;
        if (slot < 0) {
            s->wait[s->nwait++] = e;
            continue;
        }
        loading *L = &s->ld[slot];
        if (L->pf) { /* guessed right: the guess's pin becomes this use's */
            s->st.pf_hits++;
            pf_forget(s, slot);
        } else {
            s->st.hits++;
            if (s->fillst[slot]) { /* the fill read it: a miss an empty cache would have had */
                s->st.fill_hits++;
                s->st.fill_used += s->fillst[slot] == 1;
                s->fillst[slot] = 2;
            }
            mk_ecache_pin(s->cache, slot);
        }
        s->slot_of[e] = slot;
        if (L->parts_left > 0)
            L->wanted = true; /* handed out when its reads end */
        else
            s->ready[s->nready++] = e;
    }
    /* guesses for this layer it did not use: unpinned now, or when their reads end */
    for (int i = 0; st == MK_OK && i < s->npf;) {
        int slot = s->pf[i];
        if (s->ld[slot].layer != layer) {
            i++;
        } else if (s->ld[slot].parts_left > 0) {
            s->ld[slot].pf_passed = true;
            i++;
        } else {
            mk_ecache_unpin(s->cache, slot);
            pf_forget(s, slot);
        }
    }
    /* misses are claimed in the announced order: the waiting list is a stack */
    for (int i = 0, j = s->nwait - 1; i < j; i++, j--) {
        int t = s->wait[i];
        s->wait[i] = s->wait[j];
        s->wait[j] = t;
    }
    if (st == MK_OK && (st = issue(s)) != MK_OK)
        st = mk_err_wrap(st, "reading the experts of layer %d", layer);
    if (st != MK_OK) { /* draining may fail again: the first error is the one to report */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", mk_err_msg());
        abandon(s);
        return mk_err(st, "%s", msg);
    }
    return MK_OK;
}

static mk_status st_next(void *ctx, int layer, int *e, const mk_expert **out) {
    stream *s = ctx;
    if (layer != s->layer || s->handed >= s->n)
        return mk_err(MK_E_ARG, "expert store: no announced expert left in layer %d", layer);
    while (s->ready_pos == s->nready) {
        mk_status st = MK_OK;
        if (s->nwait > 0 && (st = issue(s)) != MK_OK) /* slots were released meanwhile */
            st = mk_err_wrap(st, "reading the experts of layer %d", layer);
        bool got = true;
        if (st == MK_OK)
            st = pump(s, true, &got); /* its errors name the expert */
        if (st == MK_OK && !got)
            st = mk_err(MK_E_INTERNAL, "expert store: layer %d: reads ended with experts missing", layer);
        if (st != MK_OK) { /* draining may fail again: the first error is the one to report */
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", mk_err_msg());
            abandon(s);
            return mk_err(st, "%s", msg);
        }
    }
    int x = s->ready[s->ready_pos++];
    s->handed++;
    *e = x;
    *out = &s->views[s->slot_of[x]];
    return MK_OK;
}

/* Whether expert e, just handed out, was loaded into its slot since the
 * slot's views were last handed out (a backend's device copies of anything
 * in the slot are stale then: the slot buffer is the range); the mark is
 * taken. */
static bool st_changed(void *ctx, int layer, int e, const void **base, size_t *len) {
    stream *s = ctx;
    if (layer != s->layer || e < 0 || e >= s->m->cfg.num_experts)
        return false;
    int slot = s->slot_of[e];
    bool was = s->fresh[slot];
    s->fresh[slot] = 0;
    if (was) {
        *base = s->mem + (size_t)slot * s->slot_bytes;
        *len = s->slot_bytes;
    }
    return was;
}

static void st_release(void *ctx, int layer, int e) {
    stream *s = ctx;
    (void)layer;
    mk_ecache_unpin(s->cache, s->slot_of[e]);
}

/* A guess of the experts of a later layer: start reading the ones not
 * cached (header comment). Finished reads of earlier guesses are taken
 * first, without waiting, so their slots are settled. */
static mk_status st_prefetch(void *ctx, int layer, const int *experts, int n) {
    stream *s = ctx;
    const mk_config *c = &s->m->cfg;
    s->started = true;
    if (layer < 0 || layer >= c->num_layers || !s->m->layers[layer].is_moe || layer == s->layer)
        return MK_OK; /* nothing to guess: not an error of the forward */
    size_t nreq = 0;
    int nclaimed = 0;
    for (int i = 0; i < n; i++) {
        int e = experts[i], ol, oe;
        if (e < 0 || e >= c->num_experts || mk_ecache_find(s->cache, layer, e) >= 0)
            continue;
        int slot = mk_ecache_claim(s->cache, layer, e, &ol, &oe);
        if (slot < 0)
            break; /* every slot in use: no room to guess */
        s->claimed[nclaimed++] = slot;
        s->pf[s->npf++] = slot;
        s->st.pf_issued++;
        nreq = add_reads(s, slot, layer, e, nreq, true);
    }
    if (!nreq)
        return MK_OK;
    mk_status st = submit(s, s->claimed, nclaimed, nreq);
    if (st != MK_OK) {
        s->npf -= nclaimed; /* the guesses are the last entries */
        return mk_err_wrap(st, "guessing the experts of layer %d", layer);
    }
    return MK_OK;
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
        MK_TRY(issue(s));
        int slot = s->slot_of[e];
        mk_status st = mk_reader_wait_all(s->rd);
        s->ld[slot] = (loading){0};
        if (st != MK_OK) {
            mk_ecache_drop(s->cache, slot);
            return mk_err_wrap(st, "pinning expert %d of layer %d", e, l);
        }
        finish_expert(s, slot, mk_model_expert_loc(s->m, l, e));
        mk_ecache_pin_forever(s->cache, slot);
        s->st.pinned++;
    }
    s->twarm = s->tn;
    s->st.uses = s->st.hits = 0; /* pins are not uses; their bytes stay counted as read */
    return MK_OK;
}
/* One finished read of the fill: the expert is complete once its last part
 * is in. */
static mk_status fill_take(stream *s) {
    uint64_t tag;
    bool done;
    mk_status st = mk_reader_next(s->rd, true, &tag, &done);
    if (!done)
        return mk_err(MK_E_INTERNAL, "expert cache fill: the reader has no read pending while the fill waits");
    int slot = (int)tag;
    loading *L = &s->ld[slot];
    if (st != MK_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", mk_err_msg());
        return mk_err(st, "expert %d of layer %d: %s", L->e, L->layer, msg);
    }
    if (--L->parts_left > 0)
        return MK_OK;
    finish_expert(s, slot, &s->m->layers[L->layer].moe.locs[L->e]);
    mk_ecache_unpin(s->cache, slot);
    s->step++; /* for the oracle, loaded before the run like a pin */
    trace_add(s, L->layer, L->e);
    *L = (loading){0};
    s->fillst[slot] = 1;
    s->st.filled++;
    return MK_OK;
}

/* The warm fill (header comment; expert_store.h mk_expert_store_fill). */
static mk_status st_fill(void *ctx, const mk_fill_opts *fo) {
    stream *s = ctx;
    const mk_config *c = &s->m->cfg;
    if (s->started)
        return mk_err(MK_E_ARG, "expert cache fill: the cache is in use already (fill it before the first "
                      "token)");
    if (fo->range)
        for (int l = 0; l < c->num_layers; l++)
            if (fo->range[2 * l] < 0 || fo->range[2 * l] > fo->range[2 * l + 1] ||
                fo->range[2 * l + 1] > c->num_experts)
                return mk_err(MK_E_ARG, "expert cache fill: layer %d's range [%d, %d) is not within its %d "
                              "experts", l, (int)fo->range[2 * l], (int)fo->range[2 * l + 1], c->num_experts);
    double t0 = now_s();
    int *pl = NULL, *pe = NULL, n = 0;
    MK_TRY(mk_efill_plan(s->m, s->cache, mk_ecache_free_slots(s->cache), fo, &pl, &pe, &n));
    if (n == 0)
        return MK_OK;
    int *slot = mk_malloc((size_t)n * sizeof *slot), *ord = mk_malloc((size_t)n * sizeof *ord);
    mk_status st = slot && ord ? MK_OK : mk_err(MK_E_NOMEM, "expert cache fill: no memory for %d experts", n);
    if (st == MK_OK)
        st = mk_efill_file_order(s->m, pl, pe, n, ord);
    /* coldest first into the lowest free slots: the first of them to go */
    int claimed = 0; /* slot[n - claimed .. n) */
    for (int i = n - 1; st == MK_OK && i >= 0; i--) {
        int ol, oe, sl = mk_ecache_claim(s->cache, pl[i], pe[i], &ol, &oe);
        if (sl < 0) {
            st = mk_err(MK_E_INTERNAL, "expert cache fill: no free slot for expert %d of layer %d", pe[i], pl[i]);
            break;
        }
        slot[i] = sl;
        s->fillst[sl] = 0;
        claimed++;
        if (ol >= 0) /* the plan counted free slots only */
            st = mk_err(MK_E_INTERNAL, "expert cache fill: expert %d of layer %d took an occupied slot", pe[i],
                        pl[i]);
    }
    uint64_t bytes0 = s->st.bytes_read;
    size_t nreads = 0;
    int sent = 0;
    /* nothing else is in flight before the first acquire: pending reads are the fill's */
    while (st == MK_OK && (sent < n || mk_reader_pending(s->rd) > 0)) {
        /* the next batch while a queue's worth of reads is still pending */
        if (sent < n && mk_reader_pending(s->rd) <= 16) {
            size_t nreq = 0;
            for (int b = 0; sent < n && b < c->num_experts; b++, sent++) {
                int i = ord[sent];
                nreq = add_reads(s, slot[i], pl[i], pe[i], nreq, false);
            }
            st = check_files(s);
            if (st == MK_OK)
                st = mk_reader_submit(s->rd, s->reqs, nreq);
            nreads += st == MK_OK ? nreq : 0;
            continue;
        }
        st = fill_take(s);
    }
    /* the fill's own counters: bytes_read and reads stay the run's */
    s->st.fill_bytes += s->st.bytes_read - bytes0;
    s->st.bytes_read = bytes0;
    s->st.fill_reads += nreads;
    if (st != MK_OK) { /* drain; what is not complete goes (draining may fail again: keep the first) */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", mk_err_msg());
        mk_reader_wait_all(s->rd);
        for (int i = n - 1; i >= n - claimed; i--)
            if (s->fillst[slot[i]] != 1) {
                mk_ecache_drop(s->cache, slot[i]);
                s->ld[slot[i]] = (loading){0};
            }
        st = mk_err(st, "%s", msg);
    }
    s->twarm = s->tn;
    s->st.fill_s += now_s() - t0;
    free(slot);
    free(ord);
    free(pl);
    free(pe);
    return st;
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

/* Between tokens every announced expert was handed out, so what is still
 * in flight is guesses: a failed one is dropped (and counted) by pump. */
static mk_status st_settle(void *ctx) {
    stream *s = ctx;
    if (s->handed < s->n)
        return mk_err(MK_E_ARG, "expert store: settle while %d experts of layer %d are not taken",
                      s->n - s->handed, s->layer);
    mk_status st = MK_OK;
    while (s->rd && mk_reader_pending(s->rd) > 0) {
        bool got;
        mk_status r = pump(s, true, &got);
        if (st == MK_OK)
            st = r; /* the first error is the one to report; drain the rest */
        if (!got)
            break;
    }
    return st;
}

static void st_free(void *ctx) {
    stream *s = ctx;
    if (!s)
        return;
    if (s->rd)
        mk_reader_destroy(s->rd);
    mk_ecache_free(s->cache);
    free(s->mem);
    free(s->tbuf);
    free(s->views);
    free(s->file_of);
    free(s->ids);
    free(s->ready);
    free(s->wait);
    free(s->ld);
    free(s->pf);
    free(s->claimed);
    free(s->reqs);
    free(s->slot_of);
    free(s->fillst);
    free(s->fresh);
    free(s->tkeys);
    free(s->tsteps);
    free(s);
}

static const mk_expert_store_i g_stream = {
    .name = "stream",
    .acquire = st_acquire,
    .next = st_next,
    .release = st_release,
    .prefetch = st_prefetch,
    .fill = st_fill,
    .free = st_free,
    .stats = st_stats,
    .changed = st_changed,
    .settle = st_settle,
};

mk_status mk_expert_store_stream(const mk_model *m, const mk_stream_opts *o, mk_expert_store **out) {
    *out = NULL;
    const mk_config *c = &m->cfg;
    if (!m->stream_experts)
        return mk_err(MK_E_ARG, "expert store: the model was not opened for streaming experts "
                      "(mk_model_opts.stream_experts)");
    /* every layout the loader knows gives its routed experts file
     * locations when streaming; a layer without them (model-owned copies
     * of a layout added without a location) cannot be streamed */
    uint64_t tmax = 0; /* the largest transposed part: the transpose buffer */
    for (int l = 0; l < c->num_layers; l++) {
        if (!m->layers[l].is_moe)
            continue;
        if (!m->layers[l].moe.locs)
            return mk_err(MK_E_UNSUPPORTED, "expert store: %s: layer %d's experts have no file locations "
                          "(model-owned copies made at load) and cannot be streamed; convert it to MLX",
                          mk_ckpt_dir(m->ck), l);
        for (int e = 0; e < c->num_experts; e++) {
            const mk_expert_loc *x = &m->layers[l].moe.locs[e];
            const mk_wloc *w[3] = {&x->gate, &x->up, &x->down};
            for (int p = 0; p < 3; p++) {
                if (!w[p]->transposed)
                    continue;
                /* only plain float weights are transposed after the read */
                mk_wfmt f = w[p]->q.fmt;
                uint64_t es = f == MK_WF_F32 ? 4 : 2, len = w[p]->part[MK_SP_WEIGHT].len;
                if ((f != MK_WF_BF16 && f != MK_WF_F16 && f != MK_WF_F32) || w[p]->ct ||
                    w[p]->part[MK_SP_SCALES].len || w[p]->part[MK_SP_BIASES].len || w[p]->part[MK_SP_ZP].len ||
                    len != (uint64_t)w[p]->q.rows * (uint64_t)w[p]->q.cols * es)
                    return mk_err(MK_E_UNSUPPORTED, "expert store: %s: layer %d expert %d: a transposed "
                                  "projection (weight format %d) of %llu bytes for [%lld, %lld] cannot be "
                                  "streamed (only plain BF16, F16 or F32 weights are transposed after the read)",
                                  mk_ckpt_dir(m->ck), l, e, (int)f, (unsigned long long)len,
                                  (long long)w[p]->q.rows, (long long)w[p]->q.cols);
                tmax = len > tmax ? len : tmax;
            }
        }
    }
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
    s->tbuf = tmax ? mk_malloc((size_t)tmax) : NULL;
    s->file_of = mk_calloc(s->nshards, sizeof *s->file_of);
    s->ids = mk_calloc(s->nshards, sizeof *s->ids);
    s->ready = mk_malloc((size_t)E * sizeof *s->ready);
    s->wait = mk_malloc((size_t)E * sizeof *s->wait);
    s->ld = mk_calloc((size_t)s->nslots, sizeof *s->ld);
    s->pf = mk_malloc((size_t)s->nslots * sizeof *s->pf);
    s->claimed = mk_malloc((size_t)E * sizeof *s->claimed);
    s->reqs = mk_malloc((size_t)E * 3 * MK_SP_N * sizeof *s->reqs);
    s->slot_of = mk_malloc((size_t)E * sizeof *s->slot_of);
    s->fillst = mk_calloc((size_t)s->nslots, 1);
    s->fresh = mk_calloc((size_t)s->nslots, 1);
    mk_status st = MK_OK;
    if (!s->mem || !s->views || (tmax && !s->tbuf) || !s->file_of || !s->ids || !s->ready || !s->wait || !s->ld || !s->pf || !s->claimed || !s->reqs || !s->slot_of || !s->fillst ||
        !s->fresh)
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
