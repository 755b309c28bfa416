/* Internal: small string helpers shared by every layer (malloc'd
 * formatting, suffix tests). */
#ifndef MK_CORE_STR_H
#define MK_CORE_STR_H

#include <stdarg.h>
#include <stdbool.h>

/* printf into a malloc'd string; NULL when out of memory or on a bad format. */
char *mk_strfmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *mk_vstrfmt(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
/* Does s end with suffix (an empty suffix always does)? */
bool mk_str_ends_with(const char *s, const char *suffix);

#endif
