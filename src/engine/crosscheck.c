/* Two backends compared layer by layer (crosscheck.h): both engines run
 * the same ids with hidden-state capture; relative L2 per stage in double.
 * Then, when a layer diverges, both run again with the step observer on
 * that layer and its steps are compared by name. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "moekit/crosscheck.h"
#include "moekit/kernels.h"

const char *mk_xcheck_stage_name(const mk_xcheck *x, int i, char *buf, size_t n) {
    if (i == 0)
        snprintf(buf, n, "embeddings");
    else if (i == x->stages - 1)
        snprintf(buf, n, "logits");
    else if (i == x->stages - 2)
        snprintf(buf, n, "layer %d output (after the final norm)", i - 1);
    else
        snprintf(buf, n, "layer %d output", i - 1);
    return buf;
}

/* One layer's steps as the step observer showed them: per step name, its
 * outputs over the run's chunks, appended in order. */
#define XC_MAX_OPS 64
typedef struct tap_log {
    int n;
    const char *name[XC_MAX_OPS]; /* the engine's static strings */
    float *data[XC_MAX_OPS];
    size_t len[XC_MAX_OPS], cap[XC_MAX_OPS];
    int64_t cols[XC_MAX_OPS];
    bool odd[XC_MAX_OPS]; /* its width changed between chunks */
    bool nomem;
} tap_log;

static void tap_record(void *user, int layer, const char *op, const float *x, int64_t rows, int64_t cols) {
    tap_log *t = user;
    (void)layer; /* the engine shows one layer (tap_layer) */
    int i = 0;
    while (i < t->n && strcmp(t->name[i], op))
        i++;
    if (i == t->n) {
        if (t->n == XC_MAX_OPS) {
            t->nomem = true;
            return;
        }
        t->name[t->n] = op;
        t->cols[t->n++] = cols;
    }
    t->odd[i] |= t->cols[i] != cols;
    size_t add = (size_t)rows * (size_t)cols;
    if (t->len[i] + add > t->cap[i]) {
        size_t cap = 2 * (t->len[i] + add);
        float *d = realloc(t->data[i], cap * sizeof(float));
        if (!d) {
            t->nomem = true;
            return;
        }
        t->data[i] = d;
        t->cap[i] = cap;
    }
    memcpy(t->data[i] + t->len[i], x, add * sizeof(float));
    t->len[i] += add;
}

static void tap_free(tap_log *t) {
    for (int i = 0; i < t->n; i++)
        free(t->data[i]);
}

/* The ids through m on b: logits and hidden states when given (NULL: not
 * asked for), layer `tap_layer`'s steps into `tap` when given. */
static mk_status run_one(const mk_model *m, mk_backend *b, const mk_engine_opts *o, const int32_t *ids,
                         int64_t n, float *logits, float *hidden, tap_log *tap, int tap_layer) {
    mk_engine_opts eo = *o;
    eo.backend = b;
    eo.max_ctx = eo.max_ctx >= n ? eo.max_ctx : n;
    if (tap) {
        eo.on_tap = tap_record;
        eo.on_tap_user = tap;
        eo.tap_layer = tap_layer;
    }
    mk_engine *e = NULL;
    MK_TRY(mk_engine_create(m, &eo, &e));
    mk_status st = mk_engine_forward(e, ids, n, logits ? MK_LOGITS_ALL : MK_LOGITS_NONE, logits, hidden);
    mk_engine_free(e);
    if (st == MK_OK && tap && tap->nomem)
        st = mk_err(MK_E_NOMEM, "--verify: no memory for layer %d's step outputs", tap_layer);
    return st;
}

/* The reference run, on float activations (crosscheck.h says why). */
static mk_status run_ref(const mk_model *m, mk_backend *b, const mk_engine_opts *o, const int32_t *ids,
                         int64_t n, float *logits, float *hidden, tap_log *tap, int tap_layer) {
    const int int8 = mk_kernels_int8_setting(), pre8 = mk_kernels_prefill_int8_setting();
    mk_kernels_set_int8(false);
    mk_kernels_set_prefill_int8(false);
    mk_status st = run_one(m, b, o, ids, n, logits, hidden, tap, tap_layer);
    mk_kernels_restore_int8(int8);
    mk_kernels_restore_prefill_int8(pre8);
    return st != MK_OK ? mk_err_wrap(st, "--verify: the reference run") : MK_OK;
}

static double rel_l2(const float *a, const float *ref, size_t n) {
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        double x = (double)a[i] - (double)ref[i];
        d += x * x;
        r += (double)ref[i] * (double)ref[i];
    }
    return r > 0 ? sqrt(d / r) : sqrt(d);
}

/* Layer l's steps on both backends, by name in the reference's order. */
static mk_status compare_ops(const mk_model *m, mk_backend *ref, mk_backend *test, const mk_engine_opts *o,
                             const int32_t *ids, int64_t n, double tol, int l, mk_xcheck *out) {
    tap_log *t = calloc(2, sizeof *t);
    if (!t)
        return mk_err(MK_E_NOMEM, "--verify: no memory for the step logs");
    mk_status st = run_ref(m, ref, o, ids, n, NULL, NULL, &t[0], l);
    if (st == MK_OK && (st = run_one(m, test, o, ids, n, NULL, NULL, &t[1], l)) != MK_OK)
        mk_err_wrap(st, "--verify: the run under test (layer %d's steps)", l);
    if (st == MK_OK) {
        out->op = calloc((size_t)t[0].n + 1, sizeof *out->op);
        out->op_rel = calloc((size_t)t[0].n + 1, sizeof *out->op_rel);
        if (!out->op || !out->op_rel)
            st = mk_err(MK_E_NOMEM, "--verify: no memory for the step report");
    }
    for (int i = 0; st == MK_OK && i < t[0].n; i++) {
        int j = 0;
        while (j < t[1].n && strcmp(t[1].name[j], t[0].name[i]))
            j++;
        double r = -1; /* not a step of the run under test */
        if (j < t[1].n)
            r = t[0].odd[i] || t[1].odd[j] || t[0].cols[i] != t[1].cols[j] || t[0].len[i] != t[1].len[j]
                    ? INFINITY
                    : rel_l2(t[1].data[j], t[0].data[i], t[0].len[i]);
        out->op[i] = t[0].name[i];
        out->op_rel[i] = r;
        if (out->first_bad_op < 0 && r != -1 && !(r <= tol))
            out->first_bad_op = i;
    }
    if (st == MK_OK) {
        out->layer = l;
        out->ops = t[0].n;
    }
    tap_free(&t[0]);
    tap_free(&t[1]);
    free(t);
    return st;
}

mk_status mk_xcheck_run(const mk_model *m, mk_backend *ref, mk_backend *test, const mk_engine_opts *o,
                        const int32_t *ids, int64_t n, double tol, mk_xcheck *out) {
    memset(out, 0, sizeof *out);
    out->first_bad = out->first_bad_op = out->layer = -1;
    const mk_config *c = mk_model_config(m);
    int L = c->num_layers;
    size_t nh = (size_t)(L + 1) * (size_t)n * (size_t)c->hidden_size, nl = (size_t)n * (size_t)c->vocab_size;
    float *h[2] = {mk_malloc(nh * sizeof(float)), mk_malloc(nh * sizeof(float))};
    float *lg[2] = {mk_malloc(nl * sizeof(float)), mk_malloc(nl * sizeof(float))};
    out->stages = L + 2;
    out->rel = mk_calloc((size_t)out->stages, sizeof *out->rel);
    mk_status st = MK_OK;
    if (!h[0] || !h[1] || !lg[0] || !lg[1] || !out->rel)
        st = mk_err(MK_E_NOMEM, "--verify: no memory for two runs' hidden states (%zu floats each)", nh);
    mk_backend *own = NULL;
    if (st == MK_OK && !ref && (st = mk_backend_cpu_create(NULL, &own)) == MK_OK)
        ref = own;
    if (st == MK_OK)
        st = run_ref(m, ref, o, ids, n, lg[0], h[0], NULL, 0);
    if (st == MK_OK && (st = run_one(m, test, o, ids, n, lg[1], h[1], NULL, 0)) != MK_OK)
        mk_err_wrap(st, "--verify: the run under test");
    size_t per = (size_t)n * (size_t)c->hidden_size;
    for (int i = 0; st == MK_OK && i < out->stages; i++) {
        out->rel[i] = i < L + 1 ? rel_l2(h[1] + (size_t)i * per, h[0] + (size_t)i * per, per)
                                : rel_l2(lg[1], lg[0], nl);
        if (out->first_bad < 0 && !(out->rel[i] <= tol)) /* NaN counts as bad */
            out->first_bad = i;
    }
    for (int64_t t = 0; st == MK_OK && t < n; t++) {
        const float *a = lg[0] + (size_t)t * (size_t)c->vocab_size, *b = lg[1] + (size_t)t * (size_t)c->vocab_size;
        int ia = 0, ib = 0;
        for (int v = 1; v < c->vocab_size; v++) {
            ia = a[v] > a[ia] ? v : ia;
            ib = b[v] > b[ib] ? v : ib;
        }
        out->argmax_diff += ia != ib;
    }
    free(h[0]); /* the hidden states are not needed by the step pass */
    free(h[1]);
    h[0] = h[1] = NULL;
    if (st == MK_OK && out->first_bad >= 1 && out->first_bad <= L)
        st = compare_ops(m, ref, test, o, ids, n, tol, out->first_bad - 1, out);
    mk_backend_free(own);
    free(h[0]);
    free(h[1]);
    free(lg[0]);
    free(lg[1]);
    if (st != MK_OK)
        mk_xcheck_free(out);
    return st;
}

void mk_xcheck_free(mk_xcheck *x) {
    free(x->rel);
    free(x->op);
    free(x->op_rel);
    x->rel = x->op_rel = NULL;
    x->op = NULL;
    x->ops = 0;
}
