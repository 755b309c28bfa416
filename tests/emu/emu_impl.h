// What src/cuda/cuda_impl.cuh gives the kernels (float4, make_float4, min/max, mkc_warp_sum,
// MKC_DYN_SMEM under MK_CUDA_EMU, mkc_pdl_enter, mkc_prefetch_line, mkc_cp_async), for the host emulations that run without
// the CUDA toolkit's headers, which that header needs (attention, GDN).
// Keep the two alike.
#ifndef MK_TESTS_EMU_IMPL_H
#define MK_TESTS_EMU_IMPL_H

#include "cuda_emu.h"

struct alignas(16) float4 {
    float x, y, z, w;
};
inline float mkc_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
inline float4 make_float4(float x, float y, float z, float w) {
    return float4{x, y, z, w};
}
/* the device's integer min and max (CUDA's overloads) */
template <class T> inline T min(T a, T b) {
    return a < b ? a : b;
}
template <class T> inline T max(T a, T b) {
    return a < b ? b : a;
}
#ifndef __host__
#define __host__
#endif
#define MKC_DYN_SMEM(T, name) T *const name = (T *)emu_dyn_smem
inline void mkc_pdl_enter() {} /* the emulation runs kernels one after another */
inline void mkc_prefetch_line(const void *) {}
/* cp.async: the emulation copies at once (cuda_impl.cuh's emulated form) */
template <int BYTES> inline void mkc_cp_async(void *dst, const void *src, bool valid) {
    if (valid)
        std::memcpy(dst, src, BYTES);
    else
        std::memset(dst, 0, BYTES);
}
inline void mkc_cp_commit() {}
template <int N> inline void mkc_cp_wait() {}

#endif
