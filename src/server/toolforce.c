/* tool_choice "required" and a named function, enforced by prefill: the
 * prompt goes on with the opening of a call in the family's own format
 * (the text its released template renders an earlier call with), so the
 * model's next tokens can only continue that call; the output parser reads
 * the opening before the generated text (srv_chatout.pre). A named
 * function's opening includes the name, so the call is to that function.
 * After a prompt that ends inside a thinking block the block is closed
 * first (a forced call is answered without reasoning). What the opening
 * does not force are the arguments: a call the model does not complete
 * stays in content as written, as any unparsable block does (constraining
 * the arguments to the schema is the grammar's work). Families whose call
 * opening depends on the conversation (kimi-k2 numbers calls across it) or
 * whose tools are not rendered yet are refused, and so is a named function
 * where the format does not end the name (glm4.7). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "server/srv_impl.h"

/* A name the markup can hold: OpenAI's function names (letters, digits,
 * '_', '-', plus '.' and ':'), nothing that could spell a marker. */
static bool name_ok(const char *n) {
    size_t len = strlen(n);
    if (len == 0 || len > 64)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = n[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
              c == '.' || c == ':'))
            return false;
    }
    return true;
}

mk_status srv_toolcall_force(mk_chat_kind kind, bool think_open, const char *name, char **out) {
    *out = NULL;
    const char *any, *open, *close; /* required; named: open + name + close */
    const char *pre = think_open ? "</think>\n\n" : "";
    switch (kind) {
    case MK_CHAT_QWEN3:
    case MK_CHAT_QWEN3_THINK:
        any = "<tool_call>\n{\"name\": \"";
        open = "<tool_call>\n{\"name\": \"";
        close = "\", \"arguments\": ";
        break;
    case MK_CHAT_QWEN35:
        any = "<tool_call>\n<function=";
        open = "<tool_call>\n<function=";
        close = ">\n";
        break;
    case MK_CHAT_GLM4:
        any = "<tool_call>";
        open = "<tool_call>";
        close = "\n";
        break;
    case MK_CHAT_MINIMAX_M2:
        any = "<minimax:tool_call>\n<invoke name=\"";
        open = "<minimax:tool_call>\n<invoke name=\"";
        close = "\">\n";
        break;
    case MK_CHAT_GLM47:
        /* GLM-4.7's compact call has nothing after the name that ends it
         * ('<tool_call>N<arg_key>' or '<tool_call>N</tool_call>'): a named
         * opening would let the model go on spelling another name */
        if (name)
            return mk_err(MK_E_UNSUPPORTED, "tool_choice: forcing a named function is not supported with the "
                          "glm4.7 template (its call format does not end the name); use \"required\" or "
                          "\"auto\"");
        any = open = "<tool_call>";
        close = "";
        if (think_open) /* its template closes an empty block with no new line */
            pre = "</think>";
        break;
    case MK_CHAT_DEEPSEEK32: /* its template writes the blank line even after no content */
        any = open = "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"";
        close = "\">\n";
        break;
    case MK_CHAT_HARMONY: /* after the generation prompt's '<|start|>assistant' */
        any = " to=functions.";
        open = " to=functions.";
        close = "<|channel|>commentary json<|message|>";
        break;
    default:
        return mk_err(MK_E_UNSUPPORTED, "tool_choice: forcing a tool call is not supported with the %s template "
                      "(supported: qwen3, qwen3-think, qwen3.5, glm4, glm4.7 (required only), minimax-m2, "
                      "harmony, deepseek3.2); use \"auto\"",
                      mk_chat_kind_name(kind));
    }
    if (name && !name_ok(name))
        return mk_err(MK_E_ARG, "tool_choice.function.name: '%.100s' cannot be forced: a name of 1 to 64 letters, "
                      "digits, '_', '-', '.' or ':' is", name);
    size_t n = strlen(pre) + strlen(open) + (name ? strlen(name) + strlen(close) : 0) + strlen(any) + 1;
    char *t = mk_malloc(n);
    if (!t)
        return mk_err(MK_E_NOMEM, "no memory for a forced tool call's opening");
    if (name)
        snprintf(t, n, "%s%s%s%s", pre, open, name, close);
    else
        snprintf(t, n, "%s%s", pre, any);
    *out = t;
    return MK_OK;
}
