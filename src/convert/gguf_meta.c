/* The key/value section of a GGUF file (gguf.h), serialized at planning.
 *
 * Keys and values are those llama.cpp's convert_hf_to_gguf.py writes for
 * the architecture (conversion/base.py set_gguf_parameters, qwen.py):
 *   general.architecture, general.name, general.file_type,
 *   general.quantization_version,
 *   <arch>.block_count / context_length / embedding_length /
 *   feed_forward_length / attention.head_count / attention.head_count_kv /
 *   rope.freq_base / attention.layer_norm_rms_epsilon / expert_count /
 *   expert_used_count / attention.key_length / attention.value_length /
 *   expert_feed_forward_length
 * and the tokenizer (gguf-py's SpecialVocab and get_vocab_base):
 *   tokenizer.ggml.model "gpt2", .pre (from the pre-tokenizer: "qwen2" for
 *   Qwen2's split regex, "gpt-2" for a plain byte-level one), .tokens (one
 *   per id up to the config's vocab_size, "[PAD<id>]" for holes),
 *   .token_type (1 normal, 3 control: special added tokens and ones that
 *   look special "<|...|>", 4 user-defined, 5 unused), .merges ("a b"),
 *   .bos/.eos/.padding_token_id (tokenizer_config.json's tokens first, then
 *   config.json's ids), .add_bos_token, and tokenizer.chat_template.
 * A checkpoint without tokenizer.json gets tokenizer.ggml.model "none" and
 * <arch>.vocab_size: llama.cpp then loads it with a vocabulary of that
 * many placeholder tokens (ids in, logits out; no text). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/gguf.h"
#include "core/alloc.h"
#include "core/json_err.h"
#include "io/os.h"

/* The Qwen2 / Qwen3 pre-tokenizer split regex (tokenizer.json). */
static const char QWEN2_RE[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";

typedef struct kvbuf {
    unsigned char *b;
    size_t n, cap;
    uint64_t count;
    bool oom;
} kvbuf;

static void put(kvbuf *k, const void *d, size_t n) {
    if (k->oom)
        return;
    if (k->n + n > k->cap) {
        size_t nc = k->cap ? k->cap : 4096;
        while (nc < k->n + n)
            nc *= 2;
        unsigned char *nb = mk_realloc(k->b, nc);
        if (!nb) {
            k->oom = true;
            return;
        }
        k->b = nb;
        k->cap = nc;
    }
    memcpy(k->b + k->n, d, n);
    k->n += n;
}
static void put_u32(kvbuf *k, uint32_t v) { put(k, &v, 4); } /* GGUF is little-endian, as is every host we build for */
static void put_u64(kvbuf *k, uint64_t v) { put(k, &v, 8); }
static void put_str(kvbuf *k, const char *s) {
    put_u64(k, strlen(s));
    put(k, s, strlen(s));
}
static void key(kvbuf *k, const char *name, uint32_t type) {
    put_str(k, name);
    put_u32(k, type);
    k->count++;
}
static void kv_u32(kvbuf *k, const char *name, uint32_t v) {
    key(k, name, GG_U32);
    put_u32(k, v);
}
static void kv_f32(kvbuf *k, const char *name, float v) {
    key(k, name, GG_F32);
    put(k, &v, 4);
}
static void kv_bool(kvbuf *k, const char *name, bool v) {
    key(k, name, GG_BOOL);
    unsigned char c = v;
    put(k, &c, 1);
}
static void kv_str(kvbuf *k, const char *name, const char *v) {
    key(k, name, GG_STR);
    put_str(k, v);
}
static void kv_arr(kvbuf *k, const char *name, uint32_t etype, uint64_t n) {
    key(k, name, GG_ARR);
    put_u32(k, etype);
    put_u64(k, n);
}
static void kv_archu(kvbuf *k, const char *arch, const char *suffix, uint32_t v) {
    char name[128];
    snprintf(name, sizeof name, "%s.%s", arch, suffix);
    kv_u32(k, name, v);
}
static void kv_archf(kvbuf *k, const char *arch, const char *suffix, float v) {
    char name[128];
    snprintf(name, sizeof name, "%s.%s", arch, suffix);
    kv_f32(k, name, v);
}

static json_t *load_json(const char *dir, const char *file, mk_status *st) {
    *st = MK_OK;
    char *path = mk_path_join(dir, file);
    if (!path) {
        *st = mk_err(MK_E_NOMEM, "%s: no memory for the path of %s", dir, file);
        return NULL;
    }
    if (!mk_os_exists(path)) {
        free(path);
        return NULL;
    }
    json_error_t e;
    unsigned long mark = mk_json_mark();
    json_t *j = mk_json_load_file(path, 0, &e, mark);
    if (!j)
        *st = mk_json_nomem(&e, mark) ? mk_err(MK_E_NOMEM, "%s: no memory to parse it", path)
                                       : mk_err(MK_E_FORMAT, "%s: line %d: %s", path, e.line, e.text);
    free(path);
    return j;
}

/* gguf-py's does_token_look_special for the forms that concern BPE vocabs. */
static bool looks_special(const char *t) {
    size_t n = strlen(t);
    if (n >= 4 && strncmp(t, "<|", 2) == 0 && strcmp(t + n - 2, "|>") == 0)
        return true;
    return strcmp(t, "<pad>") == 0 || strcmp(t, "<mask>") == 0;
}

/* The id of a special token named in tokenizer_config.json ("text" or
 * {"content": "text"}), -1 when absent or not a token. */
static long special_id(const json_t *tcfg, const char *field, const json_t *vocab, const json_t *added) {
    const json_t *v = tcfg ? json_object_get(tcfg, field) : NULL;
    if (json_is_object(v))
        v = json_object_get(v, "content");
    if (!json_is_string(v))
        return -1;
    const char *text = json_string_value(v);
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a) {
        const json_t *c = json_object_get(a, "content");
        if (json_is_string(c) && strcmp(json_string_value(c), text) == 0 && json_is_integer(json_object_get(a, "id")))
            return (long)json_integer_value(json_object_get(a, "id"));
    }
    const json_t *id = json_object_get(vocab, text);
    return json_is_integer(id) ? (long)json_integer_value(id) : -1;
}

static mk_status pre_name(const char *path, const json_t *tok, const char **pre) {
    const json_t *pt = json_object_get(tok, "pre_tokenizer");
    const char *type = json_string_value(json_object_get(pt, "type"));
    if (type && strcmp(type, "ByteLevel") == 0 && json_is_true(json_object_get(pt, "use_regex"))) {
        *pre = "gpt-2";
        return MK_OK;
    }
    if (type && strcmp(type, "Sequence") == 0) {
        const json_t *seq = json_object_get(pt, "pretokenizers");
        const json_t *sp = json_array_get(seq, 0), *bl = json_array_get(seq, 1);
        const char *re = json_string_value(json_object_get(json_object_get(sp, "pattern"), "Regex"));
        if (json_array_size(seq) == 2 && re && strcmp(re, QWEN2_RE) == 0 &&
            strcmp(json_string_value(json_object_get(bl, "type")) ? json_string_value(json_object_get(bl, "type")) : "",
                   "ByteLevel") == 0) {
            *pre = "qwen2";
            return MK_OK;
        }
    }
    return mk_err(MK_E_UNSUPPORTED,
                  "%s: pre_tokenizer %s is neither Qwen2's split regex nor a plain byte-level one: no llama.cpp "
                  "pre-tokenizer name known for it",
                  path, type ? type : "(none)");
}

/* tokenizer.ggml.* and the chat template from tokenizer.json /
 * tokenizer_config.json, or the "none" vocabulary without them. */
static mk_status tokenizer_kv(const cv_src *s, const char *arch, kvbuf *k) {
    mk_status st;
    json_t *tok = load_json(s->dir, "tokenizer.json", &st);
    MK_TRY(st);
    if (!tok) {
        kv_str(k, "tokenizer.ggml.model", "none");
        kv_archu(k, arch, "vocab_size", (uint32_t)s->cfg.vocab_size);
        return MK_OK;
    }
    json_t *tcfg = load_json(s->dir, "tokenizer_config.json", &st);
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", s->dir);
    const json_t *model = json_object_get(tok, "model"), *vocab = json_object_get(model, "vocab");
    const json_t *merges = json_object_get(model, "merges"), *added = json_object_get(tok, "added_tokens");
    const char *mtype = json_string_value(json_object_get(model, "type"));
    const char *pre = NULL;
    int V = s->cfg.vocab_size;
    char **tokens = NULL;
    int *types = NULL;
    if (st == MK_OK && (!mtype || strcmp(mtype, "BPE") != 0 || !json_is_object(vocab) || !json_is_array(merges)))
        st = mk_err(MK_E_UNSUPPORTED, "%s: model.type %s: --to gguf writes byte-level BPE (gpt2) vocabularies only",
                    path, mtype ? mtype : "(missing)");
    if (st == MK_OK)
        st = pre_name(path, tok, &pre);
    if (st == MK_OK) {
        tokens = mk_calloc((size_t)V, sizeof *tokens);
        types = mk_calloc((size_t)V, sizeof *types);
        if (!tokens || !types)
            st = mk_err(MK_E_NOMEM, "%s: no memory for a table of %d tokens", path, V);
    }
    const char *text;
    json_t *val;
    json_object_foreach((json_t *)vocab, text, val) {
        if (st != MK_OK)
            break;
        json_int_t id = json_integer_value(val);
        if (!json_is_integer(val) || id < 0 || id >= V)
            st = mk_err(MK_E_FORMAT, "%s: token '%s' has id %lld, outside the model's vocab_size %d", path, text,
                        (long long)id, V);
        else {
            tokens[id] = (char *)text;
            types[id] = 1;
        }
    }
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a) {
        if (st != MK_OK)
            break;
        json_int_t id = json_integer_value(json_object_get(a, "id"));
        const char *c = json_string_value(json_object_get(a, "content"));
        if (!c || id < 0 || id >= V) {
            st = mk_err(MK_E_FORMAT, "%s: added_tokens[%zu]: id %lld outside the model's vocab_size %d or no content",
                        path, i, (long long)id, V);
            break;
        }
        tokens[id] = (char *)c;
        types[id] = json_is_true(json_object_get(a, "special")) || looks_special(c) ? 3 : 4;
    }
    if (st == MK_OK) {
        kv_str(k, "tokenizer.ggml.model", "gpt2");
        kv_str(k, "tokenizer.ggml.pre", pre);
        kv_arr(k, "tokenizer.ggml.tokens", GG_STR, (uint64_t)V);
        for (int id = 0; id < V; id++) {
            char pad[32];
            snprintf(pad, sizeof pad, "[PAD%d]", id);
            put_str(k, tokens[id] ? tokens[id] : pad);
        }
        kv_arr(k, "tokenizer.ggml.token_type", GG_I32, (uint64_t)V);
        for (int id = 0; id < V; id++)
            put_u32(k, (uint32_t)(tokens[id] ? types[id] : 5));
        kv_arr(k, "tokenizer.ggml.merges", GG_STR, json_array_size(merges));
        json_array_foreach(merges, i, a) {
            if (json_is_string(a))
                put_str(k, json_string_value(a));
            else if (json_is_array(a) && json_array_size(a) == 2 && json_is_string(json_array_get(a, 0)) &&
                     json_is_string(json_array_get(a, 1))) {
                const char *l = json_string_value(json_array_get(a, 0)), *r = json_string_value(json_array_get(a, 1));
                put_u64(k, strlen(l) + 1 + strlen(r));
                put(k, l, strlen(l));
                put(k, " ", 1);
                put(k, r, strlen(r));
            } else {
                st = mk_err(MK_E_FORMAT, "%s: model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", path, i);
                break;
            }
        }
    }
    if (st == MK_OK) {
        /* tokenizer_config.json's named tokens win; config.json's ids fill in */
        long bos = special_id(tcfg, "bos_token", vocab, added), eos = special_id(tcfg, "eos_token", vocab, added);
        long pad = special_id(tcfg, "pad_token", vocab, added);
        if (bos < 0)
            bos = s->cfg.bos_id;
        if (eos < 0 && s->cfg.n_eos > 0)
            eos = s->cfg.eos_ids[0];
        if (bos >= 0)
            kv_u32(k, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
        if (eos >= 0)
            kv_u32(k, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
        if (pad >= 0)
            kv_u32(k, "tokenizer.ggml.padding_token_id", (uint32_t)pad);
        const json_t *ab = tcfg ? json_object_get(tcfg, "add_bos_token") : NULL;
        kv_bool(k, "tokenizer.ggml.add_bos_token", json_is_true(ab));
        const json_t *tpl = tcfg ? json_object_get(tcfg, "chat_template") : NULL;
        if (json_is_string(tpl))
            kv_str(k, "tokenizer.chat_template", json_string_value(tpl));
    }
    free(tokens);
    free(types);
    json_decref(tok);
    json_decref(tcfg);
    return st;
}

static uint32_t file_type(const mk_conv_opts *o, const cv_plan *p) {
    if (o->gguf_type >= 0)
        return cv_gguf_file_type(o->gguf_type); /* gguf_types.c */
    /* floats kept: the type of most bytes */
    uint64_t by[3] = {0, 0, 0};
    for (size_t i = 0; i < p->nouts; i++)
        if (p->outs[i].ggt != CV_GGML_MXFP4) /* carried over, whatever the file type */
            by[p->outs[i].dt == MK_DT_F32 ? 0 : p->outs[i].dt == MK_DT_F16 ? 1 : 2] += p->outs[i].nbytes;
    return by[2] >= by[1] && by[2] >= by[0] ? 32 : by[1] >= by[0] ? 1 : 0;
}

mk_status cv_gguf_meta(const cv_src *s, const mk_conv_opts *o, cv_plan *p) {
    const mk_config *c = &s->cfg;
    const char *arch = cv_gguf_arch(s);
    kvbuf k = {0};
    kv_str(&k, "general.architecture", arch);
    const char *base = strrchr(s->dir, '/');
    kv_str(&k, "general.name", base && base[1] ? base + 1 : s->dir);
    kv_u32(&k, "general.file_type", file_type(o, p));
    kv_u32(&k, "general.quantization_version", 2); /* GGML_QNT_VERSION */
    kv_archu(&k, arch, "block_count", (uint32_t)c->num_layers);
    kv_archu(&k, arch, "context_length", (uint32_t)c->max_position_embeddings);
    kv_archu(&k, arch, "embedding_length", (uint32_t)c->hidden_size);
    kv_archu(&k, arch, "feed_forward_length", (uint32_t)c->intermediate_size);
    kv_archu(&k, arch, "attention.head_count", (uint32_t)c->num_heads);
    /* deepseek2: MLA runs as MQA (one KV head of kv_lora_rank + rope dims) */
    kv_archu(&k, arch, "attention.head_count_kv", c->arch == MK_ARCH_DEEPSEEK_V3 ? 1u : (uint32_t)c->num_kv_heads);
    kv_archf(&k, arch, "rope.freq_base", (float)c->rope.theta);
    kv_archf(&k, arch, "attention.layer_norm_rms_epsilon", (float)c->rms_norm_eps);
    kv_archu(&k, arch, "expert_count", (uint32_t)c->num_experts);
    kv_archu(&k, arch, "expert_used_count", (uint32_t)c->num_experts_per_tok);
    if (c->arch == MK_ARCH_DEEPSEEK_V3) { /* deepseek.py overwrites base.py's head_dim ones */
        kv_archu(&k, arch, "attention.key_length", (uint32_t)(c->kv_lora_rank + c->qk_rope_head_dim));
        kv_archu(&k, arch, "attention.value_length", (uint32_t)c->kv_lora_rank);
    } else {
        kv_archu(&k, arch, "attention.key_length", (uint32_t)c->head_dim);
        kv_archu(&k, arch, "attention.value_length", (uint32_t)c->head_dim);
    }
    kv_archu(&k, arch, "expert_feed_forward_length", (uint32_t)c->moe_intermediate_size);
    if (c->arch == MK_ARCH_QWEN3_NEXT || c->arch == MK_ARCH_QWEN3_5_MOE) {
        /* qwen.py Qwen2MoeModel + Qwen3NextModel: the shared expert, the
         * Gated DeltaNet sizes, the full-attention interval (checked
         * regular by cv_gguf_check_names), partial RoPE */
        kv_archu(&k, arch, "expert_shared_feed_forward_length", (uint32_t)c->shared_intermediate_size);
        kv_archu(&k, arch, "ssm.conv_kernel", (uint32_t)c->conv_kernel);
        kv_archu(&k, arch, "ssm.state_size", (uint32_t)c->lin_k_head_dim);
        kv_archu(&k, arch, "ssm.group_count", (uint32_t)c->lin_num_k_heads);
        kv_archu(&k, arch, "ssm.time_step_rank", (uint32_t)c->lin_num_v_heads);
        kv_archu(&k, arch, "ssm.inner_size", (uint32_t)(c->lin_v_head_dim * c->lin_num_v_heads));
        kv_archu(&k, arch, "full_attention_interval", (uint32_t)cv_gguf_full_interval(c));
        kv_archu(&k, arch, "rope.dimension_count", (uint32_t)(c->head_dim * c->rope.partial_rotary_factor));
        if (c->arch == MK_ARCH_QWEN3_5_MOE) {
            /* _Qwen35MRopeMixin: the interleaved MRoPE sections, Qwen3.5's
             * [11, 11, 10, 0] (moekit reads text only: with one position for
             * time, height and width every section rotates alike, so the
             * split changes nothing here) */
            static const uint32_t sec[4] = {11, 11, 10, 0};
            char name[96];
            snprintf(name, sizeof name, "%s.rope.dimension_sections", arch);
            kv_arr(&k, name, GG_I32, 4);
            for (int i = 0; i < 4; i++)
                put_u32(&k, sec[i]);
        }
    }
    if (c->arch == MK_ARCH_DEEPSEEK_V3) {
        /* deepseek.py DeepseekV2Model.set_gguf_parameters; base.py's
         * n_group / topk_group and scoring_func (sigmoid for V3: moekit's
         * router, whatever the config spells) */
        if (c->n_group > 0)
            kv_archu(&k, arch, "expert_group_count", (uint32_t)c->n_group);
        if (c->topk_group > 0)
            kv_archu(&k, arch, "expert_group_used_count", (uint32_t)c->topk_group);
        kv_archu(&k, arch, "expert_gating_func", mk_config_sigmoid_router(c) ? 2u : 1u);
        kv_archu(&k, arch, "leading_dense_block_count", (uint32_t)cv_gguf_leading_dense(c));
        if (c->q_lora_rank > 0)
            kv_archu(&k, arch, "attention.q_lora_rank", (uint32_t)c->q_lora_rank);
        kv_archu(&k, arch, "attention.kv_lora_rank", (uint32_t)c->kv_lora_rank);
        kv_archu(&k, arch, "attention.key_length_mla", (uint32_t)(c->qk_nope_head_dim + c->qk_rope_head_dim));
        kv_archu(&k, arch, "attention.value_length_mla", (uint32_t)c->v_head_dim);
        kv_archu(&k, arch, "expert_shared_count", (uint32_t)c->n_shared_experts);
        kv_archf(&k, arch, "expert_weights_scale", (float)c->routed_scaling_factor);
        if (c->norm_topk_prob) {
            char name[96];
            snprintf(name, sizeof name, "%s.expert_weights_norm", arch);
            kv_bool(&k, name, true);
        }
        kv_archu(&k, arch, "rope.dimension_count", (uint32_t)c->qk_rope_head_dim);
    }
    if (c->arch == MK_ARCH_DEEPSEEK_V3 && c->dsa != MK_DSA_NONE) {
        /* deepseek.py DeepseekV32Model / glm.py GlmMoeDsaModel: the
         * lightning indexer's sizes, and GLM-5's indexer_types as one bool
         * per layer (true: "full", the layer runs its own indexer; false:
         * "shared", it reuses the previous full layer's selection). Always
         * written for glm-dsa: without it llama.cpp guesses the types from
         * the context length. */
        kv_archu(&k, arch, "attention.indexer.head_count", (uint32_t)c->index_n_heads);
        kv_archu(&k, arch, "attention.indexer.key_length", (uint32_t)c->index_head_dim);
        kv_archu(&k, arch, "attention.indexer.top_k", (uint32_t)c->index_topk);
        if (c->dsa == MK_DSA_INTERLEAVED) {
            char name[96];
            snprintf(name, sizeof name, "%s.attention.indexer.types", arch);
            kv_arr(&k, name, GG_BOOL, (uint64_t)c->num_layers);
            for (int i = 0; i < c->num_layers; i++) {
                unsigned char full = !(c->index_shared && c->index_shared[i]);
                put(&k, &full, 1);
            }
        }
    }
    if (c->arch == MK_ARCH_GLM4_MOE) {
        /* base.py: n_group / topk_group; glm.py: partial RoPE dims, shared
         * experts, leading dense layers, sigmoid gating, routed scaling and
         * top-k renormalization (MTP layers dropped: no nextn keys) */
        if (c->n_group > 0)
            kv_archu(&k, arch, "expert_group_count", (uint32_t)c->n_group);
        if (c->topk_group > 0)
            kv_archu(&k, arch, "expert_group_used_count", (uint32_t)c->topk_group);
        kv_archu(&k, arch, "rope.dimension_count", (uint32_t)(c->head_dim * c->rope.partial_rotary_factor));
        kv_archu(&k, arch, "expert_shared_count", (uint32_t)c->n_shared_experts);
        kv_archu(&k, arch, "leading_dense_block_count", (uint32_t)c->first_k_dense_replace);
        kv_archu(&k, arch, "expert_gating_func", 2);
        kv_archf(&k, arch, "expert_weights_scale", (float)c->routed_scaling_factor);
        kv_bool(&k, "glm4moe.expert_weights_norm", c->norm_topk_prob);
    }
    if (c->arch == MK_ARCH_GPT_OSS) {
        /* gpt_oss.py: the sliding window and the experts' width (its
         * intermediate_size); base.py's YaRN keys. llama.cpp's YaRN always
         * floors / ceils the correction range: a config's "truncate": false
         * (the released gpt-oss one) cannot be written, and its GGUF computes
         * the truncated range, as every converter's does (FORMATS.md) */
        kv_archu(&k, arch, "attention.sliding_window", (uint32_t)c->sliding_window);
        if (strcmp(c->rope.type, "yarn") == 0) {
            char name[96];
            snprintf(name, sizeof name, "%s.rope.scaling.type", arch);
            kv_str(&k, name, "yarn");
            kv_archf(&k, arch, "rope.scaling.factor", (float)c->rope.factor);
            kv_archu(&k, arch, "rope.scaling.original_context_length", (uint32_t)c->rope.orig_max_pos);
            if (c->rope.attention_factor >= 0)
                kv_archf(&k, arch, "rope.scaling.yarn_attn_factor", (float)c->rope.attention_factor);
            kv_archf(&k, arch, "rope.scaling.yarn_beta_fast", (float)c->rope.beta_fast);
            kv_archf(&k, arch, "rope.scaling.yarn_beta_slow", (float)c->rope.beta_slow);
        }
    }
    if (c->arch == MK_ARCH_MINIMAX_M2) {
        /* conversion/minimax.py: the rotated dims (rotary_dim; moekit's
         * reading of a config without it: partial_rotary_factor of head_dim)
         * and base.py's scoring_func -> expert_gating_func, sigmoid (2) for
         * this family whatever the config says (transformers' MiniMaxM2) */
        int rot = c->rotary_dim > 0 ? c->rotary_dim : (int)(c->head_dim * c->rope.partial_rotary_factor);
        kv_archu(&k, arch, "rope.dimension_count", (uint32_t)rot);
        kv_archu(&k, arch, "expert_gating_func", 2);
    }
    mk_status st = tokenizer_kv(s, arch, &k);
    if (st == MK_OK && k.oom)
        st = mk_err(MK_E_NOMEM, "%s: no memory for the GGUF metadata (%zu bytes so far)", s->dir, k.n);
    if (st != MK_OK) {
        free(k.b);
        return st;
    }
    p->gguf_kv = k.b;
    p->gguf_kv_len = k.n;
    p->gguf_kv_count = k.count;
    return MK_OK;
}
