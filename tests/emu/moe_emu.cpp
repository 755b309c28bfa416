// Host emulation (cuda_emu.h) of the fused MoE step (src/cuda/
// cuda_moe_kernels.cuh: k_router with cuda_route_block.cuh's routing,
// k_gateup, k_down / k_down2, included as they are; arguments by
// moe_args_of) on Qwen3-Next-like (softmax, shared expert and its gate,
// 4-bit), DeepSeek-V3-like (sigmoid, selection bias, 4 groups keep 2,
// routed scale, shared expert, 8-bit) and plain bf16 layers, both kernel
// generations and x/h staged or not: the chosen experts those of the double
// reference (moe_ref.c) in order, y within 1e-5 relative L2 of it. Then the
// VRAM expert cache: some chosen experts (and one other) read from cache
// slots in another order give y bitwise the uncached step's, the routing
// counts 1 per chosen expert, and a slot of one part (gate, up or down)
// holding another expert's bytes must change y. A batched step (moe_args.nt
// tokens per launch, mk_cuda_moe_step_n's block order, both gate/up orders)
// of 5 tokens, two of them equal, gives every row bitwise the one-token
// step's, with and without the cache (counts: the tokens' sum). The
// staged-weight kernels (k_gateup_s, k_down_s) on the affine layers: y
// bitwise generation 2's in several block sizes, and through the cache the
// same verdicts (bitwise, and each control caught). The residual step
// folded into k_router (cuda_fold.cuh): logits, routing, x and xb
// bitwise k_add_rmsnorm then k_router's, and a non-finite y's finding
// k_add_rmsnorm's (also on a 4-bit router and one with an 8-bit
// shared-expert gate row). int8 activations (k_router<F, true>,
// k_gateup_q8, k_down2_q8; cuda_q8x.cuh) on the affine layers: the router's
// logits within 5e-6 of the double rows over the CPU's quantized x, folded
// bitwise as above; h within its
// bound of the double SwiGLU over the CPU's quantized x (q8.c, linked as
// it is), y within the bound of the double combine over the CPU's
// quantization of that h; through the VRAM cache bitwise; control: the
// float k_down2 on the same h misses that bound; k_gateup_q8 with its
// rows primed once the routing is read (mk_cuda_set_q8_early) bitwise the
// default's h and y; k_gateup_q8s (its rows staged in shared memory,
// mk_cuda_set_gateup_staged) bitwise too, in blocks of 1 to all pairs,
// through the cache as well (and its gate and up controls caught). Exit 1
// on a mismatch.
#include <cstdio>
#include <cstdlib>

#include "cuda_emu.h"
#include "cuda/cuda_impl.cuh"
#include "cuda/cuda_route_block.cuh"
#include "cuda/cuda_moe_kernels.cuh"
#include "cuda/cuda_norm_kernel.cuh"
#include "moe_ref.h"

static int g_bad;
static int g_q8s;  /* k_gateup_q8s's checks that ran */
static int g_late; /* the late routing's checks that ran (mk_cuda_set_route_late) */

extern "C" void mk_q8_quant_blocks(const float *x, int64_t n, int blk, int8_t *q, float *d, float *qs);

// v quantized as the CPU quantizes a decode product's x (q8.c, blocks of 32), in double
static std::vector<double> q8_of(const float *v, int64_t n) {
    std::vector<int8_t> q(n);
    std::vector<float> d(n / 32), qs(n / 32);
    mk_q8_quant_blocks(v, n, 32, q.data(), d.data(), qs.data());
    std::vector<double> r(n);
    for (int64_t i = 0; i < n; i++)
        r[i] = (double)q[i] * (double)d[i / 32];
    return r;
}

struct bufs {
    std::vector<float> logits, h, hs, w;
    std::vector<int32_t> idx, loc;
    unsigned ticket = 0;
    explicit bufs(const emu_layer &L)
        : logits(L.E + 1), h(L.k * L.I), hs(L.Is ? L.Is : 1), w(L.k), idx(L.k), loc(L.k) {}
};
struct bufs_n;
static unsigned *tickets(bufs &B) { return &B.ticket; }

static unsigned nblk(int64_t tasks) { return (unsigned)((tasks + MOE_WARPS - 1) / MOE_WARPS); }

// a batched step's buffers: n tokens at moe_token_strides' strides
struct bufs_n {
    moe_args a;
    std::vector<float> logits, h, hs, w;
    std::vector<int32_t> idx, loc;
    std::vector<unsigned> ticket;
    bufs_n(const moe_args &a1, int n, int ga) : a(a1) {
        a.nt = n;
        a.ga = ga; /* the strides: moe_args_of's (moe_token_strides) */
        logits.resize((size_t)n * a.ls);
        idx.resize((size_t)n * a.ks);
        loc.resize((size_t)n * a.ks);
        w.resize((size_t)n * a.ks);
        h.resize((size_t)n * a.hstr);
        hs.resize((size_t)n * a.hsstr);
        ticket.assign(n, 0);
    }
};

// one step y = moe(x) of a.nt tokens: the three kernels as mkc_moe_launch launches them
// gper / dper > 0 (one token): gate/up and down through the staged-weight kernels, that many units a block
template <class BUF>
static void step(const moe_args &a, const float *x, float *y, bool P, int sx, int sh, BUF &B, int64_t gper = 0,
                 int64_t dper = 0) {
    const bool C = a.slot_of != nullptr, d2 = P && mkc_is_aff(a.down.kind);
    const unsigned n = (unsigned)a.nt;
    const unsigned R = nblk(a.E + a.has_sg) * n, G = nblk(((int64_t)a.k * a.I + a.Is) / 2) * n, D = nblk(a.H) * n;
    for (unsigned b = 0; b < R; b++)
        emu_block(R, b, MOE_WARPS * 32,
                  [&] { k_router<>(a, x, B.logits.data(), B.idx.data(), B.w.data(), tickets(B), B.loc.data()); });
    if (gper) {
        const int64_t npair = ((int64_t)a.k * a.I + a.Is) / 2, GS = (npair + gper - 1) / gper;
        for (int64_t b = 0; b < GS; b++)
            emu_block((unsigned)GS, (unsigned)b, MOE_WARPS * 32, [&] {
                (C ? k_gateup_s<true> : k_gateup_s<false>)(a, x, B.idx.data(), B.h.data(), B.hs.data(),
                                                           B.loc.data(), gper);
            });
    }
    if (dper) {
        const int64_t DS = (a.H + dper - 1) / dper;
        for (int64_t b = 0; b < DS; b++)
            emu_block((unsigned)DS, (unsigned)b, MOE_WARPS * 32, [&] {
                (C ? k_down_s<true> : k_down_s<false>)(a, B.idx.data(), B.w.data(), B.h.data(), B.hs.data(),
                                                       B.logits.data(), y, 0, B.loc.data(), dper);
            });
    }
    for (unsigned b = 0; b < G && !gper; b++)
        emu_block(G, b, MOE_WARPS * 32, [&] {
            auto k = P ? (C ? k_gateup<true, true> : k_gateup<true, false>)
                       : (C ? k_gateup<false, true> : k_gateup<false, false>);
            k(a, x, B.idx.data(), B.h.data(), B.hs.data(), sx, B.loc.data());
        });
    for (unsigned b = 0; b < D && !dper; b++)
        emu_block(D, b, MOE_WARPS * 32, [&] {
            auto k = d2 ? (C ? k_down2<true> : k_down2<false>) : (C ? k_down<true> : k_down<false>);
            k(a, B.idx.data(), B.w.data(), B.h.data(), B.hs.data(), B.logits.data(), y, 0, sh, B.loc.data());
        });
}

// a host stack of n experts of view w (R rows each): expert ids[s] at slot s
struct pool {
    mk_wt v;
    std::vector<unsigned char> d, s, b;
};
static void pool_of(pool &p, const mk_wt *w, int64_t R, const int32_t *ids, int n) {
    mk_wt one = *w;
    one.rows = R;
    const size_t nd = (size_t)R * mk_wt_row_bytes(w), ns = w->scales ? mk_wt_scale_bytes(&one) : 0;
    p.d.resize(nd * n);
    p.s.resize(ns * n);
    p.b.resize(w->biases ? ns * n : 0);
    for (int i = 0; i < n; i++) {
        std::memcpy(p.d.data() + i * nd, (const unsigned char *)w->data + (size_t)ids[i] * nd, nd);
        if (ns)
            std::memcpy(p.s.data() + i * ns, (const unsigned char *)w->scales + (size_t)ids[i] * ns, ns);
        if (w->biases)
            std::memcpy(p.b.data() + i * ns, (const unsigned char *)w->biases + (size_t)ids[i] * ns, ns);
    }
    p.v = *w;
    p.v.rows = R * n;
    p.v.data = p.d.data();
    p.v.scales = ns ? p.s.data() : nullptr;
    p.v.biases = w->biases ? p.b.data() : nullptr;
}

static unsigned *tickets(bufs_n &B) { return B.ticket.data(); }

// NT tokens (the third a copy of the first: the same experts) in one
// batched step, both gate/up block orders: every row bitwise the one-token
// step's (ys: the one-token steps' rows), counts (when a has them) the sum
static const int NT = 5;
static void check_batch(const char *name, const moe_args &a, const float *xs, const float *ys, const int *md,
                        int32_t *counts, const std::vector<int32_t> &want_counts) {
    std::vector<float> yb((size_t)NT * a.H);
    for (int ga = 0; ga < (a.I % (2 * MOE_WARPS) == 0 ? 2 : 1); ga++) {
        bufs_n B(a, NT, ga);
        if (counts)
            std::fill(counts, counts + a.E, 0);
        std::fill(yb.begin(), yb.end(), NAN);
        step(B.a, xs, yb.data(), md[0], md[1], md[2], B);
        for (int t = 0; t < NT; t++)
            if (std::memcmp(yb.data() + (size_t)t * a.H, ys + (size_t)t * a.H, (size_t)a.H * 4)) {
                printf("FAIL %s (generation %d, staged %d/%d, gate/up order %d%s): batched row %d differs from its "
                       "one-token step\n", name, md[0] + 1, md[1], md[2], ga, a.slot_of ? ", cache" : "", t);
                g_bad++;
                break;
            }
        for (int32_t e = 0; counts && e < a.E; e++)
            if (counts[e] != want_counts[e]) {
                printf("FAIL %s: batched routing count of expert %d is %d, the tokens' %d\n", name, e, counts[e],
                       want_counts[e]);
                g_bad++;
                break;
            }
    }
}

// The residual step folded into the router (mk_cuda_moe_step_fold): against
// k_add_rmsnorm, then k_router of its xb, on random rows (and one with an
// infinity and a NaN in y): logits, idx, w, x, xb and the check's finding
// bitwise.
// Q: both routers on int8 x (k_router<F, true>), for the affine routers
static void fold_router(const char *name, const moe_args &a, const emu_layer &L, bool Q = false) {
    const int64_t H = a.H;
    const unsigned R = nblk(a.E + a.has_sg), vt = mkc_norm_threads(H);
    if (Q && !moe_q8_router(a, true, 0)) {
        printf("FAIL %s: the int8-activation router does not take the layer\n", name);
        g_bad++;
        return;
    }
    for (int draw = 0; draw < 5; draw++) {
        std::vector<float> x0(H), y0(H), g(H);
        for (int64_t i = 0; i < H; i++) {
            x0[i] = emu_rand(-2.0f, 2.0f);
            y0[i] = emu_rand(-1.0f, 1.0f);
            g[i] = emu_rand(0.5f, 1.5f);
        }
        if (draw == 4) {
            y0[H / 2] = INFINITY;
            y0[H - 1] = NAN;
        }
        std::vector<float> xr = x0, xbr(H, NAN), xf = x0, xbf(H, NAN);
        mkb_nfl fr = {~0ull, ~0ull, 0.0f, 0u};
        emu_block(1, 0, vt, [&] { k_add_rmsnorm(xr.data(), y0.data(), H, 3ull, &fr, xbr.data(), g.data(), 1e-6f); });
        bufs B1(L), B2(L);
        for (unsigned b = 0; b < R; b++)
            emu_block(R, b, MOE_WARPS * 32, [&] {
                (Q ? k_router<false, true> : k_router<false, false>)(a, xbr.data(), B1.logits.data(), B1.idx.data(),
                                                                     B1.w.data(), &B1.ticket, B1.loc.data());
            });
        unsigned long long kf = ~0ull;
        float vf = 0.0f;
        mk_cuda_fold f = {xf.data(), y0.data(), g.data(), xbf.data(), &kf, &vf, nullptr, H, 3, 1e-6f};
        moe_args af = a;
        if (!mkc_addnorm_of(&f, MOE_WARPS * 32, &af.an)) {
            printf("FAIL %s: the router declined the fold\n", name);
            g_bad++;
            return;
        }
        for (unsigned b = 0; b < R; b++)
            emu_block(R, b, MOE_WARPS * 32, [&] {
                (Q ? k_router<true, true> : k_router<true, false>)(af, xbf.data(), B2.logits.data(), B2.idx.data(),
                                                                   B2.w.data(), &B2.ticket, B2.loc.data());
            });
        const bool same = !std::memcmp(B1.logits.data(), B2.logits.data(), (a.E + a.has_sg) * 4) &&
                          !std::memcmp(B1.idx.data(), B2.idx.data(), a.k * 4) &&
                          !std::memcmp(B1.w.data(), B2.w.data(), a.k * 4) &&
                          !std::memcmp(xr.data(), xf.data(), H * 4) && !std::memcmp(xbr.data(), xbf.data(), H * 4);
        /* the int8 router's logits (the unfolded one, finite draws) against the double rows over the
         * quantized xb: the affine rows (the router, an affine shared-expert gate row of either width)
         * over q8.c's quantization, a bf16 one over xb itself */
        for (int64_t e = 0; Q && draw < 4 && e < a.E + a.has_sg; e++) {
            const bool sgr = e == a.E;
            const std::vector<double> xh = q8_of(xbr.data(), H);
            std::vector<double> xd(xbr.begin(), xbr.end());
            double c;
            const double ref = emu_rdot_cond(sgr ? L.sgw : L.router, sgr ? 0 : e,
                                             sgr && !mkc_is_aff(a.sgw.kind) ? xd.data() : xh.data(), &c);
            if (!(fabs((double)B1.logits[e] - ref) <= 5e-6 * c + 1e-30)) {
                printf("FAIL %s (int8 x): router logit %lld: %.9g, reference %.9g\n", name, (long long)e,
                       (double)B1.logits[e], ref);
                g_bad++;
                return;
            }
        }
        const bool check = kf == fr.key && (kf == ~0ull || !std::memcmp(&vf, &fr.val, 4)) &&
                           (draw < 4 ? kf == ~0ull : kf == (3ull << 40 | (unsigned long long)(H / 2)));
        if (!same || !check || B2.ticket != 0) {
            printf("FAIL %s: the folded router (draw %d) differs: logits/routing/x/xb %s, finding %llx vs %llx, "
                   "ticket %u\n", name, draw, same ? "same" : "differ", kf, fr.key, B2.ticket);
            g_bad++;
            return;
        }
    }
    printf("%-60s folded residual norm: router%s bitwise in 5 draws, the finding too\n", name, Q ? " on int8 x" : "");
}

// int8 activations (k_gateup_q8, k_down2_q8) after the float router, on x:
// h and y against the double rule, the cache bitwise, the float down kernel
// off the rule (the control)
static void q8_moe(const char *name, const moe_args &a, const emu_layer &L, const mk_cuda_moe &m, const float *x) {
    if (!moe_q8_takes(a)) {
        printf("FAIL %s: the int8-activation kernels do not take the layer\n", name);
        g_bad++;
        return;
    }
    const unsigned R = nblk(a.E + a.has_sg), G = nblk(((int64_t)a.k * a.I + a.Is) / 2), D = nblk(a.H);
    bufs B(L);
    /* each launch with the dynamic shared memory mkc_moe_launch asks for */
    const size_t smr = (size_t)moe_q8_router_smem(a, false), smx = (size_t)mkc_q8s_bytes(a.H),
                 smh = (size_t)mkc_q8s_bytes((int64_t)a.k * a.I + a.Is);
    /* qper > 0: gate/up through k_gateup_q8s (mk_cuda_set_gateup_staged), that many pairs a block;
     * late: the routing ranked by the gate/up and down blocks (mk_cuda_set_route_late), the router
     * writing only the logits */
    auto run = [&](const moe_args &a0, float *y, bool q8down, int early = 0, int64_t qper = 0, bool late = false) {
        moe_args aa = a0;
        aa.late = late ? 1 : 0;
        emu_smem(smr);
        for (unsigned b = 0; b < R; b++)
            emu_block(R, b, MOE_WARPS * 32, [&] {
                k_router<false, true>(aa, x, B.logits.data(), B.idx.data(), B.w.data(), &B.ticket, B.loc.data());
            });
        const bool C = aa.slot_of != nullptr;
        if (qper) {
            const int64_t npair = ((int64_t)aa.k * aa.I + aa.Is) / 2, GS = (npair + qper - 1) / qper;
            emu_smem((size_t)moes_gateup_q8_smem(aa, qper));
            for (int64_t b = 0; b < GS; b++)
                emu_block((unsigned)GS, (unsigned)b, moes_q8s_threads(qper), [&] {
                    (C ? k_gateup_q8s<true> : k_gateup_q8s<false>)(aa, x, B.idx.data(), B.h.data(), B.hs.data(),
                                                                   B.loc.data(), qper);
                });
        }
        emu_smem(smx);
        for (unsigned b = 0; b < G && !qper; b++)
            emu_block(G, b, MOE_WARPS * 32, [&] {
                if (late)
                    (C ? k_gateup_q8<true, true> : k_gateup_q8<false, true>)(
                        aa, x, B.idx.data(), B.h.data(), B.hs.data(), B.loc.data(), early, B.logits.data(),
                        B.idx.data(), B.w.data(), B.loc.data());
                else
                    (C ? k_gateup_q8<true> : k_gateup_q8<false>)(aa, x, B.idx.data(), B.h.data(), B.hs.data(),
                                                                 B.loc.data(), early, nullptr, nullptr, nullptr,
                                                                 nullptr);
            });
        emu_smem(q8down ? smh : 0); /* the float down kernel: not its size (unchecked) */
        for (unsigned b = 0; b < D; b++)
            emu_block(D, b, MOE_WARPS * 32, [&] {
                if (q8down && late)
                    (C ? k_down2_q8<true, true> : k_down2_q8<false, true>)(aa, B.idx.data(), B.w.data(), B.h.data(),
                                                                         B.hs.data(), B.logits.data(), y, 0,
                                                                         B.loc.data());
                else if (q8down)
                    (C ? k_down2_q8<true> : k_down2_q8<false>)(aa, B.idx.data(), B.w.data(), B.h.data(), B.hs.data(),
                                                               B.logits.data(), y, 0, B.loc.data());
                else
                    k_down2<false>(aa, B.idx.data(), B.w.data(), B.h.data(), B.hs.data(), B.logits.data(), y, 0, 0,
                                   B.loc.data());
            });
        emu_smem(0);
    };
    std::vector<float> y(a.H, NAN), yc(a.H, NAN), yf(a.H, NAN);
    run(a, y.data(), true, 1);
    /* the rows primed once the routing is read (mk_cuda_set_q8_early) against after x is staged: bitwise */
    {
        const std::vector<float> h1 = B.h, hs1 = B.hs, y1 = y;
        run(a, y.data(), true);
        if (std::memcmp(B.h.data(), h1.data(), sizeof(float) * h1.size()) ||
            std::memcmp(B.hs.data(), hs1.data(), sizeof(float) * hs1.size()) ||
            std::memcmp(y.data(), y1.data(), sizeof(float) * a.H)) {
            printf("FAIL %s (int8 x): h or y differ with the gate/up rows primed early\n", name);
            g_bad++;
            return;
        }
    }
    /* the routing ranked by its readers (mk_cuda_set_route_late), rows primed early and not: h, y and the
     * routing gate/up block 0 writes out bitwise the router's; the router took no ticket */
    for (int early : {1, 0}) {
        const std::vector<float> h1 = B.h, hs1 = B.hs, y1 = y, w1 = B.w;
        const std::vector<int32_t> i1 = B.idx;
        std::fill(B.h.begin(), B.h.end(), NAN);
        if (a.has_shared) /* else hs is a placeholder no kernel writes */
            std::fill(B.hs.begin(), B.hs.end(), NAN);
        std::fill(B.w.begin(), B.w.end(), NAN);
        std::fill(B.idx.begin(), B.idx.end(), -7);
        B.ticket = 5; /* a router that took the ticket would leave 0 */
        run(a, y.data(), true, early, 0, true);
        const bool tk = B.ticket != 5;
        B.ticket = 0;
        if (tk || std::memcmp(B.h.data(), h1.data(), sizeof(float) * h1.size()) ||
            std::memcmp(B.hs.data(), hs1.data(), sizeof(float) * hs1.size()) ||
            std::memcmp(y.data(), y1.data(), sizeof(float) * a.H) || B.idx != i1 ||
            std::memcmp(B.w.data(), w1.data(), sizeof(float) * w1.size())) {
            printf("FAIL %s (int8 x): the routing ranked by its readers (early %d) changed %s\n", name, early,
                   tk ? "the router's ticket" : "h, y or the routing written out");
            g_bad++;
            return;
        }
        g_late++;
    }
    /* the rows staged in shared memory (k_gateup_q8s) in blocks of 1, 3, 9 pairs and all of them: h and y
     * bitwise (the layers moes_takes takes; the run counts them, main asks for some) */
    const int64_t npair = ((int64_t)a.k * a.I + a.Is) / 2;
    const bool qs = moes_takes(a);
    for (int64_t qper : {(int64_t)1, (int64_t)3, (int64_t)9, npair}) {
        if (!qs)
            break;
        const std::vector<float> h1 = B.h, hs1 = B.hs, y1 = y;
        std::fill(B.h.begin(), B.h.end(), NAN);
        std::fill(B.hs.begin(), B.hs.end(), NAN);
        run(a, y.data(), true, 0, qper);
        if (std::memcmp(B.h.data(), h1.data(), sizeof(float) * h1.size()) ||
            std::memcmp(B.hs.data(), hs1.data(), sizeof(float) * hs1.size()) ||
            std::memcmp(y.data(), y1.data(), sizeof(float) * a.H)) {
            printf("FAIL %s (int8 x): h or y differ with the gate/up rows staged, %lld pairs a block\n", name,
                   (long long)qper);
            g_bad++;
            return;
        }
        g_q8s++;
    }
    /* the router's logits: its rows over the quantized x (a bf16 shared-expert gate row over x) */
    const std::vector<double> xh = q8_of(x, a.H);
    std::vector<double> xd(x, x + a.H);
    for (int64_t e = 0; e < a.E + a.has_sg; e++) {
        const bool sgr = e == a.E;
        double c;
        const double ref = emu_rdot_cond(sgr ? L.sgw : L.router, sgr ? 0 : e,
                                         sgr && !mkc_is_aff(a.sgw.kind) ? xd.data() : xh.data(), &c); /* as rq */
        if (!(fabs((double)B.logits[e] - ref) <= 5e-6 * c + 1e-30)) {
            printf("FAIL %s (int8 x): router logit %lld: %.9g, reference %.9g\n", name, (long long)e,
                   (double)B.logits[e], ref);
            g_bad++;
            return;
        }
    }
    /* h: silu(g) u of the double products over the quantized x, g and u each within 5e-6 of their sums */
    double worst = 0.0;
    for (int64_t j = 0; j <= a.k; j++) {
        if (j == a.k && !a.has_shared)
            break;
        const int64_t nI = j < a.k ? a.I : a.Is;
        for (int64_t r = 0; r < nI; r++) {
            double cg, cu;
            const int64_t row = j < a.k ? (int64_t)B.idx[j] * a.I + r : r;
            const double g = emu_rdot_cond(j < a.k ? L.gate : L.sg, row, xh.data(), &cg);
            const double u = emu_rdot_cond(j < a.k ? L.up : L.su, row, xh.data(), &cu);
            const double sg = g / (1.0 + exp(-g)), ref = sg * u;
            const double bound = 1.2 * fabs(u) * 5e-6 * cg + fabs(sg) * 5e-6 * cu + 1e-6 * fabs(ref) + 1e-30;
            const double got = j < a.k ? B.h[j * a.I + r] : B.hs[r], err = fabs(got - ref);
            if (!(err <= bound)) {
                printf("FAIL %s (int8 x): h of choice %lld row %lld: %.9g, reference %.9g, bound %.3g\n", name,
                       (long long)j, (long long)r, got, ref, bound);
                g_bad++;
                return;
            }
            worst = std::max(worst, err / bound);
        }
    }
    /* y: the routing weights and shared gate as the kernels have them, the down rows over the
     * quantized h of each choice (and hs) */
    std::vector<std::vector<double>> hh(a.k + 1);
    for (int64_t j = 0; j < a.k; j++)
        hh[j] = q8_of(B.h.data() + j * a.I, a.I);
    if (a.has_shared)
        hh[a.k] = q8_of(B.hs.data(), a.Is);
    const double gsh = a.has_sg ? 1.0 / (1.0 + exp(-(double)B.logits[a.E])) : 1.0;
    double worst_y = 0.0;
    int misses_f = 0;
    /* y[o] of the rule in double, and its bound's sum */
    auto yref = [&](int64_t o, double *cond) {
        double ref = 0.0;
        *cond = 0.0;
        for (int64_t j = 0; j <= a.k; j++) {
            if (j == a.k && !a.has_shared)
                break;
            double c;
            const double wj = j < a.k ? (double)B.w[j] : gsh;
            ref += wj * emu_rdot_cond(j < a.k ? L.down : L.sd, j < a.k ? (int64_t)B.idx[j] * a.H + o : o,
                                      hh[j].data(), &c);
            *cond += fabs(wj) * c;
        }
        return ref;
    };
    for (int64_t o = 0; o < a.H; o++) {
        double cond;
        const double ref = yref(o, &cond);
        const double bound = 5e-6 * cond + 1e-30, err = fabs((double)y[o] - ref);
        if (!(err <= bound)) {
            printf("FAIL %s (int8 x): y[%lld] %.9g, reference %.9g, bound %.3g\n", name, (long long)o, (double)y[o],
                   ref, bound);
            g_bad++;
            return;
        }
        worst_y = std::max(worst_y, err / bound);
    }
    /* the control: the float down kernel on the same h is off the rule somewhere */
    run(a, yf.data(), false);
    for (int64_t o = 0; o < a.H; o++) {
        double cond;
        const double ref = yref(o, &cond);
        misses_f += !(fabs((double)yf[o] - ref) <= 5e-6 * cond);
    }
    if (!misses_f) {
        printf("FAIL %s (int8 x): the float down kernel met the int8 rule's bound on every row\n", name);
        g_bad++;
    }
    /* the VRAM cache: the chosen experts in slots in reverse order, y bitwise */
    std::vector<int32_t> ids(B.idx.begin(), B.idx.end());
    std::reverse(ids.begin(), ids.end());
    const int n = (int)ids.size();
    std::vector<int32_t> slot(L.E, -1);
    for (int sl = 0; sl < n; sl++)
        slot[ids[sl]] = sl;
    pool pg, pu, pd;
    pool_of(pg, &m.gate, L.I, ids.data(), n);
    pool_of(pu, &m.up, L.I, ids.data(), n);
    pool_of(pd, &m.down, L.H, ids.data(), n);
    mk_cuda_moe mc = m;
    mc.slot_of = slot.data();
    mc.cgate = pg.v;
    mc.cup = pu.v;
    mc.cdown = pd.v;
    moe_args ac;
    if (moe_args_of(&mc, &ac) != MK_OK || !moe_q8_takes(ac)) {
        printf("FAIL %s (int8 x): the cache's views\n", name);
        g_bad++;
        return;
    }
    run(ac, yc.data(), true);
    if (std::memcmp(y.data(), yc.data(), y.size() * 4)) {
        printf("FAIL %s (int8 x): experts read from the cache changed y\n", name);
        g_bad++;
    }
    { /* and with the routing ranked by its readers: y bitwise, each choice's slot written out, the
         routing counted once (by gate/up block 0, not by every block or the down kernel) */
        std::vector<int32_t> counts(L.E, 0);
        moe_args al = ac;
        al.counts = counts.data();
        std::fill(yc.begin(), yc.end(), NAN);
        std::fill(B.loc.begin(), B.loc.end(), -7);
        run(al, yc.data(), true, 1, 0, true);
        bool ok = !std::memcmp(y.data(), yc.data(), y.size() * 4);
        for (int j = 0; j < n && ok; j++)
            ok = B.loc[j] == slot[B.idx[j]];
        for (int32_t e = 0; e < L.E && ok; e++)
            ok = counts[e] == (slot[e] >= 0 ? 1 : 0);
        if (!ok) {
            printf("FAIL %s (int8 x): the routing ranked by its readers through the cache changed y, the slots "
                   "written out or the counts\n", name);
            g_bad++;
        }
        g_late++;
    }
    if (qs && moes_takes(ac)) { /* and with the rows staged */
        std::fill(yc.begin(), yc.end(), NAN);
        run(ac, yc.data(), true, 0, 5);
        if (std::memcmp(y.data(), yc.data(), y.size() * 4)) {
            printf("FAIL %s (int8 x): experts read from the cache into staged rows changed y\n", name);
            g_bad++;
        }
        g_q8s++;
    }
    /* controls: a gate, up or down slot holding another expert's bytes must change y */
    for (int part = 0; part < 3; part++) {
        std::vector<int32_t> other = ids;
        other[0] = (ids[0] + 1) % (int32_t)L.E;
        pool qg, qu, qd;
        pool_of(qg, &m.gate, L.I, part == 0 ? other.data() : ids.data(), n);
        pool_of(qu, &m.up, L.I, part == 1 ? other.data() : ids.data(), n);
        pool_of(qd, &m.down, L.H, part == 2 ? other.data() : ids.data(), n);
        mk_cuda_moe mx = m;
        mx.slot_of = slot.data();
        mx.cgate = qg.v;
        mx.cup = qu.v;
        mx.cdown = qd.v;
        moe_args ax;
        if (moe_args_of(&mx, &ax) != MK_OK) {
            g_bad++;
            return;
        }
        run(ax, yc.data(), true);
        if (!std::memcmp(y.data(), yc.data(), y.size() * 4)) {
            printf("FAIL %s (int8 x): a %s cache slot holding another expert left y unchanged\n", name,
                   part == 0 ? "gate" : part == 1 ? "up" : "down");
            g_bad++;
        }
        if (part < 2 && qs && moes_takes(ax)) { /* the staged rows read the cache's slots too */
            run(ax, yc.data(), true, 0, 5);
            if (!std::memcmp(y.data(), yc.data(), y.size() * 4)) {
                printf("FAIL %s (int8 x, staged rows): a %s cache slot holding another expert left y unchanged\n",
                       name, part == 0 ? "gate" : "up");
                g_bad++;
            }
        }
    }
    /* a batched step of NT tokens (the third a copy of the first), both gate/up orders: every row
     * bitwise its one-token int8 step's */
    std::vector<float> xs((size_t)NT * a.H), ys((size_t)NT * a.H), yb((size_t)NT * a.H);
    for (int t = 0; t < NT; t++)
        for (int64_t i = 0; i < a.H; i++)
            xs[(size_t)t * a.H + i] = t == 0 ? x[i] : t == 2 ? xs[i] : emu_rand(-1.0f, 1.0f);
    for (int t = 0; t < NT; t++) {
        bufs B1(L);
        const float *xt = xs.data() + (size_t)t * a.H;
        float *yt = ys.data() + (size_t)t * a.H;
        for (unsigned b = 0; b < R; b++)
            emu_block(R, b, MOE_WARPS * 32, [&] {
                k_router<false, true>(a, xt, B1.logits.data(), B1.idx.data(), B1.w.data(), &B1.ticket, B1.loc.data());
            });
        for (unsigned b = 0; b < G; b++)
            emu_block(G, b, MOE_WARPS * 32,
                      [&] { k_gateup_q8<false>(a, xt, B1.idx.data(), B1.h.data(), B1.hs.data(), B1.loc.data()); });
        for (unsigned b = 0; b < D; b++)
            emu_block(D, b, MOE_WARPS * 32, [&] {
                k_down2_q8<false>(a, B1.idx.data(), B1.w.data(), B1.h.data(), B1.hs.data(), B1.logits.data(), yt, 0,
                                  B1.loc.data());
            });
    }
    for (int ga = 0; ga < (a.I % (2 * MOE_WARPS) == 0 ? 2 : 1); ga++) {
        bufs_n Bn(a, NT, ga);
        std::fill(yb.begin(), yb.end(), NAN);
        const unsigned n = NT;
        for (unsigned b = 0; b < R * n; b++)
            emu_block(R * n, b, MOE_WARPS * 32, [&] {
                k_router<false, true>(Bn.a, xs.data(), Bn.logits.data(), Bn.idx.data(), Bn.w.data(), Bn.ticket.data(),
                                      Bn.loc.data());
            });
        for (unsigned b = 0; b < G * n; b++)
            emu_block(G * n, b, MOE_WARPS * 32, [&] {
                k_gateup_q8<false>(Bn.a, xs.data(), Bn.idx.data(), Bn.h.data(), Bn.hs.data(), Bn.loc.data());
            });
        for (unsigned b = 0; b < D * n; b++)
            emu_block(D * n, b, MOE_WARPS * 32, [&] {
                k_down2_q8<false>(Bn.a, Bn.idx.data(), Bn.w.data(), Bn.h.data(), Bn.hs.data(), Bn.logits.data(),
                                  yb.data(), 0, Bn.loc.data());
            });
        for (int t = 0; t < NT; t++)
            if (std::memcmp(yb.data() + (size_t)t * a.H, ys.data() + (size_t)t * a.H, (size_t)a.H * 4)) {
                printf("FAIL %s (int8 x, gate/up order %d): batched row %d differs from its one-token step\n", name,
                       ga, t);
                g_bad++;
                break;
            }
    }
    printf("%-58s int8 x: h worst |diff|/bound %.3g, y %.3g; cache bitwise; %d tokens batched bitwise; float down "
           "off the rule at %d rows\n", name, worst, worst_y, NT, misses_f);
}

// router_only: the routers' folds alone; q8_only: those and the int8-activation step (q8_moe) alone
// (test_cuda_moe's first shape, whose scale rows the staged-weight kernels do not take)
static void run_case(const char *name, emu_layer L, int bits, bool router_only = false, bool q8_only = false) {
    emu_layer_make(&L, bits);
    mk_cuda_moe m;
    std::memset(&m, 0, sizeof m);
    m.hidden = L.H;
    m.n_experts = L.E;
    m.top_k = L.k;
    m.inter = L.I;
    m.shared_inter = L.shared ? L.Is : 0;
    m.score = L.sigmoid ? MK_CUDA_SCORE_SIGMOID : MK_CUDA_SCORE_SOFTMAX;
    m.norm_topk = L.norm;
    m.scale = L.scale;
    m.sel_bias = L.bias;
    m.n_group = L.G;
    m.topk_group = L.TG;
    m.router = *emu_wt(L.router);
    m.gate = *emu_wt(L.gate);
    m.up = *emu_wt(L.up);
    m.down = *emu_wt(L.down);
    m.has_shared = L.shared;
    m.has_shared_gate = L.shared_gate;
    if (L.shared) {
        m.sh_gate = *emu_wt(L.sg);
        m.sh_up = *emu_wt(L.su);
        m.sh_down = *emu_wt(L.sd);
        if (L.shared_gate)
            m.sh_gate_w = *emu_wt(L.sgw);
    }
    moe_args a;
    if (moe_args_of(&m, &a) != MK_OK) {
        printf("FAIL %s: %s\n", name, mk_err_msg());
        g_bad++;
        return;
    }
    fold_router(name, a, L);
    if (mkc_is_aff(a.router.kind))
        fold_router(name, a, L, true);
    if (router_only) {
        emu_layer_free(&L);
        return;
    }
    if (q8_only) {
        std::vector<float> xq(L.H);
        for (auto &v : xq)
            v = emu_rand(-1.0f, 1.0f);
        q8_moe(name, a, L, m, xq.data());
        emu_layer_free(&L);
        return;
    }
    std::vector<float> x(L.H), y(L.H), y2(L.H);
    std::vector<double> ref(L.H);
    std::vector<int32_t> want(L.k);
    for (int tries = 0;; tries++) {
        for (auto &v : x)
            v = emu_rand(-1.0f, 1.0f);
        if (emu_layer_ref(&L, x.data(), ref.data(), want.data()))
            break;
        if (tries > 50) {
            printf("FAIL %s: no input clear of near-ties\n", name);
            g_bad++;
            return;
        }
    }
    const bool aff = mkc_is_aff(a.gate.kind);
    const int modes[4][3] = {{0, 1, 1}, {0, 0, 0}, {1, aff ? 2 : 1, aff ? 2 : 1}, {1, 0, 0}}; /* P, x staged, h staged */
    double worst = 0.0;
    int staged_runs = 0;
    bufs B(L);
    for (int mi = 0; mi < 4; mi++) {
        const int *md = modes[mi];
        std::fill(y.begin(), y.end(), NAN);
        step(a, x.data(), y.data(), md[0], md[1], md[2], B);
        for (int64_t j = 0; j < L.k; j++)
            if (B.idx[j] != want[j]) {
                printf("FAIL %s: choice %lld is expert %d, reference %d\n", name, (long long)j, B.idx[j], want[j]);
                g_bad++;
                break;
            }
        const double e = emu_rel_l2(y.data(), ref.data(), (size_t)L.H);
        worst = std::max(worst, e);
        if (!(e <= 1e-5)) {
            printf("FAIL %s (generation %d, staged %d/%d): y rel L2 %.3e\n", name, md[0] + 1, md[1], md[2], e);
            g_bad++;
        }
        /* the staged-weight kernels (generation 2 with x and h padded): y bitwise, in blocks of 1, 3 or 5
         * and all units, each kernel alone and both */
        if (mi == 2 && aff && !moes_takes(a)) {
            printf("FAIL %s: the staged-weight kernels do not take the layer\n", name);
            g_bad++;
        }
        if (mi == 2 && aff) {
            const int64_t pers[4][2] = {{1, 1}, {3, 5}, {1000, 0}, {0, 1000}};
            for (const auto &pp : pers) {
                std::fill(y2.begin(), y2.end(), NAN);
                step(a, x.data(), y2.data(), 1, 2, 2, B, pp[0], pp[1]);
                staged_runs++;
                if (std::memcmp(y.data(), y2.data(), y.size() * 4)) {
                    printf("FAIL %s: the staged-weight kernels (%lld pairs, %lld rows a block) differ from "
                           "generation 2's\n", name, (long long)pp[0], (long long)pp[1]);
                    g_bad++;
                }
            }
        }
        /* a batched step of NT tokens against their one-token steps */
        std::vector<float> xs((size_t)NT * L.H), ys((size_t)NT * L.H);
        for (int t = 0; t < NT; t++)
            for (int64_t i = 0; i < L.H; i++)
                xs[(size_t)t * L.H + i] = t == 0 ? x[i] : t == 2 ? xs[i] : emu_rand(-1.0f, 1.0f);
        for (int t = 0; t < NT; t++)
            step(a, xs.data() + (size_t)t * L.H, ys.data() + (size_t)t * L.H, md[0], md[1], md[2], B);
        check_batch(name, a, xs.data(), ys.data(), md, nullptr, {});
        if (mi == 1 || mi == 3) /* the cache: with x and h staged, each generation */
            continue;
        /* the VRAM expert cache: every other chosen expert and one other, in slots in another order */
        std::vector<int32_t> ids;
        for (int64_t j = L.k - 1; j >= 0; j -= 2)
            ids.push_back(want[j]);
        for (int32_t e2 = 0; e2 < L.E; e2++)
            if (std::find(want.begin(), want.end(), e2) == want.end()) {
                ids.push_back(e2);
                break;
            }
        const int n = (int)ids.size();
        std::vector<int32_t> slot(L.E, -1), counts(L.E, 0);
        for (int s = 0; s < n; s++)
            slot[ids[s]] = s;
        for (int control = 0; control < (mi == 2 ? 4 : 1); control++) { /* the controls once */
            std::vector<int32_t> other = ids;
            other[0] = (ids[0] + 1) % (int32_t)L.E; /* slot 0 (a chosen expert): the next expert's bytes */
            pool pg, pu, pd;
            pool_of(pg, &m.gate, L.I, control == 1 ? other.data() : ids.data(), n);
            pool_of(pu, &m.up, L.I, control == 2 ? other.data() : ids.data(), n);
            pool_of(pd, &m.down, L.H, control == 3 ? other.data() : ids.data(), n);
            mk_cuda_moe mc = m;
            mc.slot_of = slot.data();
            mc.cgate = pg.v;
            mc.cup = pu.v;
            mc.cdown = pd.v;
            std::fill(counts.begin(), counts.end(), 0);
            mc.counts = counts.data();
            moe_args ac;
            if (moe_args_of(&mc, &ac) != MK_OK) {
                printf("FAIL %s: cache views: %s\n", name, mk_err_msg());
                g_bad++;
                break;
            }
            std::fill(y2.begin(), y2.end(), NAN);
            step(ac, x.data(), y2.data(), md[0], md[1], md[2], B);
            bool same = !std::memcmp(y.data(), y2.data(), y.size() * 4);
            if (mi == 2 && aff) { /* the staged kernels read the cache too: the same verdict (its routing
                                   * counted apart, so the counts below stay the first step's) */
                const std::vector<int32_t> kept = counts;
                std::fill(y2.begin(), y2.end(), NAN);
                step(ac, x.data(), y2.data(), 1, 2, 2, B, 3, 5);
                counts = kept;
                staged_runs++;
                const bool same_s = !std::memcmp(y.data(), y2.data(), y.size() * 4);
                if (same_s != same) {
                    printf("FAIL %s: through the cache (control %d) the staged-weight kernels %s y\n", name,
                           control, same_s ? "kept" : "changed");
                    g_bad++;
                }
                same = same && same_s;
            }
            if (!control && !same) {
                printf("FAIL %s (generation %d, staged %d/%d): experts read from the cache changed y\n", name,
                       md[0] + 1, md[1], md[2]);
                g_bad++;
            }
            if (control && same) {
                printf("FAIL %s: a %s cache slot holding another expert left y unchanged\n", name,
                       control == 1 ? "gate" : control == 2 ? "up" : "down");
                g_bad++;
            }
            for (int32_t e2 = 0; !control && e2 < L.E; e2++)
                if (counts[e2] != (std::find(want.begin(), want.end(), e2) != want.end() ? 1 : 0)) {
                    printf("FAIL %s: routing count of expert %d is %d\n", name, e2, counts[e2]);
                    g_bad++;
                    break;
                }
            if (!control) { /* batched through the cache: the uncached one-token rows, counts summed */
                std::vector<int32_t> sum(L.E, 0);
                for (int t = 0; t < NT; t++) {
                    std::fill(counts.begin(), counts.end(), 0);
                    step(ac, xs.data() + (size_t)t * L.H, y2.data(), md[0], md[1], md[2], B);
                    for (int32_t e2 = 0; e2 < L.E; e2++)
                        sum[e2] += counts[e2];
                }
                check_batch(name, ac, xs.data(), ys.data(), md, counts.data(), sum);
            }
        }
    }
    if (aff)
        q8_moe(name, a, L, m, x.data());
    printf("%-58s y rel L2 <= %.2e over 4 launch modes; cache bitwise in 2, counts exact, 3 controls caught; "
           "%d tokens batched bitwise; staged weights bitwise (%d runs)\n", name, worst, NT, staged_runs);
    if (aff && staged_runs != 8) {
        printf("FAIL %s: the staged-weight kernels ran %d times, expected 8\n", name, staged_runs);
        g_bad++;
    }
    emu_layer_free(&L);
}

int main() {
    /* H, E, k, I, Is; sigmoid, norm, shared, shared_gate; scale; G, TG */
    run_case("qwen3-next-like: softmax 16 top-4, shared + gate, 4-bit",
             emu_layer{128, 16, 4, 128, 128, false, true, true, true, 1.0f, 1, 1, nullptr, {}, {}, {}, {}, {}, {}, {}, {}},
             4);
    run_case("deepseek-v3-like: sigmoid, bias, 4 groups keep 2, shared, 8-bit",
             emu_layer{128, 16, 4, 128, 128, true, true, true, false, 2.5f, 4, 2, nullptr, {}, {}, {}, {}, {}, {}, {}, {}},
             8);
    run_case("qwen3-moe-like: softmax 20 top-4, 4-bit, H 320, I 192",
             emu_layer{320, 20, 4, 192, 0, false, true, false, false, 1.0f, 1, 1, nullptr, {}, {}, {}, {}, {}, {}, {}, {}},
             4, false, true);
    run_case("bf16 experts: softmax 8 top-2, not renormalised",
             emu_layer{64, 8, 2, 32, 0, false, false, false, false, 1.0f, 1, 1, nullptr, {}, {}, {}, {}, {}, {}, {}, {}},
             16);
    /* the routers alone, folded: 4-bit, and with an affine shared-expert gate row */
    run_case("qwen3-moe-like router: softmax 32 top-4, 4-bit, H 256",
             emu_layer{256, 32, 4, 128, 0, false, true, false, false, 1.0f, 1, 1, nullptr, {}, {}, {}, {}, {}, {}, {}, {},
                       4, false},
             4, true);
    run_case("qwen3-next-like router: 4-bit, an 8-bit shared-expert gate",
             emu_layer{128, 16, 4, 128, 128, false, true, true, true, 1.0f, 1, 1, nullptr, {}, {}, {}, {}, {}, {}, {}, {},
                       4, true},
             4, true);
    if (!g_q8s) {
        printf("FAIL: no layer took the int8 gate/up with staged rows (k_gateup_q8s)\n");
        g_bad++;
    }
    if (!g_late) {
        printf("FAIL: no layer ran the routing ranked by its readers (mk_cuda_set_route_late)\n");
        g_bad++;
    }
    printf("routing ranked by its readers: %d checks bitwise\n", g_late);
    return g_bad ? 1 : 0;
}
