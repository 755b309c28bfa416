/* The one SIMD switch (isa.h): CPU feature checks and the process-wide
 * choice, read by the kernel tables and the quantizer. */
#include <string.h>

#include "moekit/isa.h"

static const char *const g_names[MK_ISA_COUNT] = {"ref", "avx2", "avxvnni", "avx512", "avx512vnni"};
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
    return mk_err(MK_E_ARG, "unknown kernel path '%s': expected ref, avx2, avxvnni, avx512 or avx512vnni",
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
