/* ggml's K-quant reference quantizers Q4_K, Q5_K and Q6_K
 * (quantize_row_q{4,5,6}_K_ref of ggml/src/ggml-quants.c, the ones
 * llama-quantize runs without an importance matrix), written from its
 * algorithm so the bytes are llama-quantize's (tests/cli/gguf_llama.sh
 * compares whole tensors). Every float operation is ggml's, in its order
 * and in float32: the search keeps the first of equal candidates, and
 * codes are recomputed from the scales as stored (f16 super-scale times
 * 6- or 8-bit sub-scale), so one differently rounded sum changes bytes.
 *
 * Super-blocks of 256 values:
 *   Q4_K  f16 d, f16 dmin, scales[12] (eight 6-bit scales and eight 6-bit
 *         mins of the 32-value sub-blocks, packed as get_scale_min below
 *         reads them), qs[128]: value 64c+l (l < 32) in the low nibble of
 *         qs[32c+l], value 64c+32+l in its high nibble. x ~ d*sc*q - dmin*m.
 *   Q5_K  as Q4_K with qh[32] (5th bits: bit 2c of qh[l] for value 64c+l,
 *         bit 2c+1 for 64c+32+l) between scales and qs.
 *   Q6_K  ql[128], qh[64], int8 scales[16] (one per 16 values), f16 d;
 *         q in [0, 63], x ~ d*sc*(q - 32); per 128 values, l < 32:
 *         ql[l] = v[l] | v[l+64] << 4, ql[l+32] = v[l+32] | v[l+96] << 4
 *         (low nibbles), qh[l] = the high 2 bits of v[l], v[l+32],
 *         v[l+64], v[l+96] at bits 0, 2, 4, 6.
 * Each sub-block's scale (and min) comes from a weighted least-squares
 * search over candidate inverse scales (best_affine for Q4_K / Q5_K,
 * best_symmetric for Q6_K). A leaf: no I/O, no state. */
#include <math.h>
#include <string.h>

#include "moekit/dtype.h"
#include "moekit/ggml_quant.h"

#define QKK MK_GGML_QK_K
#define EPS 1e-15f /* ggml's GROUP_MAX_EPS: a sub-block below it is all zero */

/* ggml's nearest_int: round half to even through the float mantissa
 * (exact for |f| < 2^22, which every caller's values are). */
static inline int nearest_int(float f) {
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

/* f16 store and the value ggml reads back from it */
static float put_f16(unsigned char *p, float v) {
    uint16_t h = mk_f32_to_f16(v);
    p[0] = (unsigned char)(h & 0xff);
    p[1] = (unsigned char)(h >> 8);
    return mk_f16_to_f32(h);
}

/* ggml's make_qkx2_quants: codes L in [0, nmax] and scale s, min -m with
 * x ~ s*L - m, minimizing sum w*(s*L + min - x)^2 over the inverse scales
 * (rmin + rdelta*is + nmax) / (max - min), is = 0..nstep (the plain
 * nmax / (max - min) first; a candidate replaces it only when strictly
 * better). Returns s; *mout = -min >= 0. */
static float best_affine(int n, int nmax, const float *x, const float *w, uint8_t *L, float *mout, uint8_t *Laux,
                         float rmin, float rdelta, int nstep) {
    float min = x[0], max = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min)
            min = x[i];
        if (x[i] > max)
            max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0)
        min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *mout = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)imax(0, imin(nmax, l));
        float diff = scale * L[i] + min - x[i];
        diff = diff * diff;
        best_error += w[i] * diff;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * (x[i] - min));
            l = imax(0, imin(nmax, l));
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = diff * diff;
                cur_error += w[i] * diff;
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *mout = -min;
    return scale;
}

/* ggml's make_qx_quants with rmse_type 1 and no importance: signed codes
 * stored as L = l + nmax, l in [-nmax, nmax-1], weights x^2; the scale of
 * the inverse scale -nmax/max, then -(nmax + 0.1*is)/max for is = -9..9
 * (0 skipped) when strictly better. An all-zero block: L = 0, scale 0. */
static float best_symmetric(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * x[i]);
        l = imax(-nmax, imin(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0)
            continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * x[i]);
            l = imax(-nmax, imin(nmax - 1, l));
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) {
                int l = nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + imax(-nmax, imin(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* ggml's get_scale_min_k4: the 6-bit scale and min of sub-block j */
static void get_scale_min(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

/* The shared part of Q4_K and Q5_K: per 32-value sub-block, best_affine
 * with weights rms(x) + |x|; scales and mins to 6 bits against their
 * maxima; d, dmin and scales[12] written at y; then every code of a
 * sub-block whose stored scale is non-zero recomputed against the stored
 * values (the rest keep best_affine's codes). L gets 256 codes. */
static void affine_superblock(const float *x, unsigned char *y, uint8_t *L, int nmax, float rmin, int nstep) {
    float mins[QKK / 32], scales[QKK / 32], w[32];
    uint8_t Laux[32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QKK / 32; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++)
            sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++)
            w[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = best_affine(32, nmax, x + 32 * j, w, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep);
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    uint8_t *sc = y + 4;
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < QKK / 32; j++) {
        uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            sc[j - 4] |= (uint8_t)((ls >> 4) << 6);
            sc[j - 0] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    const float d_all = put_f16(y, max_scale / 63.f);
    const float dmin_all = put_f16(y + 2, max_min / 63.f);
    for (int j = 0; j < QKK / 32; j++) {
        uint8_t s, m;
        get_scale_min(j, sc, &s, &m);
        const float d = d_all * s;
        if (!d)
            continue;
        const float dm = dmin_all * m;
        for (int i = 0; i < 32; i++) {
            int l = nearest_int((x[32 * j + i] + dm) / d);
            L[32 * j + i] = (uint8_t)imax(0, imin(nmax, l));
        }
    }
}

void mk_ggml_quantize_q4_k(const float *x, unsigned char *y, int64_t n) {
    uint8_t L[QKK];
    for (int64_t b = 0; b < n / QKK; b++, x += QKK, y += 144) {
        affine_superblock(x, y, L, 15, -1.f, 20);
        unsigned char *q = y + 16;
        for (int j = 0; j < QKK; j += 64, q += 32)
            for (int l = 0; l < 32; l++)
                q[l] = (unsigned char)(L[j + l] | (L[j + l + 32] << 4));
    }
}

void mk_ggml_quantize_q5_k(const float *x, unsigned char *y, int64_t n) {
    uint8_t L[QKK];
    for (int64_t b = 0; b < n / QKK; b++, x += QKK, y += 176) {
        affine_superblock(x, y, L, 31, -0.5f, 15);
        unsigned char *qh = y + 16, *ql = y + 48;
        memset(qh, 0, QKK / 8);
        uint8_t m1 = 1, m2 = 2;
        for (int k = 0; k < QKK; k += 64, ql += 32) {
            for (int j = 0; j < 32; j++) {
                int l1 = L[k + j], l2 = L[k + j + 32];
                if (l1 > 15) {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                if (l2 > 15) {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[j] = (unsigned char)(l1 | (l2 << 4));
            }
            m1 = (uint8_t)(m1 << 2);
            m2 = (uint8_t)(m2 << 2);
        }
    }
}

void mk_ggml_quantize_q6_k(const float *x, unsigned char *y, int64_t n) {
    int8_t L[QKK];
    float scales[QKK / 16];
    for (int64_t b = 0; b < n / QKK; b++, x += QKK, y += 210) {
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < QKK / 16; ib++) {
            const float s = best_symmetric(16, 32, x + 16 * ib, L + 16 * ib);
            scales[ib] = s;
            if (fabsf(s) > max_abs_scale) {
                max_abs_scale = fabsf(s);
                max_scale = s;
            }
        }
        unsigned char *ql = y, *qh = y + 128, *sc = y + 192;
        if (max_abs_scale < EPS) {
            memset(y, 0, 210);
            put_f16(y + 208, 0.f);
            continue;
        }
        float iscale = -128.f / max_scale;
        const float d_all = put_f16(y + 208, 1 / iscale);
        for (int ib = 0; ib < QKK / 16; ib++)
            sc[ib] = (unsigned char)(int8_t)imin(127, nearest_int(iscale * scales[ib]));
        for (int j = 0; j < QKK / 16; j++) {
            const float d = d_all * (int8_t)sc[j];
            if (!d)
                continue;
            for (int i = 0; i < 16; i++) {
                int l = nearest_int(x[16 * j + i] / d);
                L[16 * j + i] = (int8_t)(imax(-32, imin(31, l)) + 32);
            }
        }
        for (int j = 0; j < QKK; j += 128, ql += 64, qh += 32)
            for (int l = 0; l < 32; l++) {
                const uint8_t q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF;
                const uint8_t q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
                ql[l] = (unsigned char)(q1 | (q3 << 4));
                ql[l + 32] = (unsigned char)(q2 | (q4 << 4));
                qh[l] = (unsigned char)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                        ((L[j + l + 96] >> 4) << 6));
            }
    }
}
