/* Convert targets: one descriptor per output layout `convert --to` writes,
 * so that planning (plan.c), execution (exec.c), the config step
 * (cfgout.c), quantization (quant_plan.c) and cross-layout verify
 * (src/verify/xverify.c) ask the target what to do instead of testing
 * "is it MLX?" each on their own.
 *
 * A descriptor says:
 *   naming       the tensor naming scheme (src/model/layout.c)
 *   experts      how routed experts are grouped: one tensor per expert and
 *                projection, fused HF gate_up_proj / down_proj, or stacked
 *                into switch_mlp (E, out, in); `experts_choice`: the
 *                options pick per-expert or fused (HF)
 *   norms        the zero-centred norm convention (qwen3_next /
 *                qwen3_5_moe: transformers stores w and computes (1 + w),
 *                mlx-lm stores 1 + w; FORMATS.md 3): cv_norm_shift
 *   conv1d       the conv1d weight shape, (C, 1, K) or (C, K, 1) (same bytes)
 *   text_only    the vision tower and MTP layers are dropped unless asked
 *                for, and so are rotary inv_freq buffers and a tied lm_head
 *   keeps_quantized  quantized sources stay quantized (MLX affine copied,
 *                compressed-tensors INT4 repacked); otherwise dequantized
 *   quantizes    `moekit quantize` may write it
 *   writer       the file format (writer.h: tensor order and alignment,
 *                shard names, index) and `format_tag`, its flavour
 *   config_edit  the target's edit of config.json (cfgout.c); NULL: no
 *                config.json or side files (GGUF holds its metadata)
 *   single_file  DST is one file (the writer's only shard) instead of a
 *                directory: GGUF
 *   gguf         names and tensor types are llama.cpp's (gguf.h), and the
 *                key/value section is built at planning
 * The table is target.c. */
#ifndef MK_CONVERT_TARGET_H
#define MK_CONVERT_TARGET_H

#include <stdbool.h>

#include "convert/conv_impl.h"
#include "convert/writer.h"
#include "model/layout.h"

typedef enum cv_xgroup {
    CV_XG_PER_EXPERT = 0, /* <mlp>.experts.<e>.<proj>.weight */
    CV_XG_FUSED,          /* <mlp>.experts.gate_up_proj (E, 2I, H) = [gate_e; up_e], down_proj (E, H, I) */
    CV_XG_SWITCH,         /* <mlp>.switch_mlp.<proj>.weight (E, out, in) */
} cv_xgroup;

typedef enum cv_norms {
    CV_NORMS_W = 0, /* zero-centred norms stored as w (transformers) */
    CV_NORMS_1PW,   /* stored as 1 + w (mlx-lm's sanitize) */
} cv_norms;

typedef enum cv_conv1d {
    CV_CONV1D_C1K = 0, /* (C, 1, K): torch */
    CV_CONV1D_CK1,     /* (C, K, 1): MLX */
} cv_conv1d;

typedef struct cv_target {
    mk_conv_target id;
    const char *name; /* the --to word */
    mk_naming naming;
    cv_xgroup experts;
    bool experts_choice;
    cv_norms norms;
    cv_conv1d conv1d;
    bool text_only;
    bool keeps_quantized;
    bool quantizes;
    const cv_writer_ops *writer;
    const char *format_tag;
    /* Edit the source's config.json (root, and tc: its text_config or root
     * itself; jansson json_t *) for plan p's output. */
    mk_status (*config_edit)(const cv_src *s, const cv_plan *p, void *root, void *tc);
    bool single_file;
    bool gguf;
} cv_target;

/* The descriptor of target id; NULL when there is none. */
const cv_target *cv_target_of(mk_conv_target id);
/* Expert grouping of target t under options o. */
cv_xgroup cv_target_experts(const cv_target *t, const mk_conv_opts *o);

/* Norm convention a source is stored in. */
cv_norms cv_src_norms(const cv_src *s);
/* Shift of lt's values written from source s into convention `to`: +1 / -1
 * on the zero-centred norms of qwen3_next / qwen3_5_moe when the
 * conventions differ, else 0 (vision towers never). */
float cv_norm_shift(const cv_src *s, const cv_lt *lt, cv_norms to);

/* cfgout.c: the config_edit of each target. */
mk_status cv_config_edit_hf(const cv_src *s, const cv_plan *p, void *root, void *tc);
mk_status cv_config_edit_mlx(const cv_src *s, const cv_plan *p, void *root, void *tc);

#endif
