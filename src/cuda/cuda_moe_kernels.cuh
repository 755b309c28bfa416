/* The fused MoE step's kernels (k_router, k_gateup, k_down, k_down2; the
 * launch code and the persistent stack are cuda_moe.cu's). A header of its
 * own so that the host emulation (tests/cli/cuda_emu_moe.sh) runs these very
 * kernels. The includer provides cuda_impl.cuh and cuda_route_block.cuh. */
#ifndef MK_CUDA_MOE_KERNELS_CUH
#define MK_CUDA_MOE_KERNELS_CUH

#include "cuda/cuda_fold.cuh"
#include "cuda/cuda_ticket.cuh"
#include "cuda/cuda_q8x.cuh"

#define MOE_WARPS 8

/* ---- kernels ------------------------------------------------------------ */

/* mkc_pdl_enter: cuda_impl.cuh */

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
    /* A batched step (mk_cuda_moe_step_n): nt tokens in each launch, block
     * b doing the one-token step's block b / nt for token b % nt (tokens
     * innermost: blocks that read the same weight rows run together, so
     * the rows come from DRAM about once per step, not once per token);
     * ga: k_gateup's routed blocks ordered by (row block, choice, token),
     * so every token's experts' same rows run together (I a multiple of
     * 2 * MOE_WARPS: no block straddles two experts). Token t's x and y
     * rows are at t * H, its logits at t * ls, routing at t * ks, h at
     * t * hstr, hs at t * hsstr. One token: nt 1, ga 0. */
    int32_t nt, ga, ls, ks;
    int64_t hstr, hsstr;
    /* One token: the residual step folded into k_router (an.x set; x is
     * then an.xb, which every router block stages itself and its last
     * block writes for k_gateup; cuda_fold.cuh). */
    mkc_addnorm an;
    /* One token: the routing ranked where it is read (mk_cuda_set_route_late):
     * k_router writes the logits and stops; k_gateup_q8<C, true> and
     * k_down2_q8<C, true> rank them themselves. */
    int32_t late;
};

/* Host: */
/* The per-token strides of a batched step (moe_args.ls, ks, hstr, hsstr)
 * from E, k, I, Is: each a multiple of 4, so every token's arrays stay
 * 16-byte aligned; the workspace (mk_cuda_moe_ws_new_n) is laid out by
 * them. */
static inline void moe_token_strides(moe_args *a) {
    const int64_t Is = a->Is ? a->Is : 1;
    a->ls = (a->E + 1 + 3) & ~3;
    a->ks = (a->k + 3) & ~3;
    a->hstr = ((int64_t)a->k * a->I + 3) & ~(int64_t)3;
    a->hsstr = (Is + 3) & ~(int64_t)3;
}

/* moe_args of one layer (views checked) */
static inline mk_status moe_args_of(const mk_cuda_moe *m, moe_args *a) {
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
    a->nt = 1;
    a->ga = 0;
    moe_token_strides(a);
    return MK_OK;
}

/* The one-token block and the token of this block of a batched launch
 * (moe_args.nt; k_router and k_down: tokens innermost) */
__device__ __forceinline__ int64_t moe_block(const moe_args &a, int *tok) {
    *tok = (int)(blockIdx.x % (unsigned)a.nt);
    return (int64_t)(blockIdx.x / (unsigned)a.nt);
}

/* k_gateup's: with ga, the routed blocks in (row block, choice, token)
 * order, the shared expert's after them in (block, token) order */
__device__ __forceinline__ int64_t gateup_block(const moe_args &a, int *tok) {
    const int64_t q = moe_block(a, tok);
    const int64_t per = a.I / (2 * MOE_WARPS), nrb = (int64_t)a.k * per;
    if (!a.ga || q >= nrb)
        return q;
    return (q % a.k) * per + q / a.k;
}

/* A router (or shared-gate) row of an affine kind with at most 32
 * ROUTER_U chunks: loaded before the wait, summed after it. */
#define ROUTER_U 4

template <int BITS, int SD>
__device__ __forceinline__ void router_prime(const mkc_w &w, int64_t row, int lane, mkc_primed<ROUTER_U> &p) {
    mkc_prime<BITS, SD, ROUTER_U>(w, row, lane, p);
}

/* router_prime of an affine kind chosen at run time (warp-uniform) */
__device__ __forceinline__ void router_prime_any(const mkc_w &rw, int64_t row, int lane, mkc_primed<ROUTER_U> &p) {
    switch (rw.kind) {
    case MKC_A4_F32: router_prime<4, 0>(rw, row, lane, p); break;
    case MKC_A4_BF16: router_prime<4, 1>(rw, row, lane, p); break;
    case MKC_A4_F16: router_prime<4, 2>(rw, row, lane, p); break;
    case MKC_A8_F32: router_prime<8, 0>(rw, row, lane, p); break;
    case MKC_A8_BF16: router_prime<8, 1>(rw, row, lane, p); break;
    default: router_prime<8, 2>(rw, row, lane, p); break;
    }
}

/* The lane's partial sum of primed row p of rw against x */
__device__ __forceinline__ float router_primed_dot(const mkc_w &rw, const mkc_primed<ROUTER_U> &p, const float *x,
                                                   int lane) {
    return rw.kind <= MKC_A4_F16 ? mkc_primed_dot<4, ROUTER_U>(p, rw.row_bytes / 16, x, lane)
                                 : mkc_primed_dot<8, ROUTER_U>(p, rw.row_bytes / 16, x, lane);
}

/* x [H] of the router: as given, or (a.an.x) rmsnorm(an.x + an.y) * an.g
 * staged in shared memory by this block (cuda_fold.cuh; the block
 * that ranks, the last in, then writes x + y, its check and xb) */
__device__ __forceinline__ const float *router_x(const moe_args &a, const float *x, float *red) {
    if (!a.an.x)
        return x;
    MKC_DYN_SMEM(float, mkc_smf);
    mkc_addnorm_stage(a.an, mkc_smf, 0, red);
    return mkc_smf;
}

/* Host and device: whether an int8 router stages x in a second layout too
 * (an affine shared-expert gate row of the other code width than the
 * router's: moe_q8_router_smem sizes it, k_router<F, true> fills it) */
__host__ __device__ __forceinline__ bool moe_q8_two_layouts(const moe_args &a) {
    return a.has_sg && mkc_is_aff(a.sgw.kind) && (a.sgw.kind <= MKC_A4_F16) != (a.router.kind <= MKC_A4_F16);
}

/* ticket: the token's (the last block ranks, and finishes a fold: every
 * block staged before it took the ticket). F: a.an.x is set (the fold's
 * instance; the plain one is compiled without it). Q: int8 activations
 * (mk_cuda_set_act_int8; moe_q8_router): every block quantizes its token's
 * x into its shared memory after the fold's floats, in the router's layout
 * (and the other width's for an affine shared-expert gate row of the other
 * code width), and the affine rows are summed from it (cuda_q8x.cuh); a
 * bf16 shared-expert gate row keeps float x, as on the CPU. */
template <bool F = false, bool Q = false>
__global__ void __launch_bounds__(MOE_WARPS * 32)
    k_router(const moe_args a, const float *__restrict__ x, float *logits, int32_t *idx, float *w,
             unsigned *ticket, int32_t *loc) {
    __shared__ float red[32];
    __shared__ unsigned long long sbad;
    const int lane = threadIdx.x & 31;
    int tok;
    const int64_t blk = moe_block(a, &tok);
    x += (int64_t)tok * a.H;
    logits += (int64_t)tok * a.ls;
    idx += (int64_t)tok * a.ks;
    w += (int64_t)tok * a.ks;
    loc = loc ? loc + (int64_t)tok * a.ks : loc;
    ticket += tok;
    const int64_t t = blk * MOE_WARPS + (threadIdx.x >> 5);
    const bool mine = t < a.E + a.has_sg;
    const mkc_w &rw = !mine || t < a.E ? a.router : a.sgw;
    const int64_t row = mine && t < a.E ? t : 0;
    /* the row's weights are loaded before waiting for x (they do not
     * depend on the previous kernel): under programmatic dependent launch
     * their latency overlaps the previous kernel's end */
    const bool primed = mine && mkc_is_aff(rw.kind) && rw.row_bytes / 16 <= 32 * ROUTER_U;
    mkc_primed<ROUTER_U> p;
    if (primed)
        router_prime_any(rw, row, lane, p);
    mkc_pdl_enter();
    const float *xr = F ? router_x(a, x, red) : x; /* every block: the fold's barriers */
    /* Q: x quantized in the router's layout (its code width), and in the other one too when an affine
     * shared-expert gate row has the other width (moe_q8_router sized both); xw: this warp's row's.
     * Each layout is made where it is used, not kept in an array: one indexed by the row's width
     * lived in local memory (a 64-byte stack frame, its loads on the way to the dot product). */
    const bool r4 = a.router.kind <= MKC_A4_F16, w4 = rw.kind <= MKC_A4_F16;
    mkc_q8s xw = {};
    if constexpr (Q) {
        MKC_DYN_SMEM(float4, mkc_sm4);
        uint8_t *base = (uint8_t *)mkc_sm4 + (F ? (int64_t)a.H * 4 : 0);
        const int64_t span = mkc_q8s_span(a.H);
        if (r4)
            mkc_q8_stage<4>(xr, a.H, mkc_q8s_at(base, a.H));
        else
            mkc_q8_stage<8>(xr, a.H, mkc_q8s_at(base, a.H));
        if (moe_q8_two_layouts(a)) {
            if (r4)
                mkc_q8_stage<8>(xr, a.H, mkc_q8s_at(base + span, a.H));
            else
                mkc_q8_stage<4>(xr, a.H, mkc_q8s_at(base + span, a.H));
        }
        xw = mkc_q8s_at(base + (w4 == r4 ? 0 : span), a.H);
        __syncthreads();
    }
    /* this row on int8 x: affine (the CPU quantizes x for every affine product) */
    const bool rq = Q && mkc_is_aff(rw.kind);
    if (mine) {
        float acc = 0.0f;
        if (rq && primed) {
            acc = w4 ? mkc_primed_dot_q8<4, ROUTER_U>(p, rw.row_bytes / 16, xw, lane)
                     : mkc_primed_dot_q8<8, ROUTER_U>(p, rw.row_bytes / 16, xw, lane);
        } else if (rq) {
            const mkc_w *ws[1] = {&rw};
            const int64_t rows[1] = {row};
            mkc_q8_dot_rows_w<1>(ws, rows, xw, lane, &acc);
        } else if (primed) {
            acc = router_primed_dot(rw, p, xr, lane);
        } else {
            const mkc_w *ws[1] = {&rw};
            const int64_t rows[1] = {row};
            const float *xs[1] = {xr};
            mkc_dot_rows<1, true>(ws, rows, xs, lane, &acc);
        }
        float v = mkc_warp_sum(acc);
        if (lane == 0)
            logits[t] = v;
    }
    if (a.late) /* the readers rank (mk_cuda_set_route_late): no ticket; never with F (the host's rule) */
        return;
    /* last block in (of the token's blocks): all logits are in device memory */
    if (!mkc_last_in(ticket, gridDim.x / (unsigned)a.nt))
        return;
    if constexpr (F) {
        MKC_DYN_SMEM(float, mkc_smf);
        mkc_addnorm_finish(a.an, mkc_smf, 0, &sbad);
    }
    route_block(logits, a.E, a.k, a.score, a.norm, a.scale, a.bias, a.G, a.TG, idx, w, a.slot_of, loc, a.counts);
    if (threadIdx.x == 0)
        *ticket = 0u; /* ready for the next launch (stream order) */
}

__device__ __forceinline__ float silu_mul(float g, float u) {
    return g / (1.0f + expf(-g)) * u;
}

/* The rows of k_gateup's warp (and k_gateup_q8's): intermediate rows r0
 * and r0 + 1 of its routed expert (the choice r0 / I; with C, from the
 * VRAM cache's slot when the expert has one) or, from nr on, of the shared
 * expert, as {gate, up, gate, up}. S: idx and loc are the block's own
 * routing in shared memory (mk_cuda_set_route_late), read plainly; else
 * the router kernel's in device memory. */
template <bool C, bool S = false>
__device__ __forceinline__ void gateup_pair(const moe_args &a, int64_t r0, int64_t nr, const int32_t *idx,
                                            const int32_t *loc, const mkc_w **ws, int64_t *rows) {
    const bool routed = r0 < nr;
    int64_t row;
    bool cached = false;
    if (routed) {
        const int32_t j = (int32_t)r0 / a.I, r = (int32_t)r0 - j * a.I;
        int32_t e = S ? idx[j] : __ldg(idx + j);
        if constexpr (C) {
            const int32_t sl = S ? loc[j] : __ldg(loc + j);
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
    ws[0] = ws[2] = G;
    ws[1] = ws[3] = U;
    rows[0] = rows[1] = row;
    rows[2] = rows[3] = row + 1;
}

/* h (or hs past nr) of the pair: silu(gate x) * up x from the lanes' sums */
__device__ __forceinline__ void gateup_store(const float *acc, int lane, int64_t r0, int64_t nr, float *h, float *hs) {
    const float g0 = mkc_warp_sum(acc[0]), u0 = mkc_warp_sum(acc[1]);
    const float g1 = mkc_warp_sum(acc[2]), u1 = mkc_warp_sum(acc[3]);
    if (lane == 0) {
        float *out = r0 < nr ? h + r0 : hs + (r0 - nr);
        out[0] = silu_mul(g0, u0);
        out[1] = silu_mul(g1, u1);
    }
}

/* P (kernel generation 2): pipelined row loads (mkc_dot_aff_p). A register
 * cap for 3 blocks per SM (one wave for the 3072 warps of the Qwen3-30B-A3B
 * shape) made ptxas spill 1.3 KB per thread, so the cap stays as it was. */
template <bool P, bool C>
__global__ void __launch_bounds__(MOE_WARPS * 32)
    k_gateup(const moe_args a, const float *__restrict__ xg, const int32_t *__restrict__ idx,
             float *__restrict__ h, float *__restrict__ hs, int staged, const int32_t *__restrict__ loc) {
    MKC_DYN_SMEM(float4, mkc_sm4);
    mkc_pdl_enter();
    int tok;
    const int64_t blk = gateup_block(a, &tok);
    xg += (int64_t)tok * a.H;
    idx += (int64_t)tok * a.ks;
    loc = loc ? loc + (int64_t)tok * a.ks : loc;
    h += (int64_t)tok * a.hstr;
    hs += (int64_t)tok * a.hsstr;
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
    const int64_t r0 = 2 * (blk * MOE_WARPS + (threadIdx.x >> 5));
    const int64_t nr = (int64_t)a.k * a.I, ntot = nr + (a.has_shared ? a.Is : 0);
    if (r0 >= ntot)
        return;
    const float *xs[4] = {x, x, x, x};
    const mkc_w *ws[4];
    int64_t rows[4];
    gateup_pair<C>(a, r0, nr, idx, loc, ws, rows);
    float acc[4];
    mkc_dot_rows<4, true, P>(ws, rows, xs, lane, acc, xpad);
    gateup_store(acc, lane, r0, nr, h, hs);
}

/* The shared expert's factor: sigmoid of the shared-expert gate's logit
 * (logits[E], the token's), or 1 without a gate */
__device__ __forceinline__ float moe_shared_gate(const moe_args &a, const float *__restrict__ logits) {
    return a.has_sg ? 1.0f / (1.0f + expf(-__ldg(logits + a.E))) : 1.0f;
}

/* k_down's and k_down2's one-token block; the pointers moved to its
 * token's routing, activations, shared-gate logit and output row */
__device__ __forceinline__ int64_t down_token(const moe_args &a, const int32_t *__restrict__ &idx,
                                              const float *__restrict__ &wt, const int32_t *__restrict__ &loc,
                                              const float *__restrict__ &hg, const float *__restrict__ &hsg,
                                              const float *__restrict__ &logits, float *__restrict__ &y) {
    int tok;
    const int64_t blk = moe_block(a, &tok);
    idx += (int64_t)tok * a.ks;
    wt += (int64_t)tok * a.ks;
    loc = loc ? loc + (int64_t)tok * a.ks : loc;
    hg += (int64_t)tok * a.hstr;
    hsg += (int64_t)tok * a.hsstr;
    logits += (int64_t)tok * a.ls;
    y += (int64_t)tok * a.H;
    return blk;
}

template <bool C>
__global__ void __launch_bounds__(MOE_WARPS * 32, 2)
    k_down(const moe_args a, const int32_t *__restrict__ idx, const float *__restrict__ wt,
           const float *__restrict__ hg, const float *__restrict__ hsg, const float *__restrict__ logits,
           float *__restrict__ y, int accumulate, int staged, const int32_t *__restrict__ loc) {
    MKC_DYN_SMEM(float4, mkc_sm4);
    mkc_pdl_enter();
    const int64_t blk = down_token(a, idx, wt, loc, hg, hsg, logits, y);
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
    const int64_t o = blk * MOE_WARPS + (threadIdx.x >> 5);
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
        tot = fmaf(moe_shared_gate(a, logits), acc[0], tot);
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
                                          int staged, int64_t blk) {
    MKC_DYN_SMEM(float4, mkc_sm4);
    const int lane = threadIdx.x & 31;
    const int64_t o = blk * MOE_WARPS + (threadIdx.x >> 5);
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

/* k_down2's and k_down_s's routing staged in shared memory (expert,
 * cache slot with C, weight per choice) and the shared gate's factor,
 * returned; ends with a barrier. The routing and the shared gate's logit
 * come from the router kernel, complete before these grids were launched
 * (see down2_run): read before the PDL wait. */
template <bool C>
__device__ __forceinline__ float down_routing(const moe_args &a, const int32_t *__restrict__ idx,
                                              const float *__restrict__ wt, const int32_t *__restrict__ loc,
                                              const float *__restrict__ logits, int32_t *sidx, int32_t *sloc,
                                              float *sw) {
    if (threadIdx.x < a.k) {
        sidx[threadIdx.x] = __ldg(idx + threadIdx.x);
        sw[threadIdx.x] = __ldg(wt + threadIdx.x);
        if constexpr (C)
            sloc[threadIdx.x] = __ldg(loc + threadIdx.x);
    }
    const float sg = moe_shared_gate(a, logits);
    __syncthreads();
    return sg;
}

template <bool C>
__global__ void __launch_bounds__(MOE_WARPS * 32, 2)
    k_down2(const moe_args a, const int32_t *__restrict__ idx, const float *__restrict__ wt,
            const float *__restrict__ hg, const float *__restrict__ hsg, const float *__restrict__ logits,
            float *__restrict__ y, int accumulate, int staged, const int32_t *__restrict__ loc) {
    __shared__ int32_t sidx[MOE_MAX_K];
    __shared__ int32_t sloc[C ? MOE_MAX_K : 1];
    __shared__ float sw[MOE_MAX_K];
    const int64_t blk = down_token(a, idx, wt, loc, hg, hsg, logits, y);
    const float sg = down_routing<C>(a, idx, wt, loc, logits, sidx, sloc, sw);
    switch (a.down.kind) {
    case MKC_A4_F32: down2_run<4, 0, C>(a, sidx, sloc, sw, sg, hg, hsg, y, accumulate, staged, blk); break;
    case MKC_A4_BF16: down2_run<4, 1, C>(a, sidx, sloc, sw, sg, hg, hsg, y, accumulate, staged, blk); break;
    case MKC_A4_F16: down2_run<4, 2, C>(a, sidx, sloc, sw, sg, hg, hsg, y, accumulate, staged, blk); break;
    case MKC_A8_F32: down2_run<8, 0, C>(a, sidx, sloc, sw, sg, hg, hsg, y, accumulate, staged, blk); break;
    case MKC_A8_BF16: down2_run<8, 1, C>(a, sidx, sloc, sw, sg, hg, hsg, y, accumulate, staged, blk); break;
    default: down2_run<8, 2, C>(a, sidx, sloc, sw, sg, hg, hsg, y, accumulate, staged, blk); break;
    }
}

/* ---- int8 activations (k_gateup_q8, k_down2_q8; mk_cuda_set_act_int8) ----
 * MLX affine experts (the shared expert of the same kind and width), the
 * CPU's int8 decode rule (cuda_q8x.cuh), one token or a batched step's
 * (each token's rows bitwise its one-token step's): k_gateup_q8 quantizes
 * x in every block and computes k_gateup's row pairs from it; k_down2_q8
 * quantizes the k experts' h and the shared expert's hs as one vector (each
 * a whole number of 32-value blocks, so each is quantized as the CPU
 * quantizes it alone) and sums k_down2's (expert, chunk) tasks from it. */
/* Blocks an SM must hold at once (the launch bounds' second argument): 1
 * lets ptxas take 122 registers (two blocks an SM, so the 30B shape's 384
 * blocks run in 1.45 waves); 3 caps it at 80 (one wave, with spills). A
 * build-time choice for measuring (scripts/cuda-relink.sh). */
#ifndef MK_CUDA_GATEUP_MINB
#define MK_CUDA_GATEUP_MINB 1
#endif
/* L (mk_cuda_set_route_late; one token): the block ranks the router's
 * logits itself after the wait (route_block into shared memory: the
 * routing the router's last block would have written) and its pairs read
 * that; block 0 also writes it to ridx / rw / rloc (the workspace's, for
 * the routing's readers after the step) and adds it to the counts. */
template <bool C, bool L = false>
__global__ void __launch_bounds__(MOE_WARPS * 32, MK_CUDA_GATEUP_MINB)
    k_gateup_q8(const moe_args a, const float *__restrict__ xg, const int32_t *__restrict__ idx,
                float *__restrict__ h, float *__restrict__ hs, const int32_t *__restrict__ loc, int early = 0,
                const float *__restrict__ logits = nullptr, int32_t *__restrict__ ridx = nullptr,
                float *__restrict__ rw = nullptr, int32_t *__restrict__ rloc = nullptr) {
    MKC_DYN_SMEM(float4, mkc_sm4);
    mkc_pdl_enter();
    int tok;
    const int64_t blk = gateup_block(a, &tok);
    xg += (int64_t)tok * a.H;
    idx += (int64_t)tok * a.ks;
    loc = loc ? loc + (int64_t)tok * a.ks : loc;
    h += (int64_t)tok * a.hstr;
    hs += (int64_t)tok * a.hsstr;
    if constexpr (L) {
        __shared__ int32_t lidx[MOE_MAX_K];
        __shared__ int32_t lloc[C ? MOE_MAX_K : 1];
        __shared__ float lw[MOE_MAX_K];
        route_block(logits, a.E, a.k, a.score, a.norm, a.scale, a.bias, a.G, a.TG, lidx, lw, a.slot_of, lloc,
                    blockIdx.x == 0 ? a.counts : nullptr);
        __syncthreads();
        if (blockIdx.x == 0 && threadIdx.x < a.k) {
            ridx[threadIdx.x] = lidx[threadIdx.x];
            rw[threadIdx.x] = lw[threadIdx.x];
            if constexpr (C)
                rloc[threadIdx.x] = lloc[threadIdx.x];
        }
        idx = lidx;
        loc = lloc;
    }
    const int lane = threadIdx.x & 31;
    const int64_t r0 = 2 * (blk * MOE_WARPS + (threadIdx.x >> 5));
    const int64_t nr = (int64_t)a.k * a.I, ntot = nr + (a.has_shared ? a.Is : 0);
    /* early (mk_cuda_set_q8_early): the pair's rows (the routing read) and their first chunks in
     * flight before x is staged, so the weights' latency overlaps the staging's instead of following
     * it; else after it, as before. The same sums either way. */
    mkc_q8_rowset<4> rs;
    mkc_q8_pre<4> pre;
    const mkc_w *ws[4];
    int64_t rows[4];
    if (early && r0 < ntot) {
        gateup_pair<C, L>(a, r0, nr, idx, loc, ws, rows);
        mkc_q8_prime_rows<4>(ws, rows, lane, rs, pre);
    }
    const mkc_q8s xq = mkc_q8s_at(mkc_sm4, a.H);
    mkc_q8_stage_for(a.gate, xg, xq); /* gate's width is H */
    __syncthreads();
    if (r0 >= ntot)
        return;
    if (!early) {
        gateup_pair<C, L>(a, r0, nr, idx, loc, ws, rows);
        mkc_q8_prime_rows<4>(ws, rows, lane, rs, pre);
    }
    float acc[4];
    mkc_q8_sum_rows<4>(rs, xq, lane, pre, acc);
    gateup_store(acc, lane, r0, nr, h, hs);
}

/* Host: whether k_gateup_q8 and k_down2_q8 take a's layer (one token):
 * affine experts, gate and up of one kind and group (the shared expert's
 * as the routed ones', the cache's slots as the experts'), groups of 32 values
 * or more, x, h and hs whole 32-value blocks, their quantized copies in
 * the 48 KB a launch gets */
static inline bool moe_q8_takes(const moe_args &a) {
    const mkc_w *ws[3] = {&a.gate, &a.up, &a.down};
    for (const mkc_w *w : ws)
        if (!mkc_is_aff(w->kind) || w->gshift < 5 || ((uintptr_t)w->data & 15))
            return false;
    if (a.up.kind != a.gate.kind || a.up.gshift != a.gate.gshift || a.H % 32 || a.I % 32 || a.Is % 32 ||
        mkc_q8s_bytes(a.H) > MKC_SMEM_MAX || mkc_q8s_bytes((int64_t)a.k * a.I + a.Is) > MKC_SMEM_MAX - 512)
        return false;
    if (a.slot_of) {
        const mkc_w *cs[3] = {&a.cgate, &a.cup, &a.cdown};
        for (int i = 0; i < 3; i++)
            if (cs[i]->kind != ws[i]->kind || cs[i]->gshift != ws[i]->gshift || ((uintptr_t)cs[i]->data & 15))
                return false;
    }
    if (a.has_shared) {
        const mkc_w *ss[3] = {&a.shg, &a.shu, &a.shd};
        for (int i = 0; i < 3; i++)
            if (ss[i]->kind != ws[i]->kind || ss[i]->gshift < 5 || ((uintptr_t)ss[i]->data & 15))
                return false;
        if (a.shu.gshift != a.shg.gshift) /* k_gateup_q8 reads a row pair's gate and up by one group size */
            return false;
    }
    return true;
}

/* Host: k_router<F, true>'s dynamic shared memory: the fold's floats, x
 * in the router's layout, and in the other one when an affine
 * shared-expert gate row has the other code width */
static inline int64_t moe_q8_router_smem(const moe_args &a, bool fold) {
    return (fold ? (int64_t)a.H * 4 : 0) + (moe_q8_two_layouts(a) ? 2 : 1) * mkc_q8s_span(a.H);
}

/* Host: whether k_router takes int8 x: an affine router (and an affine
 * shared-expert gate row) of groups of 32 or more over whole 32-value
 * blocks, its shared memory (moe_q8_router_smem) in the 48 KB a launch
 * gets, less static_smem. A router in another format keeps float x, its
 * shared-expert gate row too. */
static inline bool moe_q8_router(const moe_args &a, bool fold, int64_t static_smem) {
    const bool sga = a.has_sg && mkc_is_aff(a.sgw.kind);
    return mkc_is_aff(a.router.kind) && a.router.gshift >= 5 && a.H % 32 == 0 && ((uintptr_t)a.router.data & 15) == 0 &&
           (!sga || (a.sgw.gshift >= 5 && ((uintptr_t)a.sgw.data & 15) == 0)) &&
           moe_q8_router_smem(a, fold) + static_smem <= MKC_SMEM_MAX;
}

/* down2_use on the quantized activations: task i's values from offset
 * p.xl (the shared expert's after the nh routed ones) */
template <int BITS>
__device__ __forceinline__ float down2_use_q8(const down2_pass &p, int ntask, int t0, int lane, const mkc_q8s &xq,
                                              int nh, float tot) {
    const int4 *x4 = (const int4 *)xq.q;
#pragma unroll
    for (int i = 0; i < DOWN2_T; i++) {
        if (t0 + 32 * i + lane < ntask) {
            const int off = p.sh[i] ? nh + p.xl[i] : p.xl[i], b = off >> 5;
            int4 x0, x1;
            float xdb;
            if constexpr (BITS == 4) {
                x0 = x4[b];
                x1 = x4[xq.nb + b];
                xdb = xq.xd[b];
            } else {
                x0 = x1 = x4[off >> 4];
                xdb = (off >> 4) & 1 ? 0.0f : xq.xd[b]; /* the bias term on a block's first chunk */
            }
            const int dot = mkc_q8_chunk<BITS>(p.qq[i], x0, x1);
            const float term = fmaf(p.sc[i] * xq.d[b], mkc_dotf(dot), p.bi[i] * xdb);
            tot = fmaf(p.wj[i], term, tot);
        }
    }
    return tot;
}

template <int BITS, int SD, bool C>
__device__ __forceinline__ void down2_run_q8(const moe_args &a, const int32_t *sidx, const int32_t *sloc,
                                             const float *sw, float sg, const float *hg, const float *hsg, float *y,
                                             int accumulate, int64_t blk) {
    MKC_DYN_SMEM(float4, mkc_sm4);
    const int lane = threadIdx.x & 31;
    const int64_t o = blk * MOE_WARPS + (threadIdx.x >> 5);
    const int nc = (int)(a.down.row_bytes / 16), ncs = a.has_shared ? (int)(a.shd.row_bytes / 16) : 0;
    const int ntask = a.k * nc + ncs, nh = a.k * a.I;
    down2_pass p;
    if (o < a.H)
        down2_load<BITS, SD, C>(a, sidx, sloc, sw, sg, o, lane, 0, p);
    mkc_pdl_enter();
    const mkc_q8s xq = mkc_q8s_at(mkc_sm4, (int64_t)nh + (a.has_shared ? a.Is : 0));
    mkc_q8_stage2<BITS>(hg, nh, hsg, xq);
    __syncthreads();
    if (o >= a.H)
        return;
    float tot = 0.0f;
    for (int t0 = 0;;) {
        tot = down2_use_q8<BITS>(p, ntask, t0, lane, xq, nh, tot);
        t0 += 32 * DOWN2_T;
        if (t0 >= ntask)
            break;
        down2_load<BITS, SD, C>(a, sidx, sloc, sw, sg, o, lane, t0, p);
    }
    tot = mkc_warp_sum(tot);
    if (lane == 0)
        y[o] = accumulate ? y[o] + tot : tot;
}

/* L (mk_cuda_set_route_late; one token): the block ranks the router's
 * logits itself before its wait, as the gate/up blocks did after theirs
 * (the router finished before any of them passed it, and this grid starts
 * only once they all have): the same routing, off the critical path. */
template <bool C, bool L = false>
__global__ void __launch_bounds__(MOE_WARPS * 32, 2)
    k_down2_q8(const moe_args a, const int32_t *__restrict__ idx, const float *__restrict__ wt,
               const float *__restrict__ hg, const float *__restrict__ hsg, const float *__restrict__ logits,
               float *__restrict__ y, int accumulate, const int32_t *__restrict__ loc) {
    __shared__ int32_t sidx[MOE_MAX_K];
    __shared__ int32_t sloc[C ? MOE_MAX_K : 1];
    __shared__ float sw[MOE_MAX_K];
    const int64_t blk = down_token(a, idx, wt, loc, hg, hsg, logits, y);
    float sg;
    if constexpr (L) {
        route_block(logits, a.E, a.k, a.score, a.norm, a.scale, a.bias, a.G, a.TG, sidx, sw, a.slot_of, sloc);
        sg = moe_shared_gate(a, logits);
        __syncthreads();
    } else {
        sg = down_routing<C>(a, idx, wt, loc, logits, sidx, sloc, sw);
    }
    switch (a.down.kind) {
    case MKC_A4_F32: down2_run_q8<4, 0, C>(a, sidx, sloc, sw, sg, hg, hsg, y, accumulate, blk); break;
    case MKC_A4_BF16: down2_run_q8<4, 1, C>(a, sidx, sloc, sw, sg, hg, hsg, y, accumulate, blk); break;
    case MKC_A4_F16: down2_run_q8<4, 2, C>(a, sidx, sloc, sw, sg, hg, hsg, y, accumulate, blk); break;
    case MKC_A8_F32: down2_run_q8<8, 0, C>(a, sidx, sloc, sw, sg, hg, hsg, y, accumulate, blk); break;
    case MKC_A8_BF16: down2_run_q8<8, 1, C>(a, sidx, sloc, sw, sg, hg, hsg, y, accumulate, blk); break;
    default: down2_run_q8<8, 2, C>(a, sidx, sloc, sw, sg, hg, hsg, y, accumulate, blk); break;
    }
}

/* ---- the staged-weight MoE kernels (k_gateup_s, k_down_s) -------------------
 * One token, MLX affine experts (the shared expert, when there is one, of
 * the same kind and width), mk_cuda_set_moe_staged. As k_gemv_s: a block
 * copies all the weight rows it will use (codes, scales, biases) into
 * shared memory with cp.async, so its whole share is in flight at once,
 * then computes from there with k_gateup<true>'s and k_down2's lane steps,
 * bitwise theirs. k_gateup_s's copies follow the routing, so they start
 * after the wait; k_down_s's are issued before it (the routing is complete
 * before k_gateup passed its own wait, see down2_run) and overlap the
 * gate/up kernel's end. Shared-memory layouts: moes_gateup_smem,
 * moes_down_smem (the host sizes the blocks to fit MOES_BUDGET). */
#define MOES_BUDGET (72 * 1024)

/* bytes of one staged row's scales (or biases), a whole number of words */
__host__ __device__ __forceinline__ int64_t moes_sb(const mkc_w &w) {
    return w.ng * mkc_aff_sb(w.kind);
}
__host__ __device__ __forceinline__ int64_t moes_al16(int64_t n) {
    return (n + 15) / 16 * 16;
}
/* k_gateup_s: np pairs of intermediate rows, each row's gate and up */
__host__ __device__ __forceinline__ int64_t moes_gateup_smem(const moe_args &a, int64_t np) {
    const int64_t rows = 4 * np;
    return MKC_PADDED((int64_t)a.H) * 4 + rows * a.gate.row_bytes + 2 * moes_al16(rows * moes_sb(a.gate));
}
/* k_down_s: no output rows, each the k experts' rows and the shared one's */
__host__ __device__ __forceinline__ int64_t moes_down_slots(const moe_args &a) {
    return a.k + (a.has_shared ? 1 : 0);
}
__host__ __device__ __forceinline__ int64_t moes_down_rb(const moe_args &a) {
    return a.has_shared && a.shd.row_bytes > a.down.row_bytes ? a.shd.row_bytes : a.down.row_bytes;
}
__host__ __device__ __forceinline__ int64_t moes_down_sbr(const moe_args &a) {
    return a.has_shared && moes_sb(a.shd) > moes_sb(a.down) ? moes_sb(a.shd) : moes_sb(a.down);
}
__host__ __device__ __forceinline__ int64_t moes_h_bytes(const moe_args &a) {
    return (MKC_PADDED((int64_t)a.k * a.I) + MKC_PADDED((int64_t)a.Is)) * 4;
}
__host__ __device__ __forceinline__ int64_t moes_down_smem(const moe_args &a, int64_t no) {
    const int64_t slots = no * moes_down_slots(a);
    return moes_h_bytes(a) + slots * moes_down_rb(a) + 2 * moes_al16(slots * moes_down_sbr(a));
}

/* Host: whether the staged-weight kernels take layer a (mk_cuda_set_moe_staged;
 * one token, MLX affine experts, a shared expert of the same kind and
 * width, x and h in the padded layout within half the budget, every
 * scale row a whole number of 4-byte words, cp.async's alignments) */
static inline bool moes_takes(const moe_args &a) {
    const mkc_w *ws[3] = {&a.gate, &a.up, &a.down};
    for (const mkc_w *w : ws)
        if (!mkc_is_aff(w->kind) || moes_sb(*w) % 4 || w->row_bytes % 16 || ((uintptr_t)w->data & 15) ||
            ((uintptr_t)w->scales & 3) || ((uintptr_t)w->biases & 3))
            return false;
    if (a.up.kind != a.gate.kind || a.up.row_bytes != a.gate.row_bytes || a.up.gshift != a.gate.gshift ||
        a.H % 32 || a.I % 32 || a.Is % 32 || moes_h_bytes(a) > MOES_BUDGET / 2 ||
        MKC_PADDED((int64_t)a.H) * 4 > MOES_BUDGET / 2)
        return false;
    if (a.slot_of) { /* the cache's slots: the same kinds and widths, aligned alike */
        const mkc_w *cs[3] = {&a.cgate, &a.cup, &a.cdown};
        for (int i = 0; i < 3; i++)
            if (cs[i]->kind != ws[i]->kind || cs[i]->row_bytes != ws[i]->row_bytes ||
                ((uintptr_t)cs[i]->data & 15) || ((uintptr_t)cs[i]->scales & 3) || ((uintptr_t)cs[i]->biases & 3))
                return false;
    }
    if (a.has_shared) {
        const mkc_w *ss[3] = {&a.shg, &a.shu, &a.shd};
        for (int i = 0; i < 3; i++)
            if (ss[i]->kind != ws[i]->kind || ((uintptr_t)ss[i]->data & 15) || ((uintptr_t)ss[i]->scales & 3) ||
                ((uintptr_t)ss[i]->biases & 3) || moes_sb(*ss[i]) % 4 || ss[i]->row_bytes % 16)
                return false;
        if (a.shg.row_bytes != a.gate.row_bytes || a.shu.row_bytes != a.gate.row_bytes ||
            a.shg.gshift != a.gate.gshift || a.shu.gshift != a.gate.gshift)
            return false;
    }
    return true;
}
/* copy row `row` of w (codes, scales, biases) into staged slot s (codes at
 * cb + s * rb, scales at sb_ + s * sbr, biases at bb + s * sbr): chunk
 * `part` of the row's cpr 16-byte chunks and swr 4-byte scale words, the
 * caller dealing parts out over its threads */
__device__ __forceinline__ void moes_copy(const mkc_w &w, int64_t row, uint8_t *cb, uint8_t *sb_, uint8_t *bb,
                                          int64_t s, int64_t rb, int64_t sbr, int64_t part) {
    const int64_t cpr = w.row_bytes / 16, swr = moes_sb(w) / 4;
    if (part < cpr) {
        mkc_cp_async<16>(cb + s * rb + part * 16, w.data + row * w.row_bytes + part * 16, true);
    } else if (part < cpr + swr) {
        const int64_t p = part - cpr, off = row * moes_sb(w) + p * 4;
        mkc_cp_async<4>(sb_ + s * sbr + p * 4, (const uint8_t *)w.scales + off, true);
        mkc_cp_async<4>(bb + s * sbr + p * 4, (const uint8_t *)w.biases + off, true);
    }
}

/* n units of BYTES of the rows {g, u, g + stride, u + stride} (a pair's
 * gate and up rows, or their scale or bias rows) into dst, dst + stride,
 * dst + 2 stride and dst + 3 stride, a warp's lanes taking every 32nd
 * unit. Not unrolled: unrolled, k_gateup_q8s took 128 registers against 64. */
template <int BYTES>
__device__ __forceinline__ void gateup_s_rows4(uint8_t *dst, const uint8_t *g, const uint8_t *u, int stride, int n,
                                               int lane) {
#pragma unroll 1
    for (int c = lane; c < n; c += 32) {
        const int o = c * BYTES;
        mkc_cp_async<BYTES>(dst + o, g + o, true);
        mkc_cp_async<BYTES>(dst + stride + o, u + o, true);
        mkc_cp_async<BYTES>(dst + 2 * stride + o, g + stride + o, true);
        mkc_cp_async<BYTES>(dst + 3 * stride + o, u + stride + o, true);
    }
}

/* One pair's rows into staged slots 4 pi .. 4 pi + 3 ({G0, U0, G1, U1}:
 * logical rows lr and lr + 1, a routed row j I + r with its expert from
 * the routing, or with C its VRAM cache slot, then the shared expert's
 * rows), codes, scales and biases, by the 32 lanes of one warp (the
 * caller commits the group). The expert is read and the four rows' bases
 * computed once a pair; a lane then issues its chunks with no division.
 * Why: the first version dealt every 16-byte copy out by a 64-bit
 * division and looked the expert up again for each; ncu on an H100 put
 * k_gateup_q8s at 2.1x k_gateup_q8's instructions, most of them in that
 * loop (bench/RESULTS.md session 34). A pair never straddles two experts
 * (I and Is are even). */
template <bool C>
__device__ __forceinline__ void gateup_s_pair_copy(const moe_args &a, const int32_t *__restrict__ idx,
                                                   const int32_t *__restrict__ loc, int64_t lr, int64_t pi,
                                                   uint8_t *cb, uint8_t *sb_, uint8_t *bb, int lane) {
    const int64_t nr = (int64_t)a.k * a.I;
    const mkc_w *G = &a.shg, *U = &a.shu;
    int64_t row = lr - nr;
    if (lr < nr) {
        const int32_t j = (int32_t)(lr / a.I), r = (int32_t)(lr - (int64_t)j * a.I);
        int32_t e = __ldg(idx + j);
        bool cached = false;
        if constexpr (C) {
            const int32_t slot = __ldg(loc + j);
            if (slot >= 0) {
                e = slot;
                cached = true;
            }
        }
        G = cached ? &a.cgate : &a.gate;
        U = cached ? &a.cup : &a.up;
        row = (int64_t)e * a.I + r;
    }
    /* gate and up (and the shared expert's) share the kind, width and scale layout (moes_takes) */
    const int rb = (int)a.gate.row_bytes, sbr = (int)moes_sb(a.gate), cpr = rb / 16, swr = sbr / 4;
    const uint8_t *gs = (const uint8_t *)G->scales + row * sbr, *us = (const uint8_t *)U->scales + row * sbr;
    const uint8_t *gb = (const uint8_t *)G->biases + row * sbr, *ub = (const uint8_t *)U->biases + row * sbr;
    gateup_s_rows4<16>(cb + 4 * pi * rb, G->data + row * rb, U->data + row * rb, rb, cpr, lane);
    gateup_s_rows4<4>(sb_ + 4 * pi * sbr, gs, us, sbr, swr, lane);
    gateup_s_rows4<4>(bb + 4 * pi * sbr, gb, ub, sbr, swr, lane);
}

template <int BITS, int SD, bool C>
__device__ __forceinline__ void gateup_s_run(const moe_args &a, const float *__restrict__ xg,
                                             const int32_t *__restrict__ idx, float *__restrict__ h,
                                             float *__restrict__ hs, const int32_t *__restrict__ loc, int64_t per) {
    MKC_DYN_SMEM(float4, mkc_sm4);
    constexpr int VPC = 128 / BITS;
    const int64_t nr = (int64_t)a.k * a.I, npair = (nr + a.Is) / 2;
    const int64_t P0 = (int64_t)blockIdx.x * per, np = npair - P0 < per ? npair - P0 : per;
    const int64_t rb = a.gate.row_bytes, sbr = moes_sb(a.gate), cpr = rb / 16;
    float *xs = (float *)mkc_sm4;
    uint8_t *cb = (uint8_t *)mkc_sm4 + MKC_PADDED((int64_t)a.H) * 4;
    uint8_t *sb_ = cb + 4 * np * rb, *bb = sb_ + moes_al16(4 * np * sbr);
    mkc_pdl_enter(); /* the routing is the router kernel's */
    /* pair pi's rows (logical rows 2 (P0 + pi) and the next) by warp pi % warps, into slots 4 pi .. */
    for (int64_t pi = threadIdx.x >> 5; pi < np; pi += blockDim.x >> 5)
        gateup_s_pair_copy<C>(a, idx, loc, 2 * (P0 + pi), pi, cb, sb_, bb, threadIdx.x & 31);
    mkc_cp_commit();
    mkc_stage_pad(xs, xg, a.H);
    mkc_cp_wait<0>();
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const float *xr[4] = {xs, xs, xs, xs};
    for (int64_t pi = threadIdx.x >> 5; pi < np; pi += blockDim.x >> 5) {
        /* rows {G0, U0, G1, U1}: slots 4 pi .. 4 pi + 3, as k_gateup's {G, U, G, U} */
        const int64_t sl[4] = {4 * pi, 4 * pi + 1, 4 * pi + 2, 4 * pi + 3};
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int64_t c = lane; c < cpr; c += 32) {
            const int64_t g = (c * VPC) >> a.gate.gshift;
            uint4 qq[4];
            float sc[4], bi[4];
            mkc_staged_chunk<SD, 4>(cb, sb_, bb, sl, rb, sbr, c, g, qq, sc, bi);
            mkc_aff_chunk_p<BITS, 4, true>(qq, sc, bi, xr, mkc_xi(c * VPC, 4), acc);
        }
        gateup_store(acc, lane, 2 * (P0 + pi), nr, h, hs);
    }
}

template <bool C>
__global__ void __launch_bounds__(MOE_WARPS * 32)
    k_gateup_s(const moe_args a, const float *__restrict__ xg, const int32_t *__restrict__ idx,
               float *__restrict__ h, float *__restrict__ hs, const int32_t *__restrict__ loc, int64_t per) {
    switch (a.gate.kind) {
    case MKC_A4_F32: gateup_s_run<4, 0, C>(a, xg, idx, h, hs, loc, per); break;
    case MKC_A4_BF16: gateup_s_run<4, 1, C>(a, xg, idx, h, hs, loc, per); break;
    case MKC_A4_F16: gateup_s_run<4, 2, C>(a, xg, idx, h, hs, loc, per); break;
    case MKC_A8_F32: gateup_s_run<8, 0, C>(a, xg, idx, h, hs, loc, per); break;
    case MKC_A8_BF16: gateup_s_run<8, 1, C>(a, xg, idx, h, hs, loc, per); break;
    default: gateup_s_run<8, 2, C>(a, xg, idx, h, hs, loc, per); break;
    }
}

/* ---- k_gateup_q8s: k_gateup_q8's pairs with their rows staged ----------------
 * (mk_cuda_set_gateup_staged; one token, int8 activations, the layers both
 * moe_q8_takes and moes_takes take.) Why: k_gateup_q8 holds a pair's rows
 * in registers (122 a thread), so two blocks fit an SM and the 30B shape's
 * 384 blocks run in 1.45 waves: the second wave's rows are requested only
 * when the first's blocks retire, one more DRAM round trip and the idx and
 * x reads again (~10.5 us a layer for ~12.6 MB). Here a block takes `per`
 * pairs (the host sizes it so that all blocks fit in one wave, two an SM,
 * in MOES_BUDGET), each warp copies its own pairs' rows (codes, scales,
 * biases: gateup_s_pair_copy, one cp.async group a pair) into shared memory as soon
 * as the routing is read, the block quantizes x meanwhile, and each warp
 * sums a pair once that pair's group has landed (no block barrier on the
 * copies): every byte of the step in flight at once, no registers held.
 * The sums are mkc_q8_terms' over the same chunks in the same order as
 * k_gateup_q8's mkc_q8_finish: bitwise its h. Shared memory: x quantized
 * (mkc_q8s_span(H)), then moes_gateup_smem's codes, scales and biases. */
__host__ __device__ __forceinline__ int64_t moes_gateup_q8_smem(const moe_args &a, int64_t np) {
    const int64_t rows = 4 * np;
    return mkc_q8s_span(a.H) + rows * a.gate.row_bytes + 2 * moes_al16(rows * moes_sb(a.gate));
}

/* Host and emulation: k_gateup_q8s's threads for blocks of `per` pairs: a
 * warp a pair, from MOE_WARPS up to MOES_Q8S_WARPS warps (more pairs than
 * that: some warps take two or more). Why: with 8 warps, the 30B shape's 12
 * pairs a block left half the warps two pairs each and the block waited on
 * them (session 34); 12 warps of 64 registers, two blocks an SM, take one
 * pair each. */
#define MOES_Q8S_WARPS 16
__host__ __device__ __forceinline__ unsigned moes_q8s_threads(int64_t per) {
    return 32u * (unsigned)(per < MOE_WARPS ? MOE_WARPS : per > MOES_Q8S_WARPS ? MOES_Q8S_WARPS : per);
}

template <int BITS, int SD, bool C>
__device__ __forceinline__ void gateup_q8s_run(const moe_args &a, const float *__restrict__ xg,
                                               const int32_t *__restrict__ idx, float *__restrict__ h,
                                               float *__restrict__ hs, const int32_t *__restrict__ loc, int64_t per) {
    MKC_DYN_SMEM(float4, mkc_sm4);
    constexpr int VPC = 128 / BITS;
    const int64_t nr = (int64_t)a.k * a.I, npair = (nr + a.Is) / 2;
    const int64_t P0 = (int64_t)blockIdx.x * per, np = npair - P0 < per ? npair - P0 : per;
    const int64_t rb = a.gate.row_bytes, sbr = moes_sb(a.gate), cpr = rb / 16;
    const mkc_q8s xq = mkc_q8s_at(mkc_sm4, a.H);
    uint8_t *cb = (uint8_t *)mkc_sm4 + mkc_q8s_span(a.H);
    uint8_t *sb_ = cb + 4 * np * rb, *bb = sb_ + moes_al16(4 * np * sbr);
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    mkc_pdl_enter(); /* the routing is the router kernel's */
    /* the warp's pairs pi = wid, wid + nw, ...: slot 4 pi + 2 li + gu holds logical row 2 (P0 + pi) + li
     * (a routed row j I + r, then the shared rows), gate or up; one group a pair */
    int mine = 0;
    for (int64_t pi = wid; pi < np; pi += nw, mine++) {
        gateup_s_pair_copy<C>(a, idx, loc, 2 * (P0 + pi), pi, cb, sb_, bb, lane);
        mkc_cp_commit();
    }
    mkc_q8_stage_for(a.gate, xg, xq); /* gate's width is H */
    __syncthreads();
    int left = mine;
    for (int64_t pi = wid; pi < np; pi += nw) {
        /* this pair's group landed (groups complete in order: at most `left - 1` younger ones pending;
         * wait<1> waits for more than that when left > 2, never for less) */
        if (--left > 0)
            mkc_cp_wait<1>();
        else
            mkc_cp_wait<0>();
        __syncwarp(); /* the other lanes' copies of the pair */
        const int64_t sl[4] = {4 * pi, 4 * pi + 1, 4 * pi + 2, 4 * pi + 3}; /* {G0, U0, G1, U1} */
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int64_t c = lane; c < cpr; c += 32) {
            const int64_t g = (c * VPC) >> a.gate.gshift;
            uint4 qq[4];
            float sc[4], bi[4];
            mkc_staged_chunk<SD, 4>(cb, sb_, bb, sl, rb, sbr, c, g, qq, sc, bi);
            mkc_q8_terms<BITS, 4>(qq, sc, bi, xq, c, acc);
        }
        gateup_store(acc, lane, 2 * (P0 + pi), nr, h, hs);
    }
}

template <bool C>
__global__ void __launch_bounds__(MOES_Q8S_WARPS * 32, 2)
    k_gateup_q8s(const moe_args a, const float *__restrict__ xg, const int32_t *__restrict__ idx,
                 float *__restrict__ h, float *__restrict__ hs, const int32_t *__restrict__ loc, int64_t per) {
    switch (a.gate.kind) {
    case MKC_A4_F32: gateup_q8s_run<4, 0, C>(a, xg, idx, h, hs, loc, per); break;
    case MKC_A4_BF16: gateup_q8s_run<4, 1, C>(a, xg, idx, h, hs, loc, per); break;
    case MKC_A4_F16: gateup_q8s_run<4, 2, C>(a, xg, idx, h, hs, loc, per); break;
    case MKC_A8_F32: gateup_q8s_run<8, 0, C>(a, xg, idx, h, hs, loc, per); break;
    case MKC_A8_BF16: gateup_q8s_run<8, 1, C>(a, xg, idx, h, hs, loc, per); break;
    default: gateup_q8s_run<8, 2, C>(a, xg, idx, h, hs, loc, per); break;
    }
}

/* down2_load's pass from the staged rows: output row i of the block (slots
 * i * S + j for expert choice j, i * S + k for the shared expert) */
template <int BITS, int SD>
__device__ __forceinline__ void down_s_load(const moe_args &a, const uint8_t *cb, const uint8_t *sb_,
                                            const uint8_t *bb, int64_t rb, int64_t sbr, int64_t i,
                                            const float *sw, float sg, int lane, int t0, down2_pass &p) {
    constexpr int VPC = 128 / BITS;
    const int nc = (int)(a.down.row_bytes / 16), ncs = a.has_shared ? (int)(a.shd.row_bytes / 16) : 0;
    const int nr = a.k * nc, ntask = nr + ncs;
    const int64_t S = moes_down_slots(a);
#pragma unroll
    for (int q = 0; q < DOWN2_T; q++) {
        const int t = t0 + 32 * q + lane;
        p.wj[q] = 0.0f;
        p.xl[q] = 0;
        p.sh[q] = false;
        if (t < ntask) {
            int64_t c, sl;
            int gshift;
            if (t < nr) {
                const int j = t / nc;
                c = t - j * nc;
                sl = i * S + j;
                p.wj[q] = sw[j];
                p.xl[q] = (int32_t)(j * a.I + c * VPC);
                gshift = a.down.gshift;
            } else {
                c = t - nr;
                sl = i * S + a.k;
                p.wj[q] = sg;
                p.xl[q] = (int32_t)(c * VPC);
                p.sh[q] = true;
                gshift = a.shd.gshift;
            }
            const int64_t g = (c * VPC) >> gshift;
            p.qq[q] = *(const uint4 *)(cb + sl * rb + c * 16);
            p.sc[q] = mkc_sv<SD>(sb_ + sl * sbr, g);
            p.bi[q] = mkc_sv<SD>(bb + sl * sbr, g);
        }
    }
}

template <int BITS, int SD, bool C>
__device__ __forceinline__ void down_s_run(const moe_args &a, const int32_t *sidx, const int32_t *sloc,
                                           const float *sw, float sg, const float *hg, const float *hsg, float *y,
                                           int accumulate, int64_t per) {
    MKC_DYN_SMEM(float4, mkc_sm4);
    const int64_t O0 = (int64_t)blockIdx.x * per, no = a.H - O0 < per ? a.H - O0 : per;
    const int64_t S = moes_down_slots(a), rb = moes_down_rb(a), sbr = moes_down_sbr(a);
    const int64_t nh = (int64_t)a.k * a.I, hs_at = MKC_PADDED(nh);
    float *hsm = (float *)mkc_sm4;
    uint8_t *cb = (uint8_t *)mkc_sm4 + moes_h_bytes(a);
    uint8_t *sb_ = cb + no * S * rb, *bb = sb_ + moes_al16(no * S * sbr);
    /* the block's rows, before the wait (the routing is complete: see down2_run) */
    const int64_t cd = a.down.row_bytes / 16 + moes_sb(a.down) / 4;
    const int64_t cs = a.has_shared ? a.shd.row_bytes / 16 + moes_sb(a.shd) / 4 : 0;
    const int64_t per_o = a.k * cd + cs;
    for (int64_t c = threadIdx.x; c < no * per_o; c += blockDim.x) {
        const int64_t i = c / per_o, u = c - i * per_o, o = O0 + i;
        if (u < a.k * cd) {
            const int j = (int)(u / cd);
            const int64_t part = u - j * cd;
            int32_t e = sidx[j];
            bool cached = false;
            if constexpr (C) {
                if (sloc[j] >= 0) {
                    e = sloc[j];
                    cached = true;
                }
            }
            moes_copy(cached ? a.cdown : a.down, (int64_t)e * a.H + o, cb, sb_, bb, i * S + j, rb, sbr, part);
        } else {
            moes_copy(a.shd, o, cb, sb_, bb, i * S + a.k, rb, sbr, u - a.k * cd);
        }
    }
    mkc_cp_commit();
    mkc_pdl_enter();
    mkc_stage_pad(hsm, hg, nh);
    if (a.has_shared)
        mkc_stage_pad(hsm + hs_at, hsg, a.Is);
    mkc_cp_wait<0>();
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const int nc = (int)(a.down.row_bytes / 16), ncs = a.has_shared ? (int)(a.shd.row_bytes / 16) : 0;
    const int ntask = a.k * nc + ncs;
    for (int64_t i = threadIdx.x >> 5; i < no; i += blockDim.x >> 5) {
        down2_pass p;
        float tot = 0.0f;
        for (int t0 = 0; t0 < ntask; t0 += 32 * DOWN2_T) {
            down_s_load<BITS, SD>(a, cb, sb_, bb, rb, sbr, i, sw, sg, lane, t0, p);
            tot = down2_use<BITS>(p, ntask, t0, lane, hsm, hsm + hs_at, 4, tot);
        }
        tot = mkc_warp_sum(tot);
        if (lane == 0) {
            const int64_t o = O0 + i;
            y[o] = accumulate ? y[o] + tot : tot;
        }
    }
}

template <bool C>
__global__ void __launch_bounds__(MOE_WARPS * 32)
    k_down_s(const moe_args a, const int32_t *__restrict__ idx, const float *__restrict__ wt,
             const float *__restrict__ hg, const float *__restrict__ hsg, const float *__restrict__ logits,
             float *__restrict__ y, int accumulate, const int32_t *__restrict__ loc, int64_t per) {
    __shared__ int32_t sidx[MOE_MAX_K];
    __shared__ int32_t sloc[C ? MOE_MAX_K : 1];
    __shared__ float sw[MOE_MAX_K];
    const float sg = down_routing<C>(a, idx, wt, loc, logits, sidx, sloc, sw);
    switch (a.down.kind) {
    case MKC_A4_F32: down_s_run<4, 0, C>(a, sidx, sloc, sw, sg, hg, hsg, y, accumulate, per); break;
    case MKC_A4_BF16: down_s_run<4, 1, C>(a, sidx, sloc, sw, sg, hg, hsg, y, accumulate, per); break;
    case MKC_A4_F16: down_s_run<4, 2, C>(a, sidx, sloc, sw, sg, hg, hsg, y, accumulate, per); break;
    case MKC_A8_F32: down_s_run<8, 0, C>(a, sidx, sloc, sw, sg, hg, hsg, y, accumulate, per); break;
    case MKC_A8_BF16: down_s_run<8, 1, C>(a, sidx, sloc, sw, sg, hg, hsg, y, accumulate, per); break;
    default: down_s_run<8, 2, C>(a, sidx, sloc, sw, sg, hg, hsg, y, accumulate, per); break;
    }
}

#endif
