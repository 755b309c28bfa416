/* The local MoE executor: one MoE layer on this engine's backend, experts
 * through its expert store (engine_impl.h, mk_moe_exec_i).
 *
 * With a backend that has the fused `moe` slot (and takes the call), the
 * whole layer is that one slot. A prefill chunk (several tokens, not a
 * batched decode step) on a backend with `moe_grouped` routes on the
 * backend and hands it every routed row at once (grouped GEMMs, the
 * routing never downloaded), then adds the shared expert. Otherwise:
 * router matmul -> route slot (top-k and weights, on the backend) ->
 * decisions downloaded -> (token, slot) pairs grouped by expert (counting
 * sort, host) -> the store is told the whole set of used experts and hands
 * them back in the order they are ready; each expert's tokens are gathered,
 * run through its SwiGLU MLP and scattered into that pair's row of e->pairs
 * -> combine: per token, the weighted sum of its k pair rows in ascending
 * expert order (the order fixes the floating-point sum, so results do not
 * depend on the store's readiness order) -> shared expert (qwen: times
 * sigmoid(shared_expert_gate(x))) added.
 *
 * At decode (one token) with a store whose experts are all ready (resident),
 * the token's experts are taken at once and run by the backend's
 * expert_mlps in one parallel region per stage, bitwise as the loop would;
 * a batched decode step over several sequences (batch.c) likewise through
 * expert_mlps_each, each row as its sequence alone would get it.
 *
 * With an expert partition (mk_engine_opts.moe_part, expert parallelism)
 * only the owned experts run here; before combine the partition's exchange
 * fills the other experts' pair rows with their owners' outputs, so the
 * same combine gives the single-process sum bit for bit. */
#include <string.h>

#include "engine/engine_impl.h"

#define BE(e) ((e)->bi)
#define CTX(e) ((e)->bctx)

/* Group the n*k pairs of e->top_idx by expert: e->order (pair indices, by
 * ascending expert then pair), e->tok (their token rows), e->cnt[x] = end of
 * expert x's run, e->used (ascending), e->perm (per token, its slots in
 * ascending expert id). Returns the number of used experts. */
static int group_pairs(mk_engine *e, int64_t n) {
    int64_t E = e->c->num_experts, k = e->k;
    const int32_t *idx = e->top_idx;
    memset(e->cnt, 0, (size_t)(E + 1) * sizeof(int32_t));
    for (int64_t i = 0; i < n * k; i++)
        e->cnt[idx[i] + 1]++;
    int nused = 0;
    for (int64_t x = 0; x < E; x++) {
        if (e->cnt[x + 1])
            e->used[nused++] = (int32_t)x;
        e->cnt[x + 1] += e->cnt[x];
    }
    for (int64_t i = 0; i < n * k; i++) {
        int32_t at = e->cnt[idx[i]]++;
        e->order[at] = (int32_t)i;
        e->tok[at] = (int32_t)(i / k);
    }
    /* after the scatter cnt[x] is the end of expert x's run: ends, not starts */
    for (int64_t t = 0; t < n; t++) { /* insertion sort of k (small) slots by expert */
        int32_t *p = e->perm + t * k;
        for (int64_t j = 0; j < k; j++) {
            int64_t q = j;
            while (q > 0 && idx[t * k + p[q - 1]] > idx[t * k + j]) {
                p[q] = p[q - 1];
                q--;
            }
            p[q] = (int32_t)j;
        }
    }
    return nused;
}

/* Expert partition (moe_part.h): keep in e->used only the experts of
 * layer l this engine owns; returns how many. */
static int keep_owned(mk_engine *e, int l, int nused) {
    int32_t lo = 0, hi = 0;
    e->part.range(e->part.user, l, &lo, &hi);
    int kept = 0;
    for (int u = 0; u < nused; u++)
        if (e->used[u] >= lo && e->used[u] < hi)
            e->used[kept++] = e->used[u];
    return kept;
}

/* The next MoE layer after l, or -1. */
static int next_moe(const mk_engine *e, int l) {
    for (int j = l + 1; j < e->c->num_layers; j++)
        if (e->m->layers[j].is_moe)
            return j;
    return -1;
}

static mk_route_args route_args(const mk_engine *e, const mk_moe_w *w, const float *logits, int32_t *idx,
                                float *wts, int64_t n) {
    const mk_config *c = e->c;
    bool grouped = mk_config_sigmoid_router(c);
    return (mk_route_args){
        .logits = logits, .bias = grouped ? w->e_bias : NULL, .idx = idx, .w = wts, .n = n,
        .E = c->num_experts, .k = e->k, .kind = grouped ? MK_ROUTE_GROUPED_SIGMOID : MK_ROUTE_SOFTMAX,
        /* qwen3_5_moe's router renormalises unconditionally */
        .norm = c->norm_topk_prob || c->arch == MK_ARCH_QWEN3_5_MOE,
        .n_group = c->n_group, .topk_group = c->topk_group,
        .scale = grouped ? (float)c->routed_scaling_factor : 1.0f};
}

/* Decode prefetch: the next MoE layer's router applied to this layer's
 * input (the residual stream moves little between neighbouring layers, so
 * its top-k is a good guess of that layer's experts), handed to the store
 * to read while this layer computes. A guess only moves reads earlier:
 * the next layer routes on its own input as always. e->router is free
 * again here (this layer's routing is done). */
static mk_status prefetch_next(mk_engine *e, int l) {
    int l2 = next_moe(e, l);
    if (l2 < 0)
        return MK_OK;
    const mk_moe_w *w2 = &e->m->layers[l2].moe;
    mk_engine_matmul(e, &w2->router, e->xb, 1, e->router);
    if (w2->router_bias)
        mk_engine_add_bias(e, e->router, w2->router_bias, 1, e->c->num_experts);
    mk_route_args ra = route_args(e, w2, e->router, e->pf_idx_b, e->pf_w_b, 1);
    BE(e)->route(CTX(e), &ra);
    BE(e)->download(CTX(e), e->pf_idx, e->pf_idx_b, (size_t)e->k * sizeof(int32_t));
    return mk_expert_store_prefetch(e->store, l2, e->pf_idx, e->k);
}

/* Most experts one token's batch takes (stack arrays below). */
#define MK_MOE_BATCH 64

/* Decode with a store that has every expert ready (resident): take the
 * token's experts all at once and run their MLPs in the backend's
 * expert_mlps (one parallel region per stage), each output straight into
 * its pair row, the row scatter would have put it in. The expert scratch
 * e->ex_g/ex_u holds chunk x Imax floats, so nused <= chunk experts fit.
 * Bitwise the same as the one-at-a-time loop (backend.h). */
static mk_status run_token_batched(mk_engine *e, int l, int nused, int64_t H) {
    const mk_expert *ex[MK_MOE_BATCH] = {0};
    float *ys[MK_MOE_BATCH] = {0};
    int ids[MK_MOE_BATCH];
    for (int u = 0; u < nused; u++) {
        mk_status st = mk_expert_store_next(e->store, l, &ids[u], &ex[u]);
        if (st != MK_OK) {
            for (int j = 0; j < u; j++)
                mk_expert_store_release(e->store, l, ids[j]);
            return mk_err_wrap(st, "layer %d", l);
        }
        int32_t beg = ids[u] ? e->cnt[ids[u] - 1] : 0; /* its one pair (n == 1) */
        ys[u] = e->pairs + (int64_t)e->order[beg] * H;
    }
    BE(e)->expert_mlps(CTX(e), ex, nused, e->xb, ys, e->ex_g, e->ex_u);
    for (int u = 0; u < nused; u++)
        mk_expert_store_release(e->store, l, ids[u]);
    return MK_OK;
}

/* Most experts one batched decode step takes at once (stack arrays below). */
#define MK_MOE_EACH 256

/* A batched decode step (e->batch_inv, several sequences) with a store
 * whose experts are all ready: every pair's input gathered in expert order
 * in one go (the runs of e->order), all the experts' MLPs in the backend's
 * expert_mlps_each (a few parallel regions, each row as one token alone
 * gets it), the outputs scattered to their pair rows in one go. The
 * caller checked n*k <= chunk (e->ex_x/ex_o rows, e->ex_g/ex_u rows of
 * Imax). */
static mk_status run_batch_each(mk_engine *e, int l, int nused, int64_t npairs, int64_t H) {
    const mk_expert *ex[MK_MOE_EACH] = {0};
    const float *xs[MK_MOE_EACH];
    float *ys[MK_MOE_EACH];
    int64_t ns[MK_MOE_EACH];
    int ids[MK_MOE_EACH];
    BE(e)->gather(CTX(e), e->ex_x, e->xb, e->tok_b, npairs, H);
    for (int u = 0; u < nused; u++) {
        mk_status st = mk_expert_store_next(e->store, l, &ids[u], &ex[u]);
        if (st != MK_OK) {
            for (int j = 0; j < u; j++)
                mk_expert_store_release(e->store, l, ids[j]);
            return mk_err_wrap(st, "layer %d", l);
        }
        int32_t beg = ids[u] ? e->cnt[ids[u] - 1] : 0, end = e->cnt[ids[u]];
        xs[u] = e->ex_x + (int64_t)beg * H;
        ys[u] = e->ex_o + (int64_t)beg * H;
        ns[u] = end - beg;
    }
    BE(e)->expert_mlps_each(CTX(e), ex, nused, xs, ns, ys, e->ex_g, e->ex_u);
    BE(e)->scatter(CTX(e), e->pairs, e->ex_o, e->pair_b, npairs, H);
    for (int u = 0; u < nused; u++)
        mk_expert_store_release(e->store, l, ids[u]);
    return MK_OK;
}

/* The backend's fused MoE slot, when it has one and takes this call: only
 * with the engine's own all-resident store (the slot keeps device copies of
 * the experts' views, which a streaming store reuses for other experts) and
 * no routing observer (the routing stays in the backend) and no linear-input
 * observer (the products stay in the backend). */
/* The backend's whole-layer slot (CUDA: mk_cuda_moe_step per token). Also
 * in batched decode steps (e->batch_inv): the slot's contract (backend.h)
 * is that each row is what a one-token call gives it. */
static mk_moe_args fused_args(const mk_engine *e, const mk_moe_w *w, const mk_route_args *ra, int64_t n) {
    mk_moe_args a = {.x = e->xb, .y = e->y, .n = n, .H = e->c->hidden_size, .router = &w->router,
                     .experts = w->experts, .E = e->c->num_experts, .k = e->k, .route = *ra};
    if (w->has_shared) {
        a.sh_gate = &w->shared.gate;
        a.sh_up = &w->shared.up;
        a.sh_down = &w->shared.down;
        if (w->has_shared_gate)
            a.sh_gate_w = &w->shared_gate;
    }
    return a;
}

/* Whether the layer's experts may go to a whole-layer slot: the engine's
 * own all-resident store (the backend keeps device copies of the experts'
 * views), no expert partition, no routing or linear-input observer (the
 * routing and products stay in the backend), no expert biases (gpt_oss). */
static bool slot_ok(const mk_engine *e, const mk_moe_w *w) {
    return e->own_store && !e->has_part && !e->on_route && !w->b_down && !e->on_linear;
}

static bool run_fused(mk_engine *e, const mk_moe_w *w, const mk_route_args *ra, int64_t n) {
    if (!BE(e)->moe || !slot_ok(e, w))
        return false;
    mk_moe_args a = fused_args(e, w, ra, n);
    return BE(e)->moe(CTX(e), &a);
}

/* A prefill chunk's routed experts in the backend's grouped slot, the
 * routing (ra's idx, w) already computed in backend memory: every routed
 * row of the chunk in one grouped GEMM per projection instead of a loop
 * over the used experts with the routing downloaded. Never in a batched
 * decode step (its rows must be what one token alone gets). */
static bool grouped_ok(const mk_engine *e, const mk_moe_w *w, int64_t n) {
    return BE(e)->moe_grouped && n > 1 && !e->batch_inv && slot_ok(e, w);
}

/* (grouped_ok checked by the caller) */
static bool run_grouped(mk_engine *e, const mk_moe_w *w, const mk_route_args *ra, int64_t n) {
    mk_moe_args a = fused_args(e, w, ra, n);
    return BE(e)->moe_grouped(CTX(e), &a, ra->idx, ra->w);
}

/* gpt_oss's expert x on m gathered rows: biased gate and up (one fused
 * interleaved projection in the HF layouts), the clamped SwiGLU, biased
 * down (transformers GptOssExperts). */
static void oss_expert(mk_engine *e, const mk_moe_w *w, int x, const mk_expert *ex, const float *in,
                       int64_t m, float *out) {
    const mk_config *c = e->c;
    int64_t I = c->moe_intermediate_size, H = c->hidden_size;
    float alpha = (float)c->swiglu_alpha, limit = (float)c->swiglu_limit;
    if (w->fused_gu) {
        mk_engine_matmul(e, &ex->gate, in, m, e->ex_g);
        mk_engine_add_bias(e, e->ex_g, w->b_gate + (int64_t)x * 2 * I, m, 2 * I);
        BE(e)->clamped_swiglu(CTX(e), e->ex_u, e->ex_g, e->ex_g + 1, m * I, 2, alpha, limit);
    } else {
        mk_engine_matmul(e, &ex->gate, in, m, e->ex_g);
        mk_engine_add_bias(e, e->ex_g, w->b_gate + (int64_t)x * I, m, I);
        mk_engine_matmul(e, &ex->up, in, m, e->ex_u);
        mk_engine_add_bias(e, e->ex_u, w->b_up + (int64_t)x * I, m, I);
        BE(e)->clamped_swiglu(CTX(e), e->ex_u, e->ex_g, e->ex_u, m * I, 1, alpha, limit);
    }
    mk_engine_matmul(e, &ex->down, e->ex_u, m, out);
    mk_engine_add_bias(e, out, w->b_down + (int64_t)x * H, m, H);
}

/* The shared expert (qwen: times sigmoid(shared_expert_gate(x))) added to
 * the routed experts' sum in e->y. */
static mk_status add_shared(mk_engine *e, int l, const mk_moe_w *w, int64_t n) {
    mk_engine_tap(e, l, "routed experts", e->y, n, e->c->hidden_size);
    if (w->has_shared) {
        mk_engine_mlp(e, &w->shared.gate, &w->shared.up, &w->shared.down, e->xb, n, e->ex_o);
        mk_engine_tap(e, l, "shared expert", e->ex_o, n, e->c->hidden_size);
        if (w->has_shared_gate)
            mk_engine_matmul(e, &w->shared_gate, e->xb, n, e->sh);
        BE(e)->gated_add(CTX(e), e->y, w->has_shared_gate ? e->sh : NULL, e->ex_o, n, e->c->hidden_size);
    }
    return MK_OK;
}

static mk_status run_local(mk_engine *e, int l, const mk_moe_w *w, int64_t n) {
    const mk_config *c = e->c;
    int64_t H = c->hidden_size, k = e->k;
    size_t pb = (size_t)(n * k) * sizeof(int32_t);
    mk_route_args ra = route_args(e, w, e->router, e->top_idx_b, e->top_w_b, n);
    /* a prefill chunk tries the grouped slot first (after the routing,
     * below); the fused slot runs its tokens one by one */
    const bool grouped = grouped_ok(e, w, n);
    if (!grouped && run_fused(e, w, &ra, n))
        return MK_OK;
    /* the general path waits for the routing: never inside a recorded step
     * (forward.c then runs the step again, unrecorded) */
    if (e->recording)
        return mk_err(MK_E_INTERNAL, "layer %d: MoE general path inside a recorded step", l);
    /* routing */
    mk_engine_matmul(e, &w->router, e->xb, n, e->router);
    if (w->router_bias) /* gpt_oss */
        mk_engine_add_bias(e, e->router, w->router_bias, n, c->num_experts);
    mk_engine_tap(e, l, "router logits", e->router, n, c->num_experts);
    BE(e)->route(CTX(e), &ra);
    if (grouped && run_grouped(e, w, &ra, n))
        return add_shared(e, l, w, n);
    if (grouped && run_fused(e, w, &ra, n)) /* declined: the token loop (its own routing) */
        return MK_OK;
    e->moe_general++;
    BE(e)->download(CTX(e), e->top_idx, e->top_idx_b, pb);
    if (e->on_route) { /* observers (moekit profile) see each token's choice */
        BE(e)->download(CTX(e), e->top_w, e->top_w_b, (size_t)(n * k) * sizeof(float));
        for (int64_t t = 0; t < n; t++)
            e->on_route(e->on_route_user, l, e->pos + t, (int)k, e->top_idx + t * k,
                        e->top_w + t * k);
    }
    int nused = group_pairs(e, n);
    if (e->has_part) /* only the partition's share of the used experts runs here */
        nused = keep_owned(e, l, nused);
    BE(e)->upload(CTX(e), e->tok_b, e->tok, pb);
    BE(e)->upload(CTX(e), e->pair_b, e->order, pb);
    BE(e)->upload(CTX(e), e->perm_b, e->perm, pb);
    /* routed experts, in the order the store has them ready */
    mk_status st = mk_expert_store_acquire(e->store, l, e->used, nused);
    if (st != MK_OK)
        return mk_err_wrap(st, "layer %d", l);
    if (e->prefetch && n == 1 && (st = prefetch_next(e, l)) != MK_OK)
        return mk_err_wrap(st, "layer %d", l);
    if (n == 1 && BE(e)->expert_mlps && !w->b_down && !e->on_linear && mk_expert_store_all_ready(e->store) &&
        nused <= MK_MOE_BATCH && nused <= e->chunk) {
        MK_TRY(run_token_batched(e, l, nused, H));
        nused = 0; /* all done */
    } else if (e->batch_inv && n > 1 && BE(e)->expert_mlps_each && mk_expert_store_all_ready(e->store) &&
               nused <= MK_MOE_EACH && n * k <= e->chunk) {
        MK_TRY(run_batch_each(e, l, nused, n * k, H));
        nused = 0;
    }
    for (int u = 0; u < nused; u++) {
        int x;
        const mk_expert *ex;
        st = mk_expert_store_next(e->store, l, &x, &ex);
        if (st != MK_OK)
            return mk_err_wrap(st, "layer %d", l);
        const void *hb = NULL;
        size_t hn = 0;
        if (BE(e)->host_changed && mk_expert_store_changed(e->store, l, x, &hb, &hn))
            /* its cache slot holds other bytes than when the backend last
             * copied from it (a streaming store reusing slots) */
            BE(e)->host_changed(CTX(e), hb, hn);
        int32_t end = e->cnt[x], beg = x ? e->cnt[x - 1] : 0;
        int64_t m = end - beg;
        BE(e)->gather(CTX(e), e->ex_x, e->xb, e->tok_b + beg, m, H);
        if (w->b_down)
            oss_expert(e, w, x, ex, e->ex_x, m, e->ex_o);
        else
            mk_engine_mlp(e, &ex->gate, &ex->up, &ex->down, e->ex_x, m, e->ex_o);
        BE(e)->scatter(CTX(e), e->pairs, e->ex_o, e->pair_b + beg, m, H);
        mk_expert_store_release(e->store, l, x);
    }
    if (e->has_part) { /* the other experts' rows from their owners, moved, not summed */
        MK_TRY(BE(e)->sync(CTX(e)));
        mk_moe_xchg xc = {.layer = l, .pos = e->pos, .n = n, .k = (int)k, .H = H,
                          .E = (int32_t)c->num_experts, .pairs = e->pairs, .order = e->order, .ends = e->cnt,
                          .top_idx = e->top_idx};
        MK_TRY(e->part.exchange(e->part.user, &xc));
    }
    BE(e)->combine(CTX(e), e->y, e->pairs, e->top_w_b, e->perm_b, n, (int)k, H);
    return add_shared(e, l, w, n);
}

const mk_moe_exec_i mk_moe_exec_local = {.name = "local", .run = run_local};
