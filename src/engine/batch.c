/* A decode step over several sequences in one forward (continuous
 * batching, engine.h mk_engine_decode_batch).
 *
 * Each sequence is an engine of its own (its position, KV / latent caches
 * and Gated DeltaNet conv and recurrent state), all over one model, one
 * backend and one expert store. The step runs on the first engine's
 * scratch (the lead): the n new tokens are n rows of one chunk, so every
 * dense projection, the router, the shared expert and lm_head is one
 * product over the batch, and the MoE layer groups the batch's (token,
 * slot) pairs by expert as prefill does (moe.c), so an expert chosen by
 * several sequences is read once and multiplied once per step. What is
 * per sequence runs per sequence: K/V (or latent) rows go to each one's
 * cache at its own position, RoPE uses each row's position, attention,
 * the causal conv and the delta rule run on each one's cache or state
 * (through the backend's _each slots where it has them: one call for the
 * batch, each sequence on its own cache or state).
 *
 * Batch invariance: a sequence's logits are bitwise those of
 * mk_engine_forward(e, &id, 1, ...) on its engine alone, whatever else is
 * in the step. Every slot used here computes a row from that row alone
 * (norms, RoPE, element-wise ops, routing, combine in ascending expert
 * order, MLA's transposed per-head product); the products go through
 * mk_engine_mm with e->batch_inv set, i.e. the backend's matmul_each (each
 * row as the one-token kernels compute it) or matmul once per token, and
 * MLA's per-head value product is run per token. The fused MoE slot is used
 * where the backend has one (CUDA): its contract is each row as a
 * one-token call (backend.h). Recorded steps are not used.
 * tests/unit/test_engine_batch.c holds this bitwise on every family.
 *
 * Expert partitions and layer pipelines (moe_part.h, layer_pipe.h; MPI):
 * the step announces itself once through the first sequence's
 * `step_batch` hook (each sequence's hook `user` names it to the other
 * processes), runs the stage's layers only (the hidden rows of the batch
 * in from the previous stage and out to the next, the logits rows back
 * from the last, with the first sequence's position in the messages) and
 * in each MoE layer the partition's share of the experts, then one
 * exchange over all the batch's rows (moe.c), as prefill does. A NULL
 * logits buffer computes none (a follower process).
 *
 * Families: the blocks below mirror forward.c's. A family or option they
 * do not know must not be batched: mk_engine_batchable lists what they
 * cover, and callers step other models one sequence at a time. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engine/engine_impl.h"

#define BE(e) ((e)->bi)
#define CTX(e) ((e)->bctx)

void mk_engine_mm(mk_engine *e, const mk_wt *w, const float *x, int64_t n, float *y) {
    if (!e->batch_inv || n <= 1) {
        BE(e)->matmul(CTX(e), w, x, n, y);
    } else if (BE(e)->matmul_each) {
        BE(e)->matmul_each(CTX(e), w, x, n, y);
    } else {
        for (int64_t t = 0; t < n; t++)
            BE(e)->matmul(CTX(e), w, x + t * w->cols, 1, y + t * w->rows);
    }
}

/* ---- what can be batched ----------------------------------------------------- */

/* The families whose blocks this file mirrors (forward.c). A new family
 * is added here only with its block below and a case in
 * tests/unit/test_engine_batch.c. */
static bool family_known(const mk_config *c) {
    switch (c->arch) {
    case MK_ARCH_QWEN3_MOE:
    case MK_ARCH_QWEN3_NEXT:
    case MK_ARCH_QWEN3_5_MOE:
    case MK_ARCH_DEEPSEEK_V3:
    case MK_ARCH_GLM4_MOE:
    case MK_ARCH_MINIMAX_M2: return !c->dsa; /* DSA's indexer has no batched step */
    default: return false;                       /* gpt_oss (sinks, windows, biased experts) */
    }
}

bool mk_engine_batchable(mk_engine *const *es, int n) {
    if (n < 1 || !es || !es[0])
        return false;
    const mk_engine *l = es[0];
    if (!family_known(l->c) || l->on_route || 2 * (int64_t)n > l->chunk || n > MK_ENGINE_MAX_BATCH)
        return false;
    /* a partition or pipeline that announces steps to other processes must
     * announce batched ones too, or those would not follow */
    if ((l->has_part && l->part.step && !l->part.step_batch) ||
        (l->has_pipe && l->pipe.step && !l->pipe.step_batch))
        return false;
    for (int i = 0; i < n; i++) {
        const mk_engine *e = es[i];
        if (!e || e->m != l->m || e->be != l->be || e->k != l->k || e->on_route)
            return false;
        /* the step runs on the lead's hooks: every row of the same partition
         * (its range and exchange) and the same stage (its layers and hooks) */
        if (e->has_part != l->has_part ||
            (l->has_part && (e->part.range != l->part.range || e->part.exchange != l->part.exchange)))
            return false;
        if (e->has_pipe != l->has_pipe ||
            (l->has_pipe &&
             (e->pipe.first != l->pipe.first || e->pipe.last != l->pipe.last ||
              e->pipe.recv_hidden != l->pipe.recv_hidden || e->pipe.send_hidden != l->pipe.send_hidden)))
            return false;
        /* the lead's store serves every row: the same store, or each
         * engine's own resident one (the same views of the same model) */
        if (e->store != l->store && !(e->own_store && l->own_store))
            return false;
        for (int j = 0; j < i; j++)
            if (es[j] == e)
                return false;
    }
    return true;
}

/* ---- blocks ------------------------------------------------------------------ */

/* The batch's attention, aa[i] sequence i's call (n 1, its caches and
 * position). The new rows of width w (a cache row) are at kn + i w and,
 * unless v aliases k (vn NULL: MLA's latent rows), at vn = kn + n w, in the
 * buffer the outputs go to. With attention_each they move to e->qraw (free
 * by then; `stage_fits`: large enough) and the slot writes them into the
 * caches; otherwise every row is copied to its cache row before any
 * attention writes the outputs, then each sequence attends. */
static void attend_b(mk_engine *e, mk_attn_args *aa, int n, const float *kn, const float *vn, int64_t w,
                     bool stage_fits) {
    const int nr = vn ? 2 : 1;
    if (BE(e)->attention_each && stage_fits) {
        BE(e)->copy(CTX(e), e->qraw, 0, 0, kn, 0, 0, 1, 1, nr * n * w);
        for (int i = 0; i < n; i++) {
            aa[i].k_new = e->qraw + i * w;
            aa[i].v_new = e->qraw + ((nr - 1) * n + i) * w;
        }
        if (BE(e)->attention_each(CTX(e), aa, n))
            return;
    }
    for (int i = 0; i < n; i++) {
        BE(e)->copy(CTX(e), (float *)aa[i].k + aa[i].pos0 * w, 0, 0, kn + i * w, 0, 0, 1, 1, w);
        if (vn)
            BE(e)->copy(CTX(e), (float *)aa[i].v + aa[i].pos0 * w, 0, 0, vn + i * w, 0, 0, 1, 1, w);
    }
    for (int i = 0; i < n; i++) {
        aa[i].k_new = aa[i].v_new = NULL;
        BE(e)->attention(CTX(e), &aa[i]);
    }
}

/* forward.c's attn_block over the batch: K and V of the n rows are made in
 * the free attention-output buffer (K at e->att, V after it: 2n <= chunk),
 * normed and rotated there, then copied to each sequence's cache row; each
 * sequence attends over its own cache (attend_b: in one attention_each
 * call that writes the rows itself where the backend has it). */
static void attn_b(mk_engine *e, mk_engine *const *es, int n, int l, const mk_attn_w *w) {
    const mk_config *c = e->c;
    int64_t hd = c->head_dim, nH = c->num_heads, nKV = c->num_kv_heads, kw = nKV * hd;
    float eps = (float)c->rms_norm_eps;
    float *kn = e->att, *vn = e->att + n * kw;
    mk_engine_mm(e, &w->q, e->xb, n, w->gated ? e->qraw : e->q);
    mk_engine_mm(e, &w->k, e->xb, n, kn);
    mk_engine_mm(e, &w->v, e->xb, n, vn);
    if (w->gated) {
        BE(e)->copy(CTX(e), e->q, hd, 0, e->qraw, 2 * hd, 0, n * nH, 1, hd);
        BE(e)->copy(CTX(e), e->gate, hd, 0, e->qraw + hd, 2 * hd, 0, n * nH, 1, hd);
    }
    if (w->q_bias) {
        mk_engine_add_bias(e, e->q, w->q_bias, n, nH * hd);
        mk_engine_add_bias(e, kn, w->k_bias, n, kw);
        mk_engine_add_bias(e, vn, w->v_bias, n, kw);
    }
    if (w->q_norm) {
        int64_t qd = w->whole_qk_norm ? nH * hd : hd, kd = w->whole_qk_norm ? kw : hd;
        BE(e)->rmsnorm(CTX(e), e->q, qd, e->q, qd, w->q_norm, n * nH * hd / qd, qd, eps);
        BE(e)->rmsnorm(CTX(e), kn, kd, kn, kd, w->k_norm, n * kw / kd, kd, eps);
    }
    BE(e)->rope(CTX(e), e->q, n, nH * hd, (int)nH, hd, e->rot_dim, e->cos_b, e->sin_b, false);
    BE(e)->rope(CTX(e), kn, n, kw, (int)nKV, hd, e->rot_dim, e->cos_b, e->sin_b, false);
    mk_attn_args aa[MK_ENGINE_MAX_BATCH];
    for (int i = 0; i < n; i++) {
        const mk_engine *s = es[i];
        aa[i] = (mk_attn_args){.q = e->q + i * nH * hd, .k = s->kc[l], .v = s->vc[l],
                               .out = e->att + i * nH * hd, .n = 1, .pos0 = s->pos, .n_heads = (int)nH,
                               .n_kv = (int)nKV, .dk = (int)hd, .dv = (int)hd, .scale = e->attn_scale};
    }
    /* e->qraw is free once q is made: nC * 2 nH hd floats >= 2 n kw */
    attend_b(e, aa, n, kn, vn, kw, true);
    if (w->gated)
        BE(e)->sigmoid_mul(CTX(e), e->att, e->gate, n * nH * hd);
    mk_engine_mm(e, &w->o, e->att, n, e->y);
}

/* forward.c's mla_block over the batch; its n rows (n <= MK_MLA_SUB and
 * half the chunk) fit e->qabs and e->olat. The compressed rows [latent |
 * k_pe] are made in e->olat (free until the attention writes it, and sized
 * for them too), normed and rotated there and copied to each sequence's
 * latent cache (or written by attention_each, as in attn_b); the absorbed
 * query product is batch-invariant
 * (mk_matmul_rows_t sums rows in a fixed order), the value product runs
 * per token. */
static void mla_b(mk_engine *e, mk_engine *const *es, int n, int l, const mk_mla_w *w) {
    const mk_config *c = e->c;
    int64_t nH = c->num_heads, dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim;
    int64_t dvh = c->v_head_dim, qk = dn + dr, kl = c->kv_lora_rank, cw = kl + dr;
    float eps = (float)c->rms_norm_eps;
    float *kv = e->olat;
    if (c->q_lora_rank > 0) {
        mk_engine_mm(e, &w->q_a, e->xb, n, e->qa);
        BE(e)->rmsnorm(CTX(e), e->qa, c->q_lora_rank, e->qa, c->q_lora_rank, w->q_a_norm, n,
                       c->q_lora_rank, eps);
        mk_engine_mm(e, &w->q_b, e->qa, n, e->qraw);
    } else {
        mk_engine_mm(e, &w->q, e->xb, n, e->qraw);
    }
    mk_engine_mm(e, &w->kv_a, e->xb, n, kv);
    BE(e)->rmsnorm(CTX(e), kv, cw, kv, cw, w->kv_a_norm, n, kl, eps);
    BE(e)->rope(CTX(e), e->qraw + dn, n, nH * qk, (int)nH, qk, (int)dr, e->cos_b, e->sin_b,
                c->rope_interleave);
    BE(e)->rope(CTX(e), kv + kl, n, cw, 1, 0, (int)dr, e->cos_b, e->sin_b, c->rope_interleave);
    mk_head_mm_args qa = {.w = &w->kv_b, .r0 = 0, .hstep = dn + dvh, .nr = dn,
                          .n_heads = (int)nH, .n = n, .x = e->qraw, .x_tok = nH * qk,
                          .x_head = qk, .y = e->qabs, .y_tok = nH * cw, .y_head = cw};
    BE(e)->head_matmul_t(CTX(e), &qa);
    BE(e)->copy(CTX(e), e->qabs + kl, cw, 0, e->qraw + dn, qk, 0, n * nH, 1, dr);
    mk_attn_args aa[MK_ENGINE_MAX_BATCH];
    for (int i = 0; i < n; i++) {
        const mk_engine *s = es[i];
        aa[i] = (mk_attn_args){.q = e->qabs + i * nH * cw, .k = s->kc[l], .v = s->kc[l],
                               .out = e->olat + i * nH * kl, .n = 1, .pos0 = s->pos,
                               .n_heads = (int)nH, .n_kv = 1, .dk = (int)cw, .dv = (int)kl,
                               .scale = e->attn_scale, .k_stride = cw, .v_stride = cw};
    }
    /* e->qraw is free once the rotated query part is copied out: nC * nH * qk floats */
    attend_b(e, aa, n, kv, NULL, cw, cw <= nH * qk);
    for (int i = 0; i < n; i++) { /* per token: mk_matmul_rows differs between 1 and n tokens */
        mk_head_mm_args va = {.w = &w->kv_b, .r0 = dn, .hstep = dn + dvh, .nr = dvh,
                              .n_heads = (int)nH, .n = 1, .x = e->olat + i * nH * kl,
                              .x_tok = nH * kl, .x_head = kl, .y = e->att + i * nH * dvh,
                              .y_tok = nH * dvh, .y_head = dvh};
        BE(e)->head_matmul(CTX(e), &va);
    }
    mk_engine_mm(e, &w->o, e->att, n, e->y);
}

/* forward.c's gdn_ungroup (qwen3_next's grouped projections), n rows. */
static void gdn_ungroup_b(mk_engine *e, int64_t n) {
    const mk_config *c = e->c;
    int64_t nk = c->lin_num_k_heads, nv = c->lin_num_v_heads, dk = c->lin_k_head_dim,
            dv = c->lin_v_head_dim, r = nv / nk, Kd = nk * dk, Vd = nv * dv, C = 2 * Kd + Vd;
    int64_t gw = 2 * dk + 2 * r * dv, pw = nk * gw;
    const float *p = e->proj, *ba = e->bap;
    BE(e)->copy(CTX(e), e->mixed, C, dk, p, pw, gw, n, nk, dk);
    BE(e)->copy(CTX(e), e->mixed + Kd, C, dk, p + dk, pw, gw, n, nk, dk);
    BE(e)->copy(CTX(e), e->mixed + 2 * Kd, C, r * dv, p + 2 * dk, pw, gw, n, nk, r * dv);
    BE(e)->copy(CTX(e), e->z, Vd, r * dv, p + 2 * dk + r * dv, pw, gw, n, nk, r * dv);
    BE(e)->copy(CTX(e), e->gb, nv, r, ba, 2 * nv, 2 * r, n, nk, r);
    BE(e)->copy(CTX(e), e->ga, nv, r, ba + r, 2 * nv, 2 * r, n, nk, r);
}

/* forward.c's gdn_block over the batch: projections over the batch, the
 * causal conv and the delta rule per sequence on its own state (one
 * conv1d_silu_each and one gdn_each call where the backend has them). */
static void gdn_b(mk_engine *e, mk_engine *const *es, int n, int l, const mk_gdn_w *w) {
    const mk_config *c = e->c;
    int64_t nk = c->lin_num_k_heads, nv = c->lin_num_v_heads, dk = c->lin_k_head_dim,
            dv = c->lin_v_head_dim, Kd = nk * dk, Vd = nv * dv, C = 2 * Kd + Vd;
    if (w->grouped) {
        mk_engine_mm(e, &w->qkvz, e->xb, n, e->proj);
        mk_engine_mm(e, &w->ba, e->xb, n, e->bap);
        gdn_ungroup_b(e, n);
    } else {
        mk_engine_mm(e, &w->qkv, e->xb, n, e->mixed);
        mk_engine_mm(e, &w->z, e->xb, n, e->z);
        mk_engine_mm(e, &w->b, e->xb, n, e->gb);
        mk_engine_mm(e, &w->a, e->xb, n, e->ga);
    }
    /* every sequence's conv, then every sequence's delta rule: one call
     * each where the backend takes the batch */
    float *states[MK_ENGINE_MAX_BATCH];
    mk_gdn_args ga[MK_ENGINE_MAX_BATCH];
    for (int i = 0; i < n; i++) {
        const mk_engine *s = es[i];
        float *co = e->conv_out + i * C;
        states[i] = s->conv[l];
        ga[i] = (mk_gdn_args){co, co + Kd, co + 2 * Kd, C, e->ga + i * nv, e->gb + i * nv,
                              w->A_log, w->dt_bias, s->ssm[l], e->o + i * Vd, 1, (int)nk, (int)nv,
                              (int)dk, (int)dv};
    }
    if (!BE(e)->conv1d_silu_each ||
        !BE(e)->conv1d_silu_each(CTX(e), e->mixed, C, e->conv_out, n, C, c->conv_kernel, w->conv, states))
        for (int i = 0; i < n; i++)
            BE(e)->conv1d_silu(CTX(e), e->mixed + i * C, C, e->conv_out + i * C, 1, C, c->conv_kernel,
                               w->conv, states[i]);
    if (!BE(e)->gdn_each || !BE(e)->gdn_each(CTX(e), ga, n))
        for (int i = 0; i < n; i++)
            BE(e)->gdn(CTX(e), &ga[i]);
    BE(e)->gated_rmsnorm(CTX(e), e->o, e->z, w->norm, n * nv, dv, (float)c->rms_norm_eps);
    mk_engine_mm(e, &w->out, e->o, n, e->y);
}

/* ---- the step ------------------------------------------------------------------ */

/* Non-finite activations are an error, as in forward.c, naming the block
 * and the sequence (its index in the batch and position). */
static mk_status check_rows(mk_engine *e, mk_engine *const *es, const float *x, int n,
                            int64_t width, int layer, const char *what) {
    int64_t i = BE(e)->find_nonfinite(CTX(e), x, n * width);
    if (i < 0)
        return MK_OK;
    float v;
    BE(e)->download(CTX(e), &v, x + i, sizeof v);
    char where[48] = "";
    if (layer >= 0)
        snprintf(where, sizeof where, " of layer %d", layer);
    int r = (int)(i / width);
    return mk_err(MK_E_FORMAT, "%s: non-finite value (%s) in the output of %s%s for sequence %d of "
                  "a batch of %d at position %lld, column %lld: the checkpoint's weights or "
                  "scales there are not usable", mk_model_dir(e->m), isnan(v) ? "NaN" : "infinity",
                  what, where, r, n, (long long)es[r]->pos, (long long)(i % width));
}

static mk_status step(mk_engine *e, mk_engine *const *es, int n, float *logits) {
    const mk_config *c = e->c;
    const mk_model *m = e->m;
    int64_t H = c->hidden_size, V = c->vocab_size;
    int L = c->num_layers;
    float eps = (float)c->rms_norm_eps;
    /* a pipeline stage runs layers [l0, l1) (layer_pipe.h), as forward.c; the
     * stage messages carry the first sequence's position */
    int l0 = e->has_pipe ? e->pipe.first : 0, l1 = e->has_pipe ? e->pipe.last : L;
    if (l0 > 0) { /* the previous stage's residual stream (checked there) */
        MK_TRY(e->pipe.recv_hidden(e->pipe.user, l0, es[0]->pos, n, H, e->x));
    } else {
        BE(e)->get_rows(CTX(e), &m->embed, e->ids, n, e->x);
        MK_TRY(check_rows(e, es, e->x, n, H, -1, "the token embedding"));
    }
    for (int l = l0; l < l1; l++) {
        const mk_layer_w *w = &m->layers[l];
        BE(e)->rmsnorm(CTX(e), e->xb, H, e->x, H, w->in_norm, n, H, eps);
        switch (w->mixer) {
        case MK_MIXER_ATTN: attn_b(e, es, n, l, &w->attn); break;
        case MK_MIXER_MLA: mla_b(e, es, n, l, &w->mla); break;
        case MK_MIXER_GDN: gdn_b(e, es, n, l, &w->gdn); break;
        }
        BE(e)->axpy(CTX(e), e->x, 1.0f, e->y, n * H);
        MK_TRY(check_rows(e, es, e->x, n, H, l,
                          w->mixer == MK_MIXER_GDN ? "the linear attention (Gated DeltaNet)" : "the attention"));
        BE(e)->rmsnorm(CTX(e), e->xb, H, e->x, H, w->post_norm, n, H, eps);
        if (w->is_moe)
            MK_TRY(e->moe->run(e, l, &w->moe, n));
        else
            mk_engine_mlp(e, &w->mlp.gate, &w->mlp.up, &w->mlp.down, e->xb, n, e->y);
        BE(e)->axpy(CTX(e), e->x, 1.0f, e->y, n * H);
        MK_TRY(check_rows(e, es, e->x, n, H, l, w->is_moe ? "the MoE block" : "the MLP"));
    }
    if (l1 < L) { /* the next stage continues; the logits come back from the last */
        MK_TRY(e->pipe.send_hidden(e->pipe.user, l1, es[0]->pos, n, H, e->x));
        if (logits)
            MK_TRY(e->pipe.recv_logits(e->pipe.user, es[0]->pos, n, V, logits));
        return BE(e)->sync(CTX(e));
    }
    if (!logits) /* a follower of a partition or a stage's peer: nothing to hand back */
        return BE(e)->sync(CTX(e));
    BE(e)->rmsnorm(CTX(e), e->xb, H, e->x, H, m->norm, n, H, eps);
    if (BE(e)->host_mem) {
        mk_engine_mm(e, &m->lm_head, e->xb, n, logits);
    } else { /* staged a few rows at a time, as forward.c's lm_head */
        for (int64_t r = 0; r < n; r += MK_ENGINE_LOGIT_ROWS) {
            int64_t nr = n - r < MK_ENGINE_LOGIT_ROWS ? n - r : MK_ENGINE_LOGIT_ROWS;
            mk_engine_mm(e, &m->lm_head, e->xb + r * H, nr, e->lg);
            BE(e)->download(CTX(e), logits + r * V, e->lg, (size_t)(nr * V) * sizeof(float));
        }
    }
    MK_TRY(BE(e)->sync(CTX(e)));
    for (int64_t i = 0; i < (int64_t)n * V; i++)
        if (!isfinite(logits[i]))
            return mk_err(MK_E_FORMAT, "%s: non-finite value (%s) in the output of lm_head (the "
                          "logits) for sequence %lld of a batch of %d at position %lld, column %lld",
                          mk_model_dir(m), isnan(logits[i]) ? "NaN" : "infinity", (long long)(i / V),
                          n, (long long)es[i / V]->pos, (long long)(i % V));
    if (e->has_pipe && l0 > 0) /* the last stage hands the rows back */
        MK_TRY(e->pipe.send_logits(e->pipe.user, es[0]->pos, n, V, logits));
    return MK_OK;
}

mk_status mk_engine_decode_batch(mk_engine *const *es, int n, const int32_t *ids, float *logits) {
    if (n < 1 || !es || !ids)
        return mk_err(MK_E_ARG, "engine decode batch: bad arguments (n %d)", n);
    if (!mk_engine_batchable(es, n))
        return mk_err(MK_E_ARG, "engine decode batch: these %d sequences cannot share a step (one "
                      "model, backend and expert store, distinct engines, at most %d and half the "
                      "prefill chunk, no routing observer, a family the batched step knows)", n,
                      MK_ENGINE_MAX_BATCH);
    MK_TRY(mk_engine_settle(es[0])); /* any of the backend's engines' step queued ahead */
    *mk_backend_last(es[0]->be) = NULL; /* no engine's decode loop goes on through a batched step */
    mk_engine *e = es[0];
    const mk_config *c = e->c;
    for (int i = 0; i < n; i++) {
        if (es[i]->pos + 1 > es[i]->max_ctx)
            return mk_err(MK_E_ARG, "context full: sequence %d of the batch has %lld tokens in "
                          "cache + 1 new > max context %lld", i, (long long)es[i]->pos,
                          (long long)es[i]->max_ctx);
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return mk_err(MK_E_ARG, "token id %d of sequence %d of the batch is outside the "
                          "vocabulary (0..%d)", ids[i], i, c->vocab_size - 1);
    }
    if ((e->has_part && e->part.step_batch) || (e->has_pipe && e->pipe.step_batch)) {
        /* the other processes of a partition or pipeline run this step too,
         * each on its engines of these sequences */
        void *users[MK_ENGINE_MAX_BATCH];
        int64_t pos[MK_ENGINE_MAX_BATCH];
        for (int i = 0; i < n; i++)
            pos[i] = es[i]->pos;
        if (e->has_part && e->part.step_batch) {
            for (int i = 0; i < n; i++)
                users[i] = es[i]->part.user;
            MK_TRY(e->part.step_batch(users, n, ids, pos));
        }
        if (e->has_pipe && e->pipe.step_batch) {
            for (int i = 0; i < n; i++)
                users[i] = es[i]->pipe.user;
            MK_TRY(e->pipe.step_batch(users, n, ids, pos));
        }
    }
    BE(e)->upload(CTX(e), e->ids, ids, (size_t)n * sizeof(int32_t));
    for (int i = 0; i < n; i++)
        mk_engine_rope_row(e, i, es[i]->pos);
    size_t rb = (size_t)(n * (e->rot_dim / 2)) * sizeof(float);
    BE(e)->upload(CTX(e), e->cos_b, e->cos, rb);
    BE(e)->upload(CTX(e), e->sin_b, e->sin, rb);
    e->batch_inv = true;
    mk_status st = step(e, es, n, logits);
    e->batch_inv = false;
    if (st != MK_OK) {
        if (BE(e)->nonfinite_take) { /* nothing deferred here; drop what a slot may have kept */
            int32_t tag;
            int64_t i;
            float v;
            (void)BE(e)->nonfinite_take(CTX(e), &tag, &i, &v);
        }
        return st;
    }
    for (int i = 0; i < n; i++)
        es[i]->pos++;
    return MK_OK;
}
