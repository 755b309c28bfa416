/* mk_attn_block (kernels.h) on VN-float vectors, included by
 * kern_simd_body.h; the SIMD file defines, besides its vector primitives:
 *   v_sub(a, b), v_max(a, b) and v_min(a, b) (b returned when either is
 *   NaN, so a NaN score reaches the output), v_round (to nearest),
 *   v_ldexp(y, n) (y * 2^n, n in [-126, 127]), v_exp_fix(e, x) (0 where x <
 *   -87.3, NaN where x is NaN), MK_AKJ keys per score register tile,
 *   MK_ADV value vectors per output register tile.
 *
 * Flash-style: the query rows sit in vector lanes (qt, the block's q
 * transposed once), so a chunk of MK_ATTN_KC keys gives its scores as
 * vectors over rows: one FMA per key, dk position and row vector, the key's
 * element broadcast. The running max, the rescale factor and the running
 * sum are then vector operations over the rows too; only the value
 * products go row by row (a row's probability broadcast over dv).
 * Rows only see their own range (causal, windows): outside it a score is
 * -inf and its probability exactly 0. Stack: qt MK_ATTN_MAXD x 64 floats
 * and one chunk of scores. */

#include <float.h>
#include <math.h>
#include <stdalign.h>

/* exp(x) within a few ulp: x = n ln2 + r (ln2 in two parts), |r| <= ln2 / 2,
 * a degree-6 polynomial in r (Cephes' expf coefficients) times 2^n; 0 for
 * x < -87.3 and -inf, NaN for NaN. */
MK_T static inline vf v_exp(vf x) {
    const vf xc = v_max(v_set1(-87.3f), v_min(v_set1(88.0f), x));
    const vf n = v_round(v_mul(xc, v_set1(1.44269504088896341f)));
    vf r = v_fma(n, v_set1(-0.693359375f), xc);
    r = v_fma(n, v_set1(2.12194440e-4f), r);
    vf y = v_set1(1.9875691500e-4f);
    y = v_fma(y, r, v_set1(1.3981999507e-3f));
    y = v_fma(y, r, v_set1(8.3334519073e-3f));
    y = v_fma(y, r, v_set1(4.1665795894e-2f));
    y = v_fma(y, r, v_set1(1.6666665459e-1f));
    y = v_fma(y, r, v_set1(5.0000001201e-1f));
    y = v_fma(y, v_mul(r, r), v_add(r, v_set1(1.0f)));
    return v_exp_fix(v_ldexp(y, n), x);
}

#define ATTN_R MK_ATTN_ROWS
#define ATTN_KC 16 /* keys per chunk */
#define ATTN_ROW(s) (a->idx ? (int64_t)a->idx[s] : (s)) /* cache row of key s */

MK_T static void KSFX(attn_block)(const mk_attn_blk *a) {
    alignas(64) float qt[MK_ATTN_MAXD * ATTN_R];
    alignas(64) float st[ATTN_KC * ATTN_R];
    alignas(64) float mv[ATTN_R], lv[ATTN_R], av[ATTN_R];
    const int nr = a->nr, dk = a->dk, dv = a->dv;
    const int nrv = (nr + VN - 1) / VN;            /* row vectors in use */
    const int npad = (nrv + 3) / 4 * 4 * VN;        /* lanes the score tiles read */
    int64_t smin = INT64_MAX, smax = INT64_MIN;
    for (int r = 0; r < npad; r++) {
        if (r < nr) {
            for (int d = 0; d < dk; d++)
                qt[d * ATTN_R + r] = a->q[r][d];
            mv[r] = a->sinks ? a->sink[r] : -INFINITY;
            lv[r] = a->sinks ? 1.0f : 0.0f; /* exp(sink - m) with m = sink */
            smin = a->lo[r] < smin ? a->lo[r] : smin;
            smax = a->hi[r] > smax ? a->hi[r] : smax;
            memset(a->out[r], 0, sizeof(float) * (size_t)dv);
        } else { /* padding lanes: no keys, never written out */
            for (int d = 0; d < dk; d++)
                qt[d * ATTN_R + r] = 0.0f;
            mv[r] = -INFINITY;
            lv[r] = 0.0f;
        }
    }
    const vf scale = v_set1(a->scale), fmin = v_set1(-FLT_MAX);
    for (int64_t s = smin; s < smax; s += ATTN_KC) {
        const int kt = smax - s < ATTN_KC ? (int)(smax - s) : ATTN_KC;
        /* scores of the chunk: st[j * R + r] */
        for (int jb = 0; jb < ATTN_KC; jb += MK_AKJ) {
            if (jb >= kt) {
                for (int j = jb; j < jb + MK_AKJ; j++)
                    for (int r = 0; r < nrv * VN; r++)
                        st[j * ATTN_R + r] = -INFINITY;
                continue;
            }
            const float *kr[MK_AKJ];
            for (int jj = 0; jj < MK_AKJ; jj++)
                kr[jj] = a->k + ATTN_ROW(s + (jb + jj < kt ? jb + jj : kt - 1)) * a->ks;
            for (int rg = 0; rg < nrv; rg += 4) {
                vf acc[MK_AKJ][4];
#pragma GCC unroll 8
                for (int jj = 0; jj < MK_AKJ; jj++)
#pragma GCC unroll 4
                    for (int i = 0; i < 4; i++)
                        acc[jj][i] = v_zero();
                const float *qp = qt + rg * VN;
                for (int d = 0; d < dk; d++, qp += ATTN_R) {
                    const vf q0 = v_ld(qp), q1 = v_ld(qp + VN), q2 = v_ld(qp + 2 * VN), q3 = v_ld(qp + 3 * VN);
#pragma GCC unroll 8
                    for (int jj = 0; jj < MK_AKJ; jj++) {
                        const vf kb = v_set1(kr[jj][d]);
                        acc[jj][0] = v_fma(q0, kb, acc[jj][0]);
                        acc[jj][1] = v_fma(q1, kb, acc[jj][1]);
                        acc[jj][2] = v_fma(q2, kb, acc[jj][2]);
                        acc[jj][3] = v_fma(q3, kb, acc[jj][3]);
                    }
                }
#pragma GCC unroll 8
                for (int jj = 0; jj < MK_AKJ; jj++)
#pragma GCC unroll 4
                    for (int i = 0; i < 4; i++)
                        v_st(st + (jb + jj) * ATTN_R + (rg + i) * VN, v_mul(acc[jj][i], scale));
            }
        }
        /* each row's own range: causal end, window start */
        for (int r = 0; r < nr; r++) {
            const int64_t lo = a->lo[r] - s, hi = a->hi[r] - s;
            if (lo <= 0 && hi >= ATTN_KC)
                continue;
            for (int j = 0; j < ATTN_KC; j++)
                if (j < lo || j >= hi)
                    st[j * ATTN_R + r] = -INFINITY;
        }
        /* running max, rescale factor, probabilities, running sum */
        for (int rv = 0; rv < nrv; rv++) {
            vf mt = v_set1(-INFINITY);
            for (int j = 0; j < ATTN_KC; j++)
                mt = v_max(mt, v_ld(st + j * ATTN_R + rv * VN));
            const vf mo = v_ld(mv + rv * VN), mn = v_max(mo, mt);
            const vf base = v_max(fmin, mn); /* a row with no key yet: exp(-inf - base) = 0 */
            const vf al = v_exp(v_sub(mo, base));
            vf sum = v_zero();
            for (int j = 0; j < ATTN_KC; j++) {
                float *p = st + j * ATTN_R + rv * VN;
                const vf e = v_exp(v_sub(v_ld(p), base));
                v_st(p, e);
                sum = v_add(sum, e);
            }
            v_st(lv + rv * VN, v_fma(v_ld(lv + rv * VN), al, sum));
            v_st(mv + rv * VN, mn);
            v_st(av + rv * VN, al);
        }
        /* out[r] = out[r] * alpha + sum_j p_j v_j over the row's keys */
        for (int r = 0; r < nr; r++) {
            const int64_t j0 = a->lo[r] - s > 0 ? a->lo[r] - s : 0;
            const int64_t j1 = a->hi[r] - s < kt ? a->hi[r] - s : kt;
            float *o = a->out[r];
            const vf al = v_set1(av[r]);
            const float *vrow[ATTN_KC];
            for (int64_t j = j0; j < j1; j++)
                vrow[j] = a->v + ATTN_ROW(s + j) * a->vs;
            int d = 0;
            for (; d + MK_ADV * VN <= dv; d += MK_ADV * VN) {
                vf acc[MK_ADV];
#pragma GCC unroll 8
                for (int i = 0; i < MK_ADV; i++)
                    acc[i] = v_mul(v_ld(o + d + i * VN), al);
                for (int64_t j = j0; j < j1; j++) {
                    const vf p = v_set1(st[j * ATTN_R + r]);
                    const float *vr = vrow[j] + d;
#pragma GCC unroll 8
                    for (int i = 0; i < MK_ADV; i++)
                        acc[i] = v_fma(p, v_ld(vr + i * VN), acc[i]);
                }
#pragma GCC unroll 8
                for (int i = 0; i < MK_ADV; i++)
                    v_st(o + d + i * VN, acc[i]);
            }
            for (; d + VN <= dv; d += VN) {
                vf acc = v_mul(v_ld(o + d), al);
                for (int64_t j = j0; j < j1; j++)
                    acc = v_fma(v_set1(st[j * ATTN_R + r]), v_ld(vrow[j] + d), acc);
                v_st(o + d, acc);
            }
            for (; d < dv; d++) {
                float acc = o[d] * av[r];
                for (int64_t j = j0; j < j1; j++)
                    acc += st[j * ATTN_R + r] * vrow[j][d];
                o[d] = acc;
            }
        }
    }
    for (int r = 0; r < nr; r++) {
        const float inv = 1.0f / lv[r];
        for (int d = 0; d < dv; d++)
            a->out[r][d] *= inv;
    }
}

#undef ATTN_R
#undef ATTN_KC
#undef ATTN_ROW
