// Host emulation (cuda_emu.h, with its mma.sync m16n8k16 on bf16) of the
// grouped GEMM on split activations, the default MoE prefill
// (src/cuda/cuda_grouped_split.cuh, included as it is: k_grp_mm) against the
// product in double with the CPU's dequantized weights (mk_wt_dequant_row,
// linked as it is). Three experts stacked, 2 of 3 per token, routed rows
// gathered through a_rows into tiles of up to 32 (partial tiles, two blocks
// past the plan's count that must return at once), gate and up in one
// launch (grid z), then a down-like launch writing rows through c_rows;
// MLX affine 4-bit g32 / g64 / g128 and 8-bit g32 / g64, scales in f32,
// bf16 and f16, row counts past the last 128-column tile, rows of very
// different sizes. Every output within 1e-5 of sum |w x| of the double
// product (the backend's matmul bound: the products are exact, the sums
// float32), every output written. The control: x rounded to bf16 once
// (NP = 1, the serving engines' arithmetic) misses that bound. Checks the
// fragments, the tiles and the group folds, not the device's speed. Exit 1
// on a mismatch.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

// the emulation first, then the device headers in the order they need
// clang-format off
#include "cuda_emu.h"
#include "cuda/cuda_impl.cuh"
#include "q8_ref.h"
#include "cuda/cuda_grouped_q8.cuh"
#include "cuda/cuda_grouped_split.cuh"
#include "grouped_plan.h"
// clang-format on

static int g_bad;

struct scase {
    const char *name;
    int bits, group, sd;
    int64_t K, N, n; /* columns, rows per expert, tokens */
};

using sk = void (*)(const float *, int64_t, const int32_t *, grp_mat, grp_mat, int, int, const int4 *,
                    const int32_t *);
template <int BITS, int NP> static sk by_sd(int sd) {
    return sd == MK_DT_F32 ? k_grp_mm<BITS, 0, NP> : sd == MK_DT_BF16 ? k_grp_mm<BITS, 1, NP> : k_grp_mm<BITS, 2, NP>;
}
static sk pick(int bits, int sd, int np) {
    if (bits == 8)
        return np == 3 ? by_sd<8, 3>(sd) : by_sd<8, 1>(sd);
    return np == 3 ? by_sd<4, 3>(sd) : by_sd<4, 1>(sd);
}

static void launch(sk k, unsigned gx, unsigned gy, unsigned gz, const float *A, int64_t lda, const int32_t *a_rows,
                   grp_mat m0, grp_mat m1, int K, int group, const int4 *tiles, const int32_t *ntiles) {
    for (unsigned z = 0; z < gz; z++)
        for (unsigned y = 0; y < gy; y++)
            for (unsigned x = 0; x < gx; x++)
                emu_block(
                    gx, x, GRP_THREADS, [&] { k(A, lda, a_rows, m0, m1, K, group, tiles, ntiles); }, gy, y, gz, z);
}

// the worst |y - ref| / (1e-5 sum |w x|) over rows r0 .. r0 + nr - 1 of W against x; NaN if unwritten
static double worst(const mk_wt *w, int64_t r0, int64_t nr, const float *x, int64_t K, const float *y) {
    std::vector<float> row((size_t)K);
    double q = 0;
    for (int64_t r = 0; r < nr; r++) {
        mk_wt_dequant_row(w, r0 + r, row.data());
        double s = 0, a = 0;
        for (int64_t c = 0; c < K; c++) {
            s += (double)row[(size_t)c] * x[c];
            a += std::fabs((double)row[(size_t)c] * x[c]);
        }
        const double e = std::fabs((double)y[r] - s) / (1e-5 * a + 1e-30);
        if (!(e <= q))
            q = std::isnan(e) ? NAN : e;
        if (std::isnan(q))
            return q;
    }
    return q;
}

// gate / up through a_rows, then down-like through c_rows; the worst ratio to the bound
static double grouped(const scase &c, int np) {
    const int E = emu_plan::E, k = emu_plan::k;
    const int64_t n = c.n, P = n * k;
    void *wg = q8r_weight(E * c.N, c.K, c.bits, c.group, c.sd), *wu = q8r_weight(E * c.N, c.K, c.bits, c.group, c.sd);
    std::vector<float> x((size_t)(n * c.K));
    for (int64_t t = 0; t < n; t++) {
        const float s = std::pow(10.0f, q8r_rand(-2.0f, 2.0f));
        for (int64_t i = 0; i < c.K; i++)
            x[(size_t)(t * c.K + i)] = s * q8r_rand(-1.0f, 1.0f);
    }
    /* the routing and the plan (grouped_plan.h) */
    const emu_plan pl(n);
    const std::vector<int32_t> &tok_of = pl.tok_of, &pair_of = pl.pair_of;
    const std::vector<int4> &tiles = pl.tiles;
    const int *first = pl.first, *cnt = pl.cnt;
    const int32_t nt = (int32_t)tiles.size();
    std::vector<float> G((size_t)(P * c.N), NAN), U((size_t)(P * c.N), NAN), Y((size_t)(P * c.N), NAN);
    const grp_mat mg = grp_mat_of(q8r_view(wg), c.N, G.data(), c.N, nullptr),
                  mu = grp_mat_of(q8r_view(wu), c.N, U.data(), c.N, nullptr);
    const sk kern = pick(c.bits, c.sd, np);
    const unsigned gx = (unsigned)((c.N + GRP_BN - 1) / GRP_BN);
    launch(kern, gx, (unsigned)nt + 2, 2, x.data(), c.K, tok_of.data(), mg, mu, (int)c.K, c.group, tiles.data(), &nt);
    /* down-like: the sorted rows of x gathered first (a_rows NULL), written to their pairs' rows */
    std::vector<float> xs((size_t)(P * c.K));
    for (int64_t r = 0; r < P; r++)
        std::memcpy(&xs[(size_t)(r * c.K)], &x[(size_t)(tok_of[(size_t)r] * c.K)], (size_t)c.K * 4);
    const grp_mat md = grp_mat_of(q8r_view(wg), c.N, Y.data(), c.N, pair_of.data());
    launch(kern, gx, (unsigned)nt, 1, xs.data(), c.K, nullptr, md, md, (int)c.K, c.group, tiles.data(), &nt);
    double q = 0;
    for (int e = 0; e < E && !std::isnan(q); e++)
        for (int r = 0; r < cnt[e] && !std::isnan(q); r++) {
            const int64_t sr = first[e] + r, pr = pair_of[(size_t)sr];
            const float *xr = &x[(size_t)(tok_of[(size_t)sr] * c.K)];
            const double o[3] = {worst(q8r_view(wg), e * c.N, c.N, xr, c.K, &G[(size_t)(sr * c.N)]),
                                 worst(q8r_view(wu), e * c.N, c.N, xr, c.K, &U[(size_t)(sr * c.N)]),
                                 worst(q8r_view(wg), e * c.N, c.N, xr, c.K, &Y[(size_t)(pr * c.N)])};
            for (double v : o)
                q = std::isnan(v) || v > q ? v : q;
        }
    q8r_free(wg);
    q8r_free(wu);
    return q;
}

int main(int argc, char **argv) {
    const scase cases[] = {
        {"affine 4-bit g64, bf16 scales, 160 rows per expert", 4, 64, MK_DT_BF16, 256, 160, 37},
        {"affine 4-bit g32, f32 scales", 4, 32, MK_DT_F32, 128, 128, 24},
        {"affine 4-bit g128, f16 scales", 4, 128, MK_DT_F16, 256, 96, 20},
        {"affine 8-bit g64, f16 scales", 8, 64, MK_DT_F16, 192, 96, 21},
        {"affine 8-bit g32, bf16 scales, 72 rows per expert", 8, 32, MK_DT_BF16, 128, 72, 50},
    };
    for (const scase &c : cases) {
        if (argc > 1 && !std::strstr(c.name, argv[1]))
            continue;
        srand(11);
        const double q = grouped(c, 3);
        const bool ok = q <= 1.0;
        printf("%s split x, %-52s worst %.3g of the bound\n", ok ? "ok  " : "FAIL", c.name, q);
        g_bad += !ok;
        srand(11);
        const double q1 = grouped(c, 1); /* the control: x rounded to bf16 once */
        if (!(q1 > 1.0)) {
            printf("FAIL control: bf16 x, %s: worst %.3g of the bound, expected past it\n", c.name, q1);
            g_bad++;
        }
    }
    return g_bad ? 1 : 0;
}
