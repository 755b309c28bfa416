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


/* Elements a k_add_rmsnorm thread keeps in registers between its sum and
 * its output: its first MKC_NORM_R (rows of up to MKC_NORM_R * blockDim
 * values whole: the 2048 of the Qwen3-30B-A3B shape at 1024 threads); the
 * elements of wider rows past them are read again where they were written.
 * A decode step's norm is one row: its time is the chain of dependent
 * loads each thread walks, so nothing is read twice and the weights come
 * before the wait. 2 keeps 32 registers (two blocks of 1024 threads per
 * SM, as before, for prefill's many rows); 4 took 45, 8 took 64. */
#define MKC_NORM_R 2

/* add_rmsnorm: one block per row, the threads of k_rmsnorm. x += y as axpy
 * computes it (fmaf(1, y, x)); the row's lowest non-finite index goes to
 * f->cand as in k_check_finite (whose protocol this follows: nothing looked
 * at once a finding is kept; mkb_nfl_close keeps (tag, index, value) and
 * resets the scratch); then xb = rmsnorm(x) * g with k_rmsnorm's
 * loop order, so the values equal the three slots' bit for bit. g (a
 * weight) is loaded before the wait for the previous kernel; x and y after
 * it, all of a thread's at once (x and y are distinct rows or the same
 * one: a thread's loads come before its stores either way). */
__global__ void __launch_bounds__(1024) k_add_rmsnorm(float *x, const float *y, int64_t dim, unsigned long long tag,
                                                      mkb_nfl *f, float *xb, const float *g, float eps) {
    __shared__ float sh[32];
    const int B = (int)blockDim.x;
    /* this thread's elements in registers: i0 + r B (r < MKC_NORM_R) below dim; the rest from iw on */
    const int64_t i0 = threadIdx.x, iw = (int64_t)MKC_NORM_R * B;
    float gv[MKC_NORM_R], xv[MKC_NORM_R], yv[MKC_NORM_R];
#pragma unroll
    for (int r = 0; r < MKC_NORM_R; r++)
        gv[r] = xb && g && i0 + (int64_t)r * B < dim ? g[i0 + r * B] : 0.0f;
    mkc_pdl_enter();
    float *xr = x + blockIdx.x * dim;
    const float *yr = y + blockIdx.x * dim;
    float *xp = xr + i0;
    const float *yp = yr + i0;
#pragma unroll
    for (int r = 0; r < MKC_NORM_R; r++)
        if (i0 + (int64_t)r * B < dim) {
            xv[r] = xp[r * B];
            yv[r] = yp[r * B];
        }
    float ss = 0.0f;
    int64_t bad = -1;
#pragma unroll
    for (int r = 0; r < MKC_NORM_R; r++) {
        const int64_t i = i0 + (int64_t)r * B;
        if (i < dim) {
            const float v = fmaf(1.0f, yv[r], xv[r]);
            xv[r] = v;
            xp[r * B] = v;
            if (bad < 0 && !isfinite(v))
                bad = i; /* this thread's later indices are larger */
            ss = fmaf(v, v, ss);
        }
    }
    for (int64_t i = i0 + iw; i < dim; i += B) {
        const float v = fmaf(1.0f, yr[i], xr[i]);
        xr[i] = v;
        if (bad < 0 && !isfinite(v))
            bad = i;
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
        float *br = xb + blockIdx.x * dim, *bp = br + i0;
#pragma unroll
        for (int r = 0; r < MKC_NORM_R; r++)
            if (i0 + (int64_t)r * B < dim) {
                float v = xv[r] * inv;
                if (g)
                    v = v * gv[r];
                bp[r * B] = v;
            }
        for (int64_t i = i0 + iw; i < dim; i += B) {
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
 * normed, then rotated as k_rope does, through shared memory (a pair's two
 * values are two threads'). Thread t's element t stays in its registers
 * (hd <= blockDim: every element; wider heads keep the rest in shared
 * memory only). Before the wait for the previous kernel: the norm's weight
 * and the token's cos/sin (rotary tables are uploaded by a copy before the
 * step's kernels, which follow it in the stream, and no kernel writes
 * them: a recorded step's are uploaded before its replay). */
__global__ void __launch_bounds__(1024) k_qk_norm_rope(float *q, int nq, float *k, int nk, int hd, const float *qg,
                                                       const float *kg, float eps, int rot, const float *cos,
                                                       const float *sin) {
    MKC_DYN_SMEM(float, tmp);
    __shared__ float sh[32];
    const int nh = nq + nk;
    const int64_t t = blockIdx.x / nh;
    const int h = blockIdx.x % nh, half = rot / 2, i0 = threadIdx.x, B = blockDim.x;
    const float *g = h < nq ? qg : kg;
    const float *cs = cos + t * half, *sn = sin + t * half;
    const float g0 = g && i0 < hd ? g[i0] : 0.0f;
    const float c0 = i0 < half ? cs[i0] : 0.0f, s0 = i0 < half ? sn[i0] : 0.0f;
    mkc_pdl_enter();
    float *v = h < nq ? q + (t * nq + h) * hd : k + (t * nk + (h - nq)) * hd;
    float ss = 0.0f, a0 = 0.0f;
    if (i0 < hd) {
        a0 = v[i0];
        ss = fmaf(a0, a0, ss);
    }
    for (int i = i0 + B; i < hd; i += B) {
        const float a = v[i];
        tmp[i] = a;
        ss = fmaf(a, a, ss);
    }
    if (g) { /* uniform over the block: qg and kg are both given or both NULL */
        ss = mkb_block_sum(ss, sh);
        const float inv = 1.0f / sqrtf(ss / (float)hd + eps);
        float a = a0 * inv;
        a0 = a * g0;
        for (int i = i0 + B; i < hd; i += B) {
            a = tmp[i] * inv;
            a = a * g[i];
            tmp[i] = a;
        }
    }
    if (i0 < hd)
        tmp[i0] = a0;
    __syncthreads();
    if (i0 < half)
        mkc_rope_pair(a0, tmp[i0 + half], c0, s0, &v[i0], &v[i0 + half]);
    for (int i = i0 + B; i < half; i += B) {
        const float x0 = tmp[i], x1 = tmp[i + half];
        mkc_rope_pair(x0, x1, cs[i], sn[i], &v[i], &v[i + half]);
    }
    if (g) {
        if (i0 >= rot && i0 < hd)
            v[i0] = a0;
        for (int i = i0 + B; i < hd; i += B)
            if (i >= rot)
                v[i] = tmp[i];
    }
}

/* k_qk_norm_rope's rows a warp each, 8 a block (mk_cuda_set_qk_rows_warp;
 * rows = n (nq + nk), head dims up to 32 MKC_QKW_R): mkc_qk_head_warp on
 * the row in place (global memory; its warp barriers order the lanes'
 * stores and loads), bitwise k_qk_norm_rope's head (the attention fold's
 * proof, cli.cuda_emu_attn). Why: a prefill chunk's rows as one block each
 * (73728 blocks for 2048 tokens of the 30B shape) ran at ~400 GB/s, 91 us a
 * layer (ncu, session 35); a warp a row has no block barrier and 1/8 of
 * the blocks. The row's norm weights, cos and sin are loaded before the
 * wait (weights; the rotary rows were uploaded before the step). */
__global__ void __launch_bounds__(256) k_qk_norm_rope_w(float *q, int nq, float *k, int nk, int64_t rows, int hd,
                                                        const float *qg, const float *kg, float eps, int rot,
                                                        const float *cos, const float *sin) {
    const int lane = threadIdx.x & 31, nh = nq + nk;
    const int64_t row = (int64_t)blockIdx.x * 8 + (threadIdx.x >> 5);
    const bool live = row < rows;
    const int64_t t = live ? row / nh : 0;
    const int h = live ? (int)(row % nh) : 0;
    mkc_qkfold f = mkc_qkfold();
    f.cos = cos + t * (rot / 2);
    f.sin = sin + t * (rot / 2);
    f.rot = rot;
    mkc_qkw r;
    mkc_qkw_load(h < nq ? qg : kg, f, hd, lane, r);
    mkc_pdl_enter();
    if (!live)
        return;
    float *v = h < nq ? q + (t * nq + h) * hd : k + (t * nk + (h - nq)) * hd;
    mkc_qk_head_warp(v, hd, rot, eps, qg != nullptr, r, lane);
}

#endif
