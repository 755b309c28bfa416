/* Tool calls as each model family writes them, parsed back into OpenAI's
 * {name, arguments}. The formats are those the families' released chat
 * templates teach the model (and render earlier calls in):
 *   qwen3, qwen3-think, qwen3.5, chatml  <tool_call>\n{"name": N, "arguments": {..}}\n</tool_call>
 *                or Qwen3-Coder / Qwen3.5's XML inside the same block:
 *                <function=N>\n<parameter=K>\nV\n</parameter>\n</function>
 *   glm4, glm4.7 <tool_call>N\n<arg_key>K</arg_key>\n<arg_value>V</arg_value>\n</tool_call>
 *   minimax-m2   <minimax:tool_call>\n<invoke name="N"><parameter name="K">V</parameter>
 *                </invoke>\n</minimax:tool_call>
 *   deepseek3    <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>N<｜tool▁sep｜>{args}
 *                <｜tool▁call▁end｜>...<｜tool▁calls▁end｜> (V3.1); V3's
 *                function<｜tool▁sep｜>N\n```json\n{args}\n```
 *   deepseek3.2  <｜DSML｜function_calls>\n<｜DSML｜invoke name="N">\n<｜DSML｜parameter
 *                name="K" string="true|false">V</｜DSML｜parameter>\n</｜DSML｜invoke>
 *                \n</｜DSML｜function_calls>
 *   kimi-k2      <|tool_calls_section_begin|><|tool_call_begin|>functions.N:I
 *                <|tool_call_argument_begin|>{args}<|tool_call_end|>
 *                <|tool_calls_section_end|>
 *   harmony      <|channel|>commentary to=functions.N <|constrain|>json<|message|>{args}
 *                (the message framing is chatparse.c's; here only its parts)
 * XML formats carry values as text: a value becomes a JSON string where the
 * request's tool declares the parameter a string (or DSML says
 * string="true"), else the JSON it spells when it spells one (numbers,
 * booleans, objects), else a string. A block that does not parse returns
 * false and chatparse.c shows it as content: nothing the model wrote is
 * dropped. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/json_err.h"
#include "server/srv_impl.h"

void srv_toolcall_markers(mk_chat_kind kind, const char **open, const char **close) {
    *open = *close = NULL;
    switch (kind) {
    case MK_CHAT_CHATML:
    case MK_CHAT_QWEN3:
    case MK_CHAT_QWEN3_THINK:
    case MK_CHAT_QWEN35:
    case MK_CHAT_GLM4:
    case MK_CHAT_GLM47:
        *open = "<tool_call>";
        *close = "</tool_call>";
        break;
    case MK_CHAT_MINIMAX_M2:
        *open = "<minimax:tool_call>";
        *close = "</minimax:tool_call>";
        break;
    case MK_CHAT_DEEPSEEK3:
        *open = "<｜tool▁calls▁begin｜>";
        *close = "<｜tool▁calls▁end｜>";
        break;
    case MK_CHAT_DEEPSEEK32:
        *open = "<｜DSML｜function_calls>";
        *close = "</｜DSML｜function_calls>";
        break;
    case MK_CHAT_KIMI_K2:
        *open = "<|tool_calls_section_begin|>";
        *close = "<|tool_calls_section_end|>";
        break;
    case MK_CHAT_HARMONY: break; /* framed by messages: chatparse.c */
    }
}

static bool is_ws(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

static void trim(const char **s, size_t *n) {
    while (*n && is_ws(**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n && is_ws((*s)[*n - 1]))
        (*n)--;
}

static const char *find(const char *s, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; k <= n && i <= n - k; i++)
        if (!memcmp(s + i, needle, k))
            return s + i;
    return NULL;
}

static bool starts(const char *s, size_t n, const char *prefix) {
    size_t k = strlen(prefix);
    return n >= k && !memcmp(s, prefix, k);
}

/* Append {name, args}; args is consumed (decref'd). */
static bool push(srv_call **calls, size_t *n, const char *name, size_t nn, json_t *args) {
    if (!args || !json_is_object(args)) {
        if (args)
            json_decref(args);
        return false;
    }
    char *a = nn ? json_dumps(args, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL; /* a call needs a name */
    json_decref(args);
    char *nm = a ? mk_strndup(name, nn) : NULL;
    srv_call *nc = nm ? mk_realloc(*calls, (*n + 1) * sizeof *nc) : NULL;
    if (!nc) {
        free(a);
        free(nm);
        return false;
    }
    *calls = nc;
    nc[*n].name = nm;
    nc[*n].args = a;
    (*n)++;
    return true;
}

/* The declared JSON type of parameter key of tool name ("string", ...), or NULL. */
static const char *param_type(const json_t *defs, const char *name, size_t nn, const char *key, size_t kn) {
    size_t i;
    json_t *t;
    json_array_foreach(defs, i, t) {
        json_t *f = json_object_get(t, "function");
        const char *fn = json_string_value(json_object_get(f, "name"));
        if (!fn || strlen(fn) != nn || memcmp(fn, name, nn))
            continue;
        json_t *props = json_object_get(json_object_get(f, "parameters"), "properties");
        const char *k;
        json_t *v;
        json_object_foreach(props, k, v) {
            if (strlen(k) == kn && !memcmp(k, key, kn)) {
                json_t *ty = json_object_get(v, "type");
                if (json_is_string(ty))
                    return json_string_value(ty);
                if (json_is_array(ty)) /* ["string", "null"]: text stays text */
                    for (size_t j = 0; j < json_array_size(ty); j++)
                        if (json_is_string(json_array_get(ty, j)) &&
                            !strcmp(json_string_value(json_array_get(ty, j)), "string"))
                            return "string";
                return NULL;
            }
        }
    }
    return NULL;
}

/* A value written as text: see the header. force: 1 string, 0 JSON if it is, -1 by the schema. */
static json_t *value(const json_t *defs, const char *name, size_t nn, const char *key, size_t kn,
                     const char *v, size_t vn, int force) {
    const char *ty = force < 0 ? param_type(defs, name, nn, key, kn) : NULL;
    if (force == 1 || (ty && !strcmp(ty, "string")))
        return json_stringn(v, vn);
    json_error_t e;
    json_t *j = json_loadb(v, vn, JSON_DECODE_ANY, &e);
    return j ? j : json_stringn(v, vn);
}

static bool set_arg(json_t *args, const char *k, size_t kn, json_t *v) {
    char *key = mk_strndup(k, kn);
    bool ok = key && v && json_object_set_new(args, key, v) == 0;
    if (!ok && v && !key)
        json_decref(v);
    free(key);
    return ok;
}

/* {"name": N, "arguments": {...}} (also "parameters"; arguments as a JSON string). */
static bool parse_json_call(const char *s, size_t n, srv_call **calls, size_t *nc) {
    json_error_t e;
    json_t *o = json_loadb(s, n, 0, &e);
    if (!o)
        return false;
    json_t *nm = json_object_get(o, "name");
    json_t *a = json_object_get(o, "arguments");
    if (!a)
        a = json_object_get(o, "parameters");
    json_t *args = NULL;
    if (json_is_object(a))
        args = json_incref(a);
    else if (json_is_string(a))
        args = json_loadb(json_string_value(a), json_string_length(a), 0, &e);
    else if (!a)
        args = json_object();
    bool ok = json_is_string(nm) && args &&
              push(calls, nc, json_string_value(nm), json_string_length(nm), args);
    if (!ok && args && !json_is_string(nm))
        json_decref(args);
    json_decref(o);
    return ok;
}

/* Qwen3-Coder: one or more <function=N> ... </function>. */
static bool parse_coder(const json_t *defs, const char *s, size_t n, srv_call **calls, size_t *nc) {
    const char *end = s + n;
    bool any = false;
    for (;;) {
        while (s < end && is_ws(*s))
            s++;
        if (s == end)
            return any;
        if (!starts(s, (size_t)(end - s), "<function="))
            return false;
        const char *nm = s + 10, *gt = memchr(nm, '>', (size_t)(end - nm));
        const char *fe = gt ? find(gt, (size_t)(end - gt), "</function>") : NULL;
        if (!gt || !fe)
            return false;
        size_t nn = (size_t)(gt - nm);
        json_t *args = json_object();
        const char *p = gt + 1;
        for (;;) {
            while (p < fe && is_ws(*p))
                p++;
            if (p == fe)
                break;
            if (!starts(p, (size_t)(fe - p), "<parameter=")) {
                json_decref(args);
                return false;
            }
            const char *k = p + 11, *kg = memchr(k, '>', (size_t)(fe - k));
            const char *pe = kg ? find(kg, (size_t)(fe - kg), "</parameter>") : NULL;
            if (!kg || !pe) {
                json_decref(args);
                return false;
            }
            const char *v = kg + 1;
            size_t vn = (size_t)(pe - v);
            if (vn && *v == '\n') /* the template writes '>\n' V '\n</parameter>' */
                v++, vn--;
            if (vn && v[vn - 1] == '\n')
                vn--;
            if (!set_arg(args, k, (size_t)(kg - k), value(defs, nm, nn, k, (size_t)(kg - k), v, vn, -1))) {
                json_decref(args);
                return false;
            }
            p = pe + 12;
        }
        if (!push(calls, nc, nm, nn, args))
            return false;
        any = true;
        s = fe + 11;
    }
}

/* GLM-4.5+: N then <arg_key>K</arg_key><arg_value>V</arg_value> pairs. */
static bool parse_glm(const json_t *defs, const char *s, size_t n, srv_call **calls, size_t *nc) {
    const char *end = s + n, *ak = find(s, n, "<arg_key>");
    const char *nm = s;
    size_t nn = (size_t)((ak ? ak : end) - s);
    trim(&nm, &nn);
    if (!nn || memchr(nm, '<', nn) || memchr(nm, '\n', nn))
        return false;
    json_t *args = json_object();
    const char *p = ak ? ak : end;
    while (p < end) {
        while (p < end && is_ws(*p))
            p++;
        if (p == end)
            break;
        const char *k = p + 9, *ke = starts(p, (size_t)(end - p), "<arg_key>")
                                          ? find(k, (size_t)(end - k), "</arg_key>") : NULL;
        const char *v = ke ? ke + 10 : NULL;
        while (v && v < end && is_ws(*v))
            v++;
        if (!ke || !starts(v, (size_t)(end - v), "<arg_value>")) {
            json_decref(args);
            return false;
        }
        v += 11;
        const char *ve = find(v, (size_t)(end - v), "</arg_value>");
        if (!ve || !set_arg(args, k, (size_t)(ke - k), value(defs, nm, nn, k, (size_t)(ke - k), v, (size_t)(ve - v), -1))) {
            json_decref(args);
            return false;
        }
        p = ve + 12;
    }
    return push(calls, nc, nm, nn, args);
}

/* MiniMax-M2 and DeepSeek-V3.2's DSML: <{pfx}invoke name="N"> with
 * <{pfx}parameter name="K"[ string="true|false"]>V</{pfx}parameter>. */
static bool parse_invokes(const json_t *defs, const char *pfx, const char *s, size_t n, srv_call **calls,
                          size_t *nc) {
    char inv[64], inv_end[64], par[64], par_end[64];
    snprintf(inv, sizeof inv, "<%sinvoke name=\"", pfx);
    snprintf(inv_end, sizeof inv_end, "</%sinvoke>", pfx);
    snprintf(par, sizeof par, "<%sparameter name=\"", pfx);
    snprintf(par_end, sizeof par_end, "</%sparameter>", pfx);
    const char *end = s + n;
    bool any = false;
    for (;;) {
        while (s < end && is_ws(*s))
            s++;
        if (s == end)
            return any;
        if (!starts(s, (size_t)(end - s), inv))
            return false;
        const char *nm = s + strlen(inv), *q = memchr(nm, '"', (size_t)(end - nm));
        const char *ie = q ? find(q, (size_t)(end - q), inv_end) : NULL;
        if (!q || !ie || q + 1 >= ie || q[1] != '>')
            return false;
        size_t nn = (size_t)(q - nm);
        json_t *args = json_object();
        const char *p = q + 2;
        for (;;) {
            while (p < ie && is_ws(*p))
                p++;
            if (p == ie)
                break;
            const char *k = starts(p, (size_t)(ie - p), par) ? p + strlen(par) : NULL;
            const char *kq = k ? memchr(k, '"', (size_t)(ie - k)) : NULL;
            const char *gt = kq ? memchr(kq, '>', (size_t)(ie - kq)) : NULL;
            const char *pe = gt ? find(gt, (size_t)(ie - gt), par_end) : NULL;
            if (!pe) {
                json_decref(args);
                return false;
            }
            int force = -1;
            if (find(kq, (size_t)(gt - kq), "string=\"true\""))
                force = 1;
            else if (find(kq, (size_t)(gt - kq), "string=\"false\""))
                force = 0;
            if (!set_arg(args, k, (size_t)(kq - k), value(defs, nm, nn, k, (size_t)(kq - k), gt + 1, (size_t)(pe - gt - 1), force))) {
                json_decref(args);
                return false;
            }
            p = pe + strlen(par_end);
        }
        if (!push(calls, nc, nm, nn, args))
            return false;
        any = true;
        s = ie + strlen(inv_end);
    }
}

/* Arguments given as JSON text (DeepSeek, Kimi, harmony). */
static bool push_json_args(srv_call **calls, size_t *nc, const char *nm, size_t nn, const char *a, size_t an) {
    trim(&a, &an);
    json_error_t e;
    json_t *args = an ? json_loadb(a, an, 0, &e) : json_object();
    return push(calls, nc, nm, nn, args);
}

/* DeepSeek-V3 / V3.1: <｜tool▁call▁begin｜>...<｜tool▁call▁end｜> items. */
static bool parse_deepseek(const char *s, size_t n, srv_call **calls, size_t *nc) {
    static const char B[] = "<｜tool▁call▁begin｜>", E[] = "<｜tool▁call▁end｜>", S[] = "<｜tool▁sep｜>";
    const char *end = s + n;
    bool any = false;
    for (;;) {
        while (s < end && is_ws(*s))
            s++;
        if (s == end)
            return any;
        if (!starts(s, (size_t)(end - s), B))
            return false;
        const char *h = s + sizeof B - 1, *ce = find(h, (size_t)(end - h), E);
        const char *sep = ce ? find(h, (size_t)(ce - h), S) : NULL;
        if (!sep)
            return false;
        const char *nm = h, *a = sep + sizeof S - 1;
        size_t nn = (size_t)(sep - h), an = (size_t)(ce - a);
        trim(&nm, &nn);
        if (nn == 8 && !memcmp(nm, "function", 8)) { /* V3: N\n```json\n{args}\n``` */
            const char *nl = memchr(a, '\n', an);
            if (!nl)
                return false;
            nm = a;
            nn = (size_t)(nl - a);
            trim(&nm, &nn);
            a = nl + 1;
            an = (size_t)(ce - a);
            trim(&a, &an);
            if (starts(a, an, "```json"))
                a += 7, an -= 7;
            if (an >= 3 && !memcmp(a + an - 3, "```", 3))
                an -= 3;
        }
        if (!push_json_args(calls, nc, nm, nn, a, an))
            return false;
        any = true;
        s = ce + sizeof E - 1;
    }
}

/* Kimi-K2: <|tool_call_begin|>functions.N:I<|tool_call_argument_begin|>{args}<|tool_call_end|>. */
static bool parse_kimi(const char *s, size_t n, srv_call **calls, size_t *nc) {
    static const char B[] = "<|tool_call_begin|>", A[] = "<|tool_call_argument_begin|>", E[] = "<|tool_call_end|>";
    const char *end = s + n;
    bool any = false;
    for (;;) {
        while (s < end && is_ws(*s))
            s++;
        if (s == end)
            return any;
        if (!starts(s, (size_t)(end - s), B))
            return false;
        const char *id = s + sizeof B - 1, *ce = find(id, (size_t)(end - id), E);
        const char *ab = ce ? find(id, (size_t)(ce - id), A) : NULL;
        if (!ab)
            return false;
        const char *nm = id;
        size_t nn = (size_t)(ab - id);
        trim(&nm, &nn);
        if (starts(nm, nn, "functions."))
            nm += 10, nn -= 10;
        for (size_t k = nn; k-- > 0;)
            if (nm[k] == ':') { /* the call's index */
                nn = k;
                break;
            }
        const char *a = ab + sizeof A - 1;
        if (!push_json_args(calls, nc, nm, nn, a, (size_t)(ce - a)))
            return false;
        any = true;
        s = ce + sizeof E - 1;
    }
}

bool srv_toolcall_harmony(const char *rc, size_t rn, const char *body, size_t bn, srv_call **calls,
                          size_t *ncalls) {
    trim(&rc, &rn);
    if (!starts(rc, rn, "functions."))
        return false;
    return push_json_args(calls, ncalls, rc + 10, rn - 10, body, bn);
}

bool srv_toolcall_parse(mk_chat_kind kind, const json_t *defs, const char *s, size_t n, srv_call **calls,
                        size_t *ncalls) {
    size_t before = *ncalls;
    bool ok = false;
    const char *t = s;
    size_t tn = n;
    trim(&t, &tn);
    switch (kind) {
    case MK_CHAT_CHATML:
    case MK_CHAT_QWEN3:
    case MK_CHAT_QWEN3_THINK:
    case MK_CHAT_QWEN35:
        ok = starts(t, tn, "<function=") ? parse_coder(defs, t, tn, calls, ncalls)
                                         : parse_json_call(t, tn, calls, ncalls);
        break;
    case MK_CHAT_GLM4:
    case MK_CHAT_GLM47:
        ok = starts(t, tn, "{") ? parse_json_call(t, tn, calls, ncalls) : parse_glm(defs, t, tn, calls, ncalls);
        break;
    case MK_CHAT_MINIMAX_M2: ok = parse_invokes(defs, "", t, tn, calls, ncalls); break;
    case MK_CHAT_DEEPSEEK32: ok = parse_invokes(defs, "｜DSML｜", t, tn, calls, ncalls); break;
    case MK_CHAT_DEEPSEEK3: ok = parse_deepseek(t, tn, calls, ncalls); break;
    case MK_CHAT_KIMI_K2: ok = parse_kimi(t, tn, calls, ncalls); break;
    case MK_CHAT_HARMONY: break;
    }
    if (!ok) { /* all or nothing: a block that fails part-way adds no call */
        for (size_t i = before; i < *ncalls; i++) {
            free((*calls)[i].name);
            free((*calls)[i].args);
        }
        *ncalls = before;
    }
    return ok;
}
