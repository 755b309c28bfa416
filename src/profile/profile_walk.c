/* The module walker: every linear module of a loaded model with its MLX
 * module path, its source tensor and its weight view.
 *
 * The views come from the model (src/model), so every storage the loader
 * reads (bf16, FP8, MLX, INT4; per-expert, fused, stacked) is profiled the
 * same way. Names are rebuilt from the family rules rather than read back:
 * the canonical HF text-model path (`model.layers.L.<module>`), turned into
 * MLX naming by mlx-lm's sanitize for the family (FORMATS.md section 3:
 * qwen3_5_moe nests under `language_model.`), and per-expert modules named
 * `...mlp.experts.{e}.{proj}` whatever the source layout, since that is how
 * experts of differing widths are stored. The source name is the tensor the
 * view was carved from in this checkpoint, probed the way the loader finds
 * it (text-model prefix, expert layout, lm_head placement). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/str.h"
#include "model/layout.h"
#include "model/model_impl.h"
#include "profile/profile_impl.h"

typedef struct walker {
    const mk_model *m;
    const mk_config *c;
    const mk_ckpt *ck;
    char pfx[48];  /* the checkpoint's text-model prefix */
    bool qwen35;   /* MLX nests the text model under language_model. */
    mk_prof_mod *v;
    size_t n, cap;
    mk_status st;
} walker;

static bool has(const walker *w, const char *name) { return mk_ckpt_find(w->ck, name) != NULL; }

/* Canonical HF path -> MLX module path (the one name map, src/model/layout.c). */
static char *mlx_name(const walker *w, const char *canon) {
    return mk_layout_out_name(MK_NAMING_MLX, w->qwen35, false, MK_PART_LM, canon);
}

/* Append one module; takes ownership of source. */
static void emit(walker *w, const char *canon, char *source, char *stack, mk_prof_kind kind,
                 int layer, int expert, const mk_wt *wt) {
    char *name = mlx_name(w, canon);
    if (w->st == MK_OK && w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 256;
        mk_prof_mod *v = mk_realloc(w->v, cap * sizeof *v);
        if (v) {
            w->v = v;
            w->cap = cap;
        }
    }
    if (w->st != MK_OK || w->n == w->cap || !name || !source) {
        if (w->st == MK_OK)
            w->st = mk_err(MK_E_NOMEM, "profile: no memory for the module list");
        free(name);
        free(source);
        free(stack);
        return;
    }
    w->v[w->n++] = (mk_prof_mod){name, source, stack, kind, layer, expert, wt, false};
}

/* A non-expert module of layer l: "self_attn.q_proj" etc. */
static void emit_mod(walker *w, int l, const char *mod, mk_prof_kind kind, const mk_wt *wt) {
    char canon[256];
    snprintf(canon, sizeof canon, "model.layers.%d.%s", l, mod);
    emit(w, canon, mk_strfmt("%s.layers.%d.%s.weight", w->pfx, l, mod), NULL, kind, l, -1, wt);
}

static void walk_mixer(walker *w, int l, const mk_layer_w *L) {
    switch (L->mixer) {
    case MK_MIXER_ATTN:
        emit_mod(w, l, "self_attn.q_proj", MK_PROF_LINEAR, &L->attn.q);
        emit_mod(w, l, "self_attn.k_proj", MK_PROF_LINEAR, &L->attn.k);
        emit_mod(w, l, "self_attn.v_proj", MK_PROF_LINEAR, &L->attn.v);
        emit_mod(w, l, "self_attn.o_proj", MK_PROF_LINEAR, &L->attn.o);
        break;
    case MK_MIXER_MLA:
        if (w->c->q_lora_rank > 0) {
            emit_mod(w, l, "self_attn.q_a_proj", MK_PROF_LINEAR, &L->mla.q_a);
            emit_mod(w, l, "self_attn.q_b_proj", MK_PROF_LINEAR, &L->mla.q_b);
        } else {
            emit_mod(w, l, "self_attn.q_proj", MK_PROF_LINEAR, &L->mla.q);
        }
        emit_mod(w, l, "self_attn.kv_a_proj_with_mqa", MK_PROF_LINEAR, &L->mla.kv_a);
        emit_mod(w, l, "self_attn.kv_b_proj", MK_PROF_LINEAR, &L->mla.kv_b);
        emit_mod(w, l, "self_attn.o_proj", MK_PROF_LINEAR, &L->mla.o);
        if (L->mla.dsa.on && !L->mla.dsa.shared) { /* the DSA indexer's linears (its LayerNorm stays float) */
            emit_mod(w, l, "self_attn.indexer.wq_b", MK_PROF_LINEAR, &L->mla.dsa.wq_b);
            emit_mod(w, l, "self_attn.indexer.wk", MK_PROF_LINEAR, &L->mla.dsa.wk);
            emit_mod(w, l, "self_attn.indexer.weights_proj", MK_PROF_LINEAR, &L->mla.dsa.weights_proj);
        }
        break;
    case MK_MIXER_GDN:
        if (L->gdn.grouped) {
            emit_mod(w, l, "linear_attn.in_proj_qkvz", MK_PROF_LINEAR, &L->gdn.qkvz);
            emit_mod(w, l, "linear_attn.in_proj_ba", MK_PROF_LINEAR, &L->gdn.ba);
        } else {
            emit_mod(w, l, "linear_attn.in_proj_qkv", MK_PROF_LINEAR, &L->gdn.qkv);
            emit_mod(w, l, "linear_attn.in_proj_z", MK_PROF_LINEAR, &L->gdn.z);
            emit_mod(w, l, "linear_attn.in_proj_b", MK_PROF_LINEAR, &L->gdn.b);
            emit_mod(w, l, "linear_attn.in_proj_a", MK_PROF_LINEAR, &L->gdn.a);
        }
        emit_mod(w, l, "linear_attn.out_proj", MK_PROF_LINEAR, &L->gdn.out);
        break;
    }
}

static const char *const k_proj[3] = {"gate_proj", "up_proj", "down_proj"};

/* Source name of projection j of expert e in layer l, for the layout the
 * checkpoint uses (probed as the loader does). */
static char *expert_source(const walker *w, int l, int e, int j) {
    char n[320];
    int64_t I = w->c->moe_intermediate_size;
    snprintf(n, sizeof n, "%s.layers.%d.mlp.switch_mlp.%s.weight", w->pfx, l, k_proj[j]);
    if (has(w, n)) /* MLX stacked (E, out, in) */
        return mk_strfmt("%s[%d]", n, e);
    for (int suffixed = 0; suffixed < 2; suffixed++) { /* HF fused */
        snprintf(n, sizeof n, "%s.layers.%d.mlp.experts.%s%s", w->pfx, l,
                 j == 2 ? "down_proj" : "gate_up_proj", suffixed ? ".weight" : "");
        if (has(w, n))
            return j == 2 ? mk_strfmt("%s[%d]", n, e)
                          : mk_strfmt("%s[%d, %lld:%lld]", n, e, (long long)(j ? I : 0),
                                (long long)(j ? 2 * I : I));
    }
    return mk_strfmt("%s.layers.%d.mlp.experts.%d.%s.weight", w->pfx, l, e, k_proj[j]);
}

/* A gated MLP of layer l under module prefix pre ("mlp", "mlp.shared_expert"):
 * its gate_proj, up_proj and down_proj. */
static void walk_mlp(walker *w, int l, const char *pre, const mk_mlp_w *f) {
    const mk_wt *wt[3] = {&f->gate, &f->up, &f->down};
    for (int j = 0; j < 3; j++) {
        char mod[96];
        snprintf(mod, sizeof mod, "%s.%s", pre, k_proj[j]);
        emit_mod(w, l, mod, MK_PROF_LINEAR, wt[j]);
    }
}

static void walk_moe(walker *w, int l, const mk_moe_w *moe) {
    const mk_config *c = w->c;
    emit_mod(w, l, "mlp.gate", MK_PROF_ROUTER, &moe->router);
    if (moe->has_shared) {
        const char *sh = c->arch == MK_ARCH_DEEPSEEK_V3 || c->arch == MK_ARCH_GLM4_MOE
                             ? "mlp.shared_experts"
                             : "mlp.shared_expert";
        walk_mlp(w, l, sh, &moe->shared);
    }
    if (moe->has_shared_gate)
        emit_mod(w, l, "mlp.shared_expert_gate", MK_PROF_ROUTER, &moe->shared_gate);
    for (int e = 0; e < c->num_experts; e++)
        for (int j = 0; j < 3; j++) {
            /* streamed experts: their shapes from the file locations (the
             * views are not theirs to read; the error pass gets the store's) */
            const mk_wt *wt;
            if (moe->locs) {
                const mk_expert_loc *x = &moe->locs[e];
                wt = j == 0 ? &x->gate.q : j == 1 ? &x->up.q : &x->down.q;
            } else {
                const mk_expert *x = &moe->experts[e];
                wt = j == 0 ? &x->gate : j == 1 ? &x->up : &x->down;
            }
            char canon[256], stack[256];
            snprintf(canon, sizeof canon, "model.layers.%d.mlp.experts.%d.%s", l, e, k_proj[j]);
            snprintf(stack, sizeof stack, "model.layers.%d.mlp.switch_mlp.%s", l, k_proj[j]);
            emit(w, canon, expert_source(w, l, e, j), mlx_name(w, stack), MK_PROF_EXPERT, l, e,
                 wt);
            if (w->st == MK_OK && moe->locs)
                w->v[w->n - 1].streamed = true;
        }
}

static void find_prefix(walker *w) {
    static const char *const pfx[] = {"model.language_model", "language_model.model", "model",
                                      "language_model"};
    snprintf(w->pfx, sizeof w->pfx, "model");
    for (size_t i = 0; i < sizeof pfx / sizeof pfx[0]; i++) {
        char n[96];
        snprintf(n, sizeof n, "%s.embed_tokens.weight", pfx[i]);
        if (has(w, n)) {
            snprintf(w->pfx, sizeof w->pfx, "%s", pfx[i]);
            return;
        }
    }
}

mk_status mk_prof_walk(const mk_model *m, mk_prof_mod **mods, size_t *n) {
    *mods = NULL;
    *n = 0;
    walker w = {.m = m, .c = &m->cfg, .ck = m->ck, .st = MK_OK};
    w.qwen35 = m->cfg.arch == MK_ARCH_QWEN3_5_MOE;
    find_prefix(&w);
    emit(&w, "model.embed_tokens", mk_strfmt("%s.embed_tokens.weight", w.pfx), NULL, MK_PROF_LINEAR,
         -1, -1, &m->embed);
    for (int l = 0; l < m->cfg.num_layers && w.st == MK_OK; l++) {
        const mk_layer_w *L = &m->layers[l];
        walk_mixer(&w, l, L);
        if (L->is_moe) {
            walk_moe(&w, l, &L->moe);
        } else {
            walk_mlp(&w, l, "mlp", &L->mlp);
        }
    }
    if (!m->cfg.tie_word_embeddings) {
        /* lm_head sits beside the text model: language_model.lm_head in MLX VL */
        const char *src = has(&w, "language_model.lm_head.weight") ? "language_model.lm_head.weight"
                                                                   : "lm_head.weight";
        emit(&w, "lm_head", mk_strfmt("%s", src), NULL, MK_PROF_LINEAR, -1, -1, &m->lm_head);
    }
    if (w.st != MK_OK) {
        mk_prof_walk_free(w.v, w.n);
        return w.st;
    }
    *mods = w.v;
    *n = w.n;
    return MK_OK;
}

void mk_prof_walk_free(mk_prof_mod *mods, size_t n) {
    for (size_t i = 0; mods && i < n; i++) {
        free(mods[i].name);
        free(mods[i].source);
        free(mods[i].stack);
    }
    free(mods);
}
