/* Internals of the batched reader shared by reader.c (planning, completion
 * accounting, reporting) and its two backends, reader_pread.c and
 * reader_uring.c. Not part of the API: see reader.h.
 *
 * Each mk_reader_submit becomes one batch: its requests, the reads planned
 * for them (ops, in (file, offset) order) and the pieces that map each
 * read's bytes to the requests they belong to. A batch is one allocation
 * whose address never changes, so backends hold pointers into it while
 * reads are in flight, and it is freed once every request in it has been
 * reported and every read has finished. */
#ifndef MK_IO_READER_IMPL_H
#define MK_IO_READER_IMPL_H

#include <pthread.h>

#include "io/reader.h"

typedef struct rd_file {
    char *path;
    int fd;
    bool direct;
} rd_file;

typedef struct rd_req {
    uint64_t tag;
    uint64_t off;
    size_t len;
    unsigned char *dst;
    uint32_t file;
    uint32_t ops_left; /* reads covering this request still to finish */
    bool failed;
    bool short_read;   /* failed by end of file before its last byte */
    int err;           /* errno of the failure (not short_read) */
    uint64_t eof_at;   /* short_read: where the file ended */
} rd_req;

struct rd_batch;

typedef struct rd_op {
    struct rd_batch *batch;
    uint32_t file;
    uint64_t poff;      /* file offset of the read */
    size_t plen;        /* bytes asked for */
    size_t need;        /* bytes from poff that must arrive; plen - need is alignment slack */
    unsigned char *dst; /* straight into a request's buffer; NULL: through a bounce slot */
    int slot;           /* bounce slot while in flight, else -1 */
    size_t done;        /* bytes arrived so far */
    uint32_t piece0, npieces;
    struct rd_op *retry; /* io_uring: next op to re-issue (EINTR/EAGAIN/partial) */
} rd_op;

/* Bytes [op_off, op_off + len) of an op's read are request `req`'s bytes
 * [req_off, req_off + len). */
typedef struct rd_piece {
    uint32_t req;
    size_t op_off, req_off, len;
} rd_piece;

typedef struct rd_batch {
    struct rd_batch *next;
    size_t nreq, nops;
    size_t ops_left; /* reads not finished */
    size_t reported; /* requests reported */
    rd_req *reqs;
    rd_op *ops;
    rd_piece *pieces;
} rd_batch;

typedef struct rd_backend {
    const char *name;
    /* New ops are queued (lock held): start reading them. */
    void (*kick)(mk_reader *r);
    /* Nothing is ready to report and requests are pending (lock held):
     * make progress; with wait, return only once something finished. */
    void (*progress)(mk_reader *r, bool wait);
    /* Wait for reads in flight, release the backend (lock not held). */
    void (*destroy)(mk_reader *r);
} rd_backend;

struct mk_reader {
    mk_reader_opts o;
    const rd_backend *be;
    void *bs; /* the backend's state */
    char why[256]; /* AUTO's reason for not using io_uring */

    rd_file *files;
    uint32_t nfiles, capfiles;

    pthread_mutex_t mu;  /* everything below, against the pread workers */
    pthread_cond_t work; /* pread: an op or a bounce slot became available */
    pthread_cond_t fin;  /* a request became ready */
    rd_batch *head, *tail;
    rd_batch *cur;       /* next op to issue: cur->ops[cur_i] (NULL: none yet) */
    size_t cur_i;
    rd_req **ready;      /* finished, not reported: ring of capready */
    size_t ready_head, nready, capready;
    size_t pending;      /* submitted, not reported */

    unsigned char **bounce; /* bounce_slots buffers of bounce_size, allocated on first need */
    size_t bounce_size;
    unsigned *free_slots;
    unsigned nfree;
};

extern const rd_backend mk_rd_pread;
/* Start the pread pool's threads. */
mk_status mk_rd_pread_init(mk_reader *r);
/* Set up io_uring: MK_OK; MK_E_UNSUPPORTED with r->why set (no error
 * message) when the kernel refuses it or liburing is missing; MK_E_NOMEM. */
mk_status mk_rd_uring_init(mk_reader *r);

/* Next op to issue, or NULL (lock held). Does not take it. */
rd_op *mk_rd_peek(mk_reader *r);
/* Take the op mk_rd_peek returned, with a bounce slot when it needs one;
 * false (nothing taken) when it needs one and none is free. */
bool mk_rd_take(mk_reader *r, rd_op *op);
/* The buffer an op reads into. */
unsigned char *mk_rd_buf(const mk_reader *r, const rd_op *op);
/* After a read call returned got bytes (0: end of file) for an op:
 * 0 = read more, 1 = the op has its bytes, 2 = short read. */
int mk_rd_step(const mk_reader *r, rd_op *op, size_t got);
/* Copy a finished op's bounce bytes to its requests, those whose bytes
 * arrived (err as for mk_rd_finish; no lock needed: the batch stays put
 * while the op is unfinished). */
void mk_rd_copy_out(const mk_reader *r, const rd_op *op, int err);
/* Record an op as finished (lock held): err = errno, or -1 for a short read
 * ending at op->poff + op->done, or 0; a request fails unless its bytes
 * arrived; frees the op's slot, readies requests. */
void mk_rd_finish(mk_reader *r, rd_op *op, int err);

#endif
