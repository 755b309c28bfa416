/* response_format: structured output enforced by constrained decoding.
 *
 * {"type": "text"} is the default; {"type": "json_object"} any JSON object;
 * {"type": "json_schema", "json_schema": {"name", "schema", "strict"}} the
 * schema compiled by the grammar module (include/moekit/grammar.h), whose
 * refusals (an unsupported keyword, named with its JSON path) become 400s:
 * a schema is never half enforced. The Responses API's text.format has the
 * same fields one level up ({"type": "json_schema", "name", "schema",
 * "strict"}): srv_format_compile reads both shapes.
 *
 * A job with a grammar carries a matcher; the scheduler masks each step's
 * logits with it (budget: the tokens max_tokens still allows, so the output
 * closes in time) and feeds it each sampled token (sched.c). The
 * vocabulary trie is built once per server, on the first such request.
 *
 * Refused together with response_format (400): a forced tool call
 * (tool_choice "required" / named: its prefill opens tool-call markup that
 * the grammar forbids, and the two would constrain the same output), tools
 * with tool_choice "auto" (their markup would be forbidden, so the model
 * could never call one; "none" is compatible: tools are then neither
 * rendered nor parsed), moekit_test_output (it forces other text), ignore_eos
 * (the stop token is what ends a complete value), a chat template that
 * opens a thinking block (the reasoning is free text before the JSON: ask
 * with chat_template_kwargs.enable_thinking false) and harmony (gpt-oss
 * writes channel markup before its answer). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/json_err.h"
#include "server/srv_impl.h"

static mk_status fail(char *where, size_t nwhere, const char *param, mk_status st) {
    snprintf(where, nwhere, "%s", param);
    if (st == MK_E_NOMEM || st == MK_E_ARG)
        return st;
    char msg[512];
    snprintf(msg, sizeof msg, "%s", mk_err_msg());
    return mk_err(MK_E_ARG, "%s", msg); /* unsupported schema features: the client's to change */
}

mk_status srv_format_compile(const json_t *fmt, bool flat, const char *param, mk_grammar **g, char *where,
                             size_t nwhere) {
    *g = NULL;
    if (!json_is_object(fmt))
        return fail(where, nwhere, param,
                    mk_err(MK_E_ARG, "%s: expected an object, found %s", param, mk_json_type_name(fmt)));
    const char *ty = json_string_value(json_object_get(fmt, "type"));
    if (!ty)
        return fail(where, nwhere, param, mk_err(MK_E_ARG, "%s.type: expected a string", param));
    if (!strcmp(ty, "text"))
        return MK_OK;
    if (!strcmp(ty, "json_object"))
        return mk_grammar_json_object(g) == MK_OK ? MK_OK : fail(where, nwhere, param, MK_E_NOMEM);
    if (strcmp(ty, "json_schema"))
        return fail(where, nwhere, param,
                    mk_err(MK_E_ARG, "%s.type: '%s' is not one of text, json_object, json_schema", param, ty));
    char sub[96];
    const json_t *js = fmt;
    if (!flat) {
        snprintf(sub, sizeof sub, "%s.json_schema", param);
        js = json_object_get(fmt, "json_schema");
        if (!json_is_object(js))
            return fail(where, nwhere, sub, mk_err(MK_E_ARG, "%s: expected an object, found %s", sub,
                                                   mk_json_type_name(js)));
    } else {
        snprintf(sub, sizeof sub, "%s", param);
    }
    const json_t *name = json_object_get(js, "name"), *strict = json_object_get(js, "strict");
    const json_t *schema = json_object_get(js, "schema");
    if (name && !json_is_null(name) && !json_is_string(name))
        return fail(where, nwhere, sub, mk_err(MK_E_ARG, "%s.name: expected a string", sub));
    if (strict && !json_is_null(strict) && !json_is_boolean(strict))
        return fail(where, nwhere, sub, mk_err(MK_E_ARG, "%s.strict: expected a boolean", sub));
    char sp[112];
    snprintf(sp, sizeof sp, "%s.schema", sub);
    if (schema && !json_is_null(schema) && !json_is_object(schema))
        return fail(where, nwhere, sp, mk_err(MK_E_ARG, "%s: expected an object, found %s", sp,
                                              mk_json_type_name(schema)));
    unsigned long mark = mk_json_mark();
    char *text = schema && !json_is_null(schema) ? mk_json_dumps_checked(schema, JSON_COMPACT, mark) : NULL;
    if (schema && !json_is_null(schema) && !text)
        return fail(where, nwhere, sp, mk_err(MK_E_NOMEM, "no memory for a JSON schema"));
    /* no schema: any JSON value */
    mk_status st = mk_grammar_compile_schema(text ? text : "{}", text ? strlen(text) : 2, json_is_true(strict), g);
    free(text);
    if (st != MK_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", mk_err_msg());
        /* the grammar's paths start at the schema ("$.properties.x") */
        return fail(where, nwhere, sp, mk_err(st, "%s: %s", sp, msg));
    }
    return MK_OK;
}

bool srv_respfmt_check(mk_server *s, const srv_params *p, srv_reply *r) {
    if (!p->grammar)
        return true;
    const char *why = NULL, *param = p->fmt_param ? p->fmt_param : "response_format";
    unsigned fl = p->no_thinking ? MK_CHAT_NO_THINKING : 0;
    if (p->test_output)
        why = "cannot be combined with moekit_test_output (which forces other text)";
    else if (p->ignore_eos)
        why = "cannot be combined with ignore_eos (the stop token ends a complete value)";
    else if (p->force_call)
        why = "cannot be combined with a forced tool call (tool_choice \"required\" or a named function): both "
              "would constrain the output (a tool call's markup vs. a JSON answer); the tool's parameters "
              "already describe its arguments";
    else if (p->tools && p->ntools)
        why = "together with tools is not supported (the grammar would forbid the tool-call markup, the "
              "model could not call them): use tool_choice \"none\" or drop one of the two";
    else if (p->kind == SRV_CHAT && s->m.chat_kind == MK_CHAT_HARMONY)
        why = "is not supported with the harmony template (gpt-oss writes channel markup before its answer)";
    else if (p->kind == SRV_CHAT && srv_chat_think_open(s->m.chat_kind, fl))
        why = "is not supported while the template opens a thinking block (the reasoning would have to be "
              "JSON too): set chat_template_kwargs.enable_thinking to false (Responses: reasoning.effort "
              "\"none\")";
    if (why) {
        srv_error(r, 400, "invalid_request_error", param, "%s %s", param, why);
        return false;
    }
    return true;
}

bool srv_respfmt_start(mk_server *s, srv_params *p, srv_job *j, srv_reply *r) {
    if (!p->grammar)
        return true;
    const char *param = p->fmt_param ? p->fmt_param : "response_format";
    pthread_mutex_lock(&s->mu);
    mk_grammar_vocab *v = s->gvoc;
    pthread_mutex_unlock(&s->mu);
    if (!v) { /* built outside the lock (it takes a while); a racing request's copy is dropped */
        int64_t V = mk_model_config(s->m.model)->vocab_size;
        mk_status st = mk_grammar_vocab_create(s->m.tok, V, s->stopset.ids, (size_t)s->stopset.n, &v);
        if (st != MK_OK) {
            srv_error(r, st == MK_E_NOMEM ? 503 : 400, st == MK_E_NOMEM ? "server_error" : "invalid_request_error",
                      st == MK_E_NOMEM ? NULL : param, "%s: %s", param, mk_err_msg());
            return false;
        }
        pthread_mutex_lock(&s->mu);
        if (s->gvoc) {
            mk_grammar_vocab_free(v);
            v = s->gvoc;
        } else {
            s->gvoc = v;
        }
        pthread_mutex_unlock(&s->mu);
    }
    if (mk_grammar_match_create(p->grammar, v, &j->gm) != MK_OK) {
        srv_error(r, 503, "server_error", NULL, "%s", mk_err_msg());
        return false;
    }
    /* the job outlives the request's parameters: it takes the grammar */
    j->grammar = p->grammar;
    p->grammar = NULL;
    return true;
}
