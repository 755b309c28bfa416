/* The quantize operation of the convert pipeline (MLX quantization, an
 * ENCODE) and its spill file.
 *
 * CV_OP_QUANT produces one part (weight, scales or biases) of rows
 * [a, a+n) of a quantized module's piece:
 *   1. the float input: the piece's source operation (`sop`: a byte read of
 *      a float tensor, a float re-encode, an FP8 / INT4 / MLX dequantize,
 *      or gpt_oss's gather of float expert rows)
 *      run into scratch in the module's input dtype, exactly the bytes
 *      `convert --to mlx` writes for those rows;
 *   2. a NaN/Inf count (an error naming the tensor unless allowed);
 *   3. mk_quant_rows (MLX-exact) into the slot (the emitted part) and
 *      scratch (the others);
 *   4. at the module's leader only: the other parts pwritten to the spill
 *      file at their planned offsets (the consumer later copies them into
 *      their outputs with copy_file_range), and the error sums of
 *      ||W - dq(q(W))|| merged into the module under its mutex.
 * A follower whose leader ran in an earlier (resumed) run finds no spill
 * and computes its rows again (steps 1-3).
 *
 * This is the quantizing ENCODE of the convert ops: step 1 is decode.c's
 * (cv_dec_run, never the ops.c dispatcher, which calls this file), steps
 * 2-4 turn float rows into MLX's stored form. */
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "convert/quant_impl.h"
#include "core/alloc.h"
#include "io/os.h"

static size_t al(size_t n) { return (n + 63) & ~(size_t)63; }

/* The float piece behind a QUANT piece. */
static cv_piece src_piece(const cv_piece *p) {
    cv_piece t = *p;
    t.op = (cv_op)p->sop;
    t.dt = p->q->in_dt;
    t.part = CV_T_MAIN;
    t.q = NULL;
    /* a gather (gpt_oss's experts: rows de-interleaved or transposed) keeps
     * its own row width, in bytes */
    t.ocols = t.op == CV_OP_GATHER ? (int64_t)cv_gather_row_bytes(&t) : p->mod->cols;
    return t;
}

/* Scratch of the source op for un units. */
static size_t src_scratch(const cv_piece *t, int64_t un) {
    return t->op == CV_OP_COPY ? 0 : t->op == CV_OP_GATHER ? al(cv_gather_scratch(t, un)) : al(cv_dec_scratch(t, un));
}

/* Units of the source op for rows [a, a+n): FLOAT counts elements. */
static void src_units(const cv_piece *t, int64_t cols, int64_t a, int64_t n, int64_t *u0, int64_t *un) {
    bool el = t->op == CV_OP_FLOAT;
    *u0 = el ? a * cols : a;
    *un = el ? n * cols : n;
}

size_t cv_qop_scratch(const cv_piece *p, int64_t n) {
    const cv_qmod *q = p->q;
    cv_piece t = src_piece(p);
    int64_t u0, un;
    src_units(&t, q->cols, 0, n, &u0, &un);
    size_t s = src_scratch(&t, un);
    s += al((size_t)n * (size_t)q->cols * cv_esize(q->in_dt));
    for (int k = 0; k < q->nparts; k++)
        s += al((size_t)n * q->rb[k]);
    return s + 64;
}

uint64_t cv_qop_out_bytes(const cv_piece *p, int64_t n) { return (uint64_t)n * p->q->rb[p->part]; }

static mk_status nonfinite_error(const cv_piece *p, int64_t a, int64_t n, uint64_t bad) {
    cv_qmod *q = p->q;
    __atomic_store_n(&q->st->bad_data, 1, __ATOMIC_SEQ_CST);
    return mk_err(MK_E_FORMAT,
                  "%llu NaN/Inf value%s in rows %lld..%lld of it (module '%s'); refusing to quantize "
                  "non-finite weights (--allow-nonfinite quantizes them anyway)",
                  (unsigned long long)bad, bad == 1 ? "" : "s", (long long)(p->row0 + a),
                  (long long)(p->row0 + a + n - 1), q->path);
}

/* ------------------------------------------------------ error sums */


/* The n `bits`-bit codes of a group starting at byte p (a group of 16 or
 * more elements always starts on a byte: 16 * bits is a multiple of 8). */
static inline void unpack(const unsigned char *p, int bits, int n, uint8_t *q) {
    if (bits == 8) {
        memcpy(q, p, (size_t)n);
    } else if (bits == 4) {
        for (int j = 0; j < n / 2; j++) {
            q[2 * j] = p[j] & 15u;
            q[2 * j + 1] = (uint8_t)(p[j] >> 4);
        }
    } else {
        uint64_t acc = 0;
        int nb = 0;
        const uint64_t mask = (1u << bits) - 1u;
        for (int j = 0; j < n; j++) {
            while (nb < bits) {
                acc |= (uint64_t)*p++ << nb;
                nb += 8;
            }
            q[j] = (uint8_t)(acc & mask);
            acc >>= bits;
            nb -= bits;
        }
    }
}

/* ||W - dq(q(W))|| sums of affine rows (dequantized in float32 as
 * mk_quant_err_rows does it, a group at a time with 8-lane vectors), and
 * the number of non-finite inputs, whose groups are left out of the sums.
 * Scales and biases are in the input dtype. The body is compiled twice,
 * for the baseline and for AVX2 (picked at run time): the sums are only
 * statistics, the bytes written never depend on them. */
typedef float qv_f8 __attribute__((vector_size(32)));
typedef int32_t qv_i8 __attribute__((vector_size(32)));
typedef uint16_t qv_h8 __attribute__((vector_size(16)));
typedef uint8_t qv_b8 __attribute__((vector_size(8)));

/* Codes j..j+7 of a group's bit stream at p as floats (2/4/8 bits from
 * one load; 3/5/6 from codes unpacked beforehand into qv). */
static inline __attribute__((always_inline)) void codes8(const unsigned char *p, int bits, int j,
                                                         const uint8_t *qv, qv_f8 *out) {
    if (bits == 4 || bits == 2) {
        uint32_t w = 0;
        memcpy(&w, p + j * bits / 8, bits == 4 ? 4 : 2); /* 8 codes of `bits` bits */
        qv_i8 sh = {0, 1, 2, 3, 4, 5, 6, 7};
        qv_i8 c = ((qv_i8){0} + (int32_t)w) >> (sh * bits) & ((1 << bits) - 1);
        *out = __builtin_convertvector(c, qv_f8);
        return;
    }
    qv_b8 c8;
    memcpy(&c8, bits == 8 ? p + j : qv + j, sizeof c8);
    *out = __builtin_convertvector(c8, qv_f8);
}

static inline __attribute__((always_inline)) void affine_err_body(const cv_qmod *q, const unsigned char *in,
                                                                   const unsigned char *wq,
                                                                   const unsigned char *sc,
                                                                   const unsigned char *bi, int64_t n,
                                                                   mk_dtype dt, int bits, mk_quant_err *acc,
                                                                   uint64_t *bad) {
    const int G = q->qp.group;
    const int64_t C = q->cols, ng = C / G;
    const size_t es = cv_esize(dt);
    float xf[128];
    uint8_t qv[128];
    for (int64_t r = 0; r < n; r++) {
        const unsigned char *xr = in + (size_t)r * (size_t)C * es, *wr = wq + (size_t)r * q->rb[CV_T_MAIN];
        const unsigned char *sr = sc + (size_t)r * q->rb[CV_T_SCALE], *br = bi + (size_t)r * q->rb[CV_T_BIAS];
        qv_f8 e2 = {0}, r2 = {0};
        qv_i8 mx = {0};
        for (int64_t g = 0; g < ng; g++) {
            const unsigned char *xg = xr + (size_t)(g * G) * es, *wg = wr + (size_t)(g * G * bits / 8);
            const float s = mk_dtype_load_f32(dt, sr, g), b = mk_dtype_load_f32(dt, br, g);
            if (bits != 2 && bits != 4 && bits != 8)
                unpack(wg, bits, G, qv);
            if (dt == MK_DT_F16)
                mk_dtype_to_f32(dt, xg, xf, (size_t)G);
            for (int j = 0; j < G; j += 8) {
                qv_f8 x;
                if (dt == MK_DT_BF16) {
                    qv_h8 h;
                    memcpy(&h, xg + 2 * j, sizeof h);
                    x = (qv_f8)(__builtin_convertvector(h, qv_i8) << 16);
                } else if (dt == MK_DT_F32)
                    memcpy(&x, xg + 4 * j, sizeof x);
                else
                    memcpy(&x, xf + j, sizeof x);
                qv_f8 c;
                codes8(wg, bits, j, qv, &c);
                qv_f8 e = x - (s * c + b);
                qv_i8 ae = (qv_i8)e & 0x7fffffff, gt = ae > mx; /* |e| as integers: ordered like the floats */
                mx = (gt & ae) | (~gt & mx);
                e2 += e * e;
                r2 += x * x;
            }
        }
        qv_f8 mf = (qv_f8)mx;
        double re = 0, rr = 0, rm = 0;
        for (int k = 0; k < 8; k++) {
            re += e2[k];
            rr += r2[k];
            rm = rm > mf[k] ? rm : mf[k];
        }
        if (!(rr < INFINITY)) { /* NaN or Inf among the inputs: count them; the row stays out of the sums */
            for (int64_t j = 0; j < C; j++)
                *bad += !isfinite(mk_dtype_load_f32(dt, xr, j));
            continue;
        }
        acc->err2 += re;
        acc->ref2 += rr;
        acc->max_abs = rm > acc->max_abs ? rm : acc->max_abs;
        acc->n += (uint64_t)C;
    }
}

/* The common cases with dtype and width known to the compiler. */
#define AFFINE_ERR_CASES(q, in, wq, sc, bi, n, acc, bad)                                              \
    do {                                                                                             \
        mk_dtype dt_ = (q)->in_dt;                                                                   \
        int b_ = (q)->qp.bits;                                                                       \
        if (dt_ == MK_DT_BF16 && b_ == 4)                                                            \
            affine_err_body(q, in, wq, sc, bi, n, MK_DT_BF16, 4, acc, bad);                          \
        else if (dt_ == MK_DT_BF16 && b_ == 8)                                                       \
            affine_err_body(q, in, wq, sc, bi, n, MK_DT_BF16, 8, acc, bad);                          \
        else if (dt_ == MK_DT_F32 && b_ == 4)                                                        \
            affine_err_body(q, in, wq, sc, bi, n, MK_DT_F32, 4, acc, bad);                           \
        else                                                                                         \
            affine_err_body(q, in, wq, sc, bi, n, dt_, b_, acc, bad);                                \
    } while (0)

static void affine_err_base(const cv_qmod *q, const unsigned char *in, const unsigned char *wq,
                            const unsigned char *sc, const unsigned char *bi, int64_t n, mk_quant_err *acc,
                            uint64_t *bad) {
    AFFINE_ERR_CASES(q, in, wq, sc, bi, n, acc, bad);
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static void affine_err_avx2(const cv_qmod *q, const unsigned char *in,
                                                            const unsigned char *wq, const unsigned char *sc,
                                                            const unsigned char *bi, int64_t n,
                                                            mk_quant_err *acc, uint64_t *bad) {
    AFFINE_ERR_CASES(q, in, wq, sc, bi, n, acc, bad);
}
#endif

static void affine_err(const cv_qmod *q, const unsigned char *in, const unsigned char *wq, const unsigned char *sc,
                       const unsigned char *bi, int64_t n, mk_quant_err *acc, uint64_t *bad) {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2")) {
        affine_err_avx2(q, in, wq, sc, bi, n, acc, bad);
        return;
    }
#endif
    affine_err_base(q, in, wq, sc, bi, n, acc, bad);
}

/* Rows [a, a+n) of the piece quantized with the job's calibrated method
 * and the statistics of the expert (or module) they belong to, prepared on
 * first use and freed once the leader has done all of that expert's rows.
 * Rows of a piece never straddle two experts (a stack's pieces are its
 * experts). Rows whose statistics the file lacks: unweighted mse. */
static mk_status calibrated_rows(const cv_piece *p, int64_t a, int64_t n, const unsigned char *in,
                                 unsigned char *const *buf) {
    cv_qmod *q = p->q;
    const mk_qjob *j = q->st->job;
    const int64_t R = (int64_t)(p->out_off / q->rb[p->part]) + a;
    const int e = (int)(R / q->hrows);
    if (e < 0 || e >= q->nh || (R + n - 1) / q->hrows != e)
        return mk_err(MK_E_INTERNAL, "module '%s': rows %lld..%lld straddle its statistics (%lld rows each)",
                      q->path, (long long)R, (long long)(R + n - 1), (long long)q->hrows);
    if (!q->hin[e])
        return mk_quant_rows_opt(&q->qp, MK_QALGO_MSE, NULL, q->in_dt, in, n, q->cols, buf[0], buf[1], buf[2]);
    mk_status st = MK_OK;
    pthread_mutex_lock(&q->mu);
    if (!q->hs[e].imp) {
        size_t nn = (size_t)(q->cols * q->cols);
        float *h = mk_malloc(nn * sizeof(float));
        st = h ? mk_ckpt_read(j->stats, q->hin[e], 0, h, nn * sizeof(float))
               : mk_err(MK_E_NOMEM, "module '%s': no memory for its %lld x %lld input statistics", q->path,
                        (long long)q->cols, (long long)q->cols);
        if (st == MK_OK)
            st = mk_qstats_prepare(h, q->cols, j->method, j->damp, q->hin[e]->name, &q->hs[e]);
        if (st != MK_OK)
            st = mk_err_wrap(st, "--hessian %s", j->stats_path);
        free(h);
    }
    pthread_mutex_unlock(&q->mu);
    MK_TRY(st);
    st = mk_quant_rows_opt(&q->qp, j->method, &q->hs[e], q->in_dt, in, n, q->cols, buf[0], buf[1], buf[2]);
    if (st == MK_OK && p->part == q->leader) {
        pthread_mutex_lock(&q->mu);
        q->hdone[e] += n;
        if (q->hdone[e] >= q->hrows) { /* every row of this expert is done: drop its factor */
            mk_qstats_free(&q->hs[e]);
            q->hdone[e] = 0; /* a follower of a resumed run prepares it again */
        }
        pthread_mutex_unlock(&q->mu);
    }
    return st;
}

mk_status cv_qop_run(const mk_ckpt *ck, const cv_piece *p, mk_dtype dt, int64_t a, int64_t n,
                     unsigned char *scratch, void *out) {
    (void)dt; /* the part's dtype is fixed by the module */
    cv_qmod *q = p->q;
    const int64_t C = q->cols;
    const size_t es = cv_esize(q->in_dt), nin = (size_t)n * (size_t)C;
    cv_piece t = src_piece(p);
    int64_t u0, un;
    src_units(&t, C, a, n, &u0, &un);
    unsigned char *src = scratch;
    unsigned char *in = src + src_scratch(&t, un);
    unsigned char *buf[3] = {NULL, NULL, NULL}, *cur = in + al(nin * es);
    for (int k = 0; k < q->nparts; k++) {
        buf[k] = k == p->part ? out : cur;
        cur += k == p->part ? 0 : al((size_t)n * q->rb[k]);
    }
    /* 1. the float rows */
    if (t.op == CV_OP_COPY)
        MK_TRY(mk_ckpt_read(ck, p->mod->t[CV_T_MAIN], (uint64_t)(p->row0 + a) * (uint64_t)C * es, in, nin * es));
    else if (t.op == CV_OP_GATHER) /* stored float bytes moved: rows of C in_dt values */
        MK_TRY(cv_gather_run(ck, &t, u0, un, src, in));
    else
        MK_TRY(cv_dec_run(ck, &t, q->in_dt, u0, un, src, in));
    /* 2. MLX's quantizer, or the calibrated one */
    mk_status qs;
    if (q->nh > 0)
        qs = calibrated_rows(p, a, n, in, buf);
    else
        qs = mk_quant_rows(&q->qp, q->in_dt, in, n, C, buf[0], buf[1], buf[2]);
    if (qs == MK_E_FORMAT) { /* values no scale can hold: a rerun would fail alike */
        __atomic_store_n(&q->st->bad_data, 1, __ATOMIC_SEQ_CST);
        return mk_err_wrap(qs, "module '%s' (rows %lld..%lld)", q->path, (long long)(p->row0 + a),
                           (long long)(p->row0 + a + n - 1));
    }
    MK_TRY(qs);
    /* 3. the error sums, and values the quantizer cannot represent (affine:
     * found by the error pass itself; otherwise, and for followers, a scan) */
    bool leader = p->part == q->leader, fused = leader && q->qp.mode == MK_QMODE_AFFINE;
    mk_quant_err e;
    memset(&e, 0, sizeof e);
    uint64_t bad = 0;
    if (fused)
        affine_err(q, in, buf[0], buf[1], buf[2], n, &e, &bad);
    else
        MK_TRY(mk_quant_count_nonfinite(q->in_dt, in, nin, &bad));
    if (bad && !q->st->job->allow_nonfinite)
        return nonfinite_error(p, a, n, bad);
    if (!leader)
        return MK_OK; /* a follower computed again: its part is all it needs */
    if (!fused)
        MK_TRY(mk_quant_err_rows(&q->qp, q->in_dt, in, buf[0], buf[1], buf[2], n, C, &e));
    /* 4. park the other parts */
    uint64_t R0 = p->out_off / q->rb[p->part] + (uint64_t)a;
    for (int k = 0; k < q->nparts; k++)
        if (k != p->part)
            MK_TRY(mk_os_pwrite_full(q->st->spill_fd, buf[k], (size_t)n * q->rb[k], q->spill_off[k] + R0 * q->rb[k],
                                     q->st->spill_path));
    pthread_mutex_lock(&q->mu);
    mk_quant_err_merge(&q->err, &e);
    q->nonfinite += bad;
    pthread_mutex_unlock(&q->mu);
    return MK_OK;
}

/* ------------------------------------------------------------- spill */

bool cv_qop_from_spill(const cv_piece *p, const bool *written) {
    const cv_qmod *q = p->q;
    return p->part != q->leader && written && written[q->shard[q->leader]] && q->st->spill_fd >= 0;
}

void cv_qop_spill_range(const cv_piece *p, int *fd, uint64_t *off, uint64_t *len) {
    const cv_qmod *q = p->q;
    *fd = q->st->spill_fd;
    *off = q->spill_off[p->part] + p->out_off;
    *len = p->nbytes;
}

mk_status cv_qstate_open(cv_qstate *qs, const char *partial) {
    if (!qs || qs->spill_bytes == 0 || qs->spill_fd >= 0)
        return MK_OK;
    free(qs->spill_path);
    qs->spill_path = mk_path_join(partial, CV_QSPILL_NAME);
    if (!qs->spill_path)
        return mk_err(MK_E_NOMEM, "%s: no memory for the spill file path", partial);
    qs->spill_fd = mk_os()->open(qs->spill_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (qs->spill_fd < 0)
        return mk_err(MK_E_IO, "%s: cannot create the quantization spill file", qs->spill_path);
    return MK_OK;
}

void cv_qstate_close(cv_qstate *qs, const char *partial) {
    if (!qs)
        return;
    if (qs->spill_fd >= 0)
        close(qs->spill_fd);
    qs->spill_fd = -1;
    if (partial && qs->spill_path)
        mk_os()->unlink(qs->spill_path);
}

bool cv_qstate_bad_data(const cv_qstate *qs) { return qs && __atomic_load_n(&qs->bad_data, __ATOMIC_SEQ_CST); }
