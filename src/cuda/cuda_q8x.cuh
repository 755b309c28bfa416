/* Decode products on int8 activations (mk_cuda_set_act_int8): the CPU's
 * decode rule (src/kernels/kern_impl.h "int8 activations", q8.c) on the
 * device, for one token over MLX affine 4/8-bit weights.
 *
 * Why: a 4-bit row in float32 costs a PRMT and an FFMA per weight (with
 * the unpacking, about 2.6 instructions a weight), and at batch 1 the
 * GEMV is as much an issue problem as a memory one: the 4-bit GEMV alone
 * reached 54% of the copy rate where the 8-bit one, with half the weights
 * per byte, reached 71% (bench/RESULTS.md, session 19). With x in int8
 * the codes multiply four at a time (dp4a: 8 codes of a 4-bit word in two
 * instructions and a mask each), and the scales apply once per block of
 * 32 values.
 *
 * The rule, as the CPU's: x in blocks of 32 (MKC_Q8B); amax = max |x|
 * over the block, d = amax / 127, q = nearbyint(x * (127 / amax)), one
 * IEEE rounding each (mkc_div_rn, mkc_mul_rn, rintf: ties to even); a zero
 * block gives d = 0 and q = 0, a block with a NaN or infinity d = NaN and
 * q = 0. So q and d are the CPU's bits, the integer dots are exact, and a
 * row is
 *   y = sum_b s_g(b) d_b (q_w . q_x)_b + b_g(b) d_b (sum of the block's q_x)
 * the CPU's y in another float order (the CPU folds a group's blocks
 * first; here each lane folds its own blocks): the two differ by float
 * rounding only, and both by at most sum_b d_b / 2 sum_c |W_rc| from W x.
 *
 * Shared memory (mkc_q8s, mkc_q8s_bytes): q [cols] int8, d [nb], xd [nb]
 * (xd_b = d_b times the sum of block b's q). q is laid out for the
 * weights' words so that a lane's x loads are 16 bytes, consecutive across
 * the warp (no bank conflicts):
 *   4-bit: a lane's 16-byte chunk is one block (32 codes, 8 a word, low
 *     nibble first). Word j's codes masked (w & 0x0F0F0F0F) are values
 *     8j, 8j+2, 8j+4, 8j+6 and shifted ((w >> 4) & ...) 8j+1, 8j+3, ...,
 *     so each 8 values are stored as [0 2 4 6 1 3 5 7]; block b's first
 *     16 values at byte 16 b, its last 16 at 16 (nb + b).
 *   8-bit: a chunk is half a block (16 codes, 4 a word, in order): q in
 *     natural order, chunk c's values at byte 16 c.
 * The includer provides cuda_impl.cuh. */
#ifndef MK_CUDA_Q8X_CUH
#define MK_CUDA_Q8X_CUH

#define MKC_Q8B 32 /* values per activation block (MK_Q8_BLOCK) */

struct mkc_q8s {
    int8_t *q;
    float *d, *xd;
    int64_t nb; /* blocks: cols / 32 */
};

/* Host and device: bytes of mkc_q8s for cols values (cols % 32 == 0) */
__host__ __device__ __forceinline__ int64_t mkc_q8s_bytes(int64_t cols) {
    return cols + 2 * (cols / MKC_Q8B) * 4;
}

/* The same rounded up to 16 bytes: where a second layout may follow */
__host__ __device__ __forceinline__ int64_t mkc_q8s_span(int64_t cols) {
    return (mkc_q8s_bytes(cols) + 15) & ~(int64_t)15;
}

/* The layout in the mkc_q8s_bytes(cols) bytes from p (16-byte aligned) */
__device__ __forceinline__ mkc_q8s mkc_q8s_at(void *p, int64_t cols) {
    mkc_q8s s;
    s.nb = cols / MKC_Q8B;
    s.q = (int8_t *)p;
    s.d = (float *)((uint8_t *)p + cols);
    s.xd = s.d + s.nb;
    return s;
}

/* Byte offset of value e (0..31) of block b in the BITS layout above */
template <int BITS> __device__ __forceinline__ int64_t mkc_q8_pos(int64_t b, int e, int64_t nb) {
    if (BITS == 8)
        return b * MKC_Q8B + e;
    const int h = e >> 4, k = e & 7;
    return (h * nb + b) * 16 + (e & 8) + (k & 1) * 4 + (k >> 1);
}

/* Quantize the s.nb * 32 values of x (global or shared, 16-byte aligned;
 * values from n1 on from x2 instead, at x2[i - n1]: two vectors quantized
 * as one, n1 a multiple of 32 so no block straddles them) into s, with the
 * whole block (blockDim a multiple of 32); the caller synchronises before
 * reading s. A thread takes 8 values, four consecutive lanes a block of
 * 32: its max |x| by the bits of |x| (non-negative floats order as their
 * bits, and a NaN's or an infinity's bits are above every finite value's,
 * so one integer max finds the block's amax and whether it is finite) and
 * two shuffles, its q sum by two more. The first version gave a warp a
 * whole block per step (a lane a value: ten shuffles and two divisions
 * per 32 values), 8x the instructions, which every block of a GEMV spends
 * before its first product. */
template <int BITS>
__device__ __forceinline__ void mkc_q8_stage2(const float *x, int64_t n1, const float *x2, const mkc_q8s &s) {
    const int64_t nt = s.nb * 4, nt32 = (nt + 31) & ~(int64_t)31; /* whole warps at every shuffle */
    for (int64_t i = threadIdx.x; i < nt32; i += blockDim.x) {
        const bool live = i < nt;
        float v[8];
        if (live) {
            const float4 *p = (const float4 *)(8 * i < n1 ? x + 8 * i : x2 + (8 * i - n1));
            const float4 a = p[0], b = p[1];
            v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
        } else {
#pragma unroll
            for (int k = 0; k < 8; k++)
                v[k] = 0.0f;
        }
        uint32_t m = 0;
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const uint32_t u = __float_as_uint(v[k]) & 0x7fffffffu;
            m = u > m ? u : m;
        }
#pragma unroll
        for (int o = 1; o < 4; o <<= 1) {
            const uint32_t u = __shfl_xor_sync(0xffffffffu, m, o);
            m = u > m ? u : m;
        }
        int q[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        float d;
        const float amax = __uint_as_float(m);
        if (m > 0x7f7fffffu || m == 0) { /* a NaN or infinity (d NaN), or all zero (d 0): q 0 */
            d = m ? __uint_as_float(0x7fc00000u) : 0.0f;
        } else {
            const float id = mkc_div_rn(127.0f, amax);
#pragma unroll
            for (int k = 0; k < 8; k++)
                q[k] = (int)rintf(mkc_mul_rn(v[k], id));
            d = mkc_div_rn(amax, 127.0f);
        }
        int qs = ((q[0] + q[1]) + (q[2] + q[3])) + ((q[4] + q[5]) + (q[6] + q[7]));
        qs += __shfl_xor_sync(0xffffffffu, qs, 1);
        qs += __shfl_xor_sync(0xffffffffu, qs, 2); /* the block's: |sum| <= 32 * 127 */
        if (!live)
            continue;
        const int64_t b = i >> 2;
        const int e0 = (int)(i & 3) * 8; /* the thread's first value in its block */
        auto byte = [&](int k) { return (uint32_t)(uint8_t)(int8_t)q[k]; };
        uint2 w;
        if (BITS == 4) { /* [0 2 4 6 | 1 3 5 7]: the masked and the shifted nibbles of a word */
            w.x = byte(0) | byte(2) << 8 | byte(4) << 16 | byte(6) << 24;
            w.y = byte(1) | byte(3) << 8 | byte(5) << 16 | byte(7) << 24;
            *(uint2 *)(s.q + mkc_q8_pos<4>(b, e0, s.nb)) = w;
        } else {
            w.x = byte(0) | byte(1) << 8 | byte(2) << 16 | byte(3) << 24;
            w.y = byte(4) | byte(5) << 8 | byte(6) << 16 | byte(7) << 24;
            *(uint2 *)(s.q + mkc_q8_pos<8>(b, e0, s.nb)) = w;
        }
        if (e0 == 0) {
            s.d[b] = d;
            s.xd[b] = mkc_mul_rn(d, (float)qs);
        }
    }
}

/* mkc_q8_stage2 of one vector of cols values */
template <int BITS> __device__ __forceinline__ void mkc_q8_stage(const float *x, int64_t cols, const mkc_q8s &s) {
    mkc_q8_stage2<BITS>(x, cols, x, s);
}

/* c + the dot of a's 4 unsigned bytes with b's 4 signed bytes (exact) */
__device__ __forceinline__ int mkc_dp4a_us(uint32_t a, uint32_t b, int c) {
#ifdef MK_CUDA_EMU
    for (int i = 0; i < 4; i++)
        c += (int)((a >> (8 * i)) & 255u) * (int)(int8_t)(uint8_t)(b >> (8 * i));
    return c;
#else
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
#endif
}

/* The integer dot of a lane's 16-byte chunk of codes with its x values
 * (the BITS layout: x0 the chunk's first 16 bytes, x1 its second, 4-bit
 * only), accumulated from MKC_DOT0: mkc_dotf of it is the dot as a float */
template <int BITS> __device__ __forceinline__ int mkc_q8_chunk(const uint4 &w, const int4 &x0, const int4 &x1) {
    int s = MKC_DOT0;
    if constexpr (BITS == 4) {
        const uint32_t m = 0x0F0F0F0Fu;
        s = mkc_dp4a_us(w.x & m, (uint32_t)x0.x, s);
        s = mkc_dp4a_us((w.x >> 4) & m, (uint32_t)x0.y, s);
        s = mkc_dp4a_us(w.y & m, (uint32_t)x0.z, s);
        s = mkc_dp4a_us((w.y >> 4) & m, (uint32_t)x0.w, s);
        s = mkc_dp4a_us(w.z & m, (uint32_t)x1.x, s);
        s = mkc_dp4a_us((w.z >> 4) & m, (uint32_t)x1.y, s);
        s = mkc_dp4a_us(w.w & m, (uint32_t)x1.z, s);
        s = mkc_dp4a_us((w.w >> 4) & m, (uint32_t)x1.w, s);
    } else {
        s = mkc_dp4a_us(w.x, (uint32_t)x0.x, s);
        s = mkc_dp4a_us(w.y, (uint32_t)x0.y, s);
        s = mkc_dp4a_us(w.z, (uint32_t)x0.z, s);
        s = mkc_dp4a_us(w.w, (uint32_t)x0.w, s);
    }
    return s;
}

/* A lane's first 16-byte chunk of NR affine rows in flight (mkc_q8_prime),
 * for mkc_q8_finish to sum: loaded before the lane has x, so that a kernel
 * whose rows are known early (fixed weights before its PDL wait; routed
 * experts once the routing is read) overlaps their latency with what comes
 * first. One chunk, not two: two held k_gemv_q8 at 135 registers across
 * the staging of x (one block an SM) or spilled at 128. */
template <int NR> struct mkc_q8_pre {
    uint4 qq[NR];
    float sc[NR], bi[NR];
};

/* chunk c of the NR rows into (qv, sv, bv) */
template <int BITS, int SD, int NR>
__device__ __forceinline__ void mkc_q8_load(const uint8_t *const *q, const void *const *s, const void *const *b,
                                            int64_t c, int gshift, uint4 *qv, float *sv, float *bv) {
    constexpr int VPC = 128 / BITS; /* values per chunk */
    const int64_t g = (c * VPC) >> gshift;
#pragma unroll
    for (int r = 0; r < NR; r++) {
        qv[r] = mkc_ldw((const uint4 *)q[r] + c);
        sv[r] = mkc_lds<SD>(s[r], g);
        bv[r] = mkc_lds<SD>(b[r], g);
    }
}

template <int BITS, int SD, int NR>
__device__ __forceinline__ void mkc_q8_prime(const uint8_t *const *q, const void *const *s, const void *const *b,
                                             int64_t nchunk, int gshift, int lane, mkc_q8_pre<NR> &p) {
    if (lane < nchunk)
        mkc_q8_load<BITS, SD, NR>(q, s, b, lane, gshift, p.qq, p.sc, p.bi);
}

/* Chunk c's terms of NR rows (codes qq, the chunk's group scale sc and
 * bias bi, one each a row) against the staged x, added to acc: acc +=
 * (s_g d_b) dot + b_g xd_b, the bias term once a block (8-bit: on the
 * block's first chunk). mkc_q8_finish's and k_gateup_q8s's (rows read from
 * registers or from shared memory: the same terms in the same order). */
template <int BITS, int NR>
__device__ __forceinline__ void mkc_q8_terms(const uint4 *qq, const float *sc, const float *bi, const mkc_q8s &x,
                                             int64_t c, float *acc) {
    const int4 *xq = (const int4 *)x.q;
    const int64_t blk = BITS == 4 ? c : c >> 1;
    const int4 x0 = xq[c], x1 = BITS == 4 ? xq[x.nb + c] : x0;
    const float db = x.d[blk], xdb = BITS == 4 || !(c & 1) ? x.xd[blk] : 0.0f;
#pragma unroll
    for (int r = 0; r < NR; r++) {
        const int dot = mkc_q8_chunk<BITS>(qq[r], x0, x1);
        acc[r] = fmaf(sc[r] * db, mkc_dotf(dot), acc[r]);
        acc[r] = fmaf(bi[r], xdb, acc[r]);
    }
}

/* Lane partial sums of NR affine rows (row r: codes q[r], scales s[r],
 * biases b[r], the row's group arrays) against the staged x, a lane's
 * 16-byte chunks c = lane, lane + 32, ... from mkc_q8_prime's first; the
 * next chunk's codes, scales and biases loaded before the current one is
 * summed (as mkc_dot_aff_p), each chunk's terms by mkc_q8_terms. */
template <int BITS, int SD, int NR>
__device__ __forceinline__ void mkc_q8_finish(const uint8_t *const *q, const void *const *s, const void *const *b,
                                              const mkc_q8s &x, int64_t nchunk, int gshift, int lane,
                                              mkc_q8_pre<NR> &p, float *acc) {
#pragma unroll
    for (int r = 0; r < NR; r++)
        acc[r] = 0.0f;
    int64_t c = lane;
    if (c >= nchunk)
        return;
    for (;;) {
        const int64_t cn = c + 32;
        const bool more = cn < nchunk;
        uint4 qn[NR];
        float sn[NR], bn[NR];
        if (more)
            mkc_q8_load<BITS, SD, NR>(q, s, b, cn, gshift, qn, sn, bn);
        mkc_q8_terms<BITS, NR>(p.qq, p.sc, p.bi, x, c, acc);
        if (!more)
            break;
        c = cn;
#pragma unroll
        for (int r = 0; r < NR; r++) {
            p.qq[r] = qn[r];
            p.sc[r] = sn[r];
            p.bi[r] = bn[r];
        }
    }
}

/* The row pointers of mkc_q8_prime / mkc_q8_finish for row rows[r] of *ws[r] */
template <int NR>
__device__ __forceinline__ void mkc_q8_ptrs(const mkc_w *const *ws, const int64_t *rows, const uint8_t **q,
                                            const void **s, const void **b) {
    const int64_t sz = mkc_aff_sb(ws[0]->kind);
#pragma unroll
    for (int r = 0; r < NR; r++) {
        q[r] = ws[r]->data + rows[r] * ws[r]->row_bytes;
        s[r] = (const uint8_t *)ws[r]->scales + rows[r] * ws[r]->ng * sz;
        b[r] = (const uint8_t *)ws[r]->biases + rows[r] * ws[r]->ng * sz;
    }
}

/* The rows of mkc_q8_dot_rows_w primed now (mkc_q8_prime_rows) and summed
 * later against x (mkc_q8_sum_rows): their pointers, width and kind (one
 * for all, warp-uniform, chosen at run time) */
template <int NR> struct mkc_q8_rowset {
    const uint8_t *q[NR];
    const void *s[NR], *b[NR];
    int64_t nchunk;
    int gshift, kind;
};
template <int NR>
__device__ __forceinline__ void mkc_q8_prime_rows(const mkc_w *const *ws, const int64_t *rows, int lane,
                                                  mkc_q8_rowset<NR> &rs, mkc_q8_pre<NR> &p) {
    mkc_q8_ptrs<NR>(ws, rows, rs.q, rs.s, rs.b);
    rs.nchunk = ws[0]->row_bytes / 16;
    rs.gshift = ws[0]->gshift;
    rs.kind = ws[0]->kind;
    switch (rs.kind) {
    case MKC_A4_F32: mkc_q8_prime<4, 0, NR>(rs.q, rs.s, rs.b, rs.nchunk, rs.gshift, lane, p); break;
    case MKC_A4_BF16: mkc_q8_prime<4, 1, NR>(rs.q, rs.s, rs.b, rs.nchunk, rs.gshift, lane, p); break;
    case MKC_A4_F16: mkc_q8_prime<4, 2, NR>(rs.q, rs.s, rs.b, rs.nchunk, rs.gshift, lane, p); break;
    case MKC_A8_F32: mkc_q8_prime<8, 0, NR>(rs.q, rs.s, rs.b, rs.nchunk, rs.gshift, lane, p); break;
    case MKC_A8_BF16: mkc_q8_prime<8, 1, NR>(rs.q, rs.s, rs.b, rs.nchunk, rs.gshift, lane, p); break;
    default: mkc_q8_prime<8, 2, NR>(rs.q, rs.s, rs.b, rs.nchunk, rs.gshift, lane, p); break;
    }
}
template <int NR>
__device__ __forceinline__ void mkc_q8_sum_rows(const mkc_q8_rowset<NR> &rs, const mkc_q8s &x, int lane,
                                                mkc_q8_pre<NR> &p, float *acc) {
    switch (rs.kind) {
    case MKC_A4_F32: mkc_q8_finish<4, 0, NR>(rs.q, rs.s, rs.b, x, rs.nchunk, rs.gshift, lane, p, acc); break;
    case MKC_A4_BF16: mkc_q8_finish<4, 1, NR>(rs.q, rs.s, rs.b, x, rs.nchunk, rs.gshift, lane, p, acc); break;
    case MKC_A4_F16: mkc_q8_finish<4, 2, NR>(rs.q, rs.s, rs.b, x, rs.nchunk, rs.gshift, lane, p, acc); break;
    case MKC_A8_F32: mkc_q8_finish<8, 0, NR>(rs.q, rs.s, rs.b, x, rs.nchunk, rs.gshift, lane, p, acc); break;
    case MKC_A8_BF16: mkc_q8_finish<8, 1, NR>(rs.q, rs.s, rs.b, x, rs.nchunk, rs.gshift, lane, p, acc); break;
    default: mkc_q8_finish<8, 2, NR>(rs.q, rs.s, rs.b, x, rs.nchunk, rs.gshift, lane, p, acc); break;
    }
}

/* The sums of row rows[r] of *ws[r] (affine, all of one kind and width,
 * chosen at run time: warp-uniform) against the staged x, primed and
 * summed at once */
template <int NR>
__device__ __forceinline__ void mkc_q8_dot_rows_w(const mkc_w *const *ws, const int64_t *rows, const mkc_q8s &x,
                                                  int lane, float *acc) {
    mkc_q8_rowset<NR> rs;
    mkc_q8_pre<NR> p;
    mkc_q8_prime_rows<NR>(ws, rows, lane, rs, p);
    mkc_q8_sum_rows<NR>(rs, x, lane, p, acc);
}

/* A primed affine row (mkc_prime: lane l holds chunks l + 32 u) against
 * the staged x: the lane's partial sum, mkc_q8_finish's terms */
template <int BITS, int U>
__device__ __forceinline__ float mkc_primed_dot_q8(const mkc_primed<U> &p, int64_t nchunk, const mkc_q8s &x,
                                                   int lane) {
    const int4 *xq = (const int4 *)x.q;
    float acc = 0.0f;
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int64_t c = lane + 32 * u;
        if (c < nchunk) {
            const int64_t blk = BITS == 4 ? c : c >> 1;
            const int4 x0 = xq[c], x1 = BITS == 4 ? xq[x.nb + c] : x0;
            const float xdb = BITS == 4 || !(c & 1) ? x.xd[blk] : 0.0f;
            const int dot = mkc_q8_chunk<BITS>(p.q[u], x0, x1);
            acc = fmaf(p.s[u] * x.d[blk], mkc_dotf(dot), acc);
            acc = fmaf(p.b[u], xdb, acc);
        }
    }
    return acc;
}

/* Quantize x for w's code width (4-bit kinds: the nibble layout) */
__device__ __forceinline__ void mkc_q8_stage_for(const mkc_w &w, const float *x, const mkc_q8s &s) {
    if (w.kind <= MKC_A4_F16)
        mkc_q8_stage<4>(x, w.cols, s);
    else
        mkc_q8_stage<8>(x, w.cols, s);
}

#endif
