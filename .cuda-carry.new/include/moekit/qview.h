/* Logical tensors of a checkpoint, whatever their storage.
 *
 * A quantized module is stored as several tensors (MLX: W.weight/.scales/
 * .biases; FP8: W.weight + W.weight_scale_inv; compressed-tensors:
 * W.weight_packed/.weight_scale/.weight_shape/.weight_zero_point). A qview
 * groups them back into one logical tensor with its logical shape and reads
 * it row by row as float32, so verify, convert and quantize can treat every
 * format alike with memory bounded by one row. Bits come from the config
 * entry AND must agree with the packed shape; a disagreement is
 * MK_E_MISMATCH, never a guess. */
#ifndef MOEKIT_QVIEW_H
#define MOEKIT_QVIEW_H

#include <stdbool.h>
#include <stdint.h>

#include "moekit/config.h"
#include "moekit/st.h"
#include "moekit/weight.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mk_qkind {
    MK_QK_PLAIN = 0, /* one tensor, float or integer */
    MK_QK_MLX,       /* weight + scales (+ biases) */
    MK_QK_FP8,       /* weight + weight_scale_inv */
    MK_QK_CT,        /* weight_packed + weight_scale (+ zero point) */
} mk_qkind;

typedef struct mk_qview {
    const char *name;   /* logical name (the .weight name, or the plain name) */
    mk_qkind kind;
    int ndim;
    int64_t shape[MK_MAX_DIMS]; /* logical shape */
    int64_t rows, cols;         /* rows = product of leading dims, cols = last dim */
    const mk_tensor_info *parts[4]; /* weight, scales, biases / zero point, shape */
    mk_wt wt;           /* describes one 2-D slice (for stacked experts: the first) */
    int64_t slice_rows; /* rows per 2-D slice (rows of wt) */
    float *ct_biases;   /* owned: biases built for compressed-tensors */
} mk_qview;

/* Role of a stored tensor inside its quantized module, from its name's
 * suffix (FORMATS.md sections 2-4). The one table of these suffixes. */
typedef enum mk_qrole {
    MK_QR_MAIN = 0,   /* no companion suffix: the module's own tensor */
    MK_QR_FP8_SCALE,  /* X.weight_scale_inv (of X.weight); fused FP8: X_scale_inv (of X) */
    MK_QR_CT_PACKED,  /* X.weight_packed: compressed-tensors' stored X.weight */
    MK_QR_CT_SCALE,   /* X.weight_scale */
    MK_QR_CT_ZP,      /* X.weight_zero_point */
    MK_QR_CT_SHAPE,   /* X.weight_shape */
    MK_QR_CT_GIDX,    /* X.weight_g_idx */
    MK_QR_MLX_SCALES, /* X.scales (of X.weight, or of X for non-.weight MLX tensors) */
    MK_QR_MLX_BIASES, /* X.biases */
    MK_QR_DROP,       /* X.activation_scale / X.input_scale: activation quantization, not weights */
} mk_qrole;

typedef struct mk_qsuffix {
    mk_qrole role;
    const char *suffix;  /* as it ends the name: ".scales", "_scale_inv", ... ("" for MAIN) */
    const char *logical; /* what replaces it in the module's logical name (".weight" or "") */
    const char *owner;   /* suffix of the stored tensor it accompanies (".weight",
                            ".weight_packed", ""), NULL when it accompanies none */
    size_t stem;         /* length of the name before the suffix */
} mk_qsuffix;

/* Role of tensor `name` by its suffix (longest match; a suffix alone is no
 * companion of anything). */
mk_qrole mk_qview_suffix(const char *name, mk_qsuffix *out);

/* Is `name` a companion tensor (scales/biases/scale_inv/...) of another
 * tensor in the checkpoint, i.e. not a logical tensor of its own? */
bool mk_qview_is_companion(const mk_ckpt *c, const char *name);
/* Build the view of logical tensor `name` (cfg may be NULL for plain files). */
mk_status mk_qview_open(const mk_ckpt *c, const mk_config *cfg, const char *name, mk_qview *v);
void mk_qview_close(mk_qview *v);
/* Read logical row r (0 <= r < rows) as float32 into out[cols]. */
mk_status mk_qview_row(const mk_ckpt *c, const mk_qview *v, int64_t r, float *out);

#ifdef __cplusplus
}
#endif
#endif
