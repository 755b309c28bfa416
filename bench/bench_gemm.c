/* Prefill-shaped matmul benchmark: GFLOP/s of mk_matmul with n tokens for
 * MoE expert shapes in each weight format, the weights hot in cache (a
 * prefill reads each weight once per block of tokens, so compute decides).
 *
 *   bench_gemm [threads] [seconds-per-case] [n ...]
 * threads default 1, n default 32 (tokens one expert gets from a 512-token
 * prompt with 8 of 128 experts) and 512 (a dense layer). Each timing is the
 * best of 5 rounds; with one thread the times are CPU time, which a
 * time-shared machine distorts less than wall time. MK_KERNELS=ref|avx2|avx512|avx512vnni picks the kernel
 * path and MK_ACT_INT8=1 turns on int8 activations (read here, not by the
 * library). Indicative only on a shared machine: compare interleaved runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "moekit/dtype.h"
#include "moekit/kernels.h"
#include "moekit/weight.h"

/* Wall-clock seconds, or this process's CPU seconds (g_cpu: one thread,
 * where CPU time is what the kernel used even when a shared machine's
 * scheduler gives the process only part of a core). */
static int g_cpu;
static double now(void) {
    struct timespec ts;
    clock_gettime(g_cpu ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t g_rng = 88172645463325252ull;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

typedef struct bcase {
    const char *name;
    mk_wfmt fmt;
    int bits, group;
} bcase;

/* A weight of c's format with small random codes and unit-ish scales. */
static mk_wt make_weight(const bcase *c, int64_t rows, int64_t cols, void **mem) {
    mk_wt w = {.fmt = c->fmt, .rows = rows, .cols = cols, .bits = c->bits, .group = c->group,
               .sdtype = MK_DT_BF16, .block_r = 128, .block_c = 128, .global_scale = 1.0f};
    if (c->fmt == MK_WF_FP8_E4M3)
        w.sdtype = MK_DT_F32;
    size_t db = (size_t)rows * mk_wt_row_bytes(&w), sb = 0;
    if (c->fmt == MK_WF_AFFINE)
        sb = (size_t)(rows * cols / c->group) * 2;
    else if (c->fmt == MK_WF_FP8_E4M3)
        sb = (size_t)(((rows + 127) / 128) * ((cols + 127) / 128)) * 4;
    else if (c->fmt == MK_WF_MXFP4)
        sb = (size_t)(rows * cols / 32);
    uint8_t *m = malloc(db + 2 * sb + 64);
    if (!m) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    /* bf16 high bytes: a random sign and exponents 112-127 (|w| in [2^-15, 2)); the low 6 exponent
     * bits at random made 1/128 of the weights subnormal and many tiny, which real checkpoints
     * are not: their products took x86 microcode assists and the bf16 rows measured 3.5 GFLOP/s */
    for (size_t i = 0; i < db; i++)
        m[i] = c->fmt == MK_WF_BF16 && (i & 1) ? (uint8_t)(0x38 | (rnd() & 0x87)) : (uint8_t)(rnd() & 0x77);
    for (size_t i = 0; i + 1 < 2 * sb; i += 2) {
        uint16_t h = mk_f32_to_bf16(0.01f);
        memcpy(m + db + i, &h, 2);
    }
    if (c->fmt == MK_WF_FP8_E4M3)
        for (size_t i = 0; i + 4 <= sb; i += 4) {
            float one = 1.0f;
            memcpy(m + db + i, &one, 4);
        }
    if (c->fmt == MK_WF_MXFP4)
        memset(m + db, 127, sb);
    w.data = m;
    w.scales = sb ? m + db : NULL;
    w.biases = c->fmt == MK_WF_AFFINE ? m + db + sb : NULL;
    *mem = m;
    if (mk_wt_check(&w, c->name) != MK_OK) {
        fprintf(stderr, "%s\n", mk_err_msg());
        exit(1);
    }
    return w;
}

static double time_matmul(mk_pool *p, const mk_wt *w, const float *x, int64_t n, float *y, double secs) {
    mk_matmul(p, w, x, n, y); /* warm up */
    double best = 1e30;
    for (int round = 0; round < 5; round++) {
        long iters = 0;
        double t0 = now(), t;
        do {
            mk_matmul(p, w, x, n, y);
            iters++;
            t = now();
        } while (t - t0 < secs / 5);
        if ((t - t0) / (double)iters < best)
            best = (t - t0) / (double)iters;
    }
    return best;
}

int main(int argc, char **argv) {
    const char *kp = getenv("MK_KERNELS");
    mk_isa isa;
    if (kp && *kp && (mk_isa_parse(kp, &isa) != MK_OK || mk_isa_set(isa) != MK_OK)) {
        fprintf(stderr, "bench_gemm: MK_KERNELS: %s\n", mk_err_msg());
        return 2;
    }
    const char *ai = getenv("MK_ACT_INT8");
    if (ai && !strcmp(ai, "1"))
        mk_kernels_set_int8(true);
    int nth = argc > 1 ? atoi(argv[1]) : 1;
    double secs = argc > 2 ? atof(argv[2]) : 0.5;
    int64_t ns[8] = {32, 512};
    int nn = 2;
    if (argc > 3)
        for (nn = 0; nn < 8 && 3 + nn < argc; nn++)
            ns[nn] = atoll(argv[3 + nn]);
    mk_pool *pool = NULL;
    g_cpu = nth == 1;
    if (nth != 1 && mk_pool_create(nth, &pool) != MK_OK) {
        fprintf(stderr, "%s\n", mk_err_msg());
        return 1;
    }
    printf("kernels: %s%s   threads: %d\n", mk_isa_name(mk_isa_active()), mk_kernels_int8() ? " int8" : "",
           mk_pool_size(pool));
    static const bcase cases[] = {
        {"affine4 g64", MK_WF_AFFINE, 4, 64}, {"affine8 g64", MK_WF_AFFINE, 8, 64},
        {"bf16", MK_WF_BF16, 0, 0},           {"fp8 e4m3", MK_WF_FP8_E4M3, 0, 0},
        {"mxfp4", MK_WF_MXFP4, 0, 0},
    };
    static const int64_t shapes[][2] = {{768, 2048}, {2048, 768}};
    int64_t nmax = 0;
    for (int i = 0; i < nn; i++)
        nmax = ns[i] > nmax ? ns[i] : nmax;
    float *x = malloc(sizeof(float) * (size_t)(nmax * 2048)), *y = malloc(sizeof(float) * (size_t)(nmax * 2048));
    if (!x || !y)
        return 1;
    for (int64_t i = 0; i < nmax * 2048; i++)
        x[i] = (float)(rnd() % 2001) / 1000.0f - 1.0f;
    printf("%-12s %-10s %6s %10s %10s\n", "format", "rows x cols", "n", "us/call", "GFLOP/s");
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
        for (size_t si = 0; si < 2; si++)
            for (int k = 0; k < nn; k++) {
                int64_t rows = shapes[si][0], cols = shapes[si][1], n = ns[k];
                void *mem;
                mk_wt w = make_weight(&cases[ci], rows, cols, &mem);
                double t = time_matmul(pool, &w, x, n, y, secs);
                char shape[32];
                snprintf(shape, sizeof shape, "%lldx%lld", (long long)rows, (long long)cols);
                printf("%-12s %-10s %6lld %10.1f %10.1f\n", cases[ci].name, shape, (long long)n, t * 1e6,
                       2.0 * (double)(rows * cols) * (double)n / t / 1e9);
                free(mem);
            }
    free(x);
    free(y);
    mk_pool_free(pool);
    return 0;
}
