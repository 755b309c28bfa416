/* Cross-layout verify (src/verify/xverify.c): the pure rules it is built
 * on (unit order, flat shapes, differences with NaN/Inf, the verdict) and
 * the callback contract of mk_conv_xverify on a real fixture pair
 * (per-expert vs fused: every unit identical, reported once, in order; a
 * callback error stops the run and is returned). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/conv_impl.h"
#include "mk_test_util.h"

static void test_natcmp(void **st) {
    (void)st;
    assert_true(cv_natcmp("model.layers.2.mlp", "model.layers.10.mlp") < 0);
    assert_true(cv_natcmp("model.layers.10.mlp", "model.layers.2.mlp") > 0);
    assert_true(cv_natcmp("experts.9.up_proj", "experts.17.down_proj") < 0);
    assert_true(cv_natcmp("a.1.x", "a.1.y") < 0);
    assert_int_equal(cv_natcmp("a.12.b", "a.12.b"), 0);
    /* equal by value, different spelling: still ordered, never 0 */
    assert_true(cv_natcmp("a.01", "a.1") != 0);
    assert_true(cv_natcmp("a.01", "a.1") == -cv_natcmp("a.1", "a.01"));
    assert_true(cv_natcmp("a", "a.0") < 0);
    assert_true(cv_natcmp("lm_head.weight", "model.embed_tokens.weight") < 0);
}

static void test_flat_shapes(void **st) {
    (void)st;
    int64_t hf[3] = {12, 1, 4}, mlx[3] = {12, 4, 1}, other[3] = {4, 1, 12}, two[2] = {12, 4};
    assert_true(cv_shape_flat_eq(3, hf, 3, mlx)); /* conv1d (C,1,K) vs (C,K,1) */
    assert_true(cv_shape_flat_eq(3, hf, 2, two));
    assert_false(cv_shape_flat_eq(3, hf, 3, other));
    assert_false(cv_shape_flat_eq(2, two, 1, two));
    int64_t one[1] = {1};
    assert_true(cv_shape_flat_eq(0, NULL, 1, one)); /* scalar vs [1] */
    int64_t z[2] = {0, 4}, z2[2] = {4, 0};
    assert_false(cv_shape_flat_eq(2, z, 2, z2));
}

static void test_diff(void **st) {
    (void)st;
    float a[6] = {1, 2, NAN, INFINITY, 3, 0}, b[6] = {1, 2, NAN, INFINITY, 4, 0};
    mk_diff d = {0};
    mk_diff_add(&d, a, b, 6);
    assert_int_equal(d.bad, 0); /* NaN with NaN, Inf with Inf: matching */
    assert_true(fabs(d.max_abs - 1.0) < 1e-12);
    assert_true(fabs(d.err2 - 1.0) < 1e-12);
    assert_true(fabs(d.ref2 - (1 + 4 + 9)) < 1e-12);
    assert_true(fabs(mk_diff_rel(&d) - sqrt(1.0 / 14)) < 1e-12);
    /* NaN on one side only, Inf against a number: mismatches at any tolerance */
    float c[3] = {NAN, 1, INFINITY}, e[3] = {1, NAN, 5};
    mk_diff m = {0};
    mk_diff_add(&m, c, e, 3);
    assert_int_equal(m.bad, 3);
    assert_int_equal(cv_xv_judge(false, true, &m, 1e9), MK_XV_DIFFERS);
    /* merging chunks = one pass over all of it */
    mk_diff p = {0}, q = {0}, all = {0};
    mk_diff_add(&p, a, b, 3);
    mk_diff_add(&q, a + 3, b + 3, 3);
    mk_diff_merge(&p, &q);
    mk_diff_add(&all, a, b, 6);
    assert_true(p.err2 == all.err2 && p.ref2 == all.ref2 && p.max_abs == all.max_abs && p.bad == all.bad);
    /* all zeros: rel 0; reference 0 with an error: +inf */
    mk_diff zero = {0}, inf = {.err2 = 1};
    assert_true(mk_diff_rel(&zero) == 0.0);
    assert_true(isinf(mk_diff_rel(&inf)));
}

static void test_judge(void **st) {
    (void)st;
    mk_diff d = {.err2 = 1e-4, .ref2 = 1.0, .max_abs = 0.01};
    assert_int_equal(cv_xv_judge(true, true, &d, 0), MK_XV_IDENTICAL);
    assert_int_equal(cv_xv_judge(false, true, &d, 0), MK_XV_DIFFERS); /* rel 0.01 > 0 */
    assert_int_equal(cv_xv_judge(false, true, &d, 0.01), MK_XV_WITHIN_TOL);
    assert_int_equal(cv_xv_judge(false, true, &d, 0.009), MK_XV_DIFFERS);
    mk_diff same = {.ref2 = 1.0}; /* bytes differ, values equal (signed zero): rel 0 */
    assert_int_equal(cv_xv_judge(false, true, &same, 0), MK_XV_WITHIN_TOL);
    assert_int_equal(cv_xv_judge(false, false, &same, 1), MK_XV_DIFFERS); /* integers: bytes only */
    assert_string_equal(mk_xverify_result_name(MK_XV_ONLY_B), "only in B");
    assert_string_equal(mk_xverify_skip_name(MK_XV_SKIP_VISION), "vision");
}

typedef struct seen {
    int n, experts, not_identical, out_of_order, stop_at;
    char last[256];
} seen;

static mk_status on_unit(void *ctx, const mk_xverify_unit *u) {
    seen *s = ctx;
    if (s->last[0] && cv_natcmp(s->last, u->name) >= 0)
        s->out_of_order++;
    snprintf(s->last, sizeof s->last, "%s", u->name);
    s->n++;
    s->experts += u->expert;
    s->not_identical += u->result != MK_XV_IDENTICAL || !u->a.tensor || !u->b.tensor;
    if (s->stop_at && s->n == s->stop_at)
        return mk_err(MK_E_ARG, "stop here");
    return MK_OK;
}

static void test_fixture_pair(void **st) {
    (void)st;
    char a[1024], b[1024];
    snprintf(a, sizeof a, "%s", mk_test_fixture("qwen35moe-vl/bf16"));
    snprintf(b, sizeof b, "%s", mk_test_fixture("qwen35moe-vl/bf16-fused"));
    mk_xverify_opts o;
    mk_xverify_opts_init(&o);
    o.threads = 2;
    seen s = {0};
    mk_xverify_summary sum;
    assert_int_equal(mk_conv_xverify(a, b, &o, on_unit, &s, &sum), MK_OK);
    assert_true(sum.pass);
    assert_int_equal(s.n, (int)sum.compared);
    assert_int_equal(s.experts, 4 * 8 * 3); /* 4 layers x 8 experts x gate/up/down */
    assert_int_equal((int)sum.experts_compared, s.experts);
    assert_int_equal(s.not_identical, 0);
    assert_int_equal(s.out_of_order, 0);
    /* the callback's error stops the run and comes back */
    seen stop = {.stop_at = 5};
    assert_int_equal(mk_conv_xverify(a, b, &o, on_unit, &stop, NULL), MK_E_ARG);
    assert_int_equal(stop.n, 5);
    assert_string_equal(mk_err_msg(), "stop here");
    /* a lone file is not a checkpoint directory */
    char f[1100];
    snprintf(f, sizeof f, "%s/model.safetensors", b);
    assert_int_equal(mk_conv_xverify(a, f, &o, NULL, NULL, NULL), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "(B)"));
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_natcmp), cmocka_unit_test(test_flat_shapes),
                                       cmocka_unit_test(test_diff), cmocka_unit_test(test_judge),
                                       cmocka_unit_test(test_fixture_pair)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
