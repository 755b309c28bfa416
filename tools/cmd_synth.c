/* moekit synth: deterministic synthetic checkpoints of real MoE shapes for
 * tests and benchmarks (include/moekit/synth.h). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_flags.h"
#include "cmd.h"
#include "moekit/synth.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: moekit synth DIR --arch ARCH --preset PRESET --format bf16|fp8|ct-int4|mxfp4 [options]\n\n"
            "Write a synthetic HF checkpoint (config.json + safetensors) with the shapes of a real model and\n"
            "realistic value scales. The same arguments always give the same bytes.\n\n"
            "  --arch ARCH            %s\n"
            "  --preset PRESET        %s\n"
            "  --format F             bf16 | fp8 (E4M3, 128x128 F32 scale_inv) | ct-int4 (compressed-tensors,\n"
            "                         group 32, symmetric) | ct-int4-asym (with zero points) | mxfp4 (gpt_oss:\n"
            "                         experts as *_blocks/*_scales, the released layout)\n"
            "  --layers N --experts N --vocab N   cut the preset down\n"
            "  --layout per-expert|fused          expert layout (default per-expert)\n"
            "  --vl                   qwen3_5_moe vision-language wrapper (+ vision tower and mtp.*)\n"
            "  --mtp                  add the family's multi-token-prediction weights\n"
            "  --seed S               generator seed (default 0)\n"
            "  --shard-size SIZE      shard cut (default 5G)\n"
            "  --threads N            worker threads (default: all cores)\n"
            "  --force                replace DIR when it is a checkpoint or a moekit output (*.safetensors, a\n"
            "                         moekit journal, or config.json with no subdirectory); any other\n"
            "                         directory, / and the home directory are refused. An empty DIR needs no\n"
            "                         --force. DIR is built in DIR.partial/ and swapped in when\n"
            "                         complete: a full disk or a kill keeps the old DIR as it was\n"
            "  --list                 print NAME DTYPE [shape] of every tensor, write nothing\n"
            "  --quiet\n",
            mk_synth_archs(), mk_synth_presets());
}

enum { O_ARCH = 256, O_PRESET, O_FORMAT, O_LAYERS, O_EXPERTS, O_VOCAB, O_LAYOUT, O_VL, O_MTP, O_SEED, O_SHARD,
       O_THREADS, O_FORCE, O_QUIET, O_LIST };

static int parse_int(const char *opt, const char *s, int lo, int hi, int *out) {
    long long v;
    int rc = mk_flag_int("synth", opt, s, lo, hi, &v);
    if (rc >= 0)
        return rc;
    *out = (int)v;
    return 0;
}

static int cmd_synth(int argc, char **argv) {
    static const struct option opts[] = {
        {"arch", required_argument, 0, O_ARCH},      {"preset", required_argument, 0, O_PRESET},
        {"format", required_argument, 0, O_FORMAT},  {"layers", required_argument, 0, O_LAYERS},
        {"experts", required_argument, 0, O_EXPERTS}, {"vocab", required_argument, 0, O_VOCAB},
        {"layout", required_argument, 0, O_LAYOUT},  {"vl", no_argument, 0, O_VL},
        {"mtp", no_argument, 0, O_MTP},              {"seed", required_argument, 0, O_SEED},
        {"shard-size", required_argument, 0, O_SHARD}, {"threads", required_argument, 0, O_THREADS},
        {"force", no_argument, 0, O_FORCE},          {"quiet", no_argument, 0, O_QUIET},
        {"list", no_argument, 0, O_LIST},
        {"help", no_argument, 0, 'h'},               {0, 0, 0, 0}};
    mk_synth_opts o;
    mk_synth_opts_init(&o);
    o.arch = NULL;
    o.preset = NULL;
    int c, have_format = 0;
    unsigned long long v;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'h': help(stdout); return 0;
        case O_ARCH: o.arch = optarg; break;
        case O_PRESET: o.preset = optarg; break;
        case O_FORMAT:
            have_format = 1;
            if (!strcmp(optarg, "bf16"))
                o.format = MK_SYNTH_BF16;
            else if (!strcmp(optarg, "fp8"))
                o.format = MK_SYNTH_FP8;
            else if (!strcmp(optarg, "ct-int4"))
                o.format = MK_SYNTH_CT_INT4;
            else if (!strcmp(optarg, "ct-int4-asym"))
                o.format = MK_SYNTH_CT_INT4_ASYM;
            else if (!strcmp(optarg, "mxfp4"))
                o.format = MK_SYNTH_MXFP4;
            else
                return mk_cli_usage("synth", "--format '%s': expected bf16, fp8, ct-int4, ct-int4-asym or mxfp4", optarg);
            break;
        case O_LAYERS: if (parse_int("--layers", optarg, 1, 1000, &o.layers)) return 2; break;
        case O_EXPERTS: if (parse_int("--experts", optarg, 1, 4096, &o.experts)) return 2; break;
        case O_VOCAB: if (parse_int("--vocab", optarg, 1, 10000000, &o.vocab)) return 2; break;
        case O_LAYOUT:
            if (strcmp(optarg, "per-expert") && strcmp(optarg, "fused"))
                return mk_cli_usage("synth", "--layout '%s': expected per-expert or fused", optarg);
            o.fused = strcmp(optarg, "fused") == 0;
            break;
        case O_VL: o.vl = true; break;
        case O_MTP: o.mtp = true; break;
        case O_SEED: {
            long long sv;
            int rc = mk_flag_int("synth", "--seed", optarg, 0, INT64_MAX, &sv);
            if (rc >= 0)
                return rc;
            o.seed = (uint64_t)sv;
            break;
        }
        case O_SHARD:
            {
                int rc = mk_flag_size("synth", "--shard-size", optarg, 1, &v);
                if (rc >= 0)
                    return rc;
            }
            o.shard_size = v;
            break;
        case O_THREADS: if (parse_int("--threads", optarg, 1, 1024, &o.threads)) return 2; break;
        case O_FORCE: o.force = true; break;
        case O_QUIET: o.quiet = true; break;
        case O_LIST: o.list_only = true; break;
        default: help(stderr); return 2;
        }
    }
    if (optind + 1 != argc)
        return mk_cli_usage("synth", "expected exactly one DIR");
    if (!o.arch)
        return mk_cli_usage("synth", "--arch is required (%s)", mk_synth_archs());
    if (!o.preset)
        return mk_cli_usage("synth", "--preset is required (%s)", mk_synth_presets());
    if (!have_format)
        return mk_cli_usage("synth", "--format is required (bf16, fp8, ct-int4, ct-int4-asym, mxfp4)");
    /* past a file-size limit write() must fail with EFBIG, not kill us */
    signal(SIGXFSZ, SIG_IGN);
    mk_status s = mk_synth_run(argv[optind], &o);
    return s == MK_OK ? 0 : mk_cli_fail(s);
}

MK_CMD_REGISTER(synth, 25, "write a deterministic synthetic checkpoint of a real MoE shape", cmd_synth)
