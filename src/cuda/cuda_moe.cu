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
#include <mutex>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_impl.cuh"
#include "cuda/cuda_route_block.cuh"
#include "cuda/cuda_moe_kernels.cuh"
#include "cuda/cuda_grid_barrier.cuh"


/* Per token (nmax of them, at moe_token_strides' strides): */
struct mk_cuda_moe_ws {
    void *base;
    float *logits; /* E + 1 (the last: shared-gate logit) */
    int32_t *idx;  /* k */
    int32_t *loc;  /* k: the VRAM cache slot of each chosen expert, or -1 (with a cache) */
    float *w;      /* k */
    float *h;      /* k * I */
    float *hs;     /* Is */
    unsigned *ticket; /* one per token */
    int64_t E, k, I, Is, nmax;
    size_t bytes;
};

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
                      mkc_is_fp8(k) ? "FP8 E4M3" : k == MKC_MX4 ? "MXFP4" : k == MKC_MX8 ? "MXFP8" : "NVFP4");
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
    return mk_cuda_moe_ws_new_n(m, 1, out);
}

extern "C" mk_status mk_cuda_moe_ws_new_n(const mk_cuda_moe *m, int64_t nmax, mk_cuda_moe_ws **out) {
    *out = NULL;
    MK_TRY(mk_cuda_moe_check(m));
    if (nmax < 1 || nmax > MK_CUDA_MOE_TOKENS)
        return mk_err(MK_E_ARG, "moe: a workspace for 1..%d tokens, asked for %lld", MK_CUDA_MOE_TOKENS,
                      (long long)nmax);
    mk_cuda_moe_ws *ws = (mk_cuda_moe_ws *)calloc(1, sizeof *ws);
    if (!ws)
        return mk_err(MK_E_NOMEM, "moe: workspace");
    ws->E = m->n_experts;
    ws->k = m->top_k;
    ws->I = m->inter;
    ws->Is = m->has_shared ? m->shared_inter : 0;
    ws->nmax = nmax;
    moe_args tk;
    memset(&tk, 0, sizeof tk);
    tk.E = (int32_t)ws->E;
    tk.k = (int32_t)ws->k;
    tk.I = (int32_t)ws->I;
    tk.Is = (int32_t)ws->Is;
    moe_token_strides(&tk);
    const size_t n = (size_t)nmax;
    const size_t o_log = 0, o_idx = o_log + al16(n * (size_t)tk.ls * 4), o_loc = o_idx + al16(n * (size_t)tk.ks * 4),
                 o_w = o_loc + al16(n * (size_t)tk.ks * 4), o_h = o_w + al16(n * (size_t)tk.ks * 4),
                 o_hs = o_h + al16(n * (size_t)tk.hstr * 4), o_t = o_hs + al16(n * (size_t)tk.hsstr * 4),
                 total = o_t + al16(n * sizeof(unsigned));
    ws->bytes = total;
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

extern "C" mk_status mk_cuda_moe_ws_zero(mk_cuda_moe_ws *ws, void *stream) {
    MKC_TRY(cudaMemsetAsync(ws->base, 0, ws->bytes, (cudaStream_t)stream), "zeroing the moe workspace");
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

/* launch one kernel of MOE_WARPS warps a block, with the
 * programmatic-dependent-launch attribute when pdl */
template <typename... KA, typename... A>
static cudaError_t launch(void (*k)(KA...), unsigned grid, size_t smem, cudaStream_t s, bool pdl, A... args) {
    return mkc_launch(k, dim3(grid), dim3(MOE_WARPS * 32), smem, s, pdl, args...);
}

static unsigned long long g_q8s_launches, g_late_launches;

extern "C" unsigned long long mk_cuda_gateup_staged_launches(void) {
    return __atomic_load_n(&g_q8s_launches, __ATOMIC_RELAXED);
}

extern "C" unsigned long long mk_cuda_route_late_launches(void) {
    return __atomic_load_n(&g_late_launches, __ATOMIC_RELAXED);
}

/* The staged-weight kernels' units per block (pairs of intermediate rows
 * for k_gateup_s, output rows for k_down_s; which layers they take:
 * moes_takes): a block per half SM, fewer units when they do not fit
 * MOES_BUDGET */
static int64_t moes_per(int64_t units, int64_t fixed, int64_t per_unit) {
    const int nsm = mkc_sm_count();
    const int64_t room = MOES_BUDGET - fixed - 64, fit = room > 0 ? room / per_unit : 0;
    int64_t per = (units + 2 * nsm - 1) / (2 * nsm);
    per = per > fit ? fit : per;
    return per >= 1 && (units + per - 1) / per <= 0x7fffffff ? per : 0;
}

/* A kernel's static shared memory (the whole 48 KB when it cannot be read,
 * so that nothing more is asked of it). Engines on several host threads
 * share the cache: a lock, so that no caller reads a slot whose kernel is
 * written and its size not yet. */
static int64_t kernel_static_smem(const void *k) {
    static std::mutex mu;
    static const void *known[4];
    static int64_t size[4];
    std::lock_guard<std::mutex> hold(mu);
    for (int i = 0; i < 4 && known[i]; i++)
        if (known[i] == k)
            return size[i];
    cudaFuncAttributes fa;
    if (cudaFuncGetAttributes(&fa, k) != cudaSuccess) {
        (void)cudaGetLastError();
        return MKC_SMEM_MAX;
    }
    for (int i = 0; i < 4; i++)
        if (!known[i]) { /* asked once per kernel (every MoE step asks) */
            known[i] = k;
            size[i] = (int64_t)fa.sharedSizeBytes;
            break;
        }
    return (int64_t)fa.sharedSizeBytes;
}

/* Whether k_router's blocks can stage a row of H floats beside their own
 * shared memory without the opt-in */
static bool router_stages(int64_t H) {
    return H * 4 + kernel_static_smem((const void *)k_router<true>) <= MKC_SMEM_MAX;
}

mk_status mkc_moe_launch(const mk_cuda_moe *m, mk_cuda_moe_ws *ws, const float *x, float *y, int64_t n,
                         bool accumulate, void *stream, unsigned parts, bool pdl, const mk_cuda_fold *f,
                         bool *taken) {
    if (taken)
        *taken = f == NULL;
    moe_args a;
    if (ws->E != m->n_experts || ws->k != m->top_k || ws->I != m->inter ||
        ws->Is != (m->has_shared ? m->shared_inter : 0))
        return mk_err(MK_E_MISMATCH, "moe: workspace was made for another shape");
    if (n < 1 || n > ws->nmax)
        return mk_err(MK_E_ARG, "moe: 1..%lld tokens for this workspace, found %lld", (long long)ws->nmax,
                      (long long)n);
    /* x == y is fine: only k_router and k_gateup read x, k_down writes y after them */
    if (((uintptr_t)x & 15) != 0)
        return mk_err(MK_E_ARG, "moe: x must be 16-byte aligned device memory");
    if (n > 1 && m->hidden % 4)
        return mk_err(MK_E_UNSUPPORTED, "moe: several tokens in one step need hidden a multiple of 4 (each row of x "
                      "16-byte aligned), found %lld; run them one by one", (long long)m->hidden);
    MK_TRY(moe_args_of(m, &a));
    a.nt = (int32_t)n;
    a.ga = n > 1 && a.I % (2 * MOE_WARPS) == 0;
    const unsigned nt = (unsigned)n;
    cudaStream_t s = (cudaStream_t)stream;
    size_t srx = 0; /* the router's staged x (a fold) */
    if (f) {
        if (n != 1 || !(parts & 1) || f->dim != a.H || x != f->xb || !router_stages(a.H) ||
            !mkc_addnorm_of(f, MOE_WARPS * 32, &a.an))
            return MK_OK;
        a.an.ticket = NULL; /* the router's own */
        srx = (size_t)a.H * 4;
        *taken = true;
    }
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
    /* the staged-weight kernels (mk_cuda_set_moe_staged), one token */
    const bool st = mk_cuda_moe_staged() && n == 1 && v2 && moes_takes(a);
    int64_t gper = 0, dper = 0;
    if (st) {
        gper = moes_per(((int64_t)a.k * a.I + a.Is) / 2, MKC_PADDED((int64_t)a.H) * 4,
                        4 * (a.gate.row_bytes + 2 * moes_sb(a.gate)));
        dper = moes_per(a.H, moes_h_bytes(a), moes_down_slots(a) * (moes_down_rb(a) + 2 * moes_down_sbr(a)));
        if (gper && !mkc_smem_opt_in((const void *)(cc ? k_gateup_s<true> : k_gateup_s<false>), MOES_BUDGET))
            gper = 0;
        if (dper && !mkc_smem_opt_in((const void *)(cc ? k_down_s<true> : k_down_s<false>), MOES_BUDGET))
            dper = 0;
    }
    /* int8 activations (mk_cuda_set_act_int8): the CPU's int8 decode rule for the experts, each token's
     * (the router's below) */
    const bool q8 = mk_cuda_act_int8() && !st && moe_q8_takes(a);
    const size_t q8x = q8 ? (size_t)mkc_q8s_bytes(a.H) : 0, q8h = q8 ? (size_t)mkc_q8s_bytes(nh) : 0;
    /* the int8 gate/up with its rows staged (mk_cuda_set_gateup_staged), one token */
    int64_t qper = 0;
    if ((parts & 2) && q8 && n == 1 && mk_cuda_gateup_staged() && moes_takes(a)) {
        qper = moes_per(((int64_t)a.k * a.I + a.Is) / 2, mkc_q8s_span(a.H),
                        4 * (a.gate.row_bytes + 2 * moes_sb(a.gate)));
        if (qper && !mkc_smem_opt_in((const void *)(cc ? k_gateup_q8s<true> : k_gateup_q8s<false>), MOES_BUDGET))
            qper = 0;
    }
    /* the routing ranked by its readers (mk_cuda_set_route_late): one token, all three kernels, no fold
     * into the router, where the int8 experts' k_gateup_q8 and k_down2_q8 run (not the staged gate/up) */
    const bool late = mk_cuda_route_late() && n == 1 && !f && parts == 7u && q8 && !qper;
    a.late = late ? 1 : 0;
    /* the router, first in the stream (its launch needs a.late; the choices above launch nothing). int8
     * activations: the router's affine rows on the CPU's int8 rule too (moe_q8_router) */
    const void *rk = f ? (const void *)k_router<true, true> : (const void *)k_router<false, true>;
    const bool rq8 = mk_cuda_act_int8() && moe_q8_router(a, f != NULL, kernel_static_smem(rk));
    if (rq8)
        srx = (size_t)moe_q8_router_smem(a, f != NULL);
    if (parts & 1)
        MKC_TRY(launch(rq8 ? (f ? k_router<true, true> : k_router<false, true>)
                           : (f ? k_router<true> : k_router<false>),
                       nblocks(a.E + a.has_sg) * nt, srx, s, pdl, a, x, ws->logits, ws->idx, ws->w, ws->ticket,
                       ws->loc),
                f ? "launching the router with the residual norm folded in" : "launching the router");
    a.an = mkc_addnorm(); /* the other kernels read x = xb, which the router wrote */
    if ((parts & 2) && qper) {
        const int64_t npair = ((int64_t)a.k * a.I + a.Is) / 2;
        MKC_TRY(mkc_launch(cc ? k_gateup_q8s<true> : k_gateup_q8s<false>, dim3((unsigned)((npair + qper - 1) / qper)),
                           dim3(moes_q8s_threads(qper)), (size_t)moes_gateup_q8_smem(a, qper), s, pdl, a, x,
                           (const int32_t *)ws->idx, ws->h, ws->hs, (const int32_t *)ws->loc, qper),
                "launching the experts' gate/up (int8 activations, staged rows)");
        __atomic_add_fetch(&g_q8s_launches, 1ull, __ATOMIC_RELAXED);
    } else if ((parts & 2) && q8) {
        if (late)
            __atomic_add_fetch(&g_late_launches, 1ull, __ATOMIC_RELAXED);
        MKC_TRY(launch(late ? (cc ? k_gateup_q8<true, true> : k_gateup_q8<false, true>)
                            : (cc ? k_gateup_q8<true> : k_gateup_q8<false>),
                       nblocks(((int64_t)a.k * a.I + a.Is) / 2) * nt, q8x, s, pdl, a, x, (const int32_t *)ws->idx,
                       ws->h, ws->hs, (const int32_t *)ws->loc, mk_cuda_q8_early() ? 1 : 0, (const float *)ws->logits,
                       ws->idx, ws->w, ws->loc),
                late ? "launching the experts' gate/up (int8 activations, ranking the routing)"
                     : "launching the experts' gate/up (int8 activations)");
    } else if ((parts & 2) && gper) {
        const int64_t npair = ((int64_t)a.k * a.I + a.Is) / 2;
        MKC_TRY(launch(cc ? k_gateup_s<true> : k_gateup_s<false>, (unsigned)((npair + gper - 1) / gper),
                       (size_t)moes_gateup_smem(a, gper), s, pdl, a, x, (const int32_t *)ws->idx, ws->h, ws->hs,
                       (const int32_t *)ws->loc, gper),
                "launching the experts' gate/up (staged weights)");
    } else if (parts & 2)
        MKC_TRY(launch(v2 ? (cc ? k_gateup<true, true> : k_gateup<true, false>)
                          : (cc ? k_gateup<false, true> : k_gateup<false, false>),
                       nblocks(((int64_t)a.k * a.I + a.Is) / 2) * nt, smx, s, pdl, a, x, (const int32_t *)ws->idx, ws->h,
                       ws->hs, px ? 2 : sx ? 1 : 0, (const int32_t *)ws->loc),
                "launching the experts' gate/up");
    /* k_down2 takes the affine formats (rows of whole 16-byte chunks) */
    const bool d2 = v2 && mkc_is_aff(a.down.kind);
    const bool pd = d2 && ph;
    const size_t smh = pd ? (size_t)(MKC_PADDED((int64_t)a.k * a.I) + MKC_PADDED((int64_t)a.Is)) * 4
                          : sh ? (size_t)nh * 4 : 0;
    if ((parts & 4) && q8) {
        MKC_TRY(launch(late ? (cc ? k_down2_q8<true, true> : k_down2_q8<false, true>)
                            : (cc ? k_down2_q8<true> : k_down2_q8<false>),
                       nblocks(a.H) * nt, q8h, s, pdl, a,
                       (const int32_t *)ws->idx, (const float *)ws->w, (const float *)ws->h, (const float *)ws->hs,
                       (const float *)ws->logits, y, accumulate ? 1 : 0, (const int32_t *)ws->loc),
                "launching the experts' down (int8 activations)");
    } else if ((parts & 4) && dper) {
        MKC_TRY(launch(cc ? k_down_s<true> : k_down_s<false>, (unsigned)((a.H + dper - 1) / dper),
                       (size_t)moes_down_smem(a, dper), s, pdl, a, (const int32_t *)ws->idx, (const float *)ws->w,
                       (const float *)ws->h, (const float *)ws->hs, (const float *)ws->logits, y,
                       accumulate ? 1 : 0, (const int32_t *)ws->loc, dper),
                "launching the experts' down (staged weights)");
    } else if (parts & 4)
        MKC_TRY(launch(d2 ? (cc ? k_down2<true> : k_down2<false>) : (cc ? k_down<true> : k_down<false>), nblocks(a.H) * nt,
                       smh, s, pdl, a, (const int32_t *)ws->idx, (const float *)ws->w, (const float *)ws->h,
                       (const float *)ws->hs, (const float *)ws->logits, y, accumulate ? 1 : 0, pd ? 2 : sh ? 1 : 0,
                       (const int32_t *)ws->loc),
                "launching the experts' down");
    return MK_OK;
}

extern "C" mk_status mk_cuda_moe_step(const mk_cuda_moe *m, mk_cuda_moe_ws *ws, const float *x, float *y,
                                      bool accumulate, void *stream) {
    return mkc_moe_launch(m, ws, x, y, 1, accumulate, stream, 7u, mk_cuda_moe_pdl());
}

extern "C" mk_status mk_cuda_moe_step_fold(const mk_cuda_moe *m, mk_cuda_moe_ws *ws, const mk_cuda_fold *f, float *y,
                                           bool accumulate, void *stream, bool *taken) {
    return mkc_moe_launch(m, ws, f->xb, y, 1, accumulate, stream, 7u, mk_cuda_moe_pdl(), f, taken);
}

extern "C" mk_status mk_cuda_moe_step_n(const mk_cuda_moe *m, mk_cuda_moe_ws *ws, const float *x, float *y, int64_t n,
                                        bool accumulate, void *stream) {
    return mkc_moe_launch(m, ws, x, y, n, accumulate, stream, 7u, mk_cuda_moe_pdl());
}



extern "C" mk_status mk_cuda_moe_routing(const mk_cuda_moe_ws *ws, int32_t *idx, float *w) {
    MK_TRY(mk_cuda_sync());
    MK_TRY(mk_cuda_download(idx, ws->idx, (size_t)ws->k * sizeof *idx));
    MK_TRY(mk_cuda_download(w, ws->w, (size_t)ws->k * sizeof *w));
    return MK_OK;
}

extern "C" mk_status mk_cuda_moe_activations(const mk_cuda_moe_ws *ws, float *h, float *hs) {
    MK_TRY(mk_cuda_sync());
    MK_TRY(mk_cuda_download(h, ws->h, (size_t)(ws->k * ws->I) * sizeof *h));
    if (ws->Is > 0 && hs)
        MK_TRY(mk_cuda_download(hs, ws->hs, (size_t)ws->Is * sizeof *hs));
    return MK_OK;
}

extern "C" mk_status mk_cuda_moe_cache_slots(const mk_cuda_moe_ws *ws, int32_t *loc) {
    MK_TRY(mk_cuda_sync());
    return mk_cuda_download(loc, ws->loc, (size_t)ws->k * sizeof *loc);
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
    MKC_DYN_SMEM(float4, mkc_sm4);
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
        mkc_grid_barrier(s.bar, s.bar + 1);
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
        mkc_grid_barrier(s.bar, s.bar + 1);
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
        mkc_grid_barrier(s.bar, s.bar + 1);
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
