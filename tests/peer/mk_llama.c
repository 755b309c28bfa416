/* Test-only peer tool: llama.cpp itself, through its C API, as the oracle
 * for moekit's GGUF output (tests/cli/gguf_llama_*.sh) and the benchmark peer
 * (bench/bench_peer.sh). Never part of the product: it is compiled by
 * scripts/install-deps.d/llama.sh against the prebuilt llama.cpp libraries
 * of the npm package node-llama-cpp and the headers of the source bundle
 * that package ships, into $REPO/.peers/bin.
 *
 *   mk_llama logits MODEL.gguf IDS OUT.f32 [THREADS]
 *       teacher-forced logits of the ids in file IDS (whitespace separated)
 *       as raw float32 [n, n_vocab], one llama_decode of the whole batch
 *   mk_llama tokenize MODEL.gguf TEXTFILE
 *       the ids llama.cpp's tokenizer gives the file's text (no special
 *       tokens added, special tokens not parsed), one line
 *   mk_llama cmp A.gguf B.gguf
 *       tensor by tensor through ggml's own GGUF reader: the same names,
 *       types, shapes and data bytes; lists every difference, exit 1 if any
 *   mk_llama info A.gguf
 *       NAME TYPE ne0,ne1,... of every tensor, then every key
 *   mk_llama gen MODEL.gguf N THREADS [repack|norepack] [mlock]
 *       greedy decode of N tokens after the prompt ids 1,2,3,4, the weights
 *       mapped (llama.cpp's default load); prints "decode TOK/S N" with the
 *       decode timed alone (bench/bench_stream_peer.sh). norepack turns off
 *       the CPU's repacked weight copies (llama-cli's --no-repack), the only
 *       way llama.cpp's mapping can serve a model larger than memory;
 *       mlock locks the mapped pages (llama-bench's -lm mmap+mlock)
 *   mk_llama pp MODEL.gguf N THREADS [repack|norepack] [mlock]
 *       a prefill of N tokens timed after a warm-up one; prints "prefill
 *       TOK/S N" (bench_peer.sh where llama-bench cannot run a model)
 * Exit 0 ok, 1 differ, 2 bad use or a file llama.cpp refused. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ggml-backend.h"
#include "ggml.h"
#include "gguf.h"
#include "llama.h"

static void quiet_log(enum ggml_log_level level, const char *text, void *ud) {
    (void)ud;
    if (level >= GGML_LOG_LEVEL_WARN)
        fputs(text, stderr);
}

static int load_ids(const char *path, int32_t **ids, int *n) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "mk_llama: cannot open %s\n", path);
        return 2;
    }
    int cap = 256;
    *ids = malloc((size_t)cap * sizeof **ids);
    *n = 0;
    long v;
    while (fscanf(f, "%ld", &v) == 1) {
        if (*n == cap) {
            cap *= 2;
            *ids = realloc(*ids, (size_t)cap * sizeof **ids);
        }
        (*ids)[(*n)++] = (int32_t)v;
    }
    fclose(f);
    return *n > 0 ? 0 : 2;
}

static int g_no_repack;
static int g_mlock; /* lock the model's pages (llama-bench's -lm mmap+mlock) */

static struct llama_model *open_model(const char *path) {
    ggml_backend_load_all();
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    if (g_no_repack)
        mp.use_extra_bufts = false;
    if (g_mlock)
        mp.load_mode = LLAMA_LOAD_MODE_MMAP_MLOCK;
    struct llama_model *m = llama_model_load_from_file(path, mp);
    if (!m)
        fprintf(stderr, "mk_llama: llama.cpp refused to load %s\n", path);
    return m;
}

static int cmd_logits(int argc, char **argv) {
    if (argc < 5)
        return 2;
    int32_t *ids;
    int n;
    if (load_ids(argv[3], &ids, &n))
        return 2;
    int threads = argc > 5 ? atoi(argv[5]) : 1;
    /* the oracle reads the file through the CPU backend's plain buffers: the
     * extra buffer types are per-CPU kernels (repacked Q4_0/Q8_0, and AMX on
     * Sapphire Rapids, whose buffers llama.cpp v0.4.0 cannot schedule
     * deepseek2's F16 attention ops on: GGML_ASSERT(*cur_backend_id != -1)
     * in ggml-backend.cpp), not the file's meaning */
    g_no_repack = 1;
    struct llama_model *m = open_model(argv[2]);
    if (!m)
        return 2;
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(n < 64 ? 64 : n);
    cp.n_batch = cp.n_ubatch = (uint32_t)n;
    cp.n_threads = cp.n_threads_batch = threads;
    cp.n_seq_max = 1;
    /* the oracle computes as exactly as llama.cpp can: an F32 KV cache
     * (its default F16 cache alone moves logits by 4e-4) and no flash
     * attention */
    cp.type_k = cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    struct llama_context *ctx = llama_init_from_model(m, cp);
    if (!ctx) {
        fprintf(stderr, "mk_llama: no context for %s\n", argv[2]);
        return 2;
    }
    struct llama_batch b = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        b.token[i] = ids[i];
        b.pos[i] = i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = 1;
    }
    b.n_tokens = n;
    if (llama_decode(ctx, b) != 0) {
        fprintf(stderr, "mk_llama: llama_decode failed\n");
        return 2;
    }
    int nv = llama_vocab_n_tokens(llama_model_get_vocab(m));
    FILE *f = fopen(argv[4], "wb");
    if (!f)
        return 2;
    for (int i = 0; i < n; i++)
        if (fwrite(llama_get_logits_ith(ctx, i), sizeof(float), (size_t)nv, f) != (size_t)nv)
            return 2;
    if (fclose(f) != 0)
        return 2;
    printf("%d %d\n", n, nv);
    llama_batch_free(b);
    llama_free(ctx);
    llama_model_free(m);
    free(ids);
    return 0;
}

static int cmd_tokenize(int argc, char **argv) {
    if (argc < 4)
        return 2;
    FILE *f = fopen(argv[3], "rb");
    if (!f)
        return 2;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)len + 1);
    if (fread(text, 1, (size_t)len, f) != (size_t)len)
        return 2;
    fclose(f);
    text[len] = 0;
    struct llama_model *m = open_model(argv[2]);
    if (!m)
        return 2;
    int cap = (int)len + 16;
    llama_token *tok = malloc((size_t)cap * sizeof *tok);
    int n = llama_tokenize(llama_model_get_vocab(m), text, (int32_t)len, tok, cap, false, false);
    if (n < 0)
        return 2;
    for (int i = 0; i < n; i++)
        printf(i ? " %d" : "%d", tok[i]);
    printf("\n");
    llama_model_free(m);
    free(tok);
    free(text);
    return 0;
}

typedef struct gfile {
    struct gguf_context *g;
    struct ggml_context *c;
    FILE *f;
} gfile;

static int gopen(const char *path, gfile *gf) {
    struct gguf_init_params ip = {true, &gf->c};
    gf->g = gguf_init_from_file(path, ip);
    gf->f = fopen(path, "rb");
    if (!gf->g || !gf->f) {
        fprintf(stderr, "mk_llama: ggml's GGUF reader refused %s\n", path);
        return 2;
    }
    return 0;
}

static int cmd_cmp(int argc, char **argv) {
    if (argc < 4)
        return 2;
    gfile a, b;
    if (gopen(argv[2], &a) || gopen(argv[3], &b))
        return 2;
    int64_t na = gguf_get_n_tensors(a.g), nb = gguf_get_n_tensors(b.g);
    int bad = 0;
    if (na != nb) {
        printf("tensor count: %lld vs %lld\n", (long long)na, (long long)nb);
        bad++;
    }
    long same = 0;
    for (int64_t i = 0; i < na; i++) {
        const char *name = gguf_get_tensor_name(a.g, i);
        int64_t j = gguf_find_tensor(b.g, name);
        if (j < 0) {
            printf("%s: only in %s\n", name, argv[2]);
            bad++;
            continue;
        }
        struct ggml_tensor *ta = ggml_get_tensor(a.c, name), *tb = ggml_get_tensor(b.c, name);
        if (ta->type != tb->type || !ggml_are_same_shape(ta, tb)) {
            printf("%s: %s [%lld,%lld,%lld] vs %s [%lld,%lld,%lld]\n", name, ggml_type_name(ta->type),
                   (long long)ta->ne[0], (long long)ta->ne[1], (long long)ta->ne[2], ggml_type_name(tb->type),
                   (long long)tb->ne[0], (long long)tb->ne[1], (long long)tb->ne[2]);
            bad++;
            continue;
        }
        size_t sz = ggml_nbytes(ta);
        unsigned char *da = malloc(sz), *db = malloc(sz);
        fseek(a.f, (long)(gguf_get_data_offset(a.g) + gguf_get_tensor_offset(a.g, i)), SEEK_SET);
        fseek(b.f, (long)(gguf_get_data_offset(b.g) + gguf_get_tensor_offset(b.g, j)), SEEK_SET);
        if (fread(da, 1, sz, a.f) != sz || fread(db, 1, sz, b.f) != sz) {
            printf("%s: short read\n", name);
            bad++;
        } else if (memcmp(da, db, sz) != 0) {
            size_t k = 0;
            while (da[k] == db[k])
                k++;
            printf("%s (%s): data differ, first at byte %zu of %zu\n", name, ggml_type_name(ta->type), k, sz);
            bad++;
        } else
            same++;
        free(da);
        free(db);
    }
    printf("cmp: %ld tensors byte-identical, %d differences\n", same, bad);
    return bad ? 1 : 0;
}

static int cmd_info(int argc, char **argv) {
    if (argc < 3)
        return 2;
    gfile a;
    if (gopen(argv[2], &a))
        return 2;
    for (int64_t i = 0; i < gguf_get_n_tensors(a.g); i++) {
        struct ggml_tensor *t = ggml_get_tensor(a.c, gguf_get_tensor_name(a.g, i));
        printf("%s %s", t->name, ggml_type_name(t->type));
        for (int d = 0; d < ggml_n_dims(t); d++)
            printf(d ? ",%lld" : " %lld", (long long)t->ne[d]);
        printf("\n");
    }
    for (int64_t i = 0; i < gguf_get_n_kv(a.g); i++) {
        const char *k = gguf_get_key(a.g, i);
        enum gguf_type ty = gguf_get_kv_type(a.g, i);
        printf("kv %s ", k);
        switch (ty) {
        case GGUF_TYPE_UINT32: printf("u32 %u\n", gguf_get_val_u32(a.g, i)); break;
        case GGUF_TYPE_INT32: printf("i32 %d\n", gguf_get_val_i32(a.g, i)); break;
        case GGUF_TYPE_FLOAT32: printf("f32 %.9g\n", (double)gguf_get_val_f32(a.g, i)); break;
        case GGUF_TYPE_BOOL: printf("bool %d\n", gguf_get_val_bool(a.g, i)); break;
        case GGUF_TYPE_STRING: printf("str %zu bytes\n", strlen(gguf_get_val_str(a.g, i))); break;
        case GGUF_TYPE_ARRAY: printf("array of %zu\n", gguf_get_arr_n(a.g, i)); break;
        default: printf("type %d\n", (int)ty); break;
        }
    }
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* gen / pp: MODEL N THREADS [repack|norepack] [mlock] -> the model and a
 * context of n + 64 positions with batches of n_batch / n_ubatch (0: n,
 * capped at 512 for the micro-batch), or NULL after a message. */
static struct llama_context *bench_ctx(int argc, char **argv, int *n, struct llama_model **m, bool pp) {
    if (argc < 5)
        return NULL;
    *n = atoi(argv[3]);
    int threads = atoi(argv[4]);
    if (*n < 1 || threads < 1)
        return NULL;
    g_no_repack = argc > 5 && strcmp(argv[5], "norepack") == 0;
    g_mlock = argc > 6 && strcmp(argv[6], "mlock") == 0;
    *m = open_model(argv[2]);
    if (!*m)
        return NULL;
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(*n + 64);
    cp.n_batch = pp ? (uint32_t)*n : 64;
    cp.n_ubatch = pp ? (uint32_t)(*n < 512 ? *n : 512) : 64;
    cp.n_threads = cp.n_threads_batch = threads;
    cp.n_seq_max = 1;
    struct llama_context *ctx = llama_init_from_model(*m, cp);
    if (!ctx)
        fprintf(stderr, "mk_llama: no context for %s\n", argv[2]);
    return ctx;
}

static int cmd_gen(int argc, char **argv) {
    int n;
    struct llama_model *m = NULL;
    struct llama_context *ctx = bench_ctx(argc, argv, &n, &m, false);
    if (!ctx)
        return 2;
    const struct llama_vocab *voc = llama_model_get_vocab(m);
    int nv = llama_vocab_n_tokens(voc);
    struct llama_batch b = llama_batch_init(4, 0, 1);
    for (int i = 0; i < 4; i++) {
        b.token[i] = i + 1;
        b.pos[i] = i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = i == 3;
    }
    b.n_tokens = 4;
    if (llama_decode(ctx, b) != 0) {
        fprintf(stderr, "mk_llama: llama_decode failed\n");
        return 2;
    }
    double t0 = 0;
    for (int t = 0; t < n; t++) {
        const float *lg = llama_get_logits_ith(ctx, -1);
        int best = 0;
        for (int i = 1; i < nv; i++)
            if (lg[i] > lg[best])
                best = i;
        if (t == 0)
            t0 = now_s(); /* decode alone: the prompt's forward is the prefill */
        b.token[0] = best;
        b.pos[0] = 4 + t;
        b.logits[0] = 1;
        b.n_tokens = 1;
        if (llama_decode(ctx, b) != 0) {
            fprintf(stderr, "mk_llama: llama_decode failed at token %d\n", t);
            return 2;
        }
    }
    double dt = now_s() - t0;
    printf("decode %.4f %d\n", n / dt, n);
    llama_batch_free(b);
    llama_free(ctx);
    llama_model_free(m);
    return 0;
}

/* pp MODEL N THREADS [repack|norepack] [mlock]: the prefill of N tokens
 * (ids 10 + (i * 7919 + 13) % (vocab - 20), as bench_peer.sh gives moekit)
 * from an empty context in llama-bench's batches (n_batch N, n_ubatch
 * 512), after one warm-up prefill; prints "prefill TOK/S N". For models
 * llama-bench cannot run with the extra buffer types (deepseek2 on
 * Sapphire Rapids: see cmd_logits). */
static int cmd_pp(int argc, char **argv) {
    int n;
    struct llama_model *m = NULL;
    struct llama_context *ctx = bench_ctx(argc, argv, &n, &m, true);
    if (!ctx)
        return 2;
    const int nv = llama_vocab_n_tokens(llama_model_get_vocab(m));
    struct llama_batch b = llama_batch_init(n, 0, 1);
    double dt = 0;
    for (int round = 0; round < 2; round++) { /* a warm-up, then the timed one */
        llama_memory_clear(llama_get_memory(ctx), true);
        for (int i = 0; i < n; i++) {
            b.token[i] = (int32_t)(((int64_t)(i + 1) * 7919 + 13) % (nv - 20) + 10);
            b.pos[i] = i;
            b.n_seq_id[i] = 1;
            b.seq_id[i][0] = 0;
            b.logits[i] = i == n - 1;
        }
        b.n_tokens = n;
        double t0 = now_s();
        if (llama_decode(ctx, b) != 0) {
            fprintf(stderr, "mk_llama: llama_decode failed\n");
            return 2;
        }
        llama_synchronize(ctx);
        dt = now_s() - t0;
    }
    printf("prefill %.4f %d\n", n / dt, n);
    llama_batch_free(b);
    llama_free(ctx);
    llama_model_free(m);
    return 0;
}

int main(int argc, char **argv) {
    llama_log_set(quiet_log, NULL);
    ggml_log_set(quiet_log, NULL);
    if (argc >= 2 && strcmp(argv[1], "logits") == 0)
        return cmd_logits(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "tokenize") == 0)
        return cmd_tokenize(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "cmp") == 0)
        return cmd_cmp(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "info") == 0)
        return cmd_info(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "gen") == 0)
        return cmd_gen(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "pp") == 0)
        return cmd_pp(argc, argv);
    fprintf(stderr, "usage: mk_llama logits MODEL IDS OUT [THREADS] | tokenize MODEL TEXTFILE | cmp A B | info A"
                    " | gen MODEL N THREADS [repack|norepack] [mlock] | pp MODEL N THREADS [repack|norepack] [mlock]\n");
    return 2;
}
