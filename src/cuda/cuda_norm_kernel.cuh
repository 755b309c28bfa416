/* The residual step's kernel (k_add_rmsnorm) and the q/k head norm + RoPE
 * (k_qk_norm_rope; their launches are cuda_ops.cu's slots). A
 * header of its own so that the host emulation (tests/emu/addnorm_emu.cpp)
 * runs these very kernels against their folded forms (cuda_fold.cuh). The
 * includer provides cuda_impl.cuh (or the emulation's emu_impl.h). */
#ifndef MK_CUDA_NORM_KERNEL_CUH
#define MK_CUDA_NORM_KERNEL_CUH

#include "cuda/cuda_fold.cuh"
#include "cuda/cuda_block_sum.cuh"
#include "cuda/cuda_nfl.cuh"


/* add_rmsnorm: one block per row, the threads of k_rmsnorm. x += y as axpy
 * computes it (fmaf(1, y, x)); the row's lowest non-finite index goes to
 * f->cand as in k_check_finite (whose protocol this follows: nothing looked
 * at once a finding is kept; mkb_nfl_close keeps (tag, index, value) and
 * resets the scratch); then xb = rmsnorm(x) * g with k_rmsnorm's
 * loop order, so the values equal the three slots' bit for bit. */
__global__ void __launch_bounds__(1024) k_add_rmsnorm(float *x, const float *y, int64_t dim, unsigned long long tag,
                                                      mkb_nfl *f, float *xb, const float *g, float eps) {
    __shared__ float sh[32];
    mkc_pdl_enter();
    float *xr = x + blockIdx.x * dim;
    const float *yr = y + blockIdx.x * dim;
    float ss = 0.0f;
    int64_t bad = -1;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = fmaf(1.0f, yr[i], xr[i]);
        xr[i] = v;
        if (bad < 0 && !isfinite(v))
            bad = i; /* this thread's later indices are larger */
        ss = fmaf(v, v, ss);
    }
    /* one row (a decode step): the block's lowest finding in shared memory
     * and no ticket: the block is the launch's last (saves the L2 atomics'
     * round trips; the same finding as the protocol below) */
    __shared__ unsigned long long sbad;
    const bool one = gridDim.x == 1;
    if (one) {
        if (threadIdx.x == 0)
            sbad = ~0ull;
        __syncthreads();
        if (bad >= 0)
            atomicMin(&sbad, (unsigned long long)bad);
    } else if (bad >= 0 && __ldcg(&f->key) == ~0ull) {
        atomicMin(&f->cand, (unsigned long long)(blockIdx.x * dim + bad));
    }
    if (xb) {
        ss = mkb_block_sum(ss, sh);
        const float inv = 1.0f / sqrtf(ss / (float)dim + eps);
        float *br = xb + blockIdx.x * dim;
        for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
            float v = xr[i] * inv;
            if (g)
                v = v * g[i];
            br[i] = v;
        }
    }
    if (one) {
        __syncthreads(); /* sbad final, x written */
        if (threadIdx.x == 0 && sbad != ~0ull && f->key == ~0ull) {
            f->val = xr[sbad];
            f->key = tag << 40 | sbad;
        }
        return;
    }
    mkb_nfl_close(f, x, tag);
}

/* qk_norm_rope: one block per (token, head) of q then k, the threads of
 * k_rmsnorm for a row of hd (so the norm's sum has its order); the head is
 * normed into shared memory, then rotated from there as k_rope does. */
__global__ void __launch_bounds__(1024) k_qk_norm_rope(float *q, int nq, float *k, int nk, int hd, const float *qg,
                                                       const float *kg, float eps, int rot, const float *cos,
                                                       const float *sin) {
    MKC_DYN_SMEM(float, tmp);
    __shared__ float sh[32];
    mkc_pdl_enter();
    const int nh = nq + nk;
    const int64_t t = blockIdx.x / nh;
    const int h = blockIdx.x % nh, half = rot / 2;
    float *v = h < nq ? q + (t * nq + h) * hd : k + (t * nk + (h - nq)) * hd;
    const float *g = h < nq ? qg : kg;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        const float a = v[i];
        tmp[i] = a;
        ss = fmaf(a, a, ss);
    }
    if (g) { /* uniform over the block: qg and kg are both given or both NULL */
        ss = mkb_block_sum(ss, sh);
        const float inv = 1.0f / sqrtf(ss / (float)hd + eps);
        for (int i = threadIdx.x; i < hd; i += blockDim.x) {
            float a = tmp[i] * inv;
            a = a * g[i];
            tmp[i] = a;
        }
    }
    __syncthreads();
    const float *cs = cos + t * half, *sn = sin + t * half;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        const float x0 = tmp[i], x1 = tmp[i + half];
        mkc_rope_pair(x0, x1, cs[i], sn[i], &v[i], &v[i + half]);
    }
    if (g)
        for (int i = rot + threadIdx.x; i < hd; i += blockDim.x)
            v[i] = tmp[i];
}

#endif
