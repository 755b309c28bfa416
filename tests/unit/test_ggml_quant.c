/* ggml's block formats (include/moekit/ggml_quant.h, src/quant/
 * ggml_quant.c, ggml_kquant.c). Expected bytes are worked out by hand from
 * the format definition (ggml-quants.c quantize_row_*_ref): scale,
 * rounding (roundf: half away from zero; Q4_0: +8.5 then truncation,
 * capped at 15), the first of equal-magnitude extremes, nibble order, the
 * 5th-bit words, the K-quants' packed 6-bit scales and code layouts (on
 * inputs whose best scale is exact, so the search has nothing to win), f16
 * scale bytes.
 * tests/cli/gguf_llama_*.sh compares whole tensors with llama-quantize's. */
#include <string.h>

#include "mk_test_util.h"
#include "moekit/ggml_quant.h"

static void test_sizes(void **st) {
    (void)st;
    assert_int_equal(mk_ggml_row_bytes(MK_GGML_Q8_0, 64), 68);
    assert_int_equal(mk_ggml_row_bytes(MK_GGML_Q4_0, 64), 36);
    assert_int_equal(mk_ggml_row_bytes(MK_GGML_Q4_0, 48), 0); /* not whole blocks */
    assert_int_equal(mk_ggml_row_bytes(MK_GGML_BF16, 3), 6);
    assert_int_equal(mk_ggml_row_bytes(MK_GGML_F32, 3), 12);
    assert_string_equal(mk_ggml_type_name(MK_GGML_Q8_0), "Q8_0");
    assert_null(mk_ggml_type_name((mk_ggml_type)3));
    assert_string_equal(mk_ggml_type_name(MK_GGML_Q4_K), "Q4_K");
    assert_true(mk_ggml_is_quant(MK_GGML_Q4_0));
    assert_false(mk_ggml_is_quant(MK_GGML_F16));
}

static void test_q8_0(void **st) {
    (void)st;
    float x[32];
    unsigned char y[34];
    /* x = j - 16: amax 16, d = 16/127 (f16 0x3008: 0.125 * (1 + 8/1024)), q = roundf(x * 127/16) */
    for (int j = 0; j < 32; j++)
        x[j] = (float)(j - 16);
    mk_ggml_quantize(MK_GGML_Q8_0, x, 1, 32, y);
    assert_int_equal(y[0], 0x08);
    assert_int_equal(y[1], 0x30);
    assert_int_equal((int8_t)y[2 + 0], -127); /* -16 */
    assert_int_equal((int8_t)y[2 + 15], -8);  /* -1 * 7.9375 = -7.9375 */
    assert_int_equal((int8_t)y[2 + 16], 0);
    assert_int_equal((int8_t)y[2 + 17], 8);
    assert_int_equal((int8_t)y[2 + 31], 119); /* 15 * 7.9375 = 119.06 */
    /* amax 127: d = 1 exactly (f16 0x3c00), halves round away from zero */
    memset(x, 0, sizeof x);
    x[0] = 127.0f;
    x[1] = 2.5f;
    x[2] = -2.5f;
    x[3] = 0.5f;
    mk_ggml_quantize(MK_GGML_Q8_0, x, 1, 32, y);
    assert_int_equal(y[0] | y[1] << 8, 0x3c00);
    assert_int_equal((int8_t)y[2], 127);
    assert_int_equal((int8_t)y[3], 3);
    assert_int_equal((int8_t)y[4], -3);
    assert_int_equal((int8_t)y[5], 1);
    /* all zero: d = 0, codes 0 */
    memset(x, 0, sizeof x);
    mk_ggml_quantize(MK_GGML_Q8_0, x, 1, 32, y);
    for (int j = 0; j < 34; j++)
        assert_int_equal(y[j], 0);
}

static void test_q4_0(void **st) {
    (void)st;
    float x[64];
    unsigned char y[36];
    /* block 0: x = j - 16, the extreme is -16: d = -16 / -8 = 2 (f16 0x4000), q = min(15, (int)(x/2 + 8.5)) */
    for (int j = 0; j < 32; j++)
        x[j] = (float)(j - 16);
    /* block 1: +8 at 3 and -8 at 5: the first wins, d = -1 (f16 0xbc00), q = (int)(8.5 - x) capped */
    memset(x + 32, 0, 32 * sizeof *x);
    x[32 + 3] = 8.0f;
    x[32 + 5] = -8.0f;
    x[32 + 20] = 1.0f;
    mk_ggml_quantize(MK_GGML_Q4_0, x, 2, 32, y);
    assert_int_equal(y[0] | y[1] << 8, 0x4000);
    /* qs[j] = q(x[j]) | q(x[j + 16]) << 4; x[0] = -16 -> 0, x[16] = 0 -> 8 */
    assert_int_equal(y[2 + 0], 0x80);
    assert_int_equal(y[2 + 1], 0x91);  /* x[1] = -15 -> 1.0 -> 1; x[17] = 1 -> 9.0 -> 9 */
    assert_int_equal(y[2 + 15], 0xf8); /* x[15] = -1 -> 8.0 -> 8; x[31] = 15 -> 16.0, capped at 15 */
    unsigned char b1[18];
    memcpy(b1, y + 18, 18);
    assert_int_equal(b1[0] | b1[1] << 8, 0xbc00);
    assert_int_equal(b1[2 + 3] & 15, 0);  /* 8 * -1 + 8.5 = 0.5 -> 0 */
    assert_int_equal(b1[2 + 5] & 15, 15); /* 16.5 -> 16, capped at 15 */
    assert_int_equal(b1[2 + 4] >> 4, 7);  /* x[20] = 1 -> 7.5 -> 7 */
    assert_int_equal(b1[2 + 0], 0x88);    /* zeros -> 8.5 -> 8 in both nibbles */
}

static void test_q5_0_q5_1(void **st) {
    (void)st;
    float x[32];
    unsigned char y[24];
    /* Q5_0, x = j - 16: the extreme -16 (j = 0), d = -16 / -16 = 1, q = (int8)(j + 0.5) = j */
    for (int j = 0; j < 32; j++)
        x[j] = (float)(j - 16);
    mk_ggml_quantize(MK_GGML_Q5_0, x, 1, 32, y);
    assert_int_equal(y[0] | y[1] << 8, 0x3c00);
    /* qh: bit j is the 5th bit of q[j]: set for j >= 16 */
    assert_int_equal(y[2] | y[3] << 8 | y[4] << 16 | (uint32_t)y[5] << 24, 0xffff0000u);
    for (int j = 0; j < 16; j++)
        assert_int_equal(y[6 + j], j | (j << 4)); /* q[j] = j, q[j+16] = j + 16: low 4 bits j */
    /* Q5_1, x = j: min 0, d = 31 / 31 = 1, q = (uint8)(j + 0.5) = j; f16 d then f16 min */
    for (int j = 0; j < 32; j++)
        x[j] = (float)j;
    x[0] = -0.0f;
    mk_ggml_quantize(MK_GGML_Q5_1, x, 1, 32, y);
    assert_int_equal(y[0] | y[1] << 8, 0x3c00);
    assert_int_equal(y[2] | y[3] << 8, 0x8000); /* the min is x[0] = -0.0, stored as is */
    assert_int_equal(y[4] | y[5] << 8 | y[6] << 16 | (uint32_t)y[7] << 24, 0xffff0000u);
    for (int j = 0; j < 16; j++)
        assert_int_equal(y[8 + j], j | (j << 4));
    assert_int_equal(mk_ggml_row_bytes(MK_GGML_Q5_0, 64), 44);
    assert_int_equal(mk_ggml_row_bytes(MK_GGML_Q5_1, 64), 48);
}

/* x = i % period over one super-block */
static void ramp(float *x, int period) {
    for (int i = 0; i < MK_GGML_QK_K; i++)
        x[i] = (float)(i % period);
}

static void test_q4_k_q5_k(void **st) {
    (void)st;
    float x[MK_GGML_QK_K];
    unsigned char y[176];
    assert_int_equal(mk_ggml_row_bytes(MK_GGML_Q4_K, 512), 288);
    assert_int_equal(mk_ggml_row_bytes(MK_GGML_Q5_K, 256), 176);
    assert_int_equal(mk_ggml_row_bytes(MK_GGML_Q6_K, 256), 210);
    assert_int_equal(mk_ggml_row_bytes(MK_GGML_Q4_K, 128), 0); /* not a whole super-block */
    assert_int_equal(mk_ggml_block_size(MK_GGML_Q6_K), 256);
    /* Q4_K, x = i % 16: every 32-value sub-block spans [0, 15], so codes = x at scale 1, min 0 (error 0:
     * no candidate is strictly better). Sub-scales 1 -> 63 of max 1, mins all 0 -> dmin 0;
     * d = f16(1/63) = 0x2410 (0.0158691); recomputed codes round(x / (63 d)) = x */
    ramp(x, 16);
    mk_ggml_quantize(MK_GGML_Q4_K, x, 1, MK_GGML_QK_K, y);
    assert_int_equal(y[0] | y[1] << 8, 0x2410);
    assert_int_equal(y[2] | y[3] << 8, 0x0000);
    /* scales[12]: j < 4 scale in [j] low 6 bits, min in [j+4]; j >= 4: low 4 bits in [j+4] (scale) and
     * its high nibble (min), the high 2 bits in the top of [j-4] (scale) and [j] (min) */
    static const unsigned char sc[12] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x0f, 0x0f, 0x0f, 0x0f};
    assert_memory_equal(y + 4, sc, 12);
    for (int c = 0; c < 4; c++) /* qs[32c + l] = v[64c + l] | v[64c + 32 + l] << 4 */
        for (int l = 0; l < 32; l++)
            assert_int_equal(y[16 + 32 * c + l], (l % 16) | (l % 16) << 4);
    /* Q5_K, x = i % 32: the same with 31 levels: codes = x; qh bit 2c of qh[l] = 5th bit of v[64c + l],
     * bit 2c+1 that of v[64c + 32 + l] */
    ramp(x, 32);
    mk_ggml_quantize(MK_GGML_Q5_K, x, 1, MK_GGML_QK_K, y);
    assert_int_equal(y[0] | y[1] << 8, 0x2410);
    assert_int_equal(y[2] | y[3] << 8, 0x0000);
    assert_memory_equal(y + 4, sc, 12);
    for (int l = 0; l < 32; l++)
        assert_int_equal(y[16 + l], l >= 16 ? 0xff : 0x00);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            assert_int_equal(y[48 + 32 * c + l], (l % 16) | (l % 16) << 4);
    /* all zero: every byte 0 */
    memset(x, 0, sizeof x);
    mk_ggml_quantize(MK_GGML_Q4_K, x, 1, MK_GGML_QK_K, y);
    for (int i = 0; i < 144; i++)
        assert_int_equal(y[i], 0);
}

static void test_q6_k(void **st) {
    (void)st;
    float x[MK_GGML_QK_K];
    unsigned char y[210];
    /* x = i % 16 - 8: each 16-value sub-block's extreme is -8 (its first value), inverse scale
     * -32 / -8 = 4 gives codes 4x exactly proportional to x: scale 1/4, and no other candidate
     * correlates better. max scale 0.25 -> d = f16(-1/512) = 0x9800, sub-scales
     * min(127, round(-512 * 0.25)) = -128; codes round(x / 0.25) + 32 = 4 * (i % 16) */
    for (int i = 0; i < MK_GGML_QK_K; i++)
        x[i] = (float)(i % 16 - 8);
    mk_ggml_quantize(MK_GGML_Q6_K, x, 1, MK_GGML_QK_K, y);
    assert_int_equal(y[208] | y[209] << 8, 0x9800);
    for (int j = 0; j < 16; j++)
        assert_int_equal((int8_t)y[192 + j], -128);
    /* per 128 values (ql += 64, qh += 32): ql[l] = low4(v[l]) | low4(v[l+64]) << 4, ql[l+32] the same
     * for v[l+32], v[l+96]; qh[l] = high2 of v[l], v[l+32], v[l+64], v[l+96] at bits 0, 2, 4, 6 */
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            int v = 4 * (l % 16), lo = v & 15, hi = v >> 4;
            assert_int_equal(y[64 * h + l], lo | lo << 4);
            assert_int_equal(y[64 * h + l + 32], lo | lo << 4);
            assert_int_equal(y[128 + 32 * h + l], hi | hi << 2 | hi << 4 | hi << 6);
        }
    /* all zero: every byte 0 */
    memset(x, 0, sizeof x);
    mk_ggml_quantize(MK_GGML_Q6_K, x, 1, MK_GGML_QK_K, y);
    for (int i = 0; i < 210; i++)
        assert_int_equal(y[i], 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_q8_0),
        cmocka_unit_test(test_q4_0),
        cmocka_unit_test(test_q5_0_q5_1),
        cmocka_unit_test(test_q4_k_q5_k),
        cmocka_unit_test(test_q6_k),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
