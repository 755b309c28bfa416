/* The Gated DeltaNet recurrence in double, token by token, as backend.h
 * defines it (mk_gdn_args): the reference of test_backend_ops' gdn cases
 * and of the CUDA chunked kernel's host emulation (tests/emu/). Plain C
 * that C++ compiles too. qkv: T rows of stride 2*NK*DK + NV*DV (q, k, v);
 * a, b: [T, NV]; A_log, dt_bias: [NV]; S: [NV, DK, DV], updated; out:
 * [T, NV, DV]. Returns false when out of memory. */
#ifndef MK_TESTS_GDN_REF_H
#define MK_TESTS_GDN_REF_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

static inline bool gdn_ref(const float *qkv, const float *aa, const float *bb, const float *al, const float *dt,
                           int T, int NK, int NV, int DK, int DV, double *S0, double *orf) {
    const int STR = 2 * NK * DK + NV * DV;
    double *q = (double *)malloc(sizeof(double) * (size_t)DK), *k = (double *)malloc(sizeof(double) * (size_t)DK),
           *d = (double *)malloc(sizeof(double) * (size_t)DV);
    if (!q || !k || !d) {
        free(q);
        free(k);
        free(d);
        return false;
    }
    for (int h = 0; h < NV; h++) {
        int kh = h / (NV / NK);
        double *S = S0 + (int64_t)h * DK * DV;
        for (int t = 0; t < T; t++) {
            double nq = 0, nk = 0;
            for (int i = 0; i < DK; i++) {
                q[i] = qkv[t * STR + kh * DK + i];
                k[i] = qkv[t * STR + NK * DK + kh * DK + i];
                nq += q[i] * q[i];
                nk += k[i] * k[i];
            }
            for (int i = 0; i < DK; i++) {
                q[i] = q[i] / sqrt(nq + 1e-6) / sqrt((double)DK);
                k[i] = k[i] / sqrt(nk + 1e-6);
            }
            double beta = 1.0 / (1.0 + exp(-(double)bb[t * NV + h]));
            double xa = (double)aa[t * NV + h] + dt[h];
            double sp = xa > 20 ? xa : log1p(exp(xa));
            double decay = exp(-exp((double)al[h]) * sp);
            for (int i = 0; i < DK * DV; i++)
                S[i] *= decay;
            for (int j = 0; j < DV; j++) {
                double sk = 0;
                for (int i = 0; i < DK; i++)
                    sk += S[i * DV + j] * k[i];
                d[j] = (qkv[t * STR + 2 * NK * DK + h * DV + j] - sk) * beta;
            }
            for (int i = 0; i < DK; i++)
                for (int j = 0; j < DV; j++)
                    S[i * DV + j] += k[i] * d[j];
            for (int j = 0; j < DV; j++) {
                double acc = 0;
                for (int i = 0; i < DK; i++)
                    acc += S[i * DV + j] * q[i];
                orf[((int64_t)t * NV + h) * DV + j] = acc;
            }
        }
    }
    free(q);
    free(k);
    free(d);
    return true;
}

#endif
