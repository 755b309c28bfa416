/* Helpers shared by the engine subcommands; see engine_cli.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/resource.h>
#include <string.h>
#include <sys/stat.h>

#include <getopt.h>

#include "cli_flags.h"
#include "core/alloc.h"
#include "moekit/kernels.h"
#include "moekit/profile.h"
#include "cmd.h"
#include "engine_cli.h"
#include "moekit/backend_cuda.h"
#include "moekit/tokenizer.h"
#include "io/outfile.h"

bool mk_ecli_int(const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

bool mk_ecli_float(const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (end == s || *end || errno)
        return false;
    *out = v;
    return true;
}

mk_status mk_ecli_ids(const char *s, int32_t **ids, int64_t *n) {
    *ids = NULL;
    *n = 0;
    size_t cap = 16, k = 0;
    int32_t *v = malloc(cap * sizeof *v);
    if (!v)
        return mk_err(MK_E_NOMEM, "no memory for token ids");
    const char *p = s;
    while (*p) {
        while (*p == ',' || *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        if (!*p)
            break;
        char *end;
        errno = 0;
        long long x = strtoll(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX ||
            (*end && *end != ',' && *end != ' ' && *end != '\t' && *end != '\n' && *end != '\r')) {
            free(v);
            return mk_err(MK_E_ARG, "--ids: bad item at offset %ld of '%.40s' (expected integers "
                          "from 0 to %d separated by commas)", (long)(p - s), s, INT32_MAX);
        }
        if (k == cap) {
            int32_t *nv = realloc(v, 2 * cap * sizeof *v);
            if (!nv) {
                free(v);
                return mk_err(MK_E_NOMEM, "no memory for token ids");
            }
            v = nv;
            cap *= 2;
        }
        v[k++] = (int32_t)x;
        p = end;
    }
    *ids = v;
    *n = (int64_t)k;
    return MK_OK;
}

uint64_t mk_ecli_mem_available(void) {
    uint64_t avail = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        unsigned long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
                avail = (uint64_t)kb * 1024;
                break;
            }
        fclose(f);
    }
    if (!avail) {
        long pages = sysconf(_SC_AVPHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
        avail = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : 0;
    }
    static const int lims[] = {RLIMIT_AS, RLIMIT_DATA};
    for (int i = 0; i < 2; i++) {
        struct rlimit rl;
        if (getrlimit(lims[i], &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
            (!avail || rl.rlim_cur < avail))
            avail = (uint64_t)rl.rlim_cur;
    }
    return avail;
}

bool mk_ecli_backend_name(const char *name) {
    return !strcmp(name, "cpu") || !strcmp(name, "cuda");
}

mk_status mk_ecli_backend(const char *name, const struct mk_ecli_mem *mm, mk_backend **out) {
    *out = NULL;
    if (!name || !strcmp(name, "cpu"))
        return MK_OK;
    if (!strcmp(name, "cuda")) {
        MK_TRY(mk_err_wrap(mk_backend_cuda_create(0, out), "--backend cuda"));
        if (mm && mm->gpu_expert_vram)
            mk_backend_cuda_set_expert_vram(*out, (size_t)mm->gpu_expert_vram);
        if (mm && mm->gpu_expert_cache)
            mk_backend_cuda_set_expert_cache(*out, (size_t)mm->gpu_expert_cache);
        return MK_OK;
    }
    return mk_err(MK_E_ARG, "--backend: expected cpu or cuda, found '%s'", name);
}

char *mk_ecli_read_all(FILE *f, size_t *len) {
    size_t cap = 1 << 16, got;
    char *buf = malloc(cap);
    *len = 0;
    while (buf && (got = fread(buf + *len, 1, cap - *len, f)) > 0) {
        *len += got;
        if (*len == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
    }
    return buf;
}

mk_status mk_ecli_write(const char *path, const void *data, size_t n, bool force) {
    return mk_outfile_write(path, data, n, force);
}

mk_status mk_ecli_read_file(const char *flag, const char *path, char **buf, size_t *len) {
    *buf = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return mk_err(errno == ENOENT ? MK_E_NOTFOUND : MK_E_IO, "%s %s: cannot open: %s", flag, path,
                      strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && S_ISDIR(sb.st_mode)) {
        fclose(f);
        return mk_err(MK_E_ARG, "%s %s: is a directory, expected a text file", flag, path);
    }
    char *b = mk_ecli_read_all(f, len);
    int rerr = ferror(f) ? errno : 0;
    fclose(f);
    if (!b)
        return mk_err(MK_E_NOMEM, "%s %s: no memory to read it", flag, path);
    if (rerr) {
        free(b);
        *len = 0;
        return mk_err(MK_E_IO, "%s %s: read failed: %s", flag, path, strerror(rerr));
    }
    *buf = b;
    return MK_OK;
}

mk_status mk_ecli_check_ctx(const mk_model *m, int64_t ctx, const char *what, bool force, bool warn_only) {
    int mp = mk_model_config(m)->max_position_embeddings;
    if (mp <= 0 || ctx <= mp || force)
        return MK_OK;
    if (warn_only) {
        fprintf(stderr, "moekit: warning: %s of %lld positions exceeds the model's max_position_embeddings "
                "%d: positions beyond it were never trained\n", what, (long long)ctx, mp);
        return MK_OK;
    }
    return mk_err(MK_E_ARG, "%s %lld exceeds the model's max_position_embeddings %d (config.json): positions "
                  "beyond it were never trained; use at most %d or pass --force-ctx", what, (long long)ctx, mp,
                  mp);
}

mk_status mk_ecli_tokenize_file(const char *model_dir, int64_t vocab, const char *path,
                                int32_t **ids, size_t *n) {
    char *buf;
    size_t len;
    MK_TRY(mk_ecli_read_file("--text", path, &buf, &len));
    mk_tok *tok = NULL;
    mk_status st = mk_tok_load(model_dir, &tok);
    if (st == MK_OK)
        st = mk_tok_check_model_vocab(tok, vocab);
    if (st == MK_OK)
        st = mk_tok_encode(tok, buf, len, 0, ids, n);
    if (st == MK_E_ARG) /* invalid UTF-8: say which file */
        st = mk_err_wrap(st, "--text %s", path);
    free(buf);
    mk_tok_free(tok);
    return st;
}

/* ---- memory budget and expert streaming ---------------------------------- */

const char mk_ecli_mem_help[] =
    "  --memory-budget SIZE  bound this process's memory (e.g. 6G): non-expert weights, the\n"
    "                       context (KV cache, recurrent state, scratch; under MPI also the\n"
    "                       rank's exchange buffers), a fixed 96 MiB\n"
    "                       overhead, and a cache of routed experts, which are then read from\n"
    "                       the checkpoint files on demand (never mapped). Refused, naming the\n"
    "                       least budget that works, when one token's experts do not fit.\n"
    "                       Default: the model stays resident when it and its context (when\n"
    "                       known at startup: --ctx, chat, serve's slots) fit the budget or\n"
    "                       90% of the available memory, else experts stream under that\n"
    "                       bound; the choice is printed at startup\n"
    "  --stream-experts     stream experts even when the model would fit\n"
    "  --expert-cache POL   freq (default: decayed use counts) or lru\n"
    "  --io MODE            auto (io_uring when the kernel allows, else a pread pool), uring,\n"
    "                       pread\n"
    "  --direct, --buffered  expert reads with O_DIRECT (the default: bypass the page cache,\n"
    "                       straight into the cache's aligned slots; per file, buffered where the\n"
    "                       file system refuses) or through the page cache (measure both with\n"
    "                       moekit bench-disk; bench/RESULTS.md has this machine's numbers)\n"
    "  --pin-profile P      streaming: read the most used experts of `moekit profile`'s P\n"
    "                       (routing frequencies measured on calibration text) at startup and\n"
    "                       keep them for good, up to half the expert cache\n"
    "  --cache-fill on|off  streaming: before the first token, fill the expert cache's free\n"
    "                       slots (with --pin-profile: the profile's next hottest experts;\n"
    "                       else the same count of every MoE layer's, lowest index first),\n"
    "                       read in file order in long sequential requests, so the first\n"
    "                       tokens hit where an empty cache would miss. Costs startup time,\n"
    "                       about the cache's size / the disk's sequential read rate (moekit\n"
    "                       bench-disk), and no memory beyond the budget, which counts the\n"
    "                       cache already; filled experts are evicted first until used.\n"
    "                       Default on; the startup line says what it read and how long it\n"
    "                       took (--stats: hits on filled experts)\n"
    "  --prefetch           streaming: while a layer computes, read the experts the next\n"
    "                       layer will likely use (its router applied to this layer's input;\n"
    "                       decode only). Results are unchanged; wrong guesses cost reads\n"
    "                       (--stats counts guesses and how many were used)\n"
    "  --experts-per-token K  route each token to only its best K experts (fewer than the\n"
    "                       model's): less to read and compute, but NOT the model's output;\n"
    "                       warns at startup. Measure what it costs with eval --ref\n"
    "  --gpu-expert-vram SIZE|auto  with --backend cuda: device memory for the routed experts\n"
    "                       (e.g. 40G; 0: none). The experts of the MoE layers past it stay in\n"
    "                       pinned host RAM, which the GPU's kernels read over the bus each\n"
    "                       token (like llama.cpp's --n-cpu-moe, but computed on the GPU).\n"
    "                       auto (default): layers in device memory while they fit, leaving\n"
    "                       2 GiB free; the host part takes pinned RAM of its size\n"
    "  --gpu-expert-cache SIZE  with --backend cuda: SIZE (e.g. 4G) more device memory for\n"
    "                       the most-routed experts of the layers left in host RAM: routing\n"
    "                       counts decayed every 16 steps pick them, copies run beside the\n"
    "                       decode, results are unchanged. Default 0 (none)\n"
    "  --load copy|mmap     a resident model's weights: copy (default on the CPU) reads the files once\n"
    "                       into anonymous memory with transparent huge pages (2 MiB pages:\n"
    "                       decode streams every weight each token, and 4 KiB file pages miss\n"
    "                       the TLB on each: 1.6x faster decode measured on a VM); mmap maps\n"
    "                       the files (pages read on first use, shared with the page cache,\n"
    "                       nothing copied; the default with --backend cuda, whose weights live\n"
    "                       on the device). Streamed experts are read either way\n"
    "  --mlock              lock the model's weights in memory (as llama.cpp's --mlock): the\n"
    "                       kernel never reclaims them, so decode never waits for the disk;\n"
    "                       needs RLIMIT_MEMLOCK (ulimit -l) above the model size and a\n"
    "                       resident model\n"
    "  --act-int8 on|off    products over MLX affine 4/8-bit weights on int8 activations\n"
    "                       (on: integer dot products, the faster decode and prefill, an\n"
    "                       approximation like llama.cpp's: x rounded to 8 bits per block\n"
    "                       of 32, logits ~2e-3 relative apart) or on float activations\n"
    "                       (off: within float32 rounding of the exact product). Default:\n"
    "                       on with the x86 kernels (AVX2 and up) and with --backend cuda\n"
    "                       (whose decode kernels round x to the CPU's very bits), off with\n"
    "                       MK_KERNELS=ref and on other CPUs (the GPU stays on unless this\n"
    "                       flag says off). Other weight formats are float either way.\n"
    "                       MK_ACT_INT8=1|0 in the environment does what this flag does\n"
    "                       (the flag wins); MK_PREFILL_INT8=1|0 forces prefill (several\n"
    "                       tokens) alone on or off\n";

int mk_ecli_mem_flag(mk_ecli_mem *mm, int ch, const char *arg, bool *mine) {
    *mine = true;
    switch (ch) {
    case 0x4d01: {
        unsigned long long v;
        if (!mk_cli_parse_size(arg, &v) || v == 0)
            return mk_cli_usage(mm->cmd, "--memory-budget: expected a size such as 6G or 512M, got '%s'",
                                arg);
        mm->budget = v;
        return -1;
    }
    case 0x4d02:
        if (!strcmp(arg, "freq"))
            mm->policy = MK_EXPERT_FREQ;
        else if (!strcmp(arg, "lru"))
            mm->policy = MK_EXPERT_LRU;
        else
            return mk_cli_usage(mm->cmd, "--expert-cache: expected freq or lru, got '%s'", arg);
        return -1;
    case 0x4d03:
        if (!strcmp(arg, "auto"))
            mm->io = 0;
        else if (!strcmp(arg, "uring"))
            mm->io = 1;
        else if (!strcmp(arg, "pread"))
            mm->io = 2;
        else
            return mk_cli_usage(mm->cmd, "--io: expected auto, uring or pread, got '%s'", arg);
        return -1;
    case 0x4d04: mm->buffered = false; return -1;
    case 0x4d08: mm->buffered = true; return -1;
    case 0x4d0a: mm->mlock = true; return -1;
    case 0x4d0b: /* process-wide, before any engine exists (kernels.h) */
        if (!strcmp(arg, "on"))
            mk_kernels_set_int8(true);
        else if (!strcmp(arg, "off"))
            mk_kernels_set_int8(false);
        else
            return mk_cli_usage(mm->cmd, "--act-int8: expected on or off, got '%s'", arg);
        return -1;
    case 0x4d05: mm->force_stream = true; return -1;
    case 0x4d0c:
        if (!strcmp(arg, "on"))
            mm->no_fill = false;
        else if (!strcmp(arg, "off"))
            mm->no_fill = true;
        else
            return mk_cli_usage(mm->cmd, "--cache-fill: expected on or off, got '%s'", arg);
        return -1;
    case 0x4d0d: {
        unsigned long long v;
        if (!strcmp(arg, "auto"))
            v = 0;
        else if (!mk_cli_parse_size(arg, &v))
            return mk_cli_usage(mm->cmd, "--gpu-expert-vram: expected a size such as 40G, 0 or auto, got '%s'",
                                arg);
        else if (v == 0)
            v = 1; /* "0": no expert in device memory (1 byte holds none) */
        mm->gpu_expert_vram = v;
        return -1;
    }
    case 0x4d0f: {
        unsigned long long v;
        if (!mk_cli_parse_size(arg, &v))
            return mk_cli_usage(mm->cmd, "--gpu-expert-cache: expected a size such as 4G or 0, got '%s'", arg);
        mm->gpu_expert_cache = v;
        return -1;
    }
    case 0x4d0e:
        mm->load_given = true;
        if (!strcmp(arg, "copy"))
            mm->load_mmap = false;
        else if (!strcmp(arg, "mmap"))
            mm->load_mmap = true;
        else
            return mk_cli_usage(mm->cmd, "--load: expected copy or mmap, got '%s'", arg);
        return -1;
    case 0x4d07: mm->pin_profile = arg; return -1;
    case 0x4d09: mm->prefetch = true; return -1;
    case 0x4d06: {
        int rc = mk_flag_int(mm->cmd, "--experts-per-token", arg, 1, 4096, &mm->experts_per_tok);
        return rc >= 0 ? rc : -1;
    }
    default: *mine = false; return -1;
    }
}

static double gib(uint64_t b) { return (double)b / (double)(1ull << 30); }

/* The routed-expert bytes this process holds: all of them, or under MPI
 * its share (at most ceil(E/ranks) of each layer's E). */
static uint64_t held_expert_bytes(const mk_ecli_mem *mm, const mk_model *m) {
    uint64_t b = mk_model_expert_bytes(m);
    int64_t E = mk_model_config(m)->num_experts;
    uint64_t r = 0, x = 0;
    if (mm->held_fn && mm->held_fn(mm->held_user, m, &r, &x) == MK_OK)
        return x;
    if (mm->ranks <= 1 || E <= 0)
        return b;
    return b / (uint64_t)E * (uint64_t)((E + mm->ranks - 1) / mm->ranks);
}

/* The non-expert weights this process holds: all, or a pipeline stage's. */
static uint64_t held_resident_bytes(const mk_ecli_mem *mm, const mk_model *m) {
    uint64_t r = 0, x = 0;
    if (mm->held_fn && mm->held_fn(mm->held_user, m, &r, &x) == MK_OK)
        return r;
    return mk_model_resident_bytes(m);
}

/* The MPI exchange buffers this rank grows to (src/dist/dist_mpi.c grows
 * them on demand to the largest message of the run): the expert exchange
 * sends this rank's and receives the others' rows of a forward's k expert
 * outputs (at most chunk * k rows of H floats each way); a pipeline message
 * is a chunk's hidden rows or, to the lead, its logits rows (chunk rows of
 * max(H, V) floats); each with a header. A forward holds at most the
 * prefill chunk's tokens, and no more than the planned context. 0 without
 * MPI. */
static uint64_t dist_bytes(const mk_ecli_mem *mm, const mk_model *m) {
    if (!mm->dist_bufs)
        return 0;
    const mk_config *c = mk_model_config(m);
    uint64_t chunk = mm->plan_chunk > 0 ? (uint64_t)mm->plan_chunk : 512; /* a forward's most tokens */
    if (mm->plan_ctx > 0 && (uint64_t)mm->plan_ctx < chunk)
        chunk = (uint64_t)mm->plan_ctx;
    const uint64_t H = (uint64_t)c->hidden_size, V = (uint64_t)c->vocab_size, hdr = 4096;
    uint64_t b = 0;
    if (mm->dist_bufs & 1)
        b += 2 * (chunk * (uint64_t)c->num_experts_per_tok * H * sizeof(float) + hdr);
    if (mm->dist_bufs & 2)
        b += chunk * (H > V ? H : V) * sizeof(float) + hdr;
    return b;
}

/* What the command holds besides the model and its engines: mm->extra and
 * the MPI exchange buffers. */
static uint64_t held_extra(const mk_ecli_mem *mm, const mk_model *m) {
    return mm->extra + dist_bytes(mm, m);
}

/* The arenas of the engines the command plans (mm->plan_ctx), with what it
 * holds besides them as far as known now (held_extra): 0 when not known. */
static uint64_t plan_arena(const mk_ecli_mem *mm, const mk_model *m) {
    if (!mm->plan_ctx)
        return 0;
    int64_t ctx = mm->plan_ctx;
    if (ctx < 0) {
        int mp = mk_model_config(m)->max_position_embeddings;
        ctx = mp > 0 && mp < 4096 ? mp : 4096;
    }
    mk_engine_opts o = {.max_ctx = ctx, .prefill_chunk = mm->plan_chunk};
    /* host memory: a device backend's caches and activations are the device's */
    return (uint64_t)mk_engine_host_bytes(m, &o, mm->device_backend) * (uint64_t)(mm->engines > 1 ? mm->engines : 1) +
           held_extra(mm, m);
}

static mk_status mem_model_open(mk_ecli_mem *mm, const char *path, const mk_model_opts *mo_in, mk_model **m) {
    *m = NULL;
    /* a resident model's weights are copied into huge-page memory unless --load mmap (model.h);
     * on a device backend mapped unless asked: the device computes from its own copy, and a host
     * copy would hold the model's size in RAM for nothing */
    mk_model_opts ro = *mo_in;
    ro.copy_weights = mm->load_given ? !mm->load_mmap : !mm->device_backend;
    const mk_model_opts *mo = &ro;
    uint64_t avail = mk_ecli_mem_available();
    mm->limit = mm->budget ? mm->budget : avail / 10 * 9;
    bool want_stream = mm->force_stream || mm->budget;
    if (!want_stream && !mm->limit) /* nothing known about memory: as before, resident */
        return mk_model_open_ex(path, mo, m);
    mk_model_opts so = *mo;
    so.stream_experts = true;
    mk_model *sm = NULL;
    mk_status st = mk_model_open_ex(path, &so, &sm);
    if (st != MK_OK)
        return st;
    if (mm->held_fn) { /* a pipeline stage: its layer ranges must suit the model */
        uint64_t r, x;
        if ((st = mm->held_fn(mm->held_user, sm, &r, &x)) != MK_OK) {
            mk_model_free(sm);
            return st;
        }
    }
    /* resident when the model and its planned context fit; when they do not
     * but streaming cannot hold that context either, the choice is made on
     * the weights alone, so the refusal is the context's own (lower --ctx) */
    uint64_t base = held_resident_bytes(mm, sm) + MK_ECLI_OVERHEAD, arena = plan_arena(mm, sm);
    uint64_t least_stream = base + arena + (uint64_t)mk_model_config(sm)->num_experts_per_tok *
                                               mk_expert_store_slot_bytes(sm);
    if (least_stream > mm->limit)
        arena = 0;
    uint64_t need = base + held_expert_bytes(mm, sm) + arena;
    if (mk_model_expert_bytes(sm) == 0 || (!mm->force_stream && need <= mm->limit)) {
        /* fits (or nothing to stream): resident, as a model always was */
        mk_model_free(sm);
        mm->stream = false;
        return mk_model_open_ex(path, mo, m);
    }
    mm->stream = true;
    *m = sm;
    return MK_OK;
}

mk_status mk_ecli_mem_model_open(mk_ecli_mem *mm, const char *path, const mk_model_opts *mo, mk_model **m) {
    if (mm->mlock && (mm->force_stream || mm->budget))
        return mk_err(MK_E_ARG, "%s: --mlock locks a resident model; it does not go with --stream-experts or "
                                "--memory-budget", mm->cmd);
    MK_TRY(mem_model_open(mm, path, mo, m));
    if (!mm->mlock)
        return MK_OK;
    mk_status st = mk_model_mlock(*m);
    if (st != MK_OK) {
        mk_model_free(*m);
        *m = NULL;
    }
    return st;
}

typedef struct hot {
    double f;
    int layer, e;
} hot;

static int hot_cmp(const void *a, const void *b) {
    const hot *x = a, *y = b;
    return x->f < y->f ? 1 : x->f > y->f ? -1 : x->layer != y->layer ? x->layer - y->layer : x->e - y->e;
}

/* The `cap` most used experts of profile `path` (routing frequency), for m. */
static mk_status hottest(const char *path, const mk_model *m, int cap, int **pl, int **pe, int *n) {
    *pl = *pe = NULL;
    *n = 0;
    mk_prof *p = NULL;
    mk_status st = mk_prof_load(path, &p);
    if (st == MK_OK && (st = mk_prof_check_model(p, m)) != MK_OK)
        mk_err_wrap(st, "--pin-profile %s", path);
    size_t total = 0;
    for (int i = 0; st == MK_OK && i < mk_prof_route_layers(p); i++) {
        int l, E;
        const double *f, *w;
        if (mk_prof_route(p, i, &l, &E, &f, &w))
            total += (size_t)E;
    }
    hot *h = st == MK_OK ? mk_calloc(total ? total : 1, sizeof *h) : NULL;
    if (st == MK_OK && !h)
        st = mk_err(MK_E_NOMEM, "--pin-profile %s: no memory to rank %zu experts", path, total);
    size_t k = 0;
    for (int i = 0; st == MK_OK && i < mk_prof_route_layers(p); i++) {
        int l, E;
        const double *f, *w;
        if (mk_prof_route(p, i, &l, &E, &f, &w))
            for (int e = 0; e < E; e++)
                h[k++] = (hot){f[e], l, e};
    }
    if (st == MK_OK && k == 0)
        st = mk_err(MK_E_ARG, "--pin-profile %s: the profile has no routing statistics", path);
    if (st == MK_OK) {
        qsort(h, k, sizeof *h, hot_cmp);
        int want = (int)(k < (size_t)cap ? k : (size_t)cap);
        *pl = mk_malloc((size_t)(want ? want : 1) * sizeof **pl);
        *pe = mk_malloc((size_t)(want ? want : 1) * sizeof **pe);
        if (!*pl || !*pe)
            st = mk_err(MK_E_NOMEM, "--pin-profile %s: no memory for %d pins", path, want);
        for (int i = 0; st == MK_OK && i < want; i++) {
            (*pl)[i] = h[i].layer;
            (*pe)[i] = h[i].e;
        }
        if (st == MK_OK)
            *n = want;
    }
    if (st != MK_OK) {
        free(*pl);
        free(*pe);
        *pl = *pe = NULL;
    }
    free(h);
    mk_prof_free(p);
    return st;
}

mk_status mk_ecli_mem_engine(mk_ecli_mem *mm, const mk_model *m, const mk_engine_opts *eo, mk_engine **e) {
    *e = NULL;
    mk_engine_opts o = *eo;
    if (mm->gpu_expert_vram && (!o.backend || strcmp(mk_backend_iface(o.backend)->name, "cuda")))
        return mk_err(MK_E_ARG, "--gpu-expert-vram places experts for the CUDA backend: give --backend cuda "
                                "(%s runs on the CPU here)", mm->cmd);
    if (mm->gpu_expert_cache && (!o.backend || strcmp(mk_backend_iface(o.backend)->name, "cuda")))
        return mk_err(MK_E_ARG, "--gpu-expert-cache keeps experts for the CUDA backend: give --backend cuda "
                                "(%s runs on the CPU here)", mm->cmd);
    if (mm->experts_per_tok) {
        int k = mk_model_config(m)->num_experts_per_tok;
        if (mm->experts_per_tok >= k)
            return mk_err(MK_E_ARG, "--experts-per-token %lld: the model routes each token to %d experts; "
                          "give fewer (or drop the flag for the model's own)", mm->experts_per_tok, k);
        o.experts_per_tok = (int)mm->experts_per_tok;
        if (!mm->held) /* once, not per engine of a server */
            fprintf(stderr, "moekit %s: warning: --experts-per-token %lld routes each token to %lld of the "
                "model's %d experts: faster, but not the model's output (measure it with eval --ref)\n",
                mm->cmd, mm->experts_per_tok, mm->experts_per_tok, k);
    }
    uint64_t weights = held_resident_bytes(mm, m);
    bool first = mm->held == 0;
    if (!mm->stream) {
        if (mm->budget) {
            uint64_t used = weights + held_expert_bytes(mm, m) + MK_ECLI_OVERHEAD + mm->held + held_extra(mm, m);
            o.mem_limit = mm->budget > used ? mm->budget - used : 1;
        } else if (!o.mem_limit) {
            o.mem_limit = mk_ecli_mem_available();
        }
        if (!mm->quiet && mm->budget && first)
            fprintf(stderr, "moekit %s: model resident (%.2f GiB of weights within the %.2f GiB budget)\n",
                    mm->cmd, gib(weights + held_expert_bytes(mm, m)), gib(mm->budget));
        MK_TRY(mk_engine_create(m, &o, e));
        mm->held += mk_engine_arena_bytes(*e);
        return MK_OK;
    }
    if (mm->store) { /* another engine over the same store: its arena was counted */
        o.store = mm->store;
        o.prefetch_experts = mm->prefetch;
        o.mem_limit = 0;
        MK_TRY(mk_engine_create(m, &o, e));
        mm->held += mk_engine_arena_bytes(*e);
        return MK_OK;
    }
    if (o.backend && !mk_backend_iface(o.backend)->host_mem && !mk_backend_iface(o.backend)->host_changed)
        return mk_err(MK_E_UNSUPPORTED,
                      "experts streamed from SSD are not wired to the %s backend (it keeps device "
                      "copies keyed by host memory, which the expert cache reuses): use --backend cpu, "
                      "or drop --memory-budget / --stream-experts%s",
                      mk_backend_iface(o.backend)->name,
                      mm->budget || mm->force_stream ? "" : " (the model does not fit 90% of the available memory)");
    /* the fill reads only the experts these engines compute */
    mm->part = o.moe_part;
    mm->pipe = o.layer_pipe;
    /* every engine of a server (mm->engines) over this one store: all their arenas */
    MK_TRY(mk_ecli_mem_store(mm, m, mk_engine_bytes(m, &o) * (uint64_t)(mm->engines > 1 ? mm->engines : 1),
                             held_extra(mm, m)));
    o.store = mm->store;
    o.prefetch_experts = mm->prefetch;
    o.mem_limit = 0; /* the arena is counted in the budget */
    mk_status s = mk_engine_create(m, &o, e);
    if (s != MK_OK) {
        mk_expert_store_free(mm->store);
        mm->store = NULL;
    } else {
        mm->held += mk_engine_arena_bytes(*e);
    }
    return s;
}

/* --cache-fill: the store's free slots filled before the first token, with
 * the profile's ranking (pl, pe, n; the pins are its head) or an even share
 * of the MoE layers whose experts this process computes (mm->part,
 * mm->pipe). */
static mk_status mem_fill(mk_ecli_mem *mm, const mk_model *m, const int *pl, const int *pe, int n) {
    const mk_config *c = mk_model_config(m);
    int32_t *range = NULL;
    int layers = 0; /* MoE layers with experts here */
    if (mm->part || mm->pipe) {
        range = mk_malloc((size_t)c->num_layers * 2 * sizeof *range);
        if (!range)
            return mk_err(MK_E_NOMEM, "--cache-fill: no memory for %d layers' expert ranges", c->num_layers);
    }
    for (int l = 0; l < c->num_layers; l++) {
        int32_t lo = 0, hi = c->num_experts;
        if (mm->pipe && (l < mm->pipe->first || l >= mm->pipe->last))
            hi = 0;
        else if (mm->part && mk_model_expert_loc(m, l, 0))
            mm->part->range(mm->part->user, l, &lo, &hi);
        if (range) {
            range[2 * l] = lo;
            range[2 * l + 1] = hi;
        }
        layers += mk_model_expert_loc(m, l, 0) && lo < hi;
    }
    mk_fill_opts fo = {.pref_layer = pl, .pref_expert = pe, .n_pref = n, .range = range};
    mk_status st = mk_expert_store_fill(mm->store, &fo);
    free(range);
    mk_expert_stats es;
    mk_expert_store_stats(mm->store, &es);
    if (st != MK_OK)
        return mk_err_wrap(st, "filling the expert cache before the first token (--cache-fill off starts "
                           "with it empty)");
    if (mm->quiet)
        return MK_OK;
    char what[96];
    if (n)
        snprintf(what, sizeof what, "the profile's hottest after the pinned");
    else
        snprintf(what, sizeof what, "%d of each of %d MoE layer%s", layers ? es.filled / layers : 0, layers,
                 layers == 1 ? "" : "s");
    if (es.filled == 0)
        fprintf(stderr, "moekit %s: expert cache fill: nothing to read (%d free slots%s)\n", mm->cmd,
                es.slots - es.pinned, n ? "" : ", fewer than one per MoE layer");
    else
        fprintf(stderr, "moekit %s: expert cache filled before the first token: %d experts (%s), %.1f MiB in "
                "%llu reads, %.3f s (--cache-fill off starts empty)\n",
                mm->cmd, es.filled, what, (double)es.fill_bytes / 1048576.0, (unsigned long long)es.fill_reads,
                es.fill_s);
    return MK_OK;
}

mk_status mk_ecli_mem_store(mk_ecli_mem *mm, const mk_model *m, uint64_t arena, uint64_t extra) {
    const mk_config *c = mk_model_config(m);
    uint64_t weights = held_resident_bytes(mm, m);
    uint64_t slot = mk_expert_store_slot_bytes(m);
    arena += extra;
    uint64_t fixed = weights + arena + MK_ECLI_OVERHEAD;
    uint64_t least = fixed + (uint64_t)c->num_experts_per_tok * slot;
    if (mm->limit < least)
        return mk_err(MK_E_ARG,
                      "%s %.2f GiB is too small for %s: non-expert weights %.2f GiB + context %.2f GiB "
                      "(it grows with the context and --prefill-chunk) + overhead %.2f GiB + one token's %d "
                      "experts %.3f GiB need at least %llu bytes (%.2f GiB)",
                      mm->budget ? "--memory-budget" : "available memory (90%)", gib(mm->limit),
                      mk_model_dir(m), gib(weights), gib(arena), gib(MK_ECLI_OVERHEAD),
                      c->num_experts_per_tok, gib((uint64_t)c->num_experts_per_tok * slot),
                      (unsigned long long)least, gib(least));
    mk_stream_opts so = {.cache_bytes = mm->limit - fixed, .policy = mm->policy, .io = mm->io,
                         .direct = !mm->buffered, .record_trace = !mm->no_trace};
    int *pl = NULL, *pe = NULL, nrank = 0;
    if (mm->pin_profile) {
        /* the ranking as far as the cache goes: its first half pinned, the rest filled */
        uint64_t nslots = so.cache_bytes / slot;
        int cap = nslots > INT32_MAX ? INT32_MAX : (int)nslots;
        MK_TRY(hottest(mm->pin_profile, m, cap, &pl, &pe, &nrank));
        so.pin_layer = pl;
        so.pin_expert = pe;
        so.n_pin = nrank < cap / 2 ? nrank : cap / 2;
    }
    mk_status cs = mk_expert_store_stream(m, &so, &mm->store);
    if (cs != MK_OK) {
        free(pl);
        free(pe);
        return cs;
    }
    mk_expert_stats st;
    mk_expert_store_stats(mm->store, &st);
    if (!mm->quiet)
        fprintf(stderr,
                "moekit %s: experts streamed from %s: %s %.2f GiB = weights %.2f + context %.2f + "
                "overhead %.2f + expert cache %.2f GiB (%d of %llu experts, %d pinned, %s, %s)\n",
                mm->cmd, mk_model_dir(m), mm->budget ? "budget" : "90% of available", gib(mm->limit),
                gib(weights), gib(arena), gib(MK_ECLI_OVERHEAD), gib((uint64_t)st.slots * st.slot_bytes),
                st.slots, (unsigned long long)c->num_experts * (unsigned long long)c->num_layers, st.pinned,
                mm->policy == MK_EXPERT_LRU ? "LRU" : "FREQ", st.io);
    cs = mm->no_fill ? MK_OK : mem_fill(mm, m, pl, pe, nrank);
    free(pl);
    free(pe);
    if (cs != MK_OK) { /* as when the store could not be made: the caller holds none */
        mk_expert_store_free(mm->store);
        mm->store = NULL;
    }
    return cs;
}

void mk_ecli_mem_stats(const mk_ecli_mem *mm, FILE *f) {
    fprintf(f, "peak_rss_bytes %llu\nsanitizer %d\nexperts_streamed %d\n",
            (unsigned long long)mk_cli_peak_rss(), mk_cli_sanitized(), mm->stream);
    if (!mm->store)
        return;
    /* guesses still in flight end and are counted; refused only after a run that stopped
     * mid-layer (an error), whose counts are printed as they stand */
    (void)mk_expert_store_settle(mm->store);
    mk_expert_stats st;
    mk_expert_store_stats(mm->store, &st);
    double hit = st.uses ? (double)st.hits / (double)st.uses : 0.0;
    uint64_t bytes = st.bytes_read, reads = st.reads; /* the run's: the fill has its own line */
    fprintf(f,
            "experts: %llu uses, hit rate %.3f (Belady oracle %.3f), %.1f MiB read in %llu reads, I/O "
            "wait %.3f s (%.1f MB/s while waiting), cache %d x %.2f MiB (%s), peak RSS %.1f MiB\n",
            (unsigned long long)st.uses, hit, st.oracle_hit, (double)bytes / 1048576.0,
            (unsigned long long)reads, st.io_wait_s,
            st.io_wait_s > 0 ? (double)bytes / st.io_wait_s / 1e6 : 0.0, st.slots,
            (double)st.slot_bytes / 1048576.0, st.io, (double)mk_cli_peak_rss() / 1048576.0);
    if (!mm->no_fill)
        fprintf(f, "fill: %d experts, %.1f MiB in %llu reads, %.3f s before the first token; %llu hits on "
                "filled experts (%llu of the %d used)\n",
                st.filled, (double)st.fill_bytes / 1048576.0, (unsigned long long)st.fill_reads, st.fill_s,
                (unsigned long long)st.fill_hits, (unsigned long long)st.fill_used, st.filled);
    if (mm->prefetch)
        fprintf(f, "prefetch: %llu experts guessed, %llu used (%.3f of guesses, %.3f of uses), %.1f MiB read "
                "on guesses, %llu dropped after a failed read\n",
                (unsigned long long)st.pf_issued, (unsigned long long)st.pf_hits,
                st.pf_issued ? (double)st.pf_hits / (double)st.pf_issued : 0.0,
                st.uses ? (double)st.pf_hits / (double)st.uses : 0.0, (double)st.pf_bytes / 1048576.0,
                (unsigned long long)st.pf_failed);
}

void mk_ecli_mem_free(mk_ecli_mem *mm) {
    mk_expert_store_free(mm->store);
    mm->store = NULL;
}
