/* Portable kernel table (MK_ISA_REF): plain C loops, no fused matvecs and
 * no SIMD dequantizers, so every format goes through wt.c's dequantizer and
 * the tiled path in matmul.c. It is the fallback on non-x86 CPUs and the
 * baseline the SIMD tables are compared with. Dot products keep 8 partial
 * sums so compilers can vectorise them without -ffast-math. */
#include "kernels/kern_impl.h"

static float ref_dot(const float *a, const float *b, int64_t n) {
    float s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            s[j] += a[i + j] * b[i + j];
    float acc = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; i < n; i++)
        acc += a[i] * b[i];
    return acc;
}

static float ref_sumsq(const float *x, int64_t n) {
    return ref_dot(x, x, n);
}

/* separate statements: a compiler allowed to contract within an expression
 * must not turn this into an FMA */
static void ref_axpy(float *y, float a, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float p = a * x[i];
        y[i] += p;
    }
}

static void ref_gemm_tile(const float *a, int64_t lda, int nr, const float *x, int64_t ldx, int nt, int64_t k,
                          float *y, int64_t ldy) {
    for (int t = 0; t < nt; t++)
        for (int i = 0; i < nr; i++)
            y[t * ldy + i] += ref_dot(a + i * lda, x + t * ldx, k);
}

const mk_kern_i mk_kern_ref = {
    .name = "ref",
    .dot = ref_dot,
    .sumsq = ref_sumsq,
    .axpy = ref_axpy,
    .gemm_tile = ref_gemm_tile,
};
