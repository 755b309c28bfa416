/* The server's counters and latency histograms, rendered as Prometheus
 * text for GET /metrics: requests by outcome, prompt and generated tokens,
 * prompt-cache hits, time to first token and per-token latency, slots busy
 * and queued, and the expert cache's hit rate when experts stream. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "server/srv_impl.h"

/* Upper bounds of the histogram buckets, seconds. */
static const double hist_le[SRV_HIST_N] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                           0.1,   0.25,   0.5,   1,    2.5,   10};

void srv_metrics_init(srv_metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
}

void srv_metrics_destroy(srv_metrics *m) { pthread_mutex_destroy(&m->mu); }

void srv_metrics_request(srv_metrics *m, int code) {
    int i = code < 300 ? 0 : code == 400 ? 1 : code == 401 || code == 403 ? 2
          : code == 404 || code == 405 ? 3 : code == 413 || code == 429 ? 4 : 5;
    pthread_mutex_lock(&m->mu);
    m->req_by_code[i]++;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_observe(srv_hist *h, srv_metrics *m, double s) {
    pthread_mutex_lock(&m->mu);
    int b = 0;
    while (b < SRV_HIST_N && s > hist_le[b])
        b++;
    h->bucket[b]++;
    h->sum += s;
    h->count++;
    pthread_mutex_unlock(&m->mu);
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool nomem;
} sbuf;

static void put(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(sbuf *b, const char *fmt, ...) {
    if (b->nomem)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->nomem = true;
            return;
        }
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t nc = (b->cap ? b->cap * 2 : 4096) + (size_t)n;
        char *np = mk_realloc(b->p, nc);
        if (!np) {
            b->nomem = true;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
}

static void hist(sbuf *b, const char *name, const char *help, const srv_hist *h) {
    put(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < SRV_HIST_N; i++) {
        cum += h->bucket[i];
        put(b, "%s_bucket{le=\"%g\"} %llu\n", name, hist_le[i], (unsigned long long)cum);
    }
    cum += h->bucket[SRV_HIST_N];
    put(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, (unsigned long long)cum,
        name, h->sum, name, (unsigned long long)h->count);
}

static void counter(sbuf *b, const char *name, const char *help, uint64_t v) {
    put(b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name, (unsigned long long)v);
}

static void gauge(sbuf *b, const char *name, const char *help, double v) {
    put(b, "# HELP %s %s\n# TYPE %s gauge\n%s %g\n", name, help, name, name, v);
}

char *srv_metrics_render(srv_metrics *m, int slots, int busy, int queued) {
    static const char *codes[6] = {"2xx", "400", "401", "404", "429_413", "5xx"};
    sbuf b = {0};
    pthread_mutex_lock(&m->mu);
    put(&b, "# HELP moekit_requests_total HTTP requests answered, by status\n"
            "# TYPE moekit_requests_total counter\n");
    for (int i = 0; i < 6; i++)
        put(&b, "moekit_requests_total{code=\"%s\"} %llu\n", codes[i],
            (unsigned long long)m->req_by_code[i]);
    counter(&b, "moekit_prompt_tokens_total", "prompt tokens of finished requests", m->prompt_tokens);
    counter(&b, "moekit_generated_tokens_total", "tokens generated", m->gen_tokens);
    counter(&b, "moekit_prompt_cache_hits_total", "requests that reused a slot's cached prefix",
            m->cache_hits);
    counter(&b, "moekit_prompt_cache_tokens_total", "prompt tokens taken from the prompt cache",
            m->cache_tokens);
    counter(&b, "moekit_prompt_tokens_processed_total", "prompt tokens of finished requests the "
            "engines read (prefilled); the others came from the prompt cache", m->prompt_fed);
    counter(&b, "moekit_requests_cancelled_total", "generations cancelled (client gone or shutdown)",
            m->cancelled);
    counter(&b, "moekit_decode_steps_total", "decode forwards (one per scheduler step with decoding "
            "sequences: a batch, or one sequence)", m->dec_steps);
    counter(&b, "moekit_decode_step_sequences_total", "sequences in those forwards (divided by the "
            "steps: the mean batch)", m->dec_seqs);
    counter(&b, "moekit_prompt_cache_snapshots_saved_total", "recurrent-state snapshots taken "
            "(hybrid models: at the end of each prompt and every few thousand tokens)", m->snap_saves);
    counter(&b, "moekit_prompt_cache_snapshot_restores_total", "requests that resumed a slot from a "
            "recurrent-state snapshot instead of prefilling its history", m->snap_restores);
    counter(&b, "moekit_prompt_cache_snapshot_evictions_total", "snapshots evicted (least recently "
            "used) to keep all of them within their memory bound", m->snap_evictions);
    put(&b, "# HELP moekit_prompt_cache_snapshot_bytes bytes the recurrent-state snapshots hold now\n"
            "# TYPE moekit_prompt_cache_snapshot_bytes gauge\nmoekit_prompt_cache_snapshot_bytes %llu\n",
        (unsigned long long)m->snap_bytes);
    hist(&b, "moekit_time_to_first_token_seconds", "from request to its first token", &m->ttft);
    hist(&b, "moekit_time_per_output_token_seconds", "between consecutive tokens of a request", &m->itl);
    if (m->streaming) {
        gauge(&b, "moekit_expert_cache_hit_rate", "streamed experts found in the cache",
              m->ex_uses ? (double)m->ex_hits / (double)m->ex_uses : 0.0);
        counter(&b, "moekit_expert_bytes_read_total", "expert bytes read from disk", m->ex_bytes);
    }
    pthread_mutex_unlock(&m->mu);
    gauge(&b, "moekit_slots_total", "slots (sequences served at once)", slots);
    gauge(&b, "moekit_slots_busy", "slots generating now", busy);
    gauge(&b, "moekit_queue_length", "requests waiting for a slot", queued);
    if (b.nomem) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
