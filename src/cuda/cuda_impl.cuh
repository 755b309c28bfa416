/* Internals shared by the CUDA sources: the device-side weight view, the
 * host-side error mapping, and the row dot products every kernel is built
 * from.
 *
 * A warp computes dot products of whole weight rows: lane l takes the
 * 16-byte chunks l, l+32, ... of the row, dequantizes them in registers
 * (affine: w = s*q + b, folded as s*sum(q*x) + b*sum(x) per chunk, since a
 * chunk never straddles a group: 32 values at 4 bits, 16 at 8, groups are
 * >= 32) and accumulates in float32; the caller reduces the 32 partial
 * sums with xor shuffles. NR rows are done together so that their loads are
 * in flight at once (and, when they share x, x is loaded once). Integer to
 * float conversion avoids the quarter-rate I2F: 8-bit codes by the 2^23
 * trick (a byte placed in a float's mantissa by PRMT, minus 2^23, exact),
 * 4-bit codes as 0.5 + q/32 (one PRMT, see mkc_nibf). FP8 E4M3 with block
 * scales: 16 codes per chunk, converted exactly by the hardware's
 * e4m3x2 -> f16x2 conversion and widened to f32 (mkc_dot_fp8; MXFP8 the
 * same codes under an E8M0 scale per 32). MXFP4 and
 * NVFP4: 32 E2M1 codes per chunk, twice their magnitudes looked up as
 * bytes by PRMT from the table {0, 1, 2, 3, 4, 6, 8, 12}, made floats by
 * the 2^23 trick and signed by one XOR (mkc_dot_fp4). */
#ifndef MK_CUDA_IMPL_CUH
#define MK_CUDA_IMPL_CUH

#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <mutex>
#include <stdint.h>
#include <string.h>

#include "cuda/mk_cuda.h"

/* A kernel's dynamic shared memory: `extern __shared__ T name[]`; in the
 * host emulation of device code (tests/emu/cuda_emu.h) the emulated
 * block's buffer. */
#ifdef MK_CUDA_EMU
#define MKC_DYN_SMEM(T, name) T *const name = (T *)emu_dyn_smem
#else
#define MKC_DYN_SMEM(T, name) extern __shared__ T name[]
#endif

/* Format kinds the kernels switch on (warp-uniform). */
enum mkc_kind {
    MKC_F32 = 0,
    MKC_BF16,
    MKC_F16,
    MKC_A4_F32,
    MKC_A4_BF16,
    MKC_A4_F16,
    MKC_A8_F32,
    MKC_A8_BF16,
    MKC_A8_F16,
    MKC_E4_F32, /* FP8 E4M3 with block scales (scale dtype f32 / bf16 / f16) */
    MKC_E4_BF16,
    MKC_E4_F16,
    MKC_MX4, /* MXFP4: E2M1 codes, an E8M0 scale per 32 */
    MKC_NV4, /* NVFP4: E2M1 codes, an E4M3 scale per 16, times a global scale */
    MKC_MX8, /* MXFP8: E4M3 codes, an E8M0 scale per 32 */
    MKC_KIND_COUNT
};

/* The affine kinds (scales and biases per group, 4 or 8 bits). */
static inline __host__ __device__ bool mkc_is_aff(int kind) {
    return kind >= MKC_A4_F32 && kind <= MKC_A8_F16;
}
static inline __host__ __device__ bool mkc_is_fp8(int kind) {
    return kind >= MKC_E4_F32 && kind <= MKC_E4_F16;
}
/* Bytes of one scale or bias of an affine kind (f32 or a half type). */
static inline __host__ __device__ int64_t mkc_aff_sb(int kind) {
    return (kind == MKC_A4_F32 || kind == MKC_A8_F32) ? 4 : 2;
}
/* Kinds whose 16-byte chunks hold 32 values of one 32-value block, so x
 * may be staged in the padded layout (mkc_xi). */
static inline __host__ __device__ bool mkc_pads(int kind) {
    return mkc_is_aff(kind) || kind == MKC_MX4 || kind == MKC_NV4;
}

/* Device view of one matrix, passed to kernels by value. */
struct mkc_w {
    const uint8_t *data;
    const void *scales, *biases;
    int64_t rows, cols;
    int64_t row_bytes; /* packed data bytes of one row */
    int32_t kind, group, ng, gshift; /* gshift = log2(group) */
    int32_t vec; /* 1: rows are 16-byte chunks (affine and FP8 always; plain when cols fit) */
    int32_t br, cpb, nbc; /* FP8: block rows, 16-byte chunks per column block, column blocks */
    float gs;             /* NVFP4: the global scale */
};

/* Host: mkc_kind_of (kind of a weight view, -1 when the device does not
 * take it) and mkc_view (a device view from a device-pointer mk_wt;
 * MK_E_UNSUPPORTED naming `what` when the kernels do not take the format). */
#include "cuda/cuda_view.cuh"
/* Host: map a CUDA error to an mk_status with message "<what>: <cuda text>". */
mk_status mkc_fail(cudaError_t e, const char *what);
#define MKC_TRY(call, what)                       \
    do {                                          \
        cudaError_t mkc_e_ = (call);              \
        if (mkc_e_ != cudaSuccess)                \
            return mkc_fail(mkc_e_, (what));      \
    } while (0)

/* Launch kernel k with grid x block threads and smem bytes of dynamic
 * shared memory on stream s, with the programmatic-dependent-launch
 * attribute when pdl: the kernel may then start while its predecessor in
 * the stream runs, so it must call mkc_pdl_enter before it reads or writes
 * anything but weights (a launch after a copy or memset is serialised as
 * usual). Host only. */
#ifndef MK_CUDA_EMU
template <typename... KA, typename... A>
static inline cudaError_t mkc_launch(void (*k)(KA...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                                     bool pdl, A... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = pdl ? 1 : 0;
    const cudaError_t e = cudaLaunchKernelEx(&cfg, k, args...);
    if (e != cudaSuccess)
        (void)cudaGetLastError(); /* reported by the caller once, not again by the next launch's check */
    return e;
}
#endif

/* The current device's SM count (132 when it cannot be read), asked once
 * per process (the backend runs on one device). Host only. */
static inline int mkc_sm_count(void) {
    static int nsm;
    int dev = 0;
    if (!nsm && (cudaGetDevice(&dev) != cudaSuccess ||
                 cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || nsm < 1)) {
        (void)cudaGetLastError();
        nsm = 132;
    }
    return nsm;
}

/* Let kernel k use up to `bytes` of dynamic shared memory (past the 48 KiB
 * a launch gets without asking), once per kernel and device (the attribute
 * is the current device's): false when refused (the caller runs another
 * kernel). Host only; under a lock (engines on several host threads, or
 * devices, share the cache). */
static inline bool mkc_smem_opt_in(const void *k, int bytes) {
    static std::mutex mu;
    static const void *asked[64];
    static int dev_of[64];
    static bool granted[64];
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
    }
    std::lock_guard<std::mutex> hold(mu);
    for (int i = 0; i < 64; i++) {
        if (asked[i] == k && dev_of[i] == dev)
            return granted[i];
        if (!asked[i]) {
            asked[i] = k;
            dev_of[i] = dev;
            granted[i] = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) == cudaSuccess;
            if (!granted[i])
                (void)cudaGetLastError();
            return granted[i];
        }
    }
    return false;
}

/* The current device's most dynamic shared memory a block may opt in to
 * (227 KB on sm_90, 163 KB on sm_80, 99 KB on sm_86/89); 0 when unknown */
static inline int mkc_smem_optin_max(void) {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return v;
}

/* Whether a step kernel's launch asks L2 for its reads before the wait
 * (MK_CUDA_PREFETCH_* bit): only under PDL, where a launch can start before
 * its predecessor ends. Host only. */
static inline int mkc_prefetches(unsigned bit) {
    return mk_cuda_step_pdl() && (mk_cuda_step_prefetch() & bit) ? 1 : 0;
}

/* Programmatic dependent launch (when launched with the attribute; no-ops
 * otherwise): wait until the previous kernel in the stream has completed
 * and its writes are visible, then let the next kernel be launched, so its
 * launch and block set-up overlap this kernel's run. Waiting first keeps
 * every read after the producer's writes, transitively across kernels:
 * the next kernel can start only once every block of this one has passed
 * its wait, i.e. once this one's predecessor has completed. */
__device__ __forceinline__ void mkc_pdl_enter(void) {
#ifndef MK_CUDA_EMU /* the host emulation runs kernels one after another */
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* Ask L2 for the 128-byte line holding p (prefetch.global.L2: a hint; a
 * no-op in the host emulation). */
__device__ __forceinline__ void mkc_prefetch_line(const void *p) {
#ifndef MK_CUDA_EMU
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#else
    (void)p;
#endif
}

/* Ask L2 for the bytes [p, p + n) from a warp, lane l the 128-byte lines
 * l, l + 32, ... (prefetch.global.L2: a hint, no register, no wait; L2 is
 * where global memory is coherent, so the lines cannot be stale). What a
 * kernel does before mkc_pdl_enter with the weights it will read. */
__device__ __forceinline__ void mkc_prefetch_l2(const void *p, int64_t n, int lane) {
#ifndef MK_CUDA_EMU
    const uintptr_t a0 = (uintptr_t)p & ~(uintptr_t)127, end = (uintptr_t)p + (uintptr_t)n;
    for (uintptr_t a = a0 + 128 * (uintptr_t)lane; a < end; a += 128 * 32)
        mkc_prefetch_line((const void *)a);
#else
    (void)p, (void)n, (void)lane;
#endif
}

/* The MoE step of n tokens (rows of x and y; mk_cuda_moe_step_n) with a
 * choice of kernels (bit 0 router, 1 gate/up, 2 down) and of programmatic
 * dependent launch; mk_cuda_moe_step is (1 token, 7, mk_cuda_moe_pdl()).
 * f: a residual step folded into the router (one token, the router
 * launched, x f's xb; mk_cuda_moe_step_fold), *taken false and nothing
 * queued when the router cannot take it.
 * For bench_cuda_moe's breakdown and experiments, not the public API. */
mk_status mkc_moe_launch(const mk_cuda_moe *m, mk_cuda_moe_ws *ws, const float *x, float *y, int64_t n,
                         bool accumulate, void *stream, unsigned parts, bool pdl,
                         const struct mk_cuda_fold *f = NULL, bool *taken = NULL);

/* Kernel generation for GEMV and the MoE step (mk_cuda_kernels): 1 the
 * first kernels, 2 the pipelined ones (mkc_dot_aff_p, k_down2). Host only. */
static inline int mkc_variant(void) {
    return mk_cuda_kernels();
}

/* ---- device: loads and conversions ------------------------------------ */

__device__ __forceinline__ float mkc_bf16f(uint32_t h) {
    return __uint_as_float(h << 16);
}
__device__ __forceinline__ float mkc_f16f(uint32_t h) {
    return __half2float(__ushort_as_half((unsigned short)h));
}

/* Single roundings that nvcc must not contract into a fused multiply-add
 * (the CPU's int8 GEMM rule has a multiply, then an add; the host
 * emulation compiles ISO C++, which does not contract either). */
__device__ __forceinline__ float mkc_mul_rn(float a, float b) {
#ifdef MK_CUDA_EMU
    return a * b;
#else
    return __fmul_rn(a, b);
#endif
}
__device__ __forceinline__ float mkc_add_rn(float a, float b) {
#ifdef MK_CUDA_EMU
    return a + b;
#else
    return __fadd_rn(a, b);
#endif
}
__device__ __forceinline__ float mkc_div_rn(float a, float b) {
#ifdef MK_CUDA_EMU
    return a / b;
#else
    return __fdiv_rn(a, b);
#endif
}

/* Integer dots that become floats: accumulated from MKC_DOT0, the bits of
 * 1.5 * 2^23, instead of 0 (or with it added after), a dot d with |d| <
 * 2^22 leaves the int32 holding the bits of the float 1.5 * 2^23 + d exactly (the floats in
 * [2^23, 2^24) are the integers), so mkc_dotf turns it into d by one exact
 * FADD instead of an I2F, which issues at a quarter of the FP32 rate on
 * sm_90 (16 a clock an SM). The same value as (float)d, so the same bits.
 * The int8 dots here are at most 64 * 127 * 255 < 2^21 in magnitude. */
#define MKC_DOT0 0x4B400000
__device__ __forceinline__ float mkc_dotf(int acc) {
    return mkc_add_rn(__uint_as_float((uint32_t)acc), -12582912.0f);
}

/* d += A B of one warp's mma.sync m16n8k32 (A 16 x 32 int8, row-major;
 * B 32 x 8 uint8, column-major; int32, exact). Lane l = 4 g + t holds
 * a[0] = A[g][4t..4t+3], a[1] = A[g+8][4t..], a[2] = A[g][16+4t..], a[3] =
 * A[g+8][16+4t..]; b0 = B[4t..4t+3][g], b1 = B[16+4t..][g]; d[0..1] =
 * D[g][2t, 2t+1], d[2..3] = D[g+8][2t, 2t+1] (the PTX ISA's fragments). */
__device__ __forceinline__ void mkc_mma_s8u8(int *d, const uint32_t *a, uint32_t b0, uint32_t b1) {
#ifdef MK_CUDA_EMU
    emu_mma_s8u8(d, a, b0, b1);
#else
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.u8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

/* d = A B + c, each of the four from c (the same shapes as mkc_mma_s8u8):
 * the first mma of an activation block, its sums started from MKC_DOT0 so
 * that mkc_dotf reads them with no reset of d before and no add after
 * (32 of each a thread and block step in k_grp_mm_q8p's tile: ~6 of the
 * ~40 instructions an mma there, which is bound by its instruction count).
 * The C operand is c four times, one register quad for every mma. */
__device__ __forceinline__ void mkc_mma_s8u8_from(int *d, const uint32_t *a, uint32_t b0, uint32_t b1, int c) {
#ifdef MK_CUDA_EMU
    d[0] = d[1] = d[2] = d[3] = c;
    emu_mma_s8u8(d, a, b0, b1);
#else
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.u8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%10,%10,%10,%10};"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "r"(c));
#endif
}

/* cp.async (sm_80+): BYTES (4, 8 or 16) from global src to shared dst
 * without passing through registers, or zeros when !valid (src is then
 * not read); the copies of a thread are grouped by mkc_cp_commit and
 * mkc_cp_wait<N> waits until at most N of its groups are in flight. The
 * host emulation copies at once. */
template <int BYTES> __device__ __forceinline__ void mkc_cp_async(void *dst, const void *src, bool valid) {
#ifdef MK_CUDA_EMU
    if (valid)
        memcpy(dst, src, BYTES);
    else
        memset(dst, 0, BYTES);
#else
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    if (BYTES == 16)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(valid ? 16 : 0)
                     : "memory");
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;" ::"r"(d), "l"(src), "n"(BYTES),
                     "r"(valid ? BYTES : 0)
                     : "memory");
#endif
}
__device__ __forceinline__ void mkc_cp_commit(void) {
#ifndef MK_CUDA_EMU
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
template <int N> __device__ __forceinline__ void mkc_cp_wait(void) {
#ifndef MK_CUDA_EMU
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

/* scale/bias element i in dtype of the kind */
template <int SD> __device__ __forceinline__ float mkc_lds(const void *p, int64_t i);
template <> __device__ __forceinline__ float mkc_lds<0>(const void *p, int64_t i) {
    return __ldg((const float *)p + i);
}
template <> __device__ __forceinline__ float mkc_lds<1>(const void *p, int64_t i) {
    return mkc_bf16f(__ldg((const unsigned short *)p + i));
}
template <> __device__ __forceinline__ float mkc_lds<2>(const void *p, int64_t i) {
    return mkc_f16f(__ldg((const unsigned short *)p + i));
}

/* scale/bias element i of a row copied raw (dtype of SD: 0 f32, 1 bf16,
 * 2 f16) into shared memory at p: the staged kernels' (k_gemv_s, the
 * staged MoE kernels, k_grp_mm_q8p) */
template <int SD> __device__ __forceinline__ float mkc_sv(const uint8_t *p, int64_t i) {
    if (SD == 0)
        return ((const float *)p)[i];
    const uint32_t h = ((const unsigned short *)p)[i];
    return SD == 1 ? __uint_as_float(h << 16) : mkc_f16f(h);
}

/* 16-byte chunk c (of group g) of NR affine rows staged in shared memory:
 * row ri[r]'s codes at codes + ri[r] * rbytes, its raw scale and bias rows
 * at scs / bis + ri[r] * sbr (the staged kernels' layout) */
template <int SD, int NR>
__device__ __forceinline__ void mkc_staged_chunk(const uint8_t *codes, const uint8_t *scs, const uint8_t *bis,
                                                 const int64_t *ri, int64_t rbytes, int64_t sbr, int64_t c,
                                                 int64_t g, uint4 *qq, float *sc, float *bi) {
#pragma unroll
    for (int r = 0; r < NR; r++) {
        qq[r] = *(const uint4 *)(codes + ri[r] * rbytes + c * 16);
        sc[r] = mkc_sv<SD>(scs + ri[r] * sbr, g);
        bi[r] = mkc_sv<SD>(bis + ri[r] * sbr, g);
    }
}

/* byte i of w as an exact float (0..255): [w.byte_i, 0, 0, 0x4B] - 2^23 */
template <int I> __device__ __forceinline__ float mkc_byte(uint32_t w) {
    return __uint_as_float(__byte_perm(w, 0x4B000000u, 0x7440 + I)) - 8388608.0f;
}

/* 4-bit codes as floats without a subtraction: the nibble, pre-shifted to
 * bits 3..6 of its byte, becomes mantissa bits 19..22 of a float with
 * exponent 126: f = 0.5 + q/32 exactly (one PRMT). Then
 *   sum q x = 32 sum f x - 16 sum x,
 * so the chunk's term is 32 s (sum f x) + (b - 16 s)(sum x): FFMAs only in
 * the inner loop. The cancellation costs a bit or two, not more (f >= 0.5);
 * the tests' bound carries the extra 48|s| term this brings. */
template <int M> __device__ __forceinline__ float mkc_nibf(uint32_t w8) {
    return __uint_as_float(__byte_perm(w8, 0x3F000000u, 0x7044 | (M << 8)));
}

/* acc[i&3] += f(code i) * x[i] for the 8 nibbles of one word */
__device__ __forceinline__ void mkc_dot_nib(uint32_t w, const float *x, float *a) {
    const uint32_t lo = (w << 3) & 0x78787878u, hi = (w >> 1) & 0x78787878u;
    a[0] = fmaf(mkc_nibf<0>(lo), x[0], a[0]);
    a[1] = fmaf(mkc_nibf<0>(hi), x[1], a[1]);
    a[2] = fmaf(mkc_nibf<1>(lo), x[2], a[2]);
    a[3] = fmaf(mkc_nibf<1>(hi), x[3], a[3]);
    a[0] = fmaf(mkc_nibf<2>(lo), x[4], a[0]);
    a[1] = fmaf(mkc_nibf<2>(hi), x[5], a[1]);
    a[2] = fmaf(mkc_nibf<3>(lo), x[6], a[2]);
    a[3] = fmaf(mkc_nibf<3>(hi), x[7], a[3]);
}

/* acc[i] += byte i * x[i] for the 4 bytes of one word (exact: 2^23 trick) */
__device__ __forceinline__ void mkc_dot_byte(uint32_t w, const float *x, float *a) {
    a[0] = fmaf(mkc_byte<0>(w), x[0], a[0]);
    a[1] = fmaf(mkc_byte<1>(w), x[1], a[1]);
    a[2] = fmaf(mkc_byte<2>(w), x[2], a[2]);
    a[3] = fmaf(mkc_byte<3>(w), x[3], a[3]);
}

/* 16 bytes of weights that are read once: no L1 allocation, so the
 * streaming weights do not evict x (which every warp of the block re-reads) */
__device__ __forceinline__ uint4 mkc_ldw(const void *p) {
#ifdef MK_CUDA_EMU /* the host emulation of device code (tests/emu/cuda_emu.h) */
    return *(const uint4 *)p;
#else
    uint4 r;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
        : "l"(p));
    return r;
#endif
}

/* The padded layout of x in shared memory (xpad 4; 0: plain): 4 floats of
 * padding after every 32, so that the 32 lanes of a warp, whose 16-byte
 * weight chunks start VPC = 32, 16 or 8 values apart, read x from distinct
 * banks. Unpadded, lanes 128 bytes apart (4-bit) hit the same 4 banks: an
 * 8-way conflict on every x load (4-way at 8 bits, 2-way for bf16), which
 * matched the GEMV's 33% / 72% / 87% of copy (bench/RESULTS.md 2026-12-03).
 * Logical index i (a chunk's first value: never straddles 32) -> i + pad. */
__device__ __forceinline__ int64_t mkc_xi(int64_t i, int xpad) {
    return i + (i >> 5) * xpad;
}

/* x values: shared memory when the kernel staged x there, else global
 * (plain loads: the pointer may be either) */
__device__ __forceinline__ void mkc_ldx(const float *x, int n4, float *xv) {
#pragma unroll
    for (int i = 0; i < 8; i++)
        if (i < n4) {
            float4 t = ((const float4 *)x)[i];
            xv[4 * i] = t.x;
            xv[4 * i + 1] = t.y;
            xv[4 * i + 2] = t.z;
            xv[4 * i + 3] = t.w;
        }
}

/* sum of n values, four chains (depth n/4 + 2) */
template <int N> __device__ __forceinline__ float mkc_sum(const float *v) {
    float a[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int i = 0; i < N; i++)
        a[i & 3] += v[i];
    return (a[0] + a[1]) + (a[2] + a[3]);
}

/* The weight loads of one lane step of the chunked dot products below:
 * chunks c0 + 32u (u < U) of NR rows, every load issued before any use so
 * that U * NR 16-byte loads per lane are in flight. */
template <int U, int NR>
__device__ __forceinline__ void mkc_load_chunks(const uint8_t *const *q, int64_t c0, int64_t nchunk,
                                                uint4 (&qq)[U][NR]) {
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
        for (int r = 0; r < NR; r++)
            if (c0 + 32 * u < nchunk)
                qq[u][r] = mkc_ldw((const uint4 *)q[r] + c0 + 32 * u);
}

/* Lane partial sums of NR affine rows. Row r: packed data q[r], scales s[r],
 * biases b[r] (per-row group arrays), input x[r] (SX: all rows share x[0]).
 * nchunk = row_bytes / 16; group = 1 << gshift. Two chunks per lane step
 * with every weight load issued before any use, so that 2*NR 16-byte loads
 * per lane are in flight (memory latency, not arithmetic, bounds a GEMV). */
template <int BITS, int SD, int NR, bool SX>
__device__ __forceinline__ void mkc_dot_aff(const uint8_t *const *q, const void *const *s,
                                            const void *const *b, const float *const *x,
                                            int64_t nchunk, int gshift, int lane, float *acc, int xpad) {
    constexpr int VPC = 128 / BITS; /* values per 16-byte chunk */
    constexpr int U = NR >= 4 ? 1 : 2; /* 16-byte loads in flight per lane: U * NR */
    for (int64_t c0 = lane; c0 < nchunk; c0 += 32 * U) {
        uint4 qq[U][NR];
        mkc_load_chunks<U, NR>(q, c0, nchunk, qq);
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int64_t c = c0 + 32 * u;
            if (c >= nchunk)
                break;
            const int64_t g = (c * VPC) >> gshift;
            float xv[VPC], xs = 0.0f;
#pragma unroll
            for (int r = 0; r < NR; r++) {
                if (r == 0 || !SX) {
                    mkc_ldx(x[r] + mkc_xi(c * VPC, xpad), VPC / 4, xv);
                    xs = mkc_sum<VPC>(xv);
                }
                const uint32_t wd[4] = {qq[u][r].x, qq[u][r].y, qq[u][r].z, qq[u][r].w};
                float a[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                const float sc = mkc_lds<SD>(s[r], g), bi = mkc_lds<SD>(b[r], g);
                if constexpr (BITS == 4) {
#pragma unroll
                    for (int j = 0; j < 4; j++)
                        mkc_dot_nib(wd[j], xv + 8 * j, a);
                    const float d = (a[0] + a[1]) + (a[2] + a[3]);
                    acc[r] += (32.0f * sc) * d + fmaf(-16.0f, sc, bi) * xs;
                } else {
#pragma unroll
                    for (int j = 0; j < 4; j++)
                        mkc_dot_byte(wd[j], xv + 4 * j, a);
                    const float d = (a[0] + a[1]) + (a[2] + a[3]);
                    acc[r] += sc * d + bi * xs;
                }
            }
        }
    }
}

/* E8M0 scale bytes as floats (2^(b-127), 0xff NaN), exact */
__device__ __forceinline__ float mkc_e8m0f(uint32_t b) {
    return b == 0xffu ? __uint_as_float(0x7fc00000u) : b == 0u ? __uint_as_float(0x00400000u) : __uint_as_float(b << 23);
}

/* acc[i] += e4m3 code i * x[i] for the 4 codes of one word, each code
 * converted exactly (f16 holds every E4M3 value, NaN included) */
__device__ __forceinline__ void mkc_dot_e4(uint32_t w, const float *x, float *a) {
    __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(w & 0xffffu), __NV_E4M3);
    __half2_raw hi = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(w >> 16), __NV_E4M3);
    const float2 f0 = __half22float2(*reinterpret_cast<const __half2 *>(&lo));
    const float2 f1 = __half22float2(*reinterpret_cast<const __half2 *>(&hi));
    a[0] = fmaf(f0.x, x[0], a[0]);
    a[1] = fmaf(f0.y, x[1], a[1]);
    a[2] = fmaf(f1.x, x[2], a[2]);
    a[3] = fmaf(f1.y, x[3], a[3]);
}

/* Lane partial sums of NR FP8 E4M3 rows with block scales (DeepSeek-V3's
 * checkpoints: one scale_inv per block_r x block_c block). s[r] points at
 * the row's block row of scales; a 16-byte chunk is 16 codes inside one
 * column block (block_c % 16 == 0: cpb chunks a block), so its term is
 * s * sum(f(q) x) with f exact. Two chunks per lane step, loads first, as
 * mkc_dot_aff. SD 3: MXFP8, the row's E8M0 scale bytes, one per 32 codes
 * (cpb 2). */
template <int SD, int NR, bool SX>
__device__ __forceinline__ void mkc_dot_fp8(const uint8_t *const *q, const void *const *s, const float *const *x,
                                            int64_t nchunk, int cpb, int lane, float *acc) {
    constexpr int U = NR >= 4 ? 1 : 2;
    for (int64_t c0 = lane; c0 < nchunk; c0 += 32 * U) {
        uint4 qq[U][NR];
        mkc_load_chunks<U, NR>(q, c0, nchunk, qq);
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int64_t c = c0 + 32 * u;
            if (c >= nchunk)
                break;
            const int64_t g = c / cpb;
            float xv[16];
#pragma unroll
            for (int r = 0; r < NR; r++) {
                if (r == 0 || !SX)
                    mkc_ldx(x[r] + c * 16, 4, xv);
                const uint32_t wd[4] = {qq[u][r].x, qq[u][r].y, qq[u][r].z, qq[u][r].w};
                float a[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
                for (int j = 0; j < 4; j++)
                    mkc_dot_e4(wd[j], xv + 4 * j, a);
                float sc;
                if constexpr (SD == 3)
                    sc = mkc_e8m0f(__ldg((const uint8_t *)s[r] + g));
                else
                    sc = mkc_lds<SD>(s[r], g);
                acc[r] += sc * ((a[0] + a[1]) + (a[2] + a[3]));
            }
        }
    }
}

/* acc[i & 3] += v_i * x[i] / (its scale) for the 8 E2M1 codes of one word
 * (LSB-first nibbles), times 2: the magnitude bits select 2|v| from the
 * bytes {0, 1, 2, 3, 4, 6, 8, 12} (PRMT), exact floats by the 2^23 trick,
 * and the code's sign bit flips the float's. */
__device__ __forceinline__ void mkc_dot_e2m1(uint32_t w, const float *x, float *a) {
    const uint32_t m = w & 0x77777777u;
    const uint32_t lo = __byte_perm(0x03020100u, 0x0C080604u, m & 0xffffu);
    const uint32_t hi = __byte_perm(0x03020100u, 0x0C080604u, m >> 16);
/* value k (0..7) of the word: magnitude byte I of V (lo: k < 4, hi: k >= 4), sign bit 4k+3 */
#define MKC_E2M1(V, I, K) \
    a[(K) & 3] = fmaf(__uint_as_float(__float_as_uint(mkc_byte<I>(V)) ^ ((w << (28 - 4 * (K))) & 0x80000000u)), \
                      x[K], a[(K) & 3])
    MKC_E2M1(lo, 0, 0);
    MKC_E2M1(lo, 1, 1);
    MKC_E2M1(lo, 2, 2);
    MKC_E2M1(lo, 3, 3);
    MKC_E2M1(hi, 0, 4);
    MKC_E2M1(hi, 1, 5);
    MKC_E2M1(hi, 2, 6);
    MKC_E2M1(hi, 3, 7);
#undef MKC_E2M1
}

/* E4M3 scale bytes as floats, exact (E8M0's: mkc_e8m0f) */
__device__ __forceinline__ float2 mkc_e4m3x2f(uint32_t two) {
    __half2_raw h = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(two & 0xffffu), __NV_E4M3);
    return __half22float2(*reinterpret_cast<const __half2 *>(&h));
}

/* Lane partial sums of NR MXFP4 (NV false) or NVFP4 (NV true) rows: a
 * 16-byte chunk c is 32 codes; MXFP4's term is (s_c / 2) sum(2v x) with
 * s_c = e8m0(scale byte c), NVFP4's (s_2c sum_{first 16} + s_2c+1
 * sum_{last 16}) / 2 with s = e4m3(scale byte) * gs (one rounding, as the
 * CPU's dequantizer). s[r]: the row's scale bytes. x in the padded layout
 * when xpad (a chunk is one 32-value block). Loads first, as mkc_dot_aff. */
template <bool NV, int NR, bool SX>
__device__ __forceinline__ void mkc_dot_fp4(const uint8_t *const *q, const void *const *s, const float *const *x,
                                            int64_t nchunk, float gs, int lane, float *acc, int xpad) {
    constexpr int U = NR >= 4 ? 1 : 2;
    for (int64_t c0 = lane; c0 < nchunk; c0 += 32 * U) {
        uint4 qq[U][NR];
        mkc_load_chunks<U, NR>(q, c0, nchunk, qq);
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int64_t c = c0 + 32 * u;
            if (c >= nchunk)
                break;
            float xv[32];
#pragma unroll
            for (int r = 0; r < NR; r++) {
                if (r == 0 || !SX)
                    mkc_ldx(x[r] + mkc_xi(c * 32, xpad), 8, xv);
                const uint32_t wd[4] = {qq[u][r].x, qq[u][r].y, qq[u][r].z, qq[u][r].w};
                float a[4] = {0.0f, 0.0f, 0.0f, 0.0f}, b[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                mkc_dot_e2m1(wd[0], xv, a);
                mkc_dot_e2m1(wd[1], xv + 8, a);
                mkc_dot_e2m1(wd[2], xv + 16, NV ? b : a);
                mkc_dot_e2m1(wd[3], xv + 24, NV ? b : a);
                const float da = (a[0] + a[1]) + (a[2] + a[3]);
                if constexpr (NV) {
                    const float db = (b[0] + b[1]) + (b[2] + b[3]);
                    const float2 sc = mkc_e4m3x2f(__ldg((const unsigned short *)s[r] + c));
                    acc[r] += 0.5f * ((sc.x * gs) * da + (sc.y * gs) * db);
                } else {
                    acc[r] += (0.5f * mkc_e8m0f(__ldg((const uint8_t *)s[r] + c))) * da;
                }
            }
        }
    }
}

/* The affine chunk term of one row: lane's 16-byte chunk wd (VPC codes)
 * against x values xv with their sum xs, scale sc and bias bi. */
template <int BITS>
__device__ __forceinline__ float mkc_aff_term(const uint4 &q, const float *xv, float xs, float sc, float bi) {
    const uint32_t wd[4] = {q.x, q.y, q.z, q.w};
    float a[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if constexpr (BITS == 4) {
#pragma unroll
        for (int j = 0; j < 4; j++)
            mkc_dot_nib(wd[j], xv + 8 * j, a);
        const float d = (a[0] + a[1]) + (a[2] + a[3]);
        return (32.0f * sc) * d + fmaf(-16.0f, sc, bi) * xs;
    } else {
#pragma unroll
        for (int j = 0; j < 4; j++)
            mkc_dot_byte(wd[j], xv + 4 * j, a);
        const float d = (a[0] + a[1]) + (a[2] + a[3]);
        return sc * d + bi * xs;
    }
}

/* One lane step of mkc_dot_aff_p: NR rows' chunk (codes qq, scales sc,
 * biases bi) against x[r] from offset xc (the chunk's first value in the
 * layout x is in), added to acc. Also the staged-weight GEMV's
 * (cuda_gemv_kernel.cuh k_gemv_s), so its rows are generation 2's bits. */
template <int BITS, int NR, bool SX>
__device__ __forceinline__ void mkc_aff_chunk_p(const uint4 *qq, const float *sc, const float *bi,
                                                const float *const *x, int64_t xc, float *acc) {
    constexpr int VPC = 128 / BITS;
    /* word by word (8 codes at 4 bits, 4 at 8), all rows per word: only
     * one word's x values live at a time (registers are what limits
     * the warps an SM holds) */
    constexpr int VPW = VPC / 4;
    float a[NR][2], xs[NR];
#pragma unroll
    for (int r = 0; r < NR; r++)
        a[r][0] = a[r][1] = xs[r] = 0.0f;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        float xv[VPW];
#pragma unroll
        for (int r = 0; r < NR; r++) {
            if (r == 0 || !SX) {
                mkc_ldx(x[r] + xc + j * VPW, VPW / 4, xv);
                xs[r] += mkc_sum<VPW>(xv);
            }
            const uint32_t w = j == 0 ? qq[r].x : j == 1 ? qq[r].y : j == 2 ? qq[r].z : qq[r].w;
            if constexpr (BITS == 4) {
                const uint32_t lo = (w << 3) & 0x78787878u, hi = (w >> 1) & 0x78787878u;
                a[r][0] = fmaf(mkc_nibf<0>(lo), xv[0], a[r][0]);
                a[r][1] = fmaf(mkc_nibf<0>(hi), xv[1], a[r][1]);
                a[r][0] = fmaf(mkc_nibf<1>(lo), xv[2], a[r][0]);
                a[r][1] = fmaf(mkc_nibf<1>(hi), xv[3], a[r][1]);
                a[r][0] = fmaf(mkc_nibf<2>(lo), xv[4], a[r][0]);
                a[r][1] = fmaf(mkc_nibf<2>(hi), xv[5], a[r][1]);
                a[r][0] = fmaf(mkc_nibf<3>(lo), xv[6], a[r][0]);
                a[r][1] = fmaf(mkc_nibf<3>(hi), xv[7], a[r][1]);
            } else {
                a[r][0] = fmaf(mkc_byte<0>(w), xv[0], a[r][0]);
                a[r][1] = fmaf(mkc_byte<1>(w), xv[1], a[r][1]);
                a[r][0] = fmaf(mkc_byte<2>(w), xv[2], a[r][0]);
                a[r][1] = fmaf(mkc_byte<3>(w), xv[3], a[r][1]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < NR; r++) {
        const float d = a[r][0] + a[r][1], xsr = xs[SX ? 0 : r];
        if constexpr (BITS == 4)
            acc[r] += (32.0f * sc[r]) * d + fmaf(-16.0f, sc[r], bi[r]) * xsr;
        else
            acc[r] += sc[r] * d + bi[r] * xsr;
    }
}

/* mkc_dot_aff, software-pipelined (kernel generation 2): the next lane
 * step's weights, scales and biases are loaded before the current step is
 * computed, so loads stay in flight while the warp does arithmetic (in
 * generation 1 a warp alternated: all loads, wait, all arithmetic, and the
 * scale loads were a second round trip after the weights). Same terms as
 * mkc_dot_aff, summed in another order (two chains per row, word by word). */
template <int BITS, int SD, int NR, bool SX>
__device__ __forceinline__ void mkc_dot_aff_p(const uint8_t *const *q, const void *const *s,
                                              const void *const *b, const float *const *x,
                                              int64_t nchunk, int gshift, int lane, float *acc, int xpad) {
    constexpr int VPC = 128 / BITS;
    int64_t c = lane;
    if (c >= nchunk)
        return;
    uint4 qq[NR];
    float sc[NR], bi[NR];
#pragma unroll
    for (int r = 0; r < NR; r++) {
        const int64_t g = (c * VPC) >> gshift;
        qq[r] = mkc_ldw((const uint4 *)q[r] + c);
        sc[r] = mkc_lds<SD>(s[r], g);
        bi[r] = mkc_lds<SD>(b[r], g);
    }
    for (;;) {
        const int64_t cn = c + 32;
        const bool more = cn < nchunk;
        uint4 qn[NR];
        float sn[NR], bn[NR];
        if (more) {
            const int64_t g = (cn * VPC) >> gshift;
#pragma unroll
            for (int r = 0; r < NR; r++) {
                qn[r] = mkc_ldw((const uint4 *)q[r] + cn);
                sn[r] = mkc_lds<SD>(s[r], g);
                bn[r] = mkc_lds<SD>(b[r], g);
            }
        } else {
#pragma unroll
            for (int r = 0; r < NR; r++) {
                qn[r] = qq[r];
                sn[r] = sc[r];
                bn[r] = bi[r];
            }
        }
        mkc_aff_chunk_p<BITS, NR, SX>(qq, sc, bi, x, mkc_xi(c * VPC, xpad), acc);
        if (!more)
            break;
        c = cn;
#pragma unroll
        for (int r = 0; r < NR; r++) {
            qq[r] = qn[r];
            sc[r] = sn[r];
            bi[r] = bn[r];
        }
    }
}

/* One affine row's 16-byte chunks held in registers: lane l holds chunks
 * l + 32 u (u < U), with their scales and biases. mkc_prime loads them
 * (weights only: a kernel can do it before its inputs exist, e.g. before
 * griddepcontrol.wait under programmatic dependent launch), mkc_primed_dot
 * sums them against x. Rows of at most 32 U chunks; same terms and order as
 * mkc_dot_aff with NR = 1 (chunk by chunk per lane), so the same bits. */
template <int U> struct mkc_primed {
    uint4 q[U];
    float s[U], b[U];
};

template <int BITS, int SD, int U>
__device__ __forceinline__ void mkc_prime(const mkc_w &w, int64_t row, int lane, mkc_primed<U> &p) {
    constexpr int VPC = 128 / BITS;
    const int64_t nchunk = w.row_bytes / 16, sz = SD == 0 ? 4 : 2;
    const uint8_t *q = w.data + row * w.row_bytes;
    const void *s = (const uint8_t *)w.scales + row * w.ng * sz, *b = (const uint8_t *)w.biases + row * w.ng * sz;
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int64_t c = lane + 32 * u;
        if (c < nchunk) {
            p.q[u] = mkc_ldw((const uint4 *)q + c);
            p.s[u] = mkc_lds<SD>(s, (c * VPC) >> w.gshift);
            p.b[u] = mkc_lds<SD>(b, (c * VPC) >> w.gshift);
        }
    }
}

/* x: plain layout (global or shared memory) */
template <int BITS, int U>
__device__ __forceinline__ float mkc_primed_dot(const mkc_primed<U> &p, int64_t nchunk, const float *x, int lane) {
    constexpr int VPC = 128 / BITS;
    float acc = 0.0f;
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int64_t c = lane + 32 * u;
        if (c < nchunk) {
            float xv[VPC];
            mkc_ldx(x + c * VPC, VPC / 4, xv);
            acc += mkc_aff_term<BITS>(p.q[u], xv, mkc_sum<VPC>(xv), p.s[u], p.b[u]);
        }
    }
    return acc;
}

/* Lane partial sums of NR plain-float rows (SD: 0 f32, 1 bf16, 2 f16).
 * vec: cols allow 16-byte chunks (f32: 4 values, bf16/f16: 8), else one
 * element per lane step. */
template <int SD, int NR, bool SX>
__device__ __forceinline__ void mkc_dot_plain(const uint8_t *const *q, const float *const *x,
                                              int64_t cols, int vec, int lane, float *acc) {
    constexpr int VPC = SD == 0 ? 4 : 8;
    if (vec) {
        const int64_t nchunk = cols / VPC;
        for (int64_t c = lane; c < nchunk; c += 32) {
            uint4 qq[NR];
#pragma unroll
            for (int r = 0; r < NR; r++)
                qq[r] = mkc_ldw((const uint4 *)q[r] + c);
            float xv[8];
#pragma unroll
            for (int r = 0; r < NR; r++) {
                if (r == 0 || !SX)
                    mkc_ldx(x[r] + c * VPC, VPC / 4, xv);
                const uint32_t wd[4] = {qq[r].x, qq[r].y, qq[r].z, qq[r].w};
                float a = 0.0f;
                if constexpr (SD == 0) {
#pragma unroll
                    for (int i = 0; i < 4; i++)
                        a = fmaf(__uint_as_float(wd[i]), xv[i], a);
                } else {
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        float lo = SD == 1 ? mkc_bf16f(wd[i] & 0xffffu) : mkc_f16f(wd[i] & 0xffffu);
                        float hi = SD == 1 ? __uint_as_float(wd[i] & 0xffff0000u) : mkc_f16f(wd[i] >> 16);
                        a = fmaf(lo, xv[2 * i], a);
                        a = fmaf(hi, xv[2 * i + 1], a);
                    }
                }
                acc[r] += a;
            }
        }
    } else {
        for (int64_t c = lane; c < cols; c += 32) {
#pragma unroll
            for (int r = 0; r < NR; r++) {
                float wv;
                if (SD == 0)
                    wv = __ldg((const float *)q[r] + c);
                else if (SD == 1)
                    wv = mkc_bf16f(__ldg((const unsigned short *)q[r] + c));
                else
                    wv = mkc_f16f(__ldg((const unsigned short *)q[r] + c));
                acc[r] = fmaf(wv, x[SX ? 0 : r][c], acc[r]);
            }
        }
    }
}

/* Lane partial sums of NR rows of matrices sharing one kind and shape:
 * row rows[r] of w[r] against x[r] (SX: x[0] for all). Warp-uniform. */
/* LOWP: the FP8 and FP4 kinds are compiled in (the GEMV's); without it
 * (the MoE kernels, which refuse them) their code does not cost the
 * kernel registers. */
template <int NR, bool SX, bool P = false, bool LOWP = false>
__device__ __forceinline__ void mkc_dot_rows(const mkc_w *const *w, const int64_t *rows,
                                             const float *const *x, int lane, float *acc, int xpad = 0) {
    const mkc_w &w0 = *w[0];
    const uint8_t *q[NR];
    const void *s[NR], *b[NR];
#pragma unroll
    for (int r = 0; r < NR; r++) {
        acc[r] = 0.0f;
        q[r] = w[r]->data + rows[r] * w[r]->row_bytes;
        if (mkc_is_aff(w0.kind)) {
            const int64_t sz = mkc_aff_sb(w0.kind);
            s[r] = (const uint8_t *)w[r]->scales + rows[r] * w0.ng * sz;
            b[r] = (const uint8_t *)w[r]->biases + rows[r] * w0.ng * sz;
        } else if (mkc_is_fp8(w0.kind)) { /* the row's block row of scales */
            const int64_t sz = w0.kind == MKC_E4_F32 ? 4 : 2;
            s[r] = (const uint8_t *)w[r]->scales + (rows[r] / w0.br) * w0.nbc * sz;
            b[r] = nullptr;
        } else if (w0.kind == MKC_MX4 || w0.kind == MKC_NV4 || w0.kind == MKC_MX8) { /* a scale byte per 32 / 16 */
            s[r] = (const uint8_t *)w[r]->scales + rows[r] * (w0.cols / (w0.kind == MKC_NV4 ? 16 : 32));
            b[r] = nullptr;
        } else {
            s[r] = b[r] = nullptr;
        }
    }
    const int64_t nchunk = w0.row_bytes / 16;
    switch (w0.kind) {
    case MKC_F32: mkc_dot_plain<0, NR, SX>(q, x, w0.cols, w0.vec, lane, acc); break;
    case MKC_BF16: mkc_dot_plain<1, NR, SX>(q, x, w0.cols, w0.vec, lane, acc); break;
    case MKC_F16: mkc_dot_plain<2, NR, SX>(q, x, w0.cols, w0.vec, lane, acc); break;
#define MKC_AFF(BITS, SD)                                                        \
    do {                                                                         \
        if (P)                                                                   \
            mkc_dot_aff_p<BITS, SD, NR, SX>(q, s, b, x, nchunk, w0.gshift, lane, acc, xpad); \
        else                                                                     \
            mkc_dot_aff<BITS, SD, NR, SX>(q, s, b, x, nchunk, w0.gshift, lane, acc, xpad);   \
    } while (0)
    case MKC_A4_F32: MKC_AFF(4, 0); break;
    case MKC_A4_BF16: MKC_AFF(4, 1); break;
    case MKC_A4_F16: MKC_AFF(4, 2); break;
    case MKC_A8_F32: MKC_AFF(8, 0); break;
    case MKC_A8_BF16: MKC_AFF(8, 1); break;
    case MKC_A8_F16: MKC_AFF(8, 2); break;
#undef MKC_AFF
    case MKC_E4_F32:
        if constexpr (LOWP)
            mkc_dot_fp8<0, NR, SX>(q, s, x, nchunk, w0.cpb, lane, acc);
        break;
    case MKC_E4_BF16:
        if constexpr (LOWP)
            mkc_dot_fp8<1, NR, SX>(q, s, x, nchunk, w0.cpb, lane, acc);
        break;
    case MKC_E4_F16:
        if constexpr (LOWP)
            mkc_dot_fp8<2, NR, SX>(q, s, x, nchunk, w0.cpb, lane, acc);
        break;
    case MKC_MX4:
        if constexpr (LOWP)
            mkc_dot_fp4<false, NR, SX>(q, s, x, nchunk, 1.0f, lane, acc, xpad);
        break;
    case MKC_NV4:
        if constexpr (LOWP)
            mkc_dot_fp4<true, NR, SX>(q, s, x, nchunk, w0.gs, lane, acc, xpad);
        break;
    case MKC_MX8: /* 16 codes a chunk, two chunks a scale */
        if constexpr (LOWP)
            mkc_dot_fp8<3, NR, SX>(q, s, x, nchunk, 2, lane, acc);
        break;
    default: break;
    }
}

/* Copy n floats (n % 4 == 0, 16-byte aligned) from global to shared memory
 * with the whole block; the caller synchronises. */
__device__ __forceinline__ void mkc_stage(float *dst, const float *src, int64_t n) {
    for (int64_t i = threadIdx.x; i < n / 4; i += blockDim.x)
        ((float4 *)dst)[i] = __ldg((const float4 *)src + i);
}

/* mkc_stage into the padded layout (mkc_xi with xpad 4): n % 4 == 0; dst
 * holds MKC_PADDED(n) floats. */
__device__ __forceinline__ void mkc_stage_pad(float *dst, const float *src, int64_t n) {
    for (int64_t i = threadIdx.x; i < n / 4; i += blockDim.x)
        ((float4 *)dst)[i + (i >> 3)] = __ldg((const float4 *)src + i);
}
#define MKC_PADDED(n) ((n) + ((n) >> 5) * 4)

#define MKC_SMEM_MAX (48 * 1024) /* dynamic shared memory without an opt-in */

__device__ __forceinline__ float mkc_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

#include "cuda/cuda_topk.cuh"

#endif
