/* The ggml type of each GGUF tensor under a file type (gguf.h), as
 * llama.cpp chooses it, so that `--gguf-type T` writes what
 * `llama-quantize [--pure] F16.gguf out.gguf T` writes from moekit's F16 /
 * BF16 GGUF of the same model (no importance matrix).
 *
 * Never quantized (llama.cpp's tensor_allows_quantization and
 * convert_hf_to_gguf.py's prepare_tensors): 1-D tensors, names not ending
 * in .weight (gpt-oss's 2-D expert biases), *_norm.weight,
 * the routers ffn_gate_inp*, ssm_conv1d; they are F32.
 *
 * Pure file types (F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K): every other
 * tensor of that type. The mixes Q4_K_M and Q5_K_M follow llama.cpp's
 * llama_tensor_get_type (src/llama-quant.cpp), the rules that apply to
 * them, with the same counters:
 *   output.weight (token_embd.weight when the embeddings are tied): Q6_K,
 *     or Q8_0 when its rows are not whole super-blocks
 *   attn_v / attn_qkv / attn_kv_b: Q6_K for "more bits" layers
 *     (use_more_bits of its index among them, in file order); Q8_0 for any
 *     model of exactly 8 experts
 *   attn_k: Q8_0 for 8 experts
 *   attn_output: Q5_K under Q4_K_M for 8 experts
 *   ffn_down* (experts, shared experts and dense): Q6_K for "more bits"
 *     layers (the layer from the name when the model has experts)
 *   the rest: the file type's Q4_K / Q5_K.
 * Then llama.cpp's fallback for rows that are not whole blocks: Q4_K ->
 * Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, and F16 when even 32 does not divide
 * the row. */
#include <stdio.h>
#include <string.h>

#include "convert/gguf.h"

/* llama.cpp's use_more_bits: the first and last eighth of the layers and
 * every third one between */
static bool more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

bool cv_gguf_attn_v_like(const char *g) {
    return strstr(g, "attn_qkv.weight") || strstr(g, "attn_kv_b.weight") || strstr(g, "attn_v.weight");
}

static bool never_quantized(const char *g, int ndim) {
    return ndim <= 1 || !cv_ends_with(g, ".weight") || cv_ends_with(g, "_norm.weight") || strstr(g, "ffn_gate_inp") ||
           strstr(g, "ssm_conv1d");
}

/* the type a file type starts every quantizable tensor from */
static mk_ggml_type base_type(int ft) {
    switch (ft) {
    case CV_GGUF_Q4_K_M: return MK_GGML_Q4_K;
    case CV_GGUF_Q5_K_M: return MK_GGML_Q5_K;
    }
    return (mk_ggml_type)ft;
}

static mk_ggml_type mix_type(const char *g, mk_ggml_type t, int64_t cols, cv_gguf_mix *m) {
    const bool q4 = m->ftype == CV_GGUF_Q4_K_M;
    if (strcmp(g, "output.weight") == 0 || (m->tied && strcmp(g, "token_embd.weight") == 0))
        return cols % mk_ggml_block_size(t) ? MK_GGML_Q8_0 : t != MK_GGML_Q8_0 ? MK_GGML_Q6_K : t;
    if (strcmp(g, "token_embd.weight") == 0)
        return t;
    if (cv_gguf_attn_v_like(g)) {
        if (more_bits(m->i_attn_v, m->n_attn_v))
            t = MK_GGML_Q6_K;
        if (m->n_expert == 8)
            t = MK_GGML_Q8_0;
        m->i_attn_v++;
        return t;
    }
    if (strstr(g, "attn_k.weight"))
        return m->n_expert == 8 ? MK_GGML_Q8_0 : t;
    if (strstr(g, "attn_q.weight"))
        return t;
    if (strstr(g, "attn_output.weight"))
        return q4 && m->n_expert == 8 ? MK_GGML_Q5_K : t;
    if (strstr(g, "ffn_up") || strstr(g, "ffn_gate"))
        return t;
    if (strstr(g, "ffn_down")) {
        int layer = m->i_ffn_down;
        if (m->n_expert > 1 && sscanf(g, "blk.%d.", &layer) != 1)
            layer = -1; /* llama.cpp refuses such a file; it cannot come from gguf_names.c */
        m->i_ffn_down++;
        return layer >= 0 && more_bits(layer, m->n_layer) ? MK_GGML_Q6_K : t;
    }
    return t;
}

/* llama.cpp's tensor_type_fallback */
static mk_ggml_type fallback(mk_ggml_type t, int64_t cols) {
    if (cols % mk_ggml_block_size(t) == 0)
        return t;
    mk_ggml_type r = t == MK_GGML_Q4_K ? MK_GGML_Q5_0 : t == MK_GGML_Q5_K ? MK_GGML_Q5_1 : t == MK_GGML_Q6_K ? MK_GGML_Q8_0 : t;
    return cols % mk_ggml_block_size(r) ? MK_GGML_F16 : r;
}

mk_ggml_type cv_gguf_type(const char *gname, int ndim, int64_t cols, mk_dtype fdt, cv_gguf_mix *m) {
    if (never_quantized(gname, ndim))
        return MK_GGML_F32;
    if (m->ftype < 0) /* floats kept */
        return fdt == MK_DT_F32 ? MK_GGML_F32 : fdt == MK_DT_F16 ? MK_GGML_F16 : MK_GGML_BF16;
    mk_ggml_type t = base_type(m->ftype);
    if (!mk_ggml_is_quant(t))
        return t;
    if (m->ftype == CV_GGUF_Q4_K_M || m->ftype == CV_GGUF_Q5_K_M)
        t = mix_type(gname, t, cols, m);
    return fallback(t, cols);
}

mk_ggml_type cv_gguf_type_over(const char *gname, int ndim, int64_t cols, int over) {
    if (never_quantized(gname, ndim))
        return MK_GGML_F32;
    return fallback((mk_ggml_type)over, cols);
}

bool cv_gguf_type_ok(int ft) { return ft == MK_GGML_F32 || cv_gguf_file_type(ft) != 0; }

uint32_t cv_gguf_file_type(int ft) {
    switch (ft) { /* llama.cpp's llama_ftype */
    case MK_GGML_F16: return 1;
    case MK_GGML_Q4_0: return 2;
    case MK_GGML_Q8_0: return 7;
    case MK_GGML_Q4_K: return 14; /* MOSTLY_Q4_K_S: the Q4_K file type without the mix */
    case MK_GGML_Q5_K: return 16; /* MOSTLY_Q5_K_S */
    case MK_GGML_Q6_K: return 18;
    case CV_GGUF_Q4_K_M: return 15;
    case CV_GGUF_Q5_K_M: return 17;
    case MK_GGML_BF16: return 32;
    }
    return 0; /* ALL_F32 (and no file type: cv_gguf_type_ok) */
}
