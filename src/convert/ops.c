/* The operation of a plan piece, whatever it is: the one entry point that
 * execution (exec.c), verify (verify.c, src/verify/xverify.c) and chunking
 * use, so that none of them needs to know how a piece gets its bytes.
 *
 * A piece's op is one of three stages:
 *   COPY    the stored bytes unchanged (copy_file_range by the consumer:
 *           the byte-exactness guarantee; no compute step here)
 *   decode  stored form -> float32 -> one rounding (decode.c, encode.c):
 *           FLOAT, FP8, AFFINE, CT, CT_BIAS, FPDQ
 *   QUANT   decode, then MLX quantization (quant_ops.c)
 *   GGQ     decode, then a ggml block quantization (ggq_ops.c, GGUF)
 *   GATHER  stored bytes moved by strides, never decoded (gather.c)
 * Dependencies run one way: ops.c -> quant_ops.c -> decode.c -> encode.c. */
#include "convert/conv_impl.h"
#include "convert/gguf.h"

bool cv_op_by_rows(cv_op op) {
    if (op == CV_OP_COPY || op == CV_OP_FLOAT)
        return false; /* chunked by elements */
    return true;      /* a group or a scale block never straddles a chunk */
}

size_t cv_op_scratch(const cv_piece *p, int64_t n) {
    if (p->op == CV_OP_GATHER)
        return cv_gather_scratch(p, n);
    if (p->op == CV_OP_GGQ)
        return cv_ggq_scratch(p, n);
    if (p->op == CV_OP_QUANT)
        return cv_qop_scratch(p, n);
    return cv_dec_scratch(p, n);
}

mk_status cv_op_run(const mk_ckpt *ck, const cv_piece *p, mk_dtype dt, int64_t a, int64_t n, void *scratch,
                    void *out) {
    if (p->op == CV_OP_QUANT) {
        mk_status s = cv_qop_run(ck, p, dt, a, n, scratch, out);
        if (s != MK_OK)
            return mk_err_wrap(s, "quantize of '%s'", p->mod->name);
        return MK_OK;
    }
    if (p->op == CV_OP_GATHER) {
        (void)dt; /* bytes, as stored */
        mk_status s = cv_gather_run(ck, p, a, n, scratch, out);
        return s == MK_OK ? MK_OK : mk_err_wrap(s, "gather of '%s'", p->mod->name);
    }
    if (p->op == CV_OP_GGQ) {
        mk_status s = cv_ggq_run(ck, p, a, n, scratch, out);
        return s == MK_OK ? MK_OK : mk_err_wrap(s, "GGUF quantize of '%s'", p->mod->name);
    }
    if (!cv_dec_is(p->op))
        return mk_err(MK_E_INTERNAL, "convert: operation %s has no compute step",
                      p->op == CV_OP_COPY ? "copy" : "(unknown)");
    return cv_dec_run(ck, p, dt, a, n, scratch, out);
}

/* Bytes per module row of tensor k of the piece's module. */
static uint64_t row_bytes(const cv_piece *p, int k) {
    return p->mod->t[k]->nbytes / (uint64_t)p->mod->rows;
}

void cv_op_copy_range(const cv_piece *p, uint64_t *off, uint64_t *len) {
    uint64_t rb = row_bytes(p, p->part);
    *off = p->mod->t[p->part]->file_offset + (uint64_t)p->row0 * rb;
    *len = (uint64_t)p->nrows * rb;
}

int64_t cv_op_units(const cv_piece *p) {
    if (p->op == CV_OP_COPY)
        return (int64_t)p->nbytes;
    if (p->op == CV_OP_GGQ && p->tr)
        return 1; /* a transposed block needs all its rows at once */
    if (p->op == CV_OP_FLOAT)
        return p->nrows * p->mod->cols;
    return p->nrows; /* GATHER: output rows */
}

uint64_t cv_op_out_bytes(const cv_piece *p, mk_dtype dt, int64_t n) {
    if (p->op == CV_OP_COPY)
        return (uint64_t)n;
    if (p->op == CV_OP_FLOAT)
        return (uint64_t)n * cv_esize(dt);
    if (p->op == CV_OP_QUANT)
        return cv_qop_out_bytes(p, n);
    if (p->op == CV_OP_GGQ)
        return cv_ggq_out_bytes(p, n);
    if (p->op == CV_OP_GATHER)
        return (uint64_t)n * cv_gather_row_bytes(p);
    return (uint64_t)n * (uint64_t)p->ocols * cv_esize(dt);
}
