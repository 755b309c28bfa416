/* The one tensor-name map (src/model/layout.c) that inspect, convert,
 * quantize, profile and the model loader share. Expected values are the
 * layouts as FORMATS.md sections 3 and 7 and mlx-lm's sanitize functions
 * name them: every way a released checkpoint spells a tensor must land on
 * the same canonical name, part, layer, expert and storage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"
#include "model/layout.h"

static void canon_is(const char *name, int num_layers, const char *want, mk_part part, bool vl) {
    mk_part p;
    bool v;
    char *c = mk_layout_canon(name, num_layers, &p, &v);
    assert_non_null(c);
    if (strcmp(c, want) || p != part || v != vl)
        fail_msg("%s -> %s part %d vl %d; expected %s part %d vl %d", name, c, p, v, want, part, vl);
    free(c);
}

static void test_canon(void **st) {
    (void)st;
    /* the text model under every wrapper lands on the HF text names */
    canon_is("model.layers.3.mlp.gate.weight", 0, "model.layers.3.mlp.gate.weight", MK_PART_LM, false);
    canon_is("model.language_model.layers.3.mlp.gate.weight", 0, "model.layers.3.mlp.gate.weight", MK_PART_LM,
             true);
    canon_is("language_model.model.layers.3.mlp.gate.weight", 0, "model.layers.3.mlp.gate.weight", MK_PART_LM,
             false);
    canon_is("language_model.lm_head.weight", 0, "lm_head.weight", MK_PART_LM, false);
    canon_is("lm_head.weight", 0, "lm_head.weight", MK_PART_LM, false);
    /* MTP in its four spellings (current mlx-lm: language_model.mtp.) */
    canon_is("mtp.fc.weight", 0, "mtp.fc.weight", MK_PART_MTP, false);
    canon_is("model.mtp.fc.weight", 0, "mtp.fc.weight", MK_PART_MTP, false);
    canon_is("model.language_model.mtp.fc.weight", 0, "mtp.fc.weight", MK_PART_MTP, true);
    canon_is("language_model.mtp.fc.weight", 0, "mtp.fc.weight", MK_PART_MTP, true);
    /* DeepSeek's MTP layer is model.layers.<num_hidden_layers> */
    canon_is("model.layers.61.eh_proj.weight", 61, "model.layers.61.eh_proj.weight", MK_PART_MTP, false);
    canon_is("model.layers.60.eh_proj.weight", 61, "model.layers.60.eh_proj.weight", MK_PART_LM, false);
    canon_is("model.layers.61.eh_proj.weight", 0, "model.layers.61.eh_proj.weight", MK_PART_LM, false);
    /* vision towers keep their names */
    canon_is("model.visual.blocks.0.attn.qkv.weight", 0, "model.visual.blocks.0.attn.qkv.weight", MK_PART_VISION,
             true);
    canon_is("visual.merger.mlp.0.weight", 0, "visual.merger.mlp.0.weight", MK_PART_VISION, true);
    canon_is("vision_tower.x.weight", 0, "vision_tower.x.weight", MK_PART_VISION, true);
    canon_is("language_model.visual.x.weight", 0, "language_model.visual.x.weight", MK_PART_VISION, true);
}

static void role_is(const char *name, mk_qrole role, const char *base, const char *suffix) {
    char *b;
    const char *s;
    mk_qrole r = mk_layout_role(name, &b, &s);
    assert_non_null(b);
    if (r != role || strcmp(b, base) || strcmp(s, suffix))
        fail_msg("%s -> role %d base %s suffix %s; expected %d %s %s", name, r, b, s, role, base, suffix);
    free(b);
}

static void test_roles(void **st) {
    (void)st;
    role_is("a.q_proj.weight", MK_QR_MAIN, "a.q_proj.weight", "");
    role_is("a.q_proj.weight_scale_inv", MK_QR_FP8_SCALE, "a.q_proj.weight", "weight_scale_inv");
    /* fused FP8 experts: the scale of a tensor without .weight */
    role_is("m.experts.gate_up_proj_scale_inv", MK_QR_FP8_SCALE, "m.experts.gate_up_proj", "scale_inv");
    role_is("a.weight_packed", MK_QR_CT_PACKED, "a.weight", "weight_packed");
    role_is("a.weight_scale", MK_QR_CT_SCALE, "a.weight", "weight_scale");
    role_is("a.weight_zero_point", MK_QR_CT_ZP, "a.weight", "weight_zero_point");
    role_is("a.weight_shape", MK_QR_CT_SHAPE, "a.weight", "weight_shape");
    role_is("a.weight_g_idx", MK_QR_CT_GIDX, "a.weight", "weight_g_idx");
    role_is("a.scales", MK_QR_MLX_SCALES, "a.weight", "scales");
    role_is("a.biases", MK_QR_MLX_BIASES, "a.weight", "biases");
    role_is("a.input_scale", MK_QR_DROP, "a", "input_scale");
    role_is("a.activation_scale", MK_QR_DROP, "a", "activation_scale");
    /* a suffix alone is not a companion of anything */
    role_is(".scales", MK_QR_MAIN, ".scales", "");
}

static void expert_is(const char *cname, mk_eform form, const char *mlp, int expert, int proj) {
    char *m;
    int e, p;
    mk_eform f = mk_layout_expert(cname, &m, &e, &p);
    if (f != form || e != expert || p != proj || (mlp ? !m || strcmp(m, mlp) : m != NULL))
        fail_msg("%s -> form %d mlp %s expert %d proj %d; expected %d %s %d %d", cname, f, m ? m : "-", e, p, form,
                 mlp ? mlp : "-", expert, proj);
    free(m);
}

static void test_experts(void **st) {
    (void)st;
    expert_is("model.layers.2.mlp.experts.17.down_proj.weight", MK_EF_PER_EXPERT, "model.layers.2.mlp", 17,
              MK_PROJ_DOWN);
    expert_is("model.layers.2.mlp.experts.0.gate_proj.weight", MK_EF_PER_EXPERT, "model.layers.2.mlp", 0,
              MK_PROJ_GATE);
    expert_is("model.layers.2.mlp.experts.gate_up_proj", MK_EF_FUSED_GATE_UP, "model.layers.2.mlp", -1, -1);
    expert_is("model.layers.2.mlp.experts.down_proj", MK_EF_FUSED_DOWN, "model.layers.2.mlp", -1, MK_PROJ_DOWN);
    expert_is("model.layers.2.mlp.switch_mlp.up_proj.weight", MK_EF_STACKED, "model.layers.2.mlp", -1,
              MK_PROJ_UP);
    /* a non-numeric index is still an expert tensor, flagged -2 for the caller's error */
    expert_is("model.layers.2.mlp.experts.x7.up_proj.weight", MK_EF_PER_EXPERT, "model.layers.2.mlp", -2,
              MK_PROJ_UP);
    /* not experts: the router, the shared expert, an unknown projection, a companion */
    expert_is("model.layers.2.mlp.gate.weight", MK_EF_NONE, NULL, -1, -1);
    expert_is("model.layers.2.mlp.shared_expert.up_proj.weight", MK_EF_NONE, NULL, -1, -1);
    expert_is("model.layers.2.mlp.experts.3.w1.weight", MK_EF_NONE, NULL, -1, -1);
    expert_is("model.layers.2.mlp.switch_mlp.up_proj.scales", MK_EF_NONE, NULL, -1, -1);
}

static void test_out_names(void **st) {
    (void)st;
    struct {
        bool mlx, qwen35, vl;
        mk_part part;
        const char *cname, *want;
    } c[] = {
        /* mlx-lm's qwen3_5_moe nests everything under language_model. */
        {true, true, false, MK_PART_LM, "model.layers.0.mlp.gate.weight", "language_model.model.layers.0.mlp.gate.weight"},
        {true, true, false, MK_PART_LM, "lm_head.weight", "language_model.lm_head.weight"},
        {true, true, false, MK_PART_MTP, "mtp.fc.weight", "language_model.mtp.fc.weight"},
        {true, false, false, MK_PART_LM, "model.layers.0.mlp.gate.weight", "model.layers.0.mlp.gate.weight"},
        /* HF vision-language checkpoints keep the text model under model.language_model. */
        {false, false, true, MK_PART_LM, "model.norm.weight", "model.language_model.norm.weight"},
        {false, false, true, MK_PART_LM, "lm_head.weight", "lm_head.weight"},
        {false, false, false, MK_PART_LM, "model.norm.weight", "model.norm.weight"},
        {false, false, true, MK_PART_VISION, "model.visual.x.weight", "model.visual.x.weight"},
        {true, true, true, MK_PART_VISION, "model.visual.x.weight", "model.visual.x.weight"},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        char *o = mk_layout_out_name(c[i].mlx, c[i].qwen35, c[i].vl, c[i].part, c[i].cname);
        assert_non_null(o);
        if (strcmp(o, c[i].want))
            fail_msg("case %zu: %s -> %s, expected %s", i, c[i].cname, o, c[i].want);
        free(o);
    }
    /* mlx-lm shifts exactly these 1-D norms (qwen3_next / qwen3_5 sanitize) */
    assert_true(mk_layout_is_shifted_norm("model.layers.0.input_layernorm.weight", 1));
    assert_true(mk_layout_is_shifted_norm("model.layers.0.post_attention_layernorm.weight", 1));
    assert_true(mk_layout_is_shifted_norm("model.norm.weight", 1));
    assert_true(mk_layout_is_shifted_norm("model.layers.3.self_attn.q_norm.weight", 1));
    assert_true(mk_layout_is_shifted_norm("model.layers.3.self_attn.k_norm.weight", 1));
    assert_false(mk_layout_is_shifted_norm("model.layers.0.linear_attn.norm.weight", 1)); /* gated: plain w */
    assert_false(mk_layout_is_shifted_norm("model.layers.0.input_layernorm.weight", 2));
    assert_true(mk_layout_keeps_dtype("model.layers.0.linear_attn.A_log"));
    assert_true(mk_layout_keeps_dtype("model.layers.1.mlp.gate.e_score_correction_bias"));
    assert_false(mk_layout_keeps_dtype("model.layers.0.linear_attn.dt_bias"));
}

static void parse_is(const char *name, mk_part part, int layer, int expert, mk_xform xf, const char *module,
                     const char *storage) {
    mk_lname t;
    mk_layout_parse(name, &t);
    if (t.part != part || t.layer != layer || t.expert != expert || t.xform != xf || strcmp(t.module, module) ||
        strcmp(t.storage, storage))
        fail_msg("%s -> part %d layer %d expert %d xform %d module '%s' storage '%s'; expected %d %d %d %d '%s' '%s'",
                 name, t.part, t.layer, t.expert, t.xform, t.module, t.storage, part, layer, expert, xf, module,
                 storage);
}

static void test_parse(void **st) {
    (void)st;
    /* one module in four layouts */
    parse_is("model.layers.5.self_attn.q_proj.weight", MK_PART_LM, 5, -1, MK_XF_NONE, "self_attn.q_proj", "weight");
    parse_is("model.language_model.layers.5.self_attn.q_proj.weight", MK_PART_LM, 5, -1, MK_XF_NONE,
             "self_attn.q_proj", "weight");
    parse_is("language_model.model.layers.5.self_attn.q_proj.scales", MK_PART_LM, 5, -1, MK_XF_NONE,
             "self_attn.q_proj", "scales");
    parse_is("model.layers.5.self_attn.q_proj.weight_scale_inv", MK_PART_LM, 5, -1, MK_XF_NONE, "self_attn.q_proj",
             "weight_scale_inv");
    parse_is("model.layers.5.self_attn.o_proj.weight_packed", MK_PART_LM, 5, -1, MK_XF_NONE, "self_attn.o_proj",
             "weight_packed");
    /* experts in every form */
    parse_is("model.layers.1.mlp.experts.12.up_proj.weight", MK_PART_LM, 1, 12, MK_XF_PER_EXPERT,
             "mlp.experts.up_proj", "weight");
    parse_is("model.language_model.layers.1.mlp.experts.gate_up_proj", MK_PART_LM, 1, -1, MK_XF_FUSED,
             "mlp.experts.gate_up_proj", "");
    parse_is("model.layers.1.mlp.experts.gate_up_proj_scale_inv", MK_PART_LM, 1, -1, MK_XF_FUSED,
             "mlp.experts.gate_up_proj", "scale_inv");
    parse_is("language_model.model.layers.1.mlp.switch_mlp.down_proj.biases", MK_PART_LM, 1, -1, MK_XF_SWITCH,
             "mlp.switch_mlp.down_proj", "biases");
    /* globals, module-only names, biases */
    parse_is("model.embed_tokens.weight", MK_PART_LM, -1, -1, MK_XF_NONE, "embed_tokens", "weight");
    parse_is("language_model.lm_head.weight", MK_PART_LM, -1, -1, MK_XF_NONE, "lm_head", "weight");
    parse_is("lm_head.weight", MK_PART_LM, -1, -1, MK_XF_NONE, "lm_head", "weight");
    parse_is("model.layers.0.linear_attn.A_log", MK_PART_LM, 0, -1, MK_XF_NONE, "linear_attn.A_log", "");
    parse_is("model.layers.2.mlp.gate.e_score_correction_bias", MK_PART_LM, 2, -1, MK_XF_NONE,
             "mlp.gate.e_score_correction_bias", "");
    parse_is("model.layers.0.self_attn.q_proj.bias", MK_PART_LM, 0, -1, MK_XF_NONE, "self_attn.q_proj", "bias");
    /* other parts: their own prefix dropped */
    parse_is("model.visual.blocks.3.mlp.fc1.weight", MK_PART_VISION, -1, -1, MK_XF_NONE, "blocks.3.mlp.fc1",
             "weight");
    parse_is("language_model.mtp.layers.0.mlp.experts.3.gate_proj.weight", MK_PART_MTP, 0, 3, MK_XF_PER_EXPERT,
             "mlp.experts.gate_proj", "weight");
    parse_is("mtp.fc.weight", MK_PART_MTP, -1, -1, MK_XF_NONE, "fc", "weight");
    /* odd names: no crash, no layer from a non-number, long names cut */
    parse_is("model.layers.x.mlp.weight", MK_PART_LM, -1, -1, MK_XF_NONE, "layers.x.mlp", "weight");
    parse_is("", MK_PART_LM, -1, -1, MK_XF_NONE, "", "");
    parse_is(".weight", MK_PART_LM, -1, -1, MK_XF_NONE, ".weight", "");
    char long_name[1200];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = 0;
    mk_lname t;
    mk_layout_parse(long_name, &t);
    assert_int_equal(strlen(t.module), sizeof t.module - 1);
}

static void test_lm_prefixes(void **st) {
    (void)st;
    /* every LM prefix is one the canonical map folds onto "model" (or is "model") */
    for (size_t i = 0; mk_layout_lm_prefixes[i]; i++) {
        char name[128];
        snprintf(name, sizeof name, "%s.embed_tokens.weight", mk_layout_lm_prefixes[i]);
        mk_part p;
        bool vl;
        char *c = mk_layout_canon(name, 0, &p, &vl);
        assert_int_equal(p, MK_PART_LM);
        if (strcmp(mk_layout_lm_prefixes[i], "language_model") != 0)
            assert_string_equal(c, "model.embed_tokens.weight");
        free(c);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_canon),       cmocka_unit_test(test_roles),
                                       cmocka_unit_test(test_experts),     cmocka_unit_test(test_out_names),
                                       cmocka_unit_test(test_parse),       cmocka_unit_test(test_lm_prefixes)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
