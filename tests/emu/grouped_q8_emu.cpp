// Host emulation (cuda_emu.h, with its mma.sync m16n8k32 int8 x uint8 and
// wgmma m64nNk32) of the int8 grouped GEMMs (src/cuda/cuda_grouped_q8.cuh
// and cuda_grouped_q8w.cuh, included as they are: k_q8x, k_grp_mm_q8,
// k_grp_mm_q8p, k_grp_mm_q8w) against the CPU's int8 prefill GEMM (q8_ref.c:
// mk_gq8_matmul on its portable table, linked as it is). The device kernel
// exists to give a row the CPU's bits, so every output must be bitwise the
// CPU's (NaN rows NaN):
//   - a plain matmul (no tiles: the rows in order) of MLX affine 4-bit g64
//     (activation blocks of 64), 4-bit g32 and g128, 8-bit g64 and g32
//     (blocks of 32), scales in f32, bf16 and f16, widths with a partial
//     last 512-column panel, rows and columns past the last tile, a row
//     with a NaN and rows with zero blocks, rows of very different sizes;
//   - the grouped form: three experts stacked, routed rows gathered
//     through a_rows into tiles of up to 32, gate and up in one launch
//     (grid z), and a down-like launch writing rows through c_rows.
// Checks the fragments, the order of the folds and the quantizer, not the
// device's speed. Exit 1 on a mismatch; argument: run only the cases whose
// name has it.
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
#include "cuda/cuda_grouped_q8w.cuh"
#include "grouped_plan.h"
// clang-format on

static int g_bad;

struct qcase {
    const char *name;
    int bits, group, sd;
    int64_t K, N, n; /* columns, rows per expert, tokens */
};

static int ab_of(int bits, int group) {
    return bits == 4 && group >= 64 ? 64 : 32;
}

// rows x K floats: rows scaled by 10^[-2, 2], a zero 64-column span in row
// 1, a NaN in row 2 (when there are rows enough)
static std::vector<float> make_x(int64_t rows, int64_t K, bool nan) {
    std::vector<float> x((size_t)(rows * K));
    for (int64_t r = 0; r < rows; r++) {
        const float s = std::pow(10.0f, q8r_rand(-2.0f, 2.0f));
        for (int64_t c = 0; c < K; c++)
            x[(size_t)(r * K + c)] = s * q8r_rand(-1.0f, 1.0f);
    }
    if (rows > 1)
        for (int64_t c = 64; c < 128 && c < K; c++)
            x[(size_t)(K + c)] = 0.0f;
    if (nan && rows > 2)
        x[(size_t)(2 * K + K / 3)] = NAN;
    return x;
}

struct q8buf {
    std::vector<int8_t> q;
    std::vector<float> d, xg;
    gq8_x v;
    q8buf(int64_t rows, int64_t K, int ab, int group)
        : q((size_t)(rows * K)), d((size_t)(rows * (K / ab))), xg((size_t)(rows * (K / group))) {
        v.q = q.data();
        v.d = d.data();
        v.xg = xg.data();
    }
};

static void quantize(const float *x, int64_t rows, int64_t K, int group, int ab, q8buf &o) {
    const int64_t warps = rows * (K / group), blocks = (warps + 7) / 8;
    for (int64_t b = 0; b < blocks; b++)
        emu_block((unsigned)blocks, (unsigned)b, 256, [&] {
            if (ab == 64)
                k_q8x<64>(x, K, rows, (int)K, group, o.v);
            else
                k_q8x<32>(x, K, rows, (int)K, group, o.v);
        });
}

using q8k = void (*)(gq8_x, const int32_t *, grp_mat, grp_mat, int, int, const int4 *, const int32_t *, int);
// P: the pipelined kernel (k_grp_mm_q8p), 1 in its default stages, 2 in its other stage count
// for 4-bit weights (4), else (0) the register-staged one
template <int BITS, int AB, int P> static q8k by_sd(int sd) {
    if (P)
        return sd == MK_DT_F32    ? k_grp_mm_q8p<BITS, 0, AB, P == 2 ? 4 : Q8P_STAGES(BITS)>
               : sd == MK_DT_BF16 ? k_grp_mm_q8p<BITS, 1, AB, P == 2 ? 4 : Q8P_STAGES(BITS)>
                                  : k_grp_mm_q8p<BITS, 2, AB, P == 2 ? 4 : Q8P_STAGES(BITS)>;
    return sd == MK_DT_F32    ? k_grp_mm_q8<BITS, 0, AB>
           : sd == MK_DT_BF16 ? k_grp_mm_q8<BITS, 1, AB>
                              : k_grp_mm_q8<BITS, 2, AB>;
}
template <int P> static q8k pick(int bits, int group, int sd) {
    if (bits == 8)
        return by_sd<8, 32, P>(sd);
    return ab_of(bits, group) == 64 ? by_sd<4, 64, P>(sd) : by_sd<4, 32, P>(sd);
}
template <int BITS, int AB> static q8k q8w_by_sd(int sd) {
    return sd == MK_DT_F32    ? k_grp_mm_q8w<BITS, 0, AB>
           : sd == MK_DT_BF16 ? k_grp_mm_q8w<BITS, 1, AB>
                              : k_grp_mm_q8w<BITS, 2, AB>;
}
static q8k pick(int bits, int group, int sd, int p) {
    if (p == 3)
        return bits == 8                   ? q8w_by_sd<8, 32>(sd)
               : ab_of(bits, group) == 64 ? q8w_by_sd<4, 64>(sd)
                                          : q8w_by_sd<4, 32>(sd);
    return p == 2 ? pick<2>(bits, group, sd) : p ? pick<1>(bits, group, sd) : pick<0>(bits, group, sd);
}
// the kernel under test (main runs each case under every one that takes it): 0 the register-staged,
// 1 the pipelined in its default stages, 2 the pipelined in 4 stages (4-bit weights), 3 the wgmma
// kernel (tiles of Q8W_BM rows, blocks of Q8W_BN columns, its shared memory bounded: emu_smem)
static int g_p, g_bits;
static const char *const kname[4] = {"registers", "pipelined", "pipelined 4", "wgmma"};
static const char *const ktag[4] = {"", ", pipelined", ", pipelined, 4 stages", ", wgmma"};
static int tile_rows(void) {
    return g_p == 3 ? Q8W_BM : GRP_BM;
}
static int tile_cols(void) {
    return g_p == 3 ? Q8W_BN : GRP_BN;
}

static void launch(q8k k, unsigned gx, unsigned gy, unsigned gz, const q8buf &A, const int32_t *a_rows,
                   grp_mat m0, grp_mat m1, int K, int group, const int4 *tiles, const int32_t *ntiles,
                   int nrows) {
    emu_smem(g_p == 3 ? q8w_smem(g_bits) : 0);
    for (unsigned z = 0; z < gz; z++)
        for (unsigned y = 0; y < gy; y++)
            for (unsigned x = 0; x < gx; x++)
                emu_block(
                    gx, x, g_p == 3 ? Q8W_THREADS : GRP_THREADS,
                    [&] { k(A.v, a_rows, m0, m1, K, group, tiles, ntiles, nrows); }, gy, y, gz, z);
    emu_smem(0);
}

// outputs bitwise (both NaN counts as equal)
static int64_t differ(const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (std::memcmp(a + i, b + i, 4) && !(std::isnan(a[i]) && std::isnan(b[i])))
            return i;
    return -1;
}

static void plain(const qcase &c) {
    void *w = q8r_weight(c.N, c.K, c.bits, c.group, c.sd);
    const mk_wt *v = q8r_view(w);
    const int ab = ab_of(c.bits, c.group);
    std::vector<float> x = make_x(c.n, c.K, true), y((size_t)(c.n * c.N), -7.0f), ref((size_t)(c.n * c.N));
    q8buf A(c.n, c.K, ab, c.group);
    quantize(x.data(), c.n, c.K, c.group, ab, A);
    const grp_mat m = grp_mat_of(v, c.N, y.data(), c.N, nullptr);
    launch(pick(c.bits, c.group, c.sd, g_p), (unsigned)((c.N + tile_cols() - 1) / tile_cols()),
           (unsigned)((c.n + tile_rows() - 1) / tile_rows()), 1, A, nullptr, m, m, (int)c.K, c.group, nullptr,
           nullptr, (int)c.n);
    q8r_matmul(w, 0, c.N, x.data(), c.n, ref.data());
    const int64_t at = differ(y.data(), ref.data(), c.n * c.N);
    if (at >= 0) {
        printf("FAIL %s (plain%s): token %lld row %lld: %.9g, the CPU's %.9g\n", c.name, ktag[g_p], (long long)(at / c.N),
               (long long)(at % c.N), (double)y[(size_t)at], (double)ref[(size_t)at]);
        g_bad++;
    }
    int nan_rows = 0;
    for (int64_t t = 0; t < c.n; t++)
        nan_rows += std::isnan(y[(size_t)(t * c.N)]);
    if (c.n > 2 && nan_rows != 1) { /* the NaN row only */
        printf("FAIL %s (plain%s): %d rows NaN, expected 1\n", c.name, ktag[g_p], nan_rows);
        g_bad++;
    }
    q8r_free(w);
}

// three experts, 2 of 3 per token; gate and up (z = 2) gathered through
// a_rows, then down-like rows written through c_rows
static void grouped(const qcase &c) {
    const int E = emu_plan::E, k = emu_plan::k, ab = ab_of(c.bits, c.group);
    const int64_t n = c.n, P = n * k;
    void *wg = q8r_weight(E * c.N, c.K, c.bits, c.group, c.sd),
         *wu = q8r_weight(E * c.N, c.K, c.bits, c.group, c.sd);
    std::vector<float> x = make_x(n, c.K, false);
    /* the routing and the plan (grouped_plan.h) */
    const emu_plan pl(n, tile_rows());
    const std::vector<int32_t> &tok_of = pl.tok_of, &pair_of = pl.pair_of;
    const std::vector<int4> &tiles = pl.tiles;
    const int *first = pl.first, *cnt = pl.cnt;
    const int32_t nt = (int32_t)tiles.size();
    q8buf A(n, c.K, ab, c.group);
    quantize(x.data(), n, c.K, c.group, ab, A);
    std::vector<float> G((size_t)(P * c.N), -7.0f), U((size_t)(P * c.N), -7.0f), Y((size_t)(P * c.N), -7.0f);
    const grp_mat mg = grp_mat_of(q8r_view(wg), c.N, G.data(), c.N, nullptr),
                  mu = grp_mat_of(q8r_view(wu), c.N, U.data(), c.N, nullptr);
    const q8k kern = pick(c.bits, c.group, c.sd, g_p);
    launch(kern, (unsigned)((c.N + tile_cols() - 1) / tile_cols()), (unsigned)nt + 2, 2, A, tok_of.data(), mg, mu,
           (int)c.K, c.group, tiles.data(), &nt, 0); /* two blocks past ntiles: they must return */
    /* down-like: the sorted rows of x (a_rows NULL: x gathered first) to their pairs' rows */
    std::vector<float> xs((size_t)(P * c.K));
    for (int64_t r = 0; r < P; r++)
        std::memcpy(&xs[(size_t)(r * c.K)], &x[(size_t)(tok_of[(size_t)r] * c.K)], (size_t)c.K * 4);
    q8buf As(P, c.K, ab, c.group);
    quantize(xs.data(), P, c.K, c.group, ab, As);
    const grp_mat md = grp_mat_of(q8r_view(wg), c.N, Y.data(), c.N, pair_of.data());
    launch(kern, (unsigned)((c.N + tile_cols() - 1) / tile_cols()), (unsigned)nt, 1, As, nullptr, md, md, (int)c.K,
           c.group, tiles.data(), &nt, 0);
    for (int e = 0; e < E; e++) {
        std::vector<float> xe((size_t)(cnt[e] * c.K)), rg((size_t)(cnt[e] * c.N)), ru((size_t)(cnt[e] * c.N));
        for (int r = 0; r < cnt[e]; r++)
            std::memcpy(&xe[(size_t)(r * c.K)], &x[(size_t)(tok_of[(size_t)(first[e] + r)] * c.K)],
                        (size_t)c.K * 4);
        q8r_matmul(wg, e * c.N, c.N, xe.data(), cnt[e], rg.data());
        q8r_matmul(wu, e * c.N, c.N, xe.data(), cnt[e], ru.data());
        for (int r = 0; r < cnt[e]; r++) {
            const int64_t sr = first[e] + r, pr = pair_of[(size_t)sr];
            const float *want = &rg[(size_t)(r * c.N)];
            const struct {
                const char *what;
                const float *got, *want;
            } outs[3] = {{"gate", &G[(size_t)(sr * c.N)], want},
                         {"up", &U[(size_t)(sr * c.N)], &ru[(size_t)(r * c.N)]},
                         {"through c_rows", &Y[(size_t)(pr * c.N)], want}};
            for (const auto &o : outs) {
                const int64_t at = differ(o.got, o.want, c.N);
                if (at >= 0) {
                    printf("FAIL %s (grouped%s, %s): expert %d row %d column %lld: %.9g, the CPU's %.9g\n",
                           c.name, ktag[g_p], o.what, e, r, (long long)at, (double)o.got[at], (double)o.want[at]);
                    g_bad++;
                    goto next;
                }
            }
        }
    next:;
    }
    q8r_free(wg);
    q8r_free(wu);
}

int main(int argc, char **argv) {
    const char *only = argc > 1 ? argv[1] : nullptr;
    const qcase cases[] = {
        {"affine4 g64 bf16 K640 N200 n37", 4, 64, MK_DT_BF16, 640, 200, 37},
        {"affine4 g32 f16 K576 N136 n9", 4, 32, MK_DT_F16, 576, 136, 9},
        {"affine4 g128 f32 K1024 N130 n33", 4, 128, MK_DT_F32, 1024, 130, 33},
        {"affine8 g64 bf16 K640 N72 n12", 8, 64, MK_DT_BF16, 640, 72, 12},
        {"affine8 g32 f16 K512 N129 n3", 8, 32, MK_DT_F16, 512, 129, 3},
        /* the pipelined kernel's own edges: a single stage (fewer than its in-flight stages), four
         * groups a stage, and g128 with 2-byte scales, which it declines */
        {"affine4 g64 f16 K128 N64 n5", 4, 64, MK_DT_F16, 128, 64, 5},
        {"affine4 g32 bf16 K768 N100 n40", 4, 32, MK_DT_BF16, 768, 100, 40},
        {"affine4 g128 bf16 K1024 N40 n7", 4, 128, MK_DT_BF16, 1024, 40, 7},
        /* the wgmma kernel's own edges: more than one tile of 64 rows and of 128 columns, a partial
         * panel (K 640), groups of 256 spanning stages (f32 scales), a single stage, 8-bit codes over
         * two tiles each way */
        {"affine4 g64 bf16 K640 N300 n150", 4, 64, MK_DT_BF16, 640, 300, 150},
        {"affine4 g256 f32 K1024 N136 n70", 4, 256, MK_DT_F32, 1024, 136, 70},
        {"affine4 g64 f32 K128 N129 n65", 4, 64, MK_DT_F32, 128, 129, 65},
        {"affine8 g32 bf16 K640 N200 n100", 8, 32, MK_DT_BF16, 640, 200, 100},
    };
    int piped = 0, piped3 = 0, wgmma = 0;
    for (const qcase &c : cases) {
        if (only && !std::strstr(c.name, only))
            continue;
        /* the pipelined kernel where the backend would pick it (q8p_takes, on the case's own weight) */
        void *w = q8r_weight(c.N, c.K, c.bits, c.group, c.sd);
        const mk_wt *v = q8r_view(w);
        const int sb = c.sd == MK_DT_F32 ? 4 : 2;
        const bool takes = q8p_takes(c.K, c.group, sb, c.K / c.group, v->scales, v->biases);
        const bool takes_w = q8w_takes(c.bits, c.K, c.group, sb, c.K / c.group, v->scales, v->biases);
        q8r_free(w);
        /* the wgmma kernel's own edges (the last cases) run under it alone: the others' are above */
        const bool wg_only = &c >= &cases[sizeof cases / sizeof cases[0] - 4];
        for (int p = wg_only ? 3 : 0; p < 4; p++) {
            if (p == 3 ? !takes_w : p > 0 && (!takes || (p == 2 && c.bits != 4)))
                continue;
            g_p = p;
            g_bits = c.bits;
            wgmma += p == 3;
            piped += p == 1;
            piped3 += p == 2;
            const int bad0 = g_bad;
            plain(c);
            grouped(c);
            printf("%-36s %-12s %s\n", c.name, kname[p],
                   g_bad == bad0 ? "bitwise the CPU's int8 GEMM (plain and grouped)" : "FAILED");
        }
    }
    if (!only && (piped < 6 || piped3 < 4 || wgmma < 10)) {
        printf("FAIL: the pipelined kernel ran %d cases (4 stages: %d), the wgmma kernel %d; expected 6 (4), 10\n",
               piped, piped3, wgmma);
        g_bad++;
    }
    if (g_bad) {
        printf("%d mismatches\n", g_bad);
        return 1;
    }
    return 0;
}
