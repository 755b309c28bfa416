// A host emulation of the CUDA execution model, enough to run moekit's
// device code headers on the CPU (tests/cli/cuda_emu_*.sh): one block at a
// time, each CUDA thread a fiber of one OS thread, run until it
// reaches a barrier: __syncthreads waits for every live thread of the
// block, a warp shuffle for every live lane of its warp (each lane writes,
// waits, reads its partner's). Function-scope __shared__ arrays are
// statics (one block runs at a time, so they are the block's). A barrier
// that can never complete (threads of a block waiting at different ones)
// aborts. Grids have x, y and z (blocks one at a time; blockDim y is 1).
// The tensor cores' mma.sync m16n8k32 on int8 x uint8 and m16n8k16 on bf16
// are emulated too.
// Checks a kernel's algebra, indexing and barriers without a GPU;
// not the device's memory model, its math functions (host expf, not the
// device's) or its speed.
#ifndef MK_TESTS_CUDA_EMU_H
#define MK_TESTS_CUDA_EMU_H

// EMU_UCONTEXT: ucontext switches on x86-64 too (to check the two agree)
#if defined(__x86_64__) && !defined(EMU_UCONTEXT)
#define EMU_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
#define MK_CUDA_EMU 1
#define __shared__ static
#define __syncthreads() emu_yield(1)

struct emu_dim {
    unsigned x, y, z;
};
inline emu_dim threadIdx, blockIdx, blockDim, gridDim;
inline float emu_wv[2][32][32]; /* a buffer per parity of the warp's shuffle count */
inline unsigned emu_wphase[32];

// Fiber switches. On x86-64 a switch is emu_switch below: glibc's
// swapcontext makes a system call (the signal mask) and saves the whole FP
// state on every switch, and a block of 256 threads switches 512 times per
// barrier. The fused MoE emulation (moe_emu) ran 139 s with swapcontext,
// 2.6 s with emu_switch (2-core x86-64, 2026-12-05). Elsewhere, ucontext.
#if defined(EMU_ASM_SWITCH)
// emu_switch(from, to): push the System V callee-saved registers, MXCSR
// and the x87 control word on the running stack, store its pointer in
// *from, load the stack pointer `to` and pop the same from it. Weak, so
// two translation units including this header link; in a section of its
// own push, so the compiler's current section is left as it was. A plain
// `ret` into a new fiber: a host enforcing shadow stacks (CET) would need
// EMU_UCONTEXT.
extern "C" void emu_switch(void **from, void *to);
asm(".pushsection .text\n.weak emu_switch\n.type emu_switch,@function\nemu_switch:\n"
    "pushq %rbp\npushq %rbx\npushq %r12\npushq %r13\npushq %r14\npushq %r15\n"
    "subq $8, %rsp\nstmxcsr (%rsp)\nfnstcw 4(%rsp)\n"
    "movq %rsp, (%rdi)\nmovq %rsi, %rsp\n"
    "ldmxcsr (%rsp)\nfldcw 4(%rsp)\naddq $8, %rsp\n"
    "popq %r15\npopq %r14\npopq %r13\npopq %r12\npopq %rbx\npopq %rbp\nret\n"
    ".size emu_switch, .-emu_switch\n.popsection\n");
#endif

struct emu_fiber {
#if defined(EMU_ASM_SWITCH)
    void *sp = nullptr; /* the stack pointer emu_switch left */
#else
    ucontext_t ctx;
#endif
    char *stack = nullptr;
    int state = 0; /* 0 runnable, 1 at __syncthreads, 2 at a warp barrier, 3 done */
};
inline std::vector<emu_fiber> emu_f;
#if defined(EMU_ASM_SWITCH)
inline void *emu_main_sp;
#else
inline ucontext_t emu_main;
#endif
inline unsigned emu_cur;
inline std::function<void()> emu_job;
constexpr size_t EMU_STACK = 256 * 1024;

inline void emu_to_main(emu_fiber &f) {
#if defined(EMU_ASM_SWITCH)
    emu_switch(&f.sp, emu_main_sp);
#else
    swapcontext(&f.ctx, &emu_main);
#endif
}
inline void emu_to_fiber(emu_fiber &f) {
#if defined(EMU_ASM_SWITCH)
    emu_switch(&emu_main_sp, f.sp);
#else
    swapcontext(&emu_main, &f.ctx);
#endif
}

// back to the scheduler, waiting at barrier kind st
inline void emu_yield(int st) {
    emu_f[emu_cur].state = st;
    emu_to_main(emu_f[emu_cur]);
}
// a fiber's first frame: run the job, then leave for good (never resumed)
[[noreturn]] inline void emu_entry() {
    emu_job();
    emu_f[emu_cur].state = 3;
    emu_to_main(emu_f[emu_cur]);
    std::abort();
}
// make f start at emu_entry when next switched to
inline void emu_fiber_start(emu_fiber &f) {
    if (!f.stack)
        f.stack = new char[EMU_STACK];
#if defined(EMU_ASM_SWITCH)
    /* the frame emu_switch pops: MXCSR and control word as they are now,
       six zero registers, then it returns into emu_entry with the stack
       pointer 8 past a 16-byte boundary, as a call leaves it (the zero
       above is emu_entry's return address, never used) */
    uint32_t mxcsr;
    uint16_t fcw;
    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
    __asm__ volatile("fnstcw %0" : "=m"(fcw));
    uint64_t *p = (uint64_t *)(((uintptr_t)(f.stack + EMU_STACK)) & ~(uintptr_t)15);
    *--p = 0;
    *--p = (uint64_t)(uintptr_t)&emu_entry;
    for (int i = 0; i < 6; i++)
        *--p = 0;
    *--p = (uint64_t)mxcsr | (uint64_t)fcw << 32;
    f.sp = p;
#else
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = EMU_STACK;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, (void (*)())emu_entry, 0);
#endif
    f.state = 0;
}
inline float __shfl_xor_sync(unsigned, float v, int o) {
    const unsigned w = threadIdx.x >> 5, l = threadIdx.x & 31;
    /* one wait per shuffle: the other parity's buffer is free again, as
     * every lane has read it before reaching this shuffle's wait */
    const unsigned ph = emu_wphase[w] & 1;
    emu_wv[ph][w][l] = v;
    emu_yield(2);
    return emu_wv[ph][w][l ^ (unsigned)o]; /* the scheduler flipped the parity at the release */
}
// a warp barrier (every lane of the warp reaches it before any goes on)
inline void __syncwarp(unsigned = 0xffffffffu) {
    emu_yield(2);
}
// lane src's value (the same parity scheme as __shfl_xor_sync)
inline float __shfl_sync(unsigned, float v, int src) {
    const unsigned w = threadIdx.x >> 5, l = threadIdx.x & 31;
    const unsigned ph = emu_wphase[w] & 1;
    emu_wv[ph][w][l] = v;
    emu_yield(2);
    return emu_wv[ph][w][(unsigned)src & 31u];
}
// mma.sync m16n8k32, A int8 (row-major 16 x 32), B uint8 (column-major
// 32 x 8), int32: every lane deposits its fragments, waits for the warp,
// and computes its four outputs from all of them, the PTX ISA's layout
// (src/cuda/cuda_impl.cuh mkc_mma_s8u8). Same parity scheme as the
// shuffles.
inline uint32_t emu_mma_a[2][32][32][4], emu_mma_b[2][32][32][2];
// this lane's fragments deposited, the warp waited for: the parity whose
// buffers now hold every lane's (both mma forms)
inline unsigned emu_mma_deposit(const uint32_t *a, uint32_t b0, uint32_t b1) {
    const unsigned w = threadIdx.x >> 5, l = threadIdx.x & 31;
    const unsigned ph = emu_wphase[w] & 1;
    for (int i = 0; i < 4; i++)
        emu_mma_a[ph][w][l][i] = a[i];
    emu_mma_b[ph][w][l][0] = b0;
    emu_mma_b[ph][w][l][1] = b1;
    emu_yield(2);
    return ph;
}
inline void emu_mma_s8u8(int *d, const uint32_t *a, uint32_t b0, uint32_t b1) {
    const unsigned w = threadIdx.x >> 5, l = threadIdx.x & 31;
    const unsigned ph = emu_mma_deposit(a, b0, b1);
    const unsigned g = l >> 2, t = l & 3;
    for (unsigned e = 0; e < 4; e++) {
        const unsigned row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
        int64_t s = d[e];
        for (unsigned k = 0; k < 32; k++) {
            /* A[row][k]: lane 4 (row % 8) + (k % 16) / 4, register (row >= 8) + 2 (k >= 16), byte k % 4 */
            const uint32_t aw = emu_mma_a[ph][w][4 * (row & 7) + ((k & 15) >> 2)][(row >> 3) + 2 * (k >> 4)];
            /* B[k][col]: lane 4 col + (k % 16) / 4, register k >= 16, byte k % 4 */
            const uint32_t bw = emu_mma_b[ph][w][4 * col + ((k & 15) >> 2)][k >> 4];
            s += (int64_t)(int8_t)(aw >> (8 * (k & 3))) * (int64_t)(uint8_t)(bw >> (8 * (k & 3)));
        }
        d[e] = (int)s;
    }
}
// two floats rounded to bf16 (to nearest, ties to even; a NaN stays a NaN)
// and packed, a in the low half: cvt.rn.bf16x2.f32's result
inline uint32_t emu_bf16x2_rn(float a, float b) {
    const float v[2] = {a, b};
    uint32_t h[2];
    for (int i = 0; i < 2; i++) {
        uint32_t u;
        std::memcpy(&u, &v[i], 4);
        h[i] = (u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    }
    return h[0] | h[1] << 16;
}
// the low (half 0) or high bf16 of a word as a float
inline float emu_bf16f(uint32_t w, unsigned half) {
    const uint32_t u = (half ? w >> 16 : w & 0xffffu) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
// mma.sync m16n8k16, A bf16 (row-major 16 x 16), B bf16 (column-major 16 x
// 8), float32 sums (src/cuda/cuda_mma.cuh mkc_mma_bf16): every lane
// deposits its fragments, waits for the warp, and computes its four outputs
// from all of them, the PTX ISA's layout. The 16 products are exact; their
// sum here is formed in double and rounded once onto the float32
// accumulator (the device's order of float32 additions is not emulated).
inline void emu_mma_bf16(float *d, const uint32_t *a, uint32_t b0, uint32_t b1) {
    const unsigned w = threadIdx.x >> 5, l = threadIdx.x & 31;
    const unsigned ph = emu_mma_deposit(a, b0, b1);
    const unsigned g = l >> 2, t = l & 3;
    for (unsigned e = 0; e < 4; e++) {
        const unsigned row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
        double s = d[e];
        for (unsigned k = 0; k < 16; k++) {
            /* A[row][k]: lane 4 (row % 8) + (k % 8) / 2, register (row >= 8) + 2 (k >= 8), half k % 2 */
            const uint32_t aw = emu_mma_a[ph][w][4 * (row & 7) + ((k & 7) >> 1)][(row >> 3) + 2 * (k >> 3)];
            /* B[k][col]: lane 4 col + (k % 8) / 2, register k >= 8, half k % 2 */
            const uint32_t bw = emu_mma_b[ph][w][4 * col + ((k & 7) >> 1)][k >> 3];
            s += (double)emu_bf16f(aw, k & 1) * (double)emu_bf16f(bw, k & 1);
        }
        d[e] = (float)s;
    }
}
// __syncthreads that also counts the threads whose predicate is non-zero:
// add, wait, read, wait, thread 0 clears, wait (so no thread adds to the
// next count before it is cleared)
inline int emu_count;
inline int __syncthreads_count(int pred) {
    emu_count += pred != 0;
    emu_yield(1);
    const int r = emu_count;
    emu_yield(1);
    if (threadIdx.x == 0)
        emu_count = 0;
    emu_yield(1);
    return r;
}
// the 1-based position of the lowest set bit, 0 for none (CUDA's __ffs)
inline int __ffs(int x) {
    return x ? __builtin_ctz((unsigned)x) + 1 : 0;
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
// integer shuffles: the bits through the float buffer (moved, never converted)
inline unsigned __shfl_xor_sync(unsigned m, unsigned v, int o) {
    return __float_as_uint(__shfl_xor_sync(m, __uint_as_float(v), o));
}
inline int __shfl_xor_sync(unsigned m, int v, int o) {
    return (int)__shfl_xor_sync(m, (unsigned)v, o);
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
inline unsigned atomicAdd(unsigned *p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_add(v); }
inline int atomicAdd(int *p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }
inline unsigned long long atomicMin(unsigned long long *p, unsigned long long v) {
    const unsigned long long o = *p;
    if (v < o)
        *p = v;
    return o;
}
inline unsigned long long atomicExch(unsigned long long *p, unsigned long long v) {
    const unsigned long long o = *p;
    *p = v;
    return o;
}
// the emulated block's dynamic shared memory (MKC_DYN_SMEM in cuda_impl.cuh)
alignas(16) inline unsigned char emu_dyn_smem[228 * 1024];
// The dynamic shared memory the next launches ask for (emu_smem(bytes); 0:
// the whole buffer, unchecked). With a size set, emu_block fills the rest
// of the buffer with 0xFF bytes (NaN as floats, -1 as bytes, so a read past
// the size spoils the results) and aborts if a block wrote there: on a GPU
// past the launch's size is another block's memory or a fault, here it
// would be silently there.
inline size_t emu_smem_limit = 0;
inline void emu_smem(size_t bytes) {
    emu_smem_limit = bytes;
}
inline void __threadfence() {}

// wgmma.mma_async m64nNk32, A int8 and B uint8 from shared memory through
// descriptors (src/cuda/cuda_wgmma.cuh: K-major, no swizzle; element (r, k)
// at start + (r / 8) SBO + (k / 16) LBO + 16 (r % 8) + k % 16, the three
// fields in units of 16 bytes), int32. Each thread computes its own
// accumulators at the issue (d[4 i + 2 h + j] = D[16 w + 8 h + g][8 i + 2 t4
// + j], w its warp in the warpgroup, lane 4 g + t4) and records the sums;
// the wait that covers the op recomputes them from shared memory as it is
// then and aborts if they differ: on the device the tensor cores may read
// the tiles at any time up to that wait. A swizzled descriptor, or one
// reaching past the buffer, aborts.
struct emu_wg_op {
    uint64_t da, db;
    int n;
    unsigned group;
    std::vector<int> sums;
};
inline std::vector<emu_wg_op> emu_wg_ops[1024];
inline unsigned emu_wg_groups[1024]; /* commit groups a thread closed */
inline unsigned char emu_wg_byte(uint64_t desc, int r, int k) {
    if (desc >> 62) {
        std::fprintf(stderr, "cuda_emu: wgmma descriptor with a swizzle mode (%llx)\n", (unsigned long long)desc);
        std::abort();
    }
    const size_t start = (size_t)(desc & 0x3FFFu) << 4, lbo = (size_t)((desc >> 16) & 0x3FFFu) << 4,
                 sbo = (size_t)((desc >> 32) & 0x3FFFu) << 4;
    const size_t at = start + (size_t)(r >> 3) * sbo + (size_t)(k >> 4) * lbo + 16 * (size_t)(r & 7) + (size_t)(k & 15);
    if (at >= sizeof emu_dyn_smem) {
        std::fprintf(stderr, "cuda_emu: wgmma operand byte %zu outside shared memory\n", at);
        std::abort();
    }
    return emu_dyn_smem[at];
}
inline void emu_wg_sums(uint64_t da, uint64_t db, int n, std::vector<int> &s) {
    const unsigned w = (threadIdx.x >> 5) & 3, l = threadIdx.x & 31, g = l >> 2, t4 = l & 3;
    s.assign((size_t)(n / 2), 0);
    for (int i = 0; i < n / 8; i++)
        for (int h = 0; h < 2; h++)
            for (int j = 0; j < 2; j++) {
                const int row = (int)(16 * w + 8 * h + g), col = 8 * i + 2 * (int)t4 + j;
                int64_t v = 0;
                for (int k = 0; k < 32; k++)
                    v += (int64_t)(int8_t)emu_wg_byte(da, row, k) * (int64_t)emu_wg_byte(db, col, k);
                s[(size_t)(4 * i + 2 * h + j)] = (int)v;
            }
}
inline void emu_wgmma_s8u8(int *d, int n, uint64_t da, uint64_t db, bool acc) {
    emu_wg_op op{da, db, n, emu_wg_groups[threadIdx.x], {}};
    emu_wg_sums(da, db, n, op.sums);
    for (int e = 0; e < n / 2; e++)
        d[e] = (int)((uint32_t)(acc ? d[e] : 0) + (uint32_t)op.sums[(size_t)e]);
    emu_wg_ops[threadIdx.x].push_back(std::move(op));
}
inline void emu_wg_commit(void) {
    emu_wg_groups[threadIdx.x]++;
}
inline void emu_wg_wait(int pending) {
    std::vector<emu_wg_op> &ops = emu_wg_ops[threadIdx.x];
    const unsigned closed = emu_wg_groups[threadIdx.x];
    std::vector<emu_wg_op> keep;
    std::vector<int> now;
    for (emu_wg_op &op : ops) {
        if (op.group + (unsigned)pending >= closed) { /* still allowed in flight */
            keep.push_back(std::move(op));
            continue;
        }
        emu_wg_sums(op.da, op.db, op.n, now);
        if (now != op.sums) {
            std::fprintf(stderr, "cuda_emu: thread %u: a wgmma's shared-memory tiles changed before the wait "
                                 "that covers it\n", threadIdx.x);
            std::abort();
        }
    }
    ops = std::move(keep);
}
using std::isfinite; /* the device's isfinite, unqualified in kernels */

// The relative L2 error of n floats against a double reference: the
// emulations' measure.
inline double emu_rel_l2(const float *y, const double *r, size_t n) {
    double e = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        e += (y[i] - r[i]) * (y[i] - r[i]);
        s += r[i] * r[i];
    }
    return sqrt(e / s);
}

// Run fn() as block `block` (y: `by`) of a grid of `grid` (y: `gy`) blocks
// of n threads (n a multiple of 32, at most 1024): every fiber runs until it
// waits or ends; then the warps whose live lanes all wait at a warp barrier
// go on, else, when every live thread waits at __syncthreads, all go on.
template <class F>
void emu_block(unsigned grid, unsigned block, unsigned n, F fn, unsigned gy = 1, unsigned by = 0, unsigned gz = 1,
               unsigned bz = 0) {
    blockIdx.x = block;
    blockIdx.y = by;
    blockIdx.z = bz;
    gridDim.z = gz;
    blockDim.x = n;
    blockDim.y = 1;
    gridDim.x = grid;
    gridDim.y = gy;
    emu_job = fn;
    if (emu_f.size() < n)
        emu_f.resize(n);
    for (unsigned w = 0; w < 32; w++)
        emu_wphase[w] = 0;
    const size_t lim = emu_smem_limit;
    if (lim)
        std::memset(emu_dyn_smem + lim, 0xFF, sizeof emu_dyn_smem - lim);
    for (unsigned t = 0; t < n; t++)
        emu_fiber_start(emu_f[t]);
    for (;;) {
        for (unsigned t = 0; t < n; t++)
            if (emu_f[t].state == 0) {
                emu_cur = t;
                threadIdx.x = t;
                emu_to_fiber(emu_f[t]);
            }
        bool live = false, released = false, all_sync = true;
        for (unsigned w = 0; w < n / 32; w++) {
            bool any = false, all2 = true;
            for (unsigned l = 0; l < 32; l++) {
                const int st = emu_f[w * 32 + l].state;
                if (st == 3)
                    continue;
                any = true;
                all2 &= st == 2;
                all_sync &= st == 1;
            }
            live |= any;
            if (any && all2) {
                emu_wphase[w]++;
                for (unsigned l = 0; l < 32; l++)
                    if (emu_f[w * 32 + l].state == 2)
                        emu_f[w * 32 + l].state = 0;
                released = true;
            }
        }
        if (!live) {
            for (unsigned t = 0; t < n; t++)
                if (!emu_wg_ops[t].empty()) {
                    std::fprintf(stderr, "cuda_emu: block %u thread %u ended with a wgmma not waited for\n", block, t);
                    std::abort();
                }
            for (size_t i = lim; lim && i < sizeof emu_dyn_smem; i++)
                if (emu_dyn_smem[i] != 0xFF) {
                    std::fprintf(stderr, "cuda_emu: block %u wrote dynamic shared memory at byte %zu, past the %zu "
                                         "bytes its launch asked for\n", block, i, lim);
                    std::abort();
                }
            return;
        }
        if (released)
            continue;
        if (!all_sync) {
            std::fprintf(stderr, "cuda_emu: block %u: threads wait at different barriers (a divergent "
                                 "__syncthreads or shuffle)\n", block);
            std::abort();
        }
        for (unsigned t = 0; t < n; t++)
            if (emu_f[t].state == 1)
                emu_f[t].state = 0;
    }
}

#endif
