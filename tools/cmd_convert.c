/* moekit convert: every shipped MoE checkpoint layout to HF or MLX, with
 * bounded memory, byte-exact copies, resume after a crash and optional
 * verification (the library does the work: include/moekit/convert.h). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_flags.h"
#include "cmd.h"
#include "gguf_alloc.h"
#include "moekit/convert.h"
#include "moekit/ggml_quant.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: moekit convert SRC DST --to hf|mlx|gguf [options]\n\n"
            "Convert checkpoint directory SRC (HF per-expert or fused, vision-language wrapper, MLX, FP8 block,\n"
            "compressed-tensors INT4) into DST. DST is built in DST.partial/ and appears only when complete;\n"
            "after a crash, rerunning the same command resumes. One moekit at a time writes a DST: a\n"
            "second one is refused, naming the first one's pid. Bad input found mid-run removes\n"
            "DST.partial/ (a rerun would fail alike); a full disk keeps it for the rerun.\n\n"
            "  --to hf|mlx|gguf         target layout (required); gguf: DST is one file for llama.cpp\n"
            "                           (qwen3_moe, qwen3_next, qwen3_5_moe, deepseek_v3, deepseek_v32,\n"
            "                           glm_moe_dsa, glm4_moe(_lite), minimax_m2, gpt_oss; built in\n"
            "                           DST.partial/, then moved to DST)\n"
            "  --gguf-type T            gguf: f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k (every tensor\n"
            "                           of that type, as llama-quantize --pure), or the mixes q4_k_m,\n"
            "                           q5_k_m (llama-quantize's per-tensor choice); llama.cpp's reference\n"
            "                           quantizers bit for bit; norms and the router stay f32, as llama.cpp\n"
            "                           writes them (default: floats keep --dtype's dtype)\n"
            "  --target-bpw X --profile P  gguf: a ggml type per tensor (Q4_K, Q5_K, Q6_K, Q8_0) chosen by\n"
            "                           moekit's allocator over profile P (moekit profile) for X bits per\n"
            "                           weight, each layer's experts of a projection one type; instead of\n"
            "                           --gguf-type\n"
            "  --class-weights W        with --target-bpw: none (default), learned or CLASS=F,... (moekit\n"
            "                           quantize --help)\n"
            "  --experts per-expert|fused  HF expert layout (default per-expert)\n"
            "  --pack-experts           each routed expert's tensors as one contiguous block, 4 KiB-aligned when\n"
            "                           sizes allow: one read per expert when streaming; not with --experts fused\n"
            "  --dtype bf16|f16|f32     dtype of every float output (default: stored floats keep their dtype\n"
            "                           byte for byte, dequantized weights become bf16)\n"
            "  --force-f16              allow f16 for Gated DeltaNet models (qwen3_next, qwen3_5_moe), whose\n"
            "                           recurrent state overflows float16\n"
            "  --max-memory SIZE        peak working memory (default 1G; e.g. 512M)\n"
            "  --threads N              worker threads (default: all cores)\n"
            "  --keep-vision            MLX: keep the vision tower (dropped by default, as mlx-lm does)\n"
            "  --keep-mtp               MLX: keep multi-token-prediction weights\n"
            "  --shard-size SIZE        output shard size (default 5G)\n"
            "  --force                  replace an existing DST that is a checkpoint or a moekit output\n"
            "                           (*.safetensors, a moekit journal, or config.json with no\n"
            "                           subdirectory); any other directory, SRC itself, a directory\n"
            "                           holding SRC, / and the home directory are always refused\n"
            "  --verify                 re-read the output: copied tensors by xxh3-128, converted ones\n"
            "                           numerically against the dequantized source; gguf: the header as\n"
            "                           planned, computed tensors computed again and compared byte for byte\n"
            "  --quiet                  no progress lines\n"
            "  --stats                  print counters and the peak resident memory (VmHWM) on stdout\n\n"
            "--to mlx writes what mlx_lm.load expects: switch_mlp stacking, +1 on zero-centred norms,\n"
            "conv1d (C,K,1), language_model.* for qwen3_5_moe; compressed-tensors INT4 becomes MLX affine\n"
            "4-bit with no weight byte changed. --to hf dequantizes FP8, INT4 and MLX affine.\n"
            "exit: 0 ok, 1 internal error or failed --verify, 2 bad input\n");
}

static void print_stats(const mk_conv_stats *st) {
    printf("tensors %llu\nbytes_out %llu\nbytes_copied %llu\nbytes_computed %llu\nshards %d\nshards_resumed %d\n"
           "threads %d\nchunk_elems %llu\nseconds %.3f\nverified_hash %llu\nverified_numeric %llu\n"
           "worst_rel_l2 %.6g\nworst_max_abs %.6g\npeak_rss_bytes %llu\nsanitizer %d\nexperts_packed %llu\n"
           "experts_aligned %llu\n",
           (unsigned long long)st->tensors_out, (unsigned long long)st->bytes_out,
           (unsigned long long)st->bytes_copied, (unsigned long long)st->bytes_computed, st->shards,
           st->shards_resumed, st->threads, (unsigned long long)st->chunk_elems, st->seconds,
           (unsigned long long)st->verified_hash, (unsigned long long)st->verified_numeric, st->worst_rel_l2,
           st->worst_max_abs, (unsigned long long)mk_cli_peak_rss(), mk_cli_sanitized(),
           (unsigned long long)st->experts_packed, (unsigned long long)st->experts_aligned);
}

enum { O_TO = 256, O_GGTYPE, O_TARGET, O_PROFILE, O_CLASSW, O_EXPERTS, O_PACK, O_DTYPE, O_F16, O_MEM, O_THREADS, O_VISION, O_MTP, O_SHARD, O_FORCE,
       O_VERIFY, O_QUIET, O_STATS };

static int cmd_convert(int argc, char **argv) {
    static const struct option opts[] = {
        {"to", required_argument, 0, O_TO},          {"experts", required_argument, 0, O_EXPERTS},
        {"pack-experts", no_argument, 0, O_PACK},      {"dtype", required_argument, 0, O_DTYPE},
        {"force-f16", no_argument, 0, O_F16},          {"max-memory", required_argument, 0, O_MEM},
        {"threads", required_argument, 0, O_THREADS},  {"keep-vision", no_argument, 0, O_VISION},
        {"keep-mtp", no_argument, 0, O_MTP},           {"shard-size", required_argument, 0, O_SHARD},
        {"force", no_argument, 0, O_FORCE},            {"verify", no_argument, 0, O_VERIFY},
        {"quiet", no_argument, 0, O_QUIET},            {"stats", no_argument, 0, O_STATS},
        {"gguf-type", required_argument, 0, O_GGTYPE}, {"help", no_argument, 0, 'h'},
        {"target-bpw", required_argument, 0, O_TARGET}, {"profile", required_argument, 0, O_PROFILE},
        {"class-weights", required_argument, 0, O_CLASSW},
        {0, 0, 0, 0}};
    mk_conv_opts o;
    mk_conv_opts_init(&o);
    int c, rc, have_to = 0, stats = 0;
    double target = 0;
    const char *profile = NULL, *class_weights = NULL;
    unsigned long long v;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'h': help(stdout); return 0;
        case O_TO:
            if (strcmp(optarg, "hf") && strcmp(optarg, "mlx") && strcmp(optarg, "gguf"))
                return mk_cli_usage("convert", "--to '%s': expected hf, mlx or gguf", optarg);
            o.to = strcmp(optarg, "mlx") == 0 ? MK_CONV_MLX : strcmp(optarg, "gguf") == 0 ? MK_CONV_GGUF : MK_CONV_HF;
            have_to = 1;
            break;
        case O_GGTYPE: {
            static const struct { const char *s; int t; } tt[] = {
                {"f32", MK_GGML_F32}, {"f16", MK_GGML_F16}, {"bf16", MK_GGML_BF16},
                {"q8_0", MK_GGML_Q8_0}, {"q4_0", MK_GGML_Q4_0}, {"q4_k", MK_GGML_Q4_K},
                {"q5_k", MK_GGML_Q5_K}, {"q6_k", MK_GGML_Q6_K}, {"q4_k_m", MK_GGUF_Q4_K_M},
                {"q5_k_m", MK_GGUF_Q5_K_M}};
            o.gguf_type = -2;
            for (size_t i = 0; i < sizeof tt / sizeof tt[0]; i++)
                if (strcmp(optarg, tt[i].s) == 0)
                    o.gguf_type = tt[i].t;
            if (o.gguf_type == -2)
                return mk_cli_usage("convert", "--gguf-type '%s': expected f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k, "
                                    "q4_k_m or q5_k_m", optarg);
            break;
        }
        case O_TARGET:
            if ((rc = mk_flag_real("convert", "--target-bpw", optarg, 0, 32, MK_FLAG_LO_OPEN, &target)) >= 0)
                return rc;
            break;
        case O_PROFILE: profile = optarg; break;
        case O_CLASSW: class_weights = optarg; break;
        case O_EXPERTS:
            if (strcmp(optarg, "per-expert") && strcmp(optarg, "fused"))
                return mk_cli_usage("convert", "--experts '%s': expected per-expert or fused", optarg);
            o.experts = strcmp(optarg, "fused") == 0 ? MK_CONV_FUSED : MK_CONV_PER_EXPERT;
            break;
        case O_PACK: o.pack_experts = true; break;
        case O_DTYPE:
            if (!mk_cli_parse_dtype(optarg, &o.dtype))
                return mk_cli_usage("convert", "--dtype '%s': expected bf16, f16 or f32", optarg);
            break;
        case O_F16: o.force_f16 = true; break;
        case O_MEM:
            if ((rc = mk_flag_size("convert", "--max-memory", optarg, 1, &v)) >= 0)
                return rc;
            o.max_memory = v;
            break;
        case O_THREADS: {
            long long t;
            if ((rc = mk_flag_int("convert", "--threads", optarg, 1, 1024, &t)) >= 0)
                return rc;
            o.threads = (int)t;
            break;
        }
        case O_VISION: o.keep_vision = true; break;
        case O_MTP: o.keep_mtp = true; break;
        case O_SHARD:
            if ((rc = mk_flag_size("convert", "--shard-size", optarg, 1, &v)) >= 0)
                return rc;
            o.shard_size = v;
            break;
        case O_FORCE: o.force = true; break;
        case O_VERIFY: o.verify = true; break;
        case O_QUIET: o.quiet = true; break;
        case O_STATS: stats = 1; break;
        default: help(stderr); return 2;
        }
    }
    if (optind + 2 != argc)
        return mk_cli_usage("convert", "expected SRC and DST");
    if (!have_to)
        return mk_cli_usage("convert", "--to hf, --to mlx or --to gguf is required");
    if ((target > 0) != (profile != NULL))
        return mk_cli_usage("convert", "--target-bpw and --profile go together");
    if (class_weights && target <= 0)
        return mk_cli_usage("convert", "--class-weights needs --target-bpw");
    if (target > 0 && o.to != MK_CONV_GGUF)
        return mk_cli_usage("convert", "--target-bpw is for --to gguf (for MLX output: moekit quantize --target-bpw)");
    if (target > 0 && o.gguf_type != -1)
        return mk_cli_usage("convert", "--target-bpw chooses the types: drop --gguf-type");
    mk_gguf_alloc ga;
    memset(&ga, 0, sizeof ga);
    if (target > 0) {
        mk_status as = mk_gguf_alloc_solve(profile, target, class_weights, &o, &ga);
        if (as != MK_OK)
            return mk_cli_fail(as);
        if (!o.quiet)
            fprintf(stderr, "convert: allocation for %.4f bpw over %zu profiled tensors: %.4f bpw expected\n",
                    target, ga.n, ga.expected_bpw);
    }
    /* Past a file-size limit, write() must fail with EFBIG (reported as a
     * full disk) instead of the default SIGXFSZ killing us mid-shard. */
    signal(SIGXFSZ, SIG_IGN);
    mk_conv_stats st;
    o.held_bytes = mk_cli_rss(); /* the binary and what the CLI holds count too */
    mk_status s = mk_conv_run(argv[optind], argv[optind + 1], &o, &st);
    mk_gguf_alloc_free(&ga);
    if (stats)
        print_stats(&st);
    if (s != MK_OK) {
        int code = mk_cli_fail(s);
        return st.verify_failures ? 1 : code;
    }
    if (!o.quiet)
        fprintf(stderr, "convert: done: %llu tensors, %.1f MB (%.1f MB copied byte for byte) in %.2f s%s\n",
                (unsigned long long)st.tensors_out, (double)st.bytes_out / 1e6, (double)st.bytes_copied / 1e6,
                st.seconds, st.shards_resumed ? " (resumed)" : "");
    if (o.pack_experts)
        mk_cli_pack_note("convert", &st, o.quiet);
    return 0;
}

MK_CMD_REGISTER(convert, 20, "convert between HF, fused, FP8, INT4 and MLX layouts (streaming, resumable)",
                cmd_convert)
