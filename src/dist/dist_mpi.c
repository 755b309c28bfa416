/* Expert parallelism and layer pipelines over MPI (include/moekit/dist.h),
 * alone or combined (stages of several ranks splitting their experts):
 * the partition hook the engine calls per MoE layer and per forward call,
 * the pipeline hook it calls per chunk (hidden states on, logits back),
 * the lead's announcements and the workers' replay loop.
 *
 * Transport: point-to-point nonblocking sends and receives on
 * MPI_COMM_WORLD (errors returned, not fatal), polled against a deadline,
 * so a dead or stalled peer is named instead of waited on for ever. One
 * exchange per MoE layer per chunk (a batched decode step over several
 * sequences is one chunk of one row each): each rank sends its experts' pair rows
 * (packed in expert order) to every other rank and receives theirs, which
 * is an allgather (among the stage's ranks when both placements combine);
 * it is written as N-1 receives because only a receive of its own says
 * which peer is missing. Rows are copied into place, never
 * summed: the engine's combine adds them in the single-process order.
 *
 * Messages: a 72-byte header (magic, kind, sender, layer, step, sequence,
 * position, payload bytes, the routing-decisions hash, the payload's xxh3,
 * the header's own xxh3) then the payload. Commands (rank 0 -> workers:
 * setup; step: a sequence (serve's slot), its ids; batch: a batched decode
 * step's sequences, ids and positions; finish) and exchanges use two
 * tags; MPI keeps each pair's
 * messages of one tag in order, and the sequence number catches a
 * desynchronised rank. One thread at a time calls MPI (serialized: the
 * command's thread, or serve's scheduler thread while it runs steps). */
#include <mpi.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/alloc.h"
#include "moekit/dist.h"

#define TAG_CMD 1
#define TAG_XCHG 2
#define TAG_HIDDEN 3 /* pipeline: stage r -> r+1 */
#define TAG_LOGITS 4 /* pipeline: the last stage -> rank 0 */
#define DIST_MAGIC 0x31444b4du /* "MKD1" */

enum { K_SETUP = 1, K_STEP = 2, K_FINISH = 3, K_XCHG = 4, K_HIDDEN = 5, K_LOGITS = 6, K_BATCH = 7 };

/* The most sequences (serve's slots) a job drives: serve's --parallel bound. */
#define DIST_MAX_SLOTS 256

/* One sequence's hooks' user: the context and which sequence (the lead's
 * steps name it, so each worker replays them on its engine of that
 * sequence). */
typedef struct dist_slot {
    struct mk_dist *d;
    int slot;
} dist_slot;

typedef struct dist_hdr {
    uint32_t magic, kind;
    int32_t rank, layer;
    int64_t step;
    uint64_t seq;
    int64_t pos;
    uint64_t nbytes;
    uint64_t route; /* XCHG: xxh3 of the routing decisions; SETUP: the model fingerprint; STEP, BATCH:
                       the logits mode (pipeline: what the last stage sends back) */
    uint64_t sum;   /* xxh3 of the payload */
    uint64_t hsum;  /* xxh3 of the header up to here */
} dist_hdr;

struct mk_dist {
    int rank, size;
    mk_dist_opts o;
    int32_t E, L;  /* routed experts per layer, layers */
    int32_t *cuts; /* NULL: by count; else [ncuts = L*(size+1)]: layer l's rank q owns
                      [cuts[l*(size+1)+q], cuts[l*(size+1)+q+1]) (mk_dist_set_cuts, or rank 0's setup) */
    int64_t ncuts;
    int64_t step;      /* forward calls so far (the current one, counted from 1) */
    int64_t pos;       /* its position */
    uint64_t seq;      /* exchanges so far */
    bool finished;     /* lead: finish sent */
    char *sbuf, *rbuf; /* exchange buffers, grown on demand */
    size_t scap, rcap;
    MPI_Request *rq; /* [2*size] receives, then sends */
    /* pipeline (NULL stages: expert mode) */
    int32_t S;                /* stages (0: expert mode) */
    int32_t *stages;          /* [S+1]: stage s holds layers [stages[s], stages[s+1]) */
    int32_t *sranks;          /* [S+1]: stage s is ranks [sranks[s], sranks[s+1]) (pipeline: one each) */
    bool both;                /* --mpi-mode both: a stage's ranks split its routed experts */
    int st;                   /* this rank's stage */
    int g0, gn;               /* the ranks sharing this rank's experts: [g0, g0+gn) (expert mode: all) */
    int32_t NL;               /* the model's layers */
    int mode;                 /* the step's logits mode (lead: sent with the step) */
    int64_t ntok;             /* tokens in the current step (--stats: 1 is decode) */
    uint64_t hin, hout, lgs;  /* hidden states received, sent; logits messages */
    char *pbuf;               /* pipeline messages, grown on demand */
    size_t pcap;
    /* the sequences (serve's slots): each one's hooks, their user naming it */
    int nslots;
    dist_slot *slots;     /* [nslots] */
    mk_moe_part *parts;   /* [nslots] (mk_dist_part) */
    mk_layer_pipe *pipes; /* [nslots] (mk_dist_pipe) */
    bool batch;           /* the current step is a batched decode step (--stats: decode) */
    /* --stats: [0] every exchange, [1] those of decode steps (one token, or a batched step) */
    double xchg_s[2];            /* seconds inside exchanges (waits included) */
    uint64_t xchg_n[2], xchg_bytes[2]; /* exchanges, payload bytes sent */
};


static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Count one exchange of a step of `ntok` tokens that began at t0. */
static void account(mk_dist *d, double t0, int64_t ntok, uint64_t bytes) {
    double dt = now_s() - t0;
    for (int i = 0; i < (ntok == 1 || d->batch ? 2 : 1); i++) {
        d->xchg_s[i] += dt;
        d->xchg_n[i]++;
        d->xchg_bytes[i] += bytes;
    }
}

/* A short sleep between polls: the ranks may share cores with each other
 * (one host, tests), so a tight spin would slow the peer it waits for. */
static void backoff(int *spins) {
    if (*spins < 64) {
        (*spins)++;
        return;
    }
    struct timespec ts = {0, *spins < 1000 ? 20000 : 200000};
    (*spins)++;
    nanosleep(&ts, NULL);
}

_Noreturn void mk_dist_abort(mk_dist *d, int code, const char *msg) {
    fprintf(stderr, "moekit: rank %d of %d: %s; stopping every rank\n", d ? d->rank : -1, d ? d->size : 0,
            msg);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    _exit(code); /* MPI_Abort does not return; in case it does */
}

#define FAIL(d, ...)                                                                                         \
    do {                                                                                                     \
        char fail_msg_[1024];                                                                                \
        snprintf(fail_msg_, sizeof fail_msg_, __VA_ARGS__);                                                  \
        mk_dist_abort((d), 1, fail_msg_);                                                                    \
    } while (0)

static const char *mpi_errstr(int rc, char *buf) {
    int len = 0;
    if (MPI_Error_string(rc, buf, &len) != MPI_SUCCESS)
        snprintf(buf, MPI_MAX_ERROR_STRING, "MPI error %d", rc);
    return buf;
}

static void hdr_seal(dist_hdr *h, const void *payload) {
    h->magic = DIST_MAGIC;
    h->sum = XXH3_64bits(payload, h->nbytes);
    h->hsum = XXH3_64bits(h, offsetof(dist_hdr, hsum));
}

/* Check a received message: header intact, from `from`, of `kind`, its
 * payload matching its checksum and the `got` bytes that arrived. `what`
 * names the step for messages ("layer 3, step 7"). */
static void hdr_check(mk_dist *d, const dist_hdr *h, const void *payload, size_t got, int from, uint32_t kind,
                      const char *what) {
    if (got < sizeof *h)
        FAIL(d, "%s: a %zu-byte message from rank %d, shorter than a header", what, got, from);
    uint64_t hs = XXH3_64bits(h, offsetof(dist_hdr, hsum));
    if (h->magic != DIST_MAGIC || hs != h->hsum)
        FAIL(d,
             "%s: the message header from rank %d fails its checksum (xxh3 %016llx, header says %016llx): "
             "corrupted in transit",
             what, from, (unsigned long long)hs, (unsigned long long)h->hsum);
    if (h->rank != from || h->kind != kind)
        FAIL(d, "%s: expected a message of kind %u from rank %d, found kind %u from rank %d", what, kind,
             from, h->kind, h->rank);
    if (h->nbytes != got - sizeof *h)
        FAIL(d, "%s: rank %d's header says %llu payload bytes, %zu arrived", what, from,
             (unsigned long long)h->nbytes, got - sizeof *h);
    uint64_t s = XXH3_64bits(payload, h->nbytes);
    if (s != h->sum)
        FAIL(d,
             "%s: the payload from rank %d fails its checksum (xxh3 %016llx, sender's %016llx): corrupted "
             "in transit",
             what, from, (unsigned long long)s, (unsigned long long)h->sum);
}

static void fault_at(mk_dist *d, int layer, char *payload, size_t nbytes) {
    const mk_dist_fault *f = &d->o.fault;
    if (f->kind == MK_DIST_FAULT_NONE || f->rank != d->rank || f->layer != layer || f->step != d->step)
        return;
    switch (f->kind) {
    case MK_DIST_FAULT_FLIP:
        if (nbytes)
            payload[nbytes / 2] ^= 0x10; /* after checksumming: the receivers must catch it */
        fprintf(stderr, "moekit: rank %d: test hook: flipped a byte of layer %d's payload at step %lld\n",
                d->rank, layer, (long long)d->step);
        break;
    case MK_DIST_FAULT_STALL:
        fprintf(stderr, "moekit: rank %d: test hook: stalling at layer %d, step %lld\n", d->rank, layer,
                (long long)d->step);
        fflush(stderr);
        for (;;)
            pause();
    case MK_DIST_FAULT_KILL:
        fprintf(stderr, "moekit: rank %d: test hook: killed at layer %d, step %lld\n", d->rank, layer,
                (long long)d->step);
        fflush(stderr);
        raise(SIGKILL);
        break;
    default: break;
    }
}

static bool grow(char **buf, size_t *cap, size_t need) {
    if (need <= *cap)
        return true;
    char *p = mk_realloc(*buf, need);
    if (!p)
        return false;
    *buf = p;
    *cap = need;
    return true;
}

/* Where a step's message belongs, for messages: "layer L, step S (position
 * P)", or for a batched decode step "(a batch of N sequences, the first at
 * position P)". */
static void step_what(const mk_dist *d, char *buf, size_t cap, int layer, const char *tail, int64_t pos) {
    if (d->batch)
        snprintf(buf, cap, "layer %d%s, step %lld (a batch of %lld sequences, the first at position %lld)",
                 layer, tail, (long long)d->step, (long long)d->ntok, (long long)pos);
    else
        snprintf(buf, cap, "layer %d%s, step %lld (position %lld)", layer, tail, (long long)d->step,
                 (long long)pos);
}

/* ---- the partition hook -------------------------------------------------- */

/* Rank q's experts of `layer`: [*lo, *hi). */
static void rank_range(const mk_dist *d, int layer, int q, int32_t *lo, int32_t *hi) {
    q -= d->g0; /* the place among the ranks sharing the layer (both modes: the stage's) */
    if (d->cuts && layer >= 0 && layer < d->L) {
        const int32_t *c = d->cuts + (int64_t)layer * (d->size + 1);
        *lo = c[q];
        *hi = c[q + 1];
        return;
    }
    *lo = (int32_t)((int64_t)q * d->E / d->gn);
    *hi = (int32_t)((int64_t)(q + 1) * d->E / d->gn);
}

static void part_range(void *user, int layer, int32_t *lo, int32_t *hi) {
    const mk_dist *d = ((const dist_slot *)user)->d;
    rank_range(d, layer, d->rank, lo, hi);
}

/* Pair rows of rank q's experts: [*beg, *end) of the expert-sorted order. */
static void rank_rows(const mk_dist *d, const mk_moe_xchg *x, int q, int64_t *beg, int64_t *end) {
    int32_t lo, hi;
    rank_range(d, x->layer, q, &lo, &hi);
    *beg = lo ? x->ends[lo - 1] : 0;
    *end = hi ? x->ends[hi - 1] : 0;
}

static mk_status part_exchange(void *user, const mk_moe_xchg *x) {
    mk_dist *d = ((dist_slot *)user)->d;
    /* the exchange runs among the ranks sharing the layer's experts, [q0, q1): every rank in expert
     * mode, the stage's ranks in both modes (N only sizes the request array) */
    int N = d->size, r = d->rank, q0 = d->g0, q1 = d->g0 + d->gn;
    d->seq++;
    if (d->gn == 1) { /* a stage of one rank (both modes) exchanges nothing; the kill and stall hooks fire */
        if (d->o.fault.kind != MK_DIST_FAULT_FLIP)
            fault_at(d, x->layer, NULL, 0);
        return MK_OK;
    }
    double t0 = now_s();
    char what[128];
    step_what(d, what, sizeof what, x->layer, "", x->pos);
    size_t row = (size_t)x->H * sizeof(float), hs = sizeof(dist_hdr);
    int64_t npairs = (int64_t)x->n * x->k;
    uint64_t route = XXH3_64bits(x->top_idx, (size_t)npairs * sizeof(int32_t));
    /* this rank's rows, packed in expert order */
    int64_t b, e;
    rank_rows(d, x, r, &b, &e);
    size_t sbytes = hs + (size_t)(e - b) * row;
    /* every other rank's block, at its own offset (exact sizes: routing is replicated) */
    size_t rbytes = 0;
    for (int q = q0; q < q1; q++)
        if (q != r) {
            int64_t qb, qe;
            rank_rows(d, x, q, &qb, &qe);
            rbytes += hs + (size_t)(qe - qb) * row;
        }
    if (!grow(&d->sbuf, &d->scap, sbytes) || !grow(&d->rbuf, &d->rcap, rbytes))
        return mk_err(MK_E_NOMEM, "out of memory for the expert exchange buffers (%zu + %zu bytes)", sbytes,
                      rbytes);
    char *pay = d->sbuf + hs;
    for (int64_t i = b; i < e; i++)
        memcpy(pay + (size_t)(i - b) * row, x->pairs + (size_t)x->order[i] * (size_t)x->H, row);
    dist_hdr h = {.kind = K_XCHG,
                  .rank = r,
                  .layer = x->layer,
                  .step = d->step,
                  .seq = d->seq,
                  .pos = x->pos,
                  .nbytes = (uint64_t)(e - b) * row,
                  .route = route};
    hdr_seal(&h, pay);
    memcpy(d->sbuf, &h, hs);
    fault_at(d, x->layer, pay, h.nbytes);
    /* post every receive, then every send */
    size_t off = 0;
    size_t roff[64];
    int nreq = 0;
    MPI_Request *rq = d->rq;
    for (int i = 0; i < 2 * N; i++)
        rq[i] = MPI_REQUEST_NULL;
    for (int q = q0; q < q1; q++) {
        if (q == r)
            continue;
        int64_t qb, qe;
        rank_rows(d, x, q, &qb, &qe);
        size_t qbytes = hs + (size_t)(qe - qb) * row;
        if (q < 64)
            roff[q] = off;
        if (qbytes > (size_t)INT32_MAX || sbytes > (size_t)INT32_MAX)
            return mk_err(MK_E_UNSUPPORTED,
                          "%s: an exchange of %zu bytes is beyond one MPI message; use a "
                          "smaller --prefill-chunk",
                          what, qbytes > sbytes ? qbytes : sbytes);
        int rc = MPI_Irecv(d->rbuf + off, (int)qbytes, MPI_BYTE, q, TAG_XCHG, MPI_COMM_WORLD, &rq[q]);
        char es[MPI_MAX_ERROR_STRING];
        if (rc != MPI_SUCCESS)
            FAIL(d, "%s: posting the receive from rank %d failed: %s", what, q, mpi_errstr(rc, es));
        off += qbytes;
        nreq++;
    }
    for (int q = q0; q < q1; q++) {
        if (q == r)
            continue;
        int rc = MPI_Isend(d->sbuf, (int)sbytes, MPI_BYTE, q, TAG_XCHG, MPI_COMM_WORLD, &rq[N + q]);
        char es[MPI_MAX_ERROR_STRING];
        if (rc != MPI_SUCCESS)
            FAIL(d, "%s: sending to rank %d failed: %s", what, q, mpi_errstr(rc, es));
    }
    /* poll until every receive and send completed, or the deadline */
    double deadline = now_s() + d->o.timeout_s;
    int left = 2 * nreq, spins = 0;
    while (left > 0) {
        for (int i = 0; i < 2 * N; i++) {
            if (rq[i] == MPI_REQUEST_NULL)
                continue;
            int q = i % N, done = 0;
            MPI_Status s;
            char es[MPI_MAX_ERROR_STRING];
            int rc = MPI_Test(&rq[i], &done, &s);
            if (rc != MPI_SUCCESS) {
                int ec = rc == MPI_ERR_IN_STATUS ? s.MPI_ERROR : rc;
                FAIL(d, "%s: %s rank %d failed: %s%s", what, i < N ? "receiving from" : "sending to", q,
                     mpi_errstr(ec, es),
                     ec == MPI_ERR_TRUNCATE ? " (a longer payload than this rank's routing gives: the ranks "
                                              "disagree on the step's routing)"
                                            : "");
            }
            if (!done)
                continue;
            left--;
            if (i >= N)
                continue;
            int got = 0;
            MPI_Get_count(&s, MPI_BYTE, &got);
            char *blk = d->rbuf + roff[q];
            dist_hdr qh;
            memcpy(&qh, blk, hs < (size_t)got ? hs : (size_t)got);
            hdr_check(d, &qh, blk + hs, (size_t)got, q, K_XCHG, what);
            if (qh.seq != d->seq || qh.layer != x->layer || qh.step != d->step)
                FAIL(d,
                     "%s: rank %d is at layer %d, step %lld, exchange %llu, this rank at exchange %llu: the "
                     "ranks are out of step",
                     what, q, qh.layer, (long long)qh.step, (unsigned long long)qh.seq,
                     (unsigned long long)d->seq);
            if (qh.route != route)
                FAIL(d,
                     "%s: rank %d routed the step's tokens differently (decisions xxh3 %016llx, here "
                     "%016llx): the replicas diverged (different binaries, kernels or model files?)",
                     what, q, (unsigned long long)qh.route, (unsigned long long)route);
            int64_t qb, qe;
            rank_rows(d, x, q, &qb, &qe);
            for (int64_t j = qb; j < qe; j++)
                memcpy(x->pairs + (size_t)x->order[j] * (size_t)x->H, blk + hs + (size_t)(j - qb) * row, row);
        }
        if (left == 0)
            break;
        if (now_s() > deadline) {
            for (int i = 0; i < 2 * N; i++)
                if (rq[i] != MPI_REQUEST_NULL)
                    FAIL(d,
                         "%s: %s rank %d did not complete within %.0f s (--mpi-timeout): rank %d is dead, "
                         "stalled or unreachable",
                         what, i < N ? "the payload from" : "the payload to", i % N, d->o.timeout_s, i % N);
        }
        backoff(&spins);
    }
    account(d, t0, x->n, (uint64_t)(d->gn - 1) * h.nbytes);
    return MK_OK;
}

/* Send a command from the lead to every worker and wait for the sends. */
static void send_cmd(mk_dist *d, uint32_t kind, const void *payload, size_t nbytes, const char *what) {
    size_t hs = sizeof(dist_hdr), tot = hs + nbytes;
    if (!grow(&d->sbuf, &d->scap, tot) || tot > (size_t)INT32_MAX)
        FAIL(d, "%s: no room for a %zu-byte command", what, tot);
    dist_hdr h = {.kind = kind,
                  .rank = d->rank,
                  .layer = -1,
                  .step = d->step,
                  .seq = d->seq,
                  .pos = d->pos,
                  .nbytes = nbytes,
                  .route = 0};
    if (kind == K_SETUP)
        memcpy(&h.route, (const char *)payload + 3 * sizeof(int64_t), sizeof h.route);
    if (kind == K_STEP || kind == K_BATCH)
        h.route = (uint64_t)d->mode;
    if (nbytes)
        memcpy(d->sbuf + hs, payload, nbytes);
    hdr_seal(&h, d->sbuf + hs);
    memcpy(d->sbuf, &h, hs);
    MPI_Request *rq = d->rq;
    for (int q = 1; q < d->size; q++) {
        char es[MPI_MAX_ERROR_STRING];
        int rc = MPI_Isend(d->sbuf, (int)tot, MPI_BYTE, q, TAG_CMD, MPI_COMM_WORLD, &rq[q]);
        if (rc != MPI_SUCCESS)
            FAIL(d, "%s: sending to rank %d failed: %s", what, q, mpi_errstr(rc, es));
    }
    double deadline = now_s() + d->o.timeout_s;
    int spins = 0;
    for (int q = 1; q < d->size; q++) {
        for (;;) {
            int done = 0;
            char es[MPI_MAX_ERROR_STRING];
            int rc = MPI_Test(&rq[q], &done, MPI_STATUS_IGNORE);
            if (rc != MPI_SUCCESS)
                FAIL(d, "%s: sending to rank %d failed: %s", what, q, mpi_errstr(rc, es));
            if (done)
                break;
            if (now_s() > deadline)
                FAIL(d,
                     "%s: rank %d did not take the lead's command within %.0f s (--mpi-timeout): rank %d is "
                     "dead, stalled or unreachable",
                     what, q, d->o.timeout_s, q);
            backoff(&spins);
        }
    }
}

/* Lead: announce a forward call of sequence `slot` (the step's payload: the
 * slot, then the ids). */
static mk_status announce_step(mk_dist *d, int slot, const int32_t *ids, int64_t n, int64_t pos, int mode) {
    d->mode = mode;
    d->step++;
    d->pos = pos;
    d->ntok = n;
    d->batch = false;
    if (d->size == 1)
        return MK_OK;
    char what[80];
    snprintf(what, sizeof what, "step %lld (sequence %d, position %lld)", (long long)d->step, slot,
             (long long)pos);
    size_t nb = sizeof(int32_t) * (size_t)(n + 1);
    int32_t *p = mk_malloc(nb);
    if (!p)
        return mk_err(MK_E_NOMEM, "%s: out of memory for the step's %lld ids", what, (long long)n);
    p[0] = slot;
    memcpy(p + 1, ids, (size_t)n * sizeof(int32_t));
    send_cmd(d, K_STEP, p, nb, what);
    free(p);
    return MK_OK;
}

/* Lead: announce a batched decode step (the payload: n, then the n slots,
 * the n ids, the n positions). */
static mk_status announce_batch(mk_dist *d, void *const *users, int n, const int32_t *ids, const int64_t *pos,
                                int mode) {
    d->mode = mode;
    d->step++;
    d->pos = pos[0];
    d->ntok = n;
    d->batch = true;
    if (d->size == 1)
        return MK_OK;
    char what[80];
    snprintf(what, sizeof what, "step %lld (a batch of %d sequences)", (long long)d->step, n);
    size_t nb = sizeof(int32_t) * (size_t)(1 + 2 * n) + sizeof(int64_t) * (size_t)n;
    char *p = mk_malloc(nb);
    if (!p)
        return mk_err(MK_E_NOMEM, "%s: out of memory for the step's command", what);
    int32_t hd = n;
    memcpy(p, &hd, sizeof hd);
    for (int i = 0; i < n; i++) {
        int32_t sl = ((const dist_slot *)users[i])->slot;
        memcpy(p + sizeof(int32_t) * (size_t)(1 + i), &sl, sizeof sl);
    }
    memcpy(p + sizeof(int32_t) * (size_t)(1 + n), ids, sizeof(int32_t) * (size_t)n);
    memcpy(p + sizeof(int32_t) * (size_t)(1 + 2 * n), pos, sizeof(int64_t) * (size_t)n);
    send_cmd(d, K_BATCH, p, nb, what);
    free(p);
    return MK_OK;
}

static mk_status part_step(void *user, const int32_t *ids, int64_t n, int64_t pos) {
    const dist_slot *u = user;
    /* expert mode: the workers compute no logits */
    return announce_step(u->d, u->slot, ids, n, pos, MK_LOGITS_NONE);
}

static mk_status part_step_batch(void *const *users, int n, const int32_t *ids, const int64_t *pos) {
    return announce_batch(((const dist_slot *)users[0])->d, users, n, ids, pos, MK_LOGITS_NONE);
}

/* Worker: the lead's next command (any kind), waiting at most the idle
 * timeout. The payload stays in d->rbuf after the header; *h its header. */
static void recv_cmd(mk_dist *d, dist_hdr *h, const char *what) {
    double deadline = now_s() + d->o.idle_timeout_s;
    int spins = 0;
    MPI_Status s;
    for (;;) {
        int flag = 0;
        char es[MPI_MAX_ERROR_STRING];
        int rc = MPI_Iprobe(0, TAG_CMD, MPI_COMM_WORLD, &flag, &s);
        if (rc != MPI_SUCCESS)
            FAIL(d, "%s: waiting for rank 0 failed: %s", what, mpi_errstr(rc, es));
        if (flag)
            break;
        if (now_s() > deadline)
            FAIL(d, "%s: no command from rank 0 within %.0f s: rank 0 is dead, stalled or unreachable", what,
                 d->o.idle_timeout_s);
        struct timespec ts = {0, spins++ < 1000 ? 20000 : 1000000}; /* idle: sleep longer */
        nanosleep(&ts, NULL);
    }
    int got = 0;
    MPI_Get_count(&s, MPI_BYTE, &got);
    if (!grow(&d->rbuf, &d->rcap, (size_t)got > sizeof *h ? (size_t)got : sizeof *h))
        FAIL(d, "%s: no memory for rank 0's %d-byte command", what, got);
    char es[MPI_MAX_ERROR_STRING];
    int rc = MPI_Recv(d->rbuf, got, MPI_BYTE, 0, TAG_CMD, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS)
        FAIL(d, "%s: receiving rank 0's command failed: %s", what, mpi_errstr(rc, es));
    memcpy(h, d->rbuf, (size_t)got < sizeof *h ? (size_t)got : sizeof *h);
    hdr_check(d, h, d->rbuf + sizeof *h, (size_t)got, 0,
              h->kind == K_FINISH || h->kind == K_SETUP || h->kind == K_BATCH ? h->kind : K_STEP, what);
}

/* ---- the pipeline hook ------------------------------------------------------ */

/* Send one pipeline message (kind, the layer it belongs to) to ranks
 * [to, to + nto) (the next stage: each of its ranks runs the stage's
 * layers on the same residual stream) and wait until it left, within the
 * timeout. */
static void pipe_send(mk_dist *d, int to, int nto, int tag, uint32_t kind, int layer, uint64_t seq, int64_t pos,
                      int64_t ntok, const void *payload, size_t nbytes, const char *what) {
    double t0 = now_s();
    size_t hs = sizeof(dist_hdr), tot = hs + nbytes;
    if (!grow(&d->pbuf, &d->pcap, tot) || tot > (size_t)INT32_MAX)
        FAIL(d, "%s: no room for a %zu-byte message to rank %d (use a smaller --prefill-chunk)", what, tot, to);
    dist_hdr h = {.kind = kind, .rank = d->rank, .layer = layer, .step = d->step, .seq = seq, .pos = pos,
                  .nbytes = nbytes};
    memcpy(d->pbuf + hs, payload, nbytes);
    hdr_seal(&h, d->pbuf + hs);
    memcpy(d->pbuf, &h, hs);
    fault_at(d, layer, d->pbuf + hs, nbytes);
    MPI_Request *rq = d->rq; /* [2*size]: no exchange is in flight during a stage's hand-over */
    char es[MPI_MAX_ERROR_STRING];
    for (int i = 0; i < nto; i++) {
        int rc = MPI_Isend(d->pbuf, (int)tot, MPI_BYTE, to + i, tag, MPI_COMM_WORLD, &rq[i]);
        if (rc != MPI_SUCCESS)
            FAIL(d, "%s: sending to rank %d failed: %s", what, to + i, mpi_errstr(rc, es));
    }
    double deadline = now_s() + d->o.timeout_s;
    int spins = 0;
    for (int i = 0; i < nto; i++) {
        for (;;) {
            int done = 0;
            int rc = MPI_Test(&rq[i], &done, MPI_STATUS_IGNORE);
            if (rc != MPI_SUCCESS)
                FAIL(d, "%s: sending to rank %d failed: %s", what, to + i, mpi_errstr(rc, es));
            if (done)
                break;
            if (now_s() > deadline)
                FAIL(d,
                     "%s: the payload to rank %d did not complete within %.0f s (--mpi-timeout): rank %d is "
                     "dead, stalled or unreachable",
                     what, to + i, d->o.timeout_s, to + i);
            backoff(&spins);
        }
    }
    account(d, t0, ntok, (uint64_t)nto * nbytes);
}

/* How long a rank of stage s waits for the stage before it (s == S: the
 * lead for the logits), in timeouts: one per stage before it, two for a
 * stage of several ranks (its own exchange deadline runs after its wait
 * for its predecessor), so the rank next to a failure gives up first and
 * names it: a stage's peer, else the next stage. */
static double stage_wait(const mk_dist *d, int s) {
    double w = 0;
    for (int j = 0; j < s; j++)
        w += d->sranks[j + 1] - d->sranks[j] > 1 ? 2 : 1;
    return w * d->o.timeout_s;
}

/* Receive one pipeline message from rank `from` (of `kind`, for `layer`,
 * number `seq`, position pos, `want` payload bytes) within `wait_s`
 * seconds; returns its checked payload (in d->pbuf). */
static const char *pipe_recv(mk_dist *d, int from, int tag, uint32_t kind, int layer, uint64_t seq, int64_t pos,
                             int64_t ntok, size_t want, double wait_s, const char *what) {
    double t0 = now_s(), deadline = t0 + wait_s;
    int spins = 0;
    MPI_Status s;
    char es[MPI_MAX_ERROR_STRING];
    for (;;) {
        int flag = 0;
        int rc = MPI_Iprobe(from, tag, MPI_COMM_WORLD, &flag, &s);
        if (rc != MPI_SUCCESS)
            FAIL(d, "%s: receiving from rank %d failed: %s", what, from, mpi_errstr(rc, es));
        if (flag)
            break;
        if (now_s() > deadline)
            FAIL(d,
                 "%s: the payload from rank %d did not complete within %.0f s (--mpi-timeout, times the "
                 "stages it waits on): rank %d or a rank before it is dead, stalled or unreachable",
                 what, from, wait_s, from);
        backoff(&spins);
    }
    int got = 0;
    MPI_Get_count(&s, MPI_BYTE, &got);
    size_t hs = sizeof(dist_hdr);
    if (!grow(&d->pbuf, &d->pcap, (size_t)got > hs ? (size_t)got : hs))
        FAIL(d, "%s: no memory for rank %d's %d-byte message", what, from, got);
    int rc = MPI_Recv(d->pbuf, got, MPI_BYTE, from, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS)
        FAIL(d, "%s: receiving from rank %d failed: %s", what, from, mpi_errstr(rc, es));
    dist_hdr h;
    memset(&h, 0, sizeof h);
    memcpy(&h, d->pbuf, (size_t)got < hs ? (size_t)got : hs);
    hdr_check(d, &h, d->pbuf + hs, (size_t)got, from, kind, what);
    if (h.seq != seq || h.layer != layer || h.step != d->step || h.pos != pos)
        FAIL(d,
             "%s: rank %d sent layer %d, step %lld, position %lld, message %llu; this rank expected layer %d, "
             "step %lld, position %lld, message %llu: the ranks are out of step",
             what, from, h.layer, (long long)h.step, (long long)h.pos, (unsigned long long)h.seq, layer,
             (long long)d->step, (long long)pos, (unsigned long long)seq);
    if (h.nbytes != want)
        FAIL(d, "%s: rank %d sent %llu payload bytes, %zu expected (the ranks disagree on the step's shape)",
             what, from, (unsigned long long)h.nbytes, want);
    account(d, t0, ntok, 0);
    return d->pbuf + hs;
}

static mk_status pipe_recv_hidden(void *user, int layer, int64_t pos, int64_t n, int64_t H, float *x) {
    mk_dist *d = ((dist_slot *)user)->d;
    char what[128];
    step_what(d, what, sizeof what, layer, "", pos);
    size_t nb = (size_t)(n * H) * sizeof(float);
    d->hin++;
    /* from the previous stage's first rank (its other ranks hold the same residual stream) */
    const char *p = pipe_recv(d, d->sranks[d->st - 1], TAG_HIDDEN, K_HIDDEN, layer, d->hin, pos, n, nb,
                              stage_wait(d, d->st), what);
    memcpy(x, p, nb);
    return MK_OK;
}

static mk_status pipe_send_hidden(void *user, int layer, int64_t pos, int64_t n, int64_t H, const float *x) {
    mk_dist *d = ((dist_slot *)user)->d;
    char what[128];
    step_what(d, what, sizeof what, layer, "", pos);
    d->hout++;
    if (d->rank != d->sranks[d->st]) /* the stage's first rank sends; its peers computed the same rows */
        return MK_OK;
    int to = d->sranks[d->st + 1], nto = d->sranks[d->st + 2] - to;
    pipe_send(d, to, nto, TAG_HIDDEN, K_HIDDEN, layer, d->hout, pos, n, x, (size_t)(n * H) * sizeof(float),
              what);
    return MK_OK;
}

static mk_status pipe_recv_logits(void *user, int64_t pos, int64_t rows, int64_t V, float *logits) {
    mk_dist *d = ((dist_slot *)user)->d;
    char what[128];
    step_what(d, what, sizeof what, d->NL, " (the logits)", pos);
    size_t nb = (size_t)(rows * V) * sizeof(float);
    d->lgs++;
    const char *p = pipe_recv(d, d->sranks[d->S - 1], TAG_LOGITS, K_LOGITS, d->NL, d->lgs, pos, d->ntok, nb,
                              stage_wait(d, d->S), what);
    memcpy(logits, p, nb);
    return MK_OK;
}

static mk_status pipe_send_logits(void *user, int64_t pos, int64_t rows, int64_t V, const float *logits) {
    mk_dist *d = ((dist_slot *)user)->d;
    char what[128];
    step_what(d, what, sizeof what, d->NL, " (the logits)", pos);
    d->lgs++;
    pipe_send(d, 0, 1, TAG_LOGITS, K_LOGITS, d->NL, d->lgs, pos, d->ntok, logits, (size_t)(rows * V) * sizeof(float), what);
    return MK_OK;
}

static mk_status pipe_step(void *user, const int32_t *ids, int64_t n, int64_t pos, int mode) {
    const dist_slot *u = user;
    return announce_step(u->d, u->slot, ids, n, pos, mode);
}

/* A batched step hands every sequence's row of logits back (layer_pipe.h). */
static mk_status pipe_step_batch(void *const *users, int n, const int32_t *ids, const int64_t *pos) {
    return announce_batch(((const dist_slot *)users[0])->d, users, n, ids, pos, MK_LOGITS_ALL);
}

/* ---- public ----------------------------------------------------------------- */

mk_status mk_dist_init(const mk_dist_opts *o, mk_dist **out) {
    *out = NULL;
    int inited = 0, provided = 0;
    MPI_Initialized(&inited);
    /* serialized: one thread at a time, not always the main one (serve's scheduler runs the steps) */
    if (!inited && MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
        return mk_err(MK_E_IO, "MPI_Init_thread failed");
    if (!inited && provided < MPI_THREAD_SERIALIZED)
        return mk_err(MK_E_UNSUPPORTED, "the MPI library gives thread level %d; moekit needs "
                      "MPI_THREAD_SERIALIZED (%d)", provided, MPI_THREAD_SERIALIZED);
    mk_dist *d = mk_calloc(1, sizeof *d);
    if (!d)
        return mk_err(MK_E_NOMEM, "out of memory for the MPI context");
    if (o)
        d->o = *o;
    if (d->o.timeout_s <= 0)
        d->o.timeout_s = 60;
    if (d->o.idle_timeout_s <= 0)
        d->o.idle_timeout_s = 3600;
    /* failures come back as codes, so the message can name rank, layer and step */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->size);
    if (d->size > 64) {
        free(d);
        return mk_err(MK_E_UNSUPPORTED, "%d MPI ranks: at most 64 are supported", 64);
    }
    d->g0 = 0;
    d->gn = d->size;
    d->rq = mk_calloc((size_t)(2 * d->size), sizeof(MPI_Request));
    if (!d->rq || mk_dist_set_slots(d, 1) != MK_OK) {
        free(d->rq);
        free(d);
        return mk_err(MK_E_NOMEM, "out of memory for MPI requests");
    }
    *out = d;
    return MK_OK;
}

mk_status mk_dist_set_slots(mk_dist *d, int n) {
    if (n < 1 || n > DIST_MAX_SLOTS)
        return mk_err(MK_E_ARG, "MPI: %d sequences (slots): expected 1 to %d", n, DIST_MAX_SLOTS);
    dist_slot *sl = mk_calloc((size_t)n, sizeof *sl);
    mk_moe_part *pa = mk_calloc((size_t)n, sizeof *pa);
    mk_layer_pipe *pp = mk_calloc((size_t)n, sizeof *pp);
    if (!sl || !pa || !pp) {
        free(sl);
        free(pa);
        free(pp);
        return mk_err(MK_E_NOMEM, "out of memory for %d sequences' MPI hooks", n);
    }
    for (int i = 0; i < n; i++)
        sl[i] = (dist_slot){.d = d, .slot = i};
    free(d->slots);
    free(d->parts);
    free(d->pipes);
    d->slots = sl;
    d->parts = pa;
    d->pipes = pp;
    d->nslots = n;
    return MK_OK;
}

int mk_dist_slots(const mk_dist *d) {
    return d->nslots;
}

const mk_moe_part *mk_dist_slot_part(const mk_dist *d, int slot) {
    return slot >= 0 && slot < d->nslots && d->parts[slot].range ? &d->parts[slot] : NULL;
}

const mk_layer_pipe *mk_dist_slot_pipe(const mk_dist *d, int slot) {
    return slot >= 0 && slot < d->nslots && d->pipes[slot].recv_hidden ? &d->pipes[slot] : NULL;
}

void mk_dist_free(mk_dist *d) {
    if (!d)
        return;
    free(d->sbuf);
    free(d->rbuf);
    free(d->rq);
    free(d->cuts);
    free(d->stages);
    free(d->sranks);
    free(d->pbuf);
    free(d->slots);
    free(d->parts);
    free(d->pipes);
    free(d);
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin)
        MPI_Finalize();
}

int mk_dist_rank(const mk_dist *d) {
    return d->rank;
}
int mk_dist_size(const mk_dist *d) {
    return d->size;
}

void mk_dist_range(const mk_dist *d, int layer, int32_t *lo, int32_t *hi) {
    rank_range(d, layer, d->rank, lo, hi);
}

/* The ranks sharing layer l's experts: every rank, or (both modes) the
 * ranks of the stage holding it. */
static int layer_group(const mk_dist *d, int32_t l) {
    if (!d->both)
        return d->size;
    for (int s = 0; s < d->S; s++)
        if (l < d->stages[s + 1])
            return d->sranks[s + 1] - d->sranks[s];
    return d->size;
}

/* Cuts valid for E experts and L layers: each layer's row ascends from 0
 * to E over the ranks sharing the layer (and stays at E after them). */
static mk_status cuts_check(const mk_dist *d, const int32_t *cuts, int64_t n, int32_t L, int32_t E,
                            const char *from) {
    if (n != (int64_t)L * (d->size + 1))
        return mk_err(MK_E_MISMATCH, "%s: %lld expert cuts for %d layers of %d ranks (expected %lld)", from,
                      (long long)n, L, d->size, (long long)L * (d->size + 1));
    for (int32_t l = 0; l < L; l++) {
        const int32_t *c = cuts + (int64_t)l * (d->size + 1);
        bool ok = c[0] == 0 && c[layer_group(d, l)] == E && c[d->size] == E;
        for (int q = 0; ok && q < d->size; q++)
            ok = c[q] <= c[q + 1];
        if (!ok)
            return mk_err(MK_E_ARG, "%s: layer %d's expert cuts do not ascend from 0 to %d", from, l, E);
    }
    return MK_OK;
}

mk_status mk_dist_set_cuts(mk_dist *d, const mk_model *m, const int32_t *cuts) {
    const mk_config *c = mk_model_config(m);
    int64_t n = (int64_t)c->num_layers * (d->size + 1);
    MK_TRY(cuts_check(d, cuts, n, c->num_layers, c->num_experts, "mk_dist_set_cuts"));
    int32_t *cp = mk_malloc((size_t)n * sizeof(int32_t));
    if (!cp)
        return mk_err(MK_E_NOMEM, "out of memory for %lld expert cuts", (long long)n);
    memcpy(cp, cuts, (size_t)n * sizeof(int32_t));
    free(d->cuts);
    d->cuts = cp;
    d->ncuts = n;
    return MK_OK;
}

mk_status mk_dist_part(mk_dist *d, const mk_model *m, const mk_moe_part **part) {
    const mk_config *c = mk_model_config(m);
    if (c->num_experts < 1)
        return mk_err(MK_E_UNSUPPORTED, "%s has no routed experts: nothing to spread over %d MPI ranks",
                      c->model_type, d->size);
    if (c->num_experts < d->gn)
        return mk_err(MK_E_ARG, "%d MPI ranks%s for %d routed experts per layer: use at most %d ranks%s", d->gn,
                      d->both ? " in one pipeline stage" : "", c->num_experts, c->num_experts,
                      d->both ? " per stage (more --pipeline-stages)" : "");
    d->E = c->num_experts;
    d->L = c->num_layers;
    if (d->cuts) /* rank 0's (the workers took them from its setup): for this model? */
        MK_TRY(cuts_check(d, d->cuts, d->ncuts, d->L, d->E, "rank 0's expert cuts"));
    /* both modes: the pipe's step announces (one per forward call) */
    bool lead = d->rank == 0 && !d->both;
    for (int i = 0; i < d->nslots; i++)
        d->parts[i] = (mk_moe_part){.user = &d->slots[i],
                                    .range = part_range,
                                    .exchange = part_exchange,
                                    .step = lead ? part_step : NULL,
                                    .step_batch = lead ? part_step_batch : NULL};
    *part = &d->parts[0];
    return MK_OK;
}

/* Take S stages (layer bounds, rank bounds; both copied) and this rank's
 * place in them; `L` (> 0) checks the layer bounds' end. */
static mk_status take_stages(mk_dist *d, int S, const int32_t *bounds, const int32_t *ranks, bool both, int L) {
    bool ok = S >= 1 && S <= d->size && bounds[0] == 0 && (L <= 0 || bounds[S] == L) && ranks[0] == 0 &&
              ranks[S] == d->size;
    for (int s = 0; ok && s < S; s++)
        ok = bounds[s] < bounds[s + 1] && ranks[s] < ranks[s + 1] && (both || ranks[s + 1] == s + 1);
    if (!ok)
        return mk_err(MK_E_ARG, "pipeline: the %d stages' layer ranges must cover layers 0..%d in order and "
                      "their ranks 0..%d, one or more of each per stage%s", S, L - 1, d->size - 1,
                      both ? "" : " (one rank per stage without --mpi-mode both)");
    int32_t *cp = mk_malloc((size_t)(S + 1) * sizeof(int32_t)), *rp = mk_malloc((size_t)(S + 1) * sizeof(int32_t));
    if (!cp || !rp) {
        free(cp);
        free(rp);
        return mk_err(MK_E_NOMEM, "out of memory for %d pipeline stages", S);
    }
    memcpy(cp, bounds, (size_t)(S + 1) * sizeof(int32_t));
    memcpy(rp, ranks, (size_t)(S + 1) * sizeof(int32_t));
    free(d->stages);
    free(d->sranks);
    d->stages = cp;
    d->sranks = rp;
    d->S = S;
    d->both = both;
    d->st = 0;
    while (d->rank >= rp[d->st + 1])
        d->st++;
    /* expert mode: every rank shares every layer; both: the stage's ranks; a pipeline: none */
    d->g0 = both ? rp[d->st] : d->rank;
    d->gn = both ? rp[d->st + 1] - rp[d->st] : 1;
    return MK_OK;
}

mk_status mk_dist_set_stages(mk_dist *d, const mk_model *m, int nstages, const int32_t *bounds,
                             const int32_t *ranks) {
    int L = mk_model_config(m)->num_layers;
    if (!ranks && nstages != d->size)
        return mk_err(MK_E_ARG, "pipeline: %d stages for %d ranks: one rank per stage (or experts split "
                      "within a stage: --mpi-mode both)", nstages, d->size);
    if (nstages < 1 || nstages > d->size)
        return mk_err(MK_E_ARG, "pipeline: %d stages for %d ranks: each stage needs at least one rank",
                      nstages, d->size);
    int32_t one[65];
    if (!ranks) {
        for (int q = 0; q <= d->size; q++)
            one[q] = q;
    }
    return take_stages(d, nstages, bounds, ranks ? ranks : one, ranks != NULL, L);
}

bool mk_dist_pipelined(const mk_dist *d) {
    return d->stages != NULL;
}

bool mk_dist_both(const mk_dist *d) {
    return d->both;
}

void mk_dist_stage(const mk_dist *d, int *first, int *last) {
    *first = d->stages ? d->stages[d->st] : 0;
    *last = d->stages ? d->stages[d->st + 1] : 0;
}

void mk_dist_stage_ranks(const mk_dist *d, int *stage, int *stages, int *first, int *count) {
    *stage = d->st;
    *stages = d->S;
    *first = d->stages ? d->sranks[d->st] : 0;
    *count = d->stages ? d->sranks[d->st + 1] - d->sranks[d->st] : d->size;
}

mk_status mk_dist_pipe(mk_dist *d, const mk_model *m, const mk_layer_pipe **pipe) {
    int L = mk_model_config(m)->num_layers;
    if (!d->stages || d->stages[d->S] != L)
        return mk_err(MK_E_ARG, "pipeline: no layer ranges for this model's %d layers", L);
    d->NL = L;
    for (int i = 0; i < d->nslots; i++)
        d->pipes[i] = (mk_layer_pipe){.user = &d->slots[i],
                                      .first = d->stages[d->st],
                                      .last = d->stages[d->st + 1],
                                      .recv_hidden = pipe_recv_hidden,
                                      .send_hidden = pipe_send_hidden,
                                      .recv_logits = pipe_recv_logits,
                                      .send_logits = pipe_send_logits,
                                      .step = d->rank == 0 ? pipe_step : NULL,
                                      .step_batch = d->rank == 0 ? pipe_step_batch : NULL};
    *pipe = &d->pipes[0];
    return MK_OK;
}

void mk_dist_stats(const mk_dist *d, FILE *f) {
    if (!d)
        return;
    fprintf(f, "mpi_rank %d\nmpi_ranks %d\nmpi_mode %s\nmpi_steps %lld\n", d->rank, d->size,
            d->both ? "both" : d->stages ? "pipeline" : "expert", (long long)d->step);
    static const char *pre[2] = {"mpi_", "mpi_decode_"};
    for (int i = 0; i < 2; i++)
        fprintf(f, "%sexchanges %llu\n%sexchange_s %.6f\n%spayload_bytes_sent %llu\n%spayload_bytes_per_exchange %.1f\n",
                pre[i], (unsigned long long)d->xchg_n[i], pre[i], d->xchg_s[i], pre[i],
                (unsigned long long)d->xchg_bytes[i], pre[i],
                d->xchg_n[i] ? (double)d->xchg_bytes[i] / (double)d->xchg_n[i] : 0.0);
}

/* The setup payload: max_ctx, prefill_chunk, experts_per_tok, the model
 * fingerprint, the number of cuts, the number of stage bounds (0: expert
 * mode, else stages+1), whether a stage's ranks split its experts (both
 * modes), the number of sequences (an engine each on every rank), then
 * the cuts, the stages' layer bounds and their rank bounds (int32). */
#define SETUP_N 8
#define SETUP_HEAD (SETUP_N * sizeof(int64_t))

mk_status mk_dist_announce(mk_dist *d, const mk_engine_opts *o, uint64_t fingerprint) {
    int64_t nc = d->cuts ? d->ncuts : 0, ns = d->stages ? d->S + 1 : 0;
    size_t nb = SETUP_HEAD + (size_t)(nc + 2 * ns) * sizeof(int32_t);
    char *buf = mk_malloc(nb);
    if (!buf)
        return mk_err(MK_E_NOMEM, "out of memory for the %zu-byte setup", nb);
    int64_t p[SETUP_N] = {o->max_ctx, o->prefill_chunk, o->experts_per_tok, 0, nc, ns, d->both, d->nslots};
    memcpy(&p[3], &fingerprint, sizeof fingerprint);
    memcpy(buf, p, sizeof p);
    if (nc)
        memcpy(buf + SETUP_HEAD, d->cuts, (size_t)nc * sizeof(int32_t));
    if (ns) {
        memcpy(buf + SETUP_HEAD + (size_t)nc * sizeof(int32_t), d->stages, (size_t)ns * sizeof(int32_t));
        memcpy(buf + SETUP_HEAD + (size_t)(nc + ns) * sizeof(int32_t), d->sranks, (size_t)ns * sizeof(int32_t));
    }
    if (d->size > 1)
        send_cmd(d, K_SETUP, buf, nb, "setup");
    free(buf);
    return MK_OK;
}

mk_status mk_dist_await(mk_dist *d, uint64_t fingerprint, mk_engine_opts *o, bool *finished) {
    dist_hdr h;
    *finished = false;
    recv_cmd(d, &h, "setup");
    if (h.kind == K_FINISH) {
        *finished = true;
        return MK_OK;
    }
    if (h.kind != K_SETUP || h.nbytes < SETUP_HEAD)
        FAIL(d, "setup: expected rank 0's setup, found a message of kind %u", h.kind);
    int64_t p[SETUP_N];
    memcpy(p, d->rbuf + sizeof h, sizeof p);
    if (p[4] < 0 || p[5] < 0 || p[5] == 1 || p[5] > d->size + 1 || p[7] < 1 || p[7] > DIST_MAX_SLOTS ||
        h.nbytes != SETUP_HEAD + (uint64_t)(p[4] + 2 * p[5]) * sizeof(int32_t))
        FAIL(d, "setup: %llu bytes for %lld expert cuts, %lld stage bounds and %lld sequences",
             (unsigned long long)h.nbytes, (long long)p[4], (long long)p[5], (long long)p[7]);
    if (mk_dist_set_slots(d, (int)p[7]) != MK_OK)
        FAIL(d, "setup: %s", mk_err_msg());
    if (p[5] > 0) { /* the stages first: the cuts' rows are per stage in both modes */
        const char *sb = d->rbuf + sizeof h + SETUP_HEAD + (size_t)p[4] * sizeof(int32_t);
        int32_t *b = mk_malloc((size_t)(2 * p[5]) * sizeof(int32_t));
        if (!b)
            FAIL(d, "setup: out of memory for %lld stage bounds", (long long)p[5]);
        memcpy(b, sb, (size_t)(2 * p[5]) * sizeof(int32_t));
        mk_status st = take_stages(d, (int)p[5] - 1, b, b + p[5], p[6] != 0, 0);
        free(b);
        if (st != MK_OK)
            FAIL(d, "setup: rank 0's stages: %s", mk_err_msg());
    }
    if (p[4] > 0) {
        free(d->cuts);
        d->cuts = mk_malloc((size_t)p[4] * sizeof(int32_t));
        if (!d->cuts)
            FAIL(d, "setup: out of memory for %lld expert cuts", (long long)p[4]);
        memcpy(d->cuts, d->rbuf + sizeof h + SETUP_HEAD, (size_t)p[4] * sizeof(int32_t));
        d->ncuts = p[4];
    }
    uint64_t fp;
    memcpy(&fp, &p[3], sizeof fp);
    if (fp != fingerprint)
        FAIL(d,
             "setup: rank 0 opened a different model (config.json xxh3 %016llx, this rank's %016llx): every "
             "rank must open the same model",
             (unsigned long long)fp, (unsigned long long)fingerprint);
    o->max_ctx = p[0];
    o->prefill_chunk = (int)p[1];
    o->experts_per_tok = (int)p[2];
    return MK_OK;
}

/* Worker: bring engine e (sequence `slot`) to the lead's position `pos`
 * for it: the lead reset or rewound that sequence (serve's prompt cache)
 * since its last step. */
static mk_status follow_pos(mk_engine *e, int64_t pos) {
    if (pos == mk_engine_pos(e))
        return MK_OK;
    if (pos == 0) {
        mk_engine_reset(e);
        return MK_OK;
    }
    return mk_engine_rewind(e, pos);
}

/* Worker: the rows of logits this rank computes for a step of logits mode
 * `mode` over `rows` rows: the first rank of a pipeline's last stage sends
 * them back (from inside the engine, layer_pipe.h); every other worker
 * none (NULL). */
static float *step_logits(mk_dist *d, mk_engine *e, int mode, size_t rows, bool *bad) {
    *bad = mode != MK_LOGITS_NONE && mode != MK_LOGITS_LAST && mode != MK_LOGITS_ALL;
    if (*bad || !d->stages || d->rank != d->sranks[d->S - 1] || mode == MK_LOGITS_NONE)
        return NULL;
    int64_t V = mk_model_config(mk_engine_model(e))->vocab_size;
    float *lg = mk_malloc(rows * (size_t)V * sizeof(float));
    if (!lg)
        FAIL(d, "step %lld: out of memory for %zu rows of logits", (long long)d->step, rows);
    return lg;
}

/* Worker: rank 0's batched decode step, the command's payload in d->rbuf
 * after the header: the same sequences' engines here, in the same order,
 * at the same positions, one mk_engine_decode_batch (its exchanges one per
 * MoE layer over all the rows, as on rank 0). */
static void work_batch(mk_dist *d, mk_engine *const *es, const dist_hdr *h, const char *what) {
    const char *pl = d->rbuf + sizeof *h;
    int32_t n = 0;
    if (h->nbytes >= sizeof n)
        memcpy(&n, pl, sizeof n);
    if (n < 1 || n > d->nslots || n > MK_ENGINE_MAX_BATCH ||
        h->nbytes != sizeof(int32_t) * (size_t)(1 + 2 * n) + sizeof(int64_t) * (size_t)n)
        FAIL(d, "%s: rank 0's batch of %d sequences in %llu bytes (this rank drives %d)", what, n,
             (unsigned long long)h->nbytes, d->nslots);
    mk_engine *sel[MK_ENGINE_MAX_BATCH];
    int32_t ids[MK_ENGINE_MAX_BATCH];
    int64_t pos[MK_ENGINE_MAX_BATCH];
    memcpy(ids, pl + sizeof(int32_t) * (size_t)(1 + n), sizeof(int32_t) * (size_t)n);
    memcpy(pos, pl + sizeof(int32_t) * (size_t)(1 + 2 * n), sizeof(int64_t) * (size_t)n);
    for (int i = 0; i < n; i++) {
        int32_t sl;
        memcpy(&sl, pl + sizeof(int32_t) * (size_t)(1 + i), sizeof sl);
        if (sl < 0 || sl >= d->nslots)
            FAIL(d, "%s: rank 0 named sequence %d of %d", what, sl, d->nslots);
        sel[i] = es[sl];
        for (int j = 0; j < i; j++)
            if (sel[j] == sel[i])
                FAIL(d, "%s: rank 0 named sequence %d twice", what, sl);
        mk_status st = follow_pos(sel[i], pos[i]);
        if (st != MK_OK)
            FAIL(d, "%s: sequence %d at position %lld: %s", what, sl, (long long)pos[i], mk_err_msg());
    }
    bool bad;
    float *lg = step_logits(d, sel[0], (int)h->route, (size_t)n, &bad);
    if (bad)
        FAIL(d, "%s: rank 0 asked for logits mode %llu", what, (unsigned long long)h->route);
    d->ntok = n;
    d->batch = true;
    mk_status st = mk_engine_decode_batch(sel, n, ids, lg);
    free(lg);
    if (st != MK_OK)
        FAIL(d, "%s: %s", what, mk_err_msg());
}

mk_status mk_dist_work(mk_dist *d, mk_engine *const *es, int nes) {
    if (nes != d->nslots)
        return mk_err(MK_E_ARG, "MPI worker: %d engines for rank 0's %d sequences", nes, d->nslots);
    for (;;) {
        dist_hdr h;
        char what[96];
        snprintf(what, sizeof what, "waiting for step %lld", (long long)d->step + 1);
        recv_cmd(d, &h, what);
        if (h.kind == K_FINISH)
            return MK_OK;
        if ((h.kind != K_STEP && h.kind != K_BATCH) || h.step != d->step + 1)
            FAIL(d, "%s: rank 0 sent kind %u for step %lld", what, h.kind, (long long)h.step);
        d->step = h.step;
        d->pos = h.pos;
        if (h.kind == K_BATCH) {
            snprintf(what, sizeof what, "step %lld (a batch)", (long long)d->step);
            work_batch(d, es, &h, what);
            continue;
        }
        d->batch = false;
        int32_t slot = -1;
        if (h.nbytes >= sizeof slot && h.nbytes % sizeof(int32_t) == 0)
            memcpy(&slot, d->rbuf + sizeof h, sizeof slot);
        if (slot < 0 || slot >= d->nslots)
            FAIL(d, "step %lld: rank 0's step of %llu bytes names sequence %d of %d", (long long)d->step,
                 (unsigned long long)h.nbytes, slot, d->nslots);
        mk_engine *e = es[slot];
        int64_t n = (int64_t)(h.nbytes / sizeof(int32_t)) - 1;
        d->ntok = n;
        /* ids move out of rbuf: the exchanges reuse it */
        int32_t *ids = mk_malloc(n ? (size_t)n * sizeof(int32_t) : 1);
        if (!ids)
            FAIL(d, "step %lld: out of memory for %lld token ids", (long long)d->step, (long long)n);
        memcpy(ids, d->rbuf + sizeof h + sizeof slot, (size_t)n * sizeof(int32_t));
        mk_status st = follow_pos(e, h.pos); /* the lead reset or rewound its sequence */
        /* the last stage of a pipeline (its first rank: the others hold the same rows) computes the
         * logits rank 0 asked for (and sends them back from inside the engine, layer_pipe.h); every
         * other worker none */
        int mode = d->stages && d->rank == d->sranks[d->S - 1] ? (int)h.route : MK_LOGITS_NONE;
        bool bad;
        float *lg = step_logits(d, e, (int)h.route, mode == MK_LOGITS_ALL ? (size_t)n : 1, &bad);
        if (bad) {
            free(ids);
            FAIL(d, "step %lld: rank 0 asked for logits mode %d", (long long)d->step, (int)h.route);
        }
        if (st == MK_OK)
            st = mk_engine_forward(e, ids, n, (mk_logits_mode)mode, lg, NULL);
        free(lg);
        free(ids);
        if (st != MK_OK)
            FAIL(d, "step %lld (sequence %d, position %lld): %s", (long long)d->step, slot, (long long)h.pos,
                 mk_err_msg());
    }
}

void mk_dist_finish(mk_dist *d) {
    if (!d || d->rank != 0 || d->finished)
        return;
    d->finished = true;
    if (d->size > 1)
        send_cmd(d, K_FINISH, NULL, 0, "finish");
}
