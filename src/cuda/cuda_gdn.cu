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
 * (test_backend_ops holds both to one bound against a double reference).
 * A batched decode step (the _each slots): k_conv_each / k_gdn_each run the
 * same bodies for every sequence in one launch, each on its own state. */
#include <math.h>

#include "cuda/cuda_backend.cuh"
#include "cuda/cuda_gdn_chunk.cuh"

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
    const int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (c < C)
        conv_channel(u, us, y, n, C, K, w, state, c);
}

/* sequence blockIdx.y's one token: row y of u and of out, its own state */
__global__ void k_conv_each(const float *u, int64_t us, float *y, int64_t C, int K, const float *w,
                            const __grid_constant__ gdn_states st) {
    const int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (c < C)
        conv_channel(u + blockIdx.y * us, us, y + blockIdx.y * C, 1, C, K, w, st.p[blockIdx.y], c);
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


/* head blockIdx.x of a; shared: qn[dk], kn[dk], 32 floats of reduction scratch */
__device__ __forceinline__ void gdn_head(const mk_gdn_args &a) {
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

__global__ void k_gdn(mk_gdn_args a) {
    gdn_head(a);
}

/* sequence blockIdx.y's one token: its rows of a batch laid out as a's
 * (row 0), its own state */
__global__ void k_gdn_each(mk_gdn_args a, const __grid_constant__ gdn_states st) {
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

/* A batched decode step's conv (backend.h's conv1d_silu_each): one launch,
 * each sequence's channels as k_conv's for that sequence alone. */
bool mkb_conv1d_silu_each(void *ctx, const float *u, int64_t u_stride, float *y, int n, int64_t C, int K,
                          const float *w, float *const *states) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (n < 1 || n > GDN_SEQS || C <= 0)
        return false;
    const float *wd = mkb_param(c, w, C * K);
    if (!wd)
        return true; /* the failure is recorded for sync */
    gdn_states st;
    for (int i = 0; i < n; i++)
        st.p[i] = states[i];
    k_conv_each<<<dim3(mkb_blocks(C, 128), (unsigned)n), 128, 0, c->s>>>(u, u_stride, y, C, K, wd, st);
    mkb_launched(c, "conv1d_silu of a batched step");
    return true;
}

/* A batched decode step's delta rule (backend.h's gdn_each): one launch,
 * each sequence's heads as k_gdn's for that sequence alone (one token: the
 * token loop, never the chunked form). */
bool mkb_gdn_each(void *ctx, const mk_gdn_args *a, int n) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (n < 1 || n > GDN_SEQS)
        return false;
    const mk_gdn_args *a0 = &a[0];
    if (a0->nv <= 0 || a0->dv > 1024 || a0->nk <= 0 || a0->nv % a0->nk)
        return false; /* gdn names what is wrong */
    gdn_states st;
    for (int i = 0; i < n; i++) {
        const mk_gdn_args *x = &a[i];
        if (x->n != 1 || x->nk != a0->nk || x->nv != a0->nv || x->dk != a0->dk || x->dv != a0->dv ||
            x->stride != a0->stride || x->A_log != a0->A_log || x->dt_bias != a0->dt_bias ||
            x->q != a0->q + i * a0->stride || x->k != a0->k + i * a0->stride || x->v != a0->v + i * a0->stride ||
            x->a != a0->a + (int64_t)i * a0->nv || x->b != a0->b + (int64_t)i * a0->nv ||
            x->out != a0->out + (int64_t)i * a0->nv * a0->dv)
            return false;
        st.p[i] = x->state;
    }
    mk_gdn_args d = *a0;
    d.A_log = mkb_param(c, a0->A_log, a0->nv);
    d.dt_bias = mkb_param(c, a0->dt_bias, a0->nv);
    if (!d.A_log || !d.dt_bias)
        return true; /* the failure is recorded for sync */
    const int threads = d.dv < 32 ? 32 : (d.dv + 31) / 32 * 32;
    const size_t smem = sizeof(float) * (2 * (size_t)d.dk + 32);
    k_gdn_each<<<dim3((unsigned)d.nv, (unsigned)n), threads, smem, c->s>>>(d, st);
    mkb_launched(c, "gdn of a batched step");
    return true;
}
