/* moekit eval: perplexity of a model on a text file, and with --ref the
 * KL divergence and top-1 agreement against a reference model over the
 * same tokens (the "collapse test" for conversions and quantizations).
 *
 * Method (fixtures/README.md): tokenize the whole file without special
 * tokens, keep the first N tokens cut to whole windows of W, run each window
 * alone from an empty state, score tokens 2..W of each window. KL(ref ||
 * model) per scored position is computed in double from both models' full
 * distributions. */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_flags.h"
#include "cmd.h"
#include "dist_cli.h"
#include "engine_cli.h"
#include "moekit/kernels.h"
#include "moekit/sample.h"
#include "moekit/tokenizer.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: moekit eval MODEL --text FILE [options]\n\n"
            "Perplexity of MODEL on FILE: the whole file is tokenized with MODEL's tokenizer (no\n"
            "special tokens added), the first --tokens tokens are cut into whole windows of\n"
            "--window, each window runs alone from an empty cache, and the negative\n"
            "log-likelihood of tokens 2..W of every window is averaged: ppl = exp(mean NLL).\n\n"
            "  --text FILE       UTF-8 text to score (required)\n"
            "  --window W        tokens per window (default 256); more than the model's\n"
            "                    max_position_embeddings is refused\n"
            "  --force-ctx       allow a window beyond max_position_embeddings\n"
            "  --tokens N        use the first N tokens of the file (default 20000)\n"
            "  --ref MODEL2      also run MODEL2 on the same tokens and report, over all scored\n"
            "                    positions, the mean and 99th percentile of KL(MODEL2 || MODEL)\n"
            "                    and how often both rank the same token first\n"
            "  --threads N       compute threads (default: all CPUs)\n"
            "  --backend B       where to compute: cpu (default) or cuda (GPU 0), both models\n"
            "  --fp8-bf16        dequantize FP8 weights to bf16 at load (transformers' way)\n"
            "  --json            print the results as JSON\n"
            "  --stats           print peak RSS and the expert store's counters to stderr\n"
            "memory (MODEL and --ref each get these settings, each its own budget;\n"
            "--experts-per-token applies to MODEL only):\n"
            "%s%s"
            "  -h, --help        this text\n\n"
            "Exit status: 0 ok, 2 bad input, 1 internal failure.\n",
            mk_ecli_mem_help, mk_ecli_dist_help);
}

typedef struct eval_opts {
    const char *model, *text, *ref, *backend;
    long long window, tokens;
    bool json, force_ctx, stats;
    mk_model_opts mo;
    mk_engine_opts eo;
    mk_ecli_mem mm; /* flags; each side copies it */
    mk_ecli_dist *dd; /* MPI (tools/dist_cli.h): the evaluated model's experts spread over the ranks */
} eval_opts;

typedef struct side {
    mk_model *m;
    mk_engine *e;
    mk_backend *be; /* --backend cuda: borrowed by e, freed after it */
    float *lg; /* [W, V] */
    mk_ecli_mem mm;
} side;

static void side_free(side *s) {
    free(s->lg);
    mk_engine_free(s->e);
    mk_ecli_mem_free(&s->mm);
    mk_backend_free(s->be);
    mk_model_free(s->m);
}

static mk_status side_open(const char *path, const eval_opts *o, bool ref, side *s) {
    mk_engine_opts eo = o->eo;
    eo.max_ctx = o->window;
    s->mm = o->mm;
    if (ref) /* the reference is the model as it is: its cost is what eval --ref measures */
        s->mm.experts_per_tok = 0;
    s->mm.plan_ctx = o->window;
    s->mm.plan_chunk = eo.prefill_chunk;
    s->mm.device_backend = o->backend && strcmp(o->backend, "cpu");
    MK_TRY(mk_ecli_mem_model_open(&s->mm, path, &o->mo, &s->m));
    MK_TRY(mk_ecli_check_ctx(s->m, o->window, "--window", o->force_ctx, false));
    MK_TRY(mk_ecli_backend(o->backend, &s->mm, &s->be));
    eo.backend = s->be;
    if (!ref) /* under MPI: this rank's share of the experts, the shape told to the others */
        MK_TRY(mk_ecli_dist_lead(o->dd, s->m, &eo));
    /* a cache larger than memory (or the budget) is refused */
    MK_TRY(mk_ecli_mem_engine(&s->mm, s->m, &eo, &s->e));
    s->lg = malloc((size_t)o->window * (size_t)mk_model_config(s->m)->vocab_size * sizeof(float));
    return s->lg ? MK_OK : mk_err(MK_E_NOMEM, "no memory for %lld x %d logits", o->window,
                                  mk_model_config(s->m)->vocab_size);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}


static mk_status eval_main(const eval_opts *o) {
    int32_t *ids = NULL;
    size_t ntok = 0;
    side a = {0}, b = {0};
    double *lpa = NULL, *lpb = NULL, *kls = NULL;
    mk_status st = side_open(o->model, o, false, &a);
    if (st == MK_OK)
        st = mk_ecli_tokenize_file(mk_model_dir(a.m), mk_model_config(a.m)->vocab_size, o->text, &ids, &ntok);
    if (st == MK_OK && o->ref)
        st = side_open(o->ref, o, true, &b);
    int64_t V = a.m ? mk_model_config(a.m)->vocab_size : 0, W = o->window;
    if (st == MK_OK && b.m && mk_model_config(b.m)->vocab_size != V)
        st = mk_err(MK_E_MISMATCH, "--ref %s has vocabulary %d, %s has %lld", o->ref,
                    mk_model_config(b.m)->vocab_size, o->model, (long long)V);
    int64_t use = (int64_t)ntok < o->tokens ? (int64_t)ntok : o->tokens, nw = use / W;
    if (st == MK_OK && nw < 1)
        st = mk_err(MK_E_ARG, "%s: %zu tokens, fewer than one window of %lld", o->text, ntok,
                    (long long)W);
    if (st == MK_OK) {
        lpa = malloc((size_t)V * sizeof(double));
        lpb = malloc((size_t)V * sizeof(double));
        kls = malloc((size_t)(nw * (W - 1)) * sizeof(double));
        if (!lpa || !lpb || !kls)
            st = mk_err(MK_E_NOMEM, "no memory for evaluation buffers");
    }
    double nll_a = 0, nll_b = 0;
    int64_t scored = 0, agree = 0;
    for (int64_t w = 0; st == MK_OK && w < nw; w++) {
        const int32_t *win = ids + w * W;
        mk_engine_reset(a.e);
        st = mk_engine_forward(a.e, win, W, MK_LOGITS_ALL, a.lg, NULL);
        if (st == MK_OK && b.e) {
            mk_engine_reset(b.e);
            st = mk_engine_forward(b.e, win, W, MK_LOGITS_ALL, b.lg, NULL);
        }
        for (int64_t t = 0; st == MK_OK && t < W - 1; t++) {
            mk_log_softmax_f64(a.lg + t * V, V, lpa);
            nll_a -= lpa[win[t + 1]];
            if (b.e) {
                mk_log_softmax_f64(b.lg + t * V, V, lpb);
                nll_b -= lpb[win[t + 1]];
                double kl = 0;
                for (int64_t i = 0; i < V; i++)
                    kl += exp(lpb[i]) * (lpb[i] - lpa[i]);
                kls[scored] = kl;
                agree += mk_argmax(a.lg + t * V, V) == mk_argmax(b.lg + t * V, V);
            }
            scored++;
        }
    }
    if (st == MK_OK) {
        double ppl = exp(nll_a / scored), kl_mean = 0, kl_p99 = 0, ppl_ref = 0;
        if (b.e) {
            for (int64_t i = 0; i < scored; i++)
                kl_mean += kls[i];
            kl_mean /= scored;
            qsort(kls, (size_t)scored, sizeof(double), cmp_double);
            int64_t k = (int64_t)ceil(0.99 * scored) - 1;
            kl_p99 = kls[k < 0 ? 0 : k];
            ppl_ref = exp(nll_b / scored);
        }
        if (o->json) {
            json_t *j = json_pack("{s:I,s:I,s:I,s:I,s:f,s:f}", "tokens_in_file", (json_int_t)ntok,
                                  "windows", (json_int_t)nw, "window", (json_int_t)W,
                                  "tokens_scored", (json_int_t)scored, "mean_nll",
                                  nll_a / scored, "ppl", ppl);
            if (b.e)
                json_object_set_new(j, "ref", json_pack("{s:f,s:f,s:f,s:f}", "ppl", ppl_ref,
                                                        "kl_mean", kl_mean, "kl_p99", kl_p99,
                                                        "top1_agreement",
                                                        (double)agree / scored));
            char *s = json_dumps(j, JSON_COMPACT);
            json_decref(j);
            if (s)
                printf("%s\n", s);
            free(s);
        } else {
            printf("%s: %lld windows of %lld, %lld tokens scored: mean NLL %.6f, perplexity "
                   "%.4f\n", o->model, (long long)nw, (long long)W, (long long)scored,
                   nll_a / scored, ppl);
            if (b.e)
                printf("ref %s: perplexity %.4f; KL(ref || model) mean %.6g, p99 %.6g; top-1 "
                       "agreement %.4f\n", o->ref, ppl_ref, kl_mean, kl_p99,
                       (double)agree / scored);
        }
    }
    if (st == MK_OK && o->stats) {
        fflush(stdout);
        mk_ecli_mem_stats(&a.mm, stderr);
        if (b.e)
            mk_ecli_mem_stats(&b.mm, stderr);
    }
    free(lpa);
    free(lpb);
    free(kls);
    free(ids);
    side_free(&a);
    side_free(&b);
    return st;
}

int cmd_eval(int argc, char **argv) {
    static const struct option opts[] = {
        {"text", required_argument, 0, 'f'},    {"window", required_argument, 0, 'w'},
        {"tokens", required_argument, 0, 'n'},  {"ref", required_argument, 0, 'r'},
        {"threads", required_argument, 0, 't'}, {"backend", required_argument, 0, 'B'},
        {"fp8-bf16", no_argument, 0, 'F'},      {"json", no_argument, 0, 'J'},
        {"force-ctx", no_argument, 0, 'X'},    {"stats", no_argument, 0, 'a'},
        MK_ECLI_MEM_OPTS,
        MK_ECLI_DIST_OPTS,
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    mk_ecli_dist dd = {.cmd = "eval"};
    eval_opts o = {.window = 256, .tokens = 20000, .mm = {.cmd = "eval"}, .dd = &dd};
    long long v;
    int ch, rc;
    optind = 1;
    opterr = 0; /* report unknown options ourselves, in one line */
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'f': o.text = optarg; break;
        case 'r': o.ref = optarg; break;
        case 'w':
            if ((rc = mk_flag_int("eval", "--window", optarg, 2, 1 << 20, &o.window)) >= 0)
                return rc;
            break;
        case 'n':
            if ((rc = mk_flag_int("eval", "--tokens", optarg, 2, INT32_MAX, &o.tokens)) >= 0)
                return rc;
            break;
        case 't':
            if ((rc = mk_flag_int("eval", "--threads", optarg, 1, 1024, &v)) >= 0)
                return rc;
            o.eo.threads = (int)v;
            break;
        case 'F': o.mo.fp8_to_bf16 = true; break;
        case 'B':
            if (!mk_ecli_backend_name(optarg))
                return mk_cli_usage("eval", "--backend: expected cpu or cuda, found '%s'", optarg);
            o.backend = optarg;
            break;
        case 'J': o.json = true; break;
        case 'X': o.force_ctx = true; break;
        case 'a': o.stats = true; break;
        case 'h': help(stdout); return 0;
        default: {
            bool mine;
            if ((rc = mk_ecli_mem_flag(&o.mm, ch, optarg, &mine)) >= 0)
                return rc;
            if (mine)
                break;
            if ((rc = mk_ecli_dist_flag(&dd, ch, optarg, &mine)) >= 0)
                return rc;
            if (mine)
                break;
            return mk_cli_usage("eval", "unknown option or missing value: %s", argv[optind - 1]);
        }
        }
    }
    if (optind != argc - 1)
        return mk_cli_usage("eval", "expected exactly one MODEL argument");
    if (!o.text)
        return mk_cli_usage("eval", "--text FILE is required");
    o.model = argv[optind];
    /* under MPI: rank 0 evaluates, the others serve its steps */
    mk_status st = mk_ecli_dist_start(&dd, &o.mm);
    if (st == MK_OK && dd.d && (o.ref || (o.backend && strcmp(o.backend, "cpu"))))
        st = mk_err(MK_E_UNSUPPORTED, "eval: --ref and --backend cuda do not run under MPI yet");
    if (st != MK_OK)
        return mk_cli_fail(st);
    if (mk_ecli_dist_worker(&dd))
        return mk_ecli_dist_work(&dd, o.model, &o.mo, &o.mm, &o.eo);
    st = eval_main(&o);
    return st == MK_OK ? 0 : mk_cli_fail(st);
}

MK_CMD_REGISTER(eval, 42, "perplexity, and KL / top-1 agreement against a reference model",
                cmd_eval)
