/* Open-addressing hash maps for the tokenizer (see tok_map.h).
 *
 * Strings hash with XXH3 (vocabularies hold 150k+ keys, many sharing long
 * prefixes); pairs of ids with a 64-bit finalizer. Both tables double when
 * half full so probe runs stay short. */
#include "core/alloc.h"
#include "tokenizer/tok_map.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static uint64_t mix64(uint64_t x) {
    /* splitmix64 finalizer: adjacent ids must not land in adjacent slots. */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* The slots a table of cap slots (first: its first size) needs for n
 * entries at load <= 1/2, doubling; 0 when they would not fit in memory. */
static size_t cap_for(size_t cap, size_t first, size_t n, size_t slot) {
    size_t ncap = cap ? cap : first;
    while (ncap / 2 < n) {
        if (ncap > SIZE_MAX / 2 / slot)
            return 0;
        ncap *= 2;
    }
    return ncap;
}

/* ---- string map ---------------------------------------------------------- */

static size_t sfind(const tok_smap *m, uint64_t h, const char *key, size_t n, bool *found) {
    size_t mask = m->cap - 1, i = (size_t)h & mask;
    for (;;) {
        const tok_sslot *s = &m->slots[i];
        if (!s->used) {
            *found = false;
            return i;
        }
        /* (an empty key may come before the key arena exists: no pointer arithmetic on NULL) */
        if (s->hash == h && s->len == n && (n == 0 || memcmp(m->keys + s->off, key, n) == 0)) {
            *found = true;
            return i;
        }
        i = (i + 1) & mask;
    }
}

static mk_status sgrow(tok_smap *m, size_t ncap) {
    tok_sslot *ns = mk_calloc(ncap, sizeof *ns);
    if (!ns)
        return mk_err(MK_E_NOMEM, "tokenizer: out of memory growing a hash table to %zu slots", ncap);
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].used)
            continue;
        size_t j = (size_t)m->slots[i].hash & (ncap - 1);
        while (ns[j].used)
            j = (j + 1) & (ncap - 1);
        ns[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    return MK_OK;
}

mk_status tok_smap_put(tok_smap *m, const char *key, size_t n, int32_t val, bool *existed) {
    if (existed)
        *existed = false;
    if (n > UINT32_MAX)
        return mk_err(MK_E_ARG, "tokenizer: key of %zu bytes is too long", n);
    if ((m->count + 1) * 2 > m->cap)
        MK_TRY(sgrow(m, m->cap ? m->cap * 2 : 64));
    uint64_t h = XXH3_64bits(key, n);
    bool found;
    size_t i = sfind(m, h, key, n, &found);
    if (found) {
        m->slots[i].val = val;
        if (existed)
            *existed = true;
        return MK_OK;
    }
    if (m->keys_len + n > UINT32_MAX)
        return mk_err(MK_E_NOMEM, "tokenizer: hash-map key arena exceeds 4 GiB");
    if (m->keys_len + n > m->keys_cap) {
        size_t nc = m->keys_cap ? m->keys_cap : 4096;
        while (nc < m->keys_len + n)
            nc *= 2;
        char *nk = mk_realloc(m->keys, nc);
        if (!nk)
            return mk_err(MK_E_NOMEM, "tokenizer: out of memory for hash-map keys (%zu bytes)", nc);
        m->keys = nk;
        m->keys_cap = nc;
    }
    if (n)
        memcpy(m->keys + m->keys_len, key, n);
    m->slots[i] = (tok_sslot){h, (uint32_t)m->keys_len, (uint32_t)n, val, 1};
    m->keys_len += n;
    m->count++;
    return MK_OK;
}

mk_status tok_smap_reserve(tok_smap *m, size_t n, size_t key_bytes) {
    if (key_bytes > m->keys_cap && key_bytes <= UINT32_MAX) {
        char *nk = mk_realloc(m->keys, key_bytes);
        if (!nk)
            return mk_err(MK_E_NOMEM, "tokenizer: out of memory for hash-map keys (%zu bytes)", key_bytes);
        m->keys = nk;
        m->keys_cap = key_bytes;
    }
    size_t ncap = cap_for(m->cap, 64, n, sizeof(tok_sslot));
    if (!ncap)
        return mk_err(MK_E_NOMEM, "tokenizer: a hash table of %zu entries is too large", n);
    return ncap > m->cap ? sgrow(m, ncap) : MK_OK;
}

bool tok_smap_get(const tok_smap *m, const char *key, size_t n, int32_t *val) {
    if (!m->cap)
        return false;
    bool found;
    size_t i = sfind(m, XXH3_64bits(key, n), key, n, &found);
    if (found && val)
        *val = m->slots[i].val;
    return found;
}

void tok_smap_clear(tok_smap *m) {
    if (m->slots)
        memset(m->slots, 0, m->cap * sizeof *m->slots);
    m->count = 0;
    m->keys_len = 0;
}

void tok_smap_free(tok_smap *m) {
    free(m->slots);
    free(m->keys);
    memset(m, 0, sizeof *m);
}

/* ---- pair map ------------------------------------------------------------ */

static uint64_t pkey(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

static mk_status pgrow(tok_pmap *m, size_t ncap) {
    tok_pslot *ns = mk_malloc(ncap * sizeof *ns);
    if (!ns)
        return mk_err(MK_E_NOMEM, "tokenizer: out of memory growing the merge table to %zu slots", ncap);
    for (size_t i = 0; i < ncap; i++)
        ns[i].rank = -1;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i].rank < 0)
            continue;
        size_t j = (size_t)mix64(m->slots[i].key) & (ncap - 1);
        while (ns[j].rank >= 0)
            j = (j + 1) & (ncap - 1);
        ns[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    return MK_OK;
}

mk_status tok_pmap_put(tok_pmap *m, int32_t a, int32_t b, int32_t rank, int32_t val) {
    if ((m->count + 1) * 2 > m->cap)
        MK_TRY(pgrow(m, m->cap ? m->cap * 2 : 1024));
    uint64_t k = pkey(a, b);
    size_t mask = m->cap - 1, i = (size_t)mix64(k) & mask;
    while (m->slots[i].rank >= 0 && m->slots[i].key != k)
        i = (i + 1) & mask;
    if (m->slots[i].rank < 0)
        m->count++;
    m->slots[i] = (tok_pslot){k, rank, val};
    return MK_OK;
}

mk_status tok_pmap_reserve(tok_pmap *m, size_t n) {
    size_t ncap = cap_for(m->cap, 1024, n, sizeof(tok_pslot));
    if (!ncap)
        return mk_err(MK_E_NOMEM, "tokenizer: a merge table of %zu entries is too large", n);
    return ncap > m->cap ? pgrow(m, ncap) : MK_OK;
}

bool tok_pmap_get(const tok_pmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *val) {
    if (!m->cap)
        return false;
    uint64_t k = pkey(a, b);
    size_t mask = m->cap - 1, i = (size_t)mix64(k) & mask;
    while (m->slots[i].rank >= 0) {
        if (m->slots[i].key == k) {
            *rank = m->slots[i].rank;
            *val = m->slots[i].val;
            return true;
        }
        i = (i + 1) & mask;
    }
    return false;
}

void tok_pmap_free(tok_pmap *m) {
    free(m->slots);
    memset(m, 0, sizeof *m);
}
