/* Prefill attention in tiles (flash-style), for mkb_attention's chunks of
 * many tokens: k_attn gives each (token, head) its own block walking the
 * whole cache, so a 512-token chunk of 32 heads read every cache row 16384
 * times (0.7 ms per layer at positions 0-511 of the Qwen3-30B-A3B shape,
 * two thirds of a 2048-token prefill: bench/RESULTS.md session 11).
 *
 * Here a block takes ATT_TQ = 32 queries of one head and walks the cache in
 * tiles of ATT_TK = 32 rows staged in shared memory, so each row is read
 * once per 32 queries. Thread (query qi, quarter kq) scores keys kq, kq+4,
 * .. of a tile (8 of them), the four quarters of a query (adjacent lanes)
 * combine the tile's max and sum by shuffles, keep the online softmax
 * (running max m, sum l, rescale by exp(m_old - m_new)) and accumulate the
 * value dims 16i + 4kq .. 16i + 4kq + 3 (interleaved, so the four quarters
 * read adjacent 16-byte chunks of a value row: no bank conflicts). Float32
 * throughout: the same function as the CPU's two-pass softmax in another
 * order, within the backend ops test's bound. Causal mask, sliding window
 * and sinks as k_attn (mk_attn_args); rows past the chunk (pos0 + n) are
 * never read. No selection (DSA) and no device position: those stay with
 * k_attn, as do head dims over 256 or not multiples of 16 (v) / 4 (k). */
#include <math.h>

#include "cuda/cuda_backend.cuh"

#define ATT_TQ 32
#define ATT_TK 32
#define ATT_TT 128 /* threads: 32 queries x 4 quarters */

/* DVQ: value floats per thread (dv / 4 rounded up to a multiple of 4) */
template <int DVQ>
__global__ void __launch_bounds__(ATT_TT) k_attn_tile(const mk_attn_args a, int64_t ks, int64_t vs) {
    extern __shared__ __align__(16) float sm[];
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
    for (int i = tid; i < ATT_TQ * (dk / 4); i += ATT_TT) {
        const int r = i / (dk / 4), c = 4 * (i % (dk / 4));
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (r < nq)
            v = *(const float4 *)(a.q + ((q0 + r) * a.n_heads + h) * (int64_t)dk + c);
        *(float4 *)(Qs + r * dkp + c) = v;
    }
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
        for (int i = tid; i < ATT_TK * (dk / 4); i += ATT_TT) {
            const int r = i / (dk / 4), c = 4 * (i % (dk / 4));
            float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (k0 + r < T)
                v = *(const float4 *)(a.k + (k0 + r) * ks + (int64_t)kvh * dk + c);
            *(float4 *)(Ks + r * dkp + c) = v;
        }
        for (int i = tid; i < ATT_TK * (dv / 4); i += ATT_TT) {
            const int r = i / (dv / 4), c = 4 * (i % (dv / 4));
            float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (k0 + r < T)
                v = *(const float4 *)(a.v + (k0 + r) * vs + (int64_t)kvh * dv + c);
            *(float4 *)(Vs + r * dvp + c) = v;
        }
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
        float tm = -INFINITY;
#pragma unroll
        for (int j = 0; j < ATT_TK / 4; j++) {
            const int64_t p = k0 + 4 * j + kq;
            s[j] = live && p <= qp && p >= lo ? s[j] * a.scale : -INFINITY;
            tm = fmaxf(tm, s[j]);
        }
        tm = fmaxf(tm, __shfl_xor_sync(0xffffffffu, tm, 1));
        tm = fmaxf(tm, __shfl_xor_sync(0xffffffffu, tm, 2));
        const float mn = fmaxf(m, tm);
        /* nothing seen yet (mn = -inf): no rescale, every weight 0 */
        const float corr = mn == -INFINITY ? 1.0f : expf(m - mn);
        float ts = 0.0f;
#pragma unroll
        for (int j = 0; j < ATT_TK / 4; j++) {
            s[j] = mn == -INFINITY ? 0.0f : expf(s[j] - mn);
            ts += s[j];
        }
        ts += __shfl_xor_sync(0xffffffffu, ts, 1);
        ts += __shfl_xor_sync(0xffffffffu, ts, 2);
        l = l * corr + ts;
        m = mn;
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
    float inv;
    if (a.sinks) { /* the sink's logit joins the max and the denominator only */
        const float sk = a.sinks[h], mf = fmaxf(m, sk), e = m == -INFINITY ? 0.0f : expf(m - mf);
        inv = e / (l * e + expf(sk - mf));
    } else {
        inv = 1.0f / l;
    }
    float *out = a.out + ((q0 + qi) * a.n_heads + h) * (int64_t)dv;
#pragma unroll
    for (int i = 0; i < DVQ / 4; i++) {
        const int c = 16 * i + 4 * kq;
        if (c < dv)
            *(float4 *)(out + c) =
                make_float4(o[4 * i] * inv, o[4 * i + 1] * inv, o[4 * i + 2] * inv, o[4 * i + 3] * inv);
    }
}

template <int DVQ> static bool launch(mkb_ctx *c, const mk_attn_args *a, int64_t ks, int64_t vs) {
    const size_t smem = sizeof(float) * ((size_t)(ATT_TQ + ATT_TK) * (a->dk + 4) + (size_t)ATT_TK * (a->dv + 4));
    /* shared memory past the 48 KiB default (refused: the caller's other kernel runs) */
    if (!mkc_smem_opt_in((const void *)k_attn_tile<DVQ>, 100 * 1024))
        return false;
    const dim3 grid((unsigned)((a->n + ATT_TQ - 1) / ATT_TQ), (unsigned)a->n_heads);
    k_attn_tile<DVQ><<<grid, ATT_TT, smem, c->s>>>(*a, ks, vs);
    mkb_launched(c, "attention (tiled prefill)");
    return true;
}

bool mkb_attention_tiled(mkb_ctx *c, const mk_attn_args *a, int64_t ks, int64_t vs) {
    if (a->n < ATT_TQ / 2 || a->sel || a->pos_dev || a->dk % 4 || a->dv % 16 || a->dk > 256 || a->dv > 256 ||
        ks % 4 || vs % 4 || (uintptr_t)a->q % 16 || (uintptr_t)a->k % 16 || (uintptr_t)a->v % 16 ||
        (uintptr_t)a->out % 16 || a->n > (int64_t)ATT_TQ * 0x7fffffff || a->n_heads > 65535)
        return false;
    if (a->dv <= 64)
        return launch<16>(c, a, ks, vs);
    if (a->dv <= 128)
        return launch<32>(c, a, ks, vs);
    return launch<64>(c, a, ks, vs);
}
