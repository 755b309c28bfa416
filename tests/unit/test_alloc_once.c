/* Allocation failure at ONE point at a time (the companion of
 * test_alloc_faults.c, split off to keep each test under the suite's time
 * budget): the Nth allocation fails alone (mk_alloc_fail_once) for every N
 * of a safetensors write, a checkpoint open by listing, inspect, a
 * quantizing convert and a bit-allocation save; each run must end in a
 * clean MK_E_NOMEM with a message, or in MK_OK with exactly the output of
 * an undisturbed run (under LeakSanitizer in the sanitizer build: no leak
 * on any failure path). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "mk_test_util.h"
#include "moekit/convert.h"
#include "moekit/engine.h"
#include "moekit/inspect.h"
#include "moekit/model.h"
#include "moekit/profile.h"
#include "moekit/quantize.h"
#include "moekit/st.h"
#include "moekit/tokenizer.h"

typedef struct once_step {
    const char *what;
    mk_status (*run)(struct once_step *s); /* under the armed failure */
    char *(*digest)(struct once_step *s);  /* malloc'd; after disarming */
    const char *src;                       /* the input */
    char *tmp;                             /* a fresh temp dir per run */
    char *text;                            /* what run produced in memory, if any */
} once_step;

/* FNV-1a of a file's bytes, appended as "name size hash" lines for every
 * regular file in dir, sorted by name. */
static char *dir_digest(const char *dir) {
    char cmd[4500];
    snprintf(cmd, sizeof cmd, "cd '%s' 2>/dev/null && ls -1 | LC_ALL=C sort", dir);
    FILE *ls = popen(cmd, "r");
    assert_non_null(ls);
    size_t cap = 1 << 16, n = 0;
    char *out = calloc(1, cap), name[1024];
    assert_non_null(out);
    while (fgets(name, sizeof name, ls)) {
        name[strcspn(name, "\n")] = 0;
        char path[6000];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        size_t len = 0;
        unsigned char *b = mk_test_slurp(path, &len);
        uint64_t h = 1469598103934665603ull;
        for (size_t i = 0; b && i < len; i++)
            h = (h ^ b[i]) * 1099511628211ull;
        free(b);
        if (n + 1200 > cap) {
            out = realloc(out, cap *= 2);
            assert_non_null(out);
        }
        n += (size_t)snprintf(out + n, cap - n, "%s %zu %016llx\n", name, len, (unsigned long long)h);
    }
    pclose(ls);
    return out;
}

static long once_loop(once_step *s, long dense, long stride) {
    /* the sanitizer build (MK_TEST_SMALL=1, every run 3-10x slower): every
     * point of the first 300, then every third stride; the main build keeps
     * the full sweep */
    if (getenv("MK_TEST_SMALL") && !strcmp(getenv("MK_TEST_SMALL"), "1")) {
        dense = dense < 300 ? dense : 300;
        stride *= 3;
    }
    mk_alloc_hook_json();
    s->tmp = mk_test_tmpdir("alloc-once");
    mk_alloc_fail_after(-1);
    assert_int_equal(s->run(s), MK_OK);
    char *ref = s->digest(s);
    free(s->text);
    s->text = NULL;
    mk_test_rmrf(s->tmp);
    free(s->tmp);
    long n = 0, runs = 0, ok_runs = 0;
    for (;; n += n < dense ? 1 : stride, runs++) {
        s->tmp = mk_test_tmpdir("alloc-once");
        mk_alloc_fail_once(n);
        mk_status st = s->run(s);
        long used = mk_alloc_count();
        mk_alloc_fail_after(-1);
        if (st != MK_OK && st != MK_E_NOMEM)
            fail_msg("%s: allocation %ld alone failing gave status %s (%s), not MK_E_NOMEM", s->what, n,
                     mk_status_name(st), mk_err_msg());
        if (st == MK_E_NOMEM && !*mk_err_msg())
            fail_msg("%s: allocation %ld alone failing: MK_E_NOMEM without a message", s->what, n);
        if (st == MK_OK) {
            char *d = s->digest(s);
            if (strcmp(d, ref) != 0) {
                fprintf(stderr, "--- expected\n%s--- got\n%s", ref, d);
                fail_msg("%s: allocation %ld alone failing gave MK_OK but a different output (above)",
                         s->what, n);
            }
            free(d);
            ok_runs++;
        }
        free(s->text);
        s->text = NULL;
        mk_test_rmrf(s->tmp);
        free(s->tmp);
        if (used <= n)
            break;
    }
    free(ref);
    printf("  %-30s %ld allocation points, %ld failed alone in turn (%ld of them still MK_OK, same output)\n",
           s->what, n, runs, ok_runs);
    return n;
}

/* A checkpoint of 18 one-tensor shards with metadata, written through the
 * safetensors writer: its headers and its index are built with jansson. */
static mk_status stw_write(once_step *s) {
    mk_stw_opts wo = {.shard_size = 1, .force = true, .basename = "model", .metadata_json = "{\"format\":\"pt\",\"note\":\"kept\"}"};
    mk_stw *w = NULL;
    mk_status st = mk_stw_create(s->tmp, &wo, &w);
    char name[64];
    for (int i = 0; st == MK_OK && i < 18; i++) {
        int64_t shape[2] = {2, i + 1};
        snprintf(name, sizeof name, "layers.%d.weight", i);
        st = mk_stw_add(w, name, MK_DT_F32, 2, shape);
    }
    if (st == MK_OK)
        st = mk_stw_begin_data(w);
    for (size_t i = 0; st == MK_OK && i < mk_stw_count(w); i++) {
        const mk_tensor_info *t = mk_stw_info(w, i);
        float v[64];
        for (uint64_t k = 0; k < t->numel; k++)
            v[k] = (float)(i * 100 + k);
        st = mk_stw_write(w, v, (size_t)t->nbytes);
    }
    if (st == MK_OK)
        st = mk_stw_finish(w);
    mk_stw_free(w);
    return st;
}

/* names, shapes, shards and metadata as a reader sees them */
static char *ckpt_digest(const char *dir) {
    mk_ckpt *c = NULL;
    size_t cap = 1 << 16, n = 0;
    char *out = calloc(1, cap);
    assert_non_null(out);
    if (mk_ckpt_open(dir, 0, &c) != MK_OK) {
        snprintf(out, cap, "open failed: %s", mk_err_msg());
        return out;
    }
    for (size_t i = 0; i < mk_ckpt_count(c) && n + 600 < cap; i++) {
        const mk_tensor_info *t = mk_ckpt_tensor(c, i);
        const char *md = mk_ckpt_metadata_json(c, (size_t)t->shard);
        n += (size_t)snprintf(out + n, cap - n, "%s %s %lld %d %llu %s\n", t->name, mk_dtype_name(t->dtype),
                              (long long)t->numel, t->shard, (unsigned long long)t->nbytes, md ? md : "-");
    }
    mk_ckpt_close(c);
    return out;
}

static char *stw_digest(once_step *s) {
    char *a = dir_digest(s->tmp), *b = ckpt_digest(s->tmp);
    char *out = malloc(strlen(a) + strlen(b) + 1);
    assert_non_null(out);
    strcpy(out, a);
    strcat(out, b);
    free(a);
    free(b);
    return out;
}

static void test_once_st_write(void **st) {
    (void)st;
    once_step s = {"safetensors write (18 shards)", stw_write, stw_digest, NULL, NULL, NULL};
    assert_true(once_loop(&s, 1L << 30, 1) > 50);
}

/* Opening the same checkpoint without its index: the shards are found by
 * listing the directory (more than the listing's first 16 slots). */
static mk_status ckpt_list_open(once_step *s) {
    mk_ckpt *c = NULL;
    mk_status st = mk_ckpt_open(s->src, 0, &c);
    if (st == MK_OK) {
        size_t cap = 1 << 14, n = 0;
        s->text = calloc(1, cap); /* libc, not the hook: not an allocation under test */
        assert_non_null(s->text);
        for (size_t i = 0; i < mk_ckpt_count(c) && n + 200 < cap; i++)
            n += (size_t)snprintf(s->text + n, cap - n, "%s %d\n", mk_ckpt_tensor(c, i)->name,
                                  mk_ckpt_tensor(c, i)->shard);
    }
    mk_ckpt_close(c);
    return st;
}

static char *text_digest(once_step *s) {
    char *d = strdup(s->text ? s->text : "(none)");
    assert_non_null(d);
    return d;
}

static void test_once_ckpt_listing(void **st) {
    (void)st;
    once_step w = {"write", stw_write, stw_digest, NULL, mk_test_tmpdir("alloc-list"), NULL};
    assert_int_equal(stw_write(&w), MK_OK);
    char ip[4200];
    snprintf(ip, sizeof ip, "%s/model.safetensors.index.json", w.tmp);
    assert_int_equal(unlink(ip), 0);
    once_step s = {"checkpoint open by listing", ckpt_list_open, text_digest, w.tmp, NULL, NULL};
    assert_true(once_loop(&s, 1L << 30, 1) > 18);
    mk_test_rmrf(w.tmp);
    free(w.tmp);
}

static mk_status inspect_run(once_step *s) {
    char *js = NULL;
    mk_inspect_opts io = {false};
    mk_status st = mk_inspect(s->src, &io, &js);
    if (js) { /* copied with libc so that freeing it stays outside the test */
        s->text = strdup(js);
        assert_non_null(s->text);
    }
    free(js);
    return st;
}

static void test_once_inspect(void **st) {
    (void)st;
    once_step s = {
        "inspect (qwen3moe-a)", inspect_run, text_digest, mk_test_fixture("qwen3moe-a/bf16"), NULL, NULL};
    assert_true(once_loop(&s, 1L << 30, 1) > 100);
}

/* convert FP8 -> MLX quantized to 4 bits, cut in small shards: the config
 * edit, the quantization block, the shard headers and the index */
static mk_status quantize_run(once_step *s) {
    char dst[4200];
    snprintf(dst, sizeof dst, "%s/out", s->tmp);
    mk_qjob *q = NULL;
    mk_status st = mk_qjob_new(&q);
    if (st != MK_OK)
        return st;
    mk_conv_opts o;
    mk_conv_opts_init(&o);
    o.to = MK_CONV_MLX;
    o.threads = 1;
    o.quiet = true;
    o.shard_size = 1u << 16;
    o.quant = q;
    st = mk_conv_run(s->src, dst, &o, NULL);
    mk_qjob_free(q);
    return st;
}

static char *quantize_digest(once_step *s) {
    char dst[4200];
    snprintf(dst, sizeof dst, "%s/out", s->tmp);
    return dir_digest(dst);
}

static void test_once_quantize(void **st) {
    (void)st;
    /* the first 200 points, then every 23rd (each run converts the whole
     * model; 8,900 of them would take minutes): the config, quantization
     * block, shard headers and index at the end are a few hundred
     * allocations in a row, so every kind of them is still hit */
    once_step s = {"quantize fp8 -> mlx 4-bit",         quantize_run, quantize_digest,
                   mk_test_fixture("deepseekv3-a/fp8"), NULL,         NULL};
    assert_true(once_loop(&s, 200, 23) > 1000);
}

/* an allocation file of 40 modules: one override per module */
static mk_status alloc_save_run(once_step *s) {
    static char names[40][48];
    mk_alloc_item it[40];
    for (int i = 0; i < 40; i++) {
        snprintf(names[i], sizeof names[i], "model.layers.%d.mlp.experts.%d.down_proj", i / 8, i % 8);
        it[i] = (mk_alloc_item){names[i], 2 + i % 7, 64, false, i / 8, i % 8};
    }
    mk_alloc a = {it, 40, 4.5, 4.25, 1000000, 4250000, 0.5, 0.0, 1e-3};
    char path[4200];
    snprintf(path, sizeof path, "%s/alloc.json", s->tmp);
    return mk_alloc_save(&a, path);
}

static char *tmp_digest(once_step *s) { return dir_digest(s->tmp); }

static void test_once_alloc_save(void **st) {
    (void)st;
    once_step s = {"allocation save (40 modules)", alloc_save_run, tmp_digest, NULL, NULL, NULL};
    assert_true(once_loop(&s, 1L << 30, 1) > 40);
}


int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_once_st_write), cmocka_unit_test(test_once_ckpt_listing),
        cmocka_unit_test(test_once_inspect),  cmocka_unit_test(test_once_quantize),
        cmocka_unit_test(test_once_alloc_save),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
