/* The server's request validation (src/server/request.c) field by field:
 * what an accepted body turns into (OpenAI's defaults, "developer" as the
 * system role, content parts joined, max_completion_tokens over
 * max_tokens, stop as a string or a list, token-id prompts), what each bad
 * body is refused with (MK_E_ARG naming the field in p.param and the
 * message), and, with an allocation failing at every successive point, that
 * a parse either succeeds with the same result or fails with MK_E_NOMEM
 * (never blaming the body), leaking nothing (LeakSanitizer). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "mk_test_util.h"
#include "server/srv_impl.h"

static void parse_ok(srv_kind k, const char *body, srv_params *p) {
    mk_status st = srv_params_parse(k, body, strlen(body), p);
    if (st != MK_OK)
        fail_msg("%s: %s", body, mk_err_msg());
}

static void test_accepted(void **s) {
    (void)s;
    srv_params p;
    parse_ok(SRV_CHAT, "{\"messages\":[{\"role\":\"developer\",\"content\":\"Be brief.\"},"
                       "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
                       "{\"type\":\"text\",\"text\":\"bc\"}]},{\"role\":\"assistant\",\"content\":null}],"
                       "\"max_tokens\":7,\"max_completion_tokens\":9,\"stop\":\"END\",\"model\":null,"
                       "\"tools\":[],\"tool_choice\":\"none\",\"response_format\":{\"type\":\"text\"},"
                       "\"unknown_field\":[1,2,3]}", &p);
    assert_int_equal(p.nmsg, 3);
    assert_string_equal(p.msgs[0].role, "system");
    assert_string_equal(p.msgs[1].content, "abc");
    assert_string_equal(p.msgs[2].role, "assistant");
    assert_string_equal(p.msgs[2].content, "");
    assert_int_equal(p.max_tokens, 9);
    assert_int_equal(p.nstop, 1);
    assert_int_equal(p.stop_len[0], 3);
    assert_null(p.model);
    assert_false(p.stream);
    /* OpenAI's defaults: temperature 1, nothing else on */
    assert_true(p.sp.temperature == 1.0f && p.sp.top_p == 1.0f && p.sp.top_k == 0 && p.sp.min_p == 0.0f);
    assert_true(p.sp.repeat_penalty == 1.0f && p.sp.presence_penalty == 0.0f);
    assert_false(p.seed_given);
    srv_params_free(&p);

    parse_ok(SRV_COMPLETION, "{\"prompt\":[407,268],\"stream\":true,\"stream_options\":{\"include_usage\":true},"
                             "\"temperature\":0,\"top_p\":0.5,\"top_k\":3,\"min_p\":0.1,\"seed\":-5,"
                             "\"stop\":[\"a\",\"bb\"],\"presence_penalty\":-2,\"frequency_penalty\":2,"
                             "\"repetition_penalty\":1.3,\"n\":1,\"logprobs\":null,\"ignore_eos\":true}", &p);
    assert_true(p.has_ids);
    assert_int_equal(p.n_ids, 2);
    assert_int_equal(p.ids[1], 268);
    assert_true(p.stream && p.include_usage && p.ignore_eos && p.seed_given);
    assert_int_equal((int64_t)p.sp.seed, -5);
    assert_true(p.sp.temperature == 0.0f && p.sp.top_p == 0.5f && p.sp.top_k == 3);
    assert_true(p.sp.presence_penalty == -2.0f && p.sp.frequency_penalty == 2.0f);
    assert_int_equal(p.nstop, 2);
    assert_int_equal(p.max_tokens, -1);
    srv_params_free(&p);

    parse_ok(SRV_COMPLETION, "{\"prompt\":[\"one\"]}", &p);
    assert_false(p.has_ids);
    assert_string_equal(p.prompt, "one");
    srv_params_free(&p);
    parse_ok(SRV_TOKENIZE, "{\"content\":\"x y\",\"add_special\":true}", &p);
    assert_true(p.add_special);
    assert_int_equal(p.prompt_len, 3);
    srv_params_free(&p);
    parse_ok(SRV_DETOKENIZE, "{\"tokens\":[]}", &p);
    assert_true(p.has_ids);
    assert_int_equal(p.n_ids, 0);
    srv_params_free(&p);
}

static void refused(srv_kind k, const char *body, const char *param, const char *msg) {
    srv_params p;
    mk_status st = srv_params_parse(k, body, strlen(body), &p);
    if (st != MK_E_ARG)
        fail_msg("%s: status %d, expected MK_E_ARG", body, (int)st);
    if (!p.param || strcmp(p.param, param))
        fail_msg("%s: param %s, expected %s", body, p.param ? p.param : "(none)", param);
    if (!strstr(mk_err_msg(), msg))
        fail_msg("%s: message '%s' lacks '%s'", body, mk_err_msg(), msg);
    srv_params_free(&p);
}

static void test_refused(void **s) {
    (void)s;
    refused(SRV_CHAT, "", "body", "not valid JSON");
    refused(SRV_CHAT, "{\"messages\":[],\"messages\":[]}", "body", "duplicate");
    refused(SRV_CHAT, "[3]", "body", "expected a JSON object");
    refused(SRV_CHAT, "{}", "messages", "missing");
    refused(SRV_CHAT, "{\"messages\":[]}", "messages", "is empty");
    refused(SRV_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":3}", "n", "only 1");
    refused(SRV_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":2.5}",
            "temperature", "[0, 2]");
    refused(SRV_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"seed\":1.5}", "seed",
            "expected an integer");
    refused(SRV_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[\"a\",3]}", "stop[1]",
            "expected a string");
    refused(SRV_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":2}",
            "top_logprobs", "needs \"logprobs\": true");
    refused(SRV_CHAT, "{\"messages\":[{\"role\":\"user\"},{\"role\":\"user\",\"content\":\"x\"}]}",
            "messages[0].content", "missing");
    refused(SRV_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}",
            "messages[0].content[0].text", "expected a string");
    refused(SRV_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"reasoning_content\":1}]}",
            "messages[0].reasoning_content", "expected a string");
    refused(SRV_COMPLETION, "{\"prompt\":[1,\"a\"]}", "prompt[1]", "token id");
    refused(SRV_COMPLETION, "{\"prompt\":[1,2147483648]}", "prompt[1]", "token id");
    refused(SRV_COMPLETION, "{}", "prompt", "missing");
    refused(SRV_TOKENIZE, "{\"content\":\"x\",\"add_special\":1}", "add_special", "boolean");
    refused(SRV_DETOKENIZE, "{}", "tokens", "expected an array");
}

/* Every allocation point of a full chat parse fails in turn. */
static void test_alloc_failures(void **s) {
    (void)s;
    static const char body[] =
        "{\"messages\":[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":"
        "[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]}],\"stop\":[\"x\",\"yy\"],"
        "\"temperature\":0.5,\"seed\":3}";
    int ok = 0, nomem = 0;
    for (long n = 0; n < 400; n++) {
        srv_params p;
        mk_alloc_fail_after(n);
        mk_status st = srv_params_parse(SRV_CHAT, body, sizeof body - 1, &p);
        mk_alloc_fail_after(-1);
        if (st == MK_OK) {
            assert_int_equal(p.nmsg, 2);
            assert_string_equal(p.msgs[1].content, "ab");
            assert_int_equal(p.nstop, 2);
            ok++;
        } else {
            if (st != MK_E_NOMEM)
                fail_msg("allocation %ld failing: status %d (%s), expected MK_E_NOMEM", n, (int)st,
                         mk_err_msg());
            nomem++;
        }
        srv_params_free(&p);
        if (ok > 3)
            break; /* past the last allocation point */
    }
    assert_true(nomem > 5);
    assert_true(ok > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
