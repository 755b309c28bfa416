/* Internal: the weights of a loaded model, as the engine reads them.
 *
 * Shapes use the config's names: H hidden, V vocab, nH query heads, nKV kv
 * heads, hd head_dim, E experts, I expert intermediate, Is shared expert
 * intermediate, Id dense intermediate. Gated DeltaNet: nk/nv key/value
 * heads of dk/dv, Kd = nk*dk, Vd = nv*dv, C = 2Kd + Vd conv channels.
 * MLA: ql q_lora_rank, kl kv_lora_rank, dn/dr/dvh nope/rope/v head dims.
 *
 * mk_wt fields are views into the mmapped checkpoint (or, for INT4
 * compressed-tensors, biases owned by the model). float* fields are f32
 * copies owned by the model. Norm gains are stored as the factor the
 * forward multiplies by: zero-centred families (stored w near 0, applied
 * as 1 + w) get the +1 at load unless the checkpoint already has it (MLX),
 * so the forward pass never needs to know. */
#ifndef MK_MODEL_IMPL_H
#define MK_MODEL_IMPL_H

#include <stdbool.h>

#include "moekit/config.h"
#include "moekit/expert_store.h"
#include "moekit/model.h"
#include "moekit/st.h"
#include "moekit/weight.h"

typedef enum mk_mixer {
    MK_MIXER_ATTN = 0, /* softmax attention with q/k norms (qwen3_moe; gated in hybrids) */
    MK_MIXER_GDN,      /* Gated DeltaNet (qwen3_next, qwen3_5_moe linear layers) */
    MK_MIXER_MLA,      /* DeepSeek multi-head latent attention */
} mk_mixer;

typedef struct mk_attn_w {
    bool gated;     /* q_proj also yields a per-head output gate (hybrids) */
    mk_wt q;        /* [nH*hd, H], gated: [nH*2*hd, H] as per head [q(hd) | gate(hd)] */
    mk_wt k;        /* [nKV*hd, H] */
    mk_wt v;        /* [nKV*hd, H] */
    mk_wt o;        /* [H, nH*hd] */
    float *q_norm;  /* [hd] gain, shared by heads; [nH*hd] when whole (minimax_m2); NULL: no norm */
    float *k_norm;  /* [hd]; [nKV*hd] when whole; NULL: no norm */
    bool whole_qk_norm; /* minimax_m2: one RMSNorm over the whole q (k) projection, not per head */
    float *q_bias, *k_bias, *v_bias; /* attention_bias: [nH*hd], [nKV*hd], [nKV*hd]; else NULL */
    float *o_bias;  /* gpt_oss: o_proj bias [H]; else NULL */
    float *sinks;   /* gpt_oss: per query head learned sink logit [nH]; else NULL */
} mk_attn_w;

/* The DSA lightning indexer of one MLA layer (deepseek_v32, glm_moe_dsa):
 * nI heads of dI, queries from MLA's normed q latent, one key per token. */
typedef struct mk_dsa_w {
    bool on;           /* the layer selects positions (every layer of a DSA family) */
    bool shared;       /* glm_moe_dsa "shared": reuses the previous layer's selection, no weights */
    mk_wt wq_b;        /* [nI*dI, ql] */
    mk_wt wk;          /* [dI, H] */
    float *k_norm;     /* [dI] LayerNorm gain */
    float *k_norm_b;   /* [dI] LayerNorm bias */
    mk_wt weights_proj; /* [nI, H] per-head weights of the index score */
} mk_dsa_w;

typedef struct mk_mla_w {
    mk_wt q_a;         /* [ql, H] (ql > 0) */
    float *q_a_norm;   /* [ql] */
    mk_wt q_b;         /* [nH*(dn+dr), ql] (ql > 0) */
    mk_wt q;           /* [nH*(dn+dr), H] (ql == 0) */
    mk_wt kv_a;        /* [kl+dr, H]: latent | shared k_pe */
    float *kv_a_norm;  /* [kl] */
    mk_wt kv_b;        /* [nH*(dn+dvh), kl]: per head k_nope | v */
    mk_wt o;           /* [H, nH*dvh] */
    mk_dsa_w dsa;      /* the sparse attention indexer (dsa.on), else unused */
} mk_mla_w;

typedef struct mk_gdn_w {
    bool grouped;      /* qwen3_next: qkvz/ba grouped per key head; else flat qkv/z/b/a */
    mk_wt qkvz;        /* grouped: [2Kd+2Vd, H] as [nk][q dk | k dk | v r*dv | z r*dv] */
    mk_wt ba;          /* grouped: [2nv, H] as [nk][b r | a r] */
    mk_wt qkv;         /* flat: [C, H] = q | k | v */
    mk_wt z;           /* flat: [Vd, H] */
    mk_wt b;           /* flat: [nv, H] */
    mk_wt a;           /* flat: [nv, H] */
    float *conv;       /* [C, K] depthwise causal conv weights */
    float *A_log;      /* [nv] */
    float *dt_bias;    /* [nv] */
    float *norm;       /* [dv] plain gain of the gated output norm (never +1) */
    mk_wt out;         /* [H, Vd] */
} mk_gdn_w;

typedef struct mk_mlp_w {
    mk_wt gate; /* [I, H] */
    mk_wt up;   /* [I, H] */
    mk_wt down; /* [H, I] */
} mk_mlp_w;

typedef struct mk_moe_w {
    mk_wt router;       /* [E, H] */
    float *e_bias;      /* [E] e_score_correction_bias (deepseek; selection only) or NULL */
    bool has_shared;
    mk_mlp_w shared;    /* [Is, H] / [H, Is] */
    bool has_shared_gate;
    mk_wt shared_gate;  /* [1, H]: sigmoid gate of the shared expert (qwen) */
    /* gpt_oss: router bias [E] and expert biases; with fused_gu the
     * expert's `gate` view is the whole gate_up projection [2I, H] with
     * gate and up rows interleaved (gate j = row 2j, up j = row 2j+1),
     * `up` is empty and b_gate [E, 2I] is interleaved the same way; else
     * b_gate, b_up [E, I]. b_down [E, H]. NULL for every other family. */
    float *router_bias;
    float *b_gate, *b_up, *b_down;
    bool fused_gu;
    mk_expert *experts; /* [E] views, read only through the expert store */
    mk_expert_loc *locs; /* [E] file locations (stream_experts only), else NULL */
} mk_moe_w;

typedef struct mk_layer_w {
    float *in_norm;   /* [H] */
    float *post_norm; /* [H] */
    mk_mixer mixer;
    mk_attn_w attn;
    mk_mla_w mla;
    mk_gdn_w gdn;
    bool is_moe;
    mk_mlp_w mlp;     /* dense MLP (!is_moe), [Id, H] / [H, Id] */
    mk_moe_w moe;
} mk_layer_w;

struct mk_model {
    mk_config cfg;
    mk_ckpt *ck;
    char layout[64];
    bool quantized;    /* linear weights stored FP8 / MLX / INT4 in the checkpoint */
    mk_wt embed;       /* [V, H] */
    float *norm;       /* [H] final norm */
    mk_wt lm_head;     /* [V, H] (the embedding when tied) */
    mk_layer_w *layers; /* [L] */
    void **owned;      /* f32 copies and other buffers freed with the model */
    size_t n_owned, cap_owned;
    bool stream_experts;     /* experts read by a streaming store (mk_model_opts) */
    uint64_t resident_bytes; /* mapped non-expert weight bytes + owned bytes */
    uint64_t expert_bytes;   /* stored bytes of all routed experts */
};

/* Allocate n bytes owned by the model (zeroed); NULL on failure. */
void *mk_model_alloc(mk_model *m, size_t n);

#endif
