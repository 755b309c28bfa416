/* The expert store: where the forward pass gets routed experts from.
 *
 * The engine never indexes a layer's experts directly. Once a layer's
 * router has chosen, the engine announces the whole set with
 * mk_expert_store_acquire(layer, experts, n), then takes them one at a time
 * with mk_expert_store_next(), which hands back whichever announced expert
 * is ready first (blocking until one is), computes it, and calls
 * mk_expert_store_release(). A streaming store (experts read from SSD into a
 * bounded cache) starts every read at acquire, in file order, and returns
 * hits first, so compute on hits overlaps the reads of misses; the engine's
 * results do not depend on that order (the MoE combine sums in a fixed
 * order). Two stores: mk_expert_store_resident hands out views into the
 * mmapped checkpoint in the order announced; mk_expert_store_stream reads
 * experts from the files into a bounded cache (below).
 *
 * Stores are described by a table of function pointers (mk_expert_store_i),
 * one instance per engine; they are not thread safe unless they say so. */
#ifndef MOEKIT_EXPERT_STORE_H
#define MOEKIT_EXPERT_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "moekit/model.h"
#include "moekit/status.h"
#include "moekit/weight.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a store did (`--stats`). */
typedef struct mk_expert_stats {
    uint64_t uses;        /* experts handed out */
    uint64_t hits;        /* of which already in the cache */
    uint64_t bytes_read;  /* expert bytes read from the files for uses, guesses and pins (not the
                             fill's: fill_bytes) */
    uint64_t reads;       /* read requests (parts) issued for them */
    uint64_t pf_issued;   /* experts read on a guess (prefetch) */
    uint64_t pf_hits;     /* uses served by a guess (not counted in hits) */
    uint64_t pf_bytes;    /* bytes read on guesses (counted in bytes_read too) */
    uint64_t pf_failed;   /* guesses dropped after a failed read */
    double io_wait_s;     /* time spent issuing reads and waiting for them (not overlapped) */
    double oracle_hit;    /* Belady's hit rate on the same accesses with the same slots;
                             -1 when not recorded */
    int slots;            /* experts the cache holds */
    int pinned;           /* of which pinned for good */
    /* the warm fill (mk_expert_store_fill), before the first use */
    int filled;           /* experts it read into free slots */
    uint64_t fill_bytes;  /* their bytes (not in bytes_read) */
    uint64_t fill_reads;  /* their read requests (not in reads) */
    double fill_s;        /* wall time of the fill (not in io_wait_s) */
    uint64_t fill_hits;   /* hits on an expert the fill loaded, while it stays (counted in hits) */
    uint64_t fill_used;   /* filled experts used at least once */
    uint64_t slot_bytes;  /* bytes of one slot */
    const char *io;       /* "io_uring" / "pread" (+ direct or buffered) */
} mk_expert_stats;

/* A warm start of a store's cache (mk_expert_store_fill). */
typedef struct mk_fill_opts {
    /* Experts in order of preference, hottest first (a profile's ranking,
     * the pinned ones included: experts already cached are skipped):
     * pref_layer[i], pref_expert[i] for i < n_pref. n_pref 0: an even share,
     * the same count of every MoE layer's experts, lowest index first. */
    const int *pref_layer, *pref_expert;
    int n_pref;
    /* NULL: every routed expert may be used here. Else [2 * num_layers]:
     * only experts [range[2l], range[2l+1]) of layer l (an MPI rank's
     * share; lo == hi for the layers of another pipeline stage) */
    const int32_t *range;
} mk_fill_opts;

typedef struct mk_expert_store_i {
    const char *name;
    /* Announce the distinct experts[0..n) of `layer` that will be taken
     * with next(); reads of missing ones may start now. Errors name the
     * layer and expert. */
    mk_status (*acquire)(void *ctx, int layer, const int *experts, int n);
    /* The next announced expert of `layer` that is ready, each exactly
     * once: *e its id, *out its views, valid until release(layer, *e). May
     * block (I/O). MK_E_ARG when none is left. */
    mk_status (*next)(void *ctx, int layer, int *e, const mk_expert **out);
    /* The engine is done with the views of expert e. */
    void (*release)(void *ctx, int layer, int e);
    /* Free ctx. */
    void (*free)(void *ctx);
    /* (optional) counters since creation; NULL: a store that counts nothing */
    void (*stats)(void *ctx, struct mk_expert_stats *out);
    /* (optional) A guess: experts[0..n) of a later `layer` will likely be
     * announced; a store may start reading them now into room it has
     * spare, never evicting an expert in use. Never changes results, only
     * when bytes arrive. NULL: a store that does not guess. */
    mk_status (*prefetch)(void *ctx, int layer, const int *experts, int n);
    /* true: next() hands out every announced expert at once, without
     * blocking and without waiting for releases (the resident store), so the
     * engine may take all of a token's experts before computing any (one
     * parallel region for them: backend.h expert_mlps). false keeps the
     * one-at-a-time order that overlaps compute with a streaming store's
     * reads. */
    bool all_ready;
    /* (optional) Read experts into the cache's free slots before the
     * first acquire (mk_expert_store_fill). NULL: a store without a cache
     * (nothing to fill). */
    mk_status (*fill)(void *ctx, const mk_fill_opts *o);
    /* (optional) Called right after next() handed out expert e of
     * `layer`: true when the bytes behind its views were (re)loaded since
     * those views were last handed out (its cache slot held another
     * expert, or none), and the mark is cleared; *base, *len then give the
     * whole slot buffer, which holds every byte behind the views (a
     * backend keeping device copies of host memory drops every copy it
     * made from that range: backend.h host_changed). NULL: a store whose
     * views never change (resident). */
    bool (*changed)(void *ctx, int layer, int e, const void **base, size_t *len);
    /* (optional) Wait for every read still in flight (guesses) to end and
     * count it, so stats afterwards account for every guess made so far (a
     * guess's read may still be in flight when a token's forward returns).
     * Between tokens only: MK_E_ARG while announced experts are not all
     * taken. NULL: a store with no reads of its own in flight. */
    mk_status (*settle)(void *ctx);
} mk_expert_store_i;

typedef struct mk_expert_store mk_expert_store;

/* Wrap a table and its context (the store owns ctx from here on, even on
 * failure). */
mk_status mk_expert_store_create(const mk_expert_store_i *iface, void *ctx,
                                 mk_expert_store **out);
/* The all-resident store over a model's views (the model must outlive it). */
mk_status mk_expert_store_resident(const mk_model *m, mk_expert_store **out);
void mk_expert_store_free(mk_expert_store *s); /* NULL ok */

/* Experts read from the checkpoint files on demand into a bounded cache
 * (issue 11): never mmap for experts; reads through io/reader (io_uring or
 * a pread pool, O_DIRECT or buffered), all of a layer's misses issued at
 * acquire, hits handed out first, misses in the order their reads finish.
 * The cache holds `cache_bytes / slot` experts (a slot holds the largest
 * expert: its gate, up and down with their scales and biases, 4 KiB
 * aligned); it must hold at least one layer's experts per step
 * (num_experts_per_tok) or creation fails naming the least size.
 * Views are the same formats as the resident ones over the same bytes, so
 * logits are bitwise those of the resident store (gpt_oss's transformers
 * float experts, stored [in, out], are transposed in the slot after the
 * read, through one buffer of their largest projection's size, allocated
 * beside cache_bytes). A failed or short read is
 * an error naming the expert, layer, file and offset; a shard file that
 * changed size or mtime since the model was opened is refused. The model
 * must have been opened with mk_model_opts.stream_experts. */
typedef enum mk_expert_policy {
    MK_EXPERT_FREQ = 0, /* decayed use counts (default): keeps what a model keeps routing to */
    MK_EXPERT_LRU = 1,  /* least recently used */
} mk_expert_policy;

typedef struct mk_stream_opts {
    uint64_t cache_bytes;     /* bytes of expert slots (the streaming part of a memory budget) */
    mk_expert_policy policy;
    double half_life_tokens;  /* FREQ: tokens over which a use count halves; <= 0: 64 */
    bool direct;              /* O_DIRECT reads (per-file fallback to buffered) */
    int io;                   /* 0 auto (io_uring, else pread), 1 io_uring, 2 pread */
    bool record_trace;        /* keep the access trace for the oracle hit rate in stats */
    /* Experts read at creation and kept for good (the hottest of a profile,
     * `--pin-profile`): pin_layer[i], pin_expert[i] for i < n_pin; at most
     * the slots beyond one token's experts (num_experts_per_tok) are pinned,
     * in the order given. */
    const int *pin_layer, *pin_expert;
    int n_pin;
} mk_stream_opts;

/* The model (opened with stream_experts) must outlive the store. */
mk_status mk_expert_store_stream(const mk_model *m, const mk_stream_opts *o, mk_expert_store **out);
/* Bytes of one cache slot for model m (the largest expert, aligned), 0
 * when m has no routed experts: budgets divide by it. */
uint64_t mk_expert_store_slot_bytes(const mk_model *m);

mk_status mk_expert_store_acquire(mk_expert_store *s, int layer, const int *experts, int n);
mk_status mk_expert_store_next(mk_expert_store *s, int layer, int *e, const mk_expert **out);
void mk_expert_store_release(mk_expert_store *s, int layer, int e);
/* Warm start (issue 11, `--cache-fill`): read experts into the free slots
 * of the cache now, before the first token, so the first tokens hit where
 * an empty cache would miss. Call it after creation and before the first
 * acquire or prefetch (MK_E_ARG after). Which experts: o's preference order
 * (the pinned ones are cached already; the rest fill the free slots in that
 * order), or without one the same count of every MoE layer's experts
 * (free slots / MoE layers, rounded down; the rest stay free), lowest index
 * first, only experts o->range allows. All of them are read through the
 * store's reader in file-offset order, a whole batch in flight at once, so
 * the disk sees large sequential reads; never beyond the cache (its slots
 * are already counted in any budget). Filled experts are ordinary cache
 * entries with no use counted (LRU: used before any real use; FREQ: a zero
 * count): the policy evicts an unused filled expert before any expert this
 * run has used, the coldest of them first (the end of the preference
 * order, or the highest index of the even share), so a fill never keeps out
 * what an empty cache would have kept (without guesses, exactly: hits with
 * a fill = hits without + filled experts used). Results never change (the
 * views are the same bytes as a miss's read). A failed or short read is an error
 * naming the expert, layer, file and offset; the experts read before it
 * stay cached, no slot keeps half-read bytes, and the store stays usable.
 * A store without a cache (resident) does nothing. Counters: stats'
 * filled, fill_bytes, fill_reads, fill_s, fill_hits, fill_used. */
mk_status mk_expert_store_fill(mk_expert_store *s, const mk_fill_opts *o);
/* Hand a guess to the store (a no-op for a store without prefetch). */
mk_status mk_expert_store_prefetch(mk_expert_store *s, int layer, const int *experts, int n);
/* Whether the store acts on guesses. */
bool mk_expert_store_can_prefetch(const mk_expert_store *s);
/* The table's settle (MK_OK for a store without it). */
mk_status mk_expert_store_settle(mk_expert_store *s);
const char *mk_expert_store_name(const mk_expert_store *s);
bool mk_expert_store_all_ready(const mk_expert_store *s); /* the table's all_ready */
/* After next() handed out expert e of `layer`: whether its views' bytes
 * were (re)loaded since they were last handed out (the table's changed;
 * false for a store without it), clearing the mark; when true, *base and
 * *len give the host range that holds other bytes now (the slot). */
bool mk_expert_store_changed(mk_expert_store *s, int layer, int e, const void **base, size_t *len);
/* Whether the views a store hands out may later hold other bytes (a cache
 * reusing slots): the table has changed. */
bool mk_expert_store_reuses(const mk_expert_store *s);
/* Counters of the store (zeros and oracle -1 for a store that keeps none). */
void mk_expert_store_stats(const mk_expert_store *s, mk_expert_stats *out);

#ifdef __cplusplus
}
#endif
#endif
