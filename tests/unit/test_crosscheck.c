/* --verify's layer-by-layer comparison (src/engine/crosscheck.c): the CPU
 * backend against itself agrees exactly at every stage; a backend that is
 * the CPU one with a planted fault (one MoE combine output perturbed, in a
 * chosen layer) is named at exactly that layer, not earlier, and shows at
 * the logits; inside that layer the step named is the routed experts'
 * combine, every step before it agreeing exactly. Faults planted in the
 * attention and Gated DeltaNet slots are named as those steps. This is the
 * test that would have caught a fast-and-wrong GPU pipeline; the CUDA
 * backend runs through the same function on the device. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"
#include "moekit/crosscheck.h"
#include "moekit/kernels.h"

static mk_backend_i g_faulty;                  /* the CPU table with combine replaced */
static void (*g_combine)(void *, float *, const float *, const float *, const int32_t *, int64_t, int,
                         int64_t);
static int g_calls, g_target, g_per_run; /* the fault: call g_target of each run's g_per_run */

static bool fault_now(void) { return g_calls++ % g_per_run == g_target; }

static void faulty_combine(void *ctx, float *y, const float *x, const float *w, const int32_t *order,
                           int64_t n, int k, int64_t dim) {
    g_combine(ctx, y, x, w, order, n, k, dim);
    if (fault_now())
        y[dim / 2] += 0.5f; /* one value of one token, in one layer */
}

/* The steps of layer x->layer up to the first beyond the tolerance agree
 * exactly, and that one is `want`. */
static void check_ops(const mk_xcheck *x, int layer, const char *want) {
    assert_int_equal(x->layer, layer);
    assert_true(x->ops > 0);
    assert_true(x->first_bad_op >= 0);
    printf("    layer %d, %d steps:", layer, x->ops);
    for (int i = 0; i < x->ops; i++)
        printf(" %s %.3g%s", x->op[i], x->op_rel[i], i + 1 < x->ops ? "," : "\n");
    assert_string_equal(x->op[x->first_bad_op], want);
    for (int i = 0; i < x->first_bad_op; i++)
        assert_true(x->op_rel[i] == 0.0);
    assert_true(x->op_rel[x->first_bad_op] > 1e-6);
    assert_string_equal(x->op[0], "input norm");
}

static void test_crosscheck(void **st) {
    (void)st;
    mk_model *m = NULL;
    assert_int_equal(mk_model_open(mk_test_fixture("tiny-qwen35moe/bf16"), &m), MK_OK);
    const mk_config *c = mk_model_config(m);
    int32_t ids[24];
    for (int i = 0; i < 24; i++)
        ids[i] = (int32_t)((i * 131 + 7) % c->vocab_size);
    mk_engine_opts o = {.threads = 1, .max_ctx = 24};
    mk_backend *cpu = NULL, *same = NULL;
    assert_int_equal(mk_backend_cpu_create(NULL, &cpu), MK_OK);
    assert_int_equal(mk_backend_cpu_create(NULL, &same), MK_OK);
    mk_xcheck x;
    assert_int_equal(mk_xcheck_run(m, cpu, same, &o, ids, 24, 1e-6, &x), MK_OK);
    assert_int_equal(x.stages, c->num_layers + 2);
    assert_int_equal(x.first_bad, -1);
    for (int i = 0; i < x.stages; i++)
        assert_true(x.rel[i] == 0.0);
    assert_int_equal(x.argmax_diff, 0);
    assert_int_equal(x.ops, 0); /* no layer diverged: no step pass */
    assert_int_equal(x.layer, -1);
    mk_xcheck_free(&x);
    /* the faulty backend: the CPU table and context, combine perturbed in layer `target` */
    g_faulty = *mk_backend_iface(same);
    g_faulty.name = "faulty";
    g_faulty.free = NULL; /* the context stays the CPU backend's */
    g_combine = g_faulty.combine;
    g_faulty.combine = faulty_combine;
    mk_backend *bad = NULL;
    assert_int_equal(mk_backend_create(&g_faulty, mk_backend_ctx(same), &bad), MK_OK);
    g_per_run = c->num_layers;
    for (g_target = 0; g_target < c->num_layers; g_target++) { /* every layer is MoE: one combine each */
        g_calls = 0;
        assert_int_equal(mk_xcheck_run(m, cpu, bad, &o, ids, 24, 1e-6, &x), MK_OK);
        char name[64];
        printf("  fault in layer %d: first stage over 1e-6 is %s (rel %.3g), logits rel %.3g\n", g_target,
               x.first_bad >= 0 ? mk_xcheck_stage_name(&x, x.first_bad, name, sizeof name) : "none",
               x.first_bad >= 0 ? x.rel[x.first_bad] : 0.0, x.rel[x.stages - 1]);
        assert_int_equal(x.first_bad, g_target + 1); /* stage i+1 is layer i's output */
        for (int i = 0; i <= g_target; i++)
            assert_true(x.rel[i] == 0.0);
        assert_true(x.rel[x.stages - 1] > 1e-6);
        check_ops(&x, g_target, "routed experts");
        mk_xcheck_free(&x);
    }
    mk_backend_free(bad);
    mk_backend_free(same);
    mk_backend_free(cpu);
    mk_model_free(m);
}

/* A fault in the attention slot of the t-th full-attention layer, or in
 * the gdn slot of the t-th Gated DeltaNet layer, is named as that step of
 * that layer. */
static void (*g_attention)(void *, const mk_attn_args *);
static void (*g_gdn)(void *, const mk_gdn_args *);

static void faulty_attention(void *ctx, const mk_attn_args *a) {
    g_attention(ctx, a);
    if (fault_now())
        a->out[a->dv + 1] -= 0.25f;
}

static void faulty_gdn(void *ctx, const mk_gdn_args *a) {
    g_gdn(ctx, a);
    if (fault_now())
        a->out[3] += 0.25f;
}

/* Faults in `fixture`'s attention slot (want_attn names the step) and,
 * when it has Gated DeltaNet layers, in its gdn slot, one layer at a time. */
static void op_named(const char *fixture, const char *want_attn) {
    mk_model *m = NULL;
    assert_int_equal(mk_model_open(mk_test_fixture(fixture), &m), MK_OK);
    const mk_config *c = mk_model_config(m);
    int32_t ids[20];
    for (int i = 0; i < 20; i++)
        ids[i] = (int32_t)((i * 37 + 11) % c->vocab_size);
    mk_engine_opts o = {.threads = 1, .max_ctx = 20, .prefill_chunk = 8}; /* three chunks a run */
    mk_backend *cpu = NULL, *same = NULL, *bad = NULL;
    assert_int_equal(mk_backend_cpu_create(NULL, &cpu), MK_OK);
    assert_int_equal(mk_backend_cpu_create(NULL, &same), MK_OK);
    g_faulty = *mk_backend_iface(same);
    g_faulty.name = "faulty";
    g_faulty.free = NULL;
    g_attention = g_faulty.attention;
    g_gdn = g_faulty.gdn;
    assert_int_equal(mk_backend_create(&g_faulty, mk_backend_ctx(same), &bad), MK_OK);
    int full[8], lin[8], nf = 0, nl = 0;
    for (int l = 0; l < c->num_layers && l < 8; l++) {
        if (c->layer_is_full && !mk_config_layer_is_full_attn(c, l))
            lin[nl++] = l;
        else
            full[nf++] = l;
    }
    assert_true(nf > 0);
    for (int kind = 0; kind < 2; kind++) {
        /* one kind faulty at a time: the other slot passes through */
        g_faulty.attention = kind == 0 ? faulty_attention : g_attention;
        g_faulty.gdn = kind == 1 ? faulty_gdn : g_gdn;
        int nk = kind == 0 ? nf : nl;
        g_per_run = nk * 3; /* one call per layer of the kind per chunk */
        for (g_target = 0; g_target < nk; g_target++) {
            g_calls = 0;
            int layer = kind == 0 ? full[g_target] : lin[g_target];
            mk_xcheck x;
            assert_int_equal(mk_xcheck_run(m, cpu, bad, &o, ids, 20, 1e-6, &x), MK_OK);
            assert_int_equal(x.first_bad, layer + 1);
            check_ops(&x, layer, kind == 0 ? want_attn : "gated delta rule");
            mk_xcheck_free(&x);
        }
    }
    mk_backend_free(bad);
    mk_backend_free(same);
    mk_backend_free(cpu);
    mk_model_free(m);
}

static void test_op_named(void **st) {
    (void)st;
    op_named("tiny-qwen35moe/bf16", "attention"); /* hybrid: gated attention and Gated DeltaNet */
    op_named("qwen3moe-a/bf16", "attention");
    op_named("deepseekv3-a/bf16", "attention (values per head)"); /* MLA; a dense first layer */
}

/* The reference run computes on float activations whatever the process
 * setting (the CPU's int8 activations would be measured as the device's
 * divergence), and the setting is put back after it: every matmul of the
 * reference backend sees mk_kernels_int8() false, every one of the backend
 * under test sees the forced value, before and after. */
static mk_backend_i g_probe_ref, g_probe_test;
static void (*g_matmul)(void *, const mk_wt *, const float *, int64_t, float *);
static int g_ref_int8, g_ref_calls, g_test_float, g_test_calls;

static void ref_matmul(void *ctx, const mk_wt *w, const float *x, int64_t n, float *y) {
    g_ref_calls++;
    g_ref_int8 += mk_kernels_int8() || mk_kernels_prefill_int8();
    g_matmul(ctx, w, x, n, y);
}

static void test_matmul(void *ctx, const mk_wt *w, const float *x, int64_t n, float *y) {
    g_test_calls++;
    g_test_float += !mk_kernels_int8() || !mk_kernels_prefill_int8();
    g_matmul(ctx, w, x, n, y);
}

static void test_reference_float(void **st) {
    (void)st;
    mk_model *m = NULL;
    assert_int_equal(mk_model_open(mk_test_fixture("tiny-qwen35moe/bf16"), &m), MK_OK);
    int32_t ids[6] = {1, 5, 9, 2, 7, 3};
    mk_engine_opts o = {.threads = 1, .max_ctx = 6};
    mk_backend *a = NULL, *b = NULL, *ra = NULL, *rb = NULL;
    assert_int_equal(mk_backend_cpu_create(NULL, &a), MK_OK);
    assert_int_equal(mk_backend_cpu_create(NULL, &b), MK_OK);
    g_probe_ref = *mk_backend_iface(a);
    g_probe_ref.free = NULL; /* the contexts stay the CPU backends' */
    g_matmul = g_probe_ref.matmul;
    g_probe_ref.matmul = ref_matmul;
    g_probe_test = *mk_backend_iface(b);
    g_probe_test.free = NULL;
    g_probe_test.matmul = test_matmul;
    assert_int_equal(mk_backend_create(&g_probe_ref, mk_backend_ctx(a), &ra), MK_OK);
    assert_int_equal(mk_backend_create(&g_probe_test, mk_backend_ctx(b), &rb), MK_OK);
    mk_kernels_set_int8(true);
    mk_kernels_set_prefill_int8(true);
    mk_xcheck x;
    assert_int_equal(mk_xcheck_run(m, ra, rb, &o, ids, 6, 1e-3, &x), MK_OK);
    mk_xcheck_free(&x);
    printf("  reference: %d matmuls, %d on int8 activations; under test: %d matmuls, %d on float\n", g_ref_calls,
           g_ref_int8, g_test_calls, g_test_float);
    assert_true(g_ref_calls > 0 && g_test_calls > 0);
    assert_int_equal(g_ref_int8, 0);
    assert_int_equal(g_test_float, 0);
    assert_int_equal(mk_kernels_int8_setting(), 1); /* put back */
    assert_int_equal(mk_kernels_prefill_int8_setting(), 1);
    mk_kernels_reset_int8();
    mk_kernels_reset_prefill_int8();
    assert_int_equal(mk_xcheck_run(m, ra, rb, &o, ids, 6, 1e-3, &x), MK_OK);
    mk_xcheck_free(&x);
    assert_int_equal(mk_kernels_int8_setting(), -1); /* the defaults put back as the defaults */
    assert_int_equal(mk_kernels_prefill_int8_setting(), -1);
    mk_backend_free(ra);
    mk_backend_free(rb);
    mk_backend_free(a);
    mk_backend_free(b);
    mk_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_crosscheck), cmocka_unit_test(test_op_named),
                                       cmocka_unit_test(test_reference_float)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
