/* Model and quantization configuration, read from config.json.
 *
 * One struct describes the text model of every supported family. Field
 * names follow the Hugging Face configs; where released checkpoints and
 * transformers 5.x disagree (num_experts vs num_local_experts, rope_theta
 * vs rope_parameters, text_config nesting) the reader accepts both and the
 * struct holds the resolved value. Quantization is described per module:
 * mk_qcfg_lookup() answers "how is module P stored", and callers must check
 * the answer against the packed tensor shape (FORMATS.md section 2). */
#ifndef MOEKIT_CONFIG_H
#define MOEKIT_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "moekit/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mk_arch {
    MK_ARCH_UNKNOWN = 0,
    MK_ARCH_QWEN3_MOE,
    MK_ARCH_QWEN3_NEXT,
    MK_ARCH_QWEN3_5_MOE,
    MK_ARCH_DEEPSEEK_V3, /* kimi_k2 maps here */
    MK_ARCH_GLM4_MOE,    /* GLM-4.5/4.6/4.7: GQA + partial RoPE + biases, deepseek routing */
    MK_ARCH_MINIMAX_M2,  /* MiniMax-M2.x: GQA + whole-projection q/k norm, sigmoid routing */
    MK_ARCH_GPT_OSS,     /* gpt-oss: GQA + sinks, sliding/full layers, biases, clamped SwiGLU */
} mk_arch;

const char *mk_arch_name(mk_arch a);
/* Comma-separated list of supported model_type strings, for error messages. */
const char *mk_arch_supported(void);

/* The lightning indexer's RoPE on its first qk_rope_head_dim dims (config.dsa). */
enum { MK_DSA_NONE = 0, MK_DSA_HALF = 1, MK_DSA_INTERLEAVED = 2 };

typedef enum mk_qmethod {
    MK_QM_NONE = 0,
    MK_QM_MLX,  /* "quantization" block: affine / mxfp4 / mxfp8 / nvfp4 per module */
    MK_QM_FP8,  /* quant_method fp8, block scales weight_scale_inv */
    MK_QM_CT,   /* compressed-tensors pack-quantized INT */
    MK_QM_HF_MXFP4, /* quant_method mxfp4 (gpt-oss): experts as *_blocks / *_scales */
} mk_qmethod;

typedef enum mk_qmode {
    MK_QMODE_AFFINE = 0,
    MK_QMODE_MXFP4,
    MK_QMODE_MXFP8,
    MK_QMODE_NVFP4,
} mk_qmode;

const char *mk_qmode_name(mk_qmode m);
bool mk_qmode_parse(const char *s, mk_qmode *out);

typedef struct mk_qentry {
    char *path;      /* module path, e.g. "model.layers.0.mlp.gate" */
    bool quantized;  /* false when the config says `"path": false` */
    int bits;
    int group_size;
    mk_qmode mode;
} mk_qentry;

typedef struct mk_qcfg {
    mk_qmethod method;
    /* MLX defaults and per-module entries */
    int bits, group_size;
    mk_qmode mode;
    mk_qentry *entries;
    int n_entries;
    int *entry_slots;     /* hash index of entries by path (-1 empty); NULL: lookups scan */
    int n_entry_slots;    /* power of two */
    /* FP8 */
    char fp8_fmt[16];     /* "e4m3" or "e5m2" */
    int block[2];         /* weight_block_size, e.g. 128,128 */
    char act_scheme[16];  /* "dynamic" / "static" */
    /* compressed-tensors */
    char ct_format[32];   /* "pack-quantized" */
    int ct_bits, ct_group_size;
    bool ct_symmetric;
    char ct_strategy[16];
    char ct_type[16];     /* "int" (default) or "float" */
    bool ct_dynamic;      /* weights quantized on the fly: not a stored format */
    int ct_n_groups;      /* config_groups entries (only the first is read) */
    char **ct_ignore;     /* module names or "re:" patterns */
    int n_ct_ignore;
} mk_qcfg;

typedef struct mk_rope {
    double theta;
    char type[24];             /* default, yarn, linear, dynamic, ... */
    double factor;             /* scaling factor (1 when none) */
    double orig_max_pos;       /* original_max_position_embeddings */
    double beta_fast, beta_slow;
    double mscale, mscale_all_dim;
    double attention_factor;   /* <0: not given */
    double partial_rotary_factor; /* 1.0 when absent */
    bool truncate;             /* yarn: floor/ceil the correction range (true when absent) */
} mk_rope;

typedef struct mk_config {
    char model_type[64];      /* top-level model_type */
    char text_model_type[64]; /* model_type of text_config, or top-level */
    char architecture[96];    /* architectures[0] */
    mk_arch arch;
    bool has_text_config;     /* vision-language wrapper */
    bool has_vision;          /* vision_config present */

    int vocab_size, hidden_size, num_layers;
    int num_heads, num_kv_heads, head_dim;
    int intermediate_size;        /* dense MLP */
    int moe_intermediate_size;    /* routed expert */
    int shared_intermediate_size; /* shared expert(s) total (0: none) */
    int num_experts, num_experts_per_tok;
    char experts_key[20];         /* which key gave num_experts (for messages) */
    bool norm_topk_prob;
    int decoder_sparse_step;
    int *mlp_only_layers;
    int n_mlp_only_layers;
    double rms_norm_eps;
    int max_position_embeddings;
    bool tie_word_embeddings;
    mk_rope rope;
    char dtype[16];               /* torch dtype string: bfloat16, float16, float32 */

    /* Hybrid (qwen3_next, qwen3_5_moe): layer_is_full[i] != 0 for full attention */
    unsigned char *layer_is_full;
    int conv_kernel;
    int lin_num_k_heads, lin_num_v_heads, lin_k_head_dim, lin_v_head_dim;

    /* DeepSeek-V3 MLA and routing */
    int q_lora_rank;   /* 0: no q compression (q_proj) */
    int kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim;
    int n_group, topk_group, first_k_dense_replace, n_shared_experts;
    double routed_scaling_factor;
    bool rope_interleave;
    char scoring_func[16];
    char topk_method[24];
    bool has_mlp_layer_types; /* glm4_moe_lite: its dense layers are in mlp_only_layers */
    int rotary_dim;    /* minimax_m2 as released: rotated dims (0 when absent); see partial_rotary_factor */
    bool use_qk_norm;  /* glm4_moe: per-head q/k RMSNorm (false when absent) */

    /* gpt_oss: sliding-window layers (layer_types "sliding_attention"),
     * attention sinks, biases everywhere, clamped SwiGLU experts */
    int sliding_window;            /* keys a sliding layer sees, itself included (0: none) */
    unsigned char *layer_is_sliding; /* [num_layers] or NULL (no sliding layer) */
    double swiglu_limit, swiglu_alpha; /* 7.0 / 1.702 when absent (gpt_oss only) */
    /* DeepSeek sparse attention (deepseek_v32, glm_moe_dsa, read as
     * deepseek_v3): a lightning indexer picks the index_topk past positions
     * each query attends to (ARCHITECTURES.md). dsa is the family's trait
     * from the model_type table: 0 no indexer (its keys are refused), else
     * the indexer's own RoPE layout. */
    int dsa;                     /* 0, MK_DSA_HALF or MK_DSA_INTERLEAVED */
    int index_topk;              /* positions per query (0 when absent) */
    int index_n_heads, index_head_dim;
    unsigned char *index_shared; /* [L] glm_moe_dsa indexer_types: 1 = "shared" (reuses the
                                    previous layer's selection); NULL: every layer "full" */
    int bad_indexer_type;        /* first indexer_types entry neither full nor shared, -1: none */
    char index_key[24];          /* first indexer key present that the family does not read (refused), "" none */

    /* Fields read only to refuse what the engine does not implement
     * (mk_config_check; docs/CONFIG_KEYS.md lists every key). */
    char hidden_act[24];          /* "silu" when absent */
    bool attention_bias, mlp_bias;
    bool use_sliding_window;
    int n_layer_types;            /* entries of layer_types; -1 when absent */
    int bad_layer_type;           /* index of the first unknown layer_types entry, -1: none */
    char bad_layer_type_name[32];
    int full_attention_interval;  /* as given (4 when absent) */
    int qk_head_dim;              /* deepseek: as given, 0 when absent */
    int moe_layer_freq;           /* deepseek: 1 when absent */

    int *eos_ids;
    int n_eos;
    int bos_id; /* -1 when absent */

    mk_qcfg quant;
} mk_config;

/* Read DIR/config.json (or the given .json file). Unknown architectures are
 * not an error here (arch = MK_ARCH_UNKNOWN): inspect still describes them. */
mk_status mk_config_load(const char *path, mk_config *cfg);
/* Parse from a JSON text; `what` names the source in messages. */
mk_status mk_config_parse(const char *what, const char *json, mk_config *cfg);
void mk_config_free(mk_config *cfg);

/* Refuse, with MK_E_UNSUPPORTED or MK_E_FORMAT and a message naming the
 * field with the value expected vs found, every config value the engine's
 * math cannot honour: values that cannot be right (rope_theta <= 0,
 * rms_norm_eps < 0, a yarn factor < 1, ...) and features it does not
 * implement (rope types other than default/yarn, hidden_act other than silu,
 * attention/MLP biases, sliding windows, unknown layer_types, ...). The
 * arch must be known. Every key of every family is listed, with what the
 * engine does with it, in docs/CONFIG_KEYS.md. */
mk_status mk_config_check(const mk_config *cfg);

/* Do a and b describe the same model math? Compares every field the
 * engine's math reads (dimensions, counts, RoPE, norms, routing, the layer
 * schedule), not storage (quantization, dtype) nor generation metadata.
 * MK_E_MISMATCH naming the first field that differs, with both values;
 * na / nb name the two sides in the message. */
mk_status mk_config_compare(const mk_config *a, const mk_config *b, const char *na, const char *nb);

/* compressed-tensors: the one subset of the format that convert and the
 * engine implement (pack-quantized 4-bit integer weights in groups, scales,
 * zero points exactly when asymmetric). Refuses any other config field value
 * with one message; `where` names the checkpoint. has_zero_point < 0: check
 * only the config; else whether module `mod` has a weight_zero_point. */
mk_status mk_ct_check(const mk_qcfg *q, const char *where, const char *mod, int has_zero_point);

/* Is layer i an MoE layer (routed experts) per the family's rule? */
bool mk_config_layer_is_moe(const mk_config *cfg, int layer);
/* Is layer i full attention (vs Gated DeltaNet)? Always true for non-hybrids. */
bool mk_config_layer_is_full_attn(const mk_config *cfg, int layer);
/* Does layer i attend through a sliding window (gpt_oss sliding_attention)? */
bool mk_config_layer_is_sliding(const mk_config *cfg, int layer);
/* Does the family route with DeepSeek's grouped sigmoid + correction bias
 * (deepseek_v3, glm4_moe, minimax_m2) rather than a softmax? */
bool mk_config_sigmoid_router(const mk_config *cfg);
/* Families whose recurrent state overflows in float16. */
bool mk_config_has_recurrent_state(const mk_config *cfg);

/* How module `path` is stored under an MLX quantization block: returns true
 * and fills bits/group/mode when the config quantizes it (a per-module entry,
 * else the defaults when `has_scales`), false when it is left in float. */
bool mk_qcfg_lookup(const mk_qcfg *q, const char *path, bool has_scales, int *bits, int *group,
                    mk_qmode *mode);
void mk_qcfg_free(mk_qcfg *q);

#ifdef __cplusplus
}
#endif
#endif
