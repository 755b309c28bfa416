// Reference side of tests/cli/chat_templates.sh (test-only, never shipped).
//
// Renders JSON message lists (one per stdin line) with a released chat
// template (llama.cpp's models/templates/*.jinja, from the test-only peer)
// through @huggingface/jinja, installed by scripts/install-deps.d/tokenizer.sh
// into $REPO/.tokenizers,
// with add_generation_prompt true (false with --no-gen-prompt). Each line
// of output is the rendered prompt as a JSON string, or
// {"error": message} where the template refuses the conversation
// (raise_exception): moekit must refuse those too.
//
//   node ref_chat.mjs TEMPLATE [--no-think] [--no-gen-prompt]
//   node ref_chat.mjs compare CHATS REF GOT
//        REF: the lines above; GOT: moekit's (tokenize --chat --keep-going), a
//        JSON string or {"error": message}. Equal strings pass; a refusal passes
//        where the template raised, or where moekit says the template drops
//        message i and REF indeed lacks its text.
//   node ref_chat.mjs jobs CHATS JOBS
//        both of the above for every line of JOBS, in one process:
//        NAME<TAB>TEMPLATE<TAB>GOT<TAB>FLAGS (space separated)[<TAB>CONTEXT],
//        CONTEXT a JSON object of further template variables (bos_token); prints
//        "ok: NAME" or the differing lines per job, exits 1 if any differs.
//
// --no-think passes enable_thinking: false. gpt-oss writes the current date
// (strftime_now, local time) into its system message: run this with TZ=UTC,
// the date moekit writes.
import { readFileSync } from "node:fs";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repo = process.env.MK_SRC || resolve(here, "../..");
const mods = join(process.env.MK_TOKENIZERS || join(repo, ".tokenizers"), "node_modules");
const { Template } = await import(pathToFileURL(join(mods, "@huggingface/jinja/dist/index.js")));

const args = process.argv.slice(2);
const rd = (f) => readFileSync(f, "utf8").split("\n").filter((l) => l !== "");
if (args[0] === "compare")
  process.exit(compare(rd(args[1]), rd(args[2]).map((l) => JSON.parse(l)), rd(args[3]).map((l) => JSON.parse(l))));
if (args[0] === "jobs") process.exit(jobs(rd(args[1]), rd(args[2])));

function jobs(chats, jobLines) {
  let bad = 0;
  for (const j of jobLines) {
    const [name, template, gotFile, flags = "", extra = ""] = j.split("\t");
    const fl = flags.split(" ").filter((f) => f !== "");
    const ref = render(new Template(readFileSync(template, "utf8")), chats, fl, extra ? JSON.parse(extra) : {});
    if (compare(chats, ref, rd(gotFile).map((l) => JSON.parse(l)))) {
      console.log(`${name}: moekit's rendering differs from the template's (lines above)`);
      bad++;
    } else {
      console.log(`ok: ${name} (${chats.length} conversations${fl.length ? ", " + fl.join(" ") : ""})`);
    }
  }
  return bad ? 1 : 0;
}

// The template's rendering of each chat: a string, or {error} where it raised.
function render(tmpl, chats, flags, extra = {}) {
  const genPrompt = !flags.includes("--no-gen-prompt"), noThink = flags.includes("--no-think");
  return chats.map((l) => {
    const ctx = { ...extra, messages: JSON.parse(l), add_generation_prompt: genPrompt };
    if (noThink) ctx.enable_thinking = false;
    try {
      return tmpl.render(ctx);
    } catch (e) {
      return { error: String(e.message ?? e) };
    }
  });
}

function compare(chats, ref, got) {
  let bad = 0;
  const say = (i, why) => {
    bad++;
    console.log(`line ${i + 1}: ${why}\n  chat: ${chats[i]}\n  template: ${JSON.stringify(ref[i])}\n  moekit: ${JSON.stringify(got[i])}`);
  };
  if (ref.length !== chats.length || got.length !== chats.length) {
    console.log(`line counts differ: chats ${chats.length}, template ${ref.length}, moekit ${got.length}`);
    return 1;
  }
  for (let i = 0; i < chats.length; i++) {
    const r = ref[i], g = got[i];
    if (typeof r === "string" && typeof g === "string") {
      if (r !== g) say(i, "rendered differently");
    } else if (typeof g === "string") {
      say(i, "the template raised but moekit rendered");
    } else if (typeof r !== "string") {
      // both refused
    } else {
      const m = /chat message (\d+): the \S+ template drops/.exec(g.error);
      const msg = m ? JSON.parse(chats[i])[Number(m[1])] : null;
      if (!msg) say(i, "moekit refused a conversation the template renders");
      else if (msg.content && r.includes(msg.content)) say(i, "moekit says the template drops a message whose text it renders");
    }
  }
  if (bad) console.log(`${bad} line(s) differ`);
  return bad ? 1 : 0;
}
const lines = readFileSync(0, "utf8").split("\n").filter((l) => l !== "");
const out = render(new Template(readFileSync(args[0], "utf8")), lines, args.slice(1)).map((r) => JSON.stringify(r));
process.stdout.write(out.join("\n") + (out.length ? "\n" : ""));
