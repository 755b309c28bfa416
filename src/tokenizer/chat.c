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
    {"deepseek3", MK_CHAT_DEEPSEEK3},
};
#define KIND_NAMES "chatml, qwen3, qwen3-think, deepseek3"

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
        *out = MK_CHAT_DEEPSEEK3;
        return MK_OK;
    }
    if (strstr(j, "<|im_start|>")) {
        /* The generation prompt opens the thinking block: '<think>\n' output
         * on its own, or glued to the assistant header. Qwen3's hybrid
         * template only ever writes '\n<think>\n' inside a turn and the empty
         * block '<think>\n\n</think>\n\n'. */
        if (strstr(j, "'<think>\\n'") || strstr(j, "\"<think>\\n\"") ||
            strstr(j, "assistant\\n<think>\\n'") || strstr(j, "assistant\\n<think>\\n\""))
            *out = MK_CHAT_QWEN3_THINK;
        else if (strstr(j, "<think>"))
            *out = MK_CHAT_QWEN3;
        else
            *out = MK_CHAT_CHATML;
        return MK_OK;
    }
    return mk_err(MK_E_UNSUPPORTED,
                  "chat template not recognised (it has neither <|im_start|> nor <｜Assistant｜>); "
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
        json_t *cfg = mk_json_load_file(path, 0, &e, jmark);
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

/* Qwen3's assistant turn: split an inline <think>...</think> off the content
 * unless reasoning is given, and keep the think block only after the last
 * user query. */
static void qwen3_assistant(const mk_chat_msg *m, bool after_query, bool last, sb *b) {
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
    if (after_query && (last || rn)) {
        strip_nl(&r, &rn, true, true);
        strip_nl(&c, &cn, true, false);
        lit(b, "<think>\n");
        put(b, r, rn);
        lit(b, "\n</think>\n\n");
    }
    put(b, c, cn);
    lit(b, "<|im_end|>\n");
}

static bool tool_response_wrapped(const char *c) {
    size_t n = strlen(c), a = strlen("<tool_response>"), z = strlen("</tool_response>");
    return n >= a && n >= z && memcmp(c, "<tool_response>", a) == 0 && memcmp(c + n - z, "</tool_response>", z) == 0;
}

static mk_status render_qwen3(mk_chat_kind kind, const mk_chat_msg *m, size_t n, unsigned flags, sb *b) {
    if (n && is_role(&m[0], "system")) {
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
            qwen3_assistant(&m[i], i > last_query, i + 1 == n, b);
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
        else if (kind == MK_CHAT_QWEN3_THINK)
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

static mk_status render(mk_chat_kind kind, const mk_chat_msg *msgs, size_t n, unsigned flags, sb *b) {
    mk_status st = MK_OK;
    put(b, "", 0);
    switch (kind) {
    case MK_CHAT_CHATML: render_chatml(msgs, n, flags, b); break;
    case MK_CHAT_QWEN3:
    case MK_CHAT_QWEN3_THINK: st = render_qwen3(kind, msgs, n, flags, b); break;
    case MK_CHAT_DEEPSEEK3: st = render_deepseek3(msgs, n, flags, b); break;
    default: st = mk_err(MK_E_ARG, "chat: unknown template kind %d", (int)kind);
    }
    if (st == MK_OK && b->oom)
        st = mk_err(MK_E_NOMEM, "chat: out of memory rendering %zu messages", n);
    return st;
}

mk_status mk_chat_render(mk_chat_kind kind, const mk_chat_msg *msgs, size_t n, unsigned flags, char **out) {
    if (!out || (!msgs && n))
        return mk_err(MK_E_ARG, "mk_chat_render: NULL argument");
    *out = NULL;
    sb b = {0};
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
    "<｜tool▁sep｜>", NULL};

mk_status mk_chat_encode(const mk_tok *tok, mk_chat_kind kind, const mk_chat_msg *msgs, size_t n,
                         unsigned flags, int32_t **ids, size_t *n_ids) {
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
    sb b = {0};
    mk_status st = render(kind, msgs, n, flags, &b);
    if (st == MK_OK)
        st = mk_tok_encode_ctl(tok, b.p, b.n, 0, b.ctl, b.nctl, deny, nd, ids, n_ids);
    free(b.ctl);
    free(b.p);
    return st;
}
