/* Small helpers shared by the tokenizer stages: growable id vectors and
 * UTF-8 validation / coding.
 *
 * The UTF-8 scanner follows Unicode Table 3-7 (well-formed byte sequences)
 * and reports the "maximal subpart" of an ill-formed sequence, so that the
 * decoder replaces exactly what Rust's String::from_utf8_lossy (used by HF
 * tokenizers' ByteLevel decoder) replaces: one U+FFFD per maximal subpart. */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "tokenizer/tok_impl.h"

mk_status tok_ivec_append(tok_ivec *v, const int32_t *x, size_t n) {
    if (v->n + n > v->cap) {
        size_t nc = v->cap ? v->cap : 64;
        while (nc < v->n + n)
            nc *= 2;
        int32_t *np = mk_realloc(v->p, nc * sizeof *np);
        if (!np)
            return mk_err(MK_E_NOMEM, "tokenizer: out of memory for %zu token ids", nc);
        v->p = np;
        v->cap = nc;
    }
    if (n)
        memcpy(v->p + v->n, x, n * sizeof *x);
    v->n += n;
    return MK_OK;
}

mk_status tok_ivec_push(tok_ivec *v, int32_t x) {
    if (v->n < v->cap) {
        v->p[v->n++] = x;
        return MK_OK;
    }
    return tok_ivec_append(v, &x, 1);
}

void tok_ivec_free(tok_ivec *v) {
    free(v->p);
    memset(v, 0, sizeof *v);
}

tok_u8_state tok_utf8_scan(const uint8_t *p, size_t n, size_t *len) {
    uint8_t b = p[0];
    if (b < 0x80) {
        *len = 1;
        return TOK_U8_OK;
    }
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (b >= 0xC2 && b <= 0xDF) {
        need = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 3;
        if (b == 0xE0)
            lo = 0xA0; /* overlong */
        else if (b == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 4;
        if (b == 0xF0)
            lo = 0x90; /* overlong */
        else if (b == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        *len = 1; /* C0, C1, F5..FF or a stray continuation byte */
        return TOK_U8_BAD;
    }
    for (size_t i = 1; i < need; i++) {
        if (i >= n) {
            *len = i;
            return TOK_U8_PARTIAL;
        }
        uint8_t c = p[i];
        bool ok = i == 1 ? (c >= lo && c <= hi) : (c >= 0x80 && c <= 0xBF);
        if (!ok) {
            *len = i;
            return TOK_U8_BAD;
        }
    }
    *len = need;
    return TOK_U8_OK;
}

size_t tok_utf8_check(const char *s, size_t n) {
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0, l;
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        if (tok_utf8_scan(p + i, n - i, &l) != TOK_U8_OK)
            return i;
        i += l;
    }
    return n;
}

uint32_t tok_utf8_decode(const char *s, size_t n, size_t *len) {
    const uint8_t *p = (const uint8_t *)s;
    if (n == 0) {
        *len = 0;
        return 0;
    }
    if (p[0] < 0x80) {
        *len = 1;
        return p[0];
    }
    if (p[0] < 0xE0 && n >= 2) {
        *len = 2;
        return ((uint32_t)(p[0] & 0x1F) << 6) | (p[1] & 0x3F);
    }
    if (p[0] < 0xF0 && n >= 3) {
        *len = 3;
        return ((uint32_t)(p[0] & 0x0F) << 12) | ((uint32_t)(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
    }
    if (n >= 4) {
        *len = 4;
        return ((uint32_t)(p[0] & 0x07) << 18) | ((uint32_t)(p[1] & 0x3F) << 12) |
               ((uint32_t)(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
    }
    *len = 1; /* truncated: callers validate first, this only keeps us in bounds */
    return 0xFFFD;
}

size_t tok_utf8_encode(uint32_t cp, char *out) {
    uint8_t *o = (uint8_t *)out;
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (uint8_t)(0xC0 | (cp >> 6));
        o[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | (cp >> 12));
        o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | (cp >> 18));
    o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}
