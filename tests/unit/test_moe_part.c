/* The engine's expert-partition seam (include/moekit/moe_part.h), without
 * MPI: N engines over one model, one per thread, each owning a contiguous
 * share of every MoE layer's routed experts, exchange pair rows through
 * memory (each engine publishes its pair buffer, a barrier, each copies the
 * rows of the experts it does not own from their owner's buffer, a
 * barrier), as src/dist does over MPI. Every engine's logits must be
 * bitwise those of one engine that owns every expert, for N = 2, 3 and 8
 * (with 8 experts and top-2 most ranks own none of a token's experts: the
 * empty share), over one prefill chunk and one token per chunk (decode's
 * path), on families with shared experts, Gated DeltaNet, MLA and biased
 * experts. The reference is the engine's own single-process forward, held
 * to transformers by test_engine_fixtures; here only equality matters.
 *
 * Both placements at once (src/dist's --mpi-mode both), also without MPI:
 * two pipeline stages (include/moekit/layer_pipe.h) of two engines each,
 * the engines of a stage splitting its routed experts; the stage's first
 * engine hands its residual stream to both engines of the next and the
 * last stage's first engine the logits back, through memory. Every
 * engine's logits must be one engine's, bitwise, for cuts after layer 1 and
 * layer 2, one prefill chunk and one token per chunk.
 *
 * Also: the exchange's failure fails the forward with its message; the
 * step hook sees every forward call's position and ids after validation
 * (a bad id never reaches it); an engine with a partition is not batched. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"

#include "moekit/engine.h"
#include "moekit/layer_pipe.h"
#include "moekit/model.h"
#include "moekit/moe_part.h"

#define MAXN 8
#define NIDS 24

typedef struct group {
    int n;
    int32_t E;
    pthread_barrier_t bar;
    float *pub[MAXN];
} group;

typedef struct rank {
    group *g;
    int r;
    const mk_model *m;
    int chunk;
    const int32_t *ids;
    float *logits;
    mk_status st;
    char msg[512];
    int steps;
    int64_t last_pos, last_n;
} rank;

static void range_of(const group *g, int r, int32_t *lo, int32_t *hi) {
    *lo = (int32_t)((int64_t)r * g->E / g->n);
    *hi = (int32_t)((int64_t)(r + 1) * g->E / g->n);
}

static void p_range(void *user, int layer, int32_t *lo, int32_t *hi) {
    rank *k = user;
    range_of(k->g, k->r, lo, hi);
}

static mk_status p_exchange(void *user, const mk_moe_xchg *x) {
    rank *k = user;
    group *g = k->g;
    g->pub[k->r] = x->pairs;
    pthread_barrier_wait(&g->bar);
    for (int q = 0; q < g->n; q++) {
        if (q == k->r)
            continue;
        int32_t lo, hi;
        range_of(g, q, &lo, &hi);
        int64_t b = lo ? x->ends[lo - 1] : 0, e = hi ? x->ends[hi - 1] : 0;
        for (int64_t i = b; i < e; i++)
            memcpy(x->pairs + (int64_t)x->order[i] * x->H, g->pub[q] + (int64_t)x->order[i] * x->H,
                   (size_t)x->H * sizeof(float));
    }
    pthread_barrier_wait(&g->bar); /* nobody reuses its rows before every copy is done */
    return MK_OK;
}

static mk_status p_step(void *user, const int32_t *ids, int64_t n, int64_t pos) {
    rank *k = user;
    k->steps++;
    k->last_pos = pos;
    k->last_n = n;
    return MK_OK;
}

static void *rank_main(void *arg) {
    rank *k = arg;
    mk_moe_part part = {.user = k, .range = p_range, .exchange = p_exchange, .step = p_step};
    mk_engine_opts o = {.threads = 1, .max_ctx = NIDS, .prefill_chunk = k->chunk, .moe_part = &part};
    mk_engine *e = NULL;
    k->st = mk_engine_create(k->m, &o, &e);
    if (k->st == MK_OK)
        k->st = mk_engine_forward(e, k->ids, NIDS, MK_LOGITS_ALL, k->logits, NULL);
    if (k->st != MK_OK)
        snprintf(k->msg, sizeof k->msg, "%s", mk_err_msg());
    mk_engine_free(e);
    return NULL;
}

static void one_fixture(const char *rel) {
    const char *dir = mk_test_fixture(rel);
    mk_model *m = NULL;
    assert_int_equal(mk_model_open(dir, &m), MK_OK);
    const mk_config *c = mk_model_config(m);
    int64_t V = c->vocab_size;
    int32_t ids[NIDS];
    for (int i = 0; i < NIDS; i++)
        ids[i] = (int32_t)((i * 37 + 11) % V);
    static const int chunks[] = {512, 1};
    static const int ns[] = {2, 3, 8};
    for (size_t ci = 0; ci < 2; ci++) {
        /* the reference: one engine, every expert */
        float *ref = malloc((size_t)(NIDS * V) * sizeof(float));
        assert_non_null(ref);
        mk_engine_opts o = {.threads = 1, .max_ctx = NIDS, .prefill_chunk = chunks[ci]};
        mk_engine *e = NULL;
        assert_int_equal(mk_engine_create(m, &o, &e), MK_OK);
        assert_int_equal(mk_engine_forward(e, ids, NIDS, MK_LOGITS_ALL, ref, NULL), MK_OK);
        mk_engine_free(e);
        for (size_t ni = 0; ni < 3; ni++) {
            int n = ns[ni];
            group g = {.n = n, .E = c->num_experts};
            pthread_barrier_init(&g.bar, NULL, (unsigned)n);
            rank rk[MAXN];
            pthread_t th[MAXN];
            for (int r = 0; r < n; r++) {
                rk[r] = (rank){.g = &g,
                               .r = r,
                               .m = m,
                               .chunk = chunks[ci],
                               .ids = ids,
                               .logits = malloc((size_t)(NIDS * V) * sizeof(float))};
                assert_non_null(rk[r].logits);
                assert_int_equal(pthread_create(&th[r], NULL, rank_main, &rk[r]), 0);
            }
            for (int r = 0; r < n; r++)
                pthread_join(th[r], NULL);
            pthread_barrier_destroy(&g.bar);
            for (int r = 0; r < n; r++) {
                if (rk[r].st != MK_OK)
                    fail_msg("%s, %d ranks, rank %d: %s", rel, n, r, rk[r].msg);
                if (memcmp(rk[r].logits, ref, (size_t)(NIDS * V) * sizeof(float)))
                    fail_msg("%s, chunk %d, %d ranks: rank %d's logits differ from one engine's", rel,
                             chunks[ci], n, r);
                assert_int_equal(rk[r].steps, 1); /* one forward call: one step, at 0, of every id */
                assert_int_equal(rk[r].last_pos, 0);
                assert_int_equal(rk[r].last_n, NIDS);
                free(rk[r].logits);
            }
        }
        free(ref);
    }
    mk_model_free(m);
}

static void t_bitwise(void **state) {
    (void)state;
    if (!mk_test_fixture("qwen3moe-a/bf16"))
        return;
    one_fixture("qwen3moe-a/bf16");   /* attention, softmax router */
    one_fixture("deepseekv3-a/bf16"); /* MLA, grouped sigmoid router, shared experts */
    one_fixture("qwen3next-a/bf16");  /* Gated DeltaNet, gated shared expert */
    one_fixture("gptoss-a/bf16");     /* biased clamped-SwiGLU experts */
}

/* ---- both placements: 2 stages x 2 engines ---- */

typedef struct stage_link {
    pthread_barrier_t bar; /* all four engines: publish, barrier, copy, barrier */
    const float *pub;      /* what the sending stage's first engine hands on */
} stage_link;

typedef struct prank {
    rank k; /* first: the partition hooks take it as their rank */
    stage_link *ln;
    bool lead; /* the stage's first engine: the one that sends */
    int first, last;
} prank;

static void hand(prank *p, const float *src, float *dst, size_t nb) {
    if (src && p->lead)
        p->ln->pub = src;
    pthread_barrier_wait(&p->ln->bar);
    if (dst)
        memcpy(dst, p->ln->pub, nb);
    pthread_barrier_wait(&p->ln->bar); /* the sender's rows stay put until every copy is done */
}
static mk_status s_recv_hidden(void *user, int layer, int64_t pos, int64_t n, int64_t H, float *x) {
    hand(user, NULL, x, (size_t)(n * H) * sizeof(float));
    return MK_OK;
}
static mk_status s_send_hidden(void *user, int layer, int64_t pos, int64_t n, int64_t H, const float *x) {
    hand(user, x, NULL, 0);
    return MK_OK;
}
static mk_status s_recv_logits(void *user, int64_t pos, int64_t rows, int64_t V, float *logits) {
    hand(user, NULL, logits, (size_t)(rows * V) * sizeof(float));
    return MK_OK;
}
static mk_status s_send_logits(void *user, int64_t pos, int64_t rows, int64_t V, const float *logits) {
    hand(user, logits, NULL, 0);
    return MK_OK;
}

static void *prank_main(void *arg) {
    prank *p = arg;
    rank *k = &p->k;
    mk_moe_part part = {.user = k, .range = p_range, .exchange = p_exchange};
    mk_layer_pipe pipe = {.user = p,
                          .first = p->first,
                          .last = p->last,
                          .recv_hidden = s_recv_hidden,
                          .send_hidden = s_send_hidden,
                          .recv_logits = s_recv_logits,
                          .send_logits = s_send_logits};
    mk_engine_opts o = {.threads = 1,
                        .max_ctx = NIDS,
                        .prefill_chunk = k->chunk,
                        .moe_part = &part,
                        .layer_pipe = &pipe};
    mk_engine *e = NULL;
    k->st = mk_engine_create(k->m, &o, &e);
    if (k->st == MK_OK)
        k->st = mk_engine_forward(e, k->ids, NIDS, MK_LOGITS_ALL, k->logits, NULL);
    if (k->st != MK_OK) /* no way to release the others from the barriers: fail loudly */
        fprintf(stderr, "stage engine: %s\n", mk_err_msg()), abort();
    mk_engine_free(e);
    return NULL;
}

static void both_fixture(const char *rel) {
    mk_model *m = NULL;
    assert_int_equal(mk_model_open(mk_test_fixture(rel), &m), MK_OK);
    const mk_config *c = mk_model_config(m);
    int64_t V = c->vocab_size;
    int32_t ids[NIDS];
    for (int i = 0; i < NIDS; i++)
        ids[i] = (int32_t)((i * 37 + 11) % V);
    static const int chunks[] = {512, 1};
    for (size_t ci = 0; ci < 2; ci++) {
        float *ref = malloc((size_t)(NIDS * V) * sizeof(float));
        assert_non_null(ref);
        mk_engine_opts o = {.threads = 1, .max_ctx = NIDS, .prefill_chunk = chunks[ci]};
        mk_engine *e = NULL;
        assert_int_equal(mk_engine_create(m, &o, &e), MK_OK);
        assert_int_equal(mk_engine_forward(e, ids, NIDS, MK_LOGITS_ALL, ref, NULL), MK_OK);
        mk_engine_free(e);
        for (int cut = 1; cut < c->num_layers; cut++) {
            group g[2] = {{.n = 2, .E = c->num_experts}, {.n = 2, .E = c->num_experts}};
            stage_link ln = {0};
            pthread_barrier_init(&g[0].bar, NULL, 2);
            pthread_barrier_init(&g[1].bar, NULL, 2);
            pthread_barrier_init(&ln.bar, NULL, 4);
            prank pk[4];
            pthread_t th[4];
            for (int q = 0; q < 4; q++) {
                int s = q / 2;
                pk[q] = (prank){.k = {.g = &g[s],
                                      .r = q % 2,
                                      .m = m,
                                      .chunk = chunks[ci],
                                      .ids = ids,
                                      .logits = malloc((size_t)(NIDS * V) * sizeof(float))},
                                .ln = &ln,
                                .lead = q % 2 == 0,
                                .first = s ? cut : 0,
                                .last = s ? c->num_layers : cut};
                assert_non_null(pk[q].k.logits);
                assert_int_equal(pthread_create(&th[q], NULL, prank_main, &pk[q]), 0);
            }
            for (int q = 0; q < 4; q++)
                pthread_join(th[q], NULL);
            pthread_barrier_destroy(&g[0].bar);
            pthread_barrier_destroy(&g[1].bar);
            pthread_barrier_destroy(&ln.bar);
            for (int q = 0; q < 4; q++) {
                if (memcmp(pk[q].k.logits, ref, (size_t)(NIDS * V) * sizeof(float)))
                    fail_msg("%s, chunk %d, stages cut at layer %d: engine %d's logits differ from one engine's",
                             rel, chunks[ci], cut, q);
                free(pk[q].k.logits);
            }
        }
        free(ref);
    }
    mk_model_free(m);
}

static void t_both(void **state) {
    (void)state;
    if (!mk_test_fixture("qwen3moe-a/bf16"))
        return;
    both_fixture("qwen3moe-a/bf16");   /* every layer MoE */
    both_fixture("deepseekv3-a/bf16"); /* a dense first layer: a stage of it has no exchange */
}

static mk_status x_fail(void *user, const mk_moe_xchg *x) {
    return mk_err(MK_E_IO, "test exchange: layer %d refused", x->layer);
}
static void own_all(void *user, int layer, int32_t *lo, int32_t *hi) {
    *lo = 0;
    *hi = 1; /* only expert 0 here: the rest must come from the exchange */
}
static int g_steps;
static mk_status count_step(void *user, const int32_t *ids, int64_t n, int64_t pos) {
    g_steps++;
    return MK_OK;
}

static void t_errors(void **state) {
    (void)state;
    const char *dir = mk_test_fixture("qwen3moe-a/bf16");
    if (!dir)
        return;
    mk_model *m = NULL;
    assert_int_equal(mk_model_open(dir, &m), MK_OK);
    mk_moe_part part = {.range = own_all, .exchange = x_fail, .step = count_step};
    mk_engine_opts o = {.threads = 1, .max_ctx = 8, .moe_part = &part};
    mk_engine *e = NULL;
    assert_int_equal(mk_engine_create(m, &o, &e), MK_OK);
    int32_t ids[2] = {1, 2}, bad[2] = {1, 1 << 30};
    float lg[2 * 512];
    /* a bad id is refused before the step hook: nothing reaches other processes */
    assert_int_equal(mk_engine_forward(e, bad, 2, MK_LOGITS_NONE, NULL, NULL), MK_E_ARG);
    assert_int_equal(g_steps, 0);
    assert_int_equal(mk_engine_forward(e, ids, 2, MK_LOGITS_ALL, lg, NULL), MK_E_IO);
    assert_non_null(strstr(mk_err_msg(), "test exchange: layer 0 refused"));
    assert_int_equal(g_steps, 1);
    /* a partitioned engine is never batched (its steps are replayed one by one elsewhere) */
    mk_engine *es[2] = {e, NULL};
    assert_false(mk_engine_batchable(es, 1));
    mk_engine_free(e);
    /* a partition without its calls is refused */
    mk_moe_part half = {.range = own_all};
    o.moe_part = &half;
    assert_int_equal(mk_engine_create(m, &o, &e), MK_E_ARG);
    mk_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_bitwise),
        cmocka_unit_test(t_both),
        cmocka_unit_test(t_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
