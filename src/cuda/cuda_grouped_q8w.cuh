/* The int8 grouped GEMM on Hopper's warpgroup MMA (k_grp_mm_q8w;
 * mk_cuda_set_q8_wgmma, off until measured): the CPU's int8 prefill GEMM
 * rule (src/kernels/kern_gemm_q8.h), so each row gets the CPU's bits, as
 * k_grp_mm_q8p (cuda_grouped_q8.cuh) gives them.
 *
 * Why. k_grp_mm_q8p issues ~35 instructions an mma.sync m16n8k32 (session
 * 25's ncu): every fragment of x and of the unpacked codes loaded into
 * registers by every warp, their addresses, the unpack, the folds. It runs
 * at ~120 TOPS, 6% of the int8 rate, bound by the instructions it issues.
 * wgmma (cuda_wgmma.cuh) reads both tiles from shared memory itself, so a
 * warpgroup's work per 64 x 128 x 64 block of products is the CPU rule's
 * folds (per output: the dot made a float, times the token's d, fused into
 * acc with the row's scale; a group's bias) and a share of the unpack:
 * about 6 instructions a thread per output where k_grp_mm_q8p spends ~35
 * per mma's 4.
 *
 * Work. A block is one warpgroup (128 threads) on a tile of Q8W_BM = 64
 * routed rows (the plan's tiles of 64: k_grp_plan's bm) by Q8W_BN = 128
 * weight rows of one expert, over K in stages of Q8W_KB = 128 columns
 * fed by cp.async, Q8W_STAGES deep: the tile's x bytes straight into the
 * wgmma layout (core matrices of 8 rows x 16 bytes), the codes (8-bit:
 * straight into that layout too; 4-bit: raw), scales and biases, the
 * tokens' block scales and group sums. Per stage the threads unpack 4-bit
 * codes into bytes in the same layout (Wu) and the stage's scales and
 * biases into floats, then per activation block of AB (64 or 32, the CPU
 * rule's mk_gq8_ab): int32 accumulators set to MKC_DOT0, AB / 32 wgmma
 * m64n128k32, a wait, the folds in the CPU's order into acc, the panel's
 * sum into ys every 512 columns, as k_grp_mm_q8p. The wgmma of one block
 * and the folds of the other block an SM (two fit: ~92-94 KB each)
 * overlap.
 *
 * Shapes (q8w_takes): affine 4-bit (activation blocks of 64 for groups of
 * 64 or more, else 32) and 8-bit (blocks of 32), groups of 32 .. 512 (a
 * power of two), K % 128 == 0, each row's scales of a stage a whole number
 * of 4-byte words (bf16/f16 scales: groups of 32 or 64; f32: any), 16-byte
 * aligned rows. Others keep k_grp_mm_q8p. The includer provides
 * cuda_impl.cuh and cuda_grouped_q8.cuh (grp_mat, gq8_x, gq8_nibbles). */
#ifndef MK_CUDA_GROUPED_Q8W_CUH
#define MK_CUDA_GROUPED_Q8W_CUH

#include "cuda/cuda_wgmma.cuh"

#define Q8W_BM 64       /* routed rows of a tile: the wgmma's M */
#define Q8W_BN 128      /* weight rows (outputs) of a block: the wgmma's N */
#define Q8W_KB 128      /* columns a stage */
#define Q8W_THREADS 128 /* one warpgroup */
#define Q8W_STAGES 3
#define Q8W_LR 80       /* bytes of a staged row of codes (64 + 16: the unpack's reads without bank conflicts) */
#define Q8W_SBO 1024    /* bytes between core matrices along the rows: 8 of them along a stage's 128 columns */
static_assert(Q8W_BN == 128 && Q8W_THREADS == 128, "gq8_stage_scales: 128 rows by 128 threads");

/* One stage in the dynamic shared memory (bytes); BITS 4: the codes raw, rows Q8W_LR apart; 8: the codes
 * in core matrices, as x */
template <int BITS> struct q8w_stage {
    static constexpr int x = 0;                                            /* [64 rows][128] int8 */
    static constexpr int w = x + Q8W_BM * Q8W_KB;                          /* the codes of 128 rows */
    static constexpr int s = w + Q8W_BN * (BITS == 4 ? Q8W_LR : Q8W_KB);   /* [128][16] raw scales */
    static constexpr int b = s + Q8W_BN * 16;                              /* [128][16] raw biases */
    static constexpr int d = b + Q8W_BN * 16;                              /* [64][4] f32 block scales */
    static constexpr int xg = d + Q8W_BM * 16;                             /* [64][4] f32 group sums */
    static constexpr int size = xg + Q8W_BM * 16;
};
/* after the stages: 4-bit codes of the stage as bytes [128 rows][128] in core matrices (Wu), then the
 * stage's scales and biases as floats [4 groups][128] each */
#define Q8W_WU (Q8W_BN * Q8W_KB)
#define Q8W_NGS 4 /* scale groups a stage at most (groups of 32) */
/* Host: the dynamic shared memory of k_grp_mm_q8w<BITS, ..> */
static inline size_t q8w_smem(int bits) {
    return (size_t)Q8W_STAGES * (bits == 4 ? q8w_stage<4>::size : q8w_stage<8>::size) + (bits == 4 ? Q8W_WU : 0) +
           2 * Q8W_NGS * Q8W_BN * 4;
}
/* Host: whether k_grp_mm_q8w takes K columns of BITS-bit rows in scale
 * groups of group (scales in bytes of sb each, ng per row), the pointers
 * as given */
static inline bool q8w_takes(int bits, int64_t K, int group, int sb, int64_t ng, const void *scales,
                             const void *biases) {
    if ((bits != 4 && bits != 8) || group < 32 || group > 512 || (group & (group - 1)) || K % Q8W_KB)
        return false;
    const int ngs = group >= Q8W_KB ? 1 : Q8W_KB / group;
    return (ngs * sb) % 4 == 0 && (ng * sb) % 4 == 0 && ((uintptr_t)scales & 3) == 0 && ((uintptr_t)biases & 3) == 0;
}
/* BITS 4 or 8, scales of dtype SD (0 f32, 1 bf16, 2 f16), AB the activation block (the CPU rule's
 * mk_gq8_ab: the backend's q8_ab) */
template <int BITS, int SD, int AB>
__global__ void __launch_bounds__(Q8W_THREADS)
    k_grp_mm_q8w(gq8_x A, const int32_t *__restrict__ a_rows, grp_mat m0, grp_mat m1, int K, int group,
                 const int4 *__restrict__ tiles, const int32_t *__restrict__ ntiles, int nrows) {
#ifdef MKC_WGMMA
    typedef q8w_stage<BITS> L;
    constexpr int S = Q8W_STAGES, NB = Q8W_KB / AB; /* activation blocks a stage: 2 or 4 */
    MKC_DYN_SMEM(float4, mkc_sm4);
    uint8_t *const sm = (uint8_t *)mkc_sm4;
    uint8_t *const Wu = sm + S * L::size;
    float *const Sf = (float *)(Wu + (BITS == 4 ? Q8W_WU : 0)), *const Bf = Sf + Q8W_NGS * Q8W_BN;
    int4 tile;
    if (!gq8_tile<Q8W_BM>(tiles, ntiles, nrows, &tile))
        return;
    const grp_mat m = blockIdx.z ? m1 : m0;
    const int n0 = blockIdx.x * Q8W_BN;
    if (n0 >= m.N)
        return;
    const int tid = threadIdx.x, lane = tid & 31, wp = tid >> 5, g = lane >> 2, t4 = lane & 3;
    const int gsh = __ffs(group) - 1; /* group: a power of two, 32 .. 512 */
    const int nb = K / AB, ng = K >> gsh, nk = K / Q8W_KB;
    const int ngs = group >= Q8W_KB ? 1 : Q8W_KB >> gsh; /* scale groups a stage: 1, 2 or 4 */
    const int sb = SD == 0 ? 4 : 2, sw = ngs * sb / 4;    /* scale words a row a stage: 1, 2 or 4 */
    const int swsh = __ffs(sw) - 1;
    auto a_row = [&](int i) -> int64_t {
        return i < tile.z ? (a_rows ? (int64_t)a_rows[tile.y + i] : (int64_t)tile.y + i) : -1;
    };
    /* this thread's copies, fixed over the stages: x chunks tid + 128 i (row c / 8: tid / 8 + 16 i, 16-byte
     * part c % 8); the tokens' d and xg slots (row tid / 2, slots tid % 2 + 2 q). The expert's weight rows
     * are consecutive: row r of the block at wbase + r * row_bytes */
    int64_t xr[4];
#pragma unroll
    for (int i = 0; i < 4; i++)
        xr[i] = a_row((tid >> 3) + 16 * i);
    const uint8_t *const wbase = m.data + ((int64_t)tile.x * m.N + n0) * m.row_bytes;
    const int wrows = m.N - n0; /* rows of the block that exist */
    const int64_t sr = a_row(tid >> 1);
    const int sj = tid & 1;

    auto issue = [&](int it) {
        uint8_t *st = sm + (it % S) * L::size;
        const int k0 = it * Q8W_KB;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int r = (tid >> 3) + 16 * i, p = tid & 7;
            mkc_cp_async<16>(st + L::x + (r >> 3) * Q8W_SBO + p * 128 + (r & 7) * 16,
                             A.q + (xr[i] >= 0 ? xr[i] : 0) * K + k0 + p * 16, xr[i] >= 0);
        }
        if (BITS == 4) { /* row tid / 4 + 32 i, 16-byte part tid % 4, raw */
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int r = (tid >> 2) + 32 * i, p = tid & 3;
                mkc_cp_async<16>(st + L::w + r * Q8W_LR + p * 16, wbase + (r < wrows ? r : 0) * m.row_bytes + k0 / 2 + p * 16,
                                 r < wrows);
            }
        } else { /* row tid / 8 + 16 i, part tid % 8, into core matrices */
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const int r = (tid >> 3) + 16 * i, p = tid & 7;
                mkc_cp_async<16>(st + L::w + (r >> 3) * Q8W_SBO + p * 128 + (r & 7) * 16,
                                 wbase + (r < wrows ? r : 0) * m.row_bytes + k0 + p * 16, r < wrows);
            }
        }
        gq8_stage_scales(st + L::s, st + L::b, m, tile.x, n0, k0, gsh, ng, sb, sw, swsh);
        /* the tokens' block scales (slot j: block k0 / AB + j) and group sums (slot j: group k0 / group + j) */
#pragma unroll
        for (int q = 0; q < NB / 2; q++)
            mkc_cp_async<4>(st + L::d + (tid >> 1) * 16 + (sj + 2 * q) * 4,
                            A.d + (sr >= 0 ? sr : 0) * nb + k0 / AB + sj + 2 * q, sr >= 0);
#pragma unroll
        for (int q = 0; q < 2; q++)
            if (sj + 2 * q < ngs)
                mkc_cp_async<4>(st + L::xg + (tid >> 1) * 16 + (sj + 2 * q) * 4,
                                A.xg + (sr >= 0 ? sr : 0) * ng + (k0 >> gsh) + sj + 2 * q, sr >= 0);
    };

    /* outputs: d[4 i + 2 h + j] of the wgmma = row 16 wp + 8 h + g, column 8 i + 2 t4 + j of the tile */
    float acc[16][4], ys[16][4];
#pragma unroll
    for (int i = 0; i < 16; i++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            acc[i][e] = ys[i][e] = 0.0f;
    const int r0 = 16 * wp + g; /* this thread's rows r0 and r0 + 8 */

#pragma unroll
    for (int i = 0; i < S - 1; i++) {
        if (i < nk)
            issue(i);
        mkc_cp_commit(); /* a group per stage, empty or not: the wait counts stay uniform */
    }
    int ci[64];
    for (int it = 0; it < nk; it++) {
        mkc_cp_wait<S - 2>(); /* this thread's copies of stage it are in */
        __syncthreads();      /* everyone's; stage it - 1's buffer, Wu, Sf and Bf no longer read */
        if (it + S - 1 < nk)
            issue(it + S - 1);
        mkc_cp_commit();
        const uint8_t *st = sm + (it % S) * L::size;
        if (BITS == 4) {
            /* the codes as bytes in core matrices: chunk (row f, 16 columns c) from the 8 raw bytes at f * LR
             * + 8 c; a thread's 8 chunks: f % 8 = tid % 8, c = tid / 8 % 8, f / 8 = tid / 64 + 2 j (the reads
             * of a half-warp hit 32 distinct banks, a quarter-warp's stores 128 contiguous bytes) */
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const int f = ((tid >> 6) + 2 * j) * 8 + (tid & 7), c = (tid >> 3) & 7;
                const uint2 raw = *(const uint2 *)(st + L::w + f * Q8W_LR + 8 * c);
                const uint2 lo = gq8_nibbles(raw.x), hi = gq8_nibbles(raw.y);
                *(uint4 *)(Wu + (f >> 3) * Q8W_SBO + c * 128 + (f & 7) * 16) = make_uint4(lo.x, lo.y, hi.x, hi.y);
            }
        }
        for (int c = tid; c < ngs * Q8W_BN; c += Q8W_THREADS) { /* group c / 128 of the stage, row c % 128 */
            const int f = c >> 7, r = c & (Q8W_BN - 1);
            Sf[c] = mkc_sv<SD>(st + L::s + r * 16, f);
            Bf[c] = mkc_sv<SD>(st + L::b + r * 16, f);
        }
        mkc_wg_proxy_fence(); /* the bytes copied in and the bytes stored: for the tensor cores */
        __syncthreads();
        const uint8_t *Xs = st + L::x, *Ws = BITS == 4 ? Wu : st + L::w;
        const float *Dx = (const float *)(st + L::d), *Xg = (const float *)(st + L::xg);
        const int k0 = it * Q8W_KB;
#pragma unroll
        for (int jb = 0; jb < NB; jb++) { /* the stage's activation blocks */
#pragma unroll
            for (int e = 0; e < 64; e++)
                ci[e] = MKC_DOT0; /* the block's exact dots from MKC_DOT0 (mkc_dotf) */
            mkc_wg_fence();
#pragma unroll
            for (int h = 0; h < AB / 32; h++) { /* k32 step: two core matrices along K, 256 bytes */
                const int ks = jb * (AB / 32) + h;
                mkc_wgmma_s8u8_n128(ci, mkc_wg_desc(Xs + ks * 256, 128, Q8W_SBO), mkc_wg_desc(Ws + ks * 256, 128, Q8W_SBO),
                                    true);
            }
            mkc_wg_commit();
            mkc_wg_wait<0>();
            /* the block ends: fold its dots with the tokens' d and the rows' scale (gq8_fold_block's order) */
            const int f = (jb * AB) >> gsh; /* the stage's group */
            const float d0 = Dx[r0 * 4 + jb], d1 = Dx[(r0 + 8) * 4 + jb];
            const float *sf = Sf + f * Q8W_BN, *bf = Bf + f * Q8W_BN;
#pragma unroll
            for (int i = 0; i < 16; i++) {
                const float2 s2 = *(const float2 *)(sf + 8 * i + 2 * t4);
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const float d = h ? d1 : d0;
                    acc[i][2 * h] = fmaf(mkc_mul_rn(mkc_dotf(ci[4 * i + 2 * h]), d), s2.x, acc[i][2 * h]);
                    acc[i][2 * h + 1] = fmaf(mkc_mul_rn(mkc_dotf(ci[4 * i + 2 * h + 1]), d), s2.y, acc[i][2 * h + 1]);
                }
            }
            const int kend = k0 + (jb + 1) * AB; /* columns done */
            if ((kend & (group - 1)) == 0) {    /* the group ends: its bias times the tokens' group sums */
                const float x0 = Xg[r0 * 4 + f], x1 = Xg[(r0 + 8) * 4 + f];
#pragma unroll
                for (int i = 0; i < 16; i++) {
                    const float2 b2 = *(const float2 *)(bf + 8 * i + 2 * t4);
                    acc[i][0] = fmaf(b2.x, x0, acc[i][0]);
                    acc[i][1] = fmaf(b2.y, x0, acc[i][1]);
                    acc[i][2] = fmaf(b2.x, x1, acc[i][2]);
                    acc[i][3] = fmaf(b2.y, x1, acc[i][3]);
                }
            }
            if (kend % GQ8_PANEL == 0 || kend == K) { /* the panel ends: y += acc (y from +0, as the CPU's) */
#pragma unroll
                for (int i = 0; i < 16; i++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        ys[i][e] = mkc_add_rn(ys[i][e], acc[i][e]);
                        acc[i][e] = 0.0f;
                    }
            }
        }
    }
    mkc_cp_wait<0>(); /* no copy outlives the block (the trailing groups are empty) */
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int row = r0 + 8 * h;
        if (row >= tile.z)
            continue;
        const int64_t r = tile.y + row, orow = m.c_rows ? (int64_t)m.c_rows[r] : r;
        float *out = m.C + orow * m.ldc;
#pragma unroll
        for (int i = 0; i < 16; i++)
#pragma unroll
            for (int j = 0; j < 2; j++) {
                const int col = n0 + 8 * i + 2 * t4 + j;
                if (col < m.N)
                    out[col] = ys[i][2 * h + j];
            }
    }
#endif
}

#endif
