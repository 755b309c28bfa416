/* Helpers shared by the engine subcommands (run, logits, eval, profile):
 * number and id-list parsing, reading a text file whole, and opening a model
 * with an engine from common flags. */
#ifndef MK_TOOLS_ENGINE_CLI_H
#define MK_TOOLS_ENGINE_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "moekit/engine.h"
#include "moekit/expert_store.h"
#include "moekit/model.h"

/* Parse a decimal integer in [lo, hi]; false on junk or out of range. */
bool mk_ecli_int(const char *s, long long lo, long long hi, long long *out);
/* Parse a float; false on junk. */
bool mk_ecli_float(const char *s, float *out);
/* Parse "1,2,3" (commas and/or whitespace) into a malloc'd array. Returns
 * MK_E_ARG naming the bad item, MK_E_NOMEM. */
mk_status mk_ecli_ids(const char *s, int32_t **ids, int64_t *n);
/* --backend NAME: true for the names the engine commands take, "cpu" and
 * "cuda". */
bool mk_ecli_backend_name(const char *name);
/* The backend --backend NAME asks for: "cpu" gives *out = NULL (the engine
 * makes its own, threaded by --threads), "cuda" a CUDA backend on GPU 0
 * (MK_E_UNSUPPORTED saying why when moekit has no CUDA or no GPU is
 * present), with mm's --gpu-expert-vram (mm may be NULL). The caller
 * frees it after the engine that borrows it. */
struct mk_ecli_mem;
mk_status mk_ecli_backend(const char *name, const struct mk_ecli_mem *mm, mk_backend **out);
/* Read the rest of f into a malloc'd buffer (not NUL-terminated), its length
 * in *len. NULL when out of memory. A read error ends the read early: the
 * caller checks ferror(f) if it cares. f stays open. */
char *mk_ecli_read_all(FILE *f, size_t *len);
/* Read the whole file given with `flag` (for messages, e.g. "--text"): a
 * missing or unreadable file is an error with the OS reason, a directory is
 * MK_E_ARG (fread of one reads nothing on Linux: it must not pass for an
 * empty file). *buf is malloc'd, not NUL-terminated. */
mk_status mk_ecli_read_file(const char *flag, const char *path, char **buf, size_t *len);
/* Write n bytes to path atomically (temporary name, fsync, rename); an
 * existing path is replaced only with force. Check the path first with
 * mk_paths_check_file (io/outpath.h). */
mk_status mk_ecli_write(const char *path, const void *data, size_t n, bool force);
/* The model's tokenizer applied to the whole file given as --text (no
 * special tokens added): its ids, refusing a tokenizer whose added or
 * EOS/BOS ids fall outside the model's vocab_size. */
mk_status mk_ecli_tokenize_file(const char *model_dir, int64_t vocab, const char *path,
                                int32_t **ids, size_t *n);
/* A context of ctx positions (named `what`, e.g. "--ctx") against the
 * model's max_position_embeddings: beyond it is an error (MK_E_ARG) unless
 * `force` (--force-ctx); with warn_only, a warning on stderr instead. */
mk_status mk_ecli_check_ctx(const mk_model *m, int64_t ctx, const char *what, bool force, bool warn_only);
/* Bytes of memory this process may still use (MemAvailable, capped by
 * RLIMIT_AS/RLIMIT_DATA), for mk_engine_opts.mem_limit; 0 when unknown. */
uint64_t mk_ecli_mem_available(void);

/* ---- memory budget and expert streaming (run, logits, eval, profile) ----
 * One set of flags for every engine command:
 *   --memory-budget SIZE   the bound on the process: non-expert weights,
 *                          the context, a fixed overhead and the expert cache
 *   --expert-cache freq|lru, --io auto|uring|pread, --direct|--buffered,
 *   --stream-experts       stream even when the model would fit
 *   --cache-fill on|off    warm start: fill the expert cache before the
 *                          first token (default on when streaming)
 * mk_ecli_mem_model_open decides resident vs streaming and opens the model
 * accordingly; mk_ecli_mem_engine then sizes the expert cache to what the
 * budget leaves and creates the engine over it. */
#define MK_ECLI_OVERHEAD (96ull << 20) /* binary, tokenizer, heap, stacks, reader buffers */

typedef struct mk_ecli_mem {
    uint64_t budget;           /* --memory-budget; 0: automatic */
    mk_expert_policy policy;   /* --expert-cache */
    int io;                    /* --io: 0 auto, 1 io_uring, 2 pread */
    bool buffered;             /* --buffered (O_DIRECT is the default) */
    bool force_stream;         /* --stream-experts */
    bool quiet;                /* no startup line */
    bool no_trace;             /* do not record expert accesses for Belady's bound (a server
                                  runs for ever: the trace would grow to its cap, 512 MiB) */
    long long experts_per_tok; /* --experts-per-token (0: the model's) */
    const char *pin_profile;   /* --pin-profile */
    bool prefetch;             /* --prefetch */
    bool no_fill;              /* --cache-fill off: the expert cache starts empty */
    bool mlock;                /* --mlock: lock the resident model's weights in memory */
    bool load_mmap;            /* --load mmap: a resident model mapped, not copied (mk_model_opts
                                  copy_weights) */
    bool load_given;           /* --load was given (else: copy on the CPU, mmap on a device) */
    bool device_backend;       /* the command computes on a device (--backend cuda): set by the
                                  command before the model opens */
    uint64_t gpu_expert_vram;  /* --gpu-expert-vram: device bytes for routed experts with
                                  --backend cuda (0: the default, what fits) */
    uint64_t gpu_expert_cache; /* --gpu-expert-cache: device bytes of them for a cache of the
                                  most-routed experts of layers in host memory (0: none) */
    const char *cmd;           /* for messages */
    int engines;               /* engines the budget must hold (serve's slots); 0: one */
    uint64_t extra;            /* bytes the command holds besides the model and the engines
                                  (serve's prompt cache), counted in the budget with the context */
    int dist_bufs;             /* MPI exchange buffers this rank grows (tools/dist_cli.c sets it):
                                  bit 0 the expert exchange, bit 1 pipeline messages; counted in
                                  the budget with `extra` (0: none) */
    int ranks;                 /* MPI ranks sharing the routed experts (tools/dist_cli.h); 0 or 1:
                                  none. Each holds at most ceil(E/ranks) experts of a layer, which
                                  is what the budget counts */
    /* a pipeline stage (tools/dist_cli.h): when set, the weights this process holds of m
       (non-expert, routed experts) instead of all of them (or the rank's expert share) */
    mk_status (*held_fn)(void *user, const mk_model *m, uint64_t *resident, uint64_t *experts);
    void *held_user;
    int64_t plan_ctx;          /* the context the command's engines will hold, when known before
                                  the model opens (-1: the model's default, min(its
                                  max_position_embeddings, 4096)); 0: not known. The resident-or-
                                  stream choice counts those engines' arenas (mk_engine_bytes), so a
                                  budget the resident model fits but the model plus context does not
                                  streams instead of being refused */
    int plan_chunk;            /* their prefill chunk (0: the engine's default) */
    /* the share of the experts this process computes (mk_ecli_mem_engine sets them from its
       engine options: an MPI rank's partition, a pipeline stage), which is all the fill reads */
    const mk_moe_part *part;
    const mk_layer_pipe *pipe;
    /* decided */
    bool stream;
    uint64_t limit;            /* the bound in force (budget, or 90% of available) */
    mk_expert_store *store;
    uint64_t held;             /* arena bytes of the engines created so far */
} mk_ecli_mem;

#define MK_ECLI_MEM_OPTS                                                                              \
    {"memory-budget", required_argument, 0, 0x4d01}, {"expert-cache", required_argument, 0, 0x4d02},   \
        {"io", required_argument, 0, 0x4d03}, {"direct", no_argument, 0, 0x4d04},                      \
        {"stream-experts", no_argument, 0, 0x4d05}, {"experts-per-token", required_argument, 0, 0x4d06}, \
        {"pin-profile", required_argument, 0, 0x4d07}, {"buffered", no_argument, 0, 0x4d08},        \
        {"prefetch", no_argument, 0, 0x4d09}, {"mlock", no_argument, 0, 0x4d0a},                      \
        {"act-int8", required_argument, 0, 0x4d0b}, {"cache-fill", required_argument, 0, 0x4d0c},       \
        {"gpu-expert-vram", required_argument, 0, 0x4d0d}, {"load", required_argument, 0, 0x4d0e},     \
        {"gpu-expert-cache", required_argument, 0, 0x4d0f}

/* The help lines of those flags. */
extern const char mk_ecli_mem_help[];
/* Handle one of those options (ch from getopt_long); returns -1 when ch
 * is not one of them or it was handled, else the exit code of a usage
 * error (printed). *mine tells which. */
int mk_ecli_mem_flag(mk_ecli_mem *mm, int ch, const char *arg, bool *mine);
/* Open the model resident or for streaming (see above). */
mk_status mk_ecli_mem_model_open(mk_ecli_mem *mm, const char *path, const mk_model_opts *mo, mk_model **m);
/* Create the engine under the budget: streaming sizes the expert cache
 * from what is left after weights, the engines' arenas (mm->engines of
 * them) and the overhead (refusing, with the least budget that works, when
 * one token's experts do not fit); resident passes what is left as the
 * engine's mem_limit. Called again for more engines over the same model
 * (the server's slots), each borrows the same expert store and the budget
 * counts the arenas already created. */
mk_status mk_ecli_mem_engine(mk_ecli_mem *mm, const mk_model *m, const mk_engine_opts *eo, mk_engine **e);
/* Streaming only: create mm->store with an expert cache of what the budget
 * leaves after the non-expert weights, `arena` bytes of engine buffers,
 * `extra` bytes the command needs besides (counted with the context) and
 * the overhead; refused naming the least budget when one token's experts
 * do not fit. Prints the startup line. Then, unless --cache-fill off, fills
 * the cache's free slots (mk_expert_store_fill: the profile's next hottest
 * with --pin-profile, else an even share of every MoE layer; only the
 * experts of mm->part / mm->pipe) and prints what it read and how long it
 * took; a failed read is the error. */
mk_status mk_ecli_mem_store(mk_ecli_mem *mm, const mk_model *m, uint64_t arena, uint64_t extra);
/* --stats lines: peak_rss_bytes, sanitizer, experts_streamed (0/1), and
 * the expert store's counters when streaming. */
void mk_ecli_mem_stats(const mk_ecli_mem *mm, FILE *f);
/* Free the store (after the engine). */
void mk_ecli_mem_free(mk_ecli_mem *mm);

#endif
