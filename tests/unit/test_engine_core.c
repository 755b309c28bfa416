/* Engine invariants that the golden tests do not pin down, and the sampler.
 *
 * - Chunked prefill, one-token decode and one-shot prefill compute the same
 *   logits (KV cache, DeltaNet conv/recurrent state and MLA cache carry
 *   across calls), for every block kind.
 * - reset() restarts from an empty state: a second run equals the first.
 * - Bad ids and a full context are MK_E_ARG and leave the state usable.
 * - A custom expert store sees exactly one release per get.
 * - The sampler: greedy = argmax, top-k 1 = greedy, a seed reproduces its
 *   tokens, top-p / min-p keep only the head, the repetition, presence
 *   and frequency penalties.
 * - Rewinding (mk_engine_rewind) an attention-only sequence equals never
 *   having gone further; recurrent models refuse it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"
#include "moekit/engine.h"
#include "moekit/model.h"
#include "moekit/sample.h"

static mk_model *open_fx(const char *rel) {
    mk_model *m = NULL;
    if (mk_model_open(mk_test_fixture(rel), &m) != MK_OK)
        fail_msg("%s: %s", rel, mk_err_msg());
    return m;
}

static mk_engine *engine(const mk_model *m, int64_t ctx, int chunk, mk_expert_store *store) {
    mk_engine_opts o = {.threads = 2, .max_ctx = ctx, .prefill_chunk = chunk, .store = store};
    mk_engine *e = NULL;
    if (mk_engine_create(m, &o, &e) != MK_OK)
        fail_msg("engine: %s", mk_err_msg());
    return e;
}

static double rel_l2(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / den);
}

#define N 40

/* logits of ids[0..N) computed one-shot, in chunks of 7, and as a 9-token
 * prefill followed by single-token decode steps */
static void check_schedules(const char *rel) {
    mk_model *m = open_fx(rel);
    int V = mk_model_config(m)->vocab_size;
    int32_t ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = (int32_t)((i * 37 + 11) % V);
    size_t nl = (size_t)N * (size_t)V;
    float *a = malloc(nl * sizeof(float)), *b = malloc(nl * sizeof(float)),
          *c = malloc(nl * sizeof(float));
    assert_true(a && b && c);
    mk_engine *e1 = engine(m, N, 512, NULL), *e2 = engine(m, N, 7, NULL);
    assert_int_equal(mk_engine_forward(e1, ids, N, MK_LOGITS_ALL, a, NULL), MK_OK);
    assert_int_equal(mk_engine_forward(e2, ids, N, MK_LOGITS_ALL, b, NULL), MK_OK);
    mk_engine_reset(e1);
    assert_int_equal(mk_engine_forward(e1, ids, 9, MK_LOGITS_ALL, c, NULL), MK_OK);
    for (int t = 9; t < N; t++)
        assert_int_equal(mk_engine_forward(e1, ids + t, 1, MK_LOGITS_LAST, c + (size_t)t * V, NULL),
                         MK_OK);
    assert_int_equal(mk_engine_pos(e1), N);
    double eb = rel_l2(b, a, nl), ec = rel_l2(c, a, nl);
    printf("  %-22s chunked %.2e  decode %.2e\n", rel, eb, ec);
    assert_true(eb < 1e-5);
    assert_true(ec < 1e-5);
    /* reset: the same run again gives the same numbers */
    mk_engine_reset(e2);
    assert_int_equal(mk_engine_forward(e2, ids, N, MK_LOGITS_ALL, c, NULL), MK_OK);
    assert_memory_equal(b, c, nl * sizeof(float));
    free(a);
    free(b);
    free(c);
    mk_engine_free(e1);
    mk_engine_free(e2);
    mk_model_free(m);
}

static void test_schedules_attn(void **s) { (void)s; check_schedules("qwen3moe-a/bf16"); }
static void test_schedules_gdn_grouped(void **s) { (void)s; check_schedules("qwen3next-a/bf16"); }
static void test_schedules_gdn(void **s) { (void)s; check_schedules("qwen35moe-a/bf16"); }
static void test_schedules_mla(void **s) { (void)s; check_schedules("deepseekv3-a/bf16"); }

static void test_errors(void **s) {
    (void)s;
    mk_model *m = open_fx("qwen3moe-a/bf16");
    mk_engine *e = engine(m, 8, 512, NULL);
    float lg[512];
    int32_t bad[2] = {1, 512}, neg = -1, ok[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_int_equal(mk_engine_forward(e, bad, 2, MK_LOGITS_LAST, lg, NULL), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "512"));
    assert_int_equal(mk_engine_forward(e, &neg, 1, MK_LOGITS_LAST, lg, NULL), MK_E_ARG);
    assert_int_equal(mk_engine_pos(e), 0);
    assert_int_equal(mk_engine_forward(e, ok, 8, MK_LOGITS_LAST, lg, NULL), MK_OK);
    assert_int_equal(mk_engine_forward(e, ok, 1, MK_LOGITS_LAST, lg, NULL), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "context full"));
    assert_int_equal(mk_engine_forward(e, ok, 1, MK_LOGITS_LAST, NULL, NULL), MK_E_ARG);
    mk_engine_free(e);
    mk_engine_free(NULL);
    mk_model_free(m);
    mk_model_free(NULL);
}

/* A store wrapping the resident one that counts what it hands out and
 * returns each layer's announced experts in REVERSE order, as a streaming
 * store returns hits before misses: the engine's output must not depend on
 * the order in which experts become ready. */
typedef struct counting {
    mk_expert_store *inner;
    long announced, taken, releases;
    int set[64], n, next;
} counting;

static mk_status cnt_acquire(void *ctx, int layer, const int *ex, int n) {
    counting *c = ctx;
    assert_true(n <= 64);
    memcpy(c->set, ex, (size_t)n * sizeof(int));
    c->n = n;
    c->next = n - 1;
    c->announced += n;
    return mk_expert_store_acquire(c->inner, layer, ex, n);
}
static mk_status cnt_next(void *ctx, int layer, int *e, const mk_expert **out) {
    counting *c = ctx;
    if (c->next < 0)
        return MK_E_ARG;
    *e = c->set[c->next--];
    c->taken++;
    /* the views of expert *e from the resident store: take its experts in
     * order until *e comes up (it hands out the model's own views) */
    int x;
    const mk_expert *v;
    mk_status st = mk_expert_store_acquire(c->inner, layer, e, 1);
    if (st == MK_OK)
        st = mk_expert_store_next(c->inner, layer, &x, &v);
    if (st != MK_OK)
        return st;
    *out = v;
    return MK_OK;
}
static void cnt_release(void *ctx, int layer, int e) {
    counting *c = ctx;
    c->releases++;
    mk_expert_store_release(c->inner, layer, e);
}
static void cnt_free(void *ctx) { (void)ctx; }

static const mk_expert_store_i g_counting = {"counting", cnt_acquire, cnt_next, cnt_release,
                                             cnt_free, NULL, NULL, false, NULL, NULL, NULL};

static void test_expert_store_seam(void **s) {
    (void)s;
    mk_model *m = open_fx("qwen35moe-a/bf16");
    counting c = {0};
    assert_int_equal(mk_expert_store_resident(m, &c.inner), MK_OK);
    mk_expert_store *st = NULL;
    assert_int_equal(mk_expert_store_create(&g_counting, &c, &st), MK_OK);
    assert_string_equal(mk_expert_store_name(st), "counting");
    mk_engine *e = engine(m, 20, 512, st), *ref = engine(m, 20, 512, NULL);
    int32_t ids[16];
    for (int i = 0; i < 16; i++)
        ids[i] = i * 7;
    int V = mk_model_config(m)->vocab_size;
    float *lg = malloc((size_t)V * 16 * sizeof(float)), *lr = malloc((size_t)V * 16 * sizeof(float));
    assert_non_null(lg);
    assert_non_null(lr);
    assert_int_equal(mk_engine_forward(e, ids, 16, MK_LOGITS_ALL, lg, NULL), MK_OK);
    assert_int_equal(mk_engine_forward(ref, ids, 16, MK_LOGITS_ALL, lr, NULL), MK_OK);
    assert_true(c.taken > 0);
    assert_int_equal(c.taken, c.announced); /* every announced expert was taken once */
    assert_int_equal(c.taken, c.releases);
    /* reverse readiness order, bitwise the same logits */
    assert_memory_equal(lg, lr, (size_t)V * 16 * sizeof(float));
    /* decode: the resident store has every expert ready, so `ref` runs a
     * token's experts in one batch (backend expert_mlps) while `e` (this
     * store, all_ready false) takes them one at a time: bitwise the same */
    for (int i = 0; i < 4; i++) {
        int32_t id = (int32_t)(i * 13 + 5);
        assert_int_equal(mk_engine_forward(e, &id, 1, MK_LOGITS_LAST, lg, NULL), MK_OK);
        assert_int_equal(mk_engine_forward(ref, &id, 1, MK_LOGITS_LAST, lr, NULL), MK_OK);
        assert_memory_equal(lg, lr, (size_t)V * sizeof(float));
    }
    /* an out-of-range expert is an error naming it */
    int bad = 99;
    assert_int_equal(mk_expert_store_acquire(c.inner, 0, &bad, 1), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "99"));
    free(lg);
    free(lr);
    mk_engine_free(e);
    mk_engine_free(ref);
    mk_expert_store_free(st);
    mk_expert_store_free(c.inner);
    mk_model_free(m);
}

/* ---- sampler ------------------------------------------------------------- */

static void test_sampler(void **s) {
    (void)s;
    enum { V = 50 };
    float base[V], lg[V];
    for (int i = 0; i < V; i++)
        base[i] = (float)sin(i * 1.7) * 3.0f;
    int32_t best = mk_argmax(base, V);
    mk_sample_params p;
    mk_sample_params_default(&p);
    mk_sampler *sm;
    assert_int_equal(mk_sampler_create(&p, V, &sm), MK_OK);
    memcpy(lg, base, sizeof lg);
    assert_int_equal(mk_sampler_sample(sm, lg, NULL, 0), best);
    mk_sampler_free(sm);
    /* top-k 1 at any temperature is greedy */
    p.temperature = 5.0f;
    p.top_k = 1;
    assert_int_equal(mk_sampler_create(&p, V, &sm), MK_OK);
    for (int i = 0; i < 20; i++) {
        memcpy(lg, base, sizeof lg);
        assert_int_equal(mk_sampler_sample(sm, lg, NULL, 0), best);
    }
    mk_sampler_free(sm);
    /* a seed reproduces its sequence; another seed gives another one */
    p.top_k = 0;
    p.temperature = 1.5f;
    int32_t run[3][64];
    for (int r = 0; r < 3; r++) {
        p.seed = r == 2 ? 43 : 42;
        assert_int_equal(mk_sampler_create(&p, V, &sm), MK_OK);
        for (int i = 0; i < 64; i++) {
            memcpy(lg, base, sizeof lg);
            run[r][i] = mk_sampler_sample(sm, lg, NULL, 0);
            assert_true(run[r][i] >= 0 && run[r][i] < V);
        }
        mk_sampler_free(sm);
    }
    assert_memory_equal(run[0], run[1], sizeof run[0]);
    assert_memory_not_equal(run[0], run[2], sizeof run[0]);
    /* top-p tiny and min-p close to 1 keep only the best token */
    p.top_p = 1e-6f;
    assert_int_equal(mk_sampler_create(&p, V, &sm), MK_OK);
    memcpy(lg, base, sizeof lg);
    assert_int_equal(mk_sampler_sample(sm, lg, NULL, 0), best);
    mk_sampler_free(sm);
    p.top_p = 1.0f;
    p.min_p = 0.999f;
    assert_int_equal(mk_sampler_create(&p, V, &sm), MK_OK);
    memcpy(lg, base, sizeof lg);
    assert_int_equal(mk_sampler_sample(sm, lg, NULL, 0), best);
    mk_sampler_free(sm);
    /* the repetition penalty moves greedy off a seen token */
    mk_sample_params_default(&p);
    p.repeat_penalty = 100.0f;
    assert_int_equal(mk_sampler_create(&p, V, &sm), MK_OK);
    memcpy(lg, base, sizeof lg);
    assert_int_not_equal(mk_sampler_sample(sm, lg, &best, 1), best);
    mk_sampler_free(sm);
    /* bad parameters */
    p.repeat_penalty = 0.0f;
    assert_int_equal(mk_sampler_create(&p, V, &sm), MK_E_ARG);
    mk_sampler_free(NULL);
    /* OpenAI's penalties: presence subtracts once per seen token, frequency
     * per occurrence (greedy over hand-made logits: 0 best by 1.5, 1 next) */
    float pl[3] = {2.0f, 0.5f, 0.0f}, pw[3];
    int32_t seen[3] = {0, 0, 2};
    mk_sample_params_default(&p);
    p.presence_penalty = 1.0f; /* 2 - 1 = 1 still beats 0.5 */
    assert_int_equal(mk_sampler_create(&p, 3, &sm), MK_OK);
    memcpy(pw, pl, sizeof pw);
    assert_int_equal(mk_sampler_sample(sm, pw, seen, 3), 0);
    assert_true(pw[0] == 1.0f && pw[1] == 0.5f && pw[2] == -1.0f);
    mk_sampler_free(sm);
    p.presence_penalty = 0.0f;
    p.frequency_penalty = 1.0f; /* token 0 seen twice: 2 - 2 = 0 < 0.5 */
    assert_int_equal(mk_sampler_create(&p, 3, &sm), MK_OK);
    memcpy(pw, pl, sizeof pw);
    assert_int_equal(mk_sampler_sample(sm, pw, seen, 3), 1);
    assert_true(pw[0] == 0.0f && pw[2] == -1.0f);
    /* the counts do not leak into the next call */
    memcpy(pw, pl, sizeof pw);
    assert_int_equal(mk_sampler_sample(sm, pw, NULL, 0), 0);
    mk_sampler_free(sm);
    p.frequency_penalty = 2.5f;
    assert_int_equal(mk_sampler_create(&p, 3, &sm), MK_E_ARG);
    p.frequency_penalty = 0.0f;
    p.presence_penalty = NAN;
    assert_int_equal(mk_sampler_create(&p, 3, &sm), MK_E_ARG);
}

/* Rewinding an attention-only sequence: feed junk after a prefix, rewind to
 * the prefix, feed the real tokens: the logits equal (bitwise) an engine
 * that never saw the junk, with the same calls. A model with Gated DeltaNet
 * layers refuses to go back and keeps its state. */
static void test_rewind(void **st) {
    (void)st;
    mk_model *m = open_fx("qwen3moe-a/bf16");
    int V = mk_model_config(m)->vocab_size;
    int32_t ids[20], junk[10];
    for (int i = 0; i < 20; i++)
        ids[i] = (int32_t)((i * 37 + 11) % V);
    for (int i = 0; i < 10; i++)
        junk[i] = (int32_t)((i * 53 + 7) % V);
    float *a = malloc(10 * (size_t)V * sizeof(float)), *b = malloc(10 * (size_t)V * sizeof(float));
    assert_true(a && b);
    mk_engine *ea = engine(m, 32, 512, NULL), *eb = engine(m, 32, 512, NULL);
    assert_true(mk_engine_rewindable(ea));
    assert_int_equal(mk_engine_forward(ea, ids, 10, MK_LOGITS_NONE, NULL, NULL), MK_OK);
    assert_int_equal(mk_engine_forward(ea, ids + 10, 10, MK_LOGITS_ALL, a, NULL), MK_OK);
    assert_int_equal(mk_engine_forward(eb, ids, 10, MK_LOGITS_NONE, NULL, NULL), MK_OK);
    assert_int_equal(mk_engine_forward(eb, junk, 10, MK_LOGITS_ALL, b, NULL), MK_OK);
    assert_memory_not_equal(a, b, 10 * (size_t)V * sizeof(float)); /* the junk mattered */
    assert_int_equal(mk_engine_rewind(eb, 21), MK_E_ARG);
    assert_int_equal(mk_engine_rewind(eb, 10), MK_OK);
    assert_int_equal(mk_engine_pos(eb), 10);
    assert_int_equal(mk_engine_forward(eb, ids + 10, 10, MK_LOGITS_ALL, b, NULL), MK_OK);
    assert_memory_equal(a, b, 10 * (size_t)V * sizeof(float));
    mk_engine_free(ea);
    mk_engine_free(eb);
    mk_model_free(m);
    m = open_fx("qwen35moe-a/bf16");
    ea = engine(m, 32, 512, NULL);
    assert_false(mk_engine_rewindable(ea));
    assert_int_equal(mk_engine_forward(ea, ids, 10, MK_LOGITS_NONE, NULL, NULL), MK_OK);
    assert_int_equal(mk_engine_rewind(ea, 5), MK_E_UNSUPPORTED);
    assert_int_equal(mk_engine_pos(ea), 10);
    assert_int_equal(mk_engine_rewind(ea, 10), MK_OK); /* staying put is always possible */
    mk_engine_free(ea);
    mk_model_free(m);
    free(a);
    free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedules_attn),       cmocka_unit_test(test_schedules_gdn_grouped),
        cmocka_unit_test(test_schedules_gdn),        cmocka_unit_test(test_schedules_mla),
        cmocka_unit_test(test_errors),               cmocka_unit_test(test_expert_store_seam),
        cmocka_unit_test(test_sampler),              cmocka_unit_test(test_rewind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
