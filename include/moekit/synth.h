/* Deterministic synthetic checkpoints of real MoE shapes.
 *
 * `mk_synth_run` writes an HF checkpoint (config.json + safetensors) of one
 * of the supported families with the sizes of a released model
 * (ARCHITECTURES.md) or a tiny test preset, optionally cut down to fewer
 * layers / experts / a smaller vocabulary, in bf16, FP8 block (128x128,
 * F32 scale_inv), compressed-tensors INT4 (group 32, symmetric or with
 * zero points) or, for gpt_oss, MXFP4 experts as released; per-expert or
 * fused, optionally inside the Qwen3.5
 * vision-language wrapper. Values have realistic scales (weights ~N(0,0.02),
 * norms near 1 or near 0 for zero-centred families, A_log = log U(1,16),
 * dt_bias ~1) and come from a counter-based generator keyed by (seed,
 * tensor name, element index), so any chunk is computable on its own: the
 * writer streams with bounded memory at any model size, and the same
 * arguments always give the same bytes. */
#ifndef MOEKIT_SYNTH_H
#define MOEKIT_SYNTH_H

#include <stdbool.h>
#include <stdint.h>

#include "moekit/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mk_synth_format {
    MK_SYNTH_BF16 = 0,
    MK_SYNTH_FP8,          /* E4M3 weights + F32 weight_scale_inv, 128x128 blocks */
    MK_SYNTH_CT_INT4,      /* compressed-tensors pack-quantized, symmetric, group 32 */
    MK_SYNTH_CT_INT4_ASYM, /* the same with weight_zero_point */
    MK_SYNTH_MXFP4,        /* gpt_oss only: experts as released (*_blocks E2M1 + *_scales E8M0, group 32) */
} mk_synth_format;

typedef struct mk_synth_opts {
    const char *arch;   /* mk_synth_archs() */
    const char *preset; /* tiny | one of mk_synth_presets() */
    int layers;         /* 0: the preset's */
    int experts;        /* 0: the preset's (top-k is clamped to it) */
    int vocab;          /* 0: the preset's */
    mk_synth_format format;
    bool fused;         /* experts as gate_up_proj (E,2I,H) / down_proj (E,H,I) */
    bool vl;            /* qwen3_5_moe only: model.language_model.* + model.visual.* + mtp.* */
    bool mtp;           /* add the family's multi-token-prediction weights */
    uint64_t seed;
    uint64_t shard_size; /* 0: 5 GiB */
    int threads;         /* 0: all online CPUs */
    uint64_t max_memory; /* 0: 256 MiB */
    bool force;
    bool quiet;
    bool list_only;      /* print "NAME DTYPE [shape]" per tensor on stdout, write nothing */
} mk_synth_opts;

void mk_synth_opts_init(mk_synth_opts *o);

/* Comma-separated lists for messages and --help. */
const char *mk_synth_archs(void);
const char *mk_synth_presets(void);

/* Write the checkpoint as `dir`: built in dir.partial/ and swapped in when
 * complete. An existing non-empty dir is refused without force; with force
 * only a checkpoint or moekit output is replaced (never an arbitrary
 * directory, / or the home directory). */
mk_status mk_synth_run(const char *dir, const mk_synth_opts *o);

#ifdef __cplusplus
}
#endif
#endif
