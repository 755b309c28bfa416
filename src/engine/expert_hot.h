/* Which experts a small fast cache should hold, from routing counts: the
 * plan behind the CUDA backend's VRAM cache of experts whose layers live in
 * host memory (cuda_fused.cu). No memory of experts here and no copies:
 * the caller counts how often each key (a layer's expert) was routed to,
 * adds the counts every tick, asks for moves and carries them out.
 *
 * Frequency-aware with decay: every tick multiplies every score by
 * `decay` and adds the tick's counts, so a key's score is its recent
 * routing rate (a half-life of log(0.5)/log(decay) ticks). The wanted set
 * is the nslots best scores; a plan moves toward it one slot at a time,
 * best candidate into the worst slot (a free slot first), and only while
 * the candidate's score exceeds the victim's by the factor `margin`, so
 * two keys of about the same rate do not take turns (each move costs a
 * copy over the bus, which competes with the reads it is meant to save).
 * Ties go to the lower key. */
#ifndef MK_ENGINE_EXPERT_HOT_H
#define MK_ENGINE_EXPERT_HOT_H

#include <stdint.h>

#include "moekit/status.h"

typedef struct mk_hotset mk_hotset;

/* One move of a plan: `slot` gives up old_key (-1: it was free) for
 * new_key. */
typedef struct mk_hot_move {
    int slot;
    int32_t old_key, new_key;
} mk_hot_move;

/* nslots slots over keys 0..nkeys-1; decay in (0, 1]; margin >= 1. */
mk_status mk_hotset_create(int nslots, int nkeys, double decay, double margin, mk_hotset **out);
void mk_hotset_free(mk_hotset *h); /* NULL ok */

/* One tick: every score times decay, plus counts[key] (nkeys entries, >= 0). */
void mk_hotset_add(mk_hotset *h, const int32_t *counts);
/* Up to max moves toward the wanted set, written to out and applied to the
 * set (mk_hotset_slot answers with them from now on); returns how many. */
int mk_hotset_plan(mk_hotset *h, int max, mk_hot_move *out);
/* The slot holding key, or -1. */
int mk_hotset_slot(const mk_hotset *h, int32_t key);
/* The key in slot, or -1 (free). */
int32_t mk_hotset_key(const mk_hotset *h, int slot);
double mk_hotset_score(const mk_hotset *h, int32_t key);

#endif
