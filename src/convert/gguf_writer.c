/* The GGUF implementation of the convert writer interface (writer.h; the
 * format in gguf.h).
 *
 * One file, model.gguf, in DST.partial/ (exec.c moves it to DST, a file):
 *   "GGUF" u32 3, u64 tensor count, u64 key/value count, the key/value
 *   section serialized at planning (gguf_meta.c), then per tensor its name,
 *   dims (innermost first), ggml type and data offset, zero padding to 32
 *   bytes, and the tensors' data, each starting at a multiple of 32 from
 *   the data section's start, in plan order (natural name order: blk.2
 *   before blk.10).
 * The header is complete at begin (every size is known from the plan), so
 * data streams straight behind it through an 8 MiB buffer; a tensor's
 * padding is written as its last byte arrives. The file is written as
 * model.gguf.tmp, fsynced and renamed at finish; free removes an
 * unfinished one. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "convert/gguf.h"
#include "convert/writer.h"
#include "core/alloc.h"
#include "io/os.h"

#define GW_BUF (8u << 20)
#define GW_BOUNCE (1u << 20)

struct cv_writer {
    int fd;
    char *tmp, *path, *dir;
    unsigned char *buf, *bounce; /* write buffer; copies read into bounce */
    size_t bn;
    uint64_t off; /* file offset of buf[0] */
    const cv_plan *p;
    size_t cur, end; /* tensor being written, one past the shard's last */
    uint64_t left;   /* its bytes still to come */
    bool finished;
};

static int gg_order(const void *a, const void *b) {
    const cv_out *x = a, *y = b;
    int c = cv_natcmp(x->name, y->name);
    return c ? c : strcmp(x->name, y->name);
}

static char *gg_shard_file(int k, int n) {
    (void)k;
    (void)n;
    return cv_strdup(CV_GGUF_FILE);
}

static mk_status flush(cv_writer *w) {
    if (w->bn == 0)
        return MK_OK;
    MK_TRY(mk_os_pwrite_full(w->fd, w->buf, w->bn, w->off, w->tmp));
    w->off += w->bn;
    w->bn = 0;
    return MK_OK;
}

static mk_status emit(cv_writer *w, const void *d, size_t n) {
    const unsigned char *s = d;
    while (n > 0) {
        size_t m = GW_BUF - w->bn < n ? GW_BUF - w->bn : n;
        memcpy(w->buf + w->bn, s, m);
        w->bn += m;
        s += m;
        n -= m;
        if (w->bn == GW_BUF)
            MK_TRY(flush(w));
    }
    return MK_OK;
}

static mk_status emit_u32(cv_writer *w, uint32_t v) { return emit(w, &v, 4); }
static mk_status emit_u64(cv_writer *w, uint64_t v) { return emit(w, &v, 8); }

static uint64_t pos(const cv_writer *w) { return w->off + w->bn; }

static mk_status pad(cv_writer *w) {
    static const unsigned char z[CV_GGUF_ALIGN];
    uint64_t r = pos(w) % CV_GGUF_ALIGN;
    return r ? emit(w, z, CV_GGUF_ALIGN - r) : MK_OK;
}

static uint64_t align_up(uint64_t v) { return (v + CV_GGUF_ALIGN - 1) / CV_GGUF_ALIGN * CV_GGUF_ALIGN; }

/* Past tensors whose bytes are all in (empty ones included). */
static void advance(cv_writer *w) {
    while (w->left == 0 && w->cur < w->end) {
        w->cur++;
        w->left = w->cur < w->end ? w->p->outs[w->cur].nbytes : 0;
    }
}

static void gg_free(cv_writer *w) {
    if (!w)
        return;
    if (w->fd >= 0)
        close(w->fd);
    if (!w->finished && w->tmp)
        mk_os()->unlink(w->tmp);
    free(w->tmp);
    free(w->path);
    free(w->dir);
    free(w->buf);
    free(w->bounce);
    free(w);
}

static mk_status header(cv_writer *w, const cv_plan *p, size_t first) {
    MK_TRY(emit(w, "GGUF", 4));
    MK_TRY(emit_u32(w, 3));
    MK_TRY(emit_u64(w, (uint64_t)(w->end - first)));
    MK_TRY(emit_u64(w, p->gguf_kv_count));
    MK_TRY(emit(w, p->gguf_kv, p->gguf_kv_len));
    uint64_t data = 0;
    for (size_t i = first; i < w->end; i++) {
        const cv_out *o = &p->outs[i];
        bool mx = o->ggt == CV_GGML_MXFP4;
        const char *tn = mx ? "MXFP4" : mk_ggml_type_name((mk_ggml_type)o->ggt);
        int64_t cols = o->ndim ? o->shape[o->ndim - 1] : 1, rows = 1;
        for (int d = 0; d + 1 < o->ndim; d++)
            rows *= o->shape[d];
        uint64_t rb = mx ? (cols % 32 ? 0 : (uint64_t)(cols / 32) * 17u) : mk_ggml_row_bytes((mk_ggml_type)o->ggt, cols);
        if (!tn || o->ggt < 0 || rb * (uint64_t)rows != o->nbytes)
            return mk_err(MK_E_INTERNAL, "gguf: tensor '%s' planned as %llu bytes, not a whole %s [%lld x %lld]",
                          o->name, (unsigned long long)o->nbytes, tn ? tn : "(no type)", (long long)rows,
                          (long long)cols);
        MK_TRY(emit_u64(w, strlen(o->name)));
        MK_TRY(emit(w, o->name, strlen(o->name)));
        MK_TRY(emit_u32(w, (uint32_t)(o->ndim ? o->ndim : 1)));
        if (o->ndim == 0)
            MK_TRY(emit_u64(w, 1));
        for (int d = o->ndim - 1; d >= 0; d--)
            MK_TRY(emit_u64(w, (uint64_t)o->shape[d]));
        MK_TRY(emit_u32(w, (uint32_t)o->ggt));
        MK_TRY(emit_u64(w, data));
        data = align_up(data + o->nbytes);
    }
    return pad(w);
}

static mk_status gg_begin(const char *dir, const cv_plan *p, int k, const char *format_tag, cv_writer **out) {
    (void)format_tag;
    *out = NULL;
    if (p->nshards != 1)
        return mk_err(MK_E_INTERNAL, "gguf: planned as %d shards; a GGUF output is one file", p->nshards);
    cv_writer *w = mk_calloc(1, sizeof *w);
    if (!w)
        return mk_err(MK_E_NOMEM, "%s: no memory for the GGUF writer", dir);
    w->fd = -1;
    w->p = p;
    w->cur = p->shard_first[k];
    w->end = p->shard_first[k + 1];
    w->dir = cv_strdup(dir);
    w->path = mk_path_join(dir, CV_GGUF_FILE);
    w->tmp = cv_printf("%s/%s.tmp", dir, CV_GGUF_FILE);
    w->buf = mk_malloc(GW_BUF);
    w->bounce = mk_malloc(GW_BOUNCE);
    mk_status s = w->dir && w->path && w->tmp && w->buf && w->bounce
                      ? MK_OK
                      : mk_err(MK_E_NOMEM, "%s: no memory for the GGUF writer's %u MiB buffer", dir, GW_BUF >> 20);
    if (s == MK_OK) {
        w->fd = mk_os()->open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (w->fd < 0)
            s = mk_err(MK_E_IO, "%s: cannot create: %s", w->tmp, strerror(errno));
    }
    if (s == MK_OK)
        s = header(w, p, w->cur);
    if (s != MK_OK) {
        gg_free(w);
        return s;
    }
    w->left = w->cur < w->end ? p->outs[w->cur].nbytes : 0;
    advance(w);
    *out = w;
    return MK_OK;
}

mk_status cv_gguf_header_to(const cv_plan *p, int fd, const char *what, uint64_t *len) {
    if (p->nshards != 1)
        return mk_err(MK_E_INTERNAL, "gguf: planned as %d shards; a GGUF output is one file", p->nshards);
    cv_writer w;
    memset(&w, 0, sizeof w);
    w.fd = fd;
    w.tmp = (char *)what; /* named in write errors only */
    w.p = p;
    w.cur = p->shard_first[0];
    w.end = p->shard_first[1];
    w.buf = mk_malloc(GW_BUF);
    if (!w.buf)
        return mk_err(MK_E_NOMEM, "%s: no memory for the GGUF writer's %u MiB buffer", what, GW_BUF >> 20);
    mk_status s = header(&w, p, w.cur);
    if (s == MK_OK) {
        *len = pos(&w);
        s = flush(&w);
    }
    free(w.buf);
    return s;
}

uint64_t cv_gguf_align(uint64_t v) { return align_up(v); }

static int gg_fd(const cv_writer *w) { return w->fd; }

static mk_status gg_write(cv_writer *w, const void *data, size_t n) {
    const unsigned char *d = data;
    while (n > 0) {
        if (w->cur >= w->end)
            return mk_err(MK_E_INTERNAL, "gguf: %zu bytes more than the plan's tensors hold", n);
        size_t m = (uint64_t)n < w->left ? n : (size_t)w->left;
        MK_TRY(emit(w, d, m));
        d += m;
        n -= m;
        w->left -= m;
        if (w->left == 0) {
            MK_TRY(pad(w));
            advance(w);
        }
    }
    return MK_OK;
}

static mk_status gg_copy(cv_writer *w, int fd, uint64_t off, uint64_t n) {
    while (n > 0) {
        size_t m = (uint64_t)GW_BOUNCE < n ? GW_BOUNCE : (size_t)n;
        MK_TRY(mk_os_pread_full(fd, w->bounce, m, off, "a source shard"));
        MK_TRY(gg_write(w, w->bounce, m));
        off += m;
        n -= m;
    }
    return MK_OK;
}

static mk_status gg_finish(cv_writer *w) {
    if (w->cur < w->end)
        return mk_err(MK_E_INTERNAL, "gguf: tensor '%s' is missing %llu bytes at the end of the data",
                      w->p->outs[w->cur].name, (unsigned long long)w->left);
    MK_TRY(flush(w));
    MK_TRY(mk_os_fsync(w->fd, w->tmp));
    MK_TRY(mk_os_rename(w->tmp, w->path));
    w->finished = true;
    return mk_os_fsync_dir(w->dir);
}

static mk_status gg_index(const cv_plan *p, const char *dir) {
    (void)p;
    (void)dir;
    return MK_OK;
}

const cv_writer_ops cv_writer_gguf = {
    .name = "gguf",
    .order = gg_order,
    .shard_file = gg_shard_file,
    .begin = gg_begin,
    .fd = gg_fd,
    .write = gg_write,
    .copy = gg_copy,
    .finish = gg_finish,
    .free = gg_free,
    .index = gg_index,
};
