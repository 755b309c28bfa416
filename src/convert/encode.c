/* ENCODE, the second half of every computed convert operation: float32
 * values -> the output's float form, rounded once.
 *
 *   bf16   round to nearest even, NaN kept quiet (mk_f32_to_bf16, branch-free)
 *   f16    mk_dtype_from_f32 (src/core)
 *   f32    the values as they are
 *
 * The other encoding, MLX quantization (float rows -> weight / scales /
 * biases through src/quant, MLX-exact), is quant_ops.c. Decoders
 * (decode.c) build float32 rows and hand them here, so every float output
 * byte of a conversion is rounded by this one file. */
#include <string.h>

#include "convert/conv_impl.h"

static void encode_bf16(const float *v, int64_t n, unsigned char *out) {
    uint16_t *o = (uint16_t *)(void *)out; /* out is 2-aligned: slots are 64-aligned, rows whole */
    for (int64_t i = 0; i < n; i++)
        o[i] = mk_f32_to_bf16(v[i]);
}

void cv_encode(mk_dtype dt, const float *v, int64_t n, unsigned char *out) {
    if (dt == MK_DT_F32)
        memcpy(out, v, (size_t)n * 4);
    else if (dt == MK_DT_BF16)
        encode_bf16(v, n, out);
    else
        mk_dtype_from_f32(dt, v, out, (size_t)n);
}
