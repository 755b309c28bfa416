/* config.json reading for every supported family, with the conventions of
 * both released checkpoints and transformers 5.x (see fixtures README):
 * num_experts | num_local_experts | n_routed_experts; rope_theta at the top
 * or under rope_parameters / rope_scaling; text_config nesting for vision-
 * language wrappers; layer_types or full_attention_interval. Quantization
 * blocks: MLX "quantization" (with per-module entries), FP8 and
 * compressed-tensors "quantization_config". */
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "core/json_err.h"
#include "core/alloc.h"
#include "core/str.h"
#include "io/os.h"
#include "moekit/config.h"

static const struct {
    const char *model_type;
    mk_arch arch;
} g_archs[] = {
    {"qwen3_moe", MK_ARCH_QWEN3_MOE},       {"qwen3_next", MK_ARCH_QWEN3_NEXT},
    {"qwen3_5_moe", MK_ARCH_QWEN3_5_MOE},   {"qwen3_5_moe_text", MK_ARCH_QWEN3_5_MOE},
    {"deepseek_v3", MK_ARCH_DEEPSEEK_V3},   {"kimi_k2", MK_ARCH_DEEPSEEK_V3},
    {"glm4_moe_lite", MK_ARCH_DEEPSEEK_V3}, /* GLM-4.7-Flash: DeepSeek-V3's MLA + routing */
    {"glm4_moe", MK_ARCH_GLM4_MOE},         {"minimax_m2", MK_ARCH_MINIMAX_M2},
    {"gpt_oss", MK_ARCH_GPT_OSS},
    {"deepseek_v32", MK_ARCH_DEEPSEEK_V3},  /* DeepSeek-V3.2: MLA + DSA (g_dsa) */
    {"glm_moe_dsa", MK_ARCH_DEEPSEEK_V3},   /* GLM-5.x: MLA + DSA (g_dsa) */
};

/* Families with DeepSeek sparse attention: the lightning indexer, the
 * layout of its own RoPE (transformers 5.17: DeepseekV32Indexer rotates
 * half-split pairs, GlmMoeDsaIndexer interleaved ones), the config class's
 * defaults for absent keys, and whether layers may share a selection
 * (glm_moe_dsa's indexer_types; deepseek_v32 has no such key). */
typedef struct dsa_family {
    const char *model_type;
    int dsa;
    int topk, heads, dim; /* index_topk, index_n_heads, index_head_dim when absent */
    bool shared;
} dsa_family;

static const dsa_family g_dsa[] = {
    {"deepseek_v32", MK_DSA_HALF, 2048, 64, 128, false},
    {"glm_moe_dsa", MK_DSA_INTERLEAVED, 2048, 32, 128, true},
};

const char *mk_arch_name(mk_arch a) {
    switch (a) {
    case MK_ARCH_QWEN3_MOE: return "qwen3_moe";
    case MK_ARCH_QWEN3_NEXT: return "qwen3_next";
    case MK_ARCH_QWEN3_5_MOE: return "qwen3_5_moe";
    case MK_ARCH_DEEPSEEK_V3: return "deepseek_v3";
    case MK_ARCH_GLM4_MOE: return "glm4_moe";
    case MK_ARCH_MINIMAX_M2: return "minimax_m2";
    case MK_ARCH_GPT_OSS: return "gpt_oss";
    default: return "unknown";
    }
}

const char *mk_arch_supported(void) {
    return "qwen3_moe, qwen3_next, qwen3_5_moe (qwen3_5_moe_text), deepseek_v3, kimi_k2, glm4_moe_lite, deepseek_v32, glm_moe_dsa, glm4_moe, minimax_m2, gpt_oss";
}

static const char *const g_qmode_names[] = {"affine", "mxfp4", "mxfp8", "nvfp4"};

const char *mk_qmode_name(mk_qmode m) {
    return (unsigned)m < 4 ? g_qmode_names[m] : "?";
}

bool mk_qmode_parse(const char *s, mk_qmode *out) {
    for (int i = 0; i < 4; i++)
        if (strcmp(s, g_qmode_names[i]) == 0) {
            *out = (mk_qmode)i;
            return true;
        }
    return false;
}

/* ---- typed getters: absent -> default; wrong type -> error */

typedef struct rd {
    const char *what;
    mk_status s;
} rd;

static int get_int(rd *r, json_t *o, const char *k, int def) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v))
        return def;
    /* out of int range is an error, not a wrap (and for reals, not UB) */
    if (json_is_integer(v) && json_integer_value(v) >= INT_MIN && json_integer_value(v) <= INT_MAX)
        return (int)json_integer_value(v);
    if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
        json_real_value(v) >= INT_MIN && json_real_value(v) <= INT_MAX)
        return (int)json_real_value(v);
    if (r->s == MK_OK)
        r->s = mk_err(MK_E_FORMAT, "%s: field '%s': expected an integer in [%d, %d]", r->what, k, INT_MIN,
                      INT_MAX);
    return def;
}

static double get_num(rd *r, json_t *o, const char *k, double def) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v))
        return def;
    if (json_is_number(v))
        return json_number_value(v);
    if (r->s == MK_OK)
        r->s = mk_err(MK_E_FORMAT, "%s: field '%s': expected a number", r->what, k);
    return def;
}

static bool get_bool(rd *r, json_t *o, const char *k, bool def) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v))
        return def;
    if (json_is_boolean(v))
        return json_is_true(v);
    if (r->s == MK_OK)
        r->s = mk_err(MK_E_FORMAT, "%s: field '%s': expected true or false", r->what, k);
    return def;
}

static void get_str(rd *r, json_t *o, const char *k, char *dst, size_t n) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v))
        return;
    if (!json_is_string(v)) {
        if (r->s == MK_OK)
            r->s = mk_err(MK_E_FORMAT, "%s: field '%s': expected a string", r->what, k);
        return;
    }
    snprintf(dst, n, "%s", json_string_value(v));
}

/* First of several alternative integer keys that is present. */
static int get_int_any(rd *r, json_t *o, const char *const *keys, int def) {
    for (int i = 0; keys[i]; i++)
        if (json_object_get(o, keys[i]) && !json_is_null(json_object_get(o, keys[i])))
            return get_int(r, o, keys[i], def);
    return def;
}

/* A rope value given in two places (top level, rope_scaling, rope_parameters)
 * must agree: "later wins" would silently drop one of them. */
static void rope_agree(rd *r, json_t *tc, const char *const *blocks, const char *key) {
    json_t *first = NULL;
    const char *from = NULL;
    for (int b = -1; b < 2; b++) {
        json_t *o = b < 0 ? tc : json_object_get(tc, blocks[b]);
        json_t *v = json_is_object(o) ? json_object_get(o, key) : NULL;
        if (!v || json_is_null(v))
            continue;
        if (!first) {
            first = v;
            from = b < 0 ? "the top level" : blocks[b];
        } else if (!json_equal(first, v) &&
                   !(json_is_number(first) && json_is_number(v) &&
                     json_number_value(first) == json_number_value(v)) &&
                   r->s == MK_OK) {
            char *a = json_dumps(first, JSON_ENCODE_ANY | JSON_COMPACT);
            char *c = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
            r->s = mk_err(MK_E_FORMAT, "%s: %s is %.40s in %s but %.40s in %s: which one the "
                          "model was trained with is ambiguous", r->what, key, a ? a : "?", from,
                          c ? c : "?", b < 0 ? "the top level" : blocks[b]);
            free(a);
            free(c);
        }
    }
}

static void parse_rope(rd *r, json_t *tc, mk_rope *rp) {
    memset(rp, 0, sizeof *rp);
    snprintf(rp->type, sizeof rp->type, "default");
    rp->theta = get_num(r, tc, "rope_theta", 10000.0);
    rp->factor = 1.0;
    rp->beta_fast = 32;
    rp->beta_slow = 1;
    rp->mscale = 1;
    rp->mscale_all_dim = 0;
    rp->attention_factor = -1;
    rp->truncate = true;
    rp->partial_rotary_factor = get_num(r, tc, "partial_rotary_factor", 1.0);
    /* transformers 5 puts everything in rope_parameters; older configs use
     * rope_scaling for the scaling part. Read both, later wins. */
    const char *blocks[] = {"rope_scaling", "rope_parameters"};
    static const char *const agree[] = {"rope_theta", "partial_rotary_factor", "factor",
                                        "original_max_position_embeddings"};
    for (size_t i = 0; i < sizeof agree / sizeof agree[0]; i++)
        rope_agree(r, tc, blocks, agree[i]);
    json_t *ts = json_object_get(tc, "rope_scaling"), *tp = json_object_get(tc, "rope_parameters");
    if (json_is_object(ts) && json_is_object(tp)) { /* "type" is rope_scaling's old name */
        json_t *a = json_object_get(ts, "rope_type") ? json_object_get(ts, "rope_type")
                                                     : json_object_get(ts, "type");
        json_t *b = json_object_get(tp, "rope_type") ? json_object_get(tp, "rope_type")
                                                     : json_object_get(tp, "type");
        if (json_is_string(a) && json_is_string(b) && strcmp(json_string_value(a), json_string_value(b)) &&
            r->s == MK_OK)
            r->s = mk_err(MK_E_FORMAT, "%s: rope_type is '%s' in rope_scaling but '%s' in rope_parameters",
                          r->what, json_string_value(a), json_string_value(b));
    }
    for (int b = 0; b < 2; b++) {
        json_t *o = json_object_get(tc, blocks[b]);
        if (!json_is_object(o))
            continue;
        rp->theta = get_num(r, o, "rope_theta", rp->theta);
        json_t *t = json_object_get(o, "rope_type");
        if (!t)
            t = json_object_get(o, "type");
        if (json_is_string(t))
            snprintf(rp->type, sizeof rp->type, "%s", json_string_value(t));
        rp->factor = get_num(r, o, "factor", rp->factor);
        rp->orig_max_pos = get_num(r, o, "original_max_position_embeddings", rp->orig_max_pos);
        rp->beta_fast = get_num(r, o, "beta_fast", rp->beta_fast);
        rp->beta_slow = get_num(r, o, "beta_slow", rp->beta_slow);
        rp->mscale = get_num(r, o, "mscale", rp->mscale);
        rp->mscale_all_dim = get_num(r, o, "mscale_all_dim", rp->mscale_all_dim);
        rp->attention_factor = get_num(r, o, "attention_factor", rp->attention_factor);
        rp->partial_rotary_factor = get_num(r, o, "partial_rotary_factor", rp->partial_rotary_factor);
        rp->truncate = get_bool(r, o, "truncate", rp->truncate);
    }
}

static int *int_list(rd *r, json_t *v, const char *k, int *n) {
    *n = 0;
    if (!v || json_is_null(v))
        return NULL;
    if (json_is_integer(v)) {
        int *a = mk_malloc(sizeof *a);
        if (a) {
            a[0] = (int)json_integer_value(v);
            *n = 1;
        }
        return a;
    }
    if (!json_is_array(v)) {
        if (r->s == MK_OK)
            r->s = mk_err(MK_E_FORMAT, "%s: field '%s': expected a list of integers", r->what, k);
        return NULL;
    }
    size_t m = json_array_size(v);
    int *a = mk_calloc(m ? m : 1, sizeof *a);
    for (size_t i = 0; a && i < m; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_integer(e)) {
            if (r->s == MK_OK)
                r->s = mk_err(MK_E_FORMAT, "%s: field '%s[%zu]': expected an integer", r->what, k, i);
            continue;
        }
        a[(*n)++] = (int)json_integer_value(e);
    }
    return a;
}

static void index_entries(mk_qcfg *qc);

static void parse_mlx_quant(rd *r, json_t *q, mk_qcfg *qc) {
    qc->method = MK_QM_MLX;
    qc->bits = get_int(r, q, "bits", 4);
    qc->group_size = get_int(r, q, "group_size", 64);
    qc->mode = MK_QMODE_AFFINE;
    json_t *m = json_object_get(q, "mode");
    if (json_is_string(m) && !mk_qmode_parse(json_string_value(m), &qc->mode) && r->s == MK_OK)
        r->s = mk_err(MK_E_UNSUPPORTED, "%s: quantization mode '%s' is not one of affine, mxfp4, mxfp8, nvfp4",
                      r->what, json_string_value(m));
    size_t cap = json_object_size(q);
    qc->entries = mk_calloc(cap ? cap : 1, sizeof *qc->entries);
    const char *k;
    json_t *v;
    json_object_foreach(q, k, v) {
        if (!json_is_object(v) && !json_is_boolean(v))
            continue; /* bits, group_size, mode, ... */
        mk_qentry *e = &qc->entries[qc->n_entries++];
        e->path = mk_strdup(k);
        if (json_is_boolean(v)) {
            e->quantized = json_is_true(v);
            e->bits = qc->bits;
            e->group_size = qc->group_size;
            e->mode = qc->mode;
            continue;
        }
        e->quantized = true;
        e->bits = get_int(r, v, "bits", qc->bits);
        e->group_size = get_int(r, v, "group_size", qc->group_size);
        e->mode = MK_QMODE_AFFINE; /* an entry without mode is affine (FORMATS.md 2) */
        json_t *em = json_object_get(v, "mode");
        if (json_is_string(em) && !mk_qmode_parse(json_string_value(em), &e->mode) && r->s == MK_OK)
            r->s = mk_err(MK_E_UNSUPPORTED, "%s: quantization['%s'].mode '%s' is not supported", r->what, k,
                          json_string_value(em));
    }
    index_entries(qc);
}

/* Per-module entries number one per expert tensor on real models (~10^5):
 * index them so each lookup is O(1) instead of a scan. */
static void index_entries(mk_qcfg *qc) {
    int slots = 16;
    while (slots < 2 * qc->n_entries)
        slots *= 2;
    qc->entry_slots = mk_malloc((size_t)slots * sizeof *qc->entry_slots);
    if (!qc->entry_slots)
        return; /* lookups fall back to scanning */
    qc->n_entry_slots = slots;
    for (int i = 0; i < slots; i++)
        qc->entry_slots[i] = -1;
    for (int e = 0; e < qc->n_entries; e++) {
        const char *p = qc->entries[e].path;
        if (!p)
            continue;
        size_t i = (size_t)XXH3_64bits(p, strlen(p)) & (size_t)(slots - 1);
        while (qc->entry_slots[i] >= 0)
            i = (i + 1) & (size_t)(slots - 1);
        qc->entry_slots[i] = e;
    }
}

static const mk_qentry *find_entry(const mk_qcfg *q, const char *path) {
    if (!q->entry_slots) {
        for (int i = 0; i < q->n_entries; i++)
            if (q->entries[i].path && strcmp(q->entries[i].path, path) == 0)
                return &q->entries[i];
        return NULL;
    }
    size_t mask = (size_t)q->n_entry_slots - 1, i = (size_t)XXH3_64bits(path, strlen(path)) & mask;
    for (; q->entry_slots[i] >= 0; i = (i + 1) & mask)
        if (strcmp(q->entries[q->entry_slots[i]].path, path) == 0)
            return &q->entries[q->entry_slots[i]];
    return NULL;
}

static void parse_qconfig(rd *r, json_t *q, mk_qcfg *qc) {
    json_t *qm = json_object_get(q, "quant_method");
    const char *m = json_is_string(qm) ? json_string_value(qm) : "";
    if (strcmp(m, "fp8") == 0) {
        qc->method = MK_QM_FP8;
        snprintf(qc->fp8_fmt, sizeof qc->fp8_fmt, "e4m3");
        get_str(r, q, "fmt", qc->fp8_fmt, sizeof qc->fp8_fmt);
        get_str(r, q, "activation_scheme", qc->act_scheme, sizeof qc->act_scheme);
        qc->block[0] = qc->block[1] = 128;
        json_t *b = json_object_get(q, "weight_block_size");
        if (b && !json_is_null(b)) { /* absent: 128 x 128; anything else must be [r, c] */
            bool okb = json_is_array(b) && json_array_size(b) == 2;
            for (size_t i = 0; okb && i < 2; i++) {
                json_t *e = json_array_get(b, i);
                okb = json_is_integer(e) && json_integer_value(e) > 0 && json_integer_value(e) <= (1 << 20);
                if (okb)
                    qc->block[i] = (int)json_integer_value(e);
            }
            if (!okb && r->s == MK_OK) {
                char *found = json_dumps(b, JSON_ENCODE_ANY | JSON_COMPACT);
                r->s = mk_err(MK_E_FORMAT,
                              "%s: quantization_config.weight_block_size: expected [rows, cols] of two "
                              "positive integers, found %.80s",
                              r->what, found ? found : "?");
                free(found);
            }
        }
    } else if (strcmp(m, "compressed-tensors") == 0) {
        qc->method = MK_QM_CT;
        get_str(r, q, "format", qc->ct_format, sizeof qc->ct_format);
        json_t *groups = json_object_get(q, "config_groups");
        const char *gk;
        json_t *g;
        snprintf(qc->ct_type, sizeof qc->ct_type, "int");
        qc->ct_n_groups = json_is_object(groups) ? (int)json_object_size(groups) : 0;
        json_object_foreach(groups, gk, g) {
            json_t *w = json_object_get(g, "weights");
            if (!json_is_object(w))
                continue;
            qc->ct_bits = get_int(r, w, "num_bits", 4);
            qc->ct_group_size = get_int(r, w, "group_size", 0);
            qc->ct_symmetric = get_bool(r, w, "symmetric", true);
            get_str(r, w, "strategy", qc->ct_strategy, sizeof qc->ct_strategy);
            get_str(r, w, "type", qc->ct_type, sizeof qc->ct_type);
            qc->ct_dynamic = get_bool(r, w, "dynamic", false);
            json_t *fmt = json_object_get(g, "format");
            if (json_is_string(fmt))
                snprintf(qc->ct_format, sizeof qc->ct_format, "%s", json_string_value(fmt));
            break; /* one group in every shipped checkpoint; more are reported by inspect */
        }
        json_t *ign = json_object_get(q, "ignore");
        if (json_is_array(ign)) {
            size_t n = json_array_size(ign);
            qc->ct_ignore = mk_calloc(n ? n : 1, sizeof *qc->ct_ignore);
            for (size_t i = 0; qc->ct_ignore && i < n; i++)
                if (json_is_string(json_array_get(ign, i)))
                    qc->ct_ignore[qc->n_ct_ignore++] = mk_strdup(json_string_value(json_array_get(ign, i)));
        }
    } else if (strcmp(m, "mxfp4") == 0) {
        /* gpt-oss as released: routed experts in *_blocks / *_scales (the
         * names say which modules; modules_to_not_convert names the rest) */
        qc->method = MK_QM_HF_MXFP4;
    } else if (json_object_get(q, "bits") || json_object_get(q, "group_size")) {
        parse_mlx_quant(r, q, qc); /* MLX writes an identical quantization_config */
    } else if (*m && r->s == MK_OK) {
        r->s = mk_err(MK_E_UNSUPPORTED,
                      "%s: quantization_config.quant_method '%s' is not supported (fp8, compressed-tensors, "
                      "or an MLX quantization block)",
                      r->what, m);
    }
}

/* layer_types: how many, and the first entry the family does not implement
 * (hybrids: linear_attention / full_attention; the others full_attention). */
static void scan_layer_types(json_t *lt, mk_config *c) {
    c->n_layer_types = -1;
    c->bad_layer_type = -1;
    if (!lt || json_is_null(lt))
        return;
    bool hybrid = c->arch == MK_ARCH_QWEN3_NEXT || c->arch == MK_ARCH_QWEN3_5_MOE;
    bool sliding = c->arch == MK_ARCH_GPT_OSS;
    /* the DSA families name their (only) layer kind deepseek_sparse_attention */
    const char *full = c->dsa ? "deepseek_sparse_attention" : "full_attention";
    if (!json_is_array(lt)) {
        c->n_layer_types = 0;
        c->bad_layer_type = 0;
        snprintf(c->bad_layer_type_name, sizeof c->bad_layer_type_name, "(not a list)");
        return;
    }
    c->n_layer_types = (int)(json_array_size(lt) < INT_MAX ? json_array_size(lt) : INT_MAX);
    for (int i = 0; i < c->n_layer_types; i++) {
        json_t *e = json_array_get(lt, (size_t)i);
        const char *v = json_is_string(e) ? json_string_value(e) : "(not a string)";
        if (!strcmp(v, full) || (hybrid && !strcmp(v, "linear_attention")) ||
            (sliding && !strcmp(v, "sliding_attention")))
            continue;
        c->bad_layer_type = i;
        snprintf(c->bad_layer_type_name, sizeof c->bad_layer_type_name, "%s", v);
        return;
    }
}

/* mlp_layer_types (glm4_moe_lite, deepseek_v32, glm_moe_dsa): "dense" /
 * "sparse" per layer. The dense ones go to mlp_only_layers; when the key is
 * present it alone decides the deepseek schedule (transformers builds each
 * layer from it and derives it from first_k_dense_replace only when absent:
 * glm5dsa-a says first_k_dense_replace 3 but dense, sparse, sparse). Any
 * other entry, or a length other than num_hidden_layers, is an error naming
 * the key. */
static void scan_mlp_layer_types(rd *r, json_t *lt, mk_config *c) {
    c->has_mlp_layer_types = false;
    if (!lt || json_is_null(lt))
        return;
    c->has_mlp_layer_types = true;
    size_t n = json_is_array(lt) ? json_array_size(lt) : 0;
    if (!json_is_array(lt) || (int64_t)n != c->num_layers) {
        if (r->s == MK_OK)
            r->s = mk_err(MK_E_FORMAT, "%s: mlp_layer_types: expected a list of %d entries "
                          "(num_hidden_layers), found %zu", r->what, c->num_layers, n);
        return;
    }
    int *d = mk_realloc(c->mlp_only_layers, (size_t)(c->n_mlp_only_layers + (int)n + 1) * sizeof *d);
    if (!d) {
        if (r->s == MK_OK)
            r->s = mk_err(MK_E_NOMEM, "%s: no memory for mlp_layer_types (%zu entries)", r->what, n);
        return;
    }
    c->mlp_only_layers = d;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(lt, i);
        const char *v = json_is_string(e) ? json_string_value(e) : "(not a string)";
        if (!strcmp(v, "dense"))
            c->mlp_only_layers[c->n_mlp_only_layers++] = (int)i;
        else if (strcmp(v, "sparse") && r->s == MK_OK)
            r->s = mk_err(MK_E_UNSUPPORTED, "%s: mlp_layer_types: entry %zu is '%.40s', expected "
                          "dense or sparse", r->what, i, v);
    }
}

/* gpt_oss: sliding_window and the layers it applies to (layer_types
 * "sliding_attention"; without layer_types mlx-lm's and transformers'
 * default, sliding on even layers), swiglu_limit / swiglu_alpha. */
static void parse_sliding(rd *r, json_t *tc, mk_config *c) {
    c->swiglu_limit = get_num(r, tc, "swiglu_limit", 7.0);
    c->swiglu_alpha = get_num(r, tc, "swiglu_alpha", 1.702);
    if (c->arch != MK_ARCH_GPT_OSS)
        return;
    /* OpenAI's own key beside transformers' num_experts_per_tok */
    int ept = get_int(r, tc, "experts_per_token", c->num_experts_per_tok);
    if (ept != c->num_experts_per_tok && r->s == MK_OK)
        r->s = mk_err(MK_E_FORMAT, "%s: experts_per_token %d contradicts num_experts_per_tok %d", r->what,
                      ept, c->num_experts_per_tok);
    c->sliding_window = get_int(r, tc, "sliding_window", 0);
    if (c->num_layers <= 0 || c->num_layers >= 100000)
        return;
    c->layer_is_sliding = mk_calloc((size_t)c->num_layers, 1);
    if (!c->layer_is_sliding) {
        if (r->s == MK_OK)
            r->s = mk_err(MK_E_NOMEM, "%s: no memory for the layer schedule", r->what);
        return;
    }
    json_t *lt = json_object_get(tc, "layer_types");
    for (int i = 0; i < c->num_layers; i++) {
        json_t *e = json_is_array(lt) ? json_array_get(lt, (size_t)i) : NULL;
        c->layer_is_sliding[i] = e ? json_is_string(e) && !strcmp(json_string_value(e), "sliding_attention")
                                   : !json_is_array(lt) && i % 2 == 0;
    }
}

static const dsa_family *dsa_of(const char *mt) {
    for (size_t i = 0; i < sizeof g_dsa / sizeof g_dsa[0]; i++)
        if (strcmp(mt, g_dsa[i].model_type) == 0)
            return &g_dsa[i];
    return NULL;
}

static bool has_key(json_t *o, const char *k) {
    return json_object_get(o, k) && !json_is_null(json_object_get(o, k));
}

/* glm_moe_dsa's per-layer "shared" flags as transformers derives them when
 * indexer_types is absent: index_topk_pattern ("F"/"S" per layer, or a list
 * of "full"/"shared"), else layer i is full iff max(i - offset + 1, 0) %
 * freq == 0 (index_topk_freq, default 1 and at least 1;
 * index_skip_topk_offset, default 2). *given: whether any of those keys is
 * present. */
static void derive_shared(rd *r, json_t *tc, mk_config *c, unsigned char *d, bool *given) {
    int L = c->num_layers;
    json_t *pat = json_object_get(tc, "index_topk_pattern");
    *given = has_key(tc, "index_topk_pattern") || has_key(tc, "index_topk_freq") ||
             has_key(tc, "index_skip_topk_offset");
    if (pat && !json_is_null(pat)) {
        size_t n = json_is_string(pat) ? strlen(json_string_value(pat)) : json_is_array(pat) ? json_array_size(pat) : 0;
        if ((int64_t)n != L) {
            if (r->s == MK_OK)
                r->s = mk_err(MK_E_FORMAT, "%s: index_topk_pattern: expected %d entries (num_hidden_layers), "
                              "found %zu", r->what, L, n);
            return;
        }
        for (int i = 0; i < L; i++) {
            const char *v = "";
            char ch[2] = {0, 0};
            if (json_is_string(pat)) {
                ch[0] = json_string_value(pat)[i];
                v = !strcmp(ch, "F") ? "full" : !strcmp(ch, "S") ? "shared" : ch;
            } else if (json_is_string(json_array_get(pat, (size_t)i)))
                v = json_string_value(json_array_get(pat, (size_t)i));
            d[i] = !strcmp(v, "shared");
            if (strcmp(v, "full") && strcmp(v, "shared") && r->s == MK_OK)
                r->s = mk_err(MK_E_FORMAT, "%s: index_topk_pattern: entry %d is '%.20s', expected F or S "
                              "(full or shared)", r->what, i, v);
        }
        return;
    }
    long long freq = get_int(r, tc, "index_topk_freq", 1), off = get_int(r, tc, "index_skip_topk_offset", 2);
    freq = freq > 1 ? freq : 1;
    for (int i = 0; i < L; i++) {
        long long k = i - off + 1;
        d[i] = (k > 0 ? k : 0) % freq != 0;
    }
}

/* The DSA indexer keys: read for the DSA families (absent ones take the
 * config class's defaults); for a family that does not read one, the first
 * present is recorded so that the check refuses it. indexer_types
 * (glm_moe_dsa): "full" runs the layer's own indexer, "shared" reuses the
 * previous layer's selection; without it the flags are derived as
 * transformers does (derive_shared), and when both are given they must agree. */
static void parse_indexer(rd *r, json_t *tc, mk_config *c, const dsa_family *f) {
    static const char *const keys[] = {"index_topk", "index_n_heads", "index_head_dim", NULL};
    static const char *const skeys[] = {"indexer_types", "index_topk_pattern", "index_skip_topk_offset",
                                        "index_topk_freq", NULL};
    c->bad_indexer_type = -1;
    for (int i = 0; keys[i] && !f && !c->index_key[0]; i++)
        if (has_key(tc, keys[i]))
            snprintf(c->index_key, sizeof c->index_key, "%s", keys[i]);
    for (int i = 0; skeys[i] && !(f && f->shared) && !c->index_key[0]; i++)
        if (has_key(tc, skeys[i]))
            snprintf(c->index_key, sizeof c->index_key, "%s", skeys[i]);
    if (!f)
        return;
    c->dsa = f->dsa;
    c->index_topk = get_int(r, tc, "index_topk", f->topk);
    c->index_n_heads = get_int(r, tc, "index_n_heads", f->heads);
    c->index_head_dim = get_int(r, tc, "index_head_dim", f->dim);
    int L = c->num_layers;
    if (!f->shared || L <= 0 || L >= 100000)
        return;
    unsigned char *d = mk_calloc((size_t)L, 1);
    c->index_shared = mk_calloc((size_t)L, 1);
    if (!d || !c->index_shared) {
        free(d);
        if (r->s == MK_OK)
            r->s = mk_err(MK_E_NOMEM, "%s: no memory for indexer_types (%d layers)", r->what, L);
        return;
    }
    bool given;
    derive_shared(r, tc, c, d, &given);
    json_t *it = json_object_get(tc, "indexer_types");
    if (!it || json_is_null(it)) {
        memcpy(c->index_shared, d, (size_t)L);
        free(d);
        return;
    }
    size_t n = json_is_array(it) ? json_array_size(it) : 0;
    if (!json_is_array(it) || (int64_t)n != L) {
        if (r->s == MK_OK)
            r->s = mk_err(MK_E_FORMAT, "%s: indexer_types: expected a list of %d entries "
                          "(num_hidden_layers), found %zu", r->what, L, n);
        free(d);
        return;
    }
    for (int i = 0; i < L; i++) {
        json_t *e = json_array_get(it, (size_t)i);
        const char *v = json_is_string(e) ? json_string_value(e) : "";
        c->index_shared[i] = !strcmp(v, "shared");
        if (strcmp(v, "full") && strcmp(v, "shared") && c->bad_indexer_type < 0)
            c->bad_indexer_type = i;
        if (given && c->index_shared[i] != d[i] && r->s == MK_OK)
            r->s = mk_err(MK_E_FORMAT, "%s: indexer_types says layer %d is %s, but index_topk_pattern / "
                          "index_topk_freq / index_skip_topk_offset make it %s", r->what, i,
                          c->index_shared[i] ? "shared" : "full", d[i] ? "shared" : "full");
    }
    free(d);
}

static void parse_text(rd *r, json_t *tc, mk_config *c) {
    static const char *const ne[] = {"num_experts", "num_local_experts", "n_routed_experts", NULL};
    c->vocab_size = get_int(r, tc, "vocab_size", 0);
    c->hidden_size = get_int(r, tc, "hidden_size", 0);
    c->num_layers = get_int(r, tc, "num_hidden_layers", 0);
    c->num_heads = get_int(r, tc, "num_attention_heads", 0);
    c->num_kv_heads = get_int(r, tc, "num_key_value_heads", c->num_heads);
    /* num_heads > 0: a negative count must not reach INT_MIN / -1 */
    c->head_dim = get_int(r, tc, "head_dim", c->num_heads > 0 ? c->hidden_size / c->num_heads : 0);
    c->intermediate_size = get_int(r, tc, "intermediate_size", 0);
    /* minimax_m2 (Mixtral lineage): the experts are intermediate_size wide */
    c->moe_intermediate_size = get_int(r, tc, "moe_intermediate_size",
                                       c->arch == MK_ARCH_MINIMAX_M2 || c->arch == MK_ARCH_GPT_OSS
                                           ? c->intermediate_size
                                           : 0);
    c->num_experts = get_int_any(r, tc, ne, 0);
    snprintf(c->experts_key, sizeof c->experts_key, "num_experts");
    for (int i = 0; ne[i]; i++)
        if (json_object_get(tc, ne[i]) && !json_is_null(json_object_get(tc, ne[i]))) {
            snprintf(c->experts_key, sizeof c->experts_key, "%s", ne[i]);
            break;
        }
    c->num_experts_per_tok = get_int(r, tc, "num_experts_per_tok", 0);
    /* minimax_m2's router always renormalises (a false is refused in the check) */
    /* gpt_oss: softmax over the top-k logits = the full softmax renormalised */
    c->norm_topk_prob = get_bool(r, tc, "norm_topk_prob",
                                 c->arch == MK_ARCH_QWEN3_5_MOE || c->arch == MK_ARCH_MINIMAX_M2 ||
                                     c->arch == MK_ARCH_GPT_OSS);
    c->decoder_sparse_step = get_int(r, tc, "decoder_sparse_step", 1);
    c->mlp_only_layers = int_list(r, json_object_get(tc, "mlp_only_layers"), "mlp_only_layers",
                                  &c->n_mlp_only_layers);
    c->rms_norm_eps = get_num(r, tc, "rms_norm_eps", 1e-6);
    c->max_position_embeddings = get_int(r, tc, "max_position_embeddings", 0);
    c->tie_word_embeddings = get_bool(r, tc, "tie_word_embeddings", c->tie_word_embeddings);
    parse_rope(r, tc, &c->rope);
    /* released MiniMax-M2 configs give the rotated width as rotary_dim */
    c->rotary_dim = get_int(r, tc, "rotary_dim", 0);
    get_str(r, tc, "dtype", c->dtype, sizeof c->dtype);
    get_str(r, tc, "torch_dtype", c->dtype, sizeof c->dtype);
    /* shared experts: qwen3_next / 3.5 have one of shared_expert_intermediate_size;
     * deepseek has n_shared_experts of moe_intermediate_size each. */
    c->n_shared_experts = get_int(r, tc, "n_shared_experts", 0);
    c->shared_intermediate_size = get_int(r, tc, "shared_expert_intermediate_size", 0);
    if (!c->shared_intermediate_size && c->n_shared_experts) {
        long long sh = (long long)c->n_shared_experts * c->moe_intermediate_size; /* no int overflow */
        if (sh >= INT_MIN && sh <= INT_MAX)
            c->shared_intermediate_size = (int)sh;
        else if (r->s == MK_OK)
            r->s = mk_err(MK_E_FORMAT, "%s: n_shared_experts x moe_intermediate_size = %lld is out of range",
                          r->what, sh);
    }

    /* hybrid layer schedule */
    c->conv_kernel = get_int(r, tc, "linear_conv_kernel_dim", 0);
    c->lin_num_k_heads = get_int(r, tc, "linear_num_key_heads", 0);
    c->lin_num_v_heads = get_int(r, tc, "linear_num_value_heads", 0);
    c->lin_k_head_dim = get_int(r, tc, "linear_key_head_dim", 0);
    c->lin_v_head_dim = get_int(r, tc, "linear_value_head_dim", 0);
    c->full_attention_interval = get_int(r, tc, "full_attention_interval", 4);
    if (c->num_layers > 0 && c->num_layers < 100000) {
        c->layer_is_full = mk_calloc((size_t)c->num_layers, 1);
        json_t *lt = json_object_get(tc, "layer_types");
        int interval = c->full_attention_interval;
        bool hybrid = c->arch == MK_ARCH_QWEN3_NEXT || c->arch == MK_ARCH_QWEN3_5_MOE;
        for (int i = 0; c->layer_is_full && i < c->num_layers; i++) {
            if (!hybrid)
                c->layer_is_full[i] = 1;
            else if (json_is_array(lt)) {
                json_t *e = json_array_get(lt, (size_t)i);
                if (!json_is_string(e)) {
                    if (r->s == MK_OK)
                        r->s = mk_err(MK_E_FORMAT, "%s: layer_types has %zu entries, expected %d", r->what,
                                      json_array_size(lt), c->num_layers);
                    break;
                }
                c->layer_is_full[i] = strcmp(json_string_value(e), "full_attention") == 0;
            } else
                c->layer_is_full[i] = interval > 0 && (i + 1) % interval == 0;
        }
    }
    /* DeepSeek MLA */
    c->q_lora_rank = get_int(r, tc, "q_lora_rank", 0);
    c->kv_lora_rank = get_int(r, tc, "kv_lora_rank", 0);
    c->qk_nope_head_dim = get_int(r, tc, "qk_nope_head_dim", 0);
    c->qk_rope_head_dim = get_int(r, tc, "qk_rope_head_dim", 0);
    c->v_head_dim = get_int(r, tc, "v_head_dim", 0);
    c->n_group = get_int(r, tc, "n_group", 1);
    c->topk_group = get_int(r, tc, "topk_group", 1);
    c->first_k_dense_replace = get_int(r, tc, "first_k_dense_replace", 0);
    c->routed_scaling_factor = get_num(r, tc, "routed_scaling_factor", 1.0);
    c->rope_interleave = get_bool(r, tc, "rope_interleave", c->arch == MK_ARCH_DEEPSEEK_V3);
    snprintf(c->scoring_func, sizeof c->scoring_func, "%s",
             mk_config_sigmoid_router(c) ? "sigmoid" : "softmax");
    /* minimax_m2 always normalises q/k (over the whole projection) */
    c->use_qk_norm = get_bool(r, tc, "use_qk_norm", c->arch == MK_ARCH_MINIMAX_M2);
    if (c->rotary_dim > 0 && c->arch == MK_ARCH_MINIMAX_M2 && c->head_dim > 0) {
        double f = (double)c->rotary_dim / c->head_dim;
        if (c->rope.partial_rotary_factor != 1.0 && c->rope.partial_rotary_factor != f && r->s == MK_OK)
            r->s = mk_err(MK_E_FORMAT, "%s: rotary_dim %d (of head_dim %d) contradicts "
                          "partial_rotary_factor %g", r->what, c->rotary_dim, c->head_dim,
                          c->rope.partial_rotary_factor);
        c->rope.partial_rotary_factor = f;
    }
    get_str(r, tc, "scoring_func", c->scoring_func, sizeof c->scoring_func);
    get_str(r, tc, "topk_method", c->topk_method, sizeof c->topk_method);
    c->qk_head_dim = get_int(r, tc, "qk_head_dim", 0);
    c->moe_layer_freq = get_int(r, tc, "moe_layer_freq", 1);
    scan_mlp_layer_types(r, json_object_get(tc, "mlp_layer_types"), c);
    parse_indexer(r, tc, c, dsa_of(c->model_type) ? dsa_of(c->model_type) : dsa_of(c->text_model_type));

    /* read only to refuse what the engine does not implement (mk_config_check) */
    snprintf(c->hidden_act, sizeof c->hidden_act, "silu");
    get_str(r, tc, "hidden_act", c->hidden_act, sizeof c->hidden_act);
    c->attention_bias = get_bool(r, tc, "attention_bias", false);
    c->mlp_bias = get_bool(r, tc, "mlp_bias", false);
    c->use_sliding_window = get_bool(r, tc, "use_sliding_window", false);
    scan_layer_types(json_object_get(tc, "layer_types"), c);
    parse_sliding(r, tc, c);

    json_t *eos = json_object_get(tc, "eos_token_id");
    if (eos && !json_is_null(eos)) {
        free(c->eos_ids);
        c->eos_ids = int_list(r, eos, "eos_token_id", &c->n_eos);
    }
    c->bos_id = get_int(r, tc, "bos_token_id", c->bos_id);
}

static mk_arch arch_of(const char *mt) {
    for (size_t i = 0; i < sizeof g_archs / sizeof g_archs[0]; i++)
        if (strcmp(mt, g_archs[i].model_type) == 0)
            return g_archs[i].arch;
    return MK_ARCH_UNKNOWN;
}

mk_status mk_config_parse(const char *what, const char *json, mk_config *c) {
    memset(c, 0, sizeof *c);
    c->bos_id = -1;
    json_error_t jerr;
    unsigned long jmark = mk_json_mark();
    json_t *root = mk_json_loads(json, 0, &jerr, jmark);
    if (!root && mk_json_nomem(&jerr, jmark)) /* not the file's fault */
        return mk_err(MK_E_NOMEM, "%s: no memory to parse its JSON", what);
    if (!root)
        return mk_err(MK_E_FORMAT, "%s: not valid JSON: %s (line %d)", what, mk_json_errtext(jerr.text), jerr.line);
    if (!json_is_object(root)) {
        json_decref(root);
        return mk_err(MK_E_FORMAT, "%s: expected a JSON object", what);
    }
    rd r = {what, MK_OK};
    get_str(&r, root, "model_type", c->model_type, sizeof c->model_type);
    json_t *ar = json_object_get(root, "architectures");
    if (json_is_array(ar) && json_is_string(json_array_get(ar, 0)))
        snprintf(c->architecture, sizeof c->architecture, "%s", json_string_value(json_array_get(ar, 0)));
    json_t *tc = json_object_get(root, "text_config");
    c->has_text_config = json_is_object(tc);
    c->has_vision = json_is_object(json_object_get(root, "vision_config"));
    if (!c->has_text_config)
        tc = root;
    snprintf(c->text_model_type, sizeof c->text_model_type, "%s", c->model_type);
    get_str(&r, tc, "model_type", c->text_model_type, sizeof c->text_model_type);
    c->arch = arch_of(c->model_type);
    if (c->arch == MK_ARCH_UNKNOWN)
        c->arch = arch_of(c->text_model_type);
    /* top-level fields a wrapper may carry (tie_word_embeddings, eos) first, text config wins */
    c->tie_word_embeddings = get_bool(&r, root, "tie_word_embeddings", false);
    json_t *eos = json_object_get(root, "eos_token_id");
    if (eos && !json_is_null(eos))
        c->eos_ids = int_list(&r, eos, "eos_token_id", &c->n_eos);
    c->bos_id = get_int(&r, root, "bos_token_id", -1);
    get_str(&r, root, "torch_dtype", c->dtype, sizeof c->dtype);
    get_str(&r, root, "dtype", c->dtype, sizeof c->dtype);
    parse_text(&r, tc, c);
    if (c->has_text_config) {
        /* the wrapper's dtype describes the stored weights */
        get_str(&r, root, "torch_dtype", c->dtype, sizeof c->dtype);
        get_str(&r, root, "dtype", c->dtype, sizeof c->dtype);
    }
    json_t *q = json_object_get(root, "quantization");
    json_t *qc2 = json_object_get(root, "quantization_config");
    /* MLX writes the same block twice; reading one must not hide the other */
    if (json_is_object(q) && json_is_object(qc2) && !json_object_get(qc2, "quant_method") &&
        !json_equal(q, qc2) && r.s == MK_OK)
        r.s = mk_err(MK_E_FORMAT, "%s: quantization and quantization_config differ (MLX writes the "
                     "same block twice): which one describes the weights is ambiguous", what);
    if (json_is_object(q))
        parse_mlx_quant(&r, q, &c->quant);
    else {
        q = json_object_get(root, "quantization_config");
        if (!json_is_object(q) && c->has_text_config)
            q = json_object_get(tc, "quantization_config");
        if (json_is_object(q))
            parse_qconfig(&r, q, &c->quant);
    }
    json_decref(root);
    if (r.s != MK_OK) {
        mk_config_free(c);
        return r.s;
    }
    return MK_OK;
}

mk_status mk_config_load(const char *path, mk_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    char *p = mk_os_is_dir(path) ? mk_path_join(path, "config.json") : mk_strdup(path);
    if (!p)
        return mk_err(MK_E_NOMEM, "%s: no memory for the path of its config.json", path);
    char *js = NULL;
    mk_status s = mk_os_read_file(p, 64u << 20, &js, NULL);
    if (s == MK_OK)
        s = mk_config_parse(p, js, cfg);
    free(js);
    free(p);
    return s;
}

void mk_qcfg_free(mk_qcfg *q) {
    for (int i = 0; i < q->n_entries; i++)
        free(q->entries[i].path);
    free(q->entries);
    free(q->entry_slots);
    for (int i = 0; i < q->n_ct_ignore; i++)
        free(q->ct_ignore[i]);
    free(q->ct_ignore);
    memset(q, 0, sizeof *q);
}

void mk_config_free(mk_config *c) {
    if (!c)
        return;
    free(c->mlp_only_layers);
    free(c->layer_is_full);
    free(c->layer_is_sliding);
    free(c->index_shared);
    free(c->eos_ids);
    mk_qcfg_free(&c->quant);
    memset(c, 0, sizeof *c);
}

bool mk_config_layer_is_moe(const mk_config *c, int layer) {
    if (c->num_experts <= 0)
        return false;
    if (c->arch == MK_ARCH_DEEPSEEK_V3 || c->arch == MK_ARCH_GLM4_MOE) {
        for (int i = 0; i < c->n_mlp_only_layers; i++) /* mlp_layer_types' dense layers */
            if (c->mlp_only_layers[i] == layer)
                return false;
        return c->has_mlp_layer_types || layer >= c->first_k_dense_replace;
    }
    for (int i = 0; i < c->n_mlp_only_layers; i++)
        if (c->mlp_only_layers[i] == layer)
            return false;
    int step = c->decoder_sparse_step > 0 ? c->decoder_sparse_step : 1;
    return (layer + 1) % step == 0;
}

bool mk_config_layer_is_full_attn(const mk_config *c, int layer) {
    if (!c->layer_is_full || layer < 0 || layer >= c->num_layers)
        return true;
    return c->layer_is_full[layer] != 0;
}

bool mk_config_layer_is_sliding(const mk_config *c, int layer) {
    return c->layer_is_sliding && c->sliding_window > 0 && layer >= 0 && layer < c->num_layers &&
           c->layer_is_sliding[layer];
}

bool mk_config_sigmoid_router(const mk_config *c) {
    return c->arch == MK_ARCH_DEEPSEEK_V3 || c->arch == MK_ARCH_GLM4_MOE ||
           c->arch == MK_ARCH_MINIMAX_M2;
}

bool mk_config_has_recurrent_state(const mk_config *c) {
    return c->arch == MK_ARCH_QWEN3_NEXT || c->arch == MK_ARCH_QWEN3_5_MOE;
}

bool mk_qcfg_lookup(const mk_qcfg *q, const char *path, bool has_scales, int *bits, int *group,
                    mk_qmode *mode) {
    if (q->method != MK_QM_MLX)
        return false;
    const mk_qentry *e = find_entry(q, path);
    if (e) {
        if (!e->quantized)
            return false;
        *bits = e->bits;
        *group = e->group_size;
        *mode = e->mode;
        return true;
    }
    if (!has_scales)
        return false;
    *bits = q->bits;
    *group = q->group_size;
    *mode = q->mode;
    return true;
}
