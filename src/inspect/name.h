/* Classification of checkpoint tensor names across layouts (HF, HF fused,
 * vision-language wrappers, MLX): which part of the model a tensor belongs
 * to, its layer, its expert, and the module it stores. */
#ifndef MK_INSPECT_NAME_H
#define MK_INSPECT_NAME_H

typedef enum mk_part { MK_PART_LM = 0, MK_PART_VISION, MK_PART_MTP } mk_part;

typedef enum mk_xform {
    MK_XF_NONE = 0,
    MK_XF_PER_EXPERT, /* mlp.experts.{e}.{gate,up,down}_proj */
    MK_XF_FUSED,      /* mlp.experts.gate_up_proj / down_proj (E, ., .) */
    MK_XF_SWITCH,     /* MLX mlp.switch_mlp.{gate,up,down}_proj (E, ., .) */
} mk_xform;

typedef struct mk_tname {
    mk_part part;
    int layer;           /* -1 for global tensors */
    int expert;          /* per-expert index, else -1 */
    mk_xform xform;
    char module[256];    /* module path within the layer (or global), storage suffix removed,
                            expert index removed: e.g. "self_attn.q_proj", "mlp.experts.gate_proj",
                            "embed_tokens", "lm_head", "linear_attn.A_log" */
    char storage[32];    /* "weight", "scales", "biases", "weight_scale_inv", "weight_packed", ... or "" */
} mk_tname;

void mk_tname_parse(const char *name, mk_tname *out);

#endif
