/* The grouped GEMM on int8 activations (MK_CUDA_GEMM_INT8; the plan, the
 * slot and the split kernel are cuda_grouped.cu's): the CPU's int8 prefill
 * GEMM rule (src/kernels/kern_gemm_q8.h) on the tensor cores, so a row
 * gets the CPU's bits.
 *
 *   k_q8x       quantizes rows of x in activation blocks of AB columns (64
 *               for 4-bit weights in groups of 64 or more, else 32:
 *               mk_gq8_ab) by q8.c's formula: d = amax / 127, q =
 *               nearbyint(x * (127 / amax)), 0 and d = 0 for a zero block,
 *               0 and d = NaN for a block with a NaN or infinity; and each
 *               group's xg = sum over its blocks, in order, of d * (sum of
 *               the block's q), one rounding per multiply and per add
 *               (mk_q8_group_sums).
 *   k_grp_mm_q8 block (column tile, row tile) as k_grp_mm's: the tile's
 *               rows of quantized x against its expert's codes (affine 4 or
 *               8-bit, unsigned) by mma.sync m16n8k32 (s8 x u8, int32: the
 *               block's dot is exact), then per output, as kern_ref:
 *                 each 512-column panel: acc = 0; per group: per block b
 *                   acc = fmaf((float)dot_b * d_b, s_g, acc);
 *                 then acc = fmaf(bias_g, xg_g, acc); y += acc (y from 0).
 *
 * A header of its own so that the host emulation (tests/emu/grouped_q8_emu.cpp)
 * runs these very kernels. The includer provides cuda_impl.cuh. */
#ifndef MK_CUDA_GROUPED_Q8_CUH
#define MK_CUDA_GROUPED_Q8_CUH

#define GRP_BM 32  /* rows (routed tokens) per tile */
#define GRP_BN 128 /* output columns per block: 4 warps x 32 */
#define GRP_KB 64  /* k values staged per step */
#define GRP_THREADS 128
#define GQ8_PANEL 512 /* columns of the CPU rule's panels (MK_GQ8_KC) */
#define GQ8_LDS 80    /* bytes of a staged row of 64 int8: fragment loads without bank conflicts */

/* One projection of the layer: expert e's weight rows are e*N .. e*N+N-1
 * of the stacked matrix. Output row r of the tile goes to C + (c_rows ?
 * c_rows[r] : r) * ldc. */
struct grp_mat {
    const uint8_t *data;
    const void *scales, *biases;
    int64_t row_bytes;
    int32_t N, ng; /* rows per expert; scale groups per row */
    float *C;
    int64_t ldc;
    const int32_t *c_rows;
};

/* Host: the projection view of w (N rows per expert) writing to C. */
static inline grp_mat grp_mat_of(const mk_wt *w, int64_t N, float *C, int64_t ldc, const int32_t *c_rows) {
    grp_mat m;
    m.data = (const uint8_t *)w->data;
    m.scales = w->scales;
    m.biases = w->biases;
    m.row_bytes = (int64_t)mk_wt_row_bytes(w);
    m.N = (int32_t)N;
    m.ng = w->fmt == MK_WF_AFFINE ? (int32_t)(w->cols / w->group) : 0;
    m.C = C;
    m.ldc = ldc;
    m.c_rows = c_rows;
    return m;
}

/* A tile's epilogue (k_grp_mm, k_grp_mm_q8): the thread's outputs v[mt][nt][e]
 * (m tile mt, n tile nt of its warp wp, mma fragment element e; lane = 4 g
 * + t4) to the tile's rows below tile.z and columns below N. */
__device__ __forceinline__ void grp_store(const grp_mat &m, const int4 &tile, int n0, int wp, int g, int t4,
                                          const float (&v)[2][4][4]) {
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int row = mt * 16 + g + 8 * h;
            if (row >= tile.z)
                continue;
            const int64_t r = tile.y + row, orow = m.c_rows ? (int64_t)m.c_rows[r] : r;
            float *out = m.C + orow * m.ldc;
#pragma unroll
            for (int nt = 0; nt < 4; nt++)
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    const int col = n0 + wp * 32 + nt * 8 + 2 * t4 + j;
                    if (col < m.N)
                        out[col] = v[mt][nt][2 * h + j];
                }
        }
}

template <int SD> __device__ __forceinline__ float grp_lds(const void *p, int64_t i) {
    if (SD == 0)
        return __ldg((const float *)p + i);
    const uint32_t h = __ldg((const unsigned short *)p + i);
    return SD == 1 ? __uint_as_float(h << 16) : mkc_f16f(h);
}

/* The tile of this block (blockIdx.y): the plan's (expert, first sorted
 * row, rows) when tiles are given, else rows BM y .. BM y + BM - 1 of a
 * plain matmul of nrows rows, expert 0. False: no tile (the block
 * returns). BM: the kernel's tile rows (GRP_BM; the wgmma kernel's 64). */
template <int BM = GRP_BM>
__device__ __forceinline__ bool gq8_tile(const int4 *tiles, const int32_t *ntiles, int nrows, int4 *tile) {
    if (tiles) {
        if ((int)blockIdx.y >= *ntiles)
            return false;
        *tile = tiles[blockIdx.y];
        return true;
    }
    const int r0 = (int)blockIdx.y * BM;
    if (r0 >= nrows)
        return false;
    *tile = make_int4(0, r0, nrows - r0 < BM ? nrows - r0 : BM, 0);
    return true;
}

/* The int8 kernels' folds of the thread's outputs (m tile mt, n tile nt,
 * fragment element 2 h + j: row mt 16 + g + 8 h, column wp 32 + nt 8 + 2 t4
 * + j of the tile), in the CPU rule's order, one place for both kernels so
 * that they give the same bits. An activation block ends: acc +=
 * (dot * d(row)) * s(col). A group ends: acc += b(col) * xg(row). The dots
 * ci are accumulated from MKC_DOT0 (the block's first mma adds its products
 * to it: mkc_mma_s8u8_from), each made a float by one exact FADD (mkc_dotf),
 * not an I2F (a quarter of the rate). (Setting ci to MKC_DOT0 before the
 * first mma instead took 36 more registers in k_grp_mm_q8p: a register a
 * constant; the mma's C operand takes one quad for all.) */
template <class D, class S>
__device__ __forceinline__ void gq8_fold_block(float (&acc)[2][4][4], const int (&ci)[2][4][4], int wp, int g,
                                               int t4, D d_of, S s_of) {
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const float d = d_of(mt * 16 + g + 8 * h);
#pragma unroll
            for (int nt = 0; nt < 4; nt++)
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    const int col = wp * 32 + nt * 8 + 2 * t4 + j;
                    const float p = mkc_mul_rn(mkc_dotf(ci[mt][nt][2 * h + j]), d);
                    acc[mt][nt][2 * h + j] = fmaf(p, s_of(col), acc[mt][nt][2 * h + j]);
                }
        }
}
template <class X, class B>
__device__ __forceinline__ void gq8_fold_bias(float (&acc)[2][4][4], int wp, int g, int t4, X xg_of, B b_of) {
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const float xg = xg_of(mt * 16 + g + 8 * h);
#pragma unroll
            for (int nt = 0; nt < 4; nt++)
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    const int col = wp * 32 + nt * 8 + 2 * t4 + j;
                    acc[mt][nt][2 * h + j] = fmaf(b_of(col), xg, acc[mt][nt][2 * h + j]);
                }
        }
}

/* Quantized rows: q [rows, K] int8 (natural column order), d [rows, K /
 * AB], xg [rows, K / group]. */
struct gq8_x {
    int8_t *q;
    float *d, *xg;
};

/* One warp per (row, group) of x [rows, K] (row stride ldx): the group's
 * blocks in order, lane l holding columns l and l + 32 of a block. */
template <int AB>
__global__ void __launch_bounds__(256)
    k_q8x(const float *__restrict__ x, int64_t ldx, int64_t rows, int K, int group, gq8_x o) {
    const int lane = threadIdx.x & 31;
    const int64_t w = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int ng = K / group, bpg = group / AB, nb = K / AB;
    const int64_t row = w / ng;
    const int g = (int)(w % ng);
    if (row >= rows)
        return;
    float s = 0.0f;
    for (int j = 0; j < bpg; j++) {
        const int b = g * bpg + j;
        const float *xb = x + row * ldx + (int64_t)b * AB;
        const float v0 = xb[lane], v1 = AB == 64 ? xb[lane + 32] : 0.0f;
        const float a0 = fabsf(v0), a1 = fabsf(v1);
        const bool ok0 = a0 <= 3.40282347e38f, ok1 = a1 <= 3.40282347e38f; /* not NaN or infinity */
        float amax = fmaxf(ok0 ? a0 : 0.0f, ok1 ? a1 : 0.0f);
        float nbad = ok0 && ok1 ? 0.0f : 1.0f;
#pragma unroll
        for (int m = 16; m > 0; m >>= 1) {
            amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, m));
            nbad = fmaxf(nbad, __shfl_xor_sync(0xffffffffu, nbad, m));
        }
        int q0 = 0, q1 = 0;
        float d;
        if (nbad > 0.0f || amax == 0.0f) {
            d = nbad > 0.0f ? __uint_as_float(0x7fc00000u) : 0.0f;
        } else {
            const float id = mkc_div_rn(127.0f, amax);
            q0 = (int)rintf(mkc_mul_rn(v0, id));
            q1 = AB == 64 ? (int)rintf(mkc_mul_rn(v1, id)) : 0;
            d = mkc_div_rn(amax, 127.0f);
        }
        int8_t *qb = o.q + row * K + (int64_t)b * AB;
        qb[lane] = (int8_t)q0;
        if (AB == 64)
            qb[lane + 32] = (int8_t)q1;
        const float qs = mkc_warp_sum((float)(q0 + q1)); /* |sum| <= 64 * 127: exact */
        if (lane == 0)
            o.d[row * nb + b] = d;
        s = mkc_add_rn(s, mkc_mul_rn(d, qs));
    }
    if (lane == 0)
        o.xg[row * ng + g] = s;
}

/* 8 codes of a word (4 bits, low nibble first) as 8 bytes, natural order */
__device__ __forceinline__ uint2 gq8_nibbles(uint32_t w) {
    const uint32_t e = w & 0x0F0F0F0Fu, o = (w >> 4) & 0x0F0F0F0Fu;
    return make_uint2(__byte_perm(e, o, 0x5140), __byte_perm(e, o, 0x7362));
}

/* BITS 4 or 8 (affine, scales and biases of dtype SD: 0 f32, 1 bf16, 2
 * f16), AB the activation block (mk_gq8_ab). K % 64 == 0, group % 32 ==
 * 0 and 512 % group == 0 (AB 64: group % 64 == 0), row_bytes % 16 == 0.
 * tiles NULL (a plain matmul): the nrows rows of A in order, tile i the
 * rows 32 i .. 32 i + 31, expert 0. */
template <int BITS, int SD, int AB>
__global__ void __launch_bounds__(GRP_THREADS)
    k_grp_mm_q8(gq8_x A, const int32_t *__restrict__ a_rows, grp_mat m0, grp_mat m1, int K, int group,
                const int4 *__restrict__ tiles, const int32_t *__restrict__ ntiles, int nrows) {
    __shared__ __align__(16) uint8_t As[GRP_BM][GQ8_LDS];
    __shared__ __align__(16) uint8_t Ws[GRP_BN][GQ8_LDS];
    __shared__ float Ss[GRP_BN][2], Bs[GRP_BN][2], Dx[GRP_BM][2], Xg[GRP_BM][2];
    /* each thread's 32 outputs summed over the panels: in shared memory (element e of thread t at
     * Ys[e][t], conflict-free), not in 32 more registers, so that 4 blocks fit an SM */
    __shared__ float Ys[32][GRP_THREADS];
    int4 tile;
    if (!gq8_tile(tiles, ntiles, nrows, &tile))
        return;
    const grp_mat m = blockIdx.z ? m1 : m0;
    const int n0 = blockIdx.x * GRP_BN;
    if (n0 >= m.N)
        return;
    const int tid = threadIdx.x, lane = tid & 31, wp = tid >> 5, g = lane >> 2, t4 = lane & 3;
    const int nb = K / AB, ng = K / group;
    constexpr int WB = BITS * GRP_KB / 8 / 16; /* 16-byte chunks of one weight row per step */

    /* row i of the tile in A (through a_rows), or -1 past its rows */
    auto a_row = [&](int i) -> int64_t {
        return i < tile.z ? (a_rows ? (int64_t)a_rows[tile.y + i] : (int64_t)tile.y + i) : -1;
    };
    /* this thread's staging: A row ar, quarter aq (16 bytes); weight row tid */
    const int ar = tid >> 2, aq = tid & 3;
    const int64_t xrow = a_row(ar);
    const int wr = n0 + tid;
    const int64_t grow = (int64_t)tile.x * m.N + wr;
    const uint8_t *wrow = wr < m.N ? m.data + grow * m.row_bytes : NULL;
    /* the d and xg of the step: thread tid < 64 token tid / 2, slot tid % 2 */
    const int sr = (tid & 63) >> 1, sj = tid & 1;
    const int64_t srow = a_row(sr);

    uint4 xa, wq[WB];
    float sv[2] = {0.0f, 0.0f}, bv[2] = {0.0f, 0.0f}, dv = 0.0f;
    auto load = [&](int k0) {
        xa = xrow >= 0 ? __ldg((const uint4 *)(A.q + xrow * K + k0) + aq) : make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
        for (int i = 0; i < WB; i++)
            wq[i] = wrow ? mkc_ldw(wrow + (int64_t)k0 * BITS / 8 + 16 * i) : make_uint4(0u, 0u, 0u, 0u);
        if (wrow)
            for (int f = 0; f < (group >= GRP_KB ? 1 : 2); f++) {
                const int64_t gi = grow * m.ng + (k0 + f * 32) / group;
                sv[f] = grp_lds<SD>(m.scales, gi);
                bv[f] = grp_lds<SD>(m.biases, gi);
            }
        /* threads 0-63: the tokens' activation-block scales (slot j: block
         * k0 / AB + j); 64-127: their sums of the step's groups (slot j:
         * group (k0 + 32 j) / group, a group of 32 each half) */
        dv = 0.0f;
        if (srow >= 0) {
            if (tid < 64) {
                if (sj < GRP_KB / AB)
                    dv = __ldg(A.d + srow * nb + k0 / AB + sj);
            } else if (sj < (group >= GRP_KB ? 1 : 2)) {
                dv = __ldg(A.xg + srow * ng + (k0 + sj * 32) / group);
            }
        }
    };

    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int q = 0; q < 4; q++) {
                acc[i][j][q] = 0.0f;
                Ys[i * 16 + j * 4 + q][tid] = 0.0f;
            }

    load(0);
    for (int k0 = 0; k0 < K; k0 += GRP_KB) {
        /* stage: the x bytes as they are; the codes as bytes in column order */
        *(uint4 *)&As[ar][aq * 16] = xa;
        if (BITS == 8) {
#pragma unroll
            for (int i = 0; i < WB; i++)
                *(uint4 *)&Ws[tid][16 * i] = wq[i];
        } else {
#pragma unroll
            for (int i = 0; i < WB; i++) { /* 16 bytes: 32 codes, columns 32 i .. 32 i + 31 */
                const uint32_t ws4[4] = {wq[i].x, wq[i].y, wq[i].z, wq[i].w};
#pragma unroll
                for (int j = 0; j < 4; j++)
                    *(uint2 *)&Ws[tid][32 * i + 8 * j] = gq8_nibbles(ws4[j]);
            }
        }
        Ss[tid][0] = sv[0];
        Ss[tid][1] = sv[1];
        Bs[tid][0] = bv[0];
        Bs[tid][1] = bv[1];
        if (tid < 64)
            Dx[sr][sj] = dv;
        else
            Xg[sr][sj] = dv;
        __syncthreads();
        if (k0 + GRP_KB < K) /* the next step's loads in flight during this one's products */
            load(k0 + GRP_KB);
        int ci[2][4][4];
#pragma unroll
        for (int ks = 0; ks < GRP_KB / 32; ks++) {
            const bool fresh = AB == 32 || ks == 0; /* an activation block starts: its dots from MKC_DOT0 */
            uint32_t b[4][2];
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                const uint8_t *wrw = Ws[wp * 32 + nt * 8 + g] + ks * 32 + t4 * 4;
                b[nt][0] = *(const uint32_t *)wrw;
                b[nt][1] = *(const uint32_t *)(wrw + 16);
            }
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                const uint8_t *r0 = As[mt * 16 + g] + ks * 32 + t4 * 4,
                              *r1 = As[mt * 16 + g + 8] + ks * 32 + t4 * 4;
                const uint32_t a[4] = {*(const uint32_t *)r0, *(const uint32_t *)r1,
                                       *(const uint32_t *)(r0 + 16), *(const uint32_t *)(r1 + 16)};
#pragma unroll
                for (int nt = 0; nt < 4; nt++) {
                    if (fresh)
                        mkc_mma_s8u8_from(ci[mt][nt], a, b[nt][0], b[nt][1], MKC_DOT0);
                    else
                        mkc_mma_s8u8(ci[mt][nt], a, b[nt][0], b[nt][1]);
                }
            }
            if (AB == 64 && ks == 0)
                continue; /* the block's second half */
            /* the block ends: fold its exact dots with the tokens' d and the rows' scale */
            const int jb = AB == 64 ? 0 : ks, f = group >= GRP_KB ? 0 : ks;
            gq8_fold_block(acc, ci, wp, g, t4, [&](int r) { return Dx[r][jb]; }, [&](int c) { return Ss[c][f]; });
            const int kend = k0 + ks * 32 + 32; /* columns done */
            if ((kend & (group - 1)) == 0)      /* the group ends: its bias times the tokens' group sums */
                gq8_fold_bias(acc, wp, g, t4, [&](int r) { return Xg[r][f]; }, [&](int c) { return Bs[c][f]; });
            if (kend % GQ8_PANEL == 0 || kend == K) { /* the panel ends: y += acc (y from +0, as the CPU's) */
                const bool last = kend == K;
#pragma unroll
                for (int i = 0; i < 2; i++)
#pragma unroll
                    for (int j = 0; j < 4; j++)
#pragma unroll
                        for (int q = 0; q < 4; q++) {
                            float &ys = Ys[i * 16 + j * 4 + q][tid];
                            ys = mkc_add_rn(ys, acc[i][j][q]);
                            acc[i][j][q] = last ? ys : 0.0f; /* the last panel leaves y in acc */
                        }
            }
        }
        __syncthreads();
    }
    grp_store(m, tile, n0, wp, g, t4, acc);
}


/* ---- the pipelined int8 kernel (k_grp_mm_q8p) ----------------------------
 * The same tiles, fragments and folds as k_grp_mm_q8 (so the same bits),
 * fed by cp.async through Q8P_STAGES shared-memory stages of Q8P_KB
 * columns instead of one register stage of 64: the tile's x bytes, code
 * bytes, raw scales and biases, the tokens' block scales and group sums of
 * STAGES - 1 steps are in flight while a step's products run, and the
 * per-output panel sums live in registers (4-bit, 3 stages: registers and
 * stages both allow 3 blocks an SM). Shapes it takes (q8p_takes): K % 128 == 0 and
 * each row's scales of a step a whole number of 4-byte words, 4-byte
 * aligned (MLX's g64 and g32 with bf16/f16 scales, any group with f32);
 * others keep k_grp_mm_q8. */
#define Q8P_KB 128 /* k values per stage */
#define Q8P_LX (Q8P_KB + 16) /* bytes of a staged x row: fragment loads without bank conflicts */
/* bytes of a staged code row: 4-bit 64 + 16, 8-bit 128 + 16 */
#define Q8P_LW(BITS) ((BITS) * Q8P_KB / 8 + 16)
/* stages: 3 (4-bit: 60 KiB a block, so 3 blocks an SM at 168 registers; 8-bit: 84 KiB, 2 blocks);
 * 4-bit weights also in 4 (mk_cuda_set_q8p_stages: 80 KiB, 2 blocks an SM, more copies in flight),
 * the default until session 25, measured 7% slower on the 30B cut's prefill (bench/RESULTS.md) */
#define Q8P_STAGES(BITS) 3
#define Q8P_NGS 4 /* scale groups of a step at most (group 32) */

/* One stage's layout in the dynamic shared memory (bytes) */
template <int BITS> struct q8p_stage {
    static constexpr int x = 0;                            /* [GRP_BM][Q8P_LX] int8 */
    static constexpr int w = x + GRP_BM * Q8P_LX;          /* [GRP_BN][Q8P_LW] codes */
    static constexpr int s = w + GRP_BN * Q8P_LW(BITS);    /* [GRP_BN][16] raw scales */
    static constexpr int b = s + GRP_BN * 16;              /* [GRP_BN][16] raw biases */
    static constexpr int d = b + GRP_BN * 16;              /* [GRP_BM][4] f32 block scales */
    static constexpr int xg = d + GRP_BM * 16;             /* [GRP_BM][4] f32 group sums */
    static constexpr int size = xg + GRP_BM * 16;
};
/* Host: the dynamic shared memory of k_grp_mm_q8p<BITS, .., stages> */
static inline size_t q8p_smem(int bits, int stages) {
    return (size_t)stages * (bits == 4 ? q8p_stage<4>::size : q8p_stage<8>::size);
}
/* Host: whether k_grp_mm_q8p takes K columns of w's rows in scale groups
 * of group (a power of two; scales in bytes of sb each, ng per row), the
 * pointers as given */
static inline bool q8p_takes(int64_t K, int group, int sb, int64_t ng, const void *scales, const void *biases) {
    const int ngs = group >= Q8P_KB ? 1 : Q8P_KB / group;
    return group > 0 && (group & (group - 1)) == 0 && /* the kernel shifts by it */
           K % Q8P_KB == 0 && ngs <= Q8P_NGS && (ngs * sb) % 4 == 0 && (ng * sb) % 4 == 0 &&
           ((uintptr_t)scales & 3) == 0 && ((uintptr_t)biases & 3) == 0;
}

/* The staged int8 kernels' copy of a stage's raw scales and biases (k_grp_mm_q8p, k_grp_mm_q8w):
 * weight rows n0 .. n0 + 127 of expert e, the scale words from column k0's group on (sw words a
 * row: sw = 2^swsh; ng groups a row, sb bytes each, gsh = log2 group), row r's at s_dst / b_dst + 16
 * r; rows past m.N zero-filled. By the block's 128 threads. */
__device__ __forceinline__ void gq8_stage_scales(uint8_t *s_dst, uint8_t *b_dst, const grp_mat &m, int e, int n0,
                                                 int k0, int gsh, int ng, int sb, int sw, int swsh) {
    for (int c = threadIdx.x; c < 128 * sw; c += 128) {
        const int r = c >> swsh, p = c & (sw - 1), wr = n0 + r;
        const bool ok = wr < m.N;
        const int64_t off = ((int64_t)e * m.N + (ok ? wr : 0)) * ng * sb + (int64_t)(k0 >> gsh) * sb + p * 4;
        mkc_cp_async<4>(s_dst + r * 16 + p * 4, (const uint8_t *)m.scales + off, ok);
        mkc_cp_async<4>(b_dst + r * 16 + p * 4, (const uint8_t *)m.biases + off, ok);
    }
}
static_assert(GRP_BN == 128 && GRP_THREADS == 128, "gq8_stage_scales: 128 rows by 128 threads");

/* 4 codes (2 bytes, low nibble first) as 4 bytes, natural order */
__device__ __forceinline__ uint32_t q8p_nib4(uint32_t h) {
    const uint32_t e = h & 0x0F0Fu, o = (h >> 4) & 0x0F0Fu;
    return __byte_perm(e, o, 0x5140);
}

template <int BITS, int SD, int AB, int S = Q8P_STAGES(BITS)>
__global__ void __launch_bounds__(GRP_THREADS)
    k_grp_mm_q8p(gq8_x A, const int32_t *__restrict__ a_rows, grp_mat m0, grp_mat m1, int K, int group,
                 const int4 *__restrict__ tiles, const int32_t *__restrict__ ntiles, int nrows) {
    typedef q8p_stage<BITS> L;
    constexpr int LW = Q8P_LW(BITS);
    constexpr int WB = BITS * Q8P_KB / 8 / 16; /* 16-byte chunks of a code row per stage */
    MKC_DYN_SMEM(float4, mkc_sm4);
    uint8_t *const sm = (uint8_t *)mkc_sm4;
    int4 tile;
    if (!gq8_tile(tiles, ntiles, nrows, &tile))
        return;
    const grp_mat m = blockIdx.z ? m1 : m0;
    const int n0 = blockIdx.x * GRP_BN;
    if (n0 >= m.N)
        return;
    const int tid = threadIdx.x, lane = tid & 31, wp = tid >> 5, g = lane >> 2, t4 = lane & 3;
    /* group is a power of two (32 .. 512: it divides the 512-column panel and 32 divides it), so
     * are ngs and sw: shifts, not the integer divisions (~20 instructions each) the copies and
     * folds would otherwise repeat every stage (ncu/SASS, session 25) */
    const int gsh = __ffs(group) - 1;
    const int nb = K / AB, ng = K >> gsh, nk = K / Q8P_KB;
    const int ngs = group >= Q8P_KB ? 1 : Q8P_KB >> gsh; /* scale groups per stage */
    const int sb = SD == 0 ? 4 : 2, sw = ngs * sb / 4;    /* scale bytes per row per stage, in words */
    const int swsh = __ffs(sw) - 1;                       /* sw is 1, 2 or 4 */
    auto a_row = [&](int i) -> int64_t {
        return i < tile.z ? (a_rows ? (int64_t)a_rows[tile.y + i] : (int64_t)tile.y + i) : -1;
    };
    /* this thread's copies, fixed over the stages: x chunks tid and tid + 128 (row c / 8, 16-byte part
     * c % 8); the tokens' scale slots tid (row tid / 4, slot tid % 4) */
    int64_t xr[2];
#pragma unroll
    for (int i = 0; i < 2; i++)
        xr[i] = a_row((tid + 128 * i) >> 3);
    const int64_t sr = a_row(tid >> 2);
    const int sj = tid & 3;

    /* issue stage it's copies into buffer it % S */
    auto issue = [&](int it) {
        uint8_t *st = sm + (it % S) * L::size;
        const int k0 = it * Q8P_KB;
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int c = tid + 128 * i, r = c >> 3, p = c & 7;
            mkc_cp_async<16>(st + L::x + r * Q8P_LX + p * 16, A.q + (xr[i] >= 0 ? xr[i] : 0) * K + k0 + p * 16,
                             xr[i] >= 0);
        }
#pragma unroll
        for (int i = 0; i < WB; i++) { /* chunk c: row c / WB, part c % WB (a row's chunks by neighbours) */
            const int c = tid + GRP_THREADS * i, r = c / WB, p = c % WB, wr = n0 + r;
            const bool ok = wr < m.N;
            const int64_t grow = (int64_t)tile.x * m.N + (ok ? wr : 0);
            mkc_cp_async<16>(st + L::w + r * LW + p * 16, m.data + grow * m.row_bytes + (int64_t)k0 * BITS / 8 + p * 16,
                             ok);
        }
        gq8_stage_scales(st + L::s, st + L::b, m, tile.x, n0, k0, gsh, ng, sb, sw, swsh);
        /* the tokens' block scales (slot j: block k0 / AB + j) and group sums (slot j: group k0 / group + j) */
        if (sj < Q8P_KB / AB)
            mkc_cp_async<4>(st + L::d + (tid >> 2) * 16 + sj * 4, A.d + (sr >= 0 ? sr : 0) * nb + k0 / AB + sj,
                            sr >= 0);
        if (sj < ngs)
            mkc_cp_async<4>(st + L::xg + (tid >> 2) * 16 + sj * 4,
                            A.xg + (sr >= 0 ? sr : 0) * ng + (k0 >> gsh) + sj, sr >= 0);
    };

    float acc[2][4][4], ys[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int q = 0; q < 4; q++)
                acc[i][j][q] = ys[i][j][q] = 0.0f;

#pragma unroll
    for (int i = 0; i < S - 1; i++) {
        if (i < nk)
            issue(i);
        mkc_cp_commit(); /* a group per stage, empty or not: the wait counts stay uniform */
    }
    int ci[2][4][4];
    for (int it = 0; it < nk; it++) {
        mkc_cp_wait<S - 2>(); /* this thread's copies of stage it are in */
        __syncthreads();      /* everyone's; and stage it - 1's buffer is no longer read */
        if (it + S - 1 < nk)
            issue(it + S - 1);
        mkc_cp_commit();
        const uint8_t *st = sm + (it % S) * L::size;
        const uint8_t *Xs = st + L::x, *Ws = st + L::w, *Ss = st + L::s, *Bs = st + L::b;
        const float *Dx = (const float *)(st + L::d), *Xg = (const float *)(st + L::xg);
        const int k0 = it * Q8P_KB;
#pragma unroll
        for (int ks = 0; ks < Q8P_KB / 32; ks++) {
            const bool fresh = AB == 32 || ks % 2 == 0; /* an activation block starts: its dots from MKC_DOT0 */
            uint32_t b[4][2];
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                const uint8_t *wrw = Ws + (wp * 32 + nt * 8 + g) * LW;
                if (BITS == 8) {
                    b[nt][0] = *(const uint32_t *)(wrw + ks * 32 + t4 * 4);
                    b[nt][1] = *(const uint32_t *)(wrw + ks * 32 + 16 + t4 * 4);
                } else { /* k = 4 t4 .. 4 t4 + 3 are the two bytes at 2 t4 of the step's 16 */
                    b[nt][0] = q8p_nib4(*(const unsigned short *)(wrw + ks * 16 + t4 * 2));
                    b[nt][1] = q8p_nib4(*(const unsigned short *)(wrw + ks * 16 + 8 + t4 * 2));
                }
            }
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                const uint8_t *r0 = Xs + (mt * 16 + g) * Q8P_LX + ks * 32 + t4 * 4, *r1 = r0 + 8 * Q8P_LX;
                const uint32_t a[4] = {*(const uint32_t *)r0, *(const uint32_t *)r1, *(const uint32_t *)(r0 + 16),
                                       *(const uint32_t *)(r1 + 16)};
#pragma unroll
                for (int nt = 0; nt < 4; nt++) {
                    if (fresh)
                        mkc_mma_s8u8_from(ci[mt][nt], a, b[nt][0], b[nt][1], MKC_DOT0);
                    else
                        mkc_mma_s8u8(ci[mt][nt], a, b[nt][0], b[nt][1]);
                }
            }
            if (AB == 64 && ks % 2 == 0)
                continue; /* the block's second half */
            /* the block ends: fold its exact dots with the tokens' d and the rows' scale */
            const int jb = ks * 32 / AB, f = group >= Q8P_KB ? 0 : (ks * 32) >> gsh;
            gq8_fold_block(acc, ci, wp, g, t4, [&](int r) { return Dx[r * 4 + jb]; },
                           [&](int c) { return mkc_sv<SD>(Ss + c * 16, f); });
            const int kend = k0 + ks * 32 + 32; /* columns done */
            if ((kend & (group - 1)) == 0)      /* the group ends: its bias times the tokens' group sums */
                gq8_fold_bias(acc, wp, g, t4, [&](int r) { return Xg[r * 4 + f]; },
                              [&](int c) { return mkc_sv<SD>(Bs + c * 16, f); });
            if (kend % GQ8_PANEL == 0 || kend == K) { /* the panel ends: y += acc (y from +0, as the CPU's) */
#pragma unroll
                for (int i = 0; i < 2; i++)
#pragma unroll
                    for (int j = 0; j < 4; j++)
#pragma unroll
                        for (int q = 0; q < 4; q++) {
                            ys[i][j][q] = mkc_add_rn(ys[i][j][q], acc[i][j][q]);
                            acc[i][j][q] = 0.0f;
                        }
            }
        }
    }
    mkc_cp_wait<0>(); /* no copy outlives the block (the trailing groups are empty) */
    grp_store(m, tile, n0, wp, g, t4, ys);
}

#endif
