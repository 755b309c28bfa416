/* mk_prof_run on the trained tiny-qwen35moe fixture (512 calibration tokens
 * of its devtext.txt), the profile's JSON round trip and strict reader, and
 * the profile/model check.
 *
 * Checked on the fixture: routing frequencies of every MoE layer sum to
 * top_k (2) and usage weights to 1 per layer and projection; the tensor
 * set (192 experts, 33 other linear modules, 8 routers, no float) with MLX
 * names and source names; relative errors strictly decreasing with bits,
 * in the range 4-bit affine gives Gaussian-like weights, and equal to an
 * independent whole-tensor computation; bytes equal to the MLX layout's;
 * results independent of the thread count. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"
#include "moekit/profile.h"
#include "moekit/quant.h"
#include "moekit/tokenizer.h"

static mk_model *g_model;
static int32_t *g_ids;
static size_t g_nids;
static mk_prof *g_prof; /* 2 threads */

static int setup(void **st) {
    (void)st;
    char dir[4096], txt[4096];
    snprintf(dir, sizeof dir, "%s", mk_test_fixture("tiny-qwen35moe/bf16"));
    snprintf(txt, sizeof txt, "%s", mk_test_fixture("tiny-qwen35moe/devtext.txt"));
    if (mk_model_open(dir, &g_model) != MK_OK)
        return fprintf(stderr, "open: %s\n", mk_err_msg()), -1;
    mk_tok *tok = NULL;
    size_t n = 0;
    char *text = mk_test_slurp(txt, &n);
    if (!text || mk_tok_load(dir, &tok) != MK_OK ||
        mk_tok_encode(tok, text, n, 0, &g_ids, &g_nids) != MK_OK)
        return fprintf(stderr, "tokenize: %s\n", mk_err_msg()), -1;
    free(text);
    mk_tok_free(tok);
    mk_prof_opts o;
    mk_prof_opts_init(&o);
    o.threads = 2;
    if (mk_prof_run(g_model, g_ids, 512, &o, &g_prof) != MK_OK)
        return fprintf(stderr, "profile: %s\n", mk_err_msg()), -1;
    return 0;
}

static int teardown(void **st) {
    (void)st;
    mk_prof_free(g_prof);
    free(g_ids);
    mk_model_free(g_model);
    return 0;
}

static void test_routing(void **st) {
    (void)st;
    assert_int_equal(mk_prof_tokens(g_prof), 512);
    assert_int_equal(mk_prof_route_layers(g_prof), 4);
    for (int i = 0; i < 4; i++) {
        int layer, E;
        const double *f, *w;
        assert_true(mk_prof_route(g_prof, i, &layer, &E, &f, &w));
        assert_int_equal(layer, i);
        assert_int_equal(E, 16);
        double sum = 0;
        for (int e = 0; e < E; e++) {
            assert_true(f[e] >= 0 && f[e] <= 1);
            /* renormalised top-2 weights: each in (0, 1], mean 0 when unused */
            assert_true(f[e] > 0 ? w[e] > 0 && w[e] <= 1 : w[e] == 0);
            sum += f[e];
        }
        assert_true(fabs(sum - 2.0) < 1e-12);
    }
    assert_false(mk_prof_route(g_prof, 4, NULL, NULL, NULL, NULL));
}

/* Whole-tensor relative error, computed without the profiler's chunking. */
static double direct_err(const mk_tensor_info *t, const void *data, int bits) {
    int64_t rows = t->shape[0], cols = t->shape[1];
    mk_qparams qp;
    assert_int_equal(mk_quant_params(MK_QMODE_AFFINE, bits, 64, 0, &qp), MK_OK);
    uint64_t wb, sb, bb;
    assert_int_equal(mk_quant_out_bytes(&qp, t->dtype, rows, cols, &wb, &sb, &bb), MK_OK);
    void *wq = malloc(wb), *sc = malloc(sb), *bi = malloc(bb);
    float *d = malloc((size_t)(rows * cols) * sizeof(float)), *w = malloc((size_t)(rows * cols) * 4);
    assert_true(wq && sc && bi && d && w);
    assert_int_equal(mk_quant_rows(&qp, t->dtype, data, rows, cols, wq, sc, bi), MK_OK);
    assert_int_equal(mk_dequant_rows(&qp, t->dtype, wq, sc, bi, rows, cols, MK_DT_F32, d), MK_OK);
    assert_int_equal(mk_ckpt_read_f32(mk_model_ckpt(g_model), t, 0, (uint64_t)(rows * cols), w),
                     MK_OK);
    double e2 = 0, r2 = 0;
    for (int64_t i = 0; i < rows * cols; i++) {
        e2 += ((double)w[i] - d[i]) * ((double)w[i] - d[i]);
        r2 += (double)w[i] * w[i];
    }
    free(wq);
    free(sc);
    free(bi);
    free(d);
    free(w);
    return e2 / r2;
}

static void test_tensors(void **st) {
    (void)st;
    const int *bits;
    int nb = mk_prof_bits(g_prof, &bits);
    assert_int_equal(nb, 6);
    size_t nk[4] = {0};
    double usage_sum[4][3] = {{0}};
    for (size_t i = 0; i < mk_prof_count(g_prof); i++) {
        const mk_prof_tensor *t = mk_prof_tensor_at(g_prof, i);
        nk[t->kind]++;
        assert_non_null(strstr(t->name, "language_model.")); /* qwen3_5_moe MLX naming */
        assert_true(t->params == (uint64_t)(t->rows * t->cols));
        if (t->kind == MK_PROF_ROUTER) {
            assert_int_equal(t->fixed_bits, 8);
            assert_true(t->fixed_err > 0 && t->fixed_err < 1e-3);
            continue;
        }
        for (int k = 0; k < nb; k++) {
            if (k)
                assert_true(t->err[k] < t->err[k - 1]);
            /* MLX layout: packed words + bf16 scales and biases per 64 */
            uint64_t want = (uint64_t)(t->rows * t->cols * bits[k] / 8 + 2 * t->rows * (t->cols / 64) * 2);
            assert_true(t->bytes[k] == want);
        }
        assert_true(t->err[0] > 0.05 && t->err[0] < 0.5); /* 2 bits */
        assert_true(t->err[2] > 2e-3 && t->err[2] < 3e-2); /* 4 bits */
        assert_true(t->err[5] < 2e-4);                     /* 8 bits */
        if (t->kind == MK_PROF_EXPERT) {
            char want[160];
            snprintf(want, sizeof want, "model.layers.%d.mlp.experts.%d.", t->layer, t->expert);
            assert_non_null(strstr(t->source, want));
            assert_non_null(t->stack);
            assert_non_null(strstr(t->stack, "mlp.switch_mlp."));
            int j = strstr(t->name, "gate_proj") ? 0 : strstr(t->name, "up_proj") ? 1 : 2;
            usage_sum[t->layer][j] += t->usage;
        } else {
            assert_true(t->usage == 1.0);
        }
    }
    assert_int_equal(nk[MK_PROF_EXPERT], 4 * 16 * 3);
    assert_int_equal(nk[MK_PROF_LINEAR], 33);
    assert_int_equal(nk[MK_PROF_ROUTER], 8);
    assert_int_equal(nk[MK_PROF_FLOAT], 0);
    for (int l = 0; l < 4; l++)
        for (int j = 0; j < 3; j++)
            assert_true(fabs(usage_sum[l][j] - 1.0) < 1e-12);
    /* names and sources of a few modules */
    const mk_prof_tensor *e = mk_prof_find(g_prof, "language_model.model.layers.2.mlp.experts.11.down_proj");
    assert_non_null(e);
    assert_string_equal(e->source, "model.layers.2.mlp.experts.11.down_proj.weight");
    assert_string_equal(e->stack, "language_model.model.layers.2.mlp.switch_mlp.down_proj");
    assert_non_null(mk_prof_find(g_prof, "language_model.lm_head"));
    assert_non_null(mk_prof_find(g_prof, "language_model.model.embed_tokens"));
    assert_non_null(mk_prof_find(g_prof, "language_model.model.layers.3.self_attn.q_proj"));
    assert_non_null(mk_prof_find(g_prof, "language_model.model.layers.0.mlp.shared_expert_gate"));
    assert_null(mk_prof_find(g_prof, "language_model.model.layers.0.input_layernorm"));
    assert_null(mk_prof_find(g_prof, "language_model.model.layers.0.linear_attn.conv1d"));
    /* errors equal an independent whole-tensor computation */
    const mk_ckpt *ck = mk_model_ckpt(g_model);
    const char *chk[3][2] = {{"language_model.lm_head", "lm_head.weight"},
                             {"language_model.model.layers.2.mlp.experts.11.down_proj",
                              "model.layers.2.mlp.experts.11.down_proj.weight"},
                             {"language_model.model.layers.0.linear_attn.in_proj_qkv",
                              "model.layers.0.linear_attn.in_proj_qkv.weight"}};
    for (int i = 0; i < 3; i++) {
        const mk_prof_tensor *t = mk_prof_find(g_prof, chk[i][0]);
        const mk_tensor_info *ti = mk_ckpt_find(ck, chk[i][1]);
        assert_non_null(t);
        assert_non_null(ti);
        for (int k = 0; k < nb; k++) {
            double d = direct_err(ti, mk_ckpt_data(ck, ti), bits[k]);
            if (fabs(d - t->err[k]) > 1e-9 * d)
                fail_msg("%s at %d bits: profile %.12g, direct %.12g", t->name, bits[k], t->err[k],
                         d);
        }
    }
}

static void test_threads_invariant(void **st) {
    (void)st;
    mk_prof_opts o;
    mk_prof_opts_init(&o);
    o.threads = 1;
    static const int b3[3] = {3, 4, 8};
    memcpy(o.bits, b3, sizeof b3);
    o.n_bits = 3;
    mk_prof *p = NULL;
    assert_int_equal(mk_prof_run(g_model, g_ids, 512, &o, &p), MK_OK);
    assert_int_equal(mk_prof_count(p), mk_prof_count(g_prof));
    for (size_t i = 0; i < mk_prof_count(p); i++) {
        const mk_prof_tensor *a = mk_prof_tensor_at(p, i), *b = mk_prof_tensor_at(g_prof, i);
        assert_string_equal(a->name, b->name);
        assert_true(a->usage == b->usage);
        if (a->kind == MK_PROF_ROUTER)
            continue;
        assert_true(a->err[0] == b->err[1] && a->err[1] == b->err[2] && a->err[2] == b->err[5]);
    }
    mk_prof_free(p);
}

static void test_json_roundtrip(void **st) {
    (void)st;
    char *tmp = mk_test_tmpdir("prof-json"), path[4200];
    snprintf(path, sizeof path, "%s/p.json", tmp);
    assert_int_equal(mk_prof_save(g_prof, path), MK_OK);
    /* well-formed JSON with the documented sections */
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j)
        fail_msg("%s: line %d: %s", path, je.line, je.text);
    assert_string_equal(json_string_value(json_object_get(j, "format")), "moekit-profile");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "calibration"), "tokens")),
                     512);
    assert_int_equal(json_array_size(json_object_get(j, "routing")), 4);
    assert_int_equal(json_array_size(json_object_get(j, "tensors")), mk_prof_count(g_prof));
    json_t *t0 = json_array_get(json_object_get(j, "tensors"), 0);
    assert_int_equal(json_array_size(json_object_get(t0, "err")), 6);
    assert_int_equal(json_array_size(json_object_get(t0, "bytes")), 6);
    assert_int_equal(json_array_size(json_object_get(t0, "sensitivity")), 6);
    json_decref(j);
    /* read back: identical */
    mk_prof *p = NULL;
    if (mk_prof_load(path, &p) != MK_OK)
        fail_msg("load: %s", mk_err_msg());
    assert_int_equal(mk_prof_count(p), mk_prof_count(g_prof));
    assert_int_equal(mk_prof_tokens(p), 512);
    assert_int_equal(mk_prof_group(p), 64);
    for (size_t i = 0; i < mk_prof_count(p); i++) {
        const mk_prof_tensor *a = mk_prof_tensor_at(p, i), *b = mk_prof_tensor_at(g_prof, i);
        assert_string_equal(a->name, b->name);
        assert_string_equal(a->source, b->source);
        assert_int_equal(a->kind, b->kind);
        assert_int_equal(a->layer, b->layer);
        assert_int_equal(a->expert, b->expert);
        assert_true(a->usage == b->usage);
        assert_true(a->fixed_bytes == b->fixed_bytes && a->fixed_err == b->fixed_err);
        for (int k = 0; k < 6; k++)
            assert_true(a->err[k] == b->err[k] && a->bytes[k] == b->bytes[k]);
    }
    for (int i = 0; i < 4; i++) {
        const double *fa, *fb;
        int ea, eb;
        assert_true(mk_prof_route(p, i, NULL, &ea, &fa, NULL));
        assert_true(mk_prof_route(g_prof, i, NULL, &eb, &fb, NULL));
        assert_int_equal(ea, eb);
        assert_memory_equal(fa, fb, (size_t)ea * sizeof(double));
    }
    assert_int_equal(mk_prof_check_model(p, g_model), MK_OK);
    mk_prof_free(p);
    mk_test_rmrf(tmp);
    free(tmp);
}

/* Write `text` to a file in tmp and expect mk_prof_load to fail with `st`
 * and a message containing each of the strings in want (NULL-terminated). */
static void load_fails(const char *tmp, const char *text, mk_status st, const char *const *want) {
    char path[4200];
    snprintf(path, sizeof path, "%s/bad.json", tmp);
    assert_int_equal(mk_test_write(path, text, strlen(text)), 0);
    mk_prof *p = NULL;
    mk_status got = mk_prof_load(path, &p);
    if (got != st)
        fail_msg("expected %s, got %s: %s", mk_status_name(st), mk_status_name(got), mk_err_msg());
    assert_null(p);
    for (; *want; want++)
        if (!strstr(mk_err_msg(), *want))
            fail_msg("message '%s' lacks '%s'", mk_err_msg(), *want);
}

static void test_load_errors(void **st) {
    (void)st;
    char *tmp = mk_test_tmpdir("prof-bad"), path[4200];
    mk_prof *p = NULL;
    snprintf(path, sizeof path, "%s/absent.json", tmp);
    assert_int_equal(mk_prof_load(path, &p), MK_E_IO);
    assert_non_null(strstr(mk_err_msg(), "absent.json"));
    static const char *const w_json[] = {"bad.json", "line", NULL};
    load_fails(tmp, "{\"format\": ", MK_E_FORMAT, w_json);
    static const char *const w_fmt[] = {"'format'", NULL};
    load_fails(tmp, "{\"format\": \"other\"}", MK_E_FORMAT, w_fmt);
    static const char *const w_bits[] = {"quant", "'bits'", NULL};
    load_fails(tmp, "{\"format\": \"moekit-profile\", \"version\": 1, \"quant\": {\"group_size\": 64, "
               "\"bits\": [4, 7]}, \"tensors\": []}", MK_E_FORMAT, w_bits);
#define HDR "{\"format\": \"moekit-profile\", \"version\": 1, \"quant\": {\"group_size\": 64, " \
            "\"bits\": [2, 4]}, \"tensors\": ["
#define T0 "{\"name\": \"m.a\", \"kind\": \"linear\", \"shape\": [64, 64], \"usage\": 1, " \
           "\"err\": [0.1, 0.01], \"bytes\": [1536, 2560]}"
    static const char *const w_err[] = {"tensors[1] ('m.b')", "'err'", "2 numbers", NULL};
    load_fails(tmp, HDR T0 ", {\"name\": \"m.b\", \"kind\": \"expert\", \"shape\": [64, 64], "
               "\"usage\": 0.5, \"err\": [0.1], \"bytes\": [1536, 2560]}]}", MK_E_FORMAT, w_err);
    static const char *const w_dup[] = {"tensors[1] ('m.a')", "'name'", NULL};
    load_fails(tmp, HDR T0 ", " T0 "]}", MK_E_FORMAT, w_dup);
    static const char *const w_kind[] = {"tensors[0]", "'kind'", NULL};
    load_fails(tmp, HDR "{\"name\": \"m.a\", \"kind\": \"norm\", \"shape\": [64, 64]}]}",
               MK_E_FORMAT, w_kind);
    static const char *const w_neg[] = {"'usage'", NULL};
    load_fails(tmp, HDR "{\"name\": \"m.a\", \"kind\": \"linear\", \"shape\": [64, 64], \"usage\": "
               "-1, \"err\": [0.1, 0.01], \"bytes\": [1536, 2560]}]}", MK_E_FORMAT, w_neg);
    static const char *const w_fix[] = {"'fixed'", NULL};
    load_fails(tmp, HDR "{\"name\": \"m.g\", \"kind\": \"router\", \"shape\": [8, 64]}]}",
               MK_E_FORMAT, w_fix);
    static const char *const w_par[] = {"'params'", NULL};
    load_fails(tmp, HDR "{\"name\": \"m.a\", \"kind\": \"linear\", \"shape\": [64, 64], \"params\": "
               "5, \"usage\": 1, \"err\": [0.1, 0.01], \"bytes\": [1536, 2560]}]}", MK_E_FORMAT,
               w_par);
    /* a minimal valid one loads */
    snprintf(path, sizeof path, "%s/ok.json", tmp);
    const char *ok = HDR T0 "]}";
    assert_int_equal(mk_test_write(path, ok, strlen(ok)), 0);
    assert_int_equal(mk_prof_load(path, &p), MK_OK);
    assert_int_equal(mk_prof_count(p), 1);
    /* ... but it does not describe the fixture model */
    assert_int_equal(mk_prof_check_model(p, g_model), MK_E_MISMATCH);
    assert_non_null(strstr(mk_err_msg(), "'m.a'"));
    mk_prof_free(p);
    mk_test_rmrf(tmp);
    free(tmp);
}

static void test_check_model(void **st) {
    (void)st;
    /* a profile missing one of the model's modules */
    mk_prof *p = NULL;
    const int *bits;
    int nb = mk_prof_bits(g_prof, &bits);
    assert_int_equal(mk_prof_new(bits, nb, 64, &p), MK_OK);
    for (size_t i = 0; i + 1 < mk_prof_count(g_prof); i++)
        assert_int_equal(mk_prof_add(p, mk_prof_tensor_at(g_prof, i)), MK_OK);
    assert_int_equal(mk_prof_check_model(p, g_model), MK_E_MISMATCH);
    assert_non_null(strstr(mk_err_msg(), "language_model.lm_head"));
    assert_non_null(strstr(mk_err_msg(), "not in the profile"));
    mk_prof_free(p);
    /* the profile of another model */
    mk_model *other = NULL;
    assert_int_equal(mk_model_open(mk_test_fixture("qwen35moe-a/bf16"), &other), MK_OK);
    assert_int_equal(mk_prof_check_model(g_prof, other), MK_E_MISMATCH);
    mk_model_free(other);
    /* run errors */
    mk_prof_opts o;
    mk_prof_opts_init(&o);
    assert_int_equal(mk_prof_run(g_model, g_ids, 100, &o, &p), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "fewer than one window"));
    o.bits[0] = 7;
    assert_int_equal(mk_prof_run(g_model, g_ids, 512, &o, &p), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "7 is not an affine width"));
}

/* Other layouts and storages through the library with synthetic ids: names
 * stay MLX names whatever the source layout, sources name the stacked /
 * fused slices, FP8 weights are dequantized first, and a group that does
 * not divide a module's in-features leaves it in float. */
typedef struct layout_case {
    const char *dir;
    int group;
    const char *want_name;   /* a module path that must be profiled */
    const char *want_source; /* its source */
    size_t min_float;        /* FLOAT tensors at least */
} layout_case;

static void test_layouts(void **st) {
    (void)st;
    static const layout_case cases[] = {
        {"qwen35moe-vl/bf16-fused", 64, "language_model.model.layers.1.mlp.experts.3.up_proj",
         "model.language_model.layers.1.mlp.experts.gate_up_proj[3, 128:256]", 0},
        {"deepseekv3-a/fp8", 64, "model.layers.2.mlp.experts.5.down_proj",
         "model.layers.2.mlp.experts.5.down_proj.weight", 0},
        {"deepseekv3-a/fp8", 64, "model.layers.0.self_attn.kv_b_proj",
         "model.layers.0.self_attn.kv_b_proj.weight", 0},
        {"qwen3moe-odd/bf16", 128, "model.layers.0.mlp.experts.1.down_proj",
         "model.layers.0.mlp.experts.1.down_proj.weight", 10},
        {"deepseekv32-a/bf16", 32, "model.layers.1.self_attn.indexer.wq_b", /* DSA: the indexer's */
         "model.layers.1.self_attn.indexer.wq_b.weight", 0},                 /* linears are profiled */
        {"glm5dsa-a/bf16", 32, "model.layers.2.self_attn.indexer.weights_proj",
         "model.layers.2.self_attn.indexer.weights_proj.weight", 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const layout_case *lc = &cases[c];
        mk_model *m = NULL;
        if (mk_model_open(mk_test_fixture(lc->dir), &m) != MK_OK)
            fail_msg("%s: %s", lc->dir, mk_err_msg());
        int32_t ids[64];
        for (int i = 0; i < 64; i++)
            ids[i] = (i * 37 + 11) % mk_model_config(m)->vocab_size;
        mk_prof_opts o;
        mk_prof_opts_init(&o);
        o.window = 32;
        o.group = lc->group;
        o.threads = 2;
        mk_prof *p = NULL;
        if (mk_prof_run(m, ids, 64, &o, &p) != MK_OK)
            fail_msg("%s: %s", lc->dir, mk_err_msg());
        for (int i = 0; i < mk_prof_route_layers(p); i++) {
            const double *f;
            int E;
            double sum = 0;
            mk_prof_route(p, i, NULL, &E, &f, NULL);
            for (int e = 0; e < E; e++)
                sum += f[e];
            assert_true(fabs(sum - mk_model_config(m)->num_experts_per_tok) < 1e-12);
        }
        const mk_prof_tensor *t = mk_prof_find(p, lc->want_name);
        if (!t)
            fail_msg("%s: no tensor '%s'", lc->dir, lc->want_name);
        assert_string_equal(t->source, lc->want_source);
        size_t nfloat = 0;
        for (size_t i = 0; i < mk_prof_count(p); i++) {
            const mk_prof_tensor *x = mk_prof_tensor_at(p, i);
            if (x->kind == MK_PROF_FLOAT) {
                nfloat++;
                assert_true(x->cols % lc->group != 0);
                assert_true(x->fixed_bytes == x->params * 2);
            } else if (x->kind != MK_PROF_ROUTER) {
                assert_true(x->err[0] > x->err[5] && x->err[5] > 0);
            }
        }
        assert_true(nfloat >= lc->min_float);
        assert_int_equal(mk_prof_check_model(p, m), MK_OK);
        mk_prof_free(p);
        mk_model_free(m);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routing),        cmocka_unit_test(test_tensors),
        cmocka_unit_test(test_threads_invariant), cmocka_unit_test(test_json_roundtrip),
        cmocka_unit_test(test_load_errors),    cmocka_unit_test(test_check_model),
        cmocka_unit_test(test_layouts),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
