/* The allocator hook (alloc.h): malloc and friends behind a countdown that
 * tests arm to fail the Nth allocation. */
#include "core/alloc.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static long g_fail_at = -1; /* allocations left before failing; -1: never */
static long g_count;

void mk_alloc_fail_after(long n) {
    __atomic_store_n(&g_count, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&g_fail_at, n, __ATOMIC_RELAXED);
}

long mk_alloc_count(void) { return __atomic_load_n(&g_count, __ATOMIC_RELAXED); }

static _Thread_local unsigned long t_failures;

unsigned long mk_alloc_failures(void) { return t_failures; }

/* true when this allocation must fail */
static int fail_now(void) {
    if (__atomic_load_n(&g_fail_at, __ATOMIC_RELAXED) < 0)
        return 0;
    long k = __atomic_fetch_add(&g_count, 1, __ATOMIC_RELAXED);
    return k >= __atomic_load_n(&g_fail_at, __ATOMIC_RELAXED);
}

/* the result of an allocation, counting failures */
static void *counted(void *p) {
    if (!p)
        t_failures++;
    return p;
}

void *mk_malloc(size_t n) { return counted(fail_now() ? NULL : malloc(n)); }
void *mk_calloc(size_t n, size_t size) { return counted(fail_now() ? NULL : calloc(n, size)); }
void *mk_realloc(void *p, size_t n) { return counted(fail_now() ? NULL : realloc(p, n)); }
void *mk_aligned_alloc(size_t align, size_t n) {
    return counted(fail_now() ? NULL : aligned_alloc(align, n));
}
char *mk_strdup(const char *s) { return counted(fail_now() ? NULL : strdup(s)); }
char *mk_strndup(const char *s, size_t n) { return counted(fail_now() ? NULL : strndup(s, n)); }

static void hook_json(void) { json_set_alloc_funcs(mk_malloc, free); }

void mk_alloc_hook_json(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, hook_json);
}
