/* The GGUF target of convert (`convert --to gguf`): what llama.cpp, LM
 * Studio and Ollama load. Internal to src/convert/.
 *
 *   gguf_names.c   canonical HF tensor names -> llama.cpp's names of the
 *                  architecture (qwen3moe: token_embd, blk.N.attn_q, ...,
 *                  blk.N.ffn_gate_exps stacked (E, out, in)), as
 *                  llama.cpp's convert_hf_to_gguf.py writes them, and the
 *                  ggml type of each tensor under a file type (its rules:
 *                  1-D tensors, norms and the router stay F32)
 *   gguf_meta.c    the key/value section: architecture hyperparameters,
 *                  the tokenizer from tokenizer.json (gpt2 BPE tokens,
 *                  types, merges, special ids) and the chat template,
 *                  serialized once at planning into cv_plan.gguf_kv
 *   gguf_writer.c  the file writer (writer.h): header, tensor infos, data
 *                  aligned to 32 bytes, one file
 *   ggq_ops.c      the CV_OP_GGQ operation: decoded float32 rows quantized
 *                  to a ggml block type (include/moekit/ggml_quant.h)
 * GGUF format: magic "GGUF", version 3, little-endian; strings are a u64
 * length and bytes; tensor dims are written innermost first (ne0 = the
 * row length), the reverse of the safetensors shape. */
#ifndef MK_CONVERT_GGUF_H
#define MK_CONVERT_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "convert/conv_impl.h"
#include "moekit/ggml_quant.h"

#define CV_GGUF_ALIGN 32
/* ggml's MXFP4 (GGML_TYPE_MXFP4): gpt-oss's released experts, carried over
 * byte for byte (gather.c), never produced by quantizing: 32 values per
 * 17-byte block (an E8M0 scale, 16 bytes of E2M1 pairs) */
#define CV_GGML_MXFP4 39
#define CV_GGUF_FILE "model.gguf"

/* GGUF metadata value types. */
enum { GG_U8 = 0, GG_I8, GG_U16, GG_I16, GG_U32, GG_I32, GG_F32, GG_BOOL, GG_STR, GG_ARR, GG_U64, GG_I64, GG_F64 };

/* llama.cpp's architecture name of a source, NULL when GGUF output of it
 * is not supported (yet). */
const char *cv_gguf_arch(const cv_src *s);
/* Check every tensor the plan will write has a llama.cpp name (the error
 * names the first one that has none and the architecture). */
mk_status cv_gguf_check_names(const cv_src *s);
/* qwen3next: n when layer i is full attention exactly when (i + 1) % n
 * == 0 (llama.cpp's full_attention_interval), else 0. */
int cv_gguf_full_interval(const mk_config *c);
/* deepseek2: its leading dense layers (first_k_dense_replace, or
 * glm4_moe_lite's mlp_layer_types when they are a prefix), -1 when the
 * dense layers are not all leading. */
int cv_gguf_leading_dense(const mk_config *c);
/* llama.cpp's name of canonical tensor cname (malloc'd); NULL when there is
 * none (cv_gguf_check_names has reported it) or out of memory. */
char *cv_gguf_name(const cv_src *s, const char *cname);
/* The mixes' file types (mk_conv_opts.gguf_type beside the ggml types). */
#define CV_GGUF_Q4_K_M MK_GGUF_Q4_K_M
#define CV_GGUF_Q5_K_M MK_GGUF_Q5_K_M

/* What llama.cpp's type choice counts over a file (gguf_types.c): set
 * ftype, n_layer (block_count), n_expert, tied (no output.weight) and
 * n_attn_v (attn_v-like tensors, cv_gguf_attn_v_like), the counters zero,
 * then call cv_gguf_type on every output in file order. */
typedef struct cv_gguf_mix {
    int ftype; /* mk_conv_opts.gguf_type; -1: floats keep their dtype */
    int n_layer, n_expert, n_attn_v;
    bool tied;
    int i_attn_v, i_ffn_down;
} cv_gguf_mix;
bool cv_gguf_attn_v_like(const char *gname);
/* ggml type of an output named `gname` (llama.cpp's name) of ndim dims and
 * rows of `cols` values (gguf_types.c says how); fdt is its float dtype,
 * kept when m->ftype is -1. */
mk_ggml_type cv_gguf_type(const char *gname, int ndim, int64_t cols, mk_dtype fdt, cv_gguf_mix *m);
/* The type of an output under an override `over` (a mk_ggml_type from
 * mk_conv_opts.gguf_over_type): F32 when llama.cpp never quantizes it,
 * else `over` after llama.cpp's fallback for rows that are not whole
 * blocks. */
mk_ggml_type cv_gguf_type_over(const char *gname, int ndim, int64_t cols, int over);
/* Is gguf_type one of the file types above (not Q5_0 / Q5_1, which are
 * fallbacks only)? */
bool cv_gguf_type_ok(int gguf_type);
/* general.file_type (llama.cpp's llama_ftype) of a --gguf-type value. */
uint32_t cv_gguf_file_type(int gguf_type);

/* gguf_writer.c: write the header the writer writes for plan p (magic to
 * the padding before the data) to fd from offset 0 (--verify compares it
 * with the file's); *len its bytes, where the data section starts. */
mk_status cv_gguf_header_to(const cv_plan *p, int fd, const char *what, uint64_t *len);
/* v rounded up to the data alignment (each tensor's data starts there). */
uint64_t cv_gguf_align(uint64_t v);

/* gguf_meta.c: serialize the key/value section into p->gguf_kv. */
mk_status cv_gguf_meta(const cv_src *s, const mk_conv_opts *o, cv_plan *p);

/* ggq_ops.c: CV_OP_GGQ (piece `part` holds the ggml type, `sop` the float
 * op producing float32 rows). */
size_t cv_ggq_scratch(const cv_piece *p, int64_t n);
mk_status cv_ggq_run(const mk_ckpt *ck, const cv_piece *p, int64_t a, int64_t n, unsigned char *scratch, void *out);
uint64_t cv_ggq_out_bytes(const cv_piece *p, int64_t n);

#endif
