/* Vector ops of the forward pass (kernels.h): dot, RMSNorm, SiLU/SwiGLU,
 * sigmoid, softmax, add/scale/axpy.
 *
 * Reductions (dot, sum of squares) and axpy go through the active kernel
 * table so they use SIMD (axpy is attention's value accumulation and MLA's
 * transposed product: hot, and a plain loop that gcc -O2 leaves scalar
 * because y and x may alias); the other element-wise ops are plain loops,
 * and the transcendental ones call expf (vectors here are a hidden state or
 * one expert's intermediate: thousands of elements, not the bottleneck next
 * to the matmuls). */
#include <math.h>

#include "kernels/kern_impl.h"
#include "moekit/kernels.h"

float mk_dot_f32(const float *a, const float *b, int64_t n) {
    return mk_kern_active()->dot(a, b, n);
}

void mk_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps, bool zero_centred) {
    if (n <= 0)
        return;
    float ms = mk_kern_active()->sumsq(x, n) / (float)n;
    float inv = 1.0f / sqrtf(ms + eps);
    if (!w) {
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] * inv;
    } else if (zero_centred) {
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] * inv * (1.0f + w[i]);
    } else {
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] * inv * w[i];
    }
}

void mk_silu(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        x[i] = x[i] / (1.0f + expf(-x[i]));
}

void mk_swiglu(float *y, const float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        y[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void mk_sigmoid(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        x[i] = 1.0f / (1.0f + expf(-x[i]));
}

void mk_log_softmax_f64(const float *x, int64_t n, double *lp) {
    double mx = x[0], sum = 0;
    for (int64_t i = 1; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    for (int64_t i = 0; i < n; i++)
        sum += exp((double)x[i] - mx);
    double lse = mx + log(sum);
    for (int64_t i = 0; i < n; i++)
        lp[i] = (double)x[i] - lse;
}

void mk_softmax(float *x, int64_t n) {
    if (n <= 0)
        return;
    float mx = x[0];
    for (int64_t i = 1; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (int64_t i = 0; i < n; i++)
        x[i] *= inv;
}

void mk_add(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
}

void mk_scale(float *y, float s, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] *= s;
}

void mk_axpy(float *y, float a, const float *x, int64_t n) {
    mk_kern_active()->axpy(y, a, x, n);
}

void mk_gemm_f32_ref(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b, int64_t ldb,
                     float *c, int64_t ldc) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int64_t p = 0; p < k; p++)
                acc = fmaf(a[i * lda + p], b[p * ldb + j], acc);
            c[i * ldc + j] = acc;
        }
}

void mk_gemm_f32(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b, int64_t ldb,
                 float *c, int64_t ldc) {
    const mk_kern_i *t = mk_kern_active();
    (t->gemm_f32 ? t->gemm_f32 : mk_gemm_f32_ref)(m, n, k, a, lda, b, ldb, c, ldc);
}
