/* Quantization library: MLX-compatible quantize and dequantize of row-major
 * matrices, bit-exact to MLX's CPU implementation.
 *
 * Modes (FORMATS.md section 2, mlx/backend/cpu/quantized.cpp and the
 * fp_quantize fallback in mlx/ops.cpp):
 *   affine  bits 2,3,4,5,6,8, group 32/64/128; scales and biases in the input
 *           dtype; per group a float32 min/max fit with the edge/rint rule.
 *   mxfp4   E2M1 codes, group 32, one E8M0 scale byte per group.
 *   mxfp8   E4M3 codes, group 32, one E8M0 scale byte per group.
 *   nvfp4   E2M1 codes, group 16, one E4M3 scale byte per group, optional
 *           float32 global scale.
 * A traits table (mk_quant_info) says what each mode allows.
 *
 * Layout of a quantized (rows, cols) matrix, groups running along a row:
 *   wq      (rows, cols*bits/32) uint32: each row is a little-endian,
 *           LSB-first bit stream, element j in bits [j*bits, (j+1)*bits);
 *           3/5/6-bit values straddle word boundaries.
 *   scales  (rows, cols/group): the input dtype (affine) or U8 (fp modes).
 *   biases  (rows, cols/group): the input dtype; affine only.
 *
 * Every call works on a caller-chosen range of whole rows and keeps no
 * state, so callers chunk huge tensors (one expert, or N rows, at a time)
 * and run chunks on several threads at once: row r of the input maps to
 * row r of each output, offsets from mk_quant_layout_of(). Input and output
 * pointers need no alignment (mmapped safetensors data rarely has it).
 *
 * Non-finite inputs are not rejected here (a scan per call would cost a
 * pass over memory the caller may already have made): a group containing
 * NaN or Inf gets some defined, unspecified output. Callers check with
 * mk_quant_count_nonfinite() first and refuse such tensors. */
#ifndef MOEKIT_QUANT_H
#define MOEKIT_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moekit/config.h"
#include "moekit/dtype.h"
#include "moekit/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a mode allows and produces. */
typedef struct mk_quant_traits {
    const char *name;       /* "affine", "mxfp4", "mxfp8", "nvfp4" */
    unsigned bits_mask;     /* bit b set when bits = b is allowed */
    unsigned group_mask;    /* bit k set when group = 2^k is allowed */
    const char *bits_list;  /* allowed bits for messages: "2,3,4,5,6,8" */
    const char *group_list; /* allowed group sizes for messages: "32,64,128" */
    int default_bits;       /* MLX's default when the caller gives none */
    int default_group;
    bool has_biases;      /* affine only */
    mk_dtype scale_dtype; /* MK_DT_INVALID: same as the input dtype; else U8 */
} mk_quant_traits;

/* Traits of `mode`; NULL when it is not a mk_qmode value. */
const mk_quant_traits *mk_quant_info(mk_qmode mode);

/* Parameters of one quantization. Build with mk_quant_params(). */
typedef struct mk_qparams {
    mk_qmode mode;
    int bits;           /* affine: 2..8 (not 7); mxfp4/nvfp4: 4; mxfp8: 8 */
    int group;          /* elements per scale: affine 32/64/128; mx*: 32; nvfp4: 16 */
    float global_scale; /* nvfp4 only: > 0 enables two-level scaling; 0: none */
} mk_qparams;
/* nvfp4 with a global scale gs follows MLX's recipe as far as it could be
 * read (enc = 448*6/gs; scale byte = E4M3(amax/6 * enc); elements divided
 * by E4M3(byte)/enc in float32). Unlike the rest of this library it has not
 * been checked against MLX's upstream source: treat its bytes as provisional. */

/* Fill *out for `mode`; bits or group 0 take the mode's default (affine
 * 4/64, mxfp4 4/32, mxfp8 8/32, nvfp4 4/16). MK_E_ARG for a combination the
 * mode does not allow, or a negative / non-finite global scale (or one given
 * to a mode other than nvfp4). */
mk_status mk_quant_params(mk_qmode mode, int bits, int group, float global_scale, mk_qparams *out);

/* Can a row of `cols` elements be quantized with mode/bits/group? MK_E_ARG
 * with a message naming `what` (a tensor name, or NULL) and the expected
 * values otherwise. cols <= 0 is refused. */
mk_status mk_quant_check(mk_qmode mode, int bits, int group, int64_t cols, const char *what);

/* uint32 words per packed row: cols * bits / 32 (cols must pass mk_quant_check). */
int64_t mk_quant_packed_cols(const mk_qparams *p, int64_t cols);

/* Per-row sizes of every array, for a row of `cols` elements of `in_dt`. */
typedef struct mk_quant_layout {
    int64_t wq_cols;        /* uint32 words per row */
    int64_t groups;         /* scales (and biases) per row */
    mk_dtype scale_dt;      /* dtype of scales and biases */
    size_t in_row_bytes;    /* bytes of one input row */
    size_t wq_row_bytes;    /* wq_cols * 4 */
    size_t scale_row_bytes; /* groups * size of scale_dt */
    size_t bias_row_bytes;  /* same as scales for affine; 0 for fp modes */
} mk_quant_layout;

/* MK_E_ARG when the parameters or cols do not pass mk_quant_check, or
 * in_dt is not F32, F16 or BF16. */
mk_status mk_quant_layout_of(const mk_qparams *p, mk_dtype in_dt, int64_t cols, mk_quant_layout *out);

/* Bytes of each output for a whole (rows, cols) matrix. Any out pointer may
 * be NULL. MK_E_ARG as mk_quant_layout_of, or when a size overflows. */
mk_status mk_quant_out_bytes(const mk_qparams *p, mk_dtype in_dt, int64_t rows, int64_t cols,
                             uint64_t *wq_bytes, uint64_t *scale_bytes, uint64_t *bias_bytes);

/* Quantize `rows` rows of `cols` elements of in_dt (F32, F16 or BF16) at
 * `in`. Writes rows * wq_row_bytes to wq, rows * scale_row_bytes to scales
 * and, for affine, rows * bias_row_bytes to biases (ignored, may be NULL,
 * for the fp modes). The output equals MLX's mx.quantize on the CPU byte
 * for byte. MK_E_ARG for bad parameters or NULL buffers; rows == 0 is a
 * no-op. Thread-safe on disjoint outputs. */
mk_status mk_quant_rows(const mk_qparams *p, mk_dtype in_dt, const void *in, int64_t rows, int64_t cols,
                        void *wq, void *scales, void *biases);

/* Dequantize `rows` rows back to `cols` elements of out_dt.
 * scale_dt is the dtype of scales and biases: F32/F16/BF16 for affine, U8
 * (also accepted: F8_E8M0 for mx*, F8_E4M3 for nvfp4) for the fp modes.
 * out_dt F32: computed in float32 (scale * q + bias, or value * scale), what
 *   a float32 engine sees.
 * out_dt F16/BF16: computed as MLX's mx.dequantize does, every product and
 *   sum rounded to the working type (the scale dtype for affine, out_dt for
 *   the fp modes), then converted to out_dt.
 * E4M3 bytes decode as MLX's CPU path does: 0x7f/0xff are +-480, not NaN. */
mk_status mk_dequant_rows(const mk_qparams *p, mk_dtype scale_dt, const void *wq, const void *scales,
                          const void *biases, int64_t rows, int64_t cols, mk_dtype out_dt, void *out);

/* Number of NaN and +-Inf values among n elements of dt (F32, F16, BF16,
 * F64) at data. MK_E_ARG for another dtype or NULL data with n > 0. */
mk_status mk_quant_count_nonfinite(mk_dtype dt, const void *data, uint64_t n, uint64_t *count);

/* Running sums for the relative error ||W - dequant(Q(W))|| / ||W|| of a
 * tensor quantized in chunks: zero one, accumulate every chunk into it (or
 * one per thread, then merge), read with mk_quant_err_rel(). */
typedef struct mk_quant_err {
    double err2;    /* sum of (w - dequant)^2, dequant computed in float32 */
    double ref2;    /* sum of w^2 */
    double max_abs; /* largest |w - dequant| */
    uint64_t n;     /* elements seen */
} mk_quant_err;

/* Add the rows of one chunk: `in` is the original (rows, cols) in in_dt,
 * wq/scales/biases its quantized form as mk_quant_rows wrote it. */
mk_status mk_quant_err_rows(const mk_qparams *p, mk_dtype in_dt, const void *in, const void *wq,
                            const void *scales, const void *biases, int64_t rows, int64_t cols,
                            mk_quant_err *acc);
void mk_quant_err_merge(mk_quant_err *into, const mk_quant_err *from);
/* sqrt(err2 / ref2); 0 when both are 0, +Inf when only ref2 is. */
double mk_quant_err_rel(const mk_quant_err *acc);

#ifdef __cplusplus
}
#endif
#endif
