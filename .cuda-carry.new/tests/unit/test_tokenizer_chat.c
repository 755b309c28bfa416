/* Chat templates: detection from template text and model directories,
 * rendering of each family (expected strings follow the reference Jinja
 * templates; tests/cli/tokenize_lenml.sh checks them against the real
 * templates rendered by @huggingface/jinja), and the error cases. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"
#include "moekit/chat.h"

static char *render(mk_chat_kind k, const mk_chat_msg *m, size_t n, unsigned flags) {
    char *out = NULL;
    if (mk_chat_render(k, m, n, flags, &out) != MK_OK)
        fail_msg("render: %s", mk_err_msg());
    return out;
}

#define ASSERT_RENDER(k, m, flags, want)                                     \
    do {                                                                     \
        char *got_ = render(k, m, sizeof m / sizeof m[0], flags);            \
        assert_string_equal(got_, want);                                     \
        free(got_);                                                          \
    } while (0)

static void test_detect_text(void **state) {
    (void)state;
    mk_chat_kind k;
    /* Markers as they appear in the real templates (Jinja source text). */
    assert_int_equal(mk_chat_detect_text("{{'<|im_start|>' + message['role'] + '\\n'}}", &k), MK_OK);
    assert_int_equal(k, MK_CHAT_CHATML);
    assert_int_equal(mk_chat_detect_text("<|im_start|> ... '<think>\\n\\n</think>\\n\\n' ... "
                                         "'\\n<think>\\n' + reasoning_content", &k), MK_OK);
    assert_int_equal(k, MK_CHAT_QWEN3);
    assert_int_equal(mk_chat_detect_text("<|im_start|> {{- '<|im_start|>assistant\\n<think>\\n' }}", &k), MK_OK);
    assert_int_equal(k, MK_CHAT_QWEN3_THINK);
    assert_int_equal(mk_chat_detect_text("<|im_start|> {%- else %} {{- '<think>\\n' }}", &k), MK_OK);
    assert_int_equal(k, MK_CHAT_QWEN3_THINK);
    assert_int_equal(mk_chat_detect_text("{{bos_token}}{{'<｜User｜>' + c}}{{'<｜Assistant｜>'}}", &k), MK_OK);
    assert_int_equal(k, MK_CHAT_DEEPSEEK3);
    assert_int_equal(mk_chat_detect_text("[INST] {{ m }} [/INST]", &k), MK_E_UNSUPPORTED);
    assert_non_null(strstr(mk_err_msg(), "chatml, qwen3, qwen3-think, deepseek3"));
}

static void test_detect_dir(void **state) {
    (void)state;
    mk_chat_kind k;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", mk_test_fixture("tiny-qwen35moe/bf16"));
    assert_int_equal(mk_chat_detect(dir, NULL, &k), MK_OK);
    assert_int_equal(k, MK_CHAT_CHATML);
    /* A file inside the directory works too (moekit tokenize takes tokenizer.json). */
    char file[4200];
    snprintf(file, sizeof file, "%s/tokenizer.json", dir);
    assert_int_equal(mk_chat_detect(file, NULL, &k), MK_OK);
    assert_int_equal(mk_chat_detect(dir, "deepseek3", &k), MK_OK);
    assert_int_equal(k, MK_CHAT_DEEPSEEK3);
    assert_int_equal(mk_chat_detect(dir, "llama", &k), MK_E_ARG);

    char *tmp = mk_test_tmpdir("chat");
    assert_int_equal(mk_chat_detect(tmp, NULL, &k), MK_E_NOTFOUND);
    assert_non_null(strstr(mk_err_msg(), "no chat_template"));
    assert_int_equal(mk_chat_kind_parse("qwen3-think", &k), MK_OK);
    assert_string_equal(mk_chat_kind_name(k), "qwen3-think");
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", tmp);
    const char *cfg = "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"x\"},"
                      "{\"name\": \"default\", \"template\": \"<｜Assistant｜>\"}]}";
    assert_int_equal(mk_test_write(path, cfg, strlen(cfg)), 0);
    assert_int_equal(mk_chat_detect(tmp, NULL, &k), MK_OK);
    assert_int_equal(k, MK_CHAT_DEEPSEEK3);
    cfg = "{\"chat_template\": \"{{ messages }}\"}";
    assert_int_equal(mk_test_write(path, cfg, strlen(cfg)), 0);
    assert_int_equal(mk_chat_detect(tmp, NULL, &k), MK_E_UNSUPPORTED);
    assert_non_null(strstr(mk_err_msg(), "chat_template"));
    cfg = "{\"chat_template\": ";
    assert_int_equal(mk_test_write(path, cfg, strlen(cfg)), 0);
    assert_int_equal(mk_chat_detect(tmp, NULL, &k), MK_E_FORMAT);
    /* No template in the config: chat_template.jinja beside it. */
    cfg = "{}";
    assert_int_equal(mk_test_write(path, cfg, strlen(cfg)), 0);
    snprintf(path, sizeof path, "%s/chat_template.jinja", tmp);
    assert_int_equal(mk_test_write(path, "<|im_start|>", 12), 0);
    assert_int_equal(mk_chat_detect(tmp, NULL, &k), MK_OK);
    assert_int_equal(k, MK_CHAT_CHATML);
    mk_test_rmrf(tmp);
    free(tmp);
}

static void test_render_chatml(void **state) {
    (void)state;
    const mk_chat_msg m[] = {{"system", "S", NULL}, {"user", "hi", NULL}, {"assistant", "yo", NULL}};
    ASSERT_RENDER(MK_CHAT_CHATML, m, MK_CHAT_GENERATION_PROMPT,
                  "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                  "<|im_start|>assistant\nyo<|im_end|>\n<|im_start|>assistant\n");
    ASSERT_RENDER(MK_CHAT_CHATML, m, 0,
                  "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                  "<|im_start|>assistant\nyo<|im_end|>\n");
}

static void test_render_qwen3(void **state) {
    (void)state;
    const mk_chat_msg one[] = {{"user", "hi", NULL}};
    /* enable_thinking's default: the model opens <think> itself. */
    ASSERT_RENDER(MK_CHAT_QWEN3, one, MK_CHAT_GENERATION_PROMPT,
                  "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    ASSERT_RENDER(MK_CHAT_QWEN3, one, MK_CHAT_GENERATION_PROMPT | MK_CHAT_NO_THINKING,
                  "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
    ASSERT_RENDER(MK_CHAT_QWEN3_THINK, one, MK_CHAT_GENERATION_PROMPT,
                  "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n");
    /* History: the think part of an earlier turn is dropped; the last turn
     * after the last query keeps (an empty) one. */
    const mk_chat_msg hist[] = {{"user", "q1", NULL},
                                {"assistant", "<think>\nr1\n</think>\n\na1", NULL},
                                {"user", "q2", NULL},
                                {"assistant", "a2", NULL}};
    ASSERT_RENDER(MK_CHAT_QWEN3, hist, 0,
                  "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n"
                  "<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\na2<|im_end|>\n");
    const mk_chat_msg rc[] = {{"user", "q", NULL}, {"assistant", "\nans", "\nwhy\n"}};
    ASSERT_RENDER(MK_CHAT_QWEN3, rc, 0,
                  "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\nwhy\n</think>\n\nans<|im_end|>\n");
    const mk_chat_msg tools[] = {{"user", "q", NULL}, {"tool", "r1", NULL}, {"tool", "r2", NULL}};
    ASSERT_RENDER(MK_CHAT_QWEN3, tools, 0,
                  "<|im_start|>user\nq<|im_end|>\n<|im_start|>user\n<tool_response>\nr1\n</tool_response>\n"
                  "<tool_response>\nr2\n</tool_response><|im_end|>\n");
}

static void test_render_deepseek3(void **state) {
    (void)state;
    const mk_chat_msg m[] = {{"system", "S1", NULL}, {"user", "hi", NULL}, {"assistant", "yo", NULL},
                             {"system", "S2", NULL}, {"user", "again", NULL}};
    ASSERT_RENDER(MK_CHAT_DEEPSEEK3, m, MK_CHAT_GENERATION_PROMPT,
                  "<｜begin▁of▁sentence｜>S1\n\nS2<｜User｜>hi<｜Assistant｜>yo<｜end▁of▁sentence｜>"
                  "<｜User｜>again<｜Assistant｜>");
    const mk_chat_msg t[] = {{"user", "hi", NULL}, {"tool", "out", NULL}};
    ASSERT_RENDER(MK_CHAT_DEEPSEEK3, t, MK_CHAT_GENERATION_PROMPT,
                  "<｜begin▁of▁sentence｜><｜User｜>hi<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>out"
                  "<｜tool▁output▁end｜><｜tool▁outputs▁end｜>");
}

static void test_render_errors(void **state) {
    (void)state;
    const mk_chat_msg m[] = {{"narrator", "x", NULL}};
    char *out = (char *)1;
    assert_int_equal(mk_chat_render(MK_CHAT_QWEN3, m, 1, 0, &out), MK_E_ARG);
    assert_null(out);
    assert_non_null(strstr(mk_err_msg(), "narrator"));
    assert_int_equal(mk_chat_render(MK_CHAT_DEEPSEEK3, m, 1, 0, &out), MK_E_ARG);
    assert_int_equal(mk_chat_render((mk_chat_kind)99, m, 1, 0, &out), MK_E_ARG);
    /* ChatML writes any role, as its template does. */
    assert_int_equal(mk_chat_render(MK_CHAT_CHATML, m, 1, 0, &out), MK_OK);
    free(out);
    assert_int_equal(mk_chat_render(MK_CHAT_CHATML, NULL, 0, MK_CHAT_GENERATION_PROMPT, &out), MK_OK);
    assert_string_equal(out, "<|im_start|>assistant\n");
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect_text),    cmocka_unit_test(test_detect_dir),
        cmocka_unit_test(test_render_chatml),  cmocka_unit_test(test_render_qwen3),
        cmocka_unit_test(test_render_deepseek3), cmocka_unit_test(test_render_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
