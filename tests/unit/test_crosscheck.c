/* --verify's layer-by-layer comparison (src/engine/crosscheck.c): the CPU
 * backend against itself agrees exactly at every stage; a backend that is
 * the CPU one with a planted fault (one MoE combine output perturbed, in a
 * chosen layer) is named at exactly that layer, not earlier, and shows at
 * the logits. This is the test that would have caught a fast-and-wrong GPU
 * pipeline; the CUDA backend runs through the same function on the device. */
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
static int g_calls, g_target;

static void faulty_combine(void *ctx, float *y, const float *x, const float *w, const int32_t *order,
                           int64_t n, int k, int64_t dim) {
    g_combine(ctx, y, x, w, order, n, k, dim);
    if (g_calls++ == g_target)
        y[dim / 2] += 0.5f; /* one value of one token, in one layer */
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
    mk_xcheck_free(&x);
    /* the faulty backend: the CPU table and context, combine perturbed in layer `target` */
    g_faulty = *mk_backend_iface(same);
    g_faulty.name = "faulty";
    g_faulty.free = NULL; /* the context stays the CPU backend's */
    g_combine = g_faulty.combine;
    g_faulty.combine = faulty_combine;
    mk_backend *bad = NULL;
    assert_int_equal(mk_backend_create(&g_faulty, mk_backend_ctx(same), &bad), MK_OK);
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
        mk_xcheck_free(&x);
    }
    mk_backend_free(bad);
    mk_backend_free(same);
    mk_backend_free(cpu);
    mk_model_free(m);
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
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_crosscheck), cmocka_unit_test(test_reference_float)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
