/* The token mask: the vocabulary as a byte trie, walked with the automaton.
 *
 * The trie is stored in preorder (one array: each node's byte, depth, the
 * token ending there and the end of its subtree), built from the tokens'
 * bytes sorted. The walk steps the automaton one byte per node and takes
 * steps back through undo records (automaton.c) instead of copying stacks;
 * a rejected byte skips the node's whole subtree, so a state that admits
 * few bytes (structure, numbers, literals) visits a few hundred nodes.
 *
 * Inside a string almost every token is allowed, and walking the whole
 * trie would cost every step: there, the tokens made only of plain string
 * bytes (no quote, backslash or control byte, UTF-8 that is valid from a
 * code-point boundary, possibly ending inside one) are allowed at once
 * from a precomputed bit set, and only the trie of the other tokens is
 * walked. That shortcut applies when the budget leaves room for any such
 * token (the 3 bytes of an unfinished code point at most), so steering
 * towards closing sees every token near the end.
 *
 * A matcher is the automaton's stack, the vocabulary and the walk's
 * scratch. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "grammar/grammar_impl.h"

#define GM_MAX_TOKEN 1024 /* longer tokens are never allowed (none in real vocabularies) */

typedef struct gm_trie {
    uint32_t n;
    uint8_t *byte;
    uint16_t *depth;           /* 1 for the root's children */
    int32_t *tok;              /* the first token ending here, or -1 */
    uint32_t *end;             /* index past the node's subtree */
} gm_trie;

struct mk_grammar_vocab {
    const mk_tok *tok;
    int64_t V;
    size_t words;
    gm_trie all, other;        /* every usable token; those not plain */
    uint64_t *plain;           /* [words] plain string tokens */
    uint64_t *usable;          /* [words] tokens in the trie */
    int32_t *dup;              /* [V] the next token with the same bytes, or -1 */
    int32_t *stop;
    size_t nstop;
};

struct mk_grammar_match {
    const mk_grammar *g;
    const mk_grammar_vocab *v;
    gm_stack s;
    gm_undo undo[GM_MAX_TOKEN + 1];
    uint64_t *bits;            /* mask scratch [v->words] */
    bool ended;                /* a stop id was fed */
};

/* ---- building ---------------------------------------------------------------------- */

typedef struct entry {
    const uint8_t *p;
    uint32_t len;
    int32_t id;
} entry;

static int cmp_entry(const void *a, const void *b) {
    const entry *x = a, *y = b;
    uint32_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->p, y->p, n);
    if (c)
        return c;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static void trie_free(gm_trie *t) {
    free(t->byte);
    free(t->depth);
    free(t->tok);
    free(t->end);
    memset(t, 0, sizeof *t);
}

/* The preorder trie of e[0..n) (sorted); dup chains tokens with equal bytes. */
static mk_status trie_build(gm_trie *t, const entry *e, size_t n, int32_t *dup) {
    size_t cap = 1;
    for (size_t i = 0; i < n; i++)
        cap += e[i].len;
    t->byte = mk_malloc(cap);
    t->depth = mk_malloc(cap * sizeof *t->depth);
    t->tok = mk_malloc(cap * sizeof *t->tok);
    t->end = mk_malloc(cap * sizeof *t->end);
    if (!t->byte || !t->depth || !t->tok || !t->end)
        return mk_err(MK_E_NOMEM, "out of memory for the vocabulary trie (%zu nodes)", cap);
    uint32_t path[GM_MAX_TOKEN];
    uint32_t plen = 0, nn = 0;
    const entry *prev = NULL;
    for (size_t i = 0; i < n; i++) {
        uint32_t l = 0;
        while (prev && l < prev->len && l < e[i].len && prev->p[l] == e[i].p[l])
            l++;
        if (prev && l == e[i].len && l == prev->len) { /* same bytes: chain after the node's token */
            int32_t id = t->tok[path[plen - 1]];
            while (dup[id] >= 0)
                id = dup[id];
            dup[id] = e[i].id;
            continue;
        }
        while (plen > l)
            t->end[path[--plen]] = nn;
        for (uint32_t k = l; k < e[i].len; k++) {
            t->byte[nn] = e[i].p[k];
            t->depth[nn] = (uint16_t)(k + 1);
            t->tok[nn] = -1;
            path[plen++] = nn++;
        }
        t->tok[path[plen - 1]] = e[i].id;
        prev = &e[i];
    }
    while (plen > 0)
        t->end[path[--plen]] = nn;
    t->n = nn;
    return MK_OK;
}

/* Bytes a string holds as they are, from a code-point boundary: no quote,
 * backslash or control byte; valid UTF-8, possibly cut at the end. */
static bool plain_string_bytes(const uint8_t *p, uint32_t n) {
    uint32_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c < 0x20 || c == '"' || c == '\\')
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        uint32_t need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            need = 1;
        else if (c >= 0xE0 && c <= 0xEF)
            need = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        else if (c >= 0xF0 && c <= 0xF4)
            need = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        else
            return false;
        i++;
        for (uint32_t k = 0; k < need && i < n; k++, i++) {
            if (p[i] < lo || p[i] > hi)
                return false;
            lo = 0x80, hi = 0xBF;
        }
    }
    return true;
}

static bool is_stop(const int32_t *stop, size_t n, int32_t id) {
    for (size_t i = 0; i < n; i++)
        if (stop[i] == id)
            return true;
    return false;
}

mk_status mk_grammar_vocab_create(const mk_tok *tok, int64_t V, const int32_t *stop, size_t n_stop,
                                  mk_grammar_vocab **out) {
    *out = NULL;
    if (V <= 0 || V > (1 << 24))
        return mk_err(MK_E_ARG, "grammar vocabulary: %lld ids is out of range", (long long)V);
    mk_grammar_vocab *v = mk_calloc(1, sizeof *v);
    if (!v)
        return mk_err(MK_E_NOMEM, "out of memory for a grammar vocabulary");
    v->tok = tok;
    v->V = V;
    v->words = (size_t)(V + 63) / 64;
    v->plain = mk_calloc(v->words, sizeof *v->plain);
    v->usable = mk_calloc(v->words, sizeof *v->usable);
    v->dup = mk_malloc((size_t)V * sizeof *v->dup);
    v->stop = mk_malloc((n_stop ? n_stop : 1) * sizeof *v->stop);
    entry *all = mk_malloc((size_t)V * sizeof *all), *other = mk_malloc((size_t)V * sizeof *other);
    mk_status st = MK_OK;
    if (!v->plain || !v->usable || !v->dup || !v->stop || !all || !other)
        st = mk_err(MK_E_NOMEM, "out of memory for a grammar vocabulary of %lld ids", (long long)V);
    size_t na = 0, no = 0;
    for (int64_t id = 0; st == MK_OK && id < V; id++) {
        v->dup[id] = -1;
        size_t len = 0;
        const char *b = mk_tok_token_bytes(tok, (int32_t)id, &len);
        if (!b && mk_tok_token_str(tok, (int32_t)id, NULL))
            st = mk_err(MK_E_UNSUPPORTED, "constrained decoding: the tokenizer has no decoder, so its tokens "
                        "have no fixed bytes");
        if (!b || !len || len > GM_MAX_TOKEN || mk_tok_is_special(tok, (int32_t)id) ||
            is_stop(stop, n_stop, (int32_t)id))
            continue;
        entry e = {(const uint8_t *)b, (uint32_t)len, (int32_t)id};
        all[na++] = e;
        v->usable[id >> 6] |= (uint64_t)1 << (id & 63);
        if (plain_string_bytes(e.p, e.len))
            v->plain[id >> 6] |= (uint64_t)1 << (id & 63);
        else
            other[no++] = e;
    }
    if (st == MK_OK) {
        memcpy(v->stop, stop, n_stop * sizeof *stop);
        v->nstop = n_stop;
        qsort(all, na, sizeof *all, cmp_entry);
        qsort(other, no, sizeof *other, cmp_entry);
        st = trie_build(&v->all, all, na, v->dup);
    }
    if (st == MK_OK) {
        int32_t *dup2 = mk_malloc((size_t)V * sizeof *dup2); /* the same chains again: discarded */
        if (!dup2)
            st = mk_err(MK_E_NOMEM, "out of memory for the vocabulary trie");
        for (int64_t i = 0; dup2 && i < V; i++)
            dup2[i] = -1;
        if (st == MK_OK)
            st = trie_build(&v->other, other, no, dup2);
        free(dup2);
    }
    free(all);
    free(other);
    if (st != MK_OK) {
        mk_grammar_vocab_free(v);
        return st;
    }
    *out = v;
    return MK_OK;
}

void mk_grammar_vocab_free(mk_grammar_vocab *v) {
    if (!v)
        return;
    trie_free(&v->all);
    trie_free(&v->other);
    free(v->plain);
    free(v->usable);
    free(v->dup);
    free(v->stop);
    free(v);
}

int64_t mk_grammar_vocab_size(const mk_grammar_vocab *v) { return v ? v->V : 0; }

/* ---- matching ----------------------------------------------------------------------- */

mk_status mk_grammar_match_create(const mk_grammar *g, const mk_grammar_vocab *v, mk_grammar_match **out) {
    *out = mk_calloc(1, sizeof **out);
    if (!*out)
        return mk_err(MK_E_NOMEM, "out of memory for a grammar matcher");
    (*out)->g = g;
    (*out)->v = v;
    if (!((*out)->bits = mk_malloc(v->words * sizeof *(*out)->bits))) {
        free(*out);
        *out = NULL;
        return mk_err(MK_E_NOMEM, "out of memory for a grammar matcher's mask");
    }
    gm_stack_init(g, &(*out)->s);
    return MK_OK;
}

void mk_grammar_match_free(mk_grammar_match *m) {
    if (!m)
        return;
    free(m->bits);
    free(m);
}

void mk_grammar_match_copy(mk_grammar_match *dst, const mk_grammar_match *src) {
    dst->s.depth = src->s.depth;
    memcpy(dst->s.f, src->s.f, (size_t)src->s.depth * sizeof *src->s.f);
    dst->ended = src->ended;
}

bool mk_grammar_match_bytes(mk_grammar_match *m, const char *s, size_t n) {
    if (m->ended)
        return n == 0;
    size_t i = 0;
    for (; i < n; i++)
        if (i >= GM_MAX_TOKEN || !gm_step(m->g, &m->s, (uint8_t)s[i], &m->undo[i]))
            break;
    if (i == n)
        return true;
    while (i-- > 0)
        gm_unstep(&m->s, &m->undo[i]);
    return false;
}

mk_status mk_grammar_match_token(mk_grammar_match *m, int32_t id) {
    const mk_grammar_vocab *v = m->v;
    if (!m->ended && is_stop(v->stop, v->nstop, id) && gm_done(m->g, &m->s)) {
        m->ended = true;
        return MK_OK;
    }
    size_t len = 0;
    const char *b = id >= 0 && id < v->V && ((v->usable[id >> 6] >> (id & 63)) & 1)
                        ? mk_tok_token_bytes(v->tok, id, &len) : NULL;
    if (!b || !mk_grammar_match_bytes(m, b, len))
        return mk_err(MK_E_ARG, "token %d does not continue the JSON the grammar allows", id);
    return MK_OK;
}

bool mk_grammar_match_done(const mk_grammar_match *m) { return m->ended || gm_done(m->g, &m->s); }

int64_t mk_grammar_match_min_left(const mk_grammar_match *m) { return m->ended ? 0 : gm_fin(m->g, &m->s); }

static void set_bit(uint64_t *bits, int32_t id) { bits[id >> 6] |= (uint64_t)1 << (id & 63); }

/* Walk trie t from the matcher's state, setting the bits of the tokens
 * allowed; limit >= 0: only tokens that leave a completion of at most
 * limit bytes. Returns the count set. */
static int64_t walk(mk_grammar_match *m, const gm_trie *t, int64_t limit, uint64_t *bits) {
    const mk_grammar *g = m->g;
    const mk_grammar_vocab *v = m->v;
    gm_stack *s = &m->s;
    int64_t count = 0;
    uint32_t cur = 0;
    for (uint32_t i = 0; i < t->n;) {
        uint32_t d = t->depth[i];
        while (cur >= d)
            gm_unstep(s, &m->undo[cur--]);
        if (!gm_step(g, s, t->byte[i], &m->undo[d])) {
            i = t->end[i];
            continue;
        }
        cur = d;
        if (t->tok[i] >= 0 && (limit < 0 || gm_fin(g, s) <= limit))
            for (int32_t id = t->tok[i]; id >= 0; id = v->dup[id]) {
                if (!((bits[id >> 6] >> (id & 63)) & 1))
                    count++;
                set_bit(bits, id);
            }
        i++;
    }
    while (cur > 0)
        gm_unstep(s, &m->undo[cur--]);
    return count;
}

int64_t mk_grammar_match_allowed(mk_grammar_match *m, int64_t budget, uint64_t *bits) {
    const mk_grammar_vocab *v = m->v;
    memset(bits, 0, v->words * sizeof *bits);
    if (m->ended)
        return 0;
    int64_t fin = gm_fin(m->g, &m->s), count = 0;
    /* steering: after this token, room for the completion and the stop
     * token. A budget too small for that (max_tokens below the shortest
     * completion in bytes) cannot be guaranteed, so every token must at
     * least shorten the shortest completion: the output heads for closing
     * and may still close in time with tokens of several bytes. limit -1:
     * no steering (budget <= 0); when steering leaves no room for any byte,
     * only the stop ids. */
    int64_t limit = budget <= 0 ? -1 : fin + 1 <= budget ? budget - 2 : fin - 1;
    if (gm_done(m->g, &m->s))
        for (size_t i = 0; i < v->nstop; i++)
            if (v->stop[i] >= 0 && v->stop[i] < v->V) {
                set_bit(bits, v->stop[i]);
                count++;
            }
    if (budget > 0 && limit < 0)
        return count;
    if (gm_in_plain_string(m->g, &m->s) && (limit < 0 || fin + 3 <= limit)) {
        for (size_t w = 0; w < v->words; w++) {
            bits[w] |= v->plain[w];
            count += __builtin_popcountll(v->plain[w]);
        }
        return count + walk(m, &v->other, limit, bits);
    }
    return count + walk(m, &v->all, limit, bits);
}

void mk_grammar_match_mask(mk_grammar_match *m, int64_t budget, float *logits, int64_t V) {
    const mk_grammar_vocab *v = m->v;
    uint64_t *bits = m->bits;
    if (mk_grammar_match_allowed(m, budget, bits) == 0) { /* cannot go on: let generation stop */
        for (int64_t i = 0; i < V; i++)
            if (!is_stop(v->stop, v->nstop, (int32_t)i))
                logits[i] = -INFINITY;
        return;
    }
    for (int64_t i = 0; i < V; i++)
        if (i >= v->V || !((bits[i >> 6] >> (i & 63)) & 1))
            logits[i] = -INFINITY;
}
