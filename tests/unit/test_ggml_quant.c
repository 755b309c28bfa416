/* ggml's Q8_0 / Q4_0 block formats (include/moekit/ggml_quant.h,
 * src/quant/ggml_quant.c). Expected bytes are worked out by hand from the
 * format definition (ggml-quants.c quantize_row_*_ref): scale, rounding
 * (roundf: half away from zero; Q4_0: +8.5 then truncation, capped at 15),
 * the first of equal-magnitude extremes, nibble order, f16 scale bytes.
 * tests/cli/gguf_llama.sh compares whole tensors with llama-quantize's. */
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_q8_0),
        cmocka_unit_test(test_q4_0),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
