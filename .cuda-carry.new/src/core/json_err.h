/* Telling a JSON file that is wrong from a parser that ran out of memory.
 *
 * jansson reports both as a NULL load, and an allocation failure in its
 * lexer reads like a syntax error ("string expected"). Its allocations go
 * through the library's hook (mk_alloc_hook_json), which counts failures
 * per thread: a reader takes mk_json_mark() before parsing and, when the
 * load fails, asks mk_json_nomem() whether an allocation failed meanwhile;
 * then the message says "no memory", never blames the file. */
#ifndef MK_CORE_JSON_ERR_H
#define MK_CORE_JSON_ERR_H

#include <jansson.h>
#include <stdbool.h>

#include "core/alloc.h"

static inline unsigned long mk_json_mark(void) {
    mk_alloc_hook_json();
    return mk_alloc_failures();
}

static inline bool mk_json_nomem(const json_error_t *e, unsigned long mark) {
    return mk_alloc_failures() != mark || json_error_code(e) == json_error_out_of_memory;
}

#endif
