/* tokenizer.json's model.vocab and model.merges read from the file's bytes
 * (src/tokenizer/tok_json.c) against the same documents read through
 * jansson's DOM (tok_json_test_dom): the same tokenizer (vocabulary size,
 * every id's string, encodings) or the same failure (status, the field's
 * message, the line and column of a syntax error outside the two values),
 * over the shapes real files take and the edges of JSON: escapes in keys and
 * in member names, surrogate pairs, duplicate keys (jansson keeps the last),
 * one-line and CRLF files, both merge forms. Inside the two values the
 * scanner must refuse what jansson refuses (bad escapes, lone surrogates,
 * \u0000, control characters, bad UTF-8, reals and huge integers as ids). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"
#include "moekit/tokenizer.h"
#include "tokenizer/tok_json.h"

static char *g_dir;

static mk_status load_as(const char *json, size_t n, bool dom, mk_tok **t, char *msg, size_t cap) {
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", g_dir);
    assert_int_equal(mk_test_write(path, json, n), 0);
    tok_json_test_dom(dom);
    mk_status st = mk_tok_load(path, t);
    tok_json_test_dom(false);
    snprintf(msg, cap, "%s", st == MK_OK ? "" : mk_err_msg());
    return st;
}

/* "line L column C" of a syntax error message, or "" */
static const char *where(const char *msg, char *buf, size_t cap) {
    const char *p = strstr(msg, "at line ");
    const char *q = p ? strchr(p, ':') : NULL;
    snprintf(buf, cap, "%.*s", p && q ? (int)(q - p) : 0, p ? p : "");
    return buf;
}

static const char *const k_texts[] = {"abc", "a b c", "ba", "\xc3\xa9t\xc3\xa9", "\xf0\x9f\x98\x80!", "ab ab",
                                      "xyz q", ""};

static void compare_ok(const mk_tok *a, const mk_tok *b, const char *what) {
    if (mk_tok_vocab_size(a) != mk_tok_vocab_size(b))
        fail_msg("%s: vocabulary %zu vs %zu ids", what, mk_tok_vocab_size(a), mk_tok_vocab_size(b));
    for (int32_t id = 0; id < (int32_t)mk_tok_vocab_size(a); id++) {
        size_t la = 0, lb = 0;
        const char *sa = mk_tok_token_str(a, id, &la), *sb = mk_tok_token_str(b, id, &lb);
        if (!sa != !sb || la != lb || (sa && memcmp(sa, sb, la)))
            fail_msg("%s: id %d is '%.*s' vs '%.*s'", what, id, (int)la, sa ? sa : "", (int)lb, sb ? sb : "");
    }
    for (size_t i = 0; i < sizeof k_texts / sizeof k_texts[0]; i++) {
        int32_t *ia = NULL, *ib = NULL;
        size_t na = 0, nb = 0;
        mk_status sa = mk_tok_encode(a, k_texts[i], strlen(k_texts[i]), 0, &ia, &na);
        mk_status sb = mk_tok_encode(b, k_texts[i], strlen(k_texts[i]), 0, &ib, &nb);
        if (sa != sb || na != nb || (na && memcmp(ia, ib, na * sizeof *ia)))
            fail_msg("%s: '%s' encodes differently (%zu vs %zu ids)", what, k_texts[i], na, nb);
        free(ia);
        free(ib);
    }
}

/* The document both ways: the same result. inside: a failure inside the
 * vocab or merges value (its line must agree; jansson's column convention
 * is its own). Returns the scanner's status. */
static mk_status same(const char *json, size_t n, bool inside, const char *what) {
    mk_tok *a = NULL, *b = NULL;
    char ma[1024], mb[1024], wa[64], wb[64];
    mk_status sa = load_as(json, n, false, &a, ma, sizeof ma);
    mk_status sb = load_as(json, n, true, &b, mb, sizeof mb);
    if (sa != sb)
        fail_msg("%s: status %d ('%s') vs the DOM's %d ('%s')", what, sa, ma, sb, mb);
    if (sa == MK_OK) {
        compare_ok(a, b, what);
    } else if (strstr(mb, "invalid JSON")) {
        if (!strstr(ma, "invalid JSON"))
            fail_msg("%s: '%s' vs the DOM's '%s'", what, ma, mb);
        where(ma, wa, sizeof wa);
        where(mb, wb, sizeof wb);
        if (inside) { /* the line alone */
            *strstr(wa, " column") = 0;
            *strstr(wb, " column") = 0;
        }
        if (strcmp(wa, wb))
            fail_msg("%s: '%s' vs the DOM's '%s'", what, ma, mb);
    } else if (strcmp(ma, mb) && !strstr(ma, "another shape")) {
        fail_msg("%s: '%s' vs the DOM's '%s'", what, ma, mb);
    }
    mk_tok_free(a);
    mk_tok_free(b);
    return sa;
}
#define SAME(j, inside) same(j, sizeof(j) - 1, inside, #j)

/* A byte-level-free BPE over a few letters: merges a+b, ab+c. */
#define PRE "{\"model\": {\"type\": \"BPE\", \"byte_fallback\": false, "
static void test_documents(void **state) {
    (void)state;
    /* pretty, "a b" merges, added tokens, escapes in keys */
    assert_int_equal(SAME("{\n  \"version\": \"1.0\",\n  \"added_tokens\": [{\"id\": 9, \"content\": \"<s>\", "
                          "\"special\": true}],\n  \"model\": {\n    \"type\": \"BPE\",\n    \"vocab\": {\n"
                          "      \"a\": 0,\n      \"b\": 1,\n      \"c\": 2,\n      \"ab\": 3,\n      \"abc\": 4,\n"
                          "      \"\\u00e9\": 5, \"t\": 6, \"\\\"\": 7, \"\\\\\\/\": 8,\n"
                          "      \"\\ud83d\\ude00\": 10, \"!\": 11, \" \": 12\n    },\n"
                          "    \"merges\": [\n      \"a b\",\n      \"ab c\"\n    ]\n  }\n}\n",
                          false),
                     MK_OK);
    /* one line, ["a", "b"] merges, the vocab after the merges */
    assert_int_equal(SAME(PRE "\"merges\": [[\"a\",\"b\"],[\"ab\",\"c\"]], \"vocab\": {\"a\":0,\"b\":1,\"c\":2,"
                              "\"ab\":3,\"abc\":4}}}", false),
                     MK_OK);
    /* duplicate keys: jansson keeps the last value; two keys with one id */
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\":0,\"b\":1,\"a\":2,\"c\":3,\"d\":3}}}", false), MK_OK);
    /* two "model" members, two "vocab" members: the last of each */
    assert_int_equal(SAME("{\"model\": {\"vocab\": {\"x\": 0}}, \"model\": {\"vocab\": {\"q\": 0}, \"vocab\": "
                          "{\"y\": 0, \"z\": 1}, \"merges\": [\"y z\"], \"merges\": []}}",
                          false),
                     MK_OK);
    /* member names spelled with escapes */
    assert_int_equal(SAME("{\"mo\\u0064el\": {\"voc\\u0061b\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"me\\rges\": 1, "
                          "\"merg\\u0065s\": [\"a b\"]}}",
                          false),
                     MK_OK);
    /* CRLF, tabs, whitespace around every token */
    assert_int_equal(SAME("{\r\n\t\"model\" :\r\n {\t\"vocab\"\t:\t{ \"a\" : 0 ,\r\n\"b\":1 , \"ab\" :2 } ,"
                          "\"merges\" : [ \"a b\" ] } }\r\n",
                          false),
                     MK_OK);
    /* strings holding brackets, quotes and commas (the walk must not count them) */
    assert_int_equal(SAME(PRE "\"vocab\": {\"{\":0,\"]\":1,\",\":2,\"\\\"}\":3,\"{]\":4}, \"merges\": "
                              "[\"{ ]\"], \"x\": \"}]}\"}}", false),
                     MK_OK);
    /* an empty key, the only one (the DOM path's key arena is then never made: a lookup of it
     * did pointer arithmetic on NULL, found by the fuzzer's differential load) */
    assert_int_equal(SAME(PRE "\"vocab\": {\"\": 0}, \"merges\": [\" \"]}}", false), MK_OK);
    /* an empty vocabulary, empty merges; merges null; vocab not an object */
    assert_int_equal(SAME(PRE "\"vocab\": {}, \"merges\": []}}", false), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 0}, \"merges\": null}}", false), MK_OK);
    assert_int_equal(SAME(PRE "\"vocab\": [\"a\"]}}", false), MK_E_FORMAT);
}

static void test_errors(void **state) {
    (void)state;
    /* ids: a real, an exponent, negative, past int64, a string, a boolean, past TOK_MAX_ID */
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 1.5}}}", false), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 1e2}}}", false), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": -1}}}", false), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 99999999999999999999}}}", true), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": \"0\"}}}", false), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": true}}}", false), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 16777216}}}", false), MK_E_FORMAT);
    /* a key's last value decides, as jansson keeps it: a bad value followed by a good one loads,
     * a good one followed by a bad one does not */
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": -3, \"b\": \"x\", \"c\": 2, \"a\": 0, \"b\": 1}}}", false), MK_OK);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"b\": 1.5, \"a\": -3}}}", false),
                     MK_E_FORMAT);
    /* strings jansson refuses */
    assert_int_equal(SAME(PRE "\n\"vocab\": {\"a\": 0,\n \"\\x\": 1}}}", true), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\n\"vocab\": {\"a\": 0,\n \"\\ud800\": 1}}}", true), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\n\"vocab\": {\"a\": 0,\n \"\\udc00x\": 1}}}", true), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\n\"vocab\": {\"a\": 0,\n \"\\ud800\\u0041\": 1}}}", true), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\n\"vocab\": {\"a\": 0,\n \"x\\u0000\": 1}}}", true), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\n\"vocab\": {\"a\": 0,\n \"x\ty\": 1}}}", true), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\n\"vocab\": {\"a\": 0,\n \"x\xff\": 1}}}", true), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\n\"vocab\": {\"a\": 0,\n \"x\xc3\": 1}}}", true), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\n\"vocab\": {\"a\": 0,\n \"\xed\xa0\x80\": 1}}}", true), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\n\"vocab\": {\"a\": 0,\n \"\\u12\": 1}}}", true), MK_E_FORMAT);
    /* structure inside the values */
    assert_int_equal(SAME(PRE "\n\"vocab\": {\"a\" 0}}}", true), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\n\"vocab\": {\"a\": 0,}}}", true), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\n\"vocab\": {\"a\": 0 \"b\": 1}}}", true), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\n\"vocab\": {\"a\": 01}}}", true), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 0}, \"merges\": [\"a a\",]}}", true), MK_E_FORMAT);
    /* a syntax error inside the values comes before any other finding (jansson refuses the whole
     * file): here an unsupported pre-tokenizer the loader reads before the vocabulary */
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\" 0}}, \"pre_tokenizer\": {\"type\": \"Nope\"}}", true),
                     MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 0}, \"merges\": [\"a a\" 1]}, \"decoder\": {\"type\": "
                              "\"Nope\"}}", true),
                     MK_E_FORMAT);
    /* found by review (each gave another status or crashed under UBSan): a syntax error in a value
     * before one jansson finds in the rest; reals past a double (jansson: "real number overflow"),
     * also where a later duplicate would have made the key good; one NUL right after a number or
     * a literal, which jansson 2.14 reads as nothing; empty strings in merges */
    assert_int_equal(SAME("{\n  \"model\": {\n    \"type\": \"BPE\",\n    \"vocab\": {\n      \"a\": 0,\n"
                          "      \"b\" 1\n    },\n    \"merges\": []\n  },\n  \"decoder\": {\"type\": "
                          "\"ByteLevel\",}\n}\n",
                          true),
                     MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\" 0}}, \"x\": tru}", true), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 1e400, \"a\": 0}}}", true), MK_E_FORMAT);
    assert_int_equal(SAME("{\"model\": {\"type\": \"Unigram\", \"vocab\": {\"a\": -1e400}}}", true), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 0}, \"merges\": [1e400]}}", true), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 0\0}}}", false), MK_OK);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 0, \"b\": true\0, \"b\": 1}}}", false), MK_OK);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 0\0\0}}}", true), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 0, \"aa\": 1}, \"merges\": [\"a a\", [1\0]]}}", false),
                     MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 0}, \"merges\": [\"\"]}}", false), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"\": 0}, \"merges\": [[\"\", \"\"]]}}", false), MK_OK);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 0, \"\\\n\": 1}}}", true), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": -99999999999999999999}}}", true), MK_E_FORMAT);
    /* nesting at jansson's limit inside a value: 2046 levels in a key's value are one too many
     * (root, model, vocab and the value's own), 2045 are not (and the key's last value is good) */
    for (int levels = 2045; levels <= 2046; levels++) {
        static char doc[8192];
        int n = snprintf(doc, sizeof doc, PRE "\"vocab\": {\"a\": ");
        memset(doc + n, '[', (size_t)levels);
        memset(doc + n + levels, ']', (size_t)levels);
        n += 2 * levels;
        n += snprintf(doc + n, sizeof doc - (size_t)n, ", \"a\": 0}}}");
        assert_int_equal(same(doc, (size_t)n, true, levels == 2045 ? "2045 levels" : "2046 levels"),
                         levels == 2045 ? MK_OK : MK_E_FORMAT);
    }
    /* merges of the wrong shape or naming unknown tokens */
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 0}, \"merges\": [7]}}", false), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 0}, \"merges\": [[\"a\"]]}}", false), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 0}, \"merges\": [[\"a\", \"a\", \"a\"]]}}", false), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 0}, \"merges\": [\"a  a\"]}}", false), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}", false), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 0}, \"merges\": [[\"a\", \"a\"]]}}", false), MK_E_FORMAT);
    /* syntax errors outside the two values, on their lines and after them: the file's line and
     * column (jansson reads the document with the values cut out) */
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"], \"x\": tru}}", false),
                     MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"merges\": [], \"vocab\": {\"a\": 0,\n\"b\": 1, \"\xc3\xa9\xc3\xa9\": 2}, \"x\": "
                              "[1 2]}}", false),
                     MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 0}}, \"normalizer\": {\"type\": \"NFC\",}}", false), MK_E_FORMAT);
    /* documents the walk cannot read: the whole file to jansson */
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 0,", false), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 0}}} x", false), MK_E_FORMAT);
    assert_int_equal(SAME("[" PRE "\"vocab\": {\"a\": 0}}}]", false), MK_E_FORMAT);
    assert_int_equal(SAME(PRE "\"vocab\": {\"a\": 0]}}", false), MK_E_FORMAT);
}

int main(void) {
    g_dir = mk_test_tmpdir("tokjson");
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_documents), cmocka_unit_test(test_errors)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
