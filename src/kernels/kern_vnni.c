/* VNNI kernel tables: the int8-activation matvecs of MLX affine 4/8 bits
 * (kern_q8_body.h) on vpdpbusd, which multiplies unsigned by signed bytes
 * and sums four products straight into int32 lanes: 4 bits drop the madd,
 * 8 bits also the q - 128 shift and the sign trick (no int16 pair sum to
 * overflow), with kern_avx2.c's prepared x. Two tables:
 *   avx512vnni (MK_ISA_AVX512VNNI): the AVX-512 table with the EVEX form
 *              on 256-bit vectors (AVX512VL);
 *   avxvnni    (MK_ISA_AVXVNNI): the AVX2 table with the VEX form, for
 *              CPUs with AVX-VNNI and no AVX-512.
 * Both use 256-bit vectors, so the x layout is avx2's; TODO: 512-bit
 * variants (their own layout). */
#include <pthread.h>

#include "kernels/kern_impl.h"

#ifdef MK_KERN_X86
#include <immintrin.h>

/* ---- AVX512-VNNI ---------------------------------------------------------- */

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

#undef MK_T
#undef Q8SFX
#undef MK_Q8_MV_NAME
#undef MK_Q8_DOT4
#undef MK_Q8_DOT8
#undef MK_Q8_SHIFT8

/* ---- AVX-VNNI (VEX) ------------------------------------------------------- */

#define MK_T __attribute__((target("avxvnni,avx2,fma,f16c")))

MK_T static inline __m256i q8_dot4_avxvnni(__m256i lo, __m256i a0, __m256i hi, __m256i a1) {
    return _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), lo, a0), hi, a1);
}
MK_T static inline __m256i q8_dot8_avxvnni(__m256i q, __m256i a) {
    return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), q, a);
}
#define Q8SFX(name) name##_q8avxvnni
#define MK_Q8_MV_NAME mv_affine_q8avxvnni
#define MK_Q8_DOT4 q8_dot4_avxvnni
#define MK_Q8_DOT8 q8_dot8_avxvnni
#define MK_Q8_SHIFT8 false
MK_T static void mv_affine_q8avxvnni(const mk_wt *w, int64_t r0, int64_t r1, const float *x, const float *aux,
                                     float *y); /* defined by the body below */
#include "kernels/kern_q8_body.h"

/* ---- the tables, built on first use ------------------------------------------ */

static mk_kern_i g_vnni, g_avxvnni;
static pthread_once_t g_vnni_once = PTHREAD_ONCE_INIT;

static void vnni_build(void) {
    g_vnni = mk_kern_avx512;
    g_vnni.name = "avx512vnni";
    g_vnni.qmatvec[MK_WF_AFFINE] = mv_affine_q8vnni;
    g_avxvnni = mk_kern_avx2;
    g_avxvnni.name = "avxvnni";
    g_avxvnni.qmatvec[MK_WF_AFFINE] = mv_affine_q8avxvnni;
}

const mk_kern_i *mk_kern_avx512vnni(void) {
    pthread_once(&g_vnni_once, vnni_build);
    return &g_vnni;
}

const mk_kern_i *mk_kern_avxvnni(void) {
    pthread_once(&g_vnni_once, vnni_build);
    return &g_avxvnni;
}

#endif /* MK_KERN_X86 */
