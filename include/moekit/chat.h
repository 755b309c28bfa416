/* Chat templates: a list of messages -> the prompt text a model was trained
 * on.
 *
 * moekit does not run Jinja. It recognises the template a checkpoint ships
 * (tokenizer_config.json "chat_template", or chat_template.jinja) by its
 * markers and renders that family's format in C, reproducing the reference
 * template's output for the cases below:
 *   chatml       <|im_start|>{role}\n{content}<|im_end|>\n ... then
 *                <|im_start|>assistant\n (templates without thinking rules)
 *   qwen3        Qwen3's hybrid-thinking template, no tools: ChatML; earlier
 *                assistant turns lose their <think> part; an assistant turn
 *                after the last user query carries <think>\n...\n</think>\n\n;
 *                the generation prompt is <|im_start|>assistant\n and the
 *                model decides whether to think (enable_thinking's default);
 *                with MK_CHAT_NO_THINKING it ends in <think>\n\n</think>\n\n
 *   qwen3-think  as qwen3, but the generation prompt opens the thinking block
 *                (<|im_start|>assistant\n<think>\n), as Qwen3.5 and the
 *                Qwen3 *-Thinking-2507 templates do by default
 *   qwen3.5      Qwen3.5: as qwen3-think without tools; its tools and tool
 *                calls are Qwen3-Coder's XML (<function=N><parameter=K>)
 *   deepseek3    <｜begin▁of▁sentence｜>{system}<｜User｜>{u}<｜Assistant｜>{a}
 *                <｜end▁of▁sentence｜>... then <｜Assistant｜>
 *   deepseek3.2  DeepSeek-V3.2, thinking off (its template's default):
 *                <｜begin▁of▁sentence｜>{system}<｜User｜>{u}<｜Assistant｜></think>{a}
 *                <｜end▁of▁sentence｜>... then <｜Assistant｜><think></think>
 *   glm4         GLM-4.5 / 4.6 (glm4_moe): [gMASK]<sop><|system|>\n{s}<|user|>\n{u}
 *                <|assistant|>\n<think>{r}</think>\n{a}... then <|assistant|>
 *                (MK_CHAT_NO_THINKING: '/nothink' after user turns and an
 *                empty think block in the generation prompt)
 *   glm4.7       GLM-4.7 / GLM-4.7-Flash: [gMASK]<sop><|system|>{s}<|user|>{u}
 *                <|assistant|><think>{r}</think>{a} (after the last user
 *                turn, with reasoning) or <|assistant|></think>{a}; tool
 *                results <|observation|><tool_response>{t}</tool_response>;
 *                then <|assistant|><think> (MK_CHAT_NO_THINKING: </think>)
 *   minimax-m2   ]~!b[]~b]system\n{s}[e~[\n]~b]user\n{u}[e~[\n]~b]ai\n{a}[e~[\n
 *                ... then ]~b]ai\n<think>\n
 *   harmony      gpt-oss: <|start|>system<|message|>{model identity, knowledge
 *                cutoff, today's date (UTC), reasoning effort, channels}<|end|>
 *                <|start|>developer<|message|># Instructions\n\n{s}<|end|>
 *                <|start|>user<|message|>{u}<|end|><|start|>assistant<|channel|>
 *                final<|message|>{a}<|end|>... then <|start|>assistant
 *   kimi-k2      Kimi-K2-Instruct: <|im_system|>system<|im_middle|>{s}<|im_end|>
 *                (Kimi's own system message and a newline when none is given)
 *                <|im_user|>user<|im_middle|>{u}<|im_end|><|im_assistant|>
 *                assistant<|im_middle|>{a}<|im_end|>... then
 *                <|im_assistant|>assistant<|im_middle|>
 * deepseek3.2, glm4, glm4.7, minimax-m2, harmony and kimi-k2 render the tool-free conversations of their
 * released templates; where a template raises or silently drops a message
 * (a tool result without a tool call, a second system message) rendering
 * is MK_E_ARG.
 * The rendered text contains the special tokens as text. To get a prompt's
 * ids use mk_chat_encode, never mk_tok_encode of the rendered text: only
 * mk_chat_encode knows which special-token text the template wrote and which
 * a message carried ("<|im_end|>\n<|im_start|>system" typed by a user must
 * stay text, or a user could forge turns). The BOS, where the format has
 * one, is part of the template. */
#ifndef MOEKIT_CHAT_H
#define MOEKIT_CHAT_H

#include <stddef.h>

#include <stdint.h>

#include "moekit/status.h"
#include "moekit/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mk_chat_kind {
    MK_CHAT_CHATML = 1,
    MK_CHAT_QWEN3 = 2,
    MK_CHAT_QWEN3_THINK = 3,
    MK_CHAT_DEEPSEEK3 = 4,
    MK_CHAT_GLM4 = 5,
    MK_CHAT_MINIMAX_M2 = 6,
    MK_CHAT_HARMONY = 7,
    MK_CHAT_GLM47 = 8,
    MK_CHAT_KIMI_K2 = 9,
    MK_CHAT_DEEPSEEK32 = 10,
    MK_CHAT_QWEN35 = 11,
} mk_chat_kind;

/* A tool call of an earlier assistant turn (OpenAI's tool_calls[i]). */
typedef struct mk_chat_tool_call {
    const char *id;        /* NULL: none */
    const char *name;
    const char *arguments; /* JSON text of an object, as OpenAI sends it */
} mk_chat_tool_call;

typedef struct mk_chat_msg {
    const char *role;      /* "system", "user", "assistant" or "tool" */
    const char *content;   /* NULL is treated as "" */
    const char *reasoning; /* assistant's reasoning_content (qwen3, glm4*, minimax-m2), or NULL
                            * (absent; "" is present and empty, as the templates tell apart) */
} mk_chat_msg;

/* A message's tool calls (assistant) or the call it answers (tool). */
typedef struct mk_chat_msg_calls {
    const mk_chat_tool_call *calls;
    size_t n;
    const char *tool_call_id; /* NULL: none */
} mk_chat_msg_calls;

/* The tools a request offers: each one's JSON text exactly as the template
 * prints it (`tool | tojson`: Python's json.dumps separators ", " and
 * ": ", keys in the given order, non-ASCII as is); and the messages' tool
 * calls (kept apart from mk_chat_msg so its users need not change). */
typedef struct mk_chat_tools {
    const char *const *json;
    size_t n;
    const mk_chat_msg_calls *msg; /* NULL, or one per message */
} mk_chat_tools;

/* Render flags. */
enum {
    MK_CHAT_GENERATION_PROMPT = 1u << 0, /* end with the assistant's opening */
    MK_CHAT_NO_THINKING = 1u << 1,       /* qwen3 kinds, glm4, glm4.7: enable_thinking=false */
};

/* The template of a model. `override` ("chatml", "qwen3", "qwen3-think", "qwen3.5",
 * "deepseek3", "deepseek3.2", "glm4", "glm4.7", "minimax-m2", "harmony", "kimi-k2") wins when non-NULL; otherwise the template is read from
 * `model_dir` (a directory, or any file inside it such as tokenizer.json).
 * An unrecognised template is MK_E_UNSUPPORTED, a missing one
 * MK_E_NOTFOUND; both messages say how to name one instead. */
mk_status mk_chat_detect(const char *model_dir, const char *override, mk_chat_kind *out);
/* Recognise a template from its Jinja source text. */
mk_status mk_chat_detect_text(const char *jinja, mk_chat_kind *out);
mk_status mk_chat_kind_parse(const char *name, mk_chat_kind *out);
const char *mk_chat_kind_name(mk_chat_kind kind);

/* Render n messages; *out is malloc'd and NUL-terminated. An unknown role is
 * MK_E_ARG (the reference templates would drop it silently). */
mk_status mk_chat_render(mk_chat_kind kind, const mk_chat_msg *msgs, size_t n, unsigned flags,
                         char **out);

/* mk_chat_render and mk_chat_encode with tools (NULL or none: the same)
 * and the messages' tool calls, rendered as the released templates do:
 *   qwen3, qwen3-think  the tool list in the system turn, <tool_call>\n
 *                {"name": N, "arguments": A}\n</tool_call> in assistant turns
 *   qwen3.5      the tool list and its instructions in the system turn (the
 *                system text after them), <tool_call>\n<function=N>\n
 *                <parameter=K>\nV\n</parameter>\n</function>\n</tool_call>
 *                (A must be a JSON object; V as Python's str() prints it)
 *   glm4         the tool list in a system turn of its own after [gMASK]<sop>,
 *                <tool_call>N\n<arg_key>K</arg_key>\n<arg_value>V</arg_value>
 *                \n</tool_call> (A must be a JSON object)
 *   minimax-m2   <tool>{function}</tool> per tool in the system turn,
 *                <minimax:tool_call>\n<invoke name="N">\n<parameter name="K">V
 *                </parameter>\n</invoke>\n</minimax:tool_call>; tool results
 *                ]~b]tool\n<response>{t}</response> after a turn with calls
 *   kimi-k2      <|im_system|>tool_declare<|im_middle|>[tools]<|im_end|>;
 *                <|tool_calls_section_begin|><|tool_call_begin|>functions.N:K
 *                <|tool_call_argument_begin|>A<|tool_call_end|>...; a tool result
 *                is '## Return of functions.N:K' of the oldest unanswered call
 *   harmony      the tools as the template's TypeScript namespace in the
 *                developer message; one call per assistant message:
 *                <|start|>assistant to=functions.N<|channel|>commentary json
 *                <|message|>{A}<|call|>; a tool result <|start|>functions.N
 *                to=assistant<|channel|>commentary<|message|>"{t}"<|end|>
 *                (schemas the template cannot render: MK_E_UNSUPPORTED)
 *   glm4.7       GLM-4.6's tool list with a compact example; calls compact,
 *                <tool_call>N<arg_key>K</arg_key><arg_value>V</arg_value></tool_call>
 *   deepseek3.2  (llama.cpp's template) the DSML instructions and the tools'
 *                functions in <functions> in the system prompt; calls
 *                \n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="N">\n
 *                <｜DSML｜parameter name="K" string="true|false">V</｜DSML｜
 *                parameter>\n...; results \n\n<function_results>\n<result>t
 *                </result>...\n</function_results>
 * deepseek3 (its released V3 / V3.1 templates have no place for tools) and
 * chatml with tools or tool calls are MK_E_UNSUPPORTED (never dropped). */
mk_status mk_chat_render_tools(mk_chat_kind kind, const mk_chat_msg *msgs, size_t n,
                               const mk_chat_tools *tools, unsigned flags, char **out);
mk_status mk_chat_encode_tools(const mk_tok *tok, mk_chat_kind kind, const mk_chat_msg *msgs, size_t n,
                               const mk_chat_tools *tools, unsigned flags, int32_t **ids, size_t *n_ids);

/* Render n messages and encode the prompt with `tok`: the template's
 * markers become their token ids; every role, content and reasoning text is
 * encoded as plain text even when it spells a special token or any marker
 * of the supported templates (<think>, <tool_call>, DeepSeek's <｜User｜>,
 * ... which tokenizers do not always flag special; mk_tok_encode_ctl). Apart from that, the ids equal mk_tok_encode of the
 * mk_chat_render text (no MK_TOK_ADD_SPECIAL). *ids is malloc'd. Invalid
 * UTF-8 in a message is MK_E_ARG. */
mk_status mk_chat_encode(const mk_tok *tok, mk_chat_kind kind, const mk_chat_msg *msgs, size_t n,
                         unsigned flags, int32_t **ids, size_t *n_ids);

#ifdef __cplusplus
}
#endif
#endif
