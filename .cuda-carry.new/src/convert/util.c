/* Small helpers of the converter: a string-keyed hash map (open
 * addressing, xxh3 of the key; the converter looks up every tensor name of
 * a checkpoint that can hold 200,000 of them), string building, and dtype
 * predicates. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "core/alloc.h"
#include "convert/conv_impl.h"
#include "core/str.h"

struct cv_map {
    const char **keys;
    void **vals;
    size_t cap, n;
};

cv_map *cv_map_new(size_t hint) {
    cv_map *m = mk_calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->cap = 64;
    while (m->cap < hint * 2)
        m->cap *= 2;
    m->keys = mk_calloc(m->cap, sizeof *m->keys);
    m->vals = mk_calloc(m->cap, sizeof *m->vals);
    if (!m->keys || !m->vals) {
        cv_map_free(m);
        return NULL;
    }
    return m;
}

void cv_map_free(cv_map *m) {
    if (!m)
        return;
    free(m->keys);
    free(m->vals);
    free(m);
}

static size_t slot_of(const cv_map *m, const char *key) {
    size_t mask = m->cap - 1, i = (size_t)XXH3_64bits(key, strlen(key)) & mask;
    while (m->keys[i] && strcmp(m->keys[i], key) != 0)
        i = (i + 1) & mask;
    return i;
}

static bool grow(cv_map *m) {
    cv_map big = {0};
    big.cap = m->cap * 2;
    big.keys = mk_calloc(big.cap, sizeof *big.keys);
    big.vals = mk_calloc(big.cap, sizeof *big.vals);
    if (!big.keys || !big.vals) {
        free(big.keys);
        free(big.vals);
        return false;
    }
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i]) {
            size_t j = slot_of(&big, m->keys[i]);
            big.keys[j] = m->keys[i];
            big.vals[j] = m->vals[i];
        }
    free(m->keys);
    free(m->vals);
    m->keys = big.keys;
    m->vals = big.vals;
    m->cap = big.cap;
    return true;
}

bool cv_map_put(cv_map *m, const char *key, void *val) {
    if ((m->n + 1) * 2 > m->cap && !grow(m))
        return false;
    size_t i = slot_of(m, key);
    if (!m->keys[i]) {
        m->keys[i] = key;
        m->n++;
    }
    m->vals[i] = val;
    return true;
}

void *cv_map_get(const cv_map *m, const char *key) {
    size_t i = slot_of(m, key);
    return m->keys[i] ? m->vals[i] : NULL;
}

char *cv_strdup(const char *s) { return s ? mk_strdup(s) : NULL; }

char *cv_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *b = mk_vstrfmt(fmt, ap);
    va_end(ap);
    return b;
}

bool cv_ends_with(const char *s, const char *suf) { return mk_str_ends_with(s, suf); }


bool cv_is_float_dtype(mk_dtype t) {
    return t == MK_DT_F32 || t == MK_DT_F16 || t == MK_DT_BF16 || t == MK_DT_F64;
}

size_t cv_esize(mk_dtype t) {
    const mk_dtype_traits *tr = mk_dtype_info(t);
    return tr ? tr->bits / 8 : 0;
}

const char *cv_shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (int d = 0; d < ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, d ? ",%lld" : "%lld", (long long)shape[d]);
    if (k < n)
        snprintf(buf + k, n - k, "]");
    return buf;
}
