/* moekit profile: measure what each bit width costs each tensor of a model
 * (routing statistics from calibration text, MLX affine quantization error
 * per candidate width) and, with --from, turn such a profile into a
 * --target-bpw allocation (per-module widths) without quantizing.
 *
 * The library does the work (include/moekit/profile.h); this file parses
 * flags, tokenizes the calibration text the way `moekit eval` does (the
 * whole file, no special tokens, the first --tokens ids) and prints
 * summaries. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_flags.h"
#include "cmd.h"
#include "engine_cli.h"
#include "io/outpath.h"
#include "moekit/profile.h"
#include "moekit/tokenizer.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: moekit profile MODEL --text FILE --out P.json [options]\n"
            "       moekit profile MODEL --from P.json --target-bpw X [--out O.json] [--bits LIST]\n\n"
            "The first form runs MODEL over the calibration text (tokenized with MODEL's\n"
            "tokenizer, no special tokens; whole windows of --window tokens, each from an empty\n"
            "state, as `moekit eval` does) and records per MoE layer and expert the routing\n"
            "frequency and mean routing weight; then, for every routed expert projection and\n"
            "every other linear module (not norms, conv1d, A_log, dt_bias; routers stay 8-bit),\n"
            "the relative error ||W - dq(q(W))||^2 / ||W||^2 of MLX affine quantization at each\n"
            "candidate width and the bytes it takes. Sensitivity = error x usage (routed expert:\n"
            "its share of the layer's routing weight, freq x mean weight; other modules 1).\n\n"
            "The second form checks that P.json describes MODEL, picks one width per tensor to\n"
            "minimise sum(usage x error x params) within target-bpw x params total bits (scales\n"
            "and biases included), prints the achieved bpw against uniform widths and writes the\n"
            "per-module overrides (what `moekit quantize --target-bpw X --profile P` applies).\n\n"
            "  --text FILE        calibration text (UTF-8)\n"
            "  --tokens N         use the first N tokens of the file (default 20000)\n"
            "  --window W         tokens per independent window (default 256)\n"
            "  --bits LIST        candidate widths (default 2,3,4,5,6,8); with --from: the\n"
            "                     subset the allocation may use\n"
            "  --group-size G     affine group size: 32, 64 (default) or 128\n"
            "  --threads N        compute threads (default: all CPUs)\n"
            "  --out P            where to write the profile (or, with --from, the allocation)\n"
            "  --force            replace an existing --out file (never an input: a file of\n"
            "                     MODEL, --text or --from are always refused)\n"
            "  --from P.json      allocate from this profile instead of profiling (refused when\n"
            "                     it was measured on another model: config.json hash)\n"
            "  --target-bpw X     bits per weight to allocate, scales and biases included\n"
            "  --hessian H        also write H (a .safetensors file): the input second moments\n"
            "                     E[x x^T] of every linear module over the calibration windows (each\n"
            "                     routed expert on the tokens routed to it; lm_head included), what\n"
            "                     `moekit quantize --method gptq-opt|gptq-mse|... --hessian H` reads. Costs\n"
            "                     one more pass over the windows and 8 x cols^2 bytes of accumulator per\n"
            "                     distinct module input (q/k/v and gate/up share one; the tiny 4-layer\n"
            "                     model: ~47 MiB; a 48-layer, 128-expert, 2048-wide model: ~224 GB),\n"
            "                     held within --hessian-memory; experts must be resident (not with\n"
            "                     --memory-budget streaming)\n"
            "  --hessian-memory S the accumulators held at once never exceed S bytes (default 2G; e.g.\n"
            "                     512M). When all do not fit, the modules are taken in passes, each a\n"
            "                     run of modules (in file order) that fits, every window run again per\n"
            "                     pass and its tensors written before the next: the same file, time x\n"
            "                     passes. A single module over S is refused before any window\n"
            "  --stats            peak RSS and, when experts stream, the expert cache's counters\n"
            "                     on stderr at the end\n"
            "  --quiet            no progress on stderr\n"
            "  -h, --help         this text\n\n"
            "memory (the first form; the routing windows and the error pass both read experts\n"
            "through the expert cache when they stream, the error pass one group of a layer's\n"
            "experts at a time, so the budget holds whatever the model's size; --experts-per-token\n"
            "and --prefetch do not apply to a profile; threads x 2 MiB of error buffers are counted\n"
            "with the context):\n"
            "%s\n"
            "Exit status: 0 ok, 2 bad input, 1 internal failure.\n",
            mk_ecli_mem_help);
}

typedef struct prof_cli {
    const char *model, *text, *out, *from, *hessian;
    long long tokens;
    double target;
    bool has_bits, quiet, force, stats;
    mk_prof_opts po;
    mk_ecli_mem mm; /* --memory-budget and the expert-streaming flags */
} prof_cli;

/* "2,3,4" -> widths. false with a message in err on junk. */
static bool parse_bits(const char *s, int *bits, int *n, char *err, size_t errn) {
    *n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || (*end && *end != ',') || v < 0 || v > 64) {
            snprintf(err, errn, "--bits wants widths separated by commas, each from 0 to 64 (e.g. "
                     "2,3,4,6,8), got '%s'", s);
            return false;
        }
        if (*n == MK_PROF_MAX_BITS) {
            snprintf(err, errn, "--bits: more than %d widths in '%s'", MK_PROF_MAX_BITS, s);
            return false;
        }
        bits[(*n)++] = (int)v;
        p = *end ? end + 1 : end;
        if (*end && !*p) {
            snprintf(err, errn, "--bits: trailing comma in '%s'", s);
            return false;
        }
    }
    if (!*n) {
        snprintf(err, errn, "--bits: empty list");
        return false;
    }
    return true;
}


/* On a terminal one line rewritten in place; in a log about ten lines per
 * stage. */
static void progress(void *user, const char *stage, int64_t done, int64_t total) {
    (void)user;
    static int tty = -1;
    if (tty < 0)
        tty = isatty(2);
    int64_t every = total / (tty ? 100 : 10) + 1;
    if (done != total && done % every)
        return;
    fprintf(stderr, "%sprofile: %s %lld/%lld%s", tty ? "\r" : "",
            !strcmp(stage, "route")     ? "routing window"
            : !strcmp(stage, "hessian") ? "second-moment window"
                                        : "quantization error",
            (long long)done,
            (long long)total, !tty || done == total ? "\n" : "");
    fflush(stderr);
}

/* ---- summaries ---------------------------------------------------------------- */

static void print_profile(const mk_prof *p, const char *model, const char *out) {
    int nl = mk_prof_route_layers(p);
    printf("%s: %lld calibration tokens\n", model, (long long)mk_prof_tokens(p));
    for (int i = 0; i < nl; i++) {
        int layer, E;
        const double *f, *mw;
        mk_prof_route(p, i, &layer, &E, &f, &mw);
        double mn = INFINITY, mx = 0, sum = 0;
        int used = 0;
        for (int e = 0; e < E; e++) {
            mn = f[e] < mn ? f[e] : mn;
            mx = f[e] > mx ? f[e] : mx;
            sum += f[e];
            used += f[e] > 0;
        }
        printf("  layer %3d: %d/%d experts used, frequency min %.4f max %.4f (sum %.3f)\n", layer,
               used, E, mn, mx, sum);
    }
    const int *bits;
    int nb = mk_prof_bits(p, &bits);
    double werr[MK_PROF_MAX_BITS] = {0}, wsum = 0;
    uint64_t params = 0;
    size_t nk[4] = {0};
    for (size_t i = 0; i < mk_prof_count(p); i++) {
        const mk_prof_tensor *t = mk_prof_tensor_at(p, i);
        params += t->params;
        nk[t->kind]++;
        if (t->kind == MK_PROF_EXPERT || t->kind == MK_PROF_LINEAR) {
            for (int k = 0; k < nb; k++)
                werr[k] += t->err[k] * (double)t->params;
            wsum += (double)t->params;
        }
    }
    printf("  %zu tensors (%zu expert, %zu linear, %zu router at 8 bits, %zu float), %llu "
           "params\n  relative error ||W-dq(q(W))||^2/||W||^2, params-weighted, group %d:",
           mk_prof_count(p), nk[MK_PROF_EXPERT], nk[MK_PROF_LINEAR], nk[MK_PROF_ROUTER],
           nk[MK_PROF_FLOAT], (unsigned long long)params, mk_prof_group(p));
    for (int k = 0; k < nb; k++)
        printf(" %d:%.3g", bits[k], wsum > 0 ? werr[k] / wsum : 0);
    printf("\nwrote %s\n", out);
}

static void print_alloc(const mk_prof *p, const mk_alloc *a) {
    const int *bits;
    int nb = mk_prof_bits(p, &bits);
    printf("target %.4f bpw: achieved %.4f bpw (%llu bits over %llu params), objective %.6g "
           "(within %.3g of optimal)\n", a->target_bpw, a->achieved_bpw,
           (unsigned long long)a->total_bits, (unsigned long long)a->total_params, a->objective,
           a->gap_bound);
    printf("  bits  experts  linear\n");
    for (int k = 0; k < nb; k++) {
        size_t ne = 0, nl = 0;
        for (size_t i = 0; i < a->n_items; i++)
            if (!a->items[i].fixed && a->items[i].bits == bits[k])
                *(a->items[i].expert >= 0 ? &ne : &nl) += 1;
        printf("  %4d  %7zu  %6zu\n", bits[k], ne, nl);
    }
    for (int k = 0; k < nb; k++) {
        mk_alloc u;
        if (mk_alloc_uniform(p, bits[k], &u) != MK_OK)
            continue;
        printf("  uniform %d bits: %.4f bpw, objective %.6g\n", bits[k], u.achieved_bpw,
               u.objective);
        mk_alloc_free(&u);
    }
}

/* ---- modes ------------------------------------------------------------------------ */

static mk_status run_profile(prof_cli *o) {
    mk_model *m = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    mk_prof *p = NULL;
    mk_model_opts mo = {0};
    mk_status st = mk_ecli_mem_model_open(&o->mm, o->model, &mo, &m);
    if (st == MK_OK && o->mm.stream) {
        /* the routing windows' engine, and the error pass's per-thread row buffers
         * (a chunk of 2^18 float32 elements plus its quantized copy, under 2 MiB) */
        mk_engine_opts eo = {.threads = o->po.threads, .max_ctx = o->po.window};
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        uint64_t threads = o->po.threads > 0 ? (uint64_t)o->po.threads : cpus > 0 ? (uint64_t)cpus : 1;
        st = mk_ecli_mem_store(&o->mm, m, mk_engine_bytes(m, &eo), threads * (2ull << 20));
        o->po.store = o->mm.store;
    }
    if (st == MK_OK)
        st = mk_ecli_tokenize_file(mk_model_dir(m), mk_model_config(m)->vocab_size, o->text, &ids, &n);
    if (st == MK_OK && (int64_t)n < o->po.window)
        st = mk_err(MK_E_ARG, "--text %s: %zu tokens, fewer than one window of %lld", o->text, n,
                    (long long)o->po.window);
    if (st == MK_OK) {
        int64_t use = (int64_t)n < o->tokens ? (int64_t)n : o->tokens;
        o->po.text_name = o->text;
        st = mk_prof_run(m, ids, use, &o->po, &p);
    }
    if (st == MK_OK)
        st = mk_prof_save(p, o->out);
    if (st == MK_OK && o->hessian) {
        mk_prof_hess_info hi;
        int64_t use = (int64_t)n < o->tokens ? (int64_t)n : o->tokens;
        st = mk_prof_hessian(m, ids, use, &o->po, o->hessian, o->force, &hi);
        if (st == MK_OK)
            printf("wrote %s: input second moments of %zu modules (%zu distinct inputs, %.1f MiB of "
                   "accumulators, at most %.1f MiB held at once in %d pass%s; %zu modules no token reached) "
                   "over %lld tokens\n",
                   o->hessian, hi.modules, hi.distinct, (double)hi.accum_bytes / 1048576.0,
                   (double)hi.peak_bytes / 1048576.0, hi.passes, hi.passes == 1 ? "" : "es", hi.unreached,
                   (long long)hi.tokens);
    }
    if (st == MK_OK)
        print_profile(p, o->model, o->out);
    if (st == MK_OK && o->stats)
        mk_ecli_mem_stats(&o->mm, stderr);
    mk_prof_free(p);
    free(ids);
    mk_ecli_mem_free(&o->mm);
    mk_model_free(m);
    return st;
}

static mk_status run_alloc(prof_cli *o) {
    mk_model *m = NULL;
    mk_prof *p = NULL;
    mk_alloc a = {0};
    mk_status st = mk_prof_load(o->from, &p);
    if (st == MK_OK)
        st = mk_model_open(o->model, &m);
    if (st == MK_OK && (st = mk_prof_check_model(p, m)) != MK_OK)
        mk_err_wrap(st, "--from %s", o->from);
    if (st == MK_OK)
        st = mk_alloc_solve(p, o->target, o->has_bits ? o->po.bits : NULL,
                            o->has_bits ? o->po.n_bits : 0, &a);
    if (st == MK_OK)
        print_alloc(p, &a);
    if (st == MK_OK && o->out) {
        st = mk_alloc_save(&a, o->out);
        if (st == MK_OK)
            printf("wrote %s\n", o->out);
    }
    mk_alloc_free(&a);
    mk_prof_free(p);
    mk_model_free(m);
    return st;
}

int cmd_profile(int argc, char **argv) {
    static const struct option opts[] = {
        {"text", required_argument, 0, 'f'},       {"tokens", required_argument, 0, 'n'},
        {"window", required_argument, 0, 'w'},     {"bits", required_argument, 0, 'b'},
        {"group-size", required_argument, 0, 'g'}, {"threads", required_argument, 0, 't'},
        {"out", required_argument, 0, 'o'},        {"from", required_argument, 0, 'F'},
        {"target-bpw", required_argument, 0, 'T'}, {"quiet", no_argument, 0, 'q'},
        {"force", no_argument, 0, 'O'},            {"stats", no_argument, 0, 'S'},
        {"hessian", required_argument, 0, 'H'},    {"hessian-memory", required_argument, 0, 'M'},
        MK_ECLI_MEM_OPTS,
        {"help", no_argument, 0, 'h'},             {0, 0, 0, 0}};
    prof_cli o = {.tokens = 20000, .target = -1, .mm = {.cmd = "profile"}};
    bool mine;
    mk_prof_opts_init(&o.po);
    o.po.hess_budget = 2ull << 30; /* --hessian-memory's default */
    long long v;
    char err[256];
    int ch, rc;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'f': o.text = optarg; break;
        case 'o': o.out = optarg; break;
        case 'F': o.from = optarg; break;
        case 'H': o.hessian = optarg; break;
        case 'M': {
            unsigned long long sz;
            if ((rc = mk_flag_size("profile", "--hessian-memory", optarg, 1, &sz)) >= 0)
                return rc;
            o.po.hess_budget = sz;
            break;
        }
        case 'q': o.quiet = true; break;
        case 'O': o.force = true; break;
        case 'n':
            if ((rc = mk_flag_int("profile", "--tokens", optarg, 2, INT32_MAX, &o.tokens)) >= 0)
                return rc;
            break;
        case 'w':
            if ((rc = mk_flag_int("profile", "--window", optarg, 2, 1 << 20, &v)) >= 0)
                return rc;
            o.po.window = v;
            break;
        case 'g':
            if (!mk_ecli_int(optarg, 1, 1 << 20, &v) || (v != 32 && v != 64 && v != 128))
                return mk_cli_usage("profile", "--group-size wants 32, 64 or 128, got '%s'",
                                    optarg);
            o.po.group = (int)v;
            break;
        case 't':
            if ((rc = mk_flag_int("profile", "--threads", optarg, 1, 1024, &v)) >= 0)
                return rc;
            o.po.threads = (int)v;
            break;
        case 'b':
            if (!parse_bits(optarg, o.po.bits, &o.po.n_bits, err, sizeof err))
                return mk_cli_usage("profile", "%s", err);
            if (mk_prof_check_bits(o.po.bits, o.po.n_bits) != MK_OK)
                return mk_cli_usage("profile", "--bits %s: %s", optarg, mk_err_msg());
            o.has_bits = true;
            break;
        case 'T':
            if ((rc = mk_flag_real("profile", "--target-bpw", optarg, 0, 32, MK_FLAG_LO_OPEN, &o.target)) >= 0)
                return rc;
            break;
        case 'S': o.stats = true; break;
        case 'h': help(stdout); return 0;
        default:
            if ((rc = mk_ecli_mem_flag(&o.mm, ch, optarg, &mine)) >= 0)
                return rc;
            if (!mine)
                return mk_cli_usage("profile", "unknown option or missing value: %s",
                                    argv[optind - 1]);
        }
    }
    if (optind != argc - 1)
        return mk_cli_usage("profile", "expected exactly one MODEL argument");
    if (o.mm.experts_per_tok)
        return mk_cli_usage("profile", "--experts-per-token does not apply to a profile: it would "
                            "measure routing the model does not do");
    if (o.mm.prefetch)
        return mk_cli_usage("profile", "--prefetch guesses decode steps; a profile runs none");
    o.model = argv[optind];
    if (o.from) {
        if (o.text)
            return mk_cli_usage("profile", "--from allocates from a profile: --text is not used");
        if (o.target < 0)
            return mk_cli_usage("profile", "--from needs --target-bpw X");
    } else {
        if (!o.text)
            return mk_cli_usage("profile", "--text FILE is required");
        if (!o.out)
            return mk_cli_usage("profile", "--out P.json is required");
        if (o.target >= 0)
            return mk_cli_usage("profile", "--target-bpw allocates from a profile: use --from P");
        if (o.hessian && o.mm.stream)
            return mk_cli_usage("profile", "--hessian needs resident experts: drop --memory-budget / streaming");
        if (!o.quiet)
            o.po.progress = progress;
    }
    /* --out against every input and the model's files, before any work */
    mk_paths paths;
    mk_paths_init(&paths);
    mk_status st = mk_paths_add_input(&paths, o.model, "MODEL");
    if (st == MK_OK && o.text)
        st = mk_paths_add_input(&paths, o.text, "--text");
    if (st == MK_OK && o.from)
        st = mk_paths_add_input(&paths, o.from, "--from");
    if (st == MK_OK && o.out)
        st = mk_paths_check_file(&paths, o.out, "--out", o.force);
    if (st == MK_OK && o.hessian)
        st = mk_paths_check_file(&paths, o.hessian, "--hessian", o.force);
    mk_paths_free(&paths);
    if (st == MK_OK)
        st = o.from ? run_alloc(&o) : run_profile(&o);
    return st == MK_OK ? 0 : mk_cli_fail(st);
}

MK_CMD_REGISTER(profile, 45, "routing and quantization-error profile; --target-bpw bit allocation",
                cmd_profile)
