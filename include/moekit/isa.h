/* The one SIMD switch: which instruction-set path every kernel uses.
 *
 * The matmul kernel tables (src/kernels) and the MLX-exact quantizer
 * (src/quant) both pick their path from mk_isa_active(): the best path this
 * CPU and build support unless a caller forced another with mk_isa_set
 * (tests cover every path this way; the CLI maps MK_KERNELS to it). The
 * library itself reads no environment variable. */
#ifndef MOEKIT_ISA_H
#define MOEKIT_ISA_H

#include <stdbool.h>

#include "moekit/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* In order of preference: the best supported one is the default. Each
 * x86 path needs AVX2's set. avxvnni (the VEX form of the int8 dot
 * products: Intel's Alder Lake and later client CPUs without AVX-512, and
 * recent AVX-512 ones) ranks below avx512, whose float kernels are wider. */
typedef enum mk_isa {
    MK_ISA_REF = 0,    /* portable C */
    MK_ISA_AVX2,       /* AVX2 + FMA + F16C */
    MK_ISA_AVXVNNI,    /* + AVX-VNNI: int8 dot products in one VEX instruction */
    MK_ISA_AVX512,     /* AVX-512 F/BW/VL/DQ + AVX2's set */
    MK_ISA_AVX512VNNI, /* + AVX512-VNNI: int8 dot products in one instruction */
    MK_ISA_AMX,        /* + AMX-TILE/AMX-INT8 with the OS's leave to use them (Linux
                        * arch_prctl): the prefill GEMM's int8 products on tiles;
                        * every other kernel is avx512vnni's */
    MK_ISA_COUNT
} mk_isa;

/* Stable lower-case name ("ref", "avx2", "avxvnni", "avx512",
 * "avx512vnni", "amx"; "?" out of range). */
const char *mk_isa_name(mk_isa isa);
/* The isa named `name`; MK_E_ARG naming the choices if there is none. */
mk_status mk_isa_parse(const char *name, mk_isa *out);
/* Whether this CPU can run `isa` (and this build contains it). For amx the
 * first call asks the kernel for the tile data state (once per process). */
bool mk_isa_supported(mk_isa isa);
/* The path in use: the best supported one unless mk_isa_set chose another. */
mk_isa mk_isa_active(void);
/* Force a path for the whole process (tests, benchmarks, the CLI). Not safe
 * while another thread computes. MK_E_UNSUPPORTED if the CPU lacks it. */
mk_status mk_isa_set(mk_isa isa);

#ifdef __cplusplus
}
#endif
#endif
