/* bench_readbw: the read-bandwidth bound of a decode step, measured as a
 * streaming read (every byte loaded once, summed so the loads cannot be
 * dropped; nothing written), not a memcpy (which also writes, and reports
 * about half the read bandwidth). The buffer is much larger than the
 * caches; each of T threads reads its own contiguous slice, through the
 * engine's thread pool (as a matmul does). Best of R passes.
 *
 * usage: bench_readbw [threads=1] [MiB=1024] [passes=7]
 * prints: bench=readbw threads=T mib=N gbps=X (decimal GB/s of bytes read) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "moekit/kernels.h"

typedef uint64_t v4u __attribute__((vector_size(32)));

typedef struct rd {
    const unsigned char *buf;
    int64_t chunk;
    uint64_t *sums; /* one per chunk: no two threads write the same one */
} rd;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void rd_task(void *ctx, int64_t b, int64_t e) {
    rd *r = ctx;
    for (int64_t i = b; i < e; i++) {
        const v4u *p = (const v4u *)(const void *)(r->buf + i * r->chunk);
        v4u a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        for (int64_t k = 0; k < r->chunk / 32; k += 4) {
            a0 += p[k];
            a1 += p[k + 1];
            a2 += p[k + 2];
            a3 += p[k + 3];
        }
        v4u a = a0 + a1 + a2 + a3;
        r->sums[i] = a[0] + a[1] + a[2] + a[3];
    }
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    int64_t mib = argc > 2 ? atoll(argv[2]) : 1024;
    int passes = argc > 3 ? atoi(argv[3]) : 7;
    if (threads < 1 || mib < 64 || passes < 1) {
        fprintf(stderr, "usage: bench_readbw [threads>=1] [MiB>=64] [passes>=1]\n");
        return 2;
    }
    const int64_t chunk = 1 << 20, n = mib;
    rd r;
    memset(&r, 0, sizeof r);
    r.chunk = chunk;
    unsigned char *buf = aligned_alloc(64, (size_t)(chunk * n));
    r.sums = calloc((size_t)n, sizeof *r.sums);
    mk_pool *p = NULL;
    if (!buf || !r.sums || mk_pool_create(threads, &p) != MK_OK) {
        fprintf(stderr, "bench_readbw: no memory for %lld MiB or no thread pool\n", (long long)mib);
        return 1;
    }
    for (int64_t i = 0; i < chunk * n; i++)
        buf[i] = (unsigned char)(i * 131 + 7);
    r.buf = buf;
    double best = 1e30;
    for (int k = 0; k < passes; k++) {
        double t = now_s();
        mk_pool_for(p, n, 1, rd_task, &r);
        t = now_s() - t;
        best = t < best ? t : best;
    }
    uint64_t s = 0;
    for (int64_t i = 0; i < n; i++)
        s += r.sums[i];
    printf("bench=readbw threads=%d mib=%lld gbps=%.2f check=%llu\n", threads, (long long)mib,
           (double)(chunk * n) / best / 1e9, (unsigned long long)(s & 0xff));
    mk_pool_free(p);
    free(r.sums);
    free(buf);
    return 0;
}
