/* DeepSeek sparse attention (deepseek_v32, glm_moe_dsa): the lightning
 * indexer's selection and the sparse attention over it.
 *
 *  - the backend slot dsa_select against a double-precision reference
 *    written here, and its documented tie rule (equal scores: the LOWER
 *    position is kept) on hand-made scores with ties, ReLU zeros included;
 *  - layernorm (the indexer's k_norm) against a double reference;
 *  - attention with a selection of the whole past is bitwise the dense
 *    attention, and with a subset equals a reference over that subset;
 *  - on both fixtures (index_topk 24, 256 tokens): one prefill, a chunked
 *    prefill (chunks of 7) and cached decode after a 128-token prefill
 *    select exactly the same positions at every layer and position, each
 *    matching transformers' long_logits (rel L2 <= 1e-3, same argmax);
 *  - the indexer's key cache is counted in the KV bytes per token;
 *  - glm_moe_dsa's "shared" indexer layers reuse the previous selection,
 *    and a first layer "shared" is refused;
 *  - a backend without the DSA slots (CUDA) refuses the model by name. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mk_test_util.h"
#include "moekit/backend.h"
#include "moekit/backend_cuda.h"
#include "moekit/config.h"
#include "moekit/engine.h"
#include "moekit/kernels.h"
#include "moekit/model.h"
#include "moekit/sample.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform in [-1, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((g_rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static mk_backend *cpu(mk_pool **pool) {
    mk_backend *b = NULL;
    assert_int_equal(mk_pool_create(2, pool), MK_OK);
    assert_int_equal(mk_backend_cpu_create(*pool, &b), MK_OK);
    return b;
}

/* One dsa_select call on the CPU backend. */
static void select_cpu(const float *q, const float *k, const float *w, float w_scale, float scale,
                       int64_t n, int64_t pos0, int nh, int dim, int topk, int32_t *sel) {
    mk_pool *pool;
    mk_backend *b = cpu(&pool);
    float *sc = calloc((size_t)(n * topk), sizeof(float));
    mk_dsa_args a = {.q = q, .k = k, .w = w, .w_scale = w_scale, .scale = scale, .sel = sel,
                     .sc = sc, .n = n, .pos0 = pos0, .n_heads = nh, .dim = dim, .topk = topk};
    mk_backend_iface(b)->dsa_select(mk_backend_ctx(b), &a);
    free(sc);
    mk_backend_free(b);
    mk_pool_free(pool);
}

/* Tie rule on hand-made scores: one head of one dim, q = 1, w = +-1, so
 * score(s) = w relu(k[s]). */
static void test_tie_rule(void **st) {
    (void)st;
    const float k[] = {3, 1, 3, 2, 3, -5, 1, 0};
    float q = 1, wp = 1, wn = -1;
    int32_t sel[8];
    /* positive weights: 3@0, 3@2, 3@4, then 2@3, then 1@1 and 1@6 tie (1 wins), then 0s */
    struct {
        int topk;
        int32_t want[8];
    } pos[] = {{3, {0, 2, 4}}, {4, {0, 2, 3, 4}}, {5, {0, 1, 2, 3, 4}}, {6, {0, 1, 2, 3, 4, 6}},
               {7, {0, 1, 2, 3, 4, 5, 6}}}; /* the ReLU zeros at 5 and 7: 5 first */
    for (size_t c = 0; c < sizeof pos / sizeof pos[0]; c++) {
        select_cpu(&q, k, &wp, 1.0f, 1.0f, 1, 7, 1, 1, pos[c].topk, sel);
        for (int j = 0; j < pos[c].topk; j++)
            assert_int_equal(sel[j], pos[c].want[j]);
    }
    /* negative weight: scores -3,-1,-3,-2,-3,0,-1,0: 0@5 and 0@7 tie (5), then -1@1, -1@6 (1) */
    select_cpu(&q, k, &wn, 1.0f, 1.0f, 1, 7, 1, 1, 3, sel);
    assert_int_equal(sel[0], 1);
    assert_int_equal(sel[1], 5);
    assert_int_equal(sel[2], 7);
    /* all scores equal (q = 0): the lowest positions; short rows end in -1 */
    float qz[2] = {0, 0}, w2[2] = {1, 1};
    int32_t s2[2 * 4];
    select_cpu(qz, k, w2, 1.0f, 1.0f, 2, 1, 1, 1, 4, s2); /* tokens at positions 1 and 2 */
    const int32_t want2[] = {0, 1, -1, -1, 0, 1, 2, -1};
    for (int j = 0; j < 8; j++)
        assert_int_equal(s2[j], want2[j]);
}

/* Random heads against a double reference (random scores have no ties):
 * the same set, ascending, causal. */
static void test_select_random(void **st) {
    (void)st;
    enum { NH = 5, DIM = 24, N = 40, POS0 = 23, TOPK = 16 };
    int64_t T = POS0 + N;
    float *q = malloc(sizeof(float) * N * NH * DIM), *k = malloc(sizeof(float) * T * DIM);
    float w[N * NH];
    for (int i = 0; i < N * NH * DIM; i++)
        q[i] = frand();
    for (int i = 0; i < T * DIM; i++)
        k[i] = frand();
    for (int i = 0; i < N * NH; i++)
        w[i] = frand();
    int32_t *sel = malloc(sizeof(int32_t) * N * TOPK);
    float ws = 1.0f / sqrtf(NH), sc = 1.0f / sqrtf(DIM);
    select_cpu(q, k, w, ws, sc, N, POS0, NH, DIM, TOPK, sel);
    double *score = malloc(sizeof(double) * (size_t)T);
    for (int t = 0; t < N; t++) {
        int64_t P = POS0 + t + 1;
        int m = P < TOPK ? (int)P : TOPK;
        for (int64_t s = 0; s < P; s++) {
            double x = 0;
            for (int h = 0; h < NH; h++) {
                double d = 0;
                for (int i = 0; i < DIM; i++)
                    d += (double)q[(t * NH + h) * DIM + i] * k[s * DIM + i];
                d *= sc;
                x += (double)w[t * NH + h] * ws * (d > 0 ? d : 0);
            }
            score[s] = x;
        }
        /* the reference set: s is kept iff fewer than m positions beat it */
        int kept = 0;
        for (int64_t s = 0; s < P; s++) {
            int better = 0;
            for (int64_t r = 0; r < P; r++)
                better += score[r] > score[s] || (score[r] == score[s] && r < s);
            if (better < m) {
                assert_true(kept < m);
                assert_int_equal(sel[t * TOPK + kept], (int32_t)s); /* ascending */
                kept++;
            }
        }
        assert_int_equal(kept, m);
        for (int j = m; j < TOPK; j++)
            assert_int_equal(sel[t * TOPK + j], -1);
    }
    free(score);
    free(sel);
    free(q);
    free(k);
}

static void test_layernorm(void **st) {
    (void)st;
    enum { R = 3, D = 37 };
    float x[R * D], y[R * D], g[D], b[D];
    for (int i = 0; i < R * D; i++)
        x[i] = 3.0f * frand() + 0.5f;
    for (int i = 0; i < D; i++) {
        g[i] = frand();
        b[i] = frand();
    }
    mk_pool *pool;
    mk_backend *be = cpu(&pool);
    mk_backend_iface(be)->layernorm(mk_backend_ctx(be), y, x, g, b, R, D, 1e-6f);
    for (int r = 0; r < R; r++) {
        double m = 0, v = 0;
        for (int i = 0; i < D; i++)
            m += x[r * D + i];
        m /= D;
        for (int i = 0; i < D; i++)
            v += (x[r * D + i] - m) * (x[r * D + i] - m);
        v /= D;
        for (int i = 0; i < D; i++) {
            double want = (x[r * D + i] - m) / sqrt(v + 1e-6) * g[i] + b[i];
            assert_true(fabs(y[r * D + i] - want) <= 1e-5 * (1 + fabs(want)));
        }
    }
    mk_backend_free(be);
    mk_pool_free(pool);
}

/* Attention over a selection: the whole past is bitwise the dense path; a
 * subset matches a double reference over exactly that subset. */
static void test_sel_attention(void **st) {
    (void)st;
    enum { NH = 4, DK = 16, DV = 8, N = 6, POS0 = 10, SK = 32, T = POS0 + N };
    float q[N * NH * DK], k[T * DK], v[T * DV], dense[N * NH * DV], sparse[N * NH * DV];
    for (int i = 0; i < N * NH * DK; i++)
        q[i] = frand();
    for (int i = 0; i < T * DK; i++)
        k[i] = frand();
    for (int i = 0; i < T * DV; i++)
        v[i] = frand();
    int32_t all[N * SK], sub[N * SK];
    for (int t = 0; t < N; t++)
        for (int j = 0; j < SK; j++) {
            all[t * SK + j] = j <= POS0 + t ? j : -1;
            sub[t * SK + j] = j <= (POS0 + t) / 3 ? 3 * j : -1; /* every third position */
        }
    mk_pool *pool;
    mk_backend *be = cpu(&pool);
    const mk_backend_i *bi = mk_backend_iface(be);
    mk_attn_args a = {.q = q, .k = k, .v = v, .out = dense, .n = N, .pos0 = POS0, .n_heads = NH,
                      .n_kv = 1, .dk = DK, .dv = DV, .scale = 0.25f};
    bi->attention(mk_backend_ctx(be), &a);
    a.out = sparse;
    a.sel = all;
    a.sel_k = SK;
    bi->attention(mk_backend_ctx(be), &a);
    assert_memory_equal(dense, sparse, sizeof dense);
    a.sel = sub;
    bi->attention(mk_backend_ctx(be), &a);
    for (int t = 0; t < N; t++)
        for (int h = 0; h < NH; h++) {
            double p[SK], mx = -INFINITY, sum = 0, o[DV] = {0};
            int m = 0;
            for (int64_t s = 0; s <= POS0 + t; s += 3, m++) {
                double d = 0;
                for (int i = 0; i < DK; i++)
                    d += (double)q[(t * NH + h) * DK + i] * k[s * DK + i];
                p[m] = d * 0.25;
                mx = p[m] > mx ? p[m] : mx;
            }
            for (int j = 0; j < m; j++)
                sum += (p[j] = exp(p[j] - mx));
            for (int j = 0; j < m; j++)
                for (int i = 0; i < DV; i++)
                    o[i] += p[j] / sum * v[3 * j * DV + i];
            for (int i = 0; i < DV; i++)
                assert_true(fabs(sparse[(t * NH + h) * DV + i] - o[i]) <= 1e-5);
        }
    mk_backend_free(be);
    mk_pool_free(pool);
}

/* ---- the fixtures ---------------------------------------------------------- */

enum { LONG = 256, MAXL = 4, TOPK = 24 };

/* Selections seen, per layer and position: count and positions. */
typedef struct seen {
    int count[MAXL][LONG];
    int32_t pos[MAXL][LONG][TOPK];
    int calls;
} seen;

static void on_select(void *user, int layer, int64_t pos, int count, const int32_t *p) {
    seen *s = user;
    assert_true(layer >= 0 && layer < MAXL && pos >= 0 && pos < LONG && count <= TOPK);
    s->count[layer][pos] = count;
    memcpy(s->pos[layer][pos], p, (size_t)count * sizeof *p);
    s->calls++;
}

static json_t *load_json(const char *rel) {
    json_error_t je;
    json_t *j = json_load_file(mk_test_fixture(rel), 0, &je);
    if (!j)
        fail_msg("%s: %s", rel, je.text);
    return j;
}

static double rel_l2(const float *x, const float *ref, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)x[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return sqrt(num / den);
}

/* Rows r0.. of logits vs the reference rows: rel L2 <= 1e-3, same argmax. */
static void check_rows(const char *what, const float *lg, const float *ref, int64_t r0, int64_t nr,
                       int64_t V) {
    double e = rel_l2(lg, ref + r0 * V, nr * V);
    int bad = 0;
    for (int64_t t = 0; t < nr; t++)
        bad += mk_argmax(lg + t * V, V) != mk_argmax(ref + (r0 + t) * V, V);
    printf("  %-40s rel %.3e argmax mismatches %d\n", what, e, bad);
    assert_true(e <= 1e-3);
    assert_int_equal(bad, 0);
}

/* Run the 256 long ids: mode 0 one prefill, 1 chunks of 7, 2 a 128-token
 * prefill then one token at a time; logits checked against long_logits. */
static void run_long(const mk_model *m, const int32_t *ids, const float *ref, int mode, seen *s,
                     const char *name) {
    int64_t V = mk_model_config(m)->vocab_size;
    mk_engine_opts o = {.threads = 2, .max_ctx = LONG, .prefill_chunk = mode == 1 ? 7 : LONG,
                        .on_select = on_select, .on_select_user = s};
    mk_engine *e = NULL;
    if (mk_engine_create(m, &o, &e) != MK_OK)
        fail_msg("engine: %s", mk_err_msg());
    float *lg = malloc(sizeof(float) * (size_t)(LONG * V));
    char what[128];
    if (mode < 2) {
        assert_int_equal(mk_engine_forward(e, ids, LONG, MK_LOGITS_ALL, lg, NULL), MK_OK);
        snprintf(what, sizeof what, "%s %s", name, mode ? "chunked prefill (7)" : "one prefill");
        check_rows(what, lg, ref, 0, LONG, V);
    } else {
        assert_int_equal(mk_engine_forward(e, ids, 128, MK_LOGITS_ALL, lg, NULL), MK_OK);
        for (int64_t t = 128; t < LONG; t++)
            assert_int_equal(mk_engine_forward(e, ids + t, 1, MK_LOGITS_LAST, lg + t * V, NULL), MK_OK);
        snprintf(what, sizeof what, "%s prefill 128 + decode 128", name);
        check_rows(what, lg, ref, 0, LONG, V);
    }
    free(lg);
    mk_engine_free(e);
}

static void fixture_selection(const char *dir) {
    char rel[512];
    snprintf(rel, sizeof rel, "%s/bf16", dir);
    mk_model *m = NULL;
    if (mk_model_open(mk_test_fixture(rel), &m) != MK_OK)
        fail_msg("open %s: %s", rel, mk_err_msg());
    const mk_config *c = mk_model_config(m);
    assert_int_equal(c->index_topk, TOPK);
    assert_true(c->num_layers <= MAXL);
    /* the indexer's keys are KV cache: MLA's latent row plus index_head_dim per layer */
    {
        mk_engine *e = NULL;
        mk_engine_opts o = {.threads = 1, .max_ctx = 64};
        assert_int_equal(mk_engine_create(m, &o, &e), MK_OK);
        assert_int_equal(mk_engine_kv_bytes_per_token(e),
                         (size_t)c->num_layers *
                             (c->kv_lora_rank + c->qk_rope_head_dim + c->index_head_dim) * sizeof(float));
        mk_engine_free(e);
        /* and in the arena that --memory-budget counts: 64 more positions cost exactly 64
         * rows of every cache, indexer keys included (chunk fixed, so scratch is unchanged) */
        mk_engine_opts a = {.threads = 1, .max_ctx = 64, .prefill_chunk = 16}, b = a;
        b.max_ctx = 128;
        assert_int_equal(mk_engine_bytes(m, &b) - mk_engine_bytes(m, &a),
                         64 * (size_t)c->num_layers *
                             (c->kv_lora_rank + c->qk_rope_head_dim + c->index_head_dim) * sizeof(float));
    }
    snprintf(rel, sizeof rel, "%s/long.json", dir);
    json_t *lj = load_json(rel);
    json_t *arr = json_object_get(lj, "input_ids");
    assert_int_equal(json_array_size(arr), LONG);
    int32_t ids[LONG];
    for (int i = 0; i < LONG; i++)
        ids[i] = (int32_t)json_integer_value(json_array_get(arr, (size_t)i));
    json_decref(lj);
    snprintf(rel, sizeof rel, "%s/long_logits.f32", dir);
    size_t nb;
    float *ref = mk_test_slurp(mk_test_fixture(rel), &nb);
    assert_non_null(ref);
    assert_int_equal(nb, sizeof(float) * (size_t)(LONG * c->vocab_size));
    seen *s = calloc(3, sizeof *s);
    for (int mode = 0; mode < 3; mode++)
        run_long(m, ids, ref, mode, &s[mode], dir);
    int L = c->num_layers, sparse_rows = 0;
    for (int mode = 0; mode < 3; mode++)
        assert_int_equal(s[mode].calls, L * LONG);
    for (int l = 0; l < L; l++)
        for (int p = 0; p < LONG; p++) {
            int want = p + 1 < TOPK ? p + 1 : TOPK; /* dense below index_topk, sparse beyond */
            assert_int_equal(s[0].count[l][p], want);
            for (int j = 0; j < want; j++) {
                assert_true(s[0].pos[l][p][j] <= p); /* causal */
                if (j)
                    assert_true(s[0].pos[l][p][j] > s[0].pos[l][p][j - 1]); /* ascending */
            }
            for (int mode = 1; mode < 3; mode++) {
                assert_int_equal(s[mode].count[l][p], want);
                if (memcmp(s[mode].pos[l][p], s[0].pos[l][p], sizeof(int32_t) * (size_t)want))
                    fail_msg("%s layer %d position %d: %s selects other positions than one prefill",
                             dir, l, p, mode == 1 ? "chunked prefill" : "cached decode");
            }
            /* a sparse row that is not simply the most recent positions */
            sparse_rows += p >= TOPK && s[0].pos[l][p][0] != p - TOPK + 1;
        }
    printf("  %s: %d layers x %d positions select the same positions in all three runs; %d sparse "
           "rows skip recent positions\n", dir, L, LONG, sparse_rows);
    assert_true(sparse_rows > 0);
    free(s);
    free(ref);
    mk_model_free(m);
}

static void test_deepseekv32_selection(void **st) {
    (void)st;
    fixture_selection("deepseekv32-a");
}

static void test_glm5dsa_selection(void **st) {
    (void)st;
    fixture_selection("glm5dsa-a");
}

/* glm5dsa-a with indexer_types edited: [full, shared, full] runs (layer 1
 * selects what layer 0 did, and has no indexer cache); [shared, ...] is
 * refused; without indexer_types the flags come from index_topk_pattern or
 * index_topk_freq / index_skip_topk_offset as transformers derives them;
 * deepseek_v32 refuses indexer_types. The weights are the fixture's (a
 * symlink). */
static void test_glm5dsa_shared(void **st) {
    (void)st;
    const char *src = mk_test_fixture("glm5dsa-a/bf16");
    char *dir = mk_test_tmpdir("dsa_shared");
    char p[1024], q[1024];
    snprintf(p, sizeof p, "%s/model.safetensors", src);
    snprintf(q, sizeof q, "%s/model.safetensors", dir);
    assert_int_equal(symlink(p, q), 0);
    snprintf(p, sizeof p, "%s/config.json", src);
    json_error_t je;
    json_t *cfg = json_load_file(p, 0, &je);
    assert_non_null(cfg);
    snprintf(q, sizeof q, "%s/config.json", dir);
    json_object_set_new(cfg, "indexer_types", json_pack("[s,s,s]", "shared", "full", "full"));
    assert_int_equal(json_dump_file(cfg, q, 0), 0);
    mk_model *m = NULL;
    assert_int_equal(mk_model_open(dir, &m), MK_E_FORMAT);
    assert_non_null(strstr(mk_err_msg(), "indexer_types"));
    /* without indexer_types, the flags transformers derives (pattern, else freq / offset) */
    json_object_del(cfg, "indexer_types");
    static const struct {
        const char *key;
        const char *json;
        unsigned char want[3];
    } der[] = {{"index_topk_pattern", "\"FSF\"", {0, 1, 0}},
               {"index_topk_pattern", "[\"full\", \"full\", \"shared\"]", {0, 0, 1}},
               {"index_topk_freq", "2", {0, 0, 1}}, /* offset 2: max(i - 1, 0) % 2 */
               {"index_skip_topk_offset", "1", {0, 0, 0}}}; /* freq 1: all full */
    for (size_t i = 0; i < sizeof der / sizeof der[0]; i++) {
        json_t *v = json_loads(der[i].json, JSON_DECODE_ANY, NULL);
        json_object_set_new(cfg, der[i].key, v);
        assert_int_equal(json_dump_file(cfg, q, 0), 0);
        mk_config dc;
        if (mk_config_load(dir, &dc) != MK_OK)
            fail_msg("%s %s: %s", der[i].key, der[i].json, mk_err_msg());
        assert_non_null(dc.index_shared);
        assert_memory_equal(dc.index_shared, der[i].want, 3);
        mk_config_free(&dc);
        json_object_del(cfg, der[i].key);
    }
    /* transformers' DSA attention always interleaves MLA's RoPE: false is refused */
    json_object_set_new(cfg, "rope_interleave", json_false());
    assert_int_equal(json_dump_file(cfg, q, 0), 0);
    assert_int_equal(mk_model_open(dir, &m), MK_E_UNSUPPORTED);
    assert_non_null(strstr(mk_err_msg(), "rope_interleave"));
    json_object_del(cfg, "rope_interleave");
    /* deepseek_v32 has no shared layers: its config may not claim them */
    json_object_set_new(cfg, "model_type", json_string("deepseek_v32"));
    json_object_set_new(cfg, "indexer_types", json_pack("[s,s,s]", "full", "full", "full"));
    assert_int_equal(json_dump_file(cfg, q, 0), 0);
    assert_int_equal(mk_model_open(dir, &m), MK_E_UNSUPPORTED);
    assert_non_null(strstr(mk_err_msg(), "indexer_types"));
    json_object_set_new(cfg, "model_type", json_string("glm_moe_dsa"));
    json_object_set_new(cfg, "indexer_types", json_pack("[s,s,s]", "full", "shared", "full"));
    assert_int_equal(json_dump_file(cfg, q, 0), 0);
    json_decref(cfg);
    if (mk_model_open(dir, &m) != MK_OK)
        fail_msg("open: %s", mk_err_msg());
    const mk_config *c = mk_model_config(m);
    seen *s = calloc(1, sizeof *s);
    mk_engine_opts o = {.threads = 2, .max_ctx = 64, .on_select = on_select, .on_select_user = s};
    mk_engine *e = NULL;
    assert_int_equal(mk_engine_create(m, &o, &e), MK_OK);
    assert_int_equal(mk_engine_kv_bytes_per_token(e),
                     (size_t)(3 * (c->kv_lora_rank + c->qk_rope_head_dim) + 2 * c->index_head_dim) *
                         sizeof(float));
    int32_t ids[64];
    for (int i = 0; i < 64; i++)
        ids[i] = (i * 37 + 11) % c->vocab_size;
    float *lg = malloc(sizeof(float) * (size_t)c->vocab_size);
    assert_int_equal(mk_engine_forward(e, ids, 64, MK_LOGITS_LAST, lg, NULL), MK_OK);
    for (int pos = 0; pos < 64; pos++) {
        assert_int_equal(s->count[1][pos], s->count[0][pos]);
        assert_memory_equal(s->pos[1][pos], s->pos[0][pos], sizeof(int32_t) * (size_t)s->count[0][pos]);
    }
    free(lg);
    free(s);
    mk_engine_free(e);
    mk_model_free(m);
    mk_test_rmrf(dir);
    free(dir);
}

/* A backend without dsa_select / layernorm (CUDA today) refuses the model
 * by name instead of running dense attention. */
static void test_cuda_refuses(void **st) {
    (void)st;
    mk_backend *b = NULL;
    if (mk_backend_cuda_create(0, &b) != MK_OK) {
        printf("SKIP: no CUDA backend: %s\n", mk_err_msg());
        skip();
    }
    mk_model *m = NULL;
    assert_int_equal(mk_model_open(mk_test_fixture("deepseekv32-a/bf16"), &m), MK_OK);
    mk_engine_opts o = {.max_ctx = 64, .backend = b};
    mk_engine *e = NULL;
    assert_int_equal(mk_engine_create(m, &o, &e), MK_E_UNSUPPORTED);
    assert_non_null(strstr(mk_err_msg(), "sparse attention"));
    mk_model_free(m);
    mk_backend_free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tie_rule),
        cmocka_unit_test(test_select_random),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_sel_attention),
        cmocka_unit_test(test_deepseekv32_selection),
        cmocka_unit_test(test_glm5dsa_selection),
        cmocka_unit_test(test_glm5dsa_shared),
        cmocka_unit_test(test_cuda_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
