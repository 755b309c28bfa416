/* The OpenAI-compatible HTTP server behind `moekit serve`.
 *
 * Lifecycle: mk_server_start binds the port at once and answers every
 * request (GET /health with 503 {"status":"loading"}) while the caller
 * loads the model; mk_server_ready hands it the model, tokenizer and one
 * engine per slot, and from then on /health is 200 and the API serves;
 * mk_server_shutdown stops accepting, lets running requests finish for a
 * grace period, cancels the rest and stops.
 *
 * Slots: each engine is a slot holding one sequence (its KV cache and
 * recurrent state) over the one shared, read-only model. A scheduler
 * thread steps the busy slots in turn (one prefill piece or one token
 * each), so a slot's tokens equal what it would produce alone. Requests
 * beyond the slots wait in a bounded queue, then get 429. A new request
 * takes the free slot whose cached tokens share the longest prefix with
 * its prompt (prompt cache) when the engine can keep that prefix.
 *
 * Endpoints: GET /health, GET /v1/models, POST /v1/chat/completions,
 * POST /v1/completions (also without /v1), POST /v1/messages and
 * /v1/messages/count_tokens (Anthropic), POST /tokenize, POST /detokenize,
 * GET /metrics (Prometheus text), GET /v1/stats (the same as JSON), and a
 * web page at / (a chat with a live panel of those). Chat answers come split into reasoning,
 * content and tool calls per template family. See docs/DESIGN.md and
 * docs/SERVER_API.md (every field, supported or refused). */
#ifndef MOEKIT_SERVER_H
#define MOEKIT_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moekit/chat.h"
#include "moekit/engine.h"
#include "moekit/expert_store.h"
#include "moekit/model.h"
#include "moekit/status.h"
#include "moekit/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mk_server mk_server;

typedef struct mk_server_opts {
    const char *host;    /* numeric IPv4 address to bind; NULL: 127.0.0.1 */
    int port;            /* 0: any free port (mk_server_port says which) */
    const char *alias;   /* the model id /v1/models lists and requests name (required) */
    const char *api_key; /* NULL: no authentication; else "Authorization: Bearer KEY" */
    int queue;           /* requests that may wait for a slot (then 429); <= 0: 4 per slot */
    size_t max_body;     /* request body limit in bytes (then 413); 0: 4 MiB */
    int prefill_step;    /* prompt tokens per scheduler step; <= 0: 512 */
    int snapshots;       /* recurrent-state snapshots kept per slot for the prompt cache of
                            hybrid (Gated DeltaNet) models, each mk_engine_state_bytes; 0: 4;
                            < 0: none; at most 8 */
    size_t snap_bytes;   /* the most bytes all slots' snapshots hold together (the least recently
                            used one is evicted for a new one); 0: no bound beyond `snapshots`
                            per slot. Callers with a memory budget count them in it */
    int snap_every;      /* a long prompt is snapshotted every snap_every tokens (at the end of
                            the prefill piece that crosses a multiple); <= 0: 2048 */
    bool test_output;    /* tests only: requests may name the text to generate
                            ("moekit_test_output"), so output parsers are tested end to end
                            with a tiny model; never for serving */
    bool no_webui;       /* no web page at / (the paths are then unknown: 404) */
    bool test_stream_hold; /* tests only: a stream's text waits until its answer is complete
                            (a reader late by the whole answer); never for serving */
} mk_server_opts;

/* Bind and start answering (everything but /health is 503 until ready). */
mk_status mk_server_start(const mk_server_opts *o, mk_server **out);
/* The bound port. */
int mk_server_port(const mk_server *s);

typedef struct mk_server_model {
    const mk_model *model;
    const mk_tok *tok;            /* required */
    bool has_chat;                /* the model has a chat template (else chat is 400) */
    mk_chat_kind chat_kind;
    mk_engine **engines;          /* one per slot, borrowed; all over `model` */
    int n_engines;
    mk_expert_store *store;       /* NULL, or the streaming store (for /metrics) */
    uint64_t mem_limit;           /* the memory bound in force, bytes, for /v1/stats; 0: none said */
    uint64_t (*rss)(void);        /* the process's resident bytes now (0: unknown), for /v1/stats;
                                     NULL: not reported. The caller measures, the library is told */
} mk_server_model;

/* Serve: starts the scheduler over the slots. Everything in `m` must
 * outlive the server. */
mk_status mk_server_ready(mk_server *s, const mk_server_model *m);

/* Stop accepting connections, wait up to grace_s seconds for running and
 * queued requests to finish, cancel what is left (streams end with an
 * error event, waiting requests get 503), stop. */
void mk_server_shutdown(mk_server *s, double grace_s);
void mk_server_free(mk_server *s); /* NULL ok; shuts down with no grace first */

#ifdef __cplusplus
}
#endif
#endif
