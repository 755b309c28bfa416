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
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
#define MK_CUDA_EMU 1
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
inline float __uint_as_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline uint32_t __float_as_uint(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
// byte i of the result: byte (s >> 4i) & 7 of the 8 bytes {y:x}
inline uint32_t __byte_perm(uint32_t x, uint32_t y, uint32_t s) {
    const uint64_t v = (uint64_t)y << 32 | x;
    uint32_t r = 0;
    for (int i = 0; i < 4; i++)
        r |= (uint32_t)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xffu) << (8 * i);
    return r;
}
template <class T> inline T __ldcg(const T *p) { return *p; }
template <class T> inline T __ldg(const T *p) { return *p; }
inline float atomicAdd(float *p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
inline void __threadfence() {}

// The threads of a block: n workers kept between blocks (creating 256
// threads per block cost more than the blocks' work), started and joined
// through two barriers with the caller.
struct emu_pool {
    unsigned n = 0;
    std::vector<std::thread> th;
    std::unique_ptr<std::barrier<>> start, done, bar;
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    std::function<void()> job;
    bool quit = false;
    void stop() {
        if (!n)
            return;
        quit = true;
        start->arrive_and_wait();
        for (auto &t : th)
            t.join();
        th.clear();
        n = 0;
        quit = false;
    }
    void ensure(unsigned want) {
        if (n == want)
            return;
        stop();
        n = want;
        start.reset(new std::barrier<>((std::ptrdiff_t)n + 1));
        done.reset(new std::barrier<>((std::ptrdiff_t)n + 1));
        bar.reset(new std::barrier<>((std::ptrdiff_t)n));
        warps.clear();
        for (unsigned w = 0; w < n / 32; w++)
            warps.emplace_back(new std::barrier<>(32));
        for (unsigned t = 0; t < n; t++)
            th.emplace_back([this, t] {
                threadIdx.x = t;
                for (;;) {
                    start->arrive_and_wait();
                    if (quit)
                        return;
                    job();
                    done->arrive_and_wait();
                }
            });
    }
    ~emu_pool() { stop(); }
};
inline emu_pool emu_threads;

// Run fn() as block `block` of a grid of `grid` blocks of n threads (n a
// multiple of 32, at most 1024).
template <class F> void emu_block(unsigned grid, unsigned block, unsigned n, F fn) {
    emu_threads.ensure(n);
    emu_bar = emu_threads.bar.get();
    for (unsigned w = 0; w < n / 32; w++)
        emu_warp[w] = emu_threads.warps[w].get();
    blockIdx.x = block;
    blockDim.x = n;
    gridDim.x = grid;
    emu_threads.job = fn;
    emu_threads.start->arrive_and_wait();
    emu_threads.done->arrive_and_wait();
}

#endif
