/* Batched reads of byte ranges from a set of files: the I/O layer of the
 * SSD expert store (issue 11). The caller submits every range a step needs
 * at once (all K routed experts of a layer), the reader sorts them by
 * (file, offset), merges neighbours, issues them through io_uring (liburing)
 * or a pread thread pool, and reports each request as it finishes
 * ("readiness order"), so the engine can compute on what has arrived while
 * the rest loads. No mmap: the destination buffers are the caller's.
 *
 * Backends. MK_READER_AUTO takes io_uring when the kernel lets this process
 * set up a ring (it may not: old kernel, seccomp, io_uring_disabled) and
 * otherwise the pread pool; mk_reader_backend_name and
 * mk_reader_fallback_reason say which is in use and why. Asking for
 * MK_READER_URING explicitly fails instead of falling back.
 *
 * O_DIRECT (opts.direct). Each file is opened with O_DIRECT and one aligned
 * block is read to check that the file system takes it; where it refuses
 * (EINVAL: tmpfs, some FUSE and network file systems) that file is read
 * buffered and mk_reader_file_direct says so. Direct reads are widened to
 * the alignment (opts.align, 4096 by default: a multiple of every common
 * logical block size) and land in an aligned bounce buffer from which the
 * useful bytes are copied, except when a request is itself aligned: dst,
 * offset aligned and cap >= len rounded up to the alignment, in which case
 * the reader reads straight into dst and may write up to that rounded
 * length (the expert store sizes its cache slots for this, see
 * mk_reader_align). Buffered reads of a single request always go straight
 * into dst.
 *
 * Merging. After sorting, requests of the same file whose read spans (the
 * aligned spans for direct files) are at most opts.merge_gap bytes apart
 * are read with one request into a bounce buffer, as long as the merged
 * span stays within opts.max_read. Merging is for small neighbours (the
 * weight, scales and biases of one expert in an unpacked checkpoint): a
 * request longer than opts.merge_max that can be read straight into its
 * buffer is read alone (merging would add a copy, not save a read worth
 * having), and a request longer than max_read is split into max_read
 * pieces, each its own read.
 *
 * Errors. A failed read (any errno but EINTR/EAGAIN, which are retried) or
 * a read that ends before the request's last byte (end of file: a short
 * read) fails that request, never hands back partial data: mk_reader_next
 * returns the error with the request's tag and a message naming the file,
 * the request's offset and length and the cause; the caller prefixes what
 * the bytes were (mk_err_wrap: "expert 17 of layer 3: ..."). Partial counts
 * from pread/io_uring are continued, as the kernel allows. Every system
 * call goes through mk_os() (open, pread, and the io_uring setup,
 * submission and per-read result points), so tests inject EIO and short
 * reads into both backends.
 *
 * Memory (bounded, independent of the amount read): the bounce buffers,
 * opts.bounce_slots x (max_read + 2 x align) bytes (default 4 x (4 MiB + 8
 * KiB), about 16 MiB), allocated on the first read that needs one; a ring
 * of queue_depth entries (uring) or `threads` threads (pread); and about
 * 200 bytes of bookkeeping per request submitted and not yet reported (a
 * submit's bookkeeping is freed once all its requests are reported).
 *
 * Threads. One thread uses a reader (submit, next, wait_all); the pread
 * backend's workers are internal. The io_uring backend makes progress
 * inside mk_reader_submit / mk_reader_next / mk_reader_wait_all: the kernel
 * reads in between, but a read beyond the first queue_depth is only issued
 * at the next call, so a caller that computes between calls keeps the
 * disk busy with a queue_depth of at least one batch's reads (or polls
 * with mk_reader_next(wait = false)). */
#ifndef MK_IO_READER_H
#define MK_IO_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moekit/status.h"

typedef enum mk_reader_backend {
    MK_READER_AUTO = 0, /* io_uring when available, else pread */
    MK_READER_URING,
    MK_READER_PREAD
} mk_reader_backend;

typedef struct mk_reader_opts {
    mk_reader_backend backend;
    bool direct;           /* O_DIRECT where the file system takes it */
    unsigned queue_depth;  /* reads in flight at once (uring); 0 = 16 */
    unsigned threads;      /* pread pool threads (reads in flight); 0 = 4 */
    unsigned bounce_slots; /* bounce buffers; 0 = 4 */
    size_t max_read;       /* largest single read; multiple of align; 0 = 4 MiB */
    size_t merge_gap;      /* merge spans at most this far apart (bytes read and dropped); default 0:
                              only touching or overlapping spans */
    size_t merge_max;      /* requests longer than this are not merged when they can be read
                              straight into their buffer; 0 = 64 KiB */
    size_t align;          /* O_DIRECT alignment, power of two >= 512; 0 = 4096 */
} mk_reader_opts;

/* One range to read: len bytes of file `file` (an index from
 * mk_reader_add_file) at `off` into dst. cap: bytes the reader may write at
 * dst (>= len; 0 means len); see the header comment for when more than len
 * is used. tag: the caller's name for the request, handed back on
 * completion. len 0 completes at once. */
typedef struct mk_reader_req {
    uint32_t file;
    uint64_t off;
    size_t len;
    void *dst;
    size_t cap;
    uint64_t tag;
} mk_reader_req;

typedef struct mk_reader mk_reader;

/* Create a reader (no file yet). With MK_READER_AUTO a refused io_uring is
 * not an error: the pread pool is used and the reason kept. */
mk_status mk_reader_create(const mk_reader_opts *opts, mk_reader **out);
/* Waits for reads in flight (their results are dropped), joins the
 * workers, closes the files the reader opened. NULL is a no-op. */
void mk_reader_destroy(mk_reader *r);

/* Open path read-only (O_DIRECT when asked and taken) and give it the next
 * file index (0, 1, ...). The path is kept for messages. */
mk_status mk_reader_add_file(mk_reader *r, const char *path, uint32_t *index);

/* Queue n requests and start reading. May be called again before earlier
 * requests are reported (each call's requests are sorted and merged among
 * themselves). MK_E_ARG for a bad file index, NULL dst, cap < len or an
 * offset + len overflow (nothing is queued then). */
mk_status mk_reader_submit(mk_reader *r, const mk_reader_req *reqs, size_t n);

/* Report one finished request, in the order they finish. Returns MK_OK with
 * *done = true and *tag set when all of that request's bytes are in dst;
 * an error status (MK_E_IO for a failed read, MK_E_FORMAT for a short read)
 * with *done = true and *tag set when it failed; MK_OK with *done = false
 * when nothing is pending, or when !wait and nothing has finished yet.
 * Every submitted request is reported exactly once. */
mk_status mk_reader_next(mk_reader *r, bool wait, uint64_t *tag, bool *done);

/* Wait for every pending request and report them all; returns the first
 * failure (in readiness order) or MK_OK. */
mk_status mk_reader_wait_all(mk_reader *r);

/* Requests submitted and not yet reported. */
size_t mk_reader_pending(const mk_reader *r);

/* "io_uring" or "pread". */
const char *mk_reader_backend_name(const mk_reader *r);
/* Why AUTO did not get io_uring ("" when it did, or pread was asked for). */
const char *mk_reader_fallback_reason(const mk_reader *r);
/* Whether file index i is read with O_DIRECT (false when the file system
 * refused it or direct was not asked for). */
bool mk_reader_file_direct(const mk_reader *r, uint32_t i);
/* The O_DIRECT alignment in force (bytes). */
size_t mk_reader_align(const mk_reader *r);

#endif
