/* llama.cpp's (ggml's) block quantization formats, bit-identical to its
 * reference quantizers `quantize_row_*_ref` (ggml/src/ggml-quants.c),
 * which llama-quantize uses when no importance matrix is given.
 * Implemented from the format definition:
 *
 *   Q8_0  blocks of 32 values: f16 d, int8 qs[32] (34 bytes).
 *         d = amax / 127, q = roundf(x / d) (x * (1/d), ties away from 0).
 *   Q4_0  blocks of 32 values: f16 d, uint8 qs[16] (18 bytes); value j in
 *         the low nibble of qs[j], value j+16 in the high one.
 *         m = the value of largest magnitude (the first one on ties),
 *         d = m / -8, q = min(15, (int8)(x * (1/d) + 8.5)).
 *   Q5_0  blocks of 32: f16 d, u32 qh (bit j = 5th bit of value j), uint8
 *         qs[16] as Q4_0 (22 bytes). d = m / -16,
 *         q = min(31, (int8)(x * (1/d) + 16.5)).
 *   Q5_1  blocks of 32: f16 d, f16 min, u32 qh, qs[16] (24 bytes).
 *         d = (max - min) / 31, q = (uint8)((x - min) * (1/d) + 0.5).
 *   Q4_K, Q5_K, Q6_K  super-blocks of 256 (src/quant/ggml_kquant.c says
 *         how): 144, 176 and 210 bytes.
 * d is stored rounded to f16 (nearest even), but codes are computed from
 * the float32 d, as ggml does (K-quants: from the f16-rounded scales, as
 * ggml does). Rows are whole numbers of blocks (the caller checks
 * mk_ggml_row_bytes). A leaf: no I/O, no state. */
#ifndef MOEKIT_GGML_QUANT_H
#define MOEKIT_GGML_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ggml_type values as GGUF stores them (ggml.h). */
typedef enum mk_ggml_type {
    MK_GGML_F32 = 0,
    MK_GGML_F16 = 1,
    MK_GGML_Q4_0 = 2,
    MK_GGML_Q5_0 = 6,
    MK_GGML_Q5_1 = 7,
    MK_GGML_Q8_0 = 8,
    MK_GGML_Q4_K = 12,
    MK_GGML_Q5_K = 13,
    MK_GGML_Q6_K = 14,
    MK_GGML_BF16 = 30,
} mk_ggml_type;

#define MK_GGML_QK 32   /* values per Q8_0 / Q4_0 / Q5_0 / Q5_1 block */
#define MK_GGML_QK_K 256 /* values per K-quant super-block */

/* "Q8_0", "F16", ...; NULL for a type this file does not know. */
const char *mk_ggml_type_name(mk_ggml_type t);
/* Bytes of a row of `cols` values of type t; 0 when t is unknown or cols
 * is not a whole number of its blocks. */
uint64_t mk_ggml_row_bytes(mk_ggml_type t, int64_t cols);
/* Is t one of the block-quantized types (Q8_0, Q4_0, Q5_0, Q5_1, Q4_K,
 * Q5_K, Q6_K)? */
bool mk_ggml_is_quant(mk_ggml_type t);
/* Values per block of t (1 for F32 / F16 / BF16, 0 when unknown). */
int mk_ggml_block_size(mk_ggml_type t);
/* Quantize `rows` rows of `cols` float32 values (cols a multiple of t's
 * block size) into `out` (rows * mk_ggml_row_bytes bytes) with ggml's
 * reference quantizer of t (a block-quantized type). */
void mk_ggml_quantize(mk_ggml_type t, const float *x, int64_t rows, int64_t cols, void *out);
/* The K-quant reference quantizers (ggml_kquant.c): n values (n % 256 ==
 * 0) into n / 256 super-blocks. */
void mk_ggml_quantize_q4_k(const float *x, unsigned char *y, int64_t n);
void mk_ggml_quantize_q5_k(const float *x, unsigned char *y, int64_t n);
void mk_ggml_quantize_q6_k(const float *x, unsigned char *y, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
