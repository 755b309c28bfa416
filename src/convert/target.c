/* The table of convert targets (target.h says what each field means).
 *
 *   hf   transformers' layout: canonical names (model.language_model.* for
 *        vision-language sources), experts per expert or fused by option,
 *        norms stored as w, conv1d (C, 1, K), everything kept, every
 *        quantized module dequantized; safetensors "format": "pt".
 *   mlx  what mlx_lm.load expects (FORMATS.md 3): mlx-lm names
 *        (language_model.* for qwen3_5_moe), experts stacked into
 *        switch_mlp, norms stored as 1 + w, conv1d (C, K, 1), text only
 *        unless keep_vision / keep_mtp, quantized modules kept quantized
 *        (the only target `quantize` writes); safetensors "format": "mlx".
 *   gguf llama.cpp's GGUF (src/convert/gguf.h): one file, llama.cpp's
 *        tensor names and metadata keys, experts stacked (E, out, in) as
 *        its ffn_*_exps, text only, every quantized module dequantized
 *        (then a ggml block type by --gguf-type); no config.json. */
#include <stddef.h>

#include "convert/target.h"

static const cv_target g_targets[] = {
    {
        .id = MK_CONV_HF,
        .name = "hf",
        .naming = MK_NAMING_HF,
        .experts = CV_XG_PER_EXPERT,
        .experts_choice = true,
        .norms = CV_NORMS_W,
        .conv1d = CV_CONV1D_C1K,
        .text_only = false,
        .keeps_quantized = false,
        .quantizes = false,
        .writer = &cv_writer_safetensors,
        .format_tag = "pt",
        .config_edit = cv_config_edit_hf,
    },
    {
        .id = MK_CONV_MLX,
        .name = "mlx",
        .naming = MK_NAMING_MLX,
        .experts = CV_XG_SWITCH,
        .experts_choice = false,
        .norms = CV_NORMS_1PW,
        .conv1d = CV_CONV1D_CK1,
        .text_only = true,
        .keeps_quantized = true,
        .quantizes = true,
        .writer = &cv_writer_safetensors,
        .format_tag = "mlx",
        .config_edit = cv_config_edit_mlx,
    },
    {
        .id = MK_CONV_GGUF,
        .name = "gguf",
        .naming = MK_NAMING_HF, /* replaced by llama.cpp's names (gguf_names.c) */
        .experts = CV_XG_SWITCH,
        .experts_choice = false,
        .norms = CV_NORMS_1PW, /* llama.cpp's converter adds 1 to qwen3next's zero-centred norms */
        .conv1d = CV_CONV1D_C1K,
        .text_only = true,
        .keeps_quantized = false,
        .quantizes = false,
        .writer = &cv_writer_gguf,
        .format_tag = "gguf",
        .config_edit = NULL,
        .single_file = true,
        .gguf = true,
    },
};

const cv_target *cv_target_of(mk_conv_target id) {
    for (size_t i = 0; i < sizeof g_targets / sizeof g_targets[0]; i++)
        if (g_targets[i].id == id)
            return &g_targets[i];
    return NULL;
}

cv_xgroup cv_target_experts(const cv_target *t, const mk_conv_opts *o) {
    if (!t->experts_choice)
        return t->experts;
    return o->experts == MK_CONV_PER_EXPERT ? CV_XG_PER_EXPERT : CV_XG_FUSED;
}

/* An MLX-stored source has its zero-centred norms shifted already. */
cv_norms cv_src_norms(const cv_src *s) {
    return s->is_mlx ? CV_NORMS_1PW : CV_NORMS_W;
}

float cv_norm_shift(const cv_src *s, const cv_lt *lt, cv_norms to) {
    if (lt->cls == MK_PART_VISION || !s->zero_centred || to == cv_src_norms(s) ||
        !mk_layout_is_shifted_norm(lt->cname, lt->ndim))
        return 0.0f;
    return to == CV_NORMS_1PW ? 1.0f : -1.0f;
}
