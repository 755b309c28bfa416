/* The reader's pread backend: a pool of threads, each taking the next
 * planned read in (file, offset) order and doing it with pread (through
 * mk_os(), so tests inject faults), continuing partial counts. Used where
 * io_uring is not available or not asked for. Reads in flight = threads. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "io/os.h"
#include "io/reader_impl.h"

typedef struct pool {
    pthread_t *th;
    unsigned n;
    unsigned busy; /* reads in flight */
    bool stop;
} pool;

/* One whole op, without the lock: returns errno, -1 short read, 0 ok. */
static int do_read(const mk_reader *r, rd_op *op, int fd, unsigned char *buf) {
    for (;;) {
        ssize_t got = mk_os()->pread(fd, buf + op->done, op->plen - op->done, (off_t)(op->poff + op->done));
        if (got < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return errno ? errno : EIO;
        }
        int st = mk_rd_step(r, op, (size_t)got);
        if (st == 1)
            return 0;
        if (st == 2)
            return -1;
    }
}

static void *worker(void *arg) {
    mk_reader *r = arg;
    pool *p = r->bs;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        rd_op *op = NULL;
        while (!p->stop && (!(op = mk_rd_peek(r)) || !mk_rd_take(r, op)))
            pthread_cond_wait(&r->work, &r->mu);
        if (p->stop)
            break;
        p->busy++;
        int fd = r->files[op->file].fd;
        unsigned char *buf = mk_rd_buf(r, op);
        pthread_mutex_unlock(&r->mu);
        int err = do_read(r, op, fd, buf);
        mk_rd_copy_out(r, op, err);
        pthread_mutex_lock(&r->mu);
        p->busy--;
        mk_rd_finish(r, op, err);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

static void pool_kick(mk_reader *r) { pthread_cond_broadcast(&r->work); }

static void pool_progress(mk_reader *r, bool wait) {
    if (wait)
        pthread_cond_wait(&r->fin, &r->mu);
}

/* Stop taking new reads, let the ones in flight finish, join. */
static void pool_destroy(mk_reader *r) {
    pool *p = r->bs;
    if (!p)
        return;
    pthread_mutex_lock(&r->mu);
    p->stop = true;
    pthread_cond_broadcast(&r->work);
    pthread_mutex_unlock(&r->mu);
    for (unsigned i = 0; i < p->n; i++)
        pthread_join(p->th[i], NULL);
    free(p->th);
    free(p);
    r->bs = NULL;
}

const rd_backend mk_rd_pread = {"pread", pool_kick, pool_progress, pool_destroy};

mk_status mk_rd_pread_init(mk_reader *r) {
    pool *p = mk_calloc(1, sizeof *p);
    if (!p)
        return mk_err(MK_E_NOMEM, "reader: out of memory allocating the pread pool");
    p->th = mk_calloc(r->o.threads, sizeof *p->th);
    if (!p->th) {
        free(p);
        return mk_err(MK_E_NOMEM, "reader: out of memory allocating %u pread threads", r->o.threads);
    }
    r->bs = p;
    for (unsigned i = 0; i < r->o.threads; i++) {
        int e = pthread_create(&p->th[i], NULL, worker, r);
        if (e) {
            pool_destroy(r);
            return mk_err(MK_E_IO, "reader: cannot start pread thread %u of %u: %s", i + 1,
                          r->o.threads, strerror(e));
        }
        p->n++;
    }
    return MK_OK;
}
