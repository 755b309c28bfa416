/* Logical tensors of a checkpoint, whatever their storage.
 *
 * A quantized module is stored as several tensors (MLX: W.weight/.scales/
 * .biases; FP8: W.weight + W.weight_scale_inv; compressed-tensors:
 * W.weight_packed/.weight_scale/.weight_shape/.weight_zero_point). A qview
 * is the stored module of a logical tensor (module.h, mk_smod_infer: parts,
 * logical shape, checks) read row by row as float32, so verify, convert and quantize can treat every
 * format alike with memory bounded by one row. Bits come from the config
 * entry AND must agree with the packed shape; a disagreement is
 * MK_E_MISMATCH, never a guess. */
#ifndef MOEKIT_QVIEW_H
#define MOEKIT_QVIEW_H

#include <stdbool.h>
#include <stdint.h>

#include "moekit/config.h"
#include "moekit/module.h"
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
    mk_wt wt;           /* describes one 2-D slice (for stacked experts: the first) */
    mk_smod sm;         /* the stored module (format/module.c): parts, checks, byte ranges */
} mk_qview;

/* Companion suffixes (mk_qrole, mk_qview_suffix): module.h. */

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
