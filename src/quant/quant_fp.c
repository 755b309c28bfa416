/* MLX floating-point quantization modes mxfp4, mxfp8 and nvfp4, bit-exact
 * to the CPU path, and their dequantization.
 *
 * On the CPU, mx.quantize for these modes is the op graph in mlx/ops.cpp
 * (fp_quantize's fallback), so every step is an array op in the input
 * dtype T: each result is rounded to T (bf16/f16) before the next op.
 * Per group of G elements (32 for mx*, 16 for nvfp4):
 *   amax = max |w|                                   (exact in T)
 *   s    = (T)(amax / maxval)          maxval 6 (fp4) or 448 (fp8)
 *   mx*:   e = s == 0 ? 0 : (int)rint((T)log2(s));  byte = max(e + 127, 0)
 *          div = (T)2^e
 *   nvfp4: byte = ToFP8(s);  div = FromFP8(byte)
 *          with a global scale gs: enc = 2688 / gs (float32);
 *          byte = ToFP8(s * enc); div = FromFP8(byte) / enc, and the element
 *          steps below run in float32 (T op float32 promotes to float32)
 *   x    = (T)(w / div)
 *   fp4:   code = argmin_k |(T)(x - LUT[k])| over MLX's 16-entry LUT
 *          {+0,.5,1,1.5,2,3,4,6,-0,-.5,...,-6}, first minimum wins: exact
 *          ties go to the smaller magnitude, a negative x rounding to zero
 *          gets +0 (code 0), and NaN/Inf x (an all-zero nvfp4 group divides
 *          by a zero scale) gets code 0.
 *   fp8:   code = ToFP8(x) (MLX's E4M3 conversion, mk_q_e4m3_encode)
 * rint is half-to-even (MLX's `round` is rint), so a bf16 log2 of exactly
 * 2.5 gives e = 2. MLX's `where` promotes e back to T, so the byte is a
 * float -> uint8 cast of e + 127: undefined in C++ for e < -127 (amax below
 * about 2^-124, float32/bf16 only); Apple silicon, MLX's home, gives 0
 * (x86 would wrap), and so do we; but where MLX then divides by 2^e, we
 * divide by the 2^-127 the byte stores (the one deliberate difference:
 * MLX's codes there decode 2^(-127-e) times too large).
 *
 * The argmin over 16 entries reduces to 8 magnitudes: for x >= 0 every
 * negative entry is at least as far as its positive twin and comes later,
 * for x < 0 the reverse, except the two zeros where the earlier +0 wins;
 * rounding to T is sign-symmetric, so |(T)(x - L)| = |(T)(|x| - |L|)|. */
#include "quant/quant_impl.h"

#include <stdbool.h>

/* MLX's fp4 argmin (see the file comment) for x already rounded to elem_dt.
 * All 8 magnitudes are scanned: far above 6, rounding to bf16/f16 can make
 * several distances equal (bf16 |x| = 2232: 2226 and 2228 both round to
 * 2224), and then the earlier entry wins, as in MLX. */
static inline uint8_t fp4_encode(float x, mk_dtype elem_dt) {
    float a = fabsf(x);
    float best_d = a; /* distance to +0 */
    int best = 0;
    for (int j = 1; j < 8; j++) {
        float d = fabsf(mk_q_round_to(elem_dt, a - mk_e2m1_to_f32((uint8_t)j)));
        if (d < best_d) {
            best_d = d;
            best = j;
        }
    }
    return (uint8_t)(best == 0 ? 0 : (best | (x < 0.0f ? 8 : 0)));
}

/* How one group is scaled: the stored byte, the divisor applied to each
 * element, and the type the element steps round to. */
typedef struct fp_scale {
    uint8_t byte;
    float div;
    mk_dtype elem_dt;
} fp_scale;

/* mxfp4 / mxfp8: E8M0 power of two from the group's absolute maximum. */
static fp_scale mx_scale(float amax, float maxval, const mk_qparams *p, mk_dtype t) {
    (void)p;
    float s = mk_q_round_to(t, amax / maxval);
    int e = 0;
    if (s != 0.0f) { /* MLX: where(scales == 0, 0, round(log2(scales))) */
        float r = mk_q_rint(mk_q_round_to(t, (float)log2((double)s)));
        e = fabsf(r) < 1024.0f ? (int)r : 0; /* Inf/NaN only from non-finite input */
    }
    /* E8M0's floor is 2^-127 (byte 0). MLX stores byte 0 below it but still
     * divides by 2^e, so its codes and its stored scale disagree (8x for
     * e = -130). Dividing by the stored 2^-127 keeps them consistent, as the
     * OCP MX spec clamps the shared exponent. */
    e = e < -127 ? -127 : e;
    fp_scale fs = {(uint8_t)(e + 127), mk_q_round_to(t, ldexpf(1.0f, e)), t};
    return fs;
}

/* nvfp4: E4M3 scale, optionally under a float32 global scale. */
static fp_scale nv_scale(float amax, float maxval, const mk_qparams *p, mk_dtype t) {
    float s = mk_q_round_to(t, amax / maxval);
    fp_scale fs;
    if (p->global_scale > 0.0f) {
        float enc = (448.0f * 6.0f) / p->global_scale;
        fs.byte = mk_q_e4m3_encode(s * enc);
        fs.div = mk_e4m3_to_f32(fs.byte) / enc;
        fs.elem_dt = MK_DT_F32;
    } else {
        fs.byte = mk_q_e4m3_encode(s);
        fs.div = mk_e4m3_to_f32(fs.byte); /* every E4M3 value is exact in f16/bf16 */
        fs.elem_dt = t;
    }
    return fs;
}

/* Per fp mode: the largest code value and the scale recipe. */
typedef struct fp_mode {
    float maxval;
    fp_scale (*scale)(float amax, float maxval, const mk_qparams *p, mk_dtype t);
    bool e8m0; /* scale byte is a power of two (else E4M3) */
} fp_mode;

static const fp_mode g_fp_modes[] = {
    [MK_QMODE_MXFP4] = {6.0f, mx_scale, true},
    [MK_QMODE_MXFP8] = {448.0f, mx_scale, true},
    [MK_QMODE_NVFP4] = {6.0f, nv_scale, false},
};

/* Codes of one group: x / div rounded to elem_dt, then encoded. */
static inline __attribute__((always_inline)) void fp_codes(const float *x, int G, int bits, float div,
                                                           mk_dtype elem_dt, uint32_t *q) {
    for (int j = 0; j < G; j++) {
        float v = mk_q_round_to(elem_dt, x[j] / div);
        q[j] = bits == 4 ? fp4_encode(v, elem_dt) : mk_q_e4m3_encode(v);
    }
}

void mk_q_fp_rows(const mk_qparams *p, mk_dtype in_dt, const unsigned char *in, int64_t rows, int64_t cols,
                  unsigned char *wq, unsigned char *scales) {
    const fp_mode *m = &g_fp_modes[p->mode];
    const int G = p->group, bits = p->bits;
    const int64_t ng = cols / G;
    const size_t in_es = in_dt == MK_DT_F32 ? 4 : 2;
    const size_t gwq = (size_t)G * (size_t)bits / 8;
    float x[MK_Q_MAX_GROUP];
    uint32_t q[MK_Q_MAX_GROUP];
    for (int64_t r = 0; r < rows; r++) {
        const unsigned char *row = in + (size_t)r * (size_t)cols * in_es;
        for (int64_t g = 0; g < ng; g++) {
            mk_q_load_n(in_dt, row, g * G, G, x);
            float amax = 0.0f;
            for (int j = 0; j < G; j++)
                amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
            fp_scale fs = m->scale(amax, m->maxval, p, in_dt);
            switch (fs.elem_dt) { /* constant dtypes let each copy inline its rounding */
            case MK_DT_BF16: fp_codes(x, G, bits, fs.div, MK_DT_BF16, q); break;
            case MK_DT_F16: fp_codes(x, G, bits, fs.div, MK_DT_F16, q); break;
            default: fp_codes(x, G, bits, fs.div, MK_DT_F32, q); break;
            }
            mk_q_pack(q, G, bits, wq + ((size_t)r * (size_t)ng + (size_t)g) * gwq);
            scales[r * ng + g] = fs.byte;
        }
    }
}

/* Scale of one group for dequantization, in work_dt. */
static float fp_deq_scale(const mk_qparams *p, uint8_t byte, mk_dtype work_dt) {
    if (g_fp_modes[p->mode].e8m0) /* MLX: 2^(byte - 127) in the output type; 255 -> Inf */
        return mk_q_round_to(work_dt, ldexpf(1.0f, (int)byte - 127));
    float s = mk_e4m3_to_f32(byte);
    if (p->global_scale > 0.0f)
        s = mk_q_round_to(work_dt, s / ((448.0f * 6.0f) / p->global_scale));
    return s;
}

void mk_q_fp_deq(const mk_qparams *p, const unsigned char *wq_row, const unsigned char *s_row, int64_t g0,
                 int64_t ng, mk_dtype work_dt, float *out) {
    const int G = p->group, bits = p->bits;
    const size_t gwq = (size_t)G * (size_t)bits / 8;
    uint32_t q[MK_Q_MAX_GROUP];
    for (int64_t g = g0; g < g0 + ng; g++, out += G) {
        float s = fp_deq_scale(p, s_row[g], work_dt);
        mk_q_unpack(wq_row + (size_t)g * gwq, G, bits, q);
        for (int j = 0; j < G; j++) {
            float v = bits == 4 ? mk_e2m1_to_f32((uint8_t)q[j])
                                : mk_e4m3_to_f32((uint8_t)q[j]);
            out[j] = mk_q_round_to(work_dt, v * s);
        }
    }
}
