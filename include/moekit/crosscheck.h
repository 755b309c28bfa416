/* Two backends on the same tokens, compared layer by layer (`--verify`).
 *
 * The model runs once on a reference backend (the CPU one) and once on the
 * backend under test, teacher-forced over the same ids, each capturing
 * every layer's output (mk_engine_forward's hidden states) and the logits.
 * The report gives the relative L2 difference of each stage and the first
 * stage beyond the tolerance: a backend that is fast and wrong (seed 003's
 * GPU pipeline) is named at the layer where it goes wrong, not only at the
 * logits. When a layer is the first stage beyond the tolerance, both runs
 * go again with the engine's step observer (engine.h, mk_tap_fn) on that
 * layer, and its named steps (projections, attention, router logits,
 * routed experts, ...) are compared the same way: the first one beyond
 * the tolerance is the op that diverges, its inputs having agreed. */
#ifndef MOEKIT_CROSSCHECK_H
#define MOEKIT_CROSSCHECK_H

#include "moekit/backend.h"
#include "moekit/engine.h"
#include "moekit/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mk_xcheck {
    int stages;       /* num_layers + 2: embeddings, each layer's output, logits */
    double *rel;      /* [stages] ||test - ref|| / ||ref|| per stage (malloc'd) */
    int first_bad;    /* first stage over tol, -1 when none */
    int argmax_diff;  /* positions whose top token differs */
    /* the steps inside the first diverging layer (ops 0 when first_bad is
     * not a layer, or when ops were not compared) */
    int layer;        /* that layer, -1 when none */
    int ops;          /* its steps in the reference run's order */
    const char **op;  /* [ops] their names (static strings, mk_tap_fn's op) */
    double *op_rel;   /* [ops] rel L2 as rel; -1: the run under test has no such step
                         (its backend computed it inside a fused slot), INFINITY: the
                         runs gave different shapes for it */
    int first_bad_op; /* first step over tol, -1 when none */
} mk_xcheck;

/* Stage i as words: "embeddings", "layer 3 output", "logits". */
const char *mk_xcheck_stage_name(const mk_xcheck *x, int i, char *buf, size_t n);

/* Run ids[0..n) through m on `ref` (NULL: a CPU backend) and on `test`,
 * with engine options `o` (backend and store replaced; the store must be
 * NULL or usable twice), and compare. tol: relative L2 allowed per stage.
 * MK_OK whether or not they agree (see first_bad); errors are the runs'.
 * The reference run computes on float activations (mk_kernels_set_int8
 * and the prefill int8 GEMM off, the caller's settings put back after it):
 * the check measures `test` against the exact products, and the CPU's
 * int8 activations (an approximation of ~2e-3 in the logits on MLX affine
 * models) would otherwise show as the device's divergence or hide one.
 * Process-wide settings: no other thread may compute meanwhile. */
mk_status mk_xcheck_run(const mk_model *m, mk_backend *ref, mk_backend *test, const mk_engine_opts *o,
                        const int32_t *ids, int64_t n, double tol, mk_xcheck *out);
void mk_xcheck_free(mk_xcheck *x);

#ifdef __cplusplus
}
#endif
#endif
