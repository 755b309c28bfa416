/* Walks docs/CONFIG_KEYS.md, the table of which config.json keys each
 * family reads: no config value is silently ignored (issue 9 item 8).
 *
 *  - every row with a test patch: the patch merged into each listed family's
 *    fixture config is refused by mk_config_parse + mk_config_check (what
 *    mk_model_open runs) with a message naming the key;
 *  - every key of the fixtures' configs is a row for its family, so a key
 *    the engine reads or ignores is documented either way;
 *  - the fixture configs themselves pass.
 * The expectations come from the doc and the fixtures, not from the code. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"
#include "moekit/config.h"

typedef struct row {
    char key[160];
    char fams[160];
    char patch[1024];
} row;

static const struct {
    const char *family;
    const char *fixture;
} g_bases[] = {
    {"qwen3_moe", "qwen3moe-a/bf16"},     {"qwen3_next", "qwen3next-a/bf16"},
    {"qwen3_5_moe", "qwen35moe-a/bf16"},  {"qwen3_5_moe", "qwen35moe-vl/bf16"},
    {"deepseek_v3", "deepseekv3-a/bf16"}, {"deepseek_v3", "deepseekv3-a/fp8"},
    {"glm4_moe", "glm4moe-a/bf16"},       {"minimax_m2", "minimaxm2-a/bf16"},
    {"deepseek_v3", "glm4lite-a/bf16"},   {"gpt_oss", "gptoss-a/bf16"},
    {"gpt_oss", "gptoss-a/mxfp4"},
    {"deepseek_v3", "deepseekv32-a/bf16"}, {"deepseek_v3", "glm5dsa-a/bf16"}, /* + DSA */
};
#define NBASES (sizeof g_bases / sizeof g_bases[0])

static void trim(char *s) {
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\n'))
        s[--n] = 0;
    size_t k = strspn(s, " ");
    memmove(s, s + k, strlen(s + k) + 1);
}

/* The table rows of docs/CONFIG_KEYS.md. */
static row *load_rows(int *n) {
    const char *src = getenv("MK_SRC");
    char path[4096];
    snprintf(path, sizeof path, "%s/docs/CONFIG_KEYS.md", src ? src : ".");
    size_t len;
    char *raw = mk_test_slurp(path, &len); /* not NUL-terminated */
    assert_non_null(raw);
    char *txt = malloc(len + 1);
    assert_non_null(txt);
    memcpy(txt, raw, len);
    txt[len] = 0;
    free(raw);
    row *rows = calloc(512, sizeof *rows);
    *n = 0;
    for (char *line = strtok(txt, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "| ", 2) || !strncmp(line, "| key |", 7))
            continue;
        char *cell[6] = {0};
        int nc = 0;
        for (char *p = line + 1; nc < 6 && p && *p; nc++) {
            char *bar = strchr(p, '|');
            if (!bar)
                break;
            *bar = 0;
            cell[nc] = p;
            p = bar + 1;
        }
        assert_int_equal(nc, 5);
        row *r = &rows[(*n)++];
        assert_true(*n < 512);
        snprintf(r->key, sizeof r->key, "%s", cell[0]);
        snprintf(r->fams, sizeof r->fams, "%s", cell[1]);
        trim(r->key);
        trim(r->fams);
        char *pt = cell[4];
        trim(pt);
        if (pt[0] == '`') { /* `{...}` */
            snprintf(r->patch, sizeof r->patch, "%s", pt + 1);
            char *end = strrchr(r->patch, '`');
            assert_non_null(end);
            *end = 0;
        }
    }
    free(txt);
    assert_true(*n > 50);
    return rows;
}

static bool has_family(const row *r, const char *fam) {
    if (!strcmp(r->fams, "all"))
        return true;
    char buf[160];
    snprintf(buf, sizeof buf, "%s", r->fams);
    for (char *t = strtok(buf, ", "); t; t = strtok(NULL, ", "))
        if (!strcmp(t, fam))
            return true;
    return false;
}

/* Does a row for `fam` name `key` (the key column may list aliases "a / b")? */
static bool documented(const row *rows, int n, const char *fam, const char *key) {
    for (int i = 0; i < n; i++) {
        if (!has_family(&rows[i], fam))
            continue;
        char buf[160];
        snprintf(buf, sizeof buf, "%s", rows[i].key);
        for (char *t = strtok(buf, " /"); t; t = strtok(NULL, " /"))
            if (!strcmp(t, key))
                return true;
    }
    return false;
}

/* Merge object `patch` into object `dst`, objects recursively. */
static void merge(json_t *dst, json_t *patch) {
    const char *k;
    json_t *v;
    json_object_foreach(patch, k, v) {
        json_t *d = json_object_get(dst, k);
        if (json_is_object(d) && json_is_object(v))
            merge(d, v);
        else
            json_object_set(dst, k, v);
    }
}

static json_t *load_base(const char *fixture) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", mk_test_fixture(fixture));
    json_error_t e;
    json_t *root = json_load_file(path, 0, &e);
    if (!root)
        fail_msg("%s: %s", path, e.text);
    return root;
}

static void test_rows_refused(void **st) {
    (void)st;
    (void)mk_test_fixture("qwen3moe-a/bf16"); /* a missing fixture skips before anything is allocated */
    int n;
    row *rows = load_rows(&n);
    int tried = 0;
    for (int i = 0; i < n; i++) {
        if (!rows[i].patch[0])
            continue;
        json_error_t e;
        json_t *patch = json_loads(rows[i].patch, 0, &e);
        if (!json_is_object(patch))
            fail_msg("row '%s': test patch is not a JSON object: %s", rows[i].key, e.text);
        const char *leaf = strrchr(rows[i].key, '.');
        leaf = leaf ? leaf + 1 : rows[i].key;
        for (size_t b = 0; b < NBASES; b++) {
            if (!has_family(&rows[i], g_bases[b].family))
                continue;
            json_t *root = load_base(g_bases[b].fixture);
            json_t *tc = json_object_get(root, "text_config");
            bool top = !strncmp(rows[i].key, "quantization", 12);
            if (top && json_object_get(patch, "quantization_config"))
                json_object_del(root, "quantization_config"); /* replace, not merge, the block */
            merge(top || !json_is_object(tc) ? root : tc, patch);
            char *js = json_dumps(root, 0);
            mk_config c;
            mk_status s = mk_config_parse("config.json", js, &c);
            if (s == MK_OK) {
                s = mk_config_check(&c);
                mk_config_free(&c);
            }
            if (s == MK_OK)
                fail_msg("%s + %s: accepted, expected a refusal naming '%s'", g_bases[b].fixture,
                         rows[i].patch, leaf);
            if (!strstr(mk_err_msg(), leaf))
                fail_msg("%s + %s: refused, but the message does not name '%s': %s",
                         g_bases[b].fixture, rows[i].patch, leaf, mk_err_msg());
            if (mk_status_exit_code(s) != 2)
                fail_msg("%s + %s: exit code %d, expected 2", g_bases[b].fixture, rows[i].patch,
                         mk_status_exit_code(s));
            free(js);
            json_decref(root);
            tried++;
        }
        json_decref(patch);
    }
    assert_true(tried > 100);
    free(rows);
}

static void check_keys(const row *rows, int n, const char *fam, const char *fixture, json_t *o,
                       const char *prefix) {
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        char key[256];
        snprintf(key, sizeof key, "%s%s", prefix, k);
        if (!documented(rows, n, fam, key))
            fail_msg("%s/config.json: key '%s' is not in docs/CONFIG_KEYS.md for %s", fixture, key,
                     fam);
        if (!*prefix && json_is_object(v) &&
            (!strcmp(k, "rope_parameters") || !strcmp(k, "rope_scaling") ||
             !strcmp(k, "quantization_config"))) {
            char pf[64];
            snprintf(pf, sizeof pf, "%s.", k);
            check_keys(rows, n, fam, fixture, v, pf);
        }
    }
}

static void test_fixture_keys_documented(void **st) {
    (void)st;
    (void)mk_test_fixture("qwen3moe-a/bf16"); /* a missing fixture skips before anything is allocated */
    int n;
    row *rows = load_rows(&n);
    for (size_t b = 0; b < NBASES; b++) {
        json_t *root = load_base(g_bases[b].fixture);
        check_keys(rows, n, g_bases[b].family, g_bases[b].fixture, root, "");
        json_t *tc = json_object_get(root, "text_config");
        if (json_is_object(tc))
            check_keys(rows, n, g_bases[b].family, g_bases[b].fixture, tc, "");
        json_decref(root);
    }
    free(rows);
}

static void test_fixtures_pass(void **st) {
    (void)st;
    (void)mk_test_fixture("qwen3moe-a/bf16"); /* a missing fixture skips before anything is allocated */
    for (size_t b = 0; b < NBASES; b++) {
        mk_config c;
        assert_int_equal(mk_config_load(mk_test_fixture(g_bases[b].fixture), &c), MK_OK);
        if (mk_config_check(&c) != MK_OK)
            fail_msg("%s: %s", g_bases[b].fixture, mk_err_msg());
        mk_config_free(&c);
    }
    /* the trained fixture and the other qwen3_moe variant too */
    const char *more[] = {"tiny-qwen35moe/bf16", "qwen3moe-odd/bf16", "qwen3moe-odd/fp8",
                          "qwen35moe-vl/bf16-fused"};
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) {
        mk_config c;
        assert_int_equal(mk_config_load(mk_test_fixture(more[i]), &c), MK_OK);
        if (mk_config_check(&c) != MK_OK)
            fail_msg("%s: %s", more[i], mk_err_msg());
        mk_config_free(&c);
    }
}

/* Families the engine does not run are refused by name, never half-read. */
static void test_unsupported_families(void **st) {
    (void)st;
    /* every fixture family runs now: configs of families that do not (with
     * the shapes of released ones) stand in */
    static const char *const cfgs[] = {
        "{\"model_type\": \"llama4_text\", \"architectures\": [\"Llama4ForCausalLM\"], "
        "\"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
        "\"vocab_size\": 128, \"num_local_experts\": 4, \"num_experts_per_tok\": 1}",
        "{\"model_type\": \"step3p5\", \"hidden_size\": 64, \"num_hidden_layers\": 2}",
    };
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        mk_config c;
        assert_int_equal(mk_config_parse("test", cfgs[i], &c), MK_OK);
        assert_int_equal(mk_config_check(&c), MK_E_UNSUPPORTED);
        if (!strstr(mk_err_msg(), "is not supported"))
            fail_msg("config %zu: %s", i, mk_err_msg());
        mk_config_free(&c);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures_pass),
        cmocka_unit_test(test_fixture_keys_documented),
        cmocka_unit_test(test_rows_refused),
        cmocka_unit_test(test_unsupported_families),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
