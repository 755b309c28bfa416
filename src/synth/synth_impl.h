/* Internal description of a synthetic checkpoint: the family's sizes
 * (synth_arch.c: presets, tensor lists, config.json) and the value
 * generators that fill it (synth.c). */
#ifndef MK_CONVERT_SYNTH_IMPL_H
#define MK_CONVERT_SYNTH_IMPL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "moekit/dtype.h"
#include "moekit/st.h"
#include "moekit/synth.h"

typedef enum sy_arch {
    SY_QWEN3_MOE = 0,
    SY_QWEN3_NEXT,
    SY_QWEN3_5_MOE,
    SY_DEEPSEEK_V3,
    SY_GLM4_MOE,      /* GLM-4.5/4.6/4.7, -Air: GQA + biases + partial RoPE, DeepSeek-style routing */
    SY_GLM4_MOE_LITE, /* GLM-4.7-Flash: DeepSeek-V3's MLA and routing under GLM's names */
    SY_MINIMAX_M2,    /* MiniMax-M2: GQA, q/k norm over the projection, sigmoid router + bias */
    SY_GPT_OSS,       /* gpt-oss: GQA with biases and sinks, sliding/full layers, biased fused experts */
    SY_DEEPSEEK_V32,  /* DeepSeek-V3.2: deepseek_v3 + the DSA lightning indexer */
    SY_GLM_MOE_DSA,   /* GLM-5: glm4_moe_lite's MLA and routing + the DSA indexer */
    SY_NARCH
} sy_arch;

/* Sizes of one model (the field names of its HF config in comments). */
typedef struct sy_cfg {
    sy_arch arch;
    int L, H, V;                  /* num_hidden_layers, hidden_size, vocab_size */
    int E, topk, I_moe;           /* experts, num_experts_per_tok, moe_intermediate_size */
    int I_dense, I_shared;        /* intermediate_size, shared_expert_intermediate_size */
    int n_shared;                 /* deepseek n_shared_experts */
    int heads, kv_heads, hd;      /* attention */
    int nk, nv, dk, dv, conv_k;   /* Gated DeltaNet */
    int interval;                 /* full_attention_interval */
    int q_lora, kv_lora, nope, rope_d, v_head; /* MLA */
    int first_dense, n_group, topk_group;
    double theta, partial, scaling;
    int max_pos;
    bool yarn; /* deepseek-v3 real preset: YaRN rope_scaling */
    bool attn_bias, qk_norm; /* glm4_moe: attention_bias, use_qk_norm */
    int rotary_dim;          /* minimax_m2: rotated width of a head */
    int window;              /* gpt_oss: sliding_window */
    int idx_heads, idx_dim, idx_topk; /* DSA: index_n_heads, index_head_dim, index_topk */
} sy_cfg;

/* How a tensor's values are drawn. */
typedef enum sy_init {
    SY_LIN = 0,  /* N(0, 0.02) */
    SY_NORM1,    /* 1 + N(0, 0.02) */
    SY_NORM0,    /* N(0, 0.05): zero-centred norms */
    SY_ALOG,     /* log U(1, 16) */
    SY_DT,       /* 1 + N(0, 0.1) */
    SY_CONV,     /* N(0, 0.2) */
    SY_SMALL,    /* N(0, 0.01): biases, e_score_correction_bias */
    SY_FP8W,     /* E4M3 codes of N(0,1) * 64 */
    SY_FP8S,     /* scale_inv per 128x128 block: 0.02/64 * (1 +- 0.25) */
    SY_CTW,      /* INT4 nibbles, N(0, 2.2) + 8 clamped, 8 per I32 */
    SY_CTS,      /* per-group scale 0.02/2.2 * (1 +- 0.25) */
    SY_CTSHAPE,  /* [out, in] */
    SY_CTZP,     /* zero points 7..9, 8 rows per I32 */
    SY_MXW,      /* MXFP4 blocks: two E2M1 codes of N(0,1) * 1.5 per byte, low nibble first */
    SY_MXS,      /* MXFP4 E8M0 scales: 2^-7 * 2^{-1,0,+1} (weights ~ 0.02) */
    SY_MXF,      /* gpt_oss bf16 experts [E, in, out]: the dequantized values of the MXFP4 form (exact in bf16) */
} sy_init;

typedef struct sy_tensor {
    char *name;
    mk_dtype dt;
    int ndim;
    int64_t shape[5];
    sy_init init;
    uint64_t key;      /* RNG key of the logical weight (weight and its scales share it) */
    int64_t wrows, wcols, wmrows; /* FP8 scale / CT: the weight's logical rows, cols, rows per matrix */
    uint64_t key2;     /* SY_MXF: the key of the MXFP4 form's scales (key: of its blocks) */
} sy_tensor;

typedef struct sy_list {
    sy_tensor *t;
    size_t n, cap;
    uint64_t seed;
    mk_synth_format format;
    bool fused;
    mk_status err;
} sy_list;

/* Resolve arch + preset + overrides into sizes; MK_E_ARG with the lists of
 * valid names otherwise. */
mk_status sy_cfg_resolve(const mk_synth_opts *o, sy_cfg *c);
/* Every tensor of the checkpoint, in a deterministic order. */
mk_status sy_tensors(const sy_cfg *c, const mk_synth_opts *o, sy_list *l);
void sy_list_free(sy_list *l);
/* config.json of the family (owned by caller). */
json_t *sy_config_json(const sy_cfg *c, const mk_synth_opts *o);

#endif
