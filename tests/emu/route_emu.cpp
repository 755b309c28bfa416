// Host emulation (cuda_emu.h) of the fused MoE step's routing
// (src/cuda/cuda_route_block.cuh, included as it is: one block of 256
// threads ranks the scores) against the routing the CPU engine computes,
// written here in double from backend.h's definition: softmax (Qwen) or
// sigmoid scores chosen with a selection bias within the topk_group best
// groups (DeepSeek-V3, Kimi-K2, GLM, MiniMax), weights renormalised and
// scaled. Inputs are drawn so that the k-th and (k+1)-th choices (and the
// kept groups' scores) differ by more than 1e-4 relative: the chosen
// experts must be the same in the same order, the weights within 1e-5
// relative; the VRAM cache's outputs too (loc[j] = slot_of[idx[j]], a
// routing count of 1 per chosen expert). Exit 1 on a mismatch.
#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "cuda_emu.h"
extern "C" {
#include "cuda/mk_cuda.h"
}
#include "cuda/cuda_topk.cuh"
#include "cuda/cuda_route_block.cuh"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static double urand() {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(g_rng >> 11) / 9007199254740992.0;
}

// top-k of s[0..n) in double, lowest index first on ties; false when the
// k-th and (k+1)-th are within 1e-4 relative (a near-tie: redraw)
static bool topk_clear(const std::vector<double> &s, int k, std::vector<int> &idx) {
    std::vector<int> o(s.size());
    for (size_t i = 0; i < o.size(); i++)
        o[i] = (int)i;
    std::stable_sort(o.begin(), o.end(), [&](int a, int b) { return s[a] > s[b]; });
    idx.assign(o.begin(), o.begin() + k);
    if ((size_t)k < s.size() && fabs(s[o[k - 1]] - s[o[k]]) <= 1e-4 * fabs(s[o[k - 1]]))
        return false;
    return true;
}

struct rcase {
    const char *name;
    int E, k, score, norm;
    float scale;
    bool bias;
    int G, TG;
};

int main() {
    const rcase cases[] = {
        {"qwen3-30b: softmax 128 top-8, renormalised", 128, 8, MK_CUDA_SCORE_SOFTMAX, 1, 1.0f, false, 1, 1},
        {"qwen3.5: softmax 256 top-8, renormalised", 256, 8, MK_CUDA_SCORE_SOFTMAX, 1, 1.0f, false, 1, 1},
        {"softmax 60 top-4, not renormalised", 60, 4, MK_CUDA_SCORE_SOFTMAX, 0, 1.0f, false, 1, 1},
        {"deepseek-v3: sigmoid 256 top-8, bias, 8 groups keep 4", 256, 8, MK_CUDA_SCORE_SIGMOID, 1, 2.5f, true, 8, 4},
        {"kimi-k2: sigmoid 384 top-8, bias, one group", 384, 8, MK_CUDA_SCORE_SIGMOID, 1, 2.827f, true, 1, 1},
        {"sigmoid 64 top-6, bias, 8 groups keep 3", 64, 6, MK_CUDA_SCORE_SIGMOID, 1, 1.0f, true, 8, 3},
        {"sigmoid 32 top-4, no bias, not renormalised, 4 groups keep 2", 32, 4, MK_CUDA_SCORE_SIGMOID, 0, 1.5f,
         false, 4, 2},
    };
    int bad = 0;
    for (const rcase &c : cases) {
        double worst = 0.0;
        int redraws = 0;
        for (int draw = 0; draw < 10; draw++) {
            std::vector<float> lg(c.E), bias(c.E);
            std::vector<double> s(c.E), ch(c.E);
            std::vector<int> want;
            for (;;) {
                for (int e = 0; e < c.E; e++) {
                    lg[e] = (float)(urand() * 8.0 - 4.0);
                    bias[e] = c.bias ? (float)(urand() * 0.6 - 0.3) : 0.0f;
                }
                double m = -INFINITY, z = 0.0;
                for (int e = 0; e < c.E; e++)
                    m = std::max(m, (double)lg[e]);
                for (int e = 0; e < c.E; e++) {
                    s[e] = c.score == MK_CUDA_SCORE_SOFTMAX ? exp(lg[e] - m) : 1.0 / (1.0 + exp(-(double)lg[e]));
                    z += s[e];
                }
                for (int e = 0; e < c.E; e++) {
                    if (c.score == MK_CUDA_SCORE_SOFTMAX)
                        s[e] /= z;
                    ch[e] = s[e] + bias[e];
                }
                bool clear = true;
                if (c.G > 1) {
                    const int per = c.E / c.G;
                    std::vector<double> gsc(c.G);
                    for (int g = 0; g < c.G; g++) {
                        std::vector<double> part(ch.begin() + g * per, ch.begin() + (g + 1) * per);
                        std::vector<int> t2;
                        topk_clear(part, 2, t2);
                        gsc[g] = part[t2[0]] + part[t2[1]];
                    }
                    std::vector<int> keep;
                    clear &= topk_clear(gsc, c.TG, keep);
                    for (int g = 0; g < c.G; g++)
                        if (std::find(keep.begin(), keep.end(), g) == keep.end())
                            for (int e = 0; e < per; e++)
                                ch[g * per + e] = 0.0;
                }
                clear &= topk_clear(ch, c.k, want);
                if (clear)
                    break;
                redraws++;
            }
            double wsum = 0.0;
            for (int j = 0; j < c.k; j++)
                wsum += s[want[j]];
            if (c.score == MK_CUDA_SCORE_SIGMOID)
                wsum += 1e-20;
            std::vector<int32_t> idx(c.k, -1), loc(c.k, -2), slot_of(c.E), counts(c.E, 0);
            std::vector<float> w(c.k, NAN);
            for (int e = 0; e < c.E; e++)
                slot_of[e] = e % 3 ? -1 : (e * 7) % 101;
            emu_block(1, 0, 256, [&] {
                route_block(lg.data(), c.E, c.k, c.score, c.norm, c.scale, c.bias ? bias.data() : nullptr, c.G, c.TG,
                            idx.data(), w.data(), slot_of.data(), loc.data(), counts.data());
            });
            for (int j = 0; j < c.k; j++) {
                if (idx[j] != want[j]) {
                    printf("FAIL %s, draw %d: choice %d is expert %d, reference %d\n", c.name, draw, j, idx[j],
                           want[j]);
                    bad++;
                    break;
                }
                const double ref = (c.norm ? s[want[j]] / wsum : s[want[j]]) * c.scale;
                const double err = fabs(w[j] - ref) / fabs(ref);
                worst = std::max(worst, err);
                if (!(err <= 1e-5)) {
                    printf("FAIL %s, draw %d: weight %d %.9g, reference %.9g\n", c.name, draw, j, (double)w[j], ref);
                    bad++;
                }
                if (loc[j] != slot_of[idx[j]]) {
                    printf("FAIL %s: loc[%d] = %d, slot_of[%d] = %d\n", c.name, j, loc[j], idx[j], slot_of[idx[j]]);
                    bad++;
                }
            }
            for (int e = 0; e < c.E; e++)
                if (counts[e] != (std::find(want.begin(), want.end(), e) != want.end() ? 1 : 0)) {
                    printf("FAIL %s: routing count of expert %d is %d\n", c.name, e, counts[e]);
                    bad++;
                    break;
                }
        }
        printf("%-62s 10 draws (%d near-ties redrawn), worst weight rel %.2e\n", c.name, redraws, worst);
    }
    return bad ? 1 : 0;
}
