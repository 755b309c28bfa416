/* The expert store: where the forward pass gets routed experts from.
 *
 * The engine never indexes a layer's experts directly. For every routed
 * expert it needs it calls mk_expert_store_get(layer, expert), uses the
 * three weight views it gets back, and calls mk_expert_store_release() when
 * the matmuls are done. Today's store (mk_expert_store_resident) hands out
 * views into the mmapped checkpoint, so get/release cost nothing. A
 * streaming store (next issue: experts read from SSD into a bounded cache)
 * implements the same table: `get` may block on I/O and return a view into
 * a cache slot that stays valid until the matching `release`; `prefetch`
 * lets it start reads for the experts the router picked before they are
 * needed. Nothing in the engine assumes experts are resident or contiguous.
 *
 * Stores are described by a table of function pointers (mk_expert_store_i),
 * one instance per engine; they are not thread safe unless they say so. */
#ifndef MOEKIT_EXPERT_STORE_H
#define MOEKIT_EXPERT_STORE_H

#include "moekit/model.h"
#include "moekit/status.h"
#include "moekit/weight.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One routed expert: SwiGLU MLP down(silu(gate(x)) * up(x)). */
typedef struct mk_expert {
    mk_wt gate; /* [I, H] */
    mk_wt up;   /* [I, H] */
    mk_wt down; /* [H, I] */
} mk_expert;

typedef struct mk_expert_store_i {
    const char *name;
    /* Views of expert `e` of layer `layer`, valid until release(layer, e).
     * May block (I/O). Errors name the layer and expert. */
    mk_status (*get)(void *ctx, int layer, int e, const mk_expert **out);
    /* The engine is done with the views of get(layer, e). */
    void (*release)(void *ctx, int layer, int e);
    /* (optional) hint: these experts of `layer` will be requested soon. */
    void (*prefetch)(void *ctx, int layer, const int *experts, int n);
    /* Free ctx. */
    void (*free)(void *ctx);
} mk_expert_store_i;

typedef struct mk_expert_store mk_expert_store;

/* Wrap a table and its context (the store owns ctx from here on, even on
 * failure). */
mk_status mk_expert_store_create(const mk_expert_store_i *iface, void *ctx,
                                 mk_expert_store **out);
/* The all-resident store over a model's views (the model must outlive it). */
mk_status mk_expert_store_resident(const mk_model *m, mk_expert_store **out);
void mk_expert_store_free(mk_expert_store *s); /* NULL ok */

mk_status mk_expert_store_get(mk_expert_store *s, int layer, int e, const mk_expert **out);
void mk_expert_store_release(mk_expert_store *s, int layer, int e);
void mk_expert_store_prefetch(mk_expert_store *s, int layer, const int *experts, int n);
const char *mk_expert_store_name(const mk_expert_store *s);

#ifdef __cplusplus
}
#endif
#endif
