/* Which experts a warm fill of the expert cache reads, and in what order
 * (mk_expert_store_fill, expert_store.h; issue 11). No I/O here: the
 * streaming store (expert_store_stream.c) reads what this file chooses.
 *
 * The choice, up to `room` experts not already cached:
 *   - with a preference order (a profile's ranking, hottest first): the
 *     first ones in that order;
 *   - without: an even share, room / (MoE layers) experts of every MoE
 *     layer (rounded down; the rest of the room stays free), lowest index
 *     first. Every layer is used every token, so no layer deserves more;
 *     without a profile no expert is known to be hotter than another, so
 *     which ones is a guess either way, and the lowest indices make one
 *     contiguous run per layer in every layout the loader knows (packed,
 *     per-expert tensors in name order, [E, ...] stacks), which the reader
 *     then reads as long sequential requests instead of scattered ones.
 * The plan comes back in preference order (the even share's order is
 * round-robin over the layers, index by index), which the store uses for
 * eviction (the coldest filled expert goes first); mk_efill_file_order
 * gives the order to read it in. */
#ifndef MK_ENGINE_EXPERT_FILL_H
#define MK_ENGINE_EXPERT_FILL_H

#include "engine/expert_cache.h"
#include "moekit/expert_store.h"
#include "moekit/model.h"

/* The experts to fill (*layer[i], *expert[i] for i < *n, malloc'd; both
 * NULL when *n is 0), hottest first: at most `room`, none cached in c,
 * only those o->range allows. A preference entry that is not a routed
 * expert of m is MK_E_ARG naming it; repeats are skipped. */
mk_status mk_efill_plan(const mk_model *m, const mk_ecache *c, int room, const mk_fill_opts *o, int **layer,
                        int **expert, int *n);

/* ord[0..n) := a permutation of the plan that reads it in file order: by
 * shard, then by the expert's first byte in it. */
mk_status mk_efill_file_order(const mk_model *m, const int *layer, const int *expert, int n, int *ord);

#endif
