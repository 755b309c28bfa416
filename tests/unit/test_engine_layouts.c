/* The model loader across checkpoint layouts and storage formats, and the
 * errors it must raise.
 *
 * Layouts are produced from the fixtures by moekit's own converter and
 * synthesizer (independently written modules), then loaded and compared
 * view by view: every weight row must dequantize to the same floats in both
 * layouts (HF per-expert / fused vs MLX switch_mlp stacks, compressed-tensors
 * INT4 vs its MLX affine repack), norms must be the same gain (MLX stores
 * 1 + w already, rounded to its dtype), and where all weights are equal the
 * logits must be identical. Error cases: MLX bits that contradict the packed
 * shape, gaps in expert indices, FP8 scale grids (squeezed accepted, wrong
 * count refused), unsupported architectures. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"
#include "model/model_impl.h"
#include "moekit/convert.h"
#include "moekit/engine.h"
#include "moekit/st.h"
#include "moekit/synth.h"

/* ---- helpers --------------------------------------------------------------- */

static mk_model *open_ok(const char *path) {
    mk_model *m = NULL;
    if (mk_model_open(path, &m) != MK_OK)
        fail_msg("open %s: %s", path, mk_err_msg());
    return m;
}

static void wt_equal(const mk_wt *a, const mk_wt *b, const char *what) {
    assert_int_equal(a->rows, b->rows);
    assert_int_equal(a->cols, b->cols);
    float *ra = malloc((size_t)a->cols * sizeof(float)), *rb = malloc((size_t)a->cols * sizeof(float));
    assert_non_null(ra);
    assert_non_null(rb);
    for (int64_t r = 0; r < a->rows; r++) {
        mk_wt_dequant_row(a, r, ra);
        mk_wt_dequant_row(b, r, rb);
        if (memcmp(ra, rb, (size_t)a->cols * sizeof(float)))
            fail_msg("%s: row %lld differs", what, (long long)r);
    }
    free(ra);
    free(rb);
}

static void vec_equal(const float *a, const float *b, int64_t n, float tol, const char *what) {
    for (int64_t i = 0; i < n; i++)
        if (!(fabsf(a[i] - b[i]) <= tol * fmaxf(1.0f, fabsf(b[i]))))
            fail_msg("%s[%lld]: %g vs %g", what, (long long)i, (double)a[i], (double)b[i]);
}

/* Compare every weight of two models of the same config. `norm_tol` allows
 * the MLX converter's rounding of 1 + w. */
static void models_equal(const mk_model *a, const mk_model *b, float norm_tol) {
    const mk_config *c = &a->cfg;
    int64_t H = c->hidden_size;
    wt_equal(&a->embed, &b->embed, "embed");
    wt_equal(&a->lm_head, &b->lm_head, "lm_head");
    vec_equal(a->norm, b->norm, H, norm_tol, "norm");
    for (int l = 0; l < c->num_layers; l++) {
        const mk_layer_w *x = &a->layers[l], *y = &b->layers[l];
        vec_equal(x->in_norm, y->in_norm, H, norm_tol, "input_layernorm");
        vec_equal(x->post_norm, y->post_norm, H, norm_tol, "post_attention_layernorm");
        assert_int_equal(x->mixer, y->mixer);
        if (x->mixer == MK_MIXER_ATTN) {
            wt_equal(&x->attn.q, &y->attn.q, "q_proj");
            wt_equal(&x->attn.k, &y->attn.k, "k_proj");
            wt_equal(&x->attn.v, &y->attn.v, "v_proj");
            wt_equal(&x->attn.o, &y->attn.o, "o_proj");
            vec_equal(x->attn.q_norm, y->attn.q_norm, c->head_dim, norm_tol, "q_norm");
        } else if (x->mixer == MK_MIXER_GDN) {
            const mk_gdn_w *g = &x->gdn, *h = &y->gdn;
            int64_t nv = c->lin_num_v_heads,
                    C = 2 * c->lin_num_k_heads * c->lin_k_head_dim + nv * c->lin_v_head_dim;
            if (g->grouped) {
                wt_equal(&g->qkvz, &h->qkvz, "in_proj_qkvz");
                wt_equal(&g->ba, &h->ba, "in_proj_ba");
            } else {
                wt_equal(&g->qkv, &h->qkv, "in_proj_qkv");
                wt_equal(&g->z, &h->z, "in_proj_z");
            }
            wt_equal(&g->out, &h->out, "out_proj");
            vec_equal(g->conv, h->conv, C * c->conv_kernel, 0, "conv1d");
            vec_equal(g->A_log, h->A_log, nv, 0, "A_log");
            vec_equal(g->norm, h->norm, c->lin_v_head_dim, 0, "linear_attn.norm (never shifted)");
        } else {
            wt_equal(&x->mla.q_b, &y->mla.q_b, "q_b_proj");
            wt_equal(&x->mla.kv_b, &y->mla.kv_b, "kv_b_proj");
        }
        if (!x->is_moe) {
            wt_equal(&x->mlp.down, &y->mlp.down, "mlp.down_proj");
            continue;
        }
        wt_equal(&x->moe.router, &y->moe.router, "router");
        if (x->moe.has_shared)
            wt_equal(&x->moe.shared.up, &y->moe.shared.up, "shared up");
        for (int e = 0; e < c->num_experts; e++) {
            wt_equal(&x->moe.experts[e].gate, &y->moe.experts[e].gate, "expert gate");
            wt_equal(&x->moe.experts[e].up, &y->moe.experts[e].up, "expert up");
            wt_equal(&x->moe.experts[e].down, &y->moe.experts[e].down, "expert down");
        }
    }
}

static float *logits_of(const mk_model *m, const int32_t *ids, int64_t n) {
    mk_engine_opts o = {.threads = 2, .max_ctx = n};
    mk_engine *e = NULL;
    assert_int_equal(mk_engine_create(m, &o, &e), MK_OK);
    float *lg = malloc((size_t)(n * m->cfg.vocab_size) * sizeof(float));
    assert_non_null(lg);
    if (mk_engine_forward(e, ids, n, MK_LOGITS_ALL, lg, NULL) != MK_OK)
        fail_msg("forward: %s", mk_err_msg());
    mk_engine_free(e);
    return lg;
}

static const int32_t k_ids[12] = {5, 17, 300, 42, 7, 99, 250, 3, 64, 128, 11, 400};

static void convert_to(const char *src, const char *dst, mk_conv_target to) {
    mk_conv_opts o;
    mk_conv_opts_init(&o);
    o.to = to;
    o.quiet = true;
    o.threads = 2;
    if (mk_conv_run(src, dst, &o, NULL) != MK_OK)
        fail_msg("convert %s: %s", src, mk_err_msg());
}

/* Copy checkpoint src into dst, dropping tensors for which drop() is true and
 * reshaping those reshape() edits; config.json gets `config` if given. */
typedef bool (*drop_fn)(const char *name);
typedef void (*reshape_fn)(const char *name, int *ndim, int64_t *shape);

static void copy_ckpt(const char *src, const char *dst, drop_fn drop, reshape_fn reshape,
                      const char *config) {
    mk_ckpt *ck = NULL;
    assert_int_equal(mk_ckpt_open(src, 0, &ck), MK_OK);
    mk_stw_opts so = {.force = true, .basename = "model"};
    mk_stw *w = NULL;
    assert_int_equal(mk_stw_create(dst, &so, &w), MK_OK);
    for (size_t i = 0; i < mk_ckpt_count(ck); i++) {
        const mk_tensor_info *t = mk_ckpt_tensor(ck, i);
        if (drop && drop(t->name))
            continue;
        int nd = t->ndim;
        int64_t sh[MK_MAX_DIMS];
        memcpy(sh, t->shape, sizeof sh);
        if (reshape)
            reshape(t->name, &nd, sh);
        assert_int_equal(mk_stw_add(w, t->name, t->dtype, nd, sh), MK_OK);
    }
    assert_int_equal(mk_stw_begin_data(w), MK_OK);
    for (size_t i = 0; i < mk_stw_count(w); i++) {
        const mk_tensor_info *t = mk_ckpt_find(ck, mk_stw_name(w, i));
        assert_int_equal(mk_stw_write(w, mk_ckpt_data(ck, t), t->nbytes), MK_OK);
    }
    assert_int_equal(mk_stw_finish(w), MK_OK);
    mk_stw_free(w);
    char p[4096];
    size_t n = 0;
    char *cfg = NULL;
    if (!config) {
        snprintf(p, sizeof p, "%s/config.json", mk_ckpt_dir(ck));
        cfg = mk_test_slurp(p, &n);
        assert_non_null(cfg);
    }
    snprintf(p, sizeof p, "%s/config.json", dst);
    assert_int_equal(mk_test_write(p, config ? config : cfg, config ? strlen(config) : n), 0);
    free(cfg);
    mk_ckpt_close(ck);
}

/* ---- layouts --------------------------------------------------------------- */

/* HF fused VL checkpoint vs its MLX conversion (language_model.model.*,
 * switch_mlp stacks, conv (C,K,1), norms +1 already applied). */
static void test_mlx_vl(void **st) {
    (void)st;
    (void)mk_test_fixture("qwen35moe-vl/bf16-fused"); /* a missing fixture skips before anything is allocated */
    char *tmp = mk_test_tmpdir("eng-mlxvl"), dst[4096];
    snprintf(dst, sizeof dst, "%s/mlx", tmp);
    char src[4096];
    snprintf(src, sizeof src, "%s", mk_test_fixture("qwen35moe-vl/bf16-fused"));
    convert_to(src, dst, MK_CONV_MLX);
    mk_model *a = open_ok(src), *b = open_ok(dst), *c = open_ok(mk_test_fixture("qwen35moe-vl/bf16"));
    assert_string_equal(mk_model_layout(a), "hf-vl/fused/bf16");
    assert_string_equal(mk_model_layout(b), "mlx/stacked/bf16");
    assert_string_equal(mk_model_layout(c), "hf-vl/per-expert/bf16");
    models_equal(b, a, 1.0f / 128); /* bf16(1 + w) */
    models_equal(c, a, 0);
    mk_model_free(a);
    mk_model_free(b);
    mk_model_free(c);
    mk_test_rmrf(tmp);
    free(tmp);
}

/* qwen3_next grouped projections in MLX layout (model.* prefix kept). */
static void test_mlx_qwen3next(void **st) {
    (void)st;
    (void)mk_test_fixture("qwen3next-a/bf16"); /* a missing fixture skips before anything is allocated */
    char *tmp = mk_test_tmpdir("eng-mlxnext"), dst[4096], src[4096];
    snprintf(dst, sizeof dst, "%s/mlx", tmp);
    snprintf(src, sizeof src, "%s", mk_test_fixture("qwen3next-a/bf16"));
    convert_to(src, dst, MK_CONV_MLX);
    mk_model *a = open_ok(src), *b = open_ok(dst);
    models_equal(b, a, 1.0f / 128);
    mk_model_free(a);
    mk_model_free(b);
    mk_test_rmrf(tmp);
    free(tmp);
}

/* DeepSeek has no zero-centred norms: its MLX form holds the same numbers,
 * so the logits must be bit-identical. */
static void test_mlx_deepseek_identical_logits(void **st) {
    (void)st;
    (void)mk_test_fixture("deepseekv3-a/bf16"); /* a missing fixture skips before anything is allocated */
    char *tmp = mk_test_tmpdir("eng-mlxds"), dst[4096], src[4096];
    snprintf(dst, sizeof dst, "%s/mlx", tmp);
    snprintf(src, sizeof src, "%s", mk_test_fixture("deepseekv3-a/bf16"));
    convert_to(src, dst, MK_CONV_MLX);
    mk_model *a = open_ok(src), *b = open_ok(dst);
    models_equal(b, a, 0);
    float *la = logits_of(a, k_ids, 12), *lb = logits_of(b, k_ids, 12);
    assert_memory_equal(la, lb, 12 * (size_t)a->cfg.vocab_size * sizeof(float));
    free(la);
    free(lb);
    mk_model_free(a);
    mk_model_free(b);
    mk_test_rmrf(tmp);
    free(tmp);
}

/* compressed-tensors INT4 (symmetric and with zero points) vs its MLX affine
 * repack: same weights row by row, identical logits. */
static void int4_case(mk_synth_format fmt, const char *arch, const char *tag) {
    char *tmp = mk_test_tmpdir(tag), src[4096], dst[4096];
    snprintf(src, sizeof src, "%s/ct", tmp);
    snprintf(dst, sizeof dst, "%s/mlx", tmp);
    mk_synth_opts so;
    mk_synth_opts_init(&so);
    so.arch = arch;
    so.preset = "tiny";
    so.format = fmt;
    so.quiet = true;
    so.threads = 2;
    so.seed = 7;
    if (mk_synth_run(src, &so) != MK_OK)
        fail_msg("synth: %s", mk_err_msg());
    convert_to(src, dst, MK_CONV_MLX);
    mk_model *a = open_ok(src), *b = open_ok(dst);
    assert_non_null(strstr(mk_model_layout(a), "int4"));
    assert_non_null(strstr(mk_model_layout(b), "affine"));
    assert_true(mk_model_quantized(a));
    models_equal(b, a, 1.0f / 128);
    if (strcmp(arch, "deepseek_v3") == 0) {
        int32_t ids[12];
        for (int i = 0; i < 12; i++)
            ids[i] = k_ids[i] % a->cfg.vocab_size;
        float *la = logits_of(a, ids, 12), *lb = logits_of(b, ids, 12);
        assert_memory_equal(la, lb, 12 * (size_t)a->cfg.vocab_size * sizeof(float));
        free(la);
        free(lb);
    }
    mk_model_free(a);
    mk_model_free(b);
    mk_test_rmrf(tmp);
    free(tmp);
}

static void test_int4_symmetric(void **st) {
    (void)st;
    int4_case(MK_SYNTH_CT_INT4, "deepseek_v3", "eng-int4s");
}

static void test_int4_zero_point(void **st) {
    (void)st;
    int4_case(MK_SYNTH_CT_INT4_ASYM, "deepseek_v3", "eng-int4a");
}

static void test_int4_qwen35(void **st) {
    (void)st;
    int4_case(MK_SYNTH_CT_INT4, "qwen3_5_moe", "eng-int4q");
}

/* ---- errors ---------------------------------------------------------------- */

/* An MLX config entry saying 8 bits for a module packed at 4 bits: refused,
 * naming the module, the configured and the implied bits. */
static void test_mlx_bits_mismatch(void **st) {
    (void)st;
    char *tmp = mk_test_tmpdir("eng-bits"), src[4096], dst[4096], bad[4096], p[4200];
    snprintf(src, sizeof src, "%s/ct", tmp);
    snprintf(dst, sizeof dst, "%s/mlx", tmp);
    snprintf(bad, sizeof bad, "%s/bad", tmp);
    mk_synth_opts so;
    mk_synth_opts_init(&so);
    so.arch = "qwen3_moe";
    so.format = MK_SYNTH_CT_INT4;
    so.quiet = true;
    assert_int_equal(mk_synth_run(src, &so), MK_OK);
    convert_to(src, dst, MK_CONV_MLX);
    snprintf(p, sizeof p, "%s/config.json", dst);
    size_t n;
    char *cfg = mk_test_slurp(p, &n);
    assert_non_null(cfg);
    /* the converter lists every quantized module; make one entry say 8 bits
     * (in "quantization" and its "quantization_config" copy) */
    static const char key[] = "\"model.layers.0.mlp.switch_mlp.up_proj\"";
    char *cfg2 = malloc(n + 1);
    assert_non_null(cfg2);
    memcpy(cfg2, cfg, n);
    cfg2[n] = 0;
    int hits = 0;
    for (char *h = strstr(cfg2, key); h; h = strstr(h + 1, key)) {
        char *b = strstr(h, "\"bits\"");
        assert_non_null(b);
        char *d = strchr(b + 6, '4');
        assert_non_null(d);
        *d = '8';
        hits++;
    }
    assert_true(hits >= 1);
    copy_ckpt(dst, bad, NULL, NULL, cfg2);
    mk_model *m = NULL;
    assert_int_equal(mk_model_open(bad, &m), MK_E_MISMATCH);
    assert_null(m);
    const char *msg = mk_err_msg();
    assert_non_null(strstr(msg, "model.layers.0.mlp.switch_mlp.up_proj"));
    assert_non_null(strstr(msg, "config says 8-bit"));
    assert_non_null(strstr(msg, "implies 4 bits"));
    free(cfg);
    free(cfg2);
    mk_test_rmrf(tmp);
    free(tmp);
}

static bool drop_experts_5_6(const char *name) {
    return strstr(name, "layers.1.mlp.experts.5.") || strstr(name, "layers.1.mlp.experts.6.");
}

static void test_missing_experts(void **st) {
    (void)st;
    (void)mk_test_fixture("qwen3moe-a/bf16"); /* a missing fixture skips before anything is allocated */
    char *tmp = mk_test_tmpdir("eng-gap");
    copy_ckpt(mk_test_fixture("qwen3moe-a/bf16"), tmp, drop_experts_5_6, NULL, NULL);
    mk_model *m = NULL;
    assert_int_equal(mk_model_open(tmp, &m), MK_E_FORMAT);
    assert_non_null(strstr(mk_err_msg(), "layer 1"));
    assert_non_null(strstr(mk_err_msg(), "5, 6"));
    mk_test_rmrf(tmp);
    free(tmp);
}

static bool drop_q_proj(const char *name) { return strstr(name, "layers.2.self_attn.q_proj.") != 0; }

static void test_missing_tensor(void **st) {
    (void)st;
    (void)mk_test_fixture("qwen3moe-a/bf16"); /* a missing fixture skips before anything is allocated */
    char *tmp = mk_test_tmpdir("eng-miss");
    copy_ckpt(mk_test_fixture("qwen3moe-a/bf16"), tmp, drop_q_proj, NULL, NULL);
    mk_model *m = NULL;
    assert_int_equal(mk_model_open(tmp, &m), MK_E_FORMAT);
    assert_non_null(strstr(mk_err_msg(), "model.layers.2.self_attn.q_proj.weight"));
    mk_test_rmrf(tmp);
    free(tmp);
}

/* transformers 5.x squeezes per-expert scale grids ([1, 2] -> [2]) */
static void squeeze(const char *name, int *nd, int64_t *sh) {
    if (strstr(name, "mlp.experts.") && strstr(name, "_scale_inv") && sh[0] == 1) {
        sh[0] = sh[1];
        *nd = 1;
    }
}

static void bad_grid(const char *name, int *nd, int64_t *sh) {
    if (!strcmp(name, "model.layers.1.mlp.experts.3.down_proj.weight_scale_inv")) {
        sh[0] = sh[0] * sh[1]; /* [2, 1] -> [2]: same count, accepted... */
        *nd = 1;
    }
    if (!strcmp(name, "model.layers.1.mlp.experts.3.up_proj.weight_scale_inv")) {
        sh[1] = 1; /* [1, 2] -> [1, 1]: element count wrong (data shortened below) */
    }
}

static bool drop_none(const char *name) {
    (void)name;
    return false;
}

static void test_fp8_squeezed_scales(void **st) {
    (void)st;
    (void)mk_test_fixture("deepseekv3-a/fp8"); /* a missing fixture skips before anything is allocated */
    char *tmp = mk_test_tmpdir("eng-sq");
    const char *src = mk_test_fixture("deepseekv3-a/fp8");
    char srcb[4096];
    snprintf(srcb, sizeof srcb, "%s", src);
    copy_ckpt(srcb, tmp, drop_none, squeeze, NULL);
    mk_model *a = open_ok(srcb), *b = open_ok(tmp);
    assert_string_equal(mk_model_layout(b), "hf/per-expert/fp8");
    models_equal(b, a, 0);
    mk_model_free(a);
    mk_model_free(b);
    mk_test_rmrf(tmp);
    free(tmp);
}

static void test_fp8_bad_grid(void **st) {
    (void)st;
    (void)mk_test_fixture("deepseekv3-a/fp8"); /* a missing fixture skips before anything is allocated */
    /* a scale grid with the wrong element count must be refused by name; the
     * copy writes fewer bytes for it, so build it through a dedicated writer */
    char *tmp = mk_test_tmpdir("eng-grid");
    mk_ckpt *ck = NULL;
    assert_int_equal(mk_ckpt_open(mk_test_fixture("deepseekv3-a/fp8"), 0, &ck), MK_OK);
    mk_stw_opts so = {.force = true, .basename = "model"};
    mk_stw *w = NULL;
    assert_int_equal(mk_stw_create(tmp, &so, &w), MK_OK);
    for (size_t i = 0; i < mk_ckpt_count(ck); i++) {
        const mk_tensor_info *t = mk_ckpt_tensor(ck, i);
        int nd = t->ndim;
        int64_t sh[MK_MAX_DIMS];
        memcpy(sh, t->shape, sizeof sh);
        bad_grid(t->name, &nd, sh);
        assert_int_equal(mk_stw_add(w, t->name, t->dtype, nd, sh), MK_OK);
    }
    assert_int_equal(mk_stw_begin_data(w), MK_OK);
    for (size_t i = 0; i < mk_stw_count(w); i++) {
        const mk_tensor_info *t = mk_ckpt_find(ck, mk_stw_name(w, i));
        assert_int_equal(mk_stw_write(w, mk_ckpt_data(ck, t), mk_stw_info(w, i)->nbytes), MK_OK);
    }
    assert_int_equal(mk_stw_finish(w), MK_OK);
    mk_stw_free(w);
    char p[4200];
    snprintf(p, sizeof p, "%s/config.json", mk_ckpt_dir(ck));
    size_t n;
    char *cfg = mk_test_slurp(p, &n);
    snprintf(p, sizeof p, "%s/config.json", tmp);
    assert_int_equal(mk_test_write(p, cfg, n), 0);
    free(cfg);
    mk_ckpt_close(ck);
    mk_model *m = NULL;
    assert_int_equal(mk_model_open(tmp, &m), MK_E_FORMAT);
    assert_non_null(strstr(mk_err_msg(), "model.layers.1.mlp.experts.3.up_proj.weight_scale_inv"));
    assert_non_null(strstr(mk_err_msg(), "expected 2"));
    mk_test_rmrf(tmp);
    free(tmp);
}

static void test_unsupported_arch(void **st) {
    (void)st;
    (void)mk_test_fixture("qwen3moe-a/bf16"); /* a missing fixture skips before anything is allocated */
    char *tmp = mk_test_tmpdir("eng-arch");
    copy_ckpt(mk_test_fixture("qwen3moe-a/bf16"), tmp, NULL, NULL,
              "{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"], "
              "\"hidden_size\": 256, \"num_hidden_layers\": 3, \"vocab_size\": 512}");
    mk_model *m = NULL;
    assert_int_equal(mk_model_open(tmp, &m), MK_E_UNSUPPORTED);
    assert_non_null(strstr(mk_err_msg(), "llama"));
    mk_test_rmrf(tmp);
    free(tmp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mlx_vl),
        cmocka_unit_test(test_mlx_qwen3next),
        cmocka_unit_test(test_mlx_deepseek_identical_logits),
        cmocka_unit_test(test_int4_symmetric),
        cmocka_unit_test(test_int4_zero_point),
        cmocka_unit_test(test_int4_qwen35),
        cmocka_unit_test(test_mlx_bits_mismatch),
        cmocka_unit_test(test_missing_experts),
        cmocka_unit_test(test_missing_tensor),
        cmocka_unit_test(test_fp8_squeezed_scales),
        cmocka_unit_test(test_fp8_bad_grid),
        cmocka_unit_test(test_unsupported_arch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
