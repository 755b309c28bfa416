/* Stored modules (include/moekit/module.h): the byte ranges of a slice are
 * where the weight's bytes really are.
 *
 * For every expert layout a checkpoint can have (HF per-expert bf16, HF
 * fused gate_up_proj / down_proj, MLX switch_mlp stacks quantized affine and
 * mxfp4, FP8 block with partial edge blocks, compressed-tensors INT4
 * symmetric and with zero points, the embedded trained model), each part of
 * every routed expert is read with plain pread at the reported (file,
 * offset, length) and compared byte for byte with what the model's
 * mmap-based view points at. The ranges are also held to header arithmetic
 * written here independently (a per-expert tensor is whole; expert e of a
 * stacked tensor is its e-th 1/E; a fused half is half of that), and the
 * loader's header-only check (mk_model_check) passes on an unmapped
 * opening of each.
 *
 * Then the refusals of module.c that no other test reaches: slices outside
 * the module, FP8 rows starting inside a scale block, a stacked INT4
 * tensor, a dtype that is no weight storage, a missing tensor, a view of a
 * checkpoint opened without mmap, and every refusal of convert's
 * resolution (mk_smod_resolve) on hand-written headers. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mk_test_util.h"
#include "model/model_impl.h"
#include "moekit/convert.h"
#include "moekit/module.h"
#include "moekit/quantize.h"
#include "moekit/st.h"
#include "moekit/synth.h"

static const char *const k_proj[3] = {"gate_proj", "up_proj", "down_proj"};

static const mk_tensor_info *findf(const mk_ckpt *c, char *buf, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static const mk_tensor_info *findf(const mk_ckpt *c, char *buf, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    return mk_ckpt_find(c, buf);
}

/* pread exactly len bytes at off of a file, through its path. */
static void *pread_at(const char *path, uint64_t off, uint64_t len) {
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    unsigned char *b = malloc(len ? len : 1);
    assert_non_null(b);
    uint64_t got = 0;
    while (got < len) {
        ssize_t k = pread(fd, b + got, len - got, (off_t)(off + got));
        assert_true(k > 0);
        got += (uint64_t)k;
    }
    close(fd);
    return b;
}

/* What the ranges of one part must be, from the header alone. */
static void expect_range(const mk_srange *r, const mk_tensor_info *t, uint64_t off, uint64_t len) {
    assert_ptr_equal(r->t, t);
    assert_int_equal(r->shard, t->shard);
    assert_int_equal(r->off, off);
    assert_int_equal(r->len, len);
}

typedef struct seen {
    int kinds[MK_SM_RAW + 1];
    long parts; /* parts compared byte for byte */
} seen;

/* One expert projection: open the module against its expected shape, slice
 * it, check the ranges against header arithmetic and pread them against
 * the model's view. `form`: 0 per-expert, 1 stacked (switch_mlp), 2 fused. */
static void check_expert(const mk_model *m, const mk_ckpt *ck, const char *pfx, int l, int e, int p,
                         int form, seen *sn) {
    const mk_config *c = &m->cfg;
    int64_t H = c->hidden_size, I = c->moe_intermediate_size, E = c->num_experts;
    char mod[512], wname[600];
    int64_t R = p == 2 ? H : I, cols = p == 2 ? I : H, row0 = 0, rows = R, xe = e, xE = E;
    if (form == 0) {
        snprintf(mod, sizeof mod, "%s.layers.%d.mlp.experts.%d.%s", pfx, l, e, k_proj[p]);
        snprintf(wname, sizeof wname, "%s.weight", mod);
        xe = 0;
        xE = 0;
    } else if (form == 1) {
        snprintf(mod, sizeof mod, "%s.layers.%d.mlp.switch_mlp.%s", pfx, l, k_proj[p]);
        snprintf(wname, sizeof wname, "%s.weight", mod);
    } else {
        snprintf(mod, sizeof mod, "%s.layers.%d.mlp.experts.%s", pfx, l, p == 2 ? "down_proj" : "gate_up_proj");
        if (!mk_ckpt_find(ck, mod))
            snprintf(mod + strlen(mod), sizeof mod - strlen(mod), ".weight");
        snprintf(wname, sizeof wname, "%s", mod);
        if (p < 2) {
            R = 2 * I;
            row0 = p == 1 ? I : 0;
            rows = I;
        }
    }
    mk_smod sm;
    mk_smod_expect x = {xE, R, cols};
    if (mk_smod_open(ck, &m->cfg, mod, wname, &x, &sm) != MK_OK)
        fail_msg("%s: %s", mod, mk_err_msg());
    mk_sslice sl;
    assert_int_equal(mk_smod_slice(&sm, xe, row0, rows, &sl), MK_OK);
    sn->kinds[sm.kind]++;

    /* header arithmetic: whole tensors per expert, 1/E of a stacked one, a half of that when fused */
    for (int i = 0; i < MK_SP_N; i++) {
        const mk_tensor_info *t = sm.part[i];
        if (!t) {
            assert_null(sl.part[i].t);
            continue;
        }
        if (form == 0 || sm.kind == MK_SM_CT) {
            if (sm.kind == MK_SM_FP8 && i == MK_SP_SCALES && form != 0)
                continue;
            expect_range(&sl.part[i], t, t->file_offset, t->nbytes);
        } else if (!(sm.kind == MK_SM_FP8 && i == MK_SP_SCALES)) {
            uint64_t per = t->nbytes / (uint64_t)E, half = form == 2 && p < 2 ? per / 2 : per;
            uint64_t at = t->file_offset + (uint64_t)e * per + (form == 2 && p == 1 ? half : 0);
            expect_range(&sl.part[i], t, at, half);
        }
    }

    /* pread at the ranges == the bytes the mmap view points at */
    const mk_expert *ex = &m->layers[l].moe.experts[e];
    const mk_wt *w = p == 0 ? &ex->gate : p == 1 ? &ex->up : &ex->down;
    assert_int_equal(w->rows, rows);
    assert_int_equal(w->cols, cols);
    assert_int_equal(w->fmt, sm.q.fmt);
    const void *vp[MK_SP_N] = {w->data, w->scales, sm.kind == MK_SM_CT ? NULL : w->biases, NULL};
    for (int i = 0; i < MK_SP_N; i++) {
        const mk_srange *r = &sl.part[i];
        if (!r->t || !vp[i])
            continue;
        void *b = pread_at(mk_ckpt_shard_path(ck, (size_t)r->shard), r->off, r->len);
        assert_memory_equal(b, vp[i], r->len);
        free(b);
        sn->parts++;
    }
    /* and the weight's range covers exactly the view's rows */
    mk_wt v = sm.q;
    v.rows = rows;
    v.cols = cols;
    if (sm.kind != MK_SM_CT)
        assert_int_equal(sl.part[MK_SP_WEIGHT].len, (uint64_t)rows * mk_wt_row_bytes(&v));
}

/* Every routed expert of every MoE layer of the checkpoint in dir. */
static seen check_dir(const char *dir) {
    seen sn;
    memset(&sn, 0, sizeof sn);
    mk_model *m = NULL;
    if (mk_model_open(dir, &m) != MK_OK)
        fail_msg("%s: %s", dir, mk_err_msg());
    mk_ckpt *ck = NULL; /* a second, unmapped opening: ranges come from headers */
    assert_int_equal(mk_ckpt_open(dir, MK_CKPT_NO_MMAP, &ck), MK_OK);
    /* the loader's checks run on it too (mk_model_check: no mapping, pread only) */
    if (mk_model_check(&m->cfg, ck) != MK_OK)
        fail_msg("%s: mk_model_check without a mapping: %s", dir, mk_err_msg());
    static const char *const pfxs[] = {"model", "model.language_model", "language_model.model"};
    char b[600];
    int layers = 0;
    for (int l = 0; l < m->cfg.num_layers; l++) {
        if (!m->layers[l].is_moe)
            continue;
        const char *pfx = NULL;
        int form = -1;
        for (size_t k = 0; k < 3 && form < 0; k++) {
            pfx = pfxs[k];
            if (findf(ck, b, sizeof b, "%s.layers.%d.mlp.switch_mlp.gate_proj.weight", pfx, l))
                form = 1;
            else if (findf(ck, b, sizeof b, "%s.layers.%d.mlp.experts.gate_up_proj", pfx, l) ||
                     findf(ck, b, sizeof b, "%s.layers.%d.mlp.experts.gate_up_proj.weight", pfx, l))
                form = 2;
            else if (findf(ck, b, sizeof b, "%s.layers.%d.mlp.experts.0.gate_proj.weight", pfx, l) ||
                     findf(ck, b, sizeof b, "%s.layers.%d.mlp.experts.0.gate_proj.weight_packed", pfx, l))
                form = 0;
        }
        if (form < 0)
            fail_msg("%s: layer %d: no routed experts found", dir, l);
        for (int e = 0; e < m->cfg.num_experts; e++)
            for (int p = 0; p < 3; p++)
                check_expert(m, ck, pfx, l, e, p, form, &sn);
        layers++;
    }
    assert_true(layers > 0);
    mk_ckpt_close(ck);
    mk_model_free(m);
    return sn;
}

/* ---- layouts -------------------------------------------------------------- */

static void test_hf_per_expert_bf16(void **st) {
    (void)st;
    seen s = check_dir(mk_test_fixture("qwen3moe-a/bf16"));
    assert_true(s.kinds[MK_SM_FLOAT] > 0 && s.parts > 0);
}

static void test_hf_fused_bf16(void **st) {
    (void)st;
    seen s = check_dir(mk_test_fixture("qwen35moe-vl/bf16-fused"));
    assert_true(s.kinds[MK_SM_FLOAT] > 0 && s.parts > 0);
}

static void test_fp8_partial_blocks(void **st) {
    (void)st;
    seen a = check_dir(mk_test_fixture("deepseekv3-a/fp8"));
    assert_true(a.kinds[MK_SM_FP8] > 0);
    seen b = check_dir(mk_test_fixture("qwen3moe-odd/fp8"));
    assert_true(b.kinds[MK_SM_FP8] > 0);
    /* weight and scales of each expert compared */
    assert_int_equal(b.parts, 2 * b.kinds[MK_SM_FP8]);
}

static void test_embedded_tiny(void **st) {
    (void)st;
    seen s = check_dir(mk_test_fixture("tiny-qwen35moe/bf16"));
    assert_true(s.kinds[MK_SM_FLOAT] > 0 && s.parts > 0);
}

static void convert_to(const char *src, const char *dst, struct mk_qjob *q) {
    mk_conv_opts o;
    mk_conv_opts_init(&o);
    o.to = MK_CONV_MLX;
    o.quiet = true;
    o.threads = 2;
    o.quant = q;
    if (mk_conv_run(src, dst, &o, NULL) != MK_OK)
        fail_msg("convert %s: %s", src, mk_err_msg());
}

static void synth(const char *dst, mk_synth_format fmt) {
    mk_synth_opts so;
    mk_synth_opts_init(&so);
    so.arch = "qwen3_moe";
    so.preset = "tiny";
    so.format = fmt;
    so.quiet = true;
    so.threads = 2;
    so.seed = 11;
    if (mk_synth_run(dst, &so) != MK_OK)
        fail_msg("synth: %s", mk_err_msg());
}

/* compressed-tensors INT4 (symmetric, and with zero points), and the MLX
 * switch_mlp stacks convert makes of it (affine 4-bit) and of the bf16
 * fixture (bf16 stacks, mxfp4 stacks through quantize). */
static void test_ct_int4_and_mlx_stacks(void **st) {
    (void)st;
    (void)mk_test_fixture("qwen3moe-a/bf16"); /* a missing fixture skips before anything is allocated */
    char *tmp = mk_test_tmpdir("fmod"), a[4096], b[4096], c[4096], d[4096], f[4096];
    snprintf(a, sizeof a, "%s/ct", tmp);
    snprintf(b, sizeof b, "%s/ctzp", tmp);
    snprintf(c, sizeof c, "%s/mlx-affine", tmp);
    snprintf(d, sizeof d, "%s/mlx-bf16", tmp);
    snprintf(f, sizeof f, "%s/mlx-mxfp4", tmp);
    synth(a, MK_SYNTH_CT_INT4);
    synth(b, MK_SYNTH_CT_INT4_ASYM);
    seen s = check_dir(a);
    assert_true(s.kinds[MK_SM_CT] > 0 && s.parts > 0);
    s = check_dir(b);
    assert_true(s.kinds[MK_SM_CT] > 0 && s.parts > 0);
    convert_to(b, c, NULL);
    s = check_dir(c);
    assert_true(s.kinds[MK_SM_MLX] > 0);
    assert_int_equal(s.parts, 3 * s.kinds[MK_SM_MLX]); /* weight, scales, biases */
    convert_to(mk_test_fixture("qwen3moe-a/bf16"), d, NULL);
    s = check_dir(d);
    assert_true(s.kinds[MK_SM_FLOAT] > 0 && s.parts > 0);
    struct mk_qjob *q = NULL;
    assert_int_equal(mk_qjob_new(&q), MK_OK);
    assert_int_equal(mk_qjob_set_default(q, MK_QMODE_MXFP4, 0, 0), MK_OK);
    convert_to(mk_test_fixture("qwen3moe-a/bf16"), f, q);
    mk_qjob_free(q);
    s = check_dir(f);
    assert_true(s.kinds[MK_SM_MLX] > 0);
    assert_int_equal(s.parts, 2 * s.kinds[MK_SM_MLX]); /* weight, scales: no biases */
    mk_test_rmrf(tmp);
    free(tmp);
}

/* ---- refusals ------------------------------------------------------------- */

static void expect_err(mk_status got, mk_status want, const char *a, const char *b) {
    if (got != want)
        fail_msg("status %d, expected %d (%s)", (int)got, (int)want, got == MK_OK ? "no error" : mk_err_msg());
    if (a && !strstr(mk_err_msg(), a))
        fail_msg("message lacks '%s': %s", a, mk_err_msg());
    if (b && !strstr(mk_err_msg(), b))
        fail_msg("message lacks '%s': %s", b, mk_err_msg());
}

static void test_refusals(void **st) {
    (void)st;
    const char *dir = mk_test_fixture("qwen3moe-odd/fp8");
    mk_ckpt *ck = NULL, *nomap = NULL;
    assert_int_equal(mk_ckpt_open(dir, 0, &ck), MK_OK);
    assert_int_equal(mk_ckpt_open(dir, MK_CKPT_NO_MMAP, &nomap), MK_OK);
    mk_config cfg;
    assert_int_equal(mk_config_load(dir, &cfg), MK_OK);
    int64_t H = cfg.hidden_size, I = cfg.moe_intermediate_size; /* 320, 192: blocks of 128 do not divide */
    const char *mod = "model.layers.0.mlp.experts.1.gate_proj";
    mk_smod sm;
    mk_sslice sl;
    mk_smod_expect x = {0, I, H};
    assert_int_equal(mk_smod_open(ck, &cfg, mod, "model.layers.0.mlp.experts.1.gate_proj.weight", &x, &sm),
                     MK_OK);
    assert_int_equal(sm.kind, MK_SM_FP8);
    /* rows outside the module, a negative expert, an expert of a 2-D module */
    expect_err(mk_smod_slice(&sm, 0, 0, I + 1, &sl), MK_E_ARG, "gate_proj.weight", "outside");
    expect_err(mk_smod_slice(&sm, -1, 0, I, &sl), MK_E_ARG, "expert -1", NULL);
    expect_err(mk_smod_slice(&sm, 1, 0, I, &sl), MK_E_ARG, "expert 1", NULL);
    /* FP8 rows starting inside a 128-row scale block cannot take a piece of the grid */
    expect_err(mk_smod_slice(&sm, 0, 64, 64, &sl), MK_E_UNSUPPORTED, "inside a 128-row scale block", NULL);
    assert_int_equal(mk_smod_slice(&sm, 0, 128, I - 128, &sl), MK_OK);
    /* the second block row of a [2, 3] grid, F32 scales */
    assert_int_equal(sl.part[MK_SP_SCALES].len, 3 * 4);
    assert_int_equal(sl.part[MK_SP_SCALES].off, sm.part[MK_SP_SCALES]->file_offset + 3 * 4);
    /* a view needs the mapping; the scale check does not */
    assert_int_equal(mk_smod_slice(&sm, 0, 0, I, &sl), MK_OK);
    mk_smod sm2;
    assert_int_equal(mk_smod_open(nomap, &cfg, mod, "model.layers.0.mlp.experts.1.gate_proj.weight", &x, &sm2),
                     MK_OK);
    mk_sslice sl2;
    assert_int_equal(mk_smod_slice(&sm2, 0, 0, I, &sl2), MK_OK);
    assert_int_equal(mk_smod_check_scales(nomap, &sl2), MK_OK);
    mk_wt w;
    expect_err(mk_smod_view(nomap, &sl2, &w), MK_E_INTERNAL, "not memory-mapped", NULL);
    assert_int_equal(mk_smod_view(ck, &sl, &w), MK_OK);
    /* a weight that is not there; a 2-D weight where a stack was expected */
    expect_err(mk_smod_open(ck, &cfg, "model.layers.0.mlp.experts.1.nope", "model.layers.0.mlp.experts.1.nope.weight",
                            &x, &sm), MK_E_FORMAT, "not found", "nope.weight");
    mk_smod_expect x3 = {4, I, H};
    expect_err(mk_smod_open(ck, &cfg, mod, "model.layers.0.mlp.experts.1.gate_proj.weight", &x3, &sm), MK_E_FORMAT,
               "expected [4, 192, 320]", NULL);
    mk_config_free(&cfg);
    mk_ckpt_close(nomap);
    mk_ckpt_close(ck);
}

/* A stacked INT4 tensor and a dtype that is no weight storage, built by hand. */
static void test_refusals_ct_and_dtype(void **st) {
    (void)st;
    char *tmp = mk_test_tmpdir("fmod-bad"), p[4200];
    static const char hdr[] =
        "{\"a.weight_packed\":{\"dtype\":\"I32\",\"shape\":[2,8,1],\"data_offsets\":[0,64]},"
        "\"a.weight_scale\":{\"dtype\":\"BF16\",\"shape\":[2,8,1],\"data_offsets\":[64,96]},"
        "\"b.weight\":{\"dtype\":\"I64\",\"shape\":[8,8],\"data_offsets\":[96,608]}}";
    unsigned char data[608] = {0};
    snprintf(p, sizeof p, "%s/model.safetensors", tmp);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    uint64_t n = sizeof hdr - 1;
    unsigned char lb[8];
    for (int i = 0; i < 8; i++)
        lb[i] = (unsigned char)(n >> (8 * i));
    assert_int_equal(fwrite(lb, 1, 8, f), 8);
    assert_int_equal(fwrite(hdr, 1, n, f), n);
    assert_int_equal(fwrite(data, 1, sizeof data, f), sizeof data);
    assert_int_equal(fclose(f), 0);
    mk_ckpt *ck = NULL;
    assert_int_equal(mk_ckpt_open(p, 0, &ck), MK_OK);
    mk_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.quant.method = MK_QM_CT;
    cfg.quant.ct_group_size = 8;
    cfg.quant.ct_symmetric = true;
    mk_smod sm;
    mk_smod_expect stacked = {2, 8, 8}, flat = {0, 8, 8};
    expect_err(mk_smod_open(ck, &cfg, "a", "a.weight", &stacked, &sm), MK_E_UNSUPPORTED, "a.weight_packed",
               "stacked INT4");
    expect_err(mk_smod_open(ck, &cfg, "b", "b.weight", &flat, &sm), MK_E_UNSUPPORTED, "b.weight",
               "not a supported weight storage");
    /* from the tensors alone: an I64 tensor is raw bytes, sliced by rows */
    assert_int_equal(mk_smod_infer(ck, NULL, "b.weight", &sm), MK_OK);
    assert_int_equal(sm.kind, MK_SM_RAW);
    mk_sslice sl;
    assert_int_equal(mk_smod_slice(&sm, 0, 2, 3, &sl), MK_OK);
    const mk_tensor_info *t = mk_ckpt_find(ck, "b.weight");
    expect_range(&sl.part[MK_SP_WEIGHT], t, t->file_offset + 2 * 64, 3 * 64);
    /* compressed-tensors is read through convert, not by name */
    expect_err(mk_smod_infer(ck, NULL, "a.weight", &sm), MK_E_UNSUPPORTED, "read through convert", NULL);
    mk_ckpt_close(ck);
    mk_test_rmrf(tmp);
    free(tmp);
}


/* ---- convert's resolution (mk_smod_resolve) -------------------------------- */

typedef struct tdef {
    const char *name, *dtype;
    int esize, ndim;
    int64_t shape[3];
} tdef;

/* Tensors for every refusal of mk_smod_resolve, zero-filled. */
static const tdef k_bad[] = {
    {"f.weight", "BF16", 2, 2, {4, 64}},          {"f.weight_scale_inv", "F32", 4, 2, {1, 1}},
    {"e.weight", "F8_E4M3", 1, 2, {4, 64}},       {"e.weight_scale", "BF16", 2, 2, {4, 1}},
    {"o.weight_scale_inv", "F32", 4, 1, {1}},     {"v.weight", "F8_E4M3", 1, 1, {64}},
    {"v.weight_scale_inv", "F32", 4, 1, {1}},     {"d.weight", "F8_E4M3", 1, 2, {4, 64}},
    {"d.weight_scale_inv", "I32", 4, 2, {1, 1}},  {"x.weight", "F8_E8M0", 1, 2, {4, 4}},
    {"m.weight", "U32", 4, 2, {4, 8}},            {"m.scales", "BF16", 2, 2, {4, 1}},
    {"l.weight", "U32", 4, 3, {2, 4, 8}},         {"l.scales", "BF16", 2, 3, {2, 3, 1}},
    {"c.weight_packed", "I32", 4, 2, {4, 8}},     {"g.weight_packed", "I32", 4, 2, {4, 8}},
    {"g.weight_scale", "BF16", 2, 2, {4, 2}},     {"g.weight_g_idx", "I32", 4, 1, {64}},
    {"s.weight_packed", "I32", 4, 2, {4, 8}},     {"s.weight_scale", "BF16", 2, 2, {4, 2}},
    {"s.weight_shape", "F32", 4, 1, {2}},         {"p.weight_packed", "I32", 4, 2, {4, 8}},
    {"p.weight_scale", "BF16", 2, 2, {4, 2}},     {"p.weight_shape", "I64", 8, 1, {2}},
    {"t.weight_packed", "I32", 4, 2, {4, 8}},     {"t.weight_scale", "BF16", 2, 2, {4, 3}},
    {"z.weight_packed", "I32", 4, 2, {4, 8}},     {"z.weight_scale", "BF16", 2, 2, {4, 2}},
    {"z.weight_zero_point", "I32", 4, 2, {4, 2}}, {"q.weight_scale", "BF16", 2, 2, {4, 4}},
    {"q.weight_packed", "I32", 4, 2, {4, 8}},
};

static mk_ckpt *bad_ckpt(const char *dir) {
    char hdr[8192], p[4200];
    size_t k = (size_t)snprintf(hdr, sizeof hdr, "{");
    uint64_t off = 0;
    for (size_t i = 0; i < sizeof k_bad / sizeof k_bad[0]; i++) {
        const tdef *t = &k_bad[i];
        uint64_t n = (uint64_t)t->esize;
        k += (size_t)snprintf(hdr + k, sizeof hdr - k, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "",
                              t->name, t->dtype);
        for (int d = 0; d < t->ndim; d++) {
            n *= (uint64_t)t->shape[d];
            k += (size_t)snprintf(hdr + k, sizeof hdr - k, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        }
        k += (size_t)snprintf(hdr + k, sizeof hdr - k, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                              (unsigned long long)(off + n));
        off += n;
    }
    snprintf(hdr + k, sizeof hdr - k, "}");
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    uint64_t hl = strlen(hdr);
    unsigned char lb[8];
    for (int i = 0; i < 8; i++)
        lb[i] = (unsigned char)(hl >> (8 * i));
    assert_int_equal(fwrite(lb, 1, 8, f), 8);
    assert_int_equal(fwrite(hdr, 1, hl, f), hl);
    for (uint64_t i = 0; i < off; i++)
        assert_int_equal(fputc(0, f), 0);
    assert_int_equal(fclose(f), 0);
    mk_ckpt *ck = NULL;
    assert_int_equal(mk_ckpt_open(p, 0, &ck), MK_OK);
    return ck;
}

/* Gather module `base`'s parts the way convert does (suffix roles). */
static mk_smod_parts parts_of(const mk_ckpt *ck, const char *base) {
    mk_smod_parts g;
    memset(&g, 0, sizeof g);
    for (size_t i = 0; i < mk_ckpt_count(ck); i++) {
        const mk_tensor_info *t = mk_ckpt_tensor(ck, i);
        mk_qsuffix q;
        mk_qrole r = mk_qview_suffix(t->name, &q);
        char b[600];
        snprintf(b, sizeof b, "%.*s%s", (int)q.stem, t->name, r == MK_QR_MAIN ? "" : q.logical);
        if (!strcmp(b, base))
            assert_int_equal(mk_smod_parts_add(&g, r, t, "DIR", base), MK_OK);
    }
    return g;
}

static void resolve_err(const mk_ckpt *ck, const mk_config *cfg, const char *base, mk_status want, const char *a,
                        const char *b) {
    mk_smod_parts g = parts_of(ck, base);
    mk_smod sm;
    expect_err(mk_smod_resolve(ck, cfg, "DIR", base, &g, &sm), want, a, b);
    if (!strstr(mk_err_msg(), "DIR"))
        fail_msg("message does not name the checkpoint: %s", mk_err_msg());
}

static void test_resolve_refusals(void **st) {
    (void)st;
    char *tmp = mk_test_tmpdir("fmod-res");
    mk_ckpt *ck = bad_ckpt(tmp);
    mk_config none, mlx, ct, ct16, ctz;
    memset(&none, 0, sizeof none);
    mlx = none;
    mlx.quant.method = MK_QM_MLX;
    mlx.quant.bits = 4;
    mlx.quant.group_size = 64;
    ct = none;
    ct.quant.method = MK_QM_CT;
    ct.quant.ct_n_groups = 1;
    snprintf(ct.quant.ct_format, sizeof ct.quant.ct_format, "pack-quantized");
    snprintf(ct.quant.ct_type, sizeof ct.quant.ct_type, "int");
    ct.quant.ct_bits = 4;
    ct.quant.ct_group_size = 32;
    ct.quant.ct_symmetric = true;
    ct16 = ct;
    ct16.quant.ct_group_size = 16;
    ctz = ct;
    ctz.quant.ct_symmetric = false;

    /* two tensors for one slot */
    mk_smod_parts g;
    memset(&g, 0, sizeof g);
    assert_int_equal(mk_smod_parts_add(&g, MK_QR_MAIN, mk_ckpt_find(ck, "f.weight"), "DIR", "f.weight"), MK_OK);
    expect_err(mk_smod_parts_add(&g, MK_QR_MAIN, mk_ckpt_find(ck, "e.weight"), "DIR", "f.weight"), MK_E_FORMAT,
               "'f.weight' and 'e.weight' both claim", NULL);
    resolve_err(ck, &none, "f.weight", MK_E_FORMAT, "'f.weight_scale_inv' looks like the scales of 'f.weight'", "BF16");
    resolve_err(ck, &none, "e.weight", MK_E_UNSUPPORTED, "per-tensor FP8 scales are not supported", NULL);
    resolve_err(ck, &none, "o.weight", MK_E_FORMAT, "'o.weight_scale_inv' is a companion of 'o.weight'", NULL);
    resolve_err(ck, &none, "v.weight", MK_E_FORMAT, "FP8 block weights need 2 or more dims", "[64]");
    resolve_err(ck, &none, "d.weight", MK_E_FORMAT, "scale dtype I32", NULL);
    resolve_err(ck, &none, "x.weight", MK_E_UNSUPPORTED, "F8_E8M0, which convert cannot decode", NULL);
    resolve_err(ck, &none, "m.weight", MK_E_FORMAT, "no quantization block for it", NULL);
    resolve_err(ck, &mlx, "m.weight", MK_E_FORMAT, "needs biases shaped like its scales [4,1]", NULL);
    resolve_err(ck, &mlx, "l.weight", MK_E_FORMAT, "[2,4,8] and scales [2,3,1] differ in leading dims", NULL);
    resolve_err(ck, &ct, "c.weight", MK_E_FORMAT, "'c.weight_packed' has no weight_scale beside it", NULL);
    resolve_err(ck, &ct, "g.weight", MK_E_UNSUPPORTED, "element 32 is group 0, expected 1", "activation-ordered");
    resolve_err(ck, &ct, "s.weight", MK_E_FORMAT, "'s.weight_shape' is F32 [2], expected 2 integers", NULL);
    resolve_err(ck, &ct, "p.weight", MK_E_FORMAT, "holds [0, 0], expected positive sizes", NULL);
    resolve_err(ck, &ct, "t.weight", MK_E_FORMAT, "[4,3]: expected [4,2] scales for group size 32", NULL);
    resolve_err(ck, &ctz, "z.weight", MK_E_FORMAT, "'z.weight_zero_point' is I32 [4,2], expected I32 [1,2]", NULL);
    resolve_err(ck, &ct16, "q.weight", MK_E_UNSUPPORTED, "INT4 group size 16; MLX supports 32, 64, 128", NULL);
    /* what resolves: a CT module's slice is its whole tensors */
    mk_smod_parts ok = parts_of(ck, "z.weight");
    ok.ctzp = NULL;
    mk_smod sm;
    assert_int_equal(mk_smod_resolve(ck, &ct, "DIR", "z.weight", &ok, &sm), MK_OK);
    assert_int_equal(sm.kind, MK_SM_CT);
    assert_int_equal(sm.R, 4);
    assert_int_equal(sm.cols, 64);
    mk_sslice sl;
    assert_int_equal(mk_smod_slice(&sm, 0, 0, 4, &sl), MK_OK);
    const mk_tensor_info *w = mk_ckpt_find(ck, "z.weight_packed"), *sc = mk_ckpt_find(ck, "z.weight_scale");
    expect_range(&sl.part[MK_SP_WEIGHT], w, w->file_offset, w->nbytes);
    expect_range(&sl.part[MK_SP_SCALES], sc, sc->file_offset, sc->nbytes);
    expect_err(mk_smod_slice(&sm, 0, 0, 2, &sl), MK_E_UNSUPPORTED, "stacked INT4", NULL);
    mk_ckpt_close(ck);
    mk_test_rmrf(tmp);
    free(tmp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hf_per_expert_bf16),
        cmocka_unit_test(test_hf_fused_bf16),
        cmocka_unit_test(test_fp8_partial_blocks),
        cmocka_unit_test(test_embedded_tiny),
        cmocka_unit_test(test_ct_int4_and_mlx_stacks),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_refusals_ct_and_dtype),
        cmocka_unit_test(test_resolve_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
