/* Decode-shaped matvec benchmark: GB/s of weight bytes streamed by
 * mk_matmul (n = 1) for MoE expert shapes, against the machine's read and
 * memcpy bandwidth measured in the same run.
 *
 * Decode touches each routed expert once per token, so the weights come
 * from DRAM, not cache: every case cycles through enough copies of the
 * matrix to exceed the last-level cache ("cold"); "hot" repeats one matrix
 * (cache-resident upper bound). One prefill row (n = 32) reports GFLOP/s.
 *
 *   bench_matvec [threads] [seconds-per-case]   (threads default: all CPUs)
 * Each timing is the best of 5 rounds, so a busy machine shows up as noise
 * in the slower rounds rather than in the result.
 * MK_KERNELS=ref|avx2|avxvnni|avx512|avx512vnni picks the kernel path and
 * MK_ACT_INT8=0 turns int8 activations off, 1 on (the library's default on x86 paths;
 * read here, not by the library). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "moekit/dtype.h"
#include "moekit/kernels.h"
#include "moekit/weight.h"

#define COLD_BYTES (512u << 20) /* total weight bytes cycled through per case */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t g_rng = 88172645463325252ull;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

/* One weight format under test. */
typedef struct bcase {
    const char *name;
    mk_wfmt fmt;
    int bits, group;
} bcase;

/* Fill a weight of `c`'s format; all arrays point into one malloc'd block
 * returned in *mem. Scales/biases: bf16 (affine), f32 (fp8, 128x128). */
static mk_wt make_weight(const bcase *c, int64_t rows, int64_t cols, void **mem, size_t *wbytes) {
    mk_wt w = {.fmt = c->fmt,
               .rows = rows,
               .cols = cols,
               .bits = c->bits,
               .group = c->group,
               .sdtype = MK_DT_BF16,
               .block_r = 128,
               .block_c = 128,
               .global_scale = 1.0f};
    if (c->fmt == MK_WF_FP8_E4M3)
        w.sdtype = MK_DT_F32;
    size_t db = (size_t)rows * mk_wt_row_bytes(&w), sb = 0;
    if (c->fmt == MK_WF_AFFINE)
        sb = (size_t)(rows * cols / c->group) * 2;
    else if (c->fmt == MK_WF_FP8_E4M3)
        sb = (size_t)(((rows + 127) / 128) * ((cols + 127) / 128)) * 4;
    else if (c->fmt == MK_WF_MXFP4)
        sb = (size_t)(rows * cols / 32);
    uint8_t *m = malloc(db + 2 * sb);
    if (!m) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < db; i++)
        m[i] = (uint8_t)(rnd() & (c->fmt == MK_WF_BF16 && (i & 1) ? 0x3f : 0x77));
    for (size_t i = 0; i < 2 * sb; i += 2) {
        uint16_t h = mk_f32_to_bf16(0.01f);
        memcpy(m + db + i, &h, 2);
    }
    if (c->fmt == MK_WF_FP8_E4M3 || c->fmt == MK_WF_MXFP4)
        for (size_t i = 0; i < sb; i += 4) { /* f32 1.0 / E8M0 bytes of 127 */
            float one = 1.0f;
            if (c->fmt == MK_WF_FP8_E4M3)
                memcpy(m + db + i, &one, 4);
            else
                memset(m + db + i, 127, sb - i < 4 ? sb - i : 4);
        }
    w.data = m;
    w.scales = sb ? m + db : NULL;
    w.biases = c->fmt == MK_WF_AFFINE ? m + db + sb : NULL;
    *mem = m;
    *wbytes = db + (c->fmt == MK_WF_AFFINE ? 2 * sb : sb);
    if (mk_wt_check(&w, c->name) != MK_OK) {
        fprintf(stderr, "%s\n", mk_err_msg());
        exit(1);
    }
    return w;
}

/* Seconds per mk_matmul call, cycling through `nw` weights: the best of
 * 5 rounds of secs/5 (other processes on a shared machine only slow a
 * round down). */
static double time_matmul(mk_pool *p, const mk_wt *ws, int nw, const float *x, int64_t n, float *y,
                          double secs) {
    for (int i = 0; i < nw; i++) /* warm up: page in, pick kernels */
        mk_matmul(p, &ws[i], x, n, y);
    double best = 1e30;
    for (int round = 0; round < 5; round++) {
        long iters = 0;
        double t0 = now(), t;
        do {
            for (int i = 0; i < nw; i++)
                mk_matmul(p, &ws[i], x, n, y);
            iters += nw;
            t = now();
        } while (t - t0 < secs / 5);
        if ((t - t0) / (double)iters < best)
            best = (t - t0) / (double)iters;
    }
    return best;
}

/* Read bandwidth (sum of squares over a big buffer) and memcpy bandwidth. */
static void mem_bandwidth(double secs, double *read_gbs, double *copy_gbs) {
    size_t n = COLD_BYTES / sizeof(float) / 2;
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    if (!a || !b) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        a[i] = b[i] = 1.0f;
    volatile float sink = 0;
    double bytes = (double)(n * sizeof(float));
    *read_gbs = *copy_gbs = 0;
    for (int round = 0; round < 5; round++) { /* best of 5, as time_matmul */
        double t0 = now();
        sink += mk_dot_f32(a, a, (int64_t)n);
        double t1 = now();
        memcpy(round & 1 ? a : b, round & 1 ? b : a, n * sizeof(float));
        double t2 = now();
        if (bytes / (t1 - t0) / 1e9 > *read_gbs)
            *read_gbs = bytes / (t1 - t0) / 1e9;
        if (bytes / (t2 - t1) / 1e9 > *copy_gbs)
            *copy_gbs = bytes / (t2 - t1) / 1e9;
    }
    (void)sink;
    free(a);
    free(b);
}

int main(int argc, char **argv) {
    const char *kp = getenv("MK_KERNELS");
    mk_isa isa;
    if (kp && *kp && (mk_isa_parse(kp, &isa) != MK_OK || mk_isa_set(isa) != MK_OK)) {
        fprintf(stderr, "bench_matvec: MK_KERNELS: %s\n", mk_err_msg());
        return 2;
    }
    const char *ai = getenv("MK_ACT_INT8"); /* 0 / 1: float / int8 activations (kernels.h) */
    if (ai && *ai)
        mk_kernels_set_int8(strcmp(ai, "0") != 0);
    int nth = argc > 1 ? atoi(argv[1]) : 0;
    double secs = argc > 2 ? atof(argv[2]) : 0.4;
    mk_pool *pool = NULL;
    if (mk_pool_create(nth, &pool) != MK_OK) {
        fprintf(stderr, "%s\n", mk_err_msg());
        return 1;
    }
    int all = mk_pool_size(pool);
    double rd, cp;
    mem_bandwidth(secs, &rd, &cp);
    printf("kernels: %s   threads: 1 and %d\n", mk_isa_name(mk_isa_active()), all);
    printf("memory (1 thread): read %.1f GB/s, memcpy %.1f GB/s (bytes copied)\n\n", rd, cp);

    static const bcase cases[] = {
        {"affine4 g64", MK_WF_AFFINE, 4, 64}, {"affine8 g64", MK_WF_AFFINE, 8, 64},
        {"bf16", MK_WF_BF16, 0, 0},           {"affine3 g64", MK_WF_AFFINE, 3, 64},
        {"fp8 e4m3", MK_WF_FP8_E4M3, 0, 0},   {"mxfp4", MK_WF_MXFP4, 0, 0},
    };
    static const int64_t shapes[][2] = {{768, 2048}, {2048, 768}};
    float *x = malloc(sizeof(float) * 32 * 2048), *y = malloc(sizeof(float) * 32 * 2048);
    for (int i = 0; i < 32 * 2048; i++)
        x[i] = (float)(rnd() % 2001) / 1000.0f - 1.0f;

    printf("%-12s %-10s %9s | %8s %8s %8s | %8s %8s | %10s\n", "format", "rows x cols", "KiB", "1t cold",
           "1t hot", "us/call", "Nt cold", "us/call", "n=32 GF/s");
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
        for (size_t si = 0; si < 2; si++) {
            int64_t rows = shapes[si][0], cols = shapes[si][1];
            void *mem0;
            size_t wb;
            mk_wt w0 = make_weight(&cases[ci], rows, cols, &mem0, &wb);
            int nw = (int)(COLD_BYTES / wb) + 1;
            mk_wt *ws = malloc(sizeof *ws * (size_t)nw);
            void **mems = malloc(sizeof *mems * (size_t)nw);
            ws[0] = w0;
            mems[0] = mem0;
            for (int i = 1; i < nw; i++)
                ws[i] = make_weight(&cases[ci], rows, cols, &mems[i], &wb);
            double t1c = time_matmul(NULL, ws, nw, x, 1, y, secs);
            double t1h = time_matmul(NULL, ws, 1, x, 1, y, secs);
            double tnc = time_matmul(pool, ws, nw, x, 1, y, secs);
            double tpf = time_matmul(pool, ws, 1, x, 32, y, secs);
            char shape[32];
            snprintf(shape, sizeof shape, "%lldx%lld", (long long)rows, (long long)cols);
            printf("%-12s %-10s %9.0f | %8.1f %8.1f %8.1f | %8.1f %8.1f | %10.1f\n", cases[ci].name, shape,
                   (double)wb / 1024, (double)wb / t1c / 1e9, (double)wb / t1h / 1e9, t1c * 1e6,
                   (double)wb / tnc / 1e9, tnc * 1e6, 2.0 * (double)(rows * cols) * 32 / tpf / 1e9);
            for (int i = 0; i < nw; i++)
                free(mems[i]);
            free(ws);
            free(mems);
        }
    printf("\nGB/s = weight bytes (packed data + scales + biases) per second.\n");
    free(x);
    free(y);
    mk_pool_free(pool);
    return 0;
}
