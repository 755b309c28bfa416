/* Persistent thread pool for the kernels (kernels.h, mk_pool_*).
 *
 * One job at a time: the caller publishes a job (fn, ctx, n, chunk) on its
 * stack, bumps a generation counter and then works on the job itself;
 * workers claim chunks from the job's atomic cursor until the range is
 * exhausted, and whoever completes the last index wakes the caller. Decode
 * calls mk_pool_for thousands of times per token with a few microseconds of
 * work each, so workers spin on the
 * generation counter for a short while before sleeping on a condition
 * variable, and the caller spins before sleeping on completion.
 *
 * A call made from inside a job (nested) or while another thread's job is
 * running runs inline on its own thread: simpler and deadlock-free. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/alloc.h"
#include "moekit/kernels.h"

/* Spin iterations before sleeping (each a cpu "pause", ~10-140 cycles). */
#define MK_POOL_SPIN 20000

/* One mk_pool_for call; lives on the caller's stack. */
typedef struct pool_job {
    void (*fn)(void *ctx, int64_t b, int64_t e);
    void *ctx;
    int64_t n, chunk;
    atomic_int_fast64_t next; /* next unclaimed index */
    atomic_int_fast64_t done; /* indices finished */
} pool_job;

struct mk_pool {
    int nthreads; /* workers + the caller */
    pthread_t *workers;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    atomic_flag busy;        /* a job is running (a second caller runs inline) */
    atomic_uint gen;         /* bumped to announce a job (or stop) */
    atomic_int stop;         /* set by mk_pool_free */
    _Atomic(pool_job *) cur; /* the job being run, NULL between jobs */
    atomic_int inside;       /* workers that may be touching *cur */
};

/* The pool whose job this thread is running (to run nested calls inline). */
static _Thread_local const mk_pool *tl_in_pool;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Claim and run chunks until none are left; wake the caller after the last. */
static void run_chunks(mk_pool *p, pool_job *j, bool is_worker) {
    const int64_t n = j->n, chunk = j->chunk;
    for (;;) {
        int64_t b = atomic_fetch_add_explicit(&j->next, chunk, memory_order_relaxed);
        if (b >= n)
            return;
        int64_t e = b + chunk < n ? b + chunk : n;
        j->fn(j->ctx, b, e);
        int64_t d = atomic_fetch_add_explicit(&j->done, e - b, memory_order_acq_rel) + (e - b);
        if (d == n && is_worker) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->cv_done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

/* Workers announce themselves in `inside` before looking at `cur`, and the
 * caller clears `cur` before waiting for `inside` to drain (both seq_cst),
 * so the caller waits only for workers that actually saw its job, never for
 * one that is asleep or descheduled: on a loaded machine a late worker
 * simply finds nothing left to do. */
static void *worker_main(void *arg) {
    mk_pool *p = arg;
    unsigned seen = 0; /* gen at creation; a job may be posted before we get here */
    tl_in_pool = p;
    for (;;) {
        for (int spin = 0; atomic_load_explicit(&p->gen, memory_order_acquire) == seen && spin < MK_POOL_SPIN;
             spin++)
            cpu_relax();
        if (atomic_load_explicit(&p->gen, memory_order_acquire) == seen) {
            pthread_mutex_lock(&p->mu);
            while (atomic_load_explicit(&p->gen, memory_order_acquire) == seen)
                pthread_cond_wait(&p->cv_work, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        seen = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (atomic_load(&p->stop))
            return NULL;
        atomic_fetch_add(&p->inside, 1);
        pool_job *j = atomic_load(&p->cur);
        if (j)
            run_chunks(p, j, true);
        atomic_fetch_sub(&p->inside, 1);
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
    mk_pool *p = mk_calloc(1, sizeof *p);
    if (!p)
        return mk_err(MK_E_NOMEM, "thread pool: no memory for a pool of %d threads", nthreads);
    p->nthreads = nthreads;
    p->workers = mk_calloc((size_t)nthreads, sizeof *p->workers);
    if (!p->workers) {
        free(p);
        return mk_err(MK_E_NOMEM, "thread pool: no memory for the handles of %d threads", nthreads);
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_work, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    atomic_flag_clear(&p->busy);
    atomic_init(&p->gen, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->cur, NULL);
    atomic_init(&p->inside, 0);
    for (int i = 0; i < nthreads - 1; i++) {
        int rc = pthread_create(&p->workers[i], NULL, worker_main, p);
        if (rc != 0) {
            stop_workers(p, i);
            p->nthreads = 1;
            mk_pool_free(p);
            return mk_err(MK_E_NOMEM, "thread pool: cannot start thread %d of %d (error %d)", i + 1, nthreads,
                          rc);
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

void mk_pool_for(mk_pool *p, int64_t n, int64_t grain, void (*fn)(void *ctx, int64_t b, int64_t e),
                 void *ctx) {
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
    pool_job j = {.fn = fn, .ctx = ctx, .n = n, .chunk = chunk < grain ? grain : chunk};
    atomic_init(&j.next, 0);
    atomic_init(&j.done, 0);
    atomic_store(&p->cur, &j);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);

    const mk_pool *outer = tl_in_pool;
    tl_in_pool = p;
    run_chunks(p, &j, false);
    tl_in_pool = outer;

    /* Wait for chunks other threads are still running. */
    for (int spin = 0; atomic_load_explicit(&j.done, memory_order_acquire) < n; spin++) {
        if (spin < MK_POOL_SPIN) {
            cpu_relax();
            continue;
        }
        pthread_mutex_lock(&p->mu);
        while (atomic_load_explicit(&j.done, memory_order_acquire) < n)
            pthread_cond_wait(&p->cv_done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
    /* Retire the job; wait out workers that picked it up (they find no work). */
    atomic_store(&p->cur, NULL);
    for (int spin = 0; atomic_load(&p->inside) > 0; spin++) {
        if (spin < MK_POOL_SPIN)
            cpu_relax();
        else
            sched_yield(); /* one was descheduled between its two counters */
    }
    atomic_flag_clear_explicit(&p->busy, memory_order_release);
}
