/* moekit quantize: any checkpoint moekit reads -> the MLX layout with
 * MLX-exact quantization (affine 2-8 bits, mxfp4, mxfp8, nvfp4), routers
 * protected at 8 bits, per-module widths from recipes, overrides or a
 * --target-bpw allocation over a profile; streaming in bounded memory.
 *
 * The library does the work (mk_conv_run with a mk_qjob, see
 * include/moekit/convert.h); this file parses flags, turns a profile and a
 * target into per-module entries (include/moekit/profile.h), and prints the
 * per-module table and the totals. */
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_flags.h"
#include "cli_esc.h"
#include "cmd.h"
#include "io/outpath.h"
#include "moekit/convert.h"
#include "moekit/profile.h"
#include "moekit/quant.h"
#include "moekit/quant_opt.h"

static void help(FILE *f) {
    fprintf(
        f,
        "usage: moekit quantize SRC DST [options]\n\n"
        "Quantize checkpoint SRC into DST in the MLX layout (what `moekit convert --to mlx` writes, with\n"
        "quantized modules), bit-identical to MLX's own quantizer (mx.quantize on the CPU). SRC is any\n"
        "checkpoint moekit reads: HF per-expert, fused or vision-language, FP8 block, compressed-tensors\n"
        "INT4, MLX float or quantized. Modules already quantized in SRC (compressed-tensors INT4, as Kimi's\n"
        "quantization-aware checkpoints, and MLX affine/mxfp4/mxfp8/nvfp4) are passed through byte for\n"
        "byte as `convert --to mlx` writes them, never requantized; FP8 block sources are dequantized and\n"
        "quantized.\n"
        "SRC may also be a bare .safetensors file with no config: every float tensor of 2+ dims whose\n"
        "last dim the group size divides is quantized (X.weight -> X.weight/.scales/.biases, any other\n"
        "name N -> N, N.scales, N.biases), every other tensor is copied byte for byte; DST then holds\n"
        "model.safetensors and a config.json with only the quantization blocks.\n\n"
        "What is quantized (as mlx-lm does): the weight of every Linear, Embedding (embed_tokens) and\n"
        "SwitchLinear (stacked experts) whose input dim the group size divides, lm_head included.\n"
        "Routers (mlp.gate) and shared_expert_gate stay affine 8-bit g64 under every choice below (a\n"
        "router read at the wrong width routes to the wrong experts); DeepSeek's router is not a Linear\n"
        "in mlx-lm and stays float. Norms, A_log, dt_bias, conv1d and e_score_correction_bias stay float;\n"
        "so do modules whose input dim the group does not divide (listed in the report).\n\n"
        "  --bits N              affine 2,3,4,5,6,8 (default 4); mxfp4/nvfp4 4; mxfp8 8\n"
        "  --group-size N        affine 32, 64 (default) or 128; mxfp4/mxfp8 32; nvfp4 16\n"
        "  --mode M              affine (default), mxfp4, mxfp8 or nvfp4\n"
        "  --recipe R            mlx-lm mixed recipe: mixed_2_6, mixed_3_4, mixed_3_6, mixed_4_6 (low/high\n"
        "                        bits; high for v_proj/v_a_proj/v_b_proj and down_proj in the first and\n"
        "                        last eighth of the layers and every third layer between, and lm_head)\n"
        "  --override 'REGEX=BITS[:GROUP[:MODE]]'\n"
        "                        per-module width for MLX module paths matching REGEX (PCRE2, searched\n"
        "                        anywhere in the path, e.g. 'layers\\.0\\..*down_proj=8'); BITS 'float'\n"
        "                        keeps the module in float; GROUP and MODE default to --group-size and\n"
        "                        --mode; repeatable, later overrides win; routers are not affected\n"
        "  --target-bpw X --profile P\n"
        "                        pick per-module (and per-expert) widths from profile P (`moekit profile`)\n"
        "                        minimising expected error within X bits per weight (scales and biases\n"
        "                        included; over the profiled modules); prints the achieved bpw. Routed\n"
        "                        experts whose widths differ within a layer are written as separate\n"
        "                        modules mlp.experts.<e>.<proj> (moekit's engine loads them; mlx-lm loads\n"
        "                        only stacked switch_mlp, which uniform layers keep)\n"
        "  --method M --hessian H\n"
        "                        how codes, scales and biases are chosen inside the same MLX affine format\n"
        "                        (stock mlx-lm loads every method unchanged): rtn (default) MLX's own\n"
        "                        round-to-nearest, byte-exact; mse per-group scale/bias search weighted by\n"
        "                        the inputs' second moments; gptq error-compensating rounding (GPTQ: each\n"
        "                        column's error propagated to the later columns through the Cholesky factor\n"
        "                        of H^-1); gptq-mse both; gptq-act gptq-mse in decreasing-H_jj column\n"
        "                        order; gptq-opt gptq-mse, its codes improved by coordinate descent on the\n"
        "                        output error, then every scale and bias of a row refitted by least\n"
        "                        squares on that error and the codes re-chosen, up to 4 alternations,\n"
        "                        each kept only when the error falls (the best measured;\n"
        "                        about 2x gptq-mse's time, and H kept beside the factor: 2 x cols^2 floats\n"
        "                        per module in flight). H is the statistics file of `moekit profile\n"
        "                        --hessian` (per module, each routed expert on its own tokens); modules it\n"
        "                        lacks (experts never routed to) get the unweighted search. Affine modules\n"
        "                        only. Memory: the factor of each module (expert) being quantized, cols^2\n"
        "                        floats, freed when its rows are done: at most threads x cols^2 x 4 bytes\n"
        "                        more than rtn. Time: gptq is O(rows x cols^2) per module\n"
        "  --damp D              GPTQ damping, a fraction of the mean diagonal of H (default 0.01)\n"
        "  --pack-experts        each routed expert's weight/scales/biases as one contiguous block, 4 KiB-\n"
        "                        aligned when sizes allow: one read per expert streaming (mlx-lm: deepseek only)\n"
        "  --class-weights none|learned|CLASS=F,...\n"
        "                        with --target-bpw: weigh each module class's error in the allocation\n"
        "                        (none, the default: all alike; learned: attn (attention/linear-attention)\n"
        "                        and down (down_proj) and embed x2, shared (shared expert gate/up) x0.65,\n"
        "                        lm_head x1/8, other x1, from KL measured one class at a time on\n"
        "                        tiny-qwen35moe; or explicit factors, e.g. attn=3,lm_head=0.1)\n"
        "  --alloc-out F         with --target-bpw: also write the allocation JSON to F (an existing F\n"
        "                        only with --force; never one of the inputs)\n"
        "  --dtype bf16|f32      dtype of float tensors and of scales/biases (default: as stored; the\n"
        "                        quantizer reads the weights in this dtype). f16 is refused for Gated\n"
        "                        DeltaNet models (qwen3_next, qwen3_5_moe) unless --force-f16\n"
        "  --max-memory SIZE     peak working memory (default 1G). The command never holds a whole\n"
        "                        tensor: rows are read, quantized and written in chunks sized from this\n"
        "                        bound (stacked experts slice by slice, tensors of any size in chunks),\n"
        "                        so peak RSS stays under SIZE plus about 16 MiB for the program and its\n"
        "                        plan at any model size. Parts computed ahead (scales/biases, which the\n"
        "                        safetensors order puts after the weights) wait in a spill file in\n"
        "                        DST.partial/, on disk, not in memory. A bound too small for the\n"
        "                        widest row is refused with the least SIZE that works\n"
        "  --threads N           worker threads (default: all cores)\n"
        "  --report F            write the per-module report as JSON to F (an existing F only with\n"
        "                        --force; never one of the inputs)\n"
        "  --force               replace an existing DST that is a checkpoint or a moekit output\n"
        "                        (*.safetensors, a moekit journal, or config.json with no\n"
        "                        subdirectory), and existing --report/--alloc-out files; any other\n"
        "                        directory, SRC itself, a directory holding SRC or --profile, / and\n"
        "                        the home directory are always refused\n"
        "  --allow-nonfinite     quantize weights holding NaN/Inf (default: an error naming the tensor)\n"
        "  --force-f16           allow --dtype f16 for Gated DeltaNet models\n"
        "  --keep-vision         keep the vision tower (float), as convert --keep-vision\n"
        "  --keep-mtp            keep multi-token-prediction weights (quantized like the rest)\n"
        "  --shard-size SIZE     output shard size (default 5G)\n"
        "  --quiet               no progress lines and no per-module table\n"
        "  --stats               print counters and the peak resident memory (VmHWM) on stdout\n\n"
        "Output: a table on stdout (module, mode, bits, group, params, bytes, bits per weight, relative\n"
        "error ||W - dq(q(W))|| / ||W||) and totals: bits per weight over the quantized modules, over all\n"
        "linear modules (float ones included) and over the whole checkpoint (mlx-lm's figure).\n"
        "config.json gets \"quantization\" and an identical \"quantization_config\": the defaults plus one\n"
        "entry per module that differs from them (routers always). DST is built in DST.partial/ and\n"
        "appears only when complete; after a crash, rerunning the same command resumes. Every output\n"
        "path is checked before any work; one moekit at a time writes a DST (a second one is refused,\n"
        "naming the first one's pid).\n"
        "exit: 0 ok, 1 internal error, 2 bad input (a NaN weight, bits or group the mode does not\n"
        "support, an existing DST, ...: one line naming the file, tensor or flag; no DST is left)\n");
}

typedef struct qcli {
    const char *src, *dst, *report, *profile, *alloc_out, *hessian;
    mk_qalgo method;
    double damp;
    const char *class_weights;
    const char **ovs;
    int nov;
    const char *recipe;
    long bits, group;
    mk_qmode mode;
    bool have_mode, quiet, stats, allow_nonfinite;
    double target;
    mk_conv_opts co;
} qcli;

/* --target-bpw: solve, set every module's width, default to the widest-used width. */
static mk_status apply_alloc(const qcli *c, mk_qjob *job, double *achieved) {
    mk_prof *prof = NULL;
    mk_alloc a;
    memset(&a, 0, sizeof a);
    MK_TRY(mk_prof_load(c->profile, &prof));
    mk_status st = mk_prof_class_weights(prof, c->class_weights ? c->class_weights : "none");
    if (st == MK_OK)
        st = mk_alloc_solve(prof, c->target, NULL, 0, &a);
    if (st == MK_OK && c->alloc_out)
        st = mk_alloc_save(&a, c->alloc_out);
    /* the config default: the width holding the most params */
    uint64_t by_bits[9] = {0};
    for (size_t i = 0; st == MK_OK && i < a.n_items; i++) {
        const mk_alloc_item *it = &a.items[i];
        const mk_prof_tensor *t = mk_prof_find(prof, it->module);
        if (!it->fixed && it->bits > 0 && it->bits <= 8 && t)
            by_bits[it->bits] += t->params;
    }
    int def = 4;
    for (int b = 2; b <= 8; b++)
        if (by_bits[b] > by_bits[def])
            def = b;
    if (st == MK_OK)
        st = mk_qjob_set_default(job, MK_QMODE_AFFINE, def, mk_prof_group(prof));
    for (size_t i = 0; st == MK_OK && i < a.n_items; i++)
        st = mk_qjob_set_module(job, a.items[i].module, MK_QMODE_AFFINE, a.items[i].bits, a.items[i].group);
    *achieved = a.achieved_bpw;
    if (st == MK_OK && !c->quiet)
        fprintf(stderr, "quantize: allocation for %.4f bpw over %zu profiled modules: %.4f bpw expected\n",
                c->target, a.n_items, a.achieved_bpw);
    mk_alloc_free(&a);
    mk_prof_free(prof);
    return st;
}

/* "%.{prec}f" or "%.{prec}e" of v, "-" when not finite. */
static void fmt_num(char *b, size_t n, double v, bool sci) {
    if (!isfinite(v))
        snprintf(b, n, "-");
    else if (sci)
        snprintf(b, n, "%.3e", v);
    else
        snprintf(b, n, "%.3f", v);
}

static void print_table(const mk_qjob *job) {
    size_t w = 6;
    for (size_t i = 0; i < mk_qjob_count(job); i++) {
        size_t l = strlen(mk_cli_esc(mk_qjob_module_at(job, i)->path));
        w = l > w ? l : w;
    }
    printf("%-*s %-6s %4s %5s %12s %12s %6s %9s  %s\n", (int)w, "module", "mode", "bits", "group", "params", "bytes",
           "bpw", "rel_err", "note");
    for (size_t i = 0; i < mk_qjob_count(job); i++) {
        const mk_qjob_module *m = mk_qjob_module_at(job, i);
        char bpw[16], err[16];
        fmt_num(bpw, sizeof bpw, m->params ? 8.0 * (double)m->bytes / (double)m->params : NAN, false);
        fmt_num(err, sizeof err, m->rel_err, true);
        if (m->quantized)
            printf("%-*s %-6s %4d %5d %12llu %12llu %6s %9s  %s\n", (int)w, mk_cli_esc(m->path),
                   mk_qmode_name(m->mode), m->bits, m->group, (unsigned long long)m->params,
                   (unsigned long long)m->bytes, bpw, err, m->note ? mk_cli_esc(m->note) : "");
        else
            printf("%-*s %-6s %4s %5s %12llu %12llu %6s %9s  %s\n", (int)w, mk_cli_esc(m->path), "float", "-", "-",
                   (unsigned long long)m->params, (unsigned long long)m->bytes, bpw, err,
                   m->note ? mk_cli_esc(m->note) : "");
    }
}

static void print_totals(const mk_qjob *job, bool alloc, double expected) {
    const mk_qjob_totals *t = mk_qjob_totals_of(job);
    printf("quantized modules: %llu (%llu params, %llu bytes): %.4f bits per weight, relative error %.4e\n",
           (unsigned long long)t->n_quantized, (unsigned long long)t->params_q, (unsigned long long)t->bytes_q,
           t->bpw_q, t->rel_err);
    printf("linear modules (%llu kept in float): %.4f bits per weight\n", (unsigned long long)t->n_float,
           t->bpw_lin);
    printf("whole checkpoint: %llu params, %llu bytes: %.4f bits per weight\n", (unsigned long long)t->params_all,
           (unsigned long long)t->bytes_all, t->bpw_all);
    if (t->n_calibrated + t->n_uncalibrated)
        printf("calibrated: %llu modules/experts with input statistics, %llu without (unweighted search)\n",
               (unsigned long long)t->n_calibrated, (unsigned long long)t->n_uncalibrated);
    if (alloc)
        printf("achieved bpw %.4f over the linear modules (allocation expected %.4f over the profiled ones)\n",
               t->bpw_lin, expected);
}

static void print_stats(const mk_conv_stats *st) {
    printf("tensors %llu\nbytes_out %llu\nbytes_computed %llu\nbytes_copied %llu\nshards %d\nshards_resumed %d\n"
           "threads %d\nchunk_elems %llu\nseconds %.3f\npeak_rss_bytes %llu\nsanitizer %d\n"
           "experts_packed %llu\nexperts_aligned %llu\n",
           (unsigned long long)st->tensors_out, (unsigned long long)st->bytes_out,
           (unsigned long long)st->bytes_computed, (unsigned long long)st->bytes_copied, st->shards,
           st->shards_resumed, st->threads, (unsigned long long)st->chunk_elems, st->seconds,
           (unsigned long long)mk_cli_peak_rss(), mk_cli_sanitized(), (unsigned long long)st->experts_packed,
           (unsigned long long)st->experts_aligned);
}

enum { O_BITS = 256, O_GROUP, O_MODE, O_RECIPE, O_OVERRIDE, O_TARGET, O_PROFILE, O_ALLOC_OUT, O_DTYPE, O_MEM,
       O_THREADS, O_REPORT, O_FORCE, O_NONFINITE, O_F16, O_VISION, O_MTP, O_SHARD, O_QUIET, O_STATS, O_PACK,
       O_METHOD, O_HESSIAN, O_DAMP, O_CLASSW };

static int parse_args(int argc, char **argv, qcli *c) {
    static const struct option opts[] = {
        {"bits", required_argument, 0, O_BITS},         {"group-size", required_argument, 0, O_GROUP},
        {"mode", required_argument, 0, O_MODE},         {"recipe", required_argument, 0, O_RECIPE},
        {"override", required_argument, 0, O_OVERRIDE}, {"target-bpw", required_argument, 0, O_TARGET},
        {"profile", required_argument, 0, O_PROFILE},   {"alloc-out", required_argument, 0, O_ALLOC_OUT},
        {"dtype", required_argument, 0, O_DTYPE},       {"max-memory", required_argument, 0, O_MEM},
        {"threads", required_argument, 0, O_THREADS},   {"report", required_argument, 0, O_REPORT},
        {"force", no_argument, 0, O_FORCE},             {"allow-nonfinite", no_argument, 0, O_NONFINITE},
        {"force-f16", no_argument, 0, O_F16},           {"keep-vision", no_argument, 0, O_VISION},
        {"keep-mtp", no_argument, 0, O_MTP},            {"shard-size", required_argument, 0, O_SHARD},
        {"quiet", no_argument, 0, O_QUIET},             {"stats", no_argument, 0, O_STATS},
        {"pack-experts", no_argument, 0, O_PACK},       {"help", no_argument, 0, 'h'},
        {"method", required_argument, 0, O_METHOD},     {"hessian", required_argument, 0, O_HESSIAN},
        {"damp", required_argument, 0, O_DAMP},         {"class-weights", required_argument, 0, O_CLASSW},
        {0, 0, 0, 0}};
    int o;
    long v;
    long long ll;
    int rc;
    unsigned long long sz;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'h': help(stdout); return 0;
        case O_BITS:
            if ((rc = mk_flag_int("quantize", "--bits", optarg, 1, 64, &ll)) >= 0)
                return rc;
            c->bits = (long)ll;
            break;
        case O_GROUP:
            if ((rc = mk_flag_int("quantize", "--group-size", optarg, 1, 1 << 20, &ll)) >= 0)
                return rc;
            c->group = (long)ll;
            break;
        case O_MODE:
            if (!mk_qmode_parse(optarg, &c->mode))
                return mk_cli_usage("quantize", "--mode '%s': expected affine, mxfp4, mxfp8 or nvfp4", optarg);
            c->have_mode = true;
            break;
        case O_RECIPE: c->recipe = optarg; break;
        case O_OVERRIDE: c->ovs[c->nov++] = optarg; break;
        case O_TARGET:
            if ((rc = mk_flag_real("quantize", "--target-bpw", optarg, 0, 32, MK_FLAG_LO_OPEN, &c->target)) >= 0)
                return rc;
            break;
        case O_PROFILE: c->profile = optarg; break;
        case O_HESSIAN: c->hessian = optarg; break;
        case O_CLASSW:
            c->class_weights = optarg; /* checked by mk_prof_class_weights */
            break;
        case O_METHOD:
            if (mk_qalgo_parse(optarg, &c->method) != MK_OK)
                return mk_cli_usage("quantize", "--method %s: expected rtn, mse, gptq, gptq-mse, gptq-act or gptq-opt", optarg);
            break;
        case O_DAMP:
            if ((rc = mk_flag_real("quantize", "--damp", optarg, 0, 10, 0, &c->damp)) >= 0)
                return rc;
            break;
        case O_ALLOC_OUT: c->alloc_out = optarg; break;
        case O_DTYPE:
            if (!mk_cli_parse_dtype(optarg, &c->co.dtype))
                return mk_cli_usage("quantize", "--dtype '%s': expected bf16, f16 or f32", optarg);
            break;
        case O_MEM:
            if ((rc = mk_flag_size("quantize", "--max-memory", optarg, 1, &sz)) >= 0)
                return rc;
            c->co.max_memory = sz;
            break;
        case O_THREADS:
            if ((rc = mk_flag_int("quantize", "--threads", optarg, 1, 1024, &ll)) >= 0)
                return rc;
            v = (long)ll;
            c->co.threads = (int)v;
            break;
        case O_REPORT: c->report = optarg; break;
        case O_FORCE: c->co.force = true; break;
        case O_NONFINITE: c->allow_nonfinite = true; break;
        case O_F16: c->co.force_f16 = true; break;
        case O_VISION: c->co.keep_vision = true; break;
        case O_MTP: c->co.keep_mtp = true; break;
        case O_SHARD:
            if ((rc = mk_flag_size("quantize", "--shard-size", optarg, 1, &sz)) >= 0)
                return rc;
            c->co.shard_size = sz;
            break;
        case O_QUIET: c->quiet = c->co.quiet = true; break;
        case O_STATS: c->stats = true; break;
        case O_PACK: c->co.pack_experts = true; break;
        default: help(stderr); return 2;
        }
    }
    if (optind + 2 != argc)
        return mk_cli_usage("quantize", "expected SRC and DST");
    c->src = argv[optind];
    c->dst = argv[optind + 1];
    if ((c->target > 0) != (c->profile != NULL))
        return mk_cli_usage("quantize", "--target-bpw and --profile go together");
    if (c->target > 0 && (c->bits || c->group || c->have_mode || c->recipe))
        return mk_cli_usage("quantize", "--target-bpw chooses the widths: drop --bits, --group-size, --mode and "
                                        "--recipe (the group size is the profile's)");
    if (c->recipe && c->bits)
        return mk_cli_usage("quantize", "--recipe %s sets the bits: drop --bits", c->recipe);
    if (c->alloc_out && c->target <= 0)
        return mk_cli_usage("quantize", "--alloc-out needs --target-bpw");
    if (c->class_weights && c->target <= 0)
        return mk_cli_usage("quantize", "--class-weights weighs the allocation: it needs --target-bpw");
    if (mk_qalgo_needs_stats(c->method) && !c->hessian)
        return mk_cli_usage("quantize", "--method %s needs --hessian H (from `moekit profile --hessian H`)",
                            mk_qalgo_name(c->method));
    if (c->hessian && !mk_qalgo_needs_stats(c->method))
        return mk_cli_usage("quantize", "--hessian is read by --method mse, gptq, gptq-mse, gptq-act or gptq-opt (the method is rtn)");
    return -1;
}

/* Every output path against every input and each other, before any work:
 * a run that can only fail at its end (the report) is refused now. */
static mk_status check_paths(const qcli *c) {
    mk_paths p;
    mk_paths_init(&p);
    mk_status st = mk_paths_add_input(&p, c->src, "SRC");
    if (st == MK_OK && c->profile)
        st = mk_paths_add_input(&p, c->profile, "--profile");
    if (st == MK_OK && c->hessian)
        st = mk_paths_add_input(&p, c->hessian, "--hessian");
    if (st == MK_OK && mk_conv_dst_is_file(c->src, c->dst, c->co.to, true)) { /* a bare file in, a file out */
        st = mk_paths_check_file(&p, c->dst, "DST", c->co.force);
        if (st == MK_OK)
            st = mk_paths_check_workdir(&p, c->dst);
    } else if (st == MK_OK) {
        st = mk_paths_check_dir(&p, c->dst, c->co.force);
    }
    if (st == MK_OK && c->report)
        st = mk_paths_check_file(&p, c->report, "--report", c->co.force);
    if (st == MK_OK && c->alloc_out)
        st = mk_paths_check_file(&p, c->alloc_out, "--alloc-out", c->co.force);
    mk_paths_free(&p);
    return st;
}

static int run(qcli *c) {
    mk_status st = check_paths(c);
    if (st != MK_OK)
        return mk_cli_fail(st);
    mk_qjob *job = NULL;
    st = mk_qjob_new(&job);
    double expected = 0;
    if (st == MK_OK && c->target > 0)
        st = apply_alloc(c, job, &expected);
    else if (st == MK_OK)
        st = mk_qjob_set_default(job, c->have_mode ? c->mode : MK_QMODE_AFFINE, (int)c->bits, (int)c->group);
    if (st == MK_OK && c->recipe)
        st = mk_qjob_set_recipe(job, c->recipe);
    for (int i = 0; st == MK_OK && i < c->nov; i++)
        st = mk_qjob_add_override(job, c->ovs[i]);
    if (st == MK_OK && (c->method != MK_QALGO_RTN || c->hessian))
        st = mk_qjob_set_method(job, c->method, c->hessian, c->damp);
    if (st != MK_OK) {
        mk_qjob_free(job);
        return mk_cli_fail(st);
    }
    mk_qjob_allow_nonfinite(job, c->allow_nonfinite);
    c->co.to = MK_CONV_MLX;
    c->co.quant = job;
    /* past a file-size limit write() must fail with EFBIG, not kill us */
    signal(SIGXFSZ, SIG_IGN);
    mk_conv_stats cs;
    c->co.held_bytes = mk_cli_rss(); /* the binary and what the CLI holds count too */
    st = mk_conv_run(c->src, c->dst, &c->co, &cs);
    if (st == MK_OK && !c->quiet)
        print_table(job);
    if (st == MK_OK)
        print_totals(job, c->target > 0, expected);
    if (c->stats)
        print_stats(&cs);
    if (st == MK_OK && c->report) {
        char extra[512];
        snprintf(extra, sizeof extra,
                 "\"peak_rss_bytes\": %llu, \"seconds\": %.3f, \"threads\": %d, "
                 "\"chunk_elems\": %llu, \"max_memory\": %llu, \"target_bpw\": %.6g",
                 (unsigned long long)mk_cli_peak_rss(), cs.seconds, cs.threads, (unsigned long long)cs.chunk_elems,
                 (unsigned long long)(c->co.max_memory ? c->co.max_memory : 1ull << 30), c->target);
        st = mk_qjob_write_report(job, c->report, extra);
    }
    fflush(stdout);
    int rc = st == MK_OK ? 0 : mk_cli_fail(st);
    if (st == MK_OK && !c->quiet)
        fprintf(stderr, "quantize: done: %llu tensors, %.1f MB in %.2f s\n", (unsigned long long)cs.tensors_out,
                (double)cs.bytes_out / 1e6, cs.seconds);
    if (st == MK_OK && c->co.pack_experts)
        mk_cli_pack_note("quantize", &cs, c->quiet);
    mk_qjob_free(job);
    return rc;
}

static int cmd_quantize(int argc, char **argv) {
    qcli c;
    memset(&c, 0, sizeof c);
    c.damp = -1; /* MK_QOPT_DAMP */
    mk_conv_opts_init(&c.co);
    c.ovs = calloc((size_t)argc + 1, sizeof *c.ovs);
    if (!c.ovs)
        return mk_cli_fail(mk_err(MK_E_NOMEM, "out of memory"));
    int rc = parse_args(argc, argv, &c);
    if (rc < 0)
        rc = run(&c);
    free(c.ovs);
    return rc;
}

MK_CMD_REGISTER(quantize, 25, "quantize to MLX affine/mxfp4/mxfp8/nvfp4 (MLX-exact, routers 8-bit, bounded memory)",
                cmd_quantize)
