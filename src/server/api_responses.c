/* OpenAI's Responses API (POST /v1/responses), the one Codex CLI speaks,
 * over the same slots, templates, prompt cache and parsers as chat
 * completions: the request is translated into a chat completions request
 * (instructions -> a system message; input items -> messages: message
 * items with input_text / output_text parts, function_call items -> an
 * assistant message's tool_calls, function_call_output items -> tool
 * messages, reasoning items -> the next assistant turn's reasoning; flat
 * function tools -> chat tools; max_output_tokens -> max_tokens; reasoning
 * effort "none" / "minimal" -> enable_thinking false) and validated by
 * request.c. The answer, split by chatparse.c, comes back as output items
 * (reasoning with reasoning_text content, message with one output_text
 * part, function_call with call_id / name / arguments) in a response
 * object, or as the Responses SSE events, each with its sequence_number:
 * response.created, response.in_progress, then per item
 * output_item.added, content_part.added, output_text.delta /
 * reasoning_text.delta, output_text.done / reasoning_text.done,
 * content_part.done, output_item.done (function calls:
 * function_call_arguments.delta / .done), then response.completed
 * (response.incomplete at max_output_tokens, response.failed on error).
 * The API is a closed set of fields: an unknown one is refused (400 naming
 * it), as is every field that would change the answer if it were ignored
 * (previous_response_id: nothing is stored; background, conversation,
 * prompt, non-function tools, strict tools). text.format json_object /
 * json_schema is enforced as chat's response_format (respfmt.c). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/json_err.h"
#include "server/srv_impl.h"

static void bad(srv_reply *r, const char *param, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void bad(srv_reply *r, const char *param, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    srv_error(r, 400, "invalid_request_error", param, "%s: %s", param, msg);
}

/* The field, or NULL when absent or null. */
static json_t *field(const json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return v && !json_is_null(v) ? v : NULL;
}

static bool is_str(const json_t *v, const char *s) { return json_is_string(v) && !strcmp(json_string_value(v), s); }

/* ---- request translation ------------------------------------------------------ */

/* Text of a string or of an array of parts whose type is one of types[]
 * (each {"type", "text"}), joined; NULL with r set. */
static json_t *parts_text(const json_t *c, const char *name, const char *const *types, size_t nt, srv_reply *r) {
    if (json_is_string(c))
        return json_incref((json_t *)c);
    if (!json_is_array(c)) {
        bad(r, name, "expected a string or an array of content parts, found %s", mk_json_type_name(c));
        return NULL;
    }
    size_t total = 0, i;
    json_t *b;
    json_array_foreach(c, i, b) {
        const char *ty = json_string_value(json_object_get(b, "type"));
        bool ok = false;
        for (size_t k = 0; ty && k < nt; k++)
            ok |= !strcmp(ty, types[k]);
        char pn[128];
        snprintf(pn, sizeof pn, "%s[%zu]", name, i);
        if (!ok) {
            bad(r, pn, "parts of type '%s' are not supported here (only %s%s%s)", ty ? ty : "(none)", types[0],
                nt > 1 ? " or " : "", nt > 1 ? types[1] : "");
            return NULL;
        }
        if (!json_is_string(json_object_get(b, "text"))) {
            bad(r, pn, "expected a string \"text\"");
            return NULL;
        }
        total += json_string_length(json_object_get(b, "text"));
    }
    char *buf = mk_malloc(total + 1);
    if (!buf) {
        srv_error(r, 503, "server_error", NULL, "out of memory for %zu bytes of %s", total, name);
        return NULL;
    }
    size_t off = 0;
    json_array_foreach(c, i, b) {
        json_t *t = json_object_get(b, "text");
        memcpy(buf + off, json_string_value(t), json_string_length(t));
        off += json_string_length(t);
    }
    json_t *j = json_stringn(buf, off);
    free(buf);
    if (!j)
        bad(r, name, "not valid UTF-8");
    return j;
}

/* The assistant message function_call items attach to: the last message
 * when it is an assistant turn, else a new empty one. */
static json_t *assistant_turn(json_t *msgs) {
    json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
    if (last && is_str(json_object_get(last, "role"), "assistant"))
        return last;
    json_t *m = json_pack("{s:s,s:s}", "role", "assistant", "content", "");
    json_array_append_new(msgs, m);
    return m;
}

/* One input item -> messages appended to msgs; a reasoning item's text
 * waits in *think for the next assistant turn. */
static bool input_item(const json_t *it, size_t i, json_t *msgs, json_t **think, srv_reply *r) {
    char name[96];
    snprintf(name, sizeof name, "input[%zu]", i);
    if (!json_is_object(it)) {
        bad(r, name, "expected an object, found %s", mk_json_type_name(it));
        return false;
    }
    json_t *tyv = field(it, "type");
    const char *ty = tyv ? json_string_value(tyv) : "message"; /* EasyInputMessage: no type */
    if (!ty) {
        bad(r, name, "\"type\": expected a string");
        return false;
    }
    if (!strcmp(ty, "message")) {
        const char *role = json_string_value(json_object_get(it, "role"));
        if (!role || (strcmp(role, "user") && strcmp(role, "assistant") && strcmp(role, "system") &&
                      strcmp(role, "developer"))) {
            bad(r, name, "\"role\": expected user, assistant, system or developer");
            return false;
        }
        bool asst = !strcmp(role, "assistant");
        static const char *const in_types[] = {"input_text"};
        static const char *const out_types[] = {"output_text", "refusal"};
        char cn[128];
        snprintf(cn, sizeof cn, "input[%zu].content", i);
        json_t *c = json_object_get(it, "content");
        if (!c) {
            bad(r, cn, "missing");
            return false;
        }
        json_t *t;
        if (asst && json_is_array(c)) { /* an earlier answer: output_text (refusal parts have "refusal") */
            json_t *cc = json_array();
            size_t k;
            json_t *b;
            json_array_foreach(c, k, b) {
                if (is_str(json_object_get(b, "type"), "refusal")) /* its text is under "refusal" */
                    json_array_append_new(cc, json_pack("{s:s,s:O?}", "type", "refusal", "text",
                                                        json_object_get(b, "refusal")));
                else
                    json_array_append(cc, b);
            }
            t = parts_text(cc, cn, out_types, 2, r);
            json_decref(cc);
        } else {
            t = parts_text(c, cn, asst ? out_types : in_types, 1, r);
        }
        if (!t)
            return false;
        json_t *m = json_pack("{s:s,s:o}", "role", asst ? "assistant" : !strcmp(role, "user") ? "user" : "system",
                              "content", t);
        if (asst && *think) {
            json_object_set_new(m, "reasoning_content", *think);
            *think = NULL;
        }
        json_array_append_new(msgs, m);
        return true;
    }
    if (!strcmp(ty, "function_call")) {
        json_t *id = field(it, "call_id"), *nm = field(it, "name"), *args = field(it, "arguments");
        if (!json_is_string(id) || !json_is_string(nm) || !json_is_string(args)) {
            bad(r, name, "a function_call item needs strings \"call_id\", \"name\" and \"arguments\"");
            return false;
        }
        json_error_t e;
        json_t *chk = json_loadb(json_string_value(args), json_string_length(args), 0, &e);
        bool obj = json_is_object(chk);
        if (chk)
            json_decref(chk);
        if (!obj) {
            snprintf(name, sizeof name, "input[%zu].arguments", i);
            bad(r, name, "expected a JSON object's text");
            return false;
        }
        json_t *m = assistant_turn(msgs);
        if (*think) {
            json_object_set_new(m, "reasoning_content", *think);
            *think = NULL;
        }
        json_t *calls = json_object_get(m, "tool_calls");
        if (!calls) {
            calls = json_array();
            json_object_set_new(m, "tool_calls", calls);
        }
        json_array_append_new(calls, json_pack("{s:O,s:s,s:{s:O,s:O}}", "id", id, "type", "function", "function",
                                               "name", nm, "arguments", args));
        return true;
    }
    if (!strcmp(ty, "function_call_output")) {
        json_t *id = field(it, "call_id"), *out = field(it, "output");
        char on[128];
        snprintf(on, sizeof on, "input[%zu].output", i);
        static const char *const types[] = {"input_text"};
        if (!json_is_string(id)) {
            bad(r, name, "a function_call_output item needs a string \"call_id\"");
            return false;
        }
        json_t *t = out ? parts_text(out, on, types, 1, r) : NULL;
        if (!t) {
            if (!out)
                bad(r, on, "missing");
            return false;
        }
        json_array_append_new(msgs, json_pack("{s:s,s:O,s:o}", "role", "tool", "tool_call_id", id, "content", t));
        return true;
    }
    if (!strcmp(ty, "reasoning")) {
        /* our reasoning items carry the text as reasoning_text content;
         * encrypted_content (another server's opaque state) cannot be read */
        if (field(it, "encrypted_content")) {
            snprintf(name, sizeof name, "input[%zu].encrypted_content", i);
            bad(r, name, "encrypted reasoning from another server cannot be used here");
            return false;
        }
        char cn[128];
        snprintf(cn, sizeof cn, "input[%zu].content", i);
        static const char *const types[] = {"reasoning_text"};
        json_t *c = field(it, "content");
        json_t *t = c ? parts_text(c, cn, types, 1, r) : json_string("");
        if (!t)
            return false;
        if (*think)
            json_decref(*think); /* one per turn: the last one is the turn's reasoning */
        *think = t;
        return true;
    }
    bad(r, name, "input items of type '%s' are not supported (message, function_call, function_call_output, "
                 "reasoning)", ty);
    return false;
}

/* Fields the API defines that are read, or accepted with no effect on the
 * answer (see docs/SERVER_API.md); anything else is refused. */
static const char *const known[] = {
    "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "max_output_tokens",
    "temperature", "top_p", "stream", "stream_options", "reasoning", "previous_response_id", "store",
    "include", "metadata", "user", "safety_identifier", "prompt_cache_key", "service_tier", "truncation",
    "text", "background", "conversation", "prompt", "moekit_test_output"};

/* The chat completions request of a Responses one, or NULL with r set. */
static json_t *translate(const json_t *a, srv_reply *r) {
    if (!json_is_object(a)) {
        bad(r, "body", "expected a JSON object, found %s", mk_json_type_name(a));
        return NULL;
    }
    for (void *it = json_object_iter((json_t *)a); it; it = json_object_iter_next((json_t *)a, it)) {
        const char *k = json_object_iter_key(it);
        bool ok = false;
        for (size_t i = 0; i < sizeof known / sizeof *known; i++)
            ok |= !strcmp(k, known[i]);
        if (!ok) {
            srv_error(r, 400, "invalid_request_error", k, "%s: not a field this server supports on /v1/responses", k);
            return NULL;
        }
    }
    static const char *const refused[][2] = {
        {"previous_response_id", "responses are not stored here: send the whole conversation as input items"},
        {"background", "background responses are not supported"},
        {"conversation", "conversations are not stored here: send the whole conversation as input items"},
        {"prompt", "stored prompt templates are not supported"}};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        json_t *x = field(a, refused[i][0]);
        if (x && !(json_is_false(x) && !strcmp(refused[i][0], "background"))) {
            bad(r, refused[i][0], "%s", refused[i][1]);
            return NULL;
        }
    }
    json_t *x;
    if ((x = field(a, "store")) && !json_is_boolean(x)) {
        bad(r, "store", "expected a boolean, found %s", mk_json_type_name(x));
        return NULL;
    }
    if ((x = field(a, "truncation")) && !is_str(x, "disabled")) {
        bad(r, "truncation", "only \"disabled\" is supported (a prompt longer than the context is refused)");
        return NULL;
    }
    if ((x = field(a, "include"))) {
        size_t i;
        json_t *e;
        if (!json_is_array(x)) {
            bad(r, "include", "expected an array, found %s", mk_json_type_name(x));
            return NULL;
        }
        json_array_foreach(x, i, e) {
            if (!is_str(e, "reasoning.encrypted_content")) {
                char n[32];
                snprintf(n, sizeof n, "include[%zu]", i);
                bad(r, n, "only \"reasoning.encrypted_content\" is accepted (reasoning items carry their text instead)");
                return NULL;
            }
        }
    }
    if ((x = field(a, "text"))) {
        json_t *f = field(x, "format"), *vb = field(x, "verbosity");
        if (!json_is_object(x)) {
            bad(r, "text", "expected an object, found %s", mk_json_type_name(x));
            return NULL;
        }
        if (f && !json_is_object(f)) { /* compiled after translation (srv_handle_responses) */
            bad(r, "text.format", "expected an object, found %s", mk_json_type_name(f));
            return NULL;
        }
        if (vb && !is_str(vb, "low") && !is_str(vb, "medium") && !is_str(vb, "high")) {
            bad(r, "text.verbosity", "expected low, medium or high");
            return NULL;
        }
    }
    static const char *const objects[] = {"stream_options", "metadata"};
    static const char *const strings[] = {"user", "safety_identifier", "prompt_cache_key", "service_tier"};
    for (size_t i = 0; i < sizeof objects / sizeof *objects; i++)
        if ((x = field(a, objects[i])) && !json_is_object(x)) {
            bad(r, objects[i], "expected an object, found %s", mk_json_type_name(x));
            return NULL;
        }
    for (size_t i = 0; i < sizeof strings / sizeof *strings; i++)
        if ((x = field(a, strings[i])) && !json_is_string(x)) {
            bad(r, strings[i], "expected a string, found %s", mk_json_type_name(x));
            return NULL;
        }
    if ((x = field(a, "max_output_tokens")) && !json_is_integer(x)) {
        bad(r, "max_output_tokens", "expected an integer, found %s", mk_json_type_name(x));
        return NULL;
    }
    if (x && (json_integer_value(x) < 1 || json_integer_value(x) > (1 << 24))) {
        bad(r, "max_output_tokens", "must be in [1, %d], found %lld", 1 << 24, (long long)json_integer_value(x));
        return NULL;
    }

    json_t *o = json_object(), *msgs = json_array(), *think = NULL;
    json_object_set_new(o, "messages", msgs);
    if ((x = field(a, "instructions"))) {
        if (!json_is_string(x)) {
            bad(r, "instructions", "expected a string, found %s", mk_json_type_name(x));
            goto fail;
        }
        json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "system", "content", x));
    }
    json_t *in = field(a, "input");
    if (json_is_string(in)) {
        json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "user", "content", in));
    } else if (json_is_array(in)) {
        for (size_t i = 0; i < json_array_size(in); i++)
            if (!input_item(json_array_get(in, i), i, msgs, &think, r))
                goto fail;
    } else {
        bad(r, "input", "expected a string or an array of input items, found %s", mk_json_type_name(in));
        goto fail;
    }
    if (think) { /* reasoning with no answer after it: nothing to attach it to */
        json_decref(think);
        think = NULL;
    }
    if (!json_array_size(msgs)) {
        bad(r, "input", "is empty: give at least one message");
        goto fail;
    }
    if ((x = field(a, "max_output_tokens")))
        json_object_set(o, "max_tokens", x);
    static const char *const same[] = {"model", "temperature", "top_p", "stream", "parallel_tool_calls",
                                       "moekit_test_output"};
    for (size_t i = 0; i < sizeof same / sizeof *same; i++)
        if (field(a, same[i]))
            json_object_set(o, same[i], field(a, same[i]));
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
            if (!json_is_object(t) || !is_str(json_object_get(t, "type"), "function")) {
                const char *ty = json_string_value(json_object_get(t, "type"));
                bad(r, name, "only function tools ({\"type\": \"function\", \"name\", \"parameters\"}) are "
                    "supported%s%s", ty ? ", found type " : "", ty ? ty : "");
                goto fail;
            }
            json_t *nm = json_object_get(t, "name"), *pa = field(t, "parameters");
            if (!json_is_string(nm) || json_string_length(nm) == 0) {
                snprintf(name, sizeof name, "tools[%zu].name", i);
                bad(r, name, "expected a non-empty string");
                goto fail;
            }
            if (pa && !json_is_object(pa)) {
                snprintf(name, sizeof name, "tools[%zu].parameters", i);
                bad(r, name, "expected an object (a JSON schema), found %s", mk_json_type_name(pa));
                goto fail;
            }
            if (json_is_true(json_object_get(t, "strict"))) {
                snprintf(name, sizeof name, "tools[%zu].strict", i);
                bad(r, name, "arguments are not constrained to the schema here: send \"strict\": false");
                goto fail;
            }
            json_t *f = json_pack("{s:O?}", "name", json_object_get(t, "name"));
            if (field(t, "description"))
                json_object_set(f, "description", field(t, "description"));
            if (field(t, "parameters"))
                json_object_set(f, "parameters", field(t, "parameters"));
            json_array_append_new(ot, json_pack("{s:s,s:o}", "type", "function", "function", f));
        }
    }
    json_t *tc = field(a, "tool_choice");
    if (tc) {
        /* "auto" / "none" / "required", or {"type": "function", "name"}: chat's shape */
        if (json_is_string(tc)) {
            json_object_set(o, "tool_choice", tc);
        } else if (json_is_object(tc) && is_str(json_object_get(tc, "type"), "function") &&
                   json_is_string(json_object_get(tc, "name"))) {
            json_object_set_new(o, "tool_choice", json_pack("{s:s,s:{s:O}}", "type", "function", "function", "name",
                                                            json_object_get(tc, "name")));
        } else {
            bad(r, "tool_choice", "expected \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"name\"}");
            goto fail;
        }
    }
    json_t *re = field(a, "reasoning");
    if (re) {
        json_t *ef = field(re, "effort"), *sm = field(re, "summary"), *gs = field(re, "generate_summary");
        const char *e = json_string_value(ef);
        if (!json_is_object(re) || (ef && (!e || (strcmp(e, "none") && strcmp(e, "minimal") && strcmp(e, "low") &&
                                                  strcmp(e, "medium") && strcmp(e, "high"))))) {
            bad(r, "reasoning.effort", "expected none, minimal, low, medium or high");
            goto fail;
        }
        if ((sm && !json_is_string(sm)) || (gs && !json_is_string(gs))) {
            bad(r, "reasoning.summary", "expected auto, concise or detailed");
            goto fail;
        }
        /* a template thinks or not: none / minimal turn thinking off */
        if (e && (!strcmp(e, "none") || !strcmp(e, "minimal")))
            json_object_set_new(o, "chat_template_kwargs", json_pack("{s:b}", "enable_thinking", 0));
    }
    return o;
fail:
    if (think)
        json_decref(think);
    json_decref(o);
    return NULL;
}

/* ---- the response object ----------------------------------------------------------- */

/* What a response object repeats of its request. */
typedef struct resp_echo {
    json_t *fields;            /* instructions, tools, tool_choice, ... as the response shows them */
    char id[48];
    long long created;
} resp_echo;

/* e[k] = a[k], or dflt (consumed) when a has none. */
static void echo(json_t *e, const json_t *a, const char *k, json_t *dflt) {
    json_t *v = field(a, k);
    if (v) {
        json_object_set(e, k, v);
        if (dflt)
            json_decref(dflt);
    } else {
        json_object_set_new(e, k, dflt);
    }
}

static json_t *echo_fields(mk_server *s, const json_t *a) {
    json_t *e = json_object();
    json_t *pt = field(a, "parallel_tool_calls");
    json_object_set_new(e, "model", json_string(s->alias));
    echo(e, a, "instructions", json_null());
    echo(e, a, "max_output_tokens", json_null());
    echo(e, a, "temperature", json_real(1.0));
    echo(e, a, "top_p", json_real(1.0));
    echo(e, a, "tool_choice", json_string("auto"));
    echo(e, a, "tools", json_array());
    json_object_set_new(e, "parallel_tool_calls", json_boolean(!pt || json_is_true(pt)));
    json_object_set_new(e, "previous_response_id", json_null());
    echo(e, a, "reasoning", json_pack("{s:n,s:n}", "effort", "summary"));
    json_object_set_new(e, "store", json_false()); /* nothing is kept */
    json_t *tx = field(a, "text");
    if (field(tx, "format")) /* the format as asked (translate checked it is an object) */
        json_object_set_new(e, "text", json_pack("{s:O}", "format", field(tx, "format")));
    else
        json_object_set_new(e, "text", json_pack("{s:{s:s}}", "format", "type", "text"));
    json_object_set_new(e, "truncation", json_string("disabled"));
    echo(e, a, "metadata", json_object());
    return e;
}

static json_t *usage_json(const srv_job *j) {
    return json_pack("{s:I,s:{s:I},s:I,s:{s:I},s:I}", "input_tokens", (json_int_t)j->np, "input_tokens_details",
                     "cached_tokens", (json_int_t)j->n_cached, "output_tokens", (json_int_t)j->n_gen,
                     "output_tokens_details", "reasoning_tokens", (json_int_t)0, "total_tokens",
                     (json_int_t)(j->np + j->n_gen));
}

/* The response object: status in_progress (no usage yet), completed,
 * incomplete (max_output_tokens) or failed (err). output is consumed. */
static json_t *response_json(const resp_echo *re, const char *status, json_t *output, json_t *usage,
                             const char *err) {
    json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:n,s:n,s:o,s:o}", "id", re->id, "object", "response", "created_at",
                          (json_int_t)re->created, "status", status, "error", "incomplete_details", "output",
                          output ? output : json_array(), "usage", usage ? usage : json_null());
    if (!o)
        return NULL;
    json_object_update(o, re->fields);
    if (!strcmp(status, "incomplete"))
        json_object_set_new(o, "incomplete_details", json_pack("{s:s}", "reason", "max_output_tokens"));
    if (err)
        json_object_set_new(o, "error", json_pack("{s:s,s:s}", "code", "server_error", "message", err));
    return o;
}

static const char *final_status(const srv_job *j) {
    return j->finish == SRV_FIN_LENGTH ? "incomplete"
           : j->finish == SRV_FIN_ERROR || j->finish == SRV_FIN_CANCEL ? "failed"
                                                                       : "completed";
}

/* Output items; ids are "<prefix>_<response id>_<output index>". */
static void item_id(char *out, size_t n, const char *prefix, const resp_echo *re, size_t k) {
    snprintf(out, n, "%s_%s_%zu", prefix, re->id + 5, k);
}

static json_t *reasoning_item(const char *id, const char *t, size_t n, const char *status) {
    json_t *c = t ? json_pack("[{s:s,s:s%}]", "type", "reasoning_text", "text", t, n) : json_array();
    return json_pack("{s:s,s:s,s:[],s:o,s:s}", "id", id, "type", "reasoning", "summary", "content", c, "status", status);
}

static json_t *text_part(const char *t, size_t n) {
    return json_pack("{s:s,s:s%,s:[],s:[]}", "type", "output_text", "text", t ? t : "", t ? n : 0, "annotations",
                     "logprobs");
}

static json_t *message_item(const char *id, const char *t, size_t n, const char *status) {
    return json_pack("{s:s,s:s,s:s,s:s,s:o}", "id", id, "type", "message", "role", "assistant", "status", status,
                     "content", t ? json_pack("[o]", text_part(t, n)) : json_array());
}

static json_t *call_item(const char *id, const char *call_id, const char *name, const char *args, const char *status) {
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "id", id, "type", "function_call", "status", status, "call_id",
                     call_id, "name", name, "arguments", args);
}

/* The non-streamed answer of a finished job (server mutex not held). */
static void final_response(mk_server *s, srv_job *j, srv_chatout *co, const resp_echo *re, srv_reply *r) {
    unsigned long mark = mk_json_mark();
    srv_parsed p;
    pthread_mutex_lock(&s->mu);
    mk_status st = srv_chatout_parse(co, j->text ? j->text : "", j->len, true, &p);
    json_t *u = usage_json(j);
    const char *status = final_status(j);
    pthread_mutex_unlock(&s->mu);
    if (st != MK_OK) {
        if (u)
            json_decref(u);
        srv_error(r, 503, "server_error", NULL, "out of memory building the response");
        return;
    }
    size_t nc = !co->parallel && p.ncalls > 1 ? 1 : p.ncalls, k = 0;
    json_t *out = json_array();
    char id[96];
    if (p.rlen) {
        item_id(id, sizeof id, "rs", re, k++);
        json_array_append_new(out, reasoning_item(id, p.reasoning, p.rlen, "completed"));
    }
    if (p.clen || !nc) { /* an empty answer is one empty message */
        item_id(id, sizeof id, "msg", re, k++);
        json_array_append_new(out, message_item(id, p.content ? p.content : "", p.clen, status));
    }
    for (size_t i = 0; i < nc; i++) {
        char cid[96];
        item_id(id, sizeof id, "fc", re, k++);
        snprintf(cid, sizeof cid, "%s_%zu", co->call_id, i);
        json_array_append_new(out, call_item(id, cid, p.calls[i].name, p.calls[i].args, "completed"));
    }
    srv_parsed_free(&p);
    srv_reply_json(r, 200, response_json(re, status, out, u, NULL), mark);
}

/* ---- SSE ------------------------------------------------------------------------- */

typedef struct resp_stream {
    resp_echo re;
    long long seq;             /* the next event's sequence_number */
    json_t *output;            /* the finished items, for response.completed */
    int open;                  /* the open item: 0 none, 1 reasoning, 2 message */
    char open_id[96];
    char *text;                /* the open item's text so far */
    size_t len, cap;
} resp_stream;

static void rs_free(void *p) {
    resp_stream *x = p;
    if (!x)
        return;
    if (x->re.fields)
        json_decref(x->re.fields);
    if (x->output)
        json_decref(x->output);
    free(x->text);
    free(x);
}

/* One event: o (consumed) gets its type and sequence_number. */
static bool ev(srv_stream *st, const char *type, json_t *o, unsigned long mark) {
    resp_stream *x = st->ext;
    if (!o)
        return false;
    json_object_set_new(o, "type", json_string(type));
    json_object_set_new(o, "sequence_number", json_integer(x->seq++));
    return srv_sse(st, type, o, mark);
}

static bool item_event(srv_stream *st, const char *type, json_t *item, unsigned long mark) {
    resp_stream *x = st->ext;
    return item && ev(st, type, json_pack("{s:I,s:o}", "output_index", (json_int_t)json_array_size(x->output),
                                          "item", item), mark);
}

/* Close the open reasoning or message item (status: the item's). */
static bool item_close(srv_stream *st, const char *status, unsigned long mark) {
    resp_stream *x = st->ext;
    if (!x->open)
        return true;
    json_int_t oi = (json_int_t)json_array_size(x->output);
    const char *t = x->text ? x->text : "";
    bool msg = x->open == 2;
    x->open = 0;
    json_t *done = json_pack("{s:s,s:I,s:i,s:s%}", "item_id", x->open_id, "output_index", oi, "content_index", 0, "text",
                             t, x->len);
    if (msg && done)
        json_object_set_new(done, "logprobs", json_array());
    json_t *part = msg ? text_part(t, x->len) : json_pack("{s:s,s:s%}", "type", "reasoning_text", "text", t, x->len);
    json_t *item = msg ? message_item(x->open_id, t, x->len, status) : reasoning_item(x->open_id, t, x->len, status);
    x->len = 0;
    bool ok = ev(st, msg ? "response.output_text.done" : "response.reasoning_text.done", done, mark) && part &&
              ev(st, "response.content_part.done",
                 json_pack("{s:s,s:I,s:i,s:O}", "item_id", x->open_id, "output_index", oi, "content_index", 0, "part",
                           part), mark) &&
              item && item_event(st, "response.output_item.done", json_incref(item), mark);
    if (part)
        json_decref(part);
    if (ok)
        return !json_array_append_new(x->output, item);
    if (item)
        json_decref(item);
    return false;
}

/* Open an item of kind (1 reasoning, 2 message), closing another. */
static bool item_open(srv_stream *st, int kind, unsigned long mark) {
    resp_stream *x = st->ext;
    if (x->open == kind)
        return true;
    if (!item_close(st, "completed", mark))
        return false;
    size_t k = json_array_size(x->output);
    item_id(x->open_id, sizeof x->open_id, kind == 1 ? "rs" : "msg", &x->re, k);
    x->open = kind;
    x->len = 0;
    if (!item_event(st, "response.output_item.added",
                    kind == 1 ? reasoning_item(x->open_id, NULL, 0, "in_progress")
                              : message_item(x->open_id, NULL, 0, "in_progress"), mark))
        return false;
    json_t *part = kind == 1 ? json_pack("{s:s,s:s}", "type", "reasoning_text", "text", "") : text_part("", 0);
    return part && ev(st, "response.content_part.added",
                      json_pack("{s:s,s:I,s:i,s:o}", "item_id", x->open_id, "output_index", (json_int_t)k,
                                "content_index", 0, "part", part), mark);
}

/* Text of kind (1 reasoning, 2 message) into the open item of that kind. */
static bool item_text(srv_stream *st, int kind, const char *t, size_t n, unsigned long mark) {
    resp_stream *x = st->ext;
    if (!item_open(st, kind, mark))
        return false;
    if (x->len + n + 1 > x->cap) {
        size_t c = x->cap ? x->cap : 256;
        while (c < x->len + n + 1)
            c *= 2;
        char *g = mk_realloc(x->text, c);
        if (!g)
            return false;
        x->text = g;
        x->cap = c;
    }
    memcpy(x->text + x->len, t, n);
    x->len += n;
    x->text[x->len] = 0;
    json_t *d = json_pack("{s:s,s:I,s:i,s:s%}", "item_id", x->open_id, "output_index",
                          (json_int_t)json_array_size(x->output), "content_index", 0, "delta", t, n);
    if (d && kind == 2)
        json_object_set_new(d, "logprobs", json_array());
    return ev(st, kind == 1 ? "response.reasoning_text.delta" : "response.output_text.delta", d, mark);
}

/* A whole function call (chatout.c sends each call once its block closed). */
static bool call_events(srv_stream *st, const json_t *tc, unsigned long mark) {
    resp_stream *x = st->ext;
    if (!item_close(st, "completed", mark))
        return false;
    json_t *f = json_object_get(tc, "function");
    const char *cid = json_string_value(json_object_get(tc, "id")), *nm = json_string_value(json_object_get(f, "name")),
               *args = json_string_value(json_object_get(f, "arguments"));
    if (!cid || !nm || !args)
        return false;
    size_t k = json_array_size(x->output);
    char id[96];
    item_id(id, sizeof id, "fc", &x->re, k);
    json_t *item = call_item(id, cid, nm, args, "completed");
    bool ok = item_event(st, "response.output_item.added", call_item(id, cid, nm, "", "in_progress"), mark) &&
              ev(st, "response.function_call_arguments.delta",
                 json_pack("{s:s,s:I,s:s}", "item_id", id, "output_index", (json_int_t)k, "delta", args), mark) &&
              ev(st, "response.function_call_arguments.done",
                 json_pack("{s:s,s:I,s:s,s:s}", "item_id", id, "output_index", (json_int_t)k, "name", nm, "arguments",
                           args), mark) &&
              item && item_event(st, "response.output_item.done", json_incref(item), mark);
    if (ok)
        return !json_array_append_new(x->output, item);
    if (item)
        json_decref(item);
    return false;
}

static bool delta_events(srv_stream *st, json_t *d, unsigned long mark) {
    bool ok = true;
    json_t *rc = json_object_get(d, "reasoning_content"), *c = json_object_get(d, "content");
    if (rc)
        ok = item_text(st, 1, json_string_value(rc), json_string_length(rc), mark);
    if (ok && c)
        ok = item_text(st, 2, json_string_value(c), json_string_length(c), mark);
    size_t i;
    json_t *tc;
    json_array_foreach(json_object_get(d, "tool_calls"), i, tc) {
        if (ok)
            ok = call_events(st, tc, mark);
    }
    return ok;
}

static bool resp_next(srv_stream *st, srv_alive_fn alive, void *ctx, bool *gone) {
    mk_server *s = st->s;
    srv_job *j = st->j;
    resp_stream *x = st->ext;
    unsigned long mark = mk_json_mark();
    switch (st->state) {
    case 0: {
        st->state = 1;
        bool ok = ev(st, "response.created", json_pack("{s:o}", "response", response_json(&x->re, "in_progress", NULL,
                                                                                            NULL, NULL)), mark) &&
                  ev(st, "response.in_progress", json_pack("{s:o}", "response", response_json(&x->re, "in_progress",
                                                                                               NULL, NULL, NULL)), mark);
        if (ok)
            return true;
        st->state = 5;
        return false;
    }
    case 1:
        return srv_stream_content(st, alive, ctx, gone, delta_events, mark);
    case 2: {
        pthread_mutex_lock(&s->mu);
        const char *status = final_status(j);
        json_t *u = usage_json(j);
        char err[256];
        snprintf(err, sizeof err, "%s", j->finish == SRV_FIN_ERROR ? j->err : "cancelled (the server is shutting down)");
        pthread_mutex_unlock(&s->mu);
        st->state = 5;
        bool failed = !strcmp(status, "failed");
        /* an empty answer is one empty message */
        bool ok = failed || ((json_array_size(x->output) || x->open || item_open(st, 2, mark)) &&
                             item_close(st, status, mark));
        if (!ok) {
            if (u)
                json_decref(u);
            return false;
        }
        json_t *resp = response_json(&x->re, status, json_incref(x->output), u, failed ? err : NULL);
        return ev(st, failed ? "response.failed" : !strcmp(status, "incomplete") ? "response.incomplete"
                                                                                  : "response.completed",
                  resp ? json_pack("{s:o}", "response", resp) : NULL, mark);
    }
    default: return false;
    }
}

/* ---- the endpoint -------------------------------------------------------------- */

/* An error from the chat completions path names chat's fields: name the
 * request's own instead (messages -> input, max_tokens -> max_output_tokens,
 * tool_choice.function.name -> tool_choice.name). */
static void rename_param(srv_reply *r) {
    json_error_t e;
    json_t *o = r->body && r->code == 400 ? json_loadb(r->body, r->len, 0, &e) : NULL;
    json_t *er = json_object_get(o, "error");
    const char *pm = json_string_value(json_object_get(er, "param"));
    const char *to = !pm                                       ? NULL
                     : !strcmp(pm, "max_tokens")                 ? "max_output_tokens"
                     : !strcmp(pm, "messages")                   ? "input"
                     : !strcmp(pm, "tool_choice.function.name") ? "tool_choice.name"
                                                                 : NULL;
    char *t = NULL;
    if (to && !json_object_set_new(er, "param", json_string(to)))
        t = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (o)
        json_decref(o);
    if (t) {
        free(r->body);
        r->body = t;
        r->len = strlen(t);
    }
}

void srv_handle_responses(mk_server *s, const char *body, size_t len, srv_reply *r, srv_alive_fn alive,
                          void *alive_ctx) {
    json_error_t je;
    unsigned long mark = mk_json_mark();
    json_t *a = mk_json_loadb(body, len, JSON_REJECT_DUPLICATES, &je, mark);
    if (!a) {
        if (mk_json_nomem(&je, mark))
            srv_error(r, 503, "server_error", NULL, "no memory to parse a request of %zu bytes", len);
        else
            srv_error(r, 400, "invalid_request_error", "body", "body: not valid JSON: %s at line %d column %d",
                      je.text, je.line, je.column);
        return;
    }
    json_t *o = translate(a, r);
    char *ob = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (o)
        json_decref(o);
    if (!ob) {
        json_decref(a);
        if (!r->body)
            srv_error(r, 503, "server_error", NULL, "out of memory translating the request");
        return;
    }
    srv_params p;
    mk_status st = srv_params_parse(SRV_CHAT, ob, strlen(ob), &p);
    free(ob);
    if (st != MK_OK) {
        srv_error(r, st == MK_E_NOMEM ? 503 : 400, st == MK_E_NOMEM ? "server_error" : "invalid_request_error",
                  p.param, "%s", mk_err_msg());
        rename_param(r);
        srv_params_free(&p);
        json_decref(a);
        return;
    }
    /* text.format: json_object / json_schema as chat's response_format
     * (respfmt.c), in the flat shape {type, name, schema, strict} and named
     * text.format in errors */
    json_t *tf = field(field(a, "text"), "format");
    if (tf) {
        p.fmt_param = "text.format";
        st = srv_format_compile(tf, true, "text.format", &p.grammar, p.param_buf, sizeof p.param_buf);
        if (st != MK_OK) {
            srv_error(r, st == MK_E_NOMEM ? 503 : 400, st == MK_E_NOMEM ? "server_error" : "invalid_request_error",
                      st == MK_E_NOMEM ? NULL : p.param_buf, "%s", mk_err_msg());
            srv_params_free(&p);
            json_decref(a);
            return;
        }
    }
    resp_echo re = {.fields = echo_fields(s, a), .created = (long long)time(NULL)};
    json_decref(a);
    srv_job *j = re.fields ? srv_job_start(s, &p, r) : NULL;
    if (!j) {
        if (!re.fields)
            srv_error(r, 503, "server_error", NULL, "out of memory for a response");
        else
            json_decref(re.fields);
        rename_param(r);
        srv_params_free(&p);
        return;
    }
    srv_make_id(s, "resp_", re.id, sizeof re.id);
    srv_chatout co;
    srv_chatout_init(s, &p, re.id + 5, &co);
    bool stream = p.stream;
    srv_params_free(&p);
    if (stream) {
        srv_stream *sst = mk_calloc(1, sizeof *sst);
        resp_stream *x = mk_calloc(1, sizeof *x);
        json_t *out = json_array();
        if (!sst || !x || !out) {
            free(sst);
            free(x);
            if (out)
                json_decref(out);
            json_decref(re.fields);
            pthread_mutex_lock(&s->mu);
            j->cancel = 1;
            srv_job_unref_locked(j);
            pthread_mutex_unlock(&s->mu);
            srv_chatout_free(&co);
            srv_error(r, 503, "server_error", NULL, "out of memory for a stream");
            return;
        }
        *x = (resp_stream){.re = re, .output = out};
        *sst = (srv_stream){.next = resp_next, .s = s, .j = j, .kind = SRV_CHAT, .created = re.created, .co = co,
                            .ext = x, .ext_free = rs_free};
        memcpy(sst->id, re.id, sizeof re.id);
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
    if (f == SRV_FIN_ERROR || f == SRV_FIN_CANCEL)
        srv_error(r, f == SRV_FIN_CANCEL ? 503 : 500, "server_error", NULL, "generation failed: %s", msg);
    else
        final_response(s, j, &co, &re, r);
    srv_chatout_free(&co);
    json_decref(re.fields);
    pthread_mutex_lock(&s->mu);
    srv_job_unref_locked(j);
    pthread_mutex_unlock(&s->mu);
}
