/* moekit run: generate text with the CPU engine, streaming tokens as they
 * come. A prompt is text (completion), a chat turn rendered with the
 * model's template, or raw token ids; generation stops at max tokens, an
 * end-of-sequence id (tokenizer, generation_config, config.json) or
 * <|im_end|>. --chat without --prompt is an interactive loop on stdin. */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli_flags.h"
#include "cli_esc.h"
#include "cmd.h"
#include "dist_cli.h"
#include "engine_cli.h"
#include "moekit/backend_cuda.h"
#include "moekit/chat.h"
#include "moekit/generate.h"
#include "moekit/kernels.h"
#include "moekit/sample.h"
#include "moekit/tokenizer.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: moekit run MODEL [--prompt TEXT | --ids LIST | --chat] [options]\n\n"
            "Generate from MODEL (a checkpoint directory) on the CPU, printing tokens as they\n"
            "are produced.\n\n"
            "prompt:\n"
            "  --prompt TEXT        the prompt; plain completion unless --chat/--template\n"
            "  --ids LIST           the prompt as token ids (comma separated); works without a\n"
            "                       tokenizer (the output is then ids)\n"
            "  --chat               wrap --prompt as a user turn in the model's chat template;\n"
            "                       without --prompt, chat interactively (one turn per line)\n"
            "  --system TEXT        system message for --chat\n"
            "  --template NAME      chat template: chatml, qwen3, qwen3-think, qwen3.5, deepseek3,\n"
            "                       deepseek3.2, glm4, glm4.7, minimax-m2, harmony, kimi-k2\n"
            "                       (default: recognised from the checkpoint); implies --chat\n"
            "  --no-think           qwen3 and glm4* templates: enable_thinking=false\n"
            "sampling (default greedy):\n"
            "  --max-tokens N       tokens to generate (default 256)\n"
            "  --temp T             temperature; 0 = greedy (default 0)\n"
            "  --top-k K            keep the K most likely tokens (0 = off)\n"
            "  --top-p P            nucleus sampling mass (1 = off)\n"
            "  --min-p P            drop tokens below P times the best one (0 = off)\n"
            "  --repeat-penalty R   penalise tokens of the last 64 (1 = off)\n"
            "  --seed S             random seed (default 0): same seed, same tokens\n"
            "engine:\n"
            "  --threads N          compute threads (default: all CPUs)\n"
            "  --backend B          where to compute: cpu (default) or cuda (GPU 0)\n"
            "  --ctx N              context positions to allocate (default: prompt +\n"
            "                       max tokens; 4096 for interactive chat, at most\n"
            "                       max_position_embeddings); more than the model's\n"
            "                       max_position_embeddings is refused, and so is a\n"
            "                       cache larger than the memory available\n"
            "  --force-ctx          allow --ctx beyond max_position_embeddings\n"
            "  --prefill-chunk N    tokens per prefill chunk (default 512; 2048 with --backend\n"
            "                       cuda, whose grouped expert GEMMs reuse each weight tile\n"
            "                       over more routed rows)\n"
            "  --fp8-bf16           dequantize FP8 weights to bf16 at load (transformers' way)\n"
            "memory:\n"
            "%s%s"
            "output:\n"
            "  --stats              print prefill and decode speed (tok/s), the KV-cache\n"
            "                       size (bytes per token), peak RSS and, when streaming, the\n"
            "                       expert cache's hit rate, bytes read and I/O wait to stderr\n"
            "  --json               print {\"ids\":[...],\"text\":\"...\"} of the generated tokens\n"
            "                       instead of streaming\n"
            "  -h, --help           this text\n\n"
            "Memory: weights are mapped from the checkpoint, not copied (pages load on first\n"
            "use and the OS may drop them again), so resident weights never exceed the model's\n"
            "size (--fp8-bf16 is the exception: it holds a bf16 copy, 2 bytes per FP8 weight).\n"
            "On top of that the engine allocates once: the KV cache, --ctx times the\n"
            "bytes per token that --stats prints (f32; MLA models cache only the latent, e.g.\n"
            "137 KiB per token for DeepSeek-V3), Gated DeltaNet states (fixed per layer), and\n"
            "the activations of one prefill chunk (grows with --prefill-chunk).\n\n"
            "Exit status: 0 ok, 2 bad input (model, tokenizer, flags), 1 internal failure.\n",
            mk_ecli_mem_help, mk_ecli_dist_help);
}

typedef struct run_opts {
    const char *model, *prompt, *ids, *system, *tmpl, *backend;
    bool chat, no_think, stats, json, force_ctx;
    mk_ecli_mem mm;
    mk_ecli_dist dd;
    long long max_tokens, ctx;
    mk_sample_params sp;
    mk_model_opts mo;
    mk_engine_opts eo;
} run_opts;

typedef struct run_ctx {
    const run_opts *o;
    mk_model *m;
    mk_engine *e;
    mk_backend *be; /* --backend cuda: borrowed by e, freed after it */
    mk_tok *tok; /* NULL without a tokenizer */
    mk_sampler *smp;
    mk_gen_stopset stop;
} run_ctx;

/* Streaming output of the library's generation loop: text as it comes, or
 * comma-separated ids without a tokenizer. Stops when stdout fails (main()
 * reports it and exits 1). */
typedef struct stream_out {
    int64_t n;
} stream_out;

static bool on_token(void *user, int32_t id, const char *text, size_t len) {
    stream_out *so = user;
    if (text)
        fwrite(text, 1, len, stdout);
    else if (id >= 0)
        printf("%s%d", so->n++ ? "," : "", id);
    return !mk_cli_stdout_failed();
}

/* Prefill `prompt`, then sample until a stop id or max tokens, streaming
 * (mk_generate does the work; this prints it). */
static mk_status generate(run_ctx *r, const int32_t *prompt, int64_t np, int32_t **out_ids,
                          int64_t *out_n) {
    const run_opts *o = r->o;
    const mk_config *c = mk_model_config(r->m);
    stream_out so = {0};
    mk_gen_opts go = {.max_tokens = o->max_tokens, .stop = &r->stop, .sampler = r->smp,
                      .tok = r->tok, .on_token = o->json ? NULL : on_token, .user = &so};
    mk_gen_result res;
    mk_status st = mk_generate(r->e, prompt, np, &go, &res);
    int64_t ngen = res.n;
    if (!o->json && (st == MK_OK || ngen > 0))
        printf("\n");
    fflush(stdout); /* the stats line (stderr) must follow the text, not interleave with it */
    if (res.reason == MK_GEN_STOP_CTX_FULL) /* not an error, but never a silent stop */
        fprintf(stderr, "moekit run: stopped after %lld tokens: the context of %lld positions is full (--ctx)\n",
                (long long)ngen, (long long)mk_engine_max_ctx(r->e));
    if (o->stats) {
        fprintf(stderr,
                "[%s] prompt %lld tokens in %.3f s (%.1f tok/s), generated %lld tokens in "
                "%.3f s (%.2f tok/s), vocab %d\n",
                mk_model_layout(r->m), (long long)np, res.prefill_s, np / (res.prefill_s + 1e-12),
                (long long)ngen, res.decode_s, ngen > 1 ? (ngen - 1) / (res.decode_s + 1e-12) : 0.0,
                c->vocab_size);
        /* memory: the KV cache is max context x bytes per token; the arena holds it */
        size_t kvt = mk_engine_kv_bytes_per_token(r->e);
        long long ctx = (long long)mk_engine_max_ctx(r->e);
        fprintf(stderr,
                "[kv] cache %zu bytes/token (%.2f MiB for %lld positions), engine arena %.2f MiB\n",
                kvt, (double)kvt * (double)ctx / 1048576.0, ctx,
                (double)mk_engine_arena_bytes(r->e) / 1048576.0);
        /* which CPU kernels ran (a benchmark's record names them) */
        fprintf(stderr, "[kernels] %s, %s activations for MLX affine 4/8-bit decode, %s for prefill\n",
                mk_isa_name(mk_isa_active()), mk_kernels_int8() ? "int8" : "float",
                mk_kernels_prefill_int8() ? "int8" : "float");
        /* the CUDA backend's placement of the routed experts (zeros elsewhere) */
        size_t evr, eh;
        int hl, xs;
        uint64_t xcp;
        double xh;
        mk_backend_cuda_expert_stats(r->be, &evr, &eh, &hl);
        mk_backend_cuda_expert_cache_stats(r->be, &xs, &xcp, &xh);
        if (evr || eh)
            fprintf(stderr,
                    "[gpu experts] %.2f GiB in device memory, %.2f GiB in pinned host memory (%d layers); "
                    "expert cache %d slots, %llu copies, %.3f of the host layers' routed experts read from it\n",
                    evr / 1073741824.0, eh / 1073741824.0, hl, xs, (unsigned long long)xcp, xh);
        mk_ecli_mem_stats(&o->mm, stderr);
        mk_ecli_dist_stats(&o->dd, stderr);
    }
    if (st != MK_OK) {
        free(res.ids);
        return st;
    }
    *out_ids = res.ids;
    *out_n = ngen;
    return MK_OK;
}

static mk_status print_json(const run_ctx *r, const int32_t *ids, int64_t n) {
    json_t *o = json_object(), *a = json_array();
    for (int64_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer(ids[i]));
    json_object_set_new(o, "ids", a);
    if (r->tok) {
        char *text;
        size_t len;
        MK_TRY(mk_tok_decode(r->tok, ids, (size_t)n, true, &text, &len));
        json_object_set_new(o, "text", json_stringn(text, len));
        free(text);
    }
    char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(o);
    if (!s)
        return mk_err(MK_E_NOMEM, "no memory for JSON output");
    printf("%s\n", s);
    free(s);
    return MK_OK;
}

/* Ids of the prompt: a chat rendered with the model's template (the
 * template's markers are control tokens, the messages' text never is), or
 * plain text. */
static mk_status prompt_ids(run_ctx *r, const mk_chat_msg *msgs, size_t nmsg, int32_t **ids,
                            int64_t *n) {
    const run_opts *o = r->o;
    if (!r->tok)
        return mk_err(MK_E_ARG, "%s has no usable tokenizer.json: give the prompt as --ids",
                      o->model);
    size_t nn = 0;
    mk_status st;
    if (o->chat) {
        mk_chat_kind kind;
        MK_TRY(mk_chat_detect(mk_model_dir(r->m), o->tmpl, &kind));
        unsigned fl = MK_CHAT_GENERATION_PROMPT | (o->no_think ? MK_CHAT_NO_THINKING : 0);
        st = mk_chat_encode(r->tok, kind, msgs, nmsg, fl, ids, &nn);
    } else {
        st = mk_tok_encode(r->tok, o->prompt, strlen(o->prompt), 0, ids, &nn);
    }
    *n = (int64_t)nn;
    return st;
}

static mk_status one_shot(run_ctx *r) {
    const run_opts *o = r->o;
    int32_t *ids = NULL, *gen = NULL;
    int64_t n = 0, ng = 0;
    mk_chat_msg msgs[2] = {{"system", o->system, NULL}, {"user", o->prompt, NULL}};
    mk_status st = o->ids ? mk_ecli_ids(o->ids, &ids, &n)
                          : prompt_ids(r, o->system ? msgs : msgs + 1, o->system ? 2 : 1, &ids, &n);
    if (st == MK_OK && n == 0)
        st = mk_err(MK_E_ARG, "the prompt is empty");
    if (st == MK_OK)
        st = generate(r, ids, n, &gen, &ng);
    if (st == MK_OK && o->json)
        st = print_json(r, gen, ng);
    free(ids);
    free(gen);
    return st;
}

/* One chat turn's prompt, made to fit the context with room for
 * --max-tokens (the library's policy, mk_gen_fit_chat: oldest exchanges
 * dropped first, the system message kept), with a notice for what was
 * dropped. *fits false: even the newest turn alone does not fit. */
static mk_status fit_turn(run_ctx *r, mk_chat_msg *msgs, char **owned, size_t *n, size_t first,
                          int32_t **ids, int64_t *ni, bool *fits) {
    mk_chat_kind kind;
    MK_TRY(mk_chat_detect(mk_model_dir(r->m), r->o->tmpl, &kind));
    unsigned fl = MK_CHAT_GENERATION_PROMPT | (r->o->no_think ? MK_CHAT_NO_THINKING : 0);
    size_t dropped = 0;
    MK_TRY(mk_gen_fit_chat(r->tok, kind, fl, msgs, owned, n, first,
                           mk_engine_max_ctx(r->e) - r->o->max_tokens, ids, ni, &dropped, fits));
    if (dropped)
        fprintf(stderr, "moekit run: the conversation no longer fits --ctx %lld with --max-tokens %lld: "
                "dropped the %zu oldest message%s\n", (long long)mk_engine_max_ctx(r->e),
                r->o->max_tokens, dropped, dropped == 1 ? "" : "s");
    return MK_OK;
}

/* Interactive chat: every turn re-renders the conversation and prefills it
 * from an empty cache (templates may rewrite earlier turns). A line that
 * cannot be a turn (invalid UTF-8, a NUL byte, too long for the context) is
 * refused with a notice and the session goes on; when the conversation
 * outgrows the context its oldest exchanges are dropped (fit_turn). */
static mk_status interactive(run_ctx *r) {
    size_t cap = 16, n = 0, lineno = 0;
    mk_chat_msg *msgs = calloc(cap, sizeof *msgs);
    char **owned = calloc(cap, sizeof *owned);
    mk_status st = msgs && owned ? MK_OK : mk_err(MK_E_NOMEM, "no memory for a chat");
    if (st == MK_OK && r->o->system)
        msgs[n++] = (mk_chat_msg){"system", r->o->system, NULL};
    size_t first = n; /* the oldest message that may be dropped */
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while (st == MK_OK && !mk_cli_stdout_failed()) {
        fprintf(stderr, "> ");
        if ((len = getline(&line, &lcap, stdin)) < 0)
            break;
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        /* A bad line is the user's typo, not the end of the conversation. */
        if (strlen(line) != (size_t)len) {
            fprintf(stderr, "moekit run: line %zu holds a NUL byte: not sent, type the turn again\n", lineno);
            continue;
        }
        int32_t *chk = NULL;
        size_t nchk;
        if (mk_tok_encode(r->tok, line, (size_t)len, MK_TOK_SPLIT_SPECIAL, &chk, &nchk) != MK_OK) {
            fprintf(stderr, "moekit run: line %zu: %s: not sent, type the turn again\n", lineno,
                    mk_cli_esc(mk_err_msg()));
            continue;
        }
        free(chk);
        if (n + 2 > cap) {
            mk_chat_msg *nm = realloc(msgs, 2 * cap * sizeof *msgs);
            if (nm)
                msgs = nm;
            char **no = nm ? realloc(owned, 2 * cap * sizeof *owned) : NULL;
            if (no)
                owned = no;
            if (!nm || !no) {
                st = mk_err(MK_E_NOMEM, "no memory for a chat of %zu messages", n);
                break;
            }
            memset(owned + cap, 0, cap * sizeof *owned);
            cap *= 2;
        }
        owned[n] = strdup(line);
        if (!owned[n]) {
            st = mk_err(MK_E_NOMEM, "no memory for a chat turn of %zu bytes", (size_t)len);
            break;
        }
        msgs[n] = (mk_chat_msg){"user", owned[n], NULL};
        n++;
        int32_t *ids = NULL, *gen = NULL;
        int64_t ni = 0, ng = 0;
        bool fits;
        mk_engine_reset(r->e);
        st = fit_turn(r, msgs, owned, &n, first, &ids, &ni, &fits);
        if (st == MK_OK && !fits) {
            fprintf(stderr, "moekit run: line %zu does not fit --ctx %lld with --max-tokens %lld even "
                    "alone: not sent (raise --ctx or lower --max-tokens)\n", lineno,
                    (long long)mk_engine_max_ctx(r->e), r->o->max_tokens);
            free(owned[--n]);
            owned[n] = NULL;
            continue;
        }
        if (st == MK_OK)
            st = generate(r, ids, ni, &gen, &ng);
        char *text = NULL;
        size_t tlen;
        if (st == MK_OK)
            st = mk_tok_decode(r->tok, gen, (size_t)ng, true, &text, &tlen);
        if (st == MK_OK) {
            owned[n] = text;
            msgs[n] = (mk_chat_msg){"assistant", text, NULL};
            n++;
        }
        free(ids);
        free(gen);
    }
    free(line);
    for (size_t i = 0; owned && i < n; i++)
        free(owned[i]);
    free(owned);
    free(msgs);
    return st;
}

static int parse(int argc, char **argv, run_opts *o) {
    static const struct option opts[] = {
        {"prompt", required_argument, 0, 'p'}, {"ids", required_argument, 0, 'i'},
        {"chat", no_argument, 0, 'C'},         {"system", required_argument, 0, 'S'},
        {"template", required_argument, 0, 'T'}, {"no-think", no_argument, 0, 'N'},
        {"max-tokens", required_argument, 0, 'n'}, {"temp", required_argument, 0, 't'},
        {"top-k", required_argument, 0, 'k'},  {"top-p", required_argument, 0, 'P'},
        {"min-p", required_argument, 0, 'm'},  {"repeat-penalty", required_argument, 0, 'r'},
        {"seed", required_argument, 0, 's'},   {"threads", required_argument, 0, 'j'},
        {"backend", required_argument, 0, 'B'},
        {"ctx", required_argument, 0, 'x'},    {"prefill-chunk", required_argument, 0, 'c'},
        {"fp8-bf16", no_argument, 0, 'F'},    {"force-ctx", no_argument, 0, 'X'},
        {"stats", no_argument, 0, 'a'},        {"json", no_argument, 0, 'J'},
        MK_ECLI_MEM_OPTS,
        MK_ECLI_DIST_OPTS,
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    long long v;
    double d;
    int ch, rc;
    const char *filter = NULL; /* the last sampling filter flag given */
    optind = 1;
    opterr = 0; /* report unknown options ourselves, in one line */
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'p': o->prompt = optarg; break;
        case 'i': o->ids = optarg; break;
        case 'C': o->chat = true; break;
        case 'X': o->force_ctx = true; break;
        case 'S': o->system = optarg; break;
        case 'T': o->tmpl = optarg; o->chat = true; break;
        case 'N': o->no_think = true; break;
        case 'n':
            if ((rc = mk_flag_int("run", "--max-tokens", optarg, 1, 1 << 24, &o->max_tokens)) >= 0)
                return rc;
            break;
        case 't':
            if ((rc = mk_flag_real("run", "--temp", optarg, 0, 1000, 0, &d)) >= 0)
                return rc;
            o->sp.temperature = (float)d;
            break;
        case 'k':
            if ((rc = mk_flag_int("run", "--top-k", optarg, 0, 1 << 24, &v)) >= 0)
                return rc;
            o->sp.top_k = (int)v;
            filter = "--top-k";
            break;
        case 'P':
            if ((rc = mk_flag_real("run", "--top-p", optarg, 0, 1, MK_FLAG_LO_OPEN, &d)) >= 0)
                return rc;
            o->sp.top_p = (float)d;
            filter = "--top-p";
            break;
        case 'm':
            if ((rc = mk_flag_real("run", "--min-p", optarg, 0, 1, MK_FLAG_HI_OPEN, &d)) >= 0)
                return rc;
            o->sp.min_p = (float)d;
            filter = "--min-p";
            break;
        case 'r':
            if ((rc = mk_flag_real("run", "--repeat-penalty", optarg, 0, 1000, MK_FLAG_LO_OPEN, &d)) >= 0)
                return rc;
            o->sp.repeat_penalty = (float)d;
            break;
        case 's':
            if ((rc = mk_flag_int("run", "--seed", optarg, 0, INT64_MAX, &v)) >= 0)
                return rc;
            o->sp.seed = (uint64_t)v;
            break;
        case 'j':
            if ((rc = mk_flag_int("run", "--threads", optarg, 1, 1024, &v)) >= 0)
                return rc;
            o->eo.threads = (int)v;
            break;
        case 'B':
            if (!mk_ecli_backend_name(optarg))
                return mk_cli_usage("run", "--backend: expected cpu or cuda, found '%s'", optarg);
            o->backend = optarg;
            break;
        case 'x':
            if ((rc = mk_flag_int("run", "--ctx", optarg, 1, 1 << 26, &o->ctx)) >= 0)
                return rc;
            break;
        case 'c':
            if ((rc = mk_flag_int("run", "--prefill-chunk", optarg, 1, 1 << 20, &v)) >= 0)
                return rc;
            o->eo.prefill_chunk = (int)v;
            break;
        case 'F': o->mo.fp8_to_bf16 = true; break;
        case 'a': o->stats = true; break;
        case 'J': o->json = true; break;
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
            return mk_cli_usage("run", "unknown option or missing value: %s", argv[optind - 1]);
        }
        }
    }
    if (optind != argc - 1)
        return mk_cli_usage("run", "expected exactly one MODEL argument");
    o->model = argv[optind];
    if (o->prompt && o->ids)
        return mk_cli_usage("run", "give either --prompt or --ids, not both");
    if (!o->prompt && !o->ids && !o->chat)
        return mk_cli_usage("run", "give --prompt, --ids or --chat");
    if (o->ids && o->chat)
        return mk_cli_usage("run", "--ids is a raw prompt: it does not combine with --chat");
    /* Flags that would be silently ignored: say so, once, and go on. */
    if (filter && !(o->sp.temperature > 0))
        fprintf(stderr, "moekit run: warning: %s has no effect without --temp > 0 (greedy decoding "
                "always takes the most likely token)\n", filter);
    if (o->system && !o->chat)
        fprintf(stderr, "moekit run: warning: --system has no effect without --chat (a plain "
                "--prompt is not a conversation)\n");
    if (o->no_think && !o->chat)
        fprintf(stderr, "moekit run: warning: --no-think has no effect without --chat\n");
    return -1;
}

static mk_status run_main(run_opts *o) {
    run_ctx r = {.o = o};
    /* the context, when known before the prompt is read: counted in the resident-or-stream choice */
    o->mm.plan_ctx = o->ctx > 0 ? o->ctx : o->chat && !o->prompt ? -1 : 0;
    if (o->eo.prefill_chunk <= 0 && o->backend && !strcmp(o->backend, "cuda"))
        o->eo.prefill_chunk = MK_CUDA_PREFILL_CHUNK;
    o->mm.plan_chunk = o->eo.prefill_chunk;
    o->mm.device_backend = o->backend && strcmp(o->backend, "cpu");
    mk_status st = mk_ecli_mem_model_open(&o->mm, o->model, &o->mo, &r.m);
    if (st != MK_OK)
        return st;
    const mk_config *c = mk_model_config(r.m);
    bool interactive_chat = o->chat && !o->prompt;
    int mp = c->max_position_embeddings;
    o->eo.max_ctx = o->ctx > 0 ? o->ctx : interactive_chat ? (mp > 0 && mp < 4096 ? mp : 4096) : 0;
    if (o->ctx > 0 && (st = mk_ecli_check_ctx(r.m, o->ctx, "--ctx", o->force_ctx, false)) != MK_OK)
        goto done;
    /* tokenizer: required for text, optional for --ids */
    st = mk_tok_load(mk_model_dir(r.m), &r.tok);
    if (st != MK_OK && !o->ids) {
        mk_err_wrap(st, "a text prompt needs the model's tokenizer (or give --ids)");
        goto done;
    }
    st = MK_OK;
    /* Text flags that cannot be encoded are the flag's fault: say which. */
    const char *tf[2][2] = {{"--prompt", o->prompt}, {"--system", o->chat ? o->system : NULL}};
    for (int i = 0; r.tok && i < 2 && st == MK_OK; i++) {
        int32_t *chk = NULL;
        size_t nchk;
        if (tf[i][1] && (st = mk_tok_encode(r.tok, tf[i][1], strlen(tf[i][1]), MK_TOK_SPLIT_SPECIAL, &chk,
                                            &nchk)) != MK_OK)
            mk_err_wrap(st, "%s", tf[i][0]);
        free(chk);
    }
    if (st == MK_OK && r.tok)
        st = mk_tok_check_model_vocab(r.tok, c->vocab_size);
    if (st != MK_OK)
        goto done;
    if ((st = mk_gen_stopset_model(&r.stop, r.m, r.tok)) != MK_OK)
        goto done;
    if (!o->eo.max_ctx) { /* one shot: size the cache for prompt + generation */
        int32_t *ids = NULL;
        int64_t n = 0;
        mk_chat_msg msgs[2] = {{"system", o->system, NULL}, {"user", o->prompt, NULL}};
        st = o->ids ? mk_ecli_ids(o->ids, &ids, &n)
                    : prompt_ids(&r, o->system ? msgs : msgs + 1, o->system ? 2 : 1, &ids, &n);
        free(ids);
        o->eo.max_ctx = n + o->max_tokens;
        if (st != MK_OK)
            goto done;
        /* sized for the user's prompt and --max-tokens, not asked for: a warning */
        mk_ecli_check_ctx(r.m, o->eo.max_ctx, "the prompt + --max-tokens", o->force_ctx, true);
    }
    if ((st = mk_ecli_backend(o->backend, &o->mm, &r.be)) != MK_OK)
        goto done;
    o->eo.backend = r.be;
    /* under MPI: this rank's share of the experts, the shape told to the others */
    if ((st = mk_ecli_dist_lead(&o->dd, r.m, &o->eo)) != MK_OK)
        goto done;
    /* a cache larger than memory (or the budget) is refused */
    if ((st = mk_ecli_mem_engine(&o->mm, r.m, &o->eo, &r.e)) != MK_OK ||
        (st = mk_sampler_create(&o->sp, c->vocab_size, &r.smp)) != MK_OK)
        goto done;
    st = interactive_chat ? interactive(&r) : one_shot(&r);
done:
    mk_sampler_free(r.smp);
    mk_engine_free(r.e);
    mk_ecli_mem_free(&o->mm);
    mk_backend_free(r.be);
    mk_tok_free(r.tok);
    mk_model_free(r.m);
    return st;
}

int cmd_run(int argc, char **argv) {
    run_opts o = {.max_tokens = 256, .mm = {.cmd = "run"}, .dd = {.cmd = "run"}};
    mk_sample_params_default(&o.sp);
    int rc = parse(argc, argv, &o);
    if (rc >= 0)
        return rc;
    /* under MPI: rank 0 runs the command, the others serve its steps */
    mk_status dst = mk_ecli_dist_start(&o.dd, &o.mm);
    if (dst == MK_OK && o.dd.d && o.backend && strcmp(o.backend, "cpu"))
        dst = mk_err(MK_E_UNSUPPORTED, "run: --backend cuda does not run under MPI yet");
    if (dst != MK_OK)
        return mk_cli_fail(dst);
    if (mk_ecli_dist_worker(&o.dd))
        return mk_ecli_dist_work(&o.dd, o.model, &o.mo, &o.mm, &o.eo);
    mk_status st = run_main(&o);
    return st == MK_OK ? 0 : mk_cli_fail(st);
}

MK_CMD_REGISTER(run, 40, "generate text with the CPU engine (streaming, sampling, chat)", cmd_run)
