/* AVX2 + FMA + F16C kernel table (MK_ISA_AVX2).
 *
 * Every function carries a target attribute instead of the file being
 * built with -mavx2, so the library's baseline code stays x86-64 and this
 * table is only reached after matmul.c has asked the CPU. Map:
 *   helpers            horizontal sums, 8-wide loads of each element type
 *   dot / gemm_tile    float32 products (the tiled prefill path)
 *   dequant_*          column-range dequantizers per format (tiled path)
 *   matvec_*           fused single-token matvecs per format (decode)
 *
 * Fused affine matvecs use  sum_c (s q_c + b) x_c = s (q . x)_g + b xg_g
 * with the per-group sums xg of x computed once per call, so the inner loop
 * is one integer unpack, one convert and one FMA per 8 weights. FP8 bytes are
 * widened to half precision and converted by F16C (E4M3 -> f16 is a shift,
 * with the 2^8 exponent-bias difference folded into the block scale);
 * FP4 nibbles go through a 16-entry byte shuffle. */
#include "kernels/kern_impl.h"

#ifdef MK_KERN_X86
#include <immintrin.h>

#define MK_T __attribute__((target("avx2,fma,f16c")))

#define KSFX(name) name##_avx2
#define MK_KERN_TABLE mk_kern_avx2
#define MK_KERN_NAME "avx2"
#define VN 8
typedef __m256 vf;

/* ---- helpers ---------------------------------------------------------- */

MK_T static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

MK_T static inline vf v_zero(void) { return _mm256_setzero_ps(); }
MK_T static inline vf v_set1(float f) { return _mm256_set1_ps(f); }
MK_T static inline vf v_add(vf a, vf b) { return _mm256_add_ps(a, b); }
MK_T static inline vf v_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
MK_T static inline vf v_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
MK_T static inline vf v_ld(const float *p) { return _mm256_loadu_ps(p); }
MK_T static inline void v_st(float *p, vf v) { _mm256_storeu_ps(p, v); }
MK_T static inline float v_hsum(vf v) { return hsum8(v); }

MK_T static inline __m128i ld64(const uint8_t *p) {
    return _mm_loadl_epi64((const __m128i *)(const void *)p);
}

MK_T static inline vf ld_bf16(const uint8_t *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

MK_T static inline vf ld_f16(const uint8_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)p));
}

/* E4M3 -> f16 bits: magnitude << 7 lines the 4-bit exponent and 3-bit
 * mantissa up under f16's 5/10 fields (bias 15 vs 7, so value / 2^8,
 * subnormals included); sign << 8. NaN bytes come out as 480/256. */
MK_T static inline vf ld_e4m3(const uint8_t *p) {
    __m128i b = _mm_cvtepu8_epi16(ld64(p));
    __m128i h = _mm_or_si128(_mm_slli_epi16(_mm_and_si128(b, _mm_set1_epi16(0x7f)), 7),
                             _mm_slli_epi16(_mm_and_si128(b, _mm_set1_epi16(0x80)), 8));
    return _mm256_cvtph_ps(h);
}

/* E5M2 is the top byte of an f16. */
MK_T static inline vf ld_e5m2(const uint8_t *p) {
    return _mm256_cvtph_ps(_mm_slli_epi16(_mm_cvtepu8_epi16(ld64(p)), 8));
}

MK_T static inline vf ld_u8(const uint8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(ld64(p)));
}

/* 4 bytes = 8 nibbles: broadcast, shift lane i right by 4i, mask. */
MK_T static inline vf ld_u4(const uint8_t *p) {
    uint32_t u;
    memcpy(&u, p, 4);
    __m256i v = _mm256_srlv_epi32(_mm256_set1_epi32((int)u), _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28));
    return _mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32(15)));
}

/* 4 bytes = 8 E2M1 codes: nibbles to bytes in element order, then a byte
 * shuffle through the table of 2 * value (all integers). */
MK_T static inline vf ld_fp4(const uint8_t *p) {
    uint32_t u;
    memcpy(&u, p, 4);
    const __m128i m = _mm_set1_epi8(15);
    const __m128i lut = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
    __m128i v = _mm_cvtsi32_si128((int)u);
    __m128i idx = _mm_unpacklo_epi8(_mm_and_si128(v, m), _mm_and_si128(_mm_srli_epi16(v, 4), m));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_shuffle_epi8(lut, idx)));
}

/* ---- float32 products ------------------------------------------------- */

MK_T static float KSFX(dot)(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float acc = hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++)
        acc += a[i] * b[i];
    return acc;
}

MK_T static float KSFX(sumsq)(const float *x, int64_t n) {
    return KSFX(dot)(x, x, n);
}

/* 4 rows x 2 tokens of dot products, 8 accumulators. */
MK_T static void tile_4x2(const float *const ar[4], const float *x0, const float *x1, int64_t k,
                          float out[4][2]) {
    __m256 c[4][2];
    for (int i = 0; i < 4; i++)
        c[i][0] = c[i][1] = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 8 <= k; j += 8) {
        __m256 v0 = _mm256_loadu_ps(x0 + j), v1 = _mm256_loadu_ps(x1 + j);
        for (int i = 0; i < 4; i++) {
            __m256 a = _mm256_loadu_ps(ar[i] + j);
            c[i][0] = _mm256_fmadd_ps(a, v0, c[i][0]);
            c[i][1] = _mm256_fmadd_ps(a, v1, c[i][1]);
        }
    }
    for (int i = 0; i < 4; i++) {
        out[i][0] = hsum8(c[i][0]);
        out[i][1] = hsum8(c[i][1]);
        for (int64_t jj = j; jj < k; jj++) {
            out[i][0] += ar[i][jj] * x0[jj];
            out[i][1] += ar[i][jj] * x1[jj];
        }
    }
}

MK_T static void KSFX(gemm_tile)(const float *a, int64_t lda, int nr, const float *x, int64_t ldx,
                                int nt, int64_t k, float *y, int64_t ldy) {
    const float *ar[4];
    for (int i = 0; i < 4; i++) /* missing rows repeat row 0; results dropped */
        ar[i] = a + (i < nr ? i : 0) * lda;
    for (int t = 0; t < nt; t += 2) {
        const float *x0 = x + t * ldx, *x1 = t + 1 < nt ? x0 + ldx : x0;
        float out[4][2];
        tile_4x2(ar, x0, x1, k, out);
        for (int i = 0; i < nr; i++) {
            y[t * ldy + i] += out[i][0];
            if (t + 1 < nt)
                y[(t + 1) * ldy + i] += out[i][1];
        }
    }
}

#include "kernels/kern_simd_body.h"

#endif /* MK_KERN_X86 */
