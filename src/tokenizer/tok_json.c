/* tokenizer.json's two big tables, model.vocab and model.merges, read from
 * the file's bytes instead of through a jansson DOM (tok_json.h).
 *
 * Why: they are ~95% of the file (Qwen3's 11 MB: 151k vocab entries, 151k
 * merges). As a DOM they cost one malloc per string, array and hash entry:
 * 0.6 s and 100 MB to load the Qwen3 tokenizer, 1.4 s and 216 MB gpt-oss's,
 * paid by every `run`, `serve`, `tokenize` and `eval` start.
 *
 * How: tok_json_locate walks the document's outer structure (the root
 * object's last "model" member, that object's last "vocab" and "merges"
 * members, as jansson keeps the last of duplicate keys) without checking
 * what it skips; the caller then hands jansson the document with those two
 * values cut to {} and [] and their newlines (tok_json_cut: jansson's lines
 * are the file's, its columns and positions mapped back), which checks the
 * rest, and reads the two values here with a strict scanner: RFC 8259's
 * grammar, UTF-8 checked, control characters and \u0000 refused as jansson
 * refuses them, the error at the file's line and column. */
#include "tokenizer/tok_json.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

static _Atomic bool g_dom_only;
void tok_json_test_dom(bool on) { g_dom_only = on; }
bool tok_json_dom_only(void) { return g_dom_only; }

/* ---- the outer walk (not strict: jansson checks what it skips) ----------- */

static size_t ws(const char *s, size_t n, size_t i) {
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* The end of the string starting at s[i] == '"' (one past its quote), or 0. */
static size_t str_end(const char *s, size_t n, size_t i) {
    for (i++; i < n; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return 0;
}

/* The end of the value at s[i], or 0 when the text is not one (brackets
 * counted, strings skipped; a mismatch is jansson's to report). */
static size_t skip_value(const char *s, size_t n, size_t i) {
    if (i >= n)
        return 0;
    if (s[i] == '"')
        return str_end(s, n, i);
    if (s[i] != '{' && s[i] != '[') { /* a scalar runs to the next delimiter */
        size_t j = i;
        while (j < n && s[j] && !strchr(",:]}[{\" \t\n\r", s[j]))
            j++;
        return j > i ? j : 0;
    }
    char open[TOK_JSON_MAX_DEPTH]; /* the closers expected, innermost last */
    int depth = 0;
    for (; i < n; i++) {
        char c = s[i];
        if (c == '"') {
            size_t e = str_end(s, n, i);
            if (!e)
                return 0;
            i = e - 1;
        } else if (c == '{' || c == '[') {
            if (depth == TOK_JSON_MAX_DEPTH)
                return 0;
            open[depth++] = c == '{' ? '}' : ']';
        } else if (c == '}' || c == ']') {
            if (open[--depth] != c)
                return 0;
            if (depth == 0)
                return i + 1;
        }
    }
    return 0;
}

static int hex4(const char *p) {
    int v = 0;
    for (int j = 0; j < 4; j++) {
        char h = p[j];
        int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* The key at s[i] (a string) equals name, escapes undone (a key may spell
 * "model" with \u escapes; jansson compares the decoded bytes). */
static bool key_is(const char *s, size_t i, size_t end, const char *name) {
    size_t k = 0, nl = strlen(name);
    for (i++; i + 1 < end; i++) {
        char c = s[i];
        if (c == '\\') {
            char e = s[++i];
            if (e == 'u' && i + 4 < end) {
                int v = hex4(s + i + 1);
                if (v < 0 || v > 0x7f) /* not ASCII: not one of our names */
                    return false;
                c = (char)v;
                i += 4;
            } else {
                const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t", *p = strchr(from, e);
                if (!e || !p)
                    return false;
                c = to[p - from];
            }
        }
        if (k >= nl || name[k++] != c)
            return false;
    }
    return k == nl;
}

/* Walk the members of the object at s[i] == '{'; for each, fn(key, value
 * range). Returns the end of the object, or 0. */
typedef void (*member_fn)(void *u, const char *s, size_t key, size_t key_end, size_t v, size_t v_end);
static size_t members(const char *s, size_t n, size_t i, member_fn fn, void *u) {
    i = ws(s, n, i + 1);
    if (i < n && s[i] == '}')
        return i + 1;
    for (;;) {
        if (i >= n || s[i] != '"')
            return 0;
        size_t k = i, ke = str_end(s, n, i);
        if (!ke)
            return 0;
        i = ws(s, n, ke);
        if (i >= n || s[i] != ':')
            return 0;
        size_t v = ws(s, n, i + 1), ve = skip_value(s, n, v);
        if (!ve)
            return 0;
        fn(u, s, k, ke, v, ve);
        i = ws(s, n, ve);
        if (i < n && s[i] == ',') {
            i = ws(s, n, i + 1);
            continue;
        }
        return i < n && s[i] == '}' ? i + 1 : 0;
    }
}

typedef struct walk {
    tok_json_range model, vocab, merges;
} walk;

static void model_member(void *u, const char *s, size_t k, size_t ke, size_t v, size_t ve) {
    walk *w = u;
    if (key_is(s, k, ke, "vocab"))
        w->vocab = (tok_json_range){.at = v, .end = ve};
    else if (key_is(s, k, ke, "merges"))
        w->merges = (tok_json_range){.at = v, .end = ve};
}

static void root_member(void *u, const char *s, size_t k, size_t ke, size_t v, size_t ve) {
    if (key_is(s, k, ke, "model"))
        ((walk *)u)->model = (tok_json_range){.at = v, .end = ve};
}

bool tok_json_locate(const char *s, size_t n, tok_json_range *vocab, tok_json_range *merges) {
    walk w = {{0}, {0}, {0}};
    size_t i = ws(s, n, 0);
    if (i >= n || s[i] != '{' || !(i = members(s, n, i, root_member, &w)) || ws(s, n, i) != n)
        return false;
    if (w.model.end && s[w.model.at] == '{' && !members(s, n, w.model.at, model_member, &w))
        return false;
    /* only an object vocab and an array of merges are read here; anything else stays in the
     * document, for the loader's messages */
    *vocab = w.vocab.end && s[w.vocab.at] == '{' ? w.vocab : (tok_json_range){0};
    *merges = w.merges.end && s[w.merges.at] == '[' ? w.merges : (tok_json_range){0};
    return true;
}

mk_status tok_json_cut(const char *path, const char *s, size_t n, tok_json_range *const *rp, int nr, char **out,
                       size_t *on, tok_json_fix *fix) {
    char *o = mk_malloc(n + 1); /* at most n bytes come out (pages past them are never touched) */
    if (!o)
        return mk_err(MK_E_NOMEM, "%s: no memory to parse its JSON (%zu bytes)", path, n);
    size_t j = 0, from = 0;
    int line = 1, col = 0; /* of the last byte written */
    for (int k = 0; k < nr; k++) {
        const tok_json_range r = *rp[k];
        for (size_t i = from; i < r.at + 1; i++) { /* up to and with the opener */
            o[j++] = s[i];
            if (s[i] == '\n')
                line++, col = 0;
            else if (((unsigned char)s[i] & 0xC0) != 0x80)
                col++;
        }
        int gone = 0; /* characters dropped on the closer's line */
        for (size_t i = r.at + 1; i + 1 < r.end; i++) {
            if (s[i] == '\n') {
                o[j++] = '\n';
                line++, col = 0, gone = 0;
            } else if (((unsigned char)s[i] & 0xC0) != 0x80) {
                gone++;
            }
        }
        o[j++] = s[r.end - 1];
        col++;
        size_t kept = 0; /* the cut value's bytes in o: opener, newlines, closer */
        for (size_t i = r.at; i < r.end; i++)
            kept += i == r.at || i + 1 == r.end || s[i] == '\n';
        fix[k] = (tok_json_fix){line, col, gone, j, r.end - r.at - kept};
        from = r.end;
    }
    memcpy(o + j, s + from, n - from);
    j += n - from;
    o[j] = 0;
    *out = o;
    *on = j;
    return MK_OK;
}

size_t tok_json_file_pos(const tok_json_fix *fix, int nr, size_t pos) {
    size_t p = pos;
    for (int k = 0; k < nr; k++)
        if (pos >= fix[k].end)
            p += fix[k].removed;
    return p;
}

void tok_json_fix_at(const tok_json_fix *fix, int nr, int *line, int *col) {
    int shift = 0;
    for (int k = 0; k < nr; k++)
        if (*line == fix[k].line && *col > fix[k].col)
            shift += fix[k].shift;
    *col += shift;
}

/* ---- the strict scanner -------------------------------------------------- */

typedef struct tj {
    const char *path, *s;
    size_t i, end;
    char *buf; /* the current string, unescaped */
    size_t len, cap;
} tj;

/* The error at byte `at`: its line and column as jansson counts them
 * (characters, not bytes; at a newline, the start of the next line). */
static mk_status tj_err(const tj *t, size_t at, const char *what) {
    int line = 1, col = 1;
    for (size_t i = 0; i < at; i++) {
        if (t->s[i] == '\n')
            line++, col = 1;
        else if (((unsigned char)t->s[i] & 0xC0) != 0x80)
            col++;
    }
    if (at < t->end && t->s[at] == '\n')
        line++, col = 0;
    return mk_err(MK_E_FORMAT, "%s: invalid JSON at line %d column %d: %s", t->path, line, col, what);
}

static void tj_ws(tj *t) { t->i = ws(t->s, t->end, t->i); }

static mk_status tj_put(tj *t, const char *p, size_t n) {
    if (t->len + n + 1 > t->cap) {
        size_t nc = t->cap ? t->cap : 256;
        while (nc < t->len + n + 1)
            nc *= 2;
        char *nb = mk_realloc(t->buf, nc);
        if (!nb)
            return mk_err(MK_E_NOMEM, "%s: no memory for a string of %zu bytes", t->path, t->len + n);
        t->buf = nb;
        t->cap = nc;
    }
    memcpy(t->buf + t->len, p, n);
    t->len += n;
    t->buf[t->len] = 0;
    return MK_OK;
}

/* The string at t->i into t->buf / t->len. */
static mk_status tj_string(tj *t) {
    const char *s = t->s;
    size_t i = t->i;
    if (i >= t->end || s[i] != '"')
        return tj_err(t, i, "expected a string");
    t->len = 0;
    MK_TRY(tj_put(t, "", 0)); /* buf is never NULL after a string, even an empty one */
    i++;
    for (;;) {
        size_t run = i;
        while (i < t->end && s[i] != '"' && s[i] != '\\' && (unsigned char)s[i] >= 0x20)
            i++;
        if (i > run) {
            /* (a run ends at an ASCII byte, never inside a valid sequence) */
            size_t bad = tok_utf8_check(s + run, i - run);
            if (bad < i - run)
                return tj_err(t, run + bad, "invalid UTF-8 in a string");
            MK_TRY(tj_put(t, s + run, i - run));
        }
        if (i >= t->end)
            return tj_err(t, i, "premature end of input in a string");
        char c = s[i];
        if (c == '"') {
            t->i = i + 1;
            return MK_OK;
        }
        if ((unsigned char)c < 0x20)
            return tj_err(t, i, "control character in a string");
        /* a backslash */
        if (i + 1 >= t->end)
            return tj_err(t, i, "premature end of input in a string");
        char e = s[i + 1];
        const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t", *p = e ? strchr(from, e) : NULL;
        if (p) {
            MK_TRY(tj_put(t, &to[p - from], 1));
            i += 2;
            continue;
        }
        if (e != 'u')
            return tj_err(t, i + 1, "invalid escape in a string");
        int v = i + 6 <= t->end ? hex4(s + i + 2) : -1;
        if (v < 0) {
            size_t k = i + 2; /* the first character that is no hex digit */
            while (k < i + 6 && k < t->end && strchr("0123456789abcdefABCDEF", s[k]) && s[k])
                k++;
            return tj_err(t, k, "invalid \\u escape in a string");
        }
        i += 6;
        uint32_t cp = (uint32_t)v;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            int lo = i + 6 <= t->end && s[i] == '\\' && s[i + 1] == 'u' ? hex4(s + i + 2) : -1;
            if (lo < 0xDC00 || lo > 0xDFFF)
                return tj_err(t, i - 6, "invalid Unicode escape (a lone high surrogate)");
            cp = 0x10000 + ((cp - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
            i += 6;
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return tj_err(t, i - 6, "invalid Unicode escape (a lone low surrogate)");
        } else if (cp == 0) {
            return tj_err(t, i - 6, "\\u0000 is not allowed in a string");
        }
        char u[4];
        MK_TRY(tj_put(t, u, tok_utf8_encode(cp, u)));
    }
}

/* jansson 2.14 reads one NUL byte right after a number or a literal as
 * nothing (its lexer puts back the character after the token; a NUL put
 * back reads as the end of its buffer, and it reads on). */
static size_t tj_after_token(const tj *t, size_t i) {
    return i < t->end && t->s[i] == 0 ? i + 1 : i;
}

/* Whether the real s[0..n) overflows a double (jansson refuses it: "real
 * number overflow"); read in the C locale, as JSON spells it. */
static locale_t g_cloc;
static pthread_once_t g_cloc_once = PTHREAD_ONCE_INIT;
static void cloc_init(void) { g_cloc = newlocale(LC_ALL_MASK, "C", (locale_t)0); }
static bool real_overflows(const char *s, size_t n) {
    char buf[64], *b = n < sizeof buf ? buf : mk_malloc(n + 1);
    if (!b)
        return false; /* no memory to tell: the number is taken (it is no id either way) */
    memcpy(b, s, n);
    b[n] = 0;
    pthread_once(&g_cloc_once, cloc_init);
    errno = 0;
    double d = g_cloc ? strtod_l(b, NULL, g_cloc) : strtod(b, NULL);
    bool over = errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL);
    if (b != buf)
        free(b);
    return over;
}

/* The number at t->i: *is_int and *v when it is an integer that fits int64. */
static mk_status tj_number(tj *t, bool *is_int, int64_t *v) {
    const char *s = t->s;
    size_t i = t->i, at = i;
    bool neg = i < t->end && s[i] == '-';
    if (neg)
        i++;
    if (i >= t->end || s[i] < '0' || s[i] > '9')
        return tj_err(t, at, "invalid number");
    uint64_t x = 0;
    bool big = false;
    if (s[i] == '0') {
        i++;
    } else {
        for (; i < t->end && s[i] >= '0' && s[i] <= '9'; i++) {
            if (x > (UINT64_MAX - 9) / 10)
                big = true;
            x = x * 10 + (uint64_t)(s[i] - '0');
        }
    }
    *is_int = true;
    if (i < t->end && s[i] == '.') {
        *is_int = false;
        if (++i >= t->end || s[i] < '0' || s[i] > '9')
            return tj_err(t, at, "invalid number");
        while (i < t->end && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    if (i < t->end && (s[i] == 'e' || s[i] == 'E')) {
        *is_int = false;
        i++;
        if (i < t->end && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= t->end || s[i] < '0' || s[i] > '9')
            return tj_err(t, at, "invalid number");
        while (i < t->end && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    /* (a token's error at its last character, where jansson puts it) */
    if (*is_int && (big || x > (uint64_t)INT64_MAX + (neg ? 1u : 0u))) /* as jansson: past json_int_t */
        return tj_err(t, i - 1, neg ? "too big negative integer" : "too big integer");
    if (!*is_int && real_overflows(s + at, i - at))
        return tj_err(t, i - 1, "real number overflow");
    *v = neg ? (int64_t)(0 - x) : (int64_t)x;
    t->i = tj_after_token(t, i);
    return MK_OK;
}

/* What the value at t->i is, for messages (jansson's names, core/json_err.h). */
static const char *tj_kind(const tj *t) {
    char c = t->i < t->end ? t->s[t->i] : 0;
    if (c == '{')
        return "an object";
    if (c == '[')
        return "an array";
    if (c == '"')
        return "a string";
    if (c == 't' || c == 'f')
        return "a boolean";
    if (c == 'n')
        return "null";
    size_t i = t->i;
    while (i < t->end && strchr("+-0123456789", t->s[i]))
        i++;
    return i < t->end && strchr(".eE", t->s[i]) ? "a number" : "an integer";
}

/* The next of a container's separators: ',' (true) or the closer (false). */
static mk_status tj_next(tj *t, char close, bool *more) {
    tj_ws(t);
    if (t->i < t->end && t->s[t->i] == ',') {
        t->i++;
        tj_ws(t);
        *more = true;
        return MK_OK;
    }
    if (t->i < t->end && t->s[t->i] == close) {
        t->i++;
        *more = false;
        return MK_OK;
    }
    return tj_err(t, t->i, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
}

static bool tj_empty(tj *t, char close) {
    t->i++; /* the opener */
    tj_ws(t);
    if (t->i < t->end && t->s[t->i] == close) {
        t->i++;
        return true;
    }
    return false;
}

/* The value at t->i, strictly (its end into t->i); *count (when given):
 * the elements of the object or array it is. */
static mk_status tj_value(tj *t, int depth, size_t *count) {
    if (depth > TOK_JSON_MAX_DEPTH)
        return tj_err(t, t->i, "too deeply nested");
    tj_ws(t);
    char c = t->i < t->end ? t->s[t->i] : 0;
    if (c == '"')
        return tj_string(t);
    if (c == '-' || (c >= '0' && c <= '9')) {
        bool is_int;
        int64_t v;
        return tj_number(t, &is_int, &v);
    }
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        bool more = !tj_empty(t, close);
        while (more) {
            if (c == '{') {
                MK_TRY(tj_string(t));
                tj_ws(t);
                if (t->i >= t->end || t->s[t->i] != ':')
                    return tj_err(t, t->i, "expected ':'");
                t->i++;
            }
            MK_TRY(tj_value(t, depth + 1, NULL));
            if (count)
                ++*count;
            MK_TRY(tj_next(t, close, &more));
        }
        return MK_OK;
    }
    static const char *const lit[] = {"true", "false", "null"};
    for (int k = 0; k < 3; k++) {
        size_t l = strlen(lit[k]);
        if (t->end - t->i >= l && memcmp(t->s + t->i, lit[k], l) == 0) {
            t->i = tj_after_token(t, t->i + l);
            return MK_OK;
        }
    }
    return tj_err(t, t->i, "invalid token");
}

mk_status tok_json_check(const char *path, const char *s, tok_json_range *r) {
    tj t = {path, s, r->at, r->end, NULL, 0, 0};
    r->count = 0;
    mk_status st = tj_value(&t, 3, &r->count); /* its depth as jansson counts: the root 1, model 2 */
    free(t.buf);
    if (st == MK_OK && t.i != r->end) /* (the walk ended the value there) */
        st = tj_err(&t, t.i, "unexpected text after a value");
    return st;
}

mk_status tok_json_vocab(const char *path, const char *s, tok_json_range r, tok_json_vocab_fn fn, void *u) {
    tj t = {path, s, r.at, r.end, NULL, 0, 0};
    mk_status st = MK_OK;
    bool more = !tj_empty(&t, '}');
    while (more && st == MK_OK) {
        if ((st = tj_string(&t)) != MK_OK)
            break;
        tj_ws(&t);
        if (t.i >= t.end || s[t.i] != ':') {
            st = tj_err(&t, t.i, "expected ':'");
            break;
        }
        t.i++;
        tj_ws(&t);
        bool is_int = false;
        int64_t v = 0;
        char c = t.i < t.end ? s[t.i] : 0;
        if (c == '-' || (c >= '0' && c <= '9')) {
            if ((st = tj_number(&t, &is_int, &v)) != MK_OK ||
                (st = fn(u, t.buf, t.len, v, is_int ? NULL : "a number")) != MK_OK)
                break;
        } else if ((st = fn(u, t.buf, t.len, 0, tj_kind(&t))) != MK_OK ||
                   (st = tj_value(&t, 4, NULL)) != MK_OK) { /* past it (the key is in t.buf until here) */
            break;
        }
        st = tj_next(&t, '}', &more);
    }
    free(t.buf);
    return st;
}

mk_status tok_json_merges(const char *path, const char *s, tok_json_range r, tok_json_merge_fn fn, void *u) {
    tj t = {path, s, r.at, r.end, NULL, 0, 0};
    mk_status st = MK_OK;
    char *a = NULL; /* the left side of an array entry while the right one is read */
    size_t acap = 0;
    bool more = !tj_empty(&t, ']');
    for (size_t i = 0; more && st == MK_OK; i++) {
        char c = t.i < t.end ? s[t.i] : 0;
        if (c == '"') {
            if ((st = tj_string(&t)) != MK_OK)
                break;
            /* legacy "a b": exactly one space, as HF's convert_merges_to_hashmap demands */
            const char *sp = memchr(t.buf, ' ', t.len);
            if (!sp || memchr(sp + 1, ' ', t.len - (size_t)(sp + 1 - t.buf))) {
                st = mk_err(MK_E_FORMAT, "%s: field 'model.merges[%zu]': expected \"left right\" with one "
                            "space, found \"%.60s\"", path, i, t.buf);
                break;
            }
            st = fn(u, i, t.buf, (size_t)(sp - t.buf), sp + 1, t.len - (size_t)(sp - t.buf) - 1);
        } else if (c == '[') {
            /* ["a", "b"]: two strings, nothing else */
            t.i++;
            tj_ws(&t);
            bool ok = t.i < t.end && s[t.i] == '"';
            size_t al = 0;
            if (ok && (st = tj_string(&t)) == MK_OK) {
                al = t.len;
                if (al + 1 > acap) {
                    char *na = mk_realloc(a, al + 1);
                    if (!na) {
                        st = mk_err(MK_E_NOMEM, "%s: no memory for a merge of %zu bytes", path, al);
                        break;
                    }
                    a = na;
                    acap = al + 1;
                }
                memcpy(a, t.buf, al);
                tj_ws(&t);
                ok = t.i < t.end && s[t.i] == ',';
                if (ok) {
                    t.i++;
                    tj_ws(&t);
                    ok = t.i < t.end && s[t.i] == '"';
                }
                if (ok && (st = tj_string(&t)) == MK_OK) {
                    tj_ws(&t);
                    ok = t.i < t.end && s[t.i] == ']';
                    t.i++;
                }
            }
            if (st != MK_OK)
                break;
            if (!ok) {
                /* another shape of array: jansson's type names cannot say which; name it */
                st = mk_err(MK_E_FORMAT, "%s: field 'model.merges[%zu]': expected \"a b\" or [\"a\", \"b\"], "
                            "found an array of another shape", path, i);
                break;
            }
            st = fn(u, i, a, al, t.buf, t.len);
        } else {
            st = mk_err(MK_E_FORMAT, "%s: field 'model.merges[%zu]': expected \"a b\" or [\"a\", \"b\"], found %s",
                        path, i, tj_kind(&t));
            break;
        }
        if (st == MK_OK)
            st = tj_next(&t, ']', &more);
    }
    free(a);
    free(t.buf);
    return st;
}
