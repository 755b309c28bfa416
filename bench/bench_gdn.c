/* Gated DeltaNet prefill benchmark: the CPU backend's gdn slot over n
 * tokens in one call (the chunked form) against n one-token calls (the
 * token loop decode runs), Qwen3.5-shaped heads (dk = dv = 128).
 *
 *   bench_gdn [value-heads] [tokens] [seconds]   (defaults 8, 512, 1)
 * One thread; times are CPU time, best of 3 rounds, so a shared machine's
 * scheduler distorts them less. Indicative only. MK_KERNELS=ref|avx2|
 * avx512|avx512vnni picks the kernel path (read here, not by the library). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "moekit/backend.h"
#include "moekit/isa.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *rvec(size_t n, float lo, float hi) {
    float *v = malloc(n * sizeof(float));
    if (!v) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        v[i] = lo + (hi - lo) * (float)rand() / (float)RAND_MAX;
    return v;
}

int main(int argc, char **argv) {
    const char *kp = getenv("MK_KERNELS");
    mk_isa isa;
    if (kp && *kp && (mk_isa_parse(kp, &isa) != MK_OK || mk_isa_set(isa) != MK_OK)) {
        fprintf(stderr, "bench_gdn: MK_KERNELS: %s\n", mk_err_msg());
        return 2;
    }
    int nv = argc > 1 ? atoi(argv[1]) : 8;
    int64_t n = argc > 2 ? atoll(argv[2]) : 512;
    double secs = argc > 3 ? atof(argv[3]) : 1.0;
    const int nk = nv / 2 > 0 ? nv / 2 : 1, dk = 128, dv = 128;
    if (nv < 1 || nv % nk || n < 1) {
        fprintf(stderr, "bench_gdn: bad arguments\n");
        return 2;
    }
    mk_backend *be = NULL;
    if (mk_backend_cpu_create(NULL, &be) != MK_OK) {
        fprintf(stderr, "%s\n", mk_err_msg());
        return 1;
    }
    const mk_backend_i *bi = mk_backend_iface(be);
    void *ctx = mk_backend_ctx(be);
    int64_t stride = 2 * (int64_t)nk * dk + (int64_t)nv * dv;
    float *qkv = rvec((size_t)(n * stride), -1, 1), *a = rvec((size_t)(n * nv), -2, 2);
    float *b = rvec((size_t)(n * nv), -2, 2), *al = rvec((size_t)nv, -1, 0.5f), *dt = rvec((size_t)nv, -1, 1);
    float *S = rvec((size_t)nv * dk * dv, -0.1f, 0.1f), *out = rvec((size_t)(n * nv * dv), 0, 0);
    double best[2] = {1e30, 1e30};
    for (int round = 0; round < 3; round++)
        for (int mode = 0; mode < 2; mode++) { /* 0: one call of n tokens, 1: n calls of one */
            long iters = 0;
            double t0 = now(), t;
            do {
                if (mode == 0) {
                    mk_gdn_args g = {qkv, qkv + nk * dk, qkv + 2 * nk * dk, stride, a, b, al, dt, S, out, n,
                                     nk, nv, dk, dv};
                    bi->gdn(ctx, &g);
                } else {
                    for (int64_t i = 0; i < n; i++) {
                        const float *row = qkv + i * stride;
                        mk_gdn_args g = {row, row + nk * dk, row + 2 * nk * dk, stride, a + i * nv, b + i * nv,
                                         al, dt, S, out + i * nv * dv, 1, nk, nv, dk, dv};
                        bi->gdn(ctx, &g);
                    }
                }
                iters++;
                t = now();
            } while (t - t0 < secs / 6);
            double per = (t - t0) / (double)iters;
            if (per < best[mode])
                best[mode] = per;
        }
    printf("gdn %d value heads, dk = dv = 128, %lld tokens, one thread (CPU time), kernels %s\n", nv,
           (long long)n, mk_isa_name(mk_isa_active()));
    printf("  chunked (one call):   %8.2f ms  %8.0f tok/s\n", best[0] * 1e3, (double)n / best[0]);
    printf("  token loop (n calls): %8.2f ms  %8.0f tok/s\n", best[1] * 1e3, (double)n / best[1]);
    free(qkv);
    free(a);
    free(b);
    free(al);
    free(dt);
    free(S);
    free(out);
    mk_backend_free(be);
    return 0;
}
