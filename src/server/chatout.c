/* A parsed chat answer (chatparse.c) in OpenAI's shapes: the message of a
 * chat.completion ({"role", "content", "reasoning_content", "tool_calls"},
 * content null when the answer is only tool calls, as OpenAI sends it) and
 * the deltas of a chat.completion.chunk stream: reasoning_content and
 * content text as it becomes final, each tool call whole in one delta
 * ({"index", "id", "type", "function": {"name", "arguments"}}) once its
 * block has closed. Reasoning goes under vLLM's and llama.cpp's
 * "reasoning_content", the field agent clients read. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "server/srv_impl.h"

static json_t *call_json(const srv_chatout *co, const srv_call *c, size_t i, bool delta) {
    char id[96];
    snprintf(id, sizeof id, "%s_%zu", co->call_id, i);
    json_t *o = json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", id, "type", "function", "function", "name",
                          c->name, "arguments", c->args);
    if (o && delta)
        json_object_set_new(o, "index", json_integer((json_int_t)i));
    return o;
}

static size_t ncalls(const srv_chatout *co, const srv_parsed *p) {
    return !co->parallel && p->ncalls > 1 ? 1 : p->ncalls;
}

mk_status srv_chatout_parse(const srv_chatout *co, const char *text, size_t len, bool final, srv_parsed *out) {
    if (!co->pre)
        return srv_chat_parse(&co->cfg, text, len, final, out);
    char *t = mk_malloc(co->pre_len + len + 1);
    if (!t) {
        memset(out, 0, sizeof *out);
        return mk_err(MK_E_NOMEM, "no memory for %zu bytes of an answer", co->pre_len + len);
    }
    memcpy(t, co->pre, co->pre_len);
    memcpy(t + co->pre_len, text, len);
    t[co->pre_len + len] = 0;
    mk_status st = srv_chat_parse(&co->cfg, t, co->pre_len + len, final, out);
    free(t);
    return st;
}

json_t *srv_chat_message(srv_chatout *co, const char *text, size_t len) {
    srv_parsed p;
    if (srv_chatout_parse(co, text, len, true, &p) != MK_OK)
        return NULL;
    json_t *m = json_object();
    size_t nc = ncalls(co, &p);
    json_object_set_new(m, "role", json_string("assistant"));
    json_object_set_new(m, "content", p.clen || !nc ? json_stringn(p.content ? p.content : "", p.clen) : json_null());
    if (p.rlen)
        json_object_set_new(m, "reasoning_content", json_stringn(p.reasoning, p.rlen));
    if (nc) {
        json_t *a = json_array();
        for (size_t i = 0; i < nc; i++)
            json_array_append_new(a, call_json(co, &p.calls[i], i, false));
        json_object_set_new(m, "tool_calls", a);
        co->any_calls = true;
    }
    srv_parsed_free(&p);
    return m;
}

json_t *srv_chat_delta(srv_chatout *co, const char *text, size_t len, bool final) {
    srv_parsed p;
    if (srv_chatout_parse(co, text, len, final, &p) != MK_OK)
        return NULL;
    json_t *d = json_object();
    if (p.rlen > co->r_sent) {
        json_object_set_new(d, "reasoning_content", json_stringn(p.reasoning + co->r_sent, p.rlen - co->r_sent));
        co->r_sent = p.rlen;
    }
    if (p.clen > co->c_sent) {
        json_object_set_new(d, "content", json_stringn(p.content + co->c_sent, p.clen - co->c_sent));
        co->c_sent = p.clen;
    }
    size_t nc = ncalls(co, &p);
    if (nc > co->calls_sent) {
        json_t *a = json_array();
        for (size_t i = co->calls_sent; i < nc; i++)
            json_array_append_new(a, call_json(co, &p.calls[i], i, true));
        json_object_set_new(d, "tool_calls", a);
        co->calls_sent = nc;
        co->any_calls = true;
    }
    srv_parsed_free(&p);
    return d;
}

const char *srv_chat_finish(const srv_chatout *co, const char *otherwise) {
    return co->any_calls ? "tool_calls" : otherwise;
}

void srv_chatout_free(srv_chatout *co) {
    if (co->cfg.tool_defs)
        json_decref((json_t *)co->cfg.tool_defs);
    co->cfg.tool_defs = NULL;
    free(co->pre);
    co->pre = NULL;
}
