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

/* jansson's error text made fit for users: its one message that names a
 * library flag ("\\u0000 is not allowed without JSON_ALLOW_NUL") says
 * what is wrong with the input instead. Returns `text` or a thread-local
 * copy. */
const char *mk_json_errtext(const char *text);

#endif
