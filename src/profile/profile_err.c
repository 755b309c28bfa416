/* Quantization error of every module at every candidate width.
 *
 * For each module and width b the rows are quantized with MLX's affine
 * quantizer (mk_quant_rows) and compared with their dequantization
 * (mk_quant_err_rows), a chunk of rows at a time, so memory is a few
 * buffers of MK_PROF_CHUNK elements per thread whatever the tensor size
 * (a 4096 x 7168 expert and a 151936 x 4096 lm_head cost the same). Float
 * views (F32/BF16/F16) are quantized straight from the mapping in their own
 * dtype, exactly as the quantize command would; views of already quantized
 * checkpoints (FP8, MLX, INT4) are dequantized to float32 rows first and
 * their scales counted as BF16.
 *
 * Threads: the pool runs one job per thread; each job claims whole modules
 * from a shared counter, largest first, so a huge embedding does not end up
 * last on one thread. Error messages are per thread in moekit, so the first
 * failure's message is copied into the shared context and re-raised on the
 * calling thread. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "moekit/kernels.h"
#include "moekit/quant.h"
#include "profile/profile_impl.h"

/* Elements per chunk of rows (at least one row). */
#define MK_PROF_CHUNK (1 << 18)

typedef struct err_ctx {
    const mk_prof_mod *mods;
    const size_t *order; /* modules by size, largest first */
    size_t n;
    const mk_prof_opts *o;
    mk_prof_tensor *out;
    atomic_size_t next, done;
    size_t done0, total; /* progress: this call's modules count from done0 of total */
    pthread_mutex_t mu;
    mk_err_slot err; /* first failure */
} err_ctx;

/* Per-thread chunk buffers, grown on demand. */
typedef struct bufs {
    float *f;  /* dequantized rows (quantized sources only) */
    void *wq, *sc, *bi;
    size_t f_cap, q_cap, s_cap, b_cap;
} bufs;

static void bufs_free(bufs *b) {
    free(b->f);
    free(b->wq);
    free(b->sc);
    free(b->bi);
}

static bool grow(void **p, size_t *cap, size_t need) {
    if (need <= *cap)
        return true;
    void *q = mk_realloc(*p, need);
    if (!q)
        return false;
    *p = q;
    *cap = need;
    return true;
}

static mk_dtype float_dtype(mk_wfmt f) {
    switch (f) {
    case MK_WF_F32: return MK_DT_F32;
    case MK_WF_BF16: return MK_DT_BF16;
    case MK_WF_F16: return MK_DT_F16;
    default: return MK_DT_INVALID;
    }
}

/* Rows [r0, r0+nr) of the view as quantizer input: the mapping itself for
 * float views, else float32 rows dequantized into b->f. */
static const void *chunk_in(const mk_wt *w, bool mapped, int64_t r0, int64_t nr, bufs *b) {
    if (mapped)
        return (const uint8_t *)w->data + (size_t)r0 * mk_wt_row_bytes(w);
    for (int64_t r = 0; r < nr; r++)
        mk_wt_dequant_row(w, r0 + r, b->f + r * w->cols);
    return b->f;
}

/* Error and bytes of one module at widths bits[0..nb); err/bytes out. */
static mk_status measure(const mk_prof_mod *md, const int *bits, int nb, int group, bufs *b,
                         double *err, uint64_t *bytes) {
    const mk_wt *w = md->w;
    int64_t rows = w->rows, cols = w->cols;
    mk_dtype fdt = float_dtype(w->fmt);
    mk_dtype in_dt = fdt != MK_DT_INVALID ? fdt : MK_DT_F32;
    mk_dtype scale_dt = fdt != MK_DT_INVALID ? fdt : MK_DT_BF16;
    mk_qparams qp[MK_PROF_MAX_BITS];
    mk_quant_err acc[MK_PROF_MAX_BITS];
    memset(acc, 0, sizeof acc);
    for (int k = 0; k < nb; k++) {
        MK_TRY(mk_quant_params(MK_QMODE_AFFINE, bits[k], group, 0.0f, &qp[k]));
        uint64_t wb, sb, bb;
        MK_TRY(mk_quant_out_bytes(&qp[k], scale_dt, rows, cols, &wb, &sb, &bb));
        bytes[k] = wb + sb + bb;
    }
    int64_t rpc = cols >= MK_PROF_CHUNK ? 1 : MK_PROF_CHUNK / cols;
    if (rpc > rows)
        rpc = rows;
    size_t ne = (size_t)(rpc * cols), ng = (size_t)(rpc * (cols / group));
    bool mapped = fdt != MK_DT_INVALID;
    if ((!mapped && !grow((void **)&b->f, &b->f_cap, ne * sizeof(float))) ||
        !grow(&b->wq, &b->q_cap, ne) || /* at most 8 bits per element */
        !grow(&b->sc, &b->s_cap, ng * sizeof(float)) || !grow(&b->bi, &b->b_cap, ng * sizeof(float)))
        return mk_err(MK_E_NOMEM, "profile: no memory for a chunk of %lld rows of '%s'",
                      (long long)rpc, md->source);
    for (int64_t r0 = 0; r0 < rows; r0 += rpc) {
        int64_t nr = rows - r0 < rpc ? rows - r0 : rpc;
        const void *in = chunk_in(w, mapped, r0, nr, b);
        uint64_t bad = 0;
        MK_TRY(mk_quant_count_nonfinite(in_dt, in, (uint64_t)(nr * cols), &bad));
        if (bad)
            return mk_err(MK_E_FORMAT, "tensor '%s': %llu non-finite values in rows %lld..%lld",
                          md->source, (unsigned long long)bad, (long long)r0,
                          (long long)(r0 + nr - 1));
        for (int k = 0; k < nb; k++) {
            MK_TRY(mk_quant_rows(&qp[k], in_dt, in, nr, cols, b->wq, b->sc, b->bi));
            MK_TRY(mk_quant_err_rows(&qp[k], in_dt, in, b->wq, b->sc, b->bi, nr, cols, &acc[k]));
        }
    }
    for (int k = 0; k < nb; k++)
        err[k] = acc[k].ref2 > 0 ? acc[k].err2 / acc[k].ref2 : 0.0;
    return MK_OK;
}

/* Fill everything about module md except usage. */
static mk_status one_module(const mk_prof_mod *md, const mk_prof_opts *o, bufs *b,
                            mk_prof_tensor *t) {
    const mk_wt *w = md->w;
    t->kind = md->kind;
    t->layer = md->layer;
    t->expert = md->expert;
    t->rows = w->rows;
    t->cols = w->cols;
    t->params = (uint64_t)w->rows * (uint64_t)w->cols;
    if (mk_quant_check(MK_QMODE_AFFINE, o->bits[0], o->group, w->cols, NULL) != MK_OK) {
        /* stays in float: its dtype's width, bf16 for a dequantized source */
        mk_dtype fdt = float_dtype(w->fmt);
        t->kind = MK_PROF_FLOAT;
        t->fixed_bits = (int)mk_dtype_info(fdt != MK_DT_INVALID ? fdt : MK_DT_BF16)->bits;
        t->fixed_bytes = t->params * (uint64_t)t->fixed_bits / 8;
        mk_err_clear();
        return MK_OK;
    }
    if (md->kind == MK_PROF_ROUTER) {
        t->fixed_bits = o->router_bits;
        return measure(md, &o->router_bits, 1, o->group, b, &t->fixed_err, &t->fixed_bytes);
    }
    return measure(md, o->bits, o->n_bits, o->group, b, t->err, t->bytes);
}

static void worker(void *arg, int64_t b0, int64_t b1) {
    (void)b0;
    (void)b1;
    err_ctx *c = arg;
    bufs b = {0};
    for (;;) {
        size_t k = atomic_fetch_add(&c->next, 1);
        if (k >= c->n)
            break;
        pthread_mutex_lock(&c->mu);
        bool failed = c->err.st != MK_OK;
        pthread_mutex_unlock(&c->mu);
        if (failed)
            break;
        size_t i = c->order[k];
        mk_status st = one_module(&c->mods[i], c->o, &b, &c->out[i]);
        pthread_mutex_lock(&c->mu);
        mk_err_slot_set(&c->err, st);
        size_t d = atomic_fetch_add(&c->done, 1) + 1;
        if (c->o->progress && st == MK_OK)
            c->o->progress(c->o->progress_user, "error", (int64_t)(c->done0 + d), (int64_t)c->total);
        pthread_mutex_unlock(&c->mu);
    }
    bufs_free(&b);
}

typedef struct sized {
    uint64_t params;
    size_t i;
} sized;

static int by_size_desc(const void *a, const void *b) {
    const sized *x = a, *y = b;
    if (x->params != y->params)
        return x->params < y->params ? 1 : -1;
    return x->i < y->i ? -1 : 1; /* stable */
}

mk_status mk_prof_errors(const mk_prof_mod *mods, size_t nmods, const mk_prof_subset *sub,
                         const mk_prof_opts *o, mk_prof_tensor *out) {
    size_t n = sub ? sub->n : nmods;
    size_t *order = mk_malloc((n ? n : 1) * sizeof *order);
    sized *sz = mk_malloc((n ? n : 1) * sizeof *sz);
    if (!order || !sz) {
        free(order);
        free(sz);
        return mk_err(MK_E_NOMEM, "profile: no memory for %zu modules", n);
    }
    for (size_t k = 0; k < n; k++) {
        size_t i = sub && sub->idx ? sub->idx[k] : k;
        sz[k] = (sized){(uint64_t)mods[i].w->rows * (uint64_t)mods[i].w->cols, i};
    }
    qsort(sz, n, sizeof *sz, by_size_desc);
    for (size_t i = 0; i < n; i++)
        order[i] = sz[i].i;
    free(sz);
    mk_pool *pool = NULL;
    mk_status st = mk_pool_create(o->threads, &pool);
    if (st != MK_OK) {
        free(order);
        return st;
    }
    err_ctx c = {.mods = mods, .order = order, .n = n, .o = o, .out = out,
                 .done0 = sub ? sub->done0 : 0, .total = sub && sub->total ? sub->total : n};
    atomic_init(&c.next, 0);
    atomic_init(&c.done, 0);
    pthread_mutex_init(&c.mu, NULL);
    /* one job per thread; each job pulls modules until none are left */
    mk_pool_for(pool, mk_pool_size(pool), 1, worker, &c);
    pthread_mutex_destroy(&c.mu);
    mk_pool_free(pool);
    free(order);
    return mk_err_slot_raise(&c.err);
}
