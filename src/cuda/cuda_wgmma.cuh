/* Hopper's warpgroup matrix multiply (wgmma, sm_90a) for the int8 GEMMs:
 * one asynchronous instruction of a warpgroup (4 consecutive warps, the
 * first of them a multiple of 4) multiplies a 64 x 32 int8 tile A by a 32 x
 * N uint8 tile B, both read from shared memory through 64-bit descriptors,
 * into int32 accumulators in registers (exact). mma.sync (cuda_impl.cuh
 * mkc_mma_s8u8) needs every fragment loaded into registers by the warp,
 * ~20 of the ~35 instructions an mma the int8 GEMMs issue (session 25's
 * ncu); wgmma reads its operands itself, so what is left to the threads is
 * the CPU rule's folds.
 *
 * Layout (both operands K-major, no swizzle, the one layout the int8
 * forms take): a tile of R rows x 32 bytes is made of core matrices of 8
 * rows x 16 bytes, each 128 contiguous bytes (row r % 8 at 16 (r % 8));
 * element (r, k) lies at start + (r / 8) SBO + (k / 16) LBO + 16 (r % 8) +
 * k % 16, where the descriptor carries start, LBO (the step between core
 * matrices along K, "leading dimension byte offset") and SBO (along the
 * rows, "stride dimension byte offset"), each in units of 16 bytes
 * (mkc_wg_desc). Accumulators of m64nNk32: thread t of the warpgroup (warp
 * w = t / 32, lane 4 g + t4) holds d[4 i + 2 h + j] = D[16 w + 8 h + g][8 i
 * + 2 t4 + j] for i < N / 8: an mma.sync m16n8 fragment per i.
 *
 * Ordering: shared memory written by the threads (st.shared, cp.async)
 * that a wgmma reads needs fence.proxy.async in each writer before the
 * barrier that precedes the wgmma (mkc_wg_proxy_fence); registers written
 * by ordinary instructions before a wgmma reads them as accumulators need
 * wgmma.fence (mkc_wg_fence); the accumulators and the tiles in shared
 * memory belong to the wgmma from its issue until a wgmma.wait_group that
 * covers its commit group (mkc_wg_commit, mkc_wg_wait<N>).
 *
 * Only the sm_90a pass (CMake's 90a architecture) defines
 * __CUDA_ARCH_FEAT_SM90_ALL; elsewhere (the compute_90 PTX other GPUs
 * compile, a build for another architecture) these trap, and the host
 * never launches a kernel that uses them (mk_cuda_wgmma_available). The host emulation
 * (tests/emu/cuda_emu.h emu_wgmma_s8u8) computes each thread's accumulators
 * from the descriptors at the issue and again at the wait, and aborts if
 * the tiles changed in between (a kernel that overwrote them too early). */
#ifndef MK_CUDA_WGMMA_CUH
#define MK_CUDA_WGMMA_CUH

#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || defined(MK_CUDA_EMU)
#define MKC_WGMMA 1
#endif

/* The descriptor of a K-major, unswizzled tile at p in shared memory
 * (16-byte aligned) whose core matrices are lbo bytes apart along K and
 * sbo bytes apart along the rows (multiples of 16, below 256 KB) */
__device__ __forceinline__ uint64_t mkc_wg_desc(const void *p, uint32_t lbo, uint32_t sbo) {
#ifdef MK_CUDA_EMU
    const uint32_t a = (uint32_t)((const unsigned char *)p - emu_dyn_smem);
#else
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
#endif
    return (uint64_t)((a >> 4) & 0x3FFFu) | (uint64_t)((lbo >> 4) & 0x3FFFu) << 16 |
           (uint64_t)((sbo >> 4) & 0x3FFFu) << 32; /* base offset 0, swizzle 0 (none) */
}

/* this thread's ordinary shared-memory writes made visible to the tensor
 * cores' (async proxy) reads after the next barrier */
__device__ __forceinline__ void mkc_wg_proxy_fence(void) {
#if !defined(MK_CUDA_EMU)
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
}
/* before the first wgmma that reads accumulators ordinary instructions wrote */
__device__ __forceinline__ void mkc_wg_fence(void) {
#if defined(MK_CUDA_EMU)
#elif defined(MKC_WGMMA)
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#else
    __trap();
#endif
}
__device__ __forceinline__ void mkc_wg_commit(void) {
#if defined(MK_CUDA_EMU)
    emu_wg_commit();
#elif defined(MKC_WGMMA)
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
#endif
}
/* until at most N of this warpgroup's commit groups are in flight */
template <int N> __device__ __forceinline__ void mkc_wg_wait(void) {
#if defined(MK_CUDA_EMU)
    emu_wg_wait(N);
#elif defined(MKC_WGMMA)
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
#endif
}

/* d (+)= A B: wgmma m64n128k32, A int8 (descriptor da), B uint8 (db),
 * int32; acc false: d = A B (d's values not read). The "+r" constraints
 * keep d in registers through the asynchronous write; mkc_wg_wait before
 * any read of d. */
__device__ __forceinline__ void mkc_wgmma_s8u8_n128(int (&d)[64], uint64_t da, uint64_t db, bool acc) {
#if defined(MK_CUDA_EMU)
    emu_wgmma_s8u8(d, 128, da, db, acc);
#elif defined(MKC_WGMMA)
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.u8 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
                 "%64, %65, p;\n}\n"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]),
                   "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]),
                   "+r"(d[14]), "+r"(d[15]), "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]),
                   "+r"(d[21]), "+r"(d[22]), "+r"(d[23]), "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]),
                   "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]), "+r"(d[32]), "+r"(d[33]), "+r"(d[34]),
                   "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]), "+r"(d[40]), "+r"(d[41]),
                   "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]), "+r"(d[48]),
                   "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]),
                   "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]),
                   "+r"(d[63])
                 : "l"(da), "l"(db), "r"((int)acc)
                 : "memory");
#else
    (void)d;
    (void)da;
    (void)db;
    (void)acc;
    __trap();
#endif
}

#endif
