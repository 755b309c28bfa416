/* The non-tensor files of a converted checkpoint: config.json rewritten for
 * the target, the shard index (the target writer's, writer.h), and the
 * tokenizer / generation files copied byte for byte.
 *
 * config.json starts as the source's (every field the engine or
 * transformers reads survives), gets its dtype fields set, then the
 * target's own edit (its config_edit, target.c):
 *   HF   quantization blocks removed (every weight is dequantized), dtype
 *        set when it changed, MLX's text-only qwen3_5_moe renamed back to
 *        qwen3_5_moe_text.
 *   MLX  FP8 / compressed-tensors quantization_config removed; for INT4
 *        repacks a "quantization" block with an identical
 *        "quantization_config" and one {"group_size", "bits"} entry per
 *        repacked module (FORMATS.md 2); an MLX source keeps its blocks
 *        (a packed output's entries for switch_mlp stacks become entries
 *        per expert);
 *        the fields mlx-lm's ModelArgs require but transformers 5 writes
 *        elsewhere are added (num_experts, rope_theta, partial_rotary_factor,
 *        full_attention_interval, mlp_only_layers, decoder_sparse_step;
 *        glm4_moe's rope_scaling, minimax_m2's rotary_dim and
 *        shared_intermediate_size, glm4_moe_lite's first_k_dense_replace);
 *        qwen3_5_moe_text becomes qwen3_5_moe (mlx-lm has no _text module). */
#include <errno.h>
#include <jansson.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/str.h"
#include "convert/conv_impl.h"
#include "convert/target.h"
#include "core/json_err.h"
#include "io/os.h"

static const char *dtype_word(mk_dtype t) {
    switch (t) {
    case MK_DT_F32: return "float32";
    case MK_DT_F16: return "float16";
    case MK_DT_BF16: return "bfloat16";
    default: return NULL;
    }
}

/* Replace `key` of `o` when it exists (or when `always`). */
static void set_str(json_t *o, const char *key, const char *v, bool always) {
    if (always || json_object_get(o, key))
        json_object_set_new(o, key, json_string(v));
}

static void drop_quant(json_t *root, json_t *tc) {
    json_object_del(root, "quantization");
    json_object_del(root, "quantization_config");
    if (tc != root) {
        json_object_del(tc, "quantization");
        json_object_del(tc, "quantization_config");
    }
}

/* Smallest k with layer_types[i] == full_attention iff (i+1) % k == 0. */
static int attention_interval(json_t *lt) {
    size_t n = json_array_size(lt);
    for (size_t k = 1; k <= n; k++) {
        bool ok = true;
        for (size_t i = 0; ok && i < n; i++) {
            const char *v = json_string_value(json_array_get(lt, i));
            ok = v && ((strcmp(v, "full_attention") == 0) == ((i + 1) % k == 0));
        }
        if (ok)
            return (int)k;
    }
    return 0;
}

/* Fields mlx-lm's ModelArgs require that transformers 5 configs move or omit. */
static void mlx_compat(const cv_src *s, json_t *tc) {
    json_t *rp = json_object_get(tc, "rope_parameters");
    if (!json_object_get(tc, "num_experts") && json_object_get(tc, "num_local_experts"))
        json_object_set(tc, "num_experts", json_object_get(tc, "num_local_experts"));
    if (json_is_object(rp)) {
        if (!json_object_get(tc, "rope_theta") && json_object_get(rp, "rope_theta"))
            json_object_set(tc, "rope_theta", json_object_get(rp, "rope_theta"));
        if (!json_object_get(tc, "partial_rotary_factor") && json_object_get(rp, "partial_rotary_factor"))
            json_object_set(tc, "partial_rotary_factor", json_object_get(rp, "partial_rotary_factor"));
        const char *ty = json_string_value(json_object_get(rp, "rope_type"));
        if (!json_object_get(tc, "rope_scaling") && ty && strcmp(ty, "default") != 0) {
            json_t *rs = json_deep_copy(rp);
            json_object_set_new(rs, "type", json_string(ty));
            json_object_set_new(tc, "rope_scaling", rs);
        }
    }
    json_t *lt = json_object_get(tc, "layer_types");
    if (!json_object_get(tc, "full_attention_interval") && json_is_array(lt)) {
        int k = attention_interval(lt);
        if (k > 0)
            json_object_set_new(tc, "full_attention_interval", json_integer(k));
    }
    /* glm4_moe: ModelArgs has rope_scaling without a default */
    if (s->cfg.arch == MK_ARCH_GLM4_MOE && !json_object_get(tc, "rope_scaling"))
        json_object_set_new(tc, "rope_scaling", json_null());
    /* minimax_m2: rotary_dim and shared_intermediate_size are required */
    if (s->cfg.arch == MK_ARCH_MINIMAX_M2) {
        if (!json_object_get(tc, "rotary_dim"))
            json_object_set_new(tc, "rotary_dim",
                                json_integer((json_int_t)(s->cfg.rope.partial_rotary_factor * s->cfg.head_dim + 0.5)));
        if (!json_object_get(tc, "shared_intermediate_size"))
            json_object_set_new(tc, "shared_intermediate_size", json_integer(0));
    }
    /* glm4_moe_lite (transformers 5 writes mlp_layer_types): mlx-lm counts its
     * leading dense layers in first_k_dense_replace (a default of 1 otherwise) */
    if (s->cfg.has_mlp_layer_types && !json_object_get(tc, "first_k_dense_replace")) {
        int k = 0;
        for (bool dense = true; dense && k < s->cfg.num_layers; k += dense) {
            dense = false;
            for (int j = 0; j < s->cfg.n_mlp_only_layers; j++)
                dense |= s->cfg.mlp_only_layers[j] == k;
        }
        json_object_set_new(tc, "first_k_dense_replace", json_integer(k));
    }
    if (s->cfg.arch == MK_ARCH_QWEN3_MOE || s->cfg.arch == MK_ARCH_QWEN3_NEXT) {
        if (!json_object_get(tc, "mlp_only_layers"))
            json_object_set_new(tc, "mlp_only_layers", json_array());
        if (!json_object_get(tc, "decoder_sparse_step"))
            json_object_set_new(tc, "decoder_sparse_step", json_integer(1));
    }
}

static json_t *quant_block(const cv_plan *p) {
    json_t *q = json_object();
    json_object_set_new(q, "group_size", json_integer(p->q_group));
    json_object_set_new(q, "bits", json_integer(p->q_bits));
    json_object_set_new(q, "mode", json_string("affine"));
    for (size_t i = 0; i < p->nouts; i++) {
        const cv_out *o = &p->outs[i];
        if (!o->qpath)
            continue;
        json_t *e = json_object();
        json_object_set_new(e, "group_size", json_integer(o->qgroup));
        json_object_set_new(e, "bits", json_integer(o->qbits));
        if (o->qmode)
            json_object_set_new(e, "mode", json_string(o->qmode));
        json_object_set_new(q, o->qpath, e);
    }
    return q;
}

static mk_status edit(const cv_src *s, const cv_plan *p, json_t *root) {
    json_t *tc = json_object_get(root, "text_config");
    if (!json_is_object(tc))
        tc = root;
    const char *dw = dtype_word(p->float_dt);
    bool was_quant = s->cfg.quant.method == MK_QM_FP8 || s->cfg.quant.method == MK_QM_CT;
    if (!dw && was_quant)
        dw = "bfloat16"; /* dequantized weights default to bf16 */
    if (dw) {
        set_str(root, "dtype", dw, tc == root || json_object_get(root, "dtype"));
        set_str(root, "torch_dtype", dw, false);
        if (tc != root) {
            set_str(tc, "dtype", dw, false);
            set_str(tc, "torch_dtype", dw, false);
        }
    }
    return p->tgt->config_edit(s, p, root, tc);
}

/* gpt_oss's MXFP4 experts as released: quant_method mxfp4 and the modules
 * left in float (OpenAI's list). */
static json_t *oss_hf_block(void) {
    static const char *const keep[] = {"model.layers.*.self_attn", "model.layers.*.mlp.router",
                                       "model.embed_tokens", "lm_head"};
    json_t *q = json_object(), *a = json_array();
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
        json_array_append_new(a, json_string(keep[i]));
    json_object_set_new(q, "modules_to_not_convert", a);
    json_object_set_new(q, "quant_method", json_string("mxfp4"));
    return q;
}

/* ... and in MLX: every module with .scales is mxfp4 (the experts). */
static json_t *oss_mlx_block(void) {
    json_t *q = json_object();
    json_object_set_new(q, "group_size", json_integer(32));
    json_object_set_new(q, "bits", json_integer(4));
    json_object_set_new(q, "mode", json_string("mxfp4"));
    return q;
}

mk_status cv_config_edit_hf(const cv_src *s, const cv_plan *p, void *rootp, void *tcp) {
    json_t *root = rootp, *tc = tcp;
    const char *mt = json_string_value(json_object_get(root, "model_type"));
    drop_quant(root, tc);
    if (p->oss_mxfp4)
        json_object_set_new(root, "quantization_config", oss_hf_block());
    if (s->is_mlx && tc == root && mt && strcmp(mt, "qwen3_5_moe") == 0) {
        json_object_set_new(root, "model_type", json_string("qwen3_5_moe_text"));
        json_t *ar = json_array();
        json_array_append_new(ar, json_string("Qwen3_5MoeForCausalLM"));
        json_object_set_new(root, "architectures", ar);
    }
    return MK_OK;
}

/* A packed output writes experts one by one (plan.c): a kept MLX block's
 * entry for a stacked module "<mlp>.switch_mlp.<proj>" becomes one entry
 * per expert "<mlp>.experts.<e>.<proj>", or the per-expert modules would
 * be read with the default bits. */
static mk_status pack_entries(json_t *blk, int E) {
    if (!json_is_object(blk))
        return MK_OK;
    const char *k;
    json_t *v, *tmp;
    unsigned long mark = mk_json_mark();
    json_t *add = json_object();
    json_object_foreach_safe(blk, tmp, k, v) {
        const char *sw = strstr(k, ".switch_mlp.");
        if (!sw || (!json_is_object(v) && !json_is_boolean(v)))
            continue;
        for (int e = 0; e < E; e++) {
            char *nk = mk_strfmt("%.*s.experts.%d.%s", (int)(sw - k), k, e, sw + strlen(".switch_mlp."));
            if (nk)
                json_object_set_new(add, nk, json_deep_copy(v));
            free(nk);
        }
        json_object_del(blk, k);
    }
    json_object_update(blk, add);
    json_decref(add);
    return mk_alloc_failures() == mark ? MK_OK
                                      : mk_err(MK_E_NOMEM, "config.json: no memory for the per-expert "
                                                           "quantization entries of a packed output");
}

mk_status cv_config_edit_mlx(const cv_src *s, const cv_plan *p, void *rootp, void *tcp) {
    json_t *root = rootp, *tc = tcp;
    const char *mt = json_string_value(json_object_get(root, "model_type"));
    if (!s->is_mlx || s->cfg.quant.method != MK_QM_MLX)
        drop_quant(root, tc);
    else if (p->packed) {
        static const char *const keys[2] = {"quantization", "quantization_config"};
        for (int i = 0; i < 2; i++) {
            MK_TRY(pack_entries(json_object_get(root, keys[i]), s->cfg.num_experts));
            if (tc != root)
                MK_TRY(pack_entries(json_object_get(tc, keys[i]), s->cfg.num_experts));
        }
    }
    if (p->quantized) {
        json_object_set_new(root, "quantization", quant_block(p));
        json_object_set_new(root, "quantization_config", quant_block(p));
    }
    if (p->oss_mxfp4) { /* HF mxfp4 experts rewritten to MLX stacks (plan.c) */
        drop_quant(root, tc);
        json_object_set_new(root, "quantization", oss_mlx_block());
        json_object_set_new(root, "quantization_config", oss_mlx_block());
    }
    if (p->qs) { /* quantize: the blocks of quant_plan.c replace any other */
        drop_quant(root, tc);
        MK_TRY(cv_qplan_config(p, root));
    }
    if (tc == root && mt && strcmp(mt, "qwen3_5_moe_text") == 0)
        json_object_set_new(root, "model_type", json_string("qwen3_5_moe"));
    mlx_compat(s, tc);
    return MK_OK;
}

/* Byte copy through a small buffer (tokenizer.json can be tens of MB). */
static mk_status copy_file(const char *from, const char *to) {
    int in = mk_os()->open(from, O_RDONLY | O_CLOEXEC, 0);
    if (in < 0)
        return mk_err(MK_E_IO, "%s: cannot open: %s", from, strerror(errno));
    char *tmp = cv_printf("%s.tmp", to);
    int out = tmp ? mk_os()->open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : -1;
    unsigned char *buf = mk_malloc(1u << 20);
    /* no memory is not an unwritable output */
    mk_status s = !tmp      ? mk_err(MK_E_NOMEM, "%s: no memory for its temporary name", to)
                  : !buf    ? mk_err(MK_E_NOMEM, "%s: no memory for a copy buffer of 1 MiB", from)
                  : out < 0 ? mk_err(MK_E_IO, "%s: cannot create: %s", tmp, strerror(errno))
                            : MK_OK;
    uint64_t off = 0;
    while (s == MK_OK) {
        ssize_t r = read(in, buf, 1u << 20);
        if (r < 0) {
            s = mk_err(MK_E_IO, "%s: read failed", from);
            break;
        }
        if (r == 0)
            break;
        s = mk_os_pwrite_full(out, buf, (size_t)r, off, tmp);
        off += (uint64_t)r;
    }
    if (s == MK_OK)
        s = mk_os_fsync(out, tmp);
    if (out >= 0)
        close(out);
    close(in);
    if (s == MK_OK)
        s = mk_os_rename(tmp, to);
    else if (tmp)
        mk_os()->unlink(tmp);
    free(buf);
    free(tmp);
    return s;
}

static const char *const g_side_files[] = {
    "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt", "tokenizer.model",
    "added_tokens.json", "preprocessor_config.json", "video_preprocessor_config.json",
};

mk_status cv_config_write(const cv_src *s, const cv_plan *p, const char *dir) {
    if (s->bare) { /* quantizing a lone file: no model config to carry over */
        mk_status bs = p->qs ? cv_qplan_config_bare(p, dir) : MK_OK;
        return bs == MK_OK ? p->tgt->writer->index(p, dir) : bs;
    }
    char *src = mk_path_join(s->dir, "config.json"), *dst = mk_path_join(dir, "config.json");
    json_error_t je;
    unsigned long mark = mk_json_mark();
    json_t *root = src && dst ? mk_json_load_file(src, 0, &je, mark) : NULL;
    mk_status st = root            ? MK_OK
                   : !src || !dst  ? mk_err(MK_E_NOMEM, "no memory for the config.json paths under %s", dir)
                   : mk_json_nomem(&je, mark)
                       ? mk_err(MK_E_NOMEM, "%s: no memory to re-read it", src)
                       : mk_err(MK_E_FORMAT, "%s: cannot re-read: %s", src, mk_json_errtext(je.text));
    /* the edits report running out of memory only through jansson's return
     * values, which they do not check: a key that failed to be set would
     * silently be missing from the config, so any failure since `mark` counts */
    mark = mk_alloc_failures();
    if (st == MK_OK)
        st = edit(s, p, root);
    char *js = st == MK_OK ? json_dumps(root, JSON_INDENT(2)) : NULL;
    if (st == MK_OK)
        st = js && mk_alloc_failures() == mark
                 ? mk_os_write_file_atomic(dst, js, strlen(js))
                 : mk_err(MK_E_NOMEM, "%s: no memory to edit and write it", dst);
    free(js);
    json_decref(root);
    free(src);
    free(dst);
    for (size_t i = 0; st == MK_OK && i < sizeof g_side_files / sizeof g_side_files[0]; i++) {
        char *a = mk_path_join(s->dir, g_side_files[i]), *b = mk_path_join(dir, g_side_files[i]);
        if (!a || !b)
            st = mk_err(MK_E_NOMEM, "no memory for the path of %s", g_side_files[i]);
        else if (mk_os_exists(a))
            st = copy_file(a, b);
        free(a);
        free(b);
    }
    if (st == MK_OK)
        st = p->tgt->writer->index(p, dir);
    return st;
}
