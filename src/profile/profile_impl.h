/* Internal: the profile's body and the module walker shared by the
 * profiler (profile_run.c, profile_err.c), the JSON reader/writer
 * (profile_json.c), the container (profile.c) and the allocator (alloc.c).
 *
 * A profile owns every string it points to: the tensors' name / source /
 * stack and the model description. Tensor lookup by name goes through an
 * open-addressing index rebuilt as the array grows. */
#ifndef MK_PROFILE_IMPL_H
#define MK_PROFILE_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "moekit/profile.h"
#include "moekit/weight.h"

/* Routing statistics of one MoE layer. */
typedef struct mk_prof_route_l {
    int layer;
    int n_experts;
    int64_t tokens;      /* tokens that went through the layer */
    double *freq;        /* [E] selections / tokens */
    double *mean_w;      /* [E] mean routing weight over its selections (0 if none) */
    double *mean_w2;     /* [E] mean squared routing weight (0 if none) */
} mk_prof_route_l;

struct mk_prof {
    int bits[MK_PROF_MAX_BITS];
    int n_bits;
    int group;
    int router_bits;
    /* the model profiled (informational; NULL / 0 when built by mk_prof_new) */
    char *model_dir, *model_type, *arch, *layout, *config_hash;
    int num_layers, num_experts, top_k;
    /* calibration */
    char *text;
    int64_t tokens, window, windows;
    /* routing */
    mk_prof_route_l *route;
    int n_route;
    /* tensors */
    mk_prof_tensor *t;
    size_t n, cap;
    size_t *index;       /* open addressing over t[]: slot -> i + 1 (0 empty) */
    size_t index_cap;    /* power of two >= 2 * cap */
};

/* Allocate an empty profile (bits unchecked: callers check). */
mk_prof *mk_prof_alloc(void);
/* Append *t, taking ownership of its three strings (freed on failure too). */
mk_status mk_prof_push(mk_prof *p, const mk_prof_tensor *t);
/* strdup that tolerates NULL (returns NULL). */
char *mk_prof_strdup(const char *s);

/* ---- the module walker ------------------------------------------------ */

/* One linear module of a loaded model, as the profiler and the model check
 * see it. FLOAT is decided later (it depends on the group size): the walker
 * says EXPERT, LINEAR or ROUTER. */
typedef struct mk_prof_mod {
    char *name;   /* MLX module path */
    char *source; /* source tensor (+ slice) */
    char *stack;  /* experts: switch_mlp module path */
    mk_prof_kind kind;
    int layer, expert;
    const mk_wt *w; /* view into the model (valid while it is open); streamed: the shape
                       only until the error pass points it at the store's view */
    bool streamed;  /* a routed expert of a model opened with stream_experts: its bytes
                       come from the expert store, never from the model's views */
} mk_prof_mod;

/* Every linear module of `m` in a stable order: embedding, then per layer
 * the mixer's projections, router, shared expert (+ gate), routed experts
 * (gate, up, down of expert 0, 1, ...) or the dense MLP, then lm_head
 * (absent when tied to the embedding). */
mk_status mk_prof_walk(const mk_model *m, mk_prof_mod **mods, size_t *n);
void mk_prof_walk_free(mk_prof_mod *mods, size_t n);

/* Which modules one mk_prof_errors call measures: idx[0..n) (NULL: all
 * of mods), progress counted from done0 of total (0: n). */
typedef struct mk_prof_subset {
    const size_t *idx;
    size_t n;
    size_t done0, total;
} mk_prof_subset;

/* Relative errors and bytes of the modules of `sub` (every one when sub is
 * NULL) at every width of `o`, threaded; fills the EXPERT/LINEAR/ROUTER/
 * FLOAT fields of out[i] (usage excepted). */
mk_status mk_prof_errors(const mk_prof_mod *mods, size_t n, const mk_prof_subset *sub,
                         const mk_prof_opts *o, mk_prof_tensor *out);

#endif
