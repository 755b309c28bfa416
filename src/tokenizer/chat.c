/* Chat templates (see include/moekit/chat.h): recognising a checkpoint's
 * Jinja template by its markers, and rendering each family in C.
 *
 * The renderers follow the reference templates line by line for the
 * no-tools case: Qwen3's (tokenizer_config.json of Qwen3, checked against
 * its Jinja source), DeepSeek-V3's, and plain ChatML. Where a template would
 * silently drop a message (an unknown role) we refuse instead, since a
 * dropped turn changes what the model sees.
 *
 * Every renderer writes its own markers with lit() and the messages' roles
 * and contents with put(): mk_chat_encode lets special tokens match only in
 * the lit() parts, so "<|im_end|>" typed by a user stays text. */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/json_err.h"
#include "core/alloc.h"
#include "core/str.h"
#include "moekit/chat.h"
#include "moekit/tokenizer.h"

static const struct {
    const char *name;
    mk_chat_kind kind;
} g_kinds[] = {
    {"chatml", MK_CHAT_CHATML},
    {"qwen3", MK_CHAT_QWEN3},
    {"qwen3-think", MK_CHAT_QWEN3_THINK},
    {"qwen3.5", MK_CHAT_QWEN35},
    {"deepseek3", MK_CHAT_DEEPSEEK3},
    {"glm4", MK_CHAT_GLM4},
    {"glm4.7", MK_CHAT_GLM47},
    {"minimax-m2", MK_CHAT_MINIMAX_M2},
    {"harmony", MK_CHAT_HARMONY},
    {"kimi-k2", MK_CHAT_KIMI_K2},
    {"deepseek3.2", MK_CHAT_DEEPSEEK32},
};
#define KIND_NAMES "chatml, qwen3, qwen3-think, deepseek3, deepseek3.2, glm4, glm4.7, minimax-m2, harmony, kimi-k2, qwen3.5"

const char *mk_chat_kind_name(mk_chat_kind k) {
    for (size_t i = 0; i < sizeof g_kinds / sizeof g_kinds[0]; i++)
        if (g_kinds[i].kind == k)
            return g_kinds[i].name;
    return "unknown";
}

mk_status mk_chat_kind_parse(const char *name, mk_chat_kind *out) {
    for (size_t i = 0; name && i < sizeof g_kinds / sizeof g_kinds[0]; i++)
        if (strcmp(name, g_kinds[i].name) == 0) {
            *out = g_kinds[i].kind;
            return MK_OK;
        }
    return mk_err(MK_E_ARG, "unknown chat template '%s' (expected one of " KIND_NAMES ")",
                  name ? name : "(null)");
}

/* ---- detection ----------------------------------------------------------- */

mk_status mk_chat_detect_text(const char *j, mk_chat_kind *out) {
    if (!j || !out)
        return mk_err(MK_E_ARG, "mk_chat_detect_text: NULL argument");
    if (strstr(j, "<｜Assistant｜>")) {
        /* DeepSeek-V3.2: tool calls in its DSML markup; thinking off unless
         * asked for, which still writes '</think>' after the assistant
         * marker. */
        *out = strstr(j, "｜DSML｜") ? MK_CHAT_DEEPSEEK32 : MK_CHAT_DEEPSEEK3;
        return MK_OK;
    }
    /* gpt-oss: harmony's message header, <|start|>{role}<|message|> */
    if (strstr(j, "<|start|>") && strstr(j, "<|channel|>") && strstr(j, "<|message|>")) {
        *out = MK_CHAT_HARMONY;
        return MK_OK;
    }
    /* Kimi-K2: <|im_user|>user<|im_middle|>{u}<|im_end|>. Kimi-K2-Instruct's
     * current template gives a chat without a system message Kimi's own
     * (ending in a newline); earlier and thinking templates differ. */
    if (strstr(j, "<|im_middle|>")) {
        if (strstr(j, "You are Kimi, an AI assistant created by Moonshot AI.<|im_end|>\n") &&
            strstr(j, "## Return of ") && !strstr(j, "think")) {
            *out = MK_CHAT_KIMI_K2;
            return MK_OK;
        }
        return mk_err(MK_E_UNSUPPORTED, "chat template: a Kimi template (<|im_middle|>) other than "
                      "Kimi-K2-Instruct's, which moekit renders; name one of " KIND_NAMES " to use one anyway");
    }
    /* MiniMax-M2: ]~b]{role}\n ... [e~[\n, generation prompt opening <think> */
    if (strstr(j, "]~b]ai") && strstr(j, "[e~[")) {
        *out = MK_CHAT_MINIMAX_M2;
        return MK_OK;
    }
    if (strstr(j, "[gMASK]<sop>")) {
        /* GLM-4.5 / 4.6: every earlier assistant turn carries an empty
         * '\n<think></think>' block. Other GLM templates (GLM-4.7 opens
         * thinking in the generation prompt) render differently. */
        if (strstr(j, "'\\n<think></think>'") && strstr(j, "<|observation|>")) {
            *out = MK_CHAT_GLM4;
            return MK_OK;
        }
        /* GLM-4.7: no newline after the role markers, every earlier
         * assistant turn carries a bare '</think>', the generation prompt
         * opens thinking ('<think>', or '</think>' without it). */
        if (strstr(j, "{{ '</think>' }}") && strstr(j, "<|observation|>") &&
            strstr(j, "'</think>' if (enable_thinking is defined and not enable_thinking) else '<think>'")) {
            *out = MK_CHAT_GLM47;
            return MK_OK;
        }
        return mk_err(MK_E_UNSUPPORTED, "chat template: a GLM template ([gMASK]<sop>) other than GLM-4.5/4.6's "
                      "and GLM-4.7's, which moekit renders; name one of " KIND_NAMES " to use one anyway");
    }
    if (strstr(j, "<|im_start|>")) {
        /* The generation prompt opens the thinking block: '<think>\n' output
         * on its own, or glued to the assistant header. Qwen3's hybrid
         * template only ever writes '\n<think>\n' inside a turn and the empty
         * block '<think>\n\n</think>\n\n'. */
        if (strstr(j, "'<think>\\n'") || strstr(j, "\"<think>\\n\"") ||
            strstr(j, "assistant\\n<think>\\n'") || strstr(j, "assistant\\n<think>\\n\""))
            /* Qwen3.5 teaches Qwen3-Coder's XML tool calls */
            *out = strstr(j, "<function=") ? MK_CHAT_QWEN35 : MK_CHAT_QWEN3_THINK;
        else if (strstr(j, "<think>"))
            *out = MK_CHAT_QWEN3;
        else
            *out = MK_CHAT_CHATML;
        return MK_OK;
    }
    return mk_err(MK_E_UNSUPPORTED,
                  "chat template not recognised (none of the markers of ChatML <|im_start|>, DeepSeek "
                  "<｜Assistant｜>, harmony <|start|>, MiniMax ]~b]ai, GLM [gMASK]<sop>, Kimi <|im_middle|>); "
                  "name one of " KIND_NAMES);
}

/* The template text of tokenizer_config.json: a string, or a list of
 * {"name", "template"} of which "default" is the chat one. */
static const char *config_template(const json_t *cfg) {
    const json_t *ct = json_object_get(cfg, "chat_template");
    if (json_is_string(ct))
        return json_string_value(ct);
    for (size_t i = 0; json_is_array(ct) && i < json_array_size(ct); i++) {
        const json_t *e = json_array_get(ct, i);
        const json_t *name = json_object_get(e, "name"), *tx = json_object_get(e, "template");
        if (json_is_string(name) && json_is_string(tx) && strcmp(json_string_value(name), "default") == 0)
            return json_string_value(tx);
    }
    return NULL;
}

/* dir/name into path; false when it does not fit. */
static bool join(char *path, size_t cap, const char *dir, const char *name) {
    int n = snprintf(path, cap, "%s/%s", dir, name);
    return n >= 0 && (size_t)n < cap;
}

static mk_status detect_file(const char *dir, mk_chat_kind *out, bool *found) {
    char path[4200];
    json_error_t e;
    *found = false;
    if (!join(path, sizeof path, dir, "tokenizer_config.json"))
        return mk_err(MK_E_ARG, "path too long: %s", dir);
    struct stat sb;
    if (stat(path, &sb) == 0) {
        unsigned long jmark = mk_json_mark();
        json_t *cfg = mk_json_load_file(path, JSON_DECODE_INT_AS_REAL, &e, jmark);
        if (!cfg && mk_json_nomem(&e, jmark)) /* not the file's fault */
            return mk_err(MK_E_NOMEM, "%s: no memory to parse its JSON", path);
        if (!cfg)
            return mk_err(MK_E_FORMAT, "%s: invalid JSON at line %d column %d: %s", path, e.line, e.column,
                          mk_json_errtext(e.text));
        const char *tx = config_template(cfg);
        mk_status st = MK_OK;
        if (tx) {
            *found = true;
            st = mk_chat_detect_text(tx, out);
            if (st != MK_OK)
                st = mk_err_wrap(st, "%s: field 'chat_template'", path);
        }
        json_decref(cfg);
        if (*found || st != MK_OK)
            return st;
    }
    /* transformers >= 4.43 may save the template beside it instead. */
    if (!join(path, sizeof path, dir, "chat_template.jinja"))
        return mk_err(MK_E_ARG, "path too long: %s", dir);
    FILE *f = fopen(path, "rb");
    if (!f)
        return MK_OK;
    char *buf = mk_malloc(1 << 20);
    size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (!buf)
        return mk_err(MK_E_NOMEM, "chat: out of memory reading %s", path);
    buf[n] = 0;
    *found = true;
    mk_status st = mk_chat_detect_text(buf, out);
    free(buf);
    return st == MK_OK ? st : mk_err_wrap(st, "%s", path);
}

mk_status mk_chat_detect(const char *model_dir, const char *override, mk_chat_kind *out) {
    if (!out)
        return mk_err(MK_E_ARG, "mk_chat_detect: NULL argument");
    if (override)
        return mk_chat_kind_parse(override, out);
    if (!model_dir)
        return mk_err(MK_E_ARG, "mk_chat_detect: no model directory and no template named");
    char dir[4096];
    struct stat sb;
    snprintf(dir, sizeof dir, "%s", model_dir);
    if (stat(dir, &sb) != 0)
        return mk_err(errno == ENOENT ? MK_E_NOTFOUND : MK_E_IO, "%s: cannot open: %s", model_dir,
                      strerror(errno));
    if (!S_ISDIR(sb.st_mode)) { /* a file inside the model directory */
        char *slash = strrchr(dir, '/');
        if (slash)
            slash[slash == dir] = 0;
        else
            snprintf(dir, sizeof dir, ".");
    }
    bool found;
    MK_TRY(detect_file(dir, out, &found));
    if (!found)
        return mk_err(MK_E_NOTFOUND, "%s: no chat_template in tokenizer_config.json and no "
                      "chat_template.jinja; name one of " KIND_NAMES, dir);
    return MK_OK;
}

/* ---- rendering ----------------------------------------------------------- */

/* The rendered text, and the byte ranges the template itself wrote (its
 * markers, as opposed to roles and contents): only there may an encoder
 * recognise special tokens (mk_chat_encode). */
typedef struct sb {
    char *p;
    size_t n, cap;
    bool oom;
    mk_tok_span *ctl;
    size_t nctl, ctl_cap;
    const mk_chat_tools *tools; /* NULL or none: no tools */
} sb;

static void put(sb *b, const char *s, size_t n) {
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n + 1)
            nc *= 2;
        char *np = mk_realloc(b->p, nc);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void puts_(sb *b, const char *s) { put(b, s, strlen(s)); }

/* Template text: appended and recorded as a control span (merged with the
 * span before when they touch). */
static void lit(sb *b, const char *s) {
    size_t off = b->n, n = strlen(s);
    put(b, s, n);
    if (b->oom || !n)
        return;
    if (b->nctl && b->ctl[b->nctl - 1].off + b->ctl[b->nctl - 1].len == off) {
        b->ctl[b->nctl - 1].len += n;
        return;
    }
    if (b->nctl == b->ctl_cap) {
        size_t nc = b->ctl_cap ? 2 * b->ctl_cap : 16;
        mk_tok_span *np = mk_realloc(b->ctl, nc * sizeof *np);
        if (!np) {
            b->oom = true;
            return;
        }
        b->ctl = np;
        b->ctl_cap = nc;
    }
    b->ctl[b->nctl++] = (mk_tok_span){off, n};
}

static const char *txt(const char *s) { return s ? s : ""; }

static mk_status no_tool_call(size_t i, const char *kind);

static bool is_role(const mk_chat_msg *m, const char *r) { return m->role && strcmp(m->role, r) == 0; }

static mk_status bad_role(size_t i, const mk_chat_msg *m, const char *kind) {
    return mk_err(MK_E_ARG, "chat message %zu: role '%s' is not one the %s template renders "
                  "(system, user, assistant, tool)", i, m->role ? m->role : "(null)", kind);
}

static void render_chatml(const mk_chat_msg *m, size_t n, unsigned flags, sb *b) {
    for (size_t i = 0; i < n; i++) {
        lit(b, "<|im_start|>");
        puts_(b, txt(m[i].role));
        lit(b, "\n");
        puts_(b, txt(m[i].content));
        lit(b, "<|im_end|>\n");
    }
    if (flags & MK_CHAT_GENERATION_PROMPT)
        lit(b, "<|im_start|>assistant\n");
}

/* Python's str.strip / lstrip / rstrip with '\n' as the only character. */
static void strip_nl(const char **s, size_t *n, bool left, bool right) {
    while (left && *n && **s == '\n')
        (*s)++, (*n)--;
    while (right && *n && (*s)[*n - 1] == '\n')
        (*n)--;
}

static const char *last_strstr(const char *h, const char *needle) {
    const char *r = NULL;
    for (const char *p = strstr(h, needle); p; p = strstr(p + 1, needle))
        r = p;
    return r;
}

static bool py_space(uint32_t c);
static void py_strip(const char **s, size_t *n);

/* A JSON value as Jinja's `| string` prints it under Python (Qwen3.5's
 * scalar arguments): True / False / None, integers, floats as Python's
 * repr (the shortest text that reads back, "1.0", "1e+16"), strings as is;
 * objects and arrays as tojson. */
static void py_str(sb *b, const json_t *v) {
    char t[64];
    if (json_is_string(v)) {
        put(b, json_string_value(v), json_string_length(v));
    } else if (json_is_true(v) || json_is_false(v) || json_is_null(v)) {
        puts_(b, json_is_true(v) ? "True" : json_is_false(v) ? "False" : "None");
    } else if (json_is_integer(v)) {
        snprintf(t, sizeof t, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        puts_(b, t);
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        int p = 1;
        for (; p < 17; p++) { /* the fewest significant digits that read back */
            snprintf(t, sizeof t, "%.*e", p - 1, d);
            if (strtod(t, NULL) == d)
                break;
        }
        int e = 0;
        const char *x = strchr(t, 'e');
        if (x)
            e = atoi(x + 1);
        if (e >= -4 && e < 16)
            snprintf(t, sizeof t, "%.*f", p - 1 - e > 1 ? p - 1 - e : 1, d);
        else
            snprintf(t, sizeof t, "%.*e", p - 1, d);
        puts_(b, t);
    } else {
        char *j = json_dumps(v, JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
        if (!j)
            b->oom = true;
        else
            puts_(b, j);
        free(j);
    }
}

/* Tool call k's arguments as the JSON object template `tpl` iterates (a new
 * reference), or NULL with MK_E_ARG naming message i (SIZE_MAX: the caller
 * does not know it) and call k, as the template raises. */
static json_t *call_args(const mk_chat_msg_calls *tc, size_t k, size_t i, const char *tpl) {
    json_error_t e;
    json_t *args = json_loads(txt(tc->calls[k].arguments), 0, &e);
    if (json_is_object(args))
        return args;
    if (args)
        json_decref(args);
    if (i == SIZE_MAX)
        mk_err(MK_E_ARG, "chat: tool call %zu: the arguments are not a JSON object (the %s template iterates "
               "them)", k, tpl);
    else
        mk_err(MK_E_ARG, "chat message %zu: tool call %zu: the arguments are not a JSON object (the %s "
               "template iterates them)", i, k, tpl);
    return NULL;
}

/* Qwen3.5's tool calls (Qwen3-Coder's XML); `text` whether the turn's
 * content is more than white space. */
static mk_status qwen35_calls(const mk_chat_msg_calls *tc, bool text, sb *b) {
    for (size_t k = 0; tc && k < tc->n; k++) {
        json_t *args = call_args(tc, k, SIZE_MAX, "qwen3.5");
        if (!args)
            return MK_E_ARG;
        lit(b, k ? "\n<tool_call>\n<function=" : text ? "\n\n<tool_call>\n<function=" : "<tool_call>\n<function=");
        puts_(b, txt(tc->calls[k].name));
        lit(b, ">\n");
        const char *key;
        json_t *v;
        json_object_foreach(args, key, v) {
            lit(b, "<parameter=");
            puts_(b, key);
            lit(b, ">\n");
            py_str(b, v);
            lit(b, "\n</parameter>\n");
        }
        json_decref(args);
        lit(b, "</function>\n</tool_call>");
    }
    return MK_OK;
}

/* Qwen3's assistant turn: split an inline <think>...</think> off the content
 * unless reasoning is given, and keep the think block only after the last
 * user query. */
static mk_status qwen3_assistant(mk_chat_kind kind, const mk_chat_msg *m, const mk_chat_msg_calls *tc,
                                 bool after_query, bool last, sb *b) {
    const char *c = txt(m->content), *r = "";
    size_t cn = strlen(c), rn = 0;
    if (m->reasoning) {
        r = m->reasoning;
        rn = strlen(r);
    } else if (strstr(c, "</think>")) {
        const char *first = strstr(c, "</think>"), *lastc = last_strstr(c, "</think>");
        /* reasoning = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') */
        r = c;
        rn = (size_t)(first - c);
        strip_nl(&r, &rn, false, true);
        for (const char *p = r; (p = strstr(p, "<think>")) && p + 7 <= r + rn; p++) {
            rn -= (size_t)(p + 7 - r);
            r = p + 7;
        }
        strip_nl(&r, &rn, true, false);
        /* content = content.split('</think>')[-1].lstrip('\n') */
        c = lastc + 8;
        cn = strlen(c);
        strip_nl(&c, &cn, true, false);
    }
    lit(b, "<|im_start|>assistant\n");
    if (after_query && (last || rn || kind == MK_CHAT_QWEN35)) { /* Qwen3.5: every turn after the query */
        strip_nl(&r, &rn, true, true);
        strip_nl(&c, &cn, true, false);
        lit(b, "<think>\n");
        put(b, r, rn);
        lit(b, "\n</think>\n\n");
    }
    put(b, c, cn);
    if (kind == MK_CHAT_QWEN35) {
        bool text = false;
        for (size_t k = 0; k < cn && !text; k++)
            text = !py_space((unsigned char)c[k]);
        mk_status st = qwen35_calls(tc, text, b);
        lit(b, "<|im_end|>\n");
        return st;
    }
    for (size_t k = 0; tc && k < tc->n; k++) {
        if (k > 0 || cn)
            lit(b, "\n");
        lit(b, "<tool_call>\n{\"name\": \"");
        puts_(b, txt(tc->calls[k].name));
        lit(b, "\", \"arguments\": ");
        puts_(b, txt(tc->calls[k].arguments));
        lit(b, "}\n</tool_call>");
    }
    lit(b, "<|im_end|>\n");
    return MK_OK;
}

static bool tool_response_wrapped(const char *c) {
    size_t n = strlen(c), a = strlen("<tool_response>"), z = strlen("</tool_response>");
    return n >= a && n >= z && memcmp(c, "<tool_response>", a) == 0 && memcmp(c + n - z, "</tool_response>", z) == 0;
}

static mk_status render_qwen3(mk_chat_kind kind, const mk_chat_msg *m, size_t n, unsigned flags, sb *b) {
    if (b->tools && b->tools->n && kind == MK_CHAT_QWEN35) {
        lit(b, "<|im_start|>system\n# Tools\n\nYou have access to the following functions:\n\n<tools>");
        for (size_t i = 0; i < b->tools->n; i++) {
            lit(b, "\n");
            puts_(b, b->tools->json[i]);
        }
        lit(b, "\n</tools>\n\nIf you choose to call a function ONLY reply in the following format with NO suffix:"
               "\n\n<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\nvalue_1\n"
               "</parameter>\n<parameter=example_parameter_2>\nThis is the value for the second parameter\nthat "
               "can span\nmultiple lines\n</parameter>\n</function>\n</tool_call>\n\n<IMPORTANT>\nReminder:\n- "
               "Function calls MUST follow the specified format: an inner <function=...></function> block must be "
               "nested within <tool_call></tool_call> XML tags\n- Required parameters MUST be specified\n- You may "
               "provide optional reasoning for your function call in natural language BEFORE the function call, "
               "but NOT after\n- If there is no function call available, answer the question like normal with "
               "your current knowledge and do not tell the user about function calls\n</IMPORTANT>");
        if (n && is_role(&m[0], "system")) { /* render_content(...)|trim */
            const char *c = txt(m[0].content);
            size_t cn = strlen(c);
            py_strip(&c, &cn);
            if (cn) {
                lit(b, "\n\n");
                put(b, c, cn);
            }
        }
        lit(b, "<|im_end|>\n");
    } else if (b->tools && b->tools->n) {
        lit(b, "<|im_start|>system\n");
        if (n && is_role(&m[0], "system")) {
            puts_(b, txt(m[0].content));
            lit(b, "\n\n");
        }
        lit(b, "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are "
               "provided with function signatures within <tools></tools> XML tags:\n<tools>");
        for (size_t i = 0; i < b->tools->n; i++) {
            lit(b, "\n");
            puts_(b, b->tools->json[i]);
        }
        lit(b, "\n</tools>\n\nFor each function call, return a json object with function name and "
               "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": "
               "<function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n");
    } else if (n && is_role(&m[0], "system")) {
        lit(b, "<|im_start|>system\n");
        puts_(b, txt(m[0].content));
        lit(b, "<|im_end|>\n");
    }
    /* The last user turn that is a real query (not wrapped tool output). */
    size_t last_query = n ? n - 1 : 0;
    for (size_t i = n; i-- > 0;)
        if (is_role(&m[i], "user") && !tool_response_wrapped(txt(m[i].content))) {
            last_query = i;
            break;
        }
    for (size_t i = 0; i < n; i++) {
        if (is_role(&m[i], "user") || (is_role(&m[i], "system") && i > 0)) {
            lit(b, "<|im_start|>");
            puts_(b, m[i].role);
            lit(b, "\n");
            puts_(b, txt(m[i].content));
            lit(b, "<|im_end|>\n");
        } else if (is_role(&m[i], "assistant")) {
            mk_status st = qwen3_assistant(kind, &m[i], b->tools && b->tools->msg ? &b->tools->msg[i] : NULL,
                                           i > last_query, i + 1 == n, b);
            if (st != MK_OK)
                return st;
        } else if (is_role(&m[i], "tool")) {
            if (i == 0 || !is_role(&m[i - 1], "tool"))
                lit(b, "<|im_start|>user");
            lit(b, "\n<tool_response>\n");
            puts_(b, txt(m[i].content));
            lit(b, "\n</tool_response>");
            if (i + 1 == n || !is_role(&m[i + 1], "tool"))
                lit(b, "<|im_end|>\n");
        } else if (!is_role(&m[i], "system")) {
            return bad_role(i, &m[i], mk_chat_kind_name(kind));
        }
    }
    if (flags & MK_CHAT_GENERATION_PROMPT) {
        lit(b, "<|im_start|>assistant\n");
        if (flags & MK_CHAT_NO_THINKING)
            lit(b, "<think>\n\n</think>\n\n");
        else if (kind == MK_CHAT_QWEN3_THINK || kind == MK_CHAT_QWEN35)
            lit(b, "<think>\n");
    }
    return MK_OK;
}

static mk_status render_deepseek3(const mk_chat_msg *m, size_t n, unsigned flags, sb *b) {
    lit(b, "<｜begin▁of▁sentence｜>");
    bool first_sp = true, is_tool = false, output_first = true;
    for (size_t i = 0; i < n; i++) /* every system message, joined by a blank line */
        if (is_role(&m[i], "system")) {
            if (!first_sp)
                lit(b, "\n\n");
            puts_(b, txt(m[i].content));
            first_sp = false;
        }
    for (size_t i = 0; i < n; i++) {
        const char *c = txt(m[i].content);
        if (is_role(&m[i], "user")) {
            is_tool = false;
            lit(b, "<｜User｜>");
            puts_(b, c);
        } else if (is_role(&m[i], "assistant")) {
            lit(b, is_tool ? "<｜tool▁outputs▁end｜>" : "<｜Assistant｜>");
            puts_(b, c);
            lit(b, "<｜end▁of▁sentence｜>");
            is_tool = false;
        } else if (is_role(&m[i], "tool")) {
            is_tool = true;
            /* The reference never resets is_output_first: kept as is. */
            lit(b, output_first ? "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>"
                                  : "\n<｜tool▁output▁begin｜>");
            output_first = false;
            puts_(b, c);
            lit(b, "<｜tool▁output▁end｜>");
        } else if (!is_role(&m[i], "system")) {
            return bad_role(i, &m[i], "deepseek3");
        }
    }
    if (is_tool)
        lit(b, "<｜tool▁outputs▁end｜>");
    if ((flags & MK_CHAT_GENERATION_PROMPT) && !is_tool)
        lit(b, "<｜Assistant｜>");
    return MK_OK;
}

static void tool_function_json(sb *b, const char *tool);
static void arg_value(sb *b, const json_t *v);

/* DeepSeek-V3.2's DSML tool calls of message i: '\n\n<｜DSML｜function_calls>\n',
 * per call '<｜DSML｜invoke name="N">\n' + '<｜DSML｜parameter name="K"
 * string="true|false">V</｜DSML｜parameter>\n' per argument (V as is when a
 * string, else its tojson) + '</｜DSML｜invoke>\n', then
 * '</｜DSML｜function_calls>'. The arguments must be a JSON object (the
 * template iterates them). */
static mk_status dsml_calls(const mk_chat_msg_calls *tc, size_t i, sb *b) {
    if (!tc || !tc->n)
        return MK_OK;
    lit(b, "\n\n<｜DSML｜function_calls>\n");
    for (size_t k = 0; k < tc->n; k++) {
        json_t *args = call_args(tc, k, i, "deepseek3.2");
        if (!args)
            return MK_E_ARG;
        lit(b, "<｜DSML｜invoke name=\"");
        puts_(b, txt(tc->calls[k].name));
        lit(b, "\">\n");
        const char *key;
        json_t *v;
        json_object_foreach(args, key, v) {
            lit(b, "<｜DSML｜parameter name=\"");
            puts_(b, key);
            lit(b, json_is_string(v) ? "\" string=\"true\">" : "\" string=\"false\">");
            arg_value(b, v);
            lit(b, "</｜DSML｜parameter>\n");
        }
        json_decref(args);
        lit(b, "</｜DSML｜invoke>\n");
    }
    lit(b, "</｜DSML｜function_calls>");
    return MK_OK;
}

/* DeepSeek-V3.2 (llama.cpp's models/templates/deepseek-ai-DeepSeek-V3.2.jinja,
 * thinking off, its default; DeepSeek ships no Jinja template for V3.2, only
 * a Python encoder, and that template writes its DSML format): the system
 * messages joined by a blank line after the BOS, then the tools (a header
 * with the DSML instructions, tojson of each tool's function per line, in
 * <functions></functions>); '<｜Assistant｜></think>' opens an assistant turn
 * that follows a user turn, '\n\n</think>' one that follows the last result
 * of a call (one following another assistant turn gets no marker),
 * reasoning_content is not written; tool results
 * '\n\n<function_results>\n<result>{t}</result>...\n</function_results>',
 * counted against the calls of the last assistant turn with calls (the
 * template raises with none); the generation prompt is
 * '<｜Assistant｜><think></think>' after a user turn, '\n\n<think></think>'
 * after the results. */
static mk_status render_deepseek32(const mk_chat_msg *m, size_t n, unsigned flags, sb *b) {
    lit(b, "<｜begin▁of▁sentence｜>");
    bool first_sp = true, pending = false, pending_tool = false;
    for (size_t i = 0; i < n; i++)
        if (is_role(&m[i], "system")) {
            if (!first_sp)
                lit(b, "\n\n");
            puts_(b, txt(m[i].content));
            first_sp = false;
        }
    if (b->tools && b->tools->n) {
        if (b->n > strlen("<｜begin▁of▁sentence｜>")) /* a system prompt before: a blank line */
            lit(b, "\n\n");
        lit(b, "## Tools\n\nYou have access to a set of tools you can use to answer the user's question.\n"
               "You can invoke functions by writing a \"<｜DSML｜function_calls>\" block like the following as "
               "part of your reply to the user:\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"$FUNCTION_NAME\">\n"
               "<｜DSML｜parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</｜DSML｜parameter>"
               "\n...\n</｜DSML｜invoke>\n<｜DSML｜invoke name=\"$FUNCTION_NAME2\">\n...\n</｜DSML｜invoke>\n"
               "</｜DSML｜function_calls>\n\nString and scalar parameters should be specified as is without any "
               "escaping or quotes, while lists and objects should use JSON format. The \"string\" attribute should "
               "be set to \"true\" for string type parameters and \"false\" for other types (numbers, booleans, "
               "arrays, objects).\n\nIf the thinking_mode is enabled, then after function results you should "
               "strongly consider outputting a thinking block. Here is an example:\n\n<｜DSML｜function_calls>\n...\n"
               "</｜DSML｜function_calls>\n\n<function_results>\n...\n</function_results>\n\n<think>...thinking about "
               "results</think>\n\nHere are the functions available in JSONSchema format:\n<functions>\n");
        for (size_t t = 0; t < b->tools->n; t++) {
            tool_function_json(b, b->tools->json[t]);
            lit(b, "\n");
        }
        lit(b, "</functions>\n");
    }
    const mk_chat_msg_calls *mc = b->tools ? b->tools->msg : NULL;
    long called = -1; /* the last assistant turn with calls */
    for (size_t i = 0; i < n; i++) {
        if (is_role(&m[i], "user")) {
            lit(b, "<｜User｜>");
            puts_(b, txt(m[i].content));
            pending = true;
            pending_tool = false;
        } else if (is_role(&m[i], "assistant")) {
            if (pending)
                lit(b, "<｜Assistant｜></think>");
            else if (pending_tool)
                lit(b, "\n\n</think>");
            pending = pending_tool = false;
            puts_(b, txt(m[i].content));
            mk_status st = dsml_calls(mc ? &mc[i] : NULL, i, b);
            if (st != MK_OK)
                return st;
            if (mc && mc[i].n)
                called = (long)i;
            lit(b, "<｜end▁of▁sentence｜>");
        } else if (is_role(&m[i], "tool")) {
            if (called < 0)
                return no_tool_call(i, "deepseek3.2");
            /* the template's count: the distance to the turn with the calls */
            size_t order = i - (size_t)called;
            if (order == 1)
                lit(b, "\n\n<function_results>");
            lit(b, "\n<result>");
            puts_(b, txt(m[i].content));
            lit(b, "</result>");
            if (order == mc[called].n) {
                lit(b, "\n</function_results>");
                pending = false;
                pending_tool = true;
            }
        } else if (!is_role(&m[i], "system")) {
            return bad_role(i, &m[i], "deepseek3.2");
        }
    }
    if ((flags & MK_CHAT_GENERATION_PROMPT) && pending)
        lit(b, "<｜Assistant｜><think></think>");
    else if ((flags & MK_CHAT_GENERATION_PROMPT) && pending_tool)
        lit(b, "\n\n<think></think>");
    return MK_OK;
}

/* ---- GLM-4.5 / 4.6 / 4.7, MiniMax-M2, harmony (gpt-oss) ------------------
 *
 * Reference templates: the chat_template.jinja each model ships, as
 * llama.cpp's source carries them in models/templates (the test-only peer of
 * scripts/install-deps.d/llama.sh), rendered by @huggingface/jinja in
 * tests/cli/chat_templates.sh. Where the template raises (a tool result
 * with no tool call before it) or silently drops a message (a second
 * system message), the renderer refuses with MK_E_ARG. */

/* Python's str.isspace, what the templates' strip() removes. */
static bool py_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

/* Decode the UTF-8 character at s (n > 0 bytes left); invalid bytes count
 * as one non-space byte (the encoder refuses invalid UTF-8 later). */
static uint32_t u8_at(const char *s, size_t n, size_t *len) {
    const unsigned char *u = (const unsigned char *)s;
    *len = 1;
    if (u[0] < 0x80)
        return u[0];
    size_t need = u[0] >= 0xF0 ? 4 : u[0] >= 0xE0 ? 3 : u[0] >= 0xC0 ? 2 : 0;
    if (!need || need > n)
        return 0xFFFD;
    uint32_t c = u[0] & (0x7F >> need);
    for (size_t i = 1; i < need; i++) {
        if ((u[i] & 0xC0) != 0x80)
            return 0xFFFD;
        c = c << 6 | (u[i] & 0x3F);
    }
    *len = need;
    return c;
}

/* str.strip(): both ends. */
static void py_strip(const char **s, size_t *n) {
    size_t l;
    while (*n && py_space(u8_at(*s, *n, &l)))
        *s += l, *n -= l;
    while (*n) {
        size_t i = *n - 1;
        while (i > 0 && ((unsigned char)(*s)[i] & 0xC0) == 0x80)
            i--;
        if (!py_space(u8_at(*s + i, *n - i, &l)))
            break;
        *n = i;
    }
}

/* s[0..n) contains needle? */
static const char *memstr(const char *s, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; k <= n && i <= n - k; i++)
        if (memcmp(s + i, needle, k) == 0)
            return s + i;
    return NULL;
}

static const char *memrstr(const char *s, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = n >= k ? n - k + 1 : 0; i-- > 0;)
        if (memcmp(s + i, needle, k) == 0)
            return s + i;
    return NULL;
}

/* The inline-reasoning split both GLM's and MiniMax's templates do when
 * reasoning_content is absent and the content holds '</think>':
 *   reasoning = content.split('</think>')[0].<trim>.split('<think>')[-1].<trim>
 *   content   = content.split('</think>')[-1].<trim>
 * where <trim> strips '\n' at the right then left (GLM: rstrip, then lstrip
 * of the reasoning and of the content) or at both ends (MiniMax: strip). */
static void split_think(const char **c, size_t *cn, const char **r, size_t *rn, bool both) {
    const char *first = memstr(*c, *cn, "</think>"), *last = memrstr(*c, *cn, "</think>");
    const char *x = *c;
    size_t xn = (size_t)(first - *c);
    strip_nl(&x, &xn, both, true);
    const char *open = memrstr(x, xn, "<think>");
    if (open) {
        xn -= (size_t)(open + 7 - x);
        x = open + 7;
    }
    strip_nl(&x, &xn, true, both);
    *r = x;
    *rn = xn;
    const char *y = last + 8;
    size_t yn = *cn - (size_t)(y - *c);
    strip_nl(&y, &yn, true, both);
    *c = y;
    *cn = yn;
}

static bool ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && memcmp(s + n - k, suf, k) == 0;
}

/* GLM-4.5/4.6's tool calls of message i: '\n<tool_call>N\n' then
 * '<arg_key>K</arg_key>\n<arg_value>V</arg_value>\n' per argument (V as
 * is when a string, else its tojson) and '</tool_call>'; GLM-4.7's
 * (compact) the same without any of those newlines. The template
 * iterates the arguments as a mapping: text that is not a JSON object is
 * MK_E_ARG, as the template raises. */
static mk_status glm4_calls(const mk_chat_msg_calls *tc, size_t i, bool compact, sb *b) {
    for (size_t k = 0; tc && k < tc->n; k++) {
        json_t *args = call_args(tc, k, i, compact ? "glm4.7" : "glm4");
        if (!args)
            return MK_E_ARG;
        lit(b, compact ? "<tool_call>" : "\n<tool_call>");
        puts_(b, txt(tc->calls[k].name));
        if (!compact)
            lit(b, "\n");
        const char *key;
        json_t *v;
        json_object_foreach(args, key, v) {
            lit(b, "<arg_key>");
            puts_(b, key);
            lit(b, compact ? "</arg_key><arg_value>" : "</arg_key>\n<arg_value>");
            if (json_is_string(v)) {
                put(b, json_string_value(v), json_string_length(v));
            } else {
                char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
                if (!t)
                    b->oom = true;
                else
                    puts_(b, t);
                free(t);
            }
            lit(b, compact ? "</arg_value>" : "</arg_value>\n");
        }
        json_decref(args);
        lit(b, "</tool_call>");
    }
    return MK_OK;
}

static mk_status render_glm4(const mk_chat_msg *m, size_t n, unsigned flags, sb *b) {
    lit(b, "[gMASK]<sop>");
    if (b->tools && b->tools->n) {
        lit(b, "<|system|>\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
               "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n");
        for (size_t i = 0; i < b->tools->n; i++) {
            puts_(b, b->tools->json[i]);
            lit(b, "\n");
        }
        lit(b, "</tools>\n\nFor each function call, output the function name and arguments within the "
               "following XML format:\n<tool_call>{function-name}\n<arg_key>{arg-key-1}</arg_key>\n"
               "<arg_value>{arg-value-1}</arg_value>\n<arg_key>{arg-key-2}</arg_key>\n"
               "<arg_value>{arg-value-2}</arg_value>\n...\n</tool_call>");
    }
    long last_user = -1;
    for (size_t i = 0; i < n; i++)
        if (is_role(&m[i], "user"))
            last_user = (long)i;
    for (size_t i = 0; i < n; i++) {
        const char *c = txt(m[i].content);
        if (is_role(&m[i], "user")) {
            lit(b, "<|user|>\n");
            puts_(b, c);
            if ((flags & MK_CHAT_NO_THINKING) && !ends_with(c, "/nothink"))
                lit(b, "/nothink");
        } else if (is_role(&m[i], "assistant")) {
            size_t cn = strlen(c), rn = 0;
            const char *r = "";
            if (m[i].reasoning) {
                r = m[i].reasoning;
                rn = strlen(r);
            } else if (memstr(c, cn, "</think>")) {
                split_think(&c, &cn, &r, &rn, false);
            }
            lit(b, "<|assistant|>");
            if ((long)i > last_user && rn) {
                py_strip(&r, &rn);
                lit(b, "\n<think>");
                put(b, r, rn);
                lit(b, "</think>");
            } else {
                lit(b, "\n<think></think>");
            }
            py_strip(&c, &cn);
            if (cn) {
                lit(b, "\n");
                put(b, c, cn);
            }
            mk_status st = glm4_calls(b->tools && b->tools->msg ? &b->tools->msg[i] : NULL, i, false, b);
            if (st != MK_OK)
                return st;
        } else if (is_role(&m[i], "tool")) {
            if (i == 0 || !is_role(&m[i - 1], "tool"))
                lit(b, "<|observation|>");
            lit(b, "\n<tool_response>\n");
            puts_(b, c);
            lit(b, "\n</tool_response>");
        } else if (is_role(&m[i], "system")) {
            lit(b, "<|system|>\n");
            puts_(b, c);
        } else {
            return bad_role(i, &m[i], "glm4");
        }
    }
    if (flags & MK_CHAT_GENERATION_PROMPT)
        lit(b, (flags & MK_CHAT_NO_THINKING) ? "<|assistant|>\n<think></think>" : "<|assistant|>");
    return MK_OK;
}

/* GLM-4.7 / GLM-4.7-Flash: GLM-4.6's roles without the newline after the
 * markers; an assistant turn writes '<think>{r}</think>' only after the last
 * user turn and when it has reasoning, a bare '</think>' otherwise; tool
 * results need no tool call before them; the generation prompt is
 * '<|assistant|><think>' ('<|assistant|></think>' with enable_thinking=false).
 * clear_thinking (keep every turn's reasoning) is not offered. Tools: GLM-4.6's
 * system turn with a compact example call; calls compact,
 * '<tool_call>N<arg_key>K</arg_key><arg_value>V</arg_value></tool_call>'. */
static mk_status render_glm47(const mk_chat_msg *m, size_t n, unsigned flags, sb *b) {
    lit(b, "[gMASK]<sop>");
    if (b->tools && b->tools->n) { /* GLM-4.6's tool prompt, its example call compact */
        lit(b, "<|system|>\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
               "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n");
        for (size_t i = 0; i < b->tools->n; i++) {
            puts_(b, b->tools->json[i]);
            lit(b, "\n");
        }
        lit(b, "</tools>\n\nFor each function call, output the function name and arguments within the "
               "following XML format:\n<tool_call>{function-name}<arg_key>{arg-key-1}</arg_key>"
               "<arg_value>{arg-value-1}</arg_value><arg_key>{arg-key-2}</arg_key>"
               "<arg_value>{arg-value-2}</arg_value>...</tool_call>");
    }
    long last_user = -1;
    for (size_t i = 0; i < n; i++)
        if (is_role(&m[i], "user"))
            last_user = (long)i;
    for (size_t i = 0; i < n; i++) {
        const char *c = txt(m[i].content);
        if (is_role(&m[i], "user")) {
            lit(b, "<|user|>");
            puts_(b, c);
        } else if (is_role(&m[i], "assistant")) {
            size_t cn = strlen(c), rn = 0;
            const char *r = "";
            if (m[i].reasoning) {
                r = m[i].reasoning;
                rn = strlen(r);
            } else if (memstr(c, cn, "</think>")) {
                split_think(&c, &cn, &r, &rn, false);
            }
            lit(b, "<|assistant|>");
            if ((long)i > last_user && rn) {
                py_strip(&r, &rn);
                lit(b, "<think>");
                put(b, r, rn);
                lit(b, "</think>");
            } else {
                lit(b, "</think>");
            }
            py_strip(&c, &cn);
            put(b, c, cn);
            mk_status st = glm4_calls(b->tools && b->tools->msg ? &b->tools->msg[i] : NULL, i, true, b);
            if (st != MK_OK)
                return st;
        } else if (is_role(&m[i], "tool")) {
            if (i == 0 || !is_role(&m[i - 1], "tool"))
                lit(b, "<|observation|>");
            lit(b, "<tool_response>");
            puts_(b, c);
            lit(b, "</tool_response>");
        } else if (is_role(&m[i], "system")) {
            lit(b, "<|system|>");
            puts_(b, c);
        } else {
            return bad_role(i, &m[i], "glm4.7");
        }
    }
    if (flags & MK_CHAT_GENERATION_PROMPT)
        lit(b, (flags & MK_CHAT_NO_THINKING) ? "<|assistant|></think>" : "<|assistant|><think>");
    return MK_OK;
}

static mk_status no_tool_call(size_t i, const char *kind) {
    return mk_err(MK_E_ARG, "chat message %zu: a tool result with no assistant tool call before it: the %s "
                  "template refuses it (moekit renders no tool calls)", i, kind);
}

static mk_status dropped(size_t i, const mk_chat_msg *m, const char *kind) {
    return mk_err(MK_E_ARG, "chat message %zu: the %s template drops a '%s' message here (only the first "
                  "message may be one); refusing rather than losing it", i, kind, m->role);
}

/* A tool's "function" member as tojson prints it (MiniMax-M2 lists those). */
static void tool_function_json(sb *b, const char *tool) {
    json_error_t e;
    json_t *t = json_loads(tool, 0, &e);
    char *f = t ? json_dumps(json_object_get(t, "function"), JSON_PRESERVE_ORDER) : NULL;
    if (!f)
        b->oom = true; /* request.c validated the tool: only memory can fail */
    else
        puts_(b, f);
    free(f);
    if (t)
        json_decref(t);
}

/* An argument value as the XML templates print it: a string as is, else tojson. */
static void arg_value(sb *b, const json_t *v) {
    if (json_is_string(v)) {
        put(b, json_string_value(v), json_string_length(v));
        return;
    }
    char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
    if (!t)
        b->oom = true;
    else
        puts_(b, t);
    free(t);
}

/* MiniMax-M2's tool calls of message i: '\n<minimax:tool_call>\n', per call
 * '<invoke name="N">\n' + '<parameter name="K">V</parameter>\n' per
 * argument + '</invoke>\n', then '</minimax:tool_call>'. */
static mk_status minimax_calls(const mk_chat_msg_calls *tc, size_t i, sb *b) {
    if (!tc || !tc->n)
        return MK_OK;
    lit(b, "\n<minimax:tool_call>\n");
    for (size_t k = 0; k < tc->n; k++) {
        json_t *args = call_args(tc, k, i, "minimax-m2");
        if (!args)
            return MK_E_ARG;
        lit(b, "<invoke name=\"");
        puts_(b, txt(tc->calls[k].name));
        lit(b, "\">\n");
        const char *key;
        json_t *v;
        json_object_foreach(args, key, v) {
            lit(b, "<parameter name=\"");
            puts_(b, key);
            lit(b, "\">");
            arg_value(b, v);
            lit(b, "</parameter>\n");
        }
        json_decref(args);
        lit(b, "</invoke>\n");
    }
    lit(b, "</minimax:tool_call>");
    return MK_OK;
}

static mk_status render_minimax_m2(const mk_chat_msg *m, size_t n, unsigned flags, sb *b) {
    size_t first = n && is_role(&m[0], "system") ? 1 : 0;
    long last_user = -1;
    for (size_t i = first; i < n; i++)
        if (is_role(&m[i], "user"))
            last_user = (long)(i - first);
    lit(b, "]~!b[]~b]system\n");
    if (first && *txt(m[0].content))
        puts_(b, m[0].content);
    else
        lit(b, "You are a helpful assistant.");
    if (b->tools && b->tools->n) {
        lit(b, "\n\n# Tools\nYou may call one or more tools to assist with the user query.\nHere are the tools "
               "available in JSONSchema format:\n\n<tools>\n");
        for (size_t t = 0; t < b->tools->n; t++) {
            lit(b, "<tool>");
            tool_function_json(b, b->tools->json[t]);
            lit(b, "</tool>\n");
        }
        lit(b, "</tools>\n\nWhen making tool calls, use XML format to invoke tools and pass parameters:\n\n"
               "<minimax:tool_call>\n<invoke name=\"tool-name-1\">\n<parameter name=\"param-key-1\">param-value-1"
               "</parameter>\n<parameter name=\"param-key-2\">param-value-2</parameter>\n...\n</invoke>\n"
               "</minimax:tool_call>");
    }
    lit(b, "[e~[\n");
    bool called = false; /* the last assistant turn called tools: tool results may follow */
    for (size_t i = first; i < n; i++) {
        const char *c = txt(m[i].content);
        if (is_role(&m[i], "assistant")) {
            size_t cn = strlen(c), rn = 0;
            const char *r = "";
            lit(b, "]~b]ai\n");
            if (m[i].reasoning) {
                r = m[i].reasoning;
                rn = strlen(r);
            } else if (memstr(c, cn, "</think>")) {
                split_think(&c, &cn, &r, &rn, true);
            }
            if (rn && (long)(i - first) > last_user) {
                lit(b, "<think>\n");
                put(b, r, rn);
                lit(b, "\n</think>\n\n");
            }
            put(b, c, cn);
            const mk_chat_msg_calls *tc = b->tools && b->tools->msg ? &b->tools->msg[i] : NULL;
            mk_status st = minimax_calls(tc, i, b);
            if (st != MK_OK)
                return st;
            called = tc && tc->n;
            lit(b, "[e~[\n");
        } else if (is_role(&m[i], "user")) {
            lit(b, "]~b]user\n");
            puts_(b, c);
            lit(b, "[e~[\n");
        } else if (is_role(&m[i], "tool")) {
            if (!called)
                return no_tool_call(i, "minimax-m2");
            if (i == first || !is_role(&m[i - 1], "tool"))
                lit(b, "]~b]tool");
            lit(b, "\n<response>");
            puts_(b, c);
            lit(b, "</response>");
            if (i + 1 == n || !is_role(&m[i + 1], "tool"))
                lit(b, "[e~[\n");
        } else if (is_role(&m[i], "system")) {
            return dropped(i, &m[i], "minimax-m2");
        } else {
            return bad_role(i, &m[i], "minimax-m2");
        }
    }
    if (flags & MK_CHAT_GENERATION_PROMPT)
        lit(b, "]~b]ai\n<think>\n");
    return MK_OK;
}

/* ---- harmony (gpt-oss) tools: the released template's TypeScript-like
 * namespace (render_typescript_type, render_tool_namespace), reproduced
 * branch by branch; what the template cannot render (it raises) or that is
 * not reproduced yet (oneOf) is refused, never approximated. */

/* Jinja's truthiness of a JSON value (absent: false). */
static bool truthy(const json_t *v) {
    if (!v || json_is_null(v) || json_is_false(v))
        return false;
    if (json_is_string(v))
        return json_string_length(v) > 0;
    if (json_is_integer(v))
        return json_integer_value(v) != 0;
    if (json_is_real(v))
        return json_real_value(v) != 0;
    if (json_is_array(v))
        return json_array_size(v) > 0;
    if (json_is_object(v))
        return json_object_size(v) > 0;
    return true;
}

static bool str_is(const json_t *v, const char *s) { return json_is_string(v) && !strcmp(json_string_value(v), s); }

/* tojson of any value: Python's separators, the given key order. */
static void put_tojson(sb *b, const json_t *v) {
    char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
    if (!t)
        b->oom = true;
    else
        puts_(b, t);
    free(t);
}

/* tojson of a string as Python's json.dumps(ensure_ascii=False) writes it:
 * \uXXXX in lower case for the control characters without a short form. */
static void put_json_string(sb *b, const char *s) {
    put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        char e[8];
        switch (ch) {
        case '"': put(b, "\\\"", 2); break;
        case '\\': put(b, "\\\\", 2); break;
        case '\n': put(b, "\\n", 2); break;
        case '\r': put(b, "\\r", 2); break;
        case '\t': put(b, "\\t", 2); break;
        case '\b': put(b, "\\b", 2); break;
        case '\f': put(b, "\\f", 2); break;
        default:
            if (ch < 0x20) {
                snprintf(e, sizeof e, "\\u%04x", ch);
                put(b, e, 6);
            } else {
                put(b, s, 1);
            }
        }
    }
    put(b, "\"", 1);
}

static mk_status harmony_refuse(const char *tool, const char *what) {
    return mk_err(MK_E_UNSUPPORTED, "tools: function '%s': %s: not rendered for the harmony template (its "
                  "released template cannot render it or moekit does not reproduce it yet)", tool, what);
}

/* '"a" | "b"' from a list of strings joined by sep. */
static bool join_strings(sb *b, const json_t *a, const char *sep, const char *quote) {
    for (size_t k = 0; k < json_array_size(a); k++) {
        const json_t *e = json_array_get(a, k);
        if (!json_is_string(e))
            return false;
        if (k)
            puts_(b, sep);
        puts_(b, quote);
        puts_(b, json_string_value(e));
        puts_(b, quote);
    }
    return true;
}

static size_t u8_chars(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

static bool in_required(const json_t *req, const char *name) {
    for (size_t k = 0; k < json_array_size(req); k++)
        if (str_is(json_array_get(req, k), name))
            return true;
    return false;
}

/* render_typescript_type(spec): a schema as a TypeScript type. */
static mk_status ts_type(sb *b, const json_t *s, const char *tool, int depth) {
    if (depth > 32)
        return harmony_refuse(tool, "a schema nested deeper than 32 levels");
    const json_t *type = json_object_get(s, "type");
    bool nullable = truthy(json_object_get(s, "nullable"));
    if (str_is(type, "array")) {
        const json_t *items = json_object_get(s, "items");
        if (!truthy(items)) {
            lit(b, "any[]");
        } else {
            const json_t *it = json_object_get(items, "type");
            if (str_is(it, "string")) {
                lit(b, "string[]");
            } else if (str_is(it, "number") || str_is(it, "integer")) {
                lit(b, "number[]");
            } else if (str_is(it, "boolean")) {
                lit(b, "boolean[]");
            } else {
                sb in = {0};
                mk_status st = ts_type(&in, items, tool, depth + 1);
                if (st == MK_OK && !in.oom) {
                    /* |length counts characters */
                    if (!strcmp(in.p, "object | object") || u8_chars(in.p, in.n) > 50) {
                        lit(b, "any[]");
                    } else {
                        put(b, in.p, in.n);
                        lit(b, "[]");
                    }
                }
                b->oom |= in.oom;
                free(in.p);
                free(in.ctl);
                if (st != MK_OK)
                    return st;
            }
        }
        if (nullable)
            lit(b, " | null");
        return MK_OK;
    }
    if (json_is_array(type) && json_array_size(type) >= 1) { /* a union of types */
        if (!join_strings(b, type, " | ", ""))
            return harmony_refuse(tool, "a \"type\" list holding a non-string");
        return MK_OK;
    }
    if (truthy(json_object_get(s, "oneOf")))
        return harmony_refuse(tool, "\"oneOf\"");
    if (str_is(type, "string")) {
        const json_t *en = json_object_get(s, "enum");
        if (truthy(en)) {
            if (!json_is_array(en) || !join_strings(b, en, " | ", "\""))
                return harmony_refuse(tool, "an \"enum\" that is not a list of strings");
        } else {
            lit(b, "string");
            if (nullable)
                lit(b, " | null");
        }
    } else if (str_is(type, "number") || str_is(type, "integer")) {
        lit(b, "number");
    } else if (str_is(type, "boolean")) {
        lit(b, "boolean");
    } else if (str_is(type, "object")) {
        const json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
        if (!truthy(props)) {
            lit(b, "object");
            return MK_OK;
        }
        if (!json_is_object(props) || (truthy(req) && !json_is_array(req)))
            return harmony_refuse(tool, "\"properties\" not an object or \"required\" not a list");
        lit(b, "{\n");
        const char *key;
        const json_t *v;
        size_t k = 0, np = json_object_size(props);
        json_object_foreach((json_t *)props, key, v) {
            puts_(b, key);
            if (!in_required(req, key))
                lit(b, "?");
            /* the template's own white space: its '{{ ... }}' is not trimmed */
            lit(b, ": \n                ");
            mk_status st = ts_type(b, v, tool, depth + 1);
            if (st != MK_OK)
                return st;
            if (++k < np)
                lit(b, ", ");
        }
        lit(b, "}");
    } else {
        lit(b, "any");
    }
    return MK_OK;
}

/* render_tool_namespace("functions", tools) for one tool's JSON text. */
static mk_status harmony_tool(sb *b, const char *tool_json) {
    json_error_t e;
    json_t *t = json_loads(tool_json, 0, &e);
    if (!t) {
        b->oom = true; /* request.c wrote the text: only memory can fail */
        return MK_OK;
    }
    const json_t *fn = json_object_get(t, "function");
    const char *name = json_string_value(json_object_get(fn, "name"));
    const json_t *desc = json_object_get(fn, "description"), *params = json_object_get(fn, "parameters");
    mk_status st = MK_OK;
    if (!name)
        name = "";
    if (desc && !json_is_string(desc)) {
        st = harmony_refuse(name, "a \"description\" that is not a string");
        goto out;
    }
    /* A missing description renders as an empty one (the template itself
     * raises on it: '"// " + undefined'); nothing is lost. */
    lit(b, "// ");
    puts_(b, desc ? json_string_value(desc) : "");
    lit(b, "\ntype ");
    puts_(b, name);
    lit(b, " = ");
    const json_t *props = json_object_get(params, "properties");
    if (!truthy(params) || !truthy(props)) {
        lit(b, "() => any;\n\n");
        goto out;
    }
    const json_t *req = json_object_get(params, "required");
    if (!json_is_object(props) || (truthy(req) && !json_is_array(req))) {
        st = harmony_refuse(name, "\"properties\" not an object or \"required\" not a list");
        goto out;
    }
    lit(b, "(_: {\n");
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)props, key, v) {
        const json_t *pd = json_object_get(v, "description");
        if (truthy(pd)) {
            if (!json_is_string(pd)) {
                st = harmony_refuse(name, "a parameter's \"description\" that is not a string");
                goto out;
            }
            lit(b, "// ");
            puts_(b, json_string_value(pd));
            lit(b, "\n");
        }
        puts_(b, key);
        if (!in_required(req, key))
            lit(b, "?");
        lit(b, ": ");
        if ((st = ts_type(b, v, name, 0)) != MK_OK)
            goto out;
        const json_t *def = json_object_get(v, "default");
        if (def) {
            if (truthy(json_object_get(v, "enum"))) { /* '+ default': a string only */
                if (!json_is_string(def)) {
                    st = harmony_refuse(name, "a non-string \"default\" of an \"enum\"");
                    goto out;
                }
                lit(b, ", // default: ");
                puts_(b, json_string_value(def));
            } else {
                lit(b, ", // default: ");
                put_tojson(b, def);
            }
        }
        lit(b, ",\n");
    }
    lit(b, "}) => any;\n\n");
out:
    json_decref(t);
    return st;
}

/* The harmony arguments of a call: tojson of the arguments object. */
static mk_status harmony_args(sb *b, const mk_chat_tool_call *c, size_t i) {
    json_error_t e;
    json_t *a = json_loads(txt(c->arguments), JSON_DECODE_ANY, &e);
    if (!a)
        return mk_err(MK_E_ARG, "chat message %zu: tool call arguments are not JSON (line %d: %s)", i, e.line,
                      e.text);
    put_tojson(b, a);
    json_decref(a);
    return MK_OK;
}

/* gpt-oss's harmony format: <|start|>{role}<|message|>{text}<|end|>, the
 * assistant's answers on the final channel. The system message is the
 * template's (knowledge cutoff, today's date in UTC, reasoning effort
 * medium, the channel list); a first system or developer message becomes
 * the developer message's instructions, followed by the tools' namespace.
 * An assistant turn with a tool call: its content, else its reasoning, on
 * the analysis channel (only while no later assistant turn answers
 * without calls), then '<|start|>assistant to=functions.N<|channel|>
 * commentary json<|message|>{args}<|call|>'; a tool result is
 * '<|start|>functions.N to=assistant<|channel|>commentary<|message|>'
 * + its text as a JSON string + '<|end|>', N the last call's name. The
 * template renders one call per assistant turn (it would drop the
 * others): more are refused. */
static mk_status render_harmony(const mk_chat_msg *m, size_t n, unsigned flags, sb *b) {
    char date[32] = "1970-01-01";
    time_t now = time(NULL);
    struct tm tm;
    bool tools = b->tools && b->tools->n;
    const mk_chat_msg_calls *mc = b->tools ? b->tools->msg : NULL;
    if (now != (time_t)-1 && gmtime_r(&now, &tm))
        strftime(date, sizeof date, "%Y-%m-%d", &tm);
    lit(b, "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
           "Knowledge cutoff: 2024-06\nCurrent date: ");
    lit(b, date);
    lit(b, "\n\nReasoning: medium\n\n# Valid channels: analysis, commentary, final. Channel must be "
           "included for every message.");
    if (tools)
        lit(b, "\nCalls to these tools must go to the commentary channel: 'functions'.");
    lit(b, "<|end|>");
    size_t first = n && (is_role(&m[0], "system") || is_role(&m[0], "developer")) ? 1 : 0;
    bool dev = first && *txt(m[0].content);
    if (dev || tools)
        lit(b, "<|start|>developer<|message|>");
    if (dev) {
        lit(b, "# Instructions\n\n");
        puts_(b, m[0].content);
        /* The released template (hub, llama.cpp's openai-gpt-oss-120b.jinja)
         * ends the instructions with a blank line even when no tools follow. */
        lit(b, "\n\n");
    }
    if (tools) {
        lit(b, "# Tools\n\n## functions\n\nnamespace functions {\n\n");
        for (size_t t = 0; t < b->tools->n; t++) {
            mk_status st = harmony_tool(b, b->tools->json[t]);
            if (st != MK_OK)
                return st;
        }
        lit(b, "} // namespace functions");
    }
    if (dev || tools)
        lit(b, "<|end|>");
    const char *last_call = NULL; /* the name tool results answer to */
    for (size_t i = first; i < n; i++) {
        const char *c = txt(m[i].content);
        if (is_role(&m[i], "assistant")) {
            const char *r = txt(m[i].reasoning);
            if (strstr(c, "<|channel|>analysis<|message|>") || strstr(c, "<|channel|>final<|message|>") ||
                strstr(r, "<|channel|>analysis<|message|>") || strstr(r, "<|channel|>final<|message|>"))
                return mk_err(MK_E_ARG, "chat message %zu: assistant content or reasoning holds harmony channel "
                              "headers (<|channel|>...<|message|>); the harmony template refuses it", i);
            const mk_chat_msg_calls *tc = mc ? &mc[i] : NULL;
            if (tc && tc->n) {
                if (tc->n > 1)
                    return mk_err(MK_E_UNSUPPORTED, "chat message %zu: %zu tool calls in one assistant message: "
                                  "the harmony template renders only the first (send each call as an assistant "
                                  "message of its own)", i, tc->n);
                if (*c && *r)
                    return mk_err(MK_E_ARG, "chat message %zu: an assistant message with a tool call has both "
                                  "content and reasoning_content; the harmony template refuses it (it renders "
                                  "one of them on the analysis channel)", i);
                bool final_later = false; /* a later answer without calls drops this analysis */
                for (size_t j = i + 1; j < n; j++)
                    if (is_role(&m[j], "assistant") && !(mc && mc[j].n))
                        final_later = true;
                if ((*c || *r) && !final_later) {
                    lit(b, "<|start|>assistant<|channel|>analysis<|message|>");
                    puts_(b, *c ? c : r);
                    lit(b, "<|end|>");
                }
                lit(b, "<|start|>assistant to=functions.");
                puts_(b, txt(tc->calls[0].name));
                lit(b, "<|channel|>commentary json<|message|>");
                mk_status st = harmony_args(b, &tc->calls[0], i);
                if (st != MK_OK)
                    return st;
                lit(b, "<|call|>");
                last_call = txt(tc->calls[0].name);
            } else {
                lit(b, "<|start|>assistant<|channel|>final<|message|>");
                puts_(b, c);
                lit(b, i + 1 == n && !(flags & MK_CHAT_GENERATION_PROMPT) ? "<|return|>" : "<|end|>");
                last_call = NULL;
            }
        } else if (is_role(&m[i], "user")) {
            lit(b, "<|start|>user<|message|>");
            puts_(b, c);
            lit(b, "<|end|>");
        } else if (is_role(&m[i], "tool")) {
            if (!last_call)
                return no_tool_call(i, "harmony");
            lit(b, "<|start|>functions.");
            puts_(b, last_call);
            lit(b, " to=assistant<|channel|>commentary<|message|>");
            put_json_string(b, c);
            lit(b, "<|end|>");
        } else if (is_role(&m[i], "system") || is_role(&m[i], "developer")) {
            return dropped(i, &m[i], "harmony");
        } else {
            return bad_role(i, &m[i], "harmony");
        }
    }
    if (flags & MK_CHAT_GENERATION_PROMPT)
        lit(b, "<|start|>assistant");
    return MK_OK;
}

/* Kimi-K2-Instruct: <|im_{user,assistant,system}|>{role}<|im_middle|>{c}
 * <|im_end|> for every message (any other role under <|im_system|>); a
 * default system message when the first is not one; reasoning_content is
 * not rendered (the template ignores it) and content is kept as given; a
 * tool result is introduced as the return of 'functions.unknown:0' (moekit
 * renders no tool calls, whose ids would number it). A message's "name",
 * which the template would write instead of the role, is not supported. */
/* Kimi-K2's call id 'functions.N:K' of the k-th call of the conversation. */
static void kimi_call_id(sb *b, const mk_chat_msg_calls *mc, size_t n, size_t k) {
    size_t seen = 0;
    for (size_t i = 0; mc && i < n; i++) {
        if (k < seen + mc[i].n) {
            char num[32];
            lit(b, "functions.");
            puts_(b, txt(mc[i].calls[k - seen].name));
            snprintf(num, sizeof num, ":%zu", k);
            lit(b, num);
            return;
        }
        seen += mc[i].n;
    }
}

static mk_status render_kimi_k2(const mk_chat_msg *m, size_t n, unsigned flags, sb *b) {
    const mk_chat_msg_calls *mc = b->tools ? b->tools->msg : NULL;
    if (b->tools && b->tools->n) { /* {{ tools | tojson }}: the list, ", " between */
        lit(b, "<|im_system|>tool_declare<|im_middle|>[");
        for (size_t t = 0; t < b->tools->n; t++) {
            if (t)
                lit(b, ", ");
            puts_(b, b->tools->json[t]);
        }
        lit(b, "]<|im_end|>");
    }
    size_t counter = 0, answered = 0; /* calls so far; tool results that took their ids */
    for (size_t i = 0; i < n; i++) {
        if (!m[i].role)
            return bad_role(i, &m[i], "kimi-k2");
        if (i == 0 && !is_role(&m[0], "system"))
            lit(b, "<|im_system|>system<|im_middle|>You are Kimi, an AI assistant created by Moonshot AI."
                   "<|im_end|>\n");
        if (is_role(&m[i], "user")) {
            lit(b, "<|im_user|>user<|im_middle|>");
        } else if (is_role(&m[i], "assistant")) {
            lit(b, "<|im_assistant|>assistant<|im_middle|>");
        } else {
            lit(b, "<|im_system|>");
            puts_(b, m[i].role);
            lit(b, "<|im_middle|>");
        }
        if (is_role(&m[i], "tool")) {
            lit(b, "## Return of ");
            if (answered < counter) { /* the oldest call not yet answered */
                kimi_call_id(b, mc, n, answered++);
            } else {
                char num[48];
                snprintf(num, sizeof num, "functions.unknown:%zu", counter);
                lit(b, num);
            }
            lit(b, "\n");
        }
        puts_(b, txt(m[i].content));
        if (is_role(&m[i], "assistant") && mc && mc[i].n) {
            lit(b, "<|tool_calls_section_begin|>");
            for (size_t k = 0; k < mc[i].n; k++) {
                lit(b, "<|tool_call_begin|>");
                kimi_call_id(b, mc, n, counter++);
                lit(b, "<|tool_call_argument_begin|>");
                puts_(b, txt(mc[i].calls[k].arguments));
                lit(b, "<|tool_call_end|>");
            }
            lit(b, "<|tool_calls_section_end|>");
        }
        lit(b, "<|im_end|>");
    }
    if (flags & MK_CHAT_GENERATION_PROMPT)
        lit(b, "<|im_assistant|>assistant<|im_middle|>");
    return MK_OK;
}

static mk_status render(mk_chat_kind kind, const mk_chat_msg *msgs, size_t n, unsigned flags, sb *b) {
    mk_status st = MK_OK;
    put(b, "", 0);
    if (kind != MK_CHAT_QWEN3 && kind != MK_CHAT_QWEN3_THINK && kind != MK_CHAT_QWEN35 && kind != MK_CHAT_GLM4 &&
        kind != MK_CHAT_GLM47 && kind != MK_CHAT_MINIMAX_M2 && kind != MK_CHAT_KIMI_K2 && kind != MK_CHAT_HARMONY &&
        kind != MK_CHAT_DEEPSEEK32) {
        if (b->tools && b->tools->n)
            return mk_err(MK_E_UNSUPPORTED, "chat: tools are not rendered for the %s template yet (only qwen3, "
                          "qwen3-think, qwen3.5, glm4, glm4.7, minimax-m2, kimi-k2, harmony, deepseek3.2)",
                          mk_chat_kind_name(kind));
        for (size_t i = 0; b->tools && b->tools->msg && i < n; i++)
            if (b->tools->msg[i].n)
                return mk_err(MK_E_UNSUPPORTED, "chat message %zu: tool calls are not rendered for the %s "
                              "template yet (only qwen3, qwen3-think, qwen3.5, glm4, glm4.7, minimax-m2, kimi-k2, "
                              "harmony, deepseek3.2)", i, mk_chat_kind_name(kind));
    }
    switch (kind) {
    case MK_CHAT_CHATML: render_chatml(msgs, n, flags, b); break;
    case MK_CHAT_QWEN3:
    case MK_CHAT_QWEN3_THINK:
    case MK_CHAT_QWEN35: st = render_qwen3(kind, msgs, n, flags, b); break;
    case MK_CHAT_DEEPSEEK3: st = render_deepseek3(msgs, n, flags, b); break;
    case MK_CHAT_GLM4: st = render_glm4(msgs, n, flags, b); break;
    case MK_CHAT_GLM47: st = render_glm47(msgs, n, flags, b); break;
    case MK_CHAT_MINIMAX_M2: st = render_minimax_m2(msgs, n, flags, b); break;
    case MK_CHAT_HARMONY: st = render_harmony(msgs, n, flags, b); break;
    case MK_CHAT_KIMI_K2: st = render_kimi_k2(msgs, n, flags, b); break;
    case MK_CHAT_DEEPSEEK32: st = render_deepseek32(msgs, n, flags, b); break;
    default: st = mk_err(MK_E_ARG, "chat: unknown template kind %d", (int)kind);
    }
    if (st == MK_OK && b->oom)
        st = mk_err(MK_E_NOMEM, "chat: out of memory rendering %zu messages", n);
    return st;
}

mk_status mk_chat_render(mk_chat_kind kind, const mk_chat_msg *msgs, size_t n, unsigned flags, char **out) {
    return mk_chat_render_tools(kind, msgs, n, NULL, flags, out);
}

mk_status mk_chat_render_tools(mk_chat_kind kind, const mk_chat_msg *msgs, size_t n,
                               const mk_chat_tools *tools, unsigned flags, char **out) {
    if (!out || (!msgs && n))
        return mk_err(MK_E_ARG, "mk_chat_render: NULL argument");
    *out = NULL;
    sb b = {.tools = tools};
    mk_status st = render(kind, msgs, n, flags, &b);
    free(b.ctl);
    if (st != MK_OK) {
        free(b.p);
        return st;
    }
    *out = b.p;
    return MK_OK;
}

/* Every marker any of the templates writes. Tokenizers do not always flag
 * them special (DeepSeek-V3's <｜User｜> and <｜Assistant｜>, Qwen3's <think>
 * and <tool_call> are plain added tokens), yet each one in a message would
 * change the conversation's structure as the model reads it, whichever
 * template renders it; so none may match in message text. */
static const char *const g_markers[] = {
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_response>",
    "</tool_response>", "<tool_call>", "</tool_call>", "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<｜tool▁outputs▁begin｜>",
    "<｜tool▁outputs▁end｜>", "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>",
    "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>",
    "<｜tool▁sep｜>",
    /* GLM-4.5/4.6 */
    "[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
    /* MiniMax-M2 */
    "]~!b[", "]~b]", "[e~[", "<minimax:tool_call>", "</minimax:tool_call>",
    /* harmony (gpt-oss) */
    "<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|return|>", "<|call|>", "<|constrain|>",
    /* Kimi-K2 */
    "<|im_user|>", "<|im_assistant|>", "<|im_system|>", "<|im_middle|>", "<|tool_calls_section_begin|>",
    "<|tool_calls_section_end|>", "<|tool_call_begin|>", "<|tool_call_argument_begin|>", "<|tool_call_end|>",
    "<|media_start|>", "<|media_content|>", "<|media_pad|>", "<|media_end|>", NULL};

mk_status mk_chat_encode(const mk_tok *tok, mk_chat_kind kind, const mk_chat_msg *msgs, size_t n,
                         unsigned flags, int32_t **ids, size_t *n_ids) {
    return mk_chat_encode_tools(tok, kind, msgs, n, NULL, flags, ids, n_ids);
}

mk_status mk_chat_encode_tools(const mk_tok *tok, mk_chat_kind kind, const mk_chat_msg *msgs, size_t n,
                               const mk_chat_tools *tools, unsigned flags, int32_t **ids, size_t *n_ids) {
    if (!ids || !n_ids)
        return mk_err(MK_E_ARG, "mk_chat_encode: NULL argument");
    *ids = NULL;
    *n_ids = 0;
    if (!tok || (!msgs && n))
        return mk_err(MK_E_ARG, "mk_chat_encode: NULL argument");
    int32_t deny[sizeof g_markers / sizeof g_markers[0]];
    size_t nd = 0;
    for (size_t i = 0; g_markers[i]; i++) {
        int32_t id = mk_tok_token_id(tok, g_markers[i]);
        if (id >= 0)
            deny[nd++] = id;
    }
    sb b = {.tools = tools};
    mk_status st = render(kind, msgs, n, flags, &b);
    if (st == MK_OK)
        st = mk_tok_encode_ctl(tok, b.p, b.n, 0, b.ctl, b.nctl, deny, nd, ids, n_ids);
    free(b.ctl);
    free(b.p);
    return st;
}
