/* The server's internals, shared by its files:
 *   request.c  JSON request bodies -> validated parameters (no HTTP; fuzzed)
 *   sched.c    slots, the bounded queue, the scheduler thread, prompt cache
 *   openai.c   the endpoints: prompt ids, jobs, JSON and SSE responses
 *   api_anthropic.c, api_responses.c  Anthropic Messages and OpenAI Responses,
 *              translated into chat completions requests
 *   chatparse.c, toolcall.c, toolforce.c, chatout.c  the answer's parts
 *   http.c     libmicrohttpd: routing, bodies, keys, connections, lifecycle
 *   metrics.c  counters and histograms, Prometheus text
 *   stats.c    the same counters and the last request as JSON (/v1/stats)
 *   webui.c    the built-in web page (src/server/web, compiled in)
 * Locking: one server mutex guards the queue, the slots' bookkeeping and
 * every job's output; each job has its own condition variable for the
 * connection waiting on it. Engines are touched only by the scheduler
 * thread. */
#ifndef MK_SERVER_SRV_IMPL_H
#define MK_SERVER_SRV_IMPL_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moekit/chat.h"
#include "moekit/generate.h"
#include "moekit/grammar.h"
#include "moekit/sample.h"
#include "moekit/server.h"

#define SRV_MAX_STOP 4        /* OpenAI's limit on stop sequences */
#define SRV_MAX_STOP_LEN 256  /* bytes per stop sequence */
#define SRV_MAX_TOP 20        /* OpenAI's limit on top_logprobs */

/* ---- request.c ------------------------------------------------------------ */

typedef enum srv_kind {
    SRV_CHAT = 0, SRV_COMPLETION, SRV_TOKENIZE, SRV_DETOKENIZE,
    SRV_MESSAGES, SRV_COUNT_TOKENS, /* Anthropic's: api_anthropic.c turns them into SRV_CHAT */
    SRV_RESPONSES                   /* OpenAI Responses: api_responses.c turns it into SRV_CHAT */
} srv_kind;

/* A parsed, validated request. Strings point into `root` (kept alive). */
typedef struct srv_params {
    srv_kind kind;
    json_t *root;
    const char *model;        /* NULL when absent */
    mk_chat_msg *msgs;        /* chat: [nmsg] */
    char **owned;             /* chat: [nmsg] joined content parts (or NULL) */
    size_t nmsg;
    const char *prompt;       /* completion / tokenize text (NUL-free, len bytes) */
    size_t prompt_len;
    int32_t *ids;             /* completion prompt or detokenize input as ids; [n_ids] */
    size_t n_ids;
    bool has_ids;
    bool stream, include_usage, add_special;
    bool ignore_eos;          /* vLLM's extension: generate past end-of-sequence ids */
    bool no_thinking;         /* chat_template_kwargs.enable_thinking: false (qwen3 templates) */
    json_t *tools;            /* chat: the request's "tools" (in root), or NULL (none, or
                                 tool_choice "none": neither rendered nor parsed) */
    char **tool_json;         /* [ntools] each tool as the template prints it (json_dumps) */
    size_t ntools;
    mk_chat_tool_call *tcalls; /* the messages' tool calls (mcalls point into it) */
    mk_chat_msg_calls *mcalls; /* [nmsg] */
    char **tcall_args;        /* [ntcalls] arguments given as objects, serialised */
    size_t ntcalls;
    bool parallel_calls;      /* parallel_tool_calls (default true); false: the first call only */
    int force_call;           /* tool_choice: 0 auto / none, 1 "required", 2 a named function */
    const char *force_name;   /* force_call 2: the function's name (one of tools) */
    char *force_pre;          /* the forced call's opening, appended to the prompt (srv_prompt_ids) */
    size_t force_pre_len;
    const char *test_output;  /* moekit_test_output: the text to generate (test-only), or NULL */
    size_t test_output_len;
    mk_grammar *grammar;      /* response_format json_object / json_schema (respfmt.c), or NULL */
    const char *fmt_param;    /* the request's name for it in errors: NULL "response_format";
                                 "text.format" (the Responses API sets it) */
    int logprobs;             /* -1: none; else how many alternatives per token (0..SRV_MAX_TOP) */
    mk_sample_params sp;
    bool seed_given;
    int64_t max_tokens;       /* -1: absent */
    const char *stop[SRV_MAX_STOP];
    size_t stop_len[SRV_MAX_STOP];
    int nstop;
    const char *param;        /* on failure: the field at fault (static or into root) */
    char param_buf[64];
} srv_params;

/* Parse body[0..len) as a request of `kind`. On failure MK_E_ARG with a
 * message naming the field (p->param) or MK_E_NOMEM; p is cleared either
 * way and must be released with srv_params_free. */
mk_status srv_params_parse(srv_kind kind, const char *body, size_t len, srv_params *p);
void srv_params_free(srv_params *p);

/* ---- chatparse.c, toolcall.c ---------------------------------------------- */

/* A tool call parsed out of the model's text. */
typedef struct srv_call {
    char *name;
    char *args;                /* a JSON object's text (OpenAI's "arguments" string) */
} srv_call;

/* Generated chat text split into what the clients are shown apart. */
typedef struct srv_parsed {
    char *reasoning;           /* <think> / harmony analysis text (NUL-terminated) */
    size_t rlen;
    char *content;             /* the answer, markup removed */
    size_t clen;
    srv_call *calls;
    size_t ncalls;
} srv_parsed;

typedef struct srv_parse_cfg {
    mk_chat_kind kind;
    bool think_open;           /* the prompt ended inside a thinking block */
    bool tools;                /* the request gave tools: tool-call markup is parsed */
    const json_t *tool_defs;   /* the request's "tools" (parameter types), or NULL */
} srv_parse_cfg;

/* Split text[0..len). Not final (streaming): what could still change (a
 * partial marker, an unclosed tool call, trailing white space) is held
 * back, so every later parse of a longer text extends this one's
 * reasoning and content and keeps its calls (prefix-stable: the deltas of
 * a stream). Final: everything is placed; a tool block that does not parse
 * is content, never lost. MK_E_NOMEM only. */
mk_status srv_chat_parse(const srv_parse_cfg *c, const char *text, size_t len, bool final, srv_parsed *out);
void srv_parsed_free(srv_parsed *p);
/* Whether the prompt of kind (with MK_CHAT_NO_THINKING in flags or not)
 * ends inside an open thinking block. */
bool srv_chat_think_open(mk_chat_kind kind, unsigned flags);
/* The tool-call block markers of a family (NULL: none parsed). */
void srv_toolcall_markers(mk_chat_kind kind, const char **open, const char **close);
/* The calls inside one tool block (markers removed) in the family's
 * format, appended to *calls; false (nothing appended) when it does not
 * parse. MK_E_NOMEM aside, never fails. */
bool srv_toolcall_parse(mk_chat_kind kind, const json_t *tool_defs, const char *s, size_t n,
                        srv_call **calls, size_t *ncalls);
/* The text that opens a forced tool call (tool_choice "required": name
 * NULL; a named function: the call to it up to its arguments) in kind's
 * format, after a prompt that ends inside a thinking block (think_open)
 * or not: the server appends it to the prompt, so the model can only
 * continue a call, and the parser reads it before the generated text.
 * Malloc'd into *out; MK_E_UNSUPPORTED naming the template when its
 * calls are not forced yet, MK_E_ARG for a name that cannot be written
 * into the markup, MK_E_NOMEM. */
mk_status srv_toolcall_force(mk_chat_kind kind, bool think_open, const char *name, char **out);
/* One harmony tool call: recipient "functions.NAME", body the arguments. */
bool srv_toolcall_harmony(const char *recipient, size_t rn, const char *body, size_t bn,
                          srv_call **calls, size_t *ncalls);

/* ---- chatout.c ------------------------------------------------------------- */

/* A chat answer as OpenAI's message, or as a stream of deltas. */
typedef struct srv_chatout {
    srv_parse_cfg cfg;         /* cfg.tool_defs: one reference, or NULL */
    bool parallel;             /* false: the first tool call only (parallel_tool_calls) */
    size_t r_sent, c_sent, calls_sent; /* streamed so far */
    bool any_calls;
    char call_id[64];          /* tool call ids are call_id + "_" + index */
    char *pre;                 /* a forced call's opening (srv_toolcall_force), before the text; or NULL */
    size_t pre_len;
} srv_chatout;

/* srv_chat_parse of pre + text[0..len) (the answer as the model saw it). */
mk_status srv_chatout_parse(const srv_chatout *co, const char *text, size_t len, bool final, srv_parsed *out);

/* The final message {role, content, reasoning_content?, tool_calls?} of text[0..len). */
json_t *srv_chat_message(srv_chatout *co, const char *text, size_t len);
/* The delta text[0..len) adds to what was streamed, or an empty object
 * when nothing new can be sent yet; NULL when out of memory. */
json_t *srv_chat_delta(srv_chatout *co, const char *text, size_t len, bool final);
/* "tool_calls" when the answer called tools, else `otherwise`. */
const char *srv_chat_finish(const srv_chatout *co, const char *otherwise);
void srv_chatout_free(srv_chatout *co);

/* ---- metrics.c ------------------------------------------------------------ */

#define SRV_HIST_N 12

typedef struct srv_hist {
    uint64_t bucket[SRV_HIST_N + 1]; /* cumulative at render time; last is +Inf */
    double sum;
    uint64_t count;
} srv_hist;

typedef struct srv_last {
    bool set;
    int64_t np, cached, gen;   /* prompt tokens, of which from the prompt cache; generated */
    double ttft, decode_s;     /* submit to first token; first to last token */
} srv_last;

typedef struct srv_metrics {
    pthread_mutex_t mu;
    uint64_t req_by_code[6]; /* 2xx, 400, 401/403, 404/405, 413/429, 5xx */
    uint64_t prompt_tokens, gen_tokens, cache_hits, cache_tokens, cancelled;
    uint64_t dec_steps, dec_seqs; /* decode forwards and the sequences in them (batching) */
    uint64_t snap_saves, snap_restores; /* recurrent-state snapshots (prompt cache, hybrids) */
    uint64_t snap_evictions, snap_bytes; /* evicted for a new one (mk_server_opts.snap_bytes); held now */
    uint64_t prompt_fed;     /* prompt tokens the engines read (the rest came from the cache) */
    srv_hist ttft, itl; /* time to first token; time between tokens */
    bool streaming;     /* experts stream: the store's counters below, copied by the scheduler */
    uint64_t ex_uses, ex_hits, ex_bytes;
    srv_last last;      /* the last finished request that generated (GET /v1/stats) */
} srv_metrics;

void srv_metrics_init(srv_metrics *m);
void srv_metrics_destroy(srv_metrics *m);
void srv_metrics_request(srv_metrics *m, int http_code);
void srv_metrics_observe(srv_hist *h, srv_metrics *m, double seconds);
/* Prometheus text of the metrics plus the slot gauges; malloc'd. */
char *srv_metrics_render(srv_metrics *m, int slots, int busy, int queued);

/* ---- sched.c -------------------------------------------------------------- */

typedef enum srv_finish { SRV_RUNNING = 0, SRV_FIN_STOP, SRV_FIN_LENGTH, SRV_FIN_CANCEL, SRV_FIN_ERROR } srv_finish;

/* One generated token's log probability and its best alternatives. */
typedef struct srv_lp {
    int32_t id;
    float lp;
    size_t start, end;         /* its text in job->text (before a stop cut) */
    int ntop;
    int32_t top_id[SRV_MAX_TOP];
    float top_lp[SRV_MAX_TOP];
} srv_lp;

typedef struct srv_job {
    /* input (immutable once queued) */
    int32_t *prompt;
    int64_t np, max_tokens;
    mk_sample_params sp;
    bool ignore_eos;
    bool keep_special;         /* the text keeps special tokens (a chat output parser reads them) */
    int32_t *forced;           /* test-only: the ids generated, in order, then a stop id; or NULL */
    int64_t n_forced, i_forced;
    mk_grammar *grammar;       /* response_format (respfmt.c): owned, or NULL */
    mk_grammar_match *gm;      /* its matcher: the scheduler masks and feeds it */
    int logprobs;              /* -1: off; else alternatives per token */
    char *stop[SRV_MAX_STOP];
    size_t stop_len[SRV_MAX_STOP];
    int nstop;
    /* output, under the server mutex */
    char *text;                /* generated text with stop sequences applied */
    size_t len, cap, safe;     /* bytes; text[0..safe) can no longer change */
    size_t *marks;             /* each value safe took, ascending: where a stream's events end
                                  (one a token; several tokens where a stop's prefix held them) */
    size_t n_marks, cap_marks;
    char *raw;                 /* scheduler only: everything generated */
    size_t raw_len, raw_cap;
    int64_t n_gen, n_cached;
    srv_lp *lp;                /* [n_lp] when logprobs >= 0 */
    size_t n_lp, cap_lp;
    srv_finish finish;
    char err[256];
    volatile int cancel;       /* the client is gone, or shutdown */
    bool started, done;        /* done: out of the scheduler, output final */
    int refs;                  /* connection + scheduler/queue */
    pthread_cond_t cv;
    double t_submit, t_first, t_last;
} srv_job;

/* Recurrent-state snapshots per slot at most (hybrid models: sched.c;
 * mk_server_opts.snapshots says how many are used) and how often a long
 * prompt takes one by default (mk_server_opts.snap_every). */
#define SRV_SNAPS 8
#define SRV_SNAP_EVERY 2048

typedef struct srv_snap {
    void *buf;                 /* mk_engine_state_bytes, or NULL: unused */
    int64_t pos;               /* the engine's position when saved */
    uint64_t used;             /* server tick of its last save or restore (LRU) */
} srv_snap;

typedef struct srv_slot {
    struct mk_server *srv;
    srv_snap snaps[SRV_SNAPS]; /* valid while the slot's history keeps their prefix */
    mk_engine *e;
    int32_t *cache;            /* tokens in the engine: cache[0..mk_engine_pos) */
    int64_t cache_cap;
    srv_job *job;              /* NULL: free */
    mk_gen_seq *seq;
    mk_sampler *smp;
    float *raw;                /* logprobs: the logits the token is sampled from [vocab] */
    double lse;                /* their log-sum-exp */
    uint64_t last_used;
} srv_slot;

struct mk_server {
    mk_server_opts o;
    char *alias, *api_key;
    void *daemon;              /* struct MHD_Daemon */
    int port;
    volatile int ready, draining;
    mk_server_model m;
    mk_gen_stopset stopset;
    int64_t ctx;
    pthread_mutex_t mu;
    pthread_cond_t sched_cv, idle_cv;
    srv_slot *slots;
    int nslots, busy;
    int inflight;              /* requests between their headers and their completion */
    srv_job **queue;           /* FIFO ring [queue_cap] */
    int qhead, qlen, queue_cap;
    bool sched_started, quit;
    pthread_t sched;
    uint64_t tick, ids;
    srv_metrics metrics;
    /* the scheduler's decode batch (sched.c), [nslots] each */
    mk_engine **b_eng;
    srv_slot **b_slot;
    int32_t *b_ids;
    mk_status *b_st;           /* each sequence's forward status */
    float *b_logits;           /* [nslots, vocab] */
    int batch_max;             /* the most slots one forward takes (mk_engine_batchable); 1: alone */
    int pf_next;               /* the slot whose prefill goes first next step (round robin) */
    int nsnap;                 /* snapshots per slot (mk_server_opts.snapshots) */
    size_t snap_size;          /* bytes of one (mk_engine_state_bytes; 0: no recurrent state) */
    int64_t snap_cap, snap_count; /* snapshots all slots may hold together (snap_bytes), held now */
    int64_t snap_every;        /* prompt tokens between snapshots of a long prompt (snap_every) */
    mk_grammar_vocab *gvoc;    /* constrained decoding's vocabulary trie (respfmt.c; built on first use) */
};

/* Create a job for prompt[0..np) (copied). NULL when out of memory. */
srv_job *srv_job_new(const int32_t *prompt, int64_t np, int64_t max_tokens,
                     const mk_sample_params *sp, const char *const *stop, const size_t *stop_len,
                     int nstop);
/* Drop one reference (server mutex held); frees on the last. */
void srv_job_unref_locked(srv_job *j);
/* Queue a job (taking a reference): 0 when queued, else the HTTP status to
 * answer: 429 when the queue is full, 503 when the server is draining. */
int srv_submit(mk_server *s, srv_job *j);
mk_status srv_sched_start(mk_server *s);
/* Cancel every job, stop the scheduler thread, free the slots' state. */
void srv_sched_stop(mk_server *s);
double srv_now(void);

/* ---- openai.c ------------------------------------------------------------- */

/* Polled while a connection waits for its job: false when the client is gone. */
typedef bool (*srv_alive_fn)(void *ctx);

/* An SSE stream of a job (chat.completion.chunk or text_completion). */
typedef struct srv_stream srv_stream;
typedef bool (*srv_next_fn)(srv_stream *st, srv_alive_fn alive, void *ctx, bool *gone);
struct srv_stream {
    srv_next_fn next;          /* NULL: OpenAI's events; else the next event into pend (Anthropic) */
    int blk;                   /* Anthropic: open content block (0 none, 1 thinking, 2 text) */
    int nblk;                  /* Anthropic: content blocks opened */
    mk_server *s;
    srv_job *j;                /* one reference */
    srv_kind kind;
    bool include_usage;
    char id[48];
    long long created;
    int state;                 /* 0 role, 1 content, 2 finish, 3 usage, 4 [DONE], 5 ended */
    size_t sent;               /* bytes of j->text sent */
    size_t lp_sent;            /* entries of j->lp sent */
    srv_chatout co;            /* chat: reasoning, content and tool calls apart */
    char *pend;                /* formatted bytes not yet handed to the connection */
    size_t pend_len, pend_off;
    void *ext;                 /* an API's own stream state (Responses), freed with ext_free */
    void (*ext_free)(void *ext);
};

/* A response: status, content type and body (malloc'd), or a stream. */
typedef struct srv_reply {
    int code;
    const char *ctype;
    char *body;
    size_t len;
    srv_stream *stream;        /* SSE (code 200) */
} srv_reply;

/* Serialise j (consumed) into r as JSON with code (ASCII, as `moekit run
 * --json` escapes text); 500 with an OpenAI error body when out of memory. */
void srv_reply_json(srv_reply *r, int code, json_t *j, unsigned long mark);
/* An OpenAI-style error body. */
void srv_error(srv_reply *r, int code, const char *type, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void srv_handle_models(mk_server *s, srv_reply *r);
void srv_handle_metrics(mk_server *s, srv_reply *r);
/* GET /v1/stats (stats.c): the counters and the last request as JSON. */
void srv_handle_stats(mk_server *s, srv_reply *r);
/* POST endpoints. A non-streamed completion blocks until its job ends,
 * polling alive to cancel it when the client is gone. */
void srv_handle_post(mk_server *s, srv_kind kind, const char *body, size_t len, srv_reply *r,
                     srv_alive_fn alive, void *alive_ctx);
/* The next SSE bytes into buf[0..max): > 0 bytes, 0 at the end of the
 * stream, -1 when the client is gone (the job is cancelled). Blocks until
 * there is something to send. */
long srv_stream_read(srv_stream *st, char *buf, size_t max, srv_alive_fn alive, void *alive_ctx);
/* Cancel the job if still running and free the stream (NULL ok). */
void srv_stream_free(srv_stream *st);
/* The parts of a completion the other APIs share: check the model, build
 * the prompt (chat template with tools), queue the job; NULL with r set
 * (an OpenAI error) on failure. */
srv_job *srv_job_start(mk_server *s, srv_params *p, srv_reply *r);
/* The prompt's ids (chat template, or the raw prompt), checked against the
 * vocabulary and the context; false with r set. */
bool srv_prompt_ids(mk_server *s, srv_params *p, srv_reply *r, int32_t **ids, int64_t *np);
/* The output state of p's answer; takes p->force_pre (built by srv_prompt_ids). */
void srv_chatout_init(mk_server *s, srv_params *p, const char *id, srv_chatout *co);
/* Wait for the job's end (polling alive), or 100 ms on its condition (s->mu held). */
void srv_wait_done(mk_server *s, srv_job *j, srv_alive_fn alive, void *ctx);
void srv_wait_tick(mk_server *s, srv_job *j);
/* Streams (s->mu held): wait until the job has text past st->sent that can
 * no longer change, or has ended, polling alive; false (s->mu released,
 * the job cancelled, *gone set) when the client is gone. */
bool srv_stream_wait(srv_stream *st, srv_alive_fn alive, void *ctx, bool *gone);
/* Server mutex held, after srv_stream_wait: where the stream's next event
 * ends, the first of j->marks past st->sent (one event a token however late
 * the reader comes, as OpenAI's and llama.cpp's streams send; clients count
 * tokens by chunks), else j->safe. */
size_t srv_stream_upto(const srv_stream *st);
/* Server mutex held, after srv_stream_wait, chat kinds: the delta of the
 * stream's next event (srv_chat_delta up to srv_stream_upto; a token the
 * parse holds back goes out with the next), st->sent advanced; *fin when it
 * is the answer's last. NULL: no memory. */
json_t *srv_stream_chat_delta(srv_stream *st, bool *fin);
/* Server mutex held: safe advances to `safe` (> j->safe) and is marked; false
 * when the mark could not be stored (out of memory: safe is not moved). */
bool srv_job_advance(srv_job *j, size_t safe);
void srv_make_id(mk_server *s, const char *prefix, char *id, size_t n);

/* ---- respfmt.c ------------------------------------------------------------ */

/* A response format object -> *g (NULL for {"type": "text"}). flat: the
 * Responses API's text.format ({type, name, schema, strict}); else chat's
 * response_format ({type, json_schema: {name, schema, strict}}). param
 * names the field in messages ("response_format", "text.format"). On
 * failure MK_E_ARG (unsupported schema features included: a 400 naming
 * the keyword and its path) or MK_E_NOMEM, and where[0..nwhere) the field
 * at fault. */
mk_status srv_format_compile(const json_t *fmt, bool flat, const char *param, mk_grammar **g, char *where,
                             size_t nwhere);
/* What cannot go with response_format (tools, test output, ignore_eos, a
 * thinking or harmony template): false with r set (400). Called before
 * the prompt is built, so the conflict is what the client hears of. */
bool srv_respfmt_check(mk_server *s, const srv_params *p, srv_reply *r);
/* Give job j (not yet queued) the matcher of p->grammar, which j takes
 * over (p->grammar becomes NULL); nothing without one. False with r set
 * (the vocabulary or the matcher could not be made). */
bool srv_respfmt_start(mk_server *s, srv_params *p, srv_job *j, srv_reply *r);

/* ---- api_anthropic.c ------------------------------------------------------ */

/* POST /v1/messages and /v1/messages/count_tokens (Anthropic Messages). */
void srv_handle_anthropic(mk_server *s, srv_kind kind, const char *body, size_t len, srv_reply *r,
                          srv_alive_fn alive, void *alive_ctx);
/* Append "event: NAME\ndata: JSON\n\n" (o consumed) to st->pend. */
bool srv_sse(srv_stream *st, const char *name, json_t *o, unsigned long mark);
/* The content phase (state 1) of a stream of named events (Anthropic,
 * Responses): wait for text past what was sent, parse it into a delta
 * (reasoning, content, tool calls apart) and hand a non-empty one to emit;
 * with nothing new, go on through st->next (state 2 once the job is done).
 * As st->next: false at the end of the stream (client gone, or an event
 * failed: state 5). */
typedef bool (*srv_delta_emit_fn)(srv_stream *st, json_t *delta, unsigned long mark);
bool srv_stream_content(srv_stream *st, srv_alive_fn alive, void *ctx, bool *gone, srv_delta_emit_fn emit,
                        unsigned long mark);

/* ---- api_responses.c ------------------------------------------------------ */

/* POST /v1/responses (OpenAI Responses). */
void srv_handle_responses(mk_server *s, const char *body, size_t len, srv_reply *r,
                          srv_alive_fn alive, void *alive_ctx);

/* ---- webui.c -------------------------------------------------------------- */

struct MHD_Connection;
/* The web page: when url is one of its files (/, /assets/NAME) and the
 * method GET or HEAD, queue the answer (200, or 304 for a matching
 * If-None-Match), set *ret to MHD's result and return true; else false
 * (the API's routing answers). */
bool srv_webui_serve(mk_server *s, struct MHD_Connection *c, const char *url, const char *method,
                     int *ret);

#endif
