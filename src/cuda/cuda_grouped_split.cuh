/* The grouped GEMM on split activations (the MoE prefill of
 * MK_CUDA_GEMM_SPLIT, the default where the engine's prefill is float; the plan, the slot and the arithmetic's description
 * are cuda_grouped.cu's): k_grp_mm, block (column tile, row tile) of one
 * expert's routed rows against that expert's weight rows, x split into NP
 * bf16 parts, the codes exact in bf16, mma.sync m16n8k16, each group's
 * scale and bias folded in float32. A header of its own so that the host
 * emulation (tests/emu/grouped_split_emu.cpp) runs this very kernel. The
 * includer provides cuda_impl.cuh (or the emulator first) and
 * cuda_grouped_q8.cuh (GRP_BM .. GRP_THREADS, grp_mat,
 * grp_lds, grp_store). */
#ifndef MK_CUDA_GROUPED_SPLIT_CUH
#define MK_CUDA_GROUPED_SPLIT_CUH

#include "cuda/cuda_mma.cuh"

#define GRP_LDS (GRP_KB + 8) /* padded bf16 row in shared memory: conflict-free fragment loads */

__device__ __forceinline__ float grp_lo(uint32_t h) {
    return __uint_as_float(h << 16);
}
__device__ __forceinline__ float grp_hi(uint32_t h) {
    return __uint_as_float(h & 0xffff0000u);
}

/* code q (exact integer < 2^8) as a float, then two such packed as bf16 (the
 * upper halves: exact, q has at most 8 significant bits) */
__device__ __forceinline__ float grp_code(uint32_t q) {
    return __uint_as_float(0x4B000000u | q) - 8388608.0f;
}
__device__ __forceinline__ uint32_t grp_pack_codes(uint32_t q0, uint32_t q1) {
    return __byte_perm(__float_as_uint(grp_code(q0)), __float_as_uint(grp_code(q1)), 0x7632);
}

/* BITS 16: bf16 weights; 4 or 8: MLX affine codes with scales and biases of
 * dtype SD (0 f32, 1 bf16, 2 f16), folded every F = min(group, 64) values.
 * NP: parts of x (3 exact, 1 rounded). K % 64 == 0, row_bytes % 16 == 0. */
template <int BITS, int SD, int NP>
__global__ void __launch_bounds__(GRP_THREADS)
    k_grp_mm(const float *__restrict__ A, int64_t lda, const int32_t *__restrict__ a_rows, grp_mat m0, grp_mat m1,
             int K, int group, const int4 *__restrict__ tiles, const int32_t *__restrict__ ntiles) {
    __shared__ __align__(16) uint32_t As[NP][GRP_BM][GRP_LDS / 2];
    __shared__ __align__(16) uint32_t Ws[GRP_BN][GRP_LDS / 2];
    __shared__ float Ss[GRP_BN][2], Bs[GRP_BN][2], Xq[GRP_BM][4];
    if ((int)blockIdx.y >= *ntiles)
        return;
    const grp_mat m = blockIdx.z ? m1 : m0;
    const int n0 = blockIdx.x * GRP_BN;
    if (n0 >= m.N)
        return;
    const int4 tile = tiles[blockIdx.y]; /* expert, first sorted row, rows */
    const int tid = threadIdx.x, lane = tid & 31, wp = tid >> 5, g = lane >> 2, t4 = lane & 3;
    constexpr bool AFF = BITS != 16;
    constexpr int WB = BITS * GRP_KB / 8 / 16; /* 16-byte chunks of one weight row per step */
    const int F = group >= 64 ? 64 : 32;      /* fold window (affine) */

    /* this thread's staging: A row ar, quarter aq (16 values); weight row tid */
    const int ar = tid >> 2, aq = tid & 3;
    const float *arow = NULL;
    if (ar < tile.z) {
        const int64_t r = tile.y + ar;
        arow = A + (a_rows ? (int64_t)a_rows[r] : r) * lda + aq * 16;
    }
    const int wr = n0 + tid;
    const int64_t grow = (int64_t)tile.x * m.N + wr;
    const uint8_t *wrow = wr < m.N ? m.data + grow * m.row_bytes : NULL;

    float4 xa[4];
    uint4 wq[WB];
    float sv[2] = {0.0f, 0.0f}, bv[2] = {0.0f, 0.0f};
    auto load = [&](int k0) {
#pragma unroll
        for (int i = 0; i < 4; i++)
            xa[i] = arow ? __ldg((const float4 *)(arow + k0) + i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
        for (int i = 0; i < WB; i++)
            wq[i] = wrow ? mkc_ldw(wrow + (int64_t)k0 * BITS / 8 + 16 * i) : make_uint4(0u, 0u, 0u, 0u);
        if (AFF && wrow)
            for (int f = 0; f < GRP_KB / F; f++) {
                const int64_t gi = grow * m.ng + (k0 + f * F) / group;
                sv[f] = grp_lds<SD>(m.scales, gi);
                bv[f] = grp_lds<SD>(m.biases, gi);
            }
    };

    float acc[2][4][4], tmp[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int q = 0; q < 4; q++)
                acc[i][j][q] = tmp[i][j][q] = 0.0f;

    load(0);
    for (int k0 = 0; k0 < K; k0 += GRP_KB) {
        /* stage: x split in NP bf16 parts (+ quarter sums), codes as bf16 */
        {
            const float *xv = (const float *)xa;
            float qs = 0.0f;
#pragma unroll
            for (int i = 0; i < 16; i++)
                qs += xv[i];
            Xq[ar][aq] = qs;
            /* a thread's 8 words of each part as two 16-byte stores: the 8 lanes of a store's
             * phase (rows ar, ar + 1; quarters 0..3) then cover the 32 banks once (word stores
             * hit each bank 4 times: ncu, 3.9-way conflicts on the shared stores) */
            uint32_t hv[NP][8];
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const float a = xv[2 * i], b = xv[2 * i + 1];
                const uint32_t h0 = mkc_bf16x2(a, b);
                hv[0][i] = h0;
                if (NP == 3) {
                    const float ra = a - grp_lo(h0), rb = b - grp_hi(h0);
                    const uint32_t h1 = mkc_bf16x2(ra, rb);
                    hv[1][i] = h1;
                    hv[NP - 1][i] = mkc_bf16x2(ra - grp_lo(h1), rb - grp_hi(h1));
                }
            }
#pragma unroll
            for (int p = 0; p < NP; p++) {
                *(uint4 *)&As[p][ar][aq * 8] = make_uint4(hv[p][0], hv[p][1], hv[p][2], hv[p][3]);
                *(uint4 *)&As[p][ar][aq * 8 + 4] = make_uint4(hv[p][4], hv[p][5], hv[p][6], hv[p][7]);
            }
            uint32_t *wd = Ws[tid];
            if (BITS == 16) {
#pragma unroll
                for (int i = 0; i < WB; i++)
                    *(uint4 *)(wd + 4 * i) = wq[i];
            } else if (BITS == 4) {
#pragma unroll
                for (int i = 0; i < WB; i++) {
                    const uint32_t ws4[4] = {wq[i].x, wq[i].y, wq[i].z, wq[i].w};
#pragma unroll
                    for (int j = 0; j < 4; j++) { /* 8 codes, low nibble first */
                        const uint32_t v = ws4[j];
                        uint4 o;
                        o.x = grp_pack_codes(v & 15u, (v >> 4) & 15u);
                        o.y = grp_pack_codes((v >> 8) & 15u, (v >> 12) & 15u);
                        o.z = grp_pack_codes((v >> 16) & 15u, (v >> 20) & 15u);
                        o.w = grp_pack_codes((v >> 24) & 15u, v >> 28);
                        *(uint4 *)(wd + 16 * i + 4 * j) = o;
                    }
                }
            } else {
#pragma unroll
                for (int i = 0; i < WB; i++) {
                    const uint32_t ws4[4] = {wq[i].x, wq[i].y, wq[i].z, wq[i].w};
#pragma unroll
                    for (int j = 0; j < 4; j += 2) { /* 4 codes per word, low byte first */
                        uint4 o;
                        o.x = grp_pack_codes(ws4[j] & 255u, (ws4[j] >> 8) & 255u);
                        o.y = grp_pack_codes((ws4[j] >> 16) & 255u, ws4[j] >> 24);
                        o.z = grp_pack_codes(ws4[j + 1] & 255u, (ws4[j + 1] >> 8) & 255u);
                        o.w = grp_pack_codes((ws4[j + 1] >> 16) & 255u, ws4[j + 1] >> 24);
                        *(uint4 *)(wd + 8 * i + 2 * j) = o;
                    }
                }
            }
            if (AFF) {
                Ss[tid][0] = sv[0];
                Ss[tid][1] = sv[1];
                Bs[tid][0] = bv[0];
                Bs[tid][1] = bv[1];
            }
        }
        __syncthreads();
        if (k0 + GRP_KB < K) /* the next step's loads in flight during this one's products */
            load(k0 + GRP_KB);
#pragma unroll
        for (int ks = 0; ks < GRP_KB / 16; ks++) {
            uint32_t b[4][2];
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                const uint32_t *wrw = Ws[wp * 32 + nt * 8 + g] + ks * 8 + t4;
                b[nt][0] = wrw[0];
                b[nt][1] = wrw[4];
            }
#pragma unroll
            for (int p = NP - 1; p >= 0; p--) /* smallest part first */
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    const uint32_t *r0 = As[p][mt * 16 + g] + ks * 8 + t4, *r1 = As[p][mt * 16 + g + 8] + ks * 8 + t4;
                    const uint32_t a[4] = {r0[0], r1[0], r0[4], r1[4]};
#pragma unroll
                    for (int nt = 0; nt < 4; nt++)
                        mkc_mma_bf16(AFF ? tmp[mt][nt] : acc[mt][nt], a, b[nt][0], b[nt][1]);
                }
            if (AFF && ((ks + 1) * 16) % F == 0) { /* fold the window's scale and bias */
                const int f = ((ks + 1) * 16) / F - 1;
#pragma unroll
                for (int mt = 0; mt < 2; mt++)
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        const int row = mt * 16 + g + 8 * h;
                        const float xs = F == 64 ? (Xq[row][0] + Xq[row][1]) + (Xq[row][2] + Xq[row][3])
                                                 : Xq[row][2 * f] + Xq[row][2 * f + 1];
#pragma unroll
                        for (int nt = 0; nt < 4; nt++)
#pragma unroll
                            for (int j = 0; j < 2; j++) {
                                const int col = wp * 32 + nt * 8 + 2 * t4 + j;
                                float &d = tmp[mt][nt][2 * h + j];
                                acc[mt][nt][2 * h + j] += fmaf(Ss[col][f], d, Bs[col][f] * xs);
                                d = 0.0f;
                            }
                    }
            }
        }
        __syncthreads();
    }
    grp_store(m, tile, n0, wp, g, t4, acc);
}

#endif
