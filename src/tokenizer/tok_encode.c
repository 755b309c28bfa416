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
 * in control tokens; their text is then encoded like any other. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

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

typedef mk_status (*piece_fn)(const mk_tok *t, const char *s, size_t n, unsigned flags, tok_ivec *out);

/* Cut the added tokens of `tr` out of s; ids go to out, the text between
 * them to `text` (in order). */
static mk_status split_added(const mk_tok *t, const tok_trie *tr, const char *s, size_t n,
                             unsigned flags, piece_fn text, tok_ivec *out) {
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
        if ((flags & MK_TOK_SPLIT_SPECIAL) && tok->special)
            continue;
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
            MK_TRY(text(t, s + start_offset, start - start_offset, flags, out));
        MK_TRY(tok_ivec_push(out, tok->id));
        start_offset = stop;
    }
    if (start_offset < n)
        MK_TRY(text(t, s + start_offset, n - start_offset, flags, out));
    return MK_OK;
}

static mk_status model_piece(const mk_tok *t, const char *s, size_t n, unsigned flags, tok_ivec *out) {
    (void)flags;
    return tok_pretok_encode(t, s, n, out);
}

static mk_status normalized_piece(const mk_tok *t, const char *s, size_t n, unsigned flags,
                                  tok_ivec *out) {
    char *norm;
    size_t nn;
    MK_TRY(tok_normalize(t, s, n, &norm, &nn));
    mk_status st = split_added(t, &t->trie_norm, norm ? norm : s, nn, flags, model_piece, out);
    free(norm);
    return st;
}

mk_status mk_tok_encode(const mk_tok *t, const char *text, size_t len, unsigned flags, int32_t **ids,
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
    if (flags & MK_TOK_ADD_SPECIAL)
        st = tok_ivec_append(&out, t->post_prefix.p, t->post_prefix.n);
    if (st == MK_OK && len)
        st = split_added(t, &t->trie_raw, text, len, flags, normalized_piece, &out);
    if (st == MK_OK && (flags & MK_TOK_ADD_SPECIAL))
        st = tok_ivec_append(&out, t->post_suffix.p, t->post_suffix.n);
    if (st == MK_OK && !out.p) { /* callers may always free(*ids) */
        out.p = malloc(sizeof *out.p);
        if (!out.p)
            st = mk_err(MK_E_NOMEM, "tokenizer: out of memory");
    }
    if (st != MK_OK) {
        tok_ivec_free(&out);
        return st;
    }
    *ids = out.p;
    *n = out.n;
    return MK_OK;
}
