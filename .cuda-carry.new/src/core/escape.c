/* Control characters out of untrusted text (see include/moekit/escape.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "moekit/escape.h"

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *s) {
    unsigned c = s[0];
    size_t n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (!n || (n == 2 && c < 0xC2) || (n == 4 && c > 0xF4))
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    if (n == 3 && ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] >= 0xA0)))
        return 0; /* overlong, surrogate */
    if (n == 4 && ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] >= 0x90)))
        return 0; /* overlong, above U+10FFFF */
    return n;
}

/* The escape of the character at s (its length in *len), or NULL when it
 * prints as it is. */
static const char *esc_one(const unsigned char *s, unsigned flags, size_t *len, char buf[8]) {
    unsigned c = s[0];
    *len = 1;
    if (c == '\\')
        return (flags & MK_ESC_BACKSLASH) ? "\\\\" : NULL;
    if (c == '\n')
        return "\\n";
    if (c == '\r')
        return "\\r";
    if (c == '\t')
        return "\\t";
    if (c < 0x20 || c == 0x7F) {
        snprintf(buf, 8, "\\x%02x", c);
        return buf;
    }
    if (c < 0x80)
        return NULL;
    size_t n = utf8_len(s);
    if (!n) {
        snprintf(buf, 8, "\\x%02x", c);
        return buf;
    }
    *len = n;
    if (n == 2 && c == 0xC2 && s[1] < 0xA0) { /* U+0080..U+009F */
        snprintf(buf, 8, "\\u%04x", (unsigned)s[1]);
        return buf;
    }
    return NULL;
}

size_t mk_escape(char *out, size_t cap, const char *s, unsigned flags) {
    size_t need = 0;
    char buf[8];
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    while (*p) {
        size_t len;
        const char *e = esc_one(p, flags, &len, buf);
        const char *src = e ? e : (const char *)p;
        size_t n = e ? strlen(e) : len;
        if (need + n < cap)
            memcpy(out + need, src, n);
        else if (need < cap)
            cap = need + 1; /* truncated: never half an escape or a code point */
        need += n;
        p += len;
    }
    if (cap)
        out[need < cap ? need : cap - 1] = 0;
    return need;
}

char *mk_escape_dup(const char *s, unsigned flags) {
    size_t n = mk_escape(NULL, 0, s, flags);
    char *out = mk_malloc(n + 1);
    if (out)
        mk_escape(out, n + 1, s, flags);
    return out;
}

bool mk_escape_needed(const char *s, unsigned flags) {
    char buf[8];
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p;) {
        size_t len;
        if (esc_one(p, flags, &len, buf))
            return true;
        p += len;
    }
    return false;
}
