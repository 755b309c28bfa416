/* mk_tok_encode: text -> ids, the top of the encode pipeline.
 *
 * Mirrors HF tokenizers' encode for one sequence:
 *   1. added tokens with normalized=false are found in the raw text
 *      (leftmost-longest, then the single_word / lstrip / rstrip rules of
 *      AddedVocabulary::find_matches);
 *   2. every piece between them is normalized, and added tokens with
 *      normalized=true are found in the normalized piece the same way;
 *   3. the pieces left are pre-tokenized and run through BPE (tok_pretok.c);
 *   4. with MK_TOK_ADD_SPECIAL the post-processor's ids go around the result.
 * With MK_TOK_SPLIT_SPECIAL special tokens are skipped as matches (HF's
 * split_special_tokens / encode_special_tokens), so a prompt cannot smuggle
 * in control tokens; their text is then encoded like any other.
 * mk_tok_encode_ctl narrows that to positions: special tokens match only
 * inside the byte ranges the caller marks as its own (the parts a chat
 * template wrote), so one rendered prompt encodes exactly like HF's encode
 * of the template output, except that user text never becomes a control
 * token. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/alloc.h"
#include "tokenizer/tok_impl.h"

/* The Rust regex \s HF uses for lstrip / rstrip: the White_Space property. */
static bool is_white_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* What single_word treats as part of a word: HF tests the neighbours with
 * the Rust regex \w, i.e. Alphabetic (letters, letter numbers, and the
 * Other_Alphabetic marks), marks, decimal digits, connector punctuation and
 * the joiners U+200C / U+200D. Circled letters (So with Other_Alphabetic)
 * are the one corner this category test leaves out. */
static bool is_word_char(uint32_t c) {
    if (c == 0x200C || c == 0x200D)
        return true;
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC: return true;
    default: return false;
    }
}

/* Code point ending at s[n) (s is valid UTF-8, n > 0). */
static uint32_t last_char(const char *s, size_t n, size_t *len) {
    size_t i = n - 1;
    while (i > 0 && ((uint8_t)s[i] & 0xC0) == 0x80)
        i--;
    return tok_utf8_decode(s + i, n - i, len);
}

static size_t leading_ws(const char *s, size_t n) {
    size_t i = 0, l;
    while (i < n && is_white_space(tok_utf8_decode(s + i, n - i, &l)))
        i += l;
    return i;
}

static size_t trailing_ws_start(const char *s, size_t n) {
    size_t l;
    while (n > 0 && is_white_space(last_char(s, n, &l)))
        n -= l;
    return n;
}

/* How special tokens may match in one call: never (MK_TOK_SPLIT_SPECIAL),
 * anywhere (the default), or only inside the caller's control spans
 * (mk_tok_encode_ctl: the parts a chat template wrote). With spans, the
 * "restricted" tokens are the special ones plus the caller's `deny` ids
 * (markers a template writes that tokenizer.json does not flag special,
 * such as DeepSeek-V3's <｜User｜>). */
typedef enum { CTL_NONE, CTL_SPANS, CTL_ALL_IN, CTL_ALL_OUT } ctl_mode;

typedef struct enc_ctx {
    unsigned flags;
    ctl_mode mode;
    const mk_tok_span *ctl; /* CTL_SPANS: sorted, disjoint */
    size_t n_ctl;
    const int32_t *deny;
    size_t n_deny;
} enc_ctx;

typedef mk_status (*piece_fn)(const mk_tok *t, const char *s, size_t n, size_t base, const enc_ctx *c,
                              tok_ivec *out);

static bool restricted(const enc_ctx *c, const tok_added *a) {
    if (a->special)
        return true;
    for (size_t i = 0; i < c->n_deny; i++)
        if (c->deny[i] == a->id)
            return true;
    return false;
}

/* Index of the first control span that ends after `off` (n_ctl if none). */
static size_t ctl_after(const enc_ctx *c, size_t off) {
    size_t lo = 0, hi = c->n_ctl;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->ctl[mid].off + c->ctl[mid].len <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Does [a, b) lie inside one control span? */
static bool in_ctl(const enc_ctx *c, size_t a, size_t b) {
    size_t i = ctl_after(c, a);
    return i < c->n_ctl && c->ctl[i].off <= a && b <= c->ctl[i].off + c->ctl[i].len;
}

/* Cut the added tokens of `tr` out of s (which starts at byte `base` of the
 * caller's text); ids go to out, the text between them to `text` (in order). */
static mk_status split_added(const mk_tok *t, const tok_trie *tr, const char *s, size_t n, size_t base,
                             const enc_ctx *c, piece_fn text, tok_ivec *out) {
    size_t start_offset = 0, pos = 0;
    while (pos < n) {
        size_t mlen;
        int32_t a = tr->first[(uint8_t)s[pos]] ? tok_trie_longest(tr, s + pos, n - pos, &mlen) : -1;
        if (a < 0) {
            pos++;
            continue;
        }
        const tok_added *tok = &t->added[a];
        size_t start = pos, stop = pos + mlen, l;
        pos = stop; /* like find_iter: resume after the match, used or not */
        if ((c->flags & MK_TOK_SPLIT_SPECIAL) && tok->special)
            continue;
        if (c->mode == CTL_ALL_OUT && restricted(c, tok))
            continue;
        if (c->mode == CTL_SPANS && restricted(c, tok) && !in_ctl(c, base + start, base + stop)) {
            /* Special-token text outside the template's parts is plain text.
             * A match that runs into a control span must not swallow the
             * template's own token: resume where that span begins. */
            size_t i = ctl_after(c, base + start);
            if (i < c->n_ctl && c->ctl[i].off < base + stop && c->ctl[i].off > base + start)
                pos = c->ctl[i].off - base;
            continue;
        }
        if (tok->single_word) {
            bool start_space = start == 0 || !is_word_char(last_char(s, start, &l));
            bool stop_space = stop == n || !is_word_char(tok_utf8_decode(s + stop, n - stop, &l));
            if (!start_space || !stop_space)
                continue;
        }
        if (tok->lstrip) {
            size_t ns = trailing_ws_start(s, start);
            start = ns > start_offset ? ns : start_offset;
        }
        if (tok->rstrip) {
            stop += leading_ws(s + stop, n - stop);
            pos = stop; /* the stripped spaces belong to this match */
        }
        if (start < start_offset)
            continue; /* overlaps what an earlier rstrip took */
        if (start_offset < start)
            MK_TRY(text(t, s + start_offset, start - start_offset, base + start_offset, c, out));
        MK_TRY(tok_ivec_push(out, tok->id));
        start_offset = stop;
    }
    if (start_offset < n)
        MK_TRY(text(t, s + start_offset, n - start_offset, base + start_offset, c, out));
    return MK_OK;
}

/* Python's str.isspace (Kimi's encode tests characters with it). */
static bool py_isspace(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

#define KIMI_CHUNK_CHARS 400000
#define KIMI_RUN_CHARS 25000

/* Kimi's encode: tiktoken is fed chunks of at most 400,000 characters, and
 * each is cut again where a run of whitespace or of non-whitespace reaches
 * its 25,001st character (the cut goes before it). The cuts change the ids
 * of text that crosses them, so they are reproduced, counted in code
 * points as Python counts them. */
static mk_status kimi_chunks(const mk_tok *t, const char *s, size_t n, tok_ivec *out) {
    size_t i = 0;
    while (i < n) {
        size_t chars = 0, start = i, run = 0, l;
        bool space = false;
        while (i < n && chars < KIMI_CHUNK_CHARS) {
            bool sp = py_isspace(tok_utf8_decode(s + i, n - i, &l));
            if (run == 0 || sp != space) {
                run = 1;
                space = sp;
            } else if (++run > KIMI_RUN_CHARS) {
                MK_TRY(tok_pretok_encode(t, s + start, i - start, out));
                start = i;
                run = 1;
            }
            i += l;
            chars++;
        }
        MK_TRY(tok_pretok_encode(t, s + start, i - start, out));
    }
    return MK_OK;
}

static mk_status model_piece(const mk_tok *t, const char *s, size_t n, size_t base, const enc_ctx *c,
                             tok_ivec *out) {
    (void)base;
    (void)c;
    return t->kimi_chunks ? kimi_chunks(t, s, n, out) : tok_pretok_encode(t, s, n, out);
}

/* CTL_SPANS when normalization changed the piece s (at `base`): normalize
 * it span by span so the control spans can be found in the result, then cut
 * the normalized added tokens out of it with those spans. (Unlike one
 * normalization of the whole piece, characters never compose across a
 * template/message border; the templates' markers end in '>' or '\n',
 * which compose with nothing.) */
static mk_status normalized_spans(const mk_tok *t, const char *s, size_t n, size_t base,
                                  const enc_ctx *c, tok_ivec *out) {
    char *buf = NULL;
    size_t len = 0, cap = 0, nsp = 0;
    mk_tok_span *sp = mk_malloc((c->n_ctl + 1) * sizeof *sp);
    mk_status st =
        sp ? MK_OK : mk_err(MK_E_NOMEM, "tokenizer: no memory for %zu control spans", c->n_ctl + 1);
    size_t i = ctl_after(c, base);
    for (size_t a = 0; st == MK_OK && a < n;) {
        /* the next segment: inside control span i, or up to its start */
        bool inside = i < c->n_ctl && c->ctl[i].off <= base + a;
        size_t b = inside ? c->ctl[i].off + c->ctl[i].len - base : i < c->n_ctl ? c->ctl[i].off - base : n;
        if (b > n)
            b = n;
        if (inside)
            i++;
        char *norm;
        size_t nn;
        st = tok_normalize(t, s + a, b - a, &norm, &nn);
        if (st == MK_OK && len + nn + 1 > cap) {
            size_t nc = cap ? cap : 256;
            while (nc < len + nn + 1)
                nc *= 2;
            char *np = mk_realloc(buf, nc);
            if (np) {
                buf = np;
                cap = nc;
            } else {
                st = mk_err(MK_E_NOMEM, "tokenizer: no memory for %zu bytes of normalized text", nc);
            }
        }
        if (st == MK_OK) {
            memcpy(buf + len, norm ? norm : s + a, nn);
            if (inside && nn)
                sp[nsp++] = (mk_tok_span){len, nn};
            len += nn;
        }
        free(norm);
        a = b;
    }
    if (st == MK_OK) {
        enc_ctx nc = *c;
        nc.ctl = sp;
        nc.n_ctl = nsp;
        nc.mode = nsp ? CTL_SPANS : CTL_ALL_OUT;
        st = split_added(t, &t->trie_norm, buf ? buf : "", len, 0, &nc, model_piece, out);
    }
    free(buf);
    free(sp);
    return st;
}

static mk_status normalized_piece(const mk_tok *t, const char *s, size_t n, size_t base,
                                  const enc_ctx *c, tok_ivec *out) {
    char *norm;
    size_t nn;
    MK_TRY(tok_normalize(t, s, n, &norm, &nn));
    enc_ctx nc = *c;
    if (c->mode == CTL_SPANS) {
        if (nn != n || (norm && memcmp(norm, s, n) != 0)) { /* offsets moved */
            free(norm);
            return normalized_spans(t, s, n, base, c, out);
        }
        if (in_ctl(c, base, base + n))
            nc.mode = CTL_ALL_IN;
    } else {
        base = 0;
    }
    mk_status st = split_added(t, &t->trie_norm, norm ? norm : s, nn, base, &nc, model_piece, out);
    free(norm);
    return st;
}

static mk_status encode(const mk_tok *t, const char *text, size_t len, const enc_ctx *c, int32_t **ids,
                        size_t *n) {
    if (!ids || !n)
        return mk_err(MK_E_ARG, "mk_tok_encode: ids and n must not be NULL");
    *ids = NULL;
    *n = 0;
    if (!t || (!text && len))
        return mk_err(MK_E_ARG, "mk_tok_encode: NULL tokenizer or text");
    size_t bad = tok_utf8_check(text, len);
    if (bad != len)
        return mk_err(MK_E_ARG, "tokenizer: text is not valid UTF-8 (byte %zu of %zu)", bad, len);
    tok_ivec out = {0};
    mk_status st = MK_OK;
    if (c->flags & MK_TOK_ADD_SPECIAL)
        st = tok_ivec_append(&out, t->post_prefix.p, t->post_prefix.n);
    if (st == MK_OK && len)
        st = split_added(t, &t->trie_raw, text, len, 0, c, normalized_piece, &out);
    if (st == MK_OK && (c->flags & MK_TOK_ADD_SPECIAL))
        st = tok_ivec_append(&out, t->post_suffix.p, t->post_suffix.n);
    if (st == MK_OK && !out.p) { /* callers may always free(*ids) */
        out.p = mk_malloc(sizeof *out.p);
        if (!out.p)
            st = mk_err(MK_E_NOMEM, "tokenizer: no memory for the token ids");
    }
    if (st != MK_OK) {
        tok_ivec_free(&out);
        return st;
    }
    *ids = out.p;
    *n = out.n;
    return MK_OK;
}

mk_status mk_tok_encode(const mk_tok *t, const char *text, size_t len, unsigned flags, int32_t **ids,
                        size_t *n) {
    enc_ctx c = {.flags = flags, .mode = CTL_NONE};
    return encode(t, text, len, &c, ids, n);
}

mk_status mk_tok_encode_ctl(const mk_tok *t, const char *text, size_t len, unsigned flags,
                            const mk_tok_span *ctl, size_t n_ctl, const int32_t *deny, size_t n_deny,
                            int32_t **ids, size_t *n) {
    for (size_t i = 0; i < n_ctl; i++)
        if (ctl[i].off > len || ctl[i].len > len - ctl[i].off ||
            (i && ctl[i].off < ctl[i - 1].off + ctl[i - 1].len)) {
            if (ids && n) {
                *ids = NULL;
                *n = 0;
            }
            return mk_err(MK_E_ARG, "mk_tok_encode_ctl: control span %zu (%zu+%zu) is outside the "
                          "text of %zu bytes or not after the one before", i, ctl[i].off, ctl[i].len, len);
        }
    enc_ctx c = {flags, n_ctl ? CTL_SPANS : CTL_ALL_OUT, ctl, n_ctl, deny, deny ? n_deny : 0};
    return encode(t, text, len, &c, ids, n);
}
