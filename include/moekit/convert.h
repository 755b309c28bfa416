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
#include "moekit/quantize.h"
#include "moekit/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mk_conv_target {
    MK_CONV_HF = 0,  /* Hugging Face safetensors layout of the family */
    MK_CONV_MLX = 1, /* mlx-lm layout (switch_mlp, renamed, shifted norms) */
    MK_CONV_GGUF = 2, /* one GGUF file for llama.cpp (DST is a file; src/convert/gguf.h) */
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
    uint64_t max_memory;     /* peak memory in bytes; 0: 1 GiB. Counted against it: held_bytes,
                                what opening and planning allocate, fixed buffers, and the
                                chunks, which are sized to fit what is left */
    uint64_t held_bytes;     /* memory the caller already holds that counts against max_memory
                                (the CLI passes its resident set before the call; 0: none) */
    int threads;             /* worker threads; 0: all online CPUs */
    bool keep_vision;        /* MLX target: keep model.visual.* (HF always keeps it) */
    bool keep_mtp;           /* MLX target: keep multi-token-prediction layers */
    bool force;              /* replace an existing DST that is a checkpoint or moekit output */
    bool verify;             /* re-read the output and compare with the source */
    uint64_t shard_size;     /* output shard cut in bytes; 0: 5 GiB */
    bool quiet;              /* no progress lines on stderr */
    /* MLX target only: quantize while converting (see mk_qjob in quantize.h; NULL:
     * none). Also makes SRC a bare .safetensors file acceptable. The job's
     * results are filled in by mk_conv_run. */
    struct mk_qjob *quant;
    /* Packed expert layout (streaming reads one expert with one request):
     * every routed expert written one by one (per-expert names, as
     * transformers loads them and mlx-lm's sanitize stacks them), all its
     * tensors (gate/up/down weight, scales, biases) contiguous, experts
     * expert-major in shards of their own (the other tensors follow in
     * shards of theirs, in the usual order), never split across shards, and
     * each shard's data buffer starting at a 4 KiB boundary, so every
     * expert starts 4 KiB-aligned when the experts' sizes are multiples of
     * 4 KiB (real shapes are). Refused with --experts fused. */
    bool pack_experts;
    /* GGUF target: the file type, an mk_ggml_type (moekit/ggml_quant.h): F32,
     * F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K or Q6_K (1-D tensors, norms and the
     * router stay F32, as llama.cpp writes them), or one of llama.cpp's
     * mixes MK_GGUF_Q4_K_M / MK_GGUF_Q5_K_M; -1 (the default): float
     * tensors keep the dtype `dtype` says */
    int gguf_type;
    /* GGUF target: per-tensor ggml types chosen elsewhere (convert
     * --target-bpw's allocation over a profile): gguf_over_mod[i] is a
     * module path as a profile names it (MLX naming, no ".weight"; a routed
     * expert stack's switch_mlp path) and gguf_over_type[i] its
     * mk_ggml_type; modules not listed take gguf_type's choice. Tensors
     * llama.cpp never quantizes stay F32, and rows that are not whole blocks
     * fall back as llama.cpp's do. Borrowed for the call. */
    const char *const *gguf_over_mod;
    const int *gguf_over_type;
    size_t n_gguf_over;
} mk_conv_opts;

/* mk_conv_opts.gguf_type: llama.cpp's per-tensor mixes (its llama_ftype
 * plus 1000, apart from the ggml types) */
#define MK_GGUF_Q4_K_M 1015
#define MK_GGUF_Q5_K_M 1017

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
    /* pack_experts */
    uint64_t experts_packed;   /* routed experts written as one contiguous block each */
    uint64_t experts_aligned;  /* of which starting at a 4 KiB boundary of the file */
    char pack_note[320];       /* why some are unaligned, or a loader that cannot read the output; "" */
} mk_conv_stats;

/* Defaults: HF target, per-expert, dtype MK_DT_INVALID, gguf_type -1, 1 GiB, all
 * cores. Always start from these: a zeroed gguf_type would mean F32. */
void mk_conv_opts_init(mk_conv_opts *o);

/* Whether mk_conv_run writes DST as one file rather than a directory: a
 * one-file target (--to gguf), or a lone .safetensors SRC quantized to a
 * DST ending in .safetensors (one shard, as mx.save_safetensors writes it;
 * no config.json, so its bits and group size are the caller's to keep).
 * Commands check their DST with this before any work. `quantize`: the run
 * quantizes (mk_conv_opts.quant will be set). */
bool mk_conv_dst_is_file(const char *src, const char *dst, mk_conv_target to, bool quantize);

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

#ifdef MK_TEST_HOOKS
/* Test builds only: kill the process (SIGKILL, as kill -9 would) at the
 * N-th passage of a named point of the next runs ("journal:3", "shard:1",
 * "item:N", "commit:1", "committed:1", "locked:1"; NULL: off). The CLI maps
 * the environment variable MK_CONVERT_CRASH to it. */
void mk_conv_test_crash_at(const char *spec);
#endif

#ifdef __cplusplus
}
#endif
#endif
