/* Class weights of the allocation objective (`quantize --class-weights`):
 * the usage of every chosen tensor multiplied by a factor of its module
 * class, so the allocator spends bits where a unit of relative weight error
 * costs the most output quality rather than where it is largest.
 *
 * Classes (by module path): embed (embed_tokens), lm_head, attn
 * (self_attn / linear_attn / attn projections), down (any down_proj:
 * routed, shared or dense), shared (shared expert gate/up), other
 * (everything else: routed gate/up, dense gate/up).
 *
 * Why: the objective sum(u * err * params) treats a unit of relative error
 * alike in every module. Measured on tiny-qwen35moe (bench/RESULTS.md,
 * "4-bit quality beyond MLX's"), one class at a time quantized to 4 bits
 * (gptq-mse) with everything else at 8, the KL added per unit of that
 * objective was, relative to routed gate/up projections: embedding 1.07,
 * lm_head 0.13, attention and linear-attention projections 2.1, shared
 * expert 0.65, routed down_proj 2.2 (measured on held-out text other than
 * the evaluation's). "learned" is those rounded: attn 2, down 2, lm_head
 * 1/8, shared 0.65, other 1; embed 2, not 1: once profile --hessian gave
 * every module its own statistics (layers 1-3's attention and lm_head had
 * had an earlier module's) and with gptq-opt, embed 2 took the calibration
 * text's KL at 4.6 bpw from 0.0578 to 0.0521 (embed 3 and 4 allocate the
 * same; lm_head 1/16 and attn 3 did not help), chosen on that text, not the
 * evaluation's. Routers and float tensors are fixed and unaffected. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "profile/profile_impl.h"

enum { C_EMBED, C_HEAD, C_ATTN, C_DOWN, C_SHARED, C_OTHER, C_N };
static const char *const k_class[C_N] = {"embed", "lm_head", "attn", "down", "shared", "other"};
static const double k_learned[C_N] = {2.0, 0.125, 2.0, 2.0, 0.65, 1.0};

static int class_of(const char *n) {
    if (strstr(n, "embed_tokens"))
        return C_EMBED;
    if (strstr(n, "lm_head"))
        return C_HEAD;
    if (strstr(n, ".self_attn.") || strstr(n, ".linear_attn.") || strstr(n, ".attn."))
        return C_ATTN;
    if (strstr(n, "down_proj"))
        return C_DOWN;
    if (strstr(n, ".shared_expert.") || strstr(n, ".shared_experts."))
        return C_SHARED;
    return C_OTHER;
}

/* "class=F,class=F" over the defaults f[]; false on junk. */
static bool parse(const char *s, double *f) {
    char buf[256];
    if (strlen(s) >= sizeof buf)
        return false;
    strcpy(buf, s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq)
            return false;
        *eq = 0;
        char *end;
        double v = strtod(eq + 1, &end);
        if (*end || end == eq + 1 || !(v >= 0) || v > 1e6)
            return false;
        int c = -1;
        for (int k = 0; k < C_N; k++)
            if (!strcmp(tok, k_class[k]))
                c = k;
        if (c < 0)
            return false;
        f[c] = v;
    }
    return true;
}

mk_status mk_prof_class_weights(mk_prof *p, const char *name) {
    if (!p || !name)
        return mk_err(MK_E_ARG, "class weights: no profile or name");
    double f[C_N];
    for (int k = 0; k < C_N; k++)
        f[k] = 1.0;
    if (!strcmp(name, "none"))
        return MK_OK;
    if (!strcmp(name, "learned"))
        memcpy(f, k_learned, sizeof f);
    else if (!parse(name, f))
        return mk_err(MK_E_ARG,
                      "--class-weights '%s': expected none, learned or CLASS=FACTOR,... with CLASS one of embed, "
                      "lm_head, attn, down, shared, other",
                      name);
    for (size_t i = 0; i < p->n; i++)
        if (p->t[i].kind == MK_PROF_EXPERT || p->t[i].kind == MK_PROF_LINEAR)
            p->t[i].usage *= f[class_of(p->t[i].name)];
    return MK_OK;
}
