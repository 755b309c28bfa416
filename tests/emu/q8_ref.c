/* The reference of the int8 grouped GEMM emulation (grouped_q8_emu.cpp):
 * the CPU's own int8 prefill GEMM (src/kernels/kern_gemm_q8.c's driver and
 * portable table, q8.c's quantizer), linked as it is, never the device
 * code. Its other tables and the thread pool are left out: the stubs below
 * pick the portable table and run the driver's work on this thread. */
#include "q8_ref.h"
#include "cuda_test_util.h"
#include "kernels/kern_gemm_q8.h"
#include "moekit/isa.h"
#include "moekit/kernels.h"

const mk_gq8_i mk_gq8_avx2 = {0}, mk_gq8_avxvnni = {0}, mk_gq8_vnni = {0}, mk_gq8_amx = {0};
mk_isa mk_isa_active(void) {
    return MK_ISA_REF;
}
void mk_pool_for(mk_pool *p, int64_t n, int64_t grain, void (*fn)(void *ctx, int64_t b, int64_t e),
                 void *ctx) {
    (void)p;
    (void)grain;
    if (n > 0)
        fn(ctx, 0, n);
}

void *q8r_weight(int64_t rows, int64_t cols, int bits, int group, int sd) {
    ct_wt *t = malloc(sizeof *t);
    if (t)
        *t = ct_affine(rows, cols, bits, group, (mk_dtype)sd, 1.0f);
    return t;
}

const mk_wt *q8r_view(const void *t) {
    return &((const ct_wt *)t)->w;
}

void q8r_free(void *t) {
    ct_wt *w = t;
    free((void *)w->w.data);
    free((void *)w->w.scales);
    free((void *)w->w.biases);
    free(w->bias_f);
    free(w->scale_f);
    free(w);
}

void q8r_matmul(const void *t, int64_t r0, int64_t nr, const float *x, int64_t n, float *y) {
    mk_wt w = ((const ct_wt *)t)->w;
    const int64_t ng = w.cols / w.group, es = w.sdtype == MK_DT_F32 ? 4 : 2;
    w.data = (const uint8_t *)w.data + r0 * (int64_t)mk_wt_row_bytes(&w);
    w.scales = (const uint8_t *)w.scales + r0 * ng * es;
    w.biases = (const uint8_t *)w.biases + r0 * ng * es;
    w.rows = nr;
    /* at least MK_GQ8_MIN_TOK tokens (rows are independent): pad with zeros */
    const int64_t np = n < MK_GQ8_MIN_TOK ? MK_GQ8_MIN_TOK : n;
    float *xp = calloc((size_t)(np * w.cols), sizeof *xp), *yp = malloc((size_t)(np * nr) * sizeof *yp);
    if (!xp || !yp)
        abort();
    memcpy(xp, x, (size_t)(n * w.cols) * sizeof *xp);
    const mk_wt *ws[1] = {&w};
    float *ys[1] = {yp};
    if (!mk_gq8_fits(ws, 1, np))
        abort();
    mk_gq8_matmul(NULL, ws, 1, xp, np, ys);
    memcpy(y, yp, (size_t)(n * nr) * sizeof *y);
    free(xp);
    free(yp);
}

float q8r_rand(float lo, float hi) {
    return ct_f(lo, hi);
}
