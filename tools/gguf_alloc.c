/* `convert --to gguf --target-bpw X --profile P`: the per-tensor ggml types
 * of a GGUF chosen by moekit's allocator (src/profile/alloc.c), as
 * `quantize --target-bpw` chooses MLX widths.
 *
 * A GGUF stores each layer's routed experts of one projection as one
 * tensor of one type, so the profile's experts are merged per stack first:
 * one tensor with their summed parameters and bytes and their weighted
 * error (usage x error x params summed, so the objective is unchanged when
 * the stack takes one width). The candidate widths are those of the
 * profile among 4, 5, 6 and 8, each standing for the ggml type of about
 * the same size: Q4_K (4.5 bits per weight, as MLX affine 4-bit g64),
 * Q5_K (5.5), Q6_K (6.5625) and Q8_0 (8.5); the budget counts what the GGUF
 * stores (gguf_bytes: the type, or llama.cpp's fallback for rows that are
 * not whole blocks; routers F32, as llama.cpp keeps them). The profile's
 * errors are MLX affine round-to-nearest errors: a proxy for the K-quants'
 * (their order across widths is the same; their size is not). */
#include "gguf_alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "moekit/ggml_quant.h"
#include "moekit/profile.h"

static int type_of_bits(int b) {
    return b == 4 ? MK_GGML_Q4_K : b == 5 ? MK_GGML_Q5_K : b == 6 ? MK_GGML_Q6_K : b == 8 ? MK_GGML_Q8_0 : -1;
}

/* Bytes of `rows` rows of `cols` values at width b in a GGUF: its type, or
 * llama.cpp's fallback when the rows are not whole blocks of it (Q4_K ->
 * Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, then F16), as convert writes them. */
static uint64_t gguf_bytes(int b, int64_t rows, int64_t cols) {
    mk_ggml_type t = (mk_ggml_type)type_of_bits(b);
    if (cols % mk_ggml_block_size(t))
        t = t == MK_GGML_Q4_K ? MK_GGML_Q5_0 : t == MK_GGML_Q5_K ? MK_GGML_Q5_1 : t == MK_GGML_Q6_K ? MK_GGML_Q8_0 : t;
    if (cols % mk_ggml_block_size(t))
        t = MK_GGML_F16;
    return (uint64_t)rows * mk_ggml_row_bytes(t, cols);
}

/* The profile with each expert stack merged into one tensor, over widths
 * bits[0..nb) (the profile's index of each in kidx). */
static mk_status merge_stacks(const mk_prof *p, const int *bits, const int *kidx, int nb, mk_prof **out) {
    MK_TRY(mk_prof_new(bits, nb, mk_prof_group(p), out));
    size_t n = mk_prof_count(p);
    unsigned char *done = mk_calloc(n ? n : 1, 1);
    if (!done)
        return mk_err(MK_E_NOMEM, "--target-bpw: no memory for %zu profiled tensors", n);
    mk_status st = MK_OK;
    for (size_t i = 0; st == MK_OK && i < n; i++) {
        const mk_prof_tensor *t = mk_prof_tensor_at(p, i);
        if (done[i])
            continue;
        mk_prof_tensor m = *t;
        if (t->kind == MK_PROF_EXPERT || t->kind == MK_PROF_LINEAR) {
            memset(m.err, 0, sizeof m.err);
            memset(m.bytes, 0, sizeof m.bytes);
            double up = 0, uep[MK_PROF_MAX_BITS] = {0};
            int64_t rows = 0;
            for (size_t j = i; j < n; j++) {
                const mk_prof_tensor *e = mk_prof_tensor_at(p, j);
                bool same = j == i || (t->stack && e->stack && strcmp(e->stack, t->stack) == 0);
                if (!same)
                    continue;
                done[j] = 1;
                rows += e->rows;
                up += e->usage * (double)e->params;
                for (int k = 0; k < nb; k++) {
                    uep[k] += e->usage * e->err[kidx[k]] * (double)e->params;
                    m.bytes[k] += gguf_bytes(bits[k], e->rows, e->cols); /* the GGUF's size, not MLX's */
                }
            }
            m.name = t->stack ? t->stack : t->name;
            m.stack = NULL;
            m.kind = MK_PROF_LINEAR;
            m.expert = -1;
            m.rows = rows;
            double params = (double)rows * (double)t->cols;
            m.usage = params > 0 ? up / params : 0;
            for (int k = 0; k < nb; k++)
                m.err[k] = up > 0 ? uep[k] / up : 0;
        } else if (t->kind == MK_PROF_ROUTER) { /* F32 in a GGUF */
            m.fixed_bits = 32;
            m.fixed_bytes = t->params * 4;
        }
        st = mk_prof_add(*out, &m);
    }
    free(done);
    return st;
}

mk_status mk_gguf_alloc_solve(const char *profile, double target, const char *class_weights, mk_conv_opts *o,
                              mk_gguf_alloc *a) {
    memset(a, 0, sizeof *a);
    mk_prof *p = NULL, *mp = NULL;
    mk_alloc al;
    memset(&al, 0, sizeof al);
    MK_TRY(mk_prof_load(profile, &p));
    mk_status st = mk_prof_class_weights(p, class_weights ? class_weights : "none");
    const int *pb;
    int npb = mk_prof_bits(p, &pb), bits[MK_PROF_MAX_BITS], kidx[MK_PROF_MAX_BITS], nb = 0;
    for (int k = 0; k < npb; k++)
        if (type_of_bits(pb[k]) >= 0) {
            bits[nb] = pb[k];
            kidx[nb++] = k;
        }
    if (st == MK_OK && nb == 0)
        st = mk_err(MK_E_ARG, "%s: the profile has none of the widths 4, 5, 6, 8 (those with a ggml type: Q4_K, "
                    "Q5_K, Q6_K, Q8_0)", profile);
    if (st == MK_OK)
        st = merge_stacks(p, bits, kidx, nb, &mp);
    if (st == MK_OK)
        st = mk_alloc_solve(mp, target, NULL, 0, &al);
    uint64_t by_type[16] = {0};
    if (st == MK_OK) {
        a->mod = mk_calloc(al.n_items ? al.n_items : 1, sizeof *a->mod);
        a->type = mk_calloc(al.n_items ? al.n_items : 1, sizeof *a->type);
        if (!a->mod || !a->type)
            st = mk_err(MK_E_NOMEM, "--target-bpw: no memory for %zu type overrides", al.n_items);
    }
    for (size_t i = 0; st == MK_OK && i < al.n_items; i++) {
        const mk_alloc_item *it = &al.items[i];
        if (it->fixed)
            continue; /* routers: F32 in a GGUF whatever the allocation */
        int t = type_of_bits(it->bits);
        const mk_prof_tensor *pt = mk_prof_find(mp, it->module);
        if (t < 0 || !pt) {
            st = mk_err(MK_E_INTERNAL, "--target-bpw: module '%s' allocated %d bits", it->module, it->bits);
            break;
        }
        a->mod[a->n] = mk_strdup(it->module);
        if (!a->mod[a->n]) {
            st = mk_err(MK_E_NOMEM, "--target-bpw: no memory for the module name '%s'", it->module);
            break;
        }
        a->type[a->n++] = t;
        by_type[t] += pt->params;
    }
    if (st == MK_OK) {
        int def = MK_GGML_Q4_K;
        for (int t = 0; t < 16; t++)
            if (by_type[t] > by_type[def])
                def = t;
        o->gguf_type = def;
        o->gguf_over_mod = (const char *const *)a->mod;
        o->gguf_over_type = a->type;
        o->n_gguf_over = a->n;
        a->expected_bpw = al.achieved_bpw;
    } else {
        mk_gguf_alloc_free(a);
    }
    mk_alloc_free(&al);
    mk_prof_free(mp);
    mk_prof_free(p);
    return st;
}

void mk_gguf_alloc_free(mk_gguf_alloc *a) {
    if (!a)
        return;
    for (size_t i = 0; i < a->n; i++)
        free(a->mod[i]);
    free(a->mod);
    free(a->type);
    memset(a, 0, sizeof *a);
}
