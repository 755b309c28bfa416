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

const char *cv_gguf_arch(const cv_src *s) {
    return s->cfg.arch == MK_ARCH_QWEN3_MOE ? "qwen3moe" : NULL;
}

/* llama.cpp's name of cname into buf; false when it has none. */
static bool map_name(const char *cname, char *buf, size_t n) {
    for (size_t i = 0; i < sizeof g_qwen3moe_top / sizeof g_qwen3moe_top[0]; i++)
        if (strcmp(cname, g_qwen3moe_top[i].hf) == 0) {
            snprintf(buf, n, "%s", g_qwen3moe_top[i].gg);
            return true;
        }
    unsigned layer;
    int at = 0;
    if (sscanf(cname, "model.layers.%u.%n", &layer, &at) != 1 || at == 0)
        return false;
    for (size_t i = 0; i < sizeof g_qwen3moe_layer / sizeof g_qwen3moe_layer[0]; i++)
        if (strcmp(cname + at, g_qwen3moe_layer[i].hf) == 0) {
            snprintf(buf, n, "blk.%u.%s", layer, g_qwen3moe_layer[i].gg);
            return true;
        }
    return false;
}

static mk_status check_one(const cv_src *s, const char *cname) {
    char buf[256];
    if (!map_name(cname, buf, sizeof buf))
        return mk_err(MK_E_UNSUPPORTED, "%s: tensor '%s' has no llama.cpp name in GGUF architecture %s", s->dir,
                      cname, cv_gguf_arch(s));
    return MK_OK;
}

mk_status cv_gguf_check_names(const cv_src *s) {
    if (!cv_gguf_arch(s))
        return mk_err(MK_E_UNSUPPORTED, "%s: --to gguf supports qwen3_moe (llama.cpp's qwen3moe) so far, not %s",
                      s->dir, mk_arch_name(s->cfg.arch));
    if (s->vl)
        return mk_err(MK_E_UNSUPPORTED, "%s: --to gguf of a vision-language checkpoint is not supported yet", s->dir);
    /* what llama.cpp's qwen3moe graph cannot express (src/models/qwen3moe.cpp):
     * every layer is MoE and the top-k weights are always renormalized; a
     * GGUF of such a model would load and compute a different model */
    const mk_config *c = &s->cfg;
    if (!c->norm_topk_prob)
        return mk_err(MK_E_UNSUPPORTED, "%s/config.json: norm_topk_prob is false, but llama.cpp's qwen3moe always "
                                        "renormalizes the top-k expert weights: its GGUF would compute another model",
                      s->dir);
    if (c->n_mlp_only_layers > 0 || c->decoder_sparse_step > 1)
        return mk_err(MK_E_UNSUPPORTED, "%s/config.json: dense MLP layers (mlp_only_layers %d entries, "
                                        "decoder_sparse_step %d): llama.cpp's qwen3moe has MoE in every layer",
                      s->dir, c->n_mlp_only_layers, c->decoder_sparse_step);
    if (c->rope.factor != 1.0)
        return mk_err(MK_E_UNSUPPORTED, "%s/config.json: RoPE scaling (factor %g) is not written to GGUF yet", s->dir,
                      c->rope.factor);
    for (size_t i = 0; i < s->nlts; i++) {
        const cv_lt *lt = &s->lts[i];
        if (lt->cls == MK_PART_VISION || lt->cls == MK_PART_MTP || cv_ends_with(lt->cname, "rotary_emb.inv_freq"))
            continue; /* dropped: the target is text only */
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

char *cv_gguf_name(const cv_src *s, const char *cname) {
    (void)s;
    char buf[256];
    return map_name(cname, buf, sizeof buf) ? cv_strdup(buf) : NULL;
}
