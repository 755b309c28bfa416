/* Quantization jobs (`moekit quantize`), run by the convert pipeline
 * (convert.h: mk_conv_opts.quant).
 *
 * A quantization job (`moekit quantize`): which modules of the MLX output
 * are quantized how, and afterwards what was done. mk_conv_run with
 * opts.quant set writes exactly what `--to mlx` writes, except that every
 * quantizable module (a Linear, Embedding or SwitchLinear weight in
 * mlx-lm: `.weight` of 2 dims, or 3 for switch_mlp, in float) becomes
 * `.weight` (U32) + `.scales` (+ `.biases`), and config.json gets the
 * `quantization` block with an identical `quantization_config` (FORMATS.md
 * 2). Compressed-tensors INT4 modules (quantization-aware checkpoints such
 * as Kimi K2's) pass through exactly as `--to mlx` repacks them (codes and
 * scales byte for byte, with config entries of their own group size),
 * never requantized. Other quantized sources (FP8, MLX) are dequantized
 * first; the input to the quantizer is the float tensor `--to mlx` would
 * have written.
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
#ifndef MOEKIT_QUANTIZE_H
#define MOEKIT_QUANTIZE_H

#include <stdbool.h>
#include <stdint.h>

#include "moekit/quant.h"
#include "moekit/quant_opt.h"
#include "moekit/status.h"

#ifdef __cplusplus
extern "C" {
#endif

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
/* Calibrated quantization (moekit/quant_opt.h) of every affine module:
 * method rtn (the default: MLX's own quantizer, byte-exact), mse, gptq or
 * gptq-mse. Every method but rtn reads input second moments from
 * `stats_path` (`moekit profile --hessian`: a F32 [cols, cols] tensor per
 * module path; routed experts by their per-expert path); a module with
 * none there gets the unweighted mse search (the method's name and the
 * number of such modules are in the totals). damp < 0: MK_QOPT_DAMP.
 * MK_E_ARG for a method needing statistics without stats_path; MK_E_IO /
 * MK_E_FORMAT naming the file when it cannot be opened as safetensors. */
mk_status mk_qjob_set_method(mk_qjob *q, mk_qalgo method, const char *stats_path, double damp);
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
    /* calibrated quantization: quantized pieces (a module, or one expert of
     * a stack) with statistics from the file, and without (mse fallback) */
    uint64_t n_calibrated, n_uncalibrated;
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
