/* RoPE at long positions against an independent float64 RoPE.
 *
 * The engine rotates with float32 frequencies 1 / theta^(2i/d) and a float32
 * product position * inv_freq, as transformers' from_pretrained in float32,
 * llama.cpp, mlx-lm and vLLM do. This test reads theta and the rotated width
 * straight from each fixture's config.json (jansson, not moekit's config
 * parser), computes cos/sin of every frequency at positions 4032..4095 in
 * double precision, and requires the engine's tables to agree within 2e-3.
 *
 * Why 2e-3 can fail: float32 frequencies are exact to ~2 ulp (2.4e-7
 * relative), so at position 4095 the phase is off by at most ~1e-3 rad
 * (angle <= 4095). Frequencies rounded to bf16 (the engine's old default) are
 * off by up to 2^-9 relative: radians of phase for the middle frequencies at
 * these positions. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_impl.h"
#include "mk_test_util.h"
#include "moekit/engine.h"
#include "moekit/model.h"

#define POS0 4032
#define NPOS 64
#define BOUND 2e-3

/* theta and the rotated width, read from config.json without moekit */
static void ref_params(const char *dir, double *theta, int *rot) {
    char rel[512];
    snprintf(rel, sizeof rel, "%s/bf16/config.json", dir);
    json_error_t je;
    json_t *c = json_load_file(mk_test_fixture(rel), 0, &je);
    if (!c)
        fail_msg("%s: %s", rel, je.text);
    json_t *rp = json_object_get(c, "rope_parameters");
    json_t *th = rp ? json_object_get(rp, "rope_theta") : json_object_get(c, "rope_theta");
    assert_non_null(th);
    *theta = json_number_value(th);
    json_t *qr = json_object_get(c, "qk_rope_head_dim");
    if (qr) { /* MLA: only the rope part of each head rotates */
        *rot = (int)json_integer_value(qr);
    } else {
        json_t *pf = rp ? json_object_get(rp, "partial_rotary_factor") : NULL;
        double f = pf ? json_number_value(pf) : 1.0;
        *rot = (int)(json_integer_value(json_object_get(c, "head_dim")) * f);
    }
    json_decref(c);
}

static void check_fixture(const char *dir) {
    double theta;
    int rot;
    ref_params(dir, &theta, &rot);
    char rel[512];
    snprintf(rel, sizeof rel, "%s/bf16", dir);
    mk_model *m = NULL;
    if (mk_model_open(mk_test_fixture(rel), &m) != MK_OK)
        fail_msg("open %s: %s", rel, mk_err_msg());
    mk_engine_opts o = {.threads = 1, .max_ctx = POS0 + NPOS, .prefill_chunk = NPOS};
    mk_engine *e = NULL;
    if (mk_engine_create(m, &o, &e) != MK_OK)
        fail_msg("engine %s: %s", dir, mk_err_msg());
    assert_int_equal(e->rot_dim, rot);
    mk_engine_rope_tables(e, POS0, NPOS);
    int half = rot / 2;
    double worst = 0;
    for (int t = 0; t < NPOS; t++)
        for (int i = 0; i < half; i++) {
            double ang = (double)(POS0 + t) * pow(theta, -2.0 * i / rot);
            double dc = fabs(e->cos[t * half + i] - cos(ang));
            double ds = fabs(e->sin[t * half + i] - sin(ang));
            worst = fmax(worst, fmax(dc, ds));
        }
    printf("  %-16s theta %-10g rot %-3d positions %d..%d: worst |cos/sin - f64| %.3e\n", dir,
           theta, rot, POS0, POS0 + NPOS - 1, worst);
    assert_true(worst <= BOUND);
    mk_engine_free(e);
    mk_model_free(m);
}

static void test_rope_qwen3moe(void **st) { (void)st; check_fixture("qwen3moe-a"); }
static void test_rope_partial(void **st) { (void)st; check_fixture("tiny-qwen35moe"); }
static void test_rope_mla(void **st) { (void)st; check_fixture("deepseekv3-a"); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rope_qwen3moe),
        cmocka_unit_test(test_rope_partial),
        cmocka_unit_test(test_rope_mla),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
