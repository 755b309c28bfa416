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
    bool force;              /* replace an existing DST */
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
 * journal may remain after I/O failures so that a rerun resumes). `stats`
 * may be NULL. */
mk_status mk_conv_run(const char *src, const char *dst, const mk_conv_opts *o, mk_conv_stats *stats);

/* Peak resident set of this process in bytes (VmHWM), 0 when unknown. */
uint64_t mk_conv_peak_rss(void);

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
