/* The library's allocator hook: every heap allocation in src/ goes through
 * these (mk_malloc, not malloc), so tests can count allocations and make
 * the Nth one fail, SQLite-style (tests/unit/test_alloc_faults.c re-runs
 * model open, tokenizer load and convert planning with a failure at every
 * successive allocation and accepts only success or a clean MK_E_NOMEM).
 *
 * The memory is plain malloc memory: free() releases it, and memory from
 * libraries (jansson, getline, realpath) mixes freely with it. Without a
 * failure armed the hook costs one relaxed atomic load. */
#ifndef MK_CORE_ALLOC_H
#define MK_CORE_ALLOC_H

#include <stddef.h>
#include <stdint.h>

void *mk_malloc(size_t n);
void *mk_calloc(size_t n, size_t size);
void *mk_realloc(void *p, size_t n);
void *mk_aligned_alloc(size_t align, size_t n);
char *mk_strdup(const char *s);
char *mk_strndup(const char *s, size_t n);

/* Allocations that failed on this thread so far (real or injected): a
 * reader compares it before and after a library call (jansson) that
 * reports running out of memory as something else. */
unsigned long mk_alloc_failures(void);

/* Bytes this thread has allocated through the hook so far (every request
 * counts, frees are not subtracted: the difference across a call is an
 * upper bound of what the call still holds). Lets a caller charge a
 * plan's own memory against a budget without reading /proc. */
uint64_t mk_alloc_bytes(void);

/* Route jansson's allocations through this hook (once per process; the
 * JSON readers call it before parsing). */
void mk_alloc_hook_json(void);

/* Bracket a jansson parse (core/json_err.h's mk_json_load* do): inside it,
 * once one of jansson's allocations fails, its later ones fail too (its
 * lexer cannot survive an isolated failure, see alloc.c). */
void mk_alloc_json_parse(int on);

/* Test hook: the `n`th allocation from now (0 = the next one) and every one
 * after it fail, until mk_alloc_fail_after(-1). */
void mk_alloc_fail_after(long n);
/* Test hook: only the `n`th allocation from now fails; the ones after it
 * succeed (until mk_alloc_fail_after(-1)). A caller that ignores one
 * failure and goes on shows up here as wrong output, where with every
 * later allocation failing too it would have been masked by the next one. */
void mk_alloc_fail_once(long n);
/* Allocations attempted since the last mk_alloc_fail_after. */
long mk_alloc_count(void);

#endif
