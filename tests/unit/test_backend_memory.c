/* Backend memory discipline: the engine hands the data slots (copy, gather,
 * scatter, swiglu, clamped_swiglu, attention, sigmoid_mul, axpy, combine,
 * gated_add) only memory it got
 * from the backend's alloc. A device backend faults on a host pointer there
 * (glm4_moe's attention biases went from the model straight into copy and
 * were an illegal address on the H200), and CI has no GPU: this test runs
 * the engine on the CPU backend with alloc recording every buffer and those
 * slots checking that each pointer lies in one, on every fixture family,
 * prefill, decode and a batched decode step over three sequences (the CPU
 * results do not change: the table is the CPU one). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"
#include "moekit/backend.h"
#include "moekit/engine.h"
#include "moekit/model.h"

static mk_backend_i g_strict, g_cpu; /* the CPU table, alloc and the data slots wrapped */
typedef struct span {
    uintptr_t lo, hi;
} span;
static span g_buf[64];
static int g_nbuf, g_bad;
static char g_first[160];

static void check(const void *p, const char *slot, const char *arg) {
    if (!p)
        return;
    uintptr_t a = (uintptr_t)p;
    for (int i = 0; i < g_nbuf; i++)
        if (a >= g_buf[i].lo && a < g_buf[i].hi)
            return;
    if (!g_bad++)
        snprintf(g_first, sizeof g_first, "%s: %s is not backend memory", slot, arg);
}

static mk_status s_alloc(void *ctx, size_t bytes, void **out) {
    mk_status st = g_cpu.alloc(ctx, bytes, out);
    if (st == MK_OK && g_nbuf < 64)
        g_buf[g_nbuf++] = (span){(uintptr_t)*out, (uintptr_t)*out + bytes};
    return st;
}

static void s_copy(void *ctx, float *dst, int64_t ds0, int64_t ds1, const float *src, int64_t ss0, int64_t ss1,
                   int64_t n0, int64_t n1, int64_t width) {
    check(dst, "copy", "dst");
    check(src, "copy", "src");
    g_cpu.copy(ctx, dst, ds0, ds1, src, ss0, ss1, n0, n1, width);
}
static void s_gather(void *ctx, float *dst, const float *src, const int32_t *rows, int64_t m, int64_t dim) {
    check(dst, "gather", "dst"), check(src, "gather", "src"), check(rows, "gather", "rows");
    g_cpu.gather(ctx, dst, src, rows, m, dim);
}
static void s_scatter(void *ctx, float *dst, const float *src, const int32_t *rows, int64_t m, int64_t dim) {
    check(dst, "scatter", "dst"), check(src, "scatter", "src"), check(rows, "scatter", "rows");
    g_cpu.scatter(ctx, dst, src, rows, m, dim);
}
static void s_swiglu(void *ctx, float *y, const float *gate, const float *up, int64_t n) {
    check(y, "swiglu", "y"), check(gate, "swiglu", "gate"), check(up, "swiglu", "up");
    g_cpu.swiglu(ctx, y, gate, up, n);
}
static void s_sigmoid_mul(void *ctx, float *x, const float *gate, int64_t n) {
    check(x, "sigmoid_mul", "x"), check(gate, "sigmoid_mul", "gate");
    g_cpu.sigmoid_mul(ctx, x, gate, n);
}
static void s_axpy(void *ctx, float *y, float a, const float *x, int64_t n) {
    check(y, "axpy", "y"), check(x, "axpy", "x");
    g_cpu.axpy(ctx, y, a, x, n);
}
static void s_combine(void *ctx, float *y, const float *x, const float *w, const int32_t *order, int64_t n, int k,
                      int64_t dim) {
    check(y, "combine", "y"), check(x, "combine", "x"), check(w, "combine", "w"), check(order, "combine", "order");
    g_cpu.combine(ctx, y, x, w, order, n, k, dim);
}
static void s_gated_add(void *ctx, float *y, const float *g, const float *x, int64_t n, int64_t dim) {
    check(y, "gated_add", "y"), check(g, "gated_add", "g"), check(x, "gated_add", "x");
    g_cpu.gated_add(ctx, y, g, x, n, dim);
}

/* DSA (deepseek_v32, glm_moe_dsa): the indexer's slots and the selection
 * handed to attention (the norm gains are model memory, as rmsnorm's) */
static void s_layernorm(void *ctx, float *y, const float *x, const float *g, const float *b, int64_t rows,
                        int64_t dim, float eps) {
    check(y, "layernorm", "y"), check(x, "layernorm", "x");
    g_cpu.layernorm(ctx, y, x, g, b, rows, dim, eps);
}
static void s_dsa_select(void *ctx, const mk_dsa_args *a) {
    check(a->q, "dsa_select", "q"), check(a->k, "dsa_select", "k"), check(a->w, "dsa_select", "w");
    check(a->sel, "dsa_select", "sel"), check(a->sc, "dsa_select", "sc");
    g_cpu.dsa_select(ctx, a);
}
static void s_clamped_swiglu(void *ctx, float *y, const float *gate, const float *up, int64_t n, int64_t st,
                             float alpha, float limit) {
    check(y, "clamped_swiglu", "y"), check(gate, "clamped_swiglu", "gate"), check(up, "clamped_swiglu", "up");
    g_cpu.clamped_swiglu(ctx, y, gate, up, n, st, alpha, limit);
}
static void s_attention(void *ctx, const mk_attn_args *a) {
    check(a->q, "attention", "q"), check(a->k, "attention", "k"), check(a->v, "attention", "v");
    check(a->out, "attention", "out"), check(a->sinks, "attention", "sinks"), check(a->sel, "attention", "sel");
    g_cpu.attention(ctx, a);
}

static void run_fixture(const char *rel) {
    const char *dir = mk_test_fixture(rel);
    if (!dir)
        skip();
    mk_model *m = NULL;
    if (mk_model_open(dir, &m) != MK_OK)
        fail_msg("%s: %s", rel, mk_err_msg());
    mk_backend *cpu = NULL, *strict = NULL;
    assert_int_equal(mk_backend_cpu_create(NULL, &cpu), MK_OK);
    g_cpu = *mk_backend_iface(cpu);
    g_strict = g_cpu;
    g_strict.name = "strict";
    g_strict.free = NULL; /* the context stays the CPU backend's */
    g_strict.alloc = s_alloc;
    g_strict.copy = s_copy;
    g_strict.gather = s_gather;
    g_strict.scatter = s_scatter;
    g_strict.swiglu = s_swiglu;
    g_strict.sigmoid_mul = s_sigmoid_mul;
    g_strict.axpy = s_axpy;
    g_strict.combine = s_combine;
    g_strict.gated_add = s_gated_add;
    g_strict.layernorm = s_layernorm;
    g_strict.dsa_select = s_dsa_select;
    g_strict.clamped_swiglu = s_clamped_swiglu;
    g_strict.attention = s_attention;
    g_strict.expert_mlps = NULL; /* its scratch pointers are the same arena: keep the one-at-a-time path */
    assert_int_equal(mk_backend_create(&g_strict, mk_backend_ctx(cpu), &strict), MK_OK);
    g_nbuf = g_bad = 0;
    const mk_config *c = mk_model_config(m);
    mk_engine_opts o = {.threads = 1, .max_ctx = 32, .prefill_chunk = 8, .backend = strict};
    mk_engine *e = NULL;
    assert_int_equal(mk_engine_create(m, &o, &e), MK_OK);
    int32_t ids[24];
    for (int i = 0; i < 24; i++)
        ids[i] = (int32_t)((i * 131 + 7) % c->vocab_size);
    float *lg = malloc((size_t)c->vocab_size * sizeof(float));
    assert_non_null(lg);
    /* prefill in chunks, then decode: both paths' slots */
    assert_int_equal(mk_engine_forward(e, ids, 20, MK_LOGITS_LAST, lg, NULL), MK_OK);
    for (int i = 20; i < 24; i++)
        assert_int_equal(mk_engine_forward(e, ids + i, 1, MK_LOGITS_LAST, lg, NULL), MK_OK);
    /* a batched decode step (mk_engine_decode_batch) over this engine and
     * two more at other positions: its slots too */
    mk_engine *e2 = NULL, *e3 = NULL;
    assert_int_equal(mk_engine_create(m, &o, &e2), MK_OK);
    assert_int_equal(mk_engine_create(m, &o, &e3), MK_OK);
    assert_int_equal(mk_engine_forward(e2, ids, 5, MK_LOGITS_NONE, NULL, NULL), MK_OK);
    assert_int_equal(mk_engine_forward(e3, ids + 3, 9, MK_LOGITS_NONE, NULL, NULL), MK_OK);
    mk_engine *es[3] = {e2, e, e3};
    float *lb = malloc((size_t)3 * c->vocab_size * sizeof(float));
    assert_non_null(lb);
    /* families without a batched step (gpt_oss, DSA) are refused, nothing run */
    bool batched = mk_engine_batchable(es, 3);
    for (int step = 0; step < 2; step++)
        assert_int_equal(mk_engine_decode_batch(es, 3, ids + 10 + 3 * step, lb), batched ? MK_OK : MK_E_ARG);
    free(lb);
    mk_engine_free(e2);
    mk_engine_free(e3);
    printf("  %-22s %d buffers, %d slot arguments outside them%s%s\n", rel, g_nbuf, g_bad, g_bad ? ": " : "",
           g_bad ? g_first : "");
    if (g_bad)
        fail_msg("%s: %d slot arguments are not backend memory; first: %s", rel, g_bad, g_first);
    free(lg);
    mk_engine_free(e);
    mk_backend_free(strict);
    mk_backend_free(cpu);
    mk_model_free(m);
}

static void test_qwen3moe(void **s) { (void)s; run_fixture("qwen3moe-a/bf16"); }
static void test_qwen3next(void **s) { (void)s; run_fixture("qwen3next-a/bf16"); }
static void test_qwen35moe(void **s) { (void)s; run_fixture("qwen35moe-a/bf16"); }
static void test_deepseekv3(void **s) { (void)s; run_fixture("deepseekv3-a/bf16"); }
static void test_glm4moe(void **s) { (void)s; run_fixture("glm4moe-a/bf16"); }
static void test_minimaxm2(void **s) { (void)s; run_fixture("minimaxm2-a/bf16"); }
static void test_glm4lite(void **s) { (void)s; run_fixture("glm4lite-a/bf16"); }
static void test_dsa(void **s) { (void)s; run_fixture("deepseekv32-a/bf16"); run_fixture("glm5dsa-a/bf16"); }
/* gpt_oss: attention and router and expert biases, sinks, the clamped SwiGLU */
static void test_gptoss(void **s) { (void)s; run_fixture("gptoss-a/bf16"); run_fixture("gptoss-a/mxfp4"); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qwen3moe),   cmocka_unit_test(test_qwen3next), cmocka_unit_test(test_qwen35moe),
        cmocka_unit_test(test_deepseekv3), cmocka_unit_test(test_glm4moe),   cmocka_unit_test(test_minimaxm2),
        cmocka_unit_test(test_glm4lite),   cmocka_unit_test(test_dsa),
        cmocka_unit_test(test_gptoss),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
