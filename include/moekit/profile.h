/* Quantization profiles and the bit allocator behind `--target-bpw`.
 *
 * A profile (mk_prof) says, for one model, how much each bit width would
 * cost each linear module and how much that module matters:
 *   - routing statistics per MoE layer and expert, measured by running the
 *     engine over calibration text (mk_prof_run): routing frequency (the
 *     fraction of tokens routed to the expert; a layer's frequencies sum to
 *     top_k) and mean routing weight (over the tokens routed to it);
 *   - per tensor and candidate bit width: the relative quantization error
 *     err(b) = ||W - dq(q(W))||^2 / ||W||^2 under MLX's affine quantizer
 *     (mk_quant_rows, bit-exact), and the bytes the module takes at that
 *     width (packed weight + scales + biases);
 *   - per tensor a usage weight u (below); its sensitivity at b is u*err(b).
 * Profiles are written and read as JSON (mk_prof_save / mk_prof_load; the
 * layout is documented in src/profile/profile_json.c).
 *
 * Which tensors: every routed expert's gate/up/down projection (one entry
 * per expert), and every other linear module the engine multiplies by:
 * attention / MLA / Gated DeltaNet projections, shared experts, dense MLPs,
 * the token embedding and lm_head. Never norms, A_log, dt_bias or conv1d
 * (they stay in float). Routers (`mlp.gate`) and `shared_expert_gate` are
 * kept at 8-bit g64 whatever the budget (a misread router silently picks
 * the wrong experts): they are listed as fixed and their bytes count
 * against the budget. A module whose in-features the group size does not
 * divide stays in float (16 bits per weight, also fixed).
 *
 * Usage weight (the choice, and why): a module the residual stream passes
 * through for every token has u = 1. A routed expert contributes to a token
 * only when selected, scaled by its routing weight, so its expected share
 * of its layer's routed output is freq * mean_weight; u is that share
 * normalised to sum to 1 over the layer's experts. The routed block as a
 * whole then weighs as much as one always-on module, split among experts by
 * how much they are used. An expert never selected on the calibration text
 * gets u = 0 (any width costs nothing in the objective, so it gets the
 * fewest bits allowed: calibrate on text like the deployment's).
 *
 * Names: each tensor carries its module path in MLX naming (what config
 * per-module entries are keyed by: `language_model.model.layers.3.mlp.
 * experts.7.down_proj` for qwen3_5_moe, `model.layers...` for the other
 * families) and its source tensor in the profiled checkpoint (with an
 * [expert, row range] slice for stacked or fused expert tensors).
 *
 * Routed experts with different bit widths in one layer must be stored as
 * separate modules, `<layer>.mlp.experts.{e}.{gate,up,down}_proj` with
 * `.weight/.scales/.biases` each and a per-module config entry: one stacked
 * `switch_mlp` tensor has a single width. The engine loads that layout (see
 * tests/unit/test_profile_mixedbits.c). Where the allocation gives all
 * experts of a (layer, projection) the same width the quantize command may
 * stack them under mk_prof_tensor.stack instead; mlx-lm can only load the
 * stacked form.
 *
 * The allocator (mk_alloc_solve) picks one width per tensor to minimise
 * sum_t u_t * err_t(b_t) * params_t subject to total bits (weights + scales
 * + biases of every profiled tensor, fixed ones included) <= target_bpw *
 * total params: a multiple-choice knapsack. It relaxes the budget with a
 * Lagrange multiplier (bisection on lambda; each tensor takes the point of
 * its lower convex hull minimising err + lambda * bits), then spends what is
 * left greedily along the hull steps with the best error saved per bit. The
 * result is within `gap_bound` of the optimum (the error saved by the first
 * hull step that did not fit) and never gets worse as the budget grows. */
#ifndef MOEKIT_PROFILE_H
#define MOEKIT_PROFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moekit/model.h"
#include "moekit/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Most candidate widths a profile holds (affine has 2,3,4,5,6,8). */
#define MK_PROF_MAX_BITS 6

typedef struct mk_prof mk_prof;

typedef enum mk_prof_kind {
    MK_PROF_EXPERT = 0, /* routed expert projection: width chosen, u from routing */
    MK_PROF_LINEAR,     /* any other linear module: width chosen, u = 1 */
    MK_PROF_ROUTER,     /* router / shared_expert_gate: fixed width (8) */
    MK_PROF_FLOAT,      /* not quantizable at this group size: fixed, stays float */
} mk_prof_kind;

/* "expert", "linear", "router", "float"; NULL for another value. */
const char *mk_prof_kind_name(mk_prof_kind k);

/* One profiled tensor. Strings are owned by the profile. */
typedef struct mk_prof_tensor {
    const char *name;   /* module path, MLX naming (config per-module key) */
    const char *source; /* tensor in the profiled checkpoint, with [e, r0:r1] slice if stacked */
    const char *stack;  /* experts: the stacked switch_mlp module path; else NULL */
    mk_prof_kind kind;
    int layer;          /* -1 for embedding / lm_head */
    int expert;         /* routed expert index, else -1 */
    int64_t rows, cols; /* (out, in) */
    uint64_t params;    /* rows * cols */
    double usage;       /* u: the weight of this tensor's error in the objective */
    /* EXPERT / LINEAR: per candidate width (the profile's bits, in order) */
    double err[MK_PROF_MAX_BITS];     /* ||W - dq(q(W))||^2 / ||W||^2 */
    uint64_t bytes[MK_PROF_MAX_BITS]; /* packed weight + scales + biases */
    /* ROUTER / FLOAT: the storage they keep */
    int fixed_bits;       /* 8 for routers; 16 (float) for FLOAT */
    uint64_t fixed_bytes; /* bytes stored */
    double fixed_err;     /* relative error at fixed_bits (0 for FLOAT) */
} mk_prof_tensor;

/* Progress report during mk_prof_run: stage "route" (done/total windows)
 * or "error" (done/total tensors). */
typedef void (*mk_prof_progress_fn)(void *user, const char *stage, int64_t done, int64_t total);

typedef struct mk_prof_opts {
    int bits[MK_PROF_MAX_BITS]; /* candidate widths, ascending; default 2,3,4,5,6,8 */
    int n_bits;
    int group;                  /* affine group size: 32, 64 (default), 128 */
    int router_bits;            /* fixed width of routers: 8 */
    int64_t window;             /* tokens per independent window (default 256) */
    int threads;                /* <= 0: one per CPU */
    const char *text_name;      /* calibration text, recorded in the profile (may be NULL) */
    mk_prof_progress_fn progress; /* optional */
    void *progress_user;
    /* NULL: the model's own experts (resident). A streaming store (model
     * opened with mk_model_opts.stream_experts, the store over it) bounds
     * memory: the routing windows read experts through it, and the error
     * pass takes each layer's experts in groups of what its cache holds.
     * The profile is the same either way. */
    struct mk_expert_store *store;
    /* mk_prof_hessian: the most bytes of second-moment accumulators held
     * at once (0: no bound, every module in one pass). */
    uint64_t hess_budget;
} mk_prof_opts;

/* Defaults as documented on the fields. */
void mk_prof_opts_init(mk_prof_opts *o);

/* Check and sort a list of candidate widths: each must be an affine width
 * (2,3,4,5,6,8), no repeats, 1..MK_PROF_MAX_BITS of them. MK_E_ARG naming
 * the bad value. Sorts `bits` ascending in place. */
mk_status mk_prof_check_bits(int *bits, int n);

/* Profile model `m` over token ids[0..n): the first n / window whole
 * windows each run alone from an empty state (like `moekit eval`) with a
 * routing observer, then the quantization error of every tensor at every
 * candidate width, rows at a time (memory bounded by the thread count, not
 * the tensor size), tensors spread over opts->threads threads. MK_E_ARG for
 * fewer than one window of tokens or bad options; MK_E_FORMAT for a
 * non-finite weight (naming the tensor). */
mk_status mk_prof_run(const mk_model *m, const int32_t *ids, int64_t n, const mk_prof_opts *opts,
                      mk_prof **out);

/* Multiply the usage of every chosen tensor (expert, linear) by the factor
 * of its module class under class-weight set `name`: "none" (no change),
 * "learned" (src/profile/weights.c: attention and down_proj x2, lm_head
 * x1/8, shared expert x0.65, measured KL sensitivities) or explicit
 * "CLASS=F,..." (classes embed, lm_head, attn, down, shared, other; the
 * rest 1). MK_E_ARG naming the set otherwise. */
mk_status mk_prof_class_weights(mk_prof *p, const char *name);

/* What mk_prof_hessian did. */
typedef struct mk_prof_hess_info {
    size_t modules;       /* tensors written (modules reached by calibration tokens) */
    size_t distinct;      /* accumulators made: distinct inputs (q/k/v, gate/up share one), a shared
                             input counted again in each pass holding one of its modules */
    size_t unreached;     /* walked modules no token reached (unused experts): no tensor */
    uint64_t accum_bytes; /* accumulators made over all passes, 8 * cols^2 each (one pass: all held at once) */
    uint64_t peak_bytes;  /* the most accumulator bytes held at once (<= opts->hess_budget when set) */
    int passes;           /* runs over the windows (1 when everything fits the budget) */
    int64_t tokens;       /* calibration tokens run (per pass) */
} mk_prof_hess_info;

/* Input second moments of every linear module of `m` for calibrated
 * quantization (moekit/quant_opt.h; layout in src/profile/profile_hess.c):
 * the first n / window whole windows of ids run from an empty state each
 * (as mk_prof_run) with a linear-input observer; each module (each routed
 * expert on its own tokens) gets H = mean of x x^T over its input rows,
 * written as a F32 [cols, cols] tensor named by its module path into the
 * safetensors file `path` (atomically; replace: an existing file may be
 * replaced). Memory: the accumulators (8 * cols^2 bytes per distinct module
 * input) held at once never exceed o->hess_budget when it is set: modules
 * are then taken in passes over the windows, each a run of modules in walk
 * order that fits, the file the same byte for byte (time x passes); a
 * single module over the budget is MK_E_ARG naming it, before any work.
 * Plus one window of logits. Experts must be resident
 * (o->store NULL: MK_E_ARG otherwise). info may be NULL. */
mk_status mk_prof_hessian(const mk_model *m, const int32_t *ids, int64_t n, const mk_prof_opts *o,
                          const char *path, bool replace, mk_prof_hess_info *info);

/* An empty profile with candidate widths bits[0..n_bits) (checked as
 * mk_prof_check_bits) and group size `group`, to be filled with
 * mk_prof_add (tests, tools that compute sensitivities elsewhere). */
mk_status mk_prof_new(const int *bits, int n_bits, int group, mk_prof **out);
/* Append a copy of *t (strings copied; params recomputed from rows*cols).
 * MK_E_ARG for a duplicate or empty name, a bad shape, negative or
 * non-finite err/usage. */
mk_status mk_prof_add(mk_prof *p, const mk_prof_tensor *t);

/* Write as JSON (temporary file + rename). */
mk_status mk_prof_save(const mk_prof *p, const char *path);
/* Read and validate a profile written by mk_prof_save. Errors name the file,
 * the tensor (index and name) and the field (MK_E_IO, MK_E_FORMAT). */
mk_status mk_prof_load(const char *path, mk_prof **out);
void mk_prof_free(mk_prof *p); /* NULL ok */

/* Contents. */
size_t mk_prof_count(const mk_prof *p);
const mk_prof_tensor *mk_prof_tensor_at(const mk_prof *p, size_t i);
/* By module path; NULL when absent. */
const mk_prof_tensor *mk_prof_find(const mk_prof *p, const char *name);
/* Candidate widths (ascending); returns their count. */
int mk_prof_bits(const mk_prof *p, const int **bits);
int mk_prof_group(const mk_prof *p);
/* Calibration tokens the routing statistics were measured on (0 if none). */
int64_t mk_prof_tokens(const mk_prof *p);
/* Routing statistics: MoE layers recorded (in layer order) and, for the
 * i-th, its layer index, expert count and per-expert frequency / mean
 * weight arrays (owned by the profile). False when i is out of range. */
int mk_prof_route_layers(const mk_prof *p);
bool mk_prof_route(const mk_prof *p, int i, int *layer, int *n_experts, const double **freq,
                   const double **mean_weight);

/* Does profile `p` describe model `m`? The profile's config_xxh3_64, when it
 * records one (every profile mk_prof_run makes does), must be the hash of m's
 * config.json (a profile of another model is refused even when its module
 * names and shapes happen to agree), every profiled tensor
 * must be a module of m with the same shape, and every quantizable module of
 * m must be profiled. MK_E_MISMATCH naming the hashes, or the first tensor
 * that is unknown, missing or of another shape. */
mk_status mk_prof_check_model(const mk_prof *p, const mk_model *m);

/* ---- allocation ------------------------------------------------------- */

/* One module's width in an allocation: what a config per-module entry says. */
typedef struct mk_alloc_item {
    const char *module; /* MLX module path (points into the profile) */
    int bits, group;
    bool fixed;         /* router kept at its fixed width, not chosen */
    int layer, expert;  /* as in mk_prof_tensor */
} mk_alloc_item;

typedef struct mk_alloc {
    mk_alloc_item *items; /* every EXPERT, LINEAR and ROUTER tensor, profile order */
    size_t n_items;
    double target_bpw;    /* asked for (0 for mk_alloc_uniform) */
    double achieved_bpw;  /* total_bits / total_params */
    uint64_t total_params; /* every profiled tensor, fixed ones included */
    uint64_t total_bits;   /* weights + scales + biases (+ float tensors) */
    double objective;      /* sum of usage * err * params over chosen widths */
    double gap_bound;      /* objective - optimum <= gap_bound (0: provably optimal) */
    double lambda;         /* the Lagrange multiplier found (error per bit) */
} mk_alloc;

/* Allocate widths from `bits[0..n_bits)` (a subset of the profile's; NULL /
 * 0: all of them) so that total bits <= target_bpw * total params,
 * minimising the objective (see the header comment). MK_E_ARG for a width
 * the profile lacks, or a target below what the smallest width allows
 * (the message gives that minimum). On success free *out with
 * mk_alloc_free. */
mk_status mk_alloc_solve(const mk_prof *p, double target_bpw, const int *bits, int n_bits,
                         mk_alloc *out);
/* Every chosen tensor at width `bits` (must be profiled): the baseline an
 * allocation is compared with. */
mk_status mk_alloc_uniform(const mk_prof *p, int bits, mk_alloc *out);
void mk_alloc_free(mk_alloc *a); /* frees items; NULL ok */

/* Write the allocation as JSON: totals and an "overrides" object mapping
 * each module path to {"bits": b, "group_size": g}, the shape of config
 * per-module quantization entries (FORMATS.md section 2). */
mk_status mk_alloc_save(const mk_alloc *a, const char *path);

#ifdef __cplusplus
}
#endif
#endif
