/* moekit logits: teacher-forced logits (and per-layer hidden states) of a
 * token sequence, as raw float32 files, for comparing against references. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_flags.h"
#include "cmd.h"
#include "engine_cli.h"
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
            "  --prefill-chunk N   tokens per forward chunk, bounding activation memory\n"
            "                      (default 512)\n"
            "  --fp8-bf16          dequantize FP8 weights at load to bf16 copies (each product\n"
            "                      rounded to bf16, as transformers' FP8 loader does): exact\n"
            "                      match with transformers, 2 bytes/weight of RAM\n"
            "  --stats             print the expert store's counters (streaming) on stderr\n"
            "%s"
            "  -h, --help          this text\n\n"
            "Exit status: 0 ok, 2 bad input (unreadable model, bad ids), 1 internal failure.\n",
            mk_ecli_mem_help);
}

int cmd_logits(int argc, char **argv) {
    static const struct option opts[] = {{"ids", required_argument, 0, 'i'},
                                         {"out", required_argument, 0, 'o'},
                                         {"hidden-out", required_argument, 0, 'H'},
                                         {"threads", required_argument, 0, 't'},
                                         {"backend", required_argument, 0, 'B'},
                                         {"prefill-chunk", required_argument, 0, 'c'},
                                         {"fp8-bf16", no_argument, 0, 'F'},
                                         {"force", no_argument, 0, 'f'},
                                         {"stats", no_argument, 0, 'a'},
                                         MK_ECLI_MEM_OPTS,
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *ids_s = NULL, *out = NULL, *hout = NULL, *backend = "cpu";
    long long threads = 0, chunk = 0;
    mk_model_opts mo = {0};
    bool force = false, stats = false, mine;
    mk_ecli_mem mm = {.cmd = "logits"};
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
        case 'h': help(stdout); return 0;
        default:
            if ((rc = mk_ecli_mem_flag(&mm, ch, optarg, &mine)) >= 0)
                return rc;
            if (mine)
                break;
            return mk_cli_usage("logits", "unknown option or missing value: %s", argv[optind - 1]);
        }
    }
    if (optind != argc - 1)
        return mk_cli_usage("logits", "expected exactly one MODEL argument");
    if (!ids_s || !out)
        return mk_cli_usage("logits", "--ids and --out are required");
    /* outputs against the model's files and each other, before loading */
    mk_paths paths;
    mk_paths_init(&paths);
    mk_status st = mk_paths_add_input(&paths, argv[optind], "MODEL");
    if (st == MK_OK)
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
    mk_engine_opts eo = {.threads = (int)threads, .max_ctx = n, .prefill_chunk = (int)chunk};
    mk_model *m = NULL;
    mk_engine *e = NULL;
    float *logits = NULL, *hidden = NULL;
    mk_backend *be = NULL;
    st = mk_ecli_backend(backend, &be);
    eo.backend = be;
    if (st == MK_OK)
        st = mk_ecli_mem_model_open(&mm, argv[optind], &mo, &m);
    if (st == MK_OK)
        st = mk_ecli_mem_engine(&mm, m, &eo, &e);
    if (st == MK_OK) {
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
    return st == MK_OK ? 0 : mk_cli_fail(st);
}

MK_CMD_REGISTER(logits, 41, "teacher-forced logits / hidden states of token ids (float32)",
                cmd_logits)
