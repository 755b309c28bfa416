/* llama.cpp's tensor names for the GGUF target (gguf.h).
 *
 * Names follow llama.cpp's gguf-py tensor map as convert_hf_to_gguf.py
 * applies it (conversion/qwen.py: Qwen3MoeModel stacks the experts of a
 * layer into one (E, out, in) tensor per projection). One table per
 * architecture: the suffix after "model.layers.N." and its name after
 * "blk.N.", plus the whole-model tensors. Their types: gguf_types.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/gguf.h"

typedef struct gmap {
    const char *hf, *gg;
} gmap;

/* every architecture's whole-model tensors */
static const gmap g_qwen3moe_top[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
};

static const gmap g_qwen3moe_layer[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.q_norm.weight", "attn_q_norm.weight"},
    {"self_attn.k_norm.weight", "attn_k_norm.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate.weight", "ffn_gate_inp.weight"},
    {"mlp.switch_mlp.gate_proj.weight", "ffn_gate_exps.weight"},
    {"mlp.switch_mlp.up_proj.weight", "ffn_up_exps.weight"},
    {"mlp.switch_mlp.down_proj.weight", "ffn_down_exps.weight"},
    /* no dense MLP: llama.cpp's qwen3moe has MoE in every layer (refused below) */
};

/* minimax-m2 (conversion/minimax.py MiniMaxM2Model): q/k norms over the
 * whole projection, sigmoid routing with a correction bias (exp_probs_b,
 * F32 as every 1-D tensor), experts w1 / w3 / w2 stacked as gate / up /
 * down like qwen3moe's. */
static const gmap g_minimax_layer[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.q_norm.weight", "attn_q_norm.weight"},
    {"self_attn.k_norm.weight", "attn_k_norm.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"block_sparse_moe.gate.weight", "ffn_gate_inp.weight"},
    {"block_sparse_moe.e_score_correction_bias", "exp_probs_b.bias"},
    {"block_sparse_moe.switch_mlp.gate_proj.weight", "ffn_gate_exps.weight"},
    {"block_sparse_moe.switch_mlp.up_proj.weight", "ffn_up_exps.weight"},
    {"block_sparse_moe.switch_mlp.down_proj.weight", "ffn_down_exps.weight"},
};

/* glm4moe (conversion/glm.py Glm4MoeModel, without its MTP layers): q/k/v
 * biases, per-head q/k norms, post_attention_layernorm as
 * post_attention_norm (llama.cpp's GLM4_MOE has no ffn_norm), leading
 * dense layers (ffn_gate/up/down), shared experts (*_shexp), sigmoid
 * routing with exp_probs_b. */
static const gmap g_glm4moe_layer[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.q_norm.weight", "attn_q_norm.weight"},
    {"self_attn.k_norm.weight", "attn_k_norm.weight"},
    {"post_attention_layernorm.weight", "post_attention_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
    {"mlp.shared_experts.gate_proj.weight", "ffn_gate_shexp.weight"},
    {"mlp.shared_experts.up_proj.weight", "ffn_up_shexp.weight"},
    {"mlp.shared_experts.down_proj.weight", "ffn_down_shexp.weight"},
    {"mlp.gate.weight", "ffn_gate_inp.weight"},
    {"mlp.gate.e_score_correction_bias", "exp_probs_b.bias"},
    {"mlp.switch_mlp.gate_proj.weight", "ffn_gate_exps.weight"},
    {"mlp.switch_mlp.up_proj.weight", "ffn_up_exps.weight"},
    {"mlp.switch_mlp.down_proj.weight", "ffn_down_exps.weight"},
};

/* qwen3next (conversion/qwen.py Qwen3NextModel, without its MTP layers):
 * Gated DeltaNet layers as ssm_*; in_proj_qkvz is split by the plan
 * (gguf_qkvz_outputs in plan.c) into attn_qkv (all q heads, then k, then
 * v) and attn_gate (z); A_log is written as ssm_a = -exp(A_log), the
 * zero-centred norms as 1 + w (the target's norm convention), conv1d
 * squeezed to (C, K); q_proj carries the output gate (2x rows). */
static const gmap g_qwen3next_layer[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"post_attention_layernorm.weight", "post_attention_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.q_norm.weight", "attn_q_norm.weight"},
    {"self_attn.k_norm.weight", "attn_k_norm.weight"},
    {"linear_attn.in_proj_qkvz.weight", "attn_qkv.weight"}, /* and attn_gate.weight */
    {"linear_attn.in_proj_ba.weight", "ssm_ba.weight"},
    {"linear_attn.conv1d.weight", "ssm_conv1d.weight"},
    {"linear_attn.dt_bias", "ssm_dt.bias"},
    {"linear_attn.A_log", "ssm_a"},
    {"linear_attn.norm.weight", "ssm_norm.weight"},
    {"linear_attn.out_proj.weight", "ssm_out.weight"},
    {"mlp.gate.weight", "ffn_gate_inp.weight"},
    {"mlp.shared_expert.gate_proj.weight", "ffn_gate_shexp.weight"},
    {"mlp.shared_expert.up_proj.weight", "ffn_up_shexp.weight"},
    {"mlp.shared_expert.down_proj.weight", "ffn_down_shexp.weight"},
    {"mlp.shared_expert_gate.weight", "ffn_gate_inp_shexp.weight"},
    {"mlp.switch_mlp.gate_proj.weight", "ffn_gate_exps.weight"},
    {"mlp.switch_mlp.up_proj.weight", "ffn_up_exps.weight"},
    {"mlp.switch_mlp.down_proj.weight", "ffn_down_exps.weight"},
};

/* qwen35moe (conversion/qwen.py Qwen3_5MoeTextModel): qwen3next's tensors
 * with Qwen3.5's separate projections (in_proj_qkv -> attn_qkv, in_proj_z
 * -> attn_gate, in_proj_b / in_proj_a -> ssm_beta / ssm_alpha) and the
 * value heads reordered to tiled order when there are more value than key
 * heads (plan.c gguf_vrows_output, the GGQ column reorder). */
static const gmap g_qwen35moe_layer[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"post_attention_layernorm.weight", "post_attention_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.q_norm.weight", "attn_q_norm.weight"},
    {"self_attn.k_norm.weight", "attn_k_norm.weight"},
    {"linear_attn.in_proj_qkv.weight", "attn_qkv.weight"},
    {"linear_attn.in_proj_z.weight", "attn_gate.weight"},
    {"linear_attn.in_proj_b.weight", "ssm_beta.weight"},
    {"linear_attn.in_proj_a.weight", "ssm_alpha.weight"},
    {"linear_attn.conv1d.weight", "ssm_conv1d.weight"},
    {"linear_attn.dt_bias", "ssm_dt.bias"},
    {"linear_attn.A_log", "ssm_a"},
    {"linear_attn.norm.weight", "ssm_norm.weight"},
    {"linear_attn.out_proj.weight", "ssm_out.weight"},
    {"mlp.gate.weight", "ffn_gate_inp.weight"},
    {"mlp.shared_expert.gate_proj.weight", "ffn_gate_shexp.weight"},
    {"mlp.shared_expert.up_proj.weight", "ffn_up_shexp.weight"},
    {"mlp.shared_expert.down_proj.weight", "ffn_down_shexp.weight"},
    {"mlp.shared_expert_gate.weight", "ffn_gate_inp_shexp.weight"},
    {"mlp.switch_mlp.gate_proj.weight", "ffn_gate_exps.weight"},
    {"mlp.switch_mlp.up_proj.weight", "ffn_up_exps.weight"},
    {"mlp.switch_mlp.down_proj.weight", "ffn_down_exps.weight"},
};

/* deepseek2 (conversion/deepseek.py DeepseekV2Model, MTP layers dropped):
 * MLA as attn_q_a / attn_q_a_norm / attn_q_b (or attn_q without a q
 * LoRA), attn_kv_a_mqa / attn_kv_a_norm, kv_b_proj split by the plan
 * (gguf_kvb_outputs) into attn_k_b (transposed per head) and attn_v_b;
 * leading dense layers, shared experts, exp_probs_b. */
static const gmap g_deepseek2_layer[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.q_a_proj.weight", "attn_q_a.weight"},
    {"self_attn.q_a_layernorm.weight", "attn_q_a_norm.weight"},
    {"self_attn.q_b_proj.weight", "attn_q_b.weight"},
    {"self_attn.kv_a_proj_with_mqa.weight", "attn_kv_a_mqa.weight"},
    {"self_attn.kv_a_layernorm.weight", "attn_kv_a_norm.weight"},
    {"self_attn.kv_b_proj.weight", "attn_k_b.weight"}, /* and attn_v_b.weight */
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
    {"mlp.shared_experts.gate_proj.weight", "ffn_gate_shexp.weight"},
    {"mlp.shared_experts.up_proj.weight", "ffn_up_shexp.weight"},
    {"mlp.shared_experts.down_proj.weight", "ffn_down_shexp.weight"},
    {"mlp.gate.weight", "ffn_gate_inp.weight"},
    {"mlp.gate.e_score_correction_bias", "exp_probs_b.bias"},
    {"mlp.switch_mlp.gate_proj.weight", "ffn_gate_exps.weight"},
    {"mlp.switch_mlp.up_proj.weight", "ffn_up_exps.weight"},
    {"mlp.switch_mlp.down_proj.weight", "ffn_down_exps.weight"},
};

/* gpt-oss (conversion/gpt_oss.py GptOssModel, llama.cpp's LLM_ARCH_OPENAI_MOE):
 * q/k/v/o biases, the attention sinks (attn_sinks.weight, F32 as every 1-D
 * tensor), post_attention_layernorm as post_attention_norm, the router with
 * its bias, and the experts as plan.c's oss_to_gguf writes them (gate and up
 * split from the interleaved gate_up_proj, each expert transposed to
 * (out, in)), with their biases (2-D, F32: not a .weight). */
static const gmap g_gptoss_layer[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"post_attention_layernorm.weight", "post_attention_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.o_proj.bias", "attn_output.bias"},
    {"self_attn.sinks", "attn_sinks.weight"},
    {"mlp.router.weight", "ffn_gate_inp.weight"},
    {"mlp.router.bias", "ffn_gate_inp.bias"},
    {"mlp.experts.gate_proj.weight", "ffn_gate_exps.weight"},
    {"mlp.experts.up_proj.weight", "ffn_up_exps.weight"},
    {"mlp.experts.down_proj.weight", "ffn_down_exps.weight"},
    {"mlp.experts.gate_proj.bias", "ffn_gate_exps.bias"},
    {"mlp.experts.up_proj.bias", "ffn_up_exps.bias"},
    {"mlp.experts.down_proj_bias", "ffn_down_exps.bias"},
    {"mlp.experts.down_proj.bias", "ffn_down_exps.bias"}, /* an MLX checkpoint's (already (E, out, in)) */
};

/* DeepSeek sparse attention (deepseek32: conversion/deepseek.py
 * DeepseekV32Model; glm-dsa: conversion/glm.py GlmMoeDsaModel): deepseek2's
 * tensors plus the lightning indexer of every layer. weights_proj is
 * INDEXER_PROJ, which the converter keeps F32 at every file type but
 * llama-quantize quantizes like any matrix: moekit follows llama-quantize
 * (gguf_types.c), whose output is the test oracle. */
static const gmap g_dsa_layer[] = {
    {"self_attn.indexer.k_norm.weight", "indexer.k_norm.weight"},
    {"self_attn.indexer.k_norm.bias", "indexer.k_norm.bias"},
    {"self_attn.indexer.weights_proj.weight", "indexer.proj.weight"},
    {"self_attn.indexer.wk.weight", "indexer.attn_k.weight"},
    {"self_attn.indexer.wq_b.weight", "indexer.attn_q_b.weight"},
};

typedef struct garch {
    mk_arch arch;
    int dsa; /* mk_config.dsa: the DSA families are deepseek_v3 with an indexer */
    const char *name;
    const gmap *layer, *extra; /* extra: a second table of the layer's tensors, or NULL */
    size_t nlayer, nextra;
} garch;

#define GA(a, d, n, t) {a, d, n, t, NULL, sizeof t / sizeof t[0], 0}
#define GAX(a, d, n, t, x) {a, d, n, t, x, sizeof t / sizeof t[0], sizeof x / sizeof x[0]}
static const garch g_archs[] = {
    GA(MK_ARCH_QWEN3_MOE, MK_DSA_NONE, "qwen3moe", g_qwen3moe_layer),
    GA(MK_ARCH_MINIMAX_M2, MK_DSA_NONE, "minimax-m2", g_minimax_layer),
    GA(MK_ARCH_GLM4_MOE, MK_DSA_NONE, "glm4moe", g_glm4moe_layer),
    GA(MK_ARCH_QWEN3_NEXT, MK_DSA_NONE, "qwen3next", g_qwen3next_layer),
    GA(MK_ARCH_QWEN3_5_MOE, MK_DSA_NONE, "qwen35moe", g_qwen35moe_layer),
    GA(MK_ARCH_DEEPSEEK_V3, MK_DSA_NONE, "deepseek2", g_deepseek2_layer),
    GA(MK_ARCH_GPT_OSS, MK_DSA_NONE, "gpt-oss", g_gptoss_layer),
    /* the indexer's RoPE: DeepSeek-V3.2 half-split (llama.cpp: NEOX), GLM-5
     * interleaved (NORM), each what llama.cpp's graph of the name applies */
    GAX(MK_ARCH_DEEPSEEK_V3, MK_DSA_HALF, "deepseek32", g_deepseek2_layer, g_dsa_layer),
    GAX(MK_ARCH_DEEPSEEK_V3, MK_DSA_INTERLEAVED, "glm-dsa", g_deepseek2_layer, g_dsa_layer),
};

static const garch *arch_of(const cv_src *s) {
    for (size_t i = 0; i < sizeof g_archs / sizeof g_archs[0]; i++)
        if (g_archs[i].arch == s->cfg.arch && g_archs[i].dsa == s->cfg.dsa)
            return &g_archs[i];
    return NULL;
}

const char *cv_gguf_arch(const cv_src *s) {
    const garch *g = arch_of(s);
    return g ? g->name : NULL;
}

/* llama.cpp's name of cname into buf; false when it has none. */
static bool map_name(const cv_src *s, const char *cname, char *buf, size_t n) {
    for (size_t i = 0; i < sizeof g_qwen3moe_top / sizeof g_qwen3moe_top[0]; i++)
        if (strcmp(cname, g_qwen3moe_top[i].hf) == 0) {
            snprintf(buf, n, "%s", g_qwen3moe_top[i].gg);
            return true;
        }
    const garch *g = arch_of(s);
    unsigned layer;
    int at = 0;
    if (!g || sscanf(cname, "model.layers.%u.%n", &layer, &at) != 1 || at == 0)
        return false;
    for (size_t i = 0; i < g->nlayer; i++)
        if (strcmp(cname + at, g->layer[i].hf) == 0) {
            snprintf(buf, n, "blk.%u.%s", layer, g->layer[i].gg);
            return true;
        }
    for (size_t i = 0; i < g->nextra; i++)
        if (strcmp(cname + at, g->extra[i].hf) == 0) {
            snprintf(buf, n, "blk.%u.%s", layer, g->extra[i].gg);
            return true;
        }
    return false;
}

static mk_status check_one(const cv_src *s, const char *cname) {
    char buf[256];
    if (!map_name(s, cname, buf, sizeof buf))
        return mk_err(MK_E_UNSUPPORTED, "%s: tensor '%s' has no llama.cpp name in GGUF architecture %s", s->dir,
                      cname, cv_gguf_arch(s));
    return MK_OK;
}

mk_status cv_gguf_check_names(const cv_src *s) {
    if (!cv_gguf_arch(s))
        return mk_err(MK_E_UNSUPPORTED, "%s: --to gguf supports qwen3_moe, qwen3_next, qwen3_5_moe, deepseek_v3, "
                                        "deepseek_v32, glm_moe_dsa, minimax_m2, glm4_moe and gpt_oss (llama.cpp's "
                                        "qwen3moe, qwen3next, qwen35moe, deepseek2, deepseek32, glm-dsa, minimax-m2, "
                                        "glm4moe, gpt-oss) "
                                        "so far, not %s",
                      s->dir, s->cfg.model_type[0] ? s->cfg.model_type : mk_arch_name(s->cfg.arch));
    if (s->vl)
        return mk_err(MK_E_UNSUPPORTED, "%s: --to gguf of a vision-language checkpoint is not supported yet", s->dir);
    /* what llama.cpp's graphs cannot express (src/models/qwen3moe.cpp,
     * minimax-m2.cpp): every layer is MoE, the top-k weights are always
     * renormalized and not scaled; a GGUF of such a model would load and
     * compute a different model */
    const mk_config *c = &s->cfg;
    if ((c->arch == MK_ARCH_QWEN3_NEXT || c->arch == MK_ARCH_QWEN3_5_MOE) && cv_gguf_full_interval(c) <= 0)
        return mk_err(MK_E_UNSUPPORTED, "%s/config.json: the full-attention layers are not every n-th layer: "
                                        "llama.cpp's qwen3next reads only full_attention_interval",
                      s->dir);
    if ((c->arch == MK_ARCH_QWEN3_MOE || c->arch == MK_ARCH_QWEN3_NEXT || c->arch == MK_ARCH_QWEN3_5_MOE) &&
        !c->norm_topk_prob)
        return mk_err(MK_E_UNSUPPORTED, "%s/config.json: norm_topk_prob is false, but llama.cpp's qwen3moe always "
                                        "renormalizes the top-k expert weights: its GGUF would compute another model",
                      s->dir);
    if (c->arch != MK_ARCH_GLM4_MOE && c->arch != MK_ARCH_DEEPSEEK_V3 &&
        (c->n_mlp_only_layers > 0 || c->decoder_sparse_step > 1))
        return mk_err(MK_E_UNSUPPORTED, "%s/config.json: dense MLP layers (mlp_only_layers %d entries, "
                                        "decoder_sparse_step %d): llama.cpp's %s has MoE in every layer",
                      s->dir, c->n_mlp_only_layers, c->decoder_sparse_step, cv_gguf_arch(s));
    if (c->arch == MK_ARCH_MINIMAX_M2 && c->routed_scaling_factor != 0 && c->routed_scaling_factor != 1)
        return mk_err(MK_E_UNSUPPORTED, "%s/config.json: routed_scaling_factor %g: llama.cpp's minimax-m2 does "
                                        "not scale the expert weights: its GGUF would compute another model",
                      s->dir, c->routed_scaling_factor);
    if (c->arch == MK_ARCH_GLM4_MOE && (c->n_group > 1 || c->topk_group > 1) && c->topk_group != c->n_group)
        return mk_err(MK_E_UNSUPPORTED, "%s/config.json: grouped routing (n_group %d, topk_group %d): llama.cpp's "
                                        "glm4moe routes over all experts: its GGUF would compute another model",
                      s->dir, c->n_group, c->topk_group);
    if (c->arch == MK_ARCH_DEEPSEEK_V3 && cv_gguf_leading_dense(c) < 0)
        return mk_err(MK_E_UNSUPPORTED, "%s/config.json: dense layers that are not the leading ones "
                                        "(mlp_layer_types): llama.cpp's deepseek2 has only leading_dense_block_count",
                      s->dir);
    bool yarn = c->arch == MK_ARCH_GPT_OSS && strcmp(c->rope.type, "yarn") == 0;
    if (c->arch == MK_ARCH_DEEPSEEK_V3 && c->dsa != MK_DSA_NONE && (c->index_head_dim <= 0 || c->index_head_dim % 64))
        return mk_err(MK_E_UNSUPPORTED, "%s/config.json: index_head_dim %d: llama.cpp's lightning indexer needs a "
                                        "multiple of 64 (its Hadamard rotation of the indexer keys is at least 64 "
                                        "wide): its GGUF would not run",
                      s->dir, c->index_head_dim);
    if (c->rope.factor != 1.0 && !yarn)
        return mk_err(MK_E_UNSUPPORTED, "%s/config.json: RoPE scaling (factor %g) is not written to GGUF yet", s->dir,
                      c->rope.factor);
    if (c->arch == MK_ARCH_GPT_OSS) {
        /* llama.cpp's gpt-oss: sliding-window layers alternate, the first
         * sliding (its swa pattern 2); the sinks and clamped SwiGLU
         * (limit 7, alpha 1.702) are built in */
        for (int i = 0; i < c->num_layers; i++)
            if (mk_config_layer_is_sliding(c, i) != (i % 2 == 0))
                return mk_err(MK_E_UNSUPPORTED, "%s/config.json: layer %d is %s attention, but llama.cpp's gpt-oss "
                                                "alternates sliding (even layers) and full (odd layers): its GGUF would "
                                                "compute another model",
                              s->dir, i, mk_config_layer_is_sliding(c, i) ? "sliding" : "full");
    }
    for (size_t i = 0; i < s->nlts; i++) {
        const cv_lt *lt = &s->lts[i];
        if (lt->cls == MK_PART_VISION || lt->cls == MK_PART_MTP || cv_ends_with(lt->cname, "rotary_emb.inv_freq"))
            continue; /* dropped: the target is text only */
        if (c->arch == MK_ARCH_GPT_OSS && strstr(lt->cname, ".mlp.experts.") &&
            (cv_ends_with(lt->cname, "_proj") || cv_ends_with(lt->cname, "_blocks") ||
             cv_ends_with(lt->cname, "_scales") || cv_ends_with(lt->cname, ".gate_up_proj_bias")))
            continue; /* transformers' forms, planned by plan.c's oss_to_gguf, which names its outputs
                       * from the table above */
        if (s->cfg.tie_word_embeddings && strcmp(lt->cname, "lm_head.weight") == 0)
            continue;
        MK_TRY(check_one(s, lt->cname));
    }
    for (size_t i = 0; i < s->ngroups; i++) {
        if (s->groups[i].cls == MK_PART_MTP || s->groups[i].cls == MK_PART_VISION)
            continue;
        for (int p = 0; p < 3; p++) {
            char cname[320];
            snprintf(cname, sizeof cname, "%s.switch_mlp.%s.weight", s->groups[i].mlp, mk_layout_proj_names[p]);
            MK_TRY(check_one(s, cname));
        }
    }
    return MK_OK;
}

int cv_gguf_full_interval(const mk_config *c) {
    if (!c->layer_is_full)
        return 0;
    int n = 0;
    while (n < c->num_layers && !c->layer_is_full[n])
        n++;
    n++; /* the first full layer is layer n-1 */
    for (int i = 0; i < c->num_layers; i++)
        if ((c->layer_is_full[i] != 0) != ((i + 1) % n == 0))
            return 0;
    return n;
}

int cv_gguf_leading_dense(const mk_config *c) {
    if (!c->has_mlp_layer_types)
        return c->first_k_dense_replace;
    for (int i = 0; i < c->n_mlp_only_layers; i++)
        if (c->mlp_only_layers[i] != i)
            return -1;
    return c->n_mlp_only_layers;
}

char *cv_gguf_name(const cv_src *s, const char *cname) {
    char buf[256];
    return map_name(s, cname, buf, sizeof buf) ? cv_strdup(buf) : NULL;
}
