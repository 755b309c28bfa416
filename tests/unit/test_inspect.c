/* inspect: every shared fixture is described as its README says, and each
 * kind of problem is reported with its cause on a checkpoint built to have
 * it. Expectations come from the fixtures' README/config, not from our own
 * output. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"
#include "moekit/inspect.h"
#include "moekit/st.h"

static json_t *run(const char *path, bool scan) {
    char *txt = NULL;
    mk_inspect_opts o = {.scan = scan};
    mk_status s = mk_inspect(path, &o, &txt);
    if (s != MK_OK)
        fprintf(stderr, "inspect %s: %s\n", path, mk_err_msg());
    assert_int_equal(s, MK_OK);
    json_t *r = json_loads(txt, 0, NULL);
    free(txt);
    assert_non_null(r);
    return r;
}

static const char *sget(json_t *o, const char *a, const char *b) {
    return json_string_value(json_object_get(json_object_get(o, a), b));
}
static long long iget(json_t *o, const char *a, const char *b) {
    return json_integer_value(json_object_get(json_object_get(o, a), b));
}

static bool has_problem(json_t *r, const char *code, const char *needle) {
    json_t *p = json_object_get(r, "problems");
    for (size_t i = 0; i < json_array_size(p); i++) {
        json_t *e = json_array_get(p, i);
        if (!strcmp(json_string_value(json_object_get(e, "code")), code) &&
            (!needle || strstr(json_string_value(json_object_get(e, "cause")), needle)))
            return true;
    }
    return false;
}

/* The DSA fixtures: every layer MLA over the indexer's selection, the
 * indexer as their configs give it (index_topk 24, 16 heads of 32, RoPE
 * half-split for deepseek_v32 and interleaved for glm_moe_dsa), and
 * glm5dsa-a's schedule from mlp_layer_types (dense, sparse, sparse), not
 * from its first_k_dense_replace of 3. */
static void test_dsa_fixtures(void **st) {
    (void)st;
    const char *dirs[] = {"deepseekv32-a/bf16", "glm5dsa-a/bf16"}, *rope[] = {"half-split", "interleaved"};
    for (int f = 0; f < 2; f++) {
        json_t *r = run(mk_test_fixture(dirs[f]), false);
        json_t *a = json_object_get(r, "architecture"), *sp = json_object_get(a, "sparse_attention");
        assert_non_null(sp);
        assert_int_equal(json_integer_value(json_object_get(sp, "index_topk")), 24);
        assert_int_equal(json_integer_value(json_object_get(sp, "index_n_heads")), 16);
        assert_int_equal(json_integer_value(json_object_get(sp, "index_head_dim")), 32);
        assert_string_equal(json_string_value(json_object_get(sp, "indexer_rope")), rope[f]);
        json_t *sch = json_object_get(a, "layer_schedule");
        assert_int_equal(json_array_size(sch), 3);
        for (size_t i = 0; i < 3; i++) {
            json_t *e = json_array_get(sch, i);
            assert_string_equal(json_string_value(json_object_get(e, "attention")), "mla_sparse");
            assert_string_equal(json_string_value(json_object_get(e, "mlp")), i ? "moe" : "dense");
        }
        assert_int_equal(iget(r, "experts", "moe_layers"), 2);
        json_decref(r);
    }
    /* a plain MLA model reports no sparse attention */
    json_t *r = run(mk_test_fixture("deepseekv3-a/bf16"), false);
    assert_null(json_object_get(json_object_get(r, "architecture"), "sparse_attention"));
    json_decref(r);
}

static void test_vl_fused(void **st) {
    (void)st;
    json_t *r = run(mk_test_fixture("qwen35moe-vl/bf16-fused"), false);
    assert_string_equal(sget(r, "architecture", "model_type"), "qwen3_5_moe");
    assert_string_equal(sget(r, "experts", "layout"), "fused");
    assert_int_equal(iget(r, "experts", "experts_per_layer"), 8);
    assert_int_equal(iget(r, "architecture", "layers"), 4);
    json_t *sch = json_object_get(json_object_get(r, "architecture"), "layer_schedule");
    assert_int_equal(json_array_size(sch), 4);
    const char *want[] = {"linear_attention", "linear_attention", "linear_attention", "full_attention"};
    for (int i = 0; i < 4; i++)
        assert_string_equal(json_string_value(json_object_get(json_array_get(sch, (size_t)i), "attention")), want[i]);
    assert_true(json_is_true(json_object_get(json_object_get(r, "architecture"), "vision_language")));
    assert_true(iget(r, "memory", "skipped_vision_bytes") > 0);
    assert_int_equal(json_array_size(json_object_get(r, "problems")), 0);
    json_decref(r);
}

/* Every fixture: family, layout and expert count as its README/config say,
 * no problems, and the parameter count equals the sum over the header. */
static void test_all_fixtures(void **st) {
    (void)st;
    static const struct {
        const char *dir, *family, *layout, *quant;
        int experts, layers;
    } fx[] = {
        {"qwen3moe-a/bf16", "qwen3_moe", "per-expert", "none", 8, 3},
        {"qwen3moe-odd/bf16", "qwen3_moe", "per-expert", "none", 8, 2},
        {"qwen3moe-odd/fp8", "qwen3_moe", "per-expert", "fp8-block", 8, 2},
        {"qwen3next-a/bf16", "qwen3_next", "per-expert", "none", 8, 4},
        {"qwen35moe-a/bf16", "qwen3_5_moe", "per-expert", "none", 8, 4},
        {"qwen35moe-vl/bf16", "qwen3_5_moe", "per-expert", "none", 8, 4},
        {"qwen35moe-vl/bf16-fused", "qwen3_5_moe", "fused", "none", 8, 4},
        {"deepseekv3-a/bf16", "deepseek_v3", "per-expert", "none", 8, 3},
        {"deepseekv3-a/fp8", "deepseek_v3", "per-expert", "fp8-block", 8, 3},
        {"tiny-qwen35moe/bf16", "qwen3_5_moe", "per-expert", "none", 16, 4},
        {"glm4moe-a/bf16", "glm4_moe", "per-expert", "none", 8, 3},
        {"minimaxm2-a/bf16", "minimax_m2", "per-expert", "none", 8, 3},
        {"glm4lite-a/bf16", "deepseek_v3", "per-expert", "none", 8, 3},
        {"gptoss-a/bf16", "gpt_oss", "fused", "none", 8, 4},
        {"gptoss-a/mxfp4", "gpt_oss", "fused", "mxfp4", 8, 4},
        {"deepseekv32-a/bf16", "deepseek_v3", "per-expert", "none", 8, 3},
        {"glm5dsa-a/bf16", "deepseek_v3", "per-expert", "none", 8, 3},
    };
    for (size_t i = 0; i < sizeof fx / sizeof fx[0]; i++) {
        json_t *r = run(mk_test_fixture(fx[i].dir), false);
        json_t *p = json_object_get(r, "problems");
        if (json_array_size(p))
            fprintf(stderr, "%s: %s\n", fx[i].dir, json_dumps(p, 0));
        assert_int_equal(json_array_size(p), 0);
        assert_string_equal(sget(r, "architecture", "family"), fx[i].family);
        assert_string_equal(sget(r, "experts", "layout"), fx[i].layout);
        assert_string_equal(sget(r, "quantization", "method"), fx[i].quant);
        assert_int_equal(iget(r, "experts", "experts_per_layer"), fx[i].experts);
        assert_int_equal(iget(r, "architecture", "layers"), fx[i].layers);
        /* FP8 fixtures quantize every linear module of the LM (not norms/router/embeddings) */
        if (!strcmp(fx[i].quant, "fp8-block"))
            assert_true(iget(r, "quantization", "quantized_modules") > 0);
        /* gpt-oss MXFP4: gate_up and down of each of the 4 layers; the same
         * parameter count as its bf16 twin (2 E2M1 values per block byte);
         * sliding_attention layers (layer_types) and the window in the schedule */
        if (!strcmp(fx[i].quant, "mxfp4"))
            assert_int_equal(iget(r, "quantization", "quantized_modules"), 8);
        if (!strcmp(fx[i].family, "gpt_oss")) {
            json_t *bf = run(mk_test_fixture("gptoss-a/bf16"), false);
            assert_int_equal(iget(r, "totals", "parameters"), iget(bf, "totals", "parameters"));
            json_decref(bf);
            assert_int_equal(iget(r, "architecture", "sliding_window"), 16);
            json_t *sch = json_object_get(json_object_get(r, "architecture"), "layer_schedule");
            assert_string_equal(json_string_value(json_object_get(json_array_get(sch, 0), "attention")),
                                "sliding_attention");
            assert_string_equal(json_string_value(json_object_get(json_array_get(sch, 1), "attention")),
                                "full_attention");
        }
        json_decref(r);
    }
}

/* ---- synthetic broken checkpoints ------------------------------------- */

static void write_ckpt(const char *dir, const char *config, const char *const *names, const mk_dtype *dts,
                       const int64_t (*shapes)[3], const int *ndims, int n) {
    mk_stw *w;
    mk_stw_opts o = {.force = true};
    assert_int_equal(mk_stw_create(dir, &o, &w), MK_OK);
    for (int i = 0; i < n; i++)
        assert_int_equal(mk_stw_add(w, names[i], dts[i], ndims[i], shapes[i]), MK_OK);
    assert_int_equal(mk_stw_begin_data(w), MK_OK);
    for (size_t i = 0; i < mk_stw_count(w); i++) {
        const mk_tensor_info *t = mk_stw_info(w, i);
        void *z = calloc(1, t->nbytes + 1);
        assert_int_equal(mk_stw_write(w, z, t->nbytes), MK_OK);
        free(z);
    }
    assert_int_equal(mk_stw_finish(w), MK_OK);
    mk_stw_free(w);
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", dir);
    assert_int_equal(mk_test_write(p, config, strlen(config)), 0);
}

/* The seed failure: config says the router is 4-bit, the packed shape says 8. */
static void test_bits_mismatch(void **st) {
    (void)st;
    char *d = mk_test_tmpdir("insp-bits");
    const char *cfg = "{\"model_type\":\"qwen3_moe\",\"num_hidden_layers\":1,\"hidden_size\":64,"
                      "\"num_experts\":4,\"num_experts_per_tok\":2,"
                      "\"quantization\":{\"group_size\":64,\"bits\":4}}";
    const char *names[] = {"model.layers.0.mlp.gate.weight", "model.layers.0.mlp.gate.scales",
                           "model.layers.0.mlp.gate.biases"};
    mk_dtype dts[] = {MK_DT_U32, MK_DT_BF16, MK_DT_BF16};
    /* 8-bit: 64 inputs -> 16 u32 words per row; 4-bit would be 8 */
    const int64_t sh[][3] = {{4, 16}, {4, 1}, {4, 1}};
    int nd[] = {2, 2, 2};
    write_ckpt(d, cfg, names, dts, sh, nd, 3);
    json_t *r = run(d, false);
    assert_true(has_problem(r, "bits_mismatch", "implies 8-bit"));
    json_decref(r);
    mk_test_rmrf(d);
    free(d);
}

static void test_expert_gap_and_unexpected(void **st) {
    (void)st;
    char *d = mk_test_tmpdir("insp-gap");
    const char *cfg = "{\"model_type\":\"qwen3_moe\",\"num_hidden_layers\":1,\"hidden_size\":8,"
                      "\"num_experts\":4,\"num_experts_per_tok\":2,\"moe_intermediate_size\":4}";
    const char *names[] = {"model.layers.0.mlp.experts.0.gate_proj.weight",
                           "model.layers.0.mlp.experts.1.gate_proj.weight",
                           "model.layers.0.mlp.experts.3.gate_proj.weight", "model.layers.0.mlp.bogus.weight"};
    mk_dtype dts[] = {MK_DT_BF16, MK_DT_BF16, MK_DT_BF16, MK_DT_BF16};
    const int64_t sh[][3] = {{4, 8}, {4, 8}, {4, 8}, {2, 2}};
    int nd[] = {2, 2, 2, 2};
    write_ckpt(d, cfg, names, dts, sh, nd, 4);
    json_t *r = run(d, false);
    assert_true(has_problem(r, "expert_indices", "missing: 2"));
    assert_true(has_problem(r, "unexpected", "mlp.bogus"));
    assert_true(has_problem(r, "missing", "self_attn.q_proj"));
    assert_true(has_problem(r, "missing", "embed_tokens"));
    json_decref(r);
    mk_test_rmrf(d);
    free(d);
}

static void test_f16_gdn_and_scan(void **st) {
    (void)st;
    char *d = mk_test_tmpdir("insp-f16");
    const char *cfg = "{\"model_type\":\"qwen3_next\",\"num_hidden_layers\":0,\"hidden_size\":8,"
                      "\"dtype\":\"float16\"}";
    const char *names[] = {"model.embed_tokens.weight"};
    mk_dtype dts[] = {MK_DT_F16};
    const int64_t sh[][3] = {{4, 8}};
    int nd[] = {2};
    write_ckpt(d, cfg, names, dts, sh, nd, 1);
    json_t *r = run(d, true);
    assert_true(has_problem(r, "f16_recurrent", "overflows"));
    assert_int_equal(iget(r, "scan", "nan"), 0);
    json_decref(r);
    mk_test_rmrf(d);
    free(d);
}

/* Put byte v at byte `at` of tensor `name` in dir's checkpoint. */
static void patch_byte(const char *dir, const char *name, uint64_t at, unsigned char v) {
    mk_ckpt *ck = NULL;
    assert_int_equal(mk_ckpt_open(dir, MK_CKPT_NO_MMAP, &ck), MK_OK);
    const mk_tensor_info *t = mk_ckpt_find(ck, name);
    assert_non_null(t);
    assert_true(at < t->nbytes);
    FILE *f = fopen(mk_ckpt_shard_path(ck, (size_t)t->shard), "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, (long)(t->file_offset + at), SEEK_SET), 0);
    assert_int_equal(fputc(v, f), v);
    assert_int_equal(fclose(f), 0);
    mk_ckpt_close(ck);
}

/* MLX's E4M3 is E4M3FN (issue 15): an 0x7f/0xff byte of an mxfp8 weight or
 * of an nvfp4 scale is a NaN, and --scan counts it, naming the tensor. */
static void test_scan_mx_nan(void **st) {
    (void)st;
    static const char *const modes[] = {"mxfp8", "nvfp4"};
    for (int k = 0; k < 2; k++) {
        char *d = mk_test_tmpdir("insp-mx");
        char cfg[512];
        int bits = k == 0 ? 8 : 4, gs = k == 0 ? 32 : 16;
        snprintf(cfg, sizeof cfg,
                 "{\"model_type\":\"qwen3_moe\",\"num_hidden_layers\":1,\"hidden_size\":64,"
                 "\"num_experts\":4,\"num_experts_per_tok\":2,"
                 "\"quantization\":{\"group_size\":%d,\"bits\":%d,\"mode\":\"%s\"}}", gs, bits, modes[k]);
        const char *names[] = {"model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj.scales"};
        mk_dtype dts[] = {MK_DT_U32, MK_DT_U8};
        const int64_t sh[][3] = {{4, 64 * bits / 32}, {4, 64 / gs}};
        int nd[] = {2, 2};
        write_ckpt(d, cfg, names, dts, sh, nd, 2);
        json_t *r = run(d, true);
        assert_int_equal(iget(r, "scan", "nan"), 0);
        json_decref(r);
        /* one NaN code where MLX's E4M3 has one: an element (mxfp8) or a scale (nvfp4);
         * 0xff in the other tensor is an fp4 nibble pair / an E8M0 exponent, not NaN */
        patch_byte(d, names[k], 5, 0xff);
        patch_byte(d, names[1 - k], 1, 0xff);
        r = run(d, true);
        assert_int_equal(iget(r, "scan", "nan"), 1);
        assert_true(has_problem(r, "nonfinite", k == 0 ? "1 NaN mxfp8 elements" : "1 NaN nvfp4 scales"));
        json_t *pr = json_array_get(json_object_get(r, "problems"), json_array_size(json_object_get(r, "problems")) - 1);
        assert_string_equal(json_string_value(json_object_get(pr, "where")), names[k]);
        json_decref(r);
        mk_test_rmrf(d);
        free(d);
    }
}

static void test_unreadable(void **st) {
    (void)st;
    char *txt = NULL;
    assert_int_not_equal(mk_inspect("/nonexistent/moekit", NULL, &txt), MK_OK);
    assert_null(txt);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vl_fused),          cmocka_unit_test(test_all_fixtures),
        cmocka_unit_test(test_dsa_fixtures),
        cmocka_unit_test(test_bits_mismatch),     cmocka_unit_test(test_expert_gap_and_unexpected),
        cmocka_unit_test(test_f16_gdn_and_scan),  cmocka_unit_test(test_unreadable),
        cmocka_unit_test(test_scan_mx_nan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
