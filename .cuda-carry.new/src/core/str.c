/* String helpers (see str.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/str.h"

char *mk_vstrfmt(const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return NULL;
    char *b = mk_malloc((size_t)n + 1);
    if (b)
        vsnprintf(b, (size_t)n + 1, fmt, ap);
    return b;
}

char *mk_strfmt(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *b = mk_vstrfmt(fmt, ap);
    va_end(ap);
    return b;
}

bool mk_str_ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && memcmp(s + a - b, suf, b) == 0;
}

const char *mk_json_errtext(const char *text) {
    static const char flag[] = "\\u0000 is not allowed without JSON_ALLOW_NUL";
    static _Thread_local char buf[512];
    const char *p = text ? strstr(text, flag) : NULL;
    if (!p)
        return text;
    snprintf(buf, sizeof buf, "%.*s\\u0000 (a NUL character) is not allowed in a string%s", (int)(p - text), text,
             p + sizeof flag - 1);
    return buf;
}
