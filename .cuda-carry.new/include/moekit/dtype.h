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

/* Scalar conversions. bf16/f16 rounding to nearest-even, NaN preserved. */
static inline float mk_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)h << 16;
    return v.f;
}
static inline uint16_t mk_f32_to_bf16(float f) {
    union { uint32_t u; float f; } v;
    v.f = f;
    if ((v.u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((v.u >> 16) | 0x40u); /* quiet NaN */
    uint32_t rounding = 0x7fffu + ((v.u >> 16) & 1u);
    return (uint16_t)((v.u + rounding) >> 16);
}
float mk_f16_to_f32(uint16_t h);
uint16_t mk_f32_to_f16(float f);
float mk_e4m3_to_f32(uint8_t b);  /* E4M3FN: no inf, 0x7f/0xff NaN, max 448 */
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
