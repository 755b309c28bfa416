// Host emulation (cuda_emu.h) of the CUDA backend's chunked Gated DeltaNet
// prefill kernel (src/cuda/cuda_gdn_chunk.cuh, included as it is). Its outputs
// and final state against the recurrence in double, token by token (as
// tests/unit/test_backend_ops.c's gdn_case): the relative L2 errors, and exit
// 1 past 1e-5. It checks the kernel's algebra, indexing and barriers without
// a GPU; not the device's memory model or speed (the device runs
// test_backend_ops for that). Usage: gdn_chunk_emu T NK NV DK DV [SEED].
#include <cstdio>
#include <cstdlib>

#include "../unit/gdn_ref.h"
#include "emu_impl.h"
extern "C" {
#include "moekit/backend.h"
}
#include "cuda/cuda_gdn_chunk.cuh"

static double rnd() { return (double)rand() / RAND_MAX * 2 - 1; }
int main(int argc, char **argv) {
    if (argc < 6)
        return 2;
    int T = atoi(argv[1]), NK = atoi(argv[2]), NV = atoi(argv[3]), DK = atoi(argv[4]), DV = atoi(argv[5]);
    srand(argc > 6 ? (unsigned)atoi(argv[6]) : 7u);
    const int STR = 2 * NK * DK + NV * DV;
    std::vector<float> qkv(T * STR), aa(T * NV), bb(T * NV), al(NV), dt(NV), S0(NV * DK * DV), out(T * NV * DV);
    for (auto &x : qkv) x = rnd();
    for (auto &x : aa) x = rnd();
    for (auto &x : bb) x = rnd();
    for (auto &x : al) x = rnd();
    for (auto &x : dt) x = rnd();
    for (auto &x : S0) x = rnd();
    std::vector<float> S = S0;
    mk_gdn_args g = {qkv.data(), qkv.data() + NK * DK, qkv.data() + 2 * NK * DK, STR, aa.data(), bb.data(),
                     al.data(), dt.data(), S.data(), out.data(), T, NK, NV, DK, DV};
    for (int h = 0; h < NV; h++)
        emu_block((unsigned)NV, (unsigned)h, GDN_THREADS, [&] { k_gdn_chunk(g); });
    // the double recurrence (tests/unit/gdn_ref.h, test_backend_ops' reference)
    std::vector<double> Sr(S0.begin(), S0.end()), orf(T * NV * DV);
    if (!gdn_ref(qkv.data(), aa.data(), bb.data(), al.data(), dt.data(), T, NK, NV, DK, DV, Sr.data(), orf.data()))
        return 2;
    const double eo = emu_rel_l2(out.data(), orf.data(), out.size()), es = emu_rel_l2(S.data(), Sr.data(), S.size());
    printf("T %d NK %d NV %d DK %d DV %d: out rel %.3e, state rel %.3e\n", T, NK, NV, DK, DV, eo, es);
    return eo <= 1e-5 && es <= 1e-5 ? 0 : 1;
}
