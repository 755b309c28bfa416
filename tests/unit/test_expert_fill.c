/* The warm fill of the streaming expert cache (mk_expert_store_fill,
 * src/engine/expert_fill.c and expert_store_stream.c; issue 11):
 *   - which experts: without a preference the same count of every MoE
 *     layer, lowest index first, the rest of the free slots left free; with
 *     one (a profile's ranking) the next ones after the pins; only experts
 *     of the given per-layer ranges (an MPI rank's share, a pipeline stage);
 *   - filled experts are ordinary entries with no use counted: the policy
 *     evicts an unused filled expert before any used one, the coldest first;
 *   - logits are bitwise those of the resident store with and without the
 *     fill, under both policies, and the fill changes nothing but the first
 *     use of each filled expert: hits with the fill = hits without it + the
 *     filled experts used (the same accesses, the same evictions otherwise);
 *   - a failed or short read during the fill (both reader backends, through
 *     the syscall table) is an error naming the expert, layer, file and
 *     offset; no slot keeps half-read bytes (the next run is bitwise equal
 *     to resident) and a second fill completes what the first began; a
 *     checkpoint changed on disk is refused; misuse is MK_E_ARG. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/os.h"
#include "mk_test_util.h"
#include "moekit/engine.h"
#include "moekit/expert_store.h"
#include "moekit/model.h"

#define NTOK 40

static char *g_tmp;

static int setup(void **state) {
    (void)state;
    g_tmp = mk_test_tmpdir("fill");
    return g_tmp ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    mk_test_rmrf(g_tmp);
    free(g_tmp);
    return 0;
}

static mk_model *open_stream(const char *dir) {
    mk_model *m = NULL;
    mk_model_opts so = {.stream_experts = true};
    if (mk_model_open_ex(dir, &so, &m) != MK_OK)
        fail_msg("open %s for streaming: %s", dir, mk_err_msg());
    return m;
}

static mk_expert_store *store_of(const mk_model *m, uint64_t slots, mk_expert_policy pol, int io,
                                 const int *pin_l, const int *pin_e, int npin) {
    mk_stream_opts o = {.cache_bytes = slots * mk_expert_store_slot_bytes(m), .policy = pol, .io = io,
                        .record_trace = true, .pin_layer = pin_l, .pin_expert = pin_e, .n_pin = npin};
    mk_expert_store *s = NULL;
    if (mk_expert_store_stream(m, &o, &s) != MK_OK)
        fail_msg("store: %s", mk_err_msg());
    return s;
}

/* The model's MoE layers: how many, and (ml non-NULL) the first `cap` of
 * them into ml. */
static int moe_layers(const mk_model *m, int *ml, int cap) {
    int n = 0;
    for (int l = 0; l < mk_model_config(m)->num_layers && (!ml || n < cap); l++)
        if (mk_model_expert_loc(m, l, 0)) {
            if (ml)
                ml[n] = l;
            n++;
        }
    return n;
}

/* One use of expert e of `layer`: true when it was a hit. */
static bool use(mk_expert_store *s, int layer, int e) {
    mk_expert_stats a, b;
    mk_expert_store_stats(s, &a);
    if (mk_expert_store_acquire(s, layer, &e, 1) != MK_OK)
        fail_msg("acquire %d of layer %d: %s", e, layer, mk_err_msg());
    int got;
    const mk_expert *x;
    if (mk_expert_store_next(s, layer, &got, &x) != MK_OK)
        fail_msg("next %d of layer %d: %s", e, layer, mk_err_msg());
    assert_int_equal(got, e);
    mk_expert_store_release(s, layer, e);
    mk_expert_store_stats(s, &b);
    assert_int_equal(b.uses, a.uses + 1);
    return b.hits == a.hits + 1;
}

/* Logits of NTOK deterministic ids through `store` (NULL: resident):
 * prefill of half in chunks of 16, then decode token by token. */
static float *logits_of(const mk_model *m, mk_expert_store *store) {
    const mk_config *c = mk_model_config(m);
    int32_t ids[NTOK];
    for (int i = 0; i < NTOK; i++)
        ids[i] = (int32_t)((i * 7919 + 13) % c->vocab_size);
    mk_engine_opts o = {.threads = 2, .max_ctx = NTOK, .prefill_chunk = 16, .store = store};
    mk_engine *e = NULL;
    if (mk_engine_create(m, &o, &e) != MK_OK)
        fail_msg("engine: %s", mk_err_msg());
    float *out = malloc((size_t)NTOK * (size_t)c->vocab_size * sizeof(float));
    assert_non_null(out);
    if (mk_engine_forward(e, ids, NTOK / 2, MK_LOGITS_ALL, out, NULL) != MK_OK)
        fail_msg("forward: %s", mk_err_msg());
    for (int i = NTOK / 2; i < NTOK; i++)
        if (mk_engine_forward(e, ids + i, 1, MK_LOGITS_ALL, out + (size_t)i * (size_t)c->vocab_size, NULL) !=
            MK_OK)
            fail_msg("forward at %d: %s", i, mk_err_msg());
    mk_engine_free(e);
    return out;
}

static size_t ndiff(const float *a, const float *b, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return bad;
}

/* Without a preference: free slots / MoE layers of each layer, lowest
 * index first, read in one go; the remainder stays free, so that many
 * misses evict nothing the fill read. */
static void test_even_share(void **st) {
    (void)st;
    const char *dir = mk_test_fixture("tiny-qwen35moe/bf16");
    if (!dir)
        skip();
    mk_model *m = open_stream(dir);
    const mk_config *c = mk_model_config(m);
    int L = moe_layers(m, NULL, 0), E = c->num_experts;
    assert_true(L >= 2 && E >= 12);
    int share = 5, spare = L - 1; /* a remainder: fewer free slots than MoE layers */
    mk_expert_store *s = store_of(m, (uint64_t)(share * L + spare), MK_EXPERT_FREQ, 0, NULL, NULL, 0);
    assert_int_equal(mk_expert_store_fill(s, NULL), MK_OK);
    mk_expert_stats es;
    mk_expert_store_stats(s, &es);
    assert_int_equal(es.filled, share * L);
    assert_int_equal(es.uses, 0);
    assert_true(es.fill_bytes > 0 && es.bytes_read == 0); /* the run's counters start at zero */
    assert_true(es.fill_reads >= (uint64_t)es.filled && es.reads == 0);
    assert_true(es.fill_s >= 0.0);
    /* the spare slots are free: misses of each layer's next expert take them */
    int miss_layers = 0;
    for (int l = 0; l < c->num_layers && miss_layers < spare; l++)
        if (mk_model_expert_loc(m, l, 0)) {
            assert_false(use(s, l, share)); /* the first index not filled */
            miss_layers++;
        }
    for (int l = 0; l < c->num_layers; l++) {
        if (!mk_model_expert_loc(m, l, 0))
            continue;
        for (int e = 0; e < share; e++)
            if (!use(s, l, e))
                fail_msg("expert %d of layer %d was not filled (share %d)", e, l, share);
    }
    mk_expert_store_stats(s, &es);
    assert_int_equal(es.fill_hits, (uint64_t)(share * L));
    assert_int_equal(es.fill_used, (uint64_t)(share * L));
    assert_int_equal(es.hits, (uint64_t)(share * L));
    /* a used filled expert hit again counts as a hit on a filled expert, not as a new one used */
    int l0 = 0;
    while (!mk_model_expert_loc(m, l0, 0))
        l0++;
    assert_true(use(s, l0, 0));
    mk_expert_store_stats(s, &es);
    assert_int_equal(es.fill_hits, (uint64_t)(share * L) + 1);
    assert_int_equal(es.fill_used, (uint64_t)(share * L));
    /* too late for a second fill once the cache is in use */
    assert_int_equal(mk_expert_store_fill(s, NULL), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "in use"));
    mk_expert_store_free(s);

    /* fewer free slots than MoE layers: nothing read */
    s = store_of(m, (uint64_t)(L - 1 > c->num_experts_per_tok ? L - 1 : c->num_experts_per_tok), MK_EXPERT_LRU,
                 0, NULL, NULL, 0);
    mk_expert_store_stats(s, &es);
    if (es.slots < L) {
        assert_int_equal(mk_expert_store_fill(s, NULL), MK_OK);
        mk_expert_store_stats(s, &es);
        assert_int_equal(es.filled, 0);
        assert_int_equal(es.fill_bytes, 0);
    }
    mk_expert_store_free(s);
    mk_model_free(m);
}

/* With a preference (a profile's ranking, pins at its head): the pins are
 * not read again, the next ones fill the free slots in order, and the
 * policy evicts unused filled experts coldest first, never before they
 * would have been free slots. Both policies. */
static void test_preference_and_eviction(void **st) {
    (void)st;
    const char *dir = mk_test_fixture("tiny-qwen35moe/bf16");
    if (!dir)
        skip();
    mk_model *m = open_stream(dir);
    const mk_config *c = mk_model_config(m);
    int E = c->num_experts, ml[64], nm = moe_layers(m, ml, 64);
    assert_true(nm >= 2 && E >= 8);
    /* hottest first: the highest expert of every layer, then the next ... */
    int np = nm * 4, pl[256], pe[256];
    for (int i = 0; i < np; i++) {
        pl[i] = ml[i % nm];
        pe[i] = E - 1 - i / nm;
    }
    int npin = 3, slots = 12;
    for (int pol = 0; pol < 2; pol++) {
        mk_expert_store *s = store_of(m, (uint64_t)slots, pol ? MK_EXPERT_LRU : MK_EXPERT_FREQ, 2, pl, pe, npin);
        mk_expert_stats es;
        mk_expert_store_stats(s, &es);
        assert_int_equal(es.pinned, npin);
        uint64_t pin_bytes = es.bytes_read;
        mk_fill_opts fo = {.pref_layer = pl, .pref_expert = pe, .n_pref = np};
        assert_int_equal(mk_expert_store_fill(s, &fo), MK_OK);
        mk_expert_store_stats(s, &es);
        int room = slots - npin, last = npin + room - 1; /* pl/pe[npin..last] filled; last the coldest */
        assert_int_equal(es.filled, room);
        assert_int_equal(es.bytes_read, pin_bytes); /* the fill counts apart */
        assert_true(es.fill_bytes >= (uint64_t)room * 4096);
        /* an expert outside the preference: a miss, which evicts the coldest filled one */
        int ol = ml[0], oe = 0;
        assert_false(use(s, ol, oe));
        assert_true(use(s, pl[last - 1], pe[last - 1])); /* the next coldest is still there */
        assert_false(use(s, pl[last], pe[last]));         /* the coldest was evicted */
        /* that miss evicted the coldest still unused (last - 2), not the one just used */
        assert_true(use(s, pl[last - 1], pe[last - 1]));
        assert_false(use(s, pl[last - 2], pe[last - 2]));
        for (int i = npin; i < last - 3; i++)
            if (!use(s, pl[i], pe[i]))
                fail_msg("policy %d: preferred expert %d (%d of layer %d) was not filled or was evicted", pol, i,
                         pe[i], pl[i]);
        for (int i = 0; i < npin; i++) /* pins: hits, not the fill's */
            assert_true(use(s, pl[i], pe[i]));
        mk_expert_store_stats(s, &es);
        assert_int_equal(es.fill_used, (uint64_t)(last - 3 - npin + 1));
        assert_int_equal(es.fill_hits, es.fill_used + 1);
        mk_expert_store_free(s);
    }
    /* a preference naming no routed expert is refused, naming it */
    mk_expert_store *s = store_of(m, (uint64_t)slots, MK_EXPERT_FREQ, 0, NULL, NULL, 0);
    int bl[2] = {ml[0], ml[0]}, be[2] = {0, E};
    mk_fill_opts bad = {.pref_layer = bl, .pref_expert = be, .n_pref = 2};
    assert_int_equal(mk_expert_store_fill(s, &bad), MK_E_ARG);
    char want[64];
    snprintf(want, sizeof want, "no routed expert %d in layer %d", E, ml[0]);
    assert_non_null(strstr(mk_err_msg(), want));
    /* a range outside the layer's experts too */
    int32_t *rg = calloc((size_t)c->num_layers * 2, sizeof *rg);
    assert_non_null(rg);
    rg[2 * ml[0] + 1] = E + 1;
    mk_fill_opts badr = {.range = rg};
    assert_int_equal(mk_expert_store_fill(s, &badr), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "range"));
    free(rg);
    mk_expert_store_free(s);
    mk_model_free(m);
}

/* Per-layer ranges (an MPI rank's share, a pipeline stage's layers): only
 * those experts are read, the room shared among the layers that have any. */
static void test_ranges(void **st) {
    (void)st;
    const char *dir = mk_test_fixture("tiny-qwen35moe/bf16");
    if (!dir)
        skip();
    mk_model *m = open_stream(dir);
    const mk_config *c = mk_model_config(m);
    int E = c->num_experts, ml[64], nm = moe_layers(m, ml, 64);
    assert_true(nm >= 3 && E >= 12);
    int32_t *rg = calloc((size_t)c->num_layers * 2, sizeof *rg);
    assert_non_null(rg);
    for (int i = 0; i < nm; i++) { /* every layer its own case */
        int l = ml[i];
        rg[2 * l] = i == 0 ? 4 : i == 1 ? 0 : i == 2 ? 0 : E - 3;
        rg[2 * l + 1] = i == 0 ? 8 : i == 1 ? 0 : i == 2 ? E : E;
    }
    int with = nm - 1, share = 6; /* layer ml[1] has none */
    mk_expert_store *s = store_of(m, (uint64_t)(with * share), MK_EXPERT_LRU, 0, NULL, NULL, 0);
    mk_fill_opts fo = {.range = rg};
    assert_int_equal(mk_expert_store_fill(s, &fo), MK_OK);
    mk_expert_stats es;
    mk_expert_store_stats(s, &es);
    int want = 4 /* ml[0]: all of [4, 8) */ + share /* ml[2] */ + (nm - 3) * 3 /* the rest: [E-3, E) */;
    assert_int_equal(es.filled, want);
    for (int e = 4; e < 8; e++)
        assert_true(use(s, ml[0], e));
    for (int e = 0; e < share; e++)
        assert_true(use(s, ml[2], e));
    for (int i = 3; i < nm; i++)
        for (int e = E - 3; e < E; e++)
            assert_true(use(s, ml[i], e));
    mk_expert_store_stats(s, &es);
    assert_int_equal(es.fill_hits, (uint64_t)want);
    assert_false(use(s, ml[1], 0)); /* no experts of that layer here */
    assert_false(use(s, ml[0], 3)); /* below the share */
    mk_expert_store_free(s);
    free(rg);
    mk_model_free(m);
}

/* Logits bitwise equal to resident with and without the fill, both
 * policies; the fill only turns each filled expert's first use (while
 * still cached) from a miss into a hit. */
static void same_run(const char *rel) {
    const char *d = mk_test_fixture(rel);
    if (!d)
        skip();
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", d);
    mk_model *res = NULL;
    if (mk_model_open(dir, &res) != MK_OK)
        fail_msg("open %s: %s", dir, mk_err_msg());
    mk_model *m = open_stream(dir);
    const mk_config *c = mk_model_config(m);
    size_t nv = (size_t)NTOK * (size_t)c->vocab_size;
    float *want = logits_of(res, NULL);
    int L = moe_layers(m, NULL, 0);
    /* half the experts, at least a layer's: a step never waits for a slot,
     * so evictions do not depend on the order reads finish */
    uint64_t slots = (uint64_t)L * (uint64_t)c->num_experts / 2;
    if (slots < (uint64_t)c->num_experts)
        slots = (uint64_t)c->num_experts;
    for (int pol = 0; pol < 2; pol++) {
        uint64_t hits[2], used = 0;
        int filled = 0;
        for (int fill = 0; fill < 2; fill++) {
            mk_expert_store *s = store_of(m, slots, pol ? MK_EXPERT_LRU : MK_EXPERT_FREQ, 0, NULL, NULL, 0);
            if (fill)
                assert_int_equal(mk_expert_store_fill(s, NULL), MK_OK);
            float *got = logits_of(m, s);
            size_t bad = ndiff(got, want, nv);
            mk_expert_stats es;
            mk_expert_store_stats(s, &es);
            printf("  %s, %s, fill %s: %d filled, %llu uses, %llu hits (%llu on filled experts, %llu of them "
                   "used), oracle %.3f\n",
                   rel, pol ? "LRU" : "FREQ", fill ? "on" : "off", es.filled, (unsigned long long)es.uses,
                   (unsigned long long)es.hits, (unsigned long long)es.fill_hits,
                   (unsigned long long)es.fill_used, es.oracle_hit);
            if (bad)
                fail_msg("%s, fill %d: %zu of %zu logits differ from resident", rel, fill, bad, nv);
            hits[fill] = es.hits;
            if (fill) {
                used = es.fill_used;
                filled = es.filled;
                assert_true(es.fill_hits >= es.fill_used && es.fill_hits <= es.hits);
                assert_true(es.oracle_hit >= (double)es.hits / (double)es.uses - 1e-12);
            } else {
                assert_int_equal(es.filled, 0);
                assert_int_equal(es.fill_hits, 0);
            }
            free(got);
            mk_expert_store_free(s);
        }
        assert_int_equal(filled, (int)(slots / (uint64_t)L) * L);
        assert_true(used > 0);
        assert_int_equal(hits[1], hits[0] + used);
    }
    free(want);
    mk_model_free(res);
    mk_model_free(m);
}

static void test_same_tiny(void **st) { (void)st; same_run("tiny-qwen35moe/bf16"); }
static void test_same_fixtures(void **st) {
    (void)st;
    same_run("qwen3moe-a/bf16");    /* per-expert HF tensors */
    same_run("deepseekv3-a/fp8");   /* FP8 blocks with scales */
    same_run("gptoss-a/bf16");      /* stacks transposed after the read */
}

/* ---- failures ---------------------------------------------------------- */

static void test_failures(void **st) {
    (void)st;
    const char *src = mk_test_fixture("tiny-qwen35moe/bf16");
    if (!src)
        skip();
    char dir[4096], cmd[9000];
    snprintf(dir, sizeof dir, "%s/tiny-copy", g_tmp);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", dir, src, dir);
    assert_int_equal(system(cmd), 0);
    mk_model *res = NULL;
    assert_int_equal(mk_model_open(dir, &res), MK_OK);
    mk_model *m = open_stream(dir);
    const mk_config *c = mk_model_config(m);
    size_t nv = (size_t)NTOK * (size_t)c->vocab_size;
    float *want = logits_of(res, NULL);
    uint64_t slots = (uint64_t)moe_layers(m, NULL, 0) * (uint64_t)c->num_experts / 2;
    /* the clean fill: how many experts and reads */
    mk_expert_store *s = store_of(m, slots, MK_EXPERT_FREQ, 2, NULL, NULL, 0);
    assert_int_equal(mk_expert_store_fill(s, NULL), MK_OK);
    mk_expert_stats es;
    mk_expert_store_stats(s, &es);
    int planned = es.filled;
    int nreads = (int)es.fill_reads;
    assert_true(planned > 2 && nreads >= planned);
    mk_expert_store_free(s);
    int *al = malloc((size_t)c->num_layers * (size_t)c->num_experts * sizeof *al), na = 0;
    int *ae = malloc((size_t)c->num_layers * (size_t)c->num_experts * sizeof *ae);
    assert_true(al && ae);
    for (int l = 0; l < c->num_layers; l++)
        for (int e = 0; mk_model_expert_loc(m, l, 0) && e < c->num_experts; e++, na++) {
            al[na] = l;
            ae[na] = e;
        }
    mk_fill_opts all = {.pref_layer = al, .pref_expert = ae, .n_pref = na};
    int cases = 0;
    for (int io = 1; io <= 2; io++)
        for (int sh = 0; sh < 2; sh++)
            for (int k = 0; k < 3; k++) {
                int at = k == 0 ? 0 : k == 1 ? nreads / 2 : nreads - 1;
                mk_stream_opts o = {.cache_bytes = slots * mk_expert_store_slot_bytes(m), .io = io};
                mk_status cs = mk_expert_store_stream(m, &o, &s);
                if (cs == MK_E_UNSUPPORTED && io == 1) { /* no io_uring here: the pread case still runs */
                    printf("  io_uring unavailable: %s\n", mk_err_msg());
                    break;
                }
                assert_int_equal(cs, MK_OK);
                mk_test_fault_arm(at, false, sh); /* exactly one read fails */
                mk_status fs = mk_expert_store_fill(s, NULL);
                (void)mk_test_fault_disarm();
                char msg[2048];
                snprintf(msg, sizeof msg, "%s", mk_err_msg());
                printf("  io %s, %s at read %d of %d: %s\n", io == 1 ? "uring" : "pread", sh ? "short read" : "EIO",
                       at, nreads, fs == MK_OK ? "(no error)" : msg);
                assert_int_equal(fs, sh ? MK_E_FORMAT : MK_E_IO);
                assert_non_null(strstr(msg, "expert "));
                assert_non_null(strstr(msg, " of layer "));
                assert_non_null(strstr(msg, "model.safetensors"));
                assert_non_null(strstr(msg, "offset"));
                mk_expert_store_stats(s, &es);
                assert_true(es.filled < planned);
                /* the failed expert's slot was freed: a second fill, preferring every expert,
                   fills every free slot */
                assert_int_equal(mk_expert_store_fill(s, &all), MK_OK);
                mk_expert_store_stats(s, &es);
                assert_int_equal(es.filled, (int)slots);
                /* no slot kept bad bytes */
                float *got = logits_of(m, s);
                size_t bad = ndiff(got, want, nv);
                if (bad)
                    fail_msg("after a failed fill, %zu logits differ from resident", bad);
                free(got);
                mk_expert_store_free(s);
                cases++;
            }
    assert_true(cases >= 6);
    /* a checkpoint changed on disk before the fill: refused */
    s = store_of(m, slots, MK_EXPERT_FREQ, 0, NULL, NULL, 0);
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    struct timespec ts[2] = {{0, UTIME_OMIT}, {12345, 0}};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
    assert_int_equal(mk_expert_store_fill(s, NULL), MK_E_IO);
    assert_non_null(strstr(mk_err_msg(), "changed on disk"));
    mk_expert_store_stats(s, &es);
    assert_int_equal(es.filled, 0);
    mk_expert_store_free(s);
    /* a store without a cache has nothing to fill */
    mk_expert_store *r = NULL;
    assert_int_equal(mk_expert_store_resident(res, &r), MK_OK);
    assert_int_equal(mk_expert_store_fill(r, NULL), MK_OK);
    mk_expert_store_stats(r, &es);
    assert_int_equal(es.filled, 0);
    mk_expert_store_free(r);
    free(al);
    free(ae);
    free(want);
    mk_model_free(res);
    mk_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_even_share),   cmocka_unit_test(test_preference_and_eviction),
        cmocka_unit_test(test_ranges),       cmocka_unit_test(test_same_tiny),
        cmocka_unit_test(test_same_fixtures), cmocka_unit_test(test_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
