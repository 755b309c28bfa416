/* Class weights of the allocation objective (`quantize --class-weights`):
 * the usage of every chosen tensor multiplied by a factor of its module
 * class, so the allocator spends bits where a unit of relative weight error
 * costs the most output quality rather than where it is largest.
 *
 * Why: the objective sum(u * err * params) treats a unit of relative error
 * alike in every module. Measured on tiny-qwen35moe (bench/RESULTS.md,
 * "4-bit quality beyond MLX's"), one class at a time quantized to 4 bits
 * (gptq-mse) with everything else at 8, the KL added per unit of that
 * objective was, relative to routed gate/up projections: embedding 1.07,
 * lm_head 0.13, attention and linear-attention projections 2.1, shared
 * expert 0.65, routed down_proj 2.2 (measured on held-out text other than
 * the evaluation's). "learned" rounds those: attention 2, down_proj 2
 * (routed, shared or dense MLP), lm_head 1/8, shared expert gate/up 0.65,
 * everything else 1. Routers and float tensors are fixed and unaffected. */
#include <string.h>

#include "profile/profile_impl.h"

static double learned(const mk_prof_tensor *t) {
    const char *n = t->name;
    if (strstr(n, "lm_head"))
        return 0.125;
    if (strstr(n, ".self_attn.") || strstr(n, ".linear_attn.") || strstr(n, ".attn."))
        return 2.0;
    if (strstr(n, "down_proj"))
        return 2.0;
    if (strstr(n, ".shared_expert.") || strstr(n, ".shared_experts."))
        return 0.65;
    return 1.0;
}

mk_status mk_prof_class_weights(mk_prof *p, const char *name) {
    if (!p || !name)
        return mk_err(MK_E_ARG, "class weights: no profile or name");
    if (!strcmp(name, "none"))
        return MK_OK;
    if (strcmp(name, "learned"))
        return mk_err(MK_E_ARG, "--class-weights '%s': expected none or learned", name);
    for (size_t i = 0; i < p->n; i++)
        if (p->t[i].kind == MK_PROF_EXPERT || p->t[i].kind == MK_PROF_LINEAR)
            p->t[i].usage *= learned(&p->t[i]);
    return MK_OK;
}
