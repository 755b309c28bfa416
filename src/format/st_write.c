/* Streaming safetensors writer.
 *
 * The whole header is planned before any data: mk_stw_add() records
 * names/dtypes/shapes, mk_stw_begin_data() orders tensors the HF way
 * (larger element alignment first, then by name), cuts shards at the size
 * limit, and writes each shard's header (padded with spaces to a multiple
 * of 8 so every tensor is aligned to its element size; with keep_order and
 * data_align, a packed expert layout keeps the caller's order and starts
 * the data buffer at a 4 KiB boundary). Data then arrives
 * in plan order, in chunks of any size, through a bounded buffer, so memory
 * never depends on tensor or model size. Files are written under temporary
 * names and renamed into place only by mk_stw_finish() after fsync; a
 * writer freed without a successful finish removes its temporaries and any
 * file it had already renamed into place (all or nothing). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/json_err.h"
#include "io/os.h"
#include "moekit/st.h"

#define MK_STW_BUF (8u << 20)

typedef struct plan {
    mk_tensor_info info; /* file_offset relative to the shard's data start until begin_data */
    char *name;
    size_t seq; /* order of mk_stw_add */
} plan;

typedef struct wshard {
    char *final_path, *tmp_path;
    int fd;
    uint64_t data_start, data_len;
    bool renamed; /* final_path is ours: remove it if the writer fails later */
} wshard;

struct mk_stw {
    char *dir;
    mk_stw_opts opts;
    char *basename, *metadata;
    plan *ts;
    size_t n, cap;
    wshard *shards;
    size_t nshards;
    bool begun, finished;
    bool index_tried; /* the index may exist: remove it if the writer fails later */
    /* streaming position */
    size_t cur;        /* tensor being written */
    uint64_t cur_off;  /* bytes of it written */
    unsigned char *buf;
    size_t buf_len;
    int buf_shard;
    uint64_t buf_pos;  /* file offset of buf[0] */
};

/* __metadata__ must be an object of string -> string (the reader rejects
 * anything else), so bad metadata is refused up front. *nomem: the parser
 * ran out of memory (not the metadata's fault). */
static bool metadata_ok(const char *js, bool *nomem) {
    json_error_t je;
    unsigned long mark = mk_json_mark();
    json_t *m = mk_json_loads(js, 0, &je, mark);
    *nomem = !m && mk_json_nomem(&je, mark);
    bool ok = json_is_object(m);
    const char *k;
    json_t *v;
    if (ok)
        json_object_foreach(m, k, v) ok = ok && json_is_string(v);
    json_decref(m);
    return ok;
}

mk_status mk_stw_create(const char *dir, const mk_stw_opts *opts, mk_stw **out) {
    *out = NULL;
    mk_stw *w = mk_calloc(1, sizeof *w);
    if (!w)
        return mk_err(MK_E_NOMEM, "safetensors writer for %s: no memory for its state", dir);
    if (opts)
        w->opts = *opts;
    uint32_t al = w->opts.data_align;
    if (al && ((al & (al - 1)) || al > (1u << 20))) {
        free(w);
        return mk_err(MK_E_ARG, "safetensors writer for %s: data alignment %u is not a power of two up to 1 MiB",
                      dir, al);
    }
    w->dir = mk_strdup(dir);
    w->basename = mk_strdup(w->opts.basename ? w->opts.basename : "model");
    w->metadata = w->opts.metadata_json ? mk_strdup(w->opts.metadata_json) : NULL;
    w->buf_shard = -1;
    if (!w->dir || !w->basename || (w->opts.metadata_json && !w->metadata)) {
        mk_stw_free(w);
        return mk_err(MK_E_NOMEM, "safetensors writer for %s: no memory for its names", dir);
    }
    bool nomem = false;
    if (w->metadata && !metadata_ok(w->metadata, &nomem)) {
        mk_stw_free(w);
        if (nomem)
            return mk_err(MK_E_NOMEM, "safetensors writer for %s: no memory to parse its metadata", dir);
        return mk_err(MK_E_ARG, "writer: metadata must be a JSON object of string -> string, got '%.200s'",
                      opts->metadata_json);
    }
    mk_status s = mk_os_mkdirs(dir);
    if (s != MK_OK) {
        mk_stw_free(w);
        return s;
    }
    *out = w;
    return MK_OK;
}

mk_status mk_stw_add(mk_stw *w, const char *name, mk_dtype dt, int ndim, const int64_t *shape) {
    if (w->begun)
        return mk_err(MK_E_INTERNAL, "writer: tensor '%s' added after data began", name);
    if (ndim < 0 || ndim > MK_MAX_DIMS || !mk_dtype_info(dt))
        return mk_err(MK_E_ARG, "writer: tensor '%s': bad dtype or %d dims", name, ndim);
    /* a header key must be valid UTF-8 (jansson drops it otherwise) and not
     * the metadata key */
    unsigned long mark = mk_json_mark();
    json_t *key = json_string(name);
    if (!key && mk_alloc_failures() != mark)
        return mk_err(MK_E_NOMEM, "writer: no memory to check tensor name '%s'", name);
    if (!key || strcmp(name, "__metadata__") == 0) {
        json_decref(key);
        return mk_err(MK_E_ARG, "writer: '%s' is not a valid tensor name", name);
    }
    json_decref(key);
    if (w->n == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 256;
        plan *np = mk_realloc(w->ts, nc * sizeof *np);
        if (!np)
            return mk_err(MK_E_NOMEM, "writer: no memory for a table of %zu tensors", nc);
        w->ts = np;
        w->cap = nc;
    }
    plan *p = &w->ts[w->n];
    memset(p, 0, sizeof *p);
    p->name = mk_strdup(name);
    if (!p->name)
        return mk_err(MK_E_NOMEM, "writer: no memory for tensor name '%s'", name);
    p->info.name = p->name;
    p->seq = w->n;
    p->info.dtype = dt;
    p->info.ndim = ndim;
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] && numel > UINT64_MAX / (uint64_t)shape[i])) {
            free(p->name);
            return mk_err(MK_E_ARG, "writer: tensor '%s': bad shape", name);
        }
        p->info.shape[i] = shape[i];
        numel *= (uint64_t)shape[i];
    }
    p->info.numel = numel;
    if (!mk_dtype_nbytes(dt, numel, &p->info.nbytes)) {
        free(p->name);
        return mk_err(MK_E_ARG, "writer: tensor '%s': %llu x %s is not a whole number of bytes", name,
                      (unsigned long long)numel, mk_dtype_name(dt));
    }
    w->n++;
    return MK_OK;
}

static unsigned align_of(mk_dtype t) {
    unsigned b = mk_dtype_info(t)->bits / 8;
    return b ? b : 1;
}

static int cmp_plan(const void *a, const void *b) {
    const plan *x = a, *y = b;
    unsigned ax = align_of(x->info.dtype), ay = align_of(y->info.dtype);
    if (ax != ay)
        return ax > ay ? -1 : 1;
    return strcmp(x->name, y->name);
}

static char *shard_name(const mk_stw *w, size_t i, size_t n) {
    char b[512];
    if (n == 1)
        snprintf(b, sizeof b, "%s.safetensors", w->basename);
    else
        snprintf(b, sizeof b, "%s-%05zu-of-%05zu.safetensors", w->basename, i + 1, n);
    return mk_strdup(b);
}

static char *index_path(const mk_stw *w) {
    char name[300];
    snprintf(name, sizeof name, "%s.safetensors.index.json", w->basename);
    return mk_path_join(w->dir, name);
}

/* Header JSON for shard `si`, padded to a multiple of 8 (with the 8-byte
 * length). NULL: no memory. jansson reports running out of memory only
 * through return values, which the building below does not check: any
 * allocation that failed meanwhile (a tensor's entry, the metadata falling
 * back to the default) makes it NULL rather than a header missing a part. */
static char *shard_header(const mk_stw *w, size_t si, size_t *len) {
    unsigned long mark = mk_json_mark();
    json_t *root = json_object();
    json_t *meta = NULL;
    if (w->metadata) {
        meta = mk_json_loads(w->metadata, 0, NULL, mark);
        if (!json_is_object(meta)) {
            json_decref(meta);
            meta = NULL;
        }
    }
    if (!meta) {
        meta = json_object();
        json_object_set_new(meta, "format", json_string("pt"));
    }
    json_object_set_new(root, "__metadata__", meta);
    for (size_t i = 0; i < w->n; i++) {
        const mk_tensor_info *t = &w->ts[i].info;
        if ((size_t)t->shard != si)
            continue;
        json_t *e = json_object(), *sh = json_array(), *off = json_array();
        json_object_set_new(e, "dtype", json_string(mk_dtype_name(t->dtype)));
        for (int d = 0; d < t->ndim; d++)
            json_array_append_new(sh, json_integer(t->shape[d]));
        json_object_set_new(e, "shape", sh);
        json_array_append_new(off, json_integer((json_int_t)t->file_offset));
        json_array_append_new(off, json_integer((json_int_t)(t->file_offset + t->nbytes)));
        json_object_set_new(e, "data_offsets", off);
        json_object_set_new(root, t->name, e);
    }
    char *js = mk_json_dumps_checked(root, JSON_COMPACT | JSON_PRESERVE_ORDER, mark);
    json_decref(root);
    if (!js)
        return NULL;
    /* the data buffer starts at 8 + padded: a multiple of the alignment */
    size_t al = w->opts.data_align ? w->opts.data_align : 8;
    size_t n = strlen(js), padded = (8 + n + al - 1) / al * al - 8;
    char *out = mk_realloc(js, padded + 1);
    if (!out) {
        free(js);
        return NULL;
    }
    memset(out + n, ' ', padded - n);
    out[padded] = 0;
    *len = padded;
    return out;
}

static int cmp_plan_seq(const void *a, const void *b) {
    size_t x = ((const plan *)a)->seq, y = ((const plan *)b)->seq;
    return x < y ? -1 : x > y;
}

static int cmp_plan_name(const void *a, const void *b) {
    return strcmp(((const plan *)a)->name, ((const plan *)b)->name);
}

mk_status mk_stw_begin_data(mk_stw *w) {
    if (w->begun)
        return mk_err(MK_E_INTERNAL, "writer: begin_data called twice");
    /* a name twice would give a header with one entry and data for two */
    if (w->n) /* w->ts is NULL when nothing was added: qsort(NULL) is undefined */
        qsort(w->ts, w->n, sizeof *w->ts, cmp_plan_name);
    for (size_t i = 1; i < w->n; i++)
        if (strcmp(w->ts[i - 1].name, w->ts[i].name) == 0)
            return mk_err(MK_E_ARG, "writer: tensor '%s' added twice", w->ts[i].name);
    w->begun = true;
    if (w->n && !w->opts.keep_order)
        qsort(w->ts, w->n, sizeof *w->ts, cmp_plan);
    else if (w->n)
        qsort(w->ts, w->n, sizeof *w->ts, cmp_plan_seq); /* back to the order of mk_stw_add */
    for (size_t i = 0; i < w->n; i++)
        w->ts[i].info.name = w->ts[i].name; /* qsort moved the structs */
    /* shard cuts: greedy in plan order */
    size_t ns = 1;
    uint64_t used = 0;
    for (size_t i = 0; i < w->n; i++) {
        mk_tensor_info *t = &w->ts[i].info;
        if (w->opts.shard_size && used > 0 && used + t->nbytes > w->opts.shard_size) {
            ns++;
            used = 0;
        }
        t->shard = (int)(ns - 1);
        t->file_offset = used;
        used += t->nbytes;
    }
    w->shards = mk_calloc(ns, sizeof *w->shards);
    if (!w->shards)
        return mk_err(MK_E_NOMEM, "%s: no memory for the state of %zu shards", w->dir, ns);
    w->nshards = ns;
    for (size_t si = 0; si < ns; si++)
        w->shards[si].fd = -1;
    if (ns > 1 && !w->opts.force) {
        /* shard names depend on the count: an older set may not collide by
         * name, but its index would be replaced */
        char *ip = index_path(w);
        if (!ip)
            return mk_err(MK_E_NOMEM, "%s: no memory for the index path", w->dir);
        bool ex = mk_os_exists(ip);
        mk_status s = ex ? mk_err(MK_E_EXISTS, "%s already exists (use --force to overwrite)", ip) : MK_OK;
        free(ip);
        MK_TRY(s);
    }
    for (size_t si = 0; si < ns; si++) {
        wshard *sh = &w->shards[si];
        char *nm = shard_name(w, si, ns);
        char tmpn[600];
        snprintf(tmpn, sizeof tmpn, ".%s.tmp", nm ? nm : "");
        sh->final_path = nm ? mk_path_join(w->dir, nm) : NULL;
        sh->tmp_path = mk_path_join(w->dir, tmpn);
        free(nm);
        if (!sh->final_path || !sh->tmp_path)
            return mk_err(MK_E_NOMEM, "%s: no memory for the paths of shard %zu of %zu", w->dir, si + 1, ns);
        if (!w->opts.force && mk_os_exists(sh->final_path))
            return mk_err(MK_E_EXISTS, "%s already exists (use --force to overwrite)", sh->final_path);
        sh->fd = mk_os()->open(sh->tmp_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (sh->fd < 0)
            return mk_err(MK_E_IO, "%s: cannot create: %s", sh->tmp_path, strerror(errno));
        size_t hl;
        char *hdr = shard_header(w, si, &hl);
        if (!hdr)
            return mk_err(MK_E_NOMEM, "out of memory building the header of %s", sh->final_path);
        unsigned char lenb[8];
        for (int b = 0; b < 8; b++)
            lenb[b] = (unsigned char)((uint64_t)hl >> (8 * b));
        mk_status s = mk_os_pwrite_full(sh->fd, lenb, 8, 0, sh->tmp_path);
        if (s == MK_OK)
            s = mk_os_pwrite_full(sh->fd, hdr, hl, 8, sh->tmp_path);
        free(hdr);
        MK_TRY(s);
        sh->data_start = 8 + hl;
    }
    for (size_t i = 0; i < w->n; i++) {
        mk_tensor_info *t = &w->ts[i].info;
        w->shards[t->shard].data_len += t->nbytes;
    }
    w->buf = mk_malloc(MK_STW_BUF);
    if (!w->buf)
        return mk_err(MK_E_NOMEM, "%s: no memory for the write buffer of %u bytes", w->dir, MK_STW_BUF);
    w->cur = 0;
    w->cur_off = 0;
    return MK_OK;
}

size_t mk_stw_count(const mk_stw *w) { return w->n; }

int mk_stw_shard_fd(const mk_stw *w, size_t shard) {
    return w->begun && shard < w->nshards ? w->shards[shard].fd : -1;
}
const char *mk_stw_name(const mk_stw *w, size_t i) { return w->ts[i].name; }
const mk_tensor_info *mk_stw_info(const mk_stw *w, size_t i) { return &w->ts[i].info; }

static mk_status flush_buf(mk_stw *w) {
    if (w->buf_len == 0)
        return MK_OK;
    wshard *sh = &w->shards[w->buf_shard];
    mk_status s = mk_os_pwrite_full(sh->fd, w->buf, w->buf_len, w->buf_pos, sh->tmp_path);
    w->buf_len = 0;
    return s;
}

/* Skip over completed (including empty) tensors. */
static void advance(mk_stw *w) {
    while (w->cur < w->n && w->cur_off == w->ts[w->cur].info.nbytes) {
        w->cur++;
        w->cur_off = 0;
    }
}

mk_status mk_stw_write(mk_stw *w, const void *data, size_t n) {
    const unsigned char *p = data;
    if (!w->begun)
        return mk_err(MK_E_INTERNAL, "writer: write before begin_data");
    while (n > 0) {
        advance(w);
        if (w->cur >= w->n)
            return mk_err(MK_E_INTERNAL, "writer: %zu bytes written past the last tensor", n);
        const mk_tensor_info *t = &w->ts[w->cur].info;
        uint64_t left = t->nbytes - w->cur_off;
        size_t m = (size_t)(n < left ? n : left);
        wshard *sh = &w->shards[t->shard];
        uint64_t pos = sh->data_start + t->file_offset + w->cur_off;
        if (w->buf_shard != t->shard || w->buf_pos + w->buf_len != pos) {
            MK_TRY(flush_buf(w));
            w->buf_shard = t->shard;
            w->buf_pos = pos;
        }
        if (m >= MK_STW_BUF) { /* large chunk: straight through */
            MK_TRY(flush_buf(w));
            MK_TRY(mk_os_pwrite_full(sh->fd, p, m, pos, sh->tmp_path));
            w->buf_pos = pos + m;
        } else {
            if (w->buf_len + m > MK_STW_BUF) {
                MK_TRY(flush_buf(w));
                w->buf_pos = pos;
            }
            memcpy(w->buf + w->buf_len, p, m);
            w->buf_len += m;
        }
        w->cur_off += m;
        p += m;
        n -= m;
    }
    advance(w);
    return MK_OK;
}

mk_status mk_stw_copy_from_fd(mk_stw *w, int fd, uint64_t off, uint64_t n) {
    while (n > 0) {
        advance(w);
        if (w->cur >= w->n)
            return mk_err(MK_E_INTERNAL, "writer: copy past the last tensor");
        const mk_tensor_info *t = &w->ts[w->cur].info;
        uint64_t left = t->nbytes - w->cur_off, m = n < left ? n : left;
        wshard *sh = &w->shards[t->shard];
        MK_TRY(flush_buf(w));
        loff_t in = (loff_t)off, outp = (loff_t)(sh->data_start + t->file_offset + w->cur_off);
        uint64_t done = 0;
        while (done < m) {
            ssize_t r = mk_os()->copy_file_range(fd, &in, sh->fd, &outp, (size_t)(m - done > (1u << 30) ? (1u << 30) : m - done), 0);
            if (r <= 0) {
                if (r < 0 && (errno == ENOSPC || errno == EFBIG || errno == EDQUOT))
                    return mk_err(MK_E_NOSPACE, "%s: copy failed: %s", sh->tmp_path, strerror(errno));
                break; /* unsupported here: fall back to read + write */
            }
            done += (uint64_t)r;
        }
        if (done < m) {
            unsigned char *tmp = mk_malloc(1u << 20);
            if (!tmp)
                return mk_err(MK_E_NOMEM, "%s: no memory for a 1 MiB copy buffer (tensor '%s')", sh->tmp_path,
                              w->ts[w->cur].name);
            mk_status s = MK_OK;
            while (s == MK_OK && done < m) {
                size_t k = (size_t)((m - done) < (1u << 20) ? (m - done) : (1u << 20));
                s = mk_os_pread_full(fd, tmp, k, off + done, "source");
                if (s == MK_OK)
                    s = mk_os_pwrite_full(sh->fd, tmp, k, sh->data_start + t->file_offset + w->cur_off + done,
                                          sh->tmp_path);
                done += k;
            }
            free(tmp);
            MK_TRY(s);
        }
        w->cur_off += m;
        off += m;
        n -= m;
    }
    advance(w);
    return MK_OK;
}

static mk_status write_index(mk_stw *w) {
    /* as in shard_header: a failed allocation must not drop an entry */
    unsigned long mark = mk_json_mark();
    json_t *root = json_object(), *meta = json_object(), *wm = json_object();
    uint64_t total = 0;
    for (size_t i = 0; i < w->n; i++)
        total += w->ts[i].info.nbytes;
    json_object_set_new(meta, "total_size", json_integer((json_int_t)total));
    json_object_set_new(root, "metadata", meta);
    /* weight_map sorted by name, as HF writes it */
    plan **order = mk_malloc((w->n ? w->n : 1) * sizeof *order);
    if (!order) {
        json_decref(wm); /* not in root yet */
        json_decref(root);
        return mk_err(MK_E_NOMEM, "%s: no memory to sort the index of %zu tensors", w->dir, w->n);
    }
    for (size_t i = 0; i < w->n; i++)
        order[i] = &w->ts[i];
    for (size_t i = 0; i < w->n; i++) {
        const char *f = strrchr(w->shards[order[i]->info.shard].final_path, '/');
        json_object_set_new(wm, order[i]->name, json_string(f ? f + 1 : w->shards[order[i]->info.shard].final_path));
    }
    free(order);
    json_object_set_new(root, "weight_map", wm);
    char *js = mk_json_dumps_checked(root, JSON_INDENT(2) | JSON_SORT_KEYS, mark);
    json_decref(root);
    if (!js)
        return mk_err(MK_E_NOMEM, "%s: no memory to format the index of %zu tensors", w->dir, w->n);
    char *p = index_path(w);
    mk_status s = p ? mk_os_write_file_atomic(p, js, strlen(js))
                    : mk_err(MK_E_NOMEM, "%s: no memory for the index path", w->dir);
    free(p);
    free(js);
    return s;
}

mk_status mk_stw_finish(mk_stw *w) {
    if (!w->begun)
        MK_TRY(mk_stw_begin_data(w));
    advance(w);
    if (w->cur < w->n)
        return mk_err(MK_E_INTERNAL, "writer: tensor '%s' is missing %llu of its %llu bytes", w->ts[w->cur].name,
                      (unsigned long long)(w->ts[w->cur].info.nbytes - w->cur_off),
                      (unsigned long long)w->ts[w->cur].info.nbytes);
    MK_TRY(flush_buf(w));
    for (size_t i = 0; i < w->nshards; i++) {
        wshard *sh = &w->shards[i];
        /* an all-empty tail still needs the file to be exactly header + data long */
        if (mk_os()->ftruncate(sh->fd, (off_t)(sh->data_start + sh->data_len)) != 0)
            return mk_err(errno == ENOSPC || errno == EFBIG || errno == EDQUOT ? MK_E_NOSPACE : MK_E_IO,
                          "%s: truncate failed: %s", sh->tmp_path, strerror(errno));
        MK_TRY(mk_os_fsync(sh->fd, sh->tmp_path));
    }
    for (size_t i = 0; i < w->nshards; i++) {
        MK_TRY(mk_os_rename(w->shards[i].tmp_path, w->shards[i].final_path));
        w->shards[i].renamed = true;
    }
    if (w->nshards > 1) {
        w->index_tried = true;
        MK_TRY(write_index(w));
    }
    MK_TRY(mk_os_fsync_dir(w->dir));
    w->finished = true;
    return MK_OK;
}

void mk_stw_free(mk_stw *w) {
    if (!w)
        return;
    for (size_t i = 0; i < w->nshards; i++) {
        wshard *sh = &w->shards[i];
        if (sh->fd >= 0)
            close(sh->fd);
        if (!w->finished && sh->tmp_path)
            mk_os()->unlink(sh->tmp_path);
        /* all or nothing: a failed finish leaves no output behind */
        if (!w->finished && sh->renamed)
            mk_os()->unlink(sh->final_path);
        free(sh->final_path);
        free(sh->tmp_path);
    }
    if (!w->finished && w->index_tried) {
        char *ip = index_path(w);
        if (ip)
            mk_os()->unlink(ip);
        free(ip);
    }
    free(w->shards);
    for (size_t i = 0; i < w->n; i++)
        free(w->ts[i].name);
    free(w->ts);
    free(w->buf);
    free(w->dir);
    free(w->basename);
    free(w->metadata);
    free(w);
}
