/* The CUDA backend's chunked Gated DeltaNet prefill kernel (k_gdn_chunk),
 * included by cuda_gdn.cu. A header of its own so that a host emulation
 * (tests/cli/cuda_emu_gdn.sh: a fiber per CUDA thread, barriers for
 * __syncthreads) can run this very code against a double reference on
 * machines without a GPU. It includes nothing: the includer provides
 * mk_gdn_args, mkc_warp_sum, MKC_DYN_SMEM and the math functions. */
#ifndef MK_CUDA_GDN_CHUNK_CUH
#define MK_CUDA_GDN_CHUNK_CUH

static __device__ float softplus(float x) {
    return x > 20.0f ? x : log1pf(expf(x));
}

/* ---- prefill: the chunked form ---------------------------------------------
 * One block of GDN_THREADS per value head walks its chunks in order. Thread
 * t owns column j = t % 128 of the state and rows [64 (t / 128), + 64):
 * the head's S (at most 128 x 128) lives in registers for the whole call
 * and is written back once. Per chunk of C tokens (shared memory):
 *  1. qn, kn: the l2-normalised q (scaled) and k, a warp per token; beta_c
 *     and the cumulative log decay G_c (thread 0), f_c = e^{G_C - G_c};
 *  2. sk = S0^T k_c and sq = S0^T q_c for every c: each thread's 64-row
 *     partial dot, the two halves summed by two shared atomicAdds on 0
 *     (a + b: the same bits in either order);
 *  3. kk = k_c . k_s and qk = q_c . k_s, a thread per (c, s) (C = 16:
 *     256 pairs), then l_cs = beta_c e^{G_c - G_s} kk (s < c) and
 *     qk masked (s <= c) and decayed by e^{G_c - G_s};
 *  4. the deltas by forward substitution, a thread per column:
 *     d_c = beta_c (v_c - e^{G_c} sk_c) - sum_{s<c} l_cs d_s;
 *  5. o_c = e^{G_c} sq_c + sum_{s<=c} qk_cs d_s, a thread per (c, j);
 *  6. S = e^{G_C} S + sum_c (f_c k_c) d_c^T in the registers.
 * Rows of qn / kn are padded to dk + 1 floats, so step 3's threads (16
 * rows of one column at a time) hit distinct banks. */
#define GDN_C 16
#define GDN_THREADS 256
#define GDN_DMAX 128

__global__ void __launch_bounds__(GDN_THREADS) k_gdn_chunk(mk_gdn_args a) {
    MKC_DYN_SMEM(float, sm);
    const int dk = a.dk, dv = a.dv, KP = dk + 1;
    float *qn = sm, *kn = qn + GDN_C * KP, *d = kn + GDN_C * KP, *sq = d + GDN_C * dv;
    float *kk = sq + GDN_C * dv, *qk = kk + GDN_C * GDN_C, *G = qk + GDN_C * GDN_C, *beta = G + GDN_C,
          *f = beta + GDN_C, *gs = f + GDN_C;
    const int h = blockIdx.x, kh = h / (a.nv / a.nk), t = threadIdx.x, lane = t & 31, w = t >> 5;
    const int j = t % GDN_DMAX, i0 = (t / GDN_DMAX) * 64;
    const bool owns = j < dv; /* a column of the state */
    float *S = a.state + (int64_t)h * dk * dv;
    const float qscale = 1.0f / sqrtf((float)dk), negA = -expf(a.A_log[h]);
    const int64_t ostr = (int64_t)a.nv * dv;
    float s[64];
#pragma unroll
    for (int ii = 0; ii < 64; ii++)
        s[ii] = owns && i0 + ii < dk ? S[(int64_t)(i0 + ii) * dv + j] : 0.0f;
    for (int64_t t0 = 0; t0 < a.n; t0 += GDN_C) {
        const int C = a.n - t0 < GDN_C ? (int)(a.n - t0) : GDN_C;
        /* 1 */
        for (int c = w; c < C; c += GDN_THREADS / 32) {
            const int64_t tt = t0 + c;
            const float *qr = a.q + tt * a.stride + (int64_t)kh * dk, *kr = a.k + tt * a.stride + (int64_t)kh * dk;
            float ssq = 0.0f, ssk = 0.0f;
            for (int i = lane; i < dk; i += 32) {
                ssq = fmaf(qr[i], qr[i], ssq);
                ssk = fmaf(kr[i], kr[i], ssk);
            }
            ssq = mkc_warp_sum(ssq);
            ssk = mkc_warp_sum(ssk);
            const float iq = 1.0f / sqrtf(ssq + 1e-6f), ik = 1.0f / sqrtf(ssk + 1e-6f);
            for (int i = lane; i < dk; i += 32) {
                qn[c * KP + i] = qr[i] * iq * qscale;
                kn[c * KP + i] = kr[i] * ik;
            }
            if (lane == 0) {
                beta[c] = 1.0f / (1.0f + expf(-a.b[tt * a.nv + h]));
                gs[c] = negA * softplus(a.a[tt * a.nv + h] + a.dt_bias[h]);
            }
        }
        for (int e = t; e < C * dv; e += GDN_THREADS) {
            d[e] = 0.0f;
            sq[e] = 0.0f;
        }
        __syncthreads();
        if (t == 0) {
            float acc = 0.0f;
            for (int c = 0; c < C; c++)
                G[c] = acc = c ? acc + gs[c] : gs[c];
            for (int c = 0; c < C; c++)
                f[c] = expf(G[C - 1] - G[c]);
        }
        /* 2 */
        if (owns)
            for (int c = 0; c < C; c++) {
                float pk = 0.0f, pq = 0.0f;
#pragma unroll
                for (int ii = 0; ii < 64; ii++)
                    if (i0 + ii < dk) {
                        pk = fmaf(s[ii], kn[c * KP + i0 + ii], pk);
                        pq = fmaf(s[ii], qn[c * KP + i0 + ii], pq);
                    }
                atomicAdd(&d[c * dv + j], pk);
                atomicAdd(&sq[c * dv + j], pq);
            }
        /* 3 */
        {
            const int c = t / GDN_C, r = t % GDN_C;
            float dkk = 0.0f, dqk = 0.0f;
            if (c < C && r < C)
                for (int i = 0; i < dk; i++) {
                    dkk = fmaf(kn[c * KP + i], kn[r * KP + i], dkk);
                    dqk = fmaf(qn[c * KP + i], kn[r * KP + i], dqk);
                }
            __syncthreads(); /* G, beta (thread 0) and every partial of step 2 are in */
            if (c < C && r < C) {
                const float e = r <= c ? expf(G[c] - G[r]) : 0.0f;
                kk[c * GDN_C + r] = r < c ? beta[c] * e * dkk : 0.0f;
                qk[c * GDN_C + r] = e * dqk;
            }
        }
        __syncthreads();
        /* 4 */
        if (t < dv)
            for (int c = 0; c < C; c++) {
                const float v = a.v[(t0 + c) * a.stride + (int64_t)h * dv + t];
                float dc = beta[c] * (v - expf(G[c]) * d[c * dv + t]);
                for (int r = 0; r < c; r++)
                    dc = fmaf(-kk[c * GDN_C + r], d[r * dv + t], dc);
                d[c * dv + t] = dc;
            }
        __syncthreads();
        /* 5 */
        for (int e = t; e < C * dv; e += GDN_THREADS) {
            const int c = e / dv, jj = e % dv;
            float o = 0.0f;
            for (int r = 0; r <= c; r++)
                o = fmaf(qk[c * GDN_C + r], d[r * dv + jj], o);
            a.out[(t0 + c) * ostr + (int64_t)h * dv + jj] = expf(G[c]) * sq[c * dv + jj] + o;
        }
        /* 6 */
        if (owns) {
            const float egl = expf(G[C - 1]);
#pragma unroll
            for (int ii = 0; ii < 64; ii++)
                if (i0 + ii < dk) {
                    float u = 0.0f;
                    for (int c = 0; c < C; c++)
                        u = fmaf(f[c] * kn[c * KP + i0 + ii], d[c * dv + j], u);
                    s[ii] = fmaf(egl, s[ii], u);
                }
        }
        __syncthreads(); /* the next chunk rewrites qn, kn, d, sq */
    }
#pragma unroll
    for (int ii = 0; ii < 64; ii++)
        if (owns && i0 + ii < dk)
            S[(int64_t)(i0 + ii) * dv + j] = s[ii];
}

#endif
