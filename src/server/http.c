/* The HTTP layer on libmicrohttpd, and the server's lifecycle.
 *
 * One thread per connection (MHD_USE_THREAD_PER_CONNECTION): a connection
 * waiting for its job or streaming it blocks only itself, and while it
 * waits it polls its socket, so a client that disconnects cancels its
 * generation within ~100 ms (the slot is freed at the scheduler's next
 * step). Bodies are collected up to the limit (413 beyond), the API key is
 * compared in constant time (401), and routing answers unknown paths with
 * 404 and wrong methods with 405, always as JSON; the web page's files
 * (webui.c) come first and need no key. Until mk_server_ready,
 * /health says 503 {"status":"loading"} and everything else 503. */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "server/srv_impl.h"

#define DEFAULT_MAX_BODY (4u << 20)

typedef struct conn {
    char *body;
    size_t len, cap;
    bool too_big;
    int fd;
} conn;

typedef struct http_stream {
    srv_stream *st;
    int fd;
} http_stream;

/* Whether the client is still connected: hang-up or error on its socket. */
static bool fd_alive(void *ctx) {
    int fd = *(int *)ctx;
    if (fd < 0)
        return true;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) <= 0)
        return true;
    return !(p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

static bool key_ok(const char *want, const char *got) {
    size_t wl = strlen(want), gl = got ? strlen(got) : 0;
    unsigned char d = wl != gl;
    for (size_t i = 0; i < wl; i++) /* time depends on the key's length only */
        d |= (unsigned char)want[i] ^ (unsigned char)(i < gl ? got[i] : 0);
    return d == 0;
}

static enum MHD_Result send_reply(mk_server *s, struct MHD_Connection *c, srv_reply *r) {
    srv_metrics_request(&s->metrics, r->code);
    struct MHD_Response *resp =
        r->body ? MHD_create_response_from_buffer(r->len, r->body, MHD_RESPMEM_MUST_FREE)
                : MHD_create_response_from_buffer(0, (char *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(r->body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->ctype ? r->ctype : "application/json");
    if (r->code == 401)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->code, resp);
    MHD_destroy_response(resp);
    return ret;
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    http_stream *hs = cls;
    long n = srv_stream_read(hs->st, buf, max, fd_alive, &hs->fd);
    if (n > 0)
        return (ssize_t)n;
    return n == 0 ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void stream_free(void *cls) {
    http_stream *hs = cls;
    srv_stream_free(hs->st);
    free(hs);
}

static enum MHD_Result send_stream(mk_server *s, struct MHD_Connection *c, srv_reply *r, int fd) {
    srv_metrics_request(&s->metrics, 200);
    http_stream *hs = mk_calloc(1, sizeof *hs);
    if (!hs) {
        srv_stream_free(r->stream);
        return MHD_NO;
    }
    hs->st = r->stream;
    hs->fd = fd;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_reader, hs, stream_free);
    if (!resp) {
        stream_free(hs);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}

static bool path_is(const char *url, const char *p) {
    return !strcmp(url, p) || (!strncmp(url, "/v1", 3) && !strcmp(url + 3, p));
}

static enum MHD_Result route(mk_server *s, struct MHD_Connection *c, conn *cn, const char *url,
                             const char *method) {
    srv_reply r = {0};
    bool get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
    bool ready = __atomic_load_n(&s->ready, __ATOMIC_ACQUIRE);
    if (!strcmp(url, "/health")) {
        const char *b = ready ? "{\"status\":\"ok\"}" : "{\"status\":\"loading\"}";
        r.code = get ? (ready ? 200 : 503) : 405;
        if (!get) {
            srv_error(&r, 405, "invalid_request_error", NULL, "%s /health: use GET", method);
            return send_reply(s, c, &r);
        }
        r.body = mk_malloc(strlen(b) + 1);
        if (r.body) {
            memcpy(r.body, b, strlen(b) + 1);
            r.len = strlen(b);
        }
        return send_reply(s, c, &r);
    }
    /* the web page (webui.c): no key needed, it holds none and asks for it */
    int web_ret;
    if (!s->o.no_webui && srv_webui_serve(s, c, url, method, &web_ret))
        return (enum MHD_Result)web_ret;
    if (s->api_key) {
        const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        const char *got = h && !strncmp(h, "Bearer ", 7) ? h + 7 : NULL;
        if (!h) /* Anthropic's clients send the key as x-api-key */
            got = h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-api-key");
        if (!key_ok(s->api_key, got)) {
            srv_error(&r, 401, "authentication_error", NULL,
                      h ? "invalid API key" : "missing API key: send \"Authorization: Bearer KEY\"");
            return send_reply(s, c, &r);
        }
    }
    static const struct {
        const char *path;
        int kind; /* srv_kind for POST, -1 models, -2 metrics, -3 stats */
    } routes[] = {{"/chat/completions", SRV_CHAT}, {"/completions", SRV_COMPLETION},
                  {"/tokenize", SRV_TOKENIZE},     {"/detokenize", SRV_DETOKENIZE},
                  {"/models", -1},                 {"/metrics", -2},
                  {"/messages", SRV_MESSAGES},     {"/messages/count_tokens", SRV_COUNT_TOKENS},
                  {"/responses", SRV_RESPONSES},   {"/stats", -3}};
    for (size_t i = 0; i < sizeof routes / sizeof *routes; i++) {
        if (!path_is(url, routes[i].path))
            continue;
        bool want_post = routes[i].kind >= 0;
        if (want_post ? !post : !get) {
            srv_error(&r, 405, "invalid_request_error", NULL, "%s %s: use %s", method, url,
                      want_post ? "POST" : "GET");
            return send_reply(s, c, &r);
        }
        if (cn->too_big) {
            srv_error(&r, 413, "invalid_request_error", NULL,
                      "the request body is larger than the limit of %zu bytes", s->o.max_body);
            return send_reply(s, c, &r);
        }
        if (!ready) {
            srv_error(&r, 503, "server_error", NULL, "the model is loading: retry when /health says ok");
            return send_reply(s, c, &r);
        }
        if (routes[i].kind == -1)
            srv_handle_models(s, &r);
        else if (routes[i].kind == -2)
            srv_handle_metrics(s, &r);
        else if (routes[i].kind == -3)
            srv_handle_stats(s, &r);
        else
            srv_handle_post(s, (srv_kind)routes[i].kind, cn->body ? cn->body : "", cn->len, &r,
                            fd_alive, &cn->fd);
        return r.stream ? send_stream(s, c, &r, cn->fd) : send_reply(s, c, &r);
    }
    srv_error(&r, 404, "invalid_request_error", NULL, "no endpoint %s %.200s", method, url);
    return send_reply(s, c, &r);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *data_size, void **con_cls) {
    (void)version;
    mk_server *s = cls;
    conn *cn = *con_cls;
    if (!cn) { /* headers arrived */
        cn = mk_calloc(1, sizeof *cn);
        if (!cn)
            return MHD_NO;
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        cn->fd = ci ? ci->connect_fd : -1;
        *con_cls = cn;
        pthread_mutex_lock(&s->mu);
        s->inflight++;
        pthread_mutex_unlock(&s->mu);
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > s->o.max_body)
            cn->too_big = true;
        return MHD_YES;
    }
    if (*data_size) { /* a piece of the body */
        if (!cn->too_big && cn->len + *data_size > s->o.max_body)
            cn->too_big = true;
        if (!cn->too_big) {
            if (cn->len + *data_size + 1 > cn->cap) {
                size_t nc = cn->cap ? cn->cap : 4096;
                while (nc < cn->len + *data_size + 1)
                    nc *= 2;
                char *nb = mk_realloc(cn->body, nc);
                if (!nb)
                    return MHD_NO;
                cn->body = nb;
                cn->cap = nc;
            }
            memcpy(cn->body + cn->len, data, *data_size);
            cn->len += *data_size;
            cn->body[cn->len] = 0;
        }
        *data_size = 0;
        return MHD_YES;
    }
    return route(s, c, cn, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)c, (void)toe;
    mk_server *s = cls;
    conn *cn = *con_cls;
    if (cn) {
        free(cn->body);
        free(cn);
        pthread_mutex_lock(&s->mu);
        s->inflight--;
        pthread_cond_broadcast(&s->idle_cv);
        pthread_mutex_unlock(&s->mu);
    }
    *con_cls = NULL;
}

/* ---- lifecycle --------------------------------------------------------------------- */

/* Wait on idle_cv (server mutex held) until done(s) or `end` (monotonic). */
static void wait_until(mk_server *s, bool (*done)(const mk_server *), double end) {
    while (!done(s) && srv_now() < end) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->idle_cv, &s->mu, &ts);
    }
}

static bool no_jobs(const mk_server *s) { return !s->busy && !s->qlen; }
static bool no_requests(const mk_server *s) { return !s->inflight; }

static char *dupstr(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = mk_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

mk_status mk_server_start(const mk_server_opts *o, mk_server **out) {
    *out = NULL;
    if (!o->alias || !*o->alias)
        return mk_err(MK_E_ARG, "server: a model alias is required");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
    const char *host = o->host ? o->host : "127.0.0.1";
    if (o->port < 0 || o->port > 65535)
        return mk_err(MK_E_ARG, "--port: expected 0 to 65535, found %d", o->port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1)
        return mk_err(MK_E_ARG, "--host: expected a numeric IPv4 address such as 127.0.0.1, found '%s'",
                      host);
    mk_server *s = mk_calloc(1, sizeof *s);
    if (!s)
        return mk_err(MK_E_NOMEM, "no memory for a server");
    s->o = *o;
    if (!s->o.max_body)
        s->o.max_body = DEFAULT_MAX_BODY;
    if (s->o.prefill_step <= 0)
        s->o.prefill_step = 512;
    s->alias = dupstr(o->alias);
    s->api_key = o->api_key ? dupstr(o->api_key) : NULL;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->sched_cv, NULL);
    pthread_cond_init(&s->idle_cv, NULL);
    srv_metrics_init(&s->metrics);
    if (!s->alias || (o->api_key && !s->api_key)) {
        mk_server_free(s);
        return mk_err(MK_E_NOMEM, "no memory for the server's settings");
    }
    s->daemon = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                                     MHD_USE_ITC,
                                 (uint16_t)o->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR,
                                 (struct sockaddr *)&addr, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)256,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)600, MHD_OPTION_END);
    if (!s->daemon) {
        mk_server_free(s);
        return mk_err(MK_E_IO, "cannot listen on %s:%d (in use, or not an address of this machine)",
                      host, o->port);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : o->port;
    *out = s;
    return MK_OK;
}

int mk_server_port(const mk_server *s) { return s->port; }

mk_status mk_server_ready(mk_server *s, const mk_server_model *m) {
    if (!m->model || !m->tok || !m->engines || m->n_engines <= 0)
        return mk_err(MK_E_ARG, "server: a model, a tokenizer and at least one engine are needed");
    s->m = *m;
    s->ctx = mk_engine_max_ctx(m->engines[0]);
    for (int i = 1; i < m->n_engines; i++)
        if (mk_engine_max_ctx(m->engines[i]) < s->ctx)
            s->ctx = mk_engine_max_ctx(m->engines[i]);
    MK_TRY(mk_gen_stopset_model(&s->stopset, m->model, m->tok));
    s->queue_cap = s->o.queue > 0 ? s->o.queue : 4 * m->n_engines;
    s->queue = mk_calloc((size_t)s->queue_cap, sizeof *s->queue);
    if (!s->queue)
        return mk_err(MK_E_NOMEM, "no memory for a queue of %d requests", s->queue_cap);
    /* known now, not at the scheduler's first step: /metrics and /v1/stats
     * (the web page) say the experts stream before the first request */
    pthread_mutex_lock(&s->metrics.mu);
    s->metrics.streaming = m->store != NULL;
    pthread_mutex_unlock(&s->metrics.mu);
    MK_TRY(srv_sched_start(s));
    __atomic_store_n(&s->ready, 1, __ATOMIC_RELEASE);
    return MK_OK;
}

void mk_server_shutdown(mk_server *s, double grace_s) {
    if (!s || !s->daemon)
        return;
    MHD_socket ls = MHD_quiesce_daemon(s->daemon); /* no new connections */
    if (ls != MHD_INVALID_SOCKET)
        close(ls);
    pthread_mutex_lock(&s->mu);
    s->draining = 1;
    wait_until(s, no_jobs, srv_now() + grace_s);
    pthread_mutex_unlock(&s->mu);
    srv_sched_stop(s); /* cancels what is left; connections see their jobs end */
    /* let the connections send what their jobs ended with (an error event and
     * [DONE], a 503) before the sockets close; a client that does not read
     * gets 2 s */
    pthread_mutex_lock(&s->mu);
    wait_until(s, no_requests, srv_now() + 2.0);
    pthread_mutex_unlock(&s->mu);
    MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
}

void mk_server_free(mk_server *s) {
    if (!s)
        return;
    mk_server_shutdown(s, 0);
    srv_sched_stop(s);
    mk_grammar_vocab_free(s->gvoc);
    free(s->queue);
    free(s->alias);
    free(s->api_key);
    srv_metrics_destroy(&s->metrics);
    pthread_cond_destroy(&s->idle_cv);
    pthread_cond_destroy(&s->sched_cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
