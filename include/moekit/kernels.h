/* CPU compute kernels: a persistent thread pool, matrix products over every
 * weight storage format of weight.h, and the small vector ops the forward
 * pass needs (norms, activations, softmax).
 *
 * mk_matmul computes Y = X W^T for n tokens at once. Each weight format has
 * a portable C path and, where the CPU has them, AVX2+FMA+F16C and AVX-512
 * paths; the path is core's one switch (isa.h: the best this CPU supports,
 * or what mk_isa_set forced; the CLI maps MK_KERNELS=ref|avx2|avxvnni|avx512|avx512vnni|amx to it).
 *
 * Accuracy. All paths accumulate in float32; SIMD results differ from
 * mk_matmul_ref only in summation order (the tests hold every path to
 * |y - y_ref| <= 1e-5 * sum_c |W[r,c] x[c]|), with one exception, on by
 * default on every x86 path and off on ref (mk_kernels_set_int8 forces it
 * either way): mk_matmul, mk_matvec_multi and mk_matmul_each(_multi) of
 * single tokens (n == 1, or each token of the batch-invariant products)
 * times an MLX affine 4- or 8-bit weight (avx2 and avx512 run 256-bit
 * maddubs kernels, avxvnni and avx512vnni the same with dpbusd, ref a
 * scalar twin of the same algorithm; up to 35k columns) quantize x to int8
 * in blocks of 32 (d_b = max|x| / 127 over block b) and use integer dot
 * products (the row-range products below, every other format and prefill
 * (n > 1) keep float x; prefill has its own int8 GEMM, which follows this
 * setting unless forced, mk_kernels_set_prefill_int8 below), so
 *   |y_r - sum_c W[r,c] x[c]| <= sum_b d_b / 2 * sum_{c in b} |W[r,c]|
 *                                + 1e-5 * sum_c |W[r,c] x^[c]|
 * with x^ the quantized x (tests/unit/test_kernels.c checks both that bound
 * and the 1e-5 one against x^). For Gaussian-like x that is about 0.5%
 * relative error per element of x (rms (d_b / 2) / sqrt(3), d_b ~ 2.5
 * sigma / 127), far below a 4-bit weight's own rounding (about 10% of its
 * sigma: a step of (max - min) / 15 per group) and about an 8-bit one's;
 * test_profile_mixedbits measured logits 1.7e-3 relative apart on a
 * mixed-width checkpoint. Every output is computed by one thread in a fixed order
 * whatever rows it is grouped with, so results are bitwise independent of
 * the thread count and of how rows are split.
 *
 * None of these functions can fail once the pool exists. One allocates:
 * the int8 prefill product of a wide input takes its block of 64 prepared
 * tokens from the heap (80 bytes per column: 1.4 MiB at 18432 columns)
 * where its 128 KiB stack block holds fewer, and keeps to the stack block
 * if that allocation fails (the same results, slower). Weights must have
 * passed mk_wt_check (kernels do not re-validate). */
#ifndef MOEKIT_KERNELS_H
#define MOEKIT_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#include "moekit/isa.h"
#include "moekit/status.h"
#include "moekit/weight.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- thread pool ------------------------------------------------------ */

typedef struct mk_pool mk_pool; /* persistent worker threads */

/* Start nthreads-1 workers (the calling thread is the nth). nthreads <= 0
 * means one per CPU this process may run on. MK_E_NOMEM if a thread or the
 * pool cannot be created. */
mk_status mk_pool_create(int nthreads, mk_pool **out);
/* Stop and join the workers. NULL is a no-op. No mk_pool_for may be running. */
void mk_pool_free(mk_pool *p);
/* Threads that run work, the caller included (1 for NULL). */
int mk_pool_size(const mk_pool *p);
/* Parallel for over [0,n): calls fn(ctx, b, e) on disjoint ranges that
 * cover [0,n), each at least `grain` long except possibly the last, and
 * returns when all are done. p may be NULL (runs inline as fn(ctx, 0, n)).
 * Calls from inside fn, or from a second thread while the pool is busy,
 * run inline on the calling thread rather than deadlocking. */
void mk_pool_for(mk_pool *p, int64_t n, int64_t grain, void (*fn)(void *ctx, int64_t b, int64_t e),
                 void *ctx);

/* ---- matrix products -------------------------------------------------- */

/* Int8 activations for single-token products over MLX affine 4/8-bit
 * weights (see "Accuracy" above), an approximation like llama.cpp's
 * quantized activations. Default: on where the active path has integer dot
 * products (every x86 path: the float kernels spend one convert and one
 * FMA per weight and run out of compute before the memory does; measured
 * 2-2.6x faster hot 4/8-bit matvecs, commit acc316e), off on ref, whose
 * int8 kernel is a plain C twin kept for testing. The default follows a
 * later mk_isa_set. mk_kernels_set_int8 forces it: false gives float x
 * everywhere, every product within float32 noise of the scalar reference
 * (what tests comparing against float references pin); true runs the int8
 * kernels on ref too. mk_kernels_reset_int8 returns to the default.
 * mk_kernels_int8 says whether the next product on the active path uses
 * int8 x. The CLI's --act-int8 on|off and MK_ACT_INT8=1|0 map to it.
 * Process-wide like mk_isa_set: not safe while another thread computes. */
void mk_kernels_set_int8(bool on);
void mk_kernels_reset_int8(void);
bool mk_kernels_int8(void);
/* The setting behind mk_kernels_int8: -1 the default, 0 / 1 forced (so a
 * caller that forces it for a while can put back exactly what was there). */
int mk_kernels_int8_setting(void);
/* Put back a setting read with mk_kernels_int8_setting (-1: the default). */
void mk_kernels_restore_int8(int setting);

/* Int8 activations for multi-token products (prefill, n >= 4) over MLX
 * affine 4/8-bit weights: mk_matmul and mk_matmul_n quantize the tokens
 * once per call by the same formula (d_b = max|x| / 127 over blocks b of
 * 32 columns for 8-bit weights, of 64 for 4-bit ones in groups of 64 or
 * more) and multiply with integer dot products (src/kernels/kern_gemm_q8.c;
 * AMX tiles on the amx path), so
 *   |y[t,r] - sum_c W[r,c] x[t,c]| <= sum_b d_tb / 2 * sum_{c in b} |W[r,c]|
 *                                   + 1e-5 * sum_c |W[r,c] x^[t,c]|
 * (x^ the quantized tokens; tests/unit/test_gemm_q8.c). Results are bitwise
 * independent of the thread count and the same on every kernel path. By
 * default it follows mk_kernels_int8 (the decode setting: on with the x86
 * kernels, off on ref; measured 1.4-1.5x the float prefill panels on the
 * AVX2 path and 1.7x on AVX-512 VNNI, bench/RESULTS.md 2026-12-04), so
 * --act-int8 off gives float prefill too; mk_kernels_set_prefill_int8
 * forces it either way (the CLI maps MK_PREFILL_INT8=0|1 to it) and
 * mk_kernels_reset_prefill_int8 returns to following. Process-wide like
 * mk_isa_set: not safe while another thread computes. */
void mk_kernels_set_prefill_int8(bool on);
void mk_kernels_reset_prefill_int8(void);
bool mk_kernels_prefill_int8(void);
/* -1 following mk_kernels_int8, 0 / 1 forced */
int mk_kernels_prefill_int8_setting(void);
/* Put back a setting read with mk_kernels_prefill_int8_setting. */
void mk_kernels_restore_prefill_int8(int setting);

/* Accumulated difference of B's values against A's (the reference), the
 * one every verification in moekit reports: sums in double over the finite
 * pairs, NaN/Inf judged by position. */
typedef struct mk_diff {
    double err2, ref2, max_abs; /* sum (b-a)^2, sum a^2, max |b-a| over finite pairs */
    uint64_t bad;               /* NaN in one side only, or a non-finite value the other side lacks */
} mk_diff;
void mk_diff_add(mk_diff *d, const float *a, const float *b, size_t n);
void mk_diff_merge(mk_diff *into, const mk_diff *d);
/* ||b-a|| / ||a||: 0 when both are 0, +inf when only a is 0. */
double mk_diff_rel(const mk_diff *d);

/* Y[t*rows + r] = sum_c W[r,c] * X[t*cols + c] for t < n, r < rows.
 * X, Y float32, must not overlap. Threads over rows (and token blocks when
 * n > 1); each weight row is read once per block of up to 64 tokens.
 * p may be NULL (single thread). Uses about 100 KiB of the calling thread's
 * stack (x prepared for the decode kernels) and 16 KiB of each worker's. */
void mk_matmul(mk_pool *p, const mk_wt *w, const float *x, int64_t n, float *y);
/* ys[i][n, w[i]->rows] = x W_i^T for count weights of one input (q, k and
 * v; an expert's gate and up), each bitwise what mk_matmul gives for it;
 * with int8 prefill activations x is quantized once for all of them and
 * their products share the parallel regions. No ys may overlap x. */
void mk_matmul_n(mk_pool *p, const mk_wt *const *w, int count, const float *x, int64_t n, float *const *ys);
/* Y = X W^T for n independent tokens, each token's row bitwise what
 * mk_matmul(p, w, x_t, 1, y_t) gives alone (the decode kernels, not the
 * tiled prefill path): a batch-invariant product for a decode step over
 * several sequences, so a sequence's result does not depend on what else
 * is in the batch. Threads over blocks of rows and runs every token of a
 * group over a block before moving on, so the weight is read from memory
 * once per group (as many tokens as their prepared x fit a 256 KiB stack
 * buffer: a batch of 8 up to ~7k columns, 28 at 2048). About 256 KiB of
 * the calling thread's stack. */
void mk_matmul_each(mk_pool *p, const mk_wt *w, const float *x, int64_t n, float *y);
/* One product of a batch (mk_matmul_each_multi): y[n, w.rows] = x W^T. */
typedef struct mk_mm_item {
    const mk_wt *w;
    const float *x; /* [n, w->cols] */
    int64_t n;
    float *y;       /* [n, w->rows] */
} mk_mm_item;
/* mk_matmul_each for `count` products in as few parallel regions as their
 * prepared x fit (the routed experts of a batched decode step: every
 * expert's gate and up in one region, every down in the next, instead of
 * three regions per expert). Each y is bitwise what mk_matmul_each gives
 * for its item alone, i.e. each token's row as mk_matmul(n == 1). An item
 * right after one with the same x, n and weight layout shares its
 * preparations (an expert's gate and up). No y may overlap any x. Uses
 * about 256 KiB of the calling thread's stack. */
void mk_matmul_each_multi(mk_pool *p, const mk_mm_item *items, int count);
/* Portable scalar reference of the same on one thread: each row is
 * dequantized with mk_wt_dequant_row and summed left to right in float32. */
void mk_matmul_ref(const mk_wt *w, const float *x, int64_t n, float *y);

/* One single-token product of a batch (mk_matvec_multi). */
typedef struct mk_mv_item {
    const mk_wt *w;
    const float *x; /* w->cols floats */
    float *y;       /* w->rows floats */
} mk_mv_item;
/* y_i = W_i x_i for `count` independent single-token products in one
 * parallel region (a token's routed experts at decode: one wake-up and one
 * join for all of them instead of one per matrix). Each y_i is bitwise what
 * mk_matmul(p, W_i, x_i, 1, y_i) gives; items with the same x and the same
 * weight layout share one preparation of x (the int8 quantization of a
 * token's input is done once for all its gate and up projections). No y_i
 * may overlap any x_j. Same stack use as mk_matmul. */
void mk_matvec_multi(mk_pool *p, const mk_mv_item *items, int count);

/* Products with the row range [r0, r1) of W, on the calling thread, for
 * callers that thread over several ranges themselves (MLA's per-head slices
 * of kv_b, backend.h head_matmul). Rows keep their absolute index, so FP8
 * block scales apply whatever r0 is. Token t of x starts at x + t*xs, of y
 * at y + t*ys; x and y must not overlap. Same accuracy contract as
 * mk_matmul; no allocation (mk_matmul_rows about 16 KiB of stack;
 * mk_matmul_rows_t up to 96 KiB: a dequantized strip of up to 192 rows x
 * 128 columns, multiplied as one float GEMM, each output one FMA chain
 * over the rows in order).
 *   mk_matmul_rows:   y[t*ys + r-r0] = sum_c W[r,c] x[t*xs + c]        (r0 <= r < r1)
 *   mk_matmul_rows_t: y[t*ys + c]    = sum_r W[r,c] x[t*xs + r-r0]     (c < cols) */
void mk_matmul_rows(const mk_wt *w, int64_t r0, int64_t r1, const float *x, int64_t xs, int64_t n,
                    float *y, int64_t ys);
void mk_matmul_rows_t(const mk_wt *w, int64_t r0, int64_t r1, const float *x, int64_t xs, int64_t n,
                      float *y, int64_t ys);

/* ---- vector ops (single thread; SIMD where it pays) ------------------- */

/* sum a[i]*b[i] in float32. */
float mk_dot_f32(const float *a, const float *b, int64_t n);
/* y = x / sqrt(mean(x^2) + eps) * g, with g = w or (1 + w) when
 * zero_centred (Qwen3-Next / Gemma style). w NULL means g = 1.
 * y may alias x. */
void mk_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps, bool zero_centred);
/* x = x * sigmoid(x), in place. */
void mk_silu(float *x, int64_t n);
/* y = silu(gate) * up (the SwiGLU MLP activation); y may alias gate or up. */
void mk_swiglu(float *y, const float *gate, const float *up, int64_t n);
/* x = 1 / (1 + exp(-x)), in place. */
void mk_sigmoid(float *x, int64_t n);
/* Numerically stable softmax in place (max subtracted). n >= 1. */
void mk_softmax(float *x, int64_t n);
/* lp[i] = log softmax(x)[i] in double precision (perplexity, KL divergence). */
void mk_log_softmax_f64(const float *x, int64_t n, double *lp);
/* y += x */
void mk_add(float *y, const float *x, int64_t n);
/* y *= s */
void mk_scale(float *y, float s, int64_t n);
/* y += a * x  (expert outputs, attention values): a multiply then an add,
 * the same floats on every kernel path */
void mk_axpy(float *y, float a, const float *x, int64_t n);
/* c[i*ldc + j] = sum_p a[i*lda + p] * b[p*ldb + j] for i < m, j < n (p < k
 * in order, one FMA chain per output; overwrites c): small float32 products
 * with both operands row-major, on the calling thread (Gated DeltaNet's
 * chunked prefill). c overlaps neither a nor b. */
void mk_gemm_f32(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b, int64_t ldb,
                 float *c, int64_t ldc);

/* ---- subnormal floats ---------------------------------------------------- */

/* Until mk_fp_restore(saved), this thread's float arithmetic treats
 * subnormal inputs as zero and flushes subnormal results to zero (x86:
 * MXCSR's DAZ and FTZ; AArch64: FPCR.FZ; elsewhere nothing changes). Why:
 * a Gated DeltaNet head that decays fast drives its decay factors and the
 * products with them below 2^-126, and every x86 instruction that meets a
 * subnormal takes a microcode assist of about a hundred cycles: on a
 * 35B-A3B-shaped prompt the chunked GDN ran several times slower than on
 * normal numbers. Values below 2^-126 next to state entries of order 1
 * change no result above that scale. The caller's mode comes back on
 * mk_fp_restore, so a library user's thread keeps its own. */
typedef struct mk_fpmode {
    uint64_t saved;
} mk_fpmode;
mk_fpmode mk_fp_flush_subnormals(void);
void mk_fp_restore(mk_fpmode m);

/* ---- attention of a block of query rows (prefill) ---------------------- */

#define MK_ATTN_ROWS 64  /* most query rows of one mk_attn_block */
#define MK_ATTN_MAXD 576 /* largest dk and dv it takes (MLA: 512 latent + 64 rope) */

/* Query rows that share one kv head's cache: row r (r < nr) is q[r] (dk
 * floats) and sees the keys lo[r] .. hi[r]-1 (lo < hi); key s is the row
 * p = s (idx NULL) or p = idx[s] (a selection, DSA) of k + p*ks and
 * v + p*vs; out[r] (dv floats) receives
 *   sum_s exp(x_s - m) v_s / (sum_s exp(x_s - m) [+ exp(sink[r] - m)]),
 *   x_s = scale * (q[r] . k_s), m the max of the x_s (and the sink).
 * Computed flash-style (backend.h's attention slot for chunks of tokens):
 * keys in chunks, a running max and sum per row, the rows in vector lanes;
 * float32 throughout, so it equals the softmax above within float
 * rounding (not bitwise the one-token path, which keeps two passes).
 * A row's floats depend on its own q, range and keys and on the smallest
 * lo of the block (where key chunks start), never on the other rows: with
 * every lo 0, a selection of all of a row's past is bitwise its dense
 * result. */
typedef struct mk_attn_blk {
    int nr, dk, dv;
    const float *q[MK_ATTN_ROWS];
    float *out[MK_ATTN_ROWS];
    int64_t lo[MK_ATTN_ROWS], hi[MK_ATTN_ROWS];
    float sink[MK_ATTN_ROWS]; /* read when sinks */
    bool sinks;
    const float *k, *v;
    int64_t ks, vs;
    const int32_t *idx; /* NULL, or the key rows of a selection */
    float scale;
} mk_attn_blk;
/* On the calling thread; about 80 KiB of stack. */
void mk_attn_block(const mk_attn_blk *a);

#ifdef __cplusplus
}
#endif
#endif
