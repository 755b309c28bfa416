/* moekit logits: teacher-forced logits (and per-layer hidden states) of a
 * token sequence, as raw float32 files, for comparing against references. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_flags.h"
#include "cmd.h"
#include "dist_cli.h"
#include "engine_cli.h"
#include "moekit/crosscheck.h"
#include "moekit/kernels.h"
#include "io/outpath.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: moekit logits MODEL --ids 1,2,3 --out LOGITS.f32 [options]\n\n"
            "Run MODEL (a checkpoint directory) teacher-forced over the given token ids and\n"
            "write the logits of every position as raw little-endian float32 [n, vocab].\n\n"
            "  --ids LIST          token ids, separated by commas (required)\n"
            "  --out FILE          where to write the logits [n, vocab] (required)\n"
            "  --hidden-out FILE   also write hidden states [L+1, n, hidden] in transformers'\n"
            "                      output_hidden_states layout: entry 0 the embeddings, entry i\n"
            "                      the output of layer i-1, the last entry after the final norm\n"
            "  --force             replace existing --out/--hidden-out files (never a file of\n"
            "                      MODEL: outputs that are inputs are always refused)\n"
            "  --threads N         compute threads (default: all CPUs)\n"
            "  --backend B         where to compute: cpu (default) or cuda (GPU 0)\n"
            "  --verify            run the ids on the CPU and on --backend, compare the\n"
            "                      embeddings, every layer's output and the logits (relative L2),\n"
            "                      print each and name the first stage beyond --verify-tol; exit 1\n"
            "                      when one is (--out is then optional and not written). In a\n"
            "                      diverging layer both run again and its steps (projections,\n"
            "                      attention, router logits, routed experts, ...) are compared\n"
            "                      the same way, naming the first op beyond the tolerance. The\n"
            "                      CPU reference runs float activations whatever --act-int8\n"
            "                      says: the check is against the exact products. So does the\n"
            "                      run on --backend unless --act-int8 on (or MK_ACT_INT8=1) is\n"
            "                      given: its int8 kernels (the default for runs) differ from the\n"
            "                      exact products by ~2e-3 in the logits, as the CPU's do; give\n"
            "                      --act-int8 on with a --verify-tol above that to measure them.\n"
            "                      --out's logits follow --act-int8 as without --verify\n"
            "  --verify-tol X      relative L2 allowed per stage (default 1e-3, the fixtures' bound)\n"
            "  --prefill-chunk N   tokens per forward chunk, bounding activation memory\n"
            "                      (default 512)\n"
            "  --fp8-bf16          dequantize FP8 weights at load to bf16 copies (each product\n"
            "                      rounded to bf16, as transformers' FP8 loader does): exact\n"
            "                      match with transformers, 2 bytes/weight of RAM\n"
            "  --stats             print the expert store's counters (streaming) on stderr\n"
            "%s%s"
            "  -h, --help          this text\n\n"
            "Exit status: 0 ok (with --verify: the backends agree), 1 --verify found a divergence\n"
            "or an internal failure, 2 bad input (unreadable model, bad ids).\n",
            mk_ecli_mem_help, mk_ecli_dist_help);
}

int cmd_logits(int argc, char **argv) {
    static const struct option opts[] = {{"ids", required_argument, 0, 'i'},
                                         {"out", required_argument, 0, 'o'},
                                         {"hidden-out", required_argument, 0, 'H'},
                                         {"threads", required_argument, 0, 't'},
                                         {"backend", required_argument, 0, 'B'},
                                         {"verify", no_argument, 0, 'V'},
                                         {"verify-tol", required_argument, 0, 'T'},
                                         {"prefill-chunk", required_argument, 0, 'c'},
                                         {"fp8-bf16", no_argument, 0, 'F'},
                                         {"force", no_argument, 0, 'f'},
                                         {"stats", no_argument, 0, 'a'},
                                         MK_ECLI_MEM_OPTS,
                                         MK_ECLI_DIST_OPTS,
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *ids_s = NULL, *out = NULL, *hout = NULL, *backend = "cpu";
    long long threads = 0, chunk = 0;
    mk_model_opts mo = {0};
    bool force = false, stats = false, verify = false, mine;
    double vtol = 1e-3;
    mk_ecli_mem mm = {.cmd = "logits"};
    mk_ecli_dist dd = {.cmd = "logits"};
    int ch, rc;
    optind = 1;
    opterr = 0; /* report unknown options ourselves, in one line */
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'i': ids_s = optarg; break;
        case 'o': out = optarg; break;
        case 'H': hout = optarg; break;
        case 't':
            if ((rc = mk_flag_int("logits", "--threads", optarg, 1, 1024, &threads)) >= 0)
                return rc;
            break;
        case 'c':
            if ((rc = mk_flag_int("logits", "--prefill-chunk", optarg, 1, 1 << 20, &chunk)) >= 0)
                return rc;
            break;
        case 'F': mo.fp8_to_bf16 = true; break;
        case 'B':
            if (!mk_ecli_backend_name(optarg))
                return mk_cli_usage("logits", "--backend: expected cpu or cuda, found '%s'", optarg);
            backend = optarg;
            break;
        case 'f': force = true; break;
        case 'a': stats = true; break;
        case 'V': verify = true; break;
        case 'T':
            if ((rc = mk_flag_real("logits", "--verify-tol", optarg, 0, 1e9, 0, &vtol)) >= 0)
                return rc;
            break;
        case 'h': help(stdout); return 0;
        default:
            if ((rc = mk_ecli_mem_flag(&mm, ch, optarg, &mine)) >= 0)
                return rc;
            if (mine)
                break;
            if ((rc = mk_ecli_dist_flag(&dd, ch, optarg, &mine)) >= 0)
                return rc;
            if (mine)
                break;
            return mk_cli_usage("logits", "unknown option or missing value: %s", argv[optind - 1]);
        }
    }
    if (optind != argc - 1)
        return mk_cli_usage("logits", "expected exactly one MODEL argument");
    if (!ids_s || (!out && !verify))
        return mk_cli_usage("logits", "--ids and --out are required (--out is optional with --verify)");
    /* under MPI: rank 0 goes on, the others serve its steps */
    mk_status st = mk_ecli_dist_start(&dd, &mm);
    if (st == MK_OK && dd.d && (verify || strcmp(backend, "cpu")))
        st = mk_err(MK_E_UNSUPPORTED, "logits: --verify and --backend cuda do not run under MPI yet");
    if (st != MK_OK)
        return mk_cli_fail(st);
    if (mk_ecli_dist_worker(&dd)) {
        mk_engine_opts weo = {.threads = (int)threads};
        return mk_ecli_dist_work(&dd, argv[optind], &mo, &mm, &weo);
    }
    /* outputs against the model's files and each other, before loading */
    mk_paths paths;
    mk_paths_init(&paths);
    st = mk_paths_add_input(&paths, argv[optind], "MODEL");
    if (st == MK_OK && out)
        st = mk_paths_check_file(&paths, out, "--out", force);
    if (st == MK_OK && hout)
        st = mk_paths_check_file(&paths, hout, "--hidden-out", force);
    mk_paths_free(&paths);
    if (st != MK_OK)
        return mk_cli_fail(st);
    int32_t *ids;
    int64_t n;
    st = mk_ecli_ids(ids_s, &ids, &n);
    if (st != MK_OK)
        return mk_cli_fail(st);
    if (n == 0) {
        free(ids);
        return mk_cli_usage("logits", "--ids is empty");
    }
    /* --verify without an explicit --act-int8: both runs on float activations (the help says why) */
    const int int8_was = mk_kernels_int8_setting(), pre8_was = mk_kernels_prefill_int8_setting();
    if (verify && int8_was < 0) { /* put back after the check: --out's logits are the user's setting's */
        mk_kernels_set_int8(false);
        if (pre8_was < 0)
            mk_kernels_set_prefill_int8(false);
    }
    mk_engine_opts eo = {.threads = (int)threads, .max_ctx = n, .prefill_chunk = (int)chunk};
    mk_model *m = NULL;
    mk_engine *e = NULL;
    float *logits = NULL, *hidden = NULL;
    mk_backend *be = NULL;
    st = mk_ecli_backend(backend, &mm, &be);
    eo.backend = be;
    mm.plan_ctx = n;
    mm.plan_chunk = (int)chunk;
    mm.device_backend = strcmp(backend, "cpu") != 0;
    if (st == MK_OK)
        st = mk_ecli_mem_model_open(&mm, argv[optind], &mo, &m);
    if (st == MK_OK)
        st = mk_ecli_dist_lead(&dd, m, &eo);
    if (st == MK_OK)
        st = mk_ecli_mem_engine(&mm, m, &eo, &e);
    int diverged = 0;
    if (st == MK_OK && verify) { /* CPU vs --backend, stage by stage */
        mk_xcheck x;
        st = mk_xcheck_run(m, NULL, be, &eo, ids, n, vtol, &x);
        for (int i = 0; st == MK_OK && i < x.stages; i++) {
            char name[96];
            fprintf(stderr, "verify: %-40s rel L2 %.3g%s\n", mk_xcheck_stage_name(&x, i, name, sizeof name),
                    x.rel[i], i == x.first_bad ? "   <- first beyond --verify-tol" : "");
        }
        if (st == MK_OK && x.ops > 0) { /* the diverging layer, step by step */
            fprintf(stderr, "verify: inside layer %d, step by step:\n", x.layer);
            for (int i = 0; i < x.ops; i++) {
                if (x.op_rel[i] < 0)
                    fprintf(stderr, "verify:   %-38s (inside a fused %s step: not compared)\n", x.op[i], backend);
                else
                    fprintf(stderr, "verify:   %-38s rel L2 %.3g%s\n", x.op[i], x.op_rel[i],
                            i == x.first_bad_op ? "   <- first beyond --verify-tol" : "");
            }
        }
        if (st == MK_OK) {
            char name[96], op[128] = "";
            diverged = x.first_bad >= 0;
            if (x.first_bad_op >= 0)
                snprintf(op, sizeof op, ", step '%s'", x.op[x.first_bad_op]);
            else if (x.ops > 0)
                snprintf(op, sizeof op, " (every named step within it agrees: the residual adds)");
            fprintf(stderr, "verify: %s backend %s the CPU within %.3g per stage%s%s%s; top token differs at %d "
                    "of %lld positions\n", backend, diverged ? "DIVERGES from" : "matches", vtol,
                    diverged ? ", first at " : "",
                    diverged ? mk_xcheck_stage_name(&x, x.first_bad, name, sizeof name) : "", op, x.argmax_diff,
                    (long long)n);
            mk_xcheck_free(&x);
        }
        mk_kernels_restore_int8(int8_was);
        mk_kernels_restore_prefill_int8(pre8_was);
    }
    if (st == MK_OK && out) {
        const mk_config *c = mk_model_config(m);
        logits = malloc((size_t)n * (size_t)c->vocab_size * sizeof(float));
        if (hout)
            hidden = malloc((size_t)(c->num_layers + 1) * (size_t)n * (size_t)c->hidden_size *
                            sizeof(float));
        if (!logits || (hout && !hidden))
            st = mk_err(MK_E_NOMEM, "no memory for %lld x %d logits", (long long)n,
                        c->vocab_size);
        if (st == MK_OK)
            st = mk_engine_forward(e, ids, n, MK_LOGITS_ALL, logits, hidden);
        if (st == MK_OK)
            st = mk_ecli_write(out, logits, (size_t)n * (size_t)c->vocab_size * sizeof(float), force);
        if (st == MK_OK && hout)
            st = mk_ecli_write(hout, hidden, (size_t)(c->num_layers + 1) * (size_t)n *
                                                 (size_t)c->hidden_size * sizeof(float), force);
    }
    if (st == MK_OK && stats)
        mk_ecli_mem_stats(&mm, stderr);
    free(ids);
    free(logits);
    free(hidden);
    mk_engine_free(e);
    mk_ecli_mem_free(&mm);
    mk_backend_free(be); /* after the engine that borrowed it */
    mk_model_free(m);
    return st != MK_OK ? mk_cli_fail(st) : diverged ? 1 : 0;
}

MK_CMD_REGISTER(logits, 41, "teacher-forced logits / hidden states of token ids (float32)",
                cmd_logits)
