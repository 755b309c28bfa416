/* CV_OP_GGQ, the quantizing ENCODE of the GGUF target: rows [a, a+n) of a
 * piece decoded to float32 by its source operation (`sop`: a byte read of
 * an F32 tensor, a float re-encode, an FP8 / INT4 / MLX dequantize; the
 * same values `--to gguf --gguf-type f32` would write) and quantized with
 * ggml's reference quantizer of the piece's type (`part`: a ggml block type,
 * src/quant/ggml_quant.c, ggml_kquant.c). Whole rows per chunk, so a block never
 * straddles two chunks. */
#include <string.h>

#include "convert/gguf.h"

static size_t al(size_t n) { return (n + 63) & ~(size_t)63; }

static cv_piece src_piece(const cv_piece *p) {
    cv_piece t = *p;
    t.op = (cv_op)p->sop;
    t.dt = MK_DT_F32;
    t.part = CV_T_MAIN;
    t.ocols = p->mod->cols;
    return t;
}

size_t cv_ggq_scratch(const cv_piece *p, int64_t n) {
    cv_piece t = src_piece(p);
    int64_t C = p->mod->cols, un = t.op == CV_OP_FLOAT ? n * C : n;
    size_t s = t.op == CV_OP_COPY ? 0 : al(cv_dec_scratch(&t, un));
    return s + al((size_t)n * (size_t)C * 4) + 64;
}

uint64_t cv_ggq_out_bytes(const cv_piece *p, int64_t n) {
    return (uint64_t)n * mk_ggml_row_bytes((mk_ggml_type)p->part, p->mod->cols);
}

mk_status cv_ggq_run(const mk_ckpt *ck, const cv_piece *p, int64_t a, int64_t n, unsigned char *scratch, void *out) {
    cv_piece t = src_piece(p);
    const int64_t C = p->mod->cols;
    bool el = t.op == CV_OP_FLOAT;
    unsigned char *src = scratch;
    float *x = (float *)(void *)(src + (t.op == CV_OP_COPY ? 0 : al(cv_dec_scratch(&t, el ? n * C : n))));
    if (t.op == CV_OP_COPY)
        MK_TRY(mk_ckpt_read(ck, p->mod->t[CV_T_MAIN], (uint64_t)(p->row0 + a) * (uint64_t)C * 4, x,
                            (size_t)(n * C) * 4));
    else
        MK_TRY(cv_dec_run(ck, &t, MK_DT_F32, el ? a * C : a, el ? n * C : n, src, x));
    mk_ggml_quantize((mk_ggml_type)p->part, x, n, C, out);
    return MK_OK;
}
