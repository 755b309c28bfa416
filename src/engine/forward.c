/* The forward pass: embeddings, a per-layer loop of (mixer, MLP/MoE)
 * blocks with pre-norms and residuals, final norm, lm_head.
 *
 * Map of this file: block helpers (gated / plain attention, MLA, Gated
 * DeltaNet, dense MLP) -> forward_chunk (the layer loop, one chunk of
 * tokens) -> mk_engine_forward (validation and chunking). MoE layers go to
 * the MoE executor (moe.c).
 *
 * Each block reads e->xb (the normed input, n rows) and writes e->y. Every
 * buffer is backend memory and every step on it, numeric or data movement,
 * is a backend slot (BE(e)->...); this file only decides what to compute. The
 * math follows transformers 5.x (ARCHITECTURES.md): see the comment on each
 * block for the family details that matter. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_impl.h"
#include "moekit/sample.h"

#define BE(e) ((e)->bi)
#define CTX(e) ((e)->bctx)
#define TAP(l, op, x, rows, cols) mk_engine_tap(e, l, op, x, rows, cols)

/* Step observer (engine.h's mk_tap_fn): the step's output through a host
 * buffer that grows to the largest step (the observer is for checks). A
 * failed download or allocation shows the observer nothing: the run's own
 * error comes from the backend's next sync. */
void mk_engine_tap_out(mk_engine *e, int l, const char *op, const float *x, int64_t rows, int64_t cols) {
    if (!e->on_tap || (e->tap_layer >= 0 && l != e->tap_layer) || e->batch_inv || rows <= 0 || cols <= 0)
        return;
    size_t nf = (size_t)rows * (size_t)cols;
    if (nf > e->tap_cap) {
        float *b = realloc(e->tap_buf, nf * sizeof(float));
        if (!b)
            return;
        e->tap_buf = b;
        e->tap_cap = nf;
    }
    BE(e)->download(CTX(e), e->tap_buf, x, nf * sizeof(float));
    e->on_tap(e->on_tap_user, l, op, e->tap_buf, rows, cols);
}

/* ---- attention (qwen3_moe; gated in qwen3_next / qwen3_5_moe) --------------- */

/* The bias row is host model memory and `copy` reads backend memory only (a
 * device backend faulted on a host pointer): the row is uploaded into
 * e->brow first, repeated into e->brows by a stride-0 copy, then added. */
void mk_engine_add_bias(mk_engine *e, float *rows, const float *bias, int64_t n, int64_t width) {
    BE(e)->upload(CTX(e), e->brow, bias, (size_t)width * sizeof(float));
    BE(e)->copy(CTX(e), e->brows, width, 0, e->brow, 0, 0, n, 1, width);
    BE(e)->axpy(CTX(e), rows, 1.0f, e->brows, n * width);
}

/* q_proj yields per head [q(hd) | gate(hd)] in the hybrids; q/k get their own
 * RMSNorm over head_dim before RoPE on the first rot_dim dims; the gated
 * output is attn * sigmoid(gate) before o_proj. K/V rows go straight into
 * the cache at positions pos .. pos+n-1. */
static void attn_block(mk_engine *e, int l, const mk_attn_w *w, int64_t n) {
    const mk_config *c = e->c;
    int64_t hd = c->head_dim, nH = c->num_heads, nKV = c->num_kv_heads, pos = e->pos;
    float eps = (float)c->rms_norm_eps;
    /* a recorded step stages this token's rows (attention writes them into
     * the cache at the position it reads from device memory) */
    float *kn = e->dev_pos ? e->kst : e->kc[l] + pos * nKV * hd;
    float *vn = e->dev_pos ? e->vst : e->vc[l] + pos * nKV * hd;
    /* QKV projections (one launch where the backend fuses them) */
    if (BE(e)->matmul_n && !e->on_linear) { /* an input observer sees every product */
        const mk_wt *ws[3] = {&w->q, &w->k, &w->v};
        float *ys[3] = {w->gated ? e->qraw : e->q, kn, vn};
        BE(e)->matmul_n(CTX(e), ws, 3, e->xb, n, ys);
    } else {
        mk_engine_matmul(e, &w->q, e->xb, n, w->gated ? e->qraw : e->q);
        mk_engine_matmul(e, &w->k, e->xb, n, kn);
        mk_engine_matmul(e, &w->v, e->xb, n, vn);
    }
    /* split query | gate per head */
    if (w->gated) {
        BE(e)->copy(CTX(e), e->q, hd, 0, e->qraw, 2 * hd, 0, n * nH, 1, hd);
        BE(e)->copy(CTX(e), e->gate, hd, 0, e->qraw + hd, 2 * hd, 0, n * nH, 1, hd);
    }
    /* projection biases (glm4_moe, gpt_oss) */
    if (w->q_bias) {
        mk_engine_add_bias(e, e->q, w->q_bias, n, nH * hd);
        mk_engine_add_bias(e, kn, w->k_bias, n, nKV * hd);
        mk_engine_add_bias(e, vn, w->v_bias, n, nKV * hd);
    }
    TAP(l, "q projection", e->q, n, nH * hd);
    TAP(l, "k projection", kn, n, nKV * hd);
    TAP(l, "v projection", vn, n, nKV * hd);
    if (w->gated)
        TAP(l, "output gate projection", e->gate, n, nH * hd);
    /* q/k norms per head (minimax_m2: over all heads at once; glm4_moe
     * without use_qk_norm: none), then RoPE; per-head norms and RoPE in
     * one launch where the backend fuses them */
    if (BE(e)->qk_norm_rope && !w->whole_qk_norm && !w->q_norm == !w->k_norm) {
        BE(e)->qk_norm_rope(CTX(e), e->q, (int)nH, kn, (int)nKV, n, (int)hd, w->q_norm, w->k_norm, eps,
                            e->rot_dim, e->cos_b, e->sin_b);
    } else {
        if (w->q_norm) {
            int64_t qd = w->whole_qk_norm ? nH * hd : hd, kd = w->whole_qk_norm ? nKV * hd : hd;
            BE(e)->rmsnorm(CTX(e), e->q, qd, e->q, qd, w->q_norm, n * nH * hd / qd, qd, eps);
            BE(e)->rmsnorm(CTX(e), kn, kd, kn, kd, w->k_norm, n * nKV * hd / kd, kd, eps);
        }
        BE(e)->rope(CTX(e), e->q, n, nH * hd, (int)nH, hd, e->rot_dim, e->cos_b, e->sin_b, false);
        BE(e)->rope(CTX(e), kn, n, nKV * hd, (int)nKV, hd, e->rot_dim, e->cos_b, e->sin_b, false);
    }
    TAP(l, "q after q norm and RoPE", e->q, n, nH * hd);
    TAP(l, "k after k norm and RoPE", kn, n, nKV * hd);
    /* causal attention over the cache */
    mk_attn_args a = {.q = e->q, .k = e->kc[l], .v = e->vc[l], .out = e->att, .n = n,
                      .pos0 = pos, .n_heads = (int)nH, .n_kv = (int)nKV, .dk = (int)hd,
                      .dv = (int)hd, .scale = e->attn_scale,
                      /* gpt_oss: sliding layers and learned sinks */
                      .window = mk_config_layer_is_sliding(c, l) ? c->sliding_window : 0,
                      .sinks = w->sinks ? e->sinks + (int64_t)l * nH : NULL,
                      .pos_dev = e->dev_pos ? e->pos_b : NULL,
                      .k_new = e->dev_pos ? kn : NULL, .v_new = e->dev_pos ? vn : NULL};
    BE(e)->attention(CTX(e), &a);
    TAP(l, "attention", e->att, n, nH * hd);
    /* output gate, output projection (+ its bias: gpt_oss) */
    if (w->gated) {
        BE(e)->sigmoid_mul(CTX(e), e->att, e->gate, n * nH * hd);
        TAP(l, "attention times sigmoid(gate)", e->att, n, nH * hd);
    }
    mk_engine_matmul(e, &w->o, e->att, n, e->y);
    if (w->o_bias)
        mk_engine_add_bias(e, e->y, w->o_bias, n, c->hidden_size);
    TAP(l, "output projection", e->y, n, c->hidden_size);
}

/* ---- DSA: the lightning indexer (deepseek_v32 / glm_moe_dsa) ------------------ */

/* Which past positions each token of the chunk attends to, into e->sel
 * (transformers 5.17's DeepseekV32Indexer / GlmMoeDsaIndexer, in f32, no
 * FP8 or Hadamard simulation: transformers has neither):
 *   q_h = rope(wq_b(q latent))_h   (nI heads of dI; q latent = MLA's normed q_a)
 *   k   = rope(LayerNorm(wk(x)))   (one key per token, eps 1e-6, kept in e->ikc)
 *   w   = weights_proj(x) * nI^-0.5
 *   score(t, s) = sum_h w_h relu(q_h . k_s * dI^-0.5), top index_topk of s <= t
 * RoPE rotates the first qk_rope_head_dim dims of each head (the MLA
 * frequencies): half-split pairs for deepseek_v32, interleaved for
 * glm_moe_dsa. A "shared" layer (glm_moe_dsa indexer_types) keeps the
 * previous layer's e->sel: the same tokens, already selected. */
static void dsa_block(mk_engine *e, int l, const mk_dsa_w *d, int64_t n) {
    const mk_config *c = e->c;
    int64_t nI = c->index_n_heads, dI = c->index_head_dim, dr = c->qk_rope_head_dim, pos = e->pos;
    bool il = c->dsa == MK_DSA_INTERLEAVED;
    if (!d->shared) {
        float *k = e->ikc[l] + pos * dI; /* this chunk's key rows */
        mk_engine_matmul(e, &d->wq_b, e->qa, n, e->iq);
        mk_engine_matmul(e, &d->wk, e->xb, n, k);
        BE(e)->layernorm(CTX(e), k, k, d->k_norm, d->k_norm_b, n, dI, 1e-6f);
        BE(e)->rope(CTX(e), e->iq, n, nI * dI, (int)nI, dI, (int)dr, e->cos_b, e->sin_b, il);
        BE(e)->rope(CTX(e), k, n, dI, 1, 0, (int)dr, e->cos_b, e->sin_b, il);
        mk_engine_matmul(e, &d->weights_proj, e->xb, n, e->iw);
        mk_dsa_args a = {.q = e->iq, .k = e->ikc[l], .w = e->iw, .w_scale = 1.0f / sqrtf((float)nI),
                         .scale = 1.0f / sqrtf((float)dI), .sel = e->sel, .sc = e->sel_sc, .n = n,
                         .pos0 = pos, .n_heads = (int)nI, .dim = (int)dI, .topk = (int)e->sel_k};
        BE(e)->dsa_select(CTX(e), &a);
    }
    if (e->on_select) { /* observers (tests, tools) see each token's positions */
        BE(e)->download(CTX(e), e->sel_h, e->sel, (size_t)(n * e->sel_k) * sizeof(int32_t));
        for (int64_t t = 0; t < n; t++) {
            const int32_t *r = e->sel_h + t * e->sel_k;
            int cnt = 0;
            while (cnt < e->sel_k && r[cnt] >= 0)
                cnt++;
            e->on_select(e->on_select_user, l, pos + t, cnt, r);
        }
    }
}

/* ---- MLA (deepseek_v3 / kimi_k2) --------------------------------------------- */

/* The length of the sub-chunk at token s0 of a chunk of n tokens (mla_block):
 * MK_MLA_SUB, except that a chunk longer than that never ends in a
 * sub-chunk shorter than MK_MLA_SUB / 2 = 64 tokens (the one before it
 * gives up half). So a chunk of up to MK_MLA_SUB tokens is one sub-chunk,
 * and in a longer one every sub-chunk starts at a multiple of 64 tokens and
 * holds 64 or more. That keeps the results bitwise those of one pass over
 * the chunk: each token's query, attention row and value product depend on
 * the cache and the token alone, but the kernels choose their path by the
 * call's token count (one token: the CPU's decode attention and fused
 * matvec, CUDA's split attention; CUDA's tiled attention from 16) and
 * block tokens by 32 or 64 from the call's first (the CPU's row products,
 * CUDA's tiled attention), and these sub-chunks get the paths and blocks
 * the whole chunk got. */
static int64_t mla_sub(int64_t s0, int64_t n) {
    int64_t left = n - s0;
    if (left <= MK_MLA_SUB)
        return left;
    return left < MK_MLA_SUB + MK_MLA_SUB / 2 ? MK_MLA_SUB / 2 : MK_MLA_SUB;
}

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
 * more attention FLOPs than expanding K/V (DESIGN.md, known debts). The
 * absorbed queries and latent outputs (nH (2 kl + dr) floats a token, 544
 * KiB at DeepSeek-V3's shape) exist for one sub-chunk of at most MK_MLA_SUB
 * tokens at a time (mla_sub), not for the whole chunk. */
static void mla_block(mk_engine *e, int l, const mk_mla_w *w, int64_t n) {
    const mk_config *c = e->c;
    int64_t nH = c->num_heads, dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim;
    int64_t dvh = c->v_head_dim, qk = dn + dr, kl = c->kv_lora_rank, cw = kl + dr, pos = e->pos;
    float eps = (float)c->rms_norm_eps;
    /* this chunk's cache rows (a recorded step: staged, written by attention) */
    float *kv = e->dev_pos ? e->kst : e->kc[l] + pos * cw;
    /* query: low-rank with its norm, or direct */
    if (c->q_lora_rank > 0) {
        mk_engine_matmul(e, &w->q_a, e->xb, n, e->qa);
        BE(e)->rmsnorm(CTX(e), e->qa, c->q_lora_rank, e->qa, c->q_lora_rank, w->q_a_norm, n,
                       c->q_lora_rank, eps);
        mk_engine_matmul(e, &w->q_b, e->qa, n, e->qraw);
    } else {
        mk_engine_matmul(e, &w->q, e->xb, n, e->qraw);
    }
    TAP(l, "q projection", e->qraw, n, nH * qk);
    /* compressed kv straight into the cache rows: [latent | k_pe], latent normed in place */
    mk_engine_matmul(e, &w->kv_a, e->xb, n, kv);
    BE(e)->rmsnorm(CTX(e), kv, cw, kv, cw, w->kv_a_norm, n, kl, eps);
    TAP(l, "kv_a projection, latent normed", kv, n, cw);
    /* RoPE (interleaved pairs by default) on q's rope part and the shared k_pe */
    BE(e)->rope(CTX(e), e->qraw + dn, n, nH * qk, (int)nH, qk, (int)dr, e->cos_b, e->sin_b,
                c->rope_interleave);
    BE(e)->rope(CTX(e), kv + kl, n, cw, 1, 0, (int)dr, e->cos_b, e->sin_b, c->rope_interleave);
    TAP(l, "q after RoPE", e->qraw, n, nH * qk);
    TAP(l, "latent cache rows after RoPE", kv, n, cw);
    /* DSA: the positions each token of the chunk attends to */
    if (w->dsa.on)
        dsa_block(e, l, &w->dsa, n);
    /* absorbed query -> attention -> values, a sub-chunk of at most
     * MK_MLA_SUB tokens at a time: e->qabs and e->olat hold no more */
    for (int64_t s0 = 0, ns; s0 < n; s0 += ns) {
        ns = mla_sub(s0, n);
        const float *q = e->qraw + s0 * nH * qk;
        /* absorbed query per head: [W_k_h^T q_nope | q_pe] */
        mk_head_mm_args qa = {.w = &w->kv_b, .r0 = 0, .hstep = dn + dvh, .nr = dn,
                              .n_heads = (int)nH, .n = ns, .x = q, .x_tok = nH * qk,
                              .x_head = qk, .y = e->qabs, .y_tok = nH * cw, .y_head = cw};
        BE(e)->head_matmul_t(CTX(e), &qa);
        BE(e)->copy(CTX(e), e->qabs + kl, cw, 0, q + dn, qk, 0, ns * nH, 1, dr);
        /* attention over the latent cache: one shared head, values = the
         * latents; the sub-chunk's tokens sit at positions pos + s0 .. (a
         * recorded step is one token, so its device position needs no s0) */
        mk_attn_args a = {.q = e->qabs, .k = e->kc[l], .v = e->kc[l], .out = e->olat, .n = ns,
                          .pos0 = pos + s0, .n_heads = (int)nH, .n_kv = 1, .dk = (int)cw,
                          .dv = (int)kl, .scale = e->attn_scale, .k_stride = cw, .v_stride = cw,
                          .sel = w->dsa.on ? e->sel + s0 * e->sel_k : NULL, .sel_k = e->sel_k,
                          .pos_dev = e->dev_pos ? e->pos_b : NULL,
                          .k_new = e->dev_pos ? kv + s0 * cw : NULL,
                          .v_new = e->dev_pos ? kv + s0 * cw : NULL};
        BE(e)->attention(CTX(e), &a);
        /* values per head: W_v_h o_lat, into the sub-chunk's rows of the o_proj input */
        mk_head_mm_args va = {.w = &w->kv_b, .r0 = dn, .hstep = dn + dvh, .nr = dvh,
                              .n_heads = (int)nH, .n = ns, .x = e->olat, .x_tok = nH * kl,
                              .x_head = kl, .y = e->att + s0 * nH * dvh, .y_tok = nH * dvh,
                              .y_head = dvh};
        BE(e)->head_matmul(CTX(e), &va);
    }
    TAP(l, "attention (values per head)", e->att, n, nH * dvh);
    /* the output projection over the whole chunk */
    mk_engine_matmul(e, &w->o, e->att, n, e->y);
    TAP(l, "output projection", e->y, n, c->hidden_size);
}

/* ---- Gated DeltaNet (qwen3_next / qwen3_5_moe linear layers) ----------------- */

/* qwen3_next groups its projections per key head g: qkvz row block g is
 * [q dk | k dk | v r*dv | z r*dv], ba block g is [b r | a r]; flatten back
 * to the conv's channel order q | k | v (head-major) and z/b/a per value head. */
static void gdn_ungroup(mk_engine *e, int64_t n) {
    const mk_config *c = e->c;
    int64_t nk = c->lin_num_k_heads, nv = c->lin_num_v_heads, dk = c->lin_k_head_dim,
            dv = c->lin_v_head_dim, r = nv / nk, Kd = nk * dk, Vd = nv * dv, C = 2 * Kd + Vd;
    int64_t gw = 2 * dk + 2 * r * dv, pw = nk * gw;
    const float *p = e->proj, *ba = e->bap;
    /* per token t and key head g: q, k, v into the conv input, z, b, a per value head */
    BE(e)->copy(CTX(e), e->mixed, C, dk, p, pw, gw, n, nk, dk);
    BE(e)->copy(CTX(e), e->mixed + Kd, C, dk, p + dk, pw, gw, n, nk, dk);
    BE(e)->copy(CTX(e), e->mixed + 2 * Kd, C, r * dv, p + 2 * dk, pw, gw, n, nk, r * dv);
    BE(e)->copy(CTX(e), e->z, Vd, r * dv, p + 2 * dk + r * dv, pw, gw, n, nk, r * dv);
    BE(e)->copy(CTX(e), e->gb, nv, r, ba, 2 * nv, 2 * r, n, nk, r);
    BE(e)->copy(CTX(e), e->ga, nv, r, ba + r, 2 * nv, 2 * r, n, nk, r);
}

/* projections -> causal conv + SiLU over q|k|v -> delta-rule recurrence per
 * value head (state in f32) -> per-head RMSNorm (plain weight) * silu(z) ->
 * out_proj. Token by token, so prefill and decode compute the same thing. */
static void gdn_block(mk_engine *e, int l, const mk_gdn_w *w, int64_t n) {
    const mk_config *c = e->c;
    int64_t nk = c->lin_num_k_heads, nv = c->lin_num_v_heads, dk = c->lin_k_head_dim,
            dv = c->lin_v_head_dim, Kd = nk * dk, C = 2 * Kd + nv * dv;
    /* input projections: q|k|v (conv input), z (output gate), b (beta), a
     * (decay); in one launch where the backend fuses them */
    if (BE(e)->matmul_n && !e->on_linear) { /* an input observer sees every product */
        const mk_wt *ws[4] = {&w->qkv, &w->z, &w->b, &w->a};
        float *ys[4] = {e->mixed, e->z, e->gb, e->ga};
        if (w->grouped) {
            ws[0] = &w->qkvz;
            ws[1] = &w->ba;
            ys[0] = e->proj;
            ys[1] = e->bap;
        }
        BE(e)->matmul_n(CTX(e), ws, w->grouped ? 2 : 4, e->xb, n, ys);
        if (w->grouped)
            gdn_ungroup(e, n);
    } else if (w->grouped) {
        mk_engine_matmul(e, &w->qkvz, e->xb, n, e->proj);
        mk_engine_matmul(e, &w->ba, e->xb, n, e->bap);
        gdn_ungroup(e, n);
    } else {
        mk_engine_matmul(e, &w->qkv, e->xb, n, e->mixed);
        mk_engine_matmul(e, &w->z, e->xb, n, e->z);
        mk_engine_matmul(e, &w->b, e->xb, n, e->gb);
        mk_engine_matmul(e, &w->a, e->xb, n, e->ga);
    }
    TAP(l, "q/k/v projection (conv input)", e->mixed, n, C);
    TAP(l, "z projection", e->z, n, nv * dv);
    TAP(l, "b projection", e->gb, n, nv);
    TAP(l, "a projection", e->ga, n, nv);
    /* causal depthwise conv + SiLU, carrying the last K-1 inputs */
    BE(e)->conv1d_silu(CTX(e), e->mixed, C, e->conv_out, n, C, c->conv_kernel, w->conv,
                       e->conv[l]);
    TAP(l, "conv1d + SiLU", e->conv_out, n, C);
    /* gated delta rule */
    mk_gdn_args a = {e->conv_out, e->conv_out + Kd, e->conv_out + 2 * Kd, C, e->ga, e->gb,
                     w->A_log, w->dt_bias, e->ssm[l], e->o, n, (int)nk, (int)nv, (int)dk,
                     (int)dv};
    BE(e)->gdn(CTX(e), &a);
    TAP(l, "gated delta rule", e->o, n, nv * dv);
    /* gated output norm, output projection */
    BE(e)->gated_rmsnorm(CTX(e), e->o, e->z, w->norm, n * nv, dv, (float)c->rms_norm_eps);
    TAP(l, "gated norm", e->o, n, nv * dv);
    mk_engine_matmul(e, &w->out, e->o, n, e->y);
    TAP(l, "output projection", e->y, n, c->hidden_size);
}

/* ---- dense MLP --------------------------------------------------------------- */

/* out[n, H] = down(silu(gate(x)) * up(x)) */
void mk_engine_mlp(mk_engine *e, const mk_wt *gate, const mk_wt *up, const mk_wt *down,
                   const float *x, int64_t n, float *out) {
    if (BE(e)->matmul_n && !e->on_linear && (!e->batch_inv || n <= 1)) {
        /* gate and up read the same x: one launch (on the CPU's int8
         * prefill, one quantization of x) where the backend fuses them */
        const mk_wt *ws[2] = {gate, up};
        float *ys[2] = {e->ex_g, e->ex_u};
        BE(e)->matmul_n(CTX(e), ws, 2, x, n, ys);
    } else {
        mk_engine_matmul(e, gate, x, n, e->ex_g);
        mk_engine_matmul(e, up, x, n, e->ex_u);
    }
    BE(e)->swiglu(CTX(e), e->ex_g, e->ex_g, e->ex_u, n * gate->rows);
    mk_engine_matmul(e, down, e->ex_g, n, out);
}

/* ---- the layer loop -------------------------------------------------------------- */

/* Copy n rows of the residual stream into hidden entry `entry` ([L+1, ntot, H], host). */
static void capture(const mk_engine *e, float *hidden, int entry, int64_t off, int64_t ntot,
                    const float *x, int64_t n) {
    if (!hidden)
        return;
    int64_t H = e->c->hidden_size;
    BE(e)->download(CTX(e), hidden + ((int64_t)entry * ntot + off) * H, x,
                    (size_t)(n * H) * sizeof(float));
}

/* logits[r] = lm_head(xb[r]) for r < n into host memory: straight into the
 * caller's array on a host-memory backend, else staged a few rows at a time. */
static void lm_head(mk_engine *e, const float *xb, int64_t n, float *logits) {
    const mk_model *m = e->m;
    int64_t H = e->c->hidden_size, V = e->c->vocab_size;
    if (BE(e)->host_mem) {
        mk_engine_matmul(e, &m->lm_head, xb, n, logits);
        return;
    }
    for (int64_t r = 0; r < n; r += MK_ENGINE_LOGIT_ROWS) {
        int64_t nr = n - r < MK_ENGINE_LOGIT_ROWS ? n - r : MK_ENGINE_LOGIT_ROWS;
        mk_engine_matmul(e, &m->lm_head, xb + r * H, nr, e->lg);
        BE(e)->download(CTX(e), logits + r * V, e->lg, (size_t)(nr * V) * sizeof(float));
    }
}

/* Non-finite activations are an error, never output: the first block whose
 * output holds a NaN or an infinity is named (a NaN weight, an overflowing
 * scale). n*H compares per block (the backend's find_nonfinite), nothing
 * next to its matmuls. */
static mk_status nonfinite_at(const mk_engine *e, int64_t i, float v, int64_t width,
                              int64_t pos0, int layer, const char *what) {
    char where[48] = "";
    if (layer >= 0)
        snprintf(where, sizeof where, " of layer %d", layer);
    return mk_err(MK_E_FORMAT, "%s: non-finite value (%s) in the output of %s%s at "
                  "position %lld, column %lld: the checkpoint's weights or scales there "
                  "are not usable", mk_model_dir(e->m), isnan(v) ? "NaN" : "infinity",
                  what, where, (long long)(pos0 + i / width), (long long)(i % width));
}

static mk_status check_finite(const mk_engine *e, const float *x, int64_t rows, int64_t width,
                              int64_t pos0, int layer, const char *what) {
    int64_t i = BE(e)->find_nonfinite(CTX(e), x, rows * width);
    if (i < 0)
        return MK_OK;
    float v;
    BE(e)->download(CTX(e), &v, x + i, sizeof v);
    return nonfinite_at(e, i, v, width, pos0, layer, what);
}

/* Deferred checks (a backend with check_finite / nonfinite_take): each
 * block's check is queued with a tag naming it, and the first finding is
 * taken once per chunk, so the device never waits per block. Tags: 0 the
 * token embedding, 1 + 2l layer l's mixer, 2 + 2l its MLP or MoE block,
 * 2L + 1 the final norm. */
static int32_t tag_mixer(int l) { return 1 + 2 * l; }
static int32_t tag_ffn(int l) { return 2 + 2 * l; }
static int32_t tag_final(const mk_engine *e) { return 1 + 2 * e->c->num_layers; }
static int32_t tag_logits(const mk_engine *e) { return 2 + 2 * e->c->num_layers; }

static const char *block_what(const mk_engine *e, int32_t tag, int *layer) {
    *layer = -1;
    if (tag <= 0)
        return "the token embedding";
    if (tag >= tag_logits(e))
        return "lm_head (the logits)";
    if (tag >= tag_final(e))
        return "the final norm";
    int l = (tag - 1) / 2;
    const mk_layer_w *w = &e->m->layers[l];
    *layer = l;
    if (tag == tag_mixer(l))
        return w->mixer == MK_MIXER_GDN ? "the linear attention (Gated DeltaNet)" : "the attention";
    return w->is_moe ? "the MoE block" : "the MLP";
}

/* Check n rows of the residual stream (width H) after block `tag`: queued
 * when the backend defers checks, else at once (naming the block). */
static mk_status check_block(const mk_engine *e, const float *x, int64_t rows, int64_t pos0, int32_t tag) {
    int64_t H = e->c->hidden_size;
    if (BE(e)->check_finite) {
        BE(e)->check_finite(CTX(e), x, rows * H, tag);
        return MK_OK;
    }
    int layer;
    const char *what = block_what(e, tag, &layer);
    return check_finite(e, x, rows, H, pos0, layer, what);
}

/* The first deferred finding since the last take, as the error the
 * synchronous check would have given (the same block, position, column
 * and value); MK_OK when none or when checks are not deferred. The
 * logits' check (greedy steps on the device) covers the row of position
 * `last`. */
static mk_status nonfinite_found(const mk_engine *e, int32_t tag, int64_t i, float v, int64_t pos0,
                                 int64_t last) {
    int layer;
    const char *what = block_what(e, tag, &layer);
    if (tag >= tag_logits(e))
        return nonfinite_at(e, i, v, e->c->vocab_size, last, -1, what);
    return nonfinite_at(e, i, v, e->c->hidden_size, pos0, layer, what);
}

static mk_status take_nonfinite(const mk_engine *e, int64_t pos0, int64_t last) {
    int32_t tag;
    int64_t i;
    float v;
    if (!BE(e)->nonfinite_take || !BE(e)->nonfinite_take(CTX(e), &tag, &i, &v))
        return MK_OK;
    return nonfinite_found(e, tag, i, v, pos0, last);
}

/* The residual step after a block: x += y, the check of block `tag`, and
 * when g is given (the next block's pre-norm) xb = rmsnorm(x) * g; one
 * backend launch where the backend fuses them (add_rmsnorm: the same
 * values), else axpy, check, rmsnorm. */
static mk_status residual(mk_engine *e, int64_t n, int32_t tag, const float *g) {
    int64_t H = e->c->hidden_size;
    float eps = (float)e->c->rms_norm_eps;
    if (BE(e)->add_rmsnorm && BE(e)->check_finite) {
        BE(e)->add_rmsnorm(CTX(e), e->x, e->y, n, H, tag, g ? e->xb : NULL, g, eps);
        return MK_OK;
    }
    BE(e)->axpy(CTX(e), e->x, 1.0f, e->y, n * H);
    MK_TRY(check_block(e, e->x, n, e->pos, tag));
    if (g)
        BE(e)->rmsnorm(CTX(e), e->xb, H, e->x, H, g, n, H, eps);
    return MK_OK;
}

/* The same over host memory (the caller's logits). */
static mk_status check_finite_host(const mk_engine *e, const float *x, int64_t rows, int64_t width,
                                   int64_t pos0, const char *what) {
    for (int64_t i = 0; i < rows * width; i++)
        if (!isfinite(x[i]))
            return nonfinite_at(e, i, x[i], width, pos0, -1, what);
    return MK_OK;
}

/* The part of a step that can be recorded (backend step_begin): the
 * embeddings, the layer loop and, when `head`, the last row's final norm
 * and lm_head into e->lg. Queues no host round trip unless hidden states
 * are captured or an MoE layer takes the general path. */
static mk_status step_layers(mk_engine *e, int64_t n, int64_t off, int64_t ntot, float *hidden,
                             bool head) {
    const mk_config *c = e->c;
    const mk_model *m = e->m;
    int64_t H = c->hidden_size;
    int L = c->num_layers;
    float eps = (float)c->rms_norm_eps;
    /* a pipeline stage runs layers [l0, l1) (layer_pipe.h); one process all */
    int l0 = e->has_pipe ? e->pipe.first : 0, l1 = e->has_pipe ? e->pipe.last : L;
    if (l0 > 0) { /* the previous stage's residual stream (checked there) */
        MK_TRY(e->pipe.recv_hidden(e->pipe.user, l0, e->pos, n, H, e->x));
    } else {
        BE(e)->get_rows(CTX(e), &m->embed, e->ids, n, e->x);
        MK_TRY(check_block(e, e->x, n, e->pos, 0));
        capture(e, hidden, 0, off, ntot, e->x, n);
    }
    if (l1 > l0)
        BE(e)->rmsnorm(CTX(e), e->xb, H, e->x, H, m->layers[l0].in_norm, n, H, eps);
    for (int l = l0; l < l1; l++) {
        const mk_layer_w *w = &m->layers[l];
        TAP(l, "input norm", e->xb, n, H);
        /* mixer: x += mixer(norm(x)); xb = norm(x) for the feed-forward */
        switch (w->mixer) {
        case MK_MIXER_ATTN: attn_block(e, l, &w->attn, n); break;
        case MK_MIXER_MLA: mla_block(e, l, &w->mla, n); break;
        case MK_MIXER_GDN: gdn_block(e, l, &w->gdn, n); break;
        }
        MK_TRY(residual(e, n, tag_mixer(l), w->post_norm));
        TAP(l, "residual after the mixer", e->x, n, H);
        TAP(l, "post-mixer norm", e->xb, n, H);
        /* feed-forward: x += mlp_or_moe(norm(x)); xb = the next layer's
         * pre-norm of x (the final norm follows below) */
        if (w->is_moe)
            MK_TRY(e->moe->run(e, l, &w->moe, n));
        else
            mk_engine_mlp(e, &w->mlp.gate, &w->mlp.up, &w->mlp.down, e->xb, n, e->y);
        TAP(l, w->is_moe ? "MoE output" : "MLP output", e->y, n, H);
        MK_TRY(residual(e, n, tag_ffn(l), l < l1 - 1 ? m->layers[l + 1].in_norm : NULL));
        if (l < L - 1)
            capture(e, hidden, l + 1, off, ntot, e->x, n);
    }
    if (l1 < L) /* the next stage continues from this residual stream */
        MK_TRY(e->pipe.send_hidden(e->pipe.user, l1, e->pos, n, H, e->x));
    if (head) {
        float *xl = e->xb + (n - 1) * H;
        BE(e)->rmsnorm(CTX(e), xl, H, e->x + (n - 1) * H, H, m->norm, 1, H, eps);
        mk_engine_matmul(e, &m->lm_head, xl, 1, e->lg);
        if (e->argmax_dev) { /* greedy on the device: check the logits, keep their argmax */
            BE(e)->check_finite(CTX(e), e->lg, c->vocab_size, tag_logits(e));
            BE(e)->argmax(CTX(e), e->lg, c->vocab_size, e->amax);
        }
    }
    return MK_OK;
}

/* Record a single-token step (a CUDA graph on the CUDA backend: one launch
 * instead of ~10 per layer) once a step of that shape has run unrecorded
 * with every MoE layer fused, no hidden states or routing observer are
 * asked for, and non-finite checks are deferred (they must not wait); DSA
 * layers (their indexer cache rows sit at the position) are not recorded.
 * The recording reads its position from e->pos_b (e->dev_pos), so it is
 * replayed for the following tokens (step_replay) without queuing a slot. */
static bool step_recordable(const mk_engine *e, int64_t n, bool head, const float *hidden) {
    return BE(e)->step_begin && BE(e)->check_finite && !e->no_graph && e->graph_ready && n == 1 &&
           head && !hidden && !e->on_route && !e->on_linear && !e->on_tap && !e->c->dsa;
}

static mk_status chunk_run(mk_engine *e, const int32_t *ids, int64_t n, int64_t off,
                           int64_t ntot, mk_logits_mode mode, float *logits, float *hidden) {
    const mk_config *c = e->c;
    const mk_model *m = e->m;
    int64_t H = c->hidden_size, V = c->vocab_size;
    int L = c->num_layers;
    float eps = (float)c->rms_norm_eps;
    bool last_chunk = off + n == ntot;
    /* the last row's logits staged in e->lg by the step itself (device
     * backends), so a recorded step ends with lm_head and the copy follows */
    bool head = mode == MK_LOGITS_LAST && last_chunk && !BE(e)->host_mem;
    /* token ids and this chunk's rotary tables (before any recording: they
     * read host memory) */
    BE(e)->upload(CTX(e), e->ids, ids, (size_t)n * sizeof(int32_t));
    mk_engine_rope_tables(e, e->pos, n);
    size_t rb = (size_t)(n * (e->rot_dim / 2)) * sizeof(float);
    BE(e)->upload(CTX(e), e->cos_b, e->cos, rb);
    BE(e)->upload(CTX(e), e->sin_b, e->sin, rb);
    e->moe_general = 0;
    bool rec = step_recordable(e, n, head, hidden);
    bool replay = rec && BE(e)->step_replay && e->pos_b;
    if (replay) /* the position the recorded step reads */
        BE(e)->upload(CTX(e), e->pos_b, &e->pos, sizeof e->pos);
    mk_status st = MK_OK;
    if (replay && e->replay_id && e->replay_argmax == e->argmax_dev &&
        BE(e)->step_replay(CTX(e), e->replay_id)) {
        /* this engine's recorded step ran again: no slot queued */
    } else {
        rec = rec && BE(e)->step_begin(CTX(e));
        e->recording = rec;
        e->dev_pos = rec && replay;
        st = step_layers(e, n, off, ntot, hidden, head);
        e->recording = false;
        if (rec && !BE(e)->step_end(CTX(e), st == MK_OK)) {
            /* nothing of the recording ran: queue the step again, unrecorded,
             * and record no more (what broke it would break the next one) */
            e->no_graph = true;
            e->dev_pos = false;
            e->moe_general = 0;
            st = step_layers(e, n, off, ntot, hidden, head);
        } else if (rec && st == MK_OK && e->dev_pos) {
            e->replay_id = BE(e)->step_last(CTX(e));
            e->replay_argmax = e->argmax_dev;
        }
        e->dev_pos = false;
    }
    MK_TRY(st);
    if (!rec && n == 1 && e->moe_general == 0)
        e->graph_ready = true;
    MK_TRY(take_nonfinite(e, e->pos, e->pos + n - 1)); /* deferred checks: one wait per chunk */
    e->pos += n;
    if (e->has_pipe && e->pipe.last < L) { /* a stage before the last: logits come from the last */
        if (mode == MK_LOGITS_ALL)
            MK_TRY(e->pipe.recv_logits(e->pipe.user, e->pos - n, n, V, logits + off * V));
        else if (mode == MK_LOGITS_LAST && last_chunk)
            MK_TRY(e->pipe.recv_logits(e->pipe.user, e->pos - 1, 1, V, logits));
        return BE(e)->sync(CTX(e));
    }
    bool give = e->has_pipe && e->pipe.first > 0; /* the last stage hands its logits back */
    /* final norm and logits: every row when asked for all or for hidden states */
    if (mode == MK_LOGITS_ALL || hidden) {
        BE(e)->rmsnorm(CTX(e), e->xb, H, e->x, H, m->norm, n, H, eps);
        capture(e, hidden, L, off, ntot, e->xb, n);
        MK_TRY(check_block(e, e->xb, n, e->pos - n, tag_final(e)));
        MK_TRY(take_nonfinite(e, e->pos - n, e->pos - 1));
        if (mode == MK_LOGITS_ALL) {
            lm_head(e, e->xb, n, logits + off * V);
            MK_TRY(check_finite_host(e, logits + off * V, n, V, e->pos - n, "lm_head (the logits)"));
            if (give)
                MK_TRY(e->pipe.send_logits(e->pipe.user, e->pos - n, n, V, logits + off * V));
        }
    }
    if (mode == MK_LOGITS_LAST && last_chunk && e->argmax_dev) {
        /* the logits stay on the device: checked and argmax'ed in the step */
        BE(e)->download(CTX(e), e->next_id, e->amax, sizeof(int32_t));
        return BE(e)->sync(CTX(e));
    }
    if (mode == MK_LOGITS_LAST && last_chunk) {
        if (head) {
            BE(e)->download(CTX(e), logits, e->lg, (size_t)V * sizeof(float));
        } else {
            float *xl = e->xb + (n - 1) * H;
            BE(e)->rmsnorm(CTX(e), xl, H, e->x + (n - 1) * H, H, m->norm, 1, H, eps);
            lm_head(e, xl, 1, logits);
        }
        MK_TRY(check_finite_host(e, logits, 1, V, e->pos - 1, "lm_head (the logits)"));
        if (give)
            MK_TRY(e->pipe.send_logits(e->pipe.user, e->pos - 1, 1, V, logits));
    }
    return BE(e)->sync(CTX(e));
}

/* One chunk; on failure a deferred finding still kept is dropped, so that
 * it is not reported by the next call. */
static mk_status forward_chunk(mk_engine *e, const int32_t *ids, int64_t n, int64_t off,
                               int64_t ntot, mk_logits_mode mode, float *logits, float *hidden) {
    mk_status st = chunk_run(e, ids, n, off, ntot, mode, logits, hidden);
    if (st != MK_OK && BE(e)->nonfinite_take) {
        int32_t tag;
        int64_t i;
        float v;
        (void)BE(e)->nonfinite_take(CTX(e), &tag, &i, &v);
    }
    return st;
}

static mk_status forward(mk_engine *e, const int32_t *ids, int64_t n, mk_logits_mode mode,
                         float *logits, float *hidden) {
    const mk_config *c = e->c;
    MK_TRY(mk_engine_settle(e));
    *mk_backend_last(e->be) = e; /* mk_engine_forward_argmax sets la_loop after this */
    e->la_loop = false;
    if (e->pos + n > e->max_ctx)
        return mk_err(MK_E_ARG, "context full: %lld tokens in cache + %lld new > max context %lld",
                      (long long)e->pos, (long long)n, (long long)e->max_ctx);
    for (int64_t t = 0; t < n; t++)
        if (ids[t] < 0 || ids[t] >= c->vocab_size)
            return mk_err(MK_E_ARG, "token id %d at position %lld is outside the vocabulary "
                          "(0..%d)", ids[t], (long long)t, c->vocab_size - 1);
    if (e->has_pipe && hidden)
        return mk_err(MK_E_UNSUPPORTED, "engine: hidden states are not captured across a layer pipeline "
                      "(this stage holds layers %d..%d only)", e->pipe.first, e->pipe.last - 1);
    if (e->has_part && e->part.step) /* the other processes of a partition run this step too */
        MK_TRY(e->part.step(e->part.user, ids, n, e->pos));
    if (e->has_pipe && e->pipe.step) /* ... or the other stages of a pipeline */
        MK_TRY(e->pipe.step(e->pipe.user, ids, n, e->pos, (int)mode));
    for (int64_t off = 0; off < n; off += e->chunk) {
        int64_t nc = n - off < e->chunk ? n - off : e->chunk;
        MK_TRY(forward_chunk(e, ids + off, nc, off, n, mode, logits, hidden));
    }
    return MK_OK;
}

mk_status mk_engine_forward(mk_engine *e, const int32_t *ids, int64_t n, mk_logits_mode mode,
                            float *logits, float *hidden) {
    if (n < 0 || (n > 0 && !ids) || (mode != MK_LOGITS_NONE && !logits))
        return mk_err(MK_E_ARG, "engine forward: bad arguments (n %lld)", (long long)n);
    return forward(e, ids, n, mode, logits, hidden);
}

/* ---- decode lookahead ----
 * A replayable greedy step (one token, a recording that ends with the
 * device's argmax) runs through the backend's step_chain: the step of
 * token t at position p, then at once the step at p + 1 whose token is the
 * argmax the first leaves on the device (linked there, never read by the
 * host first), then the host waits for the first's result only. The caller
 * feeds that result back as the next token (greedy decoding does), finds
 * its step queued, and queues the one after. So the device runs step
 * after step while the host reads, emits and decides; a step queued for a
 * token that is not fed (the caller stopped, sampled otherwise, or does
 * something else) is dropped by mk_engine_settle: it wrote only cache rows
 * at the position (la_ahead rules out recurrent state), which the next
 * step overwrites, and a non-finite finding it kept is cleared. With
 * recurrent state (la_ok, not la_ahead) a step still goes through the
 * chain alone: its uploads from pinned staging, one wait, one readback of
 * the token and the non-finite record together; such a step found stale is
 * kept, not run again (la_run). */

static bool la_can(const mk_engine *e) {
    return e->la_ok && e->amax && e->pos_b && e->replay_id && e->replay_argmax && !e->no_graph;
}

/* Queue the recorded step at position p in result slot `slot`: its token
 * from the host (*id) or, id NULL, the device's last argmax. */
static bool la_queue(mk_engine *e, int64_t p, int slot, const int32_t *id) {
    mk_engine_rope_tables(e, p, 1);
    size_t rb = (size_t)(e->rot_dim / 2) * sizeof(float);
    int64_t pos = p;
    mk_upload ups[4] = {{e->cos_b, e->cos, rb}, {e->sin_b, e->sin, rb}, {e->pos_b, &pos, sizeof pos},
                        {e->ids, id, sizeof *id}};
    return BE(e)->step_chain(CTX(e), e->replay_id, slot, ups, id ? 4 : 3, id ? NULL : e->ids, e->amax,
                             sizeof(int32_t), e->amax, sizeof(int32_t));
}

/* Clear the device's kept non-finite finding (taken and not reported).
 * la_drop: drop e's queued step in `slot` (see above): wait for it and
 * clear the finding, which is the dropped step's or, after a failure,
 * nobody's to report later. */
static void la_clear(mk_engine *e) {
    int32_t tag;
    int64_t i;
    float v;
    (void)BE(e)->nonfinite_take(CTX(e), &tag, &i, &v);
}

static mk_status la_drop(mk_engine *e, int slot) {
    int32_t r, tag;
    int64_t i;
    float v;
    bool found = false, stale = false;
    mk_status st = BE(e)->step_take(CTX(e), slot, &r, sizeof r, &found, &stale, &tag, &i, &v);
    if (found || st != MK_OK)
        la_clear(e);
    return st;
}

void mk_engine_no_ahead(mk_engine *e) { e->la_loop = false; }

mk_status mk_engine_settle(mk_engine *e) {
    void **own = mk_backend_ahead(e->be);
    mk_engine *o = (mk_engine *)*own;
    if (!o)
        return MK_OK;
    *own = NULL;
    o->la_pending = false;
    return la_drop(o, o->la_slot);
}

/* One greedy step through the chain: token `id` (>= 0: queued here; -1:
 * the pending step's, la_id) at e->pos, its outcome in *st; the step after
 * it queued when the engine is in a decode loop (`loop`: its last call was
 * a one-token greedy one, and no other engine used the backend since: two
 * engines taking turns would only drop each other's) and the cache has
 * room. False: nothing ran (the recording cannot be chained now, or the
 * pending step ran under settings changed since), for the caller's usual
 * path. */
static bool la_run(mk_engine *e, int32_t id, bool loop, int32_t *next, mk_status *st) {
    int s;
    if (id < 0) {
        s = e->la_slot;
        e->la_pending = false;
        *mk_backend_ahead(e->be) = NULL;
    } else {
        s = 0;
        if (!la_queue(e, e->pos, s, &id))
            return false;
    }
    bool ahead = e->la_ahead && loop && e->pos + 1 < e->max_ctx && la_queue(e, e->pos + 1, s ^ 1, NULL);
    int32_t got = -1, tag = 0;
    int64_t i = 0;
    float v = 0.0f;
    bool found = false, stale = false;
    *st = BE(e)->step_take(CTX(e), s, &got, sizeof got, &found, &stale, &tag, &i, &v);
    /* A stale step (run under kernel switches changed while it was queued) is run again, which
     * is harmless where it wrote only cache rows at its position. With recurrent state it has
     * advanced the state, which a second run would advance again: its result stands (the same
     * model, computed with the kernels chosen before). */
    if (stale && !e->la_ahead)
        stale = false;
    if (*st != MK_OK || found || stale) {
        if (ahead)
            (void)la_drop(e, s ^ 1);
        if (found || *st != MK_OK)
            la_clear(e); /* as forward_chunk and take_nonfinite do */
        if (*st == MK_OK && found && !stale)
            *st = nonfinite_found(e, tag, i, v, e->pos, e->pos);
        return *st != MK_OK || !stale; /* stale (its finding too): stepped again by the caller */
    }
    e->pos += 1;
    *next = got;
    if (ahead) {
        e->la_pending = true;
        e->la_id = got;
        e->la_slot = s ^ 1;
        *mk_backend_ahead(e->be) = e;
    }
    return true;
}

/* Greedy: on a device backend with argmax and deferred checks, the last
 * step ends with the logits' check and their argmax queued after lm_head
 * (recorded with the step), and 4 bytes come back; otherwise the logits
 * come to the engine's host buffer and mk_argmax picks, as a caller would. */
static mk_status forward_argmax(mk_engine *e, const int32_t *ids, int64_t n, int32_t *next) {
    mk_status st = MK_OK;
    /* decode lookahead (above): the token's step queued by the last call, or queued now */
    void **last = mk_backend_last(e->be);
    const bool loop = e->la_loop && *last == e;
    *last = e;
    if (n == 1 && e->la_pending && ids[0] == e->la_id && la_run(e, -1, loop, next, &st))
        return st;
    MK_TRY(mk_engine_settle(e));
    if (n == 1 && la_can(e) && ids[0] >= 0 && ids[0] < e->c->vocab_size && e->pos < e->max_ctx &&
        la_run(e, ids[0], loop, next, &st))
        return st;
    if (e->amax) {
        e->argmax_dev = true;
        e->next_id = next;
        st = forward(e, ids, n, MK_LOGITS_LAST, e->glg, NULL);
        e->argmax_dev = false;
        e->next_id = NULL;
        return st;
    }
    MK_TRY(forward(e, ids, n, MK_LOGITS_LAST, e->glg, NULL));
    *next = mk_argmax(e->glg, e->c->vocab_size);
    return MK_OK;
}

mk_status mk_engine_forward_argmax(mk_engine *e, const int32_t *ids, int64_t n, int32_t *next) {
    if (n < 1 || !ids || !next)
        return mk_err(MK_E_ARG, "engine forward_argmax: bad arguments (n %lld)", (long long)n);
    mk_status st = forward_argmax(e, ids, n, next);
    e->la_loop = n == 1; /* after forward(), which ends any loop */
    return st;
}
