/* convert: every shared fixture to HF and MLX, exactness of the FP8
 * dequantization against an independent computation from the bytes, the
 * MLX layout (stacking, norm shift, conv1d, names), byte-identical
 * passthrough, fused <-> per-expert equivalence, INT4 repack without a
 * changed weight byte, and round trips. Bad inputs: tests/unit/test_convert_bad.c. */
#include "mk_test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "moekit/convert.h"
#include "moekit/st.h"
#include "moekit/synth.h"

static char *g_tmp;

static int setup(void **state) {
    (void)state;
    g_tmp = mk_test_tmpdir("convert");
    return g_tmp ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    mk_test_rmrf(g_tmp);
    free(g_tmp);
    return 0;
}

static char *path2(const char *a, const char *b) {
    char *p = malloc(strlen(a) + strlen(b) + 2);
    sprintf(p, "%s/%s", a, b);
    return p;
}

static mk_status convert(const char *src, const char *dst, mk_conv_target to, mk_conv_experts ex, mk_dtype dt,
                         bool verify) {
    mk_conv_opts o;
    mk_conv_opts_init(&o);
    o.to = to;
    o.experts = ex;
    o.dtype = dt;
    o.verify = verify;
    o.quiet = true;
    o.threads = 2;
    mk_status s = mk_conv_run(src, dst, &o, NULL);
    if (s != MK_OK)
        fprintf(stderr, "convert %s -> %s: %s\n", src, dst, mk_err_msg());
    return s;
}

static bool same_file(const char *a, const char *b) {
    size_t na, nb;
    void *x = mk_test_slurp(a, &na), *y = mk_test_slurp(b, &nb);
    bool eq = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return eq;
}

/* Raw bytes of tensor `name` of checkpoint dir (malloc'd). */
static void *tensor_bytes(mk_ckpt *c, const char *name, const mk_tensor_info **ti) {
    const mk_tensor_info *t = mk_ckpt_find(c, name);
    if (!t) {
        fprintf(stderr, "tensor %s absent\n", name);
        return NULL;
    }
    void *b = malloc(t->nbytes ? t->nbytes : 1);
    assert_int_equal(mk_ckpt_read(c, t, 0, b, t->nbytes), MK_OK);
    if (ti)
        *ti = t;
    return b;
}

/* ------------------------------------------------------- all fixtures */

static const char *const g_fixtures[] = {
    "qwen3moe-a/bf16", "qwen3next-a/bf16", "qwen35moe-a/bf16", "qwen35moe-vl/bf16", "qwen35moe-vl/bf16-fused",
    "deepseekv3-a/bf16", "deepseekv3-a/fp8", "qwen3moe-odd/bf16", "qwen3moe-odd/fp8", "tiny-qwen35moe/bf16",
};

static void test_every_fixture(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof g_fixtures / sizeof g_fixtures[0]; i++) {
        char src[4096], name[256];
        snprintf(src, sizeof src, "%s", mk_test_fixture(g_fixtures[i]));
        snprintf(name, sizeof name, "all-%zu", i);
        for (int t = 0; t < 2; t++) {
            char *dst = path2(g_tmp, t ? "x.mlx" : "x.hf");
            char dstn[4200];
            snprintf(dstn, sizeof dstn, "%s-%s", dst, name);
            assert_int_equal(convert(src, dstn, t ? MK_CONV_MLX : MK_CONV_HF, MK_CONV_PER_EXPERT, MK_DT_INVALID, true),
                             MK_OK);
            mk_ckpt *c;
            assert_int_equal(mk_ckpt_open(dstn, 0, &c), MK_OK);
            assert_true(mk_ckpt_count(c) > 10);
            /* MLX: no per-expert names survive; HF: no switch_mlp */
            for (size_t k = 0; k < mk_ckpt_count(c); k++) {
                const char *n = mk_ckpt_tensor(c, k)->name;
                if (t)
                    assert_null(strstr(n, ".experts."));
                else
                    assert_null(strstr(n, "switch_mlp"));
                assert_null(strstr(n, "scale_inv"));
            }
            mk_ckpt_close(c);
            char *cfg = path2(dstn, "config.json");
            struct stat st;
            assert_int_equal(stat(cfg, &st), 0);
            free(cfg);
            if (strstr(g_fixtures[i], "tiny-qwen35moe")) { /* side files copied byte for byte */
                static const char *const side[] = {"tokenizer.json", "tokenizer_config.json",
                                                   "generation_config.json"};
                for (int k = 0; k < 3; k++) {
                    char *a = path2(src, side[k]), *b = path2(dstn, side[k]);
                    assert_true(same_file(a, b));
                    free(a);
                    free(b);
                }
            }
            free(dst);
        }
    }
}

/* ---------------------------------------------------- FP8 exactness */

/* E4M3FN decoded from its bit fields, independently of moekit. */
static float e4m3_ref(uint8_t b) {
    int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
    if (e == 15 && m == 7)
        return NAN;
    double v = e ? ldexp(1.0 + m / 8.0, e - 7) : ldexp(m / 8.0, -6);
    return (float)(s ? -v : v);
}

static uint16_t bf16_ref(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float f32_of(const mk_tensor_info *t, const void *b, size_t i) {
    if (t->dtype == MK_DT_F32) {
        float f;
        memcpy(&f, (const char *)b + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, (const char *)b + 2 * i, 2);
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f; /* BF16 scales */
}

static void check_fp8_fixture(const char *rel) {
    char src[4096];
    snprintf(src, sizeof src, "%s", mk_test_fixture(rel));
    char *d32 = path2(g_tmp, "fp8-f32"), *d16 = path2(g_tmp, "fp8-bf16");
    mk_test_rmrf(d32);
    mk_test_rmrf(d16);
    assert_int_equal(convert(src, d32, MK_CONV_HF, MK_CONV_PER_EXPERT, MK_DT_F32, false), MK_OK);
    assert_int_equal(convert(src, d16, MK_CONV_HF, MK_CONV_PER_EXPERT, MK_DT_BF16, false), MK_OK);
    mk_ckpt *s, *a, *b;
    assert_int_equal(mk_ckpt_open(src, MK_CKPT_NO_MMAP, &s), MK_OK);
    assert_int_equal(mk_ckpt_open(d32, MK_CKPT_NO_MMAP, &a), MK_OK);
    assert_int_equal(mk_ckpt_open(d16, MK_CKPT_NO_MMAP, &b), MK_OK);
    int checked = 0, partial = 0;
    for (size_t k = 0; k < mk_ckpt_count(s); k++) {
        const mk_tensor_info *w = mk_ckpt_tensor(s, k);
        if (w->dtype != MK_DT_F8_E4M3)
            continue;
        char sname[512];
        snprintf(sname, sizeof sname, "%s_scale_inv", w->name);
        const mk_tensor_info *st, *o32, *o16;
        unsigned char *wb = tensor_bytes(s, w->name, NULL), *sb = tensor_bytes(s, sname, &st);
        unsigned char *x = tensor_bytes(a, w->name, &o32), *y = tensor_bytes(b, w->name, &o16);
        assert_non_null(wb);
        assert_non_null(sb);
        assert_non_null(x);
        assert_non_null(y);
        assert_int_equal(o32->dtype, MK_DT_F32);
        assert_int_equal(o16->dtype, MK_DT_BF16);
        int64_t R = w->shape[0], C = w->shape[1], gc = (C + 127) / 128;
        partial += (R % 128) || (C % 128);
        for (int64_t r = 0; r < R; r++)
            for (int64_t c = 0; c < C; c++) {
                float want = e4m3_ref(wb[r * C + c]) * f32_of(st, sb, (size_t)((r / 128) * gc + c / 128));
                float got;
                memcpy(&got, x + 4 * (r * C + c), 4);
                uint16_t g16;
                memcpy(&g16, y + 2 * (r * C + c), 2);
                if (memcmp(&want, &got, 4) != 0 || g16 != bf16_ref(want))
                    fail_msg("%s [%lld,%lld]: want %.9g (bf16 %04x), f32 %.9g bf16 %04x", w->name, (long long)r,
                             (long long)c, want, bf16_ref(want), got, g16);
            }
        checked++;
        free(wb);
        free(sb);
        free(x);
        free(y);
    }
    assert_true(checked > 5);
    assert_true(partial > 0); /* the fixtures have partial edge blocks */
    mk_ckpt_close(s);
    mk_ckpt_close(a);
    mk_ckpt_close(b);
    free(d32);
    free(d16);
}

static void test_fp8_exact(void **state) {
    (void)state;
    check_fp8_fixture("deepseekv3-a/fp8");
    check_fp8_fixture("qwen3moe-odd/fp8");
}

/* ------------------------------------------------------- MLX layout */

static void test_mlx_layout(void **state) {
    (void)state;
    char src[4096];
    snprintf(src, sizeof src, "%s", mk_test_fixture("qwen3next-a/bf16"));
    char *dst = path2(g_tmp, "next.mlx");
    assert_int_equal(convert(src, dst, MK_CONV_MLX, MK_CONV_PER_EXPERT, MK_DT_INVALID, false), MK_OK);
    mk_ckpt *s, *o;
    assert_int_equal(mk_ckpt_open(src, MK_CKPT_NO_MMAP, &s), MK_OK);
    assert_int_equal(mk_ckpt_open(dst, MK_CKPT_NO_MMAP, &o), MK_OK);
    assert_non_null(strstr(mk_ckpt_metadata_json(o, 0), "mlx"));
    /* switch_mlp stacked expert by expert, bytes unchanged */
    const mk_tensor_info *sw;
    unsigned char *stk = tensor_bytes(o, "model.layers.1.mlp.switch_mlp.up_proj.weight", &sw);
    assert_int_equal(sw->ndim, 3);
    assert_int_equal(sw->shape[0], 8);
    assert_int_equal(sw->shape[1], 128);
    assert_int_equal(sw->shape[2], 256);
    for (int e = 0; e < 8; e++) {
        char n[256];
        snprintf(n, sizeof n, "model.layers.1.mlp.experts.%d.up_proj.weight", e);
        const mk_tensor_info *t;
        unsigned char *b = tensor_bytes(s, n, &t);
        assert_memory_equal(stk + (size_t)e * t->nbytes, b, t->nbytes);
        free(b);
    }
    free(stk);
    /* conv1d (C,1,K) -> (C,K,1), same bytes */
    const mk_tensor_info *c0, *c1;
    unsigned char *a = tensor_bytes(s, "model.layers.0.linear_attn.conv1d.weight", &c0);
    unsigned char *b = tensor_bytes(o, "model.layers.0.linear_attn.conv1d.weight", &c1);
    assert_int_equal(c1->shape[1], c0->shape[2]);
    assert_int_equal(c1->shape[2], 1);
    assert_memory_equal(a, b, c0->nbytes);
    free(a);
    free(b);
    /* +1 on zero-centred norms (in bf16, as mlx does), none on linear_attn.norm / A_log */
    static const char *const shifted[] = {"model.layers.0.input_layernorm.weight",
                                          "model.layers.3.post_attention_layernorm.weight", "model.norm.weight",
                                          "model.layers.3.self_attn.q_norm.weight",
                                          "model.layers.3.self_attn.k_norm.weight"};
    for (size_t i = 0; i < 5; i++) {
        const mk_tensor_info *t;
        unsigned char *x = tensor_bytes(s, shifted[i], &t), *y = tensor_bytes(o, shifted[i], NULL);
        for (uint64_t k = 0; k < t->numel; k++) {
            uint16_t h, g;
            memcpy(&h, x + 2 * k, 2);
            memcpy(&g, y + 2 * k, 2);
            uint32_t u = (uint32_t)h << 16;
            float f;
            memcpy(&f, &u, 4);
            assert_int_equal(g, bf16_ref(f + 1.0f));
        }
        free(x);
        free(y);
    }
    static const char *const same[] = {"model.layers.0.linear_attn.norm.weight", "model.layers.0.linear_attn.A_log",
                                       "lm_head.weight", "model.layers.0.linear_attn.in_proj_qkvz.weight"};
    for (size_t i = 0; i < 4; i++) {
        const mk_tensor_info *t;
        unsigned char *x = tensor_bytes(s, same[i], &t), *y = tensor_bytes(o, same[i], NULL);
        assert_memory_equal(x, y, t->nbytes);
        free(x);
        free(y);
    }
    mk_ckpt_close(s);
    mk_ckpt_close(o);
    free(dst);
}

/* qwen3_5_moe: language_model.* names, text only */
static void test_mlx_qwen35_names(void **state) {
    (void)state;
    char src[4096];
    snprintf(src, sizeof src, "%s", mk_test_fixture("qwen35moe-vl/bf16"));
    char *dst = path2(g_tmp, "vl.mlx");
    assert_int_equal(convert(src, dst, MK_CONV_MLX, MK_CONV_PER_EXPERT, MK_DT_INVALID, false), MK_OK);
    mk_ckpt *o;
    assert_int_equal(mk_ckpt_open(dst, 0, &o), MK_OK);
    assert_non_null(mk_ckpt_find(o, "language_model.lm_head.weight"));
    assert_non_null(mk_ckpt_find(o, "language_model.model.embed_tokens.weight"));
    assert_non_null(mk_ckpt_find(o, "language_model.model.layers.0.mlp.switch_mlp.gate_proj.weight"));
    for (size_t k = 0; k < mk_ckpt_count(o); k++) {
        assert_null(strstr(mk_ckpt_tensor(o, k)->name, "visual"));
        assert_int_equal(strncmp(mk_ckpt_tensor(o, k)->name, "language_model.", 15), 0);
    }
    mk_ckpt_close(o);
    free(dst);
}

/* ------------------------------------- identities between layouts */

static void test_vl_fused_equals_per_expert(void **state) {
    (void)state;
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s", mk_test_fixture("qwen35moe-vl/bf16"));
    snprintf(b, sizeof b, "%s", mk_test_fixture("qwen35moe-vl/bf16-fused"));
    char *x = path2(g_tmp, "pe.mlx"), *y = path2(g_tmp, "fu.mlx");
    assert_int_equal(convert(a, x, MK_CONV_MLX, MK_CONV_PER_EXPERT, MK_DT_INVALID, false), MK_OK);
    assert_int_equal(convert(b, y, MK_CONV_MLX, MK_CONV_PER_EXPERT, MK_DT_INVALID, false), MK_OK);
    char *fx = path2(x, "model.safetensors"), *fy = path2(y, "model.safetensors");
    assert_true(same_file(fx, fy)); /* every tensor, name, shape and byte */
    free(fx);
    free(fy);
    /* fused HF source -> per-expert HF equals the per-expert source file exactly, and back */
    char *h1 = path2(g_tmp, "fu.hf"), *h2 = path2(g_tmp, "pe2fu.hf");
    assert_int_equal(convert(b, h1, MK_CONV_HF, MK_CONV_PER_EXPERT, MK_DT_INVALID, false), MK_OK);
    assert_int_equal(convert(a, h2, MK_CONV_HF, MK_CONV_FUSED, MK_DT_INVALID, false), MK_OK);
    char *f1 = path2(h1, "model.safetensors"), *f2 = path2(h2, "model.safetensors");
    char sa[4200], sb[4200];
    snprintf(sa, sizeof sa, "%s/model.safetensors", a);
    snprintf(sb, sizeof sb, "%s/model.safetensors", b);
    assert_true(same_file(f1, sa));
    assert_true(same_file(f2, sb));
    free(f1);
    free(f2);
    free(h1);
    free(h2);
    free(x);
    free(y);
}

/* Passthrough is byte-exact: HF -> HF rewrites every bf16 fixture into the
 * same file; HF -> MLX -> HF of qwen3_moe (no norm shift) gives it back. */
static void test_passthrough_bytes(void **state) {
    (void)state;
    static const char *const fx[] = {"qwen3moe-a/bf16", "qwen3next-a/bf16", "deepseekv3-a/bf16"};
    for (int i = 0; i < 3; i++) {
        char src[4096], sf[4200], name[64];
        snprintf(src, sizeof src, "%s", mk_test_fixture(fx[i]));
        snprintf(sf, sizeof sf, "%s/model.safetensors", src);
        snprintf(name, sizeof name, "pt-%d", i);
        char *d = path2(g_tmp, name);
        mk_conv_stats st;
        mk_conv_opts o;
        mk_conv_opts_init(&o);
        o.quiet = true;
        o.verify = true;
        assert_int_equal(mk_conv_run(src, d, &o, &st), MK_OK);
        assert_int_equal(st.bytes_computed, 0);
        assert_int_equal(st.verified_hash, st.tensors_out);
        char *of = path2(d, "model.safetensors");
        assert_true(same_file(of, sf));
        free(of);
        free(d);
    }
    char src[4096], sf[4200];
    snprintf(src, sizeof src, "%s", mk_test_fixture("qwen3moe-a/bf16"));
    snprintf(sf, sizeof sf, "%s/model.safetensors", src);
    char *m = path2(g_tmp, "rt.mlx"), *h = path2(g_tmp, "rt.hf");
    assert_int_equal(convert(src, m, MK_CONV_MLX, MK_CONV_PER_EXPERT, MK_DT_INVALID, false), MK_OK);
    assert_int_equal(convert(m, h, MK_CONV_HF, MK_CONV_PER_EXPERT, MK_DT_INVALID, true), MK_OK);
    char *of = path2(h, "model.safetensors");
    assert_true(same_file(of, sf));
    free(of);
    free(m);
    free(h);
}

/* --verify on non-finite weights: an Inf and a NaN planted in a bf16
 * fixture survive conversion to f32 (and back to MLX bf16) as themselves,
 * and --verify accepts them: equal infinities are equal, NaN sits where the
 * source has it. (It used to call matching infinities a mismatch.) */
static void test_verify_nonfinite(void **state) {
    (void)state;
    (void)mk_test_fixture("qwen3moe-a/bf16"); /* a missing fixture skips before anything is allocated */
    char *src = path2(g_tmp, "nonfinite"), *cfg = path2(src, "config.json"), *sf = path2(src, "model.safetensors");
    char fsrc[4096];
    snprintf(fsrc, sizeof fsrc, "%s", mk_test_fixture("qwen3moe-a/bf16"));
    char *fcfg = path2(fsrc, "config.json"), *fsf = path2(fsrc, "model.safetensors");
    size_t ncfg, nsf;
    unsigned char *c = mk_test_slurp(fcfg, &ncfg), *w = mk_test_slurp(fsf, &nsf);
    assert_non_null(c);
    assert_non_null(w);
    mkdir(src, 0755);
    mk_ckpt *ck;
    assert_int_equal(mk_ckpt_open(fsrc, MK_CKPT_NO_MMAP, &ck), MK_OK);
    const mk_tensor_info *q = mk_ckpt_find(ck, "model.layers.0.self_attn.q_proj.weight");
    const mk_tensor_info *e = mk_ckpt_find(ck, "model.layers.1.mlp.experts.3.down_proj.weight");
    assert_non_null(q);
    assert_non_null(e);
    assert_int_equal(q->dtype, MK_DT_BF16);
    w[q->file_offset + 2] = 0x80, w[q->file_offset + 3] = 0x7f;   /* +Inf */
    w[q->file_offset + 10] = 0x80, w[q->file_offset + 11] = 0xff; /* -Inf */
    w[e->file_offset + 6] = 0xc0, w[e->file_offset + 7] = 0x7f;   /* NaN */
    mk_ckpt_close(ck);
    assert_int_equal(mk_test_write(cfg, c, ncfg), 0);
    assert_int_equal(mk_test_write(sf, w, nsf), 0);
    char *f32 = path2(g_tmp, "nonfinite.f32"), *mlx = path2(g_tmp, "nonfinite.mlx");
    assert_int_equal(convert(src, f32, MK_CONV_HF, MK_CONV_PER_EXPERT, MK_DT_F32, true), MK_OK);
    assert_int_equal(convert(f32, mlx, MK_CONV_MLX, MK_CONV_PER_EXPERT, MK_DT_BF16, true), MK_OK);
    /* the values really are there, decoded independently of convert */
    assert_int_equal(mk_ckpt_open(f32, MK_CKPT_NO_MMAP, &ck), MK_OK);
    q = mk_ckpt_find(ck, "model.layers.0.self_attn.q_proj.weight");
    assert_non_null(q);
    float v[5]; /* elements 1..5 */
    assert_int_equal(mk_ckpt_read(ck, q, 4, v, sizeof v), MK_OK);
    assert_true(isinf(v[0]) && v[0] > 0);
    assert_true(isinf(v[4]) && v[4] < 0);
    mk_ckpt_close(ck);
    free(c);
    free(w);
    free(fcfg);
    free(fsf);
    free(cfg);
    free(sf);
    free(src);
    free(f32);
    free(mlx);
}

/* ----------------------------------------------------- INT4 repack */

static void check_ct_repack(bool asym) {
    char *src = path2(g_tmp, asym ? "ct-asym" : "ct-sym"), *dst = path2(g_tmp, asym ? "ct-asym.mlx" : "ct-sym.mlx");
    mk_synth_opts so;
    mk_synth_opts_init(&so);
    so.arch = "qwen3_moe";
    so.preset = "tiny";
    so.format = asym ? MK_SYNTH_CT_INT4_ASYM : MK_SYNTH_CT_INT4;
    so.quiet = true;
    so.seed = 7;
    assert_int_equal(mk_synth_run(src, &so), MK_OK);
    assert_int_equal(convert(src, dst, MK_CONV_MLX, MK_CONV_PER_EXPERT, MK_DT_INVALID, true), MK_OK);
    mk_ckpt *s, *o;
    assert_int_equal(mk_ckpt_open(src, MK_CKPT_NO_MMAP, &s), MK_OK);
    assert_int_equal(mk_ckpt_open(dst, MK_CKPT_NO_MMAP, &o), MK_OK);
    for (int l = 0; l < 3; l++)
        for (int p = 0; p < 3; p++) {
            static const char *const pr[] = {"gate_proj", "up_proj", "down_proj"};
            char n[256];
            const mk_tensor_info *tw, *ts, *tb;
            snprintf(n, sizeof n, "model.layers.%d.mlp.switch_mlp.%s.weight", l, pr[p]);
            unsigned char *W = tensor_bytes(o, n, &tw);
            snprintf(n, sizeof n, "model.layers.%d.mlp.switch_mlp.%s.scales", l, pr[p]);
            unsigned char *S = tensor_bytes(o, n, &ts);
            snprintf(n, sizeof n, "model.layers.%d.mlp.switch_mlp.%s.biases", l, pr[p]);
            unsigned char *B = tensor_bytes(o, n, &tb);
            assert_int_equal(tw->dtype, MK_DT_U32);
            assert_int_equal(tw->shape[0], 8);
            size_t woff = 0, soff = 0;
            for (int e = 0; e < 8; e++) {
                const mk_tensor_info *pw, *ps, *pz = NULL;
                snprintf(n, sizeof n, "model.layers.%d.mlp.experts.%d.%s.weight_packed", l, e, pr[p]);
                unsigned char *w = tensor_bytes(s, n, &pw);
                snprintf(n, sizeof n, "model.layers.%d.mlp.experts.%d.%s.weight_scale", l, e, pr[p]);
                unsigned char *sc = tensor_bytes(s, n, &ps);
                unsigned char *zp = NULL;
                if (asym) {
                    snprintf(n, sizeof n, "model.layers.%d.mlp.experts.%d.%s.weight_zero_point", l, e, pr[p]);
                    zp = tensor_bytes(s, n, &pz);
                }
                assert_memory_equal(W + woff, w, pw->nbytes); /* no weight byte changed */
                assert_memory_equal(S + soff, sc, ps->nbytes);
                int64_t rows = ps->shape[0], ng = ps->shape[1];
                for (int64_t r = 0; r < rows; r++)
                    for (int64_t g = 0; g < ng; g++) {
                        size_t k = (size_t)(r * ng + g);
                        float sv = f32_of(ps, sc, k);
                        float z = 8.0f;
                        if (asym) {
                            uint32_t word;
                            memcpy(&word, zp + 4 * ((r / 8) * ng + g), 4);
                            z = (float)((word >> (4 * (r % 8))) & 15u);
                        }
                        uint16_t got;
                        memcpy(&got, B + soff + 2 * k, 2);
                        assert_int_equal(got, bf16_ref(-(sv * z)));
                        if (!asym) /* -8 * s is exact in bf16 */
                            assert_true(f32_of(tb, B + soff, k) == -8.0f * sv);
                    }
                woff += pw->nbytes;
                soff += ps->nbytes;
                free(w);
                free(sc);
                free(zp);
            }
            free(W);
            free(S);
            free(B);
        }
    mk_ckpt_close(s);
    mk_ckpt_close(o);
    char *cfg = path2(dst, "config.json");
    size_t n;
    char *js = mk_test_slurp(cfg, &n);
    assert_non_null(js);
    js = realloc(js, n + 1);
    js[n] = 0;
    assert_non_null(strstr(js, "\"model.layers.2.mlp.switch_mlp.down_proj\": {"));
    assert_non_null(strstr(js, "\"quantization_config\""));
    assert_null(strstr(js, "compressed-tensors"));
    free(js);
    free(cfg);
    free(src);
    free(dst);
}

static void test_ct_repack(void **state) {
    (void)state;
    check_ct_repack(false);
    check_ct_repack(true);
}

/* Dequantizing INT4 to HF and requantizing is not what repack does, but
 * the HF dequantization must equal scale * (u - zp) from the bytes. */
static void test_ct_dequant_hf(void **state) {
    (void)state;
    char *src = path2(g_tmp, "ct-sym"), *dst = path2(g_tmp, "ct-sym.hf");
    assert_int_equal(convert(src, dst, MK_CONV_HF, MK_CONV_PER_EXPERT, MK_DT_F32, true), MK_OK);
    mk_ckpt *s, *o;
    assert_int_equal(mk_ckpt_open(src, MK_CKPT_NO_MMAP, &s), MK_OK);
    assert_int_equal(mk_ckpt_open(dst, MK_CKPT_NO_MMAP, &o), MK_OK);
    const mk_tensor_info *pw, *ps, *ow;
    unsigned char *w = tensor_bytes(s, "model.layers.1.mlp.experts.3.down_proj.weight_packed", &pw);
    unsigned char *sc = tensor_bytes(s, "model.layers.1.mlp.experts.3.down_proj.weight_scale", &ps);
    unsigned char *x = tensor_bytes(o, "model.layers.1.mlp.experts.3.down_proj.weight", &ow);
    int64_t R = ow->shape[0], C = ow->shape[1];
    for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < C; c++) {
            uint32_t word;
            memcpy(&word, w + 4 * (r * (C / 8) + c / 8), 4);
            float u = (float)((word >> (4 * (c % 8))) & 15u);
            float want = f32_of(ps, sc, (size_t)(r * (C / 32) + c / 32)) * (u - 8.0f), got;
            memcpy(&got, x + 4 * (r * C + c), 4);
            assert_true(want == got);
        }
    free(w);
    free(sc);
    free(x);
    mk_ckpt_close(s);
    mk_ckpt_close(o);
    /* MLX affine dequantization: INT4 -> MLX (biases -8s, exact) -> HF gives
     * s*q + (-8s), which in float32 is exactly s*(q-8): the same file as the
     * direct INT4 -> HF conversion. */
    char *m = path2(g_tmp, "ct-sym.mlx"), *h2 = path2(g_tmp, "ct-sym.mlx.hf");
    assert_int_equal(convert(m, h2, MK_CONV_HF, MK_CONV_PER_EXPERT, MK_DT_F32, true), MK_OK);
    char *f1 = path2(dst, "model.safetensors"), *f2 = path2(h2, "model.safetensors");
    assert_true(same_file(f1, f2));
    free(f1);
    free(f2);
    free(m);
    free(h2);
    free(src);
    free(dst);
}

/* The memory budget counts what the caller says it holds, not the
 * process's resident set: a process already holding more than the budget
 * (a server with a model loaded) can still convert within it, and a caller
 * that declares its holdings gets them charged. The old code read VmRSS,
 * so the first convert below was refused. */
static void test_budget_is_passed_in(void **state) {
    (void)state;
    (void)mk_test_fixture("qwen3moe-a/bf16"); /* a missing fixture skips before anything is allocated */
    size_t big = 96u << 20; /* resident, above the 64 MiB budget */
    unsigned char *hold = malloc(big);
    assert_non_null(hold);
    for (size_t i = 0; i < big; i += 4096)
        hold[i] = (unsigned char)i;
    char *dst = path2(g_tmp, "budget-out");
    mk_conv_opts o;
    mk_conv_opts_init(&o);
    o.to = MK_CONV_MLX;
    o.quiet = true;
    o.threads = 1;
    o.max_memory = 64u << 20;
    mk_status s = mk_conv_run(mk_test_fixture("qwen3moe-a/bf16"), dst, &o, NULL);
    if (s != MK_OK)
        fail_msg("converting under a 64 MiB budget while holding 96 MiB: %s", mk_err_msg());
    mk_test_rmrf(dst);
    o.held_bytes = 60u << 20; /* declared: now the budget is too small, and says so */
    s = mk_conv_run(mk_test_fixture("qwen3moe-a/bf16"), dst, &o, NULL);
    assert_int_equal(s, MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "--max-memory 64 MiB is too small"));
    struct stat sb;
    assert_true(stat(dst, &sb) != 0);
    hold[1] = hold[0]; /* keep it alive and resident until here */
    free(hold);
    free(dst);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_fixture),
        cmocka_unit_test(test_fp8_exact),
        cmocka_unit_test(test_mlx_layout),
        cmocka_unit_test(test_mlx_qwen35_names),
        cmocka_unit_test(test_vl_fused_equals_per_expert),
        cmocka_unit_test(test_passthrough_bytes),
        cmocka_unit_test(test_verify_nonfinite),
        cmocka_unit_test(test_ct_repack),
        cmocka_unit_test(test_ct_dequant_hf),
        cmocka_unit_test(test_budget_is_passed_in),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
