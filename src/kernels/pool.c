/* Persistent thread pool for the kernels (kernels.h, mk_pool_*).
 *
 * One job at a time: the caller publishes (fn, ctx, n, chunk), bumps a
 * generation counter and then works on the job itself; workers claim chunks
 * from a shared atomic cursor until the range is exhausted, and the last one
 * to finish wakes the caller. Decode calls mk_pool_for thousands of times per
 * token with a few microseconds of work each, so workers spin on the
 * generation counter for a short while before sleeping on a condition
 * variable, and the caller spins before sleeping on completion.
 *
 * A call made from inside a job (nested) or while another thread's job is
 * running runs inline on its own thread: simpler and deadlock-free. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "moekit/kernels.h"

/* Spin iterations before sleeping (each a cpu "pause", ~10-140 cycles). */
#define MK_POOL_SPIN 20000

struct mk_pool {
    int nthreads; /* workers + the caller */
    pthread_t *workers;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    atomic_flag busy;       /* a job is being run (guards against a second caller) */
    atomic_uint gen;        /* job generation; bumped to start a job */
    atomic_int stop;        /* set by mk_pool_free */
    atomic_int_fast64_t next; /* next unclaimed index of the current job */
    atomic_int pending;     /* workers not yet done with the current job */
    /* current job, written by the caller before bumping gen */
    void (*fn)(void *ctx, int64_t b, int64_t e);
    void *ctx;
    int64_t n, chunk;
};

/* The pool whose job this thread is running (to run nested calls inline). */
static _Thread_local const mk_pool *tl_in_pool;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void run_chunks(mk_pool *p) {
    const int64_t n = p->n, chunk = p->chunk;
    for (;;) {
        int64_t b = atomic_fetch_add_explicit(&p->next, chunk, memory_order_relaxed);
        if (b >= n)
            break;
        p->fn(p->ctx, b, b + chunk < n ? b + chunk : n);
    }
}

static void *worker_main(void *arg) {
    mk_pool *p = arg;
    unsigned seen = 0; /* gen at creation; a job may be posted before we get here */
    tl_in_pool = p;
    for (;;) {
        int spin = 0;
        while (atomic_load_explicit(&p->gen, memory_order_acquire) == seen && spin < MK_POOL_SPIN) {
            cpu_relax();
            spin++;
        }
        if (atomic_load_explicit(&p->gen, memory_order_acquire) == seen) {
            pthread_mutex_lock(&p->mu);
            while (atomic_load_explicit(&p->gen, memory_order_acquire) == seen)
                pthread_cond_wait(&p->cv_work, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        seen = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (atomic_load(&p->stop))
            return NULL;
        run_chunks(p);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->cv_done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

static int cpu_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Wake all workers with the stop flag and join the first `n` of them. */
static void stop_workers(mk_pool *p, int n) {
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < n; i++)
        pthread_join(p->workers[i], NULL);
}

mk_status mk_pool_create(int nthreads, mk_pool **out) {
    *out = NULL;
    if (nthreads <= 0)
        nthreads = cpu_count();
    mk_pool *p = calloc(1, sizeof *p);
    if (!p)
        return mk_err(MK_E_NOMEM, "thread pool: out of memory");
    p->nthreads = nthreads;
    p->workers = calloc((size_t)nthreads, sizeof *p->workers);
    if (!p->workers) {
        free(p);
        return mk_err(MK_E_NOMEM, "thread pool: out of memory");
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_work, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    atomic_flag_clear(&p->busy);
    atomic_init(&p->gen, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->next, 0);
    atomic_init(&p->pending, 0);
    for (int i = 0; i < nthreads - 1; i++) {
        int rc = pthread_create(&p->workers[i], NULL, worker_main, p);
        if (rc != 0) {
            stop_workers(p, i);
            p->nthreads = 1;
            mk_pool_free(p);
            return mk_err(MK_E_NOMEM, "thread pool: cannot start thread %d of %d (error %d)",
                          i + 1, nthreads, rc);
        }
    }
    *out = p;
    return MK_OK;
}

void mk_pool_free(mk_pool *p) {
    if (!p)
        return;
    if (p->nthreads > 1)
        stop_workers(p, p->nthreads - 1);
    pthread_cond_destroy(&p->cv_done);
    pthread_cond_destroy(&p->cv_work);
    pthread_mutex_destroy(&p->mu);
    free(p->workers);
    free(p);
}

int mk_pool_size(const mk_pool *p) {
    return p ? p->nthreads : 1;
}

void mk_pool_for(mk_pool *p, int64_t n, int64_t grain,
                 void (*fn)(void *ctx, int64_t b, int64_t e), void *ctx) {
    if (n <= 0)
        return;
    if (grain < 1)
        grain = 1;
    if (!p || p->nthreads == 1 || n <= grain || tl_in_pool == p ||
        atomic_flag_test_and_set_explicit(&p->busy, memory_order_acquire)) {
        fn(ctx, 0, n);
        return;
    }
    /* About 4 chunks per thread for balance, never below grain. */
    int64_t chunk = (n + 4 * (int64_t)p->nthreads - 1) / (4 * (int64_t)p->nthreads);
    if (chunk < grain)
        chunk = grain;
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->chunk = chunk;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->pending, p->nthreads - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);

    const mk_pool *outer = tl_in_pool;
    tl_in_pool = p;
    run_chunks(p);
    tl_in_pool = outer;

    for (int spin = 0; atomic_load_explicit(&p->pending, memory_order_acquire) > 0; spin++) {
        if (spin < MK_POOL_SPIN) {
            cpu_relax();
            continue;
        }
        pthread_mutex_lock(&p->mu);
        while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0)
            pthread_cond_wait(&p->cv_done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
    atomic_flag_clear_explicit(&p->busy, memory_order_release);
}
