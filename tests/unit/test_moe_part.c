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
 * Batched decode over a partition (serve's slots under MPI): two engines'
 * worth ("ranks") of three sequences each, a prefill per sequence, then
 * batched decode steps over all three in a shuffled order, the follower
 * without logits: the lead's rows bitwise each sequence's one-token
 * forward alone on one engine; the lead's step_batch hook called once per
 * step naming the sequences (their partitions' users) in the batch's
 * order at their positions; one exchange per MoE layer per step on each
 * engine, for all the sequences. The same over a two-stage pipeline cut
 * after every layer: one hand-over of the batch's hidden rows and one of
 * its logits rows per step.
 *
 * Also: the exchange's failure fails the forward with its message; the
 * step hook sees every forward call's position and ids after validation
 * (a bad id never reaches it); an engine whose partition has a step hook
 * but no step_batch is not batched. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"

#include "moekit/backend.h"
#include "moekit/engine.h"
#include "moekit/kernels.h"
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

/* ---- batched decode over a partition: 2 engines' worth of sequences ---- */

#define BNS 3    /* sequences */
#define BSTEPS 3 /* batched decode steps */

typedef struct bseq {
    rank *k;
    int slot;
} bseq;

typedef struct brank {
    rank k;    /* its group, place, model */
    bool lead; /* announces steps (step, step_batch) and wants the logits */
    /* a pipeline stage instead of a partition (ln not NULL): layers [first, last) */
    stage_link *ln;
    int first, last;
    bool logits; /* computes or receives logits (the lead; a pipeline's last stage) */
    int xchg;    /* exchanges (a pipeline: hand-overs) so far */
    int batches; /* step_batch calls */
    int bslot[BSTEPS][BNS], bn[BSTEPS];
    int64_t bpos[BSTEPS][BNS];
    int xchg_per_step[BSTEPS];
} brank;

static void b_range(void *user, int layer, int32_t *lo, int32_t *hi) {
    p_range(((bseq *)user)->k, layer, lo, hi);
}
static mk_status b_exchange(void *user, const mk_moe_xchg *x) {
    rank *k = ((bseq *)user)->k;
    ((brank *)k)->xchg++;
    return p_exchange(k, x);
}
static mk_status b_step(void *user, const int32_t *ids, int64_t n, int64_t pos) {
    ((bseq *)user)->k->steps++;
    return MK_OK;
}
static mk_status b_step_batch(void *const *users, int n, const int32_t *ids, const int64_t *pos) {
    brank *b = (brank *)((bseq *)users[0])->k;
    int t = b->batches++;
    if (t < BSTEPS && n <= BNS) {
        b->bn[t] = n;
        for (int i = 0; i < n; i++) {
            b->bslot[t][i] = ((bseq *)users[i])->slot;
            b->bpos[t][i] = pos[i];
        }
    }
    return MK_OK;
}

/* a pipeline's hand-overs between the two stages (one engine each: each sends) */
static void b_hand(void *user, const float *src, float *dst, size_t nb) {
    brank *b = (brank *)((bseq *)user)->k;
    b->xchg++;
    if (src)
        b->ln->pub = src;
    pthread_barrier_wait(&b->ln->bar);
    if (dst)
        memcpy(dst, b->ln->pub, nb);
    pthread_barrier_wait(&b->ln->bar);
}
static mk_status bp_recv_hidden(void *user, int layer, int64_t pos, int64_t n, int64_t H, float *x) {
    b_hand(user, NULL, x, (size_t)(n * H) * sizeof(float));
    return MK_OK;
}
static mk_status bp_send_hidden(void *user, int layer, int64_t pos, int64_t n, int64_t H, const float *x) {
    b_hand(user, x, NULL, 0);
    return MK_OK;
}
static mk_status bp_recv_logits(void *user, int64_t pos, int64_t rows, int64_t V, float *logits) {
    b_hand(user, NULL, logits, (size_t)(rows * V) * sizeof(float));
    return MK_OK;
}
static mk_status bp_send_logits(void *user, int64_t pos, int64_t rows, int64_t V, const float *logits) {
    b_hand(user, logits, NULL, 0);
    return MK_OK;
}
static mk_status bp_step(void *user, const int32_t *ids, int64_t n, int64_t pos, int mode) {
    ((bseq *)user)->k->steps++;
    return MK_OK;
}

/* sequence i's prompt: 3 + 2i ids; step t's id of sequence i */
static int b_prompt(int i, int64_t V, int32_t *ids) {
    int n = 3 + 2 * i;
    for (int j = 0; j < n; j++)
        ids[j] = (int32_t)((j * 37 + i * 11 + 3) % V);
    return n;
}
static int32_t b_id(int t, int i, int64_t V) {
    return (int32_t)((t * 13 + i * 7 + 5) % V);
}
/* the batch's order of the sequences (not their slot order: the hook must name each) */
static const int b_order[BNS] = {2, 0, 1};

/* One rank: its sequences' engines (one backend), a prefill each, then
 * the batched steps over all of them. */
static mk_status brank_run(brank *b, mk_backend *be, mk_engine **es, bseq *sq, mk_moe_part *parts,
                           mk_layer_pipe *pipes) {
    rank *k = &b->k;
    int64_t V = mk_model_config(k->m)->vocab_size;
    for (int i = 0; i < BNS; i++) {
        sq[i] = (bseq){.k = k, .slot = i};
        parts[i] = (mk_moe_part){.user = &sq[i],
                                 .range = b_range,
                                 .exchange = b_exchange,
                                 .step = b->lead ? b_step : NULL,
                                 .step_batch = b->lead ? b_step_batch : NULL};
        pipes[i] = (mk_layer_pipe){.user = &sq[i],
                                   .first = b->first,
                                   .last = b->last,
                                   .recv_hidden = bp_recv_hidden,
                                   .send_hidden = bp_send_hidden,
                                   .recv_logits = bp_recv_logits,
                                   .send_logits = bp_send_logits,
                                   .step = b->lead ? bp_step : NULL,
                                   .step_batch = b->lead ? b_step_batch : NULL};
        mk_engine_opts o = {.max_ctx = 16, .backend = be};
        if (b->ln)
            o.layer_pipe = &pipes[i];
        else
            o.moe_part = &parts[i];
        MK_TRY(mk_engine_create(k->m, &o, &es[i]));
    }
    float lg[4096];
    if (V > 4096)
        return mk_err(MK_E_ARG, "vocabulary of %lld: the test's buffer holds 4096", (long long)V);
    for (int i = 0; i < BNS; i++) { /* prefill: one sequence at a time */
        int32_t ids[16];
        int n = b_prompt(i, V, ids);
        MK_TRY(mk_engine_forward(es[i], ids, n, MK_LOGITS_LAST, lg, NULL));
    }
    mk_engine *bat[BNS];
    for (int i = 0; i < BNS; i++)
        bat[i] = es[b_order[i]];
    if (!mk_engine_batchable(bat, BNS))
        return mk_err(MK_E_ARG, "the partitioned sequences are not batchable");
    for (int t = 0; t < BSTEPS; t++) { /* the lead's logits, none on the follower */
        int32_t ids[BNS];
        for (int i = 0; i < BNS; i++)
            ids[i] = b_id(t, b_order[i], V);
        int x0 = b->xchg;
        MK_TRY(mk_engine_decode_batch(bat, BNS, ids, b->logits ? k->logits + (int64_t)t * BNS * V : NULL));
        b->xchg_per_step[t] = b->xchg - x0;
    }
    return MK_OK;
}

static void *brank_main(void *arg) {
    brank *b = arg;
    bseq sq[BNS];
    mk_moe_part parts[BNS];
    mk_layer_pipe pipes[BNS];
    mk_engine *es[BNS] = {0};
    mk_pool *pool = NULL;
    mk_backend *be = NULL; /* one for the rank's engines: a batch shares one */
    mk_status st = mk_pool_create(1, &pool);
    if (st == MK_OK)
        st = mk_backend_cpu_create(pool, &be);
    if (st == MK_OK)
        st = brank_run(b, be, es, sq, parts, pipes);
    if (st != MK_OK) /* the other rank waits in a barrier: fail loudly */
        fprintf(stderr, "batch rank %d: %s\n", b->k.r, mk_err_msg()), abort();
    for (int i = 0; i < BNS; i++)
        mk_engine_free(es[i]);
    mk_backend_free(be);
    mk_pool_free(pool);
    return NULL;
}

/* The reference of the batched steps: each sequence alone on one engine,
 * every expert and layer, one token per call ([BSTEPS][BNS][V], the
 * batch's order). */
static float *batch_ref(const mk_model *m) {
    int64_t V = mk_model_config(m)->vocab_size;
    float *ref = malloc((size_t)(BSTEPS * BNS * V) * sizeof(float));
    assert_non_null(ref);
    mk_engine *re[BNS];
    for (int i = 0; i < BNS; i++) {
        mk_engine_opts o = {.threads = 1, .max_ctx = 16};
        assert_int_equal(mk_engine_create(m, &o, &re[i]), MK_OK);
        int32_t ids[16];
        int n = b_prompt(i, V, ids);
        assert_int_equal(mk_engine_forward(re[i], ids, n, MK_LOGITS_LAST, ref, NULL), MK_OK);
    }
    for (int t = 0; t < BSTEPS; t++)
        for (int i = 0; i < BNS; i++) { /* row i of step t: the batch's i-th sequence */
            int32_t id = b_id(t, b_order[i], V);
            assert_int_equal(mk_engine_forward(re[b_order[i]], &id, 1, MK_LOGITS_LAST,
                                               ref + ((int64_t)t * BNS + i) * V, NULL),
                             MK_OK);
        }
    for (int i = 0; i < BNS; i++)
        mk_engine_free(re[i]);
    return ref;
}

static void batch_fixture(const char *rel) {
    mk_model *m = NULL;
    assert_int_equal(mk_model_open(mk_test_fixture(rel), &m), MK_OK);
    const mk_config *c = mk_model_config(m);
    int64_t V = c->vocab_size;
    int moe = 0;
    for (int l = 0; l < c->num_layers; l++)
        moe += mk_config_layer_is_moe(c, l);
    float *ref = batch_ref(m);
    group g = {.n = 2, .E = c->num_experts};
    pthread_barrier_init(&g.bar, NULL, 2);
    brank br[2];
    pthread_t th[2];
    for (int r = 0; r < 2; r++) {
        br[r] = (brank){
            .k = {.g = &g, .r = r, .m = m, .logits = malloc((size_t)(BSTEPS * BNS * V) * sizeof(float))},
            .lead = r == 0,
            .logits = r == 0};
        assert_non_null(br[r].k.logits);
        assert_int_equal(pthread_create(&th[r], NULL, brank_main, &br[r]), 0);
    }
    for (int r = 0; r < 2; r++)
        pthread_join(th[r], NULL);
    pthread_barrier_destroy(&g.bar);
    if (memcmp(br[0].k.logits, ref, (size_t)(BSTEPS * BNS * V) * sizeof(float)))
        fail_msg("%s: the partitioned batched steps' logits differ from each sequence's alone", rel);
    /* the lead announced each forward call of a sequence (the prefills) and each batched step once,
     * naming the batch's sequences in its order at their positions; every batched step made one
     * exchange per MoE layer on each engine, for all its sequences */
    assert_int_equal(br[0].k.steps, BNS);
    assert_int_equal(br[0].batches, BSTEPS);
    assert_int_equal(br[1].batches, 0);
    for (int t = 0; t < BSTEPS; t++) {
        assert_int_equal(br[0].bn[t], BNS);
        for (int i = 0; i < BNS; i++) {
            int32_t ids[16];
            assert_int_equal(br[0].bslot[t][i], b_order[i]);
            assert_int_equal(br[0].bpos[t][i], b_prompt(b_order[i], V, ids) + t);
        }
        for (int r = 0; r < 2; r++)
            assert_int_equal(br[r].xchg_per_step[t], moe);
    }
    for (int r = 0; r < 2; r++)
        free(br[r].k.logits);
    free(ref);
    mk_model_free(m);
}

/* The same batched steps over a two-stage pipeline (one engine each), cut
 * after every layer: the first stage's rows (received from the last)
 * bitwise each sequence alone; its step_batch once per step; per step one
 * hand-over of the batch's hidden rows and one of its logits rows. */
static void batch_pipe_fixture(const char *rel) {
    mk_model *m = NULL;
    assert_int_equal(mk_model_open(mk_test_fixture(rel), &m), MK_OK);
    const mk_config *c = mk_model_config(m);
    int64_t V = c->vocab_size;
    float *ref = batch_ref(m);
    for (int cut = 1; cut < c->num_layers; cut++) {
        stage_link ln = {0};
        pthread_barrier_init(&ln.bar, NULL, 2);
        brank br[2];
        pthread_t th[2];
        for (int s = 0; s < 2; s++) {
            br[s] =
                (brank){.k = {.r = s, .m = m, .logits = malloc((size_t)(BSTEPS * BNS * V) * sizeof(float))},
                        .lead = s == 0,
                        .ln = &ln,
                        .first = s ? cut : 0,
                        .last = s ? c->num_layers : cut,
                        .logits = true};
            assert_non_null(br[s].k.logits);
            assert_int_equal(pthread_create(&th[s], NULL, brank_main, &br[s]), 0);
        }
        for (int s = 0; s < 2; s++)
            pthread_join(th[s], NULL);
        pthread_barrier_destroy(&ln.bar);
        for (int s = 0; s < 2; s++)
            if (memcmp(br[s].k.logits, ref, (size_t)(BSTEPS * BNS * V) * sizeof(float)))
                fail_msg("%s, stages cut at layer %d: stage %d's batched logits differ from each sequence "
                         "alone",
                         rel, cut, s);
        assert_int_equal(br[0].k.steps, BNS);
        assert_int_equal(br[0].batches, BSTEPS);
        assert_int_equal(br[1].batches, 0);
        for (int t = 0; t < BSTEPS; t++) {
            for (int i = 0; i < BNS; i++)
                assert_int_equal(br[0].bslot[t][i], b_order[i]);
            for (int s = 0; s < 2; s++)
                assert_int_equal(br[s].xchg_per_step[t], 2);
        }
        for (int s = 0; s < 2; s++)
            free(br[s].k.logits);
    }
    free(ref);
    mk_model_free(m);
}

static void t_batch(void **state) {
    (void)state;
    if (!mk_test_fixture("qwen3moe-a/bf16"))
        return;
    batch_fixture("qwen3moe-a/bf16");   /* attention, softmax router */
    batch_fixture("deepseekv3-a/bf16"); /* MLA, a dense first layer, shared experts */
    batch_fixture("qwen3next-a/bf16");  /* Gated DeltaNet, gated shared expert */
    batch_pipe_fixture("qwen3moe-a/bf16");
    batch_pipe_fixture("deepseekv3-a/bf16");
    batch_pipe_fixture("qwen3next-a/bf16");
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
    /* a partition announcing its steps but not batched ones is never batched (the batch would not
     * reach the other processes) */
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
        cmocka_unit_test(t_batch),
        cmocka_unit_test(t_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
