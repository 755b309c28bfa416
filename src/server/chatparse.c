/* A chat completion's generated text split into reasoning, content and tool
 * calls, the way clients of reasoning and agent models expect them:
 *   - <think>...</think> (Qwen3 / Qwen3.5, GLM, MiniMax, DeepSeek, Kimi
 *     thinking models) goes to reasoning: from the start of the output
 *     when the prompt opened the block (srv_chat_think_open), or when the
 *     output begins with <think>;
 *   - gpt-oss (harmony) writes messages <|channel|>C<|message|>...<|end|>:
 *     channel analysis is reasoning, final (and commentary without a
 *     recipient, a preamble) content, commentary to=functions.N a call;
 *   - tool-call blocks (toolcall.c has the formats) become calls, only when
 *     the request gave tools.
 * The same function serves streams: each call parses the whole text so far
 * and holds back what a longer text could still change (a marker's
 * beginning at the end, an open tool block, trailing white space where it
 * is dropped at the end), so a
 * stream sends the differences and no markup ever reaches content. The
 * cost is a re-parse per event, linear in the text: fine for the lengths
 * a chat answer has. */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "server/srv_impl.h"

typedef struct buf {
    char *p;
    size_t n, cap;
    bool oom;
    bool lead; /* drop leading white space while still empty */
} buf;

static void add(buf *b, const char *s, size_t n) {
    if (b->oom || !n)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 64;
        while (c < b->n + n + 1)
            c *= 2;
        char *q = mk_realloc(b->p, c);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static bool is_ws(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

static const char *find(const char *s, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; k <= n && i <= n - k; i++)
        if (!memcmp(s + i, needle, k))
            return s + i;
    return NULL;
}

/* The length of the longest proper prefix of marker that s[0..n) ends with. */
static size_t partial(const char *s, size_t n, const char *marker) {
    size_t k = strlen(marker);
    for (size_t l = k - 1; l > 0; l--)
        if (l <= n && !memcmp(s + n - l, marker, l))
            return l;
    return 0;
}

/* Text added to reasoning or content: leading white space of reasoning,
 * and of content after a think block, is dropped (the templates' newlines
 * around <think> and after </think>); an answer without one is verbatim. */
static void emit(buf *b, const char *s, size_t n) {
    if (b->n == 0 && b->lead)
        while (n && is_ws(*s))
            s++, n--;
    add(b, s, n);
}

bool srv_chat_think_open(mk_chat_kind kind, unsigned flags) {
    if (flags & MK_CHAT_NO_THINKING)
        return false;
    return kind == MK_CHAT_QWEN3_THINK || kind == MK_CHAT_QWEN35 || kind == MK_CHAT_MINIMAX_M2 || kind == MK_CHAT_GLM47;
}

static void parse_think_tools(const srv_parse_cfg *c, const char *t, size_t len, bool final, buf *r,
                              buf *ct, srv_call **calls, size_t *nc) {
    const char *topen = NULL, *tclose = NULL;
    if (c->tools)
        srv_toolcall_markers(c->kind, &topen, &tclose);
    size_t pos = 0;
    bool in_think = c->think_open;
    if (!in_think) { /* a think block counts only at the start of the output */
        size_t w = 0;
        while (w < len && is_ws(t[w]))
            w++;
        if (len - w >= 7 && !memcmp(t + w, "<think>", 7)) {
            in_think = true;
            pos = w + 7;
        } else if (!final && len - w < 7 && !memcmp(t + w, "<think>", len - w)) {
            return; /* maybe its beginning */
        }
    }
    while (pos < len) {
        const char *s = t + pos;
        size_t n = len - pos;
        if (in_think) {
            const char *e = find(s, n, "</think>");
            if (e) {
                emit(r, s, (size_t)(e - s));
                pos += (size_t)(e - s) + 8;
                in_think = false;
                ct->lead = true;
                continue;
            }
            emit(r, s, final ? n : n - partial(s, n, "</think>"));
            return;
        }
        const char *o = topen ? find(s, n, topen) : NULL;
        if (!o) {
            emit(ct, s, final || !topen ? n : n - partial(s, n, topen));
            return;
        }
        emit(ct, s, (size_t)(o - s));
        const char *in = o + strlen(topen);
        size_t in_n = (size_t)(t + len - in);
        const char *e = find(in, in_n, tclose);
        if (!e && !final)
            return; /* held back until it closes */
        size_t body = e ? (size_t)(e - in) : in_n;
        /* a block that does not parse is shown as it was written */
        if (!srv_toolcall_parse(c->kind, c->tool_defs, in, body, calls, nc))
            emit(ct, o, (size_t)(in + body - o) + (e ? strlen(tclose) : 0));
        pos = (size_t)(in + body - t) + (e ? strlen(tclose) : 0);
    }
}

/* harmony: messages of header<|message|>body<|end|> (or <|call|>,
 * <|return|>, or the end of the text). */
static void parse_harmony(const srv_parse_cfg *c, const char *t, size_t len, bool final, buf *r, buf *ct,
                          srv_call **calls, size_t *nc) {
    static const char *const term[] = {"<|end|>", "<|call|>", "<|return|>", "<|start|>"};
    size_t pos = 0;
    while (pos < len) {
        const char *s = t + pos;
        size_t n = len - pos;
        const char *m = find(s, n, "<|message|>");
        if (!m) {
            /* no header: plain text, unless it is a header cut off at the end */
            if (final && !(n >= 2 && !memcmp(s, "<|", 2)))
                emit(ct, s, n);
            return;
        }
        const char *h = s;
        size_t hn = (size_t)(m - s);
        const char *b = m + 11, *be = NULL;
        size_t tl = 0;
        for (size_t k = 0; k < sizeof term / sizeof *term; k++) {
            const char *x = find(b, (size_t)(t + len - b), term[k]);
            if (x && (!be || x < be)) {
                be = x;
                tl = k == 3 ? 0 : strlen(term[k]); /* a next header without <|end|> */
            }
        }
        bool complete = be || final;
        size_t bn = be ? (size_t)(be - b) : (size_t)(t + len - b);
        if (!be && !final) {
            size_t hold = 0;
            for (size_t k = 0; k < sizeof term / sizeof *term; k++) {
                size_t p = partial(b, bn, term[k]);
                if (p > hold)
                    hold = p;
            }
            bn -= hold;
        }
        const char *ch = find(h, hn, "<|channel|>"), *to = find(h, hn, "to=");
        size_t chn = 0, ton = 0;
        if (ch) {
            ch += 11;
            while (ch + chn < h + hn && !is_ws(ch[chn]) && ch[chn] != '<')
                chn++;
        }
        if (to) {
            to += 3;
            while (to + ton < h + hn && !is_ws(to[ton]) && to[ton] != '<')
                ton++;
        }
        if (to && ton > 10 && !memcmp(to, "functions.", 10) && c->tools) {
            if (!complete)
                return; /* a call is sent whole */
            if (!srv_toolcall_harmony(to, ton, b, bn, calls, nc))
                emit(ct, b, bn);
        } else if (ch && chn == 8 && !memcmp(ch, "analysis", 8)) {
            emit(r, b, bn);
        } else {
            emit(ct, b, bn);
        }
        if (!be)
            return;
        pos = (size_t)(be - t) + tl;
    }
}

/* Trailing white space may still be followed by text: held back until it
 * is, dropped at the end. */
static void rstrip(buf *b) {
    while (b->n && is_ws(b->p[b->n - 1]))
        b->p[--b->n] = 0;
}

mk_status srv_chat_parse(const srv_parse_cfg *c, const char *text, size_t len, bool final, srv_parsed *out) {
    memset(out, 0, sizeof *out);
    buf r = {.lead = true}, ct = {.lead = c->kind == MK_CHAT_HARMONY};
    if (c->kind == MK_CHAT_HARMONY)
        parse_harmony(c, text, len, final, &r, &ct, &out->calls, &out->ncalls);
    else
        parse_think_tools(c, text, len, final, &r, &ct, &out->calls, &out->ncalls);
    rstrip(&r);
    if (c->tools || c->kind == MK_CHAT_HARMONY) /* the white space before a call block */
        rstrip(&ct);
    out->reasoning = r.p;
    out->rlen = r.n;
    out->content = ct.p;
    out->clen = ct.n;
    if (r.oom || ct.oom) {
        srv_parsed_free(out);
        return mk_err(MK_E_NOMEM, "out of memory splitting a chat answer of %zu bytes", len);
    }
    return MK_OK;
}

void srv_parsed_free(srv_parsed *p) {
    for (size_t i = 0; i < p->ncalls; i++) {
        free(p->calls[i].name);
        free(p->calls[i].args);
    }
    free(p->calls);
    free(p->reasoning);
    free(p->content);
    memset(p, 0, sizeof *p);
}
