/* Tensor names of every layout, mapped to one canonical description (see
 * layout.h). Tables, not code, carry the knowledge: g_canon (source
 * prefixes), format's suffix table (mk_qview_suffix), g_mlx_qwen35 / g_hf_vl (output
 * prefixes), g_shifted_norms. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/str.h"
#include "model/layout.h"

const char *const mk_layout_proj_names[3] = {"gate_proj", "up_proj", "down_proj"};

mk_qrole mk_layout_role(const char *name, char **base, const char **suffix) {
    mk_qsuffix q;
    mk_qrole r = mk_qview_suffix(name, &q);
    *base = r == MK_QR_MAIN ? mk_strdup(name) : mk_strfmt("%.*s%s", (int)q.stem, name, q.logical);
    if (suffix)
        *suffix = r == MK_QR_MAIN ? "" : q.suffix + 1;
    return r;
}

/* Source prefixes -> canonical prefixes. First match wins. */
static const struct {
    const char *from, *to;
    mk_part part;
    bool vl; /* the prefix marks a vision-language wrapper */
} g_canon[] = {
    {"model.language_model.mtp.", "mtp.", MK_PART_MTP, true},
    {"language_model.mtp.", "mtp.", MK_PART_MTP, true},
    {"model.mtp.", "mtp.", MK_PART_MTP, false},
    {"mtp.", "mtp.", MK_PART_MTP, false},
    {"model.language_model.", "model.", MK_PART_LM, true},
    {"language_model.model.", "model.", MK_PART_LM, false}, /* MLX nesting, not by itself VL */
    {"language_model.lm_head.", "lm_head.", MK_PART_LM, false},
    {"model.visual.", "model.visual.", MK_PART_VISION, true},
    {"visual.", "visual.", MK_PART_VISION, true},
    {"vision_tower.", "vision_tower.", MK_PART_VISION, true},
    {"model.vision_tower.", "model.vision_tower.", MK_PART_VISION, true},
    {"language_model.visual.", "language_model.visual.", MK_PART_VISION, true},
};

const char *const mk_layout_lm_prefixes[] = {"model.language_model", "language_model.model", "model",
                                             "language_model", NULL};

/* Index into g_canon of the prefix `name` starts with, -1 for none. */
static int canon_index(const char *name) {
    for (size_t i = 0; i < sizeof g_canon / sizeof g_canon[0]; i++)
        if (strncmp(name, g_canon[i].from, strlen(g_canon[i].from)) == 0)
            return (int)i;
    return -1;
}

char *mk_layout_canon(const char *name, int num_layers, mk_part *part, bool *vl_prefix) {
    int i = canon_index(name);
    *part = i < 0 ? MK_PART_LM : g_canon[i].part;
    *vl_prefix = i >= 0 && g_canon[i].vl;
    char *out = i < 0 ? mk_strdup(name) : mk_strfmt("%s%s", g_canon[i].to, name + strlen(g_canon[i].from));
    /* DeepSeek keeps its MTP block as model.layers.<num_hidden_layers>. */
    if (out && *part == MK_PART_LM && num_layers > 0 && strncmp(out, "model.layers.", 13) == 0 &&
        isdigit((unsigned char)out[13])) {
        long l = strtol(out + 13, NULL, 10);
        if (l >= num_layers)
            *part = MK_PART_MTP;
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

static int proj_of(const char *const names[3], const char *s, size_t n) {
    for (int p = 0; p < 3; p++)
        if (strlen(names[p]) == n && strncmp(s, names[p], n) == 0)
            return p;
    return -1;
}

/* MoE blocks by the name of their module, with the per-expert projection
 * names of that family (gate, up, down): every family's `mlp` with
 * gate/up/down_proj, and minimax_m2's Mixtral-lineage `block_sparse_moe`
 * with w1/w3/w2. MLX stacks either as <block>.switch_mlp.<gate|up|down>_proj
 * (mlx-lm's minimax.py sanitize maps w1 -> gate_proj, w3 -> up_proj,
 * w2 -> down_proj). */
static const struct {
    const char *blk;
    const char *proj[3];
} g_moe_blocks[] = {
    {".mlp", {"gate_proj", "up_proj", "down_proj"}},
    {".block_sparse_moe", {"w1", "w3", "w2"}},
};

const char *mk_layout_expert_proj(const char *mlp, int proj) {
    size_t n = strlen(mlp);
    for (size_t b = 1; b < sizeof g_moe_blocks / sizeof g_moe_blocks[0]; b++) {
        size_t k = strlen(g_moe_blocks[b].blk);
        if (n >= k && strcmp(mlp + n - k, g_moe_blocks[b].blk) == 0)
            return g_moe_blocks[b].proj[proj];
    }
    return mk_layout_proj_names[proj];
}

mk_eform mk_layout_expert(const char *cname, char **mlp, int *expert, int *proj) {
    *mlp = NULL;
    *expert = -1;
    *proj = -1;
    char pat[64];
    for (size_t b = 0; b < sizeof g_moe_blocks / sizeof g_moe_blocks[0]; b++) {
        const char *blk = g_moe_blocks[b].blk;
        size_t bl = strlen(blk);
        snprintf(pat, sizeof pat, "%s.experts.", blk);
        const char *e = strstr(cname, pat);
        if (e) {
            const char *rest = e + strlen(pat);
            size_t plen = (size_t)(e - cname) + bl; /* through the block's name */
            if (strcmp(rest, "gate_up_proj") == 0 || strcmp(rest, "down_proj") == 0) {
                *mlp = mk_strfmt("%.*s", (int)plen, cname);
                *proj = rest[0] == 'g' ? -1 : MK_PROJ_DOWN;
                return rest[0] == 'g' ? MK_EF_FUSED_GATE_UP : MK_EF_FUSED_DOWN;
            }
            const char *q;
            int idx = parse_index(rest, &q);
            const char *dot = idx >= 0 ? strchr(q + 1, '.') : NULL;
            if (idx == -2) { /* experts.<junk>.<...>: still an expert tensor, with a bad index */
                q = strchr(rest, '.');
                dot = q ? strchr(q + 1, '.') : NULL;
            }
            if (!q || !dot || strcmp(dot, ".weight") != 0)
                return MK_EF_NONE;
            int p = proj_of(g_moe_blocks[b].proj, q + 1, (size_t)(dot - q - 1));
            if (p < 0)
                return MK_EF_NONE;
            *mlp = mk_strfmt("%.*s", (int)plen, cname);
            *expert = idx;
            *proj = p;
            return MK_EF_PER_EXPERT;
        }
        snprintf(pat, sizeof pat, "%s.switch_mlp.", blk);
        const char *s = strstr(cname, pat);
        if (s) {
            const char *rest = s + strlen(pat);
            const char *dot = strchr(rest, '.');
            if (!dot || strcmp(dot, ".weight") != 0)
                return MK_EF_NONE;
            int p = proj_of(mk_layout_proj_names, rest, (size_t)(dot - rest));
            if (p < 0)
                return MK_EF_NONE;
            *mlp = mk_strfmt("%.*s", (int)((size_t)(s - cname) + bl), cname);
            *proj = p;
            return MK_EF_STACKED;
        }
    }
    return MK_EF_NONE;
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

char *mk_layout_out_name(mk_naming naming, bool qwen35, bool hf_vl, mk_part part, const char *cname) {
    bool mlx = naming == MK_NAMING_MLX;
    if (part == MK_PART_VISION)
        return mk_strdup(cname);
    if (mlx && qwen35) {
        for (size_t i = 0; i < sizeof g_mlx_qwen35 / sizeof g_mlx_qwen35[0]; i++) {
            size_t k = strlen(g_mlx_qwen35[i].from);
            if (strncmp(cname, g_mlx_qwen35[i].from, k) == 0)
                return mk_strfmt("%s%s", g_mlx_qwen35[i].to, cname + k);
        }
    }
    if (!mlx && hf_vl && part == MK_PART_LM) {
        size_t k = strlen(g_hf_vl[0].from);
        if (strncmp(cname, g_hf_vl[0].from, k) == 0)
            return mk_strfmt("%s%s", g_hf_vl[0].to, cname + k);
    }
    return mk_strdup(cname);
}

static const char *const g_shifted_norms[] = {
    ".input_layernorm.weight", ".post_attention_layernorm.weight", "model.norm.weight",
    ".q_norm.weight", ".k_norm.weight",
};

bool mk_layout_is_shifted_norm(const char *cname, int ndim) {
    if (ndim != 1)
        return false;
    for (size_t i = 0; i < sizeof g_shifted_norms / sizeof g_shifted_norms[0]; i++)
        if (mk_str_ends_with(cname, g_shifted_norms[i]))
            return true;
    return false;
}

bool mk_layout_keeps_dtype(const char *cname) {
    return mk_str_ends_with(cname, "A_log") || mk_str_ends_with(cname, "e_score_correction_bias");
}

/* ---- one name taken apart (inspect) --------------------------------------- */

/* Per-family module names -> the canonical ones, in place (a layer-relative
 * path): minimax_m2 keeps Mixtral's block_sparse_moe with experts w1 (gate),
 * w3 (up), w2 (down) and its correction bias beside the router. */
static const struct {
    const char *from, *to;
} g_alias_prefix[] = {
    {"block_sparse_moe.e_score_correction_bias", "mlp.gate.e_score_correction_bias"},
    {"block_sparse_moe.", "mlp."},
}, g_alias_proj[] = {{"w1", "gate_proj"}, {"w3", "up_proj"}, {"w2", "down_proj"}};

static void family_alias(char *buf, size_t cap) {
    char tmp[512];
    for (size_t i = 0; i < sizeof g_alias_prefix / sizeof g_alias_prefix[0]; i++) {
        size_t k = strlen(g_alias_prefix[i].from);
        if (strncmp(buf, g_alias_prefix[i].from, k))
            continue;
        snprintf(tmp, sizeof tmp, "%s%s", g_alias_prefix[i].to, buf + k);
        if (strlen(tmp) < cap) /* a name that would not fit keeps its source form */
            memcpy(buf, tmp, strlen(tmp) + 1);
        break;
    }
    /* mlp.experts.N.wJ[.suffix] -> mlp.experts.N.<proj>[.suffix] */
    if (strncmp(buf, "mlp.experts.", 12) || !isdigit((unsigned char)buf[12]))
        return;
    char *d = strchr(buf + 12, '.');
    if (!d)
        return;
    for (size_t j = 0; j < 3; j++) {
        size_t k = strlen(g_alias_proj[j].from);
        if (strncmp(d + 1, g_alias_proj[j].from, k) || (d[1 + k] && d[1 + k] != '.'))
            continue;
        snprintf(tmp, sizeof tmp, "%.*s%s%s", (int)(d + 1 - buf), buf, g_alias_proj[j].to, d + 1 + k);
        if (strlen(tmp) < cap)
            memcpy(buf, tmp, strlen(tmp) + 1);
        return;
    }
}

/* Storage suffixes of transformers' fused expert tensors that are not
 * companions of a .weight (gpt-oss: MXFP4 blocks and scales, biases):
 * mlp.experts.gate_up_proj_blocks is module mlp.experts.gate_up_proj,
 * storage "blocks". */
static const struct {
    const char *suffix, *storage;
} g_fused_suffix[] = {{"_blocks", "blocks"}, {"_scales", "scales"}, {"_bias", "bias"}};

static void fused_suffix(char *buf, char *storage, size_t cap) {
    if (strncmp(buf, "mlp.experts.", 12) || isdigit((unsigned char)buf[12]))
        return;
    for (size_t i = 0; i < sizeof g_fused_suffix / sizeof g_fused_suffix[0]; i++) {
        size_t n = strlen(buf), k = strlen(g_fused_suffix[i].suffix);
        if (n > k && !strcmp(buf + n - k, g_fused_suffix[i].suffix)) {
            buf[n - k] = 0;
            snprintf(storage, cap, "%s", g_fused_suffix[i].storage);
            return;
        }
    }
}

void mk_layout_parse(const char *name, mk_lname *t) {
    memset(t, 0, sizeof *t);
    t->layer = -1;
    t->expert = -1;
    /* the path inside its part: canonical prefixes dropped, the vision
     * tower's own prefix dropped, a bare `language_model.` dropped */
    int ci = canon_index(name);
    const char *r = name;
    t->part = ci < 0 ? MK_PART_LM : g_canon[ci].part;
    if (ci >= 0)
        r = name + strlen(g_canon[ci].from);
    if (ci >= 0 && t->part == MK_PART_LM && !strcmp(g_canon[ci].to, "lm_head."))
        r -= strlen("lm_head."); /* language_model.lm_head.X -> lm_head.X */
    else if (ci < 0 && strncmp(r, "language_model.", 15) == 0)
        r += 15;
    else if (ci < 0 && strncmp(r, "model.", 6) == 0)
        r += 6;
    if (strncmp(r, "layers.", 7) == 0 && isdigit((unsigned char)r[7])) {
        char *end;
        long l = strtol(r + 7, &end, 10);
        if (*end == '.' && l <= 1000000) {
            t->layer = (int)l;
            r = end + 1;
        }
    }
    char buf[sizeof t->module];
    snprintf(buf, sizeof buf, "%s", r);
    family_alias(buf, sizeof buf);
    /* storage suffix: a companion's, else .weight / .bias */
    size_t n = strlen(buf);
    mk_qsuffix q;
    const char *suf = mk_qview_suffix(buf, &q) != MK_QR_MAIN ? q.suffix
                      : mk_str_ends_with(buf, ".weight")      ? ".weight"
                      : mk_str_ends_with(buf, ".bias")        ? ".bias"
                                                              : NULL;
    if (suf && n > strlen(suf)) {
        snprintf(t->storage, sizeof t->storage, "%s", suf + 1);
        buf[n - strlen(suf)] = 0;
    } else if (!suf) {
        fused_suffix(buf, t->storage, sizeof t->storage);
    }
    /* expert forms; the per-expert index is removed from the module */
    char *e = strstr(buf, "mlp.experts.");
    if (e && (e == buf || e[-1] == '.')) {
        char *p = e + strlen("mlp.experts.");
        char *end;
        long x = strtol(p, &end, 10);
        if (isdigit((unsigned char)*p) && *end == '.' && x <= 100000000) {
            t->expert = (int)x;
            t->xform = MK_XF_PER_EXPERT;
            memmove(p, end + 1, strlen(end + 1) + 1);
        } else if (!strcmp(p, "gate_up_proj") || !strcmp(p, "down_proj")) {
            t->xform = MK_XF_FUSED;
        }
    } else if (strstr(buf, "mlp.switch_mlp.")) {
        t->xform = MK_XF_SWITCH;
    }
    snprintf(t->module, sizeof t->module, "%s", buf);
}
