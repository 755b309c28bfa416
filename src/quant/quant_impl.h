/* Internals shared by the quantization sources: element loads and stores
 * per dtype, rounding to a working type the way MLX's bf16/f16 arithmetic
 * does, round-half-to-even without libm, MLX's exact E4M3 conversions, the
 * row bit-stream packer/unpacker, and the per-mode kernel entry points that
 * quant.c dispatches to through its mode table.
 *
 * Everything here assumes float arithmetic is done in float
 * (FLT_EVAL_METHOD 0) and a little-endian host: packed words are stored in
 * host order and must read as little-endian uint32, as safetensors does. */
#ifndef MK_QUANT_IMPL_H
#define MK_QUANT_IMPL_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "moekit/quant.h"

#if FLT_EVAL_METHOD != 0
#error "the quantizer emulates float32 arithmetic and needs FLT_EVAL_METHOD == 0"
#endif
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "packed quantized words are stored in host order: little-endian hosts only"
#endif

/* Clang contracts a*b+c into an FMA when the target has one; MLX's results
 * (and ours) round the product and the sum separately. GCC in ISO C mode
 * does not contract, and warns about this pragma, hence the guard. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define MK_Q_MAX_GROUP 128 /* largest group of any mode: stack buffers use it */

static inline uint32_t mk_q_fbits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float mk_q_bitsf(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Element decoders (f16, bf16, E4M3) and "element i of an F32/F16/BF16
 * array" are core's, in moekit/dtype.h: mk_f16_to_f32, mk_dtype_load_f32,
 * mk_e4m3_to_f32. */

/* n consecutive elements starting at element i0 into dst (float32). */
static inline void mk_q_load_n(mk_dtype t, const void *p, int64_t i0, int n, float *dst) {
    const unsigned char *b = p;
    if (t == MK_DT_F32) {
        memcpy(dst, b + 4 * i0, (size_t)n * 4);
        return;
    }
    uint16_t h[MK_Q_MAX_GROUP];
    memcpy(h, b + 2 * i0, (size_t)n * 2);
    if (t == MK_DT_BF16)
        for (int j = 0; j < n; j++)
            dst[j] = mk_bf16_to_f32(h[j]);
    else
        for (int j = 0; j < n; j++)
            dst[j] = mk_f16_to_f32(h[j]);
}

/* x rounded (nearest-even) to dtype t and widened back: what storing a
 * float result into an MLX array of dtype t does. */
static inline float mk_q_round_to(mk_dtype t, float x) {
    if (t == MK_DT_BF16)
        return mk_bf16_to_f32(mk_f32_to_bf16(x));
    if (t == MK_DT_F16)
        return mk_f16_to_f32(mk_f32_to_f16(x));
    return x;
}

/* Store x as element i of an F32/F16/BF16 array (rounding nearest-even). */
static inline void mk_q_store(mk_dtype t, void *p, int64_t i, float x) {
    unsigned char *b = p;
    if (t == MK_DT_F32) {
        memcpy(b + 4 * i, &x, 4);
        return;
    }
    uint16_t h = t == MK_DT_BF16 ? mk_f32_to_bf16(x) : mk_f32_to_f16(x);
    memcpy(b + 2 * i, &h, 2);
}

/* rint() in the default rounding mode, inlined and vectorisable: adding 2^23
 * to |x| < 2^23 leaves no fraction bits, so the FPU rounds it half-to-even;
 * larger |x| are already integers. Keeps the sign (rint(-0.3) is -0). */
static inline float mk_q_rint(float x) {
    float a = fabsf(x);
    float r = (a + 0x1p23f) - 0x1p23f;
    r = a < 0x1p23f ? r : a;
    return copysignf(r, x);
}

/* float -> E4M3FN byte as MLX's quantizer writes it (mxfp8 elements, nvfp4
 * scales): nearest-even onto the finite E4M3 grid, saturating: anything that
 * would round past 448 (|x| > 464, where 0x7f would follow; 0x7f/0xff are
 * NaN), Inf and NaN give 0x7e (448), the sign bit kept (-0 gives 0x80).
 * 464 itself is a tie between 448 and the NaN code and goes to 0x7e. */
static inline uint8_t mk_q_e4m3_encode(float f) {
    uint32_t u = mk_q_fbits(f);
    uint32_t sign = u & 0x80000000u;
    u ^= sign;
    uint8_t r;
    if (u > 0x43e80000u) /* above 464.0f (it would round to 0x7f, NaN), Inf, NaN: saturate */
        r = 0x7e;
    else if (u < 0x3c800000u) /* below 2^-6: subnormal steps of 2^-9, the FPU rounds */
        r = (uint8_t)(mk_q_fbits(mk_q_bitsf(u) + 0x1p14f) - 0x46800000u);
    else /* rebias 127 -> 7, round 23 mantissa bits to 3, nearest-even */
        r = (uint8_t)((u + 0xc407ffffu + ((u >> 20) & 1u)) >> 20);
    return (uint8_t)(r | (sign >> 24));
}

/* ---- row bit streams (FORMATS.md section 2) ---------------------------
 * Every group starts on a word boundary (group * bits is a multiple of 32
 * for every allowed combination), so groups pack and unpack independently. */

/* Pack n codes of `bits` bits, LSB first, into n*bits/32 words at out. */
static inline void mk_q_pack(const uint32_t *q, int n, int bits, unsigned char *out) {
    uint32_t w[MK_Q_MAX_GROUP]; /* n*bits/32 <= 32 words; sized generously */
    uint64_t acc = 0;
    int nbits = 0, nw = 0;
    for (int j = 0; j < n; j++) {
        acc |= (uint64_t)q[j] << nbits;
        nbits += bits;
        if (nbits >= 32) {
            w[nw++] = (uint32_t)acc;
            acc >>= 32;
            nbits -= 32;
        }
    }
    memcpy(out, w, (size_t)nw * 4);
}

/* Inverse of mk_q_pack: n codes of `bits` bits from the words at in. */
static inline void mk_q_unpack(const unsigned char *in, int n, int bits, uint32_t *q) {
    uint64_t acc = 0;
    int nbits = 0;
    uint32_t mask = (1u << bits) - 1u;
    for (int j = 0; j < n; j++) {
        if (nbits < bits) {
            uint32_t w;
            memcpy(&w, in, 4);
            in += 4;
            acc |= (uint64_t)w << nbits;
            nbits += 32;
        }
        q[j] = (uint32_t)acc & mask;
        acc >>= bits;
        nbits -= bits;
    }
}

/* ---- kernels (parameters, dtypes and buffers validated by quant.c) ----
 * A row is `cols` elements; groups g0 .. g0+ng-1 of a row are dequantized
 * at a time so the error helper can work in small stack buffers. */

void mk_q_affine_rows(const mk_qparams *p, mk_dtype in_dt, const unsigned char *in, int64_t rows,
                      int64_t cols, unsigned char *wq, unsigned char *scales, unsigned char *biases);
void mk_q_fp_rows(const mk_qparams *p, mk_dtype in_dt, const unsigned char *in, int64_t rows, int64_t cols,
                  unsigned char *wq, unsigned char *scales);

/* Dequantize groups [g0, g0+ng) of one row into out (ng * group floats).
 * work_dt F32: float32 arithmetic. F16/BF16: every result rounded to that
 * type as MLX computes (the values returned are exactly representable in
 * it). */
void mk_q_affine_deq(const mk_qparams *p, mk_dtype scale_dt, const unsigned char *wq_row,
                     const unsigned char *s_row, const unsigned char *b_row, int64_t g0, int64_t ng,
                     mk_dtype work_dt, float *out);
void mk_q_fp_deq(const mk_qparams *p, const unsigned char *wq_row, const unsigned char *s_row, int64_t g0,
                 int64_t ng, mk_dtype work_dt, float *out);

#endif
