/* moekit serve: an OpenAI-compatible HTTP server over one model
 * (src/server). The port is bound first so /health answers 503 "loading"
 * while the model loads; the model, its tokenizer and one engine per slot
 * are created eagerly, a warm-up forward runs, and only then does the
 * server accept API requests. SIGINT/SIGTERM stop accepting, let running
 * requests finish for --grace seconds, cancel the rest and exit 0. */
#include <getopt.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli_flags.h"
#include "cli_esc.h"
#include "cmd.h"
#include "dist_cli.h"
#include "engine_cli.h"
#include "moekit/chat.h"
#include "moekit/kernels.h"
#include "moekit/server.h"
#include "moekit/tokenizer.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: moekit serve MODEL [options]\n\n"
            "Serve MODEL (a checkpoint directory) over HTTP with the OpenAI API:\n"
            "  GET  /health                 503 {\"status\":\"loading\"} until ready, then 200\n"
            "  GET  /v1/models              the model's id (--alias; \"default_model\" also works)\n"
            "  POST /v1/chat/completions    chat with the model's template; \"stream\": true for SSE\n"
            "  POST /v1/completions         a raw prompt (text or token ids)\n"
            "  POST /v1/messages            Anthropic's Messages API (Claude Code), and\n"
            "       /v1/messages/count_tokens\n"
            "  POST /v1/responses           OpenAI's Responses API (Codex CLI)\n"
            "  POST /tokenize, /detokenize  {\"content\": TEXT} <-> {\"tokens\": [ids]}\n"
            "  GET  /metrics                Prometheus text: requests, tokens, latencies, slots\n"
            "  GET  /v1/stats               the same as JSON, with the last answer and memory\n"
            "  GET  /                       a web page: chat (streamed, reasoning folded) and a\n"
            "                               live panel of /v1/stats; no key needed to load it\n"
            "Sampling fields: temperature (default 1), top_p, top_k, min_p, max_tokens or\n"
            "max_completion_tokens (default: the rest of the context), stop (up to 4),\n"
            "seed, presence_penalty, frequency_penalty, repetition_penalty, ignore_eos;\n"
            "chat_template_kwargs.enable_thinking (qwen3 templates). Log probabilities: chat's\n"
            "logprobs + top_logprobs (0-20), completions' logprobs (0-20), of the model's own\n"
            "distribution (before penalties and temperature). Reasoning comes apart from the\n"
            "answer (reasoning_content; Anthropic thinking blocks) and tool calls are parsed\n"
            "per template family (tool_calls; tool_use blocks); \"tools\" are rendered with the\n"
            "qwen3, qwen3-think, qwen3.5, glm4, minimax-m2 and kimi-k2 templates. Every field,\n"
            "supported or refused: docs/SERVER_API.md.\n\n"
            "network:\n"
            "  --host ADDR          IPv4 address to listen on (default 127.0.0.1: this machine\n"
            "                       only; 0.0.0.0 exposes the server, give it an --api-key)\n"
            "  --port N             TCP port (default 8080; 0 picks a free one, printed)\n"
            "  --alias NAME         the model id clients use (default: MODEL's directory name)\n"
            "  --api-key KEY        require \"Authorization: Bearer KEY\" (all but /health)\n"
            "  --api-key-file F     the key from a file (first line), not visible in ps\n"
            "  --no-webui           no web page at / (404 there)\n"
            "slots:\n"
            "  --parallel N         requests generated at once, each in its own slot with its\n"
            "                       own context (default 1); memory grows by one context each\n"
            "  --queue N            requests that may wait for a slot before 429 (default 4 per\n"
            "                       slot)\n"
            "  --ctx N              context positions per slot (default min(4096,\n"
            "                       max_position_embeddings)); prompt + max_tokens must fit\n"
            "  --grace S            on SIGINT/SIGTERM, seconds running requests may finish\n"
            "                       before they are cancelled (default 10)\n"
            "  --snapshots N        recurrent-state snapshots kept per slot for the prompt cache\n"
            "                       of hybrid models (default 4, 0: none; each one is every\n"
            "                       Gated DeltaNet layer's state)\n"
            "  --snapshot-memory SIZE  bound all slots' snapshots together (e.g. 256M): the least\n"
            "                       recently used one is evicted for a new one (default: --snapshots\n"
            "                       per slot, no other bound). --memory-budget counts the prompt\n"
            "                       cache: these snapshots, each slot's token index and logprobs row\n"
            "  --snapshot-every N   snapshot a long prompt every N tokens too (default 2048; at the\n"
            "                       end of the --prefill-step piece that crosses a multiple of N)\n"
            "  --prefill-step N     prompt tokens prefilled per scheduler step (default 512,\n"
            "                       run's --prefill-chunk): smaller pieces delay the running\n"
            "                       streams less while a long prompt is read\n"
            "engine:\n"
            "  --backend B          where the slots compute: cpu (default) or cuda (GPU 0: one\n"
            "                       backend for every slot; batched decode steps through the\n"
            "                       fused MoE slot, each row as that request alone on the GPU)\n"
            "  --threads N          compute threads shared by all slots (default: all CPUs)\n"
            "  --template NAME      chat template: chatml, qwen3, qwen3-think, qwen3.5, deepseek3,\n"
            "                       deepseek3.2, glm4, glm4.7, minimax-m2, harmony, kimi-k2\n"
            "                       (default: recognised from the checkpoint)\n"
            "  --test-output        TESTS ONLY: a request's \"moekit_test_output\" text is\n"
            "                       generated instead of sampled (exercises the reasoning and\n"
            "                       tool-call parsers end to end with a tiny model)\n"
            "memory:\n"
            "%s"
            "MPI (`mpirun -np N moekit serve MODEL ...`): rank 0 owns HTTP, tokenization,\n"
            "sampling and the prompt cache; the other ranks hold no HTTP and run rank 0's\n"
            "steps on their share, with an engine per slot (--parallel): a batched decode\n"
            "step is one step on every rank (expert mode: one exchange per MoE layer for all\n"
            "its sequences; pipeline: one hand-over per stage), answers equal to one process;\n"
            "no recurrent-state snapshots; SIGTERM or SIGINT (to rank 0 or mpirun) stops the\n"
            "server, then every rank:\n"
            "%s"
            "  -h, --help           this text\n\n"
            "Slots share the model's weights; each holds its own KV cache and recurrent\n"
            "state. Each scheduler step prefills one prompt piece and decodes one token of\n"
            "every generating slot in one batched forward (each routed expert read once for\n"
            "all of them); the batch is invariant, so an answer is the same alone or under\n"
            "load (equal to run with --prefill-chunk = --prefill-step), and a seed reproduces.\n"
            "A new request reuses the free slot whose cached tokens share the longest prefix\n"
            "with its prompt (models with recurrent layers keep the slot's whole history when\n"
            "the prompt extends it, else resume from a snapshot of their recurrent state taken\n"
            "at the end of an earlier prompt, such as the previous turn of a chat).\n\n"
            "Exit status: 0 after a signal, 2 bad input (model, flags), 1 internal failure.\n",
            mk_ecli_mem_help, mk_ecli_dist_help);
}

typedef struct serve_opts {
    const char *model, *host, *alias, *key, *key_file, *tmpl, *backend;
    long long port, parallel, queue, ctx, threads, prefill_step, snapshots, snap_every;
    unsigned long long snap_mem;
    double grace;
    bool test_output, no_webui;
    mk_ecli_mem mm;
    mk_ecli_dist dd; /* under mpirun (tools/dist_cli.h): rank 0 serves, the others follow its steps */
} serve_opts;

static int parse(int argc, char **argv, serve_opts *o) {
    static const struct option opts[] = {
        {"host", required_argument, 0, 'H'},     {"port", required_argument, 0, 'p'},
        {"alias", required_argument, 0, 'a'},    {"api-key", required_argument, 0, 'k'},
        {"api-key-file", required_argument, 0, 'K'}, {"parallel", required_argument, 0, 'n'},
        {"queue", required_argument, 0, 'q'},    {"ctx", required_argument, 0, 'x'},
        {"grace", required_argument, 0, 'g'},    {"threads", required_argument, 0, 'j'},
        {"template", required_argument, 0, 'T'}, {"prefill-step", required_argument, 0, 'P'},
        {"snapshots", required_argument, 0, 'S'}, {"snapshot-memory", required_argument, 0, 'M'},
        {"snapshot-every", required_argument, 0, 'E'}, {"backend", required_argument, 0, 'B'},
        {"test-output", no_argument, 0, 1000},   {"no-webui", no_argument, 0, 1001},
        MK_ECLI_MEM_OPTS,
        MK_ECLI_DIST_OPTS,
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    int ch, rc;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'H': o->host = optarg; break;
        case 'p':
            if ((rc = mk_flag_int("serve", "--port", optarg, 0, 65535, &o->port)) >= 0)
                return rc;
            break;
        case 'a':
            if (!*optarg)
                return mk_cli_usage("serve", "--alias: the model id must not be empty");
            o->alias = optarg;
            break;
        case 'k': o->key = optarg; break;
        case 'K': o->key_file = optarg; break;
        case 'n':
            if ((rc = mk_flag_int("serve", "--parallel", optarg, 1, 256, &o->parallel)) >= 0)
                return rc;
            break;
        case 'q':
            if ((rc = mk_flag_int("serve", "--queue", optarg, 1, 65536, &o->queue)) >= 0)
                return rc;
            break;
        case 'x':
            if ((rc = mk_flag_int("serve", "--ctx", optarg, 2, 1 << 26, &o->ctx)) >= 0)
                return rc;
            break;
        case 'g':
            if ((rc = mk_flag_real("serve", "--grace", optarg, 0, 3600, 0, &o->grace)) >= 0)
                return rc;
            break;
        case 'j':
            if ((rc = mk_flag_int("serve", "--threads", optarg, 1, 1024, &o->threads)) >= 0)
                return rc;
            break;
        case 'T': o->tmpl = optarg; break;
        case 'B':
            if (!mk_ecli_backend_name(optarg))
                return mk_cli_usage("serve", "--backend: expected cpu or cuda, found '%s'", optarg);
            o->backend = optarg;
            break;
        case 1000: o->test_output = true; break;
        case 1001: o->no_webui = true; break;
        case 'P':
            if ((rc = mk_flag_int("serve", "--prefill-step", optarg, 1, 1 << 20, &o->prefill_step)) >= 0)
                return rc;
            break;
        case 'S':
            if ((rc = mk_flag_int("serve", "--snapshots", optarg, 0, 8, &o->snapshots)) >= 0)
                return rc;
            break;
        case 'E':
            if ((rc = mk_flag_int("serve", "--snapshot-every", optarg, 1, 1 << 26, &o->snap_every)) >= 0)
                return rc;
            break;
        case 'M':
            if (!mk_cli_parse_size(optarg, &o->snap_mem) || o->snap_mem == 0)
                return mk_cli_usage("serve", "--snapshot-memory: expected a size such as 256M, got '%s'",
                                    optarg);
            break;
        case 'h': help(stdout); return 0;
        default: {
            bool mine;
            if ((rc = mk_ecli_mem_flag(&o->mm, ch, optarg, &mine)) >= 0)
                return rc;
            if (mine)
                break;
            if ((rc = mk_ecli_dist_flag(&o->dd, ch, optarg, &mine)) >= 0)
                return rc;
            if (mine)
                break;
            return mk_cli_usage("serve", "unknown option or missing value: %s", argv[optind - 1]);
        }
        }
    }
    if (optind != argc - 1)
        return mk_cli_usage("serve", "expected exactly one MODEL argument");
    o->model = argv[optind];
    if (o->key && o->key_file)
        return mk_cli_usage("serve", "give either --api-key or --api-key-file, not both");
    if (o->key && !*o->key)
        return mk_cli_usage("serve", "--api-key: the key must not be empty");
    return -1;
}

/* The key from --api-key-file: its first line, which must not be empty. */
static mk_status read_key(const char *path, char **key) {
    char *buf;
    size_t len;
    MK_TRY(mk_ecli_read_file("--api-key-file", path, &buf, &len));
    size_t n = 0;
    while (n < len && buf[n] != '\n' && buf[n] != '\r')
        n++;
    if (n == 0 || memchr(buf, 0, n)) {
        free(buf);
        return mk_err(MK_E_ARG, "--api-key-file %s: the first line must hold the key", path);
    }
    buf[n] = 0;
    *key = buf;
    return MK_OK;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A SIGINT/SIGTERM that arrived while loading (signals are blocked and
 * collected by sigwait): stop before the next phase. */
static bool stop_pending(void) {
    sigset_t p;
    return sigpending(&p) == 0 && (sigismember(&p, SIGINT) || sigismember(&p, SIGTERM));
}

typedef struct serve_state {
    mk_model *m;
    mk_tok *tok;
    mk_pool *pool;
    mk_backend *be;
    mk_engine **engines;
    int n;
    char *key;
    mk_server *srv;
} serve_state;

static mk_status load(serve_opts *o, serve_state *z, mk_server_model *sm) {
    double t0 = now_s();
    fprintf(stderr, "moekit serve: loading %s\n", mk_cli_esc(o->model));
#ifdef MK_TEST_HOOKS
    /* tests/cli/serve.sh: a slow load, to see /health say "loading" */
    const char *delay = getenv("MK_SERVE_LOAD_DELAY_MS");
    if (delay)
        usleep((useconds_t)atoi(delay) * 1000);
#endif
    /* the slots' contexts (the prompt cache is counted once its size is known) */
    o->mm.plan_ctx = o->ctx > 0 ? o->ctx : -1;
    o->mm.plan_chunk = 512;
    o->mm.engines = (int)o->parallel;
    o->mm.device_backend = o->backend && strcmp(o->backend, "cpu");
    MK_TRY(mk_ecli_mem_model_open(&o->mm, o->model, &(mk_model_opts){0}, &z->m));
    mk_status st = mk_tok_load(mk_model_dir(z->m), &z->tok);
    if (st != MK_OK)
        return mk_err_wrap(st, "the server needs the model's tokenizer");
    const mk_config *c = mk_model_config(z->m);
    MK_TRY(mk_tok_check_model_vocab(z->tok, c->vocab_size));
    sm->has_chat = mk_chat_detect(mk_model_dir(z->m), o->tmpl, &sm->chat_kind) == MK_OK;
    if (!sm->has_chat && o->tmpl)
        return mk_err(MK_E_ARG, "--template %s: %s", o->tmpl, mk_err_msg());
    if (!sm->has_chat)
        fprintf(stderr, "moekit serve: warning: %s: /v1/chat/completions will answer 400 (give "
                "--template to name one)\n", mk_cli_esc(mk_err_msg()));
    fprintf(stderr, "moekit serve: model loaded in %.1f s (%s, %d layers, vocab %d%s%s)\n",
            now_s() - t0, mk_model_layout(z->m), c->num_layers, c->vocab_size,
            sm->has_chat ? ", chat template " : "", sm->has_chat ? mk_chat_kind_name(sm->chat_kind) : "");
    if (stop_pending())
        return MK_OK;
    int mp = c->max_position_embeddings;
    long long ctx = o->ctx > 0 ? o->ctx : (mp > 0 && mp < 4096 ? mp : 4096);
    if (o->ctx > 0)
        MK_TRY(mk_ecli_check_ctx(z->m, ctx, "--ctx", false, false));
    /* one thread pool for every slot: the scheduler runs one slot at a time */
    MK_TRY(mk_pool_create((int)o->threads, &z->pool));
    if (o->backend && strcmp(o->backend, "cpu")) /* the scheduler thread runs every step on it */
        MK_TRY(mk_ecli_backend(o->backend, &o->mm, &z->be));
    else
        MK_TRY(mk_backend_cpu_create(z->pool, &z->be));
    mk_engine_opts eo = {.max_ctx = ctx, .prefill_chunk = 512, .backend = z->be};
    /* under MPI: this rank's share (experts or layers), and the other ranks build the same engines,
     * one per slot, following each slot's steps and the batched decode steps over them */
    o->dd.slots = (int)o->parallel;
    MK_TRY(mk_ecli_dist_lead(&o->dd, z->m, &eo));
    /* the prompt cache besides the engines' KV caches: recurrent-state
     * snapshots (hybrids; sched.c), each slot's token index and logprobs
     * row, counted in --memory-budget */
    uint64_t sb = mk_engine_state_bytes_for(z->m),
             snaps = o->dd.d ? 0 : (uint64_t)o->parallel * (uint64_t)o->snapshots; /* none under MPI */
    if (sb && o->snap_mem && o->snap_mem / sb < snaps)
        snaps = o->snap_mem / sb;
    o->mm.extra = (sb ? snaps * sb : 0) + (uint64_t)o->parallel * ((uint64_t)ctx + (uint64_t)c->vocab_size) * 4;
    if (sb && o->dd.d)
        fprintf(stderr, "moekit serve: prompt cache: no recurrent-state snapshots under MPI (a prompt that "
                "does not extend the slot's history is prefilled again)\n");
    else if (sb)
        fprintf(stderr, "moekit serve: prompt cache: up to %llu recurrent-state snapshots of %zu bytes "
                "(%.1f MiB)%s\n", (unsigned long long)snaps, (size_t)sb, (double)(snaps * sb) / 1048576.0,
                o->mm.budget ? ", counted in --memory-budget" : "");
    z->engines = calloc((size_t)o->parallel, sizeof *z->engines);
    if (!z->engines)
        return mk_err(MK_E_NOMEM, "no memory for %lld slots", o->parallel);
    o->mm.engines = (int)o->parallel;
    for (int i = 0; i < o->parallel; i++) {
        mk_engine_opts ei = eo;
        mk_ecli_dist_slot(&o->dd, i, &ei); /* MPI: slot i's hooks name it in the steps */
        st = mk_ecli_mem_engine(&o->mm, z->m, &ei, &z->engines[i]);
        if (st != MK_OK && o->mm.budget)
            return mk_err_wrap(st, "slot %d of %lld (--parallel; --memory-budget also holds the prompt "
                               "cache's %.1f MiB: see --snapshots, --snapshot-memory)", i + 1, o->parallel,
                               (double)o->mm.extra / 1048576.0);
        if (st != MK_OK)
            return mk_err_wrap(st, "slot %d of %lld (--parallel)", i + 1, o->parallel);
        z->n++;
    }
    fprintf(stderr, "moekit serve: %d slot%s x %lld positions (%.1f MiB each)\n", z->n,
            z->n == 1 ? "" : "s", ctx, (double)mk_engine_arena_bytes(z->engines[0]) / 1048576.0);
    /* warm-up: one forward touches every weight page and kernel path once */
    double tw = now_s();
    int32_t id = mk_tok_bos_id(z->tok) >= 0 ? mk_tok_bos_id(z->tok) : 0;
    float *logits = malloc((size_t)c->vocab_size * sizeof *logits);
    if (!logits)
        return mk_err(MK_E_NOMEM, "no memory for the warm-up's logits");
    st = mk_engine_forward(z->engines[0], &id, 1, MK_LOGITS_LAST, logits, NULL);
    free(logits);
    mk_engine_reset(z->engines[0]);
    if (st != MK_OK)
        return mk_err_wrap(st, "warm-up forward");
    fprintf(stderr, "moekit serve: warm-up forward in %.0f ms\n", (now_s() - tw) * 1e3);
    *sm = (mk_server_model){.model = z->m, .tok = z->tok, .has_chat = sm->has_chat,
                            .chat_kind = sm->chat_kind, .engines = z->engines, .n_engines = z->n,
                            .store = o->mm.store, .mem_limit = o->mm.limit, .rss = mk_cli_rss};
    return MK_OK;
}

static mk_status serve_main(serve_opts *o) {
    serve_state z = {0};
    mk_status st = MK_OK;
    if (o->key_file && (st = read_key(o->key_file, &z.key)) != MK_OK)
        return st;
    /* the alias: --alias, else the directory's name */
    char *dir = strdup(o->model), *alias = NULL;
    if (!dir) {
        free(z.key);
        return mk_err(MK_E_NOMEM, "no memory for the model's name");
    }
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/')
        dir[--dl] = 0;
    alias = o->alias ? (char *)o->alias : basename(dir);
    /* signals: collected by sigwait below, never delivered to a thread */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    mk_server_opts so = {.host = o->host, .port = (int)o->port, .alias = alias,
                         .api_key = o->key ? o->key : z.key, .queue = (int)o->queue,
                         .prefill_step = (int)o->prefill_step,
                         /* under MPI no snapshots: the other ranks' recurrent state follows rank 0's
                          * steps, not a restore (a hybrid model's prompt cache then re-prefills) */
                         .snapshots = o->snapshots && !o->dd.d ? (int)o->snapshots : -1,
                         .snap_bytes = (size_t)o->snap_mem, .snap_every = (int)o->snap_every,
                         .test_output = o->test_output, .no_webui = o->no_webui};
#ifdef MK_TEST_HOOKS
    /* tests/cli/serve.sh: streams read late by a whole answer (one event a token still) */
    so.test_stream_hold = getenv("MK_SERVE_STREAM_HOLD") != NULL;
#endif
    st = mk_server_start(&so, &z.srv);
    if (st == MK_OK) {
        fprintf(stderr, "moekit serve: listening on http://%s:%d (model id '%s'%s)\n",
                o->host ? o->host : "127.0.0.1", mk_server_port(z.srv), mk_cli_esc(alias),
                so.api_key ? ", API key required" : "");
        mk_server_model sm = {0};
        st = load(o, &z, &sm);
        if (st == MK_OK && !stop_pending()) {
            st = mk_server_ready(z.srv, &sm);
            if (st == MK_OK)
                fprintf(stderr, "moekit serve: ready\n");
        }
        if (st == MK_OK) {
            int sig = 0;
            sigwait(&set, &sig);
            fprintf(stderr, "moekit serve: %s: no new requests; running ones have %.0f s to finish\n",
                    sig == SIGINT ? "SIGINT" : "SIGTERM", o->grace);
        }
        mk_server_shutdown(z.srv, st == MK_OK ? o->grace : 0);
        mk_server_free(z.srv);
        if (st == MK_OK)
            fprintf(stderr, "moekit serve: stopped\n");
    }
    for (int i = 0; i < z.n; i++)
        mk_engine_free(z.engines[i]);
    free(z.engines);
    mk_ecli_mem_free(&o->mm);
    mk_backend_free(z.be);
    mk_pool_free(z.pool);
    mk_tok_free(z.tok);
    mk_model_free(z.m);
    free(z.key);
    free(dir);
    return st;
}

int cmd_serve(int argc, char **argv) {
    serve_opts o = {.port = 8080, .parallel = 1, .grace = 10, .snapshots = 4, .mm = {.cmd = "serve", .no_trace = true}};
    o.dd.cmd = "serve";
    int rc = parse(argc, argv, &o);
    if (rc >= 0)
        return rc;
    /* a worker waits for rank 0's next request for as long as the server runs (a dead rank 0 ends
     * the job through mpirun) */
    o.dd.o.idle_timeout_s = 1e12;
    mk_status dst = mk_ecli_dist_start(&o.dd, &o.mm);
    if (dst == MK_OK && o.dd.d && o.backend && strcmp(o.backend, "cpu"))
        dst = mk_err(MK_E_UNSUPPORTED, "serve: --backend cuda does not run under MPI yet");
    if (dst != MK_OK)
        return mk_cli_fail(dst);
    if (mk_ecli_dist_worker(&o.dd)) {
        /* no HTTP here: rank 0's steps until its finish, which its SIGTERM/SIGINT handling sends after
         * the server stopped (mpirun forwards those signals to every rank: they wait for it) */
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
        o.mm.cmd = "serve";
        /* the engines this rank will hold, as rank 0 plans them (load): one per slot (rank 0's setup
         * says how many; the same flags give the same count) */
        o.mm.plan_ctx = o.ctx > 0 ? o.ctx : -1;
        o.mm.plan_chunk = 512;
        o.mm.engines = (int)o.parallel;
        return mk_ecli_dist_work(&o.dd, o.model, &(mk_model_opts){0}, &o.mm,
                                 &(mk_engine_opts){.threads = (int)o.threads});
    }
    mk_status st = serve_main(&o);
    return st == MK_OK ? 0 : mk_cli_fail(st);
}

MK_CMD_REGISTER(serve, 45, "serve a model over HTTP with the OpenAI API (chat, completions, SSE)", cmd_serve)
