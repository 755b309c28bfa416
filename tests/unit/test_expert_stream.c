/* The streaming expert store (src/engine/expert_store_stream.c) against the
 * resident one: on every fixture layout (HF per-expert, fused, FP8 block,
 * the VL wrapper, DeepSeek MLA, the hybrids, the trained demo model) and on
 * synthetic compressed-tensors INT4 (symmetric and with zero points) and
 * MLX stacks (affine 4-bit, mxfp4), teacher-forced logits of a prompt must
 * be bitwise equal whether experts come from the mapping or are read from
 * the files into a cache as small as one token's experts (every prefill
 * chunk then uses more experts than the cache holds) or half the experts,
 * under both policies, through io_uring or pread, buffered or O_DIRECT,
 * and with the cache filled before the first token (the warm start).
 * Also: the store's counters add up, and a cache smaller than one token's
 * experts is refused naming the least size. Packed checkpoints (convert and
 * quantize --pack-experts) are valid safetensors files with no hole, every
 * expert one contiguous block in one shard (4 KiB-aligned when sizes
 * allow), read with one request per miss, with logits bitwise equal to the
 * unpacked checkpoint's; so are the issue-16 families' (gpt_oss's stacks,
 * which have no per-expert form, are refused). gpt_oss's transformers
 * float experts (stacked [in, out], transposed at load when resident)
 * stream too, every miss reading that expert's whole blocks. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "io/os.h"
#include "mk_test_util.h"
#include "moekit/backend_cuda.h"
#include "moekit/convert.h"
#include "moekit/engine.h"
#include "moekit/expert_store.h"
#include "moekit/model.h"
#include "moekit/module.h"
#include "moekit/quantize.h"
#include "moekit/st.h"
#include "moekit/synth.h"

#define NTOK 40

static char *g_tmp;

/* The sanitizer build (MK_TEST_SMALL=1, ~25x slower here) runs each
 * layout under 3 of the 5 store variants, a different 3 for successive
 * layouts so every variant still meets several layouts, and scans one
 * failed read in 31 instead of one in 7. */
static bool g_small;
static int g_ndirs;

static int setup(void **state) {
    g_small = getenv("MK_TEST_SMALL") && !strcmp(getenv("MK_TEST_SMALL"), "1");
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

/* Logits of NTOK deterministic ids through `store` (NULL: resident) on
 * backend `be` (NULL: a CPU backend), the engine guessing the next layer's
 * experts when `prefetch`. */
static float *logits_of(const mk_model *m, mk_expert_store *store, mk_backend *be, bool prefetch) {
    const mk_config *c = mk_model_config(m);
    int32_t ids[NTOK];
    for (int i = 0; i < NTOK; i++)
        ids[i] = (int32_t)((i * 7919 + 13) % c->vocab_size);
    /* chunk 16: several prefill chunks, each using many experts */
    mk_engine_opts o = {.threads = 2, .max_ctx = NTOK, .prefill_chunk = 16, .store = store,
                        .prefetch_experts = prefetch, .backend = be};
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
    bool fill;     /* the free slots filled before the first token (mk_expert_store_fill) */
} variant;

/* slots_of 2: three tokens' experts, room to guess beside the current layer's */
static const variant k_variants[] = {
    {"k slots, FREQ, auto io, buffered", 0, MK_EXPERT_FREQ, 0, false, false, false},
    {"half the experts, LRU, pread, O_DIRECT", 1, MK_EXPERT_LRU, 2, true, false, false},
    {"half the experts, FREQ, io_uring-or-pread, O_DIRECT", 1, MK_EXPERT_FREQ, 0, true, false, false},
    {"3k slots, prefetch, FREQ, io_uring-or-pread, O_DIRECT", 2, MK_EXPERT_FREQ, 0, true, true, false},
    {"half the experts, prefetch, LRU, pread, buffered", 1, MK_EXPERT_LRU, 2, false, true, false},
    {"half the experts, filled, prefetch, FREQ, io_uring-or-pread, O_DIRECT", 1, MK_EXPERT_FREQ, 0, true, true,
     true},
};

/* Packed checkpoints (convert --pack-experts) also need every miss read
 * with one request. */
static bool g_one_read_per_miss;
/* When set: each miss (not a guess's hit) read at least this many bytes,
 * so experts really came from the files. For the next check_dir only (it
 * clears it, so a failed case leaves nothing set for the next test). */
static uint64_t g_min_miss_bytes;

/* The model at dir opened twice: resident (*res) and for streaming (*str). */
static void open_both(const char *dir, mk_model **res, mk_model **str) {
    *res = *str = NULL;
    if (mk_model_open(dir, res) != MK_OK)
        fail_msg("open %s: %s", dir, mk_err_msg());
    mk_model_opts so = {.stream_experts = true};
    if (mk_model_open_ex(dir, &so, str) != MK_OK)
        fail_msg("open %s for streaming: %s", dir, mk_err_msg());
}

static void check_dir(const char *dir) {
    uint64_t min_miss_bytes = g_min_miss_bytes;
    g_min_miss_bytes = 0;
    mk_model *res, *str;
    open_both(dir, &res, &str);
    const mk_config *c = mk_model_config(res);
    size_t nv = (size_t)NTOK * (size_t)c->vocab_size;
    float *want = logits_of(res, NULL, NULL, false);
    uint64_t slot = mk_expert_store_slot_bytes(str);
    assert_true(slot > 0);
    assert_true(mk_model_expert_bytes(str) > 0);
    int dir_no = g_ndirs++;
    for (size_t v = 0; v < sizeof k_variants / sizeof k_variants[0]; v++) {
        if (g_small && v != 0 && (v + (size_t)dir_no) % 2)
            continue;
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
        if (var->fill && mk_expert_store_fill(s, NULL) != MK_OK)
            fail_msg("%s, %s: fill: %s", dir, var->name, mk_err_msg());
        float *got = logits_of(str, s, NULL, var->prefetch);
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
        if (var->fill) { /* an even share of every MoE layer, read before the first use */
            assert_int_equal(st.filled, (int)(n / (uint64_t)moe_layers) * moe_layers);
            assert_true(st.filled > 0 && st.fill_bytes > 0 && st.fill_reads >= (uint64_t)st.filled);
            assert_true(st.fill_hits <= st.hits && st.fill_used <= (uint64_t)st.filled);
            if (g_one_read_per_miss) /* one request per filled expert too */
                assert_int_equal(st.fill_reads, (uint64_t)st.filled);
        } else {
            assert_true(st.filled == 0 && st.fill_bytes == 0 && st.fill_hits == 0);
        }
        if (var->prefetch) { /* decode guessed, and a guess is never used twice */
            assert_true(st.pf_issued > 0);
            assert_true(st.pf_hits <= st.pf_issued);
            assert_true(st.pf_bytes > 0 && st.pf_bytes <= st.bytes_read);
        } else {
            assert_true(st.pf_issued == 0 && st.pf_hits == 0 && st.pf_bytes == 0);
        }
        assert_true(st.oracle_hit >= (double)st.hits / (double)st.uses - 1e-12);
        assert_true(st.bytes_read >= (st.uses - st.hits) * 1); /* every miss read something */
        if (min_miss_bytes) {
            uint64_t misses = st.uses - st.hits - st.pf_hits;
            assert_true(misses > 0);
            assert_true(st.bytes_read >= misses * min_miss_bytes);
        }
        if (g_one_read_per_miss) /* each miss and each guess: one request */
            assert_int_equal(st.reads, st.uses - st.hits - st.pf_hits + st.pf_issued);
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
static void test_glm4moe(void **st) { (void)st; fixture("glm4moe-a/bf16"); fixture("minimaxm2-a/bf16"); fixture("glm4lite-a/bf16"); }
/* DSA: NTOK 40 > index_topk 24, so the decoded half runs sparse */
static void test_dsa(void **st) { (void)st; fixture("deepseekv32-a/bf16"); fixture("glm5dsa-a/bf16"); }

/* gpt_oss: the released MXFP4 experts (*_blocks / *_scales, fused gate_up)
 * stream with their file ranges; transformers' float layout (gate_up_proj
 * [E, H, 2I], gate and up interleaved, down_proj [E, I, H]) is transposed
 * into memory at load when resident, and streamed each expert's [in, out]
 * blocks are read and transposed in the cache slot: bitwise the same. */
static void test_gptoss(void **st) {
    (void)st;
    fixture("gptoss-a/mxfp4");
    /* its MLX form (mxfp4 gate/up/down stacks, converted byte for byte) and
     * that form quantized (attention and router 8-bit, experts kept) */
    char d[4096], q[4096];
    snprintf(d, sizeof d, "%s/gptoss-mlx", g_tmp);
    snprintf(q, sizeof q, "%s/gptoss-q8", g_tmp);
    mk_conv_opts co;
    mk_conv_opts_init(&co);
    co.to = MK_CONV_MLX;
    co.quiet = true;
    co.threads = 2;
    if (mk_conv_run(mk_test_fixture("gptoss-a/mxfp4"), d, &co, NULL) != MK_OK)
        fail_msg("convert gptoss-a/mxfp4: %s", mk_err_msg());
    check_dir(d);
    mk_qjob *j = NULL;
    assert_int_equal(mk_qjob_new(&j), MK_OK);
    assert_int_equal(mk_qjob_set_default(j, MK_QMODE_AFFINE, 8, 64), MK_OK);
    co.quant = j;
    if (mk_conv_run(mk_test_fixture("gptoss-a/mxfp4"), q, &co, NULL) != MK_OK)
        fail_msg("quantize gptoss-a/mxfp4: %s", mk_err_msg());
    mk_qjob_free(j);
    check_dir(q);
    /* transformers bf16: every expert's weights have file locations, its
     * [in, out] blocks of the stacks, marked transposed */
    const char *bf = mk_test_fixture("gptoss-a/bf16");
    mk_model_opts so = {.stream_experts = true};
    mk_model *m = NULL;
    if (mk_model_open_ex(bf, &so, &m) != MK_OK)
        fail_msg("open gptoss-a/bf16 for streaming: %s", mk_err_msg());
    const mk_config *c = mk_model_config(m);
    uint64_t H = (uint64_t)c->hidden_size, I = (uint64_t)c->moe_intermediate_size;
    uint64_t one = (H * 2 * I + I * H) * 2; /* gate_up [H, 2I] + down [I, H], bf16 */
    assert_int_equal(mk_model_expert_bytes(m), (uint64_t)c->num_layers * (uint64_t)c->num_experts * one);
    const mk_expert_loc *x = mk_model_expert_loc(m, 1, 3);
    assert_non_null(x);
    assert_true(x->gate.transposed && x->down.transposed);
    assert_int_equal(x->gate.q.rows, 2 * I); /* the views' [out, in] */
    assert_int_equal(x->gate.q.cols, H);
    assert_int_equal(x->down.q.rows, H);
    assert_int_equal(x->down.q.cols, I);
    assert_int_equal(x->gate.part[MK_SP_WEIGHT].len, H * 2 * I * 2);
    assert_int_equal(x->up.part[MK_SP_WEIGHT].len, 0); /* gate and up fused */
    /* a transposed projection that is not one plain float block (here: a
     * scales part added by hand) is refused, naming the expert */
    mk_expert_loc *bad = (mk_expert_loc *)mk_model_expert_loc(m, 2, 5);
    bad->down.part[MK_SP_SCALES] = bad->down.part[MK_SP_WEIGHT];
    mk_stream_opts o = {.cache_bytes = 1u << 24};
    mk_expert_store *s = NULL;
    assert_int_equal(mk_expert_store_stream(m, &o, &s), MK_E_UNSUPPORTED);
    assert_non_null(strstr(mk_err_msg(), "layer 2 expert 5: a transposed"));
    assert_null(s);
    mk_model_free(m);
    /* bitwise the resident logits under budgets below its experts, every
     * miss reading the expert's two blocks */
    g_min_miss_bytes = one;
    check_dir(bf);
}

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

/* ---- the packed expert layout (convert / quantize --pack-experts) ---- */

/* Every shard of dir is valid safetensors, checked apart from our reader:
 * the data buffer starts at a 4 KiB boundary (the header padded with
 * spaces), and the tensors, sorted by offset, cover it without a hole or
 * an overlap up to the end of the file. */
static void check_packed_files(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    int nfiles = 0;
    while ((de = readdir(d)) != NULL) {
        size_t nl = strlen(de->d_name);
        if (nl < 12 || strcmp(de->d_name + nl - 12, ".safetensors") != 0)
            continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        unsigned char lb[8];
        assert_int_equal(fread(lb, 1, 8, f), 8);
        uint64_t n = 0;
        for (int i = 7; i >= 0; i--)
            n = n << 8 | lb[i];
        if ((8 + n) % 4096 != 0)
            fail_msg("%s: data buffer starts at %llu, not a multiple of 4096", path, (unsigned long long)(8 + n));
        char *hdr = malloc(n + 1);
        assert_non_null(hdr);
        assert_int_equal(fread(hdr, 1, n, f), n);
        hdr[n] = 0;
        fseek(f, 0, SEEK_END);
        uint64_t data_len = (uint64_t)ftell(f) - 8 - n;
        fclose(f);
        json_error_t je;
        json_t *root = json_loads(hdr, 0, &je);
        if (!json_is_object(root))
            fail_msg("%s: header is not a JSON object: %s", path, je.text);
        size_t cnt = json_object_size(root), k = 0;
        uint64_t(*r)[2] = calloc(cnt, sizeof *r);
        const char *key;
        json_t *v;
        json_object_foreach(root, key, v) {
            if (strcmp(key, "__metadata__") == 0)
                continue;
            json_t *o = json_object_get(v, "data_offsets");
            assert_true(json_is_array(o) && json_array_size(o) == 2);
            r[k][0] = (uint64_t)json_integer_value(json_array_get(o, 0));
            r[k][1] = (uint64_t)json_integer_value(json_array_get(o, 1));
            /* every tensor aligned to its element size, as transformers
             * needs to view the bytes in place */
            const char *dt = json_string_value(json_object_get(v, "dtype"));
            assert_non_null(dt);
            unsigned es = strstr(dt, "64") ? 8 : strstr(dt, "32") ? 4 : strstr(dt, "16") ? 2 : 1;
            if (r[k][0] % es)
                fail_msg("%s: %s (%s) at data offset %llu, not aligned to its %u-byte elements", path, key, dt,
                         (unsigned long long)r[k][0], es);
            k++;
        }
        /* sort by (begin, end): a few hundred entries */
        for (size_t i = 1; i < k; i++)
            for (size_t j = i; j > 0 && (r[j][0] < r[j - 1][0] || (r[j][0] == r[j - 1][0] && r[j][1] < r[j - 1][1]));
                 j--) {
                uint64_t t0 = r[j][0], t1 = r[j][1];
                r[j][0] = r[j - 1][0], r[j][1] = r[j - 1][1];
                r[j - 1][0] = t0, r[j - 1][1] = t1;
            }
        uint64_t at = 0;
        for (size_t i = 0; i < k; i++) {
            if (r[i][0] != at || r[i][1] < r[i][0])
                fail_msg("%s: tensor at [%llu, %llu) where %llu was expected (a hole or an overlap)", path,
                         (unsigned long long)r[i][0], (unsigned long long)r[i][1], (unsigned long long)at);
            at = r[i][1];
        }
        if (at != data_len)
            fail_msg("%s: tensors end at %llu, the data buffer at %llu", path, (unsigned long long)at,
                     (unsigned long long)data_len);
        free(r);
        json_decref(root);
        free(hdr);
        nfiles++;
    }
    closedir(d);
    assert_true(nfiles > 0);
}

/* Each expert's parts in one shard, one after the other with nothing
 * between (in any order of gate/up/down and weight/scales/biases), and,
 * when `aligned`, starting at a multiple of 4096 in the file; no shard
 * holds both experts and other tensors. Returns the number of experts that
 * start aligned. */
static int check_packed_experts(const char *dir, bool aligned) {
    mk_model *m = NULL;
    mk_model_opts so = {.stream_experts = true};
    if (mk_model_open_ex(dir, &so, &m) != MK_OK)
        fail_msg("open %s for streaming: %s", dir, mk_err_msg());
    const mk_config *c = mk_model_config(m);
    int n_aligned = 0, n = 0;
    for (int l = 0; l < c->num_layers; l++)
        for (int e = 0; e < c->num_experts; e++) {
            const mk_expert_loc *x = mk_model_expert_loc(m, l, e);
            if (!x)
                continue;
            const mk_wloc *w[3] = {&x->gate, &x->up, &x->down};
            uint64_t lo = UINT64_MAX, hi = 0, sum = 0;
            int shard = -1;
            for (int p = 0; p < 3; p++)
                for (int k = 0; k < 4; k++) {
                    const mk_wloc_part *pt = &w[p]->part[k];
                    if (!pt->len)
                        continue;
                    if (shard >= 0 && pt->shard != shard)
                        fail_msg("%s: expert %d of layer %d lies in two shards", dir, e, l);
                    shard = pt->shard;
                    lo = pt->off < lo ? pt->off : lo;
                    hi = pt->off + pt->len > hi ? pt->off + pt->len : hi;
                    sum += pt->len;
                }
            /* parts never overlap (valid file), so a span equal to their sum has no gap */
            if (hi - lo != sum)
                fail_msg("%s: expert %d of layer %d spans %llu bytes for %llu bytes of parts", dir, e, l,
                         (unsigned long long)(hi - lo), (unsigned long long)sum);
            n++;
            n_aligned += lo % 4096 == 0;
            if (aligned && lo % 4096 != 0)
                fail_msg("%s: expert %d of layer %d (%llu bytes) starts at %llu, not 4 KiB-aligned", dir, e, l,
                         (unsigned long long)sum, (unsigned long long)lo);
        }
    assert_true(n > 0);
    mk_model_free(m);
    mk_ckpt *ck = NULL;
    assert_int_equal(mk_ckpt_open(dir, 0, &ck), MK_OK);
    size_t ns = mk_ckpt_nshards(ck);
    int *kind = calloc(ns, sizeof *kind); /* bit 0: experts, bit 1: other tensors */
    for (size_t i = 0; i < mk_ckpt_count(ck); i++) {
        const mk_tensor_info *t = mk_ckpt_tensor(ck, i);
        kind[t->shard] |= strstr(t->name, ".experts.") ? 1 : 2;
    }
    for (size_t i = 0; i < ns; i++)
        if (kind[i] == 3)
            fail_msg("%s: shard %s holds experts and other tensors", dir, mk_ckpt_shard_path(ck, i));
    free(kind);
    mk_ckpt_close(ck);
    return n_aligned;
}

/* Teacher-forced logits of two checkpoints, resident: bitwise equal. */
static void same_logits(const char *a, const char *b) {
    mk_model *ma = NULL, *mb = NULL;
    if (mk_model_open(a, &ma) != MK_OK || mk_model_open(b, &mb) != MK_OK)
        fail_msg("open %s / %s: %s", a, b, mk_err_msg());
    size_t nv = (size_t)NTOK * (size_t)mk_model_config(ma)->vocab_size;
    float *la = logits_of(ma, NULL, NULL, false), *lb = logits_of(mb, NULL, NULL, false);
    size_t bad = 0;
    for (size_t i = 0; i < nv; i++)
        bad += memcmp(&la[i], &lb[i], sizeof(float)) != 0;
    if (bad)
        fail_msg("%zu of %zu logits of %s differ from those of %s", bad, nv, b, a);
    free(la);
    free(lb);
    mk_model_free(ma);
    mk_model_free(mb);
}

static void pack(const char *src, const char *name, mk_conv_target to, mk_qjob *q, uint64_t shard_size,
                 char *out, size_t cap, mk_conv_stats *st) {
    snprintf(out, cap, "%s/%s", g_tmp, name);
    mk_conv_opts o;
    mk_conv_opts_init(&o);
    o.to = to;
    o.quiet = true;
    o.threads = 2;
    o.quant = q;
    o.shard_size = shard_size;
    o.pack_experts = true;
    if (mk_conv_run(src, out, &o, st) != MK_OK)
        fail_msg("pack %s: %s", name, mk_err_msg());
}

/* HF bf16 experts of 3 x 64 KiB: every expert 4 KiB-aligned, shards of
 * 1 MiB cut between experts; logits equal the source's, streamed and
 * resident alike, one read per miss. */
static void test_packed_hf(void **st) {
    (void)st;
    const char *src = mk_test_fixture("qwen3moe-a/bf16");
    char d[4096];
    mk_conv_stats cs;
    pack(src, "packed-hf", MK_CONV_HF, NULL, 1u << 20, d, sizeof d, &cs);
    assert_true(cs.shards > 1);
    assert_true(cs.experts_packed > 0);
    assert_int_equal(cs.experts_aligned, cs.experts_packed);
    assert_string_equal(cs.pack_note, "");
    check_packed_files(d);
    assert_int_equal(check_packed_experts(d, true), (int)cs.experts_packed);
    same_logits(src, d);
    g_one_read_per_miss = true;
    check_dir(d);
    g_one_read_per_miss = false;
}

/* qwen3_next to MLX, packed: per-expert names, norms and conv1d kept in
 * transformers' form (mlx-lm's sanitize shifts them once it sees
 * per-expert names); moekit's loader must read the very model of the
 * source: logits bitwise equal to the HF source's. */
static void test_packed_qwen3next_mlx(void **st) {
    (void)st;
    const char *src = mk_test_fixture("qwen3next-a/bf16");
    char d[4096];
    mk_conv_stats cs;
    pack(src, "packed-q3n", MK_CONV_MLX, NULL, 0, d, sizeof d, &cs);
    check_packed_files(d);
    check_packed_experts(d, false);
    same_logits(src, d);
    g_one_read_per_miss = true;
    check_dir(d);
    g_one_read_per_miss = false;
}

/* A 4-bit job with layer 1's stacked down_proj at 8 bits: an override on
 * the switch_mlp path, which a packed output must honour expert by expert. */
static mk_qjob *q4_job(void) {
    mk_qjob *j = NULL;
    assert_int_equal(mk_qjob_new(&j), MK_OK);
    assert_int_equal(mk_qjob_set_default(j, MK_QMODE_AFFINE, 4, 64), MK_OK);
    assert_int_equal(mk_qjob_add_override(j, "layers\\.1\\.mlp\\.switch_mlp\\.down_proj=8"), MK_OK);
    return j;
}

/* quantize --pack-experts: MLX affine experts, weight, scales and biases
 * of gate/up/down as one block; logits bitwise equal to the stacked
 * (unpacked) quantization of the same source. The note names the
 * unaligned experts and mlx-lm's limit. Then that stacked MLX checkpoint
 * converted --to mlx --pack-experts (its modules copied expert by expert,
 * its switch_mlp config entry made per expert): the same logits again. */
static void test_packed_quantized(void **st) {
    (void)st;
    const char *src = mk_test_fixture("qwen3moe-a/bf16");
    char d[4096], ref[4096], d2[4096];
    mk_conv_stats cs;
    mk_qjob *j = q4_job();
    pack(src, "packed-q4", MK_CONV_MLX, j, 0, d, sizeof d, &cs);
    mk_qjob_free(j);
    assert_true(cs.experts_packed > 0);
    printf("  packed q4: %llu experts, %llu aligned: %s\n", (unsigned long long)cs.experts_packed,
           (unsigned long long)cs.experts_aligned, cs.pack_note);
    assert_non_null(strstr(cs.pack_note, "mlx-lm cannot load"));
    check_packed_files(d);
    assert_int_equal(check_packed_experts(d, cs.experts_aligned == cs.experts_packed), (int)cs.experts_aligned);
    snprintf(ref, sizeof ref, "%s/stacked-q4", g_tmp);
    j = q4_job();
    mk_conv_opts o;
    mk_conv_opts_init(&o);
    o.to = MK_CONV_MLX;
    o.quiet = true;
    o.threads = 2;
    o.quant = j;
    if (mk_conv_run(src, ref, &o, NULL) != MK_OK)
        fail_msg("quantize: %s", mk_err_msg());
    mk_qjob_free(j);
    same_logits(ref, d);
    g_one_read_per_miss = true;
    check_dir(d);
    pack(ref, "packed-copy", MK_CONV_MLX, NULL, 0, d2, sizeof d2, &cs);
    check_packed_files(d2);
    check_packed_experts(d2, false);
    same_logits(ref, d2);
    check_dir(d2);
    g_one_read_per_miss = false;
}

/* The issue-16 families packed, HF and MLX (MiniMax's w1/w2/w3, the MLA
 * and DSA layers, glm4_moe's shared expert beside the routed ones): every
 * expert one block, logits bitwise equal to the source's, resident and
 * streamed with one read per miss. gpt_oss's experts are stacks with no
 * per-expert form in either layout: packing them is refused by name. */
static void test_packed_new_families(void **st) {
    (void)st;
    static const char *const fx[] = {"glm4moe-a/bf16", "glm4lite-a/bf16", "minimaxm2-a/bf16", "deepseekv32-a/bf16",
                                     "glm5dsa-a/bf16"};
    for (size_t i = 0; i < sizeof fx / sizeof fx[0]; i++) {
        const char *src = mk_test_fixture(fx[i]);
        for (int t = 0; t < 2; t++) {
            char name[64], d[4096];
            mk_conv_stats cs;
            snprintf(name, sizeof name, "packed-new-%zu-%s", i, t ? "mlx" : "hf");
            pack(src, name, t ? MK_CONV_MLX : MK_CONV_HF, NULL, 0, d, sizeof d, &cs);
            assert_true(cs.experts_packed > 0);
            check_packed_files(d);
            check_packed_experts(d, false);
            same_logits(src, d);
            g_one_read_per_miss = true;
            check_dir(d);
            g_one_read_per_miss = false;
        }
    }
    char d[4096];
    snprintf(d, sizeof d, "%s/packed-gptoss", g_tmp);
    mk_conv_opts o;
    mk_conv_opts_init(&o);
    o.to = MK_CONV_MLX;
    o.quiet = true;
    o.pack_experts = true;
    assert_int_equal(mk_conv_run(mk_test_fixture("gptoss-a/mxfp4"), d, &o, NULL), MK_E_UNSUPPORTED);
    assert_non_null(strstr(mk_err_msg(), "gpt_oss"));
    struct stat sb;
    assert_int_not_equal(stat(d, &sb), 0);
}

/* --experts fused cannot be packed: refused before any work. */
static void test_packed_fused_refused(void **st) {
    (void)st;
    char d[4096];
    snprintf(d, sizeof d, "%s/packed-fused", g_tmp);
    mk_conv_opts o;
    mk_conv_opts_init(&o);
    o.to = MK_CONV_HF;
    o.experts = MK_CONV_FUSED;
    o.quiet = true;
    o.pack_experts = true;
    assert_int_equal(mk_conv_run(mk_test_fixture("qwen3moe-a/bf16"), d, &o, NULL), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "--pack-experts"));
    struct stat sb;
    assert_int_not_equal(stat(d, &sb), 0);
}

/* ---- failures: read errors, short reads, a checkpoint changed on disk ---- */

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
                mk_test_fault_arm(after, true, sh); /* every read from `after` on fails */
                mk_status fs = mk_engine_forward(e, ids, NTOK, MK_LOGITS_ALL, got, NULL);
                (void)mk_test_fault_disarm();
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

/* A backend that keeps copies of the weights it is given, keyed by the
 * host view as the CUDA backend's weight map is, computing with the CPU
 * backend's kernels over the copies. A streaming store reuses its slot
 * buffers for other experts, so such a backend must hear of it
 * (backend.h host_changed, called by the engine with the slot's range
 * when the store says an expert was loaded since it was last handed out:
 * expert_store.h changed). As the CUDA backend does, a notice drops every
 * copy made from the range, so a slot has at most one expert's copies at
 * a time (the views of the next expert in a slot usually start at other
 * offsets: dropping only copies at the new views' pointers would leak the
 * old ones). g_honour false is the control: the notices are ignored and
 * the copies go stale, which this test must be able to see. */
typedef struct wcopy {
    mk_wt host, copy;
} wcopy;
typedef struct hrange {
    const char *p;
    size_t n;
} hrange;
static wcopy *g_wc;
static int g_nwc, g_capwc, g_dropped, g_outside;
static hrange g_hr[4096];
static int g_nhr;
static bool g_honour;
static mk_backend_i g_copying;
static void (*g_cpu_matmul)(void *, const mk_wt *, const float *, int64_t, float *);
static void (*g_cpu_matmul_n)(void *, const mk_wt *const *, int, const float *, int64_t, float *const *);

static bool same_host(const mk_wt *a, const mk_wt *b) {
    return a->data == b->data && a->scales == b->scales && a->biases == b->biases && a->fmt == b->fmt &&
           a->rows == b->rows && a->cols == b->cols;
}

static void copy_bytes(wcopy *c) {
    const mk_wt *w = &c->host;
    size_t nd = (size_t)w->rows * mk_wt_row_bytes(w), ns = mk_wt_scale_bytes(w);
    memcpy((void *)c->copy.data, w->data, nd);
    if (ns && w->scales)
        memcpy((void *)c->copy.scales, w->scales, ns);
    if (ns && w->biases && w->fmt == MK_WF_AFFINE)
        memcpy((void *)c->copy.biases, w->biases, ns);
}

static bool in_range(const void *q, size_t len, const hrange *r) {
    const char *a = q;
    return q && len && a < r->p + r->n && r->p < a + len;
}

/* The reported range holding host address q, or NULL. */
static const hrange *range_of(const void *q) {
    for (int i = 0; i < g_nhr; i++)
        if (in_range(q, 1, &g_hr[i]))
            return &g_hr[i];
    return NULL;
}

static const mk_wt *copy_of(const mk_wt *w) {
    for (int i = 0; i < g_nwc; i++)
        if (same_host(&g_wc[i].host, w))
            return &g_wc[i].copy;
    /* a view into a reported slot lies wholly inside it (the range the
     * backend drops must cover the scales and biases too) */
    const hrange *r = range_of(w->data);
    size_t nd = (size_t)w->rows * mk_wt_row_bytes(w), ns = mk_wt_scale_bytes(w);
    if (r && ((const char *)w->data + nd > r->p + r->n ||
              (w->scales && ns && ((const char *)w->scales < r->p || (const char *)w->scales + ns > r->p + r->n))))
        g_outside++;
    if (g_nwc == g_capwc) {
        g_capwc = g_capwc ? 2 * g_capwc : 64;
        g_wc = realloc(g_wc, (size_t)g_capwc * sizeof *g_wc);
        assert_non_null(g_wc);
    }
    wcopy *c = &g_wc[g_nwc++];
    c->host = c->copy = *w;
    c->copy.data = malloc(nd);
    c->copy.scales = ns && w->scales ? malloc(ns) : NULL;
    c->copy.biases = ns && w->biases && w->fmt == MK_WF_AFFINE ? malloc(ns) : NULL;
    assert_non_null(c->copy.data);
    copy_bytes(c);
    return &c->copy;
}

static void copying_matmul(void *ctx, const mk_wt *w, const float *x, int64_t n, float *y) {
    g_cpu_matmul(ctx, copy_of(w), x, n, y);
}

static void copying_matmul_n(void *ctx, const mk_wt *const *w, int count, const float *x, int64_t n,
                             float *const *ys) {
    const mk_wt *cw[4];
    for (int i = 0; i < count && i < 4; i++)
        cw[i] = copy_of(w[i]);
    g_cpu_matmul_n(ctx, cw, count, x, n, ys);
}

static void copy_free(wcopy *c) {
    free((void *)c->copy.data);
    free((void *)c->copy.scales);
    free((void *)c->copy.biases);
}

static void copying_host_changed(void *ctx, const void *p, size_t n) {
    (void)ctx;
    assert_non_null(p);
    assert_true(n > 0);
    hrange r = {p, n};
    if (!range_of(p)) {
        assert_true(g_nhr < (int)(sizeof g_hr / sizeof *g_hr));
        g_hr[g_nhr++] = r;
    }
    if (!g_honour)
        return;
    for (int i = 0; i < g_nwc;) {
        const mk_wt *w = &g_wc[i].host;
        size_t nd = (size_t)w->rows * mk_wt_row_bytes(w), ns = mk_wt_scale_bytes(w);
        if (in_range(w->data, nd, &r) || in_range(w->scales, ns, &r) ||
            (w->fmt == MK_WF_AFFINE && in_range(w->biases, ns, &r))) {
            copy_free(&g_wc[i]);
            g_wc[i] = g_wc[--g_nwc];
            g_dropped++;
        } else {
            i++;
        }
    }
}

/* The most copies made from one reported range that are alive at once:
 * at most one expert's (gate, up, down) when every notice drops them. */
static int most_copies_per_range(void) {
    int most = 0;
    for (int j = 0; j < g_nhr; j++) {
        int n = 0;
        for (int i = 0; i < g_nwc; i++)
            n += in_range(g_wc[i].host.data, 1, &g_hr[j]);
        most = n > most ? n : most;
    }
    return most;
}

static void copies_free(void) {
    for (int i = 0; i < g_nwc; i++)
        copy_free(&g_wc[i]);
    free(g_wc);
    g_wc = NULL;
    g_nwc = g_capwc = g_dropped = g_outside = g_nhr = 0;
}

/* Logits through a streaming store of one token's experts (every slot
 * reused again and again) on the copying backend: bitwise the resident
 * store's on the CPU when the notices are honoured, with one copy per
 * host slot part, and different when they are ignored (`control`); a
 * device-memory backend without host_changed is refused
 * with a reusing store, and a host-memory one is not. */
static void device_copies(const char *rel, bool control) {
    const char *dir = mk_test_fixture(rel);
    mk_model *res, *str;
    open_both(dir, &res, &str);
    const mk_config *c = mk_model_config(res);
    size_t nv = (size_t)NTOK * (size_t)c->vocab_size;
    float *want = logits_of(res, NULL, NULL, false);
    mk_backend *cpu = NULL, *copying = NULL;
    assert_int_equal(mk_backend_cpu_create(NULL, &cpu), MK_OK);
    g_copying = *mk_backend_iface(cpu);
    g_copying.name = "copying";
    g_copying.free = NULL; /* the context stays the CPU backend's */
    g_cpu_matmul = g_copying.matmul;
    g_cpu_matmul_n = g_copying.matmul_n;
    g_copying.matmul = copying_matmul;
    g_copying.matmul_n = g_copying.matmul_n ? copying_matmul_n : NULL;
    g_copying.matmul_each = NULL; /* (batched decode only) */
    g_copying.expert_mlps = NULL;
    g_copying.expert_mlps_each = NULL;
    g_copying.host_changed = copying_host_changed;
    assert_int_equal(mk_backend_create(&g_copying, mk_backend_ctx(cpu), &copying), MK_OK);
    for (int honour = 1; honour >= (control ? 0 : 1); honour--) {
        g_honour = honour;
        mk_stream_opts o = {.cache_bytes = (uint64_t)c->num_experts_per_tok * mk_expert_store_slot_bytes(str)};
        mk_expert_store *s = NULL;
        if (mk_expert_store_stream(str, &o, &s) != MK_OK)
            fail_msg("%s: store: %s", dir, mk_err_msg());
        float *got = logits_of(str, s, copying, false);
        size_t bad = 0;
        for (size_t i = 0; i < nv; i++)
            bad += memcmp(&got[i], &want[i], sizeof(float)) != 0;
        printf("  %s, device copies, notices %s: %d copies, %d dropped, %d slots reported, at most %d copies "
               "from one, %zu of %zu logits differ\n",
               dir, honour ? "honoured" : "ignored", g_nwc, g_dropped, g_nhr, most_copies_per_range(), bad, nv);
        assert_int_equal(g_outside, 0);
        assert_true(g_nhr > 0 && g_nhr <= c->num_experts_per_tok); /* one range per slot */
        if (honour) {
            assert_true(g_dropped > 0);
            assert_true(most_copies_per_range() <= 3);
            if (bad)
                fail_msg("%s: %zu of %zu logits differ from the resident store's with device copies", dir, bad, nv);
        } else if (!bad) {
            fail_msg("%s: stale copies gave the resident logits: the test cannot see a missed notice", dir);
        }
        copies_free();
        free(got);
        mk_expert_store_free(s);
    }
    /* a device-memory backend that is not told: refused */
    mk_stream_opts o = {.cache_bytes = (uint64_t)c->num_experts_per_tok * mk_expert_store_slot_bytes(str)};
    mk_expert_store *s = NULL;
    assert_int_equal(mk_expert_store_stream(str, &o, &s), MK_OK);
    g_copying.host_changed = NULL;
    g_copying.host_mem = false;
    mk_engine_opts eo = {.threads = 1, .max_ctx = 8, .store = s, .backend = copying};
    mk_engine *e = NULL;
    assert_int_equal(mk_engine_create(str, &eo, &e), MK_E_UNSUPPORTED);
    assert_non_null(strstr(mk_err_msg(), "host_changed"));
    g_copying.host_mem = true; /* the CPU reads host memory as it is: fine */
    assert_int_equal(mk_engine_create(str, &eo, &e), MK_OK);
    mk_engine_free(e);
    mk_expert_store_free(s);
    mk_backend_free(copying);
    mk_backend_free(cpu);
    free(want);
    mk_model_free(res);
    mk_model_free(str);
}

/* The CUDA backend under a streaming store of one token's experts (every
 * slot reused again and again): logits within the fixtures' bound (rel L2
 * 1e-3 per token, argmax equal) of the CPU's with resident experts, and
 * the device copies of streamed experts no larger than the host cache (one
 * expert's copies per slot: copies keyed by host views would otherwise pile
 * up, since the next expert in a slot starts at other offsets). Skipped,
 * saying why, without a GPU. */
static void streamed_cuda(const char *rel) {
    const char *dir = mk_test_fixture(rel);
    mk_backend *cu = NULL;
    if (mk_backend_cuda_create(0, &cu) != MK_OK) {
        printf("SKIP streamed experts on CUDA: %s\n", mk_err_msg());
        skip();
    }
    mk_model *res, *str;
    open_both(dir, &res, &str);
    const mk_config *c = mk_model_config(res);
    float *want = logits_of(res, NULL, NULL, false);
    const uint64_t cache = (uint64_t)c->num_experts_per_tok * mk_expert_store_slot_bytes(str);
    mk_stream_opts o = {.cache_bytes = cache};
    mk_expert_store *s = NULL;
    if (mk_expert_store_stream(str, &o, &s) != MK_OK)
        fail_msg("%s: store: %s", dir, mk_err_msg());
    float *got = logits_of(str, s, cu, false);
    const int64_t V = c->vocab_size;
    int flips = 0;
    double worst = 0.0;
    for (int t = 0; t < NTOK; t++) {
        const float *a = got + (size_t)t * (size_t)V, *b = want + (size_t)t * (size_t)V;
        double d = 0.0, r = 0.0;
        int64_t ia = 0, ib = 0;
        for (int64_t v = 0; v < V; v++) {
            d += ((double)a[v] - b[v]) * ((double)a[v] - b[v]);
            r += (double)b[v] * b[v];
            ia = a[v] > a[ia] ? v : ia;
            ib = b[v] > b[ib] ? v : ib;
        }
        const double e = sqrt(d / (r > 0 ? r : 1.0));
        worst = e > worst || e != e ? e : worst;
        flips += ia != ib;
    }
    size_t live = 0, spare = 0;
    mk_backend_cuda_cache_stats(cu, &live, &spare);
    printf("  %s streamed on CUDA: worst rel L2 %.2e, %d argmax flips, device copies of streamed experts "
           "%zu bytes (+%zu spare) for a host cache of %llu\n",
           dir, worst, flips, live, spare, (unsigned long long)cache);
    if (!(worst <= 1e-3) || flips)
        fail_msg("%s: streamed experts on CUDA: worst rel L2 %.3e, %d argmax flips", dir, worst, flips);
    assert_true(live > 0);
    if (live > cache)
        fail_msg("%s: %zu bytes of device copies of streamed experts for a host cache of %llu bytes", dir, live,
                 (unsigned long long)cache);
    /* the backend goes first: its copies are keyed by the store's memory */
    mk_backend_free(cu);
    mk_expert_store_free(s);
    free(got);
    free(want);
    mk_model_free(res);
    mk_model_free(str);
}

static void test_streamed_cuda(void **st) {
    (void)st;
    streamed_cuda("qwen3moe-a/bf16");
    streamed_cuda("deepseekv3-a/bf16");
}

static void test_device_copies(void **st) {
    (void)st;
    device_copies("qwen3moe-a/bf16", true);
    device_copies("deepseekv3-a/bf16", true); /* MLA, a dense first layer, a shared expert */
    /* FP8 block scales sit at expert-dependent offsets in a slot: the copy
     * follows the new view's pointers. (No control here: ignored notices
     * give new keys, hence fresh copies, not stale ones.) */
    device_copies("qwen3moe-odd/fp8", false);
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
    float *want = logits_of(res, NULL, NULL, false);
    int quiet = 0, loud = 0;
    for (int io = 1; io <= 2; io++)
        for (int at = 0; at < 400; at += g_small ? 31 : 7) {
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
            mk_test_fault_arm(at, false, false); /* only read `at` fails */
            mk_status fs = MK_OK;
            for (int i = NTOK / 2; i < NTOK && fs == MK_OK; i++)
                fs = mk_engine_forward(e, ids + i, 1, MK_LOGITS_ALL, got + (size_t)i * (size_t)c->vocab_size, NULL);
            /* a guess may still be in flight: its read (the failing one, perhaps) ends, and is
             * counted, under the armed fault before the counts are read */
            if (fs == MK_OK)
                assert_int_equal(mk_expert_store_settle(s), MK_OK);
            int reads = mk_test_fault_disarm();
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

/* settle waits out the guesses still in flight and counts them: four guesses whose
 * reads all fail are all counted as dropped once settle returns (before it, only an
 * acquire that met them would have drained them); mid-layer it is refused; the
 * store then serves those experts as ordinary misses. */
static void test_settle(void **st) {
    (void)st;
    const char *dir = mk_test_fixture("tiny-qwen35moe/bf16");
    if (!dir)
        skip();
    mk_model *m = NULL;
    mk_model_opts so = {.stream_experts = true};
    assert_int_equal(mk_model_open_ex(dir, &so, &m), MK_OK);
    const mk_config *c = mk_model_config(m);
    int layer = c->num_layers - 1;
    assert_true(c->num_experts >= 4 && c->num_experts_per_tok <= 4);
    for (int io = 1; io <= 2; io++) {
        mk_stream_opts o = {.cache_bytes = 3 * (uint64_t)c->num_experts_per_tok * mk_expert_store_slot_bytes(m),
                            .io = io};
        mk_expert_store *s = NULL;
        mk_status cs = mk_expert_store_stream(m, &o, &s);
        if (cs == MK_E_UNSUPPORTED && io == 1)
            continue;
        assert_int_equal(cs, MK_OK);
        int ex[4] = {0, 1, 2, 3};
        mk_test_fault_arm(0, true, false); /* every read fails */
        assert_int_equal(mk_expert_store_prefetch(s, layer, ex, 4), MK_OK);
        assert_int_equal(mk_expert_store_settle(s), MK_OK);
        int reads = mk_test_fault_disarm();
        mk_expert_stats es;
        mk_expert_store_stats(s, &es);
        assert_int_equal(es.pf_issued, 4);
        assert_int_equal(es.pf_failed, 4);
        assert_true(reads >= 4);
        /* mid-layer: refused, naming the experts not taken */
        int n = c->num_experts_per_tok, e;
        const mk_expert *v = NULL;
        assert_int_equal(mk_expert_store_acquire(s, layer, ex, n), MK_OK);
        assert_int_equal(mk_expert_store_settle(s), MK_E_ARG);
        assert_non_null(strstr(mk_err_msg(), "not taken"));
        for (int i = 0; i < n; i++) {
            assert_int_equal(mk_expert_store_next(s, layer, &e, &v), MK_OK);
            mk_expert_store_release(s, layer, e);
        }
        assert_int_equal(mk_expert_store_settle(s), MK_OK);
        mk_expert_store_stats(s, &es);
        assert_int_equal(es.uses, (uint64_t)n);
        assert_int_equal(es.hits + es.pf_hits, 0); /* the dropped guesses served nothing */
        mk_expert_store_free(s);
    }
    mk_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hf_per_expert), cmocka_unit_test(test_fp8),
        cmocka_unit_test(test_mla),           cmocka_unit_test(test_hybrids),
        cmocka_unit_test(test_vl_fused),      cmocka_unit_test(test_trained), cmocka_unit_test(test_glm4moe),
        cmocka_unit_test(test_dsa),
        cmocka_unit_test(test_gptoss),
        cmocka_unit_test(test_ct_int4),       cmocka_unit_test(test_mlx_stacks),
        cmocka_unit_test(test_read_failures), cmocka_unit_test(test_prefetch_failures), cmocka_unit_test(test_settle),
        cmocka_unit_test(test_device_copies), cmocka_unit_test(test_streamed_cuda),
        cmocka_unit_test(test_packed_hf),     cmocka_unit_test(test_packed_qwen3next_mlx),
        cmocka_unit_test(test_packed_quantized), cmocka_unit_test(test_packed_fused_refused),
        cmocka_unit_test(test_packed_new_families),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
