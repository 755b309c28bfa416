/* Expert partition: the engine's hook for expert parallelism (several
 * processes, e.g. MPI ranks, each computing a share of every MoE layer's
 * routed experts).
 *
 * Every process runs the same engine over the same token ids: attention,
 * norms, routers and shared experts are replicated, so each one has the
 * step's hidden states and routing decisions. In each MoE layer an engine
 * given an mk_moe_part computes only the routed experts it owns (the
 * contiguous range `range` gives), writes their outputs into their
 * (token, slot) rows of the layer's pair buffer, and hands that buffer to
 * `exchange`, which must fill every other row with the owners' outputs
 * before returning. The engine then sums each token's rows exactly as the
 * single-process engine does (combine: ascending expert id), so the
 * result is bitwise the single-process one whatever the partition: the
 * rows are moved, never added, by the exchange.
 *
 * The engine calls `step` (when not NULL) once per forward call, after
 * validating the ids and before computing, so a coordinating process can
 * have the others run the same step (src/dist/); `step_batch` likewise
 * once per batched decode step over several sequences (each an engine of
 * its own, created with a partition of its own `user`, so the hook can
 * tell the other processes which of their sequences take part). The library never decides
 * by itself to partition: the caller sets mk_engine_opts.moe_part. */
#ifndef MOEKIT_MOE_PART_H
#define MOEKIT_MOE_PART_H

#include <stdint.h>

#include "moekit/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One MoE layer's exchange. The arrays are the engine's and valid only
 * during the call. */
typedef struct mk_moe_xchg {
    int layer;
    int64_t pos;            /* position of the chunk's first token */
    int64_t n;              /* tokens in the chunk */
    int k;                  /* experts per token */
    int64_t H;              /* hidden size: floats per row */
    int32_t E;              /* routed experts of the layer */
    float *pairs;           /* [n*k, H] host memory: row t*k+j is token t's j-th expert's output;
                               rows of owned experts are filled, the others must be on return */
    const int32_t *order;   /* [n*k] pair indices sorted by expert (then pair index) */
    const int32_t *ends;    /* [E] ends[x] = end of expert x's run in order (cumulative) */
    const int32_t *top_idx; /* [n*k] each pair's expert id (the routing decisions) */
} mk_moe_xchg;

typedef struct mk_moe_part {
    void *user;
    /* Experts [*lo, *hi) of `layer` are computed here. */
    void (*range)(void *user, int layer, int32_t *lo, int32_t *hi);
    /* Fill the rows of experts owned elsewhere (see above). A failure
     * fails the forward pass with its message. */
    mk_status (*exchange)(void *user, const mk_moe_xchg *x);
    /* Optional: a forward call of n ids at position pos is about to run. */
    mk_status (*step)(void *user, const int32_t *ids, int64_t n, int64_t pos);
    /* Optional: a batched decode step (mk_engine_decode_batch) is about to
     * run: sequence i, whose engine was created with the partition whose
     * `user` is users[i], appends ids[i] at position pos[i]. Called on the
     * first sequence's partition, after the step was validated. A
     * partition with `step` but no `step_batch` is never batched
     * (mk_engine_batchable): its steps would not reach the other
     * processes. The step's exchanges are one per MoE layer over all n
     * rows (pos: the first sequence's position). */
    mk_status (*step_batch)(void *const *users, int n, const int32_t *ids, const int64_t *pos);
} mk_moe_part;

#ifdef __cplusplus
}
#endif
#endif
