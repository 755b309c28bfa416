/* Scale-out over MPI (issue 18): expert parallelism, a layer pipeline or
 * both (pipeline stages whose ranks split their experts) across processes.
 *
 * Every rank opens the same model and runs the same engine; each rank owns
 * a contiguous share of every MoE layer's routed experts (by count: rank r
 * of N owns [r*E/N, (r+1)*E/N); or by the lead's cuts per layer,
 * mk_dist_set_cuts) and computes only those (a resident rank
 * maps the whole checkpoint but touches only its experts' pages; a
 * streaming rank reads only its experts). Attention, norms, routers and
 * shared experts are replicated. Per MoE layer each rank sends the outputs
 * of its experts' (token, slot) pairs to every other rank and receives
 * theirs; the rows are moved into place and summed by the engine's own
 * combine, so logits are bitwise those of the single-process run for any
 * number of ranks (moe_part.h).
 *
 * Rank 0 (the lead) owns everything else: tokenization, sampling, output.
 * It announces the engine's shape once (mk_dist_announce: max context,
 * prefill chunk, top-k and a fingerprint of the model, which the workers
 * check against their own, and how many sequences it drives:
 * mk_dist_set_slots), then each forward call (the partition's `step`:
 * the sequence, position and ids, after the engine validated them, so
 * bad input never reaches the workers) and each batched decode step (its
 * `step_batch`: the sequences, ids and positions). Workers (mk_dist_work)
 * replay the steps on their engine of each sequence until the lead's
 * mk_dist_finish.
 *
 * Integrity: every message carries a header with the sender, the layer,
 * the step, a sequence number, the xxh3 of the routing decisions it was
 * computed from and the xxh3 of its payload. A checksum, sequence, layer
 * or routing mismatch, or a peer that does not deliver within the timeout
 * (receives are nonblocking, polled against a deadline), prints one line
 * naming this rank, the peer, the layer and the step, and aborts every
 * rank (MPI_Abort): never a hang, never wrong tokens.
 *
 * Pipeline mode (mk_dist_set_stages on the lead, mk_dist_pipe): rank r is
 * stage r and holds a contiguous range of layers (layer_pipe.h). Rank 0
 * embeds, runs its layers and sends the chunk's residual stream to rank 1,
 * and so on; the last rank computes the final norm and lm_head and sends
 * the logits the lead asked for back to rank 0. Each message carries the
 * same checksummed header (layer: the layer the hidden state enters, step,
 * sequence, position); a stage's wait is bounded by r times the timeout
 * (it also waits for the stages before it), the lead's wait for logits by
 * size times, so the first rank to give up is the successor of the
 * one that failed and names it.
 *
 * Both placements at once (mk_dist_set_stages with rank bounds): the ranks
 * form S stages of contiguous ranks, stage s holding a layer range as
 * above, and within a stage its ranks split the stage's routed experts as
 * in expert mode (by count over the stage's ranks, or the lead's cuts,
 * whose row for a layer then covers the stage's ranks), exchanging pair
 * rows among the stage's ranks only. Each rank of a stage runs the stage's
 * attention, norms, routers and shared experts on the same residual
 * stream, so the stage's first rank alone sends it on, to every rank of
 * the next stage, and the last stage's first rank sends the logits. A
 * stage's wait for its predecessor is one timeout per stage before it,
 * two for a stage of several ranks (its peers' exchange deadline must
 * expire first, naming the failed rank), the lead's for logits the same
 * over every stage.
 *
 * The library reads no environment variable: the caller (the CLI) decides
 * to run distributed and calls mk_dist_init. Built without MPI, every
 * mk_dist_* call fails with MK_E_UNSUPPORTED saying so (src/dist/
 * dist_stub.c). */
#ifndef MOEKIT_DIST_H
#define MOEKIT_DIST_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "moekit/engine.h"
#include "moekit/layer_pipe.h"
#include "moekit/model.h"
#include "moekit/moe_part.h"
#include "moekit/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mk_dist mk_dist;

/* Test hooks (the CLI's --mpi-test-fault, MK_TEST_HOOKS builds): at the
 * exchange of `layer` in forward step `step` (counted from 1), rank `rank`
 * flips one byte of its payload after checksumming it (FLIP), stops
 * answering (STALL: sleeps until aborted) or dies (KILL: SIGKILL). */
typedef enum mk_dist_fault_kind {
    MK_DIST_FAULT_NONE = 0,
    MK_DIST_FAULT_FLIP,
    MK_DIST_FAULT_STALL,
    MK_DIST_FAULT_KILL,
} mk_dist_fault_kind;

typedef struct mk_dist_fault {
    mk_dist_fault_kind kind;
    int rank, layer;
    int64_t step;
} mk_dist_fault;

typedef struct mk_dist_opts {
    double timeout_s;      /* a peer's message within a step; <= 0: 60 */
    double idle_timeout_s; /* a worker waiting for the lead's next step; <= 0: 3600 */
    mk_dist_fault fault;   /* test hook; kind NONE: none */
} mk_dist_opts;

/* Initialise MPI (MPI_Init_thread, serialized: one thread at a time
 * talks, e.g. serve's scheduler) and this process's rank. */
mk_status mk_dist_init(const mk_dist_opts *o, mk_dist **out);
/* MPI_Finalize and free. NULL ok. */
void mk_dist_free(mk_dist *d);
int mk_dist_rank(const mk_dist *d);
int mk_dist_size(const mk_dist *d);
/* Print `msg` as "moekit: rank R: msg" on stderr and end every rank
 * (MPI_Abort with `code`). Does not return. */
_Noreturn void mk_dist_abort(mk_dist *d, int code, const char *msg);

/* Lead, before mk_dist_part, mk_dist_pipe and mk_dist_announce: the job
 * drives n sequences (serve's --parallel slots; default 1, at most 256),
 * each an engine of its own on every rank with hooks of its own
 * (mk_dist_slot_part, mk_dist_slot_pipe), so each step names its
 * sequence and a batched decode step (mk_engine_decode_batch) the
 * sequences it holds. The setup carries n to the workers. */
mk_status mk_dist_set_slots(mk_dist *d, int n);
int mk_dist_slots(const mk_dist *d);
/* Sequence `slot`'s hooks (after mk_dist_part / mk_dist_pipe, which give
 * slot 0's); NULL when there are none of that kind or no such slot. */
const mk_moe_part *mk_dist_slot_part(const mk_dist *d, int slot);
const mk_layer_pipe *mk_dist_slot_pipe(const mk_dist *d, int slot);

/* Size the partition for model m (MK_E_ARG when the model has fewer routed
 * experts than there are ranks sharing them, or none) and return the engine
 * hook (valid while d lives). On the lead the hook announces steps (both
 * placements: the pipe's hook does). */
mk_status mk_dist_part(mk_dist *d, const mk_model *m, const mk_moe_part **part);
/* This rank's experts of MoE layer `layer`: [*lo, *hi). */
void mk_dist_range(const mk_dist *d, int layer, int32_t *lo, int32_t *hi);
/* Lead, before mk_dist_part: own experts by the given contiguous cuts
 * instead of by count (e.g. balanced by `moekit profile` routing
 * frequencies): cuts[l*(size+1) + q] is the first expert of rank q in layer
 * l, each row ascending from 0 to E, num_layers rows (copied). The setup
 * carries them to the workers, so only the lead needs their source. */
mk_status mk_dist_set_cuts(mk_dist *d, const mk_model *m, const int32_t *cuts);

/* Lead, before mk_dist_announce (and mk_dist_set_cuts, mk_dist_part): run
 * as a layer pipeline of `nstages` stages, stage s holding layers
 * [bounds[s], bounds[s+1]) (nstages+1 entries ascending strictly from 0 to
 * num_layers). ranks NULL: one rank per stage (nstages == size), rank q is
 * stage q. Else both placements: stage s is ranks [ranks[s], ranks[s+1])
 * (ascending strictly from 0 to size), which split the stage's routed
 * experts (mk_dist_part). Copied; the setup carries them to the workers. */
mk_status mk_dist_set_stages(mk_dist *d, const mk_model *m, int nstages, const int32_t *bounds,
                             const int32_t *ranks);
/* After mk_dist_set_stages (lead) or mk_dist_await (workers): whether the
 * job is a pipeline, whether its stages also split experts (both), and
 * this rank's layers [*first, *last). */
bool mk_dist_pipelined(const mk_dist *d);
bool mk_dist_both(const mk_dist *d);
void mk_dist_stage(const mk_dist *d, int *first, int *last);
/* This rank's stage of how many, and the stage's ranks [*first, *first + *count)
 * (no pipeline: stage 0 of 0, every rank). */
void mk_dist_stage_ranks(const mk_dist *d, int *stage, int *stages, int *first, int *count);
/* The engine hook of this rank's stage (valid while d lives). On the lead
 * the hook announces steps. */
mk_status mk_dist_pipe(mk_dist *d, const mk_model *m, const mk_layer_pipe **pipe);
/* --stats: the time spent inside the exchanges (expert mode: the per-layer
 * exchange, waiting for peers included; pipeline: sending and receiving
 * hidden states and logits, waiting for the other stages included), their
 * count and the payload bytes this rank sent, one "name value" per line. */
void mk_dist_stats(const mk_dist *d, FILE *f);

/* Lead: tell the workers the engine to build (o->max_ctx, o->prefill_chunk,
 * o->experts_per_tok as given, 0 meaning the defaults) and the model's
 * fingerprint (e.g. the xxh3 of its config.json: the workers compare theirs
 * and refuse a different model). */
mk_status mk_dist_announce(mk_dist *d, const mk_engine_opts *o, uint64_t fingerprint);
/* Worker: receive the lead's announcement into *o (max_ctx, prefill_chunk,
 * experts_per_tok; the rest untouched) after checking the fingerprint (a
 * different model aborts every rank naming both). *finished is set when
 * the lead finished before announcing (it failed early and says why):
 * there is nothing to do. */
mk_status mk_dist_await(mk_dist *d, uint64_t fingerprint, mk_engine_opts *o, bool *finished);
/* Worker: replay the lead's steps on es[0..n) (sequence i's engine,
 * created with mk_dist_slot_part / mk_dist_slot_pipe of slot i; n ==
 * mk_dist_slots after mk_dist_await) until it finishes: a forward call
 * of one sequence on its engine, a batched decode step on the named
 * sequences' engines (mk_engine_decode_batch, in rank 0's order).
 * Returns MK_OK when the lead finished normally. */
mk_status mk_dist_work(mk_dist *d, mk_engine *const *es, int n);
/* Lead: tell the workers there are no more steps (call once, also after a
 * failure before or between steps, so workers end instead of waiting). */
void mk_dist_finish(mk_dist *d);

#ifdef __cplusplus
}
#endif
#endif
