/* Checkpoint inspection (see inspect.h).
 *
 * Map: gather (classify every tensor, group storage tensors into modules)
 * -> layout and quantization per module (bits checked against packed
 * shapes through qview) -> expected-vs-present modules per layer for the
 * architecture -> expert index contiguity -> totals and memory -> optional
 * value scan -> JSON report. Everything but the scan reads headers only. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "core/alloc.h"
#include "core/json_err.h"
#include "io/os.h"
#include "model/layout.h"
#include "moekit/config.h"
#include "moekit/inspect.h"
#include "moekit/model.h"
#include "moekit/qview.h"
#include "moekit/st.h"

/* ---- problems ---------------------------------------------------------- */

static void problem(json_t *list, const char *code, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void problem(json_t *list, const char *code, const char *where, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_array_append_new(list, json_pack("{s:s,s:s,s:s}", "code", code, "where", where, "cause", msg));
}

/* ---- expected modules per architecture --------------------------------- */

/* Modules a layer must have, by block kind. "" terminates. Norms are vectors. */
static const char *const k_attn_qwen[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                          "self_attn.o_proj", "self_attn.q_norm", "self_attn.k_norm", NULL};
static const char *const k_attn_noqk[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                          "self_attn.o_proj", NULL};
static const char *const k_gdn_next[] = {"linear_attn.in_proj_qkvz", "linear_attn.in_proj_ba",
                                         "linear_attn.conv1d", "linear_attn.A_log", "linear_attn.dt_bias",
                                         "linear_attn.norm", "linear_attn.out_proj", NULL};
static const char *const k_gdn_35[] = {"linear_attn.in_proj_qkv", "linear_attn.in_proj_z",
                                       "linear_attn.in_proj_b", "linear_attn.in_proj_a", "linear_attn.conv1d",
                                       "linear_attn.A_log", "linear_attn.dt_bias", "linear_attn.norm",
                                       "linear_attn.out_proj", NULL};
static const char *const k_mla_qlora[] = {"self_attn.q_a_proj", "self_attn.q_a_layernorm", "self_attn.q_b_proj",
                                          "self_attn.kv_a_proj_with_mqa", "self_attn.kv_a_layernorm",
                                          "self_attn.kv_b_proj", "self_attn.o_proj", NULL};
static const char *const k_mla_q[] = {"self_attn.q_proj", "self_attn.kv_a_proj_with_mqa",
                                      "self_attn.kv_a_layernorm", "self_attn.kv_b_proj", "self_attn.o_proj", NULL};
/* The DSA lightning indexer of a layer with its own (deepseek_v32, glm_moe_dsa) */
static const char *const k_dsa[] = {"self_attn.indexer.wq_b", "self_attn.indexer.wk",
                                    "self_attn.indexer.k_norm", "self_attn.indexer.weights_proj", NULL};
static const char *const k_dense[] = {"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", NULL};
static const char *const k_norms[] = {"input_layernorm", "post_attention_layernorm", NULL};
static const char *const k_shared_q[] = {"mlp.shared_expert.gate_proj", "mlp.shared_expert.up_proj",
                                         "mlp.shared_expert.down_proj", "mlp.shared_expert_gate", NULL};
static const char *const k_attn_oss[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                         "self_attn.o_proj", "self_attn.sinks", NULL};
static const char *const k_shared_ds[] = {"mlp.shared_experts.gate_proj", "mlp.shared_experts.up_proj",
                                          "mlp.shared_experts.down_proj", NULL};

/* A set of module names in insertion order, with a hash index so adding and
 * looking up are O(1): a checkpoint may hold 10^5+ names inspect does not
 * recognise, each its own module (a linear scan per name was quadratic). */
typedef struct modset {
    char **v;
    size_t n, cap;
    size_t *slot; /* open addressing: index + 1 into v, 0 = empty */
    size_t nslot; /* a power of two, > 2n */
} modset;

static size_t modset_find(const modset *s, const char *m) {
    if (!s->nslot)
        return SIZE_MAX;
    size_t mask = s->nslot - 1, h = (size_t)XXH3_64bits(m, strlen(m)) & mask;
    for (; s->slot[h]; h = (h + 1) & mask)
        if (!strcmp(s->v[s->slot[h] - 1], m))
            return s->slot[h] - 1;
    return SIZE_MAX - 1 - h; /* not found: encodes the free slot */
}

static bool modset_rehash(modset *s, size_t nslot) {
    size_t *ns = mk_calloc(nslot, sizeof *ns);
    if (!ns)
        return false;
    for (size_t i = 0; i < s->n; i++) {
        size_t h = (size_t)XXH3_64bits(s->v[i], strlen(s->v[i])) & (nslot - 1);
        while (ns[h])
            h = (h + 1) & (nslot - 1);
        ns[h] = i + 1;
    }
    free(s->slot);
    s->slot = ns;
    s->nslot = nslot;
    return true;
}

static void modset_add(modset *s, const char *m) {
    if (2 * (s->n + 1) >= s->nslot && !modset_rehash(s, s->nslot ? 2 * s->nslot : 64))
        return;
    size_t f = modset_find(s, m);
    if (f < s->n)
        return;
    if (s->n == s->cap) {
        size_t nc = s->cap ? 2 * s->cap : 32;
        char **nv = mk_realloc(s->v, nc * sizeof *nv);
        if (!nv)
            return;
        s->v = nv;
        s->cap = nc;
    }
    char *d = mk_strdup(m);
    if (!d)
        return;
    s->v[s->n++] = d;
    s->slot[SIZE_MAX - 1 - f] = s->n;
}

static void modset_add_list(modset *s, const char *const *l) {
    for (int i = 0; l && l[i]; i++)
        modset_add(s, l[i]);
}

static bool modset_has(const modset *s, const char *m) {
    return modset_find(s, m) < s->n;
}

static void modset_free(modset *s) {
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    free(s->slot);
    memset(s, 0, sizeof *s);
}

/* Expected modules of layer i (expert modules as "mlp.experts.{gate,up,down}_proj"). */
static void expected_layer(const mk_config *c, int i, modset *m) {
    modset_add_list(m, k_norms);
    if (c->arch == MK_ARCH_DEEPSEEK_V3) {
        modset_add_list(m, c->q_lora_rank ? k_mla_qlora : k_mla_q);
        if (c->dsa && !(c->index_shared && c->index_shared[i]))
            modset_add_list(m, k_dsa);
    } else if (c->arch == MK_ARCH_GPT_OSS)
        modset_add_list(m, k_attn_oss); /* biases ride on their projections; per-head sinks */
    else if (c->arch == MK_ARCH_GLM4_MOE && !c->use_qk_norm)
        modset_add_list(m, k_attn_noqk); /* glm4_moe without use_qk_norm: no q/k norms */
    else if (mk_config_layer_is_full_attn(c, i))
        modset_add_list(m, k_attn_qwen);
    else
        modset_add_list(m, c->arch == MK_ARCH_QWEN3_NEXT ? k_gdn_next : k_gdn_35);
    if (!mk_config_layer_is_moe(c, i)) {
        modset_add_list(m, k_dense);
        return;
    }
    modset_add(m, c->arch == MK_ARCH_GPT_OSS ? "mlp.router" : "mlp.gate");
    modset_add(m, "mlp.experts.gate_proj");
    modset_add(m, "mlp.experts.up_proj");
    modset_add(m, "mlp.experts.down_proj");
    if (mk_config_sigmoid_router(c)) {
        if (!strcmp(c->topk_method, "noaux_tc") || c->topk_method[0] == 0)
            modset_add(m, "mlp.gate.e_score_correction_bias");
        if (c->n_shared_experts)
            modset_add_list(m, k_shared_ds);
    } else if (c->shared_intermediate_size > 0)
        modset_add_list(m, k_shared_q);
}

/* Canonical module of a parsed name: fused and switch forms map onto the
 * per-expert module names so expectations are layout-independent. */
static void canon_module(const mk_lname *t, char *out, size_t n) {
    if (t->xform == MK_XF_FUSED) {
        snprintf(out, n, "%s", !strcmp(t->module, "mlp.experts.gate_up_proj") ? "mlp.experts.gate_up_proj"
                                                                             : "mlp.experts.down_proj");
        return;
    }
    if (t->xform == MK_XF_SWITCH) {
        const char *p = strstr(t->module, "switch_mlp.");
        if (p) /* (gpt_oss's MLX stacks are mlp.experts.<proj> already) */
            snprintf(out, n, "mlp.experts.%s", p + strlen("switch_mlp."));
        else
            snprintf(out, n, "%s", t->module);
        return;
    }
    /* e_score_correction_bias has no storage suffix but is a module of its own */
    snprintf(out, n, "%s", t->module);
}

/* ---- per-layer bookkeeping --------------------------------------------- */

/* Per-expert indices seen for one projection of one layer. */
typedef struct expset {
    int *v;
    size_t n, cap;
} expset;

typedef struct layer_info {
    modset present;
    expset experts[3]; /* per-expert indices seen for gate_proj, up_proj, down_proj */
    int form_mask;     /* bit per mk_xform seen */
} layer_info;

static void add_expert(expset *L, int e) {
    if (L->n == L->cap) {
        size_t nc = L->cap ? 2 * L->cap : 16;
        int *nv = mk_realloc(L->v, nc * sizeof *nv);
        if (!nv)
            return;
        L->v = nv;
        L->cap = nc;
    }
    L->v[L->n++] = e;
}

static const char *const k_proj[3] = {"gate_proj", "up_proj", "down_proj"};

/* Which projection a per-expert module is: 0..2, or -1. */
static int proj_of(const char *module) {
    for (int p = 0; p < 3; p++) {
        size_t lm = strlen(module), lp = strlen(k_proj[p]);
        if (lm >= lp && !strcmp(module + lm - lp, k_proj[p]))
            return p;
    }
    return -1;
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* ---- value scan -------------------------------------------------------- */

static mk_status scan_tensor(const mk_ckpt *ck, const mk_tensor_info *t, json_t *problems, uint64_t *nan_total,
                             uint64_t *inf_total, uint64_t *f16_total) {
    const mk_dtype_traits *tr = mk_dtype_info(t->dtype);
    if (!tr->is_float || tr->bits < 8 || t->dtype == MK_DT_F8_E8M0 || t->dtype == MK_DT_C64)
        return MK_OK;
    float buf[4096];
    uint64_t nan = 0, inf = 0, big = 0;
    for (uint64_t i = 0; i < t->numel; i += 4096) {
        uint64_t n = t->numel - i < 4096 ? t->numel - i : 4096;
        mk_status s = mk_ckpt_read_f32(ck, t, i, n, buf);
        if (s == MK_E_UNSUPPORTED)
            return MK_OK;
        MK_TRY(s);
        for (uint64_t k = 0; k < n; k++) {
            float v = buf[k];
            if (isnan(v))
                nan++;
            else if (isinf(v))
                inf++;
            else if (fabsf(v) > 65504.0f)
                big++;
        }
    }
    if (nan || inf)
        problem(problems, "nonfinite", t->name, "%llu NaN and %llu Inf values", (unsigned long long)nan,
                (unsigned long long)inf);
    if (big)
        problem(problems, "f16_range", t->name, "%llu values outside the float16 range (|x| > 65504)",
                (unsigned long long)big);
    *nan_total += nan;
    *inf_total += inf;
    *f16_total += big;
    return MK_OK;
}

/* MLX's E4M3 is E4M3FN: a byte 0x7f/0xff of an mxfp8 weight or an nvfp4
 * scale is a NaN (MLX's quantizer never writes one; an encoder that let
 * values round past 448 did). Counted from the bytes, as the float scan
 * counts NaN values. cfg may be NULL. */
static mk_status scan_mx(const mk_ckpt *ck, const mk_config *cfg, const mk_tensor_info *t, json_t *problems,
                         uint64_t *nan_total) {
    if (t->dtype != MK_DT_U32 || mk_qview_is_companion(ck, t->name))
        return MK_OK;
    mk_qview v;
    if (mk_qview_open(ck, cfg, t->name, &v) != MK_OK) {
        mk_err_clear(); /* not a module the scan reads: the report says so elsewhere */
        return MK_OK;
    }
    const mk_tensor_info *part = v.kind != MK_QK_MLX ? NULL
                                 : v.wt.fmt == MK_WF_MXFP8 ? v.sm.part[MK_SP_WEIGHT]
                                 : v.wt.fmt == MK_WF_NVFP4 ? v.sm.part[MK_SP_SCALES]
                                                           : NULL;
    bool elems = v.wt.fmt == MK_WF_MXFP8;
    mk_qview_close(&v);
    if (!part)
        return MK_OK;
    unsigned char buf[1 << 16];
    uint64_t nan = 0;
    for (uint64_t off = 0; off < part->nbytes; off += sizeof buf) {
        size_t n = part->nbytes - off < sizeof buf ? (size_t)(part->nbytes - off) : sizeof buf;
        MK_TRY(mk_ckpt_read(ck, part, off, buf, n));
        for (size_t k = 0; k < n; k++)
            nan += (buf[k] & 0x7fu) == 0x7fu;
    }
    if (nan)
        problem(problems, "nonfinite", part->name, "%llu NaN %s (E4M3 bytes 0x7f/0xff)", (unsigned long long)nan,
                elems ? "mxfp8 elements" : "nvfp4 scales");
    *nan_total += nan;
    return MK_OK;
}

/* ---- the report -------------------------------------------------------- */

/* One per-expert tensor's bytes (the packed-layout report). */
typedef struct xpart {
    uint64_t key; /* layer << 32 | expert */
    uint64_t off, len;
    int shard;
} xpart;

static int xpart_cmp(const void *a, const void *b) {
    const xpart *x = a, *y = b;
    return x->key < y->key ? -1 : x->key > y->key;
}

static const char *layout_name(int mask) {
    if (mask == (1 << MK_XF_PER_EXPERT))
        return "per-expert";
    if (mask == (1 << MK_XF_FUSED))
        return "fused";
    if (mask == (1 << MK_XF_SWITCH))
        return "mlx-switch_mlp";
    if (mask == 0)
        return "none";
    return "mixed";
}

static const char *qmethod_name(mk_qmethod m) {
    switch (m) {
    case MK_QM_MLX: return "mlx";
    case MK_QM_FP8: return "fp8-block";
    case MK_QM_CT: return "compressed-tensors";
    case MK_QM_HF_MXFP4: return "mxfp4";
    default: return "none";
    }
}

mk_status mk_inspect(const char *path, const mk_inspect_opts *opts, char **json_out) {
    *json_out = NULL;
    mk_ckpt *ck = NULL;
    MK_TRY(mk_ckpt_open(path, 0, &ck));
    /* Much of the report tolerates a failed allocation by leaving something
     * out (jansson's return values, the module sets), and a config or model
     * that failed to load for want of memory would be reported as a problem
     * of the checkpoint: any allocation that failed from here on makes the
     * whole call MK_E_NOMEM instead of a report that is wrong. */
    unsigned long mark = mk_json_mark();
    mk_config cfg;
    memset(&cfg, 0, sizeof cfg);
    json_t *rep = json_object(), *problems = json_array();
    char *cpath = mk_path_join(mk_ckpt_dir(ck), "config.json");
    bool have_cfg = false;
    if (cpath && mk_os_exists(cpath)) {
        mk_status cs = mk_config_load(cpath, &cfg);
        if (cs != MK_OK)
            problem(problems, "config", cpath, "%s", mk_err_msg());
        else
            have_cfg = true;
    } else
        problem(problems, "config", mk_ckpt_dir(ck), "no config.json beside the checkpoint");
    free(cpath);

    json_object_set_new(rep, "path", json_string(path));
    json_object_set_new(rep, "shards", json_integer((json_int_t)mk_ckpt_nshards(ck)));
    json_t *arch = json_object();
    json_object_set_new(arch, "model_type", json_string(cfg.model_type));
    json_object_set_new(arch, "text_model_type", json_string(cfg.text_model_type));
    json_object_set_new(arch, "architecture", json_string(cfg.architecture));
    json_object_set_new(arch, "family", json_string(mk_arch_name(cfg.arch)));
    json_object_set_new(arch, "supported", json_boolean(cfg.arch != MK_ARCH_UNKNOWN));
    json_object_set_new(arch, "vision_language", json_boolean(cfg.has_text_config));
    json_object_set_new(arch, "dtype", json_string(cfg.dtype));
    json_object_set_new(arch, "layers", json_integer(cfg.num_layers));
    json_object_set_new(arch, "hidden_size", json_integer(cfg.hidden_size));
    json_object_set_new(arch, "vocab_size", json_integer(cfg.vocab_size));
    json_object_set_new(arch, "attention_heads", json_integer(cfg.num_heads));
    json_object_set_new(arch, "kv_heads", json_integer(cfg.num_kv_heads));
    json_object_set_new(arch, "head_dim", json_integer(cfg.head_dim));
    json_object_set_new(arch, "experts", json_integer(cfg.num_experts));
    json_object_set_new(arch, "experts_per_token", json_integer(cfg.num_experts_per_tok));
    json_object_set_new(arch, "expert_intermediate_size", json_integer(cfg.moe_intermediate_size));
    json_object_set_new(arch, "shared_intermediate_size", json_integer(cfg.shared_intermediate_size));
    if (cfg.sliding_window > 0)
        json_object_set_new(arch, "sliding_window", json_integer(cfg.sliding_window));
    /* Layers the tensors hold: every count below is bounded by it, so a
     * config claiming 10^9 layers is one problem, not 10^9 of them. */
    int present_layers = 0;
    size_t n = mk_ckpt_count(ck);
    for (size_t i = 0; i < n; i++) {
        mk_lname tn;
        mk_layout_parse(mk_ckpt_tensor(ck, i)->name, &tn);
        if (tn.part == MK_PART_LM && tn.layer >= present_layers && tn.layer < INT32_MAX)
            present_layers = tn.layer + 1;
    }
    int nl = cfg.num_layers > 0 ? cfg.num_layers : 0;
    if (nl > present_layers) {
        problem(problems, "layers", "num_hidden_layers",
                "config.json says num_hidden_layers %d, but the tensors hold %d layer%s; the engine "
                "refuses this checkpoint", nl, present_layers, present_layers == 1 ? "" : "s");
        nl = present_layers;
    }
    json_t *sched = json_array();
    for (int i = 0; i < nl; i++) {
        /* DSA layers: MLA over the indexer's selection, "shared" ones over the previous layer's */
        const char *a = cfg.arch == MK_ARCH_DEEPSEEK_V3
                            ? (!cfg.dsa ? "mla"
                               : cfg.index_shared && cfg.index_shared[i] ? "mla_sparse_shared" : "mla_sparse")
                        : mk_config_layer_is_sliding(&cfg, i) ? "sliding_attention"
                        : mk_config_layer_is_full_attn(&cfg, i) ? "full_attention"
                                                                 : "linear_attention";
        json_array_append_new(sched, json_pack("{s:i,s:s,s:s}", "layer", i, "attention", a, "mlp",
                                               mk_config_layer_is_moe(&cfg, i) ? "moe" : "dense"));
    }
    json_object_set_new(arch, "layer_schedule", sched);
    if (cfg.dsa) /* DeepSeek sparse attention: what the lightning indexer keeps */
        json_object_set_new(arch, "sparse_attention",
                            json_pack("{s:i,s:i,s:i,s:s}", "index_topk", cfg.index_topk, "index_n_heads",
                                      cfg.index_n_heads, "index_head_dim", cfg.index_head_dim,
                                      "indexer_rope", cfg.dsa == MK_DSA_INTERLEAVED ? "interleaved"
                                                                                   : "half-split"));
    json_object_set_new(rep, "architecture", arch);
    if (have_cfg && cfg.arch == MK_ARCH_UNKNOWN)
        problem(problems, "unsupported_arch", cfg.model_type, "model_type '%s' is not supported (supported: %s)",
                cfg.model_type, mk_arch_supported());
    else if (have_cfg && mk_config_check(&cfg) != MK_OK) /* what the engine would refuse to load */
        problem(problems, "config", mk_ckpt_dir(ck), "%s", mk_err_msg());

    /* gather: per-layer bookkeeping for the layers the config and the tensors
     * agree on; layers beyond (DeepSeek's MTP) are counted apart */
    int cfg_nl = cfg.num_layers > 0 ? cfg.num_layers : 0;
    layer_info *L = mk_calloc((size_t)nl + 1, sizeof *L);
    if (!L) {
        json_decref(rep);
        json_decref(problems);
        mk_config_free(&cfg);
        mk_ckpt_close(ck);
        return mk_err(MK_E_NOMEM, "no memory for %d layers", nl);
    }
    modset global = {0};
    uint64_t bytes_by_dt[MK_DT_COUNT] = {0};
    uint64_t params = 0, expert_params = 0, expert_bytes = 0, vision_bytes = 0, mtp_bytes = 0, total_bytes = 0,
             vision_params = 0, mtp_params = 0;
    uint64_t one_expert_bytes = 0, one_expert_params = 0;
    int xmask = 0;
    /* per-expert layouts: each expert's byte range, to tell a packed layout
     * (one contiguous read per expert, convert --pack-experts). One entry
     * per per-expert tensor, sorted by (layer, expert) below: sized by the
     * checkpoint's tensors, never by the config's counts (which may be
     * absurd) */
    xpart *xs = n ? mk_malloc(n * sizeof *xs) : NULL;
    size_t nxs = 0;
    /* gpt_oss as mlx-lm stores it: mlp.experts.{gate,up,down}_proj stacks
     * (E, out, in) with .weight/.scales/.bias, which read like transformers'
     * fused names: one look at the names tells the layouts apart */
    bool oss_mlx = false;
    for (size_t i = 0; cfg.arch == MK_ARCH_GPT_OSS && !oss_mlx && i < n; i++)
        oss_mlx = strstr(mk_ckpt_tensor(ck, i)->name, ".mlp.experts.gate_proj.weight") != NULL;
    json_t *quant_modules = json_array();
    size_t nq = 0, nmismatch = 0;
    for (size_t i = 0; i < n; i++) {
        const mk_tensor_info *t = mk_ckpt_tensor(ck, i);
        mk_lname tn;
        mk_layout_parse(t->name, &tn);
        if (oss_mlx && tn.expert < 0 && !strncmp(tn.module, "mlp.experts.", 12))
            tn.xform = MK_XF_SWITCH;
        bytes_by_dt[t->dtype] += t->nbytes;
        total_bytes += t->nbytes;
        /* logical parameter count: quantized modules by their logical shape */
        uint64_t p = 0;
        bool companion = mk_qview_is_companion(ck, t->name);
        if (!companion) {
            mk_qview v;
            mk_status qs = mk_qview_open(ck, have_cfg ? &cfg : NULL, t->name, &v);
            if (qs == MK_OK) {
                p = (uint64_t)(v.rows * v.cols);
                if (v.kind == MK_QK_MLX || v.kind == MK_QK_FP8) {
                    nq++;
                    { /* every module: the report is complete even at 10^5 per-expert modules */
                        json_t *o = json_pack("{s:s,s:s}", "module", t->name,
                                              "scheme", v.kind == MK_QK_FP8 ? "fp8-block" : mk_qmode_name(
                                                  v.wt.fmt == MK_WF_AFFINE ? MK_QMODE_AFFINE
                                                  : v.wt.fmt == MK_WF_MXFP4 ? MK_QMODE_MXFP4
                                                  : v.wt.fmt == MK_WF_MXFP8 ? MK_QMODE_MXFP8 : MK_QMODE_NVFP4));
                        if (v.kind == MK_QK_MLX) {
                            json_object_set_new(o, "bits", json_integer(v.wt.bits));
                            json_object_set_new(o, "group_size", json_integer(v.wt.group));
                        } else {
                            json_object_set_new(o, "block", json_pack("[i,i]", v.wt.block_r, v.wt.block_c));
                            json_object_set_new(o, "fp8", json_string(mk_dtype_name(t->dtype)));
                        }
                        json_array_append_new(quant_modules, o);
                    }
                }
                mk_qview_close(&v);
            } else if (qs == MK_E_MISMATCH || qs == MK_E_FORMAT) {
                nmismatch++;
                problem(problems, qs == MK_E_MISMATCH ? "bits_mismatch" : "quant_layout", t->name, "%s",
                        mk_err_msg());
                p = t->numel;
            } else
                p = t->numel;
        }
        if (!strcmp(tn.storage, "weight_packed") && t->ndim == 2)
            p = (uint64_t)t->shape[0] * (uint64_t)t->shape[1] * 8; /* INT4: 8 values per I32 */
        if (tn.xform == MK_XF_FUSED && t->dtype == MK_DT_U8 && !strcmp(tn.storage, "blocks")) {
            p = t->numel * 2; /* gpt-oss MXFP4: two E2M1 values per byte, groups of 32 */
            nq++;
            json_array_append_new(quant_modules, json_pack("{s:s,s:s,s:i,s:i}", "module", t->name, "scheme",
                                                           "mxfp4", "bits", 4, "group_size", 32));
        } else if (tn.xform == MK_XF_FUSED && t->dtype == MK_DT_U8 && !strcmp(tn.storage, "scales")) {
            p = 0; /* its blocks' E8M0 scales */
        }
        if (tn.part == MK_PART_VISION) {
            vision_bytes += t->nbytes;
            vision_params += p;
            continue;
        }
        bool extra_layer = tn.layer >= cfg_nl && cfg_nl > 0; /* DeepSeek's MTP layer(s) beyond num_hidden_layers */
        if (tn.part == MK_PART_MTP || extra_layer) {
            mtp_bytes += t->nbytes;
            mtp_params += p;
            continue;
        }
        params += p;
        char mod[300];
        canon_module(&tn, mod, sizeof mod);
        if (tn.xform != MK_XF_NONE) {
            xmask |= 1 << tn.xform;
            expert_params += p;
            expert_bytes += t->nbytes;
        }
        if (xs && tn.xform == MK_XF_PER_EXPERT && tn.layer >= 0 && tn.expert >= 0 && t->nbytes)
            xs[nxs++] = (xpart){((uint64_t)(uint32_t)tn.layer << 32) | (uint32_t)tn.expert, t->file_offset,
                                t->nbytes, t->shard};
        if (tn.layer >= 0 && tn.layer < nl) {
            modset_add(&L[tn.layer].present, mod);
            L[tn.layer].form_mask |= tn.xform ? 1 << tn.xform : 0;
            int pj = tn.xform == MK_XF_PER_EXPERT && !companion ? proj_of(tn.module) : -1;
            if (pj >= 0)
                add_expert(&L[tn.layer].experts[pj], tn.expert);
        } else if (tn.layer < 0)
            modset_add(&global, mod);
    }
    /* experts: bytes and params of one expert */
    int E = cfg.num_experts;
    int moe_layers = 0;
    for (int i = 0; i < nl; i++)
        moe_layers += mk_config_layer_is_moe(&cfg, i);
    if (E > 0 && moe_layers > 0) {
        one_expert_bytes = expert_bytes / ((uint64_t)E * (uint64_t)moe_layers);
        one_expert_params = expert_params / ((uint64_t)E * (uint64_t)moe_layers);
    }
    json_t *ex = json_object();
    json_object_set_new(ex, "layout", json_string(layout_name(xmask)));
    json_object_set_new(ex, "experts_per_layer", json_integer(E));
    json_object_set_new(ex, "moe_layers", json_integer(moe_layers));
    json_object_set_new(ex, "bytes_per_expert", json_integer((json_int_t)one_expert_bytes));
    json_object_set_new(ex, "params_per_expert", json_integer((json_int_t)one_expert_params));
    json_object_set_new(ex, "total_bytes", json_integer((json_int_t)expert_bytes));
    if (xs && nxs) { /* tensors never overlap, so a span equal to the parts' sum has no gap */
        uint64_t nx = 0, contiguous = 0, aligned = 0;
        qsort(xs, nxs, sizeof *xs, xpart_cmp);
        for (size_t i = 0; i < nxs;) {
            size_t j = i;
            uint64_t lo = UINT64_MAX, hi = 0, sum = 0;
            bool one = true;
            for (; j < nxs && xs[j].key == xs[i].key; j++) {
                one = one && xs[j].shard == xs[i].shard;
                lo = xs[j].off < lo ? xs[j].off : lo;
                hi = xs[j].off + xs[j].len > hi ? xs[j].off + xs[j].len : hi;
                sum += xs[j].len;
            }
            nx++;
            bool c1 = one && hi - lo == sum;
            contiguous += c1;
            aligned += c1 && lo % 4096 == 0;
            i = j;
        }
        json_object_set_new(ex, "per_expert_reads",
                            json_pack("{s:I,s:I,s:I}", "experts", (json_int_t)nx, "contiguous", (json_int_t)contiguous,
                                      "aligned_4k", (json_int_t)aligned));
    }
    free(xs);
    json_object_set_new(rep, "experts", ex);

    /* quantization */
    json_t *qj = json_object();
    json_object_set_new(qj, "method", json_string(qmethod_name(cfg.quant.method)));
    if (cfg.quant.method == MK_QM_MLX) {
        json_object_set_new(qj, "default_bits", json_integer(cfg.quant.bits));
        json_object_set_new(qj, "default_group_size", json_integer(cfg.quant.group_size));
        json_object_set_new(qj, "default_mode", json_string(mk_qmode_name(cfg.quant.mode)));
        json_object_set_new(qj, "config_entries", json_integer(cfg.quant.n_entries));
    } else if (cfg.quant.method == MK_QM_FP8) {
        json_object_set_new(qj, "fmt", json_string(cfg.quant.fp8_fmt));
        json_object_set_new(qj, "block", json_pack("[i,i]", cfg.quant.block[0], cfg.quant.block[1]));
        json_object_set_new(qj, "activation_scheme", json_string(cfg.quant.act_scheme));
    } else if (cfg.quant.method == MK_QM_CT) {
        json_object_set_new(qj, "format", json_string(cfg.quant.ct_format));
        json_object_set_new(qj, "bits", json_integer(cfg.quant.ct_bits));
        json_object_set_new(qj, "group_size", json_integer(cfg.quant.ct_group_size));
        json_object_set_new(qj, "symmetric", json_boolean(cfg.quant.ct_symmetric));
    }
    json_object_set_new(qj, "quantized_modules", json_integer((json_int_t)nq));
    json_object_set_new(qj, "modules", quant_modules);
    json_object_set_new(rep, "quantization", qj);

    /* expected vs present */
    if (have_cfg && cfg.arch != MK_ARCH_UNKNOWN) {
        modset exp_g = {0};
        modset_add(&exp_g, "embed_tokens");
        modset_add(&exp_g, "norm");
        if (!cfg.tie_word_embeddings)
            modset_add(&exp_g, "lm_head");
        for (size_t i = 0; i < exp_g.n; i++)
            if (!modset_has(&global, exp_g.v[i]))
                problem(problems, "missing", exp_g.v[i], "expected tensor '%s' (%s) is missing", exp_g.v[i],
                        mk_arch_name(cfg.arch));
        for (size_t i = 0; i < global.n; i++)
            if (!modset_has(&exp_g, global.v[i]))
                problem(problems, "unexpected", global.v[i], "tensor '%s' is not part of a %s model", global.v[i],
                        mk_arch_name(cfg.arch));
        modset_free(&exp_g);
        for (int l = 0; l < nl; l++) {
            modset e = {0};
            expected_layer(&cfg, l, &e);
            char where[64];
            snprintf(where, sizeof where, "layer %d", l);
            /* a fused gate_up_proj stands for both gate and up */
            bool fused = modset_has(&L[l].present, "mlp.experts.gate_up_proj");
            for (size_t i = 0; i < e.n; i++) {
                bool has = modset_has(&L[l].present, e.v[i]) ||
                           (fused && (!strcmp(e.v[i], "mlp.experts.gate_proj") ||
                                      !strcmp(e.v[i], "mlp.experts.up_proj")));
                if (!has)
                    problem(problems, "missing", where, "layer %d: expected module '%s' is missing", l, e.v[i]);
            }
            for (size_t i = 0; i < L[l].present.n; i++) {
                const char *m = L[l].present.v[i];
                if (!modset_has(&e, m) && !(fused && !strcmp(m, "mlp.experts.gate_up_proj")))
                    problem(problems, "unexpected", where, "layer %d: module '%s' is not part of a %s %s layer", l,
                            m, mk_arch_name(cfg.arch), mk_config_layer_is_moe(&cfg, l) ? "MoE" : "dense");
            }
            modset_free(&e);
            if (__builtin_popcount((unsigned)L[l].form_mask) > 1)
                problem(problems, "mixed_layout", where, "layer %d stores experts in more than one layout", l);
            /* per-expert indices: exactly 0..E-1, for each projection */
            for (int pj = 0; pj < 3; pj++) {
                expset *X = &L[l].experts[pj];
                if (X->n == 0)
                    continue;
                qsort(X->v, X->n, sizeof(int), cmp_int);
                char miss[512] = "", dup[512] = "";
                size_t ml = 0, dl = 0;
                int expect = 0;
                for (size_t i = 0; i < X->n; i++) {
                    int x = X->v[i];
                    if (i > 0 && x == X->v[i - 1]) {
                        dl += (size_t)snprintf(dup + dl, dl < sizeof dup ? sizeof dup - dl : 0, "%s%d", dl ? "," : "", x);
                        continue;
                    }
                    for (; expect < x && ml < sizeof miss; expect++)
                        ml += (size_t)snprintf(miss + ml, sizeof miss - ml, "%s%d", ml ? "," : "", expect);
                    expect = x + 1;
                }
                for (; expect < E && ml < sizeof miss; expect++)
                    ml += (size_t)snprintf(miss + ml, sizeof miss - ml, "%s%d", ml ? "," : "", expect);
                if (ml)
                    problem(problems, "expert_indices", where,
                            "layer %d: %s: expert indices missing: %s (expected 0..%d)", l, k_proj[pj], miss, E - 1);
                if (X->v[X->n - 1] >= E)
                    problem(problems, "expert_indices", where, "layer %d: %s: expert index %d >= num_experts %d", l,
                            k_proj[pj], X->v[X->n - 1], E);
                if (dl)
                    problem(problems, "expert_indices", where, "layer %d: %s: duplicate expert indices: %s", l,
                            k_proj[pj], dup);
            }
        }
    }
    /* What the engine (and so convert and quantize) would refuse: the first
     * thing mk_model_open fails on, on headers only. Often restates a problem
     * above; alone it catches what the lists above cannot (a missing expert
     * projection in a fused or stacked layout, compressed-tensors bits/group
     * vs packed shapes, MLX mode vs scales, shapes that disagree with config). */
    if (have_cfg && cfg.arch != MK_ARCH_UNKNOWN && mk_model_check(&cfg, ck) != MK_OK)
        problem(problems, "engine_refuses", path, "the engine cannot load this checkpoint: %s", mk_err_msg());
    if (have_cfg && mk_config_has_recurrent_state(&cfg) &&
        (!strcmp(cfg.dtype, "float16") || bytes_by_dt[MK_DT_F16] > total_bytes / 2))
        problem(problems, "f16_recurrent", path,
                "float16 checkpoint of a Gated DeltaNet architecture (%s): the recurrent state overflows in "
                "float16; use bf16 or f32",
                mk_arch_name(cfg.arch));

    /* totals */
    uint64_t shared_params = 0;
    (void)shared_params;
    uint64_t active = params - expert_params;
    if (cfg.num_experts_per_tok > 0 && moe_layers > 0)
        active += (uint64_t)cfg.num_experts_per_tok * (uint64_t)moe_layers * one_expert_params;
    json_t *tot = json_object();
    json_object_set_new(tot, "tensors", json_integer((json_int_t)n));
    json_object_set_new(tot, "bytes", json_integer((json_int_t)total_bytes));
    json_object_set_new(tot, "parameters", json_integer((json_int_t)params));
    json_object_set_new(tot, "expert_parameters", json_integer((json_int_t)expert_params));
    json_object_set_new(tot, "active_parameters_per_token", json_integer((json_int_t)active));
    json_object_set_new(tot, "vision_parameters", json_integer((json_int_t)vision_params));
    json_object_set_new(tot, "mtp_parameters", json_integer((json_int_t)mtp_params));
    json_t *bd = json_object();
    for (int d = 0; d < MK_DT_COUNT; d++)
        if (bytes_by_dt[d])
            json_object_set_new(bd, mk_dtype_name((mk_dtype)d), json_integer((json_int_t)bytes_by_dt[d]));
    json_object_set_new(tot, "bytes_by_dtype", bd);
    json_object_set_new(rep, "totals", tot);
    json_t *mem = json_object();
    uint64_t lm_bytes = total_bytes - vision_bytes - mtp_bytes;
    json_object_set_new(mem, "all_resident_bytes", json_integer((json_int_t)lm_bytes));
    json_object_set_new(mem, "non_expert_resident_bytes", json_integer((json_int_t)(lm_bytes - expert_bytes)));
    json_object_set_new(mem, "streamed_expert_bytes", json_integer((json_int_t)expert_bytes));
    json_object_set_new(mem, "active_expert_bytes_per_token",
                        json_integer((json_int_t)((uint64_t)(cfg.num_experts_per_tok > 0 ? cfg.num_experts_per_tok : 0) *
                                                  (uint64_t)moe_layers * one_expert_bytes)));
    json_object_set_new(mem, "skipped_vision_bytes", json_integer((json_int_t)vision_bytes));
    json_object_set_new(mem, "skipped_mtp_bytes", json_integer((json_int_t)mtp_bytes));
    json_object_set_new(rep, "memory", mem);

    mk_status s = MK_OK;
    if (opts && opts->scan) {
        uint64_t nan = 0, inf = 0, big = 0;
        for (size_t i = 0; i < n && s == MK_OK; i++) {
            s = scan_tensor(ck, mk_ckpt_tensor(ck, i), problems, &nan, &inf, &big);
            if (s == MK_OK)
                s = scan_mx(ck, have_cfg ? &cfg : NULL, mk_ckpt_tensor(ck, i), problems, &nan);
        }
        json_object_set_new(rep, "scan", json_pack("{s:I,s:I,s:I}", "nan", (json_int_t)nan, "inf", (json_int_t)inf,
                                                   "outside_f16", (json_int_t)big));
    }
    json_object_set_new(rep, "problems", problems);
    if (s == MK_OK) {
        *json_out = mk_json_dumps_checked(rep, JSON_INDENT(2) | JSON_PRESERVE_ORDER, mark);
        if (!*json_out)
            s = mk_err(MK_E_NOMEM, "%s: no memory for the inspection report (%zu tensors)", path, n);
    }
    json_decref(rep);
    for (int l = 0; l <= nl; l++) {
        modset_free(&L[l].present);
        for (int pj = 0; pj < 3; pj++)
            free(L[l].experts[pj].v);
    }
    free(L);
    modset_free(&global);
    mk_config_free(&cfg);
    mk_ckpt_close(ck);
    return s;
}
