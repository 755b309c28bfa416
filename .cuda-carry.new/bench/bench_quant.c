/* Quantizer throughput: GB/s of bf16 input for affine 4-bit g64 on one
 * thread and on all cores (pthreads over row ranges, as `moekit quantize`
 * will run it), next to memcpy bandwidth measured in the same run, so the
 * ratio says how far from memory-bound the kernel is. Then one line per
 * other mode/width on one thread, and the portable (non-AVX2) affine copy.
 *
 *   bench_quant [rows [cols [reps]]]     default 4096 x 4096 (32 MiB bf16), 5 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "moekit/isa.h"
#include "moekit/quant.h"
#include "quant/quant_impl.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

typedef struct work {
    const mk_qparams *p;
    const unsigned char *in;
    unsigned char *wq, *sc, *bi;
    int64_t r0, r1, cols;
    mk_quant_layout l;
    /* memcpy mode */
    const unsigned char *src;
    unsigned char *dst;
    size_t n;
} work;

static void *quant_job(void *arg) {
    work *w = arg;
    mk_status s =
        mk_quant_rows(w->p, MK_DT_BF16, w->in + (size_t)w->r0 * w->l.in_row_bytes, w->r1 - w->r0, w->cols,
                      w->wq + (size_t)w->r0 * w->l.wq_row_bytes, w->sc + (size_t)w->r0 * w->l.scale_row_bytes,
                      w->bi ? w->bi + (size_t)w->r0 * w->l.bias_row_bytes : NULL);
    if (s != MK_OK)
        fprintf(stderr, "quantize: %s\n", mk_err_msg());
    return NULL;
}

static void *copy_job(void *arg) {
    work *w = arg;
    memcpy(w->dst, w->src, w->n);
    return NULL;
}

/* Best of `reps` runs of `fn` over nt threads; each work item prepared by the caller. */
static double best_time(void *(*fn)(void *), work *ws, int nt, int reps) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        pthread_t th[256];
        double t0 = now();
        for (int t = 0; t < nt; t++)
            pthread_create(&th[t], NULL, fn, &ws[t]);
        for (int t = 0; t < nt; t++)
            pthread_join(th[t], NULL);
        double dt = now() - t0;
        best = dt < best ? dt : best;
    }
    return best;
}

static double quant_gbs(const mk_qparams *p, const unsigned char *in, int64_t rows, int64_t cols,
                        unsigned char *wq, unsigned char *sc, unsigned char *bi, int nt, int reps) {
    mk_quant_layout l;
    if (mk_quant_layout_of(p, MK_DT_BF16, cols, &l) != MK_OK) {
        fprintf(stderr, "%s\n", mk_err_msg());
        exit(2);
    }
    work ws[256];
    for (int t = 0; t < nt; t++)
        ws[t] =
            (work){p, in,   wq,   sc, l.bias_row_bytes ? bi : NULL, rows * t / nt, rows * (t + 1) / nt, cols,
                   l, NULL, NULL, 0};
    double dt = best_time(quant_job, ws, nt, reps);
    return (double)rows * (double)l.in_row_bytes / dt / 1e9;
}

static double copy_gbs(const unsigned char *src, unsigned char *dst, size_t n, int nt, int reps) {
    work ws[256];
    for (int t = 0; t < nt; t++) {
        size_t a = n * (size_t)t / (size_t)nt, b = n * (size_t)(t + 1) / (size_t)nt;
        ws[t] = (work){0};
        ws[t].src = src + a;
        ws[t].dst = dst + a;
        ws[t].n = b - a;
    }
    return (double)n / best_time(copy_job, ws, nt, reps) / 1e9;
}

int main(int argc, char **argv) {
    int64_t rows = argc > 1 ? atoll(argv[1]) : 4096, cols = argc > 2 ? atoll(argv[2]) : 4096;
    int reps = argc > 3 ? atoi(argv[3]) : 5;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int nt = ncpu < 1 ? 1 : ncpu > 256 ? 256 : (int)ncpu;
    if (rows < nt || cols <= 0 || cols % 128 || reps < 1) {
        fprintf(stderr, "usage: bench_quant [rows >= %d [cols, a multiple of 128 [reps]]]\n", nt);
        return 2;
    }
    size_t n = (size_t)(rows * cols);
    unsigned char *in = malloc(n * 2), *dst = malloc(n * 2);
    unsigned char *wq = malloc(n), *sc = malloc(n / 8), *bi = malloc(n / 8);
    if (!in || !dst || !wq || !sc || !bi)
        return 1;
    uint64_t s = 88172645463325252ull;
    for (size_t i = 0; i < n; i++) { /* roughly normal-ish weights, bf16 */
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        float v = ((float)(s & 0xffff) + (float)((s >> 16) & 0xffff) - 65535.0f) / 65536.0f;
        mk_q_store(MK_DT_BF16, in, (int64_t)i, v * 0.05f);
    }
    memset(dst, 1, n * 2), memset(wq, 0, n), memset(sc, 0, n / 8), memset(bi, 0, n / 8);

    mk_qparams p;
    mk_quant_params(MK_QMODE_AFFINE, 4, 64, 0, &p);
    printf("bench_quant: %lld x %lld bf16 (%.1f MiB), best of %d, %d threads\n", (long long)rows,
           (long long)cols, (double)n * 2 / 1048576.0, reps, nt);
    double c1 = copy_gbs(in, dst, n * 2, 1, reps), cn = copy_gbs(in, dst, n * 2, nt, reps);
    double q1 = quant_gbs(&p, in, rows, cols, wq, sc, bi, 1, reps);
    double qn = quant_gbs(&p, in, rows, cols, wq, sc, bi, nt, reps);
    printf("memcpy                  1 thread %6.2f GB/s   %d threads %6.2f GB/s\n", c1, nt, cn);
    printf("affine 4-bit g64 bf16   1 thread %6.2f GB/s   %d threads %6.2f GB/s\n", q1, nt, qn);
    printf("ratio quantize/memcpy   1 thread %6.2f        %d threads %6.2f\n", q1 / c1, nt, qn / cn);

    mk_isa best = mk_isa_active();
    mk_isa_set(MK_ISA_REF);
    printf("affine 4-bit g64, portable 4-lane copy, 1 thread %6.2f GB/s\n",
           quant_gbs(&p, in, rows, cols, wq, sc, bi, 1, reps));
    mk_isa_set(best);

    static const struct {
        mk_qmode m;
        int bits, group;
    } other[] = {{MK_QMODE_AFFINE, 2, 64},  {MK_QMODE_AFFINE, 3, 64}, {MK_QMODE_AFFINE, 5, 64},
                 {MK_QMODE_AFFINE, 6, 64},  {MK_QMODE_AFFINE, 8, 64}, {MK_QMODE_AFFINE, 4, 32},
                 {MK_QMODE_AFFINE, 4, 128}, {MK_QMODE_MXFP4, 0, 0},   {MK_QMODE_MXFP8, 0, 0},
                 {MK_QMODE_NVFP4, 0, 0}};
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
        mk_quant_params(other[i].m, other[i].bits, other[i].group, 0, &p);
        printf("%-6s %d-bit g%-3d bf16, 1 thread %6.2f GB/s\n", mk_qmode_name(p.mode), p.bits, p.group,
               quant_gbs(&p, in, rows / 4, cols, wq, sc, bi, 1, 2));
    }
    free(in), free(dst), free(wq), free(sc), free(bi);
    return 0;
}
