/* convert on bad input: each case is a small hand-made checkpoint (written
 * with the safetensors writer and a config.json) that must fail with a
 * message naming the cause and leave neither DST nor DST.partial behind.
 * Also the cases that look odd but are legal (squeezed FP8 scales). */
#include "mk_test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "moekit/convert.h"
#include "moekit/st.h"

static char *g_tmp;
static int g_case;

static int setup(void **state) {
    (void)state;
    g_tmp = mk_test_tmpdir("convbad");
    return g_tmp ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    mk_test_rmrf(g_tmp);
    free(g_tmp);
    return 0;
}

typedef struct td {
    char name[160];
    mk_dtype dt;
    int nd;
    int64_t shape[3];
    const void *data; /* NULL: a byte pattern */
} td;

typedef struct ck {
    td t[128];
    int n;
} ck;

static void add(ck *c, const char *name, mk_dtype dt, int nd, int64_t a, int64_t b, int64_t d, const void *data) {
    td *t = &c->t[c->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dt = dt;
    t->nd = nd;
    t->shape[0] = a;
    t->shape[1] = b;
    t->shape[2] = d;
    t->data = data;
}

static void del(ck *c, const char *name) {
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->t[i].name, name) == 0) {
            c->t[i] = c->t[--c->n];
            return;
        }
    fail_msg("no tensor %s", name);
}

#define CFG_MOE                                                                                         \
    "{\"model_type\": \"qwen3_moe\", \"architectures\": [\"Qwen3MoeForCausalLM\"], \"hidden_size\": 64," \
    " \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"head_dim\": 32," \
    " \"vocab_size\": 16, \"moe_intermediate_size\": 32, \"intermediate_size\": 128, \"num_experts\": 4," \
    " \"num_experts_per_tok\": 2, \"rms_norm_eps\": 1e-6, \"tie_word_embeddings\": false%s}"

/* A complete one-layer qwen3_moe (convert refuses what the engine could not
 * load) with 4 experts of [32, 64]; `wdt` for the expert weights. */
static void base(ck *c, mk_dtype wdt) {
    c->n = 0;
    add(c, "model.embed_tokens.weight", MK_DT_BF16, 2, 16, 64, 0, NULL);
    add(c, "lm_head.weight", MK_DT_BF16, 2, 16, 64, 0, NULL);
    add(c, "model.norm.weight", MK_DT_BF16, 1, 64, 0, 0, NULL);
    add(c, "model.layers.0.input_layernorm.weight", MK_DT_BF16, 1, 64, 0, 0, NULL);
    add(c, "model.layers.0.post_attention_layernorm.weight", MK_DT_BF16, 1, 64, 0, 0, NULL);
    add(c, "model.layers.0.self_attn.q_proj.weight", MK_DT_BF16, 2, 64, 64, 0, NULL);
    add(c, "model.layers.0.self_attn.k_proj.weight", MK_DT_BF16, 2, 32, 64, 0, NULL);
    add(c, "model.layers.0.self_attn.v_proj.weight", MK_DT_BF16, 2, 32, 64, 0, NULL);
    add(c, "model.layers.0.self_attn.o_proj.weight", MK_DT_BF16, 2, 64, 64, 0, NULL);
    add(c, "model.layers.0.self_attn.q_norm.weight", MK_DT_BF16, 1, 32, 0, 0, NULL);
    add(c, "model.layers.0.self_attn.k_norm.weight", MK_DT_BF16, 1, 32, 0, 0, NULL);
    add(c, "model.layers.0.mlp.gate.weight", MK_DT_BF16, 2, 4, 64, 0, NULL);
    static const char *const pr[] = {"gate_proj", "up_proj", "down_proj"};
    for (int e = 0; e < 4; e++)
        for (int p = 0; p < 3; p++) {
            char n[160];
            snprintf(n, sizeof n, "model.layers.0.mlp.experts.%d.%s.weight", e, pr[p]);
            add(c, n, wdt, 2, p == 2 ? 64 : 32, p == 2 ? 32 : 64, 0, NULL);
        }
}

/* Write checkpoint c with config (CFG_MOE + extra) into a fresh dir. */
static char *write_ck(const ck *c, const char *config) {
    char *dir = malloc(strlen(g_tmp) + 32);
    sprintf(dir, "%s/src%d", g_tmp, g_case++);
    mk_stw_opts o = {.force = true, .basename = "model"};
    mk_stw *w;
    assert_int_equal(mk_stw_create(dir, &o, &w), MK_OK);
    for (int i = 0; i < c->n; i++)
        assert_int_equal(mk_stw_add(w, c->t[i].name, c->t[i].dt, c->t[i].nd, c->t[i].shape), MK_OK);
    assert_int_equal(mk_stw_begin_data(w), MK_OK);
    for (size_t i = 0; i < mk_stw_count(w); i++) {
        const mk_tensor_info *ti = mk_stw_info(w, i);
        const td *t = NULL;
        for (int k = 0; k < c->n; k++)
            if (strcmp(c->t[k].name, ti->name) == 0)
                t = &c->t[k];
        unsigned char *b = malloc(ti->nbytes ? ti->nbytes : 1);
        for (uint64_t k = 0; k < ti->nbytes; k++)
            b[k] = (unsigned char)(k * 37 + 11) & 0x3f; /* small finite values in every float format */
        if (t->data)
            memcpy(b, t->data, ti->nbytes);
        assert_int_equal(mk_stw_write(w, b, ti->nbytes), MK_OK);
        free(b);
    }
    assert_int_equal(mk_stw_finish(w), MK_OK);
    mk_stw_free(w);
    char p[4200];
    snprintf(p, sizeof p, "%s/config.json", dir);
    assert_int_equal(mk_test_write(p, config, strlen(config)), 0);
    return dir;
}

static char *cfg(const char *extra) {
    static char b[4096];
    snprintf(b, sizeof b, CFG_MOE, extra);
    return b;
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* Convert and expect status `want` with every word of `words` in the message. */
static void expect_fail(const char *src, mk_conv_target to, mk_status want, const char *const *words) {
    char dst[4200], part[4300];
    snprintf(dst, sizeof dst, "%s/out%d", g_tmp, g_case++);
    snprintf(part, sizeof part, "%s.partial", dst);
    mk_conv_opts o;
    mk_conv_opts_init(&o);
    o.to = to;
    o.quiet = true;
    mk_status s = mk_conv_run(src, dst, &o, NULL);
    if (s != want)
        fail_msg("expected status %d, got %d: %s", want, s, mk_err_msg());
    for (int i = 0; words[i]; i++)
        if (!strstr(mk_err_msg(), words[i]))
            fail_msg("message lacks '%s': %s", words[i], mk_err_msg());
    assert_false(exists(dst));
    assert_false(exists(part));
}

static void test_missing_expert(void **state) {
    (void)state;
    ck c;
    base(&c, MK_DT_BF16);
    del(&c, "model.layers.0.mlp.experts.2.up_proj.weight");
    del(&c, "model.layers.0.mlp.experts.3.up_proj.weight");
    char *src = write_ck(&c, cfg(""));
    const char *w[] = {"model.layers.0.mlp", "missing experts of up_proj: 2-3", "0..3", NULL};
    expect_fail(src, MK_CONV_MLX, MK_E_FORMAT, w);
    expect_fail(src, MK_CONV_HF, MK_E_FORMAT, w);
    free(src);
}

static void test_duplicate_expert(void **state) {
    (void)state;
    ck c;
    base(&c, MK_DT_BF16);
    add(&c, "model.layers.0.mlp.experts.01.gate_proj.weight", MK_DT_BF16, 2, 32, 64, 0, NULL);
    char *src = write_ck(&c, cfg(""));
    const char *w[] = {"model.layers.0.mlp", "expert 1 of gate_proj appears twice", "experts.01.gate_proj", NULL};
    expect_fail(src, MK_CONV_MLX, MK_E_FORMAT, w);
    free(src);
    base(&c, MK_DT_BF16);
    add(&c, "model.layers.0.mlp.experts.9.gate_proj.weight", MK_DT_BF16, 2, 32, 64, 0, NULL);
    src = write_ck(&c, cfg(""));
    const char *w2[] = {"expert 9 of gate_proj", "4 experts", NULL};
    expect_fail(src, MK_CONV_HF, MK_E_FORMAT, w2);
    free(src);
}

static void test_unknown_arch(void **state) {
    (void)state;
    ck c;
    base(&c, MK_DT_BF16);
    char *src = write_ck(&c, "{\"model_type\": \"llama\", \"hidden_size\": 64}");
    const char *w[] = {"'llama'", "not a supported architecture", "qwen3_moe", "qwen3_next", "deepseek_v3", NULL};
    expect_fail(src, MK_CONV_MLX, MK_E_UNSUPPORTED, w);
    free(src);
}

static const char *g_fp8 = ", \"quantization_config\": {\"quant_method\": \"fp8\", \"fmt\": \"e4m3\", "
                           "\"weight_block_size\": [128, 128]}";

static void test_fp8_scale_grid(void **state) {
    (void)state;
    ck c;
    base(&c, MK_DT_F8_E4M3);
    static const char *const pr[] = {"gate_proj", "up_proj", "down_proj"};
    for (int e = 0; e < 4; e++)
        for (int p = 0; p < 3; p++) {
            char n[160];
            snprintf(n, sizeof n, "model.layers.0.mlp.experts.%d.%s.weight_scale_inv", e, pr[p]);
            /* [32,64] needs a 1x1 grid: e0 gets the squeezed 1-D form ([1]) */
            if (e == 0)
                add(&c, n, MK_DT_F32, 1, 1, 0, 0, NULL);
            else
                add(&c, n, MK_DT_BF16, 2, 1, 1, 0, NULL);
        }
    char *src = write_ck(&c, cfg(g_fp8));
    char dst[4200];
    snprintf(dst, sizeof dst, "%s/fp8ok", g_tmp);
    mk_conv_opts o;
    mk_conv_opts_init(&o);
    o.quiet = true;
    o.verify = true;
    o.to = MK_CONV_MLX;
    assert_int_equal(mk_conv_run(src, dst, &o, NULL), MK_OK); /* squeezed 1-D and BF16 scales accepted */
    free(src);
    /* a grid that fits no weight */
    for (int i = 0; i < c.n; i++)
        if (strstr(c.t[i].name, "experts.3.down_proj.weight_scale_inv")) {
            c.t[i].nd = 2;
            c.t[i].shape[0] = 2;
            c.t[i].shape[1] = 2;
        }
    src = write_ck(&c, cfg(g_fp8));
    const char *w[] = {"experts.3.down_proj.weight_scale_inv", "[2,2]", "fits no block grid", "[64,32]", "[1,1]",
                       NULL};
    expect_fail(src, MK_CONV_HF, MK_E_FORMAT, w);
    free(src);
    /* FP8 weight without scales */
    del(&c, "model.layers.0.mlp.experts.3.down_proj.weight_scale_inv");
    src = write_ck(&c, cfg(g_fp8));
    const char *w2[] = {"experts.3.down_proj.weight", "F8_E4M3", "no", "scale_inv", NULL};
    expect_fail(src, MK_CONV_HF, MK_E_FORMAT, w2);
    free(src);
}

static const char *g_ct = ", \"quantization_config\": {\"quant_method\": \"compressed-tensors\", \"format\": "
                          "\"pack-quantized\", \"config_groups\": {\"group_0\": {\"targets\": [\"Linear\"], "
                          "\"weights\": {\"num_bits\": 4, \"type\": \"int\", \"symmetric\": true, \"strategy\": "
                          "\"group\", \"group_size\": 32}}}}";

static void test_ct_group(void **state) {
    (void)state;
    ck c;
    base(&c, MK_DT_BF16);
    static int64_t shape_ok[2] = {32, 64}, shape_bad[2] = {32, 48};
    del(&c, "model.layers.0.mlp.experts.1.gate_proj.weight");
    add(&c, "model.layers.0.mlp.experts.1.gate_proj.weight_packed", MK_DT_I32, 2, 32, 6, 0, NULL);
    add(&c, "model.layers.0.mlp.experts.1.gate_proj.weight_scale", MK_DT_BF16, 2, 32, 2, 0, NULL);
    add(&c, "model.layers.0.mlp.experts.1.gate_proj.weight_shape", MK_DT_I64, 1, 2, 0, 0, shape_bad);
    char *src = write_ck(&c, cfg(g_ct));
    const char *w[] = {"experts.1.gate_proj", "group size 32 does not divide the row length 48", NULL};
    expect_fail(src, MK_CONV_MLX, MK_E_FORMAT, w);
    free(src);
    /* packed shape that does not match weight_shape */
    c.t[c.n - 1].data = shape_ok;
    src = write_ck(&c, cfg(g_ct));
    const char *w2[] = {"weight_packed", "does not pack weight_shape [32,64]", NULL};
    expect_fail(src, MK_CONV_MLX, MK_E_FORMAT, w2);
    free(src);
}

static void test_mlx_bits_mismatch(void **state) {
    (void)state;
    ck c;
    base(&c, MK_DT_BF16);
    del(&c, "model.layers.0.self_attn.q_proj.weight");
    add(&c, "model.layers.0.self_attn.q_proj.weight", MK_DT_U32, 2, 64, 8, 0, NULL); /* 4-bit of 64 = 8 words */
    add(&c, "model.layers.0.self_attn.q_proj.scales", MK_DT_BF16, 2, 64, 1, 0, NULL);
    add(&c, "model.layers.0.self_attn.q_proj.biases", MK_DT_BF16, 2, 64, 1, 0, NULL);
    const char *q = ", \"quantization\": {\"group_size\": 64, \"bits\": 4, "
                    "\"model.layers.0.self_attn.q_proj\": {\"group_size\": 64, \"bits\": 8}}";
    char *src = write_ck(&c, cfg(q));
    const char *w[] = {"q_proj", "8 bits", "found 8", NULL};
    expect_fail(src, MK_CONV_HF, MK_E_MISMATCH, w);
    free(src);
}

static void test_dst_exists_and_f16(void **state) {
    (void)state;
    char src[4096], dst[4200];
    snprintf(src, sizeof src, "%s", mk_test_fixture("qwen3next-a/bf16"));
    snprintf(dst, sizeof dst, "%s/exists", g_tmp);
    mkdir(dst, 0755);
    mk_conv_opts o;
    mk_conv_opts_init(&o);
    o.quiet = true;
    assert_int_equal(mk_conv_run(src, dst, &o, NULL), MK_E_EXISTS);
    assert_non_null(strstr(mk_err_msg(), "already exists"));
    o.force = true;
    assert_int_equal(mk_conv_run(src, dst, &o, NULL), MK_OK);
    o.dtype = MK_DT_F16;
    assert_int_equal(mk_conv_run(src, dst, &o, NULL), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "overflows float16"));
    assert_non_null(strstr(mk_err_msg(), "qwen3_next"));
    o.force_f16 = true;
    o.verify = true;
    assert_int_equal(mk_conv_run(src, dst, &o, NULL), MK_OK);
    /* DST not a checkpoint dir: SRC missing */
    snprintf(src, sizeof src, "%s/nope", g_tmp);
    o.force = false;
    assert_int_not_equal(mk_conv_run(src, dst, &o, NULL), MK_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_expert),   cmocka_unit_test(test_duplicate_expert),
        cmocka_unit_test(test_unknown_arch),     cmocka_unit_test(test_fp8_scale_grid),
        cmocka_unit_test(test_ct_group),         cmocka_unit_test(test_mlx_bits_mismatch),
        cmocka_unit_test(test_dst_exists_and_f16),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
