/* Internal: the engine's state and scratch, shared by engine.c (create,
 * arena, RoPE tables) and forward.c (the forward pass).
 *
 * Every float buffer below lives in one arena allocated at create time.
 * Scratch is sized for one chunk of nC = prefill_chunk tokens; caches for
 * max_ctx positions. Shapes use the names of model_impl.h. */
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

struct mk_engine {
    const mk_model *m;
    const mk_config *c;
    mk_pool *pool;
    mk_backend *be;
    bool own_be;
    mk_expert_store *store;
    bool own_store;
    int64_t max_ctx, pos; /* capacity and tokens so far */
    int64_t chunk;        /* nC */
    mk_route_fn on_route; /* optional routing observer (mk_engine_opts) */
    void *on_route_user;

    void *arena;
    size_t arena_bytes;
    size_t kv_token_bytes; /* cache bytes per position, all layers (mk_engine_kv_bytes_per_token) */

    /* per layer (NULL where the layer has none) */
    float **kc, **vc;     /* KV cache: attn k, v [max_ctx, nKV, hd]; MLA kc [max_ctx, kl+dr] =
                             normed latent | roped k_pe, vc NULL (values are the latents) */
    float **conv, **ssm;  /* DeltaNet: conv inputs [K-1, C]; state [nv, dk, dv] */

    /* RoPE */
    int rot_dim;          /* rotated dims per head */
    float *inv_freq;      /* [rot/2] */
    float attn_factor;    /* multiplies cos/sin (YaRN) */
    float attn_scale;     /* softmax scale of q.k */
    float *cos, *sin;     /* [nC, rot/2] for the current chunk */

    /* scratch for one chunk */
    float *x;             /* [nC, H] residual stream */
    float *xb;            /* [nC, H] normed input of a block */
    float *y;             /* [nC, H] block output */
    float *qraw;          /* [nC, max(nH*hd*2, nH*(dn+dr))] q projection (gated: q|gate per head) */
    float *q;             /* [nC, nH*hd] queries after split/norm/rope */
    float *gate;          /* [nC, nH*hd] output gate of gated attention */
    float *att;           /* [nC, nH*max(hd, dvh)] attention output (MLA: after W_v) */
    float *qa;            /* [nC, ql] MLA q latent */
    float *qabs;          /* [nC, nH, kl+dr] MLA absorbed queries W_k^T q_nope | q_pe */
    float *olat;          /* [nC, nH, kl] MLA attention output in latent space */
    float *proj;          /* [nC, 2Kd+2Vd] DeltaNet projection (grouped) */
    float *bap;           /* [nC, 2nv] DeltaNet b|a projection (grouped) */
    float *mixed;         /* [nC, C] conv input q|k|v */
    float *conv_out;      /* [nC, C] */
    float *z;             /* [nC, Vd] output gate */
    float *gb, *ga;       /* [nC, nv] b and a */
    float *o;             /* [nC, Vd] DeltaNet output */
    float *router;        /* [nC, E] router logits / scores */
    int32_t *top_idx;     /* [nC, k] routed experts per token */
    float *top_w;         /* [nC, k] their weights */
    int32_t *cnt;         /* [E + 1] tokens per expert, then offsets */
    int32_t *order;       /* [nC * k] (token, slot) pairs sorted by expert */
    int32_t *used;        /* [E] experts used in the chunk */
    float *ex_x;          /* [nC, H] tokens gathered for one expert */
    float *ex_g, *ex_u;   /* [nC, Imax] */
    float *ex_o;          /* [nC, H] */
    float *sh;            /* [nC] shared expert gate logits */
    float *ssc;           /* [E] routing scratch: probabilities / selection scores */
    float *gsc;           /* [E] group scores (grouped routing) */
    int32_t *gkeep;       /* [E] groups kept */
};

/* Fill e->cos/e->sin for positions pos0 .. pos0+n-1. */
void mk_engine_rope_tables(mk_engine *e, int64_t pos0, int64_t n);

#endif
