/* Internal model of a conversion, shared by the files of src/convert/.
 *
 * A conversion goes through three descriptions, each built from the one
 * before and from headers only (no tensor data is read until execution):
 *
 *   source (source.c)  cv_mod: one logical weight of the source checkpoint,
 *                      however it is stored (plain float, FP8 + scale_inv,
 *                      compressed-tensors packed INT4, MLX affine), with its
 *                      logical shape; cv_lt: a region of rows of a cv_mod
 *                      under its canonical HF text name (src/model/layout.c), e.g. one
 *                      expert of a fused gate_up_proj; cv_egroup: the routed
 *                      experts of one MoE block, checked complete (0..E-1).
 *   target (target.c)  cv_target: what the output layout asks for (naming,
 *                      expert grouping, norm convention, conv1d shape,
 *                      what is dropped or kept quantized, file writer and
 *                      config edit), one table entry per `--to`.
 *   plan (plan.c)      cv_out: one output tensor = an ordered list of
 *                      cv_piece, each a region of a source module and the
 *                      operation that produces its bytes (copy, float
 *                      re-encode, FP8/affine/INT4 dequantize, INT4 biases);
 *                      outputs are ordered and cut into shards exactly as
 *                      the target's writer (writer.h) orders them.
 *   execution          exec.c drives per-shard writers through the ordered
 *                      worker pipeline (pipe.c) with the operations of
 *                      ops.c: COPY, DECODE (decode.c: stored -> float32,
 *                      rounded once by encode.c) or QUANT (quant_ops.c:
 *                      decode, then MLX quantization); journal.c makes it
 *                      resumable; verify.c re-reads the output.
 *   cross-layout verify (`moekit verify A B`, xverify.c) opens two
 *                      checkpoints as sources and compares them unit by
 *                      canonical unit through the same pieces and ops.
 *   quantization       (`moekit quantize`, quant_impl.h) the plan's float
 *                      outputs that mlx-lm would quantize become weight /
 *                      scales / biases outputs of CV_OP_QUANT pieces.
 */
#ifndef MK_CONVERT_CONV_IMPL_H
#define MK_CONVERT_CONV_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moekit/config.h"
#include "moekit/convert.h"
#include "moekit/verify.h"
#include "moekit/kernels.h"
#include "moekit/st.h"
#include "io/outdir.h"
#include "model/layout.h"

/* ------------------------------------------------------------ helpers */

/* String -> pointer map (keys are borrowed: they must outlive the map). */
typedef struct cv_map cv_map;
cv_map *cv_map_new(size_t hint);
void cv_map_free(cv_map *m);
/* Insert; returns false when out of memory. An existing key is replaced. */
bool cv_map_put(cv_map *m, const char *key, void *val);
void *cv_map_get(const cv_map *m, const char *key);

char *cv_strdup(const char *s);
char *cv_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
bool cv_ends_with(const char *s, const char *suffix);
bool cv_is_float_dtype(mk_dtype t); /* F32, F16, BF16, F64 */
size_t cv_esize(mk_dtype t);        /* bytes per element of a whole-byte dtype */
/* "[a,b,c]" into buf. */
const char *cv_shape_str(char *buf, size_t n, int ndim, const int64_t *shape);

/* ------------------------------------------------------------- source */

typedef enum cv_kind {
    CV_FLOAT = 0, /* one float tensor (F32/F16/BF16/F64) */
    CV_RAW,       /* one non-float tensor (ints, bool): copied as bytes */
    CV_FP8,       /* F8_E4M3 / F8_E5M2 weight + block weight_scale_inv */
    CV_CT,        /* compressed-tensors weight_packed + weight_scale (+ zero point) */
    CV_MLX,       /* MLX affine weight (U32) + scales + biases */
} cv_kind;

enum { CV_T_MAIN = 0, CV_T_SCALE = 1, CV_T_BIAS = 2, CV_T_ZP = 3, CV_T_N = 4 };

typedef struct cv_mod {
    char *name;  /* source name of the logical tensor (".weight" for quantized modules) */
    char *cname; /* canonical text name (src/model/layout.c) */
    mk_part cls;
    cv_kind kind;
    const mk_tensor_info *t[CV_T_N]; /* MAIN: the data; SCALE, BIAS, ZP: companions or NULL */
    int ndim;
    int64_t shape[MK_MAX_DIMS]; /* logical (dequantized) shape */
    int64_t rows, cols;         /* rows = product of leading dims, cols = last dim */
    int64_t mrows;              /* rows of one 2-D matrix (FP8 block grid restarts per matrix) */
    mk_dtype vdt;               /* FLOAT: its dtype; FP8: the fp8 dtype; CT/MLX: the scale dtype */
    int bits, group;            /* CT / MLX */
    int block_r, block_c;       /* FP8 */
    bool ct_sym;                /* CT without zero points */
} cv_mod;

/* A region of rows of a module under a canonical name. */
typedef struct cv_lt {
    char *cname;
    mk_part cls;
    const cv_mod *mod;
    int64_t row0, nrows;
    int ndim;
    int64_t shape[MK_MAX_DIMS];
} cv_lt;

/* Routed experts of one MoE block: proj[p][e] for e in 0..n-1. */
typedef struct cv_egroup {
    char *mlp; /* canonical prefix, e.g. "model.layers.3.mlp" */
    mk_part cls;
    int n;
    cv_lt *proj[3];
} cv_egroup;

typedef struct cv_src {
    mk_ckpt *ck;
    mk_config cfg;
    char *dir;
    bool is_mlx;        /* stored the MLX way: stacked, renamed, norms already shifted */
    bool vl;            /* vision-language wrapper (config text_config / language_model names) */
    bool zero_centred;  /* family with (1 + w) norms */
    cv_mod *mods;
    size_t nmods;
    cv_lt *lts; /* non-expert logical tensors */
    size_t nlts;
    cv_egroup *groups;
    size_t ngroups;
    size_t ndropped;    /* activation/input scales etc. left out */
    bool bare;          /* a lone .safetensors file (quantize): every tensor kept as named */
    bool partial_experts; /* opened with CV_SRC_PARTIAL_EXPERTS: groups may have holes */
    uint64_t ebound;      /* most experts the tensors could hold (source.c), 0 = not yet known */
} cv_src;

/* Call cv_src_close(s) after either outcome: a failed open leaves what it
 * had gathered in *s. */
mk_status cv_src_open(const char *path, cv_src *s);
/* cv_src_open with flags. CV_SRC_PARTIAL_EXPERTS: an expert group may lack
 * experts (their proj[p][e].mod stay NULL) instead of failing: verify
 * reports them as missing units; every writer needs complete groups. */
/* (MiniMax's block_sparse_moe.experts.<e>.w1 / w3 / w2 are an expert
 * group for every target: mk_layout_expert's block table.) */
enum { CV_SRC_PARTIAL_EXPERTS = 1u << 0 };
mk_status cv_src_open_ex(const char *path, unsigned flags, cv_src *s);
/* A lone .safetensors file, no config: one plain module per tensor
 * (quant_plan.c). */
mk_status cv_src_open_bare(const char *path, cv_src *s);
/* A matrix (2+ dims) with a 0 dimension is refused: every plan step divides
 * by its rows or columns. Empty vectors are copied (one row of no bytes). */
mk_status cv_check_empty(const cv_src *s);
void cv_src_close(cv_src *s);

/* --------------------------------------------------------------- plan */

typedef enum cv_op {
    CV_OP_COPY = 0, /* bytes of one tensor of the module, unchanged */
    CV_OP_FLOAT,    /* float re-encode (+ add) */
    CV_OP_FP8,      /* FP8 block dequantize */
    CV_OP_AFFINE,   /* MLX affine dequantize */
    CV_OP_CT,       /* compressed-tensors INT4 dequantize */
    CV_OP_CT_BIAS,  /* MLX biases of a repacked INT4 module: -scale * zero point */
    CV_OP_QUANT,    /* quantize (quant_ops.c): one part of an MLX quantized module */
    CV_OP_FPDQ,     /* MLX mxfp4/mxfp8/nvfp4 dequantize */
    CV_OP_GGQ,      /* ggml block quantize (ggq_ops.c): `part` the ggml type, `sop` the float op */
    CV_OP_GATHER,   /* strided byte gather, one or two sources zipped (gather.c): gpt_oss experts */
    CV_OP_COUNT
} cv_op;

typedef struct cv_piece {
    cv_op op;
    unsigned char part; /* COPY: which tensor of the module (CV_T_*) */
    mk_dtype dt;        /* output dtype */
    float add;          /* added to every value (norm shift), 0 for none */
    unsigned char negexp; /* FLOAT: then x -> -exp(x) (qwen3next's A_log as llama.cpp's ssm_a) */
    /* GGQ: column blocks reordered as llama.cpp's qwen35 converter does
     * (_reorder_v_heads): a row's vr_nk * vr_r blocks of vr_hd values go
     * from grouped by key head (g * vr_r + j) to tiled (j * vr_nk + g);
     * vr_nk 0: none */
    int vr_nk, vr_r, vr_hd;
    /* GGQ: the piece's rows (one head's k rows of DeepSeek's kv_b_proj, one
     * gpt_oss expert's gate_up_proj / down_proj / bias rows) are written
     * transposed (cols rows of nrows values, llama.cpp's attn_k_b); tr 2 / 3
     * keeps only the even / odd rows of the transpose (gpt_oss's gate and up,
     * interleaved in the columns); such a piece runs as one unit */
    unsigned char tr;
    const cv_mod *mod;
    int64_t row0, nrows; /* region in the module's flattened rows */
    int64_t ocols;       /* output elements per row (cols, or groups for CT_BIAS) */
    uint64_t out_off;    /* byte offset within its output tensor */
    uint64_t nbytes;     /* output bytes */
    /* CV_OP_QUANT: `part` is the tensor emitted (CV_T_MAIN weight, CV_T_SCALE,
     * CV_T_BIAS), `sop` the op that produces the float input, q the module */
    unsigned char sop;
    struct cv_qmod *q;
    /* CV_OP_GATHER (gather.c): output row r < nrows is, for c < g_ncols,
     * g_blk bytes of tensor `part` of mod at byte g_base + r*g_rstep +
     * c*g_cstep, followed (zip) by the same bytes of tensor g_part2 of g_mod2
     * when g_mod2 is set: a de-interleave, an interleave, a transpose or
     * both, of stored bytes that are never decoded. g_mx: the units are
     * MXFP4 blocks of 16 bytes (transformers' nibble order) and g_mod2 holds
     * their E8M0 scales, one byte per block at the block's offset / 16;
     * each unit is written as ggml's block_mxfp4 (gather.c) */
    const cv_mod *g_mod2;
    unsigned char g_part2;
    unsigned char g_mx;
    uint64_t g_base, g_rstep, g_cstep;
    uint32_t g_blk;
    int64_t g_ncols;
} cv_piece;

typedef struct cv_out {
    char *name;
    mk_dtype dt;
    int ndim;
    int64_t shape[MK_MAX_DIMS];
    uint64_t nbytes;
    cv_piece *pc;
    int npc;
    int shard;
    /* MLX quantized module written by this output (the .weight of it) */
    char *qpath;
    int qbits, qgroup;
    const char *qmode; /* its MLX mode when not affine ("mxfp4", ...): a static string; NULL: affine */
    /* routed expert written by this output (packed layouts): xg = its
     * expert group's index + 1 (0: not a routed expert), xe = the expert
     * (-1: a stack of all of them); rank: place in the writer's order */
    int xg, xe;
    size_t rank;
    int ggt; /* GGUF target: the ggml type (moekit/ggml_quant.h); -1 otherwise */
} cv_out;

#define CV_PACK_ALIGN 4096u /* where a packed shard's data buffer starts (writer.h) */

typedef struct cv_plan {
    const struct cv_target *tgt; /* the output target (target.h) */
    cv_out *outs; /* in the target writer's order (safetensors: alignment descending, then name) */
    size_t nouts;
    int nshards;
    size_t *shard_first; /* nshards + 1 entries */
    uint64_t *shard_bytes;
    char **shard_files;
    uint64_t total_bytes;
    uint64_t fingerprint;
    bool oss_mxfp4;      /* gpt_oss MXFP4 experts rewritten (HF blocks <-> MLX mxfp4): config blocks */
    bool quantized;      /* MLX output carries quantized modules from a CT source */
    int q_bits, q_group; /* their default */
    mk_dtype float_dt;   /* dtype of dequantized floats (for config "dtype") */
    size_t nstacked;     /* expert groups written stacked/fused */
    struct cv_qstate *qs;      /* quantization (quant_plan.c), NULL when none */
    unsigned scratch_per_elem; /* worker scratch bytes per chunk element; 0: 8 */
    /* packed expert layout (mk_conv_opts.pack_experts): outputs of each
     * expert together, experts first in each shard, shards never split an
     * expert, data buffers 4 KiB-aligned (writer.h) */
    bool packed;
    uint64_t xpacked, xaligned; /* experts, and those starting 4 KiB-aligned */
    uint64_t xunaligned_bytes;  /* size of the first expert block that is not a multiple of 4 KiB */
    char pack_note[320];
    unsigned char *gguf_kv;    /* GGUF target: the serialized key/value section (gguf_meta.c) */
    size_t gguf_kv_len;
    uint64_t gguf_kv_count;
} cv_plan;

mk_status cv_plan_build(const cv_src *s, const mk_conv_opts *o, cv_plan *p);
/* The piece that produces logical tensor lt's values in float dtype dt
 * (+ add): COPY when the stored bytes already are that, else the module's
 * re-encode or dequantize op. Integer tensors only as COPY in their own
 * dtype (MK_E_INTERNAL otherwise). pc->out_off is left 0. */
mk_status cv_float_piece(const cv_lt *lt, mk_dtype dt, float add, cv_piece *pc);
void cv_plan_free(cv_plan *p);

/* ---------------------------------------------------------------- ops */

/* ops.c: the operation of a piece (COPY, a decoder, or QUANT). */

/* Row or element unit of an op: FLOAT and COPY chunk by elements, the
 * structured ones by rows (a group or a scale block never straddles). */
bool cv_op_by_rows(cv_op op);
/* Bytes of scratch an op needs for `n` units of piece p (input bytes +
 * float32 values). */
size_t cv_op_scratch(const cv_piece *p, int64_t n);
/* Produce units [a, a+n) of piece p (rows or elements of the region) in
 * dtype `dt` into `out`. `scratch` holds cv_op_scratch bytes. */
mk_status cv_op_run(const mk_ckpt *ck, const cv_piece *p, mk_dtype dt, int64_t a, int64_t n, void *scratch,
                    void *out);
/* Source byte range of a COPY piece. */
void cv_op_copy_range(const cv_piece *p, uint64_t *off, uint64_t *len);
/* Output bytes of units [a, a+n) of piece p in dtype dt. */
uint64_t cv_op_out_bytes(const cv_piece *p, mk_dtype dt, int64_t n);
/* Units of a piece (rows or elements). */
int64_t cv_op_units(const cv_piece *p);

/* decode.c: stored form -> float32 -> dt (FLOAT, FP8, AFFINE, CT, CT_BIAS,
 * FPDQ), the same contract as cv_op_run for those ops; errors name the
 * decoder and the module. */
bool cv_dec_is(cv_op op);
size_t cv_dec_scratch(const cv_piece *p, int64_t n);
mk_status cv_dec_run(const mk_ckpt *ck, const cv_piece *p, mk_dtype dt, int64_t a, int64_t n, void *scratch,
                     void *out);

/* gather.c: CV_OP_GATHER (stored bytes moved, never decoded: the output
 * is byte-exact by construction). Units are output rows. */
uint64_t cv_gather_row_bytes(const cv_piece *p);
size_t cv_gather_scratch(const cv_piece *p, int64_t n);
mk_status cv_gather_run(const mk_ckpt *ck, const cv_piece *p, int64_t a, int64_t n, void *scratch, void *out);

/* encode.c: n float32 values -> dt (F32, F16 or BF16) at out, rounded once
 * (nearest even). out is 2-aligned for the 16-bit dtypes. */
void cv_encode(mk_dtype dt, const float *v, int64_t n, unsigned char *out);

/* ----------------------------------------------------------- pipeline */

typedef struct cv_pipe_ops {
    /* Is item i produced by a worker (true) or handled by the consumer alone? */
    bool (*parallel)(void *ctx, size_t i);
    /* Produce item i into out (slot capacity) and set *len; any thread. */
    mk_status (*produce)(void *ctx, size_t i, void *scratch, void *out, size_t *len);
    /* Consume item i, in item order, on the calling thread (out NULL when
     * the item is not parallel). */
    mk_status (*consume)(void *ctx, size_t i, const void *out, size_t len);
} cv_pipe_ops;

/* Run items 0..n-1: `threads` workers produce ahead into `nslots` slots of
 * slot_bytes while the caller consumes in order (reads overlap writes).
 * Memory: nslots*slot_bytes + threads*scratch_bytes. */
mk_status cv_pipe_run(int threads, size_t nslots, size_t slot_bytes, size_t scratch_bytes, size_t n,
                      const cv_pipe_ops *ops, void *ctx);

/* ------------------------------------------------------- quantization */

/* quant_plan.c: after the outputs are built (before sorting), replace each
 * quantizable float output by its weight/scales/biases outputs. */
mk_status cv_qplan_apply(const cv_src *s, const mk_conv_opts *o, cv_plan *p);
/* After sorting and sharding: which part of each module is computed first
 * (the leader) and where the other parts wait in the spill file. */
mk_status cv_qplan_finish(cv_plan *p);
/* Feed what a QUANT piece's bytes depend on to an XXH3_state_t. */
void cv_qplan_hash(void *xxh3_state, const cv_piece *pc);
void cv_qstate_free(struct cv_qstate *q); /* NULL ok */
/* config.json (a json_t *): the quantization blocks of the output. */
mk_status cv_qplan_config(const cv_plan *p, void *json_root);
/* Bare-file output: a config.json with only the quantization blocks. */
mk_status cv_qplan_config_bare(const cv_plan *p, const char *dir);
/* Copy the per-module results into the caller's job. */
mk_status cv_qstate_export(const cv_plan *p, mk_qjob *job);
/* Did a tensor's data (NaN/Inf) fail the run? A rerun cannot resume that. */
bool cv_qstate_bad_data(const struct cv_qstate *q);
/* The spill file in DST.partial/ where parts computed ahead wait. */
mk_status cv_qstate_open(struct cv_qstate *q, const char *partial);
void cv_qstate_close(struct cv_qstate *q, const char *partial); /* and remove it */

/* quant_ops.c: the QUANT operation (decode.c's float rows, then MLX
 * quantization through src/quant), dispatched by ops.c. */
size_t cv_qop_scratch(const cv_piece *p, int64_t n);
mk_status cv_qop_run(const mk_ckpt *ck, const cv_piece *p, mk_dtype dt, int64_t a, int64_t n,
                     unsigned char *scratch, void *out);
uint64_t cv_qop_out_bytes(const cv_piece *p, int64_t n);
/* Is QUANT piece p copied from the spill file? True when it is not its
 * module's leader and the leader's shard was written by this process
 * (`written[k]`); otherwise it is computed again. */
bool cv_qop_from_spill(const cv_piece *p, const bool *written);
void cv_qop_spill_range(const cv_piece *p, int *fd, uint64_t *off, uint64_t *len);

/* ------------------------------------------------------------ journal */

typedef struct cv_journal {
    uint64_t fingerprint;
    int nshards;
    bool *done;
    uint64_t *size;
    char (*hash)[33];
    bool complete;
} cv_journal;

#define CV_JOURNAL_NAME MK_OUTDIR_JOURNAL

mk_status cv_journal_init(cv_journal *j, int nshards, uint64_t fingerprint);
/* Load DIR's journal; MK_E_NOTFOUND when absent. */
mk_status cv_journal_load(const char *dir, int nshards, cv_journal *j);
mk_status cv_journal_save(const char *dir, const cv_journal *j, const cv_plan *p);
void cv_journal_free(cv_journal *j);
/* xxh3-128 hex of a whole file, read with a bounded buffer. */
mk_status cv_file_hash(const char *path, uint64_t *size, char hex[33]);

/* ------------------------------------------------------- config files */

/* Write DIR/config.json for the plan's target (its config_edit), copy
 * tokenizer / generation files from the source directory, and write the
 * target writer's shard index. */
mk_status cv_config_write(const cv_src *s, const cv_plan *p, const char *dir);

/* ------------------------------------------------------------- verify */

/* Cross-layout verify (xverify.c), pure helpers kept apart for unit tests. */

/* Name order with digit runs compared as numbers ("experts.2" < "experts.10"). */
int cv_natcmp(const char *a, const char *b);
/* Same elements in the same order: shapes equal once size-1 dims are
 * dropped (conv1d (C,1,K) vs MLX (C,K,1)). */
bool cv_shape_flat_eq(int na, const int64_t *a, int nb, const int64_t *b);

/* Verdict of a compared unit: bytes equal -> identical; else numeric values
 * (`numeric`: decodable) with no NaN/Inf mismatch and rel L2 <= tol ->
 * within tolerance; else differs. */
mk_xverify_result cv_xv_judge(bool bytes_equal, bool numeric, const mk_diff *d, double tol);

mk_status cv_verify(const cv_src *s, const cv_plan *p, const char *outdir, int threads, uint64_t chunk,
                    mk_conv_stats *st, bool quiet);

#endif
