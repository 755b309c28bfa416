// Test-only generator of tests/data/chat_tools/*.jsonl: each line of the
// input (a chat request's "tools" and "messages") rendered by a released
// chat template (llama.cpp's models/templates/TEMPLATE) through
// @huggingface/jinja, with add_generation_prompt. The output is the
// reference tests/unit/test_server_chatparse.c holds moekit's tool
// rendering (request.c's tojson, chat.c's renderers) to.
//   node tests/gen/gen_chat_tools.mjs Qwen-Qwen3-0.6B.jinja < cases.jsonl > tests/data/chat_tools/qwen3.jsonl
//   node tests/gen/gen_chat_tools.mjs GLM-4.6.jinja --args-as-objects < cases.jsonl > tests/data/chat_tools/glm4.jsonl
//   node tests/gen/gen_chat_tools.mjs GLM-4.7-Flash.jinja --args-as-objects < cases.jsonl > tests/data/chat_tools/glm4.7.jsonl
//     (glm4.7: the requests of glm4.jsonl)
// --args-as-objects: tool calls' "arguments" (JSON text in OpenAI's
// requests) parsed into objects first, as servers do for templates that
// iterate them. --reasoning-as-thinking: assistant messages'
// "reasoning_content" passed as "thinking", the field gpt-oss's template
// reads (as llama.cpp's server does). MK_TOKENIZERS and MK_PEERS default
// to the repository's .tokenizers and .peers.
//   node tests/gen/gen_chat_tools.mjs deepseek-ai-DeepSeek-V3.2.jinja --args-as-objects --bos=<｜begin▁of▁sentence｜> < cases.jsonl > tests/data/chat_tools/deepseek3.2.jsonl
//     (deepseek3.2: the requests of minimax-m2.jsonl)
//   node tests/gen/gen_chat_tools.mjs openai-gpt-oss-120b.jinja --args-as-objects --reasoning-as-thinking < cases.jsonl > tests/data/chat_tools/harmony.jsonl
import { readFileSync } from "node:fs";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const repo = process.env.MK_SRC || resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const mods = join(process.env.MK_TOKENIZERS || join(repo, ".tokenizers"), "node_modules");
const tpl = join(process.env.MK_PEERS || join(repo, ".peers"), "llama.cpp/models/templates", process.argv[2]);
const asObjects = process.argv.includes("--args-as-objects");
const asThinking = process.argv.includes("--reasoning-as-thinking");
// --bos=TEXT: the bos_token the model's tokenizer_config.json names
const bos = (process.argv.find((a) => a.startsWith("--bos=")) ?? "--bos=").slice(6);
const { Template } = await import(pathToFileURL(join(mods, "@huggingface/jinja/dist/index.js")));
const t = new Template(readFileSync(tpl, "utf8"));
for (const line of readFileSync(0, "utf8").split("\n").filter((l) => l !== "")) {
  const req = JSON.parse(line);
  const messages = req.messages.map((m) => {
    if (m.tool_calls && asObjects)
      m = { ...m, tool_calls: m.tool_calls.map((c) => ({ ...c, function: { ...c.function, arguments: JSON.parse(c.function.arguments) } })) };
    if (asThinking && "reasoning_content" in m) {
      const { reasoning_content, ...rest } = m;
      m = { ...rest, thinking: reasoning_content };
    }
    return m;
  });
  console.log(JSON.stringify({ request: req, rendered: t.render({ ...req, messages, add_generation_prompt: true, ...(bos ? { bos_token: bos } : {}) }) }));
}
