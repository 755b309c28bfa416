/* The --target-bpw allocator (mk_alloc_solve) against exhaustive search.
 *
 * Claims checked:
 *   - optimality bound: on random small instances (up to 7 tensors x up to
 *     6 widths, errors sometimes non-convex in bits, some zero usages) the
 *     result never beats the exhaustive optimum, never exceeds the budget,
 *     and is within gap_bound of the optimum (gap_bound = the error saving
 *     of the first hull step that did not fit: the LP relaxation's optimum
 *     lies between the greedy prefix and that step, and lower-bounds the
 *     integer optimum);
 *   - budget: on a 3000-tensor instance, for 60 targets between the least
 *     and the most the widths allow, total bits <= target * params;
 *   - monotonic: over the same sweep the objective never increases (the
 *     greedy takes hull steps in decreasing slope order; with a larger
 *     budget both runs agree up to the first step only the larger one can
 *     afford, whose saving exceeds all the smaller run gains afterwards,
 *     since those steps have lower slopes and cost less in total);
 *   - fixed tensors (routers, float) count against the budget;
 *   - errors: a target below the minimum (message gives the minimum), a
 *     width that was not profiled, a non-positive target. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"
#include "moekit/profile.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static double urand(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 9007199254740992.0;
}

static const int k_bits[6] = {2, 3, 4, 5, 6, 8};

/* Bytes of a (rows, cols) bf16 affine module at `bits`, group 64. */
static uint64_t affine_bytes(int64_t rows, int64_t cols, int bits) {
    return (uint64_t)(rows * cols * bits / 8 + 2 * rows * (cols / 64) * 2);
}

/* A random tensor: errors fall ~4x per bit with noise (sometimes a width
 * that is worse than the chord: a non-hull option). */
static void random_tensor(mk_prof_tensor *t, int i, const int *bits, int nb, char *name) {
    memset(t, 0, sizeof *t);
    snprintf(name, 64, "model.layers.%d.mlp.experts.%d.gate_proj", i / 8, i % 8);
    t->name = name;
    t->kind = urand() < 0.7 ? MK_PROF_EXPERT : MK_PROF_LINEAR;
    t->layer = i / 8;
    t->expert = t->kind == MK_PROF_EXPERT ? i % 8 : -1;
    t->rows = 64 * (1 + (int64_t)(urand() * 4));
    t->cols = 64 * (1 + (int64_t)(urand() * 4));
    t->usage = urand() < 0.15 ? 0.0 : urand();
    double e = 0.1 + 0.2 * urand();
    for (int k = 0; k < nb; k++) {
        double step = k ? pow(0.25, bits[k] - bits[k - 1]) * (0.5 + urand()) : 1.0;
        e *= step > 0.95 ? 0.95 : step;
        t->err[k] = e;
        t->bytes[k] = affine_bytes(t->rows, t->cols, bits[k]);
    }
}

static mk_prof *new_prof(const int *bits, int nb) {
    mk_prof *p = NULL;
    assert_int_equal(mk_prof_new(bits, nb, 64, &p), MK_OK);
    return p;
}

/* Exhaustive optimum: min objective with total bits <= cap; INFINITY when
 * nothing fits. */
static double brute(const mk_prof *p, double cap) {
    size_t n = mk_prof_count(p);
    const int *bits;
    int nb = mk_prof_bits(p, &bits);
    int idx[8] = {0};
    double best = INFINITY, fixed = 0;
    for (size_t i = 0; i < n; i++) {
        const mk_prof_tensor *t = mk_prof_tensor_at(p, i);
        if (t->kind == MK_PROF_ROUTER || t->kind == MK_PROF_FLOAT)
            fixed += 8.0 * (double)t->fixed_bytes;
    }
    for (;;) {
        double cost = fixed, obj = 0;
        for (size_t i = 0; i < n; i++) {
            const mk_prof_tensor *t = mk_prof_tensor_at(p, i);
            if (t->kind != MK_PROF_EXPERT && t->kind != MK_PROF_LINEAR)
                continue;
            cost += 8.0 * (double)t->bytes[idx[i]];
            obj += t->usage * t->err[idx[i]] * (double)t->params;
        }
        if (cost <= cap && obj < best)
            best = obj;
        size_t i = 0;
        while (i < n && ++idx[i] == nb)
            idx[i++] = 0;
        if (i == n)
            break;
    }
    return best;
}

static double total_params(const mk_prof *p) {
    double s = 0;
    for (size_t i = 0; i < mk_prof_count(p); i++)
        s += (double)mk_prof_tensor_at(p, i)->params;
    return s;
}

/* Objective recomputed from the items and the profile. */
static double objective_of(const mk_prof *p, const mk_alloc *a) {
    const int *bits;
    int nb = mk_prof_bits(p, &bits);
    double obj = 0;
    for (size_t i = 0; i < a->n_items; i++) {
        const mk_prof_tensor *t = mk_prof_find(p, a->items[i].module);
        assert_non_null(t);
        if (a->items[i].fixed)
            continue;
        int k = 0;
        while (k < nb && bits[k] != a->items[i].bits)
            k++;
        assert_true(k < nb);
        obj += t->usage * t->err[k] * (double)t->params;
    }
    return obj;
}

static void test_vs_brute_force(void **st) {
    (void)st;
    int cases = 0, exact = 0;
    double worst = 0; /* (result - optimum) / gap_bound */
    for (int inst = 0; inst < 300; inst++) {
        int nb = 2 + (int)(urand() * 5); /* 2..6 widths */
        int bits[6];
        int take[6] = {0, 1, 2, 3, 4, 5};
        for (int i = 5; i > 0; i--) { /* random subset of the six widths */
            int j = (int)(urand() * (i + 1)), x = take[i];
            take[i] = take[j];
            take[j] = x;
        }
        for (int k = 0; k < nb; k++)
            bits[k] = k_bits[take[k]];
        mk_prof *p = new_prof(bits, nb);
        mk_prof_bits(p, NULL);
        const int *sb;
        mk_prof_bits(p, &sb);
        int n = 1 + (int)(urand() * (nb <= 3 ? 7 : nb == 4 ? 6 : 5));
        for (int i = 0; i < n; i++) {
            mk_prof_tensor t;
            char name[64];
            random_tensor(&t, i, sb, nb, name);
            assert_int_equal(mk_prof_add(p, &t), MK_OK);
        }
        double P = total_params(p);
        for (int j = 0; j < 5; j++) {
            double target = sb[0] + 0.25 + urand() * (sb[nb - 1] - sb[0] + 0.5);
            double cap = floor(target * P), opt = brute(p, cap);
            mk_alloc a;
            mk_status s = mk_alloc_solve(p, target, NULL, 0, &a);
            if (isinf(opt)) { /* nothing fits: the solver must say so */
                assert_int_equal(s, MK_E_ARG);
                continue;
            }
            if (s != MK_OK)
                fail_msg("instance %d: %s", inst, mk_err_msg());
            cases++;
            assert_true((double)a.total_bits <= cap);
            assert_true(a.achieved_bpw <= target);
            double obj = objective_of(p, &a);
            assert_true(fabs(obj - a.objective) <= 1e-9 * (1 + obj));
            assert_true(obj >= opt - 1e-9 * (1 + opt));
            if (obj - opt > a.gap_bound + 1e-9 * (1 + opt))
                fail_msg("instance %d target %.3f: objective %.9g, optimum %.9g, gap bound %.9g",
                         inst, target, obj, opt, a.gap_bound);
            exact += obj <= opt + 1e-9 * (1 + opt);
            if (a.gap_bound > 0 && (obj - opt) / a.gap_bound > worst)
                worst = (obj - opt) / a.gap_bound;
            mk_alloc_free(&a);
        }
        mk_prof_free(p);
    }
    print_message("%d solvable cases vs exhaustive search: %d optimal; worst (result - optimum) "
                  "/ gap bound = %.3f\n", cases, exact, worst);
    assert_true(cases > 500);
}

static void test_budget_and_monotonic(void **st) {
    (void)st;
    mk_prof *p = new_prof(k_bits, 6);
    static char names[3000][64];
    for (int i = 0; i < 3000; i++) {
        mk_prof_tensor t;
        random_tensor(&t, i, k_bits, 6, names[i]);
        assert_int_equal(mk_prof_add(p, &t), MK_OK);
    }
    /* a router at 8 bits and a float tensor, fixed */
    mk_prof_tensor r = {.name = "model.layers.0.mlp.gate", .kind = MK_PROF_ROUTER, .rows = 64,
                        .cols = 256, .layer = 0, .expert = -1, .fixed_bits = 8,
                        .fixed_bytes = affine_bytes(64, 256, 8)};
    mk_prof_tensor f = {.name = "model.layers.0.odd_proj", .kind = MK_PROF_FLOAT, .rows = 10,
                        .cols = 100, .layer = 0, .expert = -1, .fixed_bits = 16,
                        .fixed_bytes = 2000};
    assert_int_equal(mk_prof_add(p, &r), MK_OK);
    assert_int_equal(mk_prof_add(p, &f), MK_OK);
    mk_alloc lo, hi;
    assert_int_equal(mk_alloc_uniform(p, 2, &lo), MK_OK);
    assert_int_equal(mk_alloc_uniform(p, 8, &hi), MK_OK);
    /* the fixed tensors are in the totals */
    assert_int_equal(lo.total_params, (uint64_t)total_params(p));
    double prev = INFINITY;
    for (int j = 0; j <= 60; j++) {
        double target = lo.achieved_bpw + (hi.achieved_bpw + 0.2 - lo.achieved_bpw) * j / 60.0;
        mk_alloc a;
        if (mk_alloc_solve(p, target, NULL, 0, &a) != MK_OK)
            fail_msg("target %.4f: %s", target, mk_err_msg());
        assert_true((double)a.total_bits <= floor(target * (double)a.total_params));
        assert_true(a.objective <= prev);
        /* routers stay at their fixed width */
        const mk_alloc_item *it = NULL;
        for (size_t i = 0; i < a.n_items && !it; i++)
            if (!strcmp(a.items[i].module, "model.layers.0.mlp.gate"))
                it = &a.items[i];
        assert_non_null(it);
        assert_true(it->fixed);
        assert_int_equal(it->bits, 8);
        prev = a.objective;
        if (j == 60) /* above every width's cost: the best-error choice */
            assert_true(a.objective <= hi.objective);
        mk_alloc_free(&a);
    }
    /* the allocation at uniform-4's bpw beats uniform 4 on the objective */
    mk_alloc u4, a4;
    assert_int_equal(mk_alloc_uniform(p, 4, &u4), MK_OK);
    assert_int_equal(mk_alloc_solve(p, u4.achieved_bpw, NULL, 0, &a4), MK_OK);
    assert_true(a4.objective <= u4.objective);
    assert_true(a4.achieved_bpw <= u4.achieved_bpw);
    /* a subset of widths is honoured */
    mk_alloc s;
    static const int sub[2] = {4, 8};
    assert_int_equal(mk_alloc_solve(p, 6.0, sub, 2, &s), MK_OK);
    for (size_t i = 0; i < s.n_items; i++)
        assert_true(s.items[i].bits == 4 || s.items[i].bits == 8);
    mk_alloc_free(&s);
    mk_alloc_free(&u4);
    mk_alloc_free(&a4);
    mk_alloc_free(&lo);
    mk_alloc_free(&hi);
    mk_prof_free(p);
}

static void test_errors(void **st) {
    (void)st;
    mk_prof *p = new_prof(k_bits, 6);
    mk_prof_tensor t;
    char name[64];
    random_tensor(&t, 0, k_bits, 6, name);
    assert_int_equal(mk_prof_add(p, &t), MK_OK);
    assert_int_equal(mk_prof_add(p, &t), MK_E_ARG); /* duplicate name */
    mk_alloc a;
    assert_int_equal(mk_alloc_solve(p, 2.0, NULL, 0, &a), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "below the least"));
    assert_non_null(strstr(mk_err_msg(), "2.50")); /* 2 bits + 0.5 of bf16 scales/biases */
    static const int seven[1] = {7};
    assert_int_equal(mk_alloc_solve(p, 4.0, seven, 1, &a), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "7 bits was not profiled"));
    assert_int_equal(mk_alloc_solve(p, 0.0, NULL, 0, &a), MK_E_ARG);
    assert_int_equal(mk_alloc_solve(p, NAN, NULL, 0, &a), MK_E_ARG);
    assert_int_equal(mk_alloc_uniform(p, 7, &a), MK_E_ARG);
    mk_prof_free(p);
    /* candidate width lists */
    int bad1[2] = {4, 7}, bad2[2] = {4, 4}, ok[3] = {8, 2, 4};
    assert_int_equal(mk_prof_check_bits(bad1, 2), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "7 is not an affine width"));
    assert_int_equal(mk_prof_check_bits(bad2, 2), MK_E_ARG);
    assert_int_equal(mk_prof_check_bits(ok, 3), MK_OK);
    assert_int_equal(ok[0], 2);
    assert_int_equal(ok[2], 8);
    assert_int_equal(mk_prof_new(k_bits, 6, 48, &p), MK_E_ARG); /* group */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vs_brute_force),
        cmocka_unit_test(test_budget_and_monotonic),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
