/* Internal: tensor names of every checkpoint layout moekit reads, mapped to
 * one canonical description. The single place that knows the names; used by
 * inspect (what a checkpoint holds), convert/quantize/profile (what becomes
 * what) and the model loader (where the text model lives).
 *
 * Canonical form = the HF text-model names (`model.layers.L...`,
 * `model.embed_tokens.weight`, `lm_head.weight`), `mtp.*` for
 * multi-token-prediction weights and the vision tower's own names. Sources
 * reach it through the prefix table (vision-language wrappers, MLX's
 * `language_model.` nesting), companions of quantized modules through
 * format's storage-suffix table (mk_qview_suffix, via mk_layout_role),
 * experts through mk_layout_expert. Targets leave it through
 * mk_layout_out_name. Strings returned as `char *` are
 * malloc'd (NULL when out of memory). */
#ifndef MK_MODEL_LAYOUT_H
#define MK_MODEL_LAYOUT_H

#include <stdbool.h>

#include "moekit/qview.h"

/* Which part of the checkpoint a tensor belongs to. */
typedef enum mk_part {
    MK_PART_LM = 0, /* the language model */
    MK_PART_VISION, /* vision tower: copied, never transformed */
    MK_PART_MTP,    /* multi-token-prediction weights */
} mk_part;

/* Role of tensor `name` (the suffix table is format's, mk_qview_suffix);
 * *base (malloc'd) is the module's logical name (the name itself for
 * MK_QR_MAIN). *suffix, when not NULL, gets the matched suffix without its
 * leading '.' or '_' ("" for MK_QR_MAIN). */
mk_qrole mk_layout_role(const char *name, char **base, const char **suffix);

/* Canonical text name and part of a source name. `num_layers` > 0 marks
 * DeepSeek's `model.layers.N` (N >= num_layers) as MTP. *vl_prefix tells
 * whether the name's prefix marks a vision-language wrapper. */
char *mk_layout_canon(const char *name, int num_layers, mk_part *part, bool *vl_prefix);

/* Prefixes under which checkpoints keep the text model (the part before
 * `.embed_tokens`, `.layers.N`, `.norm`), most specific first, NULL-ended. */
extern const char *const mk_layout_lm_prefixes[];

/* Routed-expert forms of a canonical name. */
typedef enum mk_eform {
    MK_EF_NONE = 0,
    MK_EF_PER_EXPERT,   /* <mlp>.experts.<e>.<proj>.weight */
    MK_EF_FUSED_GATE_UP, /* <mlp>.experts.gate_up_proj (E, 2I, H) */
    MK_EF_FUSED_DOWN,   /* <mlp>.experts.down_proj (E, H, I) */
    MK_EF_STACKED,      /* MLX <mlp>.switch_mlp.<proj>.weight (E, ., .) */
} mk_eform;

enum { MK_PROJ_GATE = 0, MK_PROJ_UP = 1, MK_PROJ_DOWN = 2 };
extern const char *const mk_layout_proj_names[3]; /* gate_proj, up_proj, down_proj */

/* Parses the forms above, for every family's MoE block (`mlp`, and
 * minimax_m2's `block_sparse_moe` whose per-expert projections are
 * w1/w3/w2). *mlp (malloc'd) is the block's prefix through its name;
 * *expert is the index (-2 for one that is not a plain number, -1 for
 * stacked/fused forms); *proj is MK_PROJ_* (-1 for fused gate_up). */
mk_eform mk_layout_expert(const char *cname, char **mlp, int *expert, int *proj);
/* The per-expert projection name (gate_proj... or w1/w3/w2) of block `mlp`
 * (a prefix as mk_layout_expert gives it). */
const char *mk_layout_expert_proj(const char *mlp, int proj);

/* Naming scheme of a written checkpoint (a convert target's naming,
 * src/convert/target.c; the profile's module paths are MLX's). */
typedef enum mk_naming {
    MK_NAMING_HF = 0,  /* canonical names; VL wrappers under model.language_model */
    MK_NAMING_MLX = 1, /* mlx-lm's names: qwen3_5_moe under language_model. */
} mk_naming;

/* Output name of canonical `cname` of part `part` under `naming`: MLX with
 * `qwen35` (the family is qwen3_5_moe) nests it under language_model.
 * (mlx-lm's qwen3_5_moe sanitize); HF with `hf_vl` (a vision-language
 * checkpoint) nests the text model under model.language_model. Each flag
 * matters only to its own scheme. */
char *mk_layout_out_name(mk_naming naming, bool qwen35, bool hf_vl, mk_part part, const char *cname);

/* Zero-centred norm weights that MLX stores as 1 + w (FORMATS.md 3). */
bool mk_layout_is_shifted_norm(const char *cname, int ndim);
/* Tensors whose stored dtype is never changed (mlx-lm cast predicates). */
bool mk_layout_keeps_dtype(const char *cname);

/* One tensor name taken apart, for per-layer bookkeeping (inspect). */
typedef enum mk_xform {
    MK_XF_NONE = 0,
    MK_XF_PER_EXPERT, /* mlp.experts.{e}.{gate,up,down}_proj */
    MK_XF_FUSED,      /* mlp.experts.gate_up_proj / down_proj (E, ., .) */
    MK_XF_SWITCH,     /* MLX mlp.switch_mlp.{gate,up,down}_proj (E, ., .) */
} mk_xform;

typedef struct mk_lname {
    mk_part part;
    int layer;        /* -1 for tensors outside `layers.N` */
    int expert;       /* per-expert index, else -1 */
    mk_xform xform;
    char module[256]; /* path within the layer (or the model), storage suffix and expert index
                         removed: "self_attn.q_proj", "mlp.experts.gate_proj", "embed_tokens",
                         "lm_head", "linear_attn.A_log" */
    char storage[32]; /* "weight", "bias", "scales", "biases", "weight_scale_inv", "scale_inv",
                         "weight_packed", ... or "" */
} mk_lname;

/* Parses `name` (no DeepSeek MTP-layer marking: layer is the number as
 * written). Never fails; unknown names come back as LM modules. */
void mk_layout_parse(const char *name, mk_lname *out);

#endif
