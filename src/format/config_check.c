/* What the engine's math honours in a config.json, and the refusal of
 * everything else.
 *
 * mk_config_parse() reads what it can; this file decides whether the values
 * read describe a model the engine computes exactly. A value that cannot be
 * right (rope_theta <= 0, rms_norm_eps < 0, a yarn factor below 1) or a
 * feature the engine does not implement (a rope type other than default and
 * yarn, an activation other than silu, attention or MLP biases, sliding
 * windows, unknown layer types, ...) is refused here, naming the field with
 * the value expected vs found, instead of being silently ignored. The table
 * in docs/CONFIG_KEYS.md lists every key each family reads and the refusal
 * that guards it; tests/unit/test_config_keys.c walks that table.
 *
 * compressed-tensors has its own check (mk_ct_check) because convert and
 * the engine both call it per module: one message for one subset. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "moekit/config.h"

/* Refusal of `field`: expected vs found, MK_E_UNSUPPORTED for features and
 * MK_E_FORMAT for impossible values (both exit 2). */
#define REFUSE(st, field, ...) return mk_err(st, "config.json: " field ": " __VA_ARGS__)

static bool finite_pos(double v) { return isfinite(v) && v > 0; }

/* ---- counts and dimensions (moved from the model loader) ---------------- */

static mk_status need_pos(const mk_config *c, const char *field, long long v) {
    if (v > 0)
        return MK_OK;
    return mk_err(MK_E_FORMAT, "config.json (%s): %s must be > 0, found %lld", c->model_type,
                  field, v);
}

/* Bounded by the config's lists, never by num_hidden_layers itself (which
 * may be absurd: it is checked against the tensors elsewhere). */
static bool any_moe(const mk_config *c) {
    if (c->num_experts <= 0 || c->num_layers <= 0)
        return false;
    if ((c->arch == MK_ARCH_DEEPSEEK_V3 || c->arch == MK_ARCH_GLM4_MOE) && !c->has_mlp_layer_types)
        return c->first_k_dense_replace < c->num_layers;
    if (c->has_mlp_layer_types) /* its dense entries are the mlp_only_layers, one per layer */
        return c->n_mlp_only_layers < c->num_layers;
    /* more MoE candidates ((l+1) % step == 0) than mlp_only_layers can remove:
     * at least one stays MoE; otherwise the few candidates are tried */
    int step = c->decoder_sparse_step > 0 ? c->decoder_sparse_step : 1;
    if (c->num_layers / step > c->n_mlp_only_layers)
        return true;
    for (int l = step - 1; l < c->num_layers; l += step)
        if (mk_config_layer_is_moe(c, l))
            return true;
    return false;
}

static bool any_linear(const mk_config *c) {
    if (!c->layer_is_full) /* no schedule: every layer is full attention */
        return false;
    for (int i = 0; i < c->num_layers; i++) /* layer_is_full exists only below 100000 layers */
        if (!mk_config_layer_is_full_attn(c, i))
            return true;
    return false;
}

static mk_status check_shapes(const mk_config *c) {
    MK_TRY(need_pos(c, "vocab_size", c->vocab_size));
    MK_TRY(need_pos(c, "hidden_size", c->hidden_size));
    MK_TRY(need_pos(c, "num_hidden_layers", c->num_layers));
    MK_TRY(need_pos(c, "num_attention_heads", c->num_heads));
    if (c->arch == MK_ARCH_DEEPSEEK_V3) {
        MK_TRY(need_pos(c, "kv_lora_rank", c->kv_lora_rank));
        MK_TRY(need_pos(c, "qk_rope_head_dim", c->qk_rope_head_dim));
        MK_TRY(need_pos(c, "qk_nope_head_dim", c->qk_nope_head_dim));
        MK_TRY(need_pos(c, "v_head_dim", c->v_head_dim));
        if (c->qk_rope_head_dim % 2)
            return mk_err(MK_E_FORMAT, "config.json: qk_rope_head_dim %d is odd",
                          c->qk_rope_head_dim);
    } else {
        MK_TRY(need_pos(c, "num_key_value_heads", c->num_kv_heads));
        MK_TRY(need_pos(c, "head_dim", c->head_dim));
        if (c->num_heads % c->num_kv_heads)
            return mk_err(MK_E_FORMAT, "config.json: num_attention_heads %d is not a multiple of "
                          "num_key_value_heads %d", c->num_heads, c->num_kv_heads);
        /* in double first: a huge factor must not overflow the int conversion */
        double rd = c->head_dim * c->rope.partial_rotary_factor;
        int rot = rd >= 0 && rd <= c->head_dim ? (int)rd : -1;
        if (rot <= 0 || rot > c->head_dim || rot % 2)
            return mk_err(MK_E_FORMAT, "config.json: rotary dims %g (head_dim %d x "
                          "partial_rotary_factor %g%s) must be even and in 2..head_dim",
                          rd, c->head_dim, c->rope.partial_rotary_factor,
                          c->rotary_dim ? ", from rotary_dim" : "");
    }
    if (any_moe(c)) {
        MK_TRY(need_pos(c, "moe_intermediate_size", c->moe_intermediate_size));
        if (c->num_experts_per_tok <= 0 || c->num_experts_per_tok > c->num_experts)
            return mk_err(MK_E_FORMAT, "config.json: num_experts_per_tok %d must be in 1..%d "
                          "(%s)", c->num_experts_per_tok, c->num_experts, c->experts_key);
        if (mk_config_sigmoid_router(c)) {
            int g = c->n_group, tg = c->topk_group;
            if (g <= 0)
                REFUSE(MK_E_FORMAT, "n_group", "expected an integer > 0, found %d", g);
            if (tg <= 0 || tg > g)
                REFUSE(MK_E_FORMAT, "topk_group", "expected an integer in 1..%d (n_group), found %d",
                       g, tg);
            if (c->num_experts % g || tg > g || c->num_experts / g < 2 ||
                c->num_experts_per_tok > tg * (c->num_experts / g))
                return mk_err(MK_E_FORMAT, "config.json: n_group %d / topk_group %d do not fit "
                              "%d experts (%s) with top-%d", g, tg, c->num_experts,
                              c->experts_key, c->num_experts_per_tok);
        }
    }
    if (any_linear(c)) {
        MK_TRY(need_pos(c, "linear_num_key_heads", c->lin_num_k_heads));
        MK_TRY(need_pos(c, "linear_num_value_heads", c->lin_num_v_heads));
        MK_TRY(need_pos(c, "linear_key_head_dim", c->lin_k_head_dim));
        MK_TRY(need_pos(c, "linear_value_head_dim", c->lin_v_head_dim));
        MK_TRY(need_pos(c, "linear_conv_kernel_dim", c->conv_kernel));
        if (c->lin_num_v_heads % c->lin_num_k_heads)
            return mk_err(MK_E_FORMAT, "config.json: linear_num_value_heads %d is not a multiple "
                          "of linear_num_key_heads %d", c->lin_num_v_heads, c->lin_num_k_heads);
    }
    return MK_OK;
}

/* ---- values and features -------------------------------------------------- */

static mk_status check_rope(const mk_config *c) {
    const mk_rope *r = &c->rope;
    if (!finite_pos(r->theta))
        REFUSE(MK_E_FORMAT, "rope_theta", "expected a finite number > 0, found %g", r->theta);
    if (!isfinite(r->partial_rotary_factor) || r->partial_rotary_factor <= 0 ||
        r->partial_rotary_factor > 1)
        REFUSE(MK_E_FORMAT, "partial_rotary_factor", "expected a number in (0, 1], found %g",
               r->partial_rotary_factor);
    if (c->arch == MK_ARCH_DEEPSEEK_V3 && r->partial_rotary_factor != 1)
        REFUSE(MK_E_UNSUPPORTED, "partial_rotary_factor",
               "deepseek_v3 rotates qk_rope_head_dim dims, expected 1 (or absent), found %g",
               r->partial_rotary_factor);
    if (!strcmp(r->type, "default"))
        return MK_OK;
    if (strcmp(r->type, "yarn"))
        REFUSE(MK_E_UNSUPPORTED, "rope_type",
               "'%s' is not implemented (implemented: default, yarn); its frequencies would be "
               "silently wrong", r->type);
    if (!isfinite(r->factor) || r->factor < 1)
        REFUSE(MK_E_FORMAT, "rope_type yarn: factor", "expected a finite number >= 1, found %g",
               r->factor);
    if (!finite_pos(r->beta_fast) || !finite_pos(r->beta_slow) || r->beta_fast < r->beta_slow)
        REFUSE(MK_E_FORMAT, "rope_type yarn: beta_fast / beta_slow",
               "expected finite numbers with beta_fast >= beta_slow > 0, found %g / %g",
               r->beta_fast, r->beta_slow);
    if (r->orig_max_pos < 0 || !isfinite(r->orig_max_pos) ||
        (r->orig_max_pos == 0 && c->max_position_embeddings <= 0))
        REFUSE(MK_E_FORMAT, "rope_type yarn: original_max_position_embeddings",
               "expected a number > 0 (or max_position_embeddings > 0), found %g",
               r->orig_max_pos);
    if (!isfinite(r->mscale) || r->mscale < 0 || !isfinite(r->mscale_all_dim) ||
        r->mscale_all_dim < 0)
        REFUSE(MK_E_FORMAT, "rope_type yarn: mscale / mscale_all_dim",
               "expected finite numbers >= 0, found %g / %g", r->mscale, r->mscale_all_dim);
    if (!isfinite(r->attention_factor) || (r->attention_factor < 0 && r->attention_factor != -1))
        REFUSE(MK_E_FORMAT, "rope_type yarn: attention_factor",
               "expected a finite number >= 0, found %g", r->attention_factor);
    return MK_OK;
}

static mk_status check_layers(const mk_config *c) {
    bool hybrid = c->arch == MK_ARCH_QWEN3_NEXT || c->arch == MK_ARCH_QWEN3_5_MOE;
    if (c->bad_layer_type >= 0)
        REFUSE(MK_E_UNSUPPORTED, "layer_types",
               "entry %d is '%s'; %s implements %s", c->bad_layer_type, c->bad_layer_type_name,
               c->dsa ? c->model_type : mk_arch_name(c->arch),
               hybrid                       ? "linear_attention and full_attention"
               : c->arch == MK_ARCH_GPT_OSS ? "sliding_attention and full_attention"
               : c->dsa                     ? "deepseek_sparse_attention only"
                                            : "full_attention only");
    if (c->n_layer_types >= 0 && c->n_layer_types != c->num_layers)
        REFUSE(MK_E_FORMAT, "layer_types", "expected %d entries (num_hidden_layers), found %d",
               c->num_layers, c->n_layer_types);
    if (hybrid && c->n_layer_types < 0 && c->full_attention_interval <= 0)
        REFUSE(MK_E_FORMAT, "full_attention_interval", "expected an integer > 0, found %d",
               c->full_attention_interval);
    if (c->decoder_sparse_step <= 0)
        REFUSE(MK_E_FORMAT, "decoder_sparse_step", "expected an integer > 0, found %d",
               c->decoder_sparse_step);
    for (int i = 0; i < c->n_mlp_only_layers; i++)
        if (c->mlp_only_layers[i] < 0 || c->mlp_only_layers[i] >= c->num_layers)
            REFUSE(MK_E_FORMAT, "mlp_only_layers",
                   "entry %d is layer %d, expected 0..%d (num_hidden_layers - 1)", i,
                   c->mlp_only_layers[i], c->num_layers - 1);
    return MK_OK;
}

static mk_status check_deepseek(const mk_config *c) {
    if (c->n_group <= 0)
        REFUSE(MK_E_FORMAT, "n_group", "expected an integer > 0, found %d", c->n_group);
    if (c->topk_group <= 0 || c->topk_group > c->n_group)
        REFUSE(MK_E_FORMAT, "topk_group", "expected an integer in 1..%d (n_group), found %d",
               c->n_group, c->topk_group);
    if (strcmp(c->scoring_func, "sigmoid"))
        REFUSE(MK_E_UNSUPPORTED, "scoring_func",
               "'%s' is not implemented for %s (expected sigmoid)", c->scoring_func,
               mk_arch_name(c->arch));
    if (c->topk_method[0] && strcmp(c->topk_method, "noaux_tc"))
        REFUSE(MK_E_UNSUPPORTED, "topk_method",
               "'%s' is not implemented (expected noaux_tc: grouped top-k with "
               "e_score_correction_bias)", c->topk_method);
    if (!isfinite(c->routed_scaling_factor) || c->routed_scaling_factor <= 0)
        REFUSE(MK_E_FORMAT, "routed_scaling_factor", "expected a finite number > 0, found %g",
               c->routed_scaling_factor);
    if (c->moe_layer_freq != 1)
        REFUSE(MK_E_UNSUPPORTED, "moe_layer_freq",
               "expected 1 (every layer from first_k_dense_replace on is MoE), found %d",
               c->moe_layer_freq);
    if (c->first_k_dense_replace < 0 || c->first_k_dense_replace > c->num_layers)
        REFUSE(MK_E_FORMAT, "first_k_dense_replace", "expected 0..%d (num_hidden_layers), found %d",
               c->num_layers, c->first_k_dense_replace);
    if (c->qk_head_dim && c->qk_head_dim != c->qk_nope_head_dim + c->qk_rope_head_dim)
        REFUSE(MK_E_FORMAT, "qk_head_dim",
               "expected %d (qk_nope_head_dim %d + qk_rope_head_dim %d), found %d",
               c->qk_nope_head_dim + c->qk_rope_head_dim, c->qk_nope_head_dim,
               c->qk_rope_head_dim, c->qk_head_dim);
    if (c->q_lora_rank < 0)
        REFUSE(MK_E_FORMAT, "q_lora_rank", "expected an integer >= 0 (0: no q compression), "
               "found %d", c->q_lora_rank);
    return MK_OK;
}

/* gpt_oss: its attention projections always carry biases (o_proj's too),
 * sliding layers need a window, the clamp and the gate's slope must be
 * usable numbers, and its router is a softmax over the top-k logits. */
static mk_status check_gpt_oss(const mk_config *c) {
    if (!c->attention_bias)
        REFUSE(MK_E_UNSUPPORTED, "attention_bias",
               "false is not implemented for gpt_oss (its q/k/v/o projections carry biases)");
    bool any_sliding = false;
    for (int i = 0; c->layer_is_sliding && i < c->num_layers; i++)
        any_sliding |= c->layer_is_sliding[i] != 0;
    if (any_sliding && c->sliding_window <= 0)
        REFUSE(MK_E_FORMAT, "sliding_window",
               "expected an integer > 0 (layer_types has sliding_attention layers), found %d",
               c->sliding_window);
    if (!finite_pos(c->swiglu_limit))
        REFUSE(MK_E_FORMAT, "swiglu_limit", "expected a finite number > 0, found %g", c->swiglu_limit);
    if (!isfinite(c->swiglu_alpha))
        REFUSE(MK_E_FORMAT, "swiglu_alpha", "expected a finite number, found %g", c->swiglu_alpha);
    if (!c->norm_topk_prob)
        REFUSE(MK_E_UNSUPPORTED, "norm_topk_prob",
               "false is not implemented for gpt_oss (its router takes a softmax over the top-k "
               "logits)");
    return MK_OK;
}

/* The DSA indexer (deepseek_v32, glm_moe_dsa): its keys only with the
 * family, its sizes positive, its RoPE inside its heads, its query from the
 * q latent (q_lora_rank), and a first layer with its own indexer. */
static mk_status check_dsa(const mk_config *c) {
    if (c->index_key[0] && !c->dsa)
        return mk_err(MK_E_UNSUPPORTED, "config.json: %s: is a key of the DeepSeek sparse "
                      "attention families (deepseek_v32, glm_moe_dsa); %s (%s) has no indexer",
                      c->index_key, c->model_type, mk_arch_name(c->arch));
    if (c->index_key[0])
        return mk_err(MK_E_UNSUPPORTED, "config.json: %s: is a glm_moe_dsa key (layers sharing a "
                      "selection); %s's every layer runs its own indexer", c->index_key, c->model_type);
    if (!c->dsa)
        return MK_OK;
    if (c->index_topk <= 0)
        REFUSE(MK_E_FORMAT, "index_topk", "expected an integer > 0, found %d", c->index_topk);
    if (c->index_n_heads <= 0)
        REFUSE(MK_E_FORMAT, "index_n_heads", "expected an integer > 0, found %d", c->index_n_heads);
    if (c->index_head_dim < c->qk_rope_head_dim || c->index_head_dim > 4096)
        REFUSE(MK_E_FORMAT, "index_head_dim",
               "expected an integer in %d (qk_rope_head_dim: the indexer rotates that many "
               "dims of each head)..4096, found %d", c->qk_rope_head_dim, c->index_head_dim);
    if (c->q_lora_rank <= 0)
        REFUSE(MK_E_UNSUPPORTED, "q_lora_rank",
               "%s's indexer reads the q latent: expected an integer > 0, found %d",
               c->model_type, c->q_lora_rank);
    if (!c->rope_interleave) /* transformers' DSA attention never reads the key */
        REFUSE(MK_E_UNSUPPORTED, "rope_interleave",
               "false is not what %s computes (its MLA RoPE is always interleaved)", c->model_type);
    if (c->bad_indexer_type >= 0)
        REFUSE(MK_E_UNSUPPORTED, "indexer_types", "entry %d is neither full nor shared",
               c->bad_indexer_type);
    if (c->index_shared && c->index_shared[0])
        REFUSE(MK_E_FORMAT, "indexer_types",
               "entry 0 is shared, but a shared layer reuses the previous layer's selection "
               "(expected full)");
    return MK_OK;
}

mk_status mk_config_check(const mk_config *c) {
    if (c->arch == MK_ARCH_UNKNOWN)
        return mk_err(MK_E_UNSUPPORTED,
                      "config.json: model_type '%s' (%s) is not supported by the engine; "
                      "supported: %s",
                      c->text_model_type[0] ? c->text_model_type : c->model_type,
                      c->architecture[0] ? c->architecture : "no architectures field",
                      mk_arch_supported());
    MK_TRY(check_shapes(c)); /* counts and dimensions first: their messages are the most direct */
    if (!isfinite(c->rms_norm_eps) || c->rms_norm_eps < 0)
        REFUSE(MK_E_FORMAT, "rms_norm_eps", "expected a finite number >= 0, found %g", c->rms_norm_eps);
    if (c->max_position_embeddings < 0)
        REFUSE(MK_E_FORMAT, "max_position_embeddings", "expected an integer >= 0, found %d",
               c->max_position_embeddings);
    if (strcmp(c->hidden_act, "silu"))
        REFUSE(MK_E_UNSUPPORTED, "hidden_act", "'%s' is not implemented (expected silu)",
               c->hidden_act);
    if (c->attention_bias && c->arch != MK_ARCH_GLM4_MOE && c->arch != MK_ARCH_GPT_OSS)
        REFUSE(MK_E_UNSUPPORTED, "attention_bias",
               "true is not implemented for %s (its attention projections have no bias; "
               "glm4_moe's and gpt_oss's have)", mk_arch_name(c->arch));
    if (c->arch == MK_ARCH_GPT_OSS)
        MK_TRY(check_gpt_oss(c));
    if (c->mlp_bias)
        REFUSE(MK_E_UNSUPPORTED, "mlp_bias",
               "true is not implemented (the engine's MLP projections have no bias)");
    if (c->use_sliding_window)
        REFUSE(MK_E_UNSUPPORTED, "use_sliding_window",
               "true is not implemented (every layer attends to the whole context)");
    if (c->n_shared_experts < 0)
        REFUSE(MK_E_FORMAT, "n_shared_experts", "expected an integer >= 0, found %d",
               c->n_shared_experts);
    if (c->shared_intermediate_size < 0)
        REFUSE(MK_E_FORMAT, "shared_expert_intermediate_size", "expected an integer >= 0, found %d",
               c->shared_intermediate_size);
    MK_TRY(check_rope(c));
    MK_TRY(check_layers(c));
    MK_TRY(check_dsa(c));
    if (mk_config_sigmoid_router(c))
        MK_TRY(check_deepseek(c));
    if (c->rope_interleave && c->arch != MK_ARCH_DEEPSEEK_V3)
        REFUSE(MK_E_UNSUPPORTED, "rope_interleave",
               "true is not implemented for %s (GQA attention rotates pairs (i, i + rot/2))",
               mk_arch_name(c->arch));
    if (c->use_qk_norm && c->arch != MK_ARCH_GLM4_MOE && c->arch != MK_ARCH_MINIMAX_M2)
        REFUSE(MK_E_UNSUPPORTED, "use_qk_norm", "true is a glm4_moe key; %s has no such switch",
               mk_arch_name(c->arch));
    if (c->arch == MK_ARCH_MINIMAX_M2 && !c->use_qk_norm)
        REFUSE(MK_E_UNSUPPORTED, "use_qk_norm",
               "false is not implemented for minimax_m2 (its attention always normalises q and k)");
    if (c->arch == MK_ARCH_MINIMAX_M2 && !c->norm_topk_prob)
        REFUSE(MK_E_UNSUPPORTED, "norm_topk_prob",
               "false is not implemented for minimax_m2 (its router always renormalises the top-k, "
               "as transformers does)");
    if (c->arch == MK_ARCH_MINIMAX_M2) { /* DeepSeek routing keys MiniMax's router does not have */
        if (c->n_group != 1 || c->topk_group != 1)
            REFUSE(MK_E_UNSUPPORTED, "n_group / topk_group",
                   "minimax_m2 routes over all experts (expected 1 / 1 or absent), found %d / %d",
                   c->n_group, c->topk_group);
        if (c->routed_scaling_factor != 1)
            REFUSE(MK_E_UNSUPPORTED, "routed_scaling_factor",
                   "minimax_m2 does not scale its routed output (expected 1 or absent), found %g",
                   c->routed_scaling_factor);
        if (c->first_k_dense_replace != 0)
            REFUSE(MK_E_UNSUPPORTED, "first_k_dense_replace",
                   "every minimax_m2 layer is MoE (expected 0 or absent), found %d",
                   c->first_k_dense_replace);
    }
    if (c->rotary_dim && c->arch != MK_ARCH_MINIMAX_M2)
        REFUSE(MK_E_UNSUPPORTED, "rotary_dim", "is a minimax_m2 key; %s gives partial_rotary_factor",
               mk_arch_name(c->arch));
    if (c->rotary_dim < 0 || c->rotary_dim > c->head_dim || c->rotary_dim % 2)
        REFUSE(MK_E_FORMAT, "rotary_dim", "expected an even number in 2..%d (head_dim), found %d",
               c->head_dim, c->rotary_dim);
    if (c->quant.method == MK_QM_CT)
        MK_TRY(mk_ct_check(&c->quant, "config.json", NULL, -1));
    return MK_OK;
}

/* "WHERE: compressed-tensors FIELD: DETAIL; moekit implements ...": the one
 * message convert and the engine both print. */
static mk_status ct_refuse(const char *where, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static mk_status ct_refuse(const char *where, const char *field, const char *fmt, ...) {
    char detail[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return mk_err(MK_E_UNSUPPORTED,
                  "%s: compressed-tensors %s: %s; moekit implements pack-quantized 4-bit int "
                  "weights with strategy group, group_size > 0, and zero points exactly when "
                  "symmetric is false", where, field, detail);
}

mk_status mk_ct_check(const mk_qcfg *q, const char *where, const char *mod, int has_zero_point) {
    if (q->method != MK_QM_CT)
        return MK_OK;
    if (q->ct_n_groups != 1)
        return ct_refuse(where, "config_groups", "expected exactly one group, found %d",
                         q->ct_n_groups);
    if (strcmp(q->ct_format, "pack-quantized"))
        return ct_refuse(where, "format", "'%s' is not implemented",
                         q->ct_format[0] ? q->ct_format : "(none)");
    if (strcmp(q->ct_type, "int"))
        return ct_refuse(where, "weights.type", "'%s' is not implemented", q->ct_type);
    if (q->ct_bits != 4)
        return ct_refuse(where, "weights.num_bits", "%d is not implemented", q->ct_bits);
    if (q->ct_strategy[0] && strcmp(q->ct_strategy, "group"))
        return ct_refuse(where, "weights.strategy", "'%s' is not implemented", q->ct_strategy);
    if (q->ct_group_size <= 0)
        return ct_refuse(where, "weights.group_size", "%d is not implemented", q->ct_group_size);
    if (q->ct_dynamic)
        return ct_refuse(where, "weights.dynamic",
                         "true (weights quantized at run time) is not a stored format");
    if (has_zero_point == 0 && !q->ct_symmetric)
        return ct_refuse(where, "weights.symmetric",
                         "false but module '%s' has no weight_zero_point", mod ? mod : "?");
    if (has_zero_point > 0 && q->ct_symmetric)
        return ct_refuse(where, "weights.symmetric", "true but module '%s' has a weight_zero_point",
                         mod ? mod : "?");
    return MK_OK;
}

/* ---- two configs of one model --------------------------------------------- */

#define CMP_I(f, key)                                                                        \
    if (a->f != b->f)                                                                        \
        return mk_err(MK_E_MISMATCH, "config.json: %s differs: %lld in %s, %lld in %s", key,  \
                      (long long)a->f, na, (long long)b->f, nb)
#define CMP_D(f, key)                                                                        \
    if (!(a->f == b->f || (isnan(a->f) && isnan(b->f))))                                     \
        return mk_err(MK_E_MISMATCH, "config.json: %s differs: %.17g in %s, %.17g in %s", key, \
                      (double)a->f, na, (double)b->f, nb)
#define CMP_S(f, key)                                                                        \
    if (strcmp(a->f, b->f))                                                                  \
        return mk_err(MK_E_MISMATCH, "config.json: %s differs: '%s' in %s, '%s' in %s", key,  \
                      a->f, na, b->f, nb)

static int cmp_int(const void *x, const void *y) {
    int a = *(const int *)x, b = *(const int *)y;
    return (a > b) - (a < b);
}

/* mlp_only_layers as sets (order and repeats carry no meaning). */
static mk_status cmp_int_sets(const int *x, int nx, const int *y, int ny, const char *na,
                              const char *nb) {
    int *sx = mk_malloc((size_t)(nx + ny + 2) * sizeof *sx);
    if (!sx)
        return mk_err(MK_E_NOMEM, "no memory to compare %s and %s (%d layer numbers)", na, nb, nx + ny);
    int *sy = sx + nx + 1;
    if (nx)
        memcpy(sx, x, (size_t)nx * sizeof *sx);
    if (ny)
        memcpy(sy, y, (size_t)ny * sizeof *sy);
    qsort(sx, (size_t)nx, sizeof *sx, cmp_int);
    qsort(sy, (size_t)ny, sizeof *sy, cmp_int);
    int i = 0, j = 0, diff = 0, in_x = 0;
    while (!diff && (i < nx || j < ny)) {
        if (i < nx && j < ny && sx[i] == sy[j]) {
            int v = sx[i];
            while (i < nx && sx[i] == v)
                i++;
            while (j < ny && sy[j] == v)
                j++;
        } else if (j >= ny || (i < nx && sx[i] < sy[j])) {
            diff = 1;
            in_x = 1;
        } else {
            diff = 1;
        }
    }
    int v = in_x ? sx[i] : diff ? sy[j] : 0;
    free(sx);
    if (diff)
        return mk_err(MK_E_MISMATCH, "config.json: mlp_only_layers differs: layer %d is dense "
                      "only in %s", v, in_x ? na : nb);
    return MK_OK;
}

mk_status mk_config_compare(const mk_config *a, const mk_config *b, const char *na, const char *nb) {
    if (a->arch != b->arch)
        return mk_err(MK_E_MISMATCH, "config.json: different architectures: model_type %s (%s) in "
                      "%s, %s (%s) in %s",
                      a->text_model_type, mk_arch_name(a->arch), na, b->text_model_type,
                      mk_arch_name(b->arch), nb);
    CMP_I(vocab_size, "vocab_size");
    CMP_I(hidden_size, "hidden_size");
    CMP_I(num_layers, "num_hidden_layers");
    CMP_I(num_heads, "num_attention_heads");
    CMP_I(num_kv_heads, "num_key_value_heads");
    CMP_I(head_dim, "head_dim");
    CMP_I(intermediate_size, "intermediate_size");
    CMP_I(moe_intermediate_size, "moe_intermediate_size");
    CMP_I(shared_intermediate_size, "shared_expert_intermediate_size");
    CMP_I(num_experts, "num_experts");
    CMP_I(num_experts_per_tok, "num_experts_per_tok");
    CMP_I(norm_topk_prob, "norm_topk_prob");
    CMP_I(decoder_sparse_step, "decoder_sparse_step");
    CMP_I(max_position_embeddings, "max_position_embeddings");
    CMP_I(tie_word_embeddings, "tie_word_embeddings");
    CMP_D(rms_norm_eps, "rms_norm_eps");
    CMP_D(rope.theta, "rope_theta");
    CMP_S(rope.type, "rope_type");
    CMP_D(rope.factor, "rope factor");
    CMP_D(rope.orig_max_pos, "original_max_position_embeddings");
    CMP_D(rope.beta_fast, "beta_fast");
    CMP_D(rope.beta_slow, "beta_slow");
    CMP_D(rope.mscale, "mscale");
    CMP_D(rope.mscale_all_dim, "mscale_all_dim");
    CMP_D(rope.attention_factor, "attention_factor");
    CMP_D(rope.partial_rotary_factor, "partial_rotary_factor");
    CMP_I(rope.truncate, "rope truncate");
    CMP_I(conv_kernel, "linear_conv_kernel_dim");
    CMP_I(lin_num_k_heads, "linear_num_key_heads");
    CMP_I(lin_num_v_heads, "linear_num_value_heads");
    CMP_I(lin_k_head_dim, "linear_key_head_dim");
    CMP_I(lin_v_head_dim, "linear_value_head_dim");
    CMP_I(q_lora_rank, "q_lora_rank");
    CMP_I(kv_lora_rank, "kv_lora_rank");
    CMP_I(qk_nope_head_dim, "qk_nope_head_dim");
    CMP_I(qk_rope_head_dim, "qk_rope_head_dim");
    CMP_I(v_head_dim, "v_head_dim");
    CMP_I(n_group, "n_group");
    CMP_I(topk_group, "topk_group");
    CMP_I(first_k_dense_replace, "first_k_dense_replace");
    CMP_D(routed_scaling_factor, "routed_scaling_factor");
    CMP_I(rope_interleave, "rope_interleave");
    CMP_I(use_qk_norm, "use_qk_norm");
    CMP_I(rotary_dim, "rotary_dim");
    CMP_S(scoring_func, "scoring_func");
    CMP_S(topk_method, "topk_method");
    CMP_S(hidden_act, "hidden_act");
    CMP_I(attention_bias, "attention_bias");
    CMP_I(mlp_bias, "mlp_bias");
    CMP_I(use_sliding_window, "use_sliding_window");
    CMP_I(moe_layer_freq, "moe_layer_freq");
    CMP_I(sliding_window, "sliding_window");
    CMP_D(swiglu_limit, "swiglu_limit");
    CMP_D(swiglu_alpha, "swiglu_alpha");
    /* per-layer flags only where a side has them: num_hidden_layers itself
     * can be any int (a hostile config's 2^31 - 1 made this a long loop) */
    for (int l = 0; (a->layer_is_sliding || b->layer_is_sliding) && l < a->num_layers; l++)
        if (mk_config_layer_is_sliding(a, l) != mk_config_layer_is_sliding(b, l))
            return mk_err(MK_E_MISMATCH, "config.json: layer %d is %s in %s but %s in %s "
                          "(layer_types)", l,
                          mk_config_layer_is_sliding(a, l) ? "sliding attention" : "full attention", na,
                          mk_config_layer_is_sliding(b, l) ? "sliding attention" : "full attention", nb);
    CMP_I(dsa, "model_type (DeepSeek sparse attention indexer)");
    CMP_I(index_topk, "index_topk");
    CMP_I(index_n_heads, "index_n_heads");
    CMP_I(index_head_dim, "index_head_dim");
    for (int l = 0; (a->index_shared || b->index_shared) && l < a->num_layers; l++) {
        int sa = a->index_shared ? a->index_shared[l] : 0, sb = b->index_shared ? b->index_shared[l] : 0;
        if (sa != sb)
            return mk_err(MK_E_MISMATCH, "config.json: indexer_types: layer %d is %s in %s but %s "
                          "in %s", l, sa ? "shared" : "full", na, sb ? "shared" : "full", nb);
    }
    /* the layer schedule: which layers are MoE follows from the fields
     * compared above and the set of mlp_only_layers; which are full
     * attention from layer_is_full (num_hidden_layers entries, already equal) */
    MK_TRY(cmp_int_sets(a->mlp_only_layers, a->n_mlp_only_layers, b->mlp_only_layers,
                        b->n_mlp_only_layers, na, nb));
    for (int l = 0; a->layer_is_full && b->layer_is_full && l < a->num_layers; l++)
        if (a->layer_is_full[l] != b->layer_is_full[l])
            return mk_err(MK_E_MISMATCH, "config.json: layer %d is %s in %s but %s in %s "
                          "(layer_types / full_attention_interval)", l,
                          a->layer_is_full[l] ? "full attention" : "linear attention", na,
                          b->layer_is_full[l] ? "full attention" : "linear attention", nb);
    return MK_OK;
}
