/* Prefill GEMM on AVX2+FMA (kern_impl.h, "panel products"): the packing of
 * a block of dequantized weight rows into a column-interleaved panel and
 * the register-tiled product of that panel with several tokens at once.
 *
 * Why a panel: the older tiles (gemm_tile) formed dot products along the
 * columns, 4 rows x 2 tokens per pass, so every 8 FMAs cost 6 loads and
 * each tile ended in horizontal sums. Here the 16 rows of a panel lie
 * across two vectors (pa[k*16 + i] = W[r0+i, c0+k]), so a column step is
 * two aligned loads of the panel, one broadcast per token and two FMAs per
 * token: 6 tokens x 16 rows keep 12 accumulators in registers (8 loads per
 * 12 FMAs) and the outputs of a token are 16 consecutive floats of y, added
 * with two vector adds and no horizontal sum. The weights are dequantized
 * (by any format's dequant slot) and packed once per block of tokens, so
 * every weight format gets the same product.
 *
 * Arithmetic, the same for every token count and grouping: output (t, i)
 * is the FMA chain acc = fma(pa[k*16+i], x[t][k], acc) for k = 0 .. kc-1
 * from acc = 0, then y += acc. Token groups and row blocks only decide
 * which outputs run together, never the floats of one.
 *
 * The AVX2 table's prefill (about 1.3x its 4x2 tiles, one core, CPU time,
 * bench_gemm). The AVX-512 tables keep their 4x4 tiles of 512-bit vectors:
 * with 16 products per FMA and 16 accumulators they measured faster than
 * these 256-bit panels (about 120 against 82 GFLOP/s on a Zen 4 core);
 * TODO: 512-bit panels (32 rows x 6 tokens) for them. */
#include <stdalign.h>

#include "kernels/kern_impl.h"

#ifdef MK_KERN_X86
#include <immintrin.h>

#define MK_T __attribute__((target("avx2,fma")))

/* Transpose of the 8x8 block at rows p[0..8), column k into out (row
 * stride MK_PANEL_R), in registers: named vectors, since an array of them
 * went through the stack (a store-forwarding stall per row). */
MK_T static inline void tr8(const float *const p[8], int64_t k, float *out) {
    __m256 r0 = _mm256_loadu_ps(p[0] + k), r1 = _mm256_loadu_ps(p[1] + k), r2 = _mm256_loadu_ps(p[2] + k),
           r3 = _mm256_loadu_ps(p[3] + k), r4 = _mm256_loadu_ps(p[4] + k), r5 = _mm256_loadu_ps(p[5] + k),
           r6 = _mm256_loadu_ps(p[6] + k), r7 = _mm256_loadu_ps(p[7] + k);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    _mm256_store_ps(out + 0 * MK_PANEL_R, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_store_ps(out + 1 * MK_PANEL_R, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_store_ps(out + 2 * MK_PANEL_R, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_store_ps(out + 3 * MK_PANEL_R, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_store_ps(out + 4 * MK_PANEL_R, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_store_ps(out + 5 * MK_PANEL_R, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_store_ps(out + 6 * MK_PANEL_R, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_store_ps(out + 7 * MK_PANEL_R, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* Rows past nr read this instead (their panel lanes become 0). */
static const float g_zero_row[MK_PANEL_K];

MK_T void mk_pack_panel_avx2(const float *a, int64_t lda, int nr, int64_t kc, float *pa) {
    const float *p[MK_PANEL_R];
    for (int i = 0; i < MK_PANEL_R; i++)
        p[i] = i < nr ? a + i * lda : g_zero_row;
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
        tr8(p, k, pa + k * MK_PANEL_R);
        tr8(p + 8, k, pa + k * MK_PANEL_R + 8);
    }
    for (; k < kc; k++) /* a ragged last column block (float rows only) */
        for (int i = 0; i < MK_PANEL_R; i++)
            pa[k * MK_PANEL_R + i] = p[i][k];
}

/* y[0 .. nr) += lo | hi, the same float additions for a whole or a partial
 * row block. */
MK_T static inline void add_out(float *y, int nr, __m256 lo, __m256 hi) {
    if (nr == MK_PANEL_R) {
        _mm256_storeu_ps(y, _mm256_add_ps(_mm256_loadu_ps(y), lo));
        _mm256_storeu_ps(y + 8, _mm256_add_ps(_mm256_loadu_ps(y + 8), hi));
        return;
    }
    alignas(32) float t[MK_PANEL_R];
    _mm256_store_ps(t, lo);
    _mm256_store_ps(t + 8, hi);
    for (int i = 0; i < nr; i++)
        y[i] += t[i];
}

/* One column step for token T of the group: named accumulators (an array
 * of vectors may be kept in memory by the compiler). */
#define PSTEP(T)                                                                                             \
    if (NT > T) {                                                                                            \
        __m256 b_ = _mm256_broadcast_ss(x##T + k);                                                           \
        c##T##a = _mm256_fmadd_ps(a0, b_, c##T##a);                                                          \
        c##T##b = _mm256_fmadd_ps(a1, b_, c##T##b);                                                          \
    }
#define POUT(T)                                                                                              \
    if (NT > T)                                                                                              \
        add_out(y + (T)*ldy, nr, c##T##a, c##T##b);

/* NT (1..6, a constant after inlining) tokens x 16 rows over kc columns. */
__attribute__((always_inline)) MK_T static inline void panel_group(const float *pa, int64_t kc, int nr,
                                                                   const float *x, int64_t ldx, float *y,
                                                                   int64_t ldy, const int NT) {
    const float *x0 = x, *x1 = x + ldx, *x2 = x + 2 * ldx, *x3 = x + 3 * ldx, *x4 = x + 4 * ldx,
                *x5 = x + 5 * ldx;
    __m256 c0a = _mm256_setzero_ps(), c0b = c0a, c1a = c0a, c1b = c0a, c2a = c0a, c2b = c0a, c3a = c0a,
           c3b = c0a, c4a = c0a, c4b = c0a, c5a = c0a, c5b = c0a;
    for (int64_t k = 0; k < kc; k++) {
        __m256 a0 = _mm256_load_ps(pa + k * MK_PANEL_R), a1 = _mm256_load_ps(pa + k * MK_PANEL_R + 8);
        PSTEP(0) PSTEP(1) PSTEP(2) PSTEP(3) PSTEP(4) PSTEP(5)
    }
    (void)x1, (void)x2, (void)x3, (void)x4, (void)x5;
    POUT(0) POUT(1) POUT(2) POUT(3) POUT(4) POUT(5)
}

/* Token groups: 6 while 12 or more remain, then the rest split in two
 * near-equal groups (7 -> 4 + 3, ..., 11 -> 6 + 5): groups of 1 or 2 keep
 * only 2 or 4 FMA chains in flight, which FMA latency leaves half idle. */
MK_T void mk_gemm_panel_avx2(const float *pa, int64_t kc, int nr, const float *x, int64_t ldx, int64_t nt,
                             float *y, int64_t ldy) {
    for (int64_t t = 0; t < nt;) {
        int64_t rem = nt - t;
        int g = rem >= 12 ? 6 : rem > 6 ? (int)(rem + 1) / 2 : (int)rem;
        const float *xt = x + t * ldx;
        float *yt = y + t * ldy;
        switch (g) {
        case 6: panel_group(pa, kc, nr, xt, ldx, yt, ldy, 6); break;
        case 5: panel_group(pa, kc, nr, xt, ldx, yt, ldy, 5); break;
        case 4: panel_group(pa, kc, nr, xt, ldx, yt, ldy, 4); break;
        case 3: panel_group(pa, kc, nr, xt, ldx, yt, ldy, 3); break;
        case 2: panel_group(pa, kc, nr, xt, ldx, yt, ldy, 2); break;
        default: panel_group(pa, kc, nr, xt, ldx, yt, ldy, 1); break;
        }
        t += g;
    }
}

#endif /* MK_KERN_X86 */
