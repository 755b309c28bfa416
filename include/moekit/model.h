/* A loaded model: a checkpoint carved into weight views for the engine.
 *
 * mk_model_open() reads config.json, opens the safetensors checkpoint
 * (mmapped) and builds, for every layer, non-owning mk_wt views of its
 * weights in whatever layout and storage format the checkpoint uses:
 *   - HF per-expert   mlp.experts.{e}.{gate,up,down}_proj.weight
 *   - HF fused        mlp.experts.gate_up_proj (E,2I,H) + down_proj (E,H,I)
 *   - vision-language wrappers (model.language_model.*; model.visual.* and
 *     mtp.* are skipped)
 *   - FP8 block       weight + weight_scale_inv (E4M3/E5M2, F32/BF16/F16 scales)
 *   - MLX             language_model.model.*, mlp.switch_mlp stacks, per-module
 *                     bits from the config, always checked against packed shapes
 *   - compressed-tensors INT4 pack-quantized, viewed as MLX affine 4-bit
 * Norm vectors and other small tensors are converted to float32 at load.
 * Nothing is dequantized: the views point into the mapping. A missing tensor,
 * a shape that disagrees with the config, a gap in expert indices or a
 * quantization that contradicts the packed shape fails the open with a
 * message naming the tensor (MK_E_FORMAT / MK_E_MISMATCH / MK_E_UNSUPPORTED).
 *
 * The struct bodies (per-layer weights with their shapes) live in
 * src/model/model_impl.h: the engine and backends read them, users of the
 * library only need the handle. */
#ifndef MOEKIT_MODEL_H
#define MOEKIT_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "moekit/config.h"
#include "moekit/weight.h"
#include "moekit/st.h"
#include "moekit/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mk_model mk_model;

typedef struct mk_model_opts {
    /* Dequantize FP8 block weights at load into bf16 copies, rounding each
     * fp8 * scale_inv product to bf16 as transformers' FP8 loader does when
     * it dequantizes into the model dtype. Matches transformers' logits
     * exactly; costs 2 bytes per weight of RAM. Default: compute from the
     * mmapped FP8 bytes (products kept in float32). */
    bool fp8_to_bf16;
    /* Routed experts will be read from the files by a streaming expert
     * store (mk_expert_store_stream), never through the mapping: their
     * locations are kept (mk_model_expert_loc) and nothing is derived from
     * their bytes at open (INT4 biases are derived per read). Not with
     * fp8_to_bf16. */
    bool stream_experts;
    /* Resident weights read once into anonymous memory with transparent
     * huge pages (MK_CKPT_COPY) instead of mapped from the files: decode
     * streams every weight each token, and through 4 KiB file pages it
     * misses the TLB on each (1.6x faster decode measured on a VM, bench/
     * RESULTS.md session 10). Costs the model's size in anonymous memory
     * (the page cache may keep the files too, reclaimably) and a sequential
     * read at open. Ignored with stream_experts. */
    bool copy_weights;
} mk_model_opts;

/* Where one projection of a routed expert lies in the checkpoint files:
 * its parts (weight, scales, biases, zero points: MK_SP_* of module.h) as
 * byte ranges of shard files, and its format (q: an mk_wt without
 * pointers, rows x cols logical). A part with len 0 is absent. */
typedef struct mk_wloc_part {
    int shard;
    uint64_t off, len;
} mk_wloc_part;

typedef struct mk_wloc {
    mk_wt q;
    mk_wloc_part part[4];
    bool ct;           /* compressed-tensors INT4: affine biases derived from scales (+ zero points) */
    bool ct_symmetric; /* CT without zero points: biases -8 * scale */
    /* float weight stored [cols, rows] (transformers' gpt_oss experts,
     * [in, out]): read as stored, then transposed into the [rows, cols]
     * order q describes, as the resident loader's copy is */
    bool transposed;
} mk_wloc;

typedef struct mk_expert_loc {
    mk_wloc gate, up, down;
} mk_expert_loc;

/* Open the model in directory `path` (config.json + safetensors). On
 * failure *out is NULL and mk_err_msg() says what is wrong. opts may be
 * NULL (defaults). */
mk_status mk_model_open_ex(const char *path, const mk_model_opts *opts, mk_model **out);
/* mk_model_open_ex with default options. */
mk_status mk_model_open(const char *path, mk_model **out);
/* The checks of mk_model_open on headers only, for a checkpoint that is
 * already open (mapped or not) with its config: every tensor the engine
 * needs is present with the shape, dtype and quantization the config
 * implies, and no config count exceeds what the tensors support. Reads no
 * weight data and keeps nothing. convert, quantize and inspect call it so
 * they refuse (or report) exactly what the engine would refuse to load. */
mk_status mk_model_check(const mk_config *cfg, const mk_ckpt *ck);
/* Release the views, the float32 copies and the checkpoint. NULL ok. */
void mk_model_free(mk_model *m);
/* Lock a resident model's mapped checkpoint in memory (mk_ckpt_mlock, what
 * llama.cpp's --mlock does): decode then never waits for weights the
 * kernel reclaimed. MK_E_UNSUPPORTED for a model opened for streaming;
 * MK_E_NOMEM naming the limit when RLIMIT_MEMLOCK refuses. */
mk_status mk_model_mlock(const mk_model *m);

/* The resolved text-model configuration. */
const mk_config *mk_model_config(const mk_model *m);
/* The checkpoint the views point into. */
const mk_ckpt *mk_model_ckpt(const mk_model *m);
/* Directory holding config.json (and the tokenizer files, if any). */
const char *mk_model_dir(const mk_model *m);
/* Short description of the layout found: "hf", "hf-vl", "mlx", ... plus
 * the expert layout ("per-expert", "fused", "stacked") and storage
 * ("bf16", "fp8", "affine", "int4"), e.g. "hf-vl/fused/bf16". */
const char *mk_model_layout(const mk_model *m);
/* Expert e of MoE layer `layer`, for a model opened with stream_experts;
 * NULL otherwise (or for a dense layer). */
const mk_expert_loc *mk_model_expert_loc(const mk_model *m, int layer, int e);
/* Bytes of weights the engine reads that are not routed experts: mapped
 * tensors it views plus the model's own copies (norm gains, derived
 * biases). With stream_experts this is what stays resident. */
uint64_t mk_model_resident_bytes(const mk_model *m);
/* Bytes of every routed expert's stored parts. */
uint64_t mk_model_expert_bytes(const mk_model *m);
/* True when the checkpoint stores its linear weights quantized (FP8 block,
 * MLX, INT4) rather than as plain floats. */
bool mk_model_quantized(const mk_model *m);

#ifdef __cplusplus
}
#endif
#endif
