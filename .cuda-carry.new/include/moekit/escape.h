/* Escaping untrusted text for line-oriented output.
 *
 * Tensor names, paths and fields come from files anyone can write. Printed
 * raw, a newline in a tensor name forges a line of a `moekit hash` manifest
 * and an ESC sequence drives the reader's terminal. Every text output that
 * quotes such a string (hash, inspect, verify, convert and quantize
 * messages, every error message) passes it through mk_escape first:
 *   \n \r \t            -> \n \r \t
 *   other bytes < 0x20,
 *   0x7F, and bytes that
 *   are not UTF-8       -> \xHH
 *   C1 controls U+0080..U+009F (terminals read U+009B as CSI) -> \u0080..\u009f
 *   \                   -> \\  only with MK_ESC_BACKSLASH
 * Printable text, UTF-8 included, is unchanged. With MK_ESC_BACKSLASH the
 * mapping is one to one, so an escaped manifest line still names exactly one
 * tensor. */
#ifndef MOEKIT_ESCAPE_H
#define MOEKIT_ESCAPE_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { MK_ESC_BACKSLASH = 1u << 0 };

/* Escape the NUL-terminated s into out (cap bytes, always NUL-terminated
 * when cap > 0, truncated like snprintf). Returns the length the whole
 * escaped text needs, without the NUL. */
size_t mk_escape(char *out, size_t cap, const char *s, unsigned flags);
/* The escaped text in a malloc'd string; NULL when out of memory. */
char *mk_escape_dup(const char *s, unsigned flags);
/* Whether s needs any escaping (false: print it as it is). */
bool mk_escape_needed(const char *s, unsigned flags);

#ifdef __cplusplus
}
#endif
#endif
