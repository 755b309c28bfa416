/* Request bodies -> validated parameters: every field the server reads is
 * checked for type and range here, and a failure names the field
 * ("messages[2].content", "temperature") so the client gets a 400 that
 * says what to fix. Unknown fields are ignored (OpenAI clients send many),
 * and null is the same as absent. No HTTP here: tests/fuzz/fuzz_server_request.c
 * drives this file alone. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/json_err.h"
#include "server/srv_impl.h"

static mk_status bad(srv_params *p, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static mk_status bad(srv_params *p, const char *param, const char *fmt, ...) {
    snprintf(p->param_buf, sizeof p->param_buf, "%s", param);
    p->param = p->param_buf;
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mk_err(MK_E_ARG, "%s: %s", param, msg);
}

static const char *type_name(const json_t *v) { return mk_json_type_name(v); }

/* The field, or NULL when absent or null. */
static json_t *field(const json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return v && !json_is_null(v) ? v : NULL;
}

static mk_status get_bool(srv_params *p, const json_t *o, const char *k, bool *out) {
    json_t *v = field(o, k);
    if (!v)
        return MK_OK;
    if (!json_is_boolean(v))
        return bad(p, k, "expected a boolean, found %s", type_name(v));
    *out = json_is_true(v);
    return MK_OK;
}

/* A number in [lo, hi] (open ends by flag); *given tells whether present. */
static mk_status get_num(srv_params *p, const json_t *o, const char *k, double lo, double hi,
                         bool lo_open, bool hi_open, float *out) {
    json_t *v = field(o, k);
    if (!v)
        return MK_OK;
    if (!json_is_number(v))
        return bad(p, k, "expected a number, found %s", type_name(v));
    double d = json_number_value(v);
    if (!isfinite(d) || (lo_open ? d <= lo : d < lo) || (hi_open ? d >= hi : d > hi))
        return bad(p, k, "must be in %s%g, %g%s, found %g", lo_open ? "(" : "[", lo, hi,
                   hi_open ? ")" : "]", d);
    *out = (float)d;
    return MK_OK;
}

static mk_status get_int(srv_params *p, const json_t *o, const char *k, long long lo, long long hi,
                         long long *out, bool *given) {
    json_t *v = field(o, k);
    if (given)
        *given = v != NULL;
    if (!v)
        return MK_OK;
    if (!json_is_integer(v))
        return bad(p, k, "expected an integer, found %s", type_name(v));
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return bad(p, k, "must be in [%lld, %lld], found %lld", lo, hi, x);
    *out = x;
    return MK_OK;
}

/* A JSON string without NUL bytes (they cannot reach the tokenizer's C
 * strings; jansson accepts \u0000). */
static mk_status get_text(srv_params *p, const json_t *v, const char *name, const char **s, size_t *len) {
    if (!json_is_string(v))
        return bad(p, name, "expected a string, found %s", type_name(v));
    *s = json_string_value(v);
    *len = json_string_length(v);
    if (strlen(*s) != *len)
        return bad(p, name, "holds a NUL character (\\u0000)");
    return MK_OK;
}

/* Fields that would change the answer if honoured: refused rather than
 * silently ignored (an agent must not believe a tool or a schema was used). */
static mk_status unsupported(srv_params *p, const json_t *o) {
    if (p->kind != SRV_CHAT) {
        json_t *t = field(o, "tools");
        if (t && (!json_is_array(t) || json_array_size(t) > 0))
            return bad(p, "tools", "tools are a chat completions field (/v1/chat/completions)");
    }
    json_t *rf = field(o, "response_format"); /* respfmt.c: constrained decoding */
    if (rf) {
        mk_status st = srv_format_compile(rf, false, "response_format", &p->grammar, p->param_buf,
                                          sizeof p->param_buf);
        if (st != MK_OK) {
            p->param = p->param_buf;
            return st;
        }
    }
    long long best_of = 1;
    MK_TRY(get_int(p, o, "best_of", 1, 1 << 20, &best_of, NULL));
    if (best_of != 1)
        return bad(p, "best_of", "only 1 is supported, found %lld", best_of);
    bool echo = false;
    MK_TRY(get_bool(p, o, "echo", &echo));
    if (echo)
        return bad(p, "echo", "echoing the prompt is not supported");
    json_t *sfx = field(o, "suffix");
    if (sfx && !(json_is_string(sfx) && json_string_length(sfx) == 0))
        return bad(p, "suffix", "insertion (a suffix) is not supported");
    return MK_OK;
}

static mk_status parse_sampling(srv_params *p, const json_t *o) {
    mk_sample_params *sp = &p->sp;
    sp->temperature = 1.0f; /* OpenAI's default */
    MK_TRY(get_num(p, o, "temperature", 0, 2, false, false, &sp->temperature));
    MK_TRY(get_num(p, o, "top_p", 0, 1, true, false, &sp->top_p));
    MK_TRY(get_num(p, o, "min_p", 0, 1, false, true, &sp->min_p));
    MK_TRY(get_num(p, o, "presence_penalty", -2, 2, false, false, &sp->presence_penalty));
    MK_TRY(get_num(p, o, "frequency_penalty", -2, 2, false, false, &sp->frequency_penalty));
    MK_TRY(get_num(p, o, "repetition_penalty", 0, 100, true, false, &sp->repeat_penalty));
    long long v = 0;
    MK_TRY(get_int(p, o, "top_k", 0, 1 << 24, &v, NULL));
    sp->top_k = (int)v;
    long long seed = 0;
    MK_TRY(get_int(p, o, "seed", INT64_MIN, INT64_MAX, &seed, &p->seed_given));
    sp->seed = (uint64_t)seed;
    long long mt = -1, mct = -1;
    bool g1, g2;
    MK_TRY(get_int(p, o, "max_tokens", 1, 1 << 24, &mt, &g1));
    MK_TRY(get_int(p, o, "max_completion_tokens", 1, 1 << 24, &mct, &g2));
    p->max_tokens = g2 ? mct : g1 ? mt : -1;
    long long n = 1;
    MK_TRY(get_int(p, o, "n", 1, 1 << 20, &n, NULL));
    if (n != 1)
        return bad(p, "n", "only 1 choice per request is supported, found %lld", n);
    MK_TRY(get_bool(p, o, "stream", &p->stream));
    MK_TRY(get_bool(p, o, "ignore_eos", &p->ignore_eos));
    json_t *so = field(o, "stream_options");
    if (so) {
        if (!json_is_object(so))
            return bad(p, "stream_options", "expected an object, found %s", type_name(so));
        if (json_object_get(so, "include_usage") && !json_is_null(json_object_get(so, "include_usage")) &&
            !json_is_boolean(json_object_get(so, "include_usage")))
            return bad(p, "stream_options.include_usage", "expected a boolean, found %s",
                       type_name(json_object_get(so, "include_usage")));
        p->include_usage = json_is_true(json_object_get(so, "include_usage"));
    }
    /* logprobs: chat takes a boolean and top_logprobs (alternatives per
     * token), completions an integer (the alternatives) */
    p->logprobs = -1;
    if (p->kind == SRV_CHAT) {
        bool want = false, tl_given;
        long long tl = 0;
        MK_TRY(get_bool(p, o, "logprobs", &want));
        MK_TRY(get_int(p, o, "top_logprobs", 0, SRV_MAX_TOP, &tl, &tl_given));
        if (tl_given && !want)
            return bad(p, "top_logprobs", "needs \"logprobs\": true");
        if (want)
            p->logprobs = (int)tl;
    } else {
        long long nlp = -1;
        MK_TRY(get_int(p, o, "logprobs", 0, SRV_MAX_TOP, &nlp, NULL));
        p->logprobs = (int)nlp;
    }
    json_t *st = field(o, "stop");
    if (st) {
        size_t n_st = json_is_array(st) ? json_array_size(st) : 1;
        if (!json_is_string(st) && !json_is_array(st))
            return bad(p, "stop", "expected a string or an array of strings, found %s", type_name(st));
        if (n_st > SRV_MAX_STOP)
            return bad(p, "stop", "at most %d sequences, found %zu", SRV_MAX_STOP, n_st);
        for (size_t i = 0; i < n_st; i++) {
            json_t *s = json_is_array(st) ? json_array_get(st, i) : st;
            char name[32];
            snprintf(name, sizeof name, json_is_array(st) ? "stop[%zu]" : "stop", i);
            const char *t;
            size_t tlen;
            MK_TRY(get_text(p, s, name, &t, &tlen));
            if (tlen == 0 || tlen > SRV_MAX_STOP_LEN)
                return bad(p, name, "must be 1 to %d bytes, found %zu", SRV_MAX_STOP_LEN, tlen);
            p->stop[p->nstop] = t;
            p->stop_len[p->nstop++] = tlen;
        }
    }
    MK_TRY(unsupported(p, o));
    json_t *m = field(o, "model");
    if (m && !json_is_string(m))
        return bad(p, "model", "expected a string, found %s", type_name(m));
    p->model = m ? json_string_value(m) : NULL;
    return MK_OK;
}

/* content: a string, or an array of {"type":"text","text":...} parts
 * (joined). Only assistant messages may omit it. */
static mk_status parse_content(srv_params *p, size_t i, const json_t *msg, const char *role) {
    char name[64];
    snprintf(name, sizeof name, "messages[%zu].content", i);
    json_t *c = field(msg, "content");
    if (!c) {
        if (strcmp(role, "assistant"))
            return bad(p, name, "missing (only an assistant message may have none)");
        p->msgs[i].content = "";
        return MK_OK;
    }
    size_t len;
    if (json_is_string(c))
        return get_text(p, c, name, &p->msgs[i].content, &len);
    if (!json_is_array(c))
        return bad(p, name, "expected a string or an array of content parts, found %s", type_name(c));
    size_t total = 0, np = json_array_size(c);
    for (size_t k = 0; k < np; k++) {
        json_t *part = json_array_get(c, k);
        char pn[96];
        snprintf(pn, sizeof pn, "messages[%zu].content[%zu]", i, k);
        if (!json_is_object(part))
            return bad(p, pn, "expected an object, found %s", type_name(part));
        json_t *ty = json_object_get(part, "type");
        if (!json_is_string(ty) || strcmp(json_string_value(ty), "text"))
            return bad(p, pn, "only parts of \"type\": \"text\" are supported");
        const char *t;
        snprintf(pn + strlen(pn), sizeof pn - strlen(pn), ".text");
        MK_TRY(get_text(p, json_object_get(part, "text") ? json_object_get(part, "text") : json_null(),
                        pn, &t, &len));
        total += len;
    }
    char *buf = mk_malloc(total + 1);
    if (!buf)
        return mk_err(MK_E_NOMEM, "no memory for %zu bytes of %s", total, name);
    size_t off = 0;
    for (size_t k = 0; k < np; k++) {
        json_t *t = json_object_get(json_array_get(c, k), "text");
        memcpy(buf + off, json_string_value(t), json_string_length(t));
        off += json_string_length(t);
    }
    buf[off] = 0;
    p->owned[i] = buf;
    p->msgs[i].content = buf;
    return MK_OK;
}

/* tools: [{"type": "function", "function": {"name", "description"?,
 * "parameters"?}}]; tool_choice "auto" (default), "none", "required" or
 * {"type": "function", "function": {"name"}} (one of the tools; the call is
 * forced by openai.c, srv_toolcall_force). */
static mk_status parse_tools(srv_params *p, const json_t *o) {
    p->parallel_calls = true;
    MK_TRY(get_bool(p, o, "parallel_tool_calls", &p->parallel_calls));
    json_t *t = field(o, "tools"), *tc = field(o, "tool_choice");
    bool none = false;
    if (tc) {
        const char *v = json_string_value(tc);
        json_t *fn = json_is_object(tc) ? json_object_get(tc, "function") : NULL;
        if (v && !strcmp(v, "required")) {
            p->force_call = 1;
        } else if (json_is_object(tc) && json_is_string(json_object_get(tc, "type")) &&
                   !strcmp(json_string_value(json_object_get(tc, "type")), "function") && json_is_object(fn) &&
                   json_is_string(json_object_get(fn, "name"))) {
            p->force_call = 2;
            p->force_name = json_string_value(json_object_get(fn, "name"));
        } else if (!v || (strcmp(v, "none") && strcmp(v, "auto"))) {
            return bad(p, "tool_choice", "expected \"auto\", \"none\", \"required\" or {\"type\": \"function\", "
                       "\"function\": {\"name\"}}");
        }
        none = v && !strcmp(v, "none");
    }
    if (p->force_call && (!t || !json_is_array(t) || json_array_size(t) == 0))
        return bad(p, "tool_choice", "forcing a tool call needs \"tools\"");
    if (!t)
        return MK_OK;
    if (!json_is_array(t))
        return bad(p, "tools", "expected an array, found %s", type_name(t));
    size_t n = json_array_size(t);
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(t, i), *f = json_object_get(x, "function");
        char name[64];
        snprintf(name, sizeof name, "tools[%zu]", i);
        if (!json_is_object(x))
            return bad(p, name, "expected an object, found %s", type_name(x));
        json_t *ty = json_object_get(x, "type");
        if (!json_is_string(ty) || strcmp(json_string_value(ty), "function"))
            return bad(p, name, "only tools of \"type\": \"function\" are supported");
        snprintf(name, sizeof name, "tools[%zu].function", i);
        if (!json_is_object(f))
            return bad(p, name, "expected an object, found %s", f ? type_name(f) : "nothing");
        json_t *nm = json_object_get(f, "name"), *pa = field(f, "parameters");
        snprintf(name, sizeof name, "tools[%zu].function.name", i);
        if (!json_is_string(nm) || json_string_length(nm) == 0)
            return bad(p, name, "expected a non-empty string");
        snprintf(name, sizeof name, "tools[%zu].function.parameters", i);
        if (pa && !json_is_object(pa))
            return bad(p, name, "expected an object (a JSON schema), found %s", type_name(pa));
    }
    if (p->force_call == 2) {
        bool found = false;
        for (size_t i = 0; i < n; i++)
            found |= !strcmp(json_string_value(json_object_get(json_object_get(json_array_get(t, i), "function"), "name")),
                             p->force_name);
        if (!found)
            return bad(p, "tool_choice.function.name", "'%.100s' is not one of the request's tools", p->force_name);
    }
    if (none || n == 0)
        return MK_OK;
    p->tools = t;
    p->tool_json = mk_calloc(n, sizeof *p->tool_json);
    if (!p->tool_json)
        return mk_err(MK_E_NOMEM, "no memory for %zu tools", n);
    for (size_t i = 0; i < n; i++) {
        /* the templates' tojson: Python's separators, the given key order */
        p->tool_json[i] = json_dumps(json_array_get(t, i), JSON_PRESERVE_ORDER);
        if (!p->tool_json[i])
            return mk_err(MK_E_NOMEM, "no memory for tools[%zu]", i);
        p->ntools = i + 1;
    }
    return MK_OK;
}

/* An assistant message's tool_calls: [{"id", "type": "function",
 * "function": {"name", "arguments": JSON text (or an object)}}]. */
static mk_status parse_tool_calls(srv_params *p, size_t i, const json_t *m, size_t *used) {
    json_t *tc = field(m, "tool_calls");
    char name[96];
    snprintf(name, sizeof name, "messages[%zu].tool_calls", i);
    if (!tc)
        return MK_OK;
    if (!json_is_array(tc))
        return bad(p, name, "expected an array, found %s", type_name(tc));
    if (strcmp(p->msgs[i].role, "assistant"))
        return bad(p, name, "only assistant messages carry tool calls");
    size_t n = json_array_size(tc);
    p->mcalls[i].calls = p->tcalls + *used;
    p->mcalls[i].n = n;
    for (size_t k = 0; k < n; k++) {
        json_t *c = json_array_get(tc, k), *f = json_object_get(c, "function");
        mk_chat_tool_call *out = &p->tcalls[*used + k];
        snprintf(name, sizeof name, "messages[%zu].tool_calls[%zu].function", i, k);
        if (!json_is_object(c) || !json_is_object(f))
            return bad(p, name, "expected {\"function\": {\"name\", \"arguments\"}}");
        json_t *nm = json_object_get(f, "name"), *a = json_object_get(f, "arguments"), *id = field(c, "id");
        size_t len;
        snprintf(name, sizeof name, "messages[%zu].tool_calls[%zu].function.name", i, k);
        MK_TRY(get_text(p, nm ? nm : json_null(), name, &out->name, &len));
        snprintf(name, sizeof name, "messages[%zu].tool_calls[%zu].function.arguments", i, k);
        if (json_is_object(a)) {
            char *s = json_dumps(a, JSON_COMPACT | JSON_PRESERVE_ORDER);
            if (!s)
                return mk_err(MK_E_NOMEM, "no memory for %s", name);
            p->tcall_args[*used + k] = s;
            out->arguments = s;
        } else {
            MK_TRY(get_text(p, a ? a : json_null(), name, &out->arguments, &len));
            json_error_t e;
            json_t *chk = json_loadb(out->arguments, len, 0, &e);
            bool obj = json_is_object(chk);
            if (chk)
                json_decref(chk);
            if (!obj)
                return bad(p, name, "expected a JSON object's text");
        }
        if (id) {
            snprintf(name, sizeof name, "messages[%zu].tool_calls[%zu].id", i, k);
            MK_TRY(get_text(p, id, name, &out->id, &len));
        }
    }
    *used += n;
    return MK_OK;
}

/* moekit_test_output (test-only, mk_server_opts.test_output): the server
 * generates this text instead of sampling, so tests of the output parsers
 * run through the whole server with a tiny model. */
static mk_status parse_test_output(srv_params *p, const json_t *o) {
    json_t *t = field(o, "moekit_test_output");
    if (!t)
        return MK_OK;
    return get_text(p, t, "moekit_test_output", &p->test_output, &p->test_output_len);
}

/* chat_template_kwargs (vLLM, llama.cpp): only enable_thinking is read. */
static mk_status parse_template_kwargs(srv_params *p, const json_t *o) {
    json_t *k = field(o, "chat_template_kwargs");
    if (!k)
        return MK_OK;
    if (!json_is_object(k))
        return bad(p, "chat_template_kwargs", "expected an object, found %s", type_name(k));
    json_t *t = field(k, "enable_thinking");
    if (t && !json_is_boolean(t))
        return bad(p, "chat_template_kwargs.enable_thinking", "expected a boolean, found %s", type_name(t));
    p->no_thinking = t && json_is_false(t);
    return MK_OK;
}

static mk_status parse_messages(srv_params *p, const json_t *o) {
    json_t *ms = json_object_get(o, "messages");
    if (!ms || json_is_null(ms))
        return bad(p, "messages", "missing");
    if (!json_is_array(ms))
        return bad(p, "messages", "expected an array, found %s", type_name(ms));
    size_t n = json_array_size(ms);
    if (n == 0)
        return bad(p, "messages", "is empty: give at least one message");
    p->msgs = mk_calloc(n, sizeof *p->msgs);
    p->owned = mk_calloc(n, sizeof *p->owned);
    if (!p->msgs || !p->owned)
        return mk_err(MK_E_NOMEM, "no memory for %zu messages", n);
    p->nmsg = n;
    size_t ncalls = 0, used = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *tc = json_object_get(json_array_get(ms, i), "tool_calls");
        ncalls += json_is_array(tc) ? json_array_size(tc) : 0;
    }
    p->tcalls = mk_calloc(ncalls ? ncalls : 1, sizeof *p->tcalls);
    p->tcall_args = mk_calloc(ncalls ? ncalls : 1, sizeof *p->tcall_args);
    p->mcalls = mk_calloc(n, sizeof *p->mcalls);
    if (!p->tcalls || !p->tcall_args || !p->mcalls)
        return mk_err(MK_E_NOMEM, "no memory for %zu tool calls", ncalls);
    p->ntcalls = ncalls;
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(ms, i);
        char name[64];
        snprintf(name, sizeof name, "messages[%zu]", i);
        if (!json_is_object(m))
            return bad(p, name, "expected an object, found %s", type_name(m));
        json_t *r = json_object_get(m, "role");
        snprintf(name, sizeof name, "messages[%zu].role", i);
        if (!r || !json_is_string(r))
            return bad(p, name, "expected a string, found %s", r ? type_name(r) : "nothing");
        const char *role = json_string_value(r);
        /* OpenAI's "developer" is the system message of newer models */
        if (!strcmp(role, "developer"))
            role = "system";
        if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant") &&
            strcmp(role, "tool"))
            return bad(p, name, "expected system, developer, user, assistant or tool");
        p->msgs[i].role = role;
        MK_TRY(parse_content(p, i, m, role));
        json_t *rc = field(m, "reasoning_content");
        if (rc) {
            size_t len;
            snprintf(name, sizeof name, "messages[%zu].reasoning_content", i);
            MK_TRY(get_text(p, rc, name, &p->msgs[i].reasoning, &len));
        }
        MK_TRY(parse_tool_calls(p, i, m, &used));
        json_t *tid = field(m, "tool_call_id");
        if (tid) {
            size_t len;
            snprintf(name, sizeof name, "messages[%zu].tool_call_id", i);
            MK_TRY(get_text(p, tid, name, &p->mcalls[i].tool_call_id, &len));
        }
    }
    return MK_OK;
}

/* An array of token ids (completion prompt, detokenize). */
static mk_status parse_ids(srv_params *p, const json_t *a, const char *name) {
    size_t n = json_array_size(a);
    p->ids = mk_malloc((n ? n : 1) * sizeof *p->ids);
    if (!p->ids)
        return mk_err(MK_E_NOMEM, "no memory for %zu token ids", n);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX) {
            char nm[64];
            snprintf(nm, sizeof nm, "%s[%zu]", name, i);
            return bad(p, nm, "expected a token id (an integer >= 0), found %s", type_name(v));
        }
        p->ids[i] = (int32_t)json_integer_value(v);
    }
    p->n_ids = n;
    p->has_ids = true;
    return MK_OK;
}

static mk_status parse_prompt(srv_params *p, const json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return bad(p, key, "missing");
    if (json_is_array(v) && json_array_size(v) == 1 && json_is_string(json_array_get(v, 0)))
        v = json_array_get(v, 0); /* ["text"]: one prompt */
    if (json_is_string(v))
        return get_text(p, v, key, &p->prompt, &p->prompt_len);
    if (json_is_array(v) && json_array_size(v) > 1 && json_is_string(json_array_get(v, 0)))
        return bad(p, key, "only one prompt per request is supported, found %zu", json_array_size(v));
    if (json_is_array(v))
        return parse_ids(p, v, key);
    return bad(p, key, "expected a string or an array of token ids, found %s", type_name(v));
}

mk_status srv_params_parse(srv_kind kind, const char *body, size_t len, srv_params *p) {
    memset(p, 0, sizeof *p);
    p->kind = kind;
    mk_sample_params_default(&p->sp);
    p->max_tokens = -1;
    json_error_t je;
    unsigned long mark = mk_json_mark();
    p->root = mk_json_loadb(body, len, JSON_REJECT_DUPLICATES, &je, mark);
    if (!p->root) {
        if (mk_json_nomem(&je, mark))
            return mk_err(MK_E_NOMEM, "no memory to parse a request of %zu bytes", len);
        p->param = "body";
        return mk_err(MK_E_ARG, "body: not valid JSON: %s at line %d column %d", je.text, je.line,
                      je.column);
    }
    if (!json_is_object(p->root))
        return bad(p, "body", "expected a JSON object, found %s", type_name(p->root));
    switch (kind) {
    case SRV_CHAT:
        MK_TRY(parse_sampling(p, p->root));
        MK_TRY(parse_template_kwargs(p, p->root));
        MK_TRY(parse_tools(p, p->root));
        MK_TRY(parse_test_output(p, p->root));
        return parse_messages(p, p->root);
    case SRV_COMPLETION:
        MK_TRY(parse_sampling(p, p->root));
        MK_TRY(parse_test_output(p, p->root));
        return parse_prompt(p, p->root, "prompt");
    case SRV_TOKENIZE:
        MK_TRY(get_bool(p, p->root, "add_special", &p->add_special));
        return parse_prompt(p, p->root, "content");
    case SRV_DETOKENIZE: {
        json_t *t = json_object_get(p->root, "tokens");
        if (!t || !json_is_array(t))
            return bad(p, "tokens", "expected an array of token ids, found %s",
                       t ? type_name(t) : "nothing");
        return parse_ids(p, t, "tokens");
    }
    case SRV_MESSAGES:
    case SRV_COUNT_TOKENS:
    case SRV_RESPONSES: break; /* api_anthropic.c, api_responses.c translate them into SRV_CHAT first */
    }
    return mk_err(MK_E_ARG, "unknown request kind");
}

void srv_params_free(srv_params *p) {
    free(p->force_pre);
    mk_grammar_free(p->grammar);
    for (size_t i = 0; p->tool_json && i < p->ntools; i++)
        free(p->tool_json[i]);
    free(p->tool_json);
    for (size_t i = 0; p->tcall_args && i < p->ntcalls; i++)
        free(p->tcall_args[i]);
    free(p->tcall_args);
    free(p->tcalls);
    free(p->mcalls);
    for (size_t i = 0; p->owned && i < p->nmsg; i++)
        free(p->owned[i]);
    free(p->owned);
    free(p->msgs);
    free(p->ids);
    if (p->root)
        json_decref(p->root);
    memset(p, 0, sizeof *p);
}
