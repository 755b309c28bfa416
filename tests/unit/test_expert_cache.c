/* The expert cache's bookkeeping and policies (src/engine/expert_cache.c):
 * LRU order, pins, the FREQ policy keeping a hot expert through a burst,
 * Belady's hit rate against an exhaustive search over every eviction
 * choice on small traces, and the policies on a real routing trace: the
 * trained demo model routing held-out text (models/tiny-qwen35moe/devtext)
 * with a cache of a quarter of its experts, where FREQ must beat LRU and
 * neither may beat the oracle. */
#include "mk_test_util.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/expert_cache.h"
#include "moekit/engine.h"
#include "moekit/model.h"
#include "moekit/tokenizer.h"

static void test_lru_and_pins(void **st) {
    (void)st;
    mk_ecache *c;
    assert_int_equal(mk_ecache_create(2, 1, 8, MK_ECACHE_LRU, 0, &c), MK_OK);
    int ol, oe;
    assert_int_equal(mk_ecache_use(c, 0, 1), -1);
    int s1 = mk_ecache_claim(c, 0, 1, &ol, &oe);
    assert_true(s1 >= 0 && ol == -1);
    assert_int_equal(mk_ecache_use(c, 0, 2), -1);
    int s2 = mk_ecache_claim(c, 0, 2, &ol, &oe);
    assert_true(s2 >= 0 && s2 != s1 && ol == -1);
    /* both pinned (claimed): no victim */
    assert_int_equal(mk_ecache_use(c, 0, 3), -1);
    assert_int_equal(mk_ecache_claim(c, 0, 3, &ol, &oe), -1);
    mk_ecache_unpin(c, s1);
    mk_ecache_unpin(c, s2);
    assert_int_equal(mk_ecache_use(c, 0, 1), s1); /* 1 used after 2: 2 is least recent */
    int s3 = mk_ecache_claim(c, 0, 3, &ol, &oe);
    assert_int_equal(s3, s2);
    assert_true(ol == 0 && oe == 2);
    assert_int_equal(mk_ecache_use(c, 0, 2), -1); /* evicted */
    mk_ecache_unpin(c, s3);
    mk_ecache_pin_forever(c, s1); /* expert 1 stays for good */
    for (int e = 4; e < 8; e++) {
        assert_int_equal(mk_ecache_use(c, 0, e), -1);
        int s = mk_ecache_claim(c, 0, e, &ol, &oe);
        assert_int_equal(s, s3);
        mk_ecache_unpin(c, s);
    }
    assert_int_equal(mk_ecache_use(c, 0, 1), s1);
    mk_ecache_drop(c, s3);
    assert_int_equal(mk_ecache_use(c, 0, 7), -1);
    mk_ecache_free(c);
}

/* One hot expert, then a burst of 3 one-off experts, ten times over, with 2
 * slots: LRU always loses the hot expert to the burst; FREQ loses it once
 * (on first sight its score is no better than a one-off's) and keeps it
 * for the 8 rounds after it came back. */
static void test_freq_keeps_hot(void **st) {
    (void)st;
    for (int pol = 0; pol < 2; pol++) {
        mk_ecache *c;
        assert_int_equal(mk_ecache_create(2, 1, 64, (mk_ecache_policy)pol, 64, &c), MK_OK);
        int hits = 0, ol, oe, next = 1;
        for (int round = 0; round < 10; round++) {
            int seq[4] = {0, next, next + 1, next + 2};
            next += 3;
            for (int i = 0; i < 4; i++) {
                int s = mk_ecache_use(c, 0, seq[i]);
                if (s >= 0) {
                    hits += seq[i] == 0;
                    continue;
                }
                s = mk_ecache_claim(c, 0, seq[i], &ol, &oe);
                assert_true(s >= 0);
                mk_ecache_unpin(c, s);
            }
        }
        if (pol == MK_ECACHE_LRU)
            assert_int_equal(hits, 0);
        else
            assert_int_equal(hits, 8);
        mk_ecache_free(c);
    }
}

/* Exhaustive optimum: every choice of victim at every miss (no bypass: an
 * accessed key must be loaded), the same step rule. */
static size_t best_hits(const uint32_t *k, const uint32_t *s, size_t n, size_t i, uint32_t *res,
                        uint32_t *rstep, int nres, int nslots) {
    if (i == n)
        return 0;
    for (int j = 0; j < nres; j++)
        if (res[j] == k[i]) {
            uint32_t o = rstep[j];
            rstep[j] = s[i];
            size_t h = 1 + best_hits(k, s, n, i + 1, res, rstep, nres, nslots);
            rstep[j] = o;
            return h;
        }
    if (nres < nslots) {
        res[nres] = k[i];
        rstep[nres] = s[i];
        return best_hits(k, s, n, i + 1, res, rstep, nres + 1, nslots);
    }
    size_t best = 0;
    bool any = false; /* a victim outside this step exists */
    for (int j = 0; j < nres; j++)
        any = any || rstep[j] != s[i];
    for (int j = 0; j < nres; j++) {
        if (any && rstep[j] == s[i])
            continue;
        uint32_t ok = res[j], os = rstep[j];
        res[j] = k[i];
        rstep[j] = s[i];
        size_t h = best_hits(k, s, n, i + 1, res, rstep, nres, nslots);
        best = h > best ? h : best;
        res[j] = ok;
        rstep[j] = os;
    }
    return best;
}

static void test_belady_is_optimal(void **st) {
    (void)st;
    srand(7);
    for (int trial = 0; trial < 300; trial++) {
        size_t n = 4 + (size_t)(rand() % 10);
        int nslots = 1 + rand() % 3, per = 1 + rand() % 2; /* accesses per step */
        uint32_t k[16], s[16], res[4], rstep[4];
        for (size_t i = 0; i < n; i++) {
            s[i] = (uint32_t)(i / (size_t)per);
            do /* distinct within a step */
                k[i] = (uint32_t)(rand() % 6);
            while (i % (size_t)per == 1 && k[i] == k[i - 1]);
        }
        double want = (double)best_hits(k, s, n, 0, res, rstep, 0, nslots) / (double)n;
        double got = mk_ecache_belady(k, s, n, nslots, 0);
        if (got != want)
            fail_msg("trial %d (n %zu, %d slots, %d per step): belady %g, exhaustive %g", trial, n,
                     nslots, per, got, want);
    }
    uint32_t k[3] = {1, 2, 1}, s[3] = {0, 0, 1};
    /* a step larger than the cache: 2 is loaded over 1, 1 misses again */
    assert_true(mk_ecache_belady(k, s, 3, 1, 0) == 0.0);
}

/* ---- a real trace ------------------------------------------------------- */

/* What a store sees: per forward call and layer, each distinct expert once
 * (acquire announces the set); call counts forward calls. */
typedef struct trace {
    uint32_t *keys, *steps;
    size_t n, cap;
    int n_experts;
    uint32_t call;
} trace;

static void on_route(void *user, int layer, int64_t pos, int k, const int32_t *experts,
                     const float *w) {
    (void)w;
    trace *t = user;
    (void)pos;
    uint32_t step = t->call * 1000u + (uint32_t)layer;
    for (int j = 0; j < k; j++) {
        uint32_t key = (uint32_t)(layer * t->n_experts + experts[j]);
        bool seen = false;
        for (size_t i = t->n; i-- > 0 && t->steps[i] == step;)
            seen = seen || t->keys[i] == key;
        if (seen)
            continue;
        if (t->n == t->cap) {
            t->cap = t->cap ? 2 * t->cap : 4096;
            t->keys = realloc(t->keys, t->cap * sizeof *t->keys);
            t->steps = realloc(t->steps, t->cap * sizeof *t->steps);
        }
        t->keys[t->n] = key;
        t->steps[t->n] = step;
        t->n++;
    }
}

static double simulate(const trace *t, int layers, int nslots, mk_ecache_policy pol, double h) {
    mk_ecache *c;
    assert_int_equal(mk_ecache_create(nslots, layers, t->n_experts, pol, h, &c), MK_OK);
    size_t hits = 0;
    int held[64], nh = 0, ol, oe;
    for (size_t i = 0; i < t->n; i++) {
        if (i && t->steps[i] != t->steps[i - 1]) { /* a step's experts are released together */
            for (int j = 0; j < nh; j++)
                mk_ecache_unpin(c, held[j]);
            nh = 0;
        }
        int L = (int)(t->keys[i] / (uint32_t)t->n_experts), e = (int)(t->keys[i] % (uint32_t)t->n_experts);
        int s = mk_ecache_use(c, L, e);
        if (s >= 0) {
            hits++;
            mk_ecache_pin(c, s);
        } else {
            s = mk_ecache_claim(c, L, e, &ol, &oe);
            assert_true(s >= 0);
        }
        held[nh++] = s;
    }
    mk_ecache_free(c);
    return (double)hits / (double)t->n;
}

static void test_policies_on_real_routing(void **st) {
    (void)st;
    const char *dir = mk_test_fixture("tiny-qwen35moe/bf16");
    char path[4096];
    snprintf(path, sizeof path, "%s/../devtext.txt", dir);
    size_t len;
    char *text = mk_test_slurp(path, &len);
    assert_non_null(text);
    mk_model *m;
    mk_tok *tok;
    assert_int_equal(mk_model_open(dir, &m), MK_OK);
    assert_int_equal(mk_tok_load(dir, &tok), MK_OK);
    int32_t *ids;
    size_t n;
    assert_int_equal(mk_tok_encode(tok, text, len, 0, &ids, &n), MK_OK);
    const mk_config *cfg = mk_model_config(m);
    trace t = {.n_experts = cfg->num_experts};
    mk_engine_opts o = {.threads = 1, .max_ctx = 512, .on_route = on_route, .on_route_user = &t};
    mk_engine *e;
    assert_int_equal(mk_engine_create(m, &o, &e), MK_OK);
    /* held-out text decoded token by token (a store sees one token's
     * experts per layer at a time), in windows of 512 positions */
    /* the sanitizer build (MK_TEST_SMALL=1) runs the path on 512 tokens and
     * checks only the oracle's bound; the policy bar is the main build's */
    bool small = getenv("MK_TEST_SMALL") && !strcmp(getenv("MK_TEST_SMALL"), "1");
    size_t want = small ? 512 : 4096, ntok = n < want ? n : want;
    for (size_t i = 0; i < ntok; i++, t.call++) {
        if (i % 512 == 0)
            mk_engine_reset(e);
        assert_int_equal(mk_engine_forward(e, ids + i, 1, MK_LOGITS_NONE, NULL, NULL), MK_OK);
    }
    int moe_layers = cfg->num_layers, slots = moe_layers * cfg->num_experts / 4;
    double lru = simulate(&t, moe_layers, slots, MK_ECACHE_LRU, 0);
    double freq = simulate(&t, moe_layers, slots, MK_ECACHE_FREQ, 0);
    double opt = mk_ecache_belady(t.keys, t.steps, t.n, slots, 0);
    printf("  %zu routed accesses, %d slots (1/4 of the experts): hit rate LRU %.4f, FREQ %.4f, "
           "Belady %.4f\n", t.n, slots, lru, freq, opt);
    assert_true(t.n >= ntok * (size_t)moe_layers);
    if (!small)
        assert_true(freq > lru);
    assert_true(opt >= freq && opt >= lru);
    free(t.keys);
    free(t.steps);
    free(ids);
    free(text);
    mk_engine_free(e);
    mk_tok_free(tok);
    mk_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lru_and_pins),
        cmocka_unit_test(test_freq_keeps_hot),
        cmocka_unit_test(test_belady_is_optimal),
        cmocka_unit_test(test_policies_on_real_routing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
