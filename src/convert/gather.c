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
 * A run of n rows reads the source span those rows touch once (pread
 * through the checkpoint, as every op) into scratch, then permutes in
 * memory. */
#include <string.h>

#include "convert/conv_impl.h"

uint64_t cv_gather_row_bytes(const cv_piece *p) {
    return (uint64_t)p->g_ncols * p->g_blk * (p->g_mod2 ? 2u : 1u);
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
    return (size_t)(p->g_mod2 ? 2 * one : one);
}

mk_status cv_gather_run(const mk_ckpt *ck, const cv_piece *p, int64_t a, int64_t n, void *scratch, void *out) {
    if (n <= 0)
        return MK_OK;
    uint64_t lo, hi;
    span(p, a, n, &lo, &hi);
    const mk_tensor_info *t1 = p->mod->t[p->part], *t2 = p->g_mod2 ? p->g_mod2->t[p->g_part2] : NULL;
    if (hi > t1->nbytes || (t2 && hi > t2->nbytes))
        return mk_err(MK_E_INTERNAL, "convert: gather of rows %lld..%lld reads past '%s' (%llu of %llu bytes)",
                      (long long)a, (long long)(a + n), t1->name, (unsigned long long)hi,
                      (unsigned long long)t1->nbytes);
    unsigned char *s1 = scratch, *s2 = s1 + (((hi - lo) + 63) & ~(uint64_t)63);
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
