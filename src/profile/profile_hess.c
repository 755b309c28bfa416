/* Input second moments per linear module (`moekit profile --hessian`), the
 * statistics of calibrated quantization (moekit/quant_opt.h).
 *
 * The calibration windows run as in mk_prof_run (each from an empty state)
 * with the engine's linear-input observer: every product of a walked
 * module's weight by activations adds sum_t x_t x_t^T over its input rows
 * to that module's accumulator (upper triangle, double). Routed experts see
 * only the tokens routed to them (the engine gathers them), so each expert
 * gets its own H. lm_head is included (the windows compute logits).
 *
 * Modules fed the very same input by consecutive products (q/k/v of
 * attention, the linear-attention input projections, gate/up of an MLP or
 * expert) share one accumulator: the first product of a module whose input
 * pointer, row count, width and contents (XXH3 of the rows) equal the
 * previous product's makes it an alias of that product's module. The
 * pointer alone is not enough: a norm rewrites its output buffer between
 * two products (a layer's router reads the post-attention norm, the next
 * layer's q/k/v the input norm, from one buffer), and taking those for one
 * input gave the next layer's attention and lm_head another module's
 * statistics. Every later product of an alias is checked the same way
 * (MK_E_INTERNAL if the engine's order ever changed).
 *
 * Output: one safetensors file, a F32 [cols, cols] tensor per module that
 * received tokens, named by its module path (MLX naming, as profiles and
 * quantize use), holding H / tokens (the mean second moments; any positive
 * scale does for quantization). Metadata: "moekit.kind" = "input second
 * moments", "tokens.<module>" = its token count. Modules no calibration
 * token reached (experts never routed to) have no tensor.
 *
 * Memory, bounded by `budget` (o->hess_budget): the accumulators held at
 * once never exceed it. Every window crosses every layer, so all modules
 * accumulating at once means 8 * cols^2 bytes per distinct input (q/k/v and
 * gate/up counted once); when that exceeds the budget the modules are
 * taken in passes: each pass accumulates a contiguous run of modules in
 * walk order (the file's order) whose accumulators fit, running every
 * window again, and appends their tensors to the file before freeing them.
 * A pass is planned counting 8 * cols^2 for every module that will hold
 * its own accumulator (the first pass counts every module: which ones share
 * an input is learnt while it runs; later passes count a module sharing
 * its input with an earlier one of the same pass as free). The windows run
 * exactly the same products in every pass, so the file is byte for byte
 * the one a single pass writes; token counts are taken in the first pass,
 * which therefore also fixes the file's header. Cost: time x passes. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "core/alloc.h"
#include "io/outfile.h"
#include "model/model_impl.h"
#include "moekit/engine.h"
#include "profile/profile_impl.h"

typedef struct hslot {
    const mk_wt *w;
    int64_t cols;
    int alias;      /* slot whose accumulator this one shares; -1: its own */
    bool seen;
    double *h;      /* [cols, cols], upper triangle; NULL for aliases (allocated on first use) */
    int64_t tokens;
} hslot;

typedef struct hacc {
    hslot *s;
    size_t n;
    size_t *map; /* open addressing: pointer hash -> slot + 1 */
    size_t cap;
    const float *last_x; /* the previous product */
    int64_t last_n, last_cols;
    uint64_t last_hash; /* XXH3 of the previous product's input rows */
    int last_slot;
    int pass;           /* 0: the first (counts tokens, learns aliases) */
    size_t lo, hi;      /* slots accumulating in this pass */
    uint64_t held, peak; /* accumulator bytes now / the most at once */
    mk_status st;
} hacc;

/* Does slot k's accumulator live in another slot of this pass? */
static bool shares(const hacc *a, const hslot *s) {
    return s->alias >= 0 && (size_t)s->alias >= a->lo && (size_t)s->alias < a->hi;
}

static size_t ptr_hash(const void *p, size_t cap) {
    uint64_t v = (uint64_t)(uintptr_t)p;
    v ^= v >> 33;
    v *= 0xff51afd7ed558ccdull;
    v ^= v >> 33;
    return (size_t)v & (cap - 1);
}

static int find_slot(const hacc *a, const mk_wt *w) {
    for (size_t i = ptr_hash(w, a->cap);; i = (i + 1) & (a->cap - 1)) {
        if (!a->map[i])
            return -1;
        if (a->s[a->map[i] - 1].w == w)
            return (int)(a->map[i] - 1);
    }
}

static void on_linear(void *user, const mk_wt *w, const float *x, int64_t n) {
    hacc *a = user;
    if (a->st != MK_OK || n <= 0)
        return;
    int k = find_slot(a, w);
    /* the same buffer is not the same input: a norm rewrites its output
     * buffer between two products (a layer's router on the post-attention
     * norm, the next layer's q/k/v on the input norm, in one buffer), so
     * the contents must match too */
    const uint64_t hash = XXH3_64bits(x, (size_t)(n * w->cols) * sizeof(float));
    bool same = x == a->last_x && n == a->last_n && w->cols == a->last_cols && hash == a->last_hash;
    int prev = a->last_slot;
    a->last_x = x;
    a->last_n = n;
    a->last_cols = w->cols;
    a->last_hash = hash;
    a->last_slot = k;
    if (k < 0)
        return; /* not a walked module (a tied lm_head, the embedding's view) */
    hslot *s = &a->s[k];
    const int proot = prev >= 0 ? (a->s[prev].alias >= 0 ? a->s[prev].alias : prev) : -1;
    if (!s->seen) {
        s->seen = true;
        if (same && prev >= 0 && prev != k)
            s->alias = proot;
    } else if (s->alias >= 0 && !(same && proot == s->alias)) {
        a->st = mk_err(MK_E_INTERNAL, "profile --hessian: a module taken to share its input with the one "
                                      "before it was later multiplied by another input");
        return;
    }
    if (a->pass == 0)
        s->tokens += n;
    if ((size_t)k < a->lo || (size_t)k >= a->hi || shares(a, s))
        return; /* not this pass's, or its root accumulates the same rows */
    const int64_t C = s->cols;
    if (!s->h) {
        s->h = mk_calloc((size_t)(C * C), sizeof(double));
        if (!s->h) {
            a->st = mk_err(MK_E_NOMEM, "profile: no memory for a %lld x %lld second-moment matrix",
                           (long long)C, (long long)C);
            return;
        }
        a->held += (uint64_t)(C * C) * 8u;
        a->peak = a->held > a->peak ? a->held : a->peak;
    }
    double *h = s->h;
    for (int64_t t = 0; t < n; t++) {
        const float *xt = x + t * C;
        for (int64_t i = 0; i < C; i++) {
            const double xi = xt[i];
            if (xi == 0)
                continue;
            double *hi = h + i * C;
            for (int64_t j = i; j < C; j++)
                hi[j] += xi * (double)xt[j];
        }
    }
}

static void hacc_free(hacc *a) {
    for (size_t i = 0; i < a->n; i++)
        free(a->s[i].h);
    free(a->s);
    free(a->map);
}

static mk_status hacc_init(hacc *a, const mk_prof_mod *mods, size_t n) {
    memset(a, 0, sizeof *a);
    a->last_slot = -1;
    a->s = mk_calloc(n ? n : 1, sizeof *a->s);
    a->cap = 16;
    while (a->cap < 2 * n)
        a->cap *= 2;
    a->map = mk_calloc(a->cap, sizeof *a->map);
    if (!a->s || !a->map)
        return mk_err(MK_E_NOMEM, "profile: no memory for %zu module accumulators", n);
    for (size_t i = 0; i < n; i++) {
        if (mods[i].streamed)
            continue; /* streamed views are the store's */
        hslot *s = &a->s[a->n];
        s->w = mods[i].w;
        s->cols = mods[i].w->cols;
        s->alias = -1;
        size_t j = ptr_hash(s->w, a->cap);
        while (a->map[j])
            j = (j + 1) & (a->cap - 1);
        a->map[j] = ++a->n;
    }
    return MK_OK;
}

/* The file's header: one tensor per slot that received tokens, in slot
 * (walk) order, which is also the order the passes append their data. */
static mk_status write_header(const hacc *a, const mk_prof_mod *mods, size_t nmods, const int *slot_of,
                              const char *path, mk_outfile *of) {
    json_t *hdr = json_object(), *meta = json_object();
    mk_status st = hdr && meta ? MK_OK : mk_err(MK_E_NOMEM, "%s: no memory for the header", path);
    uint64_t off = 0;
    for (size_t i = 0; st == MK_OK && i < nmods; i++) {
        if (slot_of[i] < 0)
            continue;
        const hslot *s = &a->s[slot_of[i]];
        if (!s->tokens)
            continue;
        uint64_t nb = (uint64_t)(s->cols * s->cols) * 4u;
        char tok[32];
        snprintf(tok, sizeof tok, "%lld", (long long)s->tokens);
        char key[600];
        snprintf(key, sizeof key, "tokens.%s", mods[i].name);
        json_t *t = json_pack("{s:s, s:[I,I], s:[I,I]}", "dtype", "F32", "shape", (json_int_t)s->cols,
                              (json_int_t)s->cols, "data_offsets", (json_int_t)off, (json_int_t)(off + nb));
        if (!t || json_object_set_new(hdr, mods[i].name, t) || json_object_set_new(meta, key, json_string(tok)))
            st = mk_err(MK_E_NOMEM, "%s: no memory for the header", path);
        off += nb;
    }
    if (st == MK_OK && (json_object_set_new(meta, "moekit.kind", json_string("input second moments")) ||
                        json_object_set_new(hdr, "__metadata__", json_incref(meta))))
        st = mk_err(MK_E_NOMEM, "%s: no memory for the header", path);
    char *txt = st == MK_OK ? json_dumps(hdr, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (st == MK_OK && !txt)
        st = mk_err(MK_E_NOMEM, "%s: no memory for the header", path);
    if (st == MK_OK) {
        size_t hl = strlen(txt), pad = (8 - hl % 8) % 8;
        uint64_t n8 = hl + pad;
        unsigned char le[8];
        for (int b = 0; b < 8; b++)
            le[b] = (unsigned char)(n8 >> (8 * b));
        if (fwrite(le, 1, 8, of->f) != 8 || fwrite(txt, 1, hl, of->f) != hl ||
            fwrite("        ", 1, pad, of->f) != pad)
            st = mk_err(MK_E_IO, "%s: cannot write the header", path);
    }
    free(txt);
    json_decref(meta);
    json_decref(hdr);
    return st;
}

/* Append the tensors of this pass's slots [a->lo, a->hi) (those that
 * received tokens), then free their accumulators. */
static mk_status write_pass(hacc *a, const mk_prof_mod *mods, size_t nmods, const int *slot_of, const char *path,
                            mk_outfile *of, size_t *written) {
    mk_status st = MK_OK;
    float *row = NULL;
    for (size_t i = 0; st == MK_OK && i < nmods; i++) {
        if (slot_of[i] < 0 || (size_t)slot_of[i] < a->lo || (size_t)slot_of[i] >= a->hi ||
            !a->s[slot_of[i]].tokens)
            continue;
        const hslot *s = &a->s[slot_of[i]];
        const hslot *r = shares(a, s) ? &a->s[s->alias] : s;
        const int64_t C = s->cols;
        if (!r->h) {
            st = mk_err(MK_E_INTERNAL, "profile --hessian: module '%s' received tokens but no accumulator",
                        mods[i].name);
            break;
        }
        free(row);
        if (!(row = mk_malloc((size_t)C * sizeof(float))))
            st = mk_err(MK_E_NOMEM, "%s: no memory for a row of %lld floats", path, (long long)C);
        for (int64_t x = 0; st == MK_OK && x < C; x++) {
            for (int64_t y = 0; y < C; y++)
                row[y] = (float)((x <= y ? r->h[x * C + y] : r->h[y * C + x]) / (double)s->tokens);
            if (fwrite(row, sizeof(float), (size_t)C, of->f) != (size_t)C)
                st = mk_err(MK_E_IO, "%s: cannot write module '%s'", path, mods[i].name);
        }
        *written += st == MK_OK;
    }
    free(row);
    for (size_t k = a->lo; k < a->hi; k++)
        if (a->s[k].h) {
            free(a->s[k].h);
            a->s[k].h = NULL;
            a->held -= (uint64_t)(a->s[k].cols * a->s[k].cols) * 8u;
        }
    return st;
}

/* The end of the pass starting at slot lo: as many slots as fit the budget
 * (at least one), each counted 8 * cols^2 unless it shares an accumulator
 * with an earlier slot of the pass (known only after the first pass). */
static size_t plan_pass(const hacc *a, size_t lo, uint64_t budget) {
    uint64_t used = 0;
    size_t k = lo;
    for (; k < a->n; k++) {
        const hslot *s = &a->s[k];
        uint64_t c = (uint64_t)(s->cols * s->cols) * 8u;
        if (a->pass > 0 && (!s->tokens || (s->alias >= 0 && (size_t)s->alias >= lo && (size_t)s->alias < k)))
            c = 0; /* no tokens (nothing to hold) or shares an earlier slot's */
        if (used + c > budget && k > lo)
            break;
        used += c;
    }
    return k;
}

mk_status mk_prof_hessian(const mk_model *m, const int32_t *ids, int64_t n, const mk_prof_opts *o,
                          const char *path, bool replace, mk_prof_hess_info *info) {
    if (!m || !ids || !o || !path || o->window < 1 || n < o->window)
        return mk_err(MK_E_ARG, "profile --hessian: fewer than one window of tokens, or bad arguments");
    if (o->store)
        return mk_err(MK_E_ARG, "profile --hessian: experts must be resident (the second moments of "
                                "streamed experts are not supported yet)");
    const uint64_t budget = o->hess_budget ? o->hess_budget : UINT64_MAX;
    mk_prof_mod *mods = NULL;
    size_t nm = 0;
    MK_TRY(mk_prof_walk(m, &mods, &nm));
    hacc a;
    mk_status st = hacc_init(&a, mods, nm);
    int *slot_of = mk_calloc(nm ? nm : 1, sizeof(int));
    if (st == MK_OK && !slot_of)
        st = mk_err(MK_E_NOMEM, "profile --hessian: no memory for the module index");
    for (size_t i = 0, k = 0; st == MK_OK && i < nm; i++)
        slot_of[i] = mods[i].streamed ? -1 : (int)k++;
    for (size_t k = 0; st == MK_OK && k < a.n; k++) /* a module alone over the budget: refused before any work */
        if ((uint64_t)(a.s[k].cols * a.s[k].cols) * 8u > budget) {
            const char *name = "?";
            for (size_t i = 0; i < nm; i++)
                if (slot_of[i] == (int)k)
                    name = mods[i].name;
            st = mk_err(MK_E_ARG,
                        "profile --hessian: module '%s' needs %llu bytes of accumulator (8 x %lld^2), more "
                        "than the second-moment memory bound of %llu bytes",
                        name, (unsigned long long)((uint64_t)(a.s[k].cols * a.s[k].cols) * 8u),
                        (long long)a.s[k].cols, (unsigned long long)budget);
        }
    mk_engine *e = NULL;
    float *logits = NULL;
    const int64_t V = m->cfg.vocab_size, nw = n / o->window;
    if (st == MK_OK) {
        mk_engine_opts eo = {.threads = o->threads, .max_ctx = o->window, .on_linear = on_linear,
                             .on_linear_user = &a};
        st = mk_engine_create(m, &eo, &e);
    }
    if (st == MK_OK && !(logits = mk_malloc((size_t)(o->window * V) * sizeof(float))))
        st = mk_err(MK_E_NOMEM, "profile --hessian: no memory for %lld x %lld logits", (long long)o->window,
                    (long long)V);
    mk_outfile of = {0};
    bool open = false;
    size_t written = 0, distinct = 0, seen = 0;
    uint64_t one_pass = 0;
    for (a.lo = 0; st == MK_OK && a.lo < a.n; a.lo = a.hi, a.pass++) {
        a.hi = plan_pass(&a, a.lo, budget);
        for (int64_t w = 0; st == MK_OK && w < nw; w++) {
            mk_engine_reset(e);
            a.last_x = NULL;
            st = mk_engine_forward(e, ids + w * o->window, o->window, MK_LOGITS_ALL, logits, NULL);
            if (st == MK_OK)
                st = a.st;
            if (st == MK_OK && o->progress)
                o->progress(o->progress_user, "hessian", w + 1, nw);
        }
        for (size_t k = a.lo; st == MK_OK && k < a.hi; k++)
            if (a.s[k].h) {
                distinct++;
                one_pass += (uint64_t)(a.s[k].cols * a.s[k].cols) * 8u;
            }
        if (st == MK_OK && a.pass == 0) { /* token counts are complete: the header */
            for (size_t k = 0; k < a.n; k++)
                seen += a.s[k].tokens > 0;
            if (!seen)
                st = mk_err(MK_E_INTERNAL, "profile --hessian: the engine multiplied by none of the %zu modules",
                            a.n);
            if (st == MK_OK)
                open = (st = mk_outfile_open(&of, path, replace)) == MK_OK;
            if (st == MK_OK)
                st = write_header(&a, mods, nm, slot_of, path, &of);
        }
        if (st == MK_OK)
            st = write_pass(&a, mods, nm, slot_of, path, &of, &written);
    }
    if (open)
        st = st == MK_OK ? mk_outfile_commit(&of) : (mk_outfile_abort(&of), st);
    mk_engine_free(e);
    free(logits);
    if (st == MK_OK && info) {
        info->modules = written;
        info->distinct = distinct;
        info->unreached = a.n - seen;
        info->accum_bytes = one_pass;
        info->peak_bytes = a.peak;
        info->passes = a.pass;
        info->tokens = nw * o->window;
    }
    free(slot_of);
    hacc_free(&a);
    mk_prof_walk_free(mods, nm);
    return st;
}
