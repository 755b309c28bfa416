/* The batched reader's common part: files, planning a submitted batch into
 * sorted and merged reads, completion accounting and reporting in
 * readiness order. The backends (reader_pread.c, reader_uring.c) only move
 * bytes. See reader.h for the contract. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "io/os.h"
#include "io/reader_impl.h"

#define RD_DEF_QD 16u
#define RD_DEF_THREADS 4u
#define RD_DEF_SLOTS 4u
#define RD_DEF_MAX_READ ((size_t)4 << 20)
#define RD_DEF_ALIGN ((size_t)4096)
#define RD_DEF_MERGE_MAX ((size_t)64 << 10)

static size_t align_down(uint64_t x, size_t a) { return (size_t)(x & ~(uint64_t)(a - 1)); }
static uint64_t align_up(uint64_t x, size_t a) { return (x + a - 1) & ~(uint64_t)(a - 1); }

mk_status mk_reader_create(const mk_reader_opts *opts, mk_reader **out) {
    *out = NULL;
    mk_reader_opts o = opts ? *opts : (mk_reader_opts){0};
    if (!o.queue_depth)
        o.queue_depth = RD_DEF_QD;
    if (!o.threads)
        o.threads = RD_DEF_THREADS;
    if (!o.bounce_slots)
        o.bounce_slots = RD_DEF_SLOTS;
    if (!o.align)
        o.align = RD_DEF_ALIGN;
    if (!o.max_read)
        o.max_read = RD_DEF_MAX_READ;
    if (!o.merge_max)
        o.merge_max = RD_DEF_MERGE_MAX;
    if (o.align < 512 || (o.align & (o.align - 1)))
        return mk_err(MK_E_ARG, "reader: alignment %zu is not a power of two >= 512", o.align);
    if (o.max_read % o.align || o.max_read > ((size_t)1 << 30))
        return mk_err(MK_E_ARG, "reader: max_read %zu is not a multiple of the alignment %zu up to 1 GiB",
                      o.max_read, o.align);
    if (o.queue_depth > 4096 || o.threads > 256 || o.bounce_slots > 1024)
        return mk_err(MK_E_ARG, "reader: queue depth %u (max 4096), threads %u (max 256) or bounce slots "
                      "%u (max 1024) too large", o.queue_depth, o.threads, o.bounce_slots);
    if (o.backend != MK_READER_AUTO && o.backend != MK_READER_URING && o.backend != MK_READER_PREAD)
        return mk_err(MK_E_ARG, "reader: unknown backend %d", (int)o.backend);
    mk_reader *r = mk_calloc(1, sizeof *r);
    if (!r)
        return mk_err(MK_E_NOMEM, "reader: out of memory allocating the reader");
    r->o = o;
    r->bounce_size = o.max_read + 2 * o.align;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->work, NULL);
    pthread_cond_init(&r->fin, NULL);
    r->free_slots = mk_calloc(o.bounce_slots, sizeof *r->free_slots);
    r->bounce = mk_calloc(o.bounce_slots, sizeof *r->bounce);
    if (!r->free_slots || !r->bounce) {
        mk_reader_destroy(r);
        return mk_err(MK_E_NOMEM, "reader: out of memory allocating %u bounce slots", o.bounce_slots);
    }
    for (unsigned i = 0; i < o.bounce_slots; i++)
        r->free_slots[i] = o.bounce_slots - 1 - i;
    r->nfree = o.bounce_slots;
    mk_status s;
    if (o.backend != MK_READER_PREAD) {
        s = mk_rd_uring_init(r);
        if (s == MK_OK) {
            *out = r;
            return MK_OK;
        }
        if (s == MK_E_UNSUPPORTED && o.backend == MK_READER_URING)
            s = mk_err(MK_E_UNSUPPORTED, "reader: io_uring is not available: %s", r->why);
        if (s != MK_E_UNSUPPORTED || o.backend == MK_READER_URING) {
            mk_reader_destroy(r);
            return s;
        }
    }
    r->be = &mk_rd_pread;
    s = mk_rd_pread_init(r);
    if (s != MK_OK) {
        r->be = NULL;
        mk_reader_destroy(r);
        return s;
    }
    *out = r;
    return MK_OK;
}

void mk_reader_destroy(mk_reader *r) {
    if (!r)
        return;
    if (r->be)
        r->be->destroy(r);
    while (r->head) {
        rd_batch *b = r->head;
        r->head = b->next;
        free(b);
    }
    for (uint32_t i = 0; i < r->nfiles; i++) {
        close(r->files[i].fd);
        free(r->files[i].path);
    }
    free(r->files);
    if (r->bounce)
        for (unsigned i = 0; i < r->o.bounce_slots; i++)
            free(r->bounce[i]);
    free(r->bounce);
    free(r->free_slots);
    free(r->ready);
    pthread_cond_destroy(&r->fin);
    pthread_cond_destroy(&r->work);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* Does the file system take O_DIRECT reads of this file? Some refuse at
 * open (EINVAL), some accept the open and refuse the read. */
static bool direct_works(const mk_reader *r, int fd) {
    void *buf = mk_aligned_alloc(r->o.align, r->o.align);
    if (!buf)
        return false; /* buffered then: slower, not wrong */
    ssize_t n;
    do
        n = mk_os()->pread(fd, buf, r->o.align, 0);
    while (n < 0 && errno == EINTR);
    int e = errno;
    free(buf);
    return !(n < 0 && e == EINVAL);
}

mk_status mk_reader_add_file(mk_reader *r, const char *path, uint32_t *index) {
    if (r->nfiles == r->capfiles) {
        uint32_t nc = r->capfiles ? 2 * r->capfiles : 8;
        rd_file *nf = mk_realloc(r->files, nc * sizeof *nf);
        if (!nf)
            return mk_err(MK_E_NOMEM, "%s: out of memory adding a file to the reader", path);
        r->files = nf;
        r->capfiles = nc;
    }
    bool direct = r->o.direct;
    int fd = mk_os()->open(path, O_RDONLY | O_CLOEXEC | (direct ? O_DIRECT : 0), 0);
    if (fd < 0 && direct && errno == EINVAL) {
        direct = false;
        fd = mk_os()->open(path, O_RDONLY | O_CLOEXEC, 0);
    }
    if (fd < 0)
        return mk_err(errno == ENOENT ? MK_E_NOTFOUND : MK_E_IO, "%s: cannot open: %s", path,
                      strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return mk_err(MK_E_IO, "%s: not a regular file", path);
    }
    if (direct && !direct_works(r, fd)) {
        close(fd);
        direct = false;
        fd = mk_os()->open(path, O_RDONLY | O_CLOEXEC, 0);
        if (fd < 0)
            return mk_err(MK_E_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    char *p = mk_strdup(path);
    if (!p) {
        close(fd);
        return mk_err(MK_E_NOMEM, "%s: out of memory adding a file to the reader", path);
    }
    r->files[r->nfiles] = (rd_file){p, fd, direct};
    *index = r->nfiles++;
    return MK_OK;
}

/* ---- planning ---------------------------------------------------------- */

/* Sort key of a request: (file, offset, length), then submission order. */
typedef struct sort_key {
    uint64_t off;
    size_t len;
    uint32_t file, idx;
} sort_key;

static int cmp_key(const void *a, const void *b) {
    const sort_key *x = a, *y = b;
    if (x->file != y->file)
        return x->file < y->file ? -1 : 1;
    if (x->off != y->off)
        return x->off < y->off ? -1 : 1;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* May the request be read straight into its buffer? Buffered: always.
 * Direct: when dst and offset are aligned and dst has room for the
 * aligned length. */
static bool zero_copy(const mk_reader *r, const mk_reader_req *q) {
    const rd_file *f = &r->files[q->file];
    if (!f->direct)
        return true;
    size_t a = r->o.align, cap = q->cap ? q->cap : q->len;
    return (uintptr_t)q->dst % a == 0 && q->off % a == 0 && cap >= align_up(q->len, a);
}

/* Read alone, never merged: a request that can go straight into its
 * buffer and is longer than merge_max is an efficient read by itself, and
 * merging it would only add a copy through a bounce buffer. */
static bool solo(const mk_reader *r, const mk_reader_req *q) {
    return q->len > r->o.merge_max && zero_copy(r, q);
}

/* Counting pass (out == NULL) and filling pass of the plan: the same walk
 * twice, so the batch is one allocation of exactly the right size. */
typedef struct plan_out {
    rd_batch *b;
    size_t nops, npieces;
    bool any_bounce;
} plan_out;

static void emit_piece(plan_out *p, uint32_t req, size_t op_off, size_t req_off, size_t len) {
    if (p->b)
        p->b->pieces[p->npieces] = (rd_piece){req, op_off, req_off, len};
    p->npieces++;
}

static rd_op *emit_op(plan_out *p, uint32_t file, uint64_t poff, size_t plen, size_t need,
                      unsigned char *dst) {
    rd_op *op = NULL;
    if (p->b) {
        op = &p->b->ops[p->nops];
        *op = (rd_op){p->b, file, poff, plen, need, dst, -1, 0, (uint32_t)p->npieces, 0, NULL};
    }
    if (!dst)
        p->any_bounce = true;
    p->nops++;
    return op;
}

static void plan(mk_reader *r, const mk_reader_req *in, const uint32_t *ord, size_t n, plan_out *p) {
    const size_t M = r->o.max_read;
    size_t i = 0;
    while (i < n) {
        const mk_reader_req *q = &in[ord[i]];
        const rd_file *f = &r->files[q->file];
        size_t a = f->direct ? r->o.align : 1;
        if (q->len == 0) {
            i++;
            continue;
        }
        if (q->len > M) { /* split into max_read pieces, never merged */
            bool zc = zero_copy(r, q);
            for (size_t k = 0; k < q->len; k += M) {
                size_t n_ = q->len - k < M ? q->len - k : M;
                uint64_t at = q->off + k;
                rd_op *op;
                if (zc) {
                    op = emit_op(p, q->file, at, (size_t)align_up(n_, a), n_, (unsigned char *)q->dst + k);
                    emit_piece(p, ord[i], 0, k, n_);
                } else {
                    uint64_t ps = align_down(at, a);
                    op = emit_op(p, q->file, ps, (size_t)(align_up(at + n_, a) - ps), (size_t)(at + n_ - ps), NULL);
                    emit_piece(p, ord[i], (size_t)(at - ps), k, n_);
                }
                if (op)
                    op->npieces = 1;
            }
            i++;
            continue;
        }
        /* a group: this request and the following ones of the same file
         * whose spans touch it (within merge_gap), up to max_read; a
         * request that is read alone: see solo() */
        uint64_t gs = align_down(q->off, a), ge = align_up(q->off + q->len, a), need_end = q->off + q->len;
        size_t j = i + 1, members = 1;
        while (j < n && !solo(r, q)) {
            const mk_reader_req *x = &in[ord[j]];
            if (x->file != q->file || x->len > M || solo(r, x))
                break;
            if (x->len == 0) { /* nothing to read: must not stretch the span */
                j++;
                continue;
            }
            uint64_t xs = align_down(x->off, a), xe = align_up(x->off + x->len, a);
            if (xs > ge + r->o.merge_gap)
                break;
            uint64_t ne = xe > ge ? xe : ge;
            if (ne - gs > M)
                break;
            ge = ne;
            if (x->off + x->len > need_end)
                need_end = x->off + x->len;
            j++;
            members++;
        }
        rd_op *op;
        size_t np0 = p->npieces;
        if (members == 1 && zero_copy(r, q)) {
            op = emit_op(p, q->file, q->off, (size_t)align_up(q->len, a), q->len, q->dst);
            emit_piece(p, ord[i], 0, 0, q->len);
        } else {
            op = emit_op(p, q->file, gs, (size_t)(ge - gs), (size_t)(need_end - gs), NULL);
            for (size_t k = i; k < j; k++)
                if (in[ord[k]].len)
                    emit_piece(p, ord[k], (size_t)(in[ord[k]].off - gs), 0, in[ord[k]].len);
        }
        if (op)
            op->npieces = (uint32_t)(p->npieces - np0);
        i = j;
    }
}

static mk_status alloc_bounce(mk_reader *r) {
    for (unsigned i = 0; i < r->o.bounce_slots; i++) {
        if (r->bounce[i])
            continue;
        r->bounce[i] = mk_aligned_alloc(r->o.align, r->bounce_size);
        if (!r->bounce[i])
            return mk_err(MK_E_NOMEM, "reader: out of memory allocating a %zu-byte bounce buffer",
                          r->bounce_size);
    }
    return MK_OK;
}

static void push_ready(mk_reader *r, rd_req *q) {
    r->ready[(r->ready_head + r->nready) % r->capready] = q;
    r->nready++;
}

mk_status mk_reader_submit(mk_reader *r, const mk_reader_req *reqs, size_t n) {
    if (n == 0)
        return MK_OK;
    if (n > UINT32_MAX / 2)
        return mk_err(MK_E_ARG, "reader: %zu requests in one batch (too many)", n);
    for (size_t i = 0; i < n; i++) {
        const mk_reader_req *q = &reqs[i];
        if (q->file >= r->nfiles)
            return mk_err(MK_E_ARG, "reader: request %zu names file %u of %u", i, q->file, r->nfiles);
        if (q->len && !q->dst)
            return mk_err(MK_E_ARG, "reader: request %zu (%s at offset %llu) has no buffer", i,
                          r->files[q->file].path, (unsigned long long)q->off);
        if (q->cap && q->cap < q->len)
            return mk_err(MK_E_ARG, "reader: request %zu: buffer of %zu bytes for %zu", i, q->cap, q->len);
        if (q->len / r->o.max_read >= ((size_t)1 << 24)) /* 64 TiB at the default max_read */
            return mk_err(MK_E_ARG, "reader: request %zu (%s at offset %llu) of %zu bytes is larger than any "
                          "buffer", i, r->files[q->file].path, (unsigned long long)q->off, q->len);
        if (q->off > INT64_MAX - (uint64_t)q->len - 2 * r->o.align)
            return mk_err(MK_E_ARG, "reader: request %zu (%s): offset %llu + %zu overflows", i,
                          r->files[q->file].path, (unsigned long long)q->off, q->len);
    }
    sort_key *keys = mk_malloc(n * sizeof *keys);
    uint32_t *ord = mk_malloc(n * sizeof *ord);
    if (!keys || !ord) {
        free(keys);
        free(ord);
        return mk_err(MK_E_NOMEM, "reader: out of memory sorting %zu requests", n);
    }
    for (size_t i = 0; i < n; i++)
        keys[i] = (sort_key){reqs[i].off, reqs[i].len, reqs[i].file, (uint32_t)i};
    qsort(keys, n, sizeof *keys, cmp_key);
    for (size_t i = 0; i < n; i++)
        ord[i] = keys[i].idx;
    free(keys);

    plan_out cnt = {0};
    plan(r, reqs, ord, n, &cnt);
    size_t bytes = sizeof(rd_batch) + n * sizeof(rd_req) + cnt.nops * sizeof(rd_op) +
                   cnt.npieces * sizeof(rd_piece);
    rd_batch *b = mk_calloc(1, bytes);
    if (!b) {
        free(ord);
        return mk_err(MK_E_NOMEM, "reader: out of memory planning %zu requests (%zu bytes)", n, bytes);
    }
    b->nreq = n;
    b->reqs = (rd_req *)(b + 1);
    b->ops = (rd_op *)(b->reqs + n);
    b->pieces = (rd_piece *)(b->ops + cnt.nops);
    plan_out fill = {b, 0, 0, false};
    plan(r, reqs, ord, n, &fill);
    free(ord);
    b->nops = fill.nops;
    b->ops_left = fill.nops;
    for (size_t i = 0; i < n; i++)
        b->reqs[i] = (rd_req){reqs[i].tag, reqs[i].off, reqs[i].len, reqs[i].dst, reqs[i].file, 0,
                              false, false, 0, 0};
    for (size_t k = 0; k < fill.npieces; k++)
        b->reqs[b->pieces[k].req].ops_left++;
    if (fill.any_bounce) {
        mk_status s = alloc_bounce(r);
        if (s != MK_OK) {
            free(b);
            return s;
        }
    }

    pthread_mutex_lock(&r->mu);
    if (r->pending + n > r->capready) {
        size_t nc = r->capready ? r->capready : 64;
        while (nc < r->pending + n)
            nc *= 2;
        rd_req **nr = mk_malloc(nc * sizeof *nr);
        if (!nr) {
            pthread_mutex_unlock(&r->mu);
            free(b);
            return mk_err(MK_E_NOMEM, "reader: out of memory queueing %zu requests", n);
        }
        for (size_t i = 0; i < r->nready; i++)
            nr[i] = r->ready[(r->ready_head + i) % r->capready];
        free(r->ready);
        r->ready = nr;
        r->capready = nc;
        r->ready_head = 0;
    }
    if (r->tail)
        r->tail->next = b;
    else
        r->head = b;
    r->tail = b;
    if (!r->cur) {
        r->cur = b;
        r->cur_i = 0;
    }
    r->pending += n;
    for (size_t i = 0; i < n; i++)
        if (b->reqs[i].ops_left == 0) /* len 0 */
            push_ready(r, &b->reqs[i]);
    if (b->nops)
        r->be->kick(r);
    if (r->nready)
        pthread_cond_broadcast(&r->fin);
    pthread_mutex_unlock(&r->mu);
    return MK_OK;
}

/* ---- issuing and finishing (backends call these) ------------------------- */

rd_op *mk_rd_peek(mk_reader *r) {
    while (r->cur) {
        if (r->cur_i < r->cur->nops)
            return &r->cur->ops[r->cur_i];
        if (!r->cur->next)
            return NULL;
        r->cur = r->cur->next;
        r->cur_i = 0;
    }
    return NULL;
}

bool mk_rd_take(mk_reader *r, rd_op *op) {
    if (!op->dst) {
        if (!r->nfree)
            return false;
        op->slot = (int)r->free_slots[--r->nfree];
    }
    r->cur_i++;
    return true;
}

unsigned char *mk_rd_buf(const mk_reader *r, const rd_op *op) {
    return op->dst ? op->dst : r->bounce[op->slot];
}

int mk_rd_step(const mk_reader *r, rd_op *op, size_t got) {
    if (got == 0)
        return op->done >= op->need ? 1 : 2;
    op->done += got;
    if (op->done >= op->plen || op->done >= op->need)
        return 1;
    /* a direct read that stops mid-block stopped at the end of the file */
    if (r->files[op->file].direct && op->done % r->o.align)
        return 2;
    return 0;
}

/* A piece is good when the op did not fail with an errno and its bytes
 * arrived (a short read still delivers the pieces before the end of file). */
static bool piece_ok(const rd_op *op, const rd_piece *pc, int err) {
    return err <= 0 && pc->op_off + pc->len <= op->done;
}

void mk_rd_copy_out(const mk_reader *r, const rd_op *op, int err) {
    if (op->dst)
        return;
    const unsigned char *src = r->bounce[op->slot];
    for (uint32_t k = 0; k < op->npieces; k++) {
        const rd_piece *pc = &op->batch->pieces[op->piece0 + k];
        if (piece_ok(op, pc, err))
            memcpy(op->batch->reqs[pc->req].dst + pc->req_off, src + pc->op_off, pc->len);
    }
}

void mk_rd_finish(mk_reader *r, rd_op *op, int err) {
    if (op->slot >= 0) {
        r->free_slots[r->nfree++] = (unsigned)op->slot;
        op->slot = -1;
    }
    for (uint32_t k = 0; k < op->npieces; k++) {
        const rd_piece *pc = &op->batch->pieces[op->piece0 + k];
        rd_req *q = &op->batch->reqs[pc->req];
        if (!piece_ok(op, pc, err) && !q->failed) {
            q->failed = true;
            q->short_read = err <= 0;
            q->err = err > 0 ? err : 0;
            q->eof_at = op->poff + op->done;
        }
        if (--q->ops_left == 0)
            push_ready(r, q);
    }
    op->batch->ops_left--;
    pthread_cond_broadcast(&r->fin);
    pthread_cond_broadcast(&r->work); /* a slot is free */
}

/* ---- reporting --------------------------------------------------------- */

/* Free batches at the head that are done with (lock held). */
static void reap_batches(mk_reader *r) {
    while (r->head && r->head->reported == r->head->nreq && r->head->ops_left == 0 &&
           (r->cur != r->head || r->cur_i >= r->head->nops)) {
        rd_batch *b = r->head;
        r->head = b->next;
        if (r->tail == b)
            r->tail = NULL;
        if (r->cur == b) {
            r->cur = b->next;
            r->cur_i = 0;
        }
        free(b);
    }
}

mk_status mk_reader_next(mk_reader *r, bool wait, uint64_t *tag, bool *done) {
    *done = false;
    pthread_mutex_lock(&r->mu);
    while (!r->nready && r->pending) {
        r->be->progress(r, wait);
        if (!wait)
            break;
    }
    if (!r->nready) {
        pthread_mutex_unlock(&r->mu);
        return MK_OK;
    }
    rd_req *q = r->ready[r->ready_head];
    r->ready_head = (r->ready_head + 1) % r->capready;
    r->nready--;
    r->pending--;
    /* the request belongs to one batch; find it to count the report */
    rd_batch *b = r->head;
    while (b && !(q >= b->reqs && q < b->reqs + b->nreq))
        b = b->next;
    if (b)
        b->reported++;
    rd_req copy = *q;
    reap_batches(r);
    pthread_mutex_unlock(&r->mu);
    *tag = copy.tag;
    *done = true;
    if (!copy.failed)
        return MK_OK;
    const char *path = r->files[copy.file].path;
    if (copy.short_read)
        return mk_err(MK_E_FORMAT, "%s: short read: %zu bytes wanted at offset %llu, the file ends at "
                      "offset %llu (%llu bytes missing; truncated or changed on disk?)", path, copy.len,
                      (unsigned long long)copy.off, (unsigned long long)copy.eof_at,
                      (unsigned long long)(copy.off + copy.len - (copy.eof_at > copy.off ? copy.eof_at : copy.off)));
    return mk_err(MK_E_IO, "%s: read of %zu bytes at offset %llu failed: %s", path, copy.len,
                  (unsigned long long)copy.off, strerror(copy.err));
}

mk_status mk_reader_wait_all(mk_reader *r) {
    mk_status first = MK_OK;
    mk_err_slot slot = {MK_OK, ""};
    for (;;) {
        uint64_t tag;
        bool done;
        mk_status s = mk_reader_next(r, true, &tag, &done);
        if (!done)
            break;
        if (s != MK_OK && first == MK_OK)
            first = mk_err_slot_set(&slot, s);
    }
    return first == MK_OK ? MK_OK : mk_err_slot_raise(&slot);
}

size_t mk_reader_pending(const mk_reader *r) { return r->pending; }
const char *mk_reader_backend_name(const mk_reader *r) { return r->be->name; }
const char *mk_reader_fallback_reason(const mk_reader *r) { return r->why; }
bool mk_reader_file_direct(const mk_reader *r, uint32_t i) { return i < r->nfiles && r->files[i].direct; }
size_t mk_reader_align(const mk_reader *r) { return r->o.align; }
