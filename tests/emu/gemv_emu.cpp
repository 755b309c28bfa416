// Host emulation (cuda_emu.h) of the GEMV kernels (src/cuda/cuda_gemv_kernel.cuh
// with cuda_impl.cuh's dot products, included as they are; views made by
// cuda_view.cuh's mkc_view) in every weight format the device takes: affine
// 4/8-bit, bf16/f16/f32, block-scaled FP8 E4M3, MXFP4, NVFP4; both kernel
// generations and every way of staging x. The residual step folded into
// k_gemv_n (cuda_fold.cuh) against k_add_rmsnorm then k_gemv_n: x, xb, the
// products and the check's finding bitwise, at row widths whose norm order
// differs (one to seven terms per thread, partial warps); control: the fold
// summing in its own block's order instead must differ. Each y within test_cuda_gemv's
// bound of the double reference (gemv_ref.c: mk_wt_dequant_row, the CPU's
// definition of each format); k_gemv_n's rows bitwise k_gemv's, and k_gemv
// of 3 tokens in one launch (mk_cuda_gemv_each) each row bitwise its
// one-token launch's; the staged-weight kernel k_gemv_s (affine kinds) bitwise
// generation 2's in blocks of several sizes, accumulating, over two
// matrices. int8 activations (k_gemv_q8, cuda_q8x.cuh) on the affine
// kinds: x quantized in shared memory to the bits of the CPU's quantizer
// (src/kernels/q8.c, linked as it is; zero, NaN and infinity blocks too),
// each y within the bound of the double product of W with the CPU's
// quantized x, over two matrices, accumulating, and with the residual
// step folded in (x, xb, the finding and the products bitwise the fold-less
// launch after k_add_rmsnorm). Checks the
// decoding (the E4M3 conversion is the CUDA headers' host version of the
// same intrinsic), the scale indexing and the lanes' partition; not the
// device's memory model or speed. Exit 1 on a mismatch.
#include <cstdio>
#include <cstdlib>

#include "cuda_emu.h"
#include "cuda/cuda_impl.cuh"
#include "gemv_ref.h"
#include "cuda/cuda_gemv_kernel.cuh"
#include "cuda/cuda_norm_kernel.cuh"

struct gcase {
    const char *name;
    int kind;
    int bits, group, sd;
    int64_t rows, cols;
    int br, bc;
};

static int g_bad;

extern "C" void mk_q8_quant_blocks(const float *x, int64_t n, int blk, int8_t *q, float *d, float *qs);

// y = W x on the emulated device (nt tokens: x [nt, cols], y [nt, rows]):
// one launch of k_gemv<P>
static void run_gemv(const mkc_w &v, const float *x, float *y, bool P, int staged, int nt = 1) {
    const int64_t warps = (v.rows + GEMV_ROWS - 1) / GEMV_ROWS, blocks = (warps + GEMV_WARPS - 1) / GEMV_WARPS * nt;
    for (int64_t b = 0; b < blocks; b++)
        emu_block((unsigned)blocks, (unsigned)b, GEMV_WARPS * 32, [&] {
            if (P)
                k_gemv<true>(v, x, y, 0, staged, nt);
            else
                k_gemv<false>(v, x, y, 0, staged, nt);
        });
}

// The residual step folded into k_gemv_n, one width: rows x dim weights of
// a kind whose kernel stages x (staged 1 or 2), two matrices, several
// blocks. Returns the failures. vt_override: the control, the fold's sum in
// another order: returns whether xb then differs.
#define FOLD_DRAWS 6

static int fold_case(const char *name, int kind, int bits, int group, int sd, int64_t rows, int64_t dim,
                     int vt_override = 0) {
    int bad = 0;
    void *t = emu_weight(kind, rows, dim, bits, group, sd, 0, 0);
    mkc_w v;
    if (mkc_view(emu_view(t), name, &v) != MK_OK) {
        printf("FAIL fold %s: %s\n", name, mk_err_msg());
        emu_weight_free(t);
        return 1;
    }
    const int staged = mkc_pads(v.kind) && dim % 32 == 0 ? 2 : 1; /* as stage_mode under generation 2 */
    std::vector<float> x0(dim), y0(dim), g(dim);
    const unsigned vt = mkc_norm_threads(dim);
    /* FOLD_DRAWS finite rows (a sum's last bit: one draw alone would often agree under another
     * order), then inf and NaN in y, then the same with a finding already kept */
    for (int draw = 0; draw < FOLD_DRAWS + 2; draw++) {
        const int plant = draw < FOLD_DRAWS ? 0 : draw - FOLD_DRAWS + 1;
        if (draw < FOLD_DRAWS)
            for (int64_t i = 0; i < dim; i++) {
                x0[i] = emu_rand(-2.0f, 2.0f);
                y0[i] = emu_rand(-1.0f, 1.0f);
                g[i] = emu_rand(0.5f, 1.5f);
            }
        std::vector<float> xr = x0, yr = y0, xbr(dim, NAN), xf = x0, yf = y0, xbf(dim, NAN);
        if (plant) {
            const int64_t i1 = dim / 3 + 1, i2 = dim - 2;
            yr[i2] = yf[i2] = NAN;
            yr[i1] = yf[i1] = INFINITY;
        }
        mkb_nfl fr = {plant == 2 ? 5ull : ~0ull, ~0ull, 0.0f, 0u};
        unsigned long long kf = fr.key;
        float vf = 0.0f;
        /* the reference: k_add_rmsnorm (one block of its threads), then k_gemv_n of its xb */
        emu_block(1, 0, vt, [&] { k_add_rmsnorm(xr.data(), yr.data(), dim, 9ull, &fr, xbr.data(), g.data(), 1e-6f); });
        mkc_gemv_n a;
        std::memset(&a, 0, sizeof a);
        a.count = 2;
        std::vector<float> zr[2], zf[2];
        int64_t warps = 0;
        for (int i = 0; i < 2; i++) {
            zr[i].assign(rows, NAN);
            zf[i].assign(rows, NAN);
            a.w[i] = v;
            a.y[i] = zr[i].data();
            warps += (rows + GEMV_ROWS - 1) / GEMV_ROWS;
            a.wend[i] = warps;
        }
        const int64_t blocks = (warps + GEMV_WARPS - 1) / GEMV_WARPS;
        for (int64_t b = 0; b < blocks; b++)
            emu_block((unsigned)blocks, (unsigned)b, GEMV_WARPS * 32, [&] { k_gemv_n<true>(a, xbr.data(), staged); });
        /* folded: the blocks stage rmsnorm(x + y) * g themselves, the last writes x, xb and the finding */
        unsigned ticket = 0;
        mk_cuda_fold f = {xf.data(), yf.data(), g.data(), xbf.data(), &kf, &vf, &ticket, dim, 9, 1e-6f};
        if (!mkc_addnorm_of(&f, GEMV_WARPS * 32, &a.an)) {
            printf("FAIL fold %s: mkc_addnorm_of declined width %lld\n", name, (long long)dim);
            emu_weight_free(t);
            return 1;
        }
        if (vt_override)
            a.an.vt = vt_override;
        for (int i = 0; i < 2; i++)
            a.y[i] = zf[i].data();
        for (int64_t b = 0; b < blocks; b++)
            emu_block((unsigned)blocks, (unsigned)b, GEMV_WARPS * 32,
                      [&] { k_gemv_n<true, true>(a, xbf.data(), staged); });
        const bool same = !std::memcmp(xr.data(), xf.data(), dim * 4) && !std::memcmp(xbr.data(), xbf.data(), dim * 4) &&
                          !std::memcmp(zr[0].data(), zf[0].data(), rows * 4) &&
                          !std::memcmp(zr[1].data(), zf[1].data(), rows * 4);
        const bool check = kf == fr.key && (fr.key == ~0ull || fr.key == 5ull || !std::memcmp(&vf, &fr.val, 4));
        if (vt_override) { /* the control: the finite case's xb differs (1) or not (0) */
            if (plant == 0 && std::memcmp(xbr.data(), xbf.data(), dim * 4))
                bad = 1;
            continue;
        }
        if (!same || !check || ticket != 0) {
            printf("FAIL fold %s (%s): x %s, xb %s, products %s, check key %llx (want %llx), ticket %u\n", name,
                   plant == 0 ? "finite" : plant == 1 ? "inf and NaN" : "a finding kept",
                   std::memcmp(xr.data(), xf.data(), dim * 4) ? "differs" : "same",
                   std::memcmp(xbr.data(), xbf.data(), dim * 4) ? "differs" : "same",
                   std::memcmp(zr[0].data(), zf[0].data(), rows * 4) ||
                           std::memcmp(zr[1].data(), zf[1].data(), rows * 4)
                       ? "differ"
                       : "same",
                   kf, fr.key, ticket);
            bad++;
        }
        if (plant == 1 && fr.key != (9ull << 40 | (unsigned long long)(dim / 3 + 1))) {
            printf("FAIL fold %s: k_add_rmsnorm's finding %llx is not the first non-finite index\n", name, fr.key);
            bad++;
        }
    }
    if (!vt_override)
        printf("fold %-30s width %5lld (%u threads' order), %lld blocks: x, xb, products, check bitwise\n", name,
               (long long)dim, vt, (long long)((2 * ((rows + GEMV_ROWS - 1) / GEMV_ROWS) + GEMV_WARPS - 1) / GEMV_WARPS));
    emu_weight_free(t);
    return bad;
}

// int8 activations on one affine weight: the staging against the CPU's
// quantizer, then k_gemv_q8 against the double product of W with the
// CPU's quantized x (two matrices, accumulating; the fold). Returns failures.
static int g_q8s; /* q8_case runs (both accumulate settings) that checked k_gemv_q8s */

static int q8_case(const char *name, int bits, int group, int sd, int64_t rows, int64_t cols) {
    int bad = 0;
    void *t = emu_weight(EMU_AFFINE, rows, cols, bits, group, sd, 0, 0);
    mkc_w v;
    if (mkc_view(emu_view(t), name, &v) != MK_OK) {
        printf("FAIL q8 %s: %s\n", name, mk_err_msg());
        emu_weight_free(t);
        return 1;
    }
    const int64_t nb = cols / 32;
    std::vector<float> x(cols);
    for (int64_t j = 0; j < cols; j++)
        x[j] = emu_rand(-1.0f, 1.0f) * (j / 32 % 3 == 1 ? 1e-3f : 1.0f);
    /* block 1 all zero; ties (exact halves after scaling) in block 2 */
    for (int64_t j = 32; j < 64 && j < cols; j++)
        x[j] = 0.0f;
    if (cols >= 96) {
        x[64] = 127.0f;
        x[65] = 0.5f;
        x[66] = -1.5f;
        x[67] = 2.5f;
    }
    /* the staging: q, d and xd against q8.c's (and a NaN, an infinity in two blocks) */
    for (int plant = 0; plant < 2; plant++) {
        std::vector<float> xs = x;
        if (plant) {
            xs[cols - 5] = NAN;
            xs[cols / 2 + 3] = -INFINITY;
        }
        std::vector<int8_t> qc(cols);
        std::vector<float> dc(nb), qsc(nb);
        mk_q8_quant_blocks(xs.data(), cols, 32, qc.data(), dc.data(), qsc.data());
        std::vector<unsigned char> buf(mkc_q8s_bytes(cols) + 16);
        const mkc_q8s st = mkc_q8s_at(buf.data(), cols);
        emu_block(1, 0, GEMV_WARPS * 32, [&] {
            if (bits == 4)
                mkc_q8_stage<4>(xs.data(), cols, st);
            else
                mkc_q8_stage<8>(xs.data(), cols, st);
        });
        for (int64_t b = 0; b < nb; b++) {
            bool same = !std::memcmp(&st.d[b], &dc[b], 4);
            const float xd = dc[b] * qsc[b];
            same = same && !std::memcmp(&st.xd[b], &xd, 4);
            for (int e = 0; e < 32; e++)
                same = same && st.q[bits == 4 ? mkc_q8_pos<4>(b, e, nb) : mkc_q8_pos<8>(b, e, nb)] == qc[b * 32 + e];
            if (!same) {
                printf("FAIL q8 %s: staged block %lld (%s) differs from q8.c's: d %.9g / %.9g\n", name,
                       (long long)b, plant ? "NaN and infinity planted" : "finite", (double)st.d[b], (double)dc[b]);
                bad++;
                break;
            }
        }
    }
    /* the products: two matrices of w, the second accumulating onto a ramp */
    std::vector<int8_t> qc(cols);
    std::vector<float> dc(nb), qsc(nb);
    mk_q8_quant_blocks(x.data(), cols, 32, qc.data(), dc.data(), qsc.data());
    std::vector<double> xh(cols);
    for (int64_t j = 0; j < cols; j++)
        xh[j] = (double)qc[j] * (double)dc[j / 32];
    mkc_gemv_n a;
    std::memset(&a, 0, sizeof a);
    a.count = 2;
    std::vector<float> z[2];
    int64_t warps = 0;
    for (int i = 0; i < 2; i++) {
        z[i].assign(rows, NAN);
        a.w[i] = v;
        a.y[i] = z[i].data();
        warps += (rows + GEMV_ROWS - 1) / GEMV_ROWS;
        a.wend[i] = warps;
    }
    const int64_t blocks = (warps + GEMV_WARPS - 1) / GEMV_WARPS;
    for (int acc = 0; acc < 2; acc++) {
        for (int i = 0; i < 2; i++)
            for (int64_t r = 0; r < rows; r++)
                z[i][r] = acc ? 0.25f * (float)r - 1.0f : NAN;
        emu_smem((size_t)mkc_q8s_bytes(cols)); /* what q8_takes asks for */
        for (int64_t b = 0; b < blocks; b++)
            emu_block((unsigned)blocks, (unsigned)b, GEMV_WARPS * 32, [&] { k_gemv_q8<false>(a, x.data(), acc); });
        /* the rows primed before the wait (mk_cuda_set_q8_early): bitwise the same */
        std::vector<float> z0[2] = {z[0], z[1]};
        for (int i = 0; i < 2; i++)
            for (int64_t r = 0; r < rows; r++)
                z[i][r] = acc ? 0.25f * (float)r - 1.0f : NAN;
        for (int64_t b = 0; b < blocks; b++)
            emu_block((unsigned)blocks, (unsigned)b, GEMV_WARPS * 32,
                      [&] { k_gemv_q8<false>(a, x.data(), acc, 0, 1, 1); });
        emu_smem(0);
        for (int i = 0; i < 2; i++)
            if (std::memcmp(z0[i].data(), z[i].data(), sizeof(float) * rows)) {
                printf("FAIL q8 %s%s: matrix %d differs with its rows primed early\n", name,
                       acc ? " (accumulating)" : "", i);
                bad++;
            }
        /* the rows staged in shared memory (k_gemv_q8s) in blocks of 1, 3, 8 rows and all 2 * rows: both
         * matrices bitwise k_gemv_q8's (weights whose scale rows are whole words: cp.async's) */
        if ((v.ng * mkc_aff_sb(v.kind)) % 4 == 0) {
            for (int64_t rb : {(int64_t)1, (int64_t)3, (int64_t)8, 2 * rows}) {
                for (int i = 0; i < 2; i++)
                    for (int64_t r = 0; r < rows; r++)
                        z[i][r] = acc ? 0.25f * (float)r - 1.0f : NAN;
                const int64_t nb2 = (2 * rows + rb - 1) / rb;
                emu_smem((size_t)gemvq8s_smem(v, rb));
                for (int64_t b = 0; b < nb2; b++)
                    emu_block((unsigned)nb2, (unsigned)b, GEMV_WARPS * 32,
                              [&] { k_gemv_q8s(a, x.data(), acc, rb, 2 * rows); });
                emu_smem(0);
                for (int i = 0; i < 2; i++)
                    if (std::memcmp(z0[i].data(), z[i].data(), sizeof(float) * rows)) {
                        printf("FAIL q8 %s%s: matrix %d differs with its rows staged, %lld a block\n", name,
                               acc ? " (accumulating)" : "", i, (long long)rb);
                        bad++;
                    }
            }
            g_q8s++;
        }
        double worst = 0.0;
        for (int i = 0; i < 2; i++)
            for (int64_t r = 0; r < rows; r++) {
                double cond, ref = emu_ref(t, r, xh.data(), &cond);
                const double base = acc ? (double)(0.25f * (float)r - 1.0f) : 0.0;
                const double err = fabs((double)z[i][r] - base - ref), bound = 5e-6 * cond + 1e-7 * fabs(base);
                if (!(err <= bound)) {
                    printf("FAIL q8 %s%s: matrix %d row %lld: %.9g, reference %.9g, bound %.3g\n", name,
                           acc ? " (accumulating)" : "", i, (long long)r, (double)z[i][r], base + ref, bound);
                    bad++;
                    i = 2;
                    break;
                }
                worst = std::max(worst, bound > 0 ? err / bound : 0.0);
            }
        if (!acc)
            printf("q8 %-30s staged x bitwise q8.c's; products worst |diff|/bound %.3g\n", name, worst);
    }
    /* three tokens in one launch (mk_cuda_gemv_each): each row bitwise its one-token launch's */
    {
        mkc_gemv_n a1;
        std::memset(&a1, 0, sizeof a1);
        a1.count = 1;
        a1.w[0] = v;
        a1.wend[0] = (rows + GEMV_ROWS - 1) / GEMV_ROWS;
        const int64_t b1 = (a1.wend[0] + GEMV_WARPS - 1) / GEMV_WARPS;
        std::vector<float> x3(3 * cols), y3(3 * rows, NAN), y1(rows);
        for (int64_t j = 0; j < 3 * cols; j++)
            x3[j] = j < cols ? x[j] : emu_rand(-1.0f, 1.0f);
        a1.y[0] = y3.data();
        for (int64_t b = 0; b < 3 * b1; b++)
            emu_block((unsigned)(3 * b1), (unsigned)b, GEMV_WARPS * 32,
                      [&] { k_gemv_q8<false>(a1, x3.data(), 0, 0, 3); });
        for (int tk = 0; tk < 3; tk++) {
            std::fill(y1.begin(), y1.end(), NAN);
            a1.y[0] = y1.data();
            for (int64_t b = 0; b < b1; b++)
                emu_block((unsigned)b1, (unsigned)b, GEMV_WARPS * 32,
                          [&] { k_gemv_q8<false>(a1, x3.data() + tk * cols, 0); });
            if (std::memcmp(y1.data(), y3.data() + tk * rows, rows * 4)) {
                printf("FAIL q8 %s: token %d of a 3-token launch differs from its one-token launch\n", name, tk);
                bad++;
            }
        }
    }
    /* the fold: k_add_rmsnorm then k_gemv_q8 of its xb, against k_gemv_q8<true> */
    if ((int64_t)mkc_q8s_bytes(cols) + cols * 4 <= 48 * 1024 - 256) {
        std::vector<float> xr(cols), yr(cols), g(cols), xbr(cols, NAN), xf, yf, xbf(cols, NAN);
        for (int64_t i = 0; i < cols; i++) {
            xr[i] = emu_rand(-2.0f, 2.0f);
            yr[i] = emu_rand(-1.0f, 1.0f);
            g[i] = emu_rand(0.5f, 1.5f);
        }
        xf = xr;
        yf = yr;
        mkb_nfl fr = {~0ull, ~0ull, 0.0f, 0u};
        unsigned long long kf = fr.key;
        float vf = 0.0f;
        emu_block(1, 0, mkc_norm_threads(cols),
                  [&] { k_add_rmsnorm(xr.data(), yr.data(), cols, 9ull, &fr, xbr.data(), g.data(), 1e-6f); });
        std::vector<float> zr[2], zf[2];
        for (int i = 0; i < 2; i++) {
            zr[i].assign(rows, NAN);
            zf[i].assign(rows, NAN);
            a.y[i] = zr[i].data();
        }
        for (int64_t b = 0; b < blocks; b++)
            emu_block((unsigned)blocks, (unsigned)b, GEMV_WARPS * 32, [&] { k_gemv_q8<false>(a, xbr.data(), 0); });
        unsigned ticket = 0;
        mk_cuda_fold f = {xf.data(), yf.data(), g.data(), xbf.data(), &kf, &vf, &ticket, cols, 9, 1e-6f};
        if (!mkc_addnorm_of(&f, GEMV_WARPS * 32, &a.an)) {
            printf("FAIL q8 fold %s: mkc_addnorm_of declined\n", name);
            bad++;
        } else {
            for (int i = 0; i < 2; i++)
                a.y[i] = zf[i].data();
            emu_smem((size_t)mkc_q8s_bytes(cols) + (size_t)cols * 4);
            for (int64_t b = 0; b < blocks; b++)
                emu_block((unsigned)blocks, (unsigned)b, GEMV_WARPS * 32, [&] { k_gemv_q8<true>(a, xbf.data(), 0); });
            emu_smem(0);
            if (std::memcmp(xr.data(), xf.data(), cols * 4) || std::memcmp(xbr.data(), xbf.data(), cols * 4) ||
                std::memcmp(zr[0].data(), zf[0].data(), rows * 4) || std::memcmp(zr[1].data(), zf[1].data(), rows * 4) ||
                kf != fr.key || ticket != 0) {
                printf("FAIL q8 fold %s: x, xb, the products or the finding differ from k_add_rmsnorm then k_gemv_q8\n",
                       name);
                bad++;
            } else {
                printf("q8 fold %-25s x, xb, products, check bitwise\n", name);
            }
        }
    }
    emu_weight_free(t);
    return bad;
}

int main(int argc, char **argv) {
    const char *only = argc > 1 ? argv[1] : nullptr; /* run the cases whose name has this */
    const gcase cases[] = {
        {"affine4 g64 bf16 13x320", EMU_AFFINE, 4, 64, MK_DT_BF16, 13, 320, 0, 0},
        {"affine4 g32 f16 9x224", EMU_AFFINE, 4, 32, MK_DT_F16, 9, 224, 0, 0},
        {"affine8 g64 f32 9x448", EMU_AFFINE, 8, 64, MK_DT_F32, 9, 448, 0, 0},
        /* widths whose scale rows are whole 4-byte words: the staged-weight kernel takes them */
        {"affine4 g64 bf16 21x512", EMU_AFFINE, 4, 64, MK_DT_BF16, 21, 512, 0, 0},
        {"affine4 g32 f16 10x256", EMU_AFFINE, 4, 32, MK_DT_F16, 10, 256, 0, 0},
        {"affine8 g128 bf16 5x768", EMU_AFFINE, 8, 128, MK_DT_BF16, 5, 768, 0, 0},
        {"bf16 11x37 (scalar path)", EMU_BF16, 0, 0, MK_DT_BF16, 11, 37, 0, 0},
        {"bf16 5x1000", EMU_BF16, 0, 0, MK_DT_BF16, 5, 1000, 0, 0},
        {"f16 9x72", EMU_F16, 0, 0, MK_DT_F16, 9, 72, 0, 0},
        {"f32 7x132", EMU_F32, 0, 0, MK_DT_F32, 7, 132, 0, 0},
        {"fp8 e4m3 128x128 f32 130x448", EMU_FP8, 0, 0, MK_DT_F32, 130, 448, 128, 128},
        {"fp8 e4m3 64x32 f16 66x96", EMU_FP8, 0, 0, MK_DT_F16, 66, 96, 64, 32},
        {"fp8 e4m3 128x128 bf16 3x2048", EMU_FP8, 0, 0, MK_DT_BF16, 3, 2048, 128, 128},
        {"mxfp4 9x320", EMU_MXFP4, 4, 32, MK_DT_U8, 9, 320, 0, 0},
        {"mxfp4 5x2880 (gpt-oss width)", EMU_MXFP4, 4, 32, MK_DT_U8, 5, 2880, 0, 0},
        {"nvfp4 9x96", EMU_NVFP4, 4, 16, MK_DT_U8, 9, 96, 0, 0},
        {"nvfp4 7x2048", EMU_NVFP4, 4, 16, MK_DT_U8, 7, 2048, 0, 0},
        {"mxfp8 9x320", EMU_MXFP8, 8, 32, MK_DT_U8, 9, 320, 0, 0},
        {"mxfp8 5x2880", EMU_MXFP8, 8, 32, MK_DT_U8, 5, 2880, 0, 0},
    };
    int staged_cases = 0;
    for (const gcase &c : cases) {
        if (only && !std::strstr(c.name, only))
            continue;
        void *t = emu_weight(c.kind, c.rows, c.cols, c.bits, c.group, c.sd, c.br, c.bc);
        mkc_w v;
        if (mkc_view(emu_view(t), c.name, &v) != MK_OK) {
            printf("FAIL %s: %s\n", c.name, mk_err_msg());
            g_bad++;
            continue;
        }
        std::vector<float> x(c.cols), y(c.rows), y2(c.rows);
        std::vector<double> xd(c.cols);
        for (int64_t j = 0; j < c.cols; j++)
            xd[j] = x[j] = emu_rand(-1.0f, 1.0f);
        double worst = 0.0;
        int runs = 0;
        for (int P = 0; P < 2; P++)
            for (int staged = 0; staged < 3; staged++) {
                if (staged == 2 && !(mkc_pads(v.kind) && c.cols % 32 == 0)) /* as cuda_gemv.cu's stage_mode */
                    continue;
                if (staged == 1 && c.cols % 4)
                    continue;
                std::fill(y.begin(), y.end(), NAN);
                run_gemv(v, x.data(), y.data(), P, staged);
                runs++;
                for (int64_t r = 0; r < c.rows; r++) {
                    double cond, ref = emu_ref(t, r, xd.data(), &cond);
                    double err = fabs((double)y[r] - ref), bound = 5e-6 * cond;
                    if (!(err <= bound)) {
                        printf("FAIL %s (generation %d, staged %d): row %lld: %.9g, reference %.9g, bound %.3g\n",
                               c.name, P + 1, staged, (long long)r, (double)y[r], ref, bound);
                        g_bad++;
                        break;
                    }
                    worst = std::max(worst, bound > 0 ? err / bound : 0.0);
                }
            }
        /* k_gemv_n: this weight twice, rows bitwise k_gemv's */
        mkc_gemv_n a;
        std::memset(&a, 0, sizeof a);
        std::vector<float> z[2];
        int64_t warps = 0;
        a.count = 2;
        for (int i = 0; i < 2; i++) {
            z[i].assign(c.rows, NAN);
            a.w[i] = v;
            a.y[i] = z[i].data();
            warps += (c.rows + GEMV_ROWS - 1) / GEMV_ROWS;
            a.wend[i] = warps;
        }
        run_gemv(v, x.data(), y2.data(), true, 0);
        const int64_t blocks = (warps + GEMV_WARPS - 1) / GEMV_WARPS;
        for (int64_t b = 0; b < blocks; b++)
            emu_block((unsigned)blocks, (unsigned)b, GEMV_WARPS * 32, [&] { k_gemv_n<true>(a, x.data(), 0); });
        for (int i = 0; i < 2; i++)
            if (std::memcmp(z[i].data(), y2.data(), (size_t)c.rows * 4)) {
                printf("FAIL %s: k_gemv_n matrix %d differs from k_gemv\n", c.name, i);
                g_bad++;
            }
        /* three tokens in one launch (cols % 4 == 0, as mk_cuda_gemv_each wants): each row bitwise its
         * one-token launch's, under the staging the one-token launch takes */
        if (c.cols % 4 == 0) {
            const int staged = mkc_pads(v.kind) && c.cols % 32 == 0 ? 2 : 1;
            std::vector<float> x3(3 * c.cols), y3(3 * c.rows, NAN), y1(c.rows);
            for (int64_t j = 0; j < 3 * c.cols; j++)
                x3[j] = j < c.cols ? x[j] : emu_rand(-1.0f, 1.0f);
            run_gemv(v, x3.data(), y3.data(), true, staged, 3);
            for (int t = 0; t < 3; t++) {
                std::fill(y1.begin(), y1.end(), NAN);
                run_gemv(v, x3.data() + t * c.cols, y1.data(), true, staged);
                if (std::memcmp(y1.data(), y3.data() + t * c.rows, (size_t)c.rows * 4)) {
                    printf("FAIL %s: token %d of a 3-token launch differs from its one-token launch\n", c.name, t);
                    g_bad++;
                }
            }
        }
        /* the staged-weight kernel (affine kinds, cols % 32 == 0): its rows bitwise generation 2's with x
         * padded, one matrix in blocks of 1, 3, 8 and all rows, accumulating too, and two matrices
         * (rows of the first and second in one block) */
        int staged_runs = 0;
        if (mkc_is_aff(v.kind) && c.cols % 32 == 0 && (v.ng * mkc_aff_sb(v.kind)) % 4 == 0) {
            std::vector<float> ref(c.rows, NAN), got(c.rows);
            run_gemv(v, x.data(), ref.data(), true, 2);
            const int64_t rbs[4] = {1, 3, 8, c.rows};
            for (int acc = 0; acc < 2; acc++)
                for (int64_t rb : rbs) {
                    mkc_gemv_n a1;
                    std::memset(&a1, 0, sizeof a1);
                    a1.count = 1;
                    a1.w[0] = v;
                    a1.y[0] = got.data();
                    for (int64_t r = 0; r < c.rows; r++)
                        got[r] = acc ? 0.25f * (float)r - 1.0f : NAN;
                    const int64_t blocks = (c.rows + rb - 1) / rb;
                    for (int64_t b = 0; b < blocks; b++)
                        emu_block((unsigned)blocks, (unsigned)b, GEMV_WARPS * 32,
                                  [&] { k_gemv_s(a1, x.data(), acc, rb, c.rows); });
                    staged_runs++;
                    for (int64_t r = 0; r < c.rows; r++) {
                        const float want = acc ? (0.25f * (float)r - 1.0f) + ref[r] : ref[r];
                        if (std::memcmp(&got[r], &want, 4)) {
                            printf("FAIL %s: k_gemv_s (%lld rows a block%s) row %lld: %.9g, k_gemv's %.9g\n",
                                   c.name, (long long)rb, acc ? ", accumulating" : "", (long long)r,
                                   (double)got[r], (double)want);
                            g_bad++;
                            break;
                        }
                    }
                }
            mkc_gemv_n a2;
            std::memset(&a2, 0, sizeof a2);
            a2.count = 2;
            for (int i = 0; i < 2; i++) {
                z[i].assign(c.rows, NAN);
                a2.w[i] = v;
                a2.y[i] = z[i].data();
            }
            const int64_t rb = c.rows / 2 + 1, blocks = (2 * c.rows + rb - 1) / rb;
            for (int64_t b = 0; b < blocks; b++)
                emu_block((unsigned)blocks, (unsigned)b, GEMV_WARPS * 32,
                          [&] { k_gemv_s(a2, x.data(), 0, rb, 2 * c.rows); });
            staged_runs++;
            for (int i = 0; i < 2; i++)
                if (std::memcmp(z[i].data(), ref.data(), (size_t)c.rows * 4)) {
                    printf("FAIL %s: k_gemv_s of two matrices: matrix %d differs from k_gemv\n", c.name, i);
                    g_bad++;
                }
        }
        printf("%-32s %d launches, worst |diff|/bound %.3g; gemv_n bitwise, 3 tokens bitwise%s\n", c.name, runs,
               worst, staged_runs ? ", staged weights bitwise" : "");
        staged_cases += staged_runs > 0;
        emu_weight_free(t);
    }
    if (!only || std::strstr("fold", only)) {
        /* the fold's draws from a stream of their own, whatever cases ran before: its control (below)
         * asks the last bits of sums to differ, which depends on the draws */
        emu_seed(0x243f6a8885a308d3ull);
        g_bad += fold_case("affine4 g64 bf16", EMU_AFFINE, 4, 64, MK_DT_BF16, 70, 2048);
        g_bad += fold_case("affine8 g64 f16", EMU_AFFINE, 8, 64, MK_DT_F16, 40, 4096);
        g_bad += fold_case("affine4 g64 bf16 (DeepSeek width)", EMU_AFFINE, 4, 64, MK_DT_BF16, 9, 7168);
        g_bad += fold_case("bf16", EMU_BF16, 0, 0, MK_DT_BF16, 33, 1000);
        g_bad += fold_case("affine4 g32 f16", EMU_AFFINE, 4, 32, MK_DT_F16, 65, 160);
        g_bad += fold_case("f32", EMU_F32, 0, 0, MK_DT_F32, 17, 48);
        /* the control: summed in the GEMV block's own order (256 threads), not k_add_rmsnorm's, xb
         * must differ in some draw at every width */
        const int differ = fold_case("affine4 g64 bf16", EMU_AFFINE, 4, 64, MK_DT_BF16, 70, 2048, 256) +
                           fold_case("affine8 g64 f16", EMU_AFFINE, 8, 64, MK_DT_F16, 40, 4096, 256) +
                           fold_case("affine4 g64 bf16", EMU_AFFINE, 4, 64, MK_DT_BF16, 9, 7168, 256) +
                           fold_case("bf16", EMU_BF16, 0, 0, MK_DT_BF16, 33, 1000, 256);
        printf("fold control: the block's own sum order changes xb at %d of 4 widths\n", differ);
        if (differ < 2) {
            printf("FAIL fold control: summing in the block's own order gave k_add_rmsnorm's bits at 3 or more of the 4 widths\n");
            g_bad++;
        }
    }
    if (!only || std::strstr("q8", only)) {
        g_bad += q8_case("affine4 g64 bf16 37x2048", 4, 64, MK_DT_BF16, 37, 2048);
        g_bad += q8_case("affine4 g32 f16 9x96", 4, 32, MK_DT_F16, 9, 96);
        g_bad += q8_case("affine4 g128 f32 20x512", 4, 128, MK_DT_F32, 20, 512);
        g_bad += q8_case("affine8 g64 bf16 13x768", 8, 64, MK_DT_BF16, 13, 768);
        g_bad += q8_case("affine8 g32 f32 6x64", 8, 32, MK_DT_F32, 6, 64);
        g_bad += q8_case("affine8 g128 f16 11x4096", 8, 128, MK_DT_F16, 11, 4096);
    }
    if ((!only || std::strstr("q8", only)) && g_q8s != 10) {
        printf("FAIL: the int8 staged-weight kernel ran on %d case runs, expected 10\n", g_q8s);
        g_bad++;
    }
    if (!only && staged_cases != 4) {
        printf("FAIL: the staged-weight kernel ran on %d cases, expected 4\n", staged_cases);
        g_bad++;
    }
    return g_bad ? 1 : 0;
}
