/* A stored module: what one quantized (or plain) weight of a checkpoint is,
 * and where its bytes lie in the files.
 *
 * A weight is stored as one or more tensors, its parts (FORMATS.md 2-5):
 *   float      MK_SM_FLOAT  W.weight F32/BF16/F16
 *   FP8 block  MK_SM_FP8    W.weight F8_E4M3/E5M2 + W.weight_scale_inv grid
 *   MLX        MK_SM_MLX    W.weight U32 + W.scales (+ W.biases): affine,
 *                           mxfp4, mxfp8 or nvfp4 by the config's mode
 *   INT4 (CT)  MK_SM_CT     W.weight_packed I32 + W.weight_scale
 *                           (+ W.weight_zero_point; W.weight_shape checked)
 *   other      MK_SM_RAW    one tensor of any other dtype (by name / convert)
 * Its parts are named by the one companion-suffix table (mk_qview_suffix).
 * An mk_smod holds the parts, the kind, the logical shape (E stacked
 * experts of R x cols, or one R x cols matrix) and the quantization
 * parameters (an mk_wt without pointers). Every check a reader of the
 * weight relies on is made when it is opened, with a message naming the
 * tensor, what it has and what was expected.
 *
 * Three ways in, one per question a caller can ask, each with the checks
 * and messages its callers have always given:
 *   mk_smod_open     the model loader: "module M must be E x R x cols"
 *                    (the architecture knows the shape; checks against it)
 *   mk_smod_infer    inspect, verify by name: "what is tensor N?" (shape
 *                    from the tensors; bits from the config vs packed width)
 *   mk_smod_resolve  convert: a whole checkpoint grouped by suffix
 *                    (mk_smod_parts_add), each group checked for a rewrite
 *                    (FP8 over any stacking, CT weight_shape/zero points/
 *                    g_idx, strays and orphans)
 *
 * mk_smod_slice turns "expert e, rows [row0, row0+rows)" (a whole matrix, an
 * expert of a stacked tensor, the gate or up half of a fused gate_up_proj)
 * into byte ranges (shard, file offset, length), one per part (a tensor
 * never spans shards), from headers alone: a streaming expert store reads them with pread/io_uring, the
 * resident loader adds them to its mapping (mk_smod_view). The two agree by
 * construction and tests/unit/test_format_module.c proves it on every
 * layout. */
#ifndef MOEKIT_MODULE_H
#define MOEKIT_MODULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moekit/config.h"
#include "moekit/st.h"
#include "moekit/weight.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Role of a stored tensor inside its quantized module, from its name's
 * suffix (FORMATS.md sections 2-4). The one table of these suffixes. */
typedef enum mk_qrole {
    MK_QR_MAIN = 0,   /* no companion suffix: the module's own tensor */
    MK_QR_FP8_SCALE,  /* X.weight_scale_inv (of X.weight); fused FP8: X_scale_inv (of X) */
    MK_QR_CT_PACKED,  /* X.weight_packed: compressed-tensors' stored X.weight */
    MK_QR_CT_SCALE,   /* X.weight_scale */
    MK_QR_CT_ZP,      /* X.weight_zero_point */
    MK_QR_CT_SHAPE,   /* X.weight_shape */
    MK_QR_CT_GIDX,    /* X.weight_g_idx */
    MK_QR_MLX_SCALES, /* X.scales (of X.weight, or of X for non-.weight MLX tensors) */
    MK_QR_MLX_BIASES, /* X.biases */
    MK_QR_DROP,       /* X.activation_scale / X.input_scale: activation quantization, not weights */
} mk_qrole;

typedef struct mk_qsuffix {
    mk_qrole role;
    const char *suffix;  /* as it ends the name: ".scales", "_scale_inv", ... ("" for MAIN) */
    const char *logical; /* what replaces it in the module's logical name (".weight" or "") */
    const char *owner;   /* suffix of the stored tensor it accompanies (".weight",
                            ".weight_packed", ""), NULL when it accompanies none */
    size_t stem;         /* length of the name before the suffix */
} mk_qsuffix;

/* Role of tensor `name` by its suffix (longest match; a suffix alone is no
 * companion of anything). Defined in qview.c. */
mk_qrole mk_qview_suffix(const char *name, mk_qsuffix *out);

typedef enum mk_smod_kind {
    MK_SM_FLOAT = 0, /* one F32/BF16/F16 tensor */
    MK_SM_FP8,       /* F8 weight + block scale_inv grid */
    MK_SM_MLX,       /* U32 packed weight + scales (+ biases) */
    MK_SM_CT,        /* compressed-tensors INT4 weight_packed + weight_scale (+ zero point) */
    MK_SM_RAW,       /* one tensor of any other dtype (mk_smod_infer only): bytes, no weight view */
} mk_smod_kind;

/* Roles of a module's parts (index into mk_smod.part / mk_sslice.part). */
enum {
    MK_SP_WEIGHT = 0, /* the stored data (packed for MLX / CT) */
    MK_SP_SCALES,     /* FP8 scale_inv, MLX scales, CT weight_scale */
    MK_SP_BIASES,     /* MLX affine biases */
    MK_SP_ZP,         /* CT zero points (asymmetric) */
    MK_SP_N
};

typedef struct mk_smod {
    mk_smod_kind kind;
    const mk_tensor_info *part[MK_SP_N]; /* NULL where the kind has no such part */
    int64_t E;    /* experts stacked in the leading dim; 0: the tensor is one matrix */
    int64_t R;    /* rows of one matrix (per expert) */
    int64_t cols; /* logical in-features */
    int ndim;     /* logical shape (dequantized): [E,] R, cols, or a plain tensor's own */
    int64_t shape[MK_MAX_DIMS];
    mk_wt q;      /* fmt, bits, group, sdtype, block_r/c, global_scale; no pointers, rows/cols 0 */
    bool ct_symmetric; /* CT: no zero points, stored u = q + 8 */
} mk_smod;

/* Bytes of one part of a slice: [off, off+len) of shard `shard`'s file
 * (mk_ckpt_shard_path / mk_ckpt_shard_fd). t == NULL: no such part. */
typedef struct mk_srange {
    const mk_tensor_info *t;
    int shard;
    uint64_t off, len;
} mk_srange;

/* Rows [row0, row0+rows) of expert e of a module: its parts' byte ranges
 * and the 2-D weight they form (rows x cols, params of the module). Points
 * at its mk_smod, which must outlive it. */
typedef struct mk_sslice {
    const mk_smod *m;
    int64_t e, row0, rows;
    mk_srange part[MK_SP_N];
} mk_sslice;

/* What the caller (the model loader) knows the module must be: E experts
 * (0: a 2-D tensor) of R rows and `cols` logical in-features. */
typedef struct mk_smod_expect {
    int64_t E, R, cols;
} mk_smod_expect;

/* Open module `mod` whose data tensor is named `wname` (mod.weight, or a
 * fused tensor's own name) against the shape the architecture expects:
 * the kind comes from the stored dtype (or mod.weight_packed), every part
 * and parameter is checked. Header reads only (W.weight_shape by pread):
 * works on a checkpoint opened without mmap. */
mk_status mk_smod_open(const mk_ckpt *c, const mk_config *cfg, const char *mod, const char *wname,
                       const mk_smod_expect *x, mk_smod *out);

/* Open the logical tensor `name` from the tensors alone (inspect, verify by
 * name): MLX when mod.scales exists (cols = groups x group; leading dims
 * stacked), FP8 when name_scale_inv exists beside an F8 weight, else one
 * plain tensor (MK_SM_FLOAT for F32/BF16/F16, MK_SM_RAW otherwise; R = the
 * product of its leading dims). cfg may be NULL for plain files. Compressed-tensors
 * INT4 is MK_E_UNSUPPORTED here (read through convert). */
mk_status mk_smod_infer(const mk_ckpt *c, const mk_config *cfg, const char *name, mk_smod *out);

/* A whole checkpoint grouped into modules by name suffix (convert): the
 * tensors gathered for one module, by role. */
typedef struct mk_smod_parts {
    const mk_tensor_info *main; /* the data: X.weight, X, or X.weight_packed (packed) */
    const mk_tensor_info *fp8s, *cts, *ctzp, *ctshape, *ctgidx, *mlxs, *mlxb;
    bool packed; /* main is a compressed-tensors weight_packed */
} mk_smod_parts;

/* Put tensor t of role r into module `base`'s parts (MK_QR_DROP and
 * unknown roles are ignored). Two tensors for one slot: MK_E_FORMAT naming
 * both, prefixed with `where` (the checkpoint directory). */
mk_status mk_smod_parts_add(mk_smod_parts *g, mk_qrole r, const mk_tensor_info *t, const char *where,
                            const char *base);

/* Resolve gathered parts into a stored module with every check a rewrite
 * depends on (FP8 grids over any number of stacked matrices, compressed-
 * tensors shapes, weight_shape, zero points and trivial g_idx, MLX bits vs
 * packed width), messages prefixed with `where`. No main tensor: the
 * companions are orphans, MK_E_FORMAT (a caller that treats stray MLX
 * .scales/.biases as plain tensors does so before calling). A main tensor
 * that is not quantized: MK_SM_FLOAT (F32/BF16/F16) or MK_SM_RAW, refused
 * when a companion other than MLX scales/biases claims it or its dtype
 * cannot be decoded. CT modules: m->R, m->cols from weight_shape. */
mk_status mk_smod_resolve(const mk_ckpt *c, const mk_config *cfg, const char *where, const char *base,
                          const mk_smod_parts *g, mk_smod *out);

/* Byte ranges of rows [row0, row0+rows) of expert e (e = 0 for a 2-D
 * module). FP8 rows must start on a scale block; CT modules slice whole. */
mk_status mk_smod_slice(const mk_smod *m, int64_t e, int64_t row0, int64_t rows, mk_sslice *out);

/* The slice as an mk_wt over the checkpoint's mapping (mapping base +
 * ranges). MK_E_INTERNAL when the checkpoint is not mapped. CT: biases are
 * not stored; w->biases is left NULL (the caller derives them). */
mk_status mk_smod_view(const mk_ckpt *c, const mk_sslice *s, mk_wt *w);

/* FP8: the slice's block scales are finite (NaN or inf would poison every
 * output of their block); read by pread, no mapping needed. */
mk_status mk_smod_check_scales(const mk_ckpt *c, const mk_sslice *s);

/* "[d0, d1, ...]" of tensor t into buf (for messages). */
const char *mk_smod_shape_str(const mk_tensor_info *t, char *buf, size_t n);

/* Rows of a module's whole tensor seen as a 2-D matrix: E * R (or R). */
static inline int64_t mk_smod_rows(const mk_smod *m) { return (m->E ? m->E : 1) * m->R; }

#ifdef __cplusplus
}
#endif
#endif
