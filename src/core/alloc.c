/* The allocator hook (alloc.h): malloc and friends behind a countdown that
 * tests arm to fail the Nth allocation. */
#include "core/alloc.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static long g_fail_at = -1; /* allocations left before failing; -1: never */
static long g_count;
static int g_once; /* only allocation g_fail_at fails, not those after it */

void mk_alloc_fail_after(long n) {
    __atomic_store_n(&g_count, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&g_once, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&g_fail_at, n, __ATOMIC_RELAXED);
}

void mk_alloc_fail_once(long n) {
    mk_alloc_fail_after(-1);
    __atomic_store_n(&g_once, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&g_fail_at, n, __ATOMIC_RELAXED);
}

long mk_alloc_count(void) { return __atomic_load_n(&g_count, __ATOMIC_RELAXED); }

static _Thread_local unsigned long t_failures;

unsigned long mk_alloc_failures(void) { return t_failures; }

/* true when this allocation must fail */
static int fail_now(void) {
    if (__atomic_load_n(&g_fail_at, __ATOMIC_RELAXED) < 0)
        return 0;
    long k = __atomic_fetch_add(&g_count, 1, __ATOMIC_RELAXED),
         at = __atomic_load_n(&g_fail_at, __ATOMIC_RELAXED);
    return __atomic_load_n(&g_once, __ATOMIC_RELAXED) ? k == at : k >= at;
}

static _Thread_local uint64_t t_bytes;

uint64_t mk_alloc_bytes(void) { return t_bytes; }

/* the result of an allocation of n bytes, counting failures and bytes */
static void *counted(void *p, size_t n) {
    if (!p)
        t_failures++;
    else
        t_bytes += n;
    return p;
}

void *mk_malloc(size_t n) { return counted(fail_now() ? NULL : malloc(n), n); }
void *mk_calloc(size_t n, size_t size) {
    return counted(fail_now() ? NULL : calloc(n, size), n * size); /* calloc refuses overflow */
}
void *mk_realloc(void *p, size_t n) { return counted(fail_now() ? NULL : realloc(p, n), n); }
void *mk_aligned_alloc(size_t align, size_t n) {
    return counted(fail_now() ? NULL : aligned_alloc(align, n), n);
}
char *mk_strdup(const char *s) { return counted(fail_now() ? NULL : strdup(s), strlen(s) + 1); }
char *mk_strndup(const char *s, size_t n) {
    char *d = fail_now() ? NULL : strndup(s, n);
    return counted(d, d ? strlen(d) + 1 : 0);
}

/* jansson 2.14's lexer ignores a failed allocation while it saves a token
 * (akheron/jansson#362): the allocations after it, if they succeed, work
 * on a desynchronised buffer and write past it. So within a parse, once
 * one of jansson's allocations has failed, all of its later ones fail too
 * and the parse ends in an error, as it would if memory stayed short. */
static _Thread_local int t_json_parse; /* 1: in a parse; 2: and an allocation failed */

void mk_alloc_json_parse(int on) {
    t_json_parse = on ? 1 : 0;
}

static void *json_malloc(size_t n) {
    if (t_json_parse == 2) {
        t_failures++;
        return NULL;
    }
    void *p = mk_malloc(n);
    if (!p && t_json_parse)
        t_json_parse = 2;
    return p;
}

static void hook_json(void) {
    json_set_alloc_funcs(json_malloc, free);
}

void mk_alloc_hook_json(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, hook_json);
}
