/* The streaming expert store (src/engine/expert_store_stream.c) against the
 * resident one: on every fixture layout (HF per-expert, fused, FP8 block,
 * the VL wrapper, DeepSeek MLA, the hybrids, the trained demo model) and on
 * synthetic compressed-tensors INT4 (symmetric and with zero points) and
 * MLX stacks (affine 4-bit, mxfp4), teacher-forced logits of a prompt must
 * be bitwise equal whether experts come from the mapping or are read from
 * the files into a cache as small as one token's experts (every prefill
 * chunk then uses more experts than the cache holds) or half the experts,
 * under both policies, through io_uring or pread, buffered or O_DIRECT.
 * Also: the store's counters add up, and a cache smaller than one token's
 * experts is refused naming the least size. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "io/os.h"
#include "mk_test_util.h"
#include "moekit/convert.h"
#include "moekit/engine.h"
#include "moekit/expert_store.h"
#include "moekit/model.h"
#include "moekit/quantize.h"
#include "moekit/synth.h"

#define NTOK 40

static char *g_tmp;

static int setup(void **state) {
    (void)state;
    g_tmp = mk_test_tmpdir("stream");
    return g_tmp ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    mk_test_rmrf(g_tmp);
    free(g_tmp);
    return 0;
}

/* Logits of NTOK deterministic ids through `store` (NULL: resident), the
 * engine guessing the next layer's experts when `prefetch`. */
static float *logits_of(const mk_model *m, mk_expert_store *store, bool prefetch) {
    const mk_config *c = mk_model_config(m);
    int32_t ids[NTOK];
    for (int i = 0; i < NTOK; i++)
        ids[i] = (int32_t)((i * 7919 + 13) % c->vocab_size);
    /* chunk 16: several prefill chunks, each using many experts */
    mk_engine_opts o = {.threads = 2, .max_ctx = NTOK, .prefill_chunk = 16, .store = store,
                        .prefetch_experts = prefetch};
    mk_engine *e = NULL;
    if (mk_engine_create(m, &o, &e) != MK_OK)
        fail_msg("engine: %s", mk_err_msg());
    float *out = malloc((size_t)NTOK * (size_t)c->vocab_size * sizeof(float));
    assert_non_null(out);
    /* prefill the first half, then decode token by token */
    if (mk_engine_forward(e, ids, NTOK / 2, MK_LOGITS_ALL, out, NULL) != MK_OK)
        fail_msg("forward: %s", mk_err_msg());
    for (int i = NTOK / 2; i < NTOK; i++)
        if (mk_engine_forward(e, ids + i, 1, MK_LOGITS_ALL, out + (size_t)i * (size_t)c->vocab_size,
                              NULL) != MK_OK)
            fail_msg("forward at %d: %s", i, mk_err_msg());
    mk_engine_free(e);
    return out;
}

typedef struct variant {
    const char *name;
    int slots_of;  /* 0: one token's experts; else experts of this many layers... see below */
    mk_expert_policy policy;
    int io;
    bool direct;
    bool prefetch; /* the engine hands the store its guess of the next layer's experts */
} variant;

/* slots_of 2: three tokens' experts, room to guess beside the current layer's */
static const variant k_variants[] = {
    {"k slots, FREQ, auto io, buffered", 0, MK_EXPERT_FREQ, 0, false, false},
    {"half the experts, LRU, pread, O_DIRECT", 1, MK_EXPERT_LRU, 2, true, false},
    {"half the experts, FREQ, io_uring-or-pread, O_DIRECT", 1, MK_EXPERT_FREQ, 0, true, false},
    {"3k slots, prefetch, FREQ, io_uring-or-pread, O_DIRECT", 2, MK_EXPERT_FREQ, 0, true, true},
    {"half the experts, prefetch, LRU, pread, buffered", 1, MK_EXPERT_LRU, 2, false, true},
};

static void check_dir(const char *dir) {
    mk_model *res = NULL, *str = NULL;
    if (mk_model_open(dir, &res) != MK_OK)
        fail_msg("open %s: %s", dir, mk_err_msg());
    mk_model_opts so = {.stream_experts = true};
    if (mk_model_open_ex(dir, &so, &str) != MK_OK)
        fail_msg("open %s for streaming: %s", dir, mk_err_msg());
    const mk_config *c = mk_model_config(res);
    size_t nv = (size_t)NTOK * (size_t)c->vocab_size;
    float *want = logits_of(res, NULL, false);
    uint64_t slot = mk_expert_store_slot_bytes(str);
    assert_true(slot > 0);
    assert_true(mk_model_expert_bytes(str) > 0);
    for (size_t v = 0; v < sizeof k_variants / sizeof k_variants[0]; v++) {
        const variant *var = &k_variants[v];
        int moe_layers = 0;
        for (int l = 0; l < c->num_layers; l++)
            moe_layers += mk_model_expert_loc(str, l, 0) != NULL;
        uint64_t n = var->slots_of == 1   ? (uint64_t)moe_layers * (uint64_t)c->num_experts / 2
                     : var->slots_of == 2 ? 3 * (uint64_t)c->num_experts_per_tok
                                          : (uint64_t)c->num_experts_per_tok;
        mk_stream_opts so2 = {.cache_bytes = n * slot, .policy = var->policy, .io = var->io,
                              .direct = var->direct, .record_trace = true};
        mk_expert_store *s = NULL;
        if (mk_expert_store_stream(str, &so2, &s) != MK_OK)
            fail_msg("%s, %s: store: %s", dir, var->name, mk_err_msg());
        float *got = logits_of(str, s, var->prefetch);
        size_t bad = 0;
        for (size_t i = 0; i < nv; i++)
            bad += memcmp(&got[i], &want[i], sizeof(float)) != 0;
        mk_expert_stats st;
        mk_expert_store_stats(s, &st);
        printf("  %s, %s: %d slots of %llu B, %llu uses, hit %.3f (oracle %.3f), %llu B read in %llu "
               "reads (%s); guesses %llu, used %llu\n",
               dir, var->name, st.slots, (unsigned long long)st.slot_bytes, (unsigned long long)st.uses,
               st.uses ? (double)st.hits / (double)st.uses : 0.0, st.oracle_hit,
               (unsigned long long)st.bytes_read, (unsigned long long)st.reads, st.io,
               (unsigned long long)st.pf_issued, (unsigned long long)st.pf_hits);
        if (bad)
            fail_msg("%s, %s: %zu of %zu logits differ from the resident store's", dir, var->name, bad, nv);
        assert_int_equal((int64_t)st.slots, (int64_t)n);
        assert_true(st.uses > 0 && st.hits + st.pf_hits <= st.uses);
        if (var->prefetch) { /* decode guessed, and a guess is never used twice */
            assert_true(st.pf_issued > 0);
            assert_true(st.pf_hits <= st.pf_issued);
            assert_true(st.pf_bytes > 0 && st.pf_bytes <= st.bytes_read);
        } else {
            assert_true(st.pf_issued == 0 && st.pf_hits == 0 && st.pf_bytes == 0);
        }
        assert_true(st.oracle_hit >= (double)st.hits / (double)st.uses - 1e-12);
        assert_true(st.bytes_read >= (st.uses - st.hits) * 1); /* every miss read something */
        free(got);
        mk_expert_store_free(s);
    }
    /* fewer slots than one token's experts: refused, naming the least size */
    mk_stream_opts tiny = {.cache_bytes = slot * (uint64_t)(c->num_experts_per_tok - 1) + 1};
    mk_expert_store *s = NULL;
    assert_int_equal(mk_expert_store_stream(str, &tiny, &s), MK_E_ARG);
    char want_msg[64];
    snprintf(want_msg, sizeof want_msg, "allow at least %llu bytes",
             (unsigned long long)(slot * (uint64_t)c->num_experts_per_tok));
    assert_non_null(strstr(mk_err_msg(), want_msg));
    /* a resident model cannot feed a streaming store */
    mk_stream_opts ok = {.cache_bytes = slot * 64};
    assert_int_equal(mk_expert_store_stream(res, &ok, &s), MK_E_ARG);
    free(want);
    mk_model_free(res);
    mk_model_free(str);
}

static void fixture(const char *rel) { check_dir(mk_test_fixture(rel)); }

static void test_hf_per_expert(void **st) { (void)st; fixture("qwen3moe-a/bf16"); fixture("qwen3moe-odd/bf16"); }
static void test_fp8(void **st) { (void)st; fixture("qwen3moe-odd/fp8"); fixture("deepseekv3-a/fp8"); }
static void test_mla(void **st) { (void)st; fixture("deepseekv3-a/bf16"); }
static void test_hybrids(void **st) { (void)st; fixture("qwen3next-a/bf16"); fixture("qwen35moe-a/bf16"); }
static void test_vl_fused(void **st) { (void)st; fixture("qwen35moe-vl/bf16"); fixture("qwen35moe-vl/bf16-fused"); }
static void test_trained(void **st) { (void)st; fixture("tiny-qwen35moe/bf16"); }

static void synth(const char *name, mk_synth_format f, char *out, size_t cap) {
    snprintf(out, cap, "%s/%s", g_tmp, name);
    mk_synth_opts o;
    mk_synth_opts_init(&o);
    o.arch = "qwen3_moe";
    o.preset = "tiny";
    o.layers = 2;
    o.experts = 8;
    o.vocab = 512;
    o.format = f;
    o.quiet = true;
    o.threads = 2;
    if (mk_synth_run(out, &o) != MK_OK)
        fail_msg("synth %s: %s", name, mk_err_msg());
}

static void test_ct_int4(void **st) {
    (void)st;
    char d[4096];
    synth("ct-sym", MK_SYNTH_CT_INT4, d, sizeof d);
    check_dir(d);
    synth("ct-asym", MK_SYNTH_CT_INT4_ASYM, d, sizeof d);
    check_dir(d);
}

/* MLX stacks (switch_mlp), quantized by moekit's own quantize path. */
static void test_mlx_stacks(void **st) {
    (void)st;
    char src[4096], dst[4096];
    synth("bf16", MK_SYNTH_BF16, src, sizeof src);
    static const struct { const char *name; mk_qmode mode; int bits; } q[] = {
        {"mlx-q4", MK_QMODE_AFFINE, 4}, {"mlx-mxfp4", MK_QMODE_MXFP4, 0}};
    for (size_t i = 0; i < 2; i++) {
        snprintf(dst, sizeof dst, "%s/%s", g_tmp, q[i].name);
        mk_qjob *j = NULL;
        assert_int_equal(mk_qjob_new(&j), MK_OK);
        assert_int_equal(mk_qjob_set_default(j, q[i].mode, q[i].bits, 0), MK_OK);
        mk_conv_opts o;
        mk_conv_opts_init(&o);
        o.to = MK_CONV_MLX;
        o.quiet = true;
        o.threads = 2;
        o.quant = j;
        if (mk_conv_run(src, dst, &o, NULL) != MK_OK)
            fail_msg("quantize %s: %s", q[i].name, mk_err_msg());
        mk_qjob_free(j);
        check_dir(dst);
    }
}

/* ---- failures: read errors, short reads, a checkpoint changed on disk ---- */

static int g_fail_after = -1, g_reads, g_short, g_fail_once;

/* Whether this read fails: every read from g_fail_after on, or only that
 * one with g_fail_once. */
static bool fail_now(void) {
    if (g_fail_after < 0)
        return false;
    int i = g_reads++;
    return g_fail_once ? i == g_fail_after : i >= g_fail_after;
}

static ssize_t f_pread(int fd, void *buf, size_t n, off_t off) {
    if (fail_now()) {
        if (g_short)
            return 0; /* end of file here: a short read */
        errno = EIO;
        return -1;
    }
    return pread(fd, buf, n, off);
}

static int f_uring_result(int fd, void *buf, size_t n, off_t off, int res) {
    (void)fd, (void)buf, (void)n, (void)off;
    if (fail_now())
        return g_short ? 0 : -EIO;
    return res;
}

/* A copy of the demo model (its files get touched below). */
static void model_copy(char *out, size_t cap) {
    snprintf(out, cap, "%s/tiny-copy", g_tmp);
    char cmd[12400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", out, mk_test_fixture("tiny-qwen35moe/bf16"),
             out);
    assert_int_equal(system(cmd), 0);
}

static void test_read_failures(void **st) {
    (void)st;
    char dir[4096];
    model_copy(dir, sizeof dir);
    mk_model *res = NULL, *str = NULL;
    assert_int_equal(mk_model_open(dir, &res), MK_OK);
    mk_model_opts so = {.stream_experts = true};
    assert_int_equal(mk_model_open_ex(dir, &so, &str), MK_OK);
    const mk_config *c = mk_model_config(res);
    size_t nv = (size_t)NTOK * (size_t)c->vocab_size;
    /* the same schedule as below: one forward of NTOK tokens in chunks of 16
     * (decoding token by token sums in another order) */
    float *want = malloc(nv * sizeof(float));
    {
        mk_engine_opts eo = {.threads = 2, .max_ctx = NTOK, .prefill_chunk = 16};
        mk_engine *e = NULL;
        assert_int_equal(mk_engine_create(res, &eo, &e), MK_OK);
        int32_t ids[NTOK];
        for (int i = 0; i < NTOK; i++)
            ids[i] = (int32_t)((i * 7919 + 13) % c->vocab_size);
        assert_int_equal(mk_engine_forward(e, ids, NTOK, MK_LOGITS_ALL, want, NULL), MK_OK);
        mk_engine_free(e);
    }
    static const mk_os_vtbl v = {.pread = f_pread, .uring_result = f_uring_result};
    for (int io = 1; io <= 2; io++)
        for (int sh = 0; sh < 2; sh++)
            for (int after = 0; after < 60; after += 19) {
                mk_stream_opts o = {.cache_bytes = 4 * mk_expert_store_slot_bytes(str), .io = io};
                mk_expert_store *s = NULL;
                mk_status cs = mk_expert_store_stream(str, &o, &s);
                if (cs == MK_E_UNSUPPORTED && io == 1) { /* no io_uring here: the pread case still runs */
                    printf("  io_uring unavailable: %s\n", mk_err_msg());
                    break;
                }
                assert_int_equal(cs, MK_OK);
                mk_engine_opts eo = {.threads = 2, .max_ctx = NTOK, .prefill_chunk = 16, .store = s};
                mk_engine *e = NULL;
                assert_int_equal(mk_engine_create(str, &eo, &e), MK_OK);
                int32_t ids[NTOK];
                for (int i = 0; i < NTOK; i++)
                    ids[i] = (int32_t)((i * 7919 + 13) % c->vocab_size);
                float *got = malloc(nv * sizeof(float));
                g_reads = 0;
                g_short = sh;
                g_fail_after = after;
                mk_os_override(&v);
                mk_status fs = mk_engine_forward(e, ids, NTOK, MK_LOGITS_ALL, got, NULL);
                mk_os_override(NULL);
                g_fail_after = -1;
                char msg[2048];
                snprintf(msg, sizeof msg, "%s", mk_err_msg());
                printf("  io %s, %s after %d reads: %s\n", io == 1 ? "uring" : "pread", sh ? "short read" : "EIO",
                       after, fs == MK_OK ? "(not reached)" : msg);
                if (fs != MK_OK) {
                    assert_int_equal(fs, sh ? MK_E_FORMAT : MK_E_IO);
                    assert_non_null(strstr(msg, "expert "));
                    assert_non_null(strstr(msg, " of layer "));
                    assert_non_null(strstr(msg, "model.safetensors"));
                    assert_non_null(strstr(msg, "offset"));
                } else {
                    assert_true(after > 0); /* the first read always fails */
                }
                /* the store is usable again and no slot kept bad bytes */
                mk_engine_reset(e);
                if (mk_engine_forward(e, ids, NTOK, MK_LOGITS_ALL, got, NULL) != MK_OK)
                    fail_msg("after the failure: %s", mk_err_msg());
                size_t bad = 0;
                for (size_t i = 0; i < nv; i++)
                    bad += memcmp(&got[i], &want[i], 4) != 0;
                if (bad)
                    fail_msg("after a failed read, %zu logits differ from the resident store's", bad);
                free(got);
                mk_engine_free(e);
                mk_expert_store_free(s);
            }
    /* a checkpoint rewritten while in use: refused at the next read */
    mk_stream_opts o = {.cache_bytes = 2 * mk_expert_store_slot_bytes(str)};
    mk_expert_store *s = NULL;
    assert_int_equal(mk_expert_store_stream(str, &o, &s), MK_OK);
    mk_engine_opts eo = {.threads = 2, .max_ctx = NTOK, .prefill_chunk = 16, .store = s};
    mk_engine *e = NULL;
    assert_int_equal(mk_engine_create(str, &eo, &e), MK_OK);
    int32_t ids[4] = {1, 2, 3, 4};
    assert_int_equal(mk_engine_forward(e, ids, 4, MK_LOGITS_NONE, NULL, NULL), MK_OK);
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    struct timespec ts[2] = {{0, UTIME_OMIT}, {12345, 0}};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
    mk_status fs = mk_engine_forward(e, ids, 4, MK_LOGITS_NONE, NULL, NULL);
    assert_int_equal(fs, MK_E_IO);
    assert_non_null(strstr(mk_err_msg(), "changed on disk"));
    mk_engine_free(e);
    mk_expert_store_free(s);
    free(want);
    mk_model_free(res);
    mk_model_free(str);
}

/* Guesses that fail. One read of a decode fails at a time (each position in
 * turn): a failed guess is dropped without a word and the forward goes on
 * bitwise equal to resident (the layer reads the expert itself if it needs
 * it); a failed read the layer needs is the error naming the expert, and
 * the store then serves a clean run bitwise equal again. Both must occur. */
static void test_prefetch_failures(void **st) {
    (void)st;
    const char *dir = mk_test_fixture("tiny-qwen35moe/bf16");
    if (!dir)
        skip();
    mk_model *res = NULL, *str = NULL;
    assert_int_equal(mk_model_open(dir, &res), MK_OK);
    mk_model_opts so = {.stream_experts = true};
    assert_int_equal(mk_model_open_ex(dir, &so, &str), MK_OK);
    const mk_config *c = mk_model_config(res);
    size_t nv = (size_t)NTOK * (size_t)c->vocab_size;
    float *want = logits_of(res, NULL, false);
    static const mk_os_vtbl v = {.pread = f_pread, .uring_result = f_uring_result};
    int quiet = 0, loud = 0;
    for (int io = 1; io <= 2; io++)
        for (int at = 0; at < 400; at += 7) {
            mk_stream_opts o = {.cache_bytes = 3 * (uint64_t)c->num_experts_per_tok * mk_expert_store_slot_bytes(str),
                                .io = io};
            mk_expert_store *s = NULL;
            mk_status cs = mk_expert_store_stream(str, &o, &s);
            if (cs == MK_E_UNSUPPORTED && io == 1)
                break; /* no io_uring here: the pread case still runs */
            assert_int_equal(cs, MK_OK);
            mk_engine_opts eo = {.threads = 2, .max_ctx = NTOK, .prefill_chunk = 16, .store = s,
                                 .prefetch_experts = true};
            mk_engine *e = NULL;
            assert_int_equal(mk_engine_create(str, &eo, &e), MK_OK);
            int32_t ids[NTOK];
            for (int i = 0; i < NTOK; i++)
                ids[i] = (int32_t)((i * 7919 + 13) % c->vocab_size);
            float *got = calloc(nv, sizeof(float));
            assert_non_null(got);
            assert_int_equal(mk_engine_forward(e, ids, NTOK / 2, MK_LOGITS_ALL, got, NULL), MK_OK);
            g_reads = 0;
            g_short = 0;
            g_fail_once = 1;
            g_fail_after = at;
            mk_os_override(&v);
            mk_status fs = MK_OK;
            for (int i = NTOK / 2; i < NTOK && fs == MK_OK; i++)
                fs = mk_engine_forward(e, ids + i, 1, MK_LOGITS_ALL, got + (size_t)i * (size_t)c->vocab_size, NULL);
            mk_os_override(NULL);
            int reads = g_reads;
            g_fail_after = -1;
            g_fail_once = 0;
            mk_expert_stats es;
            mk_expert_store_stats(s, &es);
            if (at >= reads) { /* past the decode's reads: nothing failed */
                mk_engine_free(e);
                mk_expert_store_free(s);
                free(got);
                break;
            }
            if (fs == MK_OK) {
                size_t bad = 0;
                for (size_t i = 0; i < nv; i++)
                    bad += memcmp(&got[i], &want[i], 4) != 0;
                if (bad)
                    fail_msg("read %d failed quietly but %zu logits differ from resident", at, bad);
                assert_true(es.pf_failed == 1); /* only a guess may fail without an error */
                quiet++;
            } else {
                assert_int_equal(fs, MK_E_IO);
                assert_non_null(strstr(mk_err_msg(), "expert "));
                assert_non_null(strstr(mk_err_msg(), "model.safetensors"));
                loud++;
                /* a clean run from the start is bitwise equal again */
                mk_engine_reset(e);
                assert_int_equal(mk_engine_forward(e, ids, NTOK / 2, MK_LOGITS_ALL, got, NULL), MK_OK);
                for (int i = NTOK / 2; i < NTOK; i++)
                    if (mk_engine_forward(e, ids + i, 1, MK_LOGITS_ALL, got + (size_t)i * (size_t)c->vocab_size,
                                          NULL) != MK_OK)
                        fail_msg("after the failure: %s", mk_err_msg());
                size_t bad = 0;
                for (size_t i = 0; i < nv; i++)
                    bad += memcmp(&got[i], &want[i], 4) != 0;
                if (bad)
                    fail_msg("after a failed read, %zu logits differ from resident", bad);
            }
            mk_engine_free(e);
            mk_expert_store_free(s);
            free(got);
        }
    printf("  one failed read per decode: %d dropped guesses, %d errors\n", quiet, loud);
    assert_true(quiet > 0);
    assert_true(loud > 0);
    free(want);
    mk_model_free(res);
    mk_model_free(str);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hf_per_expert), cmocka_unit_test(test_fp8),
        cmocka_unit_test(test_mla),           cmocka_unit_test(test_hybrids),
        cmocka_unit_test(test_vl_fused),      cmocka_unit_test(test_trained),
        cmocka_unit_test(test_ct_int4),       cmocka_unit_test(test_mlx_stacks),
        cmocka_unit_test(test_read_failures), cmocka_unit_test(test_prefetch_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
