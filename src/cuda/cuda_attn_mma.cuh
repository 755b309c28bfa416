/* The tiled prefill attention on the tensor cores (generation 3,
 * k_attn_tile3; cuda_attn_tile.cu launches it, tests/emu/attn_tile_emu.cpp
 * runs this very kernel on the host).
 *
 * Why. Generation 2 (cuda_attn_tile.cuh) computes its scores and value sums
 * with float32 multiply-adds at 42% of the FMA pipe: 449 us a 512-token
 * chunk of the Qwen3-30B-A3B shape, a third of a 2048-token prefill (int8
 * GEMM; bench/RESULTS.md, session 23). The tensor cores multiply bf16 at 16
 * times the FMA rate, but one bf16 rounding costs up to 2^-9 relative, far
 * outside the float32 bound the attention is held to (1e-5 relative L2
 * against double, test_backend_ops and the emulation).
 *
 * Arithmetic. As the split GEMM (cuda_gemm.cu): a float32 v is the sum of
 * three bf16 parts, v1 = bf16(v), v2 = bf16(v - v1), v3 = bf16(v - v1 -
 * v2) (each subtraction exact; normal range), and a product of two such
 * sums keeps the six terms of order 2^-16 and above, smallest first:
 *   a b ~ a1 b3 + a2 b2 + a3 b1 + a1 b2 + a2 b1 + a1 b1
 * (the dropped a2 b3, a3 b2, a3 b3 are below 2^-24 of a b). mma.sync
 * m16n8k16 forms each term exactly and sums in float32, so a score q . k
 * and a value sum p . v come out as float32 dot products in another order:
 * the same function as generations 1 and 2 and the CPU's.
 *
 * Work. A block of 4 warps takes ATT3_TQ = 64 queries of one head (a warp
 * 16 of them: the mma's rows) and walks the cache in tiles of ATT3_TK = 32
 * rows. The queries' three parts are split once into registers (the A
 * fragments, DKS = dk / 16 k-steps). The next tile's rows come into shared
 * memory by cp.async while a tile is multiplied (a first form loaded each
 * tile's rows after the previous tile's products: 314 us a 512-token chunk
 * of the 30B shape against generation 2's 447, ncu on an H100). Per tile
 * the block stages the keys' parts row-major and the values' parts transposed (value column-major), in
 * shared memory, with each 16-wide k-step's pairs permuted so that a lane's
 * two B-fragment words are adjacent (one 64-bit load): pair i of a step
 * (elements 2i, 2i+1) at word 2 (i & 3) + (i >> 2). Then each warp: S = Q
 * K^T for its 16 rows x 32 keys (4 n-tiles, 6 terms each per k-step), the
 * causal / window mask, the online softmax per row (a row's 8 scores of a
 * lane and its quad's: att_online), the weights P, already laid out as the
 * next product's A fragments (the mma's output layout is its input's), split
 * in three, and O += P V over the tile's two 16-key steps (NVT = dv / 8
 * n-tiles). A warp skips a tile none of its rows sees (past its last query,
 * before its window). Blocks run the last query tiles first (the causal
 * walk is longest there), so the long ones are not left for the end.
 *
 * Shape: dk = 16 DKS and dv = 8 NVT exactly (instances for 64 and 128),
 * else generation 2 runs; the rest (mask, window, sinks, strides, rows
 * past the chunk never read) as generations 1 and 2. The includer provides
 * cuda_impl.cuh (or the emulator) and cuda_attn_tile.cuh (att_online,
 * att_norm). */
#ifndef MK_CUDA_ATTN_MMA_CUH
#define MK_CUDA_ATTN_MMA_CUH

#include "cuda/cuda_mma.cuh"

#define ATT3_TQ 64 /* the queries of a block of 4 warps (generation 4: of W warps, 16 W) */
#define ATT3_TK 32
#define ATT3_TT 128 /* 4 warps x 16 queries */
#define ATT3_KP 16  /* bf16 pad of a staged key row (its word stride = 32 or 96 mod 128 bytes: no conflicts) */
#define ATT3_VW 24  /* words between the transposed value rows (32 keys + 16 of pad: 96 bytes) */

/* Host and device: words of one part's key rows, value rows; the dynamic
 * shared memory: three parts of each (64.5 KB at head dims of 128) ... */
__host__ __device__ __forceinline__ constexpr int att3_kwords(int dk) {
    return ATT3_TK * ((dk + ATT3_KP) / 2);
}
__host__ __device__ __forceinline__ constexpr int att3_vwords(int dv) {
    return dv * ATT3_VW;
}
/* ... and the next tile's rows as they are, float32, fetched by cp.async
 * while the current tile is multiplied (rows 4 floats longer than their
 * width: no bank conflicts where the value rows are read down a column):
 * 96 KB in all at 128, two blocks an SM */
__host__ __device__ __forceinline__ size_t att3_smem(int dk, int dv) {
    return 4 * (3 * ((size_t)att3_kwords(dk) + (size_t)att3_vwords(dv)) + (size_t)ATT3_TK * (dk + 4 + dv + 4));
}

/* Host and device: whether generation 3 takes head dims dk, dv (its
 * instances; cuda_attn_tile.cu leaves other shapes to generation 2) */
__host__ __device__ __forceinline__ bool att3_takes(int dk, int dv) {
    return dk == dv && (dk == 64 || dk == 128);
}

/* a = a1 + a2 + a3 and b likewise, each part pair packed (a low) */
__device__ __forceinline__ void att3_split(float a, float b, uint32_t *p) {
    p[0] = mkc_bf16x2(a, b);
    const float ra = a - __uint_as_float(p[0] << 16), rb = b - __uint_as_float(p[0] & 0xffff0000u);
    p[1] = mkc_bf16x2(ra, rb);
    p[2] = mkc_bf16x2(ra - __uint_as_float(p[1] << 16), rb - __uint_as_float(p[1] & 0xffff0000u));
}

/* d += the six terms of A B from A's parts a[3][4] and B's parts at p, p
 * + pl, p + 2 pl (two adjacent words each), smallest first */
__device__ __forceinline__ void att3_mma6(float *d, const uint32_t (*a)[4], const uint32_t *p, int pl) {
    uint32_t b[3][2];
#pragma unroll
    for (int i = 0; i < 3; i++) {
#ifdef MK_CUDA_EMU
        b[i][0] = p[i * pl];
        b[i][1] = p[i * pl + 1];
#else
        const uint2 w = *(const uint2 *)(p + i * pl);
        b[i][0] = w.x;
        b[i][1] = w.y;
#endif
    }
    mkc_mma_bf16(d, a[0], b[2][0], b[2][1]);
    mkc_mma_bf16(d, a[1], b[1][0], b[1][1]);
    mkc_mma_bf16(d, a[2], b[0][0], b[0][1]);
    mkc_mma_bf16(d, a[0], b[1][0], b[1][1]);
    mkc_mma_bf16(d, a[1], b[0][0], b[0][1]);
    mkc_mma_bf16(d, a[0], b[0][0], b[0][1]);
}

/* The word of pair i (elements 2i, 2i+1) of a 16-wide step */
__device__ __forceinline__ int att3_pw(int i) {
    return 2 * (i & 3) + (i >> 2);
}

/* The tile's rows k0 .. k0 + ATT3_TK - 1 of one head (D floats each, from
 * src + row * stride; zeros from row T on, which are not read) into R,
 * rows D + 4 floats apart, by cp.async (the caller commits the group) */
template <int D, int TT = ATT3_TT>
__device__ __forceinline__ void att3_fetch(float *R, const float *src, int64_t stride, int64_t k0, int64_t T) {
#pragma unroll 1
    for (int i = threadIdx.x; i < ATT3_TK * (D / 4); i += TT) {
        const int r = i / (D / 4), d = 4 * (i % (D / 4));
        const bool ok = k0 + r < T;
        mkc_cp_async<16>(R + r * (D + 4) + d, ok ? src + (k0 + r) * stride + d : src, ok);
    }
}

/* The tile's key rows (att3_fetch's R: zeros past the cache), three parts,
 * row-major with the steps' pairs permuted */
template <int DK, int TT = ATT3_TT>
__device__ __forceinline__ void att3_stage_k(uint32_t *Ks, const float *src) {
    constexpr int RW = (DK + ATT3_KP) / 2, PL = ATT3_TK * RW;
#pragma unroll 1
    for (int i = threadIdx.x; i < ATT3_TK * (DK / 4); i += TT) {
        const int r = i / (DK / 4), d = 4 * (i % (DK / 4));
        const float4 v = *(const float4 *)(src + r * (DK + 4) + d);
        uint32_t p0[3], p1[3];
        att3_split(v.x, v.y, p0);
        att3_split(v.z, v.w, p1);
        /* pairs (d & 15) / 2 and the next: words w and w + 2; the upper half-warp stores its two
         * the other way round, so that a store's 32 words fall in 32 banks (the halves' words w
         * are 32 apart at dk 128: ncu counted 2-way conflicts on half the shared stores) */
        uint32_t *o = Ks + r * RW + (d >> 4) * 8 + att3_pw((d & 15) >> 1);
        const bool up = threadIdx.x & 16;
#pragma unroll
        for (int p = 0; p < 3; p++) {
            o[p * PL + (up ? 2 : 0)] = up ? p1[p] : p0[p];
            o[p * PL + (up ? 0 : 2)] = up ? p0[p] : p1[p];
        }
    }
}

/* The tile's value rows (att3_fetch's R), three parts, transposed: column c's 32 keys in a
 * row of ATT3_VW words, each 16-key step's pairs permuted. A thread takes
 * a key pair and 4 columns (consecutive threads consecutive key pairs: the
 * words of a column row, no bank conflicts) */
template <int DV, int TT = ATT3_TT>
__device__ __forceinline__ void att3_stage_v(uint32_t *Vt, const float *src) {
    constexpr int PL = DV * ATT3_VW;
#pragma unroll 1
    for (int i = threadIdx.x; i < (ATT3_TK / 2) * (DV / 4); i += TT) {
        const int kp = i % (ATT3_TK / 2), c = 4 * (i / (ATT3_TK / 2)), r = 2 * kp;
        const float4 v0 = *(const float4 *)(src + r * (DV + 4) + c);
        const float4 v1 = *(const float4 *)(src + (r + 1) * (DV + 4) + c);
        const float a[4] = {v0.x, v0.y, v0.z, v0.w}, b[4] = {v1.x, v1.y, v1.z, v1.w};
        uint32_t *o = Vt + c * ATT3_VW + (kp >> 3) * 8 + att3_pw(kp & 7);
        /* the upper half-warp (columns c + 4) takes its columns in the order 2 3 0 1, so that a
         * store's two halves are 2 or 6 column rows apart (16 banks), not 4 (the same banks) */
        const int rot = threadIdx.x & 16 ? 2 : 0;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int jj = rot ? (j + 2) & 3 : j;
            uint32_t p[3];
            att3_split(rot ? a[(j + 2) & 3] : a[j], rot ? b[(j + 2) & 3] : b[j], p);
#pragma unroll
            for (int q = 0; q < 3; q++)
                o[q * PL + jj * ATT3_VW] = p[q];
        }
    }
}

/* ---- generation 5: the tiles' parts split once per chunk ---------------------
 * Generations 3 and 4 split every tile's rows into their three bf16 parts in
 * every block that reads the tile (all the query tiles of all the heads of
 * a kv head: 8 x 16 blocks for one tile of the 30B shape's 2048-token
 * chunk). k_att3_planes splits each tile once, into global memory in the
 * very layout a block stages (keys' parts row-major, values' transposed,
 * pairs permuted, pads left unwritten and never read): PW words a tile,
 * tiles t0 .. t0 + ntile - 1 of each kv head. k_attn_tile3<.., 8, true>
 * then copies a tile's parts with cp.async into one half of its shared
 * memory while it multiplies the other half: no split, one barrier a tile.
 * The same parts, the same products in the same order: bitwise generations
 * 3 and 4. */
__host__ __device__ __forceinline__ constexpr int att3_pwords(int dk, int dv) {
    return 3 * (att3_kwords(dk) + att3_vwords(dv));
}
/* k_attn_tile3<.., true>'s shared memory: two tiles of parts (126 KB at head dims of 128) */
__host__ __device__ __forceinline__ size_t att3_smem_pl(int dk, int dv) {
    return 2 * 4 * (size_t)att3_pwords(dk, dv);
}
/* Host and emulation: the tiles a chunk's blocks read, from the first
 * query's window start to the chunk's last row: *t0 and the count */
static inline int64_t att3_tiles(const mk_attn_args &a, int64_t *t0) {
    const int64_t first = a.window > 0 && a.pos0 - a.window + 1 > 0 ? a.pos0 - a.window + 1 : 0;
    *t0 = first / ATT3_TK;
    return (a.pos0 + a.n + ATT3_TK - 1) / ATT3_TK - *t0;
}
/* k_att3_planes' shared memory: one tile's raw rows */
__host__ __device__ __forceinline__ size_t att3_planes_smem(int dk, int dv) {
    return 4 * (size_t)ATT3_TK * (dk + 4 + dv + 4);
}

/* Block (tile t0 + blockIdx.x, kv head blockIdx.y), ATT3_TT threads: that
 * tile's rows (zeros past the cache, as att3_fetch) split into their parts
 * at planes + (kv head * ntile + blockIdx.x) * PW, ntile = gridDim.x */
template <int DK, int DV>
__global__ void __launch_bounds__(ATT3_TT) k_att3_planes(const mk_attn_args a, int64_t ks, int64_t vs, int64_t t0,
                                                          uint32_t *__restrict__ planes) {
    MKC_DYN_SMEM(float4, mkc_sm4);
    float *Rk = (float *)mkc_sm4, *Rv = Rk + ATT3_TK * (DK + 4);
    const int kvh = blockIdx.y;
    const int64_t k0 = (t0 + blockIdx.x) * ATT3_TK, T = a.pos0 + a.n;
    att3_fetch<DK>(Rk, a.k + (int64_t)kvh * DK, ks, k0, T);
    att3_fetch<DV>(Rv, a.v + (int64_t)kvh * DV, vs, k0, T);
    mkc_cp_commit();
    mkc_cp_wait<0>();
    __syncthreads();
    uint32_t *P = planes + ((size_t)kvh * gridDim.x + blockIdx.x) * (size_t)att3_pwords(DK, DV);
    att3_stage_k<DK>(P, Rk);
    att3_stage_v<DV>(P + 3 * att3_kwords(DK), Rv);
}

/* DKS: dk / 16; NVT: dv / 8; W: warps (4: generation 3, two blocks an SM;
 * 8: generation 4, one block an SM of 16 W = 128 queries); PL (W = 8:
 * generation 5): the tiles' parts from planes (k_att3_planes': tiles t0 ..
 * t0 + ntile - 1 of each kv head) instead of split here. Why W = 8: a
 * tile's split into three parts (att3_stage_k / _v, ~500 instructions a
 * thread of 4 warps) is a third of a block's instructions a tile, and it
 * serves the block's 16 W queries: twice the queries, half of it per
 * product, at the same warps an SM. A warp walks the same tiles in the
 * same order either way (those its rows see), so each row is bitwise. */
template <int DKS, int NVT, int W = 4, bool PL = false>
__global__ void __launch_bounds__(32 * W, W == 4 ? 2 : 1)
    k_attn_tile3(const mk_attn_args a, int64_t ks, int64_t vs, const uint32_t *__restrict__ planes = nullptr,
                 int64_t t0 = 0, int64_t ntile = 0) {
    constexpr int DK = 16 * DKS, DV = 8 * NVT, KW = (DK + ATT3_KP) / 2, TQ = 16 * W, TT = 32 * W;
    MKC_DYN_SMEM(float4, mkc_sm4);
    uint32_t *Ks0 = (uint32_t *)mkc_sm4, *Vt0 = Ks0 + 3 * att3_kwords(DK); /* generations 3 and 4 */
    const int kpl = att3_kwords(DK), vpl = att3_vwords(DV);
    const int tid = threadIdx.x, wp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int h = blockIdx.y, kvh = h / (a.n_heads / a.n_kv);
    /* the last query tiles first: their walks are the longest */
    const int64_t q0 = (int64_t)(gridDim.x - 1 - blockIdx.x) * TQ, T = a.pos0 + a.n;
    const int64_t nq = min((int64_t)TQ, a.n - q0); /* queries of this tile */
    /* this lane's rows of its warp's 16: g and g + 8 */
    const int r0 = wp * 16 + g;
    bool live[2];
#pragma unroll
    for (int i = 0; i < 2; i++)
        live[i] = r0 + 8 * i < nq;
    /* the mask in 32 bits (registers: this kernel is at the 255 a thread its two blocks an SM allow): a
     * key's offset from row g's position, rel = p - (pos0 + q0 + r0); row g + 8 hr sees it when rel - 8 hr
     * <= 0 and, with a window, rel - 8 hr > -window (offsets within a tile's reach, clamped) */
    const int64_t qb = a.pos0 + q0 + r0;
    const int wmin = a.window > 0 ? (int)(1 - min(a.window, (int64_t)0x3fffffff)) : -0x40000000;
    /* the queries' A fragments, three parts: qa[step][part][reg] */
    uint32_t qa[DKS][3][4];
#pragma unroll
    for (int s = 0; s < DKS; s++)
#pragma unroll
        for (int e = 0; e < 4; e++) { /* reg e: row g + 8 (e & 1), columns 2 t4 + 8 (e >> 1) */
            const int hr = e & 1;
            float x0 = 0.0f, x1 = 0.0f;
            if (live[hr]) {
                const float *qr = a.q + ((q0 + r0 + 8 * hr) * a.n_heads + h) * (int64_t)DK + 16 * s + 2 * t4 +
                                  8 * (e >> 1);
                x0 = qr[0];
                x1 = qr[1];
            }
            uint32_t p[3];
            att3_split(x0, x1, p);
#pragma unroll
            for (int q = 0; q < 3; q++)
                qa[s][q][e] = p[q];
        }
    float o[NVT][4];
#pragma unroll
    for (int n = 0; n < NVT; n++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            o[n][e] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    /* rows the block's queries see, and this warp's: from the first query's window start to the last query */
    const int64_t first = a.window > 0 ? max((int64_t)0, a.pos0 + q0 - a.window + 1) : 0;
    const int64_t last = a.pos0 + q0 + nq - 1;
    const bool wlive = wp * 16 < nq;
    const int64_t wfirst = a.window > 0 ? a.pos0 + q0 + wp * 16 - a.window + 1 : 0;
    const int64_t wlast = a.pos0 + q0 + min((int64_t)wp * 16 + 15, nq - 1);
    /* the tile's products (its parts staged at Ks and Vt) for this warp's rows: S = Q K^T, the mask,
     * the online softmax, O += P V */
    auto tile = [&](int64_t k0, const uint32_t *Ks, const uint32_t *Vt) {
        /* warp-uniform: none of the warp's rows sees this tile */
        if (!wlive || k0 > wlast || k0 + ATT3_TK - 1 < wfirst)
            return;
        /* S = Q K^T: n-tile n holds keys 8n .. 8n + 7 of the tile */
        float s[ATT3_TK / 8][4];
#pragma unroll
        for (int n = 0; n < ATT3_TK / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                s[n][e] = 0.0f;
#pragma unroll
        for (int st = 0; st < DKS; st++)
#pragma unroll
            for (int n = 0; n < ATT3_TK / 8; n++)
                att3_mma6(s[n], qa[st], Ks + (n * 8 + g) * KW + st * 8 + 2 * t4, kpl);
        /* the rows' scores (row g: elements 0, 1 of each n-tile; row g + 8: 2, 3), masked */
        const int dk0 = (int)max(min(k0 - qb, (int64_t)0x3fffffff), (int64_t)-0x3fffffff);
        float sr[2][ATT3_TK / 4];
#pragma unroll
        for (int n = 0; n < ATT3_TK / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int hr = e >> 1;
                const int rel = dk0 + 8 * n + 2 * t4 + (e & 1) - 8 * hr;
                sr[hr][2 * n + (e & 1)] = live[hr] && rel <= 0 && rel >= wmin ? s[n][e] * a.scale : -INFINITY;
            }
        const float c0 = att_online<ATT3_TK / 4, 4>(sr[0], m[0], l[0]); /* a row's quad */
        const float c1 = att_online<ATT3_TK / 4, 4>(sr[1], m[1], l[1]);
#pragma unroll
        for (int n = 0; n < NVT; n++) {
            o[n][0] *= c0;
            o[n][1] *= c0;
            o[n][2] *= c1;
            o[n][3] *= c1;
        }
        /* O += P V, 16 keys a step: P's A fragment from n-tiles 2j (keys 2 t4, +1) and 2j + 1 (+8) */
#pragma unroll
        for (int j = 0; j < ATT3_TK / 16; j++) {
            uint32_t pa[3][4], pp[3];
#pragma unroll
            for (int e = 0; e < 4; e++) { /* reg e: row g + 8 (e & 1), keys 16 j + 8 (e >> 1) + 2 t4 */
                att3_split(sr[e & 1][4 * j + 2 * (e >> 1)], sr[e & 1][4 * j + 2 * (e >> 1) + 1], pp);
#pragma unroll
                for (int q = 0; q < 3; q++)
                    pa[q][e] = pp[q];
            }
#pragma unroll
            for (int n = 0; n < NVT; n++)
                att3_mma6(o[n], pa, Vt + (n * 8 + g) * ATT3_VW + j * 8 + 2 * t4, vpl);
        }
    };
    int64_t k0 = first - first % ATT3_TK;
    if constexpr (PL) {
        /* generation 5: the tiles' parts were split once for the chunk (k_att3_planes, in this very
         * layout), so a tile is one copy: the next tile's parts come by cp.async into the other half
         * while this one is multiplied, one barrier a tile */
        constexpr int PW = 3 * (att3_kwords(DK) + att3_vwords(DV));
        uint32_t *buf = (uint32_t *)mkc_sm4;
        const uint32_t *ph = planes + (size_t)kvh * (size_t)ntile * PW;
        auto fetch = [&](int64_t kk, uint32_t *dst) {
            const uint32_t *src = ph + (size_t)(kk / ATT3_TK - t0) * PW;
#pragma unroll 1
            for (int i = tid; i < PW / 4; i += TT)
                mkc_cp_async<16>(dst + 4 * i, src + 4 * i, true);
            mkc_cp_commit();
        };
        if (k0 <= last)
            fetch(k0, buf);
        for (int it = 0; k0 <= last; k0 += ATT3_TK, it++) {
            mkc_cp_wait<0>();
            __syncthreads(); /* the tile's parts are in; the other half is no longer read */
            const uint32_t *cur = buf + (it & 1) * PW;
            if (k0 + ATT3_TK <= last)
                fetch(k0 + ATT3_TK, buf + ((it + 1) & 1) * PW);
            tile(k0, cur, cur + 3 * att3_kwords(DK));
        }
    } else {
        /* the raw rows of the next tile (cp.async) while this one is multiplied */
        float *Rk = (float *)(Vt0 + 3 * vpl), *Rv = Rk + ATT3_TK * (DK + 4);
        const float *kh = a.k + (int64_t)kvh * DK, *vh = a.v + (int64_t)kvh * DV;
        if (k0 <= last) {
            att3_fetch<DK, TT>(Rk, kh, ks, k0, T);
            att3_fetch<DV, TT>(Rv, vh, vs, k0, T);
            mkc_cp_commit();
        }
        for (; k0 <= last; k0 += ATT3_TK) {
            mkc_cp_wait<0>();
            __syncthreads(); /* the tile's rows are in; the previous tile's parts are no longer read */
            att3_stage_k<DK, TT>(Ks0, Rk);
            att3_stage_v<DV, TT>(Vt0, Rv);
            __syncthreads(); /* the parts are staged; the raw rows are free for the next tile */
            if (k0 + ATT3_TK <= last) {
                att3_fetch<DK, TT>(Rk, kh, ks, k0 + ATT3_TK, T);
                att3_fetch<DV, TT>(Rv, vh, vs, k0 + ATT3_TK, T);
                mkc_cp_commit();
            }
            tile(k0, Ks0, Vt0);
        }
    }
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
        if (!live[hr])
            continue;
        const float inv = att_norm(m[hr], l[hr], a.sinks, h);
        float *out = a.out + ((q0 + r0 + 8 * hr) * a.n_heads + h) * (int64_t)DV + 2 * t4;
#pragma unroll
        for (int n = 0; n < NVT; n++) {
            out[8 * n] = o[n][2 * hr] * inv;
            out[8 * n + 1] = o[n][2 * hr + 1] * inv;
        }
    }
}

#endif
