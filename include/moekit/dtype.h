/* Element types of checkpoint tensors and their traits.
 *
 * The set is exactly safetensors' dtype strings (FORMATS.md section 1). A
 * traits table indexed by mk_dtype gives the name, bits per element and
 * whether it is a float; conversions to and from float32 for the types the
 * engine and converters compute with live here too. */
#ifndef MOEKIT_DTYPE_H
#define MOEKIT_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mk_dtype {
    MK_DT_BOOL = 0,
    MK_DT_F4,
    MK_DT_F6_E2M3,
    MK_DT_F6_E3M2,
    MK_DT_U8,
    MK_DT_I8,
    MK_DT_F8_E5M2,
    MK_DT_F8_E4M3,
    MK_DT_F8_E8M0,
    MK_DT_F8_E4M3FNUZ,
    MK_DT_F8_E5M2FNUZ,
    MK_DT_I16,
    MK_DT_U16,
    MK_DT_F16,
    MK_DT_BF16,
    MK_DT_I32,
    MK_DT_U32,
    MK_DT_F32,
    MK_DT_C64,
    MK_DT_F64,
    MK_DT_I64,
    MK_DT_U64,
    MK_DT_COUNT,
    MK_DT_INVALID = -1
} mk_dtype;

typedef struct mk_dtype_traits {
    const char *name; /* safetensors string, e.g. "BF16" */
    unsigned bits;    /* bits per element: 4, 6, 8, 16, 32, 64 */
    bool is_float;    /* floating (including fp8/fp4/fp6), false for ints and bool */
} mk_dtype_traits;

const mk_dtype_traits *mk_dtype_info(mk_dtype t);
const char *mk_dtype_name(mk_dtype t);
/* Parse a safetensors dtype string; MK_DT_INVALID if unknown. */
mk_dtype mk_dtype_parse(const char *s);
/* Bytes for n elements; false if it overflows or is not a whole number of bytes. */
bool mk_dtype_nbytes(mk_dtype t, uint64_t n, uint64_t *out);

/* Scalar conversions, the one definition of each (the kernels, converters
 * and the quantizer all use these). bf16/f16 rounding to nearest-even, NaN
 * preserved. */
static inline float mk_bits_f32(uint32_t u) {
    union { uint32_t u; float f; } v;
    v.u = u;
    return v.f;
}
static inline float mk_bf16_to_f32(uint16_t h) { return mk_bits_f32((uint32_t)h << 16); }
/* Branch-free so loops over it vectorize (a per-element call was half the
 * cost of an FP8 dequantization in convert). NaN stays a quiet NaN. */
static inline uint16_t mk_f32_to_bf16(float f) {
    union { uint32_t u; float f; } v;
    v.f = f;
    uint32_t r = (v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16, q = (v.u >> 16) | 0x40u;
    return (uint16_t)((v.u & 0x7fffffffu) > 0x7f800000u ? q : r);
}
/* f16 -> f32 without a call or a branch on the common path: the 15
 * non-sign bits shifted into a float32 and scaled by 2^112 rebias the
 * exponent and turn subnormals into normals exactly; Inf/NaN (exponent 31)
 * are rebuilt. */
static inline float mk_f16_to_f32(uint16_t h) {
    uint32_t em = h & 0x7fffu;
    float f = mk_bits_f32(em << 13) * ((float)(1ull << 56) * (float)(1ull << 56)) /* 2^112 */;
    if (em >= 0x7c00u)
        f = mk_bits_f32(0x7f800000u | ((em & 0x3ffu) << 13));
    return (h & 0x8000u) ? -f : f;
}
uint16_t mk_f32_to_f16(float f);
/* FP8 E4M3FN decode, the one E4M3 of every reader: checkpoint FP8, and
 * MLX's mxfp8 elements and nvfp4 scales (MLX's E4M3 is the "fn" variant
 * too). No infinities; 0x7f/0xff are NaN; the largest finite magnitude is
 * 0x7e = 448. 2^(e-7) by rebiasing the 7 low bits into a float32. */
static inline float mk_e4m3_to_f32(uint8_t b) {
    if ((b & 0x7fu) == 0x7fu)
        return mk_bits_f32(0x7fc00000u);
    float v = mk_bits_f32((uint32_t)(b & 0x7fu) << 20) * ((float)(1ull << 60) * (float)(1ull << 60)) /* 2^120 */;
    return (b & 0x80u) ? -v : v;
}
/* FP4 E2M1 nibble (sign bit 3) -> float: magnitudes 0, .5, 1, 1.5, 2, 3,
 * 4, 6 (exponent bias 1, one mantissa bit, subnormal 0.5). Inline so that
 * loops over constant codes fold to constants. */
static inline float mk_e2m1_to_f32(uint8_t b) {
    int e = (b >> 1) & 3, m = b & 1;
    float v = e == 0 ? 0.5f * (float)m : (1.0f + 0.5f * (float)m) * (float)(1 << (e - 1));
    return (b & 8u) ? -v : v;
}
/* Element i of an F32, BF16 or F16 array at any alignment (scales, biases,
 * plain weights): the one loader of "element i" for every reader. */
static inline float mk_dtype_load_f32(mk_dtype t, const void *p, int64_t i) {
    const unsigned char *b = (const unsigned char *)p;
    if (t == MK_DT_F32) {
        float f;
        memcpy(&f, b + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, b + 2 * i, 2);
    return t == MK_DT_BF16 ? mk_bf16_to_f32(h) : mk_f16_to_f32(h);
}
float mk_e5m2_to_f32(uint8_t b);  /* IEEE-like, bias 15 */
float mk_e8m0_to_f32(uint8_t b);  /* 2^(b-127); 0xff NaN */
uint8_t mk_f32_to_e4m3(float f);  /* round to nearest even, saturating at 448 */

/* Convert n elements of a float dtype (F32, F16, BF16, F64, F8_E4M3, F8_E5M2)
 * to float32. Returns false for dtypes it cannot convert. */
bool mk_dtype_to_f32(mk_dtype t, const void *src, float *dst, size_t n);
/* Convert n float32 values to F32, F16 or BF16. */
bool mk_dtype_from_f32(mk_dtype t, const float *src, void *dst, size_t n);

#ifdef __cplusplus
}
#endif
#endif
