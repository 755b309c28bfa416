/* The AVX-512 panel packer and scale loader of the int8-activation prefill
 * GEMM (kern_gemm_q8.h), used by the AVX512-VNNI and AMX tables. Compiled
 * with target attributes only.
 *
 * Why: a panel is packed once per (weight, 16-row block, token block), and
 * a routed expert's block holds few tokens (a 256-expert top-8 layer gives
 * 16 per expert for 512 prompt tokens), so the packing is paid per 16
 * tokens: with AMX doing the products it was 20% of a hybrid prefill and
 * the scale loads another 6%. The AVX2 packer unpacks each row's nibbles
 * to bytes and then transposes 8 x 8 dwords (about 8 shuffles per 64-byte
 * panel line). Here the still-packed bytes are transposed, 16 rows x 16
 * dwords at once in 64 shuffles, and a transposed dword of packed nibbles
 * is two panel lines at once: its low nibbles are the 4 positions of a
 * block's even columns and its high nibbles the 4 of the odd ones (the dot
 * order), so the nibbles are split after the transpose with an and and a
 * shift: about 2 shuffles per line. Scales and biases (bf16, f16 or f32)
 * are converted in vectors and go through the same transpose instead of
 * one scalar store per group and row.
 *
 * Both write exactly the bytes and floats of the portable table (pack_ref,
 * mk_gq8_sb_ref): the panel is a permutation of the codes, and the
 * conversions are exact (bf16 and f16 to f32 are widenings; vcvtph2ps
 * quiets a signalling NaN, which mk_f16_to_f32 keeps, and a NaN scale
 * gives NaN outputs either way). test_gemm_q8 holds every table to it. */
#include <stdalign.h>
#include <string.h>

#include "kernels/kern_gemm_q8.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define MK_TP __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl")))

/* Transpose 16 x 16 dwords in place: afterwards r[j] holds dword j of the
 * 16 inputs, input i in dword i. 4 stages of 16 shuffles. */
__attribute__((always_inline)) MK_TP static inline void tr16(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) { /* per 128-bit lane: pairs of rows interleaved */
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int g = 0; g < 16; g += 4) { /* per lane: element e of 4 rows */
        r[g] = _mm512_unpacklo_epi64(t[g], t[g + 2]);
        r[g + 1] = _mm512_unpackhi_epi64(t[g], t[g + 2]);
        r[g + 2] = _mm512_unpacklo_epi64(t[g + 1], t[g + 3]);
        r[g + 3] = _mm512_unpackhi_epi64(t[g + 1], t[g + 3]);
    }
    /* r[4g + e], lane L: rows 4g .. 4g+3 at dword 4L + e; a 4 x 4 transpose
     * of lanes over g gives dword 4L + e of all 16 rows */
    for (int e = 0; e < 4; e++) {
        __m512i v0 = _mm512_shuffle_i32x4(r[e], r[4 + e], 0x44);
        __m512i v1 = _mm512_shuffle_i32x4(r[e], r[4 + e], 0xee);
        __m512i v2 = _mm512_shuffle_i32x4(r[8 + e], r[12 + e], 0x44);
        __m512i v3 = _mm512_shuffle_i32x4(r[8 + e], r[12 + e], 0xee);
        t[e] = _mm512_shuffle_i32x4(v0, v2, 0x88);
        t[4 + e] = _mm512_shuffle_i32x4(v0, v2, 0xdd);
        t[8 + e] = _mm512_shuffle_i32x4(v1, v3, 0x88);
        t[12 + e] = _mm512_shuffle_i32x4(v1, v3, 0xdd);
    }
    for (int i = 0; i < 16; i++)
        r[i] = t[i];
}

static inline __mmask16 dw_mask(int64_t n) {
    return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u);
}

MK_TP void mk_gq8_pack_avx512(const mk_wt *w, int64_t r0, int nr, int64_t c0, int64_t kc, uint8_t *pw) {
    const size_t rb = mk_wt_row_bytes(w);
    const uint8_t *base = (const uint8_t *)w->data + (size_t)r0 * rb;
    __m512i r[16];
    if (w->bits == 8) {
        /* 64 columns per step: dword d of row i = positions 4d .. 4d+3 */
        for (int64_t c = 0; c < kc; c += 64) {
            const int64_t nd = (kc - c) / 4;
            const __mmask16 m = dw_mask(nd);
            for (int i = 0; i < 16; i++)
                r[i] = i < nr ? _mm512_maskz_loadu_epi32(m, base + (size_t)i * rb + c0 + c)
                              : _mm512_setzero_si512();
            tr16(r);
            uint8_t *o = pw + c / 4 * 64;
            for (int d = 0; d < 16 && d < nd; d++)
                _mm512_store_si512((void *)(o + d * 64), r[d]);
        }
        return;
    }
    /* 4 bits, 128 columns (4 blocks of 16 bytes) per step: dword 4b + u of a
     * row holds block b's bytes 4u .. 4u+3, whose low nibbles are dot
     * positions 4u .. 4u+3 (even columns) and high ones 16 + 4u .. (odd) */
    const __m512i m4 = _mm512_set1_epi8(15);
    for (int64_t c = 0; c < kc; c += 128) {
        const int64_t nd = (kc - c) / 8; /* 4 dwords per 32-column block */
        const __mmask16 m = dw_mask(nd);
        for (int i = 0; i < 16; i++)
            r[i] = i < nr ? _mm512_maskz_loadu_epi32(m, base + (size_t)i * rb + (c0 + c) / 2)
                          : _mm512_setzero_si512();
        tr16(r);
        for (int b = 0; b < 4 && 4 * b < nd; b++) {
            uint8_t *o = pw + (c / 32 + b) * 8 * 64; /* the block's 8 lines */
            for (int u = 0; u < 4; u++) {
                const __m512i v = r[4 * b + u];
                _mm512_store_si512((void *)(o + u * 64), _mm512_and_si512(v, m4));
                _mm512_store_si512((void *)(o + (4 + u) * 64), _mm512_and_si512(_mm512_srli_epi16(v, 4), m4));
            }
        }
    }
}

MK_TP void mk_gq8_sb_avx512(const mk_wt *w, const void *src, int64_t r0, int nr, int64_t c0, int64_t kc,
                            float *out) {
    const int64_t ng = w->cols / w->group, g0 = c0 / w->group, cnt = kc / w->group; /* cnt <= 16 */
    const __mmask16 m = dw_mask(cnt);
    __m512i r[16];
    for (int i = 0; i < 16; i++) {
        if (i >= nr) {
            r[i] = _mm512_setzero_si512();
            continue;
        }
        const int64_t at = (r0 + i) * ng + g0;
        switch (w->sdtype) {
        case MK_DT_BF16: {
            __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)src + at);
            r[i] = _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16);
            break;
        }
        case MK_DT_F16: {
            __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)src + at);
            r[i] = _mm512_castps_si512(_mm512_cvtph_ps(h));
            break;
        }
        default: /* MK_DT_F32 (mk_gq8_suits' affine weights have no other) */
            r[i] = _mm512_maskz_loadu_epi32(m, (const float *)src + at);
            break;
        }
    }
    tr16(r);
    for (int64_t gi = 0; gi < cnt; gi++)
        _mm512_store_si512((void *)(out + gi * MK_GQ8_ROWS), r[gi]);
}

#endif
