/* Ordered producer/consumer pipeline: worker threads produce items ahead
 * into a ring of slots while the calling thread consumes them strictly in
 * item order (the safetensors writer takes bytes in plan order).
 *
 * Item i lives in slot i % nslots. A worker that claims item i waits until
 * item i - nslots has been consumed, so at most nslots items are in flight
 * and memory is nslots * slot_bytes + threads * scratch_bytes, fixed up
 * front. Workers claim items in increasing order and each waits only on a
 * smaller item, so the smallest unconsumed item is always being produced:
 * no deadlock. Items the consumer handles alone (copy_file_range of
 * untouched tensors) are skipped by workers; the consumer runs them in
 * turn, so reading and converting the next items overlaps the copy. The
 * first error stops everyone; its message (thread-local in status.c) is
 * carried back to the caller's thread. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "convert/conv_impl.h"

typedef struct pipe {
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_main;
    const cv_pipe_ops *ops;
    void *ctx;
    size_t n, nslots, slot_bytes, scratch_bytes;
    size_t next;     /* next item a worker may claim */
    size_t consumed; /* items 0..consumed-1 are done */
    size_t *slot_item;
    size_t *slot_len;
    unsigned char *slots;
    bool abort;
    mk_err_slot err; /* the first worker failure */
} pipe_t;

typedef struct worker {
    pipe_t *p;
    unsigned char *scratch;
    pthread_t th;
    bool started;
} worker;

static void fail(pipe_t *p, mk_status s) {
    if (!p->abort)
        mk_err_slot_set(&p->err, s);
    p->abort = true;
    pthread_cond_broadcast(&p->cv_work);
    pthread_cond_broadcast(&p->cv_main);
}

static void *work(void *arg) {
    worker *w = arg;
    pipe_t *p = w->p;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->abort && p->next < p->n && !p->ops->parallel(p->ctx, p->next))
            p->next++;
        if (p->abort || p->next >= p->n)
            break;
        size_t i = p->next++;
        while (!p->abort && i >= p->consumed + p->nslots)
            pthread_cond_wait(&p->cv_work, &p->mu);
        if (p->abort)
            break;
        size_t k = i % p->nslots, len = 0;
        pthread_mutex_unlock(&p->mu);
        mk_status s = p->ops->produce(p->ctx, i, w->scratch, p->slots + k * p->slot_bytes, &len);
        pthread_mutex_lock(&p->mu);
        if (s != MK_OK) {
            fail(p, s);
            break;
        }
        p->slot_item[k] = i;
        p->slot_len[k] = len;
        pthread_cond_broadcast(&p->cv_main);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static mk_status consume_all(pipe_t *p) {
    for (size_t i = 0; i < p->n; i++) {
        mk_status s;
        if (!p->ops->parallel(p->ctx, i)) {
            pthread_mutex_lock(&p->mu);
            bool ab = p->abort;
            pthread_mutex_unlock(&p->mu);
            if (ab)
                return MK_OK; /* a worker failed: its error is reported */
            s = p->ops->consume(p->ctx, i, NULL, 0);
        } else {
            size_t k = i % p->nslots;
            pthread_mutex_lock(&p->mu);
            while (!p->abort && p->slot_item[k] != i)
                pthread_cond_wait(&p->cv_main, &p->mu);
            bool ab = p->abort;
            pthread_mutex_unlock(&p->mu);
            if (ab)
                return MK_OK;
            s = p->ops->consume(p->ctx, i, p->slots + k * p->slot_bytes, p->slot_len[k]);
        }
        pthread_mutex_lock(&p->mu);
        if (s != MK_OK) {
            fail(p, s);
            pthread_mutex_unlock(&p->mu);
            return s;
        }
        p->slot_item[i % p->nslots] = SIZE_MAX;
        p->consumed = i + 1;
        pthread_cond_broadcast(&p->cv_work);
        pthread_mutex_unlock(&p->mu);
    }
    return MK_OK;
}

mk_status cv_pipe_run(int threads, size_t nslots, size_t slot_bytes, size_t scratch_bytes, size_t n,
                      const cv_pipe_ops *ops, void *ctx) {
    if (n == 0)
        return MK_OK;
    if (threads < 1)
        threads = 1;
    if (nslots < 1)
        nslots = 1;
    pipe_t p;
    memset(&p, 0, sizeof p);
    p.ops = ops;
    p.ctx = ctx;
    p.n = n;
    p.nslots = nslots;
    p.slot_bytes = (slot_bytes + 63) & ~(size_t)63;
    p.scratch_bytes = (scratch_bytes + 63) & ~(size_t)63;
    p.slot_item = mk_malloc(nslots * sizeof *p.slot_item);
    p.slot_len = mk_calloc(nslots, sizeof *p.slot_len);
    p.slots = mk_malloc(nslots * p.slot_bytes > 0 ? nslots * p.slot_bytes : 1);
    worker *ws = mk_calloc((size_t)threads, sizeof *ws);
    mk_status s = (p.slot_item && p.slot_len && p.slots && ws)
                      ? MK_OK
                      : mk_err(MK_E_NOMEM, "out of memory for %zu pipeline slots of %zu bytes", nslots, slot_bytes);
    for (size_t k = 0; p.slot_item && k < nslots; k++)
        p.slot_item[k] = SIZE_MAX;
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv_work, NULL);
    pthread_cond_init(&p.cv_main, NULL);
    for (int t = 0; s == MK_OK && t < threads; t++) {
        ws[t].p = &p;
        ws[t].scratch = mk_malloc(p.scratch_bytes ? p.scratch_bytes : 1);
        if (!ws[t].scratch)
            s = mk_err(MK_E_NOMEM, "out of memory for a %zu-byte work buffer", scratch_bytes);
        else if (pthread_create(&ws[t].th, NULL, work, &ws[t]) != 0)
            s = mk_err(MK_E_INTERNAL, "cannot start a worker thread");
        else
            ws[t].started = true;
    }
    if (s == MK_OK)
        s = consume_all(&p);
    else {
        pthread_mutex_lock(&p.mu);
        p.abort = true;
        pthread_cond_broadcast(&p.cv_work);
        pthread_mutex_unlock(&p.mu);
    }
    for (int t = 0; ws && t < threads; t++) {
        if (ws[t].started)
            pthread_join(ws[t].th, NULL);
        free(ws[t].scratch);
    }
    if (s == MK_OK && p.abort)
        s = mk_err_slot_raise(&p.err);
    pthread_cond_destroy(&p.cv_main);
    pthread_cond_destroy(&p.cv_work);
    pthread_mutex_destroy(&p.mu);
    free(ws);
    free(p.slots);
    free(p.slot_len);
    free(p.slot_item);
    return s;
}
