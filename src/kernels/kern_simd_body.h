/* Format kernels written once over an abstract float vector and included by
 * each SIMD file (kern_avx2.c, kern_avx512.c) after it has defined:
 *
 *   MK_T            target attribute for every function
 *   KSFX(name)      name##_<isa>
 *   MK_KERN_TABLE   the table to define (mk_kern_avx2, ...)
 *   VN              floats per vector; vf the vector type
 *   v_zero v_set1 v_add v_mul v_fma v_ld v_st v_hsum
 *   ld_bf16 ld_f16  VN elements of a 16-bit float row
 *   ld_e4m3         VN E4M3 bytes, as value * 2^-8 (F16C trick, see avx2 file)
 *   ld_e5m2         VN E5M2 bytes, exact
 *   ld_u8           VN bytes as 0..255
 *   ld_u4x2         VN bytes = 2*VN nibbles LSB-first, as 0..15, two vectors
 *   ld_fp4          VN/2 bytes = VN E2M1 nibbles, as value * 2
 *   ld_bits, MK_LDB VN elements of any width (see "any width"), reading
 *                   MK_LDB bytes
 *   ld_q4p, ld_f4p  VN bytes as 0..15 / 2 * E2M1 value, low nibbles and
 *                   high nibbles as two vectors (see "x preparation")
 *   KSFX(dot), KSFX(sumsq), KSFX(gemm_tile)
 * and defines the rest of the table (KSFX(axpy) and the format kernels).
 *
 * Divisions: float formats, FP8 block-scaled, affine (4 and 8 bits in
 * SIMD, other widths unpacked a group at a time), MX/NV microscaled, table.
 * Inputs never straddle a vector past the row: each loader reads exactly
 * the bytes of its VN elements and ragged tails (float and FP8 rows only;
 * the other formats have column counts that are multiples of 16 or 32) are
 * finished in scalar code. */

#define MK_E4M3_K 256.0f /* ld_e4m3 returns value / 256 */

/* ---- float formats ---------------------------------------------------- */

/* One matvec per 16/32-bit float format: 4 accumulators, scalar tail. */
#define MK_MV_FLOAT(NAME, ESZ, LD, SCALAR)                                                                   \
    MK_T static void KSFX(NAME)(const mk_wt *w, int64_t r0, int64_t r1, const float *x, const float *aux,    \
                                float *y) {                                                                  \
        const int64_t cols = w->cols;                                                                        \
        for (int64_t r = r0; r < r1; r++) {                                                                  \
            const uint8_t *p = (const uint8_t *)w->data + (size_t)(r * cols) * (ESZ);                        \
            vf a0 = v_zero(), a1 = v_zero(), a2 = v_zero(), a3 = v_zero();                                   \
            int64_t c = 0;                                                                                   \
            for (; c + 4 * VN <= cols; c += 4 * VN) {                                                        \
                a0 = v_fma(LD(p + (ESZ)*c), v_ld(x + c), a0);                                                \
                a1 = v_fma(LD(p + (ESZ) * (c + VN)), v_ld(x + c + VN), a1);                                  \
                a2 = v_fma(LD(p + (ESZ) * (c + 2 * VN)), v_ld(x + c + 2 * VN), a2);                          \
                a3 = v_fma(LD(p + (ESZ) * (c + 3 * VN)), v_ld(x + c + 3 * VN), a3);                          \
            }                                                                                                \
            for (; c + VN <= cols; c += VN)                                                                  \
                a0 = v_fma(LD(p + (ESZ)*c), v_ld(x + c), a0);                                                \
            float s = v_hsum(v_add(v_add(a0, a1), v_add(a2, a3)));                                           \
            for (; c < cols; c++)                                                                            \
                s += SCALAR(p + (ESZ)*c) * x[c];                                                             \
            y[r - r0] = s;                                                                                   \
        }                                                                                                    \
    }

#define MK_DQ_FLOAT(NAME, ESZ, LD, SCALAR)                                                                   \
    MK_T static void KSFX(NAME)(const mk_wt *w, int64_t r, int64_t c0, int64_t c1, float *out) {             \
        const uint8_t *p = (const uint8_t *)w->data + (size_t)(r * w->cols) * (ESZ);                         \
        int64_t c = c0;                                                                                      \
        for (; c + VN <= c1; c += VN)                                                                        \
            v_st(out + (c - c0), LD(p + (ESZ)*c));                                                           \
        for (; c < c1; c++)                                                                                  \
            out[c - c0] = SCALAR(p + (ESZ)*c);                                                               \
    }

/* Scalar tails: core's element loader (moekit/dtype.h). */
static inline float mk_sc_f32(const uint8_t *p) { return mk_dtype_load_f32(MK_DT_F32, p, 0); }
static inline float mk_sc_bf16(const uint8_t *p) { return mk_dtype_load_f32(MK_DT_BF16, p, 0); }
static inline float mk_sc_f16(const uint8_t *p) { return mk_dtype_load_f32(MK_DT_F16, p, 0); }
MK_T static inline vf ld_f32(const uint8_t *p) {
    return v_ld((const float *)(const void *)p);
}

MK_MV_FLOAT(mv_f32, 4, ld_f32, mk_sc_f32)
MK_MV_FLOAT(mv_bf16, 2, ld_bf16, mk_sc_bf16)
MK_MV_FLOAT(mv_f16, 2, ld_f16, mk_sc_f16)
MK_DQ_FLOAT(dq_bf16, 2, ld_bf16, mk_sc_bf16)
MK_DQ_FLOAT(dq_f16, 2, ld_f16, mk_sc_f16)

/* ---- FP8 with block scales -------------------------------------------- */

/* Walk row r's column blocks in [c0, c1); per block, vector part over
 * whole vectors and a scalar LUT tail. */
MK_T static inline float KSFX(fp8_seg_dot)(const mk_wt *w, const uint8_t *p, const float *x, int64_t c0,
                                           int64_t c1, const float *lut) {
    const bool e4 = w->fmt == MK_WF_FP8_E4M3;
    vf a0 = v_zero(), a1 = v_zero();
    int64_t c = c0;
    if (e4) {
        for (; c + 2 * VN <= c1; c += 2 * VN) {
            a0 = v_fma(ld_e4m3(p + c), v_ld(x + c), a0);
            a1 = v_fma(ld_e4m3(p + c + VN), v_ld(x + c + VN), a1);
        }
        for (; c + VN <= c1; c += VN)
            a0 = v_fma(ld_e4m3(p + c), v_ld(x + c), a0);
    } else {
        for (; c + 2 * VN <= c1; c += 2 * VN) {
            a0 = v_fma(ld_e5m2(p + c), v_ld(x + c), a0);
            a1 = v_fma(ld_e5m2(p + c + VN), v_ld(x + c + VN), a1);
        }
        for (; c + VN <= c1; c += VN)
            a0 = v_fma(ld_e5m2(p + c), v_ld(x + c), a0);
    }
    float s = v_hsum(v_add(a0, a1)) * (e4 ? MK_E4M3_K : 1.0f);
    for (; c < c1; c++)
        s += lut[p[c]] * x[c];
    return s;
}

MK_T static void KSFX(mv_fp8)(const mk_wt *w, int64_t r0, int64_t r1, const float *x, const float *aux,
                              float *y) {
    const mk_luts *L = mk_luts_get();
    const float *lut = w->fmt == MK_WF_FP8_E4M3 ? L->e4m3 : L->e5m2;
    const int64_t cols = w->cols, bc = w->scales ? w->block_c : cols;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *p = (const uint8_t *)w->data + r * cols;
        float s = 0.0f;
        for (int64_t cb = 0; cb < cols; cb += bc) {
            int64_t ce = cb + bc < cols ? cb + bc : cols;
            s += KSFX(fp8_seg_dot)(w, p, x, cb, ce, lut) * mk_wt_fp8_scale(w, r, cb);
        }
        y[r - r0] = s;
    }
}

MK_T static void KSFX(dq_fp8)(const mk_wt *w, int64_t r, int64_t c0, int64_t c1, float *out) {
    const mk_luts *L = mk_luts_get();
    const bool e4 = w->fmt == MK_WF_FP8_E4M3;
    const float *lut = e4 ? L->e4m3 : L->e5m2;
    const int64_t bc = w->scales ? w->block_c : w->cols;
    const uint8_t *p = (const uint8_t *)w->data + r * w->cols;
    for (int64_t cb = c0; cb < c1;) {
        int64_t ce = (cb / bc + 1) * bc; /* end of the block holding cb */
        if (ce > c1)
            ce = c1;
        float sc = mk_wt_fp8_scale(w, r, cb);
        vf vs = v_set1(sc * (e4 ? MK_E4M3_K : 1.0f));
        int64_t c = cb;
        for (; c + VN <= ce; c += VN)
            v_st(out + (c - c0), v_mul(e4 ? ld_e4m3(p + c) : ld_e5m2(p + c), vs));
        for (; c < ce; c++)
            out[c - c0] = lut[p[c]] * sc;
        cb = ce;
    }
}

/* ---- MLX affine ------------------------------------------------------- */

/* ---- x preparation: group sums, nibble order ---------------------------
 * ld_q4p / ld_f4p read VN bytes = 2*VN nibbles and return the low nibbles
 * (even elements) and the high nibbles (odd elements) as two vectors, which
 * saves the interleaving shuffles; x is reordered to match once per call:
 * each block of 2*VN elements becomes [its VN even elements, its VN odd]. */
static inline void mk_perm_x(const float *x, float *xp, int64_t cols) {
    for (int64_t b = 0; b + 2 * VN <= cols; b += 2 * VN)
        for (int i = 0; i < VN; i++) {
            xp[b + i] = x[b + 2 * i];
            xp[b + VN + i] = x[b + 2 * i + 1];
        }
}

/* aux = [sum of x over each group | (4-bit only) reordered x] */
MK_T static bool KSFX(prep_affine)(const mk_wt *w, const float *x, float *aux, size_t cap) {
    const int64_t g = w->group, ng = w->cols / g;
    if ((size_t)(ng + (w->bits == 4 ? w->cols : 0)) > cap)
        return false;
    for (int64_t gi = 0; gi < ng; gi++) {
        vf s = v_zero();
        for (int64_t j = 0; j < g; j += VN)
            s = v_add(s, v_ld(x + gi * g + j));
        aux[gi] = v_hsum(s);
    }
    if (w->bits == 4)
        mk_perm_x(x, aux + ng, w->cols);
    return true;
}

/* aux = reordered x (MXFP4) */
MK_T static bool KSFX(prep_perm)(const mk_wt *w, const float *x, float *aux, size_t cap) {
    if ((size_t)w->cols > cap)
        return false;
    mk_perm_x(x, aux, w->cols);
    return true;
}

/* (q . x) over one group as a vector, per bit width; xp is reordered x. */
MK_T static inline vf KSFX(qdot4)(const uint8_t *p, const float *xp, int g) {
    vf qa = v_zero(), qb = v_zero();
    for (int j = 0; j < g; j += 2 * VN) {
        vf lo, hi;
        ld_q4p(p + j / 2, &lo, &hi);
        qa = v_fma(lo, v_ld(xp + j), qa);
        qb = v_fma(hi, v_ld(xp + j + VN), qb);
    }
    return v_add(qa, qb);
}

MK_T static inline vf KSFX(qdot8)(const uint8_t *p, const float *x, int g) {
    vf qa = v_zero(), qb = v_zero();
    for (int j = 0; j < g; j += 2 * VN) {
        qa = v_fma(ld_u8(p + j), v_ld(x + j), qa);
        qb = v_fma(ld_u8(p + j + VN), v_ld(x + j + VN), qb);
    }
    return v_add(qa, qb);
}

/* Any width (2, 3, 5, 6): element i of a VN-element chunk sits at byte
 * o_i = i*bits/8, bit i*bits%8, so a byte shuffle puts bytes o_i, o_i+1 in
 * lane i, a per-lane shift aligns it and a mask cuts it (ld_bits). The
 * controls depend only on bits and are built once per call. A chunk whose
 * MK_LDB-byte load would pass the end of the row is copied first. */
typedef struct mk_bits_ctl {
    uint8_t shuf[4 * VN];
    uint32_t shift[VN];
    int bits;
} mk_bits_ctl;

static inline void mk_bits_ctl_init(mk_bits_ctl *k, int bits) {
    k->bits = bits;
    for (int i = 0; i < VN; i++) {
        int bit = i * bits;
        k->shuf[4 * i] = (uint8_t)(bit / 8);
        k->shuf[4 * i + 1] = (uint8_t)(bit / 8 + 1);
        k->shuf[4 * i + 2] = k->shuf[4 * i + 3] = 0x80;
        k->shift[i] = (uint32_t)(bit % 8);
    }
}

MK_T static inline vf KSFX(ld_bits_safe)(const uint8_t *p, const uint8_t *end, const mk_bits_ctl *k) {
    if (p + MK_LDB <= end)
        return ld_bits(p, k);
    uint8_t tmp[MK_LDB] = {0};
    memcpy(tmp, p, (size_t)(end - p));
    return ld_bits(tmp, k);
}

MK_T static inline vf KSFX(qdotn)(const uint8_t *p, const uint8_t *end, const float *x, int g,
                                  const mk_bits_ctl *k) {
    vf qa = v_zero(), qb = v_zero();
    int j = 0;
    for (; j + 2 * VN <= g; j += 2 * VN) {
        qa = v_fma(KSFX(ld_bits_safe)(p + j * k->bits / 8, end, k), v_ld(x + j), qa);
        qb = v_fma(KSFX(ld_bits_safe)(p + (j + VN) * k->bits / 8, end, k), v_ld(x + j + VN), qb);
    }
    return v_add(qa, qb);
}

/* cnt F32/BF16/F16 scales to floats. */
MK_T static inline void KSFX(cvt_scales)(mk_dtype t, const uint8_t *src, float *dst, int cnt) {
    int j = 0;
    if (t == MK_DT_F32) {
        memcpy(dst, src, (size_t)cnt * sizeof(float));
        return;
    }
    if (t == MK_DT_BF16)
        for (; j + VN <= cnt; j += VN)
            v_st(dst + j, ld_bf16(src + 2 * j));
    else
        for (; j + VN <= cnt; j += VN)
            v_st(dst + j, ld_f16(src + 2 * j));
    for (; j < cnt; j++)
        dst[j] = t == MK_DT_BF16 ? mk_sc_bf16(src + 2 * j) : mk_sc_f16(src + 2 * j);
}

/* Row loop shared by all widths: acc += s_g * (q.x)_g, plus sum b_g xg_g
 * with xg = aux (group sums) and xp = aux + ng (reordered x, 4-bit only).
 * Scales and biases are converted to float 64 groups at a time so the
 * group loop has no per-group dtype decoding. */
#define MK_MV_AFFINE(NAME, QDOT)                                                                             \
    MK_T static void KSFX(NAME)(const mk_wt *w, int64_t r0, int64_t r1, const float *x, const float *aux,    \
                                float *y) {                                                                  \
        const int bits = w->bits, g = w->group;                                                              \
        const int64_t ng = w->cols / g, rb = w->cols * bits / 8, gb = (int64_t)g * bits / 8;                 \
        const float *xg = aux, *xp = aux + ng;                                                               \
        const size_t ssz = w->sdtype == MK_DT_F32 ? 4 : 2;                                                   \
        float s[64], b[64];                                                                                  \
        mk_bits_ctl kc;                                                                                      \
        mk_bits_ctl_init(&kc, bits);                                                                         \
        for (int64_t r = r0; r < r1; r++) {                                                                  \
            const uint8_t *p = (const uint8_t *)w->data + r * rb, *end = p + rb;                             \
            vf acc = v_zero();                                                                               \
            (void)end;                                                                                       \
            float bsum = 0.0f;                                                                               \
            for (int64_t g0 = 0; g0 < ng; g0 += 64) {                                                        \
                int cnt = ng - g0 < 64 ? (int)(ng - g0) : 64, k = 0;                                         \
                size_t off = (size_t)(r * ng + g0) * ssz;                                                    \
                KSFX(cvt_scales)(w->sdtype, (const uint8_t *)w->scales + off, s, cnt);                       \
                KSFX(cvt_scales)(w->sdtype, (const uint8_t *)w->biases + off, b, cnt);                       \
                for (; k + VN <= cnt; k += VN) /* bias terms join acc */                                     \
                    acc = v_fma(v_ld(b + k), v_ld(xg + g0 + k), acc);                                        \
                for (; k < cnt; k++)                                                                         \
                    bsum += b[k] * xg[g0 + k];                                                               \
                for (k = 0; k < cnt; k++) {                                                                  \
                    const int64_t gi = g0 + k;                                                               \
                    acc = v_fma(QDOT, v_set1(s[k]), acc);                                                    \
                }                                                                                            \
            }                                                                                                \
            y[r - r0] = v_hsum(acc) + bsum;                                                                  \
        }                                                                                                    \
        (void)xp;                                                                                            \
        (void)x;                                                                                             \
    }

MK_MV_AFFINE(mv_affine4, KSFX(qdot4)(p + gi * gb, xp + gi * g, g))
MK_MV_AFFINE(mv_affine8, KSFX(qdot8)(p + gi * gb, x + gi * g, g))
MK_MV_AFFINE(mv_affinen, KSFX(qdotn)(p + gi * gb, end, x + gi * g, g, &kc))

MK_T static void KSFX(mv_affine)(const mk_wt *w, int64_t r0, int64_t r1, const float *x, const float *aux,
                                 float *y) {
    static const mk_matvec_fn by_bits[9] = {
        [2] = KSFX(mv_affinen), [3] = KSFX(mv_affinen), [4] = KSFX(mv_affine4),
        [5] = KSFX(mv_affinen), [6] = KSFX(mv_affinen), [8] = KSFX(mv_affine8),
    };
    by_bits[w->bits](w, r0, r1, x, aux, y);
}

/* out = s * q + b, one group at a time. */
MK_T static void KSFX(dq_affine)(const mk_wt *w, int64_t r, int64_t c0, int64_t c1, float *out) {
    const int bits = w->bits, g = w->group;
    const int64_t ng = w->cols / g, rb = w->cols * bits / 8;
    const uint8_t *p = (const uint8_t *)w->data + r * rb, *end = p + rb;
    mk_bits_ctl kc;
    if (bits != 4 && bits != 8)
        mk_bits_ctl_init(&kc, bits);
    for (int64_t c = c0; c < c1; c += g) {
        int64_t gi = c / g;
        vf s = v_set1(mk_dtype_load_f32(w->sdtype, w->scales, r * ng + gi));
        vf b = v_set1(mk_dtype_load_f32(w->sdtype, w->biases, r * ng + gi));
        float *o = out + (c - c0);
        if (bits == 4) {
            for (int j = 0; j < g; j += 2 * VN) {
                vf lo, hi;
                ld_u4x2(p + (c + j) / 2, &lo, &hi);
                v_st(o + j, v_fma(lo, s, b));
                v_st(o + j + VN, v_fma(hi, s, b));
            }
        } else if (bits == 8) {
            for (int j = 0; j < g; j += VN)
                v_st(o + j, v_fma(ld_u8(p + c + j), s, b));
        } else {
            for (int j = 0; j < g; j += VN)
                v_st(o + j, v_fma(KSFX(ld_bits_safe)(p + (c + j) * bits / 8, end, &kc), s, b));
        }
    }
}

/* ---- MX / NV microscaled ---------------------------------------------- */

/* Per group: vector (code . x) from QDOT(p, c) (c = first column of the
 * group), scaled by SCALE(scale byte). GS elements per group. */
#define MK_MV_MICRO(NAME, GS, EBITS, QDOT, SCALE)                                                            \
    MK_T static void KSFX(NAME)(const mk_wt *w, int64_t r0, int64_t r1, const float *x, const float *aux,    \
                                float *y) {                                                                  \
        const mk_luts *L = mk_luts_get();                                                                    \
        const int64_t ng = w->cols / (GS), rb = w->cols * (EBITS) / 8;                                       \
        for (int64_t r = r0; r < r1; r++) {                                                                  \
            const uint8_t *p = (const uint8_t *)w->data + r * rb;                                            \
            const uint8_t *sc = (const uint8_t *)w->scales + r * ng;                                         \
            vf acc = v_zero();                                                                               \
            for (int64_t gi = 0; gi < ng; gi++) {                                                            \
                const int64_t c = gi * (GS);                                                                 \
                acc = v_fma(QDOT, v_set1(SCALE(sc[gi])), acc);                                               \
            }                                                                                                \
            y[r - r0] = v_hsum(acc);                                                                         \
        }                                                                                                    \
        (void)aux;                                                                                           \
    }

/* Group dots in element order (LD over VN elements) and, for MXFP4, in
 * nibble order against the reordered x in aux. */
#define MK_QDOT_SEQ(NAME, GS, EBITS, LD)                                                                     \
    MK_T static inline vf KSFX(NAME)(const uint8_t *p, const float *x) {                                     \
        vf q = v_zero();                                                                                     \
        for (int j = 0; j < (GS); j += VN)                                                                   \
            q = v_fma(LD(p + j * (EBITS) / 8), v_ld(x + j), q);                                              \
        return q;                                                                                            \
    }
MK_QDOT_SEQ(qdot_mxfp8, 32, 8, ld_e4m3)
MK_QDOT_SEQ(qdot_nvfp4, 16, 4, ld_fp4)

MK_T static inline vf KSFX(qdot_mxfp4)(const uint8_t *p, const float *xp) {
    vf qa = v_zero(), qb = v_zero();
    for (int j = 0; j < 32; j += 2 * VN) {
        vf lo, hi;
        ld_f4p(p + j / 2, &lo, &hi);
        qa = v_fma(lo, v_ld(xp + j), qa);
        qb = v_fma(hi, v_ld(xp + j + VN), qb);
    }
    return v_add(qa, qb);
}

#define MK_DQ_MICRO(NAME, GS, EBITS, LD, SCALE)                                                              \
    MK_T static void KSFX(NAME)(const mk_wt *w, int64_t r, int64_t c0, int64_t c1, float *out) {             \
        const mk_luts *L = mk_luts_get();                                                                    \
        const int64_t ng = w->cols / (GS);                                                                   \
        const uint8_t *p = (const uint8_t *)w->data + r * (w->cols * (EBITS) / 8);                           \
        const uint8_t *sc = (const uint8_t *)w->scales + r * ng;                                             \
        for (int64_t c = c0; c < c1; c += (GS)) {                                                            \
            vf s = v_set1(SCALE(sc[c / (GS)]));                                                              \
            for (int j = 0; j < (GS); j += VN)                                                               \
                v_st(out + (c - c0) + j, v_mul(LD(p + (c + j) * (EBITS) / 8), s));                           \
        }                                                                                                    \
    }

/* Scale bytes, with the loaders' factors folded in (fp4 codes come as 2x). */
#define MK_SC_MXFP4(b) (L->e8m0[b] * 0.5f)
#define MK_SC_MXFP8(b) (L->e8m0[b] * MK_E4M3_K)
#define MK_SC_NVFP4(b) (L->e4m3[b] * w->global_scale * 0.5f)

MK_MV_MICRO(mv_mxfp4, 32, 4, KSFX(qdot_mxfp4)(p + c / 2, aux + c), MK_SC_MXFP4)
MK_MV_MICRO(mv_mxfp8, 32, 8, KSFX(qdot_mxfp8)(p + c, x + c), MK_SC_MXFP8)
MK_MV_MICRO(mv_nvfp4, 16, 4, KSFX(qdot_nvfp4)(p + c / 2, x + c), MK_SC_NVFP4)
MK_DQ_MICRO(dq_mxfp4, 32, 4, ld_fp4, MK_SC_MXFP4)
MK_DQ_MICRO(dq_mxfp8, 32, 8, ld_e4m3, MK_SC_MXFP8)
MK_DQ_MICRO(dq_nvfp4, 16, 4, ld_fp4, MK_SC_NVFP4)

/* ---- element-wise ------------------------------------------------------ */

/* y += a x: multiply, then add (no FMA), so every path gives the portable
 * loop's floats; the tail in separate statements for the same reason. */
MK_T static void KSFX(axpy)(float *y, float a, const float *x, int64_t n) {
    vf va = v_set1(a);
    int64_t i = 0;
    for (; i + VN <= n; i += VN)
        v_st(y + i, v_add(v_ld(y + i), v_mul(va, v_ld(x + i))));
    for (; i < n; i++) {
        float p = a * x[i];
        y[i] += p;
    }
}

#include "kernels/kern_attn_body.h"

/* mk_gemm_f32: register tiles of 4 rows of a x 2 vectors of b's columns
 * (then 1 vector), a's element broadcast, one FMA chain per output over p
 * in order (the portable loop's floats, as fmaf); leftover rows one at a
 * time, the last columns short of a vector in scalar fmaf. */
MK_T static void KSFX(gemm_f32)(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b,
                                int64_t ldb, float *c, int64_t ldc) {
    int64_t j = 0;
    for (; j + 2 * VN <= n; j += 2 * VN) {
        int64_t i = 0;
        for (; i + 4 <= m; i += 4) {
            vf c00 = v_zero(), c01 = v_zero(), c10 = v_zero(), c11 = v_zero(), c20 = v_zero(), c21 = v_zero(),
               c30 = v_zero(), c31 = v_zero();
            const float *a0 = a + i * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
            for (int64_t p = 0; p < k; p++) {
                const vf b0 = v_ld(b + p * ldb + j), b1 = v_ld(b + p * ldb + j + VN);
                vf x = v_set1(a0[p]);
                c00 = v_fma(x, b0, c00);
                c01 = v_fma(x, b1, c01);
                x = v_set1(a1[p]);
                c10 = v_fma(x, b0, c10);
                c11 = v_fma(x, b1, c11);
                x = v_set1(a2[p]);
                c20 = v_fma(x, b0, c20);
                c21 = v_fma(x, b1, c21);
                x = v_set1(a3[p]);
                c30 = v_fma(x, b0, c30);
                c31 = v_fma(x, b1, c31);
            }
            float *o = c + i * ldc + j;
            v_st(o, c00);
            v_st(o + VN, c01);
            v_st(o + ldc, c10);
            v_st(o + ldc + VN, c11);
            v_st(o + 2 * ldc, c20);
            v_st(o + 2 * ldc + VN, c21);
            v_st(o + 3 * ldc, c30);
            v_st(o + 3 * ldc + VN, c31);
        }
        for (; i < m; i++) {
            vf c0 = v_zero(), c1 = v_zero();
            for (int64_t p = 0; p < k; p++) {
                const vf x = v_set1(a[i * lda + p]);
                c0 = v_fma(x, v_ld(b + p * ldb + j), c0);
                c1 = v_fma(x, v_ld(b + p * ldb + j + VN), c1);
            }
            v_st(c + i * ldc + j, c0);
            v_st(c + i * ldc + j + VN, c1);
        }
    }
    for (; j + VN <= n; j += VN) { /* one vector of columns */
        int64_t i = 0;
        for (; i + 4 <= m; i += 4) {
            vf c0 = v_zero(), c1 = v_zero(), c2 = v_zero(), c3 = v_zero();
            const float *a0 = a + i * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
            for (int64_t p = 0; p < k; p++) {
                const vf b0 = v_ld(b + p * ldb + j);
                c0 = v_fma(v_set1(a0[p]), b0, c0);
                c1 = v_fma(v_set1(a1[p]), b0, c1);
                c2 = v_fma(v_set1(a2[p]), b0, c2);
                c3 = v_fma(v_set1(a3[p]), b0, c3);
            }
            v_st(c + i * ldc + j, c0);
            v_st(c + (i + 1) * ldc + j, c1);
            v_st(c + (i + 2) * ldc + j, c2);
            v_st(c + (i + 3) * ldc + j, c3);
        }
        for (; i < m; i++) {
            vf c0 = v_zero();
            for (int64_t p = 0; p < k; p++)
                c0 = v_fma(v_set1(a[i * lda + p]), v_ld(b + p * ldb + j), c0);
            v_st(c + i * ldc + j, c0);
        }
    }
    for (; j < n; j++)
        for (int64_t i = 0; i < m; i++) {
            float acc = 0.0f;
            for (int64_t p = 0; p < k; p++)
                acc = fmaf(a[i * lda + p], b[p * ldb + j], acc);
            c[i * ldc + j] = acc;
        }
}

/* ---- table ------------------------------------------------------------ */

const mk_kern_i MK_KERN_TABLE = {
    .name = MK_KERN_NAME,
    .dot = KSFX(dot),
    .sumsq = KSFX(sumsq),
    .axpy = KSFX(axpy),
    .gemm_tile = KSFX(gemm_tile),
    .attn_block = KSFX(attn_block),
    .gemm_f32 = KSFX(gemm_f32),
#ifdef MK_KERN_PANEL /* the AVX2 table (kern_panel.c) */
    .pack_panel = mk_pack_panel_avx2,
    .gemm_panel = mk_gemm_panel_avx2,
#endif
    .matvec =
        {
            [MK_WF_F32] = KSFX(mv_f32),
            [MK_WF_BF16] = KSFX(mv_bf16),
            [MK_WF_F16] = KSFX(mv_f16),
            [MK_WF_FP8_E4M3] = KSFX(mv_fp8),
            [MK_WF_FP8_E5M2] = KSFX(mv_fp8),
            [MK_WF_AFFINE] = KSFX(mv_affine),
            [MK_WF_MXFP4] = KSFX(mv_mxfp4),
            [MK_WF_MXFP8] = KSFX(mv_mxfp8),
            [MK_WF_NVFP4] = KSFX(mv_nvfp4),
        },
    .prep =
        {
            [MK_WF_AFFINE] = KSFX(prep_affine),
            [MK_WF_MXFP4] = KSFX(prep_perm),
        },
    /* MLX affine 4/8 bits on int8 activations: kern_avx2.c's 256-bit
     * kernels in both tables (TODO: 512-bit and VNNI dpbusd variants for the
     * AVX-512 table, with their own x layout) */
    .qmatvec = {[MK_WF_AFFINE] = mk_q8_mv_affine_avx2},
    .qprep = {[MK_WF_AFFINE] = mk_q8_prep_affine_avx2},
    .dequant =
        {
            [MK_WF_BF16] = KSFX(dq_bf16),
            [MK_WF_F16] = KSFX(dq_f16),
            [MK_WF_FP8_E4M3] = KSFX(dq_fp8),
            [MK_WF_FP8_E5M2] = KSFX(dq_fp8),
            [MK_WF_AFFINE] = KSFX(dq_affine),
            [MK_WF_MXFP4] = KSFX(dq_mxfp4),
            [MK_WF_MXFP8] = KSFX(dq_mxfp8),
            [MK_WF_NVFP4] = KSFX(dq_nvfp4),
        },
};
