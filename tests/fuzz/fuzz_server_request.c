/* libFuzzer target: the server's request parsing and validation
 * (src/server/request.c: chat messages, prompts, sampling parameters,
 * tokenize/detokenize bodies), the step every HTTP body goes through.
 *
 * Input = one byte choosing the endpoint (chat, completion, tokenize,
 * detokenize), then the body. Any status is acceptable; crashes, leaks and
 * UB are not, nor a refusal without a message naming the field, nor an
 * accepted request that breaks what the handlers rely on: at least one
 * message with a known role and text, stop sequences of 1..256 bytes, a
 * max_tokens of -1 or >= 1, and sampling parameters the sampler accepts.
 * An accepted chat is rendered with every template (mk_chat_render), and
 * with its tools through qwen3 (mk_chat_render_tools). The body is also
 * read as a model's output by the chat output parsers of every family
 * (src/server/chatparse.c, toolcall.c), whole and cut in half: the half's
 * reasoning and content must be prefixes of the whole's (what a stream
 * sends must never be taken back). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "moekit/chat.h"
#include "moekit/sample.h"
#include "server/srv_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void accepted_invariants(const srv_params *p) {
    if (p->kind == SRV_CHAT) {
        if (p->nmsg == 0 || !p->msgs)
            abort();
        for (size_t i = 0; i < p->nmsg; i++) {
            const char *r = p->msgs[i].role;
            if (!r || (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant") &&
                       strcmp(r, "tool")))
                abort();
            if (!p->msgs[i].content)
                abort();
        }
    }
    if (p->kind == SRV_COMPLETION || p->kind == SRV_TOKENIZE)
        if (!p->has_ids && (!p->prompt || strlen(p->prompt) != p->prompt_len))
            abort();
    if (p->kind == SRV_DETOKENIZE && !p->has_ids)
        abort();
    if (p->has_ids)
        for (size_t i = 0; i < p->n_ids; i++)
            if (p->ids[i] < 0)
                abort();
    if (p->nstop < 0 || p->nstop > SRV_MAX_STOP)
        abort();
    for (int i = 0; i < p->nstop; i++)
        if (p->stop_len[i] < 1 || p->stop_len[i] > SRV_MAX_STOP_LEN || strlen(p->stop[i]) != p->stop_len[i])
            abort();
    if (p->max_tokens != -1 && p->max_tokens < 1)
        abort();
    if (p->logprobs < -1 || p->logprobs > SRV_MAX_TOP)
        abort();
    if (p->kind == SRV_CHAT || p->kind == SRV_COMPLETION) {
        mk_sampler *s = NULL;
        if (mk_sampler_create(&p->sp, 16, &s) != MK_OK) /* validated here, refused there */
            abort();
        mk_sampler_free(s);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    srv_kind kind = (srv_kind)(data[0] % 4);
    srv_params p;
    mk_status st = srv_params_parse(kind, (const char *)data + 1, size - 1, &p);
    if (st == MK_OK) {
        accepted_invariants(&p);
        if (kind == SRV_CHAT) {
            static const mk_chat_kind kinds[] = {MK_CHAT_CHATML, MK_CHAT_QWEN3, MK_CHAT_QWEN3_THINK,
                                                 MK_CHAT_DEEPSEEK3};
            for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
                char *out = NULL;
                if (mk_chat_render(kinds[k], p.msgs, p.nmsg, MK_CHAT_GENERATION_PROMPT, &out) == MK_OK &&
                    !out)
                    abort();
                free(out);
            }
            mk_chat_tools tools = {(const char *const *)p.tool_json, p.ntools, p.mcalls};
            char *out = NULL;
            if (mk_chat_render_tools(MK_CHAT_QWEN3, p.msgs, p.nmsg, &tools, MK_CHAT_GENERATION_PROMPT, &out) ==
                    MK_OK && !out)
                abort();
            free(out);
        }
    } else {
        if (!mk_err_msg()[0])
            abort();
        if (st == MK_E_ARG && (!p.param || !p.param[0]))
            abort(); /* a 400 must name the field */
    }
    srv_params_free(&p);
    static const mk_chat_kind all[] = {MK_CHAT_CHATML, MK_CHAT_QWEN3, MK_CHAT_QWEN3_THINK, MK_CHAT_DEEPSEEK3,
                                       MK_CHAT_GLM4, MK_CHAT_MINIMAX_M2, MK_CHAT_HARMONY, MK_CHAT_GLM47,
                                       MK_CHAT_KIMI_K2, MK_CHAT_DEEPSEEK32, MK_CHAT_QWEN35};
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    for (size_t k = 0; k < sizeof all / sizeof *all; k++) {
        srv_parse_cfg c = {.kind = all[k], .think_open = data[0] & 8, .tools = data[0] & 16};
        srv_parsed whole, half;
        if (srv_chat_parse(&c, text, n, true, &whole) != MK_OK)
            continue;
        if (srv_chat_parse(&c, text, n / 2, false, &half) == MK_OK) {
            if (half.rlen > whole.rlen || (half.rlen && memcmp(half.reasoning, whole.reasoning, half.rlen)) ||
                half.clen > whole.clen || (half.clen && memcmp(half.content, whole.content, half.clen)) ||
                half.ncalls > whole.ncalls)
                abort();
            srv_parsed_free(&half);
        }
        srv_parsed_free(&whole);
    }
    return 0;
}
