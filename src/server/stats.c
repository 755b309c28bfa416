/* GET /v1/stats: the server's state as one JSON document, for the web
 * page's live panel (webui.c) and for scripts that would rather not parse
 * Prometheus text. The same counters as /metrics (metrics.c), plus what a
 * person watching one chat wants: the last finished request's tokens,
 * prompt-cache reuse, time to first token and decode rate, and the
 * process's memory (resident set and the bound in force) as the caller
 * measures it (mk_server_model.rss: the library reads no /proc file).
 * Fields that do not apply are null (experts when they do not stream,
 * last before any request, memory the caller did not give). */
#include <string.h>

#include "core/json_err.h"
#include "server/srv_impl.h"

static json_t *uint_or_null(uint64_t v) { return v ? json_integer((json_int_t)v) : json_null(); }

void srv_handle_stats(mk_server *s, srv_reply *r) {
    pthread_mutex_lock(&s->mu);
    int busy = s->busy, queued = s->qlen;
    pthread_mutex_unlock(&s->mu);
    unsigned long mark = mk_json_mark();
    srv_metrics *m = &s->metrics;
    pthread_mutex_lock(&m->mu);
    srv_metrics c = *m; /* a consistent copy; its mutex is not used */
    pthread_mutex_unlock(&m->mu);
    json_t *o = json_object();
    json_object_set_new(o, "object", json_string("moekit.stats"));
    json_object_set_new(o, "model", json_string(s->alias));
    json_object_set_new(o, "slots", json_pack("{s:i,s:i,s:i}", "total", s->nslots, "busy", busy,
                                              "queued", queued));
    json_object_set_new(o, "tokens", json_pack("{s:I,s:I,s:I,s:I}", "prompt", (json_int_t)c.prompt_tokens,
                                               "prompt_cached", (json_int_t)c.cache_tokens,
                                               "prompt_processed", (json_int_t)c.prompt_fed,
                                               "generated", (json_int_t)c.gen_tokens));
    json_object_set_new(o, "prompt_cache",
                        json_pack("{s:I,s:I,s:I,s:I}", "hits", (json_int_t)c.cache_hits, "tokens",
                                  (json_int_t)c.cache_tokens, "snapshot_restores",
                                  (json_int_t)c.snap_restores, "snapshot_bytes", (json_int_t)c.snap_bytes));
    json_object_set_new(o, "decode", json_pack("{s:I,s:f}", "steps", (json_int_t)c.dec_steps, "mean_batch",
                                               c.dec_steps ? (double)c.dec_seqs / (double)c.dec_steps : 0.0));
    json_t *last = json_null();
    if (c.last.set) {
        last = json_pack("{s:I,s:I,s:I,s:f,s:f}", "prompt_tokens", (json_int_t)c.last.np, "cached_tokens",
                         (json_int_t)c.last.cached, "completion_tokens", (json_int_t)c.last.gen,
                         "time_to_first_token_s", c.last.ttft, "decode_s", c.last.decode_s);
        /* tokens after the first over the time since the first: the decode
         * rate, apart from the prompt's prefill (in time_to_first_token_s) */
        json_object_set_new(last, "decode_tokens_per_s",
                            c.last.gen >= 2 && c.last.decode_s > 0
                                ? json_real((double)(c.last.gen - 1) / c.last.decode_s)
                                : json_null());
    }
    json_object_set_new(o, "last", last);
    json_object_set_new(o, "experts",
                        c.streaming ? json_pack("{s:b,s:f,s:I,s:I,s:I}", "streaming", 1, "hit_rate",
                                                c.ex_uses ? (double)c.ex_hits / (double)c.ex_uses : 0.0,
                                                "uses", (json_int_t)c.ex_uses, "hits", (json_int_t)c.ex_hits,
                                                "bytes_read", (json_int_t)c.ex_bytes)
                                    : json_pack("{s:b}", "streaming", 0));
    json_object_set_new(o, "memory", json_pack("{s:o,s:o}", "rss_bytes",
                                               uint_or_null(s->m.rss ? s->m.rss() : 0), "limit_bytes",
                                               uint_or_null(s->m.mem_limit)));
    char *t = mk_json_dumps_checked(o, JSON_COMPACT | JSON_ENSURE_ASCII, mark);
    json_decref(o);
    if (!t) {
        srv_error(r, 503, "server_error", NULL, "out of memory rendering the stats");
        return;
    }
    r->code = 200;
    r->body = t;
    r->len = strlen(t);
    r->ctype = "application/json";
}
