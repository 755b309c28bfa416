/* Continuous batching at the engine level (engine.h
 * mk_engine_decode_batch): a decode step over several sequences gives each
 * sequence bitwise the logits it gets alone.
 *
 * For every fixture family (attention with q/k norms, the hybrids with
 * Gated DeltaNet, MLA with its latent cache in bf16 and block FP8, glm4_moe
 * biases, minimax_m2's whole-projection norms, the trained tiny model) two
 * sets of 8 engines over one model and one CPU backend are prefilled with
 * prompts of different lengths, so the sequences sit at different
 * positions. Then, step after step, a subset of 3 to 8 sequences (in
 * varying order, so the lead engine whose scratch runs the step changes)
 * decodes one token: the "alone" set one engine at a time with
 * mk_engine_forward, the "batch" set in one mk_engine_decode_batch, and
 * every row must equal its alone logits bit for bit. The next tokens are
 * the alone greedy choices, so caches and recurrent states keep growing
 * apart, and the inactive sequences must come through a step untouched.
 * The references are the engine's own single-sequence forward, held to
 * transformers by test_engine_fixtures; here only equality matters.
 *
 * The same runs on the CUDA backend where there is one (skipped with the
 * reason otherwise), within float noise: see rows_equal.
 *
 * Also: what cannot share a step is refused and changes nothing (the same
 * engine twice, a full context, an id outside the vocabulary); and the
 * recurrent-state snapshots of the prompt cache (mk_engine_state_*). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"
#include <math.h>

#include "moekit/backend.h"
#include "moekit/backend_cuda.h"
#include "moekit/engine.h"
#include "moekit/model.h"

#define NS 8    /* sequences per set */
#define CTX 96  /* positions per engine */
#define CHUNK 32

typedef struct fx {
    mk_model *m;
    mk_pool *pool;
    mk_backend *be, *inner; /* inner: the CPU backend under g_plain's wrapper */
    mk_engine *alone[NS], *batch[NS];
    int32_t *ids;
    int64_t n_ids, V;
} fx;

/* The CUDA case: the batched step on a device backend, whose single-
 * sequence path runs fused kernels (q/k norm with RoPE, residual with the
 * next norm, recorded steps) that the batched path does not: the two
 * differ in summation order only, so they are held to float noise
 * (relative L2 per row <= 1e-4, the same argmax) instead of bitwise; a row
 * of another sequence, or a cache or state mixed up, is off by O(1). */
static bool g_cuda;
/* The plain cases: the CPU backend without the optional attention_each,
 * conv1d_silu_each and gdn_each slots, so the engine's own per-sequence
 * loops run (what a backend without them, or a declined call, gets). */
static bool g_plain;
static mk_backend_i g_plain_i;

static void fx_open(fx *f, const char *dir, const char *sub) {
    memset(f, 0, sizeof *f);
    char rel[512], p[1024];
    snprintf(rel, sizeof rel, "%s/%s", dir, sub);
    mk_status st = mk_model_open_ex(mk_test_fixture(rel), &(mk_model_opts){0}, &f->m);
    if (st != MK_OK)
        fail_msg("open %s: %s", rel, mk_err_msg());
    snprintf(p, sizeof p, "%s/reference.json", mk_test_fixture(dir));
    json_error_t je;
    json_t *j = json_load_file(p, 0, &je);
    if (!j)
        fail_msg("%s: %s", p, je.text);
    json_t *a = json_object_get(j, "input_ids");
    if (!a) /* the trained model: its teacher-forced ids */
        a = json_object_get(json_object_get(j, "ref_logits"), "input_ids");
    f->n_ids = (int64_t)json_array_size(a);
    assert_true(f->n_ids >= 24);
    f->ids = malloc((size_t)f->n_ids * sizeof *f->ids);
    assert_non_null(f->ids);
    for (int64_t i = 0; i < f->n_ids; i++)
        f->ids[i] = (int32_t)json_integer_value(json_array_get(a, (size_t)i));
    json_decref(j);
    f->V = mk_model_config(f->m)->vocab_size;
    if (g_cuda) {
        if (mk_backend_cuda_create(0, &f->be) != MK_OK) {
            printf("SKIP batched decode on CUDA: %s\n", mk_err_msg());
            mk_model_free(f->m);
            free(f->ids);
            skip();
        }
    } else {
        assert_int_equal(mk_pool_create(2, &f->pool), MK_OK);
        assert_int_equal(mk_backend_cpu_create(f->pool, &f->be), MK_OK);
        if (g_plain) {
            f->inner = f->be;
            g_plain_i = *mk_backend_iface(f->inner);
            g_plain_i.attention_each = NULL;
            g_plain_i.conv1d_silu_each = NULL;
            g_plain_i.gdn_each = NULL;
            g_plain_i.free = NULL; /* the inner backend owns the context */
            assert_int_equal(mk_backend_create(&g_plain_i, mk_backend_ctx(f->inner), &f->be), MK_OK);
        }
    }
    mk_engine_opts o = {.max_ctx = CTX, .prefill_chunk = CHUNK, .backend = f->be};
    for (int i = 0; i < NS; i++) {
        assert_int_equal(mk_engine_create(f->m, &o, &f->alone[i]), MK_OK);
        assert_int_equal(mk_engine_create(f->m, &o, &f->batch[i]), MK_OK);
    }
}

static void fx_close(fx *f) {
    for (int i = 0; i < NS; i++) {
        mk_engine_free(f->alone[i]);
        mk_engine_free(f->batch[i]);
    }
    mk_backend_free(f->be);
    mk_backend_free(f->inner);
    mk_pool_free(f->pool);
    mk_model_free(f->m);
    free(f->ids);
}

/* Rows equal: bitwise on the CPU; on CUDA within float noise, same argmax. */
static int32_t argmax(const float *x, int64_t n);
static bool rows_equal(const float *a, const float *b, int64_t V) {
    if (!g_cuda)
        return !memcmp(a, b, (size_t)V * sizeof *a);
    double d2 = 0, r2 = 0;
    for (int64_t v = 0; v < V; v++) {
        d2 += ((double)a[v] - b[v]) * ((double)a[v] - b[v]);
        r2 += (double)a[v] * a[v];
    }
    return sqrt(d2) <= 1e-4 * sqrt(r2) && argmax(a, V) == argmax(b, V);
}

static int32_t argmax(const float *x, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return (int32_t)b;
}

/* The active sequences of each step: 3 to 8 of them, in varying order. */
static const int g_steps[][NS + 1] = {
    {8, 0, 1, 2, 3, 4, 5, 6, 7},
    {3, 5, 0, 3},
    {4, 7, 1, 4, 2},
    {8, 7, 6, 5, 4, 3, 2, 1, 0},
    {5, 2, 6, 0, 3, 7},
    {3, 1, 2, 6},
    {6, 4, 0, 5, 1, 7, 2},
    {8, 3, 1, 4, 0, 5, 2, 7, 6},
};

static void run_family(const char *dir, const char *sub) {
    fx f;
    fx_open(&f, dir, sub);
    float *la = malloc((size_t)f.V * sizeof *la);
    float *lb = malloc((size_t)NS * f.V * sizeof *lb);
    assert_true(la && lb);
    int32_t next[NS];
    /* prompts of 3, 6, ..., 24 tokens: the sequences start at different positions */
    for (int i = 0; i < NS; i++) {
        int64_t np = 3 + 3 * i;
        assert_int_equal(mk_engine_forward(f.alone[i], f.ids + i, np, MK_LOGITS_LAST, la, NULL), MK_OK);
        assert_int_equal(mk_engine_forward(f.batch[i], f.ids + i, np, MK_LOGITS_LAST, lb, NULL), MK_OK);
        assert_true(rows_equal(la, lb, f.V)); /* the same engine, the same prefill */
        next[i] = argmax(la, f.V);
    }
    int distinct_rows = 0;
    for (size_t s = 0; s < sizeof g_steps / sizeof g_steps[0]; s++) {
        int n = g_steps[s][0];
        const int *act = g_steps[s] + 1;
        mk_engine *es[NS];
        int32_t ids[NS];
        int64_t pos_before[NS];
        for (int i = 0; i < NS; i++)
            pos_before[i] = mk_engine_pos(f.batch[i]);
        for (int i = 0; i < n; i++) {
            es[i] = f.batch[act[i]];
            ids[i] = next[act[i]];
        }
        assert_true(mk_engine_batchable(es, n));
        mk_status st = mk_engine_decode_batch(es, n, ids, lb);
        if (st != MK_OK)
            fail_msg("%s/%s step %zu: %s", dir, sub, s, mk_err_msg());
        for (int i = 0; i < n; i++) {
            int q = act[i];
            assert_int_equal(mk_engine_forward(f.alone[q], &next[q], 1, MK_LOGITS_LAST, la, NULL), MK_OK);
            if (!rows_equal(la, lb + (int64_t)i * f.V, f.V)) {
                int64_t v = 0;
                while (v < f.V - 1 && la[v] == lb[(int64_t)i * f.V + v])
                    v++;
                fail_msg("%s/%s step %zu: sequence %d (row %d of %d, position %lld): logit %lld "
                         "is %.9g in the batch, %.9g alone", dir, sub, s, q, i, n,
                         (long long)pos_before[q], (long long)v, (double)lb[(int64_t)i * f.V + v],
                         (double)la[v]);
            }
            if (i > 0 && memcmp(lb, lb + (int64_t)i * f.V, (size_t)f.V * sizeof *lb))
                distinct_rows++;
            assert_int_equal(mk_engine_pos(f.batch[q]), pos_before[q] + 1);
            next[q] = argmax(la, f.V);
        }
        for (int q = 0; q < NS; q++) { /* the others did not move */
            bool active = false;
            for (int i = 0; i < n; i++)
                active |= act[i] == q;
            if (!active)
                assert_int_equal(mk_engine_pos(f.batch[q]), pos_before[q]);
        }
    }
    assert_true(distinct_rows > 0); /* the rows are each sequence's own, not one copied */
    free(la);
    free(lb);
    fx_close(&f);
}

static void test_qwen3moe(void **state) { (void)state; run_family("qwen3moe-a", "bf16"); }
static void test_qwen3next(void **state) { (void)state; run_family("qwen3next-a", "bf16"); }
static void test_qwen35moe(void **state) { (void)state; run_family("qwen35moe-a", "bf16"); }
static void test_tiny(void **state) { (void)state; run_family("tiny-qwen35moe", "bf16"); }
static void test_deepseekv3(void **state) { (void)state; run_family("deepseekv3-a", "bf16"); }
static void test_deepseekv3_fp8(void **state) { (void)state; run_family("deepseekv3-a", "fp8"); }
static void test_glm4moe(void **state) { (void)state; run_family("glm4moe-a", "bf16"); }
static void test_glm4lite(void **state) { (void)state; run_family("glm4lite-a", "bf16"); }
static void test_minimaxm2(void **state) { (void)state; run_family("minimaxm2-a", "bf16"); }

/* What cannot share a step is refused, and nothing moves. */
static void test_refusals(void **state) {
    (void)state;
    fx f;
    fx_open(&f, "qwen35moe-a", "bf16");
    float *lb = malloc((size_t)NS * f.V * sizeof *lb);
    assert_non_null(lb);
    for (int i = 0; i < 3; i++)
        assert_int_equal(mk_engine_forward(f.batch[i], f.ids, 4 + i, MK_LOGITS_NONE, NULL, NULL), MK_OK);
    mk_engine *dup[2] = {f.batch[0], f.batch[0]};
    int32_t ids[3] = {1, 2, 3};
    assert_false(mk_engine_batchable(dup, 2));
    assert_int_equal(mk_engine_decode_batch(dup, 2, ids, lb), MK_E_ARG);
    assert_int_equal(mk_engine_pos(f.batch[0]), 4);
    /* an id outside the vocabulary */
    mk_engine *es[3] = {f.batch[0], f.batch[1], f.batch[2]};
    int32_t bad[3] = {1, (int32_t)f.V, 3};
    assert_int_equal(mk_engine_decode_batch(es, 3, bad, lb), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "outside the vocabulary"));
    /* a full context */
    int32_t fill[CTX];
    for (int i = 0; i < CTX; i++)
        fill[i] = f.ids[i % f.n_ids];
    assert_int_equal(mk_engine_forward(f.batch[2], fill, CTX - 6, MK_LOGITS_NONE, NULL, NULL), MK_OK);
    assert_int_equal(mk_engine_pos(f.batch[2]), CTX);
    assert_int_equal(mk_engine_decode_batch(es, 3, ids, lb), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "context full"));
    assert_int_equal(mk_engine_pos(f.batch[0]), 4);
    assert_int_equal(mk_engine_pos(f.batch[1]), 5);
    /* more sequences than half the lead's prefill chunk */
    mk_engine *many[NS];
    for (int i = 0; i < NS; i++)
        many[i] = f.batch[i];
    assert_true(mk_engine_batchable(many, NS));
    mk_engine_opts small = {.max_ctx = CTX, .prefill_chunk = 8, .backend = f.be};
    mk_engine *lead;
    assert_int_equal(mk_engine_create(f.m, &small, &lead), MK_OK);
    many[0] = lead;
    assert_false(mk_engine_batchable(many, 5));
    assert_true(mk_engine_batchable(many, 4));
    mk_engine_free(lead);
    free(lb);
    fx_close(&f);
}

/* Recurrent-state snapshots (engine.h mk_engine_state_*): an engine that
 * read A then B, restored to its snapshot after A, then reads C gives
 * bitwise the logits of a fresh engine that read A then C (the same
 * chunk boundaries); restoring the state saved after B but claiming A's
 * position does not (the state matters, not only the position); a restore
 * past the position is refused; attention-only models have no state. */
static void snapshot_family(const char *dir) {
    fx f;
    fx_open(&f, dir, "bf16");
    mk_engine *a = f.batch[0], *b = f.batch[1];
    size_t bytes = mk_engine_state_bytes(a);
    assert_true(bytes > 0);
    char *s10 = malloc(bytes), *s20 = malloc(bytes), *again = malloc(bytes);
    float *l1 = malloc((size_t)6 * f.V * sizeof *l1), *l2 = malloc((size_t)6 * f.V * sizeof *l2);
    assert_true(s10 && s20 && again && l1 && l2);
    assert_int_equal(mk_engine_forward(a, f.ids, 10, MK_LOGITS_NONE, NULL, NULL), MK_OK);
    assert_int_equal(mk_engine_state_save(a, s10), MK_OK);
    assert_int_equal(mk_engine_forward(a, f.ids + 10, 10, MK_LOGITS_NONE, NULL, NULL), MK_OK);
    assert_int_equal(mk_engine_state_save(a, s20), MK_OK);
    assert_true(memcmp(s10, s20, bytes) != 0);
    assert_int_equal(mk_engine_state_restore(a, s10, 21), MK_E_ARG); /* past the position */
    assert_int_equal(mk_engine_pos(a), 20);
    assert_int_equal(mk_engine_state_restore(a, s10, 10), MK_OK);
    assert_int_equal(mk_engine_pos(a), 10);
    assert_int_equal(mk_engine_state_save(a, again), MK_OK);
    assert_memory_equal(again, s10, bytes);
    assert_int_equal(mk_engine_forward(a, f.ids + 20, 6, MK_LOGITS_ALL, l1, NULL), MK_OK);
    assert_int_equal(mk_engine_forward(b, f.ids, 10, MK_LOGITS_NONE, NULL, NULL), MK_OK);
    assert_int_equal(mk_engine_forward(b, f.ids + 20, 6, MK_LOGITS_ALL, l2, NULL), MK_OK);
    assert_memory_equal(l1, l2, (size_t)6 * f.V * sizeof *l1);
    /* the wrong state at the right position: different logits */
    assert_int_equal(mk_engine_state_restore(a, s20, 10), MK_OK);
    assert_int_equal(mk_engine_forward(a, f.ids + 20, 6, MK_LOGITS_ALL, l1, NULL), MK_OK);
    assert_true(memcmp(l1, l2, (size_t)6 * f.V * sizeof *l1) != 0);
    free(s10);
    free(s20);
    free(again);
    free(l1);
    free(l2);
    fx_close(&f);
}

static void test_snapshot_qwen35moe(void **state) { (void)state; snapshot_family("qwen35moe-a"); }
static void test_snapshot_qwen3next(void **state) { (void)state; snapshot_family("qwen3next-a"); }

static void test_snapshot_none(void **state) {
    (void)state;
    fx f;
    fx_open(&f, "qwen3moe-a", "bf16");
    assert_int_equal(mk_engine_state_bytes(f.batch[0]), 0);
    assert_int_equal(mk_engine_forward(f.batch[0], f.ids, 5, MK_LOGITS_NONE, NULL, NULL), MK_OK);
    assert_int_equal(mk_engine_state_restore(f.batch[0], NULL, 3), MK_OK); /* a rewind */
    assert_int_equal(mk_engine_pos(f.batch[0]), 3);
    fx_close(&f);
}

static void test_cuda_qwen35moe(void **state) {
    (void)state;
    g_cuda = true;
    run_family("qwen35moe-a", "bf16");
    g_cuda = false;
}
static void test_cuda_deepseekv3(void **state) {
    (void)state;
    g_cuda = true;
    run_family("deepseekv3-a", "bf16");
    g_cuda = false;
}
static int reset_cuda(void **state) {
    (void)state;
    g_cuda = false; /* a skipped or failed CUDA case leaves the CPU for the next */
    g_plain = false;
    return 0;
}
static void test_plain_qwen35moe(void **state) { /* gated GQA, Gated DeltaNet */
    (void)state;
    g_plain = true;
    run_family("qwen35moe-a", "bf16");
    g_plain = false;
}
static void test_plain_deepseekv3(void **state) { /* MLA */
    (void)state;
    g_plain = true;
    run_family("deepseekv3-a", "bf16");
    g_plain = false;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_cuda_qwen35moe, reset_cuda),
        cmocka_unit_test_teardown(test_cuda_deepseekv3, reset_cuda),
        cmocka_unit_test_teardown(test_plain_qwen35moe, reset_cuda),
        cmocka_unit_test_teardown(test_plain_deepseekv3, reset_cuda),
        cmocka_unit_test(test_qwen3moe),   cmocka_unit_test(test_qwen3next),
        cmocka_unit_test(test_qwen35moe),  cmocka_unit_test(test_tiny),
        cmocka_unit_test(test_deepseekv3), cmocka_unit_test(test_deepseekv3_fp8),
        cmocka_unit_test(test_glm4moe),    cmocka_unit_test(test_glm4lite),
        cmocka_unit_test(test_minimaxm2),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_snapshot_qwen35moe), cmocka_unit_test(test_snapshot_qwen3next),
        cmocka_unit_test(test_snapshot_none),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
