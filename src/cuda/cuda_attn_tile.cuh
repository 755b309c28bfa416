/* The tiled prefill attention kernels (cuda_attn_tile.cu launches them;
 * tests/emu/attn_tile_emu.cpp runs these very kernels on the host).
 *
 * Generation 1, k_attn_tile: a block takes ATT_TQ = 32 queries of one head
 * and walks the cache in tiles of ATT_TK = 32 rows staged in shared memory,
 * so each row is read once per 32 queries. Thread (query qi, quarter kq)
 * scores keys kq, kq+4, .. of a tile (8 of them), the four quarters of a
 * query (adjacent lanes) combine the tile's max and sum by shuffles, keep
 * the online softmax (running max m, sum l, rescale by exp(m_old - m_new))
 * and accumulate the value dims 16i + 4kq .. 16i + 4kq + 3 (interleaved, so
 * the four quarters read adjacent 16-byte chunks of a value row: no bank
 * conflicts). Each score and each value update reads 16 bytes of shared
 * memory for 4 multiply-adds, so shared memory, not arithmetic, bounds it:
 * ncu put it at 0.27-1.2 ms per 512-token chunk of the Qwen3-30B-A3B shape
 * (32 heads of 128), 30-40% of a 2048-token prefill (2026-12-06, an H100).
 *
 * Generation 2, k_attn_tile2 (mk_cuda_set_attn_tile2): register blocking. A
 * block of 256 threads takes ATT2_TQ = 64 queries of one head, the cache in
 * tiles of ATT2_TK = 64 rows; thread (query group qg, key group kg), 16 x
 * 16 of them, scores its 4 queries against keys kg, kg + 16, kg + 32, kg +
 * 48 (16 scores from 8 loads of 16 bytes per 4 dims: 4 of q, broadcast to
 * the 16 threads of the group, and 4 of k), the 16 threads of a query group
 * (half a warp) combine each query's tile max and sum by shuffles, keep the
 * online softmax per query, and write the weights to shared memory
 * transposed (key-major, the 4 queries of a group one 16-byte word); then
 * the same thread accumulates its 4 queries' value columns 4 kg + 64 u
 * (u < NV) over the tile's 64 keys: per key one load of the 4 weights and
 * NV of values for 16 NV multiply-adds. The sums are the same function as
 * generation 1's and the CPU's in another float order.
 *
 * Both: float32 throughout; causal mask, sliding window and sinks as k_attn
 * (mk_attn_args); rows past the chunk (pos0 + n) are never read. No
 * selection (DSA) and no device position: those stay with k_attn, as do
 * head dims over 256 or not multiples of 16 (v) / 4 (k). The includer
 * provides cuda_impl.cuh (or the emulator). */
#ifndef MK_CUDA_ATTN_TILE_CUH
#define MK_CUDA_ATTN_TILE_CUH

/* Rows r < R of d floats (d % 4 == 0) into dst, rows d + 4 floats apart
 * (the pad keeps a column's float4s of different rows in different banks):
 * row r from src + r * stride, zeros from row `have` on; the block's NT
 * threads share the float4s */
template <int R, int NT>
__device__ __forceinline__ void att_stage(float *dst, const float *src, int64_t stride, int d, int64_t have) {
    for (int i = threadIdx.x; i < R * (d / 4); i += NT) {
        const int r = i / (d / 4), c = 4 * (i % (d / 4));
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (r < have)
            v = *(const float4 *)(src + r * stride + c);
        *(float4 *)(dst + r * (d + 4) + c) = v;
    }
}

/* One tile's online-softmax step for one query: this thread's NS scores
 * (scaled, -inf where the query does not see the row), shared with LANES
 * adjacent lanes, give the tile's max and sum (xor shuffles); the scores
 * become weights exp(s - m_new), m and l move on, and the rescale of the
 * earlier sums, exp(m_old - m_new), is returned (nothing seen yet, m_new =
 * -inf: no rescale, every weight 0) */
template <int NS, int LANES>
__device__ __forceinline__ float att_online(float *s, float &m, float &l) {
    float tm = -INFINITY;
#pragma unroll
    for (int j = 0; j < NS; j++)
        tm = fmaxf(tm, s[j]);
#pragma unroll
    for (int x = 1; x < LANES; x <<= 1)
        tm = fmaxf(tm, __shfl_xor_sync(0xffffffffu, tm, x));
    const float mn = fmaxf(m, tm);
    const float corr = mn == -INFINITY ? 1.0f : expf(m - mn);
    float ts = 0.0f;
#pragma unroll
    for (int j = 0; j < NS; j++) {
        s[j] = mn == -INFINITY ? 0.0f : expf(s[j] - mn);
        ts += s[j];
    }
#pragma unroll
    for (int x = 1; x < LANES; x <<= 1)
        ts += __shfl_xor_sync(0xffffffffu, ts, x);
    l = l * corr + ts;
    m = mn;
    return corr;
}

/* The factor of a query's output sums: 1 / l, or with head h's sink logit
 * (sinks non-NULL), which joins the max and the denominator only */
__device__ __forceinline__ float att_norm(float m, float l, const float *sinks, int h) {
    if (!sinks)
        return 1.0f / l;
    const float sk = sinks[h], mf = fmaxf(m, sk), e = m == -INFINITY ? 0.0f : expf(m - mf);
    return e / (l * e + expf(sk - mf));
}

#define ATT_TQ 32
#define ATT_TK 32
#define ATT_TT 128 /* threads: 32 queries x 4 quarters */

/* Host and device: k_attn_tile's dynamic shared memory for head dims dk, dv */
__host__ __device__ __forceinline__ size_t att1_smem(int dk, int dv) {
    return sizeof(float) * ((size_t)(ATT_TQ + ATT_TK) * (dk + 4) + (size_t)ATT_TK * (dv + 4));
}

/* DVQ: value floats per thread (dv / 4 rounded up to a multiple of 4) */
template <int DVQ>
__global__ void __launch_bounds__(ATT_TT) k_attn_tile(const mk_attn_args a, int64_t ks, int64_t vs) {
    MKC_DYN_SMEM(float4, mkc_sm4);
    float *sm = (float *)mkc_sm4;
    const int dk = a.dk, dv = a.dv, dkp = dk + 4, dvp = dv + 4;
    float *Qs = sm, *Ks = Qs + ATT_TQ * dkp, *Vs = Ks + ATT_TK * dkp;
    const int tid = threadIdx.x, qi = tid >> 2, kq = tid & 3, lane = tid & 31;
    const int h = blockIdx.y, kvh = h / (a.n_heads / a.n_kv);
    const int64_t q0 = (int64_t)blockIdx.x * ATT_TQ, T = a.pos0 + a.n;
    const int64_t nq = min((int64_t)ATT_TQ, a.n - q0); /* queries of this tile */
    const bool live = qi < nq;
    const int64_t qp = a.pos0 + q0 + qi; /* this query's position */
    const int64_t lo = a.window > 0 ? qp - a.window + 1 : 0; /* first row it sees */

    /* the tile's queries */
    att_stage<ATT_TQ, ATT_TT>(Qs, a.q + (q0 * a.n_heads + h) * (int64_t)dk, (int64_t)a.n_heads * dk, dk, nq);
    float o[DVQ];
#pragma unroll
    for (int i = 0; i < DVQ; i++)
        o[i] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    /* rows the tile's queries see: from the first query's window start to the last query */
    const int64_t first = a.window > 0 ? max((int64_t)0, a.pos0 + q0 - a.window + 1) : 0;
    const int64_t last = a.pos0 + q0 + nq - 1;
    for (int64_t k0 = first - first % ATT_TK; k0 <= last; k0 += ATT_TK) {
        __syncthreads(); /* the previous tile's rows are no longer read */
        att_stage<ATT_TK, ATT_TT>(Ks, a.k + k0 * ks + (int64_t)kvh * dk, ks, dk, T - k0);
        att_stage<ATT_TK, ATT_TT>(Vs, a.v + k0 * vs + (int64_t)kvh * dv, vs, dv, T - k0);
        __syncthreads();
        /* scores of keys kq + 4j */
        float s[ATT_TK / 4];
#pragma unroll
        for (int j = 0; j < ATT_TK / 4; j++)
            s[j] = 0.0f;
        const float *qr = Qs + qi * dkp;
        for (int d = 0; d < dk; d += 4) {
            const float4 q4 = *(const float4 *)(qr + d);
#pragma unroll
            for (int j = 0; j < ATT_TK / 4; j++) {
                const float4 k4 = *(const float4 *)(Ks + (4 * j + kq) * dkp + d);
                s[j] = fmaf(q4.x, k4.x, s[j]);
                s[j] = fmaf(q4.y, k4.y, s[j]);
                s[j] = fmaf(q4.z, k4.z, s[j]);
                s[j] = fmaf(q4.w, k4.w, s[j]);
            }
        }
#pragma unroll
        for (int j = 0; j < ATT_TK / 4; j++) {
            const int64_t p = k0 + 4 * j + kq;
            s[j] = live && p <= qp && p >= lo ? s[j] * a.scale : -INFINITY;
        }
        const float corr = att_online<ATT_TK / 4, 4>(s, m, l); /* the query's four quarters */
#pragma unroll
        for (int i = 0; i < DVQ; i++)
            o[i] *= corr;
        /* o += p_j v_j over the tile's 32 keys; p_j from the quarter that scored it */
#pragma unroll
        for (int j = 0; j < ATT_TK; j++) {
            const float pj = __shfl_sync(0xffffffffu, s[j >> 2], (lane & ~3) | (j & 3));
            const float *vr = Vs + j * dvp;
#pragma unroll
            for (int i = 0; i < DVQ / 4; i++) {
                const int c = 16 * i + 4 * kq;
                if (c < dv) {
                    const float4 v4 = *(const float4 *)(vr + c);
                    o[4 * i] = fmaf(pj, v4.x, o[4 * i]);
                    o[4 * i + 1] = fmaf(pj, v4.y, o[4 * i + 1]);
                    o[4 * i + 2] = fmaf(pj, v4.z, o[4 * i + 2]);
                    o[4 * i + 3] = fmaf(pj, v4.w, o[4 * i + 3]);
                }
            }
        }
    }
    if (!live)
        return;
    const float inv = att_norm(m, l, a.sinks, h);
    float *out = a.out + ((q0 + qi) * a.n_heads + h) * (int64_t)dv;
#pragma unroll
    for (int i = 0; i < DVQ / 4; i++) {
        const int c = 16 * i + 4 * kq;
        if (c < dv)
            *(float4 *)(out + c) =
                make_float4(o[4 * i] * inv, o[4 * i + 1] * inv, o[4 * i + 2] * inv, o[4 * i + 3] * inv);
    }
}


/* ---- generation 2 ---- */
#define ATT2_TQ 64
#define ATT2_TK 64
#define ATT2_TT 256 /* threads: 16 query groups x 16 key groups */
#define ATT2_PS (ATT2_TQ + 4) /* floats between the weight rows (one per key) */

/* Host and device: floats of k_attn_tile2's key region, which the weights
 * reuse once the tile's scores are taken */
__host__ __device__ __forceinline__ int att2_kregion(int dk) {
    return ATT2_TK * (dk + 4) > ATT2_TK * ATT2_PS ? ATT2_TK * (dk + 4) : ATT2_TK * ATT2_PS;
}
/* Host and device: k_attn_tile2's dynamic shared memory for head dims dk, dv
 * (101 KB at 128: two blocks an SM) */
__host__ __device__ __forceinline__ size_t att2_smem(int dk, int dv) {
    return sizeof(float) * ((size_t)ATT2_TQ * (dk + 4) + (size_t)att2_kregion(dk) + (size_t)ATT2_TK * (dv + 4));
}

/* NV: value float4 columns per thread (dv <= 64 NV) */
template <int NV>
__global__ void __launch_bounds__(ATT2_TT, NV <= 2 ? 2 : 1) k_attn_tile2(const mk_attn_args a, int64_t ks, int64_t vs) {
    MKC_DYN_SMEM(float4, mkc_sm4);
    float *sm = (float *)mkc_sm4;
    const int dk = a.dk, dv = a.dv, dkp = dk + 4, dvp = dv + 4;
    /* the weights Pt reuse the keys' region (the scores are taken first: a barrier between) */
    float *Qs = sm, *Ks = Qs + ATT2_TQ * dkp, *Pt = Ks, *Vs = Ks + att2_kregion(dk);
    const int tid = threadIdx.x, qg = tid >> 4, kg = tid & 15;
    const int h = blockIdx.y, kvh = h / (a.n_heads / a.n_kv);
    const int64_t q0 = (int64_t)blockIdx.x * ATT2_TQ, T = a.pos0 + a.n;
    const int64_t nq = min((int64_t)ATT2_TQ, a.n - q0); /* queries of this tile */
    att_stage<ATT2_TQ, ATT2_TT>(Qs, a.q + (q0 * a.n_heads + h) * (int64_t)dk, (int64_t)a.n_heads * dk, dk, nq);
    /* this thread's queries qg * 4 + i: position, first row seen, whether real */
    int64_t qp[4], lo[4];
    bool live[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        live[i] = qg * 4 + i < nq;
        qp[i] = a.pos0 + q0 + qg * 4 + i;
        lo[i] = a.window > 0 ? qp[i] - a.window + 1 : 0;
    }
    float4 o[4][NV];
    float m[4], l[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
#pragma unroll
        for (int u = 0; u < NV; u++)
            o[i][u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    const int64_t first = a.window > 0 ? max((int64_t)0, a.pos0 + q0 - a.window + 1) : 0;
    const int64_t last = a.pos0 + q0 + nq - 1;
    for (int64_t k0 = first - first % ATT2_TK; k0 <= last; k0 += ATT2_TK) {
        __syncthreads(); /* the previous tile's rows and weights are no longer read */
        att_stage<ATT2_TK, ATT2_TT>(Ks, a.k + k0 * ks + (int64_t)kvh * dk, ks, dk, T - k0);
        att_stage<ATT2_TK, ATT2_TT>(Vs, a.v + k0 * vs + (int64_t)kvh * dv, vs, dv, T - k0);
        __syncthreads();
        float s[4][4];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++)
                s[i][j] = 0.0f;
        for (int d = 0; d < dk; d += 4) {
            float4 q4[4], k4[4];
#pragma unroll
            for (int i = 0; i < 4; i++)
                q4[i] = *(const float4 *)(Qs + (qg * 4 + i) * dkp + d);
#pragma unroll
            for (int j = 0; j < 4; j++)
                k4[j] = *(const float4 *)(Ks + (kg + 16 * j) * dkp + d);
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    s[i][j] = fmaf(q4[i].x, k4[j].x, s[i][j]);
                    s[i][j] = fmaf(q4[i].y, k4[j].y, s[i][j]);
                    s[i][j] = fmaf(q4[i].z, k4[j].z, s[i][j]);
                    s[i][j] = fmaf(q4[i].w, k4[j].w, s[i][j]);
                }
        }
        float corr[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int64_t p = k0 + kg + 16 * j;
                s[i][j] = live[i] && p <= qp[i] && p >= lo[i] ? s[i][j] * a.scale : -INFINITY;
            }
            corr[i] = att_online<4, 16>(s[i], m[i], l[i]); /* the query group's 16 key groups: a half warp */
        }
        __syncthreads(); /* every thread's scores are taken: the key region becomes the weights' */
#pragma unroll
        for (int j = 0; j < 4; j++) /* key kg + 16 j's weights for the group's 4 queries */
            *(float4 *)(Pt + (kg + 16 * j) * ATT2_PS + qg * 4) = make_float4(s[0][j], s[1][j], s[2][j], s[3][j]);
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int u = 0; u < NV; u++) {
                o[i][u].x *= corr[i];
                o[i][u].y *= corr[i];
                o[i][u].z *= corr[i];
                o[i][u].w *= corr[i];
            }
        __syncthreads();
        /* o += p_j v_j over the tile's keys: value columns 4 kg + 64 u */
        for (int j = 0; j < ATT2_TK; j++) {
            const float4 p4 = *(const float4 *)(Pt + j * ATT2_PS + qg * 4);
            const float pj[4] = {p4.x, p4.y, p4.z, p4.w};
#pragma unroll
            for (int u = 0; u < NV; u++) {
                const int c = 4 * kg + 64 * u;
                if (c < dv) {
                    const float4 v4 = *(const float4 *)(Vs + j * dvp + c);
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        o[i][u].x = fmaf(pj[i], v4.x, o[i][u].x);
                        o[i][u].y = fmaf(pj[i], v4.y, o[i][u].y);
                        o[i][u].z = fmaf(pj[i], v4.z, o[i][u].z);
                        o[i][u].w = fmaf(pj[i], v4.w, o[i][u].w);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        if (!live[i])
            continue;
        const float inv = att_norm(m[i], l[i], a.sinks, h);
        float *out = a.out + ((q0 + qg * 4 + i) * a.n_heads + h) * (int64_t)dv;
#pragma unroll
        for (int u = 0; u < NV; u++) {
            const int c = 4 * kg + 64 * u;
            if (c < dv)
                *(float4 *)(out + c) =
                    make_float4(o[i][u].x * inv, o[i][u].y * inv, o[i][u].z * inv, o[i][u].w * inv);
        }
    }
}

#endif
