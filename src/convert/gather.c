/* CV_OP_GATHER: stored bytes moved by strides, never decoded.
 *
 * gpt_oss keeps gate and up interleaved in one fused projection (gate j at
 * row or column 2j, up j at 2j + 1), and transformers' float layout is
 * [experts, in, out]; MLX splits gate from up and stores [experts, out,
 * in]. Each direction is a pure permutation of stored units (an MXFP4 row
 * of blocks or scales, one bf16 element, a bias element): output row r is,
 * for c < g_ncols, the g_blk bytes at g_base + r*g_rstep + c*g_cstep of the
 * source tensor, zipped unit by unit with the same bytes of a second source
 * when there is one (the interleave). Nothing is decoded, so the output is
 * byte-exact by construction and QAT weights are never requantized.
 *
 * The GGUF target's MXFP4 (g_mx) moves gpt_oss's released experts the
 * same way into ggml's block_mxfp4 (conversion/gpt_oss.py repack_mxfp4):
 * per 32-value block its E8M0 scale byte, then 16 bytes whose byte m holds
 * value m in the low nibble and value m + 16 in the high one, where
 * transformers' byte k holds values 2k (low) and 2k + 1 (high). The same
 * nibbles and scale, moved: never requantized.
 *
 * A run of n rows reads the source span those rows touch once (pread
 * through the checkpoint, as every op) into scratch, then permutes in
 * memory. */
#include <string.h>

#include "convert/conv_impl.h"

uint64_t cv_gather_row_bytes(const cv_piece *p) {
    if (p->g_mx)
        return (uint64_t)p->g_ncols * 17u; /* sizeof(block_mxfp4) */
    return (uint64_t)p->g_ncols * p->g_blk * (p->g_mod2 ? 2u : 1u);
}

/* ggml's 16 bytes of a block from transformers' (gather.c header) */
static void mx_block(const unsigned char *b, unsigned char *q) {
    for (int m = 0; m < 16; m++) {
        unsigned lo = m % 2 ? b[m / 2] >> 4 : b[m / 2] & 15u, hi = m % 2 ? b[8 + m / 2] >> 4 : b[8 + m / 2] & 15u;
        q[m] = (unsigned char)(lo | hi << 4);
    }
}

/* Bytes [lo, hi) of one source that rows [a, a+n) touch. */
static void span(const cv_piece *p, int64_t a, int64_t n, uint64_t *lo, uint64_t *hi) {
    *lo = p->g_base + (uint64_t)a * p->g_rstep;
    *hi = *lo + (uint64_t)(n - 1) * p->g_rstep + (uint64_t)(p->g_ncols - 1) * p->g_cstep + p->g_blk;
}

size_t cv_gather_scratch(const cv_piece *p, int64_t n) {
    uint64_t lo, hi;
    span(p, 0, n, &lo, &hi);
    uint64_t one = ((hi - lo) + 63) & ~(uint64_t)63;
    if (p->g_mx) /* the scales: one byte per 16 */
        return (size_t)(one + ((((hi - lo) / 16 + 1) + 63) & ~(uint64_t)63));
    return (size_t)(p->g_mod2 ? 2 * one : one);
}

mk_status cv_gather_run(const mk_ckpt *ck, const cv_piece *p, int64_t a, int64_t n, void *scratch, void *out) {
    if (n <= 0)
        return MK_OK;
    uint64_t lo, hi;
    span(p, a, n, &lo, &hi);
    const mk_tensor_info *t1 = p->mod->t[p->part], *t2 = p->g_mod2 ? p->g_mod2->t[p->g_part2] : NULL;
    if (hi > t1->nbytes || (t2 && !p->g_mx && hi > t2->nbytes))
        return mk_err(MK_E_INTERNAL, "convert: gather of rows %lld..%lld reads past '%s' (%llu of %llu bytes)",
                      (long long)a, (long long)(a + n), t1->name, (unsigned long long)hi,
                      (unsigned long long)t1->nbytes);
    unsigned char *s1 = scratch, *s2 = s1 + (((hi - lo) + 63) & ~(uint64_t)63);
    if (p->g_mx) { /* blocks at 16-byte offsets, their scales at offset / 16 */
        if (lo % 16 || p->g_blk != 16 || p->g_rstep % 16 || p->g_cstep % 16 || !t2 || hi / 16 > t2->nbytes)
            return mk_err(MK_E_INTERNAL, "convert: MXFP4 gather of '%s' is not of whole blocks", t1->name);
        MK_TRY(mk_ckpt_read(ck, t1, lo, s1, (size_t)(hi - lo)));
        MK_TRY(mk_ckpt_read(ck, t2, lo / 16, s2, (size_t)((hi - lo) / 16)));
        unsigned char *o = out;
        for (int64_t r = 0; r < n; r++) {
            uint64_t at = (uint64_t)r * p->g_rstep;
            for (int64_t c = 0; c < p->g_ncols; c++, at += p->g_cstep, o += 17) {
                o[0] = s2[at / 16];
                mx_block(s1 + at, o + 1);
            }
        }
        return MK_OK;
    }
    MK_TRY(mk_ckpt_read(ck, t1, lo, s1, (size_t)(hi - lo)));
    if (t2)
        MK_TRY(mk_ckpt_read(ck, t2, lo, s2, (size_t)(hi - lo)));
    unsigned char *o = out;
    size_t blk = p->g_blk;
    for (int64_t r = 0; r < n; r++) {
        uint64_t at = (uint64_t)r * p->g_rstep;
        for (int64_t c = 0; c < p->g_ncols; c++, at += p->g_cstep) {
            memcpy(o, s1 + at, blk);
            o += blk;
            if (t2) {
                memcpy(o, s2 + at, blk);
                o += blk;
            }
        }
    }
    return MK_OK;
}
