/* Anthropic's Messages API (POST /v1/messages, /v1/messages/count_tokens),
 * the one Claude Code speaks, over the same slots, templates and parsers
 * as chat completions: the request is translated into a chat completions
 * request (system -> a system message; content blocks -> messages: text
 * joined, tool_result -> tool messages, tool_use -> tool_calls, thinking ->
 * reasoning_content; tools' input_schema -> parameters; thinking ->
 * chat_template_kwargs.enable_thinking) and validated by request.c; the
 * answer, split by chatparse.c, comes back as content blocks (thinking,
 * text, tool_use) with stop_reason end_turn, max_tokens, stop_sequence or
 * tool_use, or as Anthropic's SSE events: message_start, then per block
 * content_block_start / content_block_delta (thinking_delta, text_delta,
 * input_json_delta) / content_block_stop, then message_delta and
 * message_stop. Errors are {"type": "error", "error": {type, message}}.
 * tool_choice any / tool become "required" / a named function (forced by
 * prefill, toolforce.c). Refused rather than ignored: images and
 * documents, server tools, structured output (output_format,
 * output_config.format). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/json_err.h"
#include "server/srv_impl.h"

/* ---- errors ------------------------------------------------------------------ */

/* Rewrite an OpenAI error body (srv_error) in r into Anthropic's shape. */
static void to_anthropic_error(srv_reply *r) {
    json_error_t e;
    json_t *o = r->body ? json_loadb(r->body, r->len, 0, &e) : NULL;
    json_t *er = json_object_get(o, "error");
    const char *msg = json_string_value(json_object_get(er, "message"));
    const char *ty = r->code == 400 ? "invalid_request_error"
                     : r->code == 401 ? "authentication_error"
                     : r->code == 404 ? "not_found_error"
                     : r->code == 413 ? "request_too_large"
                     : r->code == 429 ? "rate_limit_error"
                     : r->code == 503 ? "overloaded_error"
                                      : "api_error";
    json_t *a = json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type", ty, "message",
                          msg ? msg : "error");
    char *t = a ? json_dumps(a, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    if (a)
        json_decref(a);
    if (o)
        json_decref(o);
    if (t) {
        free(r->body);
        r->body = t;
        r->len = strlen(t);
    }
}

static void bad(srv_reply *r, const char *param, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void bad(srv_reply *r, const char *param, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    srv_error(r, 400, "invalid_request_error", param, "%s: %s", param, msg);
}

/* ---- request translation ------------------------------------------------------ */

static json_t *field(const json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return v && !json_is_null(v) ? v : NULL;
}

/* Text of a string or of an array of {"type": "text"} blocks. */
static json_t *text_of(const json_t *c, const char *name, srv_reply *r) {
    if (json_is_string(c))
        return json_incref((json_t *)c);
    if (!json_is_array(c)) {
        bad(r, name, "expected a string or an array of text blocks, found %s", mk_json_type_name(c));
        return NULL;
    }
    size_t i;
    json_t *b;
    char *acc = mk_strdup("");
    json_array_foreach(c, i, b) {
        const char *ty = json_string_value(json_object_get(b, "type"));
        const char *t = json_string_value(json_object_get(b, "text"));
        if (!ty || strcmp(ty, "text") || !t) {
            free(acc);
            bad(r, name, "block %zu: only text blocks are supported here, found %s", i, ty ? ty : "no type");
            return NULL;
        }
        size_t a = strlen(acc), n = strlen(t);
        char *g = acc ? mk_realloc(acc, a + n + 1) : NULL;
        if (!g) {
            free(acc);
            srv_error(r, 503, "server_error", NULL, "out of memory translating %s", name);
            return NULL;
        }
        memcpy(g + a, t, n + 1);
        acc = g;
    }
    json_t *j = json_string(acc ? acc : "");
    free(acc);
    return j;
}

/* One Anthropic message -> one or more chat messages appended to out. */
static bool message(const json_t *m, size_t i, json_t *out, srv_reply *r) {
    char name[96];
    snprintf(name, sizeof name, "messages[%zu]", i);
    const char *role = json_string_value(json_object_get(m, "role"));
    if (!json_is_object(m) || !role || (strcmp(role, "user") && strcmp(role, "assistant"))) {
        bad(r, name, "expected {\"role\": \"user\" or \"assistant\", \"content\"}");
        return false;
    }
    json_t *c = json_object_get(m, "content");
    snprintf(name, sizeof name, "messages[%zu].content", i);
    if (json_is_string(c)) {
        json_array_append_new(out, json_pack("{s:s,s:O}", "role", role, "content", c));
        return true;
    }
    if (!json_is_array(c)) {
        bad(r, name, "expected a string or an array of content blocks, found %s", c ? mk_json_type_name(c) : "nothing");
        return false;
    }
    bool asst = !strcmp(role, "assistant");
    size_t before = json_array_size(out); /* tool results are messages of their own */
    json_t *text = json_array(), *calls = json_array();
    json_t *think = NULL;
    size_t k;
    json_t *b;
    bool ok = true;
    json_array_foreach(c, k, b) {
        snprintf(name, sizeof name, "messages[%zu].content[%zu]", i, k);
        const char *ty = json_string_value(json_object_get(b, "type"));
        if (!ty) {
            bad(r, name, "a content block needs a \"type\"");
            ok = false;
            break;
        }
        if (!strcmp(ty, "text") && json_is_string(json_object_get(b, "text"))) {
            json_array_append_new(text, json_pack("{s:s,s:O}", "type", "text", "text", json_object_get(b, "text")));
        } else if (asst && !strcmp(ty, "thinking") && json_is_string(json_object_get(b, "thinking"))) {
            if (think) /* one per turn: the last one is the turn's reasoning */
                json_decref(think);
            think = json_incref(json_object_get(b, "thinking"));
        } else if (asst && !strcmp(ty, "tool_use")) {
            json_t *id = json_object_get(b, "id"), *nm = json_object_get(b, "name"), *in = json_object_get(b, "input");
            char *args = json_is_object(in) ? json_dumps(in, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
            if (!json_is_string(id) || !json_is_string(nm) || !args) {
                free(args);
                bad(r, name, "a tool_use block needs \"id\", \"name\" and an object \"input\"");
                ok = false;
                break;
            }
            json_array_append_new(calls, json_pack("{s:O,s:s,s:{s:O,s:s}}", "id", id, "type", "function", "function",
                                                   "name", nm, "arguments", args));
            free(args);
        } else if (!asst && !strcmp(ty, "tool_result")) {
            json_t *id = json_object_get(b, "tool_use_id"), *rc = field(b, "content");
            char nm2[128];
            snprintf(nm2, sizeof nm2, "%s.content", name);
            json_t *t = rc ? text_of(rc, nm2, r) : json_string("");
            if (!json_is_string(id) || !t) {
                if (t)
                    json_decref(t);
                else if (!json_is_string(id))
                    bad(r, name, "a tool_result block needs \"tool_use_id\"");
                ok = false;
                break;
            }
            json_array_append_new(out, json_pack("{s:s,s:O,s:o}", "role", "tool", "tool_call_id", id, "content", t));
        } else {
            bad(r, name, "content blocks of type '%s' are not supported in %s messages", ty, role);
            ok = false;
            break;
        }
    }
    /* the turn's text (and reasoning and calls); a user turn of only tool
     * results is those */
    if (ok && (asst || json_array_size(text) || json_array_size(out) == before)) {
        json_t *msg = json_pack("{s:s}", "role", role);
        if (json_array_size(text))
            json_object_set(msg, "content", text);
        else if (!asst)
            json_object_set_new(msg, "content", json_string(""));
        if (think)
            json_object_set(msg, "reasoning_content", think);
        if (json_array_size(calls))
            json_object_set(msg, "tool_calls", calls);
        json_array_append_new(out, msg);
    }
    json_decref(text);
    json_decref(calls);
    if (think)
        json_decref(think);
    return ok;
}

/* The chat completions request of an Anthropic one, or NULL with r set. */
static json_t *translate(srv_kind kind, const json_t *a, srv_reply *r) {
    if (!json_is_object(a)) {
        bad(r, "body", "expected a JSON object, found %s", mk_json_type_name(a));
        return NULL;
    }
    json_t *o = json_object(), *msgs = json_array();
    json_object_set_new(o, "messages", msgs);
    json_t *sys = field(a, "system");
    if (sys) {
        json_t *t = text_of(sys, "system", r);
        if (!t)
            goto fail;
        json_array_append_new(msgs, json_pack("{s:s,s:o}", "role", "system", "content", t));
    }
    /* structured outputs (output_format, output_config.format): not offered
     * here, and a schema must never be silently ignored */
    json_t *oc = field(a, "output_config");
    if (field(a, "output_format") || (json_is_object(oc) && field(oc, "format"))) {
        bad(r, field(a, "output_format") ? "output_format" : "output_config.format",
            "structured output is not supported on /v1/messages (use /v1/chat/completions response_format or "
            "/v1/responses text.format)");
        goto fail;
    }
    json_t *ms = json_object_get(a, "messages");
    if (!json_is_array(ms)) {
        bad(r, "messages", "expected an array, found %s", ms ? mk_json_type_name(ms) : "nothing");
        goto fail;
    }
    for (size_t i = 0; i < json_array_size(ms); i++)
        if (!message(json_array_get(ms, i), i, msgs, r))
            goto fail;
    if (kind == SRV_MESSAGES) {
        json_t *mt = json_object_get(a, "max_tokens");
        if (!mt) {
            bad(r, "max_tokens", "missing (the Messages API requires it)");
            goto fail;
        }
        json_object_set(o, "max_tokens", mt);
    }
    static const char *const same[] = {"temperature", "top_p", "top_k", "stream", "moekit_test_output"};
    for (size_t i = 0; i < sizeof same / sizeof *same; i++)
        if (field(a, same[i]))
            json_object_set(o, same[i], field(a, same[i]));
    if (field(a, "stop_sequences"))
        json_object_set(o, "stop", field(a, "stop_sequences"));
    json_t *tools = field(a, "tools");
    if (tools) {
        if (!json_is_array(tools)) {
            bad(r, "tools", "expected an array, found %s", mk_json_type_name(tools));
            goto fail;
        }
        json_t *ot = json_array();
        json_object_set_new(o, "tools", ot);
        for (size_t i = 0; i < json_array_size(tools); i++) {
            json_t *t = json_array_get(tools, i);
            char name[64];
            snprintf(name, sizeof name, "tools[%zu]", i);
            const char *ty = json_string_value(json_object_get(t, "type"));
            if (!json_is_object(t) || (ty && strcmp(ty, "custom"))) {
                bad(r, name, "only custom tools (name, description, input_schema) are supported%s%s",
                    ty ? ", found type " : "", ty ? ty : "");
                goto fail;
            }
            json_t *f = json_pack("{s:O?}", "name", json_object_get(t, "name"));
            if (field(t, "description"))
                json_object_set(f, "description", field(t, "description"));
            if (field(t, "input_schema"))
                json_object_set(f, "parameters", field(t, "input_schema"));
            json_array_append_new(ot, json_pack("{s:s,s:o}", "type", "function", "function", f));
        }
    }
    json_t *tc = field(a, "tool_choice");
    if (tc) {
        const char *ty = json_string_value(json_object_get(tc, "type"));
        if (!ty) {
            bad(r, "tool_choice", "expected {\"type\": \"auto\", \"none\", \"any\" or \"tool\"}");
            goto fail;
        }
        if (!strcmp(ty, "tool") && json_is_string(json_object_get(tc, "name"))) {
            json_object_set_new(o, "tool_choice", json_pack("{s:s,s:{s:O}}", "type", "function", "function", "name",
                                                            json_object_get(tc, "name")));
        } else if (!strcmp(ty, "auto") || !strcmp(ty, "none") || !strcmp(ty, "any")) {
            json_object_set_new(o, "tool_choice", json_string(!strcmp(ty, "any") ? "required" : ty));
        } else {
            bad(r, "tool_choice", "expected {\"type\": \"auto\", \"none\", \"any\"} or {\"type\": \"tool\", \"name\"}");
            goto fail;
        }
        if (json_is_true(json_object_get(tc, "disable_parallel_tool_use")))
            json_object_set_new(o, "parallel_tool_calls", json_false());
    }
    json_t *th = field(a, "thinking");
    if (th) {
        const char *ty = json_string_value(json_object_get(th, "type"));
        if (!ty || (strcmp(ty, "enabled") && strcmp(ty, "disabled"))) {
            bad(r, "thinking", "expected {\"type\": \"enabled\"} or {\"type\": \"disabled\"}");
            goto fail;
        }
        json_object_set_new(o, "chat_template_kwargs", json_pack("{s:b}", "enable_thinking", !strcmp(ty, "enabled")));
    }
    return o;
fail:
    json_decref(o);
    return NULL;
}

/* ---- responses ------------------------------------------------------------------ */

static const char *stop_reason(const srv_job *j, bool calls, const char **seq) {
    *seq = NULL;
    if (calls)
        return "tool_use";
    if (j->finish == SRV_FIN_LENGTH)
        return "max_tokens";
    /* a stop sequence cut the text: the raw text goes on with it */
    for (int i = 0; j->finish == SRV_FIN_STOP && i < j->nstop; i++)
        if (j->raw && j->raw_len >= j->len + j->stop_len[i] && !memcmp(j->raw + j->len, j->stop[i], j->stop_len[i])) {
            *seq = j->stop[i];
            return "stop_sequence";
        }
    return "end_turn";
}

static json_t *tool_use(const srv_chatout *co, const srv_call *c, size_t i) {
    char id[96];
    snprintf(id, sizeof id, "toolu_%s_%zu", co->call_id + 5, i);
    json_error_t e;
    json_t *in = json_loads(c->args, 0, &e);
    return json_pack("{s:s,s:s,s:s,s:o}", "type", "tool_use", "id", id, "name", c->name, "input",
                     in ? in : json_object());
}

static json_t *usage(const srv_job *j) {
    return json_pack("{s:I,s:I,s:I,s:I}", "input_tokens", (json_int_t)(j->np - j->n_cached), "output_tokens",
                     (json_int_t)j->n_gen, "cache_read_input_tokens", (json_int_t)j->n_cached,
                     "cache_creation_input_tokens", (json_int_t)0);
}

static void final_message(mk_server *s, srv_job *j, srv_chatout *co, const char *id, srv_reply *r) {
    unsigned long mark = mk_json_mark();
    srv_parsed p;
    pthread_mutex_lock(&s->mu);
    mk_status st = srv_chatout_parse(co, j->text ? j->text : "", j->len, true, &p);
    size_t nc = st == MK_OK ? (!co->parallel && p.ncalls > 1 ? 1 : p.ncalls) : 0;
    const char *seq;
    const char *why = stop_reason(j, nc > 0, &seq);
    json_t *u = usage(j);
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:[],s:s,s:s?,s:o}", "id", id, "type", "message", "role", "assistant",
                          "model", s->alias, "content", "stop_reason", why, "stop_sequence", seq, "usage", u);
    pthread_mutex_unlock(&s->mu);
    if (st != MK_OK || !o) {
        if (st == MK_OK)
            srv_parsed_free(&p);
        if (o)
            json_decref(o);
        srv_error(r, 503, "server_error", NULL, "out of memory building the response");
        return;
    }
    json_t *c = json_object_get(o, "content");
    if (p.rlen)
        json_array_append_new(c, json_pack("{s:s,s:s%,s:s}", "type", "thinking", "thinking", p.reasoning, p.rlen,
                                           "signature", ""));
    if (p.clen)
        json_array_append_new(c, json_pack("{s:s,s:s%}", "type", "text", "text", p.content, p.clen));
    for (size_t i = 0; i < nc; i++)
        json_array_append_new(c, tool_use(co, &p.calls[i], i));
    if (!json_array_size(c)) /* an empty answer is one empty text block */
        json_array_append_new(c, json_pack("{s:s,s:s}", "type", "text", "text", ""));
    srv_parsed_free(&p);
    srv_reply_json(r, 200, o, mark);
}

/* ---- SSE ------------------------------------------------------------------------- */

/* Append "event: NAME\ndata: JSON\n\n" (o consumed) to st->pend (which
 * holds only unsent bytes from pend_off on); the Responses API's SSE too. */
bool srv_sse(srv_stream *st, const char *name, json_t *o, unsigned long mark) {
    char *t = o ? mk_json_dumps_checked(o, JSON_COMPACT | JSON_ENSURE_ASCII, mark) : NULL;
    if (o)
        json_decref(o);
    if (!t)
        return false;
    size_t keep = st->pend_len - st->pend_off, n = strlen(t), add = 7 + strlen(name) + 7 + n + 2;
    char *e = mk_malloc(keep + add + 1);
    if (e) {
        if (keep) /* (pend is NULL before the first event) */
            memcpy(e, st->pend + st->pend_off, keep);
        snprintf(e + keep, add + 1, "event: %s\ndata: %s\n\n", name, t);
    }
    free(t);
    if (!e)
        return false;
    free(st->pend);
    st->pend = e;
    st->pend_len = keep + add;
    st->pend_off = 0;
    return true;
}

static bool block_stop(srv_stream *st, unsigned long mark) {
    if (!st->blk)
        return true;
    st->blk = 0;
    return srv_sse(st, "content_block_stop", json_pack("{s:s,s:i}", "type", "content_block_stop", "index", st->nblk - 1), mark);
}

/* Text of kind (1 thinking, 2 text) into the open block of that kind. */
static bool block_text(srv_stream *st, int kind, const char *t, size_t n, unsigned long mark) {
    bool ok = true;
    if (st->blk != kind) {
        ok = block_stop(st, mark);
        json_t *cb = kind == 1 ? json_pack("{s:s,s:s,s:s}", "type", "thinking", "thinking", "", "signature", "")
                               : json_pack("{s:s,s:s}", "type", "text", "text", "");
        ok = ok && srv_sse(st, "content_block_start",
                       json_pack("{s:s,s:i,s:o}", "type", "content_block_start", "index", st->nblk, "content_block", cb), mark);
        st->blk = kind;
        st->nblk++;
    }
    json_t *d = kind == 1 ? json_pack("{s:s,s:s%}", "type", "thinking_delta", "thinking", t, n)
                          : json_pack("{s:s,s:s%}", "type", "text_delta", "text", t, n);
    return ok && srv_sse(st, "content_block_delta",
                     json_pack("{s:s,s:i,s:o}", "type", "content_block_delta", "index", st->nblk - 1, "delta", d), mark);
}

/* The events a chat delta (chatout.c) makes. */
static bool delta_events(srv_stream *st, json_t *d, unsigned long mark) {
    bool ok = true;
    json_t *rc = json_object_get(d, "reasoning_content"), *c = json_object_get(d, "content");
    if (rc)
        ok = block_text(st, 1, json_string_value(rc), json_string_length(rc), mark);
    if (ok && c)
        ok = block_text(st, 2, json_string_value(c), json_string_length(c), mark);
    size_t i;
    json_t *tc;
    json_array_foreach(json_object_get(d, "tool_calls"), i, tc) {
        json_t *f = json_object_get(tc, "function");
        srv_call call = {(char *)json_string_value(json_object_get(f, "name")),
                         (char *)json_string_value(json_object_get(f, "arguments"))};
        json_t *tu = tool_use(&st->co, &call, (size_t)json_integer_value(json_object_get(tc, "index")));
        json_t *args = json_object_get(f, "arguments");
        ok = ok && block_stop(st, mark) && tu;
        if (ok)
            json_object_set_new(tu, "input", json_object()); /* the input comes as input_json_delta */
        ok = ok && srv_sse(st, "content_block_start",
                       json_pack("{s:s,s:i,s:o}", "type", "content_block_start", "index", st->nblk, "content_block", tu), mark);
        ok = ok && srv_sse(st, "content_block_delta",
                       json_pack("{s:s,s:i,s:{s:s,s:O}}", "type", "content_block_delta", "index", st->nblk, "delta",
                                 "type", "input_json_delta", "partial_json", args), mark);
        ok = ok && srv_sse(st, "content_block_stop", json_pack("{s:s,s:i}", "type", "content_block_stop", "index", st->nblk), mark);
        st->nblk++;
        if (!ok)
            break;
    }
    return ok;
}

bool srv_stream_content(srv_stream *st, srv_alive_fn alive, void *ctx, bool *gone, srv_delta_emit_fn emit,
                        unsigned long mark) {
    mk_server *s = st->s;
    pthread_mutex_lock(&s->mu);
    if (!srv_stream_wait(st, alive, ctx, gone)) /* (it unlocks) */
        return false;
    bool fin;
    json_t *d = srv_stream_chat_delta(st, &fin);
    pthread_mutex_unlock(&s->mu);
    if (!d) {
        st->state = 5;
        return false;
    }
    bool empty = json_object_size(d) == 0;
    bool ok = empty || emit(st, d, mark);
    json_decref(d);
    if (!ok) {
        st->state = 5;
        return false;
    }
    if (!empty)
        return true;
    if (fin)
        st->state = 2;
    return st->next(st, alive, ctx, gone);
}

static bool anth_next(srv_stream *st, srv_alive_fn alive, void *ctx, bool *gone) {
    mk_server *s = st->s;
    srv_job *j = st->j;
    unsigned long mark = mk_json_mark();
    switch (st->state) {
    case 0: {
        st->state = 1;
        pthread_mutex_lock(&s->mu);
        json_t *u = usage(j);
        pthread_mutex_unlock(&s->mu);
        json_object_set_new(u, "output_tokens", json_integer(0));
        json_t *m = json_pack("{s:s,s:s,s:s,s:s,s:[],s:n,s:n,s:o}", "id", st->id, "type", "message", "role", "assistant",
                              "model", s->alias, "content", "stop_reason", "stop_sequence", "usage", u);
        if (srv_sse(st, "message_start", json_pack("{s:s,s:o}", "type", "message_start", "message", m), mark))
            return true;
        st->state = 5;
        return false;
    }
    case 1:
        return srv_stream_content(st, alive, ctx, gone, delta_events, mark);
    case 2: {
        pthread_mutex_lock(&s->mu);
        srv_finish f = j->finish;
        const char *seq;
        const char *why = stop_reason(j, st->co.any_calls, &seq);
        json_t *md = json_pack("{s:s,s:{s:s,s:s?},s:{s:I}}", "type", "message_delta", "delta", "stop_reason", why,
                               "stop_sequence", seq, "usage", "output_tokens", (json_int_t)j->n_gen);
        char err[256];
        snprintf(err, sizeof err, "%s", f == SRV_FIN_ERROR ? j->err : "cancelled (the server is shutting down)");
        pthread_mutex_unlock(&s->mu);
        st->state = 5;
        if (f == SRV_FIN_ERROR || f == SRV_FIN_CANCEL) {
            if (md)
                json_decref(md);
            return srv_sse(st, "error", json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type", "api_error",
                                              "message", err), mark);
        }
        bool ok = block_stop(st, mark) && srv_sse(st, "message_delta", md, mark) &&
                  srv_sse(st, "message_stop", json_pack("{s:s}", "type", "message_stop"), mark);
        return ok;
    }
    default: return false;
    }
}

/* ---- the endpoints ------------------------------------------------------------- */

void srv_handle_anthropic(mk_server *s, srv_kind kind, const char *body, size_t len, srv_reply *r,
                          srv_alive_fn alive, void *alive_ctx) {
    json_error_t je;
    unsigned long mark = mk_json_mark();
    json_t *a = mk_json_loadb(body, len, JSON_REJECT_DUPLICATES, &je, mark);
    if (!a) {
        if (mk_json_nomem(&je, mark))
            srv_error(r, 503, "server_error", NULL, "no memory to parse a request of %zu bytes", len);
        else
            srv_error(r, 400, "invalid_request_error", "body", "body: not valid JSON: %s at line %d column %d",
                      je.text, je.line, je.column);
        to_anthropic_error(r);
        return;
    }
    json_t *o = translate(kind, a, r);
    json_decref(a);
    char *ob = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (o)
        json_decref(o);
    if (!ob) {
        if (!r->body)
            srv_error(r, 503, "server_error", NULL, "out of memory translating the request");
        to_anthropic_error(r);
        return;
    }
    srv_params p;
    mk_status st = srv_params_parse(SRV_CHAT, ob, strlen(ob), &p);
    free(ob);
    if (st != MK_OK) {
        srv_error(r, st == MK_E_NOMEM ? 503 : 400, st == MK_E_NOMEM ? "server_error" : "invalid_request_error",
                  p.param, "%s", mk_err_msg());
        srv_params_free(&p);
        to_anthropic_error(r);
        return;
    }
    p.model = NULL; /* any model name: Claude Code sends its own; the answer names the served alias */
    if (kind == SRV_COUNT_TOKENS) {
        int32_t *ids = NULL;
        int64_t np = 0;
        if (srv_prompt_ids(s, &p, r, &ids, &np)) {
            free(ids);
            srv_reply_json(r, 200, json_pack("{s:I}", "input_tokens", (json_int_t)np), mark);
        } else {
            to_anthropic_error(r);
        }
        srv_params_free(&p);
        return;
    }
    srv_job *j = srv_job_start(s, &p, r);
    if (!j) {
        srv_params_free(&p);
        to_anthropic_error(r);
        return;
    }
    char id[48];
    srv_make_id(s, "msg_", id, sizeof id);
    srv_chatout co;
    srv_chatout_init(s, &p, id + 4, &co);
    bool stream = p.stream;
    srv_params_free(&p);
    if (stream) {
        srv_stream *sst = mk_calloc(1, sizeof *sst);
        if (!sst) {
            pthread_mutex_lock(&s->mu);
            j->cancel = 1;
            srv_job_unref_locked(j);
            pthread_mutex_unlock(&s->mu);
            srv_chatout_free(&co);
            srv_error(r, 503, "server_error", NULL, "out of memory for a stream");
            to_anthropic_error(r);
            return;
        }
        *sst = (srv_stream){.next = anth_next, .s = s, .j = j, .kind = SRV_CHAT, .created = (long long)time(NULL), .co = co};
        memcpy(sst->id, id, sizeof id);
        r->code = 200;
        r->stream = sst;
        r->ctype = "text/event-stream";
        return;
    }
    srv_wait_done(s, j, alive, alive_ctx);
    pthread_mutex_lock(&s->mu);
    srv_finish f = j->finish;
    char msg[256];
    snprintf(msg, sizeof msg, "%s", f == SRV_FIN_CANCEL ? "cancelled (the server is shutting down)" : j->err);
    pthread_mutex_unlock(&s->mu);
    if (f == SRV_FIN_ERROR || f == SRV_FIN_CANCEL) {
        srv_error(r, f == SRV_FIN_CANCEL ? 503 : 500, "server_error", NULL, "generation failed: %s", msg);
        to_anthropic_error(r);
    } else {
        final_message(s, j, &co, id, r);
        if (r->code != 200)
            to_anthropic_error(r);
    }
    srv_chatout_free(&co);
    pthread_mutex_lock(&s->mu);
    srv_job_unref_locked(j);
    pthread_mutex_unlock(&s->mu);
}
