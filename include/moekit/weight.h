/* A view of one 2-D weight matrix in any storage format moekit computes
 * with, and the kernels that use it.
 *
 * mk_wt is a non-owning description: pointers point into mmapped
 * checkpoints or into buffers owned by someone else (the expert store, a
 * converter). Logical shape is (rows = out features, cols = in features),
 * row-major; `y = W x` means y[r] = sum_c W[r,c] x[c].
 *
 * Formats (FORMATS.md):
 *   F32/BF16/F16     data: rows x cols elements
 *   FP8_E4M3/E5M2    data: rows x cols bytes; scales: block scale_inv grid
 *                    (ceil(rows/block_r), ceil(cols/block_c)) in sdtype
 *                    (F32/BF16/F16); W = fp8 * scale_inv[r/block_r, c/block_c]
 *   AFFINE           data: rows x (cols*bits/32) u32 words, LSB-first bit
 *                    stream per row; scales, biases: rows x (cols/group) in
 *                    sdtype; W = scale*q + bias  (bits 2,3,4,5,6,8)
 *   MXFP4 / MXFP8    data: rows x cols*bits/8 bytes (E2M1 nibbles LSB-first
 *                    / E4M3 bytes); scales: rows x cols/32 E8M0 bytes
 *   NVFP4            data: E2M1 nibbles; scales: rows x cols/16 E4M3 bytes;
 *                    global_scale multiplies (1.0 when absent)
 * Kernels accumulate in float32. */
#ifndef MOEKIT_WEIGHT_H
#define MOEKIT_WEIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moekit/dtype.h"
#include "moekit/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mk_wfmt {
    MK_WF_F32 = 0,
    MK_WF_BF16,
    MK_WF_F16,
    MK_WF_FP8_E4M3,
    MK_WF_FP8_E5M2,
    MK_WF_AFFINE,
    MK_WF_MXFP4,
    MK_WF_MXFP8,
    MK_WF_NVFP4,
    MK_WF_COUNT
} mk_wfmt;

typedef struct mk_wt {
    mk_wfmt fmt;
    int64_t rows, cols;   /* logical (out, in) */
    const void *data;
    const void *scales;   /* see format table above; NULL for plain floats */
    const void *biases;   /* AFFINE only */
    mk_dtype sdtype;      /* dtype of scales/biases (AFFINE, FP8 block) */
    int bits, group;      /* AFFINE / MX / NV */
    int block_r, block_c; /* FP8 block size (128,128 typically) */
    float global_scale;   /* NVFP4 (1.0 when absent) */
} mk_wt;

/* One routed expert: SwiGLU MLP down(silu(gate(x)) * up(x)). */
typedef struct mk_expert {
    mk_wt gate; /* [I, H] */
    mk_wt up;   /* [I, H] */
    mk_wt down; /* [H, I] */
} mk_expert;

/* Bytes of one packed row of data (rows are contiguous). */
size_t mk_wt_row_bytes(const mk_wt *w);
/* Bytes of the scales array (affine: also of the biases array, the same
 * size), 0 for a view without scales. Copies of a view take rows *
 * row_bytes + scale_bytes (+ scale_bytes of biases). */
size_t mk_wt_scale_bytes(const mk_wt *w);
/* Check internal consistency (bits/group legal, cols divisible). */
mk_status mk_wt_check(const mk_wt *w, const char *what);
/* Dequantize row r into out[cols] (float32). Portable reference. */
void mk_wt_dequant_row(const mk_wt *w, int64_t r, float *out);

#ifdef __cplusplus
}
#endif
#endif
