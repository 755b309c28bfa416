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
#include <stdlib.h>

#include "core/alloc.h"

/* What a JSON value is, for messages ("expected a string, found an
 * array"): NULL is "nothing" (an absent field). */
static inline const char *mk_json_type_name(const json_t *j) {
    if (!j)
        return "nothing";
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

static inline unsigned long mk_json_mark(void) {
    mk_alloc_hook_json();
    return mk_alloc_failures();
}

static inline bool mk_json_nomem(const json_error_t *e, unsigned long mark) {
    return mk_alloc_failures() != mark || json_error_code(e) == json_error_out_of_memory;
}

/* The document a load returned, or NULL when an allocation failed during
 * the load (mk_json_nomem then says so): jansson 2.14's lexer ignores a
 * failed append while it saves a token, so a load can succeed with a
 * string cut short (a tensor name missing its last letter;
 * tests/unit/test_alloc_faults.c). The mk_json_load* below apply it. */
static inline json_t *mk_json_checked(json_t *root, unsigned long mark) {
    if (root && mk_alloc_failures() != mark) {
        json_decref(root);
        root = NULL;
    }
    return root;
}

/* jansson's loads bracketed by mk_alloc_json_parse and checked with
 * mk_json_checked: the way every reader parses. */
static inline json_t *mk_json_loadb(const char *b, size_t n, size_t flags, json_error_t *e,
                                    unsigned long mark) {
    mk_alloc_json_parse(1);
    json_t *r = json_loadb(b, n, flags, e);
    mk_alloc_json_parse(0);
    return mk_json_checked(r, mark);
}

static inline json_t *mk_json_loads(const char *s, size_t flags, json_error_t *e, unsigned long mark) {
    mk_alloc_json_parse(1);
    json_t *r = json_loads(s, flags, e);
    mk_alloc_json_parse(0);
    return mk_json_checked(r, mark);
}

static inline json_t *mk_json_load_file(const char *path, size_t flags, json_error_t *e, unsigned long mark) {
    mk_alloc_json_parse(1);
    json_t *r = json_load_file(path, flags, e);
    mk_alloc_json_parse(0);
    return mk_json_checked(r, mark);
}

/* json_dumps for a document built since `mark`: NULL (no memory) when an
 * allocation failed while building it, since jansson's setters report that
 * only through return values callers rarely check (the document would lack
 * a key), or inside the dump itself (the text could lack a part: seen
 * with jansson 2.14, tests/unit/test_alloc_faults.c). */
static inline char *mk_json_dumps_checked(const json_t *j, size_t flags, unsigned long mark) {
    char *s = mk_alloc_failures() == mark ? json_dumps(j, flags) : NULL;
    if (s && mk_alloc_failures() != mark) {
        free(s);
        s = NULL;
    }
    return s;
}

#endif
