/* MLX affine 4/8-bit matvecs on int8 activations (kern_impl.h, "int8
 * activations"), written once and included by kern_avx2.c (maddubs/madd)
 * and kern_vnni.c (VNNI dpbusd on 256-bit vectors), after each has defined:
 *   MK_T              target attribute
 *   Q8SFX(name)       name##_q8<isa> (file-local names)
 *   MK_Q8_MV_NAME     the exported matvec (kern_impl.h)
 *   MK_Q8_DOT4(lo, a0, hi, a1)  int32 x 8: lanes 0-3 the dot of block 0,
 *                     4-7 of block 1 (u8 codes lo/hi times s8 x a0/a1)
 *   MK_Q8_DOT8(q, a)  int32 x 8 whose sum is the dot of 32 codes (raw bytes
 *                     q, 0..255, or q - 128 when MK_Q8_SHIFT8) with 32 s8 a
 *   MK_Q8_SHIFT8      true when DOT8 computes with q - 128 (the bias then
 *                     absorbs 128 s, see kern_avx2.c)
 * The prepared x (layout and quantizer) is kern_avx2.c's
 * mk_q8_prep_affine_avx2 for both. Defines the matvec MK_Q8_MV_NAME.
 *
 * Shape of the loops (decode is one pass over the weight, so what counts
 * is work per weight byte): rows go four at a time, sharing every load of
 * x, its block scales and the loop overhead; a row's group scales are
 * converted to floats once per row (not per block), and its bias term
 * sum_g b_g xg_g is one vector dot over the groups. The group size is a
 * compile-time constant of each loop (32, 64 or 128: no division by it),
 * so the scale of a step is an index shift. Per 64 columns of a 4-bit row
 * that leaves one 32-byte load, three bit operations, the two dots, one
 * convert, one multiply by the blocks' d and one FMA with the group scale.
 *
 * Bitwise: a row's floats are the same sequence of operations whether it
 * runs in a block of four rows or alone (the row tail), so the result does
 * not depend on where a thread's row range starts: the same outputs for
 * any thread count and in mk_matvec_multi / mk_matmul_each. */

/* The row loops below run 1 or 4 times, known at compile time: unrolled,
 * their accumulator arrays live in registers. */
#ifndef MK_UNROLL4
#define MK_UNROLL4 _Pragma("GCC unroll 4")
#endif

MK_T static inline float Q8SFX(hsum8)(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 8 F32/BF16/F16 scales or biases from src as floats */
MK_T static inline __m256 Q8SFX(ld8)(mk_dtype t, const uint8_t *src) {
    if (t == MK_DT_F32)
        return _mm256_loadu_ps((const float *)(const void *)src);
    __m128i h = _mm_loadu_si128((const __m128i *)(const void *)src);
    return t == MK_DT_BF16 ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
                           : _mm256_cvtph_ps(h);
}

/* Scales of groups [g0, g0 + cnt) of row r into s, and the row's bias term
 * over them: sum_g (b_g [+ 128 s_g]) xg_g (the vector part over groups of
 * 8, then the rest in order). One pass over the row's scales and biases. */
MK_T static inline __attribute__((always_inline)) float
Q8SFX(row_prep)(const mk_wt *w, int64_t r, int64_t ng, int64_t g0, int cnt, const float *xg, bool shift,
                float *s) {
    const mk_dtype t = w->sdtype;
    const size_t ssz = t == MK_DT_F32 ? 4 : 2;
    const size_t off = (size_t)(r * ng + g0) * ssz;
    const uint8_t *sp = (const uint8_t *)w->scales + off, *bp = (const uint8_t *)w->biases + off;
    const __m256 k128 = _mm256_set1_ps(128.0f);
    __m256 acc = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 <= cnt; k += 8) {
        __m256 sv = Q8SFX(ld8)(t, sp + k * ssz), bv = Q8SFX(ld8)(t, bp + k * ssz);
        _mm256_storeu_ps(s + k, sv);
        if (shift)
            bv = _mm256_fmadd_ps(k128, sv, bv);
        acc = _mm256_fmadd_ps(bv, _mm256_loadu_ps(xg + k), acc);
    }
    float tb = Q8SFX(hsum8)(acc);
    for (; k < cnt; k++) {
        s[k] = mk_dtype_load_f32(t, sp, k);
        float bk = mk_dtype_load_f32(t, bp, k);
        tb += (shift ? 128.0f * s[k] + bk : bk) * xg[k];
    }
    return tb;
}

/* One 64-column step at column c (step j of the chunk) of the R rows into
 * acc[i]: x's two blocks loaded once for all rows. */
#define MK_Q8_STEP4(c, j, acc)                                                                               \
    do {                                                                                                     \
        const __m256i a0_ = _mm256_loadu_si256((const __m256i *)(const void *)(v->q4 + (c)));                \
        const __m256i a1_ = _mm256_loadu_si256((const __m256i *)(const void *)(v->q4 + (c) + 32));           \
        const __m256 d8_ = _mm256_loadu_ps(v->d8 + (c) / 8);                                                 \
        MK_UNROLL4                                                                                           \
        for (int i = 0; i < R; i++) {                                                                        \
            __m256i q_ = _mm256_loadu_si256((const __m256i *)(const void *)(p[i] + (c) / 2));                \
            __m256i lo_ = _mm256_and_si256(q_, m4), hi_ = _mm256_and_si256(_mm256_srli_epi16(q_, 4), m4);    \
            __m256 f_ = _mm256_mul_ps(_mm256_cvtepi32_ps(MK_Q8_DOT4(lo_, a0_, hi_, a1_)), d8_);              \
            __m256 sv_ = G == 32 ? _mm256_set_m128(_mm_broadcast_ss(&s[i][2 * (j) + 1]),                    \
                                                   _mm_broadcast_ss(&s[i][2 * (j)]))                         \
                                 : _mm256_broadcast_ss(&s[i][G == 64 ? (j) : (j) >> 1]);                     \
            acc[i] = _mm256_fmadd_ps(f_, sv_, acc[i]);                                                       \
        }                                                                                                    \
    } while (0)

/* Rows ahead whose bytes the 4- and 8-bit kernels prefetch while they
 * compute (the next pass of four rows). Without it the hardware prefetcher
 * alone left the 8-layer 30B-shaped decode at 34% of the read bound on the
 * Xeon VM (25.3 tok/s at 4 bits, 2 threads); with it 34 tok/s; 8 rows
 * ahead measured no better (bench/RESULTS.md, session 10). */
#ifndef MK_Q8_PF_ROWS
#define MK_Q8_PF_ROWS 4
#endif
/* 4 bits, R rows from r (R <= 4), group G: y[i] = row r + i's product. */
MK_T static inline __attribute__((always_inline)) void
Q8SFX(a4_rows)(const mk_wt *w, int64_t r, const int R, const int G, const mk_q8x *v, float *y) {
    const int64_t cols = w->cols, ng = cols / G, rb = cols / 2;
    const __m256i m4 = _mm256_set1_epi8(15);
    const uint8_t *p[4];
    __m256 acc0[4], acc1[4];
    float bt[4], tail[4];
    float s[4][64];
    MK_UNROLL4
    for (int i = 0; i < R; i++) {
        p[i] = (const uint8_t *)w->data + (r + i) * rb;
        acc0[i] = acc1[i] = _mm256_setzero_ps();
        bt[i] = tail[i] = 0.0f;
    }
    for (int64_t g0 = 0; g0 < ng; g0 += 64) {
        const int cnt = ng - g0 < 64 ? (int)(ng - g0) : 64;
        MK_UNROLL4
        for (int i = 0; i < R; i++)
            bt[i] += Q8SFX(row_prep)(w, r + i, ng, g0, cnt, v->xg + g0, false, s[i]);
        const int64_t cb = g0 * G, ce = cb + (int64_t)cnt * G;
        int64_t c = cb;
        int j = 0; /* 64-column step within the chunk: even ones into acc0, odd into acc1 */
        for (; c + 128 <= ce; c += 128, j += 2) {
            /* the next four rows' line at this column (a prefetch never faults past the matrix) */
            MK_UNROLL4
            for (int i = 0; i < R; i++)
                _mm_prefetch((const char *)(p[i] + MK_Q8_PF_ROWS * rb + c / 2), _MM_HINT_T0);
            MK_Q8_STEP4(c, j, acc0);
            MK_Q8_STEP4(c + 64, j + 1, acc1);
        }
        if (c + 64 <= ce) {
            MK_Q8_STEP4(c, j, acc0);
            c += 64;
        }
        if (c < ce) { /* a last lone block of 32 (group 32) */
            const __m128i m4h = _mm_set1_epi8(15), ones = _mm_set1_epi16(1);
            __m128i a0 = _mm_loadu_si128((const __m128i *)(const void *)(v->q4 + c));
            __m128i a1 = _mm_loadu_si128((const __m128i *)(const void *)(v->q4 + c + 16));
            MK_UNROLL4
            for (int i = 0; i < R; i++) {
                __m128i q = _mm_loadu_si128((const __m128i *)(const void *)(p[i] + c / 2));
                __m128i lo = _mm_and_si128(q, m4h), hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4h);
                __m128i p32 = _mm_madd_epi16(_mm_add_epi16(_mm_maddubs_epi16(lo, a0), _mm_maddubs_epi16(hi, a1)),
                                             ones);
                p32 = _mm_add_epi32(p32, _mm_shuffle_epi32(p32, 0x4e));
                p32 = _mm_add_epi32(p32, _mm_shuffle_epi32(p32, 0xb1));
                tail[i] += (float)_mm_cvtsi128_si32(p32) * v->d[c / MK_Q8_BLOCK] * s[i][(c - cb) / G];
            }
        }
    }
    MK_UNROLL4
    for (int i = 0; i < R; i++)
        y[i] = Q8SFX(hsum8)(_mm256_add_ps(acc0[i], acc1[i])) + bt[i] + tail[i];
}

/* Group k of the chunk starting at group g0 for the R rows of an 8-bit
 * weight, into acc[i]: the blocks' dots times their d summed in a float
 * vector, then times the group scale. */
#define MK_Q8_GROUP8(k, acc)                                                                                 \
    do {                                                                                                     \
        const int64_t cb_ = (g0 + (k)) * G;                                                                  \
        __m256 t_[4];                                                                                        \
        MK_UNROLL4                                                                                           \
        for (int b_ = 0; b_ < G / MK_Q8_BLOCK; b_++) {                                                       \
            const int64_t c_ = cb_ + b_ * MK_Q8_BLOCK;                                                       \
            const __m256i a_ = _mm256_loadu_si256((const __m256i *)(const void *)(v->q + c_));               \
            const __m256 dv_ = _mm256_broadcast_ss(&v->d[c_ / MK_Q8_BLOCK]);                                 \
            MK_UNROLL4                                                                                       \
            for (int i = 0; i < R; i++) {                                                                    \
                __m256i q_ = _mm256_loadu_si256((const __m256i *)(const void *)(p[i] + c_));                 \
                __m256 f_ = _mm256_cvtepi32_ps(MK_Q8_DOT8(q_, a_));                                          \
                t_[i] = b_ == 0 ? _mm256_mul_ps(f_, dv_) : _mm256_fmadd_ps(f_, dv_, t_[i]);                  \
            }                                                                                                \
        }                                                                                                    \
        MK_UNROLL4                                                                                           \
        for (int i = 0; i < R; i++)                                                                          \
            acc[i] = _mm256_fmadd_ps(t_[i], _mm256_broadcast_ss(&s[i][k]), acc[i]);                          \
    } while (0)

/* 8 bits, R rows from r (R <= 4), group G: y[i] = row r + i's product. */
MK_T static inline __attribute__((always_inline)) void
Q8SFX(a8_rows)(const mk_wt *w, int64_t r, const int R, const int G, const mk_q8x *v, float *y) {
    const int64_t cols = w->cols, ng = cols / G;
    const uint8_t *p[4];
    __m256 acc0[4], acc1[4];
    float bt[4];
    float s[4][64];
    MK_UNROLL4
    for (int i = 0; i < R; i++) {
        p[i] = (const uint8_t *)w->data + (r + i) * cols;
        acc0[i] = acc1[i] = _mm256_setzero_ps();
        bt[i] = 0.0f;
    }
    for (int64_t g0 = 0; g0 < ng; g0 += 64) {
        const int cnt = ng - g0 < 64 ? (int)(ng - g0) : 64;
        MK_UNROLL4
        for (int i = 0; i < R; i++)
            bt[i] += Q8SFX(row_prep)(w, r + i, ng, g0, cnt, v->xg + g0, MK_Q8_SHIFT8, s[i]);
        int k = 0; /* even groups of the chunk into acc0, odd into acc1 */
        for (; k + 2 <= cnt; k += 2) {
            MK_UNROLL4 /* as a4_rows: the next rows' lines of these two groups */
            for (int i = 0; i < R; i++)
                for (int o = 0; o < 2 * G; o += 64)
                    _mm_prefetch((const char *)(p[i] + MK_Q8_PF_ROWS * cols + (g0 + k) * G + o), _MM_HINT_T0);
            MK_Q8_GROUP8(k, acc0);
            MK_Q8_GROUP8(k + 1, acc1);
        }
        if (k < cnt)
            MK_Q8_GROUP8(k, acc0);
    }
    MK_UNROLL4
    for (int i = 0; i < R; i++)
        y[i] = Q8SFX(hsum8)(_mm256_add_ps(acc0[i], acc1[i])) + bt[i];
}

/* Rows [r0, r1): blocks of four, then one at a time (the same floats). */
#define MK_Q8_ROWS(fn, G)                                                                                    \
    do {                                                                                                     \
        int64_t r_ = r0;                                                                                     \
        for (; r_ + 4 <= r1; r_ += 4)                                                                        \
            fn(w, r_, 4, G, &v, y + (r_ - r0));                                                              \
        for (; r_ < r1; r_++)                                                                                \
            fn(w, r_, 1, G, &v, y + (r_ - r0));                                                              \
    } while (0)

MK_T static void Q8SFX(mv_affine4)(const mk_wt *w, int64_t r0, int64_t r1, const float *aux, float *y) {
    const mk_q8x v = mk_q8x_at(aux, w->cols, w->group);
    switch (w->group) {
    case 32: MK_Q8_ROWS(Q8SFX(a4_rows), 32); break;
    case 64: MK_Q8_ROWS(Q8SFX(a4_rows), 64); break;
    default: MK_Q8_ROWS(Q8SFX(a4_rows), 128); break;
    }
}

MK_T static void Q8SFX(mv_affine8)(const mk_wt *w, int64_t r0, int64_t r1, const float *aux, float *y) {
    const mk_q8x v = mk_q8x_at(aux, w->cols, w->group);
    switch (w->group) {
    case 32: MK_Q8_ROWS(Q8SFX(a8_rows), 32); break;
    case 64: MK_Q8_ROWS(Q8SFX(a8_rows), 64); break;
    default: MK_Q8_ROWS(Q8SFX(a8_rows), 128); break;
    }
}
#undef MK_Q8_ROWS
#undef MK_Q8_STEP4
#undef MK_Q8_GROUP8

MK_T void MK_Q8_MV_NAME(const mk_wt *w, int64_t r0, int64_t r1, const float *x, const float *aux, float *y) {
    (void)x;
    if (w->bits == 4)
        Q8SFX(mv_affine4)(w, r0, r1, aux, y);
    else
        Q8SFX(mv_affine8)(w, r0, r1, aux, y);
}
