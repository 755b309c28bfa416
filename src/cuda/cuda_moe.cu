/* The fused MoE decode step for one token (mk_cuda_moe_step): three
 * kernels, no host round trip, so a whole decode step can be captured in a
 * CUDA graph.
 *
 *   k_router   one warp per router row (plus one for the shared expert's
 *              gate row): logits[E] and the shared-gate logit. The last
 *              block to finish (an atomic ticket; the counter resets itself
 *              for the next launch) scores the logits (softmax or sigmoid,
 *              the latter with DeepSeek-V3's selection bias and group
 *              limit), ranks them (rank_i = #{j: s_j > s_i or s_j == s_i and j < i},
 *              the CPU engine's lowest-index-first top-k), normalises the k
 *              weights and writes idx[k], w[k] to device memory.
 *   k_gateup   one warp per (selected expert, intermediate row) and per
 *              shared-expert row: gate and up rows together (x loaded once),
 *              h = silu(gate x) * up x.
 *   k_down     one warp per output row: the k experts' down rows against
 *              their h, weighted, plus the shared expert's down row times
 *              sigmoid(shared gate logit); y = that (or y += that).
 * The routing never leaves the device; mk_cuda_moe_routing copies it out
 * for tests and --verify only. */
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_impl.cuh"
#include "cuda/cuda_route_block.cuh"

#define MOE_WARPS 8

struct mk_cuda_moe_ws {
    void *base;
    float *logits; /* E + 1 (the last: shared-gate logit) */
    int32_t *idx;  /* k */
    int32_t *loc;  /* k: the VRAM cache slot of each chosen expert, or -1 (with a cache) */
    float *w;      /* k */
    float *h;      /* k * I */
    float *hs;     /* Is */
    unsigned *ticket;
    int64_t E, k, I, Is;
};

/* ---- kernels ------------------------------------------------------------ */

/* Programmatic dependent launch (when launched with the attribute; no-ops
 * otherwise): wait until the previous kernel in the stream has completed
 * and its writes are visible, then let the next kernel be launched, so its
 * launch and block set-up overlap this kernel's run. Waiting first keeps
 * every read after the producer's writes, transitively across kernels. */
__device__ __forceinline__ void mkc_pdl_enter(void) {
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

struct moe_args {
    mkc_w router, sgw, gate, up, down, shg, shu, shd;
    mkc_w cgate, cup, cdown;  /* the VRAM cache's slots (with slot_of) */
    const int32_t *slot_of;   /* expert -> cache slot or -1; NULL: no cache */
    int32_t *counts;          /* routing counts per expert, or NULL */
    int32_t E, k, I, Is, H;
    int32_t has_shared, has_sg, score, norm;
    float scale;
    const float *bias; /* the routing's selection bias, or NULL */
    int32_t G, TG;     /* its group limit (1: none) */
};

/* A router (or shared-gate) row of an affine kind with at most 32
 * ROUTER_U chunks: loaded before the wait, summed after it. */
#define ROUTER_U 4

template <int BITS, int SD>
__device__ __forceinline__ float router_row(const mkc_w &w, int64_t row, const float *x, int lane) {
    mkc_primed<ROUTER_U> p;
    mkc_prime<BITS, SD, ROUTER_U>(w, row, lane, p);
    mkc_pdl_enter();
    return mkc_primed_dot<BITS, ROUTER_U>(p, w.row_bytes / 16, x, lane);
}

__global__ void __launch_bounds__(MOE_WARPS * 32)
    k_router(const moe_args a, const float *__restrict__ x, float *logits, int32_t *idx, float *w,
             unsigned *ticket, int32_t *loc) {
    __shared__ bool last;
    const int lane = threadIdx.x & 31;
    const int64_t t = (int64_t)blockIdx.x * MOE_WARPS + (threadIdx.x >> 5);
    if (t < a.E + a.has_sg) {
        const mkc_w &rw = t < a.E ? a.router : a.sgw;
        const int64_t row = t < a.E ? t : 0;
        float acc = 0.0f;
        /* the row's weights are loaded before waiting for x (they do not
         * depend on the previous kernel): under programmatic dependent launch
         * their latency overlaps the previous kernel's end */
        const bool primed = mkc_is_aff(rw.kind) && rw.row_bytes / 16 <= 32 * ROUTER_U;
        if (primed) {
            switch (rw.kind) {
            case MKC_A4_F32: acc = router_row<4, 0>(rw, row, x, lane); break;
            case MKC_A4_BF16: acc = router_row<4, 1>(rw, row, x, lane); break;
            case MKC_A4_F16: acc = router_row<4, 2>(rw, row, x, lane); break;
            case MKC_A8_F32: acc = router_row<8, 0>(rw, row, x, lane); break;
            case MKC_A8_BF16: acc = router_row<8, 1>(rw, row, x, lane); break;
            default: acc = router_row<8, 2>(rw, row, x, lane); break;
            }
        } else {
            mkc_pdl_enter();
            const mkc_w *ws[1] = {&rw};
            const int64_t rows[1] = {row};
            const float *xs[1] = {x};
            mkc_dot_rows<1, true>(ws, rows, xs, lane, &acc);
        }
        float v = mkc_warp_sum(acc);
        if (lane == 0) {
            logits[t] = v;
            __threadfence(); /* the writer publishes before the block's ticket */
        }
    } else {
        mkc_pdl_enter();
    }
    /* last block in: all logits are in device memory */
    __syncthreads();
    if (threadIdx.x == 0)
        last = atomicAdd(ticket, 1u) == gridDim.x - 1;
    __syncthreads();
    if (!last)
        return;
    __threadfence();
    route_block(logits, a.E, a.k, a.score, a.norm, a.scale, a.bias, a.G, a.TG, idx, w, a.slot_of, loc, a.counts);
    if (threadIdx.x == 0)
        *ticket = 0u; /* ready for the next launch (stream order) */
}

__device__ __forceinline__ float silu_mul(float g, float u) {
    return g / (1.0f + expf(-g)) * u;
}

/* P (kernel generation 2): pipelined row loads (mkc_dot_aff_p). A register
 * cap for 3 blocks per SM (one wave for the 3072 warps of the Qwen3-30B-A3B
 * shape) made ptxas spill 1.3 KB per thread, so the cap stays as it was. */
template <bool P, bool C>
__global__ void __launch_bounds__(MOE_WARPS * 32)
    k_gateup(const moe_args a, const float *__restrict__ xg, const int32_t *__restrict__ idx,
             float *__restrict__ h, float *__restrict__ hs, int staged, const int32_t *__restrict__ loc) {
    extern __shared__ float4 mkc_sm4[];
    mkc_pdl_enter();
    const float *x = xg;
    int xpad = 0;
    if (staged) { /* x is read by every warp: once into shared memory (2: padded, mkc_xi) */
        xpad = staged == 2 ? 4 : 0;
        if (xpad)
            mkc_stage_pad((float *)mkc_sm4, xg, a.H);
        else
            mkc_stage((float *)mkc_sm4, xg, a.H);
        __syncthreads();
        x = (const float *)mkc_sm4;
    }
    /* a warp takes two consecutive intermediate rows (inter and
     * shared_inter are even, so a pair never straddles two experts): four
     * rows' loads in flight at once, sharing x */
    const int lane = threadIdx.x & 31;
    const int64_t r0 = 2 * ((int64_t)blockIdx.x * MOE_WARPS + (threadIdx.x >> 5));
    const int64_t nr = (int64_t)a.k * a.I, ntot = nr + (a.has_shared ? a.Is : 0);
    if (r0 >= ntot)
        return;
    const float *xs[4] = {x, x, x, x};
    const bool routed = r0 < nr;
    int64_t row;
    bool cached = false; /* C: the expert's rows from the VRAM cache (slot for expert) */
    if (routed) {
        const int32_t j = (int32_t)r0 / a.I, r = (int32_t)r0 - j * a.I;
        int32_t e = __ldg(idx + j);
        if constexpr (C) {
            const int32_t sl = __ldg(loc + j);
            if (sl >= 0) {
                e = sl;
                cached = true;
            }
        }
        row = (int64_t)e * a.I + r;
    } else {
        row = r0 - nr;
    }
    const mkc_w *G = routed ? (cached ? &a.cgate : &a.gate) : &a.shg;
    const mkc_w *U = routed ? (cached ? &a.cup : &a.up) : &a.shu;
    const mkc_w *ws[4] = {G, U, G, U};
    const int64_t rows[4] = {row, row, row + 1, row + 1};
    float acc[4];
    mkc_dot_rows<4, true, P>(ws, rows, xs, lane, acc, xpad);
    const float g0 = mkc_warp_sum(acc[0]), u0 = mkc_warp_sum(acc[1]);
    const float g1 = mkc_warp_sum(acc[2]), u1 = mkc_warp_sum(acc[3]);
    if (lane == 0) {
        float *out = routed ? h + r0 : hs + (r0 - nr);
        out[0] = silu_mul(g0, u0);
        out[1] = silu_mul(g1, u1);
    }
}

template <bool C>
__global__ void __launch_bounds__(MOE_WARPS * 32, 2)
    k_down(const moe_args a, const int32_t *__restrict__ idx, const float *__restrict__ wt,
           const float *__restrict__ hg, const float *__restrict__ hsg, const float *__restrict__ logits,
           float *__restrict__ y, int accumulate, int staged, const int32_t *__restrict__ loc) {
    extern __shared__ float4 mkc_sm4[];
    mkc_pdl_enter();
    const float *h = hg, *hs = hsg;
    if (staged) { /* the k expert activations (and the shared one) into shared memory */
        const int64_t nh = (int64_t)a.k * a.I;
        mkc_stage((float *)mkc_sm4, hg, nh);
        if (a.has_shared)
            mkc_stage((float *)mkc_sm4 + nh, hsg, a.Is);
        __syncthreads();
        h = (const float *)mkc_sm4;
        hs = h + nh;
    }
    const int lane = threadIdx.x & 31;
    const int64_t o = (int64_t)blockIdx.x * MOE_WARPS + (threadIdx.x >> 5);
    if (o >= a.H)
        return;
    float tot = 0.0f;
    /* eight experts' rows per pass: all their loads in flight at once */
    for (int j0 = 0; j0 < a.k; j0 += 8) {
        const mkc_w *ws[8] = {&a.down, &a.down, &a.down, &a.down, &a.down, &a.down, &a.down, &a.down};
        int64_t rows[8];
        const float *xs[8];
        float wj[8];
#pragma unroll
        for (int q = 0; q < 8; q++) {
            const int j = j0 + q < a.k ? j0 + q : a.k - 1; /* pad with a weight-0 repeat */
            int32_t e = __ldg(idx + j);
            if constexpr (C) {
                const int32_t sl = __ldg(loc + j);
                if (sl >= 0) {
                    e = sl;
                    ws[q] = &a.cdown;
                }
            }
            rows[q] = (int64_t)e * a.H + o;
            xs[q] = h + (int64_t)j * a.I;
            wj[q] = j0 + q < a.k ? __ldg(wt + j) : 0.0f;
        }
        float acc[8];
        mkc_dot_rows<8, false>(ws, rows, xs, lane, acc);
#pragma unroll
        for (int q = 0; q < 8; q++)
            tot = fmaf(wj[q], acc[q], tot);
    }
    if (a.has_shared) {
        const mkc_w *ws[1] = {&a.shd};
        const int64_t rows[1] = {o};
        const float *xs[1] = {hs};
        float acc[1];
        mkc_dot_rows<1, false>(ws, rows, xs, lane, acc);
        const float g = a.has_sg ? 1.0f / (1.0f + expf(-__ldg(logits + a.E))) : 1.0f;
        tot = fmaf(g, acc[0], tot);
    }
    tot = mkc_warp_sum(tot);
    if (lane == 0)
        y[o] = accumulate ? y[o] + tot : tot;
}

/* k_down, generation 2, affine formats only: one warp per output row o, but
 * the lanes are spread over (expert, chunk) pairs rather than over one
 * row's chunks, so every lane is busy (with I = 768 a down row is 24 chunks
 * and k_down left 8 of 32 lanes idle) and each lane has all its loads in
 * flight before the first use: task t = j * nc + c (expert j < k, chunk c
 * of nc = down row chunks), then the shared expert's chunks; DOWN2_T tasks
 * per lane per pass. Each task adds wt[j] * (its chunk's affine term) to
 * the lane's sum; the warp sums the lanes. The routing (idx, weights) is
 * staged in shared memory with h. */
#define DOWN2_T 8

/* One pass of a lane's down tasks (t0 + 32 i + lane, i < DOWN2_T): the
 * weights, scales and biases in registers, with each task's routing weight
 * and the logical offset of its h values (hs: the shared expert's). */
struct down2_pass {
    uint4 qq[DOWN2_T];
    float sc[DOWN2_T], bi[DOWN2_T], wj[DOWN2_T];
    int32_t xl[DOWN2_T];
    bool sh[DOWN2_T];
};

template <int BITS, int SD, bool C>
__device__ __forceinline__ void down2_load(const moe_args &a, const int32_t *sidx, const int32_t *sloc,
                                           const float *sw, float sg, int64_t o, int lane, int t0, down2_pass &p) {
    constexpr int VPC = 128 / BITS;
    const int nc = (int)(a.down.row_bytes / 16), ncs = a.has_shared ? (int)(a.shd.row_bytes / 16) : 0;
    const int nr = a.k * nc, ntask = nr + ncs;
#pragma unroll
    for (int i = 0; i < DOWN2_T; i++) {
        const int t = t0 + 32 * i + lane;
        p.wj[i] = 0.0f;
        p.xl[i] = 0;
        p.sh[i] = false;
        if (t < ntask) {
            int64_t row, c;
            bool cached = false; /* C: the expert's rows from the VRAM cache */
            if (t < nr) {
                const int j = t / nc;
                c = t - j * nc;
                int32_t e = sidx[j];
                if constexpr (C) {
                    if (sloc[j] >= 0) {
                        e = sloc[j];
                        cached = true;
                    }
                }
                row = (int64_t)e * a.H + o;
                p.wj[i] = sw[j];
                p.xl[i] = (int32_t)(j * a.I + c * VPC);
            } else {
                c = t - nr;
                row = o;
                p.wj[i] = sg;
                p.xl[i] = (int32_t)(c * VPC);
                p.sh[i] = true;
            }
            const mkc_w &w = t < nr ? (cached ? a.cdown : a.down) : a.shd;
            const int64_t g = row * w.ng + ((c * VPC) >> w.gshift);
            p.qq[i] = mkc_ldw(w.data + row * w.row_bytes + c * 16);
            p.sc[i] = mkc_lds<SD>(w.scales, g);
            p.bi[i] = mkc_lds<SD>(w.biases, g);
        }
    }
}

template <int BITS>
__device__ __forceinline__ float down2_use(const down2_pass &p, int ntask, int t0, int lane, const float *h,
                                           const float *hs, int xpad, float tot) {
    constexpr int VPC = 128 / BITS;
#pragma unroll
    for (int i = 0; i < DOWN2_T; i++) {
        if (t0 + 32 * i + lane < ntask) {
            float xv[VPC];
            mkc_ldx((p.sh[i] ? hs : h) + mkc_xi(p.xl[i], xpad), VPC / 4, xv);
            const float xs = mkc_sum<VPC>(xv);
            tot = fmaf(p.wj[i], mkc_aff_term<BITS>(p.qq[i], xv, xs, p.sc[i], p.bi[i]), tot);
        }
    }
    return tot;
}

/* The kernel after the routing is staged: the first pass's weights are
 * loaded before griddepcontrol.wait (they depend on the routing, which the
 * router kernel wrote before k_gateup, this kernel's predecessor, passed its
 * own wait; not on h), then h is staged and the passes are summed. */
template <int BITS, int SD, bool C>
__device__ __forceinline__ void down2_run(const moe_args &a, const int32_t *sidx, const int32_t *sloc, const float *sw,
                                          float sg, const float *hg, const float *hsg, float *y, int accumulate,
                                          int staged) {
    extern __shared__ float4 mkc_sm4[];
    const int lane = threadIdx.x & 31;
    const int64_t o = (int64_t)blockIdx.x * MOE_WARPS + (threadIdx.x >> 5);
    const int nc = (int)(a.down.row_bytes / 16), ncs = a.has_shared ? (int)(a.shd.row_bytes / 16) : 0;
    const int ntask = a.k * nc + ncs;
    down2_pass p;
    if (o < a.H)
        down2_load<BITS, SD, C>(a, sidx, sloc, sw, sg, o, lane, 0, p);
    mkc_pdl_enter();
    const float *h = hg, *hs = hsg;
    int xpad = 0;
    if (staged) { /* 2: the padded layout (mkc_xi; k*I and Is are whole 32-value blocks) */
        const int64_t nh = (int64_t)a.k * a.I;
        xpad = staged == 2 ? 4 : 0;
        const int64_t hs_at = xpad ? MKC_PADDED(nh) : nh;
        if (xpad) {
            mkc_stage_pad((float *)mkc_sm4, hg, nh);
            if (a.has_shared)
                mkc_stage_pad((float *)mkc_sm4 + hs_at, hsg, a.Is);
        } else {
            mkc_stage((float *)mkc_sm4, hg, nh);
            if (a.has_shared)
                mkc_stage((float *)mkc_sm4 + hs_at, hsg, a.Is);
        }
        h = (const float *)mkc_sm4;
        hs = h + hs_at;
    }
    __syncthreads();
    if (o >= a.H)
        return;
    float tot = 0.0f;
    for (int t0 = 0;;) {
        tot = down2_use<BITS>(p, ntask, t0, lane, h, hs, xpad, tot);
        t0 += 32 * DOWN2_T;
        if (t0 >= ntask)
            break;
        down2_load<BITS, SD, C>(a, sidx, sloc, sw, sg, o, lane, t0, p);
    }
    tot = mkc_warp_sum(tot);
    if (lane == 0)
        y[o] = accumulate ? y[o] + tot : tot;
}

template <bool C>
__global__ void __launch_bounds__(MOE_WARPS * 32, 2)
    k_down2(const moe_args a, const int32_t *__restrict__ idx, const float *__restrict__ wt,
            const float *__restrict__ hg, const float *__restrict__ hsg, const float *__restrict__ logits,
            float *__restrict__ y, int accumulate, int staged, const int32_t *__restrict__ loc) {
    __shared__ int32_t sidx[MOE_MAX_K];
    __shared__ int32_t sloc[C ? MOE_MAX_K : 1];
    __shared__ float sw[MOE_MAX_K];
    /* the routing and the shared gate's logit come from the router kernel,
     * complete before this grid was launched (see down2_run) */
    if (threadIdx.x < a.k) {
        sidx[threadIdx.x] = __ldg(idx + threadIdx.x);
        sw[threadIdx.x] = __ldg(wt + threadIdx.x);
        if constexpr (C)
            sloc[threadIdx.x] = __ldg(loc + threadIdx.x);
    }
    const float sg = a.has_sg ? 1.0f / (1.0f + expf(-__ldg(logits + a.E))) : 1.0f;
    __syncthreads();
    switch (a.down.kind) {
    case MKC_A4_F32: down2_run<4, 0, C>(a, sidx, sloc, sw, sg, hg, hsg, y, accumulate, staged); break;
    case MKC_A4_BF16: down2_run<4, 1, C>(a, sidx, sloc, sw, sg, hg, hsg, y, accumulate, staged); break;
    case MKC_A4_F16: down2_run<4, 2, C>(a, sidx, sloc, sw, sg, hg, hsg, y, accumulate, staged); break;
    case MKC_A8_F32: down2_run<8, 0, C>(a, sidx, sloc, sw, sg, hg, hsg, y, accumulate, staged); break;
    case MKC_A8_BF16: down2_run<8, 1, C>(a, sidx, sloc, sw, sg, hg, hsg, y, accumulate, staged); break;
    default: down2_run<8, 2, C>(a, sidx, sloc, sw, sg, hg, hsg, y, accumulate, staged); break;
    }
}

/* ---- host --------------------------------------------------------------- */

static mk_status want_shape(const mk_wt *w, const char *name, int64_t rows, int64_t cols) {
    if (w->rows != rows || w->cols != cols)
        return mk_err(MK_E_MISMATCH, "moe: %s must be [%lld, %lld], found [%lld, %lld]", name, (long long)rows,
                      (long long)cols, (long long)w->rows, (long long)w->cols);
    return MK_OK;
}

/* w's format is one the kernels take and, when ref is given, the same as ref's */
static mk_status want_kind(const mk_wt *w, const char *name, const mk_wt *ref) {
    int k = mkc_kind_of(w);
    if (k < 0) {
        mkc_w tmp;
        return mkc_view(w, name, &tmp);
    }
    if (k > MKC_F16 && !mkc_is_aff(k)) /* the GEMV takes FP8 and FP4; the step's kernels do not (yet) */
        return mk_err(MK_E_UNSUPPORTED, "moe: %s: the fused step takes f32, bf16, f16 and affine 4/8-bit "
                      "weights, found %s (the backend's general path runs it)", name,
                      mkc_is_fp8(k) ? "FP8 E4M3" : k == MKC_MX4 ? "MXFP4" : "NVFP4");
    if (ref && k != mkc_kind_of(ref))
        return mk_err(MK_E_UNSUPPORTED,
                      "moe: %s must have the routed experts' format (format %d, bits %d, group %d, scale dtype "
                      "%s), found format %d, bits %d, group %d, scale dtype %s",
                      name, (int)ref->fmt, ref->bits, ref->group, mk_dtype_name(ref->sdtype), (int)w->fmt, w->bits,
                      w->group, mk_dtype_name(w->sdtype));
    return MK_OK;
}

extern "C" mk_status mk_cuda_moe_check(const mk_cuda_moe *m) {
    if (m->hidden <= 0 || m->n_experts <= 0 || m->inter <= 0)
        return mk_err(MK_E_ARG, "moe: hidden, n_experts and inter must be positive, found %lld, %lld, %lld",
                      (long long)m->hidden, (long long)m->n_experts, (long long)m->inter);
    if (m->n_experts > MOE_MAX_E)
        return mk_err(MK_E_UNSUPPORTED, "moe: at most %d experts on the device, found %lld", MOE_MAX_E,
                      (long long)m->n_experts);
    if (m->top_k < 1 || m->top_k > MOE_MAX_K || m->top_k > m->n_experts)
        return mk_err(MK_E_UNSUPPORTED, "moe: top_k must be 1..min(%d, n_experts), found %lld", MOE_MAX_K,
                      (long long)m->top_k);
    if (m->score != MK_CUDA_SCORE_SOFTMAX && m->score != MK_CUDA_SCORE_SIGMOID)
        return mk_err(MK_E_ARG, "moe: unknown scoring %d", (int)m->score);
    const int G = m->n_group > 1 ? m->n_group : 1, TG = m->topk_group > 1 ? m->topk_group : 1;
    if (m->score != MK_CUDA_SCORE_SIGMOID && (m->sel_bias || G > 1))
        return mk_err(MK_E_ARG, "moe: a selection bias or group limit needs sigmoid scoring");
    if (G > MOE_MAX_G || m->n_experts % G || (G > 1 && m->n_experts / G < 2) || TG > G)
        return mk_err(MK_E_UNSUPPORTED, "moe: group-limited routing wants n_group <= %d dividing %lld experts "
                      "into groups of >= 2 and topk_group <= n_group, found n_group %d, topk_group %d",
                      MOE_MAX_G, (long long)m->n_experts, G, TG);
    if (m->sel_bias && ((uintptr_t)m->sel_bias & 3))
        return mk_err(MK_E_ARG, "moe: the selection bias must be 4-byte aligned device memory");
    const int64_t H = m->hidden, E = m->n_experts, I = m->inter, Is = m->shared_inter;
    if (I % 2 || (m->has_shared && Is % 2))
        return mk_err(MK_E_UNSUPPORTED, "moe: inter and shared_inter must be even (k_gateup does row pairs), "
                      "found %lld and %lld", (long long)I, (long long)Is);
    MK_TRY(want_shape(&m->router, "router", E, H));
    MK_TRY(want_shape(&m->gate, "experts' gate_proj", E * I, H));
    MK_TRY(want_shape(&m->up, "experts' up_proj", E * I, H));
    MK_TRY(want_shape(&m->down, "experts' down_proj", E * H, I));
    MK_TRY(want_kind(&m->router, "router", NULL));
    MK_TRY(want_kind(&m->gate, "experts' gate_proj", NULL));
    const mk_wt *kind = &m->gate;
    MK_TRY(want_kind(&m->up, "experts' up_proj", kind));
    MK_TRY(want_kind(&m->down, "experts' down_proj", kind));
    if (m->has_shared) {
        if (Is <= 0)
            return mk_err(MK_E_ARG, "moe: shared_inter must be positive, found %lld", (long long)Is);
        MK_TRY(want_shape(&m->sh_gate, "shared expert's gate_proj", Is, H));
        MK_TRY(want_shape(&m->sh_up, "shared expert's up_proj", Is, H));
        MK_TRY(want_shape(&m->sh_down, "shared expert's down_proj", H, Is));
        MK_TRY(want_kind(&m->sh_gate, "shared expert's gate_proj", kind));
        MK_TRY(want_kind(&m->sh_up, "shared expert's up_proj", kind));
        MK_TRY(want_kind(&m->sh_down, "shared expert's down_proj", kind));
    }
    if (m->has_shared_gate) {
        if (!m->has_shared)
            return mk_err(MK_E_ARG, "moe: a shared_expert_gate without a shared expert");
        MK_TRY(want_shape(&m->sh_gate_w, "shared_expert_gate", 1, H));
        MK_TRY(want_kind(&m->sh_gate_w, "shared_expert_gate", NULL));
    }
    if (m->slot_of) { /* a VRAM cache: slots stored exactly as the experts */
        const int64_t ns = m->cgate.rows / I;
        if (ns < 1 || m->cgate.rows % I)
            return mk_err(MK_E_MISMATCH, "moe: the expert cache's gate_proj must be [slots * %lld, %lld], found "
                          "[%lld, %lld]", (long long)I, (long long)H, (long long)m->cgate.rows,
                          (long long)m->cgate.cols);
        MK_TRY(want_shape(&m->cgate, "expert cache's gate_proj", ns * I, H));
        MK_TRY(want_shape(&m->cup, "expert cache's up_proj", ns * I, H));
        MK_TRY(want_shape(&m->cdown, "expert cache's down_proj", ns * H, I));
        const mk_wt *pairs[3][2] = {{&m->cgate, &m->gate}, {&m->cup, &m->up}, {&m->cdown, &m->down}};
        for (int p = 0; p < 3; p++) {
            const mk_wt *c = pairs[p][0], *w = pairs[p][1];
            if (c->fmt != w->fmt || c->bits != w->bits || c->group != w->group || c->sdtype != w->sdtype ||
                !c->scales != !w->scales || !c->biases != !w->biases)
                return mk_err(MK_E_MISMATCH, "moe: the expert cache's %s is not stored as the experts' (format "
                              "%d/%d bits/group %d vs %d/%d/%d)", p == 0 ? "gate_proj" : p == 1 ? "up_proj" : "down_proj",
                              (int)c->fmt, c->bits, c->group, (int)w->fmt, w->bits, w->group);
        }
        if ((uintptr_t)m->slot_of & 3)
            return mk_err(MK_E_ARG, "moe: the expert cache's slot map must be 4-byte aligned device memory");
    }
    if (m->counts && ((uintptr_t)m->counts & 3))
        return mk_err(MK_E_ARG, "moe: the routing counts must be 4-byte aligned device memory");
    return MK_OK;
}

static size_t al16(size_t n) {
    return (n + 15) & ~(size_t)15;
}

extern "C" mk_status mk_cuda_moe_ws_new(const mk_cuda_moe *m, mk_cuda_moe_ws **out) {
    *out = NULL;
    MK_TRY(mk_cuda_moe_check(m));
    mk_cuda_moe_ws *ws = (mk_cuda_moe_ws *)calloc(1, sizeof *ws);
    if (!ws)
        return mk_err(MK_E_NOMEM, "moe: workspace");
    ws->E = m->n_experts;
    ws->k = m->top_k;
    ws->I = m->inter;
    ws->Is = m->has_shared ? m->shared_inter : 0;
    const size_t o_log = 0, o_idx = o_log + al16((size_t)(ws->E + 1) * 4), o_loc = o_idx + al16((size_t)ws->k * 4),
                 o_w = o_loc + al16((size_t)ws->k * 4), o_h = o_w + al16((size_t)ws->k * 4), o_hs = o_h + al16((size_t)(ws->k * ws->I) * 4),
                 o_t = o_hs + al16((size_t)(ws->Is ? ws->Is : 1) * 4), total = o_t + 16;
    mk_status st = mk_cuda_malloc(&ws->base, total, "moe workspace");
    if (st == MK_OK)
        st = mk_cuda_memset(ws->base, 0, total);
    if (st != MK_OK) {
        mk_cuda_free(ws->base);
        free(ws);
        return st;
    }
    char *b = (char *)ws->base;
    ws->logits = (float *)(b + o_log);
    ws->idx = (int32_t *)(b + o_idx);
    ws->loc = (int32_t *)(b + o_loc);
    ws->w = (float *)(b + o_w);
    ws->h = (float *)(b + o_h);
    ws->hs = (float *)(b + o_hs);
    ws->ticket = (unsigned *)(b + o_t);
    *out = ws;
    return MK_OK;
}

extern "C" void mk_cuda_moe_ws_free(mk_cuda_moe_ws *ws) {
    if (!ws)
        return;
    mk_cuda_free(ws->base);
    free(ws);
}

static unsigned nblocks(int64_t tasks) {
    return (unsigned)((tasks + MOE_WARPS - 1) / MOE_WARPS);
}

/* launch one kernel, with the programmatic-dependent-launch attribute when pdl */
template <typename... KA, typename... A>
static cudaError_t launch(void (*k)(KA...), unsigned grid, size_t smem, cudaStream_t s, bool pdl, A... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(grid);
    cfg.blockDim = dim3(MOE_WARPS * 32);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = pdl ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, k, args...);
}

/* moe_args of one layer (views checked) */
static mk_status moe_args_of(const mk_cuda_moe *m, moe_args *a) {
    memset(a, 0, sizeof *a);
    MK_TRY(mkc_view(&m->router, "router", &a->router));
    MK_TRY(mkc_view(&m->gate, "experts' gate_proj", &a->gate));
    MK_TRY(mkc_view(&m->up, "experts' up_proj", &a->up));
    MK_TRY(mkc_view(&m->down, "experts' down_proj", &a->down));
    if (m->has_shared) {
        MK_TRY(mkc_view(&m->sh_gate, "shared expert's gate_proj", &a->shg));
        MK_TRY(mkc_view(&m->sh_up, "shared expert's up_proj", &a->shu));
        MK_TRY(mkc_view(&m->sh_down, "shared expert's down_proj", &a->shd));
    }
    if (m->has_shared_gate)
        MK_TRY(mkc_view(&m->sh_gate_w, "shared_expert_gate", &a->sgw));
    a->E = (int32_t)m->n_experts;
    a->k = (int32_t)m->top_k;
    a->I = (int32_t)m->inter;
    a->Is = m->has_shared ? (int32_t)m->shared_inter : 0;
    a->H = (int32_t)m->hidden;
    a->has_shared = m->has_shared;
    a->has_sg = m->has_shared_gate;
    a->score = m->score;
    a->norm = m->norm_topk;
    a->scale = m->scale;
    a->bias = m->sel_bias;
    a->G = m->n_group > 1 ? m->n_group : 1;
    a->TG = m->topk_group > 1 ? m->topk_group : 1;
    if (m->slot_of) {
        MK_TRY(mkc_view(&m->cgate, "expert cache's gate_proj", &a->cgate));
        MK_TRY(mkc_view(&m->cup, "expert cache's up_proj", &a->cup));
        MK_TRY(mkc_view(&m->cdown, "expert cache's down_proj", &a->cdown));
        a->slot_of = m->slot_of;
    }
    a->counts = m->counts;
    return MK_OK;
}

mk_status mkc_moe_launch(const mk_cuda_moe *m, mk_cuda_moe_ws *ws, const float *x, float *y, bool accumulate,
                         void *stream, unsigned parts, bool pdl) {
    moe_args a;
    if (ws->E != m->n_experts || ws->k != m->top_k || ws->I != m->inter ||
        ws->Is != (m->has_shared ? m->shared_inter : 0))
        return mk_err(MK_E_MISMATCH, "moe: workspace was made for another shape");
    /* x == y is fine: only k_router and k_gateup read x, k_down writes y after them */
    if (((uintptr_t)x & 15) != 0)
        return mk_err(MK_E_ARG, "moe: x must be 16-byte aligned device memory");
    MK_TRY(moe_args_of(m, &a));
    cudaStream_t s = (cudaStream_t)stream;
    if (parts & 1)
        MKC_TRY(launch(k_router, nblocks(a.E + a.has_sg), 0, s, pdl, a, x, ws->logits, ws->idx, ws->w, ws->ticket,
                       ws->loc),
                "launching the router");
    /* x and h staged in shared memory when they fit and are whole float4s
     * (h: each expert's slice must start 16-byte aligned too) */
    const bool sx = a.H % 4 == 0 && (int64_t)a.H * 4 <= MKC_SMEM_MAX;
    const int64_t nh = (int64_t)a.k * a.I + a.Is;
    const bool sh = a.I % 4 == 0 && a.Is % 4 == 0 && nh * 4 <= MKC_SMEM_MAX;
    const bool v2 = mkc_variant() >= 2;
    /* generation 2, affine: x and h in the padded layout (mkc_xi: no bank
     * conflicts between lanes) when whole 32-value blocks fit */
    const bool aff = mkc_is_aff(a.gate.kind);
    const bool px = v2 && aff && sx && a.H % 32 == 0 && MKC_PADDED((int64_t)a.H) * 4 <= MKC_SMEM_MAX;
    const bool ph = v2 && aff && sh && a.I % 32 == 0 && a.Is % 32 == 0 &&
                    (MKC_PADDED((int64_t)a.k * a.I) + MKC_PADDED((int64_t)a.Is)) * 4 <= MKC_SMEM_MAX;
    const size_t smx = px ? (size_t)MKC_PADDED((int64_t)a.H) * 4 : sx ? (size_t)a.H * 4 : 0;
    /* experts in a VRAM cache: the kernels that look up each expert's slot */
    const bool cc = a.slot_of != nullptr;
    if (parts & 2)
        MKC_TRY(launch(v2 ? (cc ? k_gateup<true, true> : k_gateup<true, false>)
                          : (cc ? k_gateup<false, true> : k_gateup<false, false>),
                       nblocks(((int64_t)a.k * a.I + a.Is) / 2), smx, s, pdl, a, x, (const int32_t *)ws->idx, ws->h,
                       ws->hs, px ? 2 : sx ? 1 : 0, (const int32_t *)ws->loc),
                "launching the experts' gate/up");
    /* k_down2 takes the affine formats (rows of whole 16-byte chunks) */
    const bool d2 = v2 && mkc_is_aff(a.down.kind);
    const bool pd = d2 && ph;
    const size_t smh = pd ? (size_t)(MKC_PADDED((int64_t)a.k * a.I) + MKC_PADDED((int64_t)a.Is)) * 4
                          : sh ? (size_t)nh * 4 : 0;
    if (parts & 4)
        MKC_TRY(launch(d2 ? (cc ? k_down2<true> : k_down2<false>) : (cc ? k_down<true> : k_down<false>), nblocks(a.H),
                       smh, s, pdl, a, (const int32_t *)ws->idx, (const float *)ws->w, (const float *)ws->h,
                       (const float *)ws->hs, (const float *)ws->logits, y, accumulate ? 1 : 0, pd ? 2 : sh ? 1 : 0,
                       (const int32_t *)ws->loc),
                "launching the experts' down");
    return MK_OK;
}

extern "C" mk_status mk_cuda_moe_step(const mk_cuda_moe *m, mk_cuda_moe_ws *ws, const float *x, float *y,
                                      bool accumulate, void *stream) {
    return mkc_moe_launch(m, ws, x, y, accumulate, stream, 7u, mk_cuda_moe_pdl());
}



extern "C" mk_status mk_cuda_moe_routing(const mk_cuda_moe_ws *ws, int32_t *idx, float *w) {
    MK_TRY(mk_cuda_sync());
    MK_TRY(mk_cuda_download(idx, ws->idx, (size_t)ws->k * sizeof *idx));
    MK_TRY(mk_cuda_download(w, ws->w, (size_t)ws->k * sizeof *w));
    return MK_OK;
}

extern "C" size_t mk_cuda_moe_bytes(const mk_cuda_moe *m) {
    size_t n = (size_t)m->n_experts * mk_cuda_wt_row_bytes_all(&m->router);
    const size_t I = (size_t)m->inter, H = (size_t)m->hidden, k = (size_t)m->top_k;
    n += k * I * (mk_cuda_wt_row_bytes_all(&m->gate) + mk_cuda_wt_row_bytes_all(&m->up));
    n += k * H * mk_cuda_wt_row_bytes_all(&m->down);
    if (m->has_shared) {
        const size_t Is = (size_t)m->shared_inter;
        n += Is * (mk_cuda_wt_row_bytes_all(&m->sh_gate) + mk_cuda_wt_row_bytes_all(&m->sh_up));
        n += H * mk_cuda_wt_row_bytes_all(&m->sh_down);
    }
    if (m->has_shared_gate)
        n += mk_cuda_wt_row_bytes_all(&m->sh_gate_w);
    return n;
}

/* ---- a whole MoE stack in one persistent kernel --------------------------- */

/* Grid-wide barrier for a co-resident grid (cooperative launch): arrive on
 * a counter, the last block bumps the generation; the others wait for it.
 * Fences order each block's writes before the arrival and the waiters'
 * reads after it. */
__device__ __forceinline__ void grid_barrier(unsigned *count, unsigned *gen) {
    __syncthreads();
    if (threadIdx.x == 0) {
        volatile unsigned *vg = gen;
        const unsigned g = *vg;
        __threadfence();
        if (atomicAdd(count, 1u) == gridDim.x - 1) {
            *count = 0u;
            __threadfence();
            atomicAdd(gen, 1u);
        } else {
            while (*vg == g)
                __nanosleep(32);
        }
        __threadfence();
    }
    __syncthreads();
}

/* Copy n floats (n % 4 == 0) into shared memory through L2 (.cg): data
 * other blocks wrote in this same kernel must not come from a stale L1. */
__device__ __forceinline__ void stage_cg(float *dst, const float *src, int64_t n) {
    for (int64_t i = threadIdx.x; i < n / 4; i += blockDim.x)
        ((float4 *)dst)[i] = __ldcg((const float4 *)src + i);
}

struct stack_args {
    const moe_args *layers; /* device array */
    int32_t L;
    float *x, *logits, *w, *h, *hs;
    int32_t *idx;
    unsigned *bar; /* [0] count, [1] generation */
};

/* x += moe_l(x) for every layer: router rows, barrier, routing (every block
 * ranks the logits itself: no second barrier), gate/up row pairs, barrier,
 * down rows, barrier. Work is spread by global warp index with a stride of
 * the whole grid. x and h are staged in shared memory (the host checks
 * they fit). */
__global__ void __launch_bounds__(MOE_WARPS * 32, 2) k_stack(const stack_args s) {
    extern __shared__ float4 mkc_sm4[];
    float *sm = (float *)mkc_sm4;
    __shared__ int32_t r_idx[MOE_MAX_K];
    __shared__ float r_w[MOE_MAX_K];
    const int lane = threadIdx.x & 31;
    const int64_t gw = (int64_t)blockIdx.x * MOE_WARPS + (threadIdx.x >> 5);
    const int64_t nw = (int64_t)gridDim.x * MOE_WARPS;
    for (int l = 0; l < s.L; l++) {
        const moe_args &a = s.layers[l];
        /* 1. router logits (+ shared gate logit) */
        stage_cg(sm, s.x, a.H);
        __syncthreads();
        for (int64_t t = gw; t < a.E + a.has_sg; t += nw) {
            const mkc_w *ws[1] = {t < a.E ? &a.router : &a.sgw};
            const int64_t rows[1] = {t < a.E ? t : 0};
            const float *xs[1] = {sm};
            float acc[1];
            mkc_dot_rows<1, true>(ws, rows, xs, lane, acc);
            const float v = mkc_warp_sum(acc[0]);
            if (lane == 0)
                s.logits[t] = v;
        }
        grid_barrier(s.bar, s.bar + 1);
        /* 2. routing in every block; gate/up row pairs */
        route_block(s.logits, a.E, a.k, a.score, a.norm, a.scale, a.bias, a.G, a.TG, r_idx, r_w);
        __syncthreads();
        if (blockIdx.x == 0 && threadIdx.x < a.k) { /* for mk_cuda_moe_routing */
            s.idx[threadIdx.x] = r_idx[threadIdx.x];
            s.w[threadIdx.x] = r_w[threadIdx.x];
        }
        const int64_t nr = (int64_t)a.k * a.I, ntot = nr + (a.has_shared ? a.Is : 0);
        for (int64_t p = gw; 2 * p < ntot; p += nw) {
            const int64_t r0 = 2 * p;
            const bool routed = r0 < nr;
            int64_t row;
            if (routed) {
                const int32_t j = (int32_t)r0 / a.I, r = (int32_t)r0 - j * a.I;
                row = (int64_t)r_idx[j] * a.I + r;
            } else {
                row = r0 - nr;
            }
            const mkc_w *G = routed ? &a.gate : &a.shg, *U = routed ? &a.up : &a.shu;
            const mkc_w *ws[4] = {G, U, G, U};
            const int64_t rows[4] = {row, row, row + 1, row + 1};
            const float *xs[4] = {sm, sm, sm, sm};
            float acc[4];
            mkc_dot_rows<4, true>(ws, rows, xs, lane, acc);
            const float g0 = mkc_warp_sum(acc[0]), u0 = mkc_warp_sum(acc[1]);
            const float g1 = mkc_warp_sum(acc[2]), u1 = mkc_warp_sum(acc[3]);
            if (lane == 0) {
                float *out = routed ? s.h + r0 : s.hs + (r0 - nr);
                out[0] = silu_mul(g0, u0);
                out[1] = silu_mul(g1, u1);
            }
        }
        grid_barrier(s.bar, s.bar + 1);
        /* 3. down rows, weighted, plus the shared expert: x += */
        stage_cg(sm, s.h, nr);
        if (a.has_shared)
            stage_cg(sm + nr, s.hs, a.Is);
        __syncthreads();
        const float sg = a.has_sg ? 1.0f / (1.0f + expf(-__ldcg(s.logits + a.E))) : 1.0f;
        for (int64_t o = gw; o < a.H; o += nw) {
            float tot = 0.0f;
            for (int j0 = 0; j0 < a.k; j0 += 8) {
                const mkc_w *ws[8] = {&a.down, &a.down, &a.down, &a.down, &a.down, &a.down, &a.down, &a.down};
                int64_t rows[8];
                const float *xs[8];
                float wj[8];
#pragma unroll
                for (int q = 0; q < 8; q++) {
                    const int j = j0 + q < a.k ? j0 + q : a.k - 1;
                    rows[q] = (int64_t)r_idx[j] * a.H + o;
                    xs[q] = sm + (int64_t)j * a.I;
                    wj[q] = j0 + q < a.k ? r_w[j] : 0.0f;
                }
                float acc[8];
                mkc_dot_rows<8, false>(ws, rows, xs, lane, acc);
#pragma unroll
                for (int q = 0; q < 8; q++)
                    tot = fmaf(wj[q], acc[q], tot);
            }
            if (a.has_shared) {
                const mkc_w *ws[1] = {&a.shd};
                const int64_t rows[1] = {o};
                const float *xs[1] = {sm + nr};
                float acc[1];
                mkc_dot_rows<1, false>(ws, rows, xs, lane, acc);
                tot = fmaf(sg, acc[0], tot);
            }
            tot = mkc_warp_sum(tot);
            if (lane == 0)
                s.x[o] = __ldcg(s.x + o) + tot;
        }
        grid_barrier(s.bar, s.bar + 1);
    }
}

struct mk_cuda_stack {
    int L;
    moe_args *d_layers;
    mk_cuda_moe_ws *ws;
    unsigned *bar;
    unsigned grid;
    size_t smem;
};


extern "C" mk_status mk_cuda_stack_new(const mk_cuda_moe *layers, int L, mk_cuda_stack **out) {
    *out = NULL;
    if (L < 1)
        return mk_err(MK_E_ARG, "moe stack: at least one layer, found %d", L);
    const mk_cuda_moe *m0 = &layers[0];
    for (int l = 0; l < L; l++) {
        const mk_cuda_moe *m = &layers[l];
        MK_TRY(mk_cuda_moe_check(m));
        if (m->slot_of || m->counts)
            return mk_err(MK_E_UNSUPPORTED, "moe stack: layer %d has an expert cache or routing counts (the "
                          "persistent kernel takes neither; use mk_cuda_moe_step per layer)", l);
        if (m->hidden != m0->hidden || m->n_experts != m0->n_experts || m->top_k != m0->top_k ||
            m->inter != m0->inter || m->has_shared != m0->has_shared ||
            (m->has_shared && m->shared_inter != m0->shared_inter))
            return mk_err(MK_E_MISMATCH, "moe stack: layer %d's shape differs from layer 0's", l);
    }
    const int64_t H = m0->hidden, nh = m0->top_k * m0->inter + (m0->has_shared ? m0->shared_inter : 0);
    if (H % 4 || m0->inter % 4 || (m0->has_shared && m0->shared_inter % 4) || H * 4 > MKC_SMEM_MAX ||
        nh * 4 > MKC_SMEM_MAX)
        return mk_err(MK_E_UNSUPPORTED,
                      "moe stack: hidden (%lld) and top_k*inter+shared_inter (%lld) must be multiples of 4 "
                      "and fit in %d KB of shared memory; use mk_cuda_moe_step per layer",
                      (long long)H, (long long)nh, MKC_SMEM_MAX / 1024);
    moe_args *host = (moe_args *)calloc((size_t)L, sizeof *host);
    if (!host)
        return mk_err(MK_E_NOMEM, "moe stack: %d layer descriptors", L);
    for (int l = 0; l < L; l++) {
        mk_status sv = moe_args_of(&layers[l], &host[l]);
        if (sv != MK_OK) {
            free(host);
            return sv;
        }
    }
    mk_cuda_stack *s = (mk_cuda_stack *)calloc(1, sizeof *s);
    if (!s) {
        free(host);
        return mk_err(MK_E_NOMEM, "moe stack");
    }
    s->L = L;
    s->smem = (size_t)(H > nh ? H : nh) * 4;
    int dev = 0, nsm = 0, per = 0;
    mk_status st = MK_OK;
    cudaFuncAttributes fa;
    cudaError_t e = cudaGetDevice(&dev);
    if (e == cudaSuccess)
        e = cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, dev);
    if (e == cudaSuccess)
        e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, k_stack, MOE_WARPS * 32, s->smem);
    if (e == cudaSuccess)
        e = cudaFuncGetAttributes(&fa, k_stack);
    if (e != cudaSuccess)
        st = mkc_fail(e, "sizing the persistent MoE kernel");
    /* without the opt-in, static (the routing's arrays) and dynamic shared
     * memory together must fit MKC_SMEM_MAX */
    if (st == MK_OK && s->smem + fa.sharedSizeBytes > MKC_SMEM_MAX)
        st = mk_err(MK_E_UNSUPPORTED,
                    "moe stack: %zu bytes of staged x / activations and %zu of the kernel's own shared memory "
                    "exceed %d KB; use mk_cuda_moe_step per layer",
                    s->smem, (size_t)fa.sharedSizeBytes, MKC_SMEM_MAX / 1024);
    if (st == MK_OK && per < 1)
        st = mk_err(MK_E_UNSUPPORTED, "moe stack: the persistent kernel does not fit on an SM");
    s->grid = (unsigned)(nsm * per);
    if (st == MK_OK)
        st = mk_cuda_moe_ws_new(m0, &s->ws);
    if (st == MK_OK)
        st = mk_cuda_malloc((void **)&s->d_layers, sizeof(moe_args) * (size_t)L, "moe stack layers");
    if (st == MK_OK)
        st = mk_cuda_upload(s->d_layers, host, sizeof(moe_args) * (size_t)L);
    free(host);
    if (st == MK_OK)
        st = mk_cuda_malloc((void **)&s->bar, 2 * sizeof(unsigned), "moe stack barrier");
    if (st == MK_OK)
        st = mk_cuda_memset(s->bar, 0, 2 * sizeof(unsigned));
    if (st != MK_OK) {
        mk_cuda_stack_free(s);
        return st;
    }
    *out = s;
    return MK_OK;
}

extern "C" void mk_cuda_stack_free(mk_cuda_stack *s) {
    if (!s)
        return;
    mk_cuda_moe_ws_free(s->ws);
    mk_cuda_free(s->d_layers);
    mk_cuda_free(s->bar);
    free(s);
}

extern "C" mk_cuda_moe_ws *mk_cuda_stack_ws(mk_cuda_stack *s) {
    return s->ws;
}

extern "C" mk_status mk_cuda_stack_run(mk_cuda_stack *s, float *x, void *stream) {
    if (((uintptr_t)x & 15) != 0)
        return mk_err(MK_E_ARG, "moe stack: x must be 16-byte aligned device memory");
    stack_args a;
    a.layers = s->d_layers;
    a.L = s->L;
    a.x = x;
    a.logits = s->ws->logits;
    a.w = s->ws->w;
    a.h = s->ws->h;
    a.hs = s->ws->hs;
    a.idx = s->ws->idx;
    a.bar = s->bar;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(s->grid);
    cfg.blockDim = dim3(MOE_WARPS * 32);
    cfg.dynamicSmemBytes = s->smem;
    cfg.stream = (cudaStream_t)stream;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeCooperative; /* all blocks co-resident: the barrier needs it */
    at[0].val.cooperative = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    MKC_TRY(cudaLaunchKernelEx(&cfg, k_stack, a), "launching the persistent MoE stack");
    return MK_OK;
}
