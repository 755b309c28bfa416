/* Added-token matcher: a byte trie giving the longest added token that
 * starts at a position.
 *
 * HF tokenizers finds added tokens with a leftmost-longest aho-corasick
 * automaton; scanning positions left to right and taking the longest token
 * at the first position that has one yields the same matches. Each node keeps
 * its children as a sibling list: the tries are small (a few hundred tokens
 * sharing prefixes such as "<|" or "<｜"), and `first` lets the scan skip
 * the bytes no token starts with in one table lookup. */
#include <stdlib.h>

#include "core/alloc.h"
#include "tokenizer/tok_impl.h"

static mk_status new_node(tok_trie *tr, uint8_t byte, int32_t *idx) {
    if (tr->n == tr->cap) {
        size_t nc = tr->cap ? tr->cap * 2 : 256;
        tok_trie_node *nn = mk_realloc(tr->nodes, nc * sizeof *nn);
        if (!nn)
            return mk_err(MK_E_NOMEM, "tokenizer: out of memory for the added-token trie");
        tr->nodes = nn;
        tr->cap = nc;
    }
    if (tr->n >= INT32_MAX)
        return mk_err(MK_E_NOMEM, "tokenizer: added-token trie too large");
    tr->nodes[tr->n] = (tok_trie_node){-1, -1, -1, byte};
    *idx = (int32_t)tr->n++;
    return MK_OK;
}

mk_status tok_trie_add(tok_trie *tr, const char *s, size_t n, int32_t added) {
    int32_t cur;
    if (tr->n == 0)
        MK_TRY(new_node(tr, 0, &cur));
    if (n == 0)
        return MK_OK; /* an empty token can never be matched */
    tr->first[(uint8_t)s[0]] = true;
    cur = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        int32_t c = tr->nodes[cur].child;
        while (c >= 0 && tr->nodes[c].byte != b)
            c = tr->nodes[c].sibling;
        if (c < 0) {
            MK_TRY(new_node(tr, b, &c));
            tr->nodes[c].sibling = tr->nodes[cur].child;
            tr->nodes[cur].child = c;
        }
        cur = c;
    }
    /* The first token with some content keeps the node (duplicates in
     * added_tokens resolve to the first id, as HF's map insertion does not
     * re-add existing content). */
    if (tr->nodes[cur].added < 0)
        tr->nodes[cur].added = added;
    return MK_OK;
}

int32_t tok_trie_longest(const tok_trie *tr, const char *s, size_t n, size_t *len) {
    if (tr->n == 0 || n == 0 || !tr->first[(uint8_t)s[0]])
        return -1;
    int32_t cur = 0, best = -1;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        int32_t c = tr->nodes[cur].child;
        while (c >= 0 && tr->nodes[c].byte != b)
            c = tr->nodes[c].sibling;
        if (c < 0)
            break;
        cur = c;
        int32_t a = tr->nodes[cur].added;
        if (a >= 0) {
            best = a;
            *len = i + 1;
        }
    }
    return best;
}

void tok_trie_free(tok_trie *tr) {
    free(tr->nodes);
    tr->nodes = NULL;
    tr->n = tr->cap = 0;
}
