/* The forward pass: embeddings, a per-layer loop of (mixer, MLP/MoE)
 * blocks with pre-norms and residuals, final norm, lm_head.
 *
 * Map of this file: block helpers (gated / plain attention, MLA, Gated
 * DeltaNet, dense MLP, routing, MoE) -> forward_chunk (the layer loop, one
 * chunk of tokens) -> mk_engine_forward (validation and chunking).
 *
 * Each block reads e->xb (the normed input, n rows) and writes e->y. Every
 * numeric step goes through the backend (B(e)->...), every routed expert
 * through the expert store; this file only decides what to compute. The
 * math follows transformers 5.x (ARCHITECTURES.md): see the comment on each
 * block for the family details that matter. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engine/engine_impl.h"

#define BE(e) ((e)->be->i)
#define CTX(e) ((e)->be->ctx)

/* ---- attention (qwen3_moe; gated in qwen3_next / qwen3_5_moe) --------------- */

/* q_proj yields per head [q(hd) | gate(hd)] in the hybrids; q/k get their own
 * RMSNorm over head_dim before RoPE on the first rot_dim dims; the gated
 * output is attn * sigmoid(gate) before o_proj. K/V rows go straight into
 * the cache at positions pos .. pos+n-1. */
static void attn_block(mk_engine *e, int l, const mk_attn_w *w, int64_t n) {
    const mk_config *c = e->c;
    int64_t hd = c->head_dim, nH = c->num_heads, nKV = c->num_kv_heads, pos = e->pos;
    float eps = (float)c->rms_norm_eps;
    float *kn = e->kc[l] + pos * nKV * hd, *vn = e->vc[l] + pos * nKV * hd;
    /* QKV projections */
    BE(e)->matmul(CTX(e), &w->q, e->xb, n, w->gated ? e->qraw : e->q);
    BE(e)->matmul(CTX(e), &w->k, e->xb, n, kn);
    BE(e)->matmul(CTX(e), &w->v, e->xb, n, vn);
    /* split query | gate per head */
    if (w->gated)
        for (int64_t t = 0; t < n; t++)
            for (int64_t h = 0; h < nH; h++) {
                const float *src = e->qraw + (t * nH + h) * 2 * hd;
                memcpy(e->q + (t * nH + h) * hd, src, (size_t)hd * sizeof(float));
                memcpy(e->gate + (t * nH + h) * hd, src + hd, (size_t)hd * sizeof(float));
            }
    /* q/k norms per head, then RoPE */
    BE(e)->rmsnorm(CTX(e), e->q, hd, e->q, hd, w->q_norm, n * nH, hd, eps);
    BE(e)->rmsnorm(CTX(e), kn, hd, kn, hd, w->k_norm, n * nKV, hd, eps);
    BE(e)->rope(CTX(e), e->q, n, nH * hd, (int)nH, hd, e->rot_dim, e->cos, e->sin, false);
    BE(e)->rope(CTX(e), kn, n, nKV * hd, (int)nKV, hd, e->rot_dim, e->cos, e->sin, false);
    /* causal attention over the cache */
    mk_attn_args a = {.q = e->q, .k = e->kc[l], .v = e->vc[l], .out = e->att, .n = n,
                      .pos0 = pos, .n_heads = (int)nH, .n_kv = (int)nKV, .dk = (int)hd,
                      .dv = (int)hd, .scale = e->attn_scale};
    BE(e)->attention(CTX(e), &a);
    /* output gate, output projection */
    if (w->gated)
        BE(e)->sigmoid_mul(CTX(e), e->att, e->gate, n * nH * hd);
    BE(e)->matmul(CTX(e), &w->o, e->att, n, e->y);
}

/* ---- MLA (deepseek_v3 / kimi_k2) --------------------------------------------- */

/* q = q_b(norm(q_a(x))) per head [nope | rope]; kv_a(x) = [latent | k_pe];
 * kv_b(norm(latent)) per head [k_nope | v]; k_pe is shared by heads and not
 * normed. The cache holds per token only c = [norm(latent) | rope(k_pe)]
 * (kl + dr floats, shared by all heads) and attention runs in the absorbed
 * form. With kv_b's rows for head h being W_k_h [dn, kl] then W_v_h [dvh, kl]:
 *   q_lat_h = W_k_h^T q_nope_h                               (kl)
 *   score_s = ([q_lat_h | q_pe_h] . c_s) * scale = (q_nope_h . k_nope_h,s + q_pe_h . k_pe_s) * scale
 *   out_h   = W_v_h sum_s softmax(score)_s latent_s          (= sum_s p_s v_h,s)
 * i.e. a multi-query attention with one KV head of key dim kl+dr whose value
 * is the first kl floats of its key row (as vLLM, SGLang and mlx-lm decode
 * MLA). Prefill uses the same form: exact, though for long prompts it costs
 * more attention FLOPs than expanding K/V (DESIGN.md, known debts). */
static void mla_block(mk_engine *e, int l, const mk_mla_w *w, int64_t n) {
    const mk_config *c = e->c;
    int64_t nH = c->num_heads, dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim;
    int64_t dvh = c->v_head_dim, qk = dn + dr, kl = c->kv_lora_rank, cw = kl + dr, pos = e->pos;
    float eps = (float)c->rms_norm_eps;
    float *kv = e->kc[l] + pos * cw; /* this chunk's cache rows */
    /* query: low-rank with its norm, or direct */
    if (c->q_lora_rank > 0) {
        BE(e)->matmul(CTX(e), &w->q_a, e->xb, n, e->qa);
        BE(e)->rmsnorm(CTX(e), e->qa, c->q_lora_rank, e->qa, c->q_lora_rank, w->q_a_norm, n,
                       c->q_lora_rank, eps);
        BE(e)->matmul(CTX(e), &w->q_b, e->qa, n, e->qraw);
    } else {
        BE(e)->matmul(CTX(e), &w->q, e->xb, n, e->qraw);
    }
    /* compressed kv straight into the cache rows: [latent | k_pe], latent normed in place */
    BE(e)->matmul(CTX(e), &w->kv_a, e->xb, n, kv);
    BE(e)->rmsnorm(CTX(e), kv, cw, kv, cw, w->kv_a_norm, n, kl, eps);
    /* RoPE (interleaved pairs by default) on q's rope part and the shared k_pe */
    BE(e)->rope(CTX(e), e->qraw + dn, n, nH * qk, (int)nH, qk, (int)dr, e->cos, e->sin,
                c->rope_interleave);
    BE(e)->rope(CTX(e), kv + kl, n, cw, 1, 0, (int)dr, e->cos, e->sin, c->rope_interleave);
    /* absorbed query per head: [W_k_h^T q_nope | q_pe] */
    mk_head_mm_args qa = {.w = &w->kv_b, .r0 = 0, .hstep = dn + dvh, .nr = dn,
                          .n_heads = (int)nH, .n = n, .x = e->qraw, .x_tok = nH * qk,
                          .x_head = qk, .y = e->qabs, .y_tok = nH * cw, .y_head = cw};
    BE(e)->head_matmul_t(CTX(e), &qa);
    for (int64_t t = 0; t < n; t++)
        for (int64_t h = 0; h < nH; h++)
            memcpy(e->qabs + (t * nH + h) * cw + kl, e->qraw + (t * nH + h) * qk + dn,
                   (size_t)dr * sizeof(float));
    /* attention over the latent cache: one shared head, values = the latents */
    mk_attn_args a = {.q = e->qabs, .k = e->kc[l], .v = e->kc[l], .out = e->olat, .n = n,
                      .pos0 = pos, .n_heads = (int)nH, .n_kv = 1, .dk = (int)cw, .dv = (int)kl,
                      .scale = e->attn_scale, .k_stride = cw, .v_stride = cw};
    BE(e)->attention(CTX(e), &a);
    /* values per head: W_v_h o_lat, then the output projection */
    mk_head_mm_args va = {.w = &w->kv_b, .r0 = dn, .hstep = dn + dvh, .nr = dvh,
                          .n_heads = (int)nH, .n = n, .x = e->olat, .x_tok = nH * kl,
                          .x_head = kl, .y = e->att, .y_tok = nH * dvh, .y_head = dvh};
    BE(e)->head_matmul(CTX(e), &va);
    BE(e)->matmul(CTX(e), &w->o, e->att, n, e->y);
}

/* ---- Gated DeltaNet (qwen3_next / qwen3_5_moe linear layers) ----------------- */

/* qwen3_next groups its projections per key head g: qkvz row block g is
 * [q dk | k dk | v r*dv | z r*dv], ba block g is [b r | a r]; flatten back
 * to the conv's channel order q | k | v (head-major) and z/b/a per value head. */
static void gdn_ungroup(mk_engine *e, int64_t n) {
    const mk_config *c = e->c;
    int64_t nk = c->lin_num_k_heads, nv = c->lin_num_v_heads, dk = c->lin_k_head_dim,
            dv = c->lin_v_head_dim, r = nv / nk, Kd = nk * dk, Vd = nv * dv, C = 2 * Kd + Vd;
    int64_t gw = 2 * dk + 2 * r * dv;
    size_t fs = sizeof(float);
    for (int64_t t = 0; t < n; t++)
        for (int64_t g = 0; g < nk; g++) {
            const float *src = e->proj + t * nk * gw + g * gw;
            float *mx = e->mixed + t * C;
            memcpy(mx + g * dk, src, (size_t)dk * fs);
            memcpy(mx + Kd + g * dk, src + dk, (size_t)dk * fs);
            memcpy(mx + 2 * Kd + g * r * dv, src + 2 * dk, (size_t)(r * dv) * fs);
            memcpy(e->z + t * Vd + g * r * dv, src + 2 * dk + r * dv, (size_t)(r * dv) * fs);
            const float *ba = e->bap + t * 2 * nv + g * 2 * r;
            memcpy(e->gb + t * nv + g * r, ba, (size_t)r * fs);
            memcpy(e->ga + t * nv + g * r, ba + r, (size_t)r * fs);
        }
}

/* projections -> causal conv + SiLU over q|k|v -> delta-rule recurrence per
 * value head (state in f32) -> per-head RMSNorm (plain weight) * silu(z) ->
 * out_proj. Token by token, so prefill and decode compute the same thing. */
static void gdn_block(mk_engine *e, int l, const mk_gdn_w *w, int64_t n) {
    const mk_config *c = e->c;
    int64_t nk = c->lin_num_k_heads, nv = c->lin_num_v_heads, dk = c->lin_k_head_dim,
            dv = c->lin_v_head_dim, Kd = nk * dk, C = 2 * Kd + nv * dv;
    /* input projections: q|k|v (conv input), z (output gate), b (beta), a (decay) */
    if (w->grouped) {
        BE(e)->matmul(CTX(e), &w->qkvz, e->xb, n, e->proj);
        BE(e)->matmul(CTX(e), &w->ba, e->xb, n, e->bap);
        gdn_ungroup(e, n);
    } else {
        BE(e)->matmul(CTX(e), &w->qkv, e->xb, n, e->mixed);
        BE(e)->matmul(CTX(e), &w->z, e->xb, n, e->z);
        BE(e)->matmul(CTX(e), &w->b, e->xb, n, e->gb);
        BE(e)->matmul(CTX(e), &w->a, e->xb, n, e->ga);
    }
    /* causal depthwise conv + SiLU, carrying the last K-1 inputs */
    BE(e)->conv1d_silu(CTX(e), e->mixed, C, e->conv_out, n, C, c->conv_kernel, w->conv,
                       e->conv[l]);
    /* gated delta rule */
    mk_gdn_args a = {e->conv_out, e->conv_out + Kd, e->conv_out + 2 * Kd, C, e->ga, e->gb,
                     w->A_log, w->dt_bias, e->ssm[l], e->o, n, (int)nk, (int)nv, (int)dk,
                     (int)dv};
    BE(e)->gdn(CTX(e), &a);
    /* gated output norm, output projection */
    BE(e)->gated_rmsnorm(CTX(e), e->o, e->z, w->norm, n * nv, dv, (float)c->rms_norm_eps);
    BE(e)->matmul(CTX(e), &w->out, e->o, n, e->y);
}

/* ---- MLP and MoE ---------------------------------------------------------------- */

/* out[n, H] = down(silu(gate(x)) * up(x)) */
static void mlp(mk_engine *e, const mk_wt *gate, const mk_wt *up, const mk_wt *down,
                const float *x, int64_t n, float *out) {
    BE(e)->matmul(CTX(e), gate, x, n, e->ex_g);
    BE(e)->matmul(CTX(e), up, x, n, e->ex_u);
    BE(e)->swiglu(CTX(e), e->ex_g, e->ex_g, e->ex_u, n * gate->rows);
    BE(e)->matmul(CTX(e), down, e->ex_g, n, out);
}

/* Indices of the k largest of s[0..n) into idx (descending, lowest index
 * first on ties, as a stable selection). k is small (<= ~16). */
static void topk(const float *s, int n, int k, int32_t *idx) {
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int i = 0; i < n; i++) {
            bool taken = false;
            for (int q = 0; q < j && !taken; q++)
                taken = idx[q] == i;
            if (!taken && (best < 0 || s[i] > s[best]))
                best = i;
        }
        idx[j] = best;
    }
}

/* Qwen: softmax over all experts (f32), top-k, renormalise if norm_topk_prob
 * (qwen3_5_moe's router renormalises unconditionally). */
static void route_softmax(mk_engine *e, const float *logits, int32_t *idx, float *wt) {
    const mk_config *c = e->c;
    int E = c->num_experts, k = c->num_experts_per_tok;
    float *p = e->ssc;
    memcpy(p, logits, (size_t)E * sizeof(float));
    mk_softmax(p, E);
    topk(p, E, k, idx);
    float sum = 0.0f;
    for (int j = 0; j < k; j++)
        sum += (wt[j] = p[idx[j]]);
    if (c->norm_topk_prob || c->arch == MK_ARCH_QWEN3_5_MOE)
        for (int j = 0; j < k; j++)
            wt[j] /= sum;
}

/* DeepSeek-V3: s = sigmoid(logits); choose with s + bias: keep the topk_group
 * groups with the best sum of their top-2, top-k among those (others
 * masked to 0, as transformers' masked_fill); weights from s, normalised
 * (+1e-20) if norm_topk_prob, times routed_scaling_factor. */
static void route_grouped(mk_engine *e, const float *logits, const float *bias, int32_t *idx,
                          float *wt) {
    const mk_config *c = e->c;
    int E = c->num_experts, k = c->num_experts_per_tok;
    int G = c->n_group > 0 ? c->n_group : 1, TG = c->topk_group > 0 ? c->topk_group : 1;
    int per = E / G;
    float *choice = e->ssc, *gs = e->gsc;
    int32_t gi[2], *keep = e->gkeep;
    for (int i = 0; i < E; i++)
        choice[i] = 1.0f / (1.0f + expf(-logits[i])) + (bias ? bias[i] : 0.0f);
    for (int g = 0; g < G; g++) {
        topk(choice + g * per, per, 2, gi);
        gs[g] = choice[g * per + gi[0]] + choice[g * per + gi[1]];
    }
    topk(gs, G, TG, keep);
    for (int g = 0; g < G; g++) {
        bool kept = false;
        for (int j = 0; j < TG; j++)
            kept |= keep[j] == g;
        if (!kept)
            for (int i = 0; i < per; i++)
                choice[g * per + i] = 0.0f;
    }
    topk(choice, E, k, idx);
    float sum = 0.0f;
    for (int j = 0; j < k; j++)
        sum += (wt[j] = 1.0f / (1.0f + expf(-logits[idx[j]])));
    for (int j = 0; j < k; j++) {
        if (c->norm_topk_prob)
            wt[j] /= sum + 1e-20f;
        wt[j] *= (float)c->routed_scaling_factor;
    }
}

/* Router -> per-token top-k -> tokens grouped by expert (counting sort) ->
 * for each used expert: get it from the store, run its MLP on its tokens,
 * add w * out into their rows, release -> shared expert (qwen: times
 * sigmoid(shared_expert_gate(x))). */
static mk_status moe_block(mk_engine *e, int l, const mk_moe_w *w, int64_t n) {
    const mk_config *c = e->c;
    int64_t H = c->hidden_size, E = c->num_experts, k = c->num_experts_per_tok;
    /* routing */
    BE(e)->matmul(CTX(e), &w->router, e->xb, n, e->router);
    for (int64_t t = 0; t < n; t++) {
        if (c->arch == MK_ARCH_DEEPSEEK_V3)
            route_grouped(e, e->router + t * E, w->e_bias, e->top_idx + t * k, e->top_w + t * k);
        else
            route_softmax(e, e->router + t * E, e->top_idx + t * k, e->top_w + t * k);
    }
    if (e->on_route) /* observers (moekit profile) see each token's choice */
        for (int64_t t = 0; t < n; t++)
            e->on_route(e->on_route_user, l, e->pos + t, (int)k, e->top_idx + t * k,
                        e->top_w + t * k);
    /* group (token, slot) pairs by expert */
    memset(e->cnt, 0, (size_t)(E + 1) * sizeof(int32_t));
    for (int64_t i = 0; i < n * k; i++)
        e->cnt[e->top_idx[i] + 1]++;
    int nused = 0;
    for (int64_t x = 0; x < E; x++) {
        if (e->cnt[x + 1])
            e->used[nused++] = (int32_t)x;
        e->cnt[x + 1] += e->cnt[x];
    }
    for (int64_t i = 0; i < n * k; i++)
        e->order[e->cnt[e->top_idx[i]]++] = (int32_t)i;
    /* after the scatter cnt[x] is the end of expert x's run: ends, not starts */
    mk_expert_store_prefetch(e->store, l, e->used, nused);
    memset(e->y, 0, (size_t)(n * H) * sizeof(float));
    for (int u = 0; u < nused; u++) {
        int x = e->used[u];
        int32_t end = e->cnt[x], beg = x ? e->cnt[x - 1] : 0;
        int64_t m = end - beg;
        const mk_expert *ex;
        mk_status st = mk_expert_store_get(e->store, l, x, &ex);
        if (st != MK_OK)
            return mk_err_wrap(st, "layer %d", l);
        for (int64_t j = 0; j < m; j++) /* gather its tokens */
            memcpy(e->ex_x + j * H, e->xb + (e->order[beg + j] / k) * H, (size_t)H * sizeof(float));
        mlp(e, &ex->gate, &ex->up, &ex->down, e->ex_x, m, e->ex_o);
        mk_expert_store_release(e->store, l, x);
        for (int64_t j = 0; j < m; j++) { /* scatter-add with the routing weight */
            int32_t i = e->order[beg + j];
            BE(e)->axpy(CTX(e), e->y + (i / k) * H, e->top_w[i], e->ex_o + j * H, H);
        }
    }
    /* shared expert */
    if (w->has_shared) {
        mlp(e, &w->shared.gate, &w->shared.up, &w->shared.down, e->xb, n, e->ex_o);
        if (w->has_shared_gate)
            BE(e)->matmul(CTX(e), &w->shared_gate, e->xb, n, e->sh);
        for (int64_t t = 0; t < n; t++) {
            float g = w->has_shared_gate ? 1.0f / (1.0f + expf(-e->sh[t])) : 1.0f;
            BE(e)->axpy(CTX(e), e->y + t * H, g, e->ex_o + t * H, H);
        }
    }
    return MK_OK;
}

/* ---- the layer loop -------------------------------------------------------------- */

/* Copy n rows of the residual stream into hidden entry `entry` ([L+1, ntot, H]). */
static void capture(const mk_engine *e, float *hidden, int entry, int64_t off, int64_t ntot,
                    const float *x, int64_t n) {
    if (!hidden)
        return;
    int64_t H = e->c->hidden_size;
    memcpy(hidden + ((int64_t)entry * ntot + off) * H, x, (size_t)(n * H) * sizeof(float));
}

/* Non-finite activations are an error, never output: the first block whose
 * output holds a NaN or an infinity is named (a NaN weight, an overflowing
 * scale). n*H compares per block, nothing next to its matmuls. */
static mk_status check_finite(const mk_engine *e, const float *x, int64_t rows, int64_t width,
                              int64_t pos0, int layer, const char *what) {
    for (int64_t i = 0; i < rows * width; i++)
        if (!isfinite(x[i])) {
            char where[48] = "";
            if (layer >= 0)
                snprintf(where, sizeof where, " of layer %d", layer);
            return mk_err(MK_E_FORMAT, "%s: non-finite value (%s) in the output of %s%s at "
                          "position %lld, column %lld: the checkpoint's weights or scales there "
                          "are not usable", mk_model_dir(e->m), isnan(x[i]) ? "NaN" : "infinity",
                          what, where, (long long)(pos0 + i / width), (long long)(i % width));
        }
    return MK_OK;
}

static mk_status forward_chunk(mk_engine *e, const int32_t *ids, int64_t n, int64_t off,
                               int64_t ntot, mk_logits_mode mode, float *logits, float *hidden) {
    const mk_config *c = e->c;
    const mk_model *m = e->m;
    int64_t H = c->hidden_size, V = c->vocab_size;
    int L = c->num_layers;
    float eps = (float)c->rms_norm_eps;
    /* token embeddings */
    BE(e)->get_rows(CTX(e), &m->embed, ids, n, e->x);
    MK_TRY(check_finite(e, e->x, n, H, e->pos, -1, "the token embedding"));
    capture(e, hidden, 0, off, ntot, e->x, n);
    mk_engine_rope_tables(e, e->pos, n);
    for (int l = 0; l < L; l++) {
        const mk_layer_w *w = &m->layers[l];
        /* mixer: x += mixer(norm(x)) */
        BE(e)->rmsnorm(CTX(e), e->xb, H, e->x, H, w->in_norm, n, H, eps);
        switch (w->mixer) {
        case MK_MIXER_ATTN: attn_block(e, l, &w->attn, n); break;
        case MK_MIXER_MLA: mla_block(e, l, &w->mla, n); break;
        case MK_MIXER_GDN: gdn_block(e, l, &w->gdn, n); break;
        }
        BE(e)->axpy(CTX(e), e->x, 1.0f, e->y, n * H);
        MK_TRY(check_finite(e, e->x, n, H, e->pos, l,
                            w->mixer == MK_MIXER_GDN ? "the linear attention (Gated DeltaNet)"
                                                     : "the attention"));
        /* feed-forward: x += mlp_or_moe(norm(x)) */
        BE(e)->rmsnorm(CTX(e), e->xb, H, e->x, H, w->post_norm, n, H, eps);
        if (w->is_moe)
            MK_TRY(moe_block(e, l, &w->moe, n));
        else
            mlp(e, &w->mlp.gate, &w->mlp.up, &w->mlp.down, e->xb, n, e->y);
        BE(e)->axpy(CTX(e), e->x, 1.0f, e->y, n * H);
        MK_TRY(check_finite(e, e->x, n, H, e->pos, l, w->is_moe ? "the MoE block" : "the MLP"));
        if (l < L - 1)
            capture(e, hidden, l + 1, off, ntot, e->x, n);
    }
    e->pos += n;
    /* final norm and logits: every row when asked for all or for hidden states */
    bool last_chunk = off + n == ntot;
    if (mode == MK_LOGITS_ALL || hidden) {
        BE(e)->rmsnorm(CTX(e), e->xb, H, e->x, H, m->norm, n, H, eps);
        capture(e, hidden, L, off, ntot, e->xb, n);
        MK_TRY(check_finite(e, e->xb, n, H, e->pos - n, -1, "the final norm"));
        if (mode == MK_LOGITS_ALL) {
            BE(e)->matmul(CTX(e), &m->lm_head, e->xb, n, logits + off * V);
            MK_TRY(check_finite(e, logits + off * V, n, V, e->pos - n, -1, "lm_head (the logits)"));
        }
    }
    if (mode == MK_LOGITS_LAST && last_chunk) {
        float *xl = e->xb + (n - 1) * H;
        BE(e)->rmsnorm(CTX(e), xl, H, e->x + (n - 1) * H, H, m->norm, 1, H, eps);
        BE(e)->matmul(CTX(e), &m->lm_head, xl, 1, logits);
        MK_TRY(check_finite(e, logits, 1, V, e->pos - 1, -1, "lm_head (the logits)"));
    }
    return MK_OK;
}

mk_status mk_engine_forward(mk_engine *e, const int32_t *ids, int64_t n, mk_logits_mode mode,
                            float *logits, float *hidden) {
    const mk_config *c = e->c;
    if (n < 0 || (n > 0 && !ids) || (mode != MK_LOGITS_NONE && !logits))
        return mk_err(MK_E_ARG, "engine forward: bad arguments (n %lld)", (long long)n);
    if (e->pos + n > e->max_ctx)
        return mk_err(MK_E_ARG, "context full: %lld tokens in cache + %lld new > max context %lld",
                      (long long)e->pos, (long long)n, (long long)e->max_ctx);
    for (int64_t t = 0; t < n; t++)
        if (ids[t] < 0 || ids[t] >= c->vocab_size)
            return mk_err(MK_E_ARG, "token id %d at position %lld is outside the vocabulary "
                          "(0..%d)", ids[t], (long long)t, c->vocab_size - 1);
    for (int64_t off = 0; off < n; off += e->chunk) {
        int64_t nc = n - off < e->chunk ? n - off : e->chunk;
        MK_TRY(forward_chunk(e, ids + off, nc, off, n, mode, logits, hidden));
    }
    return MK_OK;
}
