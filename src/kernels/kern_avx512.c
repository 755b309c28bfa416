/* AVX-512 kernel table (MK_ISA_AVX512): F, BW, VL, DQ plus FMA and F16C.
 *
 * Same structure and tricks as kern_avx2.c (read that header first), at 16
 * floats per vector: the vector primitives and element loaders, dot and
 * the 4x4 gemm_tile (masked loads for tails) live here, the per-format
 * kernels come from kern_simd_body.h. E2M1 values come straight from a
 * 16-entry float permute. */
#include "kernels/kern_impl.h"

#ifdef MK_KERN_X86
#include <immintrin.h>

#define MK_T __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

#define KSFX(name) name##_avx512
#define MK_KERN_TABLE mk_kern_avx512
#define MK_KERN_NAME "avx512"
#define VN 16
typedef __m512 vf;

/* ---- helpers ---------------------------------------------------------- */

MK_T static inline vf v_zero(void) {
    return _mm512_setzero_ps();
}
MK_T static inline vf v_set1(float f) {
    return _mm512_set1_ps(f);
}
MK_T static inline vf v_add(vf a, vf b) {
    return _mm512_add_ps(a, b);
}
MK_T static inline vf v_mul(vf a, vf b) {
    return _mm512_mul_ps(a, b);
}
MK_T static inline vf v_fma(vf a, vf b, vf c) {
    return _mm512_fmadd_ps(a, b, c);
}
MK_T static inline vf v_ld(const float *p) {
    return _mm512_loadu_ps(p);
}
MK_T static inline void v_st(float *p, vf v) {
    _mm512_storeu_ps(p, v);
}
MK_T static inline float v_hsum(vf v) {
    return _mm512_reduce_add_ps(v);
}

MK_T static inline __m128i ld128(const uint8_t *p) {
    return _mm_loadu_si128((const __m128i *)(const void *)p);
}

MK_T static inline vf ld_bf16(const uint8_t *p) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

MK_T static inline vf ld_f16(const uint8_t *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)p));
}

/* E4M3 -> f16 bits (value / 2^8), NaN bytes to NaN, as in kern_avx2.c. */
MK_T static inline vf ld_e4m3(const uint8_t *p) {
    __m256i b = _mm256_slli_epi16(_mm256_cvtepu8_epi16(ld128(p)), 8);
    __m256i h = _mm256_and_si256(_mm256_srai_epi16(b, 1), _mm256_set1_epi16((short)0xbfff));
    __m256i nan = _mm256_cmpeq_epi16(_mm256_and_si256(b, _mm256_set1_epi16(0x7f00)), _mm256_set1_epi16(0x7f00));
    h = _mm256_or_si256(h, _mm256_and_si256(nan, _mm256_set1_epi16(0x7e00)));
    return _mm512_cvtph_ps(h);
}

MK_T static inline vf ld_e5m2(const uint8_t *p) {
    return _mm512_cvtph_ps(_mm256_slli_epi16(_mm256_cvtepu8_epi16(ld128(p)), 8));
}

MK_T static inline vf ld_u8(const uint8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(ld128(p)));
}

/* 8 bytes -> 16 nibbles in element order (low nibble first) as bytes. */
MK_T static inline __m128i nibbles16(const uint8_t *p) {
    const __m128i m = _mm_set1_epi8(15);
    __m128i v = _mm_loadl_epi64((const __m128i *)(const void *)p);
    return _mm_unpacklo_epi8(_mm_and_si128(v, m), _mm_and_si128(_mm_srli_epi16(v, 4), m));
}

/* 16 bytes -> 32 nibbles in element order, as two vectors. */
MK_T static inline void ld_u4x2(const uint8_t *p, vf *lo, vf *hi) {
    const __m128i m = _mm_set1_epi8(15);
    __m128i v = ld128(p);
    __m128i a = _mm_and_si128(v, m), b = _mm_and_si128(_mm_srli_epi16(v, 4), m);
    *lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(a, b)));
    *hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpackhi_epi8(a, b)));
}

/* VN elements of a bits-wide stream (kern_simd_body.h, "any width"). */
#define MK_LDB 16
struct mk_bits_ctl;
MK_T static inline vf ld_bits(const uint8_t *p, const struct mk_bits_ctl *k);

/* 16 bytes -> 16 dword lanes holding one byte each (the rest zero). */
#define MK_SP(k) (int)(0x80808000u | (k))
MK_T static inline __m512i spread16(const uint8_t *p) {
    const __m512i ctl = _mm512_setr_epi32(MK_SP(0), MK_SP(1), MK_SP(2), MK_SP(3), MK_SP(4), MK_SP(5),
                                          MK_SP(6), MK_SP(7), MK_SP(8), MK_SP(9), MK_SP(10), MK_SP(11),
                                          MK_SP(12), MK_SP(13), MK_SP(14), MK_SP(15));
    return _mm512_shuffle_epi8(_mm512_broadcast_i32x4(ld128(p)), ctl);
}

/* 16 bytes: low nibbles (even elements) and high nibbles (odd elements). */
MK_T static inline void ld_q4p(const uint8_t *p, vf *lo, vf *hi) {
    __m512i d = spread16(p);
    *lo = _mm512_cvtepi32_ps(_mm512_and_si512(d, _mm512_set1_epi32(15)));
    *hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(d, 4));
}

/* The same as 2 * E2M1 value: a 16-entry permute uses the low 4 bits. */
MK_T static inline void ld_f4p(const uint8_t *p, vf *lo, vf *hi) {
    const __m512 lut = _mm512_setr_ps(0, 1, 2, 3, 4, 6, 8, 12, -0.0f, -1, -2, -3, -4, -6, -8, -12);
    __m512i d = spread16(p);
    *lo = _mm512_permutexvar_ps(d, lut);
    *hi = _mm512_permutexvar_ps(_mm512_srli_epi32(d, 4), lut);
}

/* E2M1 codes through a byte shuffle of 2 * value. */
MK_T static inline vf ld_fp4(const uint8_t *p) {
    const __m128i lut = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_shuffle_epi8(lut, nibbles16(p))));
}

/* ---- float32 products ------------------------------------------------- */

MK_T static inline __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
}

MK_T static float KSFX(dot)(const float *a, const float *b, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

MK_T static float KSFX(sumsq)(const float *x, int64_t n) {
    return KSFX(dot)(x, x, n);
}

/* 4 rows x 4 tokens of dot products in 16 named accumulators (an array
 * would be kept in memory by the compiler). */
#define MK_T44_ROW(i, A)                                                                                     \
    do {                                                                                                     \
        __m512 a_ = (A);                                                                                     \
        c##i##0 = _mm512_fmadd_ps(a_, v0, c##i##0);                                                          \
        c##i##1 = _mm512_fmadd_ps(a_, v1, c##i##1);                                                          \
        c##i##2 = _mm512_fmadd_ps(a_, v2, c##i##2);                                                          \
        c##i##3 = _mm512_fmadd_ps(a_, v3, c##i##3);                                                          \
    } while (0)

MK_T static void tile_4x4(const float *const ar[4], const float *const xt[4], int64_t k, float out[4][4]) {
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00,
           c13 = c00, c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
    int64_t j = 0;
    for (; j + 16 <= k; j += 16) {
        __m512 v0 = _mm512_loadu_ps(xt[0] + j), v1 = _mm512_loadu_ps(xt[1] + j),
               v2 = _mm512_loadu_ps(xt[2] + j), v3 = _mm512_loadu_ps(xt[3] + j);
        MK_T44_ROW(0, _mm512_loadu_ps(ar[0] + j));
        MK_T44_ROW(1, _mm512_loadu_ps(ar[1] + j));
        MK_T44_ROW(2, _mm512_loadu_ps(ar[2] + j));
        MK_T44_ROW(3, _mm512_loadu_ps(ar[3] + j));
    }
    if (j < k) {
        __mmask16 m = tail_mask(k - j);
        __m512 v0 = _mm512_maskz_loadu_ps(m, xt[0] + j), v1 = _mm512_maskz_loadu_ps(m, xt[1] + j),
               v2 = _mm512_maskz_loadu_ps(m, xt[2] + j), v3 = _mm512_maskz_loadu_ps(m, xt[3] + j);
        MK_T44_ROW(0, _mm512_maskz_loadu_ps(m, ar[0] + j));
        MK_T44_ROW(1, _mm512_maskz_loadu_ps(m, ar[1] + j));
        MK_T44_ROW(2, _mm512_maskz_loadu_ps(m, ar[2] + j));
        MK_T44_ROW(3, _mm512_maskz_loadu_ps(m, ar[3] + j));
    }
#define MK_RED(i, t) out[i][t] = _mm512_reduce_add_ps(c##i##t)
    MK_RED(0, 0), MK_RED(0, 1), MK_RED(0, 2), MK_RED(0, 3);
    MK_RED(1, 0), MK_RED(1, 1), MK_RED(1, 2), MK_RED(1, 3);
    MK_RED(2, 0), MK_RED(2, 1), MK_RED(2, 2), MK_RED(2, 3);
    MK_RED(3, 0), MK_RED(3, 1), MK_RED(3, 2), MK_RED(3, 3);
#undef MK_RED
}

MK_T static void KSFX(gemm_tile)(const float *a, int64_t lda, int nr, const float *x, int64_t ldx, int nt,
                                 int64_t k, float *y, int64_t ldy) {
    const float *ar[4];
    for (int i = 0; i < 4; i++) /* missing rows/tokens repeat the first; results dropped */
        ar[i] = a + (i < nr ? i : 0) * lda;
    for (int t = 0; t < nt; t += 4) {
        const float *xt[4];
        for (int u = 0; u < 4; u++)
            xt[u] = x + (t + u < nt ? t + u : t) * ldx;
        float out[4][4];
        tile_4x4(ar, xt, k, out);
        for (int u = 0; u < 4 && t + u < nt; u++)
            for (int i = 0; i < nr; i++)
                y[(t + u) * ldy + i] += out[i][u];
    }
}

/* ---- for the attention block (kern_attn_body.h) ------------------------ */

MK_T static inline vf v_sub(vf a, vf b) {
    return _mm512_sub_ps(a, b);
}
MK_T static inline vf v_max(vf a, vf b) {
    return _mm512_max_ps(a, b); /* b when either is NaN */
}
MK_T static inline vf v_min(vf a, vf b) {
    return _mm512_min_ps(a, b); /* b when either is NaN */
}
MK_T static inline vf v_round(vf x) { /* to nearest, ties to even */
    return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
MK_T static inline vf v_ldexp(vf y, vf n) { /* y * 2^n */
    return _mm512_scalef_ps(y, n);
}
MK_T static inline vf v_exp_fix(vf e, vf x) { /* 0 where x < -87.3 (NaN already propagates) */
    return _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_LT_OQ), _mm512_setzero_ps());
}
#define MK_AKJ 4 /* keys x 4 row vectors: 16 score accumulators */
#define MK_ADV 8 /* 128 floats of a value row per pass */

#include "kernels/kern_simd_body.h"

MK_T static inline vf ld_bits(const uint8_t *p, const mk_bits_ctl *k) {
    __m512i d =
        _mm512_shuffle_epi8(_mm512_broadcast_i32x4(ld128(p)), _mm512_loadu_si512((const void *)k->shuf));
    d = _mm512_srlv_epi32(d, _mm512_loadu_si512((const void *)k->shift));
    return _mm512_cvtepi32_ps(_mm512_and_si512(d, _mm512_set1_epi32((1 << k->bits) - 1)));
}

#endif /* MK_KERN_X86 */
