/* Internal: the engine's state and scratch, shared by engine.c (create,
 * arenas, RoPE tables), forward.c (the forward pass) and moe.c (the MoE
 * executor).
 *
 * Two arenas are allocated at create time. The backend arena (backend
 * memory, from the backend's alloc) holds every activation, cache and state
 * buffer: the engine computes offsets into it and hands them to backend
 * slots, never dereferencing them. The host arena holds what the engine
 * itself reads: RoPE tables before upload, routing decisions after
 * download, and the expert grouping. Scratch is sized for one chunk of
 * nC = prefill_chunk tokens; caches for max_ctx positions. Shapes use the
 * names of model_impl.h; [B] marks backend memory, [h] host memory. */
#ifndef MK_ENGINE_IMPL_H
#define MK_ENGINE_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "model/model_impl.h"
#include "moekit/backend.h"
#include "moekit/engine.h"
#include "moekit/expert_store.h"
#include "moekit/kernels.h"

/* Largest per-head dimension the CPU backend's fixed per-head arrays hold
 * (head_dim, MLA q/k/v head dims and its latent attention's kl+dr, DeltaNet
 * dk/dv). */
#define MK_ENGINE_MAX_HEAD_DIM 1024
/* Tokens of a chunk whose MLA absorbed queries and latent outputs exist at
 * once (e->qabs, e->olat): forward.c's mla_block runs its attention over
 * sub-chunks of at most this many (mla_sub; a multiple of 128 keeps them
 * on the kernels' token blocks), so that scratch is not the whole chunk's
 * (272 MiB at DeepSeek-V3's shape and the default chunk of 512; 68 here).
 * A batched decode step (batch.c) uses the same buffers for its n <=
 * MK_ENGINE_MAX_BATCH rows, n <= half the chunk. */
#define MK_MLA_SUB 128
_Static_assert(MK_MLA_SUB % 128 == 0 && MK_ENGINE_MAX_BATCH <= MK_MLA_SUB,
               "MLA sub-chunks: on 64-token blocks in halves, and a decode batch's rows fit");
/* Logit rows computed per step when logits are staged through backend
 * memory (backends without host memory). */
#define MK_ENGINE_LOGIT_ROWS 16

/* The MoE executor seam: computes one MoE layer's output e->y from e->xb
 * (routing, routed experts, shared expert). The local executor (moe.c)
 * runs every expert on this engine's backend through its expert store; an
 * expert-parallel executor (several GPUs or hosts) implements the same
 * call. */
typedef struct mk_moe_exec_i {
    const char *name;
    mk_status (*run)(mk_engine *e, int layer, const mk_moe_w *w, int64_t n);
} mk_moe_exec_i;

extern const mk_moe_exec_i mk_moe_exec_local;

struct mk_engine {
    const mk_model *m;
    const mk_config *c;
    int k;                /* experts per token: the config's, or mk_engine_opts.experts_per_tok */
    mk_pool *pool;        /* only with the engine's own CPU backend */
    mk_backend *be;
    bool own_be;
    const mk_backend_i *bi; /* be's table and context, for the hot path */
    void *bctx;
    const mk_moe_exec_i *moe;
    bool has_part;        /* mk_engine_opts.moe_part was given: */
    mk_moe_part part;     /* its copy (moe.c runs only the owned experts, forward.c calls step) */
    bool has_pipe;        /* mk_engine_opts.layer_pipe was given: */
    mk_layer_pipe pipe;   /* its copy (forward.c runs layers [first, last), carve holds their caches) */
    mk_expert_store *store;
    bool own_store;
    int64_t max_ctx, pos; /* capacity and tokens so far */
    int64_t chunk;        /* nC */
    bool prefetch;        /* mk_engine_opts.prefetch_experts, and the store acts on guesses */
    /* decode-step recording (backend step_begin / step_end, forward.c) */
    bool recording;       /* the slots queued now are being recorded */
    bool graph_ready;     /* a single-token step ran with every MoE layer fused */
    bool no_graph;        /* a recording failed: this engine records no more */
    bool dev_pos;         /* this step reads its position from pos_b and writes its K/V
                             rows through kst/vst (a recorded step, replayable later) */
    uint64_t replay_id;   /* the backend's recording of this engine's step (step_last), 0: none */
    bool replay_argmax;   /* that recording ends with the device argmax (argmax_dev) */
    /* decode lookahead (forward.c, the backend's step_chain / step_take): mk_engine_forward_argmax
     * queues the step of the token its result will be, fed by the device's argmax, before it
     * reads that result; a call with that token finds its step queued */
    bool la_ok;           /* at create: the backend chains, one process, no observers, not
                             disabled (mk_engine_opts.no_lookahead): replayed greedy steps go
                             through step_chain / step_take */
    bool la_ahead;        /* and a step may be queued ahead: no recurrent state (a step queued
                             ahead and dropped writes only cache rows at the position) */
    bool la_loop;         /* the last call was a one-token mk_engine_forward_argmax (with the
                             backend's last user this engine: a decode loop, so a step ahead) */
    bool la_pending;      /* the step of token la_id at position pos is queued, result slot la_slot */
    int32_t la_id;
    int la_slot;
    int moe_general;      /* MoE layers that took the general path in this chunk */
    bool batch_inv;       /* a decode step over several sequences (batch.c) runs on this
                             engine's scratch: every product goes through mk_engine_mm's
                             per-token form and the fused MoE slot is not used */
    mk_route_fn on_route; /* optional routing observer (mk_engine_opts) */
    void *on_route_user;
    mk_select_fn on_select; /* optional DSA selection observer (mk_engine_opts) */
    void *on_select_user;
    mk_linear_fn on_linear; /* optional linear-input observer (mk_engine_opts) */
    void *on_linear_user;
    mk_tap_fn on_tap;     /* optional step observer (mk_engine_opts) */
    void *on_tap_user;
    int tap_layer;
    float *tap_buf;       /* host copy of a tapped step's output (device backends; malloc'd) */
    size_t tap_cap;       /* its floats */

    void *arena;          /* backend arena */
    void *harena;         /* host arena */
    size_t arena_bytes;   /* both */
    size_t kv_token_bytes; /* cache bytes per position, all layers (mk_engine_kv_bytes_per_token) */

    /* per layer (NULL where the layer has none), [B] */
    float **kc, **vc;     /* KV cache: attn k, v [max_ctx, nKV, hd]; MLA kc [max_ctx, kl+dr] =
                             normed latent | roped k_pe, vc NULL (values are the latents) */
    float **conv, **ssm;  /* DeltaNet: conv inputs [K-1, C]; state [nv, dk, dv] */
    float **ikc;          /* DSA indexer key cache [max_ctx, dI] per layer with its own indexer */

    /* RoPE */
    int rot_dim;          /* rotated dims per head */
    float *inv_freq;      /* [h] [rot/2] */
    float attn_factor;    /* multiplies cos/sin (YaRN) */
    float attn_scale;     /* softmax scale of q.k */
    float *cos, *sin;     /* [h] [nC, rot/2] for the current chunk */
    float *cos_b, *sin_b; /* [B] the same, uploaded */

    /* scratch for one chunk, [B] */
    int32_t *ids;         /* [nC] token ids of the chunk */
    int64_t *pos_b;       /* [1] the step's position (backends with step_replay), else NULL */
    float *kst, *vst;     /* [kvw] this token's K (MLA: latent cache row) and V rows in a
                             recorded step; attention writes them into the cache (pos_dev) */
    float *x;             /* [nC, H] residual stream */
    float *xb;            /* [nC, H] normed input of a block */
    float *y;             /* [nC, H] block output */
    float *lg;            /* [LB, V] staged logits (backends without host memory), else NULL */
    int32_t *amax;        /* [1] greedy token (backends with argmax and deferred checks), else NULL */
    float *glg;           /* [h] [V] logits of mk_engine_forward_argmax without amax, else NULL */
    bool argmax_dev;      /* this call: the step ends with the logits' check and argmax into amax */
    int32_t *next_id;     /* this call: where amax goes (host) */
    float *qraw;          /* [nC, max(nH*hd*2, nH*(dn+dr))] q projection (gated: q|gate per head) */
    float *q;             /* [nC, nH*hd] queries after split/norm/rope */
    float *gate;          /* [nC, nH*hd] output gate of gated attention */
    float *att;           /* [nC, nH*max(hd, dvh)] attention output (MLA: after W_v) */
    float *qa;            /* [nC, ql] MLA q latent */
    float *qabs;          /* [nS, nH, kl+dr] MLA absorbed queries W_k^T q_nope | q_pe of one
                             sub-chunk, nS = min(nC, MK_MLA_SUB) */
    float *olat;          /* [nS, nH, kl] MLA attention output in latent space (a batched
                             decode step: first its [n, kl+dr] compressed rows) */
    int64_t sel_k;        /* DSA: positions kept per query, min(index_topk, max_ctx); 0 without DSA */
    float *iq;            /* [nC, nI*dI] DSA indexer queries */
    float *iw;            /* [nC, nI] DSA indexer head weights */
    int32_t *sel;         /* [nC, sel_k] DSA: positions each token attends to (the last indexer's) */
    float *sel_sc;        /* [nC, sel_k] DSA selection scratch */
    int32_t *sel_h;       /* [h] [nC, sel_k] the same downloaded for on_select */
    float *proj;          /* [nC, 2Kd+2Vd] DeltaNet projection (grouped) */
    float *bap;           /* [nC, 2nv] DeltaNet b|a projection (grouped) */
    float *mixed;         /* [nC, C] conv input q|k|v */
    float *conv_out;      /* [nC, C] */
    float *z;             /* [nC, Vd] output gate */
    float *gb, *ga;       /* [nC, nv] b and a */
    float *o;             /* [nC, Vd] DeltaNet output */
    float *router;        /* [nC, E] router logits */
    int32_t *top_idx_b;   /* [nC, k] routed experts per token */
    float *top_w_b;       /* [nC, k] their weights */
    int32_t *tok_b;       /* [nC * k] token row of each (token, slot) pair, sorted by expert */
    int32_t *pair_b;      /* [nC * k] pair index t*k+slot of the same, sorted by expert */
    int32_t *perm_b;      /* [nC * k] per token, its slots in ascending expert id */
    float *pairs;         /* [nC * k, H] each pair's expert output */
    float *ex_x;          /* [nC, H] tokens gathered for one expert */
    float *ex_g, *ex_u;   /* [nC, Imax] */
    float *ex_o;          /* [nC, H] */
    float *sh;            /* [nC] shared expert gate logits */
    float *brow;          /* [Bw] one bias row staged (families with biases), Bw = widest bias */
    float *brows;         /* [nC, Bw] the row repeated, added with axpy */
    float *sinks;         /* [L, nH] gpt_oss attention sinks, uploaded at create */
    int32_t *pf_idx_b;    /* [k] guessed experts of the next MoE layer (prefetch) */
    float *pf_w_b;        /* [k] their weights (unused) */

    /* routing on the host, [h] */
    int32_t *top_idx;     /* [nC, k] downloaded */
    float *top_w;         /* [nC, k] downloaded (only with on_route) */
    int32_t *cnt;         /* [E + 1] pairs per expert, then run ends */
    int32_t *order;       /* [nC * k] pair indices sorted by expert */
    int32_t *tok;         /* [nC * k] their token rows */
    int32_t *perm;        /* [nC * k] per token, slots in ascending expert id */
    int32_t *used;        /* [E] experts used in the chunk */
    int32_t *pf_idx;      /* [k] the guess, downloaded */
};

/* y[n, w->rows] = x[n, w->cols] w^T through e's backend, shown first to
 * the linear-input observer when there is one (host memory: engine.c
 * refuses the observer otherwise). */
void mk_engine_mm(mk_engine *e, const mk_wt *w, const float *x, int64_t n, float *y);
static inline void mk_engine_matmul(mk_engine *e, const mk_wt *w, const float *x, int64_t n, float *y) {
    if (e->on_linear)
        e->on_linear(e->on_linear_user, w, x, n);
    mk_engine_mm(e, w, x, n, y); /* batch-invariant rows in a batched step (batch.c) */
}

/* out[n, H] = down(silu(gate(x)) * up(x)) through e's backend (scratch
 * e->ex_g, e->ex_u; x and out are backend memory of n rows). */
void mk_engine_mlp(mk_engine *e, const mk_wt *gate, const mk_wt *up, const mk_wt *down,
                   const float *x, int64_t n, float *out);

/* rows[t] += bias for t < n rows of `width` (a projection's bias; bias is
 * host model memory, staged through e->brow / e->brows; n <= nC). */
void mk_engine_add_bias(mk_engine *e, float *rows, const float *bias, int64_t n, int64_t width);

/* The step observer (mk_engine_opts.on_tap) shown step `op` of layer l:
 * x[rows, cols] of backend memory, copied to host memory first. A no-op
 * without an observer, for other layers than its tap_layer and in batched
 * steps. */
void mk_engine_tap_out(mk_engine *e, int l, const char *op, const float *x, int64_t rows, int64_t cols);
static inline void mk_engine_tap(mk_engine *e, int l, const char *op, const float *x, int64_t rows,
                                 int64_t cols) {
    if (e->on_tap)
        mk_engine_tap_out(e, l, op, x, rows, cols);
}

/* backend.c: where the engine with a step queued ahead on this backend is
 * kept (NULL: none). The backend's result slots and non-finite record are
 * shared by its engines, so another engine's step first settles that one. */
void **mk_backend_ahead(mk_backend *b);
/* backend.c: the engine that last ran a step here (forward.c: a step is
 * queued ahead only for an engine in a decode loop of its own) */
void **mk_backend_last(mk_backend *b);
/* forward.c: drop the step queued ahead on e's backend, if any (any of its
 * engines'): wait for it and clear what it found. Every entry point that
 * queues device work or moves the position calls it first, but the
 * greedy call that feeds the token the step was queued for. */
mk_status mk_engine_settle(mk_engine *e);
/* forward.c: the next mk_engine_forward_argmax gives the last token its
 * caller wants (generate.c: max_tokens): no step is queued ahead of it. */
void mk_engine_no_ahead(mk_engine *e);

/* Fill e->cos/e->sin for positions pos0 .. pos0+n-1. */
void mk_engine_rope_tables(mk_engine *e, int64_t pos0, int64_t n);
/* Fill row `row` of e->cos/e->sin for position pos (a batch's rows sit at
 * their own sequences' positions). */
void mk_engine_rope_row(mk_engine *e, int64_t row, int64_t pos);

/* y[n, w.rows] = x W^T through e's backend: `matmul`, or while
 * e->batch_inv each token's row exactly as a one-token matmul gives it
 * (the backend's matmul_each, else matmul per token), so a sequence's
 * results do not depend on the rest of its batch (batch.c). */
void mk_engine_mm(mk_engine *e, const mk_wt *w, const float *x, int64_t n, float *y);

#endif
