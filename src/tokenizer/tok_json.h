/* tokenizer.json's model.vocab and model.merges read from the file's bytes,
 * the rest of the document left to jansson (tok_json.c says why and how). */
#ifndef MK_TOK_JSON_H
#define MK_TOK_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer/tok_impl.h"

/* jansson's own nesting limit (JSON_PARSER_MAX_DEPTH) */
#define TOK_JSON_MAX_DEPTH 2048

/* Tests only: true makes the loader hand the whole file to jansson (the
 * DOM path the walk falls back to), the reference the tests compare with. */
void tok_json_test_dom(bool on);
bool tok_json_dom_only(void);

/* A value's bytes s[at .. end); end 0: none. count: its elements, once
 * tok_json_check has read it (the tables' sizes before they fill). */
typedef struct tok_json_range {
    size_t at, end, count;
} tok_json_range;

/* The values of the root object's last "model" member's last "vocab" (when
 * an object) and "merges" (when an array) members; false when s[0..n) is
 * not a JSON object as far as this walk can tell (the caller then gives the
 * whole text to jansson, whose message names the fault). */
bool tok_json_locate(const char *s, size_t n, tok_json_range *vocab, tok_json_range *merges);
/* The text jansson parses: s[0..n) with the values *r[0..nr) (in file
 * order, not overlapping) cut to their opener, their newlines and their
 * closer ({} or [] with the line count kept). fix[k] maps jansson's
 * positions back to the file's (tok_json_fix_at): columns past a cut value's
 * closer on its line are `shift` characters further right in the file. */
typedef struct tok_json_fix {
    int line, col, shift;
    size_t end, removed; /* the cut value's end in the cut text; bytes it lost */
} tok_json_fix;
mk_status tok_json_cut(const char *path, const char *s, size_t n, tok_json_range *const *r, int nr, char **out,
                       size_t *on, tok_json_fix *fix);
void tok_json_fix_at(const tok_json_fix *fix, int nr, int *line, int *col);
/* The file's byte offset of offset pos of the cut text. */
size_t tok_json_file_pos(const tok_json_fix *fix, int nr, size_t pos);

/* The value at *r is JSON, strictly (jansson's rules: tok_json.c), and
 * r->count its elements: the values cut out of jansson's document are
 * checked before anything is read from the document, as jansson would have
 * refused the whole file. */
mk_status tok_json_check(const char *path, const char *s, tok_json_range *r);
/* Each entry of the vocab object at r, in file order (a duplicate key
 * comes again, as jansson would keep its last value): its key, unescaped
 * (NUL-terminated, n bytes), and its value: an integer v (range not
 * checked), or, when not an integer, what it is (`bad`, jansson's type
 * name, e.g. "a string"). The checks are the caller's, on each key's last
 * value. */
typedef mk_status (*tok_json_vocab_fn)(void *u, const char *key, size_t n, int64_t v, const char *bad);
mk_status tok_json_vocab(const char *path, const char *s, tok_json_range r, tok_json_vocab_fn fn, void *u);
/* Each merge of the array at r ("a b" with one space, or ["a", "b"]): its
 * index and two sides. */
typedef mk_status (*tok_json_merge_fn)(void *u, size_t i, const char *a, size_t al, const char *b, size_t bl);
mk_status tok_json_merges(const char *path, const char *s, tok_json_range r, tok_json_merge_fn fn, void *u);

#endif
