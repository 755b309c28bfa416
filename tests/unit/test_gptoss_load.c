/* gpt_oss checkpoints that cannot be right are refused when loading, with
 * one error naming the tensor and what was expected vs found (exit 2),
 * never a crash or a silently wrong model: each case copies the headers of
 * a gptoss-a variant (zero data) with one tensor changed (shape, dtype, or
 * left out) and opens it with the engine's loader. The unchanged copy opens:
 * the cases fail only for the change they make. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"
#include "moekit/model.h"
#include "moekit/st.h"

typedef struct change {
    const char *name;     /* tensor to change */
    bool drop;            /* leave it out */
    mk_dtype dt;          /* MK_DT_COUNT: keep */
    int64_t last;         /* > 0: new size of its last dimension */
    const char *named;    /* what the message must name, when not `name` itself */
} change;

/* DST: SRC's config and every tensor of SRC's (zeros), `c` applied. */
static void copy_changed(const char *src, const char *dst, const change *c) {
    assert_true(strlen(src) < 4000 && strlen(dst) < 4000);
    mk_ckpt *ck = NULL;
    if (mk_ckpt_open(src, 0, &ck) != MK_OK)
        fail_msg("open %s: %s", src, mk_err_msg());
    mk_stw *w = NULL;
    mk_stw_opts o = {.force = true};
    assert_int_equal(mk_stw_create(dst, &o, &w), MK_OK);
    for (size_t i = 0; i < mk_ckpt_count(ck); i++) {
        const mk_tensor_info *t = mk_ckpt_tensor(ck, i);
        int64_t shape[MK_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        mk_dtype dt = t->dtype;
        if (c && !strcmp(t->name, c->name)) {
            if (c->drop)
                continue;
            if (c->dt != MK_DT_COUNT)
                dt = c->dt;
            if (c->last > 0)
                shape[t->ndim - 1] = c->last;
        }
        assert_int_equal(mk_stw_add(w, t->name, dt, t->ndim, shape), MK_OK);
    }
    assert_int_equal(mk_stw_begin_data(w), MK_OK);
    for (size_t i = 0; i < mk_stw_count(w); i++) {
        const mk_tensor_info *t = mk_stw_info(w, i);
        void *z = calloc(1, t->nbytes + 1);
        assert_non_null(z);
        assert_int_equal(mk_stw_write(w, z, t->nbytes), MK_OK);
        free(z);
    }
    assert_int_equal(mk_stw_finish(w), MK_OK);
    mk_stw_free(w);
    mk_ckpt_close(ck);
    char from[4200], to[4200];
    snprintf(from, sizeof from, "%s/config.json", src);
    snprintf(to, sizeof to, "%s/config.json", dst);
    size_t n = 0;
    void *cfg = mk_test_slurp(from, &n);
    assert_non_null(cfg);
    assert_int_equal(mk_test_write(to, cfg, n), 0);
    free(cfg);
}

/* Opening the changed copy fails with MK_E_FORMAT naming `want` (and the
 * tensor); c == NULL: it opens. */
static void expect_open(const char *variant, const change *c, const char *want) {
    /* the fixture first: without it the test skips here, before it has
     * made a directory */
    char src[4096];
    snprintf(src, sizeof src, "%s", mk_test_fixture(variant));
    char *d = mk_test_tmpdir("gptoss-load");
    char dst[4096];
    snprintf(dst, sizeof dst, "%s/m", d);
    copy_changed(src, dst, c);
    mk_model *m = NULL;
    mk_status st = mk_model_open(dst, &m);
    if (!c) {
        if (st != MK_OK)
            fail_msg("%s unchanged: %s", variant, mk_err_msg());
        mk_model_free(m);
    } else {
        printf("  %s, %s%s: %s\n", variant, c->name, c->drop ? " left out" : " changed", mk_err_msg());
        assert_int_equal(st, MK_E_FORMAT);
        assert_null(m);
        assert_non_null(strstr(mk_err_msg(), c->named ? c->named : c->name));
        assert_non_null(strstr(mk_err_msg(), want));
        assert_int_equal(mk_status_exit_code(st), 2);
    }
    mk_test_rmrf(d);
    free(d);
}

static void test_mxfp4(void **st) {
    (void)st;
    const char *v = "gptoss-a/mxfp4";
    expect_open(v, NULL, NULL);
    change scales = {"model.layers.1.mlp.experts.gate_up_proj_scales", false, MK_DT_COUNT, 7, NULL};
    expect_open(v, &scales, "expected [8, 256, 8] U8, found [8, 256, 7] U8");
    change blocks = {"model.layers.2.mlp.experts.down_proj_blocks", false, MK_DT_I8, 0, NULL};
    expect_open(v, &blocks, "expected [8, 256, 4, 16] U8, found [8, 256, 4, 16] I8");
    change bias = {"model.layers.3.mlp.experts.down_proj_bias", true, MK_DT_COUNT, 0, NULL};
    expect_open(v, &bias, "not found");
    change gone = {"model.layers.0.mlp.experts.gate_up_proj_blocks", true, MK_DT_COUNT, 0,
                   "model.layers.0.mlp.experts.gate_up_proj[_blocks]"};
    expect_open(v, &gone, "no routed experts found");
}

static void test_float(void **st) {
    (void)st;
    const char *v = "gptoss-a/bf16";
    expect_open(v, NULL, NULL);
    change gu = {"model.layers.0.mlp.experts.gate_up_proj", false, MK_DT_COUNT, 255, NULL};
    expect_open(v, &gu, "expected [8, 256, 256] BF16, F16 or F32 (experts, in, out)");
    change dn = {"model.layers.1.mlp.experts.down_proj", false, MK_DT_I8, 0, NULL};
    expect_open(v, &dn, "found [8, 128, 256] I8");
    change sinks = {"model.layers.2.self_attn.sinks", false, MK_DT_COUNT, 3, NULL};
    expect_open(v, &sinks, "expected 4 elements");
    change rb = {"model.layers.3.mlp.router.bias", true, MK_DT_COUNT, 0, NULL};
    expect_open(v, &rb, "not found");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mxfp4),
        cmocka_unit_test(test_float),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
