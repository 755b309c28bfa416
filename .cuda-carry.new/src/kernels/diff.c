/* The difference accumulator of every verification (kernels.h, mk_diff):
 * convert --verify, verify by name and verify across layouts report the
 * same numbers for the same values. */
#include <math.h>
#include <stdbool.h>

#include "moekit/kernels.h"

void mk_diff_add(mk_diff *d, const float *a, const float *b, size_t n) {
    for (size_t k = 0; k < n; k++) {
        float x = a[k], y = b[k];
        bool nx = isnan(x), ny = isnan(y);
        if (nx || ny) {
            d->bad += nx != ny;
            continue;
        }
        if (x == y) { /* equal infinities included */
            if (isfinite(x))
                d->ref2 += (double)x * (double)x;
            continue;
        }
        if (!isfinite(x) || !isfinite(y)) {
            d->bad++;
            continue;
        }
        double e = (double)y - (double)x;
        d->err2 += e * e;
        d->ref2 += (double)x * (double)x;
        if (fabs(e) > d->max_abs)
            d->max_abs = fabs(e);
    }
}

void mk_diff_merge(mk_diff *into, const mk_diff *d) {
    into->err2 += d->err2;
    into->ref2 += d->ref2;
    into->bad += d->bad;
    if (d->max_abs > into->max_abs)
        into->max_abs = d->max_abs;
}

double mk_diff_rel(const mk_diff *d) {
    if (d->ref2 > 0)
        return sqrt(d->err2 / d->ref2);
    return d->err2 > 0 ? INFINITY : 0.0;
}
