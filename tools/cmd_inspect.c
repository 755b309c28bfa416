/* moekit inspect: describe a checkpoint and list its problems, as text or
 * JSON. The analysis is src/inspect/; this file parses flags and renders. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_esc.h"
#include "cmd.h"
#include "moekit/inspect.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: moekit inspect PATH [--json] [--scan]\n\n"
            "A PATH ending in .gguf is read as llama.cpp's GGUF: version, architecture, every\n"
            "metadata key (arrays as their count and first values), every tensor with its ggml type,\n"
            "dimensions (innermost first) and bytes, totals by type, and problems (a tensor past the\n"
            "end of the file, an unknown type, rows that are not whole blocks).\n\n"
            "Describe the checkpoint at PATH (a .safetensors file or a checkpoint directory with\n"
            "config.json): architecture and layer schedule, expert layout (per-expert, fused,\n"
            "MLX switch_mlp), quantization per module (MLX affine/mxfp4/mxfp8/nvfp4 with bits and\n"
            "group, FP8 block, compressed-tensors INT4), totals (parameters, bytes by dtype,\n"
            "experts, active parameters per token), memory needed with everything resident vs\n"
            "with only non-expert weights resident, and every problem found:\n"
            "  missing/unexpected tensors for the architecture, expert indices that are not\n"
            "  exactly 0..E-1, a module whose configured bits contradict its packed shape (an\n"
            "  8-bit router read as 4-bit), a float16 Gated DeltaNet checkpoint.\n\n"
            "  --json   print the report as JSON (stable keys; for tools and tests)\n"
            "  --scan   also read every value: NaN/Inf counts, values outside the float16 range\n\n"
            "Without --scan only headers and config are read (instant at any size); with --scan\n"
            "memory stays at a 16 KiB buffer. Exit status: 0 (even when problems are listed),\n"
            "2 when the checkpoint cannot be read.\n");
}

static double gib(json_int_t b) { return (double)b / (1024.0 * 1024 * 1024); }

static void human(char *out, size_t n, json_int_t b) {
    if (b >= (1ll << 30))
        snprintf(out, n, "%.2f GiB", gib(b));
    else if (b >= (1ll << 20))
        snprintf(out, n, "%.2f MiB", (double)b / (1 << 20));
    else
        snprintf(out, n, "%lld B", (long long)b);
}

static void count(char *out, size_t n, json_int_t v) {
    if (v >= 1000000000ll)
        snprintf(out, n, "%.2fB", (double)v / 1e9);
    else if (v >= 1000000ll)
        snprintf(out, n, "%.2fM", (double)v / 1e6);
    else
        snprintf(out, n, "%lld", (long long)v);
}

static json_int_t gi(json_t *o, const char *k) { return json_integer_value(json_object_get(o, k)); }
/* A string field for the text report, escaped: paths, model types, module
 * names and problem causes come from the checkpoint's files. */
static const char *gs(json_t *o, const char *k) {
    const char *s = json_string_value(json_object_get(o, k));
    return s ? mk_cli_esc(s) : "";
}

/* "affine 4-bit g64" / "fp8-block F8_E4M3": how one quantized module is stored. */
static void storage_key(json_t *e, char *key, size_t n) {
    if (json_object_get(e, "bits"))
        snprintf(key, n, "%s %lld-bit g%lld", gs(e, "scheme"), (long long)gi(e, "bits"), (long long)gi(e, "group_size"));
    else
        snprintf(key, n, "%s %s", gs(e, "scheme"), gs(e, "fp8"));
}

/* The text report of a GGUF file (mk_inspect_gguf's JSON). */
static void render_gguf(json_t *r) {
    char b1[32], b2[32];
    json_t *tot = json_object_get(r, "totals");
    printf("%s (GGUF v%lld)\n", gs(r, "path"), (long long)gi(r, "version"));
    printf("  architecture    %s\n", json_is_string(json_object_get(r, "architecture")) ? gs(r, "architecture") : "(none)");
    count(b1, sizeof b1, gi(tot, "params"));
    human(b2, sizeof b2, gi(tot, "bytes"));
    printf("  tensors         %lld, %s params, %s of data\n", (long long)gi(tot, "tensors"), b1, b2);
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(tot, "by_type"), k, v) {
        count(b1, sizeof b1, gi(v, "params"));
        human(b2, sizeof b2, gi(v, "bytes"));
        printf("    %-13s %lld tensors, %s params, %s\n", mk_cli_esc(k), (long long)gi(v, "tensors"), b1, b2);
    }
    printf("  metadata        %zu keys\n", json_object_size(json_object_get(r, "kv")));
    json_object_foreach(json_object_get(r, "kv"), k, v) {
        json_t *val = json_object_get(v, "value");
        printf("    %s (%s): ", mk_cli_esc(k), gs(v, "type"));
        if (json_is_object(val)) {
            printf("array of %lld %s", (long long)gi(val, "count"), gs(val, "array"));
            if (json_array_size(json_object_get(val, "head")))
                printf(", first:");
            size_t i;
            json_t *e;
            json_array_foreach(json_object_get(val, "head"), i, e) {
                char *s = json_dumps(e, JSON_ENCODE_ANY);
                printf(" %s", s ? mk_cli_esc(s) : "?");
                free(s);
            }
            printf("\n");
        } else if (json_is_string(val)) {
            const char *s = json_string_value(val);
            size_t n = strlen(s);
            printf("\"%.*s%s\"\n", n > 60 ? 60 : (int)n, mk_cli_esc(s), n > 60 ? "..." : "");
        } else {
            char *s = json_dumps(val, JSON_ENCODE_ANY);
            printf("%s\n", s ? s : "?");
            free(s);
        }
    }
    printf("  tensors (name, type, dims innermost first, bytes)\n");
    size_t i;
    json_array_foreach(json_object_get(r, "tensors"), i, v) {
        printf("    %s %s [", gs(v, "name"), gs(v, "type"));
        size_t d;
        json_t *e;
        json_array_foreach(json_object_get(v, "ne"), d, e) printf("%s%lld", d ? ", " : "", (long long)json_integer_value(e));
        printf("] %lld\n", (long long)gi(v, "bytes"));
    }
    size_t np = json_array_size(json_object_get(r, "problems"));
    printf("  problems        %zu\n", np);
    json_array_foreach(json_object_get(r, "problems"), i, v)
        printf("    %s: %s: %s\n", gs(v, "code"), gs(v, "tensor"), gs(v, "cause"));
}

static void render(json_t *r) {
    json_t *a = json_object_get(r, "architecture"), *ex = json_object_get(r, "experts"),
           *q = json_object_get(r, "quantization"), *t = json_object_get(r, "totals"),
           *m = json_object_get(r, "memory"), *p = json_object_get(r, "problems");
    char b1[64], b2[64], b3[64];
    printf("%s (%lld shard%s)\n", gs(r, "path"), (long long)gi(r, "shards"), gi(r, "shards") == 1 ? "" : "s");
    printf("  model_type      %s%s%s  [%s]%s\n", gs(a, "model_type"),
           strcmp(gs(a, "model_type"), gs(a, "text_model_type")) ? " / text " : "",
           strcmp(gs(a, "model_type"), gs(a, "text_model_type")) ? gs(a, "text_model_type") : "",
           gs(a, "architecture"), json_is_true(json_object_get(a, "supported")) ? "" : "  (UNSUPPORTED)");
    printf("  shape           %lld layers, hidden %lld, vocab %lld, heads %lld/%lld x %lld, dtype %s\n",
           (long long)gi(a, "layers"), (long long)gi(a, "hidden_size"), (long long)gi(a, "vocab_size"),
           (long long)gi(a, "attention_heads"), (long long)gi(a, "kv_heads"), (long long)gi(a, "head_dim"),
           gs(a, "dtype"));
    json_t *sch = json_object_get(a, "layer_schedule");
    printf("  schedule        ");
    for (size_t i = 0; i < json_array_size(sch) && i < 64; i++) {
        json_t *e = json_array_get(sch, i);
        const char *at = gs(e, "attention");
        printf("%c", !strcmp(at, "full_attention")      ? 'A'
                     : !strcmp(at, "mla")                 ? 'M'
                     : !strcmp(at, "mla_sparse")          ? 'S'
                     : !strcmp(at, "mla_sparse_shared")   ? 's'
                     : !strcmp(at, "sliding_attention")   ? 'W'
                                                          : 'L');
    }
    json_t *sp = json_object_get(a, "sparse_attention");
    printf("%s  (A full attention, W sliding window, L linear/GDN, M MLA%s)\n",
           json_array_size(sch) > 64 ? "..." : "",
           sp ? ", S MLA + DSA indexer, s MLA reusing the previous selection" : "");
    if (sp)
        printf("  sparse attn     top %lld positions per query (dense below), indexer %lld heads x %lld, "
               "%s RoPE\n", (long long)gi(sp, "index_topk"), (long long)gi(sp, "index_n_heads"),
               (long long)gi(sp, "index_head_dim"), gs(sp, "indexer_rope"));
    printf("  experts         %lld per layer, top-%lld, %lld MoE layers, layout %s, %s/expert\n",
           (long long)gi(ex, "experts_per_layer"), (long long)gi(a, "experts_per_token"),
           (long long)gi(ex, "moe_layers"), gs(ex, "layout"), (human(b1, sizeof b1, gi(ex, "bytes_per_expert")), b1));
    json_t *pr = json_object_get(ex, "per_expert_reads");
    if (pr && gi(pr, "experts")) /* a packed layout (convert --pack-experts) has them all contiguous */
        printf("  expert reads    %lld of %lld experts one contiguous block (one read each), %lld of them "
               "4 KiB-aligned\n",
               (long long)gi(pr, "contiguous"), (long long)gi(pr, "experts"), (long long)gi(pr, "aligned_4k"));
    printf("  quantization    %s", gs(q, "method"));
    if (!strcmp(gs(q, "method"), "mlx"))
        printf(" (default %lld-bit g%lld %s, %lld per-module entries)", (long long)gi(q, "default_bits"),
               (long long)gi(q, "default_group_size"), gs(q, "default_mode"), (long long)gi(q, "config_entries"));
    printf(", %lld quantized modules\n", (long long)gi(q, "quantized_modules"));
    /* one line per distinct storage, so an 8-bit router among 4-bit experts is visible at a glance */
    json_t *mods = json_object_get(q, "modules"), *kinds = json_object();
    for (size_t i = 0; i < json_array_size(mods); i++) {
        json_t *e = json_array_get(mods, i);
        char key[96];
        storage_key(e, key, sizeof key);
        json_t *n = json_object_get(kinds, key);
        json_object_set_new(kinds, key, json_integer(n ? json_integer_value(n) + 1 : 1));
    }
    const char *kk;
    json_t *kv;
    json_object_foreach(kinds, kk, kv) {
        const char *example = "";
        for (size_t i = 0; i < json_array_size(mods); i++) {
            json_t *e = json_array_get(mods, i);
            char key[96];
            storage_key(e, key, sizeof key);
            if (!strcmp(key, kk)) {
                example = gs(e, "module");
                break;
            }
        }
        printf("                  %-22s %5lld modules (e.g. %s)\n", kk, (long long)json_integer_value(kv), example);
    }
    json_decref(kinds);
    count(b1, sizeof b1, gi(t, "parameters"));
    count(b2, sizeof b2, gi(t, "active_parameters_per_token"));
    count(b3, sizeof b3, gi(t, "expert_parameters"));
    printf("  parameters      %s total, %s active per token, %s in routed experts\n", b1, b2, b3);
    human(b1, sizeof b1, gi(t, "bytes"));
    printf("  bytes           %s in %lld tensors:", b1, (long long)gi(t, "tensors"));
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(t, "bytes_by_dtype"), k, v) {
        human(b2, sizeof b2, json_integer_value(v));
        printf(" %s %s", mk_cli_esc(k), b2);
    }
    printf("\n");
    human(b1, sizeof b1, gi(m, "all_resident_bytes"));
    human(b2, sizeof b2, gi(m, "non_expert_resident_bytes"));
    human(b3, sizeof b3, gi(m, "active_expert_bytes_per_token"));
    printf("  memory          %s all resident; %s with experts streamed (%s of experts read per token)\n", b1, b2,
           b3);
    if (gi(m, "skipped_vision_bytes") || gi(m, "skipped_mtp_bytes")) {
        human(b1, sizeof b1, gi(m, "skipped_vision_bytes"));
        human(b2, sizeof b2, gi(m, "skipped_mtp_bytes"));
        printf("  not for text    vision %s, mtp %s\n", b1, b2);
    }
    json_t *sc = json_object_get(r, "scan");
    if (sc)
        printf("  scan            %lld NaN, %lld Inf, %lld outside float16 range\n", (long long)gi(sc, "nan"),
               (long long)gi(sc, "inf"), (long long)gi(sc, "outside_f16"));
    size_t np = json_array_size(p);
    printf("  problems        %zu\n", np);
    for (size_t i = 0; i < np; i++) {
        json_t *e = json_array_get(p, i);
        printf("    [%s] %s\n", gs(e, "code"), gs(e, "cause"));
    }
}

static int cmd_inspect(int argc, char **argv) {
    static const struct option opts[] = {{"json", no_argument, 0, 'j'}, {"scan", no_argument, 0, 's'},
                                         {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    bool json = false;
    mk_inspect_opts o = {0};
    int c;
    while ((c = getopt_long(argc, argv, "jsh", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = true; break;
        case 's': o.scan = true; break;
        case 'h': help(stdout); return 0;
        default: help(stderr); return 2;
        }
    }
    if (optind + 1 != argc)
        return mk_cli_usage("inspect", "expected exactly one PATH");
    char *txt;
    const char *path = argv[optind];
    size_t pl = strlen(path);
    bool gguf = pl > 5 && strcmp(path + pl - 5, ".gguf") == 0;
    if (gguf && o.scan)
        return mk_cli_usage("inspect", "--scan reads safetensors checkpoints; a GGUF's header is what is read");
    mk_status s = gguf ? mk_inspect_gguf(path, &txt) : mk_inspect(path, &o, &txt);
    if (s != MK_OK)
        return mk_cli_fail(s);
    if (json)
        puts(txt);
    else {
        json_t *r = json_loads(txt, 0, NULL);
        if (r && gguf)
            render_gguf(r);
        else if (r)
            render(r);
        json_decref(r);
    }
    free(txt);
    return 0;
}

MK_CMD_REGISTER(inspect, 10, "describe a checkpoint: architecture, layout, quantization, sizes, problems", cmd_inspect)
