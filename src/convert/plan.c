/* Planning the output: which tensors, named how, with which dtype and
 * shape, made of which pieces of which source modules, in which shard.
 *
 * Everything that depends on the output layout comes from the target's
 * descriptor (target.c; FORMATS.md section 3 for MLX): names (its naming
 * scheme), expert grouping (per expert; fused gate_up_proj (E,2I,H) =
 * [gate_e; up_e] per expert and down_proj (E,H,I); or stacked into
 * switch_mlp (E,out,in) one expert piece after another), the norm
 * convention (+1 / -1 on zero-centred norms where source and target
 * differ), the conv1d shape ((C,1,K) or (C,K,1): same bytes, only the shape
 * changes), what a text-only target drops (vision tower and MTP unless
 * kept, rotary inv_freq, a tied lm_head), and whether quantized modules
 * stay quantized (compressed-tensors INT4 repacked: weight and scales
 * copied byte for byte, biases = -scale * zero point; MLX modules copied
 * as they are) or are dequantized.
 * A piece whose bytes need no change is a COPY (copy_file_range at
 * execution); that is the byte-exactness guarantee. The plan is sorted and
 * cut into shards exactly as the target's writer orders a file (writer.h;
 * safetensors: alignment, then name), so each shard can be written by its
 * own writer and a crash loses at most the shard in progress.
 * Packed (--pack-experts): experts are written one by one, each expert's
 * outputs together and the experts first, expert-major, with shards cut
 * only between experts and before the first other tensor (packed_order,
 * unit_end, cut_shards); the writer starts each
 * data buffer at a 4 KiB boundary, so experts whose sizes are multiples of
 * 4 KiB all start aligned (pack_report counts them). Pieces are regions of
 * source modules as always, so the reorder costs no memory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "core/alloc.h"
#include "convert/conv_impl.h"
#include "convert/gguf.h"
#include "convert/target.h"

#define CV_DEFAULT_SHARD (5ull << 30)

typedef struct pctx {
    const cv_src *s;
    const mk_conv_opts *o;
    const cv_target *t;
    cv_plan *p;
    size_t cap;
    cv_norms norms;   /* the target's conventions, but see pack_conventions */
    cv_conv1d conv1d;
} pctx;

/* Output name of canonical cname under the target's naming (malloc'd). */
static char *out_name(const pctx *c, mk_part part, const char *cname) {
    if (c->t->gguf)
        return cv_gguf_name(c->s, cname); /* every name was checked to exist (cv_gguf_check_names) */
    return mk_layout_out_name(c->t->naming, c->s->cfg.arch == MK_ARCH_QWEN3_5_MOE, c->s->vl, part, cname);
}

static cv_out *new_out(pctx *c, char *name, mk_dtype dt, int ndim, const int64_t *shape) {
    if (!name)
        return NULL;
    if (c->p->nouts == c->cap) {
        size_t nc = c->cap ? 2 * c->cap : 256;
        cv_out *no = mk_realloc(c->p->outs, nc * sizeof *no);
        if (!no) {
            free(name);
            return NULL;
        }
        c->p->outs = no;
        c->cap = nc;
    }
    cv_out *o = &c->p->outs[c->p->nouts++];
    memset(o, 0, sizeof *o);
    o->name = name;
    o->dt = dt;
    o->ndim = ndim;
    memcpy(o->shape, shape, (size_t)ndim * sizeof *shape);
    return o;
}

static mk_status push_piece(cv_out *o, const cv_piece *pc) {
    cv_piece *np = mk_realloc(o->pc, (size_t)(o->npc + 1) * sizeof *np);
    if (!np)
        return mk_err(MK_E_NOMEM, "output '%s': no memory for %d source pieces", o->name, o->npc + 1);
    o->pc = np;
    np[o->npc] = *pc;
    np[o->npc].out_off = o->nbytes;
    o->nbytes += pc->nbytes;
    o->npc++;
    return MK_OK;
}

/* dtype of a float output made from logical tensor lt. */
static mk_dtype float_dt(const pctx *c, const cv_lt *lt) {
    const cv_mod *m = lt->mod;
    if (m->kind == CV_RAW)
        return m->vdt;
    bool dequant = m->kind != CV_FLOAT;
    if (mk_layout_keeps_dtype(lt->cname) && !dequant)
        return m->vdt;
    if (c->o->dtype != MK_DT_INVALID)
        return c->o->dtype;
    return dequant ? MK_DT_BF16 : m->vdt;
}

mk_status cv_float_piece(const cv_lt *lt, mk_dtype dt, float add, cv_piece *pc) {
    const cv_mod *m = lt->mod;
    memset(pc, 0, sizeof *pc);
    pc->mod = m;
    pc->row0 = lt->row0;
    pc->nrows = lt->nrows;
    pc->dt = dt;
    pc->add = add;
    pc->ocols = m->cols;
    pc->part = CV_T_MAIN;
    switch (m->kind) {
    case CV_FLOAT: pc->op = (m->vdt == dt && add == 0.0f) ? CV_OP_COPY : CV_OP_FLOAT; break;
    case CV_RAW:
        if (m->vdt != dt)
            return mk_err(MK_E_INTERNAL, "convert: integer tensor '%s' planned as %s", m->name, mk_dtype_name(dt));
        pc->op = CV_OP_COPY;
        break;
    case CV_FP8: pc->op = CV_OP_FP8; break;
    case CV_CT: pc->op = CV_OP_CT; break;
    case CV_MLX: pc->op = m->group < 0 ? CV_OP_FPDQ : CV_OP_AFFINE; break; /* FPDQ: decode.c */
    }
    if (pc->op == CV_OP_COPY)
        pc->nbytes = (uint64_t)lt->nrows * (m->t[CV_T_MAIN]->nbytes / (uint64_t)m->rows);
    else
        pc->nbytes = (uint64_t)lt->nrows * (uint64_t)m->cols * cv_esize(dt);
    return MK_OK;
}

/* Append the float values of lt (dequantized / re-encoded as needed). */
static mk_status float_piece(cv_out *o, const cv_lt *lt, float add) {
    cv_piece pc;
    MK_TRY(cv_float_piece(lt, o->dt, add, &pc));
    return push_piece(o, &pc);
}

/* Byte copy of tensor `part` of the module rows of lt. */
static mk_status copy_piece(cv_out *o, const cv_lt *lt, int part) {
    const cv_mod *m = lt->mod;
    cv_piece pc = {0};
    pc.op = CV_OP_COPY;
    pc.part = (unsigned char)part;
    pc.mod = m;
    pc.row0 = lt->row0;
    pc.nrows = lt->nrows;
    pc.dt = o->dt;
    pc.nbytes = (uint64_t)lt->nrows * (m->t[part]->nbytes / (uint64_t)m->rows);
    return push_piece(o, &pc);
}

static mk_status bias_piece(cv_out *o, const cv_lt *lt) {
    cv_piece pc = {0};
    pc.op = CV_OP_CT_BIAS;
    pc.mod = lt->mod;
    pc.row0 = lt->row0;
    pc.nrows = lt->nrows;
    pc.dt = o->dt;
    pc.ocols = lt->mod->cols / lt->mod->group;
    pc.nbytes = (uint64_t)lt->nrows * (uint64_t)pc.ocols * cv_esize(o->dt);
    return push_piece(o, &pc);
}

/* ------------------------------------------------------- MLX quantized */

/* weight/scales/biases outputs of a quantized module (n = 1 logical
 * tensor, or the n experts of a stacked projection). `wname` ends in
 * ".weight". MLX sources are copied; compressed-tensors repacked. */
static mk_status quant_outputs(pctx *c, char *wname, const cv_lt *const *lts, int n, bool stacked) {
    const cv_mod *m0 = lts[0]->mod;
    const mk_tensor_info *sc = m0->t[CV_T_SCALE];
    int group = m0->group < 0 ? -m0->group : m0->group;
    /* one 3-D module (gpt_oss's MLX stacks mlp.experts.<proj> [E, out, in])
     * keeps its expert dimension, as mlx-lm's SwitchLinear loads it */
    bool three = stacked || (n == 1 && lts[0]->ndim == 3);
    int64_t ne = stacked ? n : three ? lts[0]->shape[0] : 1;
    int64_t out = three && !stacked ? lts[0]->shape[1] : lts[0]->nrows, in = m0->cols;
    int64_t ws[3] = {ne, out, in * m0->bits / 32}, ss[3] = {ne, out, in / group};
    const int nd = three ? 3 : 2, off = three ? 0 : 1;
    size_t wl = strlen(wname) - strlen(".weight");
    char *sname = cv_printf("%.*s.scales", (int)wl, wname), *bname = cv_printf("%.*s.biases", (int)wl, wname);
    char *qpath = cv_printf("%.*s", (int)wl, wname);
    bool has_b = m0->kind == CV_CT || m0->t[CV_T_BIAS];
    cv_out *ow = new_out(c, wname, MK_DT_U32, nd, ws + off);
    size_t iw = c->p->nouts - 1;
    cv_out *os = ow ? new_out(c, sname, sc->dtype, nd, ss + off) : NULL;
    cv_out *ob = os && has_b ? new_out(c, bname, sc->dtype, nd, ss + off) : NULL;
    if (!has_b)
        free(bname);
    if (!ow || !os || (has_b && !ob) || !qpath) {
        free(qpath);
        return mk_err(MK_E_NOMEM, "module '%s': no memory for its quantized outputs (weight, scales, biases)",
                      m0->name);
    }
    ow = &c->p->outs[iw]; /* new_out may have moved the array */
    os = &c->p->outs[iw + 1];
    ob = has_b ? &c->p->outs[iw + 2] : NULL;
    ow->qpath = qpath;
    ow->qbits = m0->bits;
    ow->qgroup = group;
    /* MLX's float-scale modes by (bits, group): mxfp4 4/32, mxfp8 8/32, nvfp4 4/16 */
    ow->qmode = m0->group >= 0 ? NULL : m0->bits == 8 ? "mxfp8" : group == 16 ? "nvfp4" : "mxfp4";
    for (int e = 0; e < n; e++) {
        const cv_lt *lt = lts[e];
        if (lt->mod->kind != m0->kind || lt->mod->bits != m0->bits || lt->mod->group != m0->group ||
            lt->mod->t[CV_T_SCALE]->dtype != sc->dtype)
            return mk_err(MK_E_FORMAT, "'%s' and '%s' are quantized differently and cannot be stacked into '%s'",
                          lt->mod->name, m0->name, ow->name);
        MK_TRY(copy_piece(ow, lt, CV_T_MAIN));
        MK_TRY(copy_piece(os, lt, CV_T_SCALE));
        if (ob)
            MK_TRY(m0->kind == CV_CT ? bias_piece(ob, lt) : copy_piece(ob, lt, CV_T_BIAS));
    }
    if (m0->kind == CV_CT) {
        c->p->quantized = true;
        c->p->q_bits = m0->bits;
        c->p->q_group = group;
    }
    return MK_OK;
}

/* ---------------------------------------------------------- per target */

/* Left out of a text-only target. */
static bool dropped(const pctx *c, const cv_lt *lt) {
    if (!c->t->text_only)
        return false;
    if (lt->cls == MK_PART_VISION && !c->o->keep_vision)
        return true;
    if (lt->cls == MK_PART_MTP && !c->o->keep_mtp)
        return true;
    if (cv_ends_with(lt->cname, "rotary_emb.inv_freq"))
        return true;
    return c->s->cfg.tie_word_embeddings && strcmp(lt->cname, "lm_head.weight") == 0;
}

/* qwen3next's in_proj_qkvz for GGUF (conversion/qwen.py): its rows are,
 * per key head g, [q (dk), k (dk), v (r dv), z (r dv)] with r = value
 * heads per key head; llama.cpp wants attn_qkv = every head's q, then
 * every k, then every v, and attn_gate = the z rows: row pieces of the
 * same module in that order (no data moves at planning). */
static mk_status gguf_qkvz_outputs(pctx *c, const cv_lt *lt, char *qkv_name) {
    const mk_config *cf = &c->s->cfg;
    const int nk = cf->lin_num_k_heads, nv = cf->lin_num_v_heads, dk = cf->lin_k_head_dim, dv = cf->lin_v_head_dim;
    const int64_t vz = nk > 0 ? (int64_t)nv / nk * dv : 0, per = 2 * (int64_t)dk + 2 * vz;
    if (nk <= 0 || nv % nk || lt->ndim != 2 || lt->shape[0] != per * nk) {
        free(qkv_name);
        return mk_err(MK_E_FORMAT, "'%s': shape [%lld, %lld], expected [%lld, hidden] from linear_num_key_heads %d, "
                      "linear_num_value_heads %d, linear_key_head_dim %d, linear_value_head_dim %d",
                      lt->mod->name, (long long)lt->shape[0], (long long)lt->shape[1], (long long)(per * nk), nk, nv,
                      dk, dv);
    }
    char *gate_name = cv_printf("%.*s.attn_gate.weight", (int)(strstr(qkv_name, ".attn_qkv") - qkv_name), qkv_name);
    int64_t sq[2] = {nk * (2 * (int64_t)dk + vz), lt->shape[1]}, sz[2] = {nk * vz, lt->shape[1]};
    mk_dtype dt = float_dt(c, lt);
    cv_out *o = new_out(c, qkv_name, dt, 2, sq);
    size_t iq = c->p->nouts - 1;
    cv_out *z = o ? new_out(c, gate_name, dt, 2, sz) : NULL;
    if (!o || !z)
        return mk_err(MK_E_NOMEM, "'%s': no memory for its attn_qkv / attn_gate outputs", lt->mod->name);
    o = &c->p->outs[iq];
    /* (offset within a head's rows, rows) of q, k, v, then z */
    const int64_t off[4] = {0, dk, 2 * (int64_t)dk, 2 * (int64_t)dk + vz}, len[4] = {dk, dk, vz, vz};
    for (int part = 0; part < 4; part++)
        for (int g = 0; g < nk; g++) {
            cv_lt sub = *lt;
            sub.row0 = lt->row0 + g * per + off[part];
            sub.nrows = len[part];
            MK_TRY(float_piece(part < 3 ? o : z, &sub, 0.0f));
        }
    return MK_OK;
}

/* qwen3_5_moe's Gated DeltaNet rows for GGUF (conversion/qwen.py
 * _LinearAttentionVReorderBase): the value-head rows, from `first` on in
 * blocks of hd rows, go from grouped by key head (block g * r + j) to
 * tiled (j * nk + g), so ggml can broadcast key heads over value heads:
 * in_proj_qkv's v rows, in_proj_z, in_proj_a / in_proj_b (hd 1), conv1d's
 * v channels. Row pieces of the source: no data moves at planning. Their
 * columns (out_proj) and 1-D A_log / dt_bias are reordered by the GGQ
 * operation (cv_piece.vr_*, gguf_retype). */
static mk_status gguf_vrows_output(pctx *c, const cv_lt *lt, char *name, int64_t first, int64_t hd) {
    const mk_config *cf = &c->s->cfg;
    const int64_t nk = cf->lin_num_k_heads, r = nk > 0 ? cf->lin_num_v_heads / nk : 0;
    int64_t shape[MK_MAX_DIMS];
    memcpy(shape, lt->shape, sizeof shape);
    if (r <= 0 || lt->nrows != first + nk * r * hd) {
        free(name);
        return mk_err(MK_E_FORMAT, "'%s': %lld rows, expected %lld + %lld value heads x %lld", lt->mod->name,
                      (long long)lt->nrows, (long long)first, (long long)(nk * r), (long long)hd);
    }
    cv_out *o = new_out(c, name, float_dt(c, lt), lt->ndim, shape);
    if (!o)
        return mk_err(MK_E_NOMEM, "tensor '%s': no memory for its output", lt->cname);
    float add = cv_norm_shift(c->s, lt, c->norms);
    if (first > 0) {
        cv_lt sub = *lt;
        sub.nrows = first;
        MK_TRY(float_piece(o, &sub, add));
    }
    for (int64_t b = 0; b < nk * r; b++) {
        int64_t g = b % nk, j = b / nk;
        cv_lt sub = *lt;
        sub.row0 = lt->row0 + first + (g * r + j) * hd;
        sub.nrows = hd;
        MK_TRY(float_piece(o, &sub, add));
    }
    return MK_OK;
}

/* DeepSeek's kv_b_proj for GGUF (conversion/deepseek.py): per head h its
 * rows are [k_nope (nope), v (vd)] x kv_lora_rank; llama.cpp's MLA wants
 * attn_k_b (H, kv_lora, nope), each head's k rows transposed (a GGQ piece
 * with tr, run as one unit), and attn_v_b (H, vd, kv_lora), row pieces. */
static mk_status gguf_kvb_outputs(pctx *c, const cv_lt *lt, char *kb_name) {
    const mk_config *cf = &c->s->cfg;
    const int64_t H = cf->num_heads, nope = cf->qk_nope_head_dim, vd = cf->v_head_dim, L = lt->shape[1];
    if (lt->ndim != 2 || H <= 0 || lt->shape[0] != H * (nope + vd)) {
        free(kb_name);
        return mk_err(MK_E_FORMAT, "'%s': shape [%lld, %lld], expected [%lld, kv_lora_rank] from num_attention_heads "
                      "%lld x (qk_nope_head_dim %lld + v_head_dim %lld)", lt->mod->name, (long long)lt->shape[0],
                      (long long)lt->shape[1], (long long)(H * (nope + vd)), (long long)H, (long long)nope, (long long)vd);
    }
    char *vb_name = cv_printf("%.*s.attn_v_b.weight", (int)(strstr(kb_name, ".attn_k_b") - kb_name), kb_name);
    int64_t sk[3] = {H, L, nope}, sv[3] = {H, vd, L};
    mk_dtype dt = float_dt(c, lt);
    cv_out *k = new_out(c, kb_name, dt, 3, sk);
    size_t ik = c->p->nouts - 1;
    cv_out *v = k ? new_out(c, vb_name, dt, 3, sv) : NULL;
    if (!k || !v)
        return mk_err(MK_E_NOMEM, "'%s': no memory for its attn_k_b / attn_v_b outputs", lt->mod->name);
    k = &c->p->outs[ik];
    for (int64_t h = 0; h < H; h++) {
        cv_lt sub = *lt;
        sub.row0 = lt->row0 + h * (nope + vd);
        sub.nrows = nope;
        MK_TRY(float_piece(k, &sub, 0.0f));
        k->pc[k->npc - 1].tr = 1; /* gguf_retype turns it into the transposing GGQ */
        sub.row0 += nope;
        sub.nrows = vd;
        MK_TRY(float_piece(v, &sub, 0.0f));
    }
    return MK_OK;
}

/* Does a quantized source module stay quantized (copied or repacked, never
 * requantized)? Converting: every one (CT INT4, MLX). Quantizing:
 * compressed-tensors INT4, the format of quantization-aware checkpoints
 * (Kimi K2's INT4): its codes were trained, and requantizing them from
 * their dequantization could only lose. MLX-quantized sources are still
 * requantized (a change of width is what quantizing one asks for). */
static bool keeps_quant(const pctx *c, const cv_mod *m) {
    if (!c->o->quant)
        return m->kind == CV_CT || m->kind == CV_MLX;
    /* gpt_oss's MXFP4 experts in MLX form are the released quantization-
     * aware weights too (mlp.experts.<proj>, mxfp4 4-bit g32) */
    return m->kind == CV_CT || (c->s->cfg.arch == MK_ARCH_GPT_OSS && m->kind == CV_MLX && m->bits == 4 &&
                                m->group == -32 && strstr(m->name, ".mlp.experts.") != NULL);
}

static mk_status plain_output(pctx *c, const cv_lt *lt) {
    const cv_src *s = c->s;
    char *name = out_name(c, lt->cls, lt->cname);
    if (!name)
        return mk_err(MK_E_NOMEM, "tensor '%s': no memory for its output name", lt->cname);
    if (c->t->gguf && cv_ends_with(lt->cname, "linear_attn.in_proj_qkvz.weight"))
        return gguf_qkvz_outputs(c, lt, name);
    if (c->t->gguf && cv_ends_with(lt->cname, "self_attn.kv_b_proj.weight"))
        return gguf_kvb_outputs(c, lt, name);
    if (c->t->gguf && s->cfg.arch == MK_ARCH_QWEN3_5_MOE && s->cfg.lin_num_v_heads != s->cfg.lin_num_k_heads) {
        const mk_config *cf = &s->cfg;
        const int64_t qk = 2 * (int64_t)cf->lin_num_k_heads * cf->lin_k_head_dim;
        if (cv_ends_with(lt->cname, "linear_attn.in_proj_qkv.weight") || cv_ends_with(lt->cname, "linear_attn.conv1d.weight"))
            return gguf_vrows_output(c, lt, name, qk, cf->lin_v_head_dim);
        if (cv_ends_with(lt->cname, "linear_attn.in_proj_z.weight"))
            return gguf_vrows_output(c, lt, name, 0, cf->lin_v_head_dim);
        if (cv_ends_with(lt->cname, "linear_attn.in_proj_a.weight") || cv_ends_with(lt->cname, "linear_attn.in_proj_b.weight"))
            return gguf_vrows_output(c, lt, name, 0, 1);
    }
    /* quantizing: compressed-tensors INT4 (quantization-aware checkpoints)
     * passes through as `--to mlx` writes it; other quantized sources are
     * dequantized, then quantized anew */
    if (c->t->keeps_quantized && keeps_quant(c, lt->mod)) {
        if (!cv_ends_with(name, ".weight")) {
            mk_status st = mk_err(MK_E_FORMAT, "quantized module '%s' is not a .weight", lt->mod->name);
            free(name);
            return st;
        }
        const cv_lt *one[1] = {lt};
        return quant_outputs(c, name, one, 1, false);
    }
    int64_t shape[MK_MAX_DIMS];
    memcpy(shape, lt->shape, sizeof shape);
    float add = 0.0f;
    if (lt->cls != MK_PART_VISION) {
        /* conv1d: MLX wants (C, K, 1), HF (C, 1, K); identical bytes */
        if (lt->ndim == 3 && cv_ends_with(lt->cname, "conv1d.weight")) {
            if (c->conv1d == CV_CONV1D_CK1 && shape[2] != 1) {
                shape[1] = lt->shape[2];
                shape[2] = 1;
            } else if (c->conv1d == CV_CONV1D_C1K && shape[2] == 1 && shape[1] != 1) {
                shape[2] = lt->shape[1];
                shape[1] = 1;
            }
        }
        add = cv_norm_shift(s, lt, c->norms);
    }
    cv_out *o = new_out(c, name, float_dt(c, lt), lt->ndim, shape);
    if (!o)
        return mk_err(MK_E_NOMEM, "tensor '%s': no memory for its output", lt->cname);
    return float_piece(o, lt, add);
}

/* A bare file's tensor (quantize): its name, dtype and bytes unchanged. */
static mk_status bare_output(pctx *c, const cv_lt *lt) {
    cv_out *o = new_out(c, cv_strdup(lt->cname), lt->mod->vdt, lt->ndim, lt->shape);
    return o ? float_piece(o, lt, 0.0f)
             : mk_err(MK_E_NOMEM, "tensor '%s': no memory for its output", lt->cname);
}

/* The group's experts pass through quantized (compressed-tensors INT4
 * repacked to MLX affine by quantize): not the quant plan's to split. */
static bool group_kept_quant(const pctx *c, const cv_egroup *g) {
    if (!c->t->keeps_quantized)
        return false;
    for (int p = 0; p < 3; p++)
        if (!keeps_quant(c, g->proj[p][0].mod))
            return false;
    return true;
}

static mk_status group_outputs(pctx *c, const cv_egroup *g) {
    cv_lt probe = {.cname = g->mlp, .cls = g->cls};
    if (dropped(c, &probe))
        return MK_OK;
    const cv_lt *lt0 = &g->proj[MK_PROJ_GATE][0];
    int64_t I = lt0->shape[0], H = lt0->shape[1];
    c->p->nstacked++;
    const cv_lt **v = mk_malloc((size_t)g->n * 2 * sizeof *v);
    if (!v)
        return mk_err(MK_E_NOMEM, "'%s': no memory for a table of %d experts", g->mlp, g->n);
    mk_status st = MK_OK;
    cv_xgroup xg = cv_target_experts(c->t, c->o);
    int gi = (int)(g - c->s->groups) + 1;
    /* packed: one output per expert and projection, so that an expert's
     * tensors can lie together; quantize splits the switch_mlp stacks it
     * quantizes (quant_plan.c) so that quantization choices stay the
     * stacked ones, and writes experts it passes through quantized one by
     * one here (they were left stacked, so a CT-INT4 source's quantize
     * --pack-experts packed nothing) */
    if (c->p->packed && (!c->o->quant || group_kept_quant(c, g)))
        xg = CV_XG_PER_EXPERT;
    if (xg == CV_XG_PER_EXPERT) {
        for (int e = 0; st == MK_OK && e < g->n; e++) {
            size_t first = c->p->nouts;
            for (int p = 0; st == MK_OK && p < 3; p++)
                st = plain_output(c, &g->proj[p][e]);
            for (size_t i = first; st == MK_OK && i < c->p->nouts; i++) {
                c->p->outs[i].xg = gi;
                c->p->outs[i].xe = e;
            }
        }
    } else if (xg == CV_XG_FUSED) {
        /* fused: gate_up_proj (E, 2I, H) = [gate_e; up_e], down_proj (E, H, I) */
        int64_t gu[3] = {g->n, 2 * I, H}, dn[3] = {g->n, H, I};
        char *n1 = cv_printf("%s.experts.gate_up_proj", g->mlp), *n2 = cv_printf("%s.experts.down_proj", g->mlp);
        char *o1 = n1 ? out_name(c, g->cls, n1) : NULL;
        char *o2 = n2 ? out_name(c, g->cls, n2) : NULL;
        free(n1);
        free(n2);
        cv_out *a = new_out(c, o1, float_dt(c, lt0), 3, gu);
        size_t ia = c->p->nouts - 1;
        cv_out *b = a ? new_out(c, o2, float_dt(c, &g->proj[MK_PROJ_DOWN][0]), 3, dn) : (free(o2), NULL);
        if (!a || !b)
            st = mk_err(MK_E_NOMEM, "'%s': no memory for its fused expert outputs", g->mlp);
        a = st == MK_OK ? &c->p->outs[ia] : NULL;
        for (int e = 0; st == MK_OK && e < g->n; e++) {
            st = float_piece(a, &g->proj[MK_PROJ_GATE][e], 0.0f);
            if (st == MK_OK)
                st = float_piece(a, &g->proj[MK_PROJ_UP][e], 0.0f);
            if (st == MK_OK)
                st = float_piece(&c->p->outs[ia + 1], &g->proj[MK_PROJ_DOWN][e], 0.0f);
        }
    } else { /* CV_XG_SWITCH */
        for (int p = 0; st == MK_OK && p < 3; p++) {
            const cv_lt *lp = &g->proj[p][0];
            char *nm = cv_printf("%s.switch_mlp.%s.weight", g->mlp, mk_layout_proj_names[p]);
            char *on = nm ? out_name(c, g->cls, nm) : NULL;
            free(nm);
            if (!on) {
                st = mk_err(MK_E_NOMEM, "'%s': no memory for the name of its stacked %s output", g->mlp,
                            mk_layout_proj_names[p]);
                break;
            }
            for (int e = 0; e < g->n; e++)
                v[e] = &g->proj[p][e];
            if (c->t->keeps_quantized && keeps_quant(c, lp->mod)) {
                st = quant_outputs(c, on, v, g->n, true);
                continue;
            }
            int64_t shape[3] = {g->n, lp->shape[0], lp->shape[1]};
            cv_out *o = new_out(c, on, float_dt(c, lp), 3, shape);
            if (!o)
                st = mk_err(MK_E_NOMEM, "'%s': no memory for its stacked %s output", g->mlp,
                            mk_layout_proj_names[p]);
            else {
                o->xg = gi; /* a stack quantize splits per expert when packing */
                o->xe = -1;
            }
            for (int e = 0; st == MK_OK && e < g->n; e++)
                st = float_piece(o, v[e], 0.0f);
        }
    }
    free(v);
    return st;
}

/* ------------------------------------------------------------ gpt_oss */

/* gpt_oss's routed experts between transformers' layouts and MLX's, byte
 * for byte (gather.c). transformers: <P>gate_up_proj (E, H, 2I) and
 * down_proj (E, I, H) floats, or as released gate_up_proj_blocks (E, 2I,
 * H/32, 16) / _scales (E, 2I, H/32) and down_proj_blocks / _scales in
 * MXFP4, with gate_up_proj_bias (E, 2I) / down_proj_bias (E, H); gate and
 * up interleaved (gate j at 2j, up j at 2j + 1). MLX (mlx-lm gpt_oss
 * sanitize): <P>{gate,up,down}_proj.weight (E, out, in) (U32 words of the
 * same E2M1 bytes when MXFP4, with .scales) and .bias. Other directions
 * (HF -> HF, MLX -> MLX) are plain copies. <P> = "<layer>.mlp.experts.". */
typedef struct oss_gather {
    const cv_lt *a, *b;      /* b: zipped second source, or NULL */
    int part;                /* CV_T_MAIN or CV_T_SCALE (both sources) */
    uint64_t base, rstep, cstep;
    uint32_t blk;
    int64_t ncols, nrows;
} oss_gather;

static mk_status oss_piece(cv_out *o, const oss_gather *g) {
    cv_piece pc = {0};
    pc.op = CV_OP_GATHER;
    pc.part = (unsigned char)g->part;
    pc.g_part2 = (unsigned char)g->part;
    pc.dt = o->dt;
    pc.mod = g->a->mod;
    pc.g_mod2 = g->b ? g->b->mod : NULL;
    pc.row0 = 0;
    pc.nrows = g->nrows;
    pc.g_base = g->base;
    pc.g_rstep = g->rstep;
    pc.g_cstep = g->cstep;
    pc.g_blk = g->blk;
    pc.g_ncols = g->ncols;
    pc.ocols = (int64_t)cv_gather_row_bytes(&pc);
    pc.nbytes = (uint64_t)g->nrows * cv_gather_row_bytes(&pc);
    return push_piece(o, &pc);
}

static cv_out *oss_out(pctx *c, const cv_lt *lt, const char *stem, const char *leaf, mk_dtype dt, int ndim,
                       const int64_t *shape) {
    char *cn = cv_printf("%s%s", stem, leaf);
    char *nm = cn ? out_name(c, lt->cls, cn) : NULL;
    free(cn);
    return new_out(c, nm, dt, ndim, shape);
}

static const cv_lt *oss_partner(const pctx *c, const char *stem, const char *leaf) {
    size_t n = strlen(stem);
    for (size_t i = 0; i < c->s->nlts; i++) {
        const char *cn = c->s->lts[i].cname;
        if (!strncmp(cn, stem, n) && !strcmp(cn + n, leaf))
            return &c->s->lts[i];
    }
    return NULL;
}

/* The MLX .weight output o of an MXFP4 expert stack: its module (the name
 * without ".weight") is mxfp4 4-bit g32, which quantize's config block
 * states per module (quant_plan.c; a plain convert writes one mxfp4
 * block). */
static mk_status oss_mark_mxfp4(cv_out *o) {
    size_t n = strlen(o->name) - (cv_ends_with(o->name, ".weight") ? strlen(".weight") : 0);
    o->qpath = cv_printf("%.*s", (int)n, o->name);
    o->qbits = 4;
    o->qgroup = 32;
    o->qmode = "mxfp4";
    return o->qpath ? MK_OK : mk_err(MK_E_NOMEM, "'%s': no memory for its module path", o->name);
}

static bool oss_mxfp4_mod(const cv_mod *m) { return m->kind == CV_MLX && m->bits == 4 && m->group == -32; }

/* Interleave two rows-of-RB sources (gate, up) into one: rows r of a, b. */
static mk_status oss_zip_rows(pctx *c, cv_out *o, const cv_lt *a, const cv_lt *b, int part, uint64_t rb,
                              int64_t rows) {
    (void)c;
    oss_gather g = {a, b, part, 0, rb, 0, (uint32_t)rb, 1, rows};
    return oss_piece(o, &g);
}

static mk_status oss_to_mlx(pctx *c, const cv_lt *lt, const char *stem, const char *leaf, bool *done) {
    int64_t E = c->s->cfg.num_experts, I = c->s->cfg.moe_intermediate_size, H = c->s->cfg.hidden_size;
    const cv_mod *m = lt->mod;
    const mk_tensor_info *t = m->t[CV_T_MAIN];
    size_t es = cv_is_float_dtype(m->vdt) ? cv_esize(m->vdt) : 1;
    bool gu_blocks = !strcmp(leaf, "gate_up_proj_blocks"), gu_scales = !strcmp(leaf, "gate_up_proj_scales");
    bool gu_bias = !strcmp(leaf, "gate_up_proj_bias"), gu = !strcmp(leaf, "gate_up_proj");
    bool dn = !strcmp(leaf, "down_proj"), dn_blocks = !strcmp(leaf, "down_proj_blocks");
    bool dn_scales = !strcmp(leaf, "down_proj_scales"), dn_bias = !strcmp(leaf, "down_proj_bias");
    if (!(gu_blocks || gu_scales || gu_bias || gu || dn || dn_blocks || dn_scales || dn_bias))
        return MK_OK;
    *done = true;
    if ((gu || dn) && c->o->dtype != MK_DT_INVALID && c->o->dtype != m->vdt)
        return mk_err(MK_E_UNSUPPORTED, "'%s': gpt_oss experts are rewritten byte for byte; --dtype %s would "
                      "re-encode them (convert without --dtype)", m->name, mk_dtype_name(c->o->dtype));
    if (gu_blocks || gu_scales || gu_bias) { /* de-interleave rows (blocks, scales) or elements (bias) */
        uint64_t rb = gu_bias ? es : t->nbytes / (uint64_t)(E * 2 * I);
        mk_dtype dt = gu_blocks ? MK_DT_U32 : gu_scales ? MK_DT_U8 : m->vdt;
        int64_t sh[3] = {E, I, gu_blocks ? (int64_t)rb / 4 : (int64_t)rb}, bsh[2] = {E, I};
        for (int k = 0; k < 2; k++) {
            const char *nl = gu_blocks ? (k ? "up_proj.weight" : "gate_proj.weight")
                             : gu_scales ? (k ? "up_proj.scales" : "gate_proj.scales")
                                         : (k ? "up_proj.bias" : "gate_proj.bias");
            cv_out *o = gu_bias ? oss_out(c, lt, stem, nl, dt, 2, bsh) : oss_out(c, lt, stem, nl, dt, 3, sh);
            if (!o)
                return mk_err(MK_E_NOMEM, "'%s': no memory for its MLX outputs", m->name);
            oss_gather g = {lt, NULL, CV_T_MAIN, (uint64_t)k * rb, 2 * rb, 0, (uint32_t)rb, 1, E * I};
            MK_TRY(oss_piece(o, &g));
            if (gu_blocks)
                MK_TRY(oss_mark_mxfp4(o));
        }
        if (gu_blocks)
            c->p->oss_mxfp4 = true;
        return MK_OK;
    }
    if (dn_blocks || dn_scales || dn_bias) { /* same bytes, MLX names and shapes */
        uint64_t rb = dn_bias ? es * (uint64_t)H : t->nbytes / (uint64_t)(E * H);
        int64_t sh[3] = {E, H, dn_blocks ? (int64_t)rb / 4 : (int64_t)rb}, bsh[2] = {E, H};
        cv_out *o = dn_bias ? oss_out(c, lt, stem, "down_proj.bias", m->vdt, 2, bsh)
                            : oss_out(c, lt, stem, dn_blocks ? "down_proj.weight" : "down_proj.scales",
                                      dn_blocks ? MK_DT_U32 : MK_DT_U8, 3, sh);
        if (!o)
            return mk_err(MK_E_NOMEM, "'%s': no memory for its MLX output", m->name);
        MK_TRY(copy_piece(o, lt, CV_T_MAIN));
        return dn_blocks ? oss_mark_mxfp4(o) : MK_OK;
    }
    if (gu) { /* (E, H, 2I) -> gate, up (E, I, H): de-interleave and transpose per expert */
        int64_t sh[3] = {E, I, H};
        for (int k = 0; k < 2; k++) {
            cv_out *o = oss_out(c, lt, stem, k ? "up_proj.weight" : "gate_proj.weight", m->vdt, 3, sh);
            if (!o)
                return mk_err(MK_E_NOMEM, "'%s': no memory for its MLX outputs", m->name);
            for (int64_t e = 0; e < E; e++) {
                oss_gather g = {lt, NULL, CV_T_MAIN, ((uint64_t)(e * H * 2 * I) + (uint64_t)k) * es, 2 * es,
                                (uint64_t)(2 * I) * es, (uint32_t)es, H, I};
                MK_TRY(oss_piece(o, &g));
            }
        }
        return MK_OK;
    }
    /* down (E, I, H) -> (E, H, I) */
    int64_t sh[3] = {E, H, I};
    cv_out *o = oss_out(c, lt, stem, "down_proj.weight", m->vdt, 3, sh);
    if (!o)
        return mk_err(MK_E_NOMEM, "'%s': no memory for its MLX output", m->name);
    for (int64_t e = 0; e < E; e++) {
        oss_gather g = {lt, NULL, CV_T_MAIN, (uint64_t)(e * I * H) * es, es, (uint64_t)H * es, (uint32_t)es, I, H};
        MK_TRY(oss_piece(o, &g));
    }
    return MK_OK;
}

static mk_status oss_to_hf(pctx *c, const cv_lt *lt, const char *stem, const char *leaf, bool *done) {
    int64_t E = c->s->cfg.num_experts, I = c->s->cfg.moe_intermediate_size, H = c->s->cfg.hidden_size;
    const cv_mod *m = lt->mod;
    size_t es = cv_is_float_dtype(m->vdt) ? cv_esize(m->vdt) : 1;
    bool gw = !strcmp(leaf, "gate_proj.weight"), gb = !strcmp(leaf, "gate_proj.bias");
    bool dw = !strcmp(leaf, "down_proj.weight"), db = !strcmp(leaf, "down_proj.bias");
    bool upw = !strcmp(leaf, "up_proj.weight"), upb = !strcmp(leaf, "up_proj.bias");
    if (!(gw || gb || dw || db || upw || upb))
        return MK_OK;
    *done = true;
    if (upw || upb)
        return MK_OK; /* zipped in with its gate */
    if (m->kind == CV_MLX && !oss_mxfp4_mod(m))
        return mk_err(MK_E_UNSUPPORTED, "'%s': gpt_oss experts quantized other than MXFP4 (bits %d, group %d) "
                      "have no transformers layout", m->name, m->bits, m->group < 0 ? -m->group : m->group);
    if ((gw || dw) && m->kind == CV_FLOAT && c->o->dtype != MK_DT_INVALID && c->o->dtype != m->vdt)
        return mk_err(MK_E_UNSUPPORTED, "'%s': gpt_oss experts are rewritten byte for byte; --dtype %s would "
                      "re-encode them (convert without --dtype)", m->name, mk_dtype_name(c->o->dtype));
    if (gw || gb) {
        const cv_lt *up = oss_partner(c, stem, gw ? "up_proj.weight" : "up_proj.bias");
        if (!up || up->mod->kind != m->kind || up->mod->vdt != m->vdt ||
            up->mod->t[CV_T_MAIN]->nbytes != m->t[CV_T_MAIN]->nbytes)
            return mk_err(MK_E_FORMAT, "'%s': its up_proj partner is missing or stored differently", m->name);
        if (gb) {
            int64_t sh[2] = {E, 2 * I};
            cv_out *o = oss_out(c, lt, stem, "gate_up_proj_bias", m->vdt, 2, sh);
            return o ? oss_zip_rows(c, o, lt, up, CV_T_MAIN, es, E * I)
                     : mk_err(MK_E_NOMEM, "'%s': no memory for its HF output", m->name);
        }
        if (m->kind == CV_MLX) {
            uint64_t rb = m->t[CV_T_MAIN]->nbytes / (uint64_t)(E * I);
            uint64_t sb = m->t[CV_T_SCALE]->nbytes / (uint64_t)(E * I);
            int64_t bsh[4] = {E, 2 * I, (int64_t)sb, 16}, ssh[3] = {E, 2 * I, (int64_t)sb};
            cv_out *o = oss_out(c, lt, stem, "gate_up_proj_blocks", MK_DT_U8, 4, bsh);
            if (!o)
                return mk_err(MK_E_NOMEM, "'%s': no memory for its HF outputs", m->name);
            MK_TRY(oss_zip_rows(c, o, lt, up, CV_T_MAIN, rb, E * I));
            o = oss_out(c, lt, stem, "gate_up_proj_scales", MK_DT_U8, 3, ssh);
            if (!o)
                return mk_err(MK_E_NOMEM, "'%s': no memory for its HF outputs", m->name);
            c->p->oss_mxfp4 = true;
            return oss_zip_rows(c, o, lt, up, CV_T_SCALE, sb, E * I);
        }
        int64_t sh[3] = {E, H, 2 * I}; /* gate, up (E, I, H) -> (E, H, 2I) interleaved */
        cv_out *o = oss_out(c, lt, stem, "gate_up_proj", m->vdt, 3, sh);
        if (!o)
            return mk_err(MK_E_NOMEM, "'%s': no memory for its HF output", m->name);
        for (int64_t e = 0; e < E; e++) {
            oss_gather g = {lt, up, CV_T_MAIN, (uint64_t)(e * I * H) * es, es, (uint64_t)H * es, (uint32_t)es, I, H};
            MK_TRY(oss_piece(o, &g));
        }
        return MK_OK;
    }
    if (db) {
        int64_t sh[2] = {E, H};
        cv_out *o = oss_out(c, lt, stem, "down_proj_bias", m->vdt, 2, sh);
        return o ? copy_piece(o, lt, CV_T_MAIN) : mk_err(MK_E_NOMEM, "'%s': no memory for its HF output", m->name);
    }
    if (m->kind == CV_MLX) {
        uint64_t rb = m->t[CV_T_MAIN]->nbytes / (uint64_t)(E * H), sb = m->t[CV_T_SCALE]->nbytes / (uint64_t)(E * H);
        int64_t bsh[4] = {E, H, (int64_t)sb, 16}, ssh[3] = {E, H, (int64_t)sb};
        (void)rb;
        cv_out *o = oss_out(c, lt, stem, "down_proj_blocks", MK_DT_U8, 4, bsh);
        if (!o)
            return mk_err(MK_E_NOMEM, "'%s': no memory for its HF outputs", m->name);
        MK_TRY(copy_piece(o, lt, CV_T_MAIN));
        o = oss_out(c, lt, stem, "down_proj_scales", MK_DT_U8, 3, ssh);
        return o ? copy_piece(o, lt, CV_T_SCALE) : mk_err(MK_E_NOMEM, "'%s': no memory for its HF outputs", m->name);
    }
    int64_t sh[3] = {E, I, H}; /* (E, H, I) -> (E, I, H) */
    cv_out *o = oss_out(c, lt, stem, "down_proj", m->vdt, 3, sh);
    if (!o)
        return mk_err(MK_E_NOMEM, "'%s': no memory for its HF output", m->name);
    for (int64_t e = 0; e < E; e++) {
        oss_gather g = {lt, NULL, CV_T_MAIN, (uint64_t)(e * H * I) * es, es, (uint64_t)I * es, (uint32_t)es, H, I};
        MK_TRY(oss_piece(o, &g));
    }
    return MK_OK;
}

/* One GGUF MXFP4 output of gpt_oss's experts: rows [0, nrows) of `cols`
 * values, row r the 16-byte blocks at base + r * rstep of tensor `part` of
 * m, their E8M0 scales the bytes at the same offset / 16 of tensor spart of
 * sm; each block becomes ggml's block_mxfp4 (gather.c, g_mx). */
static mk_status oss_mx_out(pctx *c, const cv_lt *lt, const char *stem, const char *leaf, const int64_t *sh,
                            const cv_mod *m, int part, const cv_mod *sm, int spart, uint64_t base, uint64_t rstep,
                            int64_t nrows, int64_t cols) {
    cv_out *o = oss_out(c, lt, stem, leaf, MK_DT_U8, 3, sh);
    if (!o)
        return mk_err(MK_E_NOMEM, "'%s': no memory for its GGUF outputs", m->name);
    cv_piece pc = {0};
    pc.op = CV_OP_GATHER;
    pc.part = (unsigned char)part;
    pc.g_part2 = (unsigned char)spart;
    pc.dt = MK_DT_U8;
    pc.mod = m;
    pc.g_mod2 = sm;
    pc.g_mx = 1;
    pc.nrows = nrows;
    pc.g_base = base;
    pc.g_rstep = rstep;
    pc.g_cstep = 16;
    pc.g_blk = 16;
    pc.g_ncols = cols / 32;
    pc.ocols = (int64_t)cv_gather_row_bytes(&pc);
    pc.nbytes = (uint64_t)pc.nrows * cv_gather_row_bytes(&pc);
    MK_TRY(push_piece(o, &pc));
    o->ggt = CV_GGML_MXFP4;
    return MK_OK;
}

/* gpt_oss's released MXFP4 experts for GGUF (conversion/gpt_oss.py
 * repack_mxfp4): <P>gate_up_proj_blocks (E, 2I, H/32, 16) with _scales
 * (E, 2I, H/32) -> ffn_gate_exps / ffn_up_exps (E, I, H) from the even /
 * odd rows, <P>down_proj_blocks (E, H, I/32, 16) -> ffn_down_exps (E, H, I);
 * each 32-value block becomes ggml's block_mxfp4 (gather.c, g_mx). */
static mk_status oss_mxfp4_gguf(pctx *c, const cv_lt *lt, const char *stem, bool down) {
    int64_t E = c->s->cfg.num_experts, I = c->s->cfg.moe_intermediate_size, H = c->s->cfg.hidden_size;
    int64_t rows = down ? E * H : E * 2 * I, cols = down ? I : H; /* source rows of cols values */
    const cv_mod *m = lt->mod;
    const cv_lt *sc = oss_partner(c, stem, down ? "down_proj_scales" : "gate_up_proj_scales");
    const mk_tensor_info *t = m->t[CV_T_MAIN];
    if (cols % 32 || t->nbytes != (uint64_t)rows * (uint64_t)(cols / 32) * 16u)
        return mk_err(MK_E_FORMAT, "'%s': %llu bytes, expected %lld rows of %lld MXFP4 values (16 bytes per 32)",
                      m->name, (unsigned long long)t->nbytes, (long long)rows, (long long)cols);
    if (!sc || sc->mod->kind != CV_RAW || sc->mod->t[CV_T_MAIN]->nbytes != (uint64_t)rows * (uint64_t)(cols / 32))
        return mk_err(MK_E_FORMAT, "'%s': its _scales partner is missing or not %lld x %lld bytes", m->name,
                      (long long)rows, (long long)(cols / 32));
    uint64_t rb = (uint64_t)(cols / 32) * 16u;
    int64_t sh[3] = {E, down ? H : I, cols};
    if (down)
        return oss_mx_out(c, lt, stem, "down_proj.weight", sh, m, CV_T_MAIN, sc->mod, CV_T_MAIN, 0, rb, rows, cols);
    for (int k = 0; k < 2; k++)
        MK_TRY(oss_mx_out(c, lt, stem, k ? "up_proj.weight" : "gate_proj.weight", sh, m, CV_T_MAIN, sc->mod,
                          CV_T_MAIN, (uint64_t)k * rb, 2 * rb, rows / 2, cols));
    return MK_OK;
}

/* The MLX form of those experts (oss_to_mlx writes it from the released
 * one, byte for byte): <P>gate_proj / up_proj / down_proj, mxfp4 4-bit g32
 * modules whose .weight (E, out, in/8) U32 words hold, little-endian, the
 * released row's bytes unchanged (value 2k in the low nibble of byte k,
 * 2k + 1 in the high one: MLX packs element j of a word at bits 4j) and
 * whose .scales (E, out, in/32) are the released E8M0 bytes. gate and up
 * are already de-interleaved, so each module is one row-for-row MXFP4
 * gather over its own weight and scales: the GGUF equals the one written
 * from the released checkpoint byte for byte. */
static mk_status oss_mxfp4_mlx_gguf(pctx *c, const cv_lt *lt, const char *stem, const char *leaf, bool down) {
    int64_t E = c->s->cfg.num_experts, I = c->s->cfg.moe_intermediate_size, H = c->s->cfg.hidden_size;
    int64_t rows = down ? E * H : E * I, cols = down ? I : H; /* the module's rows of cols values */
    const cv_mod *m = lt->mod;
    const mk_tensor_info *t = m->t[CV_T_MAIN], *s = m->t[CV_T_SCALE];
    if (lt->row0 != 0 || lt->nrows != rows)
        return mk_err(MK_E_FORMAT, "'%s': rows %lld..%lld of it, expected the whole stack of %lld x %lld rows "
                      "(num_local_experts, %s)", m->name, (long long)lt->row0, (long long)(lt->row0 + lt->nrows),
                      (long long)E, (long long)(down ? H : I), down ? "hidden_size" : "intermediate_size");
    if (cols % 32 || t->nbytes != (uint64_t)rows * (uint64_t)(cols / 32) * 16u)
        return mk_err(MK_E_FORMAT, "'%s': %llu bytes, expected %lld rows of %lld MXFP4 values (16 bytes per 32)",
                      m->name, (unsigned long long)t->nbytes, (long long)rows, (long long)cols);
    if (!s || s->nbytes != (uint64_t)rows * (uint64_t)(cols / 32))
        return mk_err(MK_E_FORMAT, "'%s': its .scales are missing or not %lld x %lld bytes", m->name,
                      (long long)rows, (long long)(cols / 32));
    int64_t sh[3] = {E, down ? H : I, cols};
    return oss_mx_out(c, lt, stem, leaf, sh, m, CV_T_MAIN, m, CV_T_SCALE, 0, (uint64_t)(cols / 32) * 16u, rows, cols);
}

/* gpt_oss's experts for GGUF (conversion/gpt_oss.py): llama.cpp's
 * ffn_{gate,up}_exps (E, I, H) and ffn_down_exps (E, H, I), each expert
 * transposed from transformers' (E, H, 2I) / (E, I, H) with gate and up
 * taken from the even and odd columns (GGQ pieces with tr, one expert
 * each), and ffn_{gate,up,down}_exps.bias (E, I) / (E, H), gate and up
 * likewise from the even and odd entries. MXFP4 experts (released
 * checkpoints, and their MLX form) are carried over as ggml's MXFP4, never
 * requantized; experts quantized otherwise are refused. */
static mk_status oss_to_gguf(pctx *c, const cv_lt *lt, const char *stem, const char *leaf, bool *done) {
    int64_t E = c->s->cfg.num_experts, I = c->s->cfg.moe_intermediate_size, H = c->s->cfg.hidden_size;
    const cv_mod *m = lt->mod;
    bool gu = !strcmp(leaf, "gate_up_proj"), gub = !strcmp(leaf, "gate_up_proj_bias");
    bool dn = !strcmp(leaf, "down_proj");
    bool gux = !strcmp(leaf, "gate_up_proj_blocks"), dnx = !strcmp(leaf, "down_proj_blocks");
    *done = true;
    if (!strcmp(leaf, "gate_up_proj_scales") || !strcmp(leaf, "down_proj_scales"))
        return MK_OK; /* zipped in with their blocks */
    if (gux || dnx) /* released MXFP4: carried over as ggml's MXFP4, byte for byte */
        return oss_mxfp4_gguf(c, lt, stem, dnx);
    bool mw = !strcmp(leaf, "gate_proj.weight") || !strcmp(leaf, "up_proj.weight") ||
              !strcmp(leaf, "down_proj.weight");
    if (m->kind == CV_MLX && oss_mxfp4_mod(m) && mw) /* their MLX form: the same bytes */
        return oss_mxfp4_mlx_gguf(c, lt, stem, leaf, !strcmp(leaf, "down_proj.weight"));
    if (m->kind == CV_MLX)
        return mk_err(MK_E_UNSUPPORTED, "'%s': gpt_oss experts quantized by MLX other than as mxfp4 (bits %d, "
                      "group %d): --to gguf carries only MXFP4 experts over, byte for byte, and would have to "
                      "requantize these; convert the float or MXFP4 checkpoint instead",
                      m->name, m->bits, m->group < 0 ? -m->group : m->group);
    if (m->kind != CV_FLOAT)
        return mk_err(MK_E_UNSUPPORTED, "'%s': --to gguf of gpt_oss experts stored quantized other than as "
                      "MXFP4 (transformers' blocks or MLX mxfp4) is not implemented", m->name);
    if (!gu && !gub && !dn) {
        *done = false; /* down_proj_bias: a plain copy (gguf_names.c) */
        return MK_OK;
    }
    int64_t R = gu ? H : dn ? I : 1, C = gu || gub ? 2 * I : H; /* each expert's source rows, columns */
    if (lt->nrows != E * R || m->cols != C)
        return mk_err(MK_E_FORMAT, "'%s': %lld rows of %lld, expected %lld x %lld rows of %lld (num_local_experts, "
                      "hidden_size, intermediate_size)", m->name, (long long)lt->nrows, (long long)m->cols,
                      (long long)E, (long long)R, (long long)C);
    for (int k = 0; k < (dn ? 1 : 2); k++) {
        const char *nl = dn ? "down_proj.weight" : gu ? (k ? "up_proj.weight" : "gate_proj.weight")
                                                      : (k ? "up_proj.bias" : "gate_proj.bias");
        int64_t sh[3] = {E, dn ? H : I, dn ? I : H};
        cv_out *o = gub ? oss_out(c, lt, stem, nl, float_dt(c, lt), 2, sh) : oss_out(c, lt, stem, nl, float_dt(c, lt), 3, sh);
        if (!o)
            return mk_err(MK_E_NOMEM, "'%s': no memory for its GGUF outputs", m->name);
        for (int64_t e = 0; e < E; e++) {
            cv_lt sub = *lt;
            sub.row0 = lt->row0 + e * R;
            sub.nrows = R;
            MK_TRY(float_piece(o, &sub, 0.0f));
            o->pc[o->npc - 1].tr = (unsigned char)(dn ? 1 : 2 + k); /* gguf_retype: the transposing GGQ */
        }
    }
    return MK_OK;
}

/* A gpt_oss expert tensor rewritten for the target (*done), else left to
 * plain_output (a copy). */
static mk_status oss_output(pctx *c, const cv_lt *lt, bool *done) {
    *done = false;
    const char *x = strstr(lt->cname, ".mlp.experts.");
    if (!x)
        return MK_OK;
    size_t sl = (size_t)(x - lt->cname) + strlen(".mlp.experts.");
    char *stem = cv_printf("%.*s", (int)sl, lt->cname);
    if (!stem)
        return mk_err(MK_E_NOMEM, "'%s': no memory for its name", lt->cname);
    const char *leaf = lt->cname + sl;
    mk_status st = c->t->gguf                      ? oss_to_gguf(c, lt, stem, leaf, done)
                   : c->t->naming == MK_NAMING_MLX ? oss_to_mlx(c, lt, stem, leaf, done)
                                                   : oss_to_hf(c, lt, stem, leaf, done);
    free(stem);
    return st;
}

/* ------------------------------------------------------------ GGUF */

/* The GGUF target's tensor types (gguf_types.c): each output re-planned in
 * its ggml type: floats re-encoded (norms and the router to F32), block
 * types as CV_OP_GGQ pieces over the float op of the same rows. The
 * outputs are visited in the file's order (the writer's), as llama.cpp's
 * type choice counts them. */
/* mk_conv_opts.gguf_over_*: the GGUF name of each override's module
 * (malloc'd, NULL when it has none): the module's canonical name's (a
 * leading "language_model." dropped, qwen3_5_moe's MLX prefix). */
static char *gguf_over_name(const pctx *c, const char *m) {
    if (strncmp(m, "language_model.", 15) == 0)
        m += 15;
    char cname[320];
    snprintf(cname, sizeof cname, "%s.weight", m);
    return cv_gguf_name(c->s, cname);
}

/* The index of the override of GGUF tensor `gname` (gn: the overrides'
 * GGUF names), -1 when none. Tensors split from one module take its type:
 * attn_gate from in_proj_qkvz (attn_qkv), attn_v_b from kv_b_proj
 * (attn_k_b). */
static int gguf_override(const pctx *c, char *const *gn, const char *gname) {
    char want[320];
    snprintf(want, sizeof want, "%s", gname);
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < c->o->n_gguf_over; i++)
            if (gn[i] && strcmp(gn[i], want) == 0)
                return (int)i;
        char *x = strstr(want, ".attn_gate.weight");
        char *y = strstr(want, ".attn_v_b.weight");
        if (x)
            snprintf(x, sizeof want - (size_t)(x - want), ".attn_qkv.weight");
        else if (y)
            snprintf(y, sizeof want - (size_t)(y - want), ".attn_k_b.weight");
        else
            break;
    }
    return -1;
}

static mk_status gguf_retype_run(pctx *c, char *const *gn, unsigned char *over_hit);

static mk_status gguf_retype(pctx *c) {
    const mk_conv_opts *o = c->o;
    size_t n = o->n_gguf_over;
    unsigned char *hit = n ? mk_calloc(n, 1) : NULL;
    char **gn = n ? mk_calloc(n, sizeof *gn) : NULL;
    mk_status st = MK_OK;
    if (n && (!hit || !gn))
        st = mk_err(MK_E_NOMEM, "--to gguf: no memory for %zu type overrides", n);
    for (size_t i = 0; st == MK_OK && i < n; i++)
        gn[i] = gguf_over_name(c, o->gguf_over_mod[i]); /* NULL: reported below, as never hit */
    if (st == MK_OK)
        st = gguf_retype_run(c, gn, hit);
    for (size_t i = 0; st == MK_OK && i < n; i++)
        if (!hit[i])
            st = mk_err(MK_E_MISMATCH, "%s: module '%s' of the type allocation is no tensor of this model's GGUF "
                        "(a profile of another model?)", c->s->dir, o->gguf_over_mod[i]);
    for (size_t i = 0; gn && i < n; i++)
        free(gn[i]);
    free(gn);
    free(hit);
    return st;
}

static mk_status gguf_retype_run(pctx *c, char *const *gn, unsigned char *over_hit) {
    cv_plan *p = c->p;
    qsort(p->outs, p->nouts, sizeof *p->outs, c->t->writer->order);
    cv_gguf_mix mx = {.ftype = c->o->gguf_type, .n_layer = c->s->cfg.num_layers, .n_expert = c->s->cfg.num_experts,
                      .tied = true};
    for (size_t i = 0; i < p->nouts; i++) {
        mx.n_attn_v += cv_gguf_attn_v_like(p->outs[i].name);
        if (strcmp(p->outs[i].name, "output.weight") == 0)
            mx.tied = false;
    }
    for (size_t i = 0; i < p->nouts; i++) {
        cv_out *o = &p->outs[i];
        int64_t cols = o->ndim ? o->shape[o->ndim - 1] : 1;
        if (o->npc > 0 && o->pc[0].op == CV_OP_GATHER && o->pc[0].g_mx) {
            o->ggt = CV_GGML_MXFP4; /* gpt_oss's MXFP4 experts: carried over whatever the file type */
            continue;
        }
        /* conv1d (C, 1, K) as llama.cpp's (C, K): the same bytes */
        if (o->ndim == 3 && strstr(o->name, "ssm_conv1d") && o->shape[1] == 1) {
            o->shape[1] = o->shape[2];
            o->ndim = 2;
            cols = o->shape[1];
        }
        mk_ggml_type gt = cv_gguf_type(o->name, o->ndim, cols, o->dt, &mx);
        int over = c->o->n_gguf_over ? gguf_override(c, gn, o->name) : -1;
        if (over >= 0) {
            gt = cv_gguf_type_over(o->name, o->ndim, cols, c->o->gguf_over_type[over]);
            over_hit[over] = 1;
        }
        bool q = mk_ggml_is_quant(gt);
        const mk_config *cf = &c->s->cfg;
        bool vr = cf->arch == MK_ARCH_QWEN3_5_MOE && cf->lin_num_k_heads > 0 &&
                  cf->lin_num_v_heads != cf->lin_num_k_heads &&
                  (cv_ends_with(o->name, ".ssm_out.weight") || cv_ends_with(o->name, ".ssm_a") ||
                   cv_ends_with(o->name, ".ssm_dt.bias"));
        o->ggt = (int)gt;
        o->dt = q ? MK_DT_U8 : gt == MK_GGML_F32 ? MK_DT_F32 : gt == MK_GGML_F16 ? MK_DT_F16 : MK_DT_BF16;
        o->nbytes = 0;
        for (int k = 0; k < o->npc; k++) {
            cv_piece *pc = &o->pc[k];
            if (pc->mod->kind == CV_RAW)
                return mk_err(MK_E_UNSUPPORTED, "--to gguf: integer tensor '%s' has no GGUF form here", pc->mod->name);
            cv_lt lt = {.mod = pc->mod, .row0 = pc->row0, .nrows = pc->nrows};
            float add = pc->add;
            unsigned char tr = pc->tr; /* set at planning (gguf_kvb_outputs) */
            MK_TRY(cv_float_piece(&lt, q || vr || tr ? MK_DT_F32 : o->dt, add, pc));
            pc->tr = tr;
            if (cv_ends_with(o->name, ".ssm_a")) { /* qwen3next / qwen35: -exp(A_log) */
                if (pc->mod->kind != CV_FLOAT)
                    return mk_err(MK_E_UNSUPPORTED, "--to gguf: '%s' is stored quantized", pc->mod->name);
                pc->op = CV_OP_FLOAT;
                pc->negexp = 1;
                pc->nbytes = (uint64_t)pc->nrows * (uint64_t)pc->mod->cols * cv_esize(pc->dt);
            }
            if (vr) { /* qwen35's value heads along the columns: whole rows through GGQ */
                pc->vr_nk = cf->lin_num_k_heads;
                pc->vr_r = cf->lin_num_v_heads / cf->lin_num_k_heads;
                pc->vr_hd = (int)(pc->mod->cols / cf->lin_num_v_heads);
                if ((int64_t)pc->vr_hd * cf->lin_num_v_heads != pc->mod->cols)
                    return mk_err(MK_E_FORMAT, "'%s': %lld columns are not %d value heads", pc->mod->name,
                                  (long long)pc->mod->cols, cf->lin_num_v_heads);
            }
            if (q || vr || tr) {
                pc->sop = (unsigned char)pc->op;
                pc->op = CV_OP_GGQ;
                pc->part = (unsigned char)gt;
                pc->nbytes = tr ? cv_ggq_out_bytes(pc, 1) : (uint64_t)pc->nrows * mk_ggml_row_bytes(gt, pc->mod->cols);
            }
            pc->out_off = o->nbytes;
            o->nbytes += pc->nbytes;
        }
    }
    c->p->scratch_per_elem = 16; /* GGQ: input bytes + decoded float32 + the rows to quantize */
    return MK_OK;
}

/* ------------------------------------------------------ order + shards */

/* End of the unit that starts at output i: a packed expert's outputs are
 * one unit (never split across shards), any other output its own. */
static size_t unit_end(const cv_plan *p, size_t i) {
    size_t j = i + 1;
    const cv_out *o = &p->outs[i];
    if (p->packed && o->xg > 0 && o->xe >= 0)
        while (j < p->nouts && p->outs[j].xg == o->xg && p->outs[j].xe == o->xe)
            j++;
    return j;
}

static bool is_expert(const cv_out *o) { return o->xg > 0 && o->xe >= 0; }

static mk_status cut_shards(cv_plan *p, const cv_writer_ops *w, uint64_t shard_size) {
    int ns = 1;
    uint64_t used = 0;
    for (size_t i = 0, j; i < p->nouts; i = j) {
        j = unit_end(p, i);
        uint64_t bytes = 0;
        for (size_t k = i; k < j; k++)
            bytes += p->outs[k].nbytes;
        /* packed: the other tensors start a shard of their own, so each
         * starts aligned to its element size as in any HF file (transformers
         * views a tensor's bytes as its dtype in place), whatever the
         * experts' total */
        bool first_other = p->packed && i > 0 && is_expert(&p->outs[i - 1]) && !is_expert(&p->outs[i]);
        if (used > 0 && (used + bytes > shard_size || first_other)) {
            ns++;
            used = 0;
        }
        for (size_t k = i; k < j; k++)
            p->outs[k].shard = ns - 1;
        used += bytes;
        p->total_bytes += bytes;
    }
    p->nshards = ns;
    p->shard_first = mk_calloc((size_t)ns + 1, sizeof *p->shard_first);
    p->shard_bytes = mk_calloc((size_t)ns, sizeof *p->shard_bytes);
    p->shard_files = mk_calloc((size_t)ns, sizeof *p->shard_files);
    if (!p->shard_first || !p->shard_bytes || !p->shard_files)
        return mk_err(MK_E_NOMEM, "convert plan: no memory for the tables of %d shards", ns);
    for (size_t i = p->nouts; i-- > 0;) {
        p->shard_first[p->outs[i].shard] = i;
        p->shard_bytes[p->outs[i].shard] += p->outs[i].nbytes;
    }
    p->shard_first[ns] = p->nouts;
    for (int k = 0; k < ns; k++) {
        p->shard_files[k] = w->shard_file(k, ns);
        if (!p->shard_files[k])
            return mk_err(MK_E_NOMEM, "convert plan: no memory for the file name of shard %d of %d", k + 1,
                          ns);
    }
    return MK_OK;
}

/* ------------------------------------------------------------- packing */

/* Packed order: routed experts first, expert-major (group, then expert),
 * each expert's outputs in the writer's order (larger elements first, so
 * a block whose size is a multiple of 8 keeps every tensor aligned to its
 * element size); then everything else in the writer's order (rank). */
static int packed_order(const void *a, const void *b) {
    const cv_out *x = a, *y = b;
    bool ex = is_expert(x), ey = is_expert(y);
    if (ex != ey)
        return ex ? -1 : 1;
    if (ex && x->xg != y->xg)
        return x->xg < y->xg ? -1 : 1;
    if (ex && x->xe != y->xe)
        return x->xe < y->xe ? -1 : 1;
    return x->rank < y->rank ? -1 : x->rank > y->rank;
}

/* Where each packed expert starts (the writer starts every shard's data
 * buffer at a 4 KiB boundary of the file), and what a user should know. */
static void pack_report(const cv_src *s, cv_plan *p) {
    uint64_t off = 0;
    bool quantized = false;
    for (size_t i = 0, j; i < p->nouts; i = j) {
        j = unit_end(p, i);
        if (i > 0 && p->outs[i].shard != p->outs[i - 1].shard)
            off = 0;
        uint64_t bytes = 0;
        for (size_t k = i; k < j; k++) {
            bytes += p->outs[k].nbytes;
            quantized = quantized || (p->outs[k].xg > 0 && cv_ends_with(p->outs[k].name, ".scales"));
        }
        if (is_expert(&p->outs[i])) {
            p->xpacked++;
            p->xaligned += off % CV_PACK_ALIGN == 0;
            if (bytes % CV_PACK_ALIGN && !p->xunaligned_bytes)
                p->xunaligned_bytes = bytes;
        }
        off += bytes;
    }
    char *n = p->pack_note;
    size_t cap = sizeof p->pack_note, len = 0;
    n[0] = 0;
    if (p->xpacked == 0)
        len += (size_t)snprintf(n, cap, "no routed experts to pack");
    else if (p->xaligned < p->xpacked)
        len += (size_t)snprintf(n, cap,
                                "%llu of %llu experts start 4 KiB-aligned: an expert of %llu bytes is not a "
                                "multiple of 4096 (each is still one contiguous read, widened to 4 KiB)",
                                (unsigned long long)p->xaligned, (unsigned long long)p->xpacked,
                                (unsigned long long)p->xunaligned_bytes);
    /* mlx-lm's qwen3 sanitizers stack only experts.{e}.{proj}.weight:
     * quantized per-expert scales and biases are left unstacked, and the
     * load fails (deepseek_v3's stacks weight, scales and biases) */
    if (p->xpacked && quantized && p->tgt->naming == MK_NAMING_MLX && s->cfg.arch != MK_ARCH_DEEPSEEK_V3 &&
        len < cap)
        snprintf(n + len, cap - len,
                 "%smlx-lm cannot load this output: its %s sanitize stacks only the experts' .weight tensors, "
                 "not their .scales/.biases (moekit reads it)",
                 len ? "; " : "", mk_arch_name(s->cfg.arch));
}

/* Everything that decides the output bytes, plus the source files' identity:
 * a journal written under another plan is not resumed. */
static void fingerprint(const pctx *c) {
    XXH3_state_t *h = XXH3_createState();
    if (!h)
        return;
    XXH3_64bits_reset(h);
    const char tag[] = "moekit-convert-plan-1";
    XXH3_64bits_update(h, tag, sizeof tag);
    if (c->p->packed) { /* same tensors, other offsets and header padding */
        const char ptag[] = "packed-4096";
        XXH3_64bits_update(h, ptag, sizeof ptag);
    }
    for (size_t i = 0; i < mk_ckpt_nshards(c->s->ck); i++) {
        struct stat st;
        uint64_t v[3] = {mk_ckpt_shard_size(c->s->ck, i), 0, 0};
        if (stat(mk_ckpt_shard_path(c->s->ck, i), &st) == 0) {
            v[1] = (uint64_t)st.st_mtim.tv_sec;
            v[2] = (uint64_t)st.st_mtim.tv_nsec;
        }
        XXH3_64bits_update(h, v, sizeof v);
    }
    const cv_plan *p = c->p;
    for (size_t i = 0; i < p->nouts; i++) {
        const cv_out *o = &p->outs[i];
        int64_t hd[4 + MK_MAX_DIMS] = {o->dt, o->ndim, o->shard, (int64_t)o->nbytes};
        memcpy(hd + 4, o->shape, sizeof o->shape);
        XXH3_64bits_update(h, o->name, strlen(o->name) + 1);
        XXH3_64bits_update(h, hd, sizeof hd);
        for (int k = 0; k < o->npc; k++) {
            const cv_piece *pc = &o->pc[k];
            const mk_tensor_info *t = pc->mod->t[CV_T_MAIN];
            int64_t pv[8] = {pc->op, pc->part, pc->dt, (int64_t)(pc->add * 1024), pc->row0, pc->nrows, t->shard,
                             (int64_t)t->file_offset};
            XXH3_64bits_update(h, pv, sizeof pv);
            if (pc->op == CV_OP_GATHER) {
                uint64_t gv[6] = {pc->g_base, pc->g_rstep, pc->g_cstep, pc->g_blk, (uint64_t)pc->g_ncols,
                                  pc->g_mod2 ? pc->g_mod2->t[CV_T_MAIN]->file_offset + 1 : 0};
                XXH3_64bits_update(h, gv, sizeof gv);
            }
            if (pc->op == CV_OP_QUANT)
                cv_qplan_hash(h, pc);
        }
    }
    if (p->gguf_kv)
        XXH3_64bits_update(h, p->gguf_kv, p->gguf_kv_len);
    c->p->fingerprint = XXH3_64bits_digest(h);
    XXH3_freeState(h);
}

mk_status cv_plan_build(const cv_src *s, const mk_conv_opts *o, cv_plan *p) {
    memset(p, 0, sizeof *p);
    const cv_target *t = cv_target_of(o->to);
    if (!t)
        return mk_err(MK_E_ARG, "--to: expected hf, mlx or gguf");
    pctx c = {s, o, t, p, 0, t->norms, t->conv1d};
    p->tgt = t;
    p->float_dt = o->dtype;
    p->packed = o->pack_experts;
    if (t->gguf)
        MK_TRY(cv_gguf_check_names(s));
    if (p->packed && t->single_file)
        return mk_err(MK_E_ARG, "--pack-experts lays out safetensors shards for streaming; a %s file is not one", t->name);
    if (p->packed && cv_target_experts(t, o) == CV_XG_FUSED)
        return mk_err(MK_E_ARG, "--pack-experts writes each expert's tensors together, which the fused "
                                "gate_up_proj/down_proj tensors of --experts fused cannot hold: choose one");
    /* Per-expert names make mlx-lm's qwen3_next sanitize run, and it adds 1
     * to the zero-centred norms and turns conv1d (C,1,K) into (C,K,1): a
     * packed qwen3_next MLX output keeps transformers' conventions for
     * both, which moekit's loader recognises by the conv1d shape
     * (FORMATS.md 3). qwen3_5_moe's sanitize shifts only when conv1d is
     * (C,1,K), so the MLX conventions stay. */
    if (p->packed && t->naming == MK_NAMING_MLX && s->cfg.arch == MK_ARCH_QWEN3_NEXT) {
        c.norms = CV_NORMS_W;
        c.conv1d = CV_CONV1D_C1K;
    }
    bool oss = s->cfg.arch == MK_ARCH_GPT_OSS && !s->bare;
    if (oss && p->packed)
        return mk_err(MK_E_UNSUPPORTED, "%s: gpt_oss: --pack-experts is not implemented (convert --to hf or --to mlx "
                      "rewrites its experts byte for byte)", s->dir);
    mk_status st = MK_OK;
    for (size_t i = 0; st == MK_OK && i < s->nlts; i++) {
        bool done = false;
        if (s->bare)
            st = bare_output(&c, &s->lts[i]);
        else if (!dropped(&c, &s->lts[i]) && (!oss || (st = oss_output(&c, &s->lts[i], &done)) == MK_OK) &&
                 !done)
            st = plain_output(&c, &s->lts[i]);
    }
    for (size_t i = 0; st == MK_OK && i < s->ngroups; i++)
        st = group_outputs(&c, &s->groups[i]);
    if (st == MK_OK && o->quant)
        st = cv_qplan_apply(s, o, p); /* quant_plan.c */
    for (size_t i = 0; i < p->nouts; i++)
        p->outs[i].ggt = -1;
    if (st == MK_OK && t->gguf)
        st = gguf_retype(&c);
    MK_TRY(st);
    if (p->nouts == 0)
        return mk_err(MK_E_FORMAT, "%s: nothing to convert (every tensor would be dropped)", s->dir);
    qsort(p->outs, p->nouts, sizeof *p->outs, t->writer->order);
    for (size_t i = 1; i < p->nouts; i++)
        if (strcmp(p->outs[i - 1].name, p->outs[i].name) == 0)
            return mk_err(MK_E_FORMAT, "%s: two source tensors would both become '%s' (%s and %s)", s->dir,
                          p->outs[i].name, p->outs[i - 1].pc[0].mod->name, p->outs[i].pc[0].mod->name);
    if (p->packed) {
        for (size_t i = 0; i < p->nouts; i++)
            p->outs[i].rank = i;
        qsort(p->outs, p->nouts, sizeof *p->outs, packed_order);
    }
    /* a GGUF file is never split */
    MK_TRY(cut_shards(p, t->writer, t->single_file ? UINT64_MAX : o->shard_size ? o->shard_size : CV_DEFAULT_SHARD));
    if (p->packed)
        pack_report(s, p);
    MK_TRY(cv_qplan_finish(p));
    if (t->gguf)
        MK_TRY(cv_gguf_meta(s, o, p));
    fingerprint(&c);
    return MK_OK;
}

void cv_plan_free(cv_plan *p) {
    if (!p)
        return;
    for (size_t i = 0; i < p->nouts; i++) {
        free(p->outs[i].name);
        free(p->outs[i].pc);
        free(p->outs[i].qpath);
    }
    free(p->outs);
    free(p->gguf_kv);
    cv_qstate_free(p->qs);
    for (int k = 0; p->shard_files && k < p->nshards; k++)
        free(p->shard_files[k]);
    free(p->shard_files);
    free(p->shard_first);
    free(p->shard_bytes);
    memset(p, 0, sizeof *p);
}
