/* The expert store: where the forward pass gets routed experts from.
 *
 * The engine never indexes a layer's experts directly. Once a layer's
 * router has chosen, the engine announces the whole set with
 * mk_expert_store_acquire(layer, experts, n), then takes them one at a time
 * with mk_expert_store_next(), which hands back whichever announced expert
 * is ready first (blocking until one is), computes it, and calls
 * mk_expert_store_release(). A streaming store (experts read from SSD into a
 * bounded cache) starts every read at acquire, in file order, and returns
 * hits first, so compute on hits overlaps the reads of misses; the engine's
 * results do not depend on that order (the MoE combine sums in a fixed
 * order). Today's store (mk_expert_store_resident) hands out views into the
 * mmapped checkpoint in the order announced.
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

typedef struct mk_expert_store_i {
    const char *name;
    /* Announce the distinct experts[0..n) of `layer` that will be taken
     * with next(); reads of missing ones may start now. Errors name the
     * layer and expert. */
    mk_status (*acquire)(void *ctx, int layer, const int *experts, int n);
    /* The next announced expert of `layer` that is ready, each exactly
     * once: *e its id, *out its views, valid until release(layer, *e). May
     * block (I/O). MK_E_ARG when none is left. */
    mk_status (*next)(void *ctx, int layer, int *e, const mk_expert **out);
    /* The engine is done with the views of expert e. */
    void (*release)(void *ctx, int layer, int e);
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

mk_status mk_expert_store_acquire(mk_expert_store *s, int layer, const int *experts, int n);
mk_status mk_expert_store_next(mk_expert_store *s, int layer, int *e, const mk_expert **out);
void mk_expert_store_release(mk_expert_store *s, int layer, int e);
const char *mk_expert_store_name(const mk_expert_store *s);

#ifdef __cplusplus
}
#endif
#endif
