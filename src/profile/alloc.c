/* The bit allocator: a multiple-choice knapsack over a profile's tensors.
 *
 * Every chosen tensor t (experts and other linear modules) has one option
 * per candidate width b: cost c = bits stored (8 * bytes: weights + scales
 * + biases) and value d = usage * err(b) * params, the term it adds to the
 * objective. Routers and float tensors are fixed: their bits are taken off
 * the budget first. The problem: pick one option per tensor minimising
 * sum d subject to sum c <= target_bpw * total_params - fixed bits.
 *
 * Exact DP over bits is out of reach (budgets of 10^12 bits), so:
 *   1. each tensor's options are reduced to their lower convex hull in the
 *      (c, d) plane (dominated and above-the-chord options can never be the
 *      Lagrangian choice);
 *   2. Lagrangian relaxation: for lambda >= 0 each tensor takes the hull
 *      point minimising d + lambda * c; total cost falls as lambda grows,
 *      so bisection finds the smallest lambda whose choice fits;
 *   3. greedy fill: the hull steps not yet taken go into a max-heap by
 *      slope (d saved per bit); steps are taken while they fit, a tensor
 *      whose next step does not fit is dropped from the heap.
 * Steps are thus taken in globally decreasing slope order (a tensor's hull
 * slopes decrease along the hull), which is the greedy solution of the LP
 * relaxation cut at the first step s that does not fit. The LP optimum
 * lower-bounds the integer one and differs from the greedy prefix by less
 * than s's saving, so objective - optimum <= d-saving of s (`gap_bound`).
 * The same order makes the result monotone: a larger budget takes every
 * step a smaller one took before their first divergence, and after it
 * gains at least as much (proof sketch in tests/unit/test_alloc.c). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/json_err.h"
#include "io/os.h"
#include "profile/profile_impl.h"

typedef struct opt {
    double c, d; /* bits, objective term */
    int k;       /* index into the profile's widths */
} opt;

typedef struct item {
    size_t t;                   /* tensor index in the profile */
    int nh;                     /* hull points */
    opt h[MK_PROF_MAX_BITS];    /* lower convex hull: c ascending, d strictly descending */
    int cur;                    /* chosen hull point */
} item;

typedef struct problem {
    item *it;
    size_t n;
    double fixed_bits;   /* routers and float tensors */
    double params;       /* every tensor */
    int kidx[MK_PROF_MAX_BITS]; /* candidate widths as profile indices */
    int nk;
} problem;

static bool chosen_kind(mk_prof_kind k) { return k == MK_PROF_EXPERT || k == MK_PROF_LINEAR; }

/* ---- the problem ---------------------------------------------------------- */

static int by_cost(const void *a, const void *b) {
    const opt *x = a, *y = b;
    if (x->c != y->c)
        return x->c < y->c ? -1 : 1;
    return (x->d > y->d) - (x->d < y->d);
}

/* Lower convex hull of the options, cheapest first. */
static void hull(opt *o, int n, item *it) {
    qsort(o, (size_t)n, sizeof *o, by_cost);
    it->nh = 0;
    for (int i = 0; i < n; i++) {
        opt p = o[i];
        if (it->nh && p.d >= it->h[it->nh - 1].d)
            continue; /* dominated: costs as much or more, saves nothing */
        while (it->nh >= 2) {
            const opt *a = &it->h[it->nh - 2], *b = &it->h[it->nh - 1];
            /* drop b unless it lies strictly below the chord a -> p */
            if ((b->d - a->d) * (p.c - b->c) < (p.d - b->d) * (b->c - a->c))
                break;
            it->nh--;
        }
        it->h[it->nh++] = p;
    }
}

static mk_status build(const mk_prof *p, const int *bits, int n_bits, problem *pb) {
    memset(pb, 0, sizeof *pb);
    if (!bits || n_bits <= 0) {
        bits = p->bits;
        n_bits = p->n_bits;
    }
    if (n_bits > MK_PROF_MAX_BITS)
        return mk_err(MK_E_ARG, "allocation: %d candidate widths, at most %d", n_bits,
                      MK_PROF_MAX_BITS);
    for (int i = 0; i < n_bits; i++) {
        int k = 0;
        while (k < p->n_bits && p->bits[k] != bits[i])
            k++;
        if (k == p->n_bits) {
            char have[64] = "";
            for (int j = 0, o = 0; j < p->n_bits; j++)
                o += snprintf(have + o, sizeof have - (size_t)o, "%s%d", j ? "," : "", p->bits[j]);
            return mk_err(MK_E_ARG, "allocation: %d bits was not profiled (the profile has %s)",
                          bits[i], have);
        }
        for (int j = 0; j < pb->nk; j++)
            if (pb->kidx[j] == k)
                return mk_err(MK_E_ARG, "allocation: %d bits given twice", bits[i]);
        pb->kidx[pb->nk++] = k;
    }
    pb->it = mk_calloc(p->n ? p->n : 1, sizeof *pb->it);
    if (!pb->it)
        return mk_err(MK_E_NOMEM, "allocation: no memory for %zu tensors", p->n);
    for (size_t i = 0; i < p->n; i++) {
        const mk_prof_tensor *t = &p->t[i];
        pb->params += (double)t->params;
        if (!chosen_kind(t->kind)) {
            pb->fixed_bits += 8.0 * (double)t->fixed_bytes;
            continue;
        }
        opt o[MK_PROF_MAX_BITS];
        for (int j = 0; j < pb->nk; j++) {
            int k = pb->kidx[j];
            o[j] = (opt){8.0 * (double)t->bytes[k], t->usage * t->err[k] * (double)t->params, k};
        }
        item *it = &pb->it[pb->n++];
        it->t = i;
        hull(o, pb->nk, it);
    }
    return MK_OK;
}

/* Each item at its hull point minimising d + lambda c (ties: cheaper);
 * returns the total cost. */
static double choose(problem *pb, double lambda) {
    double cost = 0;
    for (size_t i = 0; i < pb->n; i++) {
        item *it = &pb->it[i];
        int best = 0;
        for (int j = 1; j < it->nh; j++)
            if (it->h[j].d + lambda * it->h[j].c < it->h[best].d + lambda * it->h[best].c)
                best = j;
        it->cur = best;
        cost += it->h[best].c;
    }
    return cost;
}

/* ---- greedy fill ------------------------------------------------------------ */

typedef struct step {
    double slope; /* d saved per bit */
    size_t i;     /* item */
} step;

static double step_slope(const item *it) {
    const opt *a = &it->h[it->cur], *b = &it->h[it->cur + 1];
    return (a->d - b->d) / (b->c - a->c);
}

static void heap_push(step *h, size_t *n, step s) {
    size_t i = (*n)++;
    while (i && h[(i - 1) / 2].slope < s.slope) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = s;
}

static step heap_pop(step *h, size_t *n) {
    step top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && h[c + 1].slope > h[c].slope)
            c++;
        if (h[c].slope <= last.slope)
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n)
        h[i] = last;
    return top;
}

/* Spend `left` bits on hull steps, best slope first. Returns the saving of
 * the first step that did not fit (the gap bound), 0 if none. */
static mk_status fill(problem *pb, double *left, double *gap) {
    step *h = mk_malloc((pb->n ? pb->n : 1) * sizeof *h);
    if (!h)
        return mk_err(MK_E_NOMEM, "allocation: no memory for the fill heap");
    size_t n = 0;
    *gap = 0;
    bool skipped = false;
    for (size_t i = 0; i < pb->n; i++)
        if (pb->it[i].cur + 1 < pb->it[i].nh)
            heap_push(h, &n, (step){step_slope(&pb->it[i]), i});
    while (n) {
        step s = heap_pop(h, &n);
        item *it = &pb->it[s.i];
        double dc = it->h[it->cur + 1].c - it->h[it->cur].c;
        if (dc > *left) {
            if (!skipped)
                *gap = it->h[it->cur].d - it->h[it->cur + 1].d;
            skipped = true;
            continue; /* its later steps start from this one: the item is done */
        }
        *left -= dc;
        it->cur++;
        if (it->cur + 1 < it->nh)
            heap_push(h, &n, (step){step_slope(it), s.i});
    }
    free(h);
    return MK_OK;
}

/* ---- results ------------------------------------------------------------------ */

/* Items of the result from the chosen width index per tensor (-1 = fixed). */
static mk_status finish(const mk_prof *p, const int *kchosen, double target, mk_alloc *out) {
    memset(out, 0, sizeof *out);
    out->items = mk_calloc(p->n ? p->n : 1, sizeof *out->items);
    if (!out->items)
        return mk_err(MK_E_NOMEM, "allocation: no memory for %zu items", p->n);
    double bits = 0, obj = 0, params = 0;
    for (size_t i = 0; i < p->n; i++) {
        const mk_prof_tensor *t = &p->t[i];
        params += (double)t->params;
        if (!chosen_kind(t->kind)) {
            bits += 8.0 * (double)t->fixed_bytes;
            if (t->kind == MK_PROF_ROUTER)
                out->items[out->n_items++] =
                    (mk_alloc_item){t->name, t->fixed_bits, p->group, true, t->layer, t->expert};
            continue;
        }
        int k = kchosen[i];
        bits += 8.0 * (double)t->bytes[k];
        obj += t->usage * t->err[k] * (double)t->params;
        out->items[out->n_items++] =
            (mk_alloc_item){t->name, p->bits[k], p->group, false, t->layer, t->expert};
    }
    out->target_bpw = target;
    out->total_params = (uint64_t)params;
    out->total_bits = (uint64_t)bits;
    out->achieved_bpw = params > 0 ? bits / params : 0;
    out->objective = obj;
    return MK_OK;
}

static void fmt_bits(const problem *pb, const mk_prof *p, char *buf, size_t n) {
    size_t o = 0;
    buf[0] = 0;
    for (int j = 0; j < pb->nk && o < n; j++)
        o += (size_t)snprintf(buf + o, n - o, "%s%d", j ? "," : "", p->bits[pb->kidx[j]]);
}

mk_status mk_alloc_solve(const mk_prof *p, double target_bpw, const int *bits, int n_bits,
                         mk_alloc *out) {
    memset(out, 0, sizeof *out);
    if (!isfinite(target_bpw) || target_bpw <= 0)
        return mk_err(MK_E_ARG, "allocation: target %g bits per weight, expected a positive "
                      "number", target_bpw);
    problem pb;
    mk_status st = build(p, bits, n_bits, &pb);
    if (st != MK_OK) {
        free(pb.it);
        return st;
    }
    double cap = floor(target_bpw * pb.params) - pb.fixed_bits, min_cost = 0, max_slope = 0;
    for (size_t i = 0; i < pb.n; i++) {
        item *it = &pb.it[i];
        min_cost += it->h[0].c;
        if (it->nh > 1) {
            it->cur = 0;
            double s = step_slope(it);
            max_slope = s > max_slope ? s : max_slope;
        }
    }
    if (pb.params <= 0 || min_cost > cap) {
        char list[64];
        fmt_bits(&pb, p, list, sizeof list);
        st = mk_err(MK_E_ARG, "allocation: target %.4f bits per weight is below the least the "
                    "candidate widths %s allow: %.4f (every chosen tensor at its cheapest width, "
                    "routers and float tensors fixed)", target_bpw, list,
                    pb.params > 0 ? (min_cost + pb.fixed_bits) / pb.params : 0.0);
        free(pb.it);
        return st;
    }
    /* Lagrangian: the smallest lambda whose choice fits (lambda 0 = best error) */
    double lo = 0, hi = 0, gap = 0;
    if (choose(&pb, 0) > cap) {
        hi = 2 * max_slope + 1e-300; /* above every slope: every item at its cheapest */
        for (int iter = 0; iter < 200 && hi - lo > hi * 1e-15; iter++) {
            double mid = 0.5 * (lo + hi);
            if (choose(&pb, mid) <= cap)
                hi = mid;
            else
                lo = mid;
        }
    }
    double used = choose(&pb, hi), left = cap - used;
    st = fill(&pb, &left, &gap);
    int *k = st == MK_OK ? mk_malloc((p->n ? p->n : 1) * sizeof *k) : NULL;
    if (st == MK_OK && !k)
        st = mk_err(MK_E_NOMEM, "allocation: no memory for the choices of %zu tensors", p->n);
    if (st == MK_OK) {
        for (size_t i = 0; i < pb.n; i++)
            k[pb.it[i].t] = pb.it[i].h[pb.it[i].cur].k;
        st = finish(p, k, target_bpw, out);
        out->gap_bound = gap;
        out->lambda = hi;
    }
    free(k);
    free(pb.it);
    return st;
}

mk_status mk_alloc_uniform(const mk_prof *p, int bits, mk_alloc *out) {
    memset(out, 0, sizeof *out);
    int k = 0;
    while (k < p->n_bits && p->bits[k] != bits)
        k++;
    if (k == p->n_bits)
        return mk_err(MK_E_ARG, "allocation: %d bits was not profiled", bits);
    int *kc = mk_malloc((p->n ? p->n : 1) * sizeof *kc);
    if (!kc)
        return mk_err(MK_E_NOMEM, "allocation: no memory for the choices of %zu tensors", p->n);
    for (size_t i = 0; i < p->n; i++)
        kc[i] = k;
    mk_status st = finish(p, kc, 0, out);
    free(kc);
    return st;
}

void mk_alloc_free(mk_alloc *a) {
    if (!a)
        return;
    free(a->items);
    a->items = NULL;
    a->n_items = 0;
}

mk_status mk_alloc_save(const mk_alloc *a, const char *path) {
    /* an override that failed to be added (jansson reports that only
     * through return values) would give its module the default bits */
    unsigned long mark = mk_json_mark();
    json_t *ov = json_object();
    for (size_t i = 0; ov && i < a->n_items; i++)
        json_object_set_new(ov, a->items[i].module,
                            json_pack("{s:i,s:i}", "bits", a->items[i].bits, "group_size",
                                      a->items[i].group));
    json_t *root = json_pack("{s:s,s:i,s:f,s:f,s:I,s:I,s:f,s:f,s:f,s:o}", "format", "moekit-alloc",
                             "version", 1, "target_bpw", a->target_bpw, "achieved_bpw",
                             a->achieved_bpw, "total_params", (json_int_t)a->total_params,
                             "total_bits", (json_int_t)a->total_bits, "objective", a->objective,
                             "gap_bound", a->gap_bound, "lambda", a->lambda, "overrides", ov);
    if (!root)
        return mk_err(MK_E_NOMEM, "%s: no memory to format the allocation", path);
    char *js = mk_json_dumps_checked(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER, mark);
    json_decref(root);
    if (!js)
        return mk_err(MK_E_NOMEM, "%s: no memory to format the allocation of %zu modules", path, a->n_items);
    mk_status s = mk_os_write_file_atomic(path, js, strlen(js)); /* tmp, fsync, rename */
    free(js);
    return s;
}
