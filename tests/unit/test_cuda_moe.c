/* The fused CUDA MoE decode step (mk_cuda_moe_step) against a CPU MoE built
 * from the reference dequantizer.
 *
 * Without a usable GPU every device case skips and prints why; the shape
 * and format validation case runs whenever moekit was built with CUDA.
 *
 * Reference, all in double over mk_wt_dequant_row rows: logits = router x;
 * scores = softmax(logits) or sigmoid(logits); top-k, lowest index first on
 * ties (as src/engine/forward.c); w = s_top / sum (when norm_topk; +1e-20
 * for sigmoid) * scale; h_j = silu(gate_e x) * up_e x; y = sum_j w_j down_e
 * h_j + g_s * shared_down(silu(shared_gate x) * shared_up x), g_s =
 * sigmoid(shared_expert_gate x) or 1. DeepSeek-V3's routing (sigmoid with
 * a selection bias and a group limit): the experts are the top-k of the
 * choice c = s + bias after all but the topk_group best groups (by the sum
 * of their two best c) are set to 0; the weights are the unbiased s.
 *
 * Checks: (1) the device's routing (mk_cuda_moe_routing) selects the same
 * experts in the same order as the reference; inputs are drawn so that the
 * k-th and (k+1)-th scores (choices; and the kept groups' scores) differ
 * by > 1e-4 relative (a redraw otherwise:
 * a near-tie is decided by rounding, on the CPU as on the GPU, and is not
 * what this test is about); (2) its weights are within the propagated bound
 * below; (3) every element of y (poisoned with NaN bytes before the step,
 * or holding a known residual when accumulating) is within
 *   bound_o = sum_j [ |w_j| * e_dot_j + dw_j * |dot_j| ] + shared term
 *             + 1e-6 * sum |terms|
 * where e_dot = sum_c |D_c| eh_c + 1e-5 * sum_c a_c (|h_c| + eh_c) is the
 * GEMV bound of test_cuda_gemv.c (a_c as there; 1e-5 here, not 5e-6, as the
 * inputs themselves carry error) applied to the down row with h's
 * own error eh_c propagated from the gate/up GEMV bounds through SwiGLU
 * (Lipschitz constant of silu <= 1.1), dw_j = |w_j| (4 max_e dl_e + 1e-6)
 * with dl_e = 1e-5 * sum_c a_ec |x_c| the logit bound (softmax
 * and the renormalisation at most double the relative error twice), and the
 * shared gate's error is 0.25 dl_s (sigmoid' <= 1/4). A wrong expert, row,
 * weight or group is orders of magnitude above the bound.
 *
 * Cases: odd small shapes for each option (softmax + norm, sigmoid without
 * norm with a scale, shared expert with and without its gate, router and
 * shared gate in formats other than the experts', 4- and 8-bit experts,
 * accumulate into a residual), the same through the persistent one-launch
 * stack (mk_cuda_stack, one layer), and one full-size Qwen3-30B-A3B layer
 * (H 2048, 128 experts, top-8, I 768, 4-bit g64) both ways. */
#include "mk_test_util.h"

#include "cuda_test_util.h"
#include "kernels/kern_impl.h"

typedef struct mcase {
    const char *name;
    int64_t H, E, k, I, Is;
    int bits, group;
    mk_dtype sd;
    mk_cuda_score score;
    bool norm;
    float scale;
    bool shared, shared_gate;
    int router_fmt; /* 0: affine 8-bit g64 bf16, 1: bf16, 2: same as experts */
    bool accumulate;
    bool stack; /* run through mk_cuda_stack (one layer; x += moe(x)) instead of mk_cuda_moe_step */
    int groups, topk_groups; /* DeepSeek-V3's group limit (0: none) */
    float bias_amp;          /* selection bias drawn in +-bias_amp (0: none) */
} mcase;

static const mcase g_cases[] = {
    {"qwen3-moe-like 4bit g64 bf16, router 8bit", 320, 20, 4, 192, 0, 4, 64, MK_DT_BF16, MK_CUDA_SCORE_SOFTMAX,
     true, 1.0f, false, false, 0, false, false, 0, 0, 0.0f},
    {"qwen3.5-like shared+gate 4bit g64 f16, accumulate", 256, 40, 8, 64, 128, 4, 64, MK_DT_F16,
     MK_CUDA_SCORE_SOFTMAX, true, 1.0f, true, true, 1, true, false, 0, 0, 0.0f},
    {"sigmoid no-norm scale 2.5, 8bit g32, shared no gate", 224, 33, 5, 96, 64, 8, 32, MK_DT_BF16,
     MK_CUDA_SCORE_SIGMOID, false, 2.5f, true, false, 2, false, false, 0, 0, 0.0f},
    {"softmax no-norm 8bit g64 f32, k=1", 192, 7, 1, 128, 0, 8, 64, MK_DT_F32, MK_CUDA_SCORE_SOFTMAX, false, 1.0f,
     false, false, 2, false, false, 0, 0, 0.0f},
    {"stack: qwen3.5-like shared+gate 4bit g64 f16", 256, 40, 8, 64, 128, 4, 64, MK_DT_F16, MK_CUDA_SCORE_SOFTMAX,
     true, 1.0f, true, true, 1, true, true, 0, 0, 0.0f},
    {"stack: sigmoid no-norm scale 2.5, 8bit g32", 224, 33, 5, 96, 64, 8, 32, MK_DT_BF16, MK_CUDA_SCORE_SIGMOID,
     false, 2.5f, true, false, 2, true, true, 0, 0, 0.0f},
    {"stack: Qwen3-30B-A3B layer 4bit g64 bf16", 2048, 128, 8, 768, 0, 4, 64, MK_DT_BF16, MK_CUDA_SCORE_SOFTMAX,
     true, 1.0f, false, false, 2, true, true, 0, 0, 0.0f},
    {"Qwen3-30B-A3B layer 4bit g64 bf16", 2048, 128, 8, 768, 0, 4, 64, MK_DT_BF16, MK_CUDA_SCORE_SOFTMAX, true,
     1.0f, false, false, 2, false, false, 0, 0, 0.0f},
    {"deepseek-v3-like: bias, 8 groups keep 3, shared, 4bit", 256, 64, 6, 128, 192, 4, 64, MK_DT_BF16,
     MK_CUDA_SCORE_SIGMOID, true, 2.5f, true, false, 1, true, false, 8, 3, 0.3f},
    {"kimi-k2-like: bias, one group, 8bit g32", 192, 48, 8, 64, 64, 8, 32, MK_DT_BF16, MK_CUDA_SCORE_SIGMOID,
     true, 2.827f, true, false, 2, false, false, 1, 1, 0.3f},
    {"stack: deepseek-v3-like bias, 4 groups keep 2, 8bit", 256, 32, 4, 64, 64, 8, 64, MK_DT_BF16,
     MK_CUDA_SCORE_SIGMOID, true, 2.5f, true, false, 2, true, true, 4, 2, 0.3f},
};

typedef struct layer {
    ct_wt router, gate, up, down, sg, su, sd, sgw;
} layer;

static ct_wt mat(const mcase *c, int64_t rows, int64_t cols, float amp) {
    return ct_affine(rows, cols, c->bits, c->group, c->sd, amp);
}

static double silu(double g) {
    return g / (1.0 + exp(-g));
}

/* The top-k of s[0..n) into idx, descending, lowest index first on ties
 * (as the CPU engine's routing). */
static void top_k(const double *s, int64_t n, int64_t k, int32_t *idx) {
    for (int64_t j = 0; j < k; j++) {
        int32_t best = -1;
        for (int64_t e = 0; e < n; e++) {
            bool taken = false;
            for (int64_t q = 0; q < j; q++)
                taken |= idx[q] == e;
            if (!taken && (best < 0 || s[e] > s[best]))
                best = (int32_t)e;
        }
        idx[j] = best;
    }
}

/* top_k, and whether every step of its order is clear: the k chosen
 * values apart by > 1e-4 relative from each other and from the best one
 * left out (see the header). */
static bool top_k_clear(const double *s, int64_t n, int64_t k, int32_t *idx) {
    top_k(s, n, k, idx);
    double next = -INFINITY; /* best value outside the top-k */
    for (int64_t e = 0; e < n; e++) {
        bool taken = false;
        for (int64_t q = 0; q < k; q++)
            taken |= idx[q] == e;
        if (!taken && s[e] > next)
            next = s[e];
    }
    bool clear = k == n || (s[idx[k - 1]] - next) > 1e-4 * fabs(s[idx[k - 1]]);
    for (int64_t j = 1; j < k; j++)
        clear &= (s[idx[j - 1]] - s[idx[j]]) > 1e-4 * fabs(s[idx[j - 1]]);
    return clear;
}

/* reference row dot and its error scale (cond) for a double input */
static double rdot(const ct_wt *t, int64_t r, const double *x, float *buf, double *cond) {
    return ct_dot(t, r, x, buf, cond);
}

/* Half the int8 step of value c's block of h (blocks of 32 from h): at
 * most (max over the block of |h| + its bound e) / 254 */
static double qhalf(const double *h, const double *e, int64_t c) {
    const int64_t b0 = c / 32 * 32;
    double m = 0.0;
    for (int64_t i = b0; i < b0 + 32; i++)
        m = fmax(m, fabs(h[i]) + e[i]);
    return m / 254.0 * (1.0 + 1e-6);
}

/* Diagnosis of a failed cache control: the largest |y - y(h)| over the
 * outputs, y(h) the down products of the downloaded h (quantized as the
 * int8 rule quantizes it when q8) with the device's routing weights w and
 * experts sel: which h the down kernel summed */
static double y_from_h_gap(const ct_wt *down, const float *hv, const float *w, const int32_t *sel, int64_t k,
                           int64_t I, int64_t H, bool q8, const float *y) {
    float *hq = malloc((size_t)(k * I) * 4), *buf = malloc((size_t)I * 4), *d = malloc((size_t)(k * I / 32 + 1) * 4);
    float *qs = malloc((size_t)(k * I / 32 + 1) * 4);
    int8_t *q = malloc((size_t)(k * I));
    assert_true(hq && buf && d && qs && q);
    if (q8) {
        mk_q8_quant_blocks(hv, k * I, 32, q, d, qs);
        for (int64_t t = 0; t < k * I; t++)
            hq[t] = (float)((double)q[t] * (double)d[t / 32]);
    } else {
        memcpy(hq, hv, (size_t)(k * I) * 4);
    }
    double gap = 0.0;
    for (int64_t o = 0; o < H; o++) {
        double r = 0.0;
        for (int64_t j = 0; j < k; j++) {
            mk_wt_dequant_row(&down->w, (int64_t)sel[j] * H + o, buf);
            double dd = 0.0;
            for (int64_t c = 0; c < I; c++)
                dd += (double)buf[c] * hq[j * I + c];
            r += (double)w[j] * dd;
        }
        gap = fmax(gap, fabs((double)y[o] - r));
    }
    free(hq), free(buf), free(d), free(qs), free(q);
    return gap;
}

/* One step on y = dy: dy set to y0 (accumulate) or NaN first, the result
 * downloaded into out */
static void step_once(const mcase *c, const mk_cuda_moe *m, mk_cuda_moe_ws *ws, void *dx, void *dy,
                      const float *y0, float *out, int64_t H) {
    if (c->accumulate)
        CT_OK(mk_cuda_upload(dy, y0, (size_t)H * 4));
    else
        CT_OK(mk_cuda_memset(dy, 0xff, (size_t)H * 4));
    CT_OK(mk_cuda_moe_step(m, ws, dx, dy, c->accumulate, NULL));
    CT_OK(mk_cuda_sync());
    CT_OK(mk_cuda_download(out, dy, (size_t)H * 4));
}

/* A host stack of n experts of view w (R rows each): expert ids[s] at slot s. */
static mk_wt pool_of(const mk_wt *w, int64_t R, const int32_t *ids, int n) {
    mk_wt one = *w;
    one.rows = R;
    const size_t nd = (size_t)R * mk_wt_row_bytes(w), ns = mk_wt_scale_bytes(&one);
    mk_wt p = *w;
    p.rows = R * n;
    char *d = malloc(nd * (size_t)n), *s = w->scales && ns ? malloc(ns * (size_t)n) : NULL;
    char *b = w->biases && ns ? malloc(ns * (size_t)n) : NULL;
    assert_non_null(d);
    for (int i = 0; i < n; i++) {
        memcpy(d + (size_t)i * nd, (const char *)w->data + (size_t)ids[i] * nd, nd);
        if (s)
            memcpy(s + (size_t)i * ns, (const char *)w->scales + (size_t)ids[i] * ns, ns);
        if (b)
            memcpy(b + (size_t)i * ns, (const char *)w->biases + (size_t)ids[i] * ns, ns);
    }
    p.data = d;
    p.scales = s;
    p.biases = b;
    return p;
}

static void pool_free(mk_wt *p) {
    free((void *)p->data);
    free((void *)p->scales);
    free((void *)p->biases);
}

/* The step with experts in a VRAM cache (mk_cuda_moe.slot_of, as the CUDA
 * backend keeps the hottest experts of layers in host memory): every other
 * chosen expert and one not chosen in cache slots (in another order than
 * their ids), y bitwise the step's without the cache, twice, and the
 * routing counts 2 for each chosen expert, 0 for the others; the controls,
 * one per part: the gate, up or down slot of a chosen expert holding the
 * next expert's bytes changes y, so each kernel reads the slots. That slot
 * (slot 0) holds the choice of the largest routing weight wref: a softmax
 * over logits of a few units apart can leave the last choice a weight
 * under 1e-8, whose expert's bytes cannot change y's float32 bits (the int8
 * case's first x did: its control read as "not read"). */
static void check_cache(const mcase *c, const layer *L, const mk_cuda_moe *m, mk_cuda_moe_ws *ws, void *dx,
                        void *dy, const float *y0, const float *y, const int32_t *sel, const double *wref) {
    const int64_t H = c->H, E = c->E, k = c->k, I = c->I;
    int32_t ids[40];
    int n = 0;
    int64_t jmax = 0;
    for (int64_t j = 1; j < k; j++)
        jmax = fabs(wref[j]) > fabs(wref[jmax]) ? j : jmax;
    ids[n++] = sel[jmax];
    for (int64_t j = k - 1 - ((k - 1 - jmax) & 1); j >= 0; j -= 2) /* jmax's parity: every other choice */
        if (j != jmax)
            ids[n++] = sel[j];
    for (int32_t e = 0; e < E; e++) {
        bool chosen = false;
        for (int64_t j = 0; j < k; j++)
            chosen |= sel[j] == e;
        if (!chosen) {
            ids[n++] = e;
            break;
        }
    }
    int32_t *slot = malloc((size_t)E * 4), *cnt = malloc((size_t)E * 4);
    float *y3 = malloc((size_t)H * 4);
    /* h of the cached step (control 0) and of a control, to tell which kernel missed its slot */
    const int64_t nh = k * I + (c->shared ? c->Is : 0);
    float *h0 = malloc((size_t)nh * 4), *h1 = malloc((size_t)nh * 4);
    assert_true(slot && cnt && y3 && h0 && h1);
    for (int64_t e = 0; e < E; e++)
        slot[e] = -1;
    for (int s = 0; s < n; s++)
        slot[ids[s]] = s;
    void *dslot, *dcnt;
    CT_OK(mk_cuda_malloc(&dslot, (size_t)E * 4, "slot map"));
    CT_OK(mk_cuda_malloc(&dcnt, (size_t)E * 4, "routing counts"));
    CT_OK(mk_cuda_upload(dslot, slot, (size_t)E * 4));
    CT_OK(mk_cuda_memset(dcnt, 0, (size_t)E * 4));
    for (int control = 0; control < 4; control++) {
        /* control 1..3: slot 0 (a chosen expert) of part control-1 holds the next expert's bytes */
        int32_t pid[40];
        memcpy(pid, ids, sizeof pid);
        pid[0] = (ids[0] + 1) % (int32_t)E;
        mk_wt hp[3] = {pool_of(&L->gate.w, I, control == 1 ? pid : ids, n),
                       pool_of(&L->up.w, I, control == 2 ? pid : ids, n),
                       pool_of(&L->down.w, H, control == 3 ? pid : ids, n)};
        mk_cuda_moe mc = *m;
        CT_OK(mk_cuda_wt_upload(&hp[0], &mc.cgate, "cache gate"));
        CT_OK(mk_cuda_wt_upload(&hp[1], &mc.cup, "cache up"));
        CT_OK(mk_cuda_wt_upload(&hp[2], &mc.cdown, "cache down"));
        CT_OK(mk_cuda_sync());
        mc.slot_of = (const int32_t *)dslot;
        mc.counts = control ? NULL : (int32_t *)dcnt;
        for (int rep = 0; rep < (control ? 1 : 2); rep++) {
            step_once(c, &mc, ws, dx, dy, y0, y3, H);
            const bool same = memcmp(y, y3, (size_t)H * 4) == 0;
            if (!control && !same)
                fail_msg("%s: experts read from a VRAM cache changed y", c->name);
            if (!control) { /* each choice's slot (the router's loc): its expert's, -1 for the uncached */
                int32_t gi[32], lc[32];
                float gwt[32];
                CT_OK(mk_cuda_moe_routing(ws, gi, gwt));
                CT_OK(mk_cuda_moe_cache_slots(ws, lc));
                for (int64_t j = 0; j < k; j++)
                    if (lc[j] != slot[gi[j]])
                        fail_msg("%s: choice %lld (expert %d) read cache slot %d, its slot is %d", c->name,
                                 (long long)j, gi[j], lc[j], slot[gi[j]]);
                CT_OK(mk_cuda_moe_activations(ws, h0, c->shared ? h0 + k * I : NULL));
            }
            if (control && same) { /* which kernel missed the slot, and whether the MoE's PDL is the cause */
                int32_t lc[32];
                CT_OK(mk_cuda_moe_cache_slots(ws, lc));
                CT_OK(mk_cuda_moe_activations(ws, h1, c->shared ? h1 + k * I : NULL));
                const bool hsame = memcmp(h0, h1, (size_t)nh * 4) == 0;
                int64_t nd = 0, first = -1, last = -1;
                for (int64_t t = 0; t < nh; t++)
                    if (memcmp(h0 + t, h1 + t, 4)) {
                        nd++, last = t;
                        first = first < 0 ? t : first;
                    }
                int32_t gi[32];
                float gwt[32];
                CT_OK(mk_cuda_moe_routing(ws, gi, gwt));
                const bool q8 = mk_cuda_act_int8();
                const double g0 = c->shared ? -1.0 : y_from_h_gap(&L->down, h0, gwt, gi, k, I, H, q8, y3);
                const double g1 = c->shared ? -1.0 : y_from_h_gap(&L->down, h1, gwt, gi, k, I, H, q8, y3);
                print_error("%s: control %d: h differs from the cached step's at %lld values (%lld..%lld); "
                            "max |y - y(h)|: %.3g with the cached step's h, %.3g with this step's (-1: not "
                            "computed with a shared expert)\n",
                            c->name, control, (long long)nd, (long long)first, (long long)last, g0, g1);
                char ls[256];
                int o = 0;
                for (int64_t j = 0; j < k && o < 200; j++)
                    o += snprintf(ls + o, sizeof ls - (size_t)o, "%s%d", j ? "," : "", lc[j]);
                const bool pdl0 = mk_cuda_moe_pdl();
                mk_cuda_set_moe_pdl(false);
                step_once(c, &mc, ws, dx, dy, y0, y3, H);
                mk_cuda_set_moe_pdl(pdl0);
                fail_msg("%s: a %s cache slot holding another expert's bytes left y unchanged: the kernels do "
                         "not read the cache (y[0] %.9g, slot 0 expert %d of weight %.3g; loc %s; h %s the cached "
                         "step's; with the MoE's PDL off y %s)",
                         c->name, control == 1 ? "gate" : control == 2 ? "up" : "down", (double)y[0], ids[0],
                         wref[jmax], ls,
                         hsame ? "equal to" : "differs from", memcmp(y, y3, (size_t)H * 4) ? "changed" : "is unchanged too");
            }
        }
        if (!control) {
            CT_OK(mk_cuda_download(cnt, dcnt, (size_t)E * 4));
            for (int32_t e = 0; e < E; e++) {
                int want = 0;
                for (int64_t j = 0; j < k; j++)
                    want += sel[j] == e ? 2 : 0;
                if (cnt[e] != want)
                    fail_msg("%s: routing count of expert %d: %d, expected %d", c->name, e, cnt[e], want);
            }
        }
        for (int p = 0; p < 3; p++)
            pool_free(&hp[p]);
        mk_cuda_wt_free(&mc.cgate);
        mk_cuda_wt_free(&mc.cup);
        mk_cuda_wt_free(&mc.cdown);
    }
    mk_cuda_free(dslot);
    mk_cuda_free(dcnt);
    free(slot);
    free(cnt);
    free(y3);
    free(h0);
    free(h1);
}

static void run_case(const mcase *c) {
    const int64_t H = c->H, E = c->E, k = c->k, I = c->I, Is = c->shared ? c->Is : 0;
    layer L;
    memset(&L, 0, sizeof L);
    /* magnitudes: codes centred by the bias keep activations O(1) */
    if (c->router_fmt == 0)
        L.router = ct_affine(E, H, 8, 64, MK_DT_BF16, 1.0f);
    else if (c->router_fmt == 1)
        L.router = ct_plain(E, H, MK_WF_BF16, 0.05f);
    else
        L.router = mat(c, E, H, 1.0f);
    L.gate = mat(c, E * I, H, 1.0f);
    L.up = mat(c, E * I, H, 1.0f);
    L.down = mat(c, E * H, I, 1.0f);
    if (c->shared) {
        L.sg = mat(c, Is, H, 1.0f);
        L.su = mat(c, Is, H, 1.0f);
        L.sd = mat(c, H, Is, 1.0f);
        if (c->shared_gate)
            L.sgw = ct_plain(1, H, MK_WF_BF16, 0.05f);
    }
    mk_cuda_moe m;
    memset(&m, 0, sizeof m);
    m.hidden = H;
    m.n_experts = E;
    m.top_k = k;
    m.inter = I;
    m.shared_inter = Is;
    m.score = c->score;
    m.norm_topk = c->norm;
    m.scale = c->scale;
    m.has_shared = c->shared;
    m.has_shared_gate = c->shared_gate;
    CT_OK(mk_cuda_wt_upload(&L.router.w, &m.router, "router"));
    CT_OK(mk_cuda_wt_upload(&L.gate.w, &m.gate, "gate"));
    CT_OK(mk_cuda_wt_upload(&L.up.w, &m.up, "up"));
    CT_OK(mk_cuda_wt_upload(&L.down.w, &m.down, "down"));
    if (c->shared) {
        CT_OK(mk_cuda_wt_upload(&L.sg.w, &m.sh_gate, "shared gate_proj"));
        CT_OK(mk_cuda_wt_upload(&L.su.w, &m.sh_up, "shared up_proj"));
        CT_OK(mk_cuda_wt_upload(&L.sd.w, &m.sh_down, "shared down_proj"));
        if (c->shared_gate)
            CT_OK(mk_cuda_wt_upload(&L.sgw.w, &m.sh_gate_w, "shared_expert_gate"));
    }
    float *bias = NULL;
    void *dbias = NULL;
    if (c->bias_amp > 0) {
        bias = malloc((size_t)E * 4);
        assert_non_null(bias);
        for (int64_t e = 0; e < E; e++)
            bias[e] = ct_f(-c->bias_amp, c->bias_amp);
        CT_OK(mk_cuda_malloc(&dbias, (size_t)E * 4, "selection bias"));
        CT_OK(mk_cuda_upload(dbias, bias, (size_t)E * 4));
        m.sel_bias = (const float *)dbias;
    }
    m.n_group = c->groups;
    m.topk_group = c->topk_groups;
    mk_cuda_moe_ws *ws;
    CT_OK(mk_cuda_moe_ws_new(&m, &ws));

    const int64_t W = H > I ? H : I;
    float *x = malloc((size_t)H * 4), *y = malloc((size_t)H * 4), *y0 = malloc((size_t)H * 4);
    float *buf = malloc((size_t)W * 4);
    double *xd = malloc((size_t)H * 8), *lg = malloc((size_t)E * 8), *cl = malloc((size_t)E * 8);
    double *p = malloc((size_t)E * 8), *ch = malloc((size_t)E * 8), *h = malloc((size_t)(k * I + Is) * 8), *eh = malloc((size_t)(k * I + Is) * 8);
    float *hdev = malloc((size_t)(k * I + Is) * 4);
    assert_non_null(hdev);
    int32_t sel[32], gidx[32];
    float gw[32];
    double wref[32];

    /* int8 activations (mk_cuda_set_act_int8: one token): the experts and an affine
     * router multiply x as the CPU's quantizer leaves it (q8.c: xe), and the experts' h likewise, whose
     * rounding (at most d_b / 2 a value, d_b = the block's max |h| / 127) the y bound below carries */
    const bool q8 = mk_cuda_act_int8() && !c->stack;
    double *xe = malloc((size_t)H * 8);
    int8_t *xq = malloc((size_t)H);
    float *xqd = malloc((size_t)(H / 32 + 1) * 4), *xqs = malloc((size_t)(H / 32 + 1) * 4);
    assert_true(xe && xq && xqd && xqs);
    const double *xr = q8 && L.router.w.fmt == MK_WF_AFFINE ? xe : xd;
    /* draw x until the top-k boundary is clear (see the header) */
    int tries = 0;
    for (;; tries++) {
        assert_true(tries < 50);
        for (int64_t j = 0; j < H; j++)
            xe[j] = xd[j] = x[j] = ct_f(-1.0f, 1.0f);
        if (q8) {
            mk_q8_quant_blocks(x, H, 32, xq, xqd, xqs);
            for (int64_t j = 0; j < H; j++)
                xe[j] = (double)xq[j] * (double)xqd[j / 32];
        }
        double mx = -INFINITY;
        for (int64_t e = 0; e < E; e++) {
            lg[e] = rdot(&L.router, e, xr, buf, &cl[e]);
            mx = lg[e] > mx ? lg[e] : mx;
        }
        double sum = 0.0;
        for (int64_t e = 0; e < E; e++)
            sum += (p[e] = c->score == MK_CUDA_SCORE_SOFTMAX ? exp(lg[e] - mx) : 1.0 / (1.0 + exp(-lg[e])));
        if (c->score == MK_CUDA_SCORE_SOFTMAX)
            for (int64_t e = 0; e < E; e++)
                p[e] /= sum;
        /* the choice: the score, plus the selection bias, within the kept groups */
        bool clear = true;
        for (int64_t e = 0; e < E; e++)
            ch[e] = p[e] + (bias ? bias[e] : 0.0);
        if (c->groups > 1) {
            const int64_t G = c->groups, per = E / G;
            double gsc[64];
            int32_t top2[2], keep[64];
            for (int64_t g = 0; g < G; g++) {
                top_k(ch + g * per, per, 2, top2);
                gsc[g] = ch[g * per + top2[0]] + ch[g * per + top2[1]];
            }
            clear &= top_k_clear(gsc, G, c->topk_groups, keep);
            for (int64_t g = 0; g < G; g++) {
                bool kept = false;
                for (int q = 0; q < c->topk_groups; q++)
                    kept |= keep[q] == g;
                for (int64_t e = 0; !kept && e < per; e++)
                    ch[g * per + e] = 0.0;
            }
        }
        clear &= top_k_clear(ch, E, k, sel);
        if (clear)
            break;
    }
    double dlmax = 0.0;
    for (int64_t e = 0; e < E; e++)
        dlmax = fmax(dlmax, 1e-5 * cl[e]);
    double wsum = 0.0;
    for (int64_t j = 0; j < k; j++)
        wsum += p[sel[j]];
    if (c->score == MK_CUDA_SCORE_SIGMOID)
        wsum += 1e-20;
    for (int64_t j = 0; j < k; j++)
        wref[j] = (c->norm ? p[sel[j]] / wsum : p[sel[j]]) * c->scale;
    const double wrel = 4.0 * dlmax + 1e-6;

    /* h for the selected experts and the shared expert, with error bounds */
    for (int64_t t = 0; t < k * I + Is; t++) {
        const ct_wt *G = t < k * I ? &L.gate : &L.sg, *U = t < k * I ? &L.up : &L.su;
        int64_t row = t < k * I ? (int64_t)sel[t / I] * I + t % I : t - k * I;
        double cg, cu;
        double g = rdot(G, row, xe, buf, &cg), u = rdot(U, row, xe, buf, &cu);
        double eg = 1e-5 * cg, eu = 1e-5 * cu;
        h[t] = silu(g) * u;
        eh[t] = 1.1 * eg * (fabs(u) + eu) + (fabs(silu(g)) + 1.1 * eg) * eu + 1e-6 * fabs(h[t]);
    }
    double gs = 1.0, dgs = 0.0;
    if (c->shared_gate) {
        double cs;
        double ls = rdot(&L.sgw, 0, xd, buf, &cs);
        gs = 1.0 / (1.0 + exp(-ls));
        dgs = 0.25 * 1e-5 * cs + 1e-7;
    }

    void *dx, *dy;
    CT_OK(mk_cuda_malloc(&dx, (size_t)H * 4, "x"));
    CT_OK(mk_cuda_malloc(&dy, (size_t)H * 4, "y"));
    CT_OK(mk_cuda_upload(dx, x, (size_t)H * 4));
    for (int64_t o = 0; o < H; o++)
        y0[o] = c->stack ? x[o] : ct_f(-3.0f, 3.0f); /* the stack adds into x itself */
    if (c->stack) {
        mk_cuda_stack *stk;
        CT_OK(mk_cuda_stack_new(&m, 1, &stk));
        CT_OK(mk_cuda_stack_run(stk, dx, NULL));
        CT_OK(mk_cuda_sync());
        CT_OK(mk_cuda_download(y, dx, (size_t)H * 4));
        CT_OK(mk_cuda_moe_routing(mk_cuda_stack_ws(stk), gidx, gw));
        mk_cuda_stack_free(stk);
    } else {
        step_once(c, &m, ws, dx, dy, y0, y, H);
        CT_OK(mk_cuda_moe_routing(ws, gidx, gw));
        CT_OK(mk_cuda_moe_activations(ws, hdev, Is ? hdev + k * I : NULL));
        /* under programmatic dependent launch (each kernel loading weights
         * before it waits for its predecessor) the same bits come out, on
         * two runs (test_moe_stack_layers runs layers back to back with it) */
        const bool pdl0 = mk_cuda_moe_pdl();
        float *y2 = malloc((size_t)H * 4);
        assert_non_null(y2);
        mk_cuda_set_moe_pdl(!pdl0);
        for (int rep = 0; rep < 2; rep++) {
            step_once(c, &m, ws, dx, dy, y0, y2, H);
            if (memcmp(y, y2, (size_t)H * 4) != 0)
                fail_msg("%s: programmatic dependent launch %s changed y", c->name, pdl0 ? "off" : "on");
        }
        mk_cuda_set_moe_pdl(pdl0);
        free(y2);
        /* the routing first (the cache's slots are the reference's choice: another choice on the
         * device would leave its controls' slots unread and read as "the kernels do not read the
         * cache") */
        for (int64_t j = 0; j < k; j++)
            if (gidx[j] != sel[j])
                fail_msg("%s: routing slot %lld: device expert %d, reference %d (y[0] %.9g)", c->name, (long long)j,
                         gidx[j], sel[j], (double)y[0]);
    }

    for (int64_t j = 0; j < k; j++) {
        if (gidx[j] != sel[j])
            fail_msg("%s: routing slot %lld: device expert %d, reference %d", c->name, (long long)j, gidx[j], sel[j]);
        double err = fabs((double)gw[j] - wref[j]), bound = wrel * fabs(wref[j]);
        if (!(err <= bound))
            fail_msg("%s: routing weight %lld: device %.9g, reference %.9g, |diff| %.3g > %.3g", c->name, (long long)j,
                     (double)gw[j], wref[j], err, bound);
    }
    /* the experts' activations themselves (one-step cases): each within its bound, so the
     * gate/up products are checked apart from the down rows that sum them */
    for (int64_t t = 0; !c->stack && t < k * I + Is; t++) {
        const double err = fabs((double)hdev[t] - h[t]);
        if (!(err <= eh[t]))
            fail_msg("%s: h[%lld] (%s): device %.9g, reference %.9g, |diff| %.3g > bound %.3g", c->name, (long long)t,
                     t < k * I ? "routed" : "shared", (double)hdev[t], h[t], err, eh[t]);
    }
    double worst = 0.0;
    double *hs = h + k * I, *ehs = eh + k * I;
    for (int64_t o = 0; o < H; o++) {
        double ref = c->accumulate ? (double)y0[o] : 0.0, bound = 0.0, mag = fabs(ref);
        for (int64_t j = 0; j < k; j++) {
            mk_wt_dequant_row(&L.down.w, (int64_t)sel[j] * H + o, buf);
            double d = 0.0, e1 = 0.0, e2 = 0.0;
            for (int64_t cc = 0; cc < I; cc++) {
                double D = buf[cc], hv = h[j * I + cc], ev = eh[j * I + cc];
                d += D * hv;
                e1 += fabs(D) * (ev + (q8 ? qhalf(h + j * I, eh + j * I, cc) : 0.0));
                e2 += ct_scale_of(&L.down, (int64_t)sel[j] * H + o, cc, buf[cc]) * (fabs(hv) + ev);
            }
            ref += wref[j] * d;
            mag += fabs(wref[j] * d);
            bound += fabs(wref[j]) * (e1 + 1e-5 * e2) + wrel * fabs(wref[j]) * fabs(d);
        }
        if (c->shared) {
            mk_wt_dequant_row(&L.sd.w, o, buf);
            double d = 0.0, e1 = 0.0, e2 = 0.0;
            for (int64_t cc = 0; cc < Is; cc++) {
                double D = buf[cc];
                d += D * hs[cc];
                e1 += fabs(D) * (ehs[cc] + (q8 ? qhalf(hs, ehs, cc) : 0.0));
                e2 += ct_scale_of(&L.sd, o, cc, buf[cc]) * (fabs(hs[cc]) + ehs[cc]);
            }
            ref += gs * d;
            mag += fabs(gs * d);
            bound += gs * (e1 + 1e-5 * e2) + dgs * fabs(d);
        }
        bound += 1e-6 * mag;
        double err = fabs((double)y[o] - ref);
        if (!(err <= bound))
            fail_msg("%s: y[%lld]: device %.9g, reference %.9g, |diff| %.3g > bound %.3g", c->name, (long long)o,
                     (double)y[o], ref, err, bound);
        if (err / bound > worst)
            worst = err / bound;
    }
    printf("  %-52s worst |diff|/bound %.3g (x drawn %d times)\n", c->name, worst, tries + 1);
    /* the VRAM cache after y is known right (a control that reads as "the kernels do not read the
     * cache" is then about the cache, not a wrong step) */
    if (!c->stack)
        check_cache(c, &L, &m, ws, dx, dy, y0, y, sel, wref);

    mk_cuda_free(dx);
    mk_cuda_free(dy);
    mk_cuda_free(dbias);
    free(bias);
    free(ch);
    mk_cuda_moe_ws_free(ws);
    mk_wt *dv[] = {&m.router, &m.gate, &m.up, &m.down, &m.sh_gate, &m.sh_up, &m.sh_down, &m.sh_gate_w};
    for (size_t i = 0; i < sizeof dv / sizeof dv[0]; i++)
        mk_cuda_wt_free(dv[i]);
    ct_wt *hv[] = {&L.router, &L.gate, &L.up, &L.down, &L.sg, &L.su, &L.sd, &L.sgw};
    for (size_t i = 0; i < sizeof hv / sizeof hv[0]; i++)
        ct_free(hv[i]);
    free(x);
    free(y);
    free(y0);
    free(buf);
    free(xd);
    free(lg);
    free(cl);
    free(p);
    free(h);
    free(eh);
    free(xe);
    free(xq);
    free(xqd);
    free(xqs);
    free(hdev);
}

/* Cases under both kernel generations (mk_cuda_set_kernels), same bounds:
 * generation 2 changes the order of the float32 sums, not what they sum.
 * The stack cases run k_stack, which has one generation. */
static void use_kernels(int gen) {
    assert_int_equal(mk_cuda_set_kernels(gen), MK_OK);
    printf("kernel generation %d\n", gen);
}

/* The full-size Qwen3-30B-A3B layer (not the stack's): test_moe_qwen3_30b_layer's */
static bool full_layer(const mcase *c) {
    return !c->stack && c->H == 2048 && c->E == 128;
}

static void test_moe_small(void **state) {
    CT_NEED_GPU();
    for (int gen = 1; gen <= 2; gen++) {
        use_kernels(gen);
        for (size_t i = 0; i < sizeof g_cases / sizeof g_cases[0]; i++)
            if (!full_layer(&g_cases[i]) && (gen == 1 || !g_cases[i].stack))
                run_case(&g_cases[i]);
    }
    use_kernels(1);
}

/* The persistent stack over several layers: its layer loop, barriers and
 * in-kernel routing per layer. A consistency check, stated as such: the
 * reference is mk_cuda_moe_step applied layer by layer (checked against the
 * CPU above, as is the one-layer stack); both use the same row dot
 * products, so they agree to float32 rounding of the kernels' own
 * contractions: |a - b| <= 1e-5 * max|a| per element. */
static void test_moe_stack_layers(void **state) {
    CT_NEED_GPU();
    use_kernels(1); /* k_stack's row dot products are generation 1's */
    const mcase c = {"stack 3 layers", 256, 40, 8, 64, 128, 4, 64, MK_DT_BF16, MK_CUDA_SCORE_SOFTMAX, true, 1.0f,
                     true, true, 2, true, true, 0, 0, 0.0f};
    enum { L = 3 };
    const int64_t H = c.H;
    layer lw[L];
    mk_cuda_moe m[L];
    for (int l = 0; l < L; l++) {
        memset(&m[l], 0, sizeof m[l]);
        lw[l].router = mat(&c, c.E, H, 1.0f);
        lw[l].gate = mat(&c, c.E * c.I, H, 1.0f);
        lw[l].up = mat(&c, c.E * c.I, H, 1.0f);
        lw[l].down = mat(&c, c.E * H, c.I, 0.25f); /* keep the residual O(1) over the layers */
        lw[l].sg = mat(&c, c.Is, H, 1.0f);
        lw[l].su = mat(&c, c.Is, H, 1.0f);
        lw[l].sd = mat(&c, H, c.Is, 0.25f);
        lw[l].sgw = ct_plain(1, H, MK_WF_BF16, 0.05f);
        m[l].hidden = H;
        m[l].n_experts = c.E;
        m[l].top_k = c.k;
        m[l].inter = c.I;
        m[l].shared_inter = c.Is;
        m[l].score = c.score;
        m[l].norm_topk = true;
        m[l].scale = 1.0f;
        m[l].has_shared = m[l].has_shared_gate = true;
        CT_OK(mk_cuda_wt_upload(&lw[l].router.w, &m[l].router, "router"));
        CT_OK(mk_cuda_wt_upload(&lw[l].gate.w, &m[l].gate, "gate"));
        CT_OK(mk_cuda_wt_upload(&lw[l].up.w, &m[l].up, "up"));
        CT_OK(mk_cuda_wt_upload(&lw[l].down.w, &m[l].down, "down"));
        CT_OK(mk_cuda_wt_upload(&lw[l].sg.w, &m[l].sh_gate, "sg"));
        CT_OK(mk_cuda_wt_upload(&lw[l].su.w, &m[l].sh_up, "su"));
        CT_OK(mk_cuda_wt_upload(&lw[l].sd.w, &m[l].sh_down, "sd"));
        CT_OK(mk_cuda_wt_upload(&lw[l].sgw.w, &m[l].sh_gate_w, "sgw"));
    }
    float *x = malloc((size_t)H * 4), *a = malloc((size_t)H * 4), *b = malloc((size_t)H * 4);
    for (int64_t o = 0; o < H; o++)
        x[o] = ct_f(-1.0f, 1.0f);
    void *da, *db;
    CT_OK(mk_cuda_malloc(&da, (size_t)H * 4, "a"));
    CT_OK(mk_cuda_malloc(&db, (size_t)H * 4, "b"));
    CT_OK(mk_cuda_upload(da, x, (size_t)H * 4));
    CT_OK(mk_cuda_upload(db, x, (size_t)H * 4));
    mk_cuda_moe_ws *ws;
    CT_OK(mk_cuda_moe_ws_new(&m[0], &ws));
    for (int l = 0; l < L; l++)
        CT_OK(mk_cuda_moe_step(&m[l], ws, da, da, true, NULL));
    mk_cuda_stack *stk;
    CT_OK(mk_cuda_stack_new(m, L, &stk));
    CT_OK(mk_cuda_stack_run(stk, db, NULL));
    CT_OK(mk_cuda_stack_run(stk, db, NULL)); /* twice: the barrier state carries over launches */
    for (int l = 0; l < L; l++)
        CT_OK(mk_cuda_moe_step(&m[l], ws, da, da, true, NULL));
    CT_OK(mk_cuda_sync());
    CT_OK(mk_cuda_download(a, da, (size_t)H * 4));
    CT_OK(mk_cuda_download(b, db, (size_t)H * 4));
    double mx = 0.0, worst = 0.0, dx = 0.0;
    for (int64_t o = 0; o < H; o++) {
        mx = fmax(mx, fabs((double)a[o]));
        dx = fmax(dx, fabs((double)a[o] - x[o]));
    }
    assert_true(dx > 1e-3 * mx); /* the layers did change x */
    for (int64_t o = 0; o < H; o++) {
        double err = fabs((double)a[o] - (double)b[o]);
        if (!(err <= 1e-5 * mx))
            fail_msg("stack x[%lld]: stack %.9g, layer by layer %.9g, |diff| %.3g > %.3g", (long long)o,
                     (double)b[o], (double)a[o], err, 1e-5 * mx);
        worst = fmax(worst, err / (1e-5 * mx));
    }
    printf("  stack of %d layers run twice vs steps: worst |diff|/bound %.3g\n", L, worst);
    /* the same 2 L steps back to back with programmatic dependent launch
     * toggled (each router may start while the previous layer's down kernel
     * runs): the same bits as without */
    const bool pdl0 = mk_cuda_moe_pdl();
    mk_cuda_set_moe_pdl(!pdl0);
    CT_OK(mk_cuda_upload(db, x, (size_t)H * 4));
    for (int l = 0; l < 2 * L; l++)
        CT_OK(mk_cuda_moe_step(&m[l % L], ws, db, db, true, NULL));
    CT_OK(mk_cuda_sync());
    mk_cuda_set_moe_pdl(pdl0);
    CT_OK(mk_cuda_download(b, db, (size_t)H * 4));
    if (memcmp(a, b, (size_t)H * 4) != 0)
        fail_msg("stack of %d layers: programmatic dependent launch %s changed x", L, pdl0 ? "off" : "on");
    mk_cuda_stack_free(stk);
    mk_cuda_moe_ws_free(ws);
    mk_cuda_free(da);
    mk_cuda_free(db);
    for (int l = 0; l < L; l++) {
        mk_wt *dv[] = {&m[l].router, &m[l].gate, &m[l].up, &m[l].down,
                       &m[l].sh_gate, &m[l].sh_up, &m[l].sh_down, &m[l].sh_gate_w};
        for (size_t i = 0; i < sizeof dv / sizeof dv[0]; i++)
            mk_cuda_wt_free(dv[i]);
        ct_wt *hv[] = {&lw[l].router, &lw[l].gate, &lw[l].up, &lw[l].down,
                       &lw[l].sg, &lw[l].su, &lw[l].sd, &lw[l].sgw};
        for (size_t i = 0; i < sizeof hv / sizeof hv[0]; i++)
            ct_free(hv[i]);
    }
    free(x);
    free(a);
    free(b);
}

static void test_moe_qwen3_30b_layer(void **state) {
    CT_NEED_GPU();
    const mcase *c = NULL; /* found by its shape, not its place in the table (cases were appended after it) */
    for (size_t i = 0; i < sizeof g_cases / sizeof g_cases[0]; i++)
        if (full_layer(&g_cases[i]))
            c = &g_cases[i];
    assert_non_null(c);
    for (int gen = 1; gen <= 2; gen++) {
        use_kernels(gen);
        run_case(c);
    }
    use_kernels(1);
}

/* The staged-weight kernels (mk_cuda_set_moe_staged: k_gateup_s, k_down_s)
 * under generation 2, every one-token case within the same bounds, the
 * full-size 30B layer included (the emulation, tests/cli/cuda_emu_moe.sh,
 * holds them bitwise generation 2's; layers they do not take run the
 * register kernels). */
static void test_moe_staged(void **state) {
    CT_NEED_GPU();
    use_kernels(2);
    mk_cuda_set_moe_staged(true);
    for (size_t i = 0; i < sizeof g_cases / sizeof g_cases[0]; i++)
        if (!g_cases[i].stack)
            run_case(&g_cases[i]);
    mk_cuda_set_moe_staged(false);
    use_kernels(1);
}

/* int8 activations (mk_cuda_set_act_int8: k_router<F, true>, k_gateup_q8,
 * k_down2_q8), every one-step case under both generations: the routing
 * against the double logits of an affine router over the CPU's quantized x,
 * h (downloaded, mk_cuda_moe_activations) within its bound of the double
 * SwiGLU over that x (the float kernels, off by the quantization, miss it),
 * y within its bound widened by h's rounding; the emulation
 * (tests/cli/cuda_emu_moe.sh) holds y to the exact rule. The stack cases
 * keep their own kernel. */
static void test_moe_act_int8(void **state) {
    CT_NEED_GPU();
    mk_cuda_set_act_int8(true);
    printf("int8 activations\n");
    for (int gen = 1; gen <= 2; gen++) {
        use_kernels(gen);
        for (size_t i = 0; i < sizeof g_cases / sizeof g_cases[0]; i++)
            if (!g_cases[i].stack)
                run_case(&g_cases[i]);
    }
    mk_cuda_set_act_int8(false);
    use_kernels(1);
}

/* Shapes and formats are checked on the host, naming the matrix (no device
 * work: runs without a GPU when built with CUDA). */
static void test_moe_check_named(void **state) {
#ifndef MK_HAVE_CUDA
    printf("SKIP %s: moekit was built without CUDA (MK_CUDA=OFF)\n", __func__);
    skip();
#else
    mk_cuda_moe m;
    memset(&m, 0, sizeof m);
    m.hidden = 128;
    m.n_experts = 4;
    m.top_k = 2;
    m.inter = 64;
    m.scale = 1.0f;
    mk_wt a = {.fmt = MK_WF_AFFINE, .bits = 4, .group = 64, .sdtype = MK_DT_BF16};
    m.router = a;
    m.router.rows = 4;
    m.router.cols = 128;
    m.gate = m.up = a;
    m.gate.rows = m.up.rows = 4 * 64;
    m.gate.cols = m.up.cols = 128;
    m.down = a;
    m.down.rows = 4 * 128;
    m.down.cols = 64;
    assert_int_equal(mk_cuda_moe_check(&m), MK_OK);
    m.down.rows = 4 * 128 - 1;
    assert_int_equal(mk_cuda_moe_check(&m), MK_E_MISMATCH);
    assert_non_null(strstr(mk_err_msg(), "down_proj must be [512, 64], found [511, 64]"));
    m.down.rows = 4 * 128;
    m.up.bits = 8;
    assert_int_equal(mk_cuda_moe_check(&m), MK_E_UNSUPPORTED);
    assert_non_null(strstr(mk_err_msg(), "up_proj"));
    m.up.bits = 4;
    m.top_k = 5;
    assert_int_equal(mk_cuda_moe_check(&m), MK_E_UNSUPPORTED);
    assert_non_null(strstr(mk_err_msg(), "top_k"));
    m.top_k = 2;
    m.has_shared_gate = true;
    assert_int_equal(mk_cuda_moe_check(&m), MK_E_ARG);
    m.has_shared_gate = false;
    /* DeepSeek-V3's routing: sigmoid only, groups that divide the experts
     * into groups of two or more, no more kept groups than groups */
    m.n_group = 2;
    m.topk_group = 1;
    assert_int_equal(mk_cuda_moe_check(&m), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "sigmoid"));
    m.score = MK_CUDA_SCORE_SIGMOID;
    assert_int_equal(mk_cuda_moe_check(&m), MK_OK);
    m.n_group = 4; /* groups of one expert */
    assert_int_equal(mk_cuda_moe_check(&m), MK_E_UNSUPPORTED);
    assert_non_null(strstr(mk_err_msg(), "n_group 4"));
    m.n_group = 3; /* does not divide 4 */
    assert_int_equal(mk_cuda_moe_check(&m), MK_E_UNSUPPORTED);
    m.n_group = 2;
    m.topk_group = 3;
    assert_int_equal(mk_cuda_moe_check(&m), MK_E_UNSUPPORTED);
    assert_non_null(strstr(mk_err_msg(), "topk_group 3"));
    m.topk_group = 2;
    m.sel_bias = (const float *)(uintptr_t)0x1002; /* misaligned */
    assert_int_equal(mk_cuda_moe_check(&m), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "aligned"));
    m.sel_bias = NULL;
    /* a VRAM cache: slots stored as the experts, whole experts of rows */
    m.slot_of = (const int32_t *)(uintptr_t)0x1000;
    m.cgate = m.gate;
    m.cup = m.up;
    m.cdown = m.down;
    m.cgate.rows = m.cup.rows = 3 * 64;
    m.cdown.rows = 3 * 128;
    assert_int_equal(mk_cuda_moe_check(&m), MK_OK);
    m.cdown.rows = 2 * 128; /* two slots, not three */
    assert_int_equal(mk_cuda_moe_check(&m), MK_E_MISMATCH);
    assert_non_null(strstr(mk_err_msg(), "expert cache's down_proj"));
    m.cdown.rows = 3 * 128;
    m.cup.group = 32;
    assert_int_equal(mk_cuda_moe_check(&m), MK_E_MISMATCH);
    assert_non_null(strstr(mk_err_msg(), "expert cache's up_proj is not stored as the experts'"));
    m.cup.group = 64;
    m.counts = (int32_t *)(uintptr_t)0x1001;
    assert_int_equal(mk_cuda_moe_check(&m), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "routing counts"));
#endif
}


int main(void) {
    /* the float kernels unless a case says otherwise (the device's default follows --act-int8:
     * test_cuda_gemv's test_act_int8_default) */
    mk_cuda_set_act_int8(false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_moe_check_named),
        cmocka_unit_test(test_moe_small),
        cmocka_unit_test(test_moe_stack_layers),
        cmocka_unit_test(test_moe_qwen3_30b_layer),
        cmocka_unit_test(test_moe_staged),
        cmocka_unit_test(test_moe_act_int8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
