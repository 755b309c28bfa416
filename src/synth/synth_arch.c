/* Synthetic checkpoints, part 1: what a model of each family contains.
 *
 * g_presets holds the sizes of the released models (ARCHITECTURES.md and
 * their HF configs) plus a tiny test size per family; sy_tensors() lists
 * every tensor with the HF names and shapes of that family (per layer:
 * norms, attention or Gated DeltaNet, router, shared and routed experts;
 * then MTP and vision tensors when asked), choosing per tensor how it is
 * stored in the requested format; sy_config_json() writes the family's
 * config.json with exactly the HF key names. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "core/alloc.h"
#include "convert/conv_impl.h"
#include "synth/synth_impl.h"

static const char *const g_arch_names[SY_NARCH] = {"qwen3_moe",   "qwen3_next",    "qwen3_5_moe", "deepseek_v3",
                                                   "glm4_moe",    "glm4_moe_lite", "minimax_m2",  "gpt_oss",
                                                   "deepseek_v32", "glm_moe_dsa"};

/* name, arch, then sy_cfg fields in order: L H V E topk I_moe I_dense I_shared n_shared heads kv hd nk nv dk dv
 * conv_k interval q_lora kv_lora nope rope_d v_head first_dense n_group topk_group theta partial scaling
 * max_pos yarn attn_bias qk_norm rotary_dim */
static const struct {
    const char *name;
    sy_cfg c;
} g_presets[] = {
    {"30b-a3b", {SY_QWEN3_MOE, 48, 2048, 151936, 128, 8, 768, 6144, 0, 0, 32, 4, 128, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                 0, 0, 0, 1, 1, 1e6, 1.0, 1.0, 40960, false, false, false, 0, 0, 0, 0, 0}},
    {"80b-a3b", {SY_QWEN3_NEXT, 48, 2048, 151936, 512, 10, 512, 5120, 512, 0, 16, 2, 256, 16, 32, 128, 128, 4, 4,
                 0, 0, 0, 0, 0, 0, 1, 1, 1e7, 0.25, 1.0, 262144, false, false, false, 0, 0, 0, 0, 0}},
    {"35b-a3b", {SY_QWEN3_5_MOE, 40, 2048, 248320, 256, 8, 512, 0, 512, 0, 16, 2, 256, 16, 32, 128, 128, 4, 4, 0,
                 0, 0, 0, 0, 0, 1, 1, 1e7, 0.25, 1.0, 262144, false, false, false, 0, 0, 0, 0, 0}},
    {"397b-a17b", {SY_QWEN3_5_MOE, 60, 4096, 248320, 512, 10, 1024, 0, 1024, 0, 32, 2, 256, 16, 64, 128, 128, 4,
                   4, 0, 0, 0, 0, 0, 0, 1, 1, 1e7, 0.25, 1.0, 262144, false, false, false, 0, 0, 0, 0, 0}},
    {"deepseek-v3", {SY_DEEPSEEK_V3, 61, 7168, 129280, 256, 8, 2048, 18432, 0, 1, 128, 128, 192, 0, 0, 0, 0, 0, 0,
                     1536, 512, 128, 64, 128, 3, 8, 4, 10000.0, 1.0, 2.5, 163840, true, false, false, 0, 0, 0, 0, 0}},
    /* GLM-4.5-Air (106B-A12B): no q/k norm */
    {"glm-4.5-air", {SY_GLM4_MOE, 46, 4096, 151552, 128, 8, 1408, 10944, 0, 1, 96, 8, 128, 0, 0, 0, 0, 0, 0, 0, 0,
                     0, 0, 0, 1, 1, 1, 1e6, 0.5, 1.0, 131072, false, true, false, 0, 0, 0, 0, 0}},
    /* GLM-4.5 / 4.6 / 4.7 (355B-A32B) */
    {"glm-4.7", {SY_GLM4_MOE, 92, 5120, 151552, 160, 8, 1536, 12288, 0, 1, 96, 8, 128, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                 0, 0, 3, 1, 1, 1e6, 0.5, 2.5, 202752, false, true, true, 0, 0, 0, 0, 0}},
    /* GLM-4.7-Flash (30B-A3B, MLA) */
    {"glm-4.7-flash", {SY_GLM4_MOE_LITE, 47, 2048, 154880, 64, 4, 1536, 10240, 0, 1, 20, 20, 0, 0, 0, 0, 0, 0, 0,
                       768, 512, 192, 64, 256, 1, 1, 1, 1e6, 1.0, 1.8, 202752, false, false, false, 0, 0, 0, 0, 0}},
    /* MiniMax-M2 / M2.1 / M2.5 (230B-A10B) */
    {"minimax-m2", {SY_MINIMAX_M2, 62, 3072, 200064, 256, 8, 1536, 0, 0, 0, 48, 8, 128, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                    0, 0, 0, 1, 1, 5e6, 1.0, 1.0, 196608, false, false, true, 64, 0, 0, 0, 0}},
    /* gpt-oss-20b / -120b (released config.json): experts intermediate_size wide, YaRN x32 over 4096 */
    {"gpt-oss-20b", {.arch = SY_GPT_OSS, .L = 24, .H = 2880, .V = 201088, .E = 32, .topk = 4, .I_moe = 2880,
                     .heads = 64, .kv_heads = 8, .hd = 64, .n_group = 1, .topk_group = 1, .theta = 150000.0,
                     .partial = 1.0, .scaling = 1.0, .max_pos = 131072, .yarn = true, .attn_bias = true,
                     .window = 128}},
    {"gpt-oss-120b", {.arch = SY_GPT_OSS, .L = 36, .H = 2880, .V = 201088, .E = 128, .topk = 4, .I_moe = 2880,
                      .heads = 64, .kv_heads = 8, .hd = 64, .n_group = 1, .topk_group = 1, .theta = 150000.0,
                      .partial = 1.0, .scaling = 1.0, .max_pos = 131072, .yarn = true, .attn_bias = true,
                      .window = 128}},
    /* DeepSeek-V3.2(-Exp): DeepSeek-V3's sizes + the indexer (64 heads of 128, top 2048) */
    {"deepseek-v3.2", {.arch = SY_DEEPSEEK_V32, .L = 61, .H = 7168, .V = 129280, .E = 256, .topk = 8,
                       .I_moe = 2048, .I_dense = 18432, .n_shared = 1, .heads = 128, .kv_heads = 128, .hd = 192,
                       .q_lora = 1536, .kv_lora = 512, .nope = 128, .rope_d = 64, .v_head = 128,
                       .first_dense = 3, .n_group = 8, .topk_group = 4, .theta = 10000.0, .partial = 1.0,
                       .scaling = 2.5, .max_pos = 163840, .yarn = true, .idx_heads = 64, .idx_dim = 128,
                       .idx_topk = 2048}},
    /* GLM-5 / 5.1 (744B-A40B): MLA + DSA (32 indexer heads of 128, top 2048) */
    {"glm-5", {.arch = SY_GLM_MOE_DSA, .L = 78, .H = 6144, .V = 154880, .E = 256, .topk = 8, .I_moe = 2048,
               .I_dense = 12288, .n_shared = 1, .heads = 64, .kv_heads = 64, .q_lora = 2048, .kv_lora = 512,
               .nope = 192, .rope_d = 64, .v_head = 256, .first_dense = 3, .n_group = 1, .topk_group = 1,
               .theta = 1e6, .partial = 1.0, .scaling = 2.5, .max_pos = 202752, .idx_heads = 32, .idx_dim = 128,
               .idx_topk = 2048}},
};

/* Tiny test sizes per family (the shapes of the shared fixtures). */
static const sy_cfg g_tiny[SY_NARCH] = {
    {SY_QWEN3_MOE, 3, 256, 512, 8, 2, 128, 512, 0, 0, 4, 2, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1e6, 1.0,
     1.0, 4096, false, false, false, 0, 0, 0, 0, 0},
    {SY_QWEN3_NEXT, 4, 256, 512, 8, 2, 128, 512, 128, 0, 4, 2, 64, 2, 4, 32, 32, 4, 4, 0, 0, 0, 0, 0, 0, 1, 1, 1e7,
     0.25, 1.0, 4096, false, false, false, 0, 0, 0, 0, 0},
    {SY_QWEN3_5_MOE, 4, 256, 512, 8, 2, 128, 0, 128, 0, 4, 2, 64, 2, 4, 32, 32, 4, 4, 0, 0, 0, 0, 0, 0, 1, 1, 1e4,
     0.25, 1.0, 4096, false, false, false, 0, 0, 0, 0, 0},
    {SY_DEEPSEEK_V3, 3, 256, 512, 8, 2, 128, 512, 0, 1, 4, 4, 64, 0, 0, 0, 0, 0, 0, 96, 64, 32, 32, 64, 1, 2, 1,
     1e4, 1.0, 2.5, 4096, false, false, false, 0, 0, 0, 0, 0},
    {SY_GLM4_MOE, 3, 256, 512, 8, 2, 128, 512, 0, 1, 4, 2, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1e6, 0.5,
     2.5, 4096, false, true, true, 0, 0, 0, 0, 0},
    {SY_GLM4_MOE_LITE, 3, 256, 512, 8, 2, 128, 512, 0, 1, 4, 4, 0, 0, 0, 0, 0, 0, 0, 96, 64, 32, 32, 64, 1, 1, 1,
     1e4, 1.0, 1.8, 4096, false, false, false, 0, 0, 0, 0, 0},
    {SY_MINIMAX_M2, 3, 256, 512, 8, 2, 128, 0, 0, 0, 4, 2, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 5e6, 1.0,
     1.0, 4096, false, false, true, 32, 0, 0, 0, 0},
    /* gptoss-a: sliding window 16 on layers 0 and 2 */
    {.arch = SY_GPT_OSS, .L = 4, .H = 256, .V = 512, .E = 8, .topk = 2, .I_moe = 128, .heads = 4, .kv_heads = 2,
     .hd = 64, .n_group = 1, .topk_group = 1, .theta = 150000.0, .partial = 1.0, .scaling = 1.0, .max_pos = 4096,
     .yarn = true, .attn_bias = true, .window = 16},
    /* deepseekv32-a / glm5dsa-a: index_topk 24, 16 indexer heads of 32 */
    {.arch = SY_DEEPSEEK_V32, .L = 3, .H = 256, .V = 512, .E = 8, .topk = 2, .I_moe = 128, .I_dense = 512,
     .n_shared = 1, .heads = 4, .kv_heads = 4, .hd = 64, .q_lora = 96, .kv_lora = 64, .nope = 32, .rope_d = 32,
     .v_head = 64, .first_dense = 1, .n_group = 2, .topk_group = 1, .theta = 1e4, .partial = 1.0, .scaling = 2.5,
     .max_pos = 4096, .idx_heads = 16, .idx_dim = 32, .idx_topk = 24},
    {.arch = SY_GLM_MOE_DSA, .L = 3, .H = 256, .V = 512, .E = 8, .topk = 2, .I_moe = 128, .I_dense = 512,
     .n_shared = 1, .heads = 4, .kv_heads = 4, .q_lora = 96, .kv_lora = 64, .nope = 32, .rope_d = 32, .v_head = 64,
     .first_dense = 1, .n_group = 1, .topk_group = 1, .theta = 1e4, .partial = 1.0, .scaling = 2.5,
     .max_pos = 4096, .idx_heads = 16, .idx_dim = 32, .idx_topk = 24},
};

const char *mk_synth_archs(void) {
    return "qwen3_moe, qwen3_next, qwen3_5_moe, deepseek_v3, glm4_moe, glm4_moe_lite, minimax_m2, gpt_oss, "
           "deepseek_v32, glm_moe_dsa";
}
const char *mk_synth_presets(void) {
    return "tiny (any arch), 30b-a3b (qwen3_moe), 80b-a3b (qwen3_next), 35b-a3b and 397b-a17b (qwen3_5_moe), "
           "deepseek-v3 (deepseek_v3), glm-4.5-air and glm-4.7 (glm4_moe), glm-4.7-flash (glm4_moe_lite), "
           "minimax-m2 (minimax_m2), gpt-oss-20b and gpt-oss-120b (gpt_oss), deepseek-v3.2 (deepseek_v32), "
           "glm-5 (glm_moe_dsa)";
}

/* MLA attention and DeepSeek-style routing (sigmoid, correction bias,
 * shared experts, dense first layers). */
static bool is_dsa(sy_arch a) { return a == SY_DEEPSEEK_V32 || a == SY_GLM_MOE_DSA; }
static bool is_mla(sy_arch a) { return a == SY_DEEPSEEK_V3 || a == SY_GLM4_MOE_LITE || is_dsa(a); }
static bool ds_routing(sy_arch a) { return is_mla(a) || a == SY_GLM4_MOE; }

mk_status sy_cfg_resolve(const mk_synth_opts *o, sy_cfg *c) {
    int a = -1;
    for (int i = 0; i < SY_NARCH; i++)
        if (o->arch && strcmp(o->arch, g_arch_names[i]) == 0)
            a = i;
    if (a < 0)
        return mk_err(MK_E_ARG, "--arch '%s': expected one of %s", o->arch ? o->arch : "", mk_synth_archs());
    const char *pre = o->preset ? o->preset : "tiny";
    bool found = false;
    if (strcmp(pre, "tiny") == 0) {
        *c = g_tiny[a];
        found = true;
    }
    for (size_t i = 0; !found && i < sizeof g_presets / sizeof g_presets[0]; i++)
        if (strcmp(pre, g_presets[i].name) == 0) {
            if ((int)g_presets[i].c.arch != a)
                return mk_err(MK_E_ARG, "--preset %s is a %s model, not %s", pre, g_arch_names[g_presets[i].c.arch],
                              g_arch_names[a]);
            *c = g_presets[i].c;
            found = true;
        }
    if (!found)
        return mk_err(MK_E_ARG, "--preset '%s': expected one of %s", pre, mk_synth_presets());
    if (o->layers < 0 || o->experts < 0 || o->vocab < 0)
        return mk_err(MK_E_ARG, "--layers, --experts and --vocab must be positive");
    if (o->layers)
        c->L = o->layers;
    if (o->experts) {
        c->E = o->experts;
        if (c->topk > c->E)
            c->topk = c->E;
        if (c->n_group > 1 && (c->E % c->n_group || c->E / c->n_group < 2)) {
            c->n_group = 1; /* grouped routing needs groups of >= 2 experts */
            c->topk_group = 1;
        }
        if (c->first_dense >= c->L && c->L > 1)
            c->first_dense = c->L - 1;
    }
    if (o->vocab)
        c->V = o->vocab;
    if (ds_routing(c->arch) && c->first_dense > c->L)
        c->first_dense = c->L;
    if (o->mtp && c->arch >= SY_GLM4_MOE)
        return mk_err(MK_E_ARG, "--mtp: not written for %s (its MTP layers are not synthesized yet)",
                      g_arch_names[c->arch]);
    if (o->vl && c->arch != SY_QWEN3_5_MOE)
        return mk_err(MK_E_ARG, "--vl: only qwen3_5_moe ships as a vision-language checkpoint");
    if ((o->format == MK_SYNTH_MXFP4) != (c->arch == SY_GPT_OSS && o->format != MK_SYNTH_BF16))
        return mk_err(MK_E_ARG, "--format %s: %s", o->format == MK_SYNTH_MXFP4 ? "mxfp4" : "fp8/ct-int4",
                      o->format == MK_SYNTH_MXFP4 ? "MXFP4 experts are gpt_oss's released format only"
                                                  : "gpt_oss ships in bf16 or with MXFP4 experts (--format mxfp4)");
    if (o->fused && c->arch == SY_MINIMAX_M2)
        return mk_err(MK_E_ARG, "--layout fused: minimax_m2 checkpoints ship per-expert (w1/w2/w3) only");
    if (o->fused && (o->format == MK_SYNTH_CT_INT4 || o->format == MK_SYNTH_CT_INT4_ASYM))
        return mk_err(MK_E_ARG, "--layout fused: compressed-tensors INT4 checkpoints are per-expert");
    return MK_OK;
}

/* ------------------------------------------------------- tensor lists */

static uint64_t key_of(const sy_list *l, const char *name) {
    return XXH3_64bits_withSeed(name, strlen(name), l->seed);
}

static sy_tensor *push(sy_list *l, char *name, mk_dtype dt, int ndim, const int64_t *shape, sy_init init) {
    if (l->err != MK_OK || !name) {
        free(name);
        if (l->err == MK_OK)
            l->err = mk_err(MK_E_NOMEM, "synth: no memory for the name of tensor %zu", l->n);
        return NULL;
    }
    if (l->n == l->cap) {
        size_t nc = l->cap ? 2 * l->cap : 1024;
        sy_tensor *nt = mk_realloc(l->t, nc * sizeof *nt);
        if (!nt) {
            free(name);
            l->err = mk_err(MK_E_NOMEM, "synth: no memory for a list of %zu tensors", nc);
            return NULL;
        }
        l->t = nt;
        l->cap = nc;
    }
    sy_tensor *t = &l->t[l->n++];
    memset(t, 0, sizeof *t);
    t->name = name;
    t->dt = dt;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->init = init;
    t->key = key_of(l, name);
    return t;
}

static void vec(sy_list *l, const char *p, const char *n, int64_t d, sy_init init) {
    push(l, cv_printf("%s.%s", p, n), MK_DT_BF16, 1, &d, init);
}

/* A linear weight `p.n` [out, in] (or [E, out, in] when e > 0) in the
 * storage of the format: FP8 adds its scale grid; `ct` marks the routed
 * experts that compressed-tensors stores as INT4. */
static void linear_as(sy_list *l, const char *p, const char *n, int64_t e, int64_t out, int64_t in, bool ct,
                      bool proj) {
    int64_t s3[3] = {e, out, in}, *s = e ? s3 : s3 + 1;
    int nd = e ? 3 : 2;
    bool fp8 = l->format == MK_SYNTH_FP8 && proj && strncmp(p, "model.visual", 12) != 0;
    bool int4 = ct && (l->format == MK_SYNTH_CT_INT4 || l->format == MK_SYNTH_CT_INT4_ASYM);
    if (fp8) {
        sy_tensor *w = push(l, cv_printf("%s.%s", p, n), MK_DT_F8_E4M3, nd, s, SY_FP8W);
        if (!w)
            return;
        uint64_t key = w->key;
        int64_t g3[3] = {e, (out + 127) / 128, (in + 127) / 128}, *g = e ? g3 : g3 + 1;
        /* per-expert <module>.weight_scale_inv; fused (transformers runtime layout) <name>_scale_inv */
        sy_tensor *sc = push(l, cv_printf("%s.%s_scale_inv", p, n), MK_DT_F32, nd, g, SY_FP8S);
        if (sc) {
            sc->key = key;
            sc->wrows = (e ? e : 1) * out;
            sc->wcols = in;
            sc->wmrows = out;
        }
        return;
    }
    if (int4) {
        size_t k = strlen(n) - strlen(".weight");
        int64_t ws[2] = {out, (in + 7) / 8}, ss[2] = {out, in / 32}, sh = 2, zs[2] = {(out + 7) / 8, in / 32};
        /* push() may move the array: companions are fixed up by index */
        size_t first = l->n;
        sy_tensor *w = push(l, cv_printf("%s.%.*s.weight_packed", p, (int)k, n), MK_DT_I32, 2, ws, SY_CTW);
        if (!w)
            return;
        push(l, cv_printf("%s.%.*s.weight_scale", p, (int)k, n), MK_DT_BF16, 2, ss, SY_CTS);
        push(l, cv_printf("%s.%.*s.weight_shape", p, (int)k, n), MK_DT_I64, 1, &sh, SY_CTSHAPE);
        if (l->format == MK_SYNTH_CT_INT4_ASYM)
            push(l, cv_printf("%s.%.*s.weight_zero_point", p, (int)k, n), MK_DT_I32, 2, zs, SY_CTZP);
        for (size_t i = first; l->err == MK_OK && i < l->n; i++) {
            l->t[i].key = l->t[first].key;
            l->t[i].wrows = out;
            l->t[i].wcols = in;
        }
        return;
    }
    push(l, cv_printf("%s.%s", p, n), MK_DT_BF16, nd, s, SY_LIN);
}

/* The projections (and MiniMax's w1..w3) are what FP8 checkpoints store in
 * FP8; norms, routers and embeddings stay in bf16. */
static void linear(sy_list *l, const char *p, const char *n, int64_t e, int64_t out, int64_t in, bool ct) {
    bool proj = strstr(n, "proj") || (n[0] == 'w' && n[1] >= '1' && n[1] <= '3' && n[2] == '.'); /* MiniMax w1..w3 */
    linear_as(l, p, n, e, out, in, ct, proj);
}

/* SwiGLU MLP (dense or shared expert) at prefix p. */
static void mlp(sy_list *l, const char *p, int64_t H, int64_t I) {
    linear(l, p, "gate_proj.weight", 0, I, H, false);
    linear(l, p, "up_proj.weight", 0, I, H, false);
    linear(l, p, "down_proj.weight", 0, H, I, false);
}

static void experts(sy_list *l, const sy_cfg *c, const char *mlpp) {
    char *p = cv_printf("%s.experts", mlpp);
    if (!p) {
        l->err = mk_err(MK_E_NOMEM, "'%s': no memory for the experts' prefix", mlpp);
        return;
    }
    if (l->fused) {
        linear(l, p, "gate_up_proj", c->E, 2 * (int64_t)c->I_moe, c->H, false);
        linear(l, p, "down_proj", c->E, c->H, c->I_moe, false);
    } else
        for (int e = 0; e < c->E && l->err == MK_OK; e++) {
            char *pe = cv_printf("%s.%d", p, e);
            bool mm = c->arch == SY_MINIMAX_M2; /* Mixtral names: w1 gate, w3 up, w2 down */
            if (pe) {
                linear(l, pe, mm ? "w1.weight" : "gate_proj.weight", 0, c->I_moe, c->H, true);
                linear(l, pe, mm ? "w3.weight" : "up_proj.weight", 0, c->I_moe, c->H, true);
                linear(l, pe, mm ? "w2.weight" : "down_proj.weight", 0, c->H, c->I_moe, true);
            }
            free(pe);
        }
    free(p);
}

/* gpt_oss's MoE block at prefix m (<layer>.mlp): a biased router and one
 * stack per projection with gate and up interleaved along 2I (its only
 * layout, whatever --layout says). bf16 as transformers saves it
 * (gate_up_proj [E, H, 2I], down_proj [E, I, H]: input-major), MXFP4 as
 * released (*_blocks [E, out, in/32, 16] U8 of E2M1 pairs, *_scales
 * [E, out, in/32] U8 of E8M0: output-major); biases bf16 either way. The
 * bf16 experts hold exactly the MXFP4 form's values (E2M1 x 2^k is exact
 * in bf16), so the two formats of one seed are the same model. */
static void oss_moe(sy_list *l, const sy_cfg *c, const char *m) {
    int64_t E = c->E, H = c->H, I2 = 2 * (int64_t)c->I_moe, I = c->I_moe, eb[2] = {E, I2}, db[2] = {E, H};
    linear(l, m, "router.weight", 0, E, H, false);
    vec(l, m, "router.bias", E, SY_SMALL);
    char *x = cv_printf("%s.experts", m);
    if (!x)
        return;
    if (l->format == MK_SYNTH_MXFP4) {
        int64_t gb[4] = {E, I2, H / 32, 16}, gs[3] = {E, I2, H / 32}, dbk[4] = {E, H, I / 32, 16},
                ds[3] = {E, H, I / 32};
        push(l, cv_printf("%s.gate_up_proj_blocks", x), MK_DT_U8, 4, gb, SY_MXW);
        push(l, cv_printf("%s.gate_up_proj_scales", x), MK_DT_U8, 3, gs, SY_MXS);
        push(l, cv_printf("%s.down_proj_blocks", x), MK_DT_U8, 4, dbk, SY_MXW);
        push(l, cv_printf("%s.down_proj_scales", x), MK_DT_U8, 3, ds, SY_MXS);
    } else { /* the same values as the MXFP4 form: both formats are one model */
        int64_t gu[3] = {E, H, I2}, dn[3] = {E, I, H};
        static const char *const nm[2] = {"gate_up_proj", "down_proj"};
        for (int k = 0; k < 2; k++) {
            sy_tensor *t = push(l, cv_printf("%s.%s", x, nm[k]), MK_DT_BF16, 3, k ? dn : gu, SY_MXF);
            char *b = cv_printf("%s.%s_blocks", x, nm[k]), *sc = cv_printf("%s.%s_scales", x, nm[k]);
            if (t && b && sc) {
                t->key = key_of(l, b);
                t->key2 = key_of(l, sc);
                t->wcols = k ? I : H; /* in */
                t->wrows = k ? H : I2; /* out */
            } else if (l->err == MK_OK)
                l->err = mk_err(MK_E_NOMEM, "synth: no memory for the names of %s's MXFP4 form", x);
            free(b);
            free(sc);
        }
    }
    push(l, cv_printf("%s.gate_up_proj_bias", x), MK_DT_BF16, 2, eb, SY_SMALL);
    push(l, cv_printf("%s.down_proj_bias", x), MK_DT_BF16, 2, db, SY_SMALL);
    free(x);
}

static void attention(sy_list *l, const sy_cfg *c, const char *p, sy_init norm) {
    char *a = cv_printf("%s.self_attn", p);
    if (!a)
        return;
    if (is_mla(c->arch)) {
        linear(l, a, "q_a_proj.weight", 0, c->q_lora, c->H, false);
        vec(l, a, "q_a_layernorm.weight", c->q_lora, SY_NORM1);
        linear(l, a, "q_b_proj.weight", 0, (int64_t)c->heads * (c->nope + c->rope_d), c->q_lora, false);
        linear(l, a, "kv_a_proj_with_mqa.weight", 0, c->kv_lora + c->rope_d, c->H, false);
        vec(l, a, "kv_a_layernorm.weight", c->kv_lora, SY_NORM1);
        linear(l, a, "kv_b_proj.weight", 0, (int64_t)c->heads * (c->nope + c->v_head), c->kv_lora, false);
        linear(l, a, "o_proj.weight", 0, c->H, (int64_t)c->heads * c->v_head, false);
        if (is_dsa(c->arch)) { /* the lightning indexer: FP8 releases store wq_b and wk in FP8, the rest not */
            char *x = cv_printf("%s.indexer", a);
            if (x) {
                linear_as(l, x, "wq_b.weight", 0, (int64_t)c->idx_heads * c->idx_dim, c->q_lora, false, true);
                linear_as(l, x, "wk.weight", 0, c->idx_dim, c->H, false, true);
                vec(l, x, "k_norm.weight", c->idx_dim, SY_NORM1); /* a LayerNorm: weight and bias */
                vec(l, x, "k_norm.bias", c->idx_dim, SY_SMALL);
                linear_as(l, x, "weights_proj.weight", 0, c->idx_heads, c->H, false, false);
            }
            free(x);
        }
    } else {
        /* qwen3_next / 3.5: q and gate interleaved per head */
        int gated = c->arch == SY_QWEN3_NEXT || c->arch == SY_QWEN3_5_MOE ? 2 : 1;
        int64_t q = (int64_t)c->heads * c->hd, kv = (int64_t)c->kv_heads * c->hd;
        linear(l, a, "q_proj.weight", 0, q * gated, c->H, false);
        linear(l, a, "k_proj.weight", 0, kv, c->H, false);
        linear(l, a, "v_proj.weight", 0, kv, c->H, false);
        linear(l, a, "o_proj.weight", 0, c->H, q, false);
        if (c->attn_bias) {
            vec(l, a, "q_proj.bias", q, SY_SMALL);
            vec(l, a, "k_proj.bias", kv, SY_SMALL);
            vec(l, a, "v_proj.bias", kv, SY_SMALL);
        }
        if (c->arch == SY_GPT_OSS) { /* o_proj's bias and one learned sink logit per head */
            vec(l, a, "o_proj.bias", c->H, SY_SMALL);
            vec(l, a, "sinks", c->heads, SY_SMALL);
        }
        if (c->arch == SY_MINIMAX_M2) { /* over the whole projection, all heads */
            vec(l, a, "q_norm.weight", q, norm);
            vec(l, a, "k_norm.weight", kv, norm);
        } else if (c->arch != SY_GPT_OSS && (c->arch != SY_GLM4_MOE || c->qk_norm)) {
            vec(l, a, "q_norm.weight", c->hd, norm);
            vec(l, a, "k_norm.weight", c->hd, norm);
        }
    }
    free(a);
}

static void deltanet(sy_list *l, const sy_cfg *c, const char *p) {
    char *a = cv_printf("%s.linear_attn", p);
    if (!a)
        return;
    int64_t Kd = (int64_t)c->nk * c->dk, Vd = (int64_t)c->nv * c->dv, conv[3] = {2 * Kd + Vd, 1, c->conv_k};
    if (c->arch == SY_QWEN3_NEXT) {
        linear(l, a, "in_proj_qkvz.weight", 0, 2 * Kd + 2 * Vd, c->H, false);
        linear(l, a, "in_proj_ba.weight", 0, 2 * (int64_t)c->nv, c->H, false);
    } else {
        linear(l, a, "in_proj_qkv.weight", 0, 2 * Kd + Vd, c->H, false);
        linear(l, a, "in_proj_z.weight", 0, Vd, c->H, false);
        linear(l, a, "in_proj_b.weight", 0, c->nv, c->H, false);
        linear(l, a, "in_proj_a.weight", 0, c->nv, c->H, false);
    }
    push(l, cv_printf("%s.conv1d.weight", a), MK_DT_BF16, 3, conv, SY_CONV);
    vec(l, a, "dt_bias", c->nv, SY_DT);
    vec(l, a, "A_log", c->nv, SY_ALOG);
    vec(l, a, "norm.weight", c->dv, SY_NORM1); /* plain RMSNorm weight, not zero-centred */
    linear(l, a, "out_proj.weight", 0, c->H, Vd, false);
    free(a);
}

/* Decoder layer at prefix p (model.layers.i, mtp.layers.0, ...). */
static void layer(sy_list *l, const sy_cfg *c, const char *p, int i, bool full) {
    bool zc = c->arch == SY_QWEN3_NEXT || c->arch == SY_QWEN3_5_MOE;
    sy_init norm = zc ? SY_NORM0 : SY_NORM1;
    vec(l, p, "input_layernorm.weight", c->H, norm);
    vec(l, p, "post_attention_layernorm.weight", c->H, norm);
    if (full)
        attention(l, c, p, norm);
    else
        deltanet(l, c, p);
    if (c->arch == SY_GPT_OSS) {
        char *m = cv_printf("%s.mlp", p);
        if (m)
            oss_moe(l, c, m);
        free(m);
        return;
    }
    if (c->arch == SY_MINIMAX_M2) {
        char *m = cv_printf("%s.block_sparse_moe", p);
        if (!m)
            return;
        linear(l, m, "gate.weight", 0, c->E, c->H, false);
        int64_t e = c->E;
        push(l, cv_printf("%s.e_score_correction_bias", m), MK_DT_F32, 1, &e, SY_SMALL);
        experts(l, c, m);
        free(m);
        return;
    }
    char *m = cv_printf("%s.mlp", p);
    if (!m)
        return;
    if (ds_routing(c->arch) && i < c->first_dense)
        mlp(l, m, c->H, c->I_dense);
    else {
        linear(l, m, "gate.weight", 0, c->E, c->H, false);
        if (ds_routing(c->arch)) {
            int64_t e = c->E;
            push(l, cv_printf("%s.gate.e_score_correction_bias", m), MK_DT_F32, 1, &e, SY_SMALL);
            char *sp = cv_printf("%s.shared_experts", m);
            if (sp)
                mlp(l, sp, c->H, (int64_t)c->I_moe * c->n_shared);
            free(sp);
        } else if (c->I_shared) {
            char *sp = cv_printf("%s.shared_expert", m);
            if (sp)
                mlp(l, sp, c->H, c->I_shared);
            free(sp);
            linear(l, m, "shared_expert_gate.weight", 0, 1, c->H, false);
        }
        experts(l, c, m);
    }
    free(m);
}

static void vision(sy_list *l, int64_t H) {
    static const struct {
        const char *n;
        int nd;
        int64_t s[5];
        sy_init init;
    } t[] = {
        {"patch_embed.proj.weight", 5, {64, 3, 2, 16, 16}, SY_LIN}, {"patch_embed.proj.bias", 1, {64}, SY_SMALL},
        {"pos_embed.weight", 2, {2304, 64}, SY_LIN},              {"blocks.0.norm1.weight", 1, {64}, SY_NORM1},
        {"blocks.0.norm1.bias", 1, {64}, SY_SMALL},                {"blocks.0.norm2.weight", 1, {64}, SY_NORM1},
        {"blocks.0.norm2.bias", 1, {64}, SY_SMALL},                {"blocks.0.attn.qkv.weight", 2, {192, 64}, SY_LIN},
        {"blocks.0.attn.qkv.bias", 1, {192}, SY_SMALL},            {"blocks.0.attn.proj.weight", 2, {64, 64}, SY_LIN},
        {"blocks.0.attn.proj.bias", 1, {64}, SY_SMALL},            {"blocks.0.mlp.linear_fc1.weight", 2, {128, 64}, SY_LIN},
        {"blocks.0.mlp.linear_fc1.bias", 1, {128}, SY_SMALL},      {"blocks.0.mlp.linear_fc2.weight", 2, {64, 128}, SY_LIN},
        {"blocks.0.mlp.linear_fc2.bias", 1, {64}, SY_SMALL},       {"merger.norm.weight", 1, {64}, SY_NORM1},
        {"merger.norm.bias", 1, {64}, SY_SMALL},                   {"merger.linear_fc1.weight", 2, {256, 256}, SY_LIN},
        {"merger.linear_fc1.bias", 1, {256}, SY_SMALL},            {"merger.linear_fc2.weight", 2, {-1, 256}, SY_LIN},
        {"merger.linear_fc2.bias", 1, {-1}, SY_SMALL},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        int64_t s[5];
        memcpy(s, t[i].s, sizeof s);
        if (s[0] < 0)
            s[0] = H; /* out_hidden_size = the text model's hidden size */
        push(l, cv_printf("model.visual.%s", t[i].n), MK_DT_BF16, t[i].nd, s, t[i].init);
    }
}

mk_status sy_tensors(const sy_cfg *c, const mk_synth_opts *o, sy_list *l) {
    memset(l, 0, sizeof *l);
    l->seed = o->seed;
    l->format = o->format;
    l->fused = o->fused;
    bool zc = c->arch == SY_QWEN3_NEXT || c->arch == SY_QWEN3_5_MOE;
    const char *mp = o->vl ? "model.language_model" : "model";
    int64_t emb[2] = {c->V, c->H};
    push(l, cv_printf("%s.embed_tokens.weight", mp), MK_DT_BF16, 2, emb, SY_LIN);
    push(l, cv_strdup("lm_head.weight"), MK_DT_BF16, 2, emb, SY_LIN);
    vec(l, mp, "norm.weight", c->H, zc ? SY_NORM0 : SY_NORM1);
    for (int i = 0; i < c->L && l->err == MK_OK; i++) {
        char *p = cv_printf("%s.layers.%d", mp, i);
        if (p)
            layer(l, c, p, i, !zc || (i + 1) % c->interval == 0);
        free(p);
    }
    if (o->mtp || o->vl) {
        int64_t fc[2] = {c->H, 2 * (int64_t)c->H};
        if (c->arch == SY_DEEPSEEK_V3) {
            /* DeepSeek's MTP block is layer num_hidden_layers (embeddings and head shared: left out) */
            char *p = cv_printf("model.layers.%d", c->L);
            if (p) {
                layer(l, c, p, c->L, true);
                vec(l, p, "enorm.weight", c->H, SY_NORM1);
                vec(l, p, "hnorm.weight", c->H, SY_NORM1);
                linear(l, p, "eh_proj.weight", 0, c->H, 2 * (int64_t)c->H, false);
                vec(l, p, "shared_head.norm.weight", c->H, SY_NORM1);
            }
            free(p);
        } else if (zc) {
            push(l, cv_strdup("mtp.fc.weight"), MK_DT_BF16, 2, fc, SY_LIN);
            vec(l, "mtp", "pre_fc_norm_embedding.weight", c->H, SY_NORM0);
            vec(l, "mtp", "pre_fc_norm_hidden.weight", c->H, SY_NORM0);
            vec(l, "mtp", "norm.weight", c->H, SY_NORM0);
            layer(l, c, "mtp.layers.0", c->L, true);
        }
    }
    if (o->vl)
        vision(l, c->H);
    return l->err;
}

void sy_list_free(sy_list *l) {
    for (size_t i = 0; i < l->n; i++)
        free(l->t[i].name);
    free(l->t);
    memset(l, 0, sizeof *l);
}

/* ------------------------------------------------------------- config */

static void set_i(json_t *o, const char *k, json_int_t v) { json_object_set_new(o, k, json_integer(v)); }
static void set_r(json_t *o, const char *k, double v) { json_object_set_new(o, k, json_real(v)); }
static void set_s(json_t *o, const char *k, const char *v) { json_object_set_new(o, k, json_string(v)); }
static void set_b(json_t *o, const char *k, bool v) { json_object_set_new(o, k, json_boolean(v)); }
static json_t *arr1(const char *s) {
    json_t *a = json_array();
    json_array_append_new(a, json_string(s));
    return a;
}

static json_t *quant_config(const mk_synth_opts *o) {
    json_t *q = json_object();
    if (o->format == MK_SYNTH_MXFP4) { /* gpt-oss as released: experts only, OpenAI's list of the rest */
        static const char *const keep[] = {"model.layers.*.self_attn", "model.layers.*.mlp.router",
                                           "model.embed_tokens", "lm_head"};
        json_t *a = json_array();
        for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
            json_array_append_new(a, json_string(keep[i]));
        json_object_set_new(q, "modules_to_not_convert", a);
        set_s(q, "quant_method", "mxfp4");
        return q;
    }
    if (o->format == MK_SYNTH_FP8) {
        set_s(q, "quant_method", "fp8");
        set_s(q, "fmt", "e4m3");
        set_s(q, "activation_scheme", "dynamic");
        json_t *b = json_array();
        json_array_append_new(b, json_integer(128));
        json_array_append_new(b, json_integer(128));
        json_object_set_new(q, "weight_block_size", b);
        return q;
    }
    json_t *w = json_object(), *g = json_object(), *gs = json_object(), *ign = json_array();
    set_i(w, "num_bits", 4);
    set_s(w, "type", "int");
    set_b(w, "symmetric", o->format == MK_SYNTH_CT_INT4);
    set_s(w, "strategy", "group");
    set_i(w, "group_size", 32);
    json_object_set_new(g, "targets", arr1("Linear"));
    json_object_set_new(g, "weights", w);
    json_object_set_new(g, "format", json_string("pack-quantized"));
    json_object_set_new(gs, "group_0", g);
    set_s(q, "quant_method", "compressed-tensors");
    set_s(q, "format", "pack-quantized");
    json_object_set_new(q, "config_groups", gs);
    json_array_append_new(ign, json_string("lm_head"));
    json_array_append_new(ign, json_string("re:.*self_attn.*"));
    json_array_append_new(ign, json_string("re:.*linear_attn.*"));
    json_array_append_new(ign, json_string("re:.*shared_expert.*"));
    json_array_append_new(ign, json_string("re:.*mlp\\.gate$"));
    json_array_append_new(ign, json_string("re:.*block_sparse_moe\\.gate$"));
    json_object_set_new(q, "ignore", ign);
    return q;
}

static json_t *layer_types(const sy_cfg *c) {
    json_t *a = json_array();
    for (int i = 0; i < c->L; i++)
        json_array_append_new(a, json_string((i + 1) % c->interval == 0 ? "full_attention" : "linear_attention"));
    return a;
}

static json_t *rope_parameters(const sy_cfg *c, bool partial) {
    json_t *rp = json_object();
    if (partial)
        set_r(rp, "partial_rotary_factor", c->partial);
    set_r(rp, "rope_theta", c->theta);
    set_s(rp, "rope_type", "default");
    return rp;
}

/* glm4_moe, glm4_moe_lite, minimax_m2: the keys transformers 5.17 writes
 * for them (as in the shared fixtures), plus MiniMax's released rotary_dim. */
static void glm_minimax_fields(const sy_cfg *c, json_t *t) {
    set_i(t, "bos_token_id", 0);
    set_i(t, "eos_token_id", 1);
    if (c->arch == SY_MINIMAX_M2) {
        json_object_del(t, "moe_intermediate_size"); /* Mixtral lineage: intermediate_size is the expert's */
        json_object_del(t, "norm_topk_prob");
        json_object_del(t, "attention_bias");
        set_i(t, "head_dim", c->hd);
        set_i(t, "intermediate_size", c->I_moe);
        set_i(t, "num_local_experts", c->E);
        set_i(t, "rotary_dim", c->rotary_dim);
        set_r(t, "router_aux_loss_coef", 0.001);
        set_r(t, "router_jitter_noise", 0.0);
        json_object_set_new(t, "rope_parameters", rope_parameters(c, false));
        return;
    }
    set_r(t, "rms_norm_eps", 1e-5);
    set_b(t, "attention_bias", c->attn_bias);
    set_i(t, "intermediate_size", c->I_dense);
    set_i(t, "n_routed_experts", c->E);
    set_i(t, "n_shared_experts", c->n_shared);
    set_i(t, "n_group", c->n_group);
    set_i(t, "topk_group", c->topk_group);
    set_r(t, "routed_scaling_factor", c->scaling);
    if (c->arch == SY_GLM4_MOE) {
        set_i(t, "head_dim", c->hd);
        set_i(t, "first_k_dense_replace", c->first_dense);
        set_i(t, "num_nextn_predict_layers", 0);
        set_r(t, "partial_rotary_factor", c->partial);
        set_b(t, "use_qk_norm", c->qk_norm);
        json_object_set_new(t, "rope_parameters", rope_parameters(c, true));
        return;
    }
    json_t *types = json_array();
    for (int i = 0; i < c->L; i++)
        json_array_append_new(types, json_string(i < c->first_dense ? "dense" : "sparse"));
    json_object_set_new(t, "mlp_layer_types", types);
    set_i(t, "q_lora_rank", c->q_lora);
    set_i(t, "kv_lora_rank", c->kv_lora);
    set_i(t, "qk_head_dim", c->nope + c->rope_d);
    set_i(t, "qk_nope_head_dim", c->nope);
    set_i(t, "qk_rope_head_dim", c->rope_d);
    set_i(t, "v_head_dim", c->v_head);
    set_b(t, "rope_interleave", true);
    json_object_set_new(t, "rope_parameters", rope_parameters(c, false));
}

/* gpt_oss: the keys of its released config.json (transformers 5 spelling:
 * rope_parameters), layers alternating sliding / full from layer 0. */
static void oss_fields(const sy_cfg *c, json_t *t) {
    json_object_del(t, "moe_intermediate_size");
    json_object_del(t, "norm_topk_prob");
    set_b(t, "attention_bias", true);
    set_i(t, "head_dim", c->hd);
    set_i(t, "intermediate_size", c->I_moe);
    set_i(t, "num_local_experts", c->E);
    set_r(t, "rms_norm_eps", 1e-5);
    set_i(t, "sliding_window", c->window);
    set_r(t, "swiglu_limit", 7.0);
    set_r(t, "router_aux_loss_coef", 0.9);
    json_t *types = json_array();
    for (int i = 0; i < c->L; i++)
        json_array_append_new(types, json_string(i % 2 ? "full_attention" : "sliding_attention"));
    json_object_set_new(t, "layer_types", types);
    json_t *rp = json_object();
    set_r(rp, "beta_fast", 32.0);
    set_r(rp, "beta_slow", 1.0);
    set_r(rp, "factor", 32.0);
    set_i(rp, "original_max_position_embeddings", 4096);
    set_r(rp, "rope_theta", c->theta);
    set_s(rp, "rope_type", "yarn");
    set_b(rp, "truncate", false);
    json_object_set_new(t, "rope_parameters", rp);
}

/* deepseek_v32 / glm_moe_dsa: the indexer's keys, every layer sparse
 * attention, the MoE schedule as a list (transformers 5.17 writes it), and
 * glm_moe_dsa's own indexer per layer (GLM-5: no shared selections). */
static void dsa_fields(const sy_cfg *c, json_t *t) {
    set_i(t, "head_dim", c->rope_d); /* as transformers writes it: qk_rope_head_dim */
    set_i(t, "index_topk", c->idx_topk);
    set_i(t, "index_n_heads", c->idx_heads);
    set_i(t, "index_head_dim", c->idx_dim);
    json_t *lt = json_array(), *mt = json_array(), *it = json_array();
    for (int i = 0; i < c->L; i++) {
        json_array_append_new(lt, json_string("deepseek_sparse_attention"));
        json_array_append_new(mt, json_string(i < c->first_dense ? "dense" : "sparse"));
        json_array_append_new(it, json_string("full"));
    }
    json_object_set_new(t, "layer_types", lt);
    json_object_set_new(t, "mlp_layer_types", mt);
    if (c->arch == SY_GLM_MOE_DSA)
        json_object_set_new(t, "indexer_types", it);
    else
        json_decref(it);
}

static void text_fields(const sy_cfg *c, const mk_synth_opts *o, json_t *t) {
    set_i(t, "vocab_size", c->V);
    set_i(t, "hidden_size", c->H);
    set_i(t, "num_hidden_layers", c->L);
    set_i(t, "num_attention_heads", c->heads);
    set_i(t, "num_key_value_heads", c->kv_heads);
    set_i(t, "max_position_embeddings", c->max_pos);
    set_r(t, "rms_norm_eps", 1e-6);
    set_s(t, "hidden_act", "silu");
    set_b(t, "attention_bias", false);
    set_r(t, "initializer_range", 0.02);
    set_b(t, "tie_word_embeddings", false);
    set_i(t, "num_experts_per_tok", c->topk);
    set_i(t, "moe_intermediate_size", c->I_moe);
    set_b(t, "norm_topk_prob", true);
    if (c->arch == SY_GPT_OSS) {
        oss_fields(c, t);
        return;
    }
    if (c->arch >= SY_GLM4_MOE && c->arch != SY_DEEPSEEK_V32) {
        glm_minimax_fields(c, t);
        if (is_dsa(c->arch))
            dsa_fields(c, t);
        return;
    }
    if (c->arch == SY_DEEPSEEK_V3 || c->arch == SY_DEEPSEEK_V32) {
        if (is_dsa(c->arch))
            dsa_fields(c, t);
        set_i(t, "head_dim", c->rope_d);
        set_i(t, "intermediate_size", c->I_dense);
        set_i(t, "n_routed_experts", c->E);
        set_i(t, "n_shared_experts", c->n_shared);
        set_i(t, "first_k_dense_replace", c->first_dense);
        set_i(t, "moe_layer_freq", 1);
        set_i(t, "n_group", c->n_group);
        set_i(t, "topk_group", c->topk_group);
        set_s(t, "topk_method", "noaux_tc");
        set_s(t, "scoring_func", "sigmoid");
        set_r(t, "routed_scaling_factor", c->scaling);
        set_i(t, "q_lora_rank", c->q_lora);
        set_i(t, "kv_lora_rank", c->kv_lora);
        set_i(t, "qk_nope_head_dim", c->nope);
        set_i(t, "qk_rope_head_dim", c->rope_d);
        set_i(t, "v_head_dim", c->v_head);
        set_b(t, "rope_interleave", true);
        set_i(t, "num_nextn_predict_layers", o->mtp ? 1 : 0);
        set_r(t, "rope_theta", c->theta);
        if (c->yarn) {
            json_t *rs = json_object();
            set_s(rs, "type", "yarn");
            set_r(rs, "factor", 40.0);
            set_i(rs, "original_max_position_embeddings", 4096);
            set_i(rs, "beta_fast", 32);
            set_i(rs, "beta_slow", 1);
            set_r(rs, "mscale", 1.0);
            set_r(rs, "mscale_all_dim", 1.0);
            json_object_set_new(t, "rope_scaling", rs);
        } else
            json_object_set_new(t, "rope_scaling", json_null());
        set_i(t, "bos_token_id", 0);
        set_i(t, "eos_token_id", 1);
        return;
    }
    set_i(t, "head_dim", c->hd);
    set_i(t, "num_experts", c->E);
    set_i(t, "decoder_sparse_step", 1);
    if (c->arch != SY_QWEN3_5_MOE) {
        set_i(t, "intermediate_size", c->I_dense);
        json_object_set_new(t, "mlp_only_layers", json_array());
    }
    set_r(t, "rope_theta", c->theta);
    if (c->arch == SY_QWEN3_MOE) {
        json_object_set_new(t, "rope_scaling", json_null());
        return;
    }
    set_i(t, "shared_expert_intermediate_size", c->I_shared);
    set_r(t, "partial_rotary_factor", c->partial);
    set_i(t, "linear_conv_kernel_dim", c->conv_k);
    set_i(t, "linear_num_key_heads", c->nk);
    set_i(t, "linear_num_value_heads", c->nv);
    set_i(t, "linear_key_head_dim", c->dk);
    set_i(t, "linear_value_head_dim", c->dv);
    set_i(t, "full_attention_interval", c->interval);
    json_object_set_new(t, "layer_types", layer_types(c));
    if (c->arch == SY_QWEN3_5_MOE) {
        json_t *rp = json_object();
        set_r(rp, "rope_theta", c->theta);
        set_r(rp, "partial_rotary_factor", c->partial);
        set_s(rp, "rope_type", "default");
        json_object_set_new(t, "rope_parameters", rp);
        set_i(t, "mtp_num_hidden_layers", (o->mtp || o->vl) ? 1 : 0);
    }
}

json_t *sy_config_json(const sy_cfg *c, const mk_synth_opts *o) {
    static const char *const archs[SY_NARCH] = {
        "Qwen3MoeForCausalLM", "Qwen3NextForCausalLM",   "Qwen3_5MoeForCausalLM", "DeepseekV3ForCausalLM",
        "Glm4MoeForCausalLM",  "Glm4MoeLiteForCausalLM", "MiniMaxM2ForCausalLM",  "GptOssForCausalLM",
        "DeepseekV32ForCausalLM", "GlmMoeDsaForCausalLM"};
    json_t *root = json_object(), *t = o->vl ? json_object() : root;
    if (o->vl) {
        json_object_set_new(root, "architectures", arr1("Qwen3_5MoeForConditionalGeneration"));
        set_s(root, "model_type", "qwen3_5_moe");
        set_s(root, "dtype", "bfloat16");
        set_b(root, "tie_word_embeddings", false);
        set_i(root, "image_token_id", 248056);
        set_i(root, "video_token_id", 248057);
        set_i(root, "vision_start_token_id", 248053);
        set_i(root, "vision_end_token_id", 248054);
        set_s(t, "model_type", "qwen3_5_moe_text");
    } else {
        json_object_set_new(root, "architectures", arr1(archs[c->arch]));
        set_s(root, "model_type", c->arch == SY_QWEN3_5_MOE ? "qwen3_5_moe_text" : g_arch_names[c->arch]);
        set_s(root, "dtype", "bfloat16");
    }
    text_fields(c, o, t);
    if (o->vl) {
        json_object_set_new(root, "text_config", t);
        json_t *v = json_object();
        set_i(v, "depth", 1);
        set_s(v, "hidden_act", "gelu_pytorch_tanh");
        set_i(v, "hidden_size", 64);
        set_i(v, "in_channels", 3);
        set_i(v, "intermediate_size", 128);
        set_s(v, "model_type", "qwen3_5_moe_vision");
        set_i(v, "num_heads", 2);
        set_i(v, "num_position_embeddings", 2304);
        set_i(v, "out_hidden_size", c->H);
        set_i(v, "patch_size", 16);
        set_i(v, "spatial_merge_size", 2);
        set_i(v, "temporal_patch_size", 2);
        json_object_set_new(root, "vision_config", v);
    }
    if (o->format != MK_SYNTH_BF16)
        json_object_set_new(root, "quantization_config", quant_config(o));
    set_s(root, "moekit_synth", "synthetic weights: not a trained model");
    return root;
}
