// A host emulation of the CUDA execution model, enough to run moekit's
// device code headers on the CPU (tests/cli/cuda_emu_*.sh): one block at a
// time, a std::thread per CUDA thread, a barrier for __syncthreads, a
// per-warp barrier for the warp shuffles, function-scope __shared__ arrays
// as statics (one block runs at a time, so they are the block's), and
// std::atomic_ref for atomicAdd. Checks a kernel's algebra, indexing and
// barriers without a GPU; not the device's memory model, its math
// functions (host expf, not the device's) or its speed.
#ifndef MK_TESTS_CUDA_EMU_H
#define MK_TESTS_CUDA_EMU_H

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __syncthreads() emu_bar->arrive_and_wait()

struct emu_dim {
    unsigned x;
};
inline thread_local emu_dim threadIdx;
inline emu_dim blockIdx, blockDim, gridDim;
inline std::barrier<> *emu_bar;
inline std::barrier<> *emu_warp[32];
inline float emu_wv[32][32];

inline float __shfl_xor_sync(unsigned, float v, int o) {
    const unsigned w = threadIdx.x >> 5, l = threadIdx.x & 31;
    emu_wv[w][l] = v;
    emu_warp[w]->arrive_and_wait();
    const float r = emu_wv[w][l ^ (unsigned)o];
    emu_warp[w]->arrive_and_wait();
    return r;
}
inline float mkc_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
template <class T> inline T __ldcg(const T *p) { return *p; }
template <class T> inline T __ldg(const T *p) { return *p; }
inline float atomicAdd(float *p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
inline void __threadfence() {}

// Run fn() as block `block` of a grid of `grid` blocks of n threads (n a
// multiple of 32, at most 1024).
template <class F> void emu_block(unsigned grid, unsigned block, unsigned n, F fn) {
    std::barrier<> bar((std::ptrdiff_t)n);
    std::vector<std::unique_ptr<std::barrier<>>> wb;
    for (unsigned w = 0; w < n / 32; w++) {
        wb.emplace_back(new std::barrier<>(32));
        emu_warp[w] = wb.back().get();
    }
    emu_bar = &bar;
    blockIdx.x = block;
    blockDim.x = n;
    gridDim.x = grid;
    std::vector<std::thread> th;
    for (unsigned t = 0; t < n; t++)
        th.emplace_back([&fn, t] {
            threadIdx.x = t;
            fn();
        });
    for (auto &x : th)
        x.join();
}

#endif
