/* The CPU backend: the reference implementation of every backend slot,
 * on top of src/kernels (matmuls and vector ops) and its thread pool.
 *
 * Matmuls thread inside mk_matmul, MLA's per-head products over heads.
 * Attention threads over (token, kv head, block of query heads) and the
 * Gated DeltaNet recurrence over value heads (prefill in its chunked form);
 * both work without scratch memory (two-pass softmax, fixed per-head arrays
 * on the stack: about 64 KiB per attention work item, 180 KiB per chunked
 * GDN one), so the slots stay infallible and allocation-free. Arithmetic mirrors the
 * transformers float32 reference: reductions in f32, softplus with its
 * threshold of 20, l2norm as x * rsqrt(sum x^2 + 1e-6). Its memory is host
 * memory (host_mem): alloc is aligned_alloc, upload/download are memcpy,
 * and no slot can fail, so sync always returns MK_OK. */
#include <math.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "engine/engine_impl.h"
#include "moekit/backend.h"
#include "moekit/kernels.h"

typedef struct cpu_ctx {
    mk_pool *pool;
} cpu_ctx;

/* ---- memory ---------------------------------------------------------------- */

static mk_status cpu_alloc(void *ctx, size_t bytes, void **out) {
    (void)ctx;
    size_t n = (bytes + 63) & ~(size_t)63;
    *out = mk_aligned_alloc(64, n ? n : 64);
    if (!*out)
        return mk_err(MK_E_NOMEM, "CPU backend: cannot allocate %zu bytes", bytes);
    memset(*out, 0, n);
    return MK_OK;
}

static void cpu_buf_free(void *ctx, void *p) {
    (void)ctx;
    free(p);
}

static void cpu_memcpy(void *ctx, void *dst, const void *src, size_t bytes) {
    (void)ctx;
    if (bytes && dst != src)
        memcpy(dst, src, bytes);
}

static void cpu_zero(void *ctx, void *dst, size_t bytes) {
    (void)ctx;
    if (bytes)
        memset(dst, 0, bytes);
}

static mk_status cpu_sync(void *ctx) {
    (void)ctx;
    return MK_OK;
}

static int64_t cpu_find_nonfinite(void *ctx, const float *x, int64_t n) {
    (void)ctx;
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return i;
    return -1;
}

/* ---- data movement ------------------------------------------------------------ */

static void cpu_copy(void *ctx, float *dst, int64_t ds0, int64_t ds1, const float *src,
                     int64_t ss0, int64_t ss1, int64_t n0, int64_t n1, int64_t width) {
    (void)ctx;
    for (int64_t i = 0; i < n0; i++)
        for (int64_t j = 0; j < n1; j++)
            memcpy(dst + i * ds0 + j * ds1, src + i * ss0 + j * ss1, (size_t)width * sizeof(float));
}

static void cpu_gather(void *ctx, float *dst, const float *src, const int32_t *rows, int64_t m,
                       int64_t dim) {
    (void)ctx;
    for (int64_t i = 0; i < m; i++)
        memcpy(dst + i * dim, src + (int64_t)rows[i] * dim, (size_t)dim * sizeof(float));
}

static void cpu_scatter(void *ctx, float *dst, const float *src, const int32_t *rows, int64_t m,
                        int64_t dim) {
    (void)ctx;
    for (int64_t i = 0; i < m; i++)
        memcpy(dst + (int64_t)rows[i] * dim, src + i * dim, (size_t)dim * sizeof(float));
}

static void cpu_matmul(void *ctx, const mk_wt *w, const float *x, int64_t n, float *y) {
    mk_matmul(((cpu_ctx *)ctx)->pool, w, x, n, y);
}

static void cpu_matmul_n(void *ctx, const mk_wt *const *w, int count, const float *x, int64_t n,
                         float *const *ys) {
    mk_matmul_n(((cpu_ctx *)ctx)->pool, w, count, x, n, ys);
}

static void cpu_matmul_each(void *ctx, const mk_wt *w, const float *x, int64_t n, float *y) {
    mk_matmul_each(((cpu_ctx *)ctx)->pool, w, x, n, y);
}

static void cpu_get_rows(void *ctx, const mk_wt *w, const int32_t *ids, int64_t n, float *y) {
    (void)ctx;
    for (int64_t t = 0; t < n; t++)
        mk_wt_dequant_row(w, ids[t], y + t * w->cols);
}

/* Element-wise and row-wise steps of a prefill chunk are split over the
 * pool above this many floats (a decode step's are too small to wake it);
 * each element's floats do not depend on the split. */
#define MK_EW_PAR 65536
#define MK_EW_BLOCK 4096 /* floats per item of the flat element-wise steps */

typedef struct ew_job {
    float *x;
    const float *a, *b;
    const int32_t *order;
    int64_t dim, xs, as;
    int k;
    float eps;
} ew_job;

/* fn over n items on the pool when the work (floats) is large enough,
 * else on the calling thread */
static void ew_run(void *ctx, int64_t n, int64_t work, void (*fn)(void *, int64_t, int64_t), ew_job *j) {
    if (work >= MK_EW_PAR)
        mk_pool_for(((cpu_ctx *)ctx)->pool, n, 1, fn, j);
    else
        fn(j, 0, n);
}

static void rmsnorm_task(void *ctx, int64_t rb, int64_t re) {
    const ew_job *j = ctx;
    for (int64_t r = rb; r < re; r++)
        mk_rmsnorm(j->x + r * j->xs, j->a + r * j->as, j->b, j->dim, j->eps, false);
}

static void cpu_rmsnorm(void *ctx, float *y, int64_t y_stride, const float *x, int64_t x_stride,
                        const float *g, int64_t rows, int64_t dim, float eps) {
    ew_job j = {.x = y, .a = x, .b = g, .dim = dim, .xs = y_stride, .as = x_stride, .eps = eps};
    ew_run(ctx, rows, rows * dim, rmsnorm_task, &j);
}

static void cpu_rope(void *ctx, float *x, int64_t n, int64_t tok_stride, int n_heads,
                     int64_t head_stride, int rot_dim, const float *cos, const float *sin,
                     bool interleave) {
    (void)ctx;
    int half = rot_dim / 2;
    float tmp[MK_ENGINE_MAX_HEAD_DIM];
    for (int64_t t = 0; t < n; t++) {
        const float *c = cos + t * half, *s = sin + t * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + t * tok_stride + h * head_stride;
            if (interleave) { /* (x0,x1),(x2,x3).. -> evens | odds, as HF de-interleaves */
                for (int i = 0; i < half; i++) {
                    tmp[i] = v[2 * i];
                    tmp[i + half] = v[2 * i + 1];
                }
                memcpy(v, tmp, (size_t)rot_dim * sizeof(float));
            }
            for (int i = 0; i < half; i++) {
                float x0 = v[i], x1 = v[i + half];
                v[i] = x0 * c[i] - x1 * s[i];
                v[i + half] = x1 * c[i] + x0 * s[i];
            }
        }
    }
}

/* ---- attention ----------------------------------------------------------- */

/* Query heads that share one pass over their kv head's cache rows: with
 * MLA's single latent head (or GQA groups) a cache row is loaded once for a
 * block of heads instead of once per head. Each head's arithmetic is the
 * same whatever the block, so results do not depend on it. */
#define MK_ATTN_HB 8
/* Scores of the first positions kept on the stack between the two softmax
 * passes (later ones are recomputed): the same floats either way. */
#define MK_ATTN_SC 1024

typedef struct attn_job {
    const mk_attn_args *a;
    int g, hb, nb;  /* heads per kv head, heads per block, blocks per kv head */
    int64_t ks, vs; /* cache row strides */
} attn_job;

/* The positions token t sees, [*s0, end) (the return), or with a DSA
 * selection (*sel set) the first `end` entries of its row: a sliding
 * window sees the last `window` positions, itself included; a selection
 * the row's entries up to the first -1 (never both). */
static int64_t attn_seen(const mk_attn_args *a, int64_t t, int64_t *s0, const int32_t **sel) {
    int64_t T = a->pos0 + t + 1;
    *s0 = a->window > 0 && T > a->window ? T - a->window : 0;
    *sel = a->sel ? a->sel + t * a->sel_k : NULL;
    if (!*sel)
        return T;
    int64_t m = 0;
    while (m < a->sel_k && m < T && (*sel)[m] >= 0)
        m++;
    *s0 = 0;
    return m;
}

/* One work item: token t, kv head j, query heads h0 .. h0+nh-1 of its group.
 * The positions seen are 0 .. pos0+t, or the token's sel row (DSA), in
 * ascending order either way: a selection of the whole past is bitwise the
 * dense result. */
static void attn_heads(const attn_job *j, int64_t t, int kvh, int h0, int nh) {
    const mk_attn_args *a = j->a;
    float acc[MK_ATTN_HB][MK_ENGINE_MAX_HEAD_DIM], mx[MK_ATTN_HB], sum[MK_ATTN_HB];
    float sc[MK_ATTN_HB][MK_ATTN_SC];
    int64_t s0;
    const int32_t *sel;
    const int64_t T = attn_seen(a, t, &s0, &sel);
    const float *k = a->k + (int64_t)kvh * a->dk, *v = a->v + (int64_t)kvh * a->dv;
    const float *q = a->q + (t * a->n_heads + h0) * a->dk;
    /* pass 1: the max score (the sink's logit included), so pass 2 is
     * exactly softmax(x - max) */
    for (int i = 0; i < nh; i++)
        mx[i] = a->sinks ? a->sinks[h0 + i] : -INFINITY;
    for (int64_t s = s0; s < T; s++) {
        int64_t r = sel ? sel[s] : s; /* cache row of the s-th position seen */
        for (int i = 0; i < nh; i++) {
            float x = mk_dot_f32(q + i * a->dk, k + r * j->ks, a->dk) * a->scale;
            if (s - s0 < MK_ATTN_SC)
                sc[i][s - s0] = x;
            mx[i] = x > mx[i] ? x : mx[i];
        }
    }
    for (int i = 0; i < nh; i++) {
        sum[i] = a->sinks ? expf(a->sinks[h0 + i] - mx[i]) : 0.0f;
        memset(acc[i], 0, (size_t)a->dv * sizeof(float));
    }
    for (int64_t s = s0; s < T; s++) {
        int64_t r = sel ? sel[s] : s;
        for (int i = 0; i < nh; i++) {
            float x = s - s0 < MK_ATTN_SC ? sc[i][s - s0]
                                          : mk_dot_f32(q + i * a->dk, k + r * j->ks, a->dk) * a->scale;
            float p = expf(x - mx[i]);
            sum[i] += p;
            mk_axpy(acc[i], p, v + r * j->vs, a->dv);
        }
    }
    for (int i = 0; i < nh; i++) {
        float *o = a->out + (t * a->n_heads + h0 + i) * a->dv, inv = 1.0f / sum[i];
        for (int d = 0; d < a->dv; d++)
            o[d] = acc[i][d] * inv;
    }
}

static void attn_task(void *ctx, int64_t b, int64_t e) {
    const attn_job *j = ctx;
    int64_t per_tok = (int64_t)j->a->n_kv * j->nb;
    for (int64_t item = b; item < e; item++) {
        int64_t t = item / per_tok, r = item % per_tok;
        int kvh = (int)(r / j->nb), h0 = kvh * j->g + (int)(r % j->nb) * j->hb;
        int end = (kvh + 1) * j->g, nh = end - h0 < j->hb ? end - h0 : j->hb;
        attn_heads(j, t, kvh, h0, nh);
    }
}

/* ---- attention of a chunk of tokens: blocks of query rows ---------------- */

/* A chunk of n >= 2 tokens (prefill) runs mk_attn_block on items of up to
 * MK_ATTN_ROWS query rows sharing one kv head: hb heads of its group for qb
 * consecutive tokens (one token with a DSA selection, whose keys are the
 * token's own list). Every lo is 0 without a window, so a selection of the
 * whole past stays bitwise the dense result (test_dsa). Decode (n == 1)
 * keeps attn_heads. */
typedef struct attnb_job {
    const mk_attn_args *a;
    int g, hb, nhb, qb;
    int64_t nqb, ks, vs;
} attnb_job;

static void attnb_task(void *ctx, int64_t b, int64_t e) {
    const attnb_job *j = ctx;
    const mk_attn_args *a = j->a;
    mk_attn_blk blk;
    blk.dk = a->dk;
    blk.dv = a->dv;
    blk.ks = j->ks;
    blk.vs = j->vs;
    blk.scale = a->scale;
    blk.sinks = a->sinks != NULL;
    for (int64_t it = b; it < e; it++) {
        const int64_t tb = it % j->nqb, rest = it / j->nqb;
        const int kvh = (int)(rest / j->nhb), h0 = kvh * j->g + (int)(rest % j->nhb) * j->hb;
        const int hn = (kvh + 1) * j->g - h0 < j->hb ? (kvh + 1) * j->g - h0 : j->hb;
        const int64_t t0 = tb * j->qb, t1 = t0 + j->qb < a->n ? t0 + j->qb : a->n;
        blk.k = a->k + (int64_t)kvh * a->dk;
        blk.v = a->v + (int64_t)kvh * a->dv;
        int r = 0;
        blk.idx = NULL;
        for (int64_t t = t0; t < t1; t++) {
            int64_t s0;
            const int32_t *sel;
            const int64_t T = attn_seen(a, t, &s0, &sel);
            if (sel) /* one token per item (qb 1) */
                blk.idx = sel;
            for (int h = h0; h < h0 + hn; h++, r++) {
                blk.q[r] = a->q + (t * a->n_heads + h) * a->dk;
                blk.out[r] = a->out + (t * a->n_heads + h) * a->dv;
                blk.lo[r] = s0;
                blk.hi[r] = T;
                blk.sink[r] = a->sinks ? a->sinks[h] : 0.0f;
            }
        }
        blk.nr = r;
        mk_attn_block(&blk);
    }
}

static void cpu_attention(void *ctx, const mk_attn_args *args) {
    mk_pool *pool = ((cpu_ctx *)ctx)->pool;
    mk_attn_args da = *args;
    const mk_attn_args *a = &da;
    attn_job j = {.a = a, .g = a->n_heads / a->n_kv, .hb = MK_ATTN_HB};
    j.ks = a->k_stride ? a->k_stride : (int64_t)a->n_kv * a->dk;
    j.vs = a->v_stride ? a->v_stride : (int64_t)a->n_kv * a->dv;
    if (a->pos_dev) { /* backend memory is host memory here: the position and the new rows */
        da.pos0 = *a->pos_dev;
        memmove((float *)a->k + da.pos0 * j.ks, a->k_new, (size_t)j.ks * sizeof(float));
        if (a->v_new != a->k_new || a->v != a->k)
            memmove((float *)a->v + da.pos0 * j.vs, a->v_new, (size_t)j.vs * sizeof(float));
    }
    const int64_t want = 2 * (int64_t)mk_pool_size(pool);
    if (a->n >= 2 && a->dk <= MK_ATTN_MAXD && a->dv <= MK_ATTN_MAXD) {
        attnb_job b = {.a = a, .g = j.g, .ks = j.ks, .vs = j.vs};
        b.hb = b.g < MK_ATTN_ROWS ? b.g : MK_ATTN_ROWS;
        b.nhb = (b.g + b.hb - 1) / b.hb;
        b.qb = a->sel ? 1 : MK_ATTN_ROWS / b.hb; /* a selection is per token */
        /* smaller token blocks while there would be fewer than two items per thread */
        while (b.qb > 1 && a->n_kv * b.nhb * ((a->n + b.qb - 1) / b.qb) < want)
            b.qb /= 2;
        b.nqb = (a->n + b.qb - 1) / b.qb;
        mk_pool_for(pool, a->n_kv * b.nhb * b.nqb, 1, attnb_task, &b);
        return;
    }
    /* smaller blocks while there would be fewer than two items per thread */
    while (j.hb > 1 && a->n * a->n_kv * ((j.g + j.hb - 1) / j.hb) < want)
        j.hb /= 2;
    j.nb = (j.g + j.hb - 1) / j.hb;
    mk_pool_for(pool, a->n * a->n_kv * j.nb, 1, attn_task, &j);
}

/* A batched decode step's attention (backend.h's attention_each): each
 * sequence's new rows written into its caches, then its attention as the
 * engine's per-sequence calls would run it (the same results by
 * construction; on the CPU the point is one seam for every backend, so the
 * engine's batched path that hands the rows over is the one tested). */
static bool cpu_attention_each(void *ctx, const mk_attn_args *a, int n) {
    for (int i = 0; i < n; i++)
        if (a[i].n != 1 || a[i].sel || a[i].pos_dev || !a[i].k_new || !a[i].v_new)
            return false;
    for (int i = 0; i < n; i++) {
        const mk_attn_args *x = &a[i];
        const int64_t ks = x->k_stride ? x->k_stride : (int64_t)x->n_kv * x->dk;
        const int64_t vs = x->v_stride ? x->v_stride : (int64_t)x->n_kv * x->dv;
        memmove((float *)x->k + x->pos0 * ks, x->k_new, (size_t)ks * sizeof(float));
        if (x->v_new != x->k_new || x->v != x->k)
            memmove((float *)x->v + x->pos0 * vs, x->v_new, (size_t)vs * sizeof(float));
        mk_attn_args one = *x;
        one.k_new = one.v_new = NULL;
        cpu_attention(ctx, &one);
    }
    return true;
}

/* ---- DeepSeek sparse attention: the indexer's selection --------------------- */

/* Is (x, s) a better candidate than (y, r)? Higher score, then lower
 * position: a strict total order, so the kept set is unique whatever the
 * visiting order. */
static bool dsa_better(float x, int32_t s, float y, int32_t r) {
    return x > y || (x == y && s < r);
}

/* Restore the min-heap (root = worst kept) below slot i of m entries. */
static void dsa_sift(float *sc, int32_t *ix, int m, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < m && dsa_better(sc[w], ix[w], sc[l], ix[l]))
            w = l;
        if (r < m && dsa_better(sc[w], ix[w], sc[r], ix[r]))
            w = r;
        if (w == i)
            return;
        float tf = sc[i];
        sc[i] = sc[w];
        sc[w] = tf;
        int32_t ti = ix[i];
        ix[i] = ix[w];
        ix[w] = ti;
        i = w;
    }
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Token t: every past position scored, the best m kept in a min-heap of
 * the row's scratch (O(T log m)), then written in ascending order. */
static void dsa_token(const mk_dsa_args *a, int64_t t) {
    int64_t T = a->pos0 + t + 1;
    int m = T < a->topk ? (int)T : a->topk, kept = 0;
    float *sc = a->sc + t * a->topk;
    int32_t *ix = a->sel + t * a->topk;
    const float *q = a->q + t * a->n_heads * a->dim, *w = a->w + t * a->n_heads;
    for (int64_t s = 0; s < T; s++) {
        const float *ks = a->k + s * a->dim;
        float x = 0.0f;
        for (int h = 0; h < a->n_heads; h++) {
            float d = mk_dot_f32(q + (int64_t)h * a->dim, ks, a->dim) * a->scale;
            x += (w[h] * a->w_scale) * (d > 0.0f ? d : 0.0f);
        }
        if (kept < m) { /* filling: sift the new entry up */
            int i = kept++;
            sc[i] = x;
            ix[i] = (int32_t)s;
            while (i > 0 && dsa_better(sc[(i - 1) / 2], ix[(i - 1) / 2], sc[i], ix[i])) {
                int p = (i - 1) / 2;
                float tf = sc[i];
                sc[i] = sc[p];
                sc[p] = tf;
                int32_t ti = ix[i];
                ix[i] = ix[p];
                ix[p] = ti;
                i = p;
            }
        } else if (dsa_better(x, (int32_t)s, sc[0], ix[0])) {
            sc[0] = x;
            ix[0] = (int32_t)s;
            dsa_sift(sc, ix, m, 0);
        }
    }
    qsort(ix, (size_t)m, sizeof *ix, cmp_i32);
    for (int j = m; j < a->topk; j++)
        ix[j] = -1;
}

static void dsa_task(void *ctx, int64_t b, int64_t e) {
    for (int64_t t = b; t < e; t++)
        dsa_token(ctx, t);
}

static void cpu_dsa_select(void *ctx, const mk_dsa_args *a) {
    mk_pool_for(((cpu_ctx *)ctx)->pool, a->n, 1, dsa_task, (void *)a);
}

static void cpu_layernorm(void *ctx, float *y, const float *x, const float *g, const float *b,
                          int64_t rows, int64_t dim, float eps) {
    (void)ctx;
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        float *yr = y + r * dim, mean = 0.0f, var = 0.0f;
        for (int64_t i = 0; i < dim; i++)
            mean += xr[i];
        mean /= (float)dim;
        for (int64_t i = 0; i < dim; i++)
            var += (xr[i] - mean) * (xr[i] - mean);
        float inv = 1.0f / sqrtf(var / (float)dim + eps);
        for (int64_t i = 0; i < dim; i++)
            yr[i] = (xr[i] - mean) * inv * g[i] + b[i];
    }
}

/* ---- per-head products (MLA) ------------------------------------------------ */

static void head_mm_task(void *ctx, int64_t b, int64_t e) {
    const mk_head_mm_args *a = ctx;
    for (int64_t h = b; h < e; h++) {
        int64_t r0 = a->r0 + h * a->hstep;
        mk_matmul_rows(a->w, r0, r0 + a->nr, a->x + h * a->x_head, a->x_tok, a->n,
                       a->y + h * a->y_head, a->y_tok);
    }
}

static void head_mm_t_task(void *ctx, int64_t b, int64_t e) {
    const mk_head_mm_args *a = ctx;
    for (int64_t h = b; h < e; h++) {
        int64_t r0 = a->r0 + h * a->hstep;
        mk_matmul_rows_t(a->w, r0, r0 + a->nr, a->x + h * a->x_head, a->x_tok, a->n,
                         a->y + h * a->y_head, a->y_tok);
    }
}

static void cpu_head_matmul(void *ctx, const mk_head_mm_args *a) {
    mk_pool_for(((cpu_ctx *)ctx)->pool, a->n_heads, 1, head_mm_task, (void *)a);
}

static void cpu_head_matmul_t(void *ctx, const mk_head_mm_args *a) {
    mk_pool_for(((cpu_ctx *)ctx)->pool, a->n_heads, 1, head_mm_t_task, (void *)a);
}

/* ---- Gated DeltaNet -------------------------------------------------------- */

typedef struct conv_job {
    const float *u, *w, *state;
    float *y;
    int64_t u_stride, n, C;
    int K;
} conv_job;

#define MK_CONV_BLOCK 256 /* channels per item of the prefill conv1d */

/* Channel blocks [bb, be) of MK_CONV_BLOCK for every token: each output's
 * floats do not depend on the split. */
static void conv_task(void *ctx, int64_t bb, int64_t be) {
    const conv_job *j = ctx;
    const int64_t C = j->C, cb = bb * MK_CONV_BLOCK, ce = be * MK_CONV_BLOCK < C ? be * MK_CONV_BLOCK : C;
    const int K = j->K;
    for (int64_t t = 0; t < j->n; t++) {
        float *yt = j->y + t * C;
        for (int64_t c = cb; c < ce; c++) {
            float acc = 0.0f;
            for (int k = 0; k < K; k++) {
                int64_t idx = t - K + 1 + k; /* input time of tap k */
                float in = idx < 0 ? j->state[(K - 1 + idx) * C + c] : j->u[idx * j->u_stride + c];
                acc += j->w[c * K + k] * in;
            }
            yt[c] = acc / (1.0f + expf(-acc));
        }
    }
}

/* A chunk of tokens (prefill) splits the channels over the pool; one token
 * (decode) is too little work to wake it. */
static void cpu_conv1d_silu(void *ctx, const float *u, int64_t u_stride, float *y, int64_t n,
                            int64_t C, int K, const float *w, float *state) {
    conv_job j = {.u = u, .w = w, .state = state, .y = y, .u_stride = u_stride, .n = n, .C = C, .K = K};
    const int64_t nb = (C + MK_CONV_BLOCK - 1) / MK_CONV_BLOCK;
    if (n > 1)
        mk_pool_for(((cpu_ctx *)ctx)->pool, nb, 1, conv_task, &j);
    else
        conv_task(&j, 0, nb);
    /* keep the last K-1 inputs; ascending order reads rows not yet overwritten */
    for (int s = 0; s < K - 1; s++) {
        int64_t idx = n - (K - 1) + s;
        if (idx < 0)
            memmove(state + (int64_t)s * C, state + (s + n) * C, (size_t)C * sizeof(float));
        else
            memcpy(state + (int64_t)s * C, u + idx * u_stride, (size_t)C * sizeof(float));
    }
}

static float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

static void l2norm(float *y, const float *x, int d, float scale) {
    float ss = 0.0f;
    for (int i = 0; i < d; i++)
        ss += x[i] * x[i];
    float inv = 1.0f / sqrtf(ss + 1e-6f);
    for (int i = 0; i < d; i++)
        y[i] = x[i] * inv * scale;
}

/* ---- Gated DeltaNet prefill, chunked ---------------------------------------
 * The recurrence above, unrolled over a chunk of C tokens with cumulative
 * log decays G_c = g_1 + .. + g_c (g = log of the token's decay, <= 0) and
 * the state S0 at the chunk's start:
 *   S_c = e^{G_c} S0 + sum_{s<=c} e^{G_c - G_s} k_s d_s^T
 *   d_c = beta_c (v_c - e^{G_c} S0^T k_c) - sum_{s<c} beta_c e^{G_c - G_s} (k_c . k_s) d_s
 *   o_c = e^{G_c} S0^T q_c + sum_{s<=c} e^{G_c - G_s} (k_s . q_c) d_s
 * (the delta rule in its chunked form, as flash-linear-attention and
 * transformers' torch_chunk_gated_delta_rule compute it: a unit lower
 * triangular system for the d's, solved here by forward substitution).
 * Every factor e^{G_c - G_s} (s <= c) and e^{G_c} is at most 1, so nothing
 * is divided and nothing overflows. The work that grows with dk*dv, S0^T k
 * and S0^T q for every token and the state update sum_s e^{G_C - G_s} k_s
 * d_s^T, becomes three row-major float32 products (mk_gemm_f32: S0 and the
 * deltas as they lie, no transposed copy) instead of four passes over the
 * state per token. Results differ from the token loop only by float32
 * rounding (test_backend_ops holds both to the same bound against a double
 * reference). Heads larger than MK_GDN_DMAX use the token loop (stack
 * scratch). */
#define MK_GDN_C 48     /* tokens per chunk: 12 of the products' 4-row tiles */
#define MK_GDN_DMAX 128 /* largest dk and dv of the chunked form (Qwen3-Next/3.5: 128) */

typedef struct gdn_chunk_buf {
    alignas(64) float T[MK_GDN_DMAX * MK_GDN_DMAX]; /* the state update */
    alignas(64) float qn[MK_GDN_C * MK_GDN_DMAX];   /* [c][dk] normalised q, scaled */
    alignas(64) float kn[MK_GDN_C * MK_GDN_DMAX];   /* [c][dk] normalised k */
    alignas(64) float d[MK_GDN_C * MK_GDN_DMAX];    /* [c][dv] the deltas d_c */
    alignas(64) float kt[MK_GDN_DMAX * MK_GDN_C];   /* [dk][c] e^{G_C - G_c} k_c transposed */
    alignas(64) float knt[MK_GDN_DMAX * MK_GDN_C];  /* [dk][c] k_c transposed */
    alignas(64) float kk[MK_GDN_C * MK_GDN_C];      /* k_c . k_s, then l_cs */
    alignas(64) float qk[MK_GDN_C * MK_GDN_C];      /* q_c . k_s, then masked and decayed */
    alignas(64) float tmp[MK_GDN_C * MK_GDN_DMAX];  /* [c][dv] products before their sums */
    float G[MK_GDN_C], beta[MK_GDN_C];
} gdn_chunk_buf;

/* Tokens [t0, t0 + C) of value head h, state S updated in place. */
static void gdn_chunk(const mk_gdn_args *a, int64_t h, int64_t t0, int C, float *S, gdn_chunk_buf *b) {
    const int dk = a->dk, dv = a->dv;
    const int64_t kh = h / (a->nv / a->nk), ostr = (int64_t)a->nv * dv;
    const float qscale = 1.0f / sqrtf((float)dk), neg_A = -expf(a->A_log[h]);
    for (int c = 0; c < C; c++) {
        int64_t t = t0 + c;
        l2norm(b->qn + c * dk, a->q + t * a->stride + kh * dk, dk, qscale);
        l2norm(b->kn + c * dk, a->k + t * a->stride + kh * dk, dk, 1.0f);
        b->beta[c] = 1.0f / (1.0f + expf(-a->b[t * a->nv + h]));
        float g = neg_A * softplus(a->a[t * a->nv + h] + a->dt_bias[h]);
        b->G[c] = c ? b->G[c - 1] + g : g;
    }
    /* S0^T k_c into d, S0^T q_c into the outputs: [C, dk] x S0 [dk, dv] */
    float *o0 = a->out + (t0 * a->nv + h) * dv;
    mk_gemm_f32(C, dv, dk, b->kn, dk, S, dv, b->d, dv);
    mk_gemm_f32(C, dv, dk, b->qn, dk, S, dv, o0, ostr);
    /* the chunk's k . k and q . k: [C, dk] x kn^T [dk, C] */
    for (int c = 0; c < C; c++)
        for (int i = 0; i < dk; i++)
            b->knt[i * C + c] = b->kn[c * dk + i];
    mk_gemm_f32(C, C, dk, b->kn, dk, b->knt, C, b->kk, C);
    mk_gemm_f32(C, C, dk, b->qn, dk, b->knt, C, b->qk, C);
    /* d_c = beta_c (v_c - e^{G_c} S0^T k_c) - sum_{s<c} l_cs d_s, row by
     * row (each row needs the ones before it) */
    for (int c = 0; c < C; c++) {
        const float *v = a->v + (t0 + c) * a->stride + h * dv;
        float *dc = b->d + c * dv, eg = expf(b->G[c]);
        for (int j = 0; j < dv; j++)
            dc[j] = b->beta[c] * (v[j] - eg * dc[j]);
        if (c == 0)
            continue;
        for (int s = 0; s < c; s++) /* l_cs = beta_c e^{G_c - G_s} (k_c . k_s) */
            b->kk[c * C + s] = b->beta[c] * expf(b->G[c] - b->G[s]) * b->kk[c * C + s];
        mk_gemm_f32(1, dv, c, b->kk + c * C, C, b->d, dv, b->tmp, dv);
        for (int j = 0; j < dv; j++)
            dc[j] -= b->tmp[j];
    }
    /* o_c = e^{G_c} S0^T q_c + sum_{s<=c} e^{G_c - G_s} (k_s . q_c) d_s:
     * the masked, decayed q . k times the deltas in one product */
    for (int c = 0; c < C; c++)
        for (int s = 0; s < C; s++)
            b->qk[c * C + s] = s <= c ? expf(b->G[c] - b->G[s]) * b->qk[c * C + s] : 0.0f;
    mk_gemm_f32(C, dv, C, b->qk, C, b->d, dv, b->tmp, dv);
    for (int c = 0; c < C; c++) {
        float *oc = o0 + c * ostr;
        const float eg = expf(b->G[c]);
        for (int j = 0; j < dv; j++)
            oc[j] = eg * oc[j] + b->tmp[c * dv + j];
    }
    /* S = e^{G_C} S0 + sum_s (e^{G_C - G_s} k_s) d_s^T: kt [dk, C] x d [C, dv] */
    const float gl = b->G[C - 1];
    for (int c = 0; c < C; c++) {
        float f = expf(gl - b->G[c]);
        for (int i = 0; i < dk; i++)
            b->kt[i * C + c] = f * b->kn[c * dk + i];
    }
    mk_gemm_f32(dk, dv, C, b->kt, C, b->d, dv, b->T, dv);
    const float egl = expf(gl);
    for (int64_t i = 0; i < (int64_t)dk * dv; i++)
        S[i] = egl * S[i] + b->T[i];
}

/* Both GDN tasks flush subnormals (kernels.h mk_fp_flush_subnormals: a
 * fast-decaying head's factors underflow, and each subnormal operand costs
 * a microcode assist). */
static void gdn_chunk_task(void *ctx, int64_t hb, int64_t he) {
    const mk_gdn_args *a = ctx;
    const mk_fpmode fm = mk_fp_flush_subnormals();
    gdn_chunk_buf b;
    for (int64_t h = hb; h < he; h++) {
        float *S = a->state + h * a->dk * a->dv;
        for (int64_t t0 = 0; t0 < a->n; t0 += MK_GDN_C)
            gdn_chunk(a, h, t0, a->n - t0 < MK_GDN_C ? (int)(a->n - t0) : MK_GDN_C, S, &b);
    }
    mk_fp_restore(fm);
}

static void gdn_task(void *ctx, int64_t hb, int64_t he) {
    const mk_gdn_args *a = ctx;
    int r = a->nv / a->nk, dk = a->dk, dv = a->dv;
    float q[MK_ENGINE_MAX_HEAD_DIM], k[MK_ENGINE_MAX_HEAD_DIM], d[MK_ENGINE_MAX_HEAD_DIM];
    float qscale = 1.0f / sqrtf((float)dk);
    const mk_fpmode fm = mk_fp_flush_subnormals();
    for (int64_t h = hb; h < he; h++) {
        int64_t kh = h / r;
        float *S = a->state + h * dk * dv; /* [dk, dv] */
        float neg_A = -expf(a->A_log[h]);
        for (int64_t t = 0; t < a->n; t++) {
            const float *row = a->q + t * a->stride;
            l2norm(q, row + kh * dk, dk, qscale);
            l2norm(k, a->k + t * a->stride + kh * dk, dk, 1.0f);
            const float *v = a->v + t * a->stride + h * dv;
            float beta = 1.0f / (1.0f + expf(-a->b[t * a->nv + h]));
            float decay = expf(neg_A * softplus(a->a[t * a->nv + h] + a->dt_bias[h]));
            /* S = exp(g) S;  d = beta (v - S^T k);  S += k d^T;  o = S^T q */
            for (int64_t i = 0; i < (int64_t)dk * dv; i++)
                S[i] *= decay;
            for (int j = 0; j < dv; j++)
                d[j] = 0.0f;
            for (int i = 0; i < dk; i++)
                mk_axpy(d, k[i], S + (int64_t)i * dv, dv);
            for (int j = 0; j < dv; j++)
                d[j] = (v[j] - d[j]) * beta;
            for (int i = 0; i < dk; i++)
                mk_axpy(S + (int64_t)i * dv, k[i], d, dv);
            float *o = a->out + (t * a->nv + h) * dv;
            for (int j = 0; j < dv; j++)
                o[j] = 0.0f;
            for (int i = 0; i < dk; i++)
                mk_axpy(o, q[i], S + (int64_t)i * dv, dv);
        }
    }
    mk_fp_restore(fm);
}

/* Decode (one token) and heads past MK_GDN_DMAX: the token loop; prefill:
 * the chunked form. */
static void cpu_gdn(void *ctx, const mk_gdn_args *a) {
    bool chunked = a->n > 1 && a->dk <= MK_GDN_DMAX && a->dv <= MK_GDN_DMAX;
    mk_pool_for(((cpu_ctx *)ctx)->pool, a->nv, 1, chunked ? gdn_chunk_task : gdn_task, (void *)a);
}

/* A batched decode step's conv and delta rule (backend.h's _each slots):
 * the one-sequence calls in turn (the same results by construction; the
 * point on the CPU is that the engine's batched path through the slots is
 * the one tested). */
static bool cpu_conv1d_silu_each(void *ctx, const float *u, int64_t u_stride, float *y, int n, int64_t C, int K,
                                 const float *w, float *const *states) {
    for (int i = 0; i < n; i++)
        cpu_conv1d_silu(ctx, u + i * u_stride, u_stride, y + i * C, 1, C, K, w, states[i]);
    return true;
}

static bool cpu_gdn_each(void *ctx, const mk_gdn_args *a, int n) {
    for (int i = 0; i < n; i++)
        if (a[i].n != 1)
            return false;
    for (int i = 0; i < n; i++)
        cpu_gdn(ctx, &a[i]);
    return true;
}

static void gated_task(void *ctx, int64_t rb, int64_t re) {
    const ew_job *j = ctx;
    for (int64_t r = rb; r < re; r++) {
        float *xr = j->x + r * j->dim;
        const float *zr = j->a + r * j->dim;
        mk_rmsnorm(xr, xr, j->b, j->dim, j->eps, false);
        for (int64_t i = 0; i < j->dim; i++)
            xr[i] *= zr[i] / (1.0f + expf(-zr[i]));
    }
}

static void cpu_gated_rmsnorm(void *ctx, float *x, const float *z, const float *g, int64_t rows,
                              int64_t dim, float eps) {
    ew_job j = {.x = x, .a = z, .b = g, .dim = dim, .eps = eps};
    ew_run(ctx, rows, rows * dim, gated_task, &j);
}

/* ---- element-wise ---------------------------------------------------------- */

static void swiglu_task(void *ctx, int64_t bb, int64_t be) {
    const ew_job *j = ctx;
    const int64_t n = j->dim, b0 = bb * MK_EW_BLOCK, b1 = be * MK_EW_BLOCK < n ? be * MK_EW_BLOCK : n;
    mk_swiglu(j->x + b0, j->a + b0, j->b + b0, b1 - b0);
}

static void cpu_swiglu(void *ctx, float *y, const float *gate, const float *up, int64_t n) {
    ew_job j = {.x = y, .a = gate, .b = up, .dim = n};
    ew_run(ctx, (n + MK_EW_BLOCK - 1) / MK_EW_BLOCK, n, swiglu_task, &j);
}

static void cpu_clamped_swiglu(void *ctx, float *y, const float *gate, const float *up, int64_t n,
                               int64_t s, float alpha, float limit) {
    (void)ctx;
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i * s], u = up[i * s];
        g = g > limit ? limit : g; /* NaN stays NaN (refused after the block) */
        u = u < -limit ? -limit : u > limit ? limit : u;
        y[i] = g / (1.0f + expf(-alpha * g)) * (u + 1.0f);
    }
}

/* Gate and up of every expert in one mk_matvec_multi (x prepared once for
 * all of them), the SwiGLU per expert, then every down in a second one. */
static void cpu_expert_mlps(void *ctx, const mk_expert *const *ex, int count, const float *x,
                            float *const *ys, float *g, float *u) {
    mk_pool *p = ((cpu_ctx *)ctx)->pool;
    enum { BATCH = 32 };
    mk_mv_item it[2 * BATCH];
    for (int i0 = 0; i0 < count; i0 += BATCH) {
        int nb = count - i0 < BATCH ? count - i0 : BATCH;
        int64_t off = 0;
        for (int i = 0; i < nb; i++) {
            const mk_expert *e = ex[i0 + i];
            it[2 * i] = (mk_mv_item){&e->gate, x, g + off};
            it[2 * i + 1] = (mk_mv_item){&e->up, x, u + off};
            off += e->gate.rows;
        }
        mk_matvec_multi(p, it, 2 * nb);
        off = 0;
        for (int i = 0; i < nb; i++) {
            const mk_expert *e = ex[i0 + i];
            mk_swiglu(g + off, g + off, u + off, e->gate.rows);
            it[i] = (mk_mv_item){&e->down, g + off, ys[i0 + i]};
            off += e->gate.rows;
        }
        mk_matvec_multi(p, it, nb);
    }
}

/* Every expert's gate and up in one mk_matmul_each_multi (an expert's
 * gate shares x's preparation with its up), the SwiGLU per expert, then
 * every down in a second one (more regions only when the preparations
 * overflow the stack area). */
static void cpu_expert_mlps_each(void *ctx, const mk_expert *const *ex, int count,
                                 const float *const *x, const int64_t *n, float *const *ys,
                                 float *g, float *u) {
    mk_pool *p = ((cpu_ctx *)ctx)->pool;
    enum { BATCH = 32 };
    mk_mm_item it[2 * BATCH];
    for (int i0 = 0; i0 < count; i0 += BATCH) {
        int nb = count - i0 < BATCH ? count - i0 : BATCH;
        int64_t off = 0;
        for (int i = 0; i < nb; i++) {
            const mk_expert *e = ex[i0 + i];
            it[2 * i] = (mk_mm_item){&e->gate, x[i0 + i], n[i0 + i], g + off};
            it[2 * i + 1] = (mk_mm_item){&e->up, x[i0 + i], n[i0 + i], u + off};
            off += n[i0 + i] * e->gate.rows;
        }
        mk_matmul_each_multi(p, it, 2 * nb);
        off = 0;
        for (int i = 0; i < nb; i++) {
            const mk_expert *e = ex[i0 + i];
            int64_t len = n[i0 + i] * e->gate.rows;
            mk_swiglu(g + off, g + off, u + off, len);
            it[i] = (mk_mm_item){&e->down, g + off, n[i0 + i], ys[i0 + i]};
            off += len;
        }
        mk_matmul_each_multi(p, it, nb);
    }
}

static void sigmoid_mul_task(void *ctx, int64_t bb, int64_t be) {
    const ew_job *j = ctx;
    const int64_t b0 = bb * MK_EW_BLOCK, b1 = be * MK_EW_BLOCK < j->dim ? be * MK_EW_BLOCK : j->dim;
    for (int64_t i = b0; i < b1; i++)
        j->x[i] *= 1.0f / (1.0f + expf(-j->a[i]));
}

static void cpu_sigmoid_mul(void *ctx, float *x, const float *gate, int64_t n) {
    ew_job j = {.x = x, .a = gate, .dim = n};
    ew_run(ctx, (n + MK_EW_BLOCK - 1) / MK_EW_BLOCK, n, sigmoid_mul_task, &j);
}

static void cpu_axpy(void *ctx, float *y, float a, const float *x, int64_t n) {
    (void)ctx;
    mk_axpy(y, a, x, n);
}

/* ---- MoE ------------------------------------------------------------------ */

/* Indices of the k largest of s[0..n) into idx (descending, lowest index
 * first on ties, as a stable selection). k is small (<= ~16). */
static void topk(const float *s, int n, int k, int32_t *idx) {
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int i = 0; i < n; i++) {
            bool taken = false;
            for (int q = 0; q < j && !taken; q++)
                taken = idx[q] == i;
            if (!taken && (best < 0 || s[i] > s[best]))
                best = i;
        }
        idx[j] = best;
    }
}

/* Qwen: softmax over all experts (f32), top-k, renormalised when asked. */
static void route_softmax(const mk_route_args *a, const float *logits, int32_t *idx, float *wt) {
    float p[MK_BACKEND_MAX_EXPERTS];
    memcpy(p, logits, (size_t)a->E * sizeof(float));
    mk_softmax(p, a->E);
    topk(p, a->E, a->k, idx);
    float sum = 0.0f;
    for (int j = 0; j < a->k; j++)
        sum += (wt[j] = p[idx[j]]);
    if (a->norm)
        for (int j = 0; j < a->k; j++)
            wt[j] /= sum;
}

/* DeepSeek-V3 grouped sigmoid routing (masked groups are 0, as
 * transformers' masked_fill). */
static void route_grouped(const mk_route_args *a, const float *logits, int32_t *idx, float *wt) {
    int E = a->E, k = a->k;
    int G = a->n_group > 0 ? a->n_group : 1, TG = a->topk_group > 0 ? a->topk_group : 1;
    int per = E / G;
    float choice[MK_BACKEND_MAX_EXPERTS], gs[MK_BACKEND_MAX_EXPERTS];
    int32_t gi[2], keep[MK_BACKEND_MAX_EXPERTS];
    for (int i = 0; i < E; i++)
        choice[i] = 1.0f / (1.0f + expf(-logits[i])) + (a->bias ? a->bias[i] : 0.0f);
    for (int g = 0; g < G; g++) {
        topk(choice + g * per, per, 2, gi);
        gs[g] = choice[g * per + gi[0]] + choice[g * per + gi[1]];
    }
    topk(gs, G, TG, keep);
    for (int g = 0; g < G; g++) {
        bool kept = false;
        for (int j = 0; j < TG; j++)
            kept |= keep[j] == g;
        if (!kept)
            for (int i = 0; i < per; i++)
                choice[g * per + i] = 0.0f;
    }
    topk(choice, E, k, idx);
    float sum = 0.0f;
    for (int j = 0; j < k; j++)
        sum += (wt[j] = 1.0f / (1.0f + expf(-logits[idx[j]])));
    for (int j = 0; j < k; j++) {
        if (a->norm)
            wt[j] /= sum + 1e-20f;
        wt[j] *= a->scale;
    }
}

static void cpu_route(void *ctx, const mk_route_args *a) {
    (void)ctx;
    for (int64_t t = 0; t < a->n; t++) {
        const float *lg = a->logits + t * a->E;
        if (a->kind == MK_ROUTE_GROUPED_SIGMOID)
            route_grouped(a, lg, a->idx + t * a->k, a->w + t * a->k);
        else
            route_softmax(a, lg, a->idx + t * a->k, a->w + t * a->k);
    }
}

static void combine_task(void *ctx, int64_t tb, int64_t te) {
    const ew_job *j = ctx;
    for (int64_t t = tb; t < te; t++) {
        float *yt = j->x + t * j->dim;
        memset(yt, 0, (size_t)j->dim * sizeof(float));
        for (int s = 0; s < j->k; s++) {
            int64_t i = t * j->k + j->order[t * j->k + s];
            mk_axpy(yt, j->b[i], j->a + i * j->dim, j->dim);
        }
    }
}

static void cpu_combine(void *ctx, float *y, const float *x, const float *w,
                        const int32_t *order, int64_t n, int k, int64_t dim) {
    ew_job j = {.x = y, .a = x, .b = w, .order = order, .dim = dim, .k = k};
    ew_run(ctx, n, n * k * dim, combine_task, &j);
}

static void gated_add_task(void *ctx, int64_t tb, int64_t te) {
    const ew_job *j = ctx;
    for (int64_t t = tb; t < te; t++) {
        float a = j->b ? 1.0f / (1.0f + expf(-j->b[t])) : 1.0f;
        mk_axpy(j->x + t * j->dim, a, j->a + t * j->dim, j->dim);
    }
}

static void cpu_gated_add(void *ctx, float *y, const float *g, const float *x, int64_t n,
                          int64_t dim) {
    ew_job j = {.x = y, .a = x, .b = g, .dim = dim};
    ew_run(ctx, n, n * dim, gated_add_task, &j);
}

static void cpu_free(void *ctx) { free(ctx); }

static const mk_backend_i g_cpu = {
    .name = "cpu",
    .host_mem = true,
    .sinks_window = true,
    .alloc = cpu_alloc,
    .buf_free = cpu_buf_free,
    .upload = cpu_memcpy,
    .download = cpu_memcpy,
    .zero = cpu_zero,
    .sync = cpu_sync,
    .copy = cpu_copy,
    .gather = cpu_gather,
    .scatter = cpu_scatter,
    .find_nonfinite = cpu_find_nonfinite,
    .matmul = cpu_matmul,
    .get_rows = cpu_get_rows,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .attention = cpu_attention,
    .head_matmul = cpu_head_matmul,
    .head_matmul_t = cpu_head_matmul_t,
    .conv1d_silu = cpu_conv1d_silu,
    .gdn = cpu_gdn,
    .gated_rmsnorm = cpu_gated_rmsnorm,
    .swiglu = cpu_swiglu,
    .clamped_swiglu = cpu_clamped_swiglu,
    .expert_mlps = cpu_expert_mlps,
    .layernorm = cpu_layernorm,
    .dsa_select = cpu_dsa_select,
    .sigmoid_mul = cpu_sigmoid_mul,
    .axpy = cpu_axpy,
    .route = cpu_route,
    .combine = cpu_combine,
    .gated_add = cpu_gated_add,
    .matmul_each = cpu_matmul_each,
    .matmul_n = cpu_matmul_n,
    .expert_mlps_each = cpu_expert_mlps_each,
    .attention_each = cpu_attention_each,
    .conv1d_silu_each = cpu_conv1d_silu_each,
    .gdn_each = cpu_gdn_each,
    .free = cpu_free,
};

mk_status mk_backend_cpu_create(mk_pool *pool, mk_backend **out) {
    *out = NULL;
    cpu_ctx *c = mk_calloc(1, sizeof *c);
    if (!c)
        return mk_err(MK_E_NOMEM, "no memory for the CPU backend");
    c->pool = pool;
    return mk_backend_create(&g_cpu, c, out);
}
