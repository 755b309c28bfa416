/* AVX2 + FMA + F16C kernel table (MK_ISA_AVX2).
 *
 * Every function carries a target attribute instead of the file being
 * built with -mavx2, so the library's baseline code stays x86-64 and this
 * table is only reached after matmul.c has asked the CPU. This file holds
 * the 8-wide vector primitives and element loaders, dot and the 4x2
 * gemm_tile of the prefill path; the per-format matvecs and dequantizers
 * are written once in kern_simd_body.h, included at the end.
 *
 * Tricks: affine matvecs use  sum_c (s q_c + b) x_c = s (q . x)_g + b xg_g
 * with the group sums xg of x computed once per call; 4-bit codes are read
 * as low-nibble and high-nibble vectors against a copy of x reordered to
 * match (no interleaving shuffles); other widths use one byte shuffle, a
 * per-lane shift and a mask. FP8 bytes become half precision with integer
 * shifts and convert through F16C (E4M3's 2^8 exponent-bias difference is
 * folded into the scale); E2M1 values come from an 8-entry permute plus the
 * sign bit, or a 16-entry byte shuffle. */
#include "kernels/kern_impl.h"

#ifdef MK_KERN_X86
#include <immintrin.h>
#include <math.h>

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

MK_T static inline vf v_zero(void) {
    return _mm256_setzero_ps();
}
MK_T static inline vf v_set1(float f) {
    return _mm256_set1_ps(f);
}
MK_T static inline vf v_add(vf a, vf b) {
    return _mm256_add_ps(a, b);
}
MK_T static inline vf v_mul(vf a, vf b) {
    return _mm256_mul_ps(a, b);
}
MK_T static inline vf v_fma(vf a, vf b, vf c) {
    return _mm256_fmadd_ps(a, b, c);
}
MK_T static inline vf v_ld(const float *p) {
    return _mm256_loadu_ps(p);
}
MK_T static inline void v_st(float *p, vf v) {
    _mm256_storeu_ps(p, v);
}
MK_T static inline float v_hsum(vf v) {
    return hsum8(v);
}

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

/* E4M3 -> f16 bits: with the byte in the high half of a 16-bit lane, an
 * arithmetic shift right by one lines the 4-bit exponent and 3-bit mantissa
 * up under f16's 5/10 fields (bias 15 vs 7, so value / 2^8, subnormals
 * included) and leaves the sign in bit 15 and a copy in bit 14, cleared by
 * the mask. The NaN bytes (0x7f/0xff) would come out as 480/256: their
 * lanes get f16's exponent all ones and a mantissa bit, NaN like the LUT's. */
MK_T static inline vf ld_e4m3(const uint8_t *p) {
    __m128i b = _mm_unpacklo_epi8(_mm_setzero_si128(), ld64(p));
    __m128i h = _mm_and_si128(_mm_srai_epi16(b, 1), _mm_set1_epi16((short)0xbfff));
    __m128i nan = _mm_cmpeq_epi16(_mm_and_si128(b, _mm_set1_epi16(0x7f00)), _mm_set1_epi16(0x7f00));
    h = _mm_or_si128(h, _mm_and_si128(nan, _mm_set1_epi16(0x7e00)));
    return _mm256_cvtph_ps(h);
}

/* E5M2 is the top byte of an f16. */
MK_T static inline vf ld_e5m2(const uint8_t *p) {
    return _mm256_cvtph_ps(_mm_unpacklo_epi8(_mm_setzero_si128(), ld64(p)));
}

MK_T static inline vf ld_u8(const uint8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(ld64(p)));
}

/* 8 bytes -> 16 nibbles in element order (low nibble first) as bytes. */
MK_T static inline __m128i nibbles16(const uint8_t *p) {
    const __m128i m = _mm_set1_epi8(15);
    __m128i v = ld64(p);
    return _mm_unpacklo_epi8(_mm_and_si128(v, m), _mm_and_si128(_mm_srli_epi16(v, 4), m));
}

MK_T static inline void ld_u4x2(const uint8_t *p, vf *lo, vf *hi) {
    __m128i b = nibbles16(p);
    *lo = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
    *hi = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(b, 8)));
}

/* VN elements of a bits-wide stream (kern_simd_body.h, "any width"). */
#define MK_LDB 8
struct mk_bits_ctl;
MK_T static inline vf ld_bits(const uint8_t *p, const struct mk_bits_ctl *k);

/* 8 bytes -> 8 dword lanes holding one byte each (the rest zero). */
MK_T static inline __m256i spread8(const uint8_t *p) {
    uint64_t u;
    memcpy(&u, p, 8);
    const __m256i ctl = _mm256_setr_epi8(0, -1, -1, -1, 1, -1, -1, -1, 2, -1, -1, -1, 3, -1, -1, -1, 4, -1,
                                         -1, -1, 5, -1, -1, -1, 6, -1, -1, -1, 7, -1, -1, -1);
    return _mm256_shuffle_epi8(_mm256_set1_epi64x((long long)u), ctl);
}

/* 8 bytes: low nibbles (even elements) and high nibbles (odd elements). */
MK_T static inline void ld_q4p(const uint8_t *p, vf *lo, vf *hi) {
    __m256i d = spread8(p);
    *lo = _mm256_cvtepi32_ps(_mm256_and_si256(d, _mm256_set1_epi32(15)));
    *hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(d, 4));
}

/* 2 * E2M1 value of the nibble in the low 4 bits of each lane: magnitude
 * from an 8-entry permute, sign from bit 3. */
MK_T static inline vf fp4_lookup(__m256i d) {
    const __m256 lut = _mm256_setr_ps(0, 1, 2, 3, 4, 6, 8, 12);
    __m256i sign = _mm256_and_si256(_mm256_slli_epi32(d, 28), _mm256_set1_epi32(INT32_MIN));
    return _mm256_xor_ps(_mm256_permutevar8x32_ps(lut, d), _mm256_castsi256_ps(sign));
}

MK_T static inline void ld_f4p(const uint8_t *p, vf *lo, vf *hi) {
    __m256i d = spread8(p);
    *lo = fp4_lookup(d);
    *hi = fp4_lookup(_mm256_srli_epi32(d, 4));
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

/* 4 rows x 2 tokens of dot products in 8 named accumulators (an array
 * would be kept in memory by the compiler). */
#define MK_T42_ROW(i)                                                                                        \
    do {                                                                                                     \
        __m256 a_ = _mm256_loadu_ps(ar[i] + j);                                                              \
        c##i##0 = _mm256_fmadd_ps(a_, v0, c##i##0);                                                          \
        c##i##1 = _mm256_fmadd_ps(a_, v1, c##i##1);                                                          \
    } while (0)

MK_T static void tile_4x2(const float *const ar[4], const float *x0, const float *x1, int64_t k,
                          float out[4][2]) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
           c31 = c00;
    int64_t j = 0;
    for (; j + 8 <= k; j += 8) {
        __m256 v0 = _mm256_loadu_ps(x0 + j), v1 = _mm256_loadu_ps(x1 + j);
        MK_T42_ROW(0);
        MK_T42_ROW(1);
        MK_T42_ROW(2);
        MK_T42_ROW(3);
    }
    out[0][0] = hsum8(c00), out[0][1] = hsum8(c01), out[1][0] = hsum8(c10);
    out[1][1] = hsum8(c11), out[2][0] = hsum8(c20), out[2][1] = hsum8(c21);
    out[3][0] = hsum8(c30), out[3][1] = hsum8(c31);
    for (int i = 0; i < 4; i++)
        for (int64_t jj = j; jj < k; jj++) {
            out[i][0] += ar[i][jj] * x0[jj];
            out[i][1] += ar[i][jj] * x1[jj];
        }
}

MK_T static void KSFX(gemm_tile)(const float *a, int64_t lda, int nr, const float *x, int64_t ldx, int nt,
                                 int64_t k, float *y, int64_t ldy) {
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

#define MK_KERN_PANEL 1 /* prefill on kern_panel.c's panels */
/* ---- for the attention block (kern_attn_body.h) ------------------------ */

MK_T static inline vf v_sub(vf a, vf b) {
    return _mm256_sub_ps(a, b);
}
MK_T static inline vf v_max(vf a, vf b) {
    return _mm256_max_ps(a, b); /* b when either is NaN */
}
MK_T static inline vf v_min(vf a, vf b) {
    return _mm256_min_ps(a, b); /* b when either is NaN */
}
MK_T static inline vf v_round(vf x) { /* to nearest, ties to even */
    return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
MK_T static inline vf v_ldexp(vf y, vf n) { /* y * 2^n for n in [-126, 127]: n in the exponent field */
    return _mm256_mul_ps(
        y, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23)));
}
MK_T static inline vf v_exp_fix(vf e, vf x) { /* 0 where x < -87.3, x where x is NaN */
    e = _mm256_blendv_ps(e, _mm256_setzero_ps(), _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_LT_OQ));
    return _mm256_blendv_ps(e, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}
#define MK_AKJ 2 /* keys x 4 row vectors: 8 score accumulators of 16 registers */
#define MK_ADV 4 /* 32 floats of a value row per pass */

#include "kernels/kern_simd_body.h"

MK_T static inline vf ld_bits(const uint8_t *p, const mk_bits_ctl *k) {
    uint64_t u;
    memcpy(&u, p, 8);
    __m256i d = _mm256_shuffle_epi8(_mm256_set1_epi64x((long long)u),
                                    _mm256_loadu_si256((const __m256i *)(const void *)k->shuf));
    d = _mm256_srlv_epi32(d, _mm256_loadu_si256((const __m256i *)(const void *)k->shift));
    return _mm256_cvtepi32_ps(_mm256_and_si256(d, _mm256_set1_epi32((1 << k->bits) - 1)));
}

/* ---- MLX affine on int8 activations (kern_impl.h, "int8 activations") --
 * The quantizer computes the scalar rule of q8.c with the same float
 * operations (round to nearest even = nearbyintf in the default mode), so
 * q and d are bitwise those of the portable path.
 *
 * 4 bits: one 32-byte load is 64 codes = 2 activation blocks; its low
 * nibbles are the even elements (lane 0: block 0, lane 1: block 1) and its
 * high nibbles the odd ones, multiplied by maddubs against x stored in that
 * order (q4: per 64 elements [even b0 | even b1 | odd b0 | odd b1]), so
 * the int32 lanes 0-3 hold block 0's dot and 4-7 block 1's, scaled by d8
 * (each block's d in its lanes) and the group scale.
 * 8 bits: codes are 0..255 and maddubs multiplies unsigned by signed bytes
 * with int16 pair sums that 255 * 127 * 2 would overflow, so codes become
 * q - 128 (an xor) and the sign trick (|q'| times x with q's sign) keeps
 * every pair within 128 * 127 * 2; the bias absorbs the shift:
 * s q + b = s (q - 128) + (b + 128 s). */

MK_T static inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

MK_T static inline int32_t hsum8i(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

MK_T static void q8_quant_avx2(const float *x, int64_t n, int8_t *q, float *d, float *qs) {
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 big = _mm256_set1_ps(3.40282347e38f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t b = 0; b < n / MK_Q8_BLOCK; b++) {
        const float *xb = x + b * MK_Q8_BLOCK;
        __m256 v[4], m = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
        for (int i = 0; i < 4; i++) {
            v[i] = _mm256_loadu_ps(xb + 8 * i);
            __m256 a = _mm256_and_ps(v[i], absm);
            bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, big, _CMP_NLE_UQ)); /* NaN or infinity */
            m = _mm256_max_ps(m, a);
        }
        float amax = hmax8(m);
        if (_mm256_movemask_ps(bad) || amax == 0.0f) {
            memset(q + b * MK_Q8_BLOCK, 0, MK_Q8_BLOCK);
            d[b] = _mm256_movemask_ps(bad) ? NAN : 0.0f;
            qs[b] = 0.0f;
            continue;
        }
        const __m256 id = _mm256_set1_ps(127.0f / amax);
        __m256i iv[4];
        for (int i = 0; i < 4; i++)
            iv[i] = _mm256_cvtps_epi32(
                _mm256_round_ps(_mm256_mul_ps(v[i], id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        int32_t sum =
            hsum8i(_mm256_add_epi32(_mm256_add_epi32(iv[0], iv[1]), _mm256_add_epi32(iv[2], iv[3])));
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(iv[0], iv[1]), _mm256_packs_epi32(iv[2], iv[3]));
        _mm256_storeu_si256((__m256i *)(void *)(q + b * MK_Q8_BLOCK), _mm256_permutevar8x32_epi32(p, order));
        d[b] = amax / 127.0f;
        qs[b] = (float)sum;
    }
}

/* 32 bytes of q -> [its 16 even elements | its 16 odd ones] */
MK_T static inline __m256i evod32(const int8_t *q) {
    const __m256i ctl = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8,
                                         10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    __m256i v = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(const void *)q), ctl);
    return _mm256_permute4x64_epi64(v, 0xd8);
}

MK_T bool mk_q8_prep_affine_avx2(const mk_wt *w, const float *x, float *aux, size_t cap) {
    if (w->bits != 4 && w->bits != 8)
        return false;
    const int64_t cols = w->cols;
    if (mk_q8x_floats(cols, w->group) > cap)
        return false;
    mk_q8x v = mk_q8x_at(aux, cols, w->group);
    q8_quant_avx2(x, cols, v.q, v.d, v.d8); /* d8: scratch for the block sums until below */
    mk_q8_group_sums(v.d, v.d8, cols / w->group, w->group / MK_Q8_BLOCK, v.xg);
    if (w->bits == 4) {
        int64_t c = 0;
        for (; c + 64 <= cols; c += 64) {
            __m256i a = evod32(v.q + c), b = evod32(v.q + c + 32);
            _mm256_storeu_si256((__m256i *)(void *)(v.q4 + c), _mm256_permute2x128_si256(a, b, 0x20));
            _mm256_storeu_si256((__m256i *)(void *)(v.q4 + c + 32), _mm256_permute2x128_si256(a, b, 0x31));
        }
        if (c < cols) /* a last lone block (group 32): [even | odd] */
            _mm256_storeu_si256((__m256i *)(void *)(v.q4 + c), evod32(v.q + c));
        for (c = 0; c < cols; c += 64)                          /* after the sums: d8 was their scratch */
            for (int i = 0; i < 8 && c / 8 + i < cols / 8; i++) /* a lone block: not used */
                v.d8[c / 8 + i] = v.d[c / MK_Q8_BLOCK + i / 4];
    }
    return true;
}

/* The matvecs: maddubs (u8 x s8 -> int16 pair sums), madd with ones to
 * int32. 4 bits: pair sums stay below 2 * 15 * 127 and two are added before
 * madd. 8 bits: codes as q - 128 and the sign trick, pairs below 32767. */
MK_T static inline __m256i q8_dot4_avx2(__m256i lo, __m256i a0, __m256i hi, __m256i a1) {
    __m256i p16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, a0), _mm256_maddubs_epi16(hi, a1));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}
MK_T static inline __m256i q8_dot8_avx2(__m256i q, __m256i a) {
    __m256i s = _mm256_xor_si256(q, _mm256_set1_epi8((char)0x80)); /* q - 128 as s8 */
    __m256i p16 = _mm256_maddubs_epi16(_mm256_abs_epi8(s), _mm256_sign_epi8(a, s));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}
#define Q8SFX(name) name##_q8avx2
#define MK_Q8_MV_NAME mk_q8_mv_affine_avx2
#define MK_Q8_DOT4 q8_dot4_avx2
#define MK_Q8_DOT8 q8_dot8_avx2
#define MK_Q8_SHIFT8 true
#include "kernels/kern_q8_body.h"

#endif /* MK_KERN_X86 */
