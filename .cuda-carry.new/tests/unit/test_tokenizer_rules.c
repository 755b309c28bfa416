/* Tokenizer rules on small hand-written tokenizer.json files, each expected
 * result derived from HF tokenizers' semantics (comments give the steps):
 * Split behaviors and invert, TemplateProcessing, added-token lstrip /
 * rstrip / single_word / split_special, unk fusing, byte fallback,
 * ignore_merges, NFC with a normalized added token, ByteLevel prefix space. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"
#include "moekit/tokenizer.h"

static char *g_dir;

/* Character-level BPE: a b c d - are 0..4, then merges
 *   rank 0: b - -> "b-" 7     rank 1: a b -> "ab" 5     rank 2: ab c -> "abc" 6
 *   rank 3: c - -> "c-" 8     rank 4: - d -> "-d" 9     rank 5: - c -> "-c" 10
 *   rank 6: - - -> "--" 11
 * plus ' ' 14, x 15, <unk> 19, <0xC3> 20, <0xA9> 21, "bc" 22 (no merge makes it). */
static const char *k_vocab =
    "\"vocab\": {\"a\":0,\"b\":1,\"c\":2,\"d\":3,\"-\":4,\"ab\":5,\"abc\":6,\"b-\":7,\"c-\":8,\"-d\":9,"
    "\"-c\":10,\"--\":11,\" \":14,\"x\":15,\"<unk>\":19,\"<0xC3>\":20,\"<0xA9>\":21,\"bc\":22},"
    "\"merges\": [[\"b\",\"-\"], \"a b\", [\"ab\",\"c\"], \"c -\", \"- d\", \"- c\", \"- -\"]";

static mk_tok *make(const char *model_extra, const char *rest) {
    char json[8192], path[4200];
    snprintf(json, sizeof json, "{\"model\": {\"type\": \"BPE\", %s%s}%s%s}", k_vocab, model_extra,
             *rest ? ", " : "", rest);
    snprintf(path, sizeof path, "%s/tokenizer.json", g_dir);
    assert_int_equal(mk_test_write(path, json, strlen(json)), 0);
    mk_tok *t = NULL;
    if (mk_tok_load(path, &t) != MK_OK)
        fail_msg("load: %s", mk_err_msg());
    return t;
}

static void expect(const mk_tok *t, const char *text, unsigned flags, const int32_t *want, size_t nwant) {
    int32_t *ids;
    size_t n;
    assert_int_equal(mk_tok_encode(t, text, strlen(text), flags, &ids, &n), MK_OK);
    char got[512] = "", exp[512] = "";
    for (size_t i = 0; i < n; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%d ", (int)ids[i]);
    for (size_t i = 0; i < nwant; i++)
        snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%d ", (int)want[i]);
    if (strcmp(got, exp) != 0)
        fail_msg("\"%s\": got [%s], expected [%s]", text, got, exp);
    free(ids);
}

/* Text with a character no token represents (no unk, no byte fallback):
 * HF drops it; moekit refuses to lose text and names the character. */
static void expect_refused(const mk_tok *t, const char *text, const char *what) {
    int32_t *ids = NULL;
    size_t n = 0;
    mk_status st = mk_tok_encode(t, text, strlen(text), 0, &ids, &n);
    if (st == MK_OK) {
        free(ids);
        fail_msg("\"%s\": encoded to %zu ids, expected a refusal", text, n);
    }
    assert_int_equal(st, MK_E_FORMAT);
    if (!strstr(mk_err_msg(), "cannot encode") || !strstr(mk_err_msg(), what))
        fail_msg("\"%s\": message \"%s\" does not name %s", text, mk_err_msg(), what);
}

#define EXPECT(t, text, flags, ...)                                        \
    do {                                                                   \
        static const int32_t w_[] = {__VA_ARGS__};                         \
        expect(t, text, flags, w_, sizeof w_ / sizeof w_[0]);              \
    } while (0)

static mk_tok *split_tok(const char *behavior, const char *invert) {
    char pre[512];
    snprintf(pre, sizeof pre,
             "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"String\": \"-\"}, "
             "\"behavior\": \"%s\", \"invert\": %s}", behavior, invert);
    return make("", pre);
}

/* "ab-c--d": segments ab | - | c | - | - | d (matches marked). */
static void test_split_behaviors(void **state) {
    (void)state;
    static const struct {
        const char *behavior, *invert;
        int32_t ids[8];
        size_t n;
    } cases[] = {
        {"Removed", "false", {5, 2, 3}, 3},                       /* ab c d */
        {"Isolated", "false", {5, 4, 2, 4, 4, 3}, 6},             /* ab - c - - d */
        {"MergedWithPrevious", "false", {0, 7, 8, 4, 3}, 5},      /* ab- c- - d; "ab-": b- first */
        {"MergedWithNext", "false", {5, 10, 4, 9}, 4},            /* ab -c - -d */
        {"Contiguous", "false", {5, 4, 2, 11, 3}, 5},             /* ab - c -- d */
        {"Removed", "true", {4, 4, 4}, 3},                        /* inverted: the text goes */
        {"Isolated", "true", {5, 4, 2, 4, 4, 3}, 6},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mk_tok *t = split_tok(cases[i].behavior, cases[i].invert);
        expect(t, "ab-c--d", 0, cases[i].ids, cases[i].n);
        mk_tok_free(t);
    }
}

/* \s follows Oniguruma (White_Space): U+180E MONGOLIAN VOWEL SEPARATOR is
 * not a space there (PCRE2's own \s would split on it). */
static void test_regex_whitespace(void **state) {
    (void)state;
    mk_tok *t = make("", "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\s+\"}, "
                         "\"behavior\": \"Removed\", \"invert\": false}");
    EXPECT(t, "a b", 0, 0, 1);              /* split at the space: no a+b merge */
    EXPECT(t, "a\u3000b", 0, 0, 1);        /* ideographic space is White_Space */
    /* U+180E is not removed as a space, so it reaches the vocab, which lacks
     * it: refused (as a space it would be removed, giving 0 1). */
    expect_refused(t, "a\xe1\xa0\x8e" "b", "U+180E");
    mk_tok_free(t);
}

static void test_template_processing(void **state) {
    (void)state;
    mk_tok *t = make("",
                     "\"added_tokens\": [{\"id\": 12, \"content\": \"<s>\", \"special\": true},"
                     "{\"id\": 13, \"content\": \"</s>\", \"special\": true}],"
                     "\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": ["
                     "{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}},"
                     "{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}},"
                     "{\"SpecialToken\": {\"id\": \"</s>\", \"type_id\": 0}}],"
                     "\"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [12], \"tokens\": [\"<s>\"]},"
                     "\"</s>\": {\"id\": \"</s>\", \"ids\": [13], \"tokens\": [\"</s>\"]}}}");
    EXPECT(t, "abc", MK_TOK_ADD_SPECIAL, 12, 6, 13);
    EXPECT(t, "abc", 0, 6);
    EXPECT(t, "", MK_TOK_ADD_SPECIAL, 12, 13);
    EXPECT(t, "<s>ab", 0, 12, 5);
    assert_int_equal(mk_tok_vocab_size(t), 23);
    mk_tok_free(t);
}

static void test_added_token_rules(void **state) {
    (void)state;
    mk_tok *t = make(", \"unk_token\": \"<unk>\", \"fuse_unk\": true",
                     "\"added_tokens\": ["
                     "{\"id\": 16, \"content\": \"<m>\", \"special\": true, \"lstrip\": true},"
                     "{\"id\": 17, \"content\": \"<r>\", \"special\": false, \"rstrip\": true},"
                     "{\"id\": 18, \"content\": \"dd\", \"special\": false, \"single_word\": true},"
                     "{\"id\": 23, \"content\": \"<m>x\", \"special\": false, \"normalized\": false},"
                     "{\"id\": 25, \"content\": \"<m>xd\", \"special\": false}]");
    EXPECT(t, "a <m>b", 0, 0, 16, 1);        /* lstrip takes the space before <m> */
    EXPECT(t, "a<m>b", 0, 0, 16, 1);
    EXPECT(t, "<r>  a", 0, 17, 0);           /* rstrip takes the spaces after <r> */
    EXPECT(t, "dd a", 0, 18, 14, 0);         /* a whole word: matched */
    EXPECT(t, "xdd", 0, 15, 3, 3);           /* inside a word: not matched */
    EXPECT(t, "ddx", 0, 3, 3, 15);
    EXPECT(t, "_dd", 0, 19, 3, 3);          /* '_' is a word character (Rust regex \w) */
    EXPECT(t, "-dd", 0, 4, 18);             /* '-' is not */
    EXPECT(t, "<m>xa", 0, 23, 0);            /* longest match wins */
    /* "<m>xd" is normalized (the default for non-special tokens): it is only
     * looked for after the raw-text tokens have been cut out. */
    EXPECT(t, "<m>xd", 0, 23, 3);
    EXPECT(t, "a<m>", MK_TOK_SPLIT_SPECIAL, 0, 19); /* "<m>" as text: 3 unknown chars, one fused unk */
    EXPECT(t, "a<m>x", MK_TOK_SPLIT_SPECIAL, 0, 23); /* the longer match is not special */
    assert_int_equal(mk_tok_token_id(t, "<m>"), 16);
    assert_true(mk_tok_is_special(t, 16));
    assert_false(mk_tok_is_special(t, 17));
    mk_tok_free(t);
}

static void test_unk_and_byte_fallback(void **state) {
    (void)state;
    mk_tok *t = make(", \"unk_token\": \"<unk>\", \"fuse_unk\": false", "");
    EXPECT(t, "a??b", 0, 0, 19, 19, 1); /* unfused: one unk per character */
    mk_tok_free(t);
    t = make(", \"unk_token\": \"<unk>\", \"byte_fallback\": true",
             "\"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}]}");
    EXPECT(t, "a\xc3\xa9", 0, 0, 20, 21);    /* é = C3 A9: both byte tokens exist */
    EXPECT(t, "\xc3\xbc", 0, 19);            /* ü = C3 BC: <0xBC> missing -> unk */
    int32_t ids[] = {0, 20, 21}, half[] = {20};
    char *text;
    size_t len;
    assert_int_equal(mk_tok_decode(t, ids, 3, false, &text, &len), MK_OK);
    assert_string_equal(text, "a\xc3\xa9");
    free(text);
    assert_int_equal(mk_tok_decode(t, half, 1, false, &text, &len), MK_OK);
    assert_string_equal(text, "\xef\xbf\xbd");
    free(text);
    mk_tok_free(t);
    /* No unk token, no fallback: HF drops unknown characters; moekit
     * refuses the text (issue 9 item 13: never dropped text). */
    t = make("", "");
    expect_refused(t, "a?c", "U+003F");
    expect_refused(t, "a?b", "U+003F");
    EXPECT(t, "abc", 0, 6); /* the tokenizer still works after a refusal */
    mk_tok_free(t);
}

static void test_ignore_merges(void **state) {
    (void)state;
    mk_tok *t = make("", "");
    EXPECT(t, "bc", 0, 1, 2); /* no merge makes "bc" */
    mk_tok_free(t);
    t = make(", \"ignore_merges\": true", "");
    EXPECT(t, "bc", 0, 22);   /* the word is in the vocab: taken whole */
    EXPECT(t, "abcd", 0, 6, 3);
    mk_tok_free(t);
}

static void test_nfc_normalized_added(void **state) {
    (void)state;
    /* The added token is written decomposed; normalized=true means it is
     * NFC'd and matched in NFC'd text. */
    mk_tok *t = make("", "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"}]},"
                         "\"added_tokens\": [{\"id\": 24, \"content\": \"e\\u0301\", \"special\": false, "
                         "\"normalized\": true}]");
    EXPECT(t, "e\xcc\x81", 0, 24);  /* NFD input */
    EXPECT(t, "\xc3\xa9", 0, 24);   /* NFC input */
    EXPECT(t, "a\xc3\xa9" "b", 0, 0, 24, 1);
    mk_tok_free(t);
    /* normalized=false: matched on the raw text only. */
    t = make("", "\"normalizer\": {\"type\": \"NFC\"},"
                 "\"added_tokens\": [{\"id\": 24, \"content\": \"e\\u0301\", \"special\": true, "
                 "\"normalized\": false}]");
    EXPECT(t, "e\xcc\x81", 0, 24);
    expect_refused(t, "\xc3\xa9", "U+00E9"); /* precomposed é: not the token, not in the vocab */
    mk_tok_free(t);
}

static void test_bytelevel_prefix_space(void **state) {
    (void)state;
    char json[2048], path[4200];
    /* Ġ is U+0120 (byte 0x20). */
    snprintf(json, sizeof json,
             "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"\\u0120\": 0, \"h\": 1, \"i\": 2, "
             "\"\\u0120h\": 3, \"\\u0120hi\": 4}, \"merges\": [\"\\u0120 h\", \"\\u0120h i\"]},"
             "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true},"
             "\"decoder\": {\"type\": \"ByteLevel\"}}");
    snprintf(path, sizeof path, "%s/tokenizer.json", g_dir);
    assert_int_equal(mk_test_write(path, json, strlen(json)), 0);
    mk_tok *t = NULL;
    if (mk_tok_load(path, &t) != MK_OK)
        fail_msg("load: %s", mk_err_msg());
    EXPECT(t, "hi", 0, 4);        /* " hi" after the prefix space */
    EXPECT(t, " hi", 0, 4);       /* already starts with a space: none added */
    EXPECT(t, "hi hi", 0, 4, 4);  /* GPT-2 regex: "Ġhi" "Ġhi" */
    int32_t ids[] = {4, 4};
    char *text;
    size_t len;
    assert_int_equal(mk_tok_decode(t, ids, 2, false, &text, &len), MK_OK);
    assert_string_equal(text, " hi hi");
    free(text);
    mk_tok_free(t);
}

int main(void) {
    g_dir = mk_test_tmpdir("tokrules");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_behaviors),     cmocka_unit_test(test_regex_whitespace),
        cmocka_unit_test(test_template_processing),
        cmocka_unit_test(test_added_token_rules),   cmocka_unit_test(test_unk_and_byte_fallback),
        cmocka_unit_test(test_ignore_merges),       cmocka_unit_test(test_nfc_normalized_added),
        cmocka_unit_test(test_bytelevel_prefix_space),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mk_test_rmrf(g_dir);
    free(g_dir);
    return rc;
}
