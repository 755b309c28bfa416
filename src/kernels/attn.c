/* mk_attn_block (kernels.h): the dispatcher and the portable table's
 * version, per row in two passes (the max, then the exponentials and the
 * weighted values), the plainest statement of the contract. The SIMD
 * tables' flash-style version is kern_attn_body.h. */
#include <math.h>
#include <string.h>

#include "kernels/kern_impl.h"
#include "moekit/kernels.h"

void mk_attn_block_ref(const mk_attn_blk *a) {
    for (int r = 0; r < a->nr; r++) {
        const float *q = a->q[r];
        float *o = a->out[r];
        float m = a->sinks ? a->sink[r] : -INFINITY;
        for (int64_t s = a->lo[r]; s < a->hi[r]; s++) {
            float x = 0.0f;
            const float *k = a->k + (a->idx ? a->idx[s] : s) * a->ks;
            for (int d = 0; d < a->dk; d++)
                x += q[d] * k[d];
            x *= a->scale;
            m = x > m ? x : m;
        }
        float l = a->sinks ? expf(a->sink[r] - m) : 0.0f;
        memset(o, 0, sizeof(float) * (size_t)a->dv);
        for (int64_t s = a->lo[r]; s < a->hi[r]; s++) {
            float x = 0.0f;
            const int64_t p = a->idx ? a->idx[s] : s;
            const float *k = a->k + p * a->ks, *v = a->v + p * a->vs;
            for (int d = 0; d < a->dk; d++)
                x += q[d] * k[d];
            float e = expf(x * a->scale - m);
            l += e;
            for (int d = 0; d < a->dv; d++)
                o[d] += e * v[d];
        }
        const float inv = 1.0f / l;
        for (int d = 0; d < a->dv; d++)
            o[d] *= inv;
    }
}

void mk_attn_block(const mk_attn_blk *a) {
    const mk_kern_i *k = mk_kern_active();
    (k->attn_block ? k->attn_block : mk_attn_block_ref)(a);
}
