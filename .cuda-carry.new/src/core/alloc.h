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

/* Route jansson's allocations through this hook (once per process; the
 * JSON readers call it before parsing). */
void mk_alloc_hook_json(void);

/* Test hook: the `n`th allocation from now (0 = the next one) and every one
 * after it fail, until mk_alloc_fail_after(-1). */
void mk_alloc_fail_after(long n);
/* Allocations attempted since the last mk_alloc_fail_after. */
long mk_alloc_count(void);

#endif
