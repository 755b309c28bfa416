/* Portable kernel table (MK_ISA_REF): plain C loops and no SIMD
 * dequantizers, so every format goes through wt.c's dequantizer and the
 * tiled path in matmul.c, except mk_matmul's decode (n == 1) of MLX affine
 * 4 and 8 bits, which runs the int8-activation algorithm of the AVX2 table in plain
 * C (kern_impl.h, "int8 activations") so it is tested on every machine. It is the fallback on non-x86 CPUs
 * and the baseline the SIMD tables are compared with. Dot products keep 8 partial sums so compilers can
 * vectorise them without -ffast-math. */
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

/* ---- MLX affine 4 and 8 bits on int8 activations ----------------------
 * The algorithm of the AVX2 kernels (kern_impl.h, "int8 activations") in
 * plain C: same q and d, exact integer block dots, per-group folding. */

static bool ref_prep_affine(const mk_wt *w, const float *x, float *aux, size_t cap) {
    if ((w->bits != 4 && w->bits != 8) || mk_q8x_floats(w->cols, w->group) > cap)
        return false; /* other widths: the float tiled path */
    mk_q8x v = mk_q8x_at(aux, w->cols, w->group);
    mk_q8_quant(x, w->cols, v.q, v.d, v.d8); /* d8 is scratch for the block sums here */
    mk_q8_group_sums(v.d, v.d8, w->cols / w->group, w->group / MK_Q8_BLOCK, v.xg);
    return true;
}

static void ref_mv_affine(const mk_wt *w, int64_t r0, int64_t r1, const float *x, const float *aux,
                          float *y) {
    (void)x;
    const int bits = w->bits, g = w->group;
    const int64_t cols = w->cols, ng = cols / g, rb = cols * bits / 8;
    const mk_q8x v = mk_q8x_at(aux, cols, g);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *p = (const uint8_t *)w->data + r * rb;
        float acc = 0.0f;
        for (int64_t gi = 0; gi < ng; gi++) {
            float ga = 0.0f;
            for (int64_t b = gi * g / MK_Q8_BLOCK; b < (gi + 1) * g / MK_Q8_BLOCK; b++) {
                int32_t isum = 0;
                for (int64_t c = b * MK_Q8_BLOCK; c < (b + 1) * MK_Q8_BLOCK; c++) {
                    int32_t qw = bits == 8 ? p[c] : (p[c / 2] >> (4 * (c & 1))) & 15;
                    isum += qw * v.q[c];
                }
                float t = (float)isum * v.d[b];
                ga += t;
            }
            float s = mk_dtype_load_f32(w->sdtype, w->scales, r * ng + gi);
            float bi = mk_dtype_load_f32(w->sdtype, w->biases, r * ng + gi);
            float ts = s * ga, tb = bi * v.xg[gi];
            acc += ts;
            acc += tb;
        }
        y[r - r0] = acc;
    }
}

const mk_kern_i mk_kern_ref = {
    .name = "ref",
    .dot = ref_dot,
    .sumsq = ref_sumsq,
    .axpy = ref_axpy,
    .gemm_tile = ref_gemm_tile,
    .qmatvec = {[MK_WF_AFFINE] = ref_mv_affine},
    .qprep = {[MK_WF_AFFINE] = ref_prep_affine},
    .attn_block = mk_attn_block_ref,
    .gemm_f32 = mk_gemm_f32_ref,
};
