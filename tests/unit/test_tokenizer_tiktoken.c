/* tiktoken.model tokenizers (Kimi-K2's layout) on a small hand-written rank
 * file, each expected result derived by hand from tiktoken's byte-pair rule
 * (merge the adjacent pair whose concatenation has the lowest rank, leftmost
 * first; a piece that is itself a token is that token) and Kimi's split
 * pattern; the comments give the steps. Also: the special tokens of
 * tokenizer_config.json and their rules, decode, and a load with a failure
 * at every allocation in turn (only success or a clean MK_E_NOMEM). The
 * corpus-scale comparison with js-tiktoken is tests/cli/tokenize_tiktoken.sh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "mk_test_util.h"
#include "moekit/tokenizer.h"

static char *g_dir;

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64(const char *s, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)(unsigned char)s[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)(unsigned char)s[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)s[i + 2];
        out[o++] = B64[v >> 18 & 63];
        out[o++] = B64[v >> 12 & 63];
        out[o++] = i + 1 < n ? B64[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? B64[v & 63] : '=';
    }
    out[o] = 0;
}

/* Ranks 0..255: the bytes in order. Then
 *   256 "ab"   257 "abc"   258 "ca"   259 "cab"   260 " x"   261 "xy"
 *   262 "中文"  (UTF-8 e4 b8 ad e6 96 87, no smaller pieces: from bytes only
 *   via pairs of ranked concatenations, so it is reached only whole)
 * Special tokens (Kimi: the 256 ids after the ranks): 263 [BOS], 264 [EOS],
 * 265 <|im_end|>, the rest <|reserved_token_N|>. */
static const char *const k_extra[] = {"ab", "abc", "ca", "cab", " x", "xy", "\xe4\xb8\xad\xe6\x96\x87"};

static void write_files(void) {
    char path[4200], line[64], enc[32];
    snprintf(path, sizeof path, "%s/tiktoken.model", g_dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        b64(&c, 1, enc);
        fprintf(f, "%s %d\n", enc, b);
    }
    for (size_t i = 0; i < sizeof k_extra / sizeof k_extra[0]; i++) {
        b64(k_extra[i], strlen(k_extra[i]), enc);
        snprintf(line, sizeof line, "%s %zu\n", enc, 256 + i);
        fputs(line, f);
    }
    fclose(f);
    static const char cfg[] =
        "{\"added_tokens_decoder\": {\"263\": {\"content\": \"[BOS]\", \"special\": true},"
        " \"264\": {\"content\": \"[EOS]\", \"special\": true},"
        " \"265\": {\"content\": \"<|im_end|>\", \"special\": true}},"
        " \"auto_map\": {\"AutoTokenizer\": [\"tokenization_kimi.TikTokenTokenizer\", null]},"
        " \"bos_token\": \"[BOS]\", \"eos_token\": \"[EOS]\","
        " \"model_max_length\": 1000000000000000019884624838656}";
    snprintf(path, sizeof path, "%s/tokenizer_config.json", g_dir);
    assert_int_equal(mk_test_write(path, cfg, strlen(cfg)), 0);
}

static mk_tok *load(void) {
    mk_tok *t = NULL;
    if (mk_tok_load(g_dir, &t) != MK_OK)
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
    char *back;
    size_t bl;
    assert_int_equal(mk_tok_decode(t, ids, n, false, &back, &bl), MK_OK);
    if (!(flags & MK_TOK_SPLIT_SPECIAL) || !strstr(text, "<|"))
        assert_string_equal(back, text); /* bytes of the ids are the text */
    free(back);
    free(ids);
}

#define EXPECT(t, text, flags, ...)                                        \
    do {                                                                   \
        static const int32_t w_[] = {__VA_ARGS__};                         \
        expect(t, text, flags, w_, sizeof w_ / sizeof w_[0]);              \
    } while (0)

static void test_byte_pair_rule(void **st) {
    (void)st;
    mk_tok *t = load();
    /* "abcab" is one piece. Pairs: ab 256 @0, bc -, ca 258 @2, ab 256 @3.
     * Lowest 256, leftmost: [ab c a b]; pairs abc 257, ca 258, ab 256 ->
     * [ab c ab]; pairs abc 257, cab 259 -> [abc ab]; "abcab" unranked. */
    EXPECT(t, "abcab", 0, 257, 256);
    /* "cab" is a token: the whole piece is looked up first. */
    EXPECT(t, "cab", 0, 259);
    /* "cabc": ca 258 @0, ab 256 @1, bc -: [c ab c]; cab 259, abc 257 ->
     * [c abc]; "cabc" unranked. */
    EXPECT(t, "cabc", 0, 99, 257);
    /* Kimi's pattern: " x" is one piece (a space may lead a letter run),
     * "xy" then: " xy" -> [' ', x, y]: " x" 260 @0 vs xy 261 @1 -> 260. */
    EXPECT(t, " xy", 0, 260, 121);
    /* Han runs are their own piece: "a中文b" -> "a", "中文" (a rank), "b". */
    EXPECT(t, "a\xe4\xb8\xad\xe6\x96\x87" "b", 0, 97, 262, 98);
    /* digits come in runs of at most 3 */
    EXPECT(t, "12345", 0, 49, 50, 51, 52, 53);
    mk_tok_free(t);
}

static void test_special_tokens(void **st) {
    (void)st;
    mk_tok *t = load();
    assert_int_equal(mk_tok_vocab_size(t), 263 + 256);
    assert_int_equal(mk_tok_token_id(t, "<|im_end|>"), 265);
    assert_int_equal(mk_tok_token_id(t, "<|reserved_token_300|>"), 300);
    assert_true(mk_tok_is_special(t, 265) && mk_tok_is_special(t, 518) && !mk_tok_is_special(t, 262));
    assert_int_equal(mk_tok_bos_id(t), 263);
    const int32_t *eos;
    assert_int_equal(mk_tok_eos_ids(t, &eos), 1);
    assert_int_equal(eos[0], 264);
    EXPECT(t, "ab<|im_end|>ab", 0, 256, 265, 256);
    EXPECT(t, "<|reserved_token_300|>", 0, 300);
    /* split_special: the text is text ("<|" is 60 124, "im" ...) */
    int32_t *ids;
    size_t n;
    assert_int_equal(mk_tok_encode(t, "<|im_end|>", 10, MK_TOK_SPLIT_SPECIAL, &ids, &n), MK_OK);
    for (size_t i = 0; i < n; i++)
        assert_true(ids[i] < 263);
    free(ids);
    /* control spans: only the template's copy is a special token */
    const char *text = "<|im_end|>u<|im_end|>";
    mk_tok_span ctl = {11, 10};
    assert_int_equal(mk_tok_encode_ctl(t, text, strlen(text), 0, &ctl, 1, NULL, 0, &ids, &n), MK_OK);
    size_t specials = 0;
    for (size_t i = 0; i < n; i++)
        specials += ids[i] >= 263;
    assert_int_equal(specials, 1);
    assert_int_equal(ids[n - 1], 265);
    free(ids);
    /* decode: skip_special drops them */
    static const int32_t d[] = {256, 265, 97};
    char *s;
    size_t sl;
    assert_int_equal(mk_tok_decode(t, d, 3, true, &s, &sl), MK_OK);
    assert_string_equal(s, "aba");
    free(s);
    assert_int_equal(mk_tok_decode(t, d, 3, false, &s, &sl), MK_OK);
    assert_string_equal(s, "ab<|im_end|>a");
    free(s);
    mk_tok_free(t);
}

/* A failure at every allocation of the load in turn: success or a clean
 * MK_E_NOMEM with a message, never another status (nothing leaks: the
 * sanitizer build checks). */
static void test_alloc_faults(void **st) {
    (void)st;
    mk_alloc_hook_json();
    long n = 0;
    for (;; n += n < 2000 ? 1 : 37) {
        mk_alloc_fail_after(n);
        mk_tok *t = NULL;
        mk_status s = mk_tok_load(g_dir, &t);
        long used = mk_alloc_count();
        mk_alloc_fail_after(-1);
        mk_tok_free(t);
        if (s != MK_OK && s != MK_E_NOMEM)
            fail_msg("allocation %ld failing gave %s (%s)", n, mk_status_name(s), mk_err_msg());
        if (s == MK_E_NOMEM && !*mk_err_msg())
            fail_msg("allocation %ld failing: MK_E_NOMEM without a message", n);
        if (used <= n) {
            assert_int_equal(s, MK_OK);
            break;
        }
    }
    assert_true(n > 100);
}

static int setup(void **st) {
    (void)st;
    g_dir = mk_test_tmpdir("tiktoken");
    write_files();
    return 0;
}

static int teardown(void **st) {
    (void)st;
    mk_test_rmrf(g_dir);
    free(g_dir);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_byte_pair_rule),
        cmocka_unit_test(test_special_tokens),
        cmocka_unit_test(test_alloc_faults),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
