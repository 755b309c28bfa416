// Host emulation (cuda_emu.h) of the CUDA backend's tiled prefill attention
// (src/cuda/cuda_attn_tile.cuh: k_attn_tile, generation 1, and
// k_attn_tile2, generation 2, included as they are) on chunks of several
// tokens: causal over the cache rows 0 .. pos0 + t, GQA, head dims 64 / 128
// / 256, k wider than v, v of 80 dims (generation 2's last column group
// partly past dv), strided cache rows, a sliding window with sinks, chunks
// that start past 0, chunks of fewer queries than a tile and of more than
// two tiles. Each output within 1e-5 relative L2 of the softmax in double,
// per case; every output written (NaN-filled first); each kernel at the
// dynamic shared memory its host launch asks for (emu_smem; att1_smem and
// att2_smem, the launches' own sizes). Also GQA 32/4 (the 30B shape) and
// windows whose first row moves inside a 64-query tile (window 65 at
// position 1000 with sinks; first row 63 mod 64). Controls, per case: the
// reference without the causal mask (every chunk row seen) must miss the
// bound, and so must the sinks cases' without their sinks. Exit 1 on a
// mismatch.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "emu_impl.h"
extern "C" {
#include "moekit/backend.h"
}
#include "cuda/cuda_attn_tile.cuh"
#include "cuda/cuda_attn_mma.cuh"

static int g_bad;
static double rnd() { return (double)rand() / RAND_MAX * 2 - 1; }

struct tcase {
    const char *name;
    int nh, nkv, dk, dv;
    int64_t n, pos0, window, pad; /* pad: floats past n_kv * d between cache rows */
    bool sinks;
};

// out[t, h, :] in double: causal (or every row of the chunk when !causal), the window, the sinks
static void reference(const mk_attn_args &a, int64_t ks, int64_t vs, bool causal, bool with_sinks,
                      std::vector<double> &out) {
    const int64_t T = a.pos0 + a.n;
    out.assign((size_t)(a.n * a.n_heads * a.dv), 0.0);
    for (int64_t t = 0; t < a.n; t++)
        for (int h = 0; h < a.n_heads; h++) {
            const int j = h / (a.n_heads / a.n_kv);
            const int64_t p = a.pos0 + t, hi = causal ? p : T - 1;
            const int64_t lo = a.window > 0 && p - a.window + 1 > 0 ? p - a.window + 1 : 0;
            std::vector<double> x((size_t)T, 0.0);
            double m = with_sinks && a.sinks ? a.sinks[h] : -INFINITY;
            const float *q = a.q + (t * a.n_heads + h) * (int64_t)a.dk;
            for (int64_t s = lo; s <= hi; s++) {
                double d = 0;
                for (int i = 0; i < a.dk; i++)
                    d += (double)q[i] * a.k[s * ks + (int64_t)j * a.dk + i];
                x[s] = d * a.scale;
                m = std::max(m, x[s]);
            }
            double den = with_sinks && a.sinks ? exp(a.sinks[h] - m) : 0.0;
            for (int64_t s = lo; s <= hi; s++)
                den += exp(x[s] - m);
            for (int d = 0; d < a.dv; d++) {
                double v = 0;
                for (int64_t s = lo; s <= hi; s++)
                    v += exp(x[s] - m) * a.v[s * vs + (int64_t)j * a.dv + d];
                out[(size_t)((t * a.n_heads + h) * a.dv + d)] = v / den;
            }
        }
}

// kern over the launch's grid (blocks of tq queries by heads), nt threads, smem bytes
template <class K> static void grid(const mk_attn_args &a, int tq, unsigned nt, size_t smem, K kern) {
    const unsigned gx = (unsigned)((a.n + tq - 1) / tq);
    emu_smem(smem);
    for (unsigned y = 0; y < (unsigned)a.n_heads; y++)
        for (unsigned b = 0; b < gx; b++)
            emu_block(gx, b, nt, kern, (unsigned)a.n_heads, y);
    emu_smem(0);
}

// the kernel of generation gen, as cuda_attn_tile.cu launches it
static void run(int gen, const mk_attn_args &a, int64_t ks, int64_t vs) {
    if (gen == 1)
        grid(a, ATT_TQ, ATT_TT, att1_smem(a.dk, a.dv), [&] {
            if (a.dv <= 64)
                k_attn_tile<16>(a, ks, vs);
            else if (a.dv <= 128)
                k_attn_tile<32>(a, ks, vs);
            else
                k_attn_tile<64>(a, ks, vs);
        });
    else if (gen == 3)
        grid(a, ATT3_TQ, ATT3_TT, att3_smem(a.dk, a.dv), [&] {
            if (a.dk == 64)
                k_attn_tile3<4, 8, 4>(a, ks, vs);
            else
                k_attn_tile3<8, 16, 4>(a, ks, vs);
        });
    else if (gen == 4) /* generation 3's kernel in blocks of 8 warps, 128 queries */
        grid(a, 128, 256, att3_smem(a.dk, a.dv), [&] {
            if (a.dk == 64)
                k_attn_tile3<4, 8, 8>(a, ks, vs);
            else
                k_attn_tile3<8, 16, 8>(a, ks, vs);
        });
    else if (gen == 5) { /* the tiles' parts split once (k_att3_planes), then generation 4 copying them */
        int64_t t0;
        const int64_t nt = att3_tiles(a, &t0); /* as cuda_attn_tile.cu's launch */
        /* a poison every word, the pads included: the kernel must never read a word the split did not write */
        std::vector<uint32_t> planes((size_t)a.n_kv * nt * att3_pwords(a.dk, a.dv), 0x7fc00001u);
        emu_smem(att3_planes_smem(a.dk, a.dv));
        for (unsigned y = 0; y < (unsigned)a.n_kv; y++)
            for (unsigned b = 0; b < (unsigned)nt; b++)
                emu_block((unsigned)nt, b, ATT3_TT, [&] {
                    if (a.dk == 64)
                        k_att3_planes<64, 64>(a, ks, vs, t0, planes.data());
                    else
                        k_att3_planes<128, 128>(a, ks, vs, t0, planes.data());
                }, (unsigned)a.n_kv, y);
        emu_smem(0);
        grid(a, 128, 256, att3_smem_pl(a.dk, a.dv), [&] {
            if (a.dk == 64)
                k_attn_tile3<4, 8, 8, true>(a, ks, vs, planes.data(), t0, nt);
            else
                k_attn_tile3<8, 16, 8, true>(a, ks, vs, planes.data(), t0, nt);
        });
    }
    else
        grid(a, ATT2_TQ, ATT2_TT, att2_smem(a.dk, a.dv), [&] {
            if (a.dv <= 64)
                k_attn_tile2<1>(a, ks, vs);
            else if (a.dv <= 128)
                k_attn_tile2<2>(a, ks, vs);
            else
                k_attn_tile2<4>(a, ks, vs);
        });
}

static double rel_l2(const std::vector<float> &y, const std::vector<double> &r) {
    return emu_rel_l2(y.data(), r.data(), r.size());
}

int main() {
    /* EMU_GENS_MAX: the last generation to run (the script's controls, which break generation 2 or 3,
     * stop there: the generations after them only repeat generation 3's bits) */
    const char *gm = getenv("EMU_GENS_MAX");
    const int gen_max = gm && *gm ? atoi(gm) : 5;
    const tcase cases[] = {
        {"MHA 4 heads of 128, 70 tokens at 0", 4, 4, 128, 128, 70, 0, 0, 0, false},
        {"GQA 8/2 of 128, 130 tokens at 40, strided rows", 8, 2, 128, 128, 130, 40, 0, 8, false},
        {"64 dims, 16 tokens at 100", 4, 4, 64, 64, 16, 100, 0, 0, false},
        {"k 192 / v 128, 65 tokens at 3", 2, 1, 192, 128, 65, 3, 0, 0, false},
        {"256 dims, 33 tokens at 64", 2, 2, 256, 256, 33, 64, 0, 0, false},
        {"v of 80 dims, 40 tokens at 7", 2, 2, 64, 80, 40, 7, 0, 4, false},
        {"gpt_oss: window 48 and sinks, 100 tokens at 20", 4, 2, 64, 64, 100, 20, 48, 0, true},
        {"GQA 32/4 of 128 (the 30B shape), 70 tokens at 5", 32, 4, 128, 128, 70, 5, 0, 0, false},
        {"window 65 and sinks, 40 tokens at 1000", 8, 1, 64, 64, 40, 1000, 65, 0, true},
        {"window 64, first row seen 63 mod 64, 66 tokens at 126", 2, 2, 64, 64, 66, 126, 64, 0, false},
    };
    for (const tcase &c : cases) {
        srand(7);
        const int64_t T = c.pos0 + c.n, ks = (int64_t)c.nkv * c.dk + c.pad, vs = (int64_t)c.nkv * c.dv + c.pad;
        std::vector<float> q((size_t)(c.n * c.nh * c.dk)), kc((size_t)(T * ks)), vc((size_t)(T * vs)), sk((size_t)c.nh);
        for (float &x : q)
            x = (float)rnd();
        for (float &x : kc)
            x = (float)rnd();
        for (float &x : vc)
            x = (float)rnd();
        for (float &x : sk)
            x = (float)(2 * rnd());
        mk_attn_args a{};
        a.q = q.data();
        a.k = kc.data();
        a.v = vc.data();
        a.n = c.n;
        a.pos0 = c.pos0;
        a.n_heads = c.nh;
        a.n_kv = c.nkv;
        a.dk = c.dk;
        a.dv = c.dv;
        a.scale = 1.0f / sqrtf((float)c.dk) * 2.0f; /* peaked weights: the max and the rescales matter */
        a.k_stride = ks;
        a.v_stride = vs;
        a.window = c.window;
        a.sinks = c.sinks ? sk.data() : nullptr;
        std::vector<double> ref, nocausal, nosink;
        reference(a, ks, vs, true, true, ref);
        reference(a, ks, vs, false, true, nocausal);
        if (c.sinks)
            reference(a, ks, vs, true, false, nosink);
        std::vector<float> out3; /* generation 3's output: generation 4's must be it bitwise */
        for (int gen = 1; gen <= gen_max; gen++) {
            if (gen >= 3 && !att3_takes(c.dk, c.dv))
                continue; /* generation 3's shapes (cuda_attn_tile.cu leaves the others to generation 2) */
            std::vector<float> out(ref.size(), NAN);
            a.out = out.data();
            run(gen, a, ks, vs);
            if (gen == 3)
                out3 = out;
            if (gen >= 4 && std::memcmp(out.data(), out3.data(), out.size() * sizeof(float))) {
                printf("FAIL gen %d %s: not bitwise generation 3's\n", gen, c.name);
                g_bad++;
            }
            size_t unset = 0;
            for (float x : out)
                unset += x != x;
            const double e = rel_l2(out, ref), en = rel_l2(out, nocausal);
            const bool ok = unset == 0 && e <= 1e-5;
            printf("%s gen %d %-48s rel L2 %.3g (without the causal mask: %.3g)%s\n", ok ? "ok  " : "FAIL", gen,
                   c.name, e, en, unset ? " NaN left" : "");
            g_bad += !ok;
            if (!(en > 1e-3)) { /* every case attends causally somewhere: the mask must show */
                printf("FAIL control: gen %d %s: the reference without the causal mask is within %.3g\n", gen,
                       c.name, en);
                g_bad++;
            }
            if (c.sinks) {
                const double es = rel_l2(out, nosink);
                if (!(es > 1e-3)) {
                    printf("FAIL control: gen %d %s: the reference without sinks is within %.3g\n", gen, c.name, es);
                    g_bad++;
                }
            }
        }
    }
    return g_bad ? 1 : 0;
}
