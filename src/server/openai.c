/* The OpenAI endpoints: a validated request (request.c) becomes prompt ids
 * (the model's chat template through mk_chat_encode, so message text never
 * becomes special tokens; or the raw prompt), is checked against the
 * context, queued as a job (sched.c) and answered as one JSON document or
 * as Server-Sent Events (`data: {...}` chunks, then `data: [DONE]`).
 * Also /v1/models, /tokenize, /detokenize and /metrics. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/json_err.h"
#include "moekit/version.h"
#include "server/srv_impl.h"

static const char *json_ct = "application/json";

/* Serialise j (consumed) into r with code; 500 when out of memory. Bodies
 * are ASCII (JSON_ENSURE_ASCII): any client reads them, and text is escaped
 * exactly as `moekit run --json` escapes it. */
void srv_reply_json(srv_reply *r, int code, json_t *j, unsigned long mark) {
    char *s = j ? mk_json_dumps_checked(j, JSON_COMPACT | JSON_ENSURE_ASCII, mark) : NULL;
    if (j)
        json_decref(j);
    if (!s) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory building the response\","
                                  "\"type\":\"server_error\",\"param\":null,\"code\":null}}";
        r->code = 500;
        r->body = mk_malloc(sizeof oom);
        r->len = r->body ? sizeof oom - 1 : 0;
        if (r->body)
            memcpy(r->body, oom, sizeof oom);
        r->ctype = json_ct;
        return;
    }
    r->code = code;
    r->body = s;
    r->len = strlen(s);
    r->ctype = json_ct;
}

void srv_error(srv_reply *r, int code, const char *type, const char *param, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    unsigned long mark = mk_json_mark();
    json_t *e = json_object();
    json_t *m = json_string(msg); /* NULL for invalid UTF-8 (a message quoting bad input) */
    json_object_set_new(e, "message", m ? m : json_string("(the message is not valid UTF-8)"));
    json_object_set_new(e, "type", json_string(type));
    json_object_set_new(e, "param", param ? json_string(param) : json_null());
    json_object_set_new(e, "code", json_null());
    json_t *o = json_object();
    json_object_set_new(o, "error", e);
    srv_reply_json(r, code, o, mark);
}

/* The error of a failed call: 400 naming the field for bad input, 500 else. */
static void status_error(srv_reply *r, mk_status st, const char *param) {
    if (st == MK_E_NOMEM)
        srv_error(r, 503, "server_error", NULL, "%s", mk_err_msg());
    else if (st == MK_E_ARG || st == MK_E_MISMATCH || st == MK_E_FORMAT)
        srv_error(r, 400, "invalid_request_error", param, "%s", mk_err_msg());
    else
        srv_error(r, 500, "server_error", NULL, "%s", mk_err_msg());
}

void srv_handle_models(mk_server *s, srv_reply *r) {
    unsigned long mark = mk_json_mark();
    json_t *m = json_pack("{s:s,s:s,s:I,s:s}", "id", s->alias, "object", "model", "created",
                          (json_int_t)0, "owned_by", "moekit");
    if (m && s->ready) {
        const mk_config *c = mk_model_config(s->m.model);
        json_object_set_new(m, "meta", json_pack("{s:I,s:I,s:i,s:s}", "n_ctx", (json_int_t)s->ctx,
                                                 "n_vocab", (json_int_t)c->vocab_size, "slots",
                                                 s->nslots, "layout", mk_model_layout(s->m.model)));
    }
    json_t *o = m ? json_pack("{s:s,s:[o]}", "object", "list", "data", m) : NULL;
    srv_reply_json(r, 200, o, mark);
}

void srv_handle_metrics(mk_server *s, srv_reply *r) {
    pthread_mutex_lock(&s->mu);
    int busy = s->busy, queued = s->qlen;
    pthread_mutex_unlock(&s->mu);
    char *t = srv_metrics_render(&s->metrics, s->nslots, busy, queued);
    if (!t) {
        srv_error(r, 503, "server_error", NULL, "out of memory rendering the metrics");
        return;
    }
    r->code = 200;
    r->body = t;
    r->len = strlen(t);
    r->ctype = "text/plain; version=0.0.4";
}

/* ---- tokenize / detokenize ---------------------------------------------------- */

static void tokenize(mk_server *s, srv_params *p, srv_reply *r) {
    if (p->has_ids) {
        srv_error(r, 400, "invalid_request_error", "content", "content: expected a string");
        return;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    mk_status st = mk_tok_encode(s->m.tok, p->prompt, p->prompt_len,
                                 p->add_special ? MK_TOK_ADD_SPECIAL : 0, &ids, &n);
    if (st != MK_OK) {
        status_error(r, st, "content");
        return;
    }
    unsigned long mark = mk_json_mark();
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_integer(ids[i]));
    free(ids);
    srv_reply_json(r, 200, a ? json_pack("{s:o}", "tokens", a) : NULL, mark);
}

static void detokenize(mk_server *s, srv_params *p, srv_reply *r) {
    char *text = NULL;
    size_t len = 0;
    mk_status st = mk_tok_decode(s->m.tok, p->ids, p->n_ids, false, &text, &len);
    if (st != MK_OK) {
        status_error(r, st, "tokens");
        return;
    }
    unsigned long mark = mk_json_mark();
    json_t *t = json_stringn(text, len);
    free(text);
    srv_reply_json(r, 200, t ? json_pack("{s:o}", "content", t) : NULL, mark);
}

/* ---- completions ----------------------------------------------------------------- */

void srv_make_id(mk_server *s, const char *prefix, char *id, size_t n) {
    pthread_mutex_lock(&s->mu);
    uint64_t k = ++s->ids;
    pthread_mutex_unlock(&s->mu);
    snprintf(id, n, "%s%llx%06llx", prefix, (unsigned long long)time(NULL), (unsigned long long)k);
}

static void make_id(mk_server *s, srv_kind kind, char *id, size_t n) {
    srv_make_id(s, kind == SRV_CHAT ? "chatcmpl-" : "cmpl-", id, n);
}

static const char *finish_name(srv_finish f) {
    return f == SRV_FIN_LENGTH ? "length" : "stop";
}

static json_t *usage_json(const srv_job *j) {
    return json_pack("{s:I,s:I,s:I,s:{s:I}}", "prompt_tokens", (json_int_t)j->np, "completion_tokens",
                     (json_int_t)j->n_gen, "total_tokens", (json_int_t)(j->np + j->n_gen),
                     "prompt_tokens_details", "cached_tokens", (json_int_t)j->n_cached);
}

/* One choice: a message (chat) or text (completion), or a streamed delta. */
/* A token's text (decoded alone: a piece of a code point shows as U+FFFD)
 * and its bytes; NULL when out of memory. */
static json_t *token_json(mk_server *s, int32_t id, float lp, bool bytes) {
    char *t = NULL;
    size_t n = 0;
    if (mk_tok_decode(s->m.tok, &id, 1, false, &t, &n) != MK_OK)
        return NULL;
    json_t *o = json_object(), *b = bytes ? json_array() : NULL;
    json_object_set_new(o, "token", json_stringn(t, n));
    json_object_set_new(o, "logprob", json_real(lp));
    for (size_t i = 0; b && i < n; i++)
        json_array_append_new(b, json_integer((unsigned char)t[i]));
    if (b)
        json_object_set_new(o, "bytes", b);
    free(t);
    return o;
}

/* The logprobs of j->lp[from..to) (server mutex held): chat's
 * {"content":[{token, logprob, bytes, top_logprobs}]}, or the completions
 * API's {tokens, token_logprobs, top_logprobs, text_offset}. */
static json_t *lp_json(mk_server *s, srv_kind kind, const srv_job *j, size_t from, size_t to) {
    json_t *a = json_array();
    json_t *toks = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    for (size_t i = from; i < to; i++) {
        const srv_lp *e = &j->lp[i];
        if (kind == SRV_CHAT) {
            json_t *t = token_json(s, e->id, e->lp, true), *top = json_array();
            for (int k = 0; k < e->ntop; k++)
                json_array_append_new(top, token_json(s, e->top_id[k], e->top_lp[k], true));
            json_object_set_new(t, "top_logprobs", top);
            json_array_append_new(a, t);
        } else {
            json_t *t = token_json(s, e->id, e->lp, false), *top = json_object();
            json_array_append(toks, json_object_get(t, "token"));
            json_decref(t);
            json_array_append_new(lps, json_real(e->lp));
            for (int k = 0; k < e->ntop; k++) {
                json_t *tk = token_json(s, e->top_id[k], e->top_lp[k], false);
                const char *ts = json_string_value(json_object_get(tk, "token"));
                json_object_set_new(top, ts ? ts : "", json_real(e->top_lp[k]));
                json_decref(tk);
            }
            json_array_append_new(tops, top);
            json_array_append_new(offs, json_integer((json_int_t)e->start));
        }
    }
    if (kind == SRV_CHAT) {
        json_decref(toks);
        json_decref(lps);
        json_decref(tops);
        json_decref(offs);
        return json_pack("{s:o}", "content", a);
    }
    json_decref(a);
    return json_pack("{s:o,s:o,s:o,s:o}", "tokens", toks, "token_logprobs", lps, "top_logprobs", tops,
                     "text_offset", offs);
}

/* Entries of j->lp whose text starts before `len` (the text after a stop cut). */
static size_t lp_upto(const srv_job *j, size_t from, size_t len, bool by_end) {
    while (from < j->n_lp && (by_end ? j->lp[from].end <= len : j->lp[from].start < len))
        from++;
    return from;
}

static json_t *choice_json(srv_kind kind, bool delta, const char *text, size_t len, bool role,
                           const char *finish, json_t *logprobs) {
    json_t *t = text ? json_stringn(text, len) : NULL;
    if (text && !t) {
        if (logprobs)
            json_decref(logprobs);
        return NULL;
    }
    json_t *c = json_object();
    json_object_set_new(c, "index", json_integer(0));
    if (kind == SRV_CHAT) {
        json_t *m = json_object();
        if (role || !delta)
            json_object_set_new(m, "role", json_string("assistant"));
        if (t)
            json_object_set_new(m, "content", t);
        json_object_set_new(c, delta ? "delta" : "message", m);
    } else {
        json_object_set_new(c, "text", t ? t : json_string(""));
    }
    json_object_set_new(c, "logprobs", logprobs ? logprobs : json_null());
    json_object_set_new(c, "finish_reason", finish ? json_string(finish) : json_null());
    return c;
}

/* A chat choice around a prebuilt message or delta (consumed). */
static json_t *choice_msg(json_t *m, bool delta, const char *finish, json_t *logprobs) {
    json_t *c = json_object();
    json_object_set_new(c, "index", json_integer(0));
    json_object_set_new(c, delta ? "delta" : "message", m);
    json_object_set_new(c, "logprobs", logprobs ? logprobs : json_null());
    json_object_set_new(c, "finish_reason", finish ? json_string(finish) : json_null());
    return c;
}

static json_t *envelope(mk_server *s, srv_kind kind, bool chunk, const char *id, long long created) {
    return json_pack("{s:s,s:s,s:I,s:s,s:s}", "id", id, "object",
                     kind == SRV_CHAT ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                      : "text_completion",
                     "created", (json_int_t)created, "model", s->alias, "system_fingerprint",
                     "moekit-" MK_VERSION);
}

/* Seeds for requests that give none: different per request, never 0 twice. */
static uint64_t fresh_seed(mk_server *s) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    pthread_mutex_lock(&s->mu);
    uint64_t k = ++s->ids;
    pthread_mutex_unlock(&s->mu);
    uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (k * 0x9E3779B97F4A7C15ull);
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    return x ^ (x >> 33);
}

/* tool_choice "required" / a named function: the prompt goes on with the
 * opening of a call (srv_toolcall_force), so the model can only continue
 * one; ids[0..*n) grow by its tokens. False with r set. */
static bool force_call(mk_server *s, srv_params *p, srv_reply *r, int32_t **ids, size_t *n) {
    unsigned fl = p->no_thinking ? MK_CHAT_NO_THINKING : 0;
    free(p->force_pre);
    p->force_pre = NULL;
    mk_status st = srv_toolcall_force(s->m.chat_kind, srv_chat_think_open(s->m.chat_kind, fl),
                                      p->force_call == 2 ? p->force_name : NULL, &p->force_pre);
    int32_t *more = NULL;
    size_t nm = 0;
    if (st == MK_OK) {
        p->force_pre_len = strlen(p->force_pre);
        /* special tokens recognised: kimi's and harmony's markers are; the
         * name was checked to hold none (srv_toolcall_force) */
        st = mk_tok_encode(s->m.tok, p->force_pre, p->force_pre_len, 0, &more, &nm);
    }
    int32_t *g = st == MK_OK ? mk_realloc(*ids, (*n + nm) * sizeof **ids) : NULL;
    if (st == MK_OK && !g)
        st = mk_err(MK_E_NOMEM, "no memory for a prompt of %zu tokens", *n + nm);
    if (st != MK_OK) {
        free(more);
        free(*ids);
        *ids = NULL;
        if (st == MK_E_NOMEM)
            status_error(r, st, NULL);
        else
            srv_error(r, 400, "invalid_request_error", st == MK_E_ARG ? "tool_choice.function.name" : "tool_choice",
                      "%s", mk_err_msg());
        return false;
    }
    memcpy(g + *n, more, nm * sizeof *g);
    free(more);
    *ids = g;
    *n += nm;
    return true;
}

/* The prompt's ids, checked against the vocabulary and the context. */
bool srv_prompt_ids(mk_server *s, srv_params *p, srv_reply *r, int32_t **ids, int64_t *np) {
    const char *param = p->kind == SRV_CHAT ? "messages" : "prompt";
    size_t n = 0;
    mk_status st = MK_OK;
    *ids = NULL;
    if (p->kind == SRV_CHAT) {
        if (!s->m.has_chat) {
            srv_error(r, 400, "invalid_request_error", "messages",
                      "the model has no chat template that moekit recognises: use /v1/completions");
            return false;
        }
        unsigned fl = MK_CHAT_GENERATION_PROMPT | (p->no_thinking ? MK_CHAT_NO_THINKING : 0);
        mk_chat_tools tools = {(const char *const *)p->tool_json, p->ntools, p->mcalls};
        st = mk_chat_encode_tools(s->m.tok, s->m.chat_kind, p->msgs, p->nmsg, &tools, fl, ids, &n);
        if (st == MK_E_UNSUPPORTED) { /* tools this template is not rendered with yet */
            srv_error(r, 400, "invalid_request_error", p->ntools ? "tools" : "messages", "%s", mk_err_msg());
            return false;
        }
        if (st == MK_OK && p->force_call && !force_call(s, p, r, ids, &n))
            return false;
    } else if (p->has_ids) {
        int64_t V = mk_model_config(s->m.model)->vocab_size;
        for (size_t i = 0; i < p->n_ids; i++)
            if (p->ids[i] >= V) {
                srv_error(r, 400, "invalid_request_error", "prompt",
                          "prompt[%zu]: token id %d is outside the vocabulary of %lld", i, p->ids[i],
                          (long long)V);
                return false;
            }
        *ids = mk_malloc((p->n_ids ? p->n_ids : 1) * sizeof **ids);
        if (!*ids)
            st = mk_err(MK_E_NOMEM, "no memory for a prompt of %zu ids", p->n_ids);
        else
            memcpy(*ids, p->ids, p->n_ids * sizeof **ids);
        n = p->n_ids;
    } else {
        st = mk_tok_encode(s->m.tok, p->prompt, p->prompt_len, 0, ids, &n);
    }
    if (st != MK_OK) {
        status_error(r, st, param);
        free(*ids);
        *ids = NULL;
        return false;
    }
    *np = (int64_t)n;
    const char *why = NULL;
    if (n == 0)
        why = "is empty";
    else if ((int64_t)n >= s->ctx)
        why = "does not fit";
    if (why) {
        srv_error(r, 400, "invalid_request_error", param,
                  "%s: the prompt %s: %zu tokens, and the context holds %lld (--ctx) with room for at "
                  "least one generated token", param, why, n, (long long)s->ctx);
        free(*ids);
        *ids = NULL;
        return false;
    }
    if (p->max_tokens < 0) {
        p->max_tokens = s->ctx - (int64_t)n;
    } else if ((int64_t)n + p->max_tokens > s->ctx) {
        srv_error(r, 400, "invalid_request_error", "max_tokens",
                  "max_tokens: the prompt's %zu tokens + max_tokens %lld exceed the context of %lld "
                  "tokens (--ctx); ask for at most %lld", n, (long long)p->max_tokens,
                  (long long)s->ctx, (long long)(s->ctx - (int64_t)n));
        free(*ids);
        *ids = NULL;
        return false;
    }
    return true;
}

/* Wait on the job's condition for at most 100 ms (s->mu held): the
 * caller then checks whether its client is still there. */
void srv_wait_tick(mk_server *s, srv_job *j) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 100 * 1000 * 1000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&j->cv, &s->mu, &ts);
}

void srv_wait_done(mk_server *s, srv_job *j, srv_alive_fn alive, void *ctx) {
    pthread_mutex_lock(&s->mu);
    while (!j->done) {
        srv_wait_tick(s, j);
        if (!j->done && alive && !j->cancel) {
            pthread_mutex_unlock(&s->mu);
            bool a = alive(ctx);
            pthread_mutex_lock(&s->mu);
            if (!a)
                j->cancel = 1;
        }
    }
    pthread_mutex_unlock(&s->mu);
}

bool srv_stream_wait(srv_stream *st, srv_alive_fn alive, void *ctx, bool *gone) {
    mk_server *s = st->s;
    srv_job *j = st->j;
    while (!j->done && (j->safe <= st->sent || s->o.test_stream_hold)) {
        srv_wait_tick(s, j);
        if (!j->done && (j->safe <= st->sent || s->o.test_stream_hold) && alive) {
            pthread_mutex_unlock(&s->mu);
            bool a = alive(ctx);
            pthread_mutex_lock(&s->mu);
            if (!a) {
                j->cancel = 1;
                pthread_mutex_unlock(&s->mu);
                *gone = true;
                return false;
            }
        }
    }
    return true;
}

size_t srv_stream_upto(const srv_stream *st) {
    const srv_job *j = st->j;
    size_t lo = 0, hi = j->n_marks; /* the first mark past what was sent */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (j->marks[mid] <= st->sent)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < j->n_marks && j->marks[lo] < j->safe ? j->marks[lo] : j->safe;
}

json_t *srv_stream_chat_delta(srv_stream *st, bool *fin) {
    const srv_job *j = st->j;
    json_t *d = NULL;
    do { /* a token the parse holds back (a marker's beginning) goes with the next one */
        if (d)
            json_decref(d);
        size_t upto = srv_stream_upto(st);
        *fin = j->done && upto == j->safe;
        d = srv_chat_delta(&st->co, j->text ? j->text : "", upto, *fin);
        st->sent = upto;
    } while (d && json_object_size(d) == 0 && st->sent < j->safe);
    return d;
}

srv_job *srv_job_start(mk_server *s, srv_params *p, srv_reply *r) {
    if (p->model && strcmp(p->model, s->alias) && strcmp(p->model, "default_model")) {
        srv_error(r, 404, "invalid_request_error", "model",
                  "model: '%.200s' is not served here; this server serves '%s' (GET /v1/models)",
                  p->model, s->alias);
        return NULL;
    }
    int32_t *ids;
    int64_t np;
    if (!srv_respfmt_check(s, p, r) || !srv_prompt_ids(s, p, r, &ids, &np))
        return NULL;
    if (!p->seed_given)
        p->sp.seed = fresh_seed(s);
    if (p->test_output && !s->o.test_output) {
        free(ids);
        srv_error(r, 400, "invalid_request_error", "moekit_test_output",
                  "moekit_test_output: only for tests, on a server started with --test-output");
        return NULL;
    }
    srv_job *j = srv_job_new(ids, np, p->max_tokens, &p->sp, p->stop, p->stop_len, p->nstop);
    free(ids);
    if (j) {
        j->ignore_eos = p->ignore_eos;
        j->logprobs = p->logprobs;
        /* the markup of these families may be special tokens: their parser reads it */
        j->keep_special = p->kind == SRV_CHAT && s->m.chat_kind != MK_CHAT_CHATML &&
                          s->m.chat_kind != MK_CHAT_QWEN3 && s->m.chat_kind != MK_CHAT_QWEN3_THINK &&
                          s->m.chat_kind != MK_CHAT_QWEN35;
        size_t nf = 0;
        if (p->test_output &&
            mk_tok_encode(s->m.tok, p->test_output, p->test_output_len, 0, &j->forced, &nf) != MK_OK) {
            pthread_mutex_lock(&s->mu);
            srv_job_unref_locked(j);
            pthread_mutex_unlock(&s->mu);
            status_error(r, MK_E_ARG, "moekit_test_output");
            return NULL;
        }
        j->n_forced = (int64_t)nf;
        if (!srv_respfmt_start(s, p, j, r)) { /* response_format: constrained decoding */
            pthread_mutex_lock(&s->mu);
            srv_job_unref_locked(j);
            pthread_mutex_unlock(&s->mu);
            return NULL;
        }
    }
    if (!j) {
        srv_error(r, 503, "server_error", NULL, "out of memory for a request of %lld tokens", (long long)np);
        return NULL;
    }
    int code = srv_submit(s, j);
    if (code) {
        pthread_mutex_lock(&s->mu);
        srv_job_unref_locked(j);
        pthread_mutex_unlock(&s->mu);
        if (code == 429)
            srv_error(r, 429, "rate_limit_error", NULL,
                      "all %d slots are busy and %d requests are waiting (the queue is full): retry later",
                      s->nslots, s->queue_cap);
        else
            srv_error(r, 503, "server_error", NULL, "the server is shutting down");
        return NULL;
    }
    return j;
}

void srv_chatout_init(mk_server *s, srv_params *p, const char *id, srv_chatout *co) {
    unsigned fl = p->no_thinking ? MK_CHAT_NO_THINKING : 0;
    *co = (srv_chatout){.cfg = {.kind = s->m.chat_kind, .think_open = srv_chat_think_open(s->m.chat_kind, fl),
                                .tools = p->tools != NULL, .tool_defs = p->tools ? json_incref(p->tools) : NULL},
                        .parallel = p->parallel_calls, .pre = p->force_pre, .pre_len = p->force_pre_len};
    p->force_pre = NULL;
    snprintf(co->call_id, sizeof co->call_id, "call_%s", id);
}

static void completion(mk_server *s, srv_params *p, srv_reply *r, srv_alive_fn alive, void *ctx) {
    srv_job *j = srv_job_start(s, p, r);
    if (!j)
        return;
    char id[48];
    make_id(s, p->kind, id, sizeof id);
    long long created = (long long)time(NULL);
    srv_chatout co;
    srv_chatout_init(s, p, id + 9, &co);
    if (p->stream) {
        srv_stream *st = mk_calloc(1, sizeof *st);
        if (!st) {
            pthread_mutex_lock(&s->mu);
            j->cancel = 1;
            srv_job_unref_locked(j);
            pthread_mutex_unlock(&s->mu);
            srv_chatout_free(&co);
            srv_error(r, 503, "server_error", NULL, "out of memory for a stream");
            return;
        }
        *st = (srv_stream){.s = s, .j = j, .kind = p->kind, .include_usage = p->include_usage,
                           .created = created, .state = p->kind == SRV_CHAT ? 0 : 1, .co = co};
        memcpy(st->id, id, sizeof id);
        r->code = 200;
        r->stream = st;
        r->ctype = "text/event-stream";
        return;
    }
    srv_wait_done(s, j, alive, ctx);
    pthread_mutex_lock(&s->mu);
    if (j->finish == SRV_FIN_ERROR || j->finish == SRV_FIN_CANCEL) {
        char msg[256];
        bool cancelled = j->finish == SRV_FIN_CANCEL;
        snprintf(msg, sizeof msg, "%s", cancelled ? "cancelled (the server is shutting down)" : j->err);
        srv_job_unref_locked(j);
        pthread_mutex_unlock(&s->mu);
        srv_chatout_free(&co);
        srv_error(r, cancelled ? 503 : 500, "server_error", NULL, "generation failed: %s", msg);
        return;
    }
    unsigned long mark = mk_json_mark();
    json_t *o = envelope(s, p->kind, false, id, created);
    json_t *lp = j->logprobs >= 0 ? lp_json(s, p->kind, j, 0, lp_upto(j, 0, j->len, false)) : NULL;
    json_t *c;
    if (p->kind == SRV_CHAT) {
        json_t *m = srv_chat_message(&co, j->text ? j->text : "", j->len);
        c = m ? choice_msg(m, false, srv_chat_finish(&co, finish_name(j->finish)), lp) : NULL;
        if (!m && lp)
            json_decref(lp);
    } else {
        c = choice_json(p->kind, false, j->text ? j->text : "", j->len, true, finish_name(j->finish), lp);
    }
    srv_chatout_free(&co);
    json_t *u = usage_json(j);
    srv_job_unref_locked(j);
    pthread_mutex_unlock(&s->mu);
    if (o && c && u) {
        json_object_set_new(o, "choices", json_pack("[o]", c));
        json_object_set_new(o, "usage", u);
        srv_reply_json(r, 200, o, mark);
        return;
    }
    if (o)
        json_decref(o);
    if (c)
        json_decref(c);
    if (u)
        json_decref(u);
    srv_error(r, 500, "server_error", NULL, "out of memory building the response");
}

void srv_handle_post(mk_server *s, srv_kind kind, const char *body, size_t len, srv_reply *r,
                     srv_alive_fn alive, void *alive_ctx) {
    if (kind == SRV_MESSAGES || kind == SRV_COUNT_TOKENS) {
        srv_handle_anthropic(s, kind, body, len, r, alive, alive_ctx);
        return;
    }
    if (kind == SRV_RESPONSES) {
        srv_handle_responses(s, body, len, r, alive, alive_ctx);
        return;
    }
    srv_params p;
    mk_status st = srv_params_parse(kind, body, len, &p);
    if (st != MK_OK) {
        status_error(r, st, p.param);
        srv_params_free(&p);
        return;
    }
    if (kind == SRV_TOKENIZE)
        tokenize(s, &p, r);
    else if (kind == SRV_DETOKENIZE)
        detokenize(s, &p, r);
    else
        completion(s, &p, r, alive, alive_ctx);
    srv_params_free(&p);
}

/* ---- streams ----------------------------------------------------------------------- */

/* Format one SSE event (consumes o) into st->pend. */
static bool event(srv_stream *st, json_t *o, unsigned long mark) {
    char *t = o ? mk_json_dumps_checked(o, JSON_COMPACT | JSON_ENSURE_ASCII, mark) : NULL;
    if (o)
        json_decref(o);
    if (!t)
        return false;
    size_t n = strlen(t);
    char *e = mk_malloc(n + 9);
    if (e) {
        memcpy(e, "data: ", 6);
        memcpy(e + 6, t, n);
        memcpy(e + 6 + n, "\n\n", 3);
    }
    free(t);
    if (!e)
        return false;
    free(st->pend);
    st->pend = e;
    st->pend_len = n + 8;
    st->pend_off = 0;
    return true;
}

static json_t *chunk(srv_stream *st, json_t *choice) {
    json_t *o = envelope(st->s, st->kind, true, st->id, st->created);
    if (!o || (!choice && st->state != 3)) {
        if (choice)
            json_decref(choice);
        if (o)
            json_decref(o);
        return NULL;
    }
    json_object_set_new(o, "choices", choice ? json_pack("[o]", choice) : json_array());
    if (st->include_usage)
        json_object_set_new(o, "usage", json_null());
    return o;
}

/* The next event into st->pend; false at the end of the stream or when the
 * client is gone (*gone). */
static bool next_event(srv_stream *st, srv_alive_fn alive, void *ctx, bool *gone) {
    mk_server *s = st->s;
    srv_job *j = st->j;
    unsigned long mark = mk_json_mark();
    switch (st->state) {
    case 0:
        st->state = 1;
        if (event(st, chunk(st, choice_json(st->kind, true, "", 0, true, NULL, NULL)), mark))
            return true;
        st->state = 5;
        return false;
    case 1: {
        pthread_mutex_lock(&s->mu);
        if (!srv_stream_wait(st, alive, ctx, gone))
            return false;
        if (st->kind == SRV_CHAT && (j->safe > st->sent || j->done)) {
            /* reasoning, content and tool calls apart; a parse may hold
             * everything new back (a marker's beginning): then wait on */
            bool fin;
            json_t *d = srv_stream_chat_delta(st, &fin);
            size_t upto = st->sent;
            if (d && json_object_size(d) == 0 && !fin) {
                json_decref(d);
                pthread_mutex_unlock(&s->mu);
                return next_event(st, alive, ctx, gone);
            }
            if (d && json_object_size(d) == 0) {
                json_decref(d);
                st->state = 2;
                pthread_mutex_unlock(&s->mu);
                return next_event(st, alive, ctx, gone);
            }
            size_t to = j->logprobs >= 0 ? lp_upto(j, st->lp_sent, upto, true) : st->lp_sent;
            json_t *lp = to > st->lp_sent ? lp_json(s, st->kind, j, st->lp_sent, to) : NULL;
            st->lp_sent = to;
            pthread_mutex_unlock(&s->mu);
            if (d && event(st, chunk(st, choice_msg(d, true, NULL, lp)), mark))
                return true;
            if (!d && lp)
                json_decref(lp);
            st->state = 5;
            return false;
        }
        if (j->safe > st->sent) {
            size_t upto = srv_stream_upto(st);
            size_t to = j->logprobs >= 0 ? lp_upto(j, st->lp_sent, upto, true) : st->lp_sent;
            json_t *lp = to > st->lp_sent ? lp_json(s, st->kind, j, st->lp_sent, to) : NULL;
            st->lp_sent = to;
            json_t *c = choice_json(st->kind, true, j->text + st->sent, upto - st->sent, false, NULL, lp);
            st->sent = upto;
            pthread_mutex_unlock(&s->mu);
            if (event(st, chunk(st, c), mark))
                return true;
            st->state = 5;
            return false;
        }
        st->state = 2; /* done and everything sent */
        pthread_mutex_unlock(&s->mu);
        return next_event(st, alive, ctx, gone);
    }
    case 2: {
        pthread_mutex_lock(&s->mu);
        srv_finish f = j->finish;
        size_t to = j->logprobs >= 0 ? lp_upto(j, st->lp_sent, j->len, false) : st->lp_sent;
        json_t *lp = to > st->lp_sent ? lp_json(s, st->kind, j, st->lp_sent, to) : NULL;
        st->lp_sent = to;
        char err[256];
        snprintf(err, sizeof err, "%s", f == SRV_FIN_ERROR ? j->err : "cancelled (the server is shutting down)");
        pthread_mutex_unlock(&s->mu);
        json_t *o;
        if (f == SRV_FIN_ERROR || f == SRV_FIN_CANCEL) {
            o = json_pack("{s:{s:s,s:s,s:n,s:n}}", "error", "message", err, "type", "server_error",
                          "param", "code");
            if (lp)
                json_decref(lp);
            st->state = 4;
        } else {
            o = chunk(st, choice_json(st->kind, true, NULL, 0, false,
                                      st->kind == SRV_CHAT ? srv_chat_finish(&st->co, finish_name(f)) : finish_name(f), lp));
            st->state = st->include_usage ? 3 : 4;
        }
        if (event(st, o, mark))
            return true;
        st->state = 5;
        return false;
    }
    case 3: {
        pthread_mutex_lock(&s->mu);
        json_t *u = usage_json(j);
        pthread_mutex_unlock(&s->mu);
        json_t *o = chunk(st, NULL);
        if (o && u)
            json_object_set_new(o, "usage", u);
        else if (u)
            json_decref(u);
        st->state = 4;
        if (o && u && event(st, o, mark))
            return true;
        if (o && !u)
            json_decref(o);
        st->state = 5;
        return false;
    }
    case 4: {
        static const char done[] = "data: [DONE]\n\n";
        char *e = mk_malloc(sizeof done);
        st->state = 5;
        if (!e)
            return false;
        memcpy(e, done, sizeof done);
        free(st->pend);
        st->pend = e;
        st->pend_len = sizeof done - 1;
        st->pend_off = 0;
        return true;
    }
    default: return false;
    }
}

long srv_stream_read(srv_stream *st, char *buf, size_t max, srv_alive_fn alive, void *ctx) {
    if (st->pend_off >= st->pend_len) {
        bool gone = false;
        if (!(st->next ? st->next : next_event)(st, alive, ctx, &gone))
            return gone ? -1 : 0;
    }
    size_t n = st->pend_len - st->pend_off;
    if (n > max)
        n = max;
    memcpy(buf, st->pend + st->pend_off, n);
    st->pend_off += n;
    return (long)n;
}

void srv_stream_free(srv_stream *st) {
    if (!st)
        return;
    pthread_mutex_lock(&st->s->mu);
    if (!st->j->done)
        st->j->cancel = 1; /* the client is gone: free the slot at the next step */
    srv_job_unref_locked(st->j);
    pthread_mutex_unlock(&st->s->mu);
    srv_chatout_free(&st->co);
    if (st->ext_free)
        st->ext_free(st->ext);
    free(st->pend);
    free(st);
}
