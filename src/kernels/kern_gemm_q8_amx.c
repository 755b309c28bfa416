/* The AMX table of the int8-activation prefill GEMM (kern_gemm_q8.h): the
 * AVX2 quantizer and panel packer of kern_gemm_q8_x86.c, and products on
 * AMX tiles (TDPBSUD: signed int8 tokens times unsigned weight codes into
 * int32), 16 tokens x 16 rows per tile. Compiled with target attributes
 * only; used when mk_isa_active() is MK_ISA_AMX (isa.c asked Linux for the
 * tile data state).
 *
 * Why it is fast: one TDPBSUD does 16 x 16 x 32 = 8192 byte products, the
 * AVX512-VNNI table's 128 dpbusd and 128 broadcasts. What is left is the
 * rule's float fold (a convert, a multiply and an FMA per output and block
 * of 32): four vector instructions per token, row vector and block.
 *
 * The tiles (per call; the configuration is loaded when a thread's token
 * count per tile changes):
 *   A (tmm4, tmm5): m <= 16 tokens x 32 int8, straight from the prepared
 *     tokens (their q in dot order, a row stride of the token stride);
 *   B (tmm6, tmm7): the panel's 32 positions of the block for its 16 rows:
 *     8 rows of 64 bytes, which is the panel layout as packed (4
 *     consecutive positions of one row in 4 bytes, the rows side by side);
 *   C (tmm0 - tmm3): m x 16 int32, the exact block dots i_b (|i| < 2^24),
 *     stored to an aligned buffer and folded by the rule: acc = fma((float)i
 *     * d, s, acc), then per group acc = fma(bias, xg, acc). Bitwise the
 *     portable table's floats, as every table.
 * Every block of the panel is multiplied before the first is folded (four
 * C tiles rotate), so the folds run behind the tiles. */
#include <stdalign.h>
#include <string.h>

#include "kernels/kern_gemm_q8.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define AMX_T __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vnni,amx-tile,amx-int8")))

typedef struct tilecfg {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg;

/* Tokens per tile and columns per product of the configuration this
 * thread loaded (0: none yet). Nothing else in the process configures
 * tiles. */
static _Thread_local int tl_rows, tl_kb;

AMX_T static void amx_config(int m, int kb) {
    if (tl_rows == m && tl_kb == kb)
        return;
    alignas(64) tilecfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int i = 0; i < 4; i++) {
        c.rows[i] = (uint8_t)m; /* C: m tokens x 16 int32 */
        c.colsb[i] = 64;
    }
    for (int i = 4; i < 6; i++) {
        c.rows[i] = (uint8_t)m; /* A: m tokens x kb int8 */
        c.colsb[i] = (uint16_t)kb;
        c.rows[i + 2] = (uint8_t)(kb / 4); /* B: kb positions / 4 x (16 rows x 4 codes) */
        c.colsb[i + 2] = 64;
    }
    /* our own asm operand: the compilers' _tile_loadconfig reads the bytes
     * through their struct type, which strict aliasing lets them reorder
     * the stores above past */
    __asm__ volatile("ldtilecfg %0" ::"m"(c));
    tl_rows = m;
    tl_kb = kb;
}

/* The token pointers of a group of up to 16 (unused ones alias token 0). */
typedef struct toks16 {
    const float *d[16], *xg[16];
} toks16;

/* Activation block bb (of the panel: ab columns from bb * ab) into tile
 * set C, A, B (literal tile numbers: the compilers' tile macros paste them
 * into the instruction): C = sum of A . B over its kb-column pieces, stored
 * to cb. */
#define ISSUE(C, A, B, bb, cb)                                                                               \
    do {                                                                                                     \
        _tile_zero(C);                                                                                       \
        for (int64_t p_ = (bb)*ab; p_ < ((bb) + 1) * ab; p_ += kb) {                                         \
            _tile_loadd(A, xq + p_, (long)xs);                                                               \
            _tile_loadd(B, pw + p_ / 4 * 64, 64);                                                            \
            _tile_dpbsud(C, A, B);                                                                           \
        }                                                                                                    \
        _tile_stored(C, cb, 64);                                                                             \
    } while (0)
#define FOLD1(T, cb, blk)                                                                                    \
    if (NT > T) {                                                                                            \
        __m512 i_ = _mm512_cvtepi32_ps(_mm512_load_si512((const void *)((cb) + ((T) + sh) * 16)));          \
        f##T = _mm512_fmadd_ps(_mm512_mul_ps(i_, _mm512_set1_ps(k.d[T][blk])), s, f##T);                    \
    }
#define BIAS1(T, gg)                                                                                         \
    if (NT > T)                                                                                              \
        f##T = _mm512_fmadd_ps(bv, _mm512_set1_ps(k.xg[T][gg]), f##T);
#define OUT1(T)                                                                                              \
    if (NT > T) {                                                                                            \
        float *y_ = y + (T)*ldy;                                                                             \
        _mm512_mask_storeu_ps(y_, msk, _mm512_add_ps(_mm512_maskz_loadu_ps(msk, y_), f##T));                 \
    }
#define ALL16(M, ...)                                                                                        \
    M(0, __VA_ARGS__) M(1, __VA_ARGS__) M(2, __VA_ARGS__) M(3, __VA_ARGS__) M(4, __VA_ARGS__)                \
    M(5, __VA_ARGS__) M(6, __VA_ARGS__) M(7, __VA_ARGS__) M(8, __VA_ARGS__) M(9, __VA_ARGS__)                \
    M(10, __VA_ARGS__) M(11, __VA_ARGS__) M(12, __VA_ARGS__) M(13, __VA_ARGS__) M(14, __VA_ARGS__)           \
    M(15, __VA_ARGS__)
#define OUT_ALL OUT1(0) OUT1(1) OUT1(2) OUT1(3) OUT1(4) OUT1(5) OUT1(6) OUT1(7) OUT1(8) OUT1(9) OUT1(10)     \
    OUT1(11) OUT1(12) OUT1(13) OUT1(14) OUT1(15)

/* Fold block bb (gi's, the panel's blk-th of the row) from cb: the rule's
 * block step. */
#define FOLD_BLOCK(cb, blk)                                                                                  \
    do {                                                                                                     \
        ALL16(FOLD1, cb, blk)                                                                                \
    } while (0)
/* NT tokens (prepared at xq's rows, xs apart, from row sh on: the tiles
 * hold sh tokens before them, whose products are not folded) x the
 * panel's 16 rows; activation blocks of ab columns, tile products of kb =
 * min(ab, 64). */
__attribute__((always_inline)) AMX_T static inline void amx_tile(const uint8_t *pw, const float *ps,
                                                                 const float *pb, int64_t c0, int64_t kc,
                                                                 int group, int ab, int kb, const int8_t *xq,
                                                                 size_t xs, int sh, const toks16 k, float *y,
                                                                 int64_t ldy, int nr, const int NT) {
    alignas(64) int32_t cb[MK_GQ8_KC / 32][16 * 16];
    __m512 f0 = _mm512_setzero_ps(), f1 = f0, f2 = f0, f3 = f0, f4 = f0, f5 = f0, f6 = f0, f7 = f0, f8 = f0,
           f9 = f0, f10 = f0, f11 = f0, f12 = f0, f13 = f0, f14 = f0, f15 = f0;
    const int64_t nb = kc / ab;
    /* every block's dots first, rotating four C tiles (and two A / B
     * pairs): a tile store reaches the vector loads only once it completes
     * and a C tile is free only once stored, so the folds run behind the
     * tiles rather than waiting on each */
    int64_t b = 0;
    for (; b + 3 < nb; b += 4) {
        ISSUE(0, 4, 6, b, cb[b]);
        ISSUE(1, 5, 7, b + 1, cb[b + 1]);
        ISSUE(2, 4, 6, b + 2, cb[b + 2]);
        ISSUE(3, 5, 7, b + 3, cb[b + 3]);
    }
    for (; b < nb; b++)
        ISSUE(0, 4, 6, b, cb[b]);
    const int64_t per = group / ab; /* activation blocks per group */
    for (int64_t gi = 0, bb = 0; gi < kc / group; gi++) {
        const __m512 s = _mm512_load_ps(ps + gi * MK_GQ8_ROWS);
        for (int64_t j = 0; j < per; j++, bb++) {
            const int64_t blk = c0 / ab + bb;
            FOLD_BLOCK(cb[bb], blk);
        }
        const __m512 bv = _mm512_load_ps(pb + gi * MK_GQ8_ROWS);
        const int64_t gg = c0 / group + gi;
        ALL16(BIAS1, gg)
    }
    const __mmask16 msk = (__mmask16)((1u << nr) - 1u);
    OUT_ALL
}

AMX_T static void kern_amx(const uint8_t *pw, const float *ps, const float *pb, int64_t c0, int64_t kc, int group,
                           int ab, const uint8_t *xp, size_t xs, int64_t cols, int64_t nt, float *y, int64_t ldy,
                           int nr) {
    const int kb = ab < 64 ? ab : 64;
    for (int64_t t = 0; t < nt; t += 16) {
        const int m = nt - t < 16 ? (int)(nt - t) : 16;
        /* A last partial tile of a call with 16 tokens or more starts
         * 16 - m tokens early (those are computed again and not folded), so
         * the tiles keep their 16-token configuration: ldtilecfg costs about
         * as much as a panel's products, and the tokens per expert vary. */
        const int sh = m < 16 && nt >= 16 ? 16 - m : 0;
        amx_config(m + sh, kb);
        toks16 k;
        for (int T = 0; T < 16; T++) {
            mk_gq8x v = mk_gq8_at(xp + (size_t)(t + (T < m ? T : 0)) * xs, cols, ab);
            k.d[T] = v.d;
            k.xg[T] = v.xg;
        }
        const int8_t *xq = (const int8_t *)(xp + (size_t)(t - sh) * xs) + c0;
        float *yt = y + t * ldy;
        switch (m) {
#define CASE(n)                                                                                              \
    case n: amx_tile(pw, ps, pb, c0, kc, group, ab, kb, xq, xs, sh, k, yt, ldy, nr, n); break;
            CASE(16) CASE(15) CASE(14) CASE(13) CASE(12) CASE(11) CASE(10) CASE(9) CASE(8) CASE(7) CASE(6)
            CASE(5) CASE(4) CASE(3) CASE(2)
        default: amx_tile(pw, ps, pb, c0, kc, group, ab, kb, xq, xs, sh, k, yt, ldy, nr, 1); break;
#undef CASE
        }
    }
}

MK_GQ8_KERN48(AMX_T, amx)

const mk_gq8_i mk_gq8_amx = {"amx", mk_gq8_quant_avx2, mk_gq8_pack_avx512, mk_gq8_sb_avx512, kern4_amx, kern8_amx};

#endif
