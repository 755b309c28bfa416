/* Pre-tokenization: one normalized piece of text -> words -> BPE ids.
 *
 * The piece is held as one buffer plus a list of byte ranges (the current
 * splits). Each step of the pre-tokenizer refines the list:
 *   Split     runs its regex over every range and keeps, drops or merges the
 *             matched and unmatched parts as `behavior` / `invert` say
 *             (HF's NormalizedString::split, SplitDelimiterBehavior);
 *   ByteLevel optionally prefixes a space to every range, optionally splits
 *             with the GPT-2 regex, and maps every byte to its printable
 *             stand-in (tok_bytelevel.c), writing a new buffer.
 * Every surviving non-empty range is then one word for the BPE model.
 *
 * Regexes come from tokenizer.json in Oniguruma syntax (what HF compiles);
 * PCRE2 with UTF + UCP reads the subset these files use (\p{L}, \p{N},
 * (?i:...), lookahead, classes) the same way once \s is pinned to
 * White_Space (onig_to_pcre2). Matching iterates like the Rust
 * onig crate's find_iter, including its rule for empty matches. */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "tokenizer/tok_impl.h"

typedef struct range {
    size_t off, len;
} range;

typedef struct rvec {
    range *p;
    size_t n, cap;
} rvec;

typedef struct seg {
    size_t s, e;
    bool m; /* a match of the pattern (after `invert`) */
} seg;

typedef struct segvec {
    seg *p;
    size_t n, cap;
} segvec;

static mk_status grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap)
        return MK_OK;
    size_t nc = *cap ? *cap : 16;
    while (nc < need)
        nc *= 2;
    void *np = mk_realloc(*p, nc * elem);
    if (!np)
        return mk_err(MK_E_NOMEM, "tokenizer: out of memory splitting text");
    *p = np;
    *cap = nc;
    return MK_OK;
}

static mk_status rpush(rvec *v, size_t off, size_t len) {
    MK_TRY(grow((void **)&v->p, &v->cap, v->n + 1, sizeof *v->p));
    v->p[v->n++] = (range){off, len};
    return MK_OK;
}

static mk_status spush(segvec *v, size_t s, size_t e, bool m) {
    MK_TRY(grow((void **)&v->p, &v->cap, v->n + 1, sizeof *v->p));
    v->p[v->n++] = (seg){s, e, m};
    return MK_OK;
}

/* Oniguruma's \s under Unicode is exactly the White_Space property; PCRE2's
 * UCP \s also takes U+180E (via \h). Rewrite \s and \S (inside classes
 * too) to the property so both engines split the same way. A doubled
 * backslash is a literal and is copied as is. *out is malloc'd. */
static mk_status onig_to_pcre2(const char *p, size_t n, char **out, size_t *out_n) {
    static const char WS[] = "\\p{White_Space}", NWS[] = "\\P{White_Space}";
    char *o = mk_malloc(n * (sizeof WS - 1) + 1);
    if (!o)
        return mk_err(MK_E_NOMEM, "tokenizer: out of memory compiling a regex");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\\' && i + 1 < n && (p[i + 1] == 's' || p[i + 1] == 'S')) {
            const char *r = p[i + 1] == 's' ? WS : NWS;
            memcpy(o + k, r, sizeof WS - 1);
            k += sizeof WS - 1;
            i++;
            continue;
        }
        o[k++] = p[i];
        if (p[i] == '\\' && i + 1 < n)
            o[k++] = p[++i];
    }
    o[k] = 0;
    *out = o;
    *out_n = k;
    return MK_OK;
}

mk_status tok_regex_compile(const char *pattern, size_t len, bool literal, const char *where,
                            pcre2_code **out) {
    int err;
    PCRE2_SIZE eoff;
    char *pat = NULL;
    size_t plen = len;
    if (!literal)
        MK_TRY(onig_to_pcre2(pattern, len, &pat, &plen));
    /* MULTILINE: Oniguruma's Ruby syntax (HF's default) anchors ^ and $ at
     * line boundaries. */
    uint32_t opt = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP | PCRE2_MULTILINE);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)(pat ? pat : pattern), plen, opt, &err, &eoff, NULL);
    free(pat);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return mk_err(MK_E_UNSUPPORTED, "%s: cannot compile regex (offset %zu after rewriting \\s): %s",
                      where, (size_t)eoff, (const char *)msg);
    }
    /* JIT is an optimisation only: without it the interpreter runs. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    *out = re;
    return MK_OK;
}

/* All matches of re in s[0..n), as the onig crate's find_iter yields them,
 * turned into covering segments like HF's Pattern::find_matches. */
static mk_status find_matches(pcre2_code *re, const char *s, size_t n, pcre2_match_data *md,
                              bool invert, segvec *out) {
    out->n = 0;
    if (n == 0)
        return spush(out, 0, 0, invert);
    size_t last_end = 0, prev = 0, last_match_end = 0;
    bool have_last = false;
    while (last_end <= n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, last_end, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT) /* deep backtracking: the interpreter uses the heap */
            rc = pcre2_match(re, (PCRE2_SPTR)s, n, last_end, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return mk_err(MK_E_UNSUPPORTED, "tokenizer: regex failed on a %zu-byte piece: %s", n,
                          (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (ms == me && have_last && last_match_end == me) {
            /* An empty match right after the previous match: step one
             * character and search again (no infinite loop). */
            size_t cl = 1;
            if (last_end < n)
                tok_utf8_decode(s + last_end, n - last_end, &cl);
            last_end += cl;
            continue;
        }
        last_end = me;
        last_match_end = me;
        have_last = true;
        if (prev != ms)
            MK_TRY(spush(out, prev, ms, invert));
        MK_TRY(spush(out, ms, me, !invert));
        prev = me;
    }
    if (prev != n)
        MK_TRY(spush(out, prev, n, invert));
    return MK_OK;
}

/* Apply a SplitDelimiterBehavior to the covering segments in place; marks
 * segments to drop with s > e. Same folds as HF's NormalizedString::split. */
static void apply_behavior(segvec *v, tok_split_behavior b) {
    size_t k = 0;
    bool prev_match = false;
    switch (b) {
    case TOK_SPLIT_ISOLATED:
        return;
    case TOK_SPLIT_REMOVED:
        for (size_t i = 0; i < v->n; i++)
            if (!v->p[i].m)
                v->p[k++] = v->p[i];
        v->n = k;
        return;
    case TOK_SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < v->n; i++) {
            if (k > 0 && v->p[i].m == prev_match)
                v->p[k - 1].e = v->p[i].e;
            else
                v->p[k++] = v->p[i];
            prev_match = v->p[i].m;
        }
        v->n = k;
        return;
    case TOK_SPLIT_MERGED_PREV:
        for (size_t i = 0; i < v->n; i++) {
            if (k > 0 && v->p[i].m && !prev_match)
                v->p[k - 1].e = v->p[i].e;
            else
                v->p[k++] = v->p[i];
            prev_match = v->p[i].m;
        }
        v->n = k;
        return;
    case TOK_SPLIT_MERGED_NEXT: {
        /* Fold from the right, then the kept entries are in reverse order at
         * the tail; walk backwards writing from the end. */
        size_t w = v->n;
        for (size_t i = v->n; i-- > 0;) {
            if (w < v->n && v->p[i].m && !prev_match)
                v->p[w].s = v->p[i].s;
            else
                v->p[--w] = v->p[i];
            prev_match = v->p[i].m;
        }
        memmove(v->p, v->p + w, (v->n - w) * sizeof *v->p);
        v->n -= w;
        return;
    }
    }
}

static mk_status split_ranges(const tok_pre_step *st, tok_split_behavior beh, const char *buf,
                              const rvec *in, rvec *out, pcre2_match_data *md, segvec *segs) {
    out->n = 0;
    for (size_t i = 0; i < in->n; i++) {
        range r = in->p[i];
        MK_TRY(find_matches(st->re, buf + r.off, r.len, md, st->invert, segs));
        apply_behavior(segs, beh);
        for (size_t j = 0; j < segs->n; j++)
            if (segs->p[j].e > segs->p[j].s)
                MK_TRY(rpush(out, r.off + segs->p[j].s, segs->p[j].e - segs->p[j].s));
    }
    return MK_OK;
}

typedef struct work {
    char *buf; /* current text; `own` says whether we allocated it */
    bool own;
    rvec r, tmp;
    segvec segs;
    pcre2_match_data *md;
} work;

/* Replace w->buf by a new buffer built from the ranges: each range gets an
 * optional leading space and, when `map`, byte-level characters. */
static mk_status rebuild(work *w, bool prefix_space, bool map) {
    size_t need = 0;
    for (size_t i = 0; i < w->r.n; i++)
        need += (w->r.p[i].len + 1) * (map ? 2 : 1);
    char *nb = mk_malloc(need ? need : 1);
    if (!nb)
        return mk_err(MK_E_NOMEM, "tokenizer: out of memory (%zu bytes) in ByteLevel", need);
    size_t o = 0;
    for (size_t i = 0; i < w->r.n; i++) {
        const char *p = w->buf + w->r.p[i].off;
        size_t n = w->r.p[i].len, start = o;
        bool add = prefix_space && (n == 0 || p[0] != ' ');
        for (size_t j = 0; j < n + add; j++) {
            uint8_t b = add ? (j == 0 ? ' ' : (uint8_t)p[j - 1]) : (uint8_t)p[j];
            if (map) {
                size_t cl;
                const char *c = tok_bl_char(b, &cl);
                memcpy(nb + o, c, cl);
                o += cl;
            } else {
                nb[o++] = (char)b;
            }
        }
        w->r.p[i] = (range){start, o - start};
    }
    if (w->own)
        free(w->buf);
    w->buf = nb;
    w->own = true;
    return MK_OK;
}

static mk_status run_steps(const mk_tok *t, work *w) {
    for (size_t k = 0; k < t->n_pre; k++) {
        const tok_pre_step *st = &t->pre[k];
        rvec swap;
        if (st->type == TOK_PRE_SPLIT) {
            MK_TRY(split_ranges(st, st->behavior, w->buf, &w->r, &w->tmp, w->md, &w->segs));
            swap = w->r, w->r = w->tmp, w->tmp = swap;
            continue;
        }
        /* ByteLevel: prefix space, GPT-2 regex split, then the byte map. */
        if (st->add_prefix_space)
            MK_TRY(rebuild(w, true, false));
        if (st->re) {
            MK_TRY(split_ranges(st, TOK_SPLIT_ISOLATED, w->buf, &w->r, &w->tmp, w->md, &w->segs));
            swap = w->r, w->r = w->tmp, w->tmp = swap;
        }
        MK_TRY(rebuild(w, false, true));
    }
    return MK_OK;
}

mk_status tok_pretok_encode(const mk_tok *t, const char *s, size_t n, tok_ivec *out) {
    if (n == 0)
        return MK_OK;
    if (t->n_pre == 0)
        return tok_bpe_word(t, s, n, out);
    work w = {.buf = (char *)s, .own = false};
    mk_status st = MK_OK;
    w.md = pcre2_match_data_create(1, NULL);
    if (!w.md)
        st = mk_err(MK_E_NOMEM, "tokenizer: out of memory for regex match data");
    if (st == MK_OK)
        st = rpush(&w.r, 0, n);
    if (st == MK_OK)
        st = run_steps(t, &w);
    for (size_t i = 0; st == MK_OK && i < w.r.n; i++)
        st = tok_bpe_word(t, w.buf + w.r.p[i].off, w.r.p[i].len, out);
    if (w.own)
        free(w.buf);
    free(w.r.p);
    free(w.tmp.p);
    free(w.segs.p);
    pcre2_match_data_free(w.md);
    return st;
}
