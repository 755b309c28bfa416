/* The engine runs checkpoints whose routed experts differ in bits within a
 * layer, stored as separate MLX-quantized modules: what a --target-bpw
 * allocation produces.
 *
 * From the qwen35moe-a fixture (HF per-expert bf16) this test writes two
 * checkpoints with MLX qwen3_5_moe naming (`language_model.model.*`,
 * `language_model.lm_head`):
 *   Q  every linear module quantized with mk_quant_rows as
 *      `<module>.weight` (U32) / `.scales` / `.biases` (bf16), each routed
 *      expert `...mlp.experts.{e}.{gate,up,down}_proj` at its own width
 *      (2..8, all six widths inside every layer), other modules at 4..8,
 *      routers at 8, with a per-module entry for each in the config's
 *      "quantization" block (and its "quantization_config" copy);
 *   F  the same modules as float32 tensors holding the dequantized values
 *      (mk_dequant_rows), no quantization block.
 * Q must load (layout per-expert / affine), every expert view of Q must
 * dequantize to exactly F's rows, and the logits of Q and F must agree to
 * float32 accumulation-order noise with identical argmax: on float
 * activations, pinned here (mk_kernels_set_int8(false)), since the
 * library's default int8 activations (x86 paths) round x for the one-token products
 * of MLX affine 4/8-bit weights (an expert a single prompt token routes
 * to) and Q's logits would then hold that rounding, not only float noise.
 * With int8 activations the same comparison is held to the bound those
 * products allow (kernels.h "Accuracy"; see the test). A config entry that
 * gives one expert the wrong width must be refused naming it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"
#include "model/model_impl.h"
#include "moekit/engine.h"
#include "moekit/kernels.h"
#include "moekit/quant.h"
#include "moekit/st.h"
#include "profile/profile_impl.h"

/* One output tensor, held in memory. */
typedef struct otensor {
    char *name;
    mk_dtype dt;
    int ndim;
    int64_t shape[MK_MAX_DIMS];
    void *data;
    size_t nbytes;
} otensor;

typedef struct ckpt_out {
    otensor *t;
    size_t n, cap;
} ckpt_out;

static void put(ckpt_out *o, const char *name, mk_dtype dt, int ndim, const int64_t *shape,
                void *data, size_t nbytes) {
    if (o->n == o->cap) {
        o->cap = o->cap ? 2 * o->cap : 256;
        o->t = realloc(o->t, o->cap * sizeof *o->t);
        assert_non_null(o->t);
    }
    otensor *t = &o->t[o->n++];
    t->name = strdup(name);
    t->dt = dt;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->data = data;
    t->nbytes = nbytes;
}

static void write_ckpt(const ckpt_out *o, const char *dir, const char *config) {
    mk_stw_opts so = {.force = true, .basename = "model"};
    mk_stw *w = NULL;
    assert_int_equal(mk_stw_create(dir, &so, &w), MK_OK);
    for (size_t i = 0; i < o->n; i++)
        assert_int_equal(mk_stw_add(w, o->t[i].name, o->t[i].dt, o->t[i].ndim, o->t[i].shape),
                         MK_OK);
    assert_int_equal(mk_stw_begin_data(w), MK_OK);
    for (size_t k = 0; k < mk_stw_count(w); k++) {
        size_t i = 0;
        while (strcmp(o->t[i].name, mk_stw_name(w, k)))
            i++;
        assert_int_equal(mk_stw_write(w, o->t[i].data, o->t[i].nbytes), MK_OK);
    }
    assert_int_equal(mk_stw_finish(w), MK_OK);
    mk_stw_free(w);
    char p[4200];
    snprintf(p, sizeof p, "%s/config.json", dir);
    assert_int_equal(mk_test_write(p, config, strlen(config)), 0);
}

static void ckpt_out_free(ckpt_out *o) {
    for (size_t i = 0; i < o->n; i++) {
        free(o->t[i].name);
        free(o->t[i].data);
    }
    free(o->t);
}

static void *dup_bytes(const void *p, size_t n) {
    void *d = malloc(n ? n : 1);
    assert_non_null(d);
    memcpy(d, p, n);
    return d;
}

/* HF canonical name -> MLX qwen3_5_moe name. */
static void mlx_tensor_name(const char *hf, char *out, size_t n) {
    if (!strncmp(hf, "model.", 6))
        snprintf(out, n, "language_model.%s", hf);
    else
        snprintf(out, n, "language_model.%s", hf); /* lm_head.weight */
}

/* The width each module gets: experts cycle through all six widths inside
 * every layer, other modules 4..8, routers 8. */
static int width_of(const mk_prof_mod *m, int idx) {
    static const int w[6] = {2, 3, 4, 5, 6, 8};
    if (m->kind == MK_PROF_ROUTER)
        return 8;
    if (m->kind == MK_PROF_EXPERT)
        return w[(m->expert + idx) % 6]; /* idx steps 3 per expert: 4e + j mod 6 */
    return w[2 + idx % 4];
}

typedef struct built {
    char *config_q, *config_f;
    size_t n_expert_entries;
    char first_expert[256];
    int first_expert_bits;
} built;

/* Fill q and f from the source model; returns the two config texts. */
static void build(const mk_model *m, ckpt_out *q, ckpt_out *f, built *b) {
    mk_prof_mod *mods = NULL;
    size_t nm = 0;
    assert_int_equal(mk_prof_walk(m, &mods, &nm), MK_OK);
    const mk_ckpt *ck = mk_model_ckpt(m);
    char name[512];
    /* quantization block entries */
    size_t cap = 1 << 16, len = 0;
    char *entries = malloc(cap);
    assert_non_null(entries);
    entries[0] = 0;
    /* which source tensors the modules replace */
    bool *done = calloc(mk_ckpt_count(ck), sizeof *done);
    assert_non_null(done);
    for (size_t i = 0; i < nm; i++) {
        const mk_prof_mod *md = &mods[i];
        const mk_tensor_info *t = mk_ckpt_find(ck, md->source);
        assert_non_null(t); /* per-expert HF source: plain tensor names */
        done[t - mk_ckpt_tensor(ck, 0)] = true;
        int64_t rows = t->shape[0], cols = t->shape[1];
        int bits = width_of(md, (int)i);
        mk_qparams qp;
        assert_int_equal(mk_quant_params(MK_QMODE_AFFINE, bits, 64, 0, &qp), MK_OK);
        uint64_t wb, sb, bb;
        assert_int_equal(mk_quant_out_bytes(&qp, t->dtype, rows, cols, &wb, &sb, &bb), MK_OK);
        void *wq = malloc(wb), *sc = malloc(sb), *bi = malloc(bb);
        float *deq = malloc((size_t)(rows * cols) * sizeof(float));
        assert_true(wq && sc && bi && deq);
        assert_int_equal(mk_quant_rows(&qp, t->dtype, mk_ckpt_data(ck, t), rows, cols, wq, sc, bi),
                         MK_OK);
        assert_int_equal(mk_dequant_rows(&qp, t->dtype, wq, sc, bi, rows, cols, MK_DT_F32, deq),
                         MK_OK);
        int64_t wshape[2] = {rows, cols * bits / 32}, sshape[2] = {rows, cols / 64};
        snprintf(name, sizeof name, "%s.weight", md->name);
        put(q, name, MK_DT_U32, 2, wshape, wq, wb);
        put(f, name, MK_DT_F32, 2, t->shape, deq, (size_t)(rows * cols) * sizeof(float));
        snprintf(name, sizeof name, "%s.scales", md->name);
        put(q, name, t->dtype, 2, sshape, sc, sb);
        snprintf(name, sizeof name, "%s.biases", md->name);
        put(q, name, t->dtype, 2, sshape, bi, bb);
        if (len + 600 > cap) {
            cap *= 2;
            entries = realloc(entries, cap);
            assert_non_null(entries);
        }
        len += (size_t)snprintf(entries + len, cap - len, ", \"%s\": {\"group_size\": 64, "
                                "\"bits\": %d}", md->name, bits);
        if (md->kind == MK_PROF_EXPERT && !b->n_expert_entries++) {
            snprintf(b->first_expert, sizeof b->first_expert, "%s", md->name);
            b->first_expert_bits = bits;
        }
    }
    /* everything else (norms, conv1d, A_log, dt_bias) copied under MLX names */
    for (size_t i = 0; i < mk_ckpt_count(ck); i++) {
        const mk_tensor_info *t = mk_ckpt_tensor(ck, i);
        if (done[i])
            continue;
        mlx_tensor_name(t->name, name, sizeof name);
        put(q, name, t->dtype, t->ndim, t->shape, dup_bytes(mk_ckpt_data(ck, t), t->nbytes),
            t->nbytes);
        put(f, name, t->dtype, t->ndim, t->shape, dup_bytes(mk_ckpt_data(ck, t), t->nbytes),
            t->nbytes);
    }
    free(done);
    /* configs: the source's, plus the quantization blocks for Q */
    char p[4200];
    snprintf(p, sizeof p, "%s/config.json", mk_model_dir(m));
    size_t n;
    char *cfg = mk_test_slurp(p, &n);
    assert_non_null(cfg);
    while (n && cfg[n - 1] != '}')
        n--;
    assert_true(n > 0);
    size_t qn = n + 2 * len + 512;
    b->config_q = malloc(qn);
    assert_non_null(b->config_q);
    snprintf(b->config_q, qn,
             "%.*s, \"quantization\": {\"group_size\": 64, \"bits\": 4, \"mode\": \"affine\"%s}, "
             "\"quantization_config\": {\"group_size\": 64, \"bits\": 4, \"mode\": \"affine\"%s}}\n",
             (int)(n - 1), cfg, entries, entries);
    b->config_f = malloc(n + 1);
    assert_non_null(b->config_f);
    memcpy(b->config_f, cfg, n);
    b->config_f[n] = 0;
    free(cfg);
    free(entries);
    mk_prof_walk_free(mods, nm);
}

static float *logits_of(const mk_model *m, const int32_t *ids, int64_t n) {
    mk_engine_opts o = {.threads = 2, .max_ctx = n};
    mk_engine *e = NULL;
    assert_int_equal(mk_engine_create(m, &o, &e), MK_OK);
    float *lg = malloc((size_t)(n * mk_model_config(m)->vocab_size) * sizeof(float));
    assert_non_null(lg);
    if (mk_engine_forward(e, ids, n, MK_LOGITS_ALL, lg, NULL) != MK_OK)
        fail_msg("forward: %s", mk_err_msg());
    mk_engine_free(e);
    return lg;
}

/* ||a - b|| / ||b|| in double */
static double rel_l2(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / den);
}

static int argmax(const float *x, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return (int)b;
}

static void test_mixed_expert_bits(void **st) {
    (void)st;
    char src[4096];
    snprintf(src, sizeof src, "%s", mk_test_fixture("qwen35moe-a/bf16"));
    mk_model *m = NULL;
    if (mk_model_open(src, &m) != MK_OK)
        fail_msg("open %s: %s", src, mk_err_msg());
    char *tmp = mk_test_tmpdir("prof-mixed"), dq[4200], df[4200], dbad[4200];
    snprintf(dq, sizeof dq, "%s/q", tmp);
    snprintf(df, sizeof df, "%s/f", tmp);
    snprintf(dbad, sizeof dbad, "%s/bad", tmp);
    ckpt_out q = {0}, f = {0};
    built b = {0};
    build(m, &q, &f, &b);
    write_ckpt(&q, dq, b.config_q);
    write_ckpt(&f, df, b.config_f);

    mk_model *mq = NULL, *mf = NULL;
    if (mk_model_open(dq, &mq) != MK_OK)
        fail_msg("open mixed-bits MLX checkpoint: %s", mk_err_msg());
    assert_int_equal(mk_model_open(df, &mf), MK_OK);
    assert_non_null(strstr(mk_model_layout(mq), "per-expert"));
    assert_non_null(strstr(mk_model_layout(mq), "affine"));
    /* every expert view dequantizes to F's rows exactly, widths as configured */
    const mk_config *c = mk_model_config(mq);
    int64_t H = c->hidden_size;
    float *ra = malloc((size_t)(4 * H) * sizeof(float)), *rb = ra + 2 * H;
    assert_non_null(ra);
    unsigned seen_bits = 0;
    for (int l = 0; l < c->num_layers; l++) {
        unsigned layer_bits = 0;
        for (int e = 0; e < c->num_experts; e++)
            for (int j = 0; j < 3; j++) {
                const mk_expert *xq = &mq->layers[l].moe.experts[e], *xf = &mf->layers[l].moe.experts[e];
                const mk_wt *wq = j == 0 ? &xq->gate : j == 1 ? &xq->up : &xq->down;
                const mk_wt *wf = j == 0 ? &xf->gate : j == 1 ? &xf->up : &xf->down;
                assert_int_equal(wq->fmt, MK_WF_AFFINE);
                assert_int_equal(wf->fmt, MK_WF_F32);
                layer_bits |= 1u << wq->bits;
                for (int64_t r = 0; r < wq->rows; r++) {
                    mk_wt_dequant_row(wq, r, ra);
                    mk_wt_dequant_row(wf, r, rb);
                    if (memcmp(ra, rb, (size_t)wq->cols * sizeof(float)))
                        fail_msg("layer %d expert %d proj %d row %lld differs", l, e, j,
                                 (long long)r);
                }
            }
        /* 8 experts x 3 projections cover all six widths in every layer */
        assert_int_equal(layer_bits, (1u << 2) | (1u << 3) | (1u << 4) | (1u << 5) | (1u << 6) |
                                         (1u << 8));
        seen_bits |= layer_bits;
    }
    assert_true(seen_bits != 0);
    free(ra);
    /* logits: same weights, different kernels -> float32 noise only (float
     * activations: the library's default int8 ones are checked below) */
    static const int32_t ids[12] = {5, 17, 300, 42, 7, 99, 250, 3, 64, 128, 11, 400};
    const int int8_was = mk_kernels_int8_setting();
    mk_kernels_set_int8(false);
    float *lq = logits_of(mq, ids, 12), *lf = logits_of(mf, ids, 12);
    int64_t V = c->vocab_size;
    double rel = rel_l2(lq, lf, 12 * V);
    print_message("mixed-bits MLX vs dequantized float logits: rel L2 %.3g\n", rel);
    assert_true(rel < 1e-4);
    for (int t = 0; t < 12; t++)
        assert_int_equal(argmax(lq + t * V, V), argmax(lf + t * V, V));
    free(lq);
    /* int8 activations: Q's one-token products over its 4/8-bit modules
     * round x to 8 bits per block of 32, each product within its stated
     * bound (kernels.h; test_kernels holds the kernels to it against the
     * scalar dequantizer), about 0.5% relative per product for x like
     * these; the fixture's 4 layers mix such products with float ones, so
     * the logits stay within a few times that: 1e-2 relative (measured
     * 1.7e-3 by the 2026-12-03 session), 100x the float-noise bound above. */
    mk_kernels_set_int8(true);
    /* the one-token products only: the 12-token prefill's int8 GEMM (which
     * follows this setting by default) is held to its bound by test_gemm_q8 */
    const int pre8_was = mk_kernels_prefill_int8_setting();
    mk_kernels_set_prefill_int8(false);
    lq = logits_of(mq, ids, 12);
    mk_kernels_restore_prefill_int8(pre8_was);
    double rel8 = rel_l2(lq, lf, 12 * V);
    print_message("mixed-bits MLX (int8 activations) vs dequantized float logits: rel L2 %.3g\n", rel8);
    assert_true(rel8 < 1e-2);
    mk_kernels_restore_int8(int8_was);
    free(lq);
    free(lf);

    /* one expert entry saying the wrong width: refused, naming the module */
    char key[300];
    snprintf(key, sizeof key, "\"%s\": {\"group_size\": 64, \"bits\": %d}", b.first_expert,
             b.first_expert_bits);
    char *bad = strdup(b.config_q);
    assert_non_null(bad);
    int hits = 0;
    for (char *h = strstr(bad, key); h; h = strstr(h + 1, key), hits++) {
        char *d = strstr(h, "\"bits\": ") + 8;
        *d = b.first_expert_bits == 4 ? '8' : '4'; /* every width is one digit */
    }
    assert_int_equal(hits, 2);
    write_ckpt(&q, dbad, bad);
    mk_model *mb = NULL;
    assert_int_equal(mk_model_open(dbad, &mb), MK_E_MISMATCH);
    assert_null(mb);
    assert_non_null(strstr(mk_err_msg(), b.first_expert));
    free(bad);

    mk_model_free(mq);
    mk_model_free(mf);
    mk_model_free(m);
    ckpt_out_free(&q);
    ckpt_out_free(&f);
    free(b.config_q);
    free(b.config_f);
    mk_test_rmrf(tmp);
    free(tmp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mixed_expert_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
