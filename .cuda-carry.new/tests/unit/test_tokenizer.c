/* Tokenizer on the trained fixture tiny-qwen35moe (byte-level BPE, GPT-2
 * regex, ChatML): the greedy prompts / continuations of reference.json and
 * the chat example HF tokenizers produced, round trips, special tokens,
 * streaming decode, and load / input errors. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"
#include "moekit/chat.h"
#include "moekit/tokenizer.h"

static char g_dir[4096];

static mk_tok *load(void) {
    mk_tok *t = NULL;
    mk_status s = mk_tok_load(g_dir, &t);
    if (s != MK_OK)
        fail_msg("load %s: %s", g_dir, mk_err_msg());
    return t;
}

static size_t enc(const mk_tok *t, const char *s, unsigned flags, int32_t **ids) {
    size_t n;
    assert_int_equal(mk_tok_encode(t, s, strlen(s), flags, ids, &n), MK_OK);
    return n;
}

static char *dec(const mk_tok *t, const int32_t *ids, size_t n) {
    char *out;
    size_t len;
    assert_int_equal(mk_tok_decode(t, ids, n, false, &out, &len), MK_OK);
    assert_int_equal(strlen(out), len);
    return out;
}

static void test_basics(void **state) {
    (void)state;
    mk_tok *t = load();
    assert_int_equal(mk_tok_vocab_size(t), 4096);
    assert_int_equal(mk_tok_token_id(t, "<|endoftext|>"), 0);
    assert_int_equal(mk_tok_token_id(t, "<|im_start|>"), 1);
    assert_int_equal(mk_tok_token_id(t, "<|im_end|>"), 2);
    assert_int_equal(mk_tok_token_id(t, "no such token"), -1);
    assert_true(mk_tok_is_special(t, 2));
    assert_false(mk_tok_is_special(t, 300));
    /* eos_token "<|im_end|>" from tokenizer_config.json, then [2, 0] from
     * generation_config.json without the duplicate. */
    const int32_t *eos;
    assert_int_equal(mk_tok_eos_ids(t, &eos), 2);
    assert_int_equal(eos[0], 2);
    assert_int_equal(eos[1], 0);
    assert_int_equal(mk_tok_bos_id(t), -1);
    size_t len;
    assert_non_null(mk_tok_token_str(t, 201, &len));
    assert_null(mk_tok_token_str(t, 4096, &len));
    mk_tok_free(t);
    mk_tok_free(NULL);
}

static void check_ids(const int32_t *got, size_t n, const json_t *want, const char *what) {
    if (n != json_array_size(want))
        fail_msg("%s: %zu ids, reference has %zu", what, n, json_array_size(want));
    for (size_t i = 0; i < n; i++)
        if (got[i] != json_integer_value(json_array_get(want, i)))
            fail_msg("%s: id %zu is %d, reference %lld", what, i, (int)got[i],
                     (long long)json_integer_value(json_array_get(want, i)));
}

/* reference.json: prompt text -> prompt ids, generated ids -> text. */
static void test_reference_greedy(void **state) {
    (void)state;
    json_error_t e;
    json_t *ref = json_load_file(mk_test_fixture("tiny-qwen35moe/reference.json"), 0, &e);
    assert_non_null(ref);
    mk_tok *t = load();
    const json_t *greedy = json_object_get(ref, "greedy");
    assert_true(json_array_size(greedy) >= 3);
    for (size_t i = 0; i < json_array_size(greedy); i++) {
        const json_t *g = json_array_get(greedy, i);
        int32_t *ids;
        size_t n = enc(t, json_string_value(json_object_get(g, "prompt")), MK_TOK_ADD_SPECIAL, &ids);
        check_ids(ids, n, json_object_get(g, "prompt_ids"), json_string_value(json_object_get(g, "prompt")));
        free(ids);
        const json_t *gen = json_object_get(g, "generated_ids");
        size_t m = json_array_size(gen);
        int32_t *gids = malloc(m * sizeof *gids);
        for (size_t k = 0; k < m; k++)
            gids[k] = (int32_t)json_integer_value(json_array_get(gen, k));
        char *text = dec(t, gids, m);
        assert_string_equal(text, json_string_value(json_object_get(g, "text")));
        free(text);
        free(gids);
    }
    /* The 64 teacher-forced input ids of ref_logits.f32 and their text. */
    const json_t *rl = json_object_get(ref, "ref_logits");
    int32_t *rids;
    size_t rn = enc(t, json_string_value(json_object_get(rl, "input_text")), MK_TOK_ADD_SPECIAL, &rids);
    check_ids(rids, rn, json_object_get(rl, "input_ids"), "ref_logits.input_text");
    char *rtext = dec(t, rids, rn);
    assert_string_equal(rtext, json_string_value(json_object_get(rl, "input_text")));
    free(rtext);
    free(rids);

    /* The ChatML example HF tokenizers encoded, rendered by our template. */
    const json_t *chk = json_object_get(ref, "hf_tokenizer_check");
    mk_chat_kind kind;
    assert_int_equal(mk_chat_detect(g_dir, NULL, &kind), MK_OK);
    assert_int_equal(kind, MK_CHAT_CHATML);
    mk_chat_msg msg = {"user", "Return the list.", NULL};
    char *prompt;
    assert_int_equal(mk_chat_render(kind, &msg, 1, MK_CHAT_GENERATION_PROMPT, &prompt), MK_OK);
    assert_string_equal(prompt, json_string_value(json_object_get(chk, "chat_example")));
    int32_t *ids;
    size_t n = enc(t, prompt, 0, &ids);
    check_ids(ids, n, json_object_get(chk, "chat_example_ids"), "chat_example");
    free(ids);
    free(prompt);
    mk_tok_free(t);
    json_decref(ref);
}

static const char *const k_texts[] = {
    "Return the list of elements.\n\n    def f(x):\n        return x * 2\n",
    "  leading and trailing spaces  ",
    "tabs\tand\r\nwindows lines\n\n\n",
    "中文和日本語のテキスト、한국어",
    "emoji 😀👍🏽👨‍👩‍👧‍👦 and flags 🇯🇵",
    "Привет, мир! مرحبا שלום नमस्ते ไทย",
    "e\xcc\x81 combining and \xc3\xa9 precomposed",
    "'s 't 're 've 'm 'll 'd IT'S",
    "1234567890 3.14159 1,000",
    "",
};

static void test_round_trip(void **state) {
    (void)state;
    mk_tok *t = load();
    for (size_t i = 0; i < sizeof k_texts / sizeof k_texts[0]; i++) {
        int32_t *ids;
        size_t n = enc(t, k_texts[i], MK_TOK_ADD_SPECIAL, &ids);
        assert_true(n > 0 || k_texts[i][0] == 0);
        char *back = dec(t, ids, n);
        assert_string_equal(back, k_texts[i]);
        free(back);
        free(ids);
    }
    mk_tok_free(t);
}

static void test_special_tokens(void **state) {
    (void)state;
    mk_tok *t = load();
    int32_t *ids;
    size_t n = enc(t, "<|im_start|>user\nhi<|im_end|><|im_end|>x<|endoftext|>", 0, &ids);
    assert_true(n >= 6);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[n - 1], 0);
    int count2 = 0;
    for (size_t i = 0; i < n; i++)
        count2 += ids[i] == 2;
    assert_int_equal(count2, 2);
    char *back = dec(t, ids, n);
    assert_string_equal(back, "<|im_start|>user\nhi<|im_end|><|im_end|>x<|endoftext|>");
    free(back);
    /* skip_special drops them on decode. */
    char *plain;
    size_t len;
    assert_int_equal(mk_tok_decode(t, ids, n, true, &plain, &len), MK_OK);
    assert_string_equal(plain, "user\nhix");
    free(plain);
    free(ids);

    /* A partial marker is plain text; split_special turns the real one into text too. */
    n = enc(t, "<|im_end", 0, &ids);
    for (size_t i = 0; i < n; i++)
        assert_true(ids[i] > 2);
    free(ids);
    n = enc(t, "a<|im_end|>b", MK_TOK_SPLIT_SPECIAL, &ids);
    for (size_t i = 0; i < n; i++)
        assert_true(ids[i] > 2);
    back = dec(t, ids, n);
    assert_string_equal(back, "a<|im_end|>b");
    free(back);
    free(ids);
    mk_tok_free(t);
}

/* Valid UTF-8 and no byte-level stand-ins (U+0100..U+0143 such as 'Ġ'). */
static void assert_clean_utf8(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t l = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
        assert_true(l > 0 && i + l <= n);
        for (size_t k = 1; k < l; k++)
            assert_int_equal((unsigned char)s[i + k] & 0xC0, 0x80);
        if (l == 2) {
            unsigned cp = ((c & 0x1Fu) << 6) | ((unsigned char)s[i + 1] & 0x3Fu);
            assert_false(cp >= 0x100 && cp <= 0x143);
        }
        i += l;
    }
}

static void test_stream(void **state) {
    (void)state;
    mk_tok *t = load();
    mk_tok_stream *s;
    assert_int_equal(mk_tok_stream_create(t, false, &s), MK_OK);
    for (size_t i = 0; i < sizeof k_texts / sizeof k_texts[0]; i++) {
        int32_t *ids;
        size_t n = enc(t, k_texts[i], 0, &ids), total = 0, held = 0;
        char *acc = malloc(strlen(k_texts[i]) + 8);
        for (size_t k = 0; k < n; k++) {
            const char *out;
            size_t len;
            assert_int_equal(mk_tok_stream_push(s, ids[k], &out, &len), MK_OK);
            assert_clean_utf8(out, len);
            held += len == 0;
            memcpy(acc + total, out, len);
            total += len;
        }
        const char *out;
        size_t len;
        assert_int_equal(mk_tok_stream_flush(s, &out, &len), MK_OK);
        assert_int_equal(len, 0);
        acc[total] = 0;
        assert_string_equal(acc, k_texts[i]);
        /* CJK and emoji are split over byte tokens in this small vocabulary:
         * some pushes must have held their bytes back. */
        if (i == 3 || i == 4)
            assert_true(held > 0);
        free(acc);
        free(ids);
    }
    mk_tok_stream_free(s);
    mk_tok_stream_free(NULL);
    mk_tok_free(t);
}

/* Bytes that never form UTF-8 become U+FFFD, in the stream and in decode. */
static void test_stream_invalid(void **state) {
    (void)state;
    mk_tok *t = load();
    int32_t e4 = mk_tok_token_id(t, "\xc3\xa4"); /* byte 0xE4 stands for itself: 'ä' */
    int32_t a = mk_tok_token_id(t, "A");
    assert_true(e4 >= 0 && a >= 0);
    int32_t seq[] = {e4, a, e4};
    char *text = dec(t, seq, 3);
    assert_string_equal(text, "\xef\xbf\xbd" "A" "\xef\xbf\xbd");
    free(text);
    mk_tok_stream *s;
    assert_int_equal(mk_tok_stream_create(t, false, &s), MK_OK);
    const char *out;
    size_t len;
    assert_int_equal(mk_tok_stream_push(s, e4, &out, &len), MK_OK);
    assert_int_equal(len, 0); /* could still become a 3-byte character */
    assert_int_equal(mk_tok_stream_push(s, a, &out, &len), MK_OK);
    assert_string_equal(out, "\xef\xbf\xbd" "A");
    assert_int_equal(mk_tok_stream_push(s, e4, &out, &len), MK_OK);
    assert_int_equal(len, 0);
    assert_int_equal(mk_tok_stream_flush(s, &out, &len), MK_OK);
    assert_string_equal(out, "\xef\xbf\xbd");
    assert_int_equal(mk_tok_stream_push(s, 4096, &out, &len), MK_E_ARG);
    assert_int_equal(mk_tok_stream_push(s, -1, &out, &len), MK_E_ARG);
    mk_tok_stream_free(s);
    mk_tok_free(t);
}

static void test_input_errors(void **state) {
    (void)state;
    mk_tok *t = load();
    int32_t *ids;
    size_t n;
    assert_int_equal(mk_tok_encode(t, "ok\xff", 3, 0, &ids, &n), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "UTF-8"));
    assert_int_equal(mk_tok_encode(t, "\xed\xa0\x80", 3, 0, &ids, &n), MK_E_ARG); /* surrogate */
    int32_t bad[] = {5, 99999};
    char *text;
    size_t len;
    assert_int_equal(mk_tok_decode(t, bad, 2, false, &text, &len), MK_E_ARG);
    assert_non_null(strstr(mk_err_msg(), "99999"));
    /* Embedded NUL is text like any other. */
    assert_int_equal(mk_tok_encode(t, "a\0b", 3, 0, &ids, &n), MK_OK);
    assert_int_equal(mk_tok_decode(t, ids, n, false, &text, &len), MK_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(text, "a\0b", 3);
    free(text);
    free(ids);
    mk_tok_free(t);
}

static mk_status load_text(const char *dir, const char *json, mk_tok **t) {
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    assert_int_equal(mk_test_write(path, json, strlen(json)), 0);
    return mk_tok_load(path, t);
}

static void test_load_errors(void **state) {
    (void)state;
    mk_tok *t = (mk_tok *)1;
    assert_int_equal(mk_tok_load("/nonexistent/tokenizer.json", &t), MK_E_IO);
    assert_null(t);
    assert_non_null(strstr(mk_err_msg(), "/nonexistent/tokenizer.json"));
    char *dir = mk_test_tmpdir("tok");
    assert_int_equal(mk_tok_load(dir, &t), MK_E_NOTFOUND);
    assert_non_null(strstr(mk_err_msg(), "no tokenizer.json"));
    static const struct {
        const char *json;
        mk_status st;
        const char *needle;
    } cases[] = {
        {"{\"model\": {\"vocab\": {\"a\": 0}", MK_E_FORMAT, "invalid JSON"},
        {"[1, 2]", MK_E_FORMAT, "top level"},
        {"{\"model\": {\"type\": \"BPE\"}}", MK_E_FORMAT, "model.vocab"},
        {"{\"model\": {\"vocab\": [\"a\"]}}", MK_E_FORMAT, "model.vocab': expected an object, found an array"},
        {"{\"model\": {\"vocab\": {\"a\": -1}}}", MK_E_FORMAT, "out of range"},
        {"{\"model\": {\"vocab\": {\"a\": \"x\"}}}", MK_E_FORMAT, "expected an integer"},
        {"{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", MK_E_UNSUPPORTED, "WordPiece"},
        {"{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}", MK_E_FORMAT, "model.merges[0]"},
        {"{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [\"a a a\"]}}", MK_E_FORMAT, "one space"},
        {"{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [[\"a\", \"a\"]]}}", MK_E_FORMAT, "merged token"},
        {"{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [7]}}", MK_E_FORMAT, "model.merges[0]"},
        {"{\"model\": {\"vocab\": {\"a\": 0}, \"unk_token\": \"?\"}}", MK_E_FORMAT, "unk_token"},
        {"{\"model\": {\"vocab\": {}}, \"normalizer\": {\"type\": \"Lowercase\"}}", MK_E_UNSUPPORTED,
         "normalizer.type"},
        {"{\"model\": {\"vocab\": {}}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": "
         "\"(\"}, \"behavior\": \"Isolated\"}}", MK_E_UNSUPPORTED, "pre_tokenizer.pattern"},
        {"{\"model\": {\"vocab\": {}}, \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": "
         "[{\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, \"behavior\": \"Sideways\"}]}}",
         MK_E_FORMAT, "pre_tokenizer.pretokenizers[0].behavior"},
        {"{\"model\": {\"vocab\": {}}, \"added_tokens\": [{\"id\": 0}]}", MK_E_FORMAT, "added_tokens[0].content"},
        {"{\"model\": {\"vocab\": {}}, \"decoder\": {\"type\": \"WordPiece\"}}", MK_E_UNSUPPORTED, "decoder"},
        {"{\"model\": {\"vocab\": {}}, \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": "
         "[{\"SpecialToken\": {\"id\": \"<s>\"}}], \"special_tokens\": {}}}", MK_E_FORMAT, "<s>"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        t = (mk_tok *)1;
        mk_status st = load_text(dir, cases[i].json, &t);
        if (st != cases[i].st || !strstr(mk_err_msg(), cases[i].needle))
            fail_msg("case %zu: status %d, message '%s' (wanted %d with '%s')", i, st, mk_err_msg(),
                     cases[i].st, cases[i].needle);
        assert_null(t);
    }
    mk_test_rmrf(dir);
    free(dir);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s", mk_test_fixture("tiny-qwen35moe/bf16"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basics),        cmocka_unit_test(test_reference_greedy),
        cmocka_unit_test(test_round_trip),    cmocka_unit_test(test_special_tokens),
        cmocka_unit_test(test_stream),        cmocka_unit_test(test_stream_invalid),
        cmocka_unit_test(test_input_errors),  cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
