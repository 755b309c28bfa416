/* The x86 tables of the int8-activation prefill GEMM (kern_gemm_q8.h): an
 * AVX2 quantizer and panel packer shared by both, AVX2 products (maddubs +
 * madd, 8 rows x up to 6 tokens per register tile) and AVX512-VNNI ones
 * (dpbusd, 16 rows x up to 8 tokens). Compiled with target attributes only;
 * the tables are used when mk_isa_active() says the CPU has them.
 *
 * The products hold the rule of kern_gemm_q8.h exactly: the integer dot of
 * a block is exact on every path (AVX2 4 bits: pair sums <= 2 * 15 * 127,
 * eight of them added in int16 stay <= 30480; AVX2 8 bits: codes taken as
 * q - 128 with the sign trick, pair sums <= 2 * 128 * 127, each step
 * widened to int32, and 128 * the block sum of q_x added back; VNNI: u8
 * codes times s8 x straight into int32), then the same multiply and fused
 * multiply-adds as the portable table, in the same order. */
#include <stdalign.h>
#include <string.h>

#include "kernels/kern_gemm_q8.h"
#include "kernels/kern_impl.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define MK_T __attribute__((target("avx2,fma")))
#define MK_TV __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vnni")))

/* ---- quantizer (bitwise mk_q8_quant, then the dot order) --------------- */

MK_T void mk_gq8_quant_avx2(const float *x, int64_t cols, int group, bool four, uint8_t *dst) {
    const int ab = mk_gq8_ab(group, four);
    mk_gq8x v = mk_gq8_at(dst, cols, ab);
    const int64_t nab = cols / ab;
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 fmax = _mm256_set1_ps(3.40282347e38f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256i evod = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10,
                                          12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    for (int64_t b = 0; b < nab; b++) {
        const float *xb = x + b * ab;
        /* the block's max |x| and whether every x is finite (|x| <= FLT_MAX
         * is false for NaN and infinities) */
        __m256 m = _mm256_setzero_ps(), ok = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
        for (int i = 0; i < ab; i += 8) {
            __m256 a = _mm256_and_ps(_mm256_loadu_ps(xb + i), absm);
            ok = _mm256_and_ps(ok, _mm256_cmp_ps(a, fmax, _CMP_LE_OQ));
            m = _mm256_max_ps(m, a);
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        const float amax = _mm_cvtss_f32(h);
        int8_t *qb = v.q + b * ab;
        if (_mm256_movemask_ps(ok) != 0xff || amax == 0.0f) {
            for (int i = 0; i < ab; i++)
                qb[i] = 0;
            v.d[b] = _mm256_movemask_ps(ok) != 0xff ? __builtin_nanf("") : 0.0f;
            v.qsf[b] = 0.0f;
            v.qs128[b] = 0;
            continue;
        }
        const __m256 id = _mm256_set1_ps(127.0f / amax);
        __m256i s = _mm256_setzero_si256();
        for (int i = 0; i < ab; i += 32) {
            const float *x32 = xb + i;
            /* a macro, not a const int: the rounding mode must be an integer
             * constant expression (clang refuses a variable at -O0) */
#define MK_RND (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
            __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x32), id), MK_RND));
            __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x32 + 8), id), MK_RND));
            __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x32 + 16), id), MK_RND));
            __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x32 + 24), id), MK_RND));
#undef MK_RND
            s = _mm256_add_epi32(s, _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
            __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
            p = _mm256_permutevar8x32_epi32(p, order); /* natural order */
            if (four)
                p = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(p, evod), 0xd8);
            _mm256_storeu_si256((__m256i *)(void *)(qb + i), p);
        }
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        const int32_t sum = _mm_cvtsi128_si32(s4);
        v.d[b] = amax / 127.0f;
        v.qsf[b] = (float)sum;
        v.qs128[b] = 128 * sum;
    }
    mk_q8_group_sums(v.d, v.qsf, cols / group, group / ab, v.xg);
}

/* ---- panel packing ---------------------------------------------------- */

static const uint8_t g_zero_row[MK_GQ8_KC];

/* dword transpose of the 8x8 block at rows p[0..8), byte offset k: dword j
 * of the 8 rows to out + j * 64 (the panel's row stride) */
MK_T static inline void tr8(const uint8_t *const p[8], int64_t k, uint8_t *out) {
#define LD(i) _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)(const void *)(p[i] + k)))
    __m256 r0 = LD(0), r1 = LD(1), r2 = LD(2), r3 = LD(3), r4 = LD(4), r5 = LD(5), r6 = LD(6), r7 = LD(7);
#undef LD
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
#define ST(j, v) _mm256_store_ps((float *)(void *)(out + (j)*64), v)
    ST(0, _mm256_permute2f128_ps(u0, u4, 0x20));
    ST(1, _mm256_permute2f128_ps(u1, u5, 0x20));
    ST(2, _mm256_permute2f128_ps(u2, u6, 0x20));
    ST(3, _mm256_permute2f128_ps(u3, u7, 0x20));
    ST(4, _mm256_permute2f128_ps(u0, u4, 0x31));
    ST(5, _mm256_permute2f128_ps(u1, u5, 0x31));
    ST(6, _mm256_permute2f128_ps(u2, u6, 0x31));
    ST(7, _mm256_permute2f128_ps(u3, u7, 0x31));
#undef ST
}

MK_T void mk_gq8_pack_avx2(const mk_wt *w, int64_t r0, int nr, int64_t c0, int64_t kc, uint8_t *pw) {
    alignas(64) uint8_t u[MK_GQ8_ROWS * MK_GQ8_KC]; /* 4 bits: rows unpacked to dot order */
    const size_t rb = mk_wt_row_bytes(w);
    const uint8_t *base = (const uint8_t *)w->data;
    const uint8_t *rp[MK_GQ8_ROWS];
    if (w->bits == 8) {
        for (int i = 0; i < MK_GQ8_ROWS; i++)
            rp[i] = i < nr ? base + (size_t)(r0 + i) * rb + c0 : g_zero_row;
    } else {
        const __m256i m4 = _mm256_set1_epi8(15);
        for (int i = 0; i < MK_GQ8_ROWS; i++) {
            if (i >= nr) {
                rp[i] = g_zero_row;
                continue;
            }
            const uint8_t *row = base + (size_t)(r0 + i) * rb + c0 / 2;
            uint8_t *o = u + i * MK_GQ8_KC;
            int64_t c = 0;
            for (; c + 64 <= kc; c += 64) { /* two blocks: [evens | odds] each */
                __m256i q = _mm256_loadu_si256((const __m256i *)(const void *)(row + c / 2));
                __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                _mm256_store_si256((__m256i *)(void *)(o + c), _mm256_permute2x128_si256(lo, hi, 0x20));
                _mm256_store_si256((__m256i *)(void *)(o + c + 32), _mm256_permute2x128_si256(lo, hi, 0x31));
            }
            if (c < kc) { /* a last lone block (group 32) */
                __m128i q = _mm_loadu_si128((const __m128i *)(const void *)(row + c / 2));
                __m128i m = _mm_set1_epi8(15);
                _mm_store_si128((__m128i *)(void *)(o + c), _mm_and_si128(q, m));
                _mm_store_si128((__m128i *)(void *)(o + c + 16), _mm_and_si128(_mm_srli_epi16(q, 4), m));
            }
            rp[i] = o;
        }
    }
    for (int64_t p = 0; p < kc; p += 32) {
        tr8(rp, p, pw + (p / 4) * 64);
        tr8(rp + 8, p, pw + (p / 4) * 64 + 32);
    }
}

/* ---- products ----------------------------------------------------------- */

static inline int32_t ld32(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* y[0 .. n) += f (n <= 8), the same float additions for whole or partial */
MK_T static inline void add8(float *y, int n, __m256 f) {
    if (n >= 8) {
        _mm256_storeu_ps(y, _mm256_add_ps(_mm256_loadu_ps(y), f));
        return;
    }
    alignas(32) float t[8];
    _mm256_store_ps(t, f);
    for (int i = 0; i < n; i++)
        y[i] += t[i];
}

/* The token pointers of a group of up to 8 (unused ones alias token 0). */
typedef struct toks {
    const int8_t *q[8];
    const float *d[8], *xg[8];
    const int32_t *qs[8];
} toks;

static inline toks toks_at(const uint8_t *xp, size_t xs, int64_t cols, int ab, int nt) {
    toks k;
    for (int T = 0; T < 8; T++) {
        mk_gq8x v = mk_gq8_at(xp + (size_t)(T < nt ? T : 0) * xs, cols, ab);
        k.q[T] = v.q;
        k.d[T] = v.d;
        k.xg[T] = v.xg;
        k.qs[T] = v.qs128;
    }
    return k;
}

/* 8 rows (half h of the panel) x NT tokens. BITS 4: int16 sums of maddubs
 * over each 32 columns (exact: <= 30480), then madd into the activation
 * block's int32 sums; BITS 8 (activation blocks of 32): sign trick per
 * step, int32. */
#define A2_STEP4(T)                                                                                          \
    if (NT > T)                                                                                              \
        a##T = _mm256_add_epi16(a##T, _mm256_maddubs_epi16(wv, _mm256_set1_epi32(ld32(k.q[T] + c0 + p + 4 * jj))));
#define A2_STEP8(T)                                                                                          \
    if (NT > T)                                                                                              \
        a##T = _mm256_add_epi32(                                                                             \
            a##T, _mm256_madd_epi16(                                                                         \
                      _mm256_maddubs_epi16(av, _mm256_sign_epi8(_mm256_set1_epi32(ld32(k.q[T] + c0 + p + 4 * jj)), sv)), \
                      ones));
#define A2_WIDEN(T)                                                                                          \
    if (NT > T)                                                                                              \
        i##T = BITS == 4 ? _mm256_add_epi32(i##T, _mm256_madd_epi16(a##T, ones)) : a##T;
#define A2_FOLD(T)                                                                                           \
    if (NT > T) {                                                                                            \
        __m256i i_ = BITS == 4 ? i##T : _mm256_add_epi32(i##T, _mm256_set1_epi32(k.qs[T][blk]));             \
        __m256 f_ = _mm256_mul_ps(_mm256_cvtepi32_ps(i_), _mm256_set1_ps(k.d[T][blk]));                      \
        f##T = _mm256_fmadd_ps(f_, s, f##T);                                                                 \
    }
#define A2_BIAS(T)                                                                                           \
    if (NT > T)                                                                                              \
        f##T = _mm256_fmadd_ps(bv, _mm256_set1_ps(k.xg[T][c0 / group + gi]), f##T);
#define A2_OUT(T)                                                                                            \
    if (NT > T)                                                                                              \
        add8(y + (T)*ldy + 8 * h, nr - 8 * h, f##T);

__attribute__((always_inline)) MK_T static inline void avx2_tile(const uint8_t *pw, const float *ps,
                                                                 const float *pb, int64_t c0, int64_t kc,
                                                                 int group, int ab, const toks k, float *y,
                                                                 int64_t ldy, int nr, int h, const int NT,
                                                                 const int BITS) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 f0 = _mm256_setzero_ps(), f1 = f0, f2 = f0, f3 = f0, f4 = f0, f5 = f0;
    const uint8_t *wp = pw + 32 * h;
    for (int64_t gi = 0; gi < kc / group; gi++) {
        const __m256 s = _mm256_load_ps(ps + gi * MK_GQ8_ROWS + 8 * h);
        for (int64_t pb0 = gi * group; pb0 < (gi + 1) * group; pb0 += ab) {
            const int64_t blk = (c0 + pb0) / ab;
            __m256i i0 = _mm256_setzero_si256(), i1 = i0, i2 = i0, i3 = i0, i4 = i0, i5 = i0;
            for (int64_t p = pb0; p < pb0 + ab; p += 32) {
                __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
                for (int jj = 0; jj < 8; jj++) {
                    const __m256i wv = _mm256_load_si256((const __m256i *)(const void *)(wp + (p / 4 + jj) * 64));
                    if (BITS == 4) {
                        A2_STEP4(0) A2_STEP4(1) A2_STEP4(2) A2_STEP4(3) A2_STEP4(4) A2_STEP4(5)
                    } else {
                        const __m256i sv = _mm256_xor_si256(wv, _mm256_set1_epi8((char)0x80)); /* q - 128 */
                        const __m256i av = _mm256_abs_epi8(sv);
                        A2_STEP8(0) A2_STEP8(1) A2_STEP8(2) A2_STEP8(3) A2_STEP8(4) A2_STEP8(5)
                    }
                }
                A2_WIDEN(0) A2_WIDEN(1) A2_WIDEN(2) A2_WIDEN(3) A2_WIDEN(4) A2_WIDEN(5)
            }
            A2_FOLD(0) A2_FOLD(1) A2_FOLD(2) A2_FOLD(3) A2_FOLD(4) A2_FOLD(5)
        }
        const __m256 bv = _mm256_load_ps(pb + gi * MK_GQ8_ROWS + 8 * h);
        A2_BIAS(0) A2_BIAS(1) A2_BIAS(2) A2_BIAS(3) A2_BIAS(4) A2_BIAS(5)
    }
    A2_OUT(0) A2_OUT(1) A2_OUT(2) A2_OUT(3) A2_OUT(4) A2_OUT(5)
    (void)ones;
}

/* Token groups of at most M: M while 2M or more remain, then the rest in
 * two near-equal groups (small groups leave the dot units idle). */
static inline int tok_group(int64_t rem, int M) {
    return rem >= 2 * M ? M : rem > M ? (int)(rem + 1) / 2 : (int)rem;
}

/* kern4 / kern8 entries over an 8-row tile function TILE(..., h, NT, BITS):
 * token groups of up to 6, both halves of the panel. */
#define TILE8_KERN(ATTR, NAME, TILE, BITS)                                                                   \
    ATTR static void NAME(const uint8_t *pw, const float *ps, const float *pb, int64_t c0, int64_t kc,       \
                          int group, const uint8_t *xp, size_t xs, int64_t cols, int64_t nt, float *y,      \
                          int64_t ldy, int nr) {                                                             \
        const int ab = BITS == 4 ? mk_gq8_ab(group, true) : 32;                                              \
        for (int64_t t = 0; t < nt;) {                                                                       \
            int g = tok_group(nt - t, 6);                                                                    \
            const toks k = toks_at(xp + (size_t)t * xs, xs, cols, ab, g);                                    \
            float *yt = y + t * ldy;                                                                         \
            for (int h = 0; h < 2 && 8 * h < nr; h++) {                                                      \
                switch (g) {                                                                                 \
                case 6: TILE(pw, ps, pb, c0, kc, group, ab, k, yt, ldy, nr, h, 6, BITS); break;               \
                case 5: TILE(pw, ps, pb, c0, kc, group, ab, k, yt, ldy, nr, h, 5, BITS); break;               \
                case 4: TILE(pw, ps, pb, c0, kc, group, ab, k, yt, ldy, nr, h, 4, BITS); break;               \
                case 3: TILE(pw, ps, pb, c0, kc, group, ab, k, yt, ldy, nr, h, 3, BITS); break;               \
                case 2: TILE(pw, ps, pb, c0, kc, group, ab, k, yt, ldy, nr, h, 2, BITS); break;               \
                default: TILE(pw, ps, pb, c0, kc, group, ab, k, yt, ldy, nr, h, 1, BITS); break;              \
                }                                                                                            \
            }                                                                                                \
            t += g;                                                                                          \
        }                                                                                                    \
    }
TILE8_KERN(MK_T, kern4_avx2, avx2_tile, 4)
TILE8_KERN(MK_T, kern8_avx2, avx2_tile, 8)

const mk_gq8_i mk_gq8_avx2 = {"avx2", mk_gq8_quant_avx2, mk_gq8_pack_avx2, mk_gq8_sb_ref, kern4_avx2, kern8_avx2};

/* ---- AVX-VNNI (VEX): 8 rows x up to 6 tokens, u8 codes x s8 x -> int32 ---- */

/* The AVX2 tile's shape with the 256-bit dpbusd of AVX-VNNI CPUs without
 * AVX-512 (Alder Lake and later cores): one instruction per 4 positions,
 * 8 rows and token where AVX2 needs maddubs and an add (4 bits) or the
 * sign trick, maddubs, madd and an add (8 bits); the codes go in as u8, so
 * 8 bits needs no correction. The same exact block dots, then the rule's
 * fold. */
#define MK_TA __attribute__((target("avxvnni,avx2,fma")))
#define AV_STEP(T)                                                                                           \
    if (NT > T)                                                                                              \
        i##T = _mm256_dpbusd_avx_epi32(i##T, wv, _mm256_set1_epi32(ld32(k.q[T] + c0 + p + 4 * jj)));
#define AV_FOLD(T)                                                                                           \
    if (NT > T) {                                                                                            \
        __m256 f_ = _mm256_mul_ps(_mm256_cvtepi32_ps(i##T), _mm256_set1_ps(k.d[T][blk]));                   \
        f##T = _mm256_fmadd_ps(f_, s, f##T);                                                                 \
    }

__attribute__((always_inline)) MK_TA static inline void avxvnni_tile(const uint8_t *pw, const float *ps,
                                                                     const float *pb, int64_t c0, int64_t kc,
                                                                     int group, int ab, const toks k, float *y,
                                                                     int64_t ldy, int nr, int h, const int NT,
                                                                     const int BITS) {
    (void)BITS; /* 4 and 8 bits alike: u8 codes into dpbusd */
    __m256 f0 = _mm256_setzero_ps(), f1 = f0, f2 = f0, f3 = f0, f4 = f0, f5 = f0;
    const uint8_t *wp = pw + 32 * h;
    for (int64_t gi = 0; gi < kc / group; gi++) {
        const __m256 s = _mm256_load_ps(ps + gi * MK_GQ8_ROWS + 8 * h);
        for (int64_t pb0 = gi * group; pb0 < (gi + 1) * group; pb0 += ab) {
            const int64_t blk = (c0 + pb0) / ab;
            __m256i i0 = _mm256_setzero_si256(), i1 = i0, i2 = i0, i3 = i0, i4 = i0, i5 = i0;
            for (int64_t p = pb0; p < pb0 + ab; p += 32)
                for (int jj = 0; jj < 8; jj++) {
                    const __m256i wv = _mm256_load_si256((const __m256i *)(const void *)(wp + (p / 4 + jj) * 64));
                    AV_STEP(0) AV_STEP(1) AV_STEP(2) AV_STEP(3) AV_STEP(4) AV_STEP(5)
                }
            AV_FOLD(0) AV_FOLD(1) AV_FOLD(2) AV_FOLD(3) AV_FOLD(4) AV_FOLD(5)
        }
        const __m256 bv = _mm256_load_ps(pb + gi * MK_GQ8_ROWS + 8 * h);
        A2_BIAS(0) A2_BIAS(1) A2_BIAS(2) A2_BIAS(3) A2_BIAS(4) A2_BIAS(5)
    }
    A2_OUT(0) A2_OUT(1) A2_OUT(2) A2_OUT(3) A2_OUT(4) A2_OUT(5)
}

TILE8_KERN(MK_TA, kern4_avxvnni, avxvnni_tile, 4)
TILE8_KERN(MK_TA, kern8_avxvnni, avxvnni_tile, 8)

const mk_gq8_i mk_gq8_avxvnni = {"avxvnni", mk_gq8_quant_avx2, mk_gq8_pack_avx2, mk_gq8_sb_ref, kern4_avxvnni,
                                 kern8_avxvnni};

/* ---- AVX512-VNNI: 16 rows x up to 8 tokens, u8 codes x s8 x -> int32 ----- */

#define V_STEP(T)                                                                                            \
    if (NT > T)                                                                                              \
        a##T = _mm512_dpbusd_epi32(a##T, wv, _mm512_set1_epi32(ld32(k.q[T] + c0 + p + 4 * jj)));
#define V_FOLD(T)                                                                                            \
    if (NT > T) {                                                                                            \
        __m512 f_ = _mm512_mul_ps(_mm512_cvtepi32_ps(a##T), _mm512_set1_ps(k.d[T][blk]));                   \
        f##T = _mm512_fmadd_ps(f_, s, f##T);                                                                 \
    }
#define V_BIAS(T)                                                                                            \
    if (NT > T)                                                                                              \
        f##T = _mm512_fmadd_ps(bv, _mm512_set1_ps(k.xg[T][c0 / group + gi]), f##T);
#define V_OUT(T)                                                                                             \
    if (NT > T) {                                                                                            \
        float *y_ = y + (T)*ldy;                                                                             \
        _mm512_mask_storeu_ps(y_, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, y_), f##T));                     \
    }

__attribute__((always_inline)) MK_TV static inline void vnni_tile(const uint8_t *pw, const float *ps,
                                                                  const float *pb, int64_t c0, int64_t kc,
                                                                  int group, int ab, const toks k, float *y,
                                                                  int64_t ldy, int nr, const int NT) {
    __m512 f0 = _mm512_setzero_ps(), f1 = f0, f2 = f0, f3 = f0, f4 = f0, f5 = f0, f6 = f0, f7 = f0;
    for (int64_t gi = 0; gi < kc / group; gi++) {
        const __m512 s = _mm512_load_ps(ps + gi * MK_GQ8_ROWS);
        for (int64_t pb0 = gi * group; pb0 < (gi + 1) * group; pb0 += ab) {
            const int64_t blk = (c0 + pb0) / ab;
            __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
            for (int64_t p = pb0; p < pb0 + ab; p += 32)
                for (int jj = 0; jj < 8; jj++) {
                    const __m512i wv = _mm512_load_si512((const void *)(pw + (p / 4 + jj) * 64));
                    V_STEP(0) V_STEP(1) V_STEP(2) V_STEP(3) V_STEP(4) V_STEP(5) V_STEP(6) V_STEP(7)
                }
            V_FOLD(0) V_FOLD(1) V_FOLD(2) V_FOLD(3) V_FOLD(4) V_FOLD(5) V_FOLD(6) V_FOLD(7)
        }
        const __m512 bv = _mm512_load_ps(pb + gi * MK_GQ8_ROWS);
        V_BIAS(0) V_BIAS(1) V_BIAS(2) V_BIAS(3) V_BIAS(4) V_BIAS(5) V_BIAS(6) V_BIAS(7)
    }
    const __mmask16 m = (__mmask16)((1u << nr) - 1u);
    V_OUT(0) V_OUT(1) V_OUT(2) V_OUT(3) V_OUT(4) V_OUT(5) V_OUT(6) V_OUT(7)
}

/* 4 and 8 bits alike (u8 codes to dpbusd) but for the activation block. */
MK_TV static void kern_vnni(const uint8_t *pw, const float *ps, const float *pb, int64_t c0, int64_t kc,
                            int group, int ab, const uint8_t *xp, size_t xs, int64_t cols, int64_t nt, float *y,
                            int64_t ldy, int nr) {
    for (int64_t t = 0; t < nt;) {
        int g = tok_group(nt - t, 8);
        const toks k = toks_at(xp + (size_t)t * xs, xs, cols, ab, g);
        float *yt = y + t * ldy;
        switch (g) {
        case 8: vnni_tile(pw, ps, pb, c0, kc, group, ab, k, yt, ldy, nr, 8); break;
        case 7: vnni_tile(pw, ps, pb, c0, kc, group, ab, k, yt, ldy, nr, 7); break;
        case 6: vnni_tile(pw, ps, pb, c0, kc, group, ab, k, yt, ldy, nr, 6); break;
        case 5: vnni_tile(pw, ps, pb, c0, kc, group, ab, k, yt, ldy, nr, 5); break;
        case 4: vnni_tile(pw, ps, pb, c0, kc, group, ab, k, yt, ldy, nr, 4); break;
        case 3: vnni_tile(pw, ps, pb, c0, kc, group, ab, k, yt, ldy, nr, 3); break;
        case 2: vnni_tile(pw, ps, pb, c0, kc, group, ab, k, yt, ldy, nr, 2); break;
        default: vnni_tile(pw, ps, pb, c0, kc, group, ab, k, yt, ldy, nr, 1); break;
        }
        t += g;
    }
}

MK_GQ8_KERN48(MK_TV, vnni)

const mk_gq8_i mk_gq8_vnni = {"avx512vnni", mk_gq8_quant_avx2, mk_gq8_pack_avx512, mk_gq8_sb_avx512,
                              kern4_vnni, kern8_vnni};

#endif
