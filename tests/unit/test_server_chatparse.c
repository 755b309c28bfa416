/* The chat output parsers (src/server/chatparse.c, toolcall.c): reasoning
 * and tool calls of each family, in the formats the families' released
 * chat templates write them (llama.cpp's models/templates: Qwen3-0.6B,
 * Qwen3-Coder / Qwen3.5, GLM-4.6, MiniMax-M2, DeepSeek-V3 / V3.1 / V3.2,
 * Kimi-K2, gpt-oss), split into reasoning, content and calls; and, for
 * every case, the streaming property: the parse of every prefix of the
 * text (not final) holds reasoning and content that are prefixes of the
 * final ones, calls that the final parse also has, and no markup of the
 * family in content, so a stream's deltas add up to the final message.
 * Also the other direction: a request's tools and tool calls rendered
 * through the qwen3, qwen3.5, glm4, glm4.7, minimax-m2, kimi-k2, harmony and
 * deepseek3.2 templates (request.c's tojson, chat.c) against the released
 * Qwen3, Qwen3.5, GLM-4.6, GLM-4.7-Flash, MiniMax-M2, Kimi-K2-Instruct and
 * gpt-oss (openai-gpt-oss-120b) templates and llama.cpp's DeepSeek-V3.2
 * template (DeepSeek released none in Jinja) rendered by @huggingface/jinja
 * (Kimi's and Qwen3.5's by Python's jinja2, the engine transformers uses:
 * Kimi's template mutates lists, Qwen3.5's prints scalars with Python's
 * str()) (tests/data/chat_tools/, tests/gen/gen_chat_tools.mjs and .py). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"
#include "server/srv_impl.h"

static const char *k_tools =
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{\"type\":\"object\","
    "\"properties\":{\"city\":{\"type\":\"string\"},\"days\":{\"type\":\"integer\"},"
    "\"code\":{\"type\":\"string\"}}}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"parameters\":{}}}]";

typedef struct want {
    const char *reasoning, *content;
    const char *calls[3][2]; /* name, arguments */
} want;

/* Markup that must never reach content while streaming. */
static const char *const k_markup[] = {"<tool_call", "<think", "</think", "<minimax:", "<｜tool", "<｜DSML",
                                       "<|tool_call", "<|channel", "<|message", "<|start", "<|end", NULL};

static void check(mk_chat_kind kind, bool think_open, bool tools, const char *text, const want *w) {
    json_error_t e;
    json_t *defs = json_loads(k_tools, 0, &e);
    srv_parse_cfg c = {.kind = kind, .think_open = think_open, .tools = tools, .tool_defs = defs};
    srv_parsed f;
    size_t n = strlen(text);
    assert_int_equal(srv_chat_parse(&c, text, n, true, &f), MK_OK);
    if (strcmp(f.reasoning ? f.reasoning : "", w->reasoning) || strcmp(f.content ? f.content : "", w->content))
        fail_msg("%s: reasoning '%s' content '%s', expected '%s' and '%s'", text, f.reasoning ? f.reasoning : "",
                 f.content ? f.content : "", w->reasoning, w->content);
    size_t nw = 0;
    while (nw < 3 && w->calls[nw][0])
        nw++;
    if (f.ncalls != nw)
        fail_msg("%s: %zu calls, expected %zu", text, f.ncalls, nw);
    for (size_t i = 0; i < nw; i++) {
        assert_string_equal(f.calls[i].name, w->calls[i][0]);
        assert_string_equal(f.calls[i].args, w->calls[i][1]);
    }
    for (size_t k = 0; k <= n; k++) {
        srv_parsed p;
        assert_int_equal(srv_chat_parse(&c, text, k, false, &p), MK_OK);
        if (p.rlen > f.rlen || (p.rlen && memcmp(p.reasoning, f.reasoning, p.rlen)))
            fail_msg("%s: prefix %zu: reasoning '%s' is not a prefix of the final one", text, k, p.reasoning);
        if (p.clen > f.clen || (p.clen && memcmp(p.content, f.content, p.clen)))
            fail_msg("%s: prefix %zu: content '%s' is not a prefix of the final one", text, k, p.content);
        if (p.ncalls > f.ncalls)
            fail_msg("%s: prefix %zu: %zu calls, more than the final %zu", text, k, p.ncalls, f.ncalls);
        for (size_t i = 0; i < p.ncalls; i++)
            if (strcmp(p.calls[i].name, f.calls[i].name) || strcmp(p.calls[i].args, f.calls[i].args))
                fail_msg("%s: prefix %zu: call %zu differs from the final one", text, k, i);
        /* markup shows in content only where the final content has it (a block that did not parse) */
        for (size_t m = 0; tools && k_markup[m] && p.content; m++)
            if (strstr(p.content, k_markup[m]) && !strstr(w->content, k_markup[m]))
                fail_msg("%s: prefix %zu: markup %s in content '%s'", text, k, k_markup[m], p.content);
        srv_parsed_free(&p);
    }
    srv_parsed_free(&f);
    json_decref(defs);
}

static void test_qwen3(void **s) {
    (void)s;
    check(MK_CHAT_QWEN3, false, false, "<think>\nThe user greets.\n</think>\n\nHello there!",
          &(want){"The user greets.", "Hello there!", {{0}}});
    check(MK_CHAT_QWEN3, false, false, "No thinking here.", &(want){"", "No thinking here.", {{0}}});
    /* an answer without reasoning or tools is the text as generated */
    check(MK_CHAT_QWEN3, false, false, "\n Answer.\n\n", &(want){"", "\n Answer.\n\n", {{0}}});
    /* a <think> later in the answer is text */
    check(MK_CHAT_QWEN3, false, false, "Write <think> tags.", &(want){"", "Write <think> tags.", {{0}}});
    /* the generation prompt opened the block (qwen3-think) */
    check(MK_CHAT_QWEN3_THINK, true, true, "Weather needed.\n</think>\n\nLet me check.\n<tool_call>\n"
          "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}\n</tool_call>\n"
          "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>",
          &(want){"Weather needed.", "Let me check.",
                  {{"get_weather", "{\"city\":\"Paris\",\"days\":2}"}, {"get_time", "{}"}}});
    /* without tools in the request the markup is the answer */
    check(MK_CHAT_QWEN3, false, false, "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
          &(want){"", "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>", {{0}}});
    /* a block that does not parse is content, never dropped */
    check(MK_CHAT_QWEN3, false, true, "Try <tool_call>\n{not json}\n</tool_call> done",
          &(want){"", "Try <tool_call>\n{not json}\n</tool_call> done", {{0}}});
    /* a call without a name is no call (this once leaked the calls array and
     * could leave it dangling: found by fuzz_server_request) */
    check(MK_CHAT_QWEN3, false, true, "<tool_call>\n{\"name\": \"\", \"arguments\": {}}\n</tool_call>",
          &(want){"", "<tool_call>\n{\"name\": \"\", \"arguments\": {}}\n</tool_call>", {{0}}});
    check(MK_CHAT_GLM4, false, true, "<tool_call>get_time</tool_call><tool_call>\n</tool_call>",
          &(want){"", "<tool_call>\n</tool_call>", {{"get_time", "{}"}}});
    /* cut off inside a call (max_tokens): the unfinished block is content */
    check(MK_CHAT_QWEN3, false, true, "A <tool_call>\n{\"name\": \"get_",
          &(want){"", "A <tool_call>\n{\"name\": \"get_", {{0}}});
    /* an unclosed final block that parses (the model stopped right after it) */
    check(MK_CHAT_QWEN3, false, true, "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n",
          &(want){"", "", {{"get_time", "{}"}}});
}

static void test_qwen3_coder(void **s) {
    (void)s;
    /* Qwen3-Coder / Qwen3.5 XML; values typed by the tool's schema */
    check(MK_CHAT_QWEN3_THINK, false, true,
          "<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n<parameter=days>\n3\n"
          "</parameter>\n<parameter=code>\n007\n</parameter>\n</function>\n</tool_call>",
          &(want){"", "", {{"get_weather", "{\"city\":\"New York\",\"days\":3,\"code\":\"007\"}"}}});
}

static void test_glm(void **s) {
    (void)s;
    check(MK_CHAT_GLM4, false, true,
          "\n<think>Call the tool.</think>\nChecking.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n"
          "<arg_value>Paris</arg_value>\n<arg_key>days</arg_key>\n<arg_value>2</arg_value>\n</tool_call>",
          &(want){"Call the tool.", "Checking.", {{"get_weather", "{\"city\":\"Paris\",\"days\":2}"}}});
    check(MK_CHAT_GLM47, true, true, "Hmm.</think><tool_call>get_time</tool_call>",
          &(want){"Hmm.", "", {{"get_time", "{}"}}});
}

static void test_minimax(void **s) {
    (void)s;
    check(MK_CHAT_MINIMAX_M2, true, true,
          "Need the weather.\n</think>\n\nOn it.\n<minimax:tool_call>\n<invoke name=\"get_weather\">"
          "<parameter name=\"city\">Paris</parameter><parameter name=\"days\">4</parameter></invoke>\n"
          "<invoke name=\"get_time\"></invoke>\n</minimax:tool_call>",
          &(want){"Need the weather.", "On it.",
                  {{"get_weather", "{\"city\":\"Paris\",\"days\":4}"}, {"get_time", "{}"}}});
}

static void test_deepseek(void **s) {
    (void)s;
    /* V3.1 */
    check(MK_CHAT_DEEPSEEK3, false, true,
          "Sure.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Paris\"}"
          "<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
          &(want){"", "Sure.", {{"get_weather", "{\"city\":\"Paris\"}"}, {"get_time", "{}"}}});
    /* V3 (function<｜tool▁sep｜>NAME and a json code block) and R1's think block */
    check(MK_CHAT_DEEPSEEK3, false, true,
          "<think>\nok\n</think>\n\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
          "```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
          &(want){"ok", "", {{"get_weather", "{\"city\":\"Paris\"}"}}});
    /* V3.2's DSML: string="false" values are JSON, string="true" text */
    check(MK_CHAT_DEEPSEEK32, false, true,
          "<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"city\" "
          "string=\"true\">Paris</｜DSML｜parameter>\n<｜DSML｜parameter name=\"days\" string=\"false\">5"
          "</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls>",
          &(want){"", "", {{"get_weather", "{\"city\":\"Paris\",\"days\":5}"}}});
}

static void test_kimi(void **s) {
    (void)s;
    check(MK_CHAT_KIMI_K2, false, true,
          "Let me look.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
          "<|tool_call_argument_begin|>{\"city\": \"Paris\"}<|tool_call_end|><|tool_call_begin|>"
          "functions.get_time:1<|tool_call_argument_begin|>{}<|tool_call_end|><|tool_calls_section_end|>",
          &(want){"", "Let me look.", {{"get_weather", "{\"city\":\"Paris\"}"}, {"get_time", "{}"}}});
}

static void test_harmony(void **s) {
    (void)s;
    check(MK_CHAT_HARMONY, false, false,
          "<|channel|>analysis<|message|>User says hi.<|end|><|start|>assistant<|channel|>final<|message|>Hello!",
          &(want){"User says hi.", "Hello!", {{0}}});
    /* the call: recipient after the channel (gpt-oss) or in the header's role part */
    check(MK_CHAT_HARMONY, false, true,
          "<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary "
          "to=functions.get_weather <|constrain|>json<|message|>{\"city\":\"Paris\"}",
          &(want){"Need weather.", "", {{"get_weather", "{\"city\":\"Paris\"}"}}});
    check(MK_CHAT_HARMONY, false, true,
          "<|channel|>analysis<|message|>x<|end|><|start|>assistant to=functions.get_time<|channel|>commentary "
          "json<|message|>{}",
          &(want){"x", "", {{"get_time", "{}"}}});
    /* plain text without headers */
    check(MK_CHAT_HARMONY, false, true, "plain", &(want){"", "plain", {{0}}});
}

/* Each line of tests/data/chat_tools/NAME.jsonl: a request and the
 * released template's rendering (tests/gen/gen_chat_tools.mjs). */
static void render_cases(const char *name, mk_chat_kind kind) {
    char path[4096];
    const char *src = getenv("MK_SRC");
    if (!src)
        skip();
    snprintf(path, sizeof path, "%s/tests/data/chat_tools/%s.jsonl", src, name);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (getline(&line, &cap, f) > 0) {
        json_error_t e;
        json_t *c = json_loads(line, 0, &e);
        assert_non_null(c);
        char *body = json_dumps(json_object_get(c, "request"), JSON_PRESERVE_ORDER);
        srv_params p;
        if (srv_params_parse(SRV_CHAT, body, strlen(body), &p) != MK_OK)
            fail_msg("%s: %s", body, mk_err_msg());
        mk_chat_tools tools = {(const char *const *)p.tool_json, p.ntools, p.mcalls};
        char *got = NULL;
        if (mk_chat_render_tools(kind, p.msgs, p.nmsg, &tools, MK_CHAT_GENERATION_PROMPT, &got) != MK_OK)
            fail_msg("%s case %d: %s", name, n, mk_err_msg());
        const char *ref = json_string_value(json_object_get(c, "rendered"));
        /* harmony writes today's date: the reference's, from its generation day, is taken over */
        const char *dg = strstr(got, "Current date: "), *dr = strstr(ref, "Current date: ");
        if (kind == MK_CHAT_HARMONY && dg && dr && strlen(dg) >= 24 && strlen(dr) >= 24)
            memcpy((char *)dg + 14, dr + 14, 10);
        if (strcmp(got, ref))
            fail_msg("%s case %d rendered\n%s\nexpected\n%s", name, n, got, ref);
        free(got);
        /* templates without tool rendering (deepseek3: its released V3 and V3.1
         * templates have no place for tools) refuse tools rather than drop them */
        assert_int_equal(mk_chat_render_tools(MK_CHAT_DEEPSEEK3, p.msgs, p.nmsg, &tools, MK_CHAT_GENERATION_PROMPT, &got),
                         MK_E_UNSUPPORTED);
        free(body);
        srv_params_free(&p);
        json_decref(c);
        n++;
    }
    free(line);
    fclose(f);
    assert_true(n >= 3);
}

static void test_render_tools(void **s) {
    (void)s;
    /* Qwen3.5's template (thinking opened by the generation prompt, XML tool
     * calls) is told apart from the Qwen3 thinking templates (JSON calls) */
    mk_chat_kind k;
    assert_int_equal(mk_chat_detect_text("{{- '<|im_start|>assistant\\n<think>\\n' }} <tool_call>\\n<function=", &k), MK_OK);
    assert_int_equal(k, MK_CHAT_QWEN35);
    assert_int_equal(mk_chat_detect_text("{{- '<|im_start|>assistant\\n<think>\\n' }} <tool_call>\\n{\"name\"", &k), MK_OK);
    assert_int_equal(k, MK_CHAT_QWEN3_THINK);
    render_cases("qwen3", MK_CHAT_QWEN3);
    render_cases("glm4", MK_CHAT_GLM4);
    render_cases("minimax-m2", MK_CHAT_MINIMAX_M2);
    render_cases("kimi-k2", MK_CHAT_KIMI_K2);
    render_cases("qwen3.5", MK_CHAT_QWEN35);
    render_cases("harmony", MK_CHAT_HARMONY);
    render_cases("glm4.7", MK_CHAT_GLM47);
    render_cases("deepseek3.2", MK_CHAT_DEEPSEEK32);
}

/* What a template cannot render is refused (never dropped nor approximated). */
static mk_status render_req(mk_chat_kind kind, const char *body, char **out) {
    srv_params p;
    if (srv_params_parse(SRV_CHAT, body, strlen(body), &p) != MK_OK)
        fail_msg("%s: %s", body, mk_err_msg());
    mk_chat_tools tools = {(const char *const *)p.tool_json, p.ntools, p.mcalls};
    *out = NULL;
    mk_status st = mk_chat_render_tools(kind, p.msgs, p.nmsg, &tools, MK_CHAT_GENERATION_PROMPT, out);
    srv_params_free(&p);
    return st;
}

#define TOOL_F "{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {\"type\": \"object\", " \
               "\"properties\": {\"a\": %s}}}}"
#define CALL_F "{\"type\": \"function\", \"id\": \"c\", \"function\": {\"name\": \"f\", \"arguments\": \"{}\"}}"

static void test_render_refusals(void **s) {
    (void)s;
    char body[2048], *out;
    /* harmony: schemas its template cannot render */
    static const char *const bad_schemas[] = {
        "{\"oneOf\": [{\"type\": \"string\"}, {\"type\": \"integer\"}]}",
        "{\"type\": \"string\", \"enum\": [\"x\", \"y\"], \"default\": 1}",
        "{\"type\": \"string\", \"enum\": [1, 2]}",
        "{\"type\": [\"string\", 3]}",
        "{\"type\": \"string\", \"description\": 5}",
    };
    for (size_t k = 0; k < sizeof bad_schemas / sizeof *bad_schemas; k++) {
        char tool[512];
        snprintf(tool, sizeof tool, TOOL_F, bad_schemas[k]);
        snprintf(body, sizeof body, "{\"tools\": [%s], \"messages\": [{\"role\": \"user\", \"content\": \"q\"}]}", tool);
        if (render_req(MK_CHAT_HARMONY, body, &out) != MK_E_UNSUPPORTED)
            fail_msg("harmony rendered %s:\n%s", bad_schemas[k], out ? out : "(error other than unsupported)");
        free(out);
    }
    char tool[512];
    snprintf(tool, sizeof tool, TOOL_F, "{\"type\": \"string\"}");
    /* harmony: two calls in one message (its template renders the first only) */
    snprintf(body, sizeof body, "{\"tools\": [%s], \"messages\": [{\"role\": \"user\", \"content\": \"q\"}, "
             "{\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": [%s, %s]}]}", tool, CALL_F, CALL_F);
    assert_int_equal(render_req(MK_CHAT_HARMONY, body, &out), MK_E_UNSUPPORTED);
    /* harmony: content and reasoning both with a call (its template raises) */
    snprintf(body, sizeof body, "{\"tools\": [%s], \"messages\": [{\"role\": \"user\", \"content\": \"q\"}, "
             "{\"role\": \"assistant\", \"content\": \"c\", \"reasoning_content\": \"r\", \"tool_calls\": [%s]}]}",
             tool, CALL_F);
    assert_int_equal(render_req(MK_CHAT_HARMONY, body, &out), MK_E_ARG);
    /* a tool result after an answer without calls: no call for it to answer */
    snprintf(body, sizeof body, "{\"tools\": [%s], \"messages\": [{\"role\": \"user\", \"content\": \"q\"}, "
             "{\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": [%s]}, {\"role\": \"tool\", \"content\": "
             "\"r\"}, {\"role\": \"assistant\", \"content\": \"done\"}, {\"role\": \"tool\", \"content\": \"r2\"}]}",
             tool, CALL_F);
    assert_int_equal(render_req(MK_CHAT_HARMONY, body, &out), MK_E_ARG);
    snprintf(body, sizeof body, "{\"tools\": [%s], \"messages\": [{\"role\": \"user\", \"content\": \"q\"}, "
             "{\"role\": \"tool\", \"content\": \"r\"}]}", tool);
    assert_int_equal(render_req(MK_CHAT_DEEPSEEK32, body, &out), MK_E_ARG);
    /* deepseek3's released templates have no place for tools */
    assert_int_equal(render_req(MK_CHAT_DEEPSEEK3, body, &out), MK_E_UNSUPPORTED);
    /* harmony: a tool without a description renders as with an empty one */
    char *with = NULL;
    assert_int_equal(render_req(MK_CHAT_HARMONY, "{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": "
                                "\"g\", \"description\": \"\"}}], \"messages\": [{\"role\": \"user\", \"content\": "
                                "\"q\"}]}", &with), MK_OK);
    assert_int_equal(render_req(MK_CHAT_HARMONY, "{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": "
                                "\"g\"}}], \"messages\": [{\"role\": \"user\", \"content\": \"q\"}]}", &out), MK_OK);
    assert_non_null(strstr(out, "// \ntype g = () => any;"));
    assert_string_equal(out, with);
    free(out);
    free(with);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qwen3),  cmocka_unit_test(test_qwen3_coder), cmocka_unit_test(test_glm),
        cmocka_unit_test(test_minimax), cmocka_unit_test(test_deepseek),   cmocka_unit_test(test_kimi),
        cmocka_unit_test(test_harmony), cmocka_unit_test(test_render_tools),
        cmocka_unit_test(test_render_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
