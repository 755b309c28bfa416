/* llama.cpp's (ggml's) block quantization formats, bit-identical to its
 * reference quantizers `quantize_row_q8_0_ref` / `quantize_row_q4_0_ref`
 * (ggml/src/ggml-quants.c), which llama-quantize uses when no importance
 * matrix is given. Implemented from the format definition:
 *
 *   Q8_0  blocks of 32 values: f16 d, int8 qs[32] (34 bytes).
 *         d = amax / 127, q = roundf(x / d) (x * (1/d), ties away from 0).
 *   Q4_0  blocks of 32 values: f16 d, uint8 qs[16] (18 bytes); value j in
 *         the low nibble of qs[j], value j+16 in the high one.
 *         m = the value of largest magnitude (the first one on ties),
 *         d = m / -8, q = min(15, (int8)(x * (1/d) + 8.5)).
 * d is stored rounded to f16 (nearest even), but codes are computed from
 * the float32 d, as ggml does. Rows are whole numbers of blocks (the
 * caller checks cols % 32). A leaf: no I/O, no state. */
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
    MK_GGML_Q8_0 = 8,
    MK_GGML_BF16 = 30,
} mk_ggml_type;

#define MK_GGML_QK 32 /* values per Q8_0 / Q4_0 block */

/* "Q8_0", "F16", ...; NULL for a type this file does not know. */
const char *mk_ggml_type_name(mk_ggml_type t);
/* Bytes of a row of `cols` values of type t; 0 when t is unknown or cols
 * is not a whole number of its blocks. */
uint64_t mk_ggml_row_bytes(mk_ggml_type t, int64_t cols);
/* Is t one of the block-quantized types (Q8_0, Q4_0)? */
bool mk_ggml_is_quant(mk_ggml_type t);
/* Quantize `rows` rows of `cols` float32 values (cols % 32 == 0) into
 * `out` (rows * mk_ggml_row_bytes bytes) with ggml's reference quantizer of
 * t (Q8_0 or Q4_0). */
void mk_ggml_quantize(mk_ggml_type t, const float *x, int64_t rows, int64_t cols, void *out);

#ifdef __cplusplus
}
#endif
#endif
