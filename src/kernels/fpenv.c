/* Subnormal flushing for a scope of float work (kernels.h
 * mk_fp_flush_subnormals): the control register's flush bits are set on
 * entry and the caller's value put back on exit. */
#include "moekit/kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>

#define MK_MXCSR_DAZ 0x0040u /* subnormal inputs read as zero */
#define MK_MXCSR_FTZ 0x8000u /* subnormal results written as zero */

mk_fpmode mk_fp_flush_subnormals(void) {
    unsigned v = _mm_getcsr();
    _mm_setcsr(v | MK_MXCSR_DAZ | MK_MXCSR_FTZ);
    return (mk_fpmode){v};
}

void mk_fp_restore(mk_fpmode m) {
    _mm_setcsr((unsigned)m.saved);
}

#elif defined(__aarch64__)

#define MK_FPCR_FZ (1ull << 24) /* flush subnormal inputs and results to zero */

mk_fpmode mk_fp_flush_subnormals(void) {
    uint64_t v;
    __asm__ volatile("mrs %0, fpcr" : "=r"(v));
    __asm__ volatile("msr fpcr, %0" ::"r"(v | MK_FPCR_FZ));
    return (mk_fpmode){v};
}

void mk_fp_restore(mk_fpmode m) {
    __asm__ volatile("msr fpcr, %0" ::"r"(m.saved));
}

#else

mk_fpmode mk_fp_flush_subnormals(void) {
    return (mk_fpmode){0};
}

void mk_fp_restore(mk_fpmode m) {
    (void)m;
}

#endif
