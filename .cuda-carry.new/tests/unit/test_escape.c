/* mk_escape (include/moekit/escape.h): untrusted text to one printable
 * line. Expected outputs are written out by hand from the contract. */
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"
#include "moekit/escape.h"

static void check(const char *in, unsigned flags, const char *want) {
    char *got = mk_escape_dup(in, flags);
    assert_non_null(got);
    assert_string_equal(got, want);
    assert_int_equal(mk_escape(NULL, 0, in, flags), strlen(want));
    assert_int_equal(mk_escape_needed(in, flags), strcmp(in, want) != 0);
    free(got);
}

static void test_cases(void **state) {
    (void)state;
    check("model.layers.0.mlp.gate.weight", 0, "model.layers.0.mlp.gate.weight");
    check("a\nb\rc\td", 0, "a\\nb\\rc\\td");
    check("\x1b[31mred\x7f", 0, "\\x1b[31mred\\x7f");
    check("\x01\x1f", 0, "\\x01\\x1f");
    check("c1 \xc2\x9b" "2J \xc2\x80", 0, "c1 \\u009b2J \\u0080");
    check("nbsp \xc2\xa0 ok", 0, "nbsp \xc2\xa0 ok");             /* U+00A0 prints */
    check("\xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80", 0, "\xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80");
    check("bad \xff\xfe \xc0\xaf \xed\xa0\x80", 0, "bad \\xff\\xfe \\xc0\\xaf \\xed\\xa0\\x80");
    check("trunc \xe4\xb8", 0, "trunc \\xe4\\xb8");
    check("back\\slash", 0, "back\\slash");
    check("back\\slash", MK_ESC_BACKSLASH, "back\\\\slash");
    check("", 0, "");
}

/* Distinct names stay distinct with MK_ESC_BACKSLASH (a manifest names one
 * tensor per line). */
static void test_one_to_one(void **state) {
    (void)state;
    const char *names[] = {"a\\nb", "a\nb", "a\\\\nb", "a\\x0ab", "a\tb"};
    for (size_t i = 0; i < 5; i++)
        for (size_t j = i + 1; j < 5; j++) {
            if (strcmp(names[i], names[j]) == 0)
                continue;
            char *x = mk_escape_dup(names[i], MK_ESC_BACKSLASH), *y = mk_escape_dup(names[j], MK_ESC_BACKSLASH);
            assert_string_not_equal(x, y);
            free(x);
            free(y);
        }
}

/* Truncation never cuts an escape or a code point in half. */
static void test_truncation(void **state) {
    (void)state;
    char buf[6];
    assert_int_equal(mk_escape(buf, sizeof buf, "ab\ncd", 0), 6);
    assert_string_equal(buf, "ab\\nc");
    assert_int_equal(mk_escape(buf, 4, "ab\ncd", 0), 6);
    assert_string_equal(buf, "ab");
    assert_int_equal(mk_escape(buf, 4, "a\xe4\xb8\xad", 0), 4);
    assert_string_equal(buf, "a");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_one_to_one),
        cmocka_unit_test(test_truncation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
