/* The one SIMD switch (isa.h): CPU feature checks and the process-wide
 * choice, read by the kernel tables and the quantizer. */
#include <string.h>

#include "moekit/isa.h"

#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

static const char *const g_names[MK_ISA_COUNT] = {"ref", "avx2", "avxvnni", "avx512", "avx512vnni", "amx"};
static int g_isa = -1; /* chosen mk_isa; -1 until first use */

#if defined(__x86_64__) || defined(__i386__)
#define MK_ISA_X86 1
#include <cpuid.h>

/* AVX-VNNI: CPUID leaf 7 sub-leaf 1, EAX bit 4 (the compilers' feature
 * builtins do not all name it). The OS's saving of the YMM state is what
 * the AVX2 check already asked. */
static bool cpu_avxvnni(void) {
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7)
        return false;
    __cpuid_count(7, 1, a, b, c, d);
    (void)b, (void)c, (void)d;
    return (a >> 4) & 1;
}

#if defined(__x86_64__) && defined(__linux__)
/* AMX-TILE and AMX-INT8 (CPUID leaf 7, EDX bits 24 and 25), the OS saving
 * the tile state (XCR0 bits 17 and 18), and Linux's leave to use the tile
 * data (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA, since 5.16:
 * without it the first tile instruction raises SIGILL). Asked once; the
 * answer is kept. The leave is process-wide and grows each signal frame by
 * the 8 KiB of tile data (nothing here uses an alternate signal stack). */
static bool cpu_amx_ask(void) {
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7)
        return false;
    __cpuid_count(7, 0, a, b, c, d);
    if (!((d >> 24) & 1) || !((d >> 25) & 1))
        return false;
    __cpuid(1, a, b, c, d);
    if (!((c >> 27) & 1)) /* OSXSAVE: xgetbv may run */
        return false;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    if (((lo >> 17) & 3) != 3)
        return false;
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
}

static bool cpu_amx(void) {
    static int known = -1; /* -1 unknown, else the answer; racing first callers ask twice, harmlessly */
    int k = __atomic_load_n(&known, __ATOMIC_ACQUIRE);
    if (k < 0) {
        k = cpu_amx_ask();
        __atomic_store_n(&known, k, __ATOMIC_RELEASE);
    }
    return k;
}
#else
static bool cpu_amx(void) {
    return false;
}
#endif
#endif

const char *mk_isa_name(mk_isa isa) {
    return (unsigned)isa < MK_ISA_COUNT ? g_names[isa] : "?";
}

mk_status mk_isa_parse(const char *name, mk_isa *out) {
    for (int i = 0; i < MK_ISA_COUNT; i++)
        if (name && !strcmp(name, g_names[i])) {
            *out = (mk_isa)i;
            return MK_OK;
        }
    return mk_err(MK_E_ARG, "unknown kernel path '%s': expected ref, avx2, avxvnni, avx512, avx512vnni or amx",
                  name ? name : "");
}

bool mk_isa_supported(mk_isa isa) {
    switch (isa) {
    case MK_ISA_REF: return true;
#ifdef MK_ISA_X86
    case MK_ISA_AVX2:
        __builtin_cpu_init();
        /* F16C comes with every AVX2 CPU (and clang's builtin cannot name it) */
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case MK_ISA_AVXVNNI: return mk_isa_supported(MK_ISA_AVX2) && cpu_avxvnni();
    case MK_ISA_AVX512:
        __builtin_cpu_init();
        return mk_isa_supported(MK_ISA_AVX2) && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512dq");
    case MK_ISA_AVX512VNNI:
        __builtin_cpu_init();
        return mk_isa_supported(MK_ISA_AVX512) && __builtin_cpu_supports("avx512vnni");
    case MK_ISA_AMX: return mk_isa_supported(MK_ISA_AVX512VNNI) && cpu_amx();
#endif
    default: return false;
    }
}

mk_isa mk_isa_active(void) {
    int isa = __atomic_load_n(&g_isa, __ATOMIC_ACQUIRE);
    if (isa < 0) { /* idempotent: racing first callers agree */
        isa = MK_ISA_REF;
        for (int i = MK_ISA_COUNT - 1; i > 0; i--)
            if (mk_isa_supported((mk_isa)i)) {
                isa = i;
                break;
            }
        __atomic_store_n(&g_isa, isa, __ATOMIC_RELEASE);
    }
    return (mk_isa)isa;
}

mk_status mk_isa_set(mk_isa isa) {
    if (!mk_isa_supported(isa))
        return mk_err(MK_E_UNSUPPORTED, "kernels: %s is not supported on this CPU", mk_isa_name(isa));
    __atomic_store_n(&g_isa, (int)isa, __ATOMIC_RELEASE);
    return MK_OK;
}
