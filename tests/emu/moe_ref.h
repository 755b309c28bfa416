/* moe_ref.c's interface to the MoE-step emulation (C and C++). */
#ifndef MK_TESTS_EMU_MOE_REF_H
#define MK_TESTS_EMU_MOE_REF_H

#include <stdbool.h>
#include <stdint.h>

#include "moekit/weight.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One MoE layer's host weights: router [E, H] (affine 8-bit g64 bf16),
 * experts stacked gate/up [E*I, H], down [E*H, I] (affine `bits` g64 bf16,
 * or bf16 when bits is 16), optional shared expert [Is] and its gate. */
typedef struct emu_layer {
    int64_t H, E, k, I, Is;
    bool sigmoid, norm, shared, shared_gate;
    float scale;
    int G, TG;
    float *bias; /* [E] or NULL */
    void *router, *gate, *up, *down, *sg, *su, *sd, *sgw; /* ct_wt */
    int rbits;    /* the router's bits (0: 8) */
    bool sgw_aff; /* the shared expert's gate row affine 8-bit (else bf16) */
} emu_layer;

void emu_layer_make(emu_layer *L, int bits);
void emu_layer_free(emu_layer *L);
const mk_wt *emu_wt(const void *t);
/* The reference y = moe(x) in double (backend.h's routing, SwiGLU, the
 * weighted combine, the shared expert), its chosen experts in order, and
 * whether the choice is clear of near-ties (1e-4 relative). */
bool emu_layer_ref(const emu_layer *L, const float *x, double *y, int32_t *idx);
float emu_rand(float lo, float hi);
/* Row r of weight t times x in double, and the bound's sum (cuda_test_util.h ct_dot's cond) */
double emu_rdot_cond(const void *t, int64_t r, const double *x, double *cond);

#ifdef __cplusplus
}
#endif
#endif
