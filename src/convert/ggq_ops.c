/* CV_OP_GGQ, the quantizing ENCODE of the GGUF target: rows [a, a+n) of a
 * piece decoded to float32 by its source operation (`sop`: a byte read of
 * an F32 tensor, a float re-encode, an FP8 / INT4 / MLX dequantize; the
 * same values `--to gguf --gguf-type f32` would write) and quantized with
 * ggml's reference quantizer of the piece's type (`part`: a ggml block type,
 * src/quant/ggml_quant.c, ggml_kquant.c), or, for a float type, encoded
 * after a column reorder (qwen35's V heads: cv_piece.vr_*) or a transpose
 * (cv_piece.tr). Whole rows per
 * chunk, so a block never straddles two chunks. */
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
    if (p->tr)
        n = 2 * p->nrows; /* the rows, then their transpose (as many values) */
    cv_piece t = src_piece(p);
    int64_t C = p->mod->cols, un = t.op == CV_OP_FLOAT ? n * C : n;
    size_t s = t.op == CV_OP_COPY ? 0 : al(cv_dec_scratch(&t, un));
    return s + al((size_t)(n + 1) * (size_t)C * 4) + 64; /* + a row for the column reorder */
}

uint64_t cv_ggq_out_bytes(const cv_piece *p, int64_t n) {
    if (p->tr) /* n is 1: the block, cols rows (half of them for tr 2 / 3) of nrows values */
        return (uint64_t)n * (uint64_t)(p->tr >= 2 ? p->mod->cols / 2 : p->mod->cols) *
               mk_ggml_row_bytes((mk_ggml_type)p->part, p->nrows);
    return (uint64_t)n * mk_ggml_row_bytes((mk_ggml_type)p->part, p->mod->cols);
}

mk_status cv_ggq_run(const mk_ckpt *ck, const cv_piece *p, int64_t a, int64_t n, unsigned char *scratch, void *out) {
    if (p->tr) { /* the one unit is every row of the piece */
        a = 0;
        n = p->nrows;
    }
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
    if (p->vr_nk > 0) { /* qwen35: V heads tiled (gguf.h); the other rows' blocks stay */
        const int64_t nb = (int64_t)p->vr_nk * p->vr_r, hd = p->vr_hd;
        float *tmp = x + n * C; /* scratch holds one more row */
        for (int64_t r = 0; r < n; r++) {
            float *row = x + r * C;
            memcpy(tmp, row, (size_t)C * sizeof *row);
            for (int64_t b = 0; b < nb; b++) {
                int64_t g = b % p->vr_nk, j = b / p->vr_nk;
                memcpy(row + b * hd, tmp + (g * p->vr_r + j) * hd, (size_t)hd * sizeof *row);
            }
        }
    }
    int64_t rows = n, cols = C;
    if (p->tr) { /* n x C -> C x n, into the scratch behind the rows */
        float *y = x + n * C;
        for (int64_t r = 0; r < n; r++)
            for (int64_t c = 0; c < C; c++)
                y[c * n + r] = x[r * C + c];
        x = y;
        rows = C;
        cols = n;
        if (p->tr >= 2) { /* gpt_oss's interleaved gate (2: even rows) or up (3: odd rows), kept in order */
            rows = C / 2;
            for (int64_t r = 0; r < rows; r++)
                memmove(x + r * n, x + (2 * r + (p->tr - 2)) * n, (size_t)n * sizeof *x);
        }
    }
    mk_ggml_type gt = (mk_ggml_type)p->part;
    if (mk_ggml_is_quant(gt))
        mk_ggml_quantize(gt, x, rows, cols, out);
    else /* a float type: only reordered or transposed pieces come here */
        cv_encode(gt == MK_GGML_F32 ? MK_DT_F32 : gt == MK_GGML_F16 ? MK_DT_F16 : MK_DT_BF16, x, rows * cols, out);
    return MK_OK;
}
