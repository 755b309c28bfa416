/* Two backends compared layer by layer (crosscheck.h): both engines run
 * the same ids with hidden-state capture; relative L2 per stage in double. */
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

static mk_status run_one(const mk_model *m, mk_backend *b, const mk_engine_opts *o, const int32_t *ids,
                         int64_t n, float *logits, float *hidden) {
    mk_engine_opts eo = *o;
    eo.backend = b;
    eo.max_ctx = eo.max_ctx >= n ? eo.max_ctx : n;
    mk_engine *e = NULL;
    MK_TRY(mk_engine_create(m, &eo, &e));
    mk_status st = mk_engine_forward(e, ids, n, MK_LOGITS_ALL, logits, hidden);
    mk_engine_free(e);
    return st;
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

mk_status mk_xcheck_run(const mk_model *m, mk_backend *ref, mk_backend *test, const mk_engine_opts *o,
                        const int32_t *ids, int64_t n, double tol, mk_xcheck *out) {
    memset(out, 0, sizeof *out);
    out->first_bad = -1;
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
    if (st == MK_OK) { /* the reference on float activations (crosscheck.h says why) */
        const int int8 = mk_kernels_int8_setting(), pre8 = mk_kernels_prefill_int8_setting();
        mk_kernels_set_int8(false);
        mk_kernels_set_prefill_int8(false);
        st = run_one(m, ref, o, ids, n, lg[0], h[0]);
        mk_kernels_restore_int8(int8);
        mk_kernels_restore_prefill_int8(pre8);
        if (st != MK_OK)
            mk_err_wrap(st, "--verify: the reference run");
    }
    if (st == MK_OK && (st = run_one(m, test, o, ids, n, lg[1], h[1])) != MK_OK)
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
    x->rel = NULL;
}
