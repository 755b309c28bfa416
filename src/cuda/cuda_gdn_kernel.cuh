/* The Gated DeltaNet decode kernels (k_conv, k_gdn and a batched step's
 * k_conv_each, k_gdn_each; the launch code is cuda_gdn.cu's). A header of
 * its own so that the host emulation (tests/cli/cuda_emu_gdn.sh) runs these
 * very kernels. The includer provides mk_gdn_args, mkc_warp_sum,
 * mkb_block_sum (cuda_block_sum.cuh), MKC_DYN_SMEM, softplus
 * (cuda_gdn_chunk.cuh) and the math functions. */
#ifndef MK_CUDA_GDN_KERNEL_CUH
#define MK_CUDA_GDN_KERNEL_CUH

/* A batched decode step's sequences (the _each slots): each one's state */
#define GDN_SEQS 64
struct gdn_states {
    float *p[GDN_SEQS];
};

/* channel c of n tokens (the thread's whole work in k_conv) */
__device__ __forceinline__ void conv_channel(const float *u, int64_t us, float *y, int64_t n, int64_t C, int K,
                                             const float *w, float *state, int64_t c) {
    for (int64_t t = 0; t < n; t++) {
        float acc = 0.0f;
        for (int j = 0; j < K; j++) {
            const int64_t idx = t - K + 1 + j;
            const float in = idx < 0 ? state[(K - 1 + idx) * C + c] : u[idx * us + c];
            acc = fmaf(w[c * K + j], in, acc);
        }
        y[t * C + c] = acc / (1.0f + expf(-acc));
    }
    for (int s = 0; s < K - 1; s++) {
        const int64_t idx = n - (K - 1) + s;
        state[(int64_t)s * C + c] = idx < 0 ? state[(s + n) * C + c] : u[idx * us + c];
    }
}

__global__ void k_conv(const float *u, int64_t us, float *y, int64_t n, int64_t C, int K, const float *w,
                       float *state) {
    mkc_pdl_enter(); /* launched under PDL in a decode step (cuda_gdn.cu) */
    const int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (c < C)
        conv_channel(u, us, y, n, C, K, w, state, c);
}

/* sequence blockIdx.y's one token: row y of u and of out, its own state */
__global__ void k_conv_each(const float *u, int64_t us, float *y, int64_t C, int K, const float *w,
                            const __grid_constant__ gdn_states st) {
    mkc_pdl_enter();
    const int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (c < C)
        conv_channel(u + blockIdx.y * us, us, y + blockIdx.y * C, 1, C, K, w, st.p[blockIdx.y], c);
}

/* head blockIdx.x of a; shared: qn[dk], kn[dk], 32 floats of reduction scratch */
__device__ __forceinline__ void gdn_head(const mk_gdn_args &a) {
    MKC_DYN_SMEM(float, sm);
    float *qn = sm, *kn = sm + a.dk, *red = kn + a.dk;
    const int h = blockIdx.x, r = a.nv / a.nk, kh = h / r, dk = a.dk, dv = a.dv;
    const int j = threadIdx.x;
    float *S = a.state + (int64_t)h * dk * dv;
    const float qscale = 1.0f / sqrtf((float)dk), negA = -expf(a.A_log[h]);
    for (int64_t t = 0; t < a.n; t++) {
        const float *qr = a.q + t * a.stride + (int64_t)kh * dk, *kr = a.k + t * a.stride + (int64_t)kh * dk;
        float sq = 0.0f, sk = 0.0f;
        for (int i = threadIdx.x; i < dk; i += blockDim.x) {
            sq = fmaf(qr[i], qr[i], sq);
            sk = fmaf(kr[i], kr[i], sk);
        }
        sq = mkb_block_sum(sq, red);
        sk = mkb_block_sum(sk, red);
        const float iq = 1.0f / sqrtf(sq + 1e-6f), ik = 1.0f / sqrtf(sk + 1e-6f);
        for (int i = threadIdx.x; i < dk; i += blockDim.x) {
            qn[i] = qr[i] * iq * qscale;
            kn[i] = kr[i] * ik;
        }
        __syncthreads();
        const float beta = 1.0f / (1.0f + expf(-a.b[t * a.nv + h]));
        const float decay = expf(negA * softplus(a.a[t * a.nv + h] + a.dt_bias[h]));
        if (j < dv) {
            const float v = a.v[t * a.stride + (int64_t)h * dv + j];
            float d = 0.0f;
            for (int i = 0; i < dk; i++) {
                const float s = S[(int64_t)i * dv + j] * decay;
                S[(int64_t)i * dv + j] = s;
                d = fmaf(kn[i], s, d);
            }
            d = (v - d) * beta;
            float o = 0.0f;
            for (int i = 0; i < dk; i++) {
                const float s = fmaf(kn[i], d, S[(int64_t)i * dv + j]);
                S[(int64_t)i * dv + j] = s;
                o = fmaf(qn[i], s, o);
            }
            a.out[(t * a.nv + h) * dv + j] = o;
        }
        __syncthreads(); /* qn/kn are rewritten for the next token */
    }
}

__global__ void k_gdn(mk_gdn_args a) {
    mkc_pdl_enter();
    gdn_head(a);
}

/* sequence blockIdx.y's one token: its rows of a batch laid out as a's
 * (row 0), its own state */
__global__ void k_gdn_each(mk_gdn_args a, const __grid_constant__ gdn_states st) {
    mkc_pdl_enter();
    const int64_t i = blockIdx.y;
    a.q += i * a.stride;
    a.k += i * a.stride;
    a.v += i * a.stride;
    a.a += i * a.nv;
    a.b += i * a.nv;
    a.out += i * a.nv * a.dv;
    a.state = st.p[i];
    gdn_head(a);
}

#endif
