/* Tensor names of every layout, mapped to one canonical description.
 *
 * Canonical form = the HF text-model names (`model.layers.L...`,
 * `model.embed_tokens.weight`, `lm_head.weight`), `mtp.*` for
 * multi-token-prediction weights and the vision tower's own names. Sources
 * reach it by the prefix table g_canon (vision-language wrappers and MLX's
 * `language_model.` nesting), companions of quantized modules by the suffix
 * table g_roles, experts by cv_layout_expert. Targets leave it through
 * cv_layout_out_name. This file is the converter's own mapping; the engine
 * has one of its own for loading (to be unified). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "convert/conv_impl.h"

const char *const cv_proj_names[3] = {"gate_proj", "up_proj", "down_proj"};

/* Companion suffixes, longest first where one is a suffix of another. The
 * module's logical name is the name with `suffix` replaced by `base`. */
static const struct {
    const char *suffix;
    cv_role role;
    const char *base;
} g_roles[] = {
    {".weight_scale_inv", CV_R_FP8_SCALE, ".weight"},
    {"_scale_inv", CV_R_FP8_SCALE, ""}, /* fused FP8: experts.gate_up_proj_scale_inv */
    {".weight_packed", CV_R_CT_PACKED, ".weight"},
    {".weight_scale", CV_R_CT_SCALE, ".weight"},
    {".weight_zero_point", CV_R_CT_ZP, ".weight"},
    {".weight_shape", CV_R_CT_SHAPE, ".weight"},
    {".weight_g_idx", CV_R_CT_GIDX, ".weight"},
    {".activation_scale", CV_R_DROP, ""},
    {".input_scale", CV_R_DROP, ""},
    {".scales", CV_R_MLX_SCALES, ".weight"},
    {".biases", CV_R_MLX_BIASES, ".weight"},
};

cv_role cv_layout_role(const char *name, char **base) {
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof g_roles / sizeof g_roles[0]; i++) {
        size_t k = strlen(g_roles[i].suffix);
        if (n > k && strcmp(name + n - k, g_roles[i].suffix) == 0) {
            *base = cv_printf("%.*s%s", (int)(n - k), name, g_roles[i].base);
            return g_roles[i].role;
        }
    }
    *base = cv_strdup(name);
    return CV_R_MAIN;
}

/* Source prefixes -> canonical prefixes. First match wins. */
static const struct {
    const char *from, *to;
    cv_class cls;
    bool vl; /* the prefix marks a vision-language wrapper */
} g_canon[] = {
    {"model.language_model.mtp.", "mtp.", CV_MTP, true},
    {"language_model.mtp.", "mtp.", CV_MTP, true},
    {"model.mtp.", "mtp.", CV_MTP, false},
    {"mtp.", "mtp.", CV_MTP, false},
    {"model.language_model.", "model.", CV_LM, true},
    {"language_model.model.", "model.", CV_LM, false}, /* MLX nesting, not by itself VL */
    {"language_model.lm_head.", "lm_head.", CV_LM, false},
    {"model.visual.", "model.visual.", CV_VISION, true},
    {"visual.", "visual.", CV_VISION, true},
    {"vision_tower.", "vision_tower.", CV_VISION, true},
    {"model.vision_tower.", "model.vision_tower.", CV_VISION, true},
};

char *cv_layout_canon(const char *name, int num_layers, cv_class *cls, bool *vl_prefix) {
    *cls = CV_LM;
    *vl_prefix = false;
    char *out = NULL;
    for (size_t i = 0; i < sizeof g_canon / sizeof g_canon[0]; i++) {
        size_t k = strlen(g_canon[i].from);
        if (strncmp(name, g_canon[i].from, k) == 0) {
            *cls = g_canon[i].cls;
            *vl_prefix = g_canon[i].vl;
            out = cv_printf("%s%s", g_canon[i].to, name + k);
            break;
        }
    }
    if (!out)
        out = cv_strdup(name);
    /* DeepSeek keeps its MTP block as model.layers.<num_hidden_layers>. */
    if (out && *cls == CV_LM && num_layers > 0 && strncmp(out, "model.layers.", 13) == 0 &&
        isdigit((unsigned char)out[13])) {
        long l = strtol(out + 13, NULL, 10);
        if (l >= num_layers)
            *cls = CV_MTP;
    }
    return out;
}

/* Parse a plain non-negative decimal index ending at '.'; -2 otherwise. */
static int parse_index(const char *p, const char **end) {
    long v = 0;
    const char *q = p;
    while (isdigit((unsigned char)*q) && v < 100000000)
        v = v * 10 + (*q++ - '0');
    *end = q;
    if (q == p || *q != '.')
        return -2;
    return (int)v;
}

static int proj_of(const char *s, size_t n) {
    for (int p = 0; p < 3; p++)
        if (strlen(cv_proj_names[p]) == n && strncmp(s, cv_proj_names[p], n) == 0)
            return p;
    return -1;
}

cv_eform cv_layout_expert(const char *cname, char **mlp, int *expert, int *proj) {
    *mlp = NULL;
    *expert = -1;
    *proj = -1;
    const char *e = strstr(cname, ".mlp.experts.");
    if (e) {
        const char *rest = e + strlen(".mlp.experts.");
        size_t plen = (size_t)(e - cname) + 4; /* through ".mlp" */
        if (strcmp(rest, "gate_up_proj") == 0 || strcmp(rest, "down_proj") == 0) {
            *mlp = cv_printf("%.*s", (int)plen, cname);
            *proj = rest[0] == 'g' ? -1 : CV_DOWN;
            return rest[0] == 'g' ? CV_EF_FUSED_GATE_UP : CV_EF_FUSED_DOWN;
        }
        const char *q;
        int idx = parse_index(rest, &q);
        const char *dot = idx >= 0 ? strchr(q + 1, '.') : NULL;
        if (idx == -2) { /* experts.<junk>.<...>: still an expert tensor, with a bad index */
            q = strchr(rest, '.');
            dot = q ? strchr(q + 1, '.') : NULL;
        }
        if (!q || !dot || strcmp(dot, ".weight") != 0)
            return CV_EF_NONE;
        int p = proj_of(q + 1, (size_t)(dot - q - 1));
        if (p < 0)
            return CV_EF_NONE;
        *mlp = cv_printf("%.*s", (int)plen, cname);
        *expert = idx;
        *proj = p;
        return CV_EF_PER_EXPERT;
    }
    const char *s = strstr(cname, ".mlp.switch_mlp.");
    if (s) {
        const char *rest = s + strlen(".mlp.switch_mlp.");
        const char *dot = strchr(rest, '.');
        if (!dot || strcmp(dot, ".weight") != 0)
            return CV_EF_NONE;
        int p = proj_of(rest, (size_t)(dot - rest));
        if (p < 0)
            return CV_EF_NONE;
        *mlp = cv_printf("%.*s", (int)((size_t)(s - cname) + 4), cname);
        *proj = p;
        return CV_EF_STACKED;
    }
    return CV_EF_NONE;
}

/* Output prefixes per target: MLX nests qwen3_5_moe under language_model
 * (mlx-lm qwen3_5_moe.py sanitize); HF vision-language checkpoints nest the
 * text model under model.language_model. */
static const struct {
    const char *from, *to;
} g_mlx_qwen35[] = {
    {"model.", "language_model.model."},
    {"lm_head.", "language_model.lm_head."},
    {"mtp.", "language_model.mtp."},
    {"", "language_model."},
}, g_hf_vl[] = {
    {"model.", "model.language_model."},
};

char *cv_layout_out_name(mk_conv_target to, bool qwen35, bool vl, cv_class cls, const char *cname) {
    if (cls == CV_VISION)
        return cv_strdup(cname);
    if (to == MK_CONV_MLX && qwen35) {
        for (size_t i = 0; i < sizeof g_mlx_qwen35 / sizeof g_mlx_qwen35[0]; i++) {
            size_t k = strlen(g_mlx_qwen35[i].from);
            if (strncmp(cname, g_mlx_qwen35[i].from, k) == 0)
                return cv_printf("%s%s", g_mlx_qwen35[i].to, cname + k);
        }
    }
    if (to == MK_CONV_HF && vl && cls == CV_LM) {
        size_t k = strlen(g_hf_vl[0].from);
        if (strncmp(cname, g_hf_vl[0].from, k) == 0)
            return cv_printf("%s%s", g_hf_vl[0].to, cname + k);
    }
    return cv_strdup(cname);
}

static const char *const g_shifted_norms[] = {
    ".input_layernorm.weight", ".post_attention_layernorm.weight", "model.norm.weight",
    ".q_norm.weight", ".k_norm.weight",
};

bool cv_layout_is_shifted_norm(const char *cname, int ndim) {
    if (ndim != 1)
        return false;
    for (size_t i = 0; i < sizeof g_shifted_norms / sizeof g_shifted_norms[0]; i++)
        if (cv_ends_with(cname, g_shifted_norms[i]))
            return true;
    return false;
}

bool cv_layout_keeps_dtype(const char *cname) {
    return cv_ends_with(cname, "A_log") || cv_ends_with(cname, "e_score_correction_bias");
}
