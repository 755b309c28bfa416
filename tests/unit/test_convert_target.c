/* Convert targets and the writer interface (src/convert/target.c,
 * writer.h, st_writer.c): the descriptor table says what each `--to`
 * writes (FORMATS.md 3: mlx-lm stacks experts into switch_mlp, stores
 * zero-centred norms as 1 + w and conv1d as (C, K, 1); transformers keeps
 * per-expert or fused experts, w and (C, 1, K)); the norm shift between
 * conventions; and the safetensors writer's order (transformers'
 * save_pretrained / safetensors: larger alignment first, then name), shard
 * names (model-0000k-of-0000n.safetensors), and one shard streamed through
 * begin / write / copy / finish and read back by the strict reader. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "convert/target.h"
#include "mk_test_util.h"
#include "moekit/st.h"

static void test_table(void **st) {
    (void)st;
    const cv_target *hf = cv_target_of(MK_CONV_HF), *mlx = cv_target_of(MK_CONV_MLX);
    assert_non_null(hf);
    assert_non_null(mlx);
    assert_null(cv_target_of((mk_conv_target)7));
    assert_string_equal(hf->name, "hf");
    assert_string_equal(mlx->name, "mlx");
    assert_int_equal(hf->naming, MK_NAMING_HF);
    assert_int_equal(mlx->naming, MK_NAMING_MLX);
    assert_int_equal(hf->norms, CV_NORMS_W);
    assert_int_equal(mlx->norms, CV_NORMS_1PW);
    assert_int_equal(hf->conv1d, CV_CONV1D_C1K);
    assert_int_equal(mlx->conv1d, CV_CONV1D_CK1);
    /* mlx-lm loads the text model only and keeps quantized modules */
    assert_false(hf->text_only);
    assert_true(mlx->text_only);
    assert_false(hf->keeps_quantized);
    assert_true(mlx->keeps_quantized);
    assert_false(hf->quantizes);
    assert_true(mlx->quantizes);
    assert_string_equal(hf->format_tag, "pt");
    assert_string_equal(mlx->format_tag, "mlx");
    assert_ptr_equal(hf->writer, &cv_writer_safetensors);
    assert_ptr_equal(mlx->writer, &cv_writer_safetensors);
    assert_non_null(hf->config_edit);
    assert_non_null(mlx->config_edit);
}

static void test_experts(void **st) {
    (void)st;
    mk_conv_opts o;
    mk_conv_opts_init(&o);
    const cv_target *hf = cv_target_of(MK_CONV_HF), *mlx = cv_target_of(MK_CONV_MLX);
    assert_int_equal(cv_target_experts(hf, &o), CV_XG_PER_EXPERT); /* the default */
    assert_int_equal(cv_target_experts(mlx, &o), CV_XG_SWITCH);
    o.experts = MK_CONV_FUSED;
    assert_int_equal(cv_target_experts(hf, &o), CV_XG_FUSED);
    assert_int_equal(cv_target_experts(mlx, &o), CV_XG_SWITCH); /* mlx-lm has one layout */
}

static void test_norm_shift(void **st) {
    (void)st;
    cv_src s;
    memset(&s, 0, sizeof s);
    s.zero_centred = true;
    cv_lt norm = {.cname = "model.layers.0.input_layernorm.weight", .cls = MK_PART_LM, .ndim = 1};
    cv_lt proj = {.cname = "model.layers.0.self_attn.q_proj.weight", .cls = MK_PART_LM, .ndim = 2};
    cv_lt vis = {.cname = "model.visual.blocks.0.norm1.weight", .cls = MK_PART_VISION, .ndim = 1};
    /* an HF source: +1 into MLX, nothing into HF */
    assert_int_equal(cv_src_norms(&s), CV_NORMS_W);
    assert_true(cv_norm_shift(&s, &norm, CV_NORMS_1PW) == 1.0f);
    assert_true(cv_norm_shift(&s, &norm, CV_NORMS_W) == 0.0f);
    assert_true(cv_norm_shift(&s, &proj, CV_NORMS_1PW) == 0.0f);
    assert_true(cv_norm_shift(&s, &vis, CV_NORMS_1PW) == 0.0f);
    /* an MLX source: -1 back into HF */
    s.is_mlx = true;
    assert_int_equal(cv_src_norms(&s), CV_NORMS_1PW);
    assert_true(cv_norm_shift(&s, &norm, CV_NORMS_W) == -1.0f);
    assert_true(cv_norm_shift(&s, &norm, CV_NORMS_1PW) == 0.0f);
    /* a family whose norms are not zero-centred is never shifted */
    s.zero_centred = false;
    assert_true(cv_norm_shift(&s, &norm, CV_NORMS_W) == 0.0f);
}

static void test_st_order_names(void **st) {
    (void)st;
    const cv_writer_ops *w = &cv_writer_safetensors;
    char *a = w->shard_file(0, 1), *b = w->shard_file(1, 3), *c = w->shard_file(11, 12);
    assert_string_equal(a, "model.safetensors");
    assert_string_equal(b, "model-00002-of-00003.safetensors");
    assert_string_equal(c, "model-00012-of-00012.safetensors");
    free(a);
    free(b);
    free(c);
    cv_out o[5];
    memset(o, 0, sizeof o);
    o[0] = (cv_out){.name = "a.weight", .dt = MK_DT_BF16};
    o[1] = (cv_out){.name = "z.weight", .dt = MK_DT_F32};
    o[2] = (cv_out){.name = "b.mask", .dt = MK_DT_U8};
    o[3] = (cv_out){.name = "m.weight", .dt = MK_DT_U32};
    o[4] = (cv_out){.name = "0.weight", .dt = MK_DT_BF16};
    qsort(o, 5, sizeof o[0], w->order);
    const char *want[5] = {"m.weight", "z.weight", "0.weight", "a.weight", "b.mask"};
    for (int i = 0; i < 5; i++)
        assert_string_equal(o[i].name, want[i]);
}

/* One shard of two tensors, the second supplied by copy from a file. */
static void test_st_stream(void **st) {
    (void)st;
    char *dir = mk_test_tmpdir("convtgt");
    assert_non_null(dir);
    const cv_writer_ops *wo = &cv_writer_safetensors;
    cv_out outs[2];
    memset(outs, 0, sizeof outs);
    outs[0] = (cv_out){.name = "x.weight", .dt = MK_DT_F32, .ndim = 1, .shape = {3}, .nbytes = 12};
    outs[1] = (cv_out){.name = "y.weight", .dt = MK_DT_BF16, .ndim = 2, .shape = {2, 2}, .nbytes = 8};
    size_t first[2] = {0, 2};
    cv_plan p;
    memset(&p, 0, sizeof p);
    p.outs = outs;
    p.nouts = 2;
    p.nshards = 1;
    p.shard_first = first;
    float xv[3] = {1.0f, -2.5f, 3.25f};
    uint16_t yv[4] = {0x3f80, 0xc000, 0x4040, 0x0000};
    char src[1200];
    snprintf(src, sizeof src, "%s/src.bin", dir);
    unsigned char pre[5] = {9, 9, 9, 9, 9}, buf[13];
    memcpy(buf, pre, 5);
    memcpy(buf + 5, yv, 8);
    assert_int_equal(mk_test_write(src, buf, 13), 0);
    int fd = open(src, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    cv_writer *w = NULL;
    assert_int_equal(wo->begin(dir, &p, 0, "mlx", &w), MK_OK);
    assert_non_null(w);
    assert_true(wo->fd(w) >= 0);
    assert_int_equal(wo->write(w, xv, 4), MK_OK); /* chunks of any size */
    assert_int_equal(wo->write(w, (const unsigned char *)xv + 4, 8), MK_OK);
    assert_int_equal(wo->copy(w, fd, 5, 8), MK_OK);
    assert_int_equal(wo->finish(w), MK_OK);
    wo->free(w);
    close(fd);
    unlink(src);
    assert_int_equal(wo->index(&p, dir), MK_OK); /* one shard: no index */
    char idx[1200];
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
    assert_int_equal(access(idx, F_OK), -1);
    mk_ckpt *ck = NULL;
    assert_int_equal(mk_ckpt_open(dir, MK_CKPT_NO_MMAP, &ck), MK_OK);
    const char *meta = mk_ckpt_metadata_json(ck, 0);
    assert_non_null(meta);
    assert_non_null(strstr(meta, "\"format\""));
    assert_non_null(strstr(meta, "\"mlx\""));
    const mk_tensor_info *tx = mk_ckpt_find(ck, "x.weight"), *ty = mk_ckpt_find(ck, "y.weight");
    assert_non_null(tx);
    assert_non_null(ty);
    assert_int_equal(tx->dtype, MK_DT_F32);
    assert_int_equal(ty->dtype, MK_DT_BF16);
    float rx[3];
    uint16_t ry[4];
    assert_int_equal(mk_ckpt_read(ck, tx, 0, rx, sizeof rx), MK_OK);
    assert_int_equal(mk_ckpt_read(ck, ty, 0, ry, sizeof ry), MK_OK);
    assert_memory_equal(rx, xv, sizeof xv);
    assert_memory_equal(ry, yv, sizeof yv);
    mk_ckpt_close(ck);
    /* a plan whose order is not the writer's is refused, naming both */
    cv_out swapped[2] = {outs[1], outs[0]};
    p.outs = swapped;
    char dir2[1200];
    snprintf(dir2, sizeof dir2, "%s/b", dir);
    w = NULL;
    assert_int_equal(wo->begin(dir2, &p, 0, "pt", &w), MK_E_INTERNAL);
    assert_null(w);
    assert_non_null(strstr(mk_err_msg(), "differs from plan order"));
    mk_test_rmrf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table), cmocka_unit_test(test_experts), cmocka_unit_test(test_norm_shift),
        cmocka_unit_test(test_st_order_names), cmocka_unit_test(test_st_stream)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
