/* The weights and the double reference of the MoE-step emulation
 * (moe_emu.cpp), in C over tests/unit/cuda_test_util.h's weights and
 * mk_wt_dequant_row (the CPU's definition of every format): never the
 * device code. */
#include "cuda_test_util.h"
#include "moe_ref.h"

static void *own(ct_wt t) {
    ct_wt *p = malloc(sizeof *p);
    *p = t;
    return p;
}

static ct_wt mat(int bits, int64_t rows, int64_t cols) {
    return bits == 16 ? ct_plain(rows, cols, MK_WF_BF16, 0.05f) : ct_affine(rows, cols, bits, 64, MK_DT_BF16, 1.0f);
}

void emu_layer_make(emu_layer *L, int bits) {
    L->router = own(ct_affine(L->E, L->H, L->rbits ? L->rbits : 8, 64, MK_DT_BF16, 1.0f));
    L->gate = own(mat(bits, L->E * L->I, L->H));
    L->up = own(mat(bits, L->E * L->I, L->H));
    L->down = own(mat(bits, L->E * L->H, L->I));
    L->sg = L->su = L->sd = L->sgw = NULL;
    if (L->shared) {
        L->sg = own(mat(bits, L->Is, L->H));
        L->su = own(mat(bits, L->Is, L->H));
        L->sd = own(mat(bits, L->H, L->Is));
        if (L->shared_gate)
            L->sgw = own(L->sgw_aff ? ct_affine(1, L->H, 8, 64, MK_DT_BF16, 0.05f)
                                    : ct_plain(1, L->H, MK_WF_BF16, 0.05f));
    }
    L->bias = NULL;
    if (L->sigmoid) {
        L->bias = malloc((size_t)L->E * sizeof *L->bias);
        for (int64_t e = 0; e < L->E; e++)
            L->bias[e] = ct_f(-0.3f, 0.3f);
    }
}

void emu_layer_free(emu_layer *L) {
    void *ws[] = {L->router, L->gate, L->up, L->down, L->sg, L->su, L->sd, L->sgw};
    for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
        if (ws[i]) {
            ct_free(ws[i]);
            free(ws[i]);
        }
    free(L->bias);
}

const mk_wt *emu_wt(const void *t) { return &((const ct_wt *)t)->w; }

float emu_rand(float lo, float hi) { return ct_f(lo, hi); }

static double rdot(const void *t, int64_t r, const double *x) {
    const ct_wt *w = t;
    float *row = malloc((size_t)w->w.cols * sizeof *row);
    double s = ct_dot(w, r, x, row, NULL);
    free(row);
    return s;
}

/* top-k of s[0..n), lowest index first on ties; false on a near-tie at k */
static bool topk(const double *s, int64_t n, int64_t k, int32_t *idx) {
    for (int64_t j = 0; j <= k && j < n; j++) {
        int64_t b = -1;
        for (int64_t i = 0; i < n; i++) {
            bool taken = false;
            for (int64_t q = 0; q < j; q++)
                taken |= idx[q] == i;
            if (!taken && (b < 0 || s[i] > s[b]))
                b = i;
        }
        if (j == k)
            return fabs(s[idx[k - 1]] - s[b]) > 1e-4 * fabs(s[idx[k - 1]]);
        idx[j] = (int32_t)b;
    }
    return true;
}

static double silu(double g) { return g / (1.0 + exp(-g)); }

bool emu_layer_ref(const emu_layer *L, const float *xf, double *y, int32_t *idx) {
    const int64_t H = L->H, E = L->E, k = L->k, I = L->I;
    double *x = malloc((size_t)H * sizeof *x), *s = malloc((size_t)E * sizeof *s), *ch = malloc((size_t)E * sizeof *ch);
    double *h = malloc((size_t)(I > L->Is ? I : L->Is) * sizeof *h);
    int32_t sel[33];
    for (int64_t j = 0; j < H; j++)
        x[j] = xf[j];
    double m = -INFINITY, z = 0.0;
    for (int64_t e = 0; e < E; e++) {
        s[e] = rdot(L->router, e, x);
        m = s[e] > m ? s[e] : m;
    }
    for (int64_t e = 0; e < E; e++) {
        s[e] = L->sigmoid ? 1.0 / (1.0 + exp(-s[e])) : exp(s[e] - m);
        z += s[e];
    }
    bool clear = true;
    for (int64_t e = 0; e < E; e++) {
        if (!L->sigmoid)
            s[e] /= z;
        ch[e] = s[e] + (L->bias ? L->bias[e] : 0.0);
    }
    if (L->G > 1) {
        const int64_t per = E / L->G;
        double gs[64];
        int32_t t2[3], keep[65];
        for (int g = 0; g < L->G; g++) {
            topk(ch + g * per, per, 2, t2);
            gs[g] = ch[g * per + t2[0]] + ch[g * per + t2[1]];
        }
        clear &= topk(gs, L->G, L->TG, keep);
        for (int g = 0; g < L->G; g++) {
            bool kept = false;
            for (int q = 0; q < L->TG; q++)
                kept |= keep[q] == g;
            for (int64_t e = 0; !kept && e < per; e++)
                ch[g * per + e] = 0.0;
        }
    }
    clear &= topk(ch, E, k, sel);
    double wsum = L->sigmoid ? 1e-20 : 0.0;
    for (int64_t j = 0; j < k; j++)
        wsum += s[sel[j]];
    for (int64_t o = 0; o < H; o++)
        y[o] = 0.0;
    for (int64_t j = 0; j < k; j++) {
        const double w = (L->norm ? s[sel[j]] / wsum : s[sel[j]]) * L->scale;
        idx[j] = sel[j];
        for (int64_t r = 0; r < I; r++)
            h[r] = silu(rdot(L->gate, (int64_t)sel[j] * I + r, x)) * rdot(L->up, (int64_t)sel[j] * I + r, x);
        for (int64_t o = 0; o < H; o++)
            y[o] += w * rdot(L->down, (int64_t)sel[j] * H + o, h);
    }
    if (L->shared) {
        const double g = L->sgw ? 1.0 / (1.0 + exp(-rdot(L->sgw, 0, x))) : 1.0;
        for (int64_t r = 0; r < L->Is; r++)
            h[r] = silu(rdot(L->sg, r, x)) * rdot(L->su, r, x);
        for (int64_t o = 0; o < H; o++)
            y[o] += g * rdot(L->sd, o, h);
    }
    free(x);
    free(s);
    free(ch);
    free(h);
    return clear;
}

double emu_rdot_cond(const void *t, int64_t r, const double *x, double *cond) {
    const ct_wt *w = t;
    float *row = malloc((size_t)w->w.cols * sizeof *row);
    double s = ct_dot(w, r, x, row, cond);
    free(row);
    return s;
}
