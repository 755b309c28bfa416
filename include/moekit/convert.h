/* Streaming checkpoint conversion: every shipped MoE layout in, the
 * canonical Hugging Face layout or MLX's layout out.
 *
 * Sources (FORMATS.md section 7): HF per-expert, HF fused
 * (`experts.gate_up_proj (E,2I,H)`), vision-language wrappers
 * (`model.language_model.*`, `model.visual.*`, `mtp.*`), MLX (stacked
 * `switch_mlp`, affine-quantized or float), FP8 block checkpoints (E4M3/E5M2,
 * F32/BF16/F16 `weight_scale_inv`) and compressed-tensors pack-quantized
 * INT4. Targets: `MK_CONV_HF` (per-expert or fused, every quantized weight
 * dequantized) and `MK_CONV_MLX` (what mlx_lm.load expects, FORMATS.md
 * section 3; INT4 is repacked to MLX affine without changing a weight byte).
 *
 * The converter never holds more than a bounded working set: the output is
 * planned from the headers alone, then produced one chunk of rows at a time
 * by a pool of threads and written in plan order; tensors that need no
 * transform are copied byte for byte with copy_file_range. Output is built
 * under DST.partial/ shard by shard with a journal, so a rerun after a crash
 * resumes, and DST appears only once complete. */
#ifndef MOEKIT_CONVERT_H
#define MOEKIT_CONVERT_H

#include <stdbool.h>
#include <stdint.h>

#include "moekit/config.h"
#include "moekit/dtype.h"
#include "moekit/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mk_conv_target {
    MK_CONV_HF = 0,  /* Hugging Face safetensors layout of the family */
    MK_CONV_MLX = 1, /* mlx-lm layout (switch_mlp, renamed, shifted norms) */
} mk_conv_target;

typedef enum mk_conv_experts {
    MK_CONV_PER_EXPERT = 0, /* mlp.experts.{e}.{gate,up,down}_proj.weight */
    MK_CONV_FUSED = 1,      /* mlp.experts.gate_up_proj (E,2I,H), mlp.experts.down_proj (E,H,I) */
} mk_conv_experts;

typedef struct mk_conv_opts {
    mk_conv_target to;
    mk_conv_experts experts; /* HF target only */
    /* dtype of float outputs. MK_DT_INVALID (the default): tensors stored
     * as floats keep their dtype (byte-exact copies) and dequantized ones
     * become BF16. F32/F16/BF16: every float tensor is written in it, except
     * A_log and e_score_correction_bias, which keep their stored dtype
     * (mlx-lm's cast predicates). */
    mk_dtype dtype;
    bool force_f16;          /* allow F16 for recurrent-state (Gated DeltaNet) families */
    uint64_t max_memory;     /* peak working memory in bytes; 0: 1 GiB */
    int threads;             /* worker threads; 0: all online CPUs */
    bool keep_vision;        /* MLX target: keep model.visual.* (HF always keeps it) */
    bool keep_mtp;           /* MLX target: keep multi-token-prediction layers */
    bool force;              /* replace an existing DST that is a checkpoint or moekit output */
    bool verify;             /* re-read the output and compare with the source */
    uint64_t shard_size;     /* output shard cut in bytes; 0: 5 GiB */
    bool quiet;              /* no progress lines on stderr */
    /* MLX target only: quantize while converting (see mk_qjob below; NULL:
     * none). Also makes SRC a bare .safetensors file acceptable. The job's
     * results are filled in by mk_conv_run. */
    struct mk_qjob *quant;
} mk_conv_opts;

typedef struct mk_conv_stats {
    uint64_t tensors_out;      /* tensors in the output */
    uint64_t bytes_out;        /* tensor bytes in the output */
    uint64_t bytes_copied;     /* of which copied byte for byte */
    uint64_t bytes_computed;   /* of which produced by a transform */
    int shards, shards_resumed;
    int threads;
    uint64_t chunk_elems;      /* elements per work chunk the memory bound allowed */
    double seconds;
    /* --verify */
    uint64_t verified_hash;    /* tensors proven byte-identical to their source bytes */
    uint64_t verified_numeric; /* transformed tensors compared numerically */
    uint64_t verify_failures;  /* tensors that differ (the run then fails with MK_E_MISMATCH) */
    double worst_rel_l2, worst_max_abs;
    char worst_tensor[256];
} mk_conv_stats;

/* Defaults: HF target, per-expert, dtype MK_DT_INVALID, 1 GiB, all cores. */
void mk_conv_opts_init(mk_conv_opts *o);

/* Convert checkpoint `src` (a directory with config.json) into directory
 * `dst`. Bad input of any kind (unknown architecture, missing or duplicate
 * expert indices, a scale grid that fits no weight, an INT4 group size that
 * does not divide the row, DST existing without force, a full disk) returns
 * a status whose mk_err_msg() names the file, tensor and field with the
 * expected and found values; DST is then absent (a DST.partial/ with its
 * journal remains after disk-full, I/O and memory failures so that a rerun
 * resumes; after input errors it is removed). Before any work, DST is
 * checked against SRC (never SRC, inside it or containing it; never "", /,
 * the home or current directory; with force only a checkpoint or moekit
 * output is replaced: io/outpath.h), and DST.partial/ is locked: a second
 * writer of the same DST gets MK_E_EXISTS naming the holder's pid.
 * `stats` may be NULL. */
mk_status mk_conv_run(const char *src, const char *dst, const mk_conv_opts *o, mk_conv_stats *stats);

/* Peak resident set of this process in bytes (VmHWM), 0 when unknown. */
uint64_t mk_conv_peak_rss(void);

#ifdef MK_TEST_HOOKS
/* Test builds only: kill the process (SIGKILL, as kill -9 would) at the
 * N-th passage of a named point of the next runs ("journal:3", "shard:1",
 * "item:N", "commit:1", "committed:1", "locked:1"; NULL: off). The CLI maps
 * the environment variable MK_CONVERT_CRASH to it. */
void mk_conv_test_crash_at(const char *spec);
#endif

/* ------------------------------------------------- verify across layouts
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

/* ------------------------------------------------------------ quantize
 *
 * A quantization job (`moekit quantize`): which modules of the MLX output
 * are quantized how, and afterwards what was done. mk_conv_run with
 * opts.quant set writes exactly what `--to mlx` writes, except that every
 * quantizable module (a Linear, Embedding or SwitchLinear weight in
 * mlx-lm: `.weight` of 2 dims, or 3 for switch_mlp, in float) becomes
 * `.weight` (U32) + `.scales` (+ `.biases`), and config.json gets the
 * `quantization` block with an identical `quantization_config` (FORMATS.md
 * 2). Quantized sources (FP8, INT4, MLX) are dequantized first; the input
 * to the quantizer is the float tensor `--to mlx` would have written.
 *
 * Choice per module path P (MLX naming), in order, later steps winning:
 *   1. the defaults (mk_qjob_set_default);
 *   2. a recipe (mixed_2_6 / 3_4 / 3_6 / 4_6, mlx-lm's layer rule);
 *   3. exact per-module entries (mk_qjob_set_module: an allocation);
 *   4. overrides `REGEX=BITS[:GROUP[:MODE]]` (PCRE2, searched in P), in
 *      the order added; BITS `float` (or 0) keeps the module in float;
 *   5. routers (`mlp.gate`, `shared_expert_gate`) are affine 8-bit g64
 *      whatever 1-4 said (deepseek_v3's router is not a Linear in mlx-lm:
 *      it stays float);
 *   6. a module whose input dim the group size does not divide stays float.
 * Routed experts: when every expert of a layer resolves alike the layer is
 * stacked (switch_mlp); otherwise every expert of that layer is written as
 * its own modules `<mlp>.experts.<e>.<proj>` (the engine loads both; mlx-lm
 * only the stacked form).
 *
 * A bare .safetensors file as SRC (no config): every float tensor of 2+
 * dims whose last dim the group divides is quantized: `X.weight` becomes
 * `X.weight`, `X.scales`, `X.biases`, any other name N becomes N,
 * `N.scales`, `N.biases`; every other tensor is copied byte for byte. DST
 * is then a directory with the shards and a config.json holding only the
 * quantization blocks. */
typedef struct mk_qjob mk_qjob;

mk_status mk_qjob_new(mk_qjob **out);
void mk_qjob_free(mk_qjob *q); /* NULL ok */

/* Defaults (bits or group 0: the mode's default, affine 4/64). MK_E_ARG
 * naming the flag for a combination the mode does not allow. Call before
 * adding overrides (they inherit the default mode and group). */
mk_status mk_qjob_set_default(mk_qjob *q, mk_qmode mode, int bits, int group);
/* mlx-lm recipe by name (mixed_2_6, mixed_3_4, mixed_3_6, mixed_4_6):
 * affine at the default group size. MK_E_ARG for another name or a
 * non-affine default mode. */
mk_status mk_qjob_set_recipe(mk_qjob *q, const char *name);
/* `REGEX=BITS[:GROUP[:MODE]]`; GROUP omitted: the default group (or the
 * mode's own default when MODE differs); MODE omitted: the default mode.
 * MK_E_ARG quoting the rule for bad syntax, a regex that does not compile
 * or bits/group the mode does not allow. */
mk_status mk_qjob_add_override(mk_qjob *q, const char *rule);
/* Exact entry for module path `path` (bits 0: float). */
mk_status mk_qjob_set_module(mk_qjob *q, const char *path, mk_qmode mode, int bits, int group);
/* Quantize tensors holding NaN/Inf instead of refusing them. */
void mk_qjob_allow_nonfinite(mk_qjob *q, bool allow);

/* One module of the output, after the run. */
typedef struct mk_qjob_module {
    const char *path;    /* MLX module path (bare files: the tensor name minus ".weight") */
    const char *source;  /* source tensor (the first, for stacked experts) */
    bool quantized;
    mk_qmode mode;
    int bits, group;
    int64_t rows, cols;  /* rows: product of the leading dims; cols: the input dim */
    uint64_t params;     /* rows * cols */
    uint64_t bytes;      /* stored: weight + scales + biases, or the float tensor */
    double rel_err;      /* ||W - dq(q(W))|| / ||W||; NaN when not measured (float
                            modules; chunks written by an earlier, resumed run) */
    double max_abs_err;
    uint64_t nonfinite;  /* NaN/Inf values quantized under allow_nonfinite */
    const char *note;    /* why it stays float, "router", or NULL */
} mk_qjob_module;

typedef struct mk_qjob_totals {
    uint64_t n_quantized, n_float;      /* modules */
    uint64_t params_q, bytes_q;         /* quantized modules */
    uint64_t params_lin, bytes_lin;     /* every quantizable-kind module, float ones included */
    uint64_t params_all, bytes_all;     /* every tensor of the output */
    double bpw_q, bpw_lin, bpw_all;     /* 8 * bytes / params of each set */
    double rel_err;                     /* over all quantized modules measured */
} mk_qjob_totals;

size_t mk_qjob_count(const mk_qjob *q);
const mk_qjob_module *mk_qjob_module_at(const mk_qjob *q, size_t i);
const mk_qjob_totals *mk_qjob_totals_of(const mk_qjob *q);
/* Write the results as JSON (defaults, modules, totals) to `path`
 * atomically; `extra_json` (an object's members, e.g. "\"peak_rss_bytes\": 1")
 * is added at the top level when not NULL. */
mk_status mk_qjob_write_report(const mk_qjob *q, const char *path, const char *extra_json);

#ifdef __cplusplus
}
#endif
#endif
