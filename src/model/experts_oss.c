/* gpt_oss's MoE block: the router (a linear with bias) and the routed
 * experts with their biases, in each layout the family ships in.
 *
 *   HF MXFP4 (as released, quantization_config.quant_method mxfp4):
 *     mlp.experts.gate_up_proj_blocks U8 [E, 2I, H/32, 16] + _scales U8
 *     [E, 2I, H/32]; down_proj_blocks [E, H, I/32, 16] + _scales. Per
 *     expert these are exactly MXFP4 views (E2M1 nibbles low first, one
 *     E8M0 scale per 32 inputs, rows = outputs), read in place.
 *   transformers float: mlp.experts.gate_up_proj [E, H, 2I] and down_proj
 *     [E, I, H], i.e. [in, out] (x @ W): transposed here into model-owned
 *     [out, in] copies. Streamed, each expert's [in, out] block (contiguous
 *     in the stack) is its location, marked transposed: the streaming
 *     store reads it as stored and transposes it after the read into the
 *     same [out, in] bytes these copies hold.
 *   MLX (mlx-lm gpt_oss sanitize): mlp.experts.{gate,up}_proj [E, I, H],
 *     down_proj [E, H, I] stacks (float, or quantized with .scales) and
 *     .bias [E, I] / [E, H].
 * In the two HF layouts gate and up are interleaved along 2I (gate j at
 * 2j, up j at 2j+1, biases too): the expert's `gate` view holds the whole
 * gate_up projection and the engine splits its output (mk_moe_w.fused_gu).
 * MLX has already split them. */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "model/load.h"
#include "moekit/module.h"

/* Stand-in address of the views mk_model_check builds (never read). */
static const uint8_t k_dummy[16];

static mk_wloc *loc_of(mk_ld *ld, mk_moe_w *moe, int64_t e, int j) {
    if (!moe->locs)
        return &ld->loc_scratch;
    return j == 0 ? &moe->locs[e].gate : j == 1 ? &moe->locs[e].up : &moe->locs[e].down;
}

static const char *shape_str(const mk_tensor_info *t, char *buf, size_t cap) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < t->ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (k < cap)
        snprintf(buf + k, cap - k, "] %s", mk_dtype_name(t->dtype));
    return buf;
}

/* Tensor `name` must be U8 of the given dims. */
static mk_status need_u8(const mk_ld *ld, const char *name, int nd, const int64_t *dims,
                         const mk_tensor_info **out) {
    const mk_tensor_info *t = mk_ckpt_find(ld->ck, name);
    if (!t)
        return mk_err(MK_E_FORMAT, "%s: tensor '%s' not found (gpt_oss MXFP4 experts come as "
                      "*_blocks and *_scales)", mk_ckpt_dir(ld->ck), name);
    bool ok = t->dtype == MK_DT_U8 && t->ndim == nd;
    for (int i = 0; ok && i < nd; i++)
        ok = t->shape[i] == dims[i];
    if (!ok) {
        char got[96], want[96];
        size_t k = (size_t)snprintf(want, sizeof want, "[");
        for (int i = 0; i < nd && k < sizeof want; i++)
            k += (size_t)snprintf(want + k, sizeof want - k, "%s%lld", i ? ", " : "", (long long)dims[i]);
        if (k < sizeof want)
            snprintf(want + k, sizeof want - k, "] U8");
        return mk_err(MK_E_FORMAT, "tensor '%s': expected %s, found %s", name, want,
                      shape_str(t, got, sizeof got));
    }
    *out = t;
    return MK_OK;
}

/* Expert e of an MXFP4 pair (blocks [E, R, cols/32, 16], scales [E, R, cols/32]). */
static mk_status mx_view(mk_ld *ld, const mk_tensor_info *tb, const mk_tensor_info *ts, int64_t e,
                         int64_t R, int64_t cols, mk_wloc *loc, mk_wt *w) {
    uint64_t nb = (uint64_t)(R * cols / 2), ns = (uint64_t)(R * cols / 32);
    *w = (mk_wt){.fmt = MK_WF_MXFP4, .rows = R, .cols = cols, .bits = 4, .group = 32,
                 .global_scale = 1.0f};
    memset(loc, 0, sizeof *loc);
    loc->q = *w;
    loc->part[MK_SP_WEIGHT] = (mk_wloc_part){tb->shard, tb->file_offset + (uint64_t)e * nb, nb};
    loc->part[MK_SP_SCALES] = (mk_wloc_part){ts->shard, ts->file_offset + (uint64_t)e * ns, ns};
    ld->m->expert_bytes += nb + ns;
    ld->seen_mx = true;
    if (ld->check_only) {
        w->data = w->scales = k_dummy;
        return mk_wt_check(w, tb->name);
    }
    const uint8_t *b = mk_ckpt_data(ld->ck, tb), *s = mk_ckpt_data(ld->ck, ts);
    if (!b || !s)
        return mk_err(MK_E_INTERNAL, "tensor '%s': checkpoint is not memory-mapped", tb->name);
    w->data = b + (uint64_t)e * nb;
    w->scales = s + (uint64_t)e * ns;
    return mk_wt_check(w, tb->name);
}

static mk_status load_mxfp4(mk_ld *ld, const char *p, mk_moe_w *moe) {
    const mk_config *c = ld->cfg;
    int64_t H = c->hidden_size, I = c->moe_intermediate_size, E = c->num_experts;
    if (H % 32 || I % 32)
        return mk_err(MK_E_FORMAT, "config.json: MXFP4 experts need hidden_size (%lld) and "
                      "intermediate_size (%lld) divisible by 32", (long long)H, (long long)I);
    char n[4][320];
    snprintf(n[0], sizeof n[0], "%s.mlp.experts.gate_up_proj_blocks", p);
    snprintf(n[1], sizeof n[1], "%s.mlp.experts.gate_up_proj_scales", p);
    snprintf(n[2], sizeof n[2], "%s.mlp.experts.down_proj_blocks", p);
    snprintf(n[3], sizeof n[3], "%s.mlp.experts.down_proj_scales", p);
    const mk_tensor_info *t[4];
    int64_t d0[] = {E, 2 * I, H / 32, 16}, d1[] = {E, 2 * I, H / 32};
    int64_t d2[] = {E, H, I / 32, 16}, d3[] = {E, H, I / 32};
    MK_TRY(need_u8(ld, n[0], 4, d0, &t[0]));
    MK_TRY(need_u8(ld, n[1], 3, d1, &t[1]));
    MK_TRY(need_u8(ld, n[2], 4, d2, &t[2]));
    MK_TRY(need_u8(ld, n[3], 3, d3, &t[3]));
    for (int64_t e = 0; e < E; e++) {
        mk_expert *x = &moe->experts[e];
        MK_TRY(mx_view(ld, t[0], t[1], e, 2 * I, H, loc_of(ld, moe, e, 0), &x->gate));
        memset(loc_of(ld, moe, e, 1), 0, sizeof(mk_wloc)); /* no separate up */
        MK_TRY(mx_view(ld, t[2], t[3], e, H, I, loc_of(ld, moe, e, 2), &x->down));
    }
    return MK_OK;
}

/* transformers' [E, in, out] float tensor -> per expert [out, in] copies,
 * or, streamed, per expert the location of its [in, out] block. */
static mk_status load_transposed(mk_ld *ld, const char *name, int64_t E, int64_t in, int64_t out,
                                 mk_moe_w *moe, int j) {
    const mk_tensor_info *t = mk_ckpt_find(ld->ck, name);
    if (!t)
        return mk_err(MK_E_FORMAT, "%s: tensor '%s' not found", mk_ckpt_dir(ld->ck), name);
    mk_wfmt fmt = t->dtype == MK_DT_BF16 ? MK_WF_BF16
                  : t->dtype == MK_DT_F16 ? MK_WF_F16
                  : t->dtype == MK_DT_F32 ? MK_WF_F32
                                          : MK_WF_COUNT;
    if (fmt == MK_WF_COUNT || t->ndim != 3 || t->shape[0] != E || t->shape[1] != in || t->shape[2] != out) {
        char got[96];
        return mk_err(MK_E_FORMAT, "tensor '%s': expected [%lld, %lld, %lld] BF16, F16 or F32 "
                      "(experts, in, out), found %s", name, (long long)E, (long long)in,
                      (long long)out, shape_str(t, got, sizeof got));
    }
    size_t es = mk_dtype_info(t->dtype)->bits / 8;
    uint64_t nb = (uint64_t)(out * in) * es; /* one expert's block */
    for (int64_t e = 0; e < E; e++) {
        mk_wt *w = j == 0 ? &moe->experts[e].gate : &moe->experts[e].down;
        *w = (mk_wt){.fmt = fmt, .rows = out, .cols = in, .global_scale = 1.0f, .data = k_dummy};
        if (ld->check_only)
            continue;
        if (moe->locs) { /* streamed: the view is never read (header comment) */
            mk_wloc *L = loc_of(ld, moe, e, j);
            memset(L, 0, sizeof *L);
            L->q = *w;
            L->q.data = NULL;
            L->part[MK_SP_WEIGHT] = (mk_wloc_part){t->shard, t->file_offset + (uint64_t)e * nb, nb};
            L->transposed = true;
            ld->m->expert_bytes += nb;
            continue;
        }
        const uint8_t *src = mk_ckpt_data(ld->ck, t);
        uint8_t *dst = mk_model_alloc(ld->m, (size_t)nb);
        if (!src)
            return mk_err(MK_E_INTERNAL, "tensor '%s': checkpoint is not memory-mapped", name);
        if (!dst)
            return mk_err(MK_E_NOMEM, "tensor '%s': no memory for expert %lld's [%lld, %lld] copy",
                          name, (long long)e, (long long)out, (long long)in);
        src += (size_t)e * (size_t)nb;
        for (int64_t r = 0; r < out; r++)
            for (int64_t c = 0; c < in; c++)
                memcpy(dst + (size_t)(r * in + c) * es, src + (size_t)(c * out + r) * es, es);
        w->data = dst;
    }
    return MK_OK;
}

static mk_status load_float(mk_ld *ld, const char *p, mk_moe_w *moe) {
    const mk_config *c = ld->cfg;
    int64_t H = c->hidden_size, I = c->moe_intermediate_size, E = c->num_experts;
    char n[320];
    snprintf(n, sizeof n, "%s.mlp.experts.gate_up_proj", p);
    MK_TRY(load_transposed(ld, n, E, H, 2 * I, moe, 0));
    if (moe->locs)
        for (int64_t e = 0; e < E; e++)
            memset(loc_of(ld, moe, e, 1), 0, sizeof(mk_wloc)); /* no separate up */
    snprintf(n, sizeof n, "%s.mlp.experts.down_proj", p);
    return load_transposed(ld, n, E, I, H, moe, 2);
}

static mk_status load_mlx(mk_ld *ld, const char *p, mk_moe_w *moe) {
    const mk_config *c = ld->cfg;
    int64_t H = c->hidden_size, I = c->moe_intermediate_size, E = c->num_experts;
    static const char *const nm[3] = {"gate_proj", "up_proj", "down_proj"};
    char mod[256], wn[300];
    for (int j = 0; j < 3; j++) {
        snprintf(mod, sizeof mod, "%s.mlp.experts.%s", p, nm[j]);
        snprintf(wn, sizeof wn, "%s.weight", mod);
        int64_t R = j == 2 ? H : I, cols = j == 2 ? I : H;
        for (int64_t e = 0; e < E; e++) {
            mk_expert *x = &moe->experts[e];
            ld->loc = loc_of(ld, moe, e, j);
            mk_status st = mk_ld_stacked(ld, mod, wn, E, e, R, 0, R, cols,
                                         j == 0 ? &x->gate : j == 1 ? &x->up : &x->down);
            ld->loc = NULL;
            MK_TRY(st);
        }
    }
    snprintf(mod, sizeof mod, "%s.mlp.experts.up_proj.bias", p);
    return mk_ld_vec(ld, mod, E * I, &moe->b_up);
}

mk_status mk_ld_oss_moe(mk_ld *ld, const char *p, int layer, mk_moe_w *moe, const char **kind) {
    const mk_config *c = ld->cfg;
    int64_t H = c->hidden_size, I = c->moe_intermediate_size, E = c->num_experts;
    char mod[256];
    snprintf(mod, sizeof mod, "%s.mlp.router", p);
    MK_TRY(mk_ld_linear(ld, mod, E, H, &moe->router));
    snprintf(mod, sizeof mod, "%s.mlp.router.bias", p);
    MK_TRY(mk_ld_vec(ld, mod, E, &moe->router_bias));
    moe->experts = mk_model_alloc(ld->m, (size_t)E * sizeof(mk_expert));
    if (!moe->experts)
        return mk_err(MK_E_NOMEM, "layer %d: no memory for %lld expert views", layer, (long long)E);
    if (ld->stream) {
        moe->locs = mk_model_alloc(ld->m, (size_t)E * sizeof(mk_expert_loc));
        if (!moe->locs)
            return mk_err(MK_E_NOMEM, "layer %d: no memory for %lld expert locations", layer,
                          (long long)E);
    }
    snprintf(mod, sizeof mod, "%s.mlp.experts.gate_proj", p);
    if (mk_ld_find(ld, "%s.weight", mod)) { /* MLX */
        *kind = "stacked";
        MK_TRY(load_mlx(ld, p, moe));
        snprintf(mod, sizeof mod, "%s.mlp.experts.gate_proj.bias", p);
        MK_TRY(mk_ld_vec(ld, mod, E * I, &moe->b_gate));
    } else {
        moe->fused_gu = true;
        if (mk_ld_find(ld, "%s.mlp.experts.gate_up_proj_blocks", p)) {
            *kind = "fused-mxfp4";
            MK_TRY(load_mxfp4(ld, p, moe));
        } else if (mk_ld_find(ld, "%s.mlp.experts.gate_up_proj", p)) {
            *kind = "fused";
            MK_TRY(load_float(ld, p, moe));
        } else {
            return mk_err(MK_E_FORMAT, "%s: layer %d: no routed experts found (expected "
                          "%s.mlp.experts.gate_up_proj[_blocks] (HF) or %s.mlp.experts.gate_proj.weight "
                          "(MLX))", mk_ckpt_dir(ld->ck), layer, p, p);
        }
        snprintf(mod, sizeof mod, "%s.mlp.experts.gate_up_proj_bias", p);
        MK_TRY(mk_ld_vec(ld, mod, E * 2 * I, &moe->b_gate));
    }
    snprintf(mod, sizeof mod, "%s.mlp.experts.%s", p, moe->fused_gu ? "down_proj_bias" : "down_proj.bias");
    return mk_ld_vec(ld, mod, E * H, &moe->b_down);
}
