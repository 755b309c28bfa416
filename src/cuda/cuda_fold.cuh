/* Small norm steps folded into the kernel that reads their result
 * (mk_cuda_set_norm_fold, docs/CUDA.md "Norm steps folded into their
 * readers"), each bitwise the launch it replaces:
 *
 * - the residual step (x += y, the deferred non-finite check of x, xb =
 *   rmsnorm(x) * g) into the q/k/v GEMV or the MoE router: every block of
 *   the reading kernel computes rmsnorm(x + y) * g into its shared memory
 *   in k_add_rmsnorm's order; the block that arrives last (a ticket taken
 *   after every block's last read of x and y) writes x + y to x, checks it,
 *   and writes xb for whoever reads it later;
 * - the attention's per-head q/k norm and RoPE (k_qk_norm_rope) into the
 *   decode attention: each block norms and rotates its query head, and the
 *   key head of the token's new row where it reads or writes it.
 *
 * A header of its own so that the host emulations (tests/emu/gemv_emu.cpp,
 * moe_emu.cpp, attn_emu.cpp) run this very code against the kernels it
 * replaces. The includer provides mkc_warp_sum (cuda_impl.cuh or the
 * emulation's emu_impl.h). */
#ifndef MK_CUDA_FOLD_CUH
#define MK_CUDA_FOLD_CUH

#include <stdint.h>
#include <string.h>

#include "cuda/mk_cuda.h"

struct mkc_addnorm {
    float *x;                /* the residual row, x + y once the launch ends; NULL: nothing folded */
    const float *y;          /* the block output added to it */
    const float *g;          /* the norm's weight (NULL: none) */
    float *xb;               /* rmsnorm(x + y) * g, written too */
    unsigned long long *key; /* the deferred check's finding (tag << 40 | index; ~0: none yet) */
    float *val;              /* and its value */
    unsigned *ticket;        /* the blocks' arrivals, 0 between launches (NULL: the kernel has its own) */
    unsigned long long tag;  /* the check's block tag */
    float eps;
    int32_t dim; /* the row's width */
    int32_t vt;  /* k_add_rmsnorm's threads for this width (mkc_norm_threads): its sum order */
};

/* Threads of a norm block (k_rmsnorm, k_add_rmsnorm, k_qk_norm_rope),
 * whose sum order the folds follow: one element per thread up to 1024. A
 * decode step's norm is one row, so its time is the chain of dependent
 * loads each thread walks: with 256 threads the 2048-wide residual norm
 * took 8.4 us on the H200 (ncu, bench/RESULTS.md 2026-12-03) and 4.2 us
 * with 1024; the 128-wide head norms took 2.9 us with one element per
 * thread and 3.7 us with two. */
static inline unsigned mkc_norm_threads(int64_t dim) {
    int64_t t = (dim + 31) / 32 * 32;
    return (unsigned)(t < 32 ? 32 : t > 1024 ? 1024 : t);
}

/* The kernels' form of f (host); false when a block of `threads` threads
 * cannot emulate the width's norm order (4 terms each at most) */
static inline bool mkc_addnorm_of(const mk_cuda_fold *f, unsigned threads, mkc_addnorm *a) {
    memset(a, 0, sizeof *a);
    const unsigned vt = mkc_norm_threads(f->dim);
    if (f->dim < 1 || f->dim > 0x7fffffff || f->tag < 0 || vt > 4 * threads || threads % 32)
        return false;
    a->x = f->x;
    a->y = f->y;
    a->g = f->g;
    a->xb = f->xb;
    a->key = f->key;
    a->val = f->val;
    a->ticket = f->ticket;
    a->tag = (unsigned long long)f->tag;
    a->eps = f->eps;
    a->dim = (int32_t)f->dim;
    a->vt = (int32_t)vt;
    return true;
}

/* Where element i of a staged row lives: as is, or (xpad 4) in the padded
 * layout of mkc_stage_pad (a float4 of padding after every 32 values) */
__device__ __forceinline__ int64_t mkc_an_at(int64_t i, int xpad) {
    return xpad ? i + ((i >> 5) << 2) : i;
}

/* The sum of squares of row v [n] (element i at mkc_an_at(i, xpad)) in
 * the order of a norm block of vt threads (k_rmsnorm, k_add_rmsnorm,
 * k_qk_norm_rope: thread t's terms t, t + vt, ... in order, then
 * mkb_block_sum's tree: each warp's butterfly, then the warp totals'), by
 * a block of any multiple of 32 threads with 4 * blockDim.x >= vt: each
 * real thread plays threads threadIdx.x + j * blockDim.x (j < 4). Every
 * thread gets it; red: 32 floats of shared memory; synchronises. */
__device__ __forceinline__ float mkc_sumsq_vt(const float *v, int64_t n, int xpad, int vt, float *red) {
    const int B = (int)blockDim.x, lane = (int)(threadIdx.x & 31), wp = (int)(threadIdx.x >> 5);
    const int nvw = vt >> 5;
    float ss[4];
#pragma unroll
    for (int j = 0; j < 4; j++) {
        ss[j] = 0.0f;
        if (j * B + (int)threadIdx.x < vt)
            for (int64_t i = (int64_t)threadIdx.x + (int64_t)j * B; i < n; i += vt) {
                const float a = v[mkc_an_at(i, xpad)];
                ss[j] = fmaf(a, a, ss[j]);
            }
    }
    __syncthreads(); /* red may still be read by a previous call */
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const int vw = wp + j * (B >> 5); /* uniform across the warp */
        if (vw < nvw) {
            const float s = mkc_warp_sum(ss[j]);
            if (lane == 0)
                red[vw] = s;
        }
    }
    __syncthreads();
    return mkc_warp_sum(lane < nvw ? red[lane] : 0.0f);
}

/* Elements of the row a thread of a folding block loads at once (x, y and
 * g of its first MKC_AN_R, then batches of MKC_AN_R): a decode step's
 * residual row is 2048 wide and the folding blocks have 256 threads, so
 * each thread has 8. Loaded one at a time, each load stored to shared or
 * global memory before the next (the compiler cannot move a load of x
 * past a store through another pointer), the 8 elements were 8 dependent
 * L2/DRAM round trips in the stage and 8 more in the finish: ~5 us a fold,
 * more than the launch the fold saves (sessions 22 and 31 measured the
 * folds 8-12% slower). */
#define MKC_AN_R 8

/* x and y of a thread's batch (elements i0 + r blockDim, r < MKC_AN_R,
 * below a.dim; 0 past it), every load issued before any is used */
__device__ __forceinline__ void mkc_an_load(const mkc_addnorm &a, int64_t i0, float *xv, float *yv) {
    const int64_t B = blockDim.x;
#pragma unroll
    for (int r = 0; r < MKC_AN_R; r++) {
        const int64_t i = i0 + r * B;
        xv[r] = i < a.dim ? a.x[i] : 0.0f;
        yv[r] = i < a.dim ? a.y[i] : 0.0f;
    }
}

/* dst = rmsnorm(x + y) * g, staged by the whole block, bitwise
 * k_add_rmsnorm's xb (its a.vt threads' order: mkc_sumsq_vt). red: 32
 * floats of shared memory. Reads x and y only here; ends with a barrier. */
__device__ __forceinline__ void mkc_addnorm_stage(const mkc_addnorm &a, float *dst, int xpad, float *red) {
    const int64_t B = blockDim.x, n = a.dim, w = (int64_t)MKC_AN_R * B;
    float gv[MKC_AN_R] = {}; /* g of the thread's first MKC_AN_R elements, loaded with them */
    for (int64_t i0 = threadIdx.x; i0 < n; i0 += w) { /* every load of a batch before its stores */
        float xv[MKC_AN_R], yv[MKC_AN_R];
        mkc_an_load(a, i0, xv, yv);
        if (i0 == (int64_t)threadIdx.x)
#pragma unroll
            for (int r = 0; r < MKC_AN_R; r++) {
                const int64_t i = i0 + r * B;
                gv[r] = i < n && a.g ? a.g[i] : 0.0f;
            }
#pragma unroll
        for (int r = 0; r < MKC_AN_R; r++) {
            const int64_t i = i0 + r * B;
            if (i < n)
                dst[mkc_an_at(i, xpad)] = fmaf(1.0f, yv[r], xv[r]); /* axpy's x + 1 * y */
        }
    }
    __syncthreads();
    const float tot = mkc_sumsq_vt(dst, n, xpad, a.vt, red);
    const float inv = 1.0f / sqrtf(tot / (float)n + a.eps);
    for (int64_t i0 = threadIdx.x; i0 < n; i0 += w) {
        float g[MKC_AN_R];
        const bool first = i0 == (int64_t)threadIdx.x;
#pragma unroll
        for (int r = 0; r < MKC_AN_R; r++) {
            const int64_t i = i0 + r * B;
            g[r] = first ? gv[r] : i < n && a.g ? a.g[i] : 0.0f;
        }
#pragma unroll
        for (int r = 0; r < MKC_AN_R; r++) {
            const int64_t i = i0 + r * B;
            if (i < n) {
                float v = dst[mkc_an_at(i, xpad)] * inv;
                if (a.g)
                    v = v * g[r];
                dst[mkc_an_at(i, xpad)] = v;
            }
        }
    }
    __syncthreads();
}

/* By the launch's last block (every block has staged, so read x and y for
 * the last time): x = x + y, checked (the lowest non-finite index and its
 * value kept unless an earlier check kept a finding: k_add_rmsnorm's one-row
 * protocol), and xb = the staged row. sbad: shared scratch. Ends with a
 * barrier. A batch's x and y are loaded before any of its stores
 * (MKC_AN_R). */
__device__ __forceinline__ void mkc_addnorm_finish(const mkc_addnorm &a, const float *dst, int xpad,
                                                   unsigned long long *sbad) {
    if (threadIdx.x == 0)
        *sbad = ~0ull;
    __syncthreads();
    const int64_t B = blockDim.x, n = a.dim, w = (int64_t)MKC_AN_R * B;
    int64_t bad = -1;
    for (int64_t i0 = threadIdx.x; i0 < n; i0 += w) {
        float xv[MKC_AN_R], yv[MKC_AN_R];
        mkc_an_load(a, i0, xv, yv);
#pragma unroll
        for (int r = 0; r < MKC_AN_R; r++) {
            const int64_t i = i0 + r * B;
            if (i < n) {
                const float v = fmaf(1.0f, yv[r], xv[r]);
                a.x[i] = v;
                if (bad < 0 && !isfinite(v))
                    bad = i; /* this thread's later indices are larger */
                if (a.xb)
                    a.xb[i] = dst[mkc_an_at(i, xpad)];
            }
        }
    }
    if (bad >= 0)
        atomicMin(sbad, (unsigned long long)bad);
    __syncthreads(); /* sbad final, x written */
    if (threadIdx.x == 0 && *sbad != ~0ull && *a.key == ~0ull) {
        *a.val = a.x[*sbad];
        *a.key = a.tag << 40 | *sbad;
    }
    __syncthreads();
}

/* The rotation of one pair (k_rope, k_qk_norm_rope and the fold share it).
 * On the device the fused products are spelled out, as the compilers had
 * formed them from x0 c - x1 s and x1 c + x0 s in every user (x0 c fused
 * by ptxas, x1 c by nvcc): left to them, which product is fused depends on
 * the code around (with c and s loaded before the wait, nvcc fused x0 s
 * in k_qk_norm_rope: other bits). */
__device__ __forceinline__ void mkc_rope_pair(float x0, float x1, float c, float s, float *o0, float *o1) {
#ifdef MK_CUDA_EMU
    *o0 = x0 * c - x1 * s;
    *o1 = x1 * c + x0 * s;
#else
    *o0 = __fmaf_rn(x0, c, -__fmul_rn(x1, s));
    *o1 = __fmaf_rn(x1, c, __fmul_rn(x0, s));
#endif
}

/* The q/k norm and RoPE of one head folded into the attention: the norms'
 * weights (both or neither), the token's cos/sin rows, rot_dim, and the
 * order of k_qk_norm_rope's sum (vt: mkc_norm_threads(head dim)). on 0:
 * nothing folded. */
struct mkc_qkfold {
    const float *qg, *kg, *cos, *sin;
    float eps;
    int rot, vt, on;
    unsigned *kt; /* per kv head, 0 between launches: the blocks that have read its raw new row */
};

/* Head row src [hd] (a raw q or k projection) into dst (shared memory),
 * RMS-normed with g when given, then rotated: bitwise k_qk_norm_rope's
 * result for that head. red: 32 floats of shared memory. Synchronises;
 * every thread of the block calls it. */
__device__ __forceinline__ void mkc_qk_head(const mkc_qkfold &f, const float *src, const float *g, float *dst,
                                            int hd, float *red) {
    for (int i = threadIdx.x; i < hd; i += blockDim.x)
        dst[i] = src[i];
    __syncthreads();
    if (g) { /* uniform: both norms or neither */
        const float ss = mkc_sumsq_vt(dst, hd, 0, f.vt, red);
        const float inv = 1.0f / sqrtf(ss / (float)hd + f.eps);
        for (int i = threadIdx.x; i < hd; i += blockDim.x) {
            float a = dst[i] * inv;
            a = a * g[i];
            dst[i] = a;
        }
        __syncthreads();
    }
    const int half = f.rot / 2;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        const float x0 = dst[i], x1 = dst[i + half];
        mkc_rope_pair(x0, x1, f.cos[i], f.sin[i], &dst[i], &dst[i + half]);
    }
    __syncthreads();
}

/* The q/k norm and RoPE of one head by one warp (the grouped decode
 * attention's fold, k_attn_gqa<.., true>): a lane's registers, loaded
 * before the wait for the previous kernel (norm weights and the step's
 * rotary rows do not depend on it): g of dims lane + 32 i, cos and sin of
 * pairs lane + 32 i. Head dims up to 32 MKC_QKW_R (AGQ_MAX_DIM). */
#define MKC_QKW_R 8
struct mkc_qkw {
    float g[MKC_QKW_R], c[MKC_QKW_R / 2], s[MKC_QKW_R / 2];
};

__device__ __forceinline__ void mkc_qkw_load(const float *g, const mkc_qkfold &f, int hd, int lane, mkc_qkw &r) {
    const int half = f.rot / 2;
#pragma unroll
    for (int i = 0; i < MKC_QKW_R; i++) {
        const int d = lane + 32 * i;
        r.g[i] = g && d < hd ? g[d] : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < MKC_QKW_R / 2; i++) {
        const int d = lane + 32 * i;
        r.c[i] = d < half ? f.cos[d] : 0.0f;
        r.s[i] = d < half ? f.sin[d] : 0.0f;
    }
}

/* Head row v [hd] in shared memory (a raw q or k projection), in place, by
 * one warp: RMS-normed with r's g when norm, then rotated; bitwise
 * k_qk_norm_rope's head. Its block of vt = mkc_norm_threads(hd) threads
 * sums thread t's square (t < hd), each warp's butterfly, then the warp
 * totals' butterfly (mkb_block_sum): here lane l's dim l + 32 i is that
 * block's thread l of warp i, so the same sums in the same order. No
 * block barrier: the warp's own row; ends with a warp barrier. */
__device__ __forceinline__ void mkc_qk_head_warp(float *v, int hd, int rot, float eps, bool norm, const mkc_qkw &r,
                                                 int lane) {
    float a[MKC_QKW_R];
#pragma unroll
    for (int i = 0; i < MKC_QKW_R; i++) {
        const int d = lane + 32 * i;
        a[i] = d < hd ? v[d] : 0.0f;
    }
    if (norm) { /* uniform */
        const int nvw = (hd + 31) >> 5; /* the block's warps (mkc_norm_threads(hd) / 32) */
        float t = 0.0f;
#pragma unroll
        for (int i = 0; i < MKC_QKW_R; i++) {
            if (i >= nvw)
                break;
            const float s = mkc_warp_sum(lane + 32 * i < hd ? fmaf(a[i], a[i], 0.0f) : 0.0f);
            if (lane == i)
                t = s;
        }
        const float tot = mkc_warp_sum(t);
        const float inv = 1.0f / sqrtf(tot / (float)hd + eps);
#pragma unroll
        for (int i = 0; i < MKC_QKW_R; i++) {
            const int d = lane + 32 * i;
            float x = a[i] * inv;
            x = x * r.g[i];
            if (d < hd)
                v[d] = x;
        }
        __syncwarp();
    }
    const int half = rot / 2;
#pragma unroll
    for (int i = 0; i < MKC_QKW_R / 2; i++) {
        const int d = lane + 32 * i;
        if (d < half) {
            const float x0 = v[d], x1 = v[d + half];
            mkc_rope_pair(x0, x1, r.c[i], r.s[i], &v[d], &v[d + half]);
        }
    }
    __syncwarp();
}

/* Stage, take the launch's ticket (a.ticket; after the stage's barrier, so
 * after every read of x and y in this block), and finish when last. Every
 * block of the launch must call it. */
__device__ __forceinline__ void mkc_addnorm_run(const mkc_addnorm &a, float *dst, int xpad) {
    __shared__ float red[32];
    __shared__ unsigned long long sbad;
    __shared__ bool last;
    mkc_addnorm_stage(a, dst, xpad, red);
    if (threadIdx.x == 0)
        last = atomicAdd(a.ticket, 1u) == gridDim.x - 1;
    __syncthreads();
    if (!last)
        return;
    mkc_addnorm_finish(a, dst, xpad, &sbad);
    if (threadIdx.x == 0)
        *a.ticket = 0u; /* ready for the next launch (stream order) */
}

#endif
