/* The bookkeeping of a bounded expert cache: which (layer, expert) sits in
 * which slot, which slots are in use, and which one to give up when a miss
 * needs room. No memory of experts here, no I/O: the streaming store
 * (expert_store_stream.c) owns the slot buffers and the reads, and asks
 * this file what to keep.
 *
 * Policies (issue 11, item 4):
 *   LRU   evict the slot whose expert was used longest ago: the baseline.
 *         Every use has its own time (the experts of one step in the order
 *         announced), so the choice never depends on which slot holds what;
 *         an expert loaded without a use (a guess, the warm fill) counts as
 *         used at its load.
 *   FREQ  evict the slot whose expert has the lowest decayed use count:
 *         every use adds 1 to the expert's score, and scores halve every
 *         `half_life` uses of the cache (a use is one expert of one layer
 *         for one step), so experts a model keeps routing to stay while a
 *         burst of one-off experts passes through; ties go to LRU. The
 *         decay is kept in the log domain (key = log2(score) + t/h), so
 *         comparing two experts needs no update of either.
 * Pinned slots are never evicted: an expert is pinned from the moment the
 * store hands it out (or starts loading it) until it is released, and the
 * hottest experts of a profile can be pinned for good.
 *
 * The oracle (mk_ecache_belady): the hit rate of Belady's optimal policy on
 * a recorded access trace with the same number of slots, the bound a real
 * policy is judged against (`--stats`). */
#ifndef MK_ENGINE_EXPERT_CACHE_H
#define MK_ENGINE_EXPERT_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "moekit/status.h"

typedef enum mk_ecache_policy {
    MK_ECACHE_LRU = 0,
    MK_ECACHE_FREQ = 1,
} mk_ecache_policy;

typedef struct mk_ecache mk_ecache;

/* A cache of `nslots` slots over n_layers x n_experts keys. half_life:
 * uses of the cache over which a FREQ score halves (0: 4096). */
mk_status mk_ecache_create(int nslots, int n_layers, int n_experts, mk_ecache_policy policy,
                           double half_life, mk_ecache **out);
void mk_ecache_free(mk_ecache *c); /* NULL ok */

/* One use of expert (layer, e): counts it for the policy and returns the
 * slot holding it, or -1 (a miss: call mk_ecache_claim). */
int mk_ecache_use(mk_ecache *c, int layer, int e);
/* The slot holding (layer, e), or -1: a look, not a use (nothing counted). */
int mk_ecache_find(const mk_ecache *c, int layer, int e);
/* A slot for (layer, e), which must not be cached: the lowest free slot,
 * else the policy's victim among the unpinned ones (whose expert is
 * dropped and returned in *old_layer / *old_e, -1 when the slot was free);
 * among equally good victims, the lowest slot. -1 when every slot is
 * pinned. The slot comes back holding the key, pinned. */
int mk_ecache_claim(mk_ecache *c, int layer, int e, int *old_layer, int *old_e);
/* Pin counts: a pinned slot is never a victim. */
void mk_ecache_pin(mk_ecache *c, int slot);
void mk_ecache_unpin(mk_ecache *c, int slot);
/* Keep the slot for good (profile pins): it is never a victim again. */
void mk_ecache_pin_forever(mk_ecache *c, int slot);
/* Drop the key of a slot (a failed load): the slot becomes free. */
void mk_ecache_drop(mk_ecache *c, int slot);
int mk_ecache_slots(const mk_ecache *c);
/* Slots holding no expert. */
int mk_ecache_free_slots(const mk_ecache *c);

/* Hit rate of Belady's policy with `nslots` slots on keys[0..n) (any
 * integer encoding of (layer, expert)), where the accesses of one step
 * (the experts one layer uses at once) share a step number in steps[] and
 * must all be resident together: a step's own keys are never evicted for
 * one another, unless the step has more keys than slots (a prefill chunk:
 * the store then reads them as slots are released, and so does the
 * oracle). The first n_warm accesses only fill the cache (experts loaded
 * before the run, such as profile pins: the oracle starts from the same
 * content) and are not counted. Returns the fraction of the other accesses
 * that hit, or -1 on bad arguments / no memory. */
double mk_ecache_belady(const uint32_t *keys, const uint32_t *steps, size_t n, int nslots, size_t n_warm);

#endif
