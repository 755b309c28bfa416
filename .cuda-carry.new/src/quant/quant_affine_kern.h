/* Affine quantize kernel body, a template included by quant_affine.c once
 * per vector width. Before including, define:
 *   MK_QV_W        lanes per vector (4: 16-byte SSE2/NEON vectors, 8: AVX2)
 *   MK_QV_NAME(x)  x with a width suffix, naming this copy's functions
 *   MK_QV_ATTR     attributes of the row entry point (a target() or nothing)
 * It defines MK_QV_NAME(rows)(...), with the signature of mk_q_affine_rows.
 *
 * Why a template: the group loop is GCC/Clang vector-extension code that
 * must be compiled for the CPU it runs on, and x86-64's baseline gets half
 * the throughput of AVX2. Both copies do the same float32 operations in the
 * same order, so they produce identical bytes. Vectors never cross a
 * function boundary (the ABI for 32-byte vectors differs with and without
 * AVX), hence the macros instead of helper functions. */

typedef float MK_QV_NAME(vf) __attribute__((vector_size(MK_QV_W * 4)));
typedef int32_t MK_QV_NAME(vi) __attribute__((vector_size(MK_QV_W * 4)));
#define VF MK_QV_NAME(vf)
#define VI MK_QV_NAME(vi)
#define V_SEL(m, a, b) ((VF)(((m) & (VI)(a)) | (~(m) & (VI)(b))))
#define V_SPLAT(x) ((VF){0} + (x))

/* One group of G floats at x: fit scale and bias (MLX's float32 recipe,
 * scalar) and compute the G codes into q. */
static inline __attribute__((always_inline)) void MK_QV_NAME(group)(const float *x, int G, int bits,
                                                                    float *scale, float *bias, uint32_t *q) {
    VF mx, mn;
    memcpy(&mx, x, sizeof mx);
    mn = mx;
    for (int i = MK_QV_W; i < G; i += MK_QV_W) {
        VF v;
        memcpy(&v, x + i, sizeof v);
        VI gt = v > mx, lt = v < mn;
        mx = V_SEL(gt, v, mx);
        mn = V_SEL(lt, v, mn);
    }
    float wmax = mx[0], wmin = mn[0];
    for (int k = 1; k < MK_QV_W; k++) {
        wmax = mx[k] > wmax ? mx[k] : wmax;
        wmin = mn[k] < wmin ? mn[k] : wmin;
    }
    mk_q_affine_fit(wmin, wmax, bits, scale, bias);

    /* q = clamp(rint((w - bias) / scale), 0, n); NaN lands on 0 */
    const VF vb = V_SPLAT(*bias), vs = V_SPLAT(*scale);
    const VF vn = V_SPLAT((float)((1 << bits) - 1)), zero = {0};
    const VI absmask = (VI){0} + 0x7fffffff;
    for (int i = 0; i < G; i += MK_QV_W) {
        VF v;
        memcpy(&v, x + i, sizeof v);
        VF t = (v - vb) / vs;
        VF a = (VF)((VI)t & absmask);
        VF r = (a + 0x1p23f) - 0x1p23f; /* see mk_q_rint */
        VI small = a < 0x1p23f;
        r = V_SEL(small, r, a);
        r = (VF)((VI)r | ((VI)t & ~absmask));
        VI pos = r > zero;
        r = V_SEL(pos, r, zero);
        VI below = r < vn;
        r = V_SEL(below, r, vn);
        VI qi = __builtin_convertvector(r, VI);
        memcpy(q + i, &qi, sizeof qi);
    }
}

/* All rows, for one (G, bits) pair known at compile time. */
static inline __attribute__((always_inline)) void
MK_QV_NAME(rows_gb)(mk_dtype in_dt, const unsigned char *in, int64_t rows, int64_t cols, int G, int bits,
                    unsigned char *wq, unsigned char *scales, unsigned char *biases) {
    const int64_t ng = cols / G;
    const size_t in_es = in_dt == MK_DT_F32 ? 4 : 2;
    const size_t gwq = (size_t)G * (size_t)bits / 8; /* packed bytes per group */
    float x[MK_Q_MAX_GROUP];
    uint32_t q[MK_Q_MAX_GROUP];
    for (int64_t r = 0; r < rows; r++) {
        const unsigned char *row = in + (size_t)r * (size_t)cols * in_es;
        unsigned char *wrow = wq + (size_t)r * (size_t)ng * gwq;
        for (int64_t g = 0; g < ng; g++) {
            float s, b;
            mk_q_load_n(in_dt, row, g * G, G, x);
            MK_QV_NAME(group)(x, G, bits, &s, &b, q);
            mk_q_affine_pack(q, G, bits, wrow + (size_t)g * gwq);
            mk_q_store(in_dt, scales, r * ng + g, s);
            mk_q_store(in_dt, biases, r * ng + g, b);
        }
    }
}

#define MK_QV_CASE(B, G)                                                                                     \
    case (B)*1000 + (G): MK_QV_NAME(rows_gb)(in_dt, in, rows, cols, (G), (B), wq, scales, biases); break;

MK_QV_ATTR static void MK_QV_NAME(rows)(const mk_qparams *p, mk_dtype in_dt, const unsigned char *in,
                                        int64_t rows, int64_t cols, unsigned char *wq, unsigned char *scales,
                                        unsigned char *biases) {
    /* one specialised loop per (bits, group): constants let the compiler
     * unroll the group and the packing */
    switch (p->bits * 1000 + p->group) {
        /* clang-format off */
        MK_QV_CASE(2, 32) MK_QV_CASE(2, 64) MK_QV_CASE(2, 128)
        MK_QV_CASE(3, 32) MK_QV_CASE(3, 64) MK_QV_CASE(3, 128)
        MK_QV_CASE(4, 32) MK_QV_CASE(4, 64) MK_QV_CASE(4, 128)
        MK_QV_CASE(5, 32) MK_QV_CASE(5, 64) MK_QV_CASE(5, 128)
        MK_QV_CASE(6, 32) MK_QV_CASE(6, 64) MK_QV_CASE(6, 128)
        MK_QV_CASE(8, 32) MK_QV_CASE(8, 64) MK_QV_CASE(8, 128)
    default: break; /* unreachable: quant.c validated bits and group */
    }
    /* clang-format on */
}

#undef MK_QV_CASE
#undef V_SPLAT
#undef V_SEL
#undef VI
#undef VF
