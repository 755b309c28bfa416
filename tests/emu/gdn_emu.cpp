// Host emulation (cuda_emu.h) of the CUDA backend's Gated DeltaNet decode
// kernels (src/cuda/cuda_gdn_kernel.cuh, included as it is: k_conv, k_gdn
// and a batched step's k_conv_each, k_gdn_each). The causal conv with SiLU
// against the conv in double (relative L2 <= 1e-5, the state exactly the
// last inputs), the delta rule token by token against the recurrence in
// double (tests/unit/gdn_ref.h, outputs and state within 1e-5 relative L2)
// on small heads and the Qwen3.5 head size; then three sequences through
// k_conv_each and k_gdn_each, each output and state bitwise k_conv's and
// k_gdn's for that sequence alone. Exit 1 on a mismatch.
#include <cstdio>
#include <cstdlib>

#include "../unit/gdn_ref.h"
#include "emu_impl.h"
extern "C" {
#include "moekit/backend.h"
}
#include "cuda/cuda_block_sum.cuh"
#include "cuda/cuda_gdn_chunk.cuh" /* softplus */
#include "cuda/cuda_gdn_kernel.cuh"

static int g_bad;
static float rnd() { return (float)rand() / RAND_MAX * 2 - 1; }

static void vrand(std::vector<float> &v) {
    for (auto &x : v)
        x = rnd();
}

// k_conv over n tokens of C channels as mkb_conv1d_silu launches it
static void conv(const float *u, int64_t us, float *y, int64_t n, int64_t C, int K, const float *w, float *st) {
    const unsigned nb = (unsigned)((C + 127) / 128);
    for (unsigned b = 0; b < nb; b++)
        emu_block(nb, b, 128, [&] { k_conv(u, us, y, n, C, K, w, st); });
}

static void check_conv() {
    enum { N = 5, C = 40, K = 4, US = 43, NS = 3 };
    std::vector<float> u(N * US), w(C * K), s0((K - 1) * C), y(N * C);
    vrand(u);
    vrand(w);
    vrand(s0);
    std::vector<float> st = s0;
    conv(u.data(), US, y.data(), N, C, K, w.data(), st.data());
    std::vector<double> ref(N * C);
    for (int t = 0; t < N; t++)
        for (int c = 0; c < C; c++) {
            double acc = 0;
            for (int j = 0; j < K; j++) {
                const int idx = t - K + 1 + j;
                acc += (double)w[c * K + j] * (idx < 0 ? s0[(K - 1 + idx) * C + c] : u[idx * US + c]);
            }
            ref[t * C + c] = acc / (1 + exp(-acc));
        }
    const double e = emu_rel_l2(y.data(), ref.data(), ref.size());
    bool state_ok = true;
    for (int s = 0; s < K - 1; s++)
        for (int c = 0; c < C; c++)
            state_ok &= st[s * C + c] == u[(N - (K - 1) + s) * US + c];
    if (!(e <= 1e-5) || !state_ok) {
        printf("FAIL k_conv: rel L2 %.3e, state %s\n", e, state_ok ? "right" : "not the last inputs");
        g_bad++;
    }
    // a batched step: three sequences, a token and a state each
    std::vector<float> ub(NS * US), yb(NS * C), yr(NS * C), sb[NS], sr[NS];
    vrand(ub);
    gdn_states gs;
    for (int i = 0; i < NS; i++) {
        sb[i].resize((K - 1) * C);
        vrand(sb[i]);
        sr[i] = sb[i];
        gs.p[i] = sb[i].data();
        conv(ub.data() + i * US, US, yr.data() + i * C, 1, C, K, w.data(), sr[i].data());
    }
    const unsigned nb = (C + 127) / 128;
    for (unsigned y2 = 0; y2 < NS; y2++)
        for (unsigned b = 0; b < nb; b++)
            emu_block(nb, b, 128, [&] { k_conv_each(ub.data(), US, yb.data(), C, K, w.data(), gs); }, NS, y2);
    bool same = !std::memcmp(yb.data(), yr.data(), sizeof(float) * yb.size());
    for (int i = 0; i < NS; i++)
        same &= !std::memcmp(sb[i].data(), sr[i].data(), sizeof(float) * sb[i].size());
    if (!same) {
        printf("FAIL k_conv_each: not bitwise k_conv per sequence\n");
        g_bad++;
    }
    printf("%-40s rel L2 %.2e, state exact; k_conv_each bitwise over %d sequences\n", "k_conv 5 tokens, 40 channels",
           e, NS);
}

// k_gdn (the token loop) as mkb_gdn launches it for one call
static void gdn(const mk_gdn_args &g) {
    const unsigned threads = g.dv < 32 ? 32 : (g.dv + 31) / 32 * 32;
    for (int h = 0; h < g.nv; h++)
        emu_block((unsigned)g.nv, (unsigned)h, threads, [&] { k_gdn(g); });
}

static void check_gdn(int T, int NK, int NV, int DK, int DV) {
    const int STR = 2 * NK * DK + NV * DV;
    std::vector<float> qkv(T * STR), aa(T * NV), bb(T * NV), al(NV), dt(NV), S0(NV * DK * DV), out(T * NV * DV);
    vrand(qkv);
    vrand(aa);
    vrand(bb);
    vrand(al);
    vrand(dt);
    vrand(S0);
    std::vector<float> S = S0;
    mk_gdn_args g = {qkv.data(), qkv.data() + NK * DK, qkv.data() + 2 * NK * DK, STR, aa.data(), bb.data(),
                     al.data(), dt.data(), S.data(), out.data(), T, NK, NV, DK, DV};
    gdn(g);
    std::vector<double> Sr(S0.begin(), S0.end()), orf(T * NV * DV);
    if (!gdn_ref(qkv.data(), aa.data(), bb.data(), al.data(), dt.data(), T, NK, NV, DK, DV, Sr.data(), orf.data())) {
        g_bad++;
        return;
    }
    const double eo = emu_rel_l2(out.data(), orf.data(), out.size()), es = emu_rel_l2(S.data(), Sr.data(), S.size());
    if (!(eo <= 1e-5 && es <= 1e-5)) {
        printf("FAIL k_gdn T %d NK %d NV %d DK %d DV %d: out rel %.3e, state rel %.3e\n", T, NK, NV, DK, DV, eo, es);
        g_bad++;
    }
    // a batched step: T sequences of one token each (row i of the same
    // arrays), a state each, against k_gdn per sequence
    std::vector<float> ob(T * NV * DV), orr(T * NV * DV);
    std::vector<std::vector<float>> sb(T), sr(T);
    gdn_states gs;
    mk_gdn_args g0 = g;
    g0.n = 1;
    g0.out = ob.data();
    for (int i = 0; i < T; i++) {
        sb[i] = S0;
        sr[i] = S0;
        gs.p[i] = sb[i].data();
        mk_gdn_args gi = g0;
        gi.q += i * STR;
        gi.k += i * STR;
        gi.v += i * STR;
        gi.a += i * NV;
        gi.b += i * NV;
        gi.state = sr[i].data();
        gi.out = orr.data() + i * NV * DV;
        gdn(gi);
    }
    const unsigned threads = DV < 32 ? 32 : (DV + 31) / 32 * 32;
    for (unsigned y = 0; y < (unsigned)T; y++)
        for (int h = 0; h < NV; h++)
            emu_block((unsigned)NV, (unsigned)h, threads, [&] { k_gdn_each(g0, gs); }, (unsigned)T, y);
    bool same = !std::memcmp(ob.data(), orr.data(), sizeof(float) * ob.size());
    for (int i = 0; i < T; i++)
        same &= !std::memcmp(sb[i].data(), sr[i].data(), sizeof(float) * sb[i].size());
    if (!same) {
        printf("FAIL k_gdn_each (T %d, %dx%d): not bitwise k_gdn per sequence\n", T, DK, DV);
        g_bad++;
    }
    printf("k_gdn T %d NK %d NV %d DK %3d DV %3d          out %.2e, state %.2e; k_gdn_each bitwise\n", T, NK, NV, DK,
           DV, eo, es);
}

int main() {
    srand(5);
    check_conv();
    check_gdn(3, 2, 4, 8, 6);
    check_gdn(4, 1, 2, 128, 128);
    check_gdn(3, 2, 4, 32, 48);
    return g_bad ? 1 : 0;
}
