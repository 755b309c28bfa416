/* Layer pipeline: the engine's hook for pipeline parallelism (several
 * processes, e.g. MPI ranks, each holding a contiguous range of the
 * model's layers: a stage).
 *
 * An engine given an mk_layer_pipe runs only layers [first, last) of each
 * forward chunk and keeps KV cache and recurrent state only for them. The
 * first stage (first == 0) embeds the token ids; a later stage takes the
 * residual stream of the chunk's tokens from the previous stage
 * (recv_hidden) instead. A stage before the last (last < num_layers) hands
 * its residual stream on (send_hidden) and, when the caller asked for
 * logits, receives them from the last stage (recv_logits); the last stage
 * (last == num_layers, first > 0) computes the final norm and lm_head and
 * sends the rows it computed (send_logits) to whoever drives the steps.
 * The layers run exactly as in the single-process engine, over the same
 * values in the same order, so the logits are bitwise those of one
 * process whatever the cut.
 *
 * The engine calls `step` (when not NULL) once per forward call, after
 * validating the ids and before computing, with the logits mode the
 * caller asked for, so a coordinating process can have the other stages
 * run the same step (src/dist/); `step_batch` once per batched decode
 * step. Hidden-state capture (`hidden` of mk_engine_forward) is refused
 * with a pipeline; it needs a host-memory backend, and batched decode
 * needs `step_batch` where there is a `step`. The library never decides by
 * itself to cut the layers: the caller sets mk_engine_opts.layer_pipe. */
#ifndef MOEKIT_LAYER_PIPE_H
#define MOEKIT_LAYER_PIPE_H

#include <stdint.h>

#include "moekit/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mk_layer_pipe {
    void *user;
    int first, last; /* layers [first, last) run here; 0 <= first < last <= num_layers */
    /* first > 0: the residual stream entering layer `layer` (== first) for
     * the n tokens at positions [pos, pos+n) into x[n, H] (host memory) */
    mk_status (*recv_hidden)(void *user, int layer, int64_t pos, int64_t n, int64_t H, float *x);
    /* last < num_layers: this stage's output (entering layer `layer` == last) */
    mk_status (*send_hidden)(void *user, int layer, int64_t pos, int64_t n, int64_t H, const float *x);
    /* last < num_layers: `rows` rows of logits (V floats each; the last row
     * at position pos + rows - 1) computed by the last stage */
    mk_status (*recv_logits)(void *user, int64_t pos, int64_t rows, int64_t V, float *logits);
    /* last == num_layers and first > 0: the rows just computed here */
    mk_status (*send_logits)(void *user, int64_t pos, int64_t rows, int64_t V, const float *logits);
    /* optional: a forward call of n ids at pos, logits mode `mode`
     * (mk_logits_mode), is about to run */
    mk_status (*step)(void *user, const int32_t *ids, int64_t n, int64_t pos, int mode);
    /* optional: a batched decode step (mk_engine_decode_batch) is about to
     * run: sequence i, whose engine's pipe has `user` users[i], appends
     * ids[i] at position pos[i]; called on the first sequence's pipe after
     * validation. The step moves n rows (one per sequence) through the
     * stages with the first sequence's position in recv_hidden,
     * send_hidden, recv_logits and send_logits, and the caller (the first
     * stage) receives all n rows of logits. A pipe with `step` but no
     * `step_batch` is never batched (mk_engine_batchable). */
    mk_status (*step_batch)(void *const *users, int n, const int32_t *ids, const int64_t *pos);
} mk_layer_pipe;

#ifdef __cplusplus
}
#endif
#endif
