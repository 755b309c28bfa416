/* Internal interface of the prefill GEMM on int8 activations
 * (kern_gemm_q8.c: rule, driver, portable table; kern_gemm_q8_x86.c: the
 * AVX2 and AVX512-VNNI tables).
 *
 * What it computes: Y = X W^T for an MLX affine 4- or 8-bit weight and a
 * chunk of tokens, with X quantized once per call in activation blocks of
 * ab columns (mk_gq8_ab: 64 for 4-bit weights in groups of 64 or more, else
 * 32) by q8.c's formula (kern_impl.h "int8 activations": d = amax /
 * 127, q = nearbyint(x * 127 / amax) over the block) and exact integer dot
 * products per activation block:
 *   y[t, r] = sum over the 512-column panels P, in order, of
 *             acc_P(t, r), where acc_P starts at 0 and for each group g of
 *             P, in order:  for each activation block b of g, in order:
 *                              acc = fma((float)i_b * d_tb, s_rg, acc)
 *                           then acc = fma(bias_rg, xg_tg, acc)
 *   i_b = sum_{c in b} q_w[r, c] q_x[t, c]  (exact int32: |i| < 2^24)
 *   xg_tg = mk_q8_group_sums of the activation blocks' d_b * (sum of q)
 * Why 64 at 4 bits: one fold (a convert, a multiply and an FMA per output)
 * per 64 columns instead of per 32, and one AMX tile product of 64
 * columns: 1.13x the 30B-shaped prefill; it costs +1% KL on the 4-bit demo
 * model (bench/RESULTS.md, session 12), against +0.1% with blocks of 32.
 * 8-bit weights keep blocks of 32, where the activations' rounding shows
 * more (+20% KL already).
 * Every table computes exactly these floats (integer dots are exact, the
 * float steps are the same single roundings: a multiply and fused
 * multiply-adds), so the paths agree bitwise; the tests hold them to it.
 *
 * Data layouts shared by the tables:
 *   "dot order" of a block of 32 columns: natural for 8 bits; for 4 bits
 *     the 16 even columns then the 16 odd ones, which is the order MLX's
 *     nibbles come out of a byte (low = even column), so a packed block
 *     unpacks with an and and a shift and no byte interleave.
 *   prepared token (mk_gq8_at): q[cols] int8 in dot order | d[nab] |
 *     qsf[nab] (activation block sums of q, as floats) | qs128[nab] (128 *
 *     those, int32, for the AVX2 8-bit kernel's codes - 128) | xg[ng], nab
 *     = cols / ab; a stride of mk_gq8_stride bytes (a multiple of 64) per
 *     token.
 *   panel (mk_gq8_pack_fn): MK_GQ8_ROWS rows x kc columns of codes, 4
 *     consecutive dot-order positions of one row in 4 bytes, the 16 rows
 *     side by side: pw[(p / 4) * 64 + i * 4 + p % 4] = code of row i at
 *     position p (positions run block after block); rows past nr are 0. */
#ifndef MK_KERN_GEMM_Q8_H
#define MK_KERN_GEMM_Q8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moekit/isa.h"
#include "moekit/kernels.h"
#include "moekit/weight.h"

#define MK_GQ8_ROWS 16 /* rows of a panel and of a work item */
#define MK_GQ8_KC 512  /* columns of a panel: a multiple of every group */
/* Bytes of prepared tokens kept on the calling thread's stack: tokens are
 * processed in blocks of MK_GQ8_TOK, there when they fit, else in a heap
 * block (as many as fit here if that allocation fails). */
#define MK_GQ8_STACK (128 * 1024)
#define MK_GQ8_TOK 64
/* Fewest tokens per block worth the path: below it each panel (unpacked
 * and transposed codes) serves too few tokens. */
#define MK_GQ8_MIN_TOK 4

typedef struct mk_gq8x {
    int8_t *q;
    float *d, *qsf;
    int32_t *qs128;
    float *xg;
} mk_gq8x;

/* Columns of an activation block: 64 for 4-bit weights in groups of 64 or
 * more, else 32. */
static inline int mk_gq8_ab(int group, bool four) {
    return four && group >= 64 ? 64 : 32;
}
static inline size_t mk_gq8_stride(int64_t cols, int group, int ab) {
    size_t nab = (size_t)(cols / ab), ng = (size_t)(cols / group);
    size_t b = (size_t)cols + 12 * nab + 4 * ng;
    return (b + 63) & ~(size_t)63;
}
static inline mk_gq8x mk_gq8_at(const uint8_t *tok, int64_t cols, int ab) {
    mk_gq8x v;
    size_t nab = (size_t)(cols / ab);
    v.q = (int8_t *)(uintptr_t)tok;
    v.d = (float *)(uintptr_t)(tok + cols);
    v.qsf = v.d + nab;
    v.qs128 = (int32_t *)(void *)(v.qsf + nab);
    v.xg = (float *)(void *)(v.qs128 + nab);
    return v;
}

/* Quantize one token x[cols] into the prepared layout at dst (dot order and
 * activation blocks of mk_gq8_ab(group, four) for 4 bits when four). */
typedef void (*mk_gq8_quant_fn)(const float *x, int64_t cols, int group, bool four, uint8_t *dst);
/* Codes of rows [r0, r0 + nr) (nr <= 16), columns [c0, c0 + kc) (c0 a
 * multiple of MK_GQ8_KC, kc a multiple of the group) into the panel pw
 * (64-byte aligned, kc * 16 bytes). */
typedef void (*mk_gq8_pack_fn)(const mk_wt *w, int64_t r0, int nr, int64_t c0, int64_t kc, uint8_t *pw);
/* Scales or biases (src: w->scales or w->biases) of rows [r0, r0 + nr), the
 * groups of columns [c0, c0 + kc), as floats at out[gi * 16 + i] (64-byte
 * aligned; 0 past nr). */
typedef void (*mk_gq8_sb_fn)(const mk_wt *w, const void *src, int64_t r0, int nr, int64_t c0, int64_t kc,
                             float *out);
/* y[t * ldy + i] += acc_P(t, i) for i < nr, t < nt (the rule above) of the
 * panel pw at columns [c0, c0 + kc); ps / pb: scales and biases of the
 * panel's groups, ps[gi * 16 + i] (64-byte aligned, 0 past nr); tokens
 * prepared at xp + t * xs (cols columns each); kern4 for 4-bit codes
 * (activation blocks of mk_gq8_ab(group, true)), kern8 for 8-bit ones. */
typedef void (*mk_gq8_kern_fn)(const uint8_t *pw, const float *ps, const float *pb, int64_t c0, int64_t kc,
                               int group, const uint8_t *xp, size_t xs, int64_t cols, int64_t nt, float *y,
                               int64_t ldy, int nr);

/* The kern4 / kern8 entries of a table over its body kern_SFX, which takes
 * the activation block: mk_gq8_ab(group, true) columns for 4-bit codes, 32
 * for 8-bit ones. ATTR: the table's target attribute. */
#define MK_GQ8_KERN48(ATTR, SFX)                                                                              \
    ATTR static void kern4_##SFX(const uint8_t *pw, const float *ps, const float *pb, int64_t c0, int64_t kc,  \
                                 int group, const uint8_t *xp, size_t xs, int64_t cols, int64_t nt, float *y, \
                                 int64_t ldy, int nr) {                                                       \
        kern_##SFX(pw, ps, pb, c0, kc, group, mk_gq8_ab(group, true), xp, xs, cols, nt, y, ldy, nr);         \
    }                                                                                                         \
    ATTR static void kern8_##SFX(const uint8_t *pw, const float *ps, const float *pb, int64_t c0, int64_t kc,  \
                                 int group, const uint8_t *xp, size_t xs, int64_t cols, int64_t nt, float *y, \
                                 int64_t ldy, int nr) {                                                       \
        kern_##SFX(pw, ps, pb, c0, kc, group, 32, xp, xs, cols, nt, y, ldy, nr);                              \
    }

typedef struct mk_gq8_i {
    const char *name;
    mk_gq8_quant_fn quant;
    mk_gq8_pack_fn pack;
    mk_gq8_sb_fn sb;
    mk_gq8_kern_fn kern4, kern8;
} mk_gq8_i;

extern const mk_gq8_i mk_gq8_ref;
/* The portable scale loader (shared by the AVX2 table) */
void mk_gq8_sb_ref(const mk_wt *w, const void *src, int64_t r0, int nr, int64_t c0, int64_t kc, float *out);
#if defined(__x86_64__) || defined(__i386__)
extern const mk_gq8_i mk_gq8_avx2;
extern const mk_gq8_i mk_gq8_avxvnni;
extern const mk_gq8_i mk_gq8_vnni;
/* The AVX2 quantizer and panel packer, shared by the x86 tables */
void mk_gq8_quant_avx2(const float *x, int64_t cols, int group, bool four, uint8_t *dst);
void mk_gq8_pack_avx2(const mk_wt *w, int64_t r0, int nr, int64_t c0, int64_t kc, uint8_t *pw);
/* The AVX-512 packer and scale loader of the VNNI and AMX tables
 * (kern_gemm_q8_pack512.c) */
void mk_gq8_pack_avx512(const mk_wt *w, int64_t r0, int nr, int64_t c0, int64_t kc, uint8_t *pw);
void mk_gq8_sb_avx512(const mk_wt *w, const void *src, int64_t r0, int nr, int64_t c0, int64_t kc, float *out);
#endif
#if defined(__x86_64__)
extern const mk_gq8_i mk_gq8_amx;
#endif
/* The table of path isa (the AVX-512 path without VNNI runs AVX2's). */
const mk_gq8_i *mk_gq8_table(mk_isa isa);

/* Whether w suits the path (MLX affine, 4 or 8 bits). */
bool mk_gq8_suits(const mk_wt *w);

/* Most weights of one mk_gq8_matmul. */
#define MK_GQ8_MAXW 8
/* Whether mk_gq8_matmul takes these count weights (each suits, all with the
 * same columns, bits and group, count <= MK_GQ8_MAXW) and n tokens (at
 * least MK_GQ8_MIN_TOK, a token block of at least as many on the stack). */
bool mk_gq8_fits(const mk_wt *const *w, int count, int64_t n);
/* y[i][n, w[i]->rows] = x W_i^T by the rule above, on the active path's
 * table; the caller checked mk_gq8_fits. About 128 KiB of the calling
 * thread's stack, 12 KiB of each worker's. */
void mk_gq8_matmul(mk_pool *p, const mk_wt *const *w, int count, const float *x, int64_t n, float *const *y);

#endif
