/* The CUDA backend's causal attention (mk_attn_args: GQA with packed or
 * strided caches, MLA's latent cache with v = k).
 *
 * One block per (token, query head), ATT_WARPS warps; warp w takes cache
 * rows 32w .. 32w+31, then 32(w + ATT_WARPS) .., one row's score per lane,
 * and keeps an online softmax over those 32-row steps: running max m,
 * running sum l and the weighted sum of value rows (lane d holds dims d,
 * d+32, ...), rescaled by exp(m_old - m_new) when the max grows. The
 * warps' partial states are then merged in shared memory. Same function as
 * the CPU's two-pass softmax (backend_cpu.c) in another float32 order.
 * A decode step (one token) has only n_heads blocks, each walking the
 * whole cache: 108 tok/s after a 2048-token prompt against 300 at position
 * ~100 for the Qwen3-30B-A3B shape (bench/RESULTS.md, session 10). So a
 * single token's walk is split over mk_cuda_attn_shares() blocks per head (flash-
 * decoding): block y takes a 32-row-aligned share of the positions and
 * writes its unnormalised state (max, sum, weighted values) to backend
 * scratch; the last share of each (token, head) to finish combines them
 * (and the sink) after an atomic ticket (mk_cuda_attn_merge_fused), or
 * k_attn_merge does, a launch of its own. The share
 * bounds are computed in the kernel from the position, so a replayed step
 * (device position) splits its own length.
 * With mk_attn_args.pos_dev (a replayed decode step) the position is read
 * from device memory and the token's own k/v rows from k_new / v_new.
 * gpt_oss: a sliding window moves the first row walked (derived from the
 * position in the kernel, so a device position moves it too) and a learned
 * sink per head enters the merge's max and denominator, as in the CPU's
 * two passes. DSA: with `sel` the walk is over the token's selected rows
 * (counted up to the first -1 by the block), position s reading row sel[s].
 * Prefill chunks of 16 tokens or more go to the tiled kernel
 * (cuda_attn_tile.cu) where it takes the shape. */
#include <math.h>

#include "cuda/cuda_backend.cuh"
#include "cuda/cuda_attn_kernel.cuh"
#include "cuda/cuda_attn_gqa.cuh"

/* The shares' states of nb rows (heads of a token) split `want` ways, in
 * scratch grown outside recordings (a recorded step that would need more
 * splits nothing: it cannot grow memory there): *ns that many, or 1
 * without the scratch. False: the allocation failed (recorded for sync). */
static bool split_scratch(mkb_ctx *c, unsigned nb, int dv, unsigned want, unsigned *ns) {
    const size_t need = (size_t)nb * want * ((size_t)dv + 2) * sizeof(float);
    if (need > c->att_cap && !c->recording) {
        mkb_graph_free(c); /* a recorded step's attention nodes point at the old scratch */
        mk_cuda_free(c->att_part);
        c->att_part = NULL;
        c->att_cap = 0;
        mk_status st = mk_cuda_malloc((void **)&c->att_part, need, "attention's split scratch");
        if (st != MK_OK) {
            mkb_fail(c, st);
            return false;
        }
        c->att_cap = need;
    }
    *ns = need <= c->att_cap ? want : 1;
    /* the shares' tickets (mk_cuda_attn_merge_fused), zeroed once: each launch leaves them zero */
    if (*ns > 1 && nb > c->att_tcap && !c->recording) {
        mkb_graph_free(c); /* a recorded step's attention nodes point at the old tickets */
        mk_cuda_free(c->att_tickets);
        c->att_tickets = NULL;
        c->att_tcap = 0;
        mk_status st = mk_cuda_malloc((void **)&c->att_tickets, (size_t)nb * sizeof(unsigned), "attention's tickets");
        if (st == MK_OK)
            st = mk_cuda_memset(c->att_tickets, 0, (size_t)nb * sizeof(unsigned));
        if (st != MK_OK) {
            mkb_fail(c, st);
            return false;
        }
        c->att_tcap = nb;
    }
    return true;
}

template <int DVL>
static void attn_grid(mkb_ctx *c, const mk_attn_args &a, const att_seqs *sq, dim3 grid, size_t smem, int64_t ks,
                      int64_t vs, bool vec, unsigned *tickets, const mkc_qkfold &qf) {
    const int pf = mkc_prefetches(MK_CUDA_PREFETCH_ATTN);
    if (sq)
        mkb_launch(c, "attention of a batched step", k_attn_each<DVL>, grid, dim3(ATT_WARPS * 32), smem, a, *sq, ks,
                   vs, vec, c->att_part, pf, tickets);
    else if (qf.on)
        mkb_launch(c, "attention with the q/k norms and RoPE folded in", k_attn<DVL, true>, grid,
                   dim3(ATT_WARPS * 32), smem, a, ks, vs, vec, c->att_part, pf, tickets, qf);
    else
        mkb_launch(c, "attention", k_attn<DVL>, grid, dim3(ATT_WARPS * 32), smem, a, ks, vs, vec, c->att_part, pf,
                   tickets, qf);
}

/* The tickets with which the ns shares of nb blocks merge themselves
 * (mk_cuda_attn_merge_fused), or NULL: a k_attn_merge launch merges them */
static unsigned *share_tickets(const mkb_ctx *c, unsigned nb, unsigned ns) {
    return ns > 1 && mk_cuda_attn_merge_fused() && nb <= c->att_tcap ? c->att_tickets : NULL;
}

/* The folded q/k norm's tickets, one per kv head (zeroed once, left zero
 * by each launch), grown outside recordings. False: not enough of them. */
static bool qk_tickets(mkb_ctx *c, int n_kv) {
    if ((size_t)n_kv <= c->qk_ktcap)
        return true;
    if (c->recording)
        return false;
    mkb_graph_free(c); /* a recorded step's attention nodes point at the old tickets */
    mk_cuda_free(c->qk_kt);
    c->qk_kt = NULL;
    c->qk_ktcap = 0;
    mk_status st = mk_cuda_malloc((void **)&c->qk_kt, (size_t)n_kv * sizeof(unsigned), "the folded q/k norm's tickets");
    if (st == MK_OK)
        st = mk_cuda_memset(c->qk_kt, 0, (size_t)n_kv * sizeof(unsigned));
    if (st != MK_OK) {
        mkb_fail(c, st);
        return false;
    }
    c->qk_ktcap = (size_t)n_kv;
    return true;
}

/* nb blocks (token, head) in ns shares: k_attn, or with sq a batched
 * step's k_attn_each; the value dims per lane by dv; then the shares'
 * merge. qf.on: the q/k norms and RoPE folded into k_attn. */
static void attn_run(mkb_ctx *c, const mk_attn_args &a, const att_seqs *sq, unsigned nb, unsigned ns, int64_t ks,
                     int64_t vs, bool vec, const mkc_qkfold &qf = mkc_qkfold()) {
    const size_t smem =
        sizeof(float) * ((size_t)a.dk + 2 * ATT_WARPS + (size_t)ATT_WARPS * a.dv + (qf.on ? (size_t)a.dk : 0));
    const dim3 grid(nb, ns);
    /* the last share of each (token, head) merges them (no merge launch) when the tickets are there */
    unsigned *tk = share_tickets(c, nb, ns);
    if (a.dv <= 128)
        attn_grid<4>(c, a, sq, grid, smem, ks, vs, vec, tk, qf);
    else if (a.dv <= 256)
        attn_grid<8>(c, a, sq, grid, smem, ks, vs, vec, tk, qf);
    else if (a.dv <= 512)
        attn_grid<16>(c, a, sq, grid, smem, ks, vs, vec, tk, qf);
    else
        attn_grid<32>(c, a, sq, grid, smem, ks, vs, vec, tk, qf);
    if (ns > 1 && !tk)
        mkb_launch(c, sq ? "attention of a batched step (merging the shares)" : "attention (merging the shares)",
                   k_attn_merge, dim3(nb), dim3(128), 0, a, (const float *)c->att_part, (int)ns);
}

static unsigned long long g_gqa_launches;

extern "C" unsigned long long mk_cuda_attn_gqa_launches(void) {
    return __atomic_load_n(&g_gqa_launches, __ATOMIC_RELAXED);
}

/* k_attn_gqa over n_kv x AGQ_SHARES blocks (the scratch and tickets are there), or with sq the
 * batched step's k_attn_gqa_each over n_kv x AGQ_SHARES x n; false: its shared memory is not
 * granted (k_attn or k_attn_each runs) */
template <int DVL, int HPW>
static bool gqa_launch(mkb_ctx *c, const mk_attn_args &a, int64_t ks, int64_t vs, const att_seqs *sq, int n,
                       const mkc_qkfold &qf) {
    const size_t smem = agq_smem(a.n_heads / a.n_kv, a.dk, a.dv, qf.on != 0);
    /* the device's most less 1 KB: the opt-in is refused past the most less the kernel's static shared
     * memory (mkc_last_in's flag), which the first version asked for and so never ran */
    const int ask = mkc_smem_optin_max() - 1024;
    const void *k = sq      ? (const void *)k_attn_gqa_each<DVL, HPW>
                    : qf.on ? (const void *)k_attn_gqa<DVL, HPW, true>
                            : (const void *)k_attn_gqa<DVL, HPW>;
    if (ask <= 0 || smem > (size_t)ask || !mkc_smem_opt_in(k, ask))
        return false; /* (always asked: near 48 KB the static flag would overflow the default) */
    if (sq)
        mkb_launch(c, "attention of a batched step (grouped by kv head)", k_attn_gqa_each<DVL, HPW>,
                   dim3((unsigned)a.n_kv, AGQ_SHARES, (unsigned)n), dim3(AGQ_WARPS * 32), smem, a, *sq, ks, vs,
                   c->att_part, c->att_tickets);
    else if (qf.on)
        mkb_launch(c, "attention (grouped by kv head, the q/k norms folded in)", k_attn_gqa<DVL, HPW, true>,
                   dim3((unsigned)a.n_kv, AGQ_SHARES), dim3(AGQ_WARPS * 32), smem, a, ks, vs, c->att_part,
                   c->att_tickets, qf);
    else
        mkb_launch(c, "attention (grouped by kv head)", k_attn_gqa<DVL, HPW>, dim3((unsigned)a.n_kv, AGQ_SHARES),
                   dim3(AGQ_WARPS * 32), smem, a, ks, vs, c->att_part, c->att_tickets, mkc_qkfold());
    __atomic_add_fetch(&g_gqa_launches, 1ull, __ATOMIC_RELAXED); /* host launches (a recording's once) */
    return true;
}

static bool gqa_run(mkb_ctx *c, const mk_attn_args &a, int64_t ks, int64_t vs, const att_seqs *sq, int n,
                    const mkc_qkfold &qf) {
    const bool two = a.n_heads / a.n_kv > AGQ_WARPS;
    if (a.dv <= 128)
        return two ? gqa_launch<4, 2>(c, a, ks, vs, sq, n, qf) : gqa_launch<4, 1>(c, a, ks, vs, sq, n, qf);
    return two ? gqa_launch<8, 2>(c, a, ks, vs, sq, n, qf) : gqa_launch<8, 1>(c, a, ks, vs, sq, n, qf);
}

/* The grouped attention for a call that agq_takes (one token, or with sq the n sequences of a
 * batched step): its scratch for nb heads in AGQ_SHARES shares, then the launch. True: handled
 * (launched, or a failed allocation recorded for sync); false: k_attn / k_attn_each runs. */
static bool gqa_try(mkb_ctx *c, const mk_attn_args &a, unsigned nb, int64_t ks, int64_t vs,
                    const att_seqs *sq = NULL, int n = 1, const mkc_qkfold &qf = mkc_qkfold()) {
    unsigned ns = 1;
    if (!split_scratch(c, nb, a.dv, AGQ_SHARES, &ns))
        return true;
    return ns == AGQ_SHARES && (size_t)n * (size_t)a.n_kv <= c->att_tcap && gqa_run(c, a, ks, vs, sq, n, qf);
}

/* The held-back qk_norm_rope (c->qk) as a kernel's fold arguments */
static mkc_qkfold qk_fold_args(const mkb_ctx *c) {
    mkc_qkfold qf = mkc_qkfold();
    qf.qg = c->qk.qg;
    qf.kg = c->qk.kg;
    qf.cos = c->qk.cos;
    qf.sin = c->qk.sin;
    qf.eps = c->qk.eps;
    qf.rot = c->qk.rot;
    qf.vt = (int)mkc_norm_threads(c->qk.hd);
    qf.on = 1;
    return qf;
}

void mkb_attention(void *ctx, const mk_attn_args *a) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (a->n <= 0 || a->n_heads <= 0)
        return;
    if (a->sel && a->sel_k <= 0) {
        mkb_fail(c, mk_err(MK_E_ARG, "CUDA attention: a selection of %lld positions per token", (long long)a->sel_k));
        return;
    }
    if (a->pos_dev && (a->n != 1 || a->sel || !a->k_new || !a->v_new)) {
        mkb_fail(c, mk_err(MK_E_ARG, "CUDA attention: a device position needs one token, new k/v rows and no selection"));
        return;
    }
    if (a->dk > MK_ATT_MAX_DIM || a->dv > MK_ATT_MAX_DIM || a->n_kv <= 0 || a->n_heads % a->n_kv) {
        mkb_fail(c, mk_err(MK_E_UNSUPPORTED, "CUDA attention: head dims %d/%d (at most %d), %d heads on %d kv heads",
                           a->dk, a->dv, MK_ATT_MAX_DIM, a->n_heads, a->n_kv));
        return;
    }
    const int64_t ks = a->k_stride ? a->k_stride : (int64_t)a->n_kv * a->dk;
    const int64_t vs = a->v_stride ? a->v_stride : (int64_t)a->n_kv * a->dv;
    /* a held-back qk_norm_rope of this call's q and new k row (mk_cuda_norm_fold) may fold into k_attn:
     * one token, its own new rows (packed kv heads, k and v apart), a head dim whose norm order a block
     * emulates, the shares unsplit or merging themselves (the merging block writes q back) */
    const int hd = c->qk.hd;
    const float *q_end = a->q + (int64_t)a->n_heads * a->dk, *o_end = a->out + (int64_t)a->n_heads * a->dv;
    /* a replayable step's staged new rows (pos_dev: k_new is not the cache row the group's first head
     * writes while others read it), its output apart from q (q is written back) */
    const bool fold_any = c->qk_folding && a->n == 1 && a->pos_dev && a->k_new && a->v_new &&
                          a->k_new != a->v_new && a->k != a->v && (o_end <= a->q || q_end <= a->out) && !a->sel &&
                          a->q == c->qk.q && a->k_new == c->qk.k && a->n_heads == c->qk.nq && a->n_kv == c->qk.nk &&
                          a->dk == hd && ks == (int64_t)a->n_kv * hd && c->qk.rot <= hd;
    /* where the grouped attention (on by default) takes the call, the fold is k_attn_gqa's own (head
     * dims up to 32 MKC_QKW_R, which agq_takes' AGQ_MAX_DIM keeps); k_attn's fold would not give
     * k_attn_gqa's bits (a fold must not change them) */
    const bool gqa = a->n == 1 && mk_cuda_attn_gqa() && agq_takes(a, ks, vs);
    const bool gfold = gqa && fold_any && hd <= 32 * MKC_QKW_R;
    const bool fold = !gqa && fold_any && mkc_norm_threads(hd) <= 4 * ATT_WARPS * 32 &&
                      sizeof(float) * ((size_t)2 * hd + 2 * ATT_WARPS + (size_t)ATT_WARPS * a->dv) <= MKC_SMEM_MAX;
    if (!fold && !gfold)
        mkb_fold_flush(c);
    /* prefill chunks: the tiled kernel (cuda_attn_tile.cu) where it takes the shape */
    if (a->n > 1 && mkb_attention_tiled(c, a, ks, vs))
        return;
    /* float4 loads of key rows: every row start (cache rows, kv-head
     * offsets, k_new) 16-byte aligned */
    const bool vec = a->dk % 4 == 0 && ks % 4 == 0 && (uintptr_t)a->k % 16 == 0 &&
                     (!a->k_new || (uintptr_t)a->k_new % 16 == 0);
    const unsigned nb = (unsigned)(a->n * a->n_heads);
    /* one token: split over the cache */
    unsigned ns = 1;
    /* one token grouped by kv head (mk_cuda_set_attn_gqa): AGQ_SHARES shares a kv head, merged by
     * their last (tickets), with a held-back q/k norm folded in (gfold) or launched first */
    if (gqa) {
        const mkc_qkfold gq = gfold ? qk_fold_args(c) : mkc_qkfold();
        if (gqa_try(c, *a, nb, ks, vs, NULL, 1, gq)) {
            if (gfold)
                mkb_fold_taken(c);
            return;
        }
        mkb_fold_flush(c); /* k_attn runs, unfolded */
    }
    if (a->n == 1 && !split_scratch(c, nb, a->dv, (unsigned)mk_cuda_attn_shares(), &ns))
        return;
    mkc_qkfold qf = mkc_qkfold();
    if (fold && (ns == 1 || share_tickets(c, nb, ns)) && qk_tickets(c, a->n_kv)) {
        qf = qk_fold_args(c);
        qf.kt = c->qk_kt;
        mkb_fold_taken(c);
    }
    mkb_fold_flush(c);
    attn_run(c, *a, NULL, nb, ns, ks, vs, vec, qf);
}

/* A batched decode step's attention (backend.h's attention_each): one
 * launch of k_attn_each (and one merge) for every sequence, each block
 * exactly k_attn's for its sequence alone; or, where mkb_attention would
 * run each sequence grouped by kv head, one launch of k_attn_gqa_each,
 * each sequence's blocks exactly k_attn_gqa's. Declined (false) unless the
 * calls are alike (shape, scale, strides, window, sinks), their queries and
 * outputs contiguous rows of one batch, and the float4 choice (`vec`) the
 * one every one-sequence call would make after its rows were written. */
bool mkb_attention_each(void *ctx, const mk_attn_args *a, int n) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (n < 1 || n > ATT_SEQS || c->recording)
        return false;
    const mk_attn_args *a0 = &a[0];
    if (a0->dk > MK_ATT_MAX_DIM || a0->dv > MK_ATT_MAX_DIM || a0->n_kv <= 0 || a0->n_heads <= 0 ||
        a0->n_heads % a0->n_kv)
        return false; /* attention names what is wrong */
    const int64_t ks = a0->k_stride ? a0->k_stride : (int64_t)a0->n_kv * a0->dk;
    const int64_t vs = a0->v_stride ? a0->v_stride : (int64_t)a0->n_kv * a0->dv;
    const bool base = a0->dk % 4 == 0 && ks % 4 == 0;
    bool vec = false;
    att_seqs sq;
    for (int i = 0; i < n; i++) {
        const mk_attn_args *x = &a[i];
        if (x->n != 1 || x->sel || x->pos_dev || !x->k_new || !x->v_new || x->n_heads != a0->n_heads ||
            x->n_kv != a0->n_kv || x->dk != a0->dk || x->dv != a0->dv || x->scale != a0->scale ||
            x->k_stride != a0->k_stride || x->v_stride != a0->v_stride || x->window != a0->window ||
            x->sinks != a0->sinks || x->q != a0->q + (int64_t)i * a0->n_heads * a0->dk ||
            x->out != a0->out + (int64_t)i * a0->n_heads * a0->dv)
            return false;
        /* one float4 choice for the launch: each sequence's own (its cache's
         * alignment), unchanged by its new row's */
        const bool vi = base && (uintptr_t)x->k % 16 == 0;
        if (i == 0)
            vec = vi;
        if (vi != vec || (vi && (uintptr_t)x->k_new % 16 != 0))
            return false;
        sq.k[i] = x->k;
        sq.v[i] = x->v;
        sq.kn[i] = x->k_new;
        sq.vn[i] = x->v_new;
        sq.pos0[i] = x->pos0;
    }
    const unsigned nb = (unsigned)n * (unsigned)a0->n_heads;
    unsigned ns = 1;
    /* grouped by kv head where every sequence alone would be (mkb_attention's choice), so that each is
     * bitwise its one-token step */
    bool gqa = mk_cuda_attn_gqa();
    for (int i = 0; gqa && i < n; i++)
        gqa = agq_takes(&a[i], ks, vs);
    if (gqa && gqa_try(c, *a0, nb, ks, vs, &sq, n))
        return true;
    if (split_scratch(c, nb, a0->dv, (unsigned)mk_cuda_attn_shares(), &ns))
        attn_run(c, *a0, &sq, nb, ns, ks, vs, vec);
    return true; /* (a failed allocation is recorded for sync) */
}
