/* Internal interface between the kernel files.
 *
 *   wt.c          per-format traits (row bytes, checks, portable dequant of a
 *                 column range) and the shared lookup tables
 *   kern_ref.c    portable kernel table (MK_ISA_REF)
 *   kern_avx2.c   AVX2+FMA+F16C table, compiled with target attributes only
 *   kern_avx512.c AVX-512 table, likewise
 *   kern_vnni.c   the AVX-512 / AVX2 tables with VNNI int8 dots
 *                 (MK_ISA_AVX512VNNI / MK_ISA_AVXVNNI)
 *   q8.c, kern_q8_body.h  int8 activations: the rule, the int8 matvecs
 *   kern_panel.c  the AVX2 table's prefill panels (pack, 6x16 register tile)
 *   matmul.c      picks a table, tiles and threads mk_matmul
 *   pool.c, ops.c thread pool and vector ops
 *
 * A kernel table (mk_kern_i) has one slot per weight format for a fused
 * single-token matvec and one for dequantizing a column range to float32;
 * a NULL slot means "use the portable one". The multi-token path dequantizes
 * tiles with `dequant` and multiplies them with `gemm_panel` after
 * `pack_panel` where the table has them (kern_panel.c), else with
 * `gemm_tile`. */
#ifndef MK_KERN_IMPL_H
#define MK_KERN_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/dequant.h"
#include "moekit/kernels.h"
#include "moekit/weight.h"

/* Column chunk of the tiled paths: a multiple of every format's block
 * (affine groups <= 128, MX 32, NV 16) so chunk starts are always
 * block- and byte-aligned. */
#define MK_KCHUNK 512

/* Panel products of the prefill path (kern_panel.c): MK_PANEL_R weight
 * rows by MK_PANEL_K columns, dequantized a row at a time, packed
 * column-interleaved (pa[k*MK_PANEL_R + i] = W[r0+i, c0+k], 64-byte
 * aligned, rows past nr zero) and multiplied against any number of tokens.
 * MK_PANEL_K is a multiple of every format's block (affine groups <= 128)
 * and short enough that the sequential sum of one output over a panel
 * keeps the kernels' 1e-5 bound (kernels.h "Accuracy"): the float error
 * of a chain of m products is at most about m * 2^-24 of the sum of their
 * magnitudes, so 128 products plus the chain of cols/128 panel sums stay
 * below 1e-5 up to 4352 columns and are far below it in practice. */
#define MK_PANEL_R 16
#define MK_PANEL_K 128

/* The lookup tables, mk_wt_dequant_range and mk_wt_fp8_scale are core's
 * (core/dequant.h): the kernels compute what that reference defines. */

/* ---- int8 activations for the decode kernels (q8.c) -------------------
 * The integer-dot matvecs (MLX affine 4 and 8 bits on the ref and AVX2
 * tables) quantize x once per call, shared by every row:
 *   blocks of MK_Q8_BLOCK consecutive elements; amax = max |x| over the
 *   block; d = amax / 127 and q = nearbyint(x * (127 / amax)) (both float
 *   divisions, ties to even), so |q| <= 127 and |x - q d| <= d / 2 (plus a
 *   few ulps); amax == 0 gives d = 0, q = 0; a NaN or infinity in the block
 *   gives d = NaN (the outputs become NaN, as the float path's would).
 * Every path computes exactly these q and d (the AVX2 quantizer is held to
 * the scalar one bitwise by the tests), so integer dot products are exact
 * and paths differ only in the float folding:
 *   y_r = sum_g [ s_g sum_{b in g} d_b (q_w . q_x)_b + bias_g xg_g ],
 *   xg_g = sum_{b in g} d_b sum_{c in b} q_c  (the sum of the quantized x).
 * Using the quantized sums for the bias makes the error sum_c W_rc (q_c d -
 * x_c): |y - W x| <= sum_b d_b / 2 sum_{c in b} |W_rc| + float rounding.
 *
 * Layout of the prepared vector in the float array `aux` (mk_q8x_at):
 *   d[nb] | xg[ng] | d8[cols/8] | q[cols bytes] | q4[cols bytes]
 * nb = cols / 32, ng = cols / group; d8 and q4 are the AVX2 4-bit kernel's
 * (d per lane of its 64-element chunks, x in nibble order). */
#define MK_Q8_BLOCK 32

typedef struct mk_q8x {
    float *d, *xg, *d8;
    int8_t *q, *q4;
} mk_q8x;

/* Floats of aux the layout needs for cols columns in groups of group. */
static inline size_t mk_q8x_floats(int64_t cols, int64_t group) {
    return (size_t)(cols / MK_Q8_BLOCK + cols / group + cols / 8 + cols / 2);
}
static inline mk_q8x mk_q8x_at(const float *aux, int64_t cols, int64_t group) {
    float *a = (float *)aux;
    mk_q8x v;
    v.d = a;
    v.xg = v.d + cols / MK_Q8_BLOCK;
    v.d8 = v.xg + cols / group;
    v.q = (int8_t *)(void *)(v.d8 + cols / 8);
    v.q4 = v.q + cols;
    return v;
}
/* Quantize x[0 .. n) (n a multiple of 32) to q and d by the rule above;
 * qs[b] = sum of block b's q (exact in a float). Portable. */
void mk_q8_quant(const float *x, int64_t n, int8_t *q, float *d, float *qs);
/* The same formula over blocks of blk elements (n a multiple of blk): the
 * prefill GEMM's activation blocks (kern_gemm_q8.h). */
void mk_q8_quant_blocks(const float *x, int64_t n, int blk, int8_t *q, float *d, float *qs);
/* xg[g] = sum over the blocks of group g (bpg blocks each) of d_b * qs_b,
 * in block order: one function so every path has the same sums. */
void mk_q8_group_sums(const float *d, const float *qs, int64_t ng, int bpg, float *xg);

/* ---- kernel tables ---------------------------------------------------- */

/* Per-call preparation of x for a matvec (optional): writes what the
 * format's matvec wants (group sums, a reordered copy of x) to aux, at most
 * cap floats and never more than MK_PREP_FLOATS(cols); false when cap is
 * too small (the caller then uses the tiled path). */
#define MK_PREP_FLOATS(cols) ((size_t)(cols) + (size_t)(cols) / 8 + 16)
typedef bool (*mk_prep_fn)(const mk_wt *w, const float *x, float *aux, size_t cap);
/* y[r - r0] = dot(W[r, :], x) for r in [r0, r1); aux from prep (or NULL). */
typedef void (*mk_matvec_fn)(const mk_wt *w, int64_t r0, int64_t r1, const float *x, const float *aux,
                             float *y);
/* out[0 .. c1-c0) = W[r, c0 .. c1), c0 a multiple of MK_PANEL_K (128:
 * whole blocks of every format). */
typedef void (*mk_dequant_fn)(const mk_wt *w, int64_t r, int64_t c0, int64_t c1, float *out);

typedef struct mk_kern_i {
    const char *name;
    /* sum a[i]*b[i] */
    float (*dot)(const float *a, const float *b, int64_t n);
    /* sum x[i]^2 */
    float (*sumsq)(const float *x, int64_t n);
    /* y[i] += a * x[i], a multiply then an add (never fused): the same floats
     * on every path */
    void (*axpy)(float *y, float a, const float *x, int64_t n);
    /* y[t*ldy + i] += sum_k a[i*lda + k] * x[t*ldx + k] for i < nr (<= 4), t < nt */
    void (*gemm_tile)(const float *a, int64_t lda, int nr, const float *x, int64_t ldx, int nt, int64_t k,
                      float *y, int64_t ldy);
    /* (optional, both or neither) the panel product: pack nr <= MK_PANEL_R
     * rows of a (row stride lda) over kc <= MK_PANEL_K columns into pa,
     * then y[t*ldy + i] += sum_k pa[k*MK_PANEL_R + i] * x[t*ldx + k] for
     * i < nr, t < nt, each output one FMA chain over k from 0, added to y
     * (the same floats whatever nt) */
    void (*pack_panel)(const float *a, int64_t lda, int nr, int64_t kc, float *pa);
    void (*gemm_panel)(const float *pa, int64_t kc, int nr, const float *x, int64_t ldx, int64_t nt, float *y,
                       int64_t ldy);
    /* fused single-token matvec per format (optional) */
    mk_matvec_fn matvec[MK_WF_COUNT];
    /* preparation of x for that matvec (optional) */
    mk_prep_fn prep[MK_WF_COUNT];
    /* decode on int8 activations (optional; "int8 activations" above):
     * mk_matmul's n == 1 path prefers it when qprep succeeds (false: this
     * weight or cap does not suit it, use matvec); the row-range products
     * (mk_matmul_rows) keep float x */
    mk_matvec_fn qmatvec[MK_WF_COUNT];
    mk_prep_fn qprep[MK_WF_COUNT];
    /* column-range dequant per format (optional) */
    mk_dequant_fn dequant[MK_WF_COUNT];
    /* mk_attn_block (kernels.h) */
    void (*attn_block)(const mk_attn_blk *a);
    /* mk_gemm_f32 (kernels.h) */
    void (*gemm_f32)(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b, int64_t ldb,
                     float *c, int64_t ldc);
} mk_kern_i;

extern const mk_kern_i mk_kern_ref;
/* The portable attention block (attn.c), the ref table's. */
void mk_attn_block_ref(const mk_attn_blk *a);
/* The portable row-major product (ops.c), the ref table's. */
void mk_gemm_f32_ref(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b, int64_t ldb,
                     float *c, int64_t ldc);
#if defined(__x86_64__) || defined(__i386__)
#define MK_KERN_X86 1
extern const mk_kern_i mk_kern_avx2;
extern const mk_kern_i mk_kern_avx512;
/* The AVX-512 table with AVX512-VNNI integer dots and the AVX2 table with
 * AVX-VNNI ones (kern_vnni.c), built on first use. */
const mk_kern_i *mk_kern_avx512vnni(void);
const mk_kern_i *mk_kern_avxvnni(void);
/* MLX affine 4/8 bits on int8 activations with 256-bit integer dots
 * (kern_avx2.c), the qmatvec/qprep of both x86 tables: the prep returns
 * false for other widths. */
bool mk_q8_prep_affine_avx2(const mk_wt *w, const float *x, float *aux, size_t cap);
void mk_q8_mv_affine_avx2(const mk_wt *w, int64_t r0, int64_t r1, const float *x, const float *aux, float *y);
/* The panel products on AVX2+FMA (kern_panel.c), the AVX2 table's. */
void mk_pack_panel_avx2(const float *a, int64_t lda, int nr, int64_t kc, float *pa);
void mk_gemm_panel_avx2(const float *pa, int64_t kc, int nr, const float *x, int64_t ldx, int64_t nt, float *y,
                        int64_t ldy);
#endif

/* The active table (never NULL). */
const mk_kern_i *mk_kern_active(void);

#endif
