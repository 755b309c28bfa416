/* The CUDA backend's Gated DeltaNet slots: the causal depthwise conv with
 * SiLU and its state, and the recurrent delta-rule step (mk_gdn_args).
 *
 * conv1d_silu: one thread per channel walks the n tokens (the outputs read
 * the old state; the state is advanced afterwards by the same thread, in
 * ascending order, as the CPU does), so channels never race.
 * gdn: one block per value head; q and k of the token are l2-normalised in
 * shared memory (block sums), then thread j owns column j of the head's
 * state S [dk, dv] and runs the CPU's column arithmetic in the CPU's order:
 * S *= exp(g); d = beta (v - S^T k); S += k d^T; o = S^T q, token after
 * token: decode (one token), and heads larger than 128.
 * Prefill (several tokens, dk and dv <= 128): k_gdn_chunk, the chunked
 * form of the CPU's gdn_chunk (backend_cpu.c, where the algebra is
 * written out), GDN_C tokens at a time with the head's state in registers;
 * results differ from the token loop by float32 rounding only
 * (test_backend_ops holds both to one bound against a double reference). */
#include <math.h>

#include "cuda/cuda_backend.cuh"
#include "cuda/cuda_gdn_chunk.cuh"

__global__ void k_conv(const float *u, int64_t us, float *y, int64_t n, int64_t C, int K, const float *w,
                       float *state) {
    const int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (c >= C)
        return;
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

void mkb_conv1d_silu(void *ctx, const float *u, int64_t u_stride, float *y, int64_t n, int64_t C, int K,
                     const float *w, float *state) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (n <= 0 || C <= 0)
        return;
    const float *wd = mkb_param(c, w, C * K);
    if (!wd)
        return;
    k_conv<<<mkb_blocks(C, 128), 128, 0, c->s>>>(u, u_stride, y, n, C, K, wd, state);
    mkb_launched(c, "conv1d_silu");
}


/* shared: qn[dk], kn[dk], 32 floats of reduction scratch */
__global__ void k_gdn(mk_gdn_args a) {
    extern __shared__ float sm[];
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

void mkb_gdn(void *ctx, const mk_gdn_args *a) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (a->n <= 0 || a->nv <= 0)
        return;
    if (a->dv > 1024 || a->nk <= 0 || a->nv % a->nk) {
        mkb_fail(c, mk_err(MK_E_UNSUPPORTED, "CUDA gdn: dv %d (at most 1024), %d value heads on %d key heads", a->dv,
                           a->nv, a->nk));
        return;
    }
    mk_gdn_args d = *a;
    d.A_log = mkb_param(c, a->A_log, a->nv);
    d.dt_bias = mkb_param(c, a->dt_bias, a->nv);
    if (!d.A_log || !d.dt_bias)
        return;
    if (a->n > 1 && a->dk <= GDN_DMAX && a->dv <= GDN_DMAX && mk_cuda_gdn_chunked()) { /* prefill: chunked */
        const size_t smem = sizeof(float) * ((size_t)GDN_C * (2 * (size_t)(a->dk + 1) + 2 * (size_t)a->dv) +
                                             2 * GDN_C * GDN_C + 4 * GDN_C);
        k_gdn_chunk<<<(unsigned)a->nv, GDN_THREADS, smem, c->s>>>(d);
        mkb_launched(c, "gdn (chunked)");
        return;
    }
    const int threads = a->dv < 32 ? 32 : (a->dv + 31) / 32 * 32;
    const size_t smem = sizeof(float) * (2 * (size_t)a->dk + 32);
    k_gdn<<<(unsigned)a->nv, threads, smem, c->s>>>(d);
    mkb_launched(c, "gdn");
}
