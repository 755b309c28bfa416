/* Allocation failure at every point, SQLite-style: model open, engine
 * creation, tokenizer load and a whole convert (planning and the run) are
 * re-run with the Nth heap allocation (the
 * library's hook, src/core/alloc.h, which jansson's allocations go
 * through too) failing, for N = 0, 1, 2, ... until a run completes
 * without reaching the failure. Every run must end in success or a clean
 * MK_E_NOMEM whose message says what was being allocated; never a crash,
 * another status, or a leak (the sanitizer build of `make test` runs this
 * with LeakSanitizer).
 *
 * Failing only the Nth allocation: tests/unit/test_alloc_once.c. */
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

typedef mk_status (*step_fn)(const char *dir);

static mk_status open_model(const char *dir) {
    mk_model *m = NULL;
    mk_status st = mk_model_open(dir, &m);
    mk_model_free(m);
    return st;
}

static mk_status open_engine(const char *dir) {
    mk_model *m = NULL;
    mk_status st = mk_model_open(dir, &m);
    if (st != MK_OK)
        return st;
    mk_engine_opts o = {.threads = 1, .max_ctx = 64};
    mk_engine *e = NULL;
    st = mk_engine_create(m, &o, &e);
    mk_engine_free(e);
    mk_model_free(m);
    return st;
}

static mk_status load_tokenizer(const char *dir) {
    mk_tok *t = NULL;
    mk_status st = mk_tok_load(dir, &t);
    mk_tok_free(t);
    return st;
}

/* convert DIR (FP8 block source: the dequantizing path) to MLX under a
 * fresh temp dir, single-threaded so the failing allocation is the same
 * one on every run; the output is removed after each run, whatever
 * happened. Besides the status, a failed run must leave no DST behind. */
static mk_status convert_once(const char *dir) {
    char *t = mk_test_tmpdir("alloc-conv");
    char dst[4096];
    snprintf(dst, sizeof dst, "%s/out", t);
    mk_conv_opts o;
    mk_conv_opts_init(&o);
    o.to = MK_CONV_MLX;
    o.threads = 1;
    o.quiet = true;
    mk_status st = mk_conv_run(dir, dst, &o, NULL);
    char msg[2048];
    snprintf(msg, sizeof msg, "%s", mk_err_msg());
    if (st != MK_OK && access(dst, F_OK) == 0)
        fail_msg("convert failed (%s: %s) but left %s behind", mk_status_name(st), msg, dst);
    mk_test_rmrf(t);
    free(t);
    if (st != MK_OK)
        mk_err(st, "%s", msg);
    return st;
}

/* Run `fn` with a failure at every successive allocation (after the first
 * `dense` points, at every `stride`-th one: a tokenizer's vocabulary is
 * tens of thousands of allocations on one code path); returns how many
 * allocation points were exercised. */
static long fault_loop(const char *what, step_fn fn, const char *dir, long dense, long stride) {
    /* the sanitizer build (MK_TEST_SMALL=1, every run 3-10x slower): every
     * point of the first 300, then every third stride; the main build keeps
     * the full sweep */
    if (getenv("MK_TEST_SMALL") && !strcmp(getenv("MK_TEST_SMALL"), "1")) {
        dense = dense < 300 ? dense : 300;
        stride *= 3;
    }
    mk_alloc_hook_json(); /* jansson's allocations fail too */
    long n = 0, runs = 0;
    for (;; n += n < dense ? 1 : stride, runs++) {
        mk_alloc_fail_after(n);
        mk_status st = fn(dir);
        long used = mk_alloc_count();
        mk_alloc_fail_after(-1);
        if (st != MK_OK && st != MK_E_NOMEM)
            fail_msg("%s: allocation %ld failing gave status %s (%s), not MK_E_NOMEM", what, n,
                     mk_status_name(st), mk_err_msg());
        if (st == MK_E_NOMEM && !*mk_err_msg())
            fail_msg("%s: allocation %ld failing: MK_E_NOMEM without a message", what, n);
        if (used <= n) { /* the failure was never reached: the run was complete */
            assert_int_equal(st, MK_OK);
            break;
        }
    }
    printf("  %-30s %ld allocation points, %ld of them failed in turn, each cleanly\n", what, n,
           runs);
    return n;
}

/* ------------------------------------------------ one failure, then on
 *
 * mk_alloc_fail_once: only the Nth allocation fails, the rest succeed. A
 * caller that ignores one failed allocation and goes on (jansson's
 * json_object_set_new returning -1 unchecked, a listing cut short) cannot
 * hide behind the next allocation failing too: the run ends in MK_OK, and
 * then what it produced must be exactly what a run without a failure
 * produces. Each step runs under the failure; its digest (a text that
 * stands for its whole output) is taken after the failure is disarmed. */

static void test_model_open(void **st) {
    (void)st;
    assert_true(fault_loop("model open (qwen3moe-a)", open_model,
                           mk_test_fixture("qwen3moe-a/bf16"), 1L << 30, 1) > 10);
    assert_true(fault_loop("model open (deepseekv3-a fp8)", open_model,
                           mk_test_fixture("deepseekv3-a/fp8"), 1L << 30, 1) > 10);
}

static void test_engine_create(void **st) {
    (void)st;
    assert_true(fault_loop("model + engine (tiny)", open_engine,
                           mk_test_fixture("tiny-qwen35moe/bf16"), 1L << 30, 1) > 10);
    /* DSA: the indexer's config lists (indexer_types), weights and caches */
    assert_true(fault_loop("model + engine (glm5dsa-a)", open_engine,
                           mk_test_fixture("glm5dsa-a/bf16"), 1L << 30, 1) > 10);
}

static void test_tokenizer_load(void **st) {
    (void)st;
    assert_true(fault_loop("tokenizer load (tiny)", load_tokenizer,
                           mk_test_fixture("tiny-qwen35moe/bf16"), 1000, 61) > 10);
}

static void test_convert(void **st) {
    (void)st;
    /* every point of opening and planning (the first ~1000 allocations),
     * then every 11th through the run: 5,600 full runs would take minutes */
    assert_true(fault_loop("convert fp8 -> mlx (deepseekv3-a)", convert_once,
                           mk_test_fixture("deepseekv3-a/fp8"), 1000, 11) > 1000);
}


int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_open),     cmocka_unit_test(test_engine_create),
        cmocka_unit_test(test_tokenizer_load), cmocka_unit_test(test_convert),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
