/* AVX512-VNNI kernel table (MK_ISA_AVX512VNNI): the AVX-512 table with the
 * int8-activation matvecs of MLX affine 4/8 bits on vpdpbusd, which
 * multiplies unsigned by signed bytes and sums four products straight into
 * int32 lanes: 4 bits drop the madd, 8 bits also the q - 128 shift and the
 * sign trick (no int16 pair sum to overflow), with kern_avx2.c's prepared x.
 * 256-bit vectors (AVX512VL), so the x layout is avx2's; TODO: 512-bit
 * variants (their own layout) and AVX-VNNI (the VEX form) for CPUs without
 * AVX-512. */
#include <pthread.h>

#include "kernels/kern_impl.h"

#ifdef MK_KERN_X86
#include <immintrin.h>

#define MK_T __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

MK_T static inline __m256i q8_dot4_vnni(__m256i lo, __m256i a0, __m256i hi, __m256i a1) {
    return _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), lo, a0), hi, a1);
}
MK_T static inline __m256i q8_dot8_vnni(__m256i q, __m256i a) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), q, a);
}
#define Q8SFX(name) name##_q8vnni
#define MK_Q8_MV_NAME mv_affine_q8vnni
#define MK_Q8_DOT4 q8_dot4_vnni
#define MK_Q8_DOT8 q8_dot8_vnni
#define MK_Q8_SHIFT8 false
MK_T static void mv_affine_q8vnni(const mk_wt *w, int64_t r0, int64_t r1, const float *x, const float *aux,
                                  float *y); /* defined by the body below */
#include "kernels/kern_q8_body.h"

static mk_kern_i g_vnni;
static pthread_once_t g_vnni_once = PTHREAD_ONCE_INIT;

static void vnni_build(void) {
    g_vnni = mk_kern_avx512;
    g_vnni.name = "avx512vnni";
    g_vnni.qmatvec[MK_WF_AFFINE] = mv_affine_q8vnni;
}

const mk_kern_i *mk_kern_avx512vnni(void) {
    pthread_once(&g_vnni_once, vnni_build);
    return &g_vnni;
}

#endif /* MK_KERN_X86 */
