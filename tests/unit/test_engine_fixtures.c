/* Golden tests of the CPU engine against the transformers references in
 * $MK_FIXTURES (fixtures/README.md): for every fixture checkpoint,
 * teacher-forced logits within ||ours - ref|| / ||ref|| <= 1e-3 with the same
 * argmax at every position (ref_logits, long_logits through chunked
 * prefill, fp8_logits), and greedy decoding with the KV / recurrent-state
 * cache reproducing transformers' tokens exactly.
 *
 * One setting for every fixture: the engine defaults (float32 RoPE
 * frequencies, as transformers' from_pretrained in float32 computed the
 * references), plus fp8_to_bf16 for the FP8 checkpoints, whose references
 * are transformers' bf16 dequantization.
 *
 * Every fixture runs twice: on the CPU backend and on the CUDA backend
 * (issue 14: the GPU path under the same bounds), the "_cuda" cases
 * skipping with the reason when moekit has no CUDA or no GPU is present.
 * MK_TEST_FILTER (a cmocka pattern, e.g. "*_cuda") selects cases. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"
#include "moekit/backend_cuda.h"
#include "moekit/engine.h"
#include "moekit/model.h"
#include "moekit/sample.h"

#define TOL 1e-3

/* The backend of the case being run: CPU (the engine's own) or a fresh
 * CUDA backend per engine (its resident weights are keyed by host address,
 * and each model maps its checkpoint anew). */
static bool g_cuda;
static mk_backend *g_be;
static int g_on_cuda = 1;
static char g_no_cuda[512];

static void use_backend(void **st) {
    g_cuda = st && *st == &g_on_cuda;
    if (g_cuda && g_no_cuda[0]) {
        printf("SKIP engine fixtures on CUDA: no GPU: %s\n", g_no_cuda);
        skip();
    }
}

static json_t *load_json(const char *dir, const char *name) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", mk_test_fixture(dir), name);
    json_error_t je;
    json_t *j = json_load_file(p, 0, &je);
    if (!j)
        fail_msg("%s: %s", p, je.text);
    return j;
}

static int32_t *ids_of(json_t *arr, int64_t *n) {
    *n = (int64_t)json_array_size(arr);
    int32_t *ids = malloc((size_t)*n * sizeof *ids);
    assert_non_null(ids);
    for (int64_t i = 0; i < *n; i++)
        ids[i] = (int32_t)json_integer_value(json_array_get(arr, (size_t)i));
    return ids;
}

static mk_model *open_model(const char *dir, const char *sub, bool fp8_bf16) {
    char rel[512];
    snprintf(rel, sizeof rel, "%s/%s", dir, sub);
    mk_model_opts mo = {.fp8_to_bf16 = fp8_bf16};
    mk_model *m = NULL;
    mk_status st = mk_model_open_ex(mk_test_fixture(rel), &mo, &m);
    if (st != MK_OK)
        fail_msg("open %s: %s", rel, mk_err_msg());
    return m;
}

static mk_engine *make_engine(const mk_model *m, int64_t ctx, int chunk) {
    mk_engine_opts o = {.threads = 2, .max_ctx = ctx, .prefill_chunk = chunk};
    mk_engine *e = NULL;
    if (g_cuda) {
        if (mk_backend_cuda_create(0, &g_be) != MK_OK)
            fail_msg("CUDA backend: %s", mk_err_msg());
        o.backend = g_be;
    }
    if (mk_engine_create(m, &o, &e) != MK_OK)
        fail_msg("engine: %s", mk_err_msg());
    return e;
}

static void free_engine(mk_engine *e) {
    mk_engine_free(e);
    mk_backend_free(g_be); /* after the engine, which borrowed it */
    g_be = NULL;
}

/* Teacher-forced logits of ids vs the reference file within `tol`, same
 * argmax everywhere (tol < 0: only print the error). */
static void check_logits_tol(const char *dir, const char *sub, const char *ref_file,
                             json_t *ids_arr, int chunk, bool fp8_bf16, double tol) {
    mk_model *m = open_model(dir, sub, fp8_bf16);
    int64_t n, V = mk_model_config(m)->vocab_size;
    int32_t *ids = ids_of(ids_arr, &n);
    mk_engine *e = make_engine(m, n, chunk);
    float *out = malloc((size_t)(n * V) * sizeof(float));
    assert_non_null(out);
    if (mk_engine_forward(e, ids, n, MK_LOGITS_ALL, out, NULL) != MK_OK)
        fail_msg("forward: %s", mk_err_msg());
    char rel[512];
    snprintf(rel, sizeof rel, "%s/%s", dir, ref_file);
    size_t nb = 0;
    float *ref = mk_test_slurp(mk_test_fixture(rel), &nb);
    assert_non_null(ref);
    assert_int_equal(nb, (size_t)(n * V) * sizeof(float));
    double num = 0, den = 0;
    int bad_argmax = 0;
    for (int64_t t = 0; t < n; t++) {
        for (int64_t v = 0; v < V; v++) {
            double d = (double)out[t * V + v] - ref[t * V + v];
            num += d * d;
            den += (double)ref[t * V + v] * ref[t * V + v];
        }
        bad_argmax += mk_argmax(out + t * V, V) != mk_argmax(ref + t * V, V);
    }
    double rel_err = sqrt(num / den);
    printf("  %-4s %-16s %-11s %-16s n=%-4lld chunk=%-4d rel %.3e argmax mismatches %d%s\n",
           g_cuda ? "cuda" : "cpu", dir, sub, ref_file, (long long)n, chunk, rel_err, bad_argmax,
           fp8_bf16 ? " (fp8->bf16)" : "");
    if (tol >= 0) { /* tol < 0: report only */
        assert_true(rel_err <= tol);
        assert_int_equal(bad_argmax, 0);
    }
    free(ref);
    free(out);
    free(ids);
    free_engine(e);
    mk_model_free(m);
}

static void check_logits(const char *dir, const char *sub, const char *ref_file, json_t *ids_arr,
                         int chunk, bool fp8_bf16) {
    check_logits_tol(dir, sub, ref_file, ids_arr, chunk, fp8_bf16, TOL);
}

/* Greedy decoding with the cache: prefill the prompt, then one token at a
 * time; the tokens must equal `expect`. */
static void check_greedy(const char *dir, const char *sub, json_t *prompt_arr, json_t *expect_arr) {
    mk_model *m = open_model(dir, sub, false);
    int64_t np, ne, V = mk_model_config(m)->vocab_size;
    int32_t *prompt = ids_of(prompt_arr, &np), *expect = ids_of(expect_arr, &ne);
    mk_engine *e = make_engine(m, np + ne, 512);
    float *lg = malloc((size_t)V * sizeof(float));
    assert_non_null(lg);
    assert_int_equal(mk_engine_forward(e, prompt, np, MK_LOGITS_LAST, lg, NULL), MK_OK);
    int64_t ok = 0;
    for (int64_t i = 0; i < ne; i++) {
        int32_t tok = mk_argmax(lg, V);
        if (tok != expect[i]) {
            printf("  %s greedy: token %lld is %d, expected %d\n", dir, (long long)i, tok,
                   expect[i]);
            break;
        }
        ok++;
        if (i + 1 < ne)
            assert_int_equal(mk_engine_forward(e, &tok, 1, MK_LOGITS_LAST, lg, NULL), MK_OK);
    }
    printf("  %-4s %-16s %-11s greedy %lld/%lld tokens match (prompt %lld)\n", g_cuda ? "cuda" : "cpu", dir, sub,
           (long long)ok, (long long)ne, (long long)np);
    assert_int_equal(ok, ne);
    free(lg);
    free(prompt);
    free(expect);
    free_engine(e);
    mk_model_free(m);
}

/* The standard fixture: ref_logits, long_logits (chunked prefill crossing
 * several chunks), fp8_logits, greedy with cache. */
static void run_fixture(const char *dir, const char *const *subs, int nsubs) {
    json_t *ref = load_json(dir, "reference.json");
    json_t *ids = json_object_get(ref, "input_ids");
    for (int i = 0; i < nsubs; i++)
        check_logits(dir, subs[i], "ref_logits.f32", ids, 512, false);
    char rel[512];
    snprintf(rel, sizeof rel, "%s/long.json", dir);
    FILE *f = fopen(mk_test_fixture(rel), "r");
    if (f) {
        fclose(f);
        json_t *lj = load_json(dir, "long.json");
        check_logits(dir, subs[0], "long_logits.f32", json_object_get(lj, "input_ids"), 48,
                     false);
        json_decref(lj);
    }
    snprintf(rel, sizeof rel, "%s/fp8/config.json", dir);
    f = fopen(mk_test_fixture(rel), "r");
    if (f) {
        fclose(f);
        check_logits(dir, "fp8", "fp8_logits.f32", ids, 512, true);
        /* informational: the native FP8 path keeps fp8 * scale in float32,
         * which is not what the reference computed (it rounded to bf16);
         * deepseekv3-a's grouped routing is close enough to ties that this
         * flips experts, so no bound is asserted */
        check_logits_tol(dir, "fp8", "fp8_logits.f32", ids, 512, false, -1);
    }
    json_t *gp = json_object_get(ref, "greedy_prompt"), *gc = json_object_get(ref, "greedy_cached");
    if (gp && gc)
        check_greedy(dir, subs[0], gp, gc);
    json_decref(ref);
}

static const char *const bf16[] = {"bf16"};

static void test_qwen3moe_a(void **st) { use_backend(st); run_fixture("qwen3moe-a", bf16, 1); }
static void test_qwen3moe_odd(void **st) { use_backend(st); run_fixture("qwen3moe-odd", bf16, 1); }
static void test_qwen3next_a(void **st) { use_backend(st); run_fixture("qwen3next-a", bf16, 1); }
static void test_qwen35moe_a(void **st) { use_backend(st); run_fixture("qwen35moe-a", bf16, 1); }
static void test_deepseekv3_a(void **st) { use_backend(st); run_fixture("deepseekv3-a", bf16, 1); }
static void test_glm4moe_a(void **st) { use_backend(st); run_fixture("glm4moe-a", bf16, 1); }
static void test_minimaxm2_a(void **st) { use_backend(st); run_fixture("minimaxm2-a", bf16, 1); }
static void test_glm4lite_a(void **st) { use_backend(st); run_fixture("glm4lite-a", bf16, 1); }
/* DSA (sparse attention): CPU only, the CUDA backend refuses them (test_dsa) */
static void test_deepseekv32_a(void **st) { use_backend(st); run_fixture("deepseekv32-a", bf16, 1); }
static void test_glm5dsa_a(void **st) { use_backend(st); run_fixture("glm5dsa-a", bf16, 1); }

static void test_qwen35moe_vl(void **st) {
    use_backend(st);
    static const char *const subs[] = {"bf16", "bf16-fused"};
    run_fixture("qwen35moe-vl", subs, 2);
}

/* The trained model: its 64-token logits and three 48-token greedy
 * continuations (from ids; the tokenizer has its own tests). */
static void test_tiny_qwen35moe(void **st) {
    use_backend(st);
    json_t *ref = load_json("tiny-qwen35moe", "reference.json");
    json_t *rl = json_object_get(ref, "ref_logits");
    /* a trained model computed in float32 from its bf16 weights lands at
     * float rounding (6e-7 measured): hold it to 1e-5, tighter than 1e-3 */
    check_logits_tol("tiny-qwen35moe", "bf16", "ref_logits.f32", json_object_get(rl, "input_ids"),
                     512, false, 1e-5);
    json_t *g = json_object_get(ref, "greedy");
    assert_true(json_array_size(g) >= 3);
    for (size_t i = 0; i < json_array_size(g); i++) {
        json_t *c = json_array_get(g, i);
        check_greedy("tiny-qwen35moe", "bf16", json_object_get(c, "prompt_ids"),
                     json_object_get(c, "generated_ids"));
    }
    json_decref(ref);
}

/* each case on the CPU, then the same on CUDA (named NAME_cuda) */
#define BOTH(f) cmocka_unit_test(f), {#f "_cuda", f, NULL, NULL, &g_on_cuda}

int main(void) {
    const struct CMUnitTest tests[] = {
        BOTH(test_qwen3moe_a),   BOTH(test_qwen3moe_odd), BOTH(test_qwen3next_a),
        BOTH(test_qwen35moe_a),  BOTH(test_qwen35moe_vl), BOTH(test_deepseekv3_a),
        BOTH(test_tiny_qwen35moe), BOTH(test_glm4moe_a),
        BOTH(test_minimaxm2_a),  BOTH(test_glm4lite_a),
        cmocka_unit_test(test_deepseekv32_a), cmocka_unit_test(test_glm5dsa_a),
    };
    mk_backend *b = NULL;
    if (mk_backend_cuda_create(0, &b) == MK_OK)
        mk_backend_free(b);
    else
        snprintf(g_no_cuda, sizeof g_no_cuda, "%s", mk_err_msg());
    const char *filter = getenv("MK_TEST_FILTER");
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
