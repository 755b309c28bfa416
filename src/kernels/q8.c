/* int8 activations for the integer-dot decode kernels (kern_impl.h, "int8
 * activations"): the portable block quantizer, which defines q and d for
 * every path, and the per-group sums of the quantized vector that fold the
 * affine biases in.
 *
 * Why int8: a 4-bit affine matvec in float32 converts every code to a float
 * and spends one FMA per weight, so one core dequantizes about 8 GB/s of
 * weights while it could read 20+; with x in int8 the codes multiply as
 * bytes (AVX2 maddubs: 32 products per instruction) and scales apply once
 * per block. The price is x's rounding, |x - q d| <= amax / 254 per block
 * of 32, which the tests state and check. */
#include <math.h>

#include "kernels/kern_impl.h"

void mk_q8_quant_blocks(const float *x, int64_t n, int blk, int8_t *q, float *d, float *qs) {
    for (int64_t b = 0; b < n / blk; b++) {
        const float *xb = x + b * blk;
        int8_t *qb = q + b * blk;
        float amax = 0.0f;
        bool bad = false;
        for (int i = 0; i < blk; i++) {
            float a = fabsf(xb[i]);
            if (!(a <= 3.40282347e38f))
                bad = true; /* NaN or infinity */
            else if (a > amax)
                amax = a;
        }
        int32_t sum = 0;
        if (bad || amax == 0.0f) {
            for (int i = 0; i < blk; i++)
                qb[i] = 0;
            d[b] = bad ? NAN : 0.0f;
        } else {
            const float id = 127.0f / amax;
            for (int i = 0; i < blk; i++) {
                float v = xb[i] * id;
                qb[i] = (int8_t)nearbyintf(v);
                sum += qb[i];
            }
            d[b] = amax / 127.0f;
        }
        qs[b] = (float)sum;
    }
}

void mk_q8_quant(const float *x, int64_t n, int8_t *q, float *d, float *qs) {
    mk_q8_quant_blocks(x, n, MK_Q8_BLOCK, q, d, qs);
}

void mk_q8_group_sums(const float *d, const float *qs, int64_t ng, int bpg, float *xg) {
    for (int64_t g = 0; g < ng; g++) {
        float s = 0.0f;
        for (int k = 0; k < bpg; k++) {
            float t = d[g * bpg + k] * qs[g * bpg + k];
            s += t;
        }
        xg[g] = s;
    }
}
