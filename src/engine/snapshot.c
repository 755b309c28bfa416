/* Recurrent-state snapshots (engine.h mk_engine_state_*), for a prompt
 * cache over hybrid models.
 *
 * Attention and MLA caches can be rewound (rows below a position stay
 * valid), but a Gated DeltaNet layer's conv window and recurrent state
 * hold the whole history in a fixed size: going back to position p needs
 * the state as it was at p. A snapshot is that state (every GDN layer's
 * conv inputs [K-1, C] and state [nv, dk, dv], f32) copied to host memory;
 * restoring it and setting the position to p makes the engine exactly the
 * engine that had just processed the first p tokens, as long as its cache
 * rows below p were not rewritten since (the caller's bookkeeping: a
 * snapshot at p is valid while the engine's history keeps those p tokens). */
#include <string.h>

#include "engine/engine_impl.h"

/* Bytes of one GDN layer's conv window and recurrent state. */
static void gdn_sizes_c(const mk_config *c, size_t *conv, size_t *ssm) {
    int64_t C = 2 * (int64_t)c->lin_num_k_heads * c->lin_k_head_dim +
                (int64_t)c->lin_num_v_heads * c->lin_v_head_dim;
    *conv = (size_t)((c->conv_kernel - 1) * C) * sizeof(float);
    *ssm = (size_t)c->lin_num_v_heads * c->lin_k_head_dim * c->lin_v_head_dim * sizeof(float);
}

static void gdn_sizes(const mk_engine *e, size_t *conv, size_t *ssm) { gdn_sizes_c(e->c, conv, ssm); }

size_t mk_engine_state_bytes(const mk_engine *e) {
    size_t conv, ssm, total = 0;
    gdn_sizes(e, &conv, &ssm);
    for (int l = 0; l < e->c->num_layers; l++)
        if (e->conv[l])
            total += conv + ssm;
    return total;
}

/* The same from the model: engine.c gives a conv window and state to
 * every layer that is neither attention nor MLA. */
size_t mk_engine_state_bytes_for(const mk_model *m) {
    const mk_config *c = mk_model_config(m);
    size_t conv, ssm, total = 0;
    gdn_sizes_c(c, &conv, &ssm);
    for (int l = 0; l < c->num_layers; l++)
        if (m->layers[l].mixer != MK_MIXER_ATTN && m->layers[l].mixer != MK_MIXER_MLA)
            total += conv + ssm;
    return total;
}

mk_status mk_engine_state_save(const mk_engine *e, void *buf) {
    /* a step queued ahead (any engine's on this backend) first: its failure is its own to report,
     * not this sync's to swallow; the sequence itself does not change */
    MK_TRY(mk_engine_settle((mk_engine *)e));
    size_t conv, ssm;
    gdn_sizes(e, &conv, &ssm);
    char *p = buf;
    for (int l = 0; l < e->c->num_layers; l++)
        if (e->conv[l]) {
            e->bi->download(e->bctx, p, e->conv[l], conv);
            e->bi->download(e->bctx, p + conv, e->ssm[l], ssm);
            p += conv + ssm;
        }
    return e->bi->sync(e->bctx);
}

mk_status mk_engine_state_restore(mk_engine *e, const void *buf, int64_t pos) {
    MK_TRY(mk_engine_settle(e));
    if (pos < 0 || pos > e->pos)
        return mk_err(MK_E_ARG, "engine: cannot restore a snapshot of position %lld into a sequence "
                      "of %lld", (long long)pos, (long long)e->pos);
    size_t conv, ssm;
    gdn_sizes(e, &conv, &ssm);
    const char *p = buf;
    for (int l = 0; l < e->c->num_layers; l++)
        if (e->conv[l]) {
            e->bi->upload(e->bctx, e->conv[l], p, conv);
            e->bi->upload(e->bctx, e->ssm[l], p + conv, ssm);
            p += conv + ssm;
        }
    mk_status st = e->bi->sync(e->bctx);
    if (st != MK_OK)
        return st;
    e->pos = pos;
    return MK_OK;
}
