/* The reader's io_uring backend: up to queue_depth planned reads in flight
 * in one ring, issued in (file, offset) order, driven from the caller's
 * thread (submit / next / wait_all); the kernel reads in between. Setup,
 * submission and each read's result go through mk_os() (uring_init,
 * uring_submit, uring_result) so tests can refuse the ring or turn a read
 * into EIO or a short count. EINTR/EAGAIN results and partial counts are
 * re-issued for the rest. A submission that fails for good fails the reads
 * it carried and every later one (the ring is not trusted again); reads
 * already in the kernel still complete. Without liburing this file only
 * says so. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "io/os.h"
#include "io/reader_impl.h"

#ifdef MK_HAVE_URING
#include <liburing.h>

typedef struct ring {
    struct io_uring ring;
    unsigned inflight; /* reads in the kernel */
    unsigned queued;   /* prepared, not yet submitted */
    rd_op *retry;      /* ops to re-issue before new ones */
    int dead;          /* errno of a failed submission: every later read fails with it */
} ring;

/* Prepare one read for the rest of op (its slot already taken). */
static bool prep(mk_reader *r, ring *g, rd_op *op) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&g->ring);
    if (!sqe)
        return false;
    size_t left = op->plen - op->done;
    io_uring_prep_read(sqe, r->files[op->file].fd, mk_rd_buf(r, op) + op->done, (unsigned)left,
                       op->poff + op->done);
    io_uring_sqe_set_data(sqe, op);
    g->queued++;
    return true;
}

/* The ring failed for good: fail every read not in the kernel (lock held). */
static void fail_rest(mk_reader *r, ring *g) {
    while (g->retry) {
        rd_op *o = g->retry;
        g->retry = o->retry;
        o->retry = NULL;
        mk_rd_finish(r, o, g->dead);
    }
    rd_op *op;
    while ((op = mk_rd_peek(r)) && mk_rd_take(r, op))
        mk_rd_finish(r, op, g->dead);
}

/* Fill the ring up to queue_depth and submit (lock held). */
static void issue(mk_reader *r) {
    ring *g = r->bs;
    unsigned qd = r->o.queue_depth;
    if (g->dead) {
        fail_rest(r, g);
        return;
    }
    while (g->retry && g->inflight + g->queued < qd) {
        rd_op *op = g->retry;
        if (!prep(r, g, op))
            break;
        g->retry = op->retry;
        op->retry = NULL;
    }
    rd_op *op;
    while (g->inflight + g->queued < qd && (op = mk_rd_peek(r)) && mk_rd_take(r, op)) {
        if (!prep(r, g, op)) { /* the SQ ring is full: the op waits as a retry */
            op->retry = g->retry;
            g->retry = op;
            break;
        }
    }
    if (!g->queued)
        return;
    int n = mk_os()->uring_submit(&g->ring);
    if (n == -EINTR || n == -EAGAIN || n == -EBUSY)
        return; /* stays queued; submitted again on the next call */
    if (n < 0) {
        /* The prepared entries stay in the SQ ring, never submitted (the
         * ring is not used again); their reads fail here, and every later one. */
        g->dead = -n;
        unsigned tail = g->ring.sq.sqe_tail;
        for (unsigned i = 0; i < g->queued; i++) {
            const struct io_uring_sqe *sqe = &g->ring.sq.sqes[(tail - g->queued + i) & *g->ring.sq.kring_mask];
            mk_rd_finish(r, (rd_op *)(uintptr_t)sqe->user_data, g->dead);
        }
        g->queued = 0;
        fail_rest(r, g);
        return;
    }
    g->inflight += (unsigned)n;
    g->queued -= (unsigned)n < g->queued ? (unsigned)n : g->queued;
}

/* Handle one completion (lock held). */
static void complete(mk_reader *r, ring *g, struct io_uring_cqe *cqe) {
    rd_op *op = io_uring_cqe_get_data(cqe);
    size_t left = op->plen - op->done;
    int res = mk_os()->uring_result(r->files[op->file].fd, mk_rd_buf(r, op) + op->done, left,
                                    (off_t)(op->poff + op->done), cqe->res);
    io_uring_cqe_seen(&g->ring, cqe);
    g->inflight--;
    int err;
    if (res == -EINTR || res == -EAGAIN) {
        op->retry = g->retry;
        g->retry = op;
        return;
    }
    if (res < 0) {
        err = -res;
    } else {
        int st = mk_rd_step(r, op, (size_t)res);
        if (st == 0) { /* partial: read the rest */
            op->retry = g->retry;
            g->retry = op;
            return;
        }
        err = st == 1 ? 0 : -1;
    }
    mk_rd_copy_out(r, op, err);
    mk_rd_finish(r, op, err);
}

static void ring_kick(mk_reader *r) { issue(r); }

static void ring_progress(mk_reader *r, bool wait) {
    ring *g = r->bs;
    size_t before = r->nready;
    for (;;) {
        struct io_uring_cqe *cqe = NULL;
        while (io_uring_peek_cqe(&g->ring, &cqe) == 0 && cqe) {
            complete(r, g, cqe);
            cqe = NULL;
        }
        issue(r);
        if (!wait || r->nready > before)
            return;
        if (!g->inflight) {
            if (g->queued)
                continue; /* submission said EAGAIN/EBUSY: try again */
            return;       /* nothing in the kernel and nothing to issue */
        }
        int e = io_uring_wait_cqe(&g->ring, &cqe);
        if (e == 0 && cqe) {
            complete(r, g, cqe);
        } else if (e != -EINTR && e != -EAGAIN) {
            /* waiting itself failed: the reads in the kernel are lost to us */
            g->dead = -e;
            fail_rest(r, g);
            return;
        }
    }
}

static void ring_destroy(mk_reader *r) {
    ring *g = r->bs;
    if (!g)
        return;
    /* the kernel may still write into buffers: wait for what is in flight */
    while (g->inflight) {
        struct io_uring_cqe *cqe;
        if (io_uring_wait_cqe(&g->ring, &cqe) != 0)
            break;
        rd_op *op = io_uring_cqe_get_data(cqe);
        io_uring_cqe_seen(&g->ring, cqe);
        if (op->slot >= 0) {
            r->free_slots[r->nfree++] = (unsigned)op->slot;
            op->slot = -1;
        }
        g->inflight--;
    }
    io_uring_queue_exit(&g->ring);
    free(g);
    r->bs = NULL;
}

static const rd_backend mk_rd_uring = {"io_uring", ring_kick, ring_progress, ring_destroy};

mk_status mk_rd_uring_init(mk_reader *r) {
    ring *g = mk_calloc(1, sizeof *g);
    if (!g)
        return mk_err(MK_E_NOMEM, "reader: out of memory allocating the io_uring state");
    int e = mk_os()->uring_init(r->o.queue_depth, &g->ring, 0);
    if (e < 0) {
        snprintf(r->why, sizeof r->why, "io_uring_queue_init(%u) refused: %s", r->o.queue_depth,
                 strerror(-e));
        free(g);
        return MK_E_UNSUPPORTED;
    }
    r->bs = g;
    r->be = &mk_rd_uring;
    return MK_OK;
}

#else

mk_status mk_rd_uring_init(mk_reader *r) {
    snprintf(r->why, sizeof r->why, "built without liburing");
    return MK_E_UNSUPPORTED;
}

#endif
