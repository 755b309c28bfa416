/* Matrix products over weight views (kernels.h: mk_matmul, mk_matmul_ref)
 * on the kernel table of the active path (isa.h).
 *
 * Two shapes matter. Decode (n == 1) is a memory-bound matvec: rows are
 * split across threads and each format's fused kernel streams its packed
 * row once, dequantizing in registers (MLX affine 4/8 bits on every x86
 * path unless mk_kernels_set_int8(false): x quantized to int8 once per
 * call by the prep slot, integer dots; see kern_impl.h). Prefill (n > 1) is a tiled product:
 * work items are (16-row block, 64-token block) pairs; inside one, the 16
 * rows are dequantized 128 columns at a time, packed into a panel and
 * multiplied against every token of the block by the table's gemm_panel
 * (6 tokens x 16 rows per register tile, kern_panel.c), so a weight row is
 * read and dequantized once per 64 tokens. Tables without panels (the
 * portable and AVX-512 ones), and blocks of fewer than MK_PANEL_MIN_TOK
 * tokens (small experts' batches), use 4-row tiles of 512 columns and
 * gemm_tile.
 *
 * Formats without a fused kernel in the active table use the same tiled
 * path with n = 1, and formats without a SIMD dequantizer use the portable
 * one from wt.c; both are slot lookups, never per-format branches. A fused
 * kernel may ask for x to be prepared once per call (group sums, a reordered
 * copy): that lives on the caller's stack, up to MK_AUX_MAX floats.
 *
 * mk_matmul_rows / mk_matmul_rows_t run on one row range and the calling
 * thread, with token strides, for MLA's per-head slices of kv_b (the CPU
 * backend threads them over heads): the same tiles and fused matvecs, and a
 * transposed product that adds dequantized rows into the outputs. */
#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kern_gemm_q8.h"
#include "kernels/kern_impl.h"
#include "moekit/kernels.h"

#define MK_ROW_BLOCK 16  /* rows per prefill work item (multiple of 4) */
#define MK_TOK_BLOCK 64  /* tokens per prefill work item */
#define MK_AUX_MAX 24576 /* floats of per-call matvec preparation on the stack */
/* Fewest tokens of a block worth packing a panel for: below it the
 * transposition costs more than the register tile saves (AVX2, bench_gemm:
 * panels 10% slower at 8 tokens, 17% faster at 16). Token blocks are a
 * fixed partition of the n tokens, so which path an output takes does not
 * depend on the thread count. */
#define MK_PANEL_MIN_TOK 12

/* ---- table selection (the path itself is core's one switch, isa.h) ---- */

static const mk_kern_i *isa_table(mk_isa isa) {
    switch (isa) {
#ifdef MK_KERN_X86
    case MK_ISA_AVX2: return &mk_kern_avx2;
    case MK_ISA_AVXVNNI: return mk_kern_avxvnni();
    case MK_ISA_AVX512: return &mk_kern_avx512;
    case MK_ISA_AVX512VNNI:
    case MK_ISA_AMX: return mk_kern_avx512vnni(); /* AMX adds only the prefill GEMM's table */
#endif
    default: return &mk_kern_ref;
    }
}

const mk_kern_i *mk_kern_active(void) {
    return isa_table(mk_isa_active());
}

/* ---- int8 activations: the default where the path has integer dots ----- */

/* -1: the default (int8 on every path but ref, read at each call so a
 * later mk_isa_set is followed); 0 / 1: forced by mk_kernels_set_int8 */
static int g_int8 = -1;

void mk_kernels_set_int8(bool on) {
    __atomic_store_n(&g_int8, on ? 1 : 0, __ATOMIC_RELEASE);
}

void mk_kernels_reset_int8(void) {
    __atomic_store_n(&g_int8, -1, __ATOMIC_RELEASE);
}

bool mk_kernels_int8(void) {
    int v = __atomic_load_n(&g_int8, __ATOMIC_ACQUIRE);
    /* ref's int8 kernel is a scalar twin kept for testing: plain C has no
     * integer dot product to gain from, so the portable path stays float */
    return v < 0 ? mk_isa_active() != MK_ISA_REF : v != 0;
}

int mk_kernels_int8_setting(void) {
    return __atomic_load_n(&g_int8, __ATOMIC_ACQUIRE);
}

void mk_kernels_restore_int8(int setting) {
    __atomic_store_n(&g_int8, setting < 0 ? -1 : setting != 0, __ATOMIC_RELEASE);
}

/* -1: follows mk_kernels_int8 (decode's setting: one switch, --act-int8,
 * for both); 0 / 1: forced by mk_kernels_set_prefill_int8 */
static int g_prefill_int8 = -1;

void mk_kernels_set_prefill_int8(bool on) {
    __atomic_store_n(&g_prefill_int8, on ? 1 : 0, __ATOMIC_RELEASE);
}

void mk_kernels_reset_prefill_int8(void) {
    __atomic_store_n(&g_prefill_int8, -1, __ATOMIC_RELEASE);
}

bool mk_kernels_prefill_int8(void) {
    int v = __atomic_load_n(&g_prefill_int8, __ATOMIC_ACQUIRE);
    return v < 0 ? mk_kernels_int8() : v != 0;
}

int mk_kernels_prefill_int8_setting(void) {
    return __atomic_load_n(&g_prefill_int8, __ATOMIC_ACQUIRE);
}

void mk_kernels_restore_prefill_int8(int setting) {
    __atomic_store_n(&g_prefill_int8, setting < 0 ? -1 : setting != 0, __ATOMIC_RELEASE);
}

/* ---- reference -------------------------------------------------------- */

void mk_matmul_ref(const mk_wt *w, const float *x, int64_t n, float *y) {
    float buf[MK_KCHUNK];
    for (int64_t r = 0; r < w->rows; r++) {
        for (int64_t t = 0; t < n; t++)
            y[t * w->rows + r] = 0.0f;
        for (int64_t c0 = 0; c0 < w->cols; c0 += MK_KCHUNK) {
            int64_t c1 = c0 + MK_KCHUNK < w->cols ? c0 + MK_KCHUNK : w->cols;
            mk_wt_dequant_range(w, r, c0, c1, buf);
            for (int64_t t = 0; t < n; t++) {
                const float *xt = x + t * w->cols + c0;
                float acc = y[t * w->rows + r];
                for (int64_t c = 0; c < c1 - c0; c++)
                    acc += buf[c] * xt[c];
                y[t * w->rows + r] = acc;
            }
        }
    }
}

/* ---- tiled path ------------------------------------------------------- */

typedef struct mm_ctx {
    const mk_kern_i *k;
    const mk_wt *w;
    const float *x;
    float *y;
    int64_t n;
    int64_t nrb;      /* row blocks per token block */
    const float *aux; /* the matvec's prepared x (n == 1 fused path) */
    mk_matvec_fn mv;  /* n == 1: the fused matvec usable here (int8 or float x), or NULL */
} mm_ctx;

/* tiles() on a table with panel products (kern_impl.h): 16-row panels of
 * 128 columns, dequantized and packed once for all nt tokens. */
static void tiles_panel(const mk_kern_i *k, const mk_wt *w, int64_t r0, int64_t r1, const float *x,
                        int64_t ldx, int64_t nt, float *y, int64_t ldy) {
    const int64_t cols = w->cols;
    mk_dequant_fn dq = k->dequant[w->fmt] ? k->dequant[w->fmt] : mk_wt_dequant_range;
    const bool direct = w->fmt == MK_WF_F32 && (uintptr_t)w->data % sizeof(float) == 0;
    alignas(64) float buf[MK_PANEL_R * MK_PANEL_K]; /* dequantized rows */
    alignas(64) float pa[MK_PANEL_R * MK_PANEL_K];  /* the packed panel */
    for (int64_t t = 0; t < nt; t++)
        memset(y + t * ldy, 0, (size_t)(r1 - r0) * sizeof(float));
    for (int64_t r = r0; r < r1; r += MK_PANEL_R) {
        int nr = r1 - r < MK_PANEL_R ? (int)(r1 - r) : MK_PANEL_R;
        for (int64_t c0 = 0; c0 < cols; c0 += MK_PANEL_K) {
            int64_t c1 = c0 + MK_PANEL_K < cols ? c0 + MK_PANEL_K : cols;
            if (direct) { /* already float: packed straight from the weight */
                k->pack_panel((const float *)w->data + r * cols + c0, cols, nr, c1 - c0, pa);
            } else {
                for (int i = 0; i < nr; i++)
                    dq(w, r + i, c0, c1, buf + i * MK_PANEL_K);
                k->pack_panel(buf, MK_PANEL_K, nr, c1 - c0, pa);
            }
            k->gemm_panel(pa, c1 - c0, nr, x + c0, ldx, nt, y + (r - r0), ldy);
        }
    }
}

/* Rows [r0, r1) of W times nt tokens of x (token stride ldx) into y (token
 * stride ldy, pointing at row r0 of token 0): panels where the table has
 * them, else 4-row tiles of 512-column chunks. */
static void tiles(const mk_kern_i *k, const mk_wt *w, int64_t r0, int64_t r1, const float *x, int64_t ldx,
                  int64_t nt, float *y, int64_t ldy) {
    if (k->gemm_panel && nt >= MK_PANEL_MIN_TOK) {
        tiles_panel(k, w, r0, r1, x, ldx, nt, y, ldy);
        return;
    }
    const int64_t cols = w->cols;
    mk_dequant_fn dq = k->dequant[w->fmt] ? k->dequant[w->fmt] : mk_wt_dequant_range;
    /* 64-byte aligned: gemm_tile's row loads then never split a cache line
     * (a 16-byte aligned buffer cost 15-20% of prefill speed, varying with
     * where the stack landed) */
    alignas(64) float buf[4 * MK_KCHUNK];
    for (int64_t t = 0; t < nt; t++)
        memset(y + t * ldy, 0, (size_t)(r1 - r0) * sizeof(float));
    for (int64_t r = r0; r < r1; r += 4) {
        int nr = r1 - r < 4 ? (int)(r1 - r) : 4;
        for (int64_t c0 = 0; c0 < cols; c0 += MK_KCHUNK) {
            int64_t c1 = c0 + MK_KCHUNK < cols ? c0 + MK_KCHUNK : cols;
            const float *a = buf;
            int64_t lda = MK_KCHUNK;
            if (w->fmt == MK_WF_F32 && (uintptr_t)w->data % sizeof(float) == 0) {
                /* already float: no copy (unaligned f32 goes through dq) */
                a = (const float *)w->data + r * cols + c0;
                lda = cols;
            } else {
                for (int i = 0; i < nr; i++)
                    dq(w, r + i, c0, c1, buf + i * MK_KCHUNK);
            }
            k->gemm_tile(a, lda, nr, x + c0, ldx, (int)nt, c1 - c0, y + (r - r0), ldy);
        }
    }
}

/* Rows [r0, r1) x tokens [t0, t1) of one mk_matmul call. */
static void mm_tiles(const mm_ctx *m, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
    const int64_t rows = m->w->rows, cols = m->w->cols;
    tiles(m->k, m->w, r0, r1, m->x + t0 * cols, cols, t1 - t0, m->y + t0 * rows + r0, rows);
}

static void mm_prefill_task(void *ctx, int64_t b, int64_t e) {
    const mm_ctx *m = ctx;
    for (int64_t i = b; i < e; i++) {
        int64_t rb = i % m->nrb, tb = i / m->nrb;
        int64_t r0 = rb * MK_ROW_BLOCK, t0 = tb * MK_TOK_BLOCK;
        int64_t r1 = r0 + MK_ROW_BLOCK < m->w->rows ? r0 + MK_ROW_BLOCK : m->w->rows;
        int64_t t1 = t0 + MK_TOK_BLOCK < m->n ? t0 + MK_TOK_BLOCK : m->n;
        mm_tiles(m, r0, r1, t0, t1);
    }
}

static void mm_decode_task(void *ctx, int64_t b, int64_t e) {
    const mm_ctx *m = ctx;
    if (m->mv)
        m->mv(m->w, b, e, m->x, m->aux, m->y + b);
    else
        mm_tiles(m, b, e, 0, 1);
}

/* Rows per decode work item: about 16 KiB of packed weight, at least 4. */
static int64_t decode_grain(const mk_wt *w) {
    size_t rb = mk_wt_row_bytes(w);
    int64_t g = rb ? (int64_t)((16 * 1024) / rb) : 64;
    return g < 4 ? 4 : g;
}

void mk_matmul(mk_pool *p, const mk_wt *w, const float *x, int64_t n, float *y) {
    if (n <= 0 || w->rows <= 0)
        return;
    if (w->cols <= 0) {
        memset(y, 0, (size_t)(n * w->rows) * sizeof(float));
        return;
    }
    mm_ctx m = {.k = mk_kern_active(), .w = w, .x = x, .y = y, .n = n};
    if (n == 1) {
        alignas(64) float aux[MK_AUX_MAX];
        mk_prep_fn qprep = m.k->qprep[w->fmt], prep = m.k->prep[w->fmt];
        if (mk_kernels_int8() && m.k->qmatvec[w->fmt] && qprep && qprep(w, x, aux, MK_AUX_MAX))
            m.mv = m.k->qmatvec[w->fmt]; /* x quantized once here, shared by every row */
        else if (m.k->matvec[w->fmt] && (!prep || prep(w, x, aux, MK_AUX_MAX)))
            m.mv = m.k->matvec[w->fmt];
        m.aux = aux;
        mk_pool_for(p, w->rows, decode_grain(w), mm_decode_task, &m);
        return;
    }
    if (mk_kernels_prefill_int8() && mk_gq8_fits(&w, 1, n)) { /* int8 activations (kern_gemm_q8.c) */
        mk_gq8_matmul(p, &w, 1, x, n, &y);
        return;
    }
    m.nrb = (w->rows + MK_ROW_BLOCK - 1) / MK_ROW_BLOCK;
    int64_t ntb = (n + MK_TOK_BLOCK - 1) / MK_TOK_BLOCK;
    mk_pool_for(p, m.nrb * ntb, 1, mm_prefill_task, &m);
}

/* Several weights of one input: on int8 activations x is quantized once
 * for all of them and every product runs in the same regions; otherwise
 * (or when they differ in layout) one mk_matmul each. Either way each y is
 * bitwise mk_matmul's (an int8 product depends only on its weight, x and
 * n). */
void mk_matmul_n(mk_pool *p, const mk_wt *const *w, int count, const float *x, int64_t n, float *const *ys) {
    if (n > 1 && mk_kernels_prefill_int8() && mk_gq8_fits(w, count, n)) {
        mk_gq8_matmul(p, w, count, x, n, ys);
        return;
    }
    for (int i = 0; i < count; i++)
        mk_matmul(p, w[i], x, n, ys[i]);
}

/* ---- many single-token products in one region --------------------------- */

#define MK_MULTI_MAX 64 /* items per parallel region */

typedef struct mv_plan {
    mk_matvec_fn mv;  /* fused matvec, or NULL: the tiled path */
    const float *aux; /* its prepared x */
    int64_t grain;    /* rows per task */
} mv_plan;

typedef struct multi_ctx {
    const mk_kern_i *k;
    const mk_mv_item *it;
    int count;
    mv_plan pl[MK_MULTI_MAX];
    int64_t start[MK_MULTI_MAX + 1]; /* first task of each item; start[count] = all */
} multi_ctx;

/* Tasks [b, e): task t is rows [(t - start[i]) * grain, ...) of item i, run
 * by the same functions as mk_matmul's decode (rows are independent, so
 * how they are split does not change a bit). */
static void multi_task(void *ctx, int64_t b, int64_t e) {
    const multi_ctx *m = ctx;
    int i = 0;
    for (int64_t t = b; t < e; t++) {
        while (t >= m->start[i + 1])
            i++;
        const mk_mv_item *it = &m->it[i];
        const mv_plan *pl = &m->pl[i];
        int64_t r0 = (t - m->start[i]) * pl->grain;
        int64_t r1 = r0 + pl->grain < it->w->rows ? r0 + pl->grain : it->w->rows;
        if (pl->mv)
            pl->mv(it->w, r0, r1, it->x, pl->aux, it->y + r0);
        else
            tiles(m->k, it->w, r0, r1, it->x, it->w->cols, 1, it->y + r0, it->w->rows);
    }
}

/* Whether items a and b may share a preparation of x: every prep depends
 * only on x, the format, the columns, bits and group. */
static bool same_prep(const mk_mv_item *a, const mk_mv_item *b) {
    return a->x == b->x && a->w->fmt == b->w->fmt && a->w->cols == b->w->cols && a->w->bits == b->w->bits &&
           a->w->group == b->w->group;
}

void mk_matvec_multi(mk_pool *p, const mk_mv_item *items, int count) {
    alignas(64) float aux[MK_AUX_MAX];
    multi_ctx m;
    m.k = mk_kern_active();
    const bool int8 = mk_kernels_int8();
    while (count > 0) {
        /* plan items until MK_MULTI_MAX, or until the next preparation might
         * not fit what is left of aux: each prep then sees a cap at least as
         * large as any it can use, so it decides as mk_matmul's would */
        size_t used = 0;
        int c = 0;
        m.it = items;
        m.start[0] = 0;
        for (; c < count && c < MK_MULTI_MAX; c++) {
            const mk_wt *w = items[c].w;
            mv_plan *pl = &m.pl[c];
            *pl = (mv_plan){.grain = decode_grain(w)};
            int64_t ntask = w->rows > 0 && w->cols > 0 ? (w->rows + pl->grain - 1) / pl->grain : 0;
            if (w->rows > 0 && w->cols <= 0)
                memset(items[c].y, 0, (size_t)w->rows * sizeof(float));
            int j = 0;
            while (j < c && !(m.pl[j].mv && same_prep(&items[j], &items[c])))
                j++;
            if (ntask && j < c) { /* x already prepared for this layout */
                pl->mv = m.pl[j].mv;
                pl->aux = m.pl[j].aux;
            } else if (ntask) {
                size_t need = (MK_PREP_FLOATS(w->cols) + 15) / 16 * 16; /* 64-byte aligned slices */
                if (used > 0 && used + need > MK_AUX_MAX)
                    break; /* run what is planned, then start over with all of aux */
                float *a = aux + used;
                size_t cap = MK_AUX_MAX - used;
                mk_prep_fn qprep = m.k->qprep[w->fmt], prep = m.k->prep[w->fmt];
                bool wrote = false; /* a preparation now lives at a */
                if (int8 && m.k->qmatvec[w->fmt] && qprep && qprep(w, items[c].x, a, cap)) {
                    pl->mv = m.k->qmatvec[w->fmt];
                    wrote = true;
                } else if (m.k->matvec[w->fmt] && (!prep || prep(w, items[c].x, a, cap))) {
                    pl->mv = m.k->matvec[w->fmt];
                    wrote = prep != NULL;
                }
                pl->aux = a;
                if (wrote)
                    used += need < cap ? need : cap;
            }
            m.start[c + 1] = m.start[c] + ntask;
        }
        m.count = c;
        mk_pool_for(p, m.start[c], 1, multi_task, &m);
        items += c;
        count -= c;
    }
}

/* ---- several weights, each over its own tokens, in one region ------------ */

#define MK_EACH_AUX 65536 /* floats of preparations per region (256 KiB of stack) */
#define MK_EACH_PLANS 512 /* token plans per region */

typedef struct emulti_ctx {
    const mk_kern_i *k;
    mk_mm_item it[MK_MULTI_MAX]; /* this region's items (a long item cut into token groups) */
    int64_t grain[MK_MULTI_MAX];
    int pl0[MK_MULTI_MAX];       /* the first plan of each item's tokens */
    int64_t start[MK_MULTI_MAX + 1];
    mv_plan pl[MK_EACH_PLANS];
    int count;
} emulti_ctx;

/* Task t: a block of rows of one item, for every token of that item, token
 * after token over the same rows: the block of weight rows is read from
 * memory once and stays in this core's cache for the other tokens. Each
 * token runs exactly what mk_matmul's decode runs for it (same function,
 * same prepared x, rows independent), so its outputs are bitwise those. */
static void emulti_task(void *ctx, int64_t b, int64_t e) {
    const emulti_ctx *m = ctx;
    int i = 0;
    for (int64_t t = b; t < e; t++) {
        while (t >= m->start[i + 1])
            i++;
        const mk_mm_item *it = &m->it[i];
        const mk_wt *w = it->w;
        int64_t r0 = (t - m->start[i]) * m->grain[i];
        int64_t r1 = r0 + m->grain[i] < w->rows ? r0 + m->grain[i] : w->rows;
        for (int64_t q = 0; q < it->n; q++) {
            const mv_plan *pl = &m->pl[m->pl0[i] + q];
            const float *xt = it->x + q * w->cols;
            float *yt = it->y + q * w->rows;
            if (pl->mv)
                pl->mv(w, r0, r1, xt, pl->aux, yt + r0);
            else
                tiles(m->k, w, r0, r1, xt, w->cols, 1, yt + r0, w->rows);
        }
    }
}

void mk_matmul_each_multi(mk_pool *p, const mk_mm_item *items, int count) {
    alignas(64) float aux[MK_EACH_AUX];
    emulti_ctx m;
    m.k = mk_kern_active();
    const bool int8 = mk_kernels_int8();
    int c = 0, np = 0;
    size_t used = 0;
    m.start[0] = 0;
    int i = 0;
    int64_t t0 = 0; /* the first token of items[i] not planned yet */
    while (i < count) {
        const mk_mm_item *it = &items[i];
        const mk_wt *w = it->w;
        if (it->n <= 0 || w->rows <= 0 || w->cols <= 0) {
            if (it->n > 0 && w->rows > 0)
                memset(it->y, 0, (size_t)(it->n * w->rows) * sizeof(float));
            i++;
            t0 = 0;
            continue;
        }
        mk_prep_fn qprep = m.k->qprep[w->fmt], prep = m.k->prep[w->fmt];
        /* floats reserved per token: at least what any prep may use, and
         * mk_matmul's whole stack buffer (its cap) when that is smaller,
         * so every prep decides as it does in mk_matmul */
        size_t need = (qprep || prep) ? (MK_PREP_FLOATS(w->cols) + 15) / 16 * 16 : 0;
        size_t cap = need > MK_AUX_MAX ? MK_AUX_MAX : need;
        if (need > MK_AUX_MAX)
            need = MK_AUX_MAX;
        /* gate and up of one expert read the same tokens: the previous
         * item's preparations serve this one when x, the token count and
         * the layout agree (each prep depends on nothing else) */
        const mk_mm_item *pv = c > 0 ? &m.it[c - 1] : NULL;
        bool share = pv && c < MK_MULTI_MAX && t0 == 0 && pv->x == it->x && pv->n == it->n && need &&
                     pv->w->fmt == w->fmt && pv->w->cols == w->cols && pv->w->bits == w->bits &&
                     pv->w->group == w->group;
        int64_t nt = it->n - t0;
        if (!share) {
            int64_t fit = need ? (int64_t)((MK_EACH_AUX - used) / need) : nt;
            if (fit > MK_EACH_PLANS - np)
                fit = MK_EACH_PLANS - np;
            if (nt > fit)
                nt = fit;
            if (c == MK_MULTI_MAX || nt <= 0) { /* full: run what is planned, plan again */
                m.count = c;
                mk_pool_for(p, m.start[c], 1, emulti_task, &m);
                c = 0;
                np = 0;
                used = 0;
                continue; /* an empty region fits at least one token of anything */
            }
        }
        m.it[c] = (mk_mm_item){w, it->x + t0 * w->cols, nt, it->y + t0 * w->rows};
        m.grain[c] = decode_grain(w);
        if (share) {
            m.pl0[c] = m.pl0[c - 1];
        } else {
            m.pl0[c] = np;
            for (int64_t q = 0; q < nt; q++) {
                float *a = aux + used + (size_t)q * need;
                const float *xt = m.it[c].x + q * w->cols;
                mv_plan *pl = &m.pl[np + q];
                *pl = (mv_plan){.aux = a};
                if (int8 && m.k->qmatvec[w->fmt] && qprep && qprep(w, xt, a, cap))
                    pl->mv = m.k->qmatvec[w->fmt];
                else if (m.k->matvec[w->fmt] && (!prep || prep(w, xt, a, cap)))
                    pl->mv = m.k->matvec[w->fmt];
            }
            np += (int)nt;
            used += (size_t)nt * need;
        }
        m.start[c + 1] = m.start[c] + (w->rows + m.grain[c] - 1) / m.grain[c];
        c++;
        t0 += nt;
        if (t0 == it->n) {
            i++;
            t0 = 0;
        }
    }
    if (c > 0) {
        m.count = c;
        mk_pool_for(p, m.start[c], 1, emulti_task, &m);
    }
}

/* One weight, several independent tokens (batch-invariant decode): the
 * same regions with one item. */
void mk_matmul_each(mk_pool *p, const mk_wt *w, const float *x, int64_t n, float *y) {
    mk_mm_item it = {w, x, n, y};
    mk_matmul_each_multi(p, &it, 1);
}

/* ---- row ranges (per-head products) ------------------------------------ */

#define MK_ROWS_AUX 2176 /* floats of matvec preparation: x of up to 2048 columns */

void mk_matmul_rows(const mk_wt *w, int64_t r0, int64_t r1, const float *x, int64_t xs, int64_t n,
                    float *y, int64_t ys) {
    if (n <= 0 || r1 <= r0)
        return;
    if (w->cols <= 0) {
        for (int64_t t = 0; t < n; t++)
            memset(y + t * ys, 0, (size_t)(r1 - r0) * sizeof(float));
        return;
    }
    const mk_kern_i *k = mk_kern_active();
    if (n == 1 && k->matvec[w->fmt]) { /* the fused matvec, as mk_matmul's decode path */
        alignas(64) float aux[MK_ROWS_AUX];
        mk_prep_fn prep = k->prep[w->fmt];
        if (!prep || prep(w, x, aux, MK_ROWS_AUX)) {
            k->matvec[w->fmt](w, r0, r1, x, aux, y);
            return;
        }
    }
    for (int64_t t0 = 0; t0 < n; t0 += MK_TOK_BLOCK) {
        int64_t nt = n - t0 < MK_TOK_BLOCK ? n - t0 : MK_TOK_BLOCK;
        tiles(k, w, r0, r1, x + t0 * xs, xs, nt, y + t0 * ys, ys);
    }
}

/* Up to MK_RT_ROWS rows, one float GEMM per dequantized column strip
 * (mk_gemm_f32): every output is one FMA chain over the rows in order.
 * Above it (none of the MLA shapes: DeepSeek's 128, GLM-4.7-Flash's 192)
 * each row is dequantized once per block of tokens and added, scaled by
 * the token's coefficient, into the token's output. Either way rows are
 * summed in order r0 .. r1-1 whatever n is, so one token and a batch
 * agree exactly. */
#define MK_RT_ROWS 192
#define MK_RT_COLS MK_PANEL_K /* columns per strip (the dequantizers' unit): 96 KiB of stack */

void mk_matmul_rows_t(const mk_wt *w, int64_t r0, int64_t r1, const float *x, int64_t xs, int64_t n,
                      float *y, int64_t ys) {
    const int64_t cols = w->cols;
    if (n <= 0 || cols <= 0)
        return;
    const mk_kern_i *k = mk_kern_active();
    mk_dequant_fn dq = k->dequant[w->fmt] ? k->dequant[w->fmt] : mk_wt_dequant_range;
    if (r1 - r0 <= MK_RT_ROWS) {
        alignas(64) float strip[MK_RT_ROWS * MK_RT_COLS];
        for (int64_t c0 = 0; c0 < cols; c0 += MK_RT_COLS) {
            const int64_t cw = cols - c0 < MK_RT_COLS ? cols - c0 : MK_RT_COLS;
            for (int64_t r = r0; r < r1; r++)
                dq(w, r, c0, c0 + cw, strip + (r - r0) * MK_RT_COLS);
            mk_gemm_f32(n, cw, r1 - r0, x, xs, strip, MK_RT_COLS, y + c0, ys);
        }
        return;
    }
    for (int64_t t = 0; t < n; t++)
        memset(y + t * ys, 0, (size_t)cols * sizeof(float));
    alignas(64) float buf[MK_KCHUNK];
    for (int64_t t0 = 0; t0 < n; t0 += MK_TOK_BLOCK) {
        int64_t t1 = t0 + MK_TOK_BLOCK < n ? t0 + MK_TOK_BLOCK : n;
        for (int64_t r = r0; r < r1; r++)
            for (int64_t c0 = 0; c0 < cols; c0 += MK_KCHUNK) {
                int64_t c1 = c0 + MK_KCHUNK < cols ? c0 + MK_KCHUNK : cols;
                const float *a = buf;
                if (w->fmt == MK_WF_F32 && (uintptr_t)w->data % sizeof(float) == 0)
                    a = (const float *)w->data + r * cols + c0;
                else
                    dq(w, r, c0, c1, buf);
                for (int64_t t = t0; t < t1; t++)
                    mk_axpy(y + t * ys + c0, x[t * xs + (r - r0)], a, c1 - c0);
            }
    }
}
