/* The CUDA backend's fused MoE slot (mk_backend_i.moe): a whole MoE layer
 * for one decode token as the three kernels of mk_cuda_moe_step (router +
 * routing, gathered gate/up + SwiGLU, gathered down + weighted combine +
 * shared expert), so the routing never leaves the device and nothing
 * waits for it.
 *
 * The step's kernels read the routed experts from MLX's stacked layout
 * ([E*I, H] gate and up, [E*H, I] down). Checkpoints store experts either
 * way (per-expert tensors in Hugging Face layouts, stacked in MLX ones), so
 * on a layer's first call the backend copies its experts into stacked
 * device slabs of its own (expert e's rows, scales and biases at slot e)
 * and enters every expert's host view into the weight map as an alias of
 * its slot: the general path (prefill, several tokens) then computes with
 * the same device bytes, and no expert is uploaded twice. The layer's
 * device description (mk_cuda_moe) and its workspace are kept per layer,
 * keyed by the host experts array; the host memory behind the views must
 * not change while the backend lives (backend.h's contract for this slot)
 * unless mk_backend_cuda_forget drops it: forgetting any expert's data
 * drops its whole layer (its slabs and every expert's alias into them).
 *
 * The slot declines (returns false, nothing queued) when the step does not
 * take the layer: a weight format other than f32/bf16/f16/affine 4/8-bit,
 * experts of mixed formats, odd intermediate sizes, more than 1024 experts
 * or top_k over 32, a group limit the step does not take (over 64 groups,
 * groups of one expert), or more than MK_CUDA_MOE_TOKENS tokens. A declined layer is remembered so the check is
 * not repeated. Several tokens (a batched decode step, a short prefill
 * chunk) run as one batched step (mk_cuda_moe_step_n: each kernel launched
 * once for all of them, the experts they share read about once, each row
 * bitwise its one-token step's), in a workspace shared by the layers of
 * one shape; a hidden size that is not a multiple of 4 runs them one by one.
 *
 * Larger than VRAM: a layer whose experts would pass the expert VRAM budget
 * (mk_backend_cuda_set_expert_vram; default: what fits, leaving
 * MKB_VRAM_RESERVE free) gets its slabs in pinned host memory mapped into
 * the device's address space; the same kernels read them over the bus
 * (zero-copy), so results are bitwise those of device-resident slabs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_backend.cuh"
#include "cuda/mk_cuda.h"

/* Tokens the slot takes in one call (MK_CUDA_MOE_TOKENS, 64): every
 * batched decode step (MK_ENGINE_MAX_BATCH). Measured when tokens were
 * still run one by one: the general path's cost is per used expert (~8
 * launches each, a routing download), below the per-token loop only for
 * prefill chunks of a few hundred tokens (bench/RESULTS.md 2026-12-04,
 * session 10); prefill chunks take the grouped slot first (engine/moe.c). */
/* device memory a layer's slabs leave free for the engine's later
 * allocations (prefill scratch, the GEMM's tiles, cuBLAS) */
#define MKB_VRAM_RESERVE ((size_t)2 << 30)

extern "C" {
#include "core/alloc.h"
}

static const mk_wt *part_of(const mk_expert *x, int p) {
    return p == 0 ? &x->gate : p == 1 ? &x->up : &x->down;
}

void mkb_moe_free(mkb_ctx *c) {
    mkb_xcache_free(c); /* it points into the layers' slabs */
    mk_cuda_moe_ws_free(c->moe_bws);
    c->moe_bws = NULL;
    for (mkb_moe_layer *l = c->moe_layers, *nx; l; l = nx) {
        nx = l->next;
        for (int p = 0; p < 3; p++)
            for (int q = 0; q < 3; q++) {
                if (l->host && l->slab[p][q])
                    (void)cudaFreeHost(l->slab[p][q]);
                else
                    mk_cuda_free(l->slab[p][q]);
            }
        mk_cuda_moe_ws_free(l->ws);
        free(l);
    }
    c->moe_layers = NULL;
}

void mkb_moe_forget(mkb_ctx *c, const void *host_data) {
    for (mkb_moe_layer **pp = &c->moe_layers; *pp;) {
        mkb_moe_layer *l = *pp;
        bool hit = false;
        for (int e = 0; e < l->E && !hit; e++)
            for (int p = 0; p < 3; p++)
                hit |= part_of(&l->experts[e], p)->data == host_data;
        if (!hit) {
            pp = &l->next;
            continue;
        }
        *pp = l->next;
        mkb_xcache_free(c); /* it may copy from the slabs freed next */
        c->xc_tried_at = 0;
        for (int e = 0; e < l->E; e++) /* no view may map into the slabs freed next */
            for (int p = 0; p < 3; p++)
                mkb_weight_unalias(c, part_of(&l->experts[e], p));
        if (l->ok) {
            if (l->host)
                c->host_expert_bytes -= l->bytes, c->host_layers--;
            else
                c->bytes -= l->bytes, c->vram_expert_bytes -= l->bytes;
        }
        l->next = NULL;
        mkb_moe_layer *keep = c->moe_layers;
        c->moe_layers = l; /* free just this one */
        mkb_moe_free(c);
        c->moe_layers = keep;
    }
}

/* Same storage (format, shape, scale layout) as the first expert's view. */
static bool same_kind(const mk_wt *a, const mk_wt *b) {
    return a->fmt == b->fmt && a->rows == b->rows && a->cols == b->cols && a->sdtype == b->sdtype &&
           a->bits == b->bits && a->group == b->group && a->block_r == b->block_r && a->block_c == b->block_c &&
           a->global_scale == b->global_scale && !a->scales == !b->scales && !a->biases == !b->biases;
}

/* Stack part p (0 gate, 1 up, 2 down) of the E experts into device slabs,
 * alias every expert's view to its slot and describe the whole stack in
 * *dev. MK_E_UNSUPPORTED (nothing kept) when the experts differ in storage
 * or the step does not take the format. */
static mk_status stack_part(mkb_ctx *c, mkb_moe_layer *l, int p, mk_wt *dev) {
    const mk_wt *w0 = part_of(&l->experts[0], p);
    if (!mk_cuda_wt_supported(w0))
        return mk_err(MK_E_UNSUPPORTED, "fused moe: expert format %d (bits %d) not taken", (int)w0->fmt, w0->bits);
    for (int e = 1; e < l->E; e++)
        if (!same_kind(part_of(&l->experts[e], p), w0))
            return mk_err(MK_E_UNSUPPORTED, "fused moe: expert %d is stored unlike expert 0", e);
    const size_t nd = (size_t)w0->rows * mk_wt_row_bytes(w0), ns = mk_wt_scale_bytes(w0);
    const size_t nb = w0->fmt == MK_WF_AFFINE ? ns : 0;
    const size_t sz[3] = {nd, w0->scales ? ns : 0, w0->biases ? nb : 0};
    for (int q = 0; q < 3; q++)
        l->esz[p][q] = sz[q];
    for (int q = 0; q < 3; q++)
        if (sz[q]) {
            if (l->host) /* mapped: with unified addressing the host pointer is the device's */
                MKC_TRY(cudaHostAlloc(&l->slab[p][q], sz[q] * (size_t)l->E, cudaHostAllocMapped | cudaHostAllocPortable),
                        "pinning host memory for a fused MoE layer's experts");
            else
                MK_TRY(mk_cuda_malloc(&l->slab[p][q], sz[q] * (size_t)l->E, "a fused MoE layer's expert slab"));
        }
    for (int e = 0; e < l->E; e++) {
        const mk_wt *w = part_of(&l->experts[e], p);
        const void *src[3] = {w->data, w->scales, w->biases};
        mk_wt d = *w;
        const void **dst[3] = {&d.data, &d.scales, &d.biases};
        for (int q = 0; q < 3; q++) {
            *dst[q] = NULL;
            if (!sz[q])
                continue;
            char *at = (char *)l->slab[p][q] + (size_t)e * sz[q];
            if (l->host) /* nothing queued reads it yet: a plain copy */
                memcpy(at, src[q], sz[q]);
            else
                MKC_TRY(cudaMemcpyAsync(at, src[q], sz[q], cudaMemcpyHostToDevice, c->s),
                        "copying an expert to the device");
            *dst[q] = at;
        }
        if (!mkb_weight_alias(c, w, &d))
            return mk_err(MK_E_NOMEM, "fused moe: weight map");
    }
    l->bytes += (sz[0] + sz[1] + sz[2]) * (size_t)l->E;
    *dev = *w0;
    dev->rows = w0->rows * l->E;
    dev->data = l->slab[p][0];
    dev->scales = l->slab[p][1];
    dev->biases = l->slab[p][2];
    return MK_OK;
}

/* The device copy of host view w for the step, or NULL. */
static const mk_wt *dev_of(mkb_ctx *c, const mk_wt *w) {
    const mkb_entry *e = mkb_weight(c, w);
    return e ? &e->dev : NULL;
}

/* Build the layer's state; l->ok false (and nothing queued but uploads)
 * when the step does not take it. Errors other than "not taken" (out of
 * device memory) are recorded for sync. */
static void layer_build(mkb_ctx *c, mkb_moe_layer *l, const mk_moe_args *a) {
    mk_cuda_moe *m = &l->m;
    if (a->E < 1 || a->k < 1 || a->E > 1024 || a->k > 32 || a->k > a->E)
        return;
    const mk_wt *g0 = &a->experts[0].gate;
    /* formats the step's kernels take (mk_cuda_moe_check below also wants
     * the shared expert in the routed experts' format) */
    if (!mk_cuda_wt_supported(g0) || !mk_cuda_wt_supported(a->router) ||
        (a->sh_gate && (!a->sh_up || !a->sh_down || !mk_cuda_wt_supported(a->sh_gate) ||
                        !mk_cuda_wt_supported(a->sh_up) || !mk_cuda_wt_supported(a->sh_down))) ||
        (a->sh_gate_w && (!a->sh_gate || !mk_cuda_wt_supported(a->sh_gate_w))))
        return;
    memset(m, 0, sizeof *m);
    m->hidden = a->H;
    m->n_experts = a->E;
    m->top_k = a->k;
    m->inter = g0->rows;
    m->score = MK_CUDA_SCORE_SOFTMAX; /* set per call (mkb_moe) */
    m->scale = 1.0f;
    const mk_wt *rw = dev_of(c, a->router);
    if (!rw)
        return;
    m->router = *rw;
    if (a->sh_gate) {
        const mk_wt *sg = dev_of(c, a->sh_gate), *su = dev_of(c, a->sh_up), *sd = dev_of(c, a->sh_down);
        if (!sg || !su || !sd)
            return;
        m->has_shared = true;
        m->shared_inter = a->sh_gate->rows;
        m->sh_gate = *sg;
        m->sh_up = *su;
        m->sh_down = *sd;
        if (a->sh_gate_w) {
            const mk_wt *gw = dev_of(c, a->sh_gate_w);
            if (!gw)
                return;
            m->has_shared_gate = true;
            m->sh_gate_w = *gw;
        }
    }
    /* shapes and kinds as the step wants them, before any expert upload */
    mk_cuda_moe probe = *m;
    probe.gate = probe.up = *g0;
    probe.gate.rows = probe.up.rows = g0->rows * a->E;
    probe.down = a->experts[0].down;
    probe.down.rows = probe.down.rows * a->E;
    if (mk_cuda_moe_check(&probe) != MK_OK)
        return;
    /* where the layer's experts live: device memory while the expert VRAM
     * budget and the free memory (less a reserve for the engine's later
     * allocations) allow, else pinned host memory the kernels read over the
     * bus, like llama.cpp's --n-cpu-moe but computed on the GPU */
    size_t lb = 0;
    for (int p = 0; p < 3; p++) {
        const mk_wt *w0 = part_of(&a->experts[0], p);
        lb += ((size_t)w0->rows * mk_wt_row_bytes(w0) + mk_wt_scale_bytes(w0) * (w0->biases ? 2 : 1)) * (size_t)a->E;
    }
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) {
        (void)cudaGetLastError();
        fr = SIZE_MAX;
    }
    /* the expert cache (cuda_xcache.cu, beside the budget) not yet made: its
     * memory stays free for it */
    const size_t keep = c->xc ? 0 : c->expert_cache;
    l->host = c->vram_expert_bytes > c->expert_vram || lb > c->expert_vram - c->vram_expert_bytes || fr < lb ||
              fr - lb < MKB_VRAM_RESERVE || fr - lb - MKB_VRAM_RESERVE < keep;
    mk_status s = MK_OK;
    for (int p = 0; p < 3 && s == MK_OK; p++)
        s = stack_part(c, l, p, p == 0 ? &m->gate : p == 1 ? &m->up : &m->down);
    if (s == MK_OK)
        s = mk_cuda_moe_check(m);
    if (s == MK_OK)
        s = mk_cuda_moe_ws_new(m, &l->ws);
    if (s == MK_OK) /* the step's kernels run on c->s, not ordered after the legacy stream's zeroing */
        s = mk_cuda_moe_ws_zero(l->ws, c->s);
    if (s == MK_OK) {
        l->ok = true;
        if (l->host) {
            c->host_expert_bytes += l->bytes;
            c->host_layers++;
            mkb_xcache_free(c); /* made again over every host layer at the next tick */
        } else {
            c->bytes += l->bytes;
            c->vram_expert_bytes += l->bytes;
        }
    } else if (s != MK_E_UNSUPPORTED) {
        mkb_fail(c, mk_err_wrap(s, "CUDA backend: preparing a fused MoE layer"));
    }
}

static mkb_moe_layer *layer_of(mkb_ctx *c, const mk_moe_args *a) {
    for (mkb_moe_layer *l = c->moe_layers; l; l = l->next)
        if (l->experts == a->experts && l->E == a->E) {
            l->uses += l->uses < 2; /* a second use: every layer was stacked by the first step */
            return l;
        }
    if (c->recording) { /* its uploads would land in the recording */
        mkb_fail(c, mk_err(MK_E_INTERNAL, "CUDA backend: a MoE layer's first use while a step is being recorded"));
        return NULL;
    }
    mkb_moe_layer *l = (mkb_moe_layer *)mk_calloc(1, sizeof *l);
    if (!l) {
        mkb_fail(c, mk_err(MK_E_NOMEM, "CUDA backend: no memory for a fused MoE layer's state"));
        return NULL;
    }
    l->experts = a->experts;
    l->E = a->E;
    l->uses = 1;
    l->next = c->moe_layers;
    c->moe_layers = l;
    if (a->experts && a->E > 0)
        layer_build(c, l, a);
    return l;
}

const mk_cuda_moe *mkb_moe_layer_dev(mkb_ctx *c, const mk_moe_args *a) {
    mkb_moe_layer *l = layer_of(c, a);
    return l && l->ok && a->k == l->m.top_k ? &l->m : NULL;
}

/* The batched steps' workspace for layers of m's shape: made for
 * MK_CUDA_MOE_TOKENS tokens on first use and shared by those layers (their
 * steps run in stream order); a layer of another shape replaces it (freeing
 * waits for the device). NULL with the failure recorded for sync. */
static mk_cuda_moe_ws *batch_ws(mkb_ctx *c, const mk_cuda_moe *m) {
    const int64_t shape[4] = {m->n_experts, m->top_k, m->inter, m->has_shared ? m->shared_inter : 0};
    if (c->moe_bws && !memcmp(shape, c->bws_shape, sizeof shape))
        return c->moe_bws;
    mk_cuda_moe_ws_free(c->moe_bws);
    c->moe_bws = NULL;
    mk_status s = mk_cuda_moe_ws_new_n(m, MK_CUDA_MOE_TOKENS, &c->moe_bws);
    if (s == MK_OK)
        s = mk_cuda_moe_ws_zero(c->moe_bws, c->s);
    if (s != MK_OK) {
        mkb_fail(c, mk_err_wrap(s, "CUDA backend: the batched MoE step's workspace"));
        return NULL;
    }
    memcpy(c->bws_shape, shape, sizeof shape);
    return c->moe_bws;
}

bool mkb_moe(void *ctx, const mk_moe_args *a) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    /* the layer is prepared (stacked, aliased) on any call, so the general
     * path of a prefill uses the same device copies as the decode step */
    mkb_moe_layer *l = layer_of(c, a);
    /* a step that is not recorded (graphs off, not recordable, a batched or
     * prefill call): the expert cache's tick is the call for one of its
     * layers; it is made on a layer's second call, when the first step
     * has stacked every layer */
    if (l && l->uses >= 2 && c->expert_cache && !c->recording &&
        (c->xc ? c->xc_first == l : c->host_layers > 0 && c->host_layers != c->xc_tried_at)) {
        mkb_fold_flush(c); /* the queue in the engine's order */
        mkb_xcache_tick(c);
    }
    if (!l || !l->ok || a->n < 1 || a->n > MK_CUDA_MOE_TOKENS || a->k != l->m.top_k)
        return false;
    const mk_route_args *r = &a->route;
    const bool sig = r->kind == MK_ROUTE_GROUPED_SIGMOID;
    if (r->kind != MK_ROUTE_SOFTMAX && !sig)
        return false;
    /* DeepSeek-V3 / Kimi-K2: sigmoid scores chosen with the selection bias
     * within the best groups (the step's route_block, the CPU's order) */
    const int G = sig && r->n_group > 1 ? r->n_group : 1, TG = sig && r->topk_group > 1 ? r->topk_group : 1;
    if (G > 64 || a->E % G || (G > 1 && a->E / G < 2) || TG > G)
        return false;
    const float *bias = NULL;
    if (sig && r->bias && !(bias = mkb_param(c, r->bias, a->E)))
        return true; /* the failure is recorded for sync */
    l->m.score = sig ? MK_CUDA_SCORE_SIGMOID : MK_CUDA_SCORE_SOFTMAX;
    l->m.norm_topk = r->norm;
    l->m.scale = sig ? r->scale : 1.0f;
    l->m.sel_bias = bias;
    l->m.n_group = G;
    l->m.topk_group = TG;
    /* several tokens: one batched step, each row bitwise the one-token
     * step's (backend.h's contract for batched decode) */
    /* one token whose x is a held-back residual step's xb: the step
     * folded into the router (mk_cuda_set_norm_fold) */
    const mk_cuda_fold *f = a->n == 1 ? mkb_fold_for(c, a->x, true) : NULL;
    if (f) {
        bool taken = false;
        mk_status s = mk_cuda_moe_step_fold(&l->m, l->ws, f, a->y, false, c->s, &taken);
        if (taken)
            mkb_fold_taken(c);
        if (s != MK_OK)
            mkb_fail(c, mk_err_wrap(s, "CUDA backend: fused MoE step"));
        if (taken || s != MK_OK)
            return true;
    }
    mkb_fold_flush(c);
    if (a->n > 1 && a->H % 4 == 0 && !c->recording) { /* (its workspace may be allocated) */
        mk_cuda_moe_ws *ws = batch_ws(c, &l->m);
        mk_status s = ws ? mk_cuda_moe_step_n(&l->m, ws, a->x, a->y, a->n, false, c->s) : MK_OK;
        if (s != MK_OK)
            mkb_fail(c, mk_err_wrap(s, "CUDA backend: fused MoE step of %lld tokens", (long long)a->n));
        return true;
    }
    /* token by token (one token, rows not 16-byte aligned, or inside a
     * recording): the workspace is reused in stream order */
    for (int64_t t = 0; t < a->n; t++) {
        mk_status s = mk_cuda_moe_step(&l->m, l->ws, a->x + t * a->H, a->y + t * a->H, false, c->s);
        if (s != MK_OK) {
            mkb_fail(c, mk_err_wrap(s, "CUDA backend: fused MoE step"));
            break;
        }
    }
    return true;
}
