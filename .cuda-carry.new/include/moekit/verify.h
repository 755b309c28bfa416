/* Verify across layouts (`moekit verify`): is checkpoint B checkpoint A
 * written in B's layout and dtype?
 *
 * mk_conv_xverify(A, B) proves that checkpoint B is checkpoint A written in
 * B's layout and dtype, whatever the two layouts are (HF per-expert or
 * fused, vision-language wrappers, MLX switch_mlp, FP8, INT4, MLX
 * quantized): both are read through convert's source model and matched by
 * canonical UNIT, a logical tensor under its canonical HF text name
 * (`model.layers.3.self_attn.q_proj.weight`), every routed expert under its
 * per-expert name (`model.layers.3.mlp.experts.17.down_proj.weight`) however
 * it is stored (own tensor, slice of a fused or stacked one).
 *
 * Per unit present on both sides (logical shapes must agree; size-1 dims
 * are ignored, so conv1d (C,1,K) and (C,K,1) compare flat):
 *   B float (F32/F16/BF16)  A's unit goes through the operation convert
 *       would use to write B (re-encode or dequantize to B's stored dtype,
 *       plus the zero-centred norm shift +1 HF->MLX, -1 MLX->HF) and the
 *       bytes must equal B's: IDENTICAL. With tolerance > 0, rel L2 <= tol
 *       is accepted instead (WITHIN_TOL); values equal with bytes that
 *       differ (signed zero, NaN payload) are WITHIN_TOL at rel 0.
 *   B quantized (MLX affine / mxfp / nvfp, FP8, INT4)  both are
 *       dequantized to float32; equal values are IDENTICAL, else rel L2 =
 *       ||b - a|| / ||a|| must be <= tol (so the default 0 fails them).
 *   Integer tensors  bytes must be equal.
 * NaN must sit at the same positions on both sides (a NaN or Inf on one
 * side only is a difference at any tolerance).
 * A unit on one side only is SKIPPED, not a failure, when it is the vision
 * tower or multi-token prediction (convert --to mlx drops them), lm_head
 * where the side lacking it ties embeddings, or a rotary inv_freq buffer;
 * any other is ONLY_A / ONLY_B, a failure.
 *
 * Memory: tensors are never loaded whole; each worker thread compares
 * chunks of MK_XVERIFY_CHUNK values (a row of a quantized tensor is never
 * split) with about 40 bytes of buffers per value, ~10 MiB per thread. */
#ifndef MOEKIT_VERIFY_H
#define MOEKIT_VERIFY_H

#include <stdbool.h>
#include <stdint.h>

#include "moekit/dtype.h"
#include "moekit/status.h"

#ifdef __cplusplus
extern "C" {
#endif


#define MK_XVERIFY_CHUNK (256u * 1024u)

typedef enum mk_xverify_result {
    MK_XV_IDENTICAL = 0, /* exactly what convert writes from A (bytes, or dequantized values) */
    MK_XV_WITHIN_TOL,    /* values differ by rel L2 <= tolerance */
    MK_XV_DIFFERS,       /* beyond tolerance, NaN/Inf mismatch, or shapes / dtypes disagree */
    MK_XV_ONLY_A,        /* missing in B */
    MK_XV_ONLY_B,        /* missing in A */
    MK_XV_SKIPPED,       /* on one side only for an accepted reason (mk_xverify_unit.skip) */
} mk_xverify_result;

typedef enum mk_xverify_skip {
    MK_XV_SKIP_NONE = 0,
    MK_XV_SKIP_VISION,    /* vision tower on one side only */
    MK_XV_SKIP_MTP,       /* multi-token-prediction weights on one side only */
    MK_XV_SKIP_TIED_HEAD, /* lm_head absent where tie_word_embeddings is set */
    MK_XV_SKIP_BUFFER,    /* rotary_emb.inv_freq: a buffer recomputed at load */
    MK_XV_SKIP_COUNT
} mk_xverify_skip;

/* Stable short names: "identical", "within tolerance", "differs", "only in
 * A", "only in B", "skipped"; "vision", "mtp", "tied lm_head", "buffer". */
const char *mk_xverify_result_name(mk_xverify_result r);
const char *mk_xverify_skip_name(mk_xverify_skip k);

typedef struct mk_xverify_opts {
    double tolerance; /* allowed rel L2 (see above); 0: exact */
    int threads;      /* worker threads; 0: all online CPUs */
} mk_xverify_opts;

/* Defaults: tolerance 0, all CPUs. */
void mk_xverify_opts_init(mk_xverify_opts *o);

/* One unit as stored on one side (strings NULL when absent there). */
typedef struct mk_xverify_side {
    const char *tensor; /* the stored tensor holding it (the data tensor of a quantized module) */
    const char *form;   /* storage and place, e.g. "BF16 [128,256]", "BF16 [8,256,256][3][0:128]"
                           (expert 3, gate half of a fused gate_up_proj), "affine 4-bit g64 [8,256,128][3]",
                           "F8_E4M3 block 128x128 [192,320]" */
} mk_xverify_side;

typedef struct mk_xverify_unit {
    const char *name;         /* canonical unit name */
    bool expert;              /* a routed expert's projection */
    mk_xverify_side a, b;
    mk_xverify_result result;
    mk_xverify_skip skip;     /* SKIPPED: why */
    const char *note;         /* a shape/dtype disagreement, NULL otherwise */
    uint64_t numel;           /* values compared (0 when not compared) */
    double max_abs, rel_l2;   /* max |b-a| and ||b-a||/||a||; NaN when not compared numerically */
    uint64_t nonfinite_mismatch; /* positions with NaN/Inf on one side only */
} mk_xverify_unit;

/* Called once per unit, in canonical name order (digit runs by value), on
 * the calling thread; strings are valid during the call. A status other
 * than MK_OK stops the comparison and is returned. */
typedef mk_status (*mk_xverify_cb)(void *ctx, const mk_xverify_unit *u);

typedef struct mk_xverify_summary {
    uint64_t compared;          /* units on both sides: identical + within_tol + differ */
    uint64_t experts_compared;  /* of which routed-expert units */
    uint64_t identical, within_tol, differ;
    uint64_t only_a, only_b;
    uint64_t skipped, skipped_by[MK_XV_SKIP_COUNT];
    double worst_rel_l2, worst_max_abs; /* over compared units */
    char worst_unit[256];       /* unit of worst_rel_l2 ("" when none differ) */
    bool a_mlx, b_mlx;          /* stored the MLX way */
    bool pass;                  /* differ == 0 && only_a == 0 && only_b == 0 */
} mk_xverify_summary;

/* Compare checkpoint directories `a` and `b` (each with config.json) unit by
 * unit as described above; `cb` (may be NULL) sees every unit, `out` (may be
 * NULL) gets the totals. Returns MK_OK when the comparison ran, whatever it
 * found (see out->pass); an error for input that cannot be compared (a file
 * or config that does not read, A and B of different architectures, two
 * tensors of one side claiming the same unit) or an I/O failure, with
 * mk_err_msg() naming the checkpoint and tensor. */
mk_status mk_conv_xverify(const char *a, const char *b, const mk_xverify_opts *o, mk_xverify_cb cb, void *ctx,
                          mk_xverify_summary *out);

#ifdef __cplusplus
}
#endif
#endif
