/* Internal model of quantization inside a conversion (`moekit quantize`),
 * shared by quant_job.c, quant_plan.c and quant_ops.c.
 *
 *   job (quant_job.c)   mk_qjob: what the caller asked for (defaults,
 *                       recipe, exact per-module entries, overrides) and,
 *                       after the run, the per-module results. cv_qjob_choose
 *                       resolves one module path to a cv_qchoice.
 *   plan (quant_plan.c) cv_qmod: one quantized module of the output, whose
 *                       2 or 3 parts (weight, scales, biases) are separate
 *                       outputs of the plan made of CV_OP_QUANT pieces.
 *                       The safetensors writer orders tensors by alignment
 *                       then name, so the parts of a module lie far apart in
 *                       the output (all U32 weights come before all bf16
 *                       scales). The part written first is the module's
 *                       leader: computing it quantizes the rows once and
 *                       parks the other parts' bytes in a spill file under
 *                       DST.partial/, from which they are later copied.
 *   ops (quant_ops.c)   the CV_OP_QUANT operation (source rows -> float
 *                       input by decode.c -> mk_quant_rows -> emitted part
 *                       + spill + error sums) and the spill file. */
#ifndef MK_CONVERT_QUANT_IMPL_H
#define MK_CONVERT_QUANT_IMPL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "convert/conv_impl.h"
#include "moekit/quant.h"
#include "moekit/quant_opt.h"
#include "moekit/st.h"

/* ---------------------------------------------------------------- job */

typedef struct cv_qov { /* one --override */
    char *text;
    pcre2_code *re;
    bool to_float;
    mk_qmode mode;
    int bits, group;
} cv_qov;

typedef struct cv_qexact { /* one exact per-module entry */
    char *path;
    bool quant;
    mk_qmode mode;
    int bits, group;
} cv_qexact;

struct mk_qjob {
    mk_qmode mode; /* defaults */
    int bits, group;
    char recipe[16]; /* "" when none */
    int rlow, rhigh;
    cv_qov *ov;
    size_t nov;
    cv_qexact *ex;
    size_t nex, exc;
    cv_map *exmap; /* path -> cv_qexact index + 1 (as a pointer-sized integer) */
    bool allow_nonfinite;
    /* calibrated quantization (mk_qjob_set_method): the method, and the
     * input second moments it reads (a safetensors file of F32 [cols,
     * cols] tensors named by module path, `moekit profile --hessian`) */
    mk_qalgo method;
    double damp;
    mk_ckpt *stats;
    char *stats_path;
    /* results (mk_conv_run fills them) */
    mk_qjob_module *res;
    size_t nres;
    char **strs; /* strings the results point to */
    size_t nstrs;
    mk_qjob_totals tot;
};

/* How one module is stored. */
typedef struct cv_qchoice {
    bool quant;
    mk_qmode mode;
    int bits, group;
    bool router;      /* protected router: affine 8-bit g64 */
    const char *note; /* static: why float, or "router" */
} cv_qchoice;

/* What the choice depends on beyond the path. */
typedef struct cv_qctx {
    mk_arch arch;
    int num_layers; /* recipe layer rule */
    bool bare;      /* a lone file: no family rules (routers) */
} cv_qctx;

/* Choice for module `path` with input dim `cols`. `alt` (or NULL) is a
 * second name the module answers to: the switch_mlp stack of a per-expert
 * path (exact entries of `path` win over `alt`'s; overrides match either). */
void cv_qjob_choose(const mk_qjob *q, const cv_qctx *c, const char *path, const char *alt, int64_t cols,
                    cv_qchoice *out);
bool cv_qchoice_same(const cv_qchoice *a, const cv_qchoice *b);
/* Keep a copy of s among the job's result strings; NULL when out of memory. */
const char *cv_qjob_keep(mk_qjob *q, const char *s);
void cv_qjob_clear_results(mk_qjob *q);

/* --------------------------------------------------------------- plan */

typedef struct cv_qstate cv_qstate;

typedef struct cv_qmod {
    char *path;         /* MLX module path */
    const char *source; /* name of the first source tensor */
    cv_qchoice ch;
    mk_qparams qp;
    mk_dtype in_dt;     /* dtype the quantizer reads (the float output dtype) */
    mk_dtype sdt;       /* scales (and biases) dtype */
    int64_t rows, cols; /* rows: product of the leading dims */
    int nparts;         /* 3 (affine) or 2 (fp modes: no biases) */
    size_t rb[3];       /* bytes per row of each part, indexed CV_T_MAIN / SCALE / BIAS */
    int shard[3];       /* shard of each part's output */
    size_t order[3];    /* position of each part's output in the plan */
    int leader;         /* part computed first (writer order) */
    uint64_t spill_off[3]; /* followers: start of their bytes in the spill file */
    cv_qstate *st;
    pthread_mutex_t mu;
    mk_quant_err err;   /* accumulated by the leader */
    uint64_t nonfinite;
    size_t seq;         /* planning order, for the report */
    /* calibrated quantization (job method other than rtn, affine modules):
     * one set of statistics per expert of a stack (nh = experts) or one
     * (nh = 1), each covering hrows rows; hin[k] NULL when the statistics
     * file has none (the module then gets the unweighted mse search).
     * hs[k] is prepared on first use under mu and freed once the leader
     * has quantized all of its hrows rows (hdone), so at most the modules
     * in flight hold a factor */
    int nh;
    int64_t hrows;
    const mk_tensor_info **hin;
    mk_qstats *hs;
    int64_t *hdone;
} cv_qmod;

/* A quantizable-kind module kept in float, for the report. */
typedef struct cv_qfloat {
    char *path;
    const char *source;
    int64_t rows, cols;
    uint64_t bytes;
    char *note;
    size_t seq;
} cv_qfloat;

struct cv_qstate {
    const mk_qjob *job;
    bool bare;
    cv_qmod **mods;
    size_t nmods, capm;
    cv_qfloat *fl;
    size_t nfl, capf;
    int spill_fd;
    char *spill_path;
    uint64_t spill_bytes;
    int bad_data;       /* set (atomically) when a tensor's values failed the run */
    uint64_t n_cal, n_uncal; /* calibrated quantization: pieces with / without statistics */
};

#define CV_QSPILL_NAME ".moekit-quant-spill"

#endif
