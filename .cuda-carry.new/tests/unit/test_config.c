/* config.json reading: the fixtures' transformers-5 conventions and the
 * released checkpoints' conventions (num_experts, top-level rope_theta,
 * rope_scaling, text_config nesting) resolve to the same values; the three
 * quantization blocks parse with per-module entries; malformed fields are
 * errors that name the field. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"
#include "moekit/config.h"

static void test_fixtures(void **st) {
    (void)st;
    mk_config c;
    assert_int_equal(mk_config_load(mk_test_fixture("qwen3moe-a/bf16"), &c), MK_OK);
    assert_int_equal(c.arch, MK_ARCH_QWEN3_MOE);
    assert_int_equal(c.num_experts, 8); /* num_local_experts in this file */
    assert_int_equal(c.num_experts_per_tok, 2);
    assert_true(c.norm_topk_prob);
    assert_int_equal(c.head_dim, 64);
    assert_true(c.rope.theta == 1000000.0);
    assert_true(mk_config_layer_is_moe(&c, 0));
    mk_config_free(&c);

    assert_int_equal(mk_config_load(mk_test_fixture("qwen35moe-vl/bf16"), &c), MK_OK);
    assert_int_equal(c.arch, MK_ARCH_QWEN3_5_MOE);
    assert_true(c.has_text_config && c.has_vision);
    assert_int_equal(c.num_layers, 4);
    assert_false(mk_config_layer_is_full_attn(&c, 0));
    assert_true(mk_config_layer_is_full_attn(&c, 3));
    assert_true(c.rope.partial_rotary_factor == 0.25);
    assert_int_equal(c.lin_num_v_heads, 4);
    assert_int_equal(c.shared_intermediate_size, 128);
    assert_true(mk_config_has_recurrent_state(&c));
    assert_string_equal(c.dtype, "bfloat16"); /* the wrapper's, not text_config's float32 */
    mk_config_free(&c);

    assert_int_equal(mk_config_load(mk_test_fixture("deepseekv3-a/fp8"), &c), MK_OK);
    assert_int_equal(c.arch, MK_ARCH_DEEPSEEK_V3);
    assert_int_equal(c.quant.method, MK_QM_FP8);
    assert_int_equal(c.quant.block[0], 128);
    assert_int_equal(c.q_lora_rank, 96);
    assert_int_equal(c.kv_lora_rank, 64);
    assert_true(c.routed_scaling_factor == 2.5);
    assert_false(mk_config_layer_is_moe(&c, 0));
    assert_true(mk_config_layer_is_moe(&c, 1));
    assert_int_equal(c.n_eos, 1);
    assert_int_equal(c.eos_ids[0], 1);
    mk_config_free(&c);
}

static void test_released_conventions(void **st) {
    (void)st;
    mk_config c;
    const char *js = "{\"model_type\":\"qwen3_next\",\"num_experts\":512,\"num_hidden_layers\":8,"
                     "\"rope_theta\":5000000,\"partial_rotary_factor\":0.25,\"full_attention_interval\":4,"
                     "\"rope_scaling\":{\"type\":\"yarn\",\"factor\":4.0,"
                     "\"original_max_position_embeddings\":32768},\"eos_token_id\":[1,2]}";
    assert_int_equal(mk_config_parse("t", js, &c), MK_OK);
    assert_int_equal(c.num_experts, 512);
    assert_true(c.rope.theta == 5000000.0);
    assert_string_equal(c.rope.type, "yarn");
    assert_true(c.rope.factor == 4.0);
    assert_true(c.rope.orig_max_pos == 32768.0);
    for (int i = 0; i < 8; i++)
        assert_int_equal(mk_config_layer_is_full_attn(&c, i), (i + 1) % 4 == 0);
    assert_int_equal(c.n_eos, 2);
    assert_false(c.norm_topk_prob); /* default false: always read it */
    mk_config_free(&c);
}

static void test_quant_blocks(void **st) {
    (void)st;
    mk_config c;
    const char *mlx = "{\"model_type\":\"qwen3_moe\",\"quantization\":{\"group_size\":64,\"bits\":4,"
                      "\"model.layers.0.mlp.gate\":{\"group_size\":64,\"bits\":8},"
                      "\"model.layers.0.self_attn.q_proj\":false,"
                      "\"model.layers.1.mlp.gate\":{\"group_size\":32,\"bits\":4,\"mode\":\"mxfp4\"}}}";
    assert_int_equal(mk_config_parse("t", mlx, &c), MK_OK);
    assert_int_equal(c.quant.method, MK_QM_MLX);
    int bits, group;
    mk_qmode mode;
    assert_true(mk_qcfg_lookup(&c.quant, "model.layers.0.mlp.gate", false, &bits, &group, &mode));
    assert_int_equal(bits, 8);
    assert_int_equal(mode, MK_QMODE_AFFINE);
    assert_false(mk_qcfg_lookup(&c.quant, "model.layers.0.self_attn.q_proj", true, &bits, &group, &mode));
    assert_true(mk_qcfg_lookup(&c.quant, "model.layers.1.mlp.gate", true, &bits, &group, &mode));
    assert_int_equal(mode, MK_QMODE_MXFP4);
    assert_true(mk_qcfg_lookup(&c.quant, "model.layers.5.mlp.up_proj", true, &bits, &group, &mode));
    assert_int_equal(bits, 4);
    assert_false(mk_qcfg_lookup(&c.quant, "model.layers.5.input_layernorm", false, &bits, &group, &mode));
    mk_config_free(&c);

    const char *ct = "{\"model_type\":\"kimi_k2\",\"quantization_config\":{\"quant_method\":\"compressed-tensors\","
                     "\"format\":\"pack-quantized\",\"config_groups\":{\"group_0\":{\"targets\":[\"Linear\"],"
                     "\"weights\":{\"num_bits\":4,\"type\":\"int\",\"symmetric\":true,\"strategy\":\"group\","
                     "\"group_size\":32}}},\"ignore\":[\"lm_head\",\"re:.*self_attn.*\"]}}";
    assert_int_equal(mk_config_parse("t", ct, &c), MK_OK);
    assert_int_equal(c.arch, MK_ARCH_DEEPSEEK_V3);
    assert_int_equal(c.quant.method, MK_QM_CT);
    assert_int_equal(c.quant.ct_bits, 4);
    assert_int_equal(c.quant.ct_group_size, 32);
    assert_true(c.quant.ct_symmetric);
    assert_int_equal(c.quant.n_ct_ignore, 2);
    mk_config_free(&c);
}

/* Real MLX configs carry one entry per expert tensor: every one must be found. */
static void test_many_entries(void **st) {
    (void)st;
    enum { N = 20000 };
    char *js = malloc((size_t)N * 96 + 256), *p = js;
    p += sprintf(p, "{\"model_type\":\"qwen3_moe\",\"quantization\":{\"group_size\":64,\"bits\":4");
    for (int i = 0; i < N; i++)
        p += sprintf(p, ",\"model.layers.%d.mlp.experts.%d.gate_proj\":{\"group_size\":%d,\"bits\":%d}", i / 512,
                     i % 512, i % 2 ? 32 : 64, 2 + i % 7 == 7 ? 8 : 2 + i % 7);
    sprintf(p, "}}");
    mk_config c;
    assert_int_equal(mk_config_parse("t", js, &c), MK_OK);
    free(js);
    assert_int_equal(c.quant.n_entries, N);
    for (int i = 0; i < N; i++) {
        char path[96];
        int bits, group;
        mk_qmode mode;
        snprintf(path, sizeof path, "model.layers.%d.mlp.experts.%d.gate_proj", i / 512, i % 512);
        assert_true(mk_qcfg_lookup(&c.quant, path, false, &bits, &group, &mode));
        assert_int_equal(bits, 2 + i % 7 == 7 ? 8 : 2 + i % 7);
        assert_int_equal(group, i % 2 ? 32 : 64);
    }
    int bits, group;
    mk_qmode mode;
    assert_false(mk_qcfg_lookup(&c.quant, "model.layers.0.mlp.experts.0.up_proj", false, &bits, &group, &mode));
    mk_config_free(&c);
}

static void test_errors(void **st) {
    (void)st;
    mk_config c;
    assert_int_equal(mk_config_parse("cfg.json", "{\"hidden_size\":\"big\"}", &c), MK_E_FORMAT);
    assert_non_null(strstr(mk_err_msg(), "hidden_size"));
    assert_non_null(strstr(mk_err_msg(), "cfg.json"));
    assert_int_equal(mk_config_parse("cfg.json", "[1,2]", &c), MK_E_FORMAT);
    assert_int_equal(mk_config_parse("cfg.json", "{not json", &c), MK_E_FORMAT);
    assert_int_equal(mk_config_parse("cfg.json", "{\"quantization_config\":{\"quant_method\":\"gptq\"}}", &c),
                     MK_E_UNSUPPORTED);
    assert_non_null(strstr(mk_err_msg(), "gptq"));
    assert_int_equal(mk_config_parse("cfg.json",
                                     "{\"model_type\":\"qwen3_next\",\"num_hidden_layers\":4,"
                                     "\"layer_types\":[\"full_attention\"]}",
                                     &c),
                     MK_E_FORMAT);
    assert_non_null(strstr(mk_err_msg(), "layer_types"));
    assert_int_equal(mk_config_load("/nonexistent/dir", &c), MK_E_NOTFOUND);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_fixtures), cmocka_unit_test(test_released_conventions),
                                       cmocka_unit_test(test_quant_blocks), cmocka_unit_test(test_many_entries),
                                       cmocka_unit_test(test_errors)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
