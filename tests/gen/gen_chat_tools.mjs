// Test-only generator of tests/data/chat_tools/qwen3.jsonl: each line of
// the input (a chat request's "tools" and "messages") rendered by Qwen3's
// released chat template (llama.cpp's models/templates/Qwen-Qwen3-0.6B.jinja)
// through @huggingface/jinja, with add_generation_prompt. The output is the
// reference tests/unit/test_server_chatparse.c holds moekit's tool
// rendering (request.c's tojson, chat.c's qwen3 renderer) to.
//   node tests/gen/gen_chat_tools.mjs < cases.jsonl > tests/data/chat_tools/qwen3.jsonl
// (MK_TOKENIZERS and MK_PEERS default to the repository's .tokenizers and .peers.)
import { readFileSync } from "node:fs";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const repo = process.env.MK_SRC || resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const mods = join(process.env.MK_TOKENIZERS || join(repo, ".tokenizers"), "node_modules");
const tpl = join(process.env.MK_PEERS || join(repo, ".peers"), "llama.cpp/models/templates/Qwen-Qwen3-0.6B.jinja");
const { Template } = await import(pathToFileURL(join(mods, "@huggingface/jinja/dist/index.js")));
const t = new Template(readFileSync(tpl, "utf8"));
for (const line of readFileSync(0, "utf8").split("\n").filter((l) => l !== "")) {
  const req = JSON.parse(line);
  console.log(JSON.stringify({ request: req, rendered: t.render({ ...req, add_generation_prompt: true }) }));
}
