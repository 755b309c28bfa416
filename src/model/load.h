/* Internal: the loader context shared by model.c (which tensors a family
 * needs) and linear.c (how one linear module is stored).
 *
 * Module paths are full checkpoint names without ".weight", e.g.
 * "model.language_model.layers.3.self_attn.q_proj"; the same string is the
 * key of MLX per-module quantization entries. */
#ifndef MK_MODEL_LOAD_H
#define MK_MODEL_LOAD_H

#include <stdbool.h>
#include <stdint.h>

#include "model/model_impl.h"

typedef struct mk_ld {
    mk_model *m;
    const mk_ckpt *ck;
    const mk_config *cfg;
    char pfx[48];    /* text-model prefix: "model", "model.language_model", "language_model.model" */
    char head[64];   /* lm_head weight name */
    bool norm_plus1; /* zero-centred family stored raw (HF): gains get +1 at load */
    bool fp8_to_bf16; /* materialise FP8 weights as bf16 (mk_model_opts) */
    bool check_only;  /* mk_model_check: headers only, no data read, no copies made */
    bool stream;      /* stream_experts: expert views are never read through the mapping */
    mk_wloc *loc;     /* set while a routed expert's projection loads: its location goes here */
    mk_wloc loc_scratch; /* loc of resident experts (not kept) */
    /* what was seen, for mk_model_layout */
    bool seen_fp8, seen_affine, seen_int4, seen_mx;
} mk_ld;

/* Find a tensor by printf-formatted name; NULL when absent. */
const mk_tensor_info *mk_ld_find(const mk_ld *ld, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The 2-D linear module `mod` as a view of logical shape [rows, cols]:
 * float (F32/BF16/F16), FP8 block (weight_scale_inv), MLX quantized
 * (scales/biases, bits from the config checked against the packed width)
 * or compressed-tensors INT4 (weight_packed/weight_scale). */
mk_status mk_ld_linear(mk_ld *ld, const char *mod, int64_t rows, int64_t cols, mk_wt *out);

/* Rows [row0, row0+rows) of expert e in a stacked tensor `wname` of shape
 * (E, R, cols or packed cols): MLX switch_mlp stacks (scales under
 * `mod`.scales) and HF fused experts. `mod` is the module path (quantization
 * lookup, scale names); for HF fused tensors it equals wname. */
mk_status mk_ld_stacked(mk_ld *ld, const char *mod, const char *wname, int64_t E, int64_t e,
                        int64_t R, int64_t row0, int64_t rows, int64_t cols, mk_wt *out);

/* Float32 copy (model-owned) of tensor `name`, which must hold n elements.
 * With check_only, the element count is checked and *out is NULL. */
mk_status mk_ld_vec(mk_ld *ld, const char *name, int64_t n, float **out);

/* gpt_oss's MoE block (experts_oss.c): router with bias, routed experts
 * in any of its layouts (HF MXFP4 *_blocks / *_scales, transformers'
 * float [E, in, out], MLX experts.{gate,up,down}_proj stacks) and their
 * biases. *kind names the layout for mk_model_layout. */
mk_status mk_ld_oss_moe(mk_ld *ld, const char *p, int layer, mk_moe_w *moe, const char **kind);

#endif
