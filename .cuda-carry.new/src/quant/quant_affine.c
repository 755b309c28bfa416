/* MLX affine quantization (FORMATS.md section 2; mlx/backend/cpu/quantized.cpp
 * `quantize`), bit-exact, and its dequantization.
 *
 * Per group of G consecutive elements of a row, in float32 exactly as MLX:
 *   n = 2^bits - 1, eps = (float)1e-7
 *   s = max((wmax - wmin) / n, eps), negated unless |wmin| > |wmax|;
 *   edge = wmin if |wmin| > |wmax| else wmax
 *   q0 = rint(edge / s); if q0 != 0: s = edge / q0, bias = edge; else bias = 0
 *   q_i = clamp(rint((w_i - bias) / s), 0, n)   -- with the float32 s, bias
 *   stored: (T)s, (T)bias in the input dtype T
 * The codes use the float32 scale, not the one rounded to T: MLX rounds
 * only when it stores (`scales[i] = static_cast<T>(scale)` after the loop).
 *
 * Map: fit and pack helpers; the group kernel template instantiated for
 * 4-lane vectors (any CPU) and, on x86-64, 8-lane AVX2 vectors picked at run
 * time; dequantization (float32, or MLX's arithmetic in the scale dtype). */
#include "moekit/isa.h"
#include "quant/quant_impl.h"

#include <stdbool.h>

/* MLX's per-group fit; see the file comment. */
static inline __attribute__((always_inline)) void mk_q_affine_fit(float wmin, float wmax, int bits,
                                                                  float *scale, float *bias) {
    const float n_bins = (float)((1 << bits) - 1);
    const float eps = (float)1e-7; /* MLX: `float eps = 1e-7;` (double literal narrowed) */
    float s = (wmax - wmin) / n_bins;
    s = s < eps ? eps : s; /* std::max(s, eps) */
    bool mask = fabsf(wmin) > fabsf(wmax);
    s = mask ? s : -s;
    float edge = mask ? wmin : wmax;
    float q0 = mk_q_rint(edge / s);
    float b = 0.0f;
    if (q0 != 0.0f) { /* otherwise 0 stays exactly representable */
        s = edge / q0;
        b = edge;
    }
    *scale = s;
    *bias = b;
}

/* Pack G codes of `bits` bits. Widths dividing 32 fill whole words with no
 * carry, the common case (4 and 8 bits) worth its own loop; 3/5/6 bits
 * straddle words and go through the generic bit stream. */
static inline __attribute__((always_inline)) void mk_q_affine_pack(const uint32_t *q, int G, int bits,
                                                                   unsigned char *out) {
    if (32 % bits != 0) {
        mk_q_pack(q, G, bits, out);
        return;
    }
    const int per = 32 / bits;
    uint32_t w[MK_Q_MAX_GROUP / 4];
    for (int i = 0; i < G / per; i++) {
        uint32_t acc = 0;
        for (int k = 0; k < per; k++)
            acc |= q[i * per + k] << (k * bits);
        w[i] = acc;
    }
    memcpy(out, w, (size_t)(G / per) * 4);
}

#define MK_QV_W 4
#define MK_QV_NAME(x) mk_qa_##x##_v4
#define MK_QV_ATTR
#include "quant/quant_affine_kern.h"
#undef MK_QV_W
#undef MK_QV_NAME
#undef MK_QV_ATTR

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MK_QA_HAVE_AVX2 1
#define MK_QV_W 8
#define MK_QV_NAME(x) mk_qa_##x##_v8
#define MK_QV_ATTR __attribute__((target("avx2")))
#include "quant/quant_affine_kern.h"
#undef MK_QV_W
#undef MK_QV_NAME
#undef MK_QV_ATTR
#endif

void mk_q_affine_rows(const mk_qparams *p, mk_dtype in_dt, const unsigned char *in, int64_t rows,
                      int64_t cols, unsigned char *wq, unsigned char *scales, unsigned char *biases) {
#ifdef MK_QA_HAVE_AVX2
    /* the one SIMD switch (isa.h): tests force MK_ISA_REF to cover the baseline */
    if (mk_isa_active() >= MK_ISA_AVX2) {
        mk_qa_rows_v8(p, in_dt, in, rows, cols, wq, scales, biases);
        return;
    }
#endif
    mk_qa_rows_v4(p, in_dt, in, rows, cols, wq, scales, biases);
}

void mk_q_affine_deq(const mk_qparams *p, mk_dtype scale_dt, const unsigned char *wq_row,
                     const unsigned char *s_row, const unsigned char *b_row, int64_t g0, int64_t ng,
                     mk_dtype work_dt, float *out) {
    const int G = p->group, bits = p->bits;
    const size_t gwq = (size_t)G * (size_t)bits / 8;
    uint32_t q[MK_Q_MAX_GROUP];
    for (int64_t g = g0; g < g0 + ng; g++, out += G) {
        float s = mk_q_load(scale_dt, s_row, g), b = mk_q_load(scale_dt, b_row, g);
        mk_q_unpack(wq_row + (size_t)g * gwq, G, bits, q);
        if (work_dt == MK_DT_F32) {
            for (int j = 0; j < G; j++)
                out[j] = s * (float)q[j] + b;
        } else { /* MLX: (scales * q) and (+ biases) each rounded to T */
            for (int j = 0; j < G; j++)
                out[j] = mk_q_round_to(work_dt, mk_q_round_to(work_dt, s * (float)q[j]) + b);
        }
    }
}
