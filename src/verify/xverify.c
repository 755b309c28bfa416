/* mk_conv_xverify: is checkpoint B checkpoint A written in B's layout and
 * dtype? (include/moekit/verify.h states the rules.)
 *
 * Both sides are opened as convert SOURCES (source.c), so every layout is
 * already reduced to logical tensors under canonical names and expert
 * groups; a unit is one of those logical tensors, or one expert's
 * projection. The comparison of a unit is convert's own plan for it: A's
 * unit goes through the piece convert would write into B's dtype
 * (cv_float_piece, with cv_norm_shift into B's norm convention), B's
 * through the piece that reads it back (a plain copy for floats, its
 * dequantize op otherwise), and the two outputs are compared byte for byte
 * and numerically.
 *
 * Map of this file: pure helpers (name order, flat shapes, differences,
 * verdict) -> units (both sides' units sorted and merged, the one-sided
 * ones classified) -> per compared unit its two pieces and its chunk step
 * (a multiple of both sides' row widths, so row ops never split a row) ->
 * items (one per chunk, one per uncompared unit), produced by the workers
 * of cv_pipe_run and consumed in unit order, where each unit's verdict is
 * reported to the callback as its last chunk arrives. Memory is the chunk
 * buffers of each worker plus a few hundred bytes per unit. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "convert/conv_impl.h"
#include "convert/target.h"
#include "io/os.h"

/* ------------------------------------------------------- pure helpers */

int cv_natcmp(const char *a, const char *b) {
    const unsigned char *p = (const unsigned char *)a, *q = (const unsigned char *)b;
    while (*p && *q) {
        if (isdigit(*p) && isdigit(*q)) {
            while (*p == '0')
                p++;
            while (*q == '0')
                q++;
            size_t lp = 0, lq = 0;
            while (isdigit(p[lp]))
                lp++;
            while (isdigit(q[lq]))
                lq++;
            if (lp != lq)
                return lp < lq ? -1 : 1;
            int c = memcmp(p, q, lp);
            if (c)
                return c < 0 ? -1 : 1;
            p += lp;
            q += lq;
            continue;
        }
        if (*p != *q)
            return *p < *q ? -1 : 1;
        p++;
        q++;
    }
    if (*p || *q)
        return *p ? 1 : -1;
    return strcmp(a, b); /* "01" and "1" are equal by value: still a total order */
}

bool cv_shape_flat_eq(int na, const int64_t *a, int nb, const int64_t *b) {
    int i = 0, j = 0;
    for (;;) {
        while (i < na && a[i] == 1)
            i++;
        while (j < nb && b[j] == 1)
            j++;
        if (i == na || j == nb)
            return i == na && j == nb;
        if (a[i++] != b[j++])
            return false;
    }
}

mk_xverify_result cv_xv_judge(bool bytes_equal, bool numeric, const mk_diff *d, double tol) {
    if (bytes_equal)
        return MK_XV_IDENTICAL;
    if (!numeric || d->bad)
        return MK_XV_DIFFERS;
    return mk_diff_rel(d) <= tol ? MK_XV_WITHIN_TOL : MK_XV_DIFFERS;
}

const char *mk_xverify_result_name(mk_xverify_result r) {
    static const char *const n[] = {"identical", "within tolerance", "differs", "only in A", "only in B", "skipped"};
    return (unsigned)r < sizeof n / sizeof n[0] ? n[r] : "?";
}

const char *mk_xverify_skip_name(mk_xverify_skip k) {
    static const char *const n[] = {"none", "vision", "mtp", "tied lm_head", "buffer"};
    return (unsigned)k < sizeof n / sizeof n[0] ? n[k] : "?";
}

void mk_xverify_opts_init(mk_xverify_opts *o) { memset(o, 0, sizeof *o); }

/* -------------------------------------------------------------- units */

/* A unit of one side: a logical tensor or one expert's projection. */
typedef struct xv_ref {
    const cv_lt *lt;
    bool expert;
} xv_ref;

typedef struct xv_unit {
    const cv_lt *a, *b; /* NULL when absent on that side */
    bool expert;
    bool compare;               /* values are read and compared (else `pre` is the verdict) */
    mk_xverify_result pre;
    mk_xverify_skip skip;
    char *note;                 /* shape / dtype disagreement (malloc'd) */
    cv_piece pa, pb;            /* compare: A's and B's values in dtype dt */
    mk_dtype dt;
    bool numeric;               /* dt decodes to float32 */
    int64_t numel, step;        /* values; values per chunk */
    size_t first;               /* first item */
    mk_diff acc;                /* accumulated over the chunks consumed so far */
    bool bytes_equal;
} xv_unit;

/* What one chunk found (a pipeline slot). */
typedef struct xv_res {
    mk_diff d;
    bool bytes_equal;
} xv_res;

typedef struct xv_ctx {
    cv_src a, b;
    double tol;
    xv_unit *u;
    size_t nu, nitems;
    mk_xverify_cb cb;
    void *cbctx;
    mk_xverify_summary *sum;
} xv_ctx;

static int cmp_ref(const void *x, const void *y) {
    return cv_natcmp(((const xv_ref *)x)->lt->cname, ((const xv_ref *)y)->lt->cname);
}

/* Every unit of side s, sorted; two tensors claiming one unit is bad input. */
static mk_status side_refs(const cv_src *s, xv_ref **out, size_t *n) {
    size_t cap = s->nlts;
    for (size_t i = 0; i < s->ngroups; i++)
        cap += 3 * (size_t)(s->groups[i].n > 0 ? s->groups[i].n : 0);
    xv_ref *r = mk_malloc((cap ? cap : 1) * sizeof *r);
    if (!r)
        return mk_err(MK_E_NOMEM, "%s: no memory for a table of %zu units", s->dir, cap);
    size_t k = 0;
    for (size_t i = 0; i < s->nlts; i++)
        r[k++] = (xv_ref){&s->lts[i], false};
    for (size_t i = 0; i < s->ngroups; i++)
        for (int p = 0; p < 3; p++)
            for (int e = 0; e < s->groups[i].n; e++)
                if (s->groups[i].proj[p][e].mod) /* holes: opened with CV_SRC_PARTIAL_EXPERTS */
                    r[k++] = (xv_ref){&s->groups[i].proj[p][e], true};
    qsort(r, k, sizeof *r, cmp_ref);
    for (size_t i = 1; i < k; i++)
        if (strcmp(r[i - 1].lt->cname, r[i].lt->cname) == 0) {
            mk_status st = mk_err(MK_E_FORMAT, "%s: tensors '%s' and '%s' both hold unit '%s'", s->dir,
                                  r[i - 1].lt->mod->name, r[i].lt->mod->name, r[i].lt->cname);
            free(r);
            return st;
        }
    *out = r;
    *n = k;
    return MK_OK;
}

/* Why a unit present on one side only (lt, of side `has`) is not a
 * failure, or MK_XV_SKIP_NONE. `other` is the side lacking it. */
static mk_xverify_skip skip_reason(const cv_lt *lt, const cv_src *other) {
    if (lt->cls == MK_PART_VISION)
        return MK_XV_SKIP_VISION;
    if (lt->cls == MK_PART_MTP)
        return MK_XV_SKIP_MTP;
    if (strcmp(lt->cname, "lm_head.weight") == 0 && other->cfg.tie_word_embeddings)
        return MK_XV_SKIP_TIED_HEAD;
    if (cv_ends_with(lt->cname, "rotary_emb.inv_freq"))
        return MK_XV_SKIP_BUFFER;
    return MK_XV_SKIP_NONE;
}

static int64_t gcd64(int64_t a, int64_t b) {
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Values of one row unit of piece p: a row for row ops, 1 otherwise. */
static int64_t unit_width(const cv_piece *p) { return cv_op_by_rows(p->op) ? p->mod->cols : 1; }

static int64_t piece_units(const cv_piece *p, int64_t values) { return values / unit_width(p); }

static size_t al64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Worker scratch for a chunk of n values of unit u: both outputs, both as
 * float32, and the larger of the two ops' scratch (they run one after the
 * other). */
static size_t chunk_scratch(const xv_unit *u, int64_t n) {
    size_t es = cv_esize(u->dt), sa = cv_op_scratch(&u->pa, piece_units(&u->pa, n));
    size_t sb = cv_op_scratch(&u->pb, piece_units(&u->pb, n));
    return 2 * al64((size_t)n * es) + 2 * al64((size_t)n * 4) + (sa > sb ? sa : sb) + 64;
}

static void set_differs(xv_unit *u, char *note) {
    u->compare = false;
    u->pre = MK_XV_DIFFERS;
    u->note = note;
}

/* The pieces comparing a unit on both sides, or why it cannot be compared. */
static mk_status setup_compare(const xv_ctx *x, xv_unit *u) {
    const cv_lt *la = u->a, *lb = u->b;
    const cv_mod *ma = la->mod, *mb = lb->mod;
    char b1[96], b2[96];
    if (!cv_shape_flat_eq(la->ndim, la->shape, lb->ndim, lb->shape)) {
        set_differs(u, cv_printf("shape %s in A, %s in B", cv_shape_str(b1, sizeof b1, la->ndim, la->shape),
                                 cv_shape_str(b2, sizeof b2, lb->ndim, lb->shape)));
        return MK_OK;
    }
    bool raw_a = ma->kind == CV_RAW, raw_b = mb->kind == CV_RAW;
    if ((raw_a || raw_b) && !(raw_a && raw_b && ma->vdt == mb->vdt)) {
        set_differs(u, cv_printf("dtype %s in A, %s in B", mk_dtype_name(ma->vdt), mk_dtype_name(mb->vdt)));
        return MK_OK;
    }
    if (raw_b && mk_dtype_info(mb->vdt)->bits % 8)
        return mk_err(MK_E_UNSUPPORTED, "%s: tensor '%s' has dtype %s, which verify cannot compare across layouts",
                      x->b.dir, mb->name, mk_dtype_name(mb->vdt));
    /* B float in a dtype convert writes: A re-encoded into it must give B's
     * bytes. Otherwise (B quantized, or F64) both become float32. */
    bool b_exact = raw_b || (mb->kind == CV_FLOAT && (mb->vdt == MK_DT_F32 || mb->vdt == MK_DT_F16 ||
                                                      mb->vdt == MK_DT_BF16));
    u->dt = b_exact ? mb->vdt : MK_DT_F32;
    u->numeric = !raw_b;
    u->numel = la->nrows * ma->cols;
    if (u->numel != lb->nrows * mb->cols)
        return mk_err(MK_E_INTERNAL, "verify: unit '%s' holds %lld values in A and %lld in B", la->cname,
                      (long long)u->numel, (long long)(lb->nrows * mb->cols));
    if (u->numel == 0) {
        u->compare = false;
        u->pre = MK_XV_IDENTICAL;
        return MK_OK;
    }
    MK_TRY(cv_float_piece(la, u->dt, cv_norm_shift(&x->a, la, cv_src_norms(&x->b)), &u->pa));
    MK_TRY(cv_float_piece(lb, u->dt, 0.0f, &u->pb));
    /* chunks cut on rows of both sides' row ops */
    int64_t wa = unit_width(&u->pa), wb = unit_width(&u->pb), w = wa / gcd64(wa, wb) * wb;
    u->step = (int64_t)MK_XVERIFY_CHUNK / w * w;
    u->step = u->step > 0 ? u->step : w;
    u->compare = true;
    u->bytes_equal = true;
    return MK_OK;
}

/* A unit present on one side only. */
static void setup_one_sided(const xv_ctx *x, xv_unit *u) {
    const cv_lt *lt = u->a ? u->a : u->b;
    u->compare = false;
    u->skip = skip_reason(lt, u->a ? &x->b : &x->a);
    u->pre = u->skip != MK_XV_SKIP_NONE ? MK_XV_SKIPPED : u->a ? MK_XV_ONLY_A : MK_XV_ONLY_B;
}

static mk_status add_unit(xv_ctx *x, const xv_ref *ra, const xv_ref *rb) {
    xv_unit *u = &x->u[x->nu++];
    memset(u, 0, sizeof *u);
    u->a = ra ? ra->lt : NULL;
    u->b = rb ? rb->lt : NULL;
    u->expert = ra ? ra->expert : rb->expert;
    if (ra && rb)
        MK_TRY(setup_compare(x, u));
    else
        setup_one_sided(x, u);
    u->first = x->nitems;
    x->nitems += u->compare ? (size_t)((u->numel + u->step - 1) / u->step) : 1;
    return MK_OK;
}

/* Merge both sides' sorted units; returns the worker scratch needed. */
static mk_status build_units(xv_ctx *x, size_t *scratch) {
    xv_ref *ra = NULL, *rb = NULL;
    size_t na = 0, nb = 0;
    mk_status st = side_refs(&x->a, &ra, &na);
    if (st == MK_OK)
        st = side_refs(&x->b, &rb, &nb);
    x->u = st == MK_OK ? mk_calloc(na + nb + 1, sizeof *x->u) : NULL;
    if (st == MK_OK && !x->u)
        st = mk_err(MK_E_NOMEM, "no memory for a table of %zu units (%s and %s)", na + nb + 1, x->a.dir,
                    x->b.dir);
    size_t i = 0, j = 0;
    *scratch = 64;
    while (st == MK_OK && (i < na || j < nb)) {
        int c = i >= na ? 1 : j >= nb ? -1 : cv_natcmp(ra[i].lt->cname, rb[j].lt->cname);
        st = add_unit(x, c <= 0 ? &ra[i] : NULL, c >= 0 ? &rb[j] : NULL);
        i += c <= 0;
        j += c >= 0;
        const xv_unit *u = &x->u[x->nu - 1];
        if (st == MK_OK && u->compare) {
            size_t need = chunk_scratch(u, u->step < u->numel ? u->step : u->numel);
            *scratch = need > *scratch ? need : *scratch;
        }
    }
    free(ra);
    free(rb);
    return st;
}

/* -------------------------------------------------------------- items */

/* Unit of item i: the last unit whose first item is <= i. */
static size_t unit_of(const xv_ctx *x, size_t i) {
    size_t lo = 0, hi = x->nu;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (x->u[mid].first <= i)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static bool xv_parallel(void *ctx, size_t i) {
    const xv_ctx *x = ctx;
    return x->u[unit_of(x, i)].compare;
}

/* Values [v0, v0+n) of piece p in its dtype into out. COPY pieces are read
 * as stored (plan pieces copy with copy_file_range and have no compute
 * step); the others run their op on whole rows or elements. */
static mk_status piece_values(const mk_ckpt *ck, const cv_piece *p, int64_t v0, int64_t n, void *scratch,
                              void *out) {
    if (p->op == CV_OP_COPY) {
        const mk_tensor_info *t = p->mod->t[CV_T_MAIN];
        uint64_t es = cv_esize(t->dtype), first = (uint64_t)p->row0 * (uint64_t)p->mod->cols + (uint64_t)v0;
        return mk_ckpt_read(ck, t, first * es, out, (size_t)((uint64_t)n * es));
    }
    int64_t w = unit_width(p);
    return cv_op_run(ck, p, p->dt, v0 / w, n / w, scratch, out);
}

static mk_status xv_produce(void *ctx, size_t i, void *scratch, void *out, size_t *len) {
    const xv_ctx *x = ctx;
    const xv_unit *u = &x->u[unit_of(x, i)];
    int64_t v0 = (int64_t)(i - u->first) * u->step, n = u->numel - v0 < u->step ? u->numel - v0 : u->step;
    size_t nb = (size_t)n * cv_esize(u->dt);
    unsigned char *va = scratch, *vb = va + al64(nb);
    float *fa = (float *)(void *)(vb + al64(nb)), *fb = (float *)(void *)((unsigned char *)fa + al64((size_t)n * 4));
    unsigned char *opscr = (unsigned char *)fb + al64((size_t)n * 4);
    xv_res *r = out;
    memset(r, 0, sizeof *r);
    *len = sizeof *r;
    MK_TRY(piece_values(x->a.ck, &u->pa, v0, n, opscr, va));
    MK_TRY(piece_values(x->b.ck, &u->pb, v0, n, opscr, vb));
    r->bytes_equal = memcmp(va, vb, nb) == 0;
    if (!u->numeric)
        return MK_OK;
    if (u->dt == MK_DT_F32) {
        fa = (float *)(void *)va;
        fb = (float *)(void *)vb;
    } else if (!mk_dtype_to_f32(u->dt, va, fa, (size_t)n) || !mk_dtype_to_f32(u->dt, vb, fb, (size_t)n))
        return mk_err(MK_E_INTERNAL, "verify: cannot decode %s", mk_dtype_name(u->dt));
    mk_diff_add(&r->d, fa, fb, (size_t)n);
    return MK_OK;
}

/* --------------------------------------------------------- reporting */

/* Storage of module m, e.g. "BF16", "F8_E4M3 block 128x128", "affine 4-bit g64". */
static void storage_str(const cv_src *s, const cv_mod *m, char *buf, size_t n) {
    switch (m->kind) {
    case CV_FLOAT:
    case CV_RAW: snprintf(buf, n, "%s", mk_dtype_name(m->vdt)); return;
    case CV_FP8: snprintf(buf, n, "%s block %dx%d", mk_dtype_name(m->vdt), m->block_r, m->block_c); return;
    case CV_CT: snprintf(buf, n, "INT4 g%d%s", m->group, m->ct_sym ? " sym" : ""); return;
    case CV_MLX: break;
    }
    int bits = m->bits, group = m->group < 0 ? -m->group : m->group;
    mk_qmode mode = MK_QMODE_AFFINE;
    size_t l = strlen(m->name);
    char *path = l > 7 ? cv_printf("%.*s", (int)(l - 7), m->name) : NULL; /* minus ".weight" */
    if (path && m->group < 0)
        mk_qcfg_lookup(&s->cfg.quant, path, true, &bits, &group, &mode);
    free(path);
    snprintf(buf, n, "%s %d-bit g%d", mk_qmode_name(mode), bits, group);
}

/* "<storage> <module shape>[expert][rows]" of a unit's logical tensor. */
static void form_str(const cv_src *s, const cv_lt *lt, char *buf, size_t n) {
    const cv_mod *m = lt->mod;
    char st[64], sh[96];
    storage_str(s, m, st, sizeof st);
    cv_shape_str(sh, sizeof sh, m->ndim, m->shape);
    int k = snprintf(buf, n, "%s %s", st, sh);
    if (k < 0 || (size_t)k >= n || lt->nrows == m->rows)
        return;
    int64_t r = lt->row0;
    if (m->ndim >= 3) { /* stacked or fused: which expert, then which rows of it */
        k += snprintf(buf + k, n - (size_t)k, "[%lld]", (long long)(r / m->mrows));
        r %= m->mrows;
        if (lt->nrows == m->mrows || (size_t)k >= n)
            return;
    }
    snprintf(buf + k, n - (size_t)k, "[%lld:%lld]", (long long)r, (long long)(r + lt->nrows));
}

static void tally(mk_xverify_summary *s, const mk_xverify_unit *r) {
    switch (r->result) {
    case MK_XV_IDENTICAL: s->identical++; break;
    case MK_XV_WITHIN_TOL: s->within_tol++; break;
    case MK_XV_DIFFERS: s->differ++; break;
    case MK_XV_ONLY_A: s->only_a++; break;
    case MK_XV_ONLY_B: s->only_b++; break;
    case MK_XV_SKIPPED:
        s->skipped++;
        s->skipped_by[r->skip]++;
        break;
    }
    bool compared = r->result == MK_XV_IDENTICAL || r->result == MK_XV_WITHIN_TOL || r->result == MK_XV_DIFFERS;
    s->compared += compared;
    s->experts_compared += compared && r->expert;
    if (!isnan(r->rel_l2) && r->rel_l2 > s->worst_rel_l2) {
        s->worst_rel_l2 = r->rel_l2;
        snprintf(s->worst_unit, sizeof s->worst_unit, "%s", r->name);
    }
    if (!isnan(r->max_abs) && r->max_abs > s->worst_max_abs)
        s->worst_max_abs = r->max_abs;
}

/* The verdict of unit u, to the summary and the callback. */
static mk_status finish_unit(xv_ctx *x, const xv_unit *u) {
    char fa[160], fb[160];
    mk_xverify_unit r;
    memset(&r, 0, sizeof r);
    r.name = (u->a ? u->a : u->b)->cname;
    r.expert = u->expert;
    if (u->a) {
        form_str(&x->a, u->a, fa, sizeof fa);
        r.a = (mk_xverify_side){u->a->mod->t[CV_T_MAIN]->name, fa};
    }
    if (u->b) {
        form_str(&x->b, u->b, fb, sizeof fb);
        r.b = (mk_xverify_side){u->b->mod->t[CV_T_MAIN]->name, fb};
    }
    r.skip = u->skip;
    r.note = u->note;
    r.max_abs = r.rel_l2 = NAN;
    if (u->compare) {
        r.result = cv_xv_judge(u->bytes_equal, u->numeric, &u->acc, x->tol);
        r.numel = (uint64_t)u->numel;
        if (u->numeric) {
            r.max_abs = u->acc.max_abs;
            r.rel_l2 = mk_diff_rel(&u->acc);
            r.nonfinite_mismatch = u->acc.bad;
        }
    } else
        r.result = u->pre;
    tally(x->sum, &r);
    return x->cb ? x->cb(x->cbctx, &r) : MK_OK;
}

static mk_status xv_consume(void *ctx, size_t i, const void *out, size_t len) {
    xv_ctx *x = ctx;
    (void)len;
    xv_unit *u = &x->u[unit_of(x, i)];
    if (u->compare) {
        const xv_res *r = out;
        u->bytes_equal = u->bytes_equal && r->bytes_equal;
        mk_diff_merge(&u->acc, &r->d);
        if (i + 1 < u->first + (size_t)((u->numel + u->step - 1) / u->step))
            return MK_OK; /* more chunks of this unit to come */
    }
    return finish_unit(x, u);
}

/* -------------------------------------------------------------- entry */

static mk_status open_side(const char *path, const char *which, cv_src *s) {
    if (!mk_os_is_dir(path)) {
        memset(s, 0, sizeof *s);
        return mk_err(mk_os_exists(path) ? MK_E_ARG : MK_E_NOTFOUND,
                      "%s (%s): comparing across layouts needs a checkpoint directory with config.json", path,
                      which);
    }
    return cv_src_open_ex(path, CV_SRC_PARTIAL_EXPERTS, s);
}

/* One model in two layouts: the architectures must agree (the norm
 * convention and the unit names depend on it). */
static mk_status check_models(const xv_ctx *x) {
    if (x->a.cfg.arch != x->b.cfg.arch)
        return mk_err(MK_E_MISMATCH, "%s is %s but %s is %s: verify compares one model in two layouts", x->a.dir,
                      mk_arch_name(x->a.cfg.arch), x->b.dir, mk_arch_name(x->b.cfg.arch));
    return MK_OK;
}

mk_status mk_conv_xverify(const char *a, const char *b, const mk_xverify_opts *o, mk_xverify_cb cb, void *ctx,
                          mk_xverify_summary *out) {
    mk_xverify_summary dummy;
    mk_xverify_opts defaults;
    mk_xverify_opts_init(&defaults);
    o = o ? o : &defaults;
    xv_ctx x;
    memset(&x, 0, sizeof x);
    x.tol = o->tolerance;
    x.cb = cb;
    x.cbctx = ctx;
    x.sum = out ? out : &dummy;
    memset(x.sum, 0, sizeof *x.sum);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = o->threads > 0 ? o->threads : (ncpu > 0 ? (int)ncpu : 1);
    size_t scratch = 0;
    mk_status st = open_side(a, "A", &x.a);
    if (st == MK_OK)
        st = open_side(b, "B", &x.b);
    if (st == MK_OK)
        st = check_models(&x);
    if (st == MK_OK)
        st = build_units(&x, &scratch);
    if (st == MK_OK) {
        x.sum->a_mlx = x.a.is_mlx;
        x.sum->b_mlx = x.b.is_mlx;
        cv_pipe_ops ops = {xv_parallel, xv_produce, xv_consume};
        st = cv_pipe_run(threads, 4 * (size_t)threads, sizeof(xv_res), scratch, x.nitems, &ops, &x);
    }
    x.sum->pass = st == MK_OK && !x.sum->differ && !x.sum->only_a && !x.sum->only_b;
    for (size_t i = 0; i < x.nu; i++)
        free(x.u[i].note);
    free(x.u);
    cv_src_close(&x.b);
    cv_src_close(&x.a);
    return st;
}
