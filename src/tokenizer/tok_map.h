/* Hash maps of the tokenizer: string -> int32 (vocab, added tokens, cache
 * keys) and (id, id) pair -> (rank, id) (BPE merges).
 *
 * Open addressing with linear probing at load <= 1/2; tables only grow. The
 * string map copies its keys into its own arena, so callers may pass
 * temporary buffers. Lookups never allocate, so a built map can be read from
 * many threads at once. */
#ifndef MK_TOK_MAP_H
#define MK_TOK_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moekit/status.h"

typedef struct tok_sslot {
    uint64_t hash;
    uint32_t off, len; /* key bytes in the arena */
    int32_t val;
    uint32_t used;
} tok_sslot;

typedef struct tok_smap {
    tok_sslot *slots;
    size_t cap, count; /* cap is 0 or a power of two */
    char *keys;
    size_t keys_len, keys_cap;
} tok_smap;

/* Insert key -> val. When the key is present its value is replaced and
 * *existed (if non-NULL) is set. */
mk_status tok_smap_put(tok_smap *m, const char *key, size_t n, int32_t val, bool *existed);
/* Room for n entries and key_bytes of keys without growing (a loader that
 * knows its count: each doubling rehashes every entry so far). */
mk_status tok_smap_reserve(tok_smap *m, size_t n, size_t key_bytes);
/* True and *val when present. */
bool tok_smap_get(const tok_smap *m, const char *key, size_t n, int32_t *val);
/* Drop every entry, keep the allocation. */
void tok_smap_clear(tok_smap *m);
void tok_smap_free(tok_smap *m);

typedef struct tok_pslot {
    uint64_t key;
    int32_t rank; /* -1 = empty slot */
    int32_t val;
} tok_pslot;

typedef struct tok_pmap {
    tok_pslot *slots;
    size_t cap, count;
} tok_pmap;

mk_status tok_pmap_put(tok_pmap *m, int32_t a, int32_t b, int32_t rank, int32_t val);
mk_status tok_pmap_reserve(tok_pmap *m, size_t n);
bool tok_pmap_get(const tok_pmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *val);
void tok_pmap_free(tok_pmap *m);

#endif
