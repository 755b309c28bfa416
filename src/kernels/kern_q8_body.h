/* MLX affine 4/8-bit matvecs on int8 activations (kern_impl.h, "int8
 * activations"), written once and included by kern_avx2.c (maddubs/madd)
 * and kern_vnni.c (AVX512-VNNI dpbusd on 256-bit vectors), after each has
 * defined:
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
 * mk_q8_prep_affine_avx2 for both. Defines the matvec MK_Q8_MV_NAME. */

MK_T static inline float Q8SFX(hsum8)(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* cnt F32/BF16/F16 scales or biases to floats */
MK_T static inline void Q8SFX(cvt_scales)(mk_dtype t, const uint8_t *src, float *dst, int cnt) {
    int j = 0;
    if (t == MK_DT_F32) {
        memcpy(dst, src, (size_t)cnt * sizeof(float));
        return;
    }
    for (; j + 8 <= cnt; j += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(src + 2 * j));
        __m256 v = t == MK_DT_BF16 ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
                                   : _mm256_cvtph_ps(h);
        _mm256_storeu_ps(dst + j, v);
    }
    for (; j < cnt; j++)
        dst[j] = mk_dtype_load_f32(t, src, j);
}

/* sum_g (b_g [+ 128 s_g]) xg_g over cnt groups into acc, tail into *bs */
MK_T static inline __m256 Q8SFX(bias_terms)(const float *s, const float *b, const float *xg, int cnt,
                                            bool shift, __m256 acc, float *bs) {
    int k = 0;
    const __m256 k128 = _mm256_set1_ps(shift ? 128.0f : 0.0f);
    for (; k + 8 <= cnt; k += 8) {
        __m256 bb = _mm256_fmadd_ps(k128, _mm256_loadu_ps(s + k), _mm256_loadu_ps(b + k));
        acc = _mm256_fmadd_ps(bb, _mm256_loadu_ps(xg + k), acc);
    }
    for (; k < cnt; k++)
        *bs += (b[k] + (shift ? 128.0f * s[k] : 0.0f)) * xg[k];
    return acc;
}

MK_T static void Q8SFX(mv_affine4)(const mk_wt *w, int64_t r0, int64_t r1, const float *aux, float *y) {
    const int g = w->group;
    const int64_t cols = w->cols, ng = cols / g, rb = cols / 2;
    const mk_q8x v = mk_q8x_at(aux, cols, g);
    const size_t ssz = w->sdtype == MK_DT_F32 ? 4 : 2;
    const __m256i m4 = _mm256_set1_epi8(15);
    float s[64], b[64];
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *p = (const uint8_t *)w->data + r * rb;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, accb = acc0;
        float tail = 0.0f;
        for (int64_t g0 = 0; g0 < ng; g0 += 64) {
            int cnt = ng - g0 < 64 ? (int)(ng - g0) : 64;
            size_t off = (size_t)(r * ng + g0) * ssz;
            Q8SFX(cvt_scales)(w->sdtype, (const uint8_t *)w->scales + off, s, cnt);
            Q8SFX(cvt_scales)(w->sdtype, (const uint8_t *)w->biases + off, b, cnt);
            accb = Q8SFX(bias_terms)(s, b, v.xg + g0, cnt, false, accb, &tail);
            const int64_t cb = g0 * g, ce = cb + (int64_t)cnt * g;
            int64_t c = cb;
            for (; c + 64 <= ce; c += 64) {
                __m256i q = _mm256_loadu_si256((const __m256i *)(const void *)(p + c / 2));
                __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                __m256i a0 = _mm256_loadu_si256((const __m256i *)(const void *)(v.q4 + c));
                __m256i a1 = _mm256_loadu_si256((const __m256i *)(const void *)(v.q4 + c + 32));
                __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(MK_Q8_DOT4(lo, a0, hi, a1)),
                                         _mm256_loadu_ps(v.d8 + c / 8));
                int64_t k = (c - cb) / g;
                __m256 sv = g == 32 ? _mm256_set_m128(_mm_set1_ps(s[k + 1]), _mm_set1_ps(s[k]))
                                    : _mm256_set1_ps(s[k]);
                if ((c / 64) & 1)
                    acc1 = _mm256_fmadd_ps(f, sv, acc1);
                else
                    acc0 = _mm256_fmadd_ps(f, sv, acc0);
            }
            if (c < ce) { /* a last lone block of 32 (group 32) */
                const __m128i m4h = _mm_set1_epi8(15);
                __m128i q = _mm_loadu_si128((const __m128i *)(const void *)(p + c / 2));
                __m128i lo = _mm_and_si128(q, m4h), hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4h);
                __m128i a0 = _mm_loadu_si128((const __m128i *)(const void *)(v.q4 + c));
                __m128i a1 = _mm_loadu_si128((const __m128i *)(const void *)(v.q4 + c + 16));
                __m128i p32 = _mm_madd_epi16(
                    _mm_add_epi16(_mm_maddubs_epi16(lo, a0), _mm_maddubs_epi16(hi, a1)), _mm_set1_epi16(1));
                p32 = _mm_add_epi32(p32, _mm_shuffle_epi32(p32, 0x4e));
                p32 = _mm_add_epi32(p32, _mm_shuffle_epi32(p32, 0xb1));
                tail += (float)_mm_cvtsi128_si32(p32) * v.d[c / MK_Q8_BLOCK] * s[(c - cb) / g];
            }
        }
        y[r - r0] = Q8SFX(hsum8)(_mm256_add_ps(_mm256_add_ps(acc0, acc1), accb)) + tail;
    }
}

MK_T static void Q8SFX(mv_affine8)(const mk_wt *w, int64_t r0, int64_t r1, const float *aux, float *y) {
    const int g = w->group;
    const int64_t cols = w->cols, ng = cols / g;
    const mk_q8x v = mk_q8x_at(aux, cols, g);
    const size_t ssz = w->sdtype == MK_DT_F32 ? 4 : 2;
    float s[64], b[64];
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *p = (const uint8_t *)w->data + r * cols;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, accb = acc0;
        float tail = 0.0f;
        for (int64_t g0 = 0; g0 < ng; g0 += 64) {
            int cnt = ng - g0 < 64 ? (int)(ng - g0) : 64;
            size_t off = (size_t)(r * ng + g0) * ssz;
            Q8SFX(cvt_scales)(w->sdtype, (const uint8_t *)w->scales + off, s, cnt);
            Q8SFX(cvt_scales)(w->sdtype, (const uint8_t *)w->biases + off, b, cnt);
            accb = Q8SFX(bias_terms)(s, b, v.xg + g0, cnt, MK_Q8_SHIFT8, accb, &tail);
            const int64_t cb = g0 * g, ce = cb + (int64_t)cnt * g;
            for (int64_t c = cb; c < ce; c += MK_Q8_BLOCK) {
                __m256i q = _mm256_loadu_si256((const __m256i *)(const void *)(p + c));
                __m256i a = _mm256_loadu_si256((const __m256i *)(const void *)(v.q + c));
                __m256 f = _mm256_cvtepi32_ps(MK_Q8_DOT8(q, a));
                __m256 sd = _mm256_set1_ps(s[(c - cb) / g] * v.d[c / MK_Q8_BLOCK]);
                if ((c / MK_Q8_BLOCK) & 1)
                    acc1 = _mm256_fmadd_ps(f, sd, acc1);
                else
                    acc0 = _mm256_fmadd_ps(f, sd, acc0);
            }
        }
        y[r - r0] = Q8SFX(hsum8)(_mm256_add_ps(_mm256_add_ps(acc0, acc1), accb)) + tail;
    }
}

MK_T void MK_Q8_MV_NAME(const mk_wt *w, int64_t r0, int64_t r1, const float *x, const float *aux, float *y) {
    (void)x;
    if (w->bits == 4)
        Q8SFX(mv_affine4)(w, r0, r1, aux, y);
    else
        Q8SFX(mv_affine8)(w, r0, r1, aux, y);
}
