/* The BPE model: one pre-tokenized word -> token ids.
 *
 * Same algorithm as HF tokenizers' Word::merge_all: the word starts as one
 * symbol per character (looked up in the vocab, else byte-fallback <0xXX>
 * tokens, else the unk token, else an encode error: text is never dropped),
 * every adjacent pair that has a merge goes into a binary heap ordered by
 * (rank, position), and the lowest is applied until none is left. Entries made stale by an earlier merge are
 * recognised by re-checking the pair when popped, so each step is O(log n)
 * instead of rescanning the word.
 *
 * Results are cached per word (most text repeats a small set of words). The
 * cache is the only state that encode mutates, so it has its own mutex; it
 * is emptied when full rather than evicting piecemeal, which keeps it simple
 * and bounded. */
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "tokenizer/tok_impl.h"

#define CACHE_MAX_WORDS 32768
#define CACHE_MAX_WORD_BYTES 256
#define LOCAL_SYMS 64

struct tok_cache {
    pthread_mutex_t mu;
    tok_smap map;    /* word -> index into spans */
    tok_span *spans; /* ids of cached word i in ids */
    size_t n;
    tok_ivec ids;
};

mk_status tok_cache_create(tok_cache **out) {
    tok_cache *c = mk_calloc(1, sizeof *c);
    if (!c)
        return mk_err(MK_E_NOMEM, "tokenizer: out of memory for the word cache");
    c->spans = mk_malloc(CACHE_MAX_WORDS * sizeof *c->spans);
    if (!c->spans || pthread_mutex_init(&c->mu, NULL) != 0) {
        free(c->spans);
        free(c);
        return mk_err(MK_E_NOMEM, "tokenizer: cannot set up the word cache");
    }
    *out = c;
    return MK_OK;
}

void tok_cache_free(tok_cache *c) {
    if (!c)
        return;
    pthread_mutex_destroy(&c->mu);
    tok_smap_free(&c->map);
    tok_ivec_free(&c->ids);
    free(c->spans);
    free(c);
}

static bool cache_get(tok_cache *c, const char *w, size_t n, tok_ivec *out, mk_status *st) {
    bool hit = false;
    pthread_mutex_lock(&c->mu);
    int32_t i;
    if (tok_smap_get(&c->map, w, n, &i)) {
        /* a word cached as yielding no ids may sit in a still-empty id buffer */
        *st = c->spans[i].len ? tok_ivec_append(out, c->ids.p + c->spans[i].off, c->spans[i].len) : MK_OK;
        hit = true;
    }
    pthread_mutex_unlock(&c->mu);
    return hit;
}

/* A failure to cache is not an error: the ids are already computed. */
static void cache_put(tok_cache *c, const char *w, size_t n, const int32_t *ids, size_t k) {
    pthread_mutex_lock(&c->mu);
    if (c->n == CACHE_MAX_WORDS || c->ids.n + k > UINT32_MAX) {
        tok_smap_clear(&c->map);
        c->ids.n = 0;
        c->n = 0;
    }
    size_t off = c->ids.n;
    if (tok_ivec_append(&c->ids, ids, k) == MK_OK) {
        if (tok_smap_put(&c->map, w, n, (int32_t)c->n, NULL) == MK_OK)
            c->spans[c->n++] = (tok_span){(uint32_t)off, (uint32_t)k};
        else
            c->ids.n = off;
    }
    mk_err_clear();
    pthread_mutex_unlock(&c->mu);
}

typedef struct sym {
    int32_t id, prev, next;
    bool alive;
} sym;

typedef struct merge {
    int32_t rank, pos, id;
} merge;

static bool merge_less(merge a, merge b) { return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos; }

static void heap_push(merge *h, size_t *n, merge m) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!merge_less(m, h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = m;
}

static merge heap_pop(merge *h, size_t *n) {
    merge top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && merge_less(h[c + 1], h[c]))
            c++;
        if (!merge_less(h[c], last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n)
        h[i] = last;
    return top;
}

/* Look up one character of the word (with the subword prefix / word suffix
 * the model configures) and append its symbol(s). False when the character
 * has no token, no unk token and no byte fallback: HF drops it silently;
 * moekit refuses to lose text (the caller reports it). */
static bool add_char(const mk_tok *t, const char *c, size_t cl, bool first, bool last, sym *s,
                     size_t *ns, bool *pending_unk) {
    char tmp[CACHE_MAX_WORD_BYTES + 8];
    size_t pl = (!first && t->cont_prefix) ? strlen(t->cont_prefix) : 0;
    size_t sl = (last && t->eow_suffix) ? strlen(t->eow_suffix) : 0;
    const char *key = c;
    size_t kl = cl;
    if (pl + sl) { /* lengths were bounded at load so this fits */
        memcpy(tmp, t->cont_prefix ? t->cont_prefix : "", pl);
        memcpy(tmp + pl, c, cl);
        memcpy(tmp + pl + cl, t->eow_suffix ? t->eow_suffix : "", sl);
        key = tmp;
        kl = pl + cl + sl;
    }
    int32_t id;
    if (tok_smap_get(&t->vocab, key, kl, &id)) {
        if (*pending_unk) {
            s[(*ns)++] = (sym){t->unk_id, 0, 0, true};
            *pending_unk = false;
        }
        s[(*ns)++] = (sym){id, 0, 0, true};
        return true;
    }
    if (t->byte_fallback) {
        bool all = true;
        for (size_t i = 0; i < kl; i++)
            all = all && t->byte_ids[(uint8_t)key[i]] >= 0;
        if (all) {
            for (size_t i = 0; i < kl; i++)
                s[(*ns)++] = (sym){t->byte_ids[(uint8_t)key[i]], 0, 0, true};
            return true;
        }
    }
    if (t->unk_id < 0)
        return false;
    if (*pending_unk && !t->fuse_unk)
        s[(*ns)++] = (sym){t->unk_id, 0, 0, true};
    *pending_unk = true;
    return true;
}

/* The error for character c of a word that no token can represent. */
static mk_status cannot_encode(const mk_tok *t, const char *c, size_t cl) {
    size_t l;
    uint32_t cp = tok_utf8_decode(c, cl, &l);
    bool bl = false; /* a ByteLevel pre-tokenizer: the character stands for one input byte */
    for (size_t i = 0; i < t->n_pre; i++)
        bl = bl || t->pre[i].type == TOK_PRE_BYTELEVEL;
    int b = bl ? tok_bl_byte(cp) : -1;
    char bytes[16] = "";
    if (b >= 0)
        snprintf(bytes, sizeof bytes, "0x%02X", (unsigned)b & 0xFFu);
    return mk_err(MK_E_FORMAT,
                  "tokenizer %s: cannot encode %s%s%s (U+%04X \"%.*s\"): it is not in the vocabulary and "
                  "the tokenizer has no unk token and no byte fallback; refusing to drop text",
                  t->path, b >= 0 ? "byte " : "character", b >= 0 ? bytes : "", b >= 0 ? " of the input" : "",
                  (unsigned)cp, (int)cl, c);
}

/* One symbol per character of the word, linked as a list. */
static mk_status init_symbols(const mk_tok *t, const char *w, size_t n, sym *s, size_t *out_ns) {
    size_t ns = 0;
    bool pending_unk = false;
    for (size_t i = 0; i < n;) {
        size_t cl;
        tok_utf8_decode(w + i, n - i, &cl);
        if (!add_char(t, w + i, cl, i == 0, i + cl >= n, s, &ns, &pending_unk))
            return cannot_encode(t, w + i, cl);
        i += cl;
    }
    if (pending_unk)
        s[ns++] = (sym){t->unk_id, 0, 0, true};
    for (size_t i = 0; i < ns; i++) {
        s[i].prev = (int32_t)i - 1;
        s[i].next = i + 1 < ns ? (int32_t)i + 1 : -1;
    }
    *out_ns = ns;
    return MK_OK;
}

/* Apply merges lowest rank first (leftmost on ties) until none applies.
 * Heap size bound: ns-1 initial pairs, and each merge pops one entry and
 * pushes at most two, with at most ns-1 merges: < 2 * ns. */
static void run_merges(const mk_tok *t, sym *s, size_t ns, merge *h) {
    size_t hn = 0;
    int32_t rank, id;
    for (size_t i = 0; i + 1 < ns; i++)
        if (tok_pmap_get(&t->merges, s[i].id, s[i + 1].id, &rank, &id))
            heap_push(h, &hn, (merge){rank, (int32_t)i, id});
    while (hn > 0) {
        merge top = heap_pop(h, &hn);
        sym *a = &s[top.pos];
        if (!a->alive || a->next < 0)
            continue;
        sym *b = &s[a->next];
        if (!tok_pmap_get(&t->merges, a->id, b->id, &rank, &id) || id != top.id)
            continue; /* stale: one side was merged into something else */
        a->id = top.id;
        b->alive = false;
        a->next = b->next;
        if (b->next >= 0)
            s[b->next].prev = top.pos;
        if (a->prev >= 0 && tok_pmap_get(&t->merges, s[a->prev].id, a->id, &rank, &id))
            heap_push(h, &hn, (merge){rank, a->prev, id});
        if (a->next >= 0 && tok_pmap_get(&t->merges, a->id, s[a->next].id, &rank, &id))
            heap_push(h, &hn, (merge){rank, top.pos, id});
    }
}

static mk_status merge_word(const mk_tok *t, const char *w, size_t n, tok_ivec *out) {
    /* At most one symbol per byte of prefix + character + suffix (byte
     * fallback), so n * (1 + affixes) bounds the count. */
    size_t extra = (t->cont_prefix ? strlen(t->cont_prefix) : 0) + (t->eow_suffix ? strlen(t->eow_suffix) : 0);
    size_t cap = n * (1 + extra) + 1;
    sym ls[LOCAL_SYMS];
    merge lh[2 * LOCAL_SYMS];
    sym *s = ls;
    merge *h = lh;
    if (cap > LOCAL_SYMS) {
        s = mk_malloc(cap * sizeof *s);
        h = mk_malloc(cap * 2 * sizeof *h);
        if (!s || !h) {
            free(s);
            free(h);
            return mk_err(MK_E_NOMEM, "tokenizer: out of memory for a %zu-byte word", n);
        }
    }
    size_t ns = 0;
    mk_status st = init_symbols(t, w, n, s, &ns);
    if (st == MK_OK)
        run_merges(t, s, ns, h);
    else
        ns = 0;
    for (int32_t i = ns ? 0 : -1; i >= 0 && st == MK_OK; i = s[i].next)
        st = tok_ivec_push(out, s[i].id);
    if (s != ls) {
        free(s);
        free(h);
    }
    return st;
}

mk_status tok_bpe_word(const mk_tok *t, const char *w, size_t n, tok_ivec *out) {
    if (n == 0)
        return MK_OK;
    int32_t id;
    if (t->ignore_merges && tok_smap_get(&t->vocab, w, n, &id))
        return tok_ivec_push(out, id);
    bool cacheable = n <= CACHE_MAX_WORD_BYTES;
    mk_status st = MK_OK;
    if (cacheable && cache_get(t->cache, w, n, out, &st))
        return st;
    size_t before = out->n;
    MK_TRY(merge_word(t, w, n, out));
    /* out->p is NULL when nothing was ever pushed (a word that yields no id) */
    if (cacheable && out->p)
        cache_put(t->cache, w, n, out->p + before, out->n - before);
    return MK_OK;
}
