// Host emulation (cuda_emu.h) of the CUDA backend's attention kernels
// (src/cuda/cuda_attn_kernel.cuh: attn_block through k_attn, k_attn_each and
// k_attn_merge, included as they are) for one decode token: GQA, MLA's
// latent cache (v = k, strided rows, dv < dk), gpt_oss's sliding window
// with sinks, a head wider than 128 (8 value dims per lane), the first
// position; each split over ATT_SPLIT and ATT_SPLIT_MAX shares merged by
// k_attn_merge and unsplit, against the softmax in double: relative L2 <= 1e-5, and the
// shares merged by the last of each head (tickets, in either order of the
// shares) bitwise k_attn_merge's, the tickets left at zero. Then a
// batched step's k_attn_each over three sequences at other positions, each
// writing its new rows: every output bitwise k_attn's for that sequence
// alone, the rows in its caches. The q/k norms and RoPE folded into k_attn
// (cuda_fold.cuh) against k_qk_norm_rope then k_attn: the output and the
// cache row written bitwise, head dims 64 / 128 / 256 (one and two terms
// of the norm's sum per thread), full and partial rotation, with and
// without the norms. The decode attention grouped by kv head (k_attn_gqa,
// cuda_attn_gqa.cuh) against the double softmax (run_gqa; `attn_emu gqa`
// runs two of its cases alone, for the script's control). A control: the
// window case's reference without its sinks must miss the bound. Exit 1 on
// a mismatch.
#include <cstdio>
#include <cstdlib>

#include "emu_impl.h"
extern "C" {
#include "moekit/backend.h"
}
#include "cuda/cuda_attn_kernel.cuh"
#include "cuda/cuda_attn_gqa.cuh"
#include "cuda/cuda_norm_kernel.cuh"

static int g_bad;
static double rnd() { return (double)rand() / RAND_MAX * 2 - 1; }

struct acase {
    const char *name;
    int nh, nkv, dk, dv;
    bool lat; /* v = k: one cache of dk-float rows, values its first dv */
    int64_t pos, window;
    bool sinks;
};

// one token at position pos0 over cache rows 0..pos0 (row pos0 already there); fused: the shares
// merged by the last one of each head (tickets), else by k_attn_merge. Shares run in order y = ns -
// 1 .. 0 when reversed, so that the merging block is not always the last share.
static void launch(const mk_attn_args &a, int64_t ks, int64_t vs, unsigned ns, std::vector<float> &part,
                   bool fused = false, bool reversed = false) {
    const unsigned nb = (unsigned)a.n_heads;
    const bool vec = a.dk % 4 == 0 && ks % 4 == 0;
    part.assign((size_t)nb * ATT_SPLIT_MAX * (a.dv + 2), NAN);
    std::vector<unsigned> tickets(nb, 0u);
    unsigned *tk = fused && ns > 1 ? tickets.data() : nullptr;
    for (unsigned i = 0; i < ns; i++)
        for (unsigned b = 0; b < nb; b++) {
            const unsigned y = reversed ? ns - 1 - i : i;
            emu_block(
                nb, b, ATT_WARPS * 32,
                [&] {
                    if (a.dv <= 128)
                        k_attn<4>(a, ks, vs, vec, part.data(), 0, tk);
                    else
                        k_attn<8>(a, ks, vs, vec, part.data(), 0, tk);
                },
                ns, y);
        }
    if (ns > 1 && !tk)
        for (unsigned b = 0; b < nb; b++)
            emu_block(nb, b, 128, [&] { k_attn_merge(a, part.data(), (int)ns); });
    for (unsigned b = 0; b < nb; b++)
        if (tickets[b]) {
            printf("FAIL: head %u's ticket left at %u\n", b, tickets[b]);
            g_bad++;
        }
}

// the softmax in double (with the window and the sinks when given)
static void reference(const mk_attn_args &a, int64_t ks, int64_t vs, bool with_sinks, std::vector<double> &out) {
    out.assign((size_t)a.n_heads * a.dv, 0.0);
    const int64_t T = a.pos0 + 1, S0 = a.window > 0 && T > a.window ? T - a.window : 0;
    for (int h = 0; h < a.n_heads; h++) {
        const int j = h / (a.n_heads / a.n_kv);
        std::vector<double> x(T, 0.0);
        double m = with_sinks && a.sinks ? a.sinks[h] : -INFINITY;
        for (int64_t s = S0; s < T; s++) {
            double d = 0;
            for (int i = 0; i < a.dk; i++)
                d += (double)a.q[h * a.dk + i] * a.k[s * ks + (int64_t)j * a.dk + i];
            x[s] = d * a.scale;
            m = std::max(m, x[s]);
        }
        double den = with_sinks && a.sinks ? exp(a.sinks[h] - m) : 0.0;
        for (int64_t s = S0; s < T; s++)
            den += exp(x[s] - m);
        for (int d = 0; d < a.dv; d++) {
            double v = 0;
            for (int64_t s = S0; s < T; s++)
                v += exp(x[s] - m) * a.v[s * vs + (int64_t)j * a.dv + d];
            out[(size_t)h * a.dv + d] = v / den;
        }
    }
}

// one decode token's arguments at position pos (scale 1 / sqrt(dk))
static mk_attn_args token_args(const float *q, const float *k, const float *v, float *out, int nh, int nkv, int dk,
                               int dv, int64_t pos, int64_t window, const float *sinks) {
    mk_attn_args a = {};
    a.q = q;
    a.k = k;
    a.v = v;
    a.out = out;
    a.n = 1;
    a.pos0 = pos;
    a.n_heads = nh;
    a.n_kv = nkv;
    a.dk = dk;
    a.dv = dv;
    a.scale = 1.0f / sqrtf((float)dk);
    a.window = window;
    a.sinks = sinks;
    return a;
}

static double rel_l2(const std::vector<float> &y, const std::vector<double> &r) {
    return emu_rel_l2(y.data(), r.data(), r.size());
}

static void run_case(const acase &c) {
    const int64_t ks = (int64_t)c.nkv * c.dk, vs = c.lat ? ks : (int64_t)c.nkv * c.dv, T = c.pos + 1;
    std::vector<float> q((size_t)c.nh * c.dk), kc((size_t)T * ks), vc(c.lat ? 0 : (size_t)T * vs), sk(c.nh);
    for (auto &v : q) v = (float)rnd();
    for (auto &v : kc) v = (float)rnd();
    for (auto &v : vc) v = (float)rnd();
    for (auto &v : sk) v = (float)(2 * rnd());
    std::vector<float> out((size_t)c.nh * c.dv);
    mk_attn_args a = token_args(q.data(), kc.data(), c.lat ? kc.data() : vc.data(), out.data(), c.nh, c.nkv, c.dk,
                                c.dv, c.pos, c.window, c.sinks ? sk.data() : nullptr);
    a.k_stride = c.lat ? ks : 0;
    a.v_stride = c.lat ? ks : 0;
    std::vector<double> ref, ref_nosink;
    reference(a, ks, vs, true, ref);
    std::vector<float> part;
    double worst = 0;
    for (unsigned ns : {1u, (unsigned)ATT_SPLIT_MAX, (unsigned)ATT_SPLIT}) { /* ATT_SPLIT last: kept below */
        std::fill(out.begin(), out.end(), NAN);
        launch(a, ks, vs, ns, part);
        const double e = rel_l2(out, ref);
        worst = std::max(worst, e);
        if (!(e <= 1e-5)) {
            printf("FAIL %s (%u shares): rel L2 %.3e\n", c.name, ns, e);
            g_bad++;
        }
    }
    /* the shares merged by the last of each head: bitwise k_attn_merge's, whichever share is last */
    const std::vector<float> merged = out;
    for (int rev = 0; rev < 2; rev++) {
        std::fill(out.begin(), out.end(), NAN);
        launch(a, ks, vs, ATT_SPLIT, part, true, rev);
        if (std::memcmp(out.data(), merged.data(), out.size() * 4)) {
            printf("FAIL %s: merged by the last share%s, the output differs from k_attn_merge's\n", c.name,
                   rev ? " (shares in reverse)" : "");
            g_bad++;
        }
    }
    if (c.sinks) { /* the control: a reference without the sinks is not what the kernel computes */
        reference(a, ks, vs, false, ref_nosink);
        if (rel_l2(out, ref_nosink) <= 1e-5) {
            printf("FAIL %s: the output also matches the reference without sinks\n", c.name);
            g_bad++;
        }
    }
    printf("%-44s rel L2 <= %.2e, unsplit, %d and %d shares; merged by the last share bitwise\n", c.name, worst,
           ATT_SPLIT_MAX, ATT_SPLIT);
}

// k_attn_each over sequences at positions pos[i], each with its new rows:
// outputs bitwise k_attn's per sequence (its rows already in its caches),
// every cache's row pos0 the new row after the call
/* Sequence i of a batch at position pos: its reference caches kr / vr
 * (random rows, row pos its new rows from kn / vn) and the slot's kc / vc
 * (the same with row pos NaN: the kernel writes it), entered in sq */
static void batch_seq(int i, int64_t pos, int64_t kw, const std::vector<float> &kn, const std::vector<float> &vn,
                      std::vector<float> &kr, std::vector<float> &vr, std::vector<float> &kc, std::vector<float> &vc,
                      att_seqs &sq) {
    if (kr.empty()) {
        kr.resize((size_t)(pos + 1) * kw);
        vr.resize((size_t)(pos + 1) * kw);
        for (auto &v : kr) v = (float)rnd();
        for (auto &v : vr) v = (float)rnd();
        std::copy(kn.begin() + i * kw, kn.begin() + (i + 1) * kw, kr.begin() + pos * kw);
        std::copy(vn.begin() + i * kw, vn.begin() + (i + 1) * kw, vr.begin() + pos * kw);
    }
    kc = kr;
    vc = vr;
    std::fill(kc.begin() + pos * kw, kc.begin() + (pos + 1) * kw, NAN);
    std::fill(vc.begin() + pos * kw, vc.begin() + (pos + 1) * kw, NAN);
    sq.k[i] = kc.data();
    sq.v[i] = vc.data();
    sq.kn[i] = kn.data() + i * kw;
    sq.vn[i] = vn.data() + i * kw;
    sq.pos0[i] = pos;
}

/* The arguments every sequence of a batch shares: one token, nh heads on
 * nkv, head dims d, scale 1/8 */
static mk_attn_args batch_args(int nh, int nkv, int d) {
    mk_attn_args a = {};
    a.n = 1;
    a.n_heads = nh;
    a.n_kv = nkv;
    a.dk = d;
    a.dv = d;
    a.scale = 0.125f;
    return a;
}

static void run_each() {
    enum { NS = 3, NH = 4, NKV = 2, D = 64 };
    const int64_t pos[NS] = {0, 37, 100}, kw = NKV * D;
    std::vector<float> q(NS * NH * D), kn(NS * kw), vn(NS * kw), out(NS * NH * D), one(NH * D);
    for (auto &v : q) v = (float)rnd();
    for (auto &v : kn) v = (float)rnd();
    for (auto &v : vn) v = (float)rnd();
    std::vector<float> kc[NS], vc[NS], kr[NS], vr[NS];
    att_seqs sq;
    for (int i = 0; i < NS; i++)
        batch_seq(i, pos[i], kw, kn, vn, kr[i], vr[i], kc[i], vc[i], sq);
    mk_attn_args a = batch_args(NH, NKV, D);
    a.q = q.data();
    a.out = out.data();
    const unsigned nb = NS * NH;
    std::vector<float> part((size_t)nb * ATT_SPLIT * (D + 2), NAN);
    for (unsigned y = 0; y < ATT_SPLIT; y++)
        for (unsigned b = 0; b < nb; b++)
            emu_block(nb, b, ATT_WARPS * 32, [&] { k_attn_each<4>(a, sq, kw, kw, true, part.data()); }, ATT_SPLIT, y);
    for (unsigned b = 0; b < nb; b++)
        emu_block(nb, b, 128, [&] { k_attn_merge(a, part.data(), ATT_SPLIT); });
    /* the same step with its shares merged by the last of each (token, head): bitwise */
    std::vector<float> fused(out.size(), NAN), keep = out;
    std::vector<unsigned> tickets(nb, 0u);
    a.out = fused.data();
    for (unsigned y = 0; y < ATT_SPLIT; y++)
        for (unsigned b = 0; b < nb; b++)
            emu_block(
                nb, b, ATT_WARPS * 32, [&] { k_attn_each<4>(a, sq, kw, kw, true, part.data(), 0, tickets.data()); },
                ATT_SPLIT, y);
    a.out = out.data();
    if (std::memcmp(fused.data(), keep.data(), keep.size() * 4)) {
        printf("FAIL k_attn_each: merged by the last share, the outputs differ from k_attn_merge's\n");
        g_bad++;
    }
    for (int i = 0; i < NS; i++) {
        mk_attn_args s = a;
        s.q = q.data() + i * NH * D;
        s.k = kr[i].data();
        s.v = vr[i].data();
        s.out = one.data();
        s.pos0 = pos[i];
        std::vector<float> p1;
        launch(s, kw, kw, ATT_SPLIT, p1);
        if (std::memcmp(one.data(), out.data() + i * NH * D, sizeof(float) * NH * D)) {
            printf("FAIL k_attn_each: sequence %d (position %lld) differs from its own k_attn\n", i,
                   (long long)pos[i]);
            g_bad++;
        }
        if (std::memcmp(kc[i].data(), kr[i].data(), sizeof(float) * kr[i].size()) ||
            std::memcmp(vc[i].data(), vr[i].data(), sizeof(float) * vr[i].size())) {
            printf("FAIL k_attn_each: sequence %d's caches do not hold its new rows\n", i);
            g_bad++;
        }
    }
    printf("%-44s bitwise k_attn per sequence, rows written; merged by the last share bitwise\n",
           "k_attn_each: 3 sequences at 0, 37, 100");
}

// The q/k norms and RoPE folded into k_attn against k_qk_norm_rope, then
// k_attn: one token at position pos with its new rows, split over the
// default shares merged by the last one (or unsplit); the output, the cache
// row written, and q and the new k row left as k_qk_norm_rope leaves them,
// bitwise; the tickets back at zero. Control: the fold
// given the key norm's weights for the queries must change the output.
// A q/k fold case's inputs: raw q and new k / v rows of one token at
// position pos, caches of pos + 1 rows (row pos NaN: the kernel writes
// it), the norms' weights and the rotary rows
struct qk_inputs {
    int64_t ks, T;
    std::vector<float> q, kn, vn, qg, kg, cs, sn, kc, vc;
    qk_inputs(int nq, int nk, int hd, int rot, int64_t pos)
        : ks((int64_t)nk * hd), T(pos + 1), q((size_t)nq * hd), kn(ks), vn(ks), qg(hd), kg(hd), cs(rot / 2),
          sn(rot / 2), kc((size_t)T * ks), vc((size_t)T * ks) {
        for (auto &v : q) v = (float)(3 * rnd());
        for (auto &v : kn) v = (float)(3 * rnd());
        for (auto &v : vn) v = (float)rnd();
        for (auto &v : kc) v = (float)rnd();
        for (auto &v : vc) v = (float)rnd();
        for (int i = 0; i < hd; i++) {
            qg[i] = (float)(1 + 0.5 * rnd());
            kg[i] = (float)(1 + 0.5 * rnd());
        }
        for (int i = 0; i < rot / 2; i++) {
            const double th = (double)pos * pow(10000.0, -2.0 * i / rot);
            cs[i] = (float)cos(th);
            sn[i] = (float)sin(th);
        }
        std::fill(kc.begin() + pos * ks, kc.end(), NAN);
        std::fill(vc.begin() + pos * ks, vc.end(), NAN);
    }
};

// k_qk_norm_rope_w (a warp a row, 8 rows a block; mk_cuda_set_qk_rows_warp) over n tokens against
// k_qk_norm_rope (a block a row): q and k bitwise
static void run_qk_rows(int nq, int nk, int hd, int rot, bool norms, int64_t n) {
    std::vector<float> q((size_t)(n * nq * hd)), k((size_t)(n * nk * hd)), qg(hd), kg(hd), cs((size_t)(n * rot / 2)),
        sn((size_t)(n * rot / 2));
    for (auto *v : {&q, &k, &qg, &kg, &cs, &sn})
        for (auto &x : *v)
            x = (float)rnd();
    std::vector<float> q1 = q, k1 = k, q2 = q, k2 = k;
    const unsigned rows = (unsigned)(n * (nq + nk)), vt = mkc_norm_threads(hd), nb = (rows + 7) / 8;
    emu_smem((size_t)hd * sizeof(float));
    for (unsigned b = 0; b < rows; b++)
        emu_block(rows, b, vt, [&] {
            k_qk_norm_rope(q1.data(), nq, k1.data(), nk, hd, norms ? qg.data() : nullptr, norms ? kg.data() : nullptr,
                           1e-6f, rot, cs.data(), sn.data());
        });
    emu_smem(0);
    for (unsigned b = 0; b < nb; b++)
        emu_block(nb, b, 256, [&] {
            k_qk_norm_rope_w(q2.data(), nq, k2.data(), nk, (int64_t)rows, hd, norms ? qg.data() : nullptr,
                             norms ? kg.data() : nullptr, 1e-6f, rot, cs.data(), sn.data());
        });
    const bool same = !std::memcmp(q1.data(), q2.data(), q1.size() * 4) && !std::memcmp(k1.data(), k2.data(), k1.size() * 4);
    const bool moved = std::memcmp(q1.data(), q.data(), q1.size() * 4) != 0;
    printf("%s q/k norms a warp a row: %d on %d heads, d %d, rot %d%s, %lld tokens%s\n", same && moved ? "ok  " : "FAIL",
           nq, nk, hd, rot, norms ? ", norms" : "", (long long)n,
           same ? (moved ? ": bitwise k_qk_norm_rope" : ": q unchanged") : ": differs from k_qk_norm_rope");
    g_bad += !(same && moved);
}

static void run_qk_fold(int nq, int nk, int hd, int rot, bool norms, int64_t pos, unsigned ns = ATT_SPLIT) {
    qk_inputs in(nq, nk, hd, rot, pos);
    const int64_t ks = in.ks;
    std::vector<float> &q = in.q, &kn = in.kn, &vn = in.vn, &qg = in.qg, &kg = in.kg, &cs = in.cs, &sn = in.sn,
                       &kc = in.kc, &vc = in.vc;
    std::vector<float> kc2 = kc, vc2 = vc, q1 = q, k1 = kn, q2 = q, k2 = kn;
    std::vector<float> out1((size_t)nq * hd, NAN), out2((size_t)nq * hd, NAN);
    const unsigned vt = mkc_norm_threads(hd);
    /* q, caches, new k row and output set per walk (run below) */
    mk_attn_args a = token_args(nullptr, nullptr, nullptr, nullptr, nq, nk, hd, hd, pos, 0, nullptr);
    a.v_new = vn.data();
    const unsigned nb = (unsigned)nq;
    std::vector<float> part((size_t)nb * ATT_SPLIT * (hd + 2), NAN);
    std::vector<unsigned> tickets(nb, 0u);
    std::vector<unsigned> kt(nk, 0u);
    auto walk = [&](const mkc_qkfold &f) {
        for (unsigned y = 0; y < ns; y++)
            for (unsigned b = 0; b < nb; b++)
                emu_block(
                    nb, b, ATT_WARPS * 32,
                    [&] {
                        unsigned *tk = ns > 1 ? tickets.data() : nullptr;
                        if (hd <= 128)
                            (f.on ? k_attn<4, true> : k_attn<4>)(a, ks, ks, true, part.data(), 0, tk, f);
                        else
                            (f.on ? k_attn<8, true> : k_attn<8>)(a, ks, ks, true, part.data(), 0, tk, f);
                    },
                    ns, y);
    };
    /* one walk with its own q, caches, new k row and output */
    auto run = [&](std::vector<float> &qq, std::vector<float> &kcc, std::vector<float> &vcc, std::vector<float> &kk,
                   std::vector<float> &out, const mkc_qkfold &f) {
        a.q = qq.data();
        a.k = kcc.data();
        a.v = vcc.data();
        a.k_new = kk.data();
        a.out = out.data();
        walk(f);
    };
    /* the reference: k_qk_norm_rope's blocks (q heads, then k heads), then the walk */
    const unsigned nh = (unsigned)(nq + nk);
    for (unsigned b = 0; b < nh; b++)
        emu_block(nh, b, vt, [&] {
            k_qk_norm_rope(q1.data(), nq, k1.data(), nk, hd, norms ? qg.data() : nullptr,
                           norms ? kg.data() : nullptr, 1e-6f, rot, cs.data(), sn.data());
        });
    run(q1, kc, vc, k1, out1, mkc_qkfold());
    /* folded: the raw rows in, each block norming and rotating what it reads */
    mkc_qkfold f = {norms ? qg.data() : nullptr, norms ? kg.data() : nullptr, cs.data(), sn.data(), 1e-6f, rot,
                    (int)vt, 1, kt.data()};
    run(q2, kc2, vc2, k2, out2, f);
    char name[96];
    snprintf(name, sizeof name, "q/k fold: %d on %d heads, d %d, rot %d%s, pos %lld, %u shares", nq, nk, hd, rot,
             norms ? ", norms" : "", (long long)pos, ns);
    bool ok = true;
    if (std::memcmp(out1.data(), out2.data(), out1.size() * 4)) {
        printf("FAIL %s: the output differs from k_qk_norm_rope then k_attn\n", name);
        ok = false;
    }
    if (std::memcmp(kc.data() + pos * ks, kc2.data() + pos * ks, ks * 4) ||
        std::memcmp(vc.data() + pos * ks, vc2.data() + pos * ks, ks * 4)) {
        printf("FAIL %s: the cache rows written differ\n", name);
        ok = false;
    }
    if (std::memcmp(q2.data(), q1.data(), q.size() * 4) || std::memcmp(k2.data(), k1.data(), kn.size() * 4)) {
        printf("FAIL %s: q or the new k row is not left as k_qk_norm_rope leaves it\n", name);
        ok = false;
    }
    for (int j = 0; j < nk; j++)
        ok &= kt[j] == 0;
    if (!std::memcmp(q1.data(), q.data(), q.size() * 4)) {
        printf("FAIL %s: k_qk_norm_rope left q as it was (nothing tested)\n", name);
        ok = false;
    }
    for (unsigned b = 0; b < nb; b++)
        ok &= tickets[b] == 0;
    if (norms && pos > 0) { /* the control: the fold with the key norm's weights on the queries must
                             * differ (at position 0 the one row's weight is 1 whatever q) */
        std::vector<float> q3 = q, k3 = kn, kc3 = kc, vc3 = vc, out3((size_t)nq * hd, NAN);
        std::fill(kc3.begin() + pos * ks, kc3.end(), NAN);
        mkc_qkfold bad = f;
        bad.qg = kg.data();
        run(q3, kc3, vc3, k3, out3, bad);
        if (!std::memcmp(out1.data(), out3.data(), out1.size() * 4)) {
            printf("FAIL %s: the control (the key norm on the queries) gave the same output\n", name);
            ok = false;
        }
    }
    g_bad += !ok;
    if (ok)
        printf("%-44s output and cache rows bitwise the two launches'\n", name);
}

// k_attn_gqa (the decode attention grouped by kv head) for one token at
// position pos: nkv x AGQ_SHARES blocks of AGQ_WARPS warps, in order and in
// reverse (another share merges), against the softmax in double: rel L2 <=
// 1e-5; with kn (the step's new rows from k_new / v_new, the cache's row
// pos NaN until the kernel writes it) the row written; the tickets back at
// zero; the dynamic shared memory within agq_smem (emu_smem).
struct gcase {
    const char *name;
    int nh, nkv, dk, dv;
    int64_t pos, window;
    bool sinks, kn;
};
static bool run_gqa(const gcase &c) {
    const int64_t ks = (int64_t)c.nkv * c.dk, vs = (int64_t)c.nkv * c.dv, T = c.pos + 1;
    std::vector<float> q((size_t)c.nh * c.dk), kc((size_t)T * ks), vc((size_t)T * vs), sk(c.nh), kn(ks), vn(vs);
    for (auto &v : q) v = (float)(2 * rnd());
    for (auto &v : kc) v = (float)rnd();
    for (auto &v : vc) v = (float)rnd();
    for (auto &v : sk) v = (float)(2 * rnd());
    std::copy(kc.begin() + c.pos * ks, kc.end(), kn.begin());
    std::copy(vc.begin() + c.pos * vs, vc.end(), vn.begin());
    std::vector<float> out((size_t)c.nh * c.dv);
    mk_attn_args a = token_args(q.data(), kc.data(), vc.data(), out.data(), c.nh, c.nkv, c.dk, c.dv, c.pos, c.window,
                                c.sinks ? sk.data() : nullptr);
    std::vector<double> ref, ref_nosink;
    reference(a, ks, vs, true, ref);
    if (!agq_takes(&a, ks, vs)) {
        printf("FAIL %s: agq_takes declines it\n", c.name);
        return false;
    }
    const int G = c.nh / c.nkv;
    const unsigned nb = (unsigned)c.nkv, ns = AGQ_SHARES;
    std::vector<float> part((size_t)c.nh * ns * (c.dv + 2), NAN);
    std::vector<unsigned> tickets(nb, 0u);
    bool ok = true;
    double worst = 0;
    for (int rev = 0; rev < 2; rev++) {
        std::fill(out.begin(), out.end(), NAN);
        std::vector<float> kcc = kc, vcc = vc;
        a.k = kcc.data();
        a.v = vcc.data();
        if (c.kn) { /* the step's new rows: the kernel writes them into row pos */
            std::fill(kcc.begin() + c.pos * ks, kcc.end(), NAN);
            std::fill(vcc.begin() + c.pos * vs, vcc.end(), NAN);
            a.k_new = kn.data();
            a.v_new = vn.data();
        }
        emu_smem(agq_smem(G, c.dk, c.dv));
        for (unsigned i = 0; i < ns; i++)
            for (unsigned b = 0; b < nb; b++)
                emu_block(
                    nb, b, AGQ_WARPS * 32,
                    [&] {
                        if (c.dv <= 128)
                            (G > AGQ_WARPS ? k_attn_gqa<4, 2> : k_attn_gqa<4, 1>)(a, ks, vs, part.data(),
                                                                                   tickets.data(), mkc_qkfold());
                        else
                            (G > AGQ_WARPS ? k_attn_gqa<8, 2> : k_attn_gqa<8, 1>)(a, ks, vs, part.data(),
                                                                                   tickets.data(), mkc_qkfold());
                    },
                    ns, rev ? ns - 1 - i : i);
        emu_smem(0);
        const double e = rel_l2(out, ref);
        worst = std::max(worst, e);
        if (!(e <= 1e-5)) {
            printf("FAIL %s%s: rel L2 %.3e\n", c.name, rev ? " (shares in reverse)" : "", e);
            ok = false;
        }
        if (std::memcmp(kcc.data(), kc.data(), kc.size() * 4) || std::memcmp(vcc.data(), vc.data(), vc.size() * 4)) {
            printf("FAIL %s: the caches do not hold the new rows (or a row changed)\n", c.name);
            ok = false;
        }
        for (unsigned b = 0; b < nb; b++)
            if (tickets[b]) {
                printf("FAIL %s: kv head %u's ticket left at %u\n", c.name, b, tickets[b]);
                ok = false;
            }
    }
    if (c.sinks) { /* the control: a reference without the sinks is not what the kernel computes */
        reference(a, ks, vs, false, ref_nosink);
        if (rel_l2(out, ref_nosink) <= 1e-5) {
            printf("FAIL %s: the output also matches the reference without sinks\n", c.name);
            ok = false;
        }
    }
    if (ok)
        printf("%-52s rel L2 <= %.2e, %u shares either order\n", c.name, worst, ns);
    return ok;
}

// The q/k norms and RoPE folded into k_attn_gqa (k_attn_gqa<.., true>, a
// warp a head: mkc_qk_head_warp) against k_qk_norm_rope, then k_attn_gqa:
// one token at position pos with its new rows, shares in order and in
// reverse; the output, the cache rows written, and q and the new k row
// left as k_qk_norm_rope leaves them, bitwise; the tickets back at zero.
// Control: the fold given the key norm's weights for the queries must
// change the output.
static void run_qk_fold_gqa(int nq, int nk, int hd, int rot, bool norms, int64_t pos) {
    qk_inputs in(nq, nk, hd, rot, pos);
    const int64_t ks = in.ks;
    const int G = nq / nk;
    std::vector<float> &q = in.q, &kn = in.kn, &vn = in.vn, &qg = in.qg, &kg = in.kg, &cs = in.cs, &sn = in.sn,
                       &kc = in.kc, &vc = in.vc;
    const unsigned vt = mkc_norm_threads(hd), nb = (unsigned)nk, ns = AGQ_SHARES;
    mk_attn_args a = token_args(nullptr, nullptr, nullptr, nullptr, nq, nk, hd, hd, pos, 0, nullptr);
    a.v_new = vn.data();
    std::vector<float> part((size_t)nq * ns * (hd + 2), NAN);
    std::vector<unsigned> tickets(nb, 0u);
    /* one walk (shares in order or in reverse) with its own q, caches, new k row and output */
    auto run = [&](std::vector<float> &qq, std::vector<float> &kcc, std::vector<float> &vcc, std::vector<float> &kk,
                   std::vector<float> &out, const mkc_qkfold &f, bool rev) {
        a.q = qq.data();
        a.k = kcc.data();
        a.v = vcc.data();
        a.k_new = kk.data();
        a.out = out.data();
        emu_smem(agq_smem(G, hd, hd, f.on != 0));
        for (unsigned i = 0; i < ns; i++)
            for (unsigned b = 0; b < nb; b++)
                emu_block(
                    nb, b, AGQ_WARPS * 32,
                    [&] {
                        const bool two = G > AGQ_WARPS;
                        if (hd <= 128) {
                            if (f.on)
                                (two ? k_attn_gqa<4, 2, true> : k_attn_gqa<4, 1, true>)(a, ks, ks, part.data(),
                                                                                       tickets.data(), f);
                            else
                                (two ? k_attn_gqa<4, 2> : k_attn_gqa<4, 1>)(a, ks, ks, part.data(), tickets.data(),
                                                                           f);
                        } else {
                            if (f.on)
                                (two ? k_attn_gqa<8, 2, true> : k_attn_gqa<8, 1, true>)(a, ks, ks, part.data(),
                                                                                       tickets.data(), f);
                            else
                                (two ? k_attn_gqa<8, 2> : k_attn_gqa<8, 1>)(a, ks, ks, part.data(), tickets.data(),
                                                                           f);
                        }
                    },
                    ns, rev ? ns - 1 - i : i);
        emu_smem(0);
    };
    char name[112];
    snprintf(name, sizeof name, "gqa q/k fold: %d on %d heads, d %d, rot %d%s, pos %lld", nq, nk, hd, rot,
             norms ? ", norms" : "", (long long)pos);
    /* the reference: k_qk_norm_rope's blocks (q heads, then k heads), then k_attn_gqa */
    std::vector<float> q1 = q, k1 = kn, kc1 = kc, vc1 = vc, out1((size_t)nq * hd, NAN);
    const unsigned nh = (unsigned)(nq + nk);
    for (unsigned b = 0; b < nh; b++)
        emu_block(nh, b, vt, [&] {
            k_qk_norm_rope(q1.data(), nq, k1.data(), nk, hd, norms ? qg.data() : nullptr,
                           norms ? kg.data() : nullptr, 1e-6f, rot, cs.data(), sn.data());
        });
    run(q1, kc1, vc1, k1, out1, mkc_qkfold(), false);
    bool ok = true;
    if (!std::memcmp(q1.data(), q.data(), q.size() * 4)) {
        printf("FAIL %s: k_qk_norm_rope left q as it was (nothing tested)\n", name);
        ok = false;
    }
    const mkc_qkfold f = {norms ? qg.data() : nullptr, norms ? kg.data() : nullptr, cs.data(), sn.data(), 1e-6f, rot,
                          (int)vt, 1, nullptr};
    for (int rev = 0; rev < 2; rev++) { /* folded: the raw rows in */
        std::vector<float> q2 = q, k2 = kn, kc2 = kc, vc2 = vc, out2((size_t)nq * hd, NAN);
        run(q2, kc2, vc2, k2, out2, f, rev != 0);
        if (std::memcmp(out1.data(), out2.data(), out1.size() * 4)) {
            printf("FAIL %s%s: the output differs from k_qk_norm_rope then k_attn_gqa\n", name,
                   rev ? " (shares in reverse)" : "");
            ok = false;
        }
        if (std::memcmp(kc1.data(), kc2.data(), kc1.size() * 4) || std::memcmp(vc1.data(), vc2.data(), vc1.size() * 4)) {
            printf("FAIL %s: the caches differ (the rows written or others)\n", name);
            ok = false;
        }
        if (std::memcmp(q2.data(), q1.data(), q.size() * 4) || std::memcmp(k2.data(), k1.data(), kn.size() * 4)) {
            printf("FAIL %s: q or the new k row is not left as k_qk_norm_rope leaves it\n", name);
            ok = false;
        }
        for (unsigned b = 0; b < nb; b++)
            ok &= tickets[b] == 0;
    }
    if (norms && pos > 0) { /* the control: the key norm's weights on the queries */
        std::vector<float> q3 = q, k3 = kn, kc3 = kc, vc3 = vc, out3((size_t)nq * hd, NAN);
        mkc_qkfold bad = f;
        bad.qg = kg.data();
        run(q3, kc3, vc3, k3, out3, bad, false);
        if (!std::memcmp(out1.data(), out3.data(), out1.size() * 4)) {
            printf("FAIL %s: the control (the key norm on the queries) gave the same output\n", name);
            ok = false;
        }
    }
    g_bad += !ok;
    if (ok)
        printf("%-52s output, caches, q and k bitwise the two launches', either share order\n", name);
}

// k_attn_gqa_each (a batched step's attention grouped by kv head): NS
// sequences at their own positions in one launch (gridDim.z), shares in
// order and in reverse; each sequence's output bitwise k_attn_gqa's for it
// alone (the batch contract), its caches holding its new rows, the
// tickets back at zero. Control: the outputs differ between sequences.
static void run_gqa_each() {
    enum { NS = 4, NH = 8, NKV = 2, D = 64 };
    const int64_t pos[NS] = {0, 37, 100, 2047}, kw = NKV * D;
    std::vector<float> q(NS * NH * D), kn(NS * kw), vn(NS * kw), out(NS * NH * D);
    for (auto &v : q) v = (float)(2 * rnd());
    for (auto &v : kn) v = (float)rnd();
    for (auto &v : vn) v = (float)rnd();
    std::vector<float> kr[NS], vr[NS];
    mk_attn_args a = batch_args(NH, NKV, D);
    const unsigned ns = AGQ_SHARES;
    const size_t per = (size_t)NH * ns * (D + 2);
    bool ok = true;
    for (int rev = 0; rev < 2; rev++) {
        std::vector<float> kc[NS], vc[NS];
        att_seqs sq;
        for (int i = 0; i < NS; i++) /* the references made in the first round, kept after */
            batch_seq(i, pos[i], kw, kn, vn, kr[i], vr[i], kc[i], vc[i], sq);
        a.q = q.data();
        a.out = out.data();
        std::fill(out.begin(), out.end(), NAN);
        std::vector<float> part(NS * per, NAN);
        std::vector<unsigned> tickets(NS * NKV, 0u);
        emu_smem(agq_smem(NH / NKV, D, D));
        for (unsigned z = 0; z < NS; z++)
            for (unsigned i = 0; i < ns; i++)
                for (unsigned b = 0; b < NKV; b++)
                    emu_block(
                        NKV, b, AGQ_WARPS * 32,
                        [&] { k_attn_gqa_each<4, 1>(a, sq, kw, kw, part.data(), tickets.data()); }, ns,
                        rev ? ns - 1 - i : i, NS, z);
        for (int i = 0; i < NS; i++) {
            /* the sequence alone: k_attn_gqa with its own caches (the new rows from k_new / v_new) */
            std::vector<float> kc1, vc1, one((size_t)NH * D, NAN), p1(per, NAN);
            std::vector<unsigned> t1(NKV, 0u);
            att_seqs s1q;
            batch_seq(i, pos[i], kw, kn, vn, kr[i], vr[i], kc1, vc1, s1q);
            mk_attn_args s1 = a;
            s1.q = q.data() + i * NH * D;
            s1.out = one.data();
            s1.k = kc1.data();
            s1.v = vc1.data();
            s1.k_new = kn.data() + i * kw;
            s1.v_new = vn.data() + i * kw;
            s1.pos0 = pos[i];
            for (unsigned y = 0; y < ns; y++)
                for (unsigned b = 0; b < NKV; b++)
                    emu_block(NKV, b, AGQ_WARPS * 32, [&] { k_attn_gqa<4, 1>(s1, kw, kw, p1.data(), t1.data()); },
                              ns, y);
            if (std::memcmp(one.data(), out.data() + i * NH * D, sizeof(float) * NH * D)) {
                printf("FAIL k_attn_gqa_each%s: sequence %d (position %lld) differs from its own k_attn_gqa\n",
                       rev ? " (shares in reverse)" : "", i, (long long)pos[i]);
                ok = false;
            }
            if (std::memcmp(kc[i].data(), kr[i].data(), sizeof(float) * kr[i].size()) ||
                std::memcmp(vc[i].data(), vr[i].data(), sizeof(float) * vr[i].size())) {
                printf("FAIL k_attn_gqa_each: sequence %d's caches do not hold its new rows\n", i);
                ok = false;
            }
        }
        emu_smem(0);
        for (unsigned t : tickets)
            ok &= t == 0u;
        for (int i = 1; i < NS; i++) /* the control: each sequence its own */
            if (!std::memcmp(out.data(), out.data() + i * NH * D, sizeof(float) * NH * D)) {
                printf("FAIL k_attn_gqa_each: sequences 0 and %d have the same output (nothing tested)\n", i);
                ok = false;
            }
    }
    g_bad += !ok;
    if (ok)
        printf("%-52s each sequence bitwise its own k_attn_gqa\n", "k_attn_gqa_each: 4 sequences at 0..2047");
}

int main(int argc, char **argv) {
    srand(11);
    if (argc > 1 && !strcmp(argv[1], "gqa")) { /* k_attn_gqa alone (the script's control) */
        const gcase g[] = {
            {"gqa: 8 heads on 2, d 64, position 100, new rows", 8, 2, 64, 64, 100, 0, false, true},
            {"gqa: position 0, new rows", 8, 2, 64, 64, 0, 0, false, true},
        };
        int bad = 0;
        for (const gcase &c : g)
            bad += !run_gqa(c);
        return bad ? 1 : 0;
    }
    const acase cases[] = {
        {"GQA 4 heads on 2, d 64, position 100", 4, 2, 64, 64, false, 100, 0, false},
        {"GQA at position 0 (one row, empty shares)", 4, 2, 64, 64, false, 0, 0, false},
        {"MLA latent: v = k, rows of 80, dv 64", 4, 1, 80, 64, true, 45, 0, false},
        {"gpt_oss: window 32 and sinks, position 100", 4, 2, 64, 64, false, 100, 32, true},
        {"d 160 (8 value dims per lane), position 70", 2, 1, 160, 160, false, 70, 0, false},
    };
    for (const acase &c : cases)
        run_case(c);
    run_each();
    run_qk_fold(8, 2, 128, 128, true, 100);
    run_qk_fold(8, 2, 128, 128, true, 0);
    run_qk_fold(4, 1, 256, 64, true, 77);  /* Qwen3-Next / 3.5: d 256, a quarter rotated */
    run_qk_fold(4, 2, 64, 64, false, 50);  /* RoPE alone */
    run_qk_fold(6, 3, 64, 32, true, 200);
    run_qk_fold(8, 2, 128, 128, true, 100, 1);
    run_qk_rows(32, 4, 128, 128, true, 5); /* the 30B shape: 180 rows, not a whole number of blocks */
    run_qk_rows(4, 1, 256, 64, true, 3);   /* d 256, a quarter rotated */
    run_qk_rows(4, 2, 64, 64, false, 7);   /* RoPE alone */
    run_qk_rows(6, 3, 64, 32, true, 9);
    run_qk_rows(3, 1, 40, 40, true, 5); /* a head of 40: the norm block's second warp part empty */
    const gcase g[] = {
        {"gqa: 32 heads on 4, d 128, position 100, new rows", 32, 4, 128, 128, 100, 0, false, true},
        {"gqa: 8 heads on 2, d 64, position 0, new rows", 8, 2, 64, 64, 0, 0, false, true},
        {"gqa: position 31 (one chunk, full)", 8, 2, 64, 64, 31, 0, false, true},
        {"gqa: position 32 (the new row alone in its share)", 8, 2, 64, 64, 32, 0, false, true},
        {"gqa: position 2047 (two chunks a share)", 8, 2, 64, 64, 2047, 0, false, true},
        {"gqa: position 5000 (5 chunks a share, buffers reused)", 4, 2, 64, 64, 5000, 0, false, true},
        {"gqa: the row already in the cache, position 70", 8, 2, 64, 64, 70, 0, false, false},
        {"gqa: the row already in the cache, position 3000", 8, 2, 64, 64, 3000, 0, false, false},
        {"gqa: window 128 and sinks, position 300", 16, 2, 64, 64, 300, 128, true, true},
        {"gqa: window 32 and sinks, position 20", 16, 2, 64, 64, 20, 32, true, true},
        {"gqa: 16 heads a kv head, d 256, position 90", 16, 1, 256, 256, 90, 0, false, true},
        {"gqa: one head a kv head, dk 192 dv 128, position 150", 3, 3, 192, 128, 150, 0, false, true},
        {"gqa: 12 heads a kv head, dv 20, position 45", 12, 1, 40, 20, 45, 0, false, true},
    };
    for (const gcase &c : g)
        g_bad += !run_gqa(c);
    run_gqa_each();
    run_qk_fold_gqa(32, 4, 128, 128, true, 100); /* Qwen3-30B-A3B's attention */
    run_qk_fold_gqa(8, 2, 128, 128, true, 0);
    run_qk_fold_gqa(4, 1, 256, 64, true, 77);    /* Qwen3-Next / 3.5: d 256, a quarter rotated */
    run_qk_fold_gqa(8, 2, 64, 64, false, 50);    /* RoPE alone */
    run_qk_fold_gqa(6, 3, 64, 32, true, 200);    /* 2 heads a kv head: the key head by warp 2 */
    run_qk_fold_gqa(16, 1, 128, 128, true, 2047); /* two heads a warp, two chunks a share */
    run_qk_fold_gqa(12, 1, 40, 40, true, 45);    /* a head of 40: the norm block's second warp part empty */
    return g_bad ? 1 : 0;
}
