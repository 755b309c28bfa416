/* Loading a model: config + checkpoint -> per-layer weight views.
 *
 * Map of this file: config checks -> layout detection (module prefix,
 * lm_head, zero-centred norm convention, expert layout) -> per-block
 * loaders (norms, attention, MLA, Gated DeltaNet, dense MLP, MoE with its
 * expert layouts) -> mk_model_open / free / accessors.
 *
 * Which tensors a layer needs follows the family rules of ARCHITECTURES.md
 * (mk_config_layer_is_moe / _is_full_attn); how each linear module is stored
 * is linear.c's business. Tensors the text engine does not use (vision
 * tower, MTP heads) are simply never looked up. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "model/layout.h"
#include "model/load.h"

/* ---- ownership ---------------------------------------------------------- */

void *mk_model_alloc(mk_model *m, size_t n) {
    if (m->n_owned == m->cap_owned) {
        size_t cap = m->cap_owned ? 2 * m->cap_owned : 64;
        void **p = mk_realloc(m->owned, cap * sizeof *p);
        if (!p)
            return NULL;
        m->owned = p;
        m->cap_owned = cap;
    }
    void *b = mk_calloc(1, n ? n : 1);
    if (b) {
        m->owned[m->n_owned++] = b;
        m->resident_bytes += n;
    }
    return b;
}

/* ---- config checks ------------------------------------------------------ */

/* mk_config_check (format/config_check.c) holds every config-only check:
 * the engine, inspect's callers and the fuzzer share it. */
static mk_status check_config(const mk_config *c) { return mk_config_check(c); }

/* ---- layout detection --------------------------------------------------- */

static mk_status find_prefix(mk_ld *ld) {
    for (size_t i = 0; mk_layout_lm_prefixes[i]; i++)
        if (mk_ld_find(ld, "%s.embed_tokens.weight", mk_layout_lm_prefixes[i])) {
            snprintf(ld->pfx, sizeof ld->pfx, "%s", mk_layout_lm_prefixes[i]);
            return MK_OK;
        }
    char tried[512];
    size_t k = 0;
    for (size_t i = 0; mk_layout_lm_prefixes[i] && k < sizeof tried; i++)
        k += (size_t)snprintf(tried + k, sizeof tried - k, "%s%s.embed_tokens.weight", i ? ", " : "",
                              mk_layout_lm_prefixes[i]);
    return mk_err(MK_E_FORMAT, "%s: no token embedding found (tried %s)", mk_ckpt_dir(ld->ck), tried);
}

/* Zero-centred families store w and apply 1 + w; MLX conversions already
 * added the 1. mlx-lm tells raw HF apart by the conv1d axis: HF (C, 1, K),
 * MLX (C, K, 1). Without a conv layer, an MLX layout means "shifted". */
static void detect_norm_shift(mk_ld *ld) {
    const mk_config *c = ld->cfg;
    ld->norm_plus1 = false;
    if (c->arch != MK_ARCH_QWEN3_NEXT && c->arch != MK_ARCH_QWEN3_5_MOE)
        return;
    for (int i = 0; i < c->num_layers; i++) {
        const mk_tensor_info *t = mk_ld_find(ld, "%s.layers.%d.linear_attn.conv1d.weight",
                                             ld->pfx, i);
        if (t && t->ndim == 3 && c->conv_kernel > 1) {
            ld->norm_plus1 = t->shape[2] != 1;
            return;
        }
    }
    bool mlx = c->quant.method == MK_QM_MLX || !strcmp(ld->pfx, "language_model.model");
    for (int i = 0; i < c->num_layers && !mlx; i++)
        mlx = mk_ld_find(ld, "%s.layers.%d.mlp.switch_mlp.gate_proj.weight", ld->pfx, i) != NULL;
    ld->norm_plus1 = !mlx;
}

/* Expert indices in per-expert names must lie in 0..E-1 (gaps are caught
 * per layer when loading). DeepSeek stores its multi-token-prediction
 * layers as model.layers.N.. with N >= num_hidden_layers: not used, not an
 * error. */
static mk_status check_expert_names(mk_ld *ld) {
    const mk_config *c = ld->cfg;
    size_t pl = strlen(ld->pfx);
    for (size_t i = 0; i < mk_ckpt_count(ld->ck); i++) {
        const char *n = mk_ckpt_tensor(ld->ck, i)->name;
        int l, e, k = 0;
        if (strncmp(n, ld->pfx, pl) || strncmp(n + pl, ".layers.", 8))
            continue;
        if (sscanf(n + pl + 8, "%d.mlp.experts.%d.%n", &l, &e, &k) == 2 && k > 0 &&
            (c->arch == MK_ARCH_DEEPSEEK_V3 || c->arch == MK_ARCH_GLM4_MOE) && l >= c->num_layers)
            continue;
        if (sscanf(n + pl + 8, "%d.block_sparse_moe.experts.%d.%n", &l, &e, &k) == 2 && k > 0 &&
            c->arch == MK_ARCH_MINIMAX_M2 && (e < 0 || e >= c->num_experts || l < 0 || l >= c->num_layers))
            return mk_err(MK_E_FORMAT, "tensor '%s': layer or expert index out of range "
                          "(num_local_experts %d, num_hidden_layers %d)", n, c->num_experts,
                          c->num_layers);
        if (sscanf(n + pl + 8, "%d.mlp.experts.%d.%n", &l, &e, &k) == 2 && k > 0 &&
            (e < 0 || e >= c->num_experts || l < 0 || l >= c->num_layers))
            return mk_err(MK_E_FORMAT, "tensor '%s': %s index out of range (num_experts %d, "
                          "num_hidden_layers %d)", n,
                          (l < 0 || l >= c->num_layers) ? "layer" : "expert", c->num_experts,
                          c->num_layers);
    }
    return MK_OK;
}

/* ---- blocks ------------------------------------------------------------- */

static mk_status load_norm(mk_ld *ld, const char *name, int64_t n, bool zero_centred,
                           float **out) {
    MK_TRY(mk_ld_vec(ld, name, n, out));
    if (zero_centred && ld->norm_plus1 && *out)
        for (int64_t i = 0; i < n; i++)
            (*out)[i] += 1.0f;
    return MK_OK;
}

static bool zero_centred(const mk_config *c) {
    return c->arch == MK_ARCH_QWEN3_NEXT || c->arch == MK_ARCH_QWEN3_5_MOE;
}

static mk_status load_attn(mk_ld *ld, const char *p, mk_attn_w *a) {
    const mk_config *c = ld->cfg;
    int64_t H = c->hidden_size, hd = c->head_dim, nH = c->num_heads, nKV = c->num_kv_heads;
    char mod[256];
    a->gated = zero_centred(c); /* the hybrids' full-attention layers are gated */
    snprintf(mod, sizeof mod, "%s.self_attn.q_proj", p);
    MK_TRY(mk_ld_linear(ld, mod, nH * hd * (a->gated ? 2 : 1), H, &a->q));
    snprintf(mod, sizeof mod, "%s.self_attn.k_proj", p);
    MK_TRY(mk_ld_linear(ld, mod, nKV * hd, H, &a->k));
    snprintf(mod, sizeof mod, "%s.self_attn.v_proj", p);
    MK_TRY(mk_ld_linear(ld, mod, nKV * hd, H, &a->v));
    snprintf(mod, sizeof mod, "%s.self_attn.o_proj", p);
    MK_TRY(mk_ld_linear(ld, mod, H, nH * hd, &a->o));
    if (c->attention_bias) { /* q/k/v biases (glm4_moe's o_proj has none, gpt_oss's has) */
        snprintf(mod, sizeof mod, "%s.self_attn.q_proj.bias", p);
        MK_TRY(mk_ld_vec(ld, mod, nH * hd, &a->q_bias));
        snprintf(mod, sizeof mod, "%s.self_attn.k_proj.bias", p);
        MK_TRY(mk_ld_vec(ld, mod, nKV * hd, &a->k_bias));
        snprintf(mod, sizeof mod, "%s.self_attn.v_proj.bias", p);
        MK_TRY(mk_ld_vec(ld, mod, nKV * hd, &a->v_bias));
    }
    if (c->arch == MK_ARCH_GPT_OSS) { /* o_proj bias and the learned attention sinks */
        snprintf(mod, sizeof mod, "%s.self_attn.o_proj.bias", p);
        MK_TRY(mk_ld_vec(ld, mod, H, &a->o_bias));
        snprintf(mod, sizeof mod, "%s.self_attn.sinks", p);
        return mk_ld_vec(ld, mod, nH, &a->sinks);
    }
    /* glm4_moe normalises q/k only with use_qk_norm; minimax_m2 over the
     * whole projection (all heads at once) */
    if (c->arch == MK_ARCH_GLM4_MOE && !c->use_qk_norm)
        return MK_OK;
    a->whole_qk_norm = c->arch == MK_ARCH_MINIMAX_M2;
    snprintf(mod, sizeof mod, "%s.self_attn.q_norm.weight", p);
    MK_TRY(load_norm(ld, mod, a->whole_qk_norm ? nH * hd : hd, zero_centred(c), &a->q_norm));
    snprintf(mod, sizeof mod, "%s.self_attn.k_norm.weight", p);
    return load_norm(ld, mod, a->whole_qk_norm ? nKV * hd : hd, zero_centred(c), &a->k_norm);
}

/* The lightning indexer under self_attn.indexer: wq_b from the q latent,
 * wk and its LayerNorm (gain and bias), weights_proj. A "shared" layer
 * (glm_moe_dsa indexer_types) has none: it reuses the previous selection. */
static mk_status load_dsa(mk_ld *ld, const char *p, int layer, mk_dsa_w *d) {
    const mk_config *c = ld->cfg;
    int64_t H = c->hidden_size, nI = c->index_n_heads, dI = c->index_head_dim;
    char mod[256];
    d->on = true;
    d->shared = c->index_shared && c->index_shared[layer];
    if (d->shared)
        return MK_OK;
    snprintf(mod, sizeof mod, "%s.self_attn.indexer.wq_b", p);
    MK_TRY(mk_ld_linear(ld, mod, nI * dI, c->q_lora_rank, &d->wq_b));
    snprintf(mod, sizeof mod, "%s.self_attn.indexer.wk", p);
    MK_TRY(mk_ld_linear(ld, mod, dI, H, &d->wk));
    snprintf(mod, sizeof mod, "%s.self_attn.indexer.k_norm.weight", p);
    MK_TRY(load_norm(ld, mod, dI, false, &d->k_norm));
    snprintf(mod, sizeof mod, "%s.self_attn.indexer.k_norm.bias", p);
    MK_TRY(mk_ld_vec(ld, mod, dI, &d->k_norm_b));
    snprintf(mod, sizeof mod, "%s.self_attn.indexer.weights_proj", p);
    return mk_ld_linear(ld, mod, nI, H, &d->weights_proj);
}

static mk_status load_mla(mk_ld *ld, const char *p, int layer, mk_mla_w *a) {
    const mk_config *c = ld->cfg;
    int64_t H = c->hidden_size, nH = c->num_heads, ql = c->q_lora_rank, kl = c->kv_lora_rank;
    int64_t qk = (int64_t)c->qk_nope_head_dim + c->qk_rope_head_dim; /* no int overflow */
    char mod[256];
    if (ql > 0) {
        snprintf(mod, sizeof mod, "%s.self_attn.q_a_proj", p);
        MK_TRY(mk_ld_linear(ld, mod, ql, H, &a->q_a));
        snprintf(mod, sizeof mod, "%s.self_attn.q_a_layernorm.weight", p);
        MK_TRY(load_norm(ld, mod, ql, false, &a->q_a_norm));
        snprintf(mod, sizeof mod, "%s.self_attn.q_b_proj", p);
        MK_TRY(mk_ld_linear(ld, mod, nH * qk, ql, &a->q_b));
    } else {
        snprintf(mod, sizeof mod, "%s.self_attn.q_proj", p);
        MK_TRY(mk_ld_linear(ld, mod, nH * qk, H, &a->q));
    }
    snprintf(mod, sizeof mod, "%s.self_attn.kv_a_proj_with_mqa", p);
    MK_TRY(mk_ld_linear(ld, mod, kl + c->qk_rope_head_dim, H, &a->kv_a));
    snprintf(mod, sizeof mod, "%s.self_attn.kv_a_layernorm.weight", p);
    MK_TRY(load_norm(ld, mod, kl, false, &a->kv_a_norm));
    snprintf(mod, sizeof mod, "%s.self_attn.kv_b_proj", p);
    MK_TRY(mk_ld_linear(ld, mod, nH * ((int64_t)c->qk_nope_head_dim + c->v_head_dim), kl,
                          &a->kv_b));
    snprintf(mod, sizeof mod, "%s.self_attn.o_proj", p);
    MK_TRY(mk_ld_linear(ld, mod, H, nH * c->v_head_dim, &a->o));
    return c->dsa ? load_dsa(ld, p, layer, &a->dsa) : MK_OK;
}

static bool has_module(const mk_ld *ld, const char *mod) {
    return mk_ld_find(ld, "%s.weight", mod) || mk_ld_find(ld, "%s.weight_packed", mod);
}

static mk_status load_gdn(mk_ld *ld, const char *p, mk_gdn_w *g) {
    const mk_config *c = ld->cfg;
    int64_t H = c->hidden_size, nk = c->lin_num_k_heads, nv = c->lin_num_v_heads;
    int64_t Kd = nk * c->lin_k_head_dim, Vd = nv * c->lin_v_head_dim, C = 2 * Kd + Vd;
    int64_t K = c->conv_kernel;
    char mod[256];
    snprintf(mod, sizeof mod, "%s.linear_attn.in_proj_qkvz", p);
    g->grouped = has_module(ld, mod);
    if (g->grouped) { /* qwen3_next */
        MK_TRY(mk_ld_linear(ld, mod, 2 * Kd + 2 * Vd, H, &g->qkvz));
        snprintf(mod, sizeof mod, "%s.linear_attn.in_proj_ba", p);
        MK_TRY(mk_ld_linear(ld, mod, 2 * nv, H, &g->ba));
    } else { /* qwen3_5_moe */
        snprintf(mod, sizeof mod, "%s.linear_attn.in_proj_qkv", p);
        MK_TRY(mk_ld_linear(ld, mod, C, H, &g->qkv));
        snprintf(mod, sizeof mod, "%s.linear_attn.in_proj_z", p);
        MK_TRY(mk_ld_linear(ld, mod, Vd, H, &g->z));
        snprintf(mod, sizeof mod, "%s.linear_attn.in_proj_b", p);
        MK_TRY(mk_ld_linear(ld, mod, nv, H, &g->b));
        snprintf(mod, sizeof mod, "%s.linear_attn.in_proj_a", p);
        MK_TRY(mk_ld_linear(ld, mod, nv, H, &g->a));
    }
    snprintf(mod, sizeof mod, "%s.linear_attn.conv1d.weight", p);
    const mk_tensor_info *t = mk_ckpt_find(ld->ck, mod);
    if (t && !((t->ndim == 3 && t->shape[0] == C &&
                ((t->shape[1] == 1 && t->shape[2] == K) || (t->shape[1] == K && t->shape[2] == 1))) ||
               (t->ndim == 2 && t->shape[0] == C && t->shape[1] == K)))
        return mk_err(MK_E_FORMAT, "tensor '%s': expected [%lld, 1, %lld] (HF) or [%lld, %lld, 1] "
                      "(MLX)", mod, (long long)C, (long long)K, (long long)C, (long long)K);
    /* (C,1,K) and (C,K,1) hold the same bytes in the same order: [c][k] */
    MK_TRY(mk_ld_vec(ld, mod, C * K, &g->conv));
    snprintf(mod, sizeof mod, "%s.linear_attn.A_log", p);
    MK_TRY(mk_ld_vec(ld, mod, nv, &g->A_log));
    snprintf(mod, sizeof mod, "%s.linear_attn.dt_bias", p);
    MK_TRY(mk_ld_vec(ld, mod, nv, &g->dt_bias));
    snprintf(mod, sizeof mod, "%s.linear_attn.norm.weight", p);
    MK_TRY(load_norm(ld, mod, c->lin_v_head_dim, false, &g->norm)); /* plain gain, never +1 */
    snprintf(mod, sizeof mod, "%s.linear_attn.out_proj", p);
    return mk_ld_linear(ld, mod, H, Vd, &g->out);
}

static mk_status load_mlp(mk_ld *ld, const char *p, int64_t I, mk_mlp_w *w) {
    int64_t H = ld->cfg->hidden_size;
    char mod[256];
    snprintf(mod, sizeof mod, "%s.gate_proj", p);
    MK_TRY(mk_ld_linear(ld, mod, I, H, &w->gate));
    snprintf(mod, sizeof mod, "%s.up_proj", p);
    MK_TRY(mk_ld_linear(ld, mod, I, H, &w->up));
    snprintf(mod, sizeof mod, "%s.down_proj", p);
    return mk_ld_linear(ld, mod, H, I, &w->down);
}

/* The MoE block's source names: minimax_m2 keeps Mixtral's block_sparse_moe
 * with w1 (gate) / w3 (up) / w2 (down) and the correction bias beside the
 * router; every other family mlp.* with gate/up/down_proj. */
typedef struct moe_names {
    const char *blk, *bias;   /* "mlp" | "block_sparse_moe"; bias module under blk */
    const char *proj[3];      /* gate, up, down */
} moe_names;

static moe_names names_of(const mk_config *c) {
    if (c->arch == MK_ARCH_MINIMAX_M2)
        return (moe_names){"block_sparse_moe", "e_score_correction_bias", {"w1", "w3", "w2"}};
    return (moe_names){"mlp", "gate.e_score_correction_bias", {"gate_proj", "up_proj", "down_proj"}};
}

/* Where projection j (gate, up, down) of expert e records its location:
 * the model's table when streaming, else the loader's scratch (the loader
 * still learns that the view is a routed expert's, for the byte counts). */
static mk_wloc *loc_of(mk_ld *ld, mk_moe_w *moe, int64_t e, int j) {
    if (!moe->locs)
        return &ld->loc_scratch;
    return j == 0 ? &moe->locs[e].gate : j == 1 ? &moe->locs[e].up : &moe->locs[e].down;
}

/* Routed experts, whichever of the three layouts the checkpoint uses. The
 * loader's loc pointer is set for each projection and cleared after. */
static mk_status load_experts_any(mk_ld *ld, const char *p, int layer, mk_moe_w *moe,
                              const char **kind) {
    const mk_config *c = ld->cfg;
    int64_t H = c->hidden_size, I = c->moe_intermediate_size, E = c->num_experts;
    char mod[256], wn[300];
    mk_expert *ex = moe->experts;
    moe_names nm = names_of(c);
    snprintf(mod, sizeof mod, "%s.%s.switch_mlp.gate_proj", p, nm.blk);
    if (has_module(ld, mod)) { /* MLX: stacked (E, out, in) */
        *kind = "stacked";
        static const char *const sw[3] = {"gate_proj", "up_proj", "down_proj"};
        for (int j = 0; j < 3; j++) {
            snprintf(mod, sizeof mod, "%s.%s.switch_mlp.%s", p, nm.blk, sw[j]);
            snprintf(wn, sizeof wn, "%s.weight", mod);
            int64_t R = j == 2 ? H : I, cols = j == 2 ? I : H;
            for (int64_t e = 0; e < E; e++) {
                mk_wt *w = j == 0 ? &ex[e].gate : j == 1 ? &ex[e].up : &ex[e].down;
                ld->loc = loc_of(ld, moe, e, j);
                MK_TRY(mk_ld_stacked(ld, mod, wn, E, e, R, 0, R, cols, w));
            }
        }
        return MK_OK;
    }
    snprintf(mod, sizeof mod, "%s.%s.experts.gate_up_proj", p, nm.blk);
    if (!mk_ckpt_find(ld->ck, mod))
        snprintf(mod, sizeof mod, "%s.%s.experts.gate_up_proj.weight", p, nm.blk);
    if (mk_ckpt_find(ld->ck, mod)) { /* HF fused: gate_up (E, 2I, H) split at I; down (E, H, I) */
        *kind = "fused";
        char dn[256];
        snprintf(dn, sizeof dn, "%s.%s.experts.down_proj", p, nm.blk);
        if (!mk_ckpt_find(ld->ck, dn))
            snprintf(dn, sizeof dn, "%s.%s.experts.down_proj.weight", p, nm.blk);
        for (int64_t e = 0; e < E; e++) {
            ld->loc = loc_of(ld, moe, e, 0);
            MK_TRY(mk_ld_stacked(ld, mod, mod, E, e, 2 * I, 0, I, H, &ex[e].gate));
            ld->loc = loc_of(ld, moe, e, 1);
            MK_TRY(mk_ld_stacked(ld, mod, mod, E, e, 2 * I, I, I, H, &ex[e].up));
            ld->loc = loc_of(ld, moe, e, 2);
            MK_TRY(mk_ld_stacked(ld, dn, dn, E, e, H, 0, H, I, &ex[e].down));
        }
        return MK_OK;
    }
    /* HF per-expert: every index 0..E-1 must be present */
    *kind = "per-expert";
    char missing[512] = "";
    size_t ml = 0;
    int nmiss = 0;
    for (int64_t e = 0; e < E; e++) {
        snprintf(mod, sizeof mod, "%s.%s.experts.%lld.%s", p, nm.blk, (long long)e, nm.proj[0]);
        if (has_module(ld, mod))
            continue;
        if (ml < sizeof missing - 16)
            ml += (size_t)snprintf(missing + ml, sizeof missing - ml, "%s%lld", nmiss ? ", " : "",
                                   (long long)e);
        nmiss++;
    }
    if (nmiss)
        return mk_err(MK_E_FORMAT, "%s: layer %d: %d of %lld routed experts missing "
                      "(indices must be 0..%lld): %s", mk_ckpt_dir(ld->ck), layer, nmiss,
                      (long long)E, (long long)E - 1, missing);
    for (int64_t e = 0; e < E; e++)
        for (int j = 0; j < 3; j++) {
            snprintf(mod, sizeof mod, "%s.%s.experts.%lld.%s", p, nm.blk, (long long)e, nm.proj[j]);
            mk_wt *w = j == 0 ? &ex[e].gate : j == 1 ? &ex[e].up : &ex[e].down;
            ld->loc = loc_of(ld, moe, e, j);
            MK_TRY(mk_ld_linear(ld, mod, j == 2 ? H : I, j == 2 ? I : H, w));
        }
    return MK_OK;
}

static mk_status load_experts(mk_ld *ld, const char *p, int layer, mk_moe_w *moe, const char **kind) {
    mk_status st = load_experts_any(ld, p, layer, moe, kind);
    ld->loc = NULL;
    return st;
}

/* DeepSeek-style shared experts: n_shared_experts under mlp.shared_experts,
 * no gate (deepseek_v3, glm4_moe). */
static bool ds_shared(const mk_config *c) {
    return c->arch == MK_ARCH_DEEPSEEK_V3 || c->arch == MK_ARCH_GLM4_MOE;
}

static mk_status load_moe(mk_ld *ld, const char *p, int layer, mk_moe_w *moe, const char **kind) {
    const mk_config *c = ld->cfg;
    if (c->arch == MK_ARCH_GPT_OSS)
        return mk_ld_oss_moe(ld, p, layer, moe, kind);
    int64_t H = c->hidden_size, E = c->num_experts;
    char mod[256];
    moe_names nm = names_of(c);
    snprintf(mod, sizeof mod, "%s.%s.gate", p, nm.blk);
    MK_TRY(mk_ld_linear(ld, mod, E, H, &moe->router));
    if (mk_config_sigmoid_router(c)) {
        snprintf(mod, sizeof mod, "%s.%s.%s", p, nm.blk, nm.bias);
        MK_TRY(mk_ld_vec(ld, mod, E, &moe->e_bias));
    }
    if (c->shared_intermediate_size <= 0) {
        /* a shared expert the config does not announce would be silently dropped */
        static const char *const sh[] = {"shared_expert.gate_proj", "shared_experts.gate_proj",
                                         "shared_expert_gate"};
        for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++) {
            snprintf(mod, sizeof mod, "%s.mlp.%s", p, sh[i]);
            if (has_module(ld, mod))
                return mk_err(MK_E_MISMATCH, "config.json: %s is %d but the checkpoint has "
                              "'%s' (layer %d): the shared expert would be ignored",
                              ds_shared(c) ? "n_shared_experts" : "shared_expert_intermediate_size",
                              ds_shared(c) ? c->n_shared_experts : c->shared_intermediate_size,
                              mod, layer);
        }
    }
    if (c->shared_intermediate_size > 0) {
        moe->has_shared = true;
        bool ds = ds_shared(c);
        snprintf(mod, sizeof mod, "%s.mlp.%s", p, ds ? "shared_experts" : "shared_expert");
        MK_TRY(load_mlp(ld, mod, c->shared_intermediate_size, &moe->shared));
        if (!ds) {
            moe->has_shared_gate = true;
            snprintf(mod, sizeof mod, "%s.mlp.shared_expert_gate", p);
            MK_TRY(mk_ld_linear(ld, mod, 1, H, &moe->shared_gate));
        }
    }
    moe->experts = mk_model_alloc(ld->m, (size_t)E * sizeof(mk_expert));
    if (!moe->experts)
        return mk_err(MK_E_NOMEM, "layer %d: no memory for %lld expert views", layer,
                      (long long)E);
    if (ld->stream) {
        moe->locs = mk_model_alloc(ld->m, (size_t)E * sizeof(mk_expert_loc));
        if (!moe->locs)
            return mk_err(MK_E_NOMEM, "layer %d: no memory for %lld expert locations", layer,
                          (long long)E);
    }
    return load_experts(ld, p, layer, moe, kind);
}

static mk_status load_layer(mk_ld *ld, int i, mk_layer_w *L, const char **expert_kind) {
    const mk_config *c = ld->cfg;
    int64_t H = c->hidden_size;
    char p[128], name[256];
    snprintf(p, sizeof p, "%s.layers.%d", ld->pfx, i);
    snprintf(name, sizeof name, "%s.input_layernorm.weight", p);
    MK_TRY(load_norm(ld, name, H, zero_centred(c), &L->in_norm));
    snprintf(name, sizeof name, "%s.post_attention_layernorm.weight", p);
    MK_TRY(load_norm(ld, name, H, zero_centred(c), &L->post_norm));
    if (c->arch == MK_ARCH_DEEPSEEK_V3) {
        L->mixer = MK_MIXER_MLA;
        MK_TRY(load_mla(ld, p, i, &L->mla));
    } else if (!mk_config_layer_is_full_attn(c, i)) {
        L->mixer = MK_MIXER_GDN;
        MK_TRY(load_gdn(ld, p, &L->gdn));
    } else {
        L->mixer = MK_MIXER_ATTN;
        MK_TRY(load_attn(ld, p, &L->attn));
    }
    L->is_moe = mk_config_layer_is_moe(c, i);
    if (L->is_moe)
        return load_moe(ld, p, i, &L->moe, expert_kind);
    if (c->intermediate_size <= 0)
        return mk_err(MK_E_FORMAT, "config.json: layer %d is a dense MLP but intermediate_size "
                      "is %d", i, c->intermediate_size);
    snprintf(name, sizeof name, "%s.mlp", p);
    return load_mlp(ld, name, c->intermediate_size, &L->mlp);
}

static mk_status load_top(mk_ld *ld) {
    mk_model *m = ld->m;
    const mk_config *c = ld->cfg;
    char mod[160];
    snprintf(mod, sizeof mod, "%s.embed_tokens", ld->pfx);
    MK_TRY(mk_ld_linear(ld, mod, c->vocab_size, c->hidden_size, &m->embed));
    snprintf(mod, sizeof mod, "%s.norm.weight", ld->pfx);
    MK_TRY(load_norm(ld, mod, c->hidden_size, zero_centred(c), &m->norm));
    if (c->tie_word_embeddings) {
        m->lm_head = m->embed;
        return MK_OK;
    }
    /* lm_head sits beside the text model: language_model.lm_head for MLX VL */
    const char *head = !strcmp(ld->pfx, "language_model.model") ? "language_model.lm_head"
                                                                : "lm_head";
    if (!has_module(ld, head) && has_module(ld, "lm_head"))
        head = "lm_head";
    return mk_ld_linear(ld, head, c->vocab_size, c->hidden_size, &m->lm_head);
}

static const char *storage_name(const mk_ld *ld, const mk_model *m) {
    if (ld->seen_int4)
        return "int4";
    if (ld->seen_fp8)
        return "fp8";
    if (ld->seen_affine)
        return "affine";
    if (ld->seen_mx)
        return "mx";
    static const char *const fl[] = {[MK_WF_F32] = "f32", [MK_WF_BF16] = "bf16",
                                     [MK_WF_F16] = "f16"};
    return m->embed.fmt <= MK_WF_F16 ? fl[m->embed.fmt] : "mixed";
}

/* ---- public ------------------------------------------------------------- */

mk_status mk_model_open(const char *path, mk_model **out) {
    return mk_model_open_ex(path, NULL, out);
}

/* A config count the tensors cannot support is an input error found before
 * anything is sized by it: num_hidden_layers must not exceed the layers the
 * checkpoint holds (1e9 layers would otherwise be allocated first). The other
 * counts (vocab, hidden, experts, heads, intermediate sizes) are bounded by
 * the shape checks of the first tensor they size, which come before any
 * allocation they drive. */
static mk_status check_layer_count(const mk_ld *ld) {
    const mk_config *c = ld->cfg;
    size_t pl = strlen(ld->pfx);
    long long top = -1; /* highest layer index named in the checkpoint */
    for (size_t i = 0; i < mk_ckpt_count(ld->ck); i++) {
        const char *n = mk_ckpt_tensor(ld->ck, i)->name;
        if (strncmp(n, ld->pfx, pl) || strncmp(n + pl, ".layers.", 8))
            continue;
        const char *d = n + pl + 8;
        long long v = 0;
        int k = 0;
        while (d[k] >= '0' && d[k] <= '9' && k < 10)
            v = v * 10 + (d[k++] - '0');
        if (k > 0 && d[k] == '.' && v > top)
            top = v;
    }
    if (c->num_layers > top + 1)
        return mk_err(MK_E_FORMAT,
                      "%s: config.json says num_hidden_layers %d, but the checkpoint holds tensors "
                      "for %lld layer%s (%s.layers.N)",
                      mk_ckpt_dir(ld->ck), c->num_layers, top + 1, top == 0 ? "" : "s", ld->pfx);
    return MK_OK;
}

/* Everything mk_model_open checks and builds, shared with mk_model_check. */
static mk_status load_all(mk_ld *ld, const char **expert_kind) {
    mk_model *m = ld->m;
    MK_TRY(check_config(ld->cfg));
    MK_TRY(find_prefix(ld));
    detect_norm_shift(ld);
    MK_TRY(check_expert_names(ld));
    MK_TRY(check_layer_count(ld));
    MK_TRY(load_top(ld));
    m->layers = mk_model_alloc(m, (size_t)ld->cfg->num_layers * sizeof(mk_layer_w));
    if (!m->layers)
        return mk_err(MK_E_NOMEM, "no memory for %d layers", ld->cfg->num_layers);
    for (int i = 0; i < ld->cfg->num_layers; i++)
        MK_TRY(load_layer(ld, i, &m->layers[i], expert_kind));
    return MK_OK;
}

mk_status mk_model_open_ex(const char *path, const mk_model_opts *opts, mk_model **out) {
    *out = NULL;
    mk_model *m = mk_calloc(1, sizeof *m);
    if (!m)
        return mk_err(MK_E_NOMEM, "no memory for a model");
    unsigned cf = opts && opts->copy_weights && !opts->stream_experts ? MK_CKPT_COPY : 0;
    mk_status st = mk_ckpt_open(path, cf, &m->ck);
    if (st == MK_OK)
        st = mk_config_load(mk_ckpt_dir(m->ck), &m->cfg);
    mk_ld ld = {.m = m, .ck = m->ck, .cfg = &m->cfg, .fp8_to_bf16 = opts && opts->fp8_to_bf16,
                .stream = opts && opts->stream_experts};
    m->stream_experts = ld.stream;
    if (st == MK_OK && ld.stream && ld.fp8_to_bf16)
        st = mk_err(MK_E_ARG, "streaming experts (a memory budget) keeps no bf16 copies of FP8 "
                    "weights: drop --fp8-bf16 or the budget");
    const char *expert_kind = "dense";
    if (st == MK_OK)
        st = load_all(&ld, &expert_kind);
    if (st != MK_OK) {
        if (m->ck)
            mk_err_wrap(st, "loading model %s", path);
        mk_model_free(m);
        return st;
    }
    const char *kind = !strcmp(ld.pfx, "model.language_model") ? "hf-vl"
                       : !strncmp(ld.pfx, "language_model", 14) || m->cfg.quant.method == MK_QM_MLX
                           ? "mlx"
                           : "hf";
    snprintf(m->layout, sizeof m->layout, "%s/%s/%s%s", kind, expert_kind, storage_name(&ld, m),
             ld.fp8_to_bf16 && ld.seen_fp8 ? "->bf16" : "");
    m->quantized = ld.seen_fp8 || ld.seen_affine || ld.seen_int4 || ld.seen_mx;
    *out = m;
    return MK_OK;
}

mk_status mk_model_check(const mk_config *cfg, const mk_ckpt *ck) {
    mk_model m; /* only for the scratch allocations (layer and expert view arrays) */
    memset(&m, 0, sizeof m);
    mk_ld ld = {.m = &m, .ck = ck, .cfg = cfg, .check_only = true};
    const char *expert_kind = "dense";
    mk_status st = load_all(&ld, &expert_kind);
    for (size_t i = 0; i < m.n_owned; i++)
        free(m.owned[i]);
    free(m.owned);
    return st;
}

void mk_model_free(mk_model *m) {
    if (!m)
        return;
    for (size_t i = 0; i < m->n_owned; i++)
        free(m->owned[i]);
    free(m->owned);
    mk_config_free(&m->cfg);
    mk_ckpt_close(m->ck);
    free(m);
}

const mk_config *mk_model_config(const mk_model *m) { return &m->cfg; }
const mk_ckpt *mk_model_ckpt(const mk_model *m) { return m->ck; }
const char *mk_model_dir(const mk_model *m) { return mk_ckpt_dir(m->ck); }
mk_status mk_model_mlock(const mk_model *m) {
    if (m->stream_experts)
        return mk_err(MK_E_UNSUPPORTED, "--mlock locks a resident model; this one streams its experts "
                                        "(leave out --mlock, or give it more memory)");
    return mk_ckpt_mlock(m->ck);
}

const char *mk_model_layout(const mk_model *m) { return m->layout; }

const mk_expert_loc *mk_model_expert_loc(const mk_model *m, int layer, int e) {
    if (layer < 0 || layer >= m->cfg.num_layers || !m->layers[layer].is_moe || !m->layers[layer].moe.locs ||
        e < 0 || e >= m->cfg.num_experts)
        return NULL;
    return &m->layers[layer].moe.locs[e];
}

uint64_t mk_model_resident_bytes(const mk_model *m) { return m->resident_bytes; }
uint64_t mk_model_expert_bytes(const mk_model *m) { return m->expert_bytes; }
bool mk_model_quantized(const mk_model *m) { return m->quantized; }
