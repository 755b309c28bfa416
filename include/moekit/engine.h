/* The inference engine: a model's forward pass with its KV cache and
 * recurrent state.
 *
 * An engine holds one sequence. mk_engine_forward() appends n tokens at the
 * current position (prefill when n > 1, decode when n == 1), processing
 * them in chunks of at most `prefill_chunk` tokens so activation memory is
 * bounded, and optionally returns logits and per-layer hidden states. All
 * scratch, the KV cache (full-attention and MLA layers) and the Gated
 * DeltaNet conv/recurrent state (f32) come from one arena sized at create
 * time from max_ctx and prefill_chunk: nothing is allocated per token.
 *
 * Routed experts are reached through an mk_expert_store and every numeric
 * operation through an mk_backend (see expert_store.h, backend.h). */
#ifndef MOEKIT_ENGINE_H
#define MOEKIT_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moekit/backend.h"
#include "moekit/expert_store.h"
#include "moekit/layer_pipe.h"
#include "moekit/model.h"
#include "moekit/moe_part.h"
#include "moekit/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mk_engine mk_engine;

/* Routing observer (optional): called once per MoE layer per token, in token
 * order, right after the router chose. `experts[0..k)` are the selected
 * expert ids and `weights[0..k)` the weights their outputs are scaled by
 * (after top-k renormalisation and routed_scaling_factor). `pos` is the
 * token's position in the sequence. The arrays are only valid during the
 * call. Used by `moekit profile` to measure expert usage. */
typedef void (*mk_route_fn)(void *user, int layer, int64_t pos, int k, const int32_t *experts,
                            const float *weights);

/* Sparse-attention observer (optional; DSA models: deepseek_v32,
 * glm_moe_dsa): called once per layer per token, in token order, with the
 * `count` cache positions the token attends to, ascending (all of 0..pos
 * while pos < index_topk). Valid only during the call. Used by tests and
 * tools to see the lightning indexer's choice. */
typedef void (*mk_select_fn)(void *user, int layer, int64_t pos, int count, const int32_t *positions);
/* Linear-input observer (optional): called before every product of a
 * weight by activations on a host-memory backend, with the weight view `w`
 * (the model's own mk_wt, or the expert store's view of a routed expert)
 * and its n input rows x[n, w->cols]. x is only valid during the call.
 * Used by `moekit profile --hessian` to accumulate X^T X per module. Turns
 * off the fused MoE slot and single-token expert batching (every product
 * must be seen); engine creation fails on a device-memory backend. */
typedef void (*mk_linear_fn)(void *user, const mk_wt *w, const float *x, int64_t n);
/* Step observer (optional; `--verify` uses it to name the step inside a
 * layer where two backends part): called after each named step of layer
 * `tap_layer` (every layer when tap_layer < 0) in a chunk of
 * mk_engine_forward, with the step's output, rows x cols floats (rows: the
 * chunk's tokens) in host memory, downloaded from a device backend, valid
 * only during the call. `op` is a fixed string naming the step: "input
 * norm", "q projection", "attention", "output projection", "router
 * logits", "routed experts", "MoE output", ... (forward.c and moe.c place
 * them; the same name is the same quantity on every backend). Steps a
 * backend runs inside one slot show only as that slot's output: a fused
 * MoE step gives "MoE output" without "router logits" or "routed experts".
 * Not called in batched decode steps. Turns off decode-step recording;
 * costs a download per step, so it is for checks, not serving. */
typedef void (*mk_tap_fn)(void *user, int layer, const char *op, const float *x, int64_t rows, int64_t cols);

typedef struct mk_engine_opts {
    int threads;            /* worker threads, caller included; <= 0: one per CPU */
    int64_t max_ctx;        /* positions the caches hold; <= 0: min(4096, max_position_embeddings) */
    int prefill_chunk;      /* tokens per forward chunk; <= 0: 512 */
    mk_backend *backend;    /* NULL: a CPU backend the engine creates and owns; else borrowed */
    mk_expert_store *store; /* NULL: the resident store, engine-owned; else borrowed */
    uint64_t mem_limit;     /* host bytes the engine's buffers may take (KV cache, state, scratch;
                               on a device backend only the part the host keeps, the rest being
                               the device's); 0: no limit. The CLI passes the memory available */
    int experts_per_tok;    /* <= 0 or >= the config's: the model's own top-k (always the default).
                               Fewer: each token uses only its best K experts (weights
                               renormalised as the model's router does) -- faster, but not the
                               model: an explicit opt-in whose cost `eval --ref` measures */
    bool prefetch_experts;  /* decode: guess the next MoE layer's experts (its router applied to
                               this layer's input) and hand the guess to the expert store, so a
                               streaming store reads them while this layer computes. Results are
                               unchanged; costs one extra router matmul per layer */
    mk_route_fn on_route;   /* NULL (default): no routing callbacks, no cost */
    void *on_route_user;    /* passed to on_route */
    mk_select_fn on_select; /* NULL (default): no selection callbacks, no cost */
    void *on_select_user;   /* passed to on_select */
    mk_linear_fn on_linear; /* NULL (default): no linear-input callbacks, no cost */
    void *on_linear_user;   /* passed to on_linear */
    mk_tap_fn on_tap;       /* NULL (default): no step callbacks, no cost */
    void *on_tap_user;      /* passed to on_tap */
    int tap_layer;          /* with on_tap: the layer whose steps it sees; < 0: every layer */
    const mk_moe_part *moe_part;     /* NULL (default): every routed expert here. Else only the
                                        partition's share (moe_part.h; copied at create): needs a
                                        host-memory backend, turns off the fused MoE slot and
                                        prefetch; batched decode needs its step_batch where it has a
                                        step (mk_engine_batchable) */
    const mk_layer_pipe *layer_pipe; /* NULL (default): every layer here. Else only layers
                                        [first, last) and their caches (layer_pipe.h; copied at
                                        create): needs a host-memory backend, refuses hidden-state
                                        capture, turns off prefetch; batched decode needs its
                                        step_batch where it has a step. With
                                        moe_part too: the stage's layers split by the partition */
    bool no_lookahead;      /* greedy decode on a backend with step_chain (CUDA) queues the next
                               token's step, fed by the device's argmax, before this one's id is
                               read back (mk_engine_forward_argmax), so the device never waits on
                               the host between tokens; the results are the same (on CUDA only
                               while mk_cuda_set_lookahead is on: off by default until measured on
                               a device). true: one step at a time (for measuring what it saves) */
} mk_engine_opts;

typedef enum mk_logits_mode {
    MK_LOGITS_NONE = 0, /* no logits (e.g. prompt prefill before sampling) */
    MK_LOGITS_LAST,     /* logits of the last token: [V] */
    MK_LOGITS_ALL,      /* logits of every token: [n, V] */
} mk_logits_mode;

/* Create an engine for `m` (which must outlive it). opts may be NULL. */
mk_status mk_engine_create(const mk_model *m, const mk_engine_opts *opts, mk_engine **out);
void mk_engine_free(mk_engine *e); /* NULL ok */

/* Forget the sequence: position 0, caches and recurrent state zeroed. */
void mk_engine_reset(mk_engine *e);
/* Rewind the sequence to its first `pos` tokens (0 <= pos <= the current
 * position), for a prompt cache: attention and MLA cache rows below pos
 * stay valid (rows at and after it are overwritten by the next forward, and
 * attention never reads past the position). MK_E_UNSUPPORTED when pos is
 * below the current position and the model has recurrent layers (Gated
 * DeltaNet): their state holds the whole history and cannot be rewound
 * (that needs snapshots); the sequence is then unchanged. */
mk_status mk_engine_rewind(mk_engine *e, int64_t pos);
/* Whether mk_engine_rewind can go back (no recurrent layers). */
bool mk_engine_rewindable(const mk_engine *e);
/* Recurrent-state snapshots (src/engine/snapshot.c), so a prompt cache can
 * go back on a hybrid model: mk_engine_state_bytes is the size of the
 * state (every Gated DeltaNet layer's conv window and recurrent state; 0
 * without such layers), mk_engine_state_save copies it into buf (host
 * memory of that size), and mk_engine_state_restore puts a saved state
 * back and sets the position to `pos`, the position the engine had when
 * it was saved (0 <= pos <= the current position; MK_E_ARG otherwise,
 * nothing changed). The result is the engine as it was at pos only if
 * its attention cache rows below pos were not rewritten since (no reset,
 * rewind or restore below pos in between): the caller keeps that rule. */
size_t mk_engine_state_bytes(const mk_engine *e);
/* The same for any engine over m, without one (memory budgets). */
size_t mk_engine_state_bytes_for(const mk_model *m);
mk_status mk_engine_state_save(const mk_engine *e, void *buf);
mk_status mk_engine_state_restore(mk_engine *e, const void *buf, int64_t pos);
/* Tokens in the cache (the position of the next token). */
int64_t mk_engine_pos(const mk_engine *e);
int64_t mk_engine_max_ctx(const mk_engine *e);
/* Tokens per forward chunk: prefill_chunk (512 when <= 0), at most max_ctx. */
int64_t mk_engine_prefill_chunk(const mk_engine *e);
/* Bytes of the arena (scratch + caches + state). */
size_t mk_engine_arena_bytes(const mk_engine *e);
/* The arena an engine with these options would take, without creating one
 * (memory budgets); 0 when out of memory. */
size_t mk_engine_bytes(const mk_model *m, const mk_engine_opts *o);
/* The host memory of that arena: all of it on a host-memory backend (the
 * CPU's); on a device backend (device_backend true: CUDA) only the part the
 * host keeps (rotary rows, the routing the host reads), since the caches and
 * activations come from the backend's memory. For host-memory budgets. */
size_t mk_engine_host_bytes(const mk_model *m, const mk_engine_opts *o, bool device_backend);
/* KV-cache bytes one position takes, summed over layers: 2*nKV*head_dim
 * floats per full-attention layer, kv_lora_rank + qk_rope_head_dim floats
 * per MLA layer (its latent cache) plus index_head_dim floats per layer
 * with its own DSA indexer (the indexer's key cache), nothing for DeltaNet
 * layers (their state does not grow). The caches take max_ctx times this. */
size_t mk_engine_kv_bytes_per_token(const mk_engine *e);
const mk_model *mk_engine_model(const mk_engine *e);

/* Append ids[0..n) at the current position. `logits` receives what `mode`
 * asks for (vocab_size floats per token). `hidden`, if not NULL, receives
 * [L+1, n, H] float32 in transformers' output_hidden_states layout: entry 0
 * the embeddings, entry i (1 <= i < L) the output of layer i-1, entry L the
 * last layer's output after the final norm. MK_E_ARG if the cache would
 * overflow or an id is out of the vocabulary (the state is then unchanged).
 * MK_E_FORMAT, naming the first block (embedding, layer N's attention or
 * MLP/MoE, final norm, lm_head) and position, when an activation becomes NaN
 * or infinite: non-finite results are never returned (the sequence must then
 * be reset). */
mk_status mk_engine_forward(mk_engine *e, const int32_t *ids, int64_t n, mk_logits_mode mode,
                            float *logits, float *hidden);

/* Greedy decoding: append ids[0..n) (n >= 1) as mk_engine_forward with
 * MK_LOGITS_LAST does, and set *next to mk_argmax of the last token's
 * logits (the same token), without the logits: a device backend with an
 * argmax slot checks and reduces them on the device and returns 4 bytes
 * instead of vocab_size floats. The same errors as mk_engine_forward
 * (non-finite logits name lm_head). */
mk_status mk_engine_forward_argmax(mk_engine *e, const int32_t *ids, int64_t n, int32_t *next);
/* ---- several sequences in one step (continuous batching) ----
 * A decode step over n sequences, each an engine of its own (position,
 * caches, recurrent state) over the same model, backend and expert store:
 * one forward whose dense products run over the n tokens at once and
 * whose MoE layers read and multiply each expert used by the step once
 * (src/engine/batch.c). Batch-invariant: sequence i's logits are bitwise
 * what mk_engine_forward(es[i], &ids[i], 1, MK_LOGITS_LAST, ...) would give
 * on it alone, whatever else is in the step. */
#define MK_ENGINE_MAX_BATCH 64
/* Whether es[0..n) can share a step: one model, one backend, the same
 * expert store (or each engine's own resident one), the same top-k,
 * distinct engines, n <= MK_ENGINE_MAX_BATCH and 2n <= es[0]'s prefill
 * chunk (the step runs on es[0]'s scratch), no routing observer, a
 * family the batched step implements, and for engines of an expert
 * partition or layer pipeline: the same partition and stage, with a
 * step_batch hook where there is a step hook (moe_part.h, layer_pipe.h).
 * Otherwise step them one at a time. */
bool mk_engine_batchable(mk_engine *const *es, int n);
/* Append ids[i] to sequence es[i] for i < n in one forward; logits
 * receives [n, vocab_size] (row i: sequence i's). MK_E_ARG when they
 * cannot share a step (see above), a cache is full or an id is outside
 * the vocabulary (nothing changed); MK_E_FORMAT naming the block, the
 * sequence and its position when an activation becomes non-finite (the
 * sequences must then be reset: their caches may hold the step's rows).
 * logits NULL: none are computed (a process following another's steps
 * over a partition or a pipeline stage, which needs no logits; the first
 * stage of a pipeline before the last must pass a buffer to receive them). */
mk_status mk_engine_decode_batch(mk_engine *const *es, int n, const int32_t *ids, float *logits);

#ifdef __cplusplus
}
#endif
#endif
