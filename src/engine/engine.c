/* Engine lifetime: options, the arenas, RoPE tables, reset.
 *
 * The arenas are planned in two passes over the same list of buffers
 * (carve): the first sums the sizes, the second hands out pointers into one
 * zeroed allocation each, backend memory (from the backend's alloc) for
 * what slots compute on and host memory for what the engine reads itself. Buffer sizes come from the config's largest dimensions of each
 * block kind present, so a dense-attention model pays nothing for DeltaNet
 * scratch and vice versa. The forward pass itself lives in forward.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "engine/engine_impl.h"

/* ---- arena ---------------------------------------------------------------- */

typedef struct carver {
    char *base, *hbase; /* NULL while sizing */
    size_t off, hoff;
} carver;

/* Reserve n elements of `esz` bytes of backend memory, 64-byte aligned. */
static void *take(carver *cv, int64_t n, size_t esz) {
    size_t bytes = (size_t)(n > 0 ? n : 0) * esz;
    void *p = cv->base && bytes ? cv->base + cv->off : NULL;
    cv->off += (bytes + 63) & ~(size_t)63;
    return p;
}

/* The same in host memory. */
static void *take_h(carver *cv, int64_t n, size_t esz) {
    size_t bytes = (size_t)(n > 0 ? n : 0) * esz;
    void *p = cv->hbase && bytes ? cv->hbase + cv->hoff : NULL;
    cv->hoff += (bytes + 63) & ~(size_t)63;
    return p;
}

static int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

/* The whole arena layout; sizes only when cv->base is NULL. */
static void carve(mk_engine *e, carver *cv) {
    const mk_config *c = e->c;
    const mk_model *m = e->m;
    int64_t nC = e->chunk, H = c->hidden_size, L = c->num_layers, T = e->max_ctx;
    int64_t nH = c->num_heads, nKV = c->num_kv_heads, hd = c->head_dim;
    int64_t nk = c->lin_num_k_heads, nv = c->lin_num_v_heads, dk = c->lin_k_head_dim,
            dv = c->lin_v_head_dim, Kd = nk * dk, Vd = nv * dv, C = 2 * Kd + Vd;
    int64_t qk = c->qk_nope_head_dim + c->qk_rope_head_dim, dvh = c->v_head_dim;
    int64_t kl = c->kv_lora_rank, cw = kl + c->qk_rope_head_dim; /* MLA cache row */
    int64_t E = c->num_experts, k = e->k;
    bool has_attn = false, has_mla = false, has_gdn = false, has_moe = false, has_sinks = false;
    int64_t Imax = 0, Bw = 0; /* widest expert intermediate, widest bias row */
    for (int64_t l = 0; l < L; l++) {
        const mk_layer_w *w = &m->layers[l];
        has_attn |= w->mixer == MK_MIXER_ATTN;
        has_mla |= w->mixer == MK_MIXER_MLA;
        has_gdn |= w->mixer == MK_MIXER_GDN;
        has_moe |= w->is_moe;
        Imax = imax(Imax, w->is_moe ? imax(c->moe_intermediate_size, c->shared_intermediate_size)
                                    : c->intermediate_size);
        has_sinks |= w->mixer == MK_MIXER_ATTN && w->attn.sinks;
        if (w->mixer == MK_MIXER_ATTN && w->attn.q_bias)
            Bw = imax(Bw, imax(nH * hd, H));
        if (w->is_moe && w->moe.fused_gu) /* gpt_oss: the whole gate_up output, interleaved */
            Imax = imax(Imax, 2 * c->moe_intermediate_size);
        if (w->is_moe && w->moe.b_down)
            Bw = imax(Bw, imax(imax(E, H), 2 * c->moe_intermediate_size));
    }
    e->ids = take(cv, nC, 4);
    e->x = take(cv, nC * H, 4);
    e->xb = take(cv, nC * H, 4);
    e->y = take(cv, nC * H, 4);
    if (!e->bi->host_mem) /* logits staged through backend memory, MK_ENGINE_LOGIT_ROWS at a time */
        e->lg = take(cv, (nC < MK_ENGINE_LOGIT_ROWS ? nC : MK_ENGINE_LOGIT_ROWS) * c->vocab_size, 4);
    if (!e->bi->host_mem && e->bi->argmax && e->bi->check_finite) /* greedy on the device */
        e->amax = take(cv, 1, 4);
    else /* greedy through host logits (mk_engine_forward_argmax) */
        e->glg = take_h(cv, c->vocab_size, 4);
    e->cos = take_h(cv, nC * (e->rot_dim / 2), 4);
    e->sin = take_h(cv, nC * (e->rot_dim / 2), 4);
    e->cos_b = take(cv, nC * (e->rot_dim / 2), 4);
    e->sin_b = take(cv, nC * (e->rot_dim / 2), 4);
    e->inv_freq = take_h(cv, e->rot_dim / 2, 4);
    if (has_attn || has_mla) {
        int64_t qw = has_attn ? nH * hd * 2 : 0, aw = has_attn ? nH * hd : 0;
        if (has_mla) {
            qw = imax(qw, nH * qk);
            aw = imax(aw, nH * dvh);
        }
        e->qraw = take(cv, nC * qw, 4);
        e->att = take(cv, nC * aw, 4);
    }
    if (has_attn) {
        e->q = take(cv, nC * nH * hd, 4);
        e->gate = take(cv, nC * nH * hd, 4);
    }
    if (e->bi->step_replay) { /* recorded decode steps, replayed (forward.c) */
        e->pos_b = take(cv, 1, 8);
        e->kst = take(cv, imax(has_attn ? nKV * hd : 0, has_mla ? cw : 0), 4);
        e->vst = take(cv, has_attn ? nKV * hd : 0, 4);
    }
    if (has_mla) {
        e->qa = take(cv, nC * c->q_lora_rank, 4);
        /* one attention sub-chunk's absorbed queries and latent outputs
         * (forward.c mla_block); olat also holds a batched decode step's
         * compressed rows [n, cw], n <= nS (batch.c mla_b) */
        int64_t nS = nC < MK_MLA_SUB ? nC : MK_MLA_SUB;
        e->qabs = take(cv, nS * nH * cw, 4);
        e->olat = take(cv, nS * imax(nH * kl, cw), 4);
    }
    if (c->dsa) { /* the lightning indexer's scratch and the selection */
        int64_t nI = c->index_n_heads, dI = c->index_head_dim;
        e->sel_k = c->index_topk < T ? c->index_topk : T;
        e->iq = take(cv, nC * nI * dI, 4);
        e->iw = take(cv, nC * nI, 4);
        e->sel = take(cv, nC * e->sel_k, 4);
        e->sel_sc = take(cv, nC * e->sel_k, 4);
        e->sel_h = take_h(cv, nC * e->sel_k, 4);
    }
    if (has_gdn) {
        e->proj = take(cv, nC * (2 * Kd + 2 * Vd), 4);
        e->bap = take(cv, nC * 2 * nv, 4);
        e->mixed = take(cv, nC * C, 4);
        e->conv_out = take(cv, nC * C, 4);
        e->z = take(cv, nC * Vd, 4);
        e->gb = take(cv, nC * nv, 4);
        e->ga = take(cv, nC * nv, 4);
        e->o = take(cv, nC * Vd, 4);
    }
    if (has_moe) {
        e->router = take(cv, nC * E, 4);
        e->top_idx_b = take(cv, nC * k, 4);
        e->top_w_b = take(cv, nC * k, 4);
        e->tok_b = take(cv, nC * k, 4);
        e->pair_b = take(cv, nC * k, 4);
        e->perm_b = take(cv, nC * k, 4);
        e->pairs = take(cv, nC * k * H, 4);
        e->sh = take(cv, nC, 4);
        e->pf_idx_b = take(cv, k, 4);
        e->pf_w_b = take(cv, k, 4);
        e->top_idx = take_h(cv, nC * k, 4);
        e->top_w = take_h(cv, nC * k, 4);
        e->cnt = take_h(cv, E + 1, 4);
        e->order = take_h(cv, nC * k, 4);
        e->tok = take_h(cv, nC * k, 4);
        e->perm = take_h(cv, nC * k, 4);
        e->used = take_h(cv, E, 4);
        e->pf_idx = take_h(cv, k, 4);
    }
    if (Bw) {
        e->brow = take(cv, Bw, 4);
        e->brows = take(cv, nC * Bw, 4);
    }
    if (has_sinks)
        e->sinks = take(cv, L * nH, 4);
    e->ex_x = take(cv, nC * H, 4);
    e->ex_g = take(cv, nC * Imax, 4);
    e->ex_u = take(cv, nC * Imax, 4);
    e->ex_o = take(cv, nC * H, 4);
    /* caches and recurrent state, per layer; MLA keeps one latent row per
     * position (its values are read from the same rows) */
    e->kv_token_bytes = 0;
    for (int64_t l = e->has_pipe ? e->pipe.first : 0; l < (e->has_pipe ? e->pipe.last : L); l++) {
        const mk_layer_w *w = &m->layers[l];
        if (w->mixer == MK_MIXER_ATTN) {
            e->kc[l] = take(cv, T * nKV * hd, 4);
            e->vc[l] = take(cv, T * nKV * hd, 4);
            e->kv_token_bytes += (size_t)(2 * nKV * hd) * sizeof(float);
        } else if (w->mixer == MK_MIXER_MLA) {
            e->kc[l] = take(cv, T * cw, 4);
            e->kv_token_bytes += (size_t)cw * sizeof(float);
            if (w->mla.dsa.on && !w->mla.dsa.shared) { /* the indexer's keys, one row per position */
                e->ikc[l] = take(cv, T * c->index_head_dim, 4);
                e->kv_token_bytes += (size_t)c->index_head_dim * sizeof(float);
            }
        } else {
            e->conv[l] = take(cv, (c->conv_kernel - 1) * C, 4);
            e->ssm[l] = take(cv, nv * dk * dv, 4);
        }
    }
}

/* ---- RoPE ----------------------------------------------------------------- */

/* YaRN as transformers' _compute_yarn_parameters: blend interpolated and
 * extrapolated frequencies over a linear ramp between the correction dims. */
static float yarn_mscale(double scale, double mscale) {
    return scale <= 1 ? 1.0f : (float)(0.1 * mscale * log(scale) + 1.0);
}

static double yarn_dim(double rot, int dim, double base, double maxpos) {
    return (dim * log(maxpos / (rot * 2 * M_PI))) / (2 * log(base));
}

static void rope_init(mk_engine *e) {
    const mk_config *c = e->c;
    const mk_rope *r = &c->rope;
    int dim = e->rot_dim, half = dim / 2;
    float base = (float)r->theta;
    e->attn_factor = 1.0f;
    /* float32, as torch computes it, and never rounded to the checkpoint's
     * dtype: transformers' from_pretrained, llama.cpp, mlx-lm and vLLM all
     * rotate with float32 frequencies (a bf16-rounded one is off by up to
     * 0.4%, radians of phase at a few thousand positions). */
    for (int i = 0; i < half; i++)
        e->inv_freq[i] = 1.0f / powf(base, (float)(2 * i) / (float)dim);
    if (strcmp(r->type, "yarn") || !(r->factor > 1))
        return;
    /* transformers 5.x uses the explicit factor (4.x derived it from the
     * max_position_embeddings ratio when original_max_position_embeddings
     * was given; the two agree for DeepSeek-V3's and Kimi's configs). */
    double factor = r->factor;
    double orig = r->orig_max_pos > 0 ? r->orig_max_pos : c->max_position_embeddings;
    if (r->attention_factor >= 0)
        e->attn_factor = (float)r->attention_factor;
    else if (r->mscale > 0 && r->mscale_all_dim > 0)
        e->attn_factor = yarn_mscale(factor, r->mscale) / yarn_mscale(factor, r->mscale_all_dim);
    else
        e->attn_factor = yarn_mscale(factor, 1.0);
    double bf = r->beta_fast > 0 ? r->beta_fast : 32, bs = r->beta_slow > 0 ? r->beta_slow : 1;
    double lo = yarn_dim(bf, dim, r->theta, orig), hi = yarn_dim(bs, dim, r->theta, orig);
    if (r->truncate) { /* gpt-oss says truncate false: the exact correction range */
        lo = floor(lo);
        hi = ceil(hi);
    }
    lo = lo < 0 ? 0 : lo;
    hi = hi > dim - 1 ? dim - 1 : hi;
    if (lo == hi)
        hi += 0.001;
    for (int i = 0; i < half; i++) {
        float extra = e->inv_freq[i];
        float inter = 1.0f / ((float)factor * powf(base, (float)(2 * i) / (float)dim));
        float ramp = (float)((i - lo) / (hi - lo));
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        float ef = 1.0f - ramp; /* extrapolation factor */
        e->inv_freq[i] = inter * (1.0f - ef) + extra * ef;
    }
}

void mk_engine_rope_row(mk_engine *e, int64_t row, int64_t pos) {
    int half = e->rot_dim / 2;
    for (int i = 0; i < half; i++) {
        float ang = (float)pos * e->inv_freq[i]; /* f32 product, as torch */
        e->cos[row * half + i] = (float)cos((double)ang) * e->attn_factor;
        e->sin[row * half + i] = (float)sin((double)ang) * e->attn_factor;
    }
}

void mk_engine_rope_tables(mk_engine *e, int64_t pos0, int64_t n) {
    for (int64_t t = 0; t < n; t++)
        mk_engine_rope_row(e, t, pos0 + t);
}

/* ---- create / free -------------------------------------------------------- */

static mk_status check_dims(const mk_config *c) {
    int dims[] = {c->head_dim, c->qk_nope_head_dim + c->qk_rope_head_dim, c->v_head_dim,
                  c->kv_lora_rank + c->qk_rope_head_dim, c->lin_k_head_dim, c->lin_v_head_dim};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i] > MK_ENGINE_MAX_HEAD_DIM)
            return mk_err(MK_E_UNSUPPORTED, "config.json: a head dimension of %d exceeds the "
                          "engine's limit of %d", dims[i], MK_ENGINE_MAX_HEAD_DIM);
    if (c->num_experts > MK_BACKEND_MAX_EXPERTS)
        return mk_err(MK_E_UNSUPPORTED, "config.json: %d experts exceed the engine's limit of %d",
                      c->num_experts, MK_BACKEND_MAX_EXPERTS);
    return MK_OK;
}

/* Context, prefill chunk and rotary width from the options (the arena's
 * sizes depend on these alone). */
static void init_sizes(mk_engine *e, const mk_engine_opts *o) {
    const mk_config *c = e->c;
    int64_t dflt = c->max_position_embeddings > 0 && c->max_position_embeddings < 4096
                       ? c->max_position_embeddings
                       : 4096;
    e->max_ctx = o->max_ctx > 0 ? o->max_ctx : dflt;
    e->chunk = o->prefill_chunk > 0 ? o->prefill_chunk : 512;
    if (e->chunk > e->max_ctx)
        e->chunk = e->max_ctx;
    if (o->layer_pipe) { /* only this stage's layers hold caches (carve) */
        e->pipe = *o->layer_pipe;
        e->has_pipe = true;
    }
    e->k = o->experts_per_tok > 0 && o->experts_per_tok < c->num_experts_per_tok ? o->experts_per_tok
                                                                                 : c->num_experts_per_tok;
    e->rot_dim = c->arch == MK_ARCH_DEEPSEEK_V3
                     ? c->qk_rope_head_dim
                     : (int)(c->head_dim * c->rope.partial_rotary_factor);
}

/* The arena's sizes without creating an engine: *dev the part from the
 * backend's memory, *host the host-only part; false when out of memory. */
static bool arena_sizes(const mk_model *m, const mk_engine_opts *opts, size_t *dev, size_t *host);

size_t mk_engine_bytes(const mk_model *m, const mk_engine_opts *opts) {
    size_t dev, host;
    return arena_sizes(m, opts, &dev, &host) ? dev + host : 0;
}

size_t mk_engine_host_bytes(const mk_model *m, const mk_engine_opts *opts, bool device_backend) {
    size_t dev, host;
    if (!arena_sizes(m, opts, &dev, &host))
        return 0;
    return device_backend ? host : dev + host;
}

static bool arena_sizes(const mk_model *m, const mk_engine_opts *opts, size_t *dev, size_t *host) {
    mk_engine_opts o = {0};
    if (opts)
        o = *opts;
    static const mk_backend_i sizing = {.name = "sizing", .host_mem = true};
    mk_engine e = {.m = m, .c = mk_model_config(m)};
    init_sizes(&e, &o);
    e.bi = o.backend ? mk_backend_iface(o.backend) : &sizing;
    size_t L = (size_t)e.c->num_layers;
    e.kc = mk_calloc(L, sizeof(float *));
    e.vc = mk_calloc(L, sizeof(float *));
    e.conv = mk_calloc(L, sizeof(float *));
    e.ssm = mk_calloc(L, sizeof(float *));
    e.ikc = mk_calloc(L, sizeof(float *));
    bool ok = e.kc && e.vc && e.conv && e.ssm && e.ikc;
    *dev = *host = 0;
    if (ok) {
        carver cv = {0};
        carve(&e, &cv);
        *dev = cv.off;
        *host = cv.hoff;
    }
    free(e.kc);
    free(e.vc);
    free(e.conv);
    free(e.ssm);
    free(e.ikc);
    return ok;
}

static mk_status engine_init(mk_engine *e, const mk_engine_opts *o) {
    const mk_config *c = e->c;
    MK_TRY(check_dims(c));
    init_sizes(e, o);
    e->on_route = o->on_route;
    e->on_route_user = o->on_route_user;
    e->on_select = o->on_select;
    e->on_select_user = o->on_select_user;
    e->on_linear = o->on_linear;
    e->on_linear_user = o->on_linear_user;
    e->on_tap = o->on_tap;
    e->on_tap_user = o->on_tap_user;
    e->tap_layer = o->tap_layer;
    double scale = 1.0 / sqrt(c->arch == MK_ARCH_DEEPSEEK_V3
                                  ? (double)(c->qk_nope_head_dim + c->qk_rope_head_dim)
                                  : (double)c->head_dim);
    if (c->arch == MK_ARCH_DEEPSEEK_V3 && !strcmp(c->rope.type, "yarn") &&
        c->rope.mscale_all_dim > 0) {
        double ms = yarn_mscale(c->rope.factor, c->rope.mscale_all_dim);
        scale *= ms * ms;
    }
    e->attn_scale = (float)scale;

    if (o->backend) { /* a given backend brings its own threads, if any */
        e->be = o->backend;
    } else {
        MK_TRY(mk_pool_create(o->threads, &e->pool));
        MK_TRY(mk_backend_cpu_create(e->pool, &e->be));
        e->own_be = true;
    }
    e->bi = mk_backend_iface(e->be);
    e->bctx = mk_backend_ctx(e->be);
    /* another engine's step queued ahead on a shared backend: settled before this engine's
     * uploads and sync (which would take its failure) */
    MK_TRY(mk_engine_settle(e));
    if (c->arch == MK_ARCH_GPT_OSS && (!e->bi->sinks_window || !e->bi->clamped_swiglu))
        return mk_err(MK_E_UNSUPPORTED, "backend '%s' does not implement gpt_oss's attention sinks, "
                      "sliding window and clamped SwiGLU experts; run gpt_oss on the CPU backend",
                      e->bi->name);
    if (c->dsa && (!e->bi->dsa_select || !e->bi->layernorm))
        return mk_err(MK_E_UNSUPPORTED, "engine: the %s backend does not implement DeepSeek sparse "
                      "attention (the lightning indexer of %s; deepseek_v32 and glm_moe_dsa need it): "
                      "run this model on the CPU backend", e->bi->name, c->model_type);
    if (o->store && mk_expert_store_reuses(o->store) && !e->bi->host_mem && !e->bi->host_changed)
        return mk_err(MK_E_UNSUPPORTED, "engine: the %s expert store reuses its buffers for other experts, "
                      "and the %s backend keeps device copies of host weights without being told when "
                      "they change (no host_changed slot)", mk_expert_store_name(o->store), e->bi->name);
    if (e->on_linear && !e->bi->host_mem)
        return mk_err(MK_E_ARG, "engine: a linear-input observer needs a host-memory backend, not '%s'",
                      e->bi->name);
    if (o->moe_part) {
        if (!e->bi->host_mem || !o->moe_part->range || !o->moe_part->exchange)
            return mk_err(MK_E_ARG, "engine: an expert partition needs range and exchange and a "
                          "host-memory backend, not '%s'", e->bi->name);
        e->part = *o->moe_part;
        e->has_part = true;
    }
    if (e->has_pipe) {
        const mk_layer_pipe *p = &e->pipe;
        if (!e->bi->host_mem || p->first < 0 || p->last > c->num_layers || p->first >= p->last ||
            (p->first > 0 && !p->recv_hidden) ||
            (p->last < c->num_layers && (!p->send_hidden || !p->recv_logits)) ||
            (p->last == c->num_layers && p->first > 0 && !p->send_logits))
            return mk_err(MK_E_ARG, "engine: a layer pipeline needs layers [first, last) within the "
                          "model's %d (given [%d, %d)), the hooks its place calls and a host-memory "
                          "backend (not '%s')", c->num_layers, p->first, p->last, e->bi->name);
        const mk_layer_w *w0 = &e->m->layers[p->first];
        if (w0->mixer == MK_MIXER_MLA && w0->mla.dsa.on && w0->mla.dsa.shared)
            return mk_err(MK_E_UNSUPPORTED, "engine: layer %d reuses the previous layer's sparse-attention "
                          "selection (a shared DSA indexer): a pipeline stage cannot start there; "
                          "cut the layers elsewhere", p->first);
    }
    e->moe = &mk_moe_exec_local;
    if (o->store) {
        e->store = o->store;
    } else {
        MK_TRY(mk_expert_store_resident(e->m, &e->store));
        e->own_store = true;
    }
    e->prefetch = o->prefetch_experts && mk_expert_store_can_prefetch(e->store) && !e->has_part &&
                 !e->has_pipe;
    size_t L = (size_t)c->num_layers;
    e->kc = mk_calloc(L, sizeof(float *));
    e->vc = mk_calloc(L, sizeof(float *));
    e->conv = mk_calloc(L, sizeof(float *));
    e->ssm = mk_calloc(L, sizeof(float *));
    e->ikc = mk_calloc(L, sizeof(float *));
    if (!e->kc || !e->vc || !e->conv || !e->ssm || !e->ikc)
        return mk_err(MK_E_NOMEM, "no memory for the engine's layer tables");
    carver cv = {0};
    carve(e, &cv);
    e->arena_bytes = cv.off + cv.hoff;
    /* The arenas are zeroed whole, so every byte becomes resident: refuse a
     * context that cannot fit the caller's memory limit instead of being
     * killed (or swapping) mid-way. The library reads no /proc file: the
     * CLI passes what the system has available (mk_engine_opts.mem_limit).
     * Host memory: on a device backend the backend's part (caches,
     * activations) is the device's, whose allocation reports its own
     * failure. */
    const size_t host_need = e->bi->host_mem ? e->arena_bytes : cv.hoff;
    if (o->mem_limit && host_need > o->mem_limit)
        return mk_err(MK_E_ARG,
                      "engine: a context of %lld positions needs %zu bytes (KV cache %zu bytes/token x "
                      "%lld = %llu, plus buffers and state), but only %llu bytes of memory are "
                      "available; lower --ctx (or --window, --prefill-chunk)",
                      (long long)e->max_ctx, host_need, e->kv_token_bytes, (long long)e->max_ctx,
                      (unsigned long long)e->kv_token_bytes * (unsigned long long)e->max_ctx,
                      (unsigned long long)o->mem_limit);
    mk_status st = e->bi->alloc(e->bctx, cv.off, &e->arena);
    if (st != MK_OK)
        return mk_err_wrap(st, "engine arena (max_ctx %lld, prefill chunk %lld; lower --ctx or "
                           "--prefill-chunk)", (long long)e->max_ctx, (long long)e->chunk);
    e->harena = mk_aligned_alloc(64, cv.hoff ? cv.hoff : 64);
    if (!e->harena)
        return mk_err(MK_E_NOMEM, "engine host arena: cannot allocate %zu bytes", cv.hoff);
    memset(e->harena, 0, cv.hoff);
    cv = (carver){.base = e->arena, .hbase = e->harena};
    carve(e, &cv);
    rope_init(e);
    for (int l = 0; e->sinks && l < c->num_layers; l++)
        if (e->m->layers[l].attn.sinks)
            e->bi->upload(e->bctx, e->sinks + (int64_t)l * c->num_heads, e->m->layers[l].attn.sinks,
                          (size_t)c->num_heads * sizeof(float));
    /* decode lookahead (forward.c): a step queued ahead and dropped must
     * leave nothing the next step does not overwrite */
    e->la_ok = !o->no_lookahead && e->bi->step_chain && e->bi->step_take && e->bi->step_replay &&
               !e->has_part && !e->has_pipe && !e->on_route && !e->on_select && !e->on_linear &&
               !e->on_tap && !c->dsa;
    e->la_ahead = e->la_ok && mk_engine_rewindable(e);
    return e->bi->sync(e->bctx);
}

mk_status mk_engine_create(const mk_model *m, const mk_engine_opts *opts, mk_engine **out) {
    *out = NULL;
    mk_engine_opts o = {0};
    if (opts)
        o = *opts;
    mk_engine *e = mk_calloc(1, sizeof *e);
    if (!e)
        return mk_err(MK_E_NOMEM, "no memory for an engine");
    e->m = m;
    e->c = mk_model_config(m);
    mk_status st = engine_init(e, &o);
    if (st != MK_OK) {
        mk_engine_free(e);
        return st;
    }
    *out = e;
    return MK_OK;
}

void mk_engine_free(mk_engine *e) {
    if (!e)
        return;
    if (e->be && *mk_backend_ahead(e->be) == e)
        (void)mk_engine_settle(e); /* its step queued ahead: the backend may outlive it */
    if (e->be && *mk_backend_last(e->be) == e)
        *mk_backend_last(e->be) = NULL;
    if (e->own_store)
        mk_expert_store_free(e->store);
    if (e->arena)
        e->bi->buf_free(e->bctx, e->arena);
    if (e->own_be)
        mk_backend_free(e->be);
    mk_pool_free(e->pool);
    free(e->harena);
    free(e->tap_buf);
    free(e->kc);
    free(e->vc);
    free(e->conv);
    free(e->ssm);
    free(e->ikc);
    free(e);
}

void mk_engine_reset(mk_engine *e) {
    const mk_config *c = e->c;
    (void)mk_engine_settle(e);
    e->la_loop = false;
    int64_t C = 2 * (int64_t)c->lin_num_k_heads * c->lin_k_head_dim +
                (int64_t)c->lin_num_v_heads * c->lin_v_head_dim;
    for (int l = 0; l < c->num_layers; l++)
        if (e->conv[l]) { /* the recurrent state must restart from zero; KV rows are overwritten */
            e->bi->zero(e->bctx, e->conv[l], (size_t)((c->conv_kernel - 1) * C) * sizeof(float));
            e->bi->zero(e->bctx, e->ssm[l],
                        (size_t)c->lin_num_v_heads * c->lin_k_head_dim * c->lin_v_head_dim *
                            sizeof(float));
        }
    e->pos = 0;
}

bool mk_engine_rewindable(const mk_engine *e) {
    for (int l = 0; l < e->c->num_layers; l++)
        if (e->conv[l])
            return false;
    return true;
}

mk_status mk_engine_rewind(mk_engine *e, int64_t pos) {
    MK_TRY(mk_engine_settle(e));
    e->la_loop = false;
    if (pos < 0 || pos > e->pos)
        return mk_err(MK_E_ARG, "engine: cannot rewind to position %lld of a sequence of %lld",
                      (long long)pos, (long long)e->pos);
    if (pos < e->pos && !mk_engine_rewindable(e))
        return mk_err(MK_E_UNSUPPORTED, "engine: the model's recurrent (Gated DeltaNet) state cannot be "
                      "rewound from position %lld to %lld", (long long)e->pos, (long long)pos);
    e->pos = pos;
    return MK_OK;
}

int64_t mk_engine_pos(const mk_engine *e) { return e->pos; }
int64_t mk_engine_max_ctx(const mk_engine *e) { return e->max_ctx; }

int64_t mk_engine_prefill_chunk(const mk_engine *e) { return e->chunk; }
size_t mk_engine_arena_bytes(const mk_engine *e) { return e->arena_bytes; }
size_t mk_engine_kv_bytes_per_token(const mk_engine *e) { return e->kv_token_bytes; }
const mk_model *mk_engine_model(const mk_engine *e) { return e->m; }
